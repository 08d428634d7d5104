//! Bad input: the sync message decoder, record validation and the document checker, fed
//! arbitrary and mutated input. Nothing may panic; what is accepted must be consistent:
//! - a decodable message re-encodes to a message that decodes to the same value;
//! - a record `validate_new` accepts becomes a document that `check_doc` accepts, whose `view`
//!   validates again;
//! - a field `set_path` accepts leaves a document that `check_doc` accepts.
//!
//! The committed corpus (`tests/fuzz-corpus/` at the workspace root) is replayed first; then
//! seeded proptest runs (`GESYNC_SEED` replays one; `GESYNC_FUZZ_CASES` sets the number of cases,
//! default a few thousand per target, a few seconds in CI).

use std::path::PathBuf;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ScalarValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Map, Value};
use sync_protocol::wire::{PartResume, PullDoc, PullPart, PushDoc, PushOutcome, PushPart, PushResult, SyncRequest, SyncResponse, Uploaded};
use sync_protocol::{doc, schema, RecordId, RecordKind};

const KINDS: [RecordKind; 3] = [RecordKind::GbvCase, RecordKind::TraffickingReturnee, RecordKind::NewsItem];

fn corpus(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus").join(sub);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())).collect()
}

/// A seeded runner: the seed is printed, and `GESYNC_SEED` replays it.
fn runner(test: &str, default_cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("GESYNC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("{test}: seed {seed} (rerun with GESYNC_SEED={seed})");
    let cases = std::env::var("GESYNC_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default_cases);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn run<S: Strategy>(test: &str, cases: u32, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner(test, cases).run(&strategy, check) {
        panic!("{test}: {e}");
    }
}

// ---- the wire decoder ----------------------------------------------------------------------

/// Decodes `bytes` both ways; whatever decodes must round-trip.
fn decode_both(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = SyncRequest::decode(bytes) {
        let again = SyncRequest::decode(&m.encode());
        prop_assert_eq!(again, Ok(m));
    }
    if let Ok(m) = SyncResponse::decode(bytes) {
        let again = SyncResponse::decode(&m.encode());
        prop_assert_eq!(again, Ok(m));
    }
    Ok(())
}

fn hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn id() -> impl Strategy<Value = RecordId> {
    any::<[u8; 16]>().prop_map(RecordId)
}

fn request() -> impl Strategy<Value = SyncRequest> {
    let push = (id(), prop::collection::vec(any::<u8>(), 0..64), prop::collection::vec(hash(), 0..3))
        .prop_map(|(id, changes, heads)| PushDoc { id, changes, heads });
    let resume = prop::option::of((id(), any::<u64>(), any::<u64>()).prop_map(|(id, seq, offset)| PartResume { id, seq, offset }));
    let part = prop::option::of((id(), any::<u64>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..32), prop::collection::vec(hash(), 0..2)).prop_map(|(id, offset, total, bytes, heads)| PushPart { id, offset, total, bytes, heads }));
    let v2 = (any::<u32>(), any::<u8>(), any::<bool>(), resume, part);
    (prop::collection::vec(any::<u8>(), 0..16), prop::collection::vec(push, 0..4), prop::collection::vec(id(), 0..3), v2, prop::collection::vec(any::<u8>(), 0..17))
        .prop_map(|(cursor, push, want_full, (page_bytes, accept, count, resume, push_part), actor)| SyncRequest { cursor, push, want_full, page_bytes, accept, count, resume, push_part, actor })
}

fn response() -> impl Strategy<Value = SyncResponse> {
    let outcome = prop_oneof![Just(PushOutcome::Accepted), ".{0,40}".prop_map(|reason| PushOutcome::Rejected { reason }), Just(PushOutcome::NeedFull)];
    let result = (id(), outcome).prop_map(|(id, outcome)| PushResult { id, outcome });
    let pull = (id(), prop::collection::vec(any::<u8>(), 0..64), prop::collection::vec(hash(), 0..3))
        .prop_map(|(id, changes, heads)| PullDoc { id, changes, heads });
    let part = prop::option::of((id(), any::<u64>(), any::<u64>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..32)).prop_map(|(id, seq, offset, total, bytes)| PullPart { id, seq, offset, total, bytes, heads: vec![] }));
    let uploaded = prop::option::of((id(), any::<u64>()).prop_map(|(id, have)| Uploaded { id, have }));
    let scope = prop::option::of(prop::collection::vec("[0-9]{2,5}", 0..3));
    (prop::collection::vec(result, 0..4), prop::collection::vec(pull, 0..3), prop::collection::vec(any::<u8>(), 0..16), any::<bool>(), part, prop::option::of(any::<u64>()), (uploaded, scope, any::<u64>()))
        .prop_map(|(results, pull, cursor, more, part, remaining, (uploaded, scope, epoch))| SyncResponse { results, pull, cursor, more, part, remaining, uploaded, scope, epoch })
}

