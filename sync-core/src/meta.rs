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
    /// For each point of `history`, the length of the stored document at that point when it is
    /// a prefix of the stored document now (0 when it is not, or not known: metadata from
    /// before these were kept has none). See `push::stored_form`.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub ends: VecDeque<u32>,
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
    /// The heads a phone surely holds of this record, given its cursor: the version at feed
    /// position `cursor` or before it, **if** that version was still the record's latest when the
    /// phone read the feed that far. The phone's reads went up to `read_at` at most (the feed's
    /// end when its cursor was given); a version superseded at or before `read_at` may have left
    /// the feed before the phone got to it, so nothing is assumed (`None`: the phone gets the
    /// whole document). Without this condition a phone that read a page while the record moved
    /// on would be sent only the changes after a version it never received.
    pub fn delivered_heads(&self, cursor: u64, read_at: u64) -> Option<Vec<ChangeHash>> {
        self.delivered_point(cursor, read_at).map(|i| heads_from_wire(&self.history[i].1))
    }

    /// The history point [`RecordMeta::delivered_heads`] names, by its index.
    fn delivered_point(&self, cursor: u64, read_at: u64) -> Option<usize> {
        let i = self.history.iter().rposition(|(s, _)| *s <= cursor)?;
        match self.history.get(i + 1) {
            Some((next, _)) if *next <= read_at => None,
            _ => Some(i),
        }
    }

    /// [`RecordMeta::ends`], one for each point of the history (0 for those it lacks).
    pub fn aligned_ends(&self) -> VecDeque<u32> {
        (0..self.history.len()).map(|i| self.end_at(i)).collect()
    }

    /// The stored length at history point `i` ([`RecordMeta::ends`] is aligned on the newest).
    fn end_at(&self, i: usize) -> u32 {
        let from_newest = self.history.len() - i;
        self.ends.len().checked_sub(from_newest).map_or(0, |j| self.ends[j])
    }

    /// Where in the stored document (of `stored_len` bytes) the changes after the version a
    /// phone surely holds begin ([`RecordMeta::delivered_heads`]), when that version is a prefix
    /// of it: the phone is sent the bytes after this offset, with no Automerge work.
    pub fn delivered_end(&self, cursor: u64, read_at: u64, stored_len: usize) -> Option<usize> {
        let end = self.end_at(self.delivered_point(cursor, read_at)?) as usize;
        (end != 0 && end < stored_len).then_some(end)
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
