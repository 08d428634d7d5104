//! One pushed record, merged onto its stored version and checked: pure functions of the push,
//! the stored version and a [`Context`].
//!
//! Two steps, because one check needs stored state that only the merge reveals:
//! 1. [`merge`] (or [`Merged::edited`] for a change the server makes on a reviewer's behalf)
//!    applies the changes and lists the Automerge actors of the new changes;
//! 2. the driver looks up who owns those actors, and [`decide`] gives the [`Verdict`]: schema,
//!    fixed fields, scope, actor ownership, the figures contribution, conflicts, size.

use std::collections::{HashMap, VecDeque};

use sync_protocol::automerge::{AutoCommit, ChangeHash, LoadOptions, OnPartialLoad, VerificationMode};
use sync_protocol::doc;
use sync_protocol::wire::{PushDoc, PushOutcome};
use sync_protocol::{heads_to_wire, RecordId};

use crate::conflicts::{duplicate_key, with_delete_conflicts, StoredConflict};
use crate::meta::{ActorOwner, RecordMeta, HISTORY};
use crate::org::{OrgTree, Principal, COMMUNE_LEVEL};
use crate::{corrupt, Corrupt};

/// Largest stored document of one record. A case record is a few KB; this leaves room for years
/// of edits while no single record can grow without bound (each new phone must pull it).
pub const MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;
/// Most new changes one push may bring to one record.
pub const MAX_CHANGES_PER_PUSH: usize = 5_000;

/// Who pushes, on which map, when.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub who: &'a Principal,
    pub tree: &'a OrgTree,
    /// Unix seconds, for the metadata's `updated_at`.
    pub now: i64,
    /// The pushing device's own Automerge actor, when it names it (hex): an actor the server
    /// does not know yet becomes this device's only if it is this one. `None` (older phones,
    /// the server's own edits): any new actor becomes the pusher's.
    pub own_actor: Option<&'a str>,
    /// Whether a push may relay changes made by other devices' actors: only for a while after
    /// the store's history was rewound (a restored backup, a failover), when phones push back
    /// what the server forgot, their own and the records they received from others.
    pub relay_open: bool,
    /// Bytes the request's pushes may still inflate to, all records together
    /// ([`sync_protocol::inflate::MAX_INFLATED_PER_REQUEST`]); `None`: only each record's bound.
    pub inflation: Option<&'a std::cell::Cell<usize>>,
    /// Whether the store keeps a reporting row for each record (PostgreSQL's tables for
    /// people): the record's de-identified facts are made only then.
    pub report_rows: bool,
}

/// A record as a store holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub meta: RecordMeta,
    /// The saved Automerge document.
    pub doc: Vec<u8>,
}

/// A pushed record, checked, ready to be written.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: RecordId,
    /// The stored version it was merged onto (`None` for a new record): a store commits it only
    /// if that is still the stored version.
    pub base_seq: Option<u64>,
    pub doc: Vec<u8>,
    /// The new metadata; its `seq` (and latest history point) are given at commit.
    pub meta: RecordMeta,
    pub old_contribution: Option<indicators::Contribution>,
    pub conflicts: Vec<StoredConflict>,
    /// Actors of the new changes that nobody owned yet: they become the pusher's device's.
    pub new_actors: Vec<String>,
    /// The record's de-identified facts, for its reporting row ([`crate::facts::report_row`]).
    pub facts: Option<serde_json::Value>,
}

/// What becomes of one pushed record.
#[derive(Debug)]
pub enum Verdict {
    /// Nothing new (a retried push): acknowledge without writing.
    Unchanged,
    Write(Box<Prepared>),
    Refuse(PushOutcome),
}

/// A refusal with its reason, for the phone.
pub fn reject(reason: String) -> Verdict {
    Verdict::Refuse(PushOutcome::Rejected { reason })
}

/// A record with its new changes applied, waiting for the owners of the actors that made them.
#[derive(Debug)]
pub struct Merged {
    id: RecordId,
    meta: Option<RecordMeta>,
    doc: AutoCommit,
    actors: Vec<String>,
    /// The stored version's bytes and heads, which the new ones may extend ([`stored_form`]).
    base: Option<(Vec<u8>, Vec<ChangeHash>)>,
}

