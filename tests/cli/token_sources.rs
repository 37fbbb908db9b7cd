//! `[token]`: a browser's cookie carries the token through `proxy`, with the CSRF check, and a
//! bad source stops the start naming its key.

use http::{Method, StatusCode};

use crate::common::{call, get_with};
use crate::{jwt_gate, mint, run, start, stderr, upstream, TempDir};

const GATE: &str = r#"allow_dev_tokens = true

[validation]
issuer = "cli-test"
audience = "orders"

[token]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_cookie_carries_the_token_and_a_cross_site_post_with_it_is_403() {
    let upstream = upstream().await;
    let dir = TempDir::new("token-cookie");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\n{GATE}cookie = \"__Host-access\"\nauthorization = false\ncors_preflight = true\n"
        ),
    );
    let gate = start(&config, "proxy");
    let token = mint(&config, "alice");
    let cookie = format!("theme=dark; __Host-access={token}");

    let answer = get_with(gate.addr, "/orders", &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json()["x-auth-sub"], "alice");
    // `authorization = false`: the header no longer carries a token.
    let bearer = format!("Bearer {token}");
    let answer = get_with(gate.addr, "/orders", &[("authorization", &bearer)]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    // A page of another site makes the browser send the cookie along: refused.
    for fetched_from in [
        [("origin", "https://evil.example"), ("cookie", &cookie)],
        [("sec-fetch-site", "cross-site"), ("cookie", &cookie)],
    ] {
        let answer = call(gate.addr, Method::POST, "/orders", &fetched_from, "{}").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{fetched_from:?}");
    }

    // `cors_preflight = true`: a preflight needs no token.
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
    ];
    let answer = call(gate.addr, Method::OPTIONS, "/orders", &preflight, "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mounted_auth_service_logs_out_with_the_cookie_the_gate_reads() {
    let upstream = upstream().await;
    let dir = TempDir::new("token-cookie-logout");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\n{GATE}cookie = \"access\"\n\n[users]\nsqlite = \"users.db\"\n"
        ),
    );
    let gate = start(&config, "proxy");
    let session = crate::common::session(gate.addr, "carol").await;
    let cookie = format!("access={}", session["access_token"].as_str().unwrap());
    let answer = get_with(gate.addr, "/orders", &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    // The page's own script logs out; its token never left the cookie.
    let same_site = [
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    let logout = call(gate.addr, Method::POST, "/auth/logout", &same_site, "").await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text);
    let answer = get_with(gate.addr, "/orders", &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn a_bad_token_source_stops_the_start_naming_its_key() {
    let dir = TempDir::new("token-bad");
    for (table, expected) in [
        (
            "cookie = \"access token\"\n",
            ":9:10: key `token.cookie`: token sources: `cookie` \"access token\" is not a cookie name",
        ),
        ("header = \"authorization\"\n", ":9:10: key `token.header`:"),
        ("authorization = false\n", ":9:17: key `token.authorization`:"),
        (
            "trusted_origins = [\"https://a.example\"]\n",
            ":9:19: key `token.trusted_origins`: token sources: `trusted_origins`",
        ),
        ("cookies = \"access\"\n", ":9:1: key `token.cookies`: unknown field"),
    ] {
        let config = dir.write("gate.toml", &format!("upstream = \"http://127.0.0.1:9\"\n{GATE}{table}"));
        for command in [["proxy"].as_slice(), &["forward-auth"]] {
            let mut args = vec!["--config", config.to_str().unwrap()];
            args.extend(command);
            args.extend(["--listen", "127.0.0.1:0"]);
            let output = run(jwt_gate(), &args);
            let error = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{table}{command:?}: {error}");
            assert!(error.contains(expected), "{table}: {error}");
        }
        let output = run(jwt_gate(), &["check-config", config.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{table}");
        assert!(stderr(&output).contains(expected), "{table}");
    }
}
