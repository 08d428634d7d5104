//! The indicator report of one org unit for one period: rates, targets and disaggregated counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::counters::{Counters, Cut, Side};
use crate::indicator::{AgeBand, EthnicMinority, IndicatorId, Sex};
use crate::period::{Period, Quarter};
use crate::targets::Targets;

/// A commune is news-compliant for a quarter with at least this many news items (indicator 6.3).
pub const MIN_NEWS_PER_QUARTER: u32 = 4;

/// The report of one org unit for one period. The JSON shape is part of the API:
/// `{"org_unit","period","indicators":[…],"breakdown":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndicatorReport {
    pub org_unit: String,
    pub period: Period,
    /// One entry per indicator, in [`IndicatorId::ALL`] order.
    pub indicators: Vec<IndicatorValue>,
    /// The disaggregated counts of the indicators in [`IndicatorId::RATES`].
    pub breakdown: BTreeMap<IndicatorId, Breakdown>,
}

impl IndicatorReport {
    pub fn indicator(&self, id: IndicatorId) -> Option<&IndicatorValue> {
        self.indicators.iter().find(|v| v.id == id)
    }
}

/// One indicator's rate against its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndicatorValue {
    pub id: IndicatorId,
    pub numerator: i64,
    pub denominator: i64,
    /// numerator / denominator as a fraction (0.75, not 75); `None` when the denominator is 0:
    /// an indicator with nothing to measure has no value, not 0% and not 100%.
    pub value: Option<f64>,
    /// The target fraction in force for the period's year.
    pub target: Option<f64>,
    /// `value >= target`; `None` when either is missing.
    pub met: Option<bool>,
}

impl IndicatorValue {
    pub fn new(id: IndicatorId, numerator: i64, denominator: i64, target: Option<f64>) -> Self {
        // i64 → f64 is exact below 2^53, far above any count.
        let value = (denominator != 0).then(|| numerator as f64 / denominator as f64);
        let met = value.zip(target).map(|(v, t)| v >= t);
        IndicatorValue {
            id,
            numerator,
            denominator,
            value,
            target,
            met,
        }
    }
}

/// Numerator and denominator of one rate, disaggregated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub numerator: Disaggregation,
    pub denominator: Disaggregation,
}

/// A count split three ways. Every category is present (zeros included) so that the JSON and
/// CSV shapes do not depend on the data; each split sums to the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disaggregation {
    pub sex: BTreeMap<Sex, i64>,
    pub age_band: BTreeMap<AgeBand, i64>,
    pub ethnic_minority: BTreeMap<EthnicMinority, i64>,
}

impl Disaggregation {
    fn of(sums: &Counters, id: IndicatorId, side: Side) -> Self {
        Disaggregation {
            sex: Sex::ALL
                .map(|s| (s, sums.cut(id, side, Cut::Sex(s))))
                .into(),
            age_band: AgeBand::ALL
                .map(|a| (a, sums.cut(id, side, Cut::AgeBand(a))))
                .into(),
            ethnic_minority: EthnicMinority::ALL
                .map(|e| (e, sums.cut(id, side, Cut::EthnicMinority(e))))
                .into(),
        }
    }
}

