//! The district report as an Excel workbook: the rows of the CSV report
//! ([`crate::api::report_rows`]), with numbers a spreadsheet reads as numbers whatever its
//! locale (a CSV's `66.7` is text where the decimal separator is a comma, as in Vietnam).
//!
//! - Sheet "Chỉ tiêu": one row per org unit — code, name, level (in Vietnamese), period, then
//!   per indicator numerator, denominator, rate, target and verdict, as the CSV's columns.
//!   Counts are integers (`0`), rates and targets fractions shown as percentages (`0.0%`); a
//!   rate with a zero denominator is an empty cell, never 0%.
//! - Sheet "Phân tổ": the disaggregated counts, one row per org unit, rate indicator and side
//!   (numerator or denominator): the total, then by sex, age band and ethnic-minority status
//!   (each group sums to the total; the news indicator counts communes and has none).
//!
//! Both sheets keep their header row (and the code and name columns) in view when scrolling and
//! on every printed page, and carry an autofilter. Written in memory: this module does no I/O.

use indicators::{
    level_name_vi, verdict_vi, AgeBand, CsvRow, Disaggregation, EthnicMinority, IndicatorId, Sex,
};
use rust_xlsxwriter::{
    ColNum, Format, FormatAlign, FormatBorder, RowNum, Workbook, Worksheet, XlsxError,
};

/// The media type of an `.xlsx` file.
pub const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Excel's paper size code of A4.
const A4: u8 = 9;

/// The names of the two sheets.
pub const SHEET_FIGURES: &str = "Chỉ tiêu";
pub const SHEET_BREAKDOWN: &str = "Phân tổ";

/// The columns naming the org unit, first on both sheets.
const UNIT_HEADERS: [&str; 4] = ["Mã đơn vị", "Tên đơn vị", "Cấp", "Kỳ báo cáo"];
const UNIT_WIDTHS: [f64; 4] = [10.0, 30.0, 8.0, 10.0];

/// The per-indicator columns of "Chỉ tiêu", as the CSV's (the CSV says "(%)" because its rates
/// are written as percentages; here the cells carry a percent format instead).
const INDICATOR_PARTS: [&str; 5] = ["tử số", "mẫu số", "tỷ lệ", "chỉ tiêu", "đánh giá"];

/// The formats of the cells. A fraction with `0.0%` shows as `66.7%` and stays the number
/// 0.666…, so sums and comparisons in the spreadsheet use the exact value.
struct Formats {
    header: Format,
    text: Format,
    count: Format,
    percent: Format,
}

impl Formats {
    fn new() -> Formats {
        Formats {
            header: Format::new()
                .set_bold()
                .set_text_wrap()
                .set_align(FormatAlign::Top)
                .set_border_bottom(FormatBorder::Thin),
            text: Format::new(),
            count: Format::new().set_num_format("0"),
            percent: Format::new().set_num_format("0.0%"),
        }
    }
}

/// Writes the report rows as an `.xlsx` workbook, in memory.
pub fn xlsx_report(rows: &[CsvRow]) -> Result<Vec<u8>, XlsxError> {
    let f = Formats::new();
    let mut book = Workbook::new();
    figures_sheet(book.add_worksheet(), rows, &f)?;
    breakdown_sheet(book.add_worksheet(), rows, &f)?;
    book.save_to_buffer()
}

fn figures_sheet(ws: &mut Worksheet, rows: &[CsvRow], f: &Formats) -> Result<(), XlsxError> {
    ws.set_name(SHEET_FIGURES)?;
    let mut headers: Vec<String> = UNIT_HEADERS.map(String::from).into();
    for id in IndicatorId::ALL {
        for part in INDICATOR_PARTS {
            headers.push(format!("{} - {part}", id.short_name_vi()));
        }
    }
    let last_col = header_row(ws, &headers, f)?;
    for col in 4..=last_col {
        ws.set_column_width(col, 13)?;
    }

    for (row, r) in (1..).zip(rows) {
        unit_cells(ws, row, r, f)?;
        let mut col: ColNum = 4;
        for id in IndicatorId::ALL {
            if let Some(v) = r.report.indicator(id) {
                count_cell(ws, row, col, v.numerator, f)?;
                count_cell(ws, row, col + 1, v.denominator, f)?;
                if let Some(value) = v.value {
                    ws.write_number_with_format(row, col + 2, value, &f.percent)?;
                }
                if let Some(target) = v.target {
                    ws.write_number_with_format(row, col + 3, target, &f.percent)?;
                }
                let verdict = verdict_vi(v.met);
                if !verdict.is_empty() {
                    ws.write_string_with_format(row, col + 4, verdict, &f.text)?;
                }
            }
            col += 5;
        }
    }
    finish_table(ws, rows.len(), last_col)
}

