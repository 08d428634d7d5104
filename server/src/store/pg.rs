//! The PostgreSQL store: the same ordered keyspace as the embedded one, in one table of the
//! `gesync` schema (`gesync.kv`), shared by any number of server processes; beside it, tables a
//! DBA and a statistician can read, which the database keeps from the keyspace itself (see
//! `server/migrations/0002_reporting.sql` to `0004_approvals_conflicts_checkpoints.sql`; [`KvRead::tables`]
//! reads them back for `check`).
//!
//! - **Write transactions** begin by locking the one row of `gesync.write_lock` (`SELECT …
//!   FOR UPDATE`). Every write transaction of every replica takes that row first, so they run
//!   one at a time across replicas, in the order they commit: what one transaction reads (the
//!   feed's last sequence number, the counters, the audit chain's tail, a refresh token) no
//!   other can change before it commits. Its batch is written with one upsert and one delete,
//!   and `COMMIT` returns once PostgreSQL has it durable (`synchronous_commit` stays on).
//! - **The feed cannot skip.** Sequence numbers are given inside those transactions, one after
//!   the other from `n/seq`: number N+1 is given only after the transaction holding N has
//!   committed, so a reader that sees N+1 sees N as well. No `SERIAL` is used.
//! - **Consistent reads** (a pull page, a backup) are `REPEATABLE READ, READ ONLY`
//!   transactions: one snapshot of everything committed.
//! - **Migrations** are the numbered SQL files of `server/migrations/`, embedded, applied by
//!   `gesync-server migrate` (or by the first `serve` on an empty database, if its role may)
//!   under the advisory lock [`MIGRATION_LOCK`]; replicas starting at the same moment wait for
//!   it and then find nothing left to do. A `serve` whose role has no DDL rights only checks
//!   the schema's version, and says to run `migrate` when it is behind.
//!
//! The server calls the store from blocking threads; this store runs its queries on a small
//! runtime of its own and waits for them there (never on the server's async workers).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::tables::{AccountRow, ApprovalRow, AuditRow, CheckpointRow, ConflictRow, DeviceRow, OrgUnitRow, RecordRow};
use super::{Batch, Entry, Kv, KvRead, StoreError, Tables, Visit, WriteTx};

/// How a write transaction begins, whatever the database's defaults (a DBA's own settings):
/// - `READ COMMITTED`, pinned: each statement sees what committed before it, so the reads made
///   after the lock below see every transaction that held it before. (Under a database default
///   of `REPEATABLE READ` the snapshot would start before the lock wait, and every contended
///   write would fail with a serialization error.)
/// - `lock_timeout`: a writer waits at most this long for the lock row, then fails (503, the
///   phone retries) rather than queue for ever behind a replica that hung while holding it;
/// - `idle_in_transaction_session_timeout`: a replica that stops (host frozen, partition) while
///   holding the lock row has its transaction ended by PostgreSQL after 5 s of silence, so the
///   others go on; what it had not committed was never acknowledged.
/// - then the lock row itself.
const WRITE_TX: [&str; 4] = [
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
    "SET LOCAL lock_timeout = '20s'",
    "SET LOCAL idle_in_transaction_session_timeout = '5s'",
    "SELECT id FROM gesync.write_lock WHERE id = 1 FOR UPDATE",
];

/// How long `/healthz` waits for the database before saying it is unavailable.
const HEALTH_WAIT: Duration = Duration::from_secs(5);

/// The advisory lock held while migrations run (an arbitrary constant: "gesync" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6765_7379_6e63;

/// The schema's numbered migrations (`server/migrations/`), in order: never edit a released
/// one, add one. Each runs in a transaction of its own, recorded in `gesync.schema_migrations`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "keyspace", include_str!("../../migrations/0001_keyspace.sql")),
    (2, "reporting", include_str!("../../migrations/0002_reporting.sql")),
    (3, "people_and_feed", include_str!("../../migrations/0003_people_and_feed.sql")),
    (4, "approvals_conflicts_checkpoints", include_str!("../../migrations/0004_approvals_conflicts_checkpoints.sql")),
    (5, "counters", include_str!("../../migrations/0005_counters.sql")),
    (6, "documents_feed_sessions_tokens_uploads", include_str!("../../migrations/0006_documents_feed_sessions_tokens_uploads.sql")),
    (7, "actors", include_str!("../../migrations/0007_actors.sql")),
];

