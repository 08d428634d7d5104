//! [`Phone`]: one officer's store on the device, its records, and login. The sync lives in
//! `session.rs` (the app makes the HTTP calls) and in [`Phone::sync`] (the library makes them).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use client_core::LocalStore;
use client_sdk::{Client, SyncOptions};
use serde_json::Value;
use sync_protocol::{doc, RecordId};

use crate::error::GesyncError;
use crate::keys::{AppKeys, KeyProvider};
use crate::session::SyncRun;
use crate::types::{Conflict, ConflictValue, Record, RecordKind, SyncListener, SyncReport};

type Result<T, E = GesyncError> = std::result::Result<T, E>;

/// One officer's phone: an encrypted store in a directory of the app's, with a key from the
/// app's [`KeyProvider`]. Every record call works offline. Calls are serialised (a call waits
/// while another runs, [`Phone::sync`] included): call them off the UI thread.
#[derive(uniffi::Object)]
pub struct Phone {
    pub(crate) inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub client: Client,
    /// The sync the app drives, while one runs.
    pub run: Option<SyncRun>,
    /// For the calls the library makes itself (login, sync): built on first use.
    runtime: Option<tokio::runtime::Runtime>,
    /// Set once the store was wiped: every later call says why.
    wiped: Option<Wiped>,
}

#[derive(Clone, Copy)]
pub(crate) enum Wiped {
    DeviceRevoked,
    AccountDisabled,
    ByOfficer,
}

impl Inner {
    /// Fails when the store was wiped (the SDK's client checks its own calls; the reads this
    /// crate makes from the store directly are checked here).
    pub fn live(&self) -> Result<()> {
        match self.wiped {
            None => Ok(()),
            Some(Wiped::DeviceRevoked) => Err(client_sdk::Error::DeviceRevoked.into()),
            Some(Wiped::AccountDisabled) => Err(client_sdk::Error::AccountDisabled.into()),
            Some(Wiped::ByOfficer) => Err(GesyncError::usage("this phone's store was wiped: open a new one")),
        }
    }

    /// Passes a result on, remembering a wipe it reports.
    pub fn noted<T>(&mut self, r: Result<T>) -> Result<T> {
        match &r {
            Err(GesyncError::DeviceRevoked { .. }) => self.wiped = Some(Wiped::DeviceRevoked),
            Err(GesyncError::AccountDisabled { .. }) => self.wiped = Some(Wiped::AccountDisabled),
            _ => {}
        }
        r
    }
}

fn parse_id(id: &str) -> Result<RecordId> {
    id.parse().map_err(|e: sync_protocol::BadRecordId| client_sdk::Error::from(e).into())
}

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| GesyncError::BadJson { reason: format!("bad JSON in {what}: {e}") })
}

#[uniffi::export]
impl Phone {
    /// Opens the store in `dir`, making it (and asking `keys` for a new key) when there is none.
    #[uniffi::constructor]
    pub fn open(dir: String, keys: Arc<dyn KeyProvider>) -> Result<Arc<Phone>> {
        let client = Client::open(Path::new(&dir), AppKeys(keys))?;
        Ok(Arc::new(Phone { inner: Mutex::new(Inner { client, run: None, runtime: None, wiped: None }) }))
    }

    /// This device's id (sent at login; an administrator revokes a device by it).
    pub fn device_id(&self) -> String {
        self.lock().client.store().device_id().to_string()
    }

    /// The server and user of the last login, if any.
    pub fn server(&self) -> Option<String> {
        self.lock().client.store().server().map(str::to_string)
    }

    pub fn username(&self) -> Option<String> {
        self.lock().client.store().username().map(str::to_string)
    }

    /// Whether a sync may run: logged in, and the session not ended.
    pub fn logged_in(&self) -> bool {
        self.lock().client.access_token().is_some()
    }

    /// A new record from its JSON (checked against the schema); returns its id.
    pub fn create(&self, kind: RecordKind, json: String) -> Result<String> {
        let value = parse_json("the record", &json)?;
        Ok(self.lock().client.create(kind.into(), &value)?.to_string())
    }

    /// Sets the field at a dotted `path` to a JSON value (`null` clears an optional field).
    pub fn set(&self, id: String, path: String, json: String) -> Result<()> {
        let value = parse_json(&path, &json)?;
        Ok(self.lock().client.set(parse_id(&id)?, &path, &value)?)
    }

