//! What an operator expects of the running program: liveness and readiness, graceful
//! shutdown, structured logs with request ids and no token, per-route upstream timeouts.

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::routing::get as route_get;
use axum::Router;
use http::StatusCode;

use crate::common::postgres::CutProxy;
use crate::common::{self, get, get_with};
use crate::{jwt_gate, run, start, start_with, stderr, TempDir};

/// A dev token for `sub` from the configuration `config`.
fn token(config: &std::path::Path, sub: &str) -> String {
    let minted = run(
        jwt_gate(),
        &["--config", config.to_str().unwrap(), "token", sub, "--dev"],
    );
    assert!(minted.status.success(), "{}", stderr(&minted));
    String::from_utf8(minted.stdout).unwrap().trim().to_owned()
}

/// An upstream whose `/slow/...` paths answer after `seconds`, and whose other paths at once;
/// `arrived` hears of each slow request as it arrives.
async fn slow_upstream(seconds: u64) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let slow = move || {
        let arrived = arrived.clone();
        async move {
            let _ = arrived.send(());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            "slow answer"
        }
    };
    let router = Router::new()
        .route("/slow/{*rest}", route_get(slow.clone()))
        .route("/patient/{*rest}", route_get(slow))
        .fallback(route_get(|| async { "fast answer" }));
    (common::serve(router).await, arrivals)
}

