//! What issued tokens carry for the gate to check: the user's scopes (narrowed by the OAuth2
//! `scope` parameter), their roles at the verifier's roles claim, and an application's own
//! claims from the builder's `extra_claims` hook.

use crate::common;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use common::*;
use http::StatusCode;
use jwt_gate::service::AuthService;
use jwt_gate::store::{GrantChange, MemoryUserStore, User, UserStore};
use jwt_gate::{ClaimPath, Claims, JwtAuthLayer, Require, TokenVerifier};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Routes behind a gate built from `verifier`: `/orders` needs scope `orders:write`,
/// `/admin` role `admin`, `/read` scope `orders:read`; `/auth` is the service, open.
async fn serve_required(verifier: TokenVerifier, auth: AuthService) -> SocketAddr {
    let hello = || async { "ok" };
    let gate = JwtAuthLayer::new(verifier)
        .open_prefix("/auth")
        .require_route(None, "/orders", Require::scope("orders:write"))
        .require_route(None, "/read", Require::scope("orders:read"))
        .require_route(None, "/admin", Require::role("admin"));
    serve(
        Router::new()
            .route("/orders", get(hello))
            .route("/read", get(hello))
            .route("/admin", get(hello))
            .nest_service("/auth", auth)
            .layer(gate),
    )
    .await
}

struct Granted {
    addr: SocketAddr,
    users: MemoryUserStore,
}

/// The service and the gate on one verifier, with `alice` registered and holding role
/// `admin` and scopes `orders:read` and `orders:write`.
async fn granted_with(verifier: TokenVerifier) -> Granted {
    let users = MemoryUserStore::new();
    let auth =
        unthrottled_registrations(AuthService::builder(verifier.clone(), users.clone())).build();
    let addr = serve_required(verifier, auth).await;
    assert_eq!(
        register(addr, "alice", PASSWORD).await.status,
        StatusCode::CREATED
    );
    let change = GrantChange::new()
        .grant_role("admin")
        .unwrap()
        .grant_scope("orders:read")
        .unwrap()
        .grant_scope("orders:write")
        .unwrap();
    assert!(users.change_grants("alice", &change).await.unwrap());
    Granted { addr, users }
}

async fn granted() -> Granted {
    granted_with(verifier().0).await
}

async fn login_for(addr: SocketAddr, scope: Option<&str>) -> Answer {
    let mut form = vec![("username", "alice"), ("password", PASSWORD)];
    form.extend(scope.map(|scope| ("scope", scope)));
    post_form(addr, "/auth/token", &form).await
}

async fn refresh_for(addr: SocketAddr, refresh_token: &str, scope: Option<&str>) -> Answer {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    form.extend(scope.map(|scope| ("scope", scope)));
    post_form(addr, "/auth/token", &form).await
}

fn text(json: &Value, name: &str) -> String {
    json[name].as_str().unwrap().to_owned()
}

async fn status_of(addr: SocketAddr, path: &str, token: &str) -> StatusCode {
    get_bearer(addr, path, token).await.status
}

