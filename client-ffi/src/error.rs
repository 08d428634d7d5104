//! The one error type an app sees: a variant per stable code (`GesyncException.DeviceRevoked`
//! in Kotlin, `GesyncError.DeviceRevoked` in Swift), each with a one-line `reason` meant for
//! people. Like the SDK's messages, a reason names fields, paths and URLs, never record
//! contents, tokens or passwords.


/// What can go wrong, by stable code ([`GesyncError::code`]).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum GesyncError {
    /// The record or an edit does not fit the schema. `path` is the field's dotted path;
    /// `problem` one of `missing`, `wrong_type`, `not_in_enum`, `bad_date`, `out_of_range`,
    /// `too_long`, `immutable`, `bad_org_unit`, `unknown_field`, `unknown_kind`, so that an app
    /// words it in its own language.
    #[error("{reason}")]
    Schema { path: String, problem: String, reason: String },
    /// Text that is not JSON, or not the JSON expected.
    #[error("{reason}")]
    BadJson { reason: String },
    /// Not a record id.
    #[error("{reason}")]
    BadId { reason: String },
    #[error("{reason}")]
    UnknownRecord { reason: String },
    /// A stored record that does not read as a gesync record.
    #[error("{reason}")]
    BadDocument { reason: String },
    #[error("{reason}")]
    NotLoggedIn { reason: String },
    /// The session ended (the refresh token is no longer taken): log in again.
    #[error("{reason}")]
    SessionExpired { reason: String },
    /// Wrong user name or password, or an account that may not log in.
    #[error("{reason}")]
    LoginRefused { reason: String },
    /// Too many attempts: wait `retry_after_seconds` when the server said.
    #[error("{reason}")]
    Throttled { retry_after_seconds: Option<u64>, reason: String },
    /// The server is busy or restarting.
    #[error("{reason}")]
    Busy { retry_after_seconds: Option<u64>, reason: String },
    /// An administrator revoked this device: every record and the key were wiped.
    #[error("{reason}")]
    DeviceRevoked { reason: String },
    /// An administrator disabled the account: every record and the key were wiped.
    #[error("{reason}")]
    AccountDisabled { reason: String },
    /// No answer from the server (no network, a cut, a stall).
    #[error("{reason}")]
    Unreachable { reason: String },
    /// Any other refusal by the server, with its HTTP status.
    #[error("{reason}")]
    Server { status: u16, reason: String },
    /// An answer that is not what the API promises.
    #[error("{reason}")]
    Protocol { reason: String },
    /// A setting or the key provider is wrong (a key that is not 32 bytes, a store opened with
    /// another kind of key, a bad server URL).
    #[error("{reason}")]
    Config { reason: String },
    /// The key does not open this store (another key, or damage).
    #[error("{reason}")]
    Decrypt { reason: String },
    #[error("{reason}")]
    Corrupt { reason: String },
    /// A file of the store could not be read or written.
    #[error("{reason}")]
    Io { reason: String },
    /// For the app's own [`crate::KeyProvider`] to throw (no key kept, the keystore locked);
    /// the library reports the store's opening as failed with `Config`, naming the provider.
    #[error("{reason}")]
    Key { reason: String },
    /// A call out of order (an answer with no request in flight, a step with no sync begun).
    #[error("{reason}")]
    Usage { reason: String },
}

