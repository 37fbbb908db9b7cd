//! Requests per second over loopback HTTP, the same axum handler with and without the gate
//! (`cargo bench --bench http`). Runs alternate, so both see the same machine load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 32;
const RUN: Duration = Duration::from_secs(1);
const ROUNDS: usize = 5;

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Requests completed per second by `CONNECTIONS` keep-alive connections hammering `addr`.
/// Each connection walks through `authorizations` (none: no header) from its own offset.
async fn load(addr: SocketAddr, authorizations: Arc<Vec<String>>) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for connection_index in 0..CONNECTIONS {
        let (done, authorizations) = (done.clone(), authorizations.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut next = connection_index * 7919;
            while Instant::now() < deadline {
                let mut request = Request::builder().uri("/me").header("host", "bench");
                if !authorizations.is_empty() {
                    request = request.header(
                        "authorization",
                        &authorizations[next % authorizations.len()],
                    );
                    next += 1;
                }
                let response = sender
                    .send_request(request.body(Empty::<Bytes>::new()).unwrap())
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                response.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let keys = Keys::hs256(b"a benchmark secret of 32 bytes!!").unwrap();
    let now = jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock);
    let bearer = |sub: String| {
        format!(
            "Bearer {}",
            keys.sign(&Claims::new(sub, now, now + 900)).unwrap()
        )
    };
    let one_token = Arc::new(vec![bearer("alice".into())]);
    let many_tokens = Arc::new(
        (0..100_000)
            .map(|index| bearer(format!("user{index}")))
            .collect::<Vec<_>>(),
    );

    // Steady state: every token verified once, as in a service running for a while.
    let verifier = TokenVerifier::new(keys.clone());
    for authorization in many_tokens.iter() {
        let token = authorization.strip_prefix("Bearer ").unwrap();
        verifier.verify(token).unwrap();
    }
    let bare = serve(Router::new().route("/me", get(|| async { "alice" }))).await;
    let gated = serve(
        Router::new()
            .route("/me", get(|claims: Claims| async move { claims.sub }))
            .layer(JwtAuthLayer::new(verifier)),
    )
    .await;

    let (mut bare_rps, mut gated_rps, mut many_rps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare_rps.push(load(bare, Arc::new(Vec::new())).await);
        gated_rps.push(load(gated, one_token.clone()).await);
        many_rps.push(load(gated, many_tokens.clone()).await);
    }
    let (bare_rps, gated_rps, many_rps) = (median(bare_rps), median(gated_rps), median(many_rps));
    println!("loopback HTTP/1.1, {CONNECTIONS} keep-alive connections, {ROUNDS} alternating runs of {RUN:?}, medians");
    println!("| server | requests/s |\n| --- | ---: |");
    println!("| bare axum handler | {bare_rps:.0} |");
    println!("| same handler behind the gate (HS256, one token) | {gated_rps:.0} |");
    println!("| same, 100,000 users' tokens cycling | {many_rps:.0} |");
    println!(
        "\ngated / bare: {:.2} x (one token), {:.2} x (100,000 tokens)",
        gated_rps / bare_rps,
        many_rps / bare_rps
    );
}
