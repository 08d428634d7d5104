//! A record's de-identified facts: what a statistician may read of it (`gesync.v_records`).
//!
//! Driven by the record schema, so a field added to the schema is classified by its type, never
//! forgotten: free text (names, notes, providers, titles, reasons) and org-unit codes are
//! dropped; dates, booleans, and values of fixed lists are kept (a value outside its list is
//! dropped, so no text can pass as an enumeration); a birth year becomes a five-year band and
//! the age band of `domain.md` at the record's date. Nested maps and lists keep their shape.

use indicators::IndicatorId;
use serde_json::{Map, Value};
use sync_protocol::schema::{fields, name, Field, FieldType};
use sync_protocol::Record;

use crate::meta::RecordMeta;

/// A record's reporting row: what a store that keeps tables people read keeps beside it (on
/// PostgreSQL, `gesync.records`, from which `v_figures` and `v_records` are made). JSON:
/// `kind`, `commune`, `seq` (its place in the feed), `date`, `deleted`, `updated_at`, `quarter`
/// and `counts` (the totals the
/// record adds to the figures: `gbv_victims_supported.num`, `….den`, `news_items`, …; none when
/// it counts nowhere), `facts` ([`facts`]). Small, so that writing it costs little.
pub fn report_row(meta: &RecordMeta, facts: Option<&Value>) -> Value {
    let mut counts = Map::new();
    if let Some(c) = &meta.contribution {
        for id in IndicatorId::RATES {
            for (side, n) in [("num", c.counters.numerator(id)), ("den", c.counters.denominator(id))] {
                if n != 0 {
                    counts.insert(format!("{}.{side}", id.as_str()), Value::from(n));
                }
            }
        }
        if c.counters.news_items() != 0 {
            counts.insert("news_items".into(), Value::from(c.counters.news_items()));
        }
    }
    serde_json::json!({
        "kind": meta.kind,
        "commune": meta.commune,
        "seq": meta.seq,
        "date": meta.date,
        "deleted": meta.deleted,
        "updated_at": meta.updated_at,
        "quarter": meta.contribution.as_ref().map(|c| c.quarter.to_string()),
        "counts": counts,
        "facts": facts,
    })
}

/// Years per birth-year band: `1985-1989`.
const BAND_YEARS: i64 = 5;

/// The de-identified facts of a record's JSON view; `None` when it is not a record.
pub fn facts(view: &Value) -> Option<Value> {
    Some(facts_of(&Record::parse(view)?, view))
}

/// [`facts`] of a view already parsed as `typed`.
pub fn facts_of(typed: &Record, view: &Value) -> Value {
    let record_year = typed.date().map(|d| chrono::Datelike::year(&d));
    let empty = Map::new();
    Value::Object(keep(fields(typed.kind()), view.as_object().unwrap_or(&empty), record_year))
}

fn keep(schema: &[Field], obj: &Map<String, Value>, record_year: Option<i32>) -> Map<String, Value> {
    let mut out = Map::new();
    for field in schema {
        let Some(v) = obj.get(field.name) else { continue };
        match field.ty {
            FieldType::Text | FieldType::OrgUnit => {}
            FieldType::Bool => {
                if let Some(b) = v.as_bool() {
                    out.insert(field.name.into(), Value::Bool(b));
                }
            }
            FieldType::Date => {
                if let Some(d) = v.as_str().filter(|s| s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()) {
                    out.insert(field.name.into(), Value::String(d.into()));
                }
            }
            FieldType::Int { min, max } => {
                let Some(n) = v.as_i64().filter(|n| (min..=max).contains(n)) else { continue };
                if field.name == name::BIRTH_YEAR {
                    let start = n - n.rem_euclid(BAND_YEARS);
                    out.insert("birth_year_band".into(), Value::String(format!("{start}-{}", start + BAND_YEARS - 1)));
                    let band = record_year.map_or(indicators::AgeBand::Unknown, |y| indicators::AgeBand::from_years(y, Some(n)));
                    out.insert("age_band".into(), Value::String(band.as_str().into()));
                } else {
                    out.insert(field.name.into(), Value::from(n));
                }
            }
            FieldType::Enum(allowed) => {
                if let Some(s) = v.as_str().filter(|s| allowed.contains(s)) {
                    out.insert(field.name.into(), Value::String(s.into()));
                }
            }
            FieldType::Set(allowed) => {
                // A set is a map `value -> true` in the document; a list is accepted too.
                let mut members: Vec<&str> = match v {
                    Value::Object(m) => m.iter().filter(|(_, on)| on.as_bool() != Some(false)).map(|(k, _)| k.as_str()).collect(),
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                members.retain(|m| allowed.contains(m));
                members.sort_unstable();
                members.dedup();
                out.insert(field.name.into(), members.into_iter().map(|m| Value::String(m.into())).collect());
            }
            FieldType::Map(inner) => {
                if let Some(m) = v.as_object() {
                    out.insert(field.name.into(), Value::Object(keep(inner, m, record_year)));
                }
            }
            FieldType::List(inner) => {
                let entries = v.as_array().map(|a| a.iter().filter_map(Value::as_object).map(|e| Value::Object(keep(inner, e, record_year))).collect()).unwrap_or_default();
                out.insert(field.name.into(), Value::Array(entries));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn free_text_never_passes_and_birth_years_become_bands() {
        let view = json!({
            "kind": "gbv_case", "commune": "04701", "detected_on": "2025-03-02", "setting": "domestic",
            "violence_types": {"physical": true, "sexual": true, "made up": true},
            "victim": {"sex": "female", "birth_year": 1987, "ethnic_minority": true, "disability": false, "name": "Nguyễn Thị A"},
            "services": [{"kind": "health", "provided_on": "2025-03-03", "provider": "TYT xã"}, {"kind": "0912345678"}],
            "perpetrator": {"detected": true, "sex": "male", "prosecuted": false, "counselled": true},
            "status": "open", "notes": "sống ở thôn 3, số điện thoại 0912345678",
            "deleted": false, "deleted_reason": "x"
        });
        let f = facts(&view).unwrap();
        let text = f.to_string();
        for secret in ["Nguyễn", "TYT", "0912345678", "thôn", "made up", "04701", "\"x\""] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        assert_eq!(f["victim"], json!({"sex": "female", "birth_year_band": "1985-1989", "age_band": "16_59", "ethnic_minority": true, "disability": false}));
        assert_eq!(f["services"], json!([{"kind": "health", "provided_on": "2025-03-03"}, {}]));
        assert_eq!(f["violence_types"], json!(["physical", "sexual"]));
        assert_eq!(f["detected_on"], "2025-03-02");
        assert_eq!(f["perpetrator"]["counselled"], true);
    }

    #[test]
    fn a_child_is_a_child_at_the_date_of_the_record() {
        let view = json!({"kind": "trafficking_returnee", "commune": "04701", "identified_on": "2025-01-10", "sex": "male", "birth_year": 2010, "needs_support": true, "support": []});
        let f = facts(&view).unwrap();
        assert_eq!((f["age_band"].as_str(), f["birth_year_band"].as_str()), (Some("under_16"), Some("2010-2014")));
        assert!(facts(&json!({"kind": "nothing"})).is_none());
    }
}
