//! Records and the sync exchange: merge pushed changes (checked), serve the change feed.
//!
//! Write path (one sync request): every pushed record is merged and checked *outside* the feed
//! lock (the CPU-heavy Automerge work), then, under the write lock, each prepared record is
//! checked to still be based on the stored version (else it is prepared again), given a new feed
//! sequence number, and the whole request is applied as one batch and flushed. Only then is the
//! durable sequence number advanced and the phone answered: acknowledged means durable.
//!
//! Read path: under the shared lock, the feed of each commune in the caller's scope is read from
//! the cursor up to the durable sequence number; each record that moved is sent as the changes
//! the phone is not known to have, as many as fit in the page the phone asked for. A record
//! larger than the page on its own is sent in slices of its stored document (`PullPart`), which
//! the phone keeps and resumes, so a slow link that drops every half-minute still moves forward.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_protocol::automerge::{AutoCommit, ChangeHash, ReadDoc};
use sync_protocol::doc;
use sync_protocol::wire::{
    Hash, PartResume, PullDoc, PullPart, PushDoc, PushOutcome, PushPart, PushResult, SyncRequest, SyncResponse, Uploaded, DEFAULT_PAGE_BYTES,
    MAX_UPLOAD_BYTES, MIN_PAGE_BYTES,
};
use sync_protocol::{heads_from_wire, heads_to_wire, RecordId, RecordKind};

use crate::db::{corrupt, get_json, key, now_secs, to_json, Db, DbError};
use crate::figures;
use crate::model::{OrgTree, Principal, COMMUNE_LEVEL};
use crate::store::Batch;

/// How many `(seq, heads)` points of a record's history the server remembers, to send a phone
/// only the changes after the point its cursor says it has.
const HISTORY: usize = 8;
/// Records per pull page at most.
pub const PAGE_RECORDS: usize = 2000;
/// Largest stored document of one record. A case record is a few KB; this leaves room for years
/// of edits while no single record can grow without bound (each new phone must pull it).
pub const MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;
/// Most new changes one push may bring to one record.
pub const MAX_CHANGES_PER_PUSH: usize = 5_000;
/// Most feed entries counted for `remaining` per commune (a progress figure, not a promise).
const COUNT_CAP: usize = 100_000;

/// How one pull page is cut.
#[derive(Debug, Clone, Copy)]
struct PageSpec {
    /// Bytes of changes the answer may carry.
    budget: usize,
    /// Whether a record larger than the budget may go in slices (version 2 phones, which name
    /// a page size); a version 1 phone gets such a record whole, as it always did.
    slices: bool,
    resume: Option<PartResume>,
}

impl PageSpec {
    fn of(req: &SyncRequest) -> PageSpec {
        match req.page_bytes {
            0 => PageSpec { budget: DEFAULT_PAGE_BYTES as usize, slices: false, resume: None },
            n => PageSpec { budget: n.clamp(MIN_PAGE_BYTES, DEFAULT_PAGE_BYTES) as usize, slices: true, resume: req.resume },
        }
    }
}

/// One pull page: what the phone gets and where its cursor goes.
#[derive(Debug, Default)]
struct Page {
    docs: Vec<PullDoc>,
    part: Option<PullPart>,
    /// The cursor after this page.
    next: u64,
    /// The feed's durable end this page was read against.
    high: u64,
    more: bool,
}

/// What the server keeps beside each record's document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordMeta {
    pub kind: RecordKind,
    pub commune: String,
    /// Feed sequence number of the latest change.
    pub seq: u64,
    pub deleted: bool,
    /// The record's date field (`detected_on`, ...), for listing by period.
    pub date: Option<String>,
    /// Recent `(seq, heads)` points, oldest first.
    pub history: VecDeque<(u64, Vec<Hash>)>,
    pub updated_at: i64,
    /// The record's current contribution to the figures (old one out, new one in).
    pub contribution: Option<indicators::Contribution>,
    /// (sex, birth year) of the person recorded, for flagging possible duplicates.
    #[serde(default)]
    pub dup: Option<(String, i64)>,
    /// Number of fields holding concurrent values.
    #[serde(default)]
    pub conflicts: u32,
}

fn reject(reason: String) -> Verdict {
    Verdict::Refuse(PushOutcome::Rejected { reason })
}

/// Runs the checks and Automerge work on one pushed record so that a panic in them (a bug met
/// by hostile or unusual input) refuses that record only: the request's other records, every
/// other request and every later sync go on. Nothing is written while this work runs, and the
/// server's locks do not poison.
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

impl RecordMeta {
    /// Heads as of feed sequence `seq` (the latest point at or before it).
    fn heads_at(&self, seq: u64) -> Option<Vec<ChangeHash>> {
        self.history.iter().rev().find(|(s, _)| *s <= seq).map(|(_, h)| heads_from_wire(h))
    }
}

/// The opaque cursor handed to phones: the feed position and a fingerprint of the scope it was
/// computed for, so that a user moved to another commune starts again from zero.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Cursor {
    seq: u64,
    scope: u64,
}

