//! The verification policy, and the verifier that applies it.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;

use crate::authorize::{read_claims_and_kinds, ClaimPath, Grants};
use crate::cache::VerifiedCache;
use crate::claims::MAX_JTI_LEN;
use crate::clock::{Clock, SystemClock};
use crate::error::DEFAULT_REALM;
use crate::extract::check_token_syntax;
use crate::fingerprint::Fingerprint;
use crate::keys::{KeyLookup, Keys, ACCESS_TOKEN_TYPE};
use crate::metrics::{CacheUse, GateMetrics};
use crate::revocation::{MemoryRevocations, RevocationCheck, RevocationStore, TokenId};
use crate::{AuthError, Claims};

/// What a token must satisfy beyond its signature: plain data, to read and change.
///
/// The algorithm is never taken from the token: each [`Key`](crate::Key) pins its own, and
/// `algorithms`, when set, narrows the accepted ones further.
///
/// Start from the preset that names where your tokens come from, then change fields:
///
/// | preset | for | `iss`, `aud` | `typ` | `jti` |
/// | --- | --- | --- | --- | --- |
/// | [`own_tokens()`](Self::own_tokens) (= `default()`) | this crate's auth service, or any RFC 9068 issuer you check `iss`/`aud` of yourself | not checked | `at+jwt` | required |
/// | [`rfc9068(issuer, audience)`](Self::rfc9068) | an identity provider issuing RFC 9068 access tokens (Auth0's "RFC 9068" profile) | required, must match | `at+jwt` | required |
/// | [`third_party(issuer, audience)`](Self::third_party) | an identity provider's usual access tokens (Keycloak, Auth0, Entra ID, Okta) | required, must match | `JWT`, `at+jwt` or none | optional |
///
/// | field | default |
/// | --- | --- |
/// | `algorithms` | `None`: whatever the keys are for |
/// | `issuers` | `None`: `iss` not checked; when set, `iss` is **required** and must be one of them |
/// | `audiences` | `None`: `aud` not checked; when set, `aud` is **required** and must name one of them |
/// | `leeway` | 30 s, applied to `exp`, `nbf` and `iat` for clock skew |
/// | `accepted_types` | `Some(["at+jwt"])` (RFC 9068; `application/at+jwt` also matches, any case) |
/// | `allow_untyped` | `false`: a token without `typ` is refused while `accepted_types` is set |
/// | `require_jti` | `true` |
/// | `max_lifetime` | `Some(24 h)`: `exp - iat` may not exceed it |
/// | `max_token_len` | 8 KiB, checked before any decoding |
///
/// `exp`, `iat` and `sub` are always required; `nbf` is checked when present; a `crit` header
/// is always refused. `jti` is required unless `require_jti` is `false`; an empty `jti`
/// counts as missing, and one over [`MAX_JTI_LEN`](crate::MAX_JTI_LEN) bytes is always
/// refused.
///
/// **Tokens without `jti`.** Revocation names tokens by `jti`. When `require_jti` is `false`
/// and a token has none, the verifier gives it one derived from the token itself,
/// [`Claims::derive_jti`](crate::Claims::derive_jti): `sha256:` and the unpadded base64url
/// SHA-256 digest of its signed part (header and payload: a signature re-made over the same
/// claims, as anyone can do to an ECDSA one, names the same token). Every gate of a fleet
/// derives the same id, so logout and shared (Redis) revocation work unchanged, and the raw
/// token is never stored: only its digest is, and only when it is revoked.
///
/// ```
/// use std::time::Duration;
/// use jwt_gate::Validation;
///
/// let validation = Validation {
///     leeway: Duration::from_secs(5),
///     ..Validation::default()
/// }
/// .issuer("https://auth.example")
/// .audience("orders-api");
/// assert_eq!(validation.issuers.as_deref(), Some(&["https://auth.example".to_string()][..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The accepted algorithms, if narrower than the keys' own.
    pub algorithms: Option<Vec<Algorithm>>,
    /// The accepted issuers.
    pub issuers: Option<Vec<String>>,
    /// The accepted audiences.
    pub audiences: Option<Vec<String>>,
    /// Tolerance for clock skew.
    pub leeway: Duration,
    /// The accepted `typ` headers, compared as media types (`application/` optional, any
    /// case); `None` accepts any `typ`, or none.
    pub accepted_types: Option<Vec<String>>,
    /// Whether a token without a `typ` header passes while `accepted_types` is set.
    pub allow_untyped: bool,
    /// Whether `jti` is required. When `false`, a token without one gets an id derived from
    /// the token (see above), so it can still be revoked.
    pub require_jti: bool,
    /// The longest `exp - iat` accepted.
    pub max_lifetime: Option<Duration>,
    /// The longest token accepted, in bytes.
    pub max_token_len: usize,
    /// Kinds of token refused whatever their header says, by the `typ` claim some identity
    /// providers write in the payload (any case): by default Keycloak's ID, refresh, offline
    /// and logout tokens, which carry `typ: JWT` in their header like its access tokens, and
    /// an ID token's `aud` is the client's id, which may be the API's audience too.
    pub refused_kinds: Vec<String>,
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            algorithms: None,
            issuers: None,
            audiences: None,
            leeway: Duration::from_secs(30),
            accepted_types: Some(vec![ACCESS_TOKEN_TYPE.to_owned()]),
            allow_untyped: false,
            require_jti: true,
            max_lifetime: Some(Duration::from_secs(24 * 60 * 60)),
            max_token_len: 8 * 1024,
            refused_kinds: ["ID", "Refresh", "Offline", "Logout"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Validation {
    /// For this crate's own tokens (its auth service's, or any RFC 9068 access token): the
    /// same as `Validation::default()`.
    ///
    /// Accepts `typ: at+jwt` (RFC 9068 §2.1) only, requires `jti`, and checks `iss` and
    /// `aud` only once you add them with [`issuer`](Self::issuer) and
    /// [`audience`](Self::audience) (the demo server and the binary always do).
    ///
    /// ```
    /// use jwt_gate::Validation;
    ///
    /// let validation = Validation::own_tokens().issuer("https://auth.example").audience("api");
    /// assert!(validation.require_jti);
    /// assert_eq!(validation.accepted_types, Some(vec!["at+jwt".to_string()]));
    /// ```
    pub fn own_tokens() -> Self {
        Self::default()
    }

    /// For RFC 9068 access tokens from an identity provider: `iss` must be `issuer` and `aud`
    /// must name `audience` (both required), `typ` must be `at+jwt`, `jti` is required.
    ///
    /// ```
    /// use jwt_gate::Validation;
    ///
    /// let validation = Validation::rfc9068("https://example.eu.auth0.com/", "https://orders.example");
    /// assert_eq!(validation.audiences, Some(vec!["https://orders.example".to_string()]));
    /// ```
    pub fn rfc9068(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self::own_tokens().issuer(issuer).audience(audience)
    }

    /// For the access tokens identity providers issue by default (Keycloak, Auth0, Entra ID,
    /// Okta; see the provider table in `docs/providers.md`): `iss` must be `issuer` and `aud`
    /// must name `audience` (both required), `typ` may be `JWT`, `at+jwt` or absent, and
    /// `jti` is optional (a token without one is revocable by its derived id).
    ///
    /// Still refused: any other `typ` (an ID token typed `id+jwt`, a logout token), a token
    /// whose payload `typ` is one of [`refused_kinds`](Self::refused_kinds) (Keycloak's ID and
    /// refresh tokens), a `crit` header, a missing `sub`, `exp` or `iat`, a lifetime over 24
    /// hours. Audience is what keeps another API's tokens from the same provider out: use your
    /// API's own identifier.
    ///
    /// ```
    /// use jwt_gate::Validation;
    ///
    /// let validation = Validation::third_party("https://sso.example/realms/acme", "orders-api");
    /// assert!(!validation.require_jti);
    /// assert!(validation.allow_untyped);
    /// ```
    pub fn third_party(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            accepted_types: Some(vec!["JWT".to_owned(), ACCESS_TOKEN_TYPE.to_owned()]),
            allow_untyped: true,
            require_jti: false,
            ..Self::default()
        }
        .issuer(issuer)
        .audience(audience)
    }

    /// Accepts tokens from `issuer` too (and from then on requires `iss`).
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers
            .get_or_insert_with(Vec::new)
            .push(issuer.into());
        self
    }

    /// Accepts tokens for `audience` too (and from then on requires `aud`).
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences
            .get_or_insert_with(Vec::new)
            .push(audience.into());
        self
    }

    fn type_matches(&self, typ: Option<&str>) -> bool {
        let Some(accepted) = &self.accepted_types else {
            return true;
        };
        let Some(typ) = typ else {
            return self.allow_untyped;
        };
        // RFC 7515 §4.1.9: "application/" may be omitted, and media types are case-insensitive.
        fn strip(value: &str) -> &str {
            const PREFIX: &str = "application/";
            match value.get(..PREFIX.len()) {
                Some(head) if head.eq_ignore_ascii_case(PREFIX) => &value[PREFIX.len()..],
                _ => value,
            }
        }
        accepted
            .iter()
            .any(|accepted| strip(typ).eq_ignore_ascii_case(strip(accepted)))
    }

    fn check_times(&self, exp: u64, iat: u64, nbf: Option<u64>, now: u64) -> Result<(), AuthError> {
        let leeway = self.leeway.as_secs();
        if now > exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        if iat > now.saturating_add(leeway) {
            return Err(AuthError::IssuedInTheFuture);
        }
        Ok(())
    }

    /// Refuses a token whose payload `typ` names a kind this policy refuses.
    fn check_kinds(&self, kinds: &[Box<str>]) -> Result<(), AuthError> {
        let refused = |kind: &str| {
            self.refused_kinds
                .iter()
                .any(|refused| refused.eq_ignore_ascii_case(kind))
        };
        if kinds.iter().any(|kind| refused(kind)) {
            return Err(AuthError::WrongType);
        }
        Ok(())
    }

    fn check_fixed<C>(&self, claims: &Claims<C>) -> Result<(), AuthError> {
        // A token that cannot be named cannot be revoked by name: unless the policy lets the
        // verifier name it (by its digest), an absent or empty `jti` is refused. An over-long
        // one always is: every revocation entry would be as large as the issuer liked.
        if (claims.jti.is_empty() && self.require_jti) || claims.jti.len() > MAX_JTI_LEN {
            return Err(AuthError::MissingClaim);
        }
        // No one: forwarded as an empty `x-auth-sub`, an upstream could take it for anonymous.
        if claims.sub.is_empty() {
            return Err(AuthError::MissingClaim);
        }
        if let Some(max) = self.max_lifetime {
            if claims.exp.saturating_sub(claims.iat) > max.as_secs() {
                return Err(AuthError::LifetimeTooLong);
            }
        }
        if let Some(issuers) = &self.issuers {
            if !claims.iss.as_ref().is_some_and(|iss| issuers.contains(iss)) {
                return Err(AuthError::WrongIssuer);
            }
        }
        if let Some(audiences) = &self.audiences {
            if !claims.aud.iter().any(|aud| audiences.contains(aud)) {
                return Err(AuthError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// The part of the JOSE header the gate reads. Duplicate fields make serde fail, so a header
/// cannot say one thing to us and another to a different parser.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    typ: Option<std::borrow::Cow<'a, str>>,
    /// Present at all, `null` included: RFC 7515 §4.1.11 allows only a list of names, and
    /// none is understood here.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// The `alg` header value of each algorithm (RFC 7518 §3.1).
fn algorithm_name(algorithm: Algorithm) -> Option<&'static str> {
    Some(match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // An algorithm added to jsonwebtoken later verifies nothing until named here.
        _ => return None,
    })
}

/// Verifies tokens: signature with the pinned key, then the [`Validation`] policy, then the
/// revocation list. The gate, the axum extractor and the auth service all use this one.
///
/// Verified tokens are remembered (by a keyed fingerprint, never the token itself), so a
/// token seen before costs a keyed hash and one cache lookup; time limits and revocation are
/// still checked every time. See [`TokenVerifierBuilder::cache_capacity`] for the bounds.
///
/// ```
/// use jwt_gate::{Claims, Keys, TokenVerifier};
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let now = jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock);
/// let token = keys.sign(&Claims::new("alice", now, now + 900)).unwrap();
///
/// let verifier = TokenVerifier::new(keys);
/// assert_eq!(verifier.verify(&token).unwrap().sub, "alice");
/// assert!(verifier.verify("not.a.token").is_err());
/// ```
pub struct TokenVerifier<C = ()> {
    inner: Arc<VerifierInner<C>>,
}

struct VerifierInner<C> {
    keys: Keys,
    /// Other issuers' keys, by their exact `iss`: a token naming one of them is checked with
    /// that issuer's keys only, and with its own policy when it has one. Few, so a linear
    /// scan beats hashing.
    issuers: Box<[(Box<str>, Keys, Option<Validation>)]>,
    validation: Validation,
    revocations: Arc<dyn RevocationStore>,
    clock: Arc<dyn Clock>,
    cache: VerifiedCache<C>,
    realm: Arc<str>,
    roles: ClaimPath,
    metrics: GateMetrics,
}

impl<C> Clone for TokenVerifier<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> TokenVerifier<C> {
    /// The realm of this verifier's `WWW-Authenticate` challenges.
    pub fn realm(&self) -> &str {
        &self.inner.realm
    }

    pub(crate) fn shared_realm(&self) -> Arc<str> {
        self.inner.realm.clone()
    }

    /// The gate's counters, registered when this verifier was built.
    pub(crate) fn metrics(&self) -> &GateMetrics {
        &self.inner.metrics
    }
}

impl<C> std::fmt::Debug for TokenVerifier<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.inner.keys)
            .field("validation", &self.inner.validation)
            .field("realm", &self.inner.realm)
            .finish_non_exhaustive()
    }
}

