//! Materialized figures: counters per (org unit, quarter), kept current in the same atomic batch
//! that stores a record change, so reading a district's figures never rescans records; targets
//! and approvals. Their rows are read and written through the typed storage seam of
//! `figure_rows.rs`, which alone knows their keys.
//! The arithmetic (contributions, deltas, reports) is the pure `indicators` crate's.

use std::collections::BTreeMap;

use indicators::{Contribution, Counters, IndicatorId, IndicatorReport, Milestones, Period, Quarter, Targets};

use sync_core::plan::CounterDeltas;

use crate::db::{corrupt, AuditEvent, Db, DbError};
use crate::store_rows::StoreRows;
pub use crate::figure_rows::Approval;
pub(crate) use crate::figure_rows::counter_label;
use crate::figure_rows::{FigureRows, FigureWrites};
use crate::model::OrgTree;
use crate::store::{Batch, KvRead};

/// Each counter row that drifted: its unit, its quarter and how.
pub(crate) type Drifts = Vec<(String, Quarter, Drift)>;

/// A stored counter row against the records' contributions (`Db::rebuild_figures`, `rebuild.rs`).
pub(crate) enum Drift {
    /// What the sum needs added to the row.
    By(Counters),
    /// The row does not read: the sum it should hold.
    Unreadable(Counters),
}


/// The unit and quarter a [`counter_label`] names.
fn parse_counter_label(label: &str) -> Option<(String, Quarter)> {
    let (unit, q) = label.rsplit_once('/')?;
    Some((unit.to_string(), q.parse().ok()?))
}

/// Gives unit `into` every target set on unit `from` that `into` has not set itself, staged
/// into `w` as `r` reads them (a merge); returns the indicators carried.
pub(crate) fn carry_targets_in(r: &dyn KvRead, w: &mut dyn FigureWrites, from: &str, into: &str) -> Result<Vec<String>, DbError> {
    let theirs: Vec<String> = r.targets_of(into)?.into_iter().map(|(ind, _)| ind).collect();
    let mut carried = Vec::new();
    for (indicator, m) in r.targets_of(from)? {
        if !theirs.contains(&indicator) {
            w.put_target(into, indicator.parse().map_err(|e| corrupt("target", e))?, &m);
            carried.push(indicator);
        }
    }
    Ok(carried)
}

/// Counter sums written by a batch, to be cached once the batch is durable.
#[must_use = "cache the sums after the batch is committed"]
pub struct NewSums(Vec<((String, Quarter), Counters)>);

/// Bound on cached (unit, quarter) entries: far above a province's few thousand; past it the
/// cache starts over (it only ever holds what the store holds).
const CACHE_LIMIT: usize = 200_000;

/// Counters, targets, approvals and the figures made of them: a repository of [`Db`] (`Db::figures`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct Figures<'a> {
    pub(crate) db: &'a Db,
}

