//! A real OpenID provider for the tests: panva's oidc-provider, run by node through
//! `provider.mjs` (its configuration), on 127.0.0.1.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common;

/// The client `provider.mjs` registers for the `client_credentials` grant.
const CLIENT_ID: &str = "gate-test";
const CLIENT_SECRET: &str = "a client secret for the tests only";

/// The resource servers (APIs) `provider.mjs` issues tokens for: a token's `aud` is the one
/// it was asked for.
pub const ORDERS: &str = "urn:jwt-gate:orders";
pub const BILLING: &str = "urn:jwt-gate:billing";

/// Where scripts/test.sh installs the provider (`JWT_GATE_OIDC_MODULES` overrides it).
fn modules() -> PathBuf {
    std::env::var_os("JWT_GATE_OIDC_MODULES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oidc/node_modules"),
        PathBuf::from,
    )
}

/// Fails (never skips) when node or the package is missing, naming the install step.
fn check_installed() -> PathBuf {
    const INSTALL: &str = "scripts/test.sh installs it (its ensure_oidc_provider step: `npm ci \
                           --prefix target/oidc` with tests/oidc/package.json and its lock file)";
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|output| output.status.success()),
        "node is needed to run the OpenID provider these tests use and was not found on PATH \
         ({node:?}); {INSTALL}, after installing node and npm"
    );
    let modules = modules();
    assert!(
        modules.join("oidc-provider/package.json").is_file(),
        "oidc-provider is not installed in {}; {INSTALL}",
        modules.display()
    );
    modules
}

/// One running provider; killed when dropped.
pub struct Provider {
    child: Child,
    /// What its tokens carry in `iss`, and where its metadata is.
    pub issuer: String,
    pub addr: SocketAddr,
    alg: &'static str,
    keys_dir: PathBuf,
    /// Whether the key directory is this provider's to remove (a twin shares it).
    owns_keys: bool,
}

impl Provider {
    /// A provider signing with `alg` (`ES256` or `RS256`) and the keys `kids`, the first one
    /// signing; keys are made on first use, kept in a directory of this provider's own.
    pub fn start(alg: &'static str, kids: &[&str]) -> Self {
        let keys_dir = common::temp_dir(&format!("oidc-{}", alg.to_lowercase()));
        Self::launch(alg, keys_dir, 0, kids)
    }

    /// A second provider with this one's keys (same `kid`s, same material) but its own port,
    /// so its own issuer: its tokens differ from this one's in `iss` alone.
    pub fn twin(&self) -> Self {
        let kids = self.kids();
        let kids: Vec<&str> = kids.iter().map(String::as_str).collect();
        let mut twin = Self::launch(self.alg, self.keys_dir.clone(), 0, &kids);
        twin.owns_keys = false;
        twin
    }

    /// Stops the provider and starts it again on the same port, so with the same issuer, with
    /// the keys `kids` (the first one signing): a key rotation as its operator does it.
    pub fn restart(&mut self, kids: &[&str]) {
        self.stop();
        let port = self.addr.port();
        let mut restarted = Self::launch(self.alg, self.keys_dir.clone(), port, kids);
        assert_eq!(restarted.issuer, self.issuer);
        // The keys stay with the running one.
        restarted.owns_keys = std::mem::take(&mut self.owns_keys);
        drop(std::mem::replace(self, restarted));
    }

    /// The `kid`s this provider was started with.
    fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = std::fs::read_dir(&self.keys_dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect();
        kids.sort();
        kids
    }

    fn launch(alg: &'static str, keys_dir: PathBuf, port: u16, kids: &[&str]) -> Self {
        let modules = check_installed();
        let config = serde_json::json!({
            "modules": modules,
            "port": port,
            "alg": alg,
            "keys_dir": keys_dir,
            "kids": kids,
        });
        static LAUNCHES: AtomicUsize = AtomicUsize::new(0);
        let log = keys_dir.join(format!(
            "provider-{}.log",
            LAUNCHES.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("node")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs"))
            .arg(config.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("node could not be started");
        // One line once it listens; nothing (end of file) when it failed to start.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Ok(ready) = serde_json::from_str::<serde_json::Value>(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the OpenID provider did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let port = u16::try_from(ready["port"].as_u64().unwrap()).unwrap();
        Self {
            child,
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            alg,
            keys_dir,
            owns_keys: true,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An access token from the `client_credentials` grant, for `resource` with `scope`.
    pub async fn token(&self, scope: &str, resource: &str) -> String {
        let answer = common::post_form(
            self.addr,
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("scope", scope),
                ("resource", resource),
            ],
        )
        .await;
        assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.text);
        answer.json()["access_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
        if self.owns_keys {
            let _ = std::fs::remove_dir_all(&self.keys_dir);
        }
    }
}
