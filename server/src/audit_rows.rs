//! The typed storage seam of the audit chain: its entries and its signed checkpoints, as rows,
//! with no key in sight.
//!
//! [`AuditRows`] is one consistent read of them; [`AuditWrites`] the rows a write transaction
//! stages. The `audit` repository above decides what they hold (the hash chain, the
//! signatures) and verifies them; `check` reads them through this seam. The keyspace
//! implements both (below: its keys); so does `record_rows::MemRows` in tests, in plain maps,
//! and the seam's conformance suite runs on both.

use serde::{Deserialize, Serialize};

use crate::db::{from_json, key, to_json, DbError};
use crate::record_rows::KeyspaceWrites;
use crate::store::{prefix_end, KvRead};

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

/// A signed statement "the audit chain had `seq` entries, the last one hashing to `hash`, and
/// the checkpoint before this one was signed `prev`", signed with the server's audit key
/// (Ed25519, `k/audit-ed25519-seed`, kept across restores). Rewriting or cutting the chain
/// before a checkpoint then needs that key, not just write access to the entries; a checkpoint
/// deleted from the middle breaks the next one's `prev`, and one missing at a multiple of
/// [`crate::audit::AUDIT_CHECKPOINT_EVERY`] is itself a break. What the store alone cannot show
/// is a tail cut off together with its checkpoints: for that the latest checkpoint also leaves
/// the store (the log, the admin's page, and the `--audit-witness` file:
/// [`crate::audit::AuditLog::verify_audit_chain_against`]).
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

/// One consistent read of the audit chain's rows.
pub(crate) trait AuditRows {
    /// The chain's last entry.
    fn last_entry(&self) -> Result<Option<AuditEntry>, DbError>;
    /// At most `limit` entries with `seq > since`, oldest first.
    fn entries_after(&self, since: u64, limit: usize) -> Result<Vec<AuditEntry>, DbError>;
    /// The checkpoint at `seq`, if there is one that reads.
    fn checkpoint(&self, seq: u64) -> Result<Option<AuditCheckpoint>, DbError>;
    /// Every checkpoint, in order.
    fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, DbError>;
    /// The latest checkpoint.
    fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, DbError>;
}

/// The audit chain's rows a write transaction stages.
pub(crate) trait AuditWrites {
    /// An entry at its sequence number.
    fn put_entry(&mut self, entry: &AuditEntry);
    fn put_checkpoint(&mut self, ck: &AuditCheckpoint);
    /// What someone with write access to the store could do (tests of the verification).
    #[cfg(test)]
    fn drop_entry(&mut self, seq: u64);
    #[cfg(test)]
    fn drop_checkpoint(&mut self, seq: u64);
}

// ---------------------------------------------------------------------------------------------
// The keyspace. Keys: `a/{seq:be64}` → [`AuditEntry`] (JSON, read by the trigger into
// `gesync.audit`), `ac/{seq:be64}` → [`AuditCheckpoint`] (JSON, into
// `gesync.audit_checkpoints`). The key that signs them is the secret `k/audit-ed25519-seed`
// (`Db::secret`).

const ENTRIES: &[u8] = b"a/";
const CHECKPOINTS: &[u8] = b"ac/";

fn entry_key(seq: u64) -> Vec<u8> {
    key("a/", &[&seq.to_be_bytes()])
}

fn checkpoint_key(seq: u64) -> Vec<u8> {
    key("ac/", &[&seq.to_be_bytes()])
}

fn entry_of(v: &[u8]) -> Result<AuditEntry, DbError> {
    from_json("audit", v)
}

fn checkpoint_of(v: &[u8]) -> Result<AuditCheckpoint, DbError> {
    from_json("audit checkpoint", v)
}

impl<R: KvRead + ?Sized> AuditRows for R {
    fn last_entry(&self) -> Result<Option<AuditEntry>, DbError> {
        self.last_in(ENTRIES, &prefix_end(ENTRIES))?.map(|(_, v)| entry_of(&v)).transpose()
    }

    fn entries_after(&self, since: u64, limit: usize) -> Result<Vec<AuditEntry>, DbError> {
        self.range(&entry_key(since.saturating_add(1)), &prefix_end(ENTRIES), limit)?.into_iter().map(|(_, v)| entry_of(&v)).collect()
    }

    fn checkpoint(&self, seq: u64) -> Result<Option<AuditCheckpoint>, DbError> {
        Ok(self.get(&checkpoint_key(seq))?.and_then(|v| checkpoint_of(&v).ok()))
    }

    fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, DbError> {
        self.range(CHECKPOINTS, &prefix_end(CHECKPOINTS), usize::MAX)?.into_iter().map(|(_, v)| checkpoint_of(&v)).collect()
    }

    fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, DbError> {
        self.last_in(CHECKPOINTS, &prefix_end(CHECKPOINTS))?.map(|(_, v)| checkpoint_of(&v)).transpose()
    }
}

