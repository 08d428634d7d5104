//! The record schema of `domain.md`, as data, and the validator that turns every mistake into a
//! precise error with the path of the offending field.
//!
//! The schema is a static table rather than serde structs because the same table drives three
//! things that must never disagree: validation of JSON from a phone, the layout of the Automerge
//! document (which fields are maps, lists or sets), and validation of merged documents on the
//! server, where every concurrent value is checked, not only the winner.

use std::fmt;

use serde_json::{Map, Value};

use crate::ids::RecordKind;

/// The type of one field.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    /// Free text (UTF-8, at most [`MAX_TEXT_LEN`] bytes).
    Text,
    /// A calendar date `YYYY-MM-DD`.
    Date,
    /// A whole number within an inclusive range.
    Int { min: i64, max: i64 },
    Bool,
    /// One of a fixed list of strings.
    Enum(&'static [&'static str]),
    /// A set of strings from a fixed list. Stored in the document as a map `value -> true` so that
    /// two phones adding the same value concurrently do not produce a duplicate.
    Set(&'static [&'static str]),
    /// An org-unit code (digits). Only `commune` has this type; it is fixed at creation.
    OrgUnit,
    /// A nested map with its own fields. Created empty with the record, so that concurrent edits
    /// of its fields by two phones land in the same Automerge object.
    Map(&'static [Field]),
    /// A list of entries, each a map with the given fields. Concurrent appends both survive.
    List(&'static [Field]),
}

/// One field of a record or of a nested map.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
}

/// Longest accepted text value, in bytes: generous for notes, small enough that one record cannot
/// fill a sync page.
pub const MAX_TEXT_LEN: usize = 8 * 1024;

const fn f(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, required: false }
}
const fn req(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, required: true }
}

/// The names of the fields that code reads (the figures, review, the record metadata), one
/// constant each: the tables below and the typed view ([`crate::record`]) both use them, so a
/// rename is one edit, and a constant removed fails to compile wherever it is read.
pub mod name {
    pub const COMMUNE: &str = "commune";
    pub const DELETED: &str = "deleted";
    pub const DETECTED_ON: &str = "detected_on";
    pub const IDENTIFIED_ON: &str = "identified_on";
    pub const PUBLISHED_ON: &str = "published_on";
    pub const VICTIM: &str = "victim";
    pub const SEX: &str = "sex";
    pub const BIRTH_YEAR: &str = "birth_year";
    pub const ETHNIC_MINORITY: &str = "ethnic_minority";
    pub const SERVICES: &str = "services";
    pub const PERPETRATOR: &str = "perpetrator";
    pub const DETECTED: &str = "detected";
    pub const PROSECUTED: &str = "prosecuted";
    pub const COUNSELLED: &str = "counselled";
    pub const NEEDS_SUPPORT: &str = "needs_support";
    pub const SUPPORT: &str = "support";
}

pub const SEX: &[&str] = &["female", "male", "other", "unknown"];
const BIRTH_YEAR: FieldType = FieldType::Int { min: 1900, max: 2100 };

const VICTIM: &[Field] = &[
    f(name::SEX, FieldType::Enum(SEX)),
    f(name::BIRTH_YEAR, BIRTH_YEAR),
    f(name::ETHNIC_MINORITY, FieldType::Bool),
    f("disability", FieldType::Bool),
];
pub const GBV_SERVICE_KINDS: &[&str] =
    &["health", "psychosocial", "legal_aid", "safe_shelter", "police_justice", "social_assistance"];
