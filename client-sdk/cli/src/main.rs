//! `gesync-field`: the field tool — a phone on the command line (see `contract.md`).
//!
//! JSON in, JSON out. Every failure is one line `error: ...` on stderr and a non-zero exit code;
//! messages name fields and paths, never record contents, tokens or passwords.
//!
//! Values in `set PATH=VALUE` and `append ID LIST_PATH VALUE` are JSON (`true`, `1990`,
//! `"closed"`, `{"kind": "health"}`). As a convenience, a value that is not valid JSON and does
//! not start like a JSON string, object or array is taken as a string, so `status=closed` works
//! without shell-quoted quotes; `{`, `[` or `"` with broken JSON is refused.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use client_sdk::{key_provider_from_env, Client, RecordId, RecordKind, SyncOptions, SyncProgress};
use serde_json::{json, Value};

/// The gesync field tool: records cases offline on a phone's local store and syncs them.
#[derive(Parser)]
#[command(name = "gesync-field", version)]
struct Cli {
    /// The phone's local store (a directory; made on first use).
    #[arg(long, global = true, value_name = "DIR", env = "GESYNC_STORE")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in to a gesync server (the password is read from standard input).
    Login {
        /// e.g. https://gesync.example.vn:8443
        #[arg(long, value_name = "URL")]
        server: String,
        #[arg(long, value_name = "U")]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// PEM file of the server's certificate (or its CA) to trust.
        #[arg(long, value_name = "PEM")]
        ca_cert: Option<PathBuf>,
        /// Keep retrying while the link drops, for this long (as for `sync`).
        #[arg(long, value_name = "DURATION")]
        retry_for: Option<String>,
    },
    /// Create a record: KIND is gbv_case, trafficking_returnee or news_item. Prints {"id": ...}.
    New {
        kind: String,
        /// The record as a JSON object, from FILE or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        json: String,
    },
    /// Set fields: `set ID perpetrator.counselled=true victim.birth_year=1990 status=closed`.
    Set {
        id: String,
        #[arg(required = true, value_name = "PATH=JSON", allow_hyphen_values = true)]
        assignments: Vec<String>,
    },
    /// Append to a list or set: `append ID services '{"kind":"health"}'`.
    Append {
        id: String,
        list_path: String,
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        value: String,
    },
    /// Mark a record deleted (records are never physically removed).
    Delete {
        id: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Print a record as JSON, with its conflicts when any.
    Show { id: String },
    /// Print every record, one JSON object per line.
    List {
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
    },
    /// Push local changes and pull the server's; prints {"pushed", "pulled", "conflicts", "rejected", ...}.
    Sync {
        /// Keep retrying while the link drops, for this long (e.g. 90s, 5m, 1h; 0 = fail at the
        /// first error). Default: 3m on a terminal, 0 otherwise. Progress is kept either way.
        #[arg(long, value_name = "DURATION")]
        retry_for: Option<String>,
    },
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|_| {
        eprintln!("error: internal error in gesync-field (a bug: please report it)");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", one_line(&message));
            ExitCode::FAILURE
        }
    }
}

fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            print!("{}", e.render());
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            eprintln!("error: no command given (see `gesync-field --help`)");
            ExitCode::from(2)
        }
        _ => {
            // clap's message may continue on indented lines (the missing arguments); keep those,
            // drop the usage and tips that follow.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| {
                    !l.starts_with("Usage:") && !l.starts_with("tip:") && !l.starts_with("For more")
                })
                .filter(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("error: {} (see `gesync-field --help`)", one_line(message));
            ExitCode::from(2)
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_id(s: &str) -> Result<RecordId, String> {
    s.parse::<RecordId>().map_err(|e| e.to_string())
}

fn parse_kind(s: &str) -> Result<RecordKind, String> {
    s.parse::<RecordKind>().map_err(|e| e.to_string())
}

/// A JSON value from the command line, with the string convenience described in the crate doc.
fn parse_value(text: &str, what: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            let t = text.trim_start();
            if t.is_empty() {
                Err(format!("no value for {what}: write null to clear a field"))
            } else if t.starts_with(['{', '[', '"']) {
                Err(format!("bad JSON for {what}: {e}"))
            } else {
                Ok(Value::String(text.to_string()))
            }
        }
    }
}

fn parse_assignment(a: &str) -> Result<(String, Value), String> {
    let Some((path, value)) = a.split_once('=') else {
        return Err(format!(
            "`{}` is not an assignment: write PATH=JSON, e.g. perpetrator.counselled=true",
            a.chars().take(40).collect::<String>()
        ));
    };
    let path = path.trim();
    if path.is_empty() {
        return Err("an assignment has no field path before `=`".into());
    }
    let value = parse_value(value, &format!("`{path}`"))?;
    Ok((path.to_string(), value))
}

fn print_line(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the output: {e}"))
        }
        _ => Ok(()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the network runtime: {e}"))
}

