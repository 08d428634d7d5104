//! The in-process stores: [`SledKv`] on disk (the embedded default) and [`MemKv`] for unit
//! tests. Both are one [`Local`] over an engine that can apply a batch atomically and flush.
//!
//! Write transactions take the write side of one lock, so they run one at a time; a consistent
//! read takes its read side. sled is a single-process store (it locks its directory), so an
//! in-process lock is all a write transaction needs to be alone on the store.
//!
//! Durability by group commit: a transaction applies its batch under the lock, releases the
//! lock, and then waits until a flush covers it. If no flush is running, it flushes everything
//! applied so far itself; otherwise it waits for the running one and checks again. N concurrent
//! writers thus share a few flushes instead of paying one each, and none is answered before its
//! data is on disk.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

// parking_lot's locks do not poison: a panic in one request leaves them usable by the next.
use parking_lot::{Condvar, Mutex, RwLock, RwLockWriteGuard};

use super::{Batch, Entry, Kv, KvRead, StoreError, Visit, WriteTx};

/// What an in-process engine provides.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError>;
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError>;
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError>;
    /// Applies every write of the batch, or none of them (not necessarily durably).
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// Returns once every applied batch is on stable storage.
    fn flush(&self) -> Result<(), StoreError>;
    fn size_on_disk(&self) -> u64;
}

/// An in-process store: an engine, the write lock and the group commit.
pub struct Local<E> {
    engine: E,
    lock: RwLock<()>,
    /// Write transactions applied so far (maybe not flushed yet).
    applied: AtomicU64,
    /// Write transactions known to be durable.
    durable: AtomicU64,
    /// Whether a flush is running; waiters for it sleep on `flush_done`.
    flushing: Mutex<bool>,
    flush_done: Condvar,
    name: String,
}

impl<E: Engine> Local<E> {
    fn new(engine: E, name: String) -> Self {
        Local { engine, lock: RwLock::new(()), applied: AtomicU64::new(0), durable: AtomicU64::new(0), flushing: Mutex::new(false), flush_done: Condvar::new(), name }
    }

    /// Returns once write transaction number `n` (already applied) is durable.
    fn wait_for(&self, n: u64) -> Result<(), StoreError> {
        let mut flushing = self.flushing.lock();
        loop {
            if self.durable.load(Ordering::Acquire) >= n {
                return Ok(());
            }
            if *flushing {
                self.flush_done.wait(&mut flushing);
                continue;
            }
            *flushing = true;
            let target = self.applied.load(Ordering::Acquire);
            drop(flushing);
            let result = self.engine.flush();
            flushing = self.flushing.lock();
            *flushing = false;
            if result.is_ok() {
                self.durable.fetch_max(target, Ordering::AcqRel);
            }
            self.flush_done.notify_all();
            result?;
        }
    }
}

impl<E: Engine> KvRead for Local<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.engine.range(start, end, limit)
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.engine.last_in(start, end)
    }
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError> {
        self.engine.for_each(f)
    }
}

/// A hold on a [`Local`] store: with the write guard, a write transaction (no other writer
/// until it commits); with the read guard, a consistent read (no write applies while it lasts).
/// Its reads are the store's own.
struct Held<'a, E, G> {
    kv: &'a Local<E>,
    _guard: G,
    /// A write transaction's time holding the write lock.
    _held: Option<super::LockHeld>,
}

impl<E: Engine, G> KvRead for Held<'_, E, G> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.kv.range(start, end, limit)
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.kv.last_in(start, end)
    }
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError> {
        self.kv.for_each(f)
    }
}

impl<'a, E: Engine> WriteTx for Held<'a, E, RwLockWriteGuard<'a, ()>> {
    fn commit_then(self: Box<Self>, batch: Batch, applied: &mut dyn FnMut()) -> Result<(), StoreError> {
        let kv = self.kv;
        if batch.is_empty() {
            return Ok(());
        }
        kv.engine.apply(batch)?;
        applied();
        let n = kv.applied.fetch_add(1, Ordering::AcqRel) + 1;
        // The next writer may apply while this one waits for the disk.
        drop(self);
        kv.wait_for(n)
    }
}

