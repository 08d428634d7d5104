//! Targets ("chỉ tiêu") as data: milestone years per org unit and indicator, inherited down the
//! org-unit tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::indicator::IndicatorId;
use crate::period::YEARS;

/// A target that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    #[error("a target needs at least one milestone year")]
    NoMilestones,
    #[error("milestone year {0} is out of range: use a year from 2000 to 2100")]
    Year(i32),
    #[error("target {value} for {year} is not a fraction from 0 to 1 (write 80% as 0.8)")]
    Fraction { year: i32, value: f64 },
}

/// Milestone year → target fraction (0..=1), e.g. `{2025: 0.8, 2030: 0.9}`.
///
/// Invariant: non-empty, years in range, fractions finite and within 0..=1. Serialised as a map
/// (`{"2025":0.8,"2030":0.9}` in JSON) and checked again when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<i32, f64>", into = "BTreeMap<i32, f64>")]
pub struct Milestones(BTreeMap<i32, f64>);

impl Milestones {
    pub fn new(milestones: impl IntoIterator<Item = (i32, f64)>) -> Result<Self, TargetError> {
        let map: BTreeMap<i32, f64> = milestones.into_iter().collect();
        if map.is_empty() {
            return Err(TargetError::NoMilestones);
        }
        for (&year, &value) in &map {
            if !YEARS.contains(&year) {
                return Err(TargetError::Year(year));
            }
            if !(0.0..=1.0).contains(&value) {
                // Also rejects NaN, for which `contains` is false.
                return Err(TargetError::Fraction { year, value });
            }
        }
        Ok(Milestones(map))
    }

    /// The target in force for `year`: that of the first milestone year ≥ `year`, or of the last
    /// milestone when `year` is later than all of them (2021–2025 → 2025, 2026–2030 → 2030,
    /// 2031 → 2030).
    pub fn for_year(&self, year: i32) -> f64 {
        self.0
            .range(year..)
            .next()
            .or_else(|| self.0.last_key_value())
            .map_or(0.0, |(_, &v)| v) // never empty, see the invariant
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, f64)> + '_ {
        self.0.iter().map(|(&y, &v)| (y, v))
    }
}

impl TryFrom<BTreeMap<i32, f64>> for Milestones {
    type Error = TargetError;
    fn try_from(map: BTreeMap<i32, f64>) -> Result<Self, Self::Error> {
        Milestones::new(map)
    }
}

impl From<Milestones> for BTreeMap<i32, f64> {
    fn from(m: Milestones) -> Self {
        m.0
    }
}

/// All targets: defaults (the strategy's values unless replaced) and per-org-unit overrides.
///
/// `Targets::default()` holds the values of `domain.md`: 80%/90%, 50%/70%, 100%/100%,
/// 100%/100% for 2025/2030.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Used when no unit on the chain sets a target for the indicator.
    pub defaults: BTreeMap<IndicatorId, Milestones>,
    /// Org-unit code → indicator → milestones.
    #[serde(default)]
    pub units: BTreeMap<String, BTreeMap<IndicatorId, Milestones>>,
}

impl Default for Targets {
    fn default() -> Self {
        let strategy =
            |y2025: f64, y2030: f64| Milestones(BTreeMap::from([(2025, y2025), (2030, y2030)]));
        Targets {
            defaults: BTreeMap::from([
                (IndicatorId::GbvVictimsSupported, strategy(0.8, 0.9)),
                (IndicatorId::PerpetratorsCounselled, strategy(0.5, 0.7)),
                (
                    IndicatorId::TraffickingReturneesSupported,
                    strategy(1.0, 1.0),
                ),
                (IndicatorId::CommunesNewsCompliant, strategy(1.0, 1.0)),
            ]),
            units: BTreeMap::new(),
        }
    }
}

impl Targets {
    /// Sets (or replaces) an org unit's own target for one indicator.
    pub fn set(&mut self, unit: &str, indicator: IndicatorId, milestones: Milestones) {
        self.units
            .entry(unit.to_owned())
            .or_default()
            .insert(indicator, milestones);
    }

    /// Removes an org unit's own target, so that it inherits again.
    pub fn unset(&mut self, unit: &str, indicator: IndicatorId) -> Option<Milestones> {
        let per_unit = self.units.get_mut(unit)?;
        let old = per_unit.remove(&indicator);
        if per_unit.is_empty() {
            self.units.remove(unit);
        }
        old
    }

    /// The milestones in force along `chain` (the unit, its parent, …, the root): the nearest
    /// unit that sets its own wins, else the default.
    pub fn milestones_for(&self, chain: &[String], indicator: IndicatorId) -> Option<&Milestones> {
        chain
            .iter()
            .find_map(|unit| self.units.get(unit)?.get(&indicator))
            .or_else(|| self.defaults.get(&indicator))
    }

