//! The reporting calendar as data: report deadlines per org unit, inherited down the tree.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize, Serializer};

use crate::period::{serde_as_string, Half, Period};

/// A day of the year on which a report is due, e.g. 25 November.
///
/// Invariant: the day exists in every year (29 February is rejected), so a deadline can always
/// be placed in a given year. Written `MM-DD` (`11-25`) in `Display`, `FromStr` and serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonthDay {
    month: u32,
    day: u32,
}

/// A month-day that does not exist every year.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a deadline: use MM-DD (11-25 for 25 November); 29 February is not allowed")]
pub struct BadMonthDay(pub String);

impl MonthDay {
    pub fn new(month: u32, day: u32) -> Result<Self, BadMonthDay> {
        // 2001 is not a leap year, so this also rejects 29 February.
        match NaiveDate::from_ymd_opt(2001, month, day) {
            Some(_) => Ok(MonthDay { month, day }),
            None => Err(BadMonthDay(format!("{month:02}-{day:02}"))),
        }
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn day(self) -> u32 {
        self.day
    }

    /// This day in `year`; `None` only for years chrono cannot represent.
    pub fn in_year(self, year: i32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(year, self.month, self.day)
    }
}

impl fmt::Display for MonthDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}-{:02}", self.month, self.day)
    }
}

impl FromStr for MonthDay {
    type Err = BadMonthDay;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMonthDay(s.to_owned());
        let (m, d) = s.split_once('-').ok_or_else(bad)?;
        if m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let m: u32 = m.parse().map_err(|_| bad())?;
        let d: u32 = d.parse().map_err(|_| bad())?;
        MonthDay::new(m, d).map_err(|_| bad())
    }
}

serde_as_string!(MonthDay);

/// The two reports of the regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// The report on year Y, due in year Y.
    Annual,
    /// The report on the first half of year Y (`YS1`), due in June of year Y.
    SixMonth,
}

/// The deadlines an org unit sets itself; a `None` inherits from the parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadlines {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annual: Option<MonthDay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub six_month: Option<MonthDay>,
}

impl Deadlines {
    fn get(&self, kind: ReportKind) -> Option<MonthDay> {
        match kind {
            ReportKind::Annual => self.annual,
            ReportKind::SixMonth => self.six_month,
        }
    }
}

/// Report deadlines per org-unit code. Each kind of report is inherited separately: the
/// nearest unit on the chain that sets a deadline for that kind wins, so a district can add a
/// six-month report to its province's annual one (Trùng Khánh under Cao Bằng).
///
/// `Calendar::default()` is the regime of `domain.md` ("before 25/11" read as due on 25/11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Calendar(pub BTreeMap<String, Deadlines>);

impl Default for Calendar {
    fn default() -> Self {
        let md = |m, d| MonthDay::new(m, d).ok();
        let unit =
            |code: &str, annual, six_month| (code.to_owned(), Deadlines { annual, six_month });
        Calendar(BTreeMap::from([
            unit("04", md(11, 25), None),       // Cao Bằng
            unit("45", md(11, 25), None),       // Quảng Trị
            unit("216", md(12, 1), md(6, 10)),  // Tân Yên (Bắc Giang)
            unit("67", md(12, 15), None),       // Đắk Nông
            unit("047", md(12, 15), md(6, 15)), // Trùng Khánh (Cao Bằng)
        ]))
    }
}

/// A report that is due: its deadline is today or later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DueReport {
    pub kind: ReportKind,
    pub period: Period,
    #[serde(serialize_with = "iso_date")]
    pub deadline: NaiveDate,
    /// Whole days from today to the deadline; 0 on the day itself.
    pub days_left: i64,
}

fn iso_date<S: Serializer>(d: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&d.format("%Y-%m-%d"))
}

impl Calendar {
    /// The deadline of one kind in force along `chain` (the unit, its parent, …, the root).
    pub fn deadline_for(&self, chain: &[String], kind: ReportKind) -> Option<MonthDay> {
        chain.iter().find_map(|unit| self.0.get(unit)?.get(kind))
    }