impl Cursor {
    /// The feed position of a cursor made for `scope`; `None` for one made for another scope
    /// (the user moved), or none at all, or anything else: the phone starts from the beginning.
    fn decode(bytes: &[u8], scope: u64) -> Option<u64> {
        match postcard::from_bytes::<Cursor>(bytes) {
            Ok(c) if c.scope == scope => Some(c.seq),
            _ => None,
        }
    }
    fn encode(self) -> Vec<u8> {
        postcard::to_allocvec(&self).expect("cursor encodes")
    }
}

/// FNV-1a over the sorted commune list: stable across restarts and builds.
fn scope_fingerprint(communes: &[String]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for c in communes {
        for b in c.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
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

/// The upload in progress of a device (one at a time: a new one replaces it).
fn upload_key(who: &Principal) -> Vec<u8> {
    key("up/", &[who.username.as_bytes(), who.device_id.as_bytes()])
}

/// A large record's changes, received slice by slice (`PushPart`). Stored in postcard, not
/// JSON like the other rows: it is mostly bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Upload {
    id: RecordId,
    total: u64,
    heads: Vec<Hash>,
    bytes: Vec<u8>,
}

fn feed_key(commune: &str, seq: u64) -> Vec<u8> {
    key("f/", &[commune.as_bytes(), &seq.to_be_bytes()])
}

/// A pushed record, merged and checked, ready to be written.
pub(crate) struct Prepared {
    pub(crate) id: RecordId,
    /// The stored version it was merged onto (`None` for a new record).
    base_seq: Option<u64>,
    doc_bytes: Vec<u8>,
    meta: RecordMeta,
    old_contribution: Option<indicators::Contribution>,
    conflicts: Vec<crate::review::StoredConflict>,
    new_actors: Vec<String>,
}

pub(crate) enum Verdict {
    /// Nothing new (a retried push): acknowledge without writing.
    Unchanged,
    Write(Box<Prepared>),
    Refuse(PushOutcome),
}

impl Db {
    pub fn get_meta(&self, id: &RecordId) -> Result<Option<RecordMeta>, DbError> {
        get_json(self.kv(), &key("m/", &[&id.0]))
    }

    /// Loads a record's document.
    pub fn load_doc(&self, id: &RecordId) -> Result<Option<AutoCommit>, DbError> {
        match self.kv().get(&key("r/", &[&id.0]))? {
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

    /// Merges and checks one pushed record against what is stored now.
    fn prepare(&self, who: &Principal, tree: &OrgTree, push: &PushDoc) -> Result<Verdict, DbError> {
        fault_point("prepare");
        let meta = self.get_meta(&push.id)?;
        if let Some(m) = &meta {
            if !who.may_access_records_of(tree, &m.commune) {
                return Ok(reject(format!("record {} belongs to a commune outside your scope", push.id)));
            }
        }
        // Automerge inflates deflated chunks without a limit: bound them before it sees them.
        if let Err(e) = sync_protocol::inflate::check_inflation(&push.changes, sync_protocol::inflate::MAX_INFLATED_BYTES) {
            return Ok(reject(format!("the pushed changes are refused: {e}")));
        }
        let mut doc = match self.load_doc(&push.id)? {
            Some(d) => d,
            None => AutoCommit::new(),
        };
        let old_heads = doc.get_heads();
        if doc.load_incremental(&push.changes).is_err() {
            return Ok(reject("the pushed changes are not valid Automerge data".into()));
        }
        if !doc.get_missing_deps(&[]).is_empty() {
            return Ok(Verdict::Refuse(PushOutcome::NeedFull));
        }
        // Automerge applies what it can of damaged or cut bytes and only warns: acknowledge only
        // a push that holds every change the phone says it has, or the phone would take its
        // unsent changes for stored. A phone that sent what it has whole gets a refusal.
        if push.heads.iter().any(|h| doc.get_change_by_hash(&ChangeHash(*h)).is_none()) {
            return Ok(if meta.is_none() || old_heads.is_empty() {
                reject("the pushed changes do not hold the heads they claim (damaged or cut short): sync again".into())
            } else {
                Verdict::Refuse(PushOutcome::NeedFull)
            });
        }
        self.prepare_doc(who, tree, push.id, meta, &old_heads, doc)
    }

    /// Checks a record's document after changes were merged into it (`old_heads`: the stored
    /// version's heads) and prepares its write: schema, fixed fields, scope, actor ownership,
    /// figures contribution, conflicts.
    pub(crate) fn prepare_doc(
        &self,
        who: &Principal,
        tree: &OrgTree,
        id: RecordId,
        meta: Option<RecordMeta>,
        old_heads: &[ChangeHash],
        mut doc: AutoCommit,
    ) -> Result<Verdict, DbError> {
        let heads = doc.get_heads();
        if heads == old_heads {
            return Ok(Verdict::Unchanged);
        }
        let kind = match doc::check_doc(&doc) {
            Ok(k) => k,
            Err(e) => return Ok(reject(e.to_string())),
        };
        let communes = doc::all_root_strings(&doc, "commune").map_err(|e| corrupt("doc", e))?;
        let commune = match (&meta, communes.as_slice()) {
            (Some(m), [c]) if *c == m.commune && kind == m.kind => c.clone(),
            (Some(m), _) if kind != m.kind => return Ok(reject("field `kind` is fixed when the record is created".into())),
            (Some(_), _) => return Ok(reject("field `commune` is fixed when the record is created".into())),
            (None, [c]) => c.clone(),
            (None, _) => return Ok(reject("field `commune` must have exactly one value".into())),
        };
        if meta.is_none() {
            match tree.get(&commune) {
                Some(u) if u.level == COMMUNE_LEVEL => {}
                Some(_) => return Ok(reject(format!("`{commune}` is not a commune"))),
                None => return Ok(reject(format!("unknown commune `{commune}`"))),
            }
            if !who.may_access_records_of(tree, &commune) {
                return Ok(reject(format!("commune `{commune}` is outside your scope")));
            }
        }
        // Every change's actor must belong to this device (or be new, and then it becomes this
        // device's): a phone cannot write in another device's name.
        let mut new_actors = Vec::new();
        let changes = doc.get_changes(old_heads);
        if changes.len() > MAX_CHANGES_PER_PUSH {
            return Ok(reject(format!("{} changes in one push to one record: at most {MAX_CHANGES_PER_PUSH}", changes.len())));
        }
        for change in changes {
            let actor = change.actor_id().to_hex_string();
            if new_actors.contains(&actor) {
                continue;
            }
            match self.actor_owner(&actor)? {
                Some(owner) if owner.username == who.username && owner.device_id == who.device_id => {}
                Some(_) => return Ok(reject("the changes claim an Automerge actor that belongs to another device".into())),
                None => new_actors.push(actor),
            }
        }
        let view = doc::view(&doc).map_err(|e| corrupt("doc", e))?;
        let conflicts = crate::review::detect_conflicts(&mut doc).map_err(|e| corrupt("doc", e))?;
        // Parsed once: the figures, the metadata and the duplicate check read the typed view.
        let typed = sync_protocol::Record::parse(&view);
        let contribution = typed.as_ref().and_then(indicators::Contribution::from_typed);
        let mut history = meta.as_ref().map(|m| m.history.clone()).unwrap_or_default();
        history.push_back((0, heads_to_wire(&heads))); // sequence number filled in at commit
        while history.len() > HISTORY {
            history.pop_front();
        }
        let doc_bytes = doc::save_record(&mut doc);
        if doc_bytes.len() > MAX_RECORD_BYTES {
            return Ok(reject(format!(
                "the record would be {} KB, more than the {} KB one record may hold: start a new record for further notes",
                doc_bytes.len() / 1024,
                MAX_RECORD_BYTES / 1024
            )));
        }
        Ok(Verdict::Write(Box::new(Prepared {
            id,
            base_seq: meta.as_ref().map(|m| m.seq),
            doc_bytes,
            old_contribution: meta.as_ref().and_then(|m| m.contribution.clone()),
            meta: RecordMeta {
                kind,
                commune,
                seq: 0,
                deleted: typed.as_ref().is_some_and(sync_protocol::Record::deleted),
                date: typed.as_ref().and_then(sync_protocol::Record::date).map(|d| d.format("%Y-%m-%d").to_string()),
                history,
                updated_at: now_secs(),
                contribution,
                dup: typed.as_ref().and_then(crate::review::duplicate_key),
                conflicts: conflicts.len() as u32,
            },
            conflicts,
            new_actors,
        })))
    }

    /// The user and device an Automerge actor belongs to.
    pub fn actor_owner(&self, actor: &str) -> Result<Option<ActorOwner>, DbError> {
        get_json(self.kv(), &key("x/", &[actor.as_bytes()]))
    }

    /// Handles one sync request for `who`: pushes first (durably), then the pull. The caller
    /// has checked the request's size ([`check_request`]).
    pub fn sync(&self, who: &Principal, req: &SyncRequest) -> Result<SyncResponse, DbError> {
        self.sync_unless(who, req, &AtomicBool::new(false))
    }

    /// [`Db::sync`] that stops, writing nothing, once `abandoned` is set (the client went away):
    /// checked between the records it merges and the records it reads, never inside a write.
    pub fn sync_unless(&self, who: &Principal, req: &SyncRequest, abandoned: &AtomicBool) -> Result<SyncResponse, DbError> {
        let tree = self.tree();
        let communes = who.record_communes(&tree);
        let mut results = self.push(who, &tree, &req.push, abandoned)?;
        let mut uploaded = None;
        let mut whole = None;
        if let Some(part) = &req.push_part {
            let (have, complete) = self.receive_part(who, part)?;
            uploaded = Some(Uploaded { id: part.id, have });
            if let Some(doc) = complete {
                results.extend(self.push(who, &tree, std::slice::from_ref(&doc), abandoned)?);
                self.commit({
                    let mut b = Batch::default();
                    b.delete(upload_key(who));
                    b
                })?;
                whole = Some(doc);
            }
        }
        let accepted: HashMap<RecordId, &Vec<Hash>> = req
            .push
            .iter()
            .chain(&whole)
            .zip(&results)
            .filter(|(_, r)| r.outcome == PushOutcome::Accepted)
            .map(|(p, _)| (p.id, &p.heads))
            .collect();
        let scope = scope_fingerprint(&communes);
        let known = Cursor::decode(&req.cursor, scope);
        let cursor = known.unwrap_or(0);
        let page = self.pull(&communes, cursor, &accepted, &req.want_full, PageSpec::of(req))?;
        let remaining = if req.count { Some(self.count_feed(&communes, page.next, page.high)?) } else { None };
        Ok(SyncResponse {
            results,
            pull: page.docs,
            cursor: Cursor { seq: page.next, scope }.encode(),
            more: page.more,
            part: page.part,
            remaining,
            uploaded,
            scope: known.is_none().then_some(communes),
        })
    }

    /// Keeps one slice of a device's upload of a large record (durably: the next slice resumes
    /// after it even across a restart) and says how many bytes the server holds. A slice at or
    /// before the end of what is held replaces from its offset (a retried slice whose answer was
    /// lost); one past it is refused with the current count, and the phone resends from there.
    /// Once whole, the upload is returned as a push (the caller pushes it and forgets it).
    fn receive_part(&self, who: &Principal, part: &PushPart) -> Result<(u64, Option<PushDoc>), DbError> {
        let k = upload_key(who);
        let held = self.kv().get(&k)?.and_then(|v| postcard::from_bytes::<Upload>(&v).ok());
        let mut up = match held {
            Some(u) if u.id == part.id && u.total == part.total && u.heads == part.heads => u,
            _ => Upload { id: part.id, total: part.total, heads: part.heads.clone(), bytes: Vec::new() },
        };
        let end = part.offset.saturating_add(part.bytes.len() as u64);
        if part.total > MAX_UPLOAD_BYTES || end > part.total || part.offset > up.bytes.len() as u64 {
            // Out of order or out of bounds: nothing stored; the phone resends from `have`.
            let have = if part.total > MAX_UPLOAD_BYTES { 0 } else { up.bytes.len() as u64 };
            return Ok((have, None));
        }
        up.bytes.truncate(part.offset as usize);
        up.bytes.extend_from_slice(&part.bytes);
        let have = up.bytes.len() as u64;
        if have == up.total {
            return Ok((have, Some(PushDoc { id: up.id, changes: up.bytes, heads: up.heads })));
        }
        let mut b = Batch::default();
        b.put(k, postcard::to_allocvec(&up).expect("an upload encodes"));
        self.commit(b)?;
        Ok((have, None))
    }

    /// Feed entries of `communes` in `(after, high]`: the records a phone at `after` still has
    /// to pull (counted up to a cap per commune).
    fn count_feed(&self, communes: &[String], after: u64, high: u64) -> Result<u64, DbError> {
        let mut n = 0;
        if after < high {
            for c in communes {
                n += self.kv().range(&feed_key(c, after + 1), &feed_key(c, high + 1), COUNT_CAP)?.len() as u64;
            }
        }
        Ok(n)
    }

    fn push(&self, who: &Principal, tree: &OrgTree, pushes: &[PushDoc], abandoned: &AtomicBool) -> Result<Vec<PushResult>, DbError> {
        if pushes.is_empty() {
            return Ok(Vec::new());
        }
        let mut verdicts = Vec::with_capacity(pushes.len());
        for p in pushes {
            if abandoned.load(Ordering::Relaxed) {
                return Err(DbError::Cancelled);
            }
            verdicts.push(contained(&p.id, || self.prepare(who, tree, p))?);
        }
        let mut outcomes = Vec::with_capacity(pushes.len());
        if verdicts.iter().any(|v| matches!(v, Verdict::Write(_))) {
            let _w = self.inner.feed_lock.write();
            let mut writes: Vec<Prepared> = Vec::new();
            for (push, verdict) in pushes.iter().zip(verdicts) {
                let verdict = match verdict {
                    // Someone else wrote this record since we prepared it (or this request
                    // pushes it twice): merge again onto the current version.
                    Verdict::Write(p) if self.get_meta(&p.id)?.map(|m| m.seq) != p.base_seq || writes.iter().any(|w| w.id == p.id) => {
                        contained(&push.id, || self.prepare_after(who, tree, push, &writes))?
                    }
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
            self.write_locked(who, writes, None)?;
        } else {
            outcomes.extend(verdicts.into_iter().map(|v| match v {
                Verdict::Refuse(o) => o,
                _ => PushOutcome::Accepted,
            }));
        }
        // Acknowledged means durable: wait for everything applied so far, which covers this
        // request's writes and, for a retried push found unchanged, the original write that
        // another request may still be flushing.
        if outcomes.contains(&PushOutcome::Accepted) {
            self.wait_durable(self.inner.applied_seq.load(Ordering::Acquire))?;
        }
        Ok(pushes.iter().zip(outcomes).map(|(p, outcome)| PushResult { id: p.id, outcome }).collect())
    }

    /// Writes prepared records in one batch and applies it (not yet flushed: callers release the
    /// feed lock, then [`Db::wait_durable`] before answering). The caller holds the feed write
    /// lock. Returns the last sequence number written. Besides documents and metadata,
    /// the batch moves each record's feed entry, its figures contribution, its conflicts in the
    /// review index, flags approvals the change alters, claims new actors for `who`'s device,
    /// and (optionally) appends an audit entry.
    pub(crate) fn write_locked(
        &self,
        who: &Principal,
        writes: Vec<Prepared>,
        audit: Option<crate::db::AuditEvent>,
    ) -> Result<u64, DbError> {
        let mut seq = self.inner.applied_seq.load(Ordering::Acquire);
        if writes.is_empty() {
            return Ok(seq);
        }
        let mut batch = Batch::default();
        let mut claimed: Vec<String> = Vec::new();
        let mut figure_deltas = figures::Pending::default();
        // The tree as it is under the feed write lock: a move or merge of units changes it
        // only under that lock, together with the counters it moves.
        let tree = self.tree();
        let chain = |c: &str| tree.chain(c);
        for mut p in writes {
            seq += 1;
            if let Some(old) = p.base_seq {
                batch.delete(feed_key(&p.meta.commune, old));
            }
            batch.put(feed_key(&p.meta.commune, seq), p.id.0.to_vec());
            p.meta.seq = seq;
            if let Some(last) = p.meta.history.back_mut() {
                last.0 = seq;
            }
            figure_deltas.record_change(&chain, p.old_contribution.as_ref(), p.meta.contribution.as_ref());
            crate::review::index_conflicts(&mut batch, &p.meta.commune, &p.id, &p.conflicts);
            batch.put(key("r/", &[&p.id.0]), std::mem::take(&mut p.doc_bytes));
            batch.put(key("m/", &[&p.id.0]), to_json(&p.meta));
            for actor in &p.new_actors {
                if !claimed.contains(actor) {
                    let owner = ActorOwner { username: who.username.clone(), device_id: who.device_id.clone() };
                    batch.put(key("x/", &[actor.as_bytes()]), to_json(&owner));
                    claimed.push(actor.clone());
                }
            }
        }
        self.flag_approvals(&mut batch, figure_deltas.touched())?;
        let sums = figure_deltas.write_into(self, &mut batch)?;
        fault_point("write_locked");
        batch.put(b"n/seq".to_vec(), seq.to_be_bytes().to_vec());
        self.apply_audited(batch, audit)?;
        // The cache follows the applied state: the next writer's read-modify-write of the
        // counters must see this batch's sums.
        self.cache_counters(sums);
        self.inner.applied_seq.store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Prepares a push again under the write lock. Records already written earlier in the same
    /// request are not yet in the store, so such a duplicate push is simply merged on its own:
    /// Automerge merging is idempotent, and the second write carries both.
    fn prepare_after(&self, who: &Principal, tree: &OrgTree, push: &PushDoc, written: &[Prepared]) -> Result<Verdict, DbError> {
        if written.iter().any(|w| w.id == push.id) {
            // Same record twice in one request: the first write already holds its changes only
            // if they are identical; to stay simple and safe, refuse the repeat politely.
            return Ok(Verdict::Refuse(PushOutcome::Rejected {
                reason: "the same record was pushed twice in one request".into(),
            }));
        }
        self.prepare(who, tree, push)
    }

    /// Reads the feed of `communes` after `cursor`, up to the durable sequence number.
    fn pull(
        &self,
        communes: &[String],
        cursor: u64,
        pushed: &HashMap<RecordId, &Vec<Hash>>,
        want_full: &[RecordId],
        spec: PageSpec,
    ) -> Result<Page, DbError> {
        let want_full: HashSet<RecordId> = want_full.iter().copied().collect();
        let want_full = &want_full;
        let page = {
            // A consistent cut: no write is half-applied while the feed is read.
            let _r = self.inner.feed_lock.read();
            self.pull_at(communes, cursor, self.inner.applied_seq.load(Ordering::Acquire), pushed, want_full, spec)?
        };
        // Nothing is served before it is durable (a slice may come from past the cursor).
        self.wait_durable(page.high)?;
        Ok(page)
    }

    fn pull_at(
        &self,
        communes: &[String],
        cursor: u64,
        high: u64,
        pushed: &HashMap<RecordId, &Vec<Hash>>,
        want_full: &HashSet<RecordId>,
        spec: PageSpec,
    ) -> Result<Page, DbError> {
        if cursor >= high {
            // Nothing new. A cursor past the feed's end (only a forged or foreign one can be)
            // is answered with the feed's end.
            return Ok(Page { next: high, high, ..Page::default() });
        }
        let mut entries: Vec<(u64, RecordId)> = Vec::new();
        let mut bound = high;
        for c in communes {
            let got = self.kv().range(&feed_key(c, cursor + 1), &feed_key(c, high + 1), PAGE_RECORDS)?;
            if got.len() == PAGE_RECORDS {
                // This commune may have more: nothing past its last entry is complete.
                let last = got.last().map(|(k, _)| seq_of_feed_key(k)).unwrap_or(high);
                bound = bound.min(last);
            }
            for (k, v) in got {
                let id = RecordId(v.as_slice().try_into().map_err(|_| corrupt("feed", "bad id"))?);
                entries.push((seq_of_feed_key(&k), id));
            }
        }
        entries.retain(|(s, _)| *s <= bound);
        entries.sort_unstable();
        let mut next = bound;
        if entries.len() >= PAGE_RECORDS {
            entries.truncate(PAGE_RECORDS);
            next = entries.last().map(|e| e.0).unwrap_or(bound);
        }
        let mut page = Page { next, high, more: next < high, ..Page::default() };
        let mut bytes = 0usize;
        for (i, (seq, id)) in entries.iter().enumerate() {
            let Some(meta) = self.get_meta(id)? else { continue };
            let Some((_, current)) = meta.history.back() else { continue };
            // Everything before entry `i` is in this page or already on the phone.
            let before = if i == 0 { cursor } else { entries[i - 1].0 };
            if page.docs.is_empty() && spec.slices {
                if let Some(r) = spec.resume.filter(|r| r.id == *id && r.seq == *seq) {
                    return self.slice(page, (*seq, *id), current, r.offset, spec.budget, before);
                }
            }
            let mut known: Vec<ChangeHash> = Vec::new();
            if !want_full.contains(id) {
                known.extend(meta.heads_at(cursor).unwrap_or_default());
                if let Some(h) = pushed.get(id) {
                    known.extend(heads_from_wire(h));
                }
            }
            // The common cases need no Automerge work: the phone already has the current heads
            // (its own push), or has nothing of the record and gets the stored document as is.
            let changes = if heads_from_wire(current).iter().all(|h| known.contains(h)) {
                continue;
            } else if known.is_empty() {
                match self.kv().get(&key("r/", &[&id.0]))? {
                    Some(bytes) => bytes,
                    None => continue,
                }
            } else {
                let Some(mut doc) = self.load_doc(id)? else { continue };
                doc.save_after(&known)
            };
            if changes.is_empty() {
                continue;
            }
            if bytes + changes.len() > spec.budget {
                if page.docs.is_empty() && spec.slices {
                    // Too large for any page on its own: its stored document goes in slices.
                    return self.slice(page, (*seq, *id), current, 0, spec.budget, before);
                }
                if !page.docs.is_empty() {
                    // Cut here: the phone has everything before this entry.
                    page.next = before;
                    page.more = true;
                    break;
                }
            }
            bytes += changes.len();
            page.docs.push(PullDoc { id: *id, changes, heads: current.clone() });
        }
        Ok(page)
    }

    /// A page holding one slice of record `id`'s stored document (at feed position `seq`) from
    /// `offset`. The cursor stays at `before` until the last slice, which moves it past the
    /// record. An offset the document does not have (it shrank? a forged resume) starts over.
    fn slice(&self, mut page: Page, (seq, id): (u64, RecordId), heads: &[Hash], offset: u64, budget: usize, before: u64) -> Result<Page, DbError> {
        let doc = self.kv().get(&key("r/", &[&id.0]))?.ok_or_else(|| corrupt("feed", "a feed entry without its document"))?;
        let total = doc.len();
        let start = if offset as usize >= total { 0 } else { offset as usize };
        let end = (start + budget).min(total);
        page.docs.clear();
        page.part = Some(PullPart { id, seq, offset: start as u64, total: total as u64, bytes: doc[start..end].to_vec(), heads: heads.to_vec() });
        if end == total {
            page.next = seq;
            page.more = seq < page.high;
        } else {
            page.next = before;
            page.more = true;
        }
        Ok(page)
    }
}

fn seq_of_feed_key(k: &[u8]) -> u64 {
    let n = k.len();
    u64::from_be_bytes(k[n - 8..].try_into().expect("feed keys end with 8 bytes"))
}


/// The owner of an Automerge actor id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorOwner {
    pub username: String,
    pub device_id: String,
}

impl Db {
    /// Every record id of a commune (the feed holds each record once).
    pub fn record_ids_of(&self, commune: &str) -> Result<Vec<RecordId>, DbError> {
        let prefix = key("f/", &[commune.as_bytes(), b""]);
        self.kv()
            .range(&prefix, &crate::store::prefix_end(&prefix), usize::MAX)?
            .into_iter()
            .map(|(_, v)| Ok(RecordId(v.as_slice().try_into().map_err(|_| corrupt("feed", "bad id"))?)))
            .collect()
    }

    /// Reports due for `unit` and the communes under it with no record dated in `period`.
    pub fn calendar_status(&self, unit: &str, period: indicators::Period, today: chrono::NaiveDate) -> Result<Value, DbError> {
        let tree = self.tree();
        let due = indicators::Calendar::default().due(&tree.chain(unit), today);
        let mut silent = Vec::new();
        for c in tree.communes_under(unit) {
            let mut any = false;
            // A commune of the current map has the records of every commune merged into it.
            'found: for made_in in tree.record_communes_under(&c) {
                for id in self.record_ids_of(&made_in)? {
                    let Some(meta) = self.get_meta(&id)? else { continue };
                    let in_period = meta.date.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()).is_some_and(|d| period.contains(d));
                    if in_period && !meta.deleted {
                        any = true;
                        break 'found;
                    }
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
    use crate::store::MemKv;
    use serde_json::json;

    fn db_with_commune() -> Db {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        for (code, parent, level) in [("04", None, "province"), ("047", Some("04"), "district"), ("04701", Some("047"), "commune")] {
            db.put_org_unit(OrgUnit::new(code, code, parent.map(Into::into), level), None).unwrap();
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
        let resp = db.sync(&officer(), &req).unwrap();
        assert_eq!(resp.results[0].outcome, PushOutcome::Accepted);
        id
    }

    fn news_push(commune: &str) -> PushDoc {
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": commune, "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        PushDoc { id: RecordId::random(), changes: d.save(), heads: heads_to_wire(&d.get_heads()) }
    }

    #[test]
    fn a_panic_in_one_push_fails_that_request_only() {
        let db = db_with_commune();
        // Inside a record's merge: that record is refused, the request answers.
        PANIC_AT.with(|p| p.set(Some("prepare")));
        let resp = db.sync(&officer(), &SyncRequest { push: vec![news_push("04701")], ..Default::default() }).unwrap();
        PANIC_AT.with(|p| p.set(None));
        assert!(matches!(&resp.results[0].outcome, PushOutcome::Rejected { reason } if reason.contains("internal error")));
        // Under the feed write lock, while the batch is being built: the request fails, nothing
        // of it is written, and the lock is not poisoned.
        let db2 = db.clone();
        let lost = news_push("04701");
        let lost_id = lost.id;
        let crashed = std::thread::spawn(move || {
            PANIC_AT.with(|p| p.set(Some("write_locked")));
            db2.sync(&officer(), &SyncRequest { push: vec![lost], ..Default::default() })
        })
        .join();
        assert!(crashed.is_err(), "the injected panic ended that request");
        assert!(db.get_meta(&lost_id).unwrap().is_none(), "nothing half-written");
        // The next syncs work: pushes, pulls, figures.
        let id = push_one(&db);
        let pulled = db.sync(&officer(), &SyncRequest::default()).unwrap();
        assert!(pulled.pull.iter().any(|p| p.id == id));
        assert_eq!(db.sync(&officer(), &SyncRequest { push: vec![news_push("04701")], ..Default::default() }).unwrap().results[0].outcome, PushOutcome::Accepted);
        let q1: indicators::Period = "2025Q1".parse().unwrap();
        assert_eq!(db.counters("04701", q1.quarters()[0]).unwrap().news_items(), 2);
    }

    #[test]
    fn a_commune_with_records_keeps_its_level() {
        let db = db_with_commune();
        assert!(db.put_org_unit(OrgUnit::new("04701", "04701", Some("047".into()), "district"), None).is_ok(), "no records yet");
        db.put_org_unit(OrgUnit::new("04701", "04701", Some("047".into()), "commune"), None).unwrap();
        push_one(&db);
        let err = db.put_org_unit(OrgUnit::new("04701", "04701", Some("047".into()), "district"), None).unwrap_err();
        assert!(err.to_string().contains("stays a commune"), "{err}");
    }

    #[test]
    fn a_forged_cursor_past_the_feed_end_is_answered_with_the_feed_end() {
        let db = db_with_commune();
        push_one(&db);
        let scope = scope_fingerprint(&officer().record_communes(&db.tree()));
        let forged = Cursor { seq: u64::MAX, scope }.encode();
        // Returns (it used to wait for a sequence number that never becomes durable).
        let resp = db.sync(&officer(), &SyncRequest { cursor: forged, ..Default::default() }).unwrap();
        assert!(resp.pull.is_empty());
        assert_eq!(Cursor::decode(&resp.cursor, scope), Some(db.durable_seq()));
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
        assert_eq!(db.sync(&officer(), &push).unwrap().results[0].outcome, PushOutcome::Accepted);
        let small = push_one(&db);

        // A version 1 phone (no page size) gets the record whole, as it always did.
        let whole = db.sync(&officer(), &SyncRequest::default()).unwrap();
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
            let r = db.sync(&officer(), &req).unwrap();
            let part = r.part.clone().expect("a slice");
            assert!(r.pull.is_empty() && r.more);
            assert_eq!(part.offset as usize, got.len(), "each slice follows the bytes kept");
            assert!(part.bytes.len() <= MIN_PAGE_BYTES as usize);
            got.extend(&part.bytes);
            slices += 1;
            if slices == 2 {
                // A resume that names another version of the record starts over.
                let stale = PartResume { id: big, seq: part.seq + 100, offset: got.len() as u64 };
                let again = db.sync(&officer(), &SyncRequest { cursor: cursor.clone(), page_bytes: MIN_PAGE_BYTES, resume: Some(stale), ..Default::default() }).unwrap();
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
        let next = db.sync(&officer(), &SyncRequest { cursor, page_bytes: MIN_PAGE_BYTES, resume, ..Default::default() }).unwrap();
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
        let send = |p: PushPart| db.sync(&officer(), &SyncRequest { push_part: Some(p), page_bytes: MIN_PAGE_BYTES, ..Default::default() }).unwrap();

        let r = send(part(0, 4000));
        assert_eq!(r.uploaded, Some(Uploaded { id, have: 4000 }));
        assert!(r.results.is_empty(), "no verdict before the record is whole");
        // A slice past the end of what is held is not taken: the phone resends from `have`.
        assert_eq!(send(part(8000, 4000)).uploaded.unwrap().have, 4000);
        // A slice retried after a lost answer replaces from its offset.
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
        let stored = db.load_doc(&id).unwrap().expect("the record is stored").get_heads();
        assert_eq!(heads_to_wire(&stored), heads);
        assert!(db.kv().get(&upload_key(&officer())).unwrap().is_none(), "the finished upload is forgotten");
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
            let r = db.sync(&officer(), &SyncRequest { cursor: cursor.clone(), page_bytes: MIN_PAGE_BYTES, count: first, ..Default::default() }).unwrap();
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
        let r = db.sync(&officer(), &SyncRequest { push: vec![PushDoc { id, changes: d.save(), heads }], ..Default::default() }).unwrap();
        assert!(matches!(r.results[0].outcome, PushOutcome::Rejected { .. }), "{:?}", r.results);
        assert!(db.get_meta(&id).unwrap().is_none(), "nothing stored");
        // Stored once whole; then an edit whose bytes miss a claimed head: the whole document, please.
        let push = |changes: Vec<u8>, heads: Vec<Hash>| db.sync(&officer(), &SyncRequest { push: vec![PushDoc { id, changes, heads }], ..Default::default() }).unwrap().results[0].outcome.clone();
        assert_eq!(push(d.save(), heads_to_wire(&d.get_heads())), PushOutcome::Accepted);
        let before = d.get_heads();
        doc::set_path(&mut d, "title", &json!("Tin mới")).unwrap();
        let mut claimed = heads_to_wire(&d.get_heads());
        claimed.push([7; 32]);
        assert_eq!(push(d.save_after(&before), claimed), PushOutcome::NeedFull);
        assert_eq!(db.load_doc(&id).unwrap().unwrap().get_heads(), before, "the partial edit was not stored");
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
        db.approve(&reviewer, "047", period).unwrap();
        crate::review::AFTER_FIGURES_READ.with(|h| h.borrow_mut().take());
        writer.lock().unwrap().take().unwrap().join().unwrap();
        let stored = db.approvals_under("047").unwrap().into_iter().find(|a| a.period == "2025").unwrap();
        let now = serde_json::to_value(db.indicators("047", period).unwrap()).unwrap();
        assert!(stored.changes_after == 1 || stored.figures == now, "the change is neither in the approved figures nor flagged");
        assert_eq!(stored.changes_after, 1, "the push waited for the approval and flagged it");
    }

    #[test]
    fn a_record_is_bounded_in_size_and_in_changes_per_push() {
        let db = db_with_commune();
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let id = RecordId::random();
        let push = |d: &mut AutoCommit| db.sync(&officer(), &SyncRequest { push: vec![PushDoc { id, changes: d.save(), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() }).unwrap().results[0].outcome.clone();
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
        let r = db.sync(&officer(), &SyncRequest { push: vec![PushDoc { id: RecordId::random(), changes: big.save(), heads: heads_to_wire(&big.get_heads()) }], ..Default::default() }).unwrap();
        assert!(matches!(&r.results[0].outcome, PushOutcome::Rejected { reason } if reason.contains("KB")), "{:?}", r.results);
    }

    #[test]
    fn a_retried_push_is_acknowledged_without_a_second_write() {
        let db = db_with_commune();
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), sync_protocol::automerge::ActorId::random()).unwrap();
        let req = SyncRequest { push: vec![PushDoc { id: RecordId::random(), changes: d.save(), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() };
        db.sync(&officer(), &req).unwrap();
        let seq = db.durable_seq();
        let again = db.sync(&officer(), &req).unwrap();
        assert_eq!(again.results[0].outcome, PushOutcome::Accepted);
        assert_eq!(db.durable_seq(), seq, "no new feed entry for an unchanged record");
    }
}
