//! What one record adds to the sums, and how a change to it moves the sums.
//!
//! The server keeps materialised [`Counters`] per (org unit, quarter). When a record changes it
//! subtracts the record's previous contribution and adds the new one at the commune and every
//! ancestor ([`deltas`]); [`from_scratch`] recomputes the same sums from the records alone.
//! The two must always agree; `tests/incremental.rs` checks that on random histories.

use std::collections::BTreeMap;

use chrono::Datelike;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_protocol::Record;

use crate::counters::{CounterKey, Counters, Cut, Side};
use crate::indicator::{AgeBand, EthnicMinority, IndicatorId, Sex};
use crate::period::Quarter;

/// The counters one record adds to its commune for the quarter of its date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    pub commune: String,
    pub quarter: Quarter,
    pub counters: Counters,
}

impl Contribution {
    /// Reads a record's JSON view and applies the formulas of `domain.md`.
    ///
    /// `None` when the record counts nowhere: deleted, not an object, unknown `kind`, no
    /// `commune`, a missing or invalid date, or nothing to count (a returnee without
    /// `needs_support`). Never panics on malformed input. Missing or null flags read as
    /// `false`; a missing sex as `unknown`; a missing birth year as unknown age.
    pub fn from_record(record: &Value) -> Option<Contribution> {
        Self::from_typed(&Record::parse(record)?)
    }

    /// The formulas of `domain.md` over a record's typed view.
    pub fn from_typed(record: &Record) -> Option<Contribution> {
        if record.deleted() || record.commune().is_empty() {
            return None;
        }
        let date = record.date()?;
        let mut counters = Counters::new();
        match record {
            Record::GbvCase(case) => {
                let victim = Who {
                    sex: Sex::from_text(case.victim.sex.as_deref()),
                    age: AgeBand::from_years(date.year(), case.victim.birth_year),
                    ethnic: EthnicMinority::from_flag(case.victim.ethnic_minority),
                };
                count(&mut counters, IndicatorId::GbvVictimsSupported, victim, true, case.services > 0);
                let perp = &case.perpetrator;
                let who = Who {
                    sex: Sex::from_text(perp.sex.as_deref()),
                    // The perpetrator's age and ethnicity are not recorded.
                    age: AgeBand::Unknown,
                    ethnic: EthnicMinority::Unknown,
                };
                count(&mut counters, IndicatorId::PerpetratorsCounselled, who, perp.detected && !perp.prosecuted, perp.counselled);
            }
            Record::TraffickingReturnee(r) => {
                let who = Who {
                    sex: Sex::from_text(r.person.sex.as_deref()),
                    age: AgeBand::from_years(date.year(), r.person.birth_year),
                    ethnic: EthnicMinority::Unknown,
                };
                count(&mut counters, IndicatorId::TraffickingReturneesSupported, who, r.needs_support, r.support > 0);
            }
            Record::NewsItem(_) => counters.add_to(CounterKey::NEWS_ITEMS, 1),
        }
        if counters.is_zero() {
            return None;
        }
        Some(Contribution { commune: record.commune().to_owned(), quarter: Quarter::from_date(date).ok()?, counters })
    }
}

/// The categories one counted person falls in.
#[derive(Clone, Copy)]
struct Who {
    sex: Sex,
    age: AgeBand,
    ethnic: EthnicMinority,
}

/// Adds one person to the denominator if `in_denominator`, and to the numerator as well if
/// `in_numerator` too: the numerator is always a subset of the denominator.
fn count(c: &mut Counters, id: IndicatorId, who: Who, in_denominator: bool, in_numerator: bool) {
    if !in_denominator {
        return;
    }
    let sides: &[Side] = if in_numerator {
        &[Side::Denominator, Side::Numerator]
    } else {
        &[Side::Denominator]
    };
    for &side in sides {
        for cut in [
            Cut::Total,
            Cut::Sex(who.sex),
            Cut::AgeBand(who.age),
            Cut::EthnicMinority(who.ethnic),
        ] {
            if let Some(key) = CounterKey::rate(id, side, cut) {
                c.add_to(key, 1);
            }
        }
    }
}

