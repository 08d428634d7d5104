//! One sync, as a series of exchanges (pages), decided without IO (see the crate docs).
//!
//! Each round: push the pending records that fit in the upload page (after a new store epoch,
//! first offer the records the server had acknowledged), ask for whole documents the phone
//! could not apply, send the cursor and the download page size; then apply the verdicts and the
//! pulled changes, make them durable, and only then store the cursor. An interrupted exchange
//! costs at most its own page: a re-pushed change is idempotent on the server, a re-pulled one
//! in Automerge, and a large record coming in slices resumes after the slices kept.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use automerge::{AutoCommit, LoadOptions, OnPartialLoad, VerificationMode};
use sync_protocol::wire::{
    Framing, Hash, PageContext, PartResume, PullPart, PushDoc, PushOutcome, PushPart, SyncRequest, SyncResponse, DEFAULT_PAGE_BYTES,
    FLAG_CHECKSUMS, FLAG_HEADS_FROM_DOC, FLAG_PAGE_CONTEXT, FLAG_RECORDS_DICT, FLAG_SERVER_TIME, FLAG_SLOW_LINK, FLAG_ZSTD, MAX_MESSAGE_BYTES, MAX_UPLOAD_BYTES, MIN_PAGE_BYTES,
};
use sync_protocol::{doc, heads_from_wire, heads_to_wire, ErrorCode, RecordId};

use crate::error::CoreError;
use crate::meta::{load_doc, refresh_meta, sorted, Partial, RecordMeta, Rejection, SyncStatus};
use crate::store::LocalStore;

/// Most rounds one sync makes (at the smallest pages, enough for a province's records).
pub const MAX_ROUNDS: usize = 100_000;
/// Largest push a request carries, leaving room under [`MAX_MESSAGE_BYTES`] for framing.
pub const PUSH_BUDGET: usize = MAX_MESSAGE_BYTES - MAX_MESSAGE_BYTES / 8;
/// Longest rejection reason kept (the server's reason is meant for the officer, one line).
const MAX_REASON: usize = 300;
/// Smallest page either way (the server's own floor): below this, round trips dominate.
const MIN_PAGE: usize = MIN_PAGE_BYTES as usize;
/// The most a page grows from one exchange to the next, after a quick exchange.
const MAX_GROWTH: usize = 8;
/// Below this many wire bytes a second (both ways), the link is slow: 2G gives about 8 KB/s,
/// 3G ten times that.
pub const SLOW_LINK_RATE: f64 = 32.0 * 1024.0;
/// An exchange this quick was on a fast link: the page may grow [`MAX_GROWTH`]-fold. (Tried:
/// eightfold on every link made bench-2g's first sync 13% slower, a cut losing a larger page.)
const QUICK_EXCHANGE: f64 = 1.0;
/// Longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a sync behaves on a poor link.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Keep retrying failed exchanges (link down, cut, stalled, server busy) for this long,
    /// with backoff; zero fails at the first error. Progress is kept either way. (The driver
    /// applies it: it owns the clock and the waiting.)
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
        SyncOptions { retry_for: Duration::ZERO, page_seconds: 6.0, first_pull_page: 64 * 1024, first_push_page: 32 * 1024, compress: true }
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
    /// Records the server refused.
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
    /// known: a phone shows "1.040 / 1.200".
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

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// POST this body to `/api/v1/sync`, then call [`Session::answered`] with the answer's body
    /// or [`Session::failed`].
    Send(Vec<u8>),
    /// Both sides are level.
    Done(SyncReport),
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
}

/// The request in flight: what its answer (or failure) is about.
struct InFlight {
    /// Pushed records (offers included) and their heads; a slice's record with its heads.
    pushed: HashMap<RecordId, Vec<Hash>>,
    /// The server heads each pushed record was pushed against (to try it again on a failure).
    server_heads: HashMap<RecordId, Vec<Hash>>,
    want_full: Vec<RecordId>,
    /// Bytes of changes and on the wire, up.
    up: (usize, usize),
    sent_at: f64,
    /// The request's own tail (when it asked for page contexts), a page context once the
    /// answer says the server kept it.
    tail: Option<PageContext>,
    /// The request was compressed against the push context.
    in_context: bool,
}

