//! The core's verdicts, plans and pages, each on in-memory data.

mod support;

use std::collections::HashMap;

use serde_json::json;
use sync_core::exchange::Exchange;
use sync_core::meta::ActorOwner;
use sync_core::plan::CommitPlan;
use sync_core::pull::{Cursor, PageSpec};
use sync_core::push::{decide, merge, Context, Merged, Verdict};
use sync_protocol::automerge::{ActorId, AutoCommit};
use sync_protocol::wire::{PartResume, PushDoc, PushOutcome, PushResult, SyncRequest, MIN_PAGE_BYTES};
use sync_protocol::{doc, heads_from_wire, heads_to_wire, RecordId, RecordKind};

use support::{officer, reviewer, tree, MemServer};

fn news(commune: &str, date: &str) -> AutoCommit {
    doc::new_record(RecordKind::NewsItem, &json!({"commune": commune, "published_on": date}), ActorId::random()).unwrap()
}

fn push_of(id: RecordId, d: &mut AutoCommit) -> PushDoc {
    PushDoc { id, changes: d.save(), heads: heads_to_wire(&d.get_heads()) }
}

fn verdict(server: &MemServer, who: &sync_core::org::Principal, push: &PushDoc) -> Verdict {
    verdict_in(server, who, push, None, false)
}

fn verdict_in(server: &MemServer, who: &sync_core::org::Principal, push: &PushDoc, own_actor: Option<&str>, relay_open: bool) -> Verdict {
    let tree = tree();
    let ctx = Context { who, tree: &tree, now: 0, own_actor, relay_open, inflation: None, report_rows: true };
    match merge(ctx, push, server.records.get(&push.id).cloned()).unwrap() {
        Ok(m) => {
            let owners: HashMap<String, ActorOwner> = m.actors().iter().filter_map(|a| server.owners.get(a).map(|o| (a.clone(), o.clone()))).collect();
            decide(ctx, m, &owners).unwrap()
        }
        Err(v) => v,
    }
}

