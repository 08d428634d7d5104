//! The typed storage seam of large records' uploads in progress: one head per device (which
//! record, its size, how much is held, when a slice last came) and the slices it holds, as
//! rows, with no key in sight.
//!
//! [`UploadRows`] is one consistent read of them; [`UploadWrites`] the rows a write transaction
//! stages. The `uploads` repository above decides what they hold (resends, bounds, expiry). The
//! keyspace implements both (below: its keys); so does `record_rows::MemRows` in tests, and the
//! seam's conformance suite runs on both.

use serde::{Deserialize, Serialize};
use sync_protocol::wire::Hash;
use sync_protocol::RecordId;

use crate::db::{key, DbError};
use crate::record_rows::KeyspaceWrites;
use crate::store::{prefix_end, KvRead};

/// One device's upload in progress. Stored in postcard: it sits beside raw bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UploadHead {
    pub id: RecordId,
    pub total: u64,
    pub heads: Vec<Hash>,
    /// Bytes held: the slices start at offsets in `0..have`.
    pub have: u64,
    /// When the last slice came (seconds since the epoch).
    pub touched: i64,
}

/// A stored upload head as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadRow {
    /// Whose upload it is (`None`: the row does not say, damage).
    pub owner: Option<(String, String)>,
    /// `None` when the head does not decode.
    pub head: Option<UploadHead>,
    /// The least the row takes in the store: a head that does not decode counts as an upload
    /// of this many bytes (it is dropped when it expires or its device's next one begins),
    /// never as an error that would stop every upload.
    pub row_bytes: u64,
}

impl HeadRow {
    /// The bytes this upload holds, for the bounds.
    pub fn held(&self) -> u64 {
        self.head.as_ref().map_or(self.row_bytes, |h| h.have)
    }
}

/// One consistent read of uploads in progress.
pub(crate) trait UploadRows {
    /// The head of a device's upload, if it has one.
    fn upload_head(&self, username: &str, device_id: &str) -> Result<Option<HeadRow>, DbError>;
    /// Every upload's head (`None`), or every one of an account's devices.
    fn upload_heads(&self, username: Option<&str>) -> Result<Vec<HeadRow>, DbError>;
    /// A device's slices: (offset, bytes), by offset.
    fn slices(&self, username: &str, device_id: &str) -> Result<Vec<(u64, Vec<u8>)>, DbError>;
    /// Bytes of every slice held (`None`), or of an account's (tests: what is really stored).
    #[cfg(test)]
    fn slice_bytes(&self, username: Option<&str>) -> Result<u64, DbError>;
}

/// Uploads' rows a write transaction stages.
pub(crate) trait UploadWrites {
    fn put_upload_head(&mut self, username: &str, device_id: &str, head: &UploadHead);
    fn drop_upload_head(&mut self, username: &str, device_id: &str);
    fn put_slice(&mut self, username: &str, device_id: &str, offset: u64, bytes: &[u8]);
    fn drop_slice(&mut self, username: &str, device_id: &str, offset: u64);
}

// ---------------------------------------------------------------------------------------------
// The keyspace. Keys: `up/{username}/{device_id}` → [`UploadHead`] (postcard),
// `us/{username}/{device_id}/{offset:be64}` → the bytes of one slice, written once.
// PostgreSQL's view `gesync.uploads` (migration 6) reads these keys and the head's first 16
// bytes (the record id): changing their form (or `UploadHead`'s field order) needs a migration
// that changes the view with it.

const HEADS: &[u8] = b"up/";
#[cfg(test)]
const SLICES: &[u8] = b"us/";

fn head_key(username: &str, device_id: &str) -> Vec<u8> {
    key("up/", &[username.as_bytes(), device_id.as_bytes()])
}

fn slices_prefix(username: &str, device_id: &str) -> Vec<u8> {
    key("us/", &[username.as_bytes(), device_id.as_bytes(), b""])
}

fn slice_key(username: &str, device_id: &str, offset: u64) -> Vec<u8> {
    key("us/", &[username.as_bytes(), device_id.as_bytes(), &offset.to_be_bytes()])
}

/// The (username, device id) of a head's key `up/{username}/{device_id}`.
fn owner_of(head_key: &[u8]) -> Option<(String, String)> {
    let rest = std::str::from_utf8(head_key.strip_prefix(HEADS)?).ok()?;
    let (u, d) = rest.split_once('/')?;
    Some((u.to_string(), d.to_string()))
}