/// Page sizes that follow the link. After each exchange the bytes each way and the time taken
/// (less the server's own time, when the server tells it: `FLAG_SERVER_TIME`) give a
/// (pessimistic: round trips included) throughput, and the next page is sized to take
/// about `page_seconds` at that rate, growing at most twofold per exchange, or
/// [`MAX_GROWTH`]-fold after an exchange that took under [`QUICK_EXCHANGE`] (a fast link: a first
/// sync of 1,000 records is then two pages; on 2G a page lost to a cut stays small); a failed exchange
/// halves both pages. When the link keeps dropping, pages are also kept to a quarter of the
/// time it stays up (measured between failures), so that most pages finish before the next
/// cut. Sizes are in bytes of changes (what the server budgets), converted from wire bytes with
/// the compression ratio last seen. Times are seconds on the driver's monotonic clock.
#[derive(Debug, Clone)]
pub struct Pacer {
    pull: usize,
    push: usize,
    page_seconds: f64,
    /// How long the link stays up between failures (smoothed), once one was seen.
    uptime: Option<f64>,
    /// The last failure, or the start of the sync.
    last_failure: f64,
    /// Changes bytes per wire byte, each way.
    ratio_down: f64,
    ratio_up: f64,
    /// Wire bytes per second of the last exchange that carried enough to tell.
    rate: Option<f64>,
}

impl Pacer {
    pub fn new(o: &SyncOptions, now: f64) -> Pacer {
        Pacer {
            pull: o.first_pull_page.clamp(MIN_PAGE, DEFAULT_PAGE_BYTES as usize),
            push: o.first_push_page.clamp(MIN_PAGE, PUSH_BUDGET),
            page_seconds: o.page_seconds.max(0.5),
            uptime: None,
            last_failure: now,
            ratio_down: 1.0,
            ratio_up: 1.0,
            rate: None,
        }
    }

    /// The download page, in bytes of changes.
    pub fn pull(&self) -> usize {
        self.pull
    }

    /// The upload page, in bytes of changes.
    pub fn push(&self) -> usize {
        self.push
    }

    /// Link time one page should take now.
    pub fn seconds(&self) -> f64 {
        match self.uptime {
            Some(up) => self.page_seconds.min(up / 4.0).max(0.5),
            None => self.page_seconds,
        }
    }

    /// Starts from the rate an earlier sync measured (`None`: not measured yet).
    pub fn remembering(mut self, rate: Option<u32>) -> Pacer {
        self.rate = rate.map(f64::from);
        self
    }

    /// Wire bytes a second of the last exchange that carried enough to measure the link.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Whether the link was last measured slower than [`SLOW_LINK_RATE`] (not yet measured:
    /// not slow). Both sides then compress harder: bytes cost more than CPU.
    pub fn slow_link(&self) -> bool {
        self.rate.is_some_and(|r| r < SLOW_LINK_RATE)
    }

    /// One exchange went through: `(changes, wire)` bytes each way, in `secs`.
    pub fn exchanged(&mut self, up: (usize, usize), down: (usize, usize), secs: f64) {
        let secs = secs.max(0.001);
        // Enough bytes to measure the link by, not only its latency.
        if up.1 + down.1 >= 2 * 1024 {
            self.rate = Some((up.1 + down.1) as f64 / secs);
        }
        let growth = if secs < QUICK_EXCHANGE { MAX_GROWTH } else { 2 };
        // Only a direction that carried enough to measure moves its page.
        if down.1 >= 2 * 1024 {
            self.ratio_down = (down.0 as f64 / down.1 as f64).clamp(1.0, 8.0);
            let target = down.1 as f64 / secs * self.seconds() * self.ratio_down;
            self.pull = (target as usize).clamp(MIN_PAGE, (self.pull * growth).min(DEFAULT_PAGE_BYTES as usize));
        }
        if up.1 >= 2 * 1024 {
            self.ratio_up = (up.0 as f64 / up.1 as f64).clamp(1.0, 8.0);
            let target = up.1 as f64 / secs * self.seconds() * self.ratio_up;
            self.push = (target as usize).clamp(MIN_PAGE, (self.push * growth).min(PUSH_BUDGET));
        }
    }

    /// An exchange failed (cut, stalled) at `now`: smaller pages.
    pub fn failed(&mut self, now: f64) {
        self.pull = (self.pull / 2).max(MIN_PAGE);
        self.push = (self.push / 2).max(MIN_PAGE);
        let up = (now - self.last_failure).max(0.0);
        self.uptime = Some(match self.uptime {
            Some(u) => 0.5 * u + 0.5 * up,
            None => up,
        });
        self.last_failure = now;
    }
}

/// The wait before try `failures + 1`: exponential from half a second, times `jitter` (the
/// driver draws it in 0.8..1.2, so that a whole commune's phones do not come back at the same
/// instant); the server's `Retry-After` wins when it says more.
pub fn backoff(failures: u32, retry_after: Option<u64>, jitter: f64) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << failures.saturating_sub(1).min(6));
    let wait = base.mul_f64(jitter.clamp(0.5, 2.0)).min(MAX_BACKOFF);
    match retry_after {
        Some(s) => wait.max(Duration::from_secs(s.min(300))),
        None => wait,
    }
}

