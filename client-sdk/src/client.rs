//! [`Client`]: the phone as a program sees it — typed record operations that work offline, and
//! `login`/`sync` that talk to the server through a [`Transport`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use automerge::AutoCommit;
use client_core::Refusal;
use serde_json::{json, Value};
use sync_protocol::{doc, RecordId, RecordKind};

use crate::crypto::KeyProvider;
use crate::error::{Error, Result};
use crate::store::{RecordMeta, Store, SyncStatus};
use crate::transport::{
    normalize_server_url, HttpConfig, HttpTransport, LoginRequest, Tokens, Transport, TransportError,
};

/// A phone: its local store plus the way to reach the server.
///
/// Every record operation works without a network. `login` and `sync` are `async`; the CLI runs
/// them on a current-thread runtime, a simulator can drive many clients in one runtime (give them
/// one shared [`HttpTransport`] with [`Client::with_transport`]).
pub struct Client {
    pub(crate) store: Store,
    /// A transport given by the program; when `None` an [`HttpTransport`] is made from the
    /// store's server URL and CA certificate, and cached in `http`.
    injected: Option<Arc<dyn Transport>>,
    http: Option<(String, Arc<dyn Transport>)>,
    http_config: HttpConfig,
    /// Set once the server has revoked this device and the store was wiped.
    wiped: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client over an opened store.
    pub fn new(store: Store) -> Client {
        Client {
            store,
            injected: None,
            http: None,
            http_config: HttpConfig::default(),
            wiped: false,
        }
    }

    /// Opens the store in `dir`, creating it when there is none.
    pub fn open(dir: impl AsRef<Path>, keys: impl KeyProvider + 'static) -> Result<Client> {
        Ok(Client::new(Store::open_or_create(dir, keys)?))
    }

    /// Uses `transport` for every server call instead of HTTP to the stored server URL.
    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Client {
        self.injected = Some(transport);
        self
    }

