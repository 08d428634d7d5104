//! Newtype identifiers shared by phone and server.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::schema::{is_org_unit_code, Problem, SchemaError};

/// A record's id: a UUID made by the phone that creates the record, so records can be created
/// offline without coordination. Sent on the wire as 16 raw bytes. Phones make it with
/// [`RecordId::made_by`]; any UUID is a valid id (older phones, the server's tests: random).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(pub [u8; 16]);

/// Seconds from the Unix epoch to 2024-01-01: [`RecordId::made_by`] counts from there, so 30 bits
/// last until 2058.
const ID_EPOCH: i64 = 1_704_067_200;

impl RecordId {
    /// A random (version 4) UUID.
    pub fn random() -> Self {
        RecordId(*uuid::Uuid::new_v4().as_bytes())
    }

    /// The id of a record the device whose Automerge actor is `actor` creates now: a version 8
    /// UUID (RFC 9562) of the actor's first 60 bits, the second it is made (counted from 2024, 30
    /// bits) and a counter (32 bits, started at random in each process).
    ///
    /// Why not random: a page of one commune's records holds the ids of a few phones, and 16
    /// random bytes an id are 19 KB of a 1,200-record first sync that no compressor squeezes;
    /// these share their first 10 bytes with the phone's other ids and cost zstd a few bytes
    /// each. They tell nothing the record does not already: its document carries the actor, and
    /// its first change the time. Unique: two devices differ in their actor; one device's ids
    /// differ in their second or counter, whose start is random, so a restart within the same
    /// second (or a clock set back) repeats a pair only by a 1-in-2³² chance. Without a clock
    /// (before 2024), the id is random.
    pub fn made_by(actor: &automerge::ActorId) -> Self {
        Self::made_by_at(actor, crate::doc::now_secs(), next_counter())
    }

    fn made_by_at(actor: &automerge::ActorId, unix_secs: i64, counter: u32) -> Self {
        let Some(secs) = unix_secs.checked_sub(ID_EPOCH).filter(|s| (0..1 << 30).contains(s)) else {
            return Self::random();
        };
        let device = actor.to_bytes();
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().take(8).enumerate() {
            *b = device.get(i).copied().unwrap_or(0);
        }
        id[6] = 0x80 | (id[6] >> 4); // version 8 in the high nibble; the actor's bits go on below it
        id[8..12].copy_from_slice(&((2 << 30) | secs as u32).to_be_bytes()); // variant 0b10, then the second
        id[12..].copy_from_slice(&counter.to_be_bytes());
        RecordId(id)
    }
}

/// The next value of the process's id counter, which starts at random.
fn next_counter() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let start = || {
        let random = uuid::Uuid::new_v4();
        AtomicU32::new(u32::from_le_bytes([random.as_bytes()[0], random.as_bytes()[1], random.as_bytes()[2], random.as_bytes()[3]]))
    };
    COUNTER.get_or_init(start).fetch_add(1, Ordering::Relaxed)
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
    fn a_phone_makes_version_8_uuids_that_never_repeat_and_share_its_prefix() {
        let (a, b) = (automerge::ActorId::random(), automerge::ActorId::random());
        // One second, one process: the counter tells them apart.
        let ids: Vec<RecordId> = (0..10_000).map(|_| RecordId::made_by_at(&a, 1_765_000_000, next_counter())).collect();
        assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), ids.len());
        for id in &ids {
            let uuid = uuid::Uuid::from_bytes(id.0);
            assert_eq!((uuid.get_version_num(), uuid.get_variant()), (8, uuid::Variant::RFC4122));
            assert_eq!(id.to_string().parse::<RecordId>().unwrap(), *id);
            assert_eq!(id.0[..6], a.to_bytes()[..6], "the actor's first bytes lead");
            assert_eq!(id.0[6] & 0x0f, a.to_bytes()[6] >> 4);
        }
        // Another device, same second, same counter: another id.
        assert_ne!(RecordId::made_by_at(&a, 1_765_000_000, 7), RecordId::made_by_at(&b, 1_765_000_000, 7));
        // The same device and counter a second later: another id.
        assert_ne!(RecordId::made_by_at(&a, 1_765_000_000, 7), RecordId::made_by_at(&a, 1_765_000_001, 7));
        // No clock (or one before 2024): random, still a UUID.
        let clockless = RecordId::made_by_at(&a, 0, 7);
        assert_eq!(uuid::Uuid::from_bytes(clockless.0).get_version_num(), 4);
        assert_ne!(clockless.0[..6], a.to_bytes()[..6]);
        // The clock the crate reads today is past 2024.
        assert_eq!(uuid::Uuid::from_bytes(RecordId::made_by(&a).0).get_version_num(), 8);
    }

    #[test]
    fn one_phones_ids_compress_where_random_ones_do_not() {
        // 1,000 records made a few hours apart by one of three phones, as a commune's page holds them.
        let phones: Vec<automerge::ActorId> = (0..3).map(|_| automerge::ActorId::random()).collect();
        let made: Vec<u8> = (0..1000u32)
            .flat_map(|i| RecordId::made_by_at(&phones[(i % 3) as usize], 1_765_000_000 + i as i64 * 7_919, next_counter()).0)
            .collect();
        let random: Vec<u8> = (0..1000).flat_map(|_| RecordId::random().0).collect();
        let zstd = |bytes: &[u8]| zstd::bulk::compress(bytes, 9).unwrap().len();
        assert!(zstd(&random) > 15_900, "random ids do not compress: {}", zstd(&random));
        assert!(zstd(&made) * 2 < zstd(&random), "a phone's ids: {} B against {} B random", zstd(&made), zstd(&random));
    }

    #[test]
    fn org_unit_codes() {
        assert!("04".parse::<OrgUnitCode>().is_ok());
        assert!("04712".parse::<OrgUnitCode>().is_ok());
        assert!("4".parse::<OrgUnitCode>().is_err());
        assert!("04/..".parse::<OrgUnitCode>().is_err());
    }
}
