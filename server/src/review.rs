//! Review by district staff: conflicts with provenance, possible duplicates, and approval of a
//! period's figures.
//!
//! - Conflicts are detected on every write (`records.rs` calls [`detect_conflicts`]) and kept in
//!   an index `q/{commune}/{id16}`, so the queue of a district is read without opening
//!   documents. A resolution is an Automerge change made by the server with an actor bound to
//!   the resolver (`k/actor/{username}`), written through the same path as a phone's push, so it
//!   moves the feed (phones get it), the figures and the index, atomically.
//! - Possible duplicates are computed on demand from record metadata (kind, commune, the
//!   person's sex and birth year, the date); pairs marked "not a duplicate" are kept beside
//!   the records (`record_rows.rs`).
//! - Approvals `ap/{unit}/{period}` hold who approved, when, and the figures approved; a later
//!   change to a counter of that unit and period flags the approval (in the write batch).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sync_core::push::{Context, EditError, Merged, Verdict};
use sync_protocol::automerge::{ActorId, AutoCommit};
use sync_protocol::doc::{self, DocError};
use sync_protocol::{Record, RecordId, RecordKind};

use crate::figure_rows::{FigureRows, FigureWrites};
use crate::record_rows::{RecordRows, RecordWrites};
use crate::records::Records;
use crate::db::{corrupt, now_secs, AuditEvent, Db, DbError};
use crate::model::Principal;
use crate::store::{Batch, KvRead};

pub use sync_core::conflicts::{detect_conflicts, duplicate_key, StoredConflict};

/// One competing value as the district sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictValueOut {
    pub value: Value,
    pub user: Option<String>,
    pub device_id: Option<String>,
    /// When the change was made (the device's clock), RFC 3339.
    pub at: String,
}

/// One open conflict (`GET /api/v1/conflicts`).
#[derive(Debug, Clone, Serialize)]
pub struct ConflictEntry {
    /// `{record_id}~{path}`
    pub id: String,
    pub record_id: String,
    pub commune: String,
    pub path: String,
    pub values: Vec<ConflictValueOut>,
}

/// A possible duplicate pair (`GET /api/v1/duplicates`).
#[derive(Debug, Clone, Serialize)]
pub struct DuplicatePair {
    /// `{a}~{b}` with `a < b`
    pub id: String,
    pub kind: RecordKind,
    pub commune: String,
    pub a: Value,
    pub b: Value,
}

pub use crate::figures::Approval;

/// Days between two `YYYY-MM-DD` dates.
fn days_apart(a: &str, b: &str) -> Option<i64> {
    let p = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    Some((p(a)? - p(b)?).num_days().abs())
}

pub const DUPLICATE_WINDOW_DAYS: i64 = 14;

fn forbidden(msg: &str) -> DbError {
    DbError::Forbidden(msg.to_string())
}

#[cfg(test)]
thread_local! {
    /// Runs inside `approve` between reading the figures and writing the approval (tests widen
    /// that window to show nothing can slip into it).
    pub(crate) static AFTER_FIGURES_READ: std::cell::RefCell<Option<Box<dyn Fn()>>> = const { std::cell::RefCell::new(None) };
}

/// An edit the server makes to a record's document (a reviewer's resolution).
type ServerEdit<'a> = Box<dyn FnOnce(&mut AutoCommit) -> Result<(), DocError> + 'a>;

/// Reviewers' work: conflicts, duplicates, approvals: a repository of [`Db`] (`Db::review`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct Review<'a> {
    pub(crate) db: &'a Db,
}

