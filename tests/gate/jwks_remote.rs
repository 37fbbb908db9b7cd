//! Gate B verifies tokens minted by issuer A through A's JWKS, served over HTTP, across a key
//! rotation and an outage of A.

use crate::common;
use crate::common::prometheus::{parse, value};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use jwt_gate::service::{AuthService, JWKS_PATH};
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Algorithm, JwksError, JwtAuthLayer, Key, Keys, RemoteJwks};

struct Issuer {
    keys: Keys,
    down: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    url: String,
}

/// Issuer A: publishes its keys' JWKS, or answers 503 while "down".
async fn issuer() -> Issuer {
    let keys = Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let fetches = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        JWKS_PATH,
        get({
            let (keys, down, fetches) = (keys.clone(), down.clone(), fetches.clone());
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                if down.load(Ordering::SeqCst) {
                    Err(StatusCode::SERVICE_UNAVAILABLE)
                } else {
                    Ok(Json(keys.jwks()))
                }
            }
        }),
    );
    let addr = common::serve(router).await;
    Issuer {
        keys,
        down,
        fetches,
        url: format!("http://{addr}{JWKS_PATH}"),
    }
}

/// Gate B: a protected route behind keys that follow A's JWKS.
async fn gate(jwks: &RemoteJwks) -> std::net::SocketAddr {
    let router = Router::new()
        .route(
            "/me",
            get(|claims: jwt_gate::Claims| async move { claims.sub }),
        )
        .layer(JwtAuthLayer::from_keys(jwks.keys().clone()));
    common::serve(router).await
}

