//! Stored rows: the forms in which the store keeps values whose Rust types belong to another
//! crate, as types of the server's own. A change to `sync-core`'s `RecordMeta` then changes
//! nothing on disk unless it is made here too, next to the test that pins the bytes.
//!
//! A record's metadata (`m/{id16}`, a key of `record_rows.rs`) has two stored forms, and this build
//! reads both:
//! - JSON ([`StoredMetaJson`], starting with `{`), the form every earlier build wrote and reads,
//!   which this build writes until the store is finalized ([`MetaForm`]);
//! - [`META_POSTCARD`] then postcard ([`StoredMeta`]), heads as 32 raw bytes rather than JSON
//!   arrays of 32 numbers: 218 bytes where JSON takes 545 with one history point, 701 where it
//!   takes 2,008 with eight; read in 1.4–1.9 µs where JSON takes 2.6–7.9 µs (measured
//!   2026-12-04; the pull reads one for every record it serves, the push two for every record
//!   it writes). This build writes it once `gesync-server admin finalize-upgrade` has said that
//!   every build serving the store reads it (the store's form level, `db::FORM_LEVEL`).
//!
//! A record's next write, or `rebuild-figures`, stores the form the store's level says.
//!
//! The org units (`o/`), a record's open conflicts (`q/`) and an actor's owner (`x/`) stay
//! JSON, in rows of their own here: PostgreSQL's triggers read the first two (migrations 2 and
//! 4) and a view the third (migration 7), so their field names are a contract with the SQL,
//! which the tests below pin.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_core::conflicts::StoredConflict;
use sync_core::meta::{ActorOwner, RecordMeta};
use sync_core::org::OrgUnit;
use sync_protocol::doc::ConflictValue;
use sync_protocol::wire::Hash;
use sync_protocol::RecordKind;

/// The first byte of metadata in [`StoredMeta`]'s form (JSON starts with `{`).
pub(crate) const META_POSTCARD: u8 = 1;

/// A record's metadata as stored: [`RecordMeta`] field by field, the record kind as a fixed
/// number (postcard would write the enum's position, which a reordering would change). Every
/// field is the server's own or a plain type: postcard does not describe itself, so a field
/// added to a foreign type would make every stored row unreadable.
#[derive(Serialize, Deserialize)]
struct StoredMeta {
    kind: u8,
    commune: String,
    seq: u64,
    deleted: bool,
    date: Option<String>,
    history: Vec<(u64, Vec<Hash>)>,
    ends: Vec<u32>,
    updated_at: i64,
    contribution: Option<StoredContribution>,
    dup: Option<(String, i64)>,
    conflicts: u32,
}

/// What a record adds to the figures, as stored: the domain's strings for its quarter
/// (`2025Q3`) and counters (`gbv_victims_supported.num.sex.female`), which the API writes too
/// and which never change meaning.
#[derive(Serialize, Deserialize)]
struct StoredContribution {
    commune: String,
    quarter: String,
    counters: Vec<(String, i64)>,
}

impl StoredContribution {
    fn of(c: &indicators::Contribution) -> StoredContribution {
        StoredContribution { commune: c.commune.clone(), quarter: c.quarter.to_string(), counters: c.counters.iter().map(|(k, n)| (k.to_string(), n)).collect() }
    }

    fn read(self) -> Result<indicators::Contribution, String> {
        let counters = self.counters.into_iter().map(|(k, n)| Ok((k.parse().map_err(|e: indicators::UnknownCounterKey| e.to_string())?, n))).collect::<Result<_, String>>()?;
        Ok(indicators::Contribution { commune: self.commune, quarter: self.quarter.parse().map_err(|e| format!("quarter `{}`: {e}", self.quarter))?, counters })
    }
}

fn kind_number(kind: RecordKind) -> u8 {
    match kind {
        RecordKind::GbvCase => 1,
        RecordKind::TraffickingReturnee => 2,
        RecordKind::NewsItem => 3,
    }
}

