//! Pieces the benchmark binaries (`bench-sync`, `load`, `bench-peer-client`) share: the record
//! they all sync, their flag reading, and the real server run as a child process of the very
//! binary (re-executed with `--serve DIR ADDR`), so its memory and CPU are its own.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// `--name N` from the command line, `default` when absent; a value that is not a number is
/// one clear error line and exit code 1.
pub fn arg(name: &str, default: usize) -> usize {
    arg_parsed(name).unwrap_or(default)
}

/// The value after flag `name` on the command line, if the flag is given.
pub fn arg_str(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// [`arg_str`] parsed; a flag given without a number is an error (one line, exit 1).
pub fn arg_parsed<T: std::str::FromStr>(name: &str) -> Option<T> {
    let given = std::env::args().any(|a| a == name);
    match arg_str(name).and_then(|v| v.parse().ok()) {
        Some(v) => Some(v),
        None if given => {
            eprintln!("error: {name} needs a number");
            std::process::exit(1)
        }
        None => None,
    }
}

/// A realistic gbv_case of ≈25 fields with 2 service entries; `i` varies dates and flags.
pub fn gbv_case(i: usize) -> Value {
    json!({
        "commune": "04701", "detected_on": format!("2025-{:02}-{:02}", 1 + i % 12, 1 + i % 28), "setting": "domestic",
        "violence_types": ["physical", "psychological"],
        "victim": {"sex": "female", "birth_year": 1970 + (i % 40) as i64, "ethnic_minority": true, "disability": false},
        "services": [{"kind": "health", "provided_on": "2025-03-02", "provider": "Trạm y tế xã"},
                     {"kind": "legal_aid", "provided_on": "2025-03-05", "provider": "Trung tâm TGPL tỉnh"}],
        "perpetrator": {"detected": true, "sex": "male", "prosecuted": false, "counselled": i.is_multiple_of(2)},
        "status": "open", "notes": "Ghi chú của cán bộ xã về vụ việc."
    })
}

/// Pins this process to `cpu` (with `taskset`, before it starts any thread: the threads it
/// starts later inherit the pin). A benchmark that runs phones and server on one machine pins
/// them apart so that the server's own latency shows, not the phones' competition for its core.
pub fn pin_self_to(cpu: usize) {
    let pid = std::process::id().to_string();
    let ok = Command::new("taskset").args(["-cp", &cpu.to_string(), &pid]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("error: cannot pin to CPU {cpu} with taskset (util-linux)");
        std::process::exit(1);
    }
}

/// The environment variable by which a benchmark asks its server child to pin itself.
pub const SERVER_CPU_ENV: &str = "GESYNC_BENCH_SERVER_CPU";

/// In the child started by [`ServerChild::spawn`] (`BIN --serve DIR ADDR`): runs the real
/// server until SIGTERM and exits. Otherwise returns at once. Call first thing in `main`.
pub fn serve_if_child() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--serve") {
        return;
    }
    if let Some(cpu) = std::env::var(SERVER_CPU_ENV).ok().and_then(|v| v.parse().ok()) {
        pin_self_to(cpu);
    }
    // A directory (the embedded store) or a postgres:// URL.
    let storage = crate::TestStore::from_arg(&args[2]).storage();
    let listen: SocketAddr = args[3].parse().expect("address");
    let db = if args.iter().any(|a| a == STORE_IN_MEMORY) { in_memory_copy(&args[2]) } else { storage.open().expect("store") };
    let rt = gesync_server::server::runtime().unwrap();
    // A thousand simulated phones share one loopback address: not a slow-loris client.
    rt.block_on(gesync_server::server::run(gesync_server::Config { storage, listen, tls: None, limits: gesync_server::Limits { per_address: usize::MAX, ..Default::default() }, trusted_proxies: Vec::new(), metrics_token: Some(crate::METRICS_TOKEN.into()), audit_witness: None }, db, |_| {})).unwrap();
    std::process::exit(0);
}

/// `--store-in-memory` (embedded store only): the server child reads the seeded store into an
/// in-memory one ([`gesync_server::store::MemKv`], the unit tests' store) and serves from it,
/// nothing durable. No deployment runs so; a benchmark does, to show what the storage engine
/// costs: the difference from a run on sled is the most any engine could save.
pub const STORE_IN_MEMORY: &str = "--store-in-memory";

