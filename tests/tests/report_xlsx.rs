//! The district report as an Excel workbook, opened as a spreadsheet program would open it:
//! district staff download `GET /api/v1/reports/047/2025.xlsx` from the real server, and every
//! rate, target and count in it is the figure `GET /api/v1/indicators` gives for that unit and
//! period, in a percent (rates) or integer (counts) number format, with the breakdown on a
//! second sheet and the header rows frozen. The pages serve the same workbook and link it next
//! to the CSV; an unknown file suffix is a 404 in the API's JSON error format.

use std::io::{Cursor, Read};

use calamine::{Data, Range, Reader, StyleRange, Xlsx};
use client_sdk::{Client, FixedKey, RecordKind, StoreKey};
use serde_json::{json, Value};
use tests::{Api, TestServer, PASSWORD};

const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The indicators in the JSON's (and the sheet's) order, with the sheet's heading prefix.
const INDICATORS: [(&str, &str); 4] = [
    ("gbv_victims_supported", "Người bị bạo lực được hỗ trợ"),
    ("perpetrators_counselled", "Người gây bạo lực được tư vấn"),
    ("trafficking_returnees_supported", "Nạn nhân bị mua bán trở về được hỗ trợ"),
    ("communes_news_compliant", "Xã đủ tin bài về bình đẳng giới"),
];

/// Records of two communes for 2025 with rates that are not round: 04701 has 2 of 3 victims
/// supported (66.7%), 1 of 2 perpetrators counselled, no returnee (no value), and 4 news items
/// in every quarter; 04702 has 0 of 1 victims supported and 1 of 1 returnee supported.
async fn record_a_year(server: &TestServer, dir: &std::path::Path) {
    let mut one = Client::open(dir.join("officer1"), FixedKey(StoreKey::random())).unwrap();
    one.login(&server.url(), "officer1", PASSWORD, None).await.unwrap();
    let cases = [
        json!({"commune": "04701", "detected_on": "2025-02-03", "victim": {"sex": "female", "birth_year": 2012, "ethnic_minority": true},
               "services": [{"kind": "health", "provided_on": "2025-02-04"}],
               "perpetrator": {"detected": true, "prosecuted": false, "counselled": true}}),
        json!({"commune": "04701", "detected_on": "2025-05-20", "victim": {"sex": "female", "birth_year": 1990, "ethnic_minority": false},
               "services": [{"kind": "legal_aid"}], "perpetrator": {"detected": true, "prosecuted": false, "counselled": false}}),
        json!({"commune": "04701", "detected_on": "2025-11-30", "victim": {"sex": "male", "birth_year": 1950}}),
    ];
    for c in &cases {
        one.create(RecordKind::GbvCase, c).unwrap();
    }
    for month in ["02", "05", "08", "11"] {
        for day in 10..14 {
            one.create(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": format!("2025-{month}-{day}"), "channel": "loudspeaker"})).unwrap();
        }
    }
    assert_eq!(one.sync(|_| {}).await.unwrap().rejected, 0);

    let mut two = Client::open(dir.join("officer2"), FixedKey(StoreKey::random())).unwrap();
    two.login(&server.url(), "officer2", PASSWORD, None).await.unwrap();
    two.create(RecordKind::GbvCase, &json!({"commune": "04702", "detected_on": "2025-07-01", "victim": {"sex": "other"}})).unwrap();
    two.create(RecordKind::TraffickingReturnee, &json!({"commune": "04702", "identified_on": "2025-03-15", "sex": "female", "birth_year": 2000,
        "needs_support": true, "support": [{"kind": "essential_needs", "provided_on": "2025-03-16"}]})).unwrap();
    two.create(RecordKind::NewsItem, &json!({"commune": "04702", "published_on": "2025-01-05", "channel": "bulletin_board"})).unwrap();
    assert_eq!(two.sync(|_| {}).await.unwrap().rejected, 0);
}

struct Download {
    status: u16,
    content_type: String,
    disposition: String,
    body: Vec<u8>,
}

async fn download(req: reqwest::RequestBuilder) -> Download {
    let r = req.send().await.unwrap();
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    Download { status: r.status().as_u16(), content_type, disposition, body: r.bytes().await.unwrap().to_vec() }
}

struct Workbook {
    sheets: Vec<String>,
    figures: Range<Data>,
    figure_styles: StyleRange,
    breakdown: Range<Data>,
    breakdown_styles: StyleRange,
}

fn open(bytes: &[u8]) -> Workbook {
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes.to_vec())).expect("the download opens as an xlsx workbook");
    Workbook {
        sheets: book.sheet_names(),
        figures: book.worksheet_range("Chỉ tiêu").unwrap(),
        figure_styles: book.worksheet_style("Chỉ tiêu").unwrap(),
        breakdown: book.worksheet_range("Phân tổ").unwrap(),
        breakdown_styles: book.worksheet_style("Phân tổ").unwrap(),
    }
}

