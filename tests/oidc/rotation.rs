//! A key rotation done by the provider while the gate runs: the provider's operator adds a
//! new signing key (restarting it on the same port, so with the same issuer, the new key
//! first in its JWKS and the old one still published), then retires the old key.

use std::time::Duration;

use http::StatusCode;
use jwt_gate::{RemoteJwks, TokenVerifier, Validation};
use tokio::time::Instant;

use crate::common;
use crate::provider::{Provider, ORDERS};

/// The gate's refetch cooldown. Short, so the test need not wait long for it to pass; the
/// rotation comes after it, as it does in production (keys change far less often than that).
const COOLDOWN: Duration = Duration::from_millis(500);

#[tokio::test]
async fn the_first_token_of_a_new_key_is_accepted_and_a_retired_keys_token_refused() {
    let mut provider = Provider::start("RS256", &["k1"]);
    let remote = RemoteJwks::discover(&provider.issuer)
        .cooldown(COOLDOWN)
        // Only the rotation itself (an unknown `kid`) and the refresh below fetch.
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    // The start's fetch began before this instant.
    let fetched = Instant::now();
    let verifier = TokenVerifier::builder(remote.keys().clone())
        .validation(Validation::third_party(&provider.issuer, ORDERS))
        .try_build()
        .unwrap();
    let api = crate::orders_api(verifier).await;
    let old = provider.token("orders:read", ORDERS).await;
    assert_eq!(common::peek_header(&old)["kid"], "k1");
    assert_eq!(
        common::get(api, "/orders", Some(&old)).await.status,
        StatusCode::OK
    );

    // The new key signs from now on; the old one is still published for its tokens.
    provider.restart(&["k2", "k1"]);
    let new = provider.token("orders:read", ORDERS).await;
    assert_eq!(common::peek_header(&new)["kid"], "k2");
    assert_eq!(remote.keys().kids(), [Some("k1".to_owned())]);
    tokio::time::sleep_until(fetched + COOLDOWN).await;
    // Its very first request: the gate fetches the JWKS once while the request waits, and
    // lets it through; no refusal while the fetch runs, none for a cooldown.
    let first = common::get(api, "/orders", Some(&new)).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(
        common::get(api, "/orders", Some(&old)).await.status,
        StatusCode::OK,
        "the old key is still published: its tokens still pass"
    );

    // The old key is retired: once the gate has fetched the JWKS without it (its scheduled
    // refresh, here asked for at once), the old key's tokens are refused, cached or not.
    provider.restart(&["k2"]);
    remote.refresh().await.unwrap();
    let refused = common::get(api, "/orders", Some(&old)).await;
    crate::assert_refused(&refused, "the token's key is unknown");
    assert_eq!(
        common::get(api, "/orders", Some(&new)).await.status,
        StatusCode::OK
    );
}
