//! The phone's local store: a directory of encrypted files, each written atomically.
//!
//! ```text
//! DIR/gesync-store      cleartext marker: format and kind of key (nothing sensitive)
//! DIR/salt              cleartext argon2 salt (passphrase stores only)
//! DIR/state             encrypted JSON: device id, actor, server, username, tokens, cursor
//! DIR/records/<uuid>    encrypted: version byte + postcard(RecordFile) = sync metadata + doc
//! DIR/acks              encrypted: the server's verdicts not yet folded into record files
//! ```
//!
//! Invariant: `records` in memory mirrors the metadata on disk (the record files, overlaid by
//! `acks`); every change is written to disk first and mirrored after, so a failed write leaves
//! memory as it was. The one exception is a server verdict (the heads it acknowledged, a
//! rejection, a request for the whole document): [`Store::update_meta`] changes memory and the
//! journal is written once per sync round by [`Store::flush_acks`], instead of one record file
//! rewrite per record. A verdict lost in a crash, or an older one read back, only says the server
//! has less than it has: the record is pushed again and the server's merge is idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use automerge::{ActorId, AutoCommit};
use serde::{Deserialize, Serialize};
use sync_protocol::wire::Hash;
use sync_protocol::RecordId;

pub use client_core::{Partial, RecordMeta, Rejection, SyncState, SyncStatus};

use crate::crypto::{self, KeyProvider, StoreKey};
use crate::error::{Error, Result};

const MARKER_FILE: &str = "gesync-store";
const STATE_FILE: &str = "state";
const RECORDS_DIR: &str = "records";
const ACKS_FILE: &str = "acks";
/// The slices received so far of a record too large for one page (see `sync.rs`).
const PARTIAL_FILE: &str = "partial";
const PARTIAL_FORMAT: u8 = 1;
const ACKS_FORMAT: u8 = 1;
/// Verdicts held in the journal beyond which they are folded into their record files.
const FOLD_ACKS_AT: usize = 5000;
const STORE_FORMAT: u32 = 1;
const RECORD_FORMAT: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Marker {
    format: u32,
    key: String,
}

/// The device-wide part of the store. `Debug` hides the tokens.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub device_id: String,
    /// The Automerge actor of every change made on this device (16 random bytes).
    pub actor: Vec<u8>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// What the server gave this device at its last password login (`LoginRequest`).
    #[serde(default)]
    pub device_proof: Option<String>,
    /// The cursor, scope, epoch and records to offer again of syncs with the server.
    #[serde(flatten)]
    pub sync: SyncState,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("device_id", &self.device_id)
            .field("server", &self.server)
            .field("username", &self.username)
            .field("logged_in", &self.access_token.is_some())
            .finish_non_exhaustive()
    }
}

/// A server verdict kept in the `acks` journal: the sync part of a record's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ack {
    id: RecordId,
    server_heads: Vec<Hash>,
    rejected: Option<Rejection>,
}

#[derive(Serialize, Deserialize)]
struct RecordFile {
    meta: RecordMeta,
    doc: Vec<u8>,
}

