//! Password hashing as a login sees it: the unknown-user path does real work, and legacy
//! bcrypt hashes verify once and are upgraded to argon2id.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use http::StatusCode;
use jwt_gate::service::{Argon2Hasher, AuthService, HashError, PasswordHasher, Verdict};
use jwt_gate::store::{MemoryUserStore, User, UserStore};

/// Argon2, with a record of every hash each verification was run against.
#[derive(Clone, Default)]
struct RecordingHasher {
    real: Argon2Hasher,
    verified_against: Arc<Mutex<Vec<String>>>,
}

impl PasswordHasher for RecordingHasher {
    fn hash(&self, password: &str) -> Result<String, HashError> {
        self.real.hash(password)
    }

    fn verify(&self, password: &str, hash: &str) -> Verdict {
        let verdict = self.real.verify(password, hash);
        self.verified_against.lock().unwrap().push(hash.to_owned());
        verdict
    }
}

#[tokio::test]
async fn an_unknown_user_costs_a_full_argon2_verification() {
    let hasher = RecordingHasher::default();
    let stack = stack_with({
        let hasher = hasher.clone();
        |auth| auth.password_hasher(hasher)
    })
    .await;
    register(stack.addr, "alice", PASSWORD).await;
    let alice_hash = stack
        .users
        .find_user("alice")
        .await
        .unwrap()
        .unwrap()
        .password_hash;

    assert_eq!(
        login(stack.addr, "alice", "wrong password").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        login(stack.addr, "mallory", "wrong password").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        login(stack.addr, "mallory", "another guess").await.status,
        StatusCode::BAD_REQUEST
    );

    let verified = hasher.verified_against.lock().unwrap().clone();
    assert_eq!(verified.len(), 3, "one verification per login, user or not");
    assert_eq!(verified[0], alice_hash);
    for dummy in &verified[1..] {
        assert_ne!(*dummy, alice_hash);
        // Same algorithm and parameters as a real user's hash: same work.
        let params = |hash: &str| hash.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(dummy), params(&alice_hash));
        assert!(dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }
}

fn legacy_user(hash: String) -> User {
    User {
        key: "legacy".into(),
        username: "Legacy".into(),
        email: "legacy@example.com".into(),
        password_hash: hash,
        roles: Vec::new(),
        scopes: Vec::new(),
    }
}

async fn stored_hash(users: &MemoryUserStore) -> String {
    users
        .find_user("legacy")
        .await
        .unwrap()
        .unwrap()
        .password_hash
}

#[tokio::test]
async fn legacy_bcrypt_hashes_verify_and_are_upgraded_on_login() {
    for version in [
        bcrypt::Version::TwoA,
        bcrypt::Version::TwoB,
        bcrypt::Version::TwoY,
    ] {
        let (verifier, _) = verifier();
        let users = MemoryUserStore::new();
        // As the FastAPI app stored them (passlib's default cost is 12; 4 keeps the test quick).
        let hash = bcrypt::hash_with_result(PASSWORD, 4)
            .unwrap()
            .format_for_version(version);
        let prefix = hash[..4].to_owned();
        assert_eq!(
            users.create_user(legacy_user(hash.clone())).await.unwrap(),
            jwt_gate::store::Registration::Created
        );
        let addr = serve(app(
            verifier.clone(),
            AuthService::new(verifier, users.clone()),
        ))
        .await;

        assert_eq!(
            login(addr, "legacy", "wrong password").await.status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            stored_hash(&users).await,
            hash,
            "a failed login changes nothing"
        );

        let reply = login(addr, "Legacy", PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{prefix}");
        let upgraded = stored_hash(&users).await;
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{upgraded}"
        );
        assert_eq!(
            Argon2Hasher::default().verify(PASSWORD, &upgraded),
            Verdict::Match
        );

        assert_eq!(login(addr, "legacy", PASSWORD).await.status, StatusCode::OK);
        assert_eq!(
            stored_hash(&users).await,
            upgraded,
            "a current hash is left alone"
        );
    }
}

#[tokio::test]
async fn bcrypts_72_byte_truncation_is_not_inherited() {
    let long = "a".repeat(72) + "-and-then-some";
    // bcrypt::hash reads only the first 72 bytes, as legacy apps did.
    let hash = bcrypt::hash(&long, 4).unwrap();
    assert!(bcrypt::verify("a".repeat(72) + "-anything-else", &hash).unwrap());

    let (verifier, _) = verifier();
    let users = MemoryUserStore::new();
    users.create_user(legacy_user(hash)).await.unwrap();
    let addr = serve(app(verifier.clone(), AuthService::new(verifier, users))).await;
    let other_suffix = "a".repeat(72) + "-anything-else";
    assert_eq!(
        login(addr, "legacy", &other_suffix).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn the_default_hasher_meets_the_minimum_parameters() {
    let hash = Argon2Hasher::default().hash("a password").unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(Argon2Hasher::with_params(4096, 1, 1).is_none());
}

// One password in three encodings: precomposed (NFC), decomposed (NFD) and full-width.
const NFC: &str = "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e";
const NFD: &str = "Cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
const FULL_WIDTH: &str = "\u{ff23}af\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e";

#[tokio::test]
async fn a_password_logs_in_however_its_accents_were_encoded() {
    let stack = stack().await;
    assert_eq!(
        register(stack.addr, "zoe", NFC).await.status,
        StatusCode::CREATED
    );
    for (form, typed) in [("NFC", NFC), ("NFD", NFD), ("full-width", FULL_WIDTH)] {
        assert_eq!(
            login(stack.addr, "zoe", typed).await.status,
            StatusCode::OK,
            "{form}"
        );
    }
    assert_eq!(
        login(stack.addr, "zoe", "Cafe creme brulee").await.status,
        StatusCode::BAD_REQUEST,
        "normalising is not stripping accents"
    );
}

/// A login with `typed` upgrades the stored hash; the upgraded hash is of the normalised
/// password, so the same password in another encoding logs in from then on.
async fn upgrades_to_the_normalised_form(legacy_hash: String) {
    let (verifier, _) = verifier();
    let users = MemoryUserStore::new();
    users
        .create_user(legacy_user(legacy_hash.clone()))
        .await
        .unwrap();
    let addr = serve(app(
        verifier.clone(),
        AuthService::new(verifier, users.clone()),
    ))
    .await;
    assert_eq!(login(addr, "legacy", NFD).await.status, StatusCode::OK);
    let upgraded = stored_hash(&users).await;
    assert_ne!(upgraded, legacy_hash);
    assert!(upgraded.starts_with("$argon2id$"), "{upgraded}");
    for typed in [NFC, NFD] {
        assert_eq!(login(addr, "legacy", typed).await.status, StatusCode::OK);
    }
    assert_eq!(stored_hash(&users).await, upgraded, "upgraded once");
}

#[tokio::test]
async fn a_legacy_bcrypt_hash_of_the_password_as_typed_is_upgraded_to_the_normalised_form() {
    // The FastAPI app hashed what a decomposing keyboard sent, byte for byte.
    upgrades_to_the_normalised_form(bcrypt::hash(NFD, 4).unwrap()).await;
}

#[tokio::test]
async fn an_argon2_hash_made_before_normalisation_verifies_and_is_replaced() {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    // Current parameters, but of the password as typed: only the normalisation is missing.
    let hash = argon2::Argon2::default()
        .hash_password(NFD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    upgrades_to_the_normalised_form(hash).await;
}
