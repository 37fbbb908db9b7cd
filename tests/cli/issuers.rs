//! Remote issuers and per-route requirements from the TOML file: the crate's own tokens and
//! two identity providers' (one found by discovery, one by its JWKS URL), each held to its
//! own audience, and scopes and roles refused with `403` through `proxy`.

use http::{Method, StatusCode};
use jwt_gate::{Algorithm, Key, Keys};
use serde_json::{json, Value};

use crate::common::{self, call, get};
use crate::{jwt_gate, run, start, stderr, upstream, TempDir};

/// An identity provider on 127.0.0.1: its metadata (for discovery) and its JWKS at `/jwks`.
async fn provider(keys: Keys) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let metadata = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let router = common::provider_routes("/.well-known/openid-configuration", metadata, keys);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    issuer
}

fn signed(keys: &Keys, claims: Value) -> String {
    keys.sign(&claims).unwrap()
}

/// Claims from `issuer` for `audience`, with extra claims merged in.
fn claims(issuer: &str, audience: &str, extra: Value) -> Value {
    let now = common::now();
    let mut claims = json!({
        "sub": "alice", "iss": issuer, "aud": audience, "iat": now, "exp": now + 600,
    });
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

async fn status(gate: std::net::SocketAddr, method: Method, path: &str, token: &str) -> StatusCode {
    call(
        gate,
        method,
        path,
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_every_configured_issuer_pass_and_route_requirements_refuse_with_403() {
    let upstream = upstream().await;
    let keys = |algorithm, pem, kid| {
        let key = Key::from_private_pem(algorithm, &common::pem(pem)).unwrap();
        Keys::new(key.with_kid(kid)).unwrap()
    };
    let discovered_keys = keys(Algorithm::EdDSA, "ed25519.pem", "k1");
    let discovered = provider(discovered_keys.clone()).await;
    let rsa_keys = keys(Algorithm::RS256, "rsa.pem", "r1");
    let rsa_server = provider(rsa_keys.clone()).await;
    let rsa_issuer = "https://login.rsa.test/";
    let dir = TempDir::new("issuers");
    let config = dir.write(
        "gate.toml",
        &format!(
            r#"upstream = "http://{upstream}"

[validation]
issuer = "cli-own"
audience = "orders"
roles_claim = "realm_access.roles"

[[issuers]]
issuer = "{discovered}"
audience = "orders-api"

[[issuers]]
issuer = "{rsa_issuer}"
jwks_url = "{rsa_server}/jwks"
audience = "orders-rsa"
algorithm = "RS256"

[[routes]]
path = "/orders/*"
scopes = ["orders:read"]

[[routes]]
methods = ["DELETE"]
path = "/orders/*"
roles = ["admin"]

[[routes]]
path = "/people/team@work/*"
roles = ["admin"]
"#
        ),
    );
    let shown = run(jwt_gate(), &["check-config", config.to_str().unwrap()]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(
        shown.contains(&format!("issuer = \"{discovered}\"")) && shown.contains("orders-rsa"),
        "{shown}"
    );
    let gate = start(&config, "proxy");

    let own = jwt_gate::Keys::hs256(crate::SECRET).unwrap();
    let own_claims = |extra| {
        let mut claims = claims("cli-own", "orders", extra);
        claims["jti"] = json!("own-1");
        claims
    };
    let read = json!({ "scope": "orders:read" });
    // Three people called `alice` by three issuers (a local user may register any name a
    // provider's `sub` has): with more than one issuer the upstream is told which one vouched,
    // unasked, so it can tell them apart.
    for (name, issuer, token) in [
        ("own", "cli-own", signed(&own, own_claims(read.clone()))),
        (
            "discovered",
            discovered.as_str(),
            signed(
                &discovered_keys,
                claims(&discovered, "orders-api", read.clone()),
            ),
        ),
        (
            "jwks_url",
            rsa_issuer,
            signed(&rsa_keys, claims(rsa_issuer, "orders-rsa", read.clone())),
        ),
    ] {
        let answer = get(gate.addr, "/orders/7", Some(&token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text);
        assert_eq!(answer.json()["x-auth-sub"], "alice", "{name}");
        assert_eq!(answer.json()["x-auth-iss"], issuer, "{name}");
    }

    // Each issuer's tokens must name its own audience: another's is refused.
    let crossed = signed(
        &discovered_keys,
        claims(&discovered, "orders-rsa", read.clone()),
    );
    let refused = get(gate.addr, "/orders/7", Some(&crossed)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let crossed = signed(
        &own,
        own_claims(json!({ "aud": "orders-api", "scope": "orders:read" })),
    );
    assert_eq!(
        get(gate.addr, "/orders/7", Some(&crossed)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A valid token without the route's scope: 403 insufficient_scope, naming the scope.
    let no_scope = signed(
        &discovered_keys,
        claims(&discovered, "orders-api", json!({})),
    );
    let refused = get(gate.addr, "/orders/7", Some(&no_scope)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let challenge = refused.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("orders:read"),
        "{challenge}"
    );
    // Outside the route, the same token passes.
    assert_eq!(
        get(gate.addr, "/elsewhere", Some(&no_scope)).await.status,
        StatusCode::OK
    );
    // A route that requires something requires a token.
    assert_eq!(
        get(gate.addr, "/orders/7", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Other spellings of the route, which an upstream that decodes escapes before routing
    // (Werkzeug, Express) or routes case-insensitively (Express, ASP.NET Core) serves as
    // `/orders/7`: held to the route's requirements.
    for path in [
        "/%6frders/7",
        "/ord%65rs/7",
        "/orders/%37",
        "/ORDERS/7",
        "/Orders/7",
    ] {
        let refused = get(gate.addr, path, Some(&no_scope)).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            refused.text
        );
    }

    // DELETE needs the scope and the role, read at the configured roles claim, in every
    // letter case of the path.
    let reader = signed(&rsa_keys, claims(rsa_issuer, "orders-rsa", read.clone()));
    for path in ["/orders/7", "/ORDERS/7"] {
        assert_eq!(
            status(gate.addr, Method::DELETE, path, &reader).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let admin = signed(
        &rsa_keys,
        claims(
            rsa_issuer,
            "orders-rsa",
            json!({ "scope": "orders:read", "realm_access": { "roles": ["admin"] } }),
        ),
    );
    assert_eq!(
        status(gate.addr, Method::DELETE, "/orders/7", &admin).await,
        StatusCode::OK
    );
    assert_eq!(
        status(gate.addr, Method::GET, "/orders/7", &admin).await,
        StatusCode::OK
    );
    // A path with escapes meets the rules of both its spellings: `%40` is `@` to an upstream
    // that decodes before routing. Escapes the rules do not care about change nothing.
    for (path, expected) in [
        ("/people/team@work/1", StatusCode::FORBIDDEN),
        ("/people/team%40work/1", StatusCode::FORBIDDEN),
        ("/people/bob%40example.com", StatusCode::OK),
    ] {
        assert_eq!(
            status(gate.addr, Method::GET, path, &reader).await,
            expected,
            "{path}"
        );
    }
    // `delete` is not `DELETE` to the rules, but an upstream may upper-case it: a method with
    // lower-case letters must meet every route's requirements.
    for method in ["delete", "Delete", "get"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        assert_eq!(
            status(gate.addr, method.clone(), "/orders/7", &reader).await,
            StatusCode::FORBIDDEN,
            "{method}"
        );
    }
}

#[test]
fn issuer_and_requirement_mistakes_are_refused_with_their_place() {
    for (text, expected) in [
        (
            "[[issuers]]\nissuer = \"login.example.com\"\naudience = \"api\"\n",
            ":2:10: key `issuers.issuer`: \"login.example.com\" is not an issuer URL",
        ),
        (
            "[[issuers]]\nissuer = \"https://a.test\"\n",
            "missing field `audience`",
        ),
        (
            "[[issuers]]\nissuer = \"https://a.test\"\naudience = \"x\"\n\n[[issuers]]\nissuer = \"https://a.test\"\naudience = \"y\"\n",
            ":6:10: key `issuers.issuer`: \"https://a.test\" is configured twice",
        ),
        (
            "[[issuers]]\nissuer = \"https://a.test\"\naudience = \"x\"\npreset = \"lenient\"\n",
            ":4:10: key `issuers.preset`: unknown variant `lenient`",
        ),
        (
            "[[routes]]\npath = \"/a\"\naccess = \"open\"\nscopes = [\"read\"]\n",
            ":3:10: key `routes.access`: a route that requires scopes or roles is `required`",
        ),
        (
            "[[routes]]\npath = \"/a\"\nroles = [\"two words\"]\n",
            ":3:9: key `routes.roles`: \"two words\" cannot be a role",
        ),
        (
            "[[routes]]\npath = \"/a\"\n",
            ":2:8: key `routes.path`: a route says something",
        ),
        (
            "[validation]\nroles_claim = \"realm_access..roles\"\n",
            ":2:15: key `validation.roles_claim`: the roles claim path",
        ),
        (
            "[[routes]]\npath = \"/a\"\ntimeout_seconds = 0\n",
            ":3:19: key `routes.timeout_seconds`: the timeout must be positive",
        ),
    ] {
        let dir = TempDir::new("issuer-errors");
        let file = dir.write("gate.toml", text);
        let output = run(jwt_gate(), &["check-config", file.to_str().unwrap()]);
        let error = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}: {error}");
        assert!(
            error.starts_with(&format!("jwt-gate: {}", file.display())),
            "{error}"
        );
        assert!(error.contains(expected), "{text}: expected {expected:?} in {error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_that_cannot_be_discovered_stops_the_start_naming_it() {
    // A port that was free a moment ago: nothing answers there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new("issuer-down");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://127.0.0.1:9\"\n\n[[issuers]]\nissuer = \"http://{closed}\"\naudience = \"api\"\n"
        ),
    );
    let output = run(
        jwt_gate(),
        &[
            "--config",
            config.to_str().unwrap(),
            "proxy",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let error = stderr(&output);
    assert!(
        error.contains(":4:10: key `issuers.issuer`: the JWKS could not be fetched"),
        "{error}"
    );
}

/// With `[[issuers]]` the upstream is sent `x-auth-iss`; a forwarded claim of the operator's
/// already using that header would be overwritten in silence, so the start stops and says
/// what to do instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_claim_in_the_issuers_header_stops_the_start() {
    let key = Key::from_private_pem(Algorithm::EdDSA, &common::pem("ed25519.pem")).unwrap();
    let issuer = provider(Keys::new(key.with_kid("k1")).unwrap()).await;
    let dir = TempDir::new("issuer-header");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://127.0.0.1:9\"\n\n\
             [[issuers]]\nissuer = \"{issuer}\"\naudience = \"api\"\n\n\
             [[forward_claims]]\nclaim = \"tenant\"\nheader = \"x-auth-iss\"\n"
        ),
    );
    let output = tokio::task::spawn_blocking(move || {
        run(
            jwt_gate(),
            &[
                "--config",
                config.to_str().unwrap(),
                "proxy",
                "--listen",
                "127.0.0.1:0",
            ],
        )
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(
        error.contains("x-auth-iss carries another claim") && error.contains("claim = \"iss\""),
        "{error}"
    );
}
