//! jwt-gate against jwt-authorizer: the same HS256 tokens through a bare service, the same
//! service behind `JwtAuthLayer`, and behind jwt-authorizer's layer, all in one run.
//!
//! ```text
//! cargo run --release            # from compare/jwt-authorizer
//! ```
//!
//! Two parts, both printed as markdown tables of medians:
//! - in process: nanoseconds per request a layer adds over the bare service, the services
//!   polled directly (no I/O, no runtime), for a token seen for the first time (a fresh layer
//!   every round) and for one seen before (one layer kept across rounds), at two sizes;
//! - over loopback HTTP: requests per second of the three axum servers, runs alternating.
//!
//! Within a round every contender sees the same requests one after the other, so drift in
//! the machine's load hits them alike; the added cost is the median over rounds of
//! (layered − bare) taken within the same round.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jwt_authorizer::{Authorizer, IntoLayer, JwtAuthorizer, JwtClaims, Validation};
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service};

const SECRET: &str = "a benchmark secret of 32 bytes!!";
const ROUNDS: usize = 9;
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const HTTP_CONNECTIONS: usize = 32;
const HTTP_RUN: Duration = Duration::from_secs(2);
const HTTP_ROUNDS: usize = 5;

fn now() -> u64 {
    jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock)
}

/// Polls a future that is ready at once (no I/O anywhere in these services).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("benchmarked services must not wait"),
    }
}

/// The handler both layers wrap: answers 200 with an empty body. Its response type is axum
/// 0.7's, because jwt-authorizer's layer turns its rejections into that type.
fn bare_service() -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone
{
    tower::service_fn(|_request: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
    })
}

fn sign_many(keys: &Keys, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            keys.sign(&Claims::new(format!("user{index}"), now(), now() + 3_600))
                .unwrap()
        })
        .collect()
}

fn requests(tokens: &[String]) -> Vec<Request<()>> {
    tokens
        .iter()
        .map(|token| {
            Request::builder()
                .uri("/orders")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap()
        })
        .collect()
}

/// A copy of `request` whose header values are fresh copies too: a server's request was just
/// parsed from the socket, so its token is in the CPU cache, not wherever 100,000 stored
/// tokens are. Made inside the timed loop for every contender (the bare service included), so
/// reading the stored token, cold, costs all of them alike and cancels in the difference;
/// what is left is each layer's own work on a token a server would hold.
fn fresh_request(request: &Request<()>) -> Request<()> {
    let mut fresh = Request::new(());
    *fresh.uri_mut() = request.uri().clone();
    for (name, value) in request.headers() {
        let value = http::HeaderValue::from_bytes(value.as_bytes()).unwrap();
        fresh.headers_mut().append(name.clone(), value);
    }
    fresh
}

