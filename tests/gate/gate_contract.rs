//! The gate's contract (RFC 6750 and RFC 8725, as the "Rejections" section of `docs/gate.md`
//! states it), row by row, over real HTTP: once through an axum `Router`, once through a
//! plain hyper server, with the same gate.

use crate::common;

use std::net::SocketAddr;

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use jwt_gate::revocation::MemoryRevocations;
use jwt_gate::{Algorithm, Claims, JwtAuthLayer, Keys, TokenVerifier, Validation};
use serde_json::json;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "orders";

struct Fixture {
    keys: Keys,
    revocations: MemoryRevocations,
}

// Every token helper hangs off the fixture, even those that need none of its state.
#[allow(clippy::unused_self)]
impl Fixture {
    fn new() -> Self {
        Self {
            keys: Keys::new(jwt_gate::Key::hs256(SECRET).unwrap().with_kid("k1")).unwrap(),
            revocations: MemoryRevocations::new(),
        }
    }

    fn layer(&self) -> JwtAuthLayer {
        let verifier = TokenVerifier::builder(self.keys.clone())
            .validation(Validation::default().issuer(ISSUER).audience(AUDIENCE))
            .revocations(self.revocations.clone())
            .build();
        JwtAuthLayer::new(verifier)
    }

    fn claims(&self, sub: &str) -> Claims {
        Claims::new(sub, now(), now() + 900)
            .with_issuer(ISSUER)
            .with_audience(AUDIENCE)
    }

    fn sign(&self, claims: &impl serde::Serialize) -> String {
        self.keys.sign(claims).unwrap()
    }

    /// Signs with the right secret but a header of the test's choosing.
    fn sign_with_header(&self, header: &Header, claims: &impl serde::Serialize) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some("k1".into());
        header
    }
}

fn assert_challenge_without_error(reply: &Answer) {
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"jwt-gate\"")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{reply:?}");
}

fn assert_error(reply: &Answer, status: u16, code: &str, token: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    let challenge = reply.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Bearer realm=\"jwt-gate\", "),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("error=\"{code}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("error_description=\""), "{challenge}");
    assert_eq!(reply.json()["error"], code);
    assert!(reply.json()["error_description"]
        .as_str()
        .is_some_and(|text| !text.is_empty()));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{reply:?}");
    if token.len() > 8 {
        assert!(
            !reply.text.contains(token),
            "the token is echoed in the body"
        );
        assert!(
            !challenge.contains(token),
            "the token is echoed in the challenge"
        );
    }
}

