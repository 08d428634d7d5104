//! `bench-peer-client`: our side of `scripts/bench-peer.sh` (gesync against an automerge-repo
//! sync server on the same workloads), plus the byte-counting proxy both systems sit behind.
//!
//! Subcommands (every one prints JSON on stdout):
//! - `records --count N`: the documents of `gbv_case(0..N)` exactly as our SDK builds them
//!   (Automerge → JSON), so the peer's client can create the same structure.
//! - `records --count N --field --seed S`: instead, `bench-2g`'s records (`tests::field`: case
//!   records with varied notes), the filler's `N` then, with `--seed S^0x5eed`, the newcomer's.
//! - `proxy --target ADDR`: a TCP proxy on loopback in front of ADDR (the harness's
//!   `tests::proxy`); prints `{"listen","control"}` and serves until killed. On the control port,
//!   a line `read` answers `{"up","down","connections"}` and `reset` zeroes the byte counters.
//! - `slowlink --target ADDR --down B/S --up B/S --connect-ms MS --cut-s S`: the same, through
//!   the field's link of `bench-2g` (`tests::slowlink`); `read` also answers `cuts`.
//! - `login --store DIR --keys DIR --url URL --username U` (password on stdin).
//! - `create --store DIR --keys DIR --from A --to B`: records `gbv_case(A..B)`, offline.
//! - `edit --store DIR --keys DIR --count N --value V`: sets `status` = V in the first N records
//!   (id order), offline.
//! - `sync --store DIR --keys DIR --control ADDR [--server ADDR]`: the timed part. The clock
//!   starts before the store is opened (a phone app starting up with its records on disk) and
//!   stops when `Client::sync` returns, i.e. when the server has acknowledged every push (the
//!   server answers only after its sled flush) and has nothing more to send. Bytes are the
//!   proxy's counts (both directions, HTTP headers and JWT included) over the same span.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use client_sdk::{Client, KeyFile, RecordKind};
use serde_json::{json, Value};
use sync_protocol::automerge::{ActorId, AutoSerde};
use sync_protocol::doc;
use tests::bench::gbv_case;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn opt(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn req(name: &str) -> String {
    opt(name).unwrap_or_else(|| fail(&format!("missing {name}")))
}

fn num(name: &str) -> usize {
    req(name).parse().unwrap_or_else(|_| fail(&format!("{name} must be a number")))
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn open_client() -> Client {
    let store = PathBuf::from(req("--store"));
    Client::open(&store, KeyFile::new(req("--keys"))).unwrap_or_else(|e| fail(&format!("open store: {e}")))
}

/// One line to the proxy's control port, one JSON line back.
fn control(addr: &str, cmd: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| fail(&format!("proxy control {addr}: {e}")));
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| fail(&format!("proxy control answer: {e}")))
}

/// A counter of the server's `/metrics` (asked directly, not through the proxy).
fn metric(server: &str, name: &str) -> Option<u64> {
    let mut s = TcpStream::connect(server).ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {server}\r\nAuthorization: Bearer {}\r\n\r\n", tests::METRICS_TOKEN).as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    tests::metric_in(&text, name)
}

