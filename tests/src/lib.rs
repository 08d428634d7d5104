//! Test harness: the real server on loopback over a real sled store, with a small org tree and
//! one account per role, driven by the real client SDK.
#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gesync_server::api::AppState;
use gesync_server::model::{OrgUnit, Role, User};
use gesync_server::Db;

pub mod bench;
pub mod field;
pub mod fleet;
pub mod slowlink;

/// Password of every harness account.
pub const PASSWORD: &str = "test-password-123";

/// The `/metrics` token of the servers the harness runs as child processes.
pub const METRICS_TOKEN: &str = "harness-metrics-token";

/// `GET /metrics` of a server the harness runs, as text.
pub async fn metrics_text(url: &str) -> Option<String> {
    let r = reqwest::Client::new().get(format!("{url}/metrics")).bearer_auth(METRICS_TOKEN).send().await.ok()?;
    r.text().await.ok()
}

/// The value of the metric `name` (a counter or gauge without labels) in `/metrics` text.
pub fn metric_in(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// (code, name, parent, level): one province, two districts, communes under both, and one
/// commune directly under the province (the post-2025 two-level shape).
pub const TREE: &[(&str, &str, Option<&str>, &str)] = &[
    ("04", "Tỉnh Cao Bằng", None, "province"),
    ("047", "Huyện Trùng Khánh", Some("04"), "district"),
    ("04701", "Thị trấn Trùng Khánh", Some("047"), "commune"),
    ("04702", "Xã Đàm Thủy", Some("047"), "commune"),
    ("048", "Huyện Hạ Lang", Some("04"), "district"),
    ("04801", "Xã Thị Hoa", Some("048"), "commune"),
    ("04901", "Xã Hai cấp", Some("04"), "commune"),
];

/// (username, role, org unit)
pub const ACCOUNTS: &[(&str, Role, &str)] = &[
    ("admin", Role::Admin, "04"),
    ("province", Role::ProvinceStaff, "04"),
    ("district", Role::DistrictStaff, "047"),
    ("district2", Role::DistrictStaff, "048"),
    ("officer1", Role::CommuneOfficer, "04701"),
    ("officer1b", Role::CommuneOfficer, "04701"),
    ("officer2", Role::CommuneOfficer, "04702"),
    ("officer3", Role::CommuneOfficer, "04801"),
];

/// Extra commune officers `phoneN` of 04701, for simulations with many phones.
pub fn seed(db: &Db, extra_officers: usize) {
    seed_tree(db);
    // One hash for all: argon2 at 48 MiB is deliberately slow.
    let hash = gesync_server::auth::hash_password(PASSWORD);
    let mut users: Vec<(String, Role, String)> = ACCOUNTS.iter().map(|(u, r, o)| (u.to_string(), *r, o.to_string())).collect();
    users.extend((0..extra_officers).map(|i| (format!("phone{i}"), Role::CommuneOfficer, "04701".to_string())));
    for (username, role, org_unit) in users {
        db.accounts().put_user(&User { username, role, org_unit, password_hash: hash.clone(), disabled: false, session_epoch: 0 }, true, None).unwrap();
    }
}

/// [`TREE`] alone, no accounts.
pub fn seed_tree(db: &Db) {
    for (code, name, parent, level) in TREE {
        db.org_units().put_org_unit(OrgUnit::new(*code, *name, parent.map(str::to_string), *level), None).unwrap();
    }
}

/// The real server, in this process, on a loopback port, plain HTTP.
pub struct TestServer {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    /// The server's data layer (the same handle it serves from).
    pub db: Db,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts on a fresh store in `dir`, seeded with [`TREE`] and [`ACCOUNTS`].
    pub async fn start_fresh(dir: &Path, extra_officers: usize) -> TestServer {
        let db = gesync_server::open_db(dir).unwrap();
        seed(&db, extra_officers);
        Self::start_with(dir, db).await
    }

    /// Starts on an existing store.
    pub async fn start(dir: &Path) -> TestServer {
        let db = gesync_server::open_db(dir).unwrap();
        Self::start_with(dir, db).await
    }

    /// Starts on an existing store, on a given address (a restart keeps the phones' URL).
    pub async fn start_on(dir: &Path, addr: SocketAddr) -> TestServer {
        let db = gesync_server::open_db(dir).unwrap();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        Self::serve(dir, db, listener)
    }

    /// Starts on a fresh store (as [`TestServer::start_fresh`]) with the given connection limits.
    pub async fn start_fresh_with(dir: &Path, extra_officers: usize, limits: gesync_server::Limits) -> TestServer {
        let db = gesync_server::open_db(dir).unwrap();
        seed(&db, extra_officers);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve_with(dir, db, listener, limits)
    }

    async fn start_with(dir: &Path, db: Db) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(dir, db, listener)
    }

    fn serve(dir: &Path, db: Db, listener: TcpListener) -> TestServer {
        Self::serve_with(dir, db, listener, gesync_server::Limits::default())
    }

    fn serve_with(dir: &Path, db: Db, listener: TcpListener, limits: gesync_server::Limits) -> TestServer {
        let state = AppState::with_limits(db.clone(), limits).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gesync_server::launch(state, listener, None, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer { dir: dir.to_path_buf(), addr, db, stop: Some(tx), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully and waits until the store is closed.
    pub async fn stop(self) {
        let TestServer { db, stop, task, .. } = self;
        drop(db);
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
        if let Some(t) = task {
            let _ = t.await;
        }
        // sled releases its lock when the last handle drops; give the runtime a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a test's server keeps its data: the embedded store in a directory, or a database of
/// its own on the test command's PostgreSQL.
#[derive(Clone, Debug)]
pub enum TestStore {
    Embedded(PathBuf),
    Postgres(String),
}

impl TestStore {
    /// A new, empty database on the test command's PostgreSQL (`GESYNC_TEST_PG`).
    pub fn postgres() -> TestStore {
        TestStore::Postgres(gesync_server::store::pg::create_test_database(&gesync_server::store::pg::test_admin_url()))
    }

    pub fn storage(&self) -> gesync_server::server::Storage {
        match self {
            TestStore::Embedded(dir) => gesync_server::server::Storage::Embedded(dir.clone()),
            TestStore::Postgres(url) => gesync_server::server::Storage::Postgres(gesync_server::store::PgConfig::new(url.clone())),
        }
    }

    /// A `postgres://` URL or a directory.
    pub fn from_arg(arg: &str) -> TestStore {
        if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
            TestStore::Postgres(arg.to_string())
        } else {
            TestStore::Embedded(PathBuf::from(arg))
        }
    }

    /// The argument [`TestStore::from_arg`] reads back.
    pub fn arg(&self) -> String {
        match self {
            TestStore::Embedded(dir) => dir.display().to_string(),
            TestStore::Postgres(url) => url.clone(),
        }
    }

    /// Opens the data layer on it (the server must not hold an embedded store meanwhile).
    pub fn open(&self) -> Db {
        self.storage().open().unwrap()
    }

    /// Runs `f` on its data layer, on a thread of its own: the store is never used from an
    /// async worker (PostgreSQL's would refuse).
    pub fn with_db<T: Send + 'static>(&self, f: impl FnOnce(&Db) -> T + Send + 'static) -> T {
        let store = self.clone();
        std::thread::spawn(move || f(&store.open())).join().expect("the store opens")
    }

    /// Seeds it with [`TREE`] and [`ACCOUNTS`] (and `extra_officers`).
    pub fn seed(&self, extra_officers: usize) {
        self.with_db(move |db| seed(db, extra_officers));
    }

    /// The command-line flags that select it.
    pub fn args(&self) -> Vec<String> {
        match self {
            TestStore::Embedded(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            TestStore::Postgres(url) => vec!["--database".into(), url.clone()],
        }
    }
}

/// The `gesync-server` binary as a child process (for SIGKILL tests).
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    pub fn spawn(bin: &Path, dir: &Path) -> ServerProcess {
        Self::spawn_on(bin, &TestStore::Embedded(dir.to_path_buf()))
    }

    /// `serve` on `store`, on a free loopback port.
    pub fn spawn_on(bin: &Path, store: &TestStore) -> ServerProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::spawn_at(bin, store, addr)
    }

    /// `serve` on `store` at `addr` (a restart keeps the address).
    pub fn spawn_at(bin: &Path, store: &TestStore, addr: SocketAddr) -> ServerProcess {
        let child = Command::new(bin)
            .arg("serve")
            .args(store.args())
            .args(["--listen", &addr.to_string(), "--plain-http"])
            .env("GESYNC_LOG", "warn")
            .env("GESYNC_METRICS_TOKEN", METRICS_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut child = child;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "server did not start");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        ServerProcess { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

/// A test that fails (panics) still ends its server.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the `gesync-server` command line `bin` with `args`, writing `stdin` to its input.
pub fn run_cli(bin: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(args)
        .env("GESYNC_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A logged-in HTTP API caller.
pub struct Api {
    pub token: String,
    url: String,
    http: reqwest::Client,
}

impl Api {
    /// Logs in as `user` (password [`PASSWORD`]).
    pub async fn login(url: &str, user: &str) -> Api {
        Self::login_from(url, user, None).await
    }

    /// Logs in as `user` with `password`.
    pub async fn login_with(url: &str, user: &str, password: &str) -> Api {
        Self::login_as(url, user, password, None).await
    }

    /// Logs in as `user` from the given device id (a new one when `None`).
    pub async fn login_from(url: &str, user: &str, device_id: Option<&str>) -> Api {
        Self::login_as(url, user, PASSWORD, device_id).await
    }

    async fn login_as(url: &str, user: &str, password: &str, device_id: Option<&str>) -> Api {
        // reqwest is built without a default TLS provider; the server's process installs one,
        // but a test that only runs the server as a child process has not.
        gesync_server::server::install_crypto_provider();
        let http = reqwest::Client::new();
        let mut body = serde_json::json!({"username": user, "password": password});
        if let Some(d) = device_id {
            body["device_id"] = d.into();
        }
        // A server busy hashing other logins (the whole suite runs at once) asks to wait.
        let mut r: serde_json::Value = serde_json::Value::Null;
        for _ in 0..40 {
            let resp = http.post(format!("{url}/api/v1/auth/login")).json(&body).send().await.unwrap();
            let busy = resp.status().as_u16() == 503;
            r = resp.json().await.unwrap();
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let token = r["access_token"].as_str().unwrap_or_else(|| panic!("login of {user} failed: {r}")).to_string();
        Api { url: url.to_string(), token, http }
    }
    /// The same caller, presenting another token.
    pub fn with_token(&self, token: &str) -> Api {
        Api { token: token.to_string(), url: self.url.clone(), http: self.http.clone() }
    }

    /// GET; the status and the JSON body (`null` when not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
    /// POST with a JSON body; the status and the JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, body).await
    }
    /// GET a text body (a CSV report), asserting success.
    pub async fn get_text(&self, path: &str) -> String {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.text().await.unwrap()
    }
    /// PATCH with a JSON body; the status and the JSON body.
    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PATCH, path, body).await
    }
    /// PUT with a JSON body; the status and the JSON body.
    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }
    async fn send(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// A phone's records without local-only fields (`sync_status`, `sync_error`, `conflicts`), by id.
pub fn phone_views(c: &client_sdk::Client) -> std::collections::BTreeMap<String, serde_json::Value> {
    c.list(None)
        .unwrap()
        .into_iter()
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            for k in ["sync_status", "sync_error", "conflicts"] {
                o.remove(k);
            }
            (o["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The server's records of `unit`, as its district staff `district` read them, without
/// `conflicts`, by id.
pub async fn server_views(url: &str, district: &str, unit: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let (_, list) = Api::login(url, district).await.get(&format!("/api/v1/records?org_unit={unit}")).await;
    list.as_array()
        .unwrap_or_else(|| panic!("record list: {list}"))
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("conflicts");
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The seed of a randomised test: `GESYNC_SEED` if set, else from the clock. Always printed.
pub fn seed_from_env(test: &str) -> u64 {
    let seed = std::env::var("GESYNC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("{test}: seed {seed} (rerun with GESYNC_SEED={seed})");
    seed
}

/// A TCP proxy on loopback that counts the bytes crossing it in each direction and, when told,
/// cuts connections after a number of bytes (fault injection).
pub mod proxy {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Default)]
    pub struct Counters {
        pub up: AtomicU64,
        pub down: AtomicU64,
        pub connections: AtomicU64,
        /// When non-zero, every other connection is cut after a pseudo-random number of bytes
        /// below this bound (seeded per connection from `cut_seed`).
        pub cut_below: AtomicU64,
        pub cut_seed: AtomicU64,
        pub cuts: AtomicU64,
    }

    impl Counters {
        pub fn total(&self) -> u64 {
            self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed)
        }
        pub fn reset(&self) {
            self.up.store(0, Ordering::Relaxed);
            self.down.store(0, Ordering::Relaxed);
        }
    }

    /// Starts the proxy in front of `target`; returns its address and counters.
    pub async fn start(target: SocketAddr) -> (SocketAddr, Arc<Counters>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let n = c.connections.fetch_add(1, Ordering::Relaxed);
                    let bound = c.cut_below.load(Ordering::Relaxed);
                    let budget = if bound == 0 {
                        u64::MAX
                    } else {
                        // splitmix64 of (seed, connection number)
                        let mut z = c.cut_seed.load(Ordering::Relaxed).wrapping_add(n.wrapping_mul(0x9E3779B97F4A7C15));
                        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
                        z ^= z >> 31;
                        // Every other connection passes untouched, so progress is always
                        // possible; the others are cut, so any two connections see a cut
                        // whatever the seed (a coin per connection let a run cut nothing).
                        if n % 2 == 0 { u64::MAX } else { 1 + z % bound }
                    };
                    pipe(client, server, c, budget).await;
                });
            }
        });
        (addr, counters)
    }

    async fn pipe(client: TcpStream, server: TcpStream, c: Arc<Counters>, budget: u64) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let moved = Arc::new(AtomicU64::new(0));
        let (c1, m1) = (c.clone(), moved.clone());
        let up = async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match cr.read(&mut buf).await { Ok(0) | Err(_) => break, Ok(n) => n };
                let before = m1.fetch_add(n as u64, Ordering::Relaxed);
                let allowed = budget.saturating_sub(before).min(n as u64) as usize;
                c1.up.fetch_add(allowed as u64, Ordering::Relaxed);
                if sw.write_all(&buf[..allowed]).await.is_err() || allowed < n {
                    if allowed < n { c1.cuts.fetch_add(1, Ordering::Relaxed); }
                    break;
                }
            }
        };
        let (c2, m2) = (c.clone(), moved.clone());
        let down = async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match sr.read(&mut buf).await { Ok(0) | Err(_) => break, Ok(n) => n };
                let before = m2.fetch_add(n as u64, Ordering::Relaxed);
                let allowed = budget.saturating_sub(before).min(n as u64) as usize;
                c2.down.fetch_add(allowed as u64, Ordering::Relaxed);
                if cw.write_all(&buf[..allowed]).await.is_err() || allowed < n {
                    if allowed < n { c2.cuts.fetch_add(1, Ordering::Relaxed); }
                    break;
                }
            }
        };
        // When either direction ends (or is cut), drop both: the connection is closed.
        tokio::select! { _ = up => {}, _ = down => {} }
    }
}

