//! A record's typed view: the fields that the figures, review and the record metadata read,
//! parsed once from the JSON view of its document ([`crate::doc::view`]). Code matches on
//! [`Record`] instead of reading string keys: every key here is one of [`crate::schema::name`]'s
//! constants, which the schema's tables use too, and `every_name_read_is_in_the_schema` fails if
//! the schema stops having a field this view reads. A renamed field therefore cannot silently
//! zero the figures.
//!
//! Parsing is tolerant, as a merged document may hold anything the schema let through at some
//! time: a missing or non-boolean flag reads `false`, a missing value `None`, a list counts only
//! its object entries (a stray `null` left by a malformed edit is not a service provided), and a
//! date is exactly `YYYY-MM-DD` or absent.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::ids::RecordKind;
use crate::schema::name;

/// One record, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    GbvCase(GbvCase),
    TraffickingReturnee(Returnee),
    NewsItem(NewsItem),
}

/// A person as recorded: sex and birth year (`None` when not given), ethnic-minority status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    pub sex: Option<String>,
    pub birth_year: Option<i64>,
    pub ethnic_minority: Option<bool>,
}

/// A victim of domestic or gender-based violence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbvCase {
    pub commune: String,
    pub deleted: bool,
    pub detected_on: Option<NaiveDate>,
    pub victim: Person,
    /// Entries of `services` (contacts with a basic support service).
    pub services: usize,
    pub perpetrator: Perpetrator,
}

/// The perpetrator of a case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Perpetrator {
    pub detected: bool,
    pub sex: Option<String>,
    pub prosecuted: bool,
    pub counselled: bool,
}

/// A returned victim of trafficking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returnee {
    pub commune: String,
    pub deleted: bool,
    pub identified_on: Option<NaiveDate>,
    /// Sex and birth year (ethnicity is not recorded for returnees).
    pub person: Person,
    pub needs_support: bool,
    /// Entries of `support`.
    pub support: usize,
}

/// A gender-equality news item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewsItem {
    pub commune: String,
    pub deleted: bool,
    pub published_on: Option<NaiveDate>,
}

impl Record {
    /// Parses a record's JSON view. `None` when it is not an object, its `kind` is unknown, or
    /// it has no `commune` string.
    pub fn parse(view: &Value) -> Option<Record> {
        let rec = view.as_object()?;
        let kind: RecordKind = rec.get("kind")?.as_str()?.parse().ok()?;
        let commune = rec.get(name::COMMUNE)?.as_str()?.to_string();
        let deleted = flag(rec, name::DELETED);
        Some(match kind {
            RecordKind::GbvCase => {
                let empty = Map::new();
                let victim = object(rec, name::VICTIM).unwrap_or(&empty);
                let perp = object(rec, name::PERPETRATOR).unwrap_or(&empty);
                Record::GbvCase(GbvCase {
                    commune,
                    deleted,
                    detected_on: date(rec, name::DETECTED_ON),
                    victim: person(victim),
                    services: entries(rec, name::SERVICES),
                    perpetrator: Perpetrator {
                        detected: flag(perp, name::DETECTED),
                        sex: text(perp, name::SEX),
                        prosecuted: flag(perp, name::PROSECUTED),
                        counselled: flag(perp, name::COUNSELLED),
                    },
                })
            }
            RecordKind::TraffickingReturnee => Record::TraffickingReturnee(Returnee {
                commune,
                deleted,
                identified_on: date(rec, name::IDENTIFIED_ON),
                person: Person { ethnic_minority: None, ..person(rec) },
                needs_support: flag(rec, name::NEEDS_SUPPORT),
                support: entries(rec, name::SUPPORT),
            }),
            RecordKind::NewsItem => Record::NewsItem(NewsItem { commune, deleted, published_on: date(rec, name::PUBLISHED_ON) }),
        })
    }

    pub fn kind(&self) -> RecordKind {
        match self {
            Record::GbvCase(_) => RecordKind::GbvCase,
            Record::TraffickingReturnee(_) => RecordKind::TraffickingReturnee,
            Record::NewsItem(_) => RecordKind::NewsItem,
        }
    }

    /// The commune the record was made in.
    pub fn commune(&self) -> &str {
        match self {
            Record::GbvCase(r) => &r.commune,
            Record::TraffickingReturnee(r) => &r.commune,
            Record::NewsItem(r) => &r.commune,
        }
    }

    pub fn deleted(&self) -> bool {
        match self {
            Record::GbvCase(r) => r.deleted,
            Record::TraffickingReturnee(r) => r.deleted,
            Record::NewsItem(r) => r.deleted,
        }
    }

    /// The date that places the record in a period.
    pub fn date(&self) -> Option<NaiveDate> {
        match self {
            Record::GbvCase(r) => r.detected_on,
            Record::TraffickingReturnee(r) => r.identified_on,
            Record::NewsItem(r) => r.published_on,
        }
    }

