//! The versioned wire messages of `POST /api/v1/sync`.
//!
//! A sync is one request: the phone pushes the Automerge changes the server does not have yet
//! (`save_after(heads the server is known to have)`) and names its feed cursor; the server answers
//! with a verdict per pushed record and the changes of records in the phone's scope that moved
//! after that cursor. A no-op sync is therefore a few dozen bytes, whatever the phone holds.
//!
//! Frame: the 4 bytes `GSYN`, one version byte ([`PROTOCOL_VERSION`]), then the message in
//! postcard encoding. **Do not rename, reorder or remove fields or enum variants of the types in
//! this module**: postcard is positional, so that would silently break deployed phones. Add a
//! new protocol version instead.

use serde::{Deserialize, Serialize};

use crate::ids::RecordId;

/// The version byte both sides write and check.
pub const PROTOCOL_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"GSYN";

/// Largest sync body either side accepts (a page): pushes and pulls are split to fit.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The MIME type of sync bodies.
pub const CONTENT_TYPE: &str = "application/x-gesync";

/// An Automerge change hash (SHA-256).
pub type Hash = [u8; 32];

/// Phone → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncRequest {
    /// The cursor the server returned last time (empty on first sync). Opaque to the phone.
    pub cursor: Vec<u8>,
    /// Records with changes the server may not have.
    pub push: Vec<PushDoc>,
    /// Records the phone cannot apply incrementally (missing dependencies): send them whole.
    pub want_full: Vec<RecordId>,
}

/// One record's outgoing changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDoc {
    pub id: RecordId,
    /// `save_after(heads the server is known to have)`: Automerge changes in storage format.
    pub changes: Vec<u8>,
    /// The phone's heads for this record once these changes are applied.
    pub heads: Vec<Hash>,
}

/// Server → phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncResponse {
    /// One verdict per pushed record, in push order.
    pub results: Vec<PushResult>,
    /// Changes of records in scope that moved after the request's cursor.
    pub pull: Vec<PullDoc>,
    /// The cursor to send next time.
    pub cursor: Vec<u8>,
    /// True when the pull was cut to fit a page: sync again at once.
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    pub id: RecordId,
    pub outcome: PushOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushOutcome {
    /// Stored durably (sled flushed) before this answer was sent.
    Accepted,
    /// Refused, with a reason meant for the officer (e.g. "field `victim.sex`: ...").
    Rejected { reason: String },
    /// The pushed changes depend on history the server does not have (the phone's idea of the
    /// server's heads was wrong): push the whole document (`save()`) next time. Nothing stored.
    NeedFull,
}

/// One record's incoming changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullDoc {
    pub id: RecordId,
    /// Automerge changes the phone is not known to have.
    pub changes: Vec<u8>,
    /// The server's heads for the record: the phone records that the server has them.
    pub heads: Vec<Hash>,
}

/// Why a body is not a valid sync message. The `Display` text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty body: expected a gesync sync message")]
    Empty,
    #[error("body is {0} bytes, more than the {MAX_MESSAGE_BYTES}-byte limit of one sync page")]
    TooLarge(usize),
    #[error("not a gesync sync message (bad magic bytes)")]
    BadMagic,
    #[error("unsupported sync protocol version {found}; this side speaks version {PROTOCOL_VERSION}")]
    Version { found: u8 },
    #[error("malformed or truncated sync message: {0}")]
    Malformed(String),
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(PROTOCOL_VERSION);
    // Serialising plain structs of Vec<u8>/arrays into a Vec cannot fail.
    postcard::to_extend(msg, out).expect("postcard encoding into a Vec is infallible")
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    if bytes.len() < 5 || &bytes[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if bytes[4] != PROTOCOL_VERSION {
        return Err(WireError::Version { found: bytes[4] });
    }
    let (msg, rest) =
        postcard::take_from_bytes(&bytes[5..]).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(msg)
}

impl SyncRequest {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode(bytes)
    }
}

impl SyncResponse {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SyncRequest {
        SyncRequest {
            cursor: vec![1, 2, 3],
            push: vec![PushDoc { id: RecordId([7; 16]), changes: vec![9; 40], heads: vec![[5; 32]] }],
            want_full: vec![RecordId([8; 16])],
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(SyncRequest::decode(&r.encode()).unwrap(), r);
        let resp = SyncResponse {
            results: vec![PushResult { id: RecordId([1; 16]), outcome: PushOutcome::Rejected { reason: "x".into() } }],
            pull: vec![],
            cursor: vec![],
            more: true,
        };
        assert_eq!(SyncResponse::decode(&resp.encode()).unwrap(), resp);
    }

    #[test]
    fn a_noop_request_is_tiny() {
        let r = SyncRequest { cursor: vec![0; 16], ..Default::default() };
        assert!(r.encode().len() < 32, "{}", r.encode().len());
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert_eq!(SyncRequest::decode(b""), Err(WireError::Empty));
        assert_eq!(SyncRequest::decode(b"hello world"), Err(WireError::BadMagic));
        let mut v = sample().encode();
        v[4] = 9;
        assert_eq!(SyncRequest::decode(&v), Err(WireError::Version { found: 9 }));
        let full = sample().encode();
        for cut in 5..full.len() {
            assert!(matches!(SyncRequest::decode(&full[..cut]), Err(WireError::Malformed(_))), "cut at {cut}");
        }
        let mut extra = sample().encode();
        extra.push(0);
        assert!(matches!(SyncRequest::decode(&extra), Err(WireError::Malformed(_))));
        let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(SyncRequest::decode(&huge), Err(WireError::TooLarge(MAX_MESSAGE_BYTES + 1)));
    }
}
