//! The district report as a CSV file that opens in a spreadsheet.
//!
//! Hand-written rather than with the `csv` crate: the format is a handful of lines (RFC 4180
//! quoting) and the workspace does not otherwise need that dependency.

use crate::indicator::IndicatorId;
use crate::report::IndicatorReport;

/// One line of the file: an org unit and its report.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow {
    pub code: String,
    pub name: String,
    /// The level's name as data ("Tỉnh", "Huyện", "Xã"): the tree's depth is not fixed.
    pub level: String,
    pub report: IndicatorReport,
}

/// Without a byte-order mark, Excel opens UTF-8 CSV as the local code page and mangles
/// Vietnamese.
const BOM: &str = "\u{feff}";

/// Writes the rows as CSV: UTF-8 with a BOM, CRLF line ends, Vietnamese headers, one line per
/// row. Rates and targets are fractions written with a dot (`0.75`); a missing value is an
/// empty cell.
pub fn csv_report(rows: &[CsvRow]) -> Vec<u8> {
    let mut out = String::from(BOM);
    let mut header: Vec<String> = ["Mã đơn vị", "Tên đơn vị", "Cấp", "Kỳ báo cáo"]
        .map(String::from)
        .into();
    for id in IndicatorId::ALL {
        for part in ["tử số", "mẫu số", "tỷ lệ", "chỉ tiêu"] {
            header.push(format!("{} - {part}", id.short_name_vi()));
        }
    }
    line(&mut out, &header);
    for row in rows {
        let mut cells = vec![
            row.code.clone(),
            row.name.clone(),
            row.level.clone(),
            row.report.period.to_string(),
        ];
        for id in IndicatorId::ALL {
            match row.report.indicator(id) {
                Some(v) => cells.extend([
                    v.numerator.to_string(),
                    v.denominator.to_string(),
                    v.value.map(|x| x.to_string()).unwrap_or_default(),
                    v.target.map(|x| x.to_string()).unwrap_or_default(),
                ]),
                None => cells.extend(std::iter::repeat_n(String::new(), 4)),
            }
        }
        line(&mut out, &cells);
    }
    out.into_bytes()
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
    use crate::counters::Counters;
    use crate::report::report;
    use crate::targets::Targets;

    fn row(code: &str, name: &str, news: Vec<u32>) -> CsvRow {
        let chain = vec![code.to_owned()];
        let communes = [(code.to_owned(), news)];
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
            name: name.into(),
            level: "Xã".into(),
            report: r,
        }
    }

    #[test]
    fn starts_with_a_bom_and_has_vietnamese_headers() {
        let bytes = csv_report(&[]);
        assert!(bytes.starts_with(&[0xEF, 0xBB, 0xBF]));
        let text = String::from_utf8(bytes).unwrap();
        let header = text.trim_start_matches('\u{feff}').lines().next().unwrap();
        assert!(header.starts_with("Mã đơn vị,Tên đơn vị,Cấp,Kỳ báo cáo,"));
        assert!(header.contains("Người bị bạo lực được hỗ trợ - tử số"));
        assert!(header.ends_with("Xã đủ tin bài về bình đẳng giới - chỉ tiêu"));
        assert_eq!(header.split(',').count(), 4 + 4 * 4);
        assert_eq!(text.matches("\r\n").count(), 1);
    }

    #[test]
    fn quotes_names_and_leaves_missing_values_empty() {
        let text = String::from_utf8(csv_report(&[
            row("04701", "Xã \"Đình\" Phong, Trùng Khánh", vec![4]),
            row("04702", "Ngọc\nKhê", vec![3]),
        ]))
        .unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[1],
            "04701,\"Xã \"\"Đình\"\" Phong, Trùng Khánh\",Xã,2025Q1,\
             0,0,,0.8,0,0,,0.5,0,0,,1,1,1,1,1"
        );
        assert_eq!(
            lines[2],
            "04702,\"Ngọc\nKhê\",Xã,2025Q1,0,0,,0.8,0,0,,0.5,0,0,,1,0,1,0,1"
        );
        assert_eq!(lines[3], "");
        assert_eq!(lines.len(), 4);
    }
}
