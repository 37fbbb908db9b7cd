//! Authorization over real HTTP and gRPC: scope (`scope`, `scp`) and role requirements per gate,
//! per route beside open and optional paths, on a nested router, and per gRPC method; each
//! refusal the RFC 6750 §3.1 `403` (or `grpc-status: 7`), after verification and revocation.

use crate::common;

use std::net::SocketAddr;

use axum::routing;
use axum::Router;
use common::*;
use http::Method;
use jsonwebtoken::{EncodingKey, Header};
use jwt_gate::revocation::{MemoryRevocations, RevocationStore};
use jwt_gate::{Algorithm, ClaimPath, Claims, JwtAuthLayer, Require, RequireLayer, TokenVerifier};
use serde_json::{json, Value};

/// A token with the crate's header and these claims beside `sub`, `iat`, `exp` and `jti`.
fn token_with(extra: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let mut claims = json!({
        "sub": "alice",
        "iat": now(),
        "exp": now() + 600,
        "jti": format!("jti-{}", extra),
    });
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn verifier_with_roles(path: &str) -> TokenVerifier {
    TokenVerifier::builder(keys())
        .roles_claim(ClaimPath::new(path).unwrap())
        .build()
}

async fn ok(_claims: Claims) -> &'static str {
    "ok"
}

fn routes() -> Router {
    Router::new()
        .route("/orders", routing::get(ok).post(ok))
        .route("/health", routing::get(|| async { "ok" }))
        // No claims needed by the handler: whatever refuses here is the gate.
        .route(
            "/catalog/items",
            routing::get(|| async { "items" }).post(|| async { "created" }),
        )
}

const DESCRIPTION: &str = "the token lacks a scope or role this resource requires";

fn assert_forbidden(reply: &Answer, scope: Option<&str>, missing: Value) {
    assert_eq!(reply.status, 403, "{reply:?}");
    let mut challenge = format!(
        "Bearer realm=\"jwt-gate\", error=\"insufficient_scope\", error_description=\"{DESCRIPTION}\""
    );
    if let Some(scope) = scope {
        challenge.push_str(&format!(", scope=\"{scope}\""));
    }
    assert_eq!(reply.header("www-authenticate"), Some(challenge.as_str()));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!({
            "error": "insufficient_scope",
            "error_description": DESCRIPTION,
            "missing": missing,
        })
    );
}

async fn post_bearer(addr: SocketAddr, path: &str, token: &str) -> Answer {
    with_bearer(addr, Method::POST, path, token).await
}

#[tokio::test]
async fn a_scope_requirement_serves_the_scope_and_refuses_403_without_it_even_from_the_cache() {
    let layer = JwtAuthLayer::new(TokenVerifier::new(keys()))
        .require(Require::scope("orders:read").and_scope("orders:list"));
    let addr = serve(routes().layer(layer)).await;
    let granted = token_with(json!({ "scope": "openid orders:list orders:read" }));
    let lacking = token_with(json!({ "scope": "openid orders:read" }));
    // Twice each: the second answer comes from the verified-token cache.
    for _ in 0..2 {
        assert_eq!(get_bearer(addr, "/orders", &granted).await.status, 200);
        assert_forbidden(
            &get_bearer(addr, "/orders", &lacking).await,
            Some("orders:read orders:list"),
            json!({ "scopes": ["orders:list"] }),
        );
    }
    // No token at all is still the 401 without an error code.
    let anonymous = get(addr, "/orders", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"jwt-gate\"")
    );
}

#[tokio::test]
async fn scp_grants_scopes_as_an_array_or_a_space_separated_string() {
    let layer =
        JwtAuthLayer::new(TokenVerifier::new(keys())).require(Require::scope("orders:read"));
    let addr = serve(routes().layer(layer)).await;
    for granted in [
        json!({ "scp": ["openid", "orders:read"] }),  // Okta
        json!({ "scp": "orders:read orders:write" }), // Entra ID
    ] {
        let token = token_with(granted.clone());
        assert_eq!(
            get_bearer(addr, "/orders", &token).await.status,
            200,
            "{granted}"
        );
    }
    for lacking in [
        json!({ "scp": ["openid", "orders:readonly"] }),
        json!({ "scp": "orders:write" }),
        json!({ "roles": ["orders:read"] }), // a role is not a scope
    ] {
        let token = token_with(lacking.clone());
        assert_forbidden(
            &get_bearer(addr, "/orders", &token).await,
            Some("orders:read"),
            json!({ "scopes": ["orders:read"] }),
        );
    }
}