#[uniffi::export]
impl GesyncError {
    /// A stable code to switch on (`device_revoked`, `schema`, …): the SDK's codes, plus `key`
    /// and `usage`.
    pub fn code(&self) -> String {
        match self {
            GesyncError::Schema { .. } => "schema",
            GesyncError::BadJson { .. } => "bad_json",
            GesyncError::BadId { .. } => "bad_id",
            GesyncError::UnknownRecord { .. } => "unknown_record",
            GesyncError::BadDocument { .. } => "bad_document",
            GesyncError::NotLoggedIn { .. } => "not_logged_in",
            GesyncError::SessionExpired { .. } => "session_expired",
            GesyncError::LoginRefused { .. } => "login_refused",
            GesyncError::Throttled { .. } => "throttled",
            GesyncError::Busy { .. } => "busy",
            GesyncError::DeviceRevoked { .. } => "device_revoked",
            GesyncError::AccountDisabled { .. } => "account_disabled",
            GesyncError::Unreachable { .. } => "unreachable",
            GesyncError::Server { .. } => "server",
            GesyncError::Protocol { .. } => "protocol",
            GesyncError::Config { .. } => "config",
            GesyncError::Decrypt { .. } => "decrypt",
            GesyncError::Corrupt { .. } => "corrupt",
            GesyncError::Io { .. } => "io",
            GesyncError::Key { .. } => "key",
            GesyncError::Usage { .. } => "usage",
        }
        .to_string()
    }

    /// Whether the same call may succeed later with nothing changed (a link down, a busy
    /// server): a background sync retries these with backoff; the others need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            GesyncError::Unreachable { .. } | GesyncError::Throttled { .. } | GesyncError::Busy { .. } => true,
            GesyncError::Server { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Whether the phone's records and key were wiped (a revoked device, a disabled account):
    /// the app says why and goes back to its login screen.
    pub fn wiped(&self) -> bool {
        matches!(self, GesyncError::DeviceRevoked { .. } | GesyncError::AccountDisabled { .. })
    }
}

impl GesyncError {
    pub(crate) fn usage(reason: impl Into<String>) -> Self {
        GesyncError::Usage { reason: reason.into() }
    }
}

impl From<client_sdk::Error> for GesyncError {
    fn from(e: client_sdk::Error) -> Self {
        use client_sdk::Error as E;
        let reason = e.to_string();
        match e {
            E::Schema(s) => GesyncError::Schema { path: s.path.clone(), problem: s.problem.code().into(), reason },
            E::BadDocument { .. } => GesyncError::BadDocument { reason },
            E::BadId(_) => GesyncError::BadId { reason },
            E::UnknownRecord(_) => GesyncError::UnknownRecord { reason },
            E::BadJson { .. } => GesyncError::BadJson { reason },
            E::NotLoggedIn => GesyncError::NotLoggedIn { reason },
            E::SessionExpired => GesyncError::SessionExpired { reason },
            E::LoginRefused(_) => GesyncError::LoginRefused { reason },
            E::Throttled { retry_after } => GesyncError::Throttled { retry_after_seconds: retry_after, reason },
            E::Busy { retry_after } => GesyncError::Busy { retry_after_seconds: retry_after, reason },
            E::DeviceRevoked => GesyncError::DeviceRevoked { reason },
            E::AccountDisabled => GesyncError::AccountDisabled { reason },
            E::Unreachable { .. } => GesyncError::Unreachable { reason },
            E::Server { status, .. } => GesyncError::Server { status, reason },
            E::Protocol(_) => GesyncError::Protocol { reason },
            E::Config(_) => GesyncError::Config { reason },
            E::Decrypt => GesyncError::Decrypt { reason },
            E::Corrupt { .. } => GesyncError::Corrupt { reason },
            E::Io { .. } => GesyncError::Io { reason },
        }
    }
}

impl From<sync_protocol::doc::DocError> for GesyncError {
    fn from(e: sync_protocol::doc::DocError) -> Self {
        match e {
            sync_protocol::doc::DocError::Schema(s) => client_sdk::Error::Schema(s).into(),
            sync_protocol::doc::DocError::Malformed(m) => GesyncError::BadDocument { reason: m },
        }
    }
}

impl From<client_core::CoreError> for GesyncError {
    fn from(e: client_core::CoreError) -> Self {
        client_sdk::Error::from(e).into()
    }
}

/// A callback into the app that threw something other than a [`GesyncError`].
impl From<uniffi::UnexpectedUniFFICallbackError> for GesyncError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        GesyncError::Key { reason: format!("the app's callback failed: {}", e.reason) }
    }
}

