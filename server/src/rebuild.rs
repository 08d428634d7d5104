//! `rebuild-figures`: every record's contribution and reporting row recomputed from its
//! document, then every counter from those contributions (recovery, a changed formula,
//! `migrate`, `restore`).
//!
//! It reads the records (`records.rs`) and writes the figures (`figures.rs`) through their
//! repositories, and owns no key: it sits above both, so that neither calls back into the
//! other.

use std::collections::{BTreeMap, HashSet};

use indicators::{Contribution, Counters, Quarter};
use sync_core::plan::CounterDeltas;
use sync_protocol::RecordId;

use crate::db::{corrupt, Db, DbError};
use crate::figures::{Drifts, Figures};
use crate::record_rows::{MetaRow, RecordRows, RecordWrites};
use crate::store::Batch;

/// Records a write transaction of [`Db::rebuild_figures`] reads: some hundreds of
/// milliseconds of the write lock at most (a document loads in well under a millisecond).
const REBUILD_PAGE: usize = 500;

/// Records the drift's consistent read holds in memory at once.
const DRIFT_PAGE: usize = 1_000;

impl Db {
    /// Recomputes every record's contribution and reporting row from its document, then every
    /// counter from those contributions, and returns how many records were read.
    ///
    /// In write transactions of [`REBUILD_PAGE`] records each, so that other writes (every
    /// replica's syncs, on a shared store) go on between them rather than wait for the whole
    /// rebuild (a minute for a million records). Each moves its records' contributions in the
    /// counters as a sync does, so the figures add up after every one. Then the counters'
    /// drift from the contributions (a bug, a hand edit, a damaged disk) is found in a
    /// consistent read and taken out in one short write transaction. Counter rows that do not
    /// read are dropped first: they would stop the pages, and the drift puts back what they
    /// should hold.
    pub fn rebuild_figures(&self) -> Result<usize, DbError> {
        self.rebuild_figures_paged(REBUILD_PAGE)
    }

    /// [`Db::rebuild_figures`] in write transactions of `page` records.
    pub(crate) fn rebuild_figures_paged(&self, page: usize) -> Result<usize, DbError> {
        let figures = self.figures();
        let report_rows = self.kv().keeps_report_rows();
        let mut read = 0;
        // Records whose document is missing (a damaged store: `check` names them): their
        // metadata is left as it is, and out of the sums, as the recomputation leaves them.
        let mut without_document = HashSet::new();
        figures.drop_unreadable_counters()?;
        let mut after = None;
        loop {
            let tx = self.kv().begin_write()?;
            let tree = self.tree_in(&*tx)?;
            let chain = |c: &str| tree.chain(c);
            let rows = tx.metas_after(after.as_ref(), page)?;
            let last_page = rows.len() < page;
            let mut deltas = CounterDeltas::default();
            let mut batch = Batch::default();
            for row in rows {
                let MetaRow::Record { id, meta } = row else { return Err(corrupt("meta", "bad key")) };
                after = Some(id);
                let mut meta = meta?;
                let Some(bytes) = tx.document(&id)? else {
                    without_document.insert(id);
                    continue;
                };
                let doc = sync_protocol::automerge::AutoCommit::load(&bytes).map_err(|e| corrupt("record document", e))?;
                let view = sync_protocol::doc::view(&doc).map_err(|e| corrupt("doc", e))?;
                let c = sync_protocol::Record::parse(&view).as_ref().and_then(Contribution::from_typed);
                deltas.record_change(&chain, meta.contribution.as_ref(), c.as_ref());
                meta.contribution = c;
                let mut staged = self.stage(&mut batch);
                if report_rows {
                    // (Facts are worked out only for a store that keeps the rows.)
                    staged.put_report_row(&id, &meta, sync_core::facts::facts(&view).as_ref());
                }
                staged.put_meta(&id, &meta);
                read += 1;
            }
            let mut sums = Some(figures.add_counters(&*tx, &deltas, &mut self.stage(&mut batch))?);
            tx.commit_then(batch, &mut || figures.cache_counters(sums.take().expect("applied once")))?;
            if last_page {
                break;
            }
        }
        // Then the counters' drift from the contributions: found in a consistent read beside
        // the writes, taken out in one short write transaction. The writes in between moved
        // the counters exactly as they moved the contributions, so the drift is the same then.
        for _ in 0..3 {
            let (seen, drift) = self.counters_drift(&without_document)?;
            if figures.take_out_drift(seen, drift)? {
                return Ok(read);
            }
        }
        Err(DbError::Conflict("the org-unit tree or the figures kept changing under other rebuilds: run it again".into()))
    }

    /// How far each stored counter is from the sum of the records' contributions (leaving out
    /// `skip`), in one consistent read, with the version of the tree and the count of mended
    /// drifts it read.
    pub(crate) fn counters_drift(&self, skip: &HashSet<RecordId>) -> Result<((u64, u64), Drifts), DbError> {
        let cut = self.kv().begin_read()?;
        let tree = self.tree_in(&*cut)?;
        let mut sums: BTreeMap<(String, Quarter), Counters> = BTreeMap::new();
        cut.for_each_meta(DRIFT_PAGE, &mut |row| {
            let MetaRow::Record { id, meta } = row else { return Err(corrupt("meta", "bad key")) };
            if !skip.contains(&id) {
                for (unit, q, d) in indicators::deltas(None, meta?.contribution.as_ref(), |x| tree.chain(x)) {
                    sums.entry((unit, q)).or_default().add(&d);
                }
            }
            Ok(())
        })?;
        Figures::drift_in(&*cut, sums)
    }
}
