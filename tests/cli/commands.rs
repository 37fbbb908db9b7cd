//! `token` and `keys`: development tokens only when allowed, keys that work.

use crate::{jwt_gate, run, stderr, TempDir};

#[test]
fn token_refuses_unless_the_config_or_dev_allows_it() {
    let dir = TempDir::new("token");
    let config = dir.write("gate.toml", "");
    let config = config.to_str().unwrap();
    let refused = run(jwt_gate(), &["--config", config, "token", "alice"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stdout.is_empty(), "no token printed");
    assert!(
        stderr(&refused).contains("allow_dev_tokens"),
        "{}",
        stderr(&refused)
    );
    let minted = run(jwt_gate(), &["--config", config, "token", "alice", "--dev"]);
    assert!(minted.status.success(), "{}", stderr(&minted));
    let token = String::from_utf8(minted.stdout).unwrap();
    let keys = jwt_gate::Keys::hs256(crate::SECRET).unwrap();
    // Issued for the program's default issuer and audience, which it requires.
    let verifier = jwt_gate::TokenVerifier::builder(keys)
        .validation(
            jwt_gate::Validation::default()
                .issuer("jwt-gate")
                .audience("jwt-gate"),
        )
        .build();
    assert_eq!(verifier.verify(token.trim()).unwrap().sub, "alice");
}

#[test]
fn generated_keys_load_and_publish_their_jwks() {
    let secret = run(jwt_gate(), &["keys", "generate"]);
    assert!(secret.status.success());
    let secret = String::from_utf8(secret.stdout).unwrap();
    assert!(jwt_gate::Keys::hs256(secret.trim()).is_ok());

    let dir = TempDir::new("keys");
    let pem = run(jwt_gate(), &["keys", "generate", "--ed25519"]);
    std::fs::write(dir.0.join("signing.pem"), &pem.stdout).unwrap();
    let config = dir.write(
        "gate.toml",
        "[keys]\nalgorithm = \"EdDSA\"\nprivate_pem = \"signing.pem\"\n",
    );
    let jwks = run(
        jwt_gate(),
        &["--config", config.to_str().unwrap(), "keys", "jwks"],
    );
    assert!(jwks.status.success(), "{}", stderr(&jwks));
    let jwks: serde_json::Value = serde_json::from_slice(&jwks.stdout).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private key");
}
