//! `gesync-server check`: reads the whole store and says what is damaged or inconsistent.
//!
//! In one consistent read: every record's metadata and document match their checksums
//! (`record_rows::seal`), the document loads, its heads are the ones the metadata names, it is in
//! the feed exactly once at the sequence number its metadata names (and the feed names no
//! record that is not there), no sequence number is past the store's last one; the stored
//! counters equal a recomputation from the documents; the audit chain verifies; on PostgreSQL,
//! the tables kept for people (`gesync.records`, `org_units`, `accounts`, `devices`, `audit`, `approvals`, `conflicts`,
//! `audit_checkpoints`)
//! hold exactly what the keyspace says, row for row. `serve` runs
//! the same check in the background after it starts, logs what it finds, and `/healthz` says
//! it.

use std::collections::{BTreeMap, HashMap, HashSet};

use indicators::{Contribution, Counters, Quarter};
use sync_protocol::automerge::AutoCommit;
use sync_protocol::RecordId;

use crate::db::{Db, DbError};
use crate::account_rows::AccountRows;
use crate::audit_rows::AuditRows;
use crate::figure_rows::FigureRows;
use crate::record_rows::{FeedRow, MetaRow, RecordRows};
use crate::store::tables::{AccountRow, ApprovalRow, AuditRow, CheckpointRow, ConflictRow, DeviceRow, OrgUnitRow, RecordRow};
use crate::store::Tables;

/// What `check` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records read.
    pub records: usize,
    /// Audit entries verified.
    pub audit_entries: u64,
    /// Each problem, in one line naming what is wrong where.
    pub problems: Vec<String>,
}

