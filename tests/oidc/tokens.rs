//! Discovery from the provider's issuer URL, its `client_credentials` tokens through a gate
//! with scope requirements, and what a gate for one API and one issuer refuses.

use http::{Method, StatusCode};
use jwt_gate::{RemoteJwks, TokenVerifier, Validation};

use crate::common;
use crate::provider::{Provider, BILLING, ORDERS};

/// A gate for the orders API trusting `provider` alone, its keys found by discovery.
async fn gate_for(provider: &Provider) -> (RemoteJwks, std::net::SocketAddr) {
    let remote = RemoteJwks::discover(&provider.issuer)
        .start()
        .await
        .unwrap();
    let verifier = TokenVerifier::builder(remote.keys().clone())
        .validation(Validation::third_party(&provider.issuer, ORDERS))
        .try_build()
        .unwrap();
    let api = crate::orders_api(verifier).await;
    (remote, api)
}

#[tokio::test]
async fn discovery_from_the_issuer_url_finds_the_providers_keys() {
    let provider = Provider::start("ES256", &["k1", "k2"]);
    let remote = RemoteJwks::discover(&provider.issuer)
        .start()
        .await
        .unwrap();
    assert_eq!(remote.issuer(), Some(provider.issuer.as_str()));
    let mut kids = remote.keys().kids();
    kids.sort();
    assert_eq!(kids, [Some("k1".to_owned()), Some("k2".to_owned())]);
}

#[tokio::test]
async fn client_credentials_tokens_pass_with_their_scope_and_are_refused_403_without() {
    let provider = Provider::start("ES256", &["k1"]);
    let (_remote, api) = gate_for(&provider).await;

    let read = provider.token("orders:read", ORDERS).await;
    // What the provider issued: an RFC 9068 access token for this API, signed with its key.
    assert_eq!(common::peek_header(&read)["typ"], "at+jwt");
    assert_eq!(common::peek_claims(&read)["aud"], ORDERS);
    assert_eq!(common::peek_claims(&read)["scope"], "orders:read");

    let answer = common::get(api, "/orders", Some(&read)).await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "gate-test")
    );
    let refused = common::with_bearer(api, Method::POST, "/orders", &read).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(
            r#"Bearer realm="jwt-gate", error="insufficient_scope", error_description="the token lacks a scope or role this resource requires", scope="orders:write""#
        )
    );
    assert_eq!(
        refused.json()["missing"]["scopes"],
        serde_json::json!(["orders:write"])
    );

    let write = provider.token("orders:read orders:write", ORDERS).await;
    let answer = common::with_bearer(api, Method::POST, "/orders", &write).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn a_token_for_another_api_is_refused_401() {
    let provider = Provider::start("RS256", &["k1"]);
    let (_remote, api) = gate_for(&provider).await;
    // Same provider, same key, the scope the route needs: only `aud` names another API.
    let billing = provider.token("orders:read", BILLING).await;
    assert_eq!(common::peek_claims(&billing)["aud"], BILLING);
    let answer = common::get(api, "/orders", Some(&billing)).await;
    crate::assert_refused(&answer, "the token's audience is not accepted");
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused_401_even_signed_with_the_same_key() {
    let provider = Provider::start("ES256", &["k1"]);
    let (_remote, api) = gate_for(&provider).await;
    // Another provider with this one's very keys: its tokens verify with them, and differ in
    // `iss` alone.
    let twin = provider.twin();
    assert_ne!(twin.issuer, provider.issuer);
    let token = twin.token("orders:read", ORDERS).await;
    assert_eq!(common::peek_header(&token)["kid"], "k1");
    let answer = common::get(api, "/orders", Some(&token)).await;
    crate::assert_refused(&answer, "the token's issuer is not accepted");
    // The provider's own token, for contrast.
    let own = provider.token("orders:read", ORDERS).await;
    assert_eq!(
        common::get(api, "/orders", Some(&own)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_rs256_and_an_es256_provider_behind_one_gate_each_verified_with_its_own_keys() {
    let rsa = Provider::start("RS256", &["k1"]);
    let ec = Provider::start("ES256", &["k1"]);
    let rsa_keys = RemoteJwks::discover(&rsa.issuer).start().await.unwrap();
    let ec_keys = RemoteJwks::discover(&ec.issuer).start().await.unwrap();
    // Both name their key `k1`: only the token's `iss` tells whose `k1` it is.
    let verifier = TokenVerifier::builder(ec_keys.keys().clone())
        .validation(Validation::third_party(&ec.issuer, ORDERS))
        .issuer_keys(&rsa.issuer, rsa_keys.keys().clone())
        .try_build()
        .unwrap();
    let api = crate::orders_api(verifier).await;
    for (provider, alg) in [(&rsa, "RS256"), (&ec, "ES256")] {
        let token = provider.token("orders:read", ORDERS).await;
        assert_eq!(common::peek_header(&token)["alg"], alg);
        let answer = common::get(api, "/orders", Some(&token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{alg}: {}", answer.text);
        let refused = common::with_bearer(api, Method::POST, "/orders", &token).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{alg}");
    }
}
