//! gesync's sans-IO sync core.
//!
//! Everything here is a pure function of its arguments: no storage, no locks, no runtime, no
//! network. The server (and, later, a phone's sync session) drives it:
//!
//! - [`org`]: the org tree (current map and record scope) and the access policy.
//! - [`push`]: merges one pushed record onto its stored version and checks it, giving a
//!   [`push::Verdict`].
//! - [`plan`]: turns the accepted records of one request into one [`plan::CommitPlan`]
//!   (documents, metadata, feed moves, counter deltas, conflict-index changes, actor claims,
//!   approval flags, the audit entry) for a store to commit atomically.
//! - [`pull`]: plans one pull page step by step, asking its driver for the metadata and stored
//!   documents it needs ([`pull::PagePlanner`]).
//! - [`exchange`]: one sync exchange around those steps (scope, cursor, what was just pushed,
//!   the answer), so that every server drives the same rules.
//! - [`meta`] and [`conflicts`]: what a store keeps beside each record's document.

pub mod conflicts;
pub mod exchange;
pub mod facts;
pub mod meta;
pub mod org;
pub mod plan;
pub mod pull;
pub mod push;

/// Stored data the core cannot read: a store handed it bytes that do not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Corrupt {}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> Corrupt {
    Corrupt(format!("{what}: {e}"))
}
