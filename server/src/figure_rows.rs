//! The typed storage seam of the figures: counters per (unit, quarter), targets per (unit,
//! indicator), approvals per (unit, period), and how many times a rebuild took the counters'
//! drift out, as rows, with no key in sight.
//!
//! [`FigureRows`] is one consistent read of them; [`FigureWrites`] the rows a write transaction
//! stages. The `figures` repository above decides what they hold (sums, flags, drifts), and
//! `review`, `org_units`, `rebuild` and `check` reach them through it or through this seam. The
//! keyspace implements both (below: its keys); so does `record_rows::MemRows` in tests, in
//! plain maps, and the seam's conformance suite runs on both.

use indicators::{Counters, IndicatorId, Milestones, Period, Quarter, Targets};


use crate::db::{corrupt, from_json, key, read_u64, to_json, DbError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use crate::record_rows::KeyspaceWrites;
use crate::store::{prefix_end, KvRead};

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

/// What names a counter row in messages and in [`crate::figure_rows::CounterRow`]:
/// `{unit}/{quarter}`.
pub(crate) fn counter_label(unit: &str, q: Quarter) -> String {
    format!("{unit}/{q}")
}

/// A stored counter row: its label (`{unit}/{quarter}`, see [`counter_label`])
/// and what it reads as, or why it does not read.
pub(crate) type CounterRow = (String, Result<Counters, String>);

/// One consistent read of the figures' rows.
pub(crate) trait FigureRows {
    /// The stored counters of several (unit, quarter) rows, in `at`'s order (`None`: no row).
    fn counters(&self, at: &[(String, Quarter)]) -> Result<Vec<Option<Counters>>, DbError>;
    /// Every stored counter row, in label order, readable or not (`check`, the rebuild).
    fn counter_rows(&self) -> Result<Vec<CounterRow>, DbError>;
    /// Every target set on any unit.
    fn targets(&self) -> Result<Targets, DbError>;
    /// The targets set on `unit` itself: (indicator, milestones).
    fn targets_of(&self, unit: &str) -> Result<Vec<(String, Milestones)>, DbError>;
    /// The approvals of several (unit, period) pairs, in `at`'s order.
    fn approvals(&self, at: &[(String, String)]) -> Result<Vec<Option<Approval>>, DbError>;
    /// Every approval ever taken.
    fn all_approvals(&self) -> Result<Vec<Approval>, DbError>;
    /// How many times a rebuild took the counters' drift out.
    fn drifts_mended(&self) -> Result<u64, DbError>;
}

/// The figures' rows a write transaction stages.
pub(crate) trait FigureWrites {
    /// A counter row's new sum (a zero sum removes the row).
    fn put_counters(&mut self, unit: &str, q: Quarter, sum: &Counters);
    /// Removes the counter row of `label` as it was read ([`FigureRows::counter_rows`]): a row
    /// that does not read.
    fn drop_counter_row(&mut self, label: &str);
    fn put_target(&mut self, unit: &str, indicator: IndicatorId, m: &Milestones);
    fn put_approval(&mut self, approval: &Approval);
    fn set_drifts_mended(&mut self, n: u64);
}

// ---------------------------------------------------------------------------------------------
// The keyspace. Keys: `c/{unit}/{quarter}` → [`Counters`] (JSON; PostgreSQL's view
// `gesync.v_counters` reads it, so changing its form needs a migration);
// `t/{unit}/{indicator}` → [`Milestones`] (JSON, read by the trigger into `gesync.targets`);
// `ap/{unit}/{period}` → [`Approval`] (JSON, read into `gesync.approvals`);
// `n/figures-mended` → big-endian u64.

const COUNTERS: &[u8] = b"c/";
const TARGETS: &[u8] = b"t/";
const APPROVALS: &[u8] = b"ap/";
/// A drift is not an exact delta like a record's, so two rebuilds must not both take out the
/// one they both read: each that does counts itself here.
const MENDED: &[u8] = b"n/figures-mended";

fn counter_key(unit: &str, q: Quarter) -> Vec<u8> {
    key("c/", &[unit.as_bytes(), q.to_string().as_bytes()])
}

fn target_key(unit: &str, indicator: &str) -> Vec<u8> {
    key("t/", &[unit.as_bytes(), indicator.as_bytes()])
}

fn approval_key(unit: &str, period: &str) -> Vec<u8> {
    key("ap/", &[unit.as_bytes(), period.as_bytes()])
}

impl<R: KvRead + ?Sized> FigureRows for R {
    fn counters(&self, at: &[(String, Quarter)]) -> Result<Vec<Option<Counters>>, DbError> {
        let keys: Vec<Vec<u8>> = at.iter().map(|(u, q)| counter_key(u, *q)).collect();
        self.get_many(&keys)?.into_iter().map(|v| v.map(|v| from_json("counters", &v)).transpose()).collect()
    }

    fn counter_rows(&self) -> Result<Vec<CounterRow>, DbError> {
        Ok(self
            .range(COUNTERS, &prefix_end(COUNTERS), usize::MAX)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k[COUNTERS.len()..]).to_string(), serde_json::from_slice::<Counters>(&v).map_err(|e| e.to_string())))
            .collect())
    }

    fn targets(&self) -> Result<Targets, DbError> {
        let mut t = Targets::default();
        for (k, v) in self.range(TARGETS, &prefix_end(TARGETS), usize::MAX)? {
            let text = String::from_utf8_lossy(&k[TARGETS.len()..]).to_string();
            let (unit, ind) = text.split_once('/').ok_or_else(|| corrupt("target", "bad key"))?;
            let ind: IndicatorId = ind.parse().map_err(|e| corrupt("target", e))?;
            t.set(unit, ind, from_json("target", &v)?);
        }
        Ok(t)
    }

    fn targets_of(&self, unit: &str) -> Result<Vec<(String, Milestones)>, DbError> {
        let prefix = key("t/", &[unit.as_bytes(), b""]);
        self.range(&prefix, &prefix_end(&prefix), usize::MAX)?.into_iter().map(|(k, v)| Ok((String::from_utf8_lossy(&k[prefix.len()..]).to_string(), from_json("target", &v)?))).collect()
    }

    fn approvals(&self, at: &[(String, String)]) -> Result<Vec<Option<Approval>>, DbError> {
        let keys: Vec<Vec<u8>> = at.iter().map(|(u, p)| approval_key(u, p)).collect();
        self.get_many(&keys)?.into_iter().map(|v| v.map(|v| from_json("approval", &v)).transpose()).collect()
    }

    fn all_approvals(&self) -> Result<Vec<Approval>, DbError> {
        self.range(APPROVALS, &prefix_end(APPROVALS), usize::MAX)?.into_iter().map(|(_, v)| from_json("approval", &v)).collect()
    }

    fn drifts_mended(&self) -> Result<u64, DbError> {
        read_u64(self, MENDED)
    }
}

