//! The one configuration file, read strictly: unknown keys are refused, and every error names
//! the file, the line and the key. Environment variables (`JWT_GATE_*`) and flags override it.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use jwt_gate::gateway::{ArrayStyle, ForwardedClaim};
use jwt_gate::Algorithm;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole file. Every table and key is optional except what a command needs (`upstream`
/// for `proxy`); the defaults are in `docs/binary.md`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where `proxy`, `forward-auth` and `serve` listen.
    pub(crate) listen: Option<SocketAddr>,
    /// Where `proxy` forwards to: an `http://` or `https://` URL.
    pub(crate) upstream: Option<Spanned<String>>,
    /// The load balancers or proxies in front (addresses, exact): their `X-Forwarded-*`
    /// headers are kept by `proxy`, and their `X-Forwarded-For` names the client the auth
    /// service throttles. Behind one, without it, every client has the balancer's address.
    pub(crate) trusted_proxies: Option<Spanned<Vec<String>>>,
    /// How `proxy` speaks to the upstream: HTTP/2, a private CA.
    #[serde(default)]
    pub(crate) upstream_options: UpstreamOptions,
    /// TLS termination for `proxy`: a certificate and key from PEM files.
    pub(crate) tls: Option<TlsConfig>,
    /// Whether `jwt-gate token` may mint tokens with these keys without `--dev`.
    #[serde(default)]
    pub(crate) allow_dev_tokens: bool,
    #[serde(default)]
    pub(crate) keys: KeysConfig,
    #[serde(default)]
    pub(crate) validation: ValidationConfig,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    #[serde(default)]
    pub(crate) forward_claims: Vec<ForwardClaim>,
    /// Where `proxy` and `forward-auth` read tokens besides `Authorization: Bearer`.
    #[serde(default)]
    pub(crate) token: TokenConfig,
    #[serde(default)]
    pub(crate) revocation: RevocationConfig,
    pub(crate) users: Option<UsersConfig>,
    #[serde(default)]
    pub(crate) auth: AuthConfig,
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
    #[serde(default)]
    pub(crate) issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub(crate) health: HealthConfig,
    #[serde(default)]
    pub(crate) log: LogConfig,
    #[serde(default)]
    pub(crate) metrics: MetricsConfig,
}

impl Config {
    /// The trusted proxies' addresses, or why one is not an address.
    pub(crate) fn trusted_proxies(&self) -> Result<Vec<std::net::IpAddr>, (Range<usize>, String)> {
        let Some(proxies) = &self.trusted_proxies else {
            return Ok(Vec::new());
        };
        proxies
            .get_ref()
            .iter()
            .map(|proxy| {
                proxy.parse().map_err(|_| {
                    (
                        proxies.span(),
                        format!("{proxy:?} is not an IP address like \"10.0.0.5\" (one address a proxy, no range)"),
                    )
                })
            })
            .collect()
    }

    /// Where the main listener binds: `listen`, or the default.
    pub(crate) fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid default"))
    }
}

/// The `[token]` table: the library's `TokenSources` and the CORS preflight pass.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    /// Whether `Authorization: Bearer` is read (default `true`).
    pub(crate) authorization: Option<Spanned<bool>>,
    /// A cookie holding the token; unsafe methods then need a same-origin request.
    pub(crate) cookie: Option<Spanned<String>>,
    /// A header holding the bare token.
    pub(crate) header: Option<Spanned<String>>,
    /// Origins whose pages may send unsafe requests authenticated by the cookie.
    pub(crate) trusted_origins: Option<Spanned<Vec<String>>>,
    /// Whether CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) pass without
    /// a token.
    #[serde(default)]
    pub(crate) cors_preflight: bool,
}

impl TokenConfig {
    /// The sources as the library takes them; `check` has vetted them at load.
    pub(crate) fn sources(&self) -> jwt_gate::TokenSources {
        jwt_gate::TokenSources {
            authorization: self.authorization.as_ref().is_none_or(|on| *on.get_ref()),
            cookie: self.cookie.as_ref().map(|name| name.get_ref().clone()),
            header: self.header.as_ref().map(|name| name.get_ref().clone()),
            trusted_origins: self
                .trusted_origins
                .as_ref()
                .map(|origins| origins.get_ref().clone())
                .unwrap_or_default(),
        }
    }

    /// `TokenSources::check`, its error placed at the key it is about: the names are
    /// checked alone first, so what the whole check refuses after them is either no source
    /// at all or the origins.
    fn check(&self) -> Result<(), (Option<Range<usize>>, String)> {
        let sources = self.sources();
        let alone = [
            (
                &self.cookie,
                jwt_gate::TokenSources {
                    cookie: sources.cookie.clone(),
                    ..jwt_gate::TokenSources::default()
                },
            ),
            (
                &self.header,
                jwt_gate::TokenSources {
                    header: sources.header.clone(),
                    ..jwt_gate::TokenSources::default()
                },
            ),
        ];
        for (key, sources) in alone {
            if let (Some(key), Err(error)) = (key, sources.check()) {
                return Err((Some(key.span()), error.to_string()));
            }
        }
        sources.check().map_err(|error| {
            let no_source =
                !sources.authorization && sources.cookie.is_none() && sources.header.is_none();
            let span = if no_source {
                self.authorization.as_ref().map(Spanned::span)
            } else {
                self.trusted_origins.as_ref().map(Spanned::span)
            };
            (span, error.to_string())
        })
    }
}