fn kind_of(number: u8) -> Option<RecordKind> {
    match number {
        1 => Some(RecordKind::GbvCase),
        2 => Some(RecordKind::TraffickingReturnee),
        3 => Some(RecordKind::NewsItem),
        _ => None,
    }
}

/// The form in which record metadata is written, by the store's form level. Until the store
/// is finalized ([`crate::db::FORM_LEVEL`]), JSON, which every earlier build reads
/// ([`StoredMetaJson`]); writing postcard before would leave records that an older replica
/// (while replicas are replaced one by one) or an older binary (a rollback) cannot read, and an
/// older build leaves a record it cannot read out of a pull: the phone's cursor moves past it.
/// Every form is read at any level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetaForm {
    Json,
    Postcard,
}

impl MetaForm {
    /// The form a store at form level `level` is written in.
    pub(crate) fn at_level(level: u64) -> MetaForm {
        if level >= 1 {
            MetaForm::Postcard
        } else {
            MetaForm::Json
        }
    }
}

/// `meta` in `form`.
pub(crate) fn meta_bytes(meta: &RecordMeta, form: MetaForm) -> Vec<u8> {
    match form {
        MetaForm::Postcard => meta_postcard(meta),
        MetaForm::Json => serde_json::to_vec(&StoredMetaJson::of(meta)).expect("a stored row serialises"),
    }
}

/// `meta` in [`StoredMeta`]'s postcard form.
pub(crate) fn meta_postcard(meta: &RecordMeta) -> Vec<u8> {
    let row = StoredMeta {
        kind: kind_number(meta.kind),
        commune: meta.commune.clone(),
        seq: meta.seq,
        deleted: meta.deleted,
        date: meta.date.clone(),
        history: meta.history.iter().cloned().collect(),
        ends: meta.ends.iter().copied().collect(),
        updated_at: meta.updated_at,
        contribution: meta.contribution.as_ref().map(StoredContribution::of),
        dup: meta.dup.clone(),
        conflicts: meta.conflicts,
    };
    postcard::to_extend(&row, vec![META_POSTCARD]).expect("a stored row serialises")
}

/// Metadata read back from its stored form, or from the JSON it was stored in before.
pub(crate) fn meta_from(bytes: &[u8]) -> Result<RecordMeta, String> {
    meta_parts_from(bytes, true)
}

/// [`meta_from`] for a pull, which sends records and never changes the figures: the record's
/// contribution to them is left unread (`None`), a fifth of a pull's CPU in `load` when read.
/// What it returns must never be written back.
pub(crate) fn meta_for_pull_from(bytes: &[u8]) -> Result<RecordMeta, String> {
    meta_parts_from(bytes, false)
}

fn meta_parts_from(bytes: &[u8], with_contribution: bool) -> Result<RecordMeta, String> {
    match bytes.first() {
        Some(&META_POSTCARD) => {
            let row: StoredMeta = postcard::from_bytes(&bytes[1..]).map_err(|e| e.to_string())?;
            let contribution = if with_contribution { row.contribution.map(StoredContribution::read).transpose()? } else { None };
            Ok(RecordMeta {
                kind: kind_of(row.kind).ok_or_else(|| format!("record kind {} is none this server knows", row.kind))?,
                commune: row.commune,
                seq: row.seq,
                deleted: row.deleted,
                date: row.date,
                history: VecDeque::from(row.history),
                ends: VecDeque::from(row.ends),
                updated_at: row.updated_at,
                contribution,
                dup: row.dup,
                conflicts: row.conflicts,
            })
        }
        Some(b'{') if with_contribution => serde_json::from_slice::<StoredMetaJson>(bytes).map_err(|e| e.to_string())?.read(),
        // The contribution skipped as JSON, unparsed.
        Some(b'{') => Ok(serde_json::from_slice::<StoredMetaJson<serde::de::IgnoredAny>>(bytes).map_err(|e| e.to_string())?.with(None)),
        _ => Err("neither of the forms metadata is stored in".into()),
    }
}

