//! Storage: an ordered key-value store with serialised, atomic, durable write transactions,
//! behind the [`Kv`] trait.
//!
//! Everything the server keeps (documents, the change feed, users, figures, the audit chain)
//! lives in one keyspace under short prefixes (see `db.rs`), so one [`Batch`] can change a
//! document, its feed entry and the figures it moves atomically. [`SledKv`] is the embedded
//! store; [`MemKv`] serves unit tests. `tests::conformance` runs the same suite against each.

/// Storage failures. Small on purpose: callers either retry later or report a server error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} cannot be opened: {reason}. If it was damaged, restore it from a backup with `gesync-server restore --data-dir DIR --from FILE`")]
    Open { path: String, reason: String },
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A setting that cannot work (a malformed database URL).
    #[error("{0}")]
    Config(String),
    /// The database cannot be reached (a shared store): a replica answers 503 and retries on
    /// the next request.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
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

/// One entry of the keyspace: its key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);
/// What [`KvRead::for_each`] calls with each entry, in key order.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>;

/// Reads of an ordered key-value store.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The values of several keys, in the order asked (one round trip where the store is
    /// remote).
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Entries with `start <= key < end`, in key order, at most `limit` of them.
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError>;
    /// [`KvRead::range`] over several bounds at once, at most `limit` entries from each, in
    /// the order of `bounds`: one round trip where the store is remote (the feed of a scope,
    /// one range per commune).
    fn ranges(&self, bounds: &[(Vec<u8>, Vec<u8>)], limit: usize) -> Result<Vec<Vec<Entry>>, StoreError> {
        bounds.iter().map(|(start, end)| self.range(start, end, limit)).collect()
    }
    /// How many entries each of `bounds` holds, counting at most `cap` in each (one round trip
    /// where the store is remote, and no value read).
    fn count_ranges(&self, bounds: &[(Vec<u8>, Vec<u8>)], cap: usize) -> Result<Vec<u64>, StoreError> {
        bounds.iter().map(|(start, end)| Ok(self.range(start, end, cap)?.len() as u64)).collect()
    }
    /// What the tables kept for people beside the keyspace hold (`None`: this store keeps none,
    /// [`Kv::keeps_report_rows`], or this connection may not read them).
    fn tables(&self) -> Result<Option<Tables>, StoreError> {
        Ok(None)
    }
    /// The last entry with `start <= key < end`, if any.
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, StoreError>;
    /// Every entry, in key order (backup).
    fn for_each(&self, f: Visit<'_>) -> Result<(), StoreError>;
}

/// How long a write transaction holds the store's write lock, from when it has it to when it
/// commits or rolls back: `gesync_write_lock_held_seconds` on `/metrics` (every replica's
/// writes wait for it on a shared store).
pub(crate) struct LockHeld(std::time::Instant);

impl LockHeld {
    pub(crate) fn from_now() -> LockHeld {
        LockHeld(std::time::Instant::now())
    }
}

impl Drop for LockHeld {
    fn drop(&mut self) {
        metrics::histogram!("gesync_write_lock_held_seconds").record(self.0.elapsed().as_secs_f64());
    }
}

/// A write transaction: from [`Kv::begin_write`] until it commits or is dropped, no other
/// write transaction on the same store runs, in this process or in any other process sharing
/// the store. Its reads see every transaction committed before it began.
pub trait WriteTx: KvRead {
    /// Applies `batch` atomically and returns once it is durable. Dropping the transaction
    /// instead writes nothing.
    fn commit(self: Box<Self>, batch: Batch) -> Result<(), StoreError> {
        self.commit_then(batch, &mut || {})
    }
    /// [`WriteTx::commit`] that runs `applied` once the batch is applied and before another
    /// write transaction of this process may begin: where an in-process cache of what the
    /// batch changed is brought up to date.
    fn commit_then(self: Box<Self>, batch: Batch, applied: &mut dyn FnMut()) -> Result<(), StoreError>;
}

