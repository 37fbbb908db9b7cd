//! The security defaults at their exact limits: the 24 h maximum lifetime, the leeway on
//! `exp`, `nbf` and `iat`, `Validation::algorithms` narrowing, and an `alg` header that
//! disagrees with the key. Each case sits one second (or one algorithm) either side of
//! the line, so moving the line by one fails a test.

use crate::common;

use common::*;
use jsonwebtoken::EncodingKey;
use jwt_gate::clock::ManualClock;
use jwt_gate::{Algorithm, AuthError, Claims, Key, Keys, TokenVerifier, Validation};
use serde_json::json;

/// A fixed "now", far from any boundary of the arithmetic.
const NOW: u64 = 1_800_000_000;
const DAY: u64 = 24 * 60 * 60;
/// The documented default leeway.
const LEEWAY: u64 = 30;

/// A default-policy verifier whose clock reads [`NOW`]; the cache is off so every call
/// takes the full path.
fn verifier(keys: &Keys, validation: Validation) -> TokenVerifier {
    TokenVerifier::builder(keys.clone())
        .validation(validation)
        .clock(ManualClock::new(NOW))
        .cache_capacity(0)
        .build()
}

fn verify(keys: &Keys, claims: &Claims) -> Result<(), AuthError> {
    let token = keys.sign(claims).unwrap();
    verifier(keys, Validation::default())
        .verify(&token)
        .map(|_| ())
}

#[test]
fn the_default_policy_is_the_documented_one() {
    let validation = Validation::default();
    assert_eq!(validation.leeway.as_secs(), LEEWAY);
    assert_eq!(validation.max_lifetime.map(|max| max.as_secs()), Some(DAY));
}

#[test]
fn a_lifetime_of_exactly_24_hours_is_accepted_and_one_second_more_refused() {
    let keys = keys();
    assert_eq!(verify(&keys, &Claims::new("alice", NOW, NOW + DAY)), Ok(()));
    assert_eq!(
        verify(&keys, &Claims::new("alice", NOW, NOW + DAY + 1)),
        Err(AuthError::LifetimeTooLong)
    );
    // The lifetime is `exp - iat`, wherever the pair sits in time.
    assert_eq!(
        verify(&keys, &Claims::new("alice", NOW - 600, NOW - 600 + DAY)),
        Ok(())
    );
    assert_eq!(
        verify(&keys, &Claims::new("alice", NOW - 600, NOW - 600 + DAY + 1)),
        Err(AuthError::LifetimeTooLong)
    );
}

#[test]
fn exp_is_accepted_up_to_the_leeway_and_refused_one_second_later() {
    let keys = keys();
    let expired_at = |exp| Claims::new("alice", NOW - 900, exp);
    assert_eq!(verify(&keys, &expired_at(NOW)), Ok(()));
    assert_eq!(verify(&keys, &expired_at(NOW - LEEWAY)), Ok(()));
    assert_eq!(
        verify(&keys, &expired_at(NOW - LEEWAY - 1)),
        Err(AuthError::Expired)
    );
}

