//! Names and number/date formats of the pages, in Vietnamese and English.

use chrono::{NaiveDate, TimeZone};
use indicators::{Half, IndicatorId, IndicatorValue, Period, PeriodKind};
use maud::{html, Markup};

use crate::model::Role;

use crate::model::vietnam;

/// The pages' language (which one a request asks for is `page`'s business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Vi,
    En,
}

impl Lang {
    /// Picks the Vietnamese or the English text.
    pub fn t<'a>(self, vi: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }

    pub fn code(self) -> &'static str {
        self.t("vi", "en")
    }
}

pub fn today() -> NaiveDate {
    crate::model::today()
}

pub fn this_year() -> i32 {
    chrono::Datelike::year(&today())
}

/// A role's name where the unit is not known (the role selector). `district_staff` reviews at
/// whatever level sits right above communes: a district, or a province on the two-level map.
pub fn role(lang: Lang, r: Role) -> &'static str {
    match r {
        Role::Admin => lang.t("Quản trị hệ thống", "Administrator"),
        Role::ProvinceStaff => lang.t("Cán bộ tỉnh", "Province staff"),
        Role::DistrictStaff => lang.t("Cán bộ rà soát cấp trên xã", "Reviewer (above communes)"),
        Role::CommuneOfficer => lang.t("Cán bộ xã", "Commune officer"),
    }
}

/// A role's name for a user whose unit is of `level`: a reviewer on a district is "Cán bộ
/// huyện", on a province "Cán bộ rà soát cấp tỉnh" (not "Cán bộ tỉnh", the figures-only
/// role).
pub fn role_at(lang: Lang, r: Role, level: Option<&str>) -> String {
    match (r, level) {
        (Role::DistrictStaff, Some("district")) => lang.t("Cán bộ huyện", "District staff").to_string(),
        (Role::DistrictStaff, Some(l)) if !l.is_empty() => match lang {
            Lang::Vi => format!("Cán bộ rà soát cấp {}", indicators::level_name_vi(l).to_lowercase()),
            Lang::En => format!("{} reviewer", self::level(lang, l)),
        },
        _ => role(lang, r).to_string(),
    }
}

/// The title of a unit's overview, by its level: "Tổng quan tỉnh", "District overview".
pub fn overview(lang: Lang, level: &str) -> String {
    match (lang, level) {
        (_, "") => lang.t("Tổng quan", "Overview").to_string(),
        (Lang::Vi, l) => format!("Tổng quan {}", indicators::level_name_vi(l).to_lowercase()),
        (Lang::En, l) => format!("{} overview", self::level(lang, l)),
    }
}

/// The heading of a list of communes. Since July 2025 the commune level is "xã, phường, đặc
/// khu" (towns, "thị trấn", went with the districts); a tree that still has districts keeps
/// the older words.
pub fn communes_heading(lang: Lang, has_districts: bool) -> &'static str {
    match has_districts {
        true => lang.t("Xã, phường, thị trấn", "Commune"),
        false => lang.t("Xã, phường, đặc khu", "Commune"),
    }
}

/// An org-unit level's name; in Vietnamese the report files' ([`indicators::level_name_vi`]).
pub fn level(lang: Lang, level: &str) -> String {
    match lang {
        Lang::Vi => indicators::level_name_vi(level),
        Lang::En => match level {
            "province" => "Province",
            "district" => "District",
            "commune" => "Commune",
            other => other,
        },
    }
    .to_string()
}

