//! Conflicts (fields with concurrent values, edits concurrent with a delete) and the key of
//! possible duplicates: computed from a record's document at each write.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_protocol::automerge::{AutoCommit, ChangeHash, ObjId, ReadDoc, Value as AmValue};
use sync_protocol::doc::{self, ConflictValue, DocError};
use sync_protocol::Record;

/// A conflict as kept in the index: the field and its competing values (actor = device).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredConflict {
    pub path: String,
    pub values: Vec<ConflictValue>,
}

/// Every conflict of a document: fields with different concurrent values (see
/// [`doc::conflicts`]) and, for a deleted record, edits made concurrently with the delete
/// (reported on `deleted`: `true` from the deleter, `false` from each concurrent editor).
pub fn detect_conflicts(doc: &mut AutoCommit) -> Result<Vec<StoredConflict>, DocError> {
    let fields = doc::conflicts(doc)?;
    Ok(with_delete_conflicts(doc, fields, true))
}

/// The conflicts of a document whose fields' conflicts are `fields` (as [`doc::conflicts`] or
/// [`doc::inspect`] found them): those, and the edits made concurrently with a delete.
/// `maybe_deleted`: false when the record is known not to be deleted (its view says so), and
/// then no delete is looked for.
pub fn with_delete_conflicts(doc: &mut AutoCommit, fields: Vec<doc::Conflict>, maybe_deleted: bool) -> Vec<StoredConflict> {
    let mut out: Vec<StoredConflict> = fields.into_iter().map(|c| StoredConflict { path: c.path, values: c.values }).collect();
    if !maybe_deleted || out.iter().any(|c| c.path == "deleted") {
        return out;
    }
    let winner = doc.get(ObjId::Root, "deleted").ok().flatten();
    let Some((AmValue::Scalar(v), op)) = winner else { return out };
    if !matches!(v.as_ref(), sync_protocol::automerge::ScalarValue::Boolean(true)) {
        return out;
    }
    let Some(del) = doc.hash_for_opid(&op) else { return out };
    let after: Vec<(ChangeHash, String, i64)> = doc
        .get_changes(&[del])
        .iter()
        .filter(|c| c.hash() != del)
        .map(|c| (c.hash(), c.actor_id().to_hex_string(), c.timestamp()))
        .collect();
    let mut editors: Vec<ConflictValue> = Vec::new();
    for (hash, actor, at) in after {
        // `hash` is concurrent with the delete when the delete is not in its history.
        let concurrent = doc.get_changes(&[hash]).iter().any(|c| c.hash() == del);
        if concurrent && !editors.iter().any(|e| e.actor == actor) {
            editors.push(ConflictValue { value: Value::Bool(false), actor, at });
        }
    }
    if !editors.is_empty() {
        let meta = doc.get_change_meta_by_hash(&del).map(|m| (m.actor.to_hex_string(), m.timestamp));
        let (actor, at) = meta.unwrap_or_default();
        let mut values = vec![ConflictValue { value: Value::Bool(true), actor, at }];
        values.extend(editors);
        out.push(StoredConflict { path: "deleted".into(), values });
    }
    out
}

/// (sex, birth year) of the person a record describes, when both are known.
pub fn duplicate_key(record: &Record) -> Option<(String, i64)> {
    let person = record.person()?;
    Some((person.sex.clone()?, person.birth_year?))
}

