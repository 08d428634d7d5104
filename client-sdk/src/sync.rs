//! The sync loop (see `sync_protocol::wire` for the protocol).
//!
//! A sync is a series of exchanges sized for the link. Each round: push the pending records that
//! fit in the upload page, ask for whole documents the phone could not apply, send the cursor
//! and the download page size; then apply the verdicts and the pulled changes, and persist every
//! record and then the cursor *before* the next request. An interrupted exchange therefore costs
//! at most its own page: a re-pushed change is idempotent on the server, a re-pulled change is
//! idempotent in Automerge, and a large record coming in slices resumes after the slices kept.
//!
//! On a poor link ([`SyncOptions::retry_for`]) a failed exchange (the link dropped, stalled, or
//! the server is busy) is retried with backoff and a smaller page, and the page sizes follow the
//! throughput measured on each exchange ([`Pacer`]): about [`SyncOptions::page_seconds`] of
//! link time per page, so a cut loses little and per-request overhead stays small.
//!
//! Termination: a record is pushed at most once per (heads, server heads) pair in one sync
//! (unless the exchange carrying it failed), a whole document is asked for at most once per
//! sync, and the loop stops after [`MAX_ROUNDS`] rounds whatever the server says.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use automerge::AutoCommit;
use rand::Rng;
use sync_protocol::wire::{
    Framing, Hash, PartResume, PullPart, PushDoc, PushOutcome, PushPart, SyncRequest,
    SyncResponse, DEFAULT_PAGE_BYTES, FLAG_ZSTD, MAX_MESSAGE_BYTES, MAX_UPLOAD_BYTES, MIN_PAGE_BYTES,
};
use sync_protocol::{doc, heads_from_wire, RecordId};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::store::{sorted, Partial, RecordMeta, Rejection, SyncStatus};
use crate::transport::Transport;

/// Most rounds one sync makes (at the smallest pages, enough for a province's records).
pub const MAX_ROUNDS: usize = 100_000;
/// Largest push a request carries, leaving room under [`MAX_MESSAGE_BYTES`] for framing.
pub const PUSH_BUDGET: usize = MAX_MESSAGE_BYTES - MAX_MESSAGE_BYTES / 8;
/// Longest rejection reason kept (the server's reason is meant for the officer, one line).
const MAX_REASON: usize = 300;
/// Smallest page either way (the server's own floor): below this, round trips dominate.
const MIN_PAGE: usize = MIN_PAGE_BYTES as usize;
/// Longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a sync behaves on a poor link.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Keep retrying failed exchanges (link down, cut, stalled, server busy) for this long,
    /// with backoff; zero fails at the first error. Progress is kept either way.
    pub retry_for: Duration,
    /// Link time one page should take. Shorter pages lose less to a cut; longer ones waste
    /// less on round trips.
    pub page_seconds: f64,
    /// Bytes of changes asked for in the first download page (then adapted).
    pub first_pull_page: usize,
    /// Bytes of changes sent in the first upload page (then adapted).
    pub first_push_page: usize,
    /// Compress requests, and ask for compressed answers (zstd).
    pub compress: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            retry_for: Duration::ZERO,
            page_seconds: 6.0,
            first_pull_page: 64 * 1024,
            first_push_page: 32 * 1024,
            compress: true,
        }
    }
}

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
    // The fields below are for programs; `gesync-field sync` prints the four above (contract).
    /// Exchanges made, failed ones included.
    #[serde(skip)]
    pub requests: usize,
    /// Failed exchanges that were tried again.
    #[serde(skip)]
    pub retries: usize,
    /// Sync bytes sent and received (bodies, as they went on the wire).
    #[serde(skip)]
    pub bytes_up: u64,
    #[serde(skip)]
    pub bytes_down: u64,
}

/// Progress, reported after each exchange and before each wait for a retry.
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
    /// Records received from the server in this sync, and how many it had to send in all when
    /// known: a phone shows "1,040 / 1,200".
    pub received: u64,
    pub to_receive: Option<u64>,
    /// Sync bytes sent and received so far.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// A large record coming in slices: bytes received of its total.
    pub part: Option<(u64, u64)>,
    /// Records still to offer the server again after it named a new epoch (a restored
    /// backup, a failover): the phone checks that the server holds every record it holds.
    pub to_offer: usize,
    /// Failed exchanges retried so far.
    pub retries: usize,
    /// While waiting to retry: why, and for how long.
    pub retrying: Option<(String, Duration)>,
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
    /// The slices of a large record received so far.
    partial: Option<Partial>,
    /// The large record going up in slices, and how many bytes of it the server holds.
    upload: Option<(RecordId, u64)>,
    /// Records offered (pushed with no changes) in the request in flight.
    offered: HashSet<RecordId>,
    received: u64,
    to_receive: Option<u64>,
}

