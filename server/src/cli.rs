//! The `gesync-server` command line: serve, demo, admin, backup and restore (see
//! `contract.md`). A library module so that the test package runs the very same program.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use crate::api::level_for;
use crate::model::{OrgUnit, Role, User};
use crate::server::{ensure_self_signed, open_db, run, Config, Storage, Tls};
use crate::{auth, backup, demo};

#[derive(Parser)]
#[command(name = "gesync-server", version, about = "gesync sync server: merges field records, keeps them (in sled, or PostgreSQL), computes the indicators")]
struct Cli {
    /// Optional config file of GESYNC_*=value lines (environment variables and flags win).
    #[arg(long, global = true, env = "GESYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run with demo data and a self-signed certificate: nothing to set up.
    Demo {
        #[arg(long, env = "GESYNC_DATA_DIR", default_value = "./gesync-data")]
        data_dir: PathBuf,
        #[arg(long, env = "GESYNC_LISTEN", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Plain HTTP instead of HTTPS (loopback only): a browser trusts http://127.0.0.1 as a
        /// secure origin, so the officer's app installs its service worker without a trusted
        /// certificate.
        #[arg(long)]
        plain_http: bool,
    },
    /// Serve the API over HTTPS (or plain HTTP on loopback only).
    Serve(ServeArgs),
    /// Accounts and org units, with the server stopped.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Read the whole store: documents and metadata against their checksums and each other,
    /// the feed, the figures against a recomputation, the audit chain. Exits 1 naming each
    /// problem (a server on the store runs the same check in the background at start).
    Check {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Apply the PostgreSQL schema's numbered migrations (`server/migrations/`) this database
    /// lacks, as its owner: `serve` then needs no DDL rights. Moves a database from before the
    /// `gesync` schema (table `gesync_kv`) into it. Stop the replicas first.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a checked backup of the store (see also `restore`); while a server runs on the
    /// store, it is asked to write the backup over its admin socket.
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        out: PathBuf,
        /// Encrypt the backup with a passphrase read from the first line of standard input.
        #[arg(long)]
        passphrase_stdin: bool,
    },
    /// Restore a backup (of either store) into an empty data directory or an empty database
    /// (the token-signing key is made anew: access tokens issued before stop working; phones
    /// refresh theirs).
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        from: PathBuf,
        /// The passphrase of an encrypted backup, from the first line of standard input.
        #[arg(long)]
        passphrase_stdin: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, env = "GESYNC_LISTEN")]
    listen: SocketAddr,
    #[arg(long, env = "GESYNC_TLS_CERT", requires = "tls_key", conflicts_with = "plain_http")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "GESYNC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP (refused unless the address is loopback).
    #[arg(long, env = "GESYNC_PLAIN_HTTP")]
    plain_http: bool,
    /// Close a connection on which no byte moved for this many seconds (a stalled 2G link, an
    /// idle keep-alive connection, a slow-loris client).
    #[arg(long, env = "GESYNC_IDLE_TIMEOUT", value_name = "SECS", default_value_t = 30)]
    idle_timeout: u64,
    /// Most connections open at once; further ones are closed at once. By default 10,000, or
    /// fewer when the process's open-file limit would not allow them.
    #[arg(long, env = "GESYNC_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Most connections open at once from one client address (an IPv6 /64 is one address;
    /// trusted proxies are not counted).
    #[arg(long, env = "GESYNC_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N", default_value_t = 512)]
    max_connections_per_address: usize,
    /// The address of a reverse proxy or load balancer in front of the server, whose
    /// `X-Forwarded-For` then names the client (for login throttling and the audit); repeat the
    /// flag, or comma-separate the list in the environment. Without it, the header is ignored.
    #[arg(long, env = "GESYNC_TRUSTED_PROXIES", value_name = "IP", value_delimiter = ',')]
    trusted_proxy: Vec<std::net::IpAddr>,
    /// The bearer token a monitoring system presents at `/metrics` (set it in the environment,
    /// not on the command line, where other users of the machine see it); without it only an
    /// admin's access token reads `/metrics`.
    #[arg(long, env = "GESYNC_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// A file outside the store (another disk, a mount the database's administrators cannot
    /// write) where each signed audit checkpoint is appended as it is made: the audit log is
    /// then checked against it, so that its tail cannot be cut off unseen.
    #[arg(long, env = "GESYNC_AUDIT_WITNESS", value_name = "FILE")]
    audit_witness: Option<PathBuf>,
}

