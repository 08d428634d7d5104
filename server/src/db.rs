//! The server's data, on top of a [`Kv`]: org units, users, devices, records and their change
//! feed, the audit chain.
//!
//! Keyspace (one prefix per table; all multi-key changes go through one atomic [`Batch`]):
//! - `o/{code}` org unit · `u/{username}` user · `d/{username}/{device_id}` device
//! - `r/{id16}` record document (`doc::save_record`) · `m/{id16}` record meta ·
//!   `fx/{id16}` its reporting row (`sync_core::facts::report_row`, plain JSON)
//! - `up/{username}/{device_id}`, `us/{username}/{device_id}/{offset}` a large record's upload in
//!   progress (`uploads.rs`)
//! - `f/{commune}/{seq:be64}` → id16: the change feed. Each record appears once, at the sequence
//!   number of its latest change, so a phone asks "what moved after my cursor" per commune.
//! - `x/{actor}` → the user and device that first pushed changes with that Automerge actor
//! - `a/{seq:be64}` audit entry · `ac/{seq:be64}` signed audit checkpoint · `k/...` server keys
//!   · `n/seq` last feed sequence number · `n/tree` version of the org tree · `n/epoch` the
//!   store's epoch (which history the feed belongs to; never copied by a backup's restore)
//! - `c/...` materialized figures (see `figures.rs`)

use std::sync::Arc;

// parking_lot's locks do not poison: a panic in one request (say, inside Automerge while
// merging a hostile push) fails that request and leaves the caches usable by the next.
use parking_lot::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Device, OrgTree, OrgUnit, User};
use crate::store::{prefix_end, Batch, Kv, KvRead, StoreError};

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

pub(crate) fn get_json<T: for<'de> Deserialize<'de>>(kv: &dyn KvRead, k: &[u8]) -> Result<Option<T>, DbError> {
    match kv.get(k)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| corrupt(&String::from_utf8_lossy(&k[..k.len().min(2)]), e)),
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored types serialise")
}

/// One audit entry. Never holds record contents, tokens or passwords.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: i64,
    pub user: String,
    pub device_id: Option<String>,
    pub action: String,
    pub target: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.seq.to_be_bytes());
        h.update(self.at.to_be_bytes());
        for part in [&self.user, self.device_id.as_deref().unwrap_or(""), &self.action, &self.target, &self.prev_hash] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Every this many audit entries, the chain's head is signed (an `ac/` checkpoint).
pub const AUDIT_CHECKPOINT_EVERY: u64 = 64;

/// A signed statement "the audit chain had `seq` entries, the last one hashing to `hash`, and
/// the checkpoint before this one was signed `prev`", signed with the server's audit key
/// (Ed25519, `k/audit-ed25519-seed`, kept across restores). Rewriting or cutting the chain
/// before a checkpoint then needs that key, not just write access to the entries; a checkpoint
/// deleted from the middle breaks the next one's `prev`, and one missing at a multiple of
/// [`AUDIT_CHECKPOINT_EVERY`] is itself a break. What the store alone cannot show is a tail cut
/// off together with its checkpoints: for that the latest checkpoint also leaves the store (the
/// log, the admin's page, and the `--audit-witness` file: [`Db::verify_audit_chain_against`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub seq: u64,
    pub hash: String,
    /// The previous checkpoint's signature ("" for the first); absent in checkpoints written
    /// before it was signed (they verify as they were signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    pub signature: String,
}

impl AuditCheckpoint {
    fn message(seq: u64, hash: &str, prev: Option<&str>) -> Vec<u8> {
        match prev {
            None => [b"gesync audit checkpoint\0".as_slice(), &seq.to_be_bytes(), hash.as_bytes()].concat(),
            Some(prev) => [b"gesync audit checkpoint v2\0".as_slice(), &seq.to_be_bytes(), hash.as_bytes(), b"\0", prev.as_bytes()].concat(),
        }
    }
}

/// A checkpoint seen outside the store (a line of the `--audit-witness` file): the chain must
/// hold it, with that very signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditWitness {
    pub seq: u64,
    pub signature: String,
}

impl AuditWitness {
    /// The line the witness file gets for `ck`.
    pub fn line(ck: &AuditCheckpoint) -> String {
        format!("{} {}", ck.seq, ck.signature)
    }

