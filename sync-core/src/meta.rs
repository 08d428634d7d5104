//! What a store keeps beside each record's document.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sync_protocol::automerge::ChangeHash;
use sync_protocol::wire::Hash;
use sync_protocol::{heads_from_wire, RecordKind};

/// How many `(seq, heads)` points of a record's history a store remembers, to send a phone
/// only the changes after the point its cursor says it has.
pub const HISTORY: usize = 8;

/// What the server keeps beside each record's document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub kind: RecordKind,
    pub commune: String,
    /// Feed sequence number of the latest change.
    pub seq: u64,
    pub deleted: bool,
    /// The record's date field (`detected_on`, ...), for listing by period.
    pub date: Option<String>,
    /// Recent `(seq, heads)` points, oldest first.
    pub history: VecDeque<(u64, Vec<Hash>)>,
    pub updated_at: i64,
    /// The record's current contribution to the figures (old one out, new one in).
    pub contribution: Option<indicators::Contribution>,
    /// (sex, birth year) of the person recorded, for flagging possible duplicates.
    #[serde(default)]
    pub dup: Option<(String, i64)>,
    /// Number of fields holding concurrent values.
    #[serde(default)]
    pub conflicts: u32,
}

impl RecordMeta {
    /// Heads as of feed sequence `seq` (the latest point at or before it).
    pub fn heads_at(&self, seq: u64) -> Option<Vec<ChangeHash>> {
        self.history.iter().rev().find(|(s, _)| *s <= seq).map(|(_, h)| heads_from_wire(h))
    }

    /// Gives the record the feed sequence number its store assigned at commit: its `seq` and
    /// that of its latest history point (planned with 0).
    pub fn stamp(&mut self, seq: u64) {
        self.seq = seq;
        if let Some(last) = self.history.back_mut() {
            last.0 = seq;
        }
    }
}

/// The owner of an Automerge actor id: the first device that pushed changes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorOwner {
    pub username: String,
    pub device_id: String,
}