fn refused(v: &Verdict) -> String {
    match v {
        Verdict::Refuse(PushOutcome::Rejected { reason }) => reason.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_new_record_is_checked_for_scope_schema_and_actor() {
    let (tree, server) = (tree(), MemServer::default());
    let an = officer("an", "04701", "an-1");
    let mut d = news("04701", "2025-02-01");
    let id = RecordId::random();
    let Verdict::Write(p) = verdict(&server, &an, &push_of(id, &mut d)) else { panic!("accepted") };
    assert_eq!((p.meta.commune.as_str(), p.meta.seq, p.base_seq), ("04701", 0, None));
    assert_eq!(p.new_actors, vec![d.get_actor().to_hex_string()], "the new actor becomes the device's");
    assert_eq!(p.meta.date.as_deref(), Some("2025-02-01"));
    assert_eq!(p.meta.history.back().unwrap().1, heads_to_wire(&d.get_heads()));

    // Another commune's record, an unknown commune, a district as commune: refused.
    assert!(refused(&verdict(&server, &an, &push_of(RecordId::random(), &mut news("04702", "2025-02-01")))).contains("outside your scope"));
    assert!(refused(&verdict(&server, &an, &push_of(RecordId::random(), &mut news("09999", "2025-02-01")))).contains("unknown commune"));
    assert!(refused(&verdict(&server, &reviewer("d", "w"), &push_of(RecordId::random(), &mut news("047", "2025-02-01")))).contains("not a commune"));
    // Bytes that are not Automerge.
    let junk = PushDoc { id: RecordId::random(), changes: b"not automerge".to_vec(), heads: vec![] };
    let why = refused(&verdict(&server, &an, &junk));
    assert!(why.contains("not Automerge data"), "{why}");
    let _ = tree;
}

#[test]
fn edits_are_merged_onto_the_stored_version_and_retries_change_nothing() {
    let tree = tree();
    let mut server = MemServer::default();
    let an = officer("an", "04701", "an-1");
    let mut d = news("04701", "2025-02-01");
    let id = RecordId::random();
    let first = push_of(id, &mut d);
    let Verdict::Write(p) = verdict(&server, &an, &first) else { panic!() };
    server.commit(CommitPlan::of(&an, &tree, vec![*p], None));
    assert!(matches!(verdict(&server, &an, &first), Verdict::Unchanged), "a retried push");

    // An edit that only carries the new change, from the same device.
    let before = d.get_heads();
    doc::set_path(&mut d, "title", &json!("Tin mới")).unwrap();
    let edit = PushDoc { id, changes: d.save_after(&before), heads: heads_to_wire(&d.get_heads()) };
    let Verdict::Write(p) = verdict(&server, &an, &edit) else { panic!() };
    assert_eq!(p.base_seq, Some(1));
    assert!(p.new_actors.is_empty(), "the actor is already the device's");

    // The same changes from another device of the same commune: the actor is not theirs.
    let binh = officer("binh", "04701", "binh-1");
    assert!(refused(&verdict(&server, &binh, &edit)).contains("another device"));

    // Once the edit is stored, the first push's heads are no longer the document's heads but
    // are in its history: a late retry of it changes nothing. A head the server never had is
    // not taken on the phone's word.
    let Verdict::Write(p) = verdict(&server, &an, &edit) else { panic!() };
    server.commit(CommitPlan::of(&an, &tree, vec![*p], None));
    assert!(matches!(verdict(&server, &an, &first), Verdict::Unchanged), "a late retry of an older version");
    let offer = |heads| PushDoc { id, changes: Vec::new(), heads };
    assert!(matches!(verdict(&server, &an, &offer(first.heads.clone())), Verdict::Unchanged), "an offer of an older version the server holds");
    assert!(matches!(verdict(&server, &an, &offer(vec![[7u8; 32]])), Verdict::Refuse(PushOutcome::NeedFull)), "an offer of a version the server lacks");
    let mut claims_more = first.clone();
    claims_more.heads.push([7u8; 32]);
    assert!(matches!(verdict(&server, &an, &claims_more), Verdict::Refuse(PushOutcome::NeedFull)), "changes short of what they claim, onto a stored record");
    claims_more.id = RecordId::random();
    assert!(refused(&verdict(&server, &an, &claims_more)).contains("do not hold the heads"), "a new record's changes short of what they claim");

    // An edit whose dependencies the server lacks: send the whole document.
    let mut other = AutoCommit::load(&d.save()).unwrap();
    let mid = other.get_heads();
    doc::set_path(&mut other, "title", &json!("một")).unwrap();
    let after_mid = other.get_heads();
    doc::set_path(&mut other, "title", &json!("hai")).unwrap();
    let gap = PushDoc { id, changes: other.save_after(&after_mid), heads: heads_to_wire(&other.get_heads()) };
    let _ = mid;
    assert!(matches!(verdict(&server, &an, &gap), Verdict::Refuse(PushOutcome::NeedFull)));

    // `commune` and `kind` are fixed.
    let mut moved = AutoCommit::load(&server.records[&id].doc).unwrap();
    let stored = moved.get_heads();
    moved.set_actor(d.get_actor().clone());
    sync_protocol::automerge::transaction::Transactable::put(&mut moved, sync_protocol::automerge::ROOT, "commune", "04702").unwrap();
    let push = PushDoc { id, changes: moved.save_after(&stored), heads: heads_to_wire(&moved.get_heads()) };
    assert!(refused(&verdict(&server, &an, &push)).contains("`commune` is fixed"));
}

#[test]
fn a_plan_moves_counters_along_the_chain_and_claims_each_actor_once() {
    let tree = tree();
    let mut server = MemServer::default();
    let an = officer("an", "04701", "an-1");
    let actor = ActorId::random();
    let mut writes = Vec::new();
    let mut ids = Vec::new();
    for date in ["2025-02-01", "2025-03-01"] {
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": date}), actor.clone()).unwrap();
        let id = RecordId::random();
        ids.push(id);
        let Verdict::Write(p) = verdict(&server, &an, &push_of(id, &mut d)) else { panic!() };
        writes.push(*p);
    }
    let plan = CommitPlan::of(&an, &tree, writes, None);
    assert_eq!(plan.actor_claims, vec![(actor.to_hex_string(), ActorOwner { username: "an".into(), device_id: "an-1".into() })]);
    let q1: indicators::Quarter = "2025Q1".parse::<indicators::Period>().unwrap().quarters()[0];
    let mut touched = plan.counters.touched();
    touched.sort();
    assert_eq!(touched, [("04".to_string(), q1), ("047".to_string(), q1), ("04701".to_string(), q1)]);
    server.commit(plan);
    for unit in ["04701", "047", "04"] {
        assert_eq!(server.counters[&(unit.to_string(), q1)].news_items(), 2, "{unit}");
    }
    // Deleting one: its contribution leaves every unit of the chain.
    let mut d = AutoCommit::load(&server.records[&ids[0]].doc).unwrap();
    d.set_actor(actor);
    let before = d.get_heads();
    doc::delete_record(&mut d, "recorded twice").unwrap();
    let push = PushDoc { id: ids[0], changes: d.save_after(&before), heads: heads_to_wire(&d.get_heads()) };
    let Verdict::Write(p) = verdict(&server, &an, &push) else { panic!() };
    assert!(p.meta.deleted);
    server.commit(CommitPlan::of(&an, &tree, vec![*p], None));
    assert_eq!(server.counters[&("047".to_string(), q1)].news_items(), 1);
    assert_eq!(server.counters, server.recomputed_counters(&tree));
}

/// Whose changes a push may carry: its own device's, a new actor only if it is the one the
/// phone names, and other devices' only while the relay window is open (after a restore).
#[test]
fn other_devices_changes_are_taken_only_while_relays_are_open() {
    let tree = tree();
    let mut server = MemServer::default();
    let (an, binh) = (officer("an", "04701", "an-1"), officer("binh", "04701", "binh-1"));
    let mut d = news("04701", "2025-02-01");
    let an_actor = d.get_actor().to_hex_string();
    let id = RecordId::random();
    let Verdict::Write(p) = verdict_in(&server, &an, &push_of(id, &mut d), Some(&an_actor), false) else { panic!("accepted") };
    assert_eq!(p.new_actors, vec![an_actor.clone()]);
    server.commit(CommitPlan::of(&an, &tree, vec![*p], None));
    // An's next edit, pushed by Binh's phone (which received it): another device's actor.
    doc::set_path(&mut d, "title", &json!("Sửa lại")).unwrap();
    let stored_heads = AutoCommit::load(&server.records[&id].doc).unwrap().get_heads();
    let edit = PushDoc { id, changes: d.save_after(&stored_heads), heads: heads_to_wire(&d.get_heads()) };
    let binh_actor = ActorId::random().to_hex_string();
    assert!(refused(&verdict_in(&server, &binh, &edit, Some(&binh_actor), false)).contains("belongs to another device"));
    let Verdict::Write(p) = verdict_in(&server, &binh, &edit, Some(&binh_actor), true) else { panic!("relayed") };
    assert!(p.new_actors.is_empty(), "a relayed actor is not claimed");
    // A record the server never saw, made by a device it never saw, pushed by Binh: refused
    // unless relays are open (then not claimed: its own device claims it when it comes back);
    // an older phone that names no actor claims it, as before.
    let mut stranger = news("04701", "2025-03-01");
    let push = push_of(RecordId::random(), &mut stranger);
    assert!(refused(&verdict_in(&server, &binh, &push, Some(&binh_actor), false)).contains("neither this device's"));
    let Verdict::Write(p) = verdict_in(&server, &binh, &push, Some(&binh_actor), true) else { panic!("relayed") };
    assert!(p.new_actors.is_empty());
    let Verdict::Write(p) = verdict_in(&server, &binh, &push, None, false) else { panic!("claimed") };
    assert_eq!(p.new_actors, vec![stranger.get_actor().to_hex_string()]);
}

#[test]
fn the_server_edits_a_record_on_a_reviewers_behalf() {
    let tree = tree();
    let mut server = MemServer::default();
    let an = officer("an", "04701", "an-1");
    let mut d = news("04701", "2025-02-01");
    let id = RecordId::random();
    let Verdict::Write(p) = verdict(&server, &an, &push_of(id, &mut d)) else { panic!() };
    server.commit(CommitPlan::of(&an, &tree, vec![*p], None));
    let dung = reviewer("dung", "server");
    let ctx = Context { who: &dung, tree: &tree, now: 0, own_actor: None, relay_open: false, inflation: None, report_rows: true };
    let merged = Merged::edited(id, server.records[&id].clone(), ActorId::random(), |d| doc::set_path(d, "title", &json!("Đã rà soát"))).unwrap().unwrap();
    let Verdict::Write(p) = decide(ctx, merged, &HashMap::new()).unwrap() else { panic!() };
    assert_eq!(p.base_seq, Some(1));
    // An edit that changes nothing is no write.
    let same = Merged::edited(id, server.records[&id].clone(), ActorId::random(), |_| Ok(())).unwrap();
    assert!(matches!(same, Err(Verdict::Unchanged)));
}

#[test]
fn pages_keep_to_their_budget_and_large_records_go_in_resumable_slices() {
    let tree = tree();
    let mut server = MemServer::default();
    let an = officer("an", "04701", "an-1");
    // A record far larger than a small page: notes rewritten many times.
    let mut big = news("04701", "2025-02-01");
    for i in 0..40 {
        let text: String = (0..600).map(|j| char::from(b'a' + ((i * 7 + j * 13) % 26) as u8)).collect();
        doc::set_path(&mut big, "title", &json!(text)).unwrap();
    }
    let big_id = RecordId::random();
    let mut small: Vec<RecordId> = Vec::new();
    let mut pushes = vec![push_of(big_id, &mut big)];
    for _ in 0..30 {
        let id = RecordId::random();
        small.push(id);
        pushes.push(push_of(id, &mut news("04701", "2025-02-01")));
    }
    for p in &pushes {
        let Verdict::Write(w) = verdict(&server, &an, p) else { panic!() };
        server.commit(CommitPlan::of(&an, &tree, vec![*w], None));
    }
    let scope = vec!["04701".to_string()];
    let spec = |resume| PageSpec::of(&SyncRequest { page_bytes: MIN_PAGE_BYTES, resume, ..Default::default() });
    // The first page is the big record's first slice; slices resume where the phone is.
    let mut got: Vec<u8> = Vec::new();
    let mut cursor = 0;
    let mut resume = None;
    let mut pages = 0;
    loop {
        let page = server.pull(&scope, Some(Cursor { seq: cursor, scope: 0, read_at: cursor, epoch: 1 }).filter(|c| c.seq > 0), HashMap::new(), &[], spec(resume));
        pages += 1;
        let bytes: usize = page.docs.iter().map(|d| d.changes.len()).sum::<usize>() + page.part.as_ref().map_or(0, |p| p.bytes.len());
        assert!(bytes <= MIN_PAGE_BYTES as usize, "{bytes} bytes in a {MIN_PAGE_BYTES}-byte page");
        if let Some(part) = &page.part {
            assert_eq!(part.offset as usize, got.len());
            got.extend(&part.bytes);
            resume = Some(PartResume { id: part.id, seq: part.seq, offset: got.len() as u64 });
        } else {
            resume = None;
        }
        for d in &page.docs {
            assert!(small.contains(&d.id));
        }
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    assert_eq!(got, server.records[&big_id].doc, "the slices make up the stored document");
    assert!(pages > 5, "{pages} pages");
    // The phone's own push is not sent back; a cursor past the end answers the end.
    let pushed: HashMap<RecordId, Vec<[u8; 32]>> = pushes.iter().map(|p| (p.id, p.heads.clone())).collect();
    let none = server.pull(&scope, None, pushed, &[], PageSpec::of(&SyncRequest::default()));
    assert!(none.docs.is_empty() && !none.more && none.next == server.seq);
    let forged = server.pull(&scope, Some(Cursor { seq: u64::MAX, scope: 0, read_at: u64::MAX, epoch: 1 }), HashMap::new(), &[], PageSpec::of(&SyncRequest::default()));
    assert_eq!((forged.next, forged.docs.len()), (server.seq, 0));
}

#[test]
fn a_cursor_made_for_another_scope_or_epoch_starts_over() {
    let c = Cursor { seq: 42, scope: 7, read_at: 50, epoch: 99 };
    assert_eq!(Cursor::decode(&c.encode(), 7, 99), Some(c));
    // The forms phones hold from before epochs: taken as this epoch's.
    let v2 = postcard::to_allocvec(&(42u64, 7u64, 50u64)).unwrap();
    assert_eq!(Cursor::decode(&v2, 7, 99), Some(c));
    assert_eq!(Cursor::decode(&v2, 8, 99), None);
    let old = postcard::to_allocvec(&(42u64, 7u64)).unwrap();
    assert_eq!(Cursor::decode(&old, 7, 99), Some(Cursor { seq: 42, scope: 7, read_at: 42, epoch: 99 }));
    assert_eq!(Cursor::decode(&old, 8, 99), None);
    // Read before its own position: not a cursor this server made.
    assert_eq!(Cursor::decode(&Cursor { seq: 42, scope: 7, read_at: 41, epoch: 99 }.encode(), 7, 99), None);
    assert_eq!(Cursor::decode(&c.encode(), 8, 99), None);
    // Made before the store was restored (another epoch): its positions name other records now.
    assert_eq!(Cursor::decode(&c.encode(), 7, 100), None);
    assert_eq!(Cursor::decode(b"\xff\xff", 7, 99), None);
    assert_eq!(Cursor::decode(&[], 7, 99), None);
}

/// A phone is taken to hold a record's version only if it could not have missed it: the version
/// at or before its cursor, still the latest when the phone read the feed that far. (The seeded
/// simulation found the case: a reviewer paging while an officer's edit moved the record on was
/// sent only the changes after a version it never had, and silently diverged.)
#[test]
fn only_versions_the_phone_read_are_taken_as_known() {
    let (h1, h5, h9) = ([1u8; 32], [5u8; 32], [9u8; 32]);
    let mut d = news("04701", "2025-01-01");
    let id = RecordId::random();
    let Verdict::Write(p) = verdict(&MemServer::default(), &officer("an", "04701", "an-1"), &push_of(id, &mut d)) else { panic!() };
    let mut meta = p.meta;
    meta.history = [(1, vec![h1]), (5, vec![h5]), (9, vec![h9])].into_iter().collect();
    let heads = |h: [u8; 32]| Some(vec![sync_protocol::automerge::ChangeHash(h)]);
    assert_eq!(meta.delivered_heads(6, 6), heads(h5), "read at 6: version 5 was the latest then");
    assert_eq!(meta.delivered_heads(6, 8), heads(h5), "superseded only after the read");
    assert_eq!(meta.delivered_heads(6, 10), None, "superseded at 9, before the read at 10: it may have left the feed unread");
    assert_eq!(meta.delivered_heads(0, 10), None, "nothing read yet");
    assert_eq!(meta.delivered_heads(12, 12), heads(h9));
}

/// The exchange's own rules: the scope a phone reads, which pushes the page need not send back
/// (accepted ones, the record completed from slices included; never a refused one), and the
/// scope named in the answer only to a phone whose cursor was not understood.
#[test]
fn an_exchange_answers_with_what_the_phone_does_not_have() {
    let (a, b, c) = (RecordId::random(), RecordId::random(), RecordId::random());
    let (mut da, mut db, mut dc) = (news("04701", "2025-01-01"), news("04701", "2025-01-02"), news("04701", "2025-01-03"));
    let req = SyncRequest { push: vec![push_of(a, &mut da), push_of(b, &mut db)], actor: vec![0xab, 0x01], ..SyncRequest::default() };
    let whole = push_of(c, &mut dc);
    let tree = tree();
    let ex = Exchange::new(&reviewer("rv", "rv-1"), &tree, &req);
    assert_eq!(ex.communes(), ["04701", "04702"]);
    assert_eq!(ex.own_actor().as_deref(), Some("ab01"));
    let results = vec![
        PushResult { id: a, outcome: PushOutcome::Accepted },
        PushResult { id: b, outcome: PushOutcome::Rejected { reason: "out of scope".into() } },
        PushResult { id: c, outcome: PushOutcome::Accepted },
    ];
    let accepted = ex.accepted(Some(&whole), &results, &Default::default());
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[&a], push_of(a, &mut da).heads);
    assert_eq!(accepted[&c], whole.heads);
    // No cursor understood: the answer names the scope, and its cursor is one this epoch takes.
    assert_eq!(ex.cursor(3), None);
    let page = sync_core::pull::Page { next: 9, high: 12, ..Default::default() };
    let answer = ex.reply(results.clone(), page.clone(), None, 3, Some(4), None);
    assert_eq!(answer.scope.as_deref(), Some(&["04701".to_string(), "04702".to_string()][..]));
    assert_eq!((answer.epoch, answer.remaining, answer.results.len()), (3, Some(4), 3));
    let next = SyncRequest { cursor: answer.cursor, ..SyncRequest::default() };
    let again = Exchange::new(&reviewer("rv", "rv-1"), &tree, &next);
    let known = again.cursor(3).expect("its own cursor, understood");
    assert_eq!((known.seq, known.read_at), (9, 12));
    assert_eq!(again.cursor(4), None, "another epoch starts over");
    assert_eq!(again.reply(Vec::new(), page, Some(known), 3, None, None).scope, None);

    // Pushed whole without heads (a slow link's push): the heads written are the phone's when
    // the record was new to the store, and unknown (the page sends it again) when it was not.
    let headless = |id, d: &mut AutoCommit| PushDoc { heads: Vec::new(), ..push_of(id, d) };
    let req = SyncRequest { push: vec![headless(a, &mut da), headless(b, &mut db)], ..SyncRequest::default() };
    let ex = Exchange::new(&reviewer("rv", "rv-1"), &tree, &req);
    let written: sync_core::pull::Written = [
        (a, sync_core::pull::WrittenRecord { seq: 7, heads: push_of(a, &mut da).heads, created: true }),
        (b, sync_core::pull::WrittenRecord { seq: 8, heads: vec![[9u8; 32]], created: false }),
    ]
    .into();
    let both = [PushResult { id: a, outcome: PushOutcome::Accepted }, PushResult { id: b, outcome: PushOutcome::Accepted }];
    let accepted = ex.accepted(None, &both, &written);
    assert_eq!(accepted[&a], push_of(a, &mut da).heads, "new to the store: the phone holds what was stored");
    assert_eq!(accepted[&b], Vec::<[u8; 32]>::new(), "merged onto a stored version: not known");
}

/// Staff reading records through sync is audited, as the core decides for every server: who,
/// where, how many, never what; an officer's own commune's records, or an answer with none,
/// are not. A record sent in slices counts once, with its last slice.
#[test]
fn staff_reading_records_through_sync_is_audited_and_officers_are_not() {
    let mut server = MemServer::default();
    let tree = tree();
    let (o, rv) = (officer("o1", "04701", "o1-1"), reviewer("rv", "rv-1"));
    let push: Vec<PushDoc> = (0..3).map(|i| push_of(RecordId::random(), &mut news("04701", &format!("2025-01-0{}", i + 1)))).collect();
    let first = server.sync(&o, &tree, &SyncRequest { push, ..SyncRequest::default() });
    assert_eq!(first.results.len(), 3);
    assert!(server.audit.is_empty(), "an officer reading its own commune is not audited");
    let read = server.sync(&rv, &tree, &SyncRequest::default());
    assert_eq!(read.pull.len(), 3);
    assert_eq!(
        server.audit,
        [sync_core::plan::AuditEvent { user: "rv".into(), device_id: Some("rv-1".into()), action: "sync_pull", target: "047: 3 records".into() }]
    );
    let text = format!("{:?}", server.audit);
    assert!(!text.contains("2025-01"), "never what was read: {text}");
    // Nothing new: nothing read, nothing audited.
    let again = server.sync(&rv, &tree, &SyncRequest { cursor: read.cursor, ..SyncRequest::default() });
    assert!(again.pull.is_empty());
    assert_eq!(server.audit.len(), 1);
    // Slices: only the one that completes the record counts.
    let slice = |offset: u64, len: usize| sync_protocol::wire::SyncResponse {
        part: Some(sync_protocol::wire::PullPart { id: RecordId::random(), seq: 9, offset, total: 100, bytes: vec![0; len], heads: Vec::new() }),
        ..Default::default()
    };
    assert_eq!(sync_core::exchange::read_audit(&rv, &slice(0, 60)), None);
    assert_eq!(sync_core::exchange::read_audit(&rv, &slice(60, 40)).map(|e| e.target), Some("047: 1 records".to_string()));
    assert_eq!(sync_core::exchange::read_audit(&o, &slice(60, 40)), None);
}

/// A phone that reads heads from documents gets a record sent whole without them (32 bytes a
/// record no compressor squeezes); changes after a version it holds still name the server's
/// heads, and a phone that did not say so gets them as before.
#[test]
fn heads_stay_out_of_whole_records_for_phones_that_read_them_from_the_document() {
    let tree = tree();
    let mut server = MemServer::default();
    let an = officer("an", "04701", "an-1");
    let (old_id, new_id) = (RecordId::random(), RecordId::random());
    let mut old = news("04701", "2025-02-01");
    for (id, d) in [(old_id, &mut old), (new_id, &mut news("04701", "2025-02-02"))] {
        let Verdict::Write(w) = verdict(&server, &an, &push_of(id, d)) else { panic!() };
        server.commit(CommitPlan::of(&an, &tree, vec![*w], None));
    }
    let scope = vec!["04701".to_string()];
    let lean = PageSpec::of(&SyncRequest { accept: sync_protocol::wire::FLAG_HEADS_FROM_DOC, ..Default::default() });
    let page = server.pull(&scope, None, HashMap::new(), &[], lean);
    assert_eq!(page.docs.len(), 2);
    assert!(page.docs.iter().all(|d| d.heads.is_empty()), "whole records go without heads");
    let stored = |server: &MemServer, id: &RecordId| AutoCommit::load(&server.records[id].doc).unwrap().get_heads();
    for d in &page.docs {
        assert_eq!(AutoCommit::load(&d.changes).unwrap().get_heads(), stored(&server, &d.id), "the heads are the document's own");
    }
    // An edit of a record the phone holds: the changes after its version, with the heads.
    let at = Cursor { seq: server.seq, scope: 0, read_at: server.seq, epoch: 0 };
    doc::set_path(&mut old, "title", &json!("Sửa tiêu đề")).unwrap();
    let Verdict::Write(w) = verdict(&server, &an, &push_of(old_id, &mut old)) else { panic!() };
    server.commit(CommitPlan::of(&an, &tree, vec![*w], None));
    let page = server.pull(&scope, Some(at), HashMap::new(), &[], lean);
    assert_eq!(page.docs.len(), 1);
    assert_eq!(heads_from_wire(&page.docs[0].heads), stored(&server, &old_id), "changes after a known version name the heads");
    // A phone that did not say it reads them: heads as before.
    let page = server.pull(&scope, None, HashMap::new(), &[], PageSpec::of(&SyncRequest::default()));
    assert!(page.docs.iter().all(|d| heads_from_wire(&d.heads) == stored(&server, &d.id)));
}

/// A page skips the records the same request has just written, without their metadata, when
/// nothing was written since and the phone holds every stored head: the page is the one the
/// metadata would have given, read with fewer reads. A record merged with changes the phone
/// lacks, written again since, or asked whole, is read and planned as before.
#[test]
fn a_page_skips_the_requests_own_writes_without_reading_them() {
    use sync_core::pull::{page_entries, Answer, Need, PagePlanner, Step, Written, WrittenRecord};
    let tree = tree();
    let mut server = MemServer::default();
    let an = officer("an", "04701", "an-1");
    let ids: Vec<RecordId> = (0..4).map(|_| RecordId::random()).collect();
    let mut pushed = HashMap::new();
    let mut written = Written::new();
    for (i, id) in ids.iter().enumerate() {
        let mut d = news("04701", &format!("2025-03-0{}", i + 1));
        let push = push_of(*id, &mut d);
        let Verdict::Write(w) = verdict(&server, &an, &push) else { panic!() };
        server.commit(CommitPlan::of(&an, &tree, vec![*w], None));
        let (seq, heads) = server.meta(id).unwrap().history.back().unwrap().clone();
        pushed.insert(*id, push.heads.clone());
        written.insert(*id, WrittenRecord { seq, heads, created: true });
    }
    // ids[1]: stored with a change the phone lacks; ids[2]: written again after this request.
    written.get_mut(&ids[1]).unwrap().heads.push([3u8; 32]);
    written.get_mut(&ids[2]).unwrap().seq -= 1;
    // ids[3]: the phone asks it whole.
    let want_full = [ids[3]];
    let spec = PageSpec { budget: 1 << 20, slices: true, resume: None, heads_from_doc: false, slow_link: false };
    let communes = ["04701".to_string()];
    let plan = |written: Written| {
        let per_commune = vec![server.feed.range(("04701".to_string(), 1)..=("04701".to_string(), server.seq)).map(|((_, s), id)| (*s, *id)).collect()];
        PagePlanner::new(None, server.seq, page_entries(per_commune, server.seq), pushed.clone(), &want_full, &communes, spec).with_written(written)
    };
    let mut planner = plan(written.clone());
    assert_eq!(planner.metas_wanted(), ids[1..].to_vec(), "the request's own unchanged write is not read");
    let (mut asked, mut answer) = (Vec::new(), None);
    let page = loop {
        match planner.step(answer.take()).unwrap() {
            Step::Need(Need::Meta(id)) => {
                asked.push(id);
                answer = Some(Answer::Meta(server.meta(&id).cloned()));
            }
            Step::Need(Need::Doc(id)) => answer = Some(Answer::Doc(Some(server.records[&id].doc.clone()))),
            Step::Done(page) => break page,
        }
    };
    assert_eq!(asked, ids[1..].to_vec());
    let sent: Vec<RecordId> = page.docs.iter().map(|d| d.id).collect();
    assert_eq!(sent, vec![ids[3]], "the record asked whole is sent; the others the phone holds");
    // The same page as without the hint, which reads every record's metadata.
    assert_eq!(page, server.pull(&communes, None, pushed.clone(), &want_full, spec));
}

/// On a slow link a record sent whole goes as its changes when they weigh no more than its
/// document (change chunks of different records compress better together); a record whose
/// many edits make its changes heavier goes as its document. Either loads to the stored record.
#[test]
fn on_a_slow_link_records_sent_whole_go_as_their_changes_when_lighter() {
    let tree = tree();
    let mut server = MemServer::default();
    let an = officer("an", "04701", "an-1");
    let (once, often) = (RecordId::random(), RecordId::random());
    let mut d = news("04701", "2025-02-01");
    let Verdict::Write(w) = verdict(&server, &an, &push_of(once, &mut d)) else { panic!() };
    server.commit(CommitPlan::of(&an, &tree, vec![*w], None));
    let mut e = news("04701", "2025-02-02");
    for i in 0..60 {
        doc::set_path(&mut e, "title", &json!(format!("bản {i}"))).unwrap();
        e.commit();
    }
    let Verdict::Write(w) = verdict(&server, &an, &push_of(often, &mut e)) else { panic!() };
    server.commit(CommitPlan::of(&an, &tree, vec![*w], None));
    let scope = vec!["04701".to_string()];
    let flags = sync_protocol::wire::FLAG_ZSTD | sync_protocol::wire::FLAG_HEADS_FROM_DOC;
    let slow = PageSpec::of(&SyncRequest { accept: flags | sync_protocol::wire::FLAG_SLOW_LINK, ..Default::default() });
    let fast = PageSpec::of(&SyncRequest { accept: flags, ..Default::default() });
    let on_slow = server.pull(&scope, None, HashMap::new(), &[], slow);
    let on_fast = server.pull(&scope, None, HashMap::new(), &[], fast);
    assert_eq!(on_slow.docs.len(), 2);
    for (s, f) in on_slow.docs.iter().zip(&on_fast.docs) {
        let stored = &server.records[&s.id].doc;
        assert_eq!(&f.changes, stored, "a fast link gets the stored document");
        let changes = AutoCommit::load(stored).unwrap().save_after(&[]);
        let expected = if changes.len() <= stored.len() { &changes } else { stored };
        assert_eq!(&s.changes, expected, "the lighter of the two");
        assert!(s.heads.is_empty(), "whole records go without heads either way");
        let (mut got, mut want) = (AutoCommit::load(&s.changes).unwrap(), AutoCommit::load(stored).unwrap());
        assert_eq!(got.get_heads(), want.get_heads());
        assert_eq!(doc::view(&got).unwrap(), doc::view(&want).unwrap());
    }
    assert_ne!(on_slow.docs[0].changes, server.records[&on_slow.docs[0].id].doc, "a record of one change goes as that change");
    let heavy = on_slow.docs.iter().find(|p| p.id == often).unwrap();
    assert_eq!(&heavy.changes, &server.records[&often].doc, "sixty changes weigh more than the document");
}

/// The answer to a push of records without their heads is lost after the server wrote them:
/// the retry's page sends them back (the server cannot tell what the phone holds), and each
/// pending record it settles counts as pushed. Nothing is lost or doubled.
#[test]
fn records_pushed_without_heads_whose_answer_was_lost_come_back_and_count_as_pushed() {
    let tree = tree();
    let mut server = MemServer::default();
    let mut phone = support::Phone::new(officer("an", "04701", "an-1"), ActorId::random(), 64 * 1024);
    phone.push_page_bytes = Some(12 * 1024); // the retry's pulled page holds more than it pushes
    phone.secs_per_exchange = 2.0; // slow: measured after the first exchange
    phone.put_news_hard_to_compress(80, 10);
    phone.lose_answer_of = Some(2);
    phone.sync(&mut server, &tree);
    assert!(phone.pushed_headless > 0, "the lost exchange carried records without heads");
    assert!(phone.echoed > 0, "the retry's page sent some back");
    assert_eq!(phone.report.as_ref().unwrap().pushed, 80, "every record counts as pushed once");
    assert_eq!(phone.store.pending(), 0);
    assert_eq!(server.records.len(), 80);
    for id in phone.ids() {
        assert_eq!(AutoCommit::load(&server.records[&id].doc).unwrap().get_heads(), phone.doc(id).get_heads());
    }
}

/// A phone that measured its link slow pushes a new record as its changes when they weigh less
/// than its document (before the first measurement it sends the document); the server ends
/// with the same records either way.
#[test]
fn a_phone_on_a_slow_link_pushes_new_records_as_their_changes() {
    use support::Phone;
    let tree = tree();
    let mut server = MemServer::default();
    let mut phone = Phone::new(officer("an", "04701", "an-1"), ActorId::random(), 16 * 1024);
    phone.secs_per_exchange = 2.0; // a few KB in 2 s: well under 32 KB/s
    phone.put_news_hard_to_compress(80, 10);
    let exchanges = phone.sync(&mut server, &tree);
    assert!(exchanges >= 2, "pages of 16 KB: more than one exchange ({exchanges})");
    let (as_doc, as_changes) = phone.pushed_whole;
    assert!(as_doc > 0, "before the link is measured, documents");
    assert!(as_changes > 0, "once measured slow, changes ({as_doc} as documents in {exchanges} exchanges)");
    assert_eq!(as_doc + as_changes, 80);
    // Sent whole on the slow link, without their heads; the server knows them from what it
    // stored, and sends none of them back.
    assert!(phone.pushed_headless >= as_changes, "{} without heads, {as_changes} as changes", phone.pushed_headless);
    assert!(phone.pushed_headless < 80, "before the link is measured, with their heads");
    assert_eq!(phone.echoed, 0, "no record comes back to the phone that pushed it");
    assert_eq!(phone.store.pending(), 0);
    for id in phone.ids() {
        let mut stored = AutoCommit::load(&server.records[&id].doc).unwrap();
        assert_eq!(stored.get_heads(), phone.doc(id).get_heads());
    }
    // The next sync starts from the rate this one measured: changes from its first exchange.
    assert!(client_core::LocalStore::sync_state(&phone.store).link_rate.is_some_and(|r| r < 32 * 1024), "the measured rate is kept");
    for i in 0..5 {
        let d = doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-02-01", "title": format!("Tin sau {i}")}), phone.actor.clone()).unwrap();
        phone.put(RecordId::random(), d);
    }
    phone.sync(&mut server, &tree);
    assert_eq!(phone.pushed_whole, (as_doc, as_changes + 5), "the later sync's first exchange already sends changes");
}

/// A phone asks for answers made with the records dictionary, and uses it for its own requests
/// once an answer showed that the server has it, from then on in the next syncs' first
/// requests too; a server built before it (which ignores the flag) never gets a request it
/// cannot read.
#[test]
fn a_phone_uses_the_records_dictionary_once_the_server_showed_it_has_it() {
    use support::Phone;
    use sync_protocol::wire::{FLAG_RECORDS_DICT, FLAG_ZSTD};
    let tree = tree();
    for old_server in [false, true] {
        let mut server = MemServer::default();
        let mut phone = Phone::new(officer("an", "04701", "an-1"), ActorId::random(), 4 * 1024);
        phone.old_server = old_server;
        phone.put_news_hard_to_compress(60, 6);
        let exchanges = phone.sync(&mut server, &tree);
        assert!(exchanges >= 3, "pages of 4 KB: several exchanges ({exchanges})");
        assert!(phone.requests.iter().all(|(_, accept)| accept & (FLAG_ZSTD | FLAG_RECORDS_DICT) == FLAG_ZSTD | FLAG_RECORDS_DICT));
        let with_dict: Vec<bool> = phone.requests.iter().map(|(framing, _)| framing.dict).collect();
        assert!(!with_dict[0], "the first request goes without it: the phone does not know the server yet");
        if old_server {
            assert!(with_dict.iter().all(|d| !d), "never to a server without it: {with_dict:?}");
        } else {
            assert!(with_dict[1..].iter().all(|d| *d), "with it once the server answered with it: {with_dict:?}");
        }
        assert_eq!(phone.store.pending(), 0);
        assert_eq!(server.records.len(), 60);
        // The next sync's first request is made with it when the last answer said so.
        phone.requests.clear();
        phone.put_news_hard_to_compress(1, 6);
        phone.sync(&mut server, &tree);
        assert_eq!(phone.requests[0].0.dict, !old_server, "the next sync's first request");
    }
}

/// On a slow link a phone asks for answers with the Automerge checksums left out, leaves them
/// out of its own pushes once an answer showed the server reads that, and the records arrive
/// whole both ways; a replica of a build before it refuses such a request, which goes again at
/// once with the checksums, as for the dictionary.
#[test]
fn on_a_slow_link_checksums_are_left_out_once_the_server_said_it_reads_them() {
    use support::Phone;
    use sync_protocol::wire::FLAG_CHECKSUMS;
    let tree = tree();
    for older in [std::collections::BTreeSet::new(), [4].into()] {
        let mut server = MemServer::default();
        let mut phone = Phone::new(officer("an", "04701", "an-1"), ActorId::random(), 8 * 1024);
        // Pages of 8 KB in 2 s: the phone measures its link under 32 KB/s from the first answer.
        phone.secs_per_exchange = 2.0;
        phone.older_replica = older.clone();
        phone.put_news_hard_to_compress(200, 6);
        let exchanges = phone.sync(&mut server, &tree);
        assert!(exchanges >= 4, "pages of 8 KB: several exchanges ({exchanges})");
        let asked: Vec<bool> = phone.requests.iter().map(|(_, accept)| accept & FLAG_CHECKSUMS != 0).collect();
        let left_out: Vec<bool> = phone.requests.iter().map(|(framing, _)| framing.checksums).collect();
        assert!(!asked[0] && asked[1..].iter().all(|a| *a), "asked for once the link measured slow: {asked:?}");
        assert_eq!(left_out[..4], [false, false, true, true], "from the request after the first answer that said it");
        if older.is_empty() {
            assert!(left_out[2..].iter().all(|l| *l), "{left_out:?}");
        } else {
            assert_eq!(phone.refused, 1, "the fourth request, to the older replica");
            assert!(left_out.len() > 4 && left_out[4..].iter().all(|l| !l), "the rest of the sync goes with them: {left_out:?}");
        }
        assert_eq!(phone.report.as_ref().unwrap().pushed, 200);
        assert_eq!(phone.store.pending(), 0);
        assert_eq!(server.records.len(), 200, "every push restored and stored");
    }
}

/// Behind one load balancer, a replica of a build before the records dictionary refuses a
/// request made with it, which a newer replica's answer led the phone to send. The phone tries
/// again at once without it, goes on without it for the rest of the sync, and loses nothing;
/// the next sync starts without it, and the one after that with it again.
#[test]
fn a_phone_goes_on_without_the_dictionary_when_an_older_replica_cannot_read_it() {
    use support::Phone;
    let tree = tree();
    let mut server = MemServer::default();
    let mut phone = Phone::new(officer("an", "04701", "an-1"), ActorId::random(), 4 * 1024);
    phone.older_replica = [3, 5].into();
    phone.put_news_hard_to_compress(60, 6);
    let exchanges = phone.sync(&mut server, &tree);
    assert!(exchanges >= 6, "pages of 4 KB: several exchanges ({exchanges})");
    assert_eq!(phone.refused, 1, "refused once: the request after it goes without the dictionary");
    let with_dict: Vec<bool> = phone.requests.iter().map(|(framing, _)| framing.dict).collect();
    assert_eq!(with_dict[..4], [false, true, true, false], "the third went to the older replica and was refused");
    assert!(with_dict[4..].iter().all(|d| !d), "without it to the end of the sync, whichever replica answers: {with_dict:?}");
    assert_eq!(phone.report.as_ref().unwrap().pushed, 60);
    assert_eq!(phone.store.pending(), 0);
    assert_eq!(server.records.len(), 60);

    // A refusal of a request made without the dictionary, or for another reason, is not one.
    let mut session = client_core::Session::new(&phone.store, &client_core::SyncOptions::default(), 0.0).unwrap();
    assert!(!session.unread_dictionary(400, "bad_sync_message"), "the first request goes without it");
    assert!(!session.unread_dictionary(413, "payload_too_large"));

    // The next sync starts without it and takes it up again from a newer replica's answer.
    phone.requests.clear();
    phone.older_replica.clear();
    phone.put_news_hard_to_compress(30, 6);
    phone.sync(&mut server, &tree);
    assert!(phone.requests.len() >= 2 && !phone.requests[0].0.dict && phone.requests[1].0.dict);
    assert_eq!(server.records.len(), 90);

    // The sync after that starts with it; a replica rolled back to the older build refuses
    // that first request, which goes again at once without it.
    (phone.requests, phone.refused) = (vec![], 0);
    phone.older_replica = [1].into();
    phone.put_news_hard_to_compress(5, 6);
    phone.sync(&mut server, &tree);
    let with_dict: Vec<bool> = phone.requests.iter().map(|(framing, _)| framing.dict).collect();
    assert_eq!((phone.refused, with_dict[0]), (1, true), "{with_dict:?}");
    assert!(with_dict[1..].iter().all(|d| !d), "{with_dict:?}");
    assert_eq!(phone.store.pending(), 0);
    assert_eq!(server.records.len(), 95);
}

/// A phone measures its link without the server's own time, when the server tells it: a
/// busy server's phone on a fast link neither takes it for 2G nor shrinks its pages. An older
/// server tells nothing, and the phone counts the whole exchange as before.
#[test]
fn a_busy_servers_time_is_not_taken_for_a_slow_link() {
    use support::Phone;
    use sync_protocol::wire::{FLAG_SERVER_TIME, FLAG_SLOW_LINK};
    let tree = tree();
    let mut slow_requests = Vec::new();
    for old_server in [false, true] {
        let mut server = MemServer::default();
        let mut phone = Phone::new(officer("an", "04701", "an-1"), ActorId::random(), 16 * 1024);
        phone.old_server = old_server;
        // Two seconds an exchange, all but 20 ms of them waiting on the server.
        (phone.secs_per_exchange, phone.server_secs) = (2.0, 1.98);
        phone.put_news_hard_to_compress(80, 10);
        phone.sync(&mut server, &tree);
        assert!(phone.requests.iter().all(|(_, accept)| accept & FLAG_SERVER_TIME != 0), "every request asks for the server's time");
        slow_requests.push(phone.requests.iter().filter(|(_, accept)| accept & FLAG_SLOW_LINK != 0).count());
        assert_eq!(phone.store.pending(), 0);
        let rate = client_core::LocalStore::sync_state(&phone.store).link_rate.expect("measured");
        if old_server {
            assert!(rate < 32 * 1024, "without the server's time, the link looks slow: {rate} B/s");
        } else {
            assert!(rate > 256 * 1024, "the link's own rate: {rate} B/s");
        }
    }
    assert_eq!(slow_requests[0], 0, "told the server's time, never slow");
    assert!(slow_requests[1] > 0, "an older server's phone takes its link for slow, as before");
}

/// A record edited after it was stored is stored as its stored bytes followed by the new
/// changes, so each version its history keeps is a prefix of what is stored; a phone that holds
/// one of them gets exactly the bytes after it (no Automerge work), and they bring it to the
/// current heads. After `MAX_APPENDED` edits the document is saved whole again, and a phone
/// holding an older version gets its changes the slower way, still right.
#[test]
fn an_edited_record_is_stored_as_its_versions_and_a_phone_gets_the_bytes_after_its_own() {
    let tree = tree();
    let who = officer("an", "04701", "an-1");
    let scope = ["04701".to_string()];
    let mut server = MemServer::default();
    let id = RecordId::random();
    let mut d = news("04701", "2025-01-01");
    let write = |server: &mut MemServer, d: &mut AutoCommit| {
        let Verdict::Write(p) = verdict(server, &who, &push_of(id, d)) else { panic!("a write") };
        server.commit(CommitPlan::of(&who, &tree, vec![*p], None));
    };
    write(&mut server, &mut d);
    let mut versions = vec![(server.meta(&id).unwrap().seq, d.fork())];
    let mut sliced = 0;
    for i in 0..sync_core::push::MAX_APPENDED + 3 {
        doc::set_path(&mut d, "title", &json!(format!("bản {i}"))).unwrap();
        write(&mut server, &mut d);
        let stored = server.records[&id].clone();
        versions.push((stored.meta.seq, d.fork()));
        let ends = stored.meta.aligned_ends();
        assert_eq!(ends.len(), stored.meta.history.len());
        assert_eq!(*ends.back().unwrap() as usize, stored.doc.len(), "the latest point is the whole document");
        for ((_, heads), end) in stored.meta.history.iter().zip(&ends).filter(|(_, e)| **e != 0) {
            let mut prefix = AutoCommit::load(&stored.doc[..*end as usize]).unwrap();
            assert_eq!(prefix.get_heads(), heads_from_wire(heads), "edit {i}: a prefix of {end} bytes is the version its point names");
        }
        // Every phone holding a version the history keeps gets what brings it to the current heads.
        for (seq, held) in versions.iter().rev().skip(1).take(sync_core::meta::HISTORY - 1) {
            let cursor = Cursor { seq: *seq, scope: 0, read_at: *seq, epoch: 1 };
            let page = server.pull(&scope, Some(cursor), HashMap::new(), &[], PageSpec::of(&SyncRequest::default()));
            assert_eq!(page.docs.len(), 1);
            let sent = &page.docs[0].changes;
            if let Some(end) = stored.meta.delivered_end(*seq, *seq, stored.doc.len()) {
                assert_eq!(sent[..], stored.doc[end..], "edit {i}: the bytes after the version held");
                sliced += 1;
            }
            let mut phone = held.clone();
            phone.load_incremental(sent).unwrap();
            assert_eq!(phone.get_heads(), d.get_heads(), "edit {i}: the phone at {seq} is brought up to date");
        }
    }
    assert!(sliced > 2 * sync_core::push::MAX_APPENDED, "most answers were slices ({sliced})");
    let ends = server.records[&id].meta.aligned_ends();
    assert!(ends.iter().any(|e| *e == 0), "compacted after {} appended writes: older points are no prefix: {ends:?}", sync_core::push::MAX_APPENDED);
}

#[test]
fn a_phone_that_pushed_a_record_someone_else_changed_gets_the_bytes_after_its_version_on_a_fast_link_and_exactly_what_it_lacks_on_a_slow_one() {
    let tree = tree();
    let (an, binh) = (officer("an", "04701", "an-1"), officer("binh", "04701", "binh-1"));
    let scope = ["04701".to_string()];
    let mut server = MemServer::default();
    let id = RecordId::random();
    let write = |server: &mut MemServer, who: &sync_core::org::Principal, d: &mut AutoCommit| {
        let Verdict::Write(p) = verdict(server, who, &push_of(id, d)) else { panic!("a write") };
        server.commit(CommitPlan::of(who, &tree, vec![*p], None));
    };
    let mut held = news("04701", "2025-01-01");
    write(&mut server, &an, &mut held);
    let delivered = server.meta(&id).unwrap().seq;
    // Another officer's phone edits the record, then the first phone pushes an edit of its own.
    let mut other = held.fork().with_actor(ActorId::random());
    doc::set_path(&mut other, "title", &json!("bản của Bình")).unwrap();
    write(&mut server, &binh, &mut other);
    let mut mine = held.fork();
    doc::set_path(&mut mine, "channel", &json!("loudspeaker")).unwrap();
    write(&mut server, &an, &mut mine);
    let stored = server.records[&id].clone();
    let end = stored.meta.delivered_end(delivered, delivered, stored.doc.len()).expect("the version the phone held is a prefix");
    let mut current = AutoCommit::load(&stored.doc).unwrap();
    let (current_heads, mine_heads, mine_bytes) = (current.get_heads(), mine.get_heads(), mine.save());
    let answer = |accept: u8| {
        let pushed = HashMap::from([(id, heads_to_wire(&mine_heads))]);
        let cursor = Cursor { seq: delivered, scope: 0, read_at: delivered, epoch: 1 };
        let page = server.pull(&scope, Some(cursor), pushed, &[], PageSpec::of(&SyncRequest { accept, ..SyncRequest::default() }));
        assert_eq!(page.docs.len(), 1);
        let sent = page.docs[0].changes.clone();
        let mut phone = AutoCommit::load(&mine_bytes).unwrap();
        phone.load_incremental(&sent).unwrap();
        assert_eq!(phone.get_heads(), current_heads, "accept {accept}: the phone is brought up to date");
        sent
    };
    // A fast link: the stored bytes after the version held, the phone's own edit among them
    // (no Automerge work on the server).
    let fast = answer(0);
    assert_eq!(fast[..], stored.doc[end..]);
    // A slow link: the other phone's edit alone.
    let slow = answer(sync_protocol::wire::FLAG_SLOW_LINK);
    assert_eq!(slow, current.save_after(&mine_heads));
    assert!(slow.len() < fast.len(), "{} bytes on a slow link, {} on a fast one", slow.len(), fast.len());
}
