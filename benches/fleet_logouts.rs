//! The fleet under logouts: two gates sharing Redis, each serving steady traffic, while one of
//! them records 1,000 logouts a second for 30 seconds; then the memory a gate's mirror takes
//! per revoked token, at 1,000,000 revocations.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench fleet_logouts
//! ```
//!
//! `FLEET_LOGOUTS_PER_SECOND`, `FLEET_LOGOUT_SECONDS`, `FLEET_BASELINE_SECONDS`,
//! `FLEET_REQUESTS_PER_SECOND` (per gate) and `FLEET_MIRROR_REVOCATIONS` change the sizes.
//!
//! Both gates run in this process, each with its own Redis connections and its own mirror, so a
//! revocation reaches the second gate only through Redis, as it would on another machine. The
//! request load is open-loop (a request is due every so often, whether the last one answered or
//! not) and each latency is measured from the instant the request was due, so a stall shows in
//! the p99 instead of slowing the load down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jwt_gate::revocation::{RedisRevocations, RevocationStore, TokenId};
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::MissedTickBehavior;

/// Keep-alive connections per gate carrying the steady traffic.
const CONNECTIONS: usize = 8;
/// Tokens of users who never log out, presented round-robin by the steady traffic.
const STEADY_USERS: usize = 1_000;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `jti` shaped like the ones real issuers use (32 hex digits), distinct for each `index`.
fn jti(kind: &str, run: u64, index: u64) -> String {
    let mixed = (index ^ run).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{kind}{run:08x}{mixed:024x}")
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Latencies in microseconds: p50, p99 and the largest.
fn summary(mut micros: Vec<u64>) -> (u64, u64, u64, usize) {
    micros.sort_unstable();
    (
        percentile(&micros, 0.50),
        percentile(&micros, 0.99),
        micros.last().copied().unwrap_or(0),
        micros.len(),
    )
}

fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

async fn gate(keys: &Keys, revocations: RedisRevocations) -> SocketAddr {
    let verifier = TokenVerifier::builder(keys.clone())
        .revocations(revocations)
        .build();
    let app = Router::new()
        .route("/me", get(|claims: Claims| async move { claims.sub }))
        .layer(JwtAuthLayer::new(verifier));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn status(sender: &mut Sender, authorization: &str) -> StatusCode {
    let request = Request::builder()
        .uri("/me")
        .header("host", "bench")
        .header("authorization", authorization)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

/// Steady traffic on one gate for `length`: `rate` requests a second over `CONNECTIONS`
/// connections. Returns each request's latency from the instant it was due, and how many
/// answers were not `200`.
async fn steady(
    addr: SocketAddr,
    tokens: Arc<Vec<String>>,
    rate: u64,
    length: Duration,
) -> (Vec<u64>, u64) {
    let refused = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(CONNECTIONS as f64 / rate as f64);
    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let (tokens, refused) = (tokens.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let mut latencies = Vec::new();
            let mut ticks = tokio::time::interval_at(
                tokio::time::Instant::now()
                    + period.mul_f64(connection as f64 / CONNECTIONS as f64),
                period,
            );
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let end = Instant::now() + length;
            let mut next = connection * 97;
            while Instant::now() < end {
                let due = ticks.tick().await.into_std();
                let answer = status(&mut sender, &tokens[next % tokens.len()]).await;
                latencies.push(due.elapsed().as_micros() as u64);
                if answer != StatusCode::OK {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                next += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (latencies, refused.load(Ordering::Relaxed))
}

/// Steady traffic on both gates at once.
async fn both(
    gates: [SocketAddr; 2],
    tokens: &Arc<Vec<String>>,
    rate: u64,
    length: Duration,
) -> [(Vec<u64>, u64); 2] {
    let first = tokio::spawn(steady(gates[0], tokens.clone(), rate, length));
    let second = tokio::spawn(steady(gates[1], tokens.clone(), rate, length));
    [first.await.unwrap(), second.await.unwrap()]
}

struct Pending {
    jti: String,
    exp: u64,
    acknowledged: Instant,
}

/// Watches the second gate's mirror from its own thread, so the watching costs the gates'
/// runtime nothing: each acknowledged revocation is checked every 100 µs until the mirror
/// refuses it, and the time from the acknowledgement to that moment is its propagation.
fn watch(
    mirror: RedisRevocations,
    pending: Arc<Mutex<Vec<Pending>>>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut propagation = Vec::new();
        let mut waiting: Vec<Pending> = Vec::new();
        let mut finished_at: Option<Instant> = None;
        loop {
            let finished = done.load(Ordering::Acquire);
            waiting.append(&mut pending.lock().unwrap());
            waiting.retain(|revocation| {
                let token = TokenId {
                    jti: &revocation.jti,
                    sub: "logged-out",
                    issuer: None,
                    sid: None,
                    iat: revocation.exp - 900,
                    exp: revocation.exp,
                };
                let revoked = matches!(
                    mirror.check(&token),
                    jwt_gate::revocation::RevocationCheck::Revoked
                );
                if revoked {
                    propagation.push(revocation.acknowledged.elapsed().as_micros() as u64);
                }
                !revoked
            });
            if finished {
                let gave_up = *finished_at.get_or_insert_with(Instant::now);
                if waiting.is_empty() || gave_up.elapsed() > Duration::from_secs(10) {
                    if !waiting.is_empty() {
                        eprintln!(
                            "{} revocations never reached the second gate's mirror",
                            waiting.len()
                        );
                    }
                    return propagation;
                }
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    })
}

async fn mirror_memory(url: &str, run: u64, revocations: u64) {
    let prefix = format!("jwt-gate-bench:{run:08x}:memory:");
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let used_memory = |info: String| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    let redis_before = used_memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut connection)
            .await
            .unwrap(),
    );
    let exp = unix_now() + 900;
    let started = Instant::now();
    let mut index = 0;
    while index < revocations {
        let mut batch = redis::pipe();
        for _ in 0..10_000.min(revocations - index) {
            // What `revoke` stores: the key, expiring at the token's `exp` plus the grace.
            batch
                .cmd("SET")
                .arg(format!("{prefix}jti:{}", jti("m", run, index)))
                .arg(1)
                .arg("EXAT")
                .arg(exp + 60)
                .ignore();
            index += 1;
        }
        batch.query_async::<()>(&mut connection).await.unwrap();
    }
    let redis_after = used_memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut connection)
            .await
            .unwrap(),
    );
    let filled = started.elapsed();

    let before = resident_bytes();
    let started = Instant::now();
    let mirror = RedisRevocations::connect(url)
        .key_prefix(&prefix)
        .await
        .unwrap();
    let loaded = started.elapsed();
    let after = resident_bytes();
    assert!(mirror.mirror_is_current());
    let probe = TokenId {
        jti: &jti("m", run, revocations - 1),
        sub: "probe",
        issuer: None,
        sid: None,
        iat: exp - 900,
        exp,
    };
    assert!(matches!(
        mirror.check(&probe),
        jwt_gate::revocation::RevocationCheck::Revoked
    ));

    println!("mirror memory at {revocations} revoked tokens (32-character jti)");
    println!("| what | total | per revoked token |\n| --- | ---: | ---: |");
    println!(
        "| gate's mirror (resident memory growth while loading) | {:.1} MiB | {} bytes |",
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) / revocations
    );
    println!(
        "| Redis (`used_memory` growth) | {:.1} MiB | {} bytes |",
        redis_after.saturating_sub(redis_before) as f64 / (1 << 20) as f64,
        redis_after.saturating_sub(redis_before) / revocations
    );
    println!(
        "written to Redis in {:.1} s; a starting gate loaded its mirror in {:.1} s",
        filled.as_secs_f64(),
        loaded.as_secs_f64()
    );
    drop(mirror);

    unlink_prefix(&mut connection, &prefix).await;
}

/// Removes what a run wrote: the keys would expire by themselves, but the next run should start
/// clean.
async fn unlink_prefix(connection: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let mut cursor = 0_u64;
    loop {
        let (next, names): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(connection)
            .await
            .unwrap();
        if !names.is_empty() {
            redis::cmd("UNLINK")
                .arg(&names)
                .query_async::<()>(connection)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let logouts_per_second = setting("FLEET_LOGOUTS_PER_SECOND", 1_000);
    let logout_seconds = setting("FLEET_LOGOUT_SECONDS", 30);
    let baseline_seconds = setting("FLEET_BASELINE_SECONDS", 15);
    let rate = setting("FLEET_REQUESTS_PER_SECOND", 1_000);
    let mirror_revocations = setting("FLEET_MIRROR_REVOCATIONS", 1_000_000);
    let run = u64::from(std::process::id()) ^ unix_now();
    let prefix = format!("jwt-gate-bench:{run:08x}:");

    // First, while the process is fresh: memory freed later would be reused, and hide growth.
    mirror_memory(&url, run, mirror_revocations).await;

    let keys = Keys::hs256(b"a benchmark secret of 32 bytes!!").unwrap();
    let now = unix_now();
    let bearer = |sub: &str, jti: String| {
        let mut claims = Claims::new(sub, now, now + 900);
        claims.jti = jti;
        format!("Bearer {}", keys.sign(&claims).unwrap())
    };
    let steady_tokens = Arc::new(
        (0..STEADY_USERS as u64)
            .map(|index| bearer(&format!("user{index}"), jti("s", run, index)))
            .collect::<Vec<_>>(),
    );
    let logouts = logouts_per_second * logout_seconds;
    let logged_out: Vec<(String, String)> = (0..logouts)
        .map(|index| {
            let jti = jti("l", run, index);
            (jti.clone(), bearer("logged-out", jti))
        })
        .collect();

    let connect_store = || async {
        RedisRevocations::connect(&url)
            .key_prefix(&prefix)
            .await
            .expect("Redis at REDIS_URL (default redis://127.0.0.1:6379)")
    };
    let (revoking, watched) = (connect_store().await, connect_store().await);
    let gates = [
        gate(&keys, revoking.clone()).await,
        gate(&keys, watched.clone()).await,
    ];
    // Every token verified once on each gate, as in a service that has been running a while.
    both(gates, &steady_tokens, rate, Duration::from_secs(2)).await;

    let baseline_length = Duration::from_secs(baseline_seconds);
    let before = both(gates, &steady_tokens, rate, baseline_length).await;

    // The logouts: one every `1 / logouts_per_second`, each acknowledged by Redis through the
    // first gate's store (what the auth service's logout does), without waiting for the last.
    let pending = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = watch(watched.clone(), pending.clone(), done.clone());
    let during = {
        let traffic = tokio::spawn({
            let tokens = steady_tokens.clone();
            async move { both(gates, &tokens, rate, Duration::from_secs(logout_seconds)).await }
        });
        let mut ticks =
            tokio::time::interval(Duration::from_secs_f64(1.0 / logouts_per_second as f64));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut writes = Vec::with_capacity(logged_out.len());
        for (jti, _) in &logged_out {
            ticks.tick().await;
            let (store, pending, jti) = (revoking.clone(), pending.clone(), jti.clone());
            writes.push(tokio::spawn(async move {
                let started = Instant::now();
                store
                    .revoke(&jti, now + 900)
                    .await
                    .expect("Redis acknowledges");
                let acknowledged = Instant::now();
                pending.lock().unwrap().push(Pending {
                    jti,
                    exp: now + 900,
                    acknowledged,
                });
                (acknowledged - started).as_micros() as u64
            }));
        }
        let mut acknowledgements = Vec::with_capacity(writes.len());
        for write in writes {
            acknowledgements.push(write.await.unwrap());
        }
        (traffic.await.unwrap(), acknowledgements)
    };
    done.store(true, Ordering::Release);
    let propagation = watcher.join().unwrap();
    let after = both(gates, &steady_tokens, rate, baseline_length).await;

    // Every logged-out token, presented to both gates over HTTP: none may pass.
    let mut passed = [0_u64; 2];
    for (gate, passed) in gates.iter().zip(passed.iter_mut()) {
        let mut sender = connect(*gate).await;
        for (_, authorization) in &logged_out {
            // A refusal may close the connection; a closed one is replaced.
            if sender.ready().await.is_err() {
                sender = connect(*gate).await;
            }
            if status(&mut sender, authorization).await != StatusCode::UNAUTHORIZED {
                *passed += 1;
            }
        }
    }

    let (traffic, acknowledgements) = during;
    println!(
        "\ntwo gates sharing Redis, {rate} requests/s each over {CONNECTIONS} connections, \
         {logouts_per_second} logouts/s for {logout_seconds} s through the first gate"
    );
    println!("| gate | phase | requests | p50 | p99 | max | not 200 |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut baseline_p99 = [0_u64; 2];
    for (index, name) in ["first (revokes)", "second (follows)"].iter().enumerate() {
        let phases = [
            ("before", &before[index]),
            ("logouts", &traffic[index]),
            ("after", &after[index]),
        ];
        for (phase, (latencies, refused)) in phases {
            let (p50, p99, max, count) = summary(latencies.clone());
            if phase != "logouts" {
                baseline_p99[index] = baseline_p99[index].max(p99);
            }
            println!(
                "| {name} | {phase} | {count} | {} | {} | {} | {refused} |",
                ms(p50),
                ms(p99),
                ms(max)
            );
        }
    }
    for (index, name) in ["first", "second"].iter().enumerate() {
        let (_, p99, _, _) = summary(traffic[index].0.clone());
        println!(
            "{name} gate: p99 under logouts / worse baseline p99 = {:.2} x",
            p99 as f64 / baseline_p99[index].max(1) as f64
        );
    }
    let (ack50, ack99, ack_max, acks) = summary(acknowledgements);
    let (prop50, prop99, prop_max, propagated) = summary(propagation);
    println!("\n| logouts | count | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| revocation acknowledged by Redis | {acks} | {} | {} | {} |",
        ms(ack50),
        ms(ack99),
        ms(ack_max)
    );
    println!(
        "| from acknowledgement to the second gate's mirror | {propagated} | {} | {} | {} |",
        ms(prop50),
        ms(prop99),
        ms(prop_max)
    );
    println!(
        "logged-out tokens that still passed: {} on the first gate, {} on the second (of {logouts} each)",
        passed[0], passed[1]
    );
    drop((revoking, watched));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    unlink_prefix(&mut connection, &prefix).await;
    assert_eq!(passed, [0, 0], "a revoked token passed a gate");
}
