//! An in-process fake of the server's auth and sync semantics (see `sync_protocol::wire`),
//! enough to drive the SDK's sync loop through every path: accept, reject, NeedFull, pull,
//! want_full, paging with `more`, token expiry, device revocation and network failure.
#![allow(dead_code)]

pub mod http;

use std::collections::BTreeMap;
use std::sync::Mutex;

use automerge::{AutoCommit, ChangeHash};
use client_sdk::{BoxFuture, LoginRequest, RecordId, Tokens, Transport, TransportError};
use sync_protocol::wire::{
    PullDoc, PushOutcome, PushResult, SyncRequest, SyncResponse, MAX_MESSAGE_BYTES,
};
use sync_protocol::{doc, heads_from_wire, heads_to_wire};

pub const PASSWORD: &str = "correct horse";

struct ServerDoc {
    doc: AutoCommit,
    /// Heads before the latest accepted push: the feed sends only the changes after them, so a
    /// phone that missed an earlier version cannot apply them and must ask for the whole doc.
    prev_heads: Vec<ChangeHash>,
}

#[derive(Default)]
pub struct Inner {
    docs: BTreeMap<RecordId, ServerDoc>,
    seq: u64,
    feed: BTreeMap<RecordId, u64>,
    access: Vec<String>,
    refresh: Vec<String>,
    issued: u64,
    /// The next sync call answers 401 token_expired (and the access token dies).
    pub expire_next: bool,
    /// Refresh calls fail with 401.
    pub refresh_broken: bool,
    pub revoked: bool,
    /// Login answers 429 with `Retry-After: 30`.
    pub throttle_login: bool,
    /// Records of this commune are refused.
    pub reject_commune: Option<String>,
    /// At most this many records pulled per response.
    pub page: usize,
    /// Sync calls after this many fail as if the network dropped.
    pub fail_after: Option<usize>,
    pub sync_calls: usize,
    pub largest_body: usize,
    pub requests: Vec<SyncRequest>,
}

pub struct FakeServer(pub Mutex<Inner>);

