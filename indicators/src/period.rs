//! Quarters and reporting periods in DHIS2 notation (`2025Q3`, `2025S1`, `2025`).
//!
//! Invariant: every `Quarter` and `Period` has a year in [`YEARS`], so `Display` and `FromStr`
//! round-trip and `quarters()` only yields valid quarters. That is why both types keep their
//! fields private and are built through checked constructors.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

/// The years a period may fall in. The strategy runs 2021–2030; the margin leaves room for
/// back-filled history and later strategies without accepting typos such as `20255`.
pub const YEARS: RangeInclusive<i32> = 2000..=2100;

/// Why a quarter or period could not be built or parsed. The messages are meant for API callers
/// and list the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "period `{0}` is not valid: use YYYY (2025), YYYYSn (2025S1, 2025S2) or YYYYQn (2025Q1..2025Q4)"
    )]
    Period(String),
    #[error("quarter `{0}` is not valid: use YYYYQn (2025Q1..2025Q4)")]
    Quarter(String),
    #[error("year {0} is out of range: use a year from 2000 to 2100")]
    Year(i32),
}

/// One calendar quarter: the unit in which sums are materialised.
///
/// Ordered chronologically. Serialised as its DHIS2 string (`"2025Q3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quarter {
    // Field order matters: the derived `Ord` must compare the year first.
    year: i32,
    q: u8,
}

impl Quarter {
    /// `q` is 1..=4; the year must lie in [`YEARS`].
    pub fn new(year: i32, q: u8) -> Result<Self, PeriodError> {
        check_year(year)?;
        if !(1..=4).contains(&q) {
            return Err(PeriodError::Quarter(format!("{year}Q{q}")));
        }
        Ok(Quarter { year, q })
    }

    /// The quarter containing `date`.
    pub fn from_date(date: NaiveDate) -> Result<Self, PeriodError> {
        // month0 is 0..=11, so the quotient is 0..=3 and the cast cannot truncate.
        Quarter::new(date.year(), (date.month0() / 3) as u8 + 1)
    }

    pub fn year(self) -> i32 {
        self.year
    }

    /// 1..=4.
    pub fn q(self) -> u8 {
        self.q
    }

    pub fn first_day(self) -> NaiveDate {
        ymd(self.year, u32::from(self.q) * 3 - 2, 1)
    }

    pub fn last_day(self) -> NaiveDate {
        let next_first = if self.q == 4 {
            ymd(self.year + 1, 1, 1)
        } else {
            ymd(self.year, u32::from(self.q) * 3 + 1, 1)
        };
        next_first.pred_opt().unwrap_or(next_first)
    }

    pub fn contains(self, date: NaiveDate) -> bool {
        Quarter::from_date(date) == Ok(self)
    }
}

/// Builds a date from parts that are valid by construction (first days of months in [`YEARS`]
/// or just after). Falls back to the minimum date rather than panicking, which cannot happen.
fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap_or(NaiveDate::MIN)
}

fn check_year(year: i32) -> Result<(), PeriodError> {
    if YEARS.contains(&year) {
        Ok(())
    } else {
        Err(PeriodError::Year(year))
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}Q{}", self.year, self.q)
    }
}

impl FromStr for Quarter {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Period>() {
            Ok(Period(Repr::Quarter(q))) => Ok(q),
            Err(PeriodError::Year(y)) => Err(PeriodError::Year(y)),
            _ => Err(PeriodError::Quarter(s.to_owned())),
        }
    }
}

/// Which half of a year a six-month period covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Half {
    /// January–June (`S1`).
    First,
    /// July–December (`S2`).
    Second,
}

/// What kind of period a [`Period`] is, for callers that need to branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodKind {
    Quarter(Quarter),
    HalfYear(i32, Half),
    Year(i32),
}

/// A reporting period: a quarter, a half-year or a year.
///
/// Serialised as its DHIS2 string (`"2025Q3"`, `"2025S1"`, `"2025"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period(Repr);

// Private so that a period can only be built through the checked constructors (see the module
// invariant); callers inspect it through `kind()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Repr {
    Quarter(Quarter),
    HalfYear(i32, Half),
    Year(i32),
}

impl Period {
    pub fn whole_year(year: i32) -> Result<Self, PeriodError> {
        check_year(year)?;
        Ok(Period(Repr::Year(year)))
    }