fn head_row(k: &[u8], v: &[u8]) -> HeadRow {
    HeadRow { owner: owner_of(k), head: postcard::from_bytes(v).ok(), row_bytes: k.len() as u64 }
}

/// Where an account's rows under `table` begin (every one of them when `None`).
fn account_prefix(table: &[u8], username: Option<&str>) -> Vec<u8> {
    match username {
        Some(u) => [table, u.as_bytes(), b"/"].concat(),
        None => table.to_vec(),
    }
}

impl<R: KvRead + ?Sized> UploadRows for R {
    fn upload_head(&self, username: &str, device_id: &str) -> Result<Option<HeadRow>, DbError> {
        let k = head_key(username, device_id);
        Ok(self.get(&k)?.map(|v| head_row(&k, &v)))
    }

    fn upload_heads(&self, username: Option<&str>) -> Result<Vec<HeadRow>, DbError> {
        let prefix = account_prefix(HEADS, username);
        Ok(self.range(&prefix, &prefix_end(&prefix), usize::MAX)?.into_iter().map(|(k, v)| head_row(&k, &v)).collect())
    }

    fn slices(&self, username: &str, device_id: &str) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
        let prefix = slices_prefix(username, device_id);
        Ok(self
            .range(&prefix, &prefix_end(&prefix), usize::MAX)?
            .into_iter()
            .map(|(k, v)| (k.get(prefix.len()..).and_then(|o| <[u8; 8]>::try_from(o).ok()).map_or(u64::MAX, u64::from_be_bytes), v))
            .collect())
    }

    #[cfg(test)]
    fn slice_bytes(&self, username: Option<&str>) -> Result<u64, DbError> {
        let prefix = account_prefix(SLICES, username);
        Ok(self.range(&prefix, &prefix_end(&prefix), usize::MAX)?.iter().map(|(_, v)| v.len() as u64).sum())
    }
}

impl UploadWrites for KeyspaceWrites<'_> {
    fn put_upload_head(&mut self, username: &str, device_id: &str, head: &UploadHead) {
        self.batch.put(head_key(username, device_id), postcard::to_allocvec(head).expect("an upload head encodes"));
    }

    fn drop_upload_head(&mut self, username: &str, device_id: &str) {
        self.batch.delete(head_key(username, device_id));
    }

    fn put_slice(&mut self, username: &str, device_id: &str, offset: u64, bytes: &[u8]) {
        self.batch.put(slice_key(username, device_id, offset), bytes.to_vec());
    }

    fn drop_slice(&mut self, username: &str, device_id: &str, offset: u64) {
        self.batch.delete(slice_key(username, device_id, offset));
    }
}

#[cfg(test)]
impl UploadRows for crate::record_rows::MemRows {
    fn upload_head(&self, username: &str, device_id: &str) -> Result<Option<HeadRow>, DbError> {
        let owner = (username.to_string(), device_id.to_string());
        Ok(self.upload_heads.get(&owner).map(|h| HeadRow { owner: Some(owner.clone()), head: Some(h.clone()), row_bytes: 0 }))
    }
    fn upload_heads(&self, username: Option<&str>) -> Result<Vec<HeadRow>, DbError> {
        Ok(self
            .upload_heads
            .iter()
            .filter(|((u, _), _)| username.is_none_or(|n| n == u))
            .map(|(o, h)| HeadRow { owner: Some(o.clone()), head: Some(h.clone()), row_bytes: 0 })
            .collect())
    }
    fn slices(&self, username: &str, device_id: &str) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
        Ok(self.upload_slices.iter().filter(|((u, d, _), _)| u == username && d == device_id).map(|((_, _, o), b)| (*o, b.clone())).collect())
    }
    fn slice_bytes(&self, username: Option<&str>) -> Result<u64, DbError> {
        Ok(self.upload_slices.iter().filter(|((u, _, _), _)| username.is_none_or(|n| n == u)).map(|(_, b)| b.len() as u64).sum())
    }
}