#[tokio::test]
async fn roles_are_read_at_the_configured_nested_claim_path() {
    let keycloak = json!({
        "realm_access": { "roles": ["offline_access", "admin"] },
        "resource_access": {
            "orders-api": { "roles": ["writer"] },
            "billing": { "roles": ["auditor"] },
        },
    });
    let realm = serve(
        routes().layer(
            JwtAuthLayer::new(verifier_with_roles("realm_access.roles"))
                .require(Require::role("admin")),
        ),
    )
    .await;
    let client = serve(
        routes().layer(
            JwtAuthLayer::new(verifier_with_roles("resource_access.orders-api.roles"))
                .require(Require::role("writer")),
        ),
    )
    .await;
    let token = token_with(keycloak);
    assert_eq!(get_bearer(realm, "/orders", &token).await.status, 200);
    assert_eq!(get_bearer(client, "/orders", &token).await.status, 200);

    // Auth0's namespaced custom claim, whose name holds `.` and `/`: a JSON Pointer.
    let auth0 = serve(
        routes().layer(
            JwtAuthLayer::new(verifier_with_roles("/https:~1~1example.com~1roles"))
                .require(Require::role("admin")),
        ),
    )
    .await;
    let namespaced = token_with(json!({ "https://example.com/roles": ["admin"] }));
    assert_eq!(get_bearer(auth0, "/orders", &namespaced).await.status, 200);
    // Read as dots, that name is a path no claim is at.
    let dotted = token_with(json!({ "https://example": { "com/roles": ["admin"] } }));
    assert_forbidden(
        &get_bearer(auth0, "/orders", &dotted).await,
        None,
        json!({ "roles": ["admin"] }),
    );

    // The same role names in the wrong place grant nothing.
    let elsewhere = token_with(json!({
        "roles": ["admin", "writer"],
        "resource_access": { "billing": { "roles": ["admin", "writer"] } },
    }));
    assert_forbidden(
        &get_bearer(realm, "/orders", &elsewhere).await,
        None,
        json!({ "roles": ["admin"] }),
    );
    assert_forbidden(
        &get_bearer(client, "/orders", &elsewhere).await,
        None,
        json!({ "roles": ["writer"] }),
    );
}

/// A route's requirements hold on an open path they cover too: only a token can meet them,
/// so the gate reads one there. A sufficient token passes, none or a lacking one does not.
#[tokio::test]
async fn an_open_path_under_a_route_rule_takes_a_token_that_meets_it() {
    let layer = JwtAuthLayer::new(TokenVerifier::new(keys()))
        .open_path("/api/public")
        .require_prefix(None, "/api", Require::scope("api"));
    let routes = Router::new().route("/api/public", routing::get(|| async { "public" }));
    let addr = serve(routes.layer(layer)).await;

    let sufficient = token_with(json!({ "scope": "api" }));
    let passed = get_bearer(addr, "/api/public", &sufficient).await;
    assert_eq!(
        (passed.status.as_u16(), passed.text.as_str()),
        (200, "public")
    );
    assert_eq!(get(addr, "/api/public", None).await.status, 401);
    assert_forbidden(
        &get_bearer(addr, "/api/public", &token_with(json!({}))).await,
        Some("api"),
        json!({ "scopes": ["api"] }),
    );
}

