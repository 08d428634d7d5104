//! The server's data, on top of a [`Kv`]: the container the repositories hang off ([`Db`]),
//! the org tree and its cache, the store's epoch, server secrets.
//!
//! Keyspace (one prefix per table; all multi-key changes go through one atomic [`Batch`]). Each
//! prefix belongs to one typed storage seam (a `*_rows.rs` module: rows in, rows out), and only
//! that module builds or reads its keys; the repositories above read and write rows (a test,
//! `every_key_prefix_belongs_to_one_module`, reads the sources and holds them to this table):
//! - `store_rows.rs` (the typed storage seam of the store's own rows, below `db.rs`,
//!   `org_units`, `figures`, `audit`): `o/{code}` org unit · `n/tree` version of the org tree ·
//!   `n/epoch`, `n/epoch-at` the store's epoch (which history the feed belongs to; never
//!   copied by a backup's restore) · `n/forms` the form level ([`FORM_LEVEL`]) · `k/{name}`
//!   server secrets
//! - `account_rows.rs` (the typed storage seam of accounts, below `accounts`, `org_units`,
//!   `check`): `u/{username}` user · `d/{username}/{device_id}` device
//! - `audit_rows.rs` (the typed storage seam of the audit chain, below `audit` and `check`):
//!   `a/{seq:be64}` audit entry · `ac/{seq:be64}` signed audit checkpoint
//! - `record_rows.rs` (the typed storage seam of records, below the `records`, `review`,
//!   `org_units`, `rebuild` and `check` that read and write them as rows): `r/{id16}` record document (`doc::save_record`) · `m/{id16}` record meta (`rows.rs`'s stored form) ·
//!   `fx/{id16}` its reporting row (`sync_core::facts::report_row`, plain JSON) ·
//!   `f/{commune}/{seq:be64}` → id16: the change feed (each record appears once, at the
//!   sequence number of its latest change, so a phone asks "what moved after my cursor" per
//!   commune) · `n/seq` last feed sequence number · `q/{commune}/{id16}` the review index ·
//!   `x/{actor}` → the user and device that first pushed changes with that Automerge actor ·
//!   `nd/{id}~{id}` pairs dismissed as not duplicates
//! - `figure_rows.rs` (the typed storage seam of the figures, below `figures`, `review`,
//!   `org_units`, `check`): `c/{unit}/{quarter}` materialized counters · `t/{unit}/{indicator}`
//!   targets · `ap/{unit}/{period}` approvals · `n/figures-mended` how many times a rebuild
//!   took the counters' drift out
//! - `upload_rows.rs` (the typed storage seam of uploads, below `uploads`):
//!   `up/{username}/{device_id}`, `us/{username}/{device_id}/{offset}` a large
//!   record's upload in progress
//! - `login_rows.rs` (the typed storage seam of logins, below `sessions` and `auth`):
//!   `w/{token hash}` web sessions · `rt/{token hash}` refresh tokens · `rf/{family}` ended
//!   refresh families

use std::sync::Arc;

// parking_lot's locks do not poison: a panic in one request (say, inside Automerge while
// merging a hostile push) fails that request and leaves the caches usable by the next.
use parking_lot::Mutex;

use serde::Serialize;

use crate::model::OrgTree;
use crate::store_rows::{StoreRows, StoreWrites};
use crate::store::{Batch, Kv, KvRead, StoreError};

/// Errors of the data layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request was abandoned (its client went away) before anything was written.
    #[error("the request was abandoned")]
    Cancelled,
    /// Unfinished uploads are at their bound (per account or in total): nothing was stored;
    /// retry later.
    #[error("{0}")]
    UploadsFull(String),
    /// The account has as many live devices as it may: an admin removes (revokes) an old one.
    #[error("this account already has {0} devices in use, the most it may have: ask an administrator to remove one it no longer uses")]
    TooManyDevices(usize),
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Store(StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(b'/');
        }
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored types serialise")
}

/// A stored JSON row read back; `what` names it in the error when it does not read.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, v: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(v).map_err(|e| corrupt(what, e))
}

pub use sync_core::plan::AuditEvent;

