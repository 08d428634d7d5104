//! Changes to the org tree: adding, moving and renaming units, and merging one into another
//! (the 2025 reorganisation). A change that alters which units a commune's records count for
//! moves their figures in the same write transaction as the tree (`figures::reaggregate`).

use std::sync::Arc;

use serde::Serialize;

use sync_core::plan::CounterDeltas;

use crate::figures::Figures;
use crate::account_rows::AccountRows;
use crate::record_rows::RecordRows;
use crate::db::{AuditEvent, Db, DbError};
use crate::store_rows::{StoreRows, StoreWrites};
use crate::figures::NewSums;
use crate::model::{OrgTree, OrgUnit};
use crate::store::{Batch, KvRead, WriteTx};

/// What a merge did, for the one who asked.
#[derive(Debug, Clone, Serialize)]
pub struct Merged {
    pub unit: OrgUnit,
    /// The units that were the merged unit's children and are now its successor's.
    pub children_moved: Vec<String>,
    /// The indicators whose targets passed to the successor (it had none of its own).
    pub targets_carried: Vec<String>,
    /// Accounts still assigned to the merged unit: an admin moves them to the successor.
    pub users_left: Vec<String>,
}

/// Whether `unit` may be written as it is (code, name, level, an existing parent, no cycle).
fn check_org_unit(tree: &OrgTree, unit: &OrgUnit) -> Result<(), DbError> {
    if !sync_protocol::schema::is_org_unit_code(&unit.code) {
        return Err(DbError::Invalid(format!("`{}` is not an org-unit code (2 to 12 digits)", unit.code)));
    }
    let name = unit.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(DbError::Invalid("org-unit name must be 1 to 200 characters".into()));
    }
    if unit.level.is_empty() || unit.level.len() > 40 {
        return Err(DbError::Invalid("org-unit level must be 1 to 40 characters".into()));
    }
    if let Some(parent) = &unit.parent {
        let Some(p) = tree.get(parent) else {
            return Err(DbError::Invalid(format!("unknown parent org unit `{parent}`")));
        };
        if let (Some(s), false) = (&p.merged_into, tree.get(&unit.code).is_some_and(|u| !u.is_current())) {
            return Err(DbError::Invalid(format!("`{parent}` was merged into `{s}`: units go under the current map")));
        }
        if tree.is_within(parent, &unit.code) {
            return Err(DbError::Invalid(format!("moving `{}` under `{parent}` would make a cycle", unit.code)));
        }
    }
    Ok(())
}

/// Changes to the org tree: a repository of [`Db`] (`Db::org_units`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct OrgUnits<'a> {
    pub(crate) db: &'a Db,
}