    /// Changes the HTTP timeouts (used when no transport was injected).
    pub fn with_http_config(mut self, config: HttpConfig) -> Client {
        self.http_config = config;
        self.http = None;
        self
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn live(&self) -> Result<()> {
        if self.wiped {
            Err(Error::DeviceRevoked)
        } else {
            Ok(())
        }
    }

    /// Creates a record from its JSON (validated against the schema). Works offline.
    pub fn create(&mut self, kind: RecordKind, record: &Value) -> Result<RecordId> {
        self.live()?;
        let id = RecordId::made_by(self.store.actor());
        let mut doc =
            doc::new_record(kind, record, self.store.actor().clone()).map_err(Error::doc(id))?;
        let meta = RecordMeta {
            kind,
            heads: vec![],
            server_heads: vec![],
            rejected: None,
            conflicts: 0,
        };
        self.write_doc(id, meta, &mut doc)?;
        Ok(id)
    }

    /// Sets the field at a dotted `path` (`perpetrator.counselled`, `services.0.provider`);
    /// `null` clears an optional field.
    pub fn set(&mut self, id: RecordId, path: &str, value: &Value) -> Result<()> {
        self.set_many(id, &[(path.to_string(), value.clone())])
    }

    /// Applies several assignments at once: all of them, or none when one is refused.
    pub fn set_many(&mut self, id: RecordId, assignments: &[(String, Value)]) -> Result<()> {
        self.edit(id, |d| {
            assignments
                .iter()
                .try_for_each(|(path, value)| doc::set_path(d, path, value))
        })
    }

    /// Appends an entry to a list (`services`, `support`) or a value to a set (`violence_types`).
    pub fn append(&mut self, id: RecordId, list_path: &str, value: &Value) -> Result<()> {
        self.edit(id, |d| doc::append(d, list_path, value))
    }

    /// Marks a record deleted, with a reason (records are never physically removed).
    pub fn delete(&mut self, id: RecordId, reason: &str) -> Result<()> {
        self.edit(id, |d| doc::delete_record(d, reason))
    }

    fn edit(
        &mut self,
        id: RecordId,
        change: impl FnOnce(&mut AutoCommit) -> Result<(), doc::DocError>,
    ) -> Result<()> {
        self.live()?;
        let (meta, mut d) = self.store.load_doc(id)?;
        change(&mut d).map_err(Error::doc(id))?;
        self.write_doc(id, meta, &mut d)
    }

    /// Writes a document with its metadata brought up to date (heads, conflict count).
    pub(crate) fn write_doc(
        &mut self,
        id: RecordId,
        mut meta: RecordMeta,
        d: &mut AutoCommit,
    ) -> Result<()> {
        Self::refresh_meta(id, &mut meta, d)?;
        self.store.put_record(id, meta, &doc::save_record(d))
    }

    /// Brings a record's metadata up to date with its document (heads, conflict count).
    fn refresh_meta(id: RecordId, meta: &mut RecordMeta, d: &mut AutoCommit) -> Result<()> {
        client_core::refresh_meta(meta, d).map_err(Error::doc(id))
    }

    /// The record as JSON: the view of `domain.md` plus `id`, `sync_status`
    /// (`pending`/`synced`/`rejected`), `sync_error` when rejected, and
    /// `conflicts: [{"path", "values": [...]}]` when a field holds concurrent values.
    ///
    /// The sync state is not called `status` because `gbv_case` has a `status` field.
    pub fn show(&self, id: RecordId) -> Result<Value> {
        self.live()?;
        let (meta, mut d) = self.store.load_doc(id)?;
        let mut view = doc::view(&d).map_err(Error::doc(id))?;
        let conflicts = doc::conflicts(&mut d).map_err(Error::doc(id))?;
        let obj = view.as_object_mut().expect("a record view is an object");
        obj.insert("id".into(), Value::String(id.to_string()));
        let status = meta.status();
        obj.insert("sync_status".into(), Value::String(status.as_str().into()));
        if let SyncStatus::Rejected { reason } = status {
            obj.insert("sync_error".into(), Value::String(reason));
        }
        if !conflicts.is_empty() {
            let list: Vec<Value> = conflicts
                .into_iter()
                .map(|c| {
                    let values: Vec<Value> = c.values.into_iter().map(|v| v.value).collect();
                    json!({ "path": c.path, "values": values })
                })
                .collect();
            obj.insert("conflicts".into(), Value::Array(list));
        }
        Ok(view)
    }

    /// Every record (of one kind, if given), as [`Client::show`] gives them, in id order.
    pub fn list(&self, kind: Option<RecordKind>) -> Result<Vec<Value>> {
        self.live()?;
        let ids: Vec<RecordId> = self
            .store
            .records()
            .iter()
            .filter(|(_, m)| kind.is_none_or(|k| m.kind == k))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().map(|id| self.show(id)).collect()
    }

    /// Ids of every record (of one kind, if given).
    pub fn ids(&self, kind: Option<RecordKind>) -> Vec<RecordId> {
        let records = self.store.records().iter();
        records
            .filter(|(_, m)| kind.is_none_or(|k| m.kind == k))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Where a record stands with the server.
    pub fn status(&self, id: RecordId) -> Result<SyncStatus> {
        self.live()?;
        Ok(self.store.meta(id)?.status())
    }

    /// Number of records with changes the server does not have yet.
    pub fn pending_count(&self) -> usize {
        client_core::pending_count(self.store.records())
    }

    /// The body of a password login from this device as `username`: its device id, and the
    /// device proof its last login as that user gave (the server then holds this device only to
    /// its own failures). For a driver that makes the login call itself; [`Client::login`]
    /// sends the same.
    pub fn login_request(&self, username: &str, password: &str) -> LoginRequest {
        LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
            device_id: self.store.device_id().to_string(),
            // The proof belongs to (user, device): another user's is no use.
            device_proof: self
                .store
                .device_proof()
                .filter(|_| self.store.username() == Some(username))
                .map(str::to_string),
        }
    }

    /// Logs in to `server` and keeps the server URL, CA certificate path, user name and tokens in
    /// the store (the password is not kept). Logging in to another server makes every record
    /// pending again; another user starts the pull from the beginning.
    pub async fn login(
        &mut self,
        server: &str,
        username: &str,
        password: &str,
        ca_cert: Option<&Path>,
    ) -> Result<()> {
        self.live()?;
        let server = normalize_server_url(server)?;
        let ca_cert: Option<PathBuf> = match ca_cert {
            Some(p) => Some(
                p.canonicalize()
                    .map_err(Error::io("find the CA certificate", p))?,
            ),
            None => None,
        };
        let transport = match &self.injected {
            Some(t) => t.clone(),
            None => {
                let t: Arc<dyn Transport> = Arc::new(HttpTransport::new(
                    &server,
                    ca_cert.as_deref(),
                    &self.http_config,
                )?);
                self.http = Some((server.clone(), t.clone()));
                t
            }
        };
        let request = self.login_request(username, password);
        let tokens = match transport.login(&request).await {
            Ok(t) => t,
            Err(e) => return Err(self.login_refused(e)),
        };
        self.logged_in(&server, username, ca_cert.as_deref(), tokens)
    }

    /// The error to show for a refused login; a revoked device or a disabled account wipes the
    /// store first. (For a driver that makes the login call itself, as [`Client::login`] does.)
    pub fn login_refused(&mut self, e: TransportError) -> Error {
        if let Some(wiped) = self.wipe_if_refused(&e) {
            return wiped;
        }
        match e {
            TransportError::Status { status: 401 | 403, message, .. } => {
                Error::LoginRefused(if message.is_empty() { "wrong username or password".into() } else { message })
            }
            e => e.into(),
        }
    }

    /// Keeps what a login to `server` as `username` gave (the tokens; the password is not kept),
    /// with the CA certificate to trust for it. Logging in to another server makes every record
    /// pending again; another user starts the pull from the beginning. (For a driver that makes
    /// the login call itself, as [`Client::login`] does.)
    pub fn logged_in(&mut self, server: &str, username: &str, ca_cert: Option<&Path>, tokens: Tokens) -> Result<()> {
        self.live()?;
        let server = normalize_server_url(server)?;
        let ca_cert: Option<PathBuf> = match ca_cert {
            Some(p) => Some(p.canonicalize().map_err(Error::io("find the CA certificate", p))?),
            None => None,
        };
        let new_server = self.store.server() != Some(server.as_str());
        let new_user = self.store.username() != Some(username);
        if new_server && self.store.server().is_some() {
            // What the old server had says nothing about the new one.
            let ids: Vec<RecordId> = self.store.records().keys().copied().collect();
            for id in ids {
                self.store.update_meta_durable(id, |m| {
                    m.server_heads.clear();
                    m.rejected = None;
                })?;
            }
            self.store.flush_acks(true)?;
        }
        let holds_records = !self.store.records().is_empty();
        self.store.update_state(|s| {
            if new_server {
                // Another server's epoch says nothing of this one.
                s.sync.epoch = None;
                s.sync.reoffer.clear();
            }
            if new_server || new_user {
                s.sync.cursor.clear();
                // Another user's records may be here: the next scope the server sends decides.
                s.sync.scope = holds_records.then(Vec::new);
            }
            s.server = Some(server);
            s.ca_cert = ca_cert;
            s.username = Some(username.to_string());
            s.access_token = Some(tokens.access_token);
            s.refresh_token = Some(tokens.refresh_token);
            if tokens.device_proof.is_some() || new_user {
                s.device_proof = tokens.device_proof;
            }
        })
    }

    /// [`Client::login`] on a poor link: a failure that may pass (the link dropped or stalled,
    /// the server busy) is tried again with backoff for up to `retry_for`, `on_retry` being told
    /// the error and the wait before each new try. A login is idempotent (same device, fresh
    /// tokens), so an answer lost on a cut is simply asked again.
    pub async fn login_with(
        &mut self,
        server: &str,
        username: &str,
        password: &str,
        ca_cert: Option<&Path>,
        retry_for: std::time::Duration,
        mut on_retry: impl FnMut(&Error, std::time::Duration),
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + retry_for;
        let mut failures = 0;
        loop {
            match self.login(server, username, password, ca_cert).await {
                Err(e) if e.is_transient() => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    failures += 1;
                    let wait = crate::sync::backoff(failures, &e).min(left);
                    on_retry(&e, wait);
                    tokio::time::sleep(wait).await;
                }
                done => return done,
            }
        }
    }

