//! A small HTTP/1.1 load generator for the comparisons in `compare/README.md`.
//!
//! ```text
//! compare-load versus DEMO_ADDR FASTAPI_ADDR [--seconds S] [--rounds R]
//! compare-load flood ADDR [--seconds S] [--rounds R] [--logins N] [--one-address]
//! compare-load bodies ADDR [--seconds S] [--rounds R] [--flooders N] [--get-rate R]
//!                          [--flood-nice N]
//! ```
//!
//! `versus`: `GET /auth-test` of both servers under the same load (N keep-alive connections
//! for S seconds, the two servers alternating, at two connection counts), then the latency
//! of one login at a time on each.
//!
//! `flood`: `GET /auth-test` latency of one server alone, then while N clients (default 50),
//! each its own user, log in continuously, alternating, at two connection counts.
//!
//! `bodies`: `GET /auth-test` latency of one server alone, then while N clients (default 20)
//! send `POST /auth/register` bodies back to back, each on a fresh connection: 2-byte bodies
//! (the control: the same connections and requests, answered `422`), 1 MB bodies with their
//! `Content-Length` declared, and 1 MB chunked bodies; the phases alternate within every
//! round. The GET clients send 10,000 requests a second in all on a fixed schedule
//! (`--get-rate`; 0 sends back to back); the flooders run in a child process (this program
//! again, as `flooder ADDR small|declared|chunked`) under `nice -n 19` (`--flood-nice`), so
//! the CPU they take for themselves, which an attacker's own machine would pay, does not
//! decide the figure; two more phases run them at normal priority.
//!
//! All register the users they need (an existing user is fine) through `POST
//! /auth/register` and log in through `POST /auth/token` (an OAuth2 password form). Only
//! loopback addresses are accepted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const PASSWORD: &str = "correct horse battery staple";
const CONNECTION_COUNTS: [usize; 2] = [8, 32];
const FLOOD_CONNECTION_COUNTS: [usize; 2] = [4, 32];
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

struct Options {
    seconds: u64,
    rounds: usize,
    logins: usize,
    one_address: bool,
    flooders: usize,
    /// `bodies`: GET requests a second (0: back to back).
    get_rate: f64,
    /// `bodies`: the flooders' `nice` value.
    flood_nice: u32,
    /// `flooder`: how long to flood.
    milliseconds: u64,
}