/// A verified token's claims and grants, the revocation store's answer about it (maybe
/// pending), and whether the verified-token cache answered.
pub(crate) type Authenticated<C> = (Claims<C>, Grants, RevocationCheck, CacheUse);

/// What [`TokenVerifier::authenticate_or_look_up`] found.
pub(crate) enum Authentication<C> {
    /// As [`TokenVerifier::authenticate`] answers.
    Ready(Result<Option<Authenticated<C>>, AuthError>),
    /// The token's `kid` is being looked up: await this, then authenticate again.
    AwaitKeys(KeyLookup),
}

enum Verdict<C> {
    Done(Result<(Claims<C>, Grants, CacheUse), AuthError>),
    AwaitKeys(KeyLookup),
}

/// What to do about a token whose `kid` its issuer's keys lack.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UnknownKid {
    /// Tell the key source (it may look the `kid` up), refuse the token.
    Report,
    /// Tell the key source and hand back its lookup, for the caller to await.
    Wait,
    /// Refuse: a lookup for this token has just been awaited.
    Ignore,
}

/// How many verified tokens a verifier remembers by default: room for 100,000 users each
/// holding one live token, with headroom for tokens refreshed before the old one expires.
pub const DEFAULT_CACHE_CAPACITY: usize = 128 * 1024;