/// A record's metadata in the JSON form every build reads: the fields and shapes `sync-core`'s
/// `RecordMeta` had when builds before this one wrote it (an older build parses it with that
/// type), kept here so that a change to `RecordMeta` does not change them.
/// A pull reads it with the contribution skipped (`C` = `IgnoredAny`).
#[derive(Serialize, Deserialize)]
struct StoredMetaJson<C = StoredContributionJson> {
    kind: RecordKind,
    commune: String,
    seq: u64,
    deleted: bool,
    date: Option<String>,
    history: Vec<(u64, Vec<Hash>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ends: Vec<u32>,
    updated_at: i64,
    contribution: Option<C>,
    #[serde(default)]
    dup: Option<(String, i64)>,
    #[serde(default)]
    conflicts: u32,
}

/// A contribution in JSON: `{"commune", "quarter": "2025Q3", "counters": {name: count}}`.
#[derive(Serialize, Deserialize)]
struct StoredContributionJson {
    commune: String,
    quarter: String,
    counters: std::collections::BTreeMap<String, i64>,
}

impl StoredMetaJson {
    fn of(meta: &RecordMeta) -> StoredMetaJson {
        StoredMetaJson {
            kind: meta.kind,
            commune: meta.commune.clone(),
            seq: meta.seq,
            deleted: meta.deleted,
            date: meta.date.clone(),
            history: meta.history.iter().cloned().collect(),
            ends: meta.ends.iter().copied().collect(),
            updated_at: meta.updated_at,
            contribution: meta.contribution.as_ref().map(|c| {
                let StoredContribution { commune, quarter, counters } = StoredContribution::of(c);
                StoredContributionJson { commune, quarter, counters: counters.into_iter().collect() }
            }),
            dup: meta.dup.clone(),
            conflicts: meta.conflicts,
        }
    }

    fn read(mut self) -> Result<RecordMeta, String> {
        let contribution = self.contribution.take().map(|c| StoredContribution { commune: c.commune, quarter: c.quarter, counters: c.counters.into_iter().collect() }.read()).transpose()?;
        Ok(self.with(contribution))
    }
}

impl<C> StoredMetaJson<C> {
    /// The metadata, with `contribution` in place of what was stored.
    fn with(self, contribution: Option<indicators::Contribution>) -> RecordMeta {
        RecordMeta {
            kind: self.kind,
            commune: self.commune,
            seq: self.seq,
            deleted: self.deleted,
            date: self.date,
            history: VecDeque::from(self.history),
            ends: VecDeque::from(self.ends),
            updated_at: self.updated_at,
            contribution,
            dup: self.dup,
            conflicts: self.conflicts,
        }
    }
}

/// An org unit as stored (`o/{code}`): the trigger of migration 2 reads every field into
/// `gesync.org_units`.
#[derive(Serialize, Deserialize)]
struct StoredOrgUnit {
    code: String,
    name: String,
    parent: Option<String>,
    level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merged_into: Option<String>,
    /// `YYYY-MM-DD`, with `merged_into`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    effective: Option<String>,
}

/// `unit` in its stored form.
pub(crate) fn org_unit_bytes(unit: &OrgUnit) -> Vec<u8> {
    let row = StoredOrgUnit {
        code: unit.code.clone(),
        name: unit.name.clone(),
        parent: unit.parent.clone(),
        level: unit.level.clone(),
        merged_into: unit.merged_into.clone(),
        effective: unit.effective.clone(),
    };
    serde_json::to_vec(&row).expect("a stored row serialises")
}

/// An org unit read back from its stored form.
pub(crate) fn org_unit_from(bytes: &[u8]) -> Result<OrgUnit, String> {
    let row: StoredOrgUnit = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(OrgUnit { code: row.code, name: row.name, parent: row.parent, level: row.level, merged_into: row.merged_into, effective: row.effective })
}

/// One open conflict of a record as stored (`q/{commune}/{id16}` holds a list of them): the
/// trigger of migration 4 reads `path` and counts `values` (never the values themselves).
#[derive(Serialize, Deserialize)]
struct StoredConflictRow {
    path: String,
    values: Vec<StoredCompeting>,
}

/// One of a conflict's competing values: what a reviewer chooses between.
#[derive(Serialize, Deserialize)]
struct StoredCompeting {
    value: Value,
    /// The hex Automerge actor that wrote it.
    actor: String,
    /// When (the phone's clock, Unix seconds).
    at: i64,
}

/// A record's open conflicts in their stored form.
pub(crate) fn conflicts_bytes(conflicts: &[StoredConflict]) -> Vec<u8> {
    let rows: Vec<StoredConflictRow> = conflicts
        .iter()
        .map(|c| StoredConflictRow {
            path: c.path.clone(),
            values: c.values.iter().map(|v| StoredCompeting { value: v.value.clone(), actor: v.actor.clone(), at: v.at }).collect(),
        })
        .collect();
    serde_json::to_vec(&rows).expect("a stored row serialises")
}

/// A record's open conflicts read back from their stored form.
pub(crate) fn conflicts_from(bytes: &[u8]) -> Result<Vec<StoredConflict>, String> {
    let rows: Vec<StoredConflictRow> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|r| StoredConflict { path: r.path, values: r.values.into_iter().map(|v| ConflictValue { value: v.value, actor: v.actor, at: v.at }).collect() })
        .collect())
}

