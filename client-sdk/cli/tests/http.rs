//! `gesync-field` against the SDK's fake server over TLS: login, a record, a sync, and an
//! expired session said in one line.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use common::http::serve_tls;
use common::{FakeServer, PASSWORD};
use serde_json::{json, Value};

#[test]
fn the_cli_logs_in_and_syncs() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = Arc::new(FakeServer::new());
    let (url, pem) = rt.block_on(serve_tls(fake.clone()));
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("server.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let store = dir.path().join("store");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gesync-field"))
            .arg("--store")
            .arg(&store)
            .args(args)
            .env("GESYNC_KEY_DIR", dir.path().join("keys"))
            .env_remove("GESYNC_STORE_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        &[
            "login",
            "--server",
            &url,
            "--username",
            "officer",
            "--password-stdin",
            "--ca-cert",
            pem_path.to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        !shown.contains(PASSWORD) && !shown.contains("access-"),
        "{shown}"
    );
    let out = run(
        &["new", "news_item", "--json", "-"],
        r#"{"commune":"04712","published_on":"2025-01-05"}"#,
    );
    assert!(out.status.success());
    let out = run(&["sync"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report,
        json!({"pushed": 1, "pulled": 0, "conflicts": 0, "rejected": 0})
    );
    assert!(
        out.stderr.is_empty(),
        "no progress bar when stderr is not a terminal"
    );

    fake.with(|s| {
        s.expire_next = true;
        s.refresh_broken = true;
    });
    let out = run(&["sync"], "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: session expired: run `gesync-field login` again\n"
    );
    assert!(!out.status.success());
}
