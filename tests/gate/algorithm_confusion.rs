//! RFC 8725 §2.1 and §3.1: the token never chooses how it is verified.

use crate::common;

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use jwt_gate::{Algorithm, Claims, JwtAuthLayer, Key, Keys};
use serde_json::json;

fn claims() -> Claims {
    Claims::new("mallory", now(), now() + 900)
}

fn rsa_keys() -> Keys {
    Keys::new(Key::from_public_pem(Algorithm::RS256, &pem("rsa.pub.pem")).unwrap()).unwrap()
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let addr = serve_gated(JwtAuthLayer::from_keys(rsa_keys())).await;
    // The classic attack: the public key is public, so use its PEM bytes as an HMAC secret.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(&pem("rsa.pub.pem")),
    )
    .unwrap();
    let reply = get_bearer(addr, "/protected", &forged).await;
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
}

#[tokio::test]
async fn alg_none_is_refused_in_every_spelling() {
    for keys in [keys(), rsa_keys()] {
        let addr = serve_gated(JwtAuthLayer::from_keys(keys)).await;
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = json!({"alg": alg, "typ": "at+jwt"});
            let payload = serde_json::to_value(claims()).unwrap();
            for signature in [&b""[..], b"x"] {
                let token = raw_token(&header, &payload, signature);
                let token = if signature.is_empty() {
                    token.trim_end_matches('.').to_owned() + "."
                } else {
                    token
                };
                let reply = get_bearer(addr, "/protected", &token).await;
                assert_eq!(reply.status, 401, "alg {alg}: {reply:?}");
            }
        }
    }
}

#[tokio::test]
async fn es256_all_zero_signature_is_refused() {
    let keys =
        Keys::new(Key::from_public_pem(Algorithm::ES256, &pem("p256.pub.pem")).unwrap()).unwrap();
    let addr = serve_gated(JwtAuthLayer::from_keys(keys)).await;
    // CVE-2022-21449 ("psychic signatures"): r = s = 0 must never verify.
    let header = json!({"alg": "ES256", "typ": "at+jwt"});
    let token = raw_token(
        &header,
        &serde_json::to_value(claims()).unwrap(),
        &[0u8; 64],
    );
    assert_eq!(get_bearer(addr, "/protected", &token).await.status, 401);
}

#[tokio::test]
async fn a_token_claiming_another_algorithm_of_the_same_family_is_refused() {
    // The key is RS256; a PS256 or RS512 header must not switch the verification.
    let signer =
        Keys::new(Key::from_private_pem(Algorithm::PS256, &pem("rsa.pem")).unwrap()).unwrap();
    let token = signer.sign(&claims()).unwrap();
    let addr = serve_gated(JwtAuthLayer::from_keys(rsa_keys())).await;
    assert_eq!(get_bearer(addr, "/protected", &token).await.status, 401);
}

#[tokio::test]
async fn each_algorithm_verifies_its_own_tokens() {
    // Every algorithm the keys accept, so none is left out of the gate's list of `alg` names
    // (a missing one would refuse every token of a key configured for it).
    for (algorithm, private, public) in [
        (Algorithm::HS256, "", ""),
        (Algorithm::HS384, "", ""),
        (Algorithm::HS512, "", ""),
        (Algorithm::RS256, "rsa.pem", "rsa.pub.pem"),
        (Algorithm::RS384, "rsa.pem", "rsa.pub.pem"),
        (Algorithm::RS512, "rsa.pem", "rsa.pub.pem"),
        (Algorithm::PS256, "rsa.pem", "rsa.pub.pem"),
        (Algorithm::PS384, "rsa.pem", "rsa.pub.pem"),
        (Algorithm::PS512, "rsa.pem", "rsa.pub.pem"),
        (Algorithm::ES256, "p256.pem", "p256.pub.pem"),
        (Algorithm::ES384, "p384.pem", "p384.pub.pem"),
        (Algorithm::EdDSA, "ed25519.pem", "ed25519.pub.pem"),
    ] {
        let (signer, verifier) = if private.is_empty() {
            let key = || Key::hmac(algorithm, [7u8; 64]).unwrap();
            (Keys::new(key()).unwrap(), Keys::new(key()).unwrap())
        } else {
            (
                Keys::new(Key::from_private_pem(algorithm, &pem(private)).unwrap()).unwrap(),
                Keys::new(Key::from_public_pem(algorithm, &pem(public)).unwrap()).unwrap(),
            )
        };
        let addr = serve_gated(JwtAuthLayer::from_keys(verifier)).await;
        let reply = get_bearer(addr, "/protected", &signer.sign(&claims()).unwrap()).await;
        assert_eq!(
            (reply.status.as_u16(), reply.text.as_str()),
            (200, "mallory"),
            "{algorithm:?}"
        );
    }
}

#[test]
fn keys_refuse_what_would_make_confusion_possible() {
    // Too-short HMAC secrets, per algorithm.
    assert!(Key::hs256([7u8; 31]).is_err());
    assert!(Key::hmac(Algorithm::HS512, [7u8; 63]).is_err());
    assert!(Key::hmac(Algorithm::HS512, [7u8; 64]).is_ok());
    // A PEM key for an HMAC algorithm, an HMAC secret for an RSA algorithm.
    assert!(Key::from_public_pem(Algorithm::HS256, &pem("rsa.pub.pem")).is_err());
    assert!(Key::hmac(Algorithm::RS256, [7u8; 64]).is_err());
    // A PEM of the wrong kind for the algorithm.
    assert!(Key::from_public_pem(Algorithm::ES256, &pem("rsa.pub.pem")).is_err());
    // One set, one family.
    let keys = Keys::new(Key::hs256(SECRET).unwrap().with_kid("a")).unwrap();
    let rsa = Key::from_public_pem(Algorithm::RS256, &pem("rsa.pub.pem"))
        .unwrap()
        .with_kid("b");
    assert!(matches!(
        keys.add(rsa),
        Err(jwt_gate::KeyError::MixedFamilies { .. })
    ));
}