/// What a driver does when the server refuses an exchange (or a login or a refresh), from the
/// HTTP status and the API's error code (`sync_protocol::ErrorCode`): decided here, once, for
/// every driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The device was revoked: wipe every record on the phone and say why.
    WipeDeviceRevoked,
    /// The account was disabled: wipe likewise.
    WipeAccountDisabled,
    /// The access token expired or was not taken: refresh it once and try again; if the refresh
    /// is refused too, the session has ended (log in again).
    Refresh,
    /// A transient refusal (busy, throttled, the database away, a timeout): keep everything,
    /// wait [`backoff`] (at least `Retry-After`) and try again.
    RetryLater,
    /// Anything else: stop and show the server's message.
    Fail,
}

impl Refusal {
    pub fn of(status: u16, code: &str) -> Refusal {
        match (status, code) {
            (_, "device_revoked") => Refusal::WipeDeviceRevoked,
            (_, "account_disabled") => Refusal::WipeAccountDisabled,
            (401, _) => Refusal::Refresh,
            (408 | 429 | 500 | 502 | 503 | 504, _) => Refusal::RetryLater,
            _ => Refusal::Fail,
        }
    }

    /// A stable name for drivers in other languages.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::WipeDeviceRevoked => "wipe_device_revoked",
            Refusal::WipeAccountDisabled => "wipe_account_disabled",
            Refusal::Refresh => "refresh",
            Refusal::RetryLater => "retry_later",
            Refusal::Fail => "fail",
        }
    }
}

/// Number of records with changes the server does not have.
pub fn pending_count(records: &std::collections::BTreeMap<RecordId, RecordMeta>) -> usize {
    records.values().filter(|m| m.status() == SyncStatus::Pending).count()
}

/// One sync of one phone (see the module documentation).
pub struct Session {
    framing: Framing,
    compress: bool,
    pacer: Pacer,
    round: Round,
    report: SyncReport,
    more: bool,
    /// Exchanges answered.
    n: usize,
    in_flight: Option<InFlight>,
    /// A server refused a request made with the records dictionary: the rest of this sync
    /// goes without it ([`Session::unread_dictionary`]).
    without_dict: bool,
    /// The tail of the last answer, which the server kept to compress the next one against
    /// (`FLAG_PAGE_CONTEXT`, on a slow link): named in the next request. In memory only; a
    /// server that no longer holds it answers cold.
    page_context: Option<PageContext>,
    /// The tail of the last request that the server kept (`FRAME_PUSH_CONTEXT`): the next
    /// request with pushes is compressed against it, until a server refuses one for not
    /// holding it (`pushes_in_context` false for the rest of the sync).
    push_context: Option<PageContext>,
    pushes_in_context: bool,
}

impl Session {
    /// A new sync over `store`, at `now` (seconds on the driver's monotonic clock). A large
    /// record whose slices an earlier sync kept resumes where it stopped.
    pub fn new<S: LocalStore>(store: &S, options: &SyncOptions, now: f64) -> Result<Session, S::Error> {
        Ok(Session {
            framing: match (options.compress, store.sync_state().records_dict) {
                (true, true) => Framing { checksums: store.sync_state().checksums, ..Framing::ZSTD_DICT },
                (true, false) => Framing { checksums: store.sync_state().checksums, ..Framing::ZSTD },
                (false, _) => Framing::PLAIN,
            },
            compress: options.compress,
            pacer: Pacer::new(options, now).remembering(store.sync_state().link_rate),
            round: Round { partial: store.partial()?, ..Round::default() },
            report: SyncReport::default(),
            more: false,
            n: 0,
            in_flight: None,
            without_dict: false,
            page_context: None,
            push_context: None,
            pushes_in_context: true,
        })
    }