    /// The transport for server calls.
    pub(crate) fn transport(&mut self) -> Result<Arc<dyn Transport>> {
        if let Some(t) = &self.injected {
            return Ok(t.clone());
        }
        let server = self
            .store
            .state()
            .server
            .clone()
            .ok_or(Error::NotLoggedIn)?;
        if let Some((s, t)) = &self.http {
            if *s == server {
                return Ok(t.clone());
            }
        }
        let ca = self.store.state().ca_cert.clone();
        let t: Arc<dyn Transport> = Arc::new(HttpTransport::new(
            &server,
            ca.as_deref(),
            &self.http_config,
        )?);
        self.http = Some((server, t.clone()));
        Ok(t)
    }

    /// Wipes the store after the server revoked this device, and returns the error to show.
    pub(crate) fn revoked(&mut self) -> Error {
        self.wipe_because(Error::DeviceRevoked)
    }

    /// Wipes the store after the server disabled the account, and returns the error to show.
    pub(crate) fn disabled(&mut self) -> Error {
        self.wipe_because(Error::AccountDisabled)
    }

    fn wipe_because(&mut self, why: Error) -> Error {
        self.wiped = true;
        match self.store.wipe() {
            Ok(()) => why,
            Err(e) => Error::Config(format!("{why}, but wiping the local data failed: {e}")),
        }
    }

