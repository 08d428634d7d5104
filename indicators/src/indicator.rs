//! The four indicators and the categories their counts are disaggregated by.
//!
//! The `snake_case` strings here are part of the contract (JSON reports, stored counter keys,
//! URLs): do not rename them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the indicators of `domain.md`. Ordered as in the strategy (this order is used in
/// reports and CSV columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndicatorId {
    /// 3.2a: victims with at least one basic support service / victims detected.
    GbvVictimsSupported,
    /// 3.2b: perpetrators detected, not prosecuted, counselled / detected, not prosecuted.
    PerpetratorsCounselled,
    /// 3.3: returnees needing support who got some / returnees needing support.
    TraffickingReturneesSupported,
    /// 6.3: communes with at least 4 news items in every quarter / communes.
    CommunesNewsCompliant,
}

impl IndicatorId {
    pub const ALL: [IndicatorId; 4] = [
        IndicatorId::GbvVictimsSupported,
        IndicatorId::PerpetratorsCounselled,
        IndicatorId::TraffickingReturneesSupported,
        IndicatorId::CommunesNewsCompliant,
    ];

    /// The indicators whose numerator and denominator are sums of per-record counts and are
    /// therefore disaggregated by sex, age band and ethnic-minority status. The news indicator
    /// counts communes, which have none of these.
    pub const RATES: [IndicatorId; 3] = [
        IndicatorId::GbvVictimsSupported,
        IndicatorId::PerpetratorsCounselled,
        IndicatorId::TraffickingReturneesSupported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IndicatorId::GbvVictimsSupported => "gbv_victims_supported",
            IndicatorId::PerpetratorsCounselled => "perpetrators_counselled",
            IndicatorId::TraffickingReturneesSupported => "trafficking_returnees_supported",
            IndicatorId::CommunesNewsCompliant => "communes_news_compliant",
        }
    }

    /// A short Vietnamese label, used as the CSV column prefix.
    pub fn short_name_vi(self) -> &'static str {
        match self {
            IndicatorId::GbvVictimsSupported => "Người bị bạo lực được hỗ trợ",
            IndicatorId::PerpetratorsCounselled => "Người gây bạo lực được tư vấn",
            IndicatorId::TraffickingReturneesSupported => "Nạn nhân bị mua bán trở về được hỗ trợ",
            IndicatorId::CommunesNewsCompliant => "Xã đủ tin bài về bình đẳng giới",
        }
    }

    /// Whether the indicator is disaggregated (see [`IndicatorId::RATES`]).
    pub fn is_disaggregated(self) -> bool {
        self != IndicatorId::CommunesNewsCompliant
    }
}

