//! What the phone keeps beside each record, and the sync state it keeps for the whole store.

use std::collections::BTreeSet;

use automerge::{ActorId, AutoCommit};
use serde::{Deserialize, Serialize};
use sync_protocol::wire::Hash;
use sync_protocol::{doc, heads_to_wire, RecordId, RecordKind};

use crate::error::CoreError;

/// Why the server refused a record, and at which heads (a later edit makes it pending again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: String,
    pub heads: Vec<Hash>,
}

/// Sync metadata of one record, kept beside its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub kind: RecordKind,
    /// The document's heads (sorted).
    pub heads: Vec<Hash>,
    /// Heads the server is known to have (sorted; empty when never pushed or when the server
    /// asked for the whole document).
    pub server_heads: Vec<Hash>,
    pub rejected: Option<Rejection>,
    /// Number of fields holding concurrent values, as of the last change of the document.
    pub conflicts: u32,
}

/// Where a record stands with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStatus {
    /// Has changes the server does not have yet.
    Pending,
    /// The server has every change of this record.
    Synced,
    /// The server refused the record's latest changes; a new edit makes it pending again.
    Rejected { reason: String },
}

impl SyncStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncStatus::Pending => "pending",
            SyncStatus::Synced => "synced",
            SyncStatus::Rejected { .. } => "rejected",
        }
    }
}

impl RecordMeta {
    pub fn status(&self) -> SyncStatus {
        if self.heads == self.server_heads {
            SyncStatus::Synced
        } else {
            match &self.rejected {
                Some(r) if r.heads == self.heads => SyncStatus::Rejected { reason: r.reason.clone() },
                _ => SyncStatus::Pending,
            }
        }
    }
}

/// Sorted heads, so that comparing two sets of heads is comparing two vectors.
pub fn sorted(mut heads: Vec<Hash>) -> Vec<Hash> {
    heads.sort_unstable();
    heads.dedup();
    heads
}

/// Brings a record's metadata up to date with its document (heads, conflict count).
pub fn refresh_meta(meta: &mut RecordMeta, d: &mut AutoCommit) -> Result<(), doc::DocError> {
    meta.heads = sorted(heads_to_wire(&d.get_heads()));
    meta.conflicts = doc::conflicts(d)?.len() as u32;
    Ok(())
}

/// Loads a stored document, with `actor` for new changes.
pub fn load_doc(id: RecordId, bytes: &[u8], actor: &ActorId) -> Result<AutoCommit, CoreError> {
    AutoCommit::load(bytes).map(|d| d.with_actor(actor.clone())).map_err(|e| CoreError::BadDocument { id, detail: e.to_string() })
}

/// The first bytes of a large record's stored document as the server had it at feed position
/// `seq`, received slice by slice (`sync_protocol::wire::PullPart`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub id: RecordId,
    pub seq: u64,
    pub total: u64,
    pub heads: Vec<Hash>,
    pub bytes: Vec<u8>,
}

/// What the phone keeps of its syncs with one server, for the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The server's feed cursor (opaque).
    #[serde(default)]
    pub cursor: Vec<u8>,
    /// The communes whose records this phone may hold, as the server last said; `None` for a
    /// store that never held another scope's records (nothing to drop when one arrives).
    #[serde(default)]
    pub scope: Option<Vec<String>>,
    /// The store epoch the server last named (`SyncResponse::epoch`); `None` before the first
    /// sync with a server that names one.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Records to offer the server again, at the heads it last acknowledged: the server named a
    /// new epoch (a restored backup, a failover), so it may have forgotten them.
    #[serde(default)]
    pub reoffer: BTreeSet<RecordId>,
    /// Wire bytes a second of the last exchange that measured the link. The next sync starts
    /// from it, so a phone on 2G compresses harder from its first exchange, not its second.
    #[serde(default)]
    pub link_rate: Option<u32>,
    /// The server's last answer said it has the sync wire's records dictionary: the next
    /// sync's first request is made with it too. A server that cannot read it (a replica
    /// rolled back to an older build) refuses that request, which goes again at once without
    /// it (`Session::unread_dictionary`), and the sync after starts without it.
    #[serde(default)]
    pub records_dict: bool,
    /// The server's last answer said it reads pushes with their Automerge checksums left out
    /// (`FRAME_CHECKSUMS`): the next sync's first request leaves them out too, and falls back
    /// as for the dictionary.
    #[serde(default)]
    pub checksums: bool,
}
