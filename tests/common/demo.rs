//! The demo server (`examples/server.rs`) as a separate process, as a user runs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The demo's executable, which the suite's runner builds before the tests with the suite's
/// own features (`cargo build --all-features --examples`, as `scripts/test.sh` does).
/// Building it from inside a test would rebuild the library with other features while
/// other tests run. It sits beside this test binary's directory (`<target>/debug/deps/..`),
/// so a custom target directory or profile is honoured.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let test_binary = std::env::current_exe().expect("the test binary has a path");
        let profile_dir = test_binary
            .parent()
            .and_then(Path::parent)
            .expect("test binaries live in <target>/<profile>/deps");
        let binary = profile_dir
            .join("examples")
            .join(format!("server{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.is_file(),
            "{} is missing: run `cargo build --all-features --examples` before these tests",
            binary.display()
        );
        binary
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
        "JWT_GATE_METRICS_ADDR",
        "JWT_GATE_FREE_REGISTRATIONS",
        "JWT_GATE_FREE_LOGIN_FAILURES",
        "JWT_GATE_CONNECTIONS_PER_ADDRESS",
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