/// How many bytes of verified tokens a verifier remembers by default (32 MiB): a cached token
/// with the default claims takes under 256 bytes, so [`DEFAULT_CACHE_CAPACITY`] binds first
/// unless tokens carry large claims.
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

// What the two docs above promise, held by the compiler: room for 100,000 tokens, and the
// count binding before the bytes for tokens under 256 bytes.
const _: () = assert!(
    DEFAULT_CACHE_CAPACITY >= 100_000 && DEFAULT_CACHE_BYTES >= DEFAULT_CACHE_CAPACITY * 256
);

impl TokenVerifier<()> {
    /// A verifier for `keys` with the default [`Validation`], an empty in-memory revocation
    /// list and the system clock.
    pub fn new(keys: Keys) -> Self {
        TokenVerifierBuilder::new(keys).build()
    }

    /// Starts a verifier with more settings.
    pub fn builder(keys: Keys) -> TokenVerifierBuilder<()> {
        TokenVerifierBuilder::new(keys)
    }
}

impl<C> TokenVerifier<C>
where
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Checks signature and claims (not revocation: see [`check_revocation`](Self::check_revocation)).
    pub fn verify(&self, token: &str) -> Result<Arc<Claims<C>>, AuthError> {
        self.verify_claims(token)
            .map(|(claims, _)| Arc::new(claims))
    }

    /// Checks signature and claims like [`verify`](Self::verify), and also returns the
    /// token's [`Grants`]: its scopes, and its roles at the
    /// [roles claim path](TokenVerifierBuilder::roles_claim).
    pub fn verify_granted(&self, token: &str) -> Result<(Arc<Claims<C>>, Grants), AuthError> {
        self.verify_claims(token)
            .map(|(claims, grants)| (Arc::new(claims), grants))
    }

    /// [`verify`](Self::verify), the claims by value (a cache hit rebuilds them from the
    /// packed entry), with the token's grants.
    pub(crate) fn verify_claims(&self, token: &str) -> Result<(Claims<C>, Grants), AuthError> {
        match self.verify_or_look_up(token, UnknownKid::Report) {
            Verdict::Done(verdict) => verdict.map(|(claims, grants, _)| (claims, grants)),
            Verdict::AwaitKeys(_) => Err(AuthError::UnknownKey),
        }
    }

    /// [`verify_claims`](Self::verify_claims), or, for a token naming a `kid` its issuer's key
    /// source is looking up (`mode` [`UnknownKid::Wait`]), the lookup to await first.
    fn verify_or_look_up(&self, token: &str, mode: UnknownKid) -> Verdict<C> {
        let mut lookup = None;
        let verdict = self.verify_cached(token, mode, &mut lookup);
        match lookup {
            Some(lookup) if matches!(verdict, Err(AuthError::UnknownKey)) => {
                Verdict::AwaitKeys(lookup)
            }
            _ => Verdict::Done(verdict),
        }
    }

    fn verify_cached(
        &self,
        token: &str,
        mode: UnknownKid,
        lookup: &mut Option<KeyLookup>,
    ) -> Result<(Claims<C>, Grants, CacheUse), AuthError> {
        let inner = &*self.inner;
        if token.len() > inner.validation.max_token_len {
            return Err(AuthError::TokenTooLong);
        }
        let now = inner.clock.now();
        let keys = inner.keys.snapshot();
        let cached = if inner.cache.is_enabled() {
            // Read before any key is chosen: a key removed meanwhile leaves the entry stale.
            let generation = self.key_generation(&keys);
            let fingerprint = Fingerprint::of(token.as_bytes());
            let check_times = |exp, iat, nbf| inner.validation.check_times(exp, iat, nbf, now);
            if let Some(hit) = inner.cache.get(&fingerprint, generation, check_times) {
                return hit.map(|(claims, grants)| (claims, grants, CacheUse::Hit));
            }
            Some((fingerprint, generation))
        } else {
            None
        };
        let verified = self.verify_uncached(token, &keys, now, mode, lookup);
        // A verification that stopped to wait for a key lookup is done again once the lookup
        // is over, and counted then, once.
        if lookup.is_none() {
            inner.metrics.cache_missed();
        }
        let (claims, grants, payload_len) = verified?;
        if let Some((fingerprint, generation)) = cached {
            inner
                .cache
                .insert(fingerprint, &claims, &grants, payload_len, generation);
        }
        Ok((claims, grants, CacheUse::Miss))
    }

    /// What cached verifications are checked against: it grows whenever a key leaves any of
    /// the key sets this verifier trusts (each set's generation only grows).
    fn key_generation(&self, own: &crate::keys::KeySet) -> u64 {
        self.inner
            .issuers
            .iter()
            .fold(own.generation, |sum, (_, keys, _)| {
                sum.wrapping_add(keys.snapshot().generation)
            })
    }

    /// The claims, the grants, and the decoded payload's length (what the cache weighs
    /// custom claims by).
    fn verify_uncached(
        &self,
        token: &str,
        own_keys: &crate::keys::KeySet,
        now: u64,
        mode: UnknownKid,
        lookup: &mut Option<KeyLookup>,
    ) -> Result<(Claims<C>, Grants, usize), AuthError> {
        check_token_syntax(token.as_bytes())?;
        let mut parts = token.split('.');
        let (Some(encoded_header), Some(encoded_payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(encoded_header)
            .map_err(|_| AuthError::Malformed)?;
        // RFC 7515 §4: an object. serde would also fill the fields from an array, by place,
        // which other parsers refuse.
        if header_json.trim_ascii_start().first() != Some(&b'{') {
            return Err(AuthError::Malformed);
        }
        let header: JoseHeader<'_> =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        if header.crit {
            return Err(AuthError::CriticalHeader);
        }
        let decode_payload = || {
            URL_SAFE_NO_PAD
                .decode(encoded_payload)
                .map_err(|_| AuthError::Malformed)
        };
        // With other issuers configured, the unverified `iss` only chooses whose keys to try;
        // the signature then decides, so relabelling a token cannot borrow another's keys.
        let mut payload = None;
        let issuer_set;
        let (source, keys, validation): (&Keys, &crate::keys::KeySet, &Validation) =
            match self.issuer_of(&mut payload, decode_payload)? {
                Some((issuer_keys, policy)) => {
                    issuer_set = issuer_keys.snapshot();
                    let policy = policy.unwrap_or(&self.inner.validation);
                    (issuer_keys, &issuer_set, policy)
                }
                None => (&self.inner.keys, own_keys, &self.inner.validation),
            };
        let Some(key) = keys.select(header.kid.as_deref()) else {
            if let (Some(kid), UnknownKid::Report | UnknownKid::Wait) =
                (header.kid.as_deref(), mode)
            {
                let started = source.report_unknown_kid(kid);
                if mode == UnknownKid::Wait {
                    *lookup = started;
                }
            }
            return Err(AuthError::UnknownKey);
        };
        let algorithm = key.algorithm();
        // Compared as text so `none`, `None`, `NONE` and unknown names are all simply "not ours".
        if algorithm_name(algorithm) != Some(&*header.alg)
            || validation
                .algorithms
                .as_ref()
                .is_some_and(|allowed| !allowed.contains(&algorithm))
        {
            return Err(AuthError::WrongAlgorithm);
        }
        if !validation.type_matches(header.typ.as_deref()) {
            return Err(AuthError::WrongType);
        }
        let message = &token[..encoded_header.len() + 1 + encoded_payload.len()];
        match jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            key.decoding_key(),
            algorithm,
        ) {
            Ok(true) => {}
            _ => return Err(AuthError::BadSignature),
        }
        let payload = match payload {
            Some(payload) => payload,
            None => decode_payload()?,
        };
        // The claims and the grants in one pass over the payload.
        let (mut claims, grants, kinds): (Claims<C>, Grants, _) =
            read_claims_and_kinds(&payload, &self.inner.roles).map_err(|error| {
                if error.is_data() {
                    AuthError::MissingClaim
                } else {
                    AuthError::Malformed
                }
            })?;
        validation.check_kinds(&kinds)?;
        validation.check_fixed(&claims)?;
        validation.check_times(claims.exp, claims.iat, claims.nbf, now)?;
        if claims.jti.is_empty() {
            // Allowed by the policy (check_fixed): name the token by its digest, cached with
            // the claims, so revocation works as for any other token.
            claims.jti = Claims::derive_jti(token);
        }
        Ok((claims, grants, payload.len()))
    }

    /// The keys (and own policy, if any) of the configured issuer the token's (unverified)
    /// `iss` names, if any; the decoded payload is kept in `payload` for the claims.
    fn issuer_of(
        &self,
        payload: &mut Option<Vec<u8>>,
        decode: impl FnOnce() -> Result<Vec<u8>, AuthError>,
    ) -> Result<Option<(&Keys, Option<&Validation>)>, AuthError> {
        if self.inner.issuers.is_empty() {
            return Ok(None);
        }
        /// Duplicate `iss` fields make serde fail, as they make the claims fail later.
        #[derive(Deserialize)]
        struct Issuer<'a> {
            #[serde(default, borrow)]
            iss: Option<std::borrow::Cow<'a, str>>,
        }
        let decoded = payload.insert(decode()?);
        let issuer: Issuer<'_> =
            serde_json::from_slice(decoded).map_err(|_| AuthError::Malformed)?;
        Ok(issuer.iss.and_then(|iss| self.other_issuer(&iss)))
    }

    /// The keys (and own policy, if any) of the other issuer named `iss`, if it is one this
    /// verifier trusts.
    fn other_issuer(&self, iss: &str) -> Option<(&Keys, Option<&Validation>)> {
        self.inner
            .issuers
            .iter()
            .find(|(name, _, _)| **name == *iss)
            .map(|(_, keys, policy)| (keys, policy.as_ref()))
    }

    /// Whether verified `claims` came from one of the other issuers this verifier trusts
    /// ([`TokenVerifierBuilder::issuer_keys`] and the like), not from its own keys: their
    /// `iss` named that issuer, whose keys then decided. The auth service acts on its own
    /// users' tokens only, and the revocation store keeps their subjects apart.
    pub(crate) fn is_from_another_issuer(&self, claims: &Claims<C>) -> bool {
        claims
            .iss
            .as_deref()
            .is_some_and(|iss| self.other_issuer(iss).is_some())
    }

    /// Asks the revocation store about verified `claims`; those of another issuer by their
    /// issuer too ([`TokenId::issuer`]).
    pub fn check_revocation(&self, claims: &Claims<C>) -> RevocationCheck {
        let mut token = TokenId::of(claims);
        if self.is_from_another_issuer(claims) {
            token.issuer = claims.iss.as_deref();
        }
        self.inner.revocations.check(&token)
    }

    /// How the auth service's logout judges a request's `token` (`Ok(None)` when there is
    /// none), read from the request as the gate reads it: verified, and then the revocation
    /// store's answer, which may still be pending. An unknown `kid` is refused here without
    /// waiting for its lookup (the gate waits: see
    /// [`authenticate_or_look_up`](Self::authenticate_or_look_up)).
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) fn authenticate(
        &self,
        token: Option<&str>,
    ) -> Result<Option<Authenticated<C>>, AuthError> {
        self.authenticate_without_waiting(token, UnknownKid::Report)
    }

    /// The gate's judgement of the `token` its sources found (`Ok(None)` without one), as
    /// [`authenticate`](Self::authenticate) judges, except that a token naming a `kid` its key
    /// source is fetching gives back that fetch to await: the caller awaits it, then calls
    /// [`authenticate_again`](Self::authenticate_again). Only that miss waits; every other
    /// answer, a cache hit above all, is as immediate as `authenticate`'s.
    pub(crate) fn authenticate_or_look_up(&self, token: Option<&str>) -> Authentication<C> {
        self.authenticate_with(token, UnknownKid::Wait)
    }

    /// After a key lookup: judged as [`authenticate`](Self::authenticate) would, but a `kid`
    /// still unknown is refused without starting another lookup.
    pub(crate) fn authenticate_again(
        &self,
        token: Option<&str>,
    ) -> Result<Option<Authenticated<C>>, AuthError> {
        self.authenticate_without_waiting(token, UnknownKid::Ignore)
    }

    /// Judged at once: a `kid` that would need a lookup is unknown, whatever `mode` does
    /// about the lookup itself.
    fn authenticate_without_waiting(
        &self,
        token: Option<&str>,
        mode: UnknownKid,
    ) -> Result<Option<Authenticated<C>>, AuthError> {
        match self.authenticate_with(token, mode) {
            Authentication::Ready(outcome) => outcome,
            Authentication::AwaitKeys(_) => Err(AuthError::UnknownKey),
        }
    }

    fn authenticate_with(&self, token: Option<&str>, mode: UnknownKid) -> Authentication<C> {
        let Some(token) = token else {
            return Authentication::Ready(Ok(None));
        };
        match self.verify_or_look_up(token, mode) {
            // By value: the gate moves the claims into the request, with no Arc to wrap and copy.
            Verdict::Done(Ok((claims, grants, cache))) => {
                let check = self.check_revocation(&claims);
                Authentication::Ready(Ok(Some((claims, grants, check, cache))))
            }
            Verdict::Done(Err(error)) => Authentication::Ready(Err(error)),
            Verdict::AwaitKeys(lookup) => Authentication::AwaitKeys(lookup),
        }
    }

    /// The revocation store this verifier consults.
    pub fn revocations(&self) -> &Arc<dyn RevocationStore> {
        &self.inner.revocations
    }

    /// The keys this verifier checks signatures with.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The policy this verifier applies.
    pub fn validation(&self) -> &Validation {
        &self.inner.validation
    }

    /// The clock this verifier reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Where this verifier reads roles (see [`TokenVerifierBuilder::roles_claim`]): where the
    /// auth service puts the roles of the tokens it issues.
    ///
    /// ```
    /// use jwt_gate::{ClaimPath, Keys, TokenVerifier};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let verifier = TokenVerifier::builder(keys)
    ///     .roles_claim(ClaimPath::new("realm_access.roles").unwrap())
    ///     .build();
    /// assert_eq!(verifier.roles_claim().to_string(), "realm_access.roles");
    /// ```
    pub fn roles_claim(&self) -> &ClaimPath {
        &self.inner.roles
    }
}

