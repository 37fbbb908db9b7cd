//! TLS on both sides of `jwt-gate proxy`, with a test CA made at test time: an `https://`
//! upstream (its CA from `[upstream_options] ca_file`), and TLS termination from
//! `[tls] cert_file`/`key_file`, HTTP/2 or HTTP/1.1 by ALPN.

use std::net::SocketAddr;

use axum::http::{HeaderMap, Version};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::tls::{self, TestCa};
use crate::{jwt_gate, mint, run, start, stderr, TempDir};

/// What an upstream saw: the `x-auth-sub` and `x-forwarded-proto` it received, and the HTTP
/// version the proxy spoke.
async fn seen(version: Version, headers: HeaderMap) -> Json<serde_json::Value> {
    let header = |name| headers.get(name).map(|value| value.to_str().unwrap());
    Json(serde_json::json!({
        "sub": header("x-auth-sub"),
        "proto": header("x-forwarded-proto"),
        "version": format!("{version:?}"),
    }))
}

/// An HTTPS upstream whose certificate `ca` signed, offering h2 and http/1.1, answering
/// with what it [`seen`].
async fn https_upstream(ca: &TestCa) -> SocketAddr {
    let (listener, addr) = tls::bind().await;
    let config = ca.server_certificate().server_config(&[b"h2", b"http/1.1"]);
    tls::serve_tls(listener, Router::new().fallback(get(seen)), config);
    addr
}

/// `GET https://<addr><path>` trusting only `ca_pem`, offering `alpn`, with `token`.
async fn https_get(
    addr: SocketAddr,
    path: &str,
    ca_pem: &str,
    http2: bool,
    token: Option<&str>,
) -> Result<(StatusCode, Version, Bytes), String> {
    let builder =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls::client_config(ca_pem));
    let connector = if http2 {
        builder.https_only().enable_http2().build()
    } else {
        builder.https_only().enable_http1().build()
    };
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = http::Request::get(format!("https://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|error| format!("{error:?}"))?;
    let (status, version) = (response.status(), response.version());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, version, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_is_reached_when_its_ca_is_trusted_and_refused_otherwise() {
    let ca = TestCa::new();
    let upstream = https_upstream(&ca).await;
    let dir = TempDir::new("https-upstream");
    dir.write("ca.pem", &ca.pem);
    let trusting = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"https://{upstream}\"\nallow_dev_tokens = true\n\n[upstream_options]\nca_file = \"ca.pem\"\n"
        ),
    );
    let gate = start(&trusting, "proxy");
    let token = mint(&trusting, "alice");
    let answer = crate::common::get(gate.addr, "/orders", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json()["sub"], "alice");
    // The upstream offered h2 by ALPN, and the proxy took it.
    assert_eq!(answer.json()["version"], "HTTP/2.0");
    assert_eq!(
        crate::common::get(gate.addr, "/orders", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Without the CA, the webpki roots do not know the upstream's certificate: 502.
    let default_roots = dir.write(
        "default.toml",
        &format!("upstream = \"https://{upstream}\"\n"),
    );
    let gate = start(&default_roots, "proxy");
    let answer = crate::common::get(gate.addr, "/orders", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_terminates_tls_with_h2_and_http1_by_alpn() {
    let ca = TestCa::new();
    let certificate = ca.server_certificate();
    let upstream = crate::common::serve(Router::new().fallback(get(seen))).await;
    let dir = TempDir::new("tls");
    dir.write("cert.pem", &certificate.certificate_pem);
    dir.write("key.pem", &certificate.key_pem);
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\nallow_dev_tokens = true\n\n[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n"
        ),
    );
    let gate = start(&config, "proxy");
    assert!(gate.line.contains("https://"), "{}", gate.line);
    let token = mint(&config, "alice");

    for (http2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let (status, seen, body) = https_get(gate.addr, "/orders", &ca.pem, http2, Some(&token))
            .await
            .unwrap();
        assert_eq!((status, seen), (StatusCode::OK, version));
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["sub"], "alice");
        assert_eq!(
            seen["proto"], "https",
            "the client's scheme, not the upstream's"
        );
        let (status, _, _) = https_get(gate.addr, "/orders", &ca.pem, http2, None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    // A client trusting another CA refuses the proxy's certificate.
    let other = TestCa::new();
    let refused = https_get(gate.addr, "/orders", &other.pem, true, Some(&token)).await;
    assert!(refused.is_err(), "{refused:?}");
    // Plain HTTP on the TLS port gets no HTTP answer: at most a TLS alert, then the close.
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"GET /orders HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(closed.is_ok(), "the connection was not closed");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}

/// `jwt-gate proxy` with `[tls]` naming `key_file`, beside a `cert.pem` that is none:
/// its exit status and error line.
fn refused_with_key_file(dir: &TempDir, key_file: &str) -> (Option<i32>, String) {
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://127.0.0.1:1\"\n\n[tls]\ncert_file = \"cert.pem\"\nkey_file = \"{key_file}\"\n"
        ),
    );
    let config = config.to_str().unwrap();
    let output = run(
        jwt_gate(),
        &["--config", config, "proxy", "--listen", "127.0.0.1:0"],
    );
    (output.status.code(), stderr(&output))
}

#[test]
fn unusable_tls_files_are_refused_at_start_naming_the_key() {
    let dir = TempDir::new("tls-bad");
    dir.write("cert.pem", "not a certificate\n");
    let (status, error) = refused_with_key_file(&dir, "missing.pem");
    assert_eq!(status, Some(2), "{error}");
    assert!(error.contains("gate.toml:5:"), "{error}");
    assert!(error.contains("key `tls.key_file`"), "{error}");
    assert!(error.contains("missing.pem"), "{error}");

    dir.write(
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let (status, error) = refused_with_key_file(&dir, "key.pem");
    assert_eq!(status, Some(2), "{error}");
    assert!(error.contains("key `tls.cert_file`"), "{error}");
    assert!(error.contains("certificate"), "{error}");
}
