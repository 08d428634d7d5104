//! # sync-protocol
//!
//! What a phone and the gesync server must agree on, and nothing else:
//! - [`schema`]: the three record kinds of `domain.md` as a table, and the validator that turns
//!   every mistake into a precise, path-qualified error;
//! - [`doc`]: the mapping between a record and its Automerge document, the JSON view, conflicts;
//! - [`wire`]: the versioned binary messages of `POST /api/v1/sync`, and [`checksums`], the
//!   Automerge checksums a page leaves out;
//! - [`record`]: a record's typed view, parsed once, for the figures and review;
//! - [`ErrorCode`]: the stable error codes of the HTTP API's answers.
//!
//! Architecture Invariant: this crate knows nothing of axum, sled, tokio or HTTP. It is pure
//! logic over values, so both sides (and tests) use it without a network or a disk.
#![forbid(unsafe_code)]

pub mod checksums;
pub mod doc;
mod error_code;
pub mod inflate;
pub mod record;
mod ids;
pub mod schema;
pub mod wire;

pub use automerge;
pub use error_code::ErrorCode;
pub use record::Record;
pub use ids::{BadOrgUnitCode, BadRecordId, OrgUnitCode, RecordId, RecordKind};
pub use schema::{Problem, SchemaError};

/// Converts Automerge heads to their wire form.
pub fn heads_to_wire(heads: &[automerge::ChangeHash]) -> Vec<wire::Hash> {
    heads.iter().map(|h| h.0).collect()
}

/// Converts wire heads back to Automerge change hashes.
pub fn heads_from_wire(heads: &[wire::Hash]) -> Vec<automerge::ChangeHash> {
    heads.iter().map(|h| automerge::ChangeHash(*h)).collect()
}
