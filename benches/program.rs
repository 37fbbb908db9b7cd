//! The `jwt-gate` program against the physical limit, side by side in one run
//! (`cargo bench --features cli --bench program`; needs Debian's nginx, as `scripts/test.sh`
//! installs it):
//!
//! - requests/s, p50 and p99 of the same upstream reached directly, through nginx proxying
//!   with no authentication at all, and through `jwt-gate proxy` with a valid token; runs
//!   alternate, every contender keeps its upstream connections alive, neither logs requests;
//! - the latency `forward-auth` adds to a check of a cached token: one connection, requests
//!   back to back, against the same request answered by a bare hyper server in a process of
//!   its own, as `forward-auth` is (and, for scale, by one inside this process, whose
//!   answers need no other process woken).
//!
//! Everything listens on 127.0.0.1, on ports the kernel chooses. Compare ratios: absolute
//! figures follow the machine and its load (printed at the end).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "a benchmark secret of at least 32 bytes";
const CONNECTIONS: usize = 32;
const RUN: Duration = Duration::from_secs(3);
const ROUNDS: usize = 5;
const CHECKS: usize = 20_000;

/// A child process, stopped with SIGTERM when dropped (nginx's master then stops its
/// workers; SIGKILL would leave them behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A bare hyper server answering every request `200` with a short body.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

