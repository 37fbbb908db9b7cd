//! POST /auth/logout and /auth/logout-all: what is revoked, and what never is.

use crate::common;

use common::*;
use http::{Method, StatusCode};
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::{Claims, JwtAuthLayer, Keys};

fn field(json: &serde_json::Value, name: &str) -> String {
    json[name].as_str().unwrap().to_owned()
}

async fn logout(stack: &Stack, token: &str) -> Answer {
    with_bearer(stack.addr, Method::POST, "/auth/logout", token).await
}

#[tokio::test]
async fn a_logged_out_token_is_refused_by_the_gate_and_its_session_ends() {
    let stack = stack().await;
    let json = session(stack.addr, "alice").await;
    let access = json["access_token"].as_str().unwrap();
    assert_eq!(me(stack.addr, access).await.status, StatusCode::OK);

    let reply = logout(&stack, access).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    let refused = me(stack.addr, access).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // Logging out again is harmless, and succeeds: that is what makes a logout that failed
    // half-way safe to repeat.
    assert_eq!(logout(&stack, access).await.status, StatusCode::OK);
    assert_eq!(
        me(stack.addr, access).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The session's refresh token died with it.
    let refreshed = refresh(stack.addr, json["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn forged_or_expired_tokens_add_nothing_to_the_revocation_list() {
    let stack = stack().await;
    let now = SystemClock.now();
    let forged = Keys::hs256(b"not the server's secret, 32 bytes+")
        .unwrap()
        .sign(&Claims::new("alice", now, now + 900))
        .unwrap();
    let expired = keys()
        .sign(&Claims::new("alice", now - 3600, now - 1800))
        .unwrap();
    let unsigned = {
        let genuine = keys().sign(&Claims::new("alice", now, now + 900)).unwrap();
        let mut parts = genuine.split('.');
        let (_, payload) = (parts.next(), parts.next().unwrap());
        format!("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{payload}.")
    };
    for token in [&forged, &expired, &unsigned, &"garbage".to_owned()] {
        for path in ["/auth/logout", "/auth/logout-all"] {
            let reply = with_bearer(stack.addr, Method::POST, path, token).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {token}");
            assert!(reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer"));
        }
    }
    assert_eq!(stack.revocations.len(), 0);
    // Nor a cut-off for the subject: an earlier genuine token of alice's is still good.
    let earlier = keys()
        .sign(&Claims::new("alice", now - 10, now + 900))
        .unwrap();
    assert_eq!(me(stack.addr, &earlier).await.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_without_a_bearer_token_is_401_with_a_challenge() {
    let stack = stack().await;
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cGFzcw==")]] {
        let reply = call(stack.addr, Method::POST, "/auth/logout", &headers, "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="jwt-gate""#)
        );
    }
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let stack = stack().await;
    let first = session(stack.addr, "bob").await;
    let second = session(stack.addr, "bob").await;
    let other = session(stack.addr, "carol").await;
    let token = |json: &serde_json::Value, name: &str| json[name].as_str().unwrap().to_owned();

    let reply = with_bearer(
        stack.addr,
        Method::POST,
        "/auth/logout-all",
        &token(&first, "access_token"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    for json in [&first, &second] {
        assert_eq!(
            me(stack.addr, &token(json, "access_token")).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refresh(stack.addr, &token(json, "refresh_token"))
                .await
                .status,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        me(stack.addr, &token(&other, "access_token")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        refresh(stack.addr, &token(&other, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_refuses_every_access_token_of_the_session_at_every_gate() {
    let stack = stack().await;
    // A second gate in front of another application, sharing the verifier.
    let other_gate = serve_gated(JwtAuthLayer::new(stack.verifier.clone())).await;
    let login = session(stack.addr, "dora").await;
    // A sibling of the same session, minted by whoever holds the refresh token.
    let sibling = refresh(stack.addr, &field(&login, "refresh_token"))
        .await
        .json();
    let unrelated = session(stack.addr, "dora").await;
    let sibling_access = field(&sibling, "access_token");
    assert_eq!(
        peek_claims(&sibling_access)["sid"],
        peek_claims(&field(&login, "access_token"))["sid"]
    );
    assert_eq!(
        get_bearer(other_gate, "/protected", &sibling_access)
            .await
            .status,
        StatusCode::OK
    );

    let reply = logout(&stack, &field(&login, "access_token")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        me(stack.addr, &sibling_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_bearer(other_gate, "/protected", &sibling_access)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(stack.addr, &field(&sibling, "refresh_token"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // The user's other session goes on.
    let unrelated_access = field(&unrelated, "access_token");
    assert_eq!(
        me(stack.addr, &unrelated_access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_bearer(other_gate, "/protected", &unrelated_access)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_all_refuses_earlier_tokens_that_belong_to_no_session() {
    let stack = stack().await;
    let other_gate = serve_gated(JwtAuthLayer::new(stack.verifier.clone())).await;
    let login = session(stack.addr, "earl").await;
    // Minted elsewhere (a script, an older issuer) ten seconds ago: no sid, no session row,
    // nothing names it but its subject.
    let issued = stack.clock.now();
    let sessionless = keys()
        .sign(&Claims::new("earl", issued - 10, issued + 600))
        .unwrap();
    let someone_else = keys()
        .sign(&Claims::new("fay", issued - 10, issued + 600))
        .unwrap();
    assert_eq!(me(stack.addr, &sessionless).await.status, StatusCode::OK);

    let reply = with_bearer(
        stack.addr,
        Method::POST,
        "/auth/logout-all",
        &field(&login, "access_token"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        me(stack.addr, &sessionless).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_bearer(other_gate, "/protected", &sessionless)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(stack.addr, &someone_else).await.status, StatusCode::OK);
    // A token issued after the cut-off is good.
    stack.clock.advance(1);
    let later = keys()
        .sign(&Claims::new("earl", issued + 1, issued + 600))
        .unwrap();
    assert_eq!(me(stack.addr, &later).await.status, StatusCode::OK);
}

/// A service whose logout reads the token also from the cookie `access_token`, as a gate
/// configured with that cookie would.
fn reading_the_cookie(
    auth: jwt_gate::service::AuthServiceBuilder,
) -> jwt_gate::service::AuthServiceBuilder {
    auth.token_sources(jwt_gate::TokenSources {
        cookie: Some("access_token".to_owned()),
        ..jwt_gate::TokenSources::default()
    })
}

async fn logout_with_cookie(stack: &Stack, token: &str, site: &str) -> Answer {
    let cookie = format!("theme=dark; access_token={token}");
    let headers = [
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", site),
        ("origin", "https://elsewhere.example"),
    ];
    call(stack.addr, Method::POST, "/auth/logout", &headers, "").await
}

#[tokio::test]
async fn a_browser_holding_its_token_as_a_cookie_logs_out_with_the_cookie() {
    let stack = stack_with(reading_the_cookie).await;
    let json = session(stack.addr, "alice").await;
    let access = field(&json, "access_token");

    let reply = logout_with_cookie(&stack, &access, "same-origin").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        me(stack.addr, &access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_cross_site_logout_by_cookie_is_refused_and_revokes_nothing() {
    let stack = stack_with(reading_the_cookie).await;
    let json = session(stack.addr, "alice").await;
    let access = field(&json, "access_token");

    let reply = logout_with_cookie(&stack, &access, "cross-site").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json()["error"],
        "cross_site_request",
        "{}",
        reply.text
    );
    assert_eq!(stack.revocations.len(), 0);
    assert_eq!(me(stack.addr, &access).await.status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_cookie_source_logout_ignores_the_cookie() {
    let stack = stack().await;
    let json = session(stack.addr, "alice").await;
    let access = field(&json, "access_token");

    let reply = logout_with_cookie(&stack, &access, "same-origin").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stack.revocations.len(), 0);
    assert_eq!(me(stack.addr, &access).await.status, StatusCode::OK);
}

/// The partner issuer the gate trusts besides its own keys.
const PARTNER: &str = "https://partner.example";

/// A gate and auth service sharing one verifier that also trusts [`PARTNER`], whose keys are
/// returned with the verifier, its clock and its revocations.
struct PartnerStack {
    addr: std::net::SocketAddr,
    partner: Keys,
    verifier: jwt_gate::TokenVerifier,
    clock: jwt_gate::clock::ManualClock,
    revocations: jwt_gate::revocation::MemoryRevocations,
}

async fn partner_stack() -> PartnerStack {
    let partner = Keys::hs256(b"the partner issuer's own secret, 32+").unwrap();
    let clock = jwt_gate::clock::ManualClock::starting_now();
    let revocations = jwt_gate::revocation::MemoryRevocations::new();
    let verifier = jwt_gate::TokenVerifier::builder(keys())
        .validation(
            jwt_gate::Validation::default()
                .issuer("https://auth.local.example")
                .audience("orders"),
        )
        .issuer_keys(PARTNER, partner.clone())
        .revocations(revocations.clone())
        .clock(clock.clone())
        .build();
    let users = jwt_gate::store::MemoryUserStore::new();
    let auth = jwt_gate::service::AuthService::builder(verifier.clone(), users).build();
    let addr = serve(app(verifier.clone(), auth)).await;
    PartnerStack {
        addr,
        partner,
        verifier,
        clock,
        revocations,
    }
}

/// A gate that also trusts a partner issuer lets the partner's users in, and shares its
/// verifier with the auth service. A partner token whose `sub` is a local user's name passes
/// the gate, but cannot log that local user out anywhere.
#[tokio::test]
async fn another_issuers_token_cannot_log_out_the_local_user_of_the_same_name() {
    let PartnerStack {
        addr,
        partner,
        verifier,
        clock,
        ..
    } = partner_stack().await;

    let local = session(addr, "alice").await;
    let local_access = field(&local, "access_token");
    let now = clock.now();
    // Even naming the local session: a partner may put any `sid` in its tokens.
    let mut claims = Claims::new("alice", now, now + 600)
        .with_issuer(PARTNER)
        .with_audience("orders");
    claims.sid = verifier.verify(&local_access).unwrap().sid.clone();
    assert!(claims.sid.is_some());
    let impostor = partner.sign(&claims).unwrap();
    assert_eq!(
        me(addr, &impostor).await.status,
        StatusCode::OK,
        "the gate lets it in"
    );

    for path in ["/auth/logout-all", "/auth/logout"] {
        let refused = with_bearer(addr, Method::POST, path, &impostor).await;
        assert_eq!(
            refused.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {refused:?}"
        );
    }
    // RFC 7009: a token that is not this service's is answered 200 and changes nothing.
    let revoked = post_form(addr, "/auth/revoke", &[("token", impostor.as_str())]).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(me(addr, &local_access).await.status, StatusCode::OK);
    assert_eq!(
        refresh(addr, &field(&local, "refresh_token")).await.status,
        StatusCode::OK,
        "the local session lives on"
    );
}

/// The other way round: a local user who registers a partner user's `sub` as their name and
/// logs out everywhere ends their own tokens only. A subject is one issuer's name for
/// someone; the partner's user is cut off by the partner's name for them.
#[tokio::test]
async fn a_local_logout_everywhere_leaves_another_issuers_user_of_that_name_signed_in() {
    use jwt_gate::revocation::RevocationStore as _;

    let PartnerStack {
        addr,
        partner,
        clock,
        revocations,
        ..
    } = partner_stack().await;

    // The partner's user, whose `sub` anyone can learn.
    let now = clock.now();
    let partners_user = Claims::new("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", now, now + 600)
        .with_issuer(PARTNER)
        .with_audience("orders");
    let partners_token = partner.sign(&partners_user).unwrap();
    assert_eq!(me(addr, &partners_token).await.status, StatusCode::OK);

    let local = session(addr, "f81d4fae-7dec-11d0-a765-00a0c91e6bf6").await;
    let local_access = field(&local, "access_token");
    clock.advance(1);
    let logout = with_bearer(addr, Method::POST, "/auth/logout-all", &local_access).await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    assert_eq!(
        me(addr, &local_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me(addr, &partners_token).await.status,
        StatusCode::OK,
        "the partner's user is someone else"
    );

    // Cutting off the partner's user takes the partner's name for them.
    revocations
        .revoke_issuer_subject(PARTNER, &partners_user.sub, now + 1, now + 1_200)
        .await
        .unwrap();
    assert_eq!(
        me(addr, &partners_token).await.status,
        StatusCode::UNAUTHORIZED
    );
}