/// The schema version this server needs (its last migration).
pub fn schema_version_needed() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// How the store connects (part of the server's configuration).
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`
    pub url: String,
    /// Connections in the pool of this process.
    pub pool_size: u32,
    /// Longest a statement may run before PostgreSQL cancels it.
    pub statement_timeout: Duration,
    /// Longest a request waits for a connection (the database is down or the pool is busy).
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it holds the password.
        f.debug_struct("PgConfig").field("pool_size", &self.pool_size).field("statement_timeout", &self.statement_timeout).finish_non_exhaustive()
    }
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig { url: url.into(), pool_size: 8, statement_timeout: Duration::from_secs(30), acquire_timeout: Duration::from_secs(10) }
    }
}

fn io(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The PostgreSQL store.
pub struct PgKv {
    pool: PgPool,
    /// `/healthz`'s own connection, outside the pool: in a write rush that holds every pooled
    /// connection the health check still answers, and it never takes a connection a write
    /// waits for. Opened when first needed, and again after it breaks.
    health: Mutex<Option<sqlx::PgConnection>>,
    options: PgConnectOptions,
    /// Always `Some` until dropped (see the `Drop` impl).
    rt: Option<Arc<tokio::runtime::Runtime>>,
    name: String,
}

impl Drop for PgKv {
    fn drop(&mut self) {
        // The store is dropped at the end of `serve`, inside the server's own runtime, where a
        // runtime may not be dropped (it would block); it may be shut down in the background.
        if let Some(rt) = self.rt.take().and_then(|rt| Arc::try_unwrap(rt).ok()) {
            rt.shutdown_background();
        }
    }
}

impl PgKv {
    /// Connects, and creates or migrates the schema (safely when several processes start at once).
    pub fn open(config: &PgConfig) -> Result<PgKv, StoreError> {
        let kv = Self::open_for_migration(config)?;
        kv.ensure_schema()?;
        Ok(kv)
    }

    /// Connects without looking at the schema: [`PgKv::migrate`] comes next.
    pub fn open_for_migration(config: &PgConfig) -> Result<PgKv, StoreError> {
        check_url_params(&config.url)?;
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Config(format!("the --database URL is not a PostgreSQL URL: {}", redact(&e.to_string(), &config.url))))?;
        let name = format!("postgres {}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or("postgres"));
        let timeout_ms = config.statement_timeout.as_millis().to_string();
        let options = options.options([("statement_timeout", timeout_ms.as_str()), ("idle_in_transaction_session_timeout", "60000")]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gesync-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let pool = rt.block_on(async {
            PgPoolOptions::new()
                .max_connections(config.pool_size.max(2))
                .acquire_timeout(config.acquire_timeout)
                .test_before_acquire(true)
                .connect_with(options.clone())
                .await
        });
        let pool = pool.map_err(|e| StoreError::Unavailable(format!("cannot connect to {name}: {}", redact(&e.to_string(), &config.url))))?;
        Ok(PgKv { pool, health: Mutex::new(None), options, rt: Some(Arc::new(rt)), name })
    }

    fn rt(&self) -> &Arc<tokio::runtime::Runtime> {
        self.rt.as_ref().expect("the runtime lives as long as the store")
    }

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T, sqlx::Error>>) -> Result<T, StoreError> {
        self.rt().block_on(f).map_err(io)
    }

    /// Begins a transaction whose first statements are `first` (its isolation level, then the
    /// write lock; or the snapshot).
    fn begin(&self, first: &[&'static str]) -> Result<Open, StoreError> {
        let tx = self.run(async {
            let mut tx = self.pool.begin().await?;
            for statement in first {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            Ok(tx)
        })?;
        // The write lock is the last statement of a write transaction's start.
        let held = first.last().is_some_and(|s| s.contains("FOR UPDATE")).then(super::LockHeld::from_now);
        Ok(Open { tx: Mutex::new(Some(tx)), rt: self.rt().clone(), _held: held })
    }

    /// The schema version the database is at (0: none yet).
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        self.run(async {
            let mut conn = self.pool.acquire().await?;
            version_of(&mut conn).await
        })
    }

    /// Makes sure the schema is the one this server needs: as it is, or migrated here when this
    /// role may (the first `serve` on an empty database); else says to run `migrate`.
    fn ensure_schema(&self) -> Result<(), StoreError> {
        let (at, needed) = (self.schema_version()?, schema_version_needed());
        if at > needed {
            return Err(StoreError::Config(format!(
                "the database's gesync schema is at version {at}, newer than this server's {needed}: run the newer gesync-server"
            )));
        }
        if at == needed {
            return Ok(());
        }
        match self.migrate() {
            Err(StoreError::Config(reason)) => Err(StoreError::Config(format!(
                "the database's gesync schema is at version {at} and this server needs {needed}, but {reason}: run `gesync-server migrate --database URL` as the database's owner"
            ))),
            other => other.map(|_| ()),
        }
    }

    /// Applies the migrations this database lacks, under the advisory lock (replicas starting
    /// at once wait, then find nothing left to do); returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let result = self.rt().block_on(async {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
            let result = async {
                let mut applied = Vec::new();
                if version_of(&mut conn).await? < schema_version_needed() {
                    sqlx::raw_sql(
                        "CREATE SCHEMA IF NOT EXISTS gesync;
                         CREATE TABLE IF NOT EXISTS gesync.schema_migrations (version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                    )
                    .execute(&mut *conn)
                    .await?;
                }
                // The table exists now: made above, or the schema was already up to date.
                let done: Vec<i32> = sqlx::query_scalar("SELECT version FROM gesync.schema_migrations").fetch_all(&mut *conn).await?;
                for (version, name, sql) in MIGRATIONS {
                    if done.contains(version) {
                        continue;
                    }
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    sqlx::raw_sql(sql).execute(&mut *tx).await?;
                    sqlx::query("INSERT INTO gesync.schema_migrations (version, name) VALUES ($1, $2)").bind(version).bind(name).execute(&mut *tx).await?;
                    tx.commit().await?;
                    applied.push(*version);
                }
                Ok::<_, sqlx::Error>(applied)
            }
            .await;
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
            result
        });
        result.map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("42501") => StoreError::Config(format!("this role may not change the schema ({})", d.message())),
            _ => io(e),
        })
    }

    /// Empties the store (tests and `restore` into a database that must be empty check first).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let any: Option<i32> = self.run(sqlx::query_scalar("SELECT 1 FROM gesync.kv LIMIT 1").fetch_optional(&self.pool))?;
        Ok(any.is_none())
    }
}

/// The schema version recorded in the database (0 when there is no `gesync` schema yet).
async fn version_of(conn: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('gesync.schema_migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM gesync.schema_migrations").fetch_one(&mut *conn).await
}

/// An error text without the URL's password.
fn redact(text: &str, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    let userinfo = url.split_once("://").and_then(|(_, rest)| rest.split('/').next()).and_then(|hostpart| hostpart.rsplit_once('@')).map(|(u, _)| u);
    if let Some((_, p)) = userinfo.and_then(|u| u.split_once(':')) {
        secrets.push(p.to_string());
    }
    // Every parameter's value (`?password=…`, and whatever a DBA adds): none is printed.
    if let Some((_, query)) = url.split_once('?') {
        secrets.extend(query.split('&').filter_map(|kv| kv.split_once('=')).map(|(_, v)| v.to_string()));
    }
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
        let decoded = percent_decode(s);
        if !decoded.is_empty() {
            out = out.replace(&decoded, "***");
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL parameters this server passes to PostgreSQL. Another one is refused by its name
/// before the driver sees it (which would log it, value and all).
const URL_PARAMS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey", "options", "application_name", "host", "hostaddr", "port", "user", "password", "dbname", "statement-cache-capacity"];

fn check_url_params(url: &str) -> Result<(), StoreError> {
    let Some((_, query)) = url.split_once('?') else { return Ok(()) };
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let name = kv.split_once('=').map_or(kv, |(n, _)| n);
        if !URL_PARAMS.contains(&name) {
            let shown: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').take(40).collect();
            return Err(StoreError::Config(format!("the --database URL has a parameter this server does not pass on: `{shown}` (known: {})", URL_PARAMS.join(", "))));
        }
    }
    Ok(())
}

const GET: &str = "SELECT v FROM gesync.kv WHERE k = $1";
const RANGE: &str = "SELECT k, v FROM gesync.kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3";
const LAST: &str = "SELECT k, v FROM gesync.kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT 1";
const FIRST_PAGE: &str = "SELECT k, v FROM gesync.kv ORDER BY k LIMIT $1";
const NEXT_PAGE: &str = "SELECT k, v FROM gesync.kv WHERE k > $1 ORDER BY k LIMIT $2";
/// Several ranges in one query: each bound's entries through the primary key's index, the
/// bound's own limit applied to each, in the order of the bounds.
const RANGES: &str = "SELECT b.i, r.k, r.v FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS b(s, e, i) \
    CROSS JOIN LATERAL (SELECT k, v FROM gesync.kv WHERE k >= b.s AND k < b.e ORDER BY k LIMIT $3) r ORDER BY b.i, r.k";
/// How many entries each bound holds, up to a cap, in one query (keys only).
const COUNTS: &str = "SELECT (SELECT count(*) FROM (SELECT 1 FROM gesync.kv WHERE k >= b.s AND k < b.e LIMIT $3) x) \
    FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS b(s, e, i) ORDER BY b.i";
/// For the rest of a consistent read: ranges with a limit walk the key's index.
const INDEX_ORDER: &str = "SET LOCAL enable_bitmapscan = off";
/// How many entries one bound holds, up to a cap (keys only).
const COUNT: &str = "SELECT count(*) FROM (SELECT 1 FROM gesync.kv WHERE k >= $1 AND k < $2 LIMIT $3) x";
/// Entries read at a time by `for_each`.
const PAGE: usize = 1000;

type Pairs = Vec<Entry>;

fn pairs(rows: Vec<sqlx::postgres::PgRow>) -> Pairs {
    rows.into_iter().map(|r| (r.get::<Vec<u8>, _>(0), r.get::<Vec<u8>, _>(1))).collect()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn q_get<'e>(e: impl sqlx::PgExecutor<'e>, key: &[u8]) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(GET).bind(key).fetch_optional(e).await
}

async fn q_many<'e>(e: impl sqlx::PgExecutor<'e>, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, sqlx::Error> {
    let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
        sqlx::query("SELECT k, v FROM gesync.kv WHERE k = ANY($1)").bind(keys).fetch_all(e).await.map(pairs)?.into_iter().collect();
    Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
}

async fn q_range<'e>(e: impl sqlx::PgExecutor<'e>, start: &[u8], end: &[u8], n: usize) -> Result<Pairs, sqlx::Error> {
    sqlx::query(RANGE).bind(start).bind(end).bind(limit(n)).fetch_all(e).await.map(pairs)
}

async fn q_ranges<'e>(e: impl sqlx::PgExecutor<'e>, bounds: &[(Vec<u8>, Vec<u8>)], n: usize) -> Result<Vec<Pairs>, sqlx::Error> {
    // One bound (a commune officer's scope): the plain range query, planned as it always was.
    if let [(start, end)] = bounds {
        return Ok(vec![q_range(e, start, end, n).await?]);
    }
    let (starts, ends): (Vec<&[u8]>, Vec<&[u8]>) = bounds.iter().map(|(s, e)| (s.as_slice(), e.as_slice())).unzip();
    let rows = sqlx::query(RANGES).bind(starts).bind(ends).bind(limit(n)).fetch_all(e).await?;
    let mut out = vec![Vec::new(); bounds.len()];
    for row in rows {
        let i: i64 = row.get(0);
        out[(i - 1) as usize].push((row.get(1), row.get(2)));
    }
    Ok(out)
}

async fn q_counts<'e>(e: impl sqlx::PgExecutor<'e>, bounds: &[(Vec<u8>, Vec<u8>)], cap: usize) -> Result<Vec<u64>, sqlx::Error> {
    if let [(start, end)] = bounds {
        let n: i64 = sqlx::query_scalar(COUNT).bind(start).bind(end).bind(limit(cap)).fetch_one(e).await?;
        return Ok(vec![n as u64]);
    }
    let (starts, ends): (Vec<&[u8]>, Vec<&[u8]>) = bounds.iter().map(|(s, e)| (s.as_slice(), e.as_slice())).unzip();
    let counts: Vec<i64> = sqlx::query_scalar(COUNTS).bind(starts).bind(ends).bind(limit(cap)).fetch_all(e).await?;
    Ok(counts.into_iter().map(|c| c as u64).collect())
}

async fn q_last<'e>(e: impl sqlx::PgExecutor<'e>, start: &[u8], end: &[u8]) -> Result<Option<Entry>, sqlx::Error> {
    Ok(sqlx::query(LAST).bind(start).bind(end).fetch_optional(e).await?.map(|r| (r.get(0), r.get(1))))
}

async fn q_page<'e>(e: impl sqlx::PgExecutor<'e>, after: Option<&[u8]>) -> Result<Pairs, sqlx::Error> {
    match after {
        None => sqlx::query(FIRST_PAGE).bind(limit(PAGE)).fetch_all(e).await.map(pairs),
        Some(k) => sqlx::query(NEXT_PAGE).bind(k).bind(limit(PAGE)).fetch_all(e).await.map(pairs),
    }
}

/// The tables kept for people ([`Tables`]), each in key order; `None` when this role may not
/// read them (a runtime role needs no rights on them: `serve`'s background check then leaves
/// them to the owner's `check`). Asked first, so that a refusal does not end the transaction.
async fn q_tables(c: &mut sqlx::PgConnection) -> Result<Option<Tables>, sqlx::Error> {
    let readable: Option<bool> = sqlx::query_scalar(
        "SELECT bool_and(has_table_privilege(t, 'SELECT'))
           FROM unnest(ARRAY['gesync.records', 'gesync.org_units', 'gesync.accounts', 'gesync.devices', 'gesync.audit', 'gesync.approvals', 'gesync.conflicts', 'gesync.audit_checkpoints']) AS t",
    )
    .fetch_one(&mut *c)
    .await?;
    if readable != Some(true) {
        return Ok(None);
    }
    let text = |r: &sqlx::postgres::PgRow, i: usize| r.try_get::<String, _>(i);
    let maybe = |r: &sqlx::postgres::PgRow, i: usize| r.try_get::<Option<String>, _>(i);
    let uuid = |r: &sqlx::postgres::PgRow, i: usize| -> Result<[u8; 16], sqlx::Error> {
        r.try_get::<Vec<u8>, _>(i)?.try_into().map_err(|_| sqlx::Error::Decode("a uuid of 16 bytes".into()))
    };
    let mut t = Tables::default();
    for r in sqlx::query("SELECT uuid_send(id), kind, commune, quarter, deleted, feed_seq FROM gesync.records ORDER BY id").fetch_all(&mut *c).await? {
        t.records.push(RecordRow {
            id: uuid(&r, 0)?,
            kind: text(&r, 1)?,
            commune: text(&r, 2)?,
            quarter: maybe(&r, 3)?,
            deleted: r.try_get(4)?,
            feed_seq: r.try_get::<Option<i64>, _>(5)?.map(|n| n as u64),
        });
    }
    for r in sqlx::query("SELECT code, name, parent, level, merged_into FROM gesync.org_units ORDER BY code").fetch_all(&mut *c).await? {
        t.org_units.push(OrgUnitRow { code: text(&r, 0)?, name: text(&r, 1)?, parent: maybe(&r, 2)?, level: text(&r, 3)?, merged_into: maybe(&r, 4)? });
    }
    for r in sqlx::query("SELECT username, role, org_unit, disabled FROM gesync.accounts ORDER BY username").fetch_all(&mut *c).await? {
        t.accounts.push(AccountRow { username: text(&r, 0)?, role: text(&r, 1)?, org_unit: text(&r, 2)?, disabled: r.try_get(3)? });
    }
    for r in sqlx::query("SELECT username, device_id, revoked FROM gesync.devices ORDER BY username, device_id").fetch_all(&mut *c).await? {
        t.devices.push(DeviceRow { username: text(&r, 0)?, device_id: text(&r, 1)?, revoked: r.try_get(2)? });
    }
    for r in sqlx::query("SELECT seq, hash FROM gesync.audit ORDER BY seq").fetch_all(&mut *c).await? {
        t.audit.push(AuditRow { seq: r.try_get::<i64, _>(0)? as u64, hash: text(&r, 1)? });
    }
    for r in sqlx::query("SELECT org_unit, period, approved_by, changes_after FROM gesync.approvals ORDER BY org_unit, period").fetch_all(&mut *c).await? {
        t.approvals.push(ApprovalRow { org_unit: text(&r, 0)?, period: text(&r, 1)?, approved_by: text(&r, 2)?, changes_after: r.try_get::<i64, _>(3)? as u64 });
    }
    for r in sqlx::query("SELECT uuid_send(record_id), commune, path, competing FROM gesync.conflicts ORDER BY record_id, path").fetch_all(&mut *c).await? {
        t.conflicts.push(ConflictRow { record_id: uuid(&r, 0)?, commune: text(&r, 1)?, path: text(&r, 2)?, competing: r.try_get::<i32, _>(3)? as u32 });
    }
    for r in sqlx::query("SELECT seq, hash, signature FROM gesync.audit_checkpoints ORDER BY seq").fetch_all(&mut *c).await? {
        t.audit_checkpoints.push(CheckpointRow { seq: r.try_get::<i64, _>(0)? as u64, hash: text(&r, 1)?, signature: text(&r, 2)? });
    }
    Ok(Some(t))
}

/// Every entry in key order, a page at a time.
fn for_each_paged(
    mut page: impl FnMut(Option<&[u8]>) -> Result<Pairs, StoreError>,
    f: Visit<'_>,
) -> Result<(), StoreError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = page(after.as_deref())?;
        for (k, v) in &rows {
            f(k, v)?;
        }
        match rows.last() {
            Some((k, _)) if rows.len() == PAGE => after = Some(k.clone()),
            _ => return Ok(()),
        }
    }
}

impl KvRead for PgKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(q_get(&self.pool, key))
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.run(q_many(&self.pool, keys))
    }
    fn range(&self, start: &[u8], end: &[u8], n: usize) -> Result<Pairs, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.run(q_range(&self.pool, start, end, n))
    }
    fn ranges(&self, bounds: &[(Vec<u8>, Vec<u8>)], n: usize) -> Result<Vec<Pairs>, StoreError> {
        if bounds.is_empty() {
            return Ok(Vec::new());
        }
        self.run(q_ranges(&self.pool, bounds, n))
    }
    fn count_ranges(&self, bounds: &[(Vec<u8>, Vec<u8>)], cap: usize) -> Result<Vec<u64>, StoreError> {
        if bounds.is_empty() {
            return Ok(Vec::new());
        }
        self.run(q_counts(&self.pool, bounds, cap))
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        self.run(q_last(&self.pool, start, end))
    }
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError> {
        for_each_paged(|after| self.run(q_page(&self.pool, after)), f)
    }
    fn tables(&self) -> Result<Option<Tables>, StoreError> {
        self.begin_read()?.tables()
    }
}

/// An open transaction (a write transaction holding the write lock, or a consistent read).
struct Open {
    tx: Mutex<Option<Transaction<'static, Postgres>>>,
    rt: Arc<tokio::runtime::Runtime>,
    /// A write transaction's time holding the write lock (dropped after the commit or the
    /// rollback).
    _held: Option<super::LockHeld>,
}

/// Runs one query on an open transaction's connection and waits for it.
macro_rules! on_tx {
    ($open:expr, |$c:ident| $query:expr) => {{
        let mut guard = $open.tx.lock();
        let $c: &mut sqlx::PgConnection = &mut **guard.as_mut().expect("a transaction is open until it ends");
        $open.rt.block_on($query).map_err(io)
    }};
}

impl Drop for Open {
    fn drop(&mut self) {
        // Not committed: roll back now rather than leave it to the pool, so the write lock is
        // released at once.
        if let Some(tx) = self.tx.lock().take() {
            let _ = self.rt.block_on(tx.rollback());
        }
    }
}

impl KvRead for Open {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        on_tx!(self, |c| q_get(c, key))
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        on_tx!(self, |c| q_many(c, keys))
    }
    fn range(&self, start: &[u8], end: &[u8], n: usize) -> Result<Pairs, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        on_tx!(self, |c| q_range(c, start, end, n))
    }
    fn ranges(&self, bounds: &[(Vec<u8>, Vec<u8>)], n: usize) -> Result<Vec<Pairs>, StoreError> {
        if bounds.is_empty() {
            return Ok(Vec::new());
        }
        if bounds.len() > 1 && n < usize::MAX {
            // Each bound's first `n` entries by walking the key's index, never by a bitmap scan
            // that reads every entry of the bound and sorts them: the planner cannot see the
            // bounds inside `unnest`, and guesses a few hundred rows for each.
            on_tx!(self, |c| sqlx::query(INDEX_ORDER).execute(c))?;
        }
        on_tx!(self, |c| q_ranges(c, bounds, n))
    }
    fn count_ranges(&self, bounds: &[(Vec<u8>, Vec<u8>)], cap: usize) -> Result<Vec<u64>, StoreError> {
        if bounds.is_empty() {
            return Ok(Vec::new());
        }
        on_tx!(self, |c| q_counts(c, bounds, cap))
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        on_tx!(self, |c| q_last(c, start, end))
    }
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError> {
        for_each_paged(|after| on_tx!(self, |c| q_page(c, after)), f)
    }
    fn tables(&self) -> Result<Option<Tables>, StoreError> {
        on_tx!(self, |c| q_tables(c))
    }
}

impl WriteTx for Open {
    fn commit_then(self: Box<Self>, batch: Batch, applied: &mut dyn FnMut()) -> Result<(), StoreError> {
        // The batch's final state per key: later writes of a key replace earlier ones.
        let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = std::collections::BTreeMap::new();
        for (k, v) in batch.ops {
            last.insert(k, v);
        }
        let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in last {
            match v {
                Some(v) => {
                    keys.push(k);
                    values.push(v);
                }
                None => gone.push(k),
            }
        }
        let tx = self.tx.lock().take().expect("a transaction is open until it ends");
        self.rt
            .block_on(async move {
                let mut tx = tx;
                if !gone.is_empty() {
                    sqlx::query("DELETE FROM gesync.kv WHERE k = ANY($1)").bind(gone).execute(&mut *tx).await?;
                }
                if !keys.is_empty() {
                    sqlx::query("INSERT INTO gesync.kv (k, v) SELECT * FROM UNNEST($1::BYTEA[], $2::BYTEA[]) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
                        .bind(keys)
                        .bind(values)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            })
            .map_err(io)?;
        applied();
        Ok(())
    }
}

impl Kv for PgKv {
    fn keeps_report_rows(&self) -> bool {
        true
    }
    fn begin_write(&self) -> Result<Box<dyn WriteTx + '_>, StoreError> {
        Ok(Box::new(self.begin(&WRITE_TX)?))
    }

    fn begin_read(&self) -> Result<Box<dyn KvRead + '_>, StoreError> {
        Ok(Box::new(self.begin(&["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"])?))
    }

    fn wait_durable(&self) -> Result<(), StoreError> {
        // A commit is durable before it is visible.
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    fn size_on_disk(&self) -> u64 {
        self.run(sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())").fetch_one(&self.pool)).map(|n| n as u64).unwrap_or(0)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn check(&self) -> Result<(), StoreError> {
        use sqlx::Connection;
        let mut health = self.health.lock();
        let result = self.run(async {
            if health.is_none() {
                *health = Some(tokio::time::timeout(HEALTH_WAIT, sqlx::PgConnection::connect_with(&self.options)).await.map_err(|_| sqlx::Error::PoolTimedOut)??);
            }
            let conn = health.as_mut().expect("just opened");
            tokio::time::timeout(HEALTH_WAIT, sqlx::query("SELECT 1").execute(&mut *conn)).await.map_err(|_| sqlx::Error::PoolTimedOut)?
        });
        if result.is_err() {
            // Broken or stuck: the next check opens a new one.
            *health = None;
        }
        result.map(|_| ())
    }
}

/// How long a test database is kept: [`create_test_database`] drops those made longer ago.
const TEST_DATABASE_HOURS: u64 = 6;

/// For tests: a new, empty database on the PostgreSQL server of `admin_url` (the test command's
/// throw-away cluster, or a benchmark's `--database`), whose URL is returned. Its name holds the
/// hour it was made; test databases made more than [`TEST_DATABASE_HOURS`] before are dropped
/// first (a test run or benchmark takes minutes, and a developer's cluster otherwise fills up
/// and slows down). Runs on a thread of its own, so it may be called from async tests too.
#[doc(hidden)]
pub fn create_test_database(admin_url: &str) -> String {
    let admin = admin_url.to_string();
    std::thread::spawn(move || {
        let hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 3600);
        let name = format!("gesync_test_h{hour}_{}", uuid::Uuid::new_v4().simple());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&admin).await.expect("the test PostgreSQL answers (GESYNC_TEST_PG)");
            let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'gesync\\_test\\_h%'")
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
            for old in names {
                let made = old.strip_prefix("gesync_test_h").and_then(|r| r.split('_').next()).and_then(|h| h.parse::<u64>().ok());
                if made.is_some_and(|h| h + TEST_DATABASE_HOURS < hour) {
                    // Best effort: another run may be dropping it too.
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", old.replace('"', "\"\""))).execute(&mut c).await;
                }
            }
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await.expect("CREATE DATABASE");
        });
        let (base, _) = admin.rsplit_once('/').expect("a URL ending in /DB");
        format!("{base}/{name}")
    })
    .join()
    .expect("the database was made")
}

/// For tests: the test command's PostgreSQL (`GESYNC_TEST_PG`), which `scripts/test.sh`
/// starts; a test that needs it fails with this explanation rather than pass without it.
#[doc(hidden)]
pub fn test_admin_url() -> String {
    std::env::var("GESYNC_TEST_PG").unwrap_or_else(|_| {
        panic!("GESYNC_TEST_PG is not set: run the tests with `bash scripts/test.sh`, which starts a throw-away PostgreSQL and sets it")
    })
}

#[cfg(test)]
mod test_database_tests {
    /// Runs `sql` on the test PostgreSQL's admin connection; the first column of each row.
    fn admin(sql: &str) -> Vec<String> {
        let (url, sql) = (super::test_admin_url(), sql.to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, String>(&sql).fetch_all(&mut c).await.unwrap()
            })
        })
        .join()
        .unwrap()
    }

    #[test]
    fn test_databases_left_behind_are_dropped_after_some_hours() {
        let hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let old = format!("gesync_test_h{}_left_{tag}", hour - super::TEST_DATABASE_HOURS - 1);
        let recent = format!("gesync_test_h{}_recent_{tag}", hour - 1);
        for name in [&old, &recent] {
            admin(&format!("CREATE DATABASE {name}"));
        }
        let made = super::create_test_database(&super::test_admin_url());
        let left = admin(&format!("SELECT datname::TEXT FROM pg_database WHERE datname LIKE '%{tag}' ORDER BY 1"));
        admin(&format!("DROP DATABASE {recent}"));
        assert_eq!(left, std::slice::from_ref(&recent), "the one made {} hours ago is dropped, the one of an hour ago kept", super::TEST_DATABASE_HOURS + 1);
        assert!(made.contains(&format!("gesync_test_h{hour}_")), "{made}");
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    /// Issue "Security, second review", item 9: every form of the password stays out of
    /// errors, and a parameter the driver would log verbatim is refused by its name.
    #[test]
    fn no_form_of_the_password_is_shown() {
        let url = "postgres://gesync:S3cr%21t@db.example:5432/gesync?password=Other-Pw&sslmode=require";
        let text = "error connecting as gesync:S3cr%21t (S3cr!t) with password=Other-Pw";
        let shown = redact(text, url);
        assert!(!shown.contains("S3cr") && !shown.contains("Other-Pw"), "{shown}");
        assert!(shown.contains("gesync"));
        let err = PgKv::open(&PgConfig::new("postgres://gesync@127.0.0.1:1/gesync?pass=TopSecret9")).err().expect("refused").to_string();
        assert!(err.contains("`pass`") && !err.contains("TopSecret9"), "{err}");
        assert!(check_url_params("postgres://u:p@h/db?sslmode=disable&application_name=gesync").is_ok());
        // The driver's own error quotes a bad parameter value: shown through `PgKv::open`,
        // whatever the value held is replaced.
        let err = PgKv::open(&PgConfig::new("postgres://gesync@127.0.0.1:1/gesync?sslmode=Pa55w0rd-pasted-here")).err().expect("refused").to_string();
        assert!(err.contains("not a PostgreSQL URL") && !err.contains("Pa55w0rd"), "{err}");
    }
}
