//! An in-memory server and phones driven by the core alone: no store, no runtime, no network.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use indicators::{Counters, Quarter};
use sync_core::meta::{ActorOwner, RecordMeta};
use sync_core::org::{OrgTree, OrgUnit, Principal, Role};
use sync_core::plan::CommitPlan;
use sync_core::pull::{page_entries, scope_fingerprint, Answer, Cursor, Need, Page, PagePlanner, PageSpec, Step, PAGE_RECORDS};
use sync_core::push::{decide, merge, Context, Stored, Verdict};
use sync_protocol::automerge::{AutoCommit, ChangeHash};
use sync_protocol::wire::{PartResume, PushDoc, PushOutcome, PushResult, SyncRequest, SyncResponse};
use sync_protocol::{heads_from_wire, heads_to_wire, RecordId};

/// Province 04, district 047, communes 04701 and 04702.
pub fn tree() -> OrgTree {
    let u = |c: &str, p: Option<&str>, l: &str| OrgUnit::new(c, c, p.map(Into::into), l);
    OrgTree::new([u("04", None, "province"), u("047", Some("04"), "district"), u("04701", Some("047"), "commune"), u("04702", Some("047"), "commune")])
}

pub fn principal(name: &str, role: Role, unit: &str, device: &str) -> Principal {
    Principal { username: name.into(), role, org_unit: unit.into(), device_id: device.into() }
}

/// A server as a map of records, a feed and counters, applying the core's plans.
#[derive(Default)]
pub struct MemServer {
    pub records: HashMap<RecordId, Stored>,
    /// (commune, seq) → record: each record once, at its latest change.
    pub feed: BTreeMap<(String, u64), RecordId>,
    pub seq: u64,
    pub owners: HashMap<String, ActorOwner>,
    pub counters: HashMap<(String, Quarter), Counters>,
    pub writes: u64,
    /// The store's epoch (renewed by [`MemServer::restore`]).
    pub epoch: u64,
}

impl MemServer {
    /// One sync exchange: pushes merged and committed as one plan, then one pull page.
    pub fn sync(&mut self, who: &Principal, tree: &OrgTree, req: &SyncRequest) -> SyncResponse {
        let ctx = Context { who, tree, now: 1_750_000_000, own_actor: None, relay_open: false };
        let mut results = Vec::new();
        let mut writes = Vec::new();
        for push in &req.push {
            let verdict = match merge(ctx, push, self.records.get(&push.id).cloned()).expect("stored data decodes") {
                Ok(merged) => {
                    let owners: HashMap<String, ActorOwner> =
                        merged.actors().iter().filter_map(|a| self.owners.get(a).map(|o| (a.clone(), o.clone()))).collect();
                    decide(ctx, merged, &owners).expect("stored data decodes")
                }
                Err(v) => v,
            };
            let outcome = match verdict {
                Verdict::Write(p) => {
                    writes.push(*p);
                    PushOutcome::Accepted
                }
                Verdict::Unchanged => PushOutcome::Accepted,
                Verdict::Refuse(o) => o,
            };
            results.push(PushResult { id: push.id, outcome });
        }
        self.commit(CommitPlan::of(who, tree, writes, None));
        let accepted: HashMap<RecordId, Vec<[u8; 32]>> =
            req.push.iter().zip(&results).filter(|(_, r)| r.outcome == PushOutcome::Accepted).map(|(p, _)| (p.id, p.heads.clone())).collect();
        let communes = who.record_communes(tree);
        let scope = scope_fingerprint(&communes);
        let known = Cursor::decode(&req.cursor, scope, self.epoch);
        let page = self.pull(&communes, known, accepted, &req.want_full, PageSpec::of(req));
        SyncResponse {
            results,
            pull: page.docs,
            cursor: Cursor { seq: page.next, scope, read_at: page.high, epoch: self.epoch }.encode(),
            more: page.more,
            part: page.part,
            remaining: None,
            uploaded: None,
            scope: known.is_none().then_some(communes),
            epoch: self.epoch,
        }
    }

    /// Applies a plan as a store must: new sequence numbers, feed moves, exact counters.
    pub fn commit(&mut self, plan: CommitPlan) {
        if plan.is_empty() {
            return;
        }
        self.writes += 1;
        for mut w in plan.records {
            assert_eq!(self.records.get(&w.id).map(|s| s.meta.seq), w.base_seq, "planned on the stored version");
            self.seq += 1;
            if let Some(old) = w.base_seq {
                self.feed.remove(&(w.meta.commune.clone(), old));
            }
            self.feed.insert((w.meta.commune.clone(), self.seq), w.id);
            w.meta.stamp(self.seq);
            self.records.insert(w.id, Stored { meta: w.meta, doc: w.doc });
        }
        for ((unit, q), d) in plan.counters.iter() {
            self.counters.entry((unit.clone(), *q)).or_default().add(d);
        }
        self.counters.retain(|_, c| !c.is_zero());
        for (actor, owner) in plan.actor_claims {
            assert!(self.owners.insert(actor, owner).is_none(), "an actor is claimed once");
        }
    }

    pub fn pull(&self, communes: &[String], from: Option<Cursor>, pushed: HashMap<RecordId, Vec<[u8; 32]>>, want_full: &[RecordId], spec: PageSpec) -> Page {
        let cursor = from.map_or(0, |c| c.seq);
        let per_commune = communes
            .iter()
            .filter(|_| cursor < self.seq)
            .map(|c| self.feed.range((c.clone(), cursor + 1)..=(c.clone(), self.seq)).take(PAGE_RECORDS).map(|((_, s), id)| (*s, *id)).collect())
            .collect();
        let mut planner = PagePlanner::new(from, self.seq, page_entries(per_commune, self.seq), pushed, want_full, communes, spec);
        let mut answer = None;
        loop {
            match planner.step(answer.take()).expect("stored data decodes") {
                Step::Need(Need::Meta(id)) => answer = Some(Answer::Meta(self.records.get(&id).map(|s| s.meta.clone()))),
                Step::Need(Need::Doc(id)) => answer = Some(Answer::Doc(self.records.get(&id).map(|s| s.doc.clone()))),
                Step::Done(page) => return page,
            }
        }
    }

