//! Planning one pull page, step by step, without reading anything itself.
//!
//! The driver reads the feed entries of the caller's communes after its cursor
//! ([`page_entries`] bounds and orders them), then runs a [`PagePlanner`]: each
//! [`PagePlanner::step`] either asks for one record's metadata or stored document, or gives
//! the finished [`Page`]. The page keeps to the phone's byte budget; a record larger than the
//! page on its own goes in slices of its stored document, which the phone resumes.
//!
//! A record the phone names in `want_full` (it could not apply the changes it was sent: they
//! build on a version it never received, because the record moved on in the feed before the
//! phone read that far) is sent whole, first, whether or not it is among this page's entries.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sync_protocol::automerge::{AutoCommit, ChangeHash};
use sync_protocol::wire::{Hash, PartResume, PullDoc, PullPart, SyncRequest, DEFAULT_PAGE_BYTES, MIN_PAGE_BYTES};
use sync_protocol::{heads_from_wire, RecordId};

use crate::meta::RecordMeta;
use crate::{corrupt, Corrupt};

/// Records per pull page at most.
pub const PAGE_RECORDS: usize = 2000;

/// How one pull page is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSpec {
    /// Bytes of changes the answer may carry.
    pub budget: usize,
    /// Whether a record larger than the budget may go in slices (version 2 phones, which name a
    /// page size); a version 1 phone gets such a record whole, as it always did.
    pub slices: bool,
    pub resume: Option<PartResume>,
    /// Whether a record sent whole goes without its heads (the phone said
    /// [`sync_protocol::wire::FLAG_HEADS_FROM_DOC`]).
    pub heads_from_doc: bool,
    /// Whether bytes are worth the server's CPU (the phone said
    /// [`sync_protocol::wire::FLAG_SLOW_LINK`]; a busy server does not honour the flag). Two
    /// things change; each costs the server a load of the record and an encoding, about 75 µs,
    /// which only a slow link repays:
    /// - a record sent whole goes as its changes where those weigh no more than its document
    ///   (a phone loads either). Change chunks of different records share more than documents
    ///   do, so a page of them compresses smaller (1,200 varied case records in zstd-3 pages:
    ///   163,703 B against 212,342 B);
    /// - a record the phone pushed in this request and someone else changed too gets exactly
    ///   the changes it lacks, where on a fast link it gets the stored bytes after the version
    ///   it held before (its own pushed changes again among them, which Automerge skips).
    pub slow_link: bool,
}

impl PageSpec {
    pub fn of(req: &SyncRequest) -> PageSpec {
        let heads_from_doc = req.accept & sync_protocol::wire::FLAG_HEADS_FROM_DOC != 0;
        let slow_link = req.accept & sync_protocol::wire::FLAG_SLOW_LINK != 0;
        match req.page_bytes {
            0 => PageSpec { budget: DEFAULT_PAGE_BYTES as usize, slices: false, resume: None, heads_from_doc, slow_link },
            n => PageSpec { budget: n.clamp(MIN_PAGE_BYTES, DEFAULT_PAGE_BYTES) as usize, slices: true, resume: req.resume, heads_from_doc, slow_link },
        }
    }
}

/// One pull page: what the phone gets and where its cursor goes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Page {
    pub docs: Vec<PullDoc>,
    pub part: Option<PullPart>,
    /// The cursor after this page.
    pub next: u64,
    /// The feed's end this page was read against.
    pub high: u64,
    pub more: bool,
}

/// The opaque cursor handed to phones: the feed position, a fingerprint of the scope it was
/// computed for (a user moved to another commune starts again from zero), the feed's end when
/// it was given (`read_at`, see [`RecordMeta::delivered_heads`]), and the store's epoch (a
/// cursor of another history, before a restore or a failover, starts again from zero: its
/// positions name other records now).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    pub seq: u64,
    pub scope: u64,
    pub read_at: u64,
    pub epoch: u64,
}

/// The cursor phones hold from before the store epoch existed.
#[derive(Deserialize)]
struct CursorV2 {
    seq: u64,
    scope: u64,
    read_at: u64,
}

