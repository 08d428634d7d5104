//! The phone's store, as the session needs it.

use std::collections::BTreeMap;

use automerge::ActorId;
use sync_protocol::RecordId;

use crate::error::CoreError;
use crate::meta::{Partial, RecordMeta, SyncState};

/// What a [`crate::Session`] reads and writes on the phone. Writes marked *deferred* may reach
/// durable storage only at the next [`LocalStore::barrier`]; the session calls it before it
/// stores a cursor that passes them. The others are durable when they return.
pub trait LocalStore {
    /// The store's own errors; the session's ([`CoreError`]) convert into them.
    type Error: From<CoreError>;

    /// This device's Automerge actor (every change made here carries it).
    fn actor(&self) -> &ActorId;
    /// Every record's metadata.
    fn records(&self) -> &BTreeMap<RecordId, RecordMeta>;
    /// A record's stored document (bytes that load into its whole history).
    fn doc_bytes(&self, id: RecordId) -> Result<Vec<u8>, Self::Error>;
    /// Changes only a record's sync metadata (the server's heads, a rejection). Deferred.
    fn update_meta(&mut self, id: RecordId, change: &mut dyn FnMut(&mut RecordMeta)) -> Result<(), Self::Error>;
    /// Writes a pulled record (its document saved whole). Deferred.
    fn put_pulled(&mut self, id: RecordId, meta: RecordMeta, doc: &[u8]) -> Result<(), Self::Error>;
    /// Removes a record (the user may no longer see its commune).
    fn remove_record(&mut self, id: RecordId) -> Result<(), Self::Error>;
    /// The slices kept of a large record being received, if any.
    fn partial(&self) -> Result<Option<Partial>, Self::Error>;
    fn put_partial(&mut self, partial: &Partial) -> Result<(), Self::Error>;
    fn clear_partial(&mut self) -> Result<(), Self::Error>;
    /// The sync state (cursor, scope, epoch, records to offer again).
    fn sync_state(&self) -> &SyncState;
    /// Stores a new sync state.
    fn set_sync_state(&mut self, state: SyncState) -> Result<(), Self::Error>;
    /// Makes every deferred write durable.
    fn barrier(&mut self) -> Result<(), Self::Error>;
}
