//! The plain values that cross to the app: records, their state and conflicts, HTTP requests
//! and answers of the sync session, its progress and report.

use std::collections::HashMap;

/// The three record kinds of `domain.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RecordKind {
    GbvCase,
    TraffickingReturnee,
    NewsItem,
}

impl From<RecordKind> for sync_protocol::RecordKind {
    fn from(k: RecordKind) -> Self {
        match k {
            RecordKind::GbvCase => sync_protocol::RecordKind::GbvCase,
            RecordKind::TraffickingReturnee => sync_protocol::RecordKind::TraffickingReturnee,
            RecordKind::NewsItem => sync_protocol::RecordKind::NewsItem,
        }
    }
}

impl From<sync_protocol::RecordKind> for RecordKind {
    fn from(k: sync_protocol::RecordKind) -> Self {
        match k {
            sync_protocol::RecordKind::GbvCase => RecordKind::GbvCase,
            sync_protocol::RecordKind::TraffickingReturnee => RecordKind::TraffickingReturnee,
            sync_protocol::RecordKind::NewsItem => RecordKind::NewsItem,
        }
    }
}

/// Where a record stands with the server.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncStatus {
    /// Has changes the server does not have yet.
    Pending,
    /// The server has every change of this record.
    Synced,
    /// The server refused its latest changes (the reason is for the officer); a new edit makes
    /// it pending again.
    Rejected { reason: String },
}

impl From<client_sdk::SyncStatus> for SyncStatus {
    fn from(s: client_sdk::SyncStatus) -> Self {
        match s {
            client_sdk::SyncStatus::Pending => SyncStatus::Pending,
            client_sdk::SyncStatus::Synced => SyncStatus::Synced,
            client_sdk::SyncStatus::Rejected { reason } => SyncStatus::Rejected { reason },
        }
    }
}

/// One record as the app shows it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Record {
    pub id: String,
    pub kind: RecordKind,
    /// The record's fields as JSON (`domain.md`'s view, with `id`), for the app's own JSON
    /// library.
    pub json: String,
    pub sync: SyncStatus,
    /// Fields holding values written concurrently on two devices (or by a reviewer), to show
    /// side by side until a reviewer resolves them on the server.
    pub conflicts: Vec<Conflict>,
}

/// A field with competing values.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Conflict {
    /// The dotted path of the field (`victim.birth_year`, `services.0.provider`).
    pub path: String,
    pub values: Vec<ConflictValue>,
}

/// One competing value and who wrote it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ConflictValue {
    /// The value as JSON.
    pub json: String,
    /// The Automerge actor (hex) of the device that wrote it.
    pub device: String,
    /// Written on this phone.
    pub this_device: bool,
    /// Unix seconds of the change, by the writing phone's clock (advisory).
    pub at: i64,
}

/// An HTTP request for the app to make (the app owns its HTTP stack: OkHttp, URLSession).
/// `headers` carry the access token of a sync: send them as they are, log none of them.
#[derive(Clone, uniffi::Record)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest").field("method", &self.method).field("url", &self.url).field("bytes", &self.body.len()).finish_non_exhaustive()
    }
}

/// The answer the app got: the status, the body, and the `Retry-After` header in seconds when
/// there was one.
#[derive(Debug, Clone, uniffi::Record)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after_seconds: Option<u64>,
}

/// What the app does next in a sync it drives ([`crate::Phone::next_step`]).
#[derive(Debug, Clone, uniffi::Enum)]
pub enum SyncStep {
    /// Make this request, then give [`crate::Phone::answer`] the answer, or call
    /// [`crate::Phone::failed`] when there was none (no network, a cut, a timeout).
    Send { request: HttpRequest },
    /// The last exchange failed in a way that may pass: wait this long (backoff with jitter, at
    /// least the server's `Retry-After`) and ask again, or end here and let the scheduler
    /// (WorkManager) run a new sync later: nothing done so far is lost.
    Wait { millis: u64, failures: u32, code: String, reason: String },
    /// Both sides are level.
    Done { report: SyncReport },
}

/// Progress after each exchange.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncProgress {
    pub round: u64,
    pub pushed: u64,
    pub pulled: u64,
    pub rejected: u64,
    /// Records still pending.
    pub pending: u64,
    /// The server has more to send.
    pub more: bool,
    /// Records received in this sync, of `to_receive` when the server said ("1.040 / 1.297").
    pub received: u64,
    pub to_receive: Option<u64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub retries: u64,
}

impl From<&client_core::SyncProgress> for SyncProgress {
    fn from(p: &client_core::SyncProgress) -> Self {
        SyncProgress {
            round: p.round as u64,
            pushed: p.pushed as u64,
            pulled: p.pulled as u64,
            rejected: p.rejected as u64,
            pending: p.pending as u64,
            more: p.more,
            received: p.received,
            to_receive: p.to_receive,
            bytes_up: p.bytes_up,
            bytes_down: p.bytes_down,
            retries: p.retries as u64,
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncReport {
    /// Records whose changes the server accepted.
    pub pushed: u64,
    /// Records changed by what the server sent.
    pub pulled: u64,
    /// Records holding conflicting values after the sync.
    pub conflicts: u64,
    /// Records the server refused.
    pub rejected: u64,
    pub requests: u64,
    pub retries: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl From<client_core::SyncReport> for SyncReport {
    fn from(r: client_core::SyncReport) -> Self {
        SyncReport {
            pushed: r.pushed as u64,
            pulled: r.pulled as u64,
            conflicts: r.conflicts as u64,
            rejected: r.rejected as u64,
            requests: r.requests as u64,
            retries: r.retries as u64,
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
        }
    }
}

/// Told of the progress of a sync the library drives ([`crate::Phone::sync`]).
#[uniffi::export(with_foreign)]
pub trait SyncListener: Send + Sync {
    fn progress(&self, progress: SyncProgress);
}