/// The cursor phones hold from before `read_at` existed.
#[derive(Deserialize)]
struct CursorV1 {
    seq: u64,
    scope: u64,
}

impl Cursor {
    /// The cursor, if it was made for `scope` in `epoch`; `None` for one made for another
    /// scope (the user moved) or in another epoch (the store was restored), or none at all, or
    /// anything else: the phone starts from the beginning. A cursor of an earlier form, made
    /// before epochs existed, is taken as this epoch's (the upgrade does not make every phone
    /// pull its scope again), and one from before `read_at` as read at its own position.
    pub fn decode(bytes: &[u8], scope: u64, epoch: u64) -> Option<Cursor> {
        if let Ok((c, [])) = postcard::take_from_bytes::<Cursor>(bytes) {
            return (c.scope == scope && c.epoch == epoch && c.read_at >= c.seq).then_some(c);
        }
        if let Ok((c, [])) = postcard::take_from_bytes::<CursorV2>(bytes) {
            return (c.scope == scope && c.read_at >= c.seq).then_some(Cursor { seq: c.seq, scope, read_at: c.read_at, epoch });
        }
        match postcard::take_from_bytes::<CursorV1>(bytes) {
            Ok((c, [])) if c.scope == scope => Some(Cursor { seq: c.seq, scope, read_at: c.seq, epoch }),
            _ => None,
        }
    }

    pub fn encode(self) -> Vec<u8> {
        postcard::to_allocvec(&self).expect("a cursor encodes")
    }
}

/// FNV-1a over the sorted commune list: stable across restarts and builds.
pub fn scope_fingerprint(communes: &[String]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for c in communes {
        for b in c.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The entries of one page, in feed order, and the cursor after them, from each commune's feed
/// entries in `(cursor, high]` (each list in order, at most [`PAGE_RECORDS`] long: a full list
/// may have more past its end, so nothing past its last entry is complete).
pub fn page_entries(per_commune: Vec<Vec<(u64, RecordId)>>, high: u64) -> (Vec<(u64, RecordId)>, u64) {
    let mut bound = high;
    for got in &per_commune {
        if got.len() >= PAGE_RECORDS {
            bound = bound.min(got.last().map(|e| e.0).unwrap_or(high));
        }
    }
    let mut entries: Vec<(u64, RecordId)> = per_commune.into_iter().flatten().filter(|(s, _)| *s <= bound).collect();
    entries.sort_unstable();
    let mut next = bound;
    if entries.len() >= PAGE_RECORDS {
        entries.truncate(PAGE_RECORDS);
        next = entries.last().map(|e| e.0).unwrap_or(bound);
    }
    (entries, next)
}

/// What the planner needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// The metadata of this record.
    Meta(RecordId),
    /// The stored document of this record.
    Doc(RecordId),
}

/// One step of planning a page.
#[derive(Debug)]
pub enum Step {
    Need(Need),
    Done(Page),
}

/// The driver's answer to a [`Need`].
#[derive(Debug)]
pub enum Answer {
    Meta(Option<RecordMeta>),
    Doc(Option<Vec<u8>>),
}

/// Records the request being answered wrote.
pub type Written = HashMap<RecordId, WrittenRecord>;

/// What a request's push wrote of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenRecord {
    /// The feed position the write gave it.
    pub seq: u64,
    /// Its stored heads just after the write.
    pub heads: Vec<Hash>,
    /// Nothing of the record was stored before: its stored heads are exactly those of the
    /// pushed changes ([`crate::exchange::Exchange::accepted`]).
    pub created: bool,
}

/// What a push is about to write of each record (its stored heads after the write, and whether
/// the store held nothing of it), taken before the records go to the store; [`WriteHeads::at`]
/// pairs it with the feed positions the store gives them. The server and the simulation's
/// in-memory server both build [`Written`] this way.
pub struct WriteHeads(HashMap<RecordId, (Vec<Hash>, bool)>);

