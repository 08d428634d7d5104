//! The mapping between a record and its Automerge document.
//!
//! Layout (Architecture Invariant: every phone and the server build the same layout, because the
//! CRDT only merges edits that land in the same object):
//! - the root map holds `kind`, `commune` and every scalar field of the kind;
//! - nested maps (`victim`, `perpetrator`) and lists (`services`, `support`) are created empty
//!   together with the record, so later edits from different phones meet in one object instead
//!   of racing to create it;
//! - sets (`violence_types`) are maps `value -> true`, so two phones adding the same value do not
//!   produce a duplicate;
//! - an absent optional field is an absent key; setting `null` deletes the key.

use automerge::{transaction::Transactable, ActorId, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue};
use serde_json::{Map, Number, Value};

use crate::ids::RecordKind;
use crate::schema::{
    check_entry, check_scalar, check_value, field_at, fields, join, Field, FieldType, Problem,
    SchemaError, IMMUTABLE,
};

/// Errors from reading or changing a document.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("the document is not a gesync record: {0}")]
    Malformed(String),
}

static CLOCK: std::sync::OnceLock<fn() -> i64> = std::sync::OnceLock::new();

/// Sets where the time of a change comes from (Unix seconds), once, on a platform whose
/// standard library has no clock: WebAssembly in a browser, where the app's module passes the
/// browser's `Date.now`.
pub fn set_clock(clock: fn() -> i64) {
    let _ = CLOCK.set(clock);
}

/// The wall-clock time in Unix seconds (0 where there is none and none was set).
pub(crate) fn now_secs() -> i64 {
    if let Some(clock) = CLOCK.get() {
        return clock();
    }
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    {
        0
    }
}

/// Commits pending operations with the wall-clock time, which the server shows as the "when"
/// of each competing value (advisory: it is the device's clock).
fn commit(doc: &mut AutoCommit) {
    doc.commit_with(automerge::transaction::CommitOptions::default().with_time(now_secs()));
}

fn malformed(msg: impl Into<String>) -> DocError {
    DocError::Malformed(msg.into())
}

fn am(e: automerge::AutomergeError) -> DocError {
    DocError::Malformed(e.to_string())
}

fn schema(path: &str, problem: Problem) -> DocError {
    DocError::Schema(SchemaError { path: path.to_string(), problem })
}

/// Converts a validated JSON scalar into an Automerge scalar.
fn to_scalar(v: &Value) -> ScalarValue {
    match v {
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int(i),
            None => ScalarValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        _ => ScalarValue::Null,
    }
}

/// Converts an Automerge scalar into JSON.
pub fn scalar_to_json(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) => Value::Number((*i).into()),
        ScalarValue::Uint(u) => Value::Number((*u).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Counter(c) => Value::Number(i64::from(c).into()),
        ScalarValue::Timestamp(t) => Value::Number((*t).into()),
        ScalarValue::Bytes(_) | ScalarValue::Unknown { .. } | ScalarValue::Null => Value::Null,
    }
}

/// Creates the document of a new record from validated JSON. The caller chooses the actor (one
/// per device) so that the server can attribute every change to a device.
pub fn new_record(kind: RecordKind, json: &Value, actor: ActorId) -> Result<AutoCommit, DocError> {
    crate::schema::validate_new(kind, json)?;
    let mut doc = AutoCommit::new().with_actor(actor);
    doc.put(ObjId::Root, "kind", kind.as_str()).map_err(am)?;
    let map = json.as_object().cloned().unwrap_or_default();
    write_map_fields(&mut doc, &ObjId::Root, fields(kind), &map, true)?;
    if !map.contains_key("deleted") {
        doc.put(ObjId::Root, "deleted", false).map_err(am)?;
    }
    commit(&mut doc);
    Ok(doc)
}

