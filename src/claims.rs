//! The verified contents of a token.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// The claims of a verified access token: the registered claims the gate checks, plus the
/// application's own claims `C`, flattened in beside them.
///
/// The gate puts a `Claims<C>` into the request extensions of every request it lets through
/// with a token. `sub`, `exp` and `iat` are required: a token lacking one is refused, because
/// without them it could be neither attributed nor expired. `jti` is required by default too
/// (without it a token could not be revoked by name): an empty `jti` counts as missing, and
/// one over [`MAX_JTI_LEN`] bytes is always refused, since it would make every revocation
/// entry as large as the issuer liked. A [`Validation`](crate::Validation) with
/// `require_jti: false` accepts a token without one and fills `jti` with
/// [`Claims::derive_jti`] of the token, so the claims always name the token.
///
/// ```
/// use jwt_gate::Claims;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct Roles {
///     roles: Vec<String>,
/// }
///
/// let claims = Claims::new("alice", 1_700_000_000, 1_700_000_900)
///     .with_issuer("https://auth.example")
///     .with_extra(Roles { roles: vec!["admin".into()] });
/// let json = serde_json::to_value(&claims).unwrap();
/// assert_eq!(json["roles"][0], "admin");
/// assert_eq!(json["sub"], "alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims<C = ()> {
    /// Subject: who the token speaks for.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub iat: u64,
    /// Not before, seconds since the epoch.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub nbf: Option<u64>,
    /// The token's unique id: what a revocation names. Empty when deserialized from a token
    /// without one; the verifier then refuses it, or (when `jti` is optional) fills in
    /// [`Claims::derive_jti`] of the token.
    #[serde(default)]
    pub jti: String,
    /// Session id: the login (refresh-token family) the auth service issued this token in.
    /// Logging out revokes every token carrying it, however many were minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: one string or several in the token; empty when absent.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many",
        deserialize_with = "string_or_strings"
    )]
    pub aud: Vec<String>,
    /// The application's own claims.
    #[serde(flatten)]
    pub extra: C,
}

impl Claims<()> {
    /// Claims for `sub`, issued at `iat`, expiring at `exp`, with a fresh random 128-bit `jti`.
    pub fn new(sub: impl Into<String>, iat: u64, exp: u64) -> Self {
        Self {
            sub: sub.into(),
            exp,
            iat,
            nbf: None,
            jti: new_jti(),
            sid: None,
            iss: None,
            aud: Vec::new(),
            extra: (),
        }
    }
}

impl Claims<()> {
    /// The id a verifier gives a token that carries no `jti` (when the
    /// [`Validation`](crate::Validation) lets `jti` be optional): `sha256:` followed by the
    /// unpadded base64url SHA-256 digest of the token's signed part, its header and payload
    /// up to the last `.`.
    ///
    /// The signature is left out because it does not name the token: an ECDSA signature can
    /// be turned into another valid one by anyone holding the token (`s` into `n - s`), and
    /// an issuer may sign the same claims twice, so a digest of the whole token would let a
    /// revoked token come back under a new id.
    ///
    /// Unkeyed on purpose: every gate of a fleet, and any other program holding the token,
    /// derives the same id, so a revocation recorded by one is seen by all. The digest does
    /// not reveal the token, and only a revoked token's digest is ever stored.
    ///
    /// ```
    /// use jwt_gate::Claims;
    ///
    /// let id = Claims::derive_jti("eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
    /// assert!(id.starts_with("sha256:"));
    /// assert_eq!(id.len(), 7 + 43);
    /// // Another signature over the same header and payload: the same token, the same id.
    /// assert_eq!(id, Claims::derive_jti("eyJhbGciOiJIUzI1NiJ9.e30.b3RoZXI"));
    /// ```
    pub fn derive_jti(token: &str) -> String {
        use sha2::{Digest, Sha256};
        let signed = token
            .rsplit_once('.')
            .map_or(token, |(signed, _signature)| signed);
        let digest = Sha256::digest(signed.as_bytes());
        let mut id = String::with_capacity(DERIVED_JTI_PREFIX.len() + 43);
        id.push_str(DERIVED_JTI_PREFIX);
        URL_SAFE_NO_PAD.encode_string(digest, &mut id);
        id
    }
}

/// What a derived `jti` starts with: names the derivation, so such an id is recognisable in a
/// revocation list and cannot be mistaken for an issuer's own.
const DERIVED_JTI_PREFIX: &str = "sha256:";

