//! The demo server as a user runs it: a separate process, its settings from the environment,
//! and an acknowledged registration surviving `kill -9`.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::demo::*;
use common::*;
use http::{Method, StatusCode};

fn command(db: &Path) -> Command {
    let mut command = demo_command();
    command.env("JWT_GATE_DB", db);
    command
}

#[tokio::test]
async fn the_walkthrough_works_and_survives_kill_9() {
    let dir = temp_dir("walkthrough");
    let db = dir.join("demo.db");
    let demo = start(command(&db));

    let health = call(demo.addr, Method::GET, "/health", &[], "").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(
        call(demo.addr, Method::GET, "/auth-test", &[], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        register(demo.addr, "Alice", PASSWORD).await.status,
        StatusCode::CREATED
    );
    let before = login(demo.addr, "alice", PASSWORD).await.json();
    let access = before["access_token"].as_str().unwrap().to_owned();
    let whoami = with_bearer(demo.addr, Method::GET, "/auth-test", &access).await;
    assert_eq!(whoami.status, StatusCode::OK);
    assert_eq!(
        whoami.json(),
        serde_json::json!({"username": "Alice", "email": "alice@example.com"})
    );

    // The registration was acknowledged; now the process dies without any chance to flush.
    let mut demo = demo;
    demo.child.kill().unwrap(); // SIGKILL
    demo.child.wait().unwrap();
    drop(demo);

    let demo = start(command(&db));
    // The kept secret makes the token from before the crash still good.
    let whoami = with_bearer(demo.addr, Method::GET, "/auth-test", &access).await;
    assert_eq!(whoami.status, StatusCode::OK);
    let after = login(demo.addr, "ALICE", PASSWORD).await;
    assert_eq!(after.status, StatusCode::OK);
    let access = after.json()["access_token"].as_str().unwrap().to_owned();

    let logout = with_bearer(demo.addr, Method::POST, "/auth/logout", &access).await;
    assert_eq!(logout.status, StatusCode::OK);
    let refused = with_bearer(demo.addr, Method::GET, "/auth-test", &access).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[cfg(unix)]
#[tokio::test]
async fn the_generated_secret_is_kept_private_beside_the_database() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("secret");
    let db = dir.join("users.db");
    let first = start(command(&db));
    let secret_file = dir.join("users.db.secret");
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read(&secret_file).unwrap();
    assert!(secret.len() >= 32);
    drop(first);

    // Loosened permissions are refused rather than trusted.
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = command(&db).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));
}

#[tokio::test]
async fn a_short_secret_is_a_clear_error() {
    let dir = temp_dir("short");
    let output = command(&dir.join("users.db"))
        .env("JWT_GATE_SECRET", "too short")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "the documented exit code");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("JWT_GATE_SECRET") && stderr.contains("32"),
        "{stderr}"
    );
    assert!(!stderr.contains("too short"), "the secret is never printed");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn a_given_secret_is_used_as_its_bytes() {
    let dir = temp_dir("given");
    let secret = "ünïcödé secret of more than thirty-two bytes";
    let demo = start({
        let mut command = command(&dir.join("users.db"));
        command.env("JWT_GATE_SECRET", secret);
        command
    });
    register(demo.addr, "bob", PASSWORD).await;
    let json = login(demo.addr, "bob", PASSWORD).await.json();
    let token = json["access_token"].as_str().unwrap();
    let verifier = jwt_gate::TokenVerifier::new(jwt_gate::Keys::hs256(secret.as_bytes()).unwrap());
    assert_eq!(verifier.verify(token).unwrap().sub, "bob");
    assert!(!dir.join("users.db.secret").exists());
}

/// The demo in `dir`, once it has answered a request: serving, its signal handlers installed.
async fn serving(dir: &Path) -> Demo {
    let demo = start(command(&dir.join("users.db")));
    assert_eq!(
        call(demo.addr, Method::GET, "/health", &[], "")
            .await
            .status,
        StatusCode::OK
    );
    demo
}

