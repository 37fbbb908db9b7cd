//! The drop-in gateway: JWT authentication in front of an HTTP service that has none.
//!
//! ```text
//! JWT_GATE_SECRET='a secret of at least 32 bytes....' \
//!   cargo run --example gateway -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080
//! cargo run --example gateway -- token alice   # prints a token signed with JWT_GATE_SECRET
//! ```
//!
//! The auth service is mounted at `/auth` and served by the gateway itself, never forwarded:
//! clients register and log in there (`POST /auth/register`, `POST /auth/token`,
//! `POST /auth/logout`, `POST /auth/logout-all`), with users kept in an SQLite file, and then
//! call the upstream with the token they got. Every other path needs a valid token, except
//! the open ones; the upstream learns who is calling from `x-auth-sub`.
//!
//! | option | environment | default |
//! | --- | --- | --- |
//! | `--upstream URL` | `JWT_GATE_UPSTREAM` | required |
//! | `--listen ADDR` | `JWT_GATE_LISTEN` | `127.0.0.1:8080` |
//! | `--timeout SECONDS` | `JWT_GATE_TIMEOUT` | `30` |
//! | `--open PATH` (repeatable; `/x/*` opens a prefix) | `JWT_GATE_OPEN` (comma-separated) | `/health` |
//! | `--forward-claim NAME` (repeatable) | `JWT_GATE_FORWARD_CLAIMS` (comma-separated) | none |
//! | `--db PATH` | `JWT_GATE_DB` (the SQLite file users live in) | `./jwt-gate.db` |
//! | | `JWT_GATE_SECRET` (the HS256 key, ≥ 32 bytes) | required |
//! | `--metrics ADDR` | `JWT_GATE_METRICS_ADDR` | off: Prometheus metrics at `http://ADDR/metrics`, a listener of its own |
//!
//! Command-line options win over the environment. `/auth` is always open to the gate (its
//! routes check their own credentials) and cannot be reached upstream through the gateway.

use std::path::PathBuf;
use std::time::Duration;

use jwt_gate::gateway::{self, ClaimMap, Gateway};
use jwt_gate::metrics::Prometheus;
use jwt_gate::service::AuthService;
use jwt_gate::store::{SqliteUserStore, UserStore};
use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};

#[path = "support/token.rs"]
mod token;

/// Where the auth service is mounted.
const AUTH_PREFIX: &str = "/auth";

/// The gateway's settings, from the command line and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub upstream: String,
    pub listen: String,
    pub timeout: Duration,
    pub open: Vec<String>,
    pub forward_claims: Vec<String>,
    pub db: PathBuf,
    /// Where `/metrics` is served, apart from `listen`; `None`: not at all.
    pub metrics: Option<String>,
}

/// Reads options from `args` (without the program name), falling back to `env`.
pub fn options(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Options, String> {
    let list = |value: Option<String>| -> Vec<String> {
        value
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut upstream = env("JWT_GATE_UPSTREAM");
    let mut listen = env("JWT_GATE_LISTEN");
    let mut timeout = env("JWT_GATE_TIMEOUT");
    let mut db = env("JWT_GATE_DB");
    let mut metrics = env("JWT_GATE_METRICS_ADDR");
    let mut open = list(env("JWT_GATE_OPEN"));
    let mut open_from_args = false;
    let mut forward_claims = list(env("JWT_GATE_FORWARD_CLAIMS"));
    let mut claims_from_args = false;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => upstream = Some(value()?),
            "--listen" => listen = Some(value()?),
            "--timeout" => timeout = Some(value()?),
            "--db" => db = Some(value()?),
            "--metrics" => metrics = Some(value()?),
            "--open" => {
                let path = value()?;
                if !open_from_args {
                    open.clear();
                    open_from_args = true;
                }
                open.push(path);
            }
            "--forward-claim" => {
                let name = value()?;
                if !claims_from_args {
                    forward_claims.clear();
                    claims_from_args = true;
                }
                forward_claims.push(name);
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let timeout = match timeout {
        Some(seconds) => Duration::from_secs_f64(
            seconds
                .parse::<f64>()
                .ok()
                .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
                .ok_or("the timeout must be a positive number of seconds")?,
        ),
        None => Duration::from_secs(30),
    };
    if open.is_empty() && !open_from_args {
        open.push("/health".to_owned());
    }
    Ok(Options {
        upstream: upstream.ok_or("--upstream (or JWT_GATE_UPSTREAM) is required")?,
        listen: listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
        timeout,
        open,
        forward_claims,
        db: PathBuf::from(db.unwrap_or_else(|| "./jwt-gate.db".to_owned())),
        metrics,
    })
}

/// The gate and the proxy behind it, as configured, with the auth service for `users`
/// mounted at `/auth`.
pub fn build(
    options: &Options,
    keys: Keys,
    users: impl UserStore,
) -> Result<(JwtAuthLayer<ClaimMap>, Gateway), String> {
    // One key set and one revocation list for both: what `/auth/logout` revokes, the gate
    // refuses.
    let auth_verifier = TokenVerifier::new(keys.clone());
    let verifier = TokenVerifier::builder(keys)
        .claims::<ClaimMap>()
        .revocations(auth_verifier.revocations().clone())
        .build();
    let mut layer = JwtAuthLayer::new(verifier).open_prefix(AUTH_PREFIX);
    for path in &options.open {
        layer = match path.strip_suffix("/*") {
            Some(prefix) => layer.open_prefix(prefix),
            None => layer.open_path(path),
        };
    }
    let mut gateway = Gateway::builder(&options.upstream)
        .timeout(options.timeout)
        .mount(
            AUTH_PREFIX,
            AuthService::builder(auth_verifier, users)
                .prefix(AUTH_PREFIX)
                .build(),
        );
    for claim in &options.forward_claims {
        gateway = gateway.forward_claim(claim);
    }
    let gateway = gateway.build().map_err(|error| error.to_string())?;
    Ok((layer, gateway))
}

fn keys_from_env() -> Result<Keys, String> {
    let secret = std::env::var("JWT_GATE_SECRET")
        .map_err(|_| "JWT_GATE_SECRET (the HS256 key, at least 32 bytes) is required")?;
    Keys::hs256(secret.as_bytes()).map_err(|error| error.to_string())
}

#[allow(dead_code)] // the tests use the functions above, not main
#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("gateway: {error}");
        std::process::exit(2);
    }
}

#[allow(dead_code)]
async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keys = keys_from_env()?;
    if let Some(printed) = token::print_if_asked(&keys, &args) {
        return printed;
    }
    let options = options(args, |name| std::env::var(name).ok())?;
    // Before the gate is built, so that its counters register with the recorder.
    if let Some(addr) = &options.metrics {
        let prometheus = Prometheus::install().map_err(|error| error.to_string())?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| format!("cannot listen on {addr} for metrics: {error}"))?;
        let local = listener.local_addr().map_err(|error| error.to_string())?;
        println!("jwt-gate gateway metrics on http://{local}/metrics");
        tokio::spawn(prometheus.serve(listener));
    }
    let users = SqliteUserStore::open(&options.db)
        .map_err(|error| format!("cannot open {}: {error}", options.db.display()))?;
    let (layer, gateway) = build(&options, keys, users)?;
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", options.listen))?;
    let addr = listener.local_addr().map_err(|error| error.to_string())?;
    println!(
        "jwt-gate gateway listening on http://{addr}, forwarding to {} (auth service at {AUTH_PREFIX}; open: {})",
        options.upstream,
        options.open.join(", ")
    );
    gateway::serve(listener, layer, gateway)
        .await
        .map_err(|error| error.to_string())
}