/// A connection to `addr` from the loopback address `source` (any of 127.0.0.0/8 on Linux).
async fn connect_from(addr: SocketAddr, source: Ipv4Addr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::over(stream).await
    }

    /// A connection from the loopback address `source` (any of 127.0.0.0/8 on Linux), so
    /// that a server counting per client address sees distinct clients.
    async fn open_from(addr: SocketAddr, source: Ipv4Addr) -> Self {
        let stream = connect_from(addr, source)
            .await
            .unwrap_or_else(|error| panic!("connect from {source}: {error}"));
        Self::over(stream).await
    }

    async fn over(stream: TcpStream) -> Self {
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Self { sender }
    }

    /// Sends one request; panics if no answer comes within `ANSWER_WITHIN`, so that a server
    /// that stalls ends the run with a clear message instead of hanging it.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|| panic!("no answer to {path} within {ANSWER_WITHIN:?}"))
    }

    /// Sends one request; `None` if no answer came within `ANSWER_WITHIN`, after which the
    /// connection is unusable.
    async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Option<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let exchange = async {
            self.sender.ready().await.expect("connection usable");
            let response = self
                .sender
                .send_request(request.body(Full::new(body)).unwrap())
                .await
                .expect("response");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, body)
        };
        tokio::time::timeout(ANSWER_WITHIN, exchange).await.ok()
    }

    async fn register(&mut self, username: &str) {
        let body = serde_json::json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": PASSWORD,
        });
        let (status, reply) = self
            .send(
                Method::POST,
                "/auth/register",
                &[("content-type", "application/json")],
                Bytes::from(body.to_string()),
            )
            .await;
        assert!(
            status.is_success() || status == StatusCode::CONFLICT,
            "register {username}: {status} {}",
            String::from_utf8_lossy(&reply)
        );
    }

    /// Logs in; the access token on success, else the status (0: no answer in time, after
    /// which the connection is unusable).
    async fn login(&mut self, username: &str) -> Result<String, u16> {
        let form = format!(
            "grant_type=password&username={username}&password={}",
            PASSWORD.replace(' ', "+")
        );
        let (status, reply) = self
            .try_send(
                Method::POST,
                "/auth/token",
                &[("content-type", "application/x-www-form-urlencoded")],
                Bytes::from(form),
            )
            .await
            .ok_or(0u16)?;
        if !status.is_success() {
            return Err(status.as_u16());
        }
        let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON token reply");
        Ok(reply["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned())
    }
}

#[derive(Clone, Copy, Default)]
struct Stats {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: u64,
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e3
}

/// `connections` keep-alive connections sending `GET /auth-test` with `bearer` back to back
/// for `duration`; latency of every completed request.
async fn get_load(addr: SocketAddr, bearer: &str, connections: usize, duration: Duration) -> Stats {
    paced_get_load(addr, bearer, connections, duration, None).await
}

/// [`get_load`], but with `rate` (requests a second, all connections together) each
/// connection sends on a fixed schedule instead of back to back: an open load that leaves the
/// server idle time, as a service's real traffic does. A request the schedule has already
/// passed (the previous answer came late) goes at once. Latency runs from the send.
async fn paced_get_load(
    addr: SocketAddr,
    bearer: &str,
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
) -> Stats {
    let authorization = Arc::new(format!("Bearer {bearer}"));
    let failures = Arc::new(AtomicU64::new(0));
    let mut opened = Vec::new();
    for _ in 0..connections {
        opened.push(Connection::open(addr).await);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for mut connection in opened {
        let (authorization, failures) = (authorization.clone(), failures.clone());
        let mut schedule = rate.map(|rate| {
            let mut ticks =
                tokio::time::interval(Duration::from_secs_f64(connections as f64 / rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            ticks
        });
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                if let Some(schedule) = &mut schedule {
                    schedule.tick().await;
                }
                let sent = Instant::now();
                let answer = connection
                    .try_send(
                        Method::GET,
                        "/auth-test",
                        &[("authorization", authorization.as_str())],
                        Bytes::new(),
                    )
                    .await;
                latencies.push(sent.elapsed());
                match answer {
                    Some((status, _)) if status.is_success() => {}
                    Some(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        connection = Connection::open(addr).await;
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Stats {
        requests_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        failures: failures.load(Ordering::Relaxed),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median_stats(samples: &[Stats]) -> Stats {
    Stats {
        requests_per_second: median(samples.iter().map(|s| s.requests_per_second).collect()),
        p50_ms: median(samples.iter().map(|s| s.p50_ms).collect()),
        p99_ms: median(samples.iter().map(|s| s.p99_ms).collect()),
        failures: samples.iter().map(|s| s.failures).sum(),
    }
}

fn spread(values: impl Iterator<Item = f64>) -> String {
    let values: Vec<String> = values.map(|value| format!("{value:.0}")).collect();
    values.join(" / ")
}

fn spread_ms(values: impl Iterator<Item = f64>) -> String {
    let values: Vec<String> = values.map(|value| format!("{value:.2}")).collect();
    values.join(" / ")
}

async fn token_for(addr: SocketAddr, username: &str) -> String {
    let mut connection = Connection::open(addr).await;
    connection.register(username).await;
    connection
        .login(username)
        .await
        .unwrap_or_else(|status| panic!("login of {username} at {addr}: {status}"))
}

async fn versus(demo: SocketAddr, fastapi: SocketAddr, options: &Options) {
    let servers = [("jwt-gate demo", demo), ("FastAPI tutorial", fastapi)];
    let mut tokens = Vec::new();
    for (_, addr) in servers {
        tokens.push(token_for(addr, "bench").await);
    }
    let duration = Duration::from_secs(options.seconds);
    // Warm both (connection pools, caches, JIT-free but lazy imports) before measuring.
    for (index, (_, addr)) in servers.iter().enumerate() {
        get_load(*addr, &tokens[index], 8, Duration::from_secs(1)).await;
    }

    println!(
        "## GET /auth-test, jwt-gate demo vs FastAPI tutorial app\n\n\
         {} alternating rounds of {}s per server and connection count (the first server \
         alternates between rounds); medians, then every round's value\n",
        options.rounds, options.seconds
    );
    println!(
        "| connections | server | requests/s | p50 ms | p99 ms | failures | requests/s per round |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | --- |");
    for connections in CONNECTION_COUNTS {
        let mut samples: [Vec<Stats>; 2] = Default::default();
        for round in 0..options.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                samples[index]
                    .push(get_load(servers[index].1, &tokens[index], connections, duration).await);
            }
        }
        let medians = samples.each_ref().map(|s| median_stats(s));
        for (index, (name, _)) in servers.iter().enumerate() {
            let stats = medians[index];
            println!(
                "| {connections} | {name} | {:.0} | {:.2} | {:.2} | {} | {} |",
                stats.requests_per_second,
                stats.p50_ms,
                stats.p99_ms,
                stats.failures,
                spread(samples[index].iter().map(|s| s.requests_per_second)),
            );
        }
        println!(
            "| {connections} | **demo ÷ FastAPI** | **{:.1} ×** | | | | |",
            medians[0].requests_per_second / medians[1].requests_per_second
        );
    }

    // One login at a time, each on a connection already open, the two servers alternating.
    let logins_per_round = [10usize, 4];
    let mut latencies: [Vec<f64>; 2] = Default::default();
    let mut connections = [
        Connection::open(demo).await,
        Connection::open(fastapi).await,
    ];
    for round in 0..options.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            for _ in 0..logins_per_round[index] {
                let sent = Instant::now();
                connections[index]
                    .login("bench")
                    .await
                    .expect("the bench user logs in");
                latencies[index].push(sent.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    println!(
        "\n## One login (POST /auth/token, correct password), sequential, {} rounds alternating\n",
        options.rounds
    );
    println!("| server | logins | median ms | min ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (index, (name, _)) in servers.iter().enumerate() {
        let values = &latencies[index];
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            values.len(),
            median(values.clone()),
            values.iter().copied().fold(f64::INFINITY, f64::min),
            values.iter().copied().fold(0.0, f64::max),
        );
    }
}

/// Answers to the flood's logins: status code (0: none in time) → count.
type Tally = Arc<Mutex<BTreeMap<u16, u64>>>;

/// `clients` users logging in back to back until `stop`, each on its own connection from its
/// own loopback address (127.0.0.2, 127.0.0.3, …) unless `one_address`.
fn start_login_flood(
    addr: SocketAddr,
    clients: usize,
    one_address: bool,
    stop: Arc<AtomicBool>,
    tally: Tally,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|index| {
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(async move {
                let username = format!("flood{index}");
                let open = || async {
                    if one_address {
                        Connection::open(addr).await
                    } else {
                        let host = u8::try_from(index + 2).expect("at most 253 login clients");
                        Connection::open_from(addr, Ipv4Addr::new(127, 0, 0, host)).await
                    }
                };
                let mut connection = open().await;
                while !stop.load(Ordering::Relaxed) {
                    let status = match connection.login(&username).await {
                        Ok(_) => 200,
                        Err(0) => {
                            connection = open().await;
                            0
                        }
                        Err(status) => status,
                    };
                    *tally.lock().unwrap().entry(status).or_default() += 1;
                }
            })
        })
        .collect()
}

fn describe(tally: &BTreeMap<u16, u64>) -> String {
    let parts: Vec<String> = tally
        .iter()
        .map(|(status, count)| match status {
            0 => format!("no answer within {ANSWER_WITHIN:?}: {count}"),
            _ => format!("{status}: {count}"),
        })
        .collect();
    parts.join(", ")
}

async fn flood(addr: SocketAddr, options: &Options) {
    let token = token_for(addr, "bench").await;
    for index in 0..options.logins {
        // Each user signs up from its own loopback address, as people do: the demo throttles
        // registrations per address.
        let host = u8::try_from(index + 2).expect("at most 253 login clients");
        Connection::open_from(addr, Ipv4Addr::new(127, 0, 0, host))
            .await
            .register(&format!("flood{index}"))
            .await;
    }
    let duration = Duration::from_secs(options.seconds);
    get_load(addr, &token, 8, Duration::from_secs(1)).await;

    let sources = if options.one_address {
        "all from 127.0.0.1"
    } else {
        "each from its own loopback address"
    };
    println!(
        "## GET /auth-test latency alone and while {} clients log in continuously ({addr})\n\n\
         {} distinct users, {sources}; {} alternating rounds of {}s each; medians, then \
         every round's p99\n",
        options.logins, options.logins, options.rounds, options.seconds
    );
    println!(
        "| GET connections | phase | requests/s | p50 ms | p99 ms | failures | successful logins/s | p99 per round |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for connections in FLOOD_CONNECTION_COUNTS {
        let (mut alone, mut flooded, mut login_rates) = (Vec::new(), Vec::new(), Vec::new());
        let tally: Tally = Arc::default();
        for _ in 0..options.rounds {
            alone.push(get_load(addr, &token, connections, duration).await);

            let stop = Arc::new(AtomicBool::new(false));
            let clients = start_login_flood(
                addr,
                options.logins,
                options.one_address,
                stop.clone(),
                tally.clone(),
            );
            // Let every login client get going before the protected route is measured.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let succeeded = || tally.lock().unwrap().get(&200).copied().unwrap_or(0);
            let counted_from = succeeded();
            let start = Instant::now();
            flooded.push(get_load(addr, &token, connections, duration).await);
            login_rates.push((succeeded() - counted_from) as f64 / start.elapsed().as_secs_f64());
            stop.store(true, Ordering::Relaxed);
            for client in clients {
                client.await.unwrap();
            }
        }
        let (alone_median, flooded_median) = (median_stats(&alone), median_stats(&flooded));
        println!(
            "| {connections} | alone | {:.0} | {:.2} | {:.2} | {} | | {} |",
            alone_median.requests_per_second,
            alone_median.p50_ms,
            alone_median.p99_ms,
            alone_median.failures,
            spread_ms(alone.iter().map(|s| s.p99_ms)),
        );
        println!(
            "| {connections} | {} clients logging in | {:.0} | {:.2} | {:.2} | {} | {:.1} | {} |",
            options.logins,
            flooded_median.requests_per_second,
            flooded_median.p50_ms,
            flooded_median.p99_ms,
            flooded_median.failures,
            median(login_rates),
            spread_ms(flooded.iter().map(|s| s.p99_ms)),
        );
        println!(
            "| {connections} | **p99 flooded ÷ alone** | | | **{:.2} ×** | | | |",
            flooded_median.p99_ms / alone_median.p99_ms
        );
        println!(
            "| {connections} | login answers (all rounds) | {} | | | | | |",
            describe(&tally.lock().unwrap())
        );
    }
}

/// What the `bodies` flooders send to `POST /auth/register`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bodies {
    /// The control: `{}` with `Content-Length: 2` (answered `422`).
    Small,
    /// 1 MB of spaces, the length declared up front.
    Declared,
    /// 1 MB of spaces in 64 KiB chunks, no length declared.
    Chunked,
}

/// Where the flooders connect from: one attacker's address, not the GET clients' 127.0.0.1.
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

const FLOOD_BODY_BYTES: usize = 1 << 20;
const FLOOD_PIECE: usize = 64 * 1024;
const BODY_GET_CONNECTIONS: usize = 8;

/// Sends one registration body on a fresh connection and reads the status line; the status
/// (0: the connection failed or closed without one).
async fn send_body(addr: SocketAddr, bodies: Bodies) -> u16 {
    let Ok(mut stream) = connect_from(addr, FLOOD_SOURCE).await else {
        return 0;
    };
    let (framing, body_bytes) = match bodies {
        Bodies::Small => ("content-length: 2".to_owned(), 0),
        Bodies::Declared => (
            format!("content-length: {FLOOD_BODY_BYTES}"),
            FLOOD_BODY_BYTES,
        ),
        Bodies::Chunked => ("transfer-encoding: chunked".to_owned(), FLOOD_BODY_BYTES),
    };
    let head = format!(
        "POST /auth/register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         {framing}\r\n\r\n"
    );
    let piece = vec![b' '; FLOOD_PIECE];
    let chunk_head = format!("{FLOOD_PIECE:x}\r\n");
    let mut sent = stream.write_all(head.as_bytes()).await.is_ok();
    if bodies == Bodies::Small {
        sent = sent && stream.write_all(b"{}").await.is_ok();
    }
    // The server may answer and close before the body is through: the writes then fail,
    // which is what a refusal from the declared length looks like.
    let mut written = 0;
    while sent && written < body_bytes {
        sent = match bodies {
            Bodies::Chunked => {
                stream.write_all(chunk_head.as_bytes()).await.is_ok()
                    && stream.write_all(&piece).await.is_ok()
                    && stream.write_all(b"\r\n").await.is_ok()
            }
            _ => stream.write_all(&piece).await.is_ok(),
        };
        written += FLOOD_PIECE;
    }
    if sent && bodies == Bodies::Chunked {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let mut status_line = [0u8; 12];
    let answer = tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut status_line)).await;
    match answer {
        Ok(Ok(_)) => std::str::from_utf8(&status_line[9..12])
            .ok()
            .and_then(|code| code.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

impl Bodies {
    fn name(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Declared => "declared",
            Self::Chunked => "chunked",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Small, Self::Declared, Self::Chunked]
            .into_iter()
            .find(|bodies| bodies.name() == name)
    }
}

/// `clients` flooders sending `bodies` back to back until `stop`, tallying the answers.
fn start_body_flood(
    addr: SocketAddr,
    clients: usize,
    bodies: Bodies,
    stop: Arc<AtomicBool>,
    tally: Tally,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let status = send_body(addr, bodies).await;
                    *tally.lock().unwrap().entry(status).or_default() += 1;
                }
            })
        })
        .collect()
}

/// CPU seconds (user, system) that process `pid` has used, from `/proc` (Linux); zeros
/// elsewhere.
fn cpu_seconds(pid: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may hold spaces, hence the last ')'): utime and
    // stime are the 12th and 13th of them, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
    };
    (
        ticks(11).unwrap_or(0.0) / 100.0,
        ticks(12).unwrap_or(0.0) / 100.0,
    )
}

