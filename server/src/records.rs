//! Records and the sync exchange, driving the sans-IO core (`sync-core`) over the store.
//!
//! Write path (one sync request): every pushed record is merged and checked by the core
//! *outside* any transaction (the CPU-heavy Automerge work, each inside [`contained`]). Then, in
//! one write transaction, each prepared record is checked to still be based on the stored
//! version (else it is prepared again on what is stored now), the core turns the request's
//! writes into one [`CommitPlan`], and [`Records::commit_plan`] puts it into one batch: new feed
//! sequence numbers, documents, metadata, counters, the review index, actor claims, approval
//! flags, the audit entry. The transaction returns once that batch is durable; only then is
//! the phone answered: acknowledged means durable.
//!
//! Read path: in one consistent read of the store, the feed of each commune in the caller's
//! scope is read from the cursor up to the last sequence number, and the core's
//! [`PagePlanner`] asks for the metadata and documents it needs to fill the page the phone
//! asked for. Nothing is served before it is durable.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use sync_core::exchange::Exchange;
use sync_core::plan::CommitPlan;
use sync_core::pull::{page_entries, Answer, Cursor, Need, Page, PagePlanner, Step, WriteHeads, Written, PAGE_RECORDS};
use sync_core::push::{reject, Context, Merged, Prepared, Verdict};
use sync_protocol::automerge::AutoCommit;
use sync_protocol::doc;
use sync_protocol::wire::{Hash, PushDoc, PushOutcome, PushResult, SyncRequest, SyncResponse, Uploaded};
use sync_protocol::RecordId;

use crate::figures::Figures;
use crate::db::{corrupt, now_secs, AuditEvent, Db, DbError};
use crate::record_rows::{RecordRow, RecordRows, RecordWrites};
use crate::model::{OrgTree, Principal};
use crate::store::{Batch, KvRead, WriteTx};

pub use sync_core::meta::{ActorOwner, RecordMeta};
pub use sync_core::push::{MAX_CHANGES_PER_PUSH, MAX_RECORD_BYTES};

/// Most feed entries counted for `remaining` per commune (a progress figure, not a promise).
const COUNT_CAP: usize = 100_000;

fn core_corrupt(e: sync_core::Corrupt) -> DbError {
    corrupt("record", e)
}

/// Runs the checks and Automerge work on one pushed record so that a panic in them (a bug met
/// by hostile or unusual input) refuses that record only: the request's other records, every
/// other request and every later sync go on. Nothing is written while this work runs.
fn contained(id: &RecordId, work: impl FnOnce() -> Result<Verdict, DbError>) -> Result<Verdict, DbError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(verdict) => verdict,
        Err(_) => {
            tracing::error!(record = %id, "merging a pushed record panicked; the record is refused");
            Ok(reject("the server could not merge this record (an internal error, reported); it stays on the phone".into()))
        }
    }
}

#[cfg(test)]
thread_local! {
    /// The name of a point where the write path panics on this thread (fault injection).
    pub(crate) static PANIC_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// A fault-injection point (tests only): panics if a test named this point.
fn fault_point(_name: &'static str) {
    #[cfg(test)]
    if PANIC_AT.with(|p| p.get()) == Some(_name) {
        panic!("injected panic at {_name}");
    }
}

/// Most records one request may push or ask whole: a phone's page holds far fewer, and each
/// costs the server a merge (or a load) whatever its size.
pub const MAX_DOCS_PER_REQUEST: usize = 5_000;

/// Refuses a request that asks more work than any phone's page needs: too many records, or the
/// same record twice.
pub fn check_request(req: &SyncRequest) -> Result<(), String> {
    if req.push.len() > MAX_DOCS_PER_REQUEST || req.want_full.len() > MAX_DOCS_PER_REQUEST {
        return Err(format!("at most {MAX_DOCS_PER_REQUEST} records may be pushed, or asked whole, in one request"));
    }
    let mut seen = HashSet::with_capacity(req.push.len());
    if !req.push.iter().all(|p| seen.insert(p.id)) {
        return Err("the same record is pushed twice in one request".into());
    }
    Ok(())
}

/// For reads that go on past a damaged record (the pull): the record is left out, and said.
fn or_skip<T>(r: Result<Option<T>, DbError>) -> Option<T> {
    r.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a damaged record was left out of an answer: run `gesync-server check`");
        None
    })
}

/// Records, their documents and the change feed: a repository of [`Db`] (`Db::records`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct Records<'a> {
    pub(crate) db: &'a Db,
}