impl Figures<'_> {
    /// The stored counters of `unit` for quarter `q`.
    pub fn counters(&self, unit: &str, q: Quarter) -> Result<Counters, DbError> {
        self.counters_at(&(unit.to_string(), q))
    }

    fn counters_at(&self, at: &(String, Quarter)) -> Result<Counters, DbError> {
        let read = || -> Result<Counters, DbError> { Ok(self.db.kv().counters(std::slice::from_ref(at))?.pop().flatten().unwrap_or_default()) };
        if self.db.kv().shared() {
            return read();
        }
        let epoch = {
            let cache = self.db.inner.counters_cache.lock();
            if let Some(c) = cache.map.get(at) {
                return Ok(c.clone());
            }
            cache.epoch
        };
        let c = read()?;
        let mut cache = self.db.inner.counters_cache.lock();
        if cache.epoch == epoch {
            if cache.map.len() >= CACHE_LIMIT {
                cache.map.clear();
            }
            cache.map.insert(at.clone(), c.clone());
        }
        Ok(c)
    }

    /// Adds `deltas` to the counters as write transaction `tx` reads them, staged into `w`.
    /// Returns the new sums, for [`Figures::cache_counters`] once the batch is applied.
    pub(crate) fn add_counters(&self, tx: &dyn KvRead, deltas: &CounterDeltas, w: &mut dyn FigureWrites) -> Result<NewSums, DbError> {
        let mut sums = Vec::new();
        let touched: Vec<((String, Quarter), &Counters)> = deltas.iter().map(|((unit, q), d)| ((unit.clone(), *q), d)).collect();
        // A shared store is read in the transaction, all rows at once; otherwise through the
        // cache (in a write transaction nobody else changes the counters).
        let stored: Vec<Option<Counters>> = if self.db.kv().shared() {
            let at: Vec<(String, Quarter)> = touched.iter().map(|(at, _)| at.clone()).collect();
            tx.counters(&at)?
        } else {
            touched.iter().map(|(at, _)| self.counters_at(at).map(Some)).collect::<Result<_, _>>()?
        };
        for ((at, delta), stored) in touched.into_iter().zip(stored) {
            let mut sum = stored.unwrap_or_default();
            sum.add(delta);
            w.put_counters(&at.0, at.1, &sum);
            sums.push((at, sum));
        }
        Ok(NewSums(sums))
    }

    /// Puts sums that are now in the store into the cache (after their batch is applied).
    pub(crate) fn cache_counters(&self, sums: NewSums) {
        if self.db.kv().shared() {
            return;
        }
        let mut cache = self.db.inner.counters_cache.lock();
        cache.epoch += 1;
        if cache.map.len() + sums.0.len() > CACHE_LIMIT {
            cache.map.clear();
        }
        cache.map.extend(sums.0);
    }

    /// Forgets every cached counter (after a rebuild replaced them all).
    fn clear_counters_cache(&self) {
        let mut cache = self.db.inner.counters_cache.lock();
        cache.epoch += 1;
        cache.map.clear();
    }

    /// All targets set on any unit.
    pub fn targets(&self) -> Result<Targets, DbError> {
        self.db.kv().targets()
    }

    /// Sets the milestones of one indicator on one unit (applies below it unless overridden).
    pub fn set_target(&self, unit: &str, ind: IndicatorId, m: &Milestones, audit: Option<AuditEvent>) -> Result<(), DbError> {
        if self.db.tree().get(unit).is_none() {
            return Err(DbError::NotFound(format!("unknown org unit `{unit}`")));
        }
        let mut b = Batch::default();
        self.db.stage(&mut b).put_target(unit, ind, m);
        self.db.audit_log().commit_audited(b, audit)
    }

    /// The figures of `unit` for `period`, from the materialized counters only.
    pub fn indicators(&self, unit: &str, period: Period) -> Result<IndicatorReport, DbError> {
        Self::report(&self.db.tree(), &self.targets()?, unit, period, |u, q| self.counters(u, q))
    }

    /// [`Figures::indicators`] as `r` (a write transaction) reads the tree, the targets and the
    /// counters: what an approval records is what the store held when it was taken.
    pub(crate) fn indicators_in(&self, r: &dyn KvRead, unit: &str, period: Period) -> Result<IndicatorReport, DbError> {
        let tree = self.db.tree_in(r)?;
        Self::report(&tree, &r.targets()?, unit, period, |u, q| Ok(r.counters(&[(u.to_string(), q)])?.pop().flatten().unwrap_or_default()))
    }

    fn report(tree: &OrgTree, targets: &Targets, unit: &str, period: Period, counters: impl Fn(&str, Quarter) -> Result<Counters, DbError>) -> Result<IndicatorReport, DbError> {
        match tree.get(unit) {
            None => return Err(DbError::NotFound(format!("unknown org unit `{unit}`"))),
            Some(u) if !u.is_current() => {
                let now = tree.current(unit).map(|c| c.code.as_str()).unwrap_or_default();
                return Err(DbError::NotFound(format!(
                    "`{unit}` was merged into `{}` on {}: figures are made on the current map, so ask for `{now}`",
                    u.merged_into.as_deref().unwrap_or_default(),
                    u.effective.as_deref().unwrap_or_default()
                )));
            }
            Some(_) => {}
        }
        let chain = tree.chain(unit);
        let quarters = period.quarters();
        let mut sums = BTreeMap::new();
        for &q in &quarters {
            sums.insert(q, counters(unit, q)?);
        }
        let mut communes = Vec::new();
        for c in tree.communes_under(unit) {
            let mut news = Vec::with_capacity(quarters.len());
            for &q in &quarters {
                news.push(u32::try_from(counters(&c, q)?.news_items()).unwrap_or(0));
            }
            communes.push((c, news));
        }
        Ok(indicators::report(unit, period, &chain, targets, |q| sums.get(&q).cloned().unwrap_or_default(), &communes))
    }

    /// Moves records' contributions (each old one out, its new one in) in the stored counters,
    /// in one write transaction: exactly the per-record work the write path adds to a
    /// request's batch, which `bench-indicators` times (divided by the number of changes).
    pub fn apply_figure_changes(&self, changes: &[(Option<Contribution>, Option<Contribution>)]) -> Result<(), DbError> {
        let tx = self.db.kv().begin_write()?;
        let tree = self.db.tree_in(&*tx)?;
        let chain = |c: &str| tree.chain(c);
        let mut deltas = CounterDeltas::default();
        for (old, new) in changes {
            deltas.record_change(&chain, old.as_ref(), new.as_ref());
        }
        let mut batch = Batch::default();
        let mut sums = Some(self.add_counters(&*tx, &deltas, &mut self.db.stage(&mut batch))?);
        tx.commit_then(batch, &mut || self.cache_counters(sums.take().expect("applied once")))?;
        Ok(())
    }

    /// Takes `drift` out of the counters in one write transaction, unless the tree or the
    /// count of mended drifts moved since it was read (`seen`): a merge moves counters, and
    /// another rebuild may have taken the same drift out. Returns whether it did.
    pub(crate) fn take_out_drift(&self, seen: (u64, u64), drift: Drifts) -> Result<bool, DbError> {
        let tx = self.db.kv().begin_write()?;
        if (tx.tree_version()?, tx.drifts_mended()?) != seen {
            return Ok(false);
        }
        // The drift is from the stored rows: the cache is not trusted with them.
        self.clear_counters_cache();
        let mut deltas = CounterDeltas::default();
        let mut batch = Batch::default();
        let mut w = self.db.stage(&mut batch);
        for (unit, q, drift) in drift {
            match drift {
                Drift::By(d) => deltas.add(unit, q, &d),
                // A row that does not read: no write could change it since, so it takes the
                // sum as it stood.
                Drift::Unreadable(sum) => w.put_counters(&unit, q, &sum),
            }
        }
        w.set_drifts_mended(seen.1 + 1);
        // The cache is cleared once this commits rather than brought up to date.
        let _sums = self.add_counters(&*tx, &deltas, &mut w)?;
        tx.commit_then(batch, &mut || self.clear_counters_cache())?;
        Ok(true)
    }

    /// Deletes the counter rows that do not read (found outside the write lock: no write can
    /// change such a row, as every write that touches it fails).
    pub(crate) fn drop_unreadable_counters(&self) -> Result<(), DbError> {
        let mut batch = Batch::default();
        let mut w = self.db.stage(&mut batch);
        for (label, _) in self.db.kv().counter_rows()?.into_iter().filter(|(_, c)| c.is_err()) {
            w.drop_counter_row(&label);
        }
        if !batch.is_empty() {
            self.db.kv().begin_write()?.commit_then(batch, &mut || self.clear_counters_cache())?;
        }
        Ok(())
    }

    /// How far each counter stored in `cut` is from `sums` (the records' contributions, as
    /// `cut` reads them), with the version of the tree and the count of mended drifts `cut`
    /// reads ([`Figures::take_out_drift`] refuses the drift once either moved).
    pub(crate) fn drift_in(cut: &dyn KvRead, mut sums: BTreeMap<(String, Quarter), Counters>) -> Result<((u64, u64), Drifts), DbError> {
        let seen = (cut.tree_version()?, cut.drifts_mended()?);
        let mut drift = Vec::new();
        for (label, stored) in stored_counter_rows(cut)? {
            let Some((unit, q)) = parse_counter_label(&label) else {
                return Err(corrupt("counters", format!("a counter row named `{label}`")));
            };
            let sum = sums.remove(&(unit.clone(), q)).unwrap_or_default();
            match stored {
                Ok(stored) => {
                    let mut d = sum;
                    d.sub(&stored);
                    if !d.is_zero() {
                        drift.push((unit, q, Drift::By(d)));
                    }
                }
                Err(_) => drift.push((unit, q, Drift::Unreadable(sum))),
            }
        }
        // Sums with no row at all.
        drift.extend(sums.into_iter().filter(|(_, c)| !c.is_zero()).map(|((unit, q), c)| (unit, q, Drift::By(c))));
        Ok((seen, drift))
    }

    /// Overwrites a counter row with `bytes`, as a bug, a hand edit or a damaged disk might
    /// (tests of the rebuild).
    #[cfg(test)]
    pub(crate) fn overwrite_counter_row(&self, unit: &str, q: Quarter, bytes: &[u8]) {
        crate::figure_rows::overwrite_counter_row(self.db.kv(), unit, q, bytes);
    }

    /// Every stored counter by its row's label (`{unit}/{quarter}`), for comparing a rebuild
    /// with the incremental state.
    pub fn all_counters(&self) -> Result<BTreeMap<String, Counters>, DbError> {
        self.db.kv().counter_rows()?.into_iter().map(|(label, c)| Ok((label, c.map_err(|e| corrupt("counters", e))?))).collect()
    }

    /// Flags, within `batch`, every approval whose unit and period a write changes, as write
    /// transaction `tx` reads them.
    pub(crate) fn flag_approvals(tx: &dyn KvRead, w: &mut dyn FigureWrites, touched: Vec<(String, indicators::Quarter)>) -> Result<(), DbError> {
        if touched.is_empty() {
            return Ok(());
        }
        // Only the approvals a touched (unit, quarter) can be in: the quarter's own, its
        // half-year's and its year's, in one batched read (the write lock is held: a push must
        // not read every approval ever taken).
        let mut hits: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (unit, q) in &touched {
            let half = if q.q() <= 2 { "S1" } else { "S2" };
            for period in [q.to_string(), format!("{}{half}", q.year()), q.year().to_string()] {
                *hits.entry((unit.clone(), period)).or_default() += 1;
            }
        }
        let at: Vec<(String, String)> = hits.keys().cloned().collect();
        for (at, a) in at.iter().zip(tx.approvals(&at)?) {
            let Some(mut a) = a else { continue };
            a.changes_after += hits[at];
            a.last_change_at = Some(crate::db::now_secs());
            w.put_approval(&a);
        }
        Ok(())
    }
}

/// Every stored counter row that reads as something else than zero, or does not read, by label
/// (`check` compares them with a recomputation; a rebuild with the records' contributions).
pub(crate) fn stored_counter_rows(r: &dyn KvRead) -> Result<Vec<crate::figure_rows::CounterRow>, DbError> {
    Ok(r.counter_rows()?.into_iter().filter(|(_, c)| c.as_ref().map_or(true, |c| *c != Counters::default())).collect())
}
