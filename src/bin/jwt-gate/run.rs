//! Each command, wired from the configuration to the library.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jwt_gate::gateway::{ClaimMap, ForwardAuth, ForwardedClaim, Gateway};
use jwt_gate::revocation::RedisRevocations;
use jwt_gate::service::{AuthService, RedisThrottle};
use jwt_gate::store::{PostgresUserStore, SqliteUserStore, UserStore};
use jwt_gate::{
    ClaimPath, Claims, JwtAuthLayer, Keys, RemoteJwks, Require, TokenVerifier, Validation,
};
use tower_layer::Layer as _;

use crate::config::{self, Access, Config, IssuerConfig, Overrides, Preset, Source};
use crate::server::{self, CaptureSub, Health, Kind, Ops};
use crate::{keys, protocols, workers, Cli, Command, KeysCommand};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

pub(crate) fn run(cli: Cli) -> Result<(), String> {
    let mut flags = Overrides {
        listen: cli.listen,
        upstream: None,
    };
    let path = match &cli.command {
        Command::Keys {
            command: KeysCommand::Generate { ed25519 },
        } => {
            let key = if *ed25519 {
                keys::generate_ed25519_pem()?
            } else {
                keys::generate_secret()? + "\n"
            };
            print!("{key}");
            return Ok(());
        }
        Command::CheckConfig { file } => file.clone(),
        Command::Proxy { upstream } => {
            flags.upstream.clone_from(upstream);
            required_config(cli.config)?
        }
        _ => required_config(cli.config)?,
    };
    let (mut config, source) = config::load(&path).map_err(|error| error.to_string())?;
    config::apply_overrides(&mut config, env, &flags).map_err(|error| error.to_string())?;
    config::check_listeners(&config, &source).map_err(|error| error.to_string())?;
    crate::init_logs(config.log.format);
    let keys = keys::load(&config, &source, env).map_err(|error| error.to_string())?;
    match cli.command {
        Command::CheckConfig { .. } => {
            // The files `proxy` would read (TLS certificate and key, the upstream's CA) are
            // checked as `proxy` checks them, so a file that passes here starts there.
            let gateway = jwt_gate::gateway::Gateway::builder("http://127.0.0.1");
            crate::protocols::apply(gateway, &config, &source)?;
            print!("{}", config::effective(&config));
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Jwks,
        } => {
            let jwks = serde_json::to_string_pretty(&keys.jwks()).map_err(|e| e.to_string())?;
            println!("{jwks}");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Add { activate },
        } => {
            let kid = crate::rotate::add(&config, &source, activate)?;
            println!("{kid}");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Activate { kid },
        } => crate::rotate::activate(&config, &source, &kid),
        Command::Keys {
            command: KeysCommand::Retire { kid },
        } => crate::rotate::retire(&config, &source, &kid),
        Command::Token { sub, dev, ttl } => token(&config, &keys, &sub, dev, ttl),
        command => runtime()?.block_on(serve(command, config, source, keys)),
    }
}

fn required_config(config: Option<std::path::PathBuf>) -> Result<std::path::PathBuf, String> {
    config.ok_or_else(|| "--config FILE (or JWT_GATE_CONFIG) is required".to_owned())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))
}

/// A development token, refused unless the configuration or `--dev` allows it.
fn token(config: &Config, keys: &Keys, sub: &str, dev: bool, ttl: u64) -> Result<(), String> {
    if !config.allow_dev_tokens && !dev {
        return Err(
            "refusing to mint a token: set allow_dev_tokens = true in the configuration, or pass --dev"
                .into(),
        );
    }
    let now = jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock);
    let claims = Claims::new(sub, now, now + ttl)
        .with_issuer(config.validation.issuer())
        .with_audience(config.validation.audience());
    let token = keys.sign(&claims).map_err(|error| error.to_string())?;
    println!("{token}");
    Ok(())
}

fn validation(config: &Config) -> Validation {
    let policy = &config.validation;
    let mut validation = Validation::default()
        .issuer(policy.issuer())
        .audience(policy.audience());
    if let Some(leeway) = &policy.leeway_seconds {
        validation.leeway = Duration::from_secs(*leeway.get_ref());
    }
    if let Some(lifetime) = policy.max_lifetime_seconds {
        validation.max_lifetime = Some(Duration::from_secs(lifetime));
    }
    validation
}