impl fmt::Display for IndicatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An indicator id that is not one of [`IndicatorId::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "indicator `{0}` is not known: use gbv_victims_supported, perpetrators_counselled, \
     trafficking_returnees_supported or communes_news_compliant"
)]
pub struct UnknownIndicator(pub String);

impl FromStr for IndicatorId {
    type Err = UnknownIndicator;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IndicatorId::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| UnknownIndicator(s.to_owned()))
    }
}

/// Sex as recorded; anything missing or unexpected counts as `Unknown` rather than being
/// dropped, so that the breakdown always sums to the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

impl Sex {
    pub const ALL: [Sex; 4] = [Sex::Female, Sex::Male, Sex::Other, Sex::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Female => "female",
            Sex::Male => "male",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }

    /// The category's Vietnamese name, for report files (a column heading on its own).
    pub fn name_vi(self) -> &'static str {
        match self {
            Sex::Female => "Nữ",
            Sex::Male => "Nam",
            Sex::Other => "Giới tính khác",
            Sex::Unknown => "Không rõ giới tính",
        }
    }

    /// The recorded sex; `unknown` when missing or not one of the schema's values.
    pub fn from_text(s: Option<&str>) -> Sex {
        let s = s.unwrap_or("");
        Sex::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .unwrap_or(Sex::Unknown)
    }
}

/// Age band. Under 16 is a child under Vietnamese law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AgeBand {
    #[serde(rename = "under_16")]
    Under16,
    #[serde(rename = "16_59")]
    From16To59,
    #[serde(rename = "60_plus")]
    From60,
    #[serde(rename = "unknown")]
    Unknown,
}

impl AgeBand {
    pub const ALL: [AgeBand; 4] = [
        AgeBand::Under16,
        AgeBand::From16To59,
        AgeBand::From60,
        AgeBand::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgeBand::Under16 => "under_16",
            AgeBand::From16To59 => "16_59",
            AgeBand::From60 => "60_plus",
            AgeBand::Unknown => "unknown",
        }
    }

    /// The band's Vietnamese name, for report files (a column heading on its own).
    pub fn name_vi(self) -> &'static str {
        match self {
            AgeBand::Under16 => "Dưới 16 tuổi",
            AgeBand::From16To59 => "Từ 16 đến 59 tuổi",
            AgeBand::From60 => "Từ 60 tuổi trở lên",
            AgeBand::Unknown => "Không rõ tuổi",
        }
    }

    /// Age is the year of the record's date minus the birth year (birthdays are not recorded).
    /// A birth year after the record's year is a data error and counts as unknown.
    pub fn from_years(record_year: i32, birth_year: Option<i64>) -> AgeBand {
        match birth_year.and_then(|b| i64::from(record_year).checked_sub(b)) {
            Some(age) if age < 0 => AgeBand::Unknown,
            Some(age) if age < 16 => AgeBand::Under16,
            Some(age) if age < 60 => AgeBand::From16To59,
            Some(_) => AgeBand::From60,
            None => AgeBand::Unknown,
        }
    }
}

/// Ethnic-minority status ("dân tộc thiểu số").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EthnicMinority {
    Yes,
    No,
    Unknown,
}

impl EthnicMinority {
    pub const ALL: [EthnicMinority; 3] = [
        EthnicMinority::Yes,
        EthnicMinority::No,
        EthnicMinority::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EthnicMinority::Yes => "yes",
            EthnicMinority::No => "no",
            EthnicMinority::Unknown => "unknown",
        }
    }

    /// The category's Vietnamese name, for report files (a column heading on its own).
    pub fn name_vi(self) -> &'static str {
        match self {
            EthnicMinority::Yes => "Dân tộc thiểu số",
            EthnicMinority::No => "Không phải dân tộc thiểu số",
            EthnicMinority::Unknown => "Không rõ dân tộc",
        }
    }

    /// Unlike the case flags, a missing `ethnic_minority` is *not* read as `false`: an
    /// unrecorded ethnicity would otherwise inflate the "no" column that the plans monitor.
    pub fn from_flag(v: Option<bool>) -> EthnicMinority {
        match v {
            Some(true) => EthnicMinority::Yes,
            Some(false) => EthnicMinority::No,
            None => EthnicMinority::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indicator_ids_round_trip() {
        for id in IndicatorId::ALL {
            assert_eq!(id.as_str().parse::<IndicatorId>(), Ok(id));
            assert_eq!(serde_json::to_value(id).unwrap(), id.as_str());
            assert_eq!(id.to_string(), id.as_str());
        }
        let err = "gbv".parse::<IndicatorId>().unwrap_err().to_string();
        assert!(err.contains("communes_news_compliant"), "{err}");
    }

    #[test]
    fn age_bands_at_the_boundaries() {
        assert_eq!(AgeBand::from_years(2025, Some(2010)), AgeBand::Under16); // 15
        assert_eq!(AgeBand::from_years(2025, Some(2009)), AgeBand::From16To59); // 16
        assert_eq!(AgeBand::from_years(2025, Some(1966)), AgeBand::From16To59); // 59
        assert_eq!(AgeBand::from_years(2025, Some(1965)), AgeBand::From60); // 60
        assert_eq!(AgeBand::from_years(2025, Some(2025)), AgeBand::Under16); // 0
        assert_eq!(AgeBand::from_years(2025, Some(2026)), AgeBand::Unknown);
        assert_eq!(AgeBand::from_years(2025, None), AgeBand::Unknown);
        assert_eq!(AgeBand::from_years(2025, Some(i64::MIN)), AgeBand::Unknown);
        for b in AgeBand::ALL {
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str());
        }
    }
}
