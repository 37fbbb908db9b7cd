//! `jwt-gate proxy` from a TOML file, in front of a real upstream.

use http::StatusCode;

use crate::common::{get, get_with};
use crate::{jwt_gate, run, start, stderr, upstream, TempDir};

#[tokio::test(flavor = "multi_thread")]
async fn proxy_from_toml_refuses_without_token_and_forwards_identity_with_one() {
    let upstream = upstream().await;
    let dir = TempDir::new("proxy");
    let config = dir.write(
        "gate.toml",
        &format!(
            r#"upstream = "http://{upstream}"
allow_dev_tokens = true

[validation]
issuer = "cli-test"
audience = "orders"

[[routes]]
path = "/health"
access = "open"

[[forward_claims]]
claim = "iss"
header = "x-auth-issuer"
"#
        ),
    );
    let gate = start(&config, "proxy");

    let refused = get(gate.addr, "/orders", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"jwt-gate\"")
    );
    assert_eq!(get(gate.addr, "/health", None).await.status, StatusCode::OK);

    let minted = run(
        jwt_gate(),
        &["--config", config.to_str().unwrap(), "token", "alice"],
    );
    assert!(minted.status.success(), "{}", stderr(&minted));
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let allowed = get_with(
        gate.addr,
        "/orders",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-auth-sub", "admin"),
        ],
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    assert_eq!(allowed.json()["x-auth-sub"], "alice");
    assert_eq!(allowed.json()["x-auth-issuer"], "cli-test");

    // The same secret, but no `iss`/`aud`: the program always requires them.
    let keys = jwt_gate::Keys::hs256(crate::SECRET).unwrap();
    let foreign = crate::common::token(&keys, "alice");
    let refused = get(gate.addr, "/orders", Some(&foreign)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}