impl FakeServer {
    pub fn new() -> Self {
        FakeServer(Mutex::new(Inner {
            page: 100,
            ..Default::default()
        }))
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    /// Forgets a record, as after restoring an old backup.
    pub fn forget(&self, id: RecordId) {
        self.with(|s| {
            s.docs.remove(&id);
            s.feed.remove(&id);
        })
    }

    pub fn view(&self, id: RecordId) -> Option<serde_json::Value> {
        self.with(|s| s.docs.get(&id).map(|d| doc::view(&d.doc).unwrap()))
    }

    pub fn record_count(&self) -> usize {
        self.with(|s| s.docs.len())
    }

    fn issue(s: &mut Inner) -> Tokens {
        s.issued += 1;
        let t = Tokens {
            access_token: format!("access-{}", s.issued),
            refresh_token: format!("refresh-{}", s.issued),
            token_type: "Bearer".into(),
            expires_in: 900,
            device_proof: None,
        };
        s.access.push(t.access_token.clone());
        s.refresh.push(t.refresh_token.clone());
        t
    }

    fn handle_sync(s: &mut Inner, body: &[u8]) -> SyncResponse {
        s.largest_body = s.largest_body.max(body.len());
        let req = SyncRequest::decode(body).expect("the SDK sends valid sync requests");
        let mut results = Vec::new();
        for p in &req.push {
            let outcome = Self::push_one(s, p.id, &p.changes, &p.heads);
            results.push(PushResult { id: p.id, outcome });
        }
        let cursor = match req.cursor.as_slice() {
            [] => 0,
            c => u64::from_le_bytes(c.try_into().expect("an 8-byte cursor")),
        };
        let mut moved: Vec<(u64, RecordId)> = s
            .feed
            .iter()
            .filter(|(_, seq)| **seq > cursor)
            .map(|(id, seq)| (*seq, *id))
            .collect();
        moved.sort();
        let more = moved.len() > s.page;
        moved.truncate(s.page);
        let new_cursor = if more {
            moved.last().map(|m| m.0).unwrap_or(cursor)
        } else {
            s.seq
        };
        let mut pull = Vec::new();
        for (_, id) in moved {
            let d = s.docs.get_mut(&id).unwrap();
            let changes = d.doc.save_after(&d.prev_heads);
            pull.push(PullDoc {
                id,
                changes,
                heads: heads_to_wire(&d.doc.get_heads()),
            });
        }
        for id in &req.want_full {
            if let Some(d) = s.docs.get_mut(id) {
                pull.push(PullDoc {
                    id: *id,
                    changes: d.doc.save(),
                    heads: heads_to_wire(&d.doc.get_heads()),
                });
            }
        }
        s.requests.push(req);
        SyncResponse {
            results,
            pull,
            cursor: new_cursor.to_le_bytes().to_vec(),
            more,
            ..Default::default()
        }
    }

    fn push_one(s: &mut Inner, id: RecordId, changes: &[u8], heads: &[[u8; 32]]) -> PushOutcome {
        let (mut d, prev) = match s.docs.get_mut(&id) {
            Some(sd) => (sd.doc.fork(), sd.doc.get_heads()),
            None => (AutoCommit::new(), vec![]),
        };
        if d.load_incremental(changes).is_err() {
            return PushOutcome::Rejected {
                reason: "unreadable changes".into(),
            };
        }
        if !d.get_missing_deps(&heads_from_wire(heads)).is_empty() {
            return PushOutcome::NeedFull;
        }
        if let Err(e) = doc::check_doc(&d) {
            return PushOutcome::Rejected {
                reason: e.to_string(),
            };
        }
        if let Some(bad) = &s.reject_commune {
            if doc::all_root_strings(&d, "commune").unwrap().contains(bad) {
                return PushOutcome::Rejected {
                    reason: format!("commune {bad} is outside your org unit"),
                };
            }
        }
        if d.get_heads() != prev {
            s.seq += 1;
            s.feed.insert(id, s.seq);
            s.docs.insert(
                id,
                ServerDoc {
                    doc: d,
                    prev_heads: prev,
                },
            );
        }
        PushOutcome::Accepted
    }
}

impl Transport for FakeServer {
    fn login<'a>(&'a self, req: &'a LoginRequest) -> BoxFuture<'a, Result<Tokens, TransportError>> {
        Box::pin(async move {
            let mut s = self.0.lock().unwrap();
            if s.revoked {
                return Err(TransportError::status(
                    403,
                    "device_revoked",
                    "device revoked",
                ));
            }
            if s.throttle_login {
                return Err(TransportError::Status {
                    status: 429,
                    code: "throttled".into(),
                    message: "too many attempts".into(),
                    retry_after: Some(30),
                });
            }
            if req.password != PASSWORD {
                return Err(TransportError::status(
                    401,
                    "bad_credentials",
                    "wrong username or password",
                ));
            }
            Ok(Self::issue(&mut s))
        })
    }

    fn refresh<'a>(
        &'a self,
        refresh_token: &'a str,
    ) -> BoxFuture<'a, Result<Tokens, TransportError>> {
        Box::pin(async move {
            let mut s = self.0.lock().unwrap();
            let known = s.refresh.iter().position(|t| t == refresh_token);
            match known {
                Some(i) if !s.refresh_broken => {
                    s.refresh.remove(i); // rotates: a refresh token works once
                    Ok(Self::issue(&mut s))
                }
                _ => Err(TransportError::status(
                    401,
                    "unauthorized",
                    "refresh token expired",
                )),
            }
        })
    }

    fn sync<'a>(
        &'a self,
        access_token: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            let mut s = self.0.lock().unwrap();
            s.sync_calls += 1;
            if s.fail_after.is_some_and(|n| s.sync_calls > n) {
                return Err(TransportError::Unreachable {
                    url: "fake".into(),
                    reason: "network down".into(),
                });
            }
            if s.revoked {
                return Err(TransportError::status(
                    403,
                    "device_revoked",
                    "device revoked",
                ));
            }
            assert!(
                body.len() <= MAX_MESSAGE_BYTES,
                "a sync body of {} bytes",
                body.len()
            );
            if s.expire_next {
                s.expire_next = false;
                s.access.retain(|t| t != access_token);
                return Err(TransportError::status(
                    401,
                    "token_expired",
                    "access token expired",
                ));
            }
            if !s.access.iter().any(|t| t == access_token) {
                return Err(TransportError::status(401, "unauthorized", "unknown token"));
            }
            Ok(Self::handle_sync(&mut s, &body).encode())
        })
    }
}
