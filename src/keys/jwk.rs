//! JSON Web Keys (RFC 7517): verification keys read from a JWK, and the public half of a key
//! set published as a JWKS document.
//!
//! An issuer publishes [`Keys::jwks`] (at `/.well-known/jwks.json`, by convention); a gate
//! elsewhere builds its keys with [`Key::from_jwk`], or lets
//! `RemoteJwks` (feature `jwks`) fetch and follow them.
//!
//! Only asymmetric keys cross this boundary. An HMAC secret is never published, and never
//! read from a JWK: a verifier that takes secrets from a document it fetched would accept
//! tokens from anyone who can serve that document.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::{Key, KeyError, Keys};

/// The least RSA modulus accepted from a JWK, in bits (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

impl Key {
    /// A verification-only key from a public JWK, with the algorithm its `alg` names.
    ///
    /// Refused: JWKs without `alg` (use [`Key::from_jwk_with_algorithm`]), HMAC (`oct`) keys
    /// and HMAC algorithms, keys whose `use` is not `sig` or whose `key_ops` lack `verify`,
    /// a key type or curve that does not fit the algorithm, and RSA moduli under 2048 bits.
    /// The key keeps the JWK's `kid`.
    ///
    /// ```
    /// use jwt_gate::{Algorithm, Key};
    ///
    /// let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(r#"{
    ///     "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "2026-11",
    ///     "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    /// }"#).unwrap();
    /// let key = Key::from_jwk(&jwk).unwrap();
    /// assert_eq!((key.kid(), key.algorithm()), (Some("2026-11"), Algorithm::EdDSA));
    /// assert!(!key.can_sign());
    ///
    /// let secret: jsonwebtoken::jwk::Jwk = serde_json::from_str(
    ///     r#"{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#,
    /// ).unwrap();
    /// assert!(Key::from_jwk(&secret).is_err());
    /// ```
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let Some(named) = jwk.common.key_algorithm else {
            return Err(invalid(
                "it has no `alg`; name the algorithm with Key::from_jwk_with_algorithm",
            ));
        };
        let algorithm = Algorithm::try_from(named)
            .map_err(|_| invalid(format!("`alg` {named} is not a signature algorithm")))?;
        key_from_jwk(jwk, algorithm)
    }

    /// As [`Key::from_jwk`], for a JWK that may lack `alg`: the algorithm is `algorithm`, and a
    /// JWK that names another one is refused.
    ///
    /// ```
    /// use jwt_gate::{Algorithm, Key};
    ///
    /// let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(r#"{
    ///     "kty": "OKP", "crv": "Ed25519", "kid": "k1",
    ///     "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    /// }"#).unwrap();
    /// assert!(Key::from_jwk(&jwk).is_err());
    /// assert!(Key::from_jwk_with_algorithm(&jwk, Algorithm::EdDSA).is_ok());
    /// assert!(Key::from_jwk_with_algorithm(&jwk, Algorithm::ES256).is_err());
    /// ```
    pub fn from_jwk_with_algorithm(jwk: &Jwk, algorithm: Algorithm) -> Result<Self, KeyError> {
        if let Some(named) = jwk.common.key_algorithm {
            if Algorithm::try_from(named).ok() != Some(algorithm) {
                return Err(invalid(format!(
                    "its `alg` {named} is not the algorithm asked for, {algorithm:?}"
                )));
            }
        }
        key_from_jwk(jwk, algorithm)
    }
}

fn invalid(reason: impl Into<String>) -> KeyError {
    KeyError::InvalidJwk(reason.into())
}

fn key_from_jwk(jwk: &Jwk, algorithm: Algorithm) -> Result<Key, KeyError> {
    check_intended_use(&jwk.common)?;
    check_parameters(&jwk.algorithm, algorithm)?;
    let decoding = DecodingKey::from_jwk(jwk).map_err(|error| invalid(error.to_string()))?;
    Key::verifying(jwk.common.key_id.clone(), algorithm, decoding)
}

fn check_intended_use(common: &CommonParameters) -> Result<(), KeyError> {
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return Err(invalid("its `use` is not `sig`"));
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|operations| !operations.contains(&KeyOperations::Verify))
    {
        return Err(invalid("its `key_ops` do not include `verify`"));
    }
    Ok(())
}

