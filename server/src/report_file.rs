//! The district report as a file to download: `{period}.csv` or `{period}.xlsx`, the same rows
//! ([`crate::api::report_rows`]) for the API's `/api/v1/reports/{org_unit}/{file}` and the
//! pages' `/export/{unit}/{file}`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use indicators::{CsvRow, Period};

use crate::error::{AppError, AppResult};

/// The formats a report is served in, chosen by the file name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// UTF-8 with a BOM, Vietnamese headers ([`indicators::csv_report`]).
    Csv,
    /// An Excel workbook with the figures and their breakdown ([`crate::xlsx::xlsx_report`]).
    Xlsx,
}

/// What an unknown suffix is told.
pub const FILE_NAMES: &str = "reports are served as {period}.csv or {period}.xlsx";

impl ReportFormat {
    const ALL: [ReportFormat; 2] = [ReportFormat::Csv, ReportFormat::Xlsx];

    /// Splits a requested file name, `2025Q3.csv`, into its period text and format; `None` for
    /// any other suffix.
    pub fn split(file: &str) -> Option<(&str, ReportFormat)> {
        ReportFormat::ALL
            .into_iter()
            .find_map(|f| file.strip_suffix(f.suffix()).map(|period| (period, f)))
    }

    fn suffix(self) -> &'static str {
        match self {
            ReportFormat::Csv => ".csv",
            ReportFormat::Xlsx => ".xlsx",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Xlsx => crate::xlsx::CONTENT_TYPE,
        }
    }

    /// The file's bytes. Blocking work (the workbook is zipped): call it off the async threads.
    pub fn render(self, rows: &[CsvRow]) -> AppResult<Vec<u8>> {
        match self {
            ReportFormat::Csv => Ok(indicators::csv_report(rows)),
            ReportFormat::Xlsx => crate::xlsx::xlsx_report(rows).map_err(|e| {
                // The error names a sheet, cell or format, never a cell's contents.
                tracing::error!(error = %e, "writing the report workbook failed");
                AppError::internal()
            }),
        }
    }

    /// The download: its media type and `gesync-{unit}-{period}.{csv|xlsx}` as an attachment.
    pub fn response(self, unit: &str, period: Period, bytes: Vec<u8>) -> AppResult<Response> {
        let disposition = format!("attachment; filename=\"gesync-{unit}-{period}{}\"", self.suffix());
        Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(self.content_type())),
                (header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| AppError::internal())?),
            ],
            bytes,
        )
            .into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suffix_chooses_the_format() {
        assert_eq!(ReportFormat::split("2025Q3.csv"), Some(("2025Q3", ReportFormat::Csv)));
        assert_eq!(ReportFormat::split("2025.xlsx"), Some(("2025", ReportFormat::Xlsx)));
        for other in ["2025.txt", "2025.xls", "2025", "2025.CSV", "2025.csv.gz"] {
            assert_eq!(ReportFormat::split(other), None, "{other}");
        }
    }
}