/// An ordered key-value store with serialised, atomic, durable write transactions: the seam
/// below which each backend guarantees its part of the invariants (see `ARCHITECTURE.md`).
///
/// Reads on the store itself see the latest committed state, key by key; [`Kv::begin_read`]
/// gives one consistent cut for reading several keys.
pub trait Kv: KvRead + Send + Sync + 'static {
    fn begin_write(&self) -> Result<Box<dyn WriteTx + '_>, StoreError>;
    /// A consistent read of the whole store: no transaction is half-visible in it.
    fn begin_read(&self) -> Result<Box<dyn KvRead + '_>, StoreError>;
    /// Returns once everything visible to reads is durable: callers wait for this before they
    /// hand out what they read (a store whose commits are durable once visible returns at once).
    fn wait_durable(&self) -> Result<(), StoreError>;
    /// Whether other processes may write to the store too: then nothing read may be cached
    /// across requests without checking it is still current.
    fn shared(&self) -> bool {
        false
    }
    /// Whether the store keeps tables people read beside the keyspace (PostgreSQL's `gesync`
    /// schema): then each record change also writes the record's reporting row for them.
    fn keeps_report_rows(&self) -> bool {
        false
    }
    /// Bytes on disk, for metrics (0 for memory).
    fn size_on_disk(&self) -> u64;
    /// A short description for logs and `/healthz` (never credentials).
    fn describe(&self) -> String;
    /// Whether the store answers (`/healthz`).
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Writes `batch` in a transaction of its own (a convenience over [`Kv::begin_write`]).
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.begin_write()?.commit(batch)
    }
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

mod local;
pub mod pg;
pub mod tables;
pub use tables::Tables;
pub use local::{set_sled_cache_mb, MemKv, SledKv, DEFAULT_SLED_CACHE_MB};
pub use pg::{PgConfig, PgKv};

/// Where the server keeps its data.
#[derive(Clone, Debug)]
pub enum Storage {
    /// The embedded sled store in this directory (the default).
    Embedded(std::path::PathBuf),
    /// PostgreSQL, shared by any number of server processes.
    Postgres(PgConfig),
}

