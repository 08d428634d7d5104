//! Materialized figures: counters per (org unit, quarter), kept current in the same atomic batch
//! that stores a record change, so reading a district's figures never rescans records.
//!
//! Keys (this module's only): `c/{unit}/{quarter}` → [`Counters`] (JSON; PostgreSQL's view
//! `gesync.v_counters` reads it, so changing its form needs a migration);
//! `t/{unit}/{indicator}` → milestones; `ap/{unit}/{period}` → [`Approval`].
//! The arithmetic (contributions, deltas, reports) is the pure `indicators` crate's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use indicators::{Contribution, Counters, IndicatorId, IndicatorReport, Milestones, Period, Quarter, Targets};

use sync_core::plan::CounterDeltas;

use crate::db::{corrupt, get_json, key, read_u64, to_json, AuditEvent, Db, DbError, TREE_VERSION};
use crate::model::OrgTree;
use crate::store::{prefix_end, Batch, KvRead};

const COUNTERS: &[u8] = b"c/";
const TARGETS: &[u8] = b"t/";
const APPROVALS: &[u8] = b"ap/";
/// How many times a rebuild took the counters' drift out (big-endian u64): a drift is not an
/// exact delta like a record's, so two rebuilds must not both take out the one they both read.
const MENDED: &[u8] = b"n/figures-mended";

/// Each counter row that drifted: its unit, its quarter and how.
pub(crate) type Drifts = Vec<(String, Quarter, Drift)>;

/// A stored counter row against the records' contributions (`Db::rebuild_figures`, `rebuild.rs`).
pub(crate) enum Drift {
    /// What the sum needs added to the row.
    By(Counters),
    /// The row does not read: the sum it should hold.
    Unreadable(Counters),
}

pub(crate) fn counter_key(unit: &str, q: Quarter) -> Vec<u8> {
    key("c/", &[unit.as_bytes(), q.to_string().as_bytes()])
}

/// What names a counter row in messages: `{unit}/{quarter}`.
pub(crate) fn counter_label(unit: &str, q: Quarter) -> String {
    format!("{unit}/{q}")
}

/// The unit and quarter a [`counter_label`] names.
fn parse_counter_label(label: &str) -> Option<(String, Quarter)> {
    let (unit, q) = label.rsplit_once('/')?;
    Some((unit.to_string(), q.parse().ok()?))
}

fn target_key(unit: &str, indicator: &str) -> Vec<u8> {
    key("t/", &[unit.as_bytes(), indicator.as_bytes()])
}

fn approval_key(unit: &str, period: &str) -> Vec<u8> {
    key("ap/", &[unit.as_bytes(), period.as_bytes()])
}

/// Stored counter rows: each one's label and what it reads as (or why it does not read).
pub(crate) type StoredCounters = Vec<(String, Result<Counters, String>)>;

/// Every stored counter row `r` holds, by label ([`counter_label`]), the empty ones left out
/// (`check` compares them with a recomputation).
pub(crate) fn stored_counters_in(r: &dyn KvRead) -> Result<StoredCounters, DbError> {
    Ok(r.range(COUNTERS, &prefix_end(COUNTERS), usize::MAX)?
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k[COUNTERS.len()..]).to_string(), serde_json::from_slice::<Counters>(&v).map_err(|e| e.to_string())))
        .filter(|(_, c)| c.as_ref().map_or(true, |c| *c != Counters::default()))
        .collect())
}

/// Puts an approval into `batch`.
pub(crate) fn stage_approval(batch: &mut Batch, approval: &Approval) {
    batch.put(approval_key(&approval.org_unit, &approval.period), to_json(approval));
}

/// Every approval ever taken, as `r` holds them.
pub(crate) fn all_approvals_in(r: &dyn KvRead) -> Result<Vec<Approval>, DbError> {
    r.range(APPROVALS, &prefix_end(APPROVALS), usize::MAX)?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt("approval", e)))
        .collect()
}

/// Gives unit `into` every target set on unit `from` that `into` has not set itself, within
/// `batch` as `r` reads them (a merge); returns the indicators carried.
pub(crate) fn carry_targets_in(r: &dyn KvRead, batch: &mut Batch, from: &str, into: &str) -> Result<Vec<String>, DbError> {
    let mut carried = Vec::new();
    let prefix = key("t/", &[from.as_bytes(), b""]);
    for (k, v) in r.range(&prefix, &prefix_end(&prefix), usize::MAX)? {
        let indicator = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
        let theirs = target_key(into, &indicator);
        if r.get(&theirs)?.is_none() {
            batch.put(theirs, v);
            carried.push(indicator);
        }
    }
    Ok(carried)
}

