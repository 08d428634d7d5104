//! What every page shares: the language, the signed-in caller ([`Web`]), checked form posts
//! ([`Posted`]), the layout, the stylesheet and the error pages ([`WebError`]).

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde::de::DeserializeOwned;

use crate::sessions::{self as session, Session};
use crate::api::Shared;
use crate::error::AppError;
use crate::model::{Principal, Role};

/// Whether the connection a request came on is HTTPS. `launch` adds it to every request; when
/// it is missing (a router used without `launch`), cookies are marked `Secure` to fail safe.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    pub https: bool,
}

fn https(parts: &Parts) -> bool {
    parts.extensions.get::<Transport>().is_none_or(|t| t.https)
}

pub use super::fmt::Lang;

const LANG_COOKIE: &str = "gesync_lang";

/// Which language a request asks for: Vietnamese unless `?lang=en` (or the cookie it leaves)
/// says English.
impl Lang {
    fn parse(s: &str) -> Option<Lang> {
        match s {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    fn asked_in(uri: &Uri) -> Option<Lang> {
        query_pairs(uri).into_iter().find(|(k, _)| k == "lang").and_then(|(_, v)| Lang::parse(&v))
    }

    fn of(uri: &Uri, headers: &HeaderMap) -> Lang {
        Lang::asked_in(uri).or_else(|| cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v))).unwrap_or(Lang::Vi)
    }
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default()
}

/// The value of a request cookie.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: always `HttpOnly` and `SameSite=Strict`, `Secure` over HTTPS.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, https: bool) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")).expect("cookie values are ASCII tokens")
}

/// The path and query of the request without `lang`, to link to the same page in the other
/// language.
fn here(uri: &Uri) -> String {
    let pairs: Vec<(String, String)> = query_pairs(uri).into_iter().filter(|(k, _)| k != "lang").collect();
    if pairs.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), serde_urlencoded::to_string(pairs).unwrap_or_default())
    }
}

/// A request without a session (the login page).
pub struct Anon {
    pub lang: Lang,
    pub https: bool,
    pub here: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Anon {
    type Rejection = WebError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Anon { lang: Lang::of(&parts.uri, &parts.headers), https: https(parts), here: here(&parts.uri) })
    }
}

/// A request from a signed-in user. A `GET` without a live session is sent to the login page;
/// anything else is refused.
pub struct Web {
    pub lang: Lang,
    pub session: Session,
    pub https: bool,
    pub here: String,
    /// The level of the caller's own org unit, as the tree says now (a reviewer may work on a
    /// district or, on the two-level map, on a province): the pages name roles and
    /// overviews by it.
    pub own_level: Option<String>,
}

impl Web {
    pub fn p(&self) -> &Principal {
        &self.session.principal
    }

    pub fn t<'a>(&self, vi: &'a str, en: &'a str) -> &'a str {
        self.lang.t(vi, en)
    }

    /// Web pages are for staff: a commune officer's work happens on the phone.
    pub fn require_staff(&self) -> Result<(), WebError> {
        if !self.p().uses_staff_pages() {
            return Err(WebError::commune_officer());
        }
        Ok(())
    }

    pub fn require_admin(&self) -> Result<(), WebError> {
        if !self.p().is_admin() {
            return Err(WebError::forbidden());
        }
        Ok(())
    }
}

impl FromRequestParts<Shared> for Web {
    type Rejection = WebError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let lang = Lang::of(&parts.uri, &parts.headers);
        let token = cookie(&parts.headers, session::COOKIE);
        let session = match token {
            Some(token) => {
                let db = state.db.clone();
                tokio::task::spawn_blocking(move || db.sessions().load(&token)).await.map_err(AppError::from)?.map_err(AppError::from)?
            }
            None => None,
        };
        match session {
            Some(session) => {
                let own_level = state.db.tree().get(&session.principal.org_unit).map(|u| u.level.clone());
                Ok(Web { lang, session, https: https(parts), here: here(&parts.uri), own_level })
            }
            None if parts.method == Method::GET => Err(WebError::login(&here(&parts.uri))),
            None => Err(WebError::session_ended()),
        }
    }
}

/// The largest form the pages accept.
const FORM_LIMIT: usize = 64 * 1024;