#[test]
fn nbf_is_accepted_up_to_the_leeway_and_refused_one_second_later() {
    let keys = keys();
    let valid_from = |nbf| Claims::new("alice", NOW, NOW + 900).with_not_before(nbf);
    assert_eq!(verify(&keys, &valid_from(NOW + LEEWAY)), Ok(()));
    assert_eq!(
        verify(&keys, &valid_from(NOW + LEEWAY + 1)),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn iat_is_accepted_up_to_the_leeway_and_refused_one_second_later() {
    let keys = keys();
    let issued_at = |iat| Claims::new("alice", iat, iat + 900);
    assert_eq!(verify(&keys, &issued_at(NOW + LEEWAY)), Ok(()));
    assert_eq!(
        verify(&keys, &issued_at(NOW + LEEWAY + 1)),
        Err(AuthError::IssuedInTheFuture)
    );
}

#[test]
fn a_changed_leeway_moves_every_boundary_with_it() {
    let keys = keys();
    let validation = Validation {
        leeway: std::time::Duration::from_secs(5),
        ..Validation::default()
    };
    let verifier = verifier(&keys, validation);
    let check = |claims: &Claims| verifier.verify(&keys.sign(claims).unwrap()).map(|_| ());
    assert_eq!(check(&Claims::new("a", NOW - 900, NOW - 5)), Ok(()));
    assert_eq!(
        check(&Claims::new("a", NOW - 900, NOW - 6)),
        Err(AuthError::Expired)
    );
    assert_eq!(check(&Claims::new("a", NOW + 5, NOW + 900)), Ok(()));
    assert_eq!(
        check(&Claims::new("a", NOW + 6, NOW + 900)),
        Err(AuthError::IssuedInTheFuture)
    );
}

#[test]
fn algorithms_narrow_what_the_keys_would_accept() {
    // Two keys of one family, for two algorithms; the policy accepts only one of them.
    let hs256 = Keys::new(Key::hs256(SECRET).unwrap().with_kid("a")).unwrap();
    let hs512 = Keys::new(
        Key::hmac(Algorithm::HS512, [9u8; 64])
            .unwrap()
            .with_kid("b"),
    )
    .unwrap();
    let keys = Keys::new(Key::hs256(SECRET).unwrap().with_kid("a")).unwrap();
    keys.add(
        Key::hmac(Algorithm::HS512, [9u8; 64])
            .unwrap()
            .with_kid("b"),
    )
    .unwrap();
    let claims = Claims::new("alice", NOW, NOW + 900);
    let (token256, token512) = (hs256.sign(&claims).unwrap(), hs512.sign(&claims).unwrap());

    // Without narrowing both verify, so the refusal below is the narrowing's doing.
    let open = verifier(&keys, Validation::default());
    assert!(open.verify(&token256).is_ok());
    assert!(open.verify(&token512).is_ok());

    let narrowed = verifier(
        &keys,
        Validation {
            algorithms: Some(vec![Algorithm::HS512]),
            ..Validation::default()
        },
    );
    assert_eq!(
        narrowed.verify(&token256).map(|_| ()),
        Err(AuthError::WrongAlgorithm)
    );
    assert!(narrowed.verify(&token512).is_ok());
}

fn rsa_public_keys() -> Keys {
    Keys::new(Key::from_public_pem(Algorithm::RS256, &pem("rsa.pub.pem")).unwrap()).unwrap()
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused_by_the_algorithm_check() {
    // The classic confusion: the public key's PEM bytes used as an HMAC secret. The key pins
    // RS256, so the HMAC signature could never verify; the refusal must come earlier, from
    // comparing the header's `alg` with the key's, before any signature is looked at.
    let forged = {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(
            &header,
            &Claims::new("mallory", NOW, NOW + 900),
            &EncodingKey::from_secret(&pem("rsa.pub.pem")),
        )
        .unwrap()
    };
    let verifier = verifier(&rsa_public_keys(), Validation::default());
    assert_eq!(
        verifier.verify(&forged).map(|_| ()),
        Err(AuthError::WrongAlgorithm)
    );
}

/// A token with this header, signed with the RSA private key under RS256 whatever the
/// header says.
fn signed_with_rs256(header: &serde_json::Value, claims: &Claims) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(serde_json::to_string(claims).unwrap().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_rsa_pem(&pem("rsa.pem")).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

#[test]
fn an_alg_header_that_disagrees_with_the_key_is_refused_even_with_a_valid_signature() {
    // Here only the algorithm check stands between the token and acceptance: the signature
    // is a genuine RS256 one by the key's owner, over a header that says HS256. A gate that
    // ignored the header's `alg` (or trusted it) would accept it.
    let claims = Claims::new("mallory", NOW, NOW + 900);
    let verifier = verifier(&rsa_public_keys(), Validation::default());
    let lying = signed_with_rs256(&json!({"alg": "HS256", "typ": "at+jwt"}), &claims);
    assert_eq!(
        verifier.verify(&lying).map(|_| ()),
        Err(AuthError::WrongAlgorithm)
    );
    // The same signing over the honest header verifies: the key and the signing are sound.
    let honest = signed_with_rs256(&json!({"alg": "RS256", "typ": "at+jwt"}), &claims);
    assert!(verifier.verify(&honest).is_ok());
}

#[test]
fn a_header_that_is_not_an_object_is_malformed() {
    // RFC 7515 §4: the header is a JSON object. serde would fill the fields of an array by
    // place (alg, kid, typ), a reading other parsers refuse.
    let claims = Claims::new("mallory", NOW, NOW + 900);
    let verifier = verifier(&rsa_public_keys(), Validation::default());
    let array = signed_with_rs256(&json!(["RS256", null, "at+jwt"]), &claims);
    assert_eq!(
        verifier.verify(&array).map(|_| ()),
        Err(AuthError::Malformed)
    );
}

#[test]
fn a_crit_header_is_refused_whatever_it_holds_null_included() {
    // RFC 7515 §4.1.11: a recipient that does not understand a listed extension must refuse
    // the token, and `crit` may only be a list. A parser that reads `null` as "absent" would
    // let a header through that another parser refuses.
    let claims = Claims::new("mallory", NOW, NOW + 900);
    let verifier = verifier(&rsa_public_keys(), Validation::default());
    for crit in [
        json!(null),
        json!([]),
        json!(["exp"]),
        json!("exp"),
        json!({}),
    ] {
        let token = signed_with_rs256(
            &json!({"alg": "RS256", "typ": "at+jwt", "crit": crit}),
            &claims,
        );
        assert_eq!(
            verifier.verify(&token).map(|_| ()),
            Err(AuthError::CriticalHeader),
            "crit: {crit}"
        );
    }
    let honest = signed_with_rs256(&json!({"alg": "RS256", "typ": "at+jwt"}), &claims);
    assert!(verifier.verify(&honest).is_ok());
}