    /// Appends a JSON entry to a list (`services`, `support`) or a value to a set.
    pub fn append(&self, id: String, list_path: String, json: String) -> Result<()> {
        let value = parse_json(&list_path, &json)?;
        Ok(self.lock().client.append(parse_id(&id)?, &list_path, &value)?)
    }

    /// Marks a record deleted, with a reason (records are never removed).
    pub fn delete(&self, id: String, reason: String) -> Result<()> {
        Ok(self.lock().client.delete(parse_id(&id)?, &reason)?)
    }

    /// A record with its sync state and conflicts.
    pub fn show(&self, id: String) -> Result<Record> {
        let id = parse_id(&id)?;
        let inner = self.lock();
        inner.live()?;
        record(&inner.client, id)
    }

    /// Every record (of one kind, if given), in id order.
    pub fn list(&self, kind: Option<RecordKind>) -> Result<Vec<Record>> {
        let inner = self.lock();
        inner.live()?;
        let ids = inner.client.ids(kind.map(Into::into));
        ids.into_iter().map(|id| record(&inner.client, id)).collect()
    }

    /// Records with changes the server does not have yet.
    pub fn pending_count(&self) -> u64 {
        self.lock().client.pending_count() as u64
    }

    /// Logs in, the library making the HTTPS call (`ca_cert_path`: a PEM file of certificates
    /// to trust besides none, for a server with its own certificate). Blocks: call it off the UI
    /// thread. An app with its own HTTP stack uses [`Phone::login_request`] instead.
    pub fn login(&self, server: String, username: String, password: String, ca_cert_path: Option<String>) -> Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let runtime = runtime(&mut inner.runtime)?;
        let done = runtime.block_on(inner.client.login(&server, &username, &password, ca_cert_path.as_deref().map(Path::new)));
        inner.noted(done.map_err(Into::into))
    }

    /// Syncs, the library making the HTTPS calls: pushes pending records and pulls what
    /// changed until both sides are level, retrying failed exchanges with backoff for
    /// `retry_for_seconds` (0: fail at the first). `listener` hears the progress after each
    /// exchange. Blocks: call it from a background worker.
    pub fn sync(&self, retry_for_seconds: u64, listener: Option<Arc<dyn SyncListener>>) -> Result<SyncReport> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.run = None;
        let runtime = runtime(&mut inner.runtime)?;
        let options = SyncOptions { retry_for: Duration::from_secs(retry_for_seconds), ..SyncOptions::default() };
        let done = runtime.block_on(inner.client.sync_with(&options, |p| {
            if let Some(l) = &listener {
                l.progress(p.into());
            }
        }));
        inner.noted(done.map(Into::into).map_err(Into::into))
    }

    /// Deletes every record and the key (the officer logs out leaving nothing on the phone).
    /// The phone is unusable afterwards: open a new one.
    pub fn wipe(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.run = None;
        inner.wiped = Some(Wiped::ByOfficer);
        Ok(inner.client.wipe()?)
    }
}

impl Phone {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves the store as its last completed write.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn runtime(slot: &mut Option<tokio::runtime::Runtime>) -> Result<&tokio::runtime::Runtime> {
    if slot.is_none() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GesyncError::Config { reason: format!("cannot start the HTTP runtime: {e}") })?;
        *slot = Some(rt);
    }
    Ok(slot.as_ref().expect("just made"))
}

/// A record as the app sees it: the view, the sync state, and each conflict with who wrote
/// which value.
fn record(client: &Client, id: RecordId) -> Result<Record> {
    let store = client.store();
    let meta = LocalStore::records(store).get(&id).cloned().ok_or(client_sdk::Error::UnknownRecord(id))?;
    let bytes = LocalStore::doc_bytes(store, id)?;
    let mut d = client_core::load_doc(id, &bytes, store.actor())?;
    let mut view = doc::view(&d)?;
    if let Some(obj) = view.as_object_mut() {
        obj.insert("id".into(), Value::String(id.to_string()));
    }
    let mine = store.actor().to_hex_string();
    let conflicts = doc::conflicts(&mut d)?
        .into_iter()
        .map(|c| Conflict {
            path: c.path,
            values: c
                .values
                .into_iter()
                .map(|v| ConflictValue { json: v.value.to_string(), this_device: v.actor == mine, device: v.actor, at: v.at })
                .collect(),
        })
        .collect();
    Ok(Record { id: id.to_string(), kind: meta.kind.into(), json: view.to_string(), sync: meta.status().into(), conflicts })
}