impl Merged {
    /// A document with changes applied onto the stored version whose heads were `old_heads`
    /// (and whose metadata is `meta`; `None` for a new record).
    pub fn from_doc(id: RecordId, meta: Option<RecordMeta>, old_heads: Vec<ChangeHash>, doc: AutoCommit) -> Result<Merged, Verdict> {
        Self::onto(id, meta, None, old_heads, doc)
    }

    /// [`Merged::from_doc`] for a stored version whose bytes are `base`.
    fn onto(id: RecordId, meta: Option<RecordMeta>, base: Option<Vec<u8>>, old_heads: Vec<ChangeHash>, mut doc: AutoCommit) -> Result<Merged, Verdict> {
        if doc.get_heads() == old_heads {
            return Err(Verdict::Unchanged);
        }
        // The changes' metadata only: Automerge encodes no change to give it.
        let changes = doc.get_changes_meta(&old_heads);
        if changes.len() > MAX_CHANGES_PER_PUSH {
            return Err(reject(format!("{} changes in one push to one record: at most {MAX_CHANGES_PER_PUSH}", changes.len())));
        }
        let mut actors: Vec<String> = Vec::new();
        for change in changes {
            let actor = change.actor.to_hex_string();
            if !actors.contains(&actor) {
                actors.push(actor);
            }
        }
        let base = base.map(|b| (b, old_heads));
        Ok(Merged { id, meta, doc, actors, base })
    }

    /// The server's own change to a stored record (a reviewer's resolution, a duplicate merge):
    /// `edit` runs on the stored document with `actor`, the server's actor for that reviewer.
    pub fn edited(
        id: RecordId,
        stored: Stored,
        actor: sync_protocol::automerge::ActorId,
        edit: impl FnOnce(&mut AutoCommit) -> Result<(), doc::DocError>,
    ) -> Result<Result<Merged, Verdict>, EditError> {
        let mut d = AutoCommit::load(&stored.doc).map_err(|e| EditError::Corrupt(corrupt("record document", e)))?;
        let old_heads = d.get_heads();
        d.set_actor(actor);
        edit(&mut d).map_err(|e| EditError::Invalid(e.to_string()))?;
        Ok(Merged::onto(id, Some(stored.meta), Some(stored.doc), old_heads, d))
    }

    /// The Automerge actors of the new changes: [`decide`] needs to know who owns each.
    pub fn actors(&self) -> &[String] {
        &self.actors
    }

    pub fn id(&self) -> RecordId {
        self.id
    }
}

/// Why the server's own edit of a record failed.
#[derive(Debug)]
pub enum EditError {
    Corrupt(Corrupt),
    /// The edit itself was refused (a value the schema does not allow...).
    Invalid(String),
}