impl OrgUnits<'_> {
    /// Adds an org unit, or updates its name/parent/level (moving it in the tree). A move
    /// re-aggregates the figures of the records under the unit in the same atomic write.
    pub fn put_org_unit(&self, unit: OrgUnit, audit: Option<AuditEvent>) -> Result<(), DbError> {
        // One write transaction: no record is written while the counters move, and a push
        // computes its figures on the tree it finds in its own transaction.
        let tx = self.db.kv().begin_write()?;
        let old = self.db.tree_in(&*tx)?;
        check_org_unit(&old, &unit)?;
        let mut unit = OrgUnit { name: unit.name.trim().to_string(), ..unit };
        let moved = match old.get(&unit.code) {
            Some(was) => {
                if let Some(successor) = &was.merged_into {
                    if unit.parent != was.parent || unit.level != was.level {
                        return Err(DbError::Invalid(format!(
                            "`{}` was merged into `{successor}`: it stays in the history as it was (only its name may change)",
                            unit.code
                        )));
                    }
                }
                if was.level == crate::model::COMMUNE_LEVEL && unit.level != was.level && !tx.record_ids_of(std::slice::from_ref(&unit.code))?.is_empty() {
                    return Err(DbError::Invalid(format!("`{}` has records: it stays a commune", unit.code)));
                }
                unit.merged_into = was.merged_into.clone();
                unit.effective = was.effective.clone();
                was.parent != unit.parent
            }
            None => false,
        };
        let mut batch = Batch::default();
        self.db.stage(&mut batch).put_org_unit(&unit);
        let communes = if moved { old.record_communes_under(&unit.code) } else { Vec::new() };
        let new = Arc::new(old.with(std::iter::once(unit)));
        self.commit_tree_change(tx, batch, &old, new, &communes, audit)
    }

    /// Merges org unit `code` into `into` from the date `effective` on: `code` stays in the
    /// history, marked `merged_into`; its children pass to `into`; its records count for
    /// `into` from now on, for every period (reports are made on the current map); its
    /// targets carry over where `into` has none of its own. The figures move in the same
    /// atomic write as the tree.
    pub fn merge_org_unit(
        &self,
        code: &str,
        into: &str,
        effective: chrono::NaiveDate,
        today: chrono::NaiveDate,
        audit: Option<AuditEvent>,
    ) -> Result<Merged, DbError> {
        let tx = self.db.kv().begin_write()?;
        let old = self.db.tree_in(&*tx)?;
        let unit = old.get(code).ok_or_else(|| DbError::NotFound(format!("unknown org unit `{code}`")))?;
        let successor = old.get(into).ok_or_else(|| DbError::NotFound(format!("unknown org unit `{into}`")))?;
        if let (Some(s), Some(d)) = (&unit.merged_into, &unit.effective) {
            return Err(DbError::Conflict(format!("`{code}` was already merged into `{s}` on {d}")));
        }
        if let Some(current) = old.current(into).filter(|_| !successor.is_current()) {
            return Err(DbError::Invalid(format!("`{into}` was itself merged into `{}`: merge into that one", current.code)));
        }
        if code == into || old.is_within(into, code) {
            return Err(DbError::Invalid(format!("`{code}` cannot be merged into itself or a unit under it")));
        }
        let fits = if unit.level == crate::model::COMMUNE_LEVEL {
            successor.level == unit.level
        } else {
            successor.level == unit.level || old.is_within(code, into)
        };
        if !fits {
            return Err(DbError::Invalid(format!(
                "a {} cannot be merged into a {}: merge a unit into one of its own level (or a district into its province)",
                unit.level, successor.level
            )));
        }
        if effective > today {
            return Err(DbError::Invalid(format!("the merge takes effect on {effective}, after today ({today}): record it on or after that day")));
        }
        let mut batch = Batch::default();
        let merged = OrgUnit { merged_into: Some(into.to_string()), effective: Some(effective.to_string()), ..unit.clone() };
        self.db.stage(&mut batch).put_org_unit(&merged);
        let mut changed = vec![merged.clone()];
        for child in old.children(code) {
            let mut c = old.get(child).expect("a child is in the tree").clone();
            c.parent = Some(into.to_string());
            self.db.stage(&mut batch).put_org_unit(&c);
            changed.push(c);
        }
        let targets_carried = crate::figures::carry_targets_in(&*tx, &mut self.db.stage(&mut batch), code, into)?;
        let users_left = tx.users()?.into_iter().filter(|u| u.org_unit == code).map(|u| u.username).collect();
        let communes = old.record_communes_under(code);
        let new = Arc::new(old.with(changed));
        self.commit_tree_change(tx, batch, &old, new, &communes, audit)?;
        Ok(Merged { unit: merged, children_moved: old.children(code).to_vec(), targets_carried, users_left })
    }

    /// Writes a tree change in `tx` with the figures of `communes`' records moved from their
    /// chains in `old` to those in `new`, flags the approvals that changes, bumps the tree's
    /// version and installs `new` as the cached tree.
    fn commit_tree_change(
        &self,
        tx: Box<dyn WriteTx + '_>,
        mut batch: Batch,
        old: &OrgTree,
        new: Arc<OrgTree>,
        communes: &[String],
        audit: Option<AuditEvent>,
    ) -> Result<(), DbError> {
        let sums = self.reaggregate(&*tx, old, &new, communes, &mut batch)?;
        let version = tx.tree_version()? + 1;
        self.db.stage(&mut batch).set_tree_version(version);
        self.db.audit_log().audit_into(&*tx, &mut self.db.stage(&mut batch), audit)?;
        let mut sums = Some(sums);
        tx.commit_then(batch, &mut || {
            self.db.cache_tree(version, new.clone());
            if let Some(s) = sums.take() {
                self.db.figures().cache_counters(s);
            }
        })?;
        Ok(())
    }

    /// Whether `unit` may be written as it is (code, name, level, an existing parent, no cycle).
    pub fn check_org_unit(&self, unit: &OrgUnit) -> Result<(), DbError> {
        check_org_unit(&self.db.tree(), unit)
    }

    /// Moves the figures of every record of `communes` from its chain in `old` to its chain in
    /// `new` (a unit moved or merged), into `batch`, and flags the approvals that changes. Runs
    /// in write transaction `tx`; reads only record metadata (each holds its contribution).
    pub(crate) fn reaggregate(&self, tx: &dyn KvRead, old: &OrgTree, new: &OrgTree, communes: &[String], batch: &mut Batch) -> Result<NewSums, DbError> {
        let mut deltas = CounterDeltas::default();
        for c in communes {
            // A record of `c` has `c` as its commune: its two chains are computed once per commune.
            let (was, now) = (old.chain(c), new.chain(c));
            if was == now {
                continue;
            }
            // The commune's metadata in batched reads, not one round trip per record (a
            // province merge moves ~10⁵ records while every replica's writes wait).
            let ids = tx.record_ids_of(std::slice::from_ref(c))?;
            let metas = ids.chunks(1000).map(|chunk| tx.metas_whole(chunk)).collect::<Result<Vec<_>, _>>()?;
            for meta in metas.into_iter().flatten() {
                let Some(contribution) = meta.and_then(|m| m.contribution) else { continue };
                deltas.record_change(&|x: &str| if x == c { was.clone() } else { old.chain(x) }, Some(&contribution), None);
                deltas.record_change(&|x: &str| if x == c { now.clone() } else { new.chain(x) }, None, Some(&contribution));
            }
        }
        let mut w = self.db.stage(batch);
        Figures::flag_approvals(tx, &mut w, deltas.touched())?;
        self.db.figures().add_counters(tx, &deltas, &mut w)
    }
}