/// The user and device an Automerge actor belongs to, as stored (`x/{actor}`).
#[derive(Serialize, Deserialize)]
struct StoredOwner {
    username: String,
    device_id: String,
}

/// An actor's owner in its stored form.
pub(crate) fn owner_bytes(owner: &ActorOwner) -> Vec<u8> {
    serde_json::to_vec(&StoredOwner { username: owner.username.clone(), device_id: owner.device_id.clone() }).expect("a stored row serialises")
}

/// An actor's owner read back from its stored form.
pub(crate) fn owner_from(bytes: &[u8]) -> Result<ActorOwner, String> {
    let row: StoredOwner = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(ActorOwner { username: row.username, device_id: row.device_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(points: usize) -> RecordMeta {
        // Written out, not made by the formulas: a change to them must not move the pin.
        let contribution = serde_json::from_value(serde_json::json!({
            "commune": "04701", "quarter": "2025Q3",
            "counters": {"gbv_victims_supported.num": 1, "gbv_victims_supported.den": 1, "gbv_victims_supported.den.sex.female": 1},
        }))
        .unwrap();
        RecordMeta {
            kind: RecordKind::GbvCase,
            commune: "04701".into(),
            seq: 1_234_567,
            deleted: false,
            date: Some("2025-08-14".into()),
            history: (0..points as u64).map(|i| (1_000 + i, vec![[i as u8; 32], [0xAB; 32]])).collect(),
            ends: (0..points as u32).map(|i| 400 + i).collect(),
            updated_at: 1_760_000_000,
            contribution: Some(contribution),
            dup: Some(("female".into(), 1990)),
            conflicts: 2,
        }
    }

    /// Both forms read back as written; the JSON this build writes is what an older build
    /// reads (it parses it as `sync-core`'s `RecordMeta`).
    #[test]
    fn metadata_reads_back_as_it_was_written_in_either_form() {
        for points in [0, 1, 8] {
            let m = meta(points);
            assert!(m.contribution.is_some(), "the sample counts somewhere");
            let json = meta_bytes(&m, MetaForm::Json);
            assert_eq!(json[0], b'{');
            assert_eq!(meta_from(&json).unwrap(), m, "{points} history points, JSON");
            assert_eq!(serde_json::from_slice::<RecordMeta>(&json).unwrap(), m, "an older build reads it");
            let packed = meta_bytes(&m, MetaForm::Postcard);
            assert_eq!(packed[0], META_POSTCARD);
            assert_eq!(meta_from(&packed).unwrap(), m, "{points} history points, postcard");
            // A pull's read: the same but the contribution, in either form.
            let for_pull = RecordMeta { contribution: None, ..m.clone() };
            assert_eq!(meta_for_pull_from(&json).unwrap(), for_pull, "{points} history points, JSON, for a pull");
            assert_eq!(meta_for_pull_from(&packed).unwrap(), for_pull, "{points} history points, postcard, for a pull");
            eprintln!("{points} history points: {} bytes, against {} in JSON", packed.len(), json.len());
            assert!(packed.len() < json.len() && (points < 8 || packed.len() * 2 < json.len()), "{points} points: {} bytes, against {} in JSON", packed.len(), json.len());
        }
        for kind in RecordKind::ALL {
            assert_eq!(meta_from(&meta_postcard(&RecordMeta { kind, ..meta(1) })).unwrap().kind, kind);
            assert_eq!(meta_from(&meta_bytes(&RecordMeta { kind, ..meta(1) }, MetaForm::Json)).unwrap().kind, kind);
        }
    }

    /// Metadata as earlier builds wrote it (`RecordMeta` as JSON) reads; what is neither form,
    /// or cut short, is an error, never a panic.
    #[test]
    fn metadata_stored_before_reads_and_damage_is_an_error() {
        let m = meta(3);
        assert_eq!(meta_from(&serde_json::to_vec(&m).unwrap()).unwrap(), m);
        assert_eq!(meta_for_pull_from(&serde_json::to_vec(&m).unwrap()).unwrap(), RecordMeta { contribution: None, ..m.clone() });
        for bytes in [meta_postcard(&m), meta_bytes(&m, MetaForm::Json)] {
            for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
                assert!(meta_from(&bytes[..cut]).is_err(), "cut at {cut}");
                assert!(meta_for_pull_from(&bytes[..cut]).is_err(), "cut at {cut}, for a pull");
            }
        }
        let bytes = meta_postcard(&m);
        assert!(meta_from(b"").is_err());
        assert!(meta_from(&[7, 1, 2, 3]).unwrap_err().contains("neither"));
        let mut unknown_kind = bytes.clone();
        unknown_kind[1] = 9;
        assert!(meta_from(&unknown_kind).unwrap_err().contains("kind 9"));
        // A counter or quarter this server does not know is named, not guessed.
        let unknown = |counter: &str, quarter: &str| {
            let row = StoredMeta {
                kind: 1,
                commune: "04701".into(),
                seq: 1,
                deleted: false,
                date: None,
                history: Vec::new(),
                ends: Vec::new(),
                updated_at: 0,
                contribution: Some(StoredContribution { commune: "04701".into(), quarter: quarter.into(), counters: vec![(counter.into(), 1)] }),
                dup: None,
                conflicts: 0,
            };
            meta_from(&postcard::to_extend(&row, vec![META_POSTCARD]).unwrap()).unwrap_err()
        };
        assert!(unknown("gbv_victims_supported.num.colour.red", "2025Q3").contains("gbv_victims_supported.num.colour.red"));
        assert!(unknown("news_items", "2025Q5").contains("2025Q5"));
    }

    /// The stored bytes are pinned: a change to `RecordMeta`, `Contribution` or this row that
    /// moves them fails here, where the change must then keep the old form readable.
    #[test]
    fn the_stored_form_is_pinned() {
        let hex = hex::encode(meta_postcard(&meta(1)));
        assert_eq!(hex, PINNED, "the stored form of metadata changed: keep the old one readable (a new first byte) and pin the new one");
        assert_eq!(String::from_utf8(meta_bytes(&meta(1), MetaForm::Json)).unwrap(), PINNED_JSON, "the JSON form every build reads changed");
    }

    /// `meta(1)` in the JSON form.
    const PINNED_JSON: &str = concat!(
        r#"{"kind":"gbv_case","commune":"04701","seq":1234567,"deleted":false,"date":"2025-08-14","hi"#,
        r#"story":[[1000,[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],[171,171,"#,
        r#"171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,171,17"#,
        r#"1,171,171,171,171,171,171,171]]]],"ends":[400],"updated_at":1760000000,"contribution":{"co"#,
        r#"mmune":"04701","quarter":"2025Q3","counters":{"gbv_victims_supported.den":1,"gbv_victims_s"#,
        r#"upported.den.sex.female":1,"gbv_victims_supported.num":1}},"dup":["female",1990],"conflict"#,
        r#"s":2}"#,
    );

    /// The JSON the triggers and views read (migrations 2, 4 and 5) and what the server reads
    /// back, pinned: a field renamed in `sync-core` or `indicators` must not move them.
    #[test]
    fn the_json_rows_the_sql_reads_are_pinned() {
        let merged = OrgUnit { merged_into: Some("04701".into()), effective: Some("2025-07-01".into()), ..OrgUnit::new("04702", "Xã Nà Phặc", Some("047".into()), "commune") };
        let stored = org_unit_bytes(&merged);
        assert_eq!(String::from_utf8_lossy(&stored), r#"{"code":"04702","name":"Xã Nà Phặc","parent":"047","level":"commune","merged_into":"04701","effective":"2025-07-01"}"#);
        assert_eq!(org_unit_from(&stored).unwrap(), merged);
        let current = OrgUnit::new("04", "Cao Bằng", None, "province");
        assert_eq!(String::from_utf8_lossy(&org_unit_bytes(&current)), r#"{"code":"04","name":"Cao Bằng","parent":null,"level":"province"}"#);
        assert_eq!(org_unit_from(&org_unit_bytes(&current)).unwrap(), current);

        let conflicts = vec![StoredConflict {
            path: "channel".into(),
            values: vec![
                ConflictValue { value: serde_json::json!("loudspeaker"), actor: "0a1b".into(), at: 1_760_000_000 },
                ConflictValue { value: serde_json::json!("social_media"), actor: "2c3d".into(), at: 1_760_000_005 },
            ],
        }];
        let stored = conflicts_bytes(&conflicts);
        assert_eq!(
            String::from_utf8_lossy(&stored),
            r#"[{"path":"channel","values":[{"value":"loudspeaker","actor":"0a1b","at":1760000000},{"value":"social_media","actor":"2c3d","at":1760000005}]}]"#
        );
        assert_eq!(conflicts_from(&stored).unwrap(), conflicts);

        let owner = ActorOwner { username: "officer1".into(), device_id: "phone-1".into() };
        assert_eq!(String::from_utf8_lossy(&owner_bytes(&owner)), r#"{"username":"officer1","device_id":"phone-1"}"#);
        assert_eq!(owner_from(&owner_bytes(&owner)).unwrap(), owner);

        // Counters (`c/`, read by `v_counters`) and targets (`t/`, read by the trigger) are the
        // `indicators` crate's, stored as the domain's own strings: pinned here all the same.
        let mut counters = indicators::Counters::new();
        counters.add_to(indicators::CounterKey::NEWS_ITEMS, 3);
        assert_eq!(serde_json::to_string(&counters).unwrap(), r#"{"news_items":3}"#);
        let target = indicators::Milestones::new([(2025, 0.7), (2030, 0.8)]).unwrap();
        assert_eq!(serde_json::to_string(&target).unwrap(), r#"{"2025":0.7,"2030":0.8}"#);
    }

    /// `meta(1)` as stored.
    const PINNED: &str = concat!(
        "010105303437303187ad4b00010a323032352d30382d313401e807020000000000000000000000000000000000000000",
        "000000000000000000000000abababababababababababababababababababababababababababababababab01900380",
        "e0bb8e0d010530343730310632303235513303196762765f76696374696d735f737570706f727465642e6e756d021967",
        "62765f76696374696d735f737570706f727465642e64656e02246762765f76696374696d735f737570706f727465642e",
        "64656e2e7365782e66656d616c6502010666656d616c658c1f02",
    );
}
