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
/// Serialised as a JSON-style map of key string to integer, omitting zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(BTreeMap<CounterKey, i64>);

impl Counters {
    pub fn new() -> Self {
        Counters::default()
    }

    pub fn get(&self, key: CounterKey) -> i64 {
        self.0.get(&key).copied().unwrap_or(0)
    }

    /// Adds `n` (which may be negative) to one counter.
    pub fn add_to(&mut self, key: CounterKey, n: i64) {
        let v = self.0.entry(key).or_insert(0);
        *v = v.wrapping_add(n);
        if *v == 0 {
            self.0.remove(&key);
        }
    }

    pub fn add(&mut self, other: &Counters) {
        for (&k, &v) in &other.0 {
            self.add_to(k, v);
        }
    }

    pub fn sub(&mut self, other: &Counters) {
        for (&k, &v) in &other.0 {
            self.add_to(k, v.wrapping_neg());
        }
    }

    /// True when every counter is zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    /// The non-zero counters, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (CounterKey, i64)> + '_ {
        self.0.iter().map(|(&k, &v)| (k, v))
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
        self.0.serialize(s)
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
