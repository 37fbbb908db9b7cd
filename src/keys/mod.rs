//! Signing and verification keys, selected by `kid`, with the algorithm pinned by the key.
//!
//! A [`Key`] carries exactly one [`Algorithm`]. A token is verified with the key its `kid`
//! names, and only if the token's `alg` is that key's algorithm: the token never chooses how
//! it is checked, so `alg: none`, HS/RS confusion and downgrade attacks have nothing to hold on to.
//!
//! [`Keys`] is a cheap-to-clone handle on a set of keys of one algorithm family. Keys can be
//! added and removed while gates are running (rotation): every gate built from the same `Keys`
//! sees the change at its next request.

mod jwk;
#[cfg(feature = "jwks")]
pub(crate) mod remote;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};
use serde::Serialize;

#[cfg(feature = "jwks")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks")))]
pub use self::remote::{JwksError, RemoteJwks, RemoteJwksBuilder};

/// The `typ` header of the access tokens this crate signs (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Why a key could not be built, added or used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than the hash it feeds (RFC 7518 §3.2): 32 bytes for HS256,
    /// 48 for HS384, 64 for HS512.
    SecretTooShort {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// The least number of bytes it takes.
        minimum: usize,
        /// The number of bytes given.
        actual: usize,
    },
    /// The algorithm does not belong to the kind of key given (an RSA algorithm for an EC PEM, say).
    WrongAlgorithm {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// What the key material is for.
        expected: &'static str,
    },
    /// A key of another family than the set's own: one [`Keys`] holds one family only.
    MixedFamilies {
        /// The set's family.
        pinned: AlgorithmFamily,
        /// The family of the key offered.
        offered: AlgorithmFamily,
    },
    /// The PEM could not be read as a key of that kind.
    InvalidPem(String),
    /// Several keys in one set need a `kid` each, so tokens can say which one signed them.
    MissingKid,
    /// Two keys with the same `kid`.
    DuplicateKid(String),
    /// No key has that `kid`.
    UnknownKid(String),
    /// The key can only verify (it was built from a public key).
    CannotSign,
    /// The set has no key that can sign.
    NoSigningKey,
    /// The active signing key cannot be removed; activate another first.
    ActiveKey(String),
    /// The crate was built with neither the `rust-crypto` nor the `aws-lc-rs` feature.
    NoCryptoBackend,
    /// The crypto backend refused to sign.
    Signing(String),
    /// A JWK that cannot be a verification key here (see [`Key::from_jwk`]).
    InvalidJwk(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretTooShort { algorithm, minimum, actual } => write!(
                f,
                "an {algorithm:?} secret needs at least {minimum} bytes, got {actual}"
            ),
            Self::WrongAlgorithm { algorithm, expected } => {
                write!(f, "{algorithm:?} is not an algorithm for {expected}")
            }
            Self::MixedFamilies { pinned, offered } => write!(
                f,
                "this key set holds {pinned:?} keys only; a {offered:?} key cannot join it"
            ),
            Self::InvalidPem(reason) => write!(f, "the PEM is not a usable key: {reason}"),
            Self::MissingKid => f.write_str("every key in a set of several needs a kid"),
            Self::DuplicateKid(kid) => write!(f, "a key with kid {kid:?} is already in the set"),
            Self::UnknownKid(kid) => write!(f, "no key with kid {kid:?}"),
            Self::CannotSign => f.write_str("this key was built from a public key and cannot sign"),
            Self::NoSigningKey => f.write_str("the key set has no signing key"),
            Self::ActiveKey(kid) => write!(
                f,
                "key {kid:?} is the active signing key; activate another before removing it"
            ),
            Self::NoCryptoBackend => f.write_str(
                "jwt-gate was built without a crypto backend: enable the `rust-crypto` or `aws-lc-rs` feature",
            ),
            Self::Signing(reason) => write!(f, "signing failed: {reason}"),
            Self::InvalidJwk(reason) => write!(f, "the JWK is not a usable verification key: {reason}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Makes sure jsonwebtoken has a crypto provider before any key is used, so a build without
/// one fails here with an error instead of panicking at the first request.
fn ensure_crypto_backend() -> Result<(), KeyError> {
    #[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
    {
        // With both backends jsonwebtoken would refuse to guess; aws-lc-rs is the faster one.
        // An error only means a provider was installed already (by us or the application).
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    }
    if cfg!(any(feature = "aws-lc-rs", feature = "rust-crypto")) {
        Ok(())
    } else {
        Err(KeyError::NoCryptoBackend)
    }
}

/// One key: its algorithm, its optional `kid`, what it verifies with and, for private keys,
/// what it signs with.
///
/// ```
/// use jwt_gate::Key;
///
/// let key = Key::hs256(b"an example secret of 32 bytes!!!").unwrap().with_kid("2026-11");
/// assert_eq!(key.kid(), Some("2026-11"));
/// assert!(key.can_sign());
/// assert!(Key::hs256(b"too short").is_err());
/// ```
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
}

impl fmt::Debug for Key {
    // Key material never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.can_sign())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// An HMAC key (HS256, HS384 or HS512) from a shared secret, used as given.
    ///
    /// The secret must be at least as long as the hash: 32, 48 or 64 bytes.
    pub fn hmac(algorithm: Algorithm, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        ensure_crypto_backend()?;
        let minimum = match algorithm {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => {
                return Err(KeyError::WrongAlgorithm {
                    algorithm,
                    expected: "an HMAC secret",
                })
            }
        };
        let secret = secret.as_ref();
        if secret.len() < minimum {
            return Err(KeyError::SecretTooShort {
                algorithm,
                minimum,
                actual: secret.len(),
            });
        }
        Ok(Self::from_parts(
            algorithm,
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
        ))
    }

    /// An HS256 key from a secret of at least 32 bytes.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::hmac(Algorithm::HS256, secret)
    }

    /// A key that signs and verifies, from a PEM private key: RSA (PKCS#1 or PKCS#8) for
    /// RS*/PS*, PKCS#8 EC for ES256/ES384, PKCS#8 Ed25519 for EdDSA.
    ///
    /// ```
    /// use jwt_gate::{Algorithm, Key};
    ///
    /// let pem = b"-----BEGIN PRIVATE KEY-----
    /// MC4CAQAwBQYDK2VwBCIEIHvs2LMA78bxHuCZr8W+qMK7cZ7VU8RxzFCHEUxdYKAJ
    /// -----END PRIVATE KEY-----";
    /// let key = Key::from_private_pem(Algorithm::EdDSA, pem).unwrap();
    /// assert!(key.can_sign());
    /// assert!(Key::from_private_pem(Algorithm::RS256, pem).is_err());
    /// ```
    pub fn from_private_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        ensure_crypto_backend()?;
        let encoding = match asymmetric_family(algorithm)? {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|error| KeyError::InvalidPem(error.to_string()))?;
        // The public half is derived from the private key, so the two can never disagree.
        let decoding = Jwk::from_encoding_key(&encoding, algorithm)
            .and_then(|jwk| DecodingKey::from_jwk(&jwk))
            .map_err(|error| KeyError::InvalidPem(error.to_string()))?;
        Ok(Self::from_parts(algorithm, decoding, Some(encoding)))
    }

    /// A verification-only key from a PEM public key (SubjectPublicKeyInfo, or PKCS#1 for RSA).
    pub fn from_public_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        ensure_crypto_backend()?;
        let decoding = match asymmetric_family(algorithm)? {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            _ => DecodingKey::from_ed_pem(pem),
        }
        .map_err(|error| KeyError::InvalidPem(error.to_string()))?;
        Ok(Self::from_parts(algorithm, decoding, None))
    }

    fn from_parts(
        algorithm: Algorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
    ) -> Self {
        Self {
            kid: None,
            algorithm,
            decoding,
            encoding,
        }
    }

    /// Names the key: tokens it signs carry this `kid`, and tokens carrying it are verified with it.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key signs and verifies with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether the key holds private material and can sign.
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// A verification-only key from parts already checked to belong together.
    pub(crate) fn verifying(
        kid: Option<String>,
        algorithm: Algorithm,
        decoding: DecodingKey,
    ) -> Result<Self, KeyError> {
        ensure_crypto_backend()?;
        Ok(Self {
            kid,
            algorithm,
            decoding,
            encoding: None,
        })
    }
}