impl Records<'_> {
    /// The last feed sequence number.
    pub fn feed_seq(&self) -> Result<u64, DbError> {
        self.db.kv().feed_high()
    }

    /// Whether some record has no reporting row on a store that keeps them (the rows were not
    /// kept when it was written, or it came from a store that does not keep them): `migrate`
    /// and `restore` then write them all ([`Db::rebuild_figures`]).
    pub fn report_rows_missing(&self) -> Result<bool, DbError> {
        if !self.db.kv().keeps_report_rows() {
            return Ok(false);
        }
        let (records, report_rows) = self.db.kv().records_and_report_rows()?;
        Ok(records != report_rows)
    }

    pub fn get_meta(&self, id: &RecordId) -> Result<Option<RecordMeta>, DbError> {
        self.db.kv().meta(id)
    }

    /// Forgets every record's contribution to the figures, leaving the counters as they are:
    /// what a changed formula looks like to a rebuild (tests of the rebuild).
    #[cfg(test)]
    pub(crate) fn forget_contributions(&self) {
        let tx = self.db.kv().begin_write().unwrap();
        let mut batch = Batch::default();
        let mut rows = self.db.stage(&mut batch);
        tx.for_each_meta(1_000, &mut |row| {
            let crate::record_rows::MetaRow::Record { id, meta } = row else { panic!("a bad key") };
            rows.put_meta(&id, &RecordMeta { contribution: None, ..meta? });
            Ok(())
        })
        .unwrap();
        tx.commit(batch).unwrap();
    }

    /// Loads a record's document.
    pub fn load_doc(&self, id: &RecordId) -> Result<Option<AutoCommit>, DbError> {
        match self.db.kv().document(id)? {
            None => Ok(None),
            Some(bytes) => AutoCommit::load(&bytes).map(Some).map_err(|e| corrupt("record document", e)),
        }
    }

    /// The JSON view of a record with its id and conflicts.
    pub fn record_view(&self, id: &RecordId) -> Result<Option<Value>, DbError> {
        let Some(mut doc) = self.load_doc(id)? else { return Ok(None) };
        let mut view = doc::view(&doc).map_err(|e| corrupt("record document", e))?;
        let conflicts = doc::conflicts(&mut doc).map_err(|e| corrupt("record document", e))?;
        view["id"] = Value::String(id.to_string());
        view["conflicts"] = serde_json::to_value(conflicts).expect("conflicts serialise");
        Ok(Some(view))
    }

    /// The user and device an Automerge actor belongs to.
    pub fn actor_owner(&self, actor: &str) -> Result<Option<ActorOwner>, DbError> {
        Ok(self.db.kv().owners(&[actor.to_string()])?.remove(actor))
    }

    /// Merges and checks the pushed records against what `r` holds, with a few batched reads:
    /// the stored versions, then (after the merges) the owners of the new changes' actors.
    fn prepare_all(&self, r: &dyn KvRead, ctx: Context<'_>, pushes: &[PushDoc], abandoned: &AtomicBool) -> Result<Vec<Verdict>, DbError> {
        let ids: Vec<RecordId> = pushes.iter().map(|p| p.id).collect();
        let stored = r.stored(&ids)?;
        let mut merged: Vec<Result<Merged, Verdict>> = Vec::with_capacity(pushes.len());
        for (p, s) in pushes.iter().zip(stored) {
            if abandoned.load(Ordering::Relaxed) {
                return Err(DbError::Cancelled);
            }
            let mut m = None;
            let v = contained(&p.id, || {
                fault_point("prepare");
                match sync_core::push::merge(ctx, p, s).map_err(core_corrupt)? {
                    Ok(done) => {
                        m = Some(done);
                        Ok(Verdict::Unchanged)
                    }
                    Err(v) => Ok(v),
                }
            })?;
            merged.push(m.ok_or(v));
        }
        let mut actors: Vec<String> = merged.iter().filter_map(|m| m.as_ref().ok()).flat_map(|m| m.actors().iter().cloned()).collect();
        actors.sort();
        actors.dedup();
        let owners = r.owners(&actors)?;
        merged
            .into_iter()
            .zip(pushes)
            .map(|(m, p)| match m {
                Ok(m) => contained(&p.id, || sync_core::push::decide(ctx, m, &owners).map_err(core_corrupt)),
                Err(v) => Ok(v),
            })
            .collect()
    }

    /// Merges and checks one pushed record against what `r` holds: the core's two steps, with
    /// the owners of the new changes' actors looked up in between.
    fn prepare(&self, r: &dyn KvRead, ctx: Context<'_>, push: &PushDoc) -> Result<Verdict, DbError> {
        fault_point("prepare");
        let stored = r.stored_record(&push.id)?;
        match sync_core::push::merge(ctx, push, stored).map_err(core_corrupt)? {
            Ok(merged) => Self::decide(r, ctx, merged),
            Err(verdict) => Ok(verdict),
        }
    }

    /// The core's verdict on a merged record, given the owners of its new actors as `r` holds
    /// them.
    pub(crate) fn decide(r: &dyn KvRead, ctx: Context<'_>, merged: Merged) -> Result<Verdict, DbError> {
        let owners = r.owners(merged.actors())?;
        sync_core::push::decide(ctx, merged, &owners).map_err(core_corrupt)
    }

    /// Handles one sync request for `who`: pushes first (durably), then the pull. The caller
    /// has checked the request's size ([`check_request`]).
    pub fn sync(&self, who: &Principal, req: &SyncRequest) -> Result<SyncResponse, DbError> {
        self.sync_unless(who, req, &AtomicBool::new(false))
    }

    /// [`Records::sync`] that stops, writing nothing, once `abandoned` is set (the client went away):
    /// checked between the records it merges and the records it reads, never inside a write.
    pub fn sync_unless(&self, who: &Principal, req: &SyncRequest, abandoned: &AtomicBool) -> Result<SyncResponse, DbError> {
        let tree = self.db.current_tree()?;
        let ex = Exchange::new(who, &tree, req);
        let own_actor = ex.own_actor();
        let mut written = Written::new();
        let mut results = self.push(who, &tree, own_actor.as_deref(), &req.push, abandoned, &mut written)?;
        let mut uploaded = None;
        let mut whole = None;
        if let Some(part) = &req.push_part {
            let (have, complete) = self.db.uploads().receive_part(who, part, now_secs())?;
            uploaded = Some(Uploaded { id: part.id, have });
            if let Some(doc) = complete {
                results.extend(self.push(who, &tree, own_actor.as_deref(), std::slice::from_ref(&doc), abandoned, &mut written)?);
                self.db.uploads().drop_upload(who)?;
                whole = Some(doc);
            }
        }
        let accepted = ex.accepted(whole.as_ref(), &results, &written);
        let (page, known, epoch) = self.pull(&ex, accepted, written, &req.want_full)?;
        let remaining = if req.count { Some(self.count_feed(ex.communes(), page.next, page.high)?) } else { None };
        Ok(ex.reply(results, page, known, epoch, remaining, uploaded))
    }

    /// Feed entries of `communes` in `(after, high]`: the records a phone at `after` still has
    /// to pull (counted up to a cap per commune).
    fn count_feed(&self, communes: &[String], after: u64, high: u64) -> Result<u64, DbError> {
        self.db.kv().feed_count(communes, after, high, COUNT_CAP)
    }

    /// Merges, checks and commits `pushes`; adds what it wrote to `written` (feed position and
    /// stored heads).
    fn push(&self, who: &Principal, tree: &OrgTree, own_actor: Option<&str>, pushes: &[PushDoc], abandoned: &AtomicBool, written: &mut Written) -> Result<Vec<PushResult>, DbError> {
        if pushes.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_secs();
        let inflation = std::cell::Cell::new(sync_protocol::inflate::MAX_INFLATED_PER_REQUEST);
        let ctx = Context { who, tree, now, own_actor, relay_open: self.db.relay_open(now)?, inflation: Some(&inflation), report_rows: self.db.kv().keeps_report_rows() };
        let verdicts = self.prepare_all(self.db.kv(), ctx, pushes, abandoned)?;
        let mut outcomes = Vec::with_capacity(pushes.len());
        if verdicts.iter().any(|v| matches!(v, Verdict::Write(_))) {
            // A record written meanwhile is merged again under the lock (tried: letting the
            // lock go for it and queueing again made a rush of concurrent edits slower on
            // PostgreSQL, every lost round costing a whole queue wait).
            let tx = self.db.kv().begin_write()?;
            let ids: Vec<RecordId> = pushes.iter().map(|p| p.id).collect();
            let now_stored = tx.metas_whole(&ids)?;
            let mut writes: Vec<Prepared> = Vec::new();
            for ((push, verdict), stored) in pushes.iter().zip(verdicts).zip(now_stored) {
                let verdict = match verdict {
                    // Someone else wrote this record since we prepared it: merge again onto
                    // what is stored now.
                    Verdict::Write(p) if stored.map(|m| m.seq) != p.base_seq => contained(&push.id, || self.prepare(&*tx, ctx, push))?,
                    v => v,
                };
                match verdict {
                    Verdict::Unchanged => outcomes.push(PushOutcome::Accepted),
                    Verdict::Refuse(o) => outcomes.push(o),
                    Verdict::Write(p) => {
                        writes.push(*p);
                        outcomes.push(PushOutcome::Accepted);
                    }
                }
            }
            let heads = WriteHeads::of(&writes);
            written.extend(heads.at(self.write_prepared(tx, who, writes, None)?));
        } else {
            outcomes.extend(verdicts.into_iter().map(|v| match v {
                Verdict::Refuse(o) => o,
                _ => PushOutcome::Accepted,
            }));
        }
        // Acknowledged means durable: this request's writes are, and a retried push found
        // unchanged may have been written by another request still waiting for the disk.
        if outcomes.contains(&PushOutcome::Accepted) {
            self.db.kv().wait_durable()?;
        }
        Ok(pushes.iter().zip(outcomes).map(|(p, outcome)| PushResult { id: p.id, outcome }).collect())
    }

    /// Commits prepared records in write transaction `tx` (durable on return), with the tree
    /// the transaction reads: a move or merge of units changes the tree only in a transaction
    /// of its own, together with the counters it moves. Returns the feed position each record
    /// was given.
    pub(crate) fn write_prepared(&self, tx: Box<dyn WriteTx + '_>, who: &Principal, writes: Vec<Prepared>, audit: Option<AuditEvent>) -> Result<Vec<(RecordId, u64)>, DbError> {
        if writes.is_empty() && audit.is_none() {
            return Ok(Vec::new());
        }
        let tree = self.db.tree_in(&*tx)?;
        let plan = CommitPlan::of(who, &tree, writes, audit);
        self.commit_plan(tx, plan)
    }

    /// Puts a [`CommitPlan`] into one batch as write transaction `tx` sees the store, and
    /// commits it: each record leaves its old feed position for the next sequence number, its
    /// document, metadata and review-index entry are written, the counters move by the plan's
    /// deltas, the approvals they touch are flagged, new actors are claimed, the audit entry is
    /// appended. Refuses a plan made on a stored version that is no longer the stored one.
    /// Returns the feed position each record was given, in the plan's order.
    pub(crate) fn commit_plan(&self, tx: Box<dyn WriteTx + '_>, plan: CommitPlan) -> Result<Vec<(RecordId, u64)>, DbError> {
        let mut seq = tx.feed_high()?;
        let mut positions = Vec::with_capacity(plan.records.len());
        let mut batch = Batch::default();
        let mut rows = self.db.stage(&mut batch);
        let ids: Vec<RecordId> = plan.records.iter().map(|w| w.id).collect();
        for (w, stored) in plan.records.iter().zip(tx.metas_whole(&ids)?) {
            if stored.map(|m| m.seq) != w.base_seq {
                return Err(DbError::Conflict(format!("record {} changed since its write was planned", w.id)));
            }
        }
        for mut w in plan.records {
            seq += 1;
            positions.push((w.id, seq));
            w.meta.stamp(seq);
            rows.put_record(RecordRow { id: w.id, commune: &w.meta.commune, seq, leaves: w.base_seq, doc: &w.doc, meta: &w.meta, conflicts: &w.conflicts, facts: w.facts.as_ref() });
        }
        for (actor, owner) in &plan.actor_claims {
            rows.claim_actor(actor, owner);
        }
        rows.set_feed_high(seq);
        Figures::flag_approvals(&*tx, &mut rows, plan.counters.touched())?;
        let sums = self.db.figures().add_counters(&*tx, &plan.counters, &mut rows)?;
        fault_point("write_locked");
        self.db.audit_log().audit_into(&*tx, &mut rows, plan.audit)?;
        // The cache follows the applied state before the next writer may read it.
        let mut sums = Some(sums);
        tx.commit_then(batch, &mut || self.db.figures().cache_counters(sums.take().expect("applied once")))?;
        Ok(positions)
    }

    /// Reads the feed of `communes` after the phone's `cursor` in one consistent read and plans
    /// the page. Returns it with the cursor as understood (`None`: made for another scope or
    /// another epoch, or none: the page starts from the beginning) and the store's epoch, read
    /// in the same cut as the feed.
    fn pull(&self, ex: &Exchange, pushed: HashMap<RecordId, Vec<Hash>>, written: Written, want_full: &[RecordId]) -> Result<(Page, Option<Cursor>, u64), DbError> {
        let communes = ex.communes();
        let (page, from, epoch) = {
            let cut = self.db.kv().begin_read()?;
            let epoch = Db::epoch_in(&*cut)?;
            let from = ex.cursor(epoch);
            let cursor = from.map_or(0, |c| c.seq);
            let high = cut.feed_high()?;
            // The whole scope's feed in one read (one query on PostgreSQL, not one per commune).
            let entries = page_entries(cut.feed_after(communes, cursor, high, PAGE_RECORDS)?, high);
            let mut planner = PagePlanner::new(from, high, entries, pushed, want_full, communes, ex.spec()).with_written(written);
            // The page's metadata in one read (a remote store's round trips add up per record),
            // but for this request's own writes.
            let ids = planner.metas_wanted();
            // A damaged record is left out of the page (and logged), never served. The page
            // needs no record's contribution to the figures: left unread.
            let mut metas: HashMap<RecordId, RecordMeta> = ids.iter().copied().zip(cut.metas_for_pull(&ids)?).filter_map(|(id, m)| Some((id, or_skip(m.transpose())?))).collect();
            let mut answer = None;
            loop {
                match planner.step(answer.take()).map_err(core_corrupt)? {
                    Step::Need(Need::Meta(id)) => answer = Some(Answer::Meta(metas.remove(&id))),
                    Step::Need(Need::Doc(id)) => answer = Some(Answer::Doc(or_skip(cut.document(&id)))),
                    Step::Done(page) => break (page, from, epoch),
                }
            }
        };
        // Nothing is served before it is durable.
        self.db.kv().wait_durable()?;
        Ok((page, from, epoch))
    }
}