#[tokio::test]
async fn per_route_rules_apply_by_method_and_path_beside_open_and_optional_paths() {
    let layer = JwtAuthLayer::new(TokenVerifier::new(keys()))
        .open_path("/health")
        .optional_prefix("/catalog")
        .require_route(
            Some(Method::POST),
            "/orders",
            Require::scope("orders:write"),
        )
        .require_route(
            Some(Method::POST),
            "/catalog/items",
            Require::scope("catalog:write"),
        );
    let addr = serve(routes().layer(layer)).await;
    let reader = token_with(json!({ "scope": "orders:read" }));
    let writer = token_with(json!({ "scope": "orders:write catalog:write" }));

    assert_eq!(
        get_bearer(addr, "/orders", &reader).await.status,
        200,
        "GET needs no scope"
    );
    assert_forbidden(
        &post_bearer(addr, "/orders", &reader).await,
        Some("orders:write"),
        json!({ "scopes": ["orders:write"] }),
    );
    assert_eq!(post_bearer(addr, "/orders", &writer).await.status, 200);
    assert_eq!(
        get(addr, "/health", None).await.status,
        200,
        "open stays open"
    );

    // Optional paths stay optional, except where a route rule asks for a scope.
    assert_eq!(get(addr, "/catalog/items", None).await.status, 200);
    let anonymous_write = call(addr, Method::POST, "/catalog/items", &[], "").await;
    assert_eq!(anonymous_write.status, 401, "{anonymous_write:?}");
    assert_forbidden(
        &post_bearer(addr, "/catalog/items", &reader).await,
        Some("catalog:write"),
        json!({ "scopes": ["catalog:write"] }),
    );
    assert_eq!(
        post_bearer(addr, "/catalog/items", &writer).await.status,
        200
    );

    // A path a router could normalise into /orders must meet every route rule.
    for sneaky in ["/catalog/../orders", "/orders;x", "/catalog/%2e%2e/orders"] {
        let reply = post_bearer(addr, sneaky, &reader).await;
        assert_eq!(reply.status, 403, "{sneaky}: {reply:?}");
    }
    // So must the spellings a case-insensitive router (Express's, ASP.NET Core's by default)
    // or one that ignores a trailing slash routes to /orders.
    for lenient in ["/ORDERS", "/Orders", "/orders/", "/ORDERS/"] {
        let reply = post_bearer(addr, lenient, &reader).await;
        assert_eq!(reply.status, 403, "{lenient}: {reply:?}");
    }
}

/// A `GET` rule holds `HEAD` (axum answers it with the `GET` handler), and a rule holds the
/// decoded spelling of a path in any case (`%24` is `$`; ASP.NET Core decodes, then routes
/// case-insensitively).
#[tokio::test]
async fn a_rule_holds_head_for_get_and_a_decoded_path_in_any_case() {
    let app = Router::new()
        .route("/reports", routing::get(|| async { "the reports" }))
        .route("/odata/$batch", routing::post(|| async { "batch" }))
        .route("/ODATA/$batch", routing::post(|| async { "batch" }));
    let layer = JwtAuthLayer::new(verifier_with_roles("roles"))
        .require_route(Some(Method::GET), "/reports", Require::role("auditor"))
        .require_route(Some(Method::POST), "/odata/$batch", Require::role("admin"));
    let addr = serve(app.layer(layer)).await;
    let clerk = token_with(json!({ "roles": ["clerk"] }));
    let auditor = token_with(json!({ "roles": ["auditor", "admin"] }));
    let refused = with_bearer(addr, Method::HEAD, "/reports", &clerk).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let allowed = with_bearer(addr, Method::HEAD, "/reports", &auditor).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");

    for path in ["/odata/%24batch", "/ODATA/%24batch", "/OData/$batch"] {
        let refused = post_bearer(addr, path, &clerk).await;
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
    }
    // axum routes the spelling as sent: the gate lets the role through.
    assert_eq!(
        post_bearer(addr, "/ODATA/$batch", &auditor).await.status,
        200
    );
}

/// A prefix rule on a case-insensitive upstream: every spelling of the prefix and what is
/// below it needs the role, and nothing else does.
#[tokio::test]
async fn a_prefix_rule_holds_every_case_of_its_prefix() {
    let app = Router::new()
        .route("/admin/users", routing::get(|| async { "users" }))
        .route(
            "/ADMIN/users",
            routing::get(|| async { "users, by another spelling" }),
        )
        .route(
            "/administrators",
            routing::get(|| async { "a page of its own" }),
        )
        .route("/Admin", routing::get(|| async { "the prefix itself" }));
    let layer = JwtAuthLayer::new(verifier_with_roles("roles")).require_prefix(
        None,
        "/admin",
        Require::role("admin"),
    );
    let addr = serve(app.layer(layer)).await;
    let clerk = token_with(json!({ "roles": ["clerk"] }));
    let admin = token_with(json!({ "roles": ["admin"] }));

    for path in ["/admin/users", "/ADMIN/users", "/Admin"] {
        let refused = get_bearer(addr, path, &clerk).await;
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
        assert_eq!(get_bearer(addr, path, &admin).await.status, 200, "{path}");
    }
    let beside = get_bearer(addr, "/administrators", &clerk).await;
    assert_eq!(beside.status, 200, "not below /admin: {beside:?}");
}

