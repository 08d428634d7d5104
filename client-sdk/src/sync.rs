//! The sync loop (see `sync_protocol::wire` for the protocol).
//!
//! Each round: push the pending records that fit in a page, ask for whole documents the phone
//! could not apply, send the cursor; then apply the verdicts and the pulled changes, and persist
//! every record and then the cursor *before* the next request. An interrupted sync therefore
//! resumes safely: a re-pushed change is idempotent on the server, a re-pulled change is
//! idempotent in Automerge.
//!
//! Termination: a record is pushed at most once per (heads, server heads) pair in one sync, a
//! whole document is asked for at most once per sync, and the loop stops after
//! [`MAX_ROUNDS`] rounds whatever the server says.

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::AutoCommit;
use sync_protocol::wire::{
    Hash, PushDoc, PushOutcome, SyncRequest, SyncResponse, MAX_MESSAGE_BYTES,
};
use sync_protocol::{doc, heads_from_wire, RecordId};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::store::{sorted, RecordMeta, Rejection, SyncStatus};
use crate::transport::Transport;

/// Most rounds one sync makes.
pub const MAX_ROUNDS: usize = 1000;
/// Largest push a request carries, leaving room under [`MAX_MESSAGE_BYTES`] for framing.
pub const PUSH_BUDGET: usize = MAX_MESSAGE_BYTES - MAX_MESSAGE_BYTES / 8;
/// Longest rejection reason kept (the server's reason is meant for the officer, one line).
const MAX_REASON: usize = 300;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Records whose changes the server accepted.
    pub pushed: usize,
    /// Records changed by what the server sent.
    pub pulled: usize,
    /// Records holding conflicting values after the sync.
    pub conflicts: usize,
    /// Records the server refused (see `sync_error` in [`Client::show`]).
    pub rejected: usize,
}

/// Progress, reported after each round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncProgress {
    pub round: usize,
    pub pushed: usize,
    pub pulled: usize,
    pub rejected: usize,
    /// Records still pending.
    pub pending: usize,
    /// True when the server has more to send.
    pub more: bool,
}

/// State of one sync across its rounds.
#[derive(Default)]
struct Round {
    /// (record, heads, server heads) already pushed in this sync.
    tried: HashSet<(RecordId, Vec<Hash>, Vec<Hash>)>,
    /// Records to ask whole in the next request.
    want_full: BTreeSet<RecordId>,
    /// Records already asked whole in this sync.
    asked_full: HashSet<RecordId>,
}

impl Round {
    fn ask_full(&mut self, id: RecordId) {
        if !self.asked_full.contains(&id) {
            self.want_full.insert(id);
        }
    }
}

impl Client {
    /// Pushes pending records and pulls what changed on the server, until both sides are level.
    /// `progress` is called after every round.
    pub async fn sync(&mut self, mut progress: impl FnMut(&SyncProgress)) -> Result<SyncReport> {
        if self.store.state().access_token.is_none() {
            return Err(match self.store.state().server {
                Some(_) => Error::SessionExpired,
                None => Error::NotLoggedIn,
            });
        }
        let transport = self.transport()?;
        let mut report = SyncReport::default();
        let mut round = Round::default();
        let mut more = false;
        for n in 0.. {
            let push = self.build_push(&mut round)?;
            let want_full: Vec<RecordId> =
                std::mem::take(&mut round.want_full).into_iter().collect();
            if n > 0 && push.is_empty() && want_full.is_empty() && !more {
                break;
            }
            if n == MAX_ROUNDS {
                return Err(Error::Protocol(format!(
                    "the sync did not settle in {MAX_ROUNDS} rounds; run it again"
                )));
            }
            round.asked_full.extend(want_full.iter().copied());
            let pushed: HashMap<RecordId, Vec<Hash>> =
                push.iter().map(|p| (p.id, p.heads.clone())).collect();
            let request = SyncRequest {
                cursor: self.store.state().cursor.clone(),
                push,
                want_full,
            };
            let response = self.call_sync(&*transport, request.encode()).await?;
            drop(request);
            more = response.more;
            self.apply(&pushed, response, &mut report, &mut round)?;
            progress(&SyncProgress {
                round: n + 1,
                pushed: report.pushed,
                pulled: report.pulled,
                rejected: report.rejected,
                pending: self.pending_count(),
                more,
            });
        }
        report.conflicts = self
            .store
            .records()
            .values()
            .filter(|m| m.conflicts > 0)
            .count();
        Ok(report)
    }