impl<C> Claims<C> {
    /// Adds the application's own claims.
    pub fn with_extra<D>(self, extra: D) -> Claims<D> {
        Claims {
            sub: self.sub,
            exp: self.exp,
            iat: self.iat,
            nbf: self.nbf,
            jti: self.jti,
            sid: self.sid,
            iss: self.iss,
            aud: self.aud,
            extra,
        }
    }

    /// Sets `iss`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.iss = Some(issuer.into());
        self
    }

    /// Adds an audience to `aud`.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.aud.push(audience.into());
        self
    }

    /// Sets `sid`, the session the token belongs to.
    #[must_use]
    pub fn with_session(mut self, sid: impl Into<String>) -> Self {
        self.sid = Some(sid.into());
        self
    }

    /// Sets `nbf`.
    #[must_use]
    pub fn with_not_before(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }
}

/// The longest `jti` accepted, in bytes. This crate's own ids are 22 characters; other
/// issuers' UUIDs and the like are well within it.
pub const MAX_JTI_LEN: usize = 255;

/// A fresh token id: 128 random bits, base64url without padding (22 characters).
pub(crate) fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT `NumericDate`: a JSON number of seconds. Fractions are floored; strings, negative
/// and non-finite numbers are refused (a string `exp` must never be skipped as "absent").
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct NumericDate;

    impl Visitor<'_> for NumericDate {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of seconds")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom("a NumericDate cannot be negative"))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
            if value.is_finite() && value >= 0.0 && value < u64::MAX as f64 {
                Ok(value as u64)
            } else {
                Err(E::custom(
                    "a NumericDate must be a finite, non-negative number",
                ))
            }
        }
    }

    deserializer.deserialize_any(NumericDate)
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    numeric_date(deserializer).map(Some)
}

fn string_or_strings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct StringOrStrings;

    impl<'de> Visitor<'de> for StringOrStrings {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<String>, E> {
            Ok(vec![value.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
            while let Some(value) = seq.next_element()? {
                values.push(value);
            }
            Ok(values)
        }
    }

    deserializer.deserialize_any(StringOrStrings)
}

fn one_or_many<S: Serializer>(values: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    match values {
        [one] => serializer.serialize_str(one),
        many => many.serialize(serializer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_typed_dates_are_refused_not_skipped() {
        let json = r#"{"sub":"a","exp":"99999999999","iat":1,"jti":"x"}"#;
        assert!(serde_json::from_str::<Claims>(json).is_err());
    }

    #[test]
    fn fractional_dates_are_floored_and_negative_refused() {
        let json = r#"{"sub":"a","exp":1700000000.9,"iat":1,"jti":"x"}"#;
        assert_eq!(
            serde_json::from_str::<Claims>(json).unwrap().exp,
            1_700_000_000
        );
        let json = r#"{"sub":"a","exp":-1,"iat":1,"jti":"x"}"#;
        assert!(serde_json::from_str::<Claims>(json).is_err());
    }

    #[test]
    fn audience_reads_one_or_many_and_writes_one_as_a_string() {
        let one: Claims =
            serde_json::from_str(r#"{"sub":"a","exp":2,"iat":1,"jti":"x","aud":"api"}"#).unwrap();
        assert_eq!(one.aud, ["api"]);
        assert_eq!(serde_json::to_value(&one).unwrap()["aud"], "api");
        let many: Claims =
            serde_json::from_str(r#"{"sub":"a","exp":2,"iat":1,"jti":"x","aud":["api","web"]}"#)
                .unwrap();
        assert_eq!(many.aud, ["api", "web"]);
    }

    #[test]
    fn a_missing_jti_reads_as_empty_for_the_verifier_to_judge() {
        let claims: Claims = serde_json::from_str(r#"{"sub":"a","exp":2,"iat":1}"#).unwrap();
        assert_eq!(claims.jti, "");
    }

    #[test]
    fn derived_jtis_are_the_tagged_sha256_of_the_token() {
        // SHA-256("abc"), a FIPS 180-2 test vector, in base64url.
        assert_eq!(
            Claims::derive_jti("abc"),
            "sha256:ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_ne!(Claims::derive_jti("abc"), Claims::derive_jti("abd"));
        assert!(Claims::derive_jti("abc").len() <= MAX_JTI_LEN);
    }

    #[test]
    fn jtis_are_unique_and_128_bits() {
        let (a, b) = (new_jti(), new_jti());
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(a).unwrap().len(), 16);
    }
}