impl Report {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Problems listed one by one at most; past it, only counted.
const LISTED: usize = 100;

/// Records' metadata read at a time: the check holds a page of it, not every record's.
const META_PAGE: usize = 1_000;

impl Db {
    /// Reads the whole store (see the module's documentation).
    pub fn check(&self) -> Result<Report, DbError> {
        let mut report = Report::default();
        let mut problems = Vec::new();
        let cut = self.kv().begin_read()?;
        let tree = self.tree_in(&*cut)?;
        let high = cut.feed_high()?;

        // The feed: id → (commune, seq), each id once.
        let mut feed: HashMap<RecordId, (String, u64)> = HashMap::new();
        for row in cut.feed_rows()? {
            let (commune, seq, id) = match row {
                FeedRow::BadKey(len) => {
                    problems.push(format!("a feed key that cannot be read ({len} bytes)"));
                    continue;
                }
                FeedRow::NoId { commune, seq } => {
                    problems.push(format!("feed entry {seq} of commune {commune} names no record id"));
                    continue;
                }
                FeedRow::Entry { commune, seq, id } => (commune, seq, id),
            };
            if seq > high {
                problems.push(format!("feed entry {seq} (record {id}) is past the store's last sequence number {high}"));
            }
            if let Some((c, s)) = feed.insert(id, (commune.clone(), seq)) {
                problems.push(format!("record {id} is in the feed twice (commune {c} at {s}, commune {commune} at {seq})"));
            }
        }

        // Every record: metadata and document, checked against each other and the feed.
        let mut sums: BTreeMap<(String, Quarter), Counters> = BTreeMap::new();
        let mut seen = HashSet::new();
        // Each sound record's row in the tables kept for people, as its metadata says it is
        // (only a store that keeps those tables).
        let keeps_tables = self.kv().keeps_report_rows();
        let mut rows: BTreeMap<[u8; 16], RecordRow> = BTreeMap::new();
        // Records whose part in the figures cannot be recomputed.
        let mut unreadable = 0;
        cut.for_each_meta(META_PAGE, &mut |row| {
            report.records += 1;
            let (id, meta) = match row {
                MetaRow::BadKey(len) => {
                    problems.push(format!("a metadata key that cannot be read ({len} bytes)"));
                    return Ok(());
                }
                MetaRow::Record { id, meta } => (id, meta),
            };
            seen.insert(id);
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    problems.push(e.to_string());
                    unreadable += 1;
                    return Ok(());
                }
            };
            if keeps_tables {
                rows.insert(id.0, RecordRow {
                    id: id.0,
                    kind: meta.kind.as_str().into(),
                    commune: meta.commune.clone(),
                    quarter: meta.contribution.as_ref().map(|c| c.quarter.to_string()),
                    deleted: meta.deleted,
                    feed_seq: Some(meta.seq),
                });
            }
            let mut doc = match cut.document(&id) {
                Ok(Some(bytes)) => match AutoCommit::load(&bytes) {
                    Ok(doc) => {
                        if let Some(problem) = prefix_problem(&meta, &bytes) {
                            problems.push(format!("record {id}: {problem}"));
                        }
                        doc
                    }
                    Err(e) => {
                        problems.push(format!("record {id}: its document does not load: {e}"));
                        unreadable += 1;
                        return Ok(());
                    }
                },
                Ok(None) => {
                    problems.push(format!("record {id}: metadata without its document"));
                    unreadable += 1;
                    return Ok(());
                }
                Err(e) => {
                    problems.push(e.to_string());
                    unreadable += 1;
                    return Ok(());
                }
            };
            if !heads_are(&mut doc, meta.history.back().map_or(&[][..], |(_, h)| h)) {
                problems.push(format!("record {id}: its document's heads are not the ones its metadata names"));
            }
            match feed.get(&id) {
                None => problems.push(format!("record {id} is not in the feed")),
                Some((commune, seq)) if *commune != meta.commune || *seq != meta.seq => {
                    problems.push(format!("record {id}: the feed has it at {commune}/{seq}, its metadata at {}/{}", meta.commune, meta.seq));
                }
                Some(_) => {}
            }
            let view = match sync_protocol::doc::view(&doc) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("record {id}: its document cannot be read as a record: {e}"));
                    unreadable += 1;
                    return Ok(());
                }
            };
            if let Some(c) = sync_protocol::Record::parse(&view).as_ref().and_then(Contribution::from_typed) {
                for (unit, q, d) in indicators::deltas(None, Some(&c), |x| tree.chain(x)) {
                    sums.entry((unit, q)).or_default().add(&d);
                }
            }
            Ok(())
        })?;
        for id in feed.keys().filter(|id| !seen.contains(*id)) {
            problems.push(format!("the feed names record {id}, which is not stored"));
        }
        for id in cut.document_ids()?.into_iter().filter(|id| !seen.contains(id)) {
            problems.push(format!("record {id}: a document without its metadata"));
        }

        // The counters, against the recomputation: only when the records themselves were sound
        // (a damaged record's part in them cannot be recomputed; it is named above).
        let mut stored: BTreeMap<String, Counters> = BTreeMap::new();
        for (label, counters) in crate::figures::stored_counter_rows(&*cut)? {
            match counters {
                Ok(c) => {
                    stored.insert(label, c);
                }
                Err(e) => problems.push(format!("counters {label}: cannot be read: {e}")),
            }
        }
        let recomputed: BTreeMap<String, Counters> = sums.into_iter().filter(|(_, c)| *c != Counters::default()).map(|((unit, q), c)| (crate::figures::counter_label(&unit, q), c)).collect();
        for label in stored.keys().chain(recomputed.keys()).collect::<std::collections::BTreeSet<_>>().into_iter().filter(|_| unreadable == 0) {
            if stored.get(label) != recomputed.get(label) {
                problems.push(format!("counters {label}: stored figures differ from the records (`gesync-server admin rebuild-figures` recomputes them)"));
            }
        }
        // The tables kept for people beside the keyspace (PostgreSQL), against the keyspace.
        if let Some(tables) = cut.tables()? {
            let expected = Tables {
                records: rows.into_values().collect(),
                org_units: tree.all().map(|u| OrgUnitRow { code: u.code.clone(), name: u.name.clone(), parent: u.parent.clone(), level: u.level.clone(), merged_into: u.merged_into.clone() }).collect(),
                accounts: cut.users()?.into_iter().map(|u| AccountRow { username: u.username, role: u.role.as_str().into(), org_unit: u.org_unit, disabled: u.disabled }).collect(),
                devices: cut.all_devices()?.into_iter().map(|d| DeviceRow { username: d.username, device_id: d.device_id, revoked: d.revoked }).collect(),
                audit: cut.entries_after(0, usize::MAX)?.into_iter().map(|e| AuditRow { seq: e.seq, hash: e.hash }).collect(),
                approvals: cut.all_approvals()?
                    .into_iter()
                    .map(|a| ApprovalRow { org_unit: a.org_unit, period: a.period, approved_by: a.approved_by, changes_after: a.changes_after })
                    .collect(),
                conflicts: cut.all_conflicts()?
                    .into_iter()
                    .flat_map(|(commune, id, conflicts)| {
                        conflicts.into_iter().map(move |c| ConflictRow { record_id: id.0, commune: commune.clone(), path: c.path, competing: c.values.len() as u32 })
                    })
                    .collect(),
                audit_checkpoints: cut.checkpoints()?.into_iter().map(|c| CheckpointRow { seq: c.seq, hash: c.hash, signature: c.signature }).collect(),
            };
            compare_tables(&expected, &tables, unreadable == 0, &mut problems);
        }
        drop(cut);

        // The audit chain.
        match self.audit_log().verify_audit_chain()? {
            Ok(n) => report.audit_entries = n,
            Err(at) => problems.push(format!("the audit chain is broken at entry {at}")),
        }

        let more = problems.len().saturating_sub(LISTED);
        problems.truncate(LISTED);
        if more > 0 {
            problems.push(format!("… and {more} more problems"));
        }
        report.problems = problems;
        Ok(report)
    }
}