/// A mutation of an encoded message: flip, overwrite, insert, delete or truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let m = prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    prop::collection::vec(m, 1..4)
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if let Some(x) = bytes.get_mut(i % n) {
                    *x ^= b;
                }
            }
            Mutation::Set(i, b) => {
                if let Some(x) = bytes.get_mut(i % n) {
                    *x = *b;
                }
            }
            Mutation::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, k) => {
                let at = i % n;
                let end = (at + k).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % n),
        }
    }
    bytes
}

#[test]
fn corpus_wire_messages_never_panic_and_round_trip() {
    for (name, bytes) in corpus("wire") {
        decode_both(&bytes).unwrap_or_else(|e| panic!("corpus wire/{name}: {e}"));
        // The header alone, or a body that claims enormous lengths, is refused, not allocated.
        if name.starts_with("valid") {
            assert!(SyncRequest::decode(&bytes).is_ok() || SyncResponse::decode(&bytes).is_ok(), "wire/{name} should decode");
        }
    }
}

#[test]
fn fuzz_decoder_arbitrary_bytes() {
    // Half the inputs carry the right magic and version, so the fuzzing reaches postcard.
    let input = (any::<bool>(), prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(framed, body)| {
        if framed {
            // The current version with the plain flags byte, or the one before it.
            let version = sync_protocol::wire::PROTOCOL_VERSION - (body.len() % 2) as u8;
            let flags: &[u8] = if version >= 2 { &[0] } else { &[] };
            [b"GSYN".as_slice(), &[version], flags, &body].concat()
        } else {
            body
        }
    });
    run("fuzz_decoder_arbitrary_bytes", 4000, input, |bytes| decode_both(&bytes));
}

#[test]
fn fuzz_decoder_valid_and_mutated_requests() {
    run("fuzz_decoder_valid_and_mutated_requests", 2000, (request(), mutations()), |(m, ms)| {
        let bytes = m.encode();
        prop_assert_eq!(SyncRequest::decode(&bytes), Ok(m));
        decode_both(&mutate(bytes, &ms))
    });
}

#[test]
fn fuzz_decoder_valid_and_mutated_responses() {
    run("fuzz_decoder_valid_and_mutated_responses", 2000, (response(), mutations()), |(m, ms)| {
        let bytes = m.encode();
        prop_assert_eq!(SyncResponse::decode(&bytes), Ok(m));
        decode_both(&mutate(bytes, &ms))
    });
}

// ---- record validation -----------------------------------------------------------------------