/// Whether this benchmark was asked for [`STORE_IN_MEMORY`]; exits with one line if it was
/// asked on PostgreSQL (`--database`). Call it before [`store_from_args`] makes a database.
pub fn store_in_memory() -> bool {
    let asked = std::env::args().any(|a| a == STORE_IN_MEMORY);
    if asked && arg_str("--database").is_some() {
        eprintln!("error: {STORE_IN_MEMORY} copies the embedded store; it does not take --database");
        std::process::exit(1);
    }
    asked
}

/// The embedded store in `dir`, copied entry by entry into memory, and the data layer on it.
fn in_memory_copy(dir: &str) -> gesync_server::db::Db {
    use gesync_server::store::{Batch, Kv, KvRead, MemKv, SledKv};
    let memory = MemKv::default();
    {
        let sled = SledKv::open(Path::new(dir)).expect("store");
        let mut all = Batch::default();
        sled.for_each(&mut |k, v| {
            all.put(k, v);
            Ok(())
        })
        .expect("the store reads");
        memory.write(all).expect("the copy is written");
    }
    gesync_server::db::Db::open(Box::new(memory)).expect("store")
}

/// The real server on the store in `data`, in a child process, plain HTTP on a loopback port.
/// Killed when dropped.
pub struct ServerChild {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerChild {
    /// Starts the child on the embedded store in `data` and waits until it accepts connections.
    pub fn spawn(data: &Path) -> ServerChild {
        Self::spawn_on(&crate::TestStore::Embedded(data.to_path_buf()))
    }

    /// Starts the child on `store` and waits until it accepts connections.
    pub fn spawn_on(store: &crate::TestStore) -> ServerChild {
        Self::spawn_pinned(store, None)
    }

    /// [`ServerChild::spawn_on`], the child pinned to CPU `cpu` if given.
    pub fn spawn_pinned(store: &crate::TestStore, cpu: Option<usize>) -> ServerChild {
        Self::spawn_with(store, cpu, false)
    }

    /// [`ServerChild::spawn_pinned`], the child serving from a copy of the store in memory if
    /// `in_memory` ([`STORE_IN_MEMORY`]).
    pub fn spawn_with(store: &crate::TestStore, cpu: Option<usize>, in_memory: bool) -> ServerChild {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args(["--serve", &store.arg(), &addr.to_string()]).env("GESYNC_LOG", "warn").stdout(Stdio::null());
        if let Some(cpu) = cpu {
            command.env(SERVER_CPU_ENV, cpu.to_string());
        }
        if in_memory {
            command.arg(STORE_IN_MEMORY);
        }
        let child = command.spawn().unwrap();
        while std::net::TcpStream::connect(addr).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        ServerChild { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Graceful stop: SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        self.child.wait().unwrap()
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The store of a benchmark: the embedded one in `dir`, or, with `--database URL` (an
/// administrator's URL of a PostgreSQL server), a new database made on that server.
pub fn store_from_args(dir: &Path) -> crate::TestStore {
    match arg_str("--database") {
        Some(url) => crate::TestStore::Postgres(gesync_server::store::pg::create_test_database(&url)),
        None => crate::TestStore::Embedded(dir.to_path_buf()),
    }
}

/// Finalizes the store as `gesync-server admin finalize-upgrade` does, unless `--unfinalized`
/// is given (record metadata then stays in the JSON every earlier build reads, as in a store an
/// upgrade has not finalized). Returns the store's form level, which the benchmark prints.
pub fn finalize_unless_asked(store: &crate::TestStore) -> u64 {
    if std::env::args().any(|a| a == "--unfinalized") {
        return store.with_db(|db| db.form_level());
    }
    store.with_db(|db| db.finalize_upgrade().expect("the store is finalized").1)
}

/// `--replicas N` (default 1): server processes on the store; more than one needs `--database`.
pub fn replicas_from_args(store: &crate::TestStore) -> usize {
    let n = arg("--replicas", 1);
    if n == 0 || (n > 1 && matches!(store, crate::TestStore::Embedded(_))) {
        eprintln!("error: --replicas takes 1, or more with --database (the embedded store has one server)");
        std::process::exit(1);
    }
    n
}

/// Where clients connect: the one server, or a round-robin proxy in front of the replicas.
pub async fn entry(servers: &[ServerChild]) -> SocketAddr {
    match servers {
        [one] => one.addr,
        many => crate::round_robin::start(many.iter().map(|s| s.addr).collect()).await.0,
    }
}