/// The encrypted local store of one phone.
pub struct Store {
    dir: PathBuf,
    keys: Box<dyn KeyProvider>,
    key: StoreKey,
    state: State,
    actor: ActorId,
    records: BTreeMap<RecordId, RecordMeta>,
    /// Record files written but not yet synced to disk (see [`Store::make_durable`]).
    deferred: Vec<PathBuf>,
    /// Records whose sync metadata in memory is newer than their record file: the content of
    /// the `acks` journal (see the module documentation).
    acks: BTreeSet<RecordId>,
    /// The journal on disk differs from `acks`.
    acks_dirty: bool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("state", &self.state)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Makes a new store in `dir` (created if missing; it must not hold a store already), with a
    /// fresh device id, Automerge actor and key.
    pub fn create(dir: impl AsRef<Path>, keys: impl KeyProvider + 'static) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        crypto::create_private_dir(&dir)?;
        if dir.join(MARKER_FILE).exists() {
            return Err(Error::Config(format!(
                "{} already holds a gesync store",
                dir.display()
            )));
        }
        // Only an empty directory (or the leftovers of an unfinished creation) becomes a store:
        // wiping a revoked store must never touch files that are not ours.
        let entries = fs::read_dir(&dir).map_err(Error::io("list", &dir))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("list", &dir))?;
            if !is_store_entry(&entry.file_name().to_string_lossy()) {
                return Err(Error::Config(format!(
                    "{} is not empty and holds no gesync store: choose a new or empty directory",
                    dir.display()
                )));
            }
        }
        let key = keys.create_key(&dir)?;
        let marker = Marker {
            format: STORE_FORMAT,
            key: keys.mode().to_string(),
        };
        crypto::create_private_dir(&dir.join(RECORDS_DIR))?;
        let actor = ActorId::random();
        let state = State {
            device_id: uuid::Uuid::new_v4().to_string(),
            actor: actor.to_bytes().to_vec(),
            server: None,
            ca_cert: None,
            username: None,
            access_token: None,
            refresh_token: None,
            device_proof: None,
            sync: SyncState::default(),
        };
        let store = Store::with_state(dir, Box::new(keys), key, state);
        store.save_state()?;
        // The marker goes last: a store without it is an unfinished creation and is made again.
        let marker = serde_json::to_vec(&marker).expect("the marker serialises");
        crypto::write_atomic(&store.dir.join(MARKER_FILE), &marker)?;
        Ok(store)
    }

    /// Opens the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, keys: impl KeyProvider + 'static) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        let marker_path = dir.join(MARKER_FILE);
        let marker = match fs::read(&marker_path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Config(format!(
                    "no gesync store in {}",
                    dir.display()
                )))
            }
            Err(e) => return Err(Error::io("read", &marker_path)(e)),
        };
        let marker: Marker = serde_json::from_slice(&marker).map_err(|e| Error::Corrupt {
            path: marker_path.clone(),
            detail: e.to_string(),
        })?;
        if marker.format != STORE_FORMAT {
            return Err(Error::Config(format!(
                "the store in {} has format {}; this gesync-field reads format {STORE_FORMAT}",
                dir.display(),
                marker.format
            )));
        }
        if marker.key != keys.mode() {
            return Err(Error::Config(match marker.key.as_str() {
                "passphrase" => format!(
                    "the store in {} is protected by a passphrase: set {}",
                    dir.display(),
                    crypto::SECRET_ENV
                ),
                other => format!(
                    "the store in {} is protected by a `{other}` key, not a `{}` one{}",
                    dir.display(),
                    keys.mode(),
                    if keys.mode() == "passphrase" {
                        format!(": unset {}", crypto::SECRET_ENV)
                    } else {
                        String::new()
                    }
                ),
            }));
        }
        let key = keys.open_key(&dir)?;
        let state_path = dir.join(STATE_FILE);
        let sealed = fs::read(&state_path).map_err(Error::io("read", &state_path))?;
        let plain = crypto::open(&key, STATE_FILE, &sealed)?;
        let state: State = serde_json::from_slice(&plain).map_err(|e| Error::Corrupt {
            path: state_path.clone(),
            detail: e.to_string(),
        })?;
        let mut store = Store::with_state(dir, Box::new(keys), key, state);
        store.load_index()?;
        Ok(store)
    }

    /// A store handle over `state`, with no record loaded yet.
    fn with_state(dir: PathBuf, keys: Box<dyn KeyProvider>, key: StoreKey, state: State) -> Store {
        Store {
            dir,
            keys,
            key,
            actor: ActorId::from(state.actor.as_slice()),
            state,
            records: BTreeMap::new(),
            deferred: Vec::new(),
            acks: BTreeSet::new(),
            acks_dirty: false,
        }
    }

    /// Opens the store in `dir`, creating it first when there is none.
    pub fn open_or_create(
        dir: impl AsRef<Path>,
        keys: impl KeyProvider + 'static,
    ) -> Result<Store> {
        if dir.as_ref().join(MARKER_FILE).exists() {
            Store::open(dir, keys)
        } else {
            Store::create(dir, keys)
        }
    }

    fn load_index(&mut self) -> Result<()> {
        remove_temporaries(&self.dir);
        let records_dir = self.dir.join(RECORDS_DIR);
        crypto::create_private_dir(&records_dir)?;
        remove_temporaries(&records_dir);
        let entries = fs::read_dir(&records_dir).map_err(Error::io("list", &records_dir))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("list", &records_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(id) = name.parse::<RecordId>() else {
                continue;
            };
            let (meta, _) = self.read_record_file(id)?;
            self.records.insert(id, meta);
        }
        self.read_acks()
    }

    /// Overlays the verdicts of the `acks` journal on the metadata read from record files.
    fn read_acks(&mut self) -> Result<()> {
        let path = self.dir.join(ACKS_FILE);
        let sealed = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        let plain = crypto::open(&self.key, ACKS_FILE, &sealed)?;
        let acks: Vec<Ack> = match plain.split_first() {
            Some((&ACKS_FORMAT, body)) => postcard::from_bytes(body).map_err(|e| Error::Corrupt {
                path: path.clone(),
                detail: e.to_string(),
            })?,
            _ => {
                return Err(Error::Corrupt {
                    path,
                    detail: "unknown journal format".into(),
                })
            }
        };
        for ack in acks {
            if let Some(meta) = self.records.get_mut(&ack.id) {
                meta.server_heads = ack.server_heads;
                meta.rejected = ack.rejected;
                self.acks.insert(ack.id);
            }
        }
        Ok(())
    }

    /// Writes the `acks` journal if it changed (atomically; with `durable`, also synced). Past
    /// [`FOLD_ACKS_AT`] verdicts, they are first folded into their record files.
    pub(crate) fn flush_acks(&mut self, durable: bool) -> Result<()> {
        if !self.acks_dirty {
            return Ok(());
        }
        if self.acks.len() > FOLD_ACKS_AT {
            for id in self.acks.clone() {
                let meta = self.meta(id)?.clone();
                let (_, doc) = self.read_record_file(id)?;
                self.put_record_with(id, meta, &doc, false)?;
            }
        }
        let acks: Vec<Ack> = self
            .acks
            .iter()
            .filter_map(|id| {
                let m = self.records.get(id)?;
                Some(Ack {
                    id: *id,
                    server_heads: m.server_heads.clone(),
                    rejected: m.rejected.clone(),
                })
            })
            .collect();
        let mut plain = vec![ACKS_FORMAT];
        plain.extend(postcard::to_stdvec(&acks).expect("the journal serialises"));
        crypto::write_atomic_with(
            &self.dir.join(ACKS_FILE),
            &crypto::seal(&self.key, ACKS_FILE, &plain),
            durable,
        )?;
        self.acks_dirty = false;
        Ok(())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This device's id (a random UUID, sent at login).
    pub fn device_id(&self) -> &str {
        &self.state.device_id
    }

    /// This device's Automerge actor.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The server this store last logged in to.
    pub fn server(&self) -> Option<&str> {
        self.state.server.as_deref()
    }

    /// The user this store last logged in as.
    pub fn username(&self) -> Option<&str> {
        self.state.username.as_deref()
    }

    /// The device proof of the last password login (see `LoginRequest::device_proof`).
    pub fn device_proof(&self) -> Option<&str> {
        self.state.device_proof.as_deref()
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Changes the state and writes it; memory changes only if the write succeeds.
    pub(crate) fn update_state(&mut self, change: impl FnOnce(&mut State)) -> Result<()> {
        let mut next = self.state.clone();
        change(&mut next);
        let old = std::mem::replace(&mut self.state, next);
        if let Err(e) = self.save_state() {
            self.state = old;
            return Err(e);
        }
        Ok(())
    }

    fn save_state(&self) -> Result<()> {
        let plain = serde_json::to_vec(&self.state).expect("the state serialises");
        let sealed = crypto::seal(&self.key, STATE_FILE, &plain);
        crypto::write_atomic(&self.dir.join(STATE_FILE), &sealed)
    }

    pub(crate) fn records(&self) -> &BTreeMap<RecordId, RecordMeta> {
        &self.records
    }

    pub(crate) fn meta(&self, id: RecordId) -> Result<&RecordMeta> {
        self.records.get(&id).ok_or(Error::UnknownRecord(id))
    }

    fn record_name(id: RecordId) -> String {
        format!("{RECORDS_DIR}/{id}")
    }

    fn read_record_file(&self, id: RecordId) -> Result<(RecordMeta, Vec<u8>)> {
        let name = Store::record_name(id);
        let path = self.dir.join(&name);
        let sealed = fs::read(&path).map_err(Error::io("read", &path))?;
        let plain = crypto::open(&self.key, &name, &sealed)?;
        let corrupt = |detail: String| Error::Corrupt {
            path: path.clone(),
            detail,
        };
        match plain.split_first() {
            Some((&RECORD_FORMAT, body)) => {
                let file: RecordFile =
                    postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
                Ok((file.meta, file.doc))
            }
            _ => Err(corrupt("unknown record file format".into())),
        }
    }

    /// A record's document as stored: bytes that load into its whole history.
    pub(crate) fn doc_bytes(&self, id: RecordId) -> Result<Vec<u8>> {
        self.meta(id)?;
        Ok(self.read_record_file(id)?.1)
    }

    /// Loads a record's document, with this device's actor for new changes.
    pub(crate) fn load_doc(&self, id: RecordId) -> Result<(RecordMeta, AutoCommit)> {
        if !self.records.contains_key(&id) {
            return Err(Error::UnknownRecord(id));
        }
        let (_, bytes) = self.read_record_file(id)?;
        // The metadata in memory is authoritative (it includes the journal's verdicts).
        let meta = self.meta(id)?.clone();
        let doc = AutoCommit::load(&bytes)
            .map_err(|e| Error::BadDocument {
                id,
                detail: e.to_string(),
            })?
            .with_actor(self.actor.clone());
        Ok((meta, doc))
    }

    /// Writes a record (metadata and the document saved whole), durably.
    pub(crate) fn put_record(&mut self, id: RecordId, meta: RecordMeta, doc: &[u8]) -> Result<()> {
        self.put_record_with(id, meta, doc, true)
    }

    /// Writes a record atomically but leaves it to [`Store::make_durable`] to reach the disk:
    /// for a round of pulled records, which must be durable before the cursor moves past them.
    pub(crate) fn put_record_deferred(&mut self, id: RecordId, meta: RecordMeta, doc: &[u8]) -> Result<()> {
        let path = self.dir.join(Store::record_name(id));
        self.put_record_with(id, meta, doc, false)?;
        self.deferred.push(path);
        Ok(())
    }

    /// Makes every deferred write durable. On Linux one `syncfs` covers them all (one journal
    /// commit instead of two fsyncs per record); elsewhere each file and the directory are
    /// synced.
    pub(crate) fn make_durable(&mut self) -> Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            let dir = fs::File::open(&self.dir).map_err(Error::io("open", &self.dir))?;
            rustix::fs::syncfs(&dir).map_err(|e| Error::io("sync", &self.dir)(std::io::Error::from(e)))?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            for path in &self.deferred {
                if let Ok(f) = fs::File::open(path) {
                    f.sync_all().map_err(Error::io("sync", path))?;
                }
            }
            if let Ok(d) = fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        self.deferred.clear();
        Ok(())
    }

    fn put_record_with(&mut self, id: RecordId, meta: RecordMeta, doc: &[u8], durable: bool) -> Result<()> {
        let file = RecordFile {
            meta,
            doc: doc.to_vec(),
        };
        let mut plain = vec![RECORD_FORMAT];
        plain.extend(postcard::to_stdvec(&file).expect("a record file serialises"));
        let name = Store::record_name(id);
        crypto::write_atomic_with(
            &self.dir.join(&name),
            &crypto::seal(&self.key, &name, &plain),
            durable,
        )?;
        self.records.insert(id, file.meta);
        // The file now holds the record's verdict too.
        if self.acks.remove(&id) {
            self.acks_dirty = true;
        }
        Ok(())
    }

    /// Records a server verdict: changes only the sync metadata of a record (the heads the
    /// server has, a rejection), in memory and in the journal that [`Store::flush_acks`] writes
    /// once per round. Not fsynced: see the module documentation for why losing it is safe.
    pub(crate) fn update_meta(
        &mut self,
        id: RecordId,
        change: impl FnOnce(&mut RecordMeta),
    ) -> Result<()> {
        let meta = self.records.get_mut(&id).ok_or(Error::UnknownRecord(id))?;
        let (heads, conflicts) = (meta.heads.clone(), meta.conflicts);
        change(meta);
        debug_assert!(meta.heads == heads && meta.conflicts == conflicts, "a verdict changes only sync metadata");
        self.acks.insert(id);
        self.acks_dirty = true;
        Ok(())
    }

    /// Changes the sync metadata of a record in its file, fsynced: for changes that must not be
    /// lost (forgetting what a previous server had, so that everything is pushed to the new
    /// one). Callers then [`Store::flush_acks`] durably, so that the journal forgets it too.
    pub(crate) fn update_meta_durable(&mut self, id: RecordId, change: impl FnOnce(&mut RecordMeta)) -> Result<()> {
        let mut meta = self.meta(id)?.clone();
        change(&mut meta);
        let (_, doc) = self.read_record_file(id)?;
        self.put_record_with(id, meta, &doc, true)
    }

    /// Deletes the key (where the provider keeps one) and every store file in the directory.
    /// The store is unusable afterwards.
    pub(crate) fn wipe(&mut self) -> Result<()> {
        // The key first: once it is gone, whatever a failed removal leaves is unreadable.
        let forgot = self.keys.forget_key(&self.dir);
        self.records.clear();
        self.state.access_token = None;
        self.state.refresh_token = None;
        let entries = fs::read_dir(&self.dir).map_err(Error::io("list", &self.dir))?;
        for entry in entries.flatten() {
            if !is_store_entry(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let removed = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(Error::io("remove", &path))?;
        }
        forgot
    }
}

impl Store {
    /// The large record being received, if a sync was interrupted in the middle of one.
    pub(crate) fn partial(&self) -> Result<Option<Partial>> {
        let path = self.dir.join(PARTIAL_FILE);
        let sealed = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        let plain = crypto::open(&self.key, PARTIAL_FILE, &sealed)?;
        match plain.split_first() {
            Some((&PARTIAL_FORMAT, body)) => Ok(postcard::from_bytes(body).ok()),
            // Not ours to read: start that record again rather than fail the sync.
            _ => Ok(None),
        }
    }

    /// Keeps the slices received so far, durably: the next request resumes after them.
    pub(crate) fn put_partial(&mut self, partial: &Partial) -> Result<()> {
        let mut plain = vec![PARTIAL_FORMAT];
        plain.extend(postcard::to_stdvec(partial).expect("a partial record serialises"));
        crypto::write_atomic(&self.dir.join(PARTIAL_FILE), &crypto::seal(&self.key, PARTIAL_FILE, &plain))
    }

    /// Removes a record from this phone (its file, its verdict), durably.
    pub(crate) fn remove_record(&mut self, id: RecordId) -> Result<()> {
        crypto::remove_durably(&self.dir.join(Store::record_name(id)))?;
        self.records.remove(&id);
        if self.acks.remove(&id) {
            self.acks_dirty = true;
        }
        Ok(())
    }

    pub(crate) fn clear_partial(&mut self) -> Result<()> {
        crypto::remove_if_present(&self.dir.join(PARTIAL_FILE))
    }
}

/// True for the names the store writes in its directory.
fn is_store_entry(name: &str) -> bool {
    [MARKER_FILE, STATE_FILE, RECORDS_DIR, ACKS_FILE, PARTIAL_FILE, crypto::SALT_FILE].contains(&name)
        || name.starts_with(".tmp-")
}

/// Removes the temporary files of writes that were interrupted before their rename.
fn remove_temporaries(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

impl<K: KeyProvider + ?Sized> KeyProvider for Box<K> {
    fn mode(&self) -> &'static str {
        (**self).mode()
    }
    fn create_key(&self, dir: &Path) -> Result<StoreKey> {
        (**self).create_key(dir)
    }
    fn open_key(&self, dir: &Path) -> Result<StoreKey> {
        (**self).open_key(dir)
    }
    fn forget_key(&self, dir: &Path) -> Result<()> {
        (**self).forget_key(dir)
    }
}

/// The session of `client-core` reads and writes the phone's store through this.
impl client_core::LocalStore for Store {
    type Error = Error;

    fn actor(&self) -> &ActorId {
        &self.actor
    }

    fn records(&self) -> &BTreeMap<RecordId, RecordMeta> {
        &self.records
    }

    fn doc_bytes(&self, id: RecordId) -> Result<Vec<u8>> {
        Store::doc_bytes(self, id)
    }

    fn update_meta(&mut self, id: RecordId, change: &mut dyn FnMut(&mut RecordMeta)) -> Result<()> {
        Store::update_meta(self, id, |m| change(m))
    }

    fn put_pulled(&mut self, id: RecordId, meta: RecordMeta, doc: &[u8]) -> Result<()> {
        self.put_record_deferred(id, meta, doc)
    }

    fn remove_record(&mut self, id: RecordId) -> Result<()> {
        Store::remove_record(self, id)
    }

    fn partial(&self) -> Result<Option<Partial>> {
        Store::partial(self)
    }

    fn put_partial(&mut self, partial: &Partial) -> Result<()> {
        Store::put_partial(self, partial)
    }

    fn clear_partial(&mut self) -> Result<()> {
        Store::clear_partial(self)
    }

    fn sync_state(&self) -> &SyncState {
        &self.state.sync
    }

    fn set_sync_state(&mut self, state: SyncState) -> Result<()> {
        self.update_state(|s| s.sync = state)
    }

    /// The round's verdicts in one journal write, then one `syncfs` for the pulled records
    /// (the journal rides along).
    fn barrier(&mut self) -> Result<()> {
        self.flush_acks(false)?;
        self.make_durable()
    }
}
