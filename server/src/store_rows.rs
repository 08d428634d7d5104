//! The typed storage seam of what the store holds about itself: the org-unit tree with its
//! version, the store's epoch, its form level (which stored forms its builds write), and the
//! server's secrets, as rows, with no key in sight.
//!
//! [`StoreRows`] is one consistent read of them; [`StoreWrites`] the rows a write transaction
//! stages. `db.rs` (the tree's cache, the epoch, secrets made once), `org_units` (tree changes),
//! `figures` (a rebuild's drift is refused once the tree moved) and `audit` (its signing key)
//! read and write them through this seam. The keyspace implements both (below: its keys); so
//! does `record_rows::MemRows` in tests, and the seam's conformance suite runs on both.

use crate::db::{corrupt, key, read_u64, DbError, TOKEN_SIGNING_SECRET};
use crate::model::OrgUnit;
use crate::record_rows::KeyspaceWrites;
use crate::store::{prefix_end, KvRead};

/// One consistent read of the store's own rows.
pub(crate) trait StoreRows {
    /// Every org unit, merged ones included, by code.
    fn all_org_units(&self) -> Result<Vec<OrgUnit>, DbError>;
    /// The tree's version: moved by every change of the tree (0 before the first).
    fn tree_version(&self) -> Result<u64, DbError>;
    /// The store's epoch (0: it has none yet).
    fn stored_epoch(&self) -> Result<u64, DbError>;
    /// When the epoch was last renewed (seconds since 1970; 0: it never was).
    fn epoch_renewed_at(&self) -> Result<i64, DbError>;
    /// The store's form level: the newest stored forms every build serving it reads, so that
    /// its builds may write them (0: only the forms every build reads; see
    /// [`crate::db::FORM_LEVEL`]).
    fn form_level(&self) -> Result<u64, DbError>;
    /// The server secret `name`.
    fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, DbError>;
}

/// The store's own rows a write transaction stages.
pub(crate) trait StoreWrites {
    fn put_org_unit(&mut self, unit: &OrgUnit);
    fn set_tree_version(&mut self, version: u64);
    fn set_epoch(&mut self, epoch: u64, renewed_at: i64);
    fn set_form_level(&mut self, level: u64);
    fn put_secret(&mut self, name: &str, value: &[u8]);
}

// ---------------------------------------------------------------------------------------------
// The keyspace. Keys: `o/{code}` → the org unit (`rows.rs`'s stored form, JSON, which the
// trigger reads into `gesync.org_units`), `n/tree` → the tree's version, `n/epoch` and
// `n/epoch-at` → the epoch and when it was renewed, `n/forms` → the form level, `k/{name}` → a
// secret (never in a view);
// each number big-endian u64.

const ORG_UNITS: &[u8] = b"o/";
const TREE_VERSION: &[u8] = b"n/tree";
const EPOCH: &[u8] = b"n/epoch";
const EPOCH_AT: &[u8] = b"n/epoch-at";
const FORM_LEVEL: &[u8] = b"n/forms";

fn org_unit_key(code: &str) -> Vec<u8> {
    key("o/", &[code.as_bytes()])
}

fn secret_key(name: &str) -> Vec<u8> {
    key("k/", &[name.as_bytes()])
}

/// Whether a backup's entry goes into a restored store: not the token-signing key (see
/// [`TOKEN_SIGNING_SECRET`]) nor the store's epoch (the restored store gets a new one when it
/// opens, so that phones which synced after the backup was taken offer again what it lacks).
pub(crate) fn restored(k: &[u8]) -> bool {
    k != secret_key(TOKEN_SIGNING_SECRET).as_slice() && k != EPOCH && k != EPOCH_AT
}

impl<R: KvRead + ?Sized> StoreRows for R {
    fn all_org_units(&self) -> Result<Vec<OrgUnit>, DbError> {
        self.range(ORG_UNITS, &prefix_end(ORG_UNITS), usize::MAX)?.into_iter().map(|(_, v)| crate::rows::org_unit_from(&v).map_err(|e| corrupt("org unit", e))).collect()
    }

    fn tree_version(&self) -> Result<u64, DbError> {
        read_u64(self, TREE_VERSION)
    }

    fn stored_epoch(&self) -> Result<u64, DbError> {
        read_u64(self, EPOCH)
    }

    fn epoch_renewed_at(&self) -> Result<i64, DbError> {
        Ok(read_u64(self, EPOCH_AT)? as i64)
    }

    fn form_level(&self) -> Result<u64, DbError> {
        read_u64(self, FORM_LEVEL)
    }

    fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.get(&secret_key(name))?)
    }
}

