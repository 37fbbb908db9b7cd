//! Minting tokens: signed access tokens the gate accepts, and opaque refresh tokens that
//! exist in storage only as hashes.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::claims::new_jti;
use crate::store::{IssuedRefresh, TokenHash};
use crate::{Claims, KeyError, TokenVerifier};

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

    /// The signed access token for `sub` in `session`: `typ: at+jwt` and `kid` come from
    /// [`Keys::sign`](crate::Keys::sign).
    pub(crate) fn sign(
        &self,
        sub: &str,
        session: &str,
        grant: &AccessGrant,
    ) -> Result<String, KeyError> {
        let mut claims = Claims::new(sub, grant.iat, grant.exp).with_session(session);
        claims.jti.clone_from(&grant.jti);
        let validation = self.verifier.validation();
        if let Some(issuer) = validation.issuers.as_ref().and_then(|all| all.first()) {
            claims = claims.with_issuer(issuer.clone());
        }
        for audience in validation.audiences.iter().flatten() {
            claims = claims.with_audience(audience.clone());
        }
        self.verifier.keys().sign(&claims)
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
