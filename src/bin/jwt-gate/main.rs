//! `jwt-gate`: JWT authentication in front of a service, as a program with one TOML file.
//!
//! ```text
//! jwt-gate --config gate.toml proxy          # the reverse proxy in front of `upstream`
//! jwt-gate --config gate.toml forward-auth   # for nginx auth_request, Traefik, Caddy
//! jwt-gate --config gate.toml serve          # the auth service alone
//! jwt-gate --config gate.toml token alice    # a development token (needs allow_dev_tokens or --dev)
//! jwt-gate keys generate [--ed25519]         # a new HS256 secret or Ed25519 PEM
//! jwt-gate --config gate.toml keys jwks      # the public JWKS of the configured keys
//! jwt-gate --config gate.toml keys add       # rotation: add, activate KID, retire KID
//! jwt-gate check-config gate.toml            # the effective configuration, without secrets
//! ```
//!
//! Every configuration error exits with status 2 and one line naming the file, line and key.
//! The reference is `docs/binary.md`.

#![forbid(unsafe_code)]

mod config;
mod keys;
mod protocols;
mod rotate;
mod run;
mod server;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The proxy allocates a little for every request (request and response heads, the upstream
// pool's bookkeeping); mimalloc's per-thread free lists suit one single-threaded worker per
// core: about 5 % less CPU a request in `benches/program.rs` (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// JWT authentication in front of a service: a reverse proxy, forward-auth for the web
/// server you have, and the auth service, from one TOML file.
#[derive(Debug, Parser)]
#[command(name = "jwt-gate", version)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, env = "JWT_GATE_CONFIG")]
    config: Option<PathBuf>,
    /// Where to listen (overrides `listen` and JWT_GATE_LISTEN).
    #[arg(long, global = true)]
    listen: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The reverse proxy: every request verified, then forwarded to the upstream with the
    /// identity in x-auth-* headers; the auth service mounted when users are configured.
    Proxy {
        /// The upstream URL (overrides `upstream` and JWT_GATE_UPSTREAM).
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Answers a front server's auth subrequest: 200 with x-auth-* headers, or the gate's
    /// 401/403.
    ForwardAuth,
    /// The auth service alone (register, token, refresh, logout).
    Serve,
    /// Prints a development token for SUB, signed with the configured keys.
    Token {
        /// The subject.
        sub: String,
        /// Mint even though the configuration does not set allow_dev_tokens.
        #[arg(long)]
        dev: bool,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 900)]
        ttl: u64,
    },
    /// Makes keys, or prints the public ones.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Checks FILE and prints the effective configuration, secrets redacted.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
}

/// Log lines on stderr, as text or one JSON object a line, at the level `JWT_GATE_LOG` names
/// (`error`, `warn`, `info` by default, `debug`, `trace`). Tokens and passwords are never
/// logged, by the library or the program.
fn init_logs(format: config::LogFormat) {
    let level = std::env::var("JWT_GATE_LOG")
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let logs = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => logs.init(),
        config::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Prints a new HS256 secret (for JWT_GATE_SECRET), or an Ed25519 private key PEM.
    Generate {
        /// An Ed25519 key (PKCS#8 PEM) instead of an HS256 secret.
        #[arg(long)]
        ed25519: bool,
    },
    /// Prints the JWKS of the configured keys' public halves (empty for an HS256 secret).
    Jwks,
    /// Makes a new Ed25519 key in keys/ beside the configuration and lists it in
    /// public_pems (it verifies; `activate` makes it sign). Prints its kid.
    Add {
        /// Make it the signing key at once (one instance; a fleet stages it first).
        #[arg(long)]
        activate: bool,
    },
    /// Makes the staged key KID sign; the signing key so far moves to public_pems.
    Activate {
        /// The key's kid, as `keys add` printed it (or `keys jwks` shows it).
        // A thumbprint is base64url, so it may begin with `-`: it is a value, never a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Removes the key KID from public_pems: its tokens stop verifying.
    Retire {
        /// The key's kid.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jwt-gate: {error}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command, KeysCommand};

    /// RFC 7638 thumbprints are base64url: about one kid in 64 begins with `-`, and must still
    /// be read as the kid, not refused as an unknown flag.
    #[test]
    fn a_kid_beginning_with_a_hyphen_is_a_kid() {
        for verb in ["activate", "retire"] {
            let cli = Cli::try_parse_from(["jwt-gate", "keys", verb, "-q3bV9x"]).unwrap();
            let Command::Keys { command } = cli.command else {
                panic!("not a keys command");
            };
            let (KeysCommand::Activate { kid } | KeysCommand::Retire { kid }) = command else {
                panic!("not {verb}");
            };
            assert_eq!(kid, "-q3bV9x");
        }
    }
}