fn asymmetric_family(algorithm: Algorithm) -> Result<AlgorithmFamily, KeyError> {
    match algorithm.family() {
        AlgorithmFamily::Hmac => Err(KeyError::WrongAlgorithm {
            algorithm,
            expected: "a PEM key (use Key::hmac for shared secrets)",
        }),
        family => Ok(family),
    }
}

/// One immutable version of the key set; replaced whole on every change.
#[derive(Debug)]
pub(crate) struct KeySet {
    /// Bumped when a key leaves the set (removed, or replaced under its `kid`), so cached
    /// verifications made with it are redone. Adding a key or activating one leaves every
    /// earlier verification true, so it keeps the generation and the cache stays warm.
    pub(crate) generation: u64,
    keys: Vec<Key>,
    active: Option<usize>,
}

impl KeySet {
    pub(crate) fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The key a token's `kid` selects. A token without `kid` is accepted only where the
    /// choice is unambiguous: a single key, or the one key without a `kid`.
    pub(crate) fn select(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|key| key.kid() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => self.keys.iter().find(|key| key.kid.is_none()),
        }
    }

    /// The next version of the set; `invalidates` when a key left it.
    fn with_change(&self, keys: Vec<Key>, active: Option<usize>, invalidates: bool) -> Self {
        Self {
            generation: self.generation + u64::from(invalidates),
            keys,
            active,
        }
    }
}

