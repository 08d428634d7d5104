//! Security of the HTTP API, through the real server (sled on disk, HTTP on loopback):
//! - one authorization table covering every route × every role, in and out of scope, and with no
//!   token — checked against the routes the server's source actually declares;
//! - forged, tampered and foreign access tokens; refresh rotation and family revocation;
//! - device revocation (the phone wipes itself), disabled users, login throttling;
//! - the audit trail (hash chain intact, no secrets in it);
//! - hostile input: malformed, mistyped, oversized bodies and paths, bad sync messages;
//! - the web pages' own authorization table (browser sessions and CSRF tokens, not bearer
//!   tokens), covering every page route × every role.
//!
//! Each test starts its own server, so tests never see each other's state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use client_sdk::{Client, FixedKey, RecordKind, StoreKey, SyncStatus};
use serde_json::{json, Value};
use sync_protocol::wire::{PushDoc, PushOutcome, PushPart, SyncRequest, SyncResponse, CONTENT_TYPE, MAX_MESSAGE_BYTES, MAX_UPLOAD_BYTES};
use sync_protocol::RecordId;
use tests::{TestServer, PASSWORD};

// ---- helpers ---------------------------------------------------------------------------------

/// A plain HTTP client for one server.
struct Api {
    base: String,
    http: reqwest::Client,
}

/// A request body.
enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// Raw bytes with an optional content type.
    Raw(Option<&'a str>, Vec<u8>),
}

/// What came back, read in full.
struct Reply {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    bytes: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| panic!("HTTP {}: body is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The error code, when the body is the API's error format `{"error":{"code","message"}}`
    /// with a non-empty code and message, served as JSON.
    fn error_format(&self) -> Result<(String, String), String> {
        if !self.content_type.starts_with("application/json") {
            return Err(format!("error body served as `{}`, not JSON: {:?}", self.content_type, self.text()));
        }
        let v: Value = serde_json::from_slice(&self.bytes).map_err(|e| format!("error body is not JSON ({e}): {:?}", self.text()))?;
        let code = v["error"]["code"].as_str().unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        if code.is_empty() || message.is_empty() {
            return Err(format!("error body lacks error.code / error.message: {v}"));
        }
        Ok((code.to_string(), message.to_string()))
    }

    /// Asserts the status and the error format; returns (code, message).
    fn expect_error(&self, status: u16, what: &str) -> (String, String) {
        assert_eq!(self.status, status, "{what}: expected HTTP {status}, got {}: {}", self.status, self.text());
        self.error_format().unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// An Automerge "compressed change" chunk whose body inflates to `mib` MiB of zeros (Automerge
/// would refuse it once inflated: the point is that the server never inflates it that far).
fn compressed_zeros_chunk(mib: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        enc.write_all(&zeros).unwrap();
    }
    let body = enc.finish().unwrap();
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = body.len() as u64;
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        chunk.push(if len > 0 { b | 0x80 } else { b });
        if len == 0 {
            break;
        }
    }
    chunk.extend(body);
    chunk
}

/// An access token and a refresh token.
struct Tokens {
    access: String,
    refresh: String,
}

impl Api {
    fn new(server: &TestServer) -> Api {
        // The server installs the rustls provider when it launches, in a task that may not have
        // run yet; reqwest needs one even for plain HTTP.
        gesync_server::server::install_crypto_provider();
        Api { base: server.url(), http: reqwest::Client::new() }
    }

    /// A client whose connections come from `ip` (any 127.x.y.z is loopback on Linux): another
    /// place, as far as the server's per-address rules go.
    fn from_address(server: &TestServer, ip: [u8; 4]) -> Api {
        gesync_server::server::install_crypto_provider();
        let http = reqwest::Client::builder().local_address(std::net::IpAddr::from(ip)).build().unwrap();
        Api { base: server.url(), http }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body<'_>) -> Reply {
        self.call_or_cut(method, path, token, body).await.unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
    }

    /// [`Api::call`], or the error when the server closed the connection before the answer
    /// could be read: it answers 413 as soon as a body passes its limit and closes, and the
    /// client may then see its upload broken before it reads the answer.
    async fn call_or_cut(&self, method: &str, path: &str, token: Option<&str>, body: Body<'_>) -> Result<Reply, reqwest::Error> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut rb = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        rb = match body {
            Body::Empty => rb,
            Body::Json(v) => rb.json(v),
            Body::Raw(ct, bytes) => {
                if let Some(ct) = ct {
                    rb = rb.header("content-type", ct);
                }
                rb.body(bytes)
            }
        };
        let r = rb.send().await?;
        let status = r.status().as_u16();
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = header("retry-after");
        let content_type = header("content-type").unwrap_or_default();
        let bytes = r.bytes().await?.to_vec();
        Ok(Reply { status, retry_after, content_type, bytes })
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), Body::Empty).await
    }

    /// `GET /api/v1/me` with a raw `Authorization` header value.
    async fn me_with_header(&self, authorization: &str) -> Reply {
        let r = self.http.get(format!("{}/api/v1/me", self.base)).header("authorization", authorization).send().await.expect("an answer");
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Reply { status, retry_after: None, content_type, bytes: r.bytes().await.expect("a body").to_vec() }
    }

    async fn try_login(&self, user: &str, password: &str, device: Option<&str>) -> Reply {
        let mut body = json!({"username": user, "password": password});
        if let Some(d) = device {
            body["device_id"] = json!(d);
        }
        self.call("POST", "/api/v1/auth/login", None, Body::Json(&body)).await
    }

    /// [`Api::call`], or, when the server cut the upload (it answers 413 from the head and
    /// closes), the status it gives the same head with a body declared `declared` bytes long
    /// and not sent: what a client sees of a 413 however its upload is cut.
    async fn reply_or_head_status(&self, method: &str, path: &str, token: Option<&str>, body: Body<'_>, declared: usize) -> Result<Reply, u16> {
        match self.call_or_cut(method, path, token, body).await {
            Ok(r) => Ok(r),
            Err(_) => Err(self.status_of_declared_length(method, path, token, declared).await),
        }
    }

    /// The status a request with a body declared `length` bytes long gets before any of the
    /// body is sent: what a client sees of a 413 however its upload is cut.
    async fn status_of_declared_length(&self, method: &str, path: &str, token: Option<&str>, length: usize) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_string();
        let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {length}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await.expect("an answer before the body").unwrap();
        let line = String::from_utf8_lossy(&buf[..n]);
        line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{method} {path}: no status line in {line:?}"))
    }

    /// A password login from `device` showing the device proof it was given before.
    async fn try_login_proven(&self, user: &str, password: &str, device: &str, proof: &str) -> Reply {
        let body = json!({"username": user, "password": password, "device_id": device, "device_proof": proof});
        self.call("POST", "/api/v1/auth/login", None, Body::Json(&body)).await
    }

    /// Logs `device` in as `user`; returns the device proof the server gave it.
    async fn device_proof(&self, user: &str, device: &str) -> String {
        let r = self.try_login(user, PASSWORD, Some(device)).await;
        assert_eq!(r.status, 200, "login {user}: {}", r.text());
        let proof = r.json()["device_proof"].as_str().expect("a login gives the device its proof").to_string();
        assert_eq!(proof.len(), 32);
        proof
    }

    /// A counter of the server's `/metrics`, read with an admin's access token.
    async fn metric(&self, admin: &Tokens, name: &str) -> u64 {
        let r = self.http.get(format!("{}/metrics", self.base)).bearer_auth(&admin.access).send().await.expect("metrics");
        let text = r.text().await.unwrap();
        tests::metric_in(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    async fn login(&self, user: &str, device: Option<&str>) -> Tokens {
        let r = self.try_login(user, PASSWORD, device).await;
        assert_eq!(r.status, 200, "login {user}: {}", r.text());
        let v = r.json();
        assert_eq!(v["token_type"], "Bearer");
        Tokens { access: v["access_token"].as_str().unwrap().to_string(), refresh: v["refresh_token"].as_str().unwrap().to_string() }
    }

    async fn refresh(&self, refresh_token: &str) -> Reply {
        self.call("POST", "/api/v1/auth/refresh", None, Body::Json(&json!({"refresh_token": refresh_token}))).await
    }

    async fn sync(&self, token: &str, body: Vec<u8>) -> Reply {
        self.call("POST", "/api/v1/sync", Some(token), Body::Raw(Some(CONTENT_TYPE), body)).await
    }

    /// The ids of the records district staff of 047 see in `org_unit`.
    async fn record_ids(&self, district_token: &str, org_unit: &str) -> BTreeSet<String> {
        let r = self.get(&format!("/api/v1/records?org_unit={org_unit}"), district_token).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json().as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect()
    }
}

/// The harness's store with a second province, 24, a district and a commune in it, and an
/// officer there (`officer24`).
fn with_second_province(dir: &Path) -> PathBuf {
    use gesync_server::model::{OrgUnit, Role, User};
    let db = gesync_server::open_db(dir).unwrap();
    tests::seed(&db, 0);
    for (code, parent, level) in [("24", None, "province"), ("216", Some("24"), "district"), ("21601", Some("216"), "commune")] {
        db.org_units().put_org_unit(OrgUnit::new(code, format!("Đơn vị {code}"), parent.map(Into::into), level), None).unwrap();
    }
    let hash = db.accounts().get_user("officer1").unwrap().unwrap().password_hash;
    db.accounts().put_user(&User { username: "officer24".into(), role: Role::CommuneOfficer, org_unit: "21601".into(), password_hash: hash, disabled: false, session_epoch: 0 }, true, None).unwrap();
    dir.to_path_buf()
}

fn phone(dir: &Path) -> Client {
    Client::open(dir, FixedKey(StoreKey::random())).unwrap()
}

fn news(commune: &str) -> Value {
    json!({"commune": commune, "published_on": "2025-01-02"})
}

/// Creates one news item on a phone logged in as `user` and syncs it; returns its id.
async fn record_from_phone(url: &str, dir: &Path, user: &str, commune: &str) -> String {
    let mut c = phone(dir);
    c.login(url, user, PASSWORD, None).await.unwrap();
    let id = c.create(RecordKind::NewsItem, &news(commune)).unwrap();
    c.sync(|_| {}).await.unwrap();
    assert_eq!(c.status(id).unwrap(), SyncStatus::Synced, "{user}'s record in {commune}");
    id.to_string()
}

/// An encoded sync request pushing one valid new news item of `commune`.
fn push_request(commune: &str) -> (RecordId, Vec<u8>) {
    let mut d = sync_protocol::doc::new_record(RecordKind::NewsItem, &news(commune), automerge::ActorId::random()).unwrap();
    let id = RecordId::random();
    let push = PushDoc { id, changes: d.save(), heads: sync_protocol::heads_to_wire(&d.get_heads()) };
    (id, SyncRequest { push: vec![push], ..Default::default() }.encode())
}

// base64url without padding, for taking JWTs apart (the tests crate has no base64 dependency).
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c).expect("base64url") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// (header, claims, signature) of a JWT.
fn jwt_split(token: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let header = serde_json::from_slice(&b64_decode(parts[0])).unwrap();
    let claims = serde_json::from_slice(&b64_decode(parts[1])).unwrap();
    (header, claims, parts[2].to_string())
}

fn jwt_join(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64_encode(header.to_string().as_bytes()), b64_encode(claims.to_string().as_bytes()))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---- 1. the authorization table --------------------------------------------------------------