async fn check_contract(addr: SocketAddr, fixture: &Fixture) {
    // No credentials, or another scheme: a bare challenge.
    assert_challenge_without_error(&get_with(addr, "/protected", &[]).await);
    assert_challenge_without_error(
        &get_with(
            addr,
            "/protected",
            &[("authorization", "Basic dXNlcjpwYXNz")],
        )
        .await,
    );

    // Malformed requests: 400 invalid_request.
    let good = fixture.sign(&fixture.claims("alice"));
    for headers in [
        vec![("authorization", format!("Bearer {good} {good}"))],
        vec![("authorization", "Bearer ".to_owned())],
        vec![("authorization", "Bearer".to_owned())],
        vec![
            ("authorization", format!("Bearer {good}")),
            ("authorization", format!("Bearer {good}")),
        ],
        vec![(
            "authorization",
            format!("Bearer {}", "a".repeat(8 * 1024 + 1)),
        )],
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        assert_error(
            &get_with(addr, "/protected", &headers).await,
            400,
            "invalid_request",
            &good,
        );
    }

    // Bad tokens: 401 invalid_token.
    let mut bad_tokens = Vec::new();
    let mut tampered = good.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    bad_tokens.push(("bad signature", tampered));
    let mut header = fixture.header();
    header.alg = Algorithm::HS384;
    bad_tokens.push((
        "wrong alg",
        fixture.sign_with_header(&header, &fixture.claims("alice")),
    ));
    let mut header = fixture.header();
    header.kid = Some("nobody".into());
    bad_tokens.push((
        "unknown kid",
        fixture.sign_with_header(&header, &fixture.claims("alice")),
    ));
    let mut expired = fixture.claims("alice");
    (expired.iat, expired.exp) = (now() - 3_600, now() - 120);
    bad_tokens.push(("expired", fixture.sign(&expired)));
    bad_tokens.push((
        "not yet valid",
        fixture.sign(&fixture.claims("alice").with_not_before(now() + 600)),
    ));
    let mut future = fixture.claims("alice");
    (future.iat, future.exp) = (now() + 600, now() + 900);
    bad_tokens.push(("issued in the future", fixture.sign(&future)));
    let mut long_lived = fixture.claims("alice");
    long_lived.exp = now() + 400 * 24 * 3_600;
    bad_tokens.push(("lifetime over the maximum", fixture.sign(&long_lived)));
    bad_tokens.push((
        "wrong issuer",
        fixture.sign(
            &Claims::new("alice", now(), now() + 900)
                .with_issuer("https://evil.test")
                .with_audience(AUDIENCE),
        ),
    ));
    bad_tokens.push((
        "missing issuer",
        fixture.sign(&Claims::new("alice", now(), now() + 900).with_audience(AUDIENCE)),
    ));
    bad_tokens.push((
        "wrong audience",
        fixture.sign(
            &Claims::new("alice", now(), now() + 900)
                .with_issuer(ISSUER)
                .with_audience("billing"),
        ),
    ));
    bad_tokens.push((
        "missing audience",
        fixture.sign(&Claims::new("alice", now(), now() + 900).with_issuer(ISSUER)),
    ));
    let mut header = fixture.header();
    header.typ = Some("JWT".into());
    bad_tokens.push((
        "typ JWT",
        fixture.sign_with_header(&header, &fixture.claims("alice")),
    ));
    let mut header = fixture.header();
    header.typ = None;
    bad_tokens.push((
        "no typ",
        fixture.sign_with_header(&header, &fixture.claims("alice")),
    ));
    let mut header = fixture.header();
    header.crit = Some(vec!["exp".into()]);
    bad_tokens.push((
        "crit header",
        fixture.sign_with_header(&header, &fixture.claims("alice")),
    ));
    bad_tokens.push((
        "missing jti",
        fixture.sign(&json!({"sub": "alice", "iat": now(), "exp": now() + 900, "iss": ISSUER, "aud": AUDIENCE})),
    ));
    let mut empty_jti = fixture.claims("alice");
    empty_jti.jti = String::new();
    bad_tokens.push(("empty jti", fixture.sign(&empty_jti)));
    let mut empty_sub = fixture.claims("alice");
    empty_sub.sub = String::new();
    bad_tokens.push(("empty sub", fixture.sign(&empty_sub)));
    let mut long_jti = fixture.claims("alice");
    long_jti.jti = "j".repeat(jwt_gate::MAX_JTI_LEN + 1);
    bad_tokens.push(("jti over the maximum length", fixture.sign(&long_jti)));
    bad_tokens.push((
        "string exp",
        fixture.sign(&json!({"sub": "alice", "iat": now(), "exp": (now() + 900).to_string(), "jti": "j", "iss": ISSUER, "aud": AUDIENCE})),
    ));
    bad_tokens.push(("not a jwt", "abc.def".to_owned()));
    bad_tokens.push(("garbage parts", "a.b.c".to_owned()));
    let revoked_claims = fixture.claims("alice");
    fixture
        .revocations
        .revoke_now(&revoked_claims.jti, revoked_claims.exp);
    bad_tokens.push(("revoked", fixture.sign(&revoked_claims)));

    for (case, token) in &bad_tokens {
        let reply = get_bearer(addr, "/protected", token).await;
        assert_eq!(reply.status, 401, "{case}: {reply:?}");
        assert_error(&reply, 401, "invalid_token", token);
    }

    // Valid: the inner service runs with the claims.
    let reply = get_bearer(addr, "/protected", &good).await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (200, "alice"));
    // Scheme is case-insensitive; the same token again comes from the verified-token cache.
    let reply = get_with(
        addr,
        "/protected",
        &[("authorization", &format!("bEaReR {good}"))],
    )
    .await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (200, "alice"));
    // A jti of exactly the maximum length is still a jti.
    let mut longest_jti = fixture.claims("alice");
    longest_jti.jti = "j".repeat(jwt_gate::MAX_JTI_LEN);
    let reply = get_bearer(addr, "/protected", &fixture.sign(&longest_jti)).await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (200, "alice"));

    // Every rejection is kept out of caches.
    let reply = get_with(addr, "/protected", &[]).await;
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let reply = get_bearer(addr, "/protected", "a.b.c").await;
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // A gRPC content type over HTTP/1.1 cannot be a gRPC call: the client gets the HTTP
    // rejection, not a cacheable 200 (the real gRPC form is tested with tonic over HTTP/2).
    for content_type in ["application/grpc", "application/grpc+proto"] {
        let reply = get_with(
            addr,
            "/protected",
            &[("content-type", content_type), ("te", "trailers")],
        )
        .await;
        assert_eq!(reply.status, 401, "{content_type}");
        assert_eq!(reply.header("grpc-status"), None);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(
            reply.json()["error_description"],
            "a bearer token is required"
        );
    }

    // Open path: no token looked at, not even a broken one.
    assert_eq!(get_with(addr, "/health", &[]).await.status, 200);
    assert_eq!(get_bearer(addr, "/health", "a.b.c").await.status, 200);
    // ...but a dot-segment path that would normalise elsewhere is not "open".
    assert_eq!(
        get_with(addr, "/health/../protected", &[]).await.status,
        401
    );

    // Optional path: anonymous without a token, claims with one, refused with a bad one.
    assert_eq!(get_with(addr, "/optional", &[]).await.text, "anonymous");
    assert_eq!(get_bearer(addr, "/optional", &good).await.text, "alice");
    assert_eq!(
        get_bearer(addr, "/optional", &bad_tokens[0].1).await.status,
        401
    );
}