/// Builds the report of `org_unit` for `period`.
///
/// - `chain`: `org_unit`, its parent, …, the root; used to find the targets in force.
/// - `sum_for(q)`: the materialised sums of `org_unit` for quarter `q`.
/// - `communes`: every commune under `org_unit` (a commune lists itself), each with its news
///   item count for each quarter of `period`, in order (see [`news_per_quarter`]). A missing
///   count is treated as zero.
pub fn report(
    org_unit: &str,
    period: Period,
    chain: &[String],
    targets: &Targets,
    sum_for: impl Fn(Quarter) -> Counters,
    communes: &[(String, Vec<u32>)],
) -> IndicatorReport {
    let quarters = period.quarters();
    let mut sums = Counters::new();
    for &q in &quarters {
        sums.add(&sum_for(q));
    }
    let target = |id| targets.target_for(chain, id, period.year());

    let mut indicators: Vec<IndicatorValue> = IndicatorId::RATES
        .into_iter()
        .map(|id| IndicatorValue::new(id, sums.numerator(id), sums.denominator(id), target(id)))
        .collect();
    let compliant = communes
        .iter()
        .filter(|(_, counts)| {
            (0..quarters.len()).all(|i| counts.get(i).copied().unwrap_or(0) >= MIN_NEWS_PER_QUARTER)
        })
        .count();
    let news = IndicatorId::CommunesNewsCompliant;
    indicators.push(IndicatorValue::new(
        news,
        count(compliant),
        count(communes.len()),
        target(news),
    ));

    let breakdown = IndicatorId::RATES
        .into_iter()
        .map(|id| {
            let b = Breakdown {
                numerator: Disaggregation::of(&sums, id, Side::Numerator),
                denominator: Disaggregation::of(&sums, id, Side::Denominator),
            };
            (id, b)
        })
        .collect();
    IndicatorReport {
        org_unit: org_unit.to_owned(),
        period,
        indicators,
        breakdown,
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A commune's news item counts for each quarter of `period`, in order, from its materialised
/// sums: the per-commune input of [`report`]. Negative sums (an inconsistent store) count as 0.
pub fn news_per_quarter(period: Period, sum_for: impl Fn(Quarter) -> Counters) -> Vec<u32> {
    period
        .quarters()
        .into_iter()
        .map(|q| u32::try_from(sum_for(q).news_items().max(0)).unwrap_or(u32::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contribution::from_scratch;
    use crate::targets::Milestones;

    fn chain(units: &[&str]) -> Vec<String> {
        units.iter().map(|u| u.to_string()).collect()
    }

    fn p(s: &str) -> Period {
        s.parse().unwrap()
    }

    fn value_of(r: &IndicatorReport, id: IndicatorId) -> &IndicatorValue {
        r.indicator(id).unwrap()
    }

    #[test]
    fn zero_denominators_have_no_value_and_no_verdict() {
        let r = report(
            "04",
            p("2025"),
            &chain(&["04"]),
            &Targets::default(),
            |_| Counters::new(),
            &[],
        );
        assert_eq!(r.indicators.len(), 4);
        for v in &r.indicators {
            assert_eq!((v.numerator, v.denominator), (0, 0));
            assert_eq!(v.value, None, "{}", v.id);
            assert_eq!(v.met, None, "{}", v.id);
            assert!(v.target.is_some());
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["indicators"][0]["value"], json!(null));
        assert_eq!(json["indicators"][0]["met"], json!(null));
    }

    #[test]
    fn news_compliance_needs_four_items_in_every_quarter() {
        // 4, 4, 4 and then 3 items.
        let commune = ("04701".to_owned(), vec![4, 4, 4, 3]);
        let busy = ("04702".to_owned(), vec![9, 5, 4, 4]);
        let quiet = ("04703".to_owned(), vec![0, 0, 0, 0]);
        let all = [commune.clone(), busy, quiet];
        let c = chain(&["047", "04"]);
        let t = Targets::default();
        let none = |_| Counters::new();
        let news = IndicatorId::CommunesNewsCompliant;

        let year = report("047", p("2025"), &c, &t, none, &all);
        let v = value_of(&year, news);
        assert_eq!((v.numerator, v.denominator), (1, 3));
        assert_eq!(v.met, Some(false));

        let alone = report(
            "04701",
            p("2025"),
            &c,
            &t,
            none,
            std::slice::from_ref(&commune),
        );
        assert_eq!(value_of(&alone, news).value, Some(0.0));
        let s1 = ("04701".to_owned(), vec![4, 4]);
        let half = report("04701", p("2025S1"), &c, &t, none, &[s1]);
        assert_eq!(value_of(&half, news).value, Some(1.0));
        assert_eq!(value_of(&half, news).met, Some(true));
        for (q, n, compliant) in [("2025Q3", 4, true), ("2025Q4", 3, false)] {
            let r = report(
                "04701",
                p(q),
                &c,
                &t,
                none,
                &[("04701".to_owned(), vec![n])],
            );
            assert_eq!(value_of(&r, news).numerator, i64::from(compliant), "{q}");
            assert_eq!(value_of(&r, news).denominator, 1);
        }
        // Missing quarters count as zero items.
        let short = report(
            "04701",
            p("2025"),
            &c,
            &t,
            none,
            &[("04701".to_owned(), vec![5])],
        );
        assert_eq!(value_of(&short, news).numerator, 0);
    }

    #[test]
    fn rates_sum_the_quarters_of_the_period_and_compare_with_the_target() {
        let case = |date: &str, served: bool| {
            json!({"kind":"gbv_case","commune":"04701","detected_on":date,
                "victim":{"sex":"female","birth_year":1950},
                "services": if served { json!([{"kind":"health"}]) } else { json!([]) }})
        };
        let records = [
            case("2025-01-10", true),
            case("2025-05-10", true),
            case("2025-08-10", true),
            case("2025-11-10", false),
            case("2026-01-10", false), // another year
        ];
        let sums = from_scratch(&records, |_| vec!["047".into(), "04".into()]);
        let sum_for = |q: Quarter| {
            sums.get(&("047".to_owned(), q))
                .cloned()
                .unwrap_or_default()
        };
        let c = chain(&["047", "04"]);
        let mut t = Targets::default();
        let g = IndicatorId::GbvVictimsSupported;

        let r = report("047", p("2025"), &c, &t, sum_for, &[]);
        let v = value_of(&r, g);
        assert_eq!((v.numerator, v.denominator, v.value), (3, 4, Some(0.75)));
        assert_eq!((v.target, v.met), (Some(0.8), Some(false)));
        let b = &r.breakdown[&g];
        assert_eq!(b.denominator.sex[&Sex::Female], 4);
        assert_eq!(b.denominator.sex[&Sex::Male], 0);
        assert_eq!(b.numerator.age_band[&AgeBand::From60], 3);
        assert_eq!(b.numerator.ethnic_minority[&EthnicMinority::Unknown], 3);

        let r = report("047", p("2025S1"), &c, &t, sum_for, &[]);
        assert_eq!(value_of(&r, g).value, Some(1.0));
        assert_eq!(value_of(&r, g).met, Some(true));

        // Exactly at the target counts as met.
        t.set("04", g, Milestones::new([(2030, 0.75)]).unwrap());
        let r = report("047", p("2025"), &c, &t, sum_for, &[]);
        assert_eq!(
            (value_of(&r, g).target, value_of(&r, g).met),
            (Some(0.75), Some(true))
        );

        // 2026 uses the 2030 milestone of the defaults.
        let r = report("047", p("2026Q1"), &c, &Targets::default(), sum_for, &[]);
        let v = value_of(&r, g);
        assert_eq!(
            (v.value, v.target, v.met),
            (Some(0.0), Some(0.9), Some(false))
        );
    }

    #[test]
    fn the_json_shape_is_exactly_the_documented_one() {
        let r = report(
            "04",
            p("2025Q3"),
            &chain(&["04"]),
            &Targets::default(),
            |_| Counters::new(),
            &[],
        );
        let json = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["breakdown", "indicators", "org_unit", "period"]);
        assert_eq!(json["period"], "2025Q3");
        let ind = json["indicators"][0].as_object().unwrap();
        let mut ikeys: Vec<&String> = ind.keys().collect();
        ikeys.sort();
        assert_eq!(
            ikeys,
            ["denominator", "id", "met", "numerator", "target", "value"]
        );
        let ids: Vec<&str> = json["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "gbv_victims_supported",
                "perpetrators_counselled",
                "trafficking_returnees_supported",
                "communes_news_compliant"
            ]
        );
        let b = &json["breakdown"]["perpetrators_counselled"]["denominator"];
        assert_eq!(b["sex"]["unknown"], 0);
        assert_eq!(b["age_band"]["16_59"], 0);
        assert_eq!(b["ethnic_minority"]["yes"], 0);
        assert!(json["breakdown"].get("communes_news_compliant").is_none());
        assert_eq!(serde_json::from_value::<IndicatorReport>(json).unwrap(), r);
    }

    #[test]
    fn news_per_quarter_reads_the_sums_in_order() {
        let sum_for = |q: Quarter| {
            let mut c = Counters::new();
            c.add_to(
                crate::counters::CounterKey::NEWS_ITEMS,
                i64::from(q.q()) - 2,
            );
            c
        };
        assert_eq!(news_per_quarter(p("2025"), sum_for), [0, 0, 1, 2]);
    }
}
