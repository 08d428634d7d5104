//! Storage: an ordered key-value store with atomic, durable batches, behind the [`Kv`] trait.
//!
//! Everything the server keeps (documents, the change feed, users, figures, the audit chain)
//! lives in one keyspace under short prefixes (see `db.rs`), so one [`Batch`] can change a
//! document, its feed entry and the figures it moves atomically. [`SledKv`] is the real store;
//! [`MemKv`] serves unit tests. `tests::conformance` runs the same suite against both.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use parking_lot::Mutex;

/// Storage failures. Small on purpose: callers either retry later or report a server error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} cannot be opened: {reason}. If it was damaged, restore it from a backup with `gesync-server restore --data-dir DIR --from FILE`")]
    Open { path: String, reason: String },
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// An atomic group of writes.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// An ordered key-value store.
pub trait Kv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `start <= key < end`, in key order, at most `limit` of them.
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// The last entry with `start <= key < end`, if any.
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Applies every write of the batch, or none of them.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// Returns once every applied batch is on stable storage.
    fn flush(&self) -> Result<(), StoreError>;
    /// Every entry, in key order (backup). Writers may run concurrently; entries written after
    /// the call began may or may not be included.
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// Bytes on disk, for metrics (0 for memory).
    fn size_on_disk(&self) -> u64;
}

/// The end of the prefix range: the smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; prefix.len() + 1]
}

/// In-memory store for unit tests.
#[derive(Default)]
pub struct MemKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.lock().get(key).cloned())
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let map = self.map.lock();
        Ok(map
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        let map = self.map.lock();
        Ok(map
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
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
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let snapshot = self.map.lock().clone();
        for (k, v) in &snapshot {
            f(k, v)?;
        }
        Ok(())
    }
    fn size_on_disk(&self) -> u64 {
        0
    }
}

/// How long [`SledKv::open`] waits for a lock that a just-closed handle still holds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The sled store on disk. One tree; `apply` uses sled's atomic batch.
pub struct SledKv {
    db: sled::Db,
}

fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

impl SledKv {
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
            match sled::Config::new().path(dir).cache_capacity(256 * 1024 * 1024).open() {
                Ok(db) => return Ok(SledKv { db }),
                // sled reports the lock as `ErrorKind::Other` with this text.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(open_err(e.to_string())),
            }
        }
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(io)?.map(|v| v.to_vec()))
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.db
            .range(start..end)
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(None);
        }
        self.db.range(start..end).next_back().transpose().map_err(io).map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec())))
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
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        for item in self.db.iter() {
            let (k, v) = item.map_err(io)?;
            f(&k, &v)?;
        }
        Ok(())
    }
    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_store_directory_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kv = SledKv::open(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        // A backup of it likewise.
        let db = crate::Db::open(Box::new(kv)).unwrap();
        let out = dir.path().join("backup.gsb");
        crate::backup::write_backup(&db, &out).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// The conformance suite every [`Kv`] implementation must pass.
    pub(crate) fn conformance(kv: &dyn Kv) {
        assert_eq!(kv.get(b"a").unwrap(), None);
        let mut b = Batch::default();
        b.put(b"a/1".to_vec(), b"one".to_vec());
        b.put(b"a/2".to_vec(), b"two".to_vec());
        b.put(b"a/3".to_vec(), b"three".to_vec());
        b.put(b"b/1".to_vec(), b"other".to_vec());
        kv.apply(b).unwrap();
        kv.flush().unwrap();
        assert_eq!(kv.get(b"a/2").unwrap().as_deref(), Some(&b"two"[..]));

        let all = kv.range(b"a/", &prefix_end(b"a/"), 100).unwrap();
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"a/1"[..], b"a/2", b"a/3"]);
        assert_eq!(kv.range(b"a/", &prefix_end(b"a/"), 2).unwrap().len(), 2);
        assert_eq!(kv.range(b"a/2", b"a/3", 10).unwrap().len(), 1, "end is exclusive");
        assert!(kv.range(b"z", b"a", 10).unwrap().is_empty(), "inverted range is empty");
        assert_eq!(kv.last_in(b"a/", &prefix_end(b"a/")).unwrap().unwrap().0, b"a/3");
        assert_eq!(kv.last_in(b"c/", &prefix_end(b"c/")).unwrap(), None);

        // A batch mixing puts and deletes applies as a whole, in order.
        let mut b = Batch::default();
        b.delete(b"a/1".to_vec());
        b.put(b"a/4".to_vec(), b"four".to_vec());
        b.put(b"a/4".to_vec(), b"FOUR".to_vec());
        kv.apply(b).unwrap();
        assert_eq!(kv.get(b"a/1").unwrap(), None);
        assert_eq!(kv.get(b"a/4").unwrap().as_deref(), Some(&b"FOUR"[..]));

        let mut seen = Vec::new();
        kv.for_each(&mut |k, _| {
            seen.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 4);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "for_each is in key order");
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }

    #[test]
    fn mem_kv_conforms() {
        conformance(&MemKv::default());
    }

    #[test]
    fn sled_kv_conforms_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path()).unwrap();
            conformance(&kv);
        }
        let kv = SledKv::open(dir.path()).unwrap();
        assert_eq!(kv.get(b"a/4").unwrap().as_deref(), Some(&b"FOUR"[..]));
    }
}