#[tokio::test]
async fn without_a_scope_parameter_a_token_carries_every_scope_and_role_the_user_holds() {
    let granted = granted().await;
    let reply = login_for(granted.addr, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let json = reply.json();
    // Nothing was asked for, so the response says what was granted (RFC 6749 §5.1).
    assert_eq!(json["scope"], "orders:read orders:write");
    let access = text(&json, "access_token");
    let claims = peek_claims(&access);
    assert_eq!(claims["scope"], "orders:read orders:write");
    assert_eq!(claims["roles"], serde_json::json!(["admin"]));
    for path in ["/orders", "/read", "/admin"] {
        assert_eq!(
            status_of(granted.addr, path, &access).await,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_user_without_grants_gets_tokens_as_before_that_requirements_refuse() {
    let granted = granted().await;
    let json = session(granted.addr, "bob").await;
    assert!(json.get("scope").is_none(), "{json}");
    let access = text(&json, "access_token");
    let claims = peek_claims(&access);
    assert!(claims.get("scope").is_none() && claims.get("roles").is_none());
    for path in ["/orders", "/admin"] {
        let refused = get_bearer(granted.addr, path, &access).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(refused
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope"));
    }
}

#[tokio::test]
async fn the_scope_parameter_narrows_the_token_to_what_was_asked_and_is_held() {
    let granted = granted().await;
    // Exactly what was asked: no `scope` in the response.
    let json = login_for(granted.addr, Some("orders:read")).await.json();
    assert!(json.get("scope").is_none(), "{json}");
    let access = text(&json, "access_token");
    assert_eq!(peek_claims(&access)["scope"], "orders:read");
    assert_eq!(
        status_of(granted.addr, "/read", &access).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(granted.addr, "/orders", &access).await,
        StatusCode::FORBIDDEN
    );
    // Roles are the user's, whatever the scopes asked for.
    assert_eq!(
        status_of(granted.addr, "/admin", &access).await,
        StatusCode::OK
    );

    // A scope the user does not hold is left out, and the response says what was granted.
    let reply = login_for(granted.addr, Some("orders:read  billing:all")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["scope"], "orders:read");
    assert_eq!(
        peek_claims(&text(&json, "access_token"))["scope"],
        "orders:read"
    );

    // Nothing the user holds: a token with no scope at all, and the response says so.
    let json = login_for(granted.addr, Some("billing:all")).await.json();
    assert_eq!(json["scope"], "");
    assert!(peek_claims(&text(&json, "access_token"))
        .get("scope")
        .is_none());
}

#[tokio::test]
async fn a_scope_that_is_no_scope_name_is_invalid_scope_and_issues_nothing() {
    let granted = granted().await;
    for scope in ["orders:read\torders:write", "orders\"read", "caf\u{e9}"] {
        let reply = login_for(granted.addr, Some(scope)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{scope:?}");
        assert_eq!(reply.json()["error"], "invalid_scope", "{scope:?}");
        assert!(!reply.text.contains(scope), "the scope is not echoed");
    }
    assert_eq!(granted.users.refresh_token_count(), 0);
    // Repeated, it is refused like any repeated parameter.
    let reply = post_form(
        granted.addr,
        "/auth/token",
        &[
            ("username", "alice"),
            ("password", PASSWORD),
            ("scope", "orders:read"),
            ("scope", "orders:write"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["field"], "scope");
}

#[tokio::test]
async fn refresh_keeps_or_narrows_the_sessions_scopes_and_never_widens_them() {
    let granted = granted().await;
    let login = login_for(granted.addr, Some("orders:read")).await.json();

    // No scope asked: the session's own, not everything the user holds.
    let json = refresh_for(granted.addr, &text(&login, "refresh_token"), None)
        .await
        .json();
    assert_eq!(json["scope"], "orders:read");
    let access = text(&json, "access_token");
    assert_eq!(peek_claims(&access)["scope"], "orders:read");
    assert_eq!(
        status_of(granted.addr, "/orders", &access).await,
        StatusCode::FORBIDDEN
    );

    // Asking for more than the session was granted gets no more.
    let reply = refresh_for(
        granted.addr,
        &text(&json, "refresh_token"),
        Some("orders:read orders:write"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["scope"], "orders:read");
    assert_eq!(
        status_of(granted.addr, "/orders", &text(&json, "access_token")).await,
        StatusCode::FORBIDDEN
    );

    // A narrower refresh narrows that access token only: the session keeps its scopes.
    let all = login_for(granted.addr, None).await.json();
    let narrow = refresh_for(
        granted.addr,
        &text(&all, "refresh_token"),
        Some("orders:read"),
    )
    .await
    .json();
    assert!(narrow.get("scope").is_none(), "exactly what was asked");
    assert_eq!(
        peek_claims(&text(&narrow, "access_token"))["scope"],
        "orders:read"
    );
    let wide = refresh_for(granted.addr, &text(&narrow, "refresh_token"), None)
        .await
        .json();
    assert_eq!(wide["scope"], "orders:read orders:write");

    // A scope or role taken from the user is gone at the next refresh; a role given is there.
    let change = GrantChange::new()
        .revoke_scope("orders:write")
        .unwrap()
        .revoke_role("admin")
        .unwrap()
        .grant_role("auditor")
        .unwrap();
    assert!(granted.users.change_grants("alice", &change).await.unwrap());
    let json = refresh_for(granted.addr, &text(&wide, "refresh_token"), None)
        .await
        .json();
    let claims = peek_claims(&text(&json, "access_token"));
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["roles"], serde_json::json!(["auditor"]));
    assert_eq!(
        status_of(granted.addr, "/admin", &text(&json, "access_token")).await,
        StatusCode::FORBIDDEN
    );
    // An invalid scope on a refresh spends nothing: the refresh token still works.
    let bad = refresh_for(granted.addr, &text(&json, "refresh_token"), Some("a\"b")).await;
    assert_eq!(bad.json()["error"], "invalid_scope");
    let again = refresh_for(granted.addr, &text(&json, "refresh_token"), None).await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn roles_go_where_the_verifier_reads_them() {
    let (verifier, _) = verifier();
    let keycloak = TokenVerifier::builder(keys())
        .roles_claim(ClaimPath::new("realm_access.roles").unwrap())
        .revocations(verifier.revocations().clone())
        .build();
    let granted = granted_with(keycloak).await;
    let access = text(&login_for(granted.addr, None).await.json(), "access_token");
    let claims = peek_claims(&access);
    assert_eq!(
        claims["realm_access"],
        serde_json::json!({ "roles": ["admin"] })
    );
    assert!(claims.get("roles").is_none());
    assert_eq!(
        status_of(granted.addr, "/admin", &access).await,
        StatusCode::OK
    );
}

/// A gate's own claims type with a required field.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tenant {
    tenant: String,
}

/// An auth service for `users` and, in front of `/tenant`, a gate whose claims type is
/// `Claims<Tenant>`, on the same keys and revocations.
async fn serve_tenant_gate(auth: impl FnOnce(TokenVerifier) -> AuthService) -> SocketAddr {
    let (verifier, revocations) = verifier();
    let gate = TokenVerifier::builder(keys())
        .revocations(revocations)
        .claims::<Tenant>()
        .build();
    serve(
        Router::new()
            .route(
                "/tenant",
                get(|claims: Claims<Tenant>| async move { claims.extra.tenant }),
            )
            .nest_service("/auth", auth(verifier))
            .layer(JwtAuthLayer::new(gate).open_prefix("/auth")),
    )
    .await
}

fn tenant_of(user: &User) -> Tenant {
    Tenant {
        tenant: format!("tenant-of-{}", user.key),
    }
}

#[tokio::test]
async fn a_gate_whose_claims_have_a_required_field_takes_tokens_minted_with_the_hook() {
    let addr = serve_tenant_gate(|verifier| {
        AuthService::builder(verifier, MemoryUserStore::new())
            .extra_claims(tenant_of)
            .build()
    })
    .await;
    let json = session(addr, "carol").await;
    let reply = get_bearer(addr, "/tenant", &text(&json, "access_token")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.text, "tenant-of-carol");
    // Refreshed tokens carry it too.
    let refreshed = refresh(addr, &text(&json, "refresh_token")).await.json();
    let reply = get_bearer(addr, "/tenant", &text(&refreshed, "access_token")).await;
    assert_eq!(reply.text, "tenant-of-carol");
}

#[tokio::test]
async fn without_the_hook_that_gate_refuses_the_services_tokens() {
    let addr =
        serve_tenant_gate(|verifier| AuthService::new(verifier, MemoryUserStore::new())).await;
    let json = session(addr, "dave").await;
    let refused = get_bearer(addr, "/tenant", &text(&json, "access_token")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
}

#[tokio::test]
async fn a_hook_that_would_replace_a_claim_the_service_sets_issues_nothing() {
    #[derive(Serialize)]
    struct Sneaky {
        scope: &'static str,
    }
    #[derive(Serialize)]
    struct Roles {
        roles: Vec<&'static str>,
    }
    let stacks = [
        stack_with(|auth| {
            auth.extra_claims(|_: &User| Sneaky {
                scope: "orders:write",
            })
        })
        .await,
        stack_with(|auth| {
            auth.extra_claims(|_: &User| Roles {
                roles: vec!["admin"],
            })
        })
        .await,
        stack_with(|auth| auth.extra_claims(|user: &User| user.key.clone())).await,
    ];
    for stack in stacks {
        register(stack.addr, "erin", PASSWORD).await;
        let reply = login(stack.addr, "erin", PASSWORD).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.json()["error"], "server_error");
        assert!(!reply.text.contains("access_token"));
        assert_eq!(stack.users.refresh_token_count(), 0, "no session started");
    }
}
