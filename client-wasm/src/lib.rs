//! The officer's web app's core, compiled to WebAssembly: the same session (`client-core`) and
//! record documents (`sync-protocol`) that `client-sdk` and the native bindings drive, behind a
//! small JavaScript API.
//!
//! The app keeps each officer's records sealed in IndexedDB; this module holds them in memory
//! while the officer works ([`MemStore`]) and hands back what must be written after each
//! operation ([`Phone::take_writes`]): the app writes the records and then the state in one
//! IndexedDB transaction, before it asks for the next sync request, so a cursor is never stored
//! ahead of the records it passed.
//!
//! Everything crossing to JavaScript is JSON text or bytes, so that the app needs no generated
//! type definitions and this crate's logic is tested natively (`cargo test`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{ActorId, AutoCommit};
use client_core::{load_doc, refresh_meta, LocalStore, Partial, RecordMeta, Session, Step, SyncOptions, SyncState, SyncStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sync_protocol::{doc, schema, RecordId, RecordKind};
use wasm_bindgen::prelude::*;

/// One record as the app stores it (sealed): its sync metadata and its document.
#[derive(Serialize, Deserialize)]
struct RecordFile {
    id: RecordId,
    meta: RecordMeta,
    doc: Vec<u8>,
    /// The record's view and conflicts as of `meta.heads` (JSON), so that opening the app draws
    /// the list without loading a thousand documents.
    view: String,
}

/// The app's store while it is open: every record of this officer, in memory.
#[derive(Default)]
pub struct MemStore {
    actor: Option<ActorId>,
    records: BTreeMap<RecordId, RecordMeta>,
    docs: HashMap<RecordId, Vec<u8>>,
    partial: Option<Partial>,
    sync: SyncState,
    /// Records written or removed since the app last took the writes.
    written: BTreeSet<RecordId>,
    state_changed: bool,
}

/// An error for JavaScript: a stable code and a message (English; the app shows its own
/// Vietnamese text for each code, and the message for schema errors, which name the field).
#[derive(Debug)]
pub struct AppError {
    pub code: &'static str,
    pub message: String,
    /// For a schema error: the field's dotted path and what is wrong (`missing`, `wrong_type`,
    /// `not_in_enum`, `bad_date`, `out_of_range`, `too_long`, `immutable`, `bad_org_unit`,
    /// `unknown_field`, `unknown_kind`), for the app's own wording.
    pub field: Option<(String, &'static str)>,
}

impl From<client_core::CoreError> for AppError {
    fn from(e: client_core::CoreError) -> Self {
        AppError { code: e.code(), message: e.to_string(), field: None }
    }
}

impl From<doc::DocError> for AppError {
    fn from(e: doc::DocError) -> Self {
        match e {
            doc::DocError::Schema(s) => {
                AppError { code: "schema", message: s.to_string(), field: Some((s.path.clone(), s.problem.code())) }
            }
            doc::DocError::Malformed(m) => AppError { code: "bad_document", message: m, field: None },
        }
    }
}

impl From<AppError> for JsValue {
    fn from(e: AppError) -> Self {
        let (path, problem) = e.field.unzip();
        JsValue::from_str(&json!({"code": e.code, "message": e.message, "path": path, "problem": problem}).to_string())
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> AppError {
    AppError { code, message: message.into(), field: None }
}

impl MemStore {
    fn actor_id(&self) -> &ActorId {
        self.actor.as_ref().expect("the phone has an actor")
    }
}

impl LocalStore for MemStore {
    type Error = AppError;

    fn actor(&self) -> &ActorId {
        self.actor_id()
    }
    fn records(&self) -> &BTreeMap<RecordId, RecordMeta> {
        &self.records
    }
    fn doc_bytes(&self, id: RecordId) -> Result<Vec<u8>, AppError> {
        self.docs.get(&id).cloned().ok_or_else(|| bad("unknown_record", format!("no record {id}")))
    }
    fn update_meta(&mut self, id: RecordId, change: &mut dyn FnMut(&mut RecordMeta)) -> Result<(), AppError> {
        let m = self.records.get_mut(&id).ok_or_else(|| bad("unknown_record", format!("no record {id}")))?;
        change(m);
        self.written.insert(id);
        Ok(())
    }
    fn put_pulled(&mut self, id: RecordId, meta: RecordMeta, doc: &[u8]) -> Result<(), AppError> {
        self.records.insert(id, meta);
        self.docs.insert(id, doc.to_vec());
        self.written.insert(id);
        Ok(())
    }
    fn remove_record(&mut self, id: RecordId) -> Result<(), AppError> {
        self.records.remove(&id);
        self.docs.remove(&id);
        self.written.insert(id);
        Ok(())
    }
    fn partial(&self) -> Result<Option<Partial>, AppError> {
        Ok(self.partial.clone())
    }
    fn put_partial(&mut self, partial: &Partial) -> Result<(), AppError> {
        self.partial = Some(partial.clone());
        self.state_changed = true;
        Ok(())
    }
    fn clear_partial(&mut self) -> Result<(), AppError> {
        if self.partial.take().is_some() {
            self.state_changed = true;
        }
        Ok(())
    }
    fn sync_state(&self) -> &SyncState {
        &self.sync
    }
    fn set_sync_state(&mut self, state: SyncState) -> Result<(), AppError> {
        self.sync = state;
        self.state_changed = true;
        Ok(())
    }
    /// Nothing to do here: the app writes every record this answer touched and then the state
    /// in one IndexedDB transaction before the next request (see the crate documentation).
    fn barrier(&mut self) -> Result<(), AppError> {
        Ok(())
    }
}

/// What the app keeps beside the records: the device's actor and the sync state.
#[derive(Serialize, Deserialize)]
struct StoredState {
    actor: String,
    sync: SyncState,
    #[serde(default)]
    partial: Option<Partial>,
}

/// One officer's phone: the records, the record operations and the sync session.
#[wasm_bindgen]
#[derive(Default)]
pub struct Phone {
    store: MemStore,
    session: Option<Session>,
    last_report: Option<client_core::SyncReport>,
    /// Each record's view and conflicts as of its heads: the list is drawn from these without
    /// loading every document again (a slow phone holds a thousand records).
    views: std::cell::RefCell<HashMap<RecordId, HeadsAndView>>,
}

/// A record's heads and its view (JSON) with conflicts as of those heads.
type HeadsAndView = (Vec<[u8; 32]>, Value);

/// A record to write to the browser's store: its id and its bytes (`None`: delete it).
pub type RecordWrite = (String, Option<Vec<u8>>);

/// The native API (JSON and bytes), which the `wasm_bindgen` methods wrap.
impl Phone {
    pub fn create_new() -> Phone {
        let mut p = Phone::default();
        p.store.actor = Some(ActorId::random());
        p.store.state_changed = true;
        p
    }

    /// Restores the state the app stored ([`Phone::state`]).
    pub fn restore(state: &str) -> Result<Phone, AppError> {
        let s: StoredState = serde_json::from_str(state).map_err(|e| bad("bad_state", e.to_string()))?;
        let actor = hex::decode(&s.actor).map_err(|e| bad("bad_state", e.to_string()))?;
        Ok(Phone { store: MemStore { actor: Some(ActorId::from(actor)), sync: s.sync, partial: s.partial, ..MemStore::default() }, ..Phone::default() })
    }

    /// Adds one stored record (the bytes [`Phone::take_writes`] gave).
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), AppError> {
        let file: RecordFile = postcard::from_bytes(bytes).map_err(|e| bad("bad_record_file", e.to_string()))?;
        if let Ok(view) = serde_json::from_str::<Value>(&file.view) {
            self.views.borrow_mut().insert(file.id, (file.meta.heads.clone(), view));
        }
        self.store.records.insert(file.id, file.meta);
        self.store.docs.insert(file.id, file.doc);
        Ok(())
    }

    /// The state to store (actor, cursor, scope, epoch, slices kept).
    pub fn state(&self) -> String {
        let s = StoredState { actor: self.store.actor_id().to_hex_string(), sync: self.store.sync.clone(), partial: self.store.partial.clone() };
        serde_json::to_string(&s).expect("the state serialises")
    }

    /// What changed since the last call: `(id, Some(bytes))` to write, `(id, None)` to delete;
    /// and whether the state must be written too (after the records).
    pub fn writes(&mut self) -> (Vec<RecordWrite>, bool) {
        let ids = std::mem::take(&mut self.store.written);
        let out = ids
            .into_iter()
            .map(|id| {
                let file = self.store.records.get(&id).map(|meta| {
                    let view = self.cached_view(id, meta).map(|v| v.to_string()).unwrap_or_default();
                    RecordFile { id, meta: meta.clone(), doc: self.store.docs[&id].clone(), view }
                });
                (id.to_string(), file.map(|f| postcard::to_allocvec(&f).expect("a record file encodes")))
            })
            .collect();
        (out, std::mem::take(&mut self.store.state_changed))
    }

    /// A new record from the form's JSON (checked against the schema); returns its id.
    pub fn create_record(&mut self, kind: &str, record: &str) -> Result<String, AppError> {
        let kind: RecordKind = kind.parse().map_err(|_| bad("schema", format!("unknown record kind `{kind}`")))?;
        let value: Value = serde_json::from_str(record).map_err(|e| bad("bad_json", e.to_string()))?;
        let mut d = doc::new_record(kind, &value, self.store.actor_id().clone())?;
        let id = RecordId::made_by(self.store.actor_id());
        let mut meta = RecordMeta { kind, heads: vec![], server_heads: vec![], rejected: None, conflicts: 0 };
        refresh_meta(&mut meta, &mut d)?;
        self.put(id, meta, &mut d);
        Ok(id.to_string())
    }

    /// Edits a record: `op` is `set` (`path`, JSON value), `append` (list path, JSON entry) or
    /// `delete` (the reason in `value`, a JSON string).
    pub fn edit_record(&mut self, id: &str, op: &str, path: &str, value: &str) -> Result<(), AppError> {
        let id = parse_id(id)?;
        let meta = self.store.records.get(&id).cloned().ok_or_else(|| bad("unknown_record", format!("no record {id}")))?;
        let mut d = load_doc(id, &self.store.doc_bytes(id)?, self.store.actor_id())?;
        let value: Value = serde_json::from_str(value).map_err(|e| bad("bad_json", e.to_string()))?;
        match op {
            "set" => doc::set_path(&mut d, path, &value)?,
            "append" => doc::append(&mut d, path, &value)?,
            "delete" => doc::delete_record(&mut d, value.as_str().unwrap_or_default())?,
            other => return Err(bad("bad_request", format!("unknown edit `{other}`"))),
        }
        let mut meta = meta;
        refresh_meta(&mut meta, &mut d)?;
        self.put(id, meta, &mut d);
        Ok(())
    }

    fn put(&mut self, id: RecordId, meta: RecordMeta, d: &mut AutoCommit) {
        self.store.docs.insert(id, doc::save_record(d));
        self.store.records.insert(id, meta);
        self.store.written.insert(id);
    }

    /// The record's view with `id`, `sync_status` (`pending`, `synced`, `rejected`),
    /// `sync_error`, and `conflicts` (every competing value with the device and time).
    pub fn show_record(&self, id: &str) -> Result<Value, AppError> {
        let id = parse_id(id)?;
        let meta = self.store.records.get(&id).ok_or_else(|| bad("unknown_record", format!("no record {id}")))?;
        let mut view = self.cached_view(id, meta)?;
        let obj = view.as_object_mut().expect("a record view is an object");
        let status = meta.status();
        obj.insert("sync_status".into(), json!(status.as_str()));
        if let SyncStatus::Rejected { reason } = status {
            obj.insert("sync_error".into(), json!(reason));
        }
        Ok(view)
    }

    /// The record's view as of its heads, from the cache or made (and cached).
    fn cached_view(&self, id: RecordId, meta: &RecordMeta) -> Result<Value, AppError> {
        if let Some((_, v)) = self.views.borrow().get(&id).filter(|(heads, _)| *heads == meta.heads) {
            return Ok(v.clone());
        }
        let v = self.document_view(id)?;
        self.views.borrow_mut().insert(id, (meta.heads.clone(), v.clone()));
        Ok(v)
    }

    /// The document's view with its id and conflicts (what does not depend on the sync state).
    fn document_view(&self, id: RecordId) -> Result<Value, AppError> {
        let mut d = load_doc(id, &self.store.doc_bytes(id)?, self.store.actor_id())?;
        let mut view = doc::view(&d)?;
        let conflicts = doc::conflicts(&mut d)?;
        let mine = self.store.actor_id().to_hex_string();
        let obj = view.as_object_mut().expect("a record view is an object");
        obj.insert("id".into(), json!(id.to_string()));
        let conflicts: Vec<Value> = conflicts
            .into_iter()
            .map(|c| {
                let values: Vec<Value> = c.values.into_iter().map(|v| json!({"value": v.value, "device": v.actor, "this_device": v.actor == mine, "at": v.at})).collect();
                json!({"path": c.path, "values": values})
            })
            .collect();
        obj.insert("conflicts".into(), Value::Array(conflicts));
        Ok(view)
    }

    /// Every record, as [`Phone::show_record`] gives them, newest date first.
    pub fn list_records(&self) -> Result<Value, AppError> {
        let mut all = Vec::with_capacity(self.store.records.len());
        for id in self.store.records.keys() {
            all.push(self.show_record(&id.to_string())?);
        }
        let date = |v: &Value| ["detected_on", "identified_on", "published_on"].iter().find_map(|k| v[*k].as_str().map(str::to_string)).unwrap_or_default();
        all.sort_by_key(|v| std::cmp::Reverse(date(v)));
        Ok(Value::Array(all))
    }

    /// Records with changes the server does not have yet.
    pub fn pending(&self) -> usize {
        client_core::pending_count(&self.store.records)
    }

    /// Starts a sync (`options`: `{"page_seconds", "first_pull_page", "compress"}`, all optional).
    pub fn begin_sync(&mut self, options: &str, now: f64) -> Result<(), AppError> {
        let o: Value = serde_json::from_str(options).unwrap_or(json!({}));
        let mut opts = SyncOptions::default();
        if let Some(s) = o["page_seconds"].as_f64() {
            opts.page_seconds = s;
        }
        if let Some(n) = o["first_pull_page"].as_u64() {
            opts.first_pull_page = n as usize;
        }
        if let Some(c) = o["compress"].as_bool() {
            opts.compress = c;
        }
        self.session = Some(Session::new(&self.store, &opts, now)?);
        Ok(())
    }

    /// The next request body, or `None` when the sync is done (then [`Phone::report`]).
    pub fn next_request(&mut self, now: f64) -> Result<Option<Vec<u8>>, AppError> {
        let session = self.session.as_mut().ok_or_else(|| bad("no_sync", "no sync in progress"))?;
        match session.next(&self.store, now)? {
            Step::Send(body) => Ok(Some(body)),
            Step::Done(report) => {
                self.session = None;
                self.last_report = Some(report);
                Ok(None)
            }
        }
    }
}

impl Phone {
    /// Applies the answer to the request in flight; returns the progress as JSON.
    pub fn answered(&mut self, body: &[u8], now: f64) -> Result<Value, AppError> {
        let session = self.session.as_mut().ok_or_else(|| bad("no_sync", "no sync in progress"))?;
        let p = session.answered(&mut self.store, body, now)?;
        Ok(progress_json(&p))
    }

    /// The request in flight failed (no answer, or a transient refusal): it goes again.
    pub fn failed(&mut self, now: f64) {
        if let Some(s) = self.session.as_mut() {
            s.failed(now);
        }
    }

    /// Whether the server's refusal of the request in flight is of the records dictionary
    /// (`client_core::Session::unread_dictionary`): then the app sends the next request at
    /// once, which goes without it (and does not call `failed`: the link did not fail).
    pub fn unread_dictionary(&mut self, status: u16, code: &str) -> bool {
        self.session.as_mut().is_some_and(|s| s.unread_dictionary(status, code))
    }

    /// The report of the sync that just ended, as JSON.
    pub fn report(&self) -> Value {
        let r = self.last_report.clone().unwrap_or_default();
        json!({"pushed": r.pushed, "pulled": r.pulled, "conflicts": r.conflicts, "rejected": r.rejected, "requests": r.requests, "retries": r.retries, "bytes_up": r.bytes_up, "bytes_down": r.bytes_down})
    }

    /// Forgets every record and the sync state (a revoked device, a disabled account, or the
    /// officer's choice at logout); the app deletes the stored ones too.
    pub fn wipe(&mut self) {
        for id in std::mem::take(&mut self.store.records).into_keys() {
            self.store.written.insert(id);
        }
        self.store.docs.clear();
        self.store.sync = SyncState::default();
        self.store.partial = None;
        self.store.state_changed = true;
        self.session = None;
    }
}

fn progress_json(p: &client_core::SyncProgress) -> Value {
    json!({
        "round": p.round, "pushed": p.pushed, "pulled": p.pulled, "rejected": p.rejected,
        "pending": p.pending, "more": p.more, "received": p.received, "to_receive": p.to_receive,
        "bytes_up": p.bytes_up, "bytes_down": p.bytes_down, "part": p.part, "to_offer": p.to_offer,
        "retries": p.retries,
    })
}

fn js<T>(r: Result<T, AppError>) -> Result<T, JsValue> {
    r.map_err(JsValue::from)
}

/// The JavaScript API: JSON text and bytes in and out; errors are JSON text
/// `{"code", "message"}`.
#[wasm_bindgen]
impl Phone {
    /// A new phone (a new Automerge actor).
    #[wasm_bindgen(js_name = create)]
    pub fn js_create() -> Phone {
        Phone::create_new()
    }
    /// A phone from the state the app stored.
    #[wasm_bindgen(js_name = restore)]
    pub fn js_restore(state: &str) -> Result<Phone, JsValue> {
        js(Phone::restore(state))
    }
    #[wasm_bindgen(js_name = load)]
    pub fn js_load(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        js(self.load(bytes))
    }
    #[wasm_bindgen(js_name = state)]
    pub fn js_state(&self) -> String {
        self.state()
    }
    /// The records to write (`[[id, bytes]]`, bytes `null` to delete), then whether the state
    /// changed: `{"records": [...], "state": bool}` as a JS object.
    #[wasm_bindgen(js_name = takeWrites)]
    pub fn js_take_writes(&mut self) -> js_sys_free::Writes {
        let (records, state) = self.writes();
        js_sys_free::Writes { records, state }
    }
    #[wasm_bindgen(js_name = createRecord)]
    pub fn js_create_record(&mut self, kind: &str, record: &str) -> Result<String, JsValue> {
        js(self.create_record(kind, record))
    }
    #[wasm_bindgen(js_name = editRecord)]
    pub fn js_edit_record(&mut self, id: &str, op: &str, path: &str, value: &str) -> Result<(), JsValue> {
        js(self.edit_record(id, op, path, value))
    }
    #[wasm_bindgen(js_name = showRecord)]
    pub fn js_show_record(&self, id: &str) -> Result<String, JsValue> {
        js(self.show_record(id).map(|v| v.to_string()))
    }
    #[wasm_bindgen(js_name = listRecords)]
    pub fn js_list_records(&self) -> Result<String, JsValue> {
        js(self.list_records().map(|v| v.to_string()))
    }
    #[wasm_bindgen(js_name = pending)]
    pub fn js_pending(&self) -> usize {
        self.pending()
    }
    #[wasm_bindgen(js_name = beginSync)]
    pub fn js_begin_sync(&mut self, options: &str, now: f64) -> Result<(), JsValue> {
        js(self.begin_sync(options, now))
    }
    #[wasm_bindgen(js_name = nextRequest)]
    pub fn js_next_request(&mut self, now: f64) -> Result<Option<Vec<u8>>, JsValue> {
        js(self.next_request(now))
    }
    #[wasm_bindgen(js_name = answered)]
    pub fn js_answered(&mut self, body: &[u8], now: f64) -> Result<String, JsValue> {
        js(self.answered(body, now).map(|v| v.to_string()))
    }
    #[wasm_bindgen(js_name = failed)]
    pub fn js_failed(&mut self, now: f64) {
        self.failed(now)
    }
    #[wasm_bindgen(js_name = unreadDictionary)]
    pub fn js_unread_dictionary(&mut self, status: u16, code: &str) -> bool {
        self.unread_dictionary(status, code)
    }
    #[wasm_bindgen(js_name = report)]
    pub fn js_report(&self) -> String {
        self.report().to_string()
    }
    #[wasm_bindgen(js_name = wipe)]
    pub fn js_wipe(&mut self) {
        self.wipe()
    }
}

#[wasm_bindgen]
extern "C" {
    /// The browser's clock, in milliseconds.
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn date_now() -> f64;
}

/// Runs when the module is instantiated: the record documents take the time of their changes
/// from the browser (the standard library has no clock on this target).
#[wasm_bindgen(start)]
pub fn start() {
    sync_protocol::doc::set_clock(|| (date_now() / 1000.0) as i64);
}

/// The schema for the app's forms, as JSON text.
#[wasm_bindgen(js_name = schema)]
pub fn js_schema() -> String {
    schema_json().to_string()
}

/// What to do with a refused request (`status`, the API's error `code`): `wipe_device_revoked`,
/// `wipe_account_disabled`, `refresh`, `retry_later` or `fail` (client-core decides).
#[wasm_bindgen(js_name = refusal)]
pub fn js_refusal(status: u16, code: &str) -> String {
    client_core::Refusal::of(status, code).as_str().to_string()
}

/// The wait before the next try of a failed sync, in milliseconds (`jitter` drawn by the app in
/// 0.8..1.2; `retry_after` in seconds, or a negative number for none).
#[wasm_bindgen(js_name = backoffMs)]
pub fn js_backoff_ms(failures: u32, retry_after: f64, jitter: f64) -> f64 {
    let ra = (retry_after >= 0.0).then_some(retry_after as u64);
    client_core::backoff(failures, ra, jitter).as_millis() as f64
}

mod js_sys_free {
    use wasm_bindgen::prelude::*;

    /// Writes handed to the app: records (id, bytes or none) and whether the state changed.
    #[wasm_bindgen]
    pub struct Writes {
        pub(crate) records: Vec<super::RecordWrite>,
        pub(crate) state: bool,
    }

    #[wasm_bindgen]
    impl Writes {
        /// How many records to write or delete.
        #[wasm_bindgen(getter)]
        pub fn count(&self) -> usize {
            self.records.len()
        }
        #[wasm_bindgen(js_name = id)]
        pub fn id(&self, i: usize) -> String {
            self.records[i].0.clone()
        }
        /// The record's bytes to store, or `undefined` to delete it.
        #[wasm_bindgen(js_name = bytes)]
        pub fn bytes(&self, i: usize) -> Option<Vec<u8>> {
            self.records[i].1.clone()
        }
        #[wasm_bindgen(getter)]
        pub fn state(&self) -> bool {
            self.state
        }
    }
}

fn parse_id(id: &str) -> Result<RecordId, AppError> {
    id.parse().map_err(|_| bad("bad_request", format!("`{id}` is not a record id")))
}

/// The schema of the three record kinds, for the app's forms: each field's name, type,
/// whether it is required, the allowed values, and nested fields.
pub fn schema_json() -> Value {
    fn field(f: &schema::Field) -> Value {
        let (ty, extra) = match f.ty {
            schema::FieldType::Text => ("text", json!({})),
            schema::FieldType::Date => ("date", json!({})),
            schema::FieldType::Int { min, max } => ("int", json!({"min": min, "max": max})),
            schema::FieldType::Bool => ("bool", json!({})),
            schema::FieldType::Enum(v) => ("enum", json!({"values": v})),
            schema::FieldType::Set(v) => ("set", json!({"values": v})),
            schema::FieldType::OrgUnit => ("org_unit", json!({})),
            schema::FieldType::Map(sub) => ("map", json!({"fields": sub.iter().map(field).collect::<Vec<_>>()})),
            schema::FieldType::List(sub) => ("list", json!({"fields": sub.iter().map(field).collect::<Vec<_>>()})),
        };
        let mut v = json!({"name": f.name, "type": ty, "required": f.required});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    }
    let kinds = [RecordKind::GbvCase, RecordKind::TraffickingReturnee, RecordKind::NewsItem];
    Value::Object(kinds.iter().map(|k| (k.to_string(), json!({"date_field": schema::date_field(*k), "fields": schema::fields(*k).iter().map(field).collect::<Vec<_>>()}))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_apps_store_and_edits_are_checked() {
        let mut p = Phone::create_new();
        let id = p.create_record("gbv_case", r#"{"commune":"04711","detected_on":"2026-11-20","victim":{"sex":"female"}}"#).unwrap();
        p.edit_record(&id, "append", "services", r#"{"kind":"health","provided_on":"2026-11-21"}"#).unwrap();
        p.edit_record(&id, "set", "notes", r#""ghi chú""#).unwrap();
        // The schema speaks through the error: the field and what is wrong with it.
        let e = p.edit_record(&id, "set", "victim.sex", r#""robot""#).unwrap_err();
        assert_eq!((e.code, e.field.clone()), ("schema", Some(("victim.sex".to_string(), "not_in_enum"))));
        let e = p.create_record("news_item", r#"{"commune":"04711"}"#).unwrap_err();
        assert_eq!(e.field, Some(("published_on".to_string(), "missing")));
        assert_eq!(p.pending(), 1);
        // What the app writes, read back into a new phone with the stored state.
        let (writes, state_changed) = p.writes();
        assert!(state_changed);
        assert_eq!(writes.len(), 1);
        let mut q = Phone::restore(&p.state()).unwrap();
        for (_, bytes) in &writes {
            q.load(bytes.as_ref().unwrap()).unwrap();
        }
        let shown = q.show_record(&id).unwrap();
        assert_eq!(shown["notes"], "ghi chú");
        assert_eq!(shown["services"][0]["kind"], "health");
        assert_eq!(shown["sync_status"], "pending");
        assert_eq!(q.store.actor_id(), p.store.actor_id(), "the same device");
        // Deleting keeps the record, marked.
        q.edit_record(&id, "delete", "", r#""nhập trùng""#).unwrap();
        assert_eq!(q.show_record(&id).unwrap()["deleted"], true);
        // A wipe forgets everything and says which records to delete.
        q.writes();
        q.wipe();
        let (gone, _) = q.writes();
        assert_eq!(gone, vec![(id, None)]);
        assert_eq!(q.list_records().unwrap(), json!([]));
    }

    #[test]
    fn concurrent_values_are_shown_with_the_device_that_made_each() {
        let mut a = Phone::create_new();
        let id = a.create_record("news_item", r#"{"commune":"04711","published_on":"2026-11-02","title":"gốc"}"#).unwrap();
        let (writes, _) = a.writes();
        let mut b = Phone::create_new();
        b.load(writes[0].1.as_ref().unwrap()).unwrap();
        a.edit_record(&id, "set", "title", r#""của A""#).unwrap();
        b.edit_record(&id, "set", "title", r#""của B""#).unwrap();
        // B's document merged into A's (as a sync would).
        let rid: RecordId = id.parse().unwrap();
        let mut da = load_doc(rid, &a.store.docs[&rid], a.store.actor_id()).unwrap();
        let mut db = load_doc(rid, &b.store.docs[&rid], b.store.actor_id()).unwrap();
        da.merge(&mut db).unwrap();
        let meta = a.store.records[&rid].clone();
        a.put(rid, meta, &mut da);
        let shown = a.show_record(&id).unwrap();
        let values = &shown["conflicts"][0]["values"];
        assert_eq!(shown["conflicts"][0]["path"], "title");
        let mine: Vec<bool> = values.as_array().unwrap().iter().map(|v| v["this_device"].as_bool().unwrap()).collect();
        assert_eq!(mine.iter().filter(|m| **m).count(), 1, "{values}");
        assert!(values.as_array().unwrap().iter().any(|v| v["value"] == "của B" && v["device"] == b.store.actor_id().to_hex_string()));
    }

    #[test]
    fn the_schema_for_the_forms_lists_every_kind_with_its_fields() {
        let s = schema_json();
        for kind in ["gbv_case", "trafficking_returnee", "news_item"] {
            assert!(s[kind]["fields"].as_array().unwrap().iter().any(|f| f["name"] == "commune" && f["required"] == true), "{kind}");
        }
        let victim = s["gbv_case"]["fields"].as_array().unwrap().iter().find(|f| f["name"] == "victim").unwrap();
        assert_eq!(victim["type"], "map");
        assert!(victim["fields"].as_array().unwrap().iter().any(|f| f["name"] == "sex" && f["values"][0] == "female"));
    }
}