#[cfg(unix)]
fn send_signal(demo: &Demo, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_shuts_the_demo_down_cleanly() {
    let mut demo = serving(&temp_dir("ctrl-c")).await;
    send_signal(&demo, "-INT");
    let status = demo.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_jwks_route_is_open_and_publishes_no_secret() {
    let dir = temp_dir("jwks");
    let demo = start(command(&dir.join("users.db")));
    let jwks = call(demo.addr, Method::GET, "/.well-known/jwks.json", &[], "").await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.header("content-type"), Some("application/json"));
    assert!(jwks
        .header("cache-control")
        .unwrap()
        .starts_with("public, max-age="));
    // The demo signs with an HMAC secret: there is nothing public to publish.
    assert_eq!(jwks.json(), serde_json::json!({ "keys": [] }));
}

const DEMO_SECRET: &str = "a demo secret shared by more than one service";

/// The demo with a known secret, so the test can mint tokens as another service would.
fn with_secret(db: &Path) -> Command {
    let mut command = command(db);
    command.env("JWT_GATE_SECRET", DEMO_SECRET);
    command
}

/// A token signed with the demo's secret, with the claims the test chooses.
fn minted(sub: &str, issuer: Option<&str>, audience: Option<&str>) -> String {
    let mut claims = jwt_gate::Claims::new(sub, now(), now() + 600);
    claims.iss = issuer.map(str::to_owned);
    claims.aud = audience.map(str::to_owned).into_iter().collect();
    jwt_gate::Keys::hs256(DEMO_SECRET.as_bytes())
        .unwrap()
        .sign(&claims)
        .unwrap()
}

fn assert_invalid_token(answer: &Answer, case: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {answer:?}"
    );
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{case}: {challenge}"
    );
    assert_eq!(answer.json()["error"], "invalid_token", "{case}");
}

#[tokio::test]
async fn a_valid_token_for_an_unknown_user_is_an_invalid_token() {
    let dir = temp_dir("unknown-sub");
    let demo = start(with_secret(&dir.join("users.db")));
    let ghost = minted("ghost", Some("jwt-gate-demo"), Some("jwt-gate-demo"));
    let answer = with_bearer(demo.addr, Method::GET, "/auth-test", &ghost).await;
    assert_invalid_token(&answer, "unknown sub");
    assert!(!answer.text.contains("ghost"), "the subject is not echoed");
}

#[tokio::test]
async fn tokens_minted_for_another_service_with_the_same_key_are_refused() {
    let dir = temp_dir("iss-aud");
    let demo = start(with_secret(&dir.join("users.db")));
    assert_eq!(
        register(demo.addr, "bob", PASSWORD).await.status,
        StatusCode::CREATED
    );
    // What the demo issues is what it requires.
    let issued = login(demo.addr, "bob", PASSWORD).await.json();
    let claims = peek_claims(issued["access_token"].as_str().unwrap());
    assert_eq!(
        (claims["iss"].clone(), claims["aud"].clone()),
        ("jwt-gate-demo".into(), "jwt-gate-demo".into())
    );
    let ours = minted("bob", Some("jwt-gate-demo"), Some("jwt-gate-demo"));
    assert_eq!(
        with_bearer(demo.addr, Method::GET, "/auth-test", &ours)
            .await
            .status,
        StatusCode::OK
    );
    for (case, token) in [
        (
            "another audience",
            minted("bob", Some("jwt-gate-demo"), Some("billing")),
        ),
        (
            "another issuer",
            minted("bob", Some("https://billing.test"), Some("jwt-gate-demo")),
        ),
        ("no audience", minted("bob", Some("jwt-gate-demo"), None)),
        ("no issuer", minted("bob", None, Some("jwt-gate-demo"))),
        ("neither", minted("bob", None, None)),
    ] {
        let answer = with_bearer(demo.addr, Method::GET, "/auth-test", &token).await;
        assert_invalid_token(&answer, case);
    }
}