const GBV_SERVICE: &[Field] = &[
    req("kind", FieldType::Enum(GBV_SERVICE_KINDS)),
    f("provided_on", FieldType::Date),
    f("provider", FieldType::Text),
];
const PERPETRATOR: &[Field] = &[
    f(name::DETECTED, FieldType::Bool),
    f(name::SEX, FieldType::Enum(SEX)),
    f(name::PROSECUTED, FieldType::Bool),
    f(name::COUNSELLED, FieldType::Bool),
    f("counselled_on", FieldType::Date),
];
const GBV_CASE: &[Field] = &[
    req(name::COMMUNE, FieldType::OrgUnit),
    req(name::DETECTED_ON, FieldType::Date),
    f("setting", FieldType::Enum(&["domestic", "other_gbv"])),
    f("violence_types", FieldType::Set(&["physical", "psychological", "sexual", "economic"])),
    f(name::VICTIM, FieldType::Map(VICTIM)),
    f(name::SERVICES, FieldType::List(GBV_SERVICE)),
    f(name::PERPETRATOR, FieldType::Map(PERPETRATOR)),
    f("status", FieldType::Enum(&["open", "closed"])),
    f("notes", FieldType::Text),
    f(name::DELETED, FieldType::Bool),
    f("deleted_reason", FieldType::Text),
];

pub const RETURNEE_SUPPORT_KINDS: &[&str] = &[
    "essential_needs",
    "health",
    "psychological",
    "legal_aid",
    "education_vocational",
    "livelihood",
    "safe_shelter",
];
const RETURNEE_SUPPORT: &[Field] =
    &[req("kind", FieldType::Enum(RETURNEE_SUPPORT_KINDS)), f("provided_on", FieldType::Date)];
const TRAFFICKING_RETURNEE: &[Field] = &[
    req(name::COMMUNE, FieldType::OrgUnit),
    req(name::IDENTIFIED_ON, FieldType::Date),
    f(name::SEX, FieldType::Enum(SEX)),
    f(name::BIRTH_YEAR, BIRTH_YEAR),
    f(name::NEEDS_SUPPORT, FieldType::Bool),
    f(name::SUPPORT, FieldType::List(RETURNEE_SUPPORT)),
    f("reintegrated", FieldType::Bool),
    f(name::DELETED, FieldType::Bool),
    f("deleted_reason", FieldType::Text),
];

const NEWS_ITEM: &[Field] = &[
    req(name::COMMUNE, FieldType::OrgUnit),
    req(name::PUBLISHED_ON, FieldType::Date),
    f(
        "channel",
        FieldType::Enum(&["loudspeaker", "commune_website", "bulletin_board", "social_media", "other"]),
    ),
    f("title", FieldType::Text),
    f(name::DELETED, FieldType::Bool),
    f("deleted_reason", FieldType::Text),
];

/// The top-level fields of a record kind (excluding `id` and `kind`, which the document carries
/// separately).
pub fn fields(kind: RecordKind) -> &'static [Field] {
    match kind {
        RecordKind::GbvCase => GBV_CASE,
        RecordKind::TraffickingReturnee => TRAFFICKING_RETURNEE,
        RecordKind::NewsItem => NEWS_ITEM,
    }
}

/// The name of the date field that places a record in a period.
pub fn date_field(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::GbvCase => name::DETECTED_ON,
        RecordKind::TraffickingReturnee => name::IDENTIFIED_ON,
        RecordKind::NewsItem => name::PUBLISHED_ON,
    }
}

/// Fields that are fixed when a record is created.
pub const IMMUTABLE: &[&str] = &["commune", "kind", "id"];

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    UnknownField,
    Missing,
    WrongType { expected: &'static str },
    NotInEnum { value: String, allowed: &'static [&'static str] },
    BadDate { value: String },
    OutOfRange { value: i64, min: i64, max: i64 },
    TooLong { len: usize },
    Immutable,
    BadOrgUnit { value: String },
    UnknownKind { value: String },
}

impl Problem {
    /// A stable name for drivers in other languages (the app, Kotlin), to switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Problem::UnknownField => "unknown_field",
            Problem::Missing => "missing",
            Problem::WrongType { .. } => "wrong_type",
            Problem::NotInEnum { .. } => "not_in_enum",
            Problem::BadDate { .. } => "bad_date",
            Problem::OutOfRange { .. } => "out_of_range",
            Problem::TooLong { .. } => "too_long",
            Problem::Immutable => "immutable",
            Problem::BadOrgUnit { .. } => "bad_org_unit",
            Problem::UnknownKind { .. } => "unknown_kind",
        }
    }
}