/// The request body of a row. JSON templates take the same placeholders as paths.
#[derive(Clone, Copy)]
enum Payload {
    None,
    Json(&'static str),
    /// An empty, valid sync request.
    Sync,
}

/// One route. `path` is a template: `{unit}` becomes the caller's in-scope org unit (or its
/// out-of-scope one), `{record}` a record in (or out of) the caller's scope, `{n}` a number
/// unique to each request, `{password}` the harness password.
struct Row {
    method: &'static str,
    /// The route exactly as declared in the router.
    route: &'static str,
    path: &'static str,
    body: Payload,
    /// Expected status without any token.
    anon: u16,
    /// Expected (in scope, out of scope) status for admin, province_staff, district_staff,
    /// commune_officer, in that order (see [`CALLERS`]).
    expect: [(u16, u16); 4],
}

const ALL_200: [(u16, u16); 4] = [(200, 200); 4];
const ADMIN_ONLY_200: [(u16, u16); 4] = [(200, 200), (403, 403), (403, 403), (403, 403)];
const ADMIN_ONLY_204: [(u16, u16); 4] = [(204, 204), (403, 403), (403, 403), (403, 403)];
/// Administration of an org unit: an admin inside their own subtree only.
const ADMIN_OWN_201: [(u16, u16); 4] = [(201, 403), (403, 403), (403, 403), (403, 403)];
const ADMIN_OWN_204: [(u16, u16); 4] = [(204, 403), (403, 403), (403, 403), (403, 403)];
/// Review (conflict queue, duplicates): district staff inside their district only.
const REVIEW_200: [(u16, u16); 4] = [(403, 403), (403, 403), (200, 403), (403, 403)];
const REVIEW_404: [(u16, u16); 4] = [(403, 403), (403, 403), (404, 403), (403, 403)];
/// Figures: admin anywhere, the others inside their own org unit.
const FIGURES: [(u16, u16); 4] = [(200, 200), (200, 403), (200, 403), (200, 403)];

/// Every route of the server. Admin-mutating rows are written so that repeating them is
/// harmless: unique names, a throwaway device, values equal to the defaults.
const MATRIX: &[Row] = &[
    Row { method: "GET", route: "/healthz", path: "/healthz", body: Payload::None, anon: 200, expect: ALL_200 },
    // The officer's app: public files (its data lives sealed on the phone and comes by sync).
    Row { method: "GET", route: "/app", path: "/app", body: Payload::None, anon: 200, expect: ALL_200 },
    Row { method: "GET", route: "/app/", path: "/app/", body: Payload::None, anon: 200, expect: ALL_200 },
    Row { method: "GET", route: "/app/{*path}", path: "/app/pkg/client_wasm.js", body: Payload::None, anon: 200, expect: ALL_200 },
    // Usage figures: the monitoring system's token (not used here) or an admin.
    Row { method: "GET", route: "/metrics", path: "/metrics", body: Payload::None, anon: 401, expect: ADMIN_ONLY_200 },
    Row {
        method: "POST",
        route: "/api/v1/auth/login",
        path: "/api/v1/auth/login",
        body: Payload::Json(r#"{"username":"officer2","password":"{password}","device_id":"matrix-login"}"#),
        anon: 200,
        expect: ALL_200,
    },
    Row {
        method: "POST",
        route: "/api/v1/auth/refresh",
        path: "/api/v1/auth/refresh",
        body: Payload::Json(r#"{"refresh_token":"not-a-refresh-token-{n}"}"#),
        anon: 401,
        expect: [(401, 401); 4],
    },
    Row {
        method: "POST",
        route: "/api/v1/auth/logout",
        path: "/api/v1/auth/logout",
        body: Payload::Json(r#"{"refresh_token":"not-a-refresh-token-{n}"}"#),
        anon: 401,
        expect: [(204, 204); 4],
    },
    Row { method: "GET", route: "/api/v1/me", path: "/api/v1/me", body: Payload::None, anon: 401, expect: ALL_200 },
    Row { method: "GET", route: "/api/v1/users", path: "/api/v1/users", body: Payload::None, anon: 401, expect: ADMIN_ONLY_200 },
    Row {
        method: "POST",
        route: "/api/v1/users",
        path: "/api/v1/users",
        body: Payload::Json(r#"{"username":"matrix-{n}","password":"matrix-password-{n}","role":"admin","org_unit":"{unit}"}"#),
        anon: 401,
        expect: ADMIN_OWN_201,
    },
    Row {
        method: "PATCH",
        route: "/api/v1/users/{username}",
        path: "/api/v1/users/officer1b",
        body: Payload::Json(r#"{"disabled":false}"#),
        anon: 401,
        expect: ADMIN_ONLY_200,
    },
    Row {
        method: "GET",
        route: "/api/v1/users/{username}/devices",
        path: "/api/v1/users/officer1/devices",
        body: Payload::None,
        anon: 401,
        expect: ADMIN_ONLY_200,
    },
    Row {
        method: "POST",
        route: "/api/v1/users/{username}/devices/{device_id}/revoke",
        path: "/api/v1/users/officer1b/devices/throwaway-phone/revoke",
        body: Payload::None,
        anon: 401,
        expect: ADMIN_ONLY_204,
    },
    Row { method: "GET", route: "/api/v1/org-units", path: "/api/v1/org-units", body: Payload::None, anon: 401, expect: ALL_200 },
    Row {
        method: "POST",
        route: "/api/v1/org-units",
        path: "/api/v1/org-units",
        body: Payload::Json(r#"{"code":"77{n}","name":"Matrix unit {n}","parent":"{unit}","level":"district"}"#),
        anon: 401,
        expect: ADMIN_OWN_201,
    },
    Row {
        method: "POST",
        route: "/api/v1/org-units/{code}/merge",
        path: "/api/v1/org-units/{unit}/merge",
        // Into itself, so that repeating it is harmless: past the access check an admin of the
        // unit is told why it cannot be (merges themselves: tests/merge.rs).
        body: Payload::Json(r#"{"into":"{unit}","effective":"2025-07-01"}"#),
        anon: 401,
        expect: [(400, 403), (403, 403), (403, 403), (403, 403)],
    },
    Row {
        method: "PUT",
        route: "/api/v1/targets/{org_unit}/{indicator}",
        path: "/api/v1/targets/{unit}/gbv_victims_supported",
        body: Payload::Json(r#"{"2025":0.8,"2030":0.9}"#),
        anon: 401,
        expect: ADMIN_OWN_204,
    },
    Row { method: "GET", route: "/api/v1/audit", path: "/api/v1/audit?limit=5", body: Payload::None, anon: 401, expect: ADMIN_ONLY_200 },
    Row {
        method: "GET",
        route: "/api/v1/records",
        path: "/api/v1/records?org_unit={unit}",
        body: Payload::None,
        anon: 401,
        // Province staff and admins see figures, not records.
        expect: [(403, 403), (403, 403), (200, 403), (200, 403)],
    },
    Row {
        method: "GET",
        route: "/api/v1/records/{id}",
        path: "/api/v1/records/{record}",
        body: Payload::None,
        anon: 401,
        // 404, not 403, outside scope: the server does not reveal that a record exists.
        expect: [(404, 404), (404, 404), (200, 404), (200, 404)],
    },
    Row {
        method: "GET",
        route: "/api/v1/indicators",
        path: "/api/v1/indicators?org_unit={unit}&period=2025",
        body: Payload::None,
        anon: 401,
        expect: FIGURES,
    },
    Row {
        method: "GET",
        route: "/api/v1/reports/{org_unit}/{file}",
        path: "/api/v1/reports/{unit}/2025.csv",
        body: Payload::None,
        anon: 401,
        expect: FIGURES,
    },
    Row {
        method: "GET",
        route: "/api/v1/calendar",
        path: "/api/v1/calendar?org_unit={unit}&period=2025",
        body: Payload::None,
        anon: 401,
        expect: FIGURES,
    },
    Row {
        method: "GET",
        route: "/api/v1/conflicts",
        path: "/api/v1/conflicts?org_unit={unit}",
        body: Payload::None,
        anon: 401,
        expect: REVIEW_200,
    },
    Row {
        method: "POST",
        route: "/api/v1/conflicts/{id}/resolve",
        path: "/api/v1/conflicts/{record}~victim.sex/resolve",
        body: Payload::Json(r#"{"value":"female"}"#),
        anon: 401,
        // In scope but no such open conflict: 404; outside scope (or not a reviewer): 403.
        expect: REVIEW_404,
    },
    Row {
        method: "GET",
        route: "/api/v1/duplicates",
        path: "/api/v1/duplicates?org_unit={unit}",
        body: Payload::None,
        anon: 401,
        expect: REVIEW_200,
    },
    Row {
        method: "POST",
        route: "/api/v1/duplicates/{id}/not-duplicate",
        path: "/api/v1/duplicates/{record}~ffffffff-ffff-4fff-bfff-ffffffffffff/not-duplicate",
        body: Payload::None,
        anon: 401,
        expect: REVIEW_404,
    },
    Row {
        method: "POST",
        route: "/api/v1/duplicates/{id}/merge",
        path: "/api/v1/duplicates/{record}~ffffffff-ffff-4fff-bfff-ffffffffffff/merge",
        body: Payload::Json(r#"{"keep":"{record}"}"#),
        anon: 401,
        expect: REVIEW_404,
    },
    Row {
        method: "GET",
        route: "/api/v1/approvals",
        path: "/api/v1/approvals?org_unit={unit}",
        body: Payload::None,
        anon: 401,
        expect: FIGURES,
    },
    Row {
        method: "POST",
        route: "/api/v1/approvals",
        path: "/api/v1/approvals",
        body: Payload::Json(r#"{"org_unit":"{unit}","period":"2025"}"#),
        anon: 401,
        expect: [(403, 403), (403, 403), (201, 403), (403, 403)],
    },
    Row { method: "POST", route: "/api/v1/sync", path: "/api/v1/sync", body: Payload::Sync, anon: 401, expect: ALL_200 },
];

/// One caller per role, in the order of [`Row::expect`]: its (in scope, out of scope) org unit,
/// and the communes of its (in scope, out of scope) record.
struct Caller {
    user: &'static str,
    units: [&'static str; 2],
    record_communes: [&'static str; 2],
}

const CALLERS: [Caller; 4] = [
    // "24" is a second province the test adds: outside the province user's scope.
    Caller { user: "admin", units: ["04", "24"], record_communes: ["04701", "04801"] },
    Caller { user: "province", units: ["04", "24"], record_communes: ["04701", "04801"] },
    // District staff of 047 see every commune under it, not only their own unit.
    Caller { user: "district", units: ["047", "048"], record_communes: ["04702", "04801"] },
    // A commune officer: the sibling commune of the same district is out of scope.
    Caller { user: "officer1", units: ["04701", "04702"], record_communes: ["04701", "04702"] },
];

fn expand(template: &str, unit: &str, record: &str, n: u32) -> String {
    template.replace("{unit}", unit).replace("{record}", record).replace("{n}", &format!("{n:04}")).replace("{password}", PASSWORD)
}

/// True when a concrete path (query string aside) is one the route pattern matches.
fn path_matches_route(path: &str, route: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let (p, r): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), route.split('/').collect());
    // A `{*rest}` segment takes one or more segments.
    if r.last().is_some_and(|l| l.starts_with("{*")) {
        let fixed = r.len() - 1;
        return p.len() >= r.len() && p[..fixed] == r[..fixed] && p[fixed..].iter().all(|s| !s.is_empty());
    }
    p.len() == r.len() && p.iter().zip(&r).all(|(p, r)| (r.starts_with('{') && r.ends_with('}') && !p.is_empty()) || p == r)
}

/// Every (METHOD, route) declared with `.route("...", get(..).post(..))` in the server's
/// sources (api/mod.rs today; any other file that declares routes later).
fn routes_in_source() -> BTreeSet<(String, String)> {
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    /// The text up to the `)` that closes a call whose `(` was just before `s`.
    fn call_args(s: &str) -> &str {
        let (mut depth, mut in_str, mut escaped) = (0u32, false, false);
        for (i, c) in s.char_indices() {
            if in_str {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '(' => depth += 1,
                ')' if depth == 0 => return &s[..i],
                ')' => depth -= 1,
                _ => {}
            }
        }
        panic!("unbalanced `.route(` call");
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.iter().any(|f| f.ends_with("api/mod.rs")), "server sources not found at {}", src.display());
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        for unsupported in [".nest(", ".nest_service(", ".route_service("] {
            assert!(!code.contains(unsupported), "{} uses `{unsupported}`: teach routes_in_source() about it", f.display());
        }
        let mut rest = code.as_str();
        while let Some(i) = rest.find(".route(") {
            let args = call_args(&rest[i + ".route(".len()..]);
            let path = args.split('"').nth(1).unwrap_or_else(|| panic!("{}: a .route( without a path literal", f.display()));
            let mut methods = Vec::new();
            for m in ["get", "post", "put", "patch", "delete", "head", "options"] {
                let needle = format!("{m}(");
                for (at, _) in args.match_indices(&needle) {
                    let before = args[..at].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        methods.push(m.to_uppercase());
                    }
                }
            }
            assert!(!methods.is_empty(), "{}: cannot tell the methods of route {path}: teach routes_in_source()", f.display());
            for m in methods {
                out.insert((m, path.to_string()));
            }
            rest = &rest[i + ".route(".len() + args.len()..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_covers_every_route_and_role() {
    // The table and the router agree, so a new route cannot go untested.
    // The web pages have their own table (sessions instead of tokens), see WEB_MATRIX.
    let rows = MATRIX.iter().map(|r| (r.method, r.route)).chain(WEB_MATRIX.iter().map(|r| (r.method, r.route)));
    let table: BTreeSet<(String, String)> = rows.map(|(m, r)| (m.to_string(), r.to_string())).collect();
    assert_eq!(table.len(), MATRIX.len() + WEB_MATRIX.len(), "a route appears twice in MATRIX and WEB_MATRIX");
    let declared = routes_in_source();
    let missing: Vec<_> = declared.difference(&table).collect();
    let stale: Vec<_> = table.difference(&declared).collect();
    assert!(missing.is_empty() && stale.is_empty(), "MATRIX is out of date: routes without a row {missing:?}; rows without a route {stale:?}");
    for r in MATRIX {
        assert!(path_matches_route(r.path, r.route), "row {} {}: path {} does not exercise its route", r.method, r.route, r.path);
    }

    let dir = tempfile::tempdir().unwrap();
    // A second province, outside the province user's scope (provinces are added from the
    // command line, by whoever runs the server).
    let server = TestServer::start(&with_second_province(&dir.path().join("server"))).await;
    let api = Api::new(&server);
    let url = server.url();

    let mut tokens = Vec::new();
    for c in &CALLERS {
        tokens.push(api.login(c.user, None).await.access);
    }
    let admin = tokens[0].clone();
    // The throwaway device the revoke row revokes.
    api.login("officer1b", Some("throwaway-phone")).await;
    // One record per commune the callers need, pushed from phones.
    let mut records: HashMap<&str, String> = HashMap::new();
    for (user, commune) in [("officer1", "04701"), ("officer2", "04702"), ("officer3", "04801")] {
        records.insert(commune, record_from_phone(&url, &dir.path().join(user), user, commune).await);
    }

    let mut n = 0u32;
    let mut failures = Vec::new();
    for row in MATRIX {
        let mut cases: Vec<(String, Option<&str>, &str, &str, u16)> = Vec::new();
        for (i, caller) in CALLERS.iter().enumerate() {
            for (s, scope) in ["in scope", "out of scope"].into_iter().enumerate() {
                let expected = if s == 0 { row.expect[i].0 } else { row.expect[i].1 };
                cases.push((format!("{} ({scope})", caller.user), Some(tokens[i].as_str()), caller.units[s], caller.record_communes[s], expected));
            }
        }
        cases.push(("no token".into(), None, "04701", "04701", row.anon));
        for (who, token, unit, record_commune, expected) in cases {
            n += 1;
            let path = expand(row.path, unit, &records[record_commune], n);
            let reply = match row.body {
                Payload::None => api.call(row.method, &path, token, Body::Empty).await,
                Payload::Json(t) => {
                    let v: Value = serde_json::from_str(&expand(t, unit, &records[record_commune], n)).unwrap();
                    api.call(row.method, &path, token, Body::Json(&v)).await
                }
                Payload::Sync => api.call(row.method, &path, token, Body::Raw(Some(CONTENT_TYPE), SyncRequest::default().encode())).await,
            };
            let what = format!("{} {path} as {who}", row.method);
            if reply.status != expected {
                failures.push(format!("{what}: expected {expected}, got {} {}", reply.status, reply.text()));
            } else if reply.status >= 400 {
                if let Err(e) = reply.error_format() {
                    failures.push(format!("{what}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} authorization mismatches:\n{}", failures.len(), failures.join("\n"));

    // Out of scope looks exactly like absent.
    let officer1 = &tokens[3];
    let out_of_scope = api.get(&format!("/api/v1/records/{}", records["04702"]), officer1).await;
    let absent = api.get(&format!("/api/v1/records/{}", RecordId::random()), officer1).await;
    assert_eq!((out_of_scope.status, out_of_scope.text()), (absent.status, absent.text()));

    // What each role's phone is sent on sync: records of its scope only, none for figures roles.
    let expected_pull: [&[&str]; 4] = [&[], &[], &["04701", "04702"], &["04701"]];
    for ((caller, token), communes) in CALLERS.iter().zip(&tokens).zip(expected_pull) {
        let r = api.sync(token, SyncRequest::default().encode()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let resp = SyncResponse::decode(&r.bytes).unwrap();
        assert!(!resp.more);
        let pulled: BTreeSet<String> = resp.pull.iter().map(|p| p.id.to_string()).collect();
        let want: BTreeSet<String> = communes.iter().map(|c| records[c].clone()).collect();
        assert_eq!(pulled, want, "records pulled by {}", caller.user);
    }

    // Unknown endpoints and methods answer in the API's error format too.
    api.call("GET", "/api/v1/no-such-thing", Some(&admin), Body::Empty).await.expect_error(404, "unknown endpoint");
    api.call("DELETE", "/api/v1/users", Some(&admin), Body::Empty).await.expect_error(405, "DELETE /api/v1/users");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answer_lost_on_a_cut_link_may_be_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let first = api.login("officer2", Some("2g-phone")).await;
    // The answer to this refresh never reaches the phone (the link was cut)...
    let lost = api.refresh(&first.refresh).await.json()["refresh_token"].as_str().unwrap().to_string();
    // ...so it asks again with the same token, and gets a working session.
    let r = api.refresh(&first.refresh).await;
    assert_eq!(r.status, 200, "a retried refresh within the grace: {}", r.text());
    let again = Tokens { access: r.json()["access_token"].as_str().unwrap().into(), refresh: r.json()["refresh_token"].as_str().unwrap().into() };
    assert_eq!(api.get("/api/v1/me", &again.access).await.status, 200);
    let r = api.refresh(&again.refresh).await;
    assert_eq!(r.status, 200, "the retried refresh's token rotates on: {}", r.text());
    let live = r.json()["refresh_token"].as_str().unwrap().to_string();
    // The "lost" token turning up after all means someone else holds it: the family ends.
    api.refresh(&lost).await.expect_error(401, "the withdrawn token comes back");
    api.refresh(&live).await.expect_error(401, "the family of a withdrawn token that came back");
    // Once the new token was used, the old one is plain reuse.
    let second = api.login("officer2", Some("2g-phone")).await;
    let next = api.refresh(&second.refresh).await.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(api.refresh(&next).await.status, 200);
    api.refresh(&second.refresh).await.expect_error(401, "an old token after its successor was used");
    server.stop().await;
}

// ---- 2. access tokens ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_and_foreign_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("a"), 0).await;
    let other = TestServer::start_fresh(&dir.path().join("b"), 0).await;
    let api = Api::new(&server);
    let real = api.login("officer1", None).await.access;
    let foreign = Api::new(&other).login("admin", None).await.access;
    other.stop().await;

    // The genuine token works (so the refusals below are about the changes).
    let r = api.me_with_header(&format!("Bearer {real}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["username"], "officer1");

    let (header, claims, sig) = jwt_split(&real);
    assert_eq!(header["alg"], "EdDSA");
    let with_claim = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        jwt_join(&header, &c, &sig)
    };
    let mut flipped_sig: Vec<char> = sig.chars().collect();
    let mid = flipped_sig.len() / 2;
    flipped_sig[mid] = if flipped_sig[mid] == 'A' { 'B' } else { 'A' };
    let flipped_sig: String = flipped_sig.into_iter().collect();
    let none_header = json!({"alg": "none", "typ": "JWT"});
    let hs_header = json!({"alg": "HS256", "typ": "JWT"});

    let cases: Vec<(&str, String)> = vec![
        ("signature changed", jwt_join(&header, &claims, &flipped_sig)),
        ("signature removed", jwt_join(&header, &claims, "")),
        ("role raised to admin", with_claim("role", json!("admin"))),
        ("subject changed to admin", with_claim("sub", json!("admin"))),
        ("org unit widened", with_claim("org", json!("04"))),
        ("expired (exp in the past)", with_claim("exp", json!(now_secs() - 3600))),
        ("expiry extended", with_claim("exp", json!(now_secs() + 365 * 86400))),
        ("wrong audience", with_claim("aud", json!("another-api"))),
        ("wrong issuer", with_claim("iss", json!("evil"))),
        ("alg none, no signature", jwt_join(&none_header, &with_claim_value(&claims, "role", json!("admin")), "")),
        ("alg none, original signature", jwt_join(&none_header, &claims, &sig)),
        ("alg HS256, original signature", jwt_join(&hs_header, &claims, &sig)),
        ("another server's admin token", foreign),
        ("garbage", "garbage".into()),
        ("three empty parts", "..".into()),
        ("not base64", "a*b.c*d.e*f".into()),
        ("long garbage", "x".repeat(8 * 1024)),
    ];
    for (what, token) in &cases {
        for path in ["/api/v1/me", "/api/v1/users", "/api/v1/records?org_unit=04701"] {
            let r = api.get(path, token).await;
            let (_, message) = r.expect_error(401, &format!("{what} on {path}"));
            let text = r.text();
            assert!(!text.contains(token.as_str()), "{what}: the error echoes the token");
            let sig_part = token.rsplit('.').next().unwrap_or_default();
            assert!(sig_part.len() < 16 || !text.contains(sig_part), "{what}: the error echoes the signature");
            assert!(message.len() < 200, "{what}: overlong message {message}");
        }
    }

    // Tokens only count in the Authorization header, and only as Bearer.
    for header in [format!("Basic {real}"), format!("Token {real}"), real.clone(), "Bearer ".into(), "Bearer".into()] {
        let r = api.me_with_header(&header).await;
        r.expect_error(401, &format!("Authorization: {}", header.chars().take(12).collect::<String>()));
        assert!(!r.text().contains(&real));
    }
    let r = api.call("GET", &format!("/api/v1/me?access_token={real}"), None, Body::Empty).await;
    r.expect_error(401, "token in the query string");

    server.stop().await;
}

fn with_claim_value(claims: &Value, k: &str, v: Value) -> Value {
    let mut c = claims.clone();
    c[k] = v;
    c
}

// ---- 3. refresh tokens -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let first = api.login("officer2", Some("refresh-phone")).await;

    let r = api.refresh(&first.refresh).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let second = Tokens { access: v["access_token"].as_str().unwrap().into(), refresh: v["refresh_token"].as_str().unwrap().into() };
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_i64().unwrap() > 0);
    assert_ne!(second.refresh, first.refresh, "refresh tokens rotate");
    let me = api.get("/api/v1/me", &second.access).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!((me.json()["username"].clone(), me.json()["device_id"].clone()), (json!("officer2"), json!("refresh-phone")));

    // The phone uses its new token; then the used one comes back (a thief or a replay):
    // refused, and the whole family with it.
    let r = api.refresh(&second.refresh).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let newest = r.json()["refresh_token"].as_str().unwrap().to_string();
    let (code, _) = api.refresh(&first.refresh).await.expect_error(401, "reused refresh token");
    assert_eq!(code, "invalid_refresh_token");
    api.refresh(&newest).await.expect_error(401, "the newest refresh token of a revoked family");
    // Other logins of the same user are separate families and keep working.
    let other = api.login("officer2", Some("other-phone")).await;
    let r = api.refresh(&other.refresh).await;
    assert_eq!(r.status, 200, "another family: {}", r.text());

    // Logout ends the family of the refresh token it is given.
    let third = api.login("officer2", Some("refresh-phone")).await;
    let r = api.call("POST", "/api/v1/auth/logout", Some(&third.access), Body::Json(&json!({"refresh_token": third.refresh}))).await;
    assert_eq!(r.status, 204, "{}", r.text());
    api.refresh(&third.refresh).await.expect_error(401, "refresh after logout");

    // Nonsense refresh requests.
    api.refresh("").await.expect_error(401, "empty refresh token");
    api.refresh(&first.access).await.expect_error(401, "an access token used as a refresh token");
    let r = api.call("POST", "/api/v1/auth/refresh", None, Body::Json(&json!({"refresh_token": 5}))).await;
    r.expect_error(400, "refresh token of the wrong type");

    server.stop().await;
}

// ---- 4. device revocation --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_wiped_and_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let api = Api::new(&server);
    let url = server.url();
    let store_dir = dir.path().join("phone");
    let mut c = phone(&store_dir);
    c.login(&url, "officer1", PASSWORD, None).await.unwrap();
    let synced = c.create(RecordKind::NewsItem, &news("04701")).unwrap();
    c.sync(|_| {}).await.unwrap();
    let device = c.store().device_id().to_string();
    // A second session on the same device (what a browser tab on the phone would hold).
    let raw = api.login("officer1", Some(&device)).await;

    let admin = api.login("admin", None).await.access;
    let r = api.call("POST", &format!("/api/v1/users/officer1/devices/{device}/revoke"), Some(&admin), Body::Empty).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let devices = api.get("/api/v1/users/officer1/devices", &admin).await.json();
    let listed = devices.as_array().unwrap().iter().find(|d| d["device_id"] == device.as_str()).expect("the device is listed");
    assert_eq!(listed["revoked"], true);
    let r = api.call("POST", "/api/v1/users/officer1/devices/no-such-device/revoke", Some(&admin), Body::Empty).await;
    r.expect_error(404, "revoking an unknown device");

    // A change made offline after the revocation: the phone is told at its next sync.
    c.create(RecordKind::NewsItem, &news("04701")).unwrap();
    let err = c.sync(|_| {}).await.expect_err("sync from a revoked device");
    assert!(matches!(err, client_sdk::Error::DeviceRevoked), "expected DeviceRevoked, got {err:?}");
    let left: Vec<String> = match std::fs::read_dir(&store_dir) {
        Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "the store directory still holds {left:?}");
    assert!(matches!(c.list(None), Err(client_sdk::Error::DeviceRevoked)));
    assert!(matches!(c.create(RecordKind::NewsItem, &news("04701")), Err(client_sdk::Error::DeviceRevoked)));

    // Every way back in from that device is closed; the record it synced stays on the server.
    let (code, _) = api.get("/api/v1/me", &raw.access).await.expect_error(403, "access token of the revoked device");
    assert_eq!(code, "device_revoked");
    let (code, _) = api.refresh(&raw.refresh).await.expect_error(403, "refresh token of the revoked device");
    assert_eq!(code, "device_revoked");
    api.sync(&raw.access, SyncRequest::default().encode()).await.expect_error(403, "sync from the revoked device");
    let (code, _) = api.try_login("officer1", PASSWORD, Some(&device)).await.expect_error(403, "login again from the revoked device");
    assert_eq!(code, "device_revoked");
    let district = api.login("district", None).await.access;
    assert!(api.record_ids(&district, "04701").await.contains(&synced.to_string()));
    // The user is not disabled: a new device may log in.
    api.login("officer1", Some("replacement-phone")).await;

    server.stop().await;
}

// ---- 5. disabled users and ended sessions ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_their_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await.access;
    let victim = api.login("officer1b", Some("b-phone")).await;
    assert_eq!(api.get("/api/v1/me", &victim.access).await.status, 200);

    let r = api.call("PATCH", "/api/v1/users/officer1b", Some(&admin), Body::Json(&json!({"disabled": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["disabled"], true);

    // The phone is told to wipe (its records describe victims; the holder is no longer entitled).
    for r in [
        api.get("/api/v1/me", &victim.access).await,
        api.sync(&victim.access, SyncRequest::default().encode()).await,
        api.refresh(&victim.refresh).await,
    ] {
        let (code, _) = r.expect_error(403, "a disabled user's session");
        assert_eq!(code, "account_disabled");
    }
    let (_, disabled_msg) = api.try_login("officer1b", PASSWORD, Some("b-phone")).await.expect_error(401, "login of a disabled user");
    let (_, wrong_msg) = api.try_login("officer2", "wrong-password-000", None).await.expect_error(401, "wrong password");
    assert_eq!(disabled_msg, wrong_msg, "a disabled account is not told apart from a wrong password");

    // Enabled again: a new login works, the old session stays ended.
    let r = api.call("PATCH", "/api/v1/users/officer1b", Some(&admin), Body::Json(&json!({"disabled": false}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = api.login("officer1b", Some("b-phone")).await;
    assert_eq!(api.get("/api/v1/me", &fresh.access).await.status, 200);
    api.get("/api/v1/me", &victim.access).await.expect_error(401, "a session ended by disabling stays ended");

    // A role change ends sessions too: the old token must not keep the old rights.
    let officer2 = api.login("officer2", None).await.access;
    assert_eq!(api.get("/api/v1/records?org_unit=04702", &officer2).await.status, 200);
    let r = api.call("PATCH", "/api/v1/users/officer2", Some(&admin), Body::Json(&json!({"role": "province_staff", "org_unit": "04"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    api.get("/api/v1/records?org_unit=04702", &officer2).await.expect_error(401, "token issued before a role change");

    server.stop().await;
}

// ---- 6. login throttling ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_throttled_without_locking_out_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);

    // No user enumeration: an unknown user and a wrong password look the same.
    let unknown = api.try_login("nobody-here", "wrong-password-000", None).await;
    let wrong = api.try_login("officer2", "wrong-password-000", None).await;
    assert_eq!((unknown.status, unknown.text()), (wrong.status, wrong.text()));
    wrong.expect_error(401, "wrong password");

    let mut throttled = None;
    for attempt in 2..=12 {
        let r = api.try_login("officer2", &format!("wrong-password-{attempt:03}"), None).await;
        if r.status == 429 {
            throttled = Some((attempt, r));
            break;
        }
        r.expect_error(401, &format!("wrong password, attempt {attempt}"));
    }
    let (attempt, r) = throttled.expect("no 429 after 12 wrong passwords");
    assert!(attempt <= 10, "throttled only at attempt {attempt}");
    let (code, _) = r.expect_error(429, "throttled login");
    assert_eq!(code, "throttled");
    let retry: u64 = r.retry_after.as_deref().expect("a Retry-After header").parse().expect("Retry-After in seconds");
    assert!((1..=300).contains(&retry), "Retry-After {retry}");

    // While throttled, even the right password waits (guessing right does not slip through).
    api.try_login("officer2", PASSWORD, None).await.expect_error(429, "right password while throttled");
    // Another user from the same address is not locked out.
    api.login("officer3", None).await;

    server.stop().await;
}

// ---- 7. the audit trail ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_records_who_did_what_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let api = Api::new(&server);
    let url = server.url();
    let secret_title = "Secret title 7f3a";
    let mut c = phone(&dir.path().join("phone"));
    c.login(&url, "officer1", PASSWORD, None).await.unwrap();
    let record = c.create(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-02", "title": secret_title})).unwrap();
    c.sync(|_| {}).await.unwrap();

    let wrong_password = "wrong-password-4e1d";
    api.try_login("officer2", wrong_password, Some("audit-phone")).await.expect_error(401, "wrong password");
    let officer1 = api.login("officer1", Some("audit-raw")).await;
    let r = api.refresh(&officer1.refresh).await;
    assert_eq!(r.status, 200);
    let refreshed = r.json();
    let district = api.login("district", None).await;
    assert_eq!(api.get(&format!("/api/v1/records/{record}"), &district.access).await.status, 200);
    assert_eq!(api.get("/api/v1/records?org_unit=04701", &district.access).await.status, 200);
    let province = api.login("province", None).await;
    assert_eq!(api.get("/api/v1/reports/04/2025.csv", &province.access).await.status, 200);
    let admin = api.login("admin", None).await;
    let new_password = "audited-password-9c2b";
    let body = json!({"username": "audited-user", "password": new_password, "role": "district_staff", "org_unit": "048"});
    assert_eq!(api.call("POST", "/api/v1/users", Some(&admin.access), Body::Json(&body)).await.status, 201);

    let r = api.get("/api/v1/audit", &admin.access).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = r.json();
    assert_eq!(log["chain"]["valid"], true, "{}", log["chain"]);
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(log["chain"]["entries"].as_u64(), Some(entries.len() as u64));
    let has = |action: &str, user: &str, target_part: &str| {
        entries.iter().any(|e| e["action"] == action && e["user"] == user && e["target"].as_str().unwrap_or_default().contains(target_part))
    };
    let record = record.to_string();
    for (action, user, target) in [
        ("login", "officer1", ""),
        ("login_failed", "officer2", ""),
        ("token_refresh", "officer1", ""),
        ("record_read", "district", record.as_str()),
        ("records_list", "district", "04701"),
        ("report_export", "province", "04"),
        ("user_create", "admin", "audited-user"),
    ] {
        assert!(has(action, user, target), "no audit entry {action} by {user} on {target:?} in {entries:#?}");
    }
    // The entries link into one chain, in order.
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["seq"].as_u64(), pair[0]["seq"].as_u64().map(|s| s + 1));
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    // `since` pages forward.
    let last = entries.last().unwrap()["seq"].as_u64().unwrap();
    let tail = api.get(&format!("/api/v1/audit?since={}", last - 2), &admin.access).await.json();
    let tail_seqs: Vec<u64> = tail["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(tail_seqs.starts_with(&[last - 1, last]), "audit since={}: {tail_seqs:?}", last - 2);

    // Nothing secret in the trail: passwords, tokens, record contents.
    let text = r.text();
    let mut secrets = vec![PASSWORD, wrong_password, new_password, secret_title];
    let token_strings = [&officer1.access, &officer1.refresh, &district.access, &district.refresh, &province.access, &admin.access, &admin.refresh];
    secrets.extend(token_strings.iter().map(|s| s.as_str()));
    secrets.extend([refreshed["access_token"].as_str().unwrap(), refreshed["refresh_token"].as_str().unwrap()]);
    for s in secrets {
        assert!(!text.contains(s), "the audit log contains a secret ({} chars)", s.len());
    }

    server.stop().await;
}

// ---- 8. hostile input ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_cleanly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await.access;
    let district = api.login("district", None).await.access;
    let users_before = api.get("/api/v1/users", &admin).await.text();
    let units_before = api.get("/api/v1/org-units", &admin).await.text();
    let figures_path = "/api/v1/indicators?org_unit=04&period=2025";
    let figures_before = api.get(figures_path, &admin).await.text();
    let huge = format!(r#"{{"username":"{}","password":"x"}}"#, "a".repeat(MAX_MESSAGE_BYTES + 1024));

    let json_ct = Some("application/json");
    let raw = |s: &str| Body::Raw(json_ct, s.as_bytes().to_vec());
    // (method, path, body, expected status)
    let cases: Vec<(&str, &str, Body, u16)> = vec![
        // login
        ("POST", "/api/v1/auth/login", raw(r#"{"username":"#), 400),
        ("POST", "/api/v1/auth/login", raw(r#"{"username":1,"password":true}"#), 400),
        ("POST", "/api/v1/auth/login", raw(&format!(r#"{{"username":"admin","password":"{PASSWORD}","role":"admin"}}"#)), 400),
        ("POST", "/api/v1/auth/login", raw(r#"{"username":"admin"}"#), 400),
        ("POST", "/api/v1/auth/login", raw(&format!(r#"{{"username":"admin","password":"{PASSWORD}","device_id":"../../etc"}}"#)), 400),
        ("POST", "/api/v1/auth/login", raw("[]"), 400),
        ("POST", "/api/v1/auth/login", Body::Raw(None, format!(r#"{{"username":"admin","password":"{PASSWORD}"}}"#).into_bytes()), 415),
        ("POST", "/api/v1/auth/login", raw(&huge), 413),
        // users
        ("POST", "/api/v1/users", raw(r#"{"username":"x1","#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"bad-types","password":"long-enough-pw","role":5,"org_unit":"04"}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"extra","password":"long-enough-pw","role":"admin","org_unit":"04","is_superuser":true}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"no-password","role":"admin","org_unit":"04"}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"bad-role","password":"long-enough-pw","role":"root","org_unit":"04"}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"short-pw","password":"short","role":"admin","org_unit":"04"}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"no-unit","password":"long-enough-pw","role":"admin","org_unit":"99"}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"../admin","password":"long-enough-pw","role":"admin","org_unit":"04"}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"nul\u0000user","password":"long-enough-pw","role":"admin","org_unit":"04"}"#), 400),
        ("POST", "/api/v1/users", raw(r#"{"username":"officer1","password":"long-enough-pw","role":"admin","org_unit":"04"}"#), 409),
        ("POST", "/api/v1/users", raw(&huge), 413),
        // user changes
        ("PATCH", "/api/v1/users/officer1", raw(r#"{"is_admin":true}"#), 400),
        ("PATCH", "/api/v1/users/officer1", raw(r#"{"disabled":"yes"}"#), 400),
        ("PATCH", "/api/v1/users/officer1", raw(r#"{"role":"god"}"#), 400),
        ("PATCH", "/api/v1/users/officer1", raw(r#"{"org_unit":"99999"}"#), 400),
        ("PATCH", "/api/v1/users/officer1", raw(r#"{"password":"short"}"#), 400),
        ("PATCH", "/api/v1/users/no-such-user", raw(r#"{"disabled":true}"#), 404),
        ("PATCH", "/api/v1/users/officer1", raw(&huge), 413),
        // org units
        ("POST", "/api/v1/org-units", raw(r#"{"code":"#), 400),
        ("POST", "/api/v1/org-units", raw(r#"{"code":4,"name":"x"}"#), 400),
        ("POST", "/api/v1/org-units", raw(r#"{"code":"05","name":"x","evil":1}"#), 400),
        ("POST", "/api/v1/org-units", raw(r#"{"code":"abc","name":"x"}"#), 400),
        ("POST", "/api/v1/org-units", raw(r#"{"code":"../04","name":"x"}"#), 400),
        ("POST", "/api/v1/org-units", raw(r#"{"code":"05","name":"   "}"#), 400),
        ("POST", "/api/v1/org-units", raw(r#"{"code":"0599","name":"x","parent":"99999"}"#), 400),
        ("POST", "/api/v1/org-units", raw(&huge), 413),
        // targets
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw(r#"{"2025":"#), 400),
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw(r#"{"2025":"high"}"#), 400),
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw(r#"{"twenty":0.5}"#), 400),
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw(r#"{"2025":1.5}"#), 400),
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw(r#"{"2025":-0.1}"#), 400),
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw(r#"{"1999":0.5}"#), 400),
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw("{}"), 400),
        ("PUT", "/api/v1/targets/04/no_such_indicator", raw(r#"{"2025":0.5}"#), 400),
        ("PUT", "/api/v1/targets/99999/gbv_victims_supported", raw(r#"{"2025":0.5}"#), 404),
        ("PUT", "/api/v1/targets/04/gbv_victims_supported", raw(&huge), 413),
        // paths and queries
        ("GET", "/api/v1/users/..%2F..%2Fadmin/devices", Body::Empty, 404),
        ("GET", "/api/v1/reports/..%2F..%2Fetc/2025.csv", Body::Empty, 404),
        ("GET", "/api/v1/reports/04/2025.txt", Body::Empty, 404),
        ("GET", "/api/v1/reports/04/2025Q9.csv", Body::Empty, 400),
        ("GET", "/api/v1/indicators?org_unit=04&period=2025Q9", Body::Empty, 400),
        ("GET", "/api/v1/indicators?org_unit=04", Body::Empty, 400),
        ("GET", "/api/v1/indicators?org_unit=..%2F04&period=2025", Body::Empty, 404),
        ("GET", "/api/v1/audit?limit=-1", Body::Empty, 400),
        ("GET", "/api/v1/audit?since=abc", Body::Empty, 400),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in cases {
        let what = format!("{method} {path}");
        let r = match api.reply_or_head_status(method, path, Some(&admin), body, MAX_MESSAGE_BYTES + 1024).await {
            Ok(r) => r,
            Err(status) => {
                if (expected, status) != (413, 413) {
                    failures.push(format!("{what}: expected {expected}; the upload was cut, and its head alone gets {status}"));
                }
                continue;
            }
        };
        if r.status != expected {
            failures.push(format!("{what}: expected {expected}, got {} {}", r.status, r.text().chars().take(300).collect::<String>()));
        } else if let Err(e) = r.error_format() {
            failures.push(format!("{what}: {e}"));
        }
    }
    // Record ids and queries, as district staff (who may read records).
    for (path, expected) in [
        ("/api/v1/records/..%2F..%2Fetc", 400),
        ("/api/v1/records/..%2F..%2Fetc%2Fpasswd", 400),
        ("/api/v1/records/not-a-uuid", 400),
        ("/api/v1/records/%00", 400),
        ("/api/v1/records?org_unit=04701&evil=1", 400),
        ("/api/v1/records?org_unit=04701&kind=password", 400),
        ("/api/v1/records?org_unit=04701&period=yesterday", 400),
        ("/api/v1/records?org_unit=..%2F04", 404),
    ] {
        let r = api.get(path, &district).await;
        if r.status != expected {
            failures.push(format!("GET {path}: expected {expected}, got {} {}", r.status, r.text()));
        } else if let Err(e) = r.error_format() {
            failures.push(format!("GET {path}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} bad-input mismatches:\n{}", failures.len(), failures.join("\n"));

    // Nothing was written.
    assert_eq!(api.get("/api/v1/users", &admin).await.text(), users_before, "users changed");
    assert_eq!(api.get("/api/v1/org-units", &admin).await.text(), units_before, "org units changed");
    assert_eq!(api.get(figures_path, &admin).await.text(), figures_before, "targets changed");
    let log = api.get("/api/v1/audit", &admin).await.json();
    let written: Vec<&Value> = log["entries"].as_array().unwrap().iter().filter(|e| e["user"] == "admin" && e["action"] != "login").collect();
    assert!(written.is_empty(), "bad input was audited as done: {written:?}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sync_messages_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let officer1 = api.login("officer1", None).await.access;
    let district = api.login("district", None).await.access;
    let (id, valid) = push_request("04701");

    let mut wrong_version = valid.clone();
    wrong_version[4] = 99;
    let mut trailing = valid.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    let mut oversized = valid[..5].to_vec();
    oversized.resize(MAX_MESSAGE_BYTES + 1, 0);
    // (what, content type, body, expected status, a word the message must contain)
    let cases = vec![
        ("garbage", Some(CONTENT_TYPE), b"hello, this is not a sync message".to_vec(), 400, "magic"),
        ("empty", Some(CONTENT_TYPE), Vec::new(), 400, "empty"),
        ("truncated", Some(CONTENT_TYPE), valid[..valid.len() / 2].to_vec(), 400, ""),
        ("header only", Some(CONTENT_TYPE), valid[..5].to_vec(), 400, ""),
        ("wrong version", Some(CONTENT_TYPE), wrong_version, 400, "version"),
        ("trailing bytes", Some(CONTENT_TYPE), trailing, 400, "trailing"),
        ("oversized", Some(CONTENT_TYPE), oversized, 413, ""),
        ("JSON content type", Some("application/json"), valid.clone(), 415, CONTENT_TYPE),
        ("no content type", None, valid.clone(), 415, CONTENT_TYPE),
    ];
    let mut failures = Vec::new();
    for (what, ct, body, expected, word) in cases {
        let r = match api.reply_or_head_status("POST", "/api/v1/sync", Some(&officer1), Body::Raw(ct, body), MAX_MESSAGE_BYTES + 1).await {
            Ok(r) => r,
            Err(status) => {
                if (expected, status) != (413, 413) {
                    failures.push(format!("{what}: expected {expected}; the upload was cut, and its head alone gets {status}"));
                }
                continue;
            }
        };
        if r.status != expected {
            failures.push(format!("{what}: expected {expected}, got {} {}", r.status, r.text().chars().take(300).collect::<String>()));
            continue;
        }
        match r.error_format() {
            Err(e) => failures.push(format!("{what}: {e}")),
            Ok((_, message)) if !message.contains(word) || message.len() > 300 => failures.push(format!("{what}: unclear message {message:?}")),
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "{} bad sync mismatches:\n{}", failures.len(), failures.join("\n"));
    assert!(api.record_ids(&district, "047").await.is_empty(), "a refused sync message stored a record");

    // The same valid message, from callers who may not write records of 04701: rejected.
    let province = api.login("province", None).await.access;
    let officer3 = api.login("officer3", None).await.access;
    let officer2 = api.login("officer2", None).await.access;
    for (who, token) in [("province", &province), ("officer3", &officer3), ("officer2 (sibling commune)", &officer2)] {
        let r = api.sync(token, valid.clone()).await;
        assert_eq!(r.status, 200, "{who}: {}", r.text());
        let resp = SyncResponse::decode(&r.bytes).unwrap();
        assert_eq!(resp.results.len(), 1);
        assert!(matches!(resp.results[0].outcome, PushOutcome::Rejected { .. }), "{who}: push outside scope: {:?}", resp.results[0].outcome);
        assert!(resp.pull.is_empty(), "{who} was sent records");
    }
    assert!(api.record_ids(&district, "047").await.is_empty(), "a push outside scope stored a record");

    // And from its own officer it is accepted: the refusals above were about scope and framing.
    let r = api.sync(&officer1, valid).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = SyncResponse::decode(&r.bytes).unwrap();
    assert_eq!(resp.results[0].outcome, PushOutcome::Accepted);
    assert_eq!(api.record_ids(&district, "047").await, BTreeSet::from([id.to_string()]));

    server.stop().await;
}

// ---- 9. the web pages' authorization table ---------------------------------------------------

/// The form of a web row (`application/x-www-form-urlencoded`, placeholders as in [`expand`]).
#[derive(Clone, Copy)]
enum WebForm {
    None,
    /// Sent with the caller's session's CSRF token.
    Form(&'static str),
    /// The login form, with a fresh login-form token and its cookie.
    Login(&'static str),
    /// Sent from a fresh session of the caller (the request ends it).
    FreshSession,
}

/// One page route. Statuses are read without following redirects: `303` is "go elsewhere"
/// (to the login page when not signed in, to the start page after a sign-in).
struct WebRow {
    method: &'static str,
    route: &'static str,
    path: &'static str,
    form: WebForm,
    anon: u16,
    expect: [(u16, u16); 4],
}

/// Figures pages: admin anywhere, province and district staff inside their unit, commune
/// officers never (their work is on the phone).
const WEB_FIGURES: [(u16, u16); 4] = [(200, 200), (200, 403), (200, 403), (403, 403)];
const WEB_ADMIN_200: [(u16, u16); 4] = [(200, 200), (403, 403), (403, 403), (403, 403)];
const WEB_ADMIN_303: [(u16, u16); 4] = [(303, 303), (403, 403), (403, 403), (403, 403)];
/// Administration of an org unit from the pages: an admin inside their own subtree only.
const WEB_ADMIN_OWN_303: [(u16, u16); 4] = [(303, 403), (403, 403), (403, 403), (403, 403)];

const WEB_MATRIX: &[WebRow] = &[
    WebRow { method: "GET", route: "/", path: "/", form: WebForm::None, anon: 303, expect: [(303, 303); 4] },
    WebRow { method: "GET", route: "/login", path: "/login", form: WebForm::None, anon: 200, expect: [(303, 303); 4] },
    WebRow { method: "POST", route: "/login", path: "/login", form: WebForm::Login("username=officer2&password={password}"), anon: 303, expect: [(303, 303); 4] },
    WebRow { method: "POST", route: "/logout", path: "/logout", form: WebForm::FreshSession, anon: 403, expect: [(303, 303); 4] },
    WebRow { method: "GET", route: "/static/gesync.css", path: "/static/gesync.css", form: WebForm::None, anon: 200, expect: [(200, 200); 4] },
    WebRow { method: "GET", route: "/phone", path: "/phone", form: WebForm::None, anon: 303, expect: [(200, 200); 4] },
    WebRow { method: "GET", route: "/district", path: "/district?unit={unit}&period=2025", form: WebForm::None, anon: 303, expect: WEB_FIGURES },
    WebRow { method: "GET", route: "/province", path: "/province?unit={unit}&period=2025", form: WebForm::None, anon: 303, expect: WEB_FIGURES },
    WebRow { method: "GET", route: "/report/{unit}/{period}", path: "/report/{unit}/2025", form: WebForm::None, anon: 303, expect: WEB_FIGURES },
    WebRow { method: "GET", route: "/export/{unit}/{file}", path: "/export/{unit}/2025.csv", form: WebForm::None, anon: 303, expect: WEB_FIGURES },
    WebRow { method: "GET", route: "/review/conflicts", path: "/review/conflicts?unit={unit}", form: WebForm::None, anon: 303, expect: REVIEW_200 },
    WebRow {
        method: "POST",
        route: "/review/conflicts/{id}/resolve",
        path: "/review/conflicts/{record}~victim.sex/resolve",
        form: WebForm::Form("value_text=female"),
        anon: 403,
        // In scope but no such open conflict: 404; outside scope (or not a reviewer): 403.
        expect: REVIEW_404,
    },
    WebRow { method: "GET", route: "/review/duplicates", path: "/review/duplicates?unit={unit}", form: WebForm::None, anon: 303, expect: REVIEW_200 },
    WebRow {
        method: "POST",
        route: "/review/duplicates/{id}/not-duplicate",
        path: "/review/duplicates/{record}~ffffffff-ffff-4fff-bfff-ffffffffffff/not-duplicate",
        form: WebForm::Form(""),
        anon: 403,
        expect: REVIEW_404,
    },
    WebRow {
        method: "POST",
        route: "/review/duplicates/{id}/merge",
        path: "/review/duplicates/{record}~ffffffff-ffff-4fff-bfff-ffffffffffff/merge",
        form: WebForm::Form("keep={record}"),
        anon: 403,
        expect: REVIEW_404,
    },
    WebRow { method: "GET", route: "/review/approval", path: "/review/approval?unit={unit}&period=2025", form: WebForm::None, anon: 303, expect: REVIEW_200 },
    WebRow {
        method: "POST",
        route: "/review/approval",
        path: "/review/approval",
        form: WebForm::Form("unit={unit}&period=2025"),
        anon: 403,
        expect: [(403, 403), (403, 403), (303, 403), (403, 403)],
    },
    WebRow { method: "GET", route: "/admin/users", path: "/admin/users", form: WebForm::None, anon: 303, expect: WEB_ADMIN_200 },
    WebRow {
        method: "POST",
        route: "/admin/users",
        path: "/admin/users",
        form: WebForm::Form("username=web-matrix-{n}&password=matrix-password-{n}&role=admin&org_unit={unit}"),
        anon: 403,
        expect: WEB_ADMIN_OWN_303,
    },
    WebRow { method: "GET", route: "/admin/users/{username}", path: "/admin/users/officer1", form: WebForm::None, anon: 303, expect: WEB_ADMIN_200 },
    WebRow {
        method: "POST",
        route: "/admin/users/{username}",
        path: "/admin/users/officer1b",
        form: WebForm::Form("role=commune_officer&org_unit=04701"),
        anon: 403,
        expect: WEB_ADMIN_303,
    },
    WebRow {
        method: "POST",
        route: "/admin/users/{username}/password",
        path: "/admin/users/officer1b/password",
        form: WebForm::Form("password={password}"),
        anon: 403,
        expect: WEB_ADMIN_303,
    },
    WebRow {
        method: "POST",
        route: "/admin/users/{username}/disabled",
        path: "/admin/users/officer1b/disabled",
        form: WebForm::Form("disabled=false"),
        anon: 403,
        expect: WEB_ADMIN_303,
    },
    WebRow {
        method: "POST",
        route: "/admin/users/{username}/devices/{device_id}/revoke",
        path: "/admin/users/officer1b/devices/throwaway-phone/revoke",
        form: WebForm::Form(""),
        anon: 403,
        expect: WEB_ADMIN_303,
    },
    WebRow { method: "GET", route: "/admin/org-units", path: "/admin/org-units", form: WebForm::None, anon: 303, expect: WEB_ADMIN_200 },
    WebRow {
        method: "POST",
        route: "/admin/org-units",
        path: "/admin/org-units",
        form: WebForm::Form("code=78{n}&name=Matrix+unit+{n}&parent={unit}&level=district"),
        anon: 403,
        expect: WEB_ADMIN_OWN_303,
    },
    WebRow {
        method: "POST",
        route: "/admin/org-units/merge",
        path: "/admin/org-units/merge",
        // As the API's row: into itself, so past the access check an admin of the unit is told
        // why it cannot be (400), and nothing changes.
        form: WebForm::Form("code={unit}&into={unit}&effective=2025-07-01"),
        anon: 403,
        expect: [(400, 403), (403, 403), (403, 403), (403, 403)],
    },
    WebRow { method: "GET", route: "/admin/targets", path: "/admin/targets?unit={unit}", form: WebForm::None, anon: 303, expect: WEB_ADMIN_200 },
    WebRow {
        method: "POST",
        route: "/admin/targets",
        path: "/admin/targets",
        form: WebForm::Form("unit={unit}&indicator=gbv_victims_supported&y2025=80&y2030=90"),
        anon: 403,
        expect: WEB_ADMIN_OWN_303,
    },
];

/// A browser without a browser: a cookie jar of its own, no redirects followed.
struct WebClient {
    base: String,
    http: reqwest::Client,
}

/// A web answer: status, content type, `Set-Cookie` name=value pairs, body.
struct WebReply {
    status: u16,
    content_type: String,
    cookies: Vec<(String, String)>,
    body: String,
}

impl WebClient {
    fn new(server: &TestServer) -> WebClient {
        gesync_server::server::install_crypto_provider();
        WebClient { base: server.url(), http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap() }
    }

    async fn send(&self, method: &str, path: &str, cookies: &[(String, String)], form: Option<String>) -> WebReply {
        let mut rb = self.http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", self.base));
        if !cookies.is_empty() {
            rb = rb.header("cookie", cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "));
        }
        if let Some(f) = form {
            rb = rb.header("content-type", "application/x-www-form-urlencoded").body(f);
        }
        let r = rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.split(';').next()?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        WebReply { status, content_type, cookies, body: r.text().await.unwrap_or_default() }
    }

    /// A fresh login-form token and the cookie it must come back with.
    async fn login_form(&self) -> (String, (String, String)) {
        let r = self.send("GET", "/login", &[], None).await;
        assert_eq!(r.status, 200, "GET /login: {}", r.body);
        (csrf_in(&r.body), r.cookies.into_iter().find(|(k, _)| k == "gesync_login").expect("the login-form cookie"))
    }

    /// Signs `user` in; returns the session cookie and the session's CSRF token.
    async fn login(&self, user: &str) -> (Vec<(String, String)>, String) {
        let (token, cookie) = self.login_form().await;
        let r = self.send("POST", "/login", &[cookie], Some(format!("csrf={token}&username={user}&password={PASSWORD}"))).await;
        assert_eq!(r.status, 303, "web login {user}: {}", r.body);
        let session: Vec<_> = r.cookies.into_iter().filter(|(k, _)| k == "gesync_session").collect();
        assert_eq!(session.len(), 1, "web login {user} sets one session cookie");
        let page = self.send("GET", "/phone", &session, None).await;
        (session, csrf_in(&page.body))
    }
}

/// The CSRF token of the first form of a page.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no form with a CSRF token in {html}")) + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_authorization_table_covers_every_page_and_role() {
    for r in WEB_MATRIX {
        assert!(path_matches_route(r.path, r.route), "web row {} {}: path {} does not exercise its route", r.method, r.route, r.path);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&with_second_province(&dir.path().join("server"))).await;
    let api = Api::new(&server);
    let web = WebClient::new(&server);
    api.login("officer1b", Some("throwaway-phone")).await;
    let mut records: HashMap<&str, String> = HashMap::new();
    for (user, commune) in [("officer1", "04701"), ("officer2", "04702"), ("officer3", "04801")] {
        records.insert(commune, record_from_phone(&server.url(), &dir.path().join(user), user, commune).await);
    }
    let mut sessions = Vec::new();
    for c in &CALLERS {
        sessions.push(web.login(c.user).await);
    }

    let mut n = 0u32;
    let mut failures = Vec::new();
    for row in WEB_MATRIX {
        let mut cases: Vec<(String, Option<usize>, &str, &str, u16)> = Vec::new();
        for (i, caller) in CALLERS.iter().enumerate() {
            cases.push((format!("{} (in scope)", caller.user), Some(i), caller.units[0], caller.record_communes[0], row.expect[i].0));
            cases.push((format!("{} (out of scope)", caller.user), Some(i), caller.units[1], caller.record_communes[1], row.expect[i].1));
        }
        cases.push(("no session".into(), None, "04701", "04701", row.anon));
        for (who, caller, unit, record_commune, expected) in cases {
            n += 1;
            let record = records[record_commune].as_str();
            let path = expand(row.path, unit, record, n);
            let (mut cookies, mut csrf) = caller.map(|i| sessions[i].clone()).unwrap_or_default();
            let form = match row.form {
                WebForm::None => None,
                WebForm::Form(t) => Some(format!("csrf={csrf}&{}", expand(t, unit, record, n))),
                WebForm::Login(t) => {
                    let (token, cookie) = web.login_form().await;
                    cookies.push(cookie);
                    Some(format!("csrf={token}&{}", expand(t, unit, record, n)))
                }
                WebForm::FreshSession => {
                    if let Some(i) = caller {
                        (cookies, csrf) = web.login(CALLERS[i].user).await;
                    }
                    Some(format!("csrf={csrf}"))
                }
            };
            let reply = web.send(row.method, &path, &cookies, form).await;
            let what = format!("{} {path} as {who}", row.method);
            if reply.status != expected {
                failures.push(format!("{what}: expected {expected}, got {}", reply.status));
            } else if reply.status >= 400 && !reply.content_type.starts_with("text/html") {
                failures.push(format!("{what}: refusal served as `{}`, not a page", reply.content_type));
            }
        }
    }
    assert!(failures.is_empty(), "{} web authorization mismatches:\n{}", failures.len(), failures.join("\n"));

    // A bearer token is not a web session, and a session cookie is not an API credential.
    let district = api.login("district", None).await.access;
    let r = web.http.get(format!("{}/district", server.url())).bearer_auth(&district).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "a page with only a bearer token");
    let cookie = sessions[2].0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let r = web.http.get(format!("{}/api/v1/me", server.url())).header("cookie", cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "the API with only a session cookie");

    server.stop().await;
}

// ---- 8. unauthenticated callers (issue "Security: close the holes a review found", 1-5) ------

/// The audit log as the admin reads it.
async fn audit_text(api: &Api) -> String {
    let admin = api.login("admin", None).await;
    let r = api.get("/api/v1/audit", &admin.access).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_bodies_are_small_and_a_mistyped_user_name_is_not_written_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    // Megabytes of user name: refused before anything is read into a throttle key or the audit.
    let huge = "a".repeat(3 << 20);
    for path in ["/api/v1/auth/login", "/api/v1/auth/login", "/api/v1/auth/login", "/api/v1/auth/refresh"] {
        let body = json!({"username": huge, "password": "x", "refresh_token": huge});
        match api.reply_or_head_status("POST", path, None, Body::Json(&body), 3 << 20).await {
            Ok(r) => assert_eq!(r.status, 413, "{path}"),
            Err(status) => assert_eq!(status, 413, "{path}: the upload was cut, and its head alone"),
        }
    }
    // A password typed into the user name field, and a user name that is no account.
    api.try_login("Mật khẩu bí mật 2025!", "x", None).await.expect_error(401, "a user name of the wrong form");
    api.try_login("not.an.account", "wrong-password-1", None).await.expect_error(401, "an unknown account");
    api.try_login("officer2", "wrong-password-1", None).await.expect_error(401, "a wrong password");
    let audit = audit_text(&api).await;
    assert!(!audit.contains("bí mật") && !audit.contains("not.an.account"), "typed names in the audit: {audit}");
    // The huge name in no field an entry writes down. The server's random ids and the chain's
    // hashes are hex, where "aaaa" turns up by chance (one run in a few hundred).
    let entries: Value = serde_json::from_str(&audit).unwrap();
    for entry in entries["entries"].as_array().unwrap() {
        for (field, value) in entry.as_object().unwrap().iter().filter(|(k, _)| !["hash", "prev_hash", "device_id"].contains(&k.as_str())) {
            assert!(!value.to_string().contains("aaaa"), "the huge name in `{field}`: {audit}");
        }
    }
    assert!(audit.contains("(no such account)") && audit.contains("\"officer2\""), "{audit}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bad_logins_from_one_address_do_not_shut_its_officers_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    // An office or carrier NAT: one address, a user trying names at random 60 times.
    for n in 0..60 {
        let r = api.try_login(&format!("guess{n}"), "wrong-password-1", None).await;
        assert!(r.status == 401, "attempt {n}: {}", r.status);
    }
    // Every officer behind that address still gets in.
    api.login("officer2", None).await;
    api.login("officer3", None).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_guesses_is_counted_before_hashing_and_spares_known_phones() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = std::sync::Arc::new(Api::new(&server));
    // The officer's phone logged in once before, and keeps its device proof.
    let proof = api.device_proof("officer2", "officer2-phone").await;
    let guesses: Vec<_> = (0..24)
        .map(|n| {
            let api = api.clone();
            tokio::spawn(async move { api.try_login("officer2", &format!("wrong-password-{n:03}"), None).await })
        })
        .collect();
    let mut checked = 0;
    for g in guesses {
        let r = g.await.unwrap();
        match r.status {
            401 => checked += 1,
            429 => assert!(r.retry_after.is_some(), "429 without Retry-After"),
            s => panic!("a guess answered {s}: {}", r.text()),
        }
    }
    assert!(checked <= 5, "{checked} of 24 concurrent guesses had their password checked");
    // A new device from the guessing address must wait, and so must a login naming the
    // phone's device id without its proof; the officer's own phone gets in.
    api.try_login("officer2", PASSWORD, None).await.expect_error(429, "a new device while guesses are throttled");
    api.try_login("officer2", PASSWORD, Some("officer2-phone")).await.expect_error(429, "the phone's id without its proof");
    let r = api.try_login_proven("officer2", PASSWORD, "officer2-phone", &proof).await;
    assert_eq!(r.status, 200, "the proven phone: {}", r.text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_is_answered_in_time_and_everyone_gets_in() {
    const OFFICERS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), OFFICERS).await;
    let api = std::sync::Arc::new(Api::new(&server));
    let started = std::time::Instant::now();
    let logins: Vec<_> = (0..OFFICERS)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut slowest = std::time::Duration::ZERO;
                let mut busy = 0;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    let r = api.try_login(&format!("phone{i}"), PASSWORD, Some(&format!("storm-{i}"))).await;
                    slowest = slowest.max(t.elapsed());
                    match r.status {
                        200 => return (slowest, true, busy),
                        429 | 503 => {
                            busy += usize::from(r.status == 503);
                            let wait: u64 = r.retry_after.as_deref().expect("Retry-After").parse().unwrap();
                            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                        }
                        s => panic!("phone{i}: {s} {}", r.text()),
                    }
                }
                (slowest, false, busy)
            })
        })
        .collect();
    let mut slowest = std::time::Duration::ZERO;
    let mut busy = 0;
    for l in logins {
        let (s, ok, b) = l.await.unwrap();
        assert!(ok, "an officer never got in");
        slowest = slowest.max(s);
        busy += b;
    }
    eprintln!("{OFFICERS} logins at once: all in after {:?}; slowest answer {slowest:?}; {busy} answered 503 and came back", started.elapsed());
    // 300 at once from one address pass its share of the hashing queue: the busy answer, with
    // its Retry-After, is part of what this storm goes through.
    assert!(busy > 0, "no login was ever asked to come back");
    assert!(slowest < std::time::Duration::from_secs(30), "an answer took {slowest:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_refresh_tokens_are_throttled_and_not_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await;
    let entries = |r: Reply| r.json()["chain"]["entries"].as_u64().expect("the chain's length");
    let before = entries(api.get("/api/v1/audit", &admin.access).await);
    let mut throttled = false;
    for n in 0..40 {
        let r = api.refresh(&format!("made-up-refresh-token-{n}")).await;
        match r.status {
            401 => assert!(!throttled, "a 401 after a 429"),
            429 => {
                assert!(r.retry_after.is_some());
                throttled = true;
            }
            s => panic!("{s}"),
        }
    }
    assert!(throttled, "40 made-up refresh tokens were never throttled");
    assert_eq!(entries(api.get("/api/v1/audit", &admin.access).await), before, "unknown refresh tokens wrote audit entries");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_login_never_sends_anyone_off_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // The form's CSRF token comes with the login page.
    for next in ["/%09/evil.example", "//evil.example", "/%0a/evil.example", "/%5Cevil.example"] {
        let page = http.get(format!("{}/login?next={next}", server.url())).send().await.unwrap();
        let cookie = page.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().split(';').next().unwrap_or_default().to_string();
        let html = page.text().await.unwrap();
        let csrf = csrf_in(&html);
        let r = http
            .post(format!("{}/login", server.url()))
            .header("cookie", cookie)
            .form(&[("username", "district"), ("password", PASSWORD), ("csrf", csrf.as_str()), ("next", &urlencoding_decode(next))])
            .send()
            .await
            .unwrap();
        let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(r.status().is_redirection(), "{next}: {}", r.status());
        assert!(location.starts_with('/') && !location.starts_with("//") && location.bytes().all(|b| b.is_ascii_graphic()) && !location.contains("evil"), "{next} sent the browser to {location:?}");
    }
    server.stop().await;
}

/// `%XX` decoding of a query value (what the login page's form then posts back).
fn urlencoding_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_pulled_through_sync_by_district_staff_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let api = Api::new(&server);
    record_from_phone(&server.url(), &dir.path().join("officer1-phone"), "officer1", "04701").await;
    let mut staff = phone(&dir.path().join("district-phone"));
    staff.login(&server.url(), "district", PASSWORD, None).await.unwrap();
    assert_eq!(staff.sync(|_| {}).await.unwrap().pulled, 1);
    let audit = audit_text(&api).await;
    assert!(audit.contains("sync_pull") && audit.contains("047: 1 records"), "{audit}");
    // A commune officer's own syncs are not (they are the phone's normal work).
    let before = audit.matches("sync_pull").count();
    let mut officer = phone(&dir.path().join("officer-phone"));
    officer.login(&server.url(), "officer1b", PASSWORD, None).await.unwrap();
    officer.sync(|_| {}).await.unwrap();
    assert_eq!(audit_text(&api).await.matches("sync_pull").count(), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_asking_more_work_than_any_page_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let officer = api.login("officer1", None).await;
    // The same record twice (two merges for one record), and more records than any page holds.
    let (id, _) = push_request("04701");
    let doc = PushDoc { id, changes: vec![1, 2, 3], heads: vec![] };
    let twice = SyncRequest { push: vec![doc.clone(), doc], ..Default::default() };
    let (code, _) = api.sync(&officer.access, twice.encode()).await.expect_error(400, "a record pushed twice");
    assert_eq!(code, "bad_sync_message");
    let many = SyncRequest { want_full: (0..6000).map(|_| RecordId::random()).collect(), ..Default::default() };
    api.sync(&officer.access, many.encode()).await.expect_error(400, "6,000 records asked whole");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_phone_sessions_and_a_reused_refresh_cuts_access_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await;
    // A phished session, then the admin resets the password.
    let phished = api.login("officer2", Some("thief-phone")).await;
    let r = api.call("PATCH", "/api/v1/users/officer2", Some(&admin.access), Body::Json(&json!({"password": "a-new-password-2026"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (code, _) = api.refresh(&phished.refresh).await.expect_error(401, "a refresh token from before the reset");
    assert_eq!(code, "session_ended");
    api.get("/api/v1/me", &phished.access).await.expect_error(401, "an access token from before the reset");

    // A refresh token used twice: the family's live access token stops at once.
    let first = api.login("officer3", Some("officer3-phone")).await;
    let r = api.refresh(&first.refresh).await;
    let second_access = r.json()["access_token"].as_str().unwrap().to_string();
    let second_refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(api.refresh(&second_refresh).await.status, 200);
    api.refresh(&first.refresh).await.expect_error(401, "reuse");
    api.get("/api/v1/me", &second_access).await.expect_error(401, "an access token of a revoked family");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_only_their_own_subtree_and_roles_fit_levels() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&with_second_province(dir.path())).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await.access; // admin of province 04
    api.login("officer24", Some("phone-24")).await;
    let listed = api.get("/api/v1/users", &admin).await.text();
    assert!(listed.contains("officer1") && !listed.contains("officer24"), "{listed}");
    let body = |v: Value| Body::Json(Box::leak(Box::new(v)));
    for (method, path, b, status, what) in [
        ("PATCH", "/api/v1/users/officer24", Some(json!({"disabled": true})), 403, "disable another province's officer"),
        ("GET", "/api/v1/users/officer24/devices", None, 403, "list their devices"),
        ("POST", "/api/v1/users/officer24/devices/phone-24/revoke", None, 403, "revoke their device"),
        ("POST", "/api/v1/users", Some(json!({"username": "staff24", "password": "long-enough-pw", "role": "district_staff", "org_unit": "216"})), 403, "create staff in another province"),
        ("PATCH", "/api/v1/users/officer2", Some(json!({"org_unit": "21601"})), 403, "move one's officer into another province"),
        ("PUT", "/api/v1/targets/24/gbv_victims_supported", Some(json!({"2025": 0.5, "2030": 0.6})), 403, "set another province's target"),
        ("POST", "/api/v1/org-units", Some(json!({"code": "21602", "name": "x", "parent": "216"})), 403, "add a unit in another province"),
        ("POST", "/api/v1/org-units", Some(json!({"code": "25", "name": "x"})), 403, "add a province"),
        // Roles on the wrong level: an officer on a province code would sync the whole province.
        ("PATCH", "/api/v1/users/officer2", Some(json!({"org_unit": "04"})), 400, "an officer on a province"),
        ("POST", "/api/v1/users", Some(json!({"username": "staff2", "password": "long-enough-pw", "role": "district_staff", "org_unit": "04701"})), 400, "district staff on a commune"),
        ("POST", "/api/v1/users", Some(json!({"username": "prov2", "password": "long-enough-pw", "role": "province_staff", "org_unit": "047"})), 400, "province staff on a district"),
    ] {
        let r = api.call(method, path, Some(&admin), b.map(body).unwrap_or(Body::Empty)).await;
        r.expect_error(status, what);
    }
    // Inside the subtree, as before.
    let r = api.call("POST", "/api/v1/users", Some(&admin), Body::Json(&json!({"username": "staff047", "password": "long-enough-pw", "role": "district_staff", "org_unit": "047"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // officer24 is untouched.
    api.login("officer24", Some("phone-24")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_would_inflate_past_the_bound_is_refused_uninflated() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let officer = api.login("officer1", None).await;
    // An Automerge "compressed change" chunk of 1 GiB of zeros: about 1 MB on the wire.
    let chunk = compressed_zeros_chunk(1024);
    assert!(chunk.len() < MAX_MESSAGE_BYTES);
    let id = RecordId::random();
    let req = SyncRequest { push: vec![PushDoc { id, changes: chunk, heads: vec![[1; 32]] }], ..Default::default() };
    let started = std::time::Instant::now();
    let r = api.sync(&officer.access, req.encode()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = SyncResponse::decode(&r.bytes).unwrap();
    assert!(matches!(&resp.results[0].outcome, PushOutcome::Rejected { reason } if reason.contains("inflate")), "{:?}", resp.results);
    eprintln!("refused in {:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_phone_is_told_to_wipe() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let api = Api::new(&server);
    let store_dir = dir.path().join("phone");
    let mut c = phone(&store_dir);
    c.login(&server.url(), "officer1b", PASSWORD, None).await.unwrap();
    c.create(RecordKind::NewsItem, &news("04701")).unwrap();
    c.sync(|_| {}).await.unwrap();
    let admin = api.login("admin", None).await.access;
    let r = api.call("PATCH", "/api/v1/users/officer1b", Some(&admin), Body::Json(&json!({"disabled": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let err = c.sync(|_| {}).await.expect_err("sync of a disabled account");
    assert!(matches!(err, client_sdk::Error::AccountDisabled), "{err:?}");
    let left: Vec<_> = std::fs::read_dir(&store_dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the store still holds {left:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_moved_to_another_commune_keeps_none_of_the_old_communes_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let api = Api::new(&server);
    let url = server.url();
    let theirs = record_from_phone(&url, &dir.path().join("officer2-phone"), "officer2", "04702").await;
    let mut c = phone(&dir.path().join("phone"));
    c.login(&url, "officer1b", PASSWORD, None).await.unwrap();
    let old = c.create(RecordKind::NewsItem, &news("04701")).unwrap();
    c.sync(|_| {}).await.unwrap();
    let admin = api.login("admin", None).await.access;
    let r = api.call("PATCH", "/api/v1/users/officer1b", Some(&admin), Body::Json(&json!({"org_unit": "04702"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(matches!(c.sync(|_| {}).await, Err(client_sdk::Error::SessionExpired)));
    c.login(&url, "officer1b", PASSWORD, None).await.unwrap();
    c.sync(|_| {}).await.unwrap();
    let held: Vec<String> = c.ids(None).iter().map(|i| i.to_string()).collect();
    assert_eq!(held, vec![theirs], "the phone holds the new commune's records only (the old one's {old} is gone)");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_latency_histograms_to_an_admin_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let officer = api.login("officer1", None).await;
    assert_eq!(api.sync(&officer.access, SyncRequest::default().encode()).await.status, 200);
    api.get("/metrics", &officer.access).await.expect_error(403, "metrics for a commune officer");
    let admin = api.login("admin", None).await;
    let text = api.get("/metrics", &admin.access).await.text();
    // A login writes (its device, the audit): the write lock's hold time is measured.
    for series in ["gesync_sync_requests_total", "gesync_sync_seconds_bucket", "gesync_login_seconds_count", "gesync_write_lock_held_seconds_bucket", "gesync_password_checks_total"] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    server.stop().await;
}

/// Issue "Security, second review", item 1: an officer's account could fill the server's disk
/// with upload slices (a new device per login, one 16 MiB upload each, every slice rewriting
/// the whole upload, never expired, kept after revoke). Now: a resend costs nothing, an
/// account's uploads are bounded (503 `uploads_full`), devices per account are capped with a
/// clear error, and revoking or disabling drops the uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_slices_cannot_fill_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await.access;
    let cap = gesync_server::db::MAX_DEVICES_PER_ACCOUNT;
    let devices: Vec<String> = (0..cap).map(|i| format!("attacker-{i}")).collect();
    let mut tokens = Vec::new();
    for d in &devices {
        tokens.push(api.login("officer1", Some(d)).await.access);
    }
    // One more device is refused, naming the cap; the officer's own phones keep working.
    let r = api.try_login("officer1", PASSWORD, Some("attacker-extra")).await;
    let (code, message) = r.expect_error(403, "a device past the cap");
    assert_eq!(code, "too_many_devices");
    assert!(message.contains(&cap.to_string()), "{message}");
    api.login("officer1", Some(&devices[0])).await;
    // Sessions the server named (a script's API logins, browsers) make room for new ones: the
    // least recently seen is retired, never a phone.
    let first = api.login("district", None).await.access;
    // Devices are seen to the second: the first session is the least recently seen one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..cap {
        api.login("district", None).await;
    }
    let (code, _) = api.get("/api/v1/me", &first).await.expect_error(403, "a script session retired past the cap");
    assert_eq!(code, "device_revoked");

    // Slices of 3 MB of a 16 MiB upload from every device, never finished.
    let slice = |id: u8, offset: u64, len: usize| SyncRequest {
        push_part: Some(PushPart { id: RecordId([id; 16]), offset, total: MAX_UPLOAD_BYTES, bytes: vec![id; len], heads: vec![[id; 32]] }),
        ..Default::default()
    };
    let held = |token: &str, r: Reply| {
        assert_eq!(r.status, 200, "{token:.8}: {}", r.text());
        SyncResponse::decode(&r.bytes).unwrap().uploaded.unwrap().have
    };
    const MB3: usize = 3_000_000;
    let per_account = server.db.uploads().upload_limits().per_account;
    let mut stored = 0u64;
    let mut refused = None;
    'devices: for (i, t) in tokens.iter().enumerate() {
        for k in 0..4 {
            let r = api.sync(t, slice(i as u8, (k * MB3) as u64, MB3).encode()).await;
            if r.status == 503 {
                refused = Some(r);
                break 'devices;
            }
            assert_eq!(held(t, r), ((k + 1) * MB3) as u64);
            stored += MB3 as u64;
        }
    }
    let refused = refused.expect("the account's uploads are bounded");
    let (code, _) = refused.expect_error(503, "past the account's bound");
    assert_eq!(code, "uploads_full");
    assert!(refused.retry_after.is_some());
    assert_eq!(server.db.uploads().upload_bytes().unwrap(), stored);
    assert!(stored <= per_account, "{stored} > {per_account}");

    // Resending a slice already held, or one byte of it, stores nothing more.
    let size = || dir_size(&server.dir);
    let before = (server.db.uploads().upload_bytes().unwrap(), size());
    for _ in 0..10 {
        assert_eq!(held(&tokens[0], api.sync(&tokens[0], slice(0, 0, MB3).encode()).await), 4 * MB3 as u64);
        assert_eq!(held(&tokens[0], api.sync(&tokens[0], slice(0, 5, 1).encode()).await), 4 * MB3 as u64);
    }
    assert_eq!(server.db.uploads().upload_bytes().unwrap(), before.0);
    assert!(size() < before.1 + 4_000_000, "ten resends grew the store from {} to {} bytes", before.1, size());

    // Revoking a device drops its upload; disabling the account drops all of them.
    let r = api.call("POST", &format!("/api/v1/users/officer1/devices/{}/revoke", devices[0]), Some(&admin), Body::Empty).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(server.db.uploads().upload_bytes().unwrap(), stored - 4 * MB3 as u64);
    // The revoked device no longer counts: a new phone may log in.
    api.login("officer1", Some("new-phone")).await;
    let r = api.call("PATCH", "/api/v1/users/officer1", Some(&admin), Body::Json(&json!({"disabled": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.db.uploads().upload_bytes().unwrap(), 0);
    // Abandoned uploads expire (the server sweeps them at start and every few minutes).
    server.db.uploads().set_upload_limits(gesync_server::uploads::UploadLimits { max_age_secs: 0, ..server.db.uploads().upload_limits() });
    let r = api.call("PATCH", "/api/v1/users/officer1", Some(&admin), Body::Json(&json!({"disabled": false}))).await;
    assert_eq!(r.status, 200);
    let t = api.login("officer1", Some("new-phone")).await.access;
    assert_eq!(held(&t, api.sync(&t, slice(9, 0, 1000).encode()).await), 1000);
    assert_eq!(server.db.uploads().expire_uploads(now_secs() + 1).unwrap(), 1);
    assert_eq!(server.db.uploads().upload_bytes().unwrap(), 0);
    server.stop().await;
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).map(|e| if e.file_type().unwrap().is_dir() { dir_size(&e.path()) } else { e.metadata().unwrap().len() }).sum()
}

/// Issue "Security, second review", items 5 and 11: the audit log shows an admin only what
/// happened in their subtree (the admin of another province read every login of province 04
/// with addresses and devices), and listing conflicts through the API is audited as the page is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_scoped_and_conflict_listings_are_audited() {
    use gesync_server::model::{Role, User};
    let dir = tempfile::tempdir().unwrap();
    with_second_province(dir.path());
    {
        let db = gesync_server::open_db(dir.path()).unwrap();
        let hash = db.accounts().get_user("officer1").unwrap().unwrap().password_hash;
        db.accounts().put_user(&User { username: "admin24".into(), role: Role::Admin, org_unit: "216".into(), password_hash: hash, disabled: false, session_epoch: 0 }, true, None).unwrap();
    }
    let server = TestServer::start(dir.path()).await;
    let api = Api::new(&server);
    api.login("officer1", Some("phone-of-officer1")).await;
    api.login("officer24", None).await;
    let district = api.login("district", None).await.access;
    assert_eq!(api.get("/api/v1/conflicts?org_unit=047", &district).await.status, 200);
    let users_of = |r: &Reply| -> BTreeSet<String> { r.json()["entries"].as_array().unwrap().iter().map(|e| e["user"].as_str().unwrap().to_string()).collect() };
    let admin24 = api.login("admin24", None).await.access;
    let seen = api.get("/api/v1/audit", &admin24).await;
    assert_eq!(seen.status, 200);
    let users = users_of(&seen);
    assert!(users.contains("officer24") && users.contains("admin24"), "{users:?}");
    assert!(!users.contains("officer1") && !users.contains("district"), "another province's entries: {users:?}");
    assert!(!seen.text().contains("phone-of-officer1"));
    let admin = api.login("admin", None).await.access;
    let all = api.get("/api/v1/audit", &admin).await;
    let entries = all.json()["entries"].as_array().unwrap().clone();
    assert!(users_of(&all).contains("officer1") && !users_of(&all).contains("officer24"), "{:?}", users_of(&all));
    assert!(entries.iter().any(|e| e["user"] == "district" && e["action"] == "conflicts_list" && e["target"] == "047"), "the API's conflict listing is audited");
    server.stop().await;
}

/// Issue "Security, second review", item 10: behind a proxy that ends TLS, the server set no
/// HSTS and its cookies were not `Secure`. A trusted proxy's `X-Forwarded-Proto: https` now
/// makes both so; the same header from anyone else changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_cookies_are_secure_and_hsts_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = gesync_server::open_db(dir.path()).unwrap();
        tests::seed(&db, 0);
    }
    let bin = env!("CARGO_BIN_EXE_gesync-server-under-test");
    let spawn = |port: u16, trusted: bool| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["serve", "--data-dir", dir.path().to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}"), "--plain-http"]).env("GESYNC_LOG", "warn");
        if trusted {
            cmd.args(["--trusted-proxy", "127.0.0.1"]);
        }
        cmd.spawn().unwrap()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let get = |proto: Option<&'static str>| async move {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            let mut rb = http.get(format!("http://127.0.0.1:{port}/login"));
            if let Some(p) = proto {
                rb = rb.header("x-forwarded-proto", p);
            }
            if let Ok(r) = rb.send().await {
                let hsts = r.headers().get("strict-transport-security").is_some();
                let secure = r.headers().get_all("set-cookie").iter().all(|c| c.to_str().unwrap().contains("; Secure"));
                assert!(r.headers().get_all("set-cookie").iter().count() > 0);
                return (hsts, secure);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server did not start");
    };
    gesync_server::server::install_crypto_provider();
    let mut child = spawn(port, true);
    assert_eq!(get(Some("https")).await, (true, true), "a trusted proxy that ended TLS");
    assert_eq!(get(None).await, (false, false), "plain HTTP on loopback, no proxy header");
    let _ = child.kill();
    let _ = child.wait();
    let mut child = spawn(port, false);
    assert_eq!(get(Some("https")).await, (false, false), "the header from an address not trusted");
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue "Security, second review", item 9: the database URL can come from a file (no password
/// on a command line `ps` shows), and a URL parameter the driver would log verbatim is refused
/// by its name, its value never printed.
#[test]
fn the_database_password_stays_off_command_lines_and_out_of_errors() {
    let bin = env!("CARGO_BIN_EXE_gesync-server-under-test");
    let url = match tests::TestStore::postgres() {
        tests::TestStore::Postgres(u) => u,
        _ => unreachable!(),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let out = std::process::Command::new(bin).args(["admin", "new-epoch", "--database-url-file", file.to_str().unwrap()]).env("GESYNC_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("epoch"));
    let leaky = format!("{url}?pass=Pa55-in-the-url");
    std::fs::write(&file, &leaky).unwrap();
    let out = std::process::Command::new(bin).args(["admin", "new-epoch", "--database-url-file", file.to_str().unwrap()]).env("GESYNC_LOG", "debug").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(stderr.contains("`pass`"), "{stderr}");
    assert!(!stderr.contains("Pa55-in-the-url") && !stdout.contains("Pa55-in-the-url"), "{stderr}");
    let password = url.split_once("://").and_then(|(_, r)| r.split_once('@')).and_then(|(u, _)| u.split_once(':')).map(|(_, p)| p.to_string()).unwrap();
    assert!(!stderr.contains(&password));
}

/// Issue "Security, second review", item 6: the inflation bound was per record, so one request
/// of many records each just under it cost gigabytes of inflation. The request has a bound of
/// its own now: past it, the remaining records are refused without being inflated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_many_bombs_is_bounded_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let officer = api.login("officer1", None).await;
    // An Automerge "compressed change" chunk of 30 MiB of zeros: under the per-record bound.
    let chunk = compressed_zeros_chunk(30);
    let push: Vec<PushDoc> = (0..40).map(|_| PushDoc { id: RecordId::random(), changes: chunk.clone(), heads: vec![[1; 32]] }).collect();
    let req = SyncRequest { push, ..Default::default() };
    assert!(req.encode().len() < MAX_MESSAGE_BYTES);
    let r = api.sync(&officer.access, req.encode()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = SyncResponse::decode(&r.bytes).unwrap();
    let in_all = resp.results.iter().filter(|r| matches!(&r.outcome, PushOutcome::Rejected { reason } if reason.contains("in all"))).count();
    // 64 MiB for the request: two records of 30 MiB are looked at, the 38 others are not.
    assert_eq!(in_all, 38, "{:?}", resp.results.iter().map(|r| &r.outcome).collect::<Vec<_>>());
    assert!(resp.results.iter().all(|r| matches!(r.outcome, PushOutcome::Rejected { .. })));
    server.stop().await;
}

/// Issue "Security, second review", item 4: (a) five wrong passwords for one account from each
/// of four places held it shut for the owner's right password from a new phone elsewhere;
/// (b) five wrong passwords naming the officer's own device id (no secret: admins see it in
/// the audit) held the officer's phone back for a minute. Now a new place has a narrow lane of
/// its own, and only the device's proof (given at its last login) earns the device's exemption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_from_elsewhere_hold_back_neither_a_new_phone_nor_the_officers_proven_phone() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let home = Api::from_address(&server, [127, 0, 0, 10]);
    let proof = home.device_proof("officer3", "officer3-phone").await;
    // (a) Four places, five guesses each; the sixth from any of them waits.
    for place in 11..=14 {
        let api = Api::from_address(&server, [127, 0, 0, place]);
        for n in 0..5 {
            api.try_login("officer2", &format!("wrong-password-{n}"), None).await.expect_error(401, "a guess");
        }
        api.try_login("officer2", PASSWORD, None).await.expect_error(429, "a sixth try from a guessing place");
    }
    let r = Api::from_address(&server, [127, 0, 0, 20]).try_login("officer2", PASSWORD, Some("officer2-new-phone")).await;
    assert_eq!(r.status, 200, "the owner's new phone from a new place: {}", r.text());
    // (b) Five guesses naming officer3's phone, without its proof, from one place.
    let guesser = Api::from_address(&server, [127, 0, 0, 30]);
    for n in 0..5 {
        guesser.try_login("officer3", &format!("wrong-password-{n}"), Some("officer3-phone")).await.expect_error(401, "a guess naming the phone");
    }
    guesser.try_login("officer3", PASSWORD, Some("officer3-phone")).await.expect_error(429, "the phone's id without its proof");
    // The phone itself, with its proof, from elsewhere and even from the guesser's address.
    let r = Api::from_address(&server, [127, 0, 0, 31]).try_login_proven("officer3", PASSWORD, "officer3-phone", &proof).await;
    assert_eq!(r.status, 200, "the proven phone elsewhere: {}", r.text());
    let r = guesser.try_login_proven("officer3", PASSWORD, "officer3-phone", &proof).await;
    assert_eq!(r.status, 200, "the proven phone behind the guesser's address: {}", r.text());
    // A proof is for its own account and device only.
    guesser.try_login_proven("officer3", PASSWORD, "another-phone", &proof).await.expect_error(429, "a proof shown for another device");
    server.stop().await;
}

/// Issue "Security, second review", item 7: the per-address score was charged only after
/// hashing, so 500 made-up names from one address were all let into the hashing queue (296
/// answered 503) and an officer elsewhere waited behind them. Now one address holds at most a
/// few places in the queue, and its failures are charged on admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_of_names_from_one_address_is_stopped_before_it_is_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let admin = Api::new(&server).login("admin", None).await;
    let sprayer = std::sync::Arc::new(Api::from_address(&server, [127, 0, 0, 40]));
    let spray: Vec<_> = (0..500)
        .map(|n| {
            let api = sprayer.clone();
            tokio::spawn(async move { api.try_login(&format!("made.up.{n}"), "wrong-password-1", None).await })
        })
        .collect();
    let officer = Api::from_address(&server, [127, 0, 0, 41]);
    let r = officer.try_login("officer2", PASSWORD, Some("officer2-phone")).await;
    assert_eq!(r.status, 200, "an officer elsewhere during the spray: {}", r.text());
    let mut answers = BTreeMap::new();
    for s in spray {
        let r = s.await.unwrap();
        if r.status != 401 {
            assert!(r.retry_after.is_some(), "{} without Retry-After", r.status);
        }
        *answers.entry(r.status).or_insert(0) += 1;
    }
    let hashed = officer.metric(&admin, "gesync_password_checks_total").await;
    eprintln!("500 names from one address: answers {answers:?}, passwords hashed {hashed}");
    assert!(answers.keys().all(|s| [401, 429, 503].contains(s)), "{answers:?}");
    assert!(hashed <= 120, "{hashed} passwords hashed for one address's spray (and the officer's)");
    // Sequential guesses from the address run into its score, charged on admission.
    let mut refused = false;
    for n in 0..120 {
        let r = sprayer.try_login(&format!("later.{n}"), "wrong-password-1", None).await;
        if r.status == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "120 more names after the spray were never refused");
    server.stop().await;
}

/// A storm of syncs (every phone at the same instant) is worked on a few at a time: the rest
/// wait for a permit holding only their body, not a thread with their merged documents (with
/// 1,000 phones that was hundreds of threads and 841 MiB). Every sync is still answered, and
/// every record kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_syncs_is_worked_on_a_few_at_a_time_and_all_answered() {
    let permits = gesync_server::api::sync_work_permits();
    // Three syncs for each permit, four at once per phone (its account's limit).
    let phones = (3 * permits).div_ceil(gesync_server::api::SYNCS_PER_USER);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), phones).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await;
    let mut tokens = Vec::new();
    for i in 0..phones {
        tokens.push(api.login(&format!("phone{i}"), Some(&format!("storm-{i}"))).await.access);
    }
    let mut storm = tokio::task::JoinSet::new();
    for token in tokens.iter().flat_map(|t| std::iter::repeat_n(t, gesync_server::api::SYNCS_PER_USER)) {
        let (api, token) = (Api::new(&server), token.clone());
        storm.spawn(async move {
            let (id, body) = push_request("04701");
            (id, api.sync(&token, body).await.status)
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = storm.join_next().await {
        answers.push(answer.unwrap());
    }
    assert!(answers.iter().all(|(_, status)| *status == 200), "statuses: {:?}", answers.iter().map(|(_, s)| s).collect::<Vec<_>>());
    let peak = api.metric(&admin, "gesync_syncs_working_peak").await;
    assert!(peak >= 1 && peak as usize <= permits, "{peak} syncs worked on at once, {permits} permits");
    assert_eq!(api.metric(&admin, "gesync_syncs_working").await, 0);
    let district = api.login("district", None).await.access;
    let stored = api.record_ids(&district, "04701").await;
    for (id, _) in &answers {
        assert!(stored.contains(&id.to_string()), "record {id} of the storm is not stored");
    }
    server.stop().await;
}

/// A login whose user name cannot be an account is refused without hashing anything (it is not
/// even kept as a throttle key); a name that is no account costs a hash like any other, so the
/// time taken does not say which names exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_user_name_is_refused_before_any_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let admin = api.login("admin", None).await;
    let before = api.metric(&admin, "gesync_password_checks_total").await;
    for name in ["Mật khẩu bí mật 2025!", "../admin", "a b", "", &"x".repeat(200)] {
        api.try_login(name, "wrong-password-1", None).await.expect_error(401, "a malformed name");
    }
    assert_eq!(api.metric(&admin, "gesync_password_checks_total").await, before, "a malformed name was hashed");
    api.try_login("not.an.account", "wrong-password-1", None).await.expect_error(401, "an unknown account");
    assert_eq!(api.metric(&admin, "gesync_password_checks_total").await, before + 1, "an unknown account is hashed like a known one");
    server.stop().await;
}

/// Issue "Security, second review", item 2: from a backup, the audit entries after 100 were
/// deleted with their checkpoints (no key needed) and the restored log verified as valid. The
/// store alone still cannot tell a log cut that way from a shorter one; the checkpoint the
/// server wrote outside it, to the `--audit-witness` file, can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_cut_with_its_checkpoints_shows_against_the_witness_file() {
    use gesync_server::db::AuditEvent;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    {
        let db = gesync_server::open_db(&data).unwrap();
        tests::seed(&db, 0);
        for i in 0..700 {
            db.audit_log().audit(AuditEvent { user: "admin".into(), device_id: None, action: "test", target: format!("entry {i}") }).unwrap();
        }
    }
    let witness = dir.path().join("audit.witness");
    let bin = env!("CARGO_BIN_EXE_gesync-server-under-test");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let serve = |with_witness: bool, log: &str| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["serve", "--data-dir", data.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}"), "--plain-http"]).env("GESYNC_LOG", "info");
        if with_witness {
            cmd.args(["--audit-witness", witness.to_str().unwrap()]);
        }
        cmd.stderr(std::fs::File::create(dir.path().join(log)).unwrap()).stdout(std::process::Stdio::null());
        let child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the server did not start");
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        child
    };
    let chain = || async {
        gesync_server::server::install_crypto_provider();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let login: Value = http.post(format!("{base}/api/v1/auth/login")).json(&json!({"username": "admin", "password": PASSWORD})).send().await.unwrap().json().await.unwrap();
        let token = login["access_token"].as_str().expect("an admin's login").to_string();
        let audit: Value = http.get(format!("{base}/api/v1/audit?limit=1")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        audit["chain"].clone()
    };
    // The server writes the newest checkpoint out of the store as it runs.
    let mut child = serve(true, "first.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(&witness).unwrap_or_default();
        if let Some(line) = text.lines().last() {
            break line.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint reached the witness file");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let witnessed: u64 = line.split(' ').next().unwrap().parse().unwrap();
    assert!(witnessed >= 640, "{line}");
    let c = chain().await;
    assert_eq!(c["valid"], true, "{c}");
    assert_eq!(c["checkpoint"]["entries"], witnessed, "{c}");
    assert_eq!(c["witness"]["entries"], witnessed, "{c}");
    assert!(std::fs::read_to_string(dir.path().join("first.log")).unwrap().contains("audit checkpoint"), "the checkpoint is in the log too");
    let _ = child.kill();
    let _ = child.wait();

    // The cut: every entry past 100 and every checkpoint past it, as someone with the store
    // (or a backup of it) and without the key can do.
    {
        let db = gesync_server::open_db(&data).unwrap();
        let mut b = gesync_server::store::Batch::default();
        for (k, _) in db.kv().range(b"a/", b"a0", usize::MAX).unwrap() {
            if u64::from_be_bytes(k[2..10].try_into().unwrap()) > 100 {
                b.delete(k);
            }
        }
        for (k, _) in db.kv().range(b"ac/", b"ac0", usize::MAX).unwrap() {
            if u64::from_be_bytes(k[3..11].try_into().unwrap()) > 100 {
                b.delete(k);
            }
        }
        db.commit(b).unwrap();
    }
    // Without the witness, the shorter log verifies: the store alone cannot tell.
    let mut child = serve(false, "blind.log");
    assert_eq!(chain().await["valid"], true);
    let _ = child.kill();
    let _ = child.wait();
    // With it, the log is broken where it was cut, at start (in the log) and for the admin.
    let mut child = serve(true, "second.log");
    let c = chain().await;
    assert_eq!(c["valid"], false, "{c}");
    assert!(c["broken_at"].as_u64().unwrap() <= witnessed, "{c}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
        if log.contains("does not reach the checkpoint in its witness file") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no error at start: {log}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The SDK keeps the device proof a login gives and shows it at the next password login: five
/// wrong guesses naming the phone's device id from the phone's own address do not hold the
/// phone back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_keeps_its_device_proof_and_is_not_held_back_by_guesses_naming_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let mut client = phone(&dir.path().join("phone"));
    client.login(&server.url(), "officer2", PASSWORD, None).await.unwrap();
    let device = client.store().device_id().to_string();
    assert!(client.store().device_proof().is_some_and(|p| p.len() == 32), "the proof is kept");
    for n in 0..5 {
        api.try_login("officer2", &format!("wrong-password-{n}"), Some(&device)).await.expect_error(401, "a guess naming the phone");
    }
    api.try_login("officer2", PASSWORD, Some(&device)).await.expect_error(429, "the phone's id without its proof");
    client.login(&server.url(), "officer2", PASSWORD, None).await.expect("the phone, with its proof, from the same address");
    server.stop().await;
}

/// The records dictionary over HTTP: a request made with it is read; the answer to a phone
/// that accepts it says so and, compressed, is made with it; a body that claims it but was made
/// with another dictionary, or a bomb made with it, is refused with a JSON error, and the
/// server answers the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_bodies_made_with_the_records_dictionary_are_read_and_false_ones_refused() {
    use sync_protocol::wire::{Framing, FLAG_RECORDS_DICT, FLAG_ZSTD, FRAME_RECORDS_DICT, RECORDS_DICT};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let officer = api.login("officer1", None).await;
    let push: Vec<PushDoc> = (0..20)
        .map(|i| {
            let mut d = sync_protocol::doc::new_record(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-03-01", "title": format!("Tin {i}")}), automerge::ActorId::random()).unwrap();
            PushDoc { id: RecordId::random(), changes: sync_protocol::doc::save_record(&mut d), heads: sync_protocol::heads_to_wire(&d.get_heads()) }
        })
        .collect();
    let req = SyncRequest { push, accept: FLAG_ZSTD | FLAG_RECORDS_DICT, ..Default::default() };
    let body = req.encode_as(Framing::ZSTD_DICT);
    assert_eq!(body[5], FLAG_ZSTD | FRAME_RECORDS_DICT, "20 records compress");
    let r = api.sync(&officer.access, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (resp, framing) = SyncResponse::decode_framed(&r.bytes).unwrap();
    assert!(framing.dict, "the answer says the server has the dictionary");
    assert_eq!(resp.results.len(), 20);
    assert!(resp.results.iter().all(|r| r.outcome == PushOutcome::Accepted), "{:?}", resp.results);
    // A new phone's first sync: the twenty records come compressed with the dictionary.
    let other = api.login("officer1b", None).await;
    let first = SyncRequest { accept: FLAG_ZSTD | FLAG_RECORDS_DICT, ..Default::default() };
    let r = api.sync(&other.access, first.encode()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.bytes[5], FLAG_ZSTD | FRAME_RECORDS_DICT);
    assert_eq!(SyncResponse::decode(&r.bytes).unwrap().pull.len(), 20);
    // Without the flag, the same answer comes without the dictionary.
    let r = api.sync(&other.access, SyncRequest { accept: FLAG_ZSTD, ..Default::default() }.encode()).await;
    assert_eq!(r.bytes[5], FLAG_ZSTD);
    // Made with another dictionary (another id), flagged as the records dictionary.
    let mut forged_dict = RECORDS_DICT.to_vec();
    forged_dict[4] ^= 1;
    let payload = &SyncRequest::default().encode()[6..];
    let packed = zstd::bulk::Compressor::with_dictionary(3, &forged_dict).unwrap().compress(payload).unwrap();
    let forged = [b"GSYN".as_slice(), &[3, FLAG_ZSTD | FRAME_RECORDS_DICT], &packed].concat();
    let (code, message) = api.sync(&officer.access, forged).await.expect_error(400, "a frame made with another dictionary");
    assert_eq!(code, "bad_sync_message");
    assert!(message.contains("zstd"), "{message}");
    // A bomb made with the dictionary: refused at the page's bound.
    let bomb = zstd::bulk::Compressor::with_dictionary(19, RECORDS_DICT).unwrap().compress(&vec![0u8; MAX_MESSAGE_BYTES + 4096]).unwrap();
    let bomb = [b"GSYN".as_slice(), &[3, FLAG_ZSTD | FRAME_RECORDS_DICT], &bomb].concat();
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let (code, message) = api.sync(&officer.access, bomb).await.expect_error(400, "a bomb made with the dictionary");
    assert_eq!(code, "bad_sync_message");
    assert!(message.contains("inflates"), "{message}");
    let r = api.sync(&officer.access, SyncRequest::default().encode()).await;
    assert_eq!(r.status, 200, "the server goes on: {}", r.text());
    server.stop().await;
}

/// A phone that asks is told the server's time on its exchange (it measures its link without
/// it); one that does not ask is told nothing. `/metrics` counts the syncs of phones that
/// measured their link as slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_tells_its_time_to_phones_that_ask_and_counts_slow_links() {
    use sync_protocol::wire::{FLAG_SERVER_TIME, FLAG_SLOW_LINK, FLAG_ZSTD, FRAME_SERVER_TIME};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(dir.path(), 0).await;
    let api = Api::new(&server);
    let officer = api.login("officer1", None).await;
    let (_, push) = push_request("04701");
    let mut req = SyncRequest::decode(&push).unwrap();
    req.accept = FLAG_ZSTD | FLAG_SERVER_TIME | FLAG_SLOW_LINK;
    let r = api.sync(&officer.access, req.encode()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.bytes[5] & FRAME_SERVER_TIME, FRAME_SERVER_TIME);
    let (resp, framing) = SyncResponse::decode_framed(&r.bytes).unwrap();
    assert_eq!(resp.results.len(), 1);
    assert!(framing.server_ms.is_some_and(|ms| ms < 60_000), "{framing:?}");
    let r = api.sync(&officer.access, SyncRequest { accept: FLAG_ZSTD, ..Default::default() }.encode()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(SyncResponse::decode_framed(&r.bytes).unwrap().1.server_ms, None, "not asked, not told");
    let admin = api.login("admin", None).await;
    let metrics = api.get("/metrics", &admin.access).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().lines().any(|l| l == "gesync_sync_slow_link_requests_total 1"), "{}", metrics.text());
    server.stop().await;
}