/// Where the data is: the embedded store in `--data-dir`, or PostgreSQL with `--database`.
#[derive(Args, Clone)]
struct StoreArgs {
    /// The embedded store's directory (the default store; not needed with `--database`).
    #[arg(long, env = "GESYNC_DATA_DIR", required_unless_present_any = ["database", "database_url_file"])]
    data_dir: Option<PathBuf>,
    /// PostgreSQL instead of the embedded store: postgres://USER:PASSWORD@HOST:PORT/DB. Prefer
    /// `--database-url-file` or the environment: a password on the command line is visible to
    /// other users.
    #[arg(long, env = "GESYNC_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// The `--database` URL read from a file (its first line), readable by this service only.
    #[arg(long, env = "GESYNC_DATABASE_URL_FILE", value_name = "FILE", conflicts_with = "database")]
    database_url_file: Option<PathBuf>,
    /// Connections to PostgreSQL this process keeps at most.
    #[arg(long, env = "GESYNC_DB_POOL_SIZE", value_name = "N", default_value_t = 8)]
    db_pool_size: u32,
    /// Longest a PostgreSQL statement may run before it is cancelled.
    #[arg(long, env = "GESYNC_DB_STATEMENT_TIMEOUT", value_name = "SECS", default_value_t = 30)]
    db_statement_timeout: u64,
    /// The embedded store's page cache, MiB: most of the server's memory on a large store.
    #[arg(long, env = "GESYNC_SLED_CACHE_MB", value_name = "MIB", default_value_t = crate::store::DEFAULT_SLED_CACHE_MB)]
    sled_cache_mb: u64,
}

