//! Large records going up in slices ([`PushPart`]): one upload per device, kept durably until it
//! is whole, then pushed like any record and forgotten.
//!
//! Each device's upload is a head (which record, its size, how much is held, when a slice last
//! came) and the slices it holds, read and written through the typed storage seam of
//! `upload_rows.rs`, which alone knows their keys.
//!
//! A resend of bytes already held writes nothing, and a slice is never rewritten: storing an
//! upload costs the bytes it carries, once (rewriting the whole upload at every slice would
//! leave each old copy in sled's log until it is compacted). Every change is one write
//! transaction, so a revoke or a disable racing a slice always wins.
//!
//! Bounds ([`UploadLimits`]): an account's unfinished uploads, on all its devices, and all
//! accounts' together; past either a slice is refused with `uploads_full` (503, retry later),
//! and nothing is stored. An upload no slice has reached for [`UploadLimits::max_age_secs`] is
//! dropped by [`Uploads::expire_uploads`] (the server runs it at start and every few minutes), and a
//! device's upload is dropped when the device is revoked, every one of an account's when the
//! account is disabled.

use sync_protocol::wire::{PushDoc, PushPart, MAX_UPLOAD_BYTES};

use crate::db::{Db, DbError};
use crate::model::Principal;
use crate::store::{Batch, KvRead};
use crate::upload_rows::{UploadHead, UploadRows, UploadWrites};

/// How much unfinished upload the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Bytes of one account's unfinished uploads, all its devices together.
    pub per_account: u64,
    /// Bytes of every account's unfinished uploads together.
    pub total: u64,
    /// An upload no slice reached for this long is dropped.
    pub max_age_secs: i64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits { per_account: 2 * MAX_UPLOAD_BYTES, total: 1 << 30, max_age_secs: 2 * 24 * 3600 }
    }
}

/// Large records' uploads in progress: a repository of [`Db`] (`Db::uploads`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct Uploads<'a> {
    pub(crate) db: &'a Db,
}