fn breakdown_sheet(ws: &mut Worksheet, rows: &[CsvRow], f: &Formats) -> Result<(), XlsxError> {
    ws.set_name(SHEET_BREAKDOWN)?;
    let mut headers: Vec<String> = UNIT_HEADERS.map(String::from).into();
    headers.extend(["Chỉ tiêu", "Phần", "Tổng số"].map(String::from));
    headers.extend(Sex::ALL.map(|s| s.name_vi().to_owned()));
    headers.extend(AgeBand::ALL.map(|a| a.name_vi().to_owned()));
    headers.extend(EthnicMinority::ALL.map(|e| e.name_vi().to_owned()));
    let last_col = header_row(ws, &headers, f)?;
    ws.set_column_width(4, 30)?;
    ws.set_column_width(5, 9)?;
    for col in 6..=last_col {
        ws.set_column_width(col, 12)?;
    }

    let mut row: RowNum = 1;
    let mut written = 0;
    for r in rows {
        for id in IndicatorId::RATES {
            let (Some(b), Some(v)) = (r.report.breakdown.get(&id), r.report.indicator(id)) else {
                continue;
            };
            let sides = [("Tử số", v.numerator, &b.numerator), ("Mẫu số", v.denominator, &b.denominator)];
            for (side, total, split) in sides {
                unit_cells(ws, row, r, f)?;
                ws.write_string_with_format(row, 4, id.short_name_vi(), &f.text)?;
                ws.write_string_with_format(row, 5, side, &f.text)?;
                count_cell(ws, row, 6, total, f)?;
                for (i, n) in (7..).zip(split_counts(split)) {
                    count_cell(ws, row, i, n, f)?;
                }
                row += 1;
                written += 1;
            }
        }
    }
    finish_table(ws, written, last_col)
}

/// The categories' counts in the order of the sheet's columns: sex, age band, ethnic minority.
fn split_counts(d: &Disaggregation) -> Vec<i64> {
    let mut out: Vec<i64> = Sex::ALL.iter().map(|s| d.sex.get(s).copied().unwrap_or(0)).collect();
    out.extend(AgeBand::ALL.iter().map(|a| d.age_band.get(a).copied().unwrap_or(0)));
    out.extend(EthnicMinority::ALL.iter().map(|e| d.ethnic_minority.get(e).copied().unwrap_or(0)));
    out
}

/// Writes the header row and the unit columns' widths; returns the last column.
fn header_row(ws: &mut Worksheet, headers: &[String], f: &Formats) -> Result<ColNum, XlsxError> {
    for (col, h) in (0..).zip(headers) {
        ws.write_string_with_format(0, col, h, &f.header)?;
    }
    for (col, w) in (0..).zip(UNIT_WIDTHS) {
        ws.set_column_width(col, w)?;
    }
    // Room for the longest headings, wrapped, in 13-character columns.
    ws.set_row_height(0, 60)?;
    ColNum::try_from(headers.len() - 1).map_err(|_| XlsxError::RowColumnLimitError)
}

/// Code, name, level and period. The code is text: `04701` keeps its leading zero.
fn unit_cells(ws: &mut Worksheet, row: RowNum, r: &CsvRow, f: &Formats) -> Result<(), XlsxError> {
    ws.write_string_with_format(row, 0, &r.code, &f.text)?;
    ws.write_string_with_format(row, 1, &r.name, &f.text)?;
    ws.write_string_with_format(row, 2, level_name_vi(&r.level), &f.text)?;
    ws.write_string_with_format(row, 3, r.report.period.to_string(), &f.text)?;
    Ok(())
}

fn count_cell(ws: &mut Worksheet, row: RowNum, col: ColNum, n: i64, f: &Formats) -> Result<(), XlsxError> {
    // i64 → f64 is exact below 2^53, far above any count.
    ws.write_number_with_format(row, col, n as f64, &f.count)?;
    Ok(())
}

/// The header row and the unit's code and name stay in view, on screen and on every printed
/// page (A4 landscape); a filter on every column.
fn finish_table(ws: &mut Worksheet, data_rows: usize, last_col: ColNum) -> Result<(), XlsxError> {
    ws.set_freeze_panes(1, 2)?;
    ws.set_repeat_rows(0, 0)?;
    ws.set_repeat_columns(0, 1)?;
    ws.set_paper_size(A4).set_landscape();
    let last_row = RowNum::try_from(data_rows).map_err(|_| XlsxError::RowColumnLimitError)?;
    ws.autofilter(0, 0, last_row, last_col)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicators::{report, Counters, Targets};

    fn row(code: &str, level: &str) -> CsvRow {
        let communes = [(code.to_owned(), vec![4])];
        let r = report(code, "2025Q1".parse().unwrap(), &[code.to_owned()], &Targets::default(), |_| Counters::new(), &communes);
        CsvRow { code: code.into(), name: format!("Xã {code}"), level: level.into(), report: r }
    }

    #[test]
    fn a_workbook_is_a_zip_and_empty_reports_are_fine() {
        for rows in [vec![], vec![row("04701", "commune"), row("047", "district")]] {
            let bytes = xlsx_report(&rows).unwrap();
            assert!(bytes.starts_with(b"PK\x03\x04"), "an xlsx is a zip archive");
        }
    }
}
