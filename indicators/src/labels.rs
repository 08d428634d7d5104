//! The Vietnamese words of the report files, in one place: the CSV here, the server's workbook
//! and its pages name levels and verdicts the same way.

/// The Vietnamese name of an org-unit level as the tree stores it: `province` → "Tỉnh",
/// `district` → "Huyện", `commune` → "Xã". Levels are data (a tree may name others, and the
/// 2025 map has no districts), so any other level is returned as it is.
pub fn level_name_vi(level: &str) -> &str {
    match level {
        "province" => "Tỉnh",
        "district" => "Huyện",
        "commune" => "Xã",
        other => other,
    }
}

/// A rate against its target in words: "Đạt" (met), "Chưa đạt" (not met), or empty when there
/// is no verdict (no value, or no target).
pub fn verdict_vi(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "Đạt",
        Some(false) => "Chưa đạt",
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_levels_are_named_and_others_pass_through() {
        assert_eq!(level_name_vi("province"), "Tỉnh");
        assert_eq!(level_name_vi("district"), "Huyện");
        assert_eq!(level_name_vi("commune"), "Xã");
        assert_eq!(level_name_vi("phường"), "phường");
        assert_eq!(level_name_vi(""), "");
    }
}