/// A district's approval of a period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub org_unit: String,
    pub period: String,
    pub approved_by: String,
    pub approved_at: i64,
    /// The figures as approved (the `GET /api/v1/indicators` shape).
    pub figures: Value,
    /// Record changes synced after the approval that altered these figures.
    pub changes_after: u64,
    pub last_change_at: Option<i64>,
}

impl Approval {
    /// The approval of `unit` for `period`, if any, among `approvals`.
    pub fn find<'a>(approvals: &'a [Approval], unit: &str, period: Period) -> Option<&'a Approval> {
        let p = period.to_string();
        approvals.iter().find(|a| a.org_unit == unit && a.period == p)
    }
}

/// Counter sums written by a batch, to be cached once the batch is durable.
#[must_use = "cache the sums after the batch is committed"]
pub struct NewSums(Vec<(Vec<u8>, Counters)>);

/// Bound on cached (unit, quarter) entries: far above a province's few thousand; past it the
/// cache starts over (it only ever holds what the store holds).
const CACHE_LIMIT: usize = 200_000;

/// Counters, targets, approvals and the figures made of them: the repository of [`Db`] that owns this module's keys (`Db::figures`).
#[derive(Clone, Copy)]
pub struct Figures<'a> {
    pub(crate) db: &'a Db,
}