    /// The page sizes as they stand.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// The next request, or the end of the sync.
    pub fn next<S: LocalStore>(&mut self, store: &S, now: f64) -> Result<Step, S::Error> {
        debug_assert!(self.in_flight.is_none(), "one request at a time");
        let (push, push_part) = self.build_push(store)?;
        let want_full: Vec<RecordId> = std::mem::take(&mut self.round.want_full).into_iter().collect();
        if self.n > 0 && push.is_empty() && push_part.is_none() && want_full.is_empty() && !self.more {
            let mut report = self.report.clone();
            report.conflicts = store.records().values().filter(|m| m.conflicts > 0).count();
            return Ok(Step::Done(report));
        }
        if self.n == MAX_ROUNDS {
            return Err(CoreError::NoSettle(MAX_ROUNDS).into());
        }
        self.round.asked_full.extend(want_full.iter().copied());
        let server_heads: HashMap<RecordId, Vec<Hash>> = push
            .iter()
            .map(|p| p.id)
            .chain(push_part.iter().map(|p| p.id))
            .filter_map(|id| Some((id, store.records().get(&id)?.server_heads.clone())))
            .collect();
        let push_bytes = push.iter().map(|p| p.changes.len()).sum::<usize>() + push_part.as_ref().map_or(0, |p| p.bytes.len());
        // A record sent whole without its heads (`build_push`) is, once accepted, at its own
        // heads on the server.
        let mut pushed: HashMap<RecordId, Vec<Hash>> = push
            .iter()
            .map(|p| match store.records().get(&p.id) {
                Some(meta) if p.heads.is_empty() && !p.changes.is_empty() => (p.id, meta.heads.clone()),
                _ => (p.id, p.heads.clone()),
            })
            .collect();
        // A slice's verdict comes with the last slice; earlier answers say how much is held.
        if let Some(p) = &push_part {
            pushed.insert(p.id, p.heads.clone());
        }
        let request = SyncRequest {
            cursor: store.sync_state().cursor.clone(),
            push,
            want_full: want_full.clone(),
            page_bytes: self.pacer.pull as u32,
            accept: FLAG_HEADS_FROM_DOC
                | FLAG_SERVER_TIME
                | if !self.compress {
                    0
                } else if self.pacer.slow_link() {
                    FLAG_ZSTD | FLAG_RECORDS_DICT | FLAG_CHECKSUMS | FLAG_SLOW_LINK | FLAG_PAGE_CONTEXT
                } else {
                    // The checksums left out save 4 bytes a record for SHA-256 work on both
                    // sides: worth it on a slow link only.
                    FLAG_ZSTD | FLAG_RECORDS_DICT
                },
            count: self.round.to_receive.is_none(),
            resume: self.round.partial.as_ref().map(|p| PartResume { id: p.id, seq: p.seq, offset: p.bytes.len() as u64 }),
            push_part,
            actor: store.actor().to_bytes().to_vec(),
        };
        // The page context held is named with the records dictionary only (the server compresses
        // against it only then).
        let context = self.page_context.as_ref().filter(|_| self.framing.dict).map(|c| c.id);
        // Pushes go against the last request's pushes, when the server kept them.
        let pushes = !request.push.is_empty() || request.push_part.is_some();
        let against = self.push_context.as_ref().filter(|_| pushes && self.pushes_in_context && self.framing.dict);
        let (body, tail) = request.encode_paged(Framing { context, ..self.framing }, against);
        self.report.requests += 1;
        self.report.bytes_up += body.len() as u64;
        let (up, in_context) = ((push_bytes, body.len()), against.is_some());
        self.in_flight = Some(InFlight { pushed, server_heads, want_full, up, sent_at: now, tail, in_context });
        Ok(Step::Send(body))
    }

    /// The exchange in flight failed before its answer could be applied (the link dropped or
    /// stalled, the server was busy): what it carried goes again, in smaller pages. The driver
    /// decides whether to try again, and waits [`backoff`] first.
    pub fn failed(&mut self, now: f64) {
        if self.again() {
            self.pacer.failed(now);
        }
    }

    /// What the exchange in flight carried goes in the next request (false: none in flight).
    fn again(&mut self) -> bool {
        let Some(f) = self.in_flight.take() else { return false };
        self.report.retries += 1;
        for (id, heads) in &f.pushed {
            let server = f.server_heads.get(id).cloned().unwrap_or_default();
            self.round.tried.remove(&(*id, heads.clone(), server));
        }
        for id in f.want_full {
            self.round.asked_full.remove(&id);
            self.round.want_full.insert(id);
        }
        // Offers stay in the store's list until answered: the next request carries them again.
        self.round.offered.clear();
        true
    }

    /// Whether the server's refusal of the exchange in flight is of the records dictionary (or
    /// of pushes with their checksums left out, which servers that read it say alike): the
    /// request was made with it and the server could not read it (400 `bad_sync_message`), as
    /// a replica of a build before it answers when a newer one behind the same load balancer
    /// told the phone it has it. Then what it carried goes again, in pages of the same size
    /// (the link did not fail), and the rest of this sync goes without either: the driver
    /// sends the next request at once, without calling [`Session::failed`]. Once a sync; any
    /// other refusal is the driver's, by [`Refusal`]. Likewise a request compressed against
    /// a push context that the server answering does not hold (400 `unknown_page_context`: its
    /// replica did not keep it): it goes again at once without, as do the rest of this sync's.
    pub fn unread_dictionary(&mut self, status: u16, code: &str) -> bool {
        // A request made against a push context this server does not hold (another replica kept
        // it): it goes again at once without, and so does the rest of this sync.
        if status == 400 && code == ErrorCode::UnknownPageContext.as_str() && self.in_flight.as_ref().is_some_and(|f| f.in_context) && self.again() {
            self.pushes_in_context = false;
            self.push_context = None;
            return true;
        }
        // Once a sync: after it, `framing.dict` and `framing.checksums` stay false (`answered`).
        let newer = self.framing.dict || self.framing.checksums;
        let unread = status == 400 && code == ErrorCode::BadSyncMessage.as_str() && newer && self.again();
        if unread {
            self.without_dict = true;
            self.framing.dict = false;
            self.framing.checksums = false;
            self.page_context = None;
        }
        unread
    }