/// Applies a pushed record's changes onto its stored version (`None`: the server has none).
/// `Err` is the verdict already reached: refused, nothing new, or "send it whole".
pub fn merge(ctx: Context<'_>, push: &PushDoc, stored: Option<Stored>) -> Result<Result<Merged, Verdict>, Corrupt> {
    let (meta, bytes) = match stored {
        Some(s) => (Some(s.meta), Some(s.doc)),
        None => (None, None),
    };
    if let Some(m) = &meta {
        if !ctx.who.may_access_records_of(ctx.tree, &m.commune) {
            return Ok(Err(reject(format!("record {} belongs to a commune outside your scope", push.id))));
        }
    }
    // Automerge inflates deflated chunks without a limit: bound them before it sees them, each
    // record and the whole request.
    let left = ctx.inflation.map_or(usize::MAX, |c| c.get());
    match sync_protocol::inflate::check_inflation(&push.changes, sync_protocol::inflate::MAX_INFLATED_BYTES.min(left)) {
        Ok(n) => {
            if let Some(c) = ctx.inflation {
                c.set(c.get().saturating_sub(n));
            }
        }
        Err(e) if left < sync_protocol::inflate::MAX_INFLATED_BYTES => {
            // Spent: the records after this one are refused without inflating anything.
            if let Some(c) = ctx.inflation {
                c.set(0);
            }
            return Ok(Err(reject(format!("the pushed changes are refused: this request's records inflate past {} bytes in all ({e}): sync again", sync_protocol::inflate::MAX_INFLATED_PER_REQUEST))));
        }
        Err(e) => return Ok(Err(reject(format!("the pushed changes are refused: {e}")))),
    }
    let not_automerge = || Ok(Err(reject("the pushed changes are not valid Automerge data".into())));
    let (mut doc, old_heads) = match &bytes {
        Some(b) => {
            let mut doc = AutoCommit::load(b).map_err(|e| corrupt("record document", e))?;
            let old_heads = doc.get_heads();
            if doc.load_incremental(&push.changes).is_err() {
                return not_automerge();
            }
            (doc, old_heads)
        }
        // A new record: loaded from the pushed changes as `load_incremental` loads them into an
        // empty document (what it cannot apply is left out, then caught by the checks below),
        // without making the empty document first (1.5% of the server's CPU in `load`'s first
        // phase).
        None => match AutoCommit::load_with_options(&push.changes, LoadOptions::new().on_partial_load(OnPartialLoad::Ignore).verification_mode(VerificationMode::Check)) {
            Ok(doc) => (doc, Vec::new()),
            Err(_) => return not_automerge(),
        },
    };
    if !doc.get_missing_deps(&[]).is_empty() {
        return Ok(Err(Verdict::Refuse(PushOutcome::NeedFull)));
    }
    // Automerge applies what it can of damaged or cut bytes and only warns: acknowledge only a
    // push that holds every change the phone says it has, or the phone would take its unsent
    // changes for stored. A phone that sent what it has whole gets a refusal. An offer (no
    // changes: "do you hold these heads?", after the store's epoch changed) of heads the
    // server lacks is answered "send it whole".
    // Most claimed heads are the document's own heads, a lookup in a small set; only the rest
    // (a push the server had already merged past) are looked up in the change graph, by
    // metadata, which builds no change.
    let now_heads = doc.get_heads();
    if push.heads.iter().any(|h| !now_heads.contains(&ChangeHash(*h)) && doc.get_change_meta_by_hash(&ChangeHash(*h)).is_none()) {
        return Ok(Err(if !push.changes.is_empty() && (meta.is_none() || old_heads.is_empty()) {
            reject("the pushed changes do not hold the heads they claim (damaged or cut short): sync again".into())
        } else {
            Verdict::Refuse(PushOutcome::NeedFull)
        }));
    }
    Ok(Merged::onto(push.id, meta, bytes, old_heads, doc))
}

/// Most writes whose changes a stored document carries after its compacted part before it is
/// saved whole again: each one makes loading it a little dearer. Below [`HISTORY`], so that the
/// compacted part's own point is still in the history when the count is taken.
pub const MAX_APPENDED: usize = HISTORY - 2;

/// The bytes to store for document `d` and the stored length of each point of the record's
/// history before the new one (0: not a prefix of these bytes).
///
/// A record changed after it was stored is stored as its stored bytes followed by the changes
/// that are new (`save_after` the stored heads), so that every earlier version kept in its
/// history is a prefix of what is stored: a phone that holds that version is sent the bytes
/// after it, a slice, where otherwise the server loads the whole document to find the changes
/// (`pull::PagePlanner`). After [`MAX_APPENDED`] such changes, or for a new record, the
/// document is saved whole, and the earlier points are no prefix any more.
fn stored_form(d: &mut AutoCommit, meta: Option<&RecordMeta>, base: Option<(Vec<u8>, Vec<ChangeHash>)>) -> (Vec<u8>, VecDeque<u32>) {
    if let (Some(m), Some((bytes, heads))) = (meta, base) {
        let ends = m.aligned_ends();
        let appended = ends.iter().rev().take_while(|e| **e != 0).count().saturating_sub(1);
        if appended < MAX_APPENDED && ends.back() == Some(&(bytes.len() as u32)) {
            let tail = d.save_after(&heads);
            // Near the size bound, saved whole: the bound is on what the record holds.
            if bytes.len() + tail.len() <= MAX_RECORD_BYTES {
                return ([bytes, tail].concat(), ends);
            }
        }
    }
    let whole = doc::save_record(d);
    let len = meta.map_or(0, |m| m.history.len());
    (whole, std::iter::repeat_n(0, len).collect())
}