impl Storage {
    /// The embedded store's directory, if that is the store.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        match self {
            Storage::Embedded(dir) => Some(dir),
            Storage::Postgres(_) => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The conformance suite every [`Kv`] implementation must pass.
    pub(crate) fn conformance(kv: &dyn Kv) {
        assert_eq!(kv.get(b"a").unwrap(), None);
        let mut b = Batch::default();
        b.put(b"a/1".to_vec(), b"one".to_vec());
        b.put(b"a/2".to_vec(), b"two".to_vec());
        b.put(b"a/3".to_vec(), b"three".to_vec());
        b.put(b"b/1".to_vec(), b"other".to_vec());
        kv.write(b).unwrap();
        assert_eq!(kv.get(b"a/2").unwrap().as_deref(), Some(&b"two"[..]));

        let all = kv.range(b"a/", &prefix_end(b"a/"), 100).unwrap();
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"a/1"[..], b"a/2", b"a/3"]);
        assert_eq!(kv.range(b"a/", &prefix_end(b"a/"), 2).unwrap().len(), 2);
        assert_eq!(kv.range(b"a/2", b"a/3", 10).unwrap().len(), 1, "end is exclusive");
        assert!(kv.range(b"z", b"a", 10).unwrap().is_empty(), "inverted range is empty");
        assert_eq!(kv.last_in(b"a/", &prefix_end(b"a/")).unwrap().unwrap().0, b"a/3");
        assert_eq!(kv.last_in(b"c/", &prefix_end(b"c/")).unwrap(), None);

        // Several ranges at once: each as `range` gives it, in the order asked.
        let bounds = [(b"b/".to_vec(), prefix_end(b"b/")), (b"a/".to_vec(), prefix_end(b"a/")), (b"c/".to_vec(), prefix_end(b"c/")), (b"z".to_vec(), b"a".to_vec()), (b"a/2".to_vec(), prefix_end(b"a/"))];
        let got = kv.ranges(&bounds, 2).unwrap();
        let want: Vec<_> = bounds.iter().map(|(s, e)| kv.range(s, e, 2).unwrap()).collect();
        assert_eq!(got, want);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 0, 0, 2], "each range keeps its own limit");
        assert_eq!(got[1][1], (b"a/2".to_vec(), b"two".to_vec()));
        assert_eq!(kv.count_ranges(&bounds, 100).unwrap(), [1, 3, 0, 0, 2]);
        assert_eq!(kv.count_ranges(&bounds, 2).unwrap(), [1, 2, 0, 0, 2], "counted up to the cap");
        assert!(kv.ranges(&[], 10).unwrap().is_empty() && kv.count_ranges(&[], 10).unwrap().is_empty());
        assert_eq!(kv.ranges(&bounds[1..2], 2).unwrap(), [want[1].clone()], "one range alone");
        assert_eq!(kv.count_ranges(&bounds[1..2], 100).unwrap(), [3]);
        assert_eq!(kv.count_ranges(&bounds[1..2], 2).unwrap(), [2]);
        {
            // Within a consistent read too, and the read goes on after it.
            let cut = kv.begin_read().unwrap();
            assert_eq!(cut.ranges(&bounds, 2).unwrap(), want);
            assert_eq!(cut.count_ranges(&bounds, 100).unwrap(), [1, 3, 0, 0, 2]);
            assert_eq!(cut.range(b"a/", &prefix_end(b"a/"), 100).unwrap().len(), 3);
        }

        // A batch mixing puts and deletes applies as a whole, in order.
        let mut b = Batch::default();
        b.delete(b"a/1".to_vec());
        b.put(b"a/4".to_vec(), b"four".to_vec());
        b.put(b"a/4".to_vec(), b"FOUR".to_vec());
        kv.write(b).unwrap();
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

        // A transaction dropped without committing writes nothing.
        {
            let tx = kv.begin_write().unwrap();
            assert_eq!(tx.get(b"a/2").unwrap().as_deref(), Some(&b"two"[..]));
        }
        assert_eq!(kv.get(b"a/2").unwrap().as_deref(), Some(&b"two"[..]));
    }

    /// Write transactions are serialised: read-modify-writes from many threads lose nothing,
    /// and a consistent read never sees one half-applied.
    pub(crate) fn concurrent_transactions(kv: &dyn Kv) {
        concurrent_transactions_on(&[kv]);
    }

    /// [`concurrent_transactions`] with the writers spread over several handles of one store
    /// (replicas, for a store that allows more than one).
    pub(crate) fn concurrent_transactions_on(handles: &[&dyn Kv]) {
        const THREADS: u64 = 4;
        const EACH: u64 = 50;
        let read = |tx: &dyn KvRead, k: &[u8]| tx.get(k).unwrap().map(|v| u64::from_be_bytes(v.try_into().unwrap())).unwrap_or(0);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let kv = handles[t as usize % handles.len()];
                s.spawn(move || {
                    for _ in 0..EACH {
                        let tx = kv.begin_write().unwrap();
                        // Two keys that must always move together.
                        let (x, y) = (read(&*tx, b"t/x"), read(&*tx, b"t/y"));
                        let mut b = Batch::default();
                        b.put(b"t/x".to_vec(), (x + 1).to_be_bytes().to_vec());
                        b.put(b"t/y".to_vec(), (y + 1).to_be_bytes().to_vec());
                        tx.commit(b).unwrap();
                    }
                });
            }
            let reader = handles[handles.len() - 1];
            s.spawn(move || {
                for _ in 0..EACH {
                    let cut = reader.begin_read().unwrap();
                    assert_eq!(read(&*cut, b"t/x"), read(&*cut, b"t/y"), "a consistent read");
                }
            });
        });
        for kv in handles {
            assert_eq!(read(*kv, b"t/x"), THREADS * EACH, "no update lost");
            kv.wait_durable().unwrap();
        }
    }

    #[test]
    fn mem_kv_conforms() {
        conformance(&MemKv::default());
        concurrent_transactions(&MemKv::default());
    }

    #[test]
    fn sled_kv_conforms_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path()).unwrap();
            conformance(&kv);
            concurrent_transactions(&kv);
        }
        let kv = SledKv::open(dir.path()).unwrap();
        assert_eq!(kv.get(b"a/4").unwrap().as_deref(), Some(&b"FOUR"[..]));
    }
}