/// Arbitrary JSON, biased towards the schema's names and values so that deep paths are reached.
fn json_value() -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        4 => prop::sample::select(vec![
            "commune", "detected_on", "identified_on", "published_on", "setting", "violence_types", "victim", "sex",
            "birth_year", "ethnic_minority", "disability", "services", "kind", "provided_on", "provider", "perpetrator",
            "detected", "prosecuted", "counselled", "counselled_on", "status", "notes", "needs_support", "support",
            "reintegrated", "channel", "title", "deleted", "deleted_reason", "id", "conflicts",
        ])
        .prop_map(str::to_string),
        1 => ".{0,12}",
    ];
    let strings = prop_oneof![
        prop::sample::select(vec![
            "04701", "2025-03-01", "2025-02-30", "1990-13-01", "female", "male", "domestic", "physical", "health",
            "legal_aid", "open", "closed", "loudspeaker", "essential_needs", "", "0", "../../etc/passwd", "\u{0}",
        ])
        .prop_map(str::to_string),
        ".{0,20}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (1900i64..2030).prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        strings.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((names.clone(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid record of each kind, then overlaid with arbitrary fields (most inputs then differ
/// from a valid one in one or two places, which is where validators go wrong).
fn base(kind: RecordKind) -> Value {
    match kind {
        RecordKind::GbvCase => json!({"commune": "04701", "detected_on": "2025-03-01", "setting": "domestic", "violence_types": ["physical"],
            "victim": {"sex": "female", "birth_year": 1990, "ethnic_minority": true, "disability": false},
            "services": [{"kind": "health", "provided_on": "2025-03-02", "provider": "TYT"}],
            "perpetrator": {"detected": true, "sex": "male", "prosecuted": false, "counselled": true, "counselled_on": "2025-04-01"},
            "status": "open", "notes": "ghi chú"}),
        RecordKind::TraffickingReturnee => json!({"commune": "04701", "identified_on": "2025-03-01", "sex": "female", "birth_year": 1995,
            "needs_support": true, "support": [{"kind": "health", "provided_on": "2025-03-02"}], "reintegrated": false}),
        RecordKind::NewsItem => json!({"commune": "04701", "published_on": "2025-03-01", "channel": "loudspeaker", "title": "Tin"}),
    }
}

fn record_input() -> impl Strategy<Value = (RecordKind, Value)> {
    (prop::sample::select(KINDS.to_vec()), any::<bool>(), json_value()).prop_map(|(kind, overlay, v)| {
        if !overlay {
            return (kind, v);
        }
        let mut b = base(kind);
        if let (Some(o), Value::Object(extra)) = (b.as_object_mut(), v) {
            for (k, v) in extra {
                o.insert(k, v);
            }
        }
        (kind, b)
    })
}

/// What `validate_new` must say about a record's view (without the fields the view adds).
fn revalidate(kind: RecordKind, d: &AutoCommit) -> Result<(), TestCaseError> {
    prop_assert_eq!(doc::check_doc(d).map_err(|e| e.to_string()), Ok(kind));
    let mut view = doc::view(d).map_err(|e| TestCaseError::fail(format!("view failed: {e}")))?;
    if let Some(o) = view.as_object_mut() {
        o.remove("kind");
        o.remove("id");
    }
    prop_assert!(schema::validate_new(kind, &view).is_ok(), "view does not validate: {:?} {}", schema::validate_new(kind, &view).err(), view);
    Ok(())
}

fn check_record(kind: RecordKind, input: &Value) -> Result<(), TestCaseError> {
    let valid = schema::validate_new(kind, input);
    let made = doc::new_record(kind, input, ActorId::random());
    prop_assert_eq!(valid.is_ok(), made.is_ok(), "validate_new and new_record disagree on {}", input);
    if let Ok(d) = made {
        revalidate(kind, &d)?;
    }
    Ok(())
}

#[test]
fn corpus_records_never_panic() {
    for (name, bytes) in corpus("records") {
        let input: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("records/{name} is not JSON: {e}"));
        for kind in KINDS {
            check_record(kind, &input).unwrap_or_else(|e| panic!("records/{name} as {kind:?}: {e}"));
        }
    }
}

#[test]
fn fuzz_record_validation_over_arbitrary_json() {
    run("fuzz_record_validation_over_arbitrary_json", 3000, record_input(), |(kind, input)| check_record(kind, &input));
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "status", "notes", "setting", "violence_types", "victim", "victim.sex", "victim.birth_year", "services",
            "services.0", "services.0.kind", "services.0.provider", "services.5.kind", "perpetrator.counselled",
            "perpetrator", "commune", "kind", "id", "deleted", "title", "channel", "support.0.kind", "needs_support",
            "reintegrated", "sex", "birth_year", "", ".", "victim.", ".victim", "victim..sex", "services.-1.kind",
            "services.99999999999999999999.kind", "victim.sex.extra",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_.0-9]{0,24}",
    ]
}

