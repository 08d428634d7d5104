//! Sparse signed counters: one record's contribution, a delta, or a materialised sum.
//!
//! Invariant: a [`Counters`] never stores a zero, so two values are equal exactly when they
//! count the same things, and `is_zero()` is `is_empty()`. Arithmetic wraps instead of
//! panicking so that `add` followed by `sub` is always the identity; real counts are many
//! orders of magnitude below `i64::MAX`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::indicator::{AgeBand, EthnicMinority, IndicatorId, Sex};
use crate::period::serde_as_string;

/// The two halves of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Numerator,
    Denominator,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Numerator => "num",
            Side::Denominator => "den",
        }
    }
}

/// Which slice of a numerator or denominator a counter holds: the total, or one category of
/// one disaggregation. For every indicator and side, the categories of each disaggregation sum
/// to the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cut {
    Total,
    Sex(Sex),
    AgeBand(AgeBand),
    EthnicMinority(EthnicMinority),
}

/// The name of one counter.
///
/// Stored keys are strings so that persisted sums stay readable and stable across versions:
/// `gbv_victims_supported.num`, `perpetrators_counselled.den.sex.male`,
/// `trafficking_returnees_supported.num.age.16_59`, `gbv_victims_supported.den.ethnic.yes`,
/// `news_items`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey(KeyRepr);

// Private so that no key names a breakdown of the news indicator, which has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum KeyRepr {
    Rate {
        indicator: IndicatorId,
        side: Side,
        cut: Cut,
    },
    NewsItems,
}

impl CounterKey {
    /// Published news items (per commune and quarter, or summed over a unit).
    pub const NEWS_ITEMS: CounterKey = CounterKey(KeyRepr::NewsItems);

    /// A counter of a rate indicator; `None` for [`IndicatorId::CommunesNewsCompliant`], which
    /// is computed from per-commune news counts rather than summed.
    pub fn rate(indicator: IndicatorId, side: Side, cut: Cut) -> Option<CounterKey> {
        indicator
            .is_disaggregated()
            .then_some(CounterKey(KeyRepr::Rate {
                indicator,
                side,
                cut,
            }))
    }
}

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (indicator, side, cut) = match self.0 {
            KeyRepr::NewsItems => return f.write_str("news_items"),
            KeyRepr::Rate {
                indicator,
                side,
                cut,
            } => (indicator, side, cut),
        };
        write!(f, "{indicator}.{}", side.as_str())?;
        match cut {
            Cut::Total => Ok(()),
            Cut::Sex(s) => write!(f, ".sex.{}", s.as_str()),
            Cut::AgeBand(a) => write!(f, ".age.{}", a.as_str()),
            Cut::EthnicMinority(e) => write!(f, ".ethnic.{}", e.as_str()),
        }
    }
}

/// A stored counter key that this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("counter key `{0}` is not known")]
pub struct UnknownCounterKey(pub String);

impl FromStr for CounterKey {
    type Err = UnknownCounterKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownCounterKey(s.to_owned());
        if s == "news_items" {
            return Ok(CounterKey::NEWS_ITEMS);
        }
        let mut parts = s.split('.');
        let indicator: IndicatorId = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let side = match parts.next() {
            Some("num") => Side::Numerator,
            Some("den") => Side::Denominator,
            _ => return Err(bad()),
        };
        let cut = match (parts.next(), parts.next()) {
            (None, _) => Cut::Total,
            (Some("sex"), Some(v)) => Cut::Sex(find(&Sex::ALL, Sex::as_str, v).ok_or_else(bad)?),
            (Some("age"), Some(v)) => {
                Cut::AgeBand(find(&AgeBand::ALL, AgeBand::as_str, v).ok_or_else(bad)?)
            }
            (Some("ethnic"), Some(v)) => Cut::EthnicMinority(
                find(&EthnicMinority::ALL, EthnicMinority::as_str, v).ok_or_else(bad)?,
            ),
            _ => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        CounterKey::rate(indicator, side, cut).ok_or_else(bad)
    }
}

fn find<T: Copy>(all: &[T], name: fn(T) -> &'static str, s: &str) -> Option<T> {
    all.iter().copied().find(|&x| name(x) == s)
}

serde_as_string!(CounterKey);

/// A sparse map from [`CounterKey`] to a signed count; absent keys are zero.
///
/// Held as a vector sorted by key (a record's contribution has a few dozen keys, a unit's sum
/// at most 73): adding one to another is one merge of two sorted lists, where a tree map made
/// a search and often a node allocation for every key (a pushed record's counters are added
/// once for its commune and once for each of its ancestors, twice over).
///
/// Serialised as a JSON-style map of key string to integer, omitting zeros, in key order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Counters(Vec<(CounterKey, i64)>);

