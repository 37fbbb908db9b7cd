//! One gate trusting several issuers: its own HS256 keys beside identity providers found by
//! discovery (RS256 and EdDSA), each token checked with its own issuer's keys only.

use crate::common;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use jwt_gate::{
    Algorithm, BuildError, Claims, JwtAuthLayer, Key, Keys, RemoteJwks, TokenVerifier, Validation,
};
use serde_json::json;

const OWN_ISSUER: &str = "https://api.test";

/// An identity provider signing with `key`, publishing its metadata and JWKS; returns its
/// issuer URL, its signing keys, and the gate's source following it.
async fn provider(key: Key) -> (String, Keys, RemoteJwks) {
    let keys = Keys::new(key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let metadata = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let router =
        common::provider_routes("/.well-known/openid-configuration", metadata, keys.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let source = RemoteJwks::discover(&issuer).start().await.unwrap();
    (issuer, keys, source)
}

fn pem_key(algorithm: Algorithm, pem: &[u8], kid: &str) -> Key {
    Key::from_private_pem(algorithm, pem).unwrap().with_kid(kid)
}

fn token(keys: &Keys, issuer: &str, sub: &str) -> String {
    let now = common::now();
    keys.sign(
        &Claims::new(sub, now, now + 600)
            .with_issuer(issuer)
            .with_audience("api"),
    )
    .unwrap()
}

async fn status(gate: SocketAddr, token: &str) -> StatusCode {
    common::get(gate, "/me", Some(token)).await.status
}

#[tokio::test]
async fn each_issuer_verifies_its_own_tokens_and_never_another_issuers() {
    let own = Keys::new(Key::hs256(common::SECRET).unwrap().with_kid("own")).unwrap();
    let (rsa_issuer, rsa_keys, rsa) = provider(pem_key(
        Algorithm::RS256,
        include_bytes!("../keys/rsa.pem"),
        "k1",
    ))
    .await;
    // Two EdDSA providers whose keys even share the kid: only the signature tells them apart.
    let (b_issuer, b_keys, b) = provider(pem_key(
        Algorithm::EdDSA,
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .await;
    let (c_issuer, c_keys, c) = provider(pem_key(
        Algorithm::EdDSA,
        include_bytes!("../keys/ed25519-b.pem"),
        "k1",
    ))
    .await;

    let verifier = TokenVerifier::builder(own.clone())
        .validation(Validation::default().issuer(OWN_ISSUER).audience("api"))
        .issuer_keys(rsa.issuer().unwrap(), rsa.keys().clone())
        .issuer_keys(b.issuer().unwrap(), b.keys().clone())
        .issuer_keys(c.issuer().unwrap(), c.keys().clone())
        .build();
    let gate = common::serve(
        Router::new()
            .route("/me", get(|claims: Claims| async move { claims.sub }))
            .layer(JwtAuthLayer::new(verifier)),
    )
    .await;

    // Each issuer's own tokens pass.
    for (keys, issuer) in [
        (&own, OWN_ISSUER),
        (&rsa_keys, rsa_issuer.as_str()),
        (&b_keys, b_issuer.as_str()),
        (&c_keys, c_issuer.as_str()),
    ] {
        let answer = common::get(gate, "/me", Some(&token(keys, issuer, "alice"))).await;
        assert_eq!(answer.status, StatusCode::OK, "{issuer}");
        assert_eq!(answer.text, "alice");
    }

    // A token signed by one issuer and labelled with another's `iss` is refused, whichever
    // pair: same family and same kid included.
    for (keys, signer, label) in [
        (&b_keys, &b_issuer, &c_issuer),
        (&c_keys, &c_issuer, &b_issuer),
        (&b_keys, &b_issuer, &rsa_issuer),
        (&rsa_keys, &rsa_issuer, &b_issuer),
        (&own, &OWN_ISSUER.to_owned(), &rsa_issuer),
        (&rsa_keys, &rsa_issuer, &OWN_ISSUER.to_owned()),
    ] {
        assert_eq!(
            status(gate, &token(keys, label, "mallory")).await,
            StatusCode::UNAUTHORIZED,
            "signed by {signer}, labelled {label}"
        );
    }
    // An `iss` nobody configured falls to the own keys, which did not sign it.
    assert_eq!(
        status(gate, &token(&b_keys, "https://elsewhere.test", "mallory")).await,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
#[should_panic(expected = "names none of its own")]
fn several_issuers_without_an_own_issuer_is_refused_at_build() {
    let own = common::keys();
    let other = common::keys();
    let _ = TokenVerifier::builder(own)
        .issuer_keys("https://login.test", other)
        .build();
}

#[test]
fn an_issuer_held_to_no_audience_is_refused_at_build() {
    // A provider issues tokens for every API registered with it: trusted without an
    // audience, its token for `billing-api` would open this one.
    let idp = Keys::new(pem_key(
        Algorithm::EdDSA,
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    let error = TokenVerifier::builder(common::keys())
        .validation(Validation::default().issuer(OWN_ISSUER))
        .issuer_keys("https://login.test", idp.clone())
        .try_build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(error, BuildError::NoAudience("https://login.test".into()));
    assert!(
        error.to_string().contains("Validation::audience"),
        "{error}"
    );
    // A policy of the issuer's own says what it checks, on purpose: a provider whose access
    // tokens carry no `aud` (AWS Cognito's) is trusted so.
    assert!(TokenVerifier::builder(common::keys())
        .validation(Validation::default().issuer(OWN_ISSUER))
        .issuer_policy(
            "https://login.test",
            idp.clone(),
            Validation::default().issuer("https://login.test"),
        )
        .try_build()
        .is_ok());
    // With one, the provider's token for another API is refused.
    let verifier = TokenVerifier::builder(common::keys())
        .validation(Validation::default().issuer(OWN_ISSUER).audience("api"))
        .issuer_keys("https://login.test", idp.clone())
        .build();
    let now = common::now();
    let elsewhere = idp
        .sign(
            &Claims::new("mallory", now, now + 600)
                .with_issuer("https://login.test")
                .with_audience("billing-api"),
        )
        .unwrap();
    assert!(verifier.verify(&elsewhere).is_err());
}

#[test]
#[should_panic(expected = "added twice")]
fn an_issuer_added_twice_is_refused_at_build() {
    let _ = TokenVerifier::builder(common::keys())
        .validation(Validation::default().issuer(OWN_ISSUER))
        .issuer_keys("https://login.test", common::keys())
        .issuer_keys("https://login.test", common::keys())
        .build();
}

#[test]
fn an_issuer_with_its_own_policy_holds_its_tokens_to_its_own_audience() {
    let own = common::keys();
    let idp_issuer = "https://login.test";
    let idp = Keys::new(pem_key(
        Algorithm::EdDSA,
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    let verifier = TokenVerifier::builder(own.clone())
        .validation(Validation::own_tokens().issuer(OWN_ISSUER).audience("api"))
        .issuer_policy(
            idp_issuer,
            idp.clone(),
            Validation::third_party(idp_issuer, "orders-api"),
        )
        .build();
    let now = common::now();
    let signed = |keys: &Keys, issuer: &str, audience: &str| {
        keys.sign(
            &Claims::new("alice", now, now + 600)
                .with_issuer(issuer)
                .with_audience(audience),
        )
        .unwrap()
    };
    assert!(verifier
        .verify(&signed(&idp, idp_issuer, "orders-api"))
        .is_ok());
    assert!(verifier.verify(&signed(&own, OWN_ISSUER, "api")).is_ok());
    // Each audience belongs to its issuer: another's (or the gate's own) is refused.
    assert_eq!(
        verifier
            .verify(&signed(&idp, idp_issuer, "api"))
            .unwrap_err(),
        jwt_gate::AuthError::WrongAudience
    );
    assert_eq!(
        verifier
            .verify(&signed(&own, OWN_ISSUER, "orders-api"))
            .unwrap_err(),
        jwt_gate::AuthError::WrongAudience
    );
    // The third-party preset lets the provider's tokens go without `jti`; the own policy
    // still requires it.
    let without_jti = |keys: &Keys, issuer: &str, audience: &str| {
        keys.sign(&json!({
            "sub": "alice", "iat": now, "exp": now + 600, "iss": issuer, "aud": audience,
        }))
        .unwrap()
    };
    assert!(verifier
        .verify(&without_jti(&idp, idp_issuer, "orders-api"))
        .is_ok());
    assert_eq!(
        verifier
            .verify(&without_jti(&own, OWN_ISSUER, "api"))
            .unwrap_err(),
        jwt_gate::AuthError::MissingClaim
    );
}