/// The indicator's name, as the plans word it.
pub fn indicator(lang: Lang, id: IndicatorId) -> &'static str {
    match id {
        IndicatorId::GbvVictimsSupported => lang.t(
            "Người bị bạo lực gia đình, bạo lực trên cơ sở giới được hỗ trợ ít nhất một dịch vụ cơ bản",
            "Victims of domestic or gender-based violence who received at least one basic support service",
        ),
        IndicatorId::PerpetratorsCounselled => lang.t(
            "Người gây bạo lực (không bị truy cứu trách nhiệm hình sự) được tư vấn, tham vấn",
            "Perpetrators (not prosecuted) who were counselled",
        ),
        IndicatorId::TraffickingReturneesSupported => lang.t(
            "Nạn nhân bị mua bán trở về có nhu cầu được hỗ trợ",
            "Trafficking returnees in need of support who received it",
        ),
        IndicatorId::CommunesNewsCompliant => lang.t(
            "Xã có từ 4 tin, bài trở lên về bình đẳng giới mỗi quý",
            "Communes with at least 4 gender-equality news items every quarter",
        ),
    }
}

/// A short column heading for tables.
pub fn indicator_short(lang: Lang, id: IndicatorId) -> &'static str {
    match id {
        IndicatorId::GbvVictimsSupported => lang.t("Nạn nhân bạo lực được hỗ trợ", "GBV victims supported"),
        IndicatorId::PerpetratorsCounselled => lang.t("Người gây bạo lực được tư vấn", "Perpetrators counselled"),
        IndicatorId::TraffickingReturneesSupported => lang.t("Nạn nhân mua bán được hỗ trợ", "Trafficking returnees supported"),
        IndicatorId::CommunesNewsCompliant => lang.t("Xã đủ tin, bài", "Communes with enough news"),
    }
}

/// The strategy's numbering of the indicator.
pub fn indicator_code(id: IndicatorId) -> &'static str {
    match id {
        IndicatorId::GbvVictimsSupported => "3.2a",
        IndicatorId::PerpetratorsCounselled => "3.2b",
        IndicatorId::TraffickingReturneesSupported => "3.3",
        IndicatorId::CommunesNewsCompliant => "6.3",
    }
}

/// A fraction as a percentage: `83,3%` in Vietnamese, `83.3%` in English.
pub fn pct(lang: Lang, v: f64) -> String {
    let s = format!("{:.1}", v * 100.0);
    let s = s.strip_suffix(".0").unwrap_or(&s).to_string();
    match lang {
        Lang::Vi => format!("{}%", s.replace('.', ",")),
        Lang::En => format!("{s}%"),
    }
}

pub fn date(lang: Lang, d: NaiveDate) -> String {
    match lang {
        Lang::Vi => d.format("%d/%m/%Y").to_string(),
        Lang::En => d.format("%Y-%m-%d").to_string(),
    }
}

/// A Unix time in Vietnam's time zone.
pub fn datetime(lang: Lang, secs: i64) -> String {
    match vietnam().timestamp_opt(secs, 0).single() {
        Some(t) => match lang {
            Lang::Vi => t.format("%d/%m/%Y %H:%M").to_string(),
            Lang::En => t.format("%Y-%m-%d %H:%M").to_string(),
        },
        None => "–".into(),
    }
}

/// A period in words: "Năm 2025", "6 tháng đầu năm 2025", "Quý 3/2025".
pub fn period(lang: Lang, p: Period) -> String {
    match (p.kind(), lang) {
        (PeriodKind::Year(y), Lang::Vi) => format!("Năm {y}"),
        (PeriodKind::Year(y), Lang::En) => format!("Year {y}"),
        (PeriodKind::HalfYear(y, Half::First), Lang::Vi) => format!("6 tháng đầu năm {y}"),
        (PeriodKind::HalfYear(y, Half::Second), Lang::Vi) => format!("6 tháng cuối năm {y}"),
        (PeriodKind::HalfYear(y, Half::First), Lang::En) => format!("First half of {y}"),
        (PeriodKind::HalfYear(y, Half::Second), Lang::En) => format!("Second half of {y}"),
        (PeriodKind::Quarter(q), Lang::Vi) => format!("Quý {}/{}", q.q(), q.year()),
        (PeriodKind::Quarter(q), Lang::En) => format!("Q{} {}", q.q(), q.year()),
    }
}