/// Writes the given fields of `map` into the document object `obj`. With `create`, containers
/// that `map` does not mention are created empty (see the module invariant).
fn write_map_fields(
    doc: &mut AutoCommit,
    obj: &ObjId,
    schema: &[Field],
    map: &Map<String, Value>,
    create: bool,
) -> Result<(), DocError> {
    for field in schema {
        let value = map.get(field.name);
        match (&field.ty, value) {
            (FieldType::Map(sub), v) => {
                let child = match (create, existing_object(doc, obj, field.name)?) {
                    (false, Some(child)) => child,
                    _ if create || v.is_some() => {
                        doc.put_object(obj, field.name, ObjType::Map).map_err(am)?
                    }
                    _ => continue,
                };
                let empty = Map::new();
                let inner = v.and_then(Value::as_object).unwrap_or(&empty);
                write_map_fields(doc, &child, sub, inner, create)?;
            }
            (FieldType::List(sub), v) => {
                let list = match (create, existing_object(doc, obj, field.name)?) {
                    (false, Some(list)) if v.is_some() => {
                        // Replacing a whole list: remove the old entries first.
                        for i in (0..doc.length(&list)).rev() {
                            doc.delete(&list, i).map_err(am)?;
                        }
                        list
                    }
                    (false, Some(_)) => continue,
                    _ if create || v.is_some() => {
                        doc.put_object(obj, field.name, ObjType::List).map_err(am)?
                    }
                    _ => continue,
                };
                for item in v.and_then(Value::as_array).into_iter().flatten() {
                    insert_entry(doc, &list, sub, item)?;
                }
            }
            (FieldType::Set(_), v) => {
                let set = match (create, existing_object(doc, obj, field.name)?) {
                    (false, Some(set)) => set,
                    _ if create || v.is_some() => {
                        doc.put_object(obj, field.name, ObjType::Map).map_err(am)?
                    }
                    _ => continue,
                };
                if let Some(v) = v {
                    let wanted: Vec<&str> =
                        v.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    let present: Vec<String> = doc.keys(&set).collect();
                    for key in present.iter().filter(|k| !wanted.contains(&k.as_str())) {
                        doc.delete(&set, key.as_str()).map_err(am)?;
                    }
                    for w in wanted.iter().filter(|w| !present.iter().any(|p| p == *w)) {
                        doc.put(&set, *w, true).map_err(am)?;
                    }
                }
            }
            (_, Some(Value::Null)) => {
                if !create {
                    doc.delete(obj, field.name).map_err(am)?;
                }
            }
            (_, Some(v)) => doc.put(obj, field.name, to_scalar(v)).map_err(am)?,
            (_, None) => {}
        }
    }
    Ok(())
}

fn insert_entry(
    doc: &mut AutoCommit,
    list: &ObjId,
    sub: &[Field],
    item: &Value,
) -> Result<(), DocError> {
    let at = doc.length(list);
    let entry = doc.insert_object(list, at, ObjType::Map).map_err(am)?;
    let map = item.as_object().cloned().unwrap_or_default();
    write_map_fields(doc, &entry, sub, &map, true)
}