/// The set of keys a gate verifies with and an auth service signs with.
///
/// All keys share one algorithm family, fixed by the first key. With several keys, each
/// needs a `kid`; one of the keys that can sign is *active* and signs new tokens. Tokens
/// signed by any key in the set verify until that key is removed, which is how keys rotate:
///
/// ```
/// use jwt_gate::{Claims, Key, Keys};
///
/// # fn main() -> Result<(), jwt_gate::KeyError> {
/// let keys = Keys::new(Key::hs256(b"the first secret, 32 bytes long.")?.with_kid("old"))?;
/// let old_token = keys.sign(&Claims::new("alice", 1_700_000_000, 4_000_000_000))?;
///
/// keys.add(Key::hs256(b"the second secret, also 32 bytes")?.with_kid("new"))?;
/// keys.activate("new")?;
/// // New tokens carry `kid: "new"`; `old_token` still verifies until:
/// keys.remove("old")?;
/// # let _ = old_token;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Keys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    family: AlgorithmFamily,
    set: ArcSwap<KeySet>,
    // Serialises writers; readers never wait (they load the current set).
    write_lock: std::sync::Mutex<()>,
    // Told when a token names a `kid` the set lacks, so a key source (a remote JWKS) can
    // look for it. Set once; called on the request path, so it must only signal, never block:
    // it may hand back a future that resolves once the lookup is over, for the request to
    // await before trying again.
    unknown_kid: std::sync::OnceLock<UnknownKidListener>,
}

/// A lookup the request may await: resolves when the key source has looked (successfully or
/// not, bounded by its timeout).
pub(crate) type KeyLookup = crate::BoxFuture<'static, ()>;

type UnknownKidListener = Box<dyn Fn(&str) -> Option<KeyLookup> + Send + Sync>;

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.inner.set.load();
        f.debug_struct("Keys")
            .field("family", &self.inner.family)
            .field("keys", &set.keys)
            .field("active", &set.active.map(|index| set.keys[index].kid()))
            .finish()
    }
}

impl Keys {
    /// A set holding one key, which becomes the active signing key if it can sign.
    pub fn new(key: Key) -> Result<Self, KeyError> {
        ensure_crypto_backend()?;
        let family = key.algorithm.family();
        let active = key.can_sign().then_some(0);
        Ok(Self {
            inner: Arc::new(KeysInner {
                family,
                set: ArcSwap::from_pointee(KeySet {
                    generation: 0,
                    keys: vec![key],
                    active,
                }),
                write_lock: std::sync::Mutex::new(()),
                unknown_kid: std::sync::OnceLock::new(),
            }),
        })
    }