/// A form post from a signed-in user, with its CSRF token checked against the session's, and
/// its fields parsed into `T` (which does not name the `csrf` field).
pub struct Posted<T> {
    pub web: Web,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Shared> for Posted<T> {
    type Rejection = WebError;
    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        refuse_cross_site(&parts.headers)?;
        let web = Web::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| WebError::bad_input("the form is too large or was cut off"))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| WebError::csrf())?;
        let sent = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or_default();
        if !session::same_secret(sent, &web.session.csrf) {
            return Err(WebError::csrf());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| WebError::bad_input(e.to_string()))?;
        Ok(Posted { web, form })
    }
}

/// Browsers say where a request comes from (`Sec-Fetch-Site`); a form posted from another site
/// is refused before its token is even looked at.
pub fn refuse_cross_site(headers: &HeaderMap) -> Result<(), WebError> {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site" | "same-site") => Err(WebError::csrf()),
        _ => Ok(()),
    }
}

/// The hidden CSRF field of every form.
pub fn csrf_field(web: &Web) -> Markup {
    html! { input type="hidden" name="csrf" value=(web.session.csrf); }
}

/// Where a local `next` path may lead: only to a path on this server.
pub fn safe_next(next: &str) -> Option<&str> {
    // Only printable ASCII: a browser drops tabs and newlines from a Location, so `/\t/evil`
    // would become the protocol-relative `//evil`. Then a path of this site, not `//host` and not
    // `/\host` (which some browsers read as `//host`).
    let ok = next.len() < 512
        && next.bytes().all(|b| b.is_ascii_graphic())
        && next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\');
    ok.then_some(next)
}

#[cfg(test)]
mod next_tests {
    use super::safe_next;

    #[test]
    fn only_paths_of_this_site_are_followed_after_login() {
        for ok in ["/", "/district?period=2025Q3&lang=en", "/report/047/2025"] {
            assert_eq!(safe_next(ok), Some(ok));
        }
        for bad in ["//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/evil.example", "/ /x", "https://evil.example", "evil", "/đ"] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}

// ---- errors ----------------------------------------------------------------------------------

/// A (Vietnamese, English) text pair.
pub type Tr = (&'static str, &'static str);

/// An error shown as a page (or, when the caller is not signed in, a redirect to login).
/// Rendered in Vietnamese here, and again in the request's language by [`finish`]. Boxed: it
/// travels in every handler's `Result`, and is made only when something went wrong.
#[derive(Clone, Debug)]
pub struct WebError(Box<Shown>);

/// What a [`WebError`] shows.
#[derive(Clone, Debug)]
struct Shown {
    status: StatusCode,
    title: Tr,
    message: Tr,
    /// The data layer's or a shared helper's own words (English), when it has any.
    detail: Option<String>,
    login_link: bool,
    location: Option<String>,
    retry_after: Option<u64>,
}

impl WebError {
    pub fn new(status: StatusCode, title: Tr, message: Tr) -> Self {
        WebError(Box::new(Shown { status, title, message, detail: None, login_link: false, location: None, retry_after: None }))
    }

    fn login(next: &str) -> Self {
        let mut e = WebError::new(StatusCode::SEE_OTHER, ("", ""), ("", ""));
        e.0.location = Some(format!("/login?{}", serde_urlencoded::to_string([("next", next)]).unwrap_or_default()));
        e
    }

    pub fn forbidden() -> Self {
        WebError::new(
            StatusCode::FORBIDDEN,
            ("Không có quyền truy cập", "Access denied"),
            ("Tài khoản của bạn không được phép xem trang này hoặc số liệu của đơn vị này.", "Your account may not see this page or this org unit's figures."),
        )
    }

    pub fn commune_officer() -> Self {
        WebError::new(
            StatusCode::FORBIDDEN,
            ("Trang dành cho cán bộ rà soát và cán bộ tỉnh", "These pages are for reviewers and province staff"),
            (
                "Cán bộ xã ghi nhận và đồng bộ hồ sơ trên điện thoại. Các trang tổng hợp số liệu không mở cho tài khoản cấp xã.",
                "Commune officers record and sync cases on their phone. The figures pages are not open to commune accounts.",
            ),
        )
    }

    pub fn not_found() -> Self {
        WebError::new(StatusCode::NOT_FOUND, ("Không tìm thấy", "Not found"), ("Trang hoặc đơn vị hành chính này không tồn tại.", "This page or org unit does not exist."))
    }