fn existing_object(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<Option<ObjId>, DocError> {
    match doc.get(obj, key).map_err(am)? {
        Some((AmValue::Object(_), id)) => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// A record's document as phones and the server store and send it: whole, with its columns
/// *not* deflated. Automerge deflates each document on its own, which finds little to share in
/// a 1 KB record; left plain, the field names, enum values and the officers' vocabulary repeat
/// across the records of a sync page, and the page's zstd compression takes it to about a
/// quarter of the deflated size (measured: 300 case records, 245,788 B deflated and 130,311 B
/// with zstd; 330,581 B plain and 56,826 B with zstd). Both forms load alike.
pub fn save_record(doc: &mut AutoCommit) -> Vec<u8> {
    doc.save_nocompress()
}

/// A record's whole form for a slow link: its changes (`save_after(&[])`) when they weigh no
/// more than its stored document of `stored_len` bytes, `None` when the stored document is the
/// lighter. Change chunks of different records compress smaller together in a page than their
/// documents do (both load to the same record); the server's page planner and a phone's push
/// both choose by this one rule.
pub fn changes_if_lighter(doc: &mut AutoCommit, stored_len: usize) -> Option<Vec<u8>> {
    Some(doc.save_after(&[])).filter(|changes| changes.len() <= stored_len)
}

/// Reads the record kind of a document (the winning value).
pub fn kind_of(doc: &AutoCommit) -> Result<RecordKind, DocError> {
    match doc.get(ObjId::Root, "kind").map_err(am)? {
        Some((AmValue::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(k) => k.parse().map_err(DocError::Schema),
            _ => Err(malformed("`kind` is not a string")),
        },
        _ => Err(malformed("no `kind`")),
    }
}

/// Every value (concurrent ones included) of a root scalar such as `commune` or `kind`.
pub fn all_root_strings(doc: &AutoCommit, key: &str) -> Result<Vec<String>, DocError> {
    Ok(doc.get_all(ObjId::Root, key).map_err(am)?.iter().map(|(v, _)| root_string(v)).collect())
}

/// A root scalar's value as text (an object as `<object>`).
fn root_string(v: &AmValue<'_>) -> String {
    match v {
        AmValue::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => s.to_string(),
            other => other.to_string(),
        },
        AmValue::Object(_) => "<object>".to_string(),
    }
}

/// Walks to the object at a dotted container path (`victim`, `services.2`).
fn object_at(doc: &AutoCommit, path: &[&str]) -> Result<Option<ObjId>, DocError> {
    let mut obj = ObjId::Root;
    for part in path {
        let next = match part.parse::<usize>() {
            Ok(i) if doc.object_type(&obj).map_err(am)? == ObjType::List => doc.get(&obj, i),
            _ => doc.get(&obj, *part),
        }
        .map_err(am)?;
        match next {
            Some((AmValue::Object(_), id)) => obj = id,
            _ => return Ok(None),
        }
    }
    Ok(Some(obj))
}

/// Sets the field at `path` (`perpetrator.counselled`, `services.0.provider`, `victim`,
/// `violence_types`) to `value`, validating it first. `null` clears an optional field.
pub fn set_path(doc: &mut AutoCommit, path: &str, value: &Value) -> Result<(), DocError> {
    let kind = kind_of(doc)?;
    let top = path.split('.').next().unwrap_or_default();
    if IMMUTABLE.contains(&top) {
        return Err(schema(path, Problem::Immutable));
    }
    let field = field_at(kind, path)?;
    check_value(path, field, value)?;
    let parts: Vec<&str> = path.split('.').collect();
    let (parent_path, name) = parts.split_at(parts.len() - 1);
    let parent = object_at(doc, parent_path)?
        .ok_or_else(|| schema(path, Problem::UnknownField))?;
    let mut one = Map::new();
    one.insert(name[0].to_string(), value.clone());
    write_map_fields(doc, &parent, std::slice::from_ref(field), &one, false)?;
    commit(doc);
    Ok(())
}

/// Resolves a conflict at `path`: removes every concurrent value, then writes `value`, in one
/// change. A plain `set_path` of a value equal to the current winner would be elided by
/// Automerge and leave the competing values in place; the delete supersedes all of them.
/// Unlike `set_path`, `deleted` may be resolved here too (edit concurrent with a delete).
pub fn resolve_path(doc: &mut AutoCommit, path: &str, value: &Value) -> Result<(), DocError> {
    let kind = kind_of(doc)?;
    let top = path.split('.').next().unwrap_or_default();
    if IMMUTABLE.contains(&top) {
        return Err(schema(path, Problem::Immutable));
    }
    let field = field_at(kind, path)?;
    if matches!(field.ty, FieldType::Map(_) | FieldType::List(_) | FieldType::Set(_)) {
        return Err(schema(path, Problem::WrongType { expected: "a single value (conflicts are on scalar fields)" }));
    }
    check_value(path, field, value)?;
    let parts: Vec<&str> = path.split('.').collect();
    let (parent_path, name) = parts.split_at(parts.len() - 1);
    let parent = object_at(doc, parent_path)?.ok_or_else(|| schema(path, Problem::UnknownField))?;
    if doc.get(&parent, name[0]).map_err(am)?.is_some() {
        doc.delete(&parent, name[0]).map_err(am)?;
    }
    if !value.is_null() {
        doc.put(&parent, name[0], to_scalar(value)).map_err(am)?;
    }
    commit(doc);
    Ok(())
}

/// Appends `value` to the list or set at `path` (`services`, `support`, `violence_types`).
pub fn append(doc: &mut AutoCommit, path: &str, value: &Value) -> Result<(), DocError> {
    let kind = kind_of(doc)?;
    let field = field_at(kind, path)?;
    let parts: Vec<&str> = path.split('.').collect();
    match &field.ty {
        FieldType::List(sub) => {
            let at = join(path, &object_at(doc, &parts)?.map(|l| doc.length(&l)).unwrap_or(0).to_string());
            check_entry(&at, sub, value)?;
            let list = match object_at(doc, &parts)? {
                Some(list) => list,
                None => {
                    let (parent_path, name) = parts.split_at(parts.len() - 1);
                    let parent = object_at(doc, parent_path)?
                        .ok_or_else(|| schema(path, Problem::UnknownField))?;
                    doc.put_object(&parent, name[0], ObjType::List).map_err(am)?
                }
            };
            insert_entry(doc, &list, sub, value)?;
        }
        FieldType::Set(allowed) => {
            check_scalar(path, &FieldType::Enum(allowed), value)?;
            let set = object_at(doc, &parts)?.ok_or_else(|| schema(path, Problem::UnknownField))?;
            doc.put(&set, value.as_str().unwrap_or_default(), true).map_err(am)?;
        }
        _ => return Err(schema(path, Problem::WrongType { expected: "a list (services, support) or set (violence_types)" })),
    }
    commit(doc);
    Ok(())
}

/// Marks a record deleted. Records are never physically removed.
pub fn delete_record(doc: &mut AutoCommit, reason: &str) -> Result<(), DocError> {
    check_scalar("deleted_reason", &FieldType::Text, &Value::String(reason.to_string()))?;
    doc.put(ObjId::Root, "deleted", true).map_err(am)?;
    doc.put(ObjId::Root, "deleted_reason", reason).map_err(am)?;
    commit(doc);
    Ok(())
}

/// The JSON view of a document: the winning value of every field, in the shape of `domain.md`
/// (sets as sorted arrays). The caller adds `id` and, where wanted, `conflicts`. Values of the
/// wrong shape are left out, not refused ([`check_doc`] refuses them).
pub fn view(doc: &AutoCommit) -> Result<Value, DocError> {
    let (kind, _, view) = Walk { doc, check: false, view: true, conflicts: None }.root()?;
    Ok(with_kind(view, kind))
}

/// One field that holds more than one concurrent value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// Dotted path, with list indices as they stand in the current document.
    pub path: String,
    pub values: Vec<ConflictValue>,
}

/// One of the competing values, with the Automerge op that wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConflictValue {
    pub value: Value,
    /// Hex actor id of the device that wrote the value.
    pub actor: String,
    /// Unix seconds of the change that wrote the value (advisory: the phone's clock).
    pub at: i64,
}

/// Every field of the document that holds more than one *different* concurrent value,
/// including fields inside list entries. Concurrent list appends and set additions are merges,
/// not conflicts, and so are not reported.
pub fn conflicts(doc: &mut AutoCommit) -> Result<Vec<Conflict>, DocError> {
    let mut walk = Walk { doc: &*doc, check: false, view: false, conflicts: Some(Vec::new()) };
    walk.root()?;
    let raw = walk.conflicts.take().unwrap_or_default();
    Ok(timed_conflicts(doc, raw))
}

type RawConflict = (String, Vec<(Value, ObjId)>);

fn id_string(id: &ObjId) -> String {
    match id {
        ObjId::Root => "root".into(),
        ObjId::Id(ctr, actor, _) => format!("{ctr}@{}", actor.to_hex_string()),
    }
}

/// Checks a merged document against the schema, looking at every concurrent value of every
/// field (not only the winner) and at the shape of every container, and refuses keys the
/// schema does not know. The server calls this on every pushed document before storing it
/// ([`inspect`], which reads its view and conflicts in the same walk).
pub fn check_doc(doc: &AutoCommit) -> Result<RecordKind, DocError> {
    Ok(Walk { doc, check: true, view: false, conflicts: None }.root()?.0)
}

/// What the server reads of a merged document before storing it: its kind, its JSON view (as
/// [`view`] gives it) and the fields with different concurrent values (as [`conflicts`] gives
/// them), after the schema's checks (as [`check_doc`] makes them).
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    pub kind: RecordKind,
    /// Every value of the root's `commune`, concurrent ones included (as [`all_root_strings`]).
    pub communes: Vec<String>,
    pub view: Value,
    pub conflicts: Vec<Conflict>,
}

