//! The web pages, in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over the W3C WebDriver protocol by the small client below (on reqwest, so no second
//! HTTP or TLS stack is built), against the real server on loopback:
//! - district staff sign in and read figures that match `GET /api/v1/indicators`, resolve a
//!   conflict by clicking, merge a possible duplicate and approve the period;
//! - a commune officer signs in, lands on the "work on the phone" page and is refused (403) the
//!   district pages; province staff and admins land on their own pages;
//! - forms without, or with a wrong, CSRF token change nothing (403), the session cookie is
//!   `HttpOnly` and `SameSite=Strict`;
//! - on a two-level province (communes directly under it), an admin merges two communes with
//!   the org-unit page's form; the merged one is listed as history, and the province's reviewer
//!   gets a province overview (no "huyện") of the current communes only, in both languages.
//!
//! A missing `chromedriver` fails the test with a message saying how to install it: the browser
//! tests are part of the suite, not optional. With `GESYNC_SCREENSHOTS=DIR`, the main pages are
//! saved there as PNG at 1366×768 (that is how `docs/screenshots/` is made).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use client_sdk::{Client, FixedKey, StoreKey};
use rand::SeedableRng;
use serde_json::{json, Value};
use tests::{TestServer, PASSWORD};

// ---- a minimal WebDriver client --------------------------------------------------------------

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, name: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let in_path = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    in_path.or_else(|| Some(PathBuf::from(fallback)).filter(|p| p.is_file()))
}