/// The `flooder` subcommand, what `bodies` runs in a process of its own: `clients` flooders
/// for `seconds`, then one line on standard output: the answers counted per status, the
/// seconds flooded, and this process's CPU seconds (user, system).
async fn flooder(addr: SocketAddr, bodies: Bodies, options: &Options) {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Tally::default();
    let start = Instant::now();
    let cpu_from = cpu_seconds("self");
    let clients = start_body_flood(addr, options.flooders, bodies, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(options.milliseconds)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self");
    let answers: Vec<String> = tally
        .lock()
        .unwrap()
        .iter()
        .map(|(status, count)| format!("{status}={count}"))
        .collect();
    println!(
        "{} {elapsed} {} {}",
        answers.join(","),
        cpu.0 - cpu_from.0,
        cpu.1 - cpu_from.1
    );
}

/// A flood running in a child process (see [`flooder`]) at `nice` priority.
struct FloodProcess(tokio::process::Child);

impl FloodProcess {
    fn start(addr: SocketAddr, bodies: Bodies, clients: usize, run: Duration, nice: u32) -> Self {
        let child = tokio::process::Command::new("nice")
            .arg(format!("-n{nice}"))
            .arg(std::env::current_exe().unwrap())
            .args(["flooder", &addr.to_string(), bodies.name()])
            .args(["--flooders", &clients.to_string()])
            .args(["--milliseconds", &run.as_millis().to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("`nice` and this program start");
        Self(child)
    }

    /// The answers per status, the seconds flooded, and the flooder's CPU seconds.
    async fn finish(self) -> (BTreeMap<u16, u64>, f64, f64, f64) {
        let output = self.0.wait_with_output().await.unwrap();
        assert!(output.status.success(), "the flooder failed");
        let line = String::from_utf8(output.stdout).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [answers, elapsed, user, system] = fields[..] else {
            panic!("unexpected flooder output: {line:?}");
        };
        let tally = answers
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (status, count) = pair.split_once('=').unwrap();
                (status.parse().unwrap(), count.parse().unwrap())
            })
            .collect();
        let number = |field: &str| field.parse::<f64>().unwrap();
        (tally, number(elapsed), number(user), number(system))
    }
}

async fn bodies(addr: SocketAddr, options: &Options) {
    // The server's CPU time per phase, when its pid is given (`compare/run.sh` does).
    let server_pid = std::env::var("SERVER_PID").ok();
    let token = token_for(addr, "bench").await;
    let duration = Duration::from_secs(options.seconds);
    let rate = (options.get_rate > 0.0).then_some(options.get_rate);
    let nice = options.flood_nice;
    paced_get_load(
        addr,
        &token,
        BODY_GET_CONNECTIONS,
        Duration::from_secs(1),
        rate,
    )
    .await;
    // (bodies, the flooders' nice value, name, the row whose p99 is this one's control)
    let phases: [(Option<Bodies>, u32, &str, usize); 6] = [
        (None, 0, "alone", 0),
        (Some(Bodies::Small), nice, "2-byte bodies (control)", 1),
        (
            Some(Bodies::Declared),
            nice,
            "1 MB bodies, Content-Length",
            1,
        ),
        (Some(Bodies::Chunked), nice, "1 MB bodies, chunked", 1),
        (
            Some(Bodies::Small),
            0,
            "2-byte bodies (control), flooders at the GET clients' priority",
            4,
        ),
        (
            Some(Bodies::Declared),
            0,
            "1 MB bodies, Content-Length, flooders at the GET clients' priority",
            4,
        ),
    ];
    let load = match rate {
        Some(rate) => format!("{rate:.0} requests/s in all, each connection on a fixed schedule"),
        None => "back to back".to_owned(),
    };
    println!(
        "## GET /auth-test latency alone and while {} clients POST bodies to /auth/register \
         ({addr})\n\n\
         {BODY_GET_CONNECTIONS} GET connections, {load}; the flooders in a process of their own \
         under `nice -n {nice}` (the attacker's CPU is not the server's) unless the row says \
         otherwise, each body on a fresh connection; the phases alternate within each of {} \
         rounds of {}s (the order rotates every round); medians, then every round's p99\n",
        options.flooders, options.rounds, options.seconds
    );
    let count = phases.len();
    let mut samples: Vec<Vec<Stats>> = (0..count).map(|_| Vec::new()).collect();
    let mut answered: Vec<Vec<f64>> = (0..count).map(|_| Vec::new()).collect();
    let mut tallies: Vec<BTreeMap<u16, u64>> = (0..count).map(|_| BTreeMap::new()).collect();
    // Per phase and round, in cores: server user + system, flooders, GET clients.
    let mut cpu: Vec<Vec<[f64; 3]>> = (0..count).map(|_| Vec::new()).collect();
    const WARM_UP: Duration = Duration::from_millis(300);
    for round in 0..options.rounds {
        for step in 0..count {
            let index = (round + step) % count;
            let (bodies, nice, _, _) = phases[index];
            let flood = bodies.map(|bodies| {
                let run = WARM_UP + duration + Duration::from_millis(200);
                FloodProcess::start(addr, bodies, options.flooders, run, nice)
            });
            // Let the flood get going before the protected route is measured.
            tokio::time::sleep(WARM_UP).await;
            let cpu_from = (server_pid.as_deref().map(cpu_seconds), cpu_seconds("self"));
            let start = Instant::now();
            samples[index]
                .push(paced_get_load(addr, &token, BODY_GET_CONNECTIONS, duration, rate).await);
            let elapsed = start.elapsed().as_secs_f64();
            let cores = |(user, system): (f64, f64), (user_from, system_from): (f64, f64)| {
                (user + system - user_from - system_from) / elapsed
            };
            let clients = cores(cpu_seconds("self"), cpu_from.1);
            let server = match (server_pid.as_deref(), cpu_from.0) {
                (Some(pid), Some(from)) => cores(cpu_seconds(pid), from),
                _ => f64::NAN,
            };
            let flooders = match flood {
                None => 0.0,
                Some(flood) => {
                    let (tally, flooded, user, system) = flood.finish().await;
                    let expected = tally.get(&413).or(tally.get(&422)).copied().unwrap_or(0);
                    answered[index].push(expected as f64 / flooded);
                    for (status, count) in tally {
                        *tallies[index].entry(status).or_default() += count;
                    }
                    (user + system) / flooded
                }
            };
            cpu[index].push([server, flooders, clients]);
        }
    }
    println!(
        "| phase | requests/s | p50 ms | p99 ms | p99 ÷ alone | p99 ÷ control | failures | \
         bodies answered/s | server CPU | flooders' CPU | GET clients' CPU | p99 per round |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let alone = median_stats(&samples[0]);
    for (index, (bodies, _, name, control)) in phases.iter().enumerate() {
        let stats = median_stats(&samples[index]);
        let core = |field: usize| median(cpu[index].iter().map(|c| c[field]).collect());
        let versus_control = if bodies.is_some() {
            format!(
                "{:.2} ×",
                stats.p99_ms / median_stats(&samples[*control]).p99_ms
            )
        } else {
            String::new()
        };
        let answered = if bodies.is_some() {
            format!("{:.0}", median(answered[index].clone()))
        } else {
            String::new()
        };
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} × | {versus_control} | {} | {answered} | \
             {:.2} | {:.2} | {:.2} | {} |",
            stats.requests_per_second,
            stats.p50_ms,
            stats.p99_ms,
            stats.p99_ms / alone.p99_ms,
            stats.failures,
            core(0),
            core(1),
            core(2),
            spread_ms(samples[index].iter().map(|s| s.p99_ms)),
        );
    }
    println!("\nCPU in cores (1.00 is one core busy the whole run).");
    for (index, (bodies, _, name, _)) in phases.iter().enumerate() {
        if bodies.is_some() {
            let parts: Vec<String> = tallies[index]
                .iter()
                .map(|(status, count)| match status {
                    0 => format!("no status line (reset, closed or none in time): {count}"),
                    _ => format!("{status}: {count}"),
                })
                .collect();
            println!("\n{name}, answers (all rounds): {}", parts.join(", "));
        }
    }
}