/// [`check_doc`], [`view`] and [`conflicts`] in one walk over the document: each object's keys
/// are listed once and each concurrent field read once for the three. The server runs it on
/// every pushed record (three walks cost it about a tenth of its time in `load`). An error is
/// what [`check_doc`] would refuse.
pub fn inspect(doc: &mut AutoCommit) -> Result<Inspected, DocError> {
    let mut walk = Walk { doc: &*doc, check: true, view: true, conflicts: Some(Vec::new()) };
    let (kind, communes, view) = walk.root()?;
    let raw = walk.conflicts.take().unwrap_or_default();
    Ok(Inspected { kind, communes, view: with_kind(view, kind), conflicts: timed_conflicts(doc, raw) })
}

/// The root's view with the record's kind in it (`kind` is no field of the kind's schema).
fn with_kind(mut view: Map<String, Value>, kind: RecordKind) -> Value {
    view.insert("kind".into(), Value::String(kind.as_str().into()));
    Value::Object(view)
}

/// Each raw conflict's values with the device and the time of the change that wrote them,
/// ordered by device.
fn timed_conflicts(doc: &mut AutoCommit, raw: Vec<RawConflict>) -> Vec<Conflict> {
    let mut found = Vec::with_capacity(raw.len());
    for (path, values) in raw {
        let mut out: Vec<ConflictValue> = Vec::new();
        for (value, id) in values {
            let at = doc
                .hash_for_opid(&id)
                .and_then(|h| doc.get_change_meta_by_hash(&h).map(|m| m.timestamp))
                .unwrap_or(0);
            let actor = match &id {
                ObjId::Id(_, actor, _) => actor.to_hex_string(),
                ObjId::Root => String::new(),
            };
            out.push(ConflictValue { value, actor, at });
        }
        out.sort_by(|a, b| a.actor.cmp(&b.actor));
        found.push(Conflict { path, values: out });
    }
    found
}