/// Resident memory of a process, in MiB, from /proc (Linux).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time (user + system) a process has used so far, in seconds (Linux `/proc`, whose clock
/// ticks are USER_HZ = 100 on every Linux architecture we build for); 0 where unavailable.
pub fn cpu_s(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// A round-robin TCP proxy in front of several server replicas, like a load balancer without
/// sticky sessions: each new connection goes to the next replica that accepts it.
pub mod round_robin {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::net::{TcpListener, TcpStream};

    /// Starts the proxy; returns its address and the number of connections sent to each target.
    pub async fn start(targets: Vec<SocketAddr>) -> (SocketAddr, Arc<Vec<AtomicUsize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<Vec<AtomicUsize>> = Arc::new(targets.iter().map(|_| AtomicUsize::new(0)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let c = counts.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (targets, next, c) = (targets.clone(), next.clone(), c.clone());
                tokio::spawn(async move {
                    for _ in 0..targets.len() {
                        let i = next.fetch_add(1, Ordering::Relaxed) % targets.len();
                        if let Ok(mut server) = TcpStream::connect(targets[i]).await {
                            c[i].fetch_add(1, Ordering::Relaxed);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        (addr, counts)
    }
}

/// Copies a store's directory (the server stopped), leaving out its admin socket.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "admin.sock" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Logs the phone in, retrying while the server asks to wait (a busy or restarting replica, the
/// hashing queue full while the whole test suite runs at once), as a phone does.
pub async fn login_phone(c: &mut client_sdk::Client, url: &str, user: &str) {
    for _ in 0..60 {
        match c.login(url, user, PASSWORD, None).await {
            Ok(_) => return,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => panic!("login of {user}: {e}"),
        }
    }
    panic!("login of {user} never went through");
}

/// A transport in front of the real server's that may change, or refuse, each sync request on
/// its way (a load balancer over replicas of another build, or over replicas that do not hold
/// what another kept): `rewrite` is given the request's body and its number (from 0), and says
/// what goes on, or the refusal the phone gets. Logins and refreshes go through as they are.
pub struct Rewriting<F> {
    pub inner: client_sdk::HttpTransport,
    pub rewrite: F,
    requests: std::sync::atomic::AtomicUsize,
}

impl<F: Fn(usize, Vec<u8>) -> Result<Vec<u8>, client_sdk::TransportError> + Send + Sync> Rewriting<F> {
    pub fn new(url: &str, rewrite: F) -> Rewriting<F> {
        let inner = client_sdk::HttpTransport::new(url, None, &client_sdk::HttpConfig::default()).unwrap();
        Rewriting { inner, rewrite, requests: Default::default() }
    }
}

impl<F: Fn(usize, Vec<u8>) -> Result<Vec<u8>, client_sdk::TransportError> + Send + Sync> client_sdk::Transport for Rewriting<F> {
    fn login<'a>(&'a self, req: &'a client_sdk::LoginRequest) -> client_sdk::BoxFuture<'a, Result<client_sdk::Tokens, client_sdk::TransportError>> {
        self.inner.login(req)
    }
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> client_sdk::BoxFuture<'a, Result<client_sdk::Tokens, client_sdk::TransportError>> {
        self.inner.refresh(refresh_token)
    }
    fn sync<'a>(&'a self, access_token: &'a str, body: Vec<u8>) -> client_sdk::BoxFuture<'a, Result<Vec<u8>, client_sdk::TransportError>> {
        let n = self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = (self.rewrite)(n, body);
        Box::pin(async move { self.inner.sync(access_token, body?).await })
    }
}
