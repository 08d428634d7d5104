//! The audit chain: who did what, when, append-only, each entry hashing the one before, every
//! [`AUDIT_CHECKPOINT_EVERY`]th signed with the server's audit key.
//!
//! Entries and checkpoints are read and written through the typed storage seam of
//! `audit_rows.rs`, which alone knows their keys; the key that signs is the secret
//! `k/audit-ed25519-seed` ([`Db::secret`]).

use sha2::{Digest, Sha256};

pub use crate::audit_rows::{AuditCheckpoint, AuditEntry};
use crate::audit_rows::{AuditRows, AuditWrites};
use crate::store_rows::StoreRows;
use crate::db::{corrupt, now_secs, AuditEvent, Db, DbError};
use crate::store::{Batch, KvRead};

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

const AUDIT_SEED: &str = "audit-ed25519-seed";

fn signing_key(seed: &[u8]) -> Result<ed25519_dalek::SigningKey, DbError> {
    let seed: [u8; 32] = seed.try_into().map_err(|_| corrupt("audit key", "not 32 bytes"))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The audit key as a write transaction reads it ([`Db::open`] made it).
fn audit_key_in(r: &dyn KvRead) -> Result<ed25519_dalek::SigningKey, DbError> {
    let seed = r.stored_secret(AUDIT_SEED)?.ok_or_else(|| corrupt("audit key", "missing"))?;
    signing_key(&seed)
}

/// The audit chain and its signed checkpoints: a repository of [`Db`] (`Db::audit_log`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct AuditLog<'a> {
    pub(crate) db: &'a Db,
}

