//! The `jwt-gate` program from outside (feature `cli`): its configuration, its commands, and
//! `forward-auth` behind a real nginx, each over real HTTP on 127.0.0.1.

// A test binary exports nothing: `pub` marks what its sibling modules use.
#![allow(unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod config;
mod fleet;
mod forward_auth;
mod grpc;
mod issuers;
mod nginx;
mod ops;
mod proxy;
mod tls;
mod token_sources;
mod websocket;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::HeaderMap;
use axum::routing::any;
use axum::{Json, Router};

/// The HS256 secret the tests' configurations read from `JWT_GATE_SECRET`.
pub const SECRET: &str = "the cli test secret, at least 32 bytes";

/// A fresh directory under the system's temporary one, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "jwt-gate-cli-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// Writes `text` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `jwt-gate` with none of the settings the test's own environment may carry, and the
/// tests' secret.
pub fn jwt_gate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jwt-gate"));
    for (name, _) in std::env::vars() {
        if name.starts_with("JWT_GATE_") {
            command.env_remove(name);
        }
    }
    command.env("JWT_GATE_SECRET", SECRET);
    // Refusals are logged at info; the tests make many on purpose.
    command.env("JWT_GATE_LOG", "warn");
    command.stdin(Stdio::null());
    command
}

/// Runs `jwt-gate args…` to completion.
pub fn run(mut command: Command, args: &[&str]) -> Output {
    // A command expected to exit that starts serving instead (a bad configuration let through)
    // must fail the test, not hang it.
    let child = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jwt-gate runs");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(output) => output.expect("jwt-gate runs"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("jwt-gate {args:?} did not exit within 60 s");
        }
    }
}

/// A running `jwt-gate` server, killed when dropped.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub line: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `jwt-gate --config <config> <command> --listen 127.0.0.1:0` and reads the line
/// saying where it listens (`http://` or `https://`).
pub fn start(config: &Path, command: &str) -> Server {
    let mut program = jwt_gate();
    program.stderr(Stdio::inherit());
    start_with(program, config, command)
}

/// As [`start`], from `program` as the test prepared it (its environment, its stderr).
pub fn start_with(mut program: Command, config: &Path, command: &str) -> Server {
    let mut child = program
        .args([
            "--config",
            config.to_str().unwrap(),
            command,
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("jwt-gate starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split([',', ';', ' ', '\n']).next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    Server { child, addr, line }
}

/// The upstream: answers every path with the identity headers it received, as JSON.
pub async fn upstream() -> SocketAddr {
    async fn identity(headers: HeaderMap) -> Json<serde_json::Value> {
        let seen: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-auth-"))
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().into()))
            .collect();
        Json(seen.into())
    }
    common::serve(Router::new().fallback(any(identity))).await
}

/// A token for `sub` from `jwt-gate token` with `config` (which allows dev tokens).
pub fn mint(config: &Path, sub: &str) -> String {
    let minted = run(
        jwt_gate(),
        &["--config", config.to_str().unwrap(), "token", sub],
    );
    assert!(minted.status.success(), "{}", stderr(&minted));
    String::from_utf8(minted.stdout).unwrap().trim().to_owned()
}

/// The stderr of a finished run, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