fn cell(range: &Range<Data>, row: usize, col: usize) -> Data {
    range.get_value((row as u32, col as u32)).cloned().unwrap_or(Data::Empty)
}

fn text(range: &Range<Data>, row: usize, col: usize) -> String {
    match cell(range, row, col) {
        Data::String(s) => s,
        Data::Empty => String::new(),
        other => panic!("({row}, {col}) should be text, is {other:?}"),
    }
}

fn number_format(styles: &StyleRange, row: usize, col: usize) -> String {
    styles
        .get((row as u32, col as u32))
        .and_then(|s| s.number_format.as_ref())
        .map(|f| f.format_code.clone())
        .unwrap_or_else(|| "General".into())
}

fn header(range: &Range<Data>) -> Vec<String> {
    (0..range.width()).map(|c| text(range, 0, c)).collect()
}

/// A count cell: the number, in the integer format.
fn assert_count(wb: &Workbook, breakdown: bool, row: usize, col: usize, expected: &Value, what: &str) {
    let (range, styles) = if breakdown { (&wb.breakdown, &wb.breakdown_styles) } else { (&wb.figures, &wb.figure_styles) };
    let expected = expected.as_i64().unwrap_or_else(|| panic!("{what}: not a count in the JSON"));
    assert_eq!(cell(range, row, col), Data::Float(expected as f64), "{what}");
    assert_eq!(number_format(styles, row, col), "0", "{what}: integer format");
}

/// A rate or target cell: the JSON's fraction exactly, shown as a percentage; empty for `null`.
fn assert_fraction(wb: &Workbook, row: usize, col: usize, expected: &Value, what: &str) {
    match expected.as_f64() {
        Some(x) => {
            assert_eq!(cell(&wb.figures, row, col), Data::Float(x), "{what}");
            assert_eq!(number_format(&wb.figure_styles, row, col), "0.0%", "{what}: percent format");
        }
        None => assert_eq!(cell(&wb.figures, row, col), Data::Empty, "{what}: no value is an empty cell, not 0%"),
    }
}

fn zip_entry(bytes: &[u8], name: &str) -> String {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = String::new();
    archive.by_name(name).unwrap().read_to_string(&mut out).unwrap();
    out
}