impl StoreArgs {
    fn storage(&self) -> Result<Storage, String> {
        if self.sled_cache_mb < 8 {
            return Err("--sled-cache-mb must be at least 8".into());
        }
        crate::store::set_sled_cache_mb(self.sled_cache_mb);
        let from_file = match &self.database_url_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read --database-url-file {}: {e}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        match (from_file.as_ref().or(self.database.as_ref()), &self.data_dir) {
            (Some(url), _) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err("--database takes a postgres://USER:PASSWORD@HOST:PORT/DB URL".into());
                }
                if self.db_pool_size == 0 || self.db_statement_timeout == 0 {
                    return Err("--db-pool-size and --db-statement-timeout must be at least 1".into());
                }
                let mut config = crate::store::PgConfig::new(url.clone());
                config.pool_size = self.db_pool_size;
                config.statement_timeout = std::time::Duration::from_secs(self.db_statement_timeout);
                Ok(Storage::Postgres(config))
            }
            (None, Some(dir)) => Ok(Storage::Embedded(dir.clone())),
            (None, None) => Err("give --data-dir DIR (the embedded store) or --database URL (PostgreSQL)".into()),
        }
    }
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create a user; the password is read from standard input.
    CreateUser {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        org_unit: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Add an org unit, or move/rename an existing one (same code).
    AddOrgUnit {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        parent: Option<String>,
        /// Level name (province, district, commune, ...); without it, from the code's length
        /// (2 digits province, 3 district, 5 commune).
        #[arg(long)]
        level: Option<String>,
    },
    /// Merge an org unit into another from a date on: its records and children pass to the
    /// successor, it stays in the history; figures are made on the new map.
    MergeOrgUnit {
        #[command(flatten)]
        store: StoreArgs,
        /// The unit merged away.
        #[arg(long)]
        code: String,
        /// Its successor.
        #[arg(long)]
        into: String,
        /// From this date on (YYYY-MM-DD), not after today.
        #[arg(long)]
        effective: String,
    },
    /// Recompute every indicator counter from the records (recovery); prints the record count.
    RebuildFigures {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Mark the store's history as new, after a failover onto a standby that may have been
    /// behind or any restore done outside `restore`: phones offer again every record they hold
    /// and pull their scope again, so nothing they hold is lost.
    NewEpoch {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Say that every server serving this store, and any kept to roll back to, runs this
    /// release or a later one: its stored forms (smaller, quicker to read) are written from now
    /// on, which older releases cannot read. Prints the store's form level before and after.
    FinalizeUpgrade {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Loads `GESYNC_*=value` lines from the config file into the environment, without overriding
/// variables that are already set (so: flags > environment > file > defaults).
fn load_config_file() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--config=").map(str::to_string)))
        .or_else(|| std::env::var("GESYNC_CONFIG").ok());
    let Some(path) = path else { return Ok(()) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read config file {path}: {e}"))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| format!("config file {path} line {}: expected GESYNC_NAME=value", n + 1))?;
        let k = k.trim();
        if !k.starts_with("GESYNC_") {
            return Err(format!("config file {path} line {}: only GESYNC_* settings are allowed", n + 1));
        }
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v.trim());
        }
    }
    Ok(())
}

/// Runs the command line with the process arguments; exits the process on error.
pub fn main() {
    if let Err(e) = load_config_file() {
        fail(&e);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => e.exit(),
        Err(e) => {
            // clap lists missing arguments on the lines below its first: one line with them.
            let text = e.render().to_string();
            let line: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let line = line.join(" ");
            fail(if line.is_empty() { "bad arguments" } else { line.trim_start_matches("error: ") });
        }
    };
    tracing_subscriber::fmt()
        // sled's own log lines would repeat, in its words, the one `error:` line we print when
        // the store cannot be opened (its reason is part of that line).
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GESYNC_LOG")
                .unwrap_or_else(|_| "info".into())
                .add_directive("sled=off".parse().expect("static directive")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = real_main(cli) {
        fail(&e);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    crate::server::runtime().map_err(|e| format!("cannot start the runtime: {e}"))
}

fn real_main(cli: Cli) -> Result<(), String> {
    let _ = cli.config;
    match cli.cmd {
        Cmd::Demo { data_dir, listen, plain_http } => {
            if plain_http && !listen.ip().is_loopback() {
                return Err(format!("--plain-http is only allowed on a loopback address, not {listen}"));
            }
            let db = open_db(&data_dir)?;
            let seeded = demo::seed(&db).map_err(|e| format!("cannot seed demo data: {e}"))?;
            let (tls, fp) = ensure_self_signed(&data_dir, &[listen.ip().to_string()])?;
            let cert = std::fs::canonicalize(&tls.cert).unwrap_or(tls.cert.clone());
            let scheme = if plain_http { "http" } else { "https" };
            let config = Config { storage: Storage::Embedded(data_dir), listen, tls: (!plain_http).then_some(tls), limits: Default::default(), trusted_proxies: Vec::new(), metrics_token: None, audit_witness: None };
            runtime()?.block_on(run(config, db, |addr| {
                let host = if addr.ip().is_unspecified() { "localhost".to_string() } else { addr.ip().to_string() };
                println!("gesync demo {}", if seeded { "(demo data created)" } else { "(existing data)" });
                println!("  URL:          {scheme}://{host}:{}/", addr.port());
                println!("  officer's app: {scheme}://{host}:{}/app/ (log in as xa.damthuy)", addr.port());
                println!("  certificate:  {}", cert.display());
                println!("  fingerprint:  SHA-256 {fp}");
                println!("  accounts (username / password / role / org unit):");
                for (u, p, r, ou) in demo::ACCOUNTS {
                    println!("    {u:<18} {p:<17} {r:<16} {ou}");
                }
                println!("  try: curl --cacert {} https://{host}:{}/healthz", cert.display(), addr.port());
                println!("  phone: gesync-field --store ./phone login --server https://{host}:{} --username xa.damthuy --password-stdin --ca-cert {}", addr.port(), cert.display());
                println!("  stop with Ctrl-C");
            }))
        }
        Cmd::Serve(a) => {
            let tls = match (a.tls_cert, a.tls_key, a.plain_http) {
                (Some(cert), Some(key), false) => Some(Tls { cert, key }),
                (None, None, true) => {
                    if !a.listen.ip().is_loopback() {
                        return Err(format!("--plain-http is only allowed on a loopback address, not {}; give --tls-cert and --tls-key", a.listen));
                    }
                    None
                }
                _ => return Err("give either --tls-cert PEM --tls-key PEM, or --plain-http (loopback only)".into()),
            };
            if let Some(t) = &tls {
                for p in [&t.cert, &t.key] {
                    if !p.is_file() {
                        return Err(format!("TLS file {} does not exist", p.display()));
                    }
                }
            }
            let storage = a.store.storage()?;
            let db = storage.open()?;
            if a.idle_timeout == 0 || a.max_connections == Some(0) || a.max_connections_per_address == 0 {
                return Err("--idle-timeout, --max-connections and --max-connections-per-address must be at least 1".into());
            }
            // Each connection is an open file: a cap past the process's limit would fail at
            // accept, for everyone, exactly when the server is busiest.
            let nofile = crate::conn::open_file_limit();
            let fits = nofile.map(|n| n.saturating_sub(128).max(16) as usize);
            let max_connections = match (a.max_connections, fits) {
                (Some(n), Some(f)) if n > f => return Err(format!("--max-connections {n} is more than the open-file limit allows ({}); raise it (ulimit -n) or give a smaller cap", nofile.unwrap_or(0))),
                (Some(n), _) => n,
                (None, Some(f)) => f.min(10_000),
                (None, None) => 10_000,
            };
            match nofile {
                Some(n) => eprintln!("connections: at most {max_connections} open at once, {} per address (open-file limit {n})", a.max_connections_per_address),
                None => eprintln!("connections: at most {max_connections} open at once, {} per address", a.max_connections_per_address),
            }
            let limits = crate::conn::Limits {
                idle: std::time::Duration::from_secs(a.idle_timeout),
                max_connections,
                per_address: a.max_connections_per_address,
                ..Default::default()
            };
            let config = Config { storage, listen: a.listen, tls, limits, trusted_proxies: a.trusted_proxy, metrics_token: a.metrics_token, audit_witness: a.audit_witness };
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            runtime()?.block_on(run(config, db, |addr| {
                println!("gesync-server listening on {scheme}://{addr}/");
            }))
        }
        Cmd::Admin(AdminCmd::CreateUser { store, username, role, org_unit, password_stdin: _ }) => {
            let role: Role = role.parse()?;
            if !crate::auth::valid_username(&username) {
                return Err("a username is 3 to 64 letters, digits, `.`, `_` or `-`".into());
            }
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password).map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            auth::check_password_policy(&password)?;
            let db = open_existing(&store)?;
            let tree = db.tree();
            let Some(unit) = tree.get(&org_unit) else {
                return Err(format!("unknown org unit `{org_unit}`: add it first with `gesync-server admin add-org-unit`"));
            };
            if !role.fits(&tree, unit) {
                return Err(format!("a {role} cannot be assigned to `{org_unit}`, a {}", unit.level));
            }
            let user = User { username: username.clone(), role, org_unit, password_hash: auth::hash_password(&password), disabled: false, session_epoch: 0 };
            let ev = crate::db::AuditEvent { user: "cli".into(), device_id: None, action: "user_create", target: username.clone() };
            db.accounts().put_user(&user, true, Some(ev)).map_err(|e| e.to_string())?;
            println!("created user {username} ({role})");
            Ok(())
        }
        Cmd::Admin(AdminCmd::AddOrgUnit { store, code, name, parent, level }) => {
            // The first unit of a new deployment creates the store.
            let db = open_store(&store)?;
            let code: sync_protocol::OrgUnitCode = code.parse().map_err(|e: sync_protocol::BadOrgUnitCode| e.to_string())?;
            let tree = db.tree();
            let level = level_for(&tree, code.as_str(), level.as_deref()).map_err(|e| e.replace("give the level", "give it with --level"))?;
            let ev = crate::db::AuditEvent { user: "cli".into(), device_id: None, action: "org_unit_put", target: code.to_string() };
            db.org_units().put_org_unit(OrgUnit::new(code.to_string(), name, parent, level.clone()), Some(ev)).map_err(|e| e.to_string())?;
            println!("org unit {code} saved ({level})");
            Ok(())
        }
        Cmd::Admin(AdminCmd::MergeOrgUnit { store, code, into, effective }) => {
            let effective = crate::model::parse_effective(&effective)?;
            let db = open_existing(&store)?;
            let ev = crate::db::AuditEvent { user: "cli".into(), device_id: None, action: "org_unit_merge", target: format!("{code} into {into} from {effective}") };
            let m = db.org_units().merge_org_unit(&code, &into, effective, crate::model::today(), Some(ev)).map_err(|e| e.to_string())?;
            println!("org unit {code} merged into {into} from {effective}");
            if !m.children_moved.is_empty() {
                println!("units now under {into}: {}", m.children_moved.join(", "));
            }
            if !m.targets_carried.is_empty() {
                println!("targets carried over to {into}: {}", m.targets_carried.join(", "));
            }
            if !m.users_left.is_empty() {
                println!("accounts still on {code} (move them to {into}): {}", m.users_left.join(", "));
            }
            Ok(())
        }
        Cmd::Admin(AdminCmd::NewEpoch { store }) => {
            let db = open_existing(&store)?;
            let epoch = db.set_epoch(true).map_err(|e| e.to_string())?;
            let ev = crate::db::AuditEvent { user: "cli".into(), device_id: None, action: "store_new_epoch", target: format!("{epoch:016x}") };
            db.audit_log().audit(ev).map_err(|e| e.to_string())?;
            println!("{{\"epoch\": \"{epoch:016x}\"}}");
            Ok(())
        }
        Cmd::Admin(AdminCmd::FinalizeUpgrade { store }) => {
            let db = open_existing(&store)?;
            let (was, now) = db.finalize_upgrade().map_err(|e| e.to_string())?;
            if now != was {
                let ev = crate::db::AuditEvent { user: "cli".into(), device_id: None, action: "store_finalize_upgrade", target: format!("form level {now}") };
                db.audit_log().audit(ev).map_err(|e| e.to_string())?;
            }
            println!("{{\"form_level\": {now}, \"was\": {was}}}");
            Ok(())
        }
        Cmd::Check { store } => {
            // The store's own checks at open come first: a store that does not open is damaged.
            let db = open_existing(&store).map_err(|e| if is_in_use(&e) { format!("{e} (a running server checks its store itself at start: see its log and /healthz)") } else { e })?;
            // A damaged store may make the storage layer itself give up: said in one line, not
            // a crash report.
            std::panic::set_hook(Box::new(|_| {}));
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.check()))
                .map_err(|_| "the store could not be read to its end (the storage layer failed on damaged data): restore it from a backup".to_string())?
                .map_err(|e| format!("the store could not be read to its end: {e}"))?;
            for p in &report.problems {
                eprintln!("{p}");
            }
            println!("{{\"records\": {}, \"audit_entries\": {}, \"problems\": {}}}", report.records, report.audit_entries, report.problems.len());
            if report.is_sound() {
                Ok(())
            } else {
                Err(format!("the store has {} problem(s), listed above", report.problems.len()))
            }
        }
        Cmd::Migrate { store } => {
            let Storage::Postgres(config) = store.storage()? else {
                return Err("migrate applies to a PostgreSQL database (--database URL): the embedded store has no schema to migrate".into());
            };
            let kv = crate::store::PgKv::open_for_migration(&config).map_err(|e| e.to_string())?;
            let applied = kv.migrate().map_err(|e| e.to_string())?;
            // Records stored before their reporting rows were kept get them now (the rebuild
            // rewrites every record's metadata, reporting row and the figures from the documents).
            let db = crate::Db::open(Box::new(kv)).map_err(|e| e.to_string())?;
            let refreshed = if db.records().report_rows_missing().map_err(|e| e.to_string())? { db.rebuild_figures().map_err(|e| e.to_string())? } else { 0 };
            let applied: Vec<String> = applied.iter().map(i32::to_string).collect();
            println!(
                "{{\"schema_version\": {}, \"applied\": [{}], \"records_refreshed\": {refreshed}}}",
                crate::store::pg::schema_version_needed(),
                applied.join(", ")
            );
            Ok(())
        }
        Cmd::Admin(AdminCmd::RebuildFigures { store }) => {
            let db = open_existing(&store)?;
            let n = db.rebuild_figures().map_err(|e| e.to_string())?;
            println!("{{\"records\": {n}}}");
            Ok(())
        }
        Cmd::Backup { store, out, passphrase_stdin } => {
            let passphrase = passphrase_stdin.then(read_passphrase).transpose()?;
            // With a passphrase the plain backup is written beside the target first (mode 0600)
            // and replaced by the encrypted one.
            let plain = if passphrase.is_some() { out.with_extension("plain-partial") } else { out.clone() };
            let n = match (open_existing(&store), store.storage()?.data_dir()) {
                (Ok(db), _) => backup::write_backup(&db, &plain)?,
                // sled's lock says a server holds the store: it writes the backup for us.
                #[cfg(unix)]
                (Err(e), Some(dir)) if is_in_use(&e) => crate::admin_socket::request_backup(dir, &plain)?,
                (Err(e), _) => return Err(e),
            };
            if let Some(p) = passphrase {
                backup::encrypt_file(&plain, &out, &p)?;
            }
            println!("{{\"entries\": {n}, \"file\": {:?}}}", out.display().to_string());
            Ok(())
        }
        Cmd::Restore { store, from, passphrase_stdin } => {
            let passphrase = passphrase_stdin.then(read_passphrase).transpose()?;
            let n = backup::restore(&from, &store.storage()?, passphrase.as_deref())?;
            println!("{{\"entries\": {n}}}");
            Ok(())
        }
    }
}