    fn session_ended() -> Self {
        WebError::new(
            StatusCode::FORBIDDEN,
            ("Phiên làm việc đã kết thúc", "Your session has ended"),
            ("Bạn cần đăng nhập lại trước khi gửi biểu mẫu. Thao tác vừa rồi chưa được thực hiện.", "Sign in again before sending a form. Nothing was changed."),
        )
        .with_login_link()
    }

    pub fn csrf() -> Self {
        WebError::new(
            StatusCode::FORBIDDEN,
            ("Biểu mẫu không hợp lệ", "The form was refused"),
            (
                "Biểu mẫu thiếu mã xác thực (CSRF) hoặc mã đã hết hạn, nên thao tác không được thực hiện. Hãy mở lại trang, rồi gửi lại biểu mẫu.",
                "The form's security (CSRF) token is missing or out of date, so nothing was changed. Open the page again and resend the form.",
            ),
        )
        .with_login_link()
    }

    pub fn bad_input(detail: impl Into<String>) -> Self {
        WebError::new(
            StatusCode::BAD_REQUEST,
            ("Dữ liệu nhập chưa hợp lệ", "The input was not accepted"),
            ("Thao tác không được thực hiện. Hãy quay lại, sửa lại rồi gửi lại.", "Nothing was changed. Go back, correct the form and send it again."),
        )
        .with_detail(detail.into())
    }

    pub fn with_message(mut self, message: Tr) -> Self {
        self.0.message = message;
        self
    }

    fn with_detail(mut self, detail: String) -> Self {
        self.0.detail = Some(detail);
        self
    }

    fn with_login_link(mut self) -> Self {
        self.0.login_link = true;
        self
    }

    fn render(&self, lang: Lang) -> Response {
        let e = &*self.0;
        if let Some(loc) = &e.location {
            return Redirect::to(loc).into_response();
        }
        let body = html! {
            h1 { (lang.t(e.title.0, e.title.1)) }
            p.lead { (lang.t(e.message.0, e.message.1)) }
            @if let Some(d) = &e.detail {
                p.detail { (lang.t("Chi tiết: ", "Details: ")) (d) }
            }
            p.actions {
                @if e.login_link {
                    a.button href="/login" { (lang.t("Đăng nhập", "Sign in")) }
                    " "
                }
                a href="/" { (lang.t("Về trang chính", "Back to the start page")) }
            }
        };
        let mut res = (e.status, bare(lang, lang.t(e.title.0, e.title.1), body)).into_response();
        if let Some(secs) = e.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<AppError> for WebError {
    fn from(e: AppError) -> Self {
        let (title, message): (Tr, Tr) = match e.status {
            StatusCode::NOT_FOUND => return WebError::not_found().with_detail(e.message),
            StatusCode::FORBIDDEN => return WebError::forbidden().with_detail(e.message),
            StatusCode::CONFLICT => (
                ("Không thực hiện được", "Could not be done"),
                ("Dữ liệu đã thay đổi hoặc đã tồn tại. Hãy tải lại trang và kiểm tra.", "The data changed or already exists. Reload the page and check."),
            ),
            s if s.is_server_error() => (
                ("Lỗi máy chủ", "Server error"),
                ("Máy chủ gặp lỗi; chi tiết đã được ghi vào nhật ký máy chủ. Hãy thử lại sau.", "The server failed; the details are in its log. Try again later."),
            ),
            _ => return WebError::bad_input(e.message),
        };
        let mut shown = WebError::new(e.status, title, message);
        shown.0.detail = (!e.status.is_server_error()).then_some(e.message);
        shown.0.retry_after = e.retry_after;
        shown
    }
}

impl From<crate::db::DbError> for WebError {
    fn from(e: crate::db::DbError) -> Self {
        AppError::from(e).into()
    }
}

impl From<tokio::task::JoinError> for WebError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::from(e).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut res = self.render(Lang::Vi);
        res.extensions_mut().insert(self);
        res
    }
}

pub type WebResult<T = Response> = Result<T, WebError>;

/// Runs blocking data-layer work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> WebResult<T> + Send + 'static) -> WebResult<T> {
    tokio::task::spawn_blocking(f).await?
}