/// Names each row of the tables kept for people that differs from what the keyspace says it
/// should be, is missing, or is there for nothing. Records are compared only when
/// `all_records` were read (a damaged one has no expected row).
fn compare_tables(expected: &Tables, found: &Tables, all_records: bool, problems: &mut Vec<String>) {
    fn diff<R: PartialEq, K: Ord + std::fmt::Display>(table: &str, expected: &[R], found: &[R], key: impl Fn(&R) -> K, problems: &mut Vec<String>) {
        let want: BTreeMap<K, &R> = expected.iter().map(|r| (key(r), r)).collect();
        let have: BTreeMap<K, &R> = found.iter().map(|r| (key(r), r)).collect();
        for (k, r) in &want {
            match have.get(k) {
                None => problems.push(format!("gesync.{table}: no row for {k}, which the keyspace holds")),
                Some(h) if h != r => problems.push(format!("gesync.{table}: the row for {k} differs from the keyspace")),
                Some(_) => {}
            }
        }
        for k in have.keys().filter(|k| !want.contains_key(k)) {
            problems.push(format!("gesync.{table}: a row for {k}, which the keyspace does not hold"));
        }
    }
    let before = problems.len();
    if all_records {
        diff("records", &expected.records, &found.records, |r| RecordId(r.id), problems);
    }
    diff("org_units", &expected.org_units, &found.org_units, |r| r.code.clone(), problems);
    diff("accounts", &expected.accounts, &found.accounts, |r| r.username.clone(), problems);
    diff("devices", &expected.devices, &found.devices, |r| format!("{}/{}", r.username, r.device_id), problems);
    diff("audit", &expected.audit, &found.audit, |r| r.seq, problems);
    diff("approvals", &expected.approvals, &found.approvals, |r| format!("{}/{}", r.org_unit, r.period), problems);
    diff("conflicts", &expected.conflicts, &found.conflicts, |r| format!("{} {}", RecordId(r.record_id), r.path), problems);
    diff("audit_checkpoints", &expected.audit_checkpoints, &found.audit_checkpoints, |r| r.seq, problems);
    if problems.len() > before {
        let hint = "the tables below are out of step with the keyspace (edited by hand?): `SELECT gesync.reproject();`, run as the schema's owner, rewrites them from it";
        problems.insert(before, hint.into());
    }
}