#[test]
fn fuzz_set_path_and_append_over_arbitrary_json() {
    let input = (prop::sample::select(KINDS.to_vec()), prop::collection::vec((any::<bool>(), path(), json_value()), 1..6));
    run("fuzz_set_path_and_append_over_arbitrary_json", 1500, input, |(kind, edits)| {
        let mut d = doc::new_record(kind, &base(kind), ActorId::random()).unwrap();
        for (append, path, value) in edits {
            let r = if append { doc::append(&mut d, &path, &value) } else { doc::set_path(&mut d, &path, &value) };
            if r.is_ok() {
                revalidate(kind, &d)?;
            }
        }
        revalidate(kind, &d)
    });
}

// ---- documents built from arbitrary Automerge operations -----------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Put a scalar at (object index, key).
    Put(usize, String, ScalarValue),
    /// Put a new map/list/text at (object index, key).
    PutObject(usize, String, u8),
    /// Insert a scalar into a list at (object index, position).
    Insert(usize, usize, ScalarValue),
    Delete(usize, String),
}

fn scalar() -> impl Strategy<Value = ScalarValue> {
    prop_oneof![
        any::<bool>().prop_map(ScalarValue::Boolean),
        any::<i64>().prop_map(ScalarValue::Int),
        any::<u64>().prop_map(ScalarValue::Uint),
        any::<f64>().prop_map(ScalarValue::F64),
        prop::sample::select(vec!["04701", "gbv_case", "news_item", "trafficking_returnee", "2025-03-01", "female", "health", "x"]).prop_map(|s| ScalarValue::Str(s.into())),
        ".{0,10}".prop_map(|s| ScalarValue::Str(s.into())),
        Just(ScalarValue::Null),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(ScalarValue::Bytes),
        any::<i64>().prop_map(ScalarValue::Timestamp),
        any::<i64>().prop_map(ScalarValue::counter),
    ]
}

fn ops() -> impl Strategy<Value = (bool, Vec<Op>)> {
    let key = prop_oneof![
        4 => prop::sample::select(vec!["kind", "commune", "detected_on", "published_on", "identified_on", "victim", "sex", "services", "kind", "violence_types", "physical", "deleted", "title", "status", "perpetrator", "support", "id"]).prop_map(str::to_string),
        1 => ".{0,8}",
    ];
    let op = prop_oneof![
        (any::<usize>(), key.clone(), scalar()).prop_map(|(o, k, v)| Op::Put(o, k, v)),
        (any::<usize>(), key.clone(), 0u8..3).prop_map(|(o, k, t)| Op::PutObject(o, k, t)),
        (any::<usize>(), any::<usize>(), scalar()).prop_map(|(o, i, v)| Op::Insert(o, i, v)),
        (any::<usize>(), key).prop_map(|(o, k)| Op::Delete(o, k)),
    ];
    (any::<bool>(), prop::collection::vec(op, 0..24))
}

/// A document built by [`apply`]ing the operations to a valid record of the kind or to an
/// empty document.
fn build(from_valid: Option<RecordKind>, ops: &[Op]) -> AutoCommit {
    let mut d = match from_valid {
        Some(kind) => doc::new_record(kind, &base(kind), ActorId::random()).unwrap(),
        None => AutoCommit::new(),
    };
    apply(&mut d, ops);
    d
}

/// Applies the operations (ignoring the ones Automerge refuses); objects are addressed by their
/// index in the list of objects created so far (the root first).
fn apply(d: &mut AutoCommit, ops: &[Op]) {
    let mut objs: Vec<ObjId> = vec![ObjId::Root];
    // The valid record's own objects are reachable too.
    for k in ["victim", "services", "perpetrator", "violence_types", "support"] {
        if let Ok(Some((_, id))) = automerge::ReadDoc::get(d, ObjId::Root, k) {
            objs.push(id);
        }
    }
    for op in ops {
        let obj = |i: &usize| objs[i % objs.len()].clone();
        let list_or_map = |d: &AutoCommit, o: &ObjId| automerge::ReadDoc::object_type(d, o).ok();
        match op {
            Op::Put(o, k, v) => {
                let o = obj(o);
                let _ = match list_or_map(d, &o) {
                    Some(ObjType::Map) => d.put(&o, k.as_str(), v.clone()),
                    Some(ObjType::List) => d.put(&o, automerge::ReadDoc::length(d, &o).saturating_sub(1), v.clone()),
                    _ => Ok(()),
                };
            }
            Op::PutObject(o, k, t) => {
                let o = obj(o);
                let ty = [ObjType::Map, ObjType::List, ObjType::Text][*t as usize];
                let made = match list_or_map(d, &o) {
                    Some(ObjType::Map) => d.put_object(&o, k.as_str(), ty).ok(),
                    Some(ObjType::List) => d.insert_object(&o, 0, ty).ok(),
                    _ => None,
                };
                objs.extend(made);
            }
            Op::Insert(o, i, v) => {
                let o = obj(o);
                if list_or_map(d, &o) == Some(ObjType::List) {
                    let len = automerge::ReadDoc::length(d, &o);
                    let _ = d.insert(&o, i % (len + 1), v.clone());
                }
            }
            Op::Delete(o, k) => {
                let o = obj(o);
                if list_or_map(d, &o) == Some(ObjType::Map) {
                    let _ = d.delete(&o, k.as_str());
                }
            }
        }
    }
    d.commit();
}

