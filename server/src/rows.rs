//! Stored rows: the forms in which the store keeps values whose Rust types belong to another
//! crate, as types of the server's own. A change to `sync-core`'s `RecordMeta` then changes
//! nothing on disk unless it is made here too, next to the test that pins the bytes.
//!
//! A record's metadata (`m/{id16}`, `records.rs`'s key) is [`META_POSTCARD`] then postcard.
//! Heads are 32 raw bytes here, not JSON arrays of 32 numbers: with one history point the
//! stored value is 218 bytes where JSON took 545, with eight 701 where it took 2,008; it reads
//! in 1.4–1.9 µs where JSON took 2.6–7.9 µs (measured 2026-12-04; the pull reads one for
//! every record it serves, the push two for every record it writes). Metadata written before
//! this form (JSON, which starts with `{`) is read as it is, and rewritten in this form by the
//! record's next write or by `rebuild-figures`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sync_core::meta::RecordMeta;
use sync_protocol::wire::Hash;
use sync_protocol::RecordKind;

/// The first byte of metadata in [`StoredMeta`]'s form (JSON starts with `{`).
pub(crate) const META_POSTCARD: u8 = 1;

/// A record's metadata as stored: [`RecordMeta`] field by field, the record kind as a fixed
/// number (postcard would write the enum's position, which a reordering would change).
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
    /// The domain's strings for its quarter and counter keys (as the API writes them).
    contribution: Option<indicators::Contribution>,
    dup: Option<(String, i64)>,
    conflicts: u32,
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

/// `meta` in its stored form.
pub(crate) fn meta_bytes(meta: &RecordMeta) -> Vec<u8> {
    let row = StoredMeta {
        kind: kind_number(meta.kind),
        commune: meta.commune.clone(),
        seq: meta.seq,
        deleted: meta.deleted,
        date: meta.date.clone(),
        history: meta.history.iter().cloned().collect(),
        ends: meta.ends.iter().copied().collect(),
        updated_at: meta.updated_at,
        contribution: meta.contribution.clone(),
        dup: meta.dup.clone(),
        conflicts: meta.conflicts,
    };
    postcard::to_extend(&row, vec![META_POSTCARD]).expect("a stored row serialises")
}

/// Metadata read back from its stored form, or from the JSON it was stored in before.
pub(crate) fn meta_from(bytes: &[u8]) -> Result<RecordMeta, String> {
    match bytes.first() {
        Some(&META_POSTCARD) => {
            let row: StoredMeta = postcard::from_bytes(&bytes[1..]).map_err(|e| e.to_string())?;
            Ok(RecordMeta {
                kind: kind_of(row.kind).ok_or_else(|| format!("record kind {} is none this server knows", row.kind))?,
                commune: row.commune,
                seq: row.seq,
                deleted: row.deleted,
                date: row.date,
                history: VecDeque::from(row.history),
                ends: VecDeque::from(row.ends),
                updated_at: row.updated_at,
                contribution: row.contribution,
                dup: row.dup,
                conflicts: row.conflicts,
            })
        }
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => Err("neither of the forms metadata is stored in".into()),
    }
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

    #[test]
    fn metadata_reads_back_as_it_was_written() {
        for points in [0, 1, 8] {
            let m = meta(points);
            assert!(m.contribution.is_some(), "the sample counts somewhere");
            let bytes = meta_bytes(&m);
            assert_eq!(bytes[0], META_POSTCARD);
            assert_eq!(meta_from(&bytes).unwrap(), m, "{points} history points");
            let json = serde_json::to_vec(&m).unwrap();
            eprintln!("{points} history points: {} bytes, against {} in JSON", bytes.len(), json.len());
            assert!(bytes.len() < json.len() && (points < 8 || bytes.len() * 2 < json.len()), "{points} points: {} bytes, against {} in JSON", bytes.len(), json.len());
        }
        for kind in RecordKind::ALL {
            assert_eq!(meta_from(&meta_bytes(&RecordMeta { kind, ..meta(1) })).unwrap().kind, kind);
        }
    }

    /// Metadata stored as JSON, before this form, still reads; what is neither form, or cut
    /// short, is an error, never a panic.
    #[test]
    fn metadata_stored_before_reads_and_damage_is_an_error() {
        let m = meta(3);
        assert_eq!(meta_from(&serde_json::to_vec(&m).unwrap()).unwrap(), m);
        let bytes = meta_bytes(&m);
        for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(meta_from(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(meta_from(b"").is_err());
        assert!(meta_from(&[7, 1, 2, 3]).unwrap_err().contains("neither"));
        let mut unknown_kind = bytes.clone();
        unknown_kind[1] = 9;
        assert!(meta_from(&unknown_kind).unwrap_err().contains("kind 9"));
    }

    /// The stored bytes are pinned: a change to `RecordMeta`, `Contribution` or this row that
    /// moves them fails here, where the change must then keep the old form readable.
    #[test]
    fn the_stored_form_is_pinned() {
        let bytes = meta_bytes(&meta(1));
        let hex = hex::encode(&bytes);
        assert_eq!(hex, PINNED, "the stored form of metadata changed: keep the old one readable (a new first byte) and pin the new one");
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
