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

/// A verifier trusting exactly the keys `keys jwks` prints for `config`.
fn verifier_of(config: &str) -> jwt_gate::TokenVerifier {
    let printed = run(jwt_gate(), &["--config", config, "keys", "jwks"]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&printed.stdout).unwrap();
    let mut keys = set
        .keys
        .iter()
        .map(|jwk| jwt_gate::Key::from_jwk(jwk).unwrap());
    let all = jwt_gate::Keys::new(keys.next().unwrap()).unwrap();
    for key in keys {
        all.add(key).unwrap();
    }
    jwt_gate::TokenVerifier::builder(all)
        .validation(
            jwt_gate::Validation::default()
                .issuer("jwt-gate")
                .audience("jwt-gate"),
        )
        .build()
}

fn kids(config: &str) -> Vec<String> {
    let printed = run(jwt_gate(), &["--config", config, "keys", "jwks"]);
    let jwks: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn mint(config: &str) -> String {
    let minted = run(jwt_gate(), &["--config", config, "token", "alice"]);
    assert!(minted.status.success(), "{}", stderr(&minted));
    String::from_utf8(minted.stdout).unwrap().trim().to_owned()
}

fn kid_of(token: &str) -> String {
    crate::common::peek_header(token)["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn keys_roll_through_add_activate_and_retire_keeping_tokens_valid_until_retired() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("rotate");
    let pem = run(jwt_gate(), &["keys", "generate", "--ed25519"]);
    std::fs::write(dir.0.join("signing.pem"), &pem.stdout).unwrap();
    let file = dir.write(
        "gate.toml",
        "allow_dev_tokens = true\n\n[keys]\nalgorithm = \"EdDSA\"\n# the signing key\nprivate_pem = \"signing.pem\"   # kept as written\n",
    );
    // The file may hold passwords: kept to its owner and group, and rewritten so.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = file.to_str().unwrap();
    let before = mint(config);
    let first = kid_of(&before);
    assert_eq!(kids(config), [first.as_str()]);

    // Staged: every instance verifies the new key; the old one still signs.
    let added = run(jwt_gate(), &["--config", config, "keys", "add"]);
    assert!(added.status.success(), "{}", stderr(&added));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "rewritten with its own permissions");
    let second = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("# the signing key\nprivate_pem = \"signing.pem\"   # kept as written"),
        "{text}"
    );
    assert!(
        text.contains(&format!("public_pems = [\"keys/{second}.pub.pem\"]")),
        "{text}"
    );
    let mode = std::fs::metadata(dir.0.join(format!("keys/{second}.pem")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is the owner's alone");
    assert_eq!(kids(config), [first.clone(), second.clone()]);
    assert_eq!(kid_of(&mint(config)), first);

    // Activated: the new key signs, the old one still verifies what it signed.
    let activated = run(
        jwt_gate(),
        &["--config", config, "keys", "activate", &second],
    );
    assert!(activated.status.success(), "{}", stderr(&activated));
    let after = mint(config);
    assert_eq!(kid_of(&after), second);
    let verifier = verifier_of(config);
    assert!(verifier.verify(&before).is_ok());
    assert!(verifier.verify(&after).is_ok());

    // The signing key cannot be retired; the old one can, and its tokens then fail.
    let refused = run(jwt_gate(), &["--config", config, "keys", "retire", &second]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("signing key"),
        "{}",
        stderr(&refused)
    );
    let retired = run(jwt_gate(), &["--config", config, "keys", "retire", &first]);
    assert!(retired.status.success(), "{}", stderr(&retired));
    assert_eq!(kids(config), [second.as_str()]);
    let verifier = verifier_of(config);
    assert!(verifier.verify(&before).is_err());
    assert!(verifier.verify(&after).is_ok());
    let unknown = run(
        jwt_gate(),
        &["--config", config, "keys", "retire", "no-such-kid"],
    );
    assert_eq!(unknown.status.code(), Some(2));
}