pub use crate::accounts::MAX_DEVICES_PER_ACCOUNT;
pub use crate::audit::{AuditCheckpoint, AuditEntry, AuditWitness, AUDIT_CHECKPOINT_EVERY};

/// The secret that signs access tokens: left out of a restore, so the restored server makes a
/// new one and every access token issued before stops working (a backup that leaked cannot be
/// used to mint tokens for the live server).
pub(crate) const TOKEN_SIGNING_SECRET: &str = "jwt-ed25519-pkcs8";




/// The in-memory copy of stored counters, kept only on a store no other process writes. A
/// write transaction reads its counters through it (no other writer can run meanwhile) and
/// puts its sums in once its batch is applied, before the next writer may begin. `epoch`
/// counts writes: a reader outside a transaction that missed the cache and read the store
/// only caches what it read if no write happened meanwhile, so a value read just before a
/// write can never overwrite the newer one in the cache.
#[derive(Default)]
pub(crate) struct CountersCache {
    pub(crate) epoch: u64,
    pub(crate) map: std::collections::HashMap<(String, indicators::Quarter), indicators::Counters>,
}

/// The data layer. Cheap to clone (an `Arc` inside).
///
/// Correctness lives in the store's write transactions ([`Kv::begin_write`]): each write that
/// reads before it writes (a push, a tree change, an approval, a user created, a refresh token
/// rotated, an audit entry appended) does both in one transaction, which no other writer of
/// any process can interleave. What is held here is caches, each with its rule:
/// - the org tree, with the version (`n/tree`) it was read at: a write transaction reads the
///   version and reloads the tree when it changed; other readers do so on a shared store;
/// - the counters (`figures.rs`), kept only on a store no other process writes, and brought up
///   to date by each write before the next may begin.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) kv: Box<dyn Kv>,
    pub(crate) tree: Mutex<(u64, Arc<OrgTree>)>,
    /// Materialized counters by key (`c/{unit}/{quarter}`), a cache of what is in the store
    /// (see `figures.rs`).
    pub(crate) counters_cache: Mutex<CountersCache>,
    pub(crate) upload_limits: Mutex<crate::uploads::UploadLimits>,
    /// The store's form level ([`FORM_LEVEL`]), as last read: at open, then by the watch of a
    /// shared store.
    form_level: std::sync::atomic::AtomicU64,
}

/// The newest stored forms this build reads, by level; it writes them in a store whose form
/// level (`gesync-server admin finalize-upgrade`) says every build serving it reads them too.
/// Level 1: record metadata in postcard (`rows::MetaForm`). A store at a level above this one
/// was finalized by a newer build, whose rows this build may not read: it refuses to open it.
pub const FORM_LEVEL: u64 = 1;


/// For how long after the store's epoch was renewed phones may relay other devices' changes
/// (the records they received from others, which the server forgot): long enough for a phone
/// in a mountain commune to come back into coverage.
pub const RELAY_WINDOW_SECS: i64 = 90 * 24 * 3600;

/// How often a server on a shared store checks whether another process changed the org tree
/// or the form level.
pub const TREE_WATCH: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps the cached tree and form level of a shared store current, on a thread of its own,
/// until the data layer is dropped. A failed read (the database is away) is tried again at the next tick.
fn watch_store(inner: std::sync::Weak<Inner>) {
    let _ = std::thread::Builder::new().name("gesync-store-watch".into()).spawn(move || loop {
        std::thread::sleep(TREE_WATCH);
        let Some(inner) = inner.upgrade() else { return };
        let db = Db { inner };
        let _ = db.tree_in(db.kv());
        // A store finalized while this replica runs: written in the new forms from now on.
        if let Ok(level) = db.kv().form_level() {
            db.inner.form_level.fetch_max(level.min(FORM_LEVEL), std::sync::atomic::Ordering::Relaxed);
        }
    });
}
pub(crate) fn read_u64(kv: &(impl KvRead + ?Sized), k: &[u8]) -> Result<u64, DbError> {
    match kv.get(k)? {
        Some(v) => Ok(u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt(&String::from_utf8_lossy(k), "bad length"))?)),
        None => Ok(0),
    }
}