/// The last step of every page: error pages in the request's language, and the language
/// cookie when `?lang=` chose one.
pub async fn finish(req: Request, next: Next) -> Response {
    let asked = Lang::asked_in(req.uri());
    let lang = Lang::of(req.uri(), req.headers());
    let secure = req.extensions().get::<Transport>().is_none_or(|t| t.https);
    let mut res = next.run(req).await;
    if let Some(e) = res.extensions_mut().remove::<WebError>() {
        if lang != Lang::Vi {
            res = e.render(lang);
        }
    }
    if let Some(l) = asked {
        res.headers_mut().append(header::SET_COOKIE, set_cookie(LANG_COOKIE, l.code(), "/", 365 * 24 * 3600, secure));
    }
    res
}

// ---- layout ----------------------------------------------------------------------------------

/// Which part of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    District,
    Province,
    Conflicts,
    Duplicates,
    Approval,
    Users,
    OrgUnits,
    Targets,
    Report,
    None,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · gesync" }
            link rel="stylesheet" href="/static/gesync.css";
        }
    }
}

fn lang_link(lang: Lang, here: &str) -> Markup {
    let sep = if here.contains('?') { '&' } else { '?' };
    html! {
        @match lang {
            Lang::Vi => a.lang href={ (here) (sep) "lang=en" } lang="en" { "English" },
            Lang::En => a.lang href={ (here) (sep) "lang=vi" } lang="vi" { "Tiếng Việt" },
        }
    }
}