impl Counters {
    pub fn new() -> Self {
        Counters::default()
    }

    pub fn get(&self, key: CounterKey) -> i64 {
        self.0.binary_search_by_key(&key, |&(k, _)| k).map_or(0, |i| self.0[i].1)
    }

    /// Adds `n` (which may be negative) to one counter.
    pub fn add_to(&mut self, key: CounterKey, n: i64) {
        match self.0.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => {
                let v = &mut self.0[i].1;
                *v = v.wrapping_add(n);
                if *v == 0 {
                    self.0.remove(i);
                }
            }
            Err(i) if n != 0 => self.0.insert(i, (key, n)),
            Err(_) => {}
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.merge(other, 1);
    }

    pub fn sub(&mut self, other: &Counters) {
        self.merge(other, -1);
    }

    /// `self + sign × other`, in one pass over both sorted lists; sums that come to zero are
    /// left out (the no-zero invariant).
    fn merge(&mut self, other: &Counters, sign: i64) {
        if other.0.is_empty() {
            return;
        }
        let scaled = |v: i64| if sign < 0 { v.wrapping_neg() } else { v };
        if self.0.is_empty() {
            self.0 = other.0.iter().map(|&(k, v)| (k, scaled(v))).collect();
            return;
        }
        let mine = std::mem::take(&mut self.0);
        let mut out = Vec::with_capacity(mine.len() + other.0.len());
        let (mut a, mut b) = (mine.into_iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&(ka, _)), Some(&&(kb, _))) if ka < kb => a.next(),
                (Some(&(ka, _)), Some(&&(kb, _))) if kb < ka => b.next().map(|&(k, v)| (k, scaled(v))),
                (Some(_), Some(_)) => {
                    let ((k, va), (_, vb)) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    Some((k, va.wrapping_add(scaled(*vb))))
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next().map(|&(k, v)| (k, scaled(v))),
                (None, None) => break,
            };
            if let Some((k, v)) = next.filter(|&(_, v)| v != 0) {
                out.push((k, v));
            }
        }
        self.0 = out;
    }

    /// True when every counter is zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    /// The non-zero counters, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (CounterKey, i64)> + '_ {
        self.0.iter().copied()
    }

    /// The numerator total of a rate indicator (0 for the news indicator).
    pub fn numerator(&self, indicator: IndicatorId) -> i64 {
        self.cut(indicator, Side::Numerator, Cut::Total)
    }

    /// The denominator total of a rate indicator (0 for the news indicator).
    pub fn denominator(&self, indicator: IndicatorId) -> i64 {
        self.cut(indicator, Side::Denominator, Cut::Total)
    }

    /// One slice of a rate indicator (0 for the news indicator).
    pub fn cut(&self, indicator: IndicatorId, side: Side, cut: Cut) -> i64 {
        CounterKey::rate(indicator, side, cut).map_or(0, |k| self.get(k))
    }

    pub fn news_items(&self) -> i64 {
        self.get(CounterKey::NEWS_ITEMS)
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl FromIterator<(CounterKey, i64)> for Counters {
    fn from_iter<I: IntoIterator<Item = (CounterKey, i64)>>(iter: I) -> Self {
        let mut c = Counters::new();
        for (k, v) in iter {
            c.add_to(k, v);
        }
        c
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As the tree map it replaced serialised itself: a map, in key order, its length first.
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through `FromIterator` so that stored zeros cannot break the no-zero invariant.
        Ok(BTreeMap::<CounterKey, i64>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_keys() -> Vec<CounterKey> {
        let mut keys = vec![CounterKey::NEWS_ITEMS];
        for id in IndicatorId::RATES {
            for side in [Side::Numerator, Side::Denominator] {
                let mut cuts = vec![Cut::Total];
                cuts.extend(Sex::ALL.map(Cut::Sex));
                cuts.extend(AgeBand::ALL.map(Cut::AgeBand));
                cuts.extend(EthnicMinority::ALL.map(Cut::EthnicMinority));
                keys.extend(
                    cuts.into_iter()
                        .map(|c| CounterKey::rate(id, side, c).unwrap()),
                );
            }
        }
        keys
    }

    #[test]
    fn every_key_round_trips_through_its_string() {
        let keys = all_keys();
        assert_eq!(keys.len(), 1 + 3 * 2 * 12);
        let mut seen = std::collections::BTreeSet::new();
        for k in keys {
            let s = k.to_string();
            assert!(seen.insert(s.clone()), "duplicate key string {s}");
            assert_eq!(s.parse::<CounterKey>(), Ok(k));
        }
    }

    #[test]
    fn bad_key_strings_are_rejected() {
        for bad in [
            "",
            "news",
            "gbv_victims_supported",
            "gbv_victims_supported.both",
            "gbv_victims_supported.num.sex",
            "gbv_victims_supported.num.sex.robot",
            "gbv_victims_supported.num.sex.female.extra",
            "communes_news_compliant.num",
            "nope.num",
        ] {
            assert!(bad.parse::<CounterKey>().is_err(), "{bad:?}");
        }
        assert!(CounterKey::rate(
            IndicatorId::CommunesNewsCompliant,
            Side::Numerator,
            Cut::Total
        )
        .is_none());
    }

    #[test]
    fn arithmetic_keeps_the_map_sparse() {
        let k = CounterKey::NEWS_ITEMS;
        let mut a = Counters::new();
        a.add_to(k, 2);
        let b = a.clone();
        a.sub(&b);
        assert!(a.is_zero());
        assert_eq!(a, Counters::new());
        a.sub(&b);
        assert_eq!(a.get(k), -2);
        a.add(&b);
        assert_eq!(a, Counters::new());
    }

    /// Sums, differences and single additions, in any order, against a tree map of the same
    /// arithmetic with its zeros dropped: the sorted list must hold exactly the model's
    /// entries, in key order, and read every key as the model does. Seeded; the seed is in
    /// every failure's message (`COUNTERS_SEED=<n>` replays one).
    #[test]
    fn merged_sums_match_a_tree_map_of_the_same_arithmetic() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let keys = all_keys();
        let seeds: Vec<u64> = match std::env::var("COUNTERS_SEED") {
            Ok(v) => vec![v.parse().expect("COUNTERS_SEED is a number")],
            Err(_) => (0..300).collect(),
        };
        for seed in seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let random = |rng: &mut StdRng| -> (Counters, BTreeMap<CounterKey, i64>) {
                let mut c = Counters::new();
                let mut model = BTreeMap::new();
                for _ in 0..rng.gen_range(0..40) {
                    let (k, v) = (keys[rng.gen_range(0..keys.len())], rng.gen_range(-3..=3));
                    c.add_to(k, v);
                    *model.entry(k).or_insert(0) += v;
                }
                model.retain(|_, v| *v != 0);
                (c, model)
            };
            let (mut acc, mut model) = random(&mut rng);
            for step in 0..20 {
                let (other, other_model) = random(&mut rng);
                let sign = if rng.gen_bool(0.5) { 1 } else { -1 };
                if sign > 0 { acc.add(&other) } else { acc.sub(&other) }
                for (k, v) in other_model {
                    *model.entry(k).or_insert(0) += sign * v;
                }
                model.retain(|_, v| *v != 0);
                let listed: Vec<(CounterKey, i64)> = acc.iter().collect();
                let expected: Vec<(CounterKey, i64)> = model.iter().map(|(&k, &v)| (k, v)).collect();
                assert_eq!(listed, expected, "seed {seed}, step {step}");
                assert_eq!(acc.is_zero(), model.is_empty(), "seed {seed}, step {step}");
                for &k in &keys {
                    assert_eq!(acc.get(k), model.get(&k).copied().unwrap_or(0), "seed {seed}, step {step}, key {k}");
                }
            }
            // The JSON the stores hold (figure sums, older metadata) is the tree map's, byte for
            // byte, and reads back the same.
            let json = serde_json::to_string(&acc).unwrap();
            assert_eq!(json, serde_json::to_string(&model).unwrap(), "seed {seed}");
            assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), acc, "seed {seed}");
        }
    }

    #[test]
    fn serde_is_a_compact_map_and_drops_stored_zeros() {
        let mut c = Counters::new();
        c.add_to(CounterKey::NEWS_ITEMS, 3);
        let k = CounterKey::rate(
            IndicatorId::GbvVictimsSupported,
            Side::Denominator,
            Cut::Total,
        )
        .unwrap();
        c.add_to(k, 1);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"gbv_victims_supported.den":1,"news_items":3}"#);
        assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), c);
        let with_zero =
            r#"{"gbv_victims_supported.den":1,"news_items":3,"gbv_victims_supported.num":0}"#;
        assert_eq!(serde_json::from_str::<Counters>(with_zero).unwrap(), c);
        assert!(serde_json::from_str::<Counters>(r#"{"bogus":1}"#).is_err());
    }
}