impl Figures<'_> {
    /// The stored counters of `unit` for quarter `q`.
    pub fn counters(&self, unit: &str, q: Quarter) -> Result<Counters, DbError> {
        self.counters_by_key(&counter_key(unit, q))
    }

    fn counters_by_key(&self, k: &[u8]) -> Result<Counters, DbError> {
        if self.db.kv().shared() {
            return Ok(get_json(self.db.kv(), k)?.unwrap_or_default());
        }
        let epoch = {
            let cache = self.db.inner.counters_cache.lock();
            if let Some(c) = cache.map.get(k) {
                return Ok(c.clone());
            }
            cache.epoch
        };
        let c: Counters = get_json(self.db.kv(), k)?.unwrap_or_default();
        let mut cache = self.db.inner.counters_cache.lock();
        if cache.epoch == epoch {
            if cache.map.len() >= CACHE_LIMIT {
                cache.map.clear();
            }
            cache.map.insert(k.to_vec(), c.clone());
        }
        Ok(c)
    }

    /// Adds `deltas` to the counters as write transaction `tx` reads them, into `batch`.
    /// Returns the new sums, for [`Figures::cache_counters`] once the batch is applied.
    pub(crate) fn add_counters(&self, tx: &dyn KvRead, deltas: &CounterDeltas, batch: &mut Batch) -> Result<NewSums, DbError> {
        let mut sums = Vec::new();
        let touched: Vec<(Vec<u8>, &Counters)> = deltas.iter().map(|((unit, q), d)| (counter_key(unit, *q), d)).collect();
        // A shared store is read in the transaction, all keys at once; otherwise through the
        // cache (in a write transaction nobody else changes the counters).
        let stored: Vec<Option<Counters>> = if self.db.kv().shared() {
            let keys: Vec<Vec<u8>> = touched.iter().map(|(k, _)| k.clone()).collect();
            tx.get_many(&keys)?.into_iter().map(|v| v.map(|v| serde_json::from_slice(&v).map_err(|e| corrupt("counters", e))).transpose()).collect::<Result<_, _>>()?
        } else {
            touched.iter().map(|(k, _)| self.counters_by_key(k).map(Some)).collect::<Result<_, _>>()?
        };
        for ((k, delta), stored) in touched.into_iter().zip(stored) {
            let mut sum = stored.unwrap_or_default();
            sum.add(delta);
            if sum.is_zero() {
                batch.delete(k.clone());
            } else {
                batch.put(k.clone(), to_json(&sum));
            }
            sums.push((k, sum));
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
        Self::targets_in(self.db.kv())
    }

    /// The targets as `r` reads them.
    pub(crate) fn targets_in(r: &dyn KvRead) -> Result<Targets, DbError> {
        let mut t = Targets::default();
        for (k, v) in r.range(TARGETS, &prefix_end(TARGETS), usize::MAX)? {
            let text = String::from_utf8_lossy(&k[TARGETS.len()..]).to_string();
            let (unit, ind) = text.split_once('/').ok_or_else(|| corrupt("target", "bad key"))?;
            let ind: IndicatorId = ind.parse().map_err(|e| corrupt("target", e))?;
            let m: Milestones = serde_json::from_slice(&v).map_err(|e| corrupt("target", e))?;
            t.set(unit, ind, m);
        }
        Ok(t)
    }

    /// Sets the milestones of one indicator on one unit (applies below it unless overridden).
    pub fn set_target(&self, unit: &str, ind: IndicatorId, m: &Milestones, audit: Option<AuditEvent>) -> Result<(), DbError> {
        if self.db.tree().get(unit).is_none() {
            return Err(DbError::NotFound(format!("unknown org unit `{unit}`")));
        }
        let mut b = Batch::default();
        b.put(target_key(unit, ind.as_str()), to_json(m));
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
        Self::report(&tree, &Self::targets_in(r)?, unit, period, |u, q| Ok(get_json(r, &counter_key(u, q))?.unwrap_or_default()))
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
        let mut sums = Some(self.add_counters(&*tx, &deltas, &mut batch)?);
        tx.commit_then(batch, &mut || self.cache_counters(sums.take().expect("applied once")))?;
        Ok(())
    }

    /// Takes `drift` out of the counters in one write transaction, unless the tree or the
    /// count of mended drifts moved since it was read (`seen`): a merge moves counters, and
    /// another rebuild may have taken the same drift out. Returns whether it did.
    pub(crate) fn take_out_drift(&self, seen: (u64, u64), drift: Drifts) -> Result<bool, DbError> {
        let tx = self.db.kv().begin_write()?;
        if (read_u64(&*tx, TREE_VERSION)?, read_u64(&*tx, MENDED)?) != seen {
            return Ok(false);
        }
        // The drift is from the stored rows: the cache is not trusted with them.
        self.clear_counters_cache();
        let mut deltas = CounterDeltas::default();
        let mut batch = Batch::default();
        for (unit, q, drift) in drift {
            match drift {
                Drift::By(d) => deltas.add(unit, q, &d),
                // A row that does not read: no write could change it since, so it takes the
                // sum as it stood.
                Drift::Unreadable(sum) if sum.is_zero() => batch.delete(counter_key(&unit, q)),
                Drift::Unreadable(sum) => batch.put(counter_key(&unit, q), to_json(&sum)),
            }
        }
        batch.put(MENDED, (seen.1 + 1).to_be_bytes().to_vec());
        // The cache is cleared once this commits rather than brought up to date.
        let _sums = self.add_counters(&*tx, &deltas, &mut batch)?;
        tx.commit_then(batch, &mut || self.clear_counters_cache())?;
        Ok(true)
    }

    /// Deletes the counter rows that do not read (found outside the write lock: no write can
    /// change such a row, as every write that touches it fails).
    pub(crate) fn drop_unreadable_counters(&self) -> Result<(), DbError> {
        let mut batch = Batch::default();
        for (k, v) in self.db.kv().range(COUNTERS, &prefix_end(COUNTERS), usize::MAX)? {
            if serde_json::from_slice::<Counters>(&v).is_err() {
                batch.delete(k);
            }
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
        let seen = (read_u64(cut, TREE_VERSION)?, read_u64(cut, MENDED)?);
        let mut drift = Vec::new();
        for (label, stored) in stored_counters_in(cut)? {
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
        let mut batch = Batch::default();
        batch.put(counter_key(unit, q), bytes.to_vec());
        self.db.kv().write(batch).unwrap();
    }

    /// Every stored counter, for comparing a rebuild with the incremental state.
    pub fn all_counters(&self) -> Result<BTreeMap<String, Counters>, DbError> {
        self.db.kv()
            .range(COUNTERS, &prefix_end(COUNTERS), usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k).to_string(), serde_json::from_slice(&v).map_err(|e| corrupt("counters", e))?)))
            .collect()
    }

    /// Flags, within `batch`, every approval whose unit and period a write changes, as write
    /// transaction `tx` reads them.
    pub(crate) fn flag_approvals(tx: &dyn KvRead, batch: &mut Batch, touched: Vec<(String, indicators::Quarter)>) -> Result<(), DbError> {
        if touched.is_empty() {
            return Ok(());
        }
        // Only the approvals a touched (unit, quarter) can be in: the quarter's own, its
        // half-year's and its year's, in one batched read (the write lock is held: a push must
        // not read every approval ever taken).
        let mut hits: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for (unit, q) in &touched {
            let half = if q.q() <= 2 { "S1" } else { "S2" };
            for period in [q.to_string(), format!("{}{half}", q.year()), q.year().to_string()] {
                *hits.entry(approval_key(unit, &period)).or_default() += 1;
            }
        }
        let keys: Vec<Vec<u8>> = hits.keys().cloned().collect();
        let values = tx.get_many(&keys)?;
        for (k, v) in keys.into_iter().zip(values) {
            let Some(v) = v else { continue };
            let mut a: Approval = serde_json::from_slice(&v).map_err(|e| corrupt("approval", e))?;
            a.changes_after += hits[&k];
            a.last_change_at = Some(crate::db::now_secs());
            batch.put(k, to_json(&a));
        }
        Ok(())
    }
}