impl WriteHeads {
    pub fn of(writes: &[crate::push::Prepared]) -> WriteHeads {
        WriteHeads(writes.iter().map(|w| (w.id, (w.meta.history.back().map(|h| h.1.clone()).unwrap_or_default(), w.base_seq.is_none()))).collect())
    }

    /// What was written, the store having given each record the feed position in `positions`.
    pub fn at(mut self, positions: impl IntoIterator<Item = (RecordId, u64)>) -> Written {
        let mut written = Written::new();
        for (id, seq) in positions {
            let (heads, created) = self.0.remove(&id).unwrap_or_default();
            written.insert(id, WrittenRecord { seq, heads, created });
        }
        written
    }
}

/// Plans one page over entries in feed order (see the module documentation).
pub struct PagePlanner {
    cursor: u64,
    /// The feed's end when the phone's cursor was given.
    read_at: u64,
    entries: Vec<(u64, RecordId)>,
    /// Heads each record pushed in this same request now has on the phone.
    pushed: HashMap<RecordId, Vec<Hash>>,
    /// What this request wrote ([`PagePlanner::with_written`]).
    written: Written,
    want_full: HashSet<RecordId>,
    spec: PageSpec,
    page: Page,
    bytes: usize,
    at: usize,
    meta: Option<RecordMeta>,
    /// Records the phone asked whole that are not among this page's entries (it could not apply
    /// an earlier page's changes of them): sent whole first, if in `scope`.
    extra: Vec<RecordId>,
    extra_at: usize,
    scope: Vec<String>,
}

