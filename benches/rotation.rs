//! The first token after an issuer rotates its key: through the gate it waits for one JWKS
//! fetch and passes, instead of being refused until a cooldown is over
//! (`cargo bench --bench rotation`). The issuer serves its JWKS over loopback HTTP with a
//! fixed delay, standing in for a real provider's fetch time; the gate is driven in process.
//!
//! Rows: a token with a known key (no fetch); the first token of a new key when the cooldown
//! since the last fetch is over (the case rotation hits in practice: a fetch, then 200); and
//! the same within the cooldown, retried every 10 ms until accepted (refused, then accepted
//! once the owed fetch at the cooldown's end has run). Medians of a few rotations each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use http::{Request, StatusCode};
use jwt_gate::{Algorithm, Claims, JwtAuthLayer, Key, Keys, RemoteJwks};
use tower::{Layer, ServiceExt};

const FETCH_DELAY: Duration = Duration::from_millis(20);
const COOLDOWN: Duration = Duration::from_millis(1_000);
const ROTATIONS: usize = 5;

fn key(pem: &[u8], kid: &str) -> Key {
    Key::from_private_pem(Algorithm::EdDSA, pem)
        .unwrap()
        .with_kid(kid)
}

async fn issuer(keys: Keys) -> SocketAddr {
    let router = Router::new().route(
        "/jwks",
        get(move || {
            let keys = keys.clone();
            async move {
                tokio::time::sleep(FETCH_DELAY).await;
                Json(keys.jwks())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn token(keys: &Keys) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    keys.sign(&Claims::new("alice", now, now + 600)).unwrap()
}

/// One request through the gate: its status.
async fn call(layer: &JwtAuthLayer, token: &str) -> StatusCode {
    let service = layer.layer(tower::service_fn(|_request: Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let request = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(String::new())
        .unwrap();
    service.oneshot(request).await.unwrap().status()
}

/// (time to the first 200, refusals before it) for the first token after a rotation, with
/// the rotation `after` the last fetch started.
async fn first_token_after_rotation(after: Duration) -> (Duration, usize) {
    let keys = Keys::new(key(include_bytes!("../tests/keys/ed25519.pem"), "k1")).unwrap();
    let addr = issuer(keys.clone()).await;
    let remote = RemoteJwks::builder(format!("http://{addr}/jwks"))
        .cooldown(COOLDOWN)
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let layer = JwtAuthLayer::from_keys(remote.keys().clone());
    tokio::time::sleep(after).await;
    keys.add(key(include_bytes!("../tests/keys/ed25519-b.pem"), "k2"))
        .unwrap();
    keys.activate("k2").unwrap();
    let new_token = token(&keys);
    let started = Instant::now();
    let mut refusals = 0;
    while call(&layer, &new_token).await != StatusCode::OK {
        refusals += 1;
        assert!(started.elapsed() < COOLDOWN * 10, "never accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (started.elapsed(), refusals)
}

async fn known_key() -> Duration {
    let keys = Keys::new(key(include_bytes!("../tests/keys/ed25519.pem"), "k1")).unwrap();
    let addr = issuer(keys.clone()).await;
    let remote = RemoteJwks::builder(format!("http://{addr}/jwks"))
        .refresh_interval(None)
        .start()
        .await
        .unwrap();
    let layer = JwtAuthLayer::from_keys(remote.keys().clone());
    let token = token(&keys);
    let started = Instant::now();
    assert_eq!(call(&layer, &token).await, StatusCode::OK);
    started.elapsed()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut known = Vec::new();
    let mut after_cooldown = Vec::new();
    let mut within_cooldown = Vec::new();
    let (mut refused_after, mut refused_within) = (0, 0);
    // Alternated, so every row sees the same machine load.
    for _ in 0..ROTATIONS {
        known.push(known_key().await);
        let (time, refusals) = first_token_after_rotation(COOLDOWN + COOLDOWN / 10).await;
        after_cooldown.push(time);
        refused_after += refusals;
        let (time, refusals) = first_token_after_rotation(Duration::ZERO).await;
        within_cooldown.push(time);
        refused_within += refusals;
    }
    println!(
        "JWKS fetch takes {FETCH_DELAY:?} (issuer delay), cooldown {COOLDOWN:?}, {ROTATIONS} rotations each; medians"
    );
    println!("| first token of a key | time to 200 | refusals (all runs) |");
    println!("| --- | ---: | ---: |");
    println!(
        "| known key (signature check, no fetch) | {:.1} ms | 0 |",
        median(known).as_secs_f64() * 1e3
    );
    println!(
        "| new key, cooldown over (waits one fetch) | {:.1} ms | {refused_after} |",
        median(after_cooldown).as_secs_f64() * 1e3
    );
    println!(
        "| new key, within the cooldown (retried every 10 ms) | {:.1} ms | {refused_within} |",
        median(within_cooldown).as_secs_f64() * 1e3
    );
}