/// A loopback socket address from `127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
fn loopback(argument: &str) -> SocketAddr {
    let addr: SocketAddr = argument
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|error| {
            panic!("{argument} is not an address like 127.0.0.1:3000: {error}")
        });
    assert!(addr.ip().is_loopback(), "only loopback targets: {addr}");
    addr
}

fn usage() -> ! {
    eprintln!(
        "usage: compare-load versus DEMO_ADDR FASTAPI_ADDR [--seconds S] [--rounds R]\n       \
         compare-load flood ADDR [--seconds S] [--rounds R] [--logins N] [--one-address]\n       \
         compare-load bodies ADDR [--seconds S] [--rounds R] [--flooders N] [--get-rate R] \
         [--flood-nice N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut options = Options {
        seconds: 5,
        rounds: 3,
        logins: 50,
        one_address: false,
        flooders: 20,
        get_rate: 10_000.0,
        flood_nice: 19,
        milliseconds: 1_000,
    };
    let mut iter = arguments.iter();
    while let Some(argument) = iter.next() {
        let mut value = || -> u64 {
            iter.next()
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match argument.as_str() {
            "--seconds" => options.seconds = value(),
            "--rounds" => options.rounds = value() as usize,
            "--logins" => options.logins = value() as usize,
            "--one-address" => options.one_address = true,
            "--flooders" => options.flooders = value() as usize,
            "--get-rate" => options.get_rate = value() as f64,
            "--flood-nice" => options.flood_nice = value() as u32,
            "--milliseconds" => options.milliseconds = value(),
            _ => positional.push(argument.as_str()),
        }
    }
    match positional.as_slice() {
        ["versus", demo, fastapi] => versus(loopback(demo), loopback(fastapi), &options).await,
        ["flood", addr] => flood(loopback(addr), &options).await,
        ["bodies", addr] => bodies(loopback(addr), &options).await,
        ["flooder", addr, kind] => {
            let kind = Bodies::parse(kind).unwrap_or_else(|| usage());
            flooder(loopback(addr), kind, &options).await;
        }
        _ => usage(),
    }
}
