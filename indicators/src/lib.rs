//! Indicator arithmetic for gesync: the formulas, periods, targets and reporting calendar of
//! `domain.md`, as pure functions.
//!
//! **Architecture invariant:** this crate does no I/O and knows nothing of the server's store,
//! the sync protocol or async runtimes. It reads a record's JSON view and returns numbers; the
//! server decides where they live.
//!
//! # How the pieces fit
//!
//! 1. A record's JSON view becomes a [`Contribution`] ([`Contribution::from_record`]): its
//!    commune, the [`Quarter`] of its date, and the [`Counters`] it adds (numerators,
//!    denominators and their sex / age-band / ethnic-minority splits, or one news item).
//!    Deleted and malformed records contribute nothing.
//! 2. When a record changes, [`deltas`] turns (previous contribution, new contribution) into
//!    signed [`Counters`] for the commune and each of its ancestors, per quarter. The server adds
//!    them to its materialised sums per (org unit, quarter) and keeps the new contribution as the
//!    record's "previous" one. [`from_scratch`] computes the same sums from all records (the
//!    rebuild command, and the oracle of the tests).
//! 3. [`report()`] sums an org unit's quarters over a [`Period`] (`2025Q3`, `2025S1`, `2025`),
//!    counts news-compliant communes, looks up [`Targets`] along the org-unit chain and returns an
//!    [`IndicatorReport`] whose JSON shape is part of the API. [`csv_report`] writes rows of
//!    reports as a spreadsheet-friendly CSV; [`level_name_vi`] and [`verdict_vi`] are the
//!    Vietnamese words every report file uses.
//! 4. [`Calendar::due`] lists the annual and six-month reports still due for an org unit.
//!
//! Org units are plain code strings and the tree is given by the caller (`ancestors_of`, or a
//! `chain` of unit, parent, …, root), so any depth works: province → district → commune, or the
//! two-level tree in force since July 2025.
//!
//! All rates and targets are fractions (0.8 means 80%).

#![forbid(unsafe_code)]

mod calendar;
mod contribution;
mod counters;
mod csv;
mod indicator;
mod labels;
mod period;
mod report;
mod targets;

pub use calendar::{BadMonthDay, Calendar, Deadlines, DueReport, MonthDay, ReportKind};
pub use contribution::{deltas, from_scratch, Contribution};
pub use counters::{CounterKey, Counters, Cut, Side, UnknownCounterKey};
pub use csv::{csv_report, CsvRow};
pub use indicator::{AgeBand, EthnicMinority, IndicatorId, Sex, UnknownIndicator};
pub use labels::{level_name_vi, verdict_vi};
pub use period::{Half, Period, PeriodError, PeriodKind, Quarter, YEARS};
pub use report::{
    news_per_quarter, report, Breakdown, Disaggregation, IndicatorReport, IndicatorValue,
    MIN_NEWS_PER_QUARTER,
};
pub use targets::{Milestones, TargetError, Targets};
