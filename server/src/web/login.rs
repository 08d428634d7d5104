//! Sign in, sign out, and each role's start page.
//!
//! Login goes through [`crate::api::authenticate`], so the pages share the API's accounts,
//! password checks, throttling and audit. The browser is a device like a phone: it keeps a
//! `web-…` device id in a cookie, and an admin who revokes that device ends its session.
//! The login form itself is protected against CSRF by a double-submit token (cookie + field).

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::page::{self, bare, blocking, cookie, set_cookie, Anon, Lang, Posted, Web, WebError, WebResult};
use crate::sessions as session;
use crate::api::{authenticate, ClientIp, Shared};
use crate::db::AuditEvent;
use crate::model::Role;

const LOGIN_COOKIE: &str = "gesync_login";
const DEVICE_COOKIE: &str = "gesync_device";

/// Each role's start page.
fn start_page(role: Role) -> &'static str {
    match role {
        Role::DistrictStaff => "/district",
        Role::ProvinceStaff => "/province",
        Role::Admin => "/admin/users",
        Role::CommuneOfficer => "/phone",
    }
}

/// `/`: the start page of whoever is signed in, else the login page.
pub async fn home(web: Web) -> Response {
    Redirect::to(start_page(web.p().role)).into_response()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The login page. A new login-form token is issued with every form.
pub async fn form(State(state): State<Shared>, anon: Anon, Query(q): Query<LoginQuery>, headers: axum::http::HeaderMap) -> Response {
    // Already signed in: straight to the start page.
    if let Some(token) = cookie(&headers, session::COOKIE) {
        let db = state.db.clone();
        if let Ok(Ok(Some(s))) = tokio::task::spawn_blocking(move || db.sessions().load(&token)).await {
            return Redirect::to(start_page(s.principal.role)).into_response();
        }
    }
    login_page(&anon, q.next.as_deref(), None, StatusCode::OK)
}

fn login_page(anon: &Anon, next: Option<&str>, problem: Option<String>, status: StatusCode) -> Response {
    let lang = anon.lang;
    let token = session::random_token();
    let body = html! {
        h1 { (lang.t("Đăng nhập", "Sign in")) }
        p.muted { (lang.t(
            "Dành cho cán bộ rà soát số liệu của các xã, cán bộ tỉnh và quản trị hệ thống.",
            "For the staff who review the communes' data, province staff and administrators.")) }
        @if let Some(p) = &problem {
            p.notice role="alert" { (p) }
        }
        form.card.stack method="post" action="/login" {
            input type="hidden" name="csrf" value=(token);
            @if let Some(n) = next.and_then(page::safe_next) {
                input type="hidden" name="next" value=(n);
            }
            div {
                label for="username" { (lang.t("Tên đăng nhập", "Username")) }
                input #username type="text" name="username" autocomplete="username" required autofocus;
            }
            div {
                label for="password" { (lang.t("Mật khẩu", "Password")) }
                input #password type="password" name="password" autocomplete="current-password" required;
            }
            div { button type="submit" { (lang.t("Đăng nhập", "Sign in")) } }
        }
        p { (page::bare_lang_link(lang, &anon.here)) }
    };
    let mut res = (status, bare(lang, lang.t("Đăng nhập", "Sign in"), body)).into_response();
    res.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, "/login", 3600, anon.https));
    res
}

