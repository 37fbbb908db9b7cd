//! JWKS documents: what an issuer publishes, and what a verifier accepts from one.

use jsonwebtoken::jwk::Jwk;
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::{Algorithm, AuthError, Claims, Key, KeyError, Keys, TokenVerifier};

const CASES: [(Algorithm, &str, &str); 4] = [
    (
        Algorithm::RS256,
        include_str!("../keys/rsa.pem"),
        include_str!("../keys/rsa.pub.pem"),
    ),
    (
        Algorithm::ES256,
        include_str!("../keys/p256.pem"),
        include_str!("../keys/p256.pub.pem"),
    ),
    (
        Algorithm::ES384,
        include_str!("../keys/p384.pem"),
        include_str!("../keys/p384.pub.pem"),
    ),
    (
        Algorithm::EdDSA,
        include_str!("../keys/ed25519.pem"),
        include_str!("../keys/ed25519.pub.pem"),
    ),
];

fn token(keys: &Keys) -> String {
    let now = SystemClock.now();
    keys.sign(&Claims::new("alice", now, now + 600)).unwrap()
}

#[test]
fn a_published_key_verifies_the_issuers_tokens_elsewhere() {
    for (algorithm, private, _) in CASES {
        let issuer = Keys::new(
            Key::from_private_pem(algorithm, private.as_bytes())
                .unwrap()
                .with_kid("a1"),
        )
        .unwrap();
        let document = serde_json::to_string(&issuer.jwks()).unwrap();

        let published: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&document).unwrap();
        let key = Key::from_jwk(&published.keys[0]).unwrap();
        assert_eq!((key.kid(), key.algorithm()), (Some("a1"), algorithm));
        assert!(
            !key.can_sign(),
            "{algorithm:?}: a published key can only verify"
        );

        let verifier = TokenVerifier::new(Keys::new(key).unwrap());
        assert_eq!(
            verifier.verify(&token(&issuer)).unwrap().sub,
            "alice",
            "{algorithm:?}"
        );
    }
}

#[test]
fn the_document_holds_public_parameters_only() {
    for (algorithm, private, _) in CASES {
        let issuer = Keys::new(
            Key::from_private_pem(algorithm, private.as_bytes())
                .unwrap()
                .with_kid("a1"),
        )
        .unwrap();
        let document = serde_json::to_value(issuer.jwks()).unwrap();
        let jwk = &document["keys"][0];
        for private_member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                jwk.get(private_member).is_none(),
                "{algorithm:?} leaks {private_member}"
            );
        }
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], "a1");
    }
}

#[test]
fn keys_built_from_public_pems_are_published_too() {
    for (algorithm, private, public) in CASES {
        let signer =
            Keys::new(Key::from_private_pem(algorithm, private.as_bytes()).unwrap()).unwrap();
        let verifying = Keys::new(
            Key::from_public_pem(algorithm, public.as_bytes())
                .unwrap()
                .with_kid("p"),
        )
        .unwrap();
        let published = verifying.jwks();
        assert_eq!(published.keys.len(), 1, "{algorithm:?}");
        let verifier =
            TokenVerifier::new(Keys::new(Key::from_jwk(&published.keys[0]).unwrap()).unwrap());
        assert!(verifier.verify(&token(&signer)).is_ok(), "{algorithm:?}");
    }
}