impl FigureWrites for KeyspaceWrites<'_> {
    fn put_counters(&mut self, unit: &str, q: Quarter, sum: &Counters) {
        if sum.is_zero() {
            self.batch.delete(counter_key(unit, q));
        } else {
            self.batch.put(counter_key(unit, q), to_json(sum));
        }
    }

    fn drop_counter_row(&mut self, label: &str) {
        self.batch.delete([COUNTERS, label.as_bytes()].concat());
    }

    fn put_target(&mut self, unit: &str, indicator: IndicatorId, m: &Milestones) {
        self.batch.put(target_key(unit, indicator.as_str()), to_json(m));
    }

    fn put_approval(&mut self, approval: &Approval) {
        self.batch.put(approval_key(&approval.org_unit, &approval.period), to_json(approval));
    }

    fn set_drifts_mended(&mut self, n: u64) {
        self.batch.put(MENDED.to_vec(), n.to_be_bytes().to_vec());
    }
}

/// Overwrites a counter row with `bytes`, as a bug, a hand edit or a damaged disk might
/// (tests of the rebuild).
#[cfg(test)]
pub(crate) fn overwrite_counter_row(kv: &dyn crate::store::Kv, unit: &str, q: Quarter, bytes: &[u8]) {
    let mut batch = crate::store::Batch::default();
    batch.put(counter_key(unit, q), bytes.to_vec());
    kv.write(batch).unwrap();
}

#[cfg(test)]
impl FigureRows for crate::record_rows::MemRows {
    fn counters(&self, at: &[(String, Quarter)]) -> Result<Vec<Option<Counters>>, DbError> {
        Ok(at.iter().map(|(u, q)| self.counters.get(&counter_label(u, *q)).cloned()).collect())
    }
    fn counter_rows(&self) -> Result<Vec<CounterRow>, DbError> {
        Ok(self.counters.iter().map(|(label, c)| (label.clone(), Ok(c.clone()))).collect())
    }
    fn targets(&self) -> Result<Targets, DbError> {
        let mut t = Targets::default();
        for ((unit, ind), m) in &self.targets {
            t.set(unit, ind.parse().map_err(|e| corrupt("target", e))?, m.clone());
        }
        Ok(t)
    }
    fn targets_of(&self, unit: &str) -> Result<Vec<(String, Milestones)>, DbError> {
        Ok(self.targets.iter().filter(|((u, _), _)| u == unit).map(|((_, ind), m)| (ind.clone(), m.clone())).collect())
    }
    fn approvals(&self, at: &[(String, String)]) -> Result<Vec<Option<Approval>>, DbError> {
        Ok(at.iter().map(|at| self.approvals.get(at).cloned()).collect())
    }
    fn all_approvals(&self) -> Result<Vec<Approval>, DbError> {
        Ok(self.approvals.values().cloned().collect())
    }
    fn drifts_mended(&self) -> Result<u64, DbError> {
        Ok(self.mended)
    }
}