/// An identity provider whose tokens are trusted beside the crate's own keys: its keys found
/// by discovery (or at `jwks_url`), its tokens held to its own audience.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuerConfig {
    /// The `iss` its tokens carry, byte for byte; discovery reads
    /// `{issuer}/.well-known/openid-configuration`.
    pub(crate) issuer: Spanned<String>,
    /// The audience its tokens must name: your API's identifier at that provider.
    pub(crate) audience: Spanned<String>,
    /// The JWKS URL, instead of discovery.
    pub(crate) jwks_url: Option<Spanned<String>>,
    /// Only this algorithm (`RS256`, `ES256`, `EdDSA`, ...); by default the keys' own.
    pub(crate) algorithm: Option<Algorithm>,
    /// `third_party` (default: `typ` `JWT`, `at+jwt` or none; `jti` optional) or `rfc9068`
    /// (`typ: at+jwt` and `jti` required).
    #[serde(default)]
    pub(crate) preset: Preset,
    /// Lets discovery and the JWKS use plain `http://` to a host that is not loopback.
    #[serde(default)]
    pub(crate) allow_plain_http: bool,
}

/// The validation preset of a remote issuer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Preset {
    #[default]
    ThirdParty,
    Rfc9068,
}

/// Where liveness is answered unless `health.live_path` says.
pub(crate) const DEFAULT_LIVE_PATH: &str = "/livez";
/// Where readiness is answered unless `health.ready_path` says.
pub(crate) const DEFAULT_READY_PATH: &str = "/readyz";

/// The probes, answered before the gate on the main listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthConfig {
    /// Liveness: `200` while the process serves (default `/livez`).
    pub(crate) live_path: Option<Spanned<String>>,
    /// Readiness: `200`, or `503` while the revocation store or a key source is unhealthy
    /// (default `/readyz`).
    pub(crate) ready_path: Option<Spanned<String>>,
}

/// The program's log lines, on stderr.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// `text` (default) or `json`, one object a line.
    #[serde(default)]
    pub(crate) format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The Prometheus endpoint: off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    /// Where `GET /metrics` is answered: an address of its own, never the main listener.
    pub(crate) listen: Option<SocketAddr>,
}

/// The crate's own keys: an HS256 secret (from an environment variable or a file, never
/// written in the configuration), or PEM files.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysConfig {
    /// The variable holding the HS256 secret (default `JWT_GATE_SECRET`).
    pub(crate) secret_env: Option<Spanned<String>>,
    /// A file holding the HS256 secret (its bytes, less one trailing newline).
    pub(crate) secret_file: Option<Spanned<PathBuf>>,
    /// The algorithm of the PEM keys (`EdDSA`, `RS256`, `ES256`, ...).
    pub(crate) algorithm: Option<Algorithm>,
    /// The signing key (PKCS#8 PEM); tokens are signed with it and verified with its public half.
    pub(crate) private_pem: Option<Spanned<PathBuf>>,
    /// Further public keys that verify (keys staged or being retired, or another signer's).
    pub(crate) public_pems: Option<Spanned<Vec<Spanned<PathBuf>>>>,
}

impl KeysConfig {
    /// The verifying-only PEM files.
    pub(crate) fn public_pems(&self) -> &[Spanned<PathBuf>] {
        self.public_pems.as_ref().map_or(&[], |pems| pems.get_ref())
    }
}

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidationConfig {
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) leeway_seconds: Option<Spanned<u64>>,
    pub(crate) max_lifetime_seconds: Option<u64>,
    /// Where roles are read, for routes' `roles`: a dot-separated path (default `roles`).
    pub(crate) roles_claim: Option<Spanned<String>>,
}

/// A path rule: `/health` is that path, `/static/*` that prefix and everything below it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    /// Only for these methods (`["GET", "HEAD"]`); every method when absent.
    pub(crate) methods: Option<Spanned<Vec<String>>>,
    pub(crate) path: Spanned<String>,
    /// `required` when absent and the route requires scopes or roles.
    pub(crate) access: Option<Spanned<Access>>,
    /// Scopes a token must all hold here (`scope`/`scp`); implies `required`.
    pub(crate) scopes: Option<Spanned<Vec<String>>>,
    /// Roles a token must all hold here (at `validation.roles_claim`); implies `required`.
    pub(crate) roles: Option<Spanned<Vec<String>>>,
    /// How long the upstream may take to answer here (its response head), instead of
    /// `limits.upstream_timeout_seconds`; then `504`.
    pub(crate) timeout_seconds: Option<Spanned<u64>>,
}