#[tokio::test]
async fn a_route_rule_holds_the_format_suffix_rails_routes_alike() {
    // Rails' `resources :orders` routes `POST /orders.json` to `orders#create`, as it does
    // `POST /orders`: the rule for the one holds the other.
    let app = Router::new()
        .route("/orders", routing::post(|| async { "created" }))
        .route(
            "/orders.json",
            routing::post(|| async { "created, as JSON" }),
        );
    let layer = JwtAuthLayer::new(verifier_with_roles("roles")).require_prefix(
        Some(Method::POST),
        "/orders",
        Require::role("clerk"),
    );
    let addr = serve(app.layer(layer)).await;
    let viewer = token_with(json!({ "roles": ["viewer"] }));
    let clerk = token_with(json!({ "roles": ["clerk"] }));
    for path in ["/orders", "/orders.json"] {
        let refused = post_bearer(addr, path, &viewer).await;
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
        assert_eq!(post_bearer(addr, path, &clerk).await.status, 200, "{path}");
    }
    // Rails reads any suffix without a `.` as the format, and a trailing `/` away.
    for path in ["/orders.json/", "/orders.x-y", "/orders.json_api"] {
        let refused = post_bearer(addr, path, &viewer).await;
        assert_eq!(refused.status, 403, "{path}: {refused:?}");
    }
}

#[tokio::test]
async fn a_nested_router_carries_its_own_requirement_inside_the_gate() {
    let admin = Router::new()
        .route("/users", routing::get(ok))
        .layer(RequireLayer::new(Require::role("admin")));
    let app = Router::new()
        .route("/me", routing::get(ok))
        .route("/reports", routing::post(ok))
        .nest("/admin", admin)
        .layer(JwtAuthLayer::new(TokenVerifier::new(keys())));
    let addr = serve(app).await;
    let user = token_with(json!({ "roles": ["user"] }));
    let admin = token_with(json!({ "roles": ["admin"] }));

    assert_forbidden(
        &get_bearer(addr, "/admin/users", &user).await,
        None,
        json!({ "roles": ["admin"] }),
    );
    assert_eq!(get_bearer(addr, "/admin/users", &admin).await.status, 200);
    assert_eq!(
        get_bearer(addr, "/me", &user).await.status,
        200,
        "only the nested router"
    );
}

#[tokio::test]
async fn a_predicate_over_the_claims_refuses_naming_what_failed() {
    #[derive(Clone, serde::Deserialize)]
    struct Tenant {
        tenant: String,
    }
    let verifier = TokenVerifier::builder(keys()).claims::<Tenant>().build();
    let layer = JwtAuthLayer::new(verifier).require(Require::predicate(
        "tenant acme",
        |claims: &Claims<Tenant>| claims.extra.tenant == "acme",
    ));
    let app = Router::new()
        .route("/orders", routing::get(|| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let acme = token_with(json!({ "tenant": "acme" }));
    let other = token_with(json!({ "tenant": "globex" }));
    assert_eq!(get_bearer(addr, "/orders", &acme).await.status, 200);
    assert_forbidden(
        &get_bearer(addr, "/orders", &other).await,
        None,
        json!({ "predicates": ["tenant acme"] }),
    );
}

#[tokio::test]
async fn a_revoked_token_is_401_before_any_requirement_is_judged() {
    let revocations = MemoryRevocations::new();
    let verifier = TokenVerifier::builder(keys())
        .revocations(revocations.clone())
        .build();
    let layer = JwtAuthLayer::new(verifier).require(Require::scope("orders:read"));
    let addr = serve(routes().layer(layer)).await;
    let lacking = token_with(json!({ "scope": "openid" }));
    assert_eq!(get_bearer(addr, "/orders", &lacking).await.status, 403);
    let jti = peek_claims(&lacking)["jti"].as_str().unwrap().to_owned();
    revocations.revoke(&jti, now() + 600).await.unwrap();
    let reply = get_bearer(addr, "/orders", &lacking).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.json()["error"], "invalid_token");
}

/// A tonic service requiring a scope per method: the rule is a path rule on
/// `/grpc.health.v1.Health/Check`, and the refusal is `PERMISSION_DENIED` over HTTP/2.
mod grpc {
    use super::*;
    use tonic::Code;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    async fn serve_health(layer: JwtAuthLayer) -> HealthClient<tonic::transport::Channel> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
    }

    fn check(token: &str) -> tonic::Request<HealthCheckRequest> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    #[tokio::test]
    async fn a_grpc_method_rule_answers_permission_denied_without_the_scope() {
        let layer = JwtAuthLayer::new(TokenVerifier::new(keys())).require_route(
            Some(Method::POST),
            "/grpc.health.v1.Health/Check",
            Require::scope("health:read"),
        );
        let mut client = serve_health(layer).await;
        let lacking = token_with(json!({ "scope": "orders:read" }));
        let status = client.check(check(&lacking)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), DESCRIPTION);
        assert_eq!(status.metadata().get("cache-control").unwrap(), "no-store");

        let granted = token_with(json!({ "scope": "health:read" }));
        let served = client.check(check(&granted)).await.unwrap();
        assert_eq!(served.into_inner().status(), ServingStatus::Serving);
    }
}

