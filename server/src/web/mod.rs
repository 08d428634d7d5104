//! The web pages of `contract.md` ("web pages for district staff at `/`"): server-rendered HTML
//! for district staff, province staff and admins, in Vietnamese by default and in English with
//! `?lang=en` (remembered in a cookie).
//!
//! - sessions: the data layer's [`crate::sessions::Sessions`] (`db.sessions()`: server-side
//!   sessions under `w/`, hashed id, expiry, user, device, and the per-session CSRF token every
//!   form carries); the cookie is `page.rs`'s and `login.rs`'s.
//! - [`page`]: the extractors ([`page::Web`], [`page::Posted`]), the layout, the error pages.
//! - `login`, `district`, `province`, `admin`, `export`, `review`: one module per group of
//!   pages (`review` on the data layer's `crate::review`: conflicts, duplicates, approval).
//!
//! **Invariants:** every value that reaches a page goes through maud's escaping (no
//! `PreEscaped` of data); every state-changing route is a `POST` taking [`page::Posted`], which
//! checks the session and its CSRF token before the handler runs; the access policy is
//! [`crate::model::Principal`]'s, as for the JSON API. Pages load nothing from other origins.

mod admin;
mod district;
mod export;
mod fmt;
mod login;
mod page;
mod province;
mod review;

use axum::routing::{get, post};
use axum::Router;

use crate::api::Shared;

pub use page::Transport;

/// The device ids the web pages give browsers (`web-` and 32 hex digits).
pub const WEB_DEVICE_PREFIX: &str = crate::model::SERVER_MADE_DEVICE_PREFIXES[0];

/// The pages' routes. Merged into the application next to the JSON API (no fallback here: the
/// API's JSON 404 answers unknown paths).
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(login::home))
        .route("/login", get(login::form).post(login::submit).layer(axum::extract::DefaultBodyLimit::max(crate::api::AUTH_BODY_LIMIT)))
        .route("/logout", post(login::logout))
        .route("/static/gesync.css", get(page::stylesheet))
        .route("/phone", get(login::phone))
        .route("/district", get(district::overview))
        .route("/province", get(province::view))
        .route("/report/{unit}/{period}", get(export::printable))
        .route("/export/{unit}/{file}", get(export::download))
        .route("/review/conflicts", get(review::conflicts))
        .route("/review/conflicts/{id}/resolve", post(review::resolve))
        .route("/review/duplicates", get(review::duplicates))
        .route("/review/duplicates/{id}/not-duplicate", post(review::not_duplicate))
        .route("/review/duplicates/{id}/merge", post(review::merge))
        .route("/review/approval", get(review::approval).post(review::approve))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{username}", get(admin::user).post(admin::update_user))
        .route("/admin/users/{username}/password", post(admin::reset_password))
        .route("/admin/users/{username}/disabled", post(admin::set_disabled))
        .route("/admin/users/{username}/devices/{device_id}/revoke", post(admin::revoke_device))
        .route("/admin/org-units", get(admin::org_units).post(admin::put_org_unit))
        .route("/admin/org-units/merge", post(admin::merge_org_unit))
        .route("/admin/targets", get(admin::targets).post(admin::set_target))
        .layer(axum::middleware::from_fn(page::finish))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    use super::Transport;
    use crate::api::AppState;
    use crate::store::MemKv;
    use crate::Db;

    async fn get(app: axum::Router, path: &str) -> axum::response::Response {
        app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap()
    }

    fn app() -> axum::Router {
        crate::server::app(AppState::new(Db::open(Box::new(MemKv::default())).unwrap()).unwrap())
    }

    #[tokio::test]
    async fn cookies_are_secure_unless_the_connection_is_known_to_be_plain() {
        for (transport, secure) in [(None, true), (Some(true), true), (Some(false), false)] {
            let mut app = app();
            if let Some(https) = transport {
                app = app.layer(axum::Extension(Transport { https }));
            }
            let res = get(app, "/login?lang=en").await;
            assert_eq!(res.status(), StatusCode::OK);
            let cookies: Vec<&str> = res.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(cookies.len(), 2, "{cookies:?}");
            for c in cookies {
                assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"), "{c}");
                assert_eq!(c.contains("; Secure"), secure, "{transport:?}: {c}");
            }
        }
    }

    #[tokio::test]
    async fn pages_are_html_self_contained_and_escaped() {
        let res = get(app(), "/login?next=%2Fdistrict%22%3E%3Cscript%3E").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert!(res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains("Đăng nhập") && html.contains("Mật khẩu"));
        assert!(!html.contains("<script"), "the `next` value is escaped");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing loaded from elsewhere");
        // Unknown paths keep the API's JSON 404; pages without a session go to login.
        let res = get(app(), "/district").await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[header::LOCATION], "/login?next=%2Fdistrict");
        let res = get(app(), "/static/gesync.css").await;
        assert_eq!(res.headers()[header::CACHE_CONTROL], "public, max-age=86400");
    }
}