fn check_any_doc(d: &AutoCommit) -> Result<(), TestCaseError> {
    // Never panics; what check_doc accepts has a view that validates.
    if let Ok(kind) = doc::check_doc(d) {
        revalidate(kind, d)?;
    }
    // The document also survives a save/load round trip and is judged the same way.
    let reloaded = AutoCommit::load(&d.clone().save()).map_err(|e| TestCaseError::fail(format!("reload: {e}")))?;
    prop_assert_eq!(doc::check_doc(&reloaded).is_ok(), doc::check_doc(d).is_ok());
    inspect_agrees(d)
}

#[test]
fn fuzz_check_doc_over_arbitrary_automerge_operations() {
    let input = (prop::option::of(prop::sample::select(KINDS.to_vec())), ops());
    run("fuzz_check_doc_over_arbitrary_automerge_operations", 1500, input, |(from, (_, ops))| check_any_doc(&build(from, &ops)));
}

/// What `inspect` finds in one walk is what `check_doc`, `view`, `conflicts`, `kind_of` and
/// `all_root_strings` find apart.
fn inspect_agrees(d: &AutoCommit) -> Result<(), TestCaseError> {
    let mut d = d.clone();
    match doc::inspect(&mut d) {
        Ok(found) => {
            prop_assert_eq!(doc::check_doc(&d), Ok(found.kind));
            prop_assert_eq!(doc::kind_of(&d), Ok(found.kind));
            prop_assert_eq!(doc::all_root_strings(&d, "commune"), Ok(found.communes));
            prop_assert_eq!(doc::view(&d), Ok(found.view));
            prop_assert_eq!(doc::conflicts(&mut d), Ok(found.conflicts));
        }
        Err(e) => prop_assert_eq!(doc::check_doc(&d).map_err(|e| e.to_string()), Err(e.to_string())),
    }
    Ok(())
}

#[test]
fn fuzz_inspect_agrees_with_check_view_and_conflicts_over_concurrent_edits() {
    // Two devices edit one valid record apart (valid edits and foreign ones), then merge: the
    // merged documents hold concurrent values at every depth.
    // Foreign operations make most documents invalid: a side makes one at most, half the time.
    // Valid edits of a few fields, with few values each, so that the two devices often meet.
    let edit = || {
        prop_oneof![
            6 => prop::sample::select(vec![
                ("victim.sex", json!("male")), ("victim.sex", json!("other")), ("victim.birth_year", json!(1980)),
                ("victim.birth_year", json!(2001)), ("status", json!("closed")), ("notes", json!("a")), ("notes", json!("b")),
                ("setting", json!("other_gbv")), ("services.0.provider", json!("X")), ("services.0.provider", json!("Y")),
                ("perpetrator.counselled", json!(false)), ("deleted", json!(true)), ("detected_on", json!("2025-05-05")),
                ("violence_types", json!(["sexual"])), ("services", json!({"kind": "health"})), ("sex", json!("male")),
                ("sex", json!("other")), ("reintegrated", json!(true)), ("support.0.kind", json!("vocational_training")),
                ("support.0.provided_on", json!("2025-07-01")), ("needs_support", json!(false)), ("identified_on", json!("2025-06-01")),
                ("title", json!("A")), ("title", json!("B")), ("published_on", json!("2025-05-01")),
            ])
            .prop_map(|(p, v)| (p.to_string(), v)),
            1 => (path(), json_value()),
        ]
    };
    let side = || (prop::collection::vec(edit(), 2..16), ops(), 0usize..4);
    run("fuzz_inspect_agrees_with_check_view_and_conflicts_over_concurrent_edits", 1000, (prop::sample::select(KINDS.to_vec()), side(), side()), |(kind, a_side, b_side)| {
        let mut a = build(Some(kind), &[]);
        let mut b = a.fork().with_actor(ActorId::random());
        for (d, (edits, (_, ops), foreign)) in [(&mut a, a_side), (&mut b, b_side)] {
            for (p, value) in &edits {
                let _ = doc::set_path(d, p, value);
                let _ = doc::append(d, p, value);
            }
            apply(d, &ops[..ops.len().min(foreign.saturating_sub(2))]);
        }
        a.merge(&mut b).map_err(|e| TestCaseError::fail(format!("merge: {e}")))?;
        inspect_agrees(&a)
    });
}