impl Round {
    fn ask_full(&mut self, id: RecordId) {
        if !self.asked_full.contains(&id) {
            self.want_full.insert(id);
        }
    }

    /// A slice's exchange failed: if it was the last one, the record goes again.
    fn undo_part(&mut self, part: &PushPart, server_heads: &HashMap<RecordId, Vec<Hash>>) {
        let server = server_heads.get(&part.id).cloned().unwrap_or_default();
        self.tried.remove(&(part.id, part.heads.clone(), server));
    }

    /// An exchange failed before its answer was applied: what it carried goes again.
    fn undo(&mut self, push: &[PushDoc], server_heads: &HashMap<RecordId, Vec<Hash>>, want_full: &[RecordId]) {
        // Offers stay in the store's list until answered: the next request carries them again.
        self.offered.clear();
        for p in push {
            let server = server_heads.get(&p.id).cloned().unwrap_or_default();
            self.tried.remove(&(p.id, p.heads.clone(), server));
        }
        for id in want_full {
            self.asked_full.remove(id);
            self.want_full.insert(*id);
        }
    }
}

/// Page sizes that follow the link. After each exchange the bytes each way and the time taken
/// give a (pessimistic: round trips included) throughput, and the next page is sized to take
/// about `page_seconds` at that rate, growing at most twofold per exchange; a failed exchange
/// halves both pages. When the link keeps dropping, pages are also kept to a quarter of the
/// time it stays up (measured between failures), so that most pages finish before the next
/// cut. Sizes are in bytes of changes (what the server budgets), converted from wire bytes with
/// the compression ratio last seen.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    pull: usize,
    push: usize,
    page_seconds: f64,
    /// How long the link stays up between failures (smoothed), once one was seen.
    uptime: Option<f64>,
    /// The last failure, or the start of the sync.
    last_failure: Instant,
    /// Changes bytes per wire byte, each way.
    ratio_down: f64,
    ratio_up: f64,
}

impl Pacer {
    fn new(o: &SyncOptions) -> Pacer {
        Pacer {
            pull: o.first_pull_page.clamp(MIN_PAGE, DEFAULT_PAGE_BYTES as usize),
            push: o.first_push_page.clamp(MIN_PAGE, PUSH_BUDGET),
            page_seconds: o.page_seconds.max(0.5),
            uptime: None,
            last_failure: Instant::now(),
            ratio_down: 1.0,
            ratio_up: 1.0,
        }
    }

    /// Link time one page should take now.
    fn seconds(&self) -> f64 {
        match self.uptime {
            Some(up) => self.page_seconds.min(up / 4.0).max(0.5),
            None => self.page_seconds,
        }
    }

    /// One exchange went through: `(changes, wire)` bytes each way, in `elapsed`.
    fn exchanged(&mut self, up: (usize, usize), down: (usize, usize), elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(0.001);
        // Only a direction that carried enough to measure moves its page.
        if down.1 >= 2 * 1024 {
            self.ratio_down = (down.0 as f64 / down.1 as f64).clamp(1.0, 8.0);
            let target = down.1 as f64 / secs * self.seconds() * self.ratio_down;
            self.pull = (target as usize).clamp(MIN_PAGE, (self.pull * 2).min(DEFAULT_PAGE_BYTES as usize));
        }
        if up.1 >= 2 * 1024 {
            self.ratio_up = (up.0 as f64 / up.1 as f64).clamp(1.0, 8.0);
            let target = up.1 as f64 / secs * self.seconds() * self.ratio_up;
            self.push = (target as usize).clamp(MIN_PAGE, (self.push * 2).min(PUSH_BUDGET));
        }
    }

    /// An exchange failed (cut, stalled) at `now`: smaller pages.
    fn failed(&mut self, now: Instant) {
        self.pull = (self.pull / 2).max(MIN_PAGE);
        self.push = (self.push / 2).max(MIN_PAGE);
        let up = now.duration_since(self.last_failure).as_secs_f64();
        self.uptime = Some(match self.uptime {
            Some(u) => 0.5 * u + 0.5 * up,
            None => up,
        });
        self.last_failure = now;
    }
}