/// One walk over a record document, gathering what is asked of it: the schema's checks
/// (`check`: every concurrent value of every field, every container's shape, no unknown key),
/// the view (`view`: the winning values) and the conflicts (`conflicts`: fields with different
/// concurrent values, inside winning objects only).
struct Walk<'d> {
    doc: &'d AutoCommit,
    check: bool,
    view: bool,
    conflicts: Option<Vec<RawConflict>>,
}

/// One key of a map object as listed: its winning value and op, and whether it holds
/// concurrent values.
struct Key {
    name: String,
    value: AmValue<'static>,
    id: ObjId,
    conflict: bool,
}

impl Walk<'_> {
    /// The root: the record's kind (checked: one value, however many devices wrote it; else
    /// the winning value), every value of `commune`, and the root's view.
    fn root(&mut self) -> Result<(RecordKind, Vec<String>, Map<String, Value>), DocError> {
        let keys = self.keys(&ObjId::Root);
        let kind = if self.check {
            let kinds = self.root_strings(&keys, "kind")?;
            if kinds.len() != 1 {
                return Err(schema("kind", Problem::Immutable));
            }
            kinds[0].parse()?
        } else {
            match keys.iter().find(|k| k.name == "kind").map(|k| &k.value) {
                Some(AmValue::Scalar(s)) => match s.as_ref() {
                    ScalarValue::Str(k) => k.parse().map_err(DocError::Schema)?,
                    _ => return Err(malformed("`kind` is not a string")),
                },
                _ => return Err(malformed("no `kind`")),
            }
        };
        let communes = self.root_strings(&keys, crate::schema::name::COMMUNE)?;
        let view = self.fields(&ObjId::Root, "", fields(kind), &["kind"], true, keys)?;
        Ok((kind, communes, view))
    }

    /// Every value of the root's key `name` (as [`all_root_strings`]), from the root's `keys`:
    /// looked up again only when concurrent values are there.
    fn root_strings(&self, keys: &[Key], name: &str) -> Result<Vec<String>, DocError> {
        match keys.iter().find(|k| k.name == name) {
            None => Ok(Vec::new()),
            Some(k) if k.conflict => all_root_strings(self.doc, name),
            Some(k) => Ok(vec![root_string(&k.value)]),
        }
    }

    /// The keys of map object `obj`, in one pass.
    fn keys(&self, obj: &ObjId) -> Vec<Key> {
        self.doc
            .map_range(obj, ..)
            .map(|item| {
                let id = item.id();
                Key { name: item.key.into_owned(), value: AmValue::from(item.value), id, conflict: item.conflict }
            })
            .collect()
    }

    /// The map object `obj` whose fields are `shape` (and `extra`, keys the caller reads):
    /// checked, and, when it is a winning object (`winner`), its view and conflicts.
    fn map(&mut self, obj: &ObjId, prefix: &str, shape: &[Field], extra: &[&str], winner: bool) -> Result<Map<String, Value>, DocError> {
        if self.check && self.doc.object_type(obj).map_err(am)? != ObjType::Map {
            return Err(schema(prefix, Problem::WrongType { expected: "an object" }));
        }
        let keys = self.keys(obj);
        self.fields(obj, prefix, shape, extra, winner, keys)
    }

    /// [`Walk::map`] of an object whose `keys` are listed.
    fn fields(&mut self, obj: &ObjId, prefix: &str, shape: &[Field], extra: &[&str], winner: bool, keys: Vec<Key>) -> Result<Map<String, Value>, DocError> {
        let doc = self.doc;
        if self.check {
            if let Some(unknown) = keys.iter().find(|k| !shape.iter().any(|f| f.name == k.name) && !extra.contains(&k.name.as_str())) {
                return Err(schema(&join(prefix, &unknown.name), Problem::UnknownField));
            }
        }
        let mut view = Map::new();
        let gathers = winner && (self.view || self.conflicts.is_some());
        for field in shape {
            let path = join(prefix, field.name);
            let Some(key) = keys.iter().find(|k| k.name == field.name) else {
                if self.check && field.required {
                    return Err(schema(&path, Problem::Missing));
                }
                continue;
            };
            // Every concurrent value is checked, not only the winner; the view and the
            // conflicts read only the winner.
            let all = if key.conflict && (self.check || (winner && self.conflicts.is_some())) {
                doc.get_all(obj, field.name).map_err(am)?
            } else {
                vec![(key.value.clone(), key.id.clone())]
            };
            if winner && key.conflict {
                if let Some(found) = &mut self.conflicts {
                    let distinct = distinct_values(&all);
                    if distinct.len() > 1 {
                        found.push((path.clone(), distinct));
                    }
                }
            }
            for (value, id) in all {
                let is_winner = gathers && id == key.id;
                if !self.check && !is_winner {
                    continue;
                }
                if let Some(json) = self.field(field, &path, value, &id, is_winner)? {
                    if is_winner && self.view {
                        view.insert(field.name.to_string(), json);
                    }
                }
            }
        }
        Ok(view)
    }

    /// One value of `field`: checked, and its view when it is the winning value (`winner`).
    /// `None`: no view (a value of the wrong shape, which only a walk that does not check
    /// meets, or a value not viewed).
    fn field(&mut self, field: &Field, path: &str, value: AmValue<'_>, id: &ObjId, winner: bool) -> Result<Option<Value>, DocError> {
        let doc = self.doc;
        let wrong = |expected: &'static str| if self.check { Err(schema(path, Problem::WrongType { expected })) } else { Ok(None) };
        match (&field.ty, value) {
            (FieldType::Map(sub), AmValue::Object(ObjType::Map)) => Ok(Some(Value::Object(self.map(id, path, sub, &[], winner)?))),
            (FieldType::List(sub), AmValue::Object(ObjType::List)) => Ok(Some(Value::Array(self.list(id, path, sub, winner)?))),
            (FieldType::Set(allowed), AmValue::Object(ObjType::Map)) => {
                let members = self.keys(id);
                if self.check {
                    let is_true = |v: &AmValue<'_>| matches!(v, AmValue::Scalar(s) if matches!(s.as_ref(), ScalarValue::Boolean(true)));
                    for member in &members {
                        check_scalar(path, &FieldType::Enum(allowed), &Value::String(member.name.clone()))?;
                        let all_true = if member.conflict {
                            doc.get_all(id, member.name.as_str()).map_err(am)?.iter().all(|(v, _)| is_true(v))
                        } else {
                            is_true(&member.value)
                        };
                        if !all_true {
                            return Err(schema(path, Problem::WrongType { expected: "a set of strings" }));
                        }
                    }
                }
                // Listed in key order already.
                Ok((winner && self.view).then(|| Value::Array(members.into_iter().map(|m| Value::String(m.name)).collect())))
            }
            (FieldType::Map(_) | FieldType::List(_) | FieldType::Set(_), _) if self.check => wrong("a container"),
            // Unchecked, a scalar where a container belongs is viewed as it is.
            (ty, AmValue::Scalar(s)) => {
                let json = scalar_to_json(s.as_ref());
                if self.check && !(json.is_null() && !field.required) {
                    check_scalar(path, ty, &json)?;
                }
                Ok(Some(json))
            }
            (_, AmValue::Object(_)) => wrong("a scalar value"),
        }
    }

    /// The list object `list` whose entries are maps of fields `shape`: every concurrent
    /// entry checked; the winning entries viewed when the list is the winning value.
    fn list(&mut self, list: &ObjId, path: &str, shape: &[Field], winner: bool) -> Result<Vec<Value>, DocError> {
        let doc = self.doc;
        let entries: Vec<(usize, bool, AmValue<'static>, ObjId)> =
            doc.list_range(list, ..).map(|e| (e.index, e.conflict, AmValue::from(e.value.clone()), e.id())).collect();
        let mut items = Vec::new();
        for (i, conflict, value, entry_id) in entries {
            let all = if conflict && self.check { doc.get_all(list, i).map_err(am)? } else { vec![(value, entry_id.clone())] };
            let p = join(path, &i.to_string());
            for (entry, id) in all {
                let is_winner = winner && id == entry_id;
                match entry {
                    AmValue::Object(ObjType::Map) if self.check || is_winner => {
                        let viewed = self.map(&id, &p, shape, &[], is_winner)?;
                        if is_winner {
                            items.push(Value::Object(viewed));
                        }
                    }
                    AmValue::Object(ObjType::Map) => {}
                    _ if self.check => return Err(schema(&p, Problem::WrongType { expected: "an object" })),
                    _ => {}
                }
            }
        }
        Ok(items)
    }
}