impl Route {
    /// What the route asks of a request, if it says: its `access`, or `required` when it
    /// requires scopes or roles.
    pub(crate) fn access(&self) -> Option<Access> {
        match &self.access {
            Some(access) => Some(*access.get_ref()),
            None if self.requires() => Some(Access::Required),
            None => None,
        }
    }

    /// Whether the route requires scopes or roles.
    pub(crate) fn requires(&self) -> bool {
        self.scopes
            .as_ref()
            .is_some_and(|s| !s.get_ref().is_empty())
            || self.roles.as_ref().is_some_and(|r| !r.get_ref().is_empty())
    }
}

/// What a route asks of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Access {
    /// No token is looked at.
    Open,
    /// A valid token is used when present; an invalid one is refused.
    Optional,
    /// A valid token is required (every path not named is this).
    Required,
}

/// A claim sent on as a header.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardClaim {
    /// A claim name, or a JSON Pointer (`/realm_access/roles`).
    pub(crate) claim: Spanned<String>,
    /// The header (must start with `x-auth-`; default `x-auth-<claim>`).
    pub(crate) header: Option<Spanned<String>>,
    /// `json` (default) or `join`.
    #[serde(default)]
    pub(crate) arrays: Arrays,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Arrays {
    #[default]
    Json,
    Join,
}

/// Where revocations (logouts) live: this process's memory, or Redis for a fleet.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevocationConfig {
    pub(crate) redis_url: Option<Spanned<String>>,
    /// Put before every Redis key and channel (revocations and the auth service's throttle),
    /// so deployments can share one Redis; every member of one fleet uses the same.
    pub(crate) key_prefix: Option<Spanned<String>>,
}

/// Where the auth service's users live: one SQLite file, or PostgreSQL for a fleet.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersConfig {
    pub(crate) sqlite: Option<PathBuf>,
    pub(crate) postgres_url: Option<Spanned<String>>,
}

/// The auth service's mount.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthConfig {
    /// Where the auth service is mounted (default `/auth`).
    pub(crate) prefix: Option<Spanned<String>>,
}

/// How `proxy` speaks to its upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamOptions {
    /// HTTP/2 only: h2c by prior knowledge to an `http://` upstream (gRPC servers), only
    /// `h2` offered to an `https://` one. Otherwise HTTP/1.1, or what ALPN picks over TLS.
    #[serde(default)]
    pub(crate) http2: bool,
    /// The CA certificates (PEM) an `https://` upstream's certificate must chain to,
    /// instead of the webpki roots; relative to the file.
    pub(crate) ca_file: Option<Spanned<PathBuf>>,
}

/// TLS termination: `proxy` serves HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with these.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// The certificate chain (PEM, the server's first); relative to the file.
    pub(crate) cert_file: Spanned<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1); relative to the file.
    pub(crate) key_file: Spanned<PathBuf>,
}

/// Bounds on slow and numerous clients, and on the upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsConfig {
    pub(crate) upstream_timeout_seconds: Option<u64>,
    pub(crate) header_read_timeout_seconds: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    /// How long requests in flight may take to finish after SIGTERM or SIGINT (default 20).
    pub(crate) drain_timeout_seconds: Option<u64>,
    /// Threads serving `proxy` and `forward-auth`, each with its own listener on the shared
    /// port and its own upstream pool (default: one per core on Linux, one elsewhere; never
    /// more than `max_connections`). `max_connections` is split evenly between them, each
    /// worker capping its own share, as nginx's `worker_connections` does.
    pub(crate) workers: Option<usize>,
    /// New connections one client address may open per second (absent: no limit); those
    /// over the rate wait, accepted but unread, for their turn. Split between the workers.
    pub(crate) connection_rate_per_address: Option<u32>,
    /// New connections one client address may open at once (default: twice the rate).
    pub(crate) connection_burst_per_address: Option<u32>,
}

impl LimitsConfig {
    /// The admission of new connections each of `workers` listeners applies, if configured.
    /// The kernel spreads one address's connections over every listener on the port, so each
    /// refills at its share of the rate (rounded up); the burst is not shared out, since a
    /// handful of connections is not spread evenly, and a client within the burst should not
    /// wait because its connections hashed to one listener.
    pub(crate) fn admission(
        &self,
        workers: usize,
    ) -> Option<jwt_gate::gateway::ConnectionAdmission> {
        let rate = self.connection_rate_per_address?;
        let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        // Unset, the burst is the library's default for the whole rate, not for a share.
        let burst = self
            .connection_burst_per_address
            .unwrap_or_else(|| whole_rate_burst(rate));
        Some(
            jwt_gate::gateway::ConnectionAdmission::builder()
                .per_second(rate.div_ceil(workers))
                .burst(burst)
                .build(),
        )
    }

    /// The workers that run: as configured or one per core, never more than connections
    /// allowed, since each holds at least one.
    pub(crate) fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(crate::workers::default_count)
            .min(self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS))
    }
}

/// `limits.connection_burst_per_address` when the file sets none: the library's own default
/// for `rate`.
fn whole_rate_burst(rate: u32) -> u32 {
    jwt_gate::gateway::ConnectionAdmission::builder()
        .per_second(rate)
        .build()
        .burst()
}

