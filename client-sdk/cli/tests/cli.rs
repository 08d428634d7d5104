//! `gesync-field` as users run it: bad input gives a non-zero exit and exactly one line on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

struct Env {
    _root: tempfile::TempDir,
    store: PathBuf,
    home: PathBuf,
}

fn env() -> Env {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let home = root.path().join("home");
    std::fs::create_dir(&home).unwrap();
    Env {
        store,
        home,
        _root: root,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn run_with(&self, args: &[&str], stdin: &str, secret: Option<&str>) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gesync-field"));
        cmd.arg("--store").arg(&self.store).args(args);
        cmd.env("HOME", &self.home)
            .env_remove("GESYNC_KEY_DIR")
            .env_remove("GESYNC_STORE");
        match secret {
            Some(s) => cmd.env("GESYNC_STORE_SECRET", s),
            None => cmd.env_remove("GESYNC_STORE_SECRET"),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails before reading its input (no server, bad flags) may exit before
        // the input is written: a broken pipe then is not the test's failure.
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
            _ => {}
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, "", None)
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_with(args, stdin, None);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr, "", "{args:?}");
        out.stdout
    }

    fn new_case(&self) -> String {
        let out = self.ok(
            &["new", "gbv_case", "--json", "-"],
            r#"{"commune":"04712","detected_on":"2025-03-01","notes":"riêng tư"}"#,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.home.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }
}

/// Exits non-zero with one `error: ...` line that contains `expected`, and no panic.
fn fails(out: Out, expected: &str) {
    assert_ne!(out.code, 0, "stdout: {}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {:?}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{:?}", out.stderr);
    assert!(
        out.stderr.contains(expected),
        "{:?} lacks {expected:?}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"));
    assert_eq!(out.stdout, "");
}

#[test]
fn a_record_goes_through_every_command() {
    let e = env();
    let id = e.new_case();
    e.ok(
        &[
            "set",
            &id,
            "perpetrator.counselled=true",
            "status=closed",
            "victim.birth_year=1990",
        ],
        "",
    );
    e.ok(
        &[
            "append",
            &id,
            "services",
            r#"{"kind":"health","provided_on":"2025-03-02","provider":"TYT xã"}"#,
        ],
        "",
    );
    e.ok(&["append", &id, "violence_types", "physical"], "");
    let shown: Value = serde_json::from_str(&e.ok(&["show", &id], "")).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["status"], "closed");
    assert_eq!(shown["perpetrator"]["counselled"], true);
    assert_eq!(shown["victim"]["birth_year"], 1990);
    assert_eq!(shown["services"][0]["provider"], "TYT xã");
    assert_eq!(shown["violence_types"], serde_json::json!(["physical"]));
    let news = e.file(
        "n.json",
        r#"{"commune":"04712","published_on":"2025-01-05","channel":"loudspeaker"}"#,
    );
    e.ok(&["new", "news_item", "--json", &news], "");
    e.ok(&["delete", &id, "--reason", "duplicate"], "");
    let list = e.ok(&["list"], "");
    assert_eq!(list.lines().count(), 2);
    for line in list.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
    let cases = e.ok(&["list", "--kind", "gbv_case"], "");
    let case: Value = serde_json::from_str(cases.trim()).unwrap();
    assert_eq!(case["deleted"], true);
    // The notes never reach the disk in clear.
    for entry in std::fs::read_dir(e.store.join("records")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes
            .windows("riêng tư".len())
            .any(|w| w == "riêng tư".as_bytes()));
    }
}

#[test]
fn unknown_field() {
    let e = env();
    let f = e.file(
        "c.json",
        r#"{"commune":"04712","detected_on":"2025-03-01","colour":"red"}"#,
    );
    fails(
        e.run(&["new", "gbv_case", "--json", &f]),
        "unknown field `colour`",
    );
    let id = e.new_case();
    fails(
        e.run(&["set", &id, "victim.colour=1"]),
        "unknown field `victim.colour`",
    );
}

