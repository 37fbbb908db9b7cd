//! Finding an issuer's keys from its metadata (OpenID Connect Discovery, RFC 8414), and the
//! URL policy: plain http:// only to loopback unless allowed. Real HTTP on 127.0.0.1.

use crate::common;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use jwt_gate::{Claims, JwksError, JwtAuthLayer, Keys, RemoteJwks};
use serde_json::json;

fn issuer_keys() -> Keys {
    Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap()
}

/// An issuer serving `metadata` (made from its own base URL) at `metadata_path`, and its JWKS
/// at `/jwks`.
async fn issuer(
    metadata_path: &'static str,
    metadata: impl Fn(&str) -> serde_json::Value,
) -> (SocketAddr, Keys) {
    let keys = issuer_keys();
    // The address is needed inside the document, so bind first, then serve.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let document = metadata(&format!("http://{addr}"));
    let router = common::provider_routes(metadata_path, document, keys.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, keys)
}

fn signed(keys: &Keys, issuer: &str) -> String {
    let now = common::now();
    keys.sign(&Claims::new("alice", now, now + 600).with_issuer(issuer))
        .unwrap()
}

#[tokio::test]
async fn discovery_follows_the_openid_configuration_to_the_keys() {
    let (addr, keys) = issuer(
        "/.well-known/openid-configuration",
        |base| json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") }),
    )
    .await;
    let issuer = format!("http://{addr}");
    let remote = RemoteJwks::discover(&issuer).start().await.unwrap();
    assert_eq!(remote.issuer(), Some(issuer.as_str()));
    let gate = common::serve(
        Router::new()
            .route("/me", get(|claims: Claims| async move { claims.sub }))
            .layer(JwtAuthLayer::from_keys(remote.keys().clone())),
    )
    .await;
    let answer = common::get(gate, "/me", Some(&signed(&keys, &issuer))).await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "alice")
    );
}

#[tokio::test]
async fn discovery_falls_back_to_rfc_8414_with_the_path_after_the_well_known_part() {
    let (addr, _keys) = issuer(
        "/.well-known/oauth-authorization-server/tenant-1",
        |base| json!({ "issuer": format!("{base}/tenant-1"), "jwks_uri": format!("{base}/jwks") }),
    )
    .await;
    let remote = RemoteJwks::discover(format!("http://{addr}/tenant-1"))
        .start()
        .await
        .unwrap();
    assert_eq!(remote.keys().kids(), [Some("k1".to_owned())]);

    // Neither document served: a discovery error naming both, not a JWKS error.
    let error = RemoteJwks::discover(format!("http://{addr}/tenant-2"))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, JwksError::Discovery(reason) if reason.contains("404")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_document_for_another_issuer_is_refused_at_start() {
    // The document is served where issuer "http://addr" would find it, but speaks for
    // another issuer (one that could be anybody's): its keys must not be trusted for ours.
    let (addr, _keys) = issuer(
        "/.well-known/openid-configuration",
        |base| json!({ "issuer": format!("{base}/evil"), "jwks_uri": format!("{base}/jwks") }),
    )
    .await;
    let error = RemoteJwks::discover(format!("http://{addr}"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        error,
        JwksError::IssuerMismatch {
            expected: format!("http://{addr}"),
            found: format!("http://{addr}/evil"),
        }
    );
    // Exactly equal: a trailing slash is another issuer.
    let error = RemoteJwks::discover(format!("http://{addr}/"))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(error, JwksError::IssuerMismatch { .. }),
        "{error:?}"
    );
}

/// A client that reaches `addr` whatever host a URL names, so a URL off this machine can be
/// tested without any traffic leaving it.
fn client_to(
    addr: SocketAddr,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector<
        impl tower::Service<
                hyper_util::client::legacy::connect::dns::Name,
                Response = std::vec::IntoIter<SocketAddr>,
                Error = std::io::Error,
                Future = impl Send,
            > + Clone
            + Send
            + Sync
            + 'static,
    >,
    http_body_util::Empty<bytes::Bytes>,
> {
    let resolver =
        tower::service_fn(
            move |_name| async move { Ok::<_, std::io::Error>(vec![addr].into_iter()) },
        );
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(resolver))
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_unless_allowed() {
    let (addr, _keys) = issuer(
        "/.well-known/openid-configuration",
        |base| json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") }),
    )
    .await;
    let off_machine = format!("http://issuer.test:{}/jwks", addr.port());
    let error = RemoteJwks::builder(&off_machine)
        .client(client_to(addr))
        .start()
        .await
        .unwrap_err();
    assert_eq!(error, JwksError::PlainHttp(off_machine.clone()));
    let error = RemoteJwks::discover(format!("http://issuer.test:{}", addr.port()))
        .client(client_to(addr))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, JwksError::PlainHttp(_)), "{error:?}");
    // A credential in the URL never reaches the error (nor the logs, which show the same).
    let with_secrets = format!(
        "http://reader:hunter22@issuer.test:{}/jwks?key=s3cret",
        addr.port()
    );
    let error = RemoteJwks::builder(&with_secrets)
        .client(client_to(addr))
        .start()
        .await
        .unwrap_err();
    assert_eq!(error, JwksError::PlainHttp(off_machine.clone()));
    let message = error.to_string();
    assert!(
        !message.contains("hunter22") && !message.contains("s3cret"),
        "{message}"
    );

    // Allowed explicitly, the same URL is followed.
    let remote = RemoteJwks::builder(&off_machine)
        .client(client_to(addr))
        .allow_plain_http()
        .start()
        .await
        .unwrap();
    assert_eq!(remote.keys().kids(), [Some("k1".to_owned())]);
}

#[tokio::test]
async fn a_discovered_plain_http_jwks_uri_off_loopback_is_refused() {
    // The metadata itself comes from loopback, but sends the keys' fetch elsewhere in clear.
    let (addr, _keys) = issuer(
        "/.well-known/openid-configuration",
        |base| json!({ "issuer": base, "jwks_uri": "http://keys.test/jwks" }),
    )
    .await;
    let error = RemoteJwks::discover(format!("http://{addr}"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(error, JwksError::PlainHttp("http://keys.test/jwks".into()));
}
