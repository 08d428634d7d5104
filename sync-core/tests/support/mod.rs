//! An in-memory server and phones driven by the core alone: no store, no runtime, no network.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use indicators::{Counters, Quarter};
use sync_core::meta::{ActorOwner, RecordMeta};
use sync_core::org::{OrgTree, OrgUnit, Principal, Role};
use sync_core::exchange::Exchange;
use sync_core::plan::CommitPlan;
use sync_core::pull::{page_entries, Answer, Cursor, Need, Page, PagePlanner, PageSpec, Step, PAGE_RECORDS};
use sync_core::push::{decide, merge, Context, Stored, Verdict};
use sync_protocol::automerge::AutoCommit;
use sync_protocol::wire::{PushOutcome, PushResult, SyncRequest, SyncResponse};
use sync_protocol::RecordId;

/// Province 04, district 047, communes 04701 and 04702.
pub fn tree() -> OrgTree {
    let u = |c: &str, p: Option<&str>, l: &str| OrgUnit::new(c, c, p.map(Into::into), l);
    OrgTree::new([u("04", None, "province"), u("047", Some("04"), "district"), u("04701", Some("047"), "commune"), u("04702", Some("047"), "commune")])
}

pub fn principal(name: &str, role: Role, unit: &str, device: &str) -> Principal {
    Principal { username: name.into(), role, org_unit: unit.into(), device_id: device.into() }
}

/// A server as a map of records, a feed and counters, applying the core's plans.
#[derive(Default, Clone)]
pub struct MemServer {
    pub records: HashMap<RecordId, Stored>,
    /// (commune, seq) → record: each record once, at its latest change.
    pub feed: BTreeMap<(String, u64), RecordId>,
    pub seq: u64,
    pub owners: HashMap<String, ActorOwner>,
    pub counters: HashMap<(String, Quarter), Counters>,
    pub writes: u64,
    /// The store's epoch (renewed by [`MemServer::restored`]).
    pub epoch: u64,
    /// Whether pushes may relay other devices' changes (after a restore).
    pub relay: bool,
    /// The audit entries the exchanges called for (staff reading records).
    pub audit: Vec<sync_core::plan::AuditEvent>,
}

impl MemServer {
    /// One sync exchange: pushes merged and committed as one plan, then one pull page.
    pub fn sync(&mut self, who: &Principal, tree: &OrgTree, req: &SyncRequest) -> SyncResponse {
        let ex = Exchange::new(who, tree, req);
        let own = ex.own_actor();
        let ctx = Context { who, tree, now: 1_750_000_000, own_actor: own.as_deref(), relay_open: self.relay, inflation: None, report_rows: true };
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
        let heads = sync_core::pull::WriteHeads::of(&writes);
        let written = heads.at(self.commit(CommitPlan::of(who, tree, writes, None)));
        let accepted = ex.accepted(None, &results, &written);
        let known = ex.cursor(self.epoch);
        let page = self.pull(ex.communes(), known, accepted, &req.want_full, ex.spec());
        let resp = ex.reply(results, page, known, self.epoch, None, None);
        self.audit.extend(sync_core::exchange::read_audit(who, &resp));
        resp
    }

    /// This server as a backup of it restored: the same data, a new epoch, relays open.
    pub fn restored(&self, epoch: u64) -> MemServer {
        MemServer { epoch, relay: true, ..self.clone() }
    }

