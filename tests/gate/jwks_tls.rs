//! HTTPS built in (feature `rustls`): discovery and the JWKS over TLS from a server on
//! 127.0.0.1 whose certificate a test CA, made at test time, signed.

use crate::common;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use jwt_gate::{Claims, JwksError, JwtAuthLayer, Keys, RemoteJwks};
use serde_json::json;

use crate::common::tls::{self, TestCa};

/// An issuer over HTTPS on 127.0.0.1, its certificate signed by `ca`: its metadata and JWKS.
async fn tls_issuer(ca: &TestCa, keys: Keys) -> SocketAddr {
    let (listener, addr) = tls::bind().await;
    let issuer = format!("https://{addr}");
    let metadata = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let router = common::provider_routes("/.well-known/openid-configuration", metadata, keys);
    tls::serve_tls(listener, router, ca.server_certificate().server_config(&[]));
    addr
}

fn issuer_keys() -> Keys {
    Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap()
}

#[tokio::test]
async fn https_discovery_and_jwks_work_with_the_built_in_client() {
    let ca = TestCa::new();
    let ca_pem = ca.pem.clone();
    let keys = issuer_keys();
    let addr = tls_issuer(&ca, keys.clone()).await;
    let issuer = format!("https://{addr}");
    let remote = RemoteJwks::discover(&issuer)
        .root_certificates_pem(ca_pem)
        .start()
        .await
        .unwrap();
    assert_eq!(remote.issuer(), Some(issuer.as_str()));
    let gate = common::serve(
        Router::new()
            .route("/me", get(|claims: Claims| async move { claims.sub }))
            .layer(JwtAuthLayer::from_keys(remote.keys().clone())),
    )
    .await;
    let now = common::now();
    let token = keys
        .sign(&Claims::new("alice", now, now + 600).with_issuer(&issuer))
        .unwrap();
    let answer = common::get(gate, "/me", Some(&token)).await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "alice")
    );
}

#[tokio::test]
async fn a_certificate_no_trusted_ca_signed_is_refused() {
    let ca = TestCa::new();
    let addr = tls_issuer(&ca, issuer_keys()).await;
    // The webpki roots (the default) do not know the test CA...
    let error = RemoteJwks::discover(format!("https://{addr}"))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, JwksError::Unreachable(_)), "{error:?}");
    // ...nor does another CA.
    let other_pem = TestCa::new().pem;
    let error = RemoteJwks::builder(format!("https://{addr}/jwks"))
        .root_certificates_pem(other_pem)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, JwksError::Unreachable(_)), "{error:?}");
}

#[tokio::test]
async fn unusable_root_certificates_are_an_error_at_start() {
    let error = RemoteJwks::builder("https://127.0.0.1:1/jwks")
        .root_certificates_pem("not a certificate")
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        error,
        JwksError::Tls("no certificate in the PEM given".into())
    );
}