/// The periods offered by the period selector: the years around today, their halves and
/// quarters.
pub fn period_choices() -> Vec<Period> {
    let y = this_year();
    let mut out = Vec::new();
    for year in [y, y - 1, y - 2] {
        for s in [format!("{year}"), format!("{year}S1"), format!("{year}S2"), format!("{year}Q1"), format!("{year}Q2"), format!("{year}Q3"), format!("{year}Q4")] {
            if let Ok(p) = s.parse() {
                out.push(p);
            }
        }
    }
    out
}

/// "Đạt" / "Chưa đạt" / "Chưa có số liệu" as a badge (text, not colour alone).
pub fn verdict(lang: Lang, v: &IndicatorValue) -> Markup {
    html! {
        @match v.met {
            Some(true) => span.badge.met { (lang.t("Đạt", "Met")) },
            Some(false) => span.badge.unmet { (lang.t("Chưa đạt", "Not met")) },
            None => span.badge.none { (lang.t("Chưa có số liệu", "No data")) },
        }
    }
}

/// A value with the counts behind it: "83,3% (25/30)", or "– (0/0)".
pub fn value_with_counts(lang: Lang, v: &IndicatorValue) -> String {
    let value = v.value.map(|x| pct(lang, x)).unwrap_or_else(|| "–".into());
    format!("{value} ({}/{})", v.numerator, v.denominator)
}

pub fn target(lang: Lang, v: &IndicatorValue) -> String {
    v.target.map(|t| pct(lang, t)).unwrap_or_else(|| "–".into())
}

/// "Đã phê duyệt" / "Đã phê duyệt, số liệu đã thay đổi sau đó" / "Chưa phê duyệt".
pub fn approval_badge(lang: Lang, a: Option<&crate::review::Approval>) -> Markup {
    html! {
        @match a {
            Some(a) if a.changes_after > 0 => span.badge.unmet.approval { (lang.t("Đã phê duyệt, số liệu đã thay đổi sau đó", "Approved; figures changed since")) },
            Some(a) => span.badge.met.approval { (lang.t("Đã phê duyệt ngày ", "Approved on ")) (datetime(lang, a.approved_at).split(' ').next().unwrap_or_default()) },
            None => span.badge.none.approval { (lang.t("Chưa phê duyệt", "Not approved")) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_periods_read_naturally() {
        assert_eq!(pct(Lang::Vi, 0.8333), "83,3%");
        assert_eq!(pct(Lang::En, 0.8), "80%");
        assert_eq!(pct(Lang::Vi, 1.0), "100%");
        assert_eq!(period(Lang::Vi, "2025Q3".parse().unwrap()), "Quý 3/2025");
        assert_eq!(period(Lang::Vi, "2025S1".parse().unwrap()), "6 tháng đầu năm 2025");
        assert_eq!(period(Lang::En, "2025".parse().unwrap()), "Year 2025");
        assert_eq!(date(Lang::Vi, NaiveDate::from_ymd_opt(2025, 12, 15).unwrap()), "15/12/2025");
        assert_eq!(datetime(Lang::Vi, 0), "01/01/1970 07:00");
    }

    #[test]
    fn overviews_and_reviewers_are_named_by_their_level() {
        assert_eq!(overview(Lang::Vi, "province"), "Tổng quan tỉnh");
        assert_eq!(overview(Lang::Vi, "district"), "Tổng quan huyện");
        assert_eq!(overview(Lang::En, "province"), "Province overview");
        assert_eq!(overview(Lang::En, ""), "Overview");
        assert_eq!(role_at(Lang::Vi, Role::DistrictStaff, Some("district")), "Cán bộ huyện");
        assert_eq!(role_at(Lang::Vi, Role::DistrictStaff, Some("province")), "Cán bộ rà soát cấp tỉnh");
        assert_eq!(role_at(Lang::En, Role::DistrictStaff, Some("province")), "Province reviewer");
        assert_eq!(role_at(Lang::Vi, Role::DistrictStaff, None), "Cán bộ rà soát cấp trên xã");
        assert_eq!(role_at(Lang::Vi, Role::ProvinceStaff, Some("province")), "Cán bộ tỉnh");
    }
}
