//! Minting tokens: signed access tokens the gate accepts, and opaque refresh tokens that
//! exist in storage only as hashes.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::claims::new_jti;
use crate::store::{IssuedRefresh, TokenHash, User};
use crate::{Claims, KeyError, TokenVerifier};

/// The builder's claims hook, its output already made a JSON object.
pub(crate) type ClaimsHook =
    Arc<dyn Fn(&User) -> Result<serde_json::Map<String, serde_json::Value>, String> + Send + Sync>;

/// Claims only the service sets: a hook adding one would change what the gate checks.
const SERVICE_CLAIMS: [&str; 10] = [
    "sub", "exp", "iat", "nbf", "jti", "sid", "iss", "aud", "scope", "scp",
];

/// What an access token grants beyond its subject and session.
pub(crate) struct Granted<'a> {
    /// Sorted, each once; carried as one space-separated `scope` claim when not empty.
    pub(crate) scopes: &'a [String],
    /// The user, whose roles the token carries and whom the claims hook is given.
    pub(crate) user: &'a User,
}

/// Why an access token could not be signed: configuration, never the client's doing.
#[derive(Debug)]
pub(crate) enum SigningError {
    Key(KeyError),
    /// The claims hook failed, returned something other than a map, or set a claim the
    /// service sets itself.
    Hook(String),
}

impl std::fmt::Display for SigningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(error) => error.fmt(f),
            Self::Hook(why) => write!(f, "the extra_claims hook {why}"),
        }
    }
}

/// A refresh token as the client receives it: 256 random bits, base64url (43 characters).
pub(crate) struct RefreshSecret {
    pub(crate) token: String,
    pub(crate) hash: TokenHash,
}

impl RefreshSecret {
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).expect("the operating system's random source failed");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash_refresh_token(&token);
        Self { token, hash }
    }
}

/// The stored form of a refresh token. A plain hash suffices (no salt, no stretching): the
/// token is 256 random bits, not something a person chose.
pub(crate) fn hash_refresh_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// An access token about to be issued: its id and times are fixed before its subject and
/// session are known (a refresh rotation learns them from the store).
pub(crate) struct AccessGrant {
    pub(crate) jti: String,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
}

/// Signs tokens with the verifier's keys, so that every gate built from the same verifier
/// accepts them: `iss` and `aud` follow its [`Validation`](crate::Validation).
#[derive(Clone)]
pub(crate) struct TokenIssuer {
    pub(crate) verifier: TokenVerifier,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
    /// How long a session (refresh-token family) lasts from its login, however it is used.
    pub(crate) session_lifetime: Duration,
    /// How many rotations a family may make per rotation window.
    pub(crate) max_rotations_per_minute: u32,
    /// Adds the application's own claims to every access token.
    pub(crate) claims_hook: Option<ClaimsHook>,
}

impl TokenIssuer {
    pub(crate) fn now(&self) -> u64 {
        self.verifier.clock().now()
    }

    pub(crate) fn grant(&self, now: u64) -> AccessGrant {
        AccessGrant {
            jti: new_jti(),
            iat: now,
            exp: now.saturating_add(self.access_ttl.as_secs()),
        }
    }

    /// The signed access token for `granted.user` in `session`: `typ: at+jwt` and `kid`
    /// come from [`Keys::sign`](crate::Keys::sign). It carries the granted scopes as `scope`,
    /// the user's roles at the verifier's roles claim (where the gate reads them), and
    /// whatever the claims hook adds beside them.
    pub(crate) fn sign(
        &self,
        session: &str,
        grant: &AccessGrant,
        granted: &Granted<'_>,
    ) -> Result<String, SigningError> {
        let user = granted.user;
        let mut claims = Claims::new(user.key.as_str(), grant.iat, grant.exp).with_session(session);
        claims.jti.clone_from(&grant.jti);
        let validation = self.verifier.validation();
        if let Some(issuer) = validation.issuers.as_ref().and_then(|all| all.first()) {
            claims = claims.with_issuer(issuer.clone());
        }
        for audience in validation.audiences.iter().flatten() {
            claims = claims.with_audience(audience.clone());
        }
        let mut payload = match serde_json::to_value(&claims) {
            Ok(serde_json::Value::Object(payload)) => payload,
            _ => {
                let why = "the claims did not serialize as a JSON object".to_owned();
                return Err(SigningError::Key(KeyError::Signing(why)));
            }
        };
        let roles_claim = self.verifier.roles_claim();
        if let Some(hook) = &self.claims_hook {
            for (name, value) in hook(user).map_err(SigningError::Hook)? {
                let first_segment = roles_claim.segments().next() == Some(name.as_str());
                if SERVICE_CLAIMS.contains(&name.as_str()) || first_segment {
                    return Err(SigningError::Hook(format!(
                        "returned the claim {name:?}, which the service sets itself"
                    )));
                }
                payload.insert(name, value);
            }
        }
        if !granted.scopes.is_empty() {
            payload.insert("scope".to_owned(), granted.scopes.join(" ").into());
        }
        if !user.roles.is_empty() {
            // `realm_access.roles` becomes {"realm_access": {"roles": [...]}}.
            let mut value = serde_json::Value::from(user.roles.clone());
            let mut segments: Vec<&str> = roles_claim.segments().collect();
            let first = segments.remove(0);
            for segment in segments.into_iter().rev() {
                value = serde_json::json!({ segment: value });
            }
            payload.insert(first.to_owned(), value);
        }
        self.verifier
            .keys()
            .sign(&payload)
            .map_err(SigningError::Key)
    }

    /// A refresh token to issue at `now`, and what the store keeps of it.
    pub(crate) fn refresh_token(&self, now: u64) -> (String, IssuedRefresh) {
        let secret = RefreshSecret::generate();
        let issued = IssuedRefresh {
            hash: secret.hash,
            expires_at: now.saturating_add(self.refresh_ttl.as_secs()),
        };
        (secret.token, issued)
    }

    /// A fresh id for a refresh-token family (one per login): the `sid` of its access tokens.
    pub(crate) fn new_family() -> String {
        new_jti()
    }

    /// When a session started at `now` ends, however often it is refreshed.
    pub(crate) fn session_end(&self, now: u64) -> u64 {
        now.saturating_add(self.session_lifetime.as_secs())
    }

    /// How long after `now` a subject-wide cut-off must be kept: until every token issued
    /// before it has expired, leeway included.
    pub(crate) fn cutoff_keep_until(&self, now: u64) -> u64 {
        let validation = self.verifier.validation();
        let longest = validation
            .max_lifetime
            .unwrap_or(self.access_ttl)
            .max(self.access_ttl);
        now.saturating_add(longest.as_secs())
            .saturating_add(validation.leeway.as_secs())
    }
}
