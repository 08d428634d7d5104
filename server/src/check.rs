//! `gesync-server check`: reads the whole store and says what is damaged or inconsistent.
//!
//! In one consistent read: every record's metadata and document match their checksums
//! (`records::seal`), the document loads, its heads are the ones the metadata names, it is in
//! the feed exactly once at the sequence number its metadata names (and the feed names no
//! record that is not there), no sequence number is past the store's last one; the stored
//! counters equal a recomputation from the documents; the audit chain verifies. `serve` runs
//! the same check in the background after it starts, logs what it finds, and `/healthz` says
//! it.

use std::collections::{BTreeMap, HashMap, HashSet};

use indicators::{Contribution, Counters, Quarter};
use sync_protocol::automerge::AutoCommit;
use sync_protocol::RecordId;

use crate::db::{Db, DbError};
use crate::records::{FeedRow, MetaRow};

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

impl Db {
    /// Reads the whole store (see the module's documentation).
    pub fn check(&self) -> Result<Report, DbError> {
        let mut report = Report::default();
        let mut problems = Vec::new();
        let cut = self.kv().begin_read()?;
        let tree = self.tree_in(&*cut)?;
        let high = Self::feed_seq_in(&*cut)?;

        // The feed: id → (commune, seq), each id once.
        let mut feed: HashMap<RecordId, (String, u64)> = HashMap::new();
        for row in crate::records::all_feed_in(&*cut)? {
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
        // Records whose part in the figures cannot be recomputed.
        let mut unreadable = 0;
        for row in crate::records::all_metas_in(&*cut)? {
            report.records += 1;
            let (id, meta) = match row {
                MetaRow::BadKey(len) => {
                    problems.push(format!("a metadata key that cannot be read ({len} bytes)"));
                    continue;
                }
                MetaRow::Record { id, meta } => (id, meta),
            };
            seen.insert(id);
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    problems.push(e.to_string());
                    unreadable += 1;
                    continue;
                }
            };
            let mut doc = match Self::doc_bytes_in(&*cut, &id) {
                Ok(Some(bytes)) => match AutoCommit::load(&bytes) {
                    Ok(doc) => doc,
                    Err(e) => {
                        problems.push(format!("record {id}: its document does not load: {e}"));
                        unreadable += 1;
                        continue;
                    }
                },
                Ok(None) => {
                    problems.push(format!("record {id}: metadata without its document"));
                    unreadable += 1;
                    continue;
                }
                Err(e) => {
                    problems.push(e.to_string());
                    unreadable += 1;
                    continue;
                }
            };
            let mut heads: Vec<[u8; 32]> = doc.get_heads().iter().map(|h| h.0).collect();
            let mut named: Vec<[u8; 32]> = meta.history.back().map(|(_, h)| h.clone()).unwrap_or_default();
            heads.sort();
            named.sort();
            if heads != named {
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
                    continue;
                }
            };
            if let Some(c) = sync_protocol::Record::parse(&view).as_ref().and_then(Contribution::from_typed) {
                for (unit, q, d) in indicators::deltas(None, Some(&c), |x| tree.chain(x)) {
                    sums.entry((unit, q)).or_default().add(&d);
                }
            }
        }
        for id in feed.keys().filter(|id| !seen.contains(*id)) {
            problems.push(format!("the feed names record {id}, which is not stored"));
        }
        for id in crate::records::all_doc_ids_in(&*cut)?.into_iter().filter(|id| !seen.contains(id)) {
            problems.push(format!("record {id}: a document without its metadata"));
        }

        // The counters, against the recomputation: only when the records themselves were sound
        // (a damaged record's part in them cannot be recomputed; it is named above).
        let mut stored: BTreeMap<String, Counters> = BTreeMap::new();
        for (label, counters) in crate::figures::stored_counters_in(&*cut)? {
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
        drop(cut);

        // The audit chain.
        match self.verify_audit_chain()? {
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