#[derive(Deserialize)]
pub struct LoginForm {
    // Every field defaults, so an incomplete post gets the login page's own answers
    // (a missing token is a CSRF refusal, a missing password a failed login).
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

fn valid_web_device(d: &str) -> bool {
    d.strip_prefix(crate::web::WEB_DEVICE_PREFIX).is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_web_device() -> String {
    format!("{}{}", crate::web::WEB_DEVICE_PREFIX, uuid::Uuid::new_v4().simple())
}

/// `POST /login`.
pub async fn submit(State(state): State<Shared>, anon: Anon, ClientIp(ip): ClientIp, headers: axum::http::HeaderMap, axum::Form(f): axum::Form<LoginForm>) -> WebResult {
    page::refuse_cross_site(&headers)?;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !session::same_secret(&f.csrf, &expected) {
        return Err(WebError::csrf());
    }
    let lang = anon.lang;
    // One device per browser; a browser an admin revoked signs in as a new device (revoking
    // ends sessions; disabling the account is what locks a person out).
    // The cookie holds the browser's device id and, after a sign-in, that device's proof
    // (`Keys::device_proof`): the throttle spares a browser that signed in here before.
    let kept = cookie(&headers, DEVICE_COOKIE).unwrap_or_default();
    let (kept_device, kept_proof) = kept.split_once('.').map(|(d, p)| (d.to_string(), Some(p.to_string()))).unwrap_or((kept.clone(), None));
    let mut device_id = Some(kept_device).filter(|d| valid_web_device(d)).unwrap_or_else(new_web_device);
    {
        let (db, u, d) = (state.db.clone(), f.username.clone(), device_id.clone());
        if blocking(move || Ok(db.accounts().get_device(&u, &d)?)).await?.is_some_and(|d| d.revoked) {
            device_id = new_web_device();
        }
    }
    let (principal, epoch) = match authenticate(&state, ip, &f.username, &f.password, &device_id, kept_proof.as_deref()).await {
        Ok(ok) => ok,
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            let secs = e.retry_after.unwrap_or(60);
            let msg = match lang {
                Lang::Vi => format!("Đã nhập sai quá nhiều lần. Hãy chờ khoảng {secs} giây rồi thử lại."),
                Lang::En => format!("Too many failed attempts. Wait about {secs} seconds and try again."),
            };
            let mut res = login_page(&anon, f.next.as_deref(), Some(msg), StatusCode::TOO_MANY_REQUESTS);
            res.headers_mut().insert(header::RETRY_AFTER, secs.into());
            return Ok(res);
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let msg = lang.t("Sai tên đăng nhập hoặc mật khẩu, hoặc tài khoản đã bị khoá.", "Wrong username or password, or the account is disabled.");
            return Ok(login_page(&anon, f.next.as_deref(), Some(msg.to_string()), StatusCode::UNAUTHORIZED));
        }
        Err(e) => return Err(e.into()),
    };
    let db = state.db.clone();
    let p2 = principal.clone();
    let token = blocking(move || Ok(db.sessions().create(&p2, epoch)?)).await?;
    let target = f.next.as_deref().and_then(page::safe_next).filter(|_| principal.uses_staff_pages()).unwrap_or(start_page(principal.role));
    let mut res = Redirect::to(target).into_response();
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(session::COOKIE, &token, "/", session::TTL_SECS, anon.https));
    let device_cookie = format!("{device_id}.{}", state.keys.device_proof(&principal.username, &device_id));
    h.append(header::SET_COOKIE, set_cookie(DEVICE_COOKIE, &device_cookie, "/login", 5 * 365 * 24 * 3600, anon.https));
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", "/login", 0, anon.https));
    Ok(res)
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /logout`: ends the session on the server and in the browser.
pub async fn logout(State(state): State<Shared>, posted: Posted<Empty>) -> WebResult {
    let web = posted.web;
    let db = state.db.clone();
    let s = web.session.clone();
    blocking(move || {
        db.sessions().end(&s)?;
        let p = &s.principal;
        db.audit_log().audit(AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action: "logout", target: "web".into() })?;
        Ok(())
    })
    .await?;
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().append(header::SET_COOKIE, set_cookie(session::COOKIE, "", "/", 0, web.https));
    Ok(res)
}

/// A commune officer's start page: their work happens on the phone.
pub async fn phone(State(state): State<Shared>, web: Web) -> Response {
    // Help comes from the level right above the commune on today's map (a district, or the
    // province on the two-level map), also for an officer still on a merged commune's code.
    let tree = state.db.tree();
    let above = tree.current(&web.p().org_unit).and_then(|u| u.parent.as_deref()).and_then(|p| tree.current(p));
    let help = match (web.lang, above) {
        (Lang::Vi, Some(u)) => format!("Nếu cần hỗ trợ, hãy liên hệ cán bộ rà soát của {}.", u.name),
        (Lang::En, Some(u)) => format!("For help, contact the reviewers of {}.", u.name),
        (lang, None) => lang.t("Nếu cần hỗ trợ, hãy liên hệ cán bộ rà soát cấp trên của xã.", "For help, contact the reviewers above your commune.").to_string(),
    };
    let body = html! {
        h1 { (web.t("Công việc của bạn được thực hiện trên điện thoại", "Your work happens on your phone")) }
        div.card.stack {
            p { (web.t(
                "Cán bộ xã ghi nhận hồ sơ (người bị bạo lực, nạn nhân bị mua bán trở về, tin bài về bình đẳng giới) trên ứng dụng điện thoại, kể cả khi không có sóng, rồi đồng bộ khi có mạng.",
                "Commune officers record cases (victims of violence, trafficking returnees, gender-equality news items) in the phone app, even without coverage, and sync when they have a connection.")) }
            p { (web.t(
                "Các trang tổng hợp số liệu, xung đột dữ liệu và phê duyệt dành cho cán bộ rà soát và cán bộ tỉnh.",
                "The figures, conflict and approval pages are for reviewers and province staff.")) }
            p.muted { (help) }
        }
    };
    page::page(&web, web.t("Cán bộ xã", "Commune officer"), page::Section::None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_device_ids_are_checked() {
        assert!(valid_web_device(&new_web_device()));
        assert!(!valid_web_device("web-"));
        assert!(!valid_web_device("phone-1234"));
        assert!(!valid_web_device("web-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"));
    }
}
