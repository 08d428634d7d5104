//! The stable error codes of the HTTP API's answers (`{"error": {"code", "message"}}`): one
//! list, used by the server that sends them and by the SDK that acts on them, so that a code
//! renamed on one side fails to compile on the other.

use std::fmt;

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// One error code of the HTTP API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ErrorCode {
            /// Every code, for tables and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                }
            }

            /// The code named `text`; `None` for a code this build does not know (a newer
            /// server's), which callers treat by its HTTP status alone.
            pub fn parse(text: &str) -> Option<ErrorCode> {
                match text {
                    $($text => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// A request the server cannot accept as it is (the message says why).
    BadRequest = "bad_request",
    /// A body that could not be read.
    BadBody = "bad_body",
    BadContentType = "bad_content_type",
    BadJson = "bad_json",
    BadQuery = "bad_query",
    /// A sync message that does not decode (or a version this server does not speak).
    BadSyncMessage = "bad_sync_message",
    /// A sync request compressed against a page context this server does not hold (another
    /// replica kept it, or it was dropped): send it again without (`FRAME_PUSH_CONTEXT`).
    UnknownPageContext = "unknown_page_context",
    /// No valid credentials.
    Unauthorized = "unauthorized",
    /// The access token expired: refresh it.
    TokenExpired = "token_expired",
    InvalidRefreshToken = "invalid_refresh_token",
    /// The session was ended (logout, password or role change): log in again.
    SessionEnded = "session_ended",
    Forbidden = "forbidden",
    /// The account was disabled: the phone wipes its local data.
    AccountDisabled = "account_disabled",
    /// This device was revoked: the phone wipes its local data.
    DeviceRevoked = "device_revoked",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    Conflict = "conflict",
    /// The client went away before the answer.
    Abandoned = "abandoned",
    TooLarge = "too_large",
    /// Too many failed attempts: wait `Retry-After`.
    Throttled = "throttled",
    /// Too many syncs of one account at once: retry shortly.
    TooManySyncs = "too_many_syncs",
    /// The server is saturated: retry after `Retry-After`.
    Busy = "busy",
    /// Unfinished uploads of large records are at their bound (the account's or the server's):
    /// retry after `Retry-After`.
    UploadsFull = "uploads_full",
    /// A login from a new device of an account that has as many devices as it may.
    TooManyDevices = "too_many_devices",
    /// The server cannot reach its database: retry after `Retry-After` (another replica may
    /// answer meanwhile).
    StoreUnavailable = "store_unavailable",
    Internal = "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_is_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(c.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(ErrorCode::parse("from_a_newer_server"), None);
    }
}
