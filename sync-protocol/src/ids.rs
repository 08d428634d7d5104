//! Newtype identifiers shared by phone and server.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::schema::{is_org_unit_code, Problem, SchemaError};

/// A record's id: a random UUID made by the phone that creates the record, so records can be
/// created offline without coordination. Sent on the wire as 16 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(pub [u8; 16]);

impl RecordId {
    pub fn random() -> Self {
        RecordId(*uuid::Uuid::new_v4().as_bytes())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// Error for an id that is not a UUID.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a record id (a UUID such as 0b6c8f7e-3f1a-4c39-9d8e-1f2a3b4c5d6e)")]
pub struct BadRecordId(String);

impl FromStr for RecordId {
    type Err = BadRecordId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the hyphenated or simple forms; a path such as `../x` never parses.
        let shown: String = s.chars().take(40).collect();
        if !(s.len() == 36 || s.len() == 32) {
            return Err(BadRecordId(shown));
        }
        uuid::Uuid::parse_str(s).map(|u| RecordId(*u.as_bytes())).map_err(|_| BadRecordId(shown))
    }
}

/// The three record kinds of `domain.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    GbvCase,
    TraffickingReturnee,
    NewsItem,
}

impl RecordKind {
    pub const ALL: [RecordKind; 3] =
        [RecordKind::GbvCase, RecordKind::TraffickingReturnee, RecordKind::NewsItem];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::GbvCase => "gbv_case",
            RecordKind::TraffickingReturnee => "trafficking_returnee",
            RecordKind::NewsItem => "news_item",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| SchemaError {
            path: "kind".into(),
            problem: Problem::UnknownKind { value: s.chars().take(40).collect() },
        })
    }
}

/// An org-unit code (General Statistics Office codes: 2-digit province, 3-digit district,
/// 5-digit commune; other depths are allowed so that reorganised trees fit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgUnitCode(String);

impl OrgUnitCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgUnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Error for a malformed org-unit code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not an org-unit code (2 to 12 digits, e.g. 04 or 047 or 01234)")]
pub struct BadOrgUnitCode(String);

impl FromStr for OrgUnitCode {
    type Err = BadOrgUnitCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_org_unit_code(s) {
            Ok(OrgUnitCode(s.to_string()))
        } else {
            Err(BadOrgUnitCode(s.chars().take(40).collect()))
        }
    }
}

impl TryFrom<String> for OrgUnitCode {
    type Error = BadOrgUnitCode;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<OrgUnitCode> for String {
    fn from(c: OrgUnitCode) -> String {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_round_trip_and_reject_paths() {
        let id = RecordId::random();
        assert_eq!(id.to_string().parse::<RecordId>().unwrap(), id);
        assert!("../../etc/passwd".parse::<RecordId>().is_err());
        assert!("".parse::<RecordId>().is_err());
    }

    #[test]
    fn org_unit_codes() {
        assert!("04".parse::<OrgUnitCode>().is_ok());
        assert!("04712".parse::<OrgUnitCode>().is_ok());
        assert!("4".parse::<OrgUnitCode>().is_err());
        assert!("04/..".parse::<OrgUnitCode>().is_err());
    }
}
