//! The demo server: the whole auth API, a protected route and a health check, with users in
//! an SQLite file.
//!
//! ```text
//! cargo run --example server
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `JWT_GATE_ADDR` | `127.0.0.1:3000` | where to listen |
//! | `JWT_GATE_DB` | `./jwt-gate.db` | the SQLite file users live in |
//! | `JWT_GATE_SECRET` | generated | the HS256 key: the variable's UTF-8 bytes as they are, at least 32 |
//!
//! Without `JWT_GATE_SECRET`, a random secret is generated on first start and kept beside the
//! database in `<db>.secret` (mode 0600), so restarts keep sessions valid.
//!
//! Routes: `POST /auth/register`, `POST /auth/token`, `POST /auth/logout`,
//! `POST /auth/logout-all`, `GET /auth-test` (bearer token required: `{username, email}`),
//! `GET /health`, `GET /.well-known/jwks.json` (the public keys; an empty set with the
//! demo's HS256 secret, which is never published).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jwt_gate::service::{AuthService, JwksService, JWKS_PATH};
use jwt_gate::store::{SqliteUserStore, UserStore};
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};

#[path = "support/secret.rs"]
mod secret;

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_DB: &str = "./jwt-gate.db";

/// `GET /auth-test`: who the bearer token speaks for, as the user store knows them.
async fn current_user(State(users): State<SqliteUserStore>, claims: Claims) -> Response {
    match users.find_user(&claims.sub).await {
        Ok(Some(user)) => Json(serde_json::json!({
            "username": user.username,
            "email": user.email,
        }))
        .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "not_found" })),
        )
            .into_response(),
        Err(error) => {
            eprintln!("user store failed: {error}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "error": "temporarily_unavailable" })),
            )
                .into_response()
        }
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run() -> Result<(), String> {
    let addr: SocketAddr = std::env::var("JWT_GATE_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.to_owned())
        .parse()
        .map_err(|error| format!("JWT_GATE_ADDR is not an address like {DEFAULT_ADDR}: {error}"))?;
    let db = PathBuf::from(std::env::var_os("JWT_GATE_DB").unwrap_or_else(|| DEFAULT_DB.into()));

    let keys = Keys::hs256(secret::secret(&db)?).map_err(|error| error.to_string())?;
    let users = SqliteUserStore::open(&db)
        .map_err(|error| format!("cannot open {}: {error}", db.display()))?;
    let verifier = TokenVerifier::new(keys);

    let app = Router::new()
        .route_service(JWKS_PATH, JwksService::new(verifier.keys().clone()))
        .route("/auth-test", get(current_user))
        .route("/health", get(health))
        .with_state(users.clone())
        .nest_service("/auth", AuthService::new(verifier.clone(), users))
        .layer(
            JwtAuthLayer::new(verifier)
                .open_prefix("/auth")
                .open_path("/health")
                .open_path(JWKS_PATH),
        );

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    println!("jwt-gate demo listening on http://{local}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|error| error.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