    /// A set holding one HS256 key made from `secret` (at least 32 bytes).
    ///
    /// ```
    /// let keys = jwt_gate::Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// ```
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::new(Key::hs256(secret)?)
    }

    /// The algorithm family every key of this set belongs to.
    pub fn family(&self) -> AlgorithmFamily {
        self.inner.family
    }

    /// Adds a verification (and possibly signing) key. It does not become active by itself.
    pub fn add(&self, key: Key) -> Result<(), KeyError> {
        let offered = key.algorithm.family();
        if offered != self.inner.family {
            return Err(KeyError::MixedFamilies {
                pinned: self.inner.family,
                offered,
            });
        }
        self.update(|set| {
            let Some(kid) = key.kid() else {
                return Err(KeyError::MissingKid);
            };
            if set.keys.iter().any(|existing| existing.kid().is_none()) {
                return Err(KeyError::MissingKid);
            }
            if set.keys.iter().any(|existing| existing.kid() == Some(kid)) {
                return Err(KeyError::DuplicateKid(kid.to_owned()));
            }
            let mut keys = set.keys.clone();
            keys.push(key);
            Ok(set.with_change(keys, set.active, false))
        })
    }

    /// Removes the key named `kid`: tokens it signed stop verifying at once, in every gate
    /// sharing this set (cached verifications included).
    pub fn remove(&self, kid: &str) -> Result<(), KeyError> {
        self.update(|set| {
            let index = set
                .keys
                .iter()
                .position(|key| key.kid() == Some(kid))
                .ok_or_else(|| KeyError::UnknownKid(kid.to_owned()))?;
            if set.active == Some(index) {
                return Err(KeyError::ActiveKey(kid.to_owned()));
            }
            let mut keys = set.keys.clone();
            keys.remove(index);
            let active = set
                .active
                .map(|active| if active > index { active - 1 } else { active });
            Ok(set.with_change(keys, active, true))
        })
    }

    /// Makes the key named `kid` the one that signs new tokens.
    pub fn activate(&self, kid: &str) -> Result<(), KeyError> {
        self.update(|set| {
            let index = set
                .keys
                .iter()
                .position(|key| key.kid() == Some(kid))
                .ok_or_else(|| KeyError::UnknownKid(kid.to_owned()))?;
            if !set.keys[index].can_sign() {
                return Err(KeyError::CannotSign);
            }
            Ok(set.with_change(set.keys.clone(), Some(index), false))
        })
    }

    /// The `kid`s in the set, in the order they were added.
    pub fn kids(&self) -> Vec<Option<String>> {
        self.inner
            .set
            .load()
            .keys
            .iter()
            .map(|key| key.kid.clone())
            .collect()
    }

    /// Signs `claims` with the active key. The header carries the key's algorithm, its `kid`
    /// and `typ: at+jwt` (RFC 9068), which the gate requires by default.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let set = self.inner.set.load();
        let key = set
            .active
            .map(|index| &set.keys[index])
            .ok_or(KeyError::NoSigningKey)?;
        let encoding = key.encoding.as_ref().ok_or(KeyError::CannotSign)?;
        let mut header = Header::new(key.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid.clone_from(&key.kid);
        jsonwebtoken::encode(&header, claims, encoding)
            .map_err(|error| KeyError::Signing(error.to_string()))
    }

    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.inner.set.load()
    }

    /// Installs the one listener for unknown `kid`s; `false` if one was installed already.
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    pub(crate) fn on_unknown_kid(
        &self,
        listener: impl Fn(&str) -> Option<KeyLookup> + Send + Sync + 'static,
    ) -> bool {
        self.inner.unknown_kid.set(Box::new(listener)).is_ok()
    }

    /// Tells the listener, if any, that a token named `kid` (attacker-controlled text); the
    /// lookup it started or joined, if the request may wait for it.
    pub(crate) fn report_unknown_kid(&self, kid: &str) -> Option<KeyLookup> {
        self.inner
            .unknown_kid
            .get()
            .and_then(|listener| listener(kid))
    }

    fn update(
        &self,
        change: impl FnOnce(&KeySet) -> Result<KeySet, KeyError>,
    ) -> Result<(), KeyError> {
        let _writer = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = change(&self.inner.set.load())?;
        self.inner.set.store(Arc::new(next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(not(any(feature = "rust-crypto", feature = "aws-lc-rs")))]
    #[test]
    fn without_a_crypto_backend_keys_are_an_error_not_a_later_panic() {
        assert_eq!(
            super::Key::hs256([7u8; 32]).unwrap_err(),
            super::KeyError::NoCryptoBackend
        );
    }

    #[cfg(all(feature = "rust-crypto", feature = "aws-lc-rs"))]
    #[test]
    fn with_both_backends_signing_and_verifying_work() {
        let keys = super::Keys::hs256([7u8; 32]).unwrap();
        let token = keys.sign(&crate::Claims::new("a", 1, 2)).unwrap();
        assert_eq!(token.split('.').count(), 3);
    }
}