/// Builds a [`TokenVerifier`]: the policy, the revocation store, the clock, the claims type.
///
/// ```
/// use jwt_gate::{Keys, TokenVerifier, Validation};
/// use jwt_gate::revocation::MemoryRevocations;
///
/// #[derive(Clone, serde::Deserialize)]
/// struct Roles { roles: Vec<String> }
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let revocations = MemoryRevocations::new();
/// let verifier = TokenVerifier::builder(keys)
///     .validation(Validation::default().issuer("https://auth.example"))
///     .revocations(revocations.clone())
///     .claims::<Roles>()
///     .build();
/// ```
pub struct TokenVerifierBuilder<C> {
    keys: Keys,
    issuers: Vec<(Box<str>, Keys, Option<Validation>)>,
    validation: Validation,
    revocations: Arc<dyn RevocationStore>,
    clock: Arc<dyn Clock>,
    cache_capacity: usize,
    cache_bytes: usize,
    realm: Arc<str>,
    roles: ClaimPath,
    claims: std::marker::PhantomData<fn() -> C>,
}

impl<C> std::fmt::Debug for TokenVerifierBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifierBuilder")
            .field("keys", &self.keys)
            .field("validation", &self.validation)
            .finish_non_exhaustive()
    }
}

impl TokenVerifierBuilder<()> {
    fn new(keys: Keys) -> Self {
        Self {
            keys,
            issuers: Vec::new(),
            validation: Validation::default(),
            revocations: Arc::new(MemoryRevocations::new()),
            clock: Arc::new(SystemClock),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_bytes: DEFAULT_CACHE_BYTES,
            realm: Arc::from(DEFAULT_REALM),
            roles: ClaimPath::default(),
            claims: std::marker::PhantomData,
        }
    }
}