    /// Every checkpoint the witness file at `path` recorded (none when it cannot be read yet).
    pub fn read(path: &std::path::Path) -> Vec<AuditWitness> {
        std::fs::read_to_string(path).map(|t| Self::all_in(&t)).unwrap_or_default()
    }

    /// Every well-formed line of a witness file's text, in order.
    pub fn all_in(text: &str) -> Vec<AuditWitness> {
        text.lines()
            .filter_map(|l| {
                let (seq, sig) = l.trim().split_once(' ')?;
                Some(AuditWitness { seq: seq.parse().ok()?, signature: sig.to_string() })
            })
            .collect()
    }
}

pub use sync_core::plan::AuditEvent;



/// The in-memory copy of stored counters, kept only on a store no other process writes. A
/// write transaction reads its counters through it (no other writer can run meanwhile) and
/// puts its sums in once its batch is applied, before the next writer may begin. `epoch`
/// counts writes: a reader outside a transaction that missed the cache and read the store
/// only caches what it read if no write happened meanwhile, so a value read just before a
/// write can never overwrite the newer one in the cache.
#[derive(Default)]
pub(crate) struct CountersCache {
    pub(crate) epoch: u64,
    pub(crate) map: std::collections::HashMap<Vec<u8>, indicators::Counters>,
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
}

pub(crate) const TREE_VERSION: &[u8] = b"n/tree";

/// Most devices in use (not revoked) one account may have: a few phones and browsers. Every
/// device may hold an unfinished upload, so this also bounds what one account can make the
/// server keep.
pub const MAX_DEVICES_PER_ACCOUNT: usize = 6;

/// The store's epoch: a random id made with the store, made anew by every restore (which does
/// not copy it) and by `admin new-epoch` after a failover. Carried in every cursor and sync
/// answer: a phone that meets another epoch offers everything it holds again, because the
/// server may have forgotten what it acknowledged (`SyncResponse::epoch`).
pub(crate) const EPOCH: &[u8] = b"n/epoch";
/// When the store's epoch was renewed (seconds; 0 for the epoch a new store starts with).
pub(crate) const EPOCH_AT: &[u8] = b"n/epoch-at";

/// For how long after the store's epoch was renewed phones may relay other devices' changes
/// (the records they received from others, which the server forgot): long enough for a phone
/// in a mountain commune to come back into coverage.
pub const RELAY_WINDOW_SECS: i64 = 90 * 24 * 3600;

/// How often a server on a shared store checks whether another replica changed the org tree.
pub const TREE_WATCH: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps the cached tree of a shared store current, on a thread of its own, until the data
/// layer is dropped. A failed read (the database is away) is tried again at the next tick.
fn watch_tree(inner: std::sync::Weak<Inner>) {
    let _ = std::thread::Builder::new().name("gesync-tree-watch".into()).spawn(move || loop {
        std::thread::sleep(TREE_WATCH);
        let Some(inner) = inner.upgrade() else { return };
        let db = Db { inner };
        let _ = db.tree_in(db.kv());
    });
}
const AUDIT_SEED: &str = "audit-ed25519-seed";

fn signing_key(seed: &[u8]) -> Result<ed25519_dalek::SigningKey, DbError> {
    let seed: [u8; 32] = seed.try_into().map_err(|_| corrupt("audit key", "not 32 bytes"))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The audit key as a write transaction reads it ([`Db::open`] made it).
fn audit_key_in(r: &dyn KvRead) -> Result<ed25519_dalek::SigningKey, DbError> {
    let seed = r.get(&key("k/", &[AUDIT_SEED.as_bytes()]))?.ok_or_else(|| corrupt("audit key", "missing"))?;
    signing_key(&seed)
}

pub(crate) fn read_u64(kv: &dyn KvRead, k: &[u8]) -> Result<u64, DbError> {
    match kv.get(k)? {
        Some(v) => Ok(u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt(&String::from_utf8_lossy(k), "bad length"))?)),
        None => Ok(0),
    }
}

fn load_tree(kv: &dyn KvRead) -> Result<OrgTree, DbError> {
    let units: Vec<OrgUnit> = kv
        .range(b"o/", &prefix_end(b"o/"), usize::MAX)?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt("org unit", e)))
        .collect::<Result<_, _>>()?;
    Ok(OrgTree::new(units))
}

