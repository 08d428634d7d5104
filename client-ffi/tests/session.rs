//! The app-driven sync and the record calls, without a server: answers are made up as a server
//! would send them, so each refusal's handling is seen (the JVM test in bindings/kotlin runs the
//! same calls against a real server).

use std::sync::{Arc, Mutex};

use gesync_ffi::{GesyncError, HttpAnswer, HttpRequest, KeyProvider, Phone, RecordKind, SyncStatus, SyncStep};

#[derive(Default)]
struct Keys {
    key: Mutex<Option<Vec<u8>>>,
    forgotten: Mutex<u32>,
}

impl KeyProvider for Keys {
    fn create_key(&self, _dir: String) -> Result<Vec<u8>, GesyncError> {
        *self.key.lock().unwrap() = Some(vec![9; 32]);
        Ok(vec![9; 32])
    }
    fn open_key(&self, _dir: String) -> Result<Vec<u8>, GesyncError> {
        self.key.lock().unwrap().clone().ok_or(GesyncError::Key { reason: "no key".into() })
    }
    fn forget_key(&self, _dir: String) -> Result<(), GesyncError> {
        *self.key.lock().unwrap() = None;
        *self.forgotten.lock().unwrap() += 1;
        Ok(())
    }
}

const SERVER: &str = "http://127.0.0.1:9";