    /// The reports still due this year along `chain`, soonest first: the annual report on the
    /// current year, and the six-month report on its first half, each if the unit has such a
    /// deadline and it is today or later. Once a deadline has passed nothing is listed for that
    /// kind until the next year.
    pub fn due(&self, chain: &[String], today: NaiveDate) -> Vec<DueReport> {
        let year = today.year();
        let mut due: Vec<DueReport> = [ReportKind::Annual, ReportKind::SixMonth]
            .into_iter()
            .filter_map(|kind| {
                let deadline = self.deadline_for(chain, kind)?.in_year(year)?;
                let period = match kind {
                    ReportKind::Annual => Period::whole_year(year),
                    ReportKind::SixMonth => Period::half_year(year, Half::First),
                }
                .ok()?; // a `today` outside the supported years has no report
                let days_left = (deadline - today).num_days();
                (days_left >= 0).then_some(DueReport {
                    kind,
                    period,
                    deadline,
                    days_left,
                })
            })
            .collect();
        due.sort_by_key(|d| (d.deadline, d.kind));
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(units: &[&str]) -> Vec<String> {
        units.iter().map(|u| u.to_string()).collect()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn summary(due: &[DueReport]) -> Vec<(ReportKind, String, String, i64)> {
        due.iter()
            .map(|r| {
                (
                    r.kind,
                    r.period.to_string(),
                    r.deadline.to_string(),
                    r.days_left,
                )
            })
            .collect()
    }

    #[test]
    fn trung_khanh_communes_get_both_reports_from_their_district() {
        let cal = Calendar::default();
        let c = chain(&["04701", "047", "04"]);
        assert_eq!(
            summary(&cal.due(&c, d("2025-06-01"))),
            [
                (
                    ReportKind::SixMonth,
                    "2025S1".into(),
                    "2025-06-15".into(),
                    14
                ),
                (ReportKind::Annual, "2025".into(), "2025-12-15".into(), 197),
            ]
        );
        assert_eq!(
            summary(&cal.due(&c, d("2025-06-15")))[0],
            (
                ReportKind::SixMonth,
                "2025S1".into(),
                "2025-06-15".into(),
                0
            )
        );
        assert_eq!(
            summary(&cal.due(&c, d("2025-06-16"))),
            [(ReportKind::Annual, "2025".into(), "2025-12-15".into(), 182)]
        );
        assert!(cal.due(&c, d("2025-12-16")).is_empty());
    }

    #[test]
    fn other_cao_bang_districts_inherit_the_province_deadline_only() {
        let cal = Calendar::default();
        let c = chain(&["04801", "048", "04"]);
        assert_eq!(
            summary(&cal.due(&c, d("2025-06-01"))),
            [(ReportKind::Annual, "2025".into(), "2025-11-25".into(), 177)]
        );
        assert_eq!(
            cal.deadline_for(&chain(&["04"]), ReportKind::Annual),
            MonthDay::new(11, 25).ok()
        );
    }

    #[test]
    fn the_regime_of_each_plan() {
        let cal = Calendar::default();
        let annual = |units: &[&str]| cal.deadline_for(&chain(units), ReportKind::Annual);
        let six = |units: &[&str]| cal.deadline_for(&chain(units), ReportKind::SixMonth);
        assert_eq!(annual(&["45"]), MonthDay::new(11, 25).ok());
        assert_eq!(annual(&["21601", "216", "24"]), MonthDay::new(12, 1).ok());
        assert_eq!(six(&["21601", "216", "24"]), MonthDay::new(6, 10).ok());
        assert_eq!(annual(&["67"]), MonthDay::new(12, 15).ok());
        assert_eq!(six(&["67"]), None);
        // Bắc Giang itself has no deadline in the seeds.
        assert_eq!(annual(&["24"]), None);
        assert!(cal.due(&chain(&["24"]), d("2025-01-01")).is_empty());
    }

    #[test]
    fn month_days_are_checked() {
        assert!(MonthDay::new(2, 29).is_err());
        assert!(MonthDay::new(13, 1).is_err());
        assert!("11-31".parse::<MonthDay>().is_err());
        assert!("1-25".parse::<MonthDay>().is_err());
        assert_eq!("11-25".parse::<MonthDay>().unwrap().to_string(), "11-25");
        let json = serde_json::to_value(Calendar::default()).unwrap();
        assert_eq!(json["047"]["six_month"], "06-15");
        assert!(json["04"].get("six_month").is_none());
        assert_eq!(
            serde_json::from_value::<Calendar>(json).unwrap(),
            Calendar::default()
        );
        let due = Calendar::default().due(&chain(&["04"]), d("2025-11-25"));
        let json = serde_json::to_value(&due).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"kind":"annual","period":"2025","deadline":"2025-11-25","days_left":0}])
        );
    }
}