    /// The pending records not yet pushed at their current heads in this sync, as many as fit in
    /// one page. A record never pushed, or whose whole document the server asked for, goes whole
    /// (as stored); the others as the changes after the server's heads.
    fn build_push(&self, round: &mut Round) -> Result<Vec<PushDoc>> {
        let candidates: Vec<(RecordId, RecordMeta)> = self
            .store
            .records()
            .iter()
            .filter(|(id, m)| {
                m.status() == SyncStatus::Pending
                    && !round
                        .tried
                        .contains(&(**id, m.heads.clone(), m.server_heads.clone()))
            })
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        let mut push = Vec::new();
        let mut size = 64;
        for (id, meta) in candidates {
            // A record the server has nothing of goes as stored (a whole document), unloaded.
            let changes = if meta.server_heads.is_empty() {
                self.store.doc_bytes(id)?
            } else {
                let (_, mut d) = self.store.load_doc(id)?;
                d.save_after(&heads_from_wire(&meta.server_heads))
            };
            let cost = changes.len() + 32 * meta.heads.len() + 64;
            if cost > PUSH_BUDGET {
                return Err(Error::Config(format!(
                    "record {id} is too large to sync ({} bytes of changes)",
                    changes.len()
                )));
            }
            if size + cost > PUSH_BUDGET {
                break; // The next round takes it.
            }
            size += cost;
            round
                .tried
                .insert((id, meta.heads.clone(), meta.server_heads.clone()));
            push.push(PushDoc {
                id,
                changes,
                heads: meta.heads,
            });
        }
        Ok(push)
    }

    /// One sync request, refreshing the session once if the access token has expired.
    async fn call_sync(
        &mut self,
        transport: &dyn Transport,
        body: Vec<u8>,
    ) -> Result<SyncResponse> {
        let mut access = self
            .store
            .state()
            .access_token
            .clone()
            .ok_or(Error::NotLoggedIn)?;
        let mut refreshed = false;
        loop {
            match transport.sync(&access, body.clone()).await {
                Ok(bytes) => {
                    return SyncResponse::decode(&bytes).map_err(|e| Error::Protocol(e.to_string()))
                }
                Err(e) if e.is_device_revoked() => return Err(self.revoked()),
                Err(e) if e.is_unauthorized() && !refreshed => {
                    access = self.refresh(transport).await?;
                    refreshed = true;
                }
                Err(e) if e.is_unauthorized() => return Err(Error::SessionExpired),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Applies one response and persists it: records first, the cursor last.
    fn apply(
        &mut self,
        pushed: &HashMap<RecordId, Vec<Hash>>,
        response: SyncResponse,
        report: &mut SyncReport,
        round: &mut Round,
    ) -> Result<()> {
        for result in response.results {
            let Some(heads) = pushed.get(&result.id).cloned() else {
                continue;
            };
            if self.store.meta(result.id).is_err() {
                continue;
            }
            match result.outcome {
                PushOutcome::Accepted => {
                    report.pushed += 1;
                    self.store.update_meta(result.id, |m| {
                        m.server_heads = heads;
                        m.rejected = None;
                    })?;
                }
                PushOutcome::Rejected { reason } => {
                    report.rejected += 1;
                    let reason: String = reason
                        .replace(['\n', '\r'], " ")
                        .chars()
                        .take(MAX_REASON)
                        .collect();
                    self.store.update_meta(result.id, |m| {
                        m.rejected = Some(Rejection { reason, heads })
                    })?;
                }
                PushOutcome::NeedFull => {
                    self.store
                        .update_meta(result.id, |m| m.server_heads.clear())?;
                }
            }
        }
        for pulled in response.pull {
            if self.apply_pull(pulled.id, &pulled.changes, &pulled.heads, round)? {
                report.pulled += 1;
            }
        }
        // The round's verdicts in one journal write; pulled records reach the disk before the
        // cursor moves past them (the same sync carries the journal along).
        self.store.flush_acks(false)?;
        self.store.make_durable()?;
        let cursor = response.cursor;
        self.store.update_state(|s| s.cursor = cursor)
    }

    /// Applies one pulled record; returns whether the local document changed. A record whose
    /// changes cannot be applied (missing history) is left as it was and asked for whole.
    fn apply_pull(
        &mut self,
        id: RecordId,
        changes: &[u8],
        heads: &[Hash],
        round: &mut Round,
    ) -> Result<bool> {
        let known = self.store.meta(id).is_ok();
        let (meta, mut d) = if known {
            let (m, d) = self.store.load_doc(id)?;
            (Some(m), d)
        } else {
            (
                None,
                AutoCommit::new().with_actor(self.store.actor().clone()),
            )
        };
        let before = d.get_heads();
        if d.load_incremental(changes).is_err() {
            round.ask_full(id);
            return Ok(false);
        }
        let server_heads = heads_from_wire(heads);
        if !d.get_missing_deps(&server_heads).is_empty() {
            round.ask_full(id);
            return Ok(false);
        }
        let meta = match meta {
            Some(m) => m,
            None => match doc::kind_of(&d) {
                Ok(kind) => RecordMeta {
                    kind,
                    heads: vec![],
                    server_heads: vec![],
                    rejected: None,
                    conflicts: 0,
                },
                // Not a record this SDK understands: keep nothing rather than a broken file.
                Err(_) => return Ok(false),
            },
        };
        let changed = d.get_heads() != before;
        let server_heads = sorted(heads.to_vec());
        if !changed && meta.server_heads == server_heads && !meta.heads.is_empty() {
            return Ok(false);
        }
        let meta = RecordMeta {
            server_heads,
            ..meta
        };
        self.write_pulled_doc(id, meta, &mut d, (!known).then_some(changes))?;
        Ok(changed)
    }
}