impl Review<'_> {
    /// Checks that `who` may review (see conflicts, duplicates) the records under `unit`.
    fn check_reviewer(&self, who: &Principal, unit: &str) -> Result<(), DbError> {
        let tree = self.db.tree();
        if tree.get(unit).is_none() {
            return Err(DbError::NotFound(format!("unknown org unit `{unit}`")));
        }
        if !who.is_reviewer() {
            return Err(forbidden("only district staff review conflicts, duplicates and approvals"));
        }
        if !who.may_review(&tree, unit) {
            return Err(forbidden("that org unit is outside your scope"));
        }
        Ok(())
    }

    /// The open conflicts of every commune under `unit`, with provenance.
    pub fn conflicts_under(&self, who: &Principal, unit: &str) -> Result<Vec<ConflictEntry>, DbError> {
        self.check_reviewer(who, unit)?;
        let mut out = Vec::new();
        let mut owners: HashMap<String, Option<sync_core::meta::ActorOwner>> = HashMap::new();
        let communes = self.db.tree().record_communes_under(unit);
        for (commune, id, conflicts) in self.db.kv().conflicts_of(&communes)? {
            for c in conflicts {
                let mut values = Vec::new();
                for cv in c.values {
                    if !owners.contains_key(&cv.actor) {
                        owners.insert(cv.actor.clone(), self.db.records().actor_owner(&cv.actor)?);
                    }
                    let owner = owners[&cv.actor].clone();
                    let at = chrono::DateTime::from_timestamp(cv.at, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
                    values.push(ConflictValueOut {
                        value: cv.value,
                        user: owner.as_ref().map(|o| o.username.clone()),
                        device_id: owner.map(|o| o.device_id),
                        at,
                    });
                }
                out.push(ConflictEntry { id: format!("{id}~{}", c.path), record_id: id.to_string(), commune: commune.clone(), path: c.path, values });
            }
        }
        Ok(out)
    }

    /// Number of records with open conflicts under `unit`.
    pub fn open_conflicts(&self, unit: &str) -> Result<usize, DbError> {
        Self::open_conflicts_in(self.db.kv(), &self.db.tree(), unit)
    }

    fn open_conflicts_in(r: &dyn KvRead, tree: &crate::model::OrgTree, unit: &str) -> Result<usize, DbError> {
        r.conflicted_records(&tree.record_communes_under(unit))
    }

    /// The Automerge actor the server uses for changes made on `username`'s behalf.
    fn actor_for(&self, username: &str) -> Result<ActorId, DbError> {
        let bytes = self.db.secret(&format!("actor/{username}"), || ActorId::random().to_bytes().to_vec())?;
        Ok(ActorId::from(bytes))
    }

    /// Applies each edit to its record as `who` (through the server's actor for them), checks
    /// the results like a pushed change and writes them, with `audit`, in one transaction.
    fn server_change(
        &self,
        who: &Principal,
        edits: Vec<(RecordId, ServerEdit<'_>)>,
        audit: AuditEvent,
    ) -> Result<(), DbError> {
        // Made before the transaction: creating it is a write of its own.
        let actor = self.actor_for(&who.username)?;
        let tx = self.db.kv().begin_write()?;
        let tree = self.db.tree_in(&*tx)?;
        let on_behalf = Principal { device_id: "server".into(), ..who.clone() };
        let ctx = Context { who: &on_behalf, tree: &tree, now: now_secs(), own_actor: None, relay_open: false, inflation: None, report_rows: self.db.kv().keeps_report_rows() };
        let mut writes = Vec::new();
        for (id, edit) in edits {
            let stored = tx.stored_record(&id)?.ok_or_else(|| DbError::NotFound(format!("no record {id}")))?;
            if !who.may_access_records_of(&tree, &stored.meta.commune) {
                return Err(forbidden("that record is outside your scope"));
            }
            let merged = match Merged::edited(id, stored, actor.clone(), edit) {
                Ok(m) => m,
                Err(EditError::Corrupt(e)) => return Err(corrupt("record", e)),
                Err(EditError::Invalid(e)) => return Err(DbError::Invalid(e)),
            };
            let verdict = match merged {
                Ok(m) => Records::decide(&*tx, ctx, m)?,
                Err(v) => v,
            };
            match verdict {
                Verdict::Write(p) => writes.push(*p),
                Verdict::Unchanged => {}
                Verdict::Refuse(sync_protocol::wire::PushOutcome::Rejected { reason }) => return Err(DbError::Invalid(reason)),
                Verdict::Refuse(_) => return Err(DbError::Invalid("the change could not be applied".into())),
            }
        }
        self.db.records().write_prepared(tx, &on_behalf, writes, Some(audit))?;
        Ok(())
    }

    /// Resolves conflict `conflict_id` (`{record_id}~{path}`) with `value` (one of the
    /// competing values or a new one, validated against the schema).
    pub fn resolve_conflict(&self, who: &Principal, conflict_id: &str, value: &Value) -> Result<(), DbError> {
        let (rid, path) = conflict_id.split_once('~').ok_or_else(|| DbError::NotFound("no such conflict".into()))?;
        let id: RecordId = rid.parse().map_err(|_| DbError::NotFound("no such conflict".into()))?;
        let meta = self.db.records().get_meta(&id)?.ok_or_else(|| DbError::NotFound("no such conflict".into()))?;
        self.check_reviewer(who, &meta.commune)?;
        let open = self.db.kv().open_conflicts(&meta.commune, &id)?;
        if !open.iter().any(|c| c.path == path) {
            return Err(DbError::NotFound("no such open conflict (it may have been resolved already)".into()));
        }
        let path = path.to_string();
        let value = value.clone();
        let ev = AuditEvent { user: who.username.clone(), device_id: Some(who.device_id.clone()), action: "conflict_resolve", target: format!("{id} {path}") };
        self.server_change(who, vec![(id, Box::new(move |d: &mut AutoCommit| doc::resolve_path(d, &path, &value)))], ev)
    }

    /// Possible duplicate pairs under `unit`: same kind and commune, same sex and birth year of
    /// the person, dates within 14 days, not marked "not a duplicate".
    pub fn duplicates_under(&self, who: &Principal, unit: &str) -> Result<Vec<DuplicatePair>, DbError> {
        self.check_reviewer(who, unit)?;
        let tree = self.db.tree();
        let mut out = Vec::new();
        // Compared within each commune of today's map: the records of the communes merged into
        // one are the same place's records.
        for commune in tree.communes_under(unit) {
            let mut candidates: Vec<(RecordId, RecordKind, (String, i64), String)> = Vec::new();
            for made_in in tree.record_communes_under(&commune) {
                for id in self.db.records().record_ids_of(&made_in)? {
                    let Some(m) = self.db.records().get_meta(&id)? else { continue };
                    if let (false, Some(dup), Some(date)) = (m.deleted, m.dup.clone(), m.date.clone()) {
                        candidates.push((id, m.kind, dup, date));
                    }
                }
            }
            candidates.sort_by(|x, y| x.3.cmp(&y.3));
            for i in 0..candidates.len() {
                for j in i + 1..candidates.len() {
                    let (a, b) = (&candidates[i], &candidates[j]);
                    match days_apart(&a.3, &b.3) {
                        Some(d) if d <= DUPLICATE_WINDOW_DAYS => {}
                        _ => break, // sorted by date: later ones are further away
                    }
                    if a.1 != b.1 || a.2 != b.2 {
                        continue;
                    }
                    let (x, y) = if a.0 < b.0 { (a.0, b.0) } else { (b.0, a.0) };
                    let pair = format!("{x}~{y}");
                    if self.db.kv().not_duplicates(&x, &y)? {
                        continue;
                    }
                    let (Some(va), Some(vb)) = (self.db.records().record_view(&x)?, self.db.records().record_view(&y)?) else { continue };
                    out.push(DuplicatePair { id: pair, kind: a.1, commune: commune.clone(), a: va, b: vb });
                }
            }
        }
        Ok(out)
    }

    fn parse_pair(&self, who: &Principal, pair_id: &str) -> Result<(RecordId, RecordId), DbError> {
        let nf = || DbError::NotFound("no such pair".into());
        let (a, b) = pair_id.split_once('~').ok_or_else(nf)?;
        let (a, b): (RecordId, RecordId) = match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) if a < b => (a, b),
            _ => return Err(nf()),
        };
        // Scope first: outside it, the caller learns nothing about either record.
        let ma = self.db.records().get_meta(&a)?.ok_or_else(nf)?;
        self.check_reviewer(who, &ma.commune)?;
        let mb = self.db.records().get_meta(&b)?.ok_or_else(nf)?;
        let tree = self.db.tree();
        let place = |commune: &str| tree.current(commune).map(|u| u.code.clone());
        if place(&ma.commune) != place(&mb.commune) || ma.kind != mb.kind {
            return Err(DbError::Invalid("the two records are not of the same kind and commune".into()));
        }
        Ok((a, b))
    }

    /// Marks a pair as not a duplicate: it is not flagged again.
    pub fn mark_not_duplicate(&self, who: &Principal, pair_id: &str) -> Result<(), DbError> {
        let (a, b) = self.parse_pair(who, pair_id)?;
        let mut batch = Batch::default();
        self.db.stage(&mut batch).mark_not_duplicates(&a, &b, &who.username, now_secs());
        self.db.audit_log().commit_audited(batch, Some(AuditEvent { user: who.username.clone(), device_id: Some(who.device_id.clone()), action: "duplicate_dismiss", target: format!("{a}~{b}") }))
    }

    /// Merges a duplicate pair: `keep` stays and gains the other's list entries (services or
    /// support it does not already have); the other is deleted with reason "duplicate of …".
    pub fn merge_duplicates(&self, who: &Principal, pair_id: &str, keep: RecordId) -> Result<(), DbError> {
        let (a, b) = self.parse_pair(who, pair_id)?;
        let other = match keep {
            k if k == a => b,
            k if k == b => a,
            _ => return Err(DbError::Invalid("`keep` must be one of the two records of the pair".into())),
        };
        let kept_view = self.db.records().record_view(&keep)?.ok_or_else(|| DbError::NotFound("no such record".into()))?;
        let other_view = self.db.records().record_view(&other)?.ok_or_else(|| DbError::NotFound("no such record".into()))?;
        let (kept, gone) = (Record::parse(&kept_view), Record::parse(&other_view));
        if kept.as_ref().is_none_or(Record::deleted) || gone.as_ref().is_none_or(Record::deleted) {
            return Err(DbError::Conflict("one of the two records is already deleted".into()));
        }
        let list = kept.as_ref().and_then(Record::support_list).ok_or_else(|| DbError::Invalid("news items are not merged as duplicates".into()))?;
        let have = kept_view[list].as_array().cloned().unwrap_or_default();
        let extra: Vec<Value> = other_view[list].as_array().cloned().unwrap_or_default().into_iter().filter(|e| !have.contains(e)).collect();
        let reason = format!("duplicate of {keep}");
        let ev = AuditEvent { user: who.username.clone(), device_id: Some(who.device_id.clone()), action: "duplicate_merge", target: format!("{keep} <- {other}") };
        self.server_change(
            who,
            vec![
                (keep, Box::new(move |d: &mut AutoCommit| extra.iter().try_for_each(|e| doc::append(d, list, e)))),
                (other, Box::new(move |d: &mut AutoCommit| doc::delete_record(d, &reason))),
            ],
            ev,
        )
    }

    /// Approves `unit`'s figures for `period`: refused while a conflict is open under it.
    pub fn approve(&self, who: &Principal, unit: &str, period: indicators::Period) -> Result<Approval, DbError> {
        self.check_reviewer(who, unit)?;
        // In one write transaction from the figures read to the write: a change either lands
        // before (and is in the approved figures) or after (and flags the approval), never in
        // between. Everything is read through the transaction: the tree, the review index and
        // the counters as the store holds them under the lock, not through the pool or a cache
        // (a replica's write lock held while waiting for a pool connection stops every replica).
        let tx = self.db.kv().begin_write()?;
        let open = Self::open_conflicts_in(&*tx, &*self.db.tree_in(&*tx)?, unit)?;
        if open > 0 {
            return Err(DbError::Conflict(format!("{open} record(s) with open conflicts under {unit}: resolve them before approving")));
        }
        let figures = serde_json::to_value(self.db.figures().indicators_in(&*tx, unit, period)?).expect("report serialises");
        #[cfg(test)]
        AFTER_FIGURES_READ.with(|h| h.borrow().as_ref().map(|h| h()));
        let approval = Approval {
            org_unit: unit.to_string(),
            period: period.to_string(),
            approved_by: who.username.clone(),
            approved_at: now_secs(),
            figures,
            changes_after: 0,
            last_change_at: None,
        };
        let mut batch = Batch::default();
        self.db.stage(&mut batch).put_approval(&approval);
        let ev = AuditEvent { user: who.username.clone(), device_id: Some(who.device_id.clone()), action: "period_approve", target: format!("{unit}/{period}") };
        self.db.audit_log().audit_into(&*tx, &mut self.db.stage(&mut batch), Some(ev))?;
        tx.commit(batch)?;
        Ok(approval)
    }

    /// Approvals of `unit` and every unit under it.
    pub fn approvals_under(&self, unit: &str) -> Result<Vec<Approval>, DbError> {
        let tree = self.db.tree();
        Ok(self.db.kv().all_approvals()?.into_iter().filter(|a| tree.is_within(&a.org_unit, unit)).collect())
    }
}