/// Waits (bounded) for B's key set to satisfy `condition`.
async fn until(jwks: &RemoteJwks, condition: impl Fn(&[Option<String>]) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !condition(&jwks.keys().kids()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the key set never changed as expected");
}

fn has(kids: &[Option<String>], kid: &str) -> bool {
    kids.iter().any(|known| known.as_deref() == Some(kid))
}

#[tokio::test]
async fn gate_b_follows_issuer_a_through_a_rotation() {
    let a = issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .cooldown(Duration::ZERO)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;

    let old_token = common::token(&a.keys, "alice");
    let answer = common::get(b, "/me", Some(&old_token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "alice");

    // A rotates: a new key signs from now on.
    a.keys
        .add(common::eddsa_key(
            include_bytes!("../keys/ed25519-b.pem"),
            "k2",
        ))
        .unwrap();
    a.keys.activate("k2").unwrap();
    let new_token = common::token(&a.keys, "bob");

    // The first sight of k2 makes B look it up, and waits for that fetch: accepted.
    let answer = common::get(b, "/me", Some(&new_token)).await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "bob")
    );
    assert!(has(&jwks.keys().kids(), "k2"));
    assert_eq!(
        a.fetches.load(Ordering::SeqCst),
        2,
        "one fetch at start, one for k2"
    );
    // k1's tokens still verify.
    assert_eq!(
        common::get(b, "/me", Some(&old_token)).await.status,
        StatusCode::OK
    );

    // A retires k1; once B has refetched, k1's tokens are refused (cached ones included).
    a.keys.remove("k1").unwrap();
    jwks.refresh().await.unwrap();
    assert!(!has(&jwks.keys().kids(), "k1"));
    let answer = common::get(b, "/me", Some(&old_token)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        common::get(b, "/me", Some(&new_token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_last_good_keys_stay_while_the_issuer_is_down() {
    let a = issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    let token = common::token(&a.keys, "alice");

    a.down.store(true, Ordering::SeqCst);
    assert_eq!(jwks.refresh().await, Err(JwksError::Status(503)));
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::OK
    );

    a.down.store(false, Ordering::SeqCst);
    assert_eq!(jwks.refresh().await, Ok(()));
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn made_up_kids_cannot_flood_the_issuer() {
    let a = issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .cooldown(Duration::from_secs(3600))
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    // Made-up kids within the cooldown are refused at once; the refresh task owes one fetch
    // for the cooldown's end, whatever their number.
    let forger = Keys::new(
        Key::hs256(b"a forger's secret, 32 bytes long")
            .unwrap()
            .with_kid("made-up"),
    )
    .unwrap();
    for _ in 0..20 {
        let forged = common::token(&forger, "mallory");
        assert_eq!(
            common::get(b, "/me", Some(&forged)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Each was refused at once, without a fetch: one is owed for the end of the cooldown.
    assert_eq!(
        a.fetches.load(Ordering::SeqCst),
        1,
        "only the fetch at start"
    );
}

#[tokio::test]
async fn an_unreachable_or_empty_jwks_fails_at_start() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let error = RemoteJwks::builder(format!("http://{closed}{JWKS_PATH}"))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, JwksError::Unreachable(_)), "{error:?}");

    let hmac_issuer = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    let router = Router::new().route(
        JWKS_PATH,
        get(move || async move { Json(hmac_issuer.jwks()) }),
    );
    let addr = common::serve(router).await;
    let error = RemoteJwks::builder(format!("http://{addr}{JWKS_PATH}"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(error, JwksError::NoUsableKey);
}

#[tokio::test]
async fn new_material_under_an_old_kid_replaces_the_old_key() {
    let a = issuer().await;
    let second = |pem: &[u8]| common::eddsa_key(pem, "k2");
    a.keys
        .add(second(include_bytes!("../keys/ed25519-b.pem")))
        .unwrap();
    let jwks = RemoteJwks::builder(&a.url)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    let signer = |pem: &[u8]| Keys::new(second(pem)).unwrap();
    let before = common::token(&signer(include_bytes!("../keys/ed25519-b.pem")), "alice");
    assert_eq!(
        common::get(b, "/me", Some(&before)).await.status,
        StatusCode::OK
    );

    // A re-keys k2 under the same kid.
    a.keys.remove("k2").unwrap();
    a.keys
        .add(second(include_bytes!("../keys/ed25519-c.pem")))
        .unwrap();
    jwks.refresh().await.unwrap();

    let after = common::token(&signer(include_bytes!("../keys/ed25519-c.pem")), "alice");
    assert_eq!(
        common::get(b, "/me", Some(&after)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        common::get(b, "/me", Some(&before)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Issuer A as an application runs it: the auth service at `/auth`, minting EdDSA tokens,
/// and its JWKS at the root.
async fn auth_issuer() -> (std::net::SocketAddr, Keys) {
    let keys = Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    let verifier = jwt_gate::TokenVerifier::new(keys.clone());
    let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
    let router = Router::new()
        .route_service(JWKS_PATH, auth.jwks())
        .nest_service("/auth", auth)
        .layer(
            JwtAuthLayer::new(verifier)
                .open_prefix("/auth")
                .open_path(JWKS_PATH),
        );
    (common::serve(router).await, keys)
}

async fn log_in(issuer: std::net::SocketAddr, username: &str) -> String {
    let session = common::session(issuer, username).await;
    session["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn gate_b_accepts_what_the_auth_service_issues_across_a_rotation() {
    let (a, keys) = auth_issuer().await;
    let published = common::get(a, JWKS_PATH, None).await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(published.header("content-type"), Some("application/json"));
    assert_eq!(
        published.header("cache-control"),
        Some("public, max-age=300")
    );
    let document = published.json();
    assert_eq!(document["keys"][0]["kid"], "k1");
    assert!(
        document["keys"][0].get("d").is_none(),
        "never the private key"
    );
    let post = common::call(a, http::Method::POST, JWKS_PATH, &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    let jwks = RemoteJwks::builder(format!("http://{a}{JWKS_PATH}"))
        .cooldown(Duration::ZERO)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;

    let old_token = log_in(a, "alice").await;
    assert_eq!(common::peek_header(&old_token)["kid"], "k1");
    let answer = common::get(b, "/me", Some(&old_token)).await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "alice")
    );

    // A rotates: k2 signs from now on, and is published at once.
    keys.add(common::eddsa_key(
        include_bytes!("../keys/ed25519-b.pem"),
        "k2",
    ))
    .unwrap();
    keys.activate("k2").unwrap();
    let new_token = log_in(a, "bob").await;
    assert_eq!(common::peek_header(&new_token)["kid"], "k2");

    // B has never seen k2: its first token makes B fetch, waits for the fetch, and passes.
    let answer = common::get(b, "/me", Some(&new_token)).await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "bob")
    );
    assert_eq!(
        common::get(b, "/me", Some(&old_token)).await.status,
        StatusCode::OK,
        "k1's tokens live on until k1 is retired"
    );
}

#[tokio::test]
async fn the_periodic_refetch_retires_dropped_keys_without_any_trigger() {
    let a = issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .cooldown(Duration::ZERO)
        .refresh_interval(Some(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    let old_token = common::token(&a.keys, "alice");
    assert_eq!(
        common::get(b, "/me", Some(&old_token)).await.status,
        StatusCode::OK
    );

    // A rotates and drops k1. No token names an unknown kid and nobody calls refresh():
    // only the schedule can bring the change to B.
    a.keys
        .add(common::eddsa_key(
            include_bytes!("../keys/ed25519-b.pem"),
            "k2",
        ))
        .unwrap();
    a.keys.activate("k2").unwrap();
    a.keys.remove("k1").unwrap();
    until(&jwks, |kids| kids == [Some("k2".to_owned())]).await;
    assert_eq!(
        common::get(b, "/me", Some(&old_token)).await.status,
        StatusCode::UNAUTHORIZED,
        "the retired key's token, verified and cached before, is refused"
    );
    let new_token = common::token(&a.keys, "bob");
    assert_eq!(
        common::get(b, "/me", Some(&new_token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_burst_of_unknown_kids_makes_one_fetch_at_a_time() {
    // An issuer whose every answer takes a while, counting how many fetches overlap.
    let keys = Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    let (fetches, in_flight, most_in_flight) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let router = Router::new().route(
        JWKS_PATH,
        get({
            let (keys, fetches, in_flight, most) = (
                keys.clone(),
                fetches.clone(),
                in_flight.clone(),
                most_in_flight.clone(),
            );
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Wide enough for a second fetch to overlap if one were ever started.
                tokio::time::sleep(Duration::from_millis(200)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Json(keys.jwks())
            }
        }),
    );
    let addr = common::serve(router).await;
    let jwks = RemoteJwks::builder(format!("http://{addr}{JWKS_PATH}"))
        .cooldown(Duration::ZERO)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let verifier = jwt_gate::TokenVerifier::new(jwks.keys().clone());

    // Fifty tokens, each naming a kid nobody has, from fifty tasks at once.
    let tasks: Vec<_> = (0..50)
        .map(|index| {
            let verifier = verifier.clone();
            tokio::spawn(async move {
                let forger = Keys::new(
                    Key::hs256(b"a forger's secret, 32 bytes long")
                        .unwrap()
                        .with_kid(format!("made-up-{index}")),
                )
                .unwrap();
                verifier.verify(&common::token(&forger, "mallory")).is_err()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap(), "a made-up kid was accepted");
    }
    // The burst did make the task fetch again; wait for that fetch to finish.
    tokio::time::timeout(Duration::from_secs(30), async {
        while fetches.load(Ordering::SeqCst) < 2 || in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the unknown kids never caused a fetch");
    assert_eq!(
        most_in_flight.load(Ordering::SeqCst),
        1,
        "fetches overlapped"
    );
}

#[tokio::test]
async fn a_jwk_without_kid_is_skipped() {
    // Two good keys; the first has lost its kid. Were it taken, it would become the set's
    // kid-less key, which no kid'ed key can join.
    let published = |kid: Option<&str>, pem: &[u8]| {
        let mut key = Key::from_private_pem(Algorithm::EdDSA, pem).unwrap();
        if let Some(kid) = kid {
            key = key.with_kid(kid);
        }
        let jwks = serde_json::to_value(Keys::new(key).unwrap().jwks()).unwrap();
        jwks["keys"][0].clone()
    };
    let without_kid = published(None, include_bytes!("../keys/ed25519-b.pem"));
    assert!(without_kid.get("kid").is_none(), "{without_kid}");
    let with_kid = published(Some("k1"), include_bytes!("../keys/ed25519.pem"));
    let serve_jwks = |document: serde_json::Value| async move {
        let router = Router::new().route(JWKS_PATH, get(move || async move { Json(document) }));
        format!("http://{}{JWKS_PATH}", common::serve(router).await)
    };

    let url = serve_jwks(serde_json::json!({ "keys": [without_kid, with_kid] })).await;
    let jwks = RemoteJwks::builder(url)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    assert_eq!(jwks.keys().kids(), [Some("k1".to_owned())]);

    let url = serve_jwks(serde_json::json!({ "keys": [without_kid] })).await;
    let error = RemoteJwks::builder(url)
        .refresh_interval(None)
        .start()
        .await
        .unwrap_err();
    assert_eq!(error, JwksError::NoUsableKey);
}

/// An issuer whose JWKS can be switched to another document while it runs.
struct Switchable {
    url: String,
    keys: Keys,
    down: Arc<AtomicBool>,
    other_family: Arc<AtomicBool>,
    /// Requests served.
    fetches: Arc<AtomicUsize>,
}

async fn switchable_issuer() -> Switchable {
    let keys = Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    // A well-formed JWKS whose only key is of another family (ES256): nothing usable here.
    let p256 = Keys::new(
        Key::from_private_pem(Algorithm::ES256, include_bytes!("../keys/p256.pem"))
            .unwrap()
            .with_kid("p1"),
    )
    .unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let other_family = Arc::new(AtomicBool::new(false));
    let fetches = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        JWKS_PATH,
        get({
            let (keys, down, other_family, fetches) = (
                keys.clone(),
                down.clone(),
                other_family.clone(),
                fetches.clone(),
            );
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                if down.load(Ordering::SeqCst) {
                    Err(StatusCode::SERVICE_UNAVAILABLE)
                } else if other_family.load(Ordering::SeqCst) {
                    Ok(Json(p256.jwks()))
                } else {
                    Ok(Json(keys.jwks()))
                }
            }
        }),
    );
    let addr = common::serve(router).await;
    Switchable {
        url: format!("http://{addr}{JWKS_PATH}"),
        keys,
        down,
        other_family,
        fetches,
    }
}

/// Long enough for the "still kept" checks to run first on a loaded machine.
const MAX_STALE: Duration = Duration::from_secs(3);

async fn until_empty(jwks: &RemoteJwks) {
    tokio::time::timeout(MAX_STALE * 10, async {
        while !jwks.keys().kids().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stale keys were never retired");
}

#[tokio::test]
async fn while_unreachable_the_old_keys_are_kept_until_the_stale_limit_then_refused() {
    let a = switchable_issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .refresh_interval(None)
        .max_stale(Some(MAX_STALE))
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    let token = common::token(&a.keys, "alice");

    a.down.store(true, Ordering::SeqCst);
    assert_eq!(jwks.refresh().await, Err(JwksError::Status(503)));
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::OK,
        "kept while the issuer is briefly down"
    );
    until_empty(&jwks).await;
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::UNAUTHORIZED,
        "stale keys are no longer trusted (cached verification included)"
    );

    // Back up: its keys are trusted again.
    a.down.store(false, Ordering::SeqCst);
    assert_eq!(jwks.refresh().await, Ok(()));
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
}

/// Without scheduled refetches nothing failed when the stale limit comes: the keys were
/// simply not asked about. The gate asks then, and keeps them if the issuer still serves them.
#[tokio::test]
async fn without_scheduled_refetches_the_stale_limit_asks_before_it_retires() {
    const LIMIT: Duration = Duration::from_secs(1);
    let a = switchable_issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .refresh_interval(None)
        .max_stale(Some(LIMIT))
        .cooldown(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    let token = common::token(&a.keys, "alice");

    tokio::time::sleep(LIMIT * 3).await;
    assert_eq!(
        jwks.keys().kids(),
        [Some("k1".to_owned())],
        "kept: the issuer still serves it"
    );
    assert!(a.fetches.load(Ordering::SeqCst) >= 2, "asked again");
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::OK
    );

    // Down when the limit comes again: asked, failed, retired.
    a.down.store(true, Ordering::SeqCst);
    until_empty(&jwks).await;
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// A stale limit shorter than a fetch takes must not make the gate ask over and over: it
/// asks no more often than the lookup cooldown allows.
#[tokio::test]
async fn a_stale_limit_of_zero_asks_no_faster_than_the_cooldown() {
    let a = switchable_issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .refresh_interval(None)
        .max_stale(Some(Duration::ZERO))
        .cooldown(Duration::from_millis(250))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fetches = a.fetches.load(Ordering::SeqCst);
    // The first fetch at start, then one per cooldown at most: 9 in 2 s; a loop makes hundreds.
    assert!((2..=10).contains(&fetches), "{fetches} fetches");
    assert_eq!(jwks.keys().kids(), [Some("k1".to_owned())]);
}

#[tokio::test]
async fn a_valid_jwks_with_no_usable_key_is_told_apart_and_bounded_the_same_way() {
    let a = switchable_issuer().await;
    let jwks = RemoteJwks::builder(&a.url)
        .refresh_interval(None)
        .max_stale(Some(MAX_STALE))
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    let token = common::token(&a.keys, "alice");

    // Reachable, well formed, but only a key of another family: not "unreachable".
    a.other_family.store(true, Ordering::SeqCst);
    assert_eq!(jwks.refresh().await, Err(JwksError::NoUsableKey));
    assert_eq!(
        jwks.keys().kids(),
        [Some("k1".to_owned())],
        "the old key is kept"
    );
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    until_empty(&jwks).await;
    assert_eq!(
        common::get(b, "/me", Some(&token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_jwks_max_age_sets_the_next_refetch_within_the_bounds() {
    // The issuer allows caching for a day; the gate's upper bound makes it 100 ms.
    let keys = Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    let router = Router::new().route(
        JWKS_PATH,
        get({
            let keys = keys.clone();
            move || async move {
                (
                    [(http::header::CACHE_CONTROL, "public, max-age=86400")],
                    Json(keys.jwks()),
                )
            }
        }),
    );
    let addr = common::serve(router).await;
    let jwks = RemoteJwks::builder(format!("http://{addr}{JWKS_PATH}"))
        .cooldown(Duration::ZERO)
        // Without max-age the next scheduled refetch would be an hour away.
        .refresh_interval(Some(Duration::from_secs(3600)))
        .max_age_bounds(Duration::ZERO, Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    keys.add(common::eddsa_key(
        include_bytes!("../keys/ed25519-b.pem"),
        "k2",
    ))
    .unwrap();
    keys.activate("k2").unwrap();
    keys.remove("k1").unwrap();
    until(&jwks, |kids| kids == [Some("k2".to_owned())]).await;
}

/// With feature `metrics` too: the requests that waited are counted once each, when they
/// pass, and the token is counted as verified in full once (the waits verified nothing).
#[tokio::test]
async fn the_first_token_of_a_new_key_waits_for_a_slow_fetch_instead_of_failing() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let exposition = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    // Every answer takes a while, so a token that did not wait would be refused.
    let keys = Keys::new(common::eddsa_key(
        include_bytes!("../keys/ed25519.pem"),
        "k1",
    ))
    .unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        JWKS_PATH,
        get({
            let (keys, fetches) = (keys.clone(), fetches.clone());
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Json(keys.jwks())
            }
        }),
    );
    let addr = common::serve(router).await;
    let jwks = RemoteJwks::builder(format!("http://{addr}{JWKS_PATH}"))
        .cooldown(Duration::ZERO)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let b = gate(&jwks).await;
    keys.add(common::eddsa_key(
        include_bytes!("../keys/ed25519-b.pem"),
        "k2",
    ))
    .unwrap();
    keys.activate("k2").unwrap();

    // Ten requests with the new key at once: all wait for the one fetch and pass.
    let token = common::token(&keys, "bob");
    let answers: Vec<_> = (0..10)
        .map(|_| {
            let token = token.clone();
            tokio::spawn(async move { common::get(b, "/me", Some(&token)).await.status })
        })
        .collect();
    for answer in answers {
        assert_eq!(answer.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one at start, one shared by all ten"
    );
    let text = exposition.render();
    let samples = parse(&text);
    let passed = |cache| {
        value(
            &samples,
            "jwt_gate_requests_passed_total",
            &[("cache", cache)],
        )
    };
    assert_eq!(
        value(&samples, "jwt_gate_verified_cache_misses_total", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(passed("miss") + passed("hit"), 10.0, "{text}");
}

/// With feature `metrics`: each fetch is counted by outcome under the issuer's URL, and the
/// last good one is timestamped (the key set's age). The test's runtime has one thread, on
/// which its own recorder stands in for the process's: the refresh task runs there too.
#[tokio::test]
async fn fetches_are_counted_by_outcome_and_the_last_good_one_is_timestamped() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let exposition = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let a = issuer().await;
    let jwks = RemoteJwks::builder(&a.url).start().await.unwrap();
    a.down.store(true, Ordering::SeqCst);
    assert_eq!(jwks.refresh().await, Err(JwksError::Status(503)));
    a.down.store(false, Ordering::SeqCst);
    jwks.refresh().await.unwrap();

    let text = exposition.render();
    let url = &a.url;
    for (outcome, count) in [("ok", 2), ("status", 1)] {
        let series =
            format!("jwt_gate_jwks_fetches_total{{url=\"{url}\",outcome=\"{outcome}\"}} {count}");
        assert!(text.contains(&series), "no {series} in\n{text}");
    }
    let stamp = format!("jwt_gate_jwks_last_success_timestamp_seconds{{url=\"{url}\"}} ");
    let stamped: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix(&stamp))
        .unwrap_or_else(|| panic!("no {stamp} in\n{text}"))
        .parse()
        .unwrap();
    assert!((stamped - common::now() as f64).abs() < 600.0, "{stamped}");
}