impl PagePlanner {
    /// `entries` and `next` as [`page_entries`] gives them; `high` the feed's end they were read
    /// against; `scope` the communes whose records the phone may receive.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        from: Option<Cursor>,
        high: u64,
        (entries, next): (Vec<(u64, RecordId)>, u64),
        pushed: HashMap<RecordId, Vec<Hash>>,
        want_full: &[RecordId],
        scope: &[String],
        spec: PageSpec,
    ) -> PagePlanner {
        let (cursor, read_at) = from.map_or((0, 0), |c| (c.seq, c.read_at));
        // A cursor past the feed's end (only a forged or foreign one can be) is answered with
        // the feed's end.
        let (entries, next) = if cursor >= high { (Vec::new(), high) } else { (entries, next) };
        let mut extra: Vec<RecordId> = want_full.iter().copied().filter(|id| !entries.iter().any(|(_, e)| e == id)).collect();
        extra.sort();
        extra.dedup();
        PagePlanner {
            read_at,
            extra,
            extra_at: 0,
            scope: scope.to_vec(),
            cursor,
            entries,
            pushed,
            written: Written::new(),
            want_full: want_full.iter().copied().collect(),
            spec,
            page: Page { next, high, more: next < high, ..Page::default() },
            bytes: 0,
            at: 0,
            meta: None,
        }
    }

    /// Tells the planner what the request wrote before this page: an entry that is its own
    /// write, not written since (still at the feed position the write gave it) and whose stored
    /// heads the phone sent, is skipped without its metadata, which a driver then need not
    /// read ([`PagePlanner::metas_wanted`]). The page is the same; only the reads are fewer.
    pub fn with_written(mut self, written: Written) -> PagePlanner {
        self.written = written;
        self
    }

    /// The records whose metadata this page may ask for, for a driver that reads them in one
    /// batch before planning.
    pub fn metas_wanted(&self) -> Vec<RecordId> {
        self.entries.iter().filter(|(seq, id)| !self.own_unchanged(*seq, *id)).map(|(_, id)| *id).chain(self.extra.iter().copied()).collect()
    }

    /// Whether the entry `(seq, id)` is this request's own write, unchanged since and held
    /// whole by the phone (what the metadata would show: its current heads all known).
    fn own_unchanged(&self, seq: u64, id: RecordId) -> bool {
        if self.want_full.contains(&id) || self.spec.resume.is_some_and(|r| r.id == id) {
            return false;
        }
        match (self.written.get(&id), self.pushed.get(&id)) {
            (Some(w), Some(sent)) => w.seq == seq && w.heads.iter().all(|h| sent.contains(h)),
            _ => false,
        }
    }

    /// Takes the answer to the last [`Need`] (none at the first call) and goes on until it
    /// needs something more or the page is done.
    pub fn step(&mut self, answer: Option<Answer>) -> Result<Step, Corrupt> {
        let answer = if self.extra_at < self.extra.len() {
            if let Some(need) = self.whole(answer) {
                return Ok(Step::Need(need));
            }
            None
        } else {
            answer
        };
        match answer {
            None => {}
            Some(Answer::Meta(None)) => self.at += 1,
            Some(Answer::Meta(Some(m))) => {
                if m.history.back().is_none() {
                    self.at += 1;
                } else {
                    self.meta = Some(m);
                }
            }
            Some(Answer::Doc(doc)) => {
                let meta = self.meta.take().expect("a document is asked after its metadata");
                if let Some(done) = self.place(meta, doc)? {
                    return Ok(Step::Done(done));
                }
                self.at += 1;
            }
        }
        loop {
            let Some(&(seq, id)) = self.entries.get(self.at) else {
                return Ok(Step::Done(std::mem::take(&mut self.page)));
            };
            if self.meta.is_none() && self.own_unchanged(seq, id) {
                self.at += 1;
                continue;
            }
            let Some(meta) = &self.meta else { return Ok(Step::Need(Need::Meta(id))) };
            let current = &meta.history.back().expect("checked on arrival").1;
            let resumed = self.page.docs.is_empty() && self.spec.slices && self.spec.resume.is_some_and(|r| r.id == id && r.seq == seq);
            if !resumed && heads_from_wire(current).iter().all(|h| self.known(meta).contains(h)) {
                // The phone already has the current heads (its own push): nothing to send.
                self.meta = None;
                self.at += 1;
                continue;
            }
            return Ok(Step::Need(Need::Doc(id)));
        }
    }

    /// The records asked whole that are not among the entries: each one's metadata, then its
    /// document, which goes into the page as it is stored. Returns what it needs next, or
    /// `None` once they are all done (then the entries' turn begins, with no answer pending).
    fn whole(&mut self, answer: Option<Answer>) -> Option<Need> {
        let id = self.extra[self.extra_at];
        match answer {
            None => {}
            Some(Answer::Meta(Some(m))) if self.scope.contains(&m.commune) && m.history.back().is_some() => {
                self.meta = Some(m);
                return Some(Need::Doc(id));
            }
            // Unknown, or outside the phone's scope: nothing is said about it.
            Some(Answer::Meta(_)) => self.extra_at += 1,
            Some(Answer::Doc(doc)) => {
                let meta = self.meta.take().expect("a document is asked after its metadata");
                if let Some(doc) = doc {
                    // At least one record per page; past the budget, the phone asks again next time.
                    if self.page.docs.is_empty() || self.bytes + doc.len() <= self.spec.budget {
                        self.bytes += doc.len();
                        let heads = if self.spec.heads_from_doc { Vec::new() } else { meta.history.back().expect("checked on arrival").1.clone() };
                        self.page.docs.push(PullDoc { id, changes: doc, heads });
                    }
                }
                self.extra_at += 1;
            }
        }
        self.extra.get(self.extra_at).map(|id| Need::Meta(*id))
    }

    /// The heads the phone is known to have of a record.
    fn known(&self, meta: &RecordMeta) -> Vec<ChangeHash> {
        let id = self.entries[self.at].1;
        let mut known = Vec::new();
        if !self.want_full.contains(&id) {
            known.extend(meta.delivered_heads(self.cursor, self.read_at).unwrap_or_default());
            if let Some(h) = self.pushed.get(&id) {
                known.extend(heads_from_wire(h));
            }
        }
        known
    }

    /// Where the changes the phone lacks begin in the stored document of the current entry, when
    /// what it holds of the record is a version the stored bytes begin with
    /// ([`RecordMeta::delivered_end`]) and, on a fast link, changes it pushed in this request
    /// (which are in the bytes after it: sent again, they cost bytes where finding the others
    /// costs the server a load; see [`PageSpec::slow_link`]).
    fn prefix_held(&self, meta: &RecordMeta, stored_len: usize) -> Option<usize> {
        let id = self.entries[self.at].1;
        if self.want_full.contains(&id) || (self.spec.slow_link && self.pushed.contains_key(&id)) {
            return None;
        }
        meta.delivered_end(self.cursor, self.read_at, stored_len)
    }

    /// Puts the current entry's record in the page, given its stored document; `Some` when the
    /// page is finished with it.
    fn place(&mut self, meta: RecordMeta, doc: Option<Vec<u8>>) -> Result<Option<Page>, Corrupt> {
        let Some(doc) = doc else { return Ok(None) };
        let (seq, id) = self.entries[self.at];
        let current = meta.history.back().expect("checked on arrival").1.clone();
        // Everything before this entry is in this page or already on the phone.
        let before = if self.at == 0 { self.cursor } else { self.entries[self.at - 1].0 };
        if self.page.docs.is_empty() && self.spec.slices {
            if let Some(r) = self.spec.resume.filter(|r| r.id == id && r.seq == seq) {
                return Ok(Some(self.slice((seq, id), &current, &doc, r.offset, before)));
            }
        }
        let known = self.known(&meta);
        // The common case needs no Automerge work: a phone with nothing of the record gets the
        // stored document as it is (on a slow link, its changes if they weigh less), and one
        // that holds a version the stored bytes begin with gets the bytes after it.
        let whole = known.is_empty();
        let changes = if let Some(end) = self.prefix_held(&meta, doc.len()) {
            Some(doc[end..].to_vec())
        } else if !whole {
            let mut d = AutoCommit::load(&doc).map_err(|e| corrupt("record document", e))?;
            Some(d.save_after(&known))
        } else if self.spec.slow_link {
            let mut d = AutoCommit::load(&doc).map_err(|e| corrupt("record document", e))?;
            sync_protocol::doc::changes_if_lighter(&mut d, doc.len())
        } else {
            None
        };
        let len = changes.as_ref().map_or(doc.len(), Vec::len);
        if len == 0 {
            return Ok(None);
        }
        if self.bytes + len > self.spec.budget {
            if self.page.docs.is_empty() && self.spec.slices {
                // Too large for any page on its own: its stored document goes in slices.
                return Ok(Some(self.slice((seq, id), &current, &doc, 0, before)));
            }
            if !self.page.docs.is_empty() {
                // Cut here: the phone has everything before this entry.
                self.page.next = before;
                self.page.more = true;
                return Ok(Some(std::mem::take(&mut self.page)));
            }
        }
        // Sent whole, to a phone that reads the heads from the bytes: they stay out.
        let heads = if whole && self.spec.heads_from_doc { Vec::new() } else { current };
        let changes = changes.unwrap_or(doc);
        self.bytes += changes.len();
        self.page.docs.push(PullDoc { id, changes, heads });
        Ok(None)
    }

    /// A page holding one slice of record `id`'s stored document `doc` (at feed position
    /// `seq`) from `offset`. The cursor stays at `before` until the last slice, which moves it
    /// past the record. An offset the document does not have (it shrank? a forged resume)
    /// starts over.
    fn slice(&mut self, (seq, id): (u64, RecordId), heads: &[Hash], doc: &[u8], offset: u64, before: u64) -> Page {
        let mut page = std::mem::take(&mut self.page);
        let total = doc.len();
        let start = if offset as usize >= total { 0 } else { offset as usize };
        let end = (start + self.spec.budget).min(total);
        page.docs.clear();
        page.part = Some(PullPart { id, seq, offset: start as u64, total: total as u64, bytes: doc[start..end].to_vec(), heads: heads.to_vec() });
        if end == total {
            page.next = seq;
            page.more = seq < page.high;
        } else {
            page.next = before;
            page.more = true;
        }
        page
    }
}