#[cfg(test)]
impl UploadWrites for crate::record_rows::MemRows {
    fn put_upload_head(&mut self, username: &str, device_id: &str, head: &UploadHead) {
        self.upload_heads.insert((username.to_string(), device_id.to_string()), head.clone());
    }
    fn drop_upload_head(&mut self, username: &str, device_id: &str) {
        self.upload_heads.remove(&(username.to_string(), device_id.to_string()));
    }
    fn put_slice(&mut self, username: &str, device_id: &str, offset: u64, bytes: &[u8]) {
        self.upload_slices.insert((username.to_string(), device_id.to_string(), offset), bytes.to_vec());
    }
    fn drop_slice(&mut self, username: &str, device_id: &str, offset: u64) {
        self.upload_slices.remove(&(username.to_string(), device_id.to_string(), offset));
    }
}

/// Uploads' part of the seams' conformance suite (see `record_rows::conform`): run on
/// `MemRows` and on the keyspace over every store.
#[cfg(test)]
pub(crate) mod conform {
    use super::*;
    use crate::record_rows::conform::RowStore;

    fn head(have: u64) -> UploadHead {
        UploadHead { id: RecordId([7; 16]), total: 1_000_000, heads: vec![[9; 32]], have, touched: 1_736_000_000 }
    }

    fn owners(rows: &[HeadRow]) -> Vec<(&str, &str)> {
        rows.iter().map(|r| r.owner.as_ref().map(|(u, d)| (u.as_str(), d.as_str())).expect("an owner")).collect()
    }

    pub(crate) fn suite<S: RowStore>(store: &mut S) {
        {
            let cut = store.cut();
            assert!(cut.upload_head("officer", "phone-1").unwrap().is_none() && cut.upload_heads(None).unwrap().is_empty(), "an empty store");
            assert_eq!(cut.slice_bytes(None).unwrap(), 0);
        }
        // `officer` and `officer2`: one name a prefix of the other, whose uploads must not mix.
        // Offsets past 255 and 65,535, where a byte of the offset wraps: slices stay in order.
        store.commit(&mut |w| {
            for (offset, len) in [(0u64, 256usize), (256, 65_280), (65_536, 10)] {
                w.put_slice("officer", "phone-1", offset, &vec![offset as u8; len]);
            }
            w.put_upload_head("officer", "phone-1", &head(65_546));
            w.put_slice("officer", "phone-2", 0, b"abc");
            w.put_upload_head("officer", "phone-2", &head(3));
            w.put_slice("officer2", "phone-1", 0, b"xy");
            w.put_upload_head("officer2", "phone-1", &head(2));
        });
        {
            let cut = store.cut();
            let row = cut.upload_head("officer", "phone-1").unwrap().expect("a head");
            assert_eq!((row.head, row.owner), (Some(head(65_546)), Some(("officer".to_string(), "phone-1".to_string()))));
            assert_eq!(owners(&cut.upload_heads(Some("officer")).unwrap()), [("officer", "phone-1"), ("officer", "phone-2")], "an account's own");
            assert_eq!(owners(&cut.upload_heads(None).unwrap()), [("officer", "phone-1"), ("officer", "phone-2"), ("officer2", "phone-1")]);
            assert_eq!(cut.upload_heads(None).unwrap().iter().map(HeadRow::held).sum::<u64>(), 65_551);
            let slices = cut.slices("officer", "phone-1").unwrap();
            assert_eq!(slices.iter().map(|(o, b)| (*o, b.len())).collect::<Vec<_>>(), [(0, 256), (256, 65_280), (65_536, 10)], "by offset");
            assert!(slices.iter().all(|(o, b)| b.iter().all(|x| *x == *o as u8)));
            assert_eq!(cut.slices("officer2", "phone-1").unwrap(), vec![(0, b"xy".to_vec())]);
            assert_eq!(cut.slice_bytes(Some("officer")).unwrap(), 65_549);
            assert_eq!(cut.slice_bytes(None).unwrap(), 65_551);
        }
        store.commit(&mut |w| {
            w.drop_upload_head("officer", "phone-1");
            for offset in [0, 256, 65_536] {
                w.drop_slice("officer", "phone-1", offset);
            }
            w.put_upload_head("officer", "phone-2", &head(4));
        });
        let cut = store.cut();
        assert!(cut.upload_head("officer", "phone-1").unwrap().is_none() && cut.slices("officer", "phone-1").unwrap().is_empty(), "an upload dropped");
        assert_eq!(cut.upload_head("officer", "phone-2").unwrap().and_then(|r| r.head).map(|h| h.have), Some(4), "a head rewritten");
        assert_eq!(cut.slice_bytes(None).unwrap(), 5);
    }
}