    /// The target fraction for `year` along `chain` (see [`Targets::milestones_for`] and
    /// [`Milestones::for_year`]); `None` only when neither the chain nor the defaults have one.
    pub fn target_for(&self, chain: &[String], indicator: IndicatorId, year: i32) -> Option<f64> {
        self.milestones_for(chain, indicator)
            .map(|m| m.for_year(year))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(units: &[&str]) -> Vec<String> {
        units.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn the_milestone_rule() {
        let t = Targets::default();
        let g = IndicatorId::GbvVictimsSupported;
        let c = chain(&["04701", "047", "04"]);
        assert_eq!(t.target_for(&c, g, 2021), Some(0.8));
        assert_eq!(t.target_for(&c, g, 2024), Some(0.8));
        assert_eq!(t.target_for(&c, g, 2025), Some(0.8));
        assert_eq!(t.target_for(&c, g, 2026), Some(0.9));
        assert_eq!(t.target_for(&c, g, 2030), Some(0.9));
        assert_eq!(t.target_for(&c, g, 2031), Some(0.9));
        let p = IndicatorId::PerpetratorsCounselled;
        assert_eq!(t.target_for(&c, p, 2024), Some(0.5));
        assert_eq!(t.target_for(&c, p, 2026), Some(0.7));
        assert_eq!(
            t.target_for(&[], IndicatorId::CommunesNewsCompliant, 2031),
            Some(1.0)
        );
        assert_eq!(
            t.target_for(&[], IndicatorId::TraffickingReturneesSupported, 2022),
            Some(1.0)
        );
    }

    #[test]
    fn a_district_override_applies_to_its_communes_not_its_siblings() {
        let mut t = Targets::default();
        let g = IndicatorId::GbvVictimsSupported;
        t.set(
            "047",
            g,
            Milestones::new([(2025, 0.85), (2030, 0.95)]).unwrap(),
        );
        let in_district = chain(&["04701", "047", "04"]);
        let sibling = chain(&["04801", "048", "04"]);
        assert_eq!(t.target_for(&in_district, g, 2025), Some(0.85));
        assert_eq!(t.target_for(&chain(&["047", "04"]), g, 2026), Some(0.95));
        assert_eq!(t.target_for(&sibling, g, 2025), Some(0.8));
        assert_eq!(t.target_for(&chain(&["04"]), g, 2025), Some(0.8));
        // Other indicators of the district keep inheriting.
        let p = IndicatorId::PerpetratorsCounselled;
        assert_eq!(t.target_for(&in_district, p, 2025), Some(0.5));

        // The province sets its own; the district's still wins below the district.
        t.set("04", g, Milestones::new([(2025, 0.7)]).unwrap());
        assert_eq!(t.target_for(&sibling, g, 2025), Some(0.7));
        assert_eq!(t.target_for(&sibling, g, 2031), Some(0.7));
        assert_eq!(t.target_for(&in_district, g, 2025), Some(0.85));
        // And a commune overrides its district.
        t.set("04701", g, Milestones::new([(2025, 1.0)]).unwrap());
        assert_eq!(t.target_for(&in_district, g, 2025), Some(1.0));

        assert!(t.unset("047", g).is_some());
        assert_eq!(
            t.target_for(&chain(&["04702", "047", "04"]), g, 2025),
            Some(0.7)
        );
    }

    #[test]
    fn without_defaults_there_may_be_no_target() {
        let t = Targets {
            defaults: BTreeMap::new(),
            units: BTreeMap::new(),
        };
        assert_eq!(
            t.target_for(&chain(&["04"]), IndicatorId::GbvVictimsSupported, 2025),
            None
        );
    }

    #[test]
    fn bad_milestones_are_rejected_also_when_deserialised() {
        assert_eq!(Milestones::new([]), Err(TargetError::NoMilestones));
        assert_eq!(Milestones::new([(1999, 0.5)]), Err(TargetError::Year(1999)));
        assert!(matches!(
            Milestones::new([(2025, 80.0)]),
            Err(TargetError::Fraction { .. })
        ));
        assert!(Milestones::new([(2025, f64::NAN)]).is_err());
        assert!(Milestones::new([(2025, -0.1)]).is_err());
        assert!(serde_json::from_str::<Milestones>(r#"{"2025": 80}"#).is_err());
        let m: Milestones = serde_json::from_str(r#"{"2025": 0.8, "2030": 0.9}"#).unwrap();
        assert_eq!(m.for_year(2026), 0.9);
    }

    #[test]
    fn targets_round_trip_through_json() {
        let mut t = Targets::default();
        t.set(
            "45",
            IndicatorId::PerpetratorsCounselled,
            Milestones::new([(2025, 0.6)]).unwrap(),
        );
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["units"]["45"]["perpetrators_counselled"]["2025"], 0.6);
        assert_eq!(json["defaults"]["gbv_victims_supported"]["2030"], 0.9);
        assert_eq!(serde_json::from_value::<Targets>(json).unwrap(), t);
    }
}