    /// The counters recomputed from the stored documents alone.
    pub fn recomputed_counters(&self, tree: &OrgTree) -> HashMap<(String, Quarter), Counters> {
        let mut sums: HashMap<(String, Quarter), Counters> = HashMap::new();
        for s in self.records.values() {
            let doc = AutoCommit::load(&s.doc).unwrap();
            let view = sync_protocol::doc::view(&doc).unwrap();
            let c = sync_protocol::Record::parse(&view).as_ref().and_then(indicators::Contribution::from_typed);
            for (unit, q, d) in indicators::deltas(None, c.as_ref(), |x| tree.chain(x)) {
                sums.entry((unit, q)).or_default().add(&d);
            }
        }
        sums.retain(|_, c| !c.is_zero());
        sums
    }

    pub fn meta(&self, id: &RecordId) -> Option<&RecordMeta> {
        self.records.get(id).map(|s| &s.meta)
    }
}

/// A phone: its documents, what it knows the server has, its cursor.
pub struct Phone {
    pub who: Principal,
    /// The phone's Automerge actor, in every document it holds (seeded: a run replays).
    pub actor: sync_protocol::automerge::ActorId,
    pub docs: BTreeMap<RecordId, AutoCommit>,
    /// The heads the server is known to have of each record.
    pub server_heads: HashMap<RecordId, Vec<ChangeHash>>,
    pub cursor: Vec<u8>,
    pub page_bytes: u32,
    part: Option<(PartResume, Vec<u8>)>,
    want_full: Vec<RecordId>,
}

impl Phone {
    pub fn new(who: Principal, actor: sync_protocol::automerge::ActorId, page_bytes: u32) -> Phone {
        Phone { who, actor, docs: BTreeMap::new(), server_heads: HashMap::new(), cursor: Vec::new(), page_bytes, part: None, want_full: Vec::new() }
    }

    /// The phone's copy of a record (an empty document with the phone's actor if new to it).
    fn doc(&mut self, id: RecordId) -> &mut AutoCommit {
        let actor = self.actor.clone();
        self.docs.entry(id).or_insert_with(|| AutoCommit::new().with_actor(actor))
    }

    /// Syncs until the server has nothing more: returns the number of exchanges.
    pub fn sync(&mut self, server: &mut MemServer, tree: &OrgTree) -> usize {
        let mut exchanges = 0;
        loop {
            exchanges += 1;
            assert!(exchanges < 1000, "a sync that does not finish");
            let mut push: Vec<PushDoc> = Vec::new();
            for (id, d) in self.docs.iter_mut() {
                let heads = d.get_heads();
                let have = self.server_heads.get(id).cloned();
                if have.as_ref() != Some(&heads) {
                    push.push(PushDoc { id: *id, changes: d.save_after(&have.unwrap_or_default()), heads: heads_to_wire(&heads) });
                }
            }
            let req = SyncRequest {
                cursor: self.cursor.clone(),
                push: push.clone(),
                want_full: std::mem::take(&mut self.want_full),
                page_bytes: self.page_bytes,
                resume: self.part.as_ref().map(|(r, _)| *r),
                ..Default::default()
            };
            let resp = server.sync(&self.who, tree, &req);
            for (p, r) in push.iter().zip(&resp.results) {
                match &r.outcome {
                    PushOutcome::Accepted => {
                        self.server_heads.insert(p.id, heads_from_wire(&p.heads));
                    }
                    PushOutcome::NeedFull => {
                        self.server_heads.remove(&p.id);
                    }
                    PushOutcome::Rejected { reason } => panic!("{}'s push of {} was refused: {reason}", self.who.username, p.id),
                }
            }
            for pd in resp.pull {
                let doc = self.doc(pd.id);
                doc.load_incremental(&pd.changes).unwrap();
                if doc.get_missing_deps(&[]).is_empty() {
                    self.server_heads.insert(pd.id, heads_from_wire(&pd.heads));
                } else {
                    self.want_full.push(pd.id);
                }
            }
            if let Some(part) = resp.part {
                let mut held = match self.part.take() {
                    Some((r, bytes)) if r.id == part.id && r.seq == part.seq && r.offset == part.offset => bytes,
                    _ => Vec::new(),
                };
                assert_eq!(held.len() as u64, part.offset, "slices come in order");
                held.extend(&part.bytes);
                if held.len() as u64 == part.total {
                    let doc = self.doc(part.id);
                    doc.load_incremental(&held).unwrap();
                    self.server_heads.insert(part.id, heads_from_wire(&part.heads));
                } else {
                    self.part = Some((PartResume { id: part.id, seq: part.seq, offset: held.len() as u64 }, held));
                }
            }
            self.cursor = resp.cursor;
            let unsent = self.docs.iter_mut().any(|(id, d)| {
                let heads = d.get_heads();
                self.server_heads.get(id) != Some(&heads)
            });
            if !resp.more && !unsent && self.want_full.is_empty() && self.part.is_none() {
                return exchanges;
            }
        }
    }
}

/// The role used for a reviewer's phone in the simulation.
pub fn reviewer(name: &str, device: &str) -> Principal {
    principal(name, Role::DistrictStaff, "047", device)
}

pub fn officer(name: &str, commune: &str, device: &str) -> Principal {
    principal(name, Role::CommuneOfficer, commune, device)
}