/// `limits.max_connections` when the file sets none.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_SECRET_ENV: &str = "JWT_GATE_SECRET";
pub(crate) const DEFAULT_AUTH_PREFIX: &str = "/auth";
/// The `iss` and `aud` tokens are issued with and must carry when the file names none: as the
/// design says, the program always sets and requires both.
pub(crate) const DEFAULT_ISSUER: &str = "jwt-gate";
pub(crate) const DEFAULT_AUDIENCE: &str = "jwt-gate";

/// A configuration that cannot be used: one line, for the user to act on.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl ValidationConfig {
    /// The issuer tokens carry: the configured one, or [`DEFAULT_ISSUER`].
    pub(crate) fn issuer(&self) -> &str {
        self.issuer.as_deref().unwrap_or(DEFAULT_ISSUER)
    }

    /// The audience tokens carry: the configured one, or [`DEFAULT_AUDIENCE`].
    pub(crate) fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(DEFAULT_AUDIENCE)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file as read, kept so that later checks can point into it.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

impl Source {
    /// `file:line:column: key `k`: message`, for the place `span` covers.
    pub(crate) fn error_at(&self, span: Option<Range<usize>>, message: &str) -> ConfigError {
        let Some(span) = span else {
            return ConfigError(format!("{}: {message}", self.path.display()));
        };
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
        let key = key_at(&self.text, start);
        let key = key.map_or(String::new(), |key| format!("key `{key}`: "));
        ConfigError(format!(
            "{}:{line}:{column}: {key}{message}",
            self.path.display()
        ))
    }
}

/// An environment variable's name as they are written (`JWT_GATE_SECRET`): upper case, so
/// that a secret pasted in its place (base64 or hex text, with lower-case letters) is told
/// apart from a name.
fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_uppercase() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
}

/// The dotted key whose line holds `offset`: the nearest table header above it, and the key
/// left of `=` on the line (or the key itself, for an unknown key's span).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |at| at + 1);
    let line_end = text[offset..]
        .find('\n')
        .map_or(text.len(), |at| offset + at);
    let line = text[line_start..line_end].trim();
    let key = match line.split_once('=') {
        Some((key, _)) => key.trim().trim_matches('"').to_owned(),
        None if line.starts_with('[') => {
            return Some(
                line.trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_owned(),
            )
        }
        None => line.to_owned(),
    };
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|line| {
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned()
        });
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}

/// Reads and checks `path`.
pub(crate) fn load(path: &Path) -> Result<(Config, Source), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError(format!("cannot read {}: {error}", path.display())))?;
    let source = Source {
        path: path.to_owned(),
        text,
    };
    let config: Config = toml::from_str(&source.text)
        .map_err(|error| source.error_at(error.span(), error.message().trim()))?;
    check(&config, &source)?;
    Ok((config, source))
}