/// What is wrong with a record's stored prefixes (`RecordMeta::ends`), if anything: the last
/// must be the document's length, and the version before the last that is a prefix must load to
/// the heads its history point names (the one a pull most often sends the bytes after).
fn prefix_problem(meta: &sync_core::meta::RecordMeta, bytes: &[u8]) -> Option<String> {
    let ends = meta.aligned_ends();
    match ends.back() {
        None | Some(0) => return None,
        Some(last) if *last as usize != bytes.len() => {
            return Some(format!("its metadata says its document is {last} bytes long, it is {}", bytes.len()))
        }
        Some(_) => {}
    }
    let i = ends.len().checked_sub(2)?;
    let end = ends[i] as usize;
    if end == 0 {
        return None;
    }
    let holds = bytes.get(..end).and_then(|prefix| AutoCommit::load(prefix).ok()).is_some_and(|mut d| heads_are(&mut d, &meta.history[i].1));
    (!holds).then(|| format!("its document's first {end} bytes are not the version its history names there"))
}

/// Whether `doc`'s heads are exactly `named`, in any order.
fn heads_are(doc: &mut AutoCommit, named: &[[u8; 32]]) -> bool {
    let mut heads: Vec<[u8; 32]> = doc.get_heads().iter().map(|h| h.0).collect();
    let mut named = named.to_vec();
    heads.sort();
    named.sort();
    heads == named
}

#[cfg(test)]
mod tests {
    use sync_protocol::automerge::{transaction::Transactable, AutoCommit, ROOT};

    /// A document stored as two versions, its metadata naming `ends` for them.
    fn stored(ends: impl Fn(usize, usize) -> [usize; 2]) -> (sync_core::meta::RecordMeta, Vec<u8>) {
        let mut d = AutoCommit::new();
        d.put(ROOT, "status", "open").unwrap();
        let (v1, h1) = (d.save(), d.get_heads());
        d.put(ROOT, "status", "closed").unwrap();
        let bytes = [v1.clone(), d.save_after(&h1)].concat();
        let wire = |h: Vec<sync_protocol::automerge::ChangeHash>| h.iter().map(|h| h.0).collect::<Vec<_>>();
        let meta = serde_json::from_value(serde_json::json!({
            "kind": "news_item", "commune": "04701", "seq": 2, "deleted": false, "date": null,
            "history": [[1, wire(h1)], [2, wire(d.get_heads())]], "ends": ends(v1.len(), bytes.len()),
            "updated_at": 0, "contribution": null,
        }))
        .unwrap();
        (meta, bytes)
    }

    #[test]
    fn a_records_stored_versions_are_checked_against_its_history() {
        let (meta, bytes) = stored(|v1, all| [v1, all]);
        assert_eq!(super::prefix_problem(&meta, &bytes), None);
        let (meta, bytes) = stored(|v1, all| [v1 - 1, all]);
        assert!(super::prefix_problem(&meta, &bytes).is_some_and(|p| p.contains("first")), "a prefix cut one byte short");
        let (meta, bytes) = stored(|v1, all| [v1, all + 1]);
        assert!(super::prefix_problem(&meta, &bytes).is_some_and(|p| p.contains("bytes long")), "a length that is not the document's");
        let (meta, bytes) = stored(|_, all| [0, all]);
        assert_eq!(super::prefix_problem(&meta, &bytes), None, "no prefix kept: nothing to check");
    }
}
