//! The configuration file: the examples load, and every error names the file, the line and
//! the key, and exits with status 2.

use std::path::Path;

use crate::{jwt_gate, run, stderr, TempDir};

fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/config/{name}")),
    )
    .unwrap()
}

#[test]
fn every_example_config_loads_and_prints_without_secrets() {
    let dir = TempDir::new("examples");
    // fleet.toml names a PEM key beside itself: make one, as its comment says.
    let pem = run(jwt_gate(), &["keys", "generate", "--ed25519"]);
    assert!(pem.status.success(), "{}", stderr(&pem));
    std::fs::write(dir.0.join("signing.pem"), &pem.stdout).unwrap();
    let entries =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config")).unwrap();
    let mut loaded = 0;
    for entry in entries {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".toml") {
            continue;
        }
        let file = dir.write(&name, &example(&name));
        let output = run(jwt_gate(), &["check-config", file.to_str().unwrap()]);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let shown = String::from_utf8(output.stdout).unwrap();
        assert!(!shown.contains(crate::SECRET), "{name} shows the secret");
        assert!(
            shown.contains("listen = "),
            "{name}: every default spelled out:\n{shown}"
        );
        loaded += 1;
    }
    assert!(loaded >= 3, "the examples were found");
}

#[test]
fn check_config_redacts_database_passwords_and_applies_the_environment() {
    let dir = TempDir::new("redact");
    let file = dir.write(
        "gate.toml",
        "[users]\npostgres_url = \"postgres://app:hunter22@db.internal:5432/users\"\n\n\
         [revocation]\nredis_url = \"redis://:redispass@127.0.0.1:6379/0\"\n\n\
         [[issuers]]\nissuer = \"https://idp.example\"\naudience = \"api\"\n\
         jwks_url = \"https://reader:jwkspass@idp.example/jwks\"\n",
    );
    let output = run(
        {
            let mut command = jwt_gate();
            command.env("JWT_GATE_LISTEN", "127.0.0.1:9999");
            command
        },
        &["check-config", file.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(
        !shown.contains("hunter22") && !shown.contains("redispass") && !shown.contains("jwkspass"),
        "{shown}"
    );
    assert!(
        shown.contains("postgres://app:***@db.internal:5432/users"),
        "{shown}"
    );
    assert!(
        shown.contains("listen = \"127.0.0.1:9999\""),
        "the environment wins: {shown}"
    );
    // A flag wins over the environment.
    let mut command = jwt_gate();
    command.env("JWT_GATE_LISTEN", "127.0.0.1:9999");
    let output = run(
        command,
        &[
            "--listen",
            "127.0.0.1:7777",
            "check-config",
            file.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains("listen = \"127.0.0.1:7777\""));
}

/// `jwt-gate check-config` on `text`: its status and its one line of error.
fn refused(text: &str) -> (Option<i32>, String, String) {
    let dir = TempDir::new("refused");
    let file = dir.write("gate.toml", text);
    let output = run(jwt_gate(), &["check-config", file.to_str().unwrap()]);
    (
        output.status.code(),
        stderr(&output),
        file.to_str().unwrap().to_owned(),
    )
}

#[test]
fn a_bad_redis_url_in_the_environment_is_refused_by_check_config_naming_the_variable() {
    let dir = TempDir::new("redis-env");
    let file = dir.write("gate.toml", "listen = \"127.0.0.1:8080\"\n");
    let mut command = jwt_gate();
    command.env("JWT_GATE_REDIS_URL", "http://:hunter2@127.0.0.1:6379");
    let output = run(command, &["check-config", file.to_str().unwrap()]);
    let error = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{error}");
    assert!(
        error.starts_with("jwt-gate: JWT_GATE_REDIS_URL: not a Redis URL"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn an_unknown_key_is_refused_naming_file_line_and_key() {
    let (status, error, file) = refused(
        "listen = \"127.0.0.1:8080\"\n\n[validation]\nissuer = \"me\"\nleway_seconds = 5\n",
    );
    assert_eq!(status, Some(2), "{error}");
    assert!(
        error.starts_with(&format!(
            "jwt-gate: {file}:5:1: key `validation.leway_seconds`: unknown field `leway_seconds`"
        )),
        "{error}"
    );
    assert_eq!(error.trim_end().lines().count(), 1, "one line: {error}");
}

#[test]
fn bad_values_are_refused_with_status_2_and_their_place() {
    for (text, expected) in [
        (
            "[[routes]]\npath = \"/x\"\naccess = \"opn\"\n",
            ":3:10: key `routes.access`: unknown variant `opn`",
        ),
        ("listen = \"localhost:eighty\"\n", ":1:10: key `listen`:"),
        (
            "upstream = \"ftp://127.0.0.1\"\n",
            ":1:12: key `upstream`: not a usable upstream URL",
        ),
        (
            "[revocation]\nredis_url = \"http://:hunter2@127.0.0.1:6379\"\n",
            ":2:13: key `revocation.redis_url`: not a Redis URL",
        ),
        (
            "upstream = \"http://bob:hunter2@127.0.0.1:8000\"\n",
            ":1:12: key `upstream`: not a usable upstream URL: the URL may not hold a user or password",
        ),
        (
            "[[routes]]\npath = \"admin\"\naccess = \"open\"\n",
            ":2:8: key `routes.path`:",
        ),
        (
            "[[routes]]\npath = \"/a/../b\"\naccess = \"open\"\n",
            ":2:8: key `routes.path`:",
        ),
        (
            "[[forward_claims]]\nclaim = \"email\"\nheader = \"x-email\"\n",
            ":3:10: key `forward_claims.header`: \"x-email\" must start with \"x-auth-\"",
        ),
        (
            "[keys]\nalgorithm = \"HS999\"\n",
            ":2:13: key `keys.algorithm`:",
        ),
        (
            "[users]\nsqlite = \"a.db\"\npostgres_url = \"postgres://x\"\n",
            ":3:16: key `users.postgres_url`: users: give exactly one",
        ),
        (
            "[health]\nlive_path = \"/up\"\nready_path = \"/up\"\n",
            ":3:14: key `health.ready_path`: the readiness path is the liveness path",
        ),
        (
            "[[issuers]]\nissuer = \"https://\"\naudience = \"api\"\n",
            ":2:10: key `issuers.issuer`: \"https://\" is not an issuer URL",
        ),
        (
            "trusted_proxies = [\"10.0.0.5\", \"10.0.0.0/8\"]\n",
            ":1:19: key `trusted_proxies`: \"10.0.0.0/8\" is not an IP address",
        ),
        (
            "[health]\nlive_path = \"/readyz\"\n",
            ":2:13: key `health.live_path`: the readiness path is the liveness path",
        ),
        (
            "[[routes]]\npath = \"/a\"\ntimeout_seconds = 5\n\n[[routes]]\npath = \"/a\"\ntimeout_seconds = 9\n",
            ":6:8: key `routes.path`: \"/a\" has a route with `timeout_seconds` for these methods already",
        ),
        // Revocations are forgotten 300 s after their tokens expire: no longer leeway.
        (
            "[validation]\nleeway_seconds = 301\n",
            ":2:18: key `validation.leeway_seconds`: longer than the 300 s revocations are kept",
        ),
        // A route for no method, or a misspelt one, would protect nothing.
        (
            "[[routes]]\nmethods = []\npath = \"/admin/*\"\nroles = [\"admin\"]\n",
            ":2:11: key `routes.methods`: no method: leave `methods` out",
        ),
        (
            "[[routes]]\nmethods = [\"GET\", \"DELET\"]\npath = \"/a\"\nroles = [\"admin\"]\n",
            ":2:11: key `routes.methods`: \"DELET\" is not a registered HTTP method",
        ),
        (
            "[[routes]]\nmethods = [\"delete\"]\npath = \"/a\"\nroles = [\"admin\"]\n",
            ":2:11: key `routes.methods`: \"delete\" is not a registered HTTP method",
        ),
        (
            "[[routes]]\nmethods = [\"GET\", \"POST\"]\npath = \"/a/*\"\naccess = \"open\"\n\n\
             [[routes]]\nmethods = [\"POST\"]\npath = \"/a/*\"\nroles = [\"x\"]\naccess = \"required\"\n",
            ":8:8: key `routes.path`: \"/a/*\" has a route with `access` for these methods already",
        ),
    ] {
        let (status, error, file) = refused(text);
        assert_eq!(status, Some(2), "{text}: {error}");
        assert!(error.starts_with(&format!("jwt-gate: {file}")), "{error}");
        assert!(
            error.contains(expected),
            "{text}: expected {expected:?} in {error}"
        );
        assert_eq!(error.trim_end().lines().count(), 1, "one line: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
    // A plain-http upstream on another host is fine.
    let (status, error, _) = refused("upstream = \"http://10.1.2.3:8000\"\n");
    assert_eq!(status, Some(0), "{error}");
    // One path, routes for other methods (a route for some methods beats one for all), and
    // routes that add up (an access beside a timeout, scopes beside roles).
    let (status, error, _) = refused(
        "[[routes]]\npath = \"/b\"\naccess = \"open\"\n\n[[routes]]\npath = \"/b\"\ntimeout_seconds = 5\n\n\
         [[routes]]\npath = \"/c/*\"\nscopes = [\"s\"]\n\n[[routes]]\npath = \"/c/*\"\nroles = [\"r\"]\n",
    );
    assert_eq!(status, Some(0), "{error}");
    let (status, error, _) = refused(
        "[[routes]]\npath = \"/a\"\naccess = \"open\"\n\n[[routes]]\nmethods = [\"POST\"]\n\
         path = \"/a\"\naccess = \"required\"\n\n[[routes]]\nmethods = [\"DELETE\"]\npath = \"/a\"\n\
         roles = [\"admin\"]\n",
    );
    assert_eq!(status, Some(0), "{error}");
}

#[test]
fn a_short_or_missing_secret_is_refused_without_echoing_it() {
    let dir = TempDir::new("secret");
    let file = dir.write("gate.toml", "");
    let mut command = jwt_gate();
    command.env("JWT_GATE_SECRET", "too short a secret");
    let output = run(command, &["check-config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("JWT_GATE_SECRET"),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("too short a secret"),
        "never echoed"
    );
    let mut command = jwt_gate();
    command.env_remove("JWT_GATE_SECRET");
    let output = run(command, &["check-config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("JWT_GATE_SECRET is not set"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_secret_pasted_as_secret_env_is_refused_without_echoing_it() {
    let dir = TempDir::new("secret-env");
    let pasted = "tn4zFYgIbt38v2l80RLDyo_qKgF5FbqPKrBx1mWq9sZt0aYcVuE3hR7dLkNpXwJ2";
    let file = dir.write("gate.toml", &format!("[keys]\nsecret_env = \"{pasted}\"\n"));
    let output = run(jwt_gate(), &["check-config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let (out, error) = (String::from_utf8_lossy(&output.stdout), stderr(&output));
    assert!(error.contains("gate.toml:2:"), "{error}");
    assert!(error.contains("secret_env"), "{error}");
    assert!(
        !error.contains(pasted) && !out.contains(pasted),
        "echoed: {error}{out}"
    );
    // A name is still a name.
    let file = dir.write("named.toml", "[keys]\nsecret_env = \"MY_GATE_SECRET_2\"\n");
    let mut command = jwt_gate();
    command.env(
        "MY_GATE_SECRET_2",
        "a secret of thirty-two bytes or more, surely",
    );
    let output = run(command, &["check-config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn a_metrics_listener_on_the_public_address_is_refused_at_start() {
    for (text, clash) in [
        (
            "listen = \"127.0.0.1:18080\"\n[metrics]\nlisten = \"127.0.0.1:18080\"\n",
            true,
        ),
        // The default listener, 127.0.0.1:8080, is inside 0.0.0.0:8080.
        ("[metrics]\nlisten = \"0.0.0.0:8080\"\n", true),
        (
            "listen = \"127.0.0.1:18080\"\n[metrics]\nlisten = \"127.0.0.1:9300\"\n",
            false,
        ),
    ] {
        let (status, error, _) = refused(text);
        if clash {
            assert_eq!(status, Some(2), "{text}");
            assert!(error.contains("metrics.listen"), "{error}");
        } else {
            assert_eq!(status, Some(0), "{text}: {error}");
        }
    }
    // The address the environment gives the main listener counts, not the file's.
    let dir = TempDir::new("metrics-env");
    let file = dir.write("gate.toml", "[metrics]\nlisten = \"127.0.0.1:9300\"\n");
    let mut command = jwt_gate();
    command.env("JWT_GATE_LISTEN", "127.0.0.1:9300");
    let output = run(command, &["check-config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("metrics.listen"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_reads_the_tls_files_as_proxy_would() {
    let dir = TempDir::new("check-tls");
    dir.write("cert.pem", "not a certificate\n");
    dir.write("key.pem", "not a key\n");
    let config = dir.write(
        "gate.toml",
        "[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
    );
    let output = run(jwt_gate(), &["check-config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("gate.toml:2:"), "{error}");
}

#[test]
fn a_short_secret_file_is_refused_at_the_line_that_names_it() {
    let dir = TempDir::new("short-secret-file");
    dir.write("short.key", "eight by\n");
    let config = dir.write(
        "gate.toml",
        "upstream = \"http://127.0.0.1:9\"\n\n[keys]\nsecret_file = \"short.key\"\n",
    );
    let output = run(jwt_gate(), &["check-config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let said = stderr(&output);
    assert!(
        said.contains("gate.toml:4:15: key `keys.secret_file`: short.key: an HS256 secret needs at least 32 bytes, got 8"),
        "{said}"
    );
    assert!(
        !said.contains("eight by"),
        "the secret is never shown: {said}"
    );
}