/// A `chromedriver` child process (in its own process group, away from the terminal's signals).
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    /// Sessions not yet closed: closed on drop, since Chromium outlives a killed chromedriver.
    open: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Driver {
    async fn start() -> Driver {
        let exe = find_program("GESYNC_CHROMEDRIVER", "chromedriver", "/usr/bin/chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed, so the browser tests cannot run. Install Debian's Chromium and its driver: \
                 `apt-get update && apt-get install -y chromium chromium-driver` (.ci/run does this), \
                 or point GESYNC_CHROMEDRIVER at a chromedriver binary"
            )
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(&exe);
        cmd.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let driver = Driver { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), open: Default::default() };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = driver.http.get(format!("{}/status", driver.base)).send().await {
                if r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == json!(true)) {
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "chromedriver at {} did not become ready", exe.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    /// A new headless Chromium with a fresh profile and a 1366×768 window.
    async fn browser(&self, profile: &Path) -> Browser {
        let chromium = find_program("GESYNC_CHROMIUM", "chromium", "/usr/bin/chromium").expect("chromium is not installed: `apt-get install -y chromium chromium-driver`");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1366,768", "--lang=vi",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r: Value = self.http.post(format!("{}/session", self.base)).json(&caps).send().await.expect("chromedriver answers").json().await.expect("JSON");
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("cannot start Chromium: {r}"));
        self.open.lock().unwrap().push(id.to_string());
        Browser { http: self.http.clone(), session: format!("{}/session/{id}", self.base), id: id.to_string(), open: self.open.clone() }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A test that failed half-way left its browser open: close it (a plain blocking HTTP
        // request, as drop cannot await) before stopping chromedriver.
        let addr = self.base.trim_start_matches("http://").to_string();
        for id in self.open.lock().map(|v| v.clone()).unwrap_or_default() {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(s, "DELETE /session/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser {
    http: reqwest::Client,
    session: String,
    id: String,
    open: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Browser {
    async fn try_cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut rb = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.expect("chromedriver answers").json().await.expect("WebDriver answers in JSON");
        match v["value"]["error"].as_str() {
            Some(err) => Err(format!("WebDriver {path}: {err}: {}", v["value"]["message"].as_str().unwrap_or_default().lines().next().unwrap_or_default())),
            None => Ok(v["value"].clone()),
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The element's text, or `None` while it is missing or the page is being replaced.
    async fn try_text(&self, css: &str) -> Option<String> {
        let v = self.try_cmd(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await.ok()?;
        let e = v.as_array()?.first()?[ELEMENT_KEY].as_str()?.to_string();
        self.try_cmd(reqwest::Method::GET, &format!("/element/{e}/text"), None).await.ok()?.as_str().map(str::to_string)
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.cmd(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().map(|a| a.iter().filter_map(|e| e[ELEMENT_KEY].as_str().map(str::to_string)).collect()).unwrap_or_default()
    }

    async fn find(&self, css: &str) -> String {
        let all = self.find_all(css).await;
        assert!(!all.is_empty(), "no element matches `{css}` on {}:\n{}", self.url().await, self.text("body").await);
        all[0].clone()
    }

    async fn text(&self, css: &str) -> String {
        let all = self.find_all(css).await;
        let Some(e) = all.first() else { return String::new() };
        self.cmd(reqwest::Method::GET, &format!("/element/{e}/text"), None).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits (up to 10 s) until the element's text contains `needle`: a click that submits a
    /// form returns before the page it leads to has loaded.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(t) = self.try_text(css).await.filter(|t| t.contains(needle)) {
                return t;
            }
            if std::time::Instant::now() > deadline {
                panic!("`{css}` never showed {needle:?} on {}; the page says:\n{}", self.url().await, self.text("body").await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 10 s) until the current document has loaded.
    async fn wait_loaded(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let state = self.try_cmd(reqwest::Method::POST, "/execute/sync", Some(json!({"script": "return document.readyState", "args": []}))).await;
            if state.is_ok_and(|v| v == "complete") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 10 s) until the address contains `part`.
    async fn wait_url(&self, part: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let u = self.try_cmd(reqwest::Method::GET, "/url", None).await.ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            if u.contains(part) {
                self.wait_loaded().await;
                return u;
            }
            assert!(std::time::Instant::now() < deadline, "never reached {part}; at {u}:\n{}", self.text("body").await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/clear"), Some(json!({}))).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }

    async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]")).await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    async fn source(&self) -> String {
        self.cmd(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    async fn cookie(&self, name: &str) -> Value {
        self.cmd(reqwest::Method::GET, "/cookie", None).await.as_array().and_then(|a| a.iter().find(|c| c["name"] == name).cloned()).unwrap_or(Value::Null)
    }

    /// Saves the viewport as `DIR/name.png` when `GESYNC_SCREENSHOTS=DIR`.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("GESYNC_SCREENSHOTS") else { return };
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).expect("a PNG in base64");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
        self.open.lock().unwrap().retain(|s| *s != self.id);
    }

    async fn login(&self, base: &str, user: &str) {
        self.goto(&format!("{base}/login")).await;
        self.fill("#username", user).await;
        self.fill("#password", PASSWORD).await;
        self.click("form[action=\"/login\"] button[type=submit]").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.url().await.contains("/login") && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_loaded().await;
    }

    async fn logout(&self) {
        self.click("form[action=\"/logout\"] button").await;
        self.wait_text("h1", "Đăng nhập").await;
    }
}

// ---- data ------------------------------------------------------------------------------------

fn this_year() -> i32 {
    chrono::Datelike::year(&chrono::Utc::now().date_naive())
}

/// Realistic records (the demo's generator) moved to this year and the one before, pushed
/// from the commune officers' phones.
async fn fill_with_records(url: &str, dir: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2025);
    let y = this_year();
    for (user, commune) in [("officer1", "04701"), ("officer2", "04702")] {
        let mut phone = Client::open(dir.join(user), FixedKey(StoreKey::random())).unwrap();
        phone.login(url, user, PASSWORD, None).await.unwrap();
        for (kind, record) in gesync_server::demo::records_for(commune, &mut rng) {
            let text = record.to_string().replace("\"2025-", &format!("\"{y}-")).replace("\"2024-", &format!("\"{}-", y - 1));
            phone.create(kind, &serde_json::from_str(&text).unwrap()).unwrap();
        }
        phone.sync(|_| {}).await.unwrap();
        assert_eq!(phone.pending_count(), 0, "{user}'s records were all accepted");
    }
}

/// Records the district must review: one record two officers edited concurrently (a conflict
/// on the victim's birth year), and two records that look like the same person (a possible duplicate).
/// Returns (the conflicting record, the duplicate pair's id). The phones are kept in `phones`.
async fn make_review_work(url: &str, dir: &Path, phones: &mut Vec<Client>) -> (String, String) {
    let y = this_year();
    let mut a = Client::open(dir.join("review-a"), FixedKey(StoreKey::random())).unwrap();
    let mut b = Client::open(dir.join("review-b"), FixedKey(StoreKey::random())).unwrap();
    a.login(url, "officer1", PASSWORD, None).await.unwrap();
    b.login(url, "officer1b", PASSWORD, None).await.unwrap();
    let case = |date: &str, birth: i64| json!({"commune": "04701", "detected_on": date, "victim": {"sex": "female", "birth_year": birth}, "status": "open", "notes": "GHI CHU MAT"});
    let shared = a.create(client_sdk::RecordKind::GbvCase, &case(&format!("{y}-03-02"), 1961)).unwrap();
    let d1 = a.create(client_sdk::RecordKind::GbvCase, &case(&format!("{y}-02-10"), 1977)).unwrap();
    let d2 = b.create(client_sdk::RecordKind::GbvCase, &case(&format!("{y}-02-13"), 1977)).unwrap();
    a.sync(|_| {}).await.unwrap();
    b.sync(|_| {}).await.unwrap();
    a.set(shared, "victim.birth_year", &json!(1962)).unwrap();
    b.set(shared, "victim.birth_year", &json!(1963)).unwrap();
    a.sync(|_| {}).await.unwrap();
    b.sync(|_| {}).await.unwrap();
    let (x, z) = if d1.to_string() < d2.to_string() { (d1, d2) } else { (d2, d1) };
    phones.push(a);
    phones.push(b);
    (shared.to_string(), format!("{x}~{z}"))
}

async fn api_token(url: &str, user: &str) -> String {
    tests::Api::login(url, user).await.token
}

async fn api_get(url: &str, token: &str, path: &str) -> Value {
    reqwest::Client::new().get(format!("{url}{path}")).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

// ---- the browser test ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_use_the_pages_in_a_real_browser() {
    gesync_server::server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let url = server.url();
    fill_with_records(&url, dir.path()).await;
    let mut phones = Vec::new();
    let (conflicted, pair) = make_review_work(&url, dir.path(), &mut phones).await;
    let driver = Driver::start().await;
    let b = driver.browser(&dir.path().join("profile")).await;

    // Anyone who is not signed in is sent to the login page, in Vietnamese.
    b.goto(&format!("{url}/district")).await;
    assert!(b.url().await.contains("/login?next=%2Fdistrict"), "{}", b.url().await);
    assert_eq!(b.text("h1").await, "Đăng nhập");
    assert!(b.text("body").await.contains("Tên đăng nhập"));
    b.screenshot("login").await;

    // A wrong password: the login page again, with the reason.
    b.fill("#username", "district").await;
    b.fill("#password", "not-the-password").await;
    b.click("form[action=\"/login\"] button[type=submit]").await;
    b.wait_text("[role=alert]", "Sai tên đăng nhập hoặc mật khẩu").await;

    // District staff land on the district overview of the current year.
    b.login(&url, "district").await;
    assert!(b.url().await.ends_with("/district"), "district staff land on /district, not {}", b.url().await);
    assert!(b.text("h1").await.contains("Tổng quan huyện"));
    let session = b.cookie("gesync_session").await;
    assert_eq!(session["httpOnly"], json!(true), "{session}");
    assert_eq!(session["sameSite"], json!("Strict"), "{session}");
    assert_eq!(session["secure"], json!(false), "plain HTTP on loopback: not Secure ({session})");

    // Every figure on the page is the API's figure for the same unit and period.
    let token = api_token(&url, "district").await;
    let year = this_year();
    let api = api_get(&url, &token, &format!("/api/v1/indicators?org_unit=047&period={year}")).await;
    let indicators = api["indicators"].as_array().expect("indicators");
    assert_eq!(indicators.len(), 4);
    for ind in indicators {
        let id = ind["id"].as_str().unwrap();
        let shown = b.text(&format!(".card[data-indicator={id}] .ratio")).await;
        assert_eq!(shown, format!("{}/{}", ind["numerator"], ind["denominator"]), "{id} on the overview");
        let row = b.text(&format!("#communes tr.total td[data-indicator={id}]")).await;
        assert!(row.contains(&format!("({}/{})", ind["numerator"], ind["denominator"])), "{id} district row: {row}");
        let verdict = match ind["met"].as_bool() {
            Some(true) => "Đạt",
            Some(false) => "Chưa đạt",
            None => "Chưa có số liệu",
        };
        assert!(b.text(&format!(".card[data-indicator={id}] .badge")).await == verdict, "{id} verdict");
    }
    assert!(indicators[0]["denominator"].as_i64().unwrap() > 0, "the test data has victims this year");
    // One commune's row matches the API for that commune.
    let commune = api_get(&url, &token, &format!("/api/v1/indicators?org_unit=04701&period={year}")).await;
    let first = &commune["indicators"][0];
    let cell = b.text("#communes tr[data-unit=\"04701\"] td[data-indicator=gbv_victims_supported]").await;
    assert!(cell.contains(&format!("({}/{})", first["numerator"], first["denominator"])), "04701: {cell}");
    assert_eq!(b.find_all("svg.chart").await.len(), 4, "one chart per indicator");
    assert_eq!(b.find_all("#news tbody tr").await.len(), 2, "one news row per commune");
    assert!(b.source().await.len() < 100_000, "the overview is under 100 KB");
    b.screenshot("district-overview").await;

    // Another period through the selector.
    b.select("#period", &format!("{year}Q1")).await;
    b.click(".bar form button[type=submit]").await;
    b.wait_url(&format!("period={year}Q1")).await;
    let q1 = api_get(&url, &token, &format!("/api/v1/indicators?org_unit=047&period={year}Q1")).await;
    let q1_news = &q1["indicators"][3];
    assert_eq!(b.text(".card[data-indicator=communes_news_compliant] .ratio").await, format!("{}/{}", q1_news["numerator"], q1_news["denominator"]));

    // English on request, and remembered.
    b.goto(&format!("{url}/district?lang=en")).await;
    assert!(b.text("h1").await.starts_with("District overview"));
    b.goto(&format!("{url}/district")).await;
    assert!(b.text("h1").await.starts_with("District overview"));
    b.goto(&format!("{url}/district?lang=vi")).await;
    assert!(b.text("h1").await.starts_with("Tổng quan huyện"));

    // The conflict queue: the competing values side by side, with who, which device, when.
    let year_period = year.to_string();
    b.goto(&format!("{url}/review/approval?period={year_period}")).await;
    let conflicts = api_get(&url, &token, "/api/v1/conflicts?org_unit=047").await;
    assert_eq!(conflicts.as_array().map(Vec::len), Some(1), "one conflict: {conflicts}");
    assert!(b.text("#approval-blocked").await.contains("xung đột"), "approval waits for the conflict: {}", b.text("main").await);
    assert!(b.find_all("#approve").await.is_empty());
    b.goto(&format!("{url}/review/conflicts")).await;
    assert_eq!(b.text("h1").await, "Xung đột dữ liệu");
    assert_eq!(b.find_all("section[data-conflict]").await.len(), 1);
    let card = b.text("section[data-conflict] form[data-value=\"0\"]").await;
    assert!(card.contains("officer1") && card.contains("Thiết bị") && card.contains("Lúc"), "provenance shown: {card}");
    assert!(!b.source().await.contains("GHI CHU MAT"), "no notes on the conflict page");
    b.screenshot("conflicts").await;
    let kept: i64 = b.text("section[data-conflict] form[data-value=\"0\"] .chosen").await.parse().expect("a birth year");
    b.click("section[data-conflict] form[data-value=\"0\"] button").await;
    b.wait_text(".ok", "Đã giải quyết xung đột").await;
    assert!(b.find_all("section[data-conflict]").await.is_empty());
    let record = api_get(&url, &token, &format!("/api/v1/records/{conflicted}")).await;
    assert_eq!(record["victim"]["birth_year"].as_i64(), Some(kept), "the kept value is the record's");
    assert!(api_get(&url, &token, "/api/v1/conflicts?org_unit=047").await.as_array().unwrap().is_empty());

    // Approval once nothing blocks it; the overview shows it.
    b.goto(&format!("{url}/review/approval?period={year_period}")).await;
    b.click("#approve").await;
    b.wait_text(".ok", "Đã phê duyệt số liệu").await;
    assert!(b.text("#approval-state").await.contains("district"));
    let approvals = api_get(&url, &token, &format!("/api/v1/approvals?org_unit=047&period={year_period}")).await;
    assert_eq!(approvals.as_array().unwrap().len(), 1, "{approvals}");
    assert_eq!(approvals[0]["approved_by"], "district");
    b.goto(&format!("{url}/district")).await;
    assert!(b.text(".status-line .approval").await.starts_with("Đã phê duyệt"));

    // Possible duplicates side by side, notes left out; merge keeps one.
    b.goto(&format!("{url}/review/duplicates")).await;
    let section = format!("section[data-pair=\"{pair}\"]");
    assert!(b.text(&section).await.contains("1977"), "the pair is listed");
    assert!(!b.source().await.contains("GHI CHU MAT"), "no notes on the duplicates page");
    b.screenshot("duplicates").await;
    b.click(&format!("{section} form[action$=\"/merge\"] button")).await;
    b.wait_text(".ok", "Đã gộp").await;
    assert!(b.find_all(&section).await.is_empty());
    let (keep, other) = pair.split_once('~').unwrap();
    assert_eq!(api_get(&url, &token, &format!("/api/v1/records/{other}")).await["deleted"], json!(true));
    assert_eq!(api_get(&url, &token, &format!("/api/v1/records/{keep}")).await["deleted"], json!(false));

    // The printable report and the admin pages: the first is theirs, the second is not.
    b.goto(&format!("{url}/report/047/{year}")).await;
    assert_eq!(b.find_all("table.report").await.len(), 4);
    b.goto(&format!("{url}/admin/users")).await;
    assert_eq!(b.text("h1").await, "Không có quyền truy cập");
    b.click("main a[href=\"/\"]").await;
    b.wait_url("/district").await;
    b.logout().await;

    // A commune officer lands on the phone page and is refused the district pages.
    b.login(&url, "officer1").await;
    assert!(b.url().await.ends_with("/phone"), "{}", b.url().await);
    assert!(b.text("h1").await.contains("điện thoại"));
    b.goto(&format!("{url}/district")).await;
    assert_eq!(b.text("h1").await, "Trang dành cho cán bộ rà soát và cán bộ tỉnh");
    b.goto(&format!("{url}/district?unit=04701")).await;
    assert_eq!(b.text("h1").await, "Trang dành cho cán bộ rà soát và cán bộ tỉnh");
    b.goto(&format!("{url}/")).await;
    b.wait_url("/phone").await;
    b.logout().await;

    // Province staff land on the province view: districts' figures, no records.
    b.login(&url, "province").await;
    assert!(b.url().await.ends_with("/province"), "{}", b.url().await);
    // (The merge above removed a victim: the figures are read again, as province staff.)
    let province = api_token(&url, "province").await;
    let now = api_get(&url, &province, &format!("/api/v1/indicators?org_unit=047&period={year}")).await;
    for ind in now["indicators"].as_array().unwrap() {
        let id = ind["id"].as_str().unwrap();
        let row = b.text(&format!("#units tr[data-unit=\"047\"] td[data-indicator={id}]")).await;
        assert!(row.contains(&format!("({}/{})", ind["numerator"], ind["denominator"])), "047's {id} on the province view: {row}");
    }
    assert!(b.text("#units tr[data-unit=\"047\"] td.approval").await.starts_with("Đã phê duyệt"), "approval state on the province view");
    assert!(!b.source().await.contains("GHI CHU MAT"));
    b.screenshot("province").await;
    b.click("#units tr[data-unit=\"047\"] a").await;
    b.wait_text("h1", "Huyện Trùng Khánh").await;
    b.logout().await;

    // Admins land on the users page and manage accounts there.
    b.login(&url, "admin").await;
    assert!(b.url().await.ends_with("/admin/users"), "{}", b.url().await);
    b.fill("#nu-username", "can.bo.moi").await;
    b.fill("#nu-password", "mat-khau-rat-dai-2026").await;
    b.select("#nu-role", "district_staff").await;
    b.select("#nu-unit", "047").await;
    b.click("form[action=\"/admin/users\"] button[type=submit]").await;
    b.wait_url("/admin/users/can.bo.moi?done=created").await;
    b.click("form[action$=\"/disabled\"] button").await;
    b.wait_text(".ok", "Đã khoá tài khoản").await;
    let admin = api_token(&url, "admin").await;
    let users = api_get(&url, &admin, "/api/v1/users").await;
    let created = users.as_array().unwrap().iter().find(|u| u["username"] == "can.bo.moi").expect("the new user");
    assert_eq!((created["role"].as_str(), created["org_unit"].as_str(), created["disabled"].as_bool()), (Some("district_staff"), Some("047"), Some(true)));
    // A target set on the district shows on its overview.
    b.goto(&format!("{url}/admin/targets?unit=047")).await;
    b.fill("#t2025-gbv_victims_supported", "95").await;
    b.fill("#t2030-gbv_victims_supported", "97,5").await;
    b.click("tr[data-indicator=gbv_victims_supported] button").await;
    b.wait_text(".ok", "Đã lưu chỉ tiêu").await;
    let after = api_get(&url, &admin, &format!("/api/v1/indicators?org_unit=04701&period={year}")).await;
    let want = if year <= 2025 { 0.95 } else { 0.975 };
    assert_eq!(after["indicators"][0]["target"].as_f64(), Some(want));
    b.goto(&format!("{url}/admin/users")).await;
    b.screenshot("admin-users").await;
    b.logout().await;

    b.quit().await;
    drop(driver);
    drop(phones);
    server.stop().await;
}

// ---- the two-level map and a merge, in the browser --------------------------------------------

/// A store holding the 2025 map of one province: communes directly under it, no district (the
/// commune codes and names are made up for the test). The province's admin, its reviewer
/// (`district_staff` on the province) and an officer of the commune that will be merged.
fn two_level_province(dir: &Path) -> PathBuf {
    use gesync_server::model::{OrgUnit, Role, User};
    let db = gesync_server::open_db(dir).unwrap();
    db.org_units().put_org_unit(OrgUnit::new("04", "Tỉnh Cao Bằng", None, "province"), None).unwrap();
    for (code, name) in [("04711", "Xã Trùng Khánh"), ("04712", "Xã Đàm Thủy"), ("04713", "Xã Đình Phong")] {
        db.org_units().put_org_unit(OrgUnit::new(code, name, Some("04".into()), "commune"), None).unwrap();
    }
    let hash = gesync_server::auth::hash_password(PASSWORD);
    for (username, role, org_unit) in [("tinh.admin", Role::Admin, "04"), ("tinh.review", Role::DistrictStaff, "04"), ("xa.damthuy", Role::CommuneOfficer, "04712")] {
        db.accounts().put_user(&User { username: username.into(), role, org_unit: org_unit.into(), password_hash: hash.clone(), disabled: false, session_epoch: 0 }, true, None).unwrap();
    }
    dir.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_on_the_two_level_map_through_the_admin_page() {
    gesync_server::server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&two_level_province(&dir.path().join("server"))).await;
    let url = server.url();
    let year = this_year();
    // A victim recorded in the commune that is about to be merged: after the merge it counts
    // for the successor.
    let mut phone = Client::open(dir.path().join("phone"), FixedKey(StoreKey::random())).unwrap();
    phone.login(&url, "xa.damthuy", PASSWORD, None).await.unwrap();
    phone.create(client_sdk::RecordKind::GbvCase, &json!({"commune": "04712", "detected_on": format!("{year}-02-03"), "victim": {"sex": "female"}})).unwrap();
    phone.sync(|_| {}).await.unwrap();
    assert_eq!(phone.pending_count(), 0);

    let driver = Driver::start().await;
    let b = driver.browser(&dir.path().join("profile")).await;

    // The admin merges 04712 into 04711 with the org-unit page's form (the date filled in is
    // the reorganisation's).
    b.login(&url, "tinh.admin").await;
    b.goto(&format!("{url}/admin/org-units")).await;
    assert_eq!(b.find_all("#org-units tbody tr").await.len(), 4, "the province and its three communes");
    assert!(b.find_all("#merged-units").await.is_empty(), "no history yet");
    // A merge the data layer refuses (a commune into a province) is the pages' usual error.
    b.select("#mg-code", "04713").await;
    b.select("#mg-into", "04").await;
    b.click("form[action=\"/admin/org-units/merge\"] button[type=submit]").await;
    b.wait_text("h1", "Dữ liệu nhập chưa hợp lệ").await;
    assert!(b.text(".detail").await.contains("cannot be merged"), "{}", b.text("main").await);
    b.goto(&format!("{url}/admin/org-units")).await;
    b.click("#org-units tr[data-unit=\"04712\"] a[href*=\"merge=04712\"]").await;
    b.wait_url("merge=04712").await;
    b.select("#mg-into", "04711").await;
    b.click("form[action=\"/admin/org-units/merge\"] button[type=submit]").await;
    b.wait_text(".ok", "Đã ghi nhận việc sáp nhập").await;
    // The merged commune is history, not a current unit; its officer is still on it.
    assert!(b.find_all("#org-units tr[data-unit=\"04712\"]").await.is_empty());
    assert!(b.find_all("#mg-code option[value=\"04712\"]").await.is_empty(), "a merged unit is not offered again");
    let history = b.text("#merged-units tr[data-unit=\"04712\"]").await;
    assert!(history.contains("Đã sáp nhập vào 04711 · Xã Trùng Khánh từ 01/07/2025") && history.contains("xa.damthuy"), "{history}");
    b.screenshot("admin-org-units").await;
    b.goto(&format!("{url}/admin/org-units?lang=en")).await;
    let history = b.text("#merged-units tr[data-unit=\"04712\"] td.merged").await;
    assert_eq!(history, "Merged into 04711 · Xã Trùng Khánh from 2025-07-01");
    b.goto(&format!("{url}/admin/org-units?lang=vi")).await;
    // The same merge as the API's, audited the same way.
    let admin = api_token(&url, "tinh.admin").await;
    let units = api_get(&url, &admin, "/api/v1/org-units").await;
    let merged = units.as_array().unwrap().iter().find(|u| u["code"] == "04712").cloned().unwrap();
    assert_eq!((merged["merged_into"].as_str(), merged["effective"].as_str()), (Some("04711"), Some("2025-07-01")));
    let audit = api_get(&url, &admin, "/api/v1/audit").await;
    let merges: Vec<&Value> = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "org_unit_merge").collect();
    assert_eq!(merges.len(), 1, "one merge audited (the refused one is not): {merges:?}");
    assert_eq!((merges[0]["user"].as_str(), merges[0]["target"].as_str()), (Some("tinh.admin"), Some("04712 into 04711 from 2025-07-01")));
    b.logout().await;

    // The province's reviewer: a province overview of the current communes, no district.
    b.login(&url, "tinh.review").await;
    assert!(b.url().await.ends_with("/district"), "{}", b.url().await);
    assert_eq!(b.text("h1").await, "Tổng quan tỉnh: Tỉnh Cao Bằng");
    assert!(b.text(".who").await.contains("Cán bộ rà soát cấp tỉnh"), "{}", b.text(".who").await);
    assert_eq!(b.text("nav a[aria-current=page]").await, "Tổng quan tỉnh");
    let rows: Vec<String> = {
        let mut out = Vec::new();
        for e in b.find_all("#communes tbody tr").await {
            out.push(b.cmd(reqwest::Method::GET, &format!("/element/{e}/attribute/data-unit"), None).await.as_str().unwrap_or_default().to_string());
        }
        out
    };
    assert_eq!(rows, ["04711", "04713", "04"], "current communes, then the province");
    b.screenshot("two-level-overview").await;
    assert_eq!(b.find_all("#news tbody tr").await.len(), 2);
    assert_eq!(b.text("#communes th").await, "Xã, phường, đặc khu");
    let successor = b.text("#communes tr[data-unit=\"04711\"] td[data-indicator=gbv_victims_supported]").await;
    assert!(successor.contains("(0/1)"), "the merged commune's victim counts for its successor: {successor}");
    let body = b.text("body").await;
    assert!(!body.to_lowercase().contains("huyện") && !body.contains("Đàm Thủy"), "{body}");
    // Its figures pages link no district either.
    b.goto(&format!("{url}/province?unit=04")).await;
    assert_eq!(b.text("h1").await, "Tổng quan tỉnh: Tỉnh Cao Bằng");
    assert_eq!(b.find_all("#units tbody tr[data-unit]").await.len(), 3, "two communes and the province");
    assert!(b.find_all("#units a").await.is_empty(), "communes are not links");
    assert!(b.text("#units tr.total").await.starts_with("Toàn tỉnh"));

    // The same in English.
    b.goto(&format!("{url}/district?lang=en")).await;
    assert_eq!(b.text("h1").await, "Province overview: Tỉnh Cao Bằng");
    assert!(b.text(".who").await.contains("Province reviewer"), "{}", b.text(".who").await);
    let body = b.text("body").await;
    assert!(!body.to_lowercase().contains("district"), "{body}");
    assert_eq!(b.find_all("#communes tbody tr").await.len(), 3);
    b.goto(&format!("{url}/district?lang=vi")).await;
    b.logout().await;

    b.quit().await;
    drop(driver);
    drop(phone);
    server.stop().await;
}

// ---- CSRF and cookies, without a browser -----------------------------------------------------

/// A client that does not follow redirects and keeps cookies by hand.
struct Visitor {
    base: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: u16,
    location: String,
    set_cookies: Vec<String>,
    body: String,
}

impl Visitor {
    fn new(base: &str) -> Visitor {
        Visitor { base: base.to_string(), http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(), cookies: Vec::new() }
    }

    async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut rb = self.http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            rb = rb.header("cookie", self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "));
        }
        if let Some(f) = form {
            rb = rb.header("content-type", "application/x-www-form-urlencoded").body(serde_urlencoded_pairs(f));
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let set_cookies: Vec<String> = r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
        for c in &set_cookies {
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        Page { status, location, set_cookies, body: r.text().await.unwrap() }
    }

    async fn login(&mut self, user: &str) -> Page {
        let form = self.send("GET", "/login", None).await;
        let token = hidden_csrf(&form.body);
        self.send("POST", "/login", Some(&[("csrf", &token), ("username", user), ("password", PASSWORD)])).await
    }
}

fn serde_urlencoded_pairs(f: &[(&str, &str)]) -> String {
    let enc = |s: &str| s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>();
    f.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The CSRF token of the first form of a page.
fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_right_csrf_token_are_refused() {
    gesync_server::server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let mut v = Visitor::new(&server.url());

    // Not signed in: pages redirect to login, posts are refused.
    let p = v.send("GET", "/district?period=2025", None).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/login?next=%2Fdistrict%3Fperiod%3D2025"));
    let p = v.send("POST", "/admin/org-units", Some(&[("code", "88"), ("name", "X")])).await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("Phiên làm việc đã kết thúc"));

    // The login form itself needs its token.
    let p = v.send("POST", "/login", Some(&[("username", "admin"), ("password", PASSWORD)])).await;
    assert_eq!(p.status, 403, "login without the login-form token");
    assert!(p.body.contains("Biểu mẫu không hợp lệ"), "{}", p.body);
    let p = v.login("admin").await;
    assert_eq!((p.status, p.location.as_str()), (303, "/admin/users"));
    let session = p.set_cookies.iter().find(|c| c.starts_with("gesync_session=")).expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "session cookie lacks {attr}: {session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP on loopback: {session}");

    // A form post without the token, with a wrong one, and from another site: refused, nothing changes.
    let page = v.send("GET", "/admin/org-units", None).await;
    assert_eq!(page.status, 200);
    let token = hidden_csrf(&page.body);
    let p = v.send("POST", "/admin/org-units", Some(&[("code", "049"), ("name", "Huyện thử"), ("parent", "04")])).await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("Biểu mẫu không hợp lệ") && p.body.contains("CSRF"), "{}", p.body);
    let p = v.send("POST", "/admin/org-units", Some(&[("csrf", "wrong-token-wrong-token-wrong-token-wrong-t"), ("code", "049"), ("name", "Huyện thử"), ("parent", "04")])).await;
    assert_eq!(p.status, 403);
    let p = v.send("POST", "/admin/org-units?lang=en", Some(&[("csrf", "x"), ("code", "049"), ("name", "Huyện thử"), ("parent", "04")])).await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("The form was refused"), "the refusal in English: {}", p.body);
    let admin = api_token(&server.url(), "admin").await;
    let units = api_get(&server.url(), &admin, "/api/v1/org-units").await;
    assert!(!units.as_array().unwrap().iter().any(|u| u["code"] == "049"), "no unit was added");

    // With the session's token it goes through.
    let p = v.send("POST", "/admin/org-units", Some(&[("csrf", &token), ("code", "049"), ("name", "Huyện thử"), ("parent", "04")])).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/admin/org-units?done=unit"));
    let units = api_get(&server.url(), &admin, "/api/v1/org-units").await;
    assert!(units.as_array().unwrap().iter().any(|u| u["code"] == "049" && u["level"] == "district"));

    // Logout needs the token too, and ends the session on the server.
    let p = v.send("POST", "/logout", Some(&[("csrf", "nope")])).await;
    assert_eq!(p.status, 403);
    let p = v.send("POST", "/logout", Some(&[("csrf", &token)])).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/login"));
    let old = v.cookies.clone();
    assert!(!old.iter().any(|(k, _)| k == "gesync_session"));

    // Commune officers: 403 on every district page, even by typing the address.
    let mut officer = Visitor::new(&server.url());
    let p = officer.login("officer1").await;
    assert_eq!((p.status, p.location.as_str()), (303, "/phone"));
    for path in ["/district", "/district?unit=04701", "/province", "/report/04701/2025", "/export/04701/2025.csv", "/admin/users"] {
        let p = officer.send("GET", path, None).await;
        assert_eq!(p.status, 403, "{path} as a commune officer");
    }
    // District staff: their district, not the neighbour's; the CSV is the API's, audited.
    let mut district = Visitor::new(&server.url());
    district.login("district").await;
    assert_eq!(district.send("GET", "/district?unit=048", None).await.status, 403);
    assert_eq!(district.send("GET", "/district?unit=047&period=2025", None).await.status, 200);
    let csv = district.send("GET", "/export/047/2025.csv", None).await;
    assert_eq!(csv.status, 200);
    let token = api_token(&server.url(), "district").await;
    let api_csv = reqwest::Client::new().get(format!("{}/api/v1/reports/047/2025.csv", server.url())).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    assert_eq!(csv.body, api_csv, "the page's CSV is the API's");
    let audit = api_get(&server.url(), &admin, "/api/v1/audit").await;
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "report_export" && e["user"] == "district" && e["target"] == "047/2025"));

    server.stop().await;
}