/// The different values among concurrent ones (an object shown as `<object id>`), each with
/// the first op that wrote it.
fn distinct_values(all: &[(AmValue<'_>, ObjId)]) -> Vec<(Value, ObjId)> {
    let mut distinct: Vec<(Value, ObjId)> = Vec::new();
    for (value, id) in all {
        let json = match value {
            AmValue::Scalar(s) => scalar_to_json(s.as_ref()),
            AmValue::Object(_) => Value::String(format!("<object {}>", id_string(id))),
        };
        if !distinct.iter().any(|(v, _)| *v == json) {
            distinct.push((json, id.clone()));
        }
    }
    distinct
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn actor(n: u8) -> ActorId {
        ActorId::from([n; 16])
    }

    fn case() -> Value {
        json!({"commune": "04123", "detected_on": "2025-03-01", "victim": {"sex": "female"},
               "violence_types": ["physical"]})
    }

    #[test]
    fn new_record_round_trips_through_the_view() {
        let mut doc = new_record(RecordKind::GbvCase, &case(), actor(1)).unwrap();
        let v = view(&doc).unwrap();
        assert_eq!(v["kind"], "gbv_case");
        assert_eq!(v["victim"]["sex"], "female");
        assert_eq!(v["services"], json!([]));
        assert_eq!(v["perpetrator"], json!({}));
        assert_eq!(v["violence_types"], json!(["physical"]));
        assert_eq!(v["deleted"], false);
        check_doc(&doc).unwrap();
        let loaded = AutoCommit::load(&doc.save()).unwrap();
        assert_eq!(view(&loaded).unwrap(), v);
    }

    #[test]
    fn set_validates_and_refuses_immutable_fields() {
        let mut doc = new_record(RecordKind::GbvCase, &case(), actor(1)).unwrap();
        set_path(&mut doc, "perpetrator.counselled", &json!(true)).unwrap();
        assert_eq!(view(&doc).unwrap()["perpetrator"]["counselled"], true);
        let e = set_path(&mut doc, "commune", &json!("04124")).unwrap_err();
        assert_eq!(e.to_string(), "field `commune` is fixed when the record is created");
        let e = set_path(&mut doc, "victim.sex", &json!("f")).unwrap_err();
        assert!(e.to_string().contains("is not one of"));
        set_path(&mut doc, "victim.sex", &Value::Null).unwrap();
        assert!(view(&doc).unwrap()["victim"].get("sex").is_none());
        set_path(&mut doc, "violence_types", &json!(["sexual", "economic"])).unwrap();
        assert_eq!(view(&doc).unwrap()["violence_types"], json!(["economic", "sexual"]));
    }

    #[test]
    fn concurrent_appends_both_survive_and_are_not_conflicts() {
        let mut a = new_record(RecordKind::GbvCase, &case(), actor(1)).unwrap();
        let mut b = AutoCommit::load(&a.save()).unwrap().with_actor(actor(2));
        append(&mut a, "services", &json!({"kind": "health"})).unwrap();
        append(&mut b, "services", &json!({"kind": "legal_aid"})).unwrap();
        append(&mut a, "violence_types", &json!("sexual")).unwrap();
        append(&mut b, "violence_types", &json!("sexual")).unwrap();
        a.merge(&mut b).unwrap();
        let v = view(&a).unwrap();
        assert_eq!(v["services"].as_array().unwrap().len(), 2);
        assert_eq!(v["violence_types"], json!(["physical", "sexual"]));
        assert!(conflicts(&mut a).unwrap().is_empty());
    }

    #[test]
    fn concurrent_sets_of_one_field_are_a_conflict_with_both_values() {
        let mut a = new_record(RecordKind::GbvCase, &case(), actor(1)).unwrap();
        append(&mut a, "services", &json!({"kind": "health"})).unwrap();
        let mut b = AutoCommit::load(&a.save()).unwrap().with_actor(actor(2));
        set_path(&mut a, "victim.sex", &json!("male")).unwrap();
        set_path(&mut b, "victim.sex", &json!("other")).unwrap();
        set_path(&mut a, "services.0.provider", &json!("TYT")).unwrap();
        set_path(&mut b, "services.0.provider", &json!("Công an")).unwrap();
        // The same value twice is not a conflict.
        set_path(&mut a, "status", &json!("closed")).unwrap();
        set_path(&mut b, "status", &json!("closed")).unwrap();
        a.merge(&mut b).unwrap();
        let c = conflicts(&mut a).unwrap();
        let paths: Vec<&str> = c.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["victim.sex", "services.0.provider"]);
        let values: Vec<&Value> = c[0].values.iter().map(|v| &v.value).collect();
        assert_eq!(values, [&json!("male"), &json!("other")]);
        assert_eq!(c[0].values[0].actor, actor(1).to_hex_string());
    }

    #[test]
    fn resolving_keeps_one_value_even_when_it_equals_the_winner() {
        let mut a = new_record(RecordKind::GbvCase, &case(), actor(1)).unwrap();
        let mut b = AutoCommit::load(&a.save()).unwrap().with_actor(actor(2));
        set_path(&mut a, "victim.sex", &json!("male")).unwrap();
        set_path(&mut b, "victim.sex", &json!("other")).unwrap();
        a.merge(&mut b).unwrap();
        let winner = view(&a).unwrap()["victim"]["sex"].clone();
        let mut r = a.fork().with_actor(actor(3));
        resolve_path(&mut r, "victim.sex", &winner).unwrap();
        assert!(conflicts(&mut r).unwrap().is_empty());
        assert_eq!(view(&r).unwrap()["victim"]["sex"], winner);
        // Required fields can be resolved too, and bad values are refused.
        resolve_path(&mut r, "detected_on", &json!("2025-01-01")).unwrap();
        assert!(resolve_path(&mut r, "detected_on", &json!("x")).is_err());
        assert!(resolve_path(&mut r, "commune", &json!("04124")).is_err());
    }

    #[test]
    fn check_doc_refuses_unknown_keys_and_bad_values_written_by_a_foreign_client() {
        let mut doc = new_record(RecordKind::NewsItem, &json!({"commune": "04123", "published_on": "2025-01-02"}), actor(1)).unwrap();
        check_doc(&doc).unwrap();
        let mut bad = doc.fork();
        bad.put(ObjId::Root, "secret", "x").unwrap();
        assert_eq!(check_doc(&bad).unwrap_err().to_string(), "unknown field `secret`");
        let mut bad = doc.fork();
        bad.put(ObjId::Root, "published_on", 5).unwrap();
        assert!(check_doc(&bad).unwrap_err().to_string().contains("published_on"));
        let mut other = AutoCommit::load(&doc.save()).unwrap().with_actor(actor(2));
        other.put(ObjId::Root, "kind", "gbv_case").unwrap();
        doc.merge(&mut other).unwrap();
        assert!(check_doc(&doc).is_err());
    }
}