#[test]
fn wrong_type() {
    let e = env();
    let f = e.file(
        "c.json",
        r#"{"commune":"04712","detected_on":"2025-03-01","victim":{"birth_year":"1990"}}"#,
    );
    fails(
        e.run(&["new", "gbv_case", "--json", &f]),
        "field `victim.birth_year` must be a whole number",
    );
    let id = e.new_case();
    fails(
        e.run(&["set", &id, "perpetrator.counselled=yes"]),
        "field `perpetrator.counselled` must be true or false",
    );
    fails(
        e.run(&["append", &id, "services", r#"{"kind":"spa"}"#]),
        "`spa` is not one of",
    );
}

#[test]
fn bad_json() {
    let e = env();
    let f = e.file("c.json", r#"{"commune":"04712","detected_on":"#);
    fails(e.run(&["new", "gbv_case", "--json", &f]), "bad JSON in");
    fails(
        e.run_with(&["new", "gbv_case", "--json", "-"], "{nope", None),
        "bad JSON in standard input",
    );
    let id = e.new_case();
    fails(
        e.run(&["set", &id, r#"victim={"sex":"#]),
        "bad JSON for `victim`",
    );
    fails(
        e.run(&["append", &id, "services", "[1,"]),
        "bad JSON for `services`",
    );
    fails(e.run(&["set", &id, "victim.sex"]), "is not an assignment");
    fails(
        e.run(&["new", "gbv_case", "--json", "/nonexistent/c.json"]),
        "cannot read /nonexistent/c.json",
    );
}

#[test]
fn unknown_record_id() {
    let e = env();
    e.new_case();
    fails(
        e.run(&["show", "0b6c8f7e-3f1a-4c39-9d8e-1f2a3b4c5d6e"]),
        "no record 0b6c8f7e-3f1a-4c39-9d8e-1f2a3b4c5d6e",
    );
    fails(
        e.run(&["set", "0b6c8f7e-3f1a-4c39-9d8e-1f2a3b4c5d6e", "status=open"]),
        "no record",
    );
    fails(e.run(&["show", "../../etc/passwd"]), "is not a record id");
}

#[test]
fn unknown_kind() {
    let e = env();
    let f = e.file(
        "c.json",
        r#"{"commune":"04712","detected_on":"2025-03-01"}"#,
    );
    fails(
        e.run(&["new", "gbv_cases", "--json", &f]),
        "unknown record kind `gbv_cases`",
    );
    fails(e.run(&["list", "--kind", "cases"]), "unknown record kind");
    assert!(
        !e.store.exists(),
        "a refused command does not create a store"
    );
}

#[test]
fn sync_with_no_login() {
    let e = env();
    e.new_case();
    fails(e.run(&["sync"]), "not logged in");
}

#[test]
fn no_server() {
    let e = env();
    // Port 9 (discard) on loopback: nothing listens there in a test environment.
    fails(
        e.run_with(
            &[
                "login",
                "--server",
                "http://127.0.0.1:9",
                "--username",
                "u",
                "--password-stdin",
            ],
            "pw\n",
            None,
        ),
        "cannot reach the server at http://127.0.0.1:9",
    );
    fails(
        e.run_with(
            &[
                "login",
                "--server",
                "nowhere",
                "--username",
                "u",
                "--password-stdin",
            ],
            "pw\n",
            None,
        ),
        "is not a server URL",
    );
    fails(
        e.run_with(
            &["login", "--server", "http://127.0.0.1:9", "--username", "u"],
            "",
            None,
        ),
        "--password-stdin",
    );
}

#[test]
fn wrong_secret() {
    let e = env();
    let f = e.file(
        "c.json",
        r#"{"commune":"04712","detected_on":"2025-03-01"}"#,
    );
    let out = e.run_with(&["new", "gbv_case", "--json", &f], "", Some("đúng"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    fails(
        e.run_with(&["list"], "", Some("sai")),
        "cannot decrypt the store: wrong secret (GESYNC_STORE_SECRET)",
    );
    fails(e.run(&["list"]), "set GESYNC_STORE_SECRET");
    assert_eq!(
        e.run_with(&["list"], "", Some("đúng"))
            .stdout
            .lines()
            .count(),
        1
    );
}

#[test]
fn bad_usage() {
    let e = env();
    fails(e.run(&["frobnicate"]), "unrecognized subcommand");
    fails(e.run(&["new", "gbv_case"]), "--json");
    fails(e.run(&[]), "no command");
    let out = Command::new(env!("CARGO_BIN_EXE_gesync-field"))
        .arg("list")
        .env_remove("GESYNC_STORE")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let _ = Path::new("unused");
}