/// The document seeds of the corpus (written when `GESYNC_WRITE_CORPUS` is set).
fn write_doc_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus/docs");
    let save = |name: &str, d: &mut AutoCommit| std::fs::write(dir.join(name), d.save()).unwrap();
    for kind in KINDS {
        save(&format!("valid-{kind:?}.bin"), &mut doc::new_record(kind, &base(kind), ActorId::random()).unwrap());
    }
    let mut d = doc::new_record(RecordKind::GbvCase, &base(RecordKind::GbvCase), ActorId::random()).unwrap();
    doc::set_path(&mut d, "status", &json!("closed")).unwrap();
    doc::append(&mut d, "services", &json!({"kind": "legal_aid"})).unwrap();
    doc::delete_record(&mut d, "trùng").unwrap();
    save("valid-gbv-edited-deleted.bin", &mut d);
    // Two devices set the immutable commune concurrently: must be refused, not crash.
    let mut a = doc::new_record(RecordKind::NewsItem, &base(RecordKind::NewsItem), ActorId::random()).unwrap();
    let mut b = a.fork().with_actor(ActorId::random());
    a.put(ObjId::Root, "commune", "04702").unwrap();
    b.put(ObjId::Root, "commune", "04703").unwrap();
    a.merge(&mut b).unwrap();
    save("commune-conflict.bin", &mut a);
    let mut d = doc::new_record(RecordKind::GbvCase, &base(RecordKind::GbvCase), ActorId::random()).unwrap();
    d.put(ObjId::Root, "kind", "news_item").unwrap();
    save("kind-changed.bin", &mut d);
    let mut d = doc::new_record(RecordKind::GbvCase, &base(RecordKind::GbvCase), ActorId::random()).unwrap();
    d.put_object(ObjId::Root, "victim", ObjType::List).unwrap();
    let t = d.put_object(ObjId::Root, "notes", ObjType::Text).unwrap();
    d.splice_text(&t, 0, 0, "văn bản").unwrap();
    save("wrong-object-types.bin", &mut d);
    let mut d = AutoCommit::new();
    d.put(ObjId::Root, "commune", "04701").unwrap();
    save("no-kind.bin", &mut d);
    save("empty-document.bin", &mut AutoCommit::new());
}

#[test]
fn corpus_documents_never_panic() {
    if std::env::var_os("GESYNC_WRITE_CORPUS").is_some() {
        write_doc_seeds();
    }
    for (name, bytes) in corpus("docs") {
        // Arbitrary bytes may not even load; a loaded document must be judged without a panic.
        let loaded = AutoCommit::load(&bytes);
        if name.starts_with("valid") {
            assert!(loaded.is_ok(), "docs/{name} should load");
        }
        if let Ok(d) = loaded {
            check_any_doc(&d).unwrap_or_else(|e| panic!("docs/{name}: {e}"));
            if name.starts_with("valid") {
                assert!(doc::check_doc(&d).is_ok(), "docs/{name} should pass check_doc");
            }
        }
        let mut fresh = AutoCommit::new();
        let _ = fresh.load_incremental(&bytes);
        let _ = doc::check_doc(&fresh);
    }
}