    /// Applies a plan as a store must: new sequence numbers, feed moves, exact counters.
    /// Returns the feed position each record was given.
    pub fn commit(&mut self, plan: CommitPlan) -> Vec<(RecordId, u64)> {
        let mut positions = Vec::new();
        if plan.is_empty() {
            return positions;
        }
        self.writes += 1;
        for mut w in plan.records {
            assert_eq!(self.records.get(&w.id).map(|s| s.meta.seq), w.base_seq, "planned on the stored version");
            self.seq += 1;
            if let Some(old) = w.base_seq {
                self.feed.remove(&(w.meta.commune.clone(), old));
            }
            self.feed.insert((w.meta.commune.clone(), self.seq), w.id);
            positions.push((w.id, self.seq));
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
        positions
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

/// A phone's store as the phone's session (`client-core`) needs it, in memory.
#[derive(Default)]
pub struct SimStore {
    actor: Option<sync_protocol::automerge::ActorId>,
    records: BTreeMap<RecordId, client_core::RecordMeta>,
    docs: HashMap<RecordId, Vec<u8>>,
    partial: Option<client_core::Partial>,
    state: client_core::SyncState,
}

impl client_core::LocalStore for SimStore {
    type Error = client_core::CoreError;
    fn actor(&self) -> &sync_protocol::automerge::ActorId {
        self.actor.as_ref().unwrap()
    }
    fn records(&self) -> &BTreeMap<RecordId, client_core::RecordMeta> {
        &self.records
    }
    fn doc_bytes(&self, id: RecordId) -> Result<Vec<u8>, Self::Error> {
        Ok(self.docs[&id].clone())
    }
    fn update_meta(&mut self, id: RecordId, change: &mut dyn FnMut(&mut client_core::RecordMeta)) -> Result<(), Self::Error> {
        change(self.records.get_mut(&id).unwrap());
        Ok(())
    }
    fn put_pulled(&mut self, id: RecordId, meta: client_core::RecordMeta, doc: &[u8]) -> Result<(), Self::Error> {
        self.records.insert(id, meta);
        self.docs.insert(id, doc.to_vec());
        Ok(())
    }
    fn remove_record(&mut self, id: RecordId) -> Result<(), Self::Error> {
        self.records.remove(&id);
        self.docs.remove(&id);
        Ok(())
    }
    fn partial(&self) -> Result<Option<client_core::Partial>, Self::Error> {
        Ok(self.partial.clone())
    }
    fn put_partial(&mut self, partial: &client_core::Partial) -> Result<(), Self::Error> {
        self.partial = Some(partial.clone());
        Ok(())
    }
    fn clear_partial(&mut self) -> Result<(), Self::Error> {
        self.partial = None;
        Ok(())
    }
    fn sync_state(&self) -> &client_core::SyncState {
        &self.state
    }
    fn set_sync_state(&mut self, state: client_core::SyncState) -> Result<(), Self::Error> {
        self.state = state;
        Ok(())
    }
    fn barrier(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl SimStore {
    /// Records with changes the server does not have.
    pub fn pending(&self) -> usize {
        client_core::pending_count(&self.records)
    }
}

/// A phone: its store, driven by the phone's real sync session (`client_core::Session`), the
/// one `client-sdk` and the app's WebAssembly module drive.
pub struct Phone {
    pub who: Principal,
    /// The phone's Automerge actor, in every document it holds (seeded: a run replays).
    pub actor: sync_protocol::automerge::ActorId,
    pub store: SimStore,
    /// The first download page the session asks for (then it adapts), and the first upload
    /// page unless `push_page_bytes` says otherwise.
    pub page_bytes: u32,
    pub push_page_bytes: Option<u32>,
    /// The phone's clock, seconds: each exchange takes `secs_per_exchange` of it.
    clock: f64,
    /// 0.05 s unless a test makes the link slow.
    pub secs_per_exchange: f64,
    /// Records pushed whole, as a document and as changes (Automerge's chunk type).
    pub pushed_whole: (usize, usize),
    /// Records pushed whole without their heads.
    pub pushed_headless: usize,
    /// Records an answer sent back that the phone pushed in the same exchange.
    pub echoed: usize,
    /// The exchange (counted from 1 in each sync) whose answer is lost after the server has
    /// written what it carried, as on a link cut at the wrong moment.
    pub lose_answer_of: Option<usize>,
    /// The last sync's report.
    pub report: Option<client_core::SyncReport>,
    /// How each request came (its framing and accept flags), in order.
    pub requests: Vec<(sync_protocol::wire::Framing, u8)>,
    /// Answer as a server built before the records dictionary and the server's time: never
    /// with either.
    pub old_server: bool,
    /// Of each exchange's `secs_per_exchange`, the seconds spent on the server (told to a
    /// phone that asks, unless `old_server`).
    pub server_secs: f64,
    /// The exchanges (counted from 1 in each sync) that a replica of a build before the
    /// records dictionary answers, behind the same load balancer as this server: it refuses a
    /// request made with the dictionary (400 `bad_sync_message`) and answers others as
    /// `old_server` does.
    pub older_replica: std::collections::BTreeSet<usize>,
    /// Requests the older replica refused.
    pub refused: usize,
}

impl Phone {
    pub fn new(who: Principal, actor: sync_protocol::automerge::ActorId, page_bytes: u32) -> Phone {
        let store = SimStore { actor: Some(actor.clone()), ..SimStore::default() };
        Phone { who, actor, store, page_bytes, push_page_bytes: None, clock: 0.0, secs_per_exchange: 0.05, pushed_whole: (0, 0), pushed_headless: 0, echoed: 0, lose_answer_of: None, report: None, requests: vec![], old_server: false, server_secs: 0.0, older_replica: Default::default(), refused: 0 }
    }

    /// The ids of the records the phone holds.
    pub fn ids(&self) -> Vec<RecordId> {
        self.store.records.keys().copied().collect()
    }

    /// The phone's copy of a record.
    pub fn doc(&self, id: RecordId) -> AutoCommit {
        client_core::load_doc(id, &self.store.docs[&id], &self.actor).unwrap()
    }

    /// Makes `n` news items of the phone's commune whose titles carry `randoms` random hex
    /// strings of 32 characters each: titles that compress little, so that each exchange
    /// carries enough bytes to measure the link by.
    pub fn put_news_hard_to_compress(&mut self, n: usize, randoms: usize) {
        for i in 0..n {
            let title = format!("Tin số {i}: {}", (0..randoms).map(|_| sync_protocol::automerge::ActorId::random().to_hex_string()).collect::<String>());
            let news = serde_json::json!({"commune": self.who.org_unit, "published_on": format!("2025-01-{:02}", 1 + i % 28), "title": title});
            let d = sync_protocol::doc::new_record(sync_protocol::RecordKind::NewsItem, &news, self.actor.clone()).unwrap();
            self.put(RecordId::random(), d);
        }
    }

    /// Writes a record made or edited on the phone (pending until it is pushed).
    pub fn put(&mut self, id: RecordId, mut d: AutoCommit) {
        let kind = sync_protocol::doc::kind_of(&d).unwrap();
        let mut meta = self.store.records.get(&id).cloned().unwrap_or(client_core::RecordMeta { kind, heads: vec![], server_heads: vec![], rejected: None, conflicts: 0 });
        client_core::refresh_meta(&mut meta, &mut d).unwrap();
        self.store.docs.insert(id, sync_protocol::doc::save_record(&mut d));
        self.store.records.insert(id, meta);
    }

    /// Syncs until the session is done: returns the number of exchanges.
    pub fn sync(&mut self, server: &mut MemServer, tree: &OrgTree) -> usize {
        let options = client_core::SyncOptions { first_pull_page: self.page_bytes as usize, first_push_page: self.push_page_bytes.unwrap_or(self.page_bytes) as usize, ..Default::default() };
        let mut session = client_core::Session::new(&self.store, &options, self.clock).unwrap();
        let mut exchanges = 0;
        loop {
            let body = match session.next(&self.store, self.clock).unwrap() {
                client_core::Step::Done(report) => {
                    assert_eq!(report.rejected, 0, "{}'s push was refused", self.who.username);
                    self.report = Some(report);
                    return exchanges;
                }
                client_core::Step::Send(body) => body,
            };
            exchanges += 1;
            assert!(exchanges < 1000, "a sync that does not finish");
            let (mut req, framing) = SyncRequest::decode_framed(&body).unwrap();
            self.requests.push((framing, req.accept));
            assert!(req.push_part.is_none(), "the simulation's records fit a page");
            for p in req.push.iter().filter(|p| self.store.records[&p.id].server_heads.is_empty()) {
                // After the magic number and checksum: 0 a document, 1 a change.
                match p.changes.get(8) {
                    Some(0) => self.pushed_whole.0 += 1,
                    Some(1) => self.pushed_whole.1 += 1,
                    _ => {}
                }
                self.pushed_headless += p.heads.is_empty() as usize;
            }
            // Every other exchange as from a phone on a slow link: records sent whole may come
            // as their changes, and the phone must end with the same records either way.
            if exchanges % 2 == 0 {
                req.accept |= sync_protocol::wire::FLAG_SLOW_LINK;
            }
            let older = self.older_replica.contains(&exchanges);
            if older && (framing.dict || framing.checksums) {
                self.refused += 1;
                self.clock += self.secs_per_exchange;
                let unread = session.unread_dictionary(400, "bad_sync_message");
                assert!(unread, "a refusal of the dictionary is told apart");
                continue;
            }
            let resp = server.sync(&self.who, tree, &req);
            self.echoed += resp.pull.iter().filter(|d| req.push.iter().any(|p| p.id == d.id)).count();
            let mut answer_framing = framing.answer(&req).timed(&req, self.server_secs);
            if self.old_server || older {
                (answer_framing.dict, answer_framing.server_ms, answer_framing.checksums) = (false, None, false);
            }
            let answer = resp.encode_as(answer_framing);
            self.clock += self.secs_per_exchange;
            if self.lose_answer_of == Some(exchanges) {
                session.failed(self.clock);
                continue;
            }
            session.answered(&mut self.store, &answer, self.clock).unwrap();
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