/// The policy a remote issuer's tokens are held to.
fn issuer_validation(issuer: &IssuerConfig, config: &Config) -> Validation {
    let (name, audience) = (issuer.issuer.get_ref(), issuer.audience.get_ref());
    let mut validation = match issuer.preset {
        Preset::ThirdParty => Validation::third_party(name, audience),
        Preset::Rfc9068 => Validation::rfc9068(name, audience),
    };
    if let Some(algorithm) = issuer.algorithm {
        validation.algorithms = Some(vec![algorithm]);
    }
    if let Some(lifetime) = config.validation.max_lifetime_seconds {
        validation.max_lifetime = Some(Duration::from_secs(lifetime));
    }
    validation
}

/// Each remote issuer's key source, started: discovery (or the JWKS URL) fetched once, then
/// followed. Kept alive as long as the server runs.
async fn remote_issuers(
    config: &Config,
    source: &Source,
) -> Result<Vec<(IssuerConfig, RemoteJwks)>, String> {
    let mut started = Vec::new();
    for issuer in &config.issuers {
        let name = issuer.issuer.get_ref();
        let mut builder = match &issuer.jwks_url {
            Some(url) => RemoteJwks::builder(url.get_ref()),
            None => RemoteJwks::discover(name),
        };
        if let Some(algorithm) = issuer.algorithm {
            builder = builder.algorithm(algorithm);
        }
        if issuer.allow_plain_http {
            builder = builder.allow_plain_http();
        }
        let jwks = builder.start().await.map_err(|error| {
            source
                .error_at(Some(issuer.issuer.span()), &error.to_string())
                .to_string()
        })?;
        started.push((issuer.clone(), jwks));
    }
    Ok(started)
}

/// The auth service's verifier and the gate's, sharing one revocation list (memory or
/// Redis): what `/auth/logout` revokes, the gate refuses. The gate also trusts the remote
/// issuers, each under its own policy; the auth service only the crate's own keys.
async fn verifiers(
    config: &Config,
    keys: Keys,
    issuers: &[(IssuerConfig, RemoteJwks)],
) -> Result<(TokenVerifier, TokenVerifier<ClaimMap>, Health), String> {
    let mut health = Health::default();
    // Checked at load. Both verifiers read roles at one path, so the auth service writes a
    // local user's roles where the gate looks for every issuer's.
    let roles = match &config.validation.roles_claim {
        Some(path) => Some(ClaimPath::new(path.get_ref()).map_err(|error| error.to_string())?),
        None => None,
    };
    let mut builder = TokenVerifier::builder(keys.clone()).validation(validation(config));
    if let Some(path) = &roles {
        builder = builder.roles_claim(path.clone());
    }
    let auth = match &config.revocation.redis_url {
        Some(url) => {
            let mut store = RedisRevocations::connect(url.get_ref());
            if let Some(prefix) = &config.revocation.key_prefix {
                store = store.key_prefix(prefix.get_ref());
            }
            let store = store
                .await
                // The URL may hold a password: never quoted.
                .map_err(|error| format!("revocation.redis_url: {error}"))?;
            health.redis = Some(store.clone());
            builder.revocations(store).build()
        }
        None => builder.build(),
    };
    let mut gate = TokenVerifier::builder(keys)
        .validation(validation(config))
        .claims::<ClaimMap>()
        .revocations(auth.revocations().clone());
    if let Some(path) = roles {
        gate = gate.roles_claim(path);
    }
    for (issuer, jwks) in issuers {
        let name = issuer.issuer.get_ref();
        gate = gate.issuer_policy(name, jwks.keys().clone(), issuer_validation(issuer, config));
        health.issuers.push((name.clone(), jwks.keys().clone()));
    }
    Ok((auth, gate.build(), health))
}