/// IANA's HTTP Method Registry (RFC 9110, WebDAV and the rest), without HTTP/2's `PRI`.
const REGISTERED_METHODS: [&str; 39] = [
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "OPTIONS",
    "ORDERPATCH",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "TRACE",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

/// The checks serde cannot make: each names its place in the file.
fn check(config: &Config, source: &Source) -> Result<(), ConfigError> {
    if let Some(upstream) = &config.upstream {
        check_upstream(upstream.get_ref())
            .map_err(|why| source.error_at(Some(upstream.span()), &why))?;
    }
    for route in &config.routes {
        check_route_path(route.path.get_ref())
            .map_err(|why| source.error_at(Some(route.path.span()), &why))?;
        if let Some(methods) = &route.methods {
            // A rule for no request, or for a method no client sends (`DELET`), would leave
            // the path to the other rules without a word: the protection written is not there.
            if methods.get_ref().is_empty() {
                return Err(source.error_at(
                    Some(methods.span()),
                    "no method: leave `methods` out for a route of every method",
                ));
            }
            for method in methods.get_ref() {
                if !REGISTERED_METHODS.contains(&method.as_str()) {
                    return Err(source.error_at(
                        Some(methods.span()),
                        &format!(
                            "{method:?} is not a registered HTTP method (\"GET\", \"POST\", \
                             \"DELETE\", WebDAV's \"PROPFIND\"…), in upper case"
                        ),
                    ));
                }
            }
        }
        check_route_rules(route).map_err(|(span, why)| source.error_at(Some(span), &why))?;
    }
    check_duplicate_routes(&config.routes)
        .map_err(|(span, why)| source.error_at(Some(span), &why))?;
    if let Some(leeway) = &config.validation.leeway_seconds {
        // Revocations are kept this long past their tokens' expiry: a token still accepted
        // within a longer leeway would be let back in once its revocation was forgotten.
        let grace = jwt_gate::revocation::DEFAULT_GRACE.as_secs();
        if *leeway.get_ref() > grace {
            return Err(source.error_at(
                Some(leeway.span()),
                &format!(
                    "longer than the {grace} s revocations are kept past their tokens' expiry"
                ),
            ));
        }
    }
    if let Some(path) = &config.validation.roles_claim {
        jwt_gate::ClaimPath::new(path.get_ref())
            .map_err(|error| source.error_at(Some(path.span()), &error.to_string()))?;
    }
    check_issuers(config).map_err(|(span, why)| source.error_at(Some(span), &why))?;
    if let Some(url) = &config.revocation.redis_url {
        check_redis_url(url.get_ref()).map_err(|why| source.error_at(Some(url.span()), &why))?;
    }
    config
        .token
        .check()
        .map_err(|(span, why)| source.error_at(span, &why))?;
    for path in [&config.health.live_path, &config.health.ready_path]
        .into_iter()
        .flatten()
    {
        let value = path.get_ref();
        if !value.starts_with('/') || value.ends_with("/*") {
            return Err(source.error_at(
                Some(path.span()),
                &format!("{value:?} is not an exact path like \"/readyz\""),
            ));
        }
        check_route_path(value).map_err(|why| source.error_at(Some(path.span()), &why))?;
    }
    let (live, ready) = (&config.health.live_path, &config.health.ready_path);
    fn value<'a>(path: &'a Option<Spanned<String>>, default: &'a str) -> &'a str {
        path.as_ref()
            .map_or(default, |path| path.get_ref().as_str())
    }
    if value(live, DEFAULT_LIVE_PATH) == value(ready, DEFAULT_READY_PATH) {
        return Err(source.error_at(
            ready.as_ref().or(live.as_ref()).map(Spanned::span),
            "the readiness path is the liveness path: a process that is alive but not ready \
             could not say so",
        ));
    }
    for claim in &config.forward_claims {
        forwarded_claim(claim).map_err(|why| {
            let span = claim
                .header
                .as_ref()
                .map_or(claim.claim.span(), Spanned::span);
            source.error_at(Some(span), &why)
        })?;
    }
    if let Some(prefix) = &config.revocation.key_prefix {
        check_key_prefix(prefix.get_ref())
            .map_err(|why| source.error_at(Some(prefix.span()), &why))?;
    }
    config
        .trusted_proxies()
        .map_err(|(span, why)| source.error_at(Some(span), &why))?;
    if let Some(prefix) = &config.auth.prefix {
        let value = prefix.get_ref();
        if !value.starts_with('/') || value.trim_end_matches('/').is_empty() || value.contains('*')
        {
            return Err(source.error_at(
                Some(prefix.span()),
                "the auth prefix is a path like \"/auth\", not the root",
            ));
        }
    }
    let keys = &config.keys;
    let secret = keys.secret_env.is_some() || keys.secret_file.is_some();
    let pem = keys.private_pem.is_some() || !keys.public_pems().is_empty();
    if let Some(name) = &keys.secret_env {
        // A secret pasted where its variable's name belongs would be echoed by every message
        // that names the variable, and by `check-config`: refused, without saying it.
        if !is_variable_name(name.get_ref()) {
            return Err(source.error_at(
                Some(name.span()),
                "not an environment variable's name (upper-case letters, digits and `_`, not \
                 starting with a digit): give the name of the variable that holds the secret, \
                 never the secret itself",
            ));
        }
    }
    if keys.secret_env.is_some() && keys.secret_file.is_some() {
        return Err(source.error_at(
            keys.secret_file.as_ref().map(Spanned::span),
            "give the secret once: secret_env or secret_file",
        ));
    }
    if secret && pem {
        return Err(source.error_at(
            keys.private_pem
                .as_ref()
                .map(Spanned::span)
                .or(keys.public_pems().first().map(Spanned::span)),
            "an HS256 secret and PEM keys cannot be mixed: one key family per gate",
        ));
    }
    if pem && keys.algorithm.is_none() {
        return Err(source.error_at(
            keys.private_pem
                .as_ref()
                .map(Spanned::span)
                .or(keys.public_pems().first().map(Spanned::span)),
            "PEM keys need keys.algorithm (EdDSA, RS256, ES256, ...)",
        ));
    }
    if let Some(users) = &config.users {
        if users.sqlite.is_some() == users.postgres_url.is_some() {
            return Err(source.error_at(
                users.postgres_url.as_ref().map(Spanned::span),
                "users: give exactly one of sqlite (a file) or postgres_url",
            ));
        }
    }
    if config.limits.connection_burst_per_address.is_some()
        && config.limits.connection_rate_per_address.is_none()
    {
        return Err(ConfigError(format!(
            "{}: limits.connection_burst_per_address needs limits.connection_rate_per_address",
            source.path.display()
        )));
    }
    for (value, name) in [
        (
            config.limits.upstream_timeout_seconds,
            "upstream_timeout_seconds",
        ),
        (
            config.limits.header_read_timeout_seconds,
            "header_read_timeout_seconds",
        ),
        (
            config.limits.max_connections.map(|n| n as u64),
            "max_connections",
        ),
        (config.limits.drain_timeout_seconds, "drain_timeout_seconds"),
        (config.limits.workers.map(|n| n as u64), "workers"),
        (
            config.limits.connection_rate_per_address.map(u64::from),
            "connection_rate_per_address",
        ),
        (
            config.limits.connection_burst_per_address.map(u64::from),
            "connection_burst_per_address",
        ),
    ] {
        if value == Some(0) {
            return Err(ConfigError(format!(
                "{}: limits.{name} must be positive",
                source.path.display()
            )));
        }
    }
    Ok(())
}

/// Whether `url` is one the Redis client can connect to. The parser's message never holds
/// the URL, so it cannot show a password.
fn check_redis_url(url: &str) -> Result<(), String> {
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|error| format!("not a Redis URL: {error}"))
}