#[tokio::test]
async fn axum_router_behind_the_gate_follows_the_contract() {
    let fixture = Fixture::new();
    let addr = serve_gated(fixture.layer()).await;
    check_contract(addr, &fixture).await;
}

#[tokio::test]
async fn plain_hyper_server_behind_the_gate_follows_the_contract() {
    let fixture = Fixture::new();
    let addr = serve_gated_over_hyper(fixture.layer()).await;
    check_contract(addr, &fixture).await;
}

#[tokio::test]
async fn revoking_a_token_refuses_it_even_after_it_was_cached() {
    let fixture = Fixture::new();
    let addr = serve_gated(fixture.layer()).await;
    let claims = fixture.claims("bob");
    let token = fixture.sign(&claims);
    assert_eq!(get_bearer(addr, "/protected", &token).await.status, 200);
    fixture.revocations.revoke_now(&claims.jti, claims.exp);
    assert_error(
        &get_bearer(addr, "/protected", &token).await,
        401,
        "invalid_token",
        &token,
    );
}

#[tokio::test]
async fn the_verifiers_realm_is_named_on_every_401() {
    let verifier = TokenVerifier::builder(keys()).realm("shop").build();
    let auth = jwt_gate::service::AuthService::new(
        verifier.clone(),
        jwt_gate::store::MemoryUserStore::new(),
    );
    let me = || axum::routing::get(|claims: Claims| async move { claims.sub });
    let app = axum::Router::new()
        .route("/me", me())
        .route("/open/me", me())
        .nest_service("/auth", auth)
        .layer(
            JwtAuthLayer::new(verifier)
                .open_prefix("/auth")
                .open_prefix("/open"),
        );
    let addr = serve(app).await;
    let challenge = Some("Bearer realm=\"shop\"");

    let gate = get_with(addr, "/me", &[]).await;
    assert_eq!(
        (gate.status.as_u16(), gate.header("www-authenticate")),
        (401, challenge)
    );

    // The gate leaves the path open, so the handler's extractor is what refuses.
    let extractor = get_with(addr, "/open/me", &[]).await;
    assert_eq!(
        (
            extractor.status.as_u16(),
            extractor.header("www-authenticate")
        ),
        (401, challenge)
    );

    let logout = call(addr, http::Method::POST, "/auth/logout", &[], "").await;
    assert_eq!(
        (logout.status.as_u16(), logout.header("www-authenticate")),
        (401, challenge)
    );
    let forged = token(&Keys::hs256([9u8; 32]).unwrap(), "alice");
    let logout = with_bearer(addr, http::Method::POST, "/auth/logout", &forged).await;
    assert_eq!(logout.status, 401);
    assert!(logout
        .header("www-authenticate")
        .is_some_and(|value| value.starts_with("Bearer realm=\"shop\", error=\"invalid_token\"")));
}

#[tokio::test]
async fn a_token_of_exactly_the_size_cap_passes_and_one_byte_more_is_refused() {
    let keys = keys();
    let token = token(&keys, "alice");
    for (cap, status) in [(token.len(), 200), (token.len() - 1, 400)] {
        let validation = Validation {
            max_token_len: cap,
            ..Validation::default()
        };
        let verifier = TokenVerifier::builder(keys.clone())
            .validation(validation)
            .build();
        let addr = serve_gated(JwtAuthLayer::new(verifier)).await;
        let reply = get_bearer(addr, "/protected", &token).await;
        assert_eq!(
            reply.status,
            status,
            "a {}-byte token, cap {cap}",
            token.len()
        );
    }
}