/// What Rack's `MethodOverride` (Rails), Express's `method-override` and Symfony do before
/// routing: a `POST` naming another method in `X-HTTP-Method-Override` (or `X-HTTP-Method`,
/// `X-Method-Override`, also spelt with `_` as Rack reads headers) or in a `_method` query
/// parameter (after a `&`, or a `;` as PHP with `arg_separator.input = "&;"` splits) is
/// served as that method, upper-cased.
async fn honour_method_override(mut request: axum::extract::Request) -> axum::extract::Request {
    let header = request.headers().iter().find_map(|(name, value)| {
        let name = name.as_str().replace('_', "-");
        [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ]
        .contains(&name.as_str())
        .then(|| value.as_bytes().to_vec())
    });
    let parameter = request.uri().query().and_then(|query| {
        query
            .split(['&', ';'])
            .find_map(|pair| pair.strip_prefix("_method="))
            .map(|value| value.as_bytes().to_vec())
    });
    let named = header
        .or(parameter)
        .and_then(|value| Method::from_bytes(&value.to_ascii_uppercase()).ok());
    if let (Some(method), &Method::POST) = (named, request.method()) {
        *request.method_mut() = method;
    }
    request
}

/// `routes` behind an application that honours method overrides, behind `layer`.
async fn serve_honouring_overrides(routes: Router, layer: JwtAuthLayer) -> SocketAddr {
    let app = Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(axum::middleware::map_request(honour_method_override))
            .service(routes),
    );
    serve(app.layer(layer)).await
}

/// A method override cannot carry a request past a rule for the method it names: the
/// application behind acts on that method, so the gate judges the request as it too.
#[tokio::test]
async fn a_method_override_meets_the_route_rules_of_the_method_it_names() {
    let routes = Router::new().route(
        "/orders",
        routing::post(|| async { "ordered" }).delete(|| async { "every order deleted" }),
    );
    // A route rule alone: no path rule names a method.
    let layer = JwtAuthLayer::new(verifier_with_roles("roles")).require_route(
        Some(Method::DELETE),
        "/orders",
        Require::role("admin"),
    );
    let addr = serve_honouring_overrides(routes, layer).await;
    let clerk = format!("Bearer {}", token_with(json!({ "roles": ["clerk"] })));
    let admin = format!("Bearer {}", token_with(json!({ "roles": ["admin"] })));
    let post = |path: &'static str, headers: Vec<(&'static str, &'static str)>, bearer: String| async move {
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend(headers);
        call(addr, Method::POST, path, &all, "").await
    };

    // The application does honour it: an admin's override deletes.
    let deleted = post(
        "/orders",
        vec![("x-http-method-override", "DELETE")],
        admin.clone(),
    )
    .await;
    assert_eq!(
        (deleted.status.as_u16(), deleted.text.as_str()),
        (200, "every order deleted")
    );

    for (path, headers) in [
        ("/orders", vec![("x-http-method-override", "DELETE")]),
        ("/orders", vec![("x-http-method-override", " delete ")]),
        ("/orders", vec![("x-http-method", "DELETE")]),
        ("/orders", vec![("x-method-override", "Delete")]),
        // As Rack reads headers, `_` is `-`.
        ("/orders", vec![("x_http_method_override", "DELETE")]),
        // Every value counts, not only the first.
        (
            "/orders",
            vec![
                ("x-http-method-override", "POST"),
                ("x-http-method-override", "DELETE"),
            ],
        ),
        // No method at all: every route rule applies.
        ("/orders", vec![("x-http-method-override", "DELETE, GET")]),
        // Express's `method-override('_method')`, Symfony and Laravel read the query.
        ("/orders?_method=DELETE", vec![]),
        ("/orders?x=1&_method=delete", vec![]),
        ("/orders?x=1;_method=DELETE", vec![]),
        ("/orders?%5Fmethod=DELETE", vec![]),
        // PHP (Symfony, Laravel) skips a key's leading spaces and reads it up to a NUL.
        ("/orders?+_method=DELETE", vec![]),
        ("/orders?%20_method=DELETE", vec![]),
        ("/orders?_method%00x=DELETE", vec![]),
        // lighttpd's CGI reads `.` in a header name as `_`.
        ("/orders", vec![("x.http.method.override", "DELETE")]),
        // Naming many methods is judged as naming none: every route rule applies.
        (
            "/orders?_method=A&_method=B&_method=C&_method=D&_method=E",
            vec![],
        ),
    ] {
        let reply = post(path, headers.clone(), clerk.clone()).await;
        assert_eq!(reply.status, 403, "{path} {headers:?}: {reply:?}");
    }
    // Without an override, or naming the request's own method, a clerk may order.
    for (path, headers) in [
        ("/orders", vec![]),
        ("/orders", vec![("x-http-method-override", "POST")]),
        ("/orders?method=DELETE", vec![]),
    ] {
        let reply = post(path, headers.clone(), clerk.clone()).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text.as_str()),
            (200, "ordered"),
            "{path} {headers:?}"
        );
    }
}