fn load_tree(kv: &dyn KvRead) -> Result<OrgTree, DbError> {
    Ok(OrgTree::new(kv.all_org_units()?))
}

impl Db {
    pub fn open(kv: Box<dyn Kv>) -> Result<Self, DbError> {
        let version = kv.as_ref().tree_version()?;
        let form_level = kv.as_ref().form_level()?;
        if form_level > FORM_LEVEL {
            return Err(DbError::Invalid(format!(
                "the store was finalized for stored forms of level {form_level}, newer than this server's {FORM_LEVEL}: run the newer gesync-server"
            )));
        }
        let tree = load_tree(kv.as_ref())?;
        let db = Db {
            inner: Arc::new(Inner {
                kv,
                tree: Mutex::new((version, Arc::new(tree))),
                counters_cache: Mutex::new(Default::default()),
                upload_limits: Mutex::new(Default::default()),
                form_level: form_level.into(),
            }),
        };
        db.audit_log().verify_audit_chain_tail()?;
        // Created now, not inside the first audited write (which could not write it).
        db.audit_log().audit_key()?;
        if db.kv().stored_epoch()? == 0 {
            db.set_epoch(false)?;
        }
        if db.kv().shared() {
            watch_store(Arc::downgrade(&db.inner));
        }
        Ok(db)
    }

    // ---- the repositories -----------------------------------------------------------------