    pub fn half_year(year: i32, half: Half) -> Result<Self, PeriodError> {
        check_year(year)?;
        Ok(Period(Repr::HalfYear(year, half)))
    }

    pub fn quarter(quarter: Quarter) -> Self {
        Period(Repr::Quarter(quarter))
    }

    pub fn kind(self) -> PeriodKind {
        match self.0 {
            Repr::Quarter(q) => PeriodKind::Quarter(q),
            Repr::HalfYear(y, h) => PeriodKind::HalfYear(y, h),
            Repr::Year(y) => PeriodKind::Year(y),
        }
    }

    /// The calendar year the period lies in; targets are looked up by this year.
    pub fn year(self) -> i32 {
        match self.0 {
            Repr::Quarter(q) => q.year,
            Repr::HalfYear(y, _) | Repr::Year(y) => y,
        }
    }

    /// The quarters of the period, in chronological order (1, 2 or 4 of them).
    pub fn quarters(self) -> Vec<Quarter> {
        let (year, qs): (i32, &[u8]) = match self.0 {
            Repr::Quarter(q) => return vec![q],
            Repr::HalfYear(y, Half::First) => (y, &[1, 2]),
            Repr::HalfYear(y, Half::Second) => (y, &[3, 4]),
            Repr::Year(y) => (y, &[1, 2, 3, 4]),
        };
        // The year was checked when the period was built, so these are valid quarters.
        qs.iter().map(|&q| Quarter { year, q }).collect()
    }

    pub fn first_day(self) -> NaiveDate {
        let qs = self.quarters();
        qs.first().map_or(NaiveDate::MIN, |q| q.first_day())
    }

    pub fn last_day(self) -> NaiveDate {
        let qs = self.quarters();
        qs.last().map_or(NaiveDate::MIN, |q| q.last_day())
    }

    pub fn contains(self, date: NaiveDate) -> bool {
        Quarter::from_date(date).is_ok_and(|q| self.quarters().contains(&q))
    }
}

impl From<Quarter> for Period {
    fn from(q: Quarter) -> Self {
        Period::quarter(q)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Quarter(q) => q.fmt(f),
            Repr::HalfYear(y, Half::First) => write!(f, "{y}S1"),
            Repr::HalfYear(y, Half::Second) => write!(f, "{y}S2"),
            Repr::Year(y) => write!(f, "{y}"),
        }
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    /// Accepts exactly the canonical forms that `Display` writes: four-digit year, then nothing,
    /// `S1`/`S2` or `Q1`..`Q4`. Lower case and spaces are rejected so that one period has one
    /// spelling (it is used in URLs, file names and stored keys).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PeriodError::Period(s.to_owned());
        let b = s.as_bytes();
        if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let period = match &b[4..] {
            [] => Repr::Year(year),
            [b'S', b'1'] => Repr::HalfYear(year, Half::First),
            [b'S', b'2'] => Repr::HalfYear(year, Half::Second),
            [b'Q', d @ b'1'..=b'4'] => Repr::Quarter(Quarter { year, q: d - b'0' }),
            _ => return Err(bad()),
        };
        check_year(year)?;
        Ok(Period(period))
    }
}