/// The wait before try `failures + 1`: exponential from half a second, with jitter so that a
/// whole commune's phones do not come back at the same instant; the server's `Retry-After`
/// wins when it says more.
pub fn backoff(failures: u32, error: &Error) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << failures.saturating_sub(1).min(6));
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    let wait = base.mul_f64(jitter).min(MAX_BACKOFF);
    match error {
        Error::Throttled { retry_after: Some(s) } | Error::Busy { retry_after: Some(s) } => {
            wait.max(Duration::from_secs((*s).min(300)))
        }
        _ => wait,
    }
}

impl Client {
    /// Pushes pending records and pulls what changed on the server, until both sides are level,
    /// failing at the first error. `progress` is called after every exchange.
    pub async fn sync(&mut self, progress: impl FnMut(&SyncProgress)) -> Result<SyncReport> {
        self.sync_with(&SyncOptions::default(), progress).await
    }

    /// [`Client::sync`] with options: on a poor link, retries failed exchanges for
    /// `options.retry_for` with backoff. Stopping it at any moment (dropping the future, killing
    /// the process) loses nothing: every exchange's result is on disk before the next begins.
    pub async fn sync_with(
        &mut self,
        options: &SyncOptions,
        mut progress: impl FnMut(&SyncProgress),
    ) -> Result<SyncReport> {
        if self.store.state().access_token.is_none() {
            return Err(match self.store.state().server {
                Some(_) => Error::SessionExpired,
                None => Error::NotLoggedIn,
            });
        }
        let transport = self.transport()?;
        let deadline = Instant::now() + options.retry_for;
        let framing = if options.compress { Framing::ZSTD } else { Framing::PLAIN };
        let mut pacer = Pacer::new(options);
        let mut report = SyncReport::default();
        let mut round = Round { partial: self.store.partial()?, ..Round::default() };
        let mut more = false;
        let mut failures = 0u32;
        let mut n = 0;
        loop {
            let (push, push_part) = self.build_push(&mut round, pacer.push)?;
            let want_full: Vec<RecordId> =
                std::mem::take(&mut round.want_full).into_iter().collect();
            if n > 0 && push.is_empty() && push_part.is_none() && want_full.is_empty() && !more {
                break;
            }
            if n == MAX_ROUNDS {
                return Err(Error::Protocol(format!(
                    "the sync did not settle in {MAX_ROUNDS} rounds; run it again"
                )));
            }
            round.asked_full.extend(want_full.iter().copied());
            let server_heads: HashMap<RecordId, Vec<Hash>> = push
                .iter()
                .map(|p| p.id)
                .chain(push_part.iter().map(|p| p.id))
                .filter_map(|id| Some((id, self.store.meta(id).ok()?.server_heads.clone())))
                .collect();
            let push_bytes: usize = push.iter().map(|p| p.changes.len()).sum::<usize>()
                + push_part.as_ref().map_or(0, |p| p.bytes.len());
            let request = SyncRequest {
                cursor: self.store.state().cursor.clone(),
                push,
                want_full,
                page_bytes: pacer.pull as u32,
                accept: if options.compress { FLAG_ZSTD } else { 0 },
                count: round.to_receive.is_none(),
                resume: round.partial.as_ref().map(|p| PartResume {
                    id: p.id,
                    seq: p.seq,
                    offset: p.bytes.len() as u64,
                }),
                push_part,
                actor: self.store.actor().to_bytes().to_vec(),
            };
            let body = request.encode_as(framing);
            let started = Instant::now();
            report.requests += 1;
            report.bytes_up += body.len() as u64;
            let up = (push_bytes, body.len());
            let result = self.call_sync(&*transport, body).await;
            let (response, wire_down) = match result {
                Ok(answer) => answer,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    failures += 1;
                    report.retries += 1;
                    round.undo(&request.push, &server_heads, &request.want_full);
                    if let Some(part) = &request.push_part {
                        round.undo_part(part, &server_heads);
                    }
                    pacer.failed(Instant::now());
                    let wait = backoff(failures, &e).min(deadline - Instant::now());
                    progress(&self.progress(n, &report, &round, more, Some((e.to_string(), wait))));
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            failures = 0;
            n += 1;
            report.bytes_down += wire_down as u64;
            let mut pushed: HashMap<RecordId, Vec<Hash>> =
                request.push.into_iter().map(|p| (p.id, p.heads)).collect();
            if let Some(part) = request.push_part {
                // Its verdict comes with the last slice; earlier answers say how much is held.
                pushed.insert(part.id, part.heads);
            }
            let down_bytes = response.pull.iter().map(|p| p.changes.len()).sum::<usize>()
                + response.part.as_ref().map_or(0, |p| p.bytes.len());
            pacer.exchanged(up, (down_bytes, wire_down), started.elapsed());
            more = response.more;
            if let Some(up) = response.uploaded {
                round.upload = Some((up.id, up.have));
            }
            self.apply(&pushed, response, &mut report, &mut round)?;
            progress(&self.progress(n, &report, &round, more, None));
        }
        report.conflicts = self
            .store
            .records()
            .values()
            .filter(|m| m.conflicts > 0)
            .count();
        Ok(report)
    }

    fn progress(
        &self,
        n: usize,
        report: &SyncReport,
        round: &Round,
        more: bool,
        retrying: Option<(String, Duration)>,
    ) -> SyncProgress {
        SyncProgress {
            round: n,
            pushed: report.pushed,
            pulled: report.pulled,
            rejected: report.rejected,
            pending: self.pending_count(),
            more,
            received: round.received,
            to_receive: round.to_receive,
            bytes_up: report.bytes_up,
            bytes_down: report.bytes_down,
            part: round.partial.as_ref().map(|p| (p.bytes.len() as u64, p.total)),
            to_offer: self.store.state().reoffer.len(),
            retries: report.retries,
            retrying,
        }
    }

    /// The pending records not yet pushed at their current heads in this sync, as many as fit in
    /// `budget` bytes. A record never pushed, or whose whole document the server asked for,
    /// goes whole (as stored); the others as the changes after the server's heads. A record
    /// larger than the budget on its own goes up in slices of `budget` bytes ([`PushPart`]),
    /// resumed where the server's copy ends, and counts as pushed with its last slice.
    fn build_push(&self, round: &mut Round, budget: usize) -> Result<(Vec<PushDoc>, Option<PushPart>)> {
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
        // After a new epoch: offers first ("do you hold these heads?"), a few dozen bytes each.
        // A pending record needs none: its own push settles it (a server lacking its base asks
        // for it whole).
        round.offered.clear();
        for id in &self.store.state().reoffer {
            let Ok(meta) = self.store.meta(*id) else { continue };
            if meta.server_heads.is_empty() || meta.status() == SyncStatus::Pending {
                continue;
            }
            let cost = 32 * meta.server_heads.len() + 24;
            if size + cost > budget && !push.is_empty() {
                break;
            }
            size += cost;
            round.offered.insert(*id);
            push.push(PushDoc { id: *id, changes: Vec::new(), heads: meta.server_heads.clone() });
        }
        for (id, meta) in candidates {
            // A record the server has nothing of goes as stored (a whole document), unloaded.
            let changes = if meta.server_heads.is_empty() {
                self.store.doc_bytes(id)?
            } else {
                let (_, mut d) = self.store.load_doc(id)?;
                d.save_after(&heads_from_wire(&meta.server_heads))
            };
            let cost = changes.len() + 32 * meta.heads.len() + 64;
            if changes.len() as u64 > MAX_UPLOAD_BYTES {
                return Err(Error::Config(format!(
                    "record {id} is too large to sync ({} bytes of changes)",
                    changes.len()
                )));
            }
            if size + cost > budget {
                if !push.is_empty() {
                    break; // The next round takes it.
                }
                if cost > budget.min(PUSH_BUDGET) {
                    return Ok((push, Some(Self::next_slice(round, id, meta, changes, budget))));
                }
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
        Ok((push, None))
    }

    /// The next slice of a record going up in slices: from where the server's copy ends (as its
    /// last answer said), `budget` bytes. The last slice marks the record as pushed in this
    /// sync, like a whole push.
    fn next_slice(round: &mut Round, id: RecordId, meta: RecordMeta, changes: Vec<u8>, budget: usize) -> PushPart {
        let offset = match round.upload {
            Some((up, have)) if up == id && (have as usize) < changes.len() => have as usize,
            _ => 0,
        };
        let end = (offset + budget).min(changes.len());
        if end == changes.len() {
            round.tried.insert((id, meta.heads.clone(), meta.server_heads.clone()));
        }
        PushPart {
            id,
            offset: offset as u64,
            total: changes.len() as u64,
            bytes: changes[offset..end].to_vec(),
            heads: meta.heads,
        }
    }

    /// One sync exchange, refreshing the session once if the access token has expired. Returns
    /// the answer and its size on the wire.
    async fn call_sync(
        &mut self,
        transport: &dyn Transport,
        body: Vec<u8>,
    ) -> Result<(SyncResponse, usize)> {
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
                    let response = SyncResponse::decode(&bytes)
                        .map_err(|e| Error::Protocol(e.to_string()))?;
                    return Ok((response, bytes.len()));
                }
                Err(e) if e.is_device_revoked() => return Err(self.revoked()),
                Err(e) if e.is_account_disabled() => return Err(self.disabled()),
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
        // A new epoch: the server may have forgotten what it acknowledged (a restored backup, a
        // failover). Every record it was known to hold is offered again; the server's cursor
        // for this phone already starts from the beginning, so the scope comes again too.
        let mut reoffer = self.store.state().reoffer.clone();
        let mut new_epoch = None;
        if response.epoch != 0 && self.store.state().epoch != Some(response.epoch) {
            new_epoch = Some(response.epoch);
            if self.store.state().epoch.is_some() {
                reoffer = self.store.records().keys().copied().collect();
                // Slices kept or sent are positions in the old history.
                round.partial = None;
                round.upload = None;
                self.store.clear_partial()?;
            }
        }
        let offered = std::mem::take(&mut round.offered);
        for result in response.results {
            let Some(heads) = pushed.get(&result.id).cloned() else {
                continue;
            };
            if self.store.meta(result.id).is_err() {
                continue;
            }
            if offered.contains(&result.id) {
                // An offer: the server holds these heads, or it asks for the whole record.
                reoffer.remove(&result.id);
                if result.outcome == PushOutcome::NeedFull {
                    self.store.update_meta(result.id, |m| {
                        m.server_heads.clear();
                        m.rejected = None;
                    })?;
                }
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
        round.received += response.pull.len() as u64;
        let pulled_any = !response.pull.is_empty();
        for pulled in response.pull {
            // The server holds what it sends: nothing to offer of it.
            reoffer.remove(&pulled.id);
            if self.apply_pull(pulled.id, &pulled.changes, &pulled.heads, round)? {
                report.pulled += 1;
            }
        }
        match response.part {
            Some(part) => {
                if self.apply_part(part, round)? {
                    report.pulled += 1;
                }
            }
            // The server went on without the record being sliced (it changed, and is now sent
            // whole or later at a new position): the slices kept are of no use.
            None if round.partial.is_some() && (pulled_any || !response.more) => {
                round.partial = None;
                self.store.clear_partial()?;
            }
            None => {}
        }
        if let Some(remaining) = response.remaining {
            round.to_receive = Some(round.received + remaining);
        }
        if let Some(scope) = response.scope {
            // Only a scope that changed can leave records this phone may no longer hold.
            if self.store.state().scope.as_ref().is_some_and(|old| *old != scope) {
                self.drop_out_of_scope(&scope)?;
            }
            self.store.update_state(|s| s.scope = Some(scope))?;
        }
        // The round's verdicts in one journal write; pulled records reach the disk before the
        // cursor moves past them (the same sync carries the journal along).
        // Only a record the server was known to hold, with nothing pending, needs an offer: a
        // pending one's own push settles it (a server lacking its base asks for it whole).
        reoffer.retain(|id| self.store.meta(*id).is_ok_and(|m| !m.server_heads.is_empty() && m.status() != SyncStatus::Pending));
        self.store.flush_acks(false)?;
        self.store.make_durable()?;
        let cursor = response.cursor;
        self.store.update_state(|s| {
            s.cursor = cursor;
            s.reoffer = reoffer;
            if let Some(epoch) = new_epoch {
                s.epoch = Some(epoch);
            }
        })
    }

    /// Removes the records of communes this phone's user may no longer see (the user moved to
    /// another commune). Only records the server holds as they are here go: one with changes
    /// the server does not have, or that it refused, stays, so the officer sees the reason
    /// rather than losing the work silently.
    fn drop_out_of_scope(&mut self, scope: &[String]) -> Result<()> {
        let ids: Vec<RecordId> = self
            .store
            .records()
            .iter()
            .filter(|(_, m)| m.status() == SyncStatus::Synced)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let (_, d) = self.store.load_doc(id)?;
            let communes = doc::all_root_strings(&d, "commune").map_err(Error::doc(id))?;
            if !communes.iter().any(|c| scope.contains(c)) {
                self.store.remove_record(id)?;
            }
        }
        Ok(())
    }

    /// Adds one slice of a large record to those kept; with the last one, applies the whole
    /// document like a pulled record. Returns whether the local document changed.
    fn apply_part(&mut self, part: PullPart, round: &mut Round) -> Result<bool> {
        let PullPart { id, seq, offset, total, bytes, heads } = part;
        let mut partial = match round.partial.take() {
            Some(p) if p.id == id && p.seq == seq && p.bytes.len() as u64 == offset => p,
            // A new record, or the server started over (the record changed meanwhile).
            _ if offset == 0 => Partial { id, seq, total, heads, bytes: Vec::new() },
            _ => {
                // Slices that do not follow what is kept: keep nothing, ask again from zero.
                self.store.clear_partial()?;
                return Ok(false);
            }
        };
        partial.bytes.extend_from_slice(&bytes);
        if (partial.bytes.len() as u64) < partial.total {
            self.store.put_partial(&partial)?;
            round.partial = Some(partial);
            return Ok(false);
        }
        round.received += 1;
        let changed = self.apply_pull(id, &partial.bytes, &partial.heads, round)?;
        // The record is written (made durable with the round) before the slices are forgotten.
        self.store.make_durable()?;
        self.store.clear_partial()?;
        Ok(changed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_link_and_shrink_after_a_cut() {
        let mut p = Pacer::new(&SyncOptions::default());
        let first = p.pull;
        // 8 KB/s down, 2x compression: a 6 s page is ~96 KB of changes, reached in steps of 2x.
        for _ in 0..6 {
            let wire = p.pull / 2;
            p.exchanged((0, 100), (p.pull, wire), Duration::from_secs_f64(wire as f64 / 8000.0));
        }
        assert!((90_000..=100_000).contains(&p.pull), "pull page {} (first {first})", p.pull);
        let t0 = p.last_failure;
        p.failed(t0 + Duration::from_secs(40));
        assert!((45_000..=50_000).contains(&p.pull), "{}", p.pull);
        assert_eq!(p.seconds(), 6.0, "a link up for 40 s keeps 6 s pages");
        // A link that then drops every 4 s: pages of a few seconds, then about 1 s.
        p.failed(t0 + Duration::from_secs(44));
        assert_eq!(p.seconds(), 5.5);
        for i in 2..8 {
            p.failed(t0 + Duration::from_secs(40 + 4 * i));
        }
        assert!(p.seconds() < 1.2, "{}", p.seconds());
        // A fast link grows the page up to the protocol's default, not past it.
        let mut p = Pacer::new(&SyncOptions::default());
        for _ in 0..20 {
            p.exchanged((0, 100), (p.pull, p.pull), Duration::from_millis(5));
        }
        assert_eq!(p.pull, DEFAULT_PAGE_BYTES as usize);
        // Uploads likewise, on their own rate.
        let mut p = Pacer::new(&SyncOptions::default());
        for _ in 0..6 {
            let wire = p.push;
            p.exchanged((p.push, wire), (0, 60), Duration::from_secs_f64(wire as f64 / 4000.0));
        }
        assert!((22_000..=24_500).contains(&p.push), "push page {}", p.push);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let cut = Error::Unreachable { url: "u".into(), reason: "r".into() };
        let first = backoff(1, &cut);
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600), "{first:?}");
        assert!(backoff(4, &cut) >= Duration::from_secs(3));
        assert!(backoff(40, &cut) <= MAX_BACKOFF);
        let busy = Error::Throttled { retry_after: Some(45) };
        assert_eq!(backoff(1, &busy), Duration::from_secs(45));
        assert!(cut.is_transient() && busy.is_transient());
        assert!(!Error::SessionExpired.is_transient());
        assert!(!Error::Server { status: 400, message: String::new() }.is_transient());
    }
}
