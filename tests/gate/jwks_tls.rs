//! HTTPS built in (feature `rustls`): discovery and the JWKS over TLS from a server on
//! 127.0.0.1 whose certificate a test CA, made at test time, signed.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use jwt_gate::{Claims, JwksError, JwtAuthLayer, Keys, RemoteJwks};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA: its certificate (PEM) and what signs with it.
fn test_ca() -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), Issuer::new(params, key))
}

/// An issuer over HTTPS on 127.0.0.1, its certificate signed by `ca`: its metadata and JWKS.
async fn tls_issuer(ca: &Issuer<'static, KeyPair>, keys: Keys) -> SocketAddr {
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certificate.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("https://{addr}");
    let metadata = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let router = common::provider_routes("/.well-known/openid-configuration", metadata, keys);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(router),
                    )
                    .await;
            });
        }
    });
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
    let (ca_pem, ca) = test_ca();
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
    let (_, ca) = test_ca();
    let addr = tls_issuer(&ca, issuer_keys()).await;
    // The webpki roots (the default) do not know the test CA...
    let error = RemoteJwks::discover(format!("https://{addr}"))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, JwksError::Unreachable(_)), "{error:?}");
    // ...nor does another CA.
    let (other_pem, _) = test_ca();
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