    /// Applies the answer to the exchange in flight and stores it: records first, then (after
    /// [`LocalStore::barrier`]) the cursor.
    pub fn answered<S: LocalStore>(&mut self, store: &mut S, body: &[u8], now: f64) -> Result<SyncProgress, S::Error> {
        let f = self.in_flight.take().ok_or_else(|| CoreError::Protocol("an answer with no request in flight".into()))?;
        let (response, framing, kept) = SyncResponse::decode_paged(body, self.page_context.as_ref()).map_err(|e| CoreError::Protocol(e.to_string()))?;
        // The next request names the context this answer left, if the server kept one, and
        // pushes against its own tail, if the server kept that.
        self.page_context = kept;
        if let (Some(id), Some(tail)) = (framing.push_context, f.tail) {
            self.push_context = Some(tail.kept_as(id));
        }
        // Each answer says whether the server has the records dictionary: the next requests use
        // it, and the next sync's first too (`SyncState::records_dict`).
        self.framing.dict = self.compress && !self.without_dict && framing.dict;
        self.framing.checksums = self.compress && !self.without_dict && framing.checksums;
        self.n += 1;
        self.report.bytes_down += body.len() as u64;
        let down_bytes = response.pull.iter().map(|p| p.changes.len()).sum::<usize>() + response.part.as_ref().map_or(0, |p| p.bytes.len());
        // The link's time: the exchange's, less the server's own (a busy server is not 2G).
        let server = framing.server_ms.map_or(0.0, |ms| f64::from(ms) / 1000.0);
        self.pacer.exchanged(f.up, (down_bytes, body.len()), (now - f.sent_at - server).max(0.0));
        self.more = response.more;
        if let Some(up) = response.uploaded {
            self.round.upload = Some((up.id, up.have));
        }
        self.apply(store, &f.pushed, response)?;
        Ok(self.progress(store, None))
    }

    /// Progress as it stands (`retrying`: while the driver waits to try again, why and for how
    /// long).
    pub fn progress<S: LocalStore>(&self, store: &S, retrying: Option<(String, Duration)>) -> SyncProgress {
        SyncProgress {
            round: self.n,
            pushed: self.report.pushed,
            pulled: self.report.pulled,
            rejected: self.report.rejected,
            pending: pending_count(store.records()),
            more: self.more,
            received: self.round.received,
            to_receive: self.round.to_receive,
            bytes_up: self.report.bytes_up,
            bytes_down: self.report.bytes_down,
            part: self.round.partial.as_ref().map(|p| (p.bytes.len() as u64, p.total)),
            to_offer: store.sync_state().reoffer.len(),
            retries: self.report.retries,
            retrying,
        }
    }

