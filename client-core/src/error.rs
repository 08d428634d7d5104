//! What the session itself can refuse. The driver's own errors (network, files) are its own;
//! [`LocalStore::Error`](crate::LocalStore::Error) takes these in.

use sync_protocol::RecordId;

/// Errors of the session, each a stable [`CoreError::code`] an app can switch on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A stored record that does not load as an Automerge document.
    #[error("record {id}: {detail}")]
    BadDocument { id: RecordId, detail: String },
    /// An answer that is not a sync message this phone reads.
    #[error("the server sent an unreadable answer: {0}")]
    Protocol(String),
    /// A record whose changes exceed what one upload may carry.
    #[error("record {id} is too large to sync ({bytes} bytes of changes)")]
    TooLarge { id: RecordId, bytes: usize },
    /// The server kept asking for more past [`crate::MAX_ROUNDS`] exchanges.
    #[error("the sync did not settle in {0} rounds; run it again")]
    NoSettle(usize),
}

impl CoreError {
    /// A stable code for apps (`bad_document`, `protocol`, `too_large`, `no_settle`).
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::BadDocument { .. } => "bad_document",
            CoreError::Protocol(_) => "protocol",
            CoreError::TooLarge { .. } => "too_large",
            CoreError::NoSettle(_) => "no_settle",
        }
    }
}