impl<C> TokenVerifierBuilder<C> {
    /// Trusts tokens whose `iss` is exactly `issuer`, verified with `keys` and only with them:
    /// another issuer beside the keys the builder started with (those verify every token
    /// whose `iss` names no issuer added here). Each issuer has its own key set, and so its
    /// own algorithm family; `keys` is typically a [`RemoteJwks`](crate::RemoteJwks)'s.
    ///
    /// The token's `iss` is read before its signature is checked, only to choose the keys:
    /// a token relabelled with another issuer's `iss` meets that issuer's keys, and fails.
    /// The policy ([`validation`](Self::validation)) applies to every issuer alike; the
    /// issuers added here are accepted `iss` values in it too.
    ///
    /// ```
    /// use jwt_gate::{Algorithm, Key, Keys, TokenVerifier, Validation};
    ///
    /// // The crate's own HS256 tokens...
    /// let own = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// // ...beside an identity provider's EdDSA ones (usually `RemoteJwks::keys()`).
    /// let pem = b"-----BEGIN PRIVATE KEY-----
    /// MC4CAQAwBQYDK2VwBCIEIHvs2LMA78bxHuCZr8W+qMK7cZ7VU8RxzFCHEUxdYKAJ
    /// -----END PRIVATE KEY-----";
    /// let idp = Keys::new(Key::from_private_pem(Algorithm::EdDSA, pem).unwrap().with_kid("k1")).unwrap();
    ///
    /// let verifier = TokenVerifier::builder(own)
    ///     // The own tokens' issuer, and this API's audience: both required once several
    ///     // issuers are trusted (a provider issues tokens for other APIs too).
    ///     .validation(Validation::default().issuer("https://api.example").audience("orders"))
    ///     .issuer_keys("https://login.example.com", idp)
    ///     .build();
    /// ```
    #[must_use]
    pub fn issuer_keys(mut self, issuer: impl Into<String>, keys: Keys) -> Self {
        self.issuers
            .push((issuer.into().into_boxed_str(), keys, None));
        self
    }