    /// The pending records not yet pushed at their current heads in this sync, as many as fit in
    /// the upload page. A record never pushed, or whose whole document the server asked for,
    /// goes whole (as stored); the others as the changes after the server's heads. A record
    /// larger than the page on its own goes up in slices of the page's size ([`PushPart`]),
    /// resumed where the server's copy ends, and counts as pushed with its last slice. After a
    /// new epoch, offers go first.
    fn build_push<S: LocalStore>(&mut self, store: &S) -> Result<(Vec<PushDoc>, Option<PushPart>), S::Error> {
        let budget = self.pacer.push;
        let slow = self.compress && self.pacer.slow_link();
        let round = &mut self.round;
        let mut push = Vec::new();
        let mut size = 64;
        // "Do you hold these heads?", a few dozen bytes each. A pending record needs none: its
        // own push settles it (a server lacking its base asks for it whole).
        round.offered.clear();
        for id in &store.sync_state().reoffer {
            let Some(meta) = store.records().get(id) else { continue };
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
        let candidates: Vec<(RecordId, RecordMeta)> = store
            .records()
            .iter()
            .filter(|(id, m)| m.status() == SyncStatus::Pending && !round.tried.contains(&(**id, m.heads.clone(), m.server_heads.clone())))
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        for (id, meta) in candidates {
            // A record the server has nothing of goes as stored (a whole document), unloaded;
            // on a slow link, as its changes if they weigh less (they compress smaller together,
            // see `sync_core::pull::PageSpec::slow_link`). Only a record that fits the page
            // whole: one going up in slices keeps the stored bytes, which its resumes count in.
            let changes = if meta.server_heads.is_empty() {
                let stored = store.doc_bytes(id)?;
                if slow && stored.len() + 32 * meta.heads.len() + 64 <= budget.min(PUSH_BUDGET) {
                    doc::changes_if_lighter(&mut load_doc(id, &stored, store.actor())?, stored.len()).unwrap_or(stored)
                } else {
                    stored
                }
            } else {
                let mut d = load_doc(id, &store.doc_bytes(id)?, store.actor())?;
                d.save_after(&heads_from_wire(&meta.server_heads))
            };
            // On a slow link a record the server has nothing of goes without its heads, 32 bytes
            // a head that no compressor squeezes: the server takes them from what it stored
            // (`sync_core::exchange::Exchange::accepted`). The phone still keeps them as the
            // server's on an acceptance; the server holds every change it was sent.
            let heads = if slow && meta.server_heads.is_empty() { Vec::new() } else { meta.heads.clone() };
            let cost = changes.len() + 32 * heads.len() + 64;
            if changes.len() as u64 > MAX_UPLOAD_BYTES {
                return Err(CoreError::TooLarge { id, bytes: changes.len() }.into());
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
            round.tried.insert((id, meta.heads.clone(), meta.server_heads.clone()));
            push.push(PushDoc { id, changes, heads });
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
        PushPart { id, offset: offset as u64, total: changes.len() as u64, bytes: changes[offset..end].to_vec(), heads: meta.heads }
    }

    /// Applies one answer and persists it: records first, the cursor last.
    fn apply<S: LocalStore>(&mut self, store: &mut S, pushed: &HashMap<RecordId, Vec<Hash>>, response: SyncResponse) -> Result<(), S::Error> {
        // A new epoch: the server may have forgotten what it acknowledged (a restored backup, a
        // failover). Every record it was known to hold is offered again; the server's cursor
        // for this phone already starts from the beginning, so the scope comes again too.
        let mut state = store.sync_state().clone();
        if response.epoch != 0 && state.epoch != Some(response.epoch) {
            if state.epoch.is_some() {
                state.reoffer = store.records().keys().copied().collect();
                // Slices kept or sent are positions in the old history.
                self.round.partial = None;
                self.round.upload = None;
                store.clear_partial()?;
            }
            state.epoch = Some(response.epoch);
        }
        let offered = std::mem::take(&mut self.round.offered);
        for result in response.results {
            let Some(heads) = pushed.get(&result.id).cloned() else { continue };
            if !store.records().contains_key(&result.id) {
                continue;
            }
            if offered.contains(&result.id) {
                // An offer: the server holds these heads, or it asks for the whole record.
                state.reoffer.remove(&result.id);
                if result.outcome == PushOutcome::NeedFull {
                    store.update_meta(result.id, &mut |m| {
                        m.server_heads.clear();
                        m.rejected = None;
                    })?;
                }
                continue;
            }
            match result.outcome {
                PushOutcome::Accepted => {
                    self.report.pushed += 1;
                    let mut heads = Some(heads);
                    store.update_meta(result.id, &mut |m| {
                        m.server_heads = heads.take().unwrap_or_default();
                        m.rejected = None;
                    })?;
                }
                PushOutcome::Rejected { reason } => {
                    self.report.rejected += 1;
                    let reason: String = reason.replace(['\n', '\r'], " ").chars().take(MAX_REASON).collect();
                    let mut rejection = Some(Rejection { reason, heads });
                    store.update_meta(result.id, &mut |m| m.rejected = rejection.take())?;
                }
                PushOutcome::NeedFull => store.update_meta(result.id, &mut |m| m.server_heads.clear())?,
            }
        }
        self.round.received += response.pull.len() as u64;
        let pulled_any = !response.pull.is_empty();
        for pulled in response.pull {
            // The server holds what it sends: nothing to offer of it.
            state.reoffer.remove(&pulled.id);
            if self.apply_pull(store, pulled.id, &pulled.changes, &pulled.heads)? {
                self.report.pulled += 1;
            }
        }
        match response.part {
            Some(part) => self.report.pulled += usize::from(self.apply_part(store, part)?),
            // The server went on without the record being sliced (it changed, and is now sent
            // whole or later at a new position): the slices kept are of no use.
            None if self.round.partial.is_some() && (pulled_any || !response.more) => {
                self.round.partial = None;
                store.clear_partial()?;
            }
            None => {}
        }
        if let Some(remaining) = response.remaining {
            self.round.to_receive = Some(self.round.received + remaining);
        }
        if let Some(scope) = response.scope {
            // Only a scope that changed can leave records this phone may no longer hold.
            if state.scope.as_ref().is_some_and(|old| *old != scope) {
                Self::drop_out_of_scope(store, &scope)?;
            }
            state.scope = Some(scope);
        }
        // Only a record the server was known to hold, with nothing pending, needs an offer.
        state.reoffer.retain(|id| store.records().get(id).is_some_and(|m| !m.server_heads.is_empty() && m.status() != SyncStatus::Pending));
        if let Some(rate) = self.pacer.rate() {
            state.link_rate = Some(rate.min(f64::from(u32::MAX)) as u32);
        }
        state.records_dict = self.framing.dict;
        state.checksums = self.framing.checksums;
        // Pulled records and verdicts reach the disk before the cursor moves past them.
        store.barrier()?;
        state.cursor = response.cursor;
        store.set_sync_state(state)
    }

    /// Removes the records of communes this phone's user may no longer see (the user moved to
    /// another commune). Only records the server holds as they are here go: one with changes
    /// the server does not have, or that it refused, stays, so the officer sees the reason
    /// rather than losing the work silently.
    fn drop_out_of_scope<S: LocalStore>(store: &mut S, scope: &[String]) -> Result<(), S::Error> {
        let ids: Vec<RecordId> = store.records().iter().filter(|(_, m)| m.status() == SyncStatus::Synced).map(|(id, _)| *id).collect();
        for id in ids {
            let d = load_doc(id, &store.doc_bytes(id)?, store.actor())?;
            let communes = doc::all_root_strings(&d, "commune").map_err(|e| CoreError::BadDocument { id, detail: e.to_string() })?;
            if !communes.iter().any(|c| scope.contains(c)) {
                store.remove_record(id)?;
            }
        }
        Ok(())
    }

    /// Adds one slice of a large record to those kept; with the last one, applies the whole
    /// document like a pulled record. Returns whether the local document changed.
    fn apply_part<S: LocalStore>(&mut self, store: &mut S, part: PullPart) -> Result<bool, S::Error> {
        let PullPart { id, seq, offset, total, bytes, heads } = part;
        let mut partial = match self.round.partial.take() {
            Some(p) if p.id == id && p.seq == seq && p.bytes.len() as u64 == offset => p,
            // A new record, or the server started over (the record changed meanwhile).
            _ if offset == 0 => Partial { id, seq, total, heads, bytes: Vec::new() },
            _ => {
                // Slices that do not follow what is kept: keep nothing, ask again from zero.
                store.clear_partial()?;
                return Ok(false);
            }
        };
        partial.bytes.extend_from_slice(&bytes);
        if (partial.bytes.len() as u64) < partial.total {
            store.put_partial(&partial)?;
            self.round.partial = Some(partial);
            return Ok(false);
        }
        self.round.received += 1;
        let changed = self.apply_pull(store, id, &partial.bytes, &partial.heads)?;
        // The record is written (made durable) before the slices are forgotten.
        store.barrier()?;
        store.clear_partial()?;
        Ok(changed)
    }

    /// Applies one pulled record; returns whether the local document changed. A record whose
    /// changes cannot be applied (missing history) is left as it was and asked for whole.
    fn apply_pull<S: LocalStore>(&mut self, store: &mut S, id: RecordId, changes: &[u8], heads: &[Hash]) -> Result<bool, S::Error> {
        let known = store.records().get(&id).cloned();
        let (mut d, before) = match &known {
            Some(_) => {
                let mut d = load_doc(id, &store.doc_bytes(id)?, store.actor())?;
                let before = d.get_heads();
                if d.load_incremental(changes).is_err() {
                    self.round.ask_full(id);
                    return Ok(false);
                }
                (d, before)
            }
            // A record new to this phone: loaded from the bytes with the options
            // `load_incremental` gives an empty document (what cannot be applied is left out,
            // then caught by the check below), without making the empty document first.
            None => match AutoCommit::load_with_options(changes, LoadOptions::new().on_partial_load(OnPartialLoad::Ignore).verification_mode(VerificationMode::Check)) {
                Ok(d) => (d.with_actor(store.actor().clone()), Vec::new()),
                Err(_) => {
                    self.round.ask_full(id);
                    return Ok(false);
                }
            },
        };
        if !d.get_missing_deps(&heads_from_wire(heads)).is_empty() {
            self.round.ask_full(id);
            return Ok(false);
        }
        let is_new = known.is_none();
        let was_pending = known.as_ref().is_some_and(|m| m.status() == SyncStatus::Pending);
        // Sent whole without its heads (FLAG_HEADS_FROM_DOC): the server's heads are those of
        // the bytes alone (the document itself, for a record new to this phone).
        let derived;
        let heads = if !heads.is_empty() {
            heads
        } else if is_new {
            derived = heads_to_wire(&d.get_heads());
            &derived
        } else {
            match AutoCommit::load(changes) {
                Ok(mut alone) => {
                    derived = heads_to_wire(&alone.get_heads());
                    &derived
                }
                Err(_) => {
                    self.round.ask_full(id);
                    return Ok(false);
                }
            }
        };
        let meta = match known {
            Some(m) => m,
            None => match doc::kind_of(&d) {
                Ok(kind) => RecordMeta { kind, heads: vec![], server_heads: vec![], rejected: None, conflicts: 0 },
                // Not a record this phone understands: keep nothing rather than a broken file.
                Err(_) => return Ok(false),
            },
        };
        let changed = d.get_heads() != before;
        let server_heads = sorted(heads.to_vec());
        if !changed && meta.server_heads == server_heads && !meta.heads.is_empty() {
            return Ok(false);
        }
        let mut meta = RecordMeta { server_heads, ..meta };
        refresh_meta(&mut meta, &mut d).map_err(|e| CoreError::BadDocument { id, detail: e.to_string() })?;
        if was_pending && meta.status() != SyncStatus::Pending {
            // The server already held every change the phone had not seen acknowledged: a push
            // whose answer was lost (the server sends such a record back when it cannot tell
            // what the phone holds). It was pushed, and counts so.
            self.report.pushed += 1;
        }
        // Bytes that already hold the document's entire history (a record new to this phone,
        // loaded from them alone) are stored as they are instead of saving the document again.
        if is_new {
            store.put_pulled(id, meta, changes)?;
        } else {
            store.put_pulled(id, meta, &doc::save_record(&mut d))?;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_link_and_shrink_after_a_cut() {
        let mut p = Pacer::new(&SyncOptions::default(), 0.0);
        let first = p.pull;
        // 8 KB/s down, 2x compression: a 6 s page is ~96 KB of changes, reached in steps of 2x.
        for _ in 0..6 {
            let wire = p.pull / 2;
            p.exchanged((0, 100), (p.pull, wire), wire as f64 / 8000.0);
        }
        assert!((90_000..=100_000).contains(&p.pull), "pull page {} (first {first})", p.pull);
        p.failed(40.0);
        assert!((45_000..=50_000).contains(&p.pull), "{}", p.pull);
        assert_eq!(p.seconds(), 6.0, "a link up for 40 s keeps 6 s pages");
        // A link that then drops every 4 s: pages of a few seconds, then about 1 s.
        p.failed(44.0);
        assert_eq!(p.seconds(), 5.5);
        for i in 2..8 {
            p.failed(40.0 + 4.0 * i as f64);
        }
        assert!(p.seconds() < 1.2, "{}", p.seconds());
        // A fast link grows the page up to the protocol's default, not past it: 64 KiB, then
        // 512 KiB (a first sync of 1,000 records fits in those two), then 3 MiB.
        let mut p = Pacer::new(&SyncOptions::default(), 0.0);
        p.exchanged((0, 100), (p.pull, p.pull / 4), 0.01);
        assert_eq!(p.pull, 512 * 1024, "one fast page lets the next grow eightfold");
        for _ in 0..20 {
            p.exchanged((0, 100), (p.pull, p.pull), 0.005);
        }
        assert_eq!(p.pull, DEFAULT_PAGE_BYTES as usize);
        // Uploads likewise, on their own rate.
        let mut p = Pacer::new(&SyncOptions::default(), 0.0);
        for _ in 0..6 {
            let wire = p.push;
            p.exchanged((p.push, wire), (0, 60), wire as f64 / 4000.0);
        }
        assert!((22_000..=24_500).contains(&p.push), "push page {}", p.push);
    }

    #[test]
    fn a_slow_link_is_told_from_its_measured_rate_not_from_latency() {
        let mut p = Pacer::new(&SyncOptions::default(), 0.0);
        assert!(!p.slow_link(), "not measured yet: not slow");
        // A no-op exchange that took 2 s says nothing of the link's speed.
        p.exchanged((300, 300), (200, 200), 2.0);
        assert!(!p.slow_link());
        // 2G: 48 KB in 6 s.
        p.exchanged((0, 100), (200_000, 48_000), 6.0);
        assert!(p.slow_link());
        // The phone moved to 3G: 400 KB in 2 s.
        p.exchanged((0, 100), (1_000_000, 400_000), 2.0);
        assert!(!p.slow_link());
    }

    #[test]
    fn refusals_are_told_apart_once_for_every_driver() {
        assert_eq!(Refusal::of(403, "device_revoked"), Refusal::WipeDeviceRevoked);
        assert_eq!(Refusal::of(403, "account_disabled"), Refusal::WipeAccountDisabled);
        assert_eq!(Refusal::of(401, "token_expired"), Refusal::Refresh);
        assert_eq!(Refusal::of(503, "uploads_full"), Refusal::RetryLater);
        assert_eq!(Refusal::of(429, "throttled"), Refusal::RetryLater);
        assert_eq!(Refusal::of(400, "bad_sync_message"), Refusal::Fail);
        assert_eq!(Refusal::of(403, "forbidden"), Refusal::Fail);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let first = backoff(1, None, 1.0);
        assert_eq!(first, Duration::from_millis(500));
        assert_eq!(backoff(1, None, 0.8), Duration::from_millis(400));
        assert!(backoff(4, None, 1.0) >= Duration::from_secs(3));
        assert!(backoff(40, None, 1.2) <= MAX_BACKOFF);
        assert_eq!(backoff(1, Some(45), 1.0), Duration::from_secs(45));
        assert_eq!(backoff(1, Some(100_000), 1.0), Duration::from_secs(300), "a Retry-After is capped");
    }
}