fn main() {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match cmd.as_str() {
        "records" => {
            let n = num("--count");
            let field = std::env::args().any(|a| a == "--field");
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(opt("--seed").map(|_| num("--seed") as u64).unwrap_or(42));
            let out = std::io::stdout();
            let mut out = std::io::BufWriter::new(out.lock());
            out.write_all(b"[").unwrap();
            for i in 0..n {
                let record = if field { tests::field::field_case(&mut rng, i) } else { gbv_case(i) };
                let d = doc::new_record(sync_protocol::RecordKind::GbvCase, &record, ActorId::random()).unwrap();
                let v = serde_json::to_value(AutoSerde::from(&d)).unwrap();
                if i > 0 {
                    out.write_all(b",\n").unwrap();
                }
                serde_json::to_writer(&mut out, &v).unwrap();
            }
            out.write_all(b"]\n").unwrap();
        }
        "proxy" => rt.block_on(proxy(req("--target").parse().unwrap_or_else(|_| fail("bad --target")))),
        "slowlink" => {
            let link = tests::slowlink::Link {
                down: num("--down") as f64,
                up: num("--up") as f64,
                connect_delay: std::time::Duration::from_millis(num("--connect-ms") as u64),
                cut_every: match num("--cut-s") {
                    0 => None,
                    s => Some(std::time::Duration::from_secs(s as u64)),
                },
            };
            rt.block_on(slowlink(req("--target").parse().unwrap_or_else(|_| fail("bad --target")), link))
        }
        "login" => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password).unwrap();
            let mut c = open_client();
            rt.block_on(c.login(&req("--url"), &req("--username"), password.trim_end(), None))
                .unwrap_or_else(|e| fail(&format!("login: {e}")));
            println!("{}", json!({"logged_in": true}));
        }
        "create" => {
            let mut c = open_client();
            let (from, to) = (num("--from"), num("--to"));
            for i in from..to {
                c.create(RecordKind::GbvCase, &gbv_case(i)).unwrap_or_else(|e| fail(&format!("create: {e}")));
            }
            println!("{}", json!({"created": to - from}));
        }
        "edit" => {
            let mut c = open_client();
            let n = num("--count");
            let value = Value::String(req("--value"));
            let mut ids = c.ids(None);
            ids.sort();
            for id in ids.iter().take(n) {
                c.set(*id, "status", &value).unwrap_or_else(|e| fail(&format!("edit: {e}")));
            }
            println!("{}", json!({"edited": n.min(ids.len())}));
        }
        "sync" => rt.block_on(async {
            let ctl = req("--control");
            let server = opt("--server");
            let req0 = match &server {
                Some(s) => metric(s, "gesync_sync_requests_total"),
                None => None,
            };
            control(&ctl, "reset");
            let t0 = Instant::now();
            let mut c = open_client();
            let open_ms = t0.elapsed().as_secs_f64() * 1000.0;
            let held = c.ids(None).len();
            let r = c.sync(|_| {}).await.unwrap_or_else(|e| fail(&format!("sync: {e}")));
            let wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
            let bytes = control(&ctl, "read");
            let requests = match (&server, req0) {
                (Some(s), Some(r0)) => metric(s, "gesync_sync_requests_total").map(|r1| r1 - r0),
                _ => None,
            };
            let pending = c.pending_count();
            println!(
                "{}",
                json!({
                    "system": "gesync", "held": held, "open_ms": open_ms, "wall_ms": wall_ms,
                    "up": bytes["up"], "down": bytes["down"],
                    "bytes": bytes["up"].as_u64().unwrap_or(0) + bytes["down"].as_u64().unwrap_or(0),
                    "pushed": r.pushed, "pulled": r.pulled, "rejected": r.rejected, "pending_after": pending,
                    "requests": requests,
                })
            );
        }),
        _ => fail("usage: bench-peer-client records|proxy|login|create|edit|sync …"),
    }
}

async fn slowlink(target: SocketAddr, link: tests::slowlink::Link) {
    let slow = tests::slowlink::SlowLink::start(target, link).await;
    let stats = slow.stats.clone();
    serve_control(slow.addr, Some(link.describe()), move |reset| {
        if reset {
            stats.reset();
        }
        let (up, down) = stats.get();
        json!({"up": up, "down": down, "connections": stats.connections.load(Ordering::Relaxed), "cuts": stats.cuts.load(Ordering::Relaxed)})
    })
    .await
}

async fn proxy(target: SocketAddr) {
    let (listen, counters) = tests::proxy::start(target).await;
    serve_control(listen, None, move |reset| {
        if reset {
            counters.reset();
        }
        json!({"up": counters.up.load(Ordering::Relaxed), "down": counters.down.load(Ordering::Relaxed), "connections": counters.connections.load(Ordering::Relaxed)})
    })
    .await
}

/// Prints `{"listen","control"[,"link"]}`, then answers each line on the control port with
/// `read(reset)` (a line `reset` zeroes the counts first), until killed.
async fn serve_control(listen: SocketAddr, link: Option<String>, read: impl Fn(bool) -> Value + Clone + Send + 'static) {
    let ctl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut hello = json!({"listen": listen.to_string(), "control": ctl.local_addr().unwrap().to_string()});
    if let Some(l) = link {
        hello["link"] = l.into();
    }
    println!("{hello}");
    std::io::stdout().flush().unwrap();
    while let Ok((s, _)) = ctl.accept().await {
        let read = read.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = read(line.trim() == "reset");
                if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}