/// Checks a merged record and prepares its write. `owners` holds the owner of each of
/// [`Merged::actors`] that has one (an actor missing from it is new and becomes the pusher's).
pub fn decide(ctx: Context<'_>, merged: Merged, owners: &HashMap<String, ActorOwner>) -> Result<Verdict, Corrupt> {
    let Merged { id, meta, doc: mut d, actors, base } = merged;
    let heads = d.get_heads();
    // The schema's checks, the view and the conflicts in one walk over the document.
    let doc::Inspected { kind, communes, view, conflicts } = match doc::inspect(&mut d) {
        Ok(found) => found,
        Err(e) => return Ok(reject(e.to_string())),
    };
    let commune = match (&meta, communes.as_slice()) {
        (Some(m), [c]) if *c == m.commune && kind == m.kind => c.clone(),
        (Some(m), _) if kind != m.kind => return Ok(reject("field `kind` is fixed when the record is created".into())),
        (Some(_), _) => return Ok(reject("field `commune` is fixed when the record is created".into())),
        (None, [c]) => c.clone(),
        (None, _) => return Ok(reject("field `commune` must have exactly one value".into())),
    };
    if meta.is_none() {
        match ctx.tree.get(&commune) {
            Some(u) if u.level == COMMUNE_LEVEL => {}
            Some(_) => return Ok(reject(format!("`{commune}` is not a commune"))),
            None => return Ok(reject(format!("unknown commune `{commune}`"))),
        }
        if !ctx.who.may_access_records_of(ctx.tree, &commune) {
            return Ok(reject(format!("commune `{commune}` is outside your scope")));
        }
    }
    // Every change's actor must belong to this device (or be new, and then it becomes this
    // device's): a phone cannot write in another device's name. After the store's history was
    // rewound, other devices' changes are relayed (not claimed) while the window is open.
    let mut new_actors = Vec::new();
    for actor in actors {
        match owners.get(&actor) {
            Some(owner) if owner.username == ctx.who.username && owner.device_id == ctx.who.device_id => {}
            Some(_) if ctx.relay_open => {}
            Some(_) => return Ok(reject("the changes claim an Automerge actor that belongs to another device".into())),
            None if ctx.own_actor.is_none_or(|own| own == actor) => new_actors.push(actor),
            None if ctx.relay_open => {}
            None => return Ok(reject("the changes carry an Automerge actor that is neither this device's nor one the server knows".into())),
        }
    }
    // Parsed once: the figures, the metadata, the duplicate check and the facts read the typed
    // view.
    let typed = sync_protocol::Record::parse(&view);
    let deleted = typed.as_ref().is_some_and(sync_protocol::Record::deleted);
    let conflicts = with_delete_conflicts(&mut d, conflicts, deleted);
    let contribution = typed.as_ref().and_then(indicators::Contribution::from_typed);
    let mut history = meta.as_ref().map(|m| m.history.clone()).unwrap_or_default();
    let (doc_bytes, mut ends) = stored_form(&mut d, meta.as_ref(), base);
    history.push_back((0, heads_to_wire(&heads))); // the sequence number is given at commit
    ends.push_back(doc_bytes.len() as u32);
    while history.len() > HISTORY {
        history.pop_front();
        ends.pop_front();
    }
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
        doc: doc_bytes,
        old_contribution: meta.as_ref().and_then(|m| m.contribution.clone()),
        meta: RecordMeta {
            kind,
            commune,
            seq: 0,
            deleted,
            date: typed.as_ref().and_then(sync_protocol::Record::date).map(|d| d.format("%Y-%m-%d").to_string()),
            history,
            ends,
            updated_at: ctx.now,
            contribution,
            dup: typed.as_ref().and_then(duplicate_key),
            conflicts: conflicts.len() as u32,
        },
        facts: if ctx.report_rows { typed.as_ref().map(|t| crate::facts::facts_of(t, &view)) } else { None },
        conflicts,
        new_actors,
    })))
}