/// A passphrase from the first line of standard input (at least 12 characters).
fn read_passphrase() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read the passphrase from standard input: {e}"))?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.chars().count() < 12 {
        return Err("the backup passphrase must be at least 12 characters".into());
    }
    Ok(p)
}

/// Opens the store, creating it if need be.
fn open_store(store: &StoreArgs) -> Result<crate::Db, String> {
    let storage = store.storage()?;
    match storage.data_dir() {
        Some(dir) => open_db(dir).map_err(|e| in_use(dir, e)),
        None => storage.open(),
    }
}

/// Opens a store that must already exist: an embedded store's directory must hold one (admin
/// commands never create one by typo); a database is set up by whoever opens it first.
fn open_existing(store: &StoreArgs) -> Result<crate::Db, String> {
    let storage = store.storage()?;
    if let Some(dir) = storage.data_dir() {
        if !dir.join("conf").exists() && !dir.join("db").exists() {
            return Err(format!("{} holds no gesync store (start `gesync-server serve` or `demo` there first)", dir.display()));
        }
    }
    open_store(store)
}

const IN_USE: &str = "is in use by a running server";

fn in_use(dir: &Path, e: String) -> String {
    if e.contains("WouldBlock") || e.contains("lock") || e.contains("Resource temporarily unavailable") {
        format!("the store in {} {IN_USE}: stop it first", dir.display())
    } else {
        e
    }
}

fn is_in_use(e: &str) -> bool {
    e.contains(IN_USE)
}
