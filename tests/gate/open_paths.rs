//! Open and optional prefixes cannot be stretched over other paths: every spelling that
//! some upstream reads as a path outside the prefix is judged protected, over real HTTP.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use jwt_gate::JwtAuthLayer;

/// Paths under the open prefix `/static` that servlet containers, IIS, nginx or lax decoders
/// read as `/admin/users`, each caught by one check alone (a comment names it).
pub const BYPASSES: &[&str] = &[
    "/static/../admin/users",           // dot segment
    "/static/..;/admin/users",          // `;` path parameter
    "/static/%2e%2e/admin/users",       // encoded `.`
    "/static/..%2fadmin/users",         // encoded `/`
    "/static/..%5cadmin/users",         // encoded `\`
    "/static/%252e%252e/admin/users",   // double encoding (`%25`)
    "/static/%u002e%u002e/admin/users", // `%u` escape (not hex)
    "/static/%c0%ae%c0%ae/admin/users", // overlong UTF-8 (non-ASCII escape)
    "/static/.../admin/users",          // dots only (trimmed by IIS)
    "/static/..\\admin/users",          // `\` read as `/`
];

/// A raw request line for `path`, which no client library would send as is.
pub fn raw_get(path: &str, token: Option<&str>) -> Vec<u8> {
    let authorization = token.map_or_else(String::new, |token| {
        format!("authorization: Bearer {token}\r\n")
    });
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n{authorization}connection: close\r\n\r\n")
        .into_bytes()
}

/// Serves `layer` in front of a handler that counts what reaches it.
async fn serve_counting(layer: JwtAuthLayer, hits: Arc<AtomicUsize>) -> SocketAddr {
    let handler = tower::service_fn(move |_request: Request<hyper::body::Incoming>| {
        hits.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    });
    common::serve_over_hyper(tower::ServiceBuilder::new().layer(layer).service(handler)).await
}

#[tokio::test]
async fn no_spelling_stretches_an_open_or_optional_prefix() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = JwtAuthLayer::from_keys(common::keys())
        .open_prefix("/static")
        .optional_prefix("/public");
    let addr = serve_counting(layer, hits.clone()).await;
    for open in BYPASSES {
        let optional = open.replacen("/static", "/public", 1);
        for path in [*open, optional.as_str()] {
            let status = common::raw_status(addr, &raw_get(path, None)).await;
            assert_eq!(status, 401, "{path} was not judged protected");
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Canonical paths are still open, an escaped space included; and a protected-looking
    // path is served with a token.
    for path in ["/static/a%20b", "/static/app.js", "/public/a%20b"] {
        assert_eq!(
            common::raw_status(addr, &raw_get(path, None)).await,
            200,
            "{path}"
        );
    }
    let token = common::token(&common::keys(), "alice");
    let status = common::raw_status(addr, &raw_get(BYPASSES[1], Some(&token))).await;
    assert_eq!(status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_protected_carve_out_holds_its_windows_and_format_spellings() {
    // Under an open `/static`, `/static/private` is protected. Windows' file APIs (IIS,
    // ASP.NET Core or Express static files on Windows) serve `/static/private./report.pdf`
    // and `/static/private%20/report.pdf` from `static\private`, and `/docs/secret.html.` as
    // `secret.html`; Rails and Django REST serve `/docs/drafts.json` as `/docs/drafts`. Each
    // needs the carve-out's token.
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = JwtAuthLayer::from_keys(common::keys())
        .open_prefix("/static")
        .protect_prefix("/static/private")
        .open_prefix("/docs")
        .protect_path("/docs/drafts")
        .protect_path("/docs/secret.html");
    let addr = serve_counting(layer, hits.clone()).await;
    for path in [
        "/static/private./report.pdf",
        "/static/private../report.pdf",
        "/static/private%20/report.pdf",
        "/static/Private./report.pdf",
        "/docs/drafts.json",
        "/docs/drafts.xml",
        "/docs/secret.html.",
        "/docs/secret.html%20",
    ] {
        let status = common::raw_status(addr, &raw_get(path, None)).await;
        assert_eq!(status, 401, "{path} was not judged protected");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Their neighbours stay open.
    for path in [
        "/static/privately/x",
        "/static/app.js",
        "/docs/drafting.json",
        "/docs/a.b",
    ] {
        let status = common::raw_status(addr, &raw_get(path, None)).await;
        assert_eq!(status, 200, "{path}");
    }
}