/// With Redis, the auth service counts failed logins and registrations there, so a fleet
/// behind a load balancer throttles as one server would: counted per process, a guesser
/// would get each member's allowance. Fails closed while Redis is down (`503`), as logouts do.
async fn shared_throttle(config: &Config) -> Result<Option<RedisThrottle>, String> {
    let Some(url) = &config.revocation.redis_url else {
        return Ok(None);
    };
    let mut throttle = RedisThrottle::connect(url.get_ref());
    if let Some(prefix) = &config.revocation.key_prefix {
        throttle = throttle.key_prefix(prefix.get_ref());
    }
    let throttle = throttle
        .await
        // The URL may hold a password: never quoted.
        .map_err(|error| format!("revocation.redis_url: {error}"))?;
    Ok(Some(throttle))
}

async fn users(config: &Config, source: &Source) -> Result<Option<Arc<dyn UserStore>>, String> {
    let Some(users) = &config.users else {
        return Ok(None);
    };
    if let Some(file) = &users.sqlite {
        let file = source.path.parent().unwrap_or(Path::new(".")).join(file);
        let store = SqliteUserStore::open(&file)
            .map_err(|error| format!("users.sqlite: cannot open {}: {error}", file.display()))?;
        return Ok(Some(Arc::new(store)));
    }
    let url = users.postgres_url.as_ref().map(|url| url.get_ref().clone());
    let url = url.ok_or("users: no store configured")?;
    let store = PostgresUserStore::connect(&url)
        .await
        .map_err(|error| format!("users.postgres_url: {error}"))?;
    Ok(Some(Arc::new(store)))
}

fn auth_prefix(config: &Config) -> String {
    config
        .auth
        .prefix
        .as_ref()
        .map_or(config::DEFAULT_AUTH_PREFIX, |prefix| prefix.get_ref())
        .trim_end_matches('/')
        .to_owned()
}

/// The gate: the routes, and the auth service's prefix open when it is served.
fn layer(config: &Config, verifier: TokenVerifier<ClaimMap>, auth: bool) -> JwtAuthLayer<ClaimMap> {
    let mut layer = JwtAuthLayer::new(verifier)
        .token_sources(config.token.sources())
        .pass_cors_preflight(config.token.cors_preflight);
    if auth {
        layer = layer.open_prefix(&auth_prefix(config));
    }
    for route in &config.routes {
        let path = route.path.get_ref();
        if route.requires() {
            let mut require = Require::<ClaimMap>::default();
            for scope in route.scopes.iter().flat_map(|scopes| scopes.get_ref()) {
                require = require.and_scope(scope);
            }
            for role in route.roles.iter().flat_map(|roles| roles.get_ref()) {
                require = require.and_role(role);
            }
            // Checked at load: a registered method, a valid token.
            let methods: Vec<Option<http::Method>> = match &route.methods {
                Some(methods) => methods
                    .get_ref()
                    .iter()
                    .map(|m| Some(http::Method::from_bytes(m.as_bytes()).expect("checked")))
                    .collect(),
                None => vec![None],
            };
            for method in methods {
                layer = match path.strip_suffix("/*") {
                    Some(prefix) => layer.require_prefix(method, prefix, require.clone()),
                    None => layer.require_route(method, path, require.clone()),
                };
            }
        }
        // A route with only a timeout leaves access to the other rules.
        let Some(route_access) = route.access() else {
            continue;
        };
        let access = match route_access {
            Access::Open => jwt_gate::Access::Open,
            Access::Optional => jwt_gate::Access::Optional,
            Access::Required => jwt_gate::Access::Protected,
        };
        let Some(methods) = &route.methods else {
            layer = match (path.strip_suffix("/*"), route_access) {
                (Some(prefix), Access::Open) => layer.open_prefix(prefix),
                (Some(prefix), Access::Optional) => layer.optional_prefix(prefix),
                (Some(prefix), Access::Required) => layer.protect_prefix(prefix),
                (None, Access::Open) => layer.open_path(path),
                (None, Access::Optional) => layer.optional_path(path),
                (None, Access::Required) => layer.protect_path(path),
            };
            continue;
        };
        for method in methods.get_ref() {
            // Checked at load: a registered method, a valid token.
            let method = http::Method::from_bytes(method.as_bytes()).expect("checked at load");
            layer = match path.strip_suffix("/*") {
                Some(prefix) => layer.method_prefix(method, prefix, access),
                None => layer.method_path(method, path, access),
            };
        }
    }
    layer
}