/// A page for a signed-in user: header with the navigation of their role, then `body`.
pub fn page(web: &Web, title: &str, section: Section, body: Markup) -> Response {
    let lang = web.lang;
    let p = web.p();
    let items: Vec<(Section, String, String)> = match p.role {
        Role::DistrictStaff => vec![
            (Section::District, "/district".into(), super::fmt::overview(lang, web.own_level.as_deref().unwrap_or_default())),
            (Section::Conflicts, "/review/conflicts".into(), web.t("Xung đột dữ liệu", "Data conflicts").into()),
            (Section::Duplicates, "/review/duplicates".into(), web.t("Hồ sơ có thể trùng", "Possible duplicates").into()),
            (Section::Approval, "/review/approval".into(), web.t("Phê duyệt số liệu", "Approval").into()),
            (Section::Report, format!("/report/{}/{}", p.org_unit, super::fmt::this_year()), web.t("Báo cáo", "Report").into()),
        ],
        Role::ProvinceStaff => vec![(Section::Province, "/province".into(), web.t("Tổng quan tỉnh", "Province overview").into())],
        Role::Admin => vec![
            (Section::Users, "/admin/users".into(), web.t("Người dùng", "Users").into()),
            (Section::OrgUnits, "/admin/org-units".into(), web.t("Đơn vị hành chính", "Org units").into()),
            (Section::Targets, "/admin/targets".into(), web.t("Chỉ tiêu", "Targets").into()),
            (Section::Province, "/province".into(), web.t("Số liệu", "Figures").into()),
        ],
        Role::CommuneOfficer => vec![],
    };
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(title))
            body {
                header.top {
                    div.brand {
                        a href="/" title=(web.t("Theo dõi thực hiện Chiến lược quốc gia về bình đẳng giới", "Monitoring the national gender-equality strategy")) { "gesync" }
                    }
                    nav aria-label=(web.t("Điều hướng chính", "Main navigation")) {
                        @for (s, href, label) in &items {
                            a href=(href) aria-current=[(*s == section).then_some("page")] { (label) }
                        }
                    }
                    div.who {
                        span { (p.username) " · " (super::fmt::role_at(lang, p.role, web.own_level.as_deref())) " · " (p.org_unit) }
                        (lang_link(lang, &web.here))
                        form method="post" action="/logout" {
                            (csrf_field(web))
                            button.link type="submit" { (web.t("Đăng xuất", "Sign out")) }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without navigation (login, errors).
pub fn bare(lang: Lang, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(title))
            body.bare {
                header.top {
                    div.brand {
                        a href="/" { "gesync" }
                        span.tagline { (lang.t("Theo dõi thực hiện Chiến lược quốc gia về bình đẳng giới", "Monitoring the national gender-equality strategy")) }
                    }
                }
                main.narrow { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A link to the same page in the other language, for pages without a session.
pub fn bare_lang_link(lang: Lang, here: &str) -> Markup {
    lang_link(lang, here)
}

/// `/static/gesync.css`: one small stylesheet, cached by the browser for a day.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
        ],
        Body::from(CSS),
    )
        .into_response()
}

/// Sizes are in `rem`/`em`, so the pages follow the browser's text size; the layout fits a
/// 1366×768 screen and prints cleanly.
const CSS: &str = r#"
*{box-sizing:border-box}
html{font-size:100%}
body{margin:0;font-family:system-ui,"Segoe UI",Roboto,"Noto Sans","Liberation Sans",Arial,sans-serif;color:#1b1f23;background:#f4f6f8;line-height:1.45}
a{color:#0b5cad}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.5rem;padding:.5rem 1.25rem;background:#12355b;color:#fff}
header.top a{color:#fff}
.brand a{font-weight:700;font-size:1.25rem;text-decoration:none;margin-right:.6rem}
.tagline{font-size:.85rem;opacity:.85}
nav{display:flex;flex-wrap:wrap;gap:.25rem}
nav a{padding:.35rem .7rem;border-radius:.3rem;text-decoration:none}
nav a[aria-current=page]{background:#fff;color:#12355b;font-weight:600}
.who{margin-left:auto;display:flex;align-items:center;gap:.8rem;font-size:.9rem}
.who form{margin:0}
button.link{background:none;border:1px solid #fff;color:#fff;border-radius:.3rem;padding:.25rem .6rem;font:inherit;cursor:pointer}
main{max-width:84rem;margin:0 auto;padding:1rem 1.25rem 3rem}
main.narrow{max-width:34rem}
h1{font-size:1.6rem;margin:.5rem 0 .75rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
h3{font-size:1rem;margin:0 0 .3rem}
.lead{font-size:1.05rem}
.detail{color:#555;font-size:.9rem}
.muted{color:#5b6570;font-size:.9rem}
.bar{display:flex;flex-wrap:wrap;align-items:flex-end;gap:.6rem 1.2rem;margin:.5rem 0 1rem}
.bar form{display:flex;align-items:flex-end;gap:.5rem;margin:0}
label{display:block;font-size:.9rem;font-weight:600;margin:.4rem 0 .15rem}
input,select{font:inherit;padding:.35rem .5rem;border:1px solid #8a96a3;border-radius:.25rem;background:#fff;max-width:100%}
button,.button{font:inherit;display:inline-block;padding:.4rem .9rem;border-radius:.3rem;border:1px solid #0b5cad;background:#0b5cad;color:#fff;cursor:pointer;text-decoration:none}
button.secondary{background:#fff;color:#0b5cad}
button.danger{background:#b42318;border-color:#b42318}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(19rem,1fr));gap:.9rem}
.card{background:#fff;border:1px solid #d5dbe1;border-radius:.4rem;padding:.8rem 1rem}
.card h2{margin-top:0}
.choice .chosen{font-size:1.4rem;font-weight:700;margin:0 0 .3rem}
.card .full-name{margin:0 0 .3rem;font-size:.85rem}
.card p{margin:.3rem 0}
.card .value{font-size:1.9rem;font-weight:700;margin-right:.4rem}
.card .counts{color:#444}
.chart{width:100%;max-width:20rem;height:auto;display:block;margin-top:.4rem}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.85rem;font-weight:600;border:1px solid}
.badge.met{background:#e3f4e8;color:#146c2e;border-color:#7cc190}
.badge.unmet{background:#fdecea;color:#a1241a;border-color:#e9a39c}
.badge.none{background:#eef0f2;color:#4a5562;border-color:#c3c9cf}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.95rem}
th,td{border:1px solid #d5dbe1;padding:.35rem .55rem;text-align:left;vertical-align:top}
th{background:#e9eef3}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:700;background:#f3f6f9}
td.low{background:#fdecea;color:#a1241a;font-weight:700}
.flag{font-size:.75rem;font-weight:600;margin-left:.3rem}
.two{display:grid;grid-template-columns:1fr 1fr;gap:1.2rem}
.two>*{align-self:start}
.notice{background:#fff8e1;border:1px solid #e6c65c;border-radius:.4rem;padding:.6rem .9rem}
.ok{background:#e3f4e8;border:1px solid #7cc190;border-radius:.4rem;padding:.6rem .9rem}
.inline{display:inline;margin:0}
form.stack input{width:100%}
.stack>*+*{margin-top:.6rem}
.side{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:1rem}
.form-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:.2rem 1rem;align-items:end}
.lang{font-size:.9rem}
@media (max-width:60rem){.two{grid-template-columns:1fr}}
@media print{header.top,.bar,.noprint{display:none}body{background:#fff}main{max-width:none;padding:0}table{font-size:.8rem}}
"#;