impl Uploads<'_> {
    /// The bounds uploads are held to.
    pub fn upload_limits(&self) -> UploadLimits {
        *self.db.inner.upload_limits.lock()
    }

    /// Sets the bounds uploads are held to (configuration, tests).
    pub fn set_upload_limits(&self, limits: UploadLimits) {
        *self.db.inner.upload_limits.lock() = limits;
    }

    /// Keeps one slice of `who`'s device's upload (durably: the next slice resumes after it
    /// even across a restart) and says how many bytes the server holds. Bytes already held are
    /// not written again (a retried slice whose answer was lost); a slice past the end of what
    /// is held is refused with the count held, and the phone resends from there. A slice of
    /// another record, or of other `total`/`heads`, starts a new upload in place of the
    /// device's old one. Once whole, the upload is returned as a push: the caller pushes it,
    /// then forgets it ([`Uploads::drop_upload`]).
    pub(crate) fn receive_part(&self, who: &Principal, part: &PushPart, now: i64) -> Result<(u64, Option<PushDoc>), DbError> {
        let (user, device) = (who.username.as_str(), who.device_id.as_str());
        if part.total == 0 || part.total > MAX_UPLOAD_BYTES {
            return Ok((0, None));
        }
        let limits = self.upload_limits();
        let tx = self.db.kv().begin_write()?;
        let held: Option<UploadHead> = tx.upload_head(user, device)?.and_then(|row| row.head);
        let same = held.as_ref().filter(|h| h.id == part.id && h.total == part.total && h.heads == part.heads);
        let have = same.map_or(0, |h| h.have);
        let end = part.offset.saturating_add(part.bytes.len() as u64);
        if end > part.total || part.offset > have {
            // Out of order or out of bounds: nothing stored; the phone resends from `have`.
            return Ok((have, None));
        }
        let new = &part.bytes[(have - part.offset).min(part.bytes.len() as u64) as usize..];
        if new.is_empty() {
            return Ok((have, None));
        }
        let after = have + new.len() as u64;
        // The bounds, counting what is held now without this device's upload (replaced or
        // continued here): one read of every upload head.
        let this_device = Some((user.to_string(), device.to_string()));
        let (mut account, mut all) = (0u64, 0u64);
        for row in tx.upload_heads(None)?.iter().filter(|row| row.owner != this_device) {
            all += row.held();
            if row.owner.as_ref().is_some_and(|(u, _)| u == user) {
                account += row.held();
            }
        }
        if account + after > limits.per_account {
            return Err(DbError::UploadsFull(format!(
                "this account's unfinished uploads would hold {} bytes, more than its limit of {} bytes: finish or abandon the upload on another of its phones, or wait for it to expire",
                account + after,
                limits.per_account
            )));
        }
        if all + after > limits.total {
            return Err(DbError::UploadsFull("the server holds too many unfinished uploads just now: try again later".into()));
        }
        let mut batch = Batch::default();
        if held.is_some() && same.is_none() {
            // A new upload replaces the device's old one.
            self.drop_uploads_into(&*tx, &mut batch, user, Some(device))?;
        }
        if after == part.total {
            // Whole: nothing more is written; the caller pushes it and then forgets the upload.
            let mut bytes = Vec::with_capacity(part.total as usize);
            if have > 0 {
                for (_, slice) in tx.slices(user, device)? {
                    bytes.extend_from_slice(&slice);
                }
            }
            if bytes.len() as u64 != have {
                // The slices held do not add up (damage): start the upload again.
                self.drop_uploads_into(&*tx, &mut batch, user, Some(device))?;
                tx.commit(batch)?;
                return Ok((0, None));
            }
            bytes.extend_from_slice(new);
            return Ok((after, Some(PushDoc { id: part.id, changes: bytes, heads: part.heads.clone() })));
        }
        let mut w = self.db.stage(&mut batch);
        w.put_slice(user, device, have, new);
        w.put_upload_head(user, device, &UploadHead { id: part.id, total: part.total, heads: part.heads.clone(), have: after, touched: now });
        tx.commit(batch)?;
        Ok((after, None))
    }

    /// Forgets `who`'s device's upload (pushed, or abandoned).
    pub(crate) fn drop_upload(&self, who: &Principal) -> Result<(), DbError> {
        let tx = self.db.kv().begin_write()?;
        let mut batch = Batch::default();
        self.drop_uploads_into(&*tx, &mut batch, &who.username, Some(&who.device_id))?;
        if batch.is_empty() {
            return Ok(());
        }
        Ok(tx.commit(batch)?)
    }

    /// Puts into `batch` the removal of the uploads of `username`'s device, or of all its
    /// devices (`None`), as read in the write transaction `r`.
    pub(crate) fn drop_uploads_into(&self, r: &dyn KvRead, batch: &mut Batch, username: &str, device_id: Option<&str>) -> Result<(), DbError> {
        let devices: Vec<String> = match device_id {
            Some(d) => vec![d.to_string()],
            None => r.upload_heads(Some(username))?.into_iter().filter_map(|row| row.owner.map(|o| o.1)).collect(),
        };
        let mut w = self.db.stage(batch);
        for d in devices {
            if r.upload_head(username, &d)?.is_some() {
                w.drop_upload_head(username, &d);
            }
            for (offset, _) in r.slices(username, &d)? {
                w.drop_slice(username, &d, offset);
            }
        }
        Ok(())
    }

    /// Drops every upload no slice reached for [`UploadLimits::max_age_secs`] before `now`;
    /// returns how many.
    pub fn expire_uploads(&self, now: i64) -> Result<usize, DbError> {
        let max_age = self.upload_limits().max_age_secs;
        let stale = |h: &Option<UploadHead>| h.as_ref().is_none_or(|h| h.touched < now - max_age);
        if !self.db.kv().upload_heads(None)?.iter().any(|row| stale(&row.head)) {
            return Ok(0);
        }
        let tx = self.db.kv().begin_write()?;
        let mut batch = Batch::default();
        let mut n = 0;
        for row in tx.upload_heads(None)? {
            if let (true, Some((user, device))) = (stale(&row.head), row.owner) {
                self.drop_uploads_into(&*tx, &mut batch, &user, Some(&device))?;
                n += 1;
            }
        }
        tx.commit(batch)?;
        Ok(n)
    }

    /// Bytes of unfinished uploads the server holds (metrics, tests).
    pub fn upload_bytes(&self) -> Result<u64, DbError> {
        Ok(self.db.kv().upload_heads(None)?.iter().map(|row| row.held()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::store::MemKv;

    fn who(user: &str, device: &str) -> Principal {
        Principal { username: user.into(), role: Role::CommuneOfficer, org_unit: "04701".into(), device_id: device.into() }
    }

    fn part(id: u8, offset: u64, len: usize, total: u64) -> PushPart {
        PushPart { id: RecordId([id; 16]), offset, total, bytes: (offset..offset + len as u64).map(|i| i as u8).collect(), heads: vec![[id; 32]] }
    }

    use sync_protocol::RecordId;

    /// Bytes of the slices held (every account's, or one's).
    fn slices(db: &Db, username: Option<&str>) -> u64 {
        db.kv().slice_bytes(username).unwrap()
    }

    /// Upload heads stored.
    fn heads(db: &Db) -> usize {
        db.kv().upload_heads(None).unwrap().len()
    }

    #[test]
    fn slices_are_stored_once_and_a_resend_writes_nothing() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let a = who("officer", "phone-1");
        assert_eq!(db.uploads().receive_part(&a, &part(1, 0, 4000, 10_000), 100).unwrap(), (4000, None));
        assert_eq!(db.uploads().receive_part(&a, &part(1, 4000, 4000, 10_000), 100).unwrap(), (8000, None));
        assert_eq!(slices(&db, None), 8000, "each byte held once");
        // A resend of held bytes, whole or in part, writes nothing; one overlapping the end
        // writes only what is new.
        for _ in 0..10 {
            assert_eq!(db.uploads().receive_part(&a, &part(1, 4000, 1, 10_000), 100).unwrap(), (8000, None));
        }
        assert_eq!(db.uploads().receive_part(&a, &part(1, 6000, 3000, 10_000), 100).unwrap(), (9000, None));
        assert_eq!(slices(&db, None), 9000);
        // Past the end held: refused with the count.
        assert_eq!(db.uploads().receive_part(&a, &part(1, 9500, 500, 10_000), 100).unwrap(), (9000, None));
        let (have, whole) = db.uploads().receive_part(&a, &part(1, 9000, 1000, 10_000), 100).unwrap();
        assert_eq!(have, 10_000);
        let whole = whole.expect("whole");
        assert_eq!(whole.changes, (0..10_000u64).map(|i| i as u8).collect::<Vec<_>>());
        db.uploads().drop_upload(&a).unwrap();
        assert_eq!((slices(&db, None), heads(&db)), (0, 0), "forgotten once pushed");
    }

    #[test]
    fn a_new_upload_replaces_the_old_one_and_bounds_hold_per_account_and_in_total() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        db.uploads().set_upload_limits(UploadLimits { per_account: 10_000, total: 15_000, max_age_secs: 60 });
        let (a1, a2, b1) = (who("officer", "phone-1"), who("officer", "phone-2"), who("other", "phone-3"));
        db.uploads().receive_part(&a1, &part(1, 0, 6000, 9000), 100).unwrap();
        db.uploads().receive_part(&a1, &part(2, 0, 6000, 9000), 100).unwrap();
        assert_eq!(db.uploads().upload_bytes().unwrap(), 6000, "the device's old upload is gone");
        // The account's second phone may hold 4000 more, not 4001.
        let err = db.uploads().receive_part(&a2, &part(3, 0, 4001, 9000), 100).unwrap_err();
        assert!(matches!(&err, DbError::UploadsFull(m) if m.contains("10000")), "{err}");
        assert_eq!(db.uploads().receive_part(&a2, &part(3, 0, 4000, 9000), 100).unwrap().0, 4000);
        // Another account: the total bound (15,000) leaves 5,000.
        assert!(matches!(db.uploads().receive_part(&b1, &part(4, 0, 5001, 9000), 100), Err(DbError::UploadsFull(_))));
        assert_eq!(db.uploads().receive_part(&b1, &part(4, 0, 5000, 9000), 100).unwrap().0, 5000);
        assert_eq!(db.uploads().upload_bytes().unwrap(), 15_000);
        db.uploads().drop_upload(&a1).unwrap();
        assert_eq!(db.uploads().upload_bytes().unwrap(), 9000);
        // Abandoned ones expire: phone-3's upload moved on at 150, phone-2's not since 100.
        db.uploads().receive_part(&b1, &part(4, 5000, 1000, 9000), 150).unwrap();
        assert_eq!(db.uploads().expire_uploads(150).unwrap(), 0);
        assert_eq!(db.uploads().expire_uploads(161).unwrap(), 1, "phone-2's, untouched since 100");
        assert_eq!(db.uploads().upload_bytes().unwrap(), 6000);
        assert_eq!(slices(&db, Some("officer")), 0);
        assert_eq!(db.uploads().expire_uploads(300).unwrap(), 1);
        assert_eq!((slices(&db, None), heads(&db)), (0, 0));
    }
}