/// Serialises a type through its `Display` and deserialises it through its `FromStr`, so the
/// JSON form and the URL form of a period (or key) are the same string.
macro_rules! serde_as_string {
    ($t:ty) => {
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_string;

serde_as_string!(Quarter);
serde_as_string!(Period);

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn quarter_from_date_at_the_edges() {
        assert_eq!(
            Quarter::from_date(d("2025-01-01")).unwrap().to_string(),
            "2025Q1"
        );
        assert_eq!(
            Quarter::from_date(d("2025-03-31")).unwrap().to_string(),
            "2025Q1"
        );
        assert_eq!(
            Quarter::from_date(d("2025-04-01")).unwrap().to_string(),
            "2025Q2"
        );
        assert_eq!(
            Quarter::from_date(d("2025-09-30")).unwrap().to_string(),
            "2025Q3"
        );
        assert_eq!(
            Quarter::from_date(d("2025-12-31")).unwrap().to_string(),
            "2025Q4"
        );
        assert_eq!(
            Quarter::from_date(d("1999-12-31")),
            Err(PeriodError::Year(1999))
        );
    }

    #[test]
    fn quarter_days() {
        let q = Quarter::new(2024, 1).unwrap();
        assert_eq!(q.first_day(), d("2024-01-01"));
        assert_eq!(q.last_day(), d("2024-03-31"));
        let q4 = Quarter::new(2024, 4).unwrap();
        assert_eq!(q4.last_day(), d("2024-12-31"));
        assert!(q4.contains(d("2024-10-01")));
        assert!(!q4.contains(d("2025-10-01")));
    }

    #[test]
    fn quarters_order_chronologically() {
        let a: Quarter = "2024Q4".parse().unwrap();
        let b: Quarter = "2025Q1".parse().unwrap();
        assert!(a < b);
        assert!(Quarter::new(2025, 2).unwrap() < Quarter::new(2025, 3).unwrap());
    }

    #[test]
    fn periods_round_trip_and_expand() {
        for (s, quarters) in [
            ("2025", vec!["2025Q1", "2025Q2", "2025Q3", "2025Q4"]),
            ("2025S1", vec!["2025Q1", "2025Q2"]),
            ("2025S2", vec!["2025Q3", "2025Q4"]),
            ("2025Q3", vec!["2025Q3"]),
            ("2000Q1", vec!["2000Q1"]),
            ("2100", vec!["2100Q1", "2100Q2", "2100Q3", "2100Q4"]),
        ] {
            let p: Period = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            let qs: Vec<String> = p.quarters().iter().map(ToString::to_string).collect();
            assert_eq!(qs, quarters, "{s}");
            assert_eq!(p.year(), s[..4].parse::<i32>().unwrap());
        }
        let p: Period = "2025S2".parse().unwrap();
        assert_eq!(p.first_day(), d("2025-07-01"));
        assert_eq!(p.last_day(), d("2025-12-31"));
        assert!(p.contains(d("2025-07-01")));
        assert!(!p.contains(d("2025-06-30")));
    }

    #[test]
    fn period_parse_errors_name_the_accepted_forms() {
        for bad in [
            "",
            "2025X",
            "2025Q5",
            "2025Q0",
            "2025S3",
            "2025q3",
            "25Q1",
            "20251",
            "2025Q",
            " 2025",
            "2025 ",
            "２０２５",
            "2025-Q1",
            "2025W1",
            "+2025",
        ] {
            let err = bad.parse::<Period>().unwrap_err();
            assert_eq!(err, PeriodError::Period(bad.to_owned()), "{bad:?}");
        }
        assert_eq!(
            "2025X".parse::<Period>().unwrap_err().to_string(),
            "period `2025X` is not valid: use YYYY (2025), YYYYSn (2025S1, 2025S2) or YYYYQn \
             (2025Q1..2025Q4)"
        );
        assert_eq!("1999".parse::<Period>(), Err(PeriodError::Year(1999)));
        assert_eq!("2101S1".parse::<Period>(), Err(PeriodError::Year(2101)));
        assert!(PeriodError::Year(1999).to_string().contains("2000 to 2100"));
    }

    #[test]
    fn quarter_parse_rejects_other_periods() {
        assert_eq!(
            "2025".parse::<Quarter>(),
            Err(PeriodError::Quarter("2025".into()))
        );
        assert_eq!(
            "2025S1".parse::<Quarter>(),
            Err(PeriodError::Quarter("2025S1".into()))
        );
        assert_eq!("1990Q1".parse::<Quarter>(), Err(PeriodError::Year(1990)));
        assert_eq!(
            Quarter::new(2025, 5),
            Err(PeriodError::Quarter("2025Q5".into()))
        );
        assert!("2025Q5"
            .parse::<Quarter>()
            .unwrap_err()
            .to_string()
            .contains("YYYYQn"));
    }

    #[test]
    fn serde_uses_the_dhis2_string() {
        let p: Period = "2025S1".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"2025S1\"");
        assert_eq!(serde_json::from_str::<Period>("\"2025S1\"").unwrap(), p);
        let q: Quarter = "2025Q3".parse().unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"2025Q3\"");
        assert_eq!(serde_json::from_str::<Quarter>("\"2025Q3\"").unwrap(), q);
        let err = serde_json::from_str::<Period>("\"2025X\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("YYYYSn"), "{err}");
    }
}