/// Debian's nginx proxying to `upstream` with no authentication, one worker per core,
/// upstream connections kept alive as the gateway keeps them.
async fn nginx(dir: &Path, upstream: SocketAddr) -> (Running, SocketAddr) {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("nginx is installed (scripts/test.sh installs Debian's nginx)");
    let port = free_port();
    let root = dir.display();
    let config = format!(
        r#"
daemon off;
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    # nginx closes a keep-alive connection after 1,000 requests by default; the clients here
    # (and the gateway) keep theirs for the whole run.
    keepalive_requests 1000000;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream app {{
        server {upstream};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(binary)
        .args([
            "-p",
            &root.to_string(),
            "-e",
            &format!("{root}/error.log"),
            "-c",
        ])
        .arg(&file)
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let running = Running(child);
    wait_for(addr).await;
    (running, addr)
}

/// The program measured: this build's, or `JWT_GATE_BENCH_BIN` (another build, to compare
/// two builds of the program against the same nginx on the same machine).
fn program() -> PathBuf {
    std::env::var_os("JWT_GATE_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_jwt-gate")),
        PathBuf::from,
    )
}

/// `jwt-gate <command>` with `config`, listening where the kernel chooses; request log lines
/// off (`JWT_GATE_LOG=warn`), as nginx's are.
async fn jwt_gate(config: &Path, command: &str) -> (Running, SocketAddr) {
    let mut program = Command::new(program());
    program
        .args(["--config", config.to_str().unwrap(), command])
        .args(["--listen", "127.0.0.1:0"])
        .env("JWT_GATE_SECRET", SECRET)
        .env("JWT_GATE_LOG", "warn");
    listening(program)
}

/// Starts `program` and reads the address from the first line it prints
/// (`... listening on http://ADDR...`).
fn listening(mut program: Command) -> (Running, SocketAddr) {
    use std::io::BufRead as _;
    let mut child = program
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split([',', ';', ' ', '\n']).next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    (Running(child), addr)
}

fn token(config: &Path) -> String {
    let minted = Command::new(program())
        .args([
            "--config",
            config.to_str().unwrap(),
            "token",
            "alice",
            "--dev",
        ])
        .args(["--ttl", "3600"])
        .env("JWT_GATE_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(minted.status.success());
    String::from_utf8(minted.stdout).unwrap().trim().to_owned()
}

/// What one run measured.
struct Run {
    per_second: f64,
    latencies: Vec<Duration>,
}

/// `CONNECTIONS` keep-alive connections sending `GET /api/orders` (with `headers`) to
/// `addr` back to back for `RUN`.
async fn load(addr: SocketAddr, headers: Arc<Vec<(&'static str, String)>>) -> Run {
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let headers = headers.clone();
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
                latencies.push(timed(&mut sender, "/api/orders", &headers).await);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Run {
        per_second: latencies.len() as f64 / RUN.as_secs_f64(),
        latencies,
    }
}

/// `CHECKS` requests back to back on one connection; their latencies.
async fn sequential(addr: SocketAddr, headers: &[(&'static str, String)]) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut latencies = Vec::with_capacity(CHECKS);
    for done in 0..CHECKS {
        if sender.ready().await.is_err() {
            panic!("{addr} closed the connection after {done} requests");
        }
        latencies.push(timed(&mut sender, "/check", headers).await);
    }
    latencies
}

/// One `GET uri` with `headers` on `sender`, answered with success and read whole: how long.
async fn timed(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    uri: &str,
    headers: &[(&'static str, String)],
) -> Duration {
    let mut request = Request::builder().uri(uri).header("host", "bench");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let started = Instant::now();
    let response = sender
        .send_request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.into_body().collect().await.unwrap();
    started.elapsed()
}

/// CPU time (user + system) `pid` and its child processes have used so far, from
/// `/proc`: nginx's master has its workers as children. Zero where `/proc` is not Linux's.
fn cpu_time(pid: u32) -> Duration {
    let pid = pid.to_string();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid.as_str())
        .chain(children.split_whitespace())
        .map(process_cpu_time)
        .sum()
}

/// CPU time this process alone has used: the load generator and the upstream. Not
/// `cpu_time(own pid)`, which would add the proxies this bench spawns as children.
fn own_cpu_time() -> Duration {
    process_cpu_time(&std::process::id().to_string())
}

/// CPU time (user + system) of one process, from `/proc/{pid}/stat`.
fn process_cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces), from `state` on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let field = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis((field(11).unwrap_or(0) + field(12).unwrap_or(0)) * 10)
}

fn percentile(latencies: &mut [Duration], fraction: f64) -> Duration {
    latencies.sort_unstable();
    latencies[((latencies.len() - 1) as f64 * fraction) as usize]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jwt-gate-bench-program-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Set in the environment of this bench run again as the bare server of its own process.
const BARE_SERVER: &str = "JWT_GATE_BENCH_BARE_SERVER";

/// The bare upstream server again, in a child process of its own on a single-threaded
/// runtime, as each of `jwt-gate`'s workers is: it prints its address, then serves until
/// stopped.
fn bare_process() -> (Running, SocketAddr) {
    let mut program = Command::new(std::env::current_exe().unwrap());
    program.env(BARE_SERVER, "1");
    listening(program)
}

fn main() {
    if std::env::var_os(BARE_SERVER).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            println!("bare server listening on http://{}", upstream().await);
            std::future::pending::<()>().await;
        });
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(bench());
}

async fn bench() {
    let dir = scratch();
    let upstream = upstream().await;
    let (nginx_process, nginx) = nginx(&dir, upstream).await;
    let nginx_pid = nginx_process.0.id();
    let config = dir.join("gate.toml");
    std::fs::write(
        &config,
        format!("upstream = \"http://{upstream}\"\nallow_dev_tokens = true\n"),
    )
    .unwrap();
    let (proxy_process, proxy) = jwt_gate(&config, "proxy").await;
    let proxy_pid = proxy_process.0.id();
    let (_forward_auth, forward_auth) = jwt_gate(&config, "forward-auth").await;
    let token = token(&config);
    let bearer = ("authorization", format!("Bearer {token}"));

    // Requests/s: each contender once per round, the order turning every round.
    // With the process whose CPU time each costs (the bench's own for the direct upstream:
    // the load generator and the upstream share it).
    let contenders: [(&str, SocketAddr, Vec<(&'static str, String)>, u32); 3] = [
        ("upstream, direct", upstream, vec![], std::process::id()),
        ("nginx proxy, no authentication", nginx, vec![], nginx_pid),
        (
            "jwt-gate proxy, valid token",
            proxy,
            vec![bearer.clone()],
            proxy_pid,
        ),
    ];
    // Warm up: connections, pools, the verified-token cache.
    for (_, addr, headers, _) in &contenders {
        load(*addr, Arc::new(headers.clone())).await;
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    // CPU time of the contender's process, and of the bench's (generator and upstream).
    let mut cpu = vec![(Duration::ZERO, Duration::ZERO); contenders.len()];
    for round in 0..ROUNDS {
        for offset in 0..contenders.len() {
            let index = (round + offset) % contenders.len();
            let (_, addr, headers, pid) = &contenders[index];
            let before = (cpu_time(*pid), own_cpu_time());
            let run = load(*addr, Arc::new(headers.clone())).await;
            cpu[index].0 += cpu_time(*pid) - before.0;
            cpu[index].1 += own_cpu_time() - before.1;
            rates[index].push(run.per_second);
            latencies[index].extend(run.latencies);
        }
    }
    println!(
        "\n{CONNECTIONS} keep-alive connections, GET /api/orders, {ROUNDS} rounds of {}s each, median per contender:\n",
        RUN.as_secs()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "", "req/s", "p50 µs", "p99 µs", "CPU µs/req", "bench µs/req"
    );
    let mut medians = Vec::new();
    for (index, (name, _, _, _)) in contenders.iter().enumerate() {
        let rate = median(rates[index].clone());
        medians.push(rate);
        let requests = latencies[index].len() as f64;
        let p50 = percentile(&mut latencies[index], 0.50);
        let p99 = percentile(&mut latencies[index], 0.99);
        // The direct upstream's process is the bench: its own column says it all.
        let own = if index == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", micros(cpu[index].0) / requests)
        };
        println!(
            "{name:<34} {rate:>10.0} {:>10.0} {:>10.0} {own:>12} {:>12.1}",
            micros(p50),
            micros(p99),
            micros(cpu[index].1) / requests,
        );
    }
    println!(
        "\nCPU µs/req: the contender's processes (nginx: master and workers); bench µs/req: the load\ngenerator and the upstream, in this process. On {} cores, what one spends the others lack.",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let workers = std::fs::read_to_string(format!("/proc/{nginx_pid}/task/{nginx_pid}/children"))
        .map_or(0, |children| children.split_whitespace().count());
    println!(
        "nginx: {workers} worker processes (worker_processes auto); jwt-gate: one single-threaded worker per core (limits.workers), each with its own listener and upstream pool"
    );
    println!(
        "\njwt-gate proxy / nginx proxy: {:.2}x requests/s (target >= 0.8x)",
        medians[2] / medians[1]
    );

    // forward-auth: one connection, back to back, against bare hyper servers. The one to
    // compare with runs in a process of its own, as forward-auth does: on an idle machine
    // a request to another process waits for that process's thread to wake, which costs
    // more than anything either server does, and an in-process server never pays it.
    let (_bare_process, bare_elsewhere) = bare_process();
    let check = vec![
        bearer,
        ("x-original-uri", "/api/orders".to_owned()),
        ("x-original-method", "GET".to_owned()),
    ];
    let servers = [
        ("bare hyper server, own process", bare_elsewhere),
        ("bare hyper server, this process", upstream),
        ("jwt-gate forward-auth", forward_auth),
    ];
    for (_, addr) in servers {
        sequential(addr, &check).await;
    }
    let mut checks: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
    for round in 0..ROUNDS {
        for offset in 0..servers.len() {
            let index = (round + offset) % servers.len();
            checks[index].extend(sequential(servers[index].1, &check).await);
        }
    }
    println!(
        "\nforward-auth, cached token, one connection, {} checks back to back, all answered 200:\n",
        ROUNDS * CHECKS
    );
    println!("{:<34} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    let mut figures = Vec::new();
    for ((name, _), latencies) in servers.iter().zip(&mut checks) {
        let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
        println!("{name:<34} {:>10.1} {:>10.1}", micros(p50), micros(p99));
        figures.push((micros(p50), micros(p99)));
    }
    println!(
        "{:<34} {:>10.1} {:>10.1}   (target p50 < 20 µs)",
        "added by forward-auth",
        figures[2].0 - figures[0].0,
        figures[2].1 - figures[0].1
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "(over the in-process server)",
        figures[2].0 - figures[1].0,
        figures[2].1 - figures[1].1
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average (1, 5, 15 min): {}", load.trim());
    let _ = std::fs::remove_dir_all(&dir);
}