impl AuditLog<'_> {
    /// Appends an audit entry on its own (durable before returning).
    pub fn audit(&self, ev: AuditEvent) -> Result<(), DbError> {
        self.commit_audited(Batch::default(), Some(ev))
    }

    /// Commits `batch` together with an audit entry, atomically and durably.
    pub fn commit_audited(&self, mut batch: Batch, ev: Option<AuditEvent>) -> Result<(), DbError> {
        let tx = self.db.kv().begin_write()?;
        self.audit_into(&*tx, &mut self.db.stage(&mut batch), ev)?;
        Ok(tx.commit(batch)?)
    }

    /// Puts the audit entry of `ev` into `batch`, linked to the chain's tail as write
    /// transaction `tx` sees it: the transaction is the only writer, so entries never fork.
    pub(crate) fn audit_into(&self, tx: &dyn KvRead, w: &mut dyn AuditWrites, ev: Option<AuditEvent>) -> Result<(), DbError> {
        let Some(ev) = ev else { return Ok(()) };
        let (seq, prev_hash) = match tx.last_entry()? {
            Some(last) => (last.seq + 1, last.hash),
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
        w.put_entry(&entry);
        if seq % AUDIT_CHECKPOINT_EVERY == 0 {
            use ed25519_dalek::Signer;
            let prev = match seq.checked_sub(AUDIT_CHECKPOINT_EVERY).filter(|s| *s > 0) {
                // A checkpoint deleted from the store leaves this one naming none: the chain's
                // verification shows the gap; the audit goes on being written meanwhile.
                Some(before) => tx.checkpoint(before)?.map(|ck| ck.signature).unwrap_or_default(),
                None => String::new(),
            };
            let signature = audit_key_in(tx)?.sign(&AuditCheckpoint::message(seq, &entry.hash, Some(&prev)));
            let ck = AuditCheckpoint { seq, hash: entry.hash.clone(), prev: Some(prev), signature: hex::encode(signature.to_bytes()) };
            w.put_checkpoint(&ck);
        }
        Ok(())
    }

    /// The key that signs audit checkpoints (made the first time the store is opened).
    pub(crate) fn audit_key(&self) -> Result<ed25519_dalek::SigningKey, DbError> {
        let seed = self.db.secret(AUDIT_SEED, || {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            seed.to_vec()
        })?;
        signing_key(&seed)
    }

    /// Audit entries with `seq > since`, oldest first, at most `limit`.
    pub fn audit_since(&self, since: u64, limit: usize) -> Result<Vec<AuditEntry>, DbError> {
        self.db.kv().entries_after(since, limit)
    }

    /// The latest signed checkpoint of the audit chain.
    pub fn latest_audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>, DbError> {
        self.db.kv().latest_checkpoint()
    }

    /// [`AuditLog::verify_audit_chain`], and that the chain holds every checkpoint `witnessed`
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
        let here: std::collections::HashMap<u64, String> = self.db.kv().checkpoints()?.into_iter().map(|ck| (ck.seq, ck.signature)).collect();
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
        for e in self.db.kv().entries_after(0, usize::MAX)? {
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
        for ck in self.db.kv().checkpoints()? {
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

    pub(crate) fn verify_audit_chain_tail(&self) -> Result<(), DbError> {
        if let Some(e) = self.db.kv().last_entry()? {
            if e.compute_hash() != e.hash {
                return Err(corrupt("audit", format!("entry {} does not match its hash", e.seq)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemKv;

    /// The entry at `seq`, as stored.
    fn entry(db: &Db, seq: u64) -> AuditEntry {
        db.kv().entries_after(seq - 1, 1).unwrap().remove(0)
    }

    /// Writes rows of the chain as someone with write access to the store could.
    fn tamper(db: &Db, f: impl FnOnce(&mut dyn AuditWrites)) {
        let mut b = Batch::default();
        f(&mut db.stage(&mut b));
        db.commit(b).unwrap();
    }

    fn ev(action: &'static str, target: &str) -> AuditEvent {
        AuditEvent { user: "admin".into(), device_id: None, action, target: target.into() }
    }

    #[test]
    fn audit_chain_verifies_and_detects_tampering() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        for i in 0..5 {
            db.audit_log().audit(ev("login", &format!("user{i}"))).unwrap();
        }
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Ok(5));
        // Tamper with entry 3: change its target but keep its hash.
        let mut e = entry(&db, 3);
        e.target = "someone-else".into();
        tamper(&db, |w| w.put_entry(&e));
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Err(3));
    }

    #[test]
    fn signed_checkpoints_reveal_a_truncated_or_rewritten_chain() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let n = 2 * AUDIT_CHECKPOINT_EVERY + 10;
        for i in 0..n {
            db.audit_log().audit(ev("login", &format!("user{i}"))).unwrap();
        }
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Ok(n));
        // Cut the tail past the last checkpoint: hash-linked entries alone could not tell.
        let snapshot: Vec<_> = db.kv().range(b"", &[0xff], usize::MAX).unwrap();
        let cut = 2 * AUDIT_CHECKPOINT_EVERY - 5;
        tamper(&db, |w| (cut + 1..=n).for_each(|seq| w.drop_entry(seq)));
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Err(cut + 1), "a chain cut before its latest checkpoint");
        // Rewrite the whole chain consistently (new hashes) without the key: the checkpoints no
        // longer match.
        let mut b = Batch::default();
        for (k, v) in &snapshot {
            b.put(k.clone(), v.clone());
        }
        db.commit(b).unwrap();
        let mut prev = "0".repeat(64);
        let mut rewritten = Vec::new();
        for seq in 1..=n {
            let mut e = entry(&db, seq);
            if seq == 3 {
                e.user = "someone-else".into();
            }
            e.prev_hash = prev.clone();
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            rewritten.push(e);
        }
        tamper(&db, |w| rewritten.iter().for_each(|e| w.put_entry(e)));
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Err(AUDIT_CHECKPOINT_EVERY), "a rewritten chain");
    }

    /// Issue "Security, second review", item 2: entries after 100 and their checkpoints were
    /// deleted from a backup (no key needed) and the chain verified as valid.
    #[test]
    fn checkpoints_deleted_from_the_middle_or_with_the_tail_are_found() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let n = 10 * AUDIT_CHECKPOINT_EVERY + 20;
        for i in 0..n {
            db.audit_log().audit(ev("login", &format!("user{i}"))).unwrap();
        }
        let latest = db.audit_log().latest_audit_checkpoint().unwrap().expect("checkpoints were made");
        assert_eq!(latest.seq, 10 * AUDIT_CHECKPOINT_EVERY);
        let witness = AuditWitness::all_in(&format!("garbage\n{}\n", AuditWitness::line(&latest)));
        assert_eq!(witness.len(), 1);
        assert_eq!(db.audit_log().verify_audit_chain_against(&witness).unwrap(), Ok(n));
        let snapshot: Vec<_> = db.kv().range(b"", &[0xff], usize::MAX).unwrap();
        let restore = |db: &Db| {
            let mut b = Batch::default();
            for (k, v) in &snapshot {
                b.put(k.clone(), v.clone());
            }
            db.commit(b).unwrap();
        };
        // A checkpoint deleted from the middle, its entries kept.
        tamper(&db, |w| w.drop_checkpoint(3 * AUDIT_CHECKPOINT_EVERY));
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Err(3 * AUDIT_CHECKPOINT_EVERY), "a checkpoint missing in the middle");
        restore(&db);
        // The last checkpoints deleted, every entry kept.
        tamper(&db, |w| (8..=10).for_each(|k| w.drop_checkpoint(k * AUDIT_CHECKPOINT_EVERY)));
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Err(8 * AUDIT_CHECKPOINT_EVERY), "entries past their missing checkpoints");
        restore(&db);
        // Every entry after `last` deleted, with the checkpoints past it: a tail cut off.
        let cut_after = |db: &Db, last: u64| {
            let entries: Vec<u64> = db.kv().entries_after(last, usize::MAX).unwrap().iter().map(|e| e.seq).collect();
            let checkpoints: Vec<u64> = db.kv().checkpoints().unwrap().iter().map(|c| c.seq).filter(|s| *s > last).collect();
            tamper(db, |w| {
                entries.iter().for_each(|s| w.drop_entry(*s));
                checkpoints.iter().for_each(|s| w.drop_checkpoint(*s));
            });
        };
        // The tail cut at 100 with its checkpoints: consistent in the store, but not with the
        // checkpoint seen outside it.
        cut_after(&db, 100);
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Ok(100), "the store alone cannot tell");
        assert_eq!(db.audit_log().verify_audit_chain_against(&witness).unwrap(), Err(101), "the witness can");
        // A checkpoint made again past the cut, without the key, cannot stand in for it.
        restore(&db);
        let mut forged = latest.clone();
        forged.signature = "00".repeat(64);
        tamper(&db, |w| w.put_checkpoint(&forged));
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Err(latest.seq));
        // The next checkpoint names the one before it: a chain of signatures.
        restore(&db);
        for i in 0..AUDIT_CHECKPOINT_EVERY {
            db.audit_log().audit(ev("login", &format!("more{i}"))).unwrap();
        }
        let next = db.audit_log().latest_audit_checkpoint().unwrap().unwrap();
        assert_eq!((next.seq, next.prev.as_deref()), (11 * AUDIT_CHECKPOINT_EVERY, Some(latest.signature.as_str())));
        // Cut at 100 again and grown back past the cut: consistent in the store, but its new
        // checkpoints sign other entries than the witness saw.
        cut_after(&db, 100);
        for i in 100..n + 10 {
            db.audit_log().audit(ev("login", &format!("regrown{i}"))).unwrap();
        }
        assert_eq!(db.audit_log().verify_audit_chain().unwrap(), Ok(n + 10), "consistent in the store");
        assert_eq!(db.audit_log().verify_audit_chain_against(&witness).unwrap(), Err(latest.seq), "still broken against the witness");
    }
}