fn tokens(access: &str, refresh: &str) -> HttpAnswer {
    let body = format!(r#"{{"access_token":"{access}","refresh_token":"{refresh}","token_type":"Bearer","expires_in":900}}"#);
    HttpAnswer { status: 200, body: body.into_bytes(), retry_after_seconds: None }
}

fn refusal(status: u16, code: &str, retry_after: Option<u64>) -> HttpAnswer {
    let body = format!(r#"{{"error":{{"code":"{code}","message":"refused"}}}}"#);
    HttpAnswer { status, body: body.into_bytes(), retry_after_seconds: retry_after }
}

fn send(step: SyncStep) -> HttpRequest {
    match step {
        SyncStep::Send { request } => request,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn logged_in_phone(dir: &std::path::Path, keys: Arc<Keys>) -> Arc<Phone> {
    let phone = Phone::open(dir.join("store").to_string_lossy().into_owned(), keys).unwrap();
    let login = phone.login_request(SERVER.into(), "xa.damthuy".into(), "pw".into()).unwrap();
    assert_eq!(login.url, format!("{SERVER}/api/v1/auth/login"));
    let body: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
    assert_eq!(body["device_id"], phone.device_id().as_str());
    phone.login_answer(SERVER.into(), "xa.damthuy".into(), tokens("a1", "r1")).unwrap();
    assert!(phone.logged_in());
    phone
}

#[test]
fn records_work_offline_with_their_state_and_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let phone = Phone::open(dir.path().join("store").to_string_lossy().into_owned(), Arc::new(Keys::default())).unwrap();
    let id = phone.create(RecordKind::GbvCase, r#"{"commune":"04711","detected_on":"2025-10-02","victim":{"sex":"female"}}"#.into()).unwrap();
    phone.append(id.clone(), "services".into(), r#"{"kind":"legal_aid","provided_on":"2025-10-04"}"#.into()).unwrap();
    let r = phone.show(id.clone()).unwrap();
    assert_eq!((r.kind, r.sync, r.conflicts.len()), (RecordKind::GbvCase, SyncStatus::Pending, 0));
    assert!(r.json.contains("legal_aid"));
    assert_eq!(phone.pending_count(), 1);
    phone.delete(id.clone(), "entered twice".into()).unwrap();
    assert!(phone.show(id.clone()).unwrap().json.contains("\"deleted\":true"));

    let e = phone.set(id.clone(), "victim.sex".into(), r#""robot""#.into()).unwrap_err();
    assert_eq!(e.code(), "schema");
    assert!(matches!(&e, GesyncError::Schema { path, problem, .. } if path == "victim.sex" && problem == "not_in_enum"), "{e:?}");
    assert_eq!(phone.set(id, "notes".into(), "{".into()).unwrap_err().code(), "bad_json");
    assert_eq!(phone.begin_sync().unwrap_err().code(), "not_logged_in");
    assert_eq!(phone.next_step().unwrap_err().code(), "usage");
}

#[test]
fn the_app_driven_sync_waits_after_failures_refreshes_once_and_is_wiped_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(Keys::default());
    let phone = logged_in_phone(dir.path(), keys.clone());
    phone.create(RecordKind::NewsItem, r#"{"commune":"04711","published_on":"2025-11-05","channel":"loudspeaker"}"#.into()).unwrap();
    phone.begin_sync().unwrap();

    let first = send(phone.next_step().unwrap());
    assert_eq!(first.url, format!("{SERVER}/api/v1/sync"));
    assert_eq!(first.headers["authorization"], "Bearer a1");
    assert_eq!(first.headers["content-type"], "application/x-gesync");

    // No answer: wait about half a second, then the same push goes again.
    phone.failed("timeout".into()).unwrap();
    assert!(matches!(phone.answer(refusal(200, "", None)), Err(GesyncError::Usage { .. })), "answer with nothing in flight");
    match phone.next_step().unwrap() {
        SyncStep::Wait { millis, failures: 1, code, .. } => assert!((400..=600).contains(&millis) && code == "unreachable", "{millis} {code}"),
        other => panic!("{other:?}"),
    }
    let again = send(phone.next_step().unwrap());
    assert_eq!(again.url, first.url);

    // Busy with Retry-After: the wait is at least what the server asked.
    phone.answer(refusal(503, "busy", Some(7))).unwrap();
    match phone.next_step().unwrap() {
        SyncStep::Wait { millis, failures: 2, code, .. } => assert!(millis >= 7000 && code == "busy", "{millis} {code}"),
        other => panic!("{other:?}"),
    }

    // An expired access token: one refresh, then the same request with the new token.
    let body = send(phone.next_step().unwrap()).body;
    phone.answer(refusal(401, "token_expired", None)).unwrap();
    let refresh = send(phone.next_step().unwrap());
    assert_eq!(refresh.url, format!("{SERVER}/api/v1/auth/refresh"));
    assert!(String::from_utf8(refresh.body).unwrap().contains("\"r1\""));
    phone.answer(tokens("a2", "r2")).unwrap();
    let resent = send(phone.next_step().unwrap());
    assert_eq!((resent.headers["authorization"].as_str(), &resent.body), ("Bearer a2", &body));
    // A second expiry right after a refresh ends the session.
    assert_eq!(phone.answer(refusal(401, "token_expired", None)).unwrap_err().code(), "session_expired");
    assert!(phone.progress().is_none(), "the sync ended");

    // Logged in again, the device is revoked: the store and the key are wiped.
    phone.login_answer(SERVER.into(), "xa.damthuy".into(), tokens("a3", "r3")).unwrap();
    phone.begin_sync().unwrap();
    send(phone.next_step().unwrap());
    let e = phone.answer(refusal(403, "device_revoked", None)).unwrap_err();
    assert!(e.wiped() && !e.is_transient() && e.code() == "device_revoked", "{e:?}");
    assert_eq!(*keys.forgotten.lock().unwrap(), 1);
    assert!(!dir.path().join("store/records").exists());
    assert_eq!(phone.list(None).unwrap_err().code(), "device_revoked");
    assert_eq!(phone.begin_sync().unwrap_err().code(), "device_revoked");
}

#[test]
fn a_refused_login_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let phone = Phone::open(dir.path().join("store").to_string_lossy().into_owned(), Arc::new(Keys::default())).unwrap();
    let e = phone.login_answer(SERVER.into(), "u".into(), refusal(401, "unauthorized", None)).unwrap_err();
    assert_eq!(e.code(), "login_refused");
    let e = phone.login_answer(SERVER.into(), "u".into(), refusal(429, "throttled", Some(30))).unwrap_err();
    assert!(matches!(e, GesyncError::Throttled { retry_after_seconds: Some(30), .. }) && e.is_transient(), "{e:?}");
    assert_eq!(phone.login_request("ftp://x".into(), "u".into(), "p".into()).unwrap_err().code(), "config");
    assert!(!phone.logged_in());
}

/// Behind one load balancer, a replica of a build before the records dictionary cannot read a
/// request made with it, which a newer replica's answer led the phone to send: the next step
/// sends the request again at once (no wait) without it, and the sync goes on.
#[test]
fn a_request_an_older_replica_cannot_read_goes_again_at_once_without_the_dictionary() {
    use sync_protocol::wire::{Framing, PushOutcome, PushResult, SyncRequest, SyncResponse, FRAME_RECORDS_DICT};
    let dir = tempfile::tempdir().unwrap();
    let phone = logged_in_phone(dir.path(), Arc::new(Keys::default()));
    phone.create(RecordKind::NewsItem, r#"{"commune":"04711","published_on":"2025-11-05","channel":"loudspeaker"}"#.into()).unwrap();
    phone.begin_sync().unwrap();
    let first = send(phone.next_step().unwrap()).body;
    assert_eq!(first[5] & FRAME_RECORDS_DICT, 0, "the first request of a sync goes without it");
    // A newer replica answers with the dictionary, and says there is more to pull.
    let (req, _) = SyncRequest::decode_framed(&first).unwrap();
    let results = req.push.iter().map(|p| PushResult { id: p.id, outcome: PushOutcome::Accepted }).collect();
    let answer = SyncResponse { results, more: true, ..Default::default() }.encode_as(Framing::ZSTD_DICT.answer(&req));
    phone.answer(HttpAnswer { status: 200, body: answer, retry_after_seconds: None }).unwrap();
    let second = send(phone.next_step().unwrap()).body;
    assert_ne!(second[5] & FRAME_RECORDS_DICT, 0, "with it once the server said it has it");
    // The older replica cannot read it.
    phone.answer(refusal(400, "bad_sync_message", None)).unwrap();
    let again = send(phone.next_step().unwrap()).body;
    assert_eq!(again[5] & FRAME_RECORDS_DICT, 0, "again at once, without it");
    assert_eq!(SyncRequest::decode(&again).unwrap(), SyncRequest::decode(&second).unwrap(), "the same request");
    // The same refusal of a request made without it ends the sync with the server's message.
    let e = phone.answer(refusal(400, "bad_sync_message", None)).unwrap_err();
    assert_eq!(e.code(), "server", "{e:?}");
    assert!(phone.progress().is_none(), "the sync ended");
    assert_eq!(phone.pending_count(), 0, "what the first answer acknowledged stays acknowledged");
}