/// Checks the key type and size against the algorithm, so a key can only ever verify what its
/// publisher meant it for.
fn check_parameters(
    parameters: &AlgorithmParameters,
    algorithm: Algorithm,
) -> Result<(), KeyError> {
    let decoded_len = |value: &str| {
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| invalid("a key parameter is not base64url"))
    };
    match (algorithm.family(), parameters) {
        (AlgorithmFamily::Hmac, _) | (_, AlgorithmParameters::OctetKey(_)) => Err(invalid(
            "HMAC secrets are never read from a JWK; use Key::hmac",
        )),
        (AlgorithmFamily::Rsa, AlgorithmParameters::RSA(rsa)) => {
            let modulus = URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map_err(|_| invalid("`n` is not base64url"))?;
            let significant = &modulus[modulus.iter().take_while(|byte| **byte == 0).count()..];
            let bits = significant.len() * 8
                - significant
                    .first()
                    .map_or(0, |top| top.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(invalid("an RSA modulus under 2048 bits"));
            }
            Ok(())
        }
        (AlgorithmFamily::Ec, AlgorithmParameters::EllipticCurve(ec)) => {
            let (curve, coordinate_len) = match algorithm {
                Algorithm::ES256 => (EllipticCurve::P256, 32),
                _ => (EllipticCurve::P384, 48),
            };
            if ec.curve != curve {
                return Err(invalid(format!("its curve does not fit {algorithm:?}")));
            }
            if decoded_len(&ec.x)?.len() != coordinate_len
                || decoded_len(&ec.y)?.len() != coordinate_len
            {
                return Err(invalid("its coordinates are not the curve's size"));
            }
            Ok(())
        }
        (AlgorithmFamily::Ed, AlgorithmParameters::OctetKeyPair(okp)) => {
            if okp.curve != EllipticCurve::Ed25519 || decoded_len(&okp.x)?.len() != 32 {
                return Err(invalid("EdDSA keys must be Ed25519 (32 bytes)"));
            }
            Ok(())
        }
        _ => Err(invalid(format!("its key type does not fit {algorithm:?}"))),
    }
}

impl Keys {
    /// The public keys of the set as a JWKS document, to publish at
    /// `/.well-known/jwks.json`: one entry per key, with `kid`, `alg` and `use: sig`.
    ///
    /// Only public material is ever written. An HMAC set gives an **empty** set: its
    /// secret must never be published, and an empty document tells a fetching gate plainly
    /// that there is nothing to verify with (which `RemoteJwks`
    /// reports as an error) instead of failing the issuer.
    ///
    /// ```
    /// use jwt_gate::{Algorithm, Key, Keys};
    ///
    /// let pem = b"-----BEGIN PRIVATE KEY-----
    /// MC4CAQAwBQYDK2VwBCIEIHvs2LMA78bxHuCZr8W+qMK7cZ7VU8RxzFCHEUxdYKAJ
    /// -----END PRIVATE KEY-----";
    /// let keys = Keys::new(Key::from_private_pem(Algorithm::EdDSA, pem)?.with_kid("k1"))?;
    /// let jwks = serde_json::to_value(keys.jwks())?;
    /// assert_eq!(jwks["keys"][0]["kid"], "k1");
    /// assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    /// assert_eq!(jwks["keys"][0]["use"], "sig");
    /// assert!(jwks["keys"][0].get("d").is_none(), "never the private key");
    ///
    /// let hmac = Keys::hs256(b"an example secret of 32 bytes!!!")?;
    /// assert!(hmac.jwks().keys.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        let set = self.snapshot();
        let keys = set
            .keys()
            .iter()
            .filter(|key| key.algorithm().family() != AlgorithmFamily::Hmac)
            .filter_map(|key| {
                // Built from the decoding key: the public half, whatever the key can do.
                let mut jwk = Jwk::from_decoding_key(key.decoding_key(), Some(key.algorithm()))
                    .map_err(|error| {
                        tracing::error!(kid = ?key.kid(), %error, "a key could not be published as a JWK");
                    })
                    .ok()?;
                jwk.common.key_id = key.kid().map(str::to_owned);
                jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                Some(jwk)
            })
            .collect();
        JwkSet { keys }
    }
}