/// A validation error: the dotted path of the field (`victim.sex`, `services.1.kind`) and what
/// is wrong with it. Its `Display` is the one-line message shown to officers and API callers.
/// It never includes free-text values, which may be sensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub path: String,
    pub problem: Problem,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        match &self.problem {
            Problem::UnknownField => write!(fm, "unknown field `{p}`"),
            Problem::Missing => write!(fm, "missing required field `{p}`"),
            Problem::WrongType { expected } => write!(fm, "field `{p}` must be {expected}"),
            Problem::NotInEnum { value, allowed } => {
                write!(fm, "field `{p}`: `{value}` is not one of {}", allowed.join(", "))
            }
            Problem::BadDate { value } => {
                write!(fm, "field `{p}`: `{value}` is not a date in the form YYYY-MM-DD")
            }
            Problem::OutOfRange { value, min, max } => {
                write!(fm, "field `{p}`: {value} is outside {min}..={max}")
            }
            Problem::TooLong { len } => {
                write!(fm, "field `{p}` is {len} bytes long, more than {MAX_TEXT_LEN}")
            }
            Problem::Immutable => write!(fm, "field `{p}` is fixed when the record is created"),
            Problem::BadOrgUnit { value } => {
                write!(fm, "field `{p}`: `{value}` is not an org-unit code (2 to 12 digits)")
            }
            Problem::UnknownKind { value } => write!(
                fm,
                "unknown record kind `{value}`: use gbv_case, trafficking_returnee or news_item"
            ),
        }
    }
}

impl std::error::Error for SchemaError {}

fn err(path: &str, problem: Problem) -> SchemaError {
    SchemaError { path: path.to_string(), problem }
}

pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// True when `s` is a valid `YYYY-MM-DD` calendar date.
pub fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// True when `s` looks like an org-unit code: GSO codes are 2 (province), 3 (district) or 5
/// (commune) digits; we accept 2 to 12 so that reorganised trees can add levels.
pub fn is_org_unit_code(s: &str) -> bool {
    (2..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Validates one scalar (non-container) value against its type. `Null` is handled by callers.
pub fn check_scalar(path: &str, ty: &FieldType, value: &Value) -> Result<(), SchemaError> {
    match ty {
        FieldType::Text => match value {
            Value::String(s) if s.len() <= MAX_TEXT_LEN => Ok(()),
            Value::String(s) => Err(err(path, Problem::TooLong { len: s.len() })),
            _ => Err(err(path, Problem::WrongType { expected: "a string" })),
        },
        FieldType::Date => match value {
            Value::String(s) if is_date(s) => Ok(()),
            Value::String(s) => Err(err(path, Problem::BadDate { value: truncate(s) })),
            _ => Err(err(path, Problem::WrongType { expected: "a date string YYYY-MM-DD" })),
        },
        FieldType::Int { min, max } => match value.as_i64() {
            Some(v) if (*min..=*max).contains(&v) => Ok(()),
            Some(v) => Err(err(path, Problem::OutOfRange { value: v, min: *min, max: *max })),
            None => Err(err(path, Problem::WrongType { expected: "a whole number" })),
        },
        FieldType::Bool => match value {
            Value::Bool(_) => Ok(()),
            _ => Err(err(path, Problem::WrongType { expected: "true or false" })),
        },
        FieldType::Enum(allowed) => match value {
            Value::String(s) if allowed.contains(&s.as_str()) => Ok(()),
            Value::String(s) => {
                Err(err(path, Problem::NotInEnum { value: truncate(s), allowed }))
            }
            _ => Err(err(path, Problem::WrongType { expected: "a string" })),
        },
        FieldType::OrgUnit => match value {
            Value::String(s) if is_org_unit_code(s) => Ok(()),
            Value::String(s) => Err(err(path, Problem::BadOrgUnit { value: truncate(s) })),
            _ => Err(err(path, Problem::WrongType { expected: "an org-unit code string" })),
        },
        FieldType::Set(_) | FieldType::Map(_) | FieldType::List(_) => {
            unreachable!("check_scalar is only called for scalar field types")
        }
    }
}

/// Enum values and dates are short; anything else a caller typed is cut so that an error message
/// never carries a long (possibly sensitive) value.
fn truncate(s: &str) -> String {
    if s.chars().count() <= 24 {
        s.to_string()
    } else {
        let cut: String = s.chars().take(24).collect();
        format!("{cut}…")
    }
}

/// Validates a value for a field of any type at `path`. `null` clears an optional field.
pub fn check_value(path: &str, field: &Field, value: &Value) -> Result<(), SchemaError> {
    if value.is_null() {
        return if field.required { Err(err(path, Problem::Missing)) } else { Ok(()) };
    }
    match &field.ty {
        FieldType::Set(allowed) => {
            let Value::Array(items) = value else {
                return Err(err(path, Problem::WrongType { expected: "a list of strings" }));
            };
            for (i, item) in items.iter().enumerate() {
                check_scalar(&join(path, &i.to_string()), &FieldType::Enum(allowed), item)?;
            }
            Ok(())
        }
        FieldType::Map(sub) => {
            let Value::Object(map) = value else {
                return Err(err(path, Problem::WrongType { expected: "an object" }));
            };
            check_map(path, sub, map)
        }
        FieldType::List(sub) => {
            let Value::Array(items) = value else {
                return Err(err(path, Problem::WrongType { expected: "a list of objects" }));
            };
            for (i, item) in items.iter().enumerate() {
                check_entry(&join(path, &i.to_string()), sub, item)?;
            }
            Ok(())
        }
        ty => check_scalar(path, ty, value),
    }
}

/// Validates one list entry (an object with the entry fields).
pub fn check_entry(path: &str, sub: &[Field], item: &Value) -> Result<(), SchemaError> {
    let Value::Object(map) = item else {
        return Err(err(path, Problem::WrongType { expected: "an object" }));
    };
    check_map(path, sub, map)
}

fn check_map(path: &str, fields: &[Field], map: &Map<String, Value>) -> Result<(), SchemaError> {
    // Unknown fields first, in key order, so the message is deterministic.
    for key in map.keys() {
        if !fields.iter().any(|f| f.name == key) {
            return Err(err(&join(path, key), Problem::UnknownField));
        }
    }
    for field in fields {
        let p = join(path, field.name);
        match map.get(field.name) {
            None if field.required => return Err(err(&p, Problem::Missing)),
            None => {}
            Some(v) => check_value(&p, field, v)?,
        }
    }
    Ok(())
}

/// Validates a whole new record as a phone submits it: `{"commune": ..., "detected_on": ...}`.
/// `id` and `kind` may be present (they are ignored if they match what the caller says).
pub fn validate_new(kind: RecordKind, json: &Value) -> Result<(), SchemaError> {
    let Value::Object(map) = json else {
        return Err(err("", Problem::WrongType { expected: "a JSON object" }));
    };
    let mut rest = map.clone();
    if let Some(k) = rest.remove("kind") {
        if k.as_str() != Some(kind.as_str()) {
            return Err(err("kind", Problem::Immutable));
        }
    }
    rest.remove("id");
    check_map("", fields(kind), &rest)
}

/// Finds the schema field at a dotted path such as `victim.sex`, `services.2.kind` or `services`.
/// Returns the field and whether the path goes through a list index.
pub fn field_at(kind: RecordKind, path: &str) -> Result<&'static Field, SchemaError> {
    let unknown = || err(path, Problem::UnknownField);
    let mut fields_here: &'static [Field] = fields(kind);
    let mut parts = path.split('.').peekable();
    loop {
        let name = parts.next().ok_or_else(unknown)?;
        let field = fields_here.iter().find(|f| f.name == name).ok_or_else(unknown)?;
        if parts.peek().is_none() {
            return Ok(field);
        }
        match &field.ty {
            FieldType::Map(sub) => fields_here = sub,
            FieldType::List(sub) => {
                let index = parts.next().ok_or_else(unknown)?;
                if index.parse::<usize>().is_err() {
                    return Err(unknown());
                }
                if parts.peek().is_none() {
                    // The entry itself: a synthetic field would be needed; callers handle
                    // whole-entry paths through `entry_fields_at`.
                    return Err(unknown());
                }
                fields_here = sub;
            }
            _ => return Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gbv() -> Value {
        json!({
            "commune": "04123", "detected_on": "2025-03-01", "setting": "domestic",
            "violence_types": ["physical"],
            "victim": {"sex": "female", "birth_year": 1990, "ethnic_minority": true},
            "services": [{"kind": "health", "provided_on": "2025-03-02", "provider": "TYT"}],
            "perpetrator": {"detected": true, "sex": "male", "prosecuted": false},
            "status": "open"
        })
    }

    fn message(kind: RecordKind, v: &Value) -> String {
        validate_new(kind, v).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_full_record() {
        validate_new(RecordKind::GbvCase, &gbv()).unwrap();
    }

    #[test]
    fn each_mistake_has_a_precise_message() {
        let k = RecordKind::GbvCase;
        let mut v = gbv();
        v["victim"]["colour"] = json!("x");
        assert_eq!(message(k, &v), "unknown field `victim.colour`");

        let mut v = gbv();
        v["victim"]["birth_year"] = json!("1990");
        assert_eq!(message(k, &v), "field `victim.birth_year` must be a whole number");

        let mut v = gbv();
        v["setting"] = json!("street");
        assert_eq!(message(k, &v), "field `setting`: `street` is not one of domestic, other_gbv");

        let mut v = gbv();
        v["detected_on"] = json!("2025-02-30");
        assert_eq!(
            message(k, &v),
            "field `detected_on`: `2025-02-30` is not a date in the form YYYY-MM-DD"
        );

        let mut v = gbv();
        v.as_object_mut().unwrap().remove("detected_on");
        assert_eq!(message(k, &v), "missing required field `detected_on`");

        let mut v = gbv();
        v["services"][0].as_object_mut().unwrap().remove("kind");
        assert_eq!(message(k, &v), "missing required field `services.0.kind`");

        let mut v = gbv();
        v["commune"] = json!("Xã A");
        assert!(message(k, &v).contains("not an org-unit code"));

        let mut v = gbv();
        v["kind"] = json!("news_item");
        assert_eq!(message(k, &v), "field `kind` is fixed when the record is created");

        let mut v = gbv();
        v["victim"]["birth_year"] = json!(1800);
        assert_eq!(message(k, &v), "field `victim.birth_year`: 1800 is outside 1900..=2100");
    }

    #[test]
    fn error_messages_never_carry_long_text() {
        let mut v = gbv();
        v["setting"] = json!("a very long and possibly sensitive sentence about a victim");
        let m = message(RecordKind::GbvCase, &v);
        assert!(!m.contains("sensitive sentence"), "{m}");
    }

    #[test]
    fn finds_fields_by_path() {
        let k = RecordKind::GbvCase;
        assert_eq!(field_at(k, "victim.sex").unwrap().name, "sex");
        assert_eq!(field_at(k, "services.3.provider").unwrap().name, "provider");
        assert_eq!(field_at(k, "services").unwrap().name, "services");
        assert!(field_at(k, "services.x.kind").is_err());
        assert!(field_at(k, "victim.nope").is_err());
        assert!(field_at(RecordKind::NewsItem, "victim").is_err());
    }
}