/// Signs in on the pages as `user`; the cookie header of the session.
async fn web_login(url: &str, user: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookies = |r: &reqwest::Response| -> Vec<String> {
        r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(|c| c.split(';').next().unwrap().to_string()).collect()
    };
    let form = http.get(format!("{url}/login")).send().await.unwrap();
    let pre = cookies(&form).join("; ");
    let html = form.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).expect("a login form with a CSRF token") + marker.len();
    let csrf = html[at..].split('"').next().unwrap();
    let body = format!("csrf={csrf}&username={user}&password={PASSWORD}");
    let r = http.post(format!("{url}/login")).header("cookie", pre).header("content-type", "application/x-www-form-urlencoded").body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "web login of {user}");
    let session = cookies(&r).into_iter().filter(|c| !c.ends_with('=')).collect::<Vec<_>>().join("; ");
    assert!(session.contains("gesync_session="), "a session cookie: {session}");
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_workbook_holds_the_apis_figures_as_numbers_with_percent_formats() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let url = server.url();
    record_a_year(&server, dir.path()).await;
    let district = Api::login(&url, "district").await;
    let http = reqwest::Client::new();

    let got = download(http.get(format!("{url}/api/v1/reports/047/2025.xlsx")).bearer_auth(&district.token)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.content_type, XLSX_TYPE);
    assert_eq!(got.disposition, "attachment; filename=\"gesync-047-2025.xlsx\"");
    let wb = open(&got.body);
    assert_eq!(wb.sheets, ["Chỉ tiêu", "Phân tổ"]);

    // Sheet 1: the CSV's columns, one row per commune then the district.
    let mut expected_header: Vec<String> = ["Mã đơn vị", "Tên đơn vị", "Cấp", "Kỳ báo cáo"].map(String::from).into();
    for (_, name) in INDICATORS {
        for part in ["tử số", "mẫu số", "tỷ lệ", "chỉ tiêu", "đánh giá"] {
            expected_header.push(format!("{name} - {part}"));
        }
    }
    assert_eq!(header(&wb.figures), expected_header);
    let units = ["04701", "04702", "047"];
    assert_eq!(wb.figures.height(), 1 + units.len());
    for (i, unit) in units.iter().enumerate() {
        let row = i + 1;
        assert_eq!(text(&wb.figures, row, 0), *unit, "codes are text and keep their leading zero");
        assert_eq!(text(&wb.figures, row, 2), if *unit == "047" { "Huyện" } else { "Xã" }, "level of {unit} in Vietnamese");
        assert_eq!(text(&wb.figures, row, 3), "2025");
        let (status, json) = district.get(&format!("/api/v1/indicators?org_unit={unit}&period=2025")).await;
        assert_eq!(status, 200, "{json}");
        let figures = json["indicators"].as_array().unwrap();
        for (k, (id, _)) in INDICATORS.iter().enumerate() {
            let v = figures.iter().find(|v| v["id"] == *id).unwrap();
            let col = 4 + 5 * k;
            let what = |part: &str| format!("{unit} {id} {part}");
            assert_count(&wb, false, row, col, &v["numerator"], &what("numerator"));
            assert_count(&wb, false, row, col + 1, &v["denominator"], &what("denominator"));
            assert_fraction(&wb, row, col + 2, &v["value"], &what("rate"));
            assert_fraction(&wb, row, col + 3, &v["target"], &what("target"));
            let verdict = match v["met"].as_bool() {
                Some(true) => "Đạt",
                Some(false) => "Chưa đạt",
                None => "",
            };
            assert_eq!(text(&wb.figures, row, col + 4), verdict, "{}", what("verdict"));
        }
    }
    // The figures are the ones recorded, so the comparison above was not of empty sheets.
    assert_eq!(cell(&wb.figures, 1, 6), Data::Float(2.0 / 3.0), "04701: 2 of 3 victims supported");
    assert_eq!(cell(&wb.figures, 1, 16), Data::Empty, "04701 has no returnee: no rate");
    assert_eq!(cell(&wb.figures, 3, 19), Data::Float(1.0), "047: 1 of 2 communes compliant (numerator)");
    assert_eq!(cell(&wb.figures, 3, 21), Data::Float(0.5), "047: 1 of 2 communes compliant (rate)");

    // Sheet 2: per unit, rate indicator and side, the total and its splits, as the JSON's.
    let categories: [(&str, &[(&str, &str)]); 3] = [
        ("sex", &[("female", "Nữ"), ("male", "Nam"), ("other", "Giới tính khác"), ("unknown", "Không rõ giới tính")]),
        ("age_band", &[("under_16", "Dưới 16 tuổi"), ("16_59", "Từ 16 đến 59 tuổi"), ("60_plus", "Từ 60 tuổi trở lên"), ("unknown", "Không rõ tuổi")]),
        ("ethnic_minority", &[("yes", "Dân tộc thiểu số"), ("no", "Không phải dân tộc thiểu số"), ("unknown", "Không rõ dân tộc")]),
    ];
    let mut expected_header: Vec<String> = ["Mã đơn vị", "Tên đơn vị", "Cấp", "Kỳ báo cáo", "Chỉ tiêu", "Phần", "Tổng số"].map(String::from).into();
    expected_header.extend(categories.iter().flat_map(|(_, cs)| cs.iter().map(|(_, name)| name.to_string())));
    assert_eq!(header(&wb.breakdown), expected_header);
    assert_eq!(wb.breakdown.height(), 1 + units.len() * 3 * 2);
    let mut row = 1;
    for unit in units {
        let (_, json) = district.get(&format!("/api/v1/indicators?org_unit={unit}&period=2025")).await;
        for (id, name) in &INDICATORS[..3] {
            let v = json["indicators"].as_array().unwrap().iter().find(|v| v["id"] == *id).unwrap();
            for (side, side_vi) in [("numerator", "Tử số"), ("denominator", "Mẫu số")] {
                let what = format!("{unit} {id} {side}");
                assert_eq!((text(&wb.breakdown, row, 0), text(&wb.breakdown, row, 4), text(&wb.breakdown, row, 5)), (unit.to_string(), name.to_string(), side_vi.to_string()), "{what}");
                assert_count(&wb, true, row, 6, &v[side], &format!("{what} total"));
                let mut col = 7;
                for (cut, cs) in &categories {
                    for (key, _) in cs.iter() {
                        assert_count(&wb, true, row, col, &json["breakdown"][id][side][cut][key], &format!("{what} {cut}.{key}"));
                        col += 1;
                    }
                }
                row += 1;
            }
        }
    }

    // The header row (and the code and name columns) stay in view; columns have widths.
    for sheet in ["xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"] {
        let xml = zip_entry(&got.body, sheet);
        assert!(xml.contains(r#"<pane xSplit="2" ySplit="1" topLeftCell="C2" activePane="bottomRight" state="frozen"/>"#), "{sheet}: frozen header");
        assert!(xml.contains("<cols>") && xml.contains("customWidth=\"1\""), "{sheet}: column widths");
    }

    // The CSV of the same report reads the same figures as percentages with one decimal.
    let csv = download(http.get(format!("{url}/api/v1/reports/047/2025.csv")).bearer_auth(&district.token)).await;
    let csv = String::from_utf8(csv.body).unwrap();
    let lines: Vec<&str> = csv.trim_start_matches('\u{feff}').lines().collect();
    assert!(lines[0].contains("Người bị bạo lực được hỗ trợ - tỷ lệ (%)"), "{}", lines[0]);
    assert!(lines[1].starts_with("04701,Thị trấn Trùng Khánh,Xã,2025,2,3,66.7,80.0,Chưa đạt,1,2,50.0,50.0,Đạt,0,0,,100.0,,1,1,100.0,100.0,Đạt"), "{}", lines[1]);
    assert!(lines[3].starts_with("047,Huyện Trùng Khánh,Huyện,2025,"), "{}", lines[3]);

    // The pages serve the same workbook to a browser session and link it beside the CSV.
    let cookie = web_login(&url, "district").await;
    let page = http.get(format!("{url}/district?unit=047&period=2025")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"href="/export/047/2025.csv""#) && page.contains(r#"href="/export/047/2025.xlsx""#), "the overview links both files");
    let printable = http.get(format!("{url}/report/047/2025")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(printable.contains(r#"href="/export/047/2025.xlsx""#), "the printable report links the workbook");
    let web = download(http.get(format!("{url}/export/047/2025.xlsx")).header("cookie", &cookie)).await;
    assert_eq!((web.status, web.content_type.as_str(), web.disposition.as_str()), (200, XLSX_TYPE, "attachment; filename=\"gesync-047-2025.xlsx\""));
    let web_wb = open(&web.body);
    assert_eq!(web_wb.figures, wb.figures, "the page's workbook is the API's");
    assert_eq!(web_wb.breakdown, wb.breakdown);

    // Both downloads are audited as exports, like the CSV.
    let admin = Api::login(&url, "admin").await;
    let (_, audit) = admin.get("/api/v1/audit").await;
    let exports = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "report_export" && e["user"] == "district" && e["target"] == "047/2025").count();
    assert_eq!(exports, 3, "API workbook, API CSV and page workbook");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_report_suffix_is_a_json_404_and_scope_still_applies() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let url = server.url();
    let district = Api::login(&url, "district").await;
    for file in ["2025.txt", "2025.xls", "2025", "2025.XLSX"] {
        let (status, json) = district.get(&format!("/api/v1/reports/047/{file}")).await;
        assert_eq!(status, 404, "{file}");
        assert_eq!(json["error"]["code"], "not_found", "{file}: {json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(".csv") && message.contains(".xlsx"), "{file}: the message names the served files: {message}");
    }
    let (status, json) = district.get("/api/v1/reports/047/2025Q9.xlsx").await;
    assert_eq!((status, &json["error"]["code"]), (400, &json!("bad_request")), "a bad period: {json}");
    // The neighbouring district's workbook is refused as its CSV is.
    let (status, json) = district.get("/api/v1/reports/048/2025.xlsx").await;
    assert_eq!((status, &json["error"]["code"]), (403, &json!("forbidden")), "{json}");
    let http = reqwest::Client::new();
    let anon = download(http.get(format!("{url}/api/v1/reports/047/2025.xlsx"))).await;
    assert_eq!(anon.status, 401);
    server.stop().await;
}