/// The listeners of `count` workers on the configured address, and that address.
fn listen(
    config: &Config,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), String> {
    let addr = config.listen_addr();
    workers::listeners(addr, count)
}

fn seconds(value: Option<u64>) -> Option<Duration> {
    value.map(Duration::from_secs)
}

async fn serve(command: Command, config: Config, source: Source, keys: Keys) -> Result<(), String> {
    // First, so that the verifiers built below register their counters with it.
    let metrics = match config.metrics.listen {
        Some(addr) => {
            let prometheus = jwt_gate::metrics::Prometheus::install()
                .map_err(|error| format!("metrics: {error}"))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| format!("metrics.listen: cannot listen on {addr}: {error}"))?;
            let local = listener.local_addr().map_err(|error| error.to_string())?;
            tokio::spawn(async move {
                if let Err(error) = prometheus.serve(listener).await {
                    tracing::error!(%error, "the metrics listener failed");
                }
            });
            format!("; metrics at http://{local}/metrics")
        }
        None => String::new(),
    };
    // Kept until the server ends: dropping a source stops following its issuer.
    let issuers = remote_issuers(&config, &source).await?;
    let (auth_verifier, gate_verifier, health) = verifiers(&config, keys, &issuers).await?;
    let users = users(&config, &source).await?;
    let prefix = auth_prefix(&config);
    // Checked with the configuration: every entry is an address.
    let trusted_proxies = config.trusted_proxies().unwrap_or_default();
    let auth = match users {
        Some(users) => {
            let mut auth = AuthService::builder(auth_verifier.clone(), users)
                .prefix(&prefix)
                .hash_at_low_priority()
                // Logout reads the token where the gate does: a browser holding it only as a
                // cookie can log out.
                .token_sources(config.token.sources())
                .trusted_proxies(trusted_proxies.iter().copied());
            if let Some(throttle) = shared_throttle(&config).await? {
                auth = auth.shared_throttle(throttle);
            }
            Some(auth.build())
        }
        None => None,
    };
    let limits = &config.limits;
    let bounds = server::Limits {
        header_read_timeout: seconds(limits.header_read_timeout_seconds)
            .unwrap_or(Duration::from_secs(10)),
        max_connections: limits
            .max_connections
            .unwrap_or(config::DEFAULT_MAX_CONNECTIONS),
        drain: Duration::from_secs(limits.drain_timeout_seconds.unwrap_or(20)),
        admission: limits.admission(1),
    };
    let mut forwarded = config
        .forward_claims
        .iter()
        .map(config::forwarded_claim)
        .collect::<Result<Vec<_>, _>>()?;
    // With other issuers, `sub` alone names no one: a local user may register the name a
    // provider's `sub` has, and two providers may use the same. The upstream is told which
    // issuer vouched, unasked, unless `iss` is already forwarded (perhaps under another name).
    let forwards_issuer = forwarded
        .iter()
        .any(|forward| matches!(forward.claim(), "iss" | "/iss"));
    if !config.issuers.is_empty() && !forwards_issuer {
        let issuer = ForwardedClaim::new("iss").map_err(|error| error.to_string())?;
        if let Some(taken) = forwarded
            .iter()
            // Chosen headers start with `x-auth-` as written (`with_header`), so no other
            // spelling of this one can be chosen.
            .find(|forward| forward.header_name() == issuer.header_name())
        {
            return Err(format!(
                "forward_claims: {} carries another claim, but with [[issuers]] the upstream \
                 must learn the issuer in {}: forward `iss` under a header of your choice \
                 ([[forward_claims]] claim = \"iss\", header = \"x-auth-issuer\")",
                taken.header_name(),
                issuer.header_name()
            ));
        }
        forwarded.push(issuer);
    }
    let layer = layer(&config, gate_verifier, auth.is_some());
    // The auth service alone is bound by password hashing, on threads of its own:
    // one listener serves it.
    let count = match command {
        Command::Proxy { .. } | Command::ForwardAuth => config.limits.workers(),
        _ => 1,
    };
    let (mut listeners, local) = listen(&config, count)?;
    let per_worker = server::Limits {
        max_connections: workers::share(bounds.max_connections, count),
        admission: config.limits.admission(count),
        ..bounds
    };
    let mounted = if auth.is_some() {
        format!("; auth service at {prefix}")
    } else {
        String::new()
    };
    let shutdown = server::shutdown_signal();
    match command {
        Command::Proxy { .. } => {
            let upstream = config.upstream.as_ref().map(|u| u.get_ref().clone()).ok_or(
                "proxy needs an upstream: `upstream` in the configuration, JWT_GATE_UPSTREAM or --upstream",
            )?;
            // Each route's own timeout is applied around the gateway; the gateway's must
            // not cut the longest of them short.
            let mut gateway = Gateway::builder(&upstream)
                .trusted_proxies(trusted_proxies.iter().copied())
                .timeout(server::longest_timeout(&config))
                .header_read_timeout(bounds.header_read_timeout)
                .max_connections(per_worker.max_connections);
            if let Some(admission) = per_worker.admission {
                gateway = gateway.connection_admission(admission);
            }
            for claim in forwarded {
                gateway = gateway.forward(claim);
            }
            if let Some(auth) = auth {
                gateway = gateway.mount(&prefix, auth);
            }
            let gateway = protocols::apply(gateway, &config, &source)?;
            // Built once per worker: each its own upstream pool, whose connections live
            // on that worker's runtime.
            let gateways = (0..count)
                .map(|_| gateway.clone().build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| error.to_string())?;
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            println!(
                "jwt-gate proxy listening on {scheme}://{local}, forwarding to {upstream}{mounted}{metrics}"
            );
            let ops = Ops::new((), &config, health, Kind::Proxy);
            let in_flight = ops.in_flight();
            let workers = listeners
                .into_iter()
                .zip(gateways)
                .map(|(listener, gateway)| {
                    let service = ops.around(layer.layer(CaptureSub(gateway.clone())));
                    // The gateway's own loop, for its protocols (HTTP/2, upgrades, TLS);
                    // the program's, once they all stop accepting, waits for the requests
                    // in flight.
                    let work = move |listener: tokio::net::TcpListener, stop: workers::Stop| async move {
                        let served =
                            jwt_gate::gateway::serve_until(listener, &gateway, service, stop);
                        if let Err(error) = served.await {
                            tracing::error!(%error, "a worker stopped serving");
                        }
                    };
                    (listener, work)
                })
                .collect();
            workers::run(workers, shutdown, server::drain(&in_flight, bounds.drain)).await?;
        }
        Command::ForwardAuth => {
            protocols::refuse_tls(&config, &source, "forward-auth")?;
            let mut forward_auth = ForwardAuth::builder(layer)
                .header_read_timeout(bounds.header_read_timeout)
                .max_connections(per_worker.max_connections);
            for claim in forwarded {
                forward_auth = forward_auth.forward(claim);
            }
            if let Some(auth) = auth {
                forward_auth = forward_auth.mount(&prefix, auth);
            }
            println!("jwt-gate forward-auth listening on http://{local}{mounted}{metrics}");
            let service = Ops::new(forward_auth.build(), &config, health, Kind::ForwardAuth);
            // Each worker drains its own connections once told to stop.
            let workers = listeners
                .into_iter()
                .map(|listener| {
                    let service = service.clone();
                    let work = move |listener: tokio::net::TcpListener, stop: workers::Stop| {
                        server::serve(listener, service, per_worker, stop)
                    };
                    (listener, work)
                })
                .collect();
            workers::run(workers, shutdown, async {}).await?;
        }
        Command::Serve => {
            protocols::refuse_tls(&config, &source, "serve")?;
            let auth = auth.ok_or(
                "serve needs users: [users] sqlite or postgres_url in the configuration, JWT_GATE_SQLITE or JWT_GATE_POSTGRES_URL",
            )?;
            println!("jwt-gate auth service listening on http://{local}{mounted}{metrics}");
            let service = Ops::new(auth, &config, health, Kind::Serve);
            let listener = listeners.pop().expect("one listener");
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|error| format!("cannot listen on {local}: {error}"))?;
            server::serve(listener, service, bounds, shutdown).await;
        }
        _ => unreachable!("answered without a runtime"),
    }
    drop(issuers);
    Ok(())
}