/// A Redis key prefix: 1 to 64 visible ASCII characters, so it reads the same in every
/// tool and log that shows a key.
fn check_key_prefix(prefix: &str) -> Result<(), String> {
    if (1..=64).contains(&prefix.len()) && prefix.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?} is not a key prefix: 1 to 64 visible ASCII characters, like \"shop:\""
        ))
    }
}

pub(crate) fn check_upstream(upstream: &str) -> Result<(), String> {
    // The gateway's own check, so the binary refuses exactly what the library would.
    jwt_gate::gateway::Gateway::builder(upstream)
        .build()
        .map(drop)
        .map_err(|error| error.to_string())
}

/// A route's access, requirements and timeout, as a whole.
fn check_route_rules(route: &Route) -> Result<(), (Range<usize>, String)> {
    for (names, kind) in [(&route.scopes, "scope"), (&route.roles, "role")] {
        let Some(names) = names else { continue };
        for name in names.get_ref() {
            // What `Require` accepts (RFC 6749 §3.3 scope tokens), refused here, not at start.
            let usable = !name.is_empty()
                && name
                    .bytes()
                    .all(|byte| byte > 0x20 && byte < 0x7f && byte != b'"' && byte != b'\\');
            if !usable {
                return Err((
                    names.span(),
                    format!(
                        "{name:?} cannot be a {kind}: printable ASCII without spaces, '\"' or '\\'"
                    ),
                ));
            }
        }
    }
    if let Some(access) = &route.access {
        if route.requires() && *access.get_ref() != Access::Required {
            return Err((
                access.span(),
                "a route that requires scopes or roles is `required`: leave access out, or say \"required\"".into(),
            ));
        }
    }
    if let Some(timeout) = &route.timeout_seconds {
        if *timeout.get_ref() == 0 {
            return Err((timeout.span(), "the timeout must be positive".into()));
        }
    }
    if route.access.is_none() && !route.requires() && route.timeout_seconds.is_none() {
        return Err((
            route.path.span(),
            "a route says something: access, scopes, roles or timeout_seconds".into(),
        ));
    }
    Ok(())
}

/// Each remote issuer: a URL, an audience, never the crate's own issuer, never twice.
fn check_issuers(config: &Config) -> Result<(), (Range<usize>, String)> {
    for (index, issuer) in config.issuers.iter().enumerate() {
        let name = issuer.issuer.get_ref();
        if !is_http_url(name) {
            return Err((
                issuer.issuer.span(),
                format!("{name:?} is not an issuer URL (https:// and a host)"),
            ));
        }
        if name == config.validation.issuer() {
            return Err((
                issuer.issuer.span(),
                format!("{name:?} is the issuer of the crate's own keys (validation.issuer)"),
            ));
        }
        if config.issuers[..index]
            .iter()
            .any(|earlier| earlier.issuer.get_ref() == name)
        {
            return Err((
                issuer.issuer.span(),
                format!("{name:?} is configured twice"),
            ));
        }
        if issuer.audience.get_ref().is_empty() {
            return Err((
                issuer.audience.span(),
                "the audience may not be empty".into(),
            ));
        }
        if let Some(url) = &issuer.jwks_url {
            if !is_http_url(url.get_ref()) {
                return Err((
                    url.span(),
                    "the JWKS URL is an https:// URL with a host".into(),
                ));
            }
        }
    }
    Ok(())
}

/// An `http(s)://` URL with a host: `https://` alone, or `https:///path`, names nobody.
fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && http::Uri::try_from(url)
            .ok()
            .and_then(|uri| uri.host().map(|host| !host.is_empty()))
            .unwrap_or(false)
}