#[tokio::test]
async fn issuer_and_audience_come_from_the_environment() {
    let dir = temp_dir("iss-aud-env");
    let demo = start({
        let mut command = with_secret(&dir.join("users.db"));
        command
            .env("JWT_GATE_ISSUER", "https://auth.orders.test")
            .env("JWT_GATE_AUDIENCE", "orders");
        command
    });
    register(demo.addr, "carol", PASSWORD).await;
    let issued = login(demo.addr, "carol", PASSWORD).await.json();
    let access = issued["access_token"].as_str().unwrap();
    let claims = peek_claims(access);
    assert_eq!(
        (claims["iss"].clone(), claims["aud"].clone()),
        ("https://auth.orders.test".into(), "orders".into())
    );
    assert_eq!(
        with_bearer(demo.addr, Method::GET, "/auth-test", access)
            .await
            .status,
        StatusCode::OK
    );
    // The defaults are no longer accepted.
    let default = minted("carol", Some("jwt-gate-demo"), Some("jwt-gate-demo"));
    assert_invalid_token(
        &with_bearer(demo.addr, Method::GET, "/auth-test", &default).await,
        "default issuer and audience",
    );

    let output = with_secret(&dir.join("other.db"))
        .env("JWT_GATE_AUDIENCE", "")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_GATE_AUDIENCE"), "{stderr}");
}

/// Whether the kernel still holds unread bytes for the server's end of the connection from
/// `client` to `server`: once it holds none, the server has read (and parsed) what was sent.
#[cfg(target_os = "linux")]
fn server_has_unread_bytes(server: std::net::SocketAddr, client: std::net::SocketAddr) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let endpoint = |addr: std::net::SocketAddr| format!(":{:04X}", addr.port());
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields[1].ends_with(&endpoint(server))
            && fields[2].ends_with(&endpoint(client))
            && fields[4]
                .split_once(':')
                .is_some_and(|(_, unread)| u64::from_str_radix(unread, 16).unwrap() != 0)
    })
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut demo = serving(&temp_dir("sigterm")).await;

    // A registration whose body is held back by one byte: the server has the request in
    // hand, and cannot answer it until the rest arrives.
    let body = serde_json::json!({
        "username": "late", "email": "late@example.com", "password": PASSWORD,
    })
    .to_string();
    let head = format!(
        "POST /auth/register HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        demo.addr,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(demo.addr).await.unwrap();
    let (held, last) = body.split_at(body.len() - 1);
    stream
        .write_all(format!("{head}{held}").as_bytes())
        .await
        .unwrap();
    let client = stream.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server_has_unread_bytes(demo.addr, client) {
        assert!(
            Instant::now() < deadline,
            "the server never read the request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    send_signal(&demo, "-TERM");
    stream.write_all(last.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 201 "), "{response}");

    let status = demo.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test]
async fn new_connections_from_one_address_are_admitted_at_the_configured_rate() {
    use std::net::Ipv4Addr;
    let (one, two) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let dir = temp_dir("admission");
    let mut limited = command(&dir.join("users.db"));
    limited.env("JWT_GATE_CONNECTIONS_PER_ADDRESS", "1");
    let demo = start(limited);
    // Bursts of twice the rate: two at once, then one a second. The next three wait one, two
    // and three seconds while another address is served at once (the last has seconds to
    // spare, however loaded the machine).
    for _ in 0..2 {
        assert_eq!(
            get_from(one, demo.addr, "/health").await.await.unwrap(),
            "HTTP/1.1 200 OK"
        );
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(get_from(one, demo.addr, "/health").await);
    }
    let other = get_from(two, demo.addr, "/health").await;
    assert_eq!(other.await.unwrap(), "HTTP/1.1 200 OK");
    assert!(
        !held.last().unwrap().is_finished(),
        "connections over one address's rate were served at once"
    );
    for waiting in held {
        let answered = tokio::time::timeout(std::time::Duration::from_secs(20), waiting)
            .await
            .expect("a held connection is served in its turn")
            .unwrap();
        assert_eq!(answered, "HTTP/1.1 200 OK");
    }

    // 0 turns the limit off.
    let mut unlimited = command(&dir.join("other.db"));
    unlimited.env("JWT_GATE_CONNECTIONS_PER_ADDRESS", "0");
    let demo = start(unlimited);
    for _ in 0..5 {
        assert_eq!(
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                get_from(one, demo.addr, "/health").await
            )
            .await
            .expect("no limit: answered at once")
            .unwrap(),
            "HTTP/1.1 200 OK"
        );
    }
}