/// Sends SIGTERM to the program, as an orchestrator stopping it would.
fn sigterm(program: &std::process::Child) {
    let pid = program.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Polls `check` every 50 ms until it holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_and_readiness_follow_the_revocation_store() {
    let redis = CutProxy::in_front_of("127.0.0.1:6379".to_owned()).await;
    let (upstream, _) = slow_upstream(0).await;
    let dir = TempDir::new("ready");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\n\n[revocation]\nredis_url = \"redis://{}\"\n",
            redis.addr
        ),
    );
    let gate = start(&config, "proxy");
    // Answered by the program, before the gate: no token needed, never forwarded.
    let live = get(gate.addr, "/livez", None).await;
    assert_eq!(live.status, StatusCode::OK);
    eventually("ready while Redis answers", async || {
        get(gate.addr, "/readyz", None).await.status == StatusCode::OK
    })
    .await;

    redis.cut();
    eventually("unready once Redis is cut off", async || {
        let ready = get(gate.addr, "/readyz", None).await;
        ready.status == StatusCode::SERVICE_UNAVAILABLE
            && ready.json()["failing"][0] == "revocation_store"
    })
    .await;
    // Still alive: restarting would not bring Redis back.
    assert_eq!(get(gate.addr, "/livez", None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_refuses_new_connections_and_lets_the_request_in_flight_finish() {
    let (upstream, mut arrivals) = slow_upstream(2).await;
    let dir = TempDir::new("drain");
    let config = dir.write(
        "gate.toml",
        &format!("upstream = \"http://{upstream}\"\n\n[[routes]]\npath = \"/slow/*\"\naccess = \"open\"\n"),
    );
    let mut gate = start(&config, "proxy");
    let addr = gate.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/slow/report", None).await });
    arrivals.recv().await.unwrap();

    sigterm(&gate.child);
    eventually("new connections refused", async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text, "slow answer");
    let exit = gate.child.wait().unwrap();
    assert!(exit.success(), "a drained shutdown exits 0: {exit:?}");
}

/// An upstream answering every request with a head at once, then `parts` body chunks a
/// second apart.
async fn streaming_upstream(parts: usize) -> SocketAddr {
    let stream = move || async move {
        let chunks = futures_util::stream::unfold(0, move |sent| async move {
            if sent == parts {
                return None;
            }
            if sent > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let chunk = bytes::Bytes::from(format!("part {sent};"));
            Some((Ok::<_, std::convert::Infallible>(chunk), sent + 1))
        });
        axum::body::Body::from_stream(chunks)
    };
    common::serve(Router::new().fallback(route_get(stream))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_response_body_under_way_finish() {
    use http_body_util::BodyExt as _;

    let upstream = streaming_upstream(3).await;
    let dir = TempDir::new("drain-body");
    let config = dir.write(
        "gate.toml",
        &format!("upstream = \"http://{upstream}\"\n\n[[routes]]\npath = \"/download\"\naccess = \"open\"\n"),
    );
    let mut gate = start(&config, "proxy");
    let stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/download")
        .header("host", "gate")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The head is here and the body has two seconds to go: the request is still in flight.
    sigterm(&gate.child);
    let body = response.into_body().collect().await;
    let body = body.expect("the body arrives whole, not cut at the drain");
    assert_eq!(&body.to_bytes()[..], b"part 0;part 1;part 2;");
    let exit = gate.child.wait().unwrap();
    assert!(exit.success(), "a drained shutdown exits 0: {exit:?}");
}

/// `proxy` with a 20 s drain in front of an upstream that answers `tick` after 300 ms.
async fn ticking_proxy(name: &str) -> (crate::Server, TempDir) {
    let upstream = common::serve(Router::new().fallback(route_get(|| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "tick"
    })))
    .await;
    let dir = TempDir::new(name);
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\n\n[limits]\ndrain_timeout_seconds = 20\n\n[[routes]]\npath = \"/*\"\naccess = \"open\"\n"
        ),
    );
    (start(&config, "proxy"), dir)
}

/// After a second of `clients` sending ticks, SIGTERM: the program must exit 0 well before its
/// 20 s drain deadline, each connection having finished the request it carried (300 ms at
/// most) and closed, instead of being served on until the deadline. Each client says how many
/// answers it had: some before the stop.
async fn stop_while_busy(mut gate: crate::Server, clients: Vec<tokio::task::JoinHandle<usize>>) {
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let stopping = std::time::Instant::now();
    sigterm(&gate.child);
    let exit = tokio::task::spawn_blocking(move || gate.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "a drained shutdown exits 0: {exit:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    for client in clients {
        assert!(client.await.unwrap() >= 2);
    }
}

/// Checks an answer of the ticking upstream: a whole `200 tick`, never one cut by the drain.
async fn assert_whole_tick(response: http::Response<hyper::body::Incoming>) {
    use http_body_util::BodyExt as _;

    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"tick", "every answer whole");
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_keep_alive_connections_close_after_their_answer_instead_of_holding_the_drain() {
    let (gate, _dir) = ticking_proxy("drain-busy").await;
    // Two clients, each on one keep-alive connection, requests back to back and staggered, so
    // one of them always has a request in flight.
    let mut clients = Vec::new();
    for offset in [0, 150] {
        let addr = gate.addr;
        clients.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(offset)).await;
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let tick = || {
                http::Request::get("/tick")
                    .header("host", "gate")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap()
            };
            let mut answered = 0;
            // Refused once the drain closed the connection, after a whole answer.
            while let Ok(response) = sender.send_request(tick()).await {
                assert_whole_tick(response).await;
                answered += 1;
            }
            answered
        }));
    }
    stop_while_busy(gate, clients).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_http2_connection_gets_a_goaway_and_its_streams_finish() {
    let (gate, _dir) = ticking_proxy("drain-h2").await;
    // One h2c connection (prior knowledge), two streams at a time, staggered, so one is always
    // open.
    let stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for offset in [0, 150] {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(offset)).await;
            let tick = || {
                http::Request::get("http://gate/tick")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap()
            };
            let mut answered = 0;
            // Refused after the GOAWAY: the stream was never served.
            while let Ok(response) = sender.send_request(tick()).await {
                assert_whole_tick(response).await;
                answered += 1;
            }
            answered
        }));
    }
    stop_while_busy(gate, streams).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_timeout_answers_504_and_may_be_longer_than_the_default() {
    let (upstream, _) = slow_upstream(2).await;
    let dir = TempDir::new("timeouts");
    let config = dir.write(
        "gate.toml",
        &format!(
            r#"upstream = "http://{upstream}"

[limits]
upstream_timeout_seconds = 1

[[routes]]
path = "/patient/*"
timeout_seconds = 5

[[routes]]
path = "/slow/quick/*"
timeout_seconds = 1
"#
        ),
    );
    let mut program = jwt_gate();
    program.stderr(Stdio::piped());
    let mut gate = start_with(program, &config, "proxy");
    let token = token(&config, "alice");
    // The default (1 s) cuts the 2 s answer; the route's own 5 s lets it through.
    let cut = get(gate.addr, "/slow/x", Some(&token)).await;
    assert_eq!(cut.status, StatusCode::GATEWAY_TIMEOUT, "{}", cut.text);
    assert_eq!(cut.json()["error"], "gateway_timeout");
    let patient = get(gate.addr, "/patient/x", Some(&token)).await;
    assert_eq!(patient.status, StatusCode::OK, "{}", patient.text);
    // A timeout-only route leaves access as it was: a token is still required.
    assert_eq!(
        get(gate.addr, "/patient/x", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let quick = get(gate.addr, "/slow/quick/x", Some(&token)).await;
    assert_eq!(quick.status, StatusCode::GATEWAY_TIMEOUT, "{}", quick.text);
    // Each cut is logged with the route that set its time.
    let logs = stop_and_read_logs(&mut gate);
    let cuts: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("request timed out"))
        .collect();
    assert_eq!(cuts.len(), 2, "{logs}");
    assert!(cuts[0].contains("route=default"), "{logs}");
    assert!(cuts[1].contains("route=/slow/quick/*"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_request_id_route_status_latency_and_sub_never_the_token() {
    let (upstream, _) = slow_upstream(0).await;
    let dir = TempDir::new("logs");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\n\n[log]\nformat = \"json\"\n\n[[routes]]\npath = \"/api/*\"\naccess = \"required\"\n"
        ),
    );
    let token = token(&config, "alice");
    let mut program = jwt_gate();
    program.env("JWT_GATE_LOG", "info").stderr(Stdio::piped());
    let mut gate = start_with(program, &config, "proxy");
    let addr = gate.addr;

    let passed = get_with(
        addr,
        "/api/orders?access_token=in-the-query",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    assert_eq!(passed.status, StatusCode::OK);
    assert_eq!(passed.header("x-request-id"), Some("req-42"));
    // A bad token (which the gate refuses) is not logged either.
    let forged = format!("{token}x");
    let refused = get(addr, "/api/orders", Some(&forged)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let made = refused.header("x-request-id").unwrap().to_owned();
    assert!(!made.is_empty(), "an id is made when none came");

    let logs = stop_and_read_logs(&mut gate);
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !logs.contains(signature),
        "a token reached the logs:\n{logs}"
    );
    assert!(!logs.contains("in-the-query"), "the query reached the logs");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let request = |id: &str| {
        lines
            .iter()
            .find(|line| line["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}:\n{logs}"))
            .clone()
    };
    let ok = request("req-42");
    assert_eq!(ok["route"], "/api/*");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["sub"], "alice");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/api/orders");
    assert!(ok["latency_ms"].as_f64().unwrap() >= 0.0);
    let bad = request(&made);
    assert_eq!(bad["status"], 401);
    assert_eq!(bad["sub"], "");
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_logs_the_original_request_it_was_asked_about() {
    let dir = TempDir::new("forward-auth-logs");
    let config = dir.write(
        "gate.toml",
        "[log]\nformat = \"json\"\n\n[[routes]]\npath = \"/orders/*\"\naccess = \"required\"\n",
    );
    let token = token(&config, "alice");
    let mut program = jwt_gate();
    program.env("JWT_GATE_LOG", "info").stderr(Stdio::piped());
    let mut gate = start_with(program, &config, "forward-auth");
    let bearer = format!("Bearer {token}");
    let answer = get_with(
        gate.addr,
        "/",
        &[
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/orders/7?page=in-the-query"),
            ("authorization", &bearer),
            ("x-request-id", "check-7"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let logs = stop_and_read_logs(&mut gate);
    assert!(!logs.contains("in-the-query"), "the query reached the logs");
    let line: serde_json::Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["request_id"] == "check-7")
        .unwrap_or_else(|| panic!("no line for the check:\n{logs}"));
    // What the front server asked about, not the check's own `GET /`.
    assert_eq!(line["method"], "DELETE");
    assert_eq!(line["path"], "/orders/7");
    assert_eq!(line["route"], "/orders/*");
    assert_eq!(line["status"], 200);
    assert_eq!(line["sub"], "alice");
}

/// In text logs the path a front server names is one quoted field: spaces in an
/// `X-Original-URI` cannot add fields of their own (`status=200 sub=admin`).
#[tokio::test(flavor = "multi_thread")]
async fn a_forward_auth_path_cannot_forge_fields_in_text_logs() {
    let dir = TempDir::new("forward-auth-text-logs");
    let config = dir.write(
        "gate.toml",
        "[[routes]]\npath = \"/*\"\naccess = \"required\"\n",
    );
    let mut program = jwt_gate();
    program.env("JWT_GATE_LOG", "info").stderr(Stdio::piped());
    let mut gate = start_with(program, &config, "forward-auth");
    let answer = get_with(
        gate.addr,
        "/",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/x status=200 sub=admin"),
            ("x-request-id", "forged-7"),
        ],
    )
    .await;
    assert_ne!(answer.status, StatusCode::OK);

    let logs = stop_and_read_logs(&mut gate);
    let line = logs
        .lines()
        .find(|line| line.contains("forged-7"))
        .unwrap_or_else(|| panic!("no line for the check:\n{logs}"));
    assert!(line.contains(r#"path="/x status=200 sub=admin""#), "{line}");
    let outside = line.replace(r#""/x status=200 sub=admin""#, "");
    assert!(
        !outside.contains("status=200") && !outside.contains("sub=admin"),
        "{line}"
    );
}

/// Stops `gate` and returns what it wrote to its (piped) stderr.
fn stop_and_read_logs(gate: &mut crate::Server) -> String {
    let _ = gate.child.kill();
    let _ = gate.child.wait();
    let mut logs = String::new();
    let mut stderr_pipe = gate.child.stderr.take().unwrap();
    stderr_pipe.read_to_string(&mut logs).unwrap();
    logs
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_on_their_own_listener_and_count_the_requests() {
    use crate::common::prometheus::{lint, parse, value};
    let (upstream, _) = slow_upstream(0).await;
    let dir = TempDir::new("metrics");
    let config = dir.write(
        "gate.toml",
        &format!("upstream = \"http://{upstream}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    );
    let gate = start(&config, "proxy");
    let metrics: SocketAddr = gate
        .line
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {:?}", gate.line))
        .parse()
        .unwrap();
    assert_ne!(metrics, gate.addr, "never on the public listener");
    // On the public listener, /metrics is just another protected path.
    assert_eq!(
        get(gate.addr, "/metrics", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let token = token(&config, "alice");
    for _ in 0..3 {
        assert_eq!(
            get(gate.addr, "/x", Some(&token)).await.status,
            StatusCode::OK
        );
    }
    for _ in 0..2 {
        get(gate.addr, "/x", None).await;
    }
    let scrape = get(metrics, "/metrics", None).await;
    assert_eq!(scrape.status, StatusCode::OK);
    lint(&scrape.text);
    let samples = parse(&scrape.text);
    assert_eq!(
        value(
            &samples,
            "jwt_gate_requests_passed_total",
            &[("cache", "miss")]
        ) + value(
            &samples,
            "jwt_gate_requests_passed_total",
            &[("cache", "hit")]
        ),
        3.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        value(
            &samples,
            "jwt_gate_requests_refused_total",
            &[("reason", "missing_credentials")]
        ),
        3.0,
        "the public /metrics and the two requests without a token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stalls_on_the_auth_routes_is_cut_off_in_every_command() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let upstream = crate::upstream().await;
    for command in ["serve", "proxy", "forward-auth"] {
        let dir = TempDir::new(&format!("stall-{command}"));
        let config = dir.write(
            "gate.toml",
            &format!(
                "upstream = \"http://{upstream}\"\n\n[users]\nsqlite = \"users.db\"\n\n[limits]\nupstream_timeout_seconds = 1\n"
            ),
        );
        let gate = start(&config, command);
        let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
        // Ten bytes of a hundred, then silence: without a bound, the connection (one of
        // `max_connections`) would be held for as long as the client likes.
        stream
            .write_all(b"POST /auth/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\nusername=a")
            .await
            .unwrap();
        let mut answer = vec![0; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{command}: no answer within 30 s"))
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{command}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn new_connections_over_an_address_rate_wait_while_other_addresses_are_served() {
    use std::net::Ipv4Addr;
    const ONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
    const TWO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    let upstream = crate::upstream().await;
    for command in ["serve", "proxy", "forward-auth"] {
        let dir = TempDir::new(&format!("admission-{command}"));
        let config = dir.write(
            "gate.toml",
            &format!(
                "upstream = \"http://{upstream}\"\n\n[users]\nsqlite = \"users.db\"\n\n[limits]\nworkers = 1\nconnection_rate_per_address = 1\nconnection_burst_per_address = 1\n"
            ),
        );
        let gate = start(&config, command);
        let first = common::get_from(ONE, gate.addr, "/livez").await;
        assert_eq!(first.await.unwrap(), "HTTP/1.1 200 OK", "{command}");
        // The address's one connection a second is spent: the next three wait one, two and
        // three seconds, unread, while another address's connection, opened after them, is
        // served at once (the last has seconds to spare, however loaded the machine).
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(common::get_from(ONE, gate.addr, "/livez").await);
        }
        let other = common::get_from(TWO, gate.addr, "/livez").await;
        assert_eq!(other.await.unwrap(), "HTTP/1.1 200 OK", "{command}");
        assert!(
            !held.last().unwrap().is_finished(),
            "{command}: connections over one address's rate were answered at once"
        );
        for waiting in held {
            let answered = tokio::time::timeout(Duration::from_secs(20), waiting)
                .await
                .unwrap_or_else(|_| panic!("{command}: a held connection was never served"))
                .unwrap();
            assert_eq!(answered, "HTTP/1.1 200 OK", "{command}");
        }
    }
}

#[test]
fn a_connection_burst_without_a_rate_is_refused_at_start() {
    let dir = TempDir::new("admission-burst-alone");
    let config = dir.write(
        "gate.toml",
        "upstream = \"http://127.0.0.1:9\"\n\n[limits]\nconnection_burst_per_address = 10\n",
    );
    let checked = run(jwt_gate(), &["check-config", config.to_str().unwrap()]);
    assert!(!checked.status.success());
    assert!(
        stderr(&checked).contains(
            "limits.connection_burst_per_address needs limits.connection_rate_per_address"
        ),
        "{}",
        stderr(&checked)
    );
}