impl<E: Engine> Kv for Local<E> {
    fn begin_write(&self) -> Result<Box<dyn WriteTx + '_>, StoreError> {
        let guard = self.lock.write();
        Ok(Box::new(Held { kv: self, _guard: guard, _held: Some(super::LockHeld::from_now()) }))
    }
    fn begin_read(&self) -> Result<Box<dyn KvRead + '_>, StoreError> {
        Ok(Box::new(Held { kv: self, _guard: self.lock.read(), _held: None }))
    }
    fn wait_durable(&self) -> Result<(), StoreError> {
        self.wait_for(self.applied.load(Ordering::Acquire))
    }
    fn size_on_disk(&self) -> u64 {
        self.engine.size_on_disk()
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The in-memory engine (unit tests).
#[derive(Default)]
pub struct MemEngine {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

/// An in-memory store for unit tests.
pub type MemKv = Local<MemEngine>;

impl Default for Local<MemEngine> {
    fn default() -> Self {
        Local::new(MemEngine::default(), "memory".into())
    }
}

impl Engine for MemEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.lock().get(key).cloned())
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let map = self.map.lock();
        Ok(map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        let map = self.map.lock();
        Ok(map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))).next_back().map(|(k, v)| (k.clone(), v.clone())))
    }
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError> {
        let snapshot = self.map.lock().clone();
        for (k, v) in &snapshot {
            f(k, v)?;
        }
        Ok(())
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut map = self.map.lock();
        for (k, v) in batch.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn size_on_disk(&self) -> u64 {
        0
    }
}

/// How long [`SledKv::open`] waits for a lock that a just-closed handle still holds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The sled engine: one tree; `apply` uses sled's atomic batch.
pub struct SledEngine {
    db: sled::Db,
}

/// The sled store on disk: the embedded default.
pub type SledKv = Local<SledEngine>;

fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

/// sled's page cache in MiB, when the command line set it (0: not set).
static SLED_CACHE_MB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// sled's page cache by default, MiB. The cache is most of an embedded server's memory on a
/// large store (see README, "Measured figures"); sled keeps it within about this bound.
pub const DEFAULT_SLED_CACHE_MB: u64 = 128;

/// Sets sled's page cache for the stores this process opens from now on (`--sled-cache-mb`).
pub fn set_sled_cache_mb(mb: u64) {
    SLED_CACHE_MB.store(mb.max(8), std::sync::atomic::Ordering::Relaxed);
}

/// The page cache a store opened now gets: the command line's, else `GESYNC_SLED_CACHE_MB`
/// (a process started without the command line: benchmarks, tests), else the default.
fn sled_cache_bytes() -> u64 {
    let mb = match SLED_CACHE_MB.load(std::sync::atomic::Ordering::Relaxed) {
        0 => std::env::var("GESYNC_SLED_CACHE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_SLED_CACHE_MB),
        n => n,
    };
    mb.max(8) * 1024 * 1024
}

impl Local<SledEngine> {
    /// Opens (or creates) the store in `dir`. A store that sled reports as corrupt is refused:
    /// serving half of it would silently lose acknowledged changes.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open { path: dir.display().to_string(), reason };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        // The store holds the signing key, password hashes and every case: its owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| open_err(e.to_string()))?;
        }
        // sled releases its file lock from a background thread after the last handle drops, so
        // a store closed a moment ago (a restart, a restore, a test) may still be locked
        // briefly: wait for it a little before reporting the store as in use.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match sled::Config::new().path(dir).cache_capacity(sled_cache_bytes()).open() {
                Ok(db) => return Ok(Local::new(SledEngine { db }, format!("sled at {}", dir.display()))),
                // sled reports the lock as `ErrorKind::Other` with this text.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(open_err(e.to_string())),
            }
        }
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(io)?.map(|v| v.to_vec()))
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.db.range(start..end).take(limit).map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io)).collect()
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        self.db.range(start..end).next_back().transpose().map_err(io).map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError> {
        for item in self.db.iter() {
            let (k, v) = item.map_err(io)?;
            f(&k, &v)?;
        }
        Ok(())
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(io)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io)
    }
    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