    /// As [`issuer_keys`](Self::issuer_keys), but the issuer's tokens are held to `policy`
    /// instead of the verifier's own [`validation`](Self::validation): typically
    /// [`Validation::third_party`] with that issuer's audience, so that each identity
    /// provider's tokens must name the audience registered with it, and another issuer's
    /// audience (or the verifier's own) is refused as `wrong_audience`.
    ///
    /// The policy's issuers are set to `issuer` alone; its leeway is the verifier's own (a
    /// cached token's times are checked with one leeway), and so is the longest token
    /// accepted, which is checked before any issuer is known.
    ///
    /// ```
    /// use jwt_gate::{Algorithm, Key, Keys, TokenVerifier, Validation};
    ///
    /// let own = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let pem = b"-----BEGIN PRIVATE KEY-----
    /// MC4CAQAwBQYDK2VwBCIEIHvs2LMA78bxHuCZr8W+qMK7cZ7VU8RxzFCHEUxdYKAJ
    /// -----END PRIVATE KEY-----";
    /// let idp = Keys::new(Key::from_private_pem(Algorithm::EdDSA, pem).unwrap().with_kid("k1")).unwrap();
    ///
    /// let verifier = TokenVerifier::builder(own)
    ///     .validation(Validation::own_tokens().issuer("https://api.example").audience("api"))
    ///     .issuer_policy(
    ///         "https://login.example.com",
    ///         idp,
    ///         Validation::third_party("https://login.example.com", "orders-api"),
    ///     )
    ///     .build();
    /// ```
    #[must_use]
    pub fn issuer_policy(
        mut self,
        issuer: impl Into<String>,
        keys: Keys,
        policy: Validation,
    ) -> Self {
        let issuer = issuer.into();
        let policy = Validation {
            issuers: Some(vec![issuer.clone()]),
            ..policy
        };
        self.issuers
            .push((issuer.into_boxed_str(), keys, Some(policy)));
        self
    }

    /// Uses this policy.
    #[must_use]
    pub fn validation(mut self, validation: Validation) -> Self {
        self.validation = validation;
        self
    }

    /// Consults this revocation store (shared with the auth service that revokes; an `Arc`
    /// of a store, or a verifier's [`revocations`](TokenVerifier::revocations), works too).
    #[must_use]
    pub fn revocations(mut self, store: impl RevocationStore) -> Self {
        self.revocations = Arc::new(store);
        self
    }

