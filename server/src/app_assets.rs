//! The officer's app at `/app/`: the files of `app/` (the page, its script and style, the
//! service worker, the web manifest, the icons) and the WebAssembly module with its glue
//! (`app/pkg/`, built by `scripts/build-app.sh` and committed), embedded in the binary so that
//! every `serve` and `demo` has them with nothing else installed.
//!
//! Each file is answered with an `ETag` (a `304` when the browser has it) and `no-cache`, so the
//! service worker and the browser always check for a new version when online and use the one
//! they hold when not. Browsers that take gzip get it (the module is a third of its size then).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// (path under `/app/`, content type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../app/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../app/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../app/style.css")),
    ("sw.js", "text/javascript; charset=utf-8", include_bytes!("../../app/sw.js")),
    ("manifest.webmanifest", "application/manifest+json", include_bytes!("../../app/manifest.webmanifest")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../app/icon.svg")),
    ("icon-192.png", "image/png", include_bytes!("../../app/icon-192.png")),
    ("icon-512.png", "image/png", include_bytes!("../../app/icon-512.png")),
    ("pkg/client_wasm.js", "text/javascript; charset=utf-8", include_bytes!("../../app/pkg/client_wasm.js")),
    ("pkg/client_wasm_bg.wasm", "application/wasm", include_bytes!("../../app/pkg/client_wasm_bg.wasm")),
];

/// The app's pages may run its WebAssembly (`wasm-unsafe-eval`), talk to this server only,
/// and nothing else.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; img-src 'self' data:; style-src 'self'; manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'; form-action 'self'";

struct Prepared {
    etag: String,
    gzip: Vec<u8>,
}

fn prepared() -> &'static Vec<Prepared> {
    static CELL: OnceLock<Vec<Prepared>> = OnceLock::new();
    CELL.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, bytes)| {
                use std::io::Write;
                let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                z.write_all(bytes).expect("gzip into memory");
                let gzip = z.finish().expect("gzip into memory");
                let etag = format!("\"{}\"", hex::encode(&Sha256::digest(bytes)[..12]));
                Prepared { etag, gzip }
            })
            .collect()
    })
}

/// Bytes of the whole app as a first visit downloads it gzipped (README's figure).
pub fn first_visit_gzip_bytes() -> usize {
    prepared().iter().zip(FILES).filter(|(_, (path, _, _))| *path != "icon-512.png").map(|(p, _)| p.gzip.len()).sum()
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route("/app/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route("/app/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }))
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(p, _, _)| *p == path) else {
        return crate::error::AppError::not_found("no such file in the app").into_response();
    };
    let (_, content_type, bytes) = FILES[i];
    let p = &prepared()[i];
    let mut out = HeaderMap::new();
    out.insert(header::ETAG, HeaderValue::from_str(&p.etag).expect("an ETag is ASCII"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if content_type.starts_with("text/html") {
        out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    if path == "sw.js" {
        // The worker controls all of /app/.
        out.insert("service-worker-allowed", HeaderValue::from_static("/app/"));
    }
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == p.etag)) {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let gzip = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if gzip && p.gzip.len() < bytes.len() {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return (out, p.gzip.clone()).into_response();
    }
    (out, bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_service_worker_caches_is_served() {
        let sw = std::str::from_utf8(FILES.iter().find(|f| f.0 == "sw.js").unwrap().2).unwrap();
        let list = &sw[sw.find("const SHELL = [").unwrap()..];
        let list = &list[..list.find("];").unwrap()];
        for name in list.split('\'').skip(1).step_by(2) {
            let name = name.trim_start_matches("./");
            assert!(name.is_empty() || FILES.iter().any(|f| f.0 == name), "{name} is cached by the worker but not served");
        }
        let small = first_visit_gzip_bytes();
        assert!(small > 100_000, "{small}: the module is in it");
    }
}
