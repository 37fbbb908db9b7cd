//! The demo server: the whole auth API, a protected route and a health check, with users in
//! an SQLite file, or, to run several behind a load balancer, in PostgreSQL with logouts
//! shared through Redis.
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
//! | `JWT_GATE_ISSUER` | `jwt-gate-demo` | the `iss` tokens are issued with, and required to carry |
//! | `JWT_GATE_AUDIENCE` | `jwt-gate-demo` | the `aud` tokens are issued for, and required to name |
//! | `DATABASE_URL` | unset | users in this PostgreSQL database instead of `JWT_GATE_DB` |
//! | `JWT_GATE_PG_SCHEMA` | the connection's | the PostgreSQL schema the tables live in |
//! | `REDIS_URL` | unset | logouts and login/registration throttling shared through this Redis instead of kept in memory |
//! | `JWT_GATE_REDIS_PREFIX` | `jwt-gate:` | the Redis key prefix |
//! | `JWT_GATE_METRICS_ADDR` | unset: no metrics | serve Prometheus metrics at `http://<this>/metrics`, a listener of its own (e.g. `127.0.0.1:9300`) |
//! | `JWT_GATE_FREE_REGISTRATIONS` | 10 | registrations from one address before they are delayed (`429`) |
//! | `JWT_GATE_FREE_LOGIN_FAILURES` | 20 | failed logins from one address (5 per username) before they are delayed (`429`) |
//! | `JWT_GATE_CONNECTIONS_PER_ADDRESS` | 50 | new connections one address may open per second (bursts of twice that); those over it wait, unread, for their turn; 0 for no limit |
//!
//! Without `JWT_GATE_SECRET`, a random secret is generated on first start and kept beside the
//! database in `<db>.secret` (mode 0600), so restarts keep sessions valid. With `DATABASE_URL`
//! or `REDIS_URL` set, `JWT_GATE_SECRET` is required: every server of a fleet must sign and
//! verify with the same key. Servers given the same secret, `DATABASE_URL` (and schema) and
//! `REDIS_URL` (and prefix) share users, a logout at one is refused at all, and failed logins
//! at one count at all.
//!
//! Metrics are never served on `JWT_GATE_ADDR`: only on the address `JWT_GATE_METRICS_ADDR`
//! names, which should be one that only the scraper reaches (see `docs/operating.md`).
//!
//! Tokens carry `iss` and `aud` and are refused without the expected ones, so a token that
//! another service minted with the same secret does not pass here.
//!
//! Routes: `POST /auth/register`, `POST /auth/token`, `POST /auth/logout`,
//! `POST /auth/logout-all`, `GET /auth-test` (bearer token required: `{username, email}`),
//! `GET /health`, `GET /.well-known/jwks.json` (the public keys; an empty set with the
//! demo's HS256 secret, which is never published), `GET /openapi.json` (the OpenAPI 3.1
//! document of the auth routes) and `GET /docs` (a page to read and try them, which works
//! offline).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use jwt_gate::gateway::{AdmittingListener, ConnectionAdmission};
use jwt_gate::metrics::Prometheus;
use jwt_gate::revocation::RedisRevocations;
use jwt_gate::service::{
    AuthService, JwksService, LoginThrottle, OpenApiService, RedisThrottle, RegistrationThrottle,
    SwaggerUi, JWKS_PATH,
};
use jwt_gate::store::{PostgresUserStore, SqliteUserStore, UserStore};
use jwt_gate::{AuthError, Claims, JwtAuthLayer, Keys, TokenVerifier, Validation};

#[path = "support/client_addr.rs"]
mod client_addr;
#[path = "support/secret.rs"]
mod secret;

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_DB: &str = "./jwt-gate.db";
const DEFAULT_ISSUER: &str = "jwt-gate-demo";
const DEFAULT_AUDIENCE: &str = "jwt-gate-demo";