    /// Reads time from `clock`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Remembers up to `capacity` verified tokens (default [`DEFAULT_CACHE_CAPACITY`]; 0 turns
    /// the cache off).
    ///
    /// The cache is also bounded in bytes ([`cache_bytes`](Self::cache_bytes)); whichever
    /// bound is reached first evicts. Eviction favours tokens presented often over tokens
    /// seen once, costs each insertion a bounded amount of work, and never empties the
    /// cache. Size it for the live tokens you expect (users × tokens each, about 100,000 by
    /// default); past it, the tokens presented least often pay a signature check again.
    ///
    /// ```
    /// use jwt_gate::{Keys, TokenVerifier};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// // One million live tokens, in at most 256 MiB.
    /// let verifier = TokenVerifier::builder(keys)
    ///     .cache_capacity(1_000_000)
    ///     .cache_bytes(256 << 20)
    ///     .build();
    /// ```
    #[must_use]
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Remembers verified tokens up to about `bytes` of memory (default
    /// [`DEFAULT_CACHE_BYTES`]; 0 turns the cache off). An entry is weighed by its claims'
    /// text plus a fixed overhead; custom claims also by their encoded size. The cache's
    /// table, 8 to 16 bytes for each token of [`cache_capacity`](Self::cache_capacity) (1 MiB
    /// by default), grows as tokens come and is counted against these bytes from the start.
    #[must_use]
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Names the protection space in `WWW-Authenticate` challenges (default `jwt-gate`): every
    /// `401` said on this verifier's behalf carries it, the gate's, the axum extractor's and
    /// the auth service's logout alike.
    ///
    /// # Panics
    ///
    /// If `realm` has a character that cannot stand in a quoted string unescaped (a control
    /// character, `"` or `\`): realms are configuration, and a bad one is a programming error.
    #[must_use]
    pub fn realm(mut self, realm: &str) -> Self {
        assert_realm(realm);
        self.realm = Arc::from(realm);
        self
    }

    /// Reads roles at `path` (default `roles`), for [`Require::role`](crate::Require::role).
    /// Scopes are always read from `scope` and `scp`. A path that cannot hold roles is
    /// refused by [`ClaimPath::new`], before any verifier is built.
    ///
    /// ```
    /// use jwt_gate::{ClaimPath, Keys, TokenVerifier};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!")?;
    /// // Keycloak: the roles of the client `orders-api`.
    /// let verifier = TokenVerifier::builder(keys)
    ///     .roles_claim(ClaimPath::new("resource_access.orders-api.roles")?)
    ///     .build();
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn roles_claim(mut self, path: ClaimPath) -> Self {
        self.roles = path;
        self
    }

    /// Deserializes the application's own claims as `D`, flattened beside the registered ones.
    pub fn claims<D>(self) -> TokenVerifierBuilder<D> {
        TokenVerifierBuilder {
            keys: self.keys,
            issuers: self.issuers,
            validation: self.validation,
            revocations: self.revocations,
            clock: self.clock,
            cache_capacity: self.cache_capacity,
            cache_bytes: self.cache_bytes,
            realm: self.realm,
            roles: self.roles,
            claims: std::marker::PhantomData,
        }
    }

    /// The verifier.
    ///
    /// # Panics
    ///
    /// When the configuration is inconsistent, with the message of the [`BuildError`]
    /// [`try_build`](Self::try_build) would return: a configuration mistake, caught where the
    /// verifier is built rather than at the first request. Use `try_build` to report it
    /// yourself (a program reading its configuration from a file does).
    ///
    /// ```should_panic
    /// use std::time::Duration;
    /// use jwt_gate::{Keys, TokenVerifier, Validation};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// // The default in-memory store remembers revocations for 5 minutes past expiry.
    /// let verifier = TokenVerifier::builder(keys)
    ///     .validation(Validation { leeway: Duration::from_secs(600), ..Validation::default() })
    ///     .build();
    /// ```
    pub fn build(self) -> TokenVerifier<C> {
        self.try_build()
            .unwrap_or_else(|error| panic!("jwt-gate: {error}"))
    }

    /// The verifier, or what is wrong with the configuration:
    ///
    /// - the validation's leeway is longer than the revocation store's
    ///   [grace period](RevocationStore::grace): the store would forget a revoked token while
    ///   the gate still accepted it, so revoked tokens would come back for the difference
    ///   ([`BuildError::LeewayOverGrace`]);
    /// - with [`issuer_keys`](Self::issuer_keys): an issuer is empty or added twice, or the
    ///   validation names no issuer of its own (`Validation::issuers` is `None`): the starting
    ///   keys would then accept their tokens under any `iss` not added here, so the `iss` would
    ///   no longer say who issued a token;
    /// - an issuer added with [`issuer_keys`](Self::issuer_keys) shares a validation that
    ///   checks no audience (`audiences: None`): every token its provider issued for any
    ///   other API would be accepted ([`BuildError::NoAudience`]). For a provider whose
    ///   tokens carry no `aud`, say so with [`issuer_policy`](Self::issuer_policy).
    ///
    /// ```
    /// use jwt_gate::{BuildError, Keys, TokenVerifier};
    ///
    /// let own = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let idp = Keys::hs256(b"another secret, also 32 bytes!!!").unwrap();
    /// let error = TokenVerifier::builder(own)
    ///     .issuer_keys("https://login.example.com", idp)
    ///     .try_build()
    ///     .unwrap_err();
    /// assert_eq!(error, BuildError::NoOwnIssuer);
    /// assert!(error.to_string().contains("Validation::issuer"));
    /// ```
    pub fn try_build(mut self) -> Result<TokenVerifier<C>, BuildError> {
        if !self.issuers.is_empty() {
            let Some(accepted) = self.validation.issuers.as_mut() else {
                return Err(BuildError::NoOwnIssuer);
            };
            for (index, (issuer, _, _)) in self.issuers.iter().enumerate() {
                if issuer.is_empty() {
                    return Err(BuildError::EmptyIssuer);
                }
                if self.issuers[..index]
                    .iter()
                    .any(|(seen, _, _)| seen == issuer)
                {
                    return Err(BuildError::DuplicateIssuer(issuer.to_string()));
                }
                if !accepted.iter().any(|accepted| **accepted == **issuer) {
                    accepted.push(issuer.to_string());
                }
            }
            // A provider issues tokens for many APIs: without an audience, every token it ever
            // issued for any of them would open this one. The verifier's own validation often
            // has none (its own tokens need none), so sharing it is refused; a policy of the
            // issuer's own without one says so on purpose (a provider whose access tokens
            // carry no `aud`).
            if self.validation.audiences.is_none() {
                if let Some((issuer, _, _)) =
                    self.issuers.iter().find(|(_, _, policy)| policy.is_none())
                {
                    return Err(BuildError::NoAudience(issuer.to_string()));
                }
            }
            let (leeway, max_token_len) = (self.validation.leeway, self.validation.max_token_len);
            for policy in self
                .issuers
                .iter_mut()
                .filter_map(|(_, _, policy)| policy.as_mut())
            {
                policy.leeway = leeway;
                policy.max_token_len = max_token_len;
            }
        }
        if let Some(grace) = self.revocations.grace() {
            let leeway = self.validation.leeway;
            // Both sides count whole seconds.
            if leeway.as_secs() > grace.as_secs() {
                return Err(BuildError::LeewayOverGrace { leeway, grace });
            }
        }
        Ok(TokenVerifier {
            inner: Arc::new(VerifierInner {
                keys: self.keys,
                issuers: self.issuers.into_boxed_slice(),
                validation: self.validation,
                revocations: self.revocations,
                clock: self.clock,
                cache: VerifiedCache::new(self.cache_capacity, self.cache_bytes),
                realm: self.realm,
                roles: self.roles,
                metrics: GateMetrics::register(),
            }),
        })
    }
}

/// Why a [`TokenVerifierBuilder`] could not build a verifier
/// ([`try_build`](TokenVerifierBuilder::try_build)). Each message names the setting to change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Other issuers were added with [`issuer_keys`](TokenVerifierBuilder::issuer_keys), but
    /// [`Validation::issuers`] names none for the starting keys.
    NoOwnIssuer,
    /// An issuer added with [`issuer_keys`](TokenVerifierBuilder::issuer_keys) is empty.
    EmptyIssuer,
    /// This issuer was added twice with [`issuer_keys`](TokenVerifierBuilder::issuer_keys).
    DuplicateIssuer(String),
    /// This issuer, added with [`issuer_keys`](TokenVerifierBuilder::issuer_keys), shares a
    /// validation that checks no audience.
    NoAudience(String),
    /// [`Validation::leeway`] is longer than the revocation store's
    /// [grace period](RevocationStore::grace).
    LeewayOverGrace {
        /// The validation's leeway.
        leeway: Duration,
        /// The store's grace period.
        grace: Duration,
    },
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoOwnIssuer => f.write_str(
                "TokenVerifierBuilder::issuer_keys: several issuers are trusted but the \
                 validation names none of its own; set Validation::issuer(...) for the tokens \
                 of the starting keys",
            ),
            Self::EmptyIssuer => {
                f.write_str("TokenVerifierBuilder::issuer_keys: an issuer must not be empty")
            }
            Self::DuplicateIssuer(issuer) => write!(
                f,
                "TokenVerifierBuilder::issuer_keys: the issuer {issuer:?} was added twice"
            ),
            Self::NoAudience(issuer) => write!(
                f,
                "the issuer {issuer:?} is trusted without an audience: every token it issued \
                 for any API would be accepted; set Validation::audience(...) on the \
                 verifier's validation, or give the issuer a policy of its own with \
                 issuer_policy"
            ),
            Self::LeewayOverGrace { leeway, grace } => write!(
                f,
                "Validation::leeway ({leeway:?}) is longer than the revocation store's grace \
                 period ({grace:?}): revoked tokens would be accepted again after they expire; \
                 shorten the leeway or lengthen the store's grace"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Refuses a realm that cannot stand in a quoted string unescaped.
pub(crate) fn assert_realm(realm: &str) {
    assert!(
        realm
            .bytes()
            .all(|byte| (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\'),
        "a realm must be printable ASCII without '\"' or '\\\\'"
    );
}

#[cfg(test)]
mod tests {
    use super::Validation;

    // Signing and verifying need a crypto backend; without one, keys are refused up front.
    #[cfg(any(feature = "rust-crypto", feature = "aws-lc-rs"))]
    mod cached {
        use super::super::{TokenVerifier, Validation};
        use crate::clock::ManualClock;
        use crate::{AuthError, Claims, Key, Keys};

        const NOW: u64 = 1_800_000_000;

        fn key(kid: &str) -> Key {
            Key::hs256(b"a unit-test secret of 32 bytes!!")
                .unwrap()
                .with_kid(kid)
        }

        #[test]
        fn a_cached_token_is_refused_once_it_expires() {
            let clock = ManualClock::new(NOW);
            let keys = Keys::new(key("a")).unwrap();
            let verifier = TokenVerifier::builder(keys.clone())
                .clock(clock.clone())
                .build();
            let token = keys.sign(&Claims::new("alice", NOW, NOW + 60)).unwrap();
            assert_eq!(verifier.verify(&token).unwrap().sub, "alice");
            assert_eq!(verifier.verify(&token).unwrap().sub, "alice");
            let leeway = Validation::default().leeway.as_secs();
            clock.advance(60 + leeway + 1);
            assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
        }

        #[test]
        fn a_cached_token_stays_cached_when_a_key_is_added_and_is_refused_once_its_key_is_removed()
        {
            let keys = Keys::new(key("a")).unwrap();
            let verifier = TokenVerifier::builder(keys.clone())
                .clock(ManualClock::new(NOW))
                .build();
            let token = keys.sign(&Claims::new("alice", NOW, NOW + 900)).unwrap();
            assert!(verifier.verify(&token).is_ok());
            let cached = || {
                let fingerprint = crate::fingerprint::Fingerprint::of(token.as_bytes());
                let generation = verifier.inner.keys.snapshot().generation;
                verifier
                    .inner
                    .cache
                    .get(&fingerprint, generation, |_, _, _| Ok::<_, ()>(()))
                    .is_some()
            };
            assert!(cached());
            // A rotation that only adds (and activates) a key: every earlier verification
            // still holds, so live tokens must not all pay a signature check again.
            keys.add(key("b")).unwrap();
            keys.activate("b").unwrap();
            assert!(cached(), "adding a key emptied the cache");
            assert!(verifier.verify(&token).is_ok());
            keys.remove("a").unwrap();
            assert!(!cached(), "a removed key's tokens are still cached");
            assert_eq!(verifier.verify(&token), Err(AuthError::UnknownKey));
        }

        #[test]
        fn a_zero_capacity_turns_the_cache_off() {
            let keys = Keys::new(key("a")).unwrap();
            let off = TokenVerifier::builder(keys.clone())
                .cache_capacity(0)
                .build();
            assert!(!off.inner.cache.is_enabled());
            let off = TokenVerifier::builder(keys.clone()).cache_bytes(0).build();
            assert!(!off.inner.cache.is_enabled());
            assert!(TokenVerifier::new(keys).inner.cache.is_enabled());
        }

        #[test]
        fn debug_shows_the_keys_and_realm_but_never_the_secret() {
            let verifier = TokenVerifier::builder(Keys::new(key("a")).unwrap())
                .realm("orders")
                .build();
            let shown = format!("{verifier:?}");
            assert!(shown.starts_with("TokenVerifier {"), "{shown}");
            assert!(
                shown.contains("\"orders\"") && shown.contains("keys"),
                "{shown}"
            );
            assert!(!shown.contains("unit-test secret"), "{shown}");
            let builder = TokenVerifier::builder(Keys::new(key("a")).unwrap());
            let shown = format!("{builder:?}");
            assert!(shown.starts_with("TokenVerifierBuilder {"), "{shown}");
            assert!(shown.contains("keys"), "{shown}");
            assert!(!shown.contains("unit-test secret"), "{shown}");
        }

        #[test]
        fn a_verifier_hands_back_the_validation_it_was_built_with() {
            // The auth service issues tokens from it: its issuer, audience and lifetime.
            let validation = Validation::default()
                .issuer("https://auth.example")
                .audience("orders");
            let verifier = TokenVerifier::builder(Keys::new(key("a")).unwrap())
                .validation(validation.clone())
                .build();
            assert_eq!(verifier.validation(), &validation);
        }
    }

    #[test]
    fn typ_matches_with_or_without_the_media_type_prefix_in_any_case() {
        let validation = Validation::default();
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(validation.type_matches(Some(typ)), "{typ}");
        }
        // Only "application/" itself may be left out: another 12-byte head is not stripped.
        for typ in [
            "JWT",
            "at+jwt2",
            "application/jwt",
            "application/",
            "applicationXat+jwt",
            "other/media/at+jwt",
        ] {
            assert!(!validation.type_matches(Some(typ)), "{typ}");
        }
        assert!(!validation.type_matches(None));
    }

    #[test]
    fn the_rfc9068_preset_requires_its_issuer_and_audience() {
        let validation = Validation::rfc9068("https://idp.example", "api");
        assert_eq!(
            validation.issuers,
            Some(vec!["https://idp.example".to_owned()])
        );
        assert_eq!(validation.audiences, Some(vec!["api".to_owned()]));
    }

    #[test]
    #[should_panic(expected = "a realm must be printable ASCII")]
    fn a_realm_that_would_break_the_challenge_is_refused() {
        // Quoted unescaped in `WWW-Authenticate`: a `"` would end it and let the rest be read
        // as further parameters.
        super::assert_realm("shop\", error=\"none");
    }

    #[test]
    fn the_third_party_preset_takes_jwt_at_jwt_or_no_typ_and_nothing_else() {
        let validation = Validation::third_party("https://idp.example", "api");
        for typ in [
            Some("JWT"),
            Some("jwt"),
            Some("at+jwt"),
            Some("application/jwt"),
            None,
        ] {
            assert!(validation.type_matches(typ), "{typ:?}");
        }
        for typ in ["id+jwt", "logout+jwt", "secevent+jwt", "JWS", ""] {
            assert!(!validation.type_matches(Some(typ)), "{typ}");
        }
        let rfc9068 = Validation::rfc9068("https://idp.example", "api");
        assert!(!rfc9068.type_matches(Some("JWT")));
        assert!(!rfc9068.type_matches(None));
        assert_eq!(Validation::own_tokens(), Validation::default());
    }

    #[test]
    #[cfg(any(feature = "rust-crypto", feature = "aws-lc-rs"))]
    #[should_panic(expected = "longer than the revocation store's grace")]
    fn a_shared_store_keeps_its_grace_check() {
        let keys = crate::Keys::hs256([7u8; 32]).unwrap();
        let shared: std::sync::Arc<dyn crate::revocation::RevocationStore> =
            std::sync::Arc::new(crate::revocation::MemoryRevocations::new());
        let _ = super::TokenVerifier::builder(keys)
            .validation(Validation {
                leeway: std::time::Duration::from_secs(600),
                ..Validation::default()
            })
            .revocations(shared)
            .build();
    }
}
