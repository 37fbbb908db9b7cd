//! The protected route's latency while clients flood the auth service with 1 MB registration
//! bodies (`cargo bench --bench register_flood`): a body whose `Content-Length` is over the
//! 16 KiB cap is refused before a byte of it is read, and a chunked one as soon as 16 KiB
//! have arrived, so a flood of them should cost the protected route no more than the same
//! clients sending 2-byte bodies (the control). The flooding clients share the machine (and
//! this process) with the server, as in the attack run. Prints a table; asserts nothing (the
//! figures depend on the machine). Runs alternate, so all see the same load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jwt_gate::service::AuthService;
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GET_CONNECTIONS: usize = 8;
const FLOODERS: usize = 20;
const BODY_BYTES: usize = 1 << 20;
const PIECE: usize = 64 * 1024;
const RUN: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flood {
    None,
    /// The control: the same clients, each sending a 2-byte body, answered `422`.
    Small,
    DeclaredLength,
    Chunked,
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// The latency of every `GET /me` that `GET_CONNECTIONS` keep-alive connections complete
/// within `RUN`.
async fn get_latencies(addr: SocketAddr, bearer: Arc<String>) -> Vec<Duration> {
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for _ in 0..GET_CONNECTIONS {
        let bearer = bearer.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let request = Request::builder()
                    .uri("/me")
                    .header("host", "bench")
                    .header("authorization", bearer.as_str())
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let started = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                assert!(response.status().is_success());
                response.into_body().collect().await.unwrap();
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all
}

/// Sends one registration body on a fresh connection; whether it was answered.
async fn send_body(addr: SocketAddr, flood: Flood) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let (framing, body_bytes) = match flood {
        Flood::Chunked => ("transfer-encoding: chunked".to_owned(), BODY_BYTES),
        Flood::Small => ("content-length: 2".to_owned(), 0),
        _ => (format!("content-length: {BODY_BYTES}"), BODY_BYTES),
    };
    let head = format!(
        "POST /auth/register HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    let piece = vec![b' '; PIECE];
    let chunk_head = format!("{PIECE:x}\r\n");
    let mut sent = stream.write_all(head.as_bytes()).await.is_ok();
    if flood == Flood::Small {
        sent = sent && stream.write_all(b"{}").await.is_ok();
    }
    let mut written = 0;
    // The server may answer and close before the body is through: the writes then fail,
    // which is the point.
    while sent && written < body_bytes {
        sent = match flood {
            Flood::Chunked => {
                stream.write_all(chunk_head.as_bytes()).await.is_ok()
                    && stream.write_all(&piece).await.is_ok()
                    && stream.write_all(b"\r\n").await.is_ok()
            }
            _ => stream.write_all(&piece).await.is_ok(),
        };
        written += PIECE;
    }
    if sent && flood == Flood::Chunked {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let mut answer = [0u8; 12];
    let answered = stream.read_exact(&mut answer).await.is_ok();
    let expected: &[u8] = if flood == Flood::Small {
        b"422"
    } else {
        b"413"
    };
    answered && &answer[9..12] == expected
}

/// `FLOODERS` clients sending bodies back to back until `stop`; counts the expected answers.
fn start_flood(
    addr: SocketAddr,
    flood: Flood,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..FLOODERS)
        .map(|_| {
            let (stop, refused) = (stop.clone(), refused.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if send_body(addr, flood).await {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

struct Run {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    answered_per_second: f64,
}

async fn run(addr: SocketAddr, bearer: Arc<String>, flood: Flood) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let flooders = if flood == Flood::None {
        Vec::new()
    } else {
        start_flood(addr, flood, stop.clone(), refused.clone())
    };
    let latencies = get_latencies(addr, bearer).await;
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let at = |fraction: f64| {
        let index = ((latencies.len() as f64 * fraction) as usize).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1000.0
    };
    Run {
        requests_per_second: latencies.len() as f64 / RUN.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        answered_per_second: refused.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let keys = Keys::hs256(b"a benchmark secret of 32 bytes!!").unwrap();
    let verifier = TokenVerifier::new(keys.clone());
    let now = jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock);
    let bearer = Arc::new(format!(
        "Bearer {}",
        keys.sign(&Claims::new("alice", now, now + 900)).unwrap()
    ));
    let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
    let addr = serve(
        Router::new()
            .route("/me", get(|claims: Claims| async move { claims.sub }))
            .nest_service("/auth", auth)
            .layer(JwtAuthLayer::new(verifier).open_prefix("/auth")),
    )
    .await;

    let phases = [
        (Flood::None, "alone"),
        (Flood::Small, "2-byte bodies (control)"),
        (
            Flood::DeclaredLength,
            "1 MB bodies, Content-Length declared",
        ),
        (Flood::Chunked, "1 MB bodies, chunked"),
    ];
    let mut runs: Vec<Vec<Run>> = phases.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (index, (flood, _)) in phases.iter().enumerate() {
            runs[index].push(run(addr, bearer.clone(), *flood).await);
        }
    }
    println!(
        "GET /me behind the gate, {GET_CONNECTIONS} keep-alive connections, while {FLOODERS} clients \
         POST 1 MB bodies to /auth/register; {ROUNDS} alternating runs of {RUN:?}, medians\n"
    );
    println!("| phase | GET requests/s | p50 ms | p99 ms | bodies answered (422 / 413)/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut p99s = Vec::new();
    for ((_, name), runs) in phases.iter().zip(&runs) {
        let pick = |field: fn(&Run) -> f64| median(runs.iter().map(field).collect());
        let p99 = pick(|run| run.p99_ms);
        p99s.push(p99);
        println!(
            "| {name} | {:.0} | {:.2} | {p99:.2} | {:.0} |",
            pick(|run| run.requests_per_second),
            pick(|run| run.p50_ms),
            pick(|run| run.answered_per_second),
        );
    }
    println!(
        "\np99 / alone: {:.2} x (2-byte bodies), {:.2} x (1 MB, Content-Length), {:.2} x (1 MB, chunked)",
        p99s[1] / p99s[0],
        p99s[2] / p99s[0],
        p99s[3] / p99s[0]
    );
}