/// The signed changes to materialised sums when a record's contribution goes from `old` to
/// `new` (either may be `None`: created, deleted, malformed).
///
/// Each change applies to the commune and to every unit `ancestors_of(commune)` returns (its
/// parent, grandparent, …, root). Changes to the same (unit, quarter) are merged and zero
/// changes dropped, so an edit that does not touch any counted field yields nothing. Sorted by
/// (unit, quarter).
pub fn deltas(
    old: Option<&Contribution>,
    new: Option<&Contribution>,
    ancestors_of: impl Fn(&str) -> Vec<String>,
) -> Vec<(String, Quarter, Counters)> {
    let mut acc: BTreeMap<(String, Quarter), Counters> = BTreeMap::new();
    for (c, sign) in [(old, -1), (new, 1)] {
        let Some(c) = c else { continue };
        for unit in chain_of(&c.commune, &ancestors_of) {
            let entry = acc.entry((unit, c.quarter)).or_default();
            if sign < 0 {
                entry.sub(&c.counters);
            } else {
                entry.add(&c.counters);
            }
        }
    }
    acc.into_iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|((u, q), d)| (u, q, d))
        .collect()
}

/// The commune and its ancestors, each once: a caller whose `ancestors_of` includes the unit
/// itself, or repeats one, must not have it counted twice.
fn chain_of(commune: &str, ancestors_of: &impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut chain = vec![commune.to_owned()];
    for a in ancestors_of(commune) {
        if !chain.contains(&a) {
            chain.push(a);
        }
    }
    chain
}