impl Db {
    pub fn open(kv: Box<dyn Kv>) -> Result<Self, DbError> {
        let version = read_u64(kv.as_ref(), TREE_VERSION)?;
        let tree = load_tree(kv.as_ref())?;
        let db = Db {
            inner: Arc::new(Inner { kv, tree: Mutex::new((version, Arc::new(tree))), counters_cache: Mutex::new(Default::default()), upload_limits: Mutex::new(Default::default()) }),
        };
        db.verify_audit_chain_tail()?;
        // Created now, not inside the first audited write (which could not write it).
        db.audit_key()?;
        if db.kv().get(EPOCH)?.is_none() {
            db.set_epoch(false)?;
        }
        if db.kv().shared() {
            watch_tree(Arc::downgrade(&db.inner));
        }
        Ok(db)
    }

    pub fn kv(&self) -> &dyn Kv {
        self.inner.kv.as_ref()
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
        let version = read_u64(r, TREE_VERSION)?;
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

    /// The last feed sequence number.
    pub fn feed_seq(&self) -> Result<u64, DbError> {
        read_u64(self.kv(), b"n/seq")
    }

    pub(crate) fn feed_seq_in(r: &dyn KvRead) -> Result<u64, DbError> {
        read_u64(r, b"n/seq")
    }

    // ---- users and devices -----------------------------------------------------------------

    pub fn get_user(&self, username: &str) -> Result<Option<User>, DbError> {
        get_json(self.kv(), &key("u/", &[username.as_bytes()]))
    }

    pub fn list_users(&self) -> Result<Vec<User>, DbError> {
        Self::users_in(self.kv())
    }

    pub(crate) fn users_in(r: &dyn KvRead) -> Result<Vec<User>, DbError> {
        r.range(b"u/", &prefix_end(b"u/"), usize::MAX)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt("user", e)))
            .collect()
    }

    /// Writes a user; `create` refuses an existing username.
    pub fn put_user(&self, user: &User, create: bool, audit: Option<AuditEvent>) -> Result<(), DbError> {
        // One transaction, so that two admins creating the same username cannot both succeed.
        let tx = self.kv().begin_write()?;
        let k = key("u/", &[user.username.as_bytes()]);
        if create && tx.get(&k)?.is_some() {
            return Err(DbError::Conflict(format!("user `{}` already exists", user.username)));
        }
        let mut batch = Batch::default();
        batch.put(k, to_json(user));
        self.audit_into(&*tx, &mut batch, audit)?;
        Ok(tx.commit(batch)?)
    }

    /// Changes a user as stored now, in one write transaction (`None`: no such user). A
    /// disabled account's unfinished uploads go in the same write.
    pub fn update_user<E: From<DbError>>(&self, username: &str, audit: Option<AuditEvent>, change: impl FnOnce(&mut User) -> Result<(), E>) -> Result<Option<User>, E> {
        let tx = self.kv().begin_write().map_err(DbError::from)?;
        let k = key("u/", &[username.as_bytes()]);
        let Some(mut user) = get_json::<User>(&*tx, &k)? else { return Ok(None) };
        change(&mut user)?;
        let mut batch = Batch::default();
        batch.put(k, to_json(&user));
        if user.disabled {
            Self::drop_uploads_into(&*tx, &mut batch, username, None)?;
        }
        self.audit_into(&*tx, &mut batch, audit)?;
        tx.commit(batch).map_err(DbError::from)?;
        Ok(Some(user))
    }

    pub fn get_device(&self, username: &str, device_id: &str) -> Result<Option<Device>, DbError> {
        get_json(self.kv(), &key("d/", &[username.as_bytes(), device_id.as_bytes()]))
    }

    pub fn list_devices(&self, username: &str) -> Result<Vec<Device>, DbError> {
        Self::devices_in(self.kv(), username)
    }

    /// Records a login from `device_id`, in one write transaction (so that a revoke racing
    /// the login always wins): a known device's `last_seen` moves; a revoked one is refused
    /// (`Ok(false)`); a new one is registered. Past [`MAX_DEVICES_PER_ACCOUNT`] devices in use,
    /// the account's least recently seen session the server itself named (a browser of the web
    /// pages, an API login that named no device: [`crate::model::server_made_device`]) is
    /// retired to make room; such a session holds no unsent work. A phone is never retired
    /// this way (revoking it wipes it): with only phones in use, the login is refused
    /// ([`DbError::TooManyDevices`]) until an admin removes an old one.
    pub fn login_device(&self, username: &str, device_id: &str, now: i64, audit: Option<AuditEvent>) -> Result<bool, DbError> {
        let tx = self.kv().begin_write()?;
        let k = key("d/", &[username.as_bytes(), device_id.as_bytes()]);
        let mut batch = Batch::default();
        let device = match get_json::<Device>(&*tx, &k)? {
            Some(d) if d.revoked => return Ok(false),
            Some(d) => Device { last_seen: now, ..d },
            None => {
                let live: Vec<Device> = Self::devices_in(&*tx, username)?.into_iter().filter(|d| !d.revoked).collect();
                if live.len() >= MAX_DEVICES_PER_ACCOUNT {
                    let oldest = live.into_iter().filter(|d| crate::model::server_made_device(&d.device_id)).min_by_key(|d| d.last_seen);
                    let Some(oldest) = oldest else {
                        return Err(DbError::TooManyDevices(MAX_DEVICES_PER_ACCOUNT));
                    };
                    Self::revoke_into(&*tx, &mut batch, oldest)?;
                }
                Device { username: username.to_string(), device_id: device_id.to_string(), first_seen: now, last_seen: now, revoked: false }
            }
        };
        batch.put(k, to_json(&device));
        self.audit_into(&*tx, &mut batch, audit)?;
        tx.commit(batch)?;
        Ok(true)
    }

    /// Revokes a device, in one write transaction, and drops its unfinished upload; `Ok(false)`
    /// when there is no such device.
    pub fn revoke_device(&self, username: &str, device_id: &str, audit: Option<AuditEvent>) -> Result<bool, DbError> {
        let tx = self.kv().begin_write()?;
        let k = key("d/", &[username.as_bytes(), device_id.as_bytes()]);
        let Some(device) = get_json::<Device>(&*tx, &k)? else { return Ok(false) };
        let mut batch = Batch::default();
        Self::revoke_into(&*tx, &mut batch, device)?;
        self.audit_into(&*tx, &mut batch, audit)?;
        tx.commit(batch)?;
        Ok(true)
    }

    /// Puts into `batch` a device marked revoked and the removal of its unfinished upload, as
    /// read in the write transaction `r`.
    fn revoke_into(r: &dyn KvRead, batch: &mut Batch, device: Device) -> Result<(), DbError> {
        Self::drop_uploads_into(r, batch, &device.username, Some(&device.device_id))?;
        batch.put(key("d/", &[device.username.as_bytes(), device.device_id.as_bytes()]), to_json(&Device { revoked: true, ..device }));
        Ok(())
    }

    fn devices_in(r: &dyn KvRead, username: &str) -> Result<Vec<Device>, DbError> {
        let prefix = key("d/", &[username.as_bytes(), b""]);
        r.range(&prefix, &prefix_end(&prefix), usize::MAX)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt("device", e)))
            .collect()
    }

    pub fn put_device(&self, device: &Device, audit: Option<AuditEvent>) -> Result<(), DbError> {
        let mut batch = Batch::default();
        batch.put(key("d/", &[device.username.as_bytes(), device.device_id.as_bytes()]), to_json(device));
        self.commit_audited(batch, audit)
    }

    // ---- audit -----------------------------------------------------------------------------

    /// Appends an audit entry on its own (durable before returning).
    pub fn audit(&self, ev: AuditEvent) -> Result<(), DbError> {
        self.commit_audited(Batch::default(), Some(ev))
    }

    /// Commits `batch` together with an audit entry, atomically and durably.
    pub fn commit_audited(&self, mut batch: Batch, ev: Option<AuditEvent>) -> Result<(), DbError> {
        let tx = self.kv().begin_write()?;
        self.audit_into(&*tx, &mut batch, ev)?;
        Ok(tx.commit(batch)?)
    }

    /// Puts the audit entry of `ev` into `batch`, linked to the chain's tail as write
    /// transaction `tx` sees it: the transaction is the only writer, so entries never fork.
    pub(crate) fn audit_into(&self, tx: &dyn KvRead, batch: &mut Batch, ev: Option<AuditEvent>) -> Result<(), DbError> {
        let Some(ev) = ev else { return Ok(()) };
        let (seq, prev_hash) = match tx.last_in(b"a/", &prefix_end(b"a/"))? {
            Some((_, v)) => {
                let last: AuditEntry = serde_json::from_slice(&v).map_err(|e| corrupt("audit", e))?;
                (last.seq + 1, last.hash)
            }
            None => (1, "0".repeat(64)),
        };
        let mut entry = AuditEntry {
            seq,
            at: now_secs(),
            user: ev.user,
            device_id: ev.device_id,
            action: ev.action.to_string(),
            target: ev.target,
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        batch.put(key("a/", &[&seq.to_be_bytes()]), to_json(&entry));
        if seq % AUDIT_CHECKPOINT_EVERY == 0 {
            use ed25519_dalek::Signer;
            let prev = match seq.checked_sub(AUDIT_CHECKPOINT_EVERY).filter(|s| *s > 0) {
                // A checkpoint deleted from the store leaves this one naming none: the chain's
                // verification shows the gap; the audit goes on being written meanwhile.
                Some(before) => tx
                    .get(&key("ac/", &[&before.to_be_bytes()]))?
                    .and_then(|v| serde_json::from_slice::<AuditCheckpoint>(&v).ok())
                    .map(|ck| ck.signature)
                    .unwrap_or_default(),
                None => String::new(),
            };
            let signature = audit_key_in(tx)?.sign(&AuditCheckpoint::message(seq, &entry.hash, Some(&prev)));
            let ck = AuditCheckpoint { seq, hash: entry.hash.clone(), prev: Some(prev), signature: hex::encode(signature.to_bytes()) };
            batch.put(key("ac/", &[&seq.to_be_bytes()]), to_json(&ck));
        }
        Ok(())
    }

    /// The key that signs audit checkpoints (made the first time the store is opened).
    fn audit_key(&self) -> Result<ed25519_dalek::SigningKey, DbError> {
        let seed = self.secret(AUDIT_SEED, || {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            seed.to_vec()
        })?;
        signing_key(&seed)
    }

    /// Audit entries with `seq > since`, oldest first, at most `limit`.
    pub fn audit_since(&self, since: u64, limit: usize) -> Result<Vec<AuditEntry>, DbError> {
        let start = key("a/", &[&(since.saturating_add(1)).to_be_bytes()]);
        self.kv()
            .range(&start, &prefix_end(b"a/"), limit)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt("audit", e)))
            .collect()
    }

    /// The latest signed checkpoint of the audit chain.
    pub fn latest_audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>, DbError> {
        match self.kv().last_in(b"ac/", &prefix_end(b"ac/"))? {
            Some((_, v)) => Ok(Some(serde_json::from_slice(&v).map_err(|e| corrupt("audit checkpoint", e))?)),
            None => Ok(None),
        }
    }

    /// [`Db::verify_audit_chain`], and that the chain holds every checkpoint `witnessed`
    /// outside the store, each signed the same: a tail cut off with its checkpoints is broken at
    /// the first entry it lost, and stays so when the chain has grown back past the cut (its new
    /// checkpoints sign other entries).
    pub fn verify_audit_chain_against(&self, witnessed: &[AuditWitness]) -> Result<Result<u64, u64>, DbError> {
        let count = match self.verify_audit_chain()? {
            Ok(count) => count,
            broken => return Ok(broken),
        };
        if witnessed.is_empty() {
            return Ok(Ok(count));
        }
        let mut here = std::collections::HashMap::new();
        for (_, v) in self.kv().range(b"ac/", &prefix_end(b"ac/"), usize::MAX)? {
            let ck: AuditCheckpoint = serde_json::from_slice(&v).map_err(|e| corrupt("audit checkpoint", e))?;
            here.insert(ck.seq, ck.signature);
        }
        let first_missing = witnessed.iter().filter(|w| here.get(&w.seq) != Some(&w.signature)).map(|w| w.seq).min();
        Ok(match first_missing {
            None => Ok(count),
            Some(seq) => Err(seq.min(count + 1)),
        })
    }

    /// Verifies the whole audit chain: each entry's hash, that each links to the one before,
    /// and every signed checkpoint: its signature, that the entry it names is there with that
    /// hash, that it names the checkpoint before it, and that none is missing. Returns the
    /// number of entries, or the first broken (or missing) sequence number: a chain cut short
    /// of its latest checkpoint is broken just past its end.
    pub fn verify_audit_chain(&self) -> Result<Result<u64, u64>, DbError> {
        let mut prev = "0".repeat(64);
        let mut count = 0;
        let mut hashes = Vec::new();
        for (_, v) in self.kv().range(b"a/", &prefix_end(b"a/"), usize::MAX)? {
            let e: AuditEntry = serde_json::from_slice(&v).map_err(|e| corrupt("audit", e))?;
            if e.prev_hash != prev || e.compute_hash() != e.hash || e.seq != count + 1 {
                return Ok(Err(e.seq));
            }
            prev = e.hash.clone();
            hashes.push(e.hash);
            count += 1;
        }
        let key = self.audit_key()?.verifying_key();
        // The checkpoint expected next, and the signature its `prev` must name.
        let (mut expected, mut prev_signature) = (AUDIT_CHECKPOINT_EVERY, String::new());
        for (_, v) in self.kv().range(b"ac/", &prefix_end(b"ac/"), usize::MAX)? {
            let ck: AuditCheckpoint = serde_json::from_slice(&v).map_err(|e| corrupt("audit checkpoint", e))?;
            if ck.seq != expected {
                // One is missing (or one was added where none is ever made).
                return Ok(Err(expected.min(ck.seq)));
            }
            let signed = hex::decode(&ck.signature)
                .ok()
                .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
                .is_some_and(|sig| key.verify_strict(&AuditCheckpoint::message(ck.seq, &ck.hash, ck.prev.as_deref()), &sig).is_ok());
            if !signed || ck.prev.as_ref().is_some_and(|p| *p != prev_signature) {
                return Ok(Err(ck.seq));
            }
            expected += AUDIT_CHECKPOINT_EVERY;
            prev_signature = ck.signature.clone();
            match hashes.get((ck.seq as usize).wrapping_sub(1)) {
                Some(h) if *h == ck.hash => {}
                Some(_) => return Ok(Err(ck.seq)),
                None => return Ok(Err(count + 1)),
            }
        }
        if expected <= count {
            return Ok(Err(expected));
        }
        Ok(Ok(count))
    }

    fn verify_audit_chain_tail(&self) -> Result<(), DbError> {
        if let Some((_, v)) = self.kv().last_in(b"a/", &prefix_end(b"a/"))? {
            let e: AuditEntry = serde_json::from_slice(&v).map_err(|e| corrupt("audit", e))?;
            if e.compute_hash() != e.hash {
                return Err(corrupt("audit", format!("entry {} does not match its hash", e.seq)));
            }
        }
        Ok(())
    }

    // ---- the store's epoch ------------------------------------------------------------------

    /// The store's epoch as read in `r` (see [`EPOCH`]).
    pub(crate) fn epoch_in(r: &dyn KvRead) -> Result<u64, DbError> {
        match read_u64(r, EPOCH)? {
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
        let current = read_u64(&*tx, EPOCH)?;
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
        b.put(EPOCH.to_vec(), epoch.to_be_bytes().to_vec());
        let at = if renew { now_secs().max(1) } else { 0 };
        b.put(EPOCH_AT.to_vec(), (at as u64).to_be_bytes().to_vec());
        tx.commit(b)?;
        Ok(epoch)
    }

    /// Whether pushes may relay other devices' changes at `now`: within [`RELAY_WINDOW_SECS`]
    /// of the epoch's renewal (never for the epoch a store started with).
    pub fn relay_open(&self, now: i64) -> Result<bool, DbError> {
        let at = read_u64(self.kv(), EPOCH_AT)? as i64;
        Ok(at > 0 && now - at < RELAY_WINDOW_SECS)
    }

    // ---- server secrets --------------------------------------------------------------------

    /// Returns the secret stored under `name`, creating it with `make` the first time.
    pub fn secret(&self, name: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, DbError> {
        let k = key("k/", &[name.as_bytes()]);
        if let Some(v) = self.kv().get(&k)? {
            return Ok(v);
        }
        // Made in a transaction: two processes creating it at once agree on one value.
        let tx = self.kv().begin_write()?;
        if let Some(v) = tx.get(&k)? {
            return Ok(v);
        }
        let v = make();
        let mut b = Batch::default();
        b.put(k, v.clone());
        tx.commit(b)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemKv;

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
    fn audit_chain_verifies_and_detects_tampering() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        for i in 0..5 {
            db.audit(ev("login", &format!("user{i}"))).unwrap();
        }
        assert_eq!(db.verify_audit_chain().unwrap(), Ok(5));
        // Tamper with entry 3: change its target but keep its hash.
        let k = key("a/", &[&3u64.to_be_bytes()]);
        let mut e: AuditEntry = get_json(db.kv(), &k).unwrap().unwrap();
        e.target = "someone-else".into();
        let mut b = Batch::default();
        b.put(k, to_json(&e));
        db.commit(b).unwrap();
        assert_eq!(db.verify_audit_chain().unwrap(), Err(3));
    }

    #[test]
    fn signed_checkpoints_reveal_a_truncated_or_rewritten_chain() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let n = 2 * AUDIT_CHECKPOINT_EVERY + 10;
        for i in 0..n {
            db.audit(ev("login", &format!("user{i}"))).unwrap();
        }
        assert_eq!(db.verify_audit_chain().unwrap(), Ok(n));
        // Cut the tail past the last checkpoint: hash-linked entries alone could not tell.
        let snapshot: Vec<_> = db.kv().range(b"", &[0xff], usize::MAX).unwrap();
        let cut = 2 * AUDIT_CHECKPOINT_EVERY - 5;
        let mut b = Batch::default();
        for seq in cut + 1..=n {
            b.delete(key("a/", &[&seq.to_be_bytes()]));
        }
        db.commit(b).unwrap();
        assert_eq!(db.verify_audit_chain().unwrap(), Err(cut + 1), "a chain cut before its latest checkpoint");
        // Rewrite the whole chain consistently (new hashes) without the key: the checkpoints no
        // longer match.
        let mut b = Batch::default();
        for (k, v) in &snapshot {
            b.put(k.clone(), v.clone());
        }
        db.commit(b).unwrap();
        let mut prev = "0".repeat(64);
        let mut b = Batch::default();
        for seq in 1..=n {
            let k = key("a/", &[&seq.to_be_bytes()]);
            let mut e: AuditEntry = get_json(db.kv(), &k).unwrap().unwrap();
            if seq == 3 {
                e.user = "someone-else".into();
            }
            e.prev_hash = prev.clone();
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            b.put(k, to_json(&e));
        }
        db.commit(b).unwrap();
        assert_eq!(db.verify_audit_chain().unwrap(), Err(AUDIT_CHECKPOINT_EVERY), "a rewritten chain");
    }

    /// Issue "Security, second review", item 2: entries after 100 and their checkpoints were
    /// deleted from a backup (no key needed) and the chain verified as valid.
    #[test]
    fn checkpoints_deleted_from_the_middle_or_with_the_tail_are_found() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let n = 10 * AUDIT_CHECKPOINT_EVERY + 20;
        for i in 0..n {
            db.audit(ev("login", &format!("user{i}"))).unwrap();
        }
        let latest = db.latest_audit_checkpoint().unwrap().expect("checkpoints were made");
        assert_eq!(latest.seq, 10 * AUDIT_CHECKPOINT_EVERY);
        let witness = AuditWitness::all_in(&format!("garbage\n{}\n", AuditWitness::line(&latest)));
        assert_eq!(witness.len(), 1);
        assert_eq!(db.verify_audit_chain_against(&witness).unwrap(), Ok(n));
        let snapshot: Vec<_> = db.kv().range(b"", &[0xff], usize::MAX).unwrap();
        let restore = |db: &Db| {
            let mut b = Batch::default();
            for (k, v) in &snapshot {
                b.put(k.clone(), v.clone());
            }
            db.commit(b).unwrap();
        };
        // A checkpoint deleted from the middle, its entries kept.
        let mut b = Batch::default();
        b.delete(key("ac/", &[&(3 * AUDIT_CHECKPOINT_EVERY).to_be_bytes()]));
        db.commit(b).unwrap();
        assert_eq!(db.verify_audit_chain().unwrap(), Err(3 * AUDIT_CHECKPOINT_EVERY), "a checkpoint missing in the middle");
        restore(&db);
        // The last checkpoints deleted, every entry kept.
        let mut b = Batch::default();
        for k in 8..=10 {
            b.delete(key("ac/", &[&(k * AUDIT_CHECKPOINT_EVERY).to_be_bytes()]));
        }
        db.commit(b).unwrap();
        assert_eq!(db.verify_audit_chain().unwrap(), Err(8 * AUDIT_CHECKPOINT_EVERY), "entries past their missing checkpoints");
        restore(&db);
        // Every entry after `last` deleted, with the checkpoints past it: a tail cut off.
        let cut_after = |db: &Db, last: u64| {
            let mut b = Batch::default();
            for prefix in [&b"a/"[..], b"ac/"] {
                for (k, _) in db.kv().range(prefix, &prefix_end(prefix), usize::MAX).unwrap() {
                    if u64::from_be_bytes(k[prefix.len()..prefix.len() + 8].try_into().unwrap()) > last {
                        b.delete(k);
                    }
                }
            }
            db.commit(b).unwrap();
        };
        // The tail cut at 100 with its checkpoints: consistent in the store, but not with the
        // checkpoint seen outside it.
        cut_after(&db, 100);
        assert_eq!(db.verify_audit_chain().unwrap(), Ok(100), "the store alone cannot tell");
        assert_eq!(db.verify_audit_chain_against(&witness).unwrap(), Err(101), "the witness can");
        // A checkpoint made again past the cut, without the key, cannot stand in for it.
        restore(&db);
        let mut forged = latest.clone();
        forged.signature = "00".repeat(64);
        let mut b = Batch::default();
        b.put(key("ac/", &[&latest.seq.to_be_bytes()]), to_json(&forged));
        db.commit(b).unwrap();
        assert_eq!(db.verify_audit_chain().unwrap(), Err(latest.seq));
        // The next checkpoint names the one before it: a chain of signatures.
        restore(&db);
        for i in 0..AUDIT_CHECKPOINT_EVERY {
            db.audit(ev("login", &format!("more{i}"))).unwrap();
        }
        let next = db.latest_audit_checkpoint().unwrap().unwrap();
        assert_eq!((next.seq, next.prev.as_deref()), (11 * AUDIT_CHECKPOINT_EVERY, Some(latest.signature.as_str())));
        // Cut at 100 again and grown back past the cut: consistent in the store, but its new
        // checkpoints sign other entries than the witness saw.
        cut_after(&db, 100);
        for i in 100..n + 10 {
            db.audit(ev("login", &format!("regrown{i}"))).unwrap();
        }
        assert_eq!(db.verify_audit_chain().unwrap(), Ok(n + 10), "consistent in the store");
        assert_eq!(db.verify_audit_chain_against(&witness).unwrap(), Err(latest.seq), "still broken against the witness");
    }

    #[test]
    fn a_province_merged_into_another_hands_over_its_districts_and_targets() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let u = |c: &str, p: Option<&str>, l: &str| OrgUnit::new(c, c, p.map(Into::into), l);
        for unit in [u("24", None, "province"), u("216", Some("24"), "district"), u("21601", Some("216"), "commune"), u("27", None, "province")] {
            db.put_org_unit(unit, None).unwrap();
        }
        let target = indicators::Milestones::new([(2025, 0.7), (2030, 0.8)]).unwrap();
        db.set_target("24", indicators::IndicatorId::GbvVictimsSupported, &target, None).unwrap();
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let m = db.merge_org_unit("24", "27", day("2025-07-01"), day("2026-11-30"), Some(ev("org_unit_merge", "24"))).unwrap();
        assert_eq!((m.children_moved, m.targets_carried), (vec!["216".to_string()], vec!["gbv_victims_supported".to_string()]));
        let tree = db.tree();
        assert_eq!(tree.chain("21601"), ["21601", "216", "27"]);
        assert_eq!(tree.communes_under("27"), ["21601"]);
        assert!(db.indicators("24", "2025".parse().unwrap()).unwrap_err().to_string().contains("merged into `27`"));
        let t = db.targets().unwrap();
        assert_eq!(t.target_for(&tree.chain("21601"), indicators::IndicatorId::GbvVictimsSupported, 2025), Some(0.7));
        // A merged unit stays history: it cannot be moved, nor can units be added under it.
        assert!(db.put_org_unit(u("24", Some("27"), "province"), None).unwrap_err().to_string().contains("history"));
        assert!(db.put_org_unit(u("24999", Some("24"), "commune"), None).unwrap_err().to_string().contains("current map"));
        // The merge is audited, once.
        assert_eq!(db.verify_audit_chain().unwrap(), Ok(1));
    }

    #[test]
    fn org_units_validate_parent_and_cycles() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let u = |c: &str, p: Option<&str>, l: &str| OrgUnit::new(c, c, p.map(Into::into), l);
        db.put_org_unit(u("04", None, "province"), None).unwrap();
        db.put_org_unit(u("047", Some("04"), "district"), None).unwrap();
        assert!(db.put_org_unit(u("048", Some("99"), "district"), None).unwrap_err().to_string().contains("unknown parent"));
        assert!(db.put_org_unit(u("04", Some("047"), "province"), None).unwrap_err().to_string().contains("cycle"));
        assert!(db.put_org_unit(u("x4", None, "province"), None).is_err());
        assert_eq!(db.tree().chain("047"), ["047", "04"]);
    }
}