impl Records<'_> {
    /// Every record id of a commune (the feed holds each record once).
    pub fn record_ids_of(&self, commune: &str) -> Result<Vec<RecordId>, DbError> {
        self.db.kv().record_ids_of(&[commune.to_string()])
    }

    /// Reports due for `unit` and the communes under it with no record dated in `period`.
    pub fn calendar_status(&self, unit: &str, period: indicators::Period, today: chrono::NaiveDate) -> Result<Value, DbError> {
        let tree = self.db.tree();
        let due = indicators::Calendar::default().due(&tree.chain(unit), today);
        let mut silent = Vec::new();
        for c in tree.communes_under(unit) {
            // A commune of the current map has the records of every commune merged into it:
            // their ids in one read, then their metadata a batch at a time until one is dated
            // in the period (not one read per record: on PostgreSQL each is a round trip).
            let made_in = tree.record_communes_under(&c);
            let ids = self.db.kv().record_ids_of(&made_in)?;
            let mut any = false;
            for batch in ids.chunks(500) {
                any = self.db.kv().metas_whole(batch)?.into_iter().flatten().any(|meta| {
                    let in_period = meta.date.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()).is_some_and(|d| period.contains(d));
                    in_period && !meta.deleted
                });
                if any {
                    break;
                }
            }
            if !any {
                let name = tree.get(&c).map(|u| u.name.clone()).unwrap_or_default();
                silent.push(serde_json::json!({"code": c, "name": name}));
            }
        }
        Ok(serde_json::json!({"org_unit": unit, "period": period.to_string(), "due": due, "communes_without_records": silent}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OrgUnit, Role};
    use crate::record_rows::{meta_key, seal, unseal};
    use crate::store::MemKv;
    use sync_core::pull::scope_fingerprint;
    use serde_json::json;
    use sync_protocol::wire::{PartResume, PushPart, MAX_UPLOAD_BYTES, MIN_PAGE_BYTES};
    use sync_protocol::{heads_to_wire, RecordKind};

    fn db_with_commune() -> Db {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        for (code, parent, level) in [("04", None, "province"), ("047", Some("04"), "district"), ("04701", Some("047"), "commune")] {
            db.org_units().put_org_unit(OrgUnit::new(code, code, parent.map(Into::into), level), None).unwrap();
        }
        db
    }

    fn officer() -> Principal {
        Principal { username: "o".into(), role: Role::CommuneOfficer, org_unit: "04701".into(), device_id: "d".into() }
    }

    fn push_one(db: &Db) -> RecordId {
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let id = RecordId::random();
        let req = SyncRequest { push: vec![PushDoc { id, changes: d.save(), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() };
        let resp = db.records().sync(&officer(), &req).unwrap();
        assert_eq!(resp.results[0].outcome, PushOutcome::Accepted);
        id
    }

    fn news_push(commune: &str) -> PushDoc {
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": commune, "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        PushDoc { id: RecordId::random(), changes: d.save(), heads: heads_to_wire(&d.get_heads()) }
    }

    /// A commune is "without records" for a period until one of its records (or of a commune
    /// merged into it) is dated in the period and not deleted, however many others it has.
    #[test]
    fn the_calendar_names_the_communes_with_no_record_in_the_period() {
        let db = db_with_commune();
        db.org_units().put_org_unit(OrgUnit::new("04702", "04702", Some("047".into()), "commune"), None).unwrap();
        let other = Principal { org_unit: "04702".into(), ..officer() };
        let news = |commune: &str, on: &str| {
            let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": commune, "published_on": on}), sync_protocol::automerge::ActorId::random()).unwrap();
            PushDoc { id: RecordId::random(), changes: d.save(), heads: heads_to_wire(&d.get_heads()) }
        };
        push_one(&db); // 04701, 2025-01-01
        // 04702: many records of 2024 first (more than one batch of metadata), one of 2025Q1 last.
        for _ in 0..3 {
            let push: Vec<PushDoc> = (0..250).map(|_| news("04702", "2024-06-01")).collect();
            assert!(db.records().sync(&other, &SyncRequest { push, ..Default::default() }).unwrap().results.iter().all(|r| r.outcome == PushOutcome::Accepted));
        }
        let late = SyncRequest { push: vec![news("04702", "2025-02-01")], ..Default::default() };
        assert_eq!(db.records().sync(&other, &late).unwrap().results[0].outcome, PushOutcome::Accepted);
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 10).unwrap();
        let silent = |period: &str| -> Vec<String> {
            let status = db.records().calendar_status("047", period.parse().unwrap(), today).unwrap();
            status["communes_without_records"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(silent("2025Q1"), Vec::<String>::new());
        assert_eq!(silent("2025Q2"), ["04701", "04702"]);
        assert_eq!(silent("2024"), ["04701"]);
    }

    /// Metadata in either stored form (`rows.rs`) is read at any form level. Until the store is
    /// finalized, this build writes JSON, which older builds read too (a replica not yet
    /// replaced, or a rollback); a record in postcard (written by a replica of this build once
    /// finalized) is pulled, edited and counted as any other. Once finalized, a record's next
    /// write stores postcard, and the store's level outlives the process.
    #[test]
    fn metadata_is_written_as_json_until_the_store_is_finalized_and_read_in_either_form() {
        let db = db_with_commune();
        assert_eq!(db.form_level(), 0, "a new store is not finalized");
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let id = RecordId::random();
        let push = |d: &mut AutoCommit| SyncRequest { push: vec![PushDoc { id, changes: d.save(), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() };
        assert_eq!(db.records().sync(&officer(), &push(&mut d)).unwrap().results[0].outcome, PushOutcome::Accepted);
        let meta = db.records().get_meta(&id).unwrap().unwrap();
        let stored = |db: &Db| unseal("metadata", &id, db.kv().get(&meta_key(&id)).unwrap().unwrap()).unwrap();
        assert_eq!(stored(&db)[0], b'{', "JSON until the store is finalized");
        assert_eq!(serde_json::from_slice::<RecordMeta>(&stored(&db)).unwrap(), meta, "as an older build reads it");
        // As a replica of this build writes it once the store is finalized.
        let mut b = Batch::default();
        b.put(meta_key(&id), seal(&crate::rows::meta_postcard(&meta)));
        db.commit(b).unwrap();
        assert_eq!(stored(&db)[0], crate::rows::META_POSTCARD);
        assert_eq!(db.records().get_meta(&id).unwrap().unwrap(), meta);
        let pulled = db.records().sync(&officer(), &SyncRequest::default()).unwrap();
        assert_eq!(pulled.pull.iter().filter(|p| p.id == id).count(), 1, "pulled");
        // An edit is merged on it, moves the figures from its old contribution, and is stored in
        // the form of the store's level.
        let q: [indicators::Period; 3] = ["2025Q1", "2025Q2", "2025Q3"].map(|p| p.parse().unwrap());
        let news_items = |db: &Db| q.map(|p| db.figures().counters("04701", p.quarters()[0]).unwrap().news_items());
        assert_eq!(news_items(&db), [1, 0, 0]);
        doc::set_path(&mut d, "published_on", &json!("2025-04-02")).unwrap();
        assert_eq!(db.records().sync(&officer(), &push(&mut d)).unwrap().results[0].outcome, PushOutcome::Accepted);
        assert_eq!(stored(&db)[0], b'{');
        assert_eq!(news_items(&db), [0, 1, 0]);
        assert_eq!(db.records().get_meta(&id).unwrap().unwrap().history.len(), 2, "its history goes on");
        // Finalized: the next write is postcard; finalizing again changes nothing.
        assert_eq!(db.finalize_upgrade().unwrap(), (0, crate::db::FORM_LEVEL));
        assert_eq!(db.finalize_upgrade().unwrap(), (crate::db::FORM_LEVEL, crate::db::FORM_LEVEL));
        doc::set_path(&mut d, "published_on", &json!("2025-07-03")).unwrap();
        assert_eq!(db.records().sync(&officer(), &push(&mut d)).unwrap().results[0].outcome, PushOutcome::Accepted);
        assert_eq!(stored(&db)[0], crate::rows::META_POSTCARD, "postcard once finalized");
        assert_eq!(news_items(&db), [0, 0, 1]);
        let meta = db.records().get_meta(&id).unwrap().unwrap();
        assert_eq!((meta.history.len(), meta.date.as_deref()), (3, Some("2025-07-03")));
    }

    /// The form level is the store's: a server opening it again writes its forms. A store
    /// finalized by a newer build (a level above this build's) may hold rows this build cannot
    /// read: it refuses to open it, saying so.
    #[test]
    fn the_form_level_is_kept_and_a_store_finalized_by_a_newer_build_is_refused() {
        use crate::store::SledKv;
        use crate::store_rows::StoreWrites;
        let dir = tempfile::tempdir().unwrap();
        let open = || Db::open(Box::new(SledKv::open(dir.path()).unwrap()));
        let db = open().unwrap();
        assert_eq!(db.finalize_upgrade().unwrap(), (0, crate::db::FORM_LEVEL));
        drop(db);
        let db = open().unwrap();
        assert_eq!(db.form_level(), crate::db::FORM_LEVEL, "kept by the store");
        let mut b = Batch::default();
        db.stage(&mut b).set_form_level(crate::db::FORM_LEVEL + 1);
        db.commit(b).unwrap();
        drop(db);
        let err = open().err().expect("refused").to_string();
        assert!(err.contains("newer than this server's") && err.contains("run the newer gesync-server"), "{err}");
    }

    #[test]
    fn a_panic_in_one_push_fails_that_request_only() {
        let db = db_with_commune();
        // Inside a record's merge: that record is refused, the request answers.
        PANIC_AT.with(|p| p.set(Some("prepare")));
        let resp = db.records().sync(&officer(), &SyncRequest { push: vec![news_push("04701")], ..Default::default() }).unwrap();
        PANIC_AT.with(|p| p.set(None));
        assert!(matches!(&resp.results[0].outcome, PushOutcome::Rejected { reason } if reason.contains("internal error")));
        // Under the feed write lock, while the batch is being built: the request fails, nothing
        // of it is written, and the lock is not poisoned.
        let db2 = db.clone();
        let lost = news_push("04701");
        let lost_id = lost.id;
        let crashed = std::thread::spawn(move || {
            PANIC_AT.with(|p| p.set(Some("write_locked")));
            db2.records().sync(&officer(), &SyncRequest { push: vec![lost], ..Default::default() })
        })
        .join();
        assert!(crashed.is_err(), "the injected panic ended that request");
        assert!(db.records().get_meta(&lost_id).unwrap().is_none(), "nothing half-written");
        // The next syncs work: pushes, pulls, figures.
        let id = push_one(&db);
        let pulled = db.records().sync(&officer(), &SyncRequest::default()).unwrap();
        assert!(pulled.pull.iter().any(|p| p.id == id));
        assert_eq!(db.records().sync(&officer(), &SyncRequest { push: vec![news_push("04701")], ..Default::default() }).unwrap().results[0].outcome, PushOutcome::Accepted);
        let q1: indicators::Period = "2025Q1".parse().unwrap();
        assert_eq!(db.figures().counters("04701", q1.quarters()[0]).unwrap().news_items(), 2);
    }

    #[test]
    fn a_commune_with_records_keeps_its_level() {
        let db = db_with_commune();
        assert!(db.org_units().put_org_unit(OrgUnit::new("04701", "04701", Some("047".into()), "district"), None).is_ok(), "no records yet");
        db.org_units().put_org_unit(OrgUnit::new("04701", "04701", Some("047".into()), "commune"), None).unwrap();
        push_one(&db);
        let err = db.org_units().put_org_unit(OrgUnit::new("04701", "04701", Some("047".into()), "district"), None).unwrap_err();
        assert!(err.to_string().contains("stays a commune"), "{err}");
    }

    #[test]
    fn a_forged_cursor_past_the_feed_end_is_answered_with_the_feed_end() {
        let db = db_with_commune();
        push_one(&db);
        let scope = scope_fingerprint(&officer().record_communes(&db.tree()));
        let epoch = db.epoch().unwrap();
        let forged = Cursor { seq: u64::MAX, scope, read_at: u64::MAX, epoch }.encode();
        // Returns (it used to wait for a sequence number that never becomes durable).
        let resp = db.records().sync(&officer(), &SyncRequest { cursor: forged, ..Default::default() }).unwrap();
        assert!(resp.pull.is_empty());
        assert_eq!(resp.epoch, epoch);
        assert_eq!(Cursor::decode(&resp.cursor, scope, epoch).map(|c| c.seq), Some(db.records().feed_seq().unwrap()));
    }

    #[test]
    fn a_new_epoch_sends_a_phone_its_scope_again_and_answers_offers() {
        let db = db_with_commune();
        push_one(&db);
        let first = db.records().sync(&officer(), &SyncRequest::default()).unwrap();
        assert_eq!(first.pull.len(), 1);
        let id = first.pull[0].id;
        let level = db.records().sync(&officer(), &SyncRequest { cursor: first.cursor.clone(), ..Default::default() }).unwrap();
        assert!(level.pull.is_empty() && level.scope.is_none(), "the phone is level");
        let old = db.epoch().unwrap();
        let new = db.set_epoch(true).unwrap();
        assert_ne!(old, new);
        assert_eq!(db.epoch().unwrap(), new);
        // The cursor of the old epoch no longer counts: the scope again, from the beginning.
        let again = db.records().sync(&officer(), &SyncRequest { cursor: first.cursor, ..Default::default() }).unwrap();
        assert_eq!((again.epoch, again.pull.len(), again.scope.is_some()), (new, 1, true));
        // Offers (no changes): heads the server holds are acknowledged, others asked whole.
        let offer = |heads: Vec<[u8; 32]>, id| PushDoc { id, changes: vec![], heads };
        let unknown = RecordId([9; 16]);
        let resp = db.records().sync(&officer(), &SyncRequest { push: vec![offer(first.pull[0].heads.clone(), id), offer(vec![[7; 32]], id), offer(vec![[7; 32]], unknown)], ..Default::default() }).unwrap();
        let outcomes: Vec<PushOutcome> = resp.results.into_iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, vec![PushOutcome::Accepted, PushOutcome::NeedFull, PushOutcome::NeedFull]);
        // Opening the store again keeps its epoch.
        assert_eq!(db.set_epoch(false).unwrap(), new);
    }

    /// A case whose 600-character notes were rewritten `edits` times (Automerge keeps every
    /// version): a record larger than a small page. `step` varies the text.
    fn case_with_long_history(edits: usize, step: usize) -> AutoCommit {
        let mut d = doc::new_record(RecordKind::GbvCase, &json!({"commune": "04701", "detected_on": "2025-01-01", "setting": "domestic", "victim": {"sex": "female"}}), sync_protocol::automerge::ActorId::random()).unwrap();
        for i in 0..edits {
            let text: String = (0..600).map(|j| char::from(b'a' + ((i * step + j * 13) % 26) as u8)).collect();
            doc::set_path(&mut d, "notes", &json!(text)).unwrap();
        }
        d
    }

    #[test]
    fn a_record_larger_than_the_page_goes_in_slices_that_resume() {
        let db = db_with_commune();
        let mut d = case_with_long_history(30, 7);
        let big = RecordId::random();
        let push = SyncRequest { push: vec![PushDoc { id: big, changes: d.save(), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() };
        assert_eq!(db.records().sync(&officer(), &push).unwrap().results[0].outcome, PushOutcome::Accepted);
        let small = push_one(&db);

        // A version 1 phone (no page size) gets the record whole, as it always did.
        let whole = db.records().sync(&officer(), &SyncRequest::default()).unwrap();
        assert!(whole.part.is_none() && whole.pull.len() == 2);
        let stored = whole.pull.iter().find(|p| p.id == big).unwrap().changes.clone();
        assert!(stored.len() > 3 * MIN_PAGE_BYTES as usize, "{}", stored.len());

        // Pages of 4 KiB: slices, each resumed where the phone's copy ends.
        let mut cursor = Vec::new();
        let mut got: Vec<u8> = Vec::new();
        let mut resume = None;
        let mut slices = 0;
        let last = loop {
            let req = SyncRequest { cursor: cursor.clone(), page_bytes: MIN_PAGE_BYTES, resume, ..Default::default() };
            let r = db.records().sync(&officer(), &req).unwrap();
            let part = r.part.clone().expect("a slice");
            assert!(r.pull.is_empty() && r.more);
            assert_eq!(part.offset as usize, got.len(), "each slice follows the bytes kept");
            assert!(part.bytes.len() <= MIN_PAGE_BYTES as usize);
            got.extend(&part.bytes);
            slices += 1;
            if slices == 2 {
                // A resume that names another version of the record starts over.
                let stale = PartResume { id: big, seq: part.seq + 100, offset: got.len() as u64 };
                let again = db.records().sync(&officer(), &SyncRequest { cursor: cursor.clone(), page_bytes: MIN_PAGE_BYTES, resume: Some(stale), ..Default::default() }).unwrap();
                assert_eq!(again.part.unwrap().offset, 0);
            }
            cursor = r.cursor.clone();
            resume = Some(PartResume { id: big, seq: part.seq, offset: got.len() as u64 });
            if got.len() as u64 == part.total {
                break r;
            }
        };
        assert!(slices >= 4, "{slices} slices");
        assert_eq!(got, stored, "the slices make up the stored document");
        let mut loaded = AutoCommit::load(&got).unwrap();
        assert_eq!(heads_to_wire(&loaded.get_heads()), last.part.unwrap().heads);
        // The last slice moved the cursor past the record: the small one comes next, whole.
        let next = db.records().sync(&officer(), &SyncRequest { cursor, page_bytes: MIN_PAGE_BYTES, resume, ..Default::default() }).unwrap();
        assert!(next.part.is_none());
        assert_eq!(next.pull.iter().map(|p| p.id).collect::<Vec<_>>(), vec![small]);
        assert!(!next.more);
    }

    #[test]
    fn a_record_too_large_for_the_uplink_goes_up_in_slices_that_resume() {
        let db = db_with_commune();
        let mut d = case_with_long_history(20, 11);
        let (id, changes, heads) = (RecordId::random(), doc::save_record(&mut d), heads_to_wire(&d.get_heads()));
        let total = changes.len() as u64;
        let part = |offset: usize, len: usize| PushPart { id, offset: offset as u64, total, bytes: changes[offset..(offset + len).min(changes.len())].to_vec(), heads: heads.clone() };
        let send = |p: PushPart| db.records().sync(&officer(), &SyncRequest { push_part: Some(p), page_bytes: MIN_PAGE_BYTES, ..Default::default() }).unwrap();

        let r = send(part(0, 4000));
        assert_eq!(r.uploaded, Some(Uploaded { id, have: 4000 }));
        assert!(r.results.is_empty(), "no verdict before the record is whole");
        // A slice past the end of what is held is not taken: the phone resends from `have`.
        assert_eq!(send(part(8000, 4000)).uploaded.unwrap().have, 4000);
        // A slice retried after a lost answer is taken as held.
        assert_eq!(send(part(0, 4000)).uploaded.unwrap().have, 4000);
        let mut offset = 4000;
        let last = loop {
            let r = send(part(offset, 4000));
            offset = r.uploaded.unwrap().have as usize;
            if offset == changes.len() {
                break r;
            }
            assert!(r.results.is_empty());
        };
        assert_eq!(last.results, vec![PushResult { id, outcome: PushOutcome::Accepted }]);
        let stored = db.records().load_doc(&id).unwrap().expect("the record is stored").get_heads();
        assert_eq!(heads_to_wire(&stored), heads);
        assert_eq!(db.uploads().upload_bytes().unwrap(), 0, "the finished upload is forgotten");
        // Another device's upload, or an upload over the limit, starts from nothing.
        let huge = PushPart { total: MAX_UPLOAD_BYTES + 1, ..part(0, 10) };
        assert_eq!(send(huge).uploaded.unwrap().have, 0);
    }

    #[test]
    fn pages_keep_to_the_size_asked_and_count_what_remains() {
        let db = db_with_commune();
        let ids: Vec<RecordId> = (0..40).map(|_| push_one(&db)).collect();
        let mut cursor = Vec::new();
        let mut seen = Vec::new();
        let mut first = true;
        loop {
            let r = db.records().sync(&officer(), &SyncRequest { cursor: cursor.clone(), page_bytes: MIN_PAGE_BYTES, count: first, ..Default::default() }).unwrap();
            let bytes: usize = r.pull.iter().map(|p| p.changes.len()).sum();
            assert!(bytes <= MIN_PAGE_BYTES as usize, "{bytes}");
            if first {
                assert_eq!(r.remaining, Some((40 - r.pull.len()) as u64));
                first = false;
            } else {
                assert_eq!(r.remaining, None, "counted only when asked");
            }
            seen.extend(r.pull.iter().map(|p| p.id));
            cursor = r.cursor;
            if !r.more {
                break;
            }
        }
        assert_eq!(seen, ids, "every record once, in feed order");
    }

    #[test]
    fn a_push_is_acknowledged_only_with_every_head_it_claims() {
        let db = db_with_commune();
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let id = RecordId::random();
        let mut heads = heads_to_wire(&d.get_heads());
        heads.push([9; 32]); // a change the bytes do not hold (cut short)
        let r = db.records().sync(&officer(), &SyncRequest { push: vec![PushDoc { id, changes: d.save(), heads }], ..Default::default() }).unwrap();
        assert!(matches!(r.results[0].outcome, PushOutcome::Rejected { .. }), "{:?}", r.results);
        assert!(db.records().get_meta(&id).unwrap().is_none(), "nothing stored");
        // Stored once whole; then an edit whose bytes miss a claimed head: the whole document, please.
        let push = |changes: Vec<u8>, heads: Vec<Hash>| db.records().sync(&officer(), &SyncRequest { push: vec![PushDoc { id, changes, heads }], ..Default::default() }).unwrap().results[0].outcome.clone();
        assert_eq!(push(d.save(), heads_to_wire(&d.get_heads())), PushOutcome::Accepted);
        let before = d.get_heads();
        doc::set_path(&mut d, "title", &json!("Tin mới")).unwrap();
        let mut claimed = heads_to_wire(&d.get_heads());
        claimed.push([7; 32]);
        assert_eq!(push(d.save_after(&before), claimed), PushOutcome::NeedFull);
        assert_eq!(db.records().load_doc(&id).unwrap().unwrap().get_heads(), before, "the partial edit was not stored");
    }

    #[test]
    fn an_approval_never_misses_a_change_made_while_it_is_taken() {
        let db = db_with_commune();
        let reviewer = Principal { username: "d".into(), role: Role::DistrictStaff, org_unit: "047".into(), device_id: "w".into() };
        let period: indicators::Period = "2025".parse().unwrap();
        // A phone's push arrives right after the approval read the figures: it must either wait
        // and then flag the approval, or be in the figures.
        let writer: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<RecordId>>>> = Default::default();
        let (db2, w2) = (db.clone(), writer.clone());
        crate::review::AFTER_FIGURES_READ.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                let db = db2.clone();
                *w2.lock().unwrap() = Some(std::thread::spawn(move || push_one(&db)));
                std::thread::sleep(std::time::Duration::from_millis(200));
            }))
        });
        db.review().approve(&reviewer, "047", period).unwrap();
        crate::review::AFTER_FIGURES_READ.with(|h| h.borrow_mut().take());
        writer.lock().unwrap().take().unwrap().join().unwrap();
        let stored = db.review().approvals_under("047").unwrap().into_iter().find(|a| a.period == "2025").unwrap();
        let now = serde_json::to_value(db.figures().indicators("047", period).unwrap()).unwrap();
        assert!(stored.changes_after == 1 || stored.figures == now, "the change is neither in the approved figures nor flagged");
        assert_eq!(stored.changes_after, 1, "the push waited for the approval and flagged it");
    }

    /// Four phones editing one record at once, each pushing ten edits: a push that raced the
    /// others is merged again onto what is stored, and every edit of every phone is in the
    /// stored record.
    #[test]
    fn edits_racing_on_one_record_are_all_kept() {
        let db = db_with_commune();
        let mut first = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let id = RecordId::random();
        let req = SyncRequest { push: vec![PushDoc { id, changes: first.save(), heads: heads_to_wire(&first.get_heads()) }], ..Default::default() };
        assert_eq!(db.records().sync(&officer(), &req).unwrap().results[0].outcome, PushOutcome::Accepted);
        let base = first.save();
        let lasts: Vec<Vec<sync_protocol::automerge::ChangeHash>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let (db, base) = (&db, &base);
                    s.spawn(move || {
                        let mut d = AutoCommit::load(base).unwrap().with_actor(sync_protocol::automerge::ActorId::random());
                        for n in 0..10 {
                            let before = d.get_heads();
                            doc::set_path(&mut d, "title", &json!(format!("phone {t} edit {n}"))).unwrap();
                            let req = SyncRequest { push: vec![PushDoc { id, changes: d.save_after(&before), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() };
                            assert_eq!(db.records().sync(&officer(), &req).unwrap().results[0].outcome, PushOutcome::Accepted);
                        }
                        d.get_heads()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut stored = db.records().load_doc(&id).unwrap().unwrap();
        for heads in lasts {
            for h in heads {
                assert!(stored.get_change_by_hash(&h).is_some(), "a phone's last edit is missing");
            }
        }
        assert_eq!(db.records().get_meta(&id).unwrap().unwrap().seq, db.records().feed_seq().unwrap(), "the record is at the feed's end once");
    }

    /// A change flags exactly the approvals of its quarter, its half-year and its year, of every
    /// unit it counts for (read by key, not by scanning every approval under the write lock).
    #[test]
    fn a_change_flags_the_approvals_of_its_quarter_half_year_and_year_only() {
        let db = db_with_commune();
        let reviewer = Principal { username: "d".into(), role: Role::DistrictStaff, org_unit: "047".into(), device_id: "w".into() };
        for p in ["2025", "2025S1", "2025S2", "2025Q1", "2025Q2", "2024"] {
            db.review().approve(&reviewer, "047", p.parse().unwrap()).unwrap();
        }
        push_one(&db); // published 2025-01-01: Q1
        let flagged: std::collections::BTreeMap<String, u64> = db.review().approvals_under("047").unwrap().into_iter().map(|a| (a.period, a.changes_after)).collect();
        let want: std::collections::BTreeMap<String, u64> = [("2024", 0), ("2025", 1), ("2025Q1", 1), ("2025Q2", 0), ("2025S1", 1), ("2025S2", 0)].into_iter().map(|(p, n)| (p.to_string(), n)).collect();
        assert_eq!(flagged, want);
    }

    #[test]
    fn a_record_is_bounded_in_size_and_in_changes_per_push() {
        let db = db_with_commune();
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let id = RecordId::random();
        let push = |d: &mut AutoCommit| db.records().sync(&officer(), &SyncRequest { push: vec![PushDoc { id, changes: d.save(), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() }).unwrap().results[0].outcome.clone();
        assert_eq!(push(&mut d), PushOutcome::Accepted);
        // Many small edits in one push.
        for i in 0..=MAX_CHANGES_PER_PUSH {
            doc::set_path(&mut d, "title", &json!(format!("v{i}"))).unwrap();
        }
        assert!(matches!(push(&mut d), PushOutcome::Rejected { reason } if reason.contains("changes")));
        // A document grown past the bound (incompressible notes rewritten many times).
        let mut big = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let mut x: u64 = 1;
        for _ in 0..300 {
            let text: String = (0..8000).map(|_| { x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); char::from(b'a' + (x >> 59) as u8 % 26) }).collect();
            doc::set_path(&mut big, "title", &json!(text)).unwrap();
        }
        let r = db.records().sync(&officer(), &SyncRequest { push: vec![PushDoc { id: RecordId::random(), changes: big.save(), heads: heads_to_wire(&big.get_heads()) }], ..Default::default() }).unwrap();
        assert!(matches!(&r.results[0].outcome, PushOutcome::Rejected { reason } if reason.contains("KB")), "{:?}", r.results);
    }

    #[test]
    fn a_retried_push_is_acknowledged_without_a_second_write() {
        let db = db_with_commune();
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let req = SyncRequest { push: vec![PushDoc { id: RecordId::random(), changes: d.save(), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() };
        db.records().sync(&officer(), &req).unwrap();
        let seq = db.records().feed_seq().unwrap();
        let again = db.records().sync(&officer(), &req).unwrap();
        assert_eq!(again.results[0].outcome, PushOutcome::Accepted);
        assert_eq!(db.records().feed_seq().unwrap(), seq, "no new feed entry for an unchanged record");
    }
}