/// Nanoseconds per request of sending each request once through `service`; every answer
/// must be a success, or the figure would time a rejection.
fn one_pass<S, B>(requests: &[Request<()>], mut service: S) -> f64
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for request in requests {
        let request = fresh_request(request);
        ready(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
        let response = ready(service.call(request)).unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        black_box(response);
    }
    start.elapsed().as_nanos() as f64 / requests.len() as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// jwt-authorizer configured to accept jwt-gate's tokens: HS256 with the same secret, `exp`
/// checked (its default), deserialising the same `Claims` struct jwt-gate does.
fn authorizer(runtime: &tokio::runtime::Runtime) -> Authorizer<Claims> {
    runtime
        .block_on(
            JwtAuthorizer::<Claims>::from_secret(SECRET)
                .validation(Validation::new())
                .build(),
        )
        .unwrap()
}

struct Sample {
    bare: Vec<f64>,
    gate_first: Vec<f64>,
    gate_hit: Vec<f64>,
    authorizer_first: Vec<f64>,
    authorizer_hit: Vec<f64>,
    decode11: Vec<f64>,
    decode9: Vec<f64>,
}

fn in_process(runtime: &tokio::runtime::Runtime, keys: &Keys, count: usize) -> Sample {
    let tokens = sign_many(keys, count);
    let requests = requests(&tokens);

    let decoding11 = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
    let validation11 = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    let decoding9 = jsonwebtoken9::DecodingKey::from_secret(SECRET.as_bytes());
    let validation9 = jsonwebtoken9::Validation::new(jsonwebtoken9::Algorithm::HS256);

    // Kept across rounds: after the warm-up pass every token is one each layer has seen.
    let kept_gate = JwtAuthLayer::new(TokenVerifier::new(keys.clone())).layer(bare_service());
    let kept_authorizer = authorizer(runtime).into_layer().layer(bare_service());
    one_pass(&requests, kept_gate.clone());
    one_pass(&requests, kept_authorizer.clone());
    one_pass(&requests, bare_service());

    let mut sample = Sample {
        bare: Vec::new(),
        gate_first: Vec::new(),
        gate_hit: Vec::new(),
        authorizer_first: Vec::new(),
        authorizer_hit: Vec::new(),
        decode11: Vec::new(),
        decode9: Vec::new(),
    };
    for _ in 0..ROUNDS {
        sample.bare.push(one_pass(&requests, bare_service()));
        // Fresh layers: built outside the timed pass, every token a first sight.
        let fresh_gate = JwtAuthLayer::new(TokenVerifier::new(keys.clone())).layer(bare_service());
        sample.gate_first.push(one_pass(&requests, fresh_gate));
        sample.gate_hit.push(one_pass(&requests, kept_gate.clone()));
        let fresh_authorizer = authorizer(runtime).into_layer().layer(bare_service());
        sample
            .authorizer_first
            .push(one_pass(&requests, fresh_authorizer));
        sample
            .authorizer_hit
            .push(one_pass(&requests, kept_authorizer.clone()));

        let start = Instant::now();
        for token in &tokens {
            black_box(jsonwebtoken::decode::<Claims>(token, &decoding11, &validation11).unwrap());
        }
        sample
            .decode11
            .push(start.elapsed().as_nanos() as f64 / count as f64);
        let start = Instant::now();
        for token in &tokens {
            black_box(jsonwebtoken9::decode::<Claims>(token, &decoding9, &validation9).unwrap());
        }
        sample
            .decode9
            .push(start.elapsed().as_nanos() as f64 / count as f64);
    }
    sample
}

/// Median over rounds of (layered − bare), both measured in the same round.
fn added(layered: &[f64], bare: &[f64]) -> f64 {
    median(
        layered
            .iter()
            .zip(bare)
            .map(|(layered, bare)| layered - bare)
            .collect(),
    )
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Requests completed per second by `HTTP_CONNECTIONS` keep-alive connections hammering
/// `addr`, each walking through `authorizations` (empty: no header) from its own offset.
async fn load(addr: SocketAddr, authorizations: Arc<Vec<String>>) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + HTTP_RUN;
    let mut tasks = Vec::new();
    for connection_index in 0..HTTP_CONNECTIONS {
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
                assert!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / HTTP_RUN.as_secs_f64()
}

async fn http(keys: Keys, authorizer: Authorizer<Claims>) {
    let bearer = |token: &String| format!("Bearer {token}");
    let one_token = Arc::new(sign_many(&keys, 1).iter().map(bearer).collect::<Vec<_>>());
    let many_tokens = Arc::new(
        sign_many(&keys, 100_000)
            .iter()
            .map(bearer)
            .collect::<Vec<_>>(),
    );

    // Steady state: every token verified once, as in a service running for a while.
    let verifier = TokenVerifier::new(keys.clone());
    for authorization in many_tokens.iter() {
        let token = authorization.strip_prefix("Bearer ").unwrap();
        verifier.verify(token).unwrap();
    }
    let bare = serve(Router::new().route("/me", get(|| async { "user" }))).await;
    let gate = serve(
        Router::new()
            .route(
                "/me",
                get(|Extension(claims): Extension<Claims>| async move { claims.sub }),
            )
            .layer(JwtAuthLayer::new(verifier)),
    )
    .await;
    let authorized = serve(
        Router::new()
            .route(
                "/me",
                get(|JwtClaims(claims): JwtClaims<Claims>| async move { claims.sub }),
            )
            .layer(authorizer.into_layer()),
    )
    .await;

    let no_token = Arc::new(Vec::new());
    let mut runs: [Vec<f64>; 5] = Default::default();
    for _ in 0..HTTP_ROUNDS {
        runs[0].push(load(bare, no_token.clone()).await);
        runs[1].push(load(gate, one_token.clone()).await);
        runs[2].push(load(authorized, one_token.clone()).await);
        runs[3].push(load(gate, many_tokens.clone()).await);
        runs[4].push(load(authorized, many_tokens.clone()).await);
    }
    let [bare_rps, gate_one, authorizer_one, gate_many, authorizer_many] = runs.map(median);
    println!(
        "\n### Loopback HTTP/1.1 (axum 0.7 for all three), {HTTP_CONNECTIONS} keep-alive connections, \
         {HTTP_ROUNDS} alternating runs of {HTTP_RUN:?} each, medians\n"
    );
    println!("| server | requests/s | × bare | jwt-gate ÷ jwt-authorizer |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| bare handler | {bare_rps:.0} | 1.00 | |");
    for (label, gate_rps, authorizer_rps) in [
        ("one token", gate_one, authorizer_one),
        ("100,000 tokens cycling", gate_many, authorizer_many),
    ] {
        println!(
            "| jwt-gate, {label} | {gate_rps:.0} | {:.2} | {:.2} |",
            gate_rps / bare_rps,
            gate_rps / authorizer_rps
        );
        println!(
            "| jwt-authorizer, {label} | {authorizer_rps:.0} | {:.2} | |",
            authorizer_rps / bare_rps
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let keys = Keys::hs256(SECRET.as_bytes()).unwrap();

    println!(
        "## jwt-gate vs jwt-authorizer 0.15, HS256, same tokens, one process\n\n\
         ### Added cost per request over the bare service (ns), median of {ROUNDS} interleaved rounds\n"
    );
    println!(
        "| tokens | first sight: jwt-gate | first sight: jwt-authorizer | ratio | \
         repeated: jwt-gate | repeated: jwt-authorizer | ratio | bare service | \
         jsonwebtoken 11 decode | jsonwebtoken 9 decode |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for count in SIZES {
        let sample = in_process(&runtime, &keys, count);
        let gate_first = added(&sample.gate_first, &sample.bare);
        let authorizer_first = added(&sample.authorizer_first, &sample.bare);
        let gate_hit = added(&sample.gate_hit, &sample.bare);
        let authorizer_hit = added(&sample.authorizer_hit, &sample.bare);
        println!(
            "| {count} | {gate_first:.0} | {authorizer_first:.0} | {:.2} | {gate_hit:.0} | \
             {authorizer_hit:.0} | {:.3} | {:.0} | {:.0} | {:.0} |",
            gate_first / authorizer_first,
            gate_hit / authorizer_hit,
            median(sample.bare),
            median(sample.decode11),
            median(sample.decode9),
        );
    }
    println!(
        "\nratio = jwt-gate ÷ jwt-authorizer (targets: ≤ 0.8 first sight, ≤ 0.2 repeated). \
         jwt-authorizer keeps no cache: its two columns measure the same work."
    );

    let authorizer = authorizer(&runtime);
    runtime.block_on(http(keys, authorizer));
}
