//! The one error type of the SDK. Every `Display` text is a single line meant for the officer:
//! it names fields, paths and URLs, never record contents, tokens or passwords.

use std::path::{Path, PathBuf};

use sync_protocol::doc::DocError;
use sync_protocol::{BadRecordId, RecordId, SchemaError};

/// Everything that can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record JSON or an edit does not fit the schema (names the field).
    #[error("{0}")]
    Schema(#[from] SchemaError),
    /// A record document that does not read as a gesync record.
    #[error("record {id}: {detail}")]
    BadDocument { id: RecordId, detail: String },
    #[error(transparent)]
    BadId(#[from] BadRecordId),
    #[error("no record {0} in this store")]
    UnknownRecord(RecordId),
    /// Input that is not JSON (or not the JSON expected), with where it came from.
    #[error("bad JSON in {what}: {detail}")]
    BadJson { what: String, detail: String },
    #[error(
        "not logged in: run `gesync-field login --server URL --username U --password-stdin` first"
    )]
    NotLoggedIn,
    #[error("session expired: run `gesync-field login` again")]
    SessionExpired,
    #[error("login refused: {0}")]
    LoginRefused(String),
    #[error("too many attempts: the server asks to wait{}", retry_after.map(|s| format!(" {s} seconds")).unwrap_or_default())]
    Throttled { retry_after: Option<u64> },
    /// HTTP 503: the server is busy (e.g. a login storm) or restarting.
    #[error("the server is busy: try again{}", retry_after.map(|s| format!(" in {s} seconds")).unwrap_or_default())]
    Busy { retry_after: Option<u64> },
    /// The server revoked this device; the SDK has wiped the local store.
    #[error("this device was revoked by an administrator: the local data was wiped")]
    DeviceRevoked,
    /// The server disabled this account; the SDK has wiped the local store.
    #[error("this account was disabled by an administrator: the local data was wiped")]
    AccountDisabled,
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server refused the request (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("the server sent an unreadable answer: {0}")]
    Protocol(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot decrypt the store: wrong secret (GESYNC_STORE_SECRET) or damaged store")]
    Decrypt,
    #[error("the store at {path} is damaged: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for `Result<T, client_sdk::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable code an app can switch on (the message is for people).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Schema(_) => "schema",
            Error::BadDocument { .. } => "bad_document",
            Error::BadId(_) => "bad_id",
            Error::UnknownRecord(_) => "unknown_record",
            Error::BadJson { .. } => "bad_json",
            Error::NotLoggedIn => "not_logged_in",
            Error::SessionExpired => "session_expired",
            Error::LoginRefused(_) => "login_refused",
            Error::Throttled { .. } => "throttled",
            Error::Busy { .. } => "busy",
            Error::DeviceRevoked => "device_revoked",
            Error::AccountDisabled => "account_disabled",
            Error::Unreachable { .. } => "unreachable",
            Error::Server { .. } => "server",
            Error::Protocol(_) => "protocol",
            Error::Config(_) => "config",
            Error::Decrypt => "decrypt",
            Error::Corrupt { .. } => "corrupt",
            Error::Io { .. } => "io",
        }
    }

    /// Whether the same call may succeed if tried again later: the link dropped or stalled, or
    /// the server is busy or restarting. Everything else (a refusal, a bad record, an ended
    /// session) needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Throttled { .. } | Error::Busy { .. } => true,
            Error::Server { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn doc(id: RecordId) -> impl FnOnce(DocError) -> Error {
        move |e| match e {
            DocError::Schema(s) => Error::Schema(s),
            DocError::Malformed(detail) => Error::BadDocument { id, detail },
        }
    }
}

impl From<client_core::CoreError> for Error {
    fn from(e: client_core::CoreError) -> Self {
        match e {
            client_core::CoreError::BadDocument { id, detail } => Error::BadDocument { id, detail },
            client_core::CoreError::Protocol(m) => Error::Protocol(m),
            e @ (client_core::CoreError::TooLarge { .. } | client_core::CoreError::NoSettle(_)) => Error::Config(e.to_string()),
        }
    }
}