/// `GET /auth-test`: who the bearer token speaks for, as the user store knows them.
async fn current_user(State(users): State<Arc<dyn UserStore>>, claims: Claims) -> Response {
    match users.find_user(&claims.sub).await {
        Ok(Some(user)) => Json(serde_json::json!({
            "username": user.username,
            "email": user.email,
        }))
        .into_response(),
        // A genuine token for a user who is gone proves nothing about the caller: the same
        // answer as any other bad token, as the FastAPI app gives.
        Ok(None) => AuthError::UnknownSubject.into_response(),
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

/// A variable that may be unset, but not set to something unreadable.
fn optional_var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// A variable that may be unset (then `default`), but not set to nothing.
fn var_or(name: &str, default: &str) -> Result<String, String> {
    match optional_var(name)? {
        None => Ok(default.to_owned()),
        Some(value) if value.trim().is_empty() => Err(format!("{name} is set but empty")),
        Some(value) => Ok(value),
    }
}

/// The `iss` and `aud` every token is issued with and must carry.
fn validation() -> Result<Validation, String> {
    Ok(Validation::default()
        .issuer(var_or("JWT_GATE_ISSUER", DEFAULT_ISSUER)?)
        .audience(var_or("JWT_GATE_AUDIENCE", DEFAULT_AUDIENCE)?))
}

/// The user store, and how the startup line names it. Errors never quote the URL: it may
/// hold a password.
async fn users(db: &Path) -> Result<(Arc<dyn UserStore>, String), String> {
    let Some(url) = optional_var("DATABASE_URL")? else {
        let users = SqliteUserStore::open(db)
            .map_err(|error| format!("cannot open {}: {error}", db.display()))?;
        return Ok((Arc::new(users), format!("SQLite {}", db.display())));
    };
    let mut store = PostgresUserStore::connect(&url);
    let mut described = "PostgreSQL".to_owned();
    if let Some(schema) = optional_var("JWT_GATE_PG_SCHEMA")? {
        store = store.schema(&schema);
        described = format!("PostgreSQL schema {schema}");
    }
    let users = store
        .await
        .map_err(|error| format!("cannot use DATABASE_URL: {error}"))?;
    Ok((Arc::new(users), described))
}

/// The verifier, on Redis revocations when `REDIS_URL` is set, and how the startup line
/// names where revocations live.
async fn verifier(keys: Keys) -> Result<(TokenVerifier, &'static str), String> {
    let builder = TokenVerifier::builder(keys).validation(validation()?);
    let Some(url) = optional_var("REDIS_URL")? else {
        return Ok((builder.build(), "memory"));
    };
    let mut revocations = RedisRevocations::connect(&url);
    if let Some(prefix) = optional_var("JWT_GATE_REDIS_PREFIX")? {
        revocations = revocations.key_prefix(&prefix);
    }
    let revocations = revocations
        .await
        .map_err(|error| format!("cannot use REDIS_URL: {error}"))?;
    let verifier = builder.revocations(revocations).build();
    Ok((verifier, "Redis"))
}

/// A count that may be unset (then `default`), but not set to something else.
fn count_or(name: &str, default: u32) -> Result<u32, String> {
    match optional_var(name)? {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name} is not a whole number: {value:?}")),
    }
}

/// How many registrations and failed logins from one address pass before they are delayed.
fn throttles() -> Result<(LoginThrottle, RegistrationThrottle), String> {
    let mut login = LoginThrottle::default();
    login.free_failures_per_address = count_or(
        "JWT_GATE_FREE_LOGIN_FAILURES",
        login.free_failures_per_address,
    )?;
    let mut registration = RegistrationThrottle::default();
    registration.free_per_address =
        count_or("JWT_GATE_FREE_REGISTRATIONS", registration.free_per_address)?;
    Ok((login, registration))
}

/// The auth service, its throttling shared through Redis when `REDIS_URL` is set (failing
/// closed: while Redis is unreachable, logins and registrations answer 503).
async fn auth_service(
    verifier: &TokenVerifier,
    users: Arc<dyn UserStore>,
) -> Result<AuthService, String> {
    let (login, registration) = throttles()?;
    // Logins take the CPU time that serving leaves, not the other way round.
    let auth = AuthService::builder(verifier.clone(), users)
        .login_throttle(login)
        .registration_throttle(registration)
        .hash_at_low_priority();
    let Some(url) = optional_var("REDIS_URL")? else {
        return Ok(auth.build());
    };
    let mut throttle = RedisThrottle::connect(&url);
    if let Some(prefix) = optional_var("JWT_GATE_REDIS_PREFIX")? {
        throttle = throttle.key_prefix(&prefix);
    }
    let throttle = throttle
        .await
        .map_err(|error| format!("cannot use REDIS_URL: {error}"))?;
    Ok(auth.shared_throttle(throttle).build())
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

/// The metrics endpoint on its own listener, when `JWT_GATE_METRICS_ADDR` asks for one, and
/// how the startup line names it. Installed before anything records, so that every counter
/// registers with it.
async fn metrics() -> Result<String, String> {
    let Some(addr) = optional_var("JWT_GATE_METRICS_ADDR")? else {
        return Ok("off".to_owned());
    };
    let addr: SocketAddr = addr.parse().map_err(|error| {
        format!("JWT_GATE_METRICS_ADDR is not an address like 127.0.0.1:9300: {error}")
    })?;
    let prometheus = Prometheus::install().map_err(|error| error.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen on {addr} for metrics: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    tokio::spawn(prometheus.serve(listener));
    Ok(format!("http://{local}/metrics"))
}

async fn run() -> Result<(), String> {
    let addr: SocketAddr = std::env::var("JWT_GATE_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.to_owned())
        .parse()
        .map_err(|error| format!("JWT_GATE_ADDR is not an address like {DEFAULT_ADDR}: {error}"))?;
    let metrics_at = metrics().await?;
    let db = PathBuf::from(std::env::var_os("JWT_GATE_DB").unwrap_or_else(|| DEFAULT_DB.into()));

    let fleet =
        std::env::var_os("DATABASE_URL").is_some() || std::env::var_os("REDIS_URL").is_some();
    // A secret kept beside one server's database cannot be shared by a fleet.
    if fleet && std::env::var_os("JWT_GATE_SECRET").is_none() {
        return Err(
            "with DATABASE_URL or REDIS_URL set, JWT_GATE_SECRET must be set too (the same on every server)"
                .to_owned(),
        );
    }
    let keys = Keys::hs256(secret::secret(&db)?).map_err(|error| error.to_string())?;
    let (users, users_in) = users(&db).await?;
    let (verifier, revocations_in) = verifier(keys).await?;
    let auth = auth_service(&verifier, users.clone()).await?;

    // The document of the auth routes and the public keys, and the page to read it on; all
    // public.
    let mut document = auth.openapi();
    document.merge(JwksService::openapi(JWKS_PATH));
    let docs = SwaggerUi::new("/docs", "/openapi.json");
    let app = Router::new()
        .route_service(JWKS_PATH, JwksService::new(verifier.keys().clone()))
        .route_service("/openapi.json", OpenApiService::new(&document))
        .nest_service("/docs", docs)
        .route("/auth-test", get(current_user))
        .route("/health", get(health))
        .with_state(users.clone())
        .nest_service("/auth", auth)
        .layer(
            JwtAuthLayer::new(verifier)
                .open_prefix("/auth")
                .open_path("/health")
                .open_path(JWKS_PATH)
                .open_path("/openapi.json")
                .open_prefix("/docs"),
        )
        // Logins are throttled per client address.
        .layer(axum::middleware::from_fn(client_addr::insert));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    println!(
        "jwt-gate demo listening on http://{local} (users: {users_in}; revocations: {revocations_in}; metrics: {metrics_at})"
    );
    // Wrapped in `tap_io`, which axum gives `ConnectInfo<SocketAddr>` for any listener.
    let listener =
        Admitted(AdmittingListener::new(listener, connection_admission()?)).tap_io(|_| ());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|error| error.to_string())
}

/// New connections per second each client address may open (`JWT_GATE_CONNECTIONS_PER_ADDRESS`,
/// bursts of twice that; 0 for no limit); those over the rate wait, unread, for their turn.
fn connection_admission() -> Result<Option<ConnectionAdmission>, String> {
    // An auth service's clients open few connections; each one a flooder is allowed costs
    // the server a fraction of a millisecond that some other request waits behind.
    let per_second = count_or("JWT_GATE_CONNECTIONS_PER_ADDRESS", 50)?;
    Ok((per_second > 0).then(|| {
        ConnectionAdmission::builder()
            .per_second(per_second)
            .build()
    }))
}

/// The listener as axum serves it: each connection within the admission policy.
struct Admitted(AdmittingListener);

impl axum::serve::Listener for Admitted {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    // Out of file descriptors, say: it passes, and a busy loop would not help.
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
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