    /// The person the record is about (the victim, the returnee); none for a news item.
    pub fn person(&self) -> Option<&Person> {
        match self {
            Record::GbvCase(r) => Some(&r.victim),
            Record::TraffickingReturnee(r) => Some(&r.person),
            Record::NewsItem(_) => None,
        }
    }

    /// The list of support given, for the kinds that have one (`services`, `support`).
    pub fn support_list(&self) -> Option<&'static str> {
        match self {
            Record::GbvCase(_) => Some(name::SERVICES),
            Record::TraffickingReturnee(_) => Some(name::SUPPORT),
            Record::NewsItem(_) => None,
        }
    }
}

fn flag(obj: &Map<String, Value>, field: &str) -> bool {
    obj.get(field).and_then(Value::as_bool).unwrap_or(false)
}

fn text(obj: &Map<String, Value>, field: &str) -> Option<String> {
    obj.get(field).and_then(Value::as_str).map(str::to_string)
}

fn object<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Map<String, Value>> {
    obj.get(field).and_then(Value::as_object)
}

fn person(obj: &Map<String, Value>) -> Person {
    Person {
        sex: text(obj, name::SEX),
        birth_year: obj.get(name::BIRTH_YEAR).and_then(Value::as_i64),
        ethnic_minority: obj.get(name::ETHNIC_MINORITY).and_then(Value::as_bool),
    }
}

fn entries(obj: &Map<String, Value>, field: &str) -> usize {
    obj.get(field).and_then(Value::as_array).map_or(0, |l| l.iter().filter(|e| e.is_object()).count())
}

fn date(obj: &Map<String, Value>, field: &str) -> Option<NaiveDate> {
    let s = obj.get(field)?.as_str()?;
    // `%Y` alone would accept signs and short years; the schema's form is exactly YYYY-MM-DD.
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::{fields, Field, FieldType};

    fn has(fields: &[Field], path: &[&str]) -> bool {
        let Some(f) = fields.iter().find(|f| f.name == path[0]) else { return false };
        match (&path[1..], f.ty) {
            ([], _) => true,
            (rest, FieldType::Map(inner)) => has(inner, rest),
            _ => false,
        }
    }

    #[test]
    fn every_name_read_is_in_the_schema() {
        use name::*;
        let reads: [(RecordKind, &[&[&str]]); 3] = [
            (
                RecordKind::GbvCase,
                &[&[COMMUNE], &[DELETED], &[DETECTED_ON], &[VICTIM, SEX], &[VICTIM, BIRTH_YEAR], &[VICTIM, ETHNIC_MINORITY], &[SERVICES], &[PERPETRATOR, DETECTED], &[PERPETRATOR, SEX], &[PERPETRATOR, PROSECUTED], &[PERPETRATOR, COUNSELLED]],
            ),
            (RecordKind::TraffickingReturnee, &[&[COMMUNE], &[DELETED], &[IDENTIFIED_ON], &[SEX], &[BIRTH_YEAR], &[NEEDS_SUPPORT], &[SUPPORT]]),
            (RecordKind::NewsItem, &[&[COMMUNE], &[DELETED], &[PUBLISHED_ON]]),
        ];
        for (kind, paths) in reads {
            for path in paths {
                assert!(has(fields(kind), path), "{kind:?} has no field {}", path.join("."));
            }
        }
    }

    #[test]
    fn parses_tolerantly() {
        let case = json!({"kind": "gbv_case", "commune": "04701", "detected_on": "2025-03-01", "victim": {"sex": "female", "birth_year": 1990},
            "services": [null, {"kind": "health"}], "perpetrator": {"detected": true, "prosecuted": "yes"}});
        let Some(Record::GbvCase(c)) = Record::parse(&case) else { panic!("a case") };
        assert_eq!((c.services, c.perpetrator.detected, c.perpetrator.prosecuted, c.perpetrator.counselled), (1, true, false, false));
        assert_eq!((c.victim.sex.as_deref(), c.victim.birth_year, c.victim.ethnic_minority), (Some("female"), Some(1990), None));
        assert_eq!(c.detected_on, NaiveDate::from_ymd_opt(2025, 3, 1));
        let news = Record::parse(&json!({"kind": "news_item", "commune": "04701", "published_on": "2025-3-01", "deleted": true})).unwrap();
        assert_eq!((news.date(), news.deleted(), news.person()), (None, true, None), "not exactly YYYY-MM-DD: no date");
        assert!(Record::parse(&json!({"kind": "news_item"})).is_none());
        assert!(Record::parse(&json!({"kind": "other", "commune": "04701"})).is_none());
        assert!(Record::parse(&json!([1, 2])).is_none());
    }
}
