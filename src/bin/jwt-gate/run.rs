//! Each command, wired from the configuration to the library.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jwt_gate::gateway::{self, ClaimMap, ForwardAuth, Gateway};
use jwt_gate::revocation::RedisRevocations;
use jwt_gate::service::AuthService;
use jwt_gate::store::{PostgresUserStore, SqliteUserStore, UserStore};
use jwt_gate::{Claims, ClientAddr, JwtAuthLayer, Keys, TokenVerifier, Validation};

use crate::config::{self, Access, Config, Overrides, Source};
use crate::{keys, protocols, Cli, Command, KeysCommand};

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
    let keys = keys::load(&config, &source, env).map_err(|error| error.to_string())?;
    match cli.command {
        Command::CheckConfig { .. } => {
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
    if let Some(leeway) = policy.leeway_seconds {
        validation.leeway = Duration::from_secs(leeway);
    }
    if let Some(lifetime) = policy.max_lifetime_seconds {
        validation.max_lifetime = Some(Duration::from_secs(lifetime));
    }
    validation
}

/// The auth service's verifier and the gate's, sharing one revocation list (memory or
/// Redis): what `/auth/logout` revokes, the gate refuses.
async fn verifiers(
    config: &Config,
    keys: Keys,
) -> Result<(TokenVerifier, TokenVerifier<ClaimMap>), String> {
    let builder = TokenVerifier::builder(keys.clone()).validation(validation(config));
    let auth = match &config.revocation.redis_url {
        Some(url) => {
            let store = RedisRevocations::connect(url.get_ref())
                .await
                // The URL may hold a password: never quoted.
                .map_err(|error| format!("revocation.redis_url: {error}"))?;
            builder.revocations(store).build()
        }
        None => builder.build(),
    };
    let gate = TokenVerifier::builder(keys)
        .validation(validation(config))
        .claims::<ClaimMap>()
        .revocations(auth.revocations().clone())
        .build();
    Ok((auth, gate))
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
    let mut layer = JwtAuthLayer::new(verifier);
    if auth {
        layer = layer.open_prefix(&auth_prefix(config));
    }
    for route in &config.routes {
        let path = route.path.get_ref();
        let access = match route.access {
            Access::Open => jwt_gate::Access::Open,
            Access::Optional => jwt_gate::Access::Optional,
            Access::Required => jwt_gate::Access::Protected,
        };
        let Some(methods) = &route.methods else {
            layer = match (path.strip_suffix("/*"), route.access) {
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
            // Checked at load: upper-case letters, a valid method token.
            let method = http::Method::from_bytes(method.as_bytes()).expect("checked at load");
            layer = match path.strip_suffix("/*") {
                Some(prefix) => layer.method_prefix(method, prefix, access),
                None => layer.method_path(method, path, access),
            };
        }
    }
    layer
}

async fn listen(config: &Config) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let addr = config
        .listen
        .unwrap_or_else(|| config::DEFAULT_LISTEN.parse().expect("a valid default"));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    Ok((listener, local))
}

fn seconds(value: Option<u64>) -> Option<Duration> {
    value.map(Duration::from_secs)
}

async fn serve(command: Command, config: Config, source: Source, keys: Keys) -> Result<(), String> {
    let (auth_verifier, gate_verifier) = verifiers(&config, keys).await?;
    let users = users(&config, &source).await?;
    let prefix = auth_prefix(&config);
    let auth = users.map(|users| {
        AuthService::builder(auth_verifier.clone(), users)
            .prefix(&prefix)
            .hash_at_low_priority()
            .build()
    });
    let limits = &config.limits;
    let forwarded = config
        .forward_claims
        .iter()
        .map(config::forwarded_claim)
        .collect::<Result<Vec<_>, _>>()?;
    let layer = layer(&config, gate_verifier, auth.is_some());
    let (listener, local) = listen(&config).await?;
    let mounted = if auth.is_some() {
        format!("; auth service at {prefix}")
    } else {
        String::new()
    };
    match command {
        Command::Proxy { .. } => {
            let upstream = config.upstream.as_ref().map(|u| u.get_ref().clone()).ok_or(
                "proxy needs an upstream: `upstream` in the configuration, JWT_GATE_UPSTREAM or --upstream",
            )?;
            let mut gateway = Gateway::builder(&upstream);
            if let Some(timeout) = seconds(limits.upstream_timeout_seconds) {
                gateway = gateway.timeout(timeout);
            }
            if let Some(timeout) = seconds(limits.header_read_timeout_seconds) {
                gateway = gateway.header_read_timeout(timeout);
            }
            if let Some(connections) = limits.max_connections {
                gateway = gateway.max_connections(connections);
            }
            for claim in forwarded {
                gateway = gateway.forward(claim);
            }
            if let Some(auth) = auth {
                gateway = gateway.mount(&prefix, auth);
            }
            gateway = protocols::apply(gateway, &config, &source)?;
            let gateway = gateway.build().map_err(|error| error.to_string())?;
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            println!(
                "jwt-gate proxy listening on {scheme}://{local}, forwarding to {upstream}{mounted}"
            );
            gateway::serve(listener, layer, gateway)
                .await
                .map_err(|error| error.to_string())
        }
        Command::ForwardAuth => {
            protocols::refuse_tls(&config, &source, "forward-auth")?;
            let mut forward_auth = ForwardAuth::builder(layer);
            if let Some(timeout) = seconds(limits.header_read_timeout_seconds) {
                forward_auth = forward_auth.header_read_timeout(timeout);
            }
            if let Some(connections) = limits.max_connections {
                forward_auth = forward_auth.max_connections(connections);
            }
            for claim in forwarded {
                forward_auth = forward_auth.forward(claim);
            }
            if let Some(auth) = auth {
                forward_auth = forward_auth.mount(&prefix, auth);
            }
            println!("jwt-gate forward-auth listening on http://{local}{mounted}");
            forward_auth
                .build()
                .serve(listener)
                .await
                .map_err(|error| error.to_string())
        }
        Command::Serve => {
            protocols::refuse_tls(&config, &source, "serve")?;
            let auth = auth.ok_or(
                "serve needs users: [users] sqlite or postgres_url in the configuration, JWT_GATE_SQLITE or JWT_GATE_POSTGRES_URL",
            )?;
            println!("jwt-gate auth service listening on http://{local}{mounted}");
            serve_auth(listener, auth, &config).await
        }
        _ => unreachable!("answered without a runtime"),
    }
}

/// The auth service alone, HTTP/1.1, with the same bounds on connections and request heads
/// as the proxy. Each request carries its client's address, which logins are throttled by.
async fn serve_auth(
    listener: tokio::net::TcpListener,
    auth: AuthService,
    config: &Config,
) -> Result<(), String> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service as _;
    let header_timeout =
        seconds(config.limits.header_read_timeout_seconds).unwrap_or(Duration::from_secs(10));
    let connections = Arc::new(tokio::sync::Semaphore::new(
        config.limits.max_connections.unwrap_or(1024),
    ));
    loop {
        let permit = connections
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| error.to_string())?;
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let auth = auth.clone();
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientAddr(peer));
                let mut auth = auth.clone();
                async move { auth.call(request).await }
            });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}