/// Two routes for one path and one method may add up (one with `scopes`, one with a
/// timeout), but not both say the same thing: which timeout held depended on the order of the
/// file, and two accesses (`open` and `required`) leave the reader to guess which one is meant.
fn check_duplicate_routes(routes: &[Route]) -> Result<(), (Range<usize>, String)> {
    fn methods(route: &Route) -> Option<&Vec<String>> {
        route.methods.as_ref().map(Spanned::get_ref)
    }
    for (index, route) in routes.iter().enumerate() {
        for earlier in &routes[..index] {
            let same_route = earlier.path.get_ref() == route.path.get_ref()
                && match (methods(earlier), methods(route)) {
                    (None, None) => true,
                    (Some(one), Some(other)) => one.iter().any(|method| other.contains(method)),
                    // A route for some methods beats one for all of them.
                    _ => false,
                };
            if !same_route {
                continue;
            }
            let twice = [
                (route.timeout_seconds.is_some() && earlier.timeout_seconds.is_some())
                    .then_some("timeout_seconds"),
                (route.access.is_some() && earlier.access.is_some()).then_some("access"),
            ];
            if let Some(what) = twice.into_iter().flatten().next() {
                return Err((
                    route.path.span(),
                    format!(
                        "{:?} has a route with `{what}` for these methods already: say it once",
                        route.path.get_ref()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_route_path(path: &str) -> Result<(), String> {
    let bare = path.strip_suffix("/*").unwrap_or(path);
    if !path.starts_with('/')
        || bare.contains('*')
        || bare.contains("//")
        || bare.split('/').any(|s| s == "." || s == "..")
    {
        return Err(format!(
            "{path:?} is not a route path: \"/exact/path\", or \"/prefix/*\" for a prefix and everything below it"
        ));
    }
    Ok(())
}

/// The library's forwarded claim for `claim`, or why not.
pub(crate) fn forwarded_claim(claim: &ForwardClaim) -> Result<ForwardedClaim, String> {
    let forwarded = match &claim.header {
        Some(header) => ForwardedClaim::with_header(claim.claim.get_ref(), header.get_ref()),
        None => ForwardedClaim::new(claim.claim.get_ref()),
    }
    .map_err(|error| error.to_string())?;
    Ok(forwarded.arrays(match claim.arrays {
        Arrays::Json => ArrayStyle::Json,
        Arrays::Join => ArrayStyle::Join,
    }))
}

/// Checks what only the final configuration can tell, once the environment and the flags have
/// had their say: the metrics listener apart from the main one, which it would otherwise
/// take first, leaving the main listener's bind to fail as if another process held the port.
pub(crate) fn check_listeners(config: &Config, source: &Source) -> Result<(), ConfigError> {
    let main = config.listen_addr();
    match config.metrics.listen {
        Some(metrics) if overlaps(main, metrics) => Err(source.error_at(
            None,
            &format!(
                "metrics.listen {metrics} is where the gate itself listens ({main}): the \
                 metrics need an address of their own, never the public listener"
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether two listeners would want the same socket: one port (not an ephemeral `0`) on the
/// same address, or on any address where one listens on all of them.
fn overlaps(one: SocketAddr, other: SocketAddr) -> bool {
    one.port() != 0
        && one.port() == other.port()
        && (one.ip() == other.ip() || one.ip().is_unspecified() || other.ip().is_unspecified())
}

/// The command line's overrides, which win over the environment, which wins over the file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    pub(crate) listen: Option<String>,
    pub(crate) upstream: Option<String>,
}

/// Applies `JWT_GATE_LISTEN`, `JWT_GATE_UPSTREAM`, `JWT_GATE_REDIS_URL`, `JWT_GATE_SQLITE`,
/// `JWT_GATE_POSTGRES_URL`, then the flags.
pub(crate) fn apply_overrides(
    config: &mut Config,
    env: impl Fn(&str) -> Option<String>,
    flags: &Overrides,
) -> Result<(), ConfigError> {
    let listen = flags
        .listen
        .clone()
        .map(|value| ("--listen", value))
        .or_else(|| env("JWT_GATE_LISTEN").map(|value| ("JWT_GATE_LISTEN", value)));
    if let Some((from, value)) = listen {
        config.listen = Some(value.parse().map_err(|_| {
            ConfigError(format!(
                "{from}: {value:?} is not an address like {DEFAULT_LISTEN}"
            ))
        })?);
    }
    let upstream = flags
        .upstream
        .clone()
        .map(|value| ("--upstream", value))
        .or_else(|| env("JWT_GATE_UPSTREAM").map(|value| ("JWT_GATE_UPSTREAM", value)));
    if let Some((from, value)) = upstream {
        check_upstream(&value).map_err(|why| ConfigError(format!("{from}: {why}")))?;
        config.upstream = Some(Spanned::new(0..0, value));
    }
    if let Some(url) = env("JWT_GATE_REDIS_URL") {
        // Checked here, as the file's is: otherwise `check-config` passes it and the start
        // fails naming `revocation.redis_url`, a key the file may not have.
        check_redis_url(&url).map_err(|why| ConfigError(format!("JWT_GATE_REDIS_URL: {why}")))?;
        config.revocation.redis_url = Some(Spanned::new(0..0, url));
    }
    if let Some(prefix) = env("JWT_GATE_REDIS_PREFIX") {
        check_key_prefix(&prefix)
            .map_err(|why| ConfigError(format!("JWT_GATE_REDIS_PREFIX: {why}")))?;
        config.revocation.key_prefix = Some(Spanned::new(0..0, prefix));
    }
    match (env("JWT_GATE_SQLITE"), env("JWT_GATE_POSTGRES_URL")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "JWT_GATE_SQLITE and JWT_GATE_POSTGRES_URL are both set: choose one".into(),
            ))
        }
        (Some(file), None) => {
            config.users = Some(UsersConfig {
                sqlite: Some(file.into()),
                postgres_url: None,
            })
        }
        (None, Some(url)) => {
            config.users = Some(UsersConfig {
                sqlite: None,
                postgres_url: Some(Spanned::new(0..0, url)),
            })
        }
        (None, None) => {}
    }
    Ok(())
}

/// `url` with any password replaced by `***`: URLs of databases carry credentials.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_keywords(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let redacted = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            // A password can also sit in the query (`?password=`): drop the query whole.
            let tail = tail.split_once('?').map_or(tail, |(path, _)| path);
            format!("{scheme}://{redacted}@{host}{tail}")
        }
        None => {
            let tail = tail.split_once('?').map_or(tail, |(path, _)| path);
            format!("{scheme}://{authority}{tail}")
        }
    }
}

/// A PostgreSQL keyword string (`host=db password=secret`, or `password='two words'`) with
/// its password hidden.
fn redact_keywords(text: &str) -> String {
    let mut shown = String::new();
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("password") {
        let (before, from) = rest.split_at(at + "password".len());
        shown.push_str(before);
        let value = from.trim_start();
        let Some(value) = value.strip_prefix('=') else {
            rest = from;
            continue;
        };
        shown.push_str("=***");
        let value = value.trim_start();
        // A quoted value ends at its closing quote (`\'` escapes one); a bare one at a space.
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map_or(value.len(), |(index, _)| index + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    shown.push_str(rest);
    shown
}

/// The effective configuration as TOML, every default spelled out, no secret in it.
pub(crate) fn effective(config: &Config) -> String {
    let mut shown = config.clone();
    shown.listen = Some(config.listen_addr());
    if shown.keys.secret_file.is_none()
        && shown.keys.private_pem.is_none()
        && shown.keys.public_pems().is_empty()
    {
        shown
            .keys
            .secret_env
            .get_or_insert_with(|| Spanned::new(0..0, DEFAULT_SECRET_ENV.to_owned()));
    }
    shown
        .auth
        .prefix
        .get_or_insert_with(|| Spanned::new(0..0, DEFAULT_AUTH_PREFIX.to_owned()));
    let defaults = jwt_gate::Validation::default();
    let policy = &mut shown.validation;
    policy
        .issuer
        .get_or_insert_with(|| DEFAULT_ISSUER.to_owned());
    policy
        .audience
        .get_or_insert_with(|| DEFAULT_AUDIENCE.to_owned());
    policy
        .leeway_seconds
        .get_or_insert(Spanned::new(0..0, defaults.leeway.as_secs()));
    if let Some(lifetime) = defaults.max_lifetime {
        policy
            .max_lifetime_seconds
            .get_or_insert(lifetime.as_secs());
    }
    for route in &mut shown.routes {
        if route.access.is_none() && route.requires() {
            route.access = Some(Spanned::new(0..0, Access::Required));
        }
    }
    let limits = &mut shown.limits;
    limits.upstream_timeout_seconds.get_or_insert(30);
    limits.header_read_timeout_seconds.get_or_insert(10);
    limits
        .max_connections
        .get_or_insert(DEFAULT_MAX_CONNECTIONS);
    limits.drain_timeout_seconds.get_or_insert(20);
    limits.workers = Some(limits.workers());
    if let Some(rate) = limits.connection_rate_per_address {
        limits
            .connection_burst_per_address
            .get_or_insert_with(|| whole_rate_burst(rate));
    }
    let health = &mut shown.health;
    health
        .live_path
        .get_or_insert_with(|| Spanned::new(0..0, DEFAULT_LIVE_PATH.to_owned()));
    health
        .ready_path
        .get_or_insert_with(|| Spanned::new(0..0, DEFAULT_READY_PATH.to_owned()));
    if let Some(url) = &mut shown.revocation.redis_url {
        *url = Spanned::new(0..0, redact_url(url.get_ref()));
    }
    for issuer in &mut shown.issuers {
        if let Some(url) = &mut issuer.jwks_url {
            *url = Spanned::new(0..0, redact_url(url.get_ref()));
        }
    }
    if let Some(users) = &mut shown.users {
        if let Some(url) = &mut users.postgres_url {
            *url = Spanned::new(0..0, redact_url(url.get_ref()));
        }
    }
    toml::to_string(&shown).unwrap_or_else(|error| format!("# cannot show: {error}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyword_connection_string_shows_no_password() {
        for (given, shown) in [
            (
                "host=db password=hunter2 user=app",
                "host=db password=*** user=app",
            ),
            ("host=db PASSWORD = hunter2", "host=db PASSWORD=***"),
            (
                "password='two words\\' here' dbname=x",
                "password=*** dbname=x",
            ),
            ("host=db user=app", "host=db user=app"),
        ] {
            assert_eq!(redact_url(given), shown, "{given}");
        }
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/users?sslmode=require&password=x"),
            "postgres://app:***@db:5432/users"
        );
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn keys_are_named_with_their_table() {
        let text = "listen = \"x\"\n[validation]\nleeway = 3\n";
        assert_eq!(
            key_at(text, text.find("leeway").unwrap()).as_deref(),
            Some("validation.leeway")
        );
        assert_eq!(key_at(text, 2).as_deref(), Some("listen"));
    }
}