impl StoreWrites for KeyspaceWrites<'_> {
    fn put_org_unit(&mut self, unit: &OrgUnit) {
        self.batch.put(org_unit_key(&unit.code), crate::rows::org_unit_bytes(unit));
    }

    fn set_tree_version(&mut self, version: u64) {
        self.batch.put(TREE_VERSION.to_vec(), version.to_be_bytes().to_vec());
    }

    fn set_epoch(&mut self, epoch: u64, renewed_at: i64) {
        self.batch.put(EPOCH.to_vec(), epoch.to_be_bytes().to_vec());
        self.batch.put(EPOCH_AT.to_vec(), (renewed_at as u64).to_be_bytes().to_vec());
    }

    fn set_form_level(&mut self, level: u64) {
        self.batch.put(FORM_LEVEL.to_vec(), level.to_be_bytes().to_vec());
    }

    fn put_secret(&mut self, name: &str, value: &[u8]) {
        self.batch.put(secret_key(name), value.to_vec());
    }
}

#[cfg(test)]
impl StoreRows for crate::record_rows::MemRows {
    fn all_org_units(&self) -> Result<Vec<OrgUnit>, DbError> {
        Ok(self.org_units.values().cloned().collect())
    }
    fn tree_version(&self) -> Result<u64, DbError> {
        Ok(self.tree_version)
    }
    fn stored_epoch(&self) -> Result<u64, DbError> {
        Ok(self.epoch.0)
    }
    fn epoch_renewed_at(&self) -> Result<i64, DbError> {
        Ok(self.epoch.1)
    }
    fn form_level(&self) -> Result<u64, DbError> {
        Ok(self.form_level)
    }
    fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.secrets.get(name).cloned())
    }
}

#[cfg(test)]
impl StoreWrites for crate::record_rows::MemRows {
    fn put_org_unit(&mut self, unit: &OrgUnit) {
        self.org_units.insert(unit.code.clone(), unit.clone());
    }
    fn set_tree_version(&mut self, version: u64) {
        self.tree_version = version;
    }
    fn set_epoch(&mut self, epoch: u64, renewed_at: i64) {
        self.epoch = (epoch, renewed_at);
    }
    fn set_form_level(&mut self, level: u64) {
        self.form_level = level;
    }
    fn put_secret(&mut self, name: &str, value: &[u8]) {
        self.secrets.insert(name.to_string(), value.to_vec());
    }
}

/// The store's own rows' part of the seams' conformance suite (see `record_rows::conform`):
/// run on `MemRows` and on the keyspace over every store.
#[cfg(test)]
pub(crate) mod conform {
    use super::*;
    use crate::record_rows::conform::RowStore;

    pub(crate) fn suite<S: RowStore>(store: &mut S) {
        {
            let cut = store.cut();
            assert!(cut.all_org_units().unwrap().is_empty(), "an empty store");
            assert_eq!((cut.tree_version().unwrap(), cut.stored_epoch().unwrap(), cut.epoch_renewed_at().unwrap()), (0, 0, 0));
            assert_eq!(cut.form_level().unwrap(), 0, "a store no build finalized");
            assert!(cut.stored_secret("probe").unwrap().is_none());
        }
        let commune = OrgUnit::new("04701", "Xã Một", Some("047".into()), "commune");
        store.commit(&mut |w| {
            w.put_org_unit(&commune);
            w.put_org_unit(&OrgUnit::new("047", "Huyện", Some("04".into()), "district"));
            w.put_org_unit(&OrgUnit::new("04", "Tỉnh", None, "province"));
            w.set_tree_version(1);
            w.set_epoch(u64::MAX - 1, 0);
            w.put_secret("probe", &[0, 1, 255]);
        });
        {
            let cut = store.cut();
            let units = cut.all_org_units().unwrap();
            assert_eq!(units.iter().map(|u| u.code.as_str()).collect::<Vec<_>>(), ["04", "047", "04701"], "by code");
            assert_eq!(units[2], commune, "as written");
            assert_eq!((cut.tree_version().unwrap(), cut.stored_epoch().unwrap(), cut.epoch_renewed_at().unwrap()), (1, u64::MAX - 1, 0));
            assert_eq!(cut.stored_secret("probe").unwrap(), Some(vec![0, 1, 255]));
            assert!(cut.stored_secret("prob").unwrap().is_none());
        }
        let merged = OrgUnit { merged_into: Some("04702".into()), effective: Some("2025-07-01".into()), ..commune.clone() };
        store.commit(&mut |w| {
            w.put_org_unit(&merged);
            w.set_tree_version(2);
            w.set_epoch(7, 1_751_328_000);
            w.set_form_level(1);
        });
        let cut = store.cut();
        assert_eq!(cut.form_level().unwrap(), 1);
        assert_eq!(cut.all_org_units().unwrap().into_iter().find(|u| u.code == "04701"), Some(merged), "a unit rewritten");
        assert_eq!((cut.tree_version().unwrap(), cut.stored_epoch().unwrap(), cut.epoch_renewed_at().unwrap()), (2, 7, 1_751_328_000));
    }
}