/// The materialised sums for a set of records, computed from nothing: every (unit, quarter)
/// with a non-zero sum, where the units are each record's commune and its ancestors.
pub fn from_scratch(
    records: &[Value],
    ancestors_of: impl Fn(&str) -> Vec<String>,
) -> BTreeMap<(String, Quarter), Counters> {
    let mut sums: BTreeMap<(String, Quarter), Counters> = BTreeMap::new();
    for c in records.iter().filter_map(Contribution::from_record) {
        for unit in chain_of(&c.commune, &ancestors_of) {
            sums.entry((unit, c.quarter)).or_default().add(&c.counters);
        }
    }
    sums.retain(|_, c| !c.is_zero());
    sums
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn gbv_case() -> Value {
        json!({"id":"0f8a5a2e-6f1c-4a53-9d5b-111111111111","kind":"gbv_case","commune":"04123",
            "detected_on":"2025-03-01","setting":"domestic","violence_types":["physical"],
            "victim":{"sex":"female","birth_year":1990,"ethnic_minority":true,"disability":false},
            "services":[{"kind":"health","provided_on":"2025-03-02","provider":"TYT"}],
            "perpetrator":{"detected":true,"sex":"male","prosecuted":false,"counselled":true,
                "counselled_on":"2025-04-01"},
            "status":"open","notes":"...","deleted":false,"deleted_reason":null})
    }

    #[test]
    fn a_full_gbv_case_counts_victim_and_perpetrator() {
        let c = Contribution::from_record(&gbv_case()).unwrap();
        assert_eq!(c.commune, "04123");
        assert_eq!(c.quarter.to_string(), "2025Q1");
        let v = IndicatorId::GbvVictimsSupported;
        let p = IndicatorId::PerpetratorsCounselled;
        let cs = &c.counters;
        for side in [Side::Numerator, Side::Denominator] {
            assert_eq!(cs.cut(v, side, Cut::Total), 1);
            assert_eq!(cs.cut(v, side, Cut::Sex(Sex::Female)), 1);
            assert_eq!(cs.cut(v, side, Cut::AgeBand(AgeBand::From16To59)), 1);
            assert_eq!(cs.cut(v, side, Cut::EthnicMinority(EthnicMinority::Yes)), 1);
            assert_eq!(cs.cut(p, side, Cut::Total), 1);
            assert_eq!(cs.cut(p, side, Cut::Sex(Sex::Male)), 1);
            assert_eq!(cs.cut(p, side, Cut::AgeBand(AgeBand::Unknown)), 1);
            assert_eq!(
                cs.cut(p, side, Cut::EthnicMinority(EthnicMinority::Unknown)),
                1
            );
        }
        // 2 indicators × 2 sides × (total + 3 breakdowns), nothing else.
        assert_eq!(cs.iter().count(), 16);
        assert_eq!(cs.numerator(IndicatorId::TraffickingReturneesSupported), 0);
        assert_eq!(cs.news_items(), 0);
    }

    #[test]
    fn a_victim_without_services_is_in_the_denominator_only() {
        let mut r = gbv_case();
        r["services"] = json!([]);
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!(c.denominator(IndicatorId::GbvVictimsSupported), 1);
        assert_eq!(c.numerator(IndicatorId::GbvVictimsSupported), 0);
        r["services"] = json!([null]);
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!(c.numerator(IndicatorId::GbvVictimsSupported), 0);
        r.as_object_mut().unwrap().remove("services");
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!(c.numerator(IndicatorId::GbvVictimsSupported), 0);
    }

    #[test]
    fn prosecuted_or_undetected_perpetrators_are_excluded() {
        let p = IndicatorId::PerpetratorsCounselled;
        let mut r = gbv_case();
        r["perpetrator"]["prosecuted"] = json!(true);
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!((c.numerator(p), c.denominator(p)), (0, 0));
        // The victim still counts.
        assert_eq!(c.denominator(IndicatorId::GbvVictimsSupported), 1);

        let mut r = gbv_case();
        r["perpetrator"]["detected"] = json!(false);
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!((c.numerator(p), c.denominator(p)), (0, 0));

        let mut r = gbv_case();
        r["perpetrator"]["counselled"] = Value::Null;
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!((c.numerator(p), c.denominator(p)), (0, 1));

        let mut r = gbv_case();
        r["perpetrator"]["prosecuted"] = Value::Null; // null reads as false
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!((c.numerator(p), c.denominator(p)), (1, 1));

        let mut r = gbv_case();
        r.as_object_mut().unwrap().remove("perpetrator");
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!((c.numerator(p), c.denominator(p)), (0, 0));
    }

    #[test]
    fn missing_victim_details_count_as_unknown() {
        let mut r = gbv_case();
        r["victim"] = json!({"birth_year": null});
        let c = Contribution::from_record(&r).unwrap().counters;
        let v = IndicatorId::GbvVictimsSupported;
        let s = Side::Denominator;
        assert_eq!(c.cut(v, s, Cut::Sex(Sex::Unknown)), 1);
        assert_eq!(c.cut(v, s, Cut::AgeBand(AgeBand::Unknown)), 1);
        assert_eq!(c.cut(v, s, Cut::EthnicMinority(EthnicMinority::Unknown)), 1);
        r["victim"] = json!({"sex": "robot", "birth_year": "1990", "ethnic_minority": false});
        let c = Contribution::from_record(&r).unwrap().counters;
        assert_eq!(c.cut(v, s, Cut::Sex(Sex::Unknown)), 1);
        assert_eq!(c.cut(v, s, Cut::AgeBand(AgeBand::Unknown)), 1);
        assert_eq!(c.cut(v, s, Cut::EthnicMinority(EthnicMinority::No)), 1);
    }

    #[test]
    fn returnees_count_only_when_they_need_support() {
        let t = IndicatorId::TraffickingReturneesSupported;
        let mut r = json!({"id":"x","kind":"trafficking_returnee","commune":"04123",
            "identified_on":"2025-05-01","sex":"female","birth_year":2010,"needs_support":true,
            "support":[{"kind":"health","provided_on":"2025-05-03"}],"reintegrated":false,
            "deleted":false});
        let c = Contribution::from_record(&r).unwrap();
        assert_eq!(c.quarter.to_string(), "2025Q2");
        let cs = &c.counters;
        assert_eq!((cs.numerator(t), cs.denominator(t)), (1, 1));
        assert_eq!(
            cs.cut(t, Side::Numerator, Cut::AgeBand(AgeBand::Under16)),
            1
        );
        assert_eq!(
            cs.cut(
                t,
                Side::Numerator,
                Cut::EthnicMinority(EthnicMinority::Unknown)
            ),
            1
        );

        r["support"] = json!([]);
        let cs = Contribution::from_record(&r).unwrap().counters;
        assert_eq!((cs.numerator(t), cs.denominator(t)), (0, 1));

        r["needs_support"] = json!(false);
        r["support"] = json!([{"kind":"health"}]);
        assert_eq!(Contribution::from_record(&r), None);
        r.as_object_mut().unwrap().remove("needs_support");
        assert_eq!(Contribution::from_record(&r), None);
    }

    #[test]
    fn news_items_count_one_each() {
        let r = json!({"id":"x","kind":"news_item","commune":"04123","published_on":"2025-12-31",
            "channel":"loudspeaker","title":"Tháng hành động","deleted":false});
        let c = Contribution::from_record(&r).unwrap();
        assert_eq!(c.quarter.to_string(), "2025Q4");
        assert_eq!(c.counters.news_items(), 1);
        assert_eq!(c.counters.iter().count(), 1);
    }

    #[test]
    fn deleted_and_malformed_records_count_nowhere() {
        let mut r = gbv_case();
        r["deleted"] = json!(true);
        assert_eq!(Contribution::from_record(&r), None);
        assert!(from_scratch(&[r], |_| vec!["04".into()]).is_empty());

        let breakages: [(&str, Value); 9] = [
            ("detected_on", Value::Null),
            ("detected_on", json!("2025-02-30")),
            ("detected_on", json!("2025-2-3")),
            ("detected_on", json!("+2025-02-03")),
            ("detected_on", json!(20250203)),
            ("detected_on", json!("1999-12-31")), // outside the period range
            ("commune", json!("")),
            ("commune", json!(4123)),
            ("kind", json!("meeting")),
        ];
        for (field, value) in breakages {
            let mut r = gbv_case();
            r[field] = value.clone();
            assert_eq!(Contribution::from_record(&r), None, "{field} = {value}");
        }
        for junk in [json!(null), json!([]), json!("gbv_case"), json!({})] {
            assert_eq!(Contribution::from_record(&junk), None);
        }
        let mut r = gbv_case();
        r.as_object_mut().unwrap().remove("detected_on");
        assert_eq!(Contribution::from_record(&r), None);
    }

    fn tree(unit: &str) -> Vec<String> {
        match unit {
            "04123" => vec!["047".into(), "04".into()],
            "04124" => vec!["047".into(), "04".into()],
            _ => vec![],
        }
    }

    #[test]
    fn deltas_reach_every_ancestor_and_move_between_quarters() {
        let old = Contribution::from_record(&gbv_case()).unwrap();
        let mut r = gbv_case();
        r["detected_on"] = json!("2025-04-01");
        let new = Contribution::from_record(&r).unwrap();
        let d = deltas(Some(&old), Some(&new), tree);
        let q1: Quarter = "2025Q1".parse().unwrap();
        let q2: Quarter = "2025Q2".parse().unwrap();
        let units: Vec<(&str, Quarter)> = d.iter().map(|(u, q, _)| (u.as_str(), *q)).collect();
        assert_eq!(
            units,
            [
                ("04", q1),
                ("04", q2),
                ("04123", q1),
                ("04123", q2),
                ("047", q1),
                ("047", q2)
            ]
        );
        for (_, q, c) in &d {
            let expected = if *q == q1 { -1 } else { 1 };
            assert_eq!(c.denominator(IndicatorId::GbvVictimsSupported), expected);
        }
    }

    #[test]
    fn deltas_of_an_uncounted_edit_are_empty_and_merge_within_a_quarter() {
        let old = Contribution::from_record(&gbv_case()).unwrap();
        let mut r = gbv_case();
        r["notes"] = json!("edited");
        let same = Contribution::from_record(&r).unwrap();
        assert!(deltas(Some(&old), Some(&same), tree).is_empty());

        r["services"] = json!([]);
        let unserved = Contribution::from_record(&r).unwrap();
        let d = deltas(Some(&old), Some(&unserved), tree);
        assert_eq!(d.len(), 3);
        for (_, _, c) in &d {
            assert_eq!(c.numerator(IndicatorId::GbvVictimsSupported), -1);
            assert_eq!(c.denominator(IndicatorId::GbvVictimsSupported), 0);
        }
    }

    #[test]
    fn an_ancestor_list_that_repeats_the_commune_does_not_double_count() {
        let c = Contribution::from_record(&gbv_case()).unwrap();
        let d = deltas(None, Some(&c), |u| {
            vec![u.to_owned(), "04".into(), "04".into()]
        });
        assert_eq!(d.len(), 2);
        for (_, _, c) in &d {
            assert_eq!(c.denominator(IndicatorId::GbvVictimsSupported), 1);
        }
    }
}