    /// Accounts and their devices (`accounts.rs`).
    pub fn accounts(&self) -> crate::accounts::Accounts<'_> {
        crate::accounts::Accounts { db: self }
    }

    /// The audit chain and its signed checkpoints (`audit.rs`).
    pub fn audit_log(&self) -> crate::audit::AuditLog<'_> {
        crate::audit::AuditLog { db: self }
    }

    /// Refresh tokens and their families (`auth.rs`).
    pub fn refresh_tokens(&self) -> crate::auth::RefreshTokens<'_> {
        crate::auth::RefreshTokens { db: self }
    }

    /// Counters, targets, approvals and the figures made of them (`figures.rs`).
    pub fn figures(&self) -> crate::figures::Figures<'_> {
        crate::figures::Figures { db: self }
    }

    /// Changes to the org tree (`org_units.rs`).
    pub fn org_units(&self) -> crate::org_units::OrgUnits<'_> {
        crate::org_units::OrgUnits { db: self }
    }

    /// Records, their documents and the change feed (`records.rs`).
    pub fn records(&self) -> crate::records::Records<'_> {
        crate::records::Records { db: self }
    }

    /// Reviewers' work: conflicts, duplicates, approvals (`review.rs`).
    pub fn review(&self) -> crate::review::Review<'_> {
        crate::review::Review { db: self }
    }

    /// Large records' uploads in progress (`uploads.rs`).
    pub fn uploads(&self) -> crate::uploads::Uploads<'_> {
        crate::uploads::Uploads { db: self }
    }

    /// Web sessions (`sessions.rs`).
    pub fn sessions(&self) -> crate::sessions::Sessions<'_> {
        crate::sessions::Sessions { db: self }
    }

    pub fn kv(&self) -> &dyn Kv {
        self.inner.kv.as_ref()
    }

    /// Stages rows of the typed storage seams (records, figures) into `batch`, as this store
    /// lays them out.
    pub(crate) fn stage<'b>(&self, batch: &'b mut Batch) -> crate::record_rows::KeyspaceWrites<'b> {
        crate::record_rows::KeyspaceWrites::new(batch, self.kv().keeps_report_rows(), crate::rows::MetaForm::at_level(self.form_level()))
    }

    /// Whether the store lives in this process (sled, memory), its reads lookups of a few
    /// microseconds; not a shared one (PostgreSQL), whose reads wait on the network.
    pub fn store_in_process(&self) -> bool {
        !self.kv().shared()
    }

    /// The store's form level as this process last read it ([`FORM_LEVEL`]).
    pub fn form_level(&self) -> u64 {
        self.inner.form_level.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that every build serving this store, and any kept to roll back to, reads the
    /// stored forms of this build ([`FORM_LEVEL`]): from now on they are written in them.
    /// Never lowers the level. Returns the level before and after.
    pub fn finalize_upgrade(&self) -> Result<(u64, u64), DbError> {
        let tx = self.kv().begin_write()?;
        let was = tx.form_level()?;
        let now = was.max(FORM_LEVEL);
        if now != was {
            let mut b = Batch::default();
            self.stage(&mut b).set_form_level(now);
            tx.commit(b)?;
        }
        self.inner.form_level.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        Ok((was, now))
    }

    /// Whether the store answers (`/healthz`).
    pub fn store_answers(&self) -> Result<(), DbError> {
        Ok(self.kv().check()?)
    }

    /// The store's bytes on disk (`/metrics`; 0 for memory).
    pub fn size_on_disk(&self) -> u64 {
        self.kv().size_on_disk()
    }

    /// The org tree as cached (no store read: callable anywhere). On a store only this process
    /// writes, it is always current. On a shared store, another replica's tree change reaches
    /// it within [`TREE_WATCH`]; every write transaction, and [`Db::current_tree`], read the
    /// stored version instead.
    pub fn tree(&self) -> Arc<OrgTree> {
        self.inner.tree.lock().1.clone()
    }

    /// The org tree at its stored version (one store read on a shared store): what decides a
    /// sync's scope.
    pub fn current_tree(&self) -> Result<Arc<OrgTree>, DbError> {
        if self.kv().shared() {
            self.tree_in(self.kv())
        } else {
            Ok(self.tree())
        }
    }

    /// The org tree as `r` sees it (in a write transaction: the tree the write must use).
    pub(crate) fn tree_in(&self, r: &dyn KvRead) -> Result<Arc<OrgTree>, DbError> {
        let version = r.tree_version()?;
        {
            let cached = self.inner.tree.lock();
            if cached.0 == version {
                return Ok(cached.1.clone());
            }
        }
        let tree = Arc::new(load_tree(r)?);
        self.cache_tree(version, tree.clone());
        Ok(tree)
    }

    /// Puts the tree of `version` in the cache unless the cache holds a newer one: on a shared
    /// store another replica's newer tree may have been read meanwhile, and the cache never
    /// moves backwards.
    pub(crate) fn cache_tree(&self, version: u64, tree: Arc<OrgTree>) {
        let mut cached = self.inner.tree.lock();
        if cached.0 < version {
            *cached = (version, tree);
        }
    }

    /// Writes a batch in a transaction of its own (durable on return).
    pub fn commit(&self, batch: Batch) -> Result<(), DbError> {
        Ok(self.kv().write(batch)?)
    }


    // ---- the store's epoch ------------------------------------------------------------------

    /// The store's epoch as read in `r`: a random id made with the store, made anew by every
    /// restore (which does not copy it) and by `admin new-epoch` after a failover. Carried in
    /// every cursor and sync answer: a phone that meets another epoch offers everything it
    /// holds again, because the server may have forgotten what it acknowledged
    /// (`SyncResponse::epoch`).
    pub(crate) fn epoch_in(r: &dyn KvRead) -> Result<u64, DbError> {
        match r.stored_epoch()? {
            0 => Err(corrupt("store epoch", "missing")),
            e => Ok(e),
        }
    }

    /// The store's epoch.
    pub fn epoch(&self) -> Result<u64, DbError> {
        Self::epoch_in(self.kv())
    }

    /// Gives the store a new epoch (`renew`), or its first one if it has none (two processes
    /// opening a new store at once agree on one). Phones holding the old one reconcile at their
    /// next sync: after a failover onto a standby that was behind, or a point-in-time restore,
    /// what the server acknowledged to them may be gone. A renewed epoch (or one a restore
    /// made: the restored store has none until it opens) opens the relay window
    /// ([`Db::relay_open`]).
    pub fn set_epoch(&self, renew: bool) -> Result<u64, DbError> {
        let tx = self.kv().begin_write()?;
        let current = tx.stored_epoch()?;
        if !renew && current != 0 {
            return Ok(current);
        }
        let epoch = loop {
            let e = rand::random::<u64>();
            if e != 0 && e != current {
                break e;
            }
        };
        let mut b = Batch::default();
        let at = if renew { now_secs().max(1) } else { 0 };
        self.stage(&mut b).set_epoch(epoch, at);
        tx.commit(b)?;
        Ok(epoch)
    }

    /// Whether pushes may relay other devices' changes at `now`: within [`RELAY_WINDOW_SECS`]
    /// of the epoch's renewal (never for the epoch a store started with).
    pub fn relay_open(&self, now: i64) -> Result<bool, DbError> {
        let at = self.kv().epoch_renewed_at()?;
        Ok(at > 0 && now - at < RELAY_WINDOW_SECS)
    }

    // ---- server secrets --------------------------------------------------------------------

    /// Returns the secret stored under `name`, creating it with `make` the first time.
    pub fn secret(&self, name: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, DbError> {
        if let Some(v) = self.kv().stored_secret(name)? {
            return Ok(v);
        }
        // Made in a transaction: two processes creating it at once agree on one value.
        let tx = self.kv().begin_write()?;
        if let Some(v) = tx.stored_secret(name)? {
            return Ok(v);
        }
        let v = make();
        let mut b = Batch::default();
        self.stage(&mut b).put_secret(name, &v);
        tx.commit(b)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OrgUnit;
    use crate::store::MemKv;

    /// Each key prefix, and the one module (a file of `server/src`) that may build or read its
    /// keys: the table in this module's documentation. The store's implementations (`store/`)
    /// are left out: they know no prefix, except PostgreSQL's reporting projection, whose
    /// trigger (`migrations/0002_reporting.sql`) copies `o/`, `t/` and `fx/` rows into tables.
    const KEY_OWNERS: &[(&str, &str)] = &[
        ("o/", "store_rows.rs"),
        ("n/tree", "store_rows.rs"),
        ("n/epoch", "store_rows.rs"),
        ("n/forms", "store_rows.rs"),
        ("k/", "store_rows.rs"),
        ("u/", "account_rows.rs"),
        ("d/", "account_rows.rs"),
        ("a/", "audit_rows.rs"),
        ("ac/", "audit_rows.rs"),
        ("r/", "record_rows.rs"),
        ("m/", "record_rows.rs"),
        ("fx/", "record_rows.rs"),
        ("f/", "record_rows.rs"),
        ("n/seq", "record_rows.rs"),
        ("q/", "record_rows.rs"),
        ("x/", "record_rows.rs"),
        ("c/", "figure_rows.rs"),
        ("t/", "figure_rows.rs"),
        ("ap/", "figure_rows.rs"),
        ("n/figures-mended", "figure_rows.rs"),
        ("up/", "upload_rows.rs"),
        ("us/", "upload_rows.rs"),
        ("w/", "login_rows.rs"),
        ("rt/", "login_rows.rs"),
        ("rf/", "login_rows.rs"),
        ("nd/", "record_rows.rs"),
    ];

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "store") {
                    rust_files(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// No module outside a repository knows its keys: a string literal starting with a prefix
    /// (`"m/"`, `b"m/"`, `key("m/", ..)`) appears in its owner's file only.
    #[test]
    fn every_key_prefix_belongs_to_one_module() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(files.len() > 30, "the sources are read ({} files)", files.len());
        let mut strays = Vec::new();
        let mut owned = std::collections::HashSet::new();
        for path in &files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Comments, and the table above.
                if line.trim_start().starts_with("//") || line.trim_end().ends_with(".rs\"),") {
                    continue;
                }
                // Every key family `key()` builds is in the table.
                for built in line.split("key(\"").skip(1) {
                    let prefix = built.split('"').next().unwrap_or_default();
                    if !KEY_OWNERS.iter().any(|(p, _)| *p == prefix) {
                        strays.push(format!("{}:{}: `{prefix}` is in no module's keys (add it to KEY_OWNERS and the keyspace's table)", path.strip_prefix(&src).unwrap().display(), n + 1));
                    }
                }
                for (prefix, owner) in KEY_OWNERS {
                    if line.contains(&format!("\"{prefix}")) {
                        if name == *owner {
                            owned.insert(*prefix);
                        } else {
                            strays.push(format!("{}:{}: `{prefix}` belongs to {owner}", path.strip_prefix(&src).unwrap().display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(strays.is_empty(), "keys built or read outside their module:\n{}", strays.join("\n"));
        // Every prefix belongs to a typed storage seam: no repository above them owns a key.
        let above: Vec<_> = KEY_OWNERS.iter().filter(|(_, owner)| !owner.ends_with("_rows.rs")).collect();
        assert!(above.is_empty(), "prefixes owned above the storage seams: {above:?}");
        // The table names no prefix its owner does not use (it says where keys live).
        let unused: Vec<_> = KEY_OWNERS.iter().filter(|(p, _)| !owned.contains(p)).collect();
        assert!(unused.is_empty(), "prefixes their owner never uses: {unused:?}");
    }

    /// The HTTP handlers (`api/`, `web/`) reach the data through the repositories only: they
    /// never open the store's keyspace (`.kv()`) nor name the store's module, except a test
    /// module making a store in memory.
    #[test]
    fn handlers_reach_the_store_through_the_repositories_only() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src.join("api"), &mut files);
        rust_files(&src.join("web"), &mut files);
        assert!(files.len() > 15, "the handlers are read ({} files)", files.len());
        let mut strays = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let in_memory_for_a_test = line.trim() == "use crate::store::MemKv;";
                if line.contains(".kv()") || (line.contains("store::") && !in_memory_for_a_test) {
                    strays.push(format!("{}:{}: {}", path.strip_prefix(&src).unwrap().display(), n + 1, line.trim()));
                }
            }
        }
        assert!(strays.is_empty(), "handlers reaching past the repositories:\n{}", strays.join("\n"));
    }

    /// The repositories, and what names each: its type and its accessor on [`Db`].
    const REPOSITORIES: &[(&str, &str, &str)] = &[
        ("accounts", "Accounts", "accounts"),
        ("audit", "AuditLog", "audit_log"),
        ("auth", "RefreshTokens", "refresh_tokens"),
        ("figures", "Figures", "figures"),
        ("org_units", "OrgUnits", "org_units"),
        ("records", "Records", "records"),
        ("review", "Review", "review"),
        ("sessions", "Sessions", "sessions"),
        ("uploads", "Uploads", "uploads"),
        // What works across repositories, owning no key.
        ("rebuild", "", "rebuild_figures"),
        ("check", "", ""),
        ("backup", "", ""),
    ];

    /// The data layer's modules call one way: no repository calls, through another, back into
    /// itself (`records` → `figures`, never back; the rebuild reads records and writes figures
    /// from above both). `db.rs`, the container every repository hangs off, is left out.
    #[test]
    fn the_repositories_call_one_way() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let uses = |module: &str, other: &(&str, &str, &str)| -> bool {
            let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
            let code: String = text.split("#[cfg(test)]\nmod tests").next().unwrap().lines().filter(|l| !l.trim_start().starts_with("//")).collect();
            let (name, ty, accessor) = other;
            code.contains(&format!("crate::{name}::"))
                || (!ty.is_empty() && code.contains(&format!("{ty}::")))
                || (!accessor.is_empty() && code.contains(&format!(".{accessor}(")))
        };
        let mut calls: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (module, _, _) in REPOSITORIES {
            let callees = REPOSITORIES.iter().filter(|o| o.0 != *module && uses(module, o)).map(|o| o.0).collect();
            calls.insert(module, callees);
        }
        assert!(calls["records"].contains(&"figures") && calls["review"].contains(&"records"), "the sources are read: {calls:?}");
        // The typed storage seams are below every repository: they name none.
        for seam in ["record_rows", "figure_rows", "audit_rows", "account_rows", "login_rows", "upload_rows", "store_rows"] {
            let up: Vec<&str> = REPOSITORIES.iter().filter(|o| uses(seam, o)).map(|o| o.0).collect();
            assert!(up.is_empty(), "the storage seam `{seam}` calls up into {up:?}");
        }
        // Depth-first: a module met again on the path it is reached by closes a circle.
        fn visit<'a>(m: &'a str, calls: &std::collections::BTreeMap<&'a str, Vec<&'a str>>, path: &mut Vec<&'a str>, circles: &mut Vec<String>) {
            if let Some(at) = path.iter().position(|p| *p == m) {
                circles.push([&path[at..], &[m]].concat().join(" → "));
                return;
            }
            path.push(m);
            for next in &calls[m] {
                visit(next, calls, path, circles);
            }
            path.pop();
        }
        let mut circles = Vec::new();
        for m in calls.keys() {
            visit(m, &calls, &mut Vec::new(), &mut circles);
        }
        circles.sort();
        circles.dedup();
        assert!(circles.is_empty(), "repositories calling back into themselves:\n{}", circles.join("\n"));
    }

    fn ev(action: &'static str, target: &str) -> AuditEvent {
        AuditEvent { user: "admin".into(), device_id: None, action, target: target.into() }
    }

    #[test]
    fn the_cached_tree_never_moves_backwards() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let newer = Arc::new(OrgTree::new([OrgUnit::new("04", "Cao Bằng", None, "province")]));
        db.cache_tree(7, newer);
        db.cache_tree(6, Arc::new(OrgTree::new([])));
        assert!(db.tree().get("04").is_some(), "an older tree read late does not replace a newer one");
        assert_eq!(db.inner.tree.lock().0, 7);
    }

    #[test]
    fn a_province_merged_into_another_hands_over_its_districts_and_targets() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let u = |c: &str, p: Option<&str>, l: &str| OrgUnit::new(c, c, p.map(Into::into), l);
        for unit in [u("24", None, "province"), u("216", Some("24"), "district"), u("21601", Some("216"), "commune"), u("27", None, "province")] {
            db.org_units().put_org_unit(unit, None).unwrap();
        }
        let target = indicators::Milestones::new([(2025, 0.7), (2030, 0.8)]).unwrap();
        db.figures().set_target("24", indicators::IndicatorId::GbvVictimsSupported, &target, None).unwrap();
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let m = db.org_units().merge_org_unit("24", "27", day("2025-07-01"), day("2026-11-30"), Some(ev("org_unit_merge", "24"))).unwrap();
        assert_eq!((m.children_moved, m.targets_carried), (vec!["216".to_string()], vec!["gbv_victims_supported".to_string()]));
        let tree = db.tree();
        assert_eq!(tree.chain("21601"), ["21601", "216", "27"]);
        assert_eq!(tree.communes_under("27"), ["21601"]);
        assert!(db.figures().indicators("24", "2025".parse().unwrap()).unwrap_err().to_string().contains("merged into `27`"));
        let t = db.figures().targets().unwrap();
        assert_eq!(t.target_for(&tree.chain("21601"), indicators::IndicatorId::GbvVictimsSupported, 2025), Some(0.7));
        // A merged unit stays history: it cannot be moved, nor can units be added under it.
        assert!(db.org_units().put_org_unit(u("24", Some("27"), "province"), None).unwrap_err().to_string().contains("history"));
        assert!(db.org_units().put_org_unit(u("24999", Some("24"), "commune"), None).unwrap_err().to_string().contains("current map"));
        // The merge is audited, once.
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Ok(1));
    }

    #[test]
    fn org_units_validate_parent_and_cycles() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let u = |c: &str, p: Option<&str>, l: &str| OrgUnit::new(c, c, p.map(Into::into), l);
        db.org_units().put_org_unit(u("04", None, "province"), None).unwrap();
        db.org_units().put_org_unit(u("047", Some("04"), "district"), None).unwrap();
        assert!(db.org_units().put_org_unit(u("048", Some("99"), "district"), None).unwrap_err().to_string().contains("unknown parent"));
        assert!(db.org_units().put_org_unit(u("04", Some("047"), "province"), None).unwrap_err().to_string().contains("cycle"));
        assert!(db.org_units().put_org_unit(u("x4", None, "province"), None).is_err());
        assert_eq!(db.tree().chain("047"), ["047", "04"]);
    }
}