/// An open or optional `POST` does not open the `DELETE` it names.
#[tokio::test]
async fn a_method_override_meets_the_path_rules_of_the_method_it_names() {
    let routes = Router::new()
        .route(
            "/feedback",
            routing::post(|| async { "thanks" }).delete(|| async { "feedback deleted" }),
        )
        .route(
            "/notes",
            routing::post(|| async { "noted" }).delete(|| async { "notes deleted" }),
        );
    // Path rules alone name a method here, and a route rule makes an optional path need a
    // token for one method.
    let layer = JwtAuthLayer::new(verifier_with_roles("roles"))
        .method_path(Method::POST, "/feedback", jwt_gate::Access::Open)
        .optional_path("/notes");
    let addr = serve_honouring_overrides(routes.clone(), layer).await;
    let anonymous = call(
        addr,
        Method::POST,
        "/feedback",
        &[("x-http-method-override", "DELETE")],
        "",
    )
    .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let thanks = call(addr, Method::POST, "/feedback", &[], "").await;
    assert_eq!(
        (thanks.status.as_u16(), thanks.text.as_str()),
        (200, "thanks")
    );

    let layer = JwtAuthLayer::new(verifier_with_roles("roles"))
        .optional_path("/notes")
        .require_route(Some(Method::DELETE), "/notes", Require::role("admin"));
    let addr = serve_honouring_overrides(routes, layer).await;
    let anonymous = call(addr, Method::POST, "/notes?_method=DELETE", &[], "").await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let noted = call(addr, Method::POST, "/notes", &[], "").await;
    assert_eq!((noted.status.as_u16(), noted.text.as_str()), (200, "noted"));
}

/// Forward-auth judges the client's request with the client's headers, override included:
/// nginx's `auth_request` passes them all to the check.
#[tokio::test]
async fn forward_auth_judges_a_method_override_as_the_gate_does() {
    use jwt_gate::gateway::{ClaimMap, ForwardAuth};

    let verifier = TokenVerifier::builder(keys())
        .claims::<ClaimMap>()
        .roles_claim(ClaimPath::new("roles").unwrap())
        .build();
    let layer = JwtAuthLayer::new(verifier).require_route(
        Some(Method::DELETE),
        "/orders",
        Require::<ClaimMap>::default().and_role("admin"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ForwardAuth::builder(layer).build().serve(listener));
    let clerk = format!("Bearer {}", token_with(json!({ "roles": ["clerk"] })));
    let original = [
        ("authorization", clerk.as_str()),
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/orders"),
    ];
    let plain = call(addr, Method::GET, "/check", &original, "").await;
    assert_eq!(plain.status, 200, "{plain:?}");
    let mut overridden = original.to_vec();
    overridden.push(("x-http-method-override", "DELETE"));
    let refused = call(addr, Method::GET, "/check", &overridden, "").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let mut in_the_query = original.to_vec();
    in_the_query[2] = ("x-forwarded-uri", "/orders?_method=DELETE");
    let refused = call(addr, Method::GET, "/check", &in_the_query, "").await;
    assert_eq!(refused.status, 403, "{refused:?}");
}