#[cfg(test)]
impl FigureWrites for crate::record_rows::MemRows {
    fn put_counters(&mut self, unit: &str, q: Quarter, sum: &Counters) {
        let label = counter_label(unit, q);
        if sum.is_zero() {
            self.counters.remove(&label);
        } else {
            self.counters.insert(label, sum.clone());
        }
    }
    fn drop_counter_row(&mut self, label: &str) {
        self.counters.remove(label);
    }
    fn put_target(&mut self, unit: &str, indicator: IndicatorId, m: &Milestones) {
        self.targets.insert((unit.to_string(), indicator.as_str().to_string()), m.clone());
    }
    fn put_approval(&mut self, approval: &Approval) {
        self.approvals.insert((approval.org_unit.clone(), approval.period.clone()), approval.clone());
    }
    fn set_drifts_mended(&mut self, n: u64) {
        self.mended = n;
    }
}

/// The figures' part of the seams' conformance suite (see `record_rows::conform`): run on
/// `MemRows` and on the keyspace over every store.
#[cfg(test)]
pub(crate) mod conform {
    use super::*;
    use crate::record_rows::conform::RowStore;

    fn counters(news: i64) -> Counters {
        let mut c = Counters::default();
        c.add_to(indicators::CounterKey::NEWS_ITEMS, news);
        c
    }

    fn approval(unit: &str, period: &str, changes_after: u64) -> Approval {
        Approval { org_unit: unit.into(), period: period.into(), approved_by: "district1".into(), approved_at: 1_736_000_000, figures: serde_json::json!({"n": 1}), changes_after, last_change_at: None }
    }

    fn same(a: &Approval, b: &Approval) -> bool {
        serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
    }

    pub(crate) fn suite<S: RowStore>(store: &mut S) {
        let (q1, q2): (Quarter, Quarter) = ("2025Q1".parse().unwrap(), "2025Q2".parse().unwrap());
        let at = |u: &str, q: Quarter| (u.to_string(), q);
        {
            let cut = store.cut();
            assert_eq!(cut.counters(&[at("04701", q1)]).unwrap(), vec![None], "an empty store's counters");
            assert!(cut.counter_rows().unwrap().is_empty() && cut.all_approvals().unwrap().is_empty());
            assert_eq!(cut.drifts_mended().unwrap(), 0);
        }
        let goal = Milestones::new([(2025, 0.8), (2030, 0.9)]).unwrap();
        let ind: IndicatorId = IndicatorId::ALL[0];
        store.commit(&mut |w| {
            w.put_counters("04701", q1, &counters(3));
            w.put_counters("04701", q2, &counters(1));
            w.put_counters("047", q1, &counters(3));
            w.put_counters("04702", q1, &Counters::default());
            w.put_target("04", ind, &goal);
            w.put_approval(&approval("047", "2025Q1", 0));
            w.put_approval(&approval("047", "2025", 2));
            w.set_drifts_mended(1);
        });
        {
            let cut = store.cut();
            assert_eq!(cut.counters(&[at("047", q1), at("04702", q1), at("04701", q2)]).unwrap(), vec![Some(counters(3)), None, Some(counters(1))], "in the order asked; a zero sum is no row");
            let rows: Vec<(String, Counters)> = cut.counter_rows().unwrap().into_iter().map(|(l, c)| (l, c.unwrap())).collect();
            assert_eq!(rows, vec![("047/2025Q1".to_string(), counters(3)), ("04701/2025Q1".into(), counters(3)), ("04701/2025Q2".into(), counters(1))], "every row, in label order");
            assert_eq!(cut.targets().unwrap().milestones_for(&["04701".into(), "047".into(), "04".into()], ind), Some(&goal), "a province's target applies below it");
            assert_eq!(cut.targets_of("04").unwrap(), vec![(ind.as_str().to_string(), goal.clone())]);
            assert!(cut.targets_of("047").unwrap().is_empty(), "only targets set on the unit itself");
            let got = cut.approvals(&[("047".into(), "2025".into()), ("047".into(), "2025S1".into())]).unwrap();
            assert!(same(got[0].as_ref().unwrap(), &approval("047", "2025", 2)) && got[1].is_none());
            assert_eq!(cut.all_approvals().unwrap().len(), 2);
            assert_eq!(cut.drifts_mended().unwrap(), 1);
        }
        store.commit(&mut |w| {
            w.put_counters("04701", q2, &Counters::default());
            w.drop_counter_row("047/2025Q1");
            w.put_approval(&approval("047", "2025", 3));
            w.set_drifts_mended(2);
        });
        let cut = store.cut();
        assert_eq!(cut.counters(&[at("04701", q2), at("047", q1), at("04701", q1)]).unwrap(), vec![None, None, Some(counters(3))], "a row summed to zero, and a row dropped, are gone");
        assert_eq!(cut.counter_rows().unwrap().len(), 1);
        assert!(same(cut.approvals(&[("047".into(), "2025".into())]).unwrap()[0].as_ref().unwrap(), &approval("047", "2025", 3)), "an approval rewritten");
        assert_eq!(cut.drifts_mended().unwrap(), 2);
    }
}