    /// Gets fresh tokens with the refresh token (which rotates), or fails with
    /// [`Error::SessionExpired`].
    pub(crate) async fn refresh(&mut self, transport: &dyn Transport) -> Result<String> {
        let Some(refresh_token) = self.store.state().refresh_token.clone() else {
            return Err(Error::SessionExpired);
        };
        match transport.refresh(&refresh_token).await {
            Ok(tokens) => self.refreshed(tokens),
            Err(e) => Err(self.refresh_refused(e)),
        }
    }

    /// Keeps the tokens a refresh gave and returns the new access token.
    pub fn refreshed(&mut self, tokens: Tokens) -> Result<String> {
        let access = tokens.access_token.clone();
        self.store.update_state(|s| {
            s.access_token = Some(tokens.access_token);
            s.refresh_token = Some(tokens.refresh_token);
        })?;
        Ok(access)
    }

    /// The error to show for a refused refresh: a revoked device or a disabled account wipes the
    /// store; a refresh token the server no longer takes ends the session
    /// ([`Error::SessionExpired`], the tokens forgotten).
    pub fn refresh_refused(&mut self, e: TransportError) -> Error {
        if let Some(wiped) = self.wipe_if_refused(&e) {
            return wiped;
        }
        match e {
            TransportError::Status { status: 400 | 401 | 403, .. } => {
                match self.store.update_state(|s| {
                    s.access_token = None;
                    s.refresh_token = None;
                }) {
                    Ok(()) => Error::SessionExpired,
                    Err(e) => e,
                }
            }
            e => e.into(),
        }
    }

    /// Wipes the store when the server's refusal says so (`client_core::Refusal`: a revoked
    /// device, a disabled account) and returns the error to show; `None` for any other failure.
    pub fn wipe_if_refused(&mut self, e: &TransportError) -> Option<Error> {
        match e.refusal() {
            Some(Refusal::WipeDeviceRevoked) => Some(self.revoked()),
            Some(Refusal::WipeAccountDisabled) => Some(self.disabled()),
            _ => None,
        }
    }

    /// Deletes the key and every record of this store, by the officer's choice (logging out and
    /// leaving nothing on the phone). The client is unusable afterwards.
    pub fn wipe(&mut self) -> Result<()> {
        self.wiped = true;
        self.store.wipe()
    }

    /// The store, for a driver that runs a `client_core::Session` over it itself (the native
    /// bindings, whose app makes the HTTP calls).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The access token to send with a sync request (`None` before a login and after the
    /// session ended). For a driver that makes the HTTP calls itself.
    pub fn access_token(&self) -> Option<&str> {
        self.store.state().access_token.as_deref()
    }

    /// The refresh token, for a driver that makes the refresh call itself.
    pub fn refresh_token(&self) -> Option<&str> {
        self.store.state().refresh_token.as_deref()
    }
}
