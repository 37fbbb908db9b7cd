//! The demo server (`examples/server.rs`) as a separate process, as a user runs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Builds the example once (a no-op when `cargo test` already did) and returns its path, as
/// cargo reports it, so a custom target directory is honoured.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args(["build", "--example", "server", "--message-format=json"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(output.status.success(), "the demo builds");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["target"]["name"] == "server")
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the demo's executable")
    })
}

/// A running demo, killed when dropped.
pub struct Demo {
    pub child: Child,
    pub addr: SocketAddr,
    /// The startup line, which names where users and revocations live.
    pub line: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo on an ephemeral port, with none of the settings the test's own environment may
/// carry (CI exports `DATABASE_URL` and `REDIS_URL` for the tests that want them).
pub fn demo_command() -> Command {
    let mut command = Command::new(server_binary());
    command.env("JWT_GATE_ADDR", "127.0.0.1:0");
    for name in [
        "JWT_GATE_DB",
        "JWT_GATE_SECRET",
        "JWT_GATE_ISSUER",
        "JWT_GATE_AUDIENCE",
        "DATABASE_URL",
        "JWT_GATE_PG_SCHEMA",
        "REDIS_URL",
        "JWT_GATE_REDIS_PREFIX",
    ] {
        command.env_remove(name);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Starts the demo and reads its one line saying where it listens.
pub fn start(mut command: Command) -> Demo {
    let mut child = command.spawn().expect("the demo starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("jwt-gate demo listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    Demo { child, addr, line }
}
