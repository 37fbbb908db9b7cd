//! `jwt-gate forward-auth` spoken to directly, as Traefik and Caddy do, its limits, and
//! `jwt-gate serve`.

use std::time::Duration;

use http::{Method, StatusCode};
use jwt_gate::{Claims, Keys};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::{self, call, get_with};
use crate::{start, TempDir, SECRET};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn traefik_style_checks_answer_with_nested_claims_as_chosen_headers() {
    let dir = TempDir::new("traefik");
    let config = dir.write(
        "gate.toml",
        "[[forward_claims]]\nclaim = \"/realm_access/roles\"\nheader = \"x-auth-roles\"\narrays = \"join\"\n",
    );
    let gate = start(&config, "forward-auth");
    let keys = Keys::hs256(SECRET).unwrap();
    let now = common::now();
    let extra = serde_json::json!({"realm_access": {"roles": ["admin", "on,call"]}});
    let serde_json::Value::Object(extra) = extra else {
        unreachable!()
    };
    let token = keys
        .sign(
            &Claims::new("alice", now, now + 600)
                .with_issuer("jwt-gate")
                .with_audience("jwt-gate")
                .with_extra(extra),
        )
        .unwrap();
    let bearer = format!("Bearer {token}");
    let original = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/orders?page=2"),
    ];

    let refused = get_with(gate.addr, "/", &original).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"jwt-gate\"")
    );

    let mut with_token = original.to_vec();
    with_token.push(("authorization", &bearer));
    let allowed = get_with(gate.addr, "/", &with_token).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    assert_eq!(allowed.header("x-auth-sub"), Some("alice"));
    assert_eq!(allowed.header("x-auth-roles"), Some("admin,on%2Ccall"));

    // No method named: refused, never guessed.
    let unnamed = get_with(
        gate.addr,
        "/",
        &[("x-forwarded-uri", "/orders"), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST);

    // A second spelling of a path or a method, which the front server or the upstream may
    // read as the first: refused, never judged.
    for (method, uri) in [
        ("GET", "/%6frders"),
        ("get", "/orders"),
        ("Post", "/orders"),
    ] {
        let original = [
            ("x-forwarded-method", method),
            ("x-forwarded-uri", uri),
            ("authorization", &bearer),
        ];
        let refused = get_with(gate.addr, "/", &original).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{method} {uri}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_keeps_the_proxys_connection_cap_and_header_timeout() {
    let dir = TempDir::new("limits");
    let config = dir.write(
        "gate.toml",
        "[limits]\nmax_connections = 1\nheader_read_timeout_seconds = 2\n",
    );
    let gate = start(&config, "forward-auth");
    // One client holds the only connection with a head it never finishes.
    let mut slow = TcpStream::connect(gate.addr).await.unwrap();
    slow.write_all(b"GET /check HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let request = b"GET / HTTP/1.1\r\nhost: x\r\nx-original-method: GET\r\nx-original-uri: /a\r\nconnection: close\r\n\r\n";
    let second = tokio::spawn(common::raw_status(gate.addr, request));
    // A bounded look: on a very slow machine a regression could pass unseen here, but the
    // protection can never fail it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past the cap of one"
    );
    // The header timeout closes the slow one, which frees the place for the second.
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(DEADLINE, slow.read(&mut buffer)).await;
    assert!(closed.is_ok(), "the slow client was never cut off");
    let status = tokio::time::timeout(DEADLINE, second)
        .await
        .expect("served")
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_cap_holds_in_all_when_split_between_workers() {
    let dir = TempDir::new("split-limits");
    let config = dir.write(
        "gate.toml",
        "[limits]\nworkers = 2\nmax_connections = 2\nheader_read_timeout_seconds = 5\n",
    );
    let gate = start(&config, "forward-auth");
    // Sixteen clients, each sending a whole check and then keeping its connection open: a
    // connection the program accepted answers at once, the others wait in the backlog.
    let request =
        b"GET / HTTP/1.1\r\nhost: x\r\nx-original-method: GET\r\nx-original-uri: /a\r\n\r\n";
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut client = TcpStream::connect(gate.addr).await.unwrap();
        client.write_all(request).await.unwrap();
        clients.push(client);
    }
    let mut answered = 0;
    for client in &mut clients {
        let mut buffer = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_millis(150), client.read(&mut buffer));
        if let Ok(Ok(read)) = read.await {
            assert!(buffer[..read].starts_with(b"HTTP/1.1 401"));
            answered += 1;
        }
    }
    // One worker each, or both on one worker (the kernel chooses by address): never more.
    assert!(
        (1..=2).contains(&answered),
        "{answered} of 16 connections were served at once with max_connections = 2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_the_auth_service_alone() {
    let dir = TempDir::new("serve");
    let config = dir.write(
        "gate.toml",
        "[validation]\nissuer = \"cli-serve\"\naudience = \"orders\"\n\n[users]\nsqlite = \"users.db\"\n",
    );
    let gate = start(&config, "serve");
    let registered = call(
        gate.addr,
        Method::POST,
        "/auth/register",
        &[("content-type", "application/json")],
        serde_json::json!({"username": "bob", "email": "bob@example.com", "password": common::PASSWORD}).to_string(),
    )
    .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text
    );
    let login = call(
        gate.addr,
        Method::POST,
        "/auth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!(
            "username=bob&password={}",
            common::PASSWORD.replace(' ', "+")
        ),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    // Issued with the configured issuer and audience, by the configured keys.
    let keys = Keys::hs256(SECRET).unwrap();
    let verifier = jwt_gate::TokenVerifier::builder(keys)
        .validation(
            jwt_gate::Validation::default()
                .issuer("cli-serve")
                .audience("orders"),
        )
        .build();
    assert_eq!(verifier.verify(&token).unwrap().sub, "bob");
    // Nothing but the auth service is served.
    let other = common::get(gate.addr, "/anything", Some(&token)).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}