impl AuditWrites for KeyspaceWrites<'_> {
    fn put_entry(&mut self, entry: &AuditEntry) {
        self.batch.put(entry_key(entry.seq), to_json(entry));
    }

    fn put_checkpoint(&mut self, ck: &AuditCheckpoint) {
        self.batch.put(checkpoint_key(ck.seq), to_json(ck));
    }

    #[cfg(test)]
    fn drop_entry(&mut self, seq: u64) {
        self.batch.delete(entry_key(seq));
    }

    #[cfg(test)]
    fn drop_checkpoint(&mut self, seq: u64) {
        self.batch.delete(checkpoint_key(seq));
    }
}

#[cfg(test)]
impl AuditRows for crate::record_rows::MemRows {
    fn last_entry(&self) -> Result<Option<AuditEntry>, DbError> {
        Ok(self.audit.values().next_back().cloned())
    }
    fn entries_after(&self, since: u64, limit: usize) -> Result<Vec<AuditEntry>, DbError> {
        Ok(self.audit.range(since.saturating_add(1)..).take(limit).map(|(_, e)| e.clone()).collect())
    }
    fn checkpoint(&self, seq: u64) -> Result<Option<AuditCheckpoint>, DbError> {
        Ok(self.audit_checkpoints.get(&seq).cloned())
    }
    fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, DbError> {
        Ok(self.audit_checkpoints.values().cloned().collect())
    }
    fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, DbError> {
        Ok(self.audit_checkpoints.values().next_back().cloned())
    }
}

#[cfg(test)]
impl AuditWrites for crate::record_rows::MemRows {
    fn put_entry(&mut self, entry: &AuditEntry) {
        self.audit.insert(entry.seq, entry.clone());
    }
    fn put_checkpoint(&mut self, ck: &AuditCheckpoint) {
        self.audit_checkpoints.insert(ck.seq, ck.clone());
    }
    fn drop_entry(&mut self, seq: u64) {
        self.audit.remove(&seq);
    }
    fn drop_checkpoint(&mut self, seq: u64) {
        self.audit_checkpoints.remove(&seq);
    }
}

/// The audit chain's part of the seams' conformance suite (see `record_rows::conform`): run on
/// `MemRows` and on the keyspace over every store.
#[cfg(test)]
pub(crate) mod conform {
    use super::*;
    use crate::record_rows::conform::RowStore;

    fn entry(seq: u64) -> AuditEntry {
        AuditEntry { seq, at: 1_736_000_000 + seq as i64, user: "admin".into(), device_id: None, action: "login".into(), target: format!("user{seq}"), prev_hash: format!("{:064}", seq - 1), hash: format!("{seq:064}") }
    }

    fn checkpoint(seq: u64) -> AuditCheckpoint {
        AuditCheckpoint { seq, hash: format!("{seq:064}"), prev: Some(String::new()), signature: format!("sig{seq}") }
    }

    fn seqs(cks: &[AuditCheckpoint]) -> Vec<u64> {
        cks.iter().map(|c| c.seq).collect()
    }

    pub(crate) fn suite<S: RowStore>(store: &mut S) {
        {
            let cut = store.cut();
            assert!(cut.last_entry().unwrap().is_none() && cut.entries_after(0, 10).unwrap().is_empty(), "an empty chain");
            assert!(cut.latest_checkpoint().unwrap().is_none() && cut.checkpoints().unwrap().is_empty());
        }
        // Past 255 and 256, where a sequence number's last byte wraps: the order is the numbers'.
        let last = 300;
        store.commit(&mut |w| {
            for seq in 1..=last {
                w.put_entry(&entry(seq));
            }
            for seq in [64, 128, 192, 256] {
                w.put_checkpoint(&checkpoint(seq));
            }
        });
        let cut = store.cut();
        assert_eq!(cut.last_entry().unwrap(), Some(entry(last)));
        let all = cut.entries_after(0, usize::MAX).unwrap();
        assert_eq!(all.len(), last as usize);
        assert!(all.iter().zip(1..).all(|(e, seq)| *e == entry(seq)), "every entry, oldest first");
        assert_eq!(cut.entries_after(254, 3).unwrap(), vec![entry(255), entry(256), entry(257)], "after `since`, at most `limit`");
        assert!(cut.entries_after(last, 10).unwrap().is_empty());
        assert_eq!(cut.checkpoint(128).unwrap().map(|c| c.signature), Some("sig128".to_string()));
        assert!(cut.checkpoint(100).unwrap().is_none());
        assert_eq!(seqs(&cut.checkpoints().unwrap()), vec![64, 128, 192, 256]);
        assert_eq!(cut.latest_checkpoint().unwrap().map(|c| c.seq), Some(256));
        drop(cut);
        store.commit(&mut |w| {
            w.drop_checkpoint(256);
            w.drop_entry(last);
        });
        let cut = store.cut();
        assert_eq!(cut.last_entry().unwrap(), Some(entry(last - 1)));
        assert_eq!(cut.latest_checkpoint().unwrap().map(|c| c.seq), Some(192));
    }
}