#[test]
fn every_key_of_a_rotating_set_is_published() {
    let issuer = Keys::new(
        Key::from_private_pem(Algorithm::EdDSA, include_bytes!("../keys/ed25519.pem"))
            .unwrap()
            .with_kid("old"),
    )
    .unwrap();
    issuer
        .add(
            Key::from_private_pem(Algorithm::EdDSA, include_bytes!("../keys/ed25519-b.pem"))
                .unwrap()
                .with_kid("new"),
        )
        .unwrap();
    let kids: Vec<_> = issuer
        .jwks()
        .keys
        .iter()
        .map(|jwk| jwk.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(kids, ["old", "new"]);
}

#[test]
fn hmac_sets_publish_nothing() {
    let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    assert!(keys.jwks().keys.is_empty());
}

fn jwk(json: serde_json::Value) -> Jwk {
    serde_json::from_value(json).unwrap()
}

fn ed25519_jwk() -> serde_json::Value {
    let keys = Keys::new(
        Key::from_private_pem(Algorithm::EdDSA, include_bytes!("../keys/ed25519.pem"))
            .unwrap()
            .with_kid("k"),
    )
    .unwrap();
    serde_json::to_value(&keys.jwks().keys[0]).unwrap()
}

#[test]
fn jwks_that_could_be_misused_are_refused() {
    let refused =
        |json: serde_json::Value| matches!(Key::from_jwk(&jwk(json)), Err(KeyError::InvalidJwk(_)));
    // A secret: HMAC is never configured from a document.
    assert!(refused(serde_json::json!({
        "kty": "oct", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"
    })));
    // An HMAC algorithm over a public key: the HS/RS confusion.
    let mut confused = ed25519_jwk();
    confused["alg"] = "HS256".into();
    assert!(refused(confused));
    // No alg: the algorithm would be a guess.
    let mut no_alg = ed25519_jwk();
    no_alg.as_object_mut().unwrap().remove("alg");
    assert!(refused(no_alg.clone()));
    assert!(Key::from_jwk_with_algorithm(&jwk(no_alg), Algorithm::EdDSA).is_ok());
    // An alg that does not fit the key type.
    let mut mismatched = ed25519_jwk();
    mismatched["alg"] = "ES256".into();
    assert!(refused(mismatched));
    // An encryption key.
    let mut encryption = ed25519_jwk();
    encryption["use"] = "enc".into();
    assert!(refused(encryption));
    // An explicit algorithm that the JWK contradicts.
    assert!(Key::from_jwk_with_algorithm(&jwk(ed25519_jwk()), Algorithm::RS256).is_err());
}

#[test]
fn short_rsa_moduli_are_refused() {
    let rsa = serde_json::to_value(
        &Keys::new(
            Key::from_private_pem(Algorithm::RS256, include_bytes!("../keys/rsa.pem")).unwrap(),
        )
        .unwrap()
        .jwks()
        .keys[0],
    )
    .unwrap();
    use base64::Engine as _;
    let with_modulus = |modulus: &[u8]| {
        let mut rsa = rsa.clone();
        rsa["n"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(modulus)
            .into();
        Key::from_jwk(&jwk(rsa))
    };
    // 1024 bits of modulus.
    assert!(matches!(
        with_modulus(&[0xc5; 128]),
        Err(KeyError::InvalidJwk(_))
    ));
    // 256 bytes whose top byte is 0x05: 2043 bits, counted in bits, not bytes.
    let mut short = [0xc5; 256];
    short[0] = 0x05;
    assert!(matches!(with_modulus(&short), Err(KeyError::InvalidJwk(_))));
    // A leading zero byte is no bit of the modulus: 2048 bits pass.
    let mut padded = vec![0];
    padded.extend([0xc5; 256]);
    assert!(with_modulus(&padded).is_ok());
}

#[test]
fn a_token_signed_with_another_key_of_the_same_kid_is_refused() {
    let published = Keys::new(
        Key::from_private_pem(Algorithm::EdDSA, include_bytes!("../keys/ed25519.pem"))
            .unwrap()
            .with_kid("k"),
    )
    .unwrap();
    let impostor = Keys::new(
        Key::from_private_pem(Algorithm::EdDSA, include_bytes!("../keys/ed25519-b.pem"))
            .unwrap()
            .with_kid("k"),
    )
    .unwrap();
    let verifier =
        TokenVerifier::new(Keys::new(Key::from_jwk(&published.jwks().keys[0]).unwrap()).unwrap());
    assert_eq!(
        verifier.verify(&token(&impostor)).unwrap_err(),
        AuthError::BadSignature
    );
}