fn run(cli: Cli) -> Result<(), String> {
    let store_dir = cli
        .store
        .ok_or("no store given: pass --store DIR (or set GESYNC_STORE)")?;
    // Check every argument before touching the store, so a typo never creates or changes one.
    match cli.command {
        Command::Login {
            server,
            username,
            password_stdin,
            ca_cert,
            retry_for,
        } => {
            let retry_for = retry_window(retry_for.as_deref())?;
            if !password_stdin {
                return Err("give the password on standard input with --password-stdin".into());
            }
            client_sdk::normalize_server_url(&server).map_err(|e| e.to_string())?;
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err("no password on standard input".into());
            }
            let mut client = open(&store_dir)?;
            let terminal = std::io::stderr().is_terminal();
            runtime()?
                .block_on(client.login_with(&server, &username, password, ca_cert.as_deref(), retry_for, |e, wait| {
                    if terminal {
                        eprintln!("{}; trying again in {} s", one_line(&e.to_string()), wait.as_secs().max(1));
                    }
                }))
                .map_err(|e| e.to_string())?;
            let store = client.store();
            print_line(
                &json!({"logged_in": true, "server": store.server(), "username": store.username(),
                        "device_id": store.device_id()})
                .to_string(),
            )
        }
        Command::New { kind, json } => {
            let kind = parse_kind(&kind)?;
            let (text, source) = if json == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                (text, "standard input".to_string())
            } else {
                let text = std::fs::read_to_string(&json)
                    .map_err(|e| format!("cannot read {json}: {e}"))?;
                (text, json.clone())
            };
            let record: Value =
                serde_json::from_str(&text).map_err(|e| format!("bad JSON in {source}: {e}"))?;
            let mut client = open(&store_dir)?;
            let id = client.create(kind, &record).map_err(|e| e.to_string())?;
            print_line(&json!({ "id": id.to_string() }).to_string())
        }
        Command::Set { id, assignments } => {
            let id = parse_id(&id)?;
            let assignments = assignments
                .iter()
                .map(|a| parse_assignment(a))
                .collect::<Result<Vec<_>, _>>()?;
            let mut client = open(&store_dir)?;
            client
                .set_many(id, &assignments)
                .map_err(|e| e.to_string())?;
            print_line(&json!({ "id": id.to_string() }).to_string())
        }
        Command::Append {
            id,
            list_path,
            value,
        } => {
            let id = parse_id(&id)?;
            let value = parse_value(&value, &format!("`{list_path}`"))?;
            let mut client = open(&store_dir)?;
            client
                .append(id, &list_path, &value)
                .map_err(|e| e.to_string())?;
            print_line(&json!({ "id": id.to_string() }).to_string())
        }
        Command::Delete { id, reason } => {
            let id = parse_id(&id)?;
            let mut client = open(&store_dir)?;
            client.delete(id, &reason).map_err(|e| e.to_string())?;
            print_line(&json!({ "id": id.to_string() }).to_string())
        }
        Command::Show { id } => {
            let id = parse_id(&id)?;
            let client = open(&store_dir)?;
            let record = client.show(id).map_err(|e| e.to_string())?;
            print_line(&serde_json::to_string_pretty(&record).expect("JSON values serialise"))
        }
        Command::List { kind } => {
            let kind = kind.as_deref().map(parse_kind).transpose()?;
            let client = open(&store_dir)?;
            for record in client.list(kind).map_err(|e| e.to_string())? {
                print_line(&record.to_string())?;
            }
            Ok(())
        }
        Command::Sync { retry_for } => {
            let options = SyncOptions {
                retry_for: retry_window(retry_for.as_deref())?,
                ..SyncOptions::default()
            };
            let mut client = open(&store_dir)?;
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message(format!(
                    "syncing ({} records to push)",
                    client.pending_count()
                ));
                bar
            });
            let result = runtime()?.block_on(client.sync_with(&options, |p: &SyncProgress| {
                if let Some(bar) = &bar {
                    bar.set_message(progress_line(p));
                }
            }));
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let report = result.map_err(|e| e.to_string())?;
            print_line(&serde_json::to_string(&report).expect("the report serialises"))
        }
    }
}

/// What the officer sees while a sync runs: records and bytes so far, and why it waits.
fn progress_line(p: &SyncProgress) -> String {
    let received = match p.to_receive {
        Some(total) => format!("received {} / {} records", p.received, total.max(p.received)),
        None => format!("received {} records", p.received),
    };
    let part = p
        .part
        .map(|(have, total)| format!(" (a large record: {} / {} KB)", have / 1024, total / 1024))
        .unwrap_or_default();
    let mut line = format!(
        "{received}{part}, sent {}, {} to send · {} KB down, {} KB up",
        p.pushed,
        p.pending,
        p.bytes_down / 1024,
        p.bytes_up / 1024
    );
    if let Some((why, wait)) = &p.retrying {
        line.push_str(&format!(" · {}; trying again in {} s", one_line(why), wait.as_secs().max(1)));
    }
    line
}

/// `--retry-for`: a duration such as `90s`, `5m`, `1h` or plain seconds; by default a few
/// minutes for a person at a terminal, none for a script (which has its own policy).
fn retry_window(flag: Option<&str>) -> Result<Duration, String> {
    let Some(text) = flag else {
        let person = std::io::stderr().is_terminal() && std::io::stdin().is_terminal();
        return Ok(if person { Duration::from_secs(180) } else { Duration::ZERO });
    };
    let bad = || format!("--retry-for takes a duration such as 90s, 5m or 1h, not `{}`", one_line(text));
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(seconds))
}

fn open(dir: &std::path::Path) -> Result<Client, String> {
    let keys = key_provider_from_env().map_err(|e| e.to_string())?;
    Client::open(dir, keys).map_err(|e| e.to_string())
}
