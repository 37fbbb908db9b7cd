//! Revoked tokens: the list the gate consults after a token has proved itself genuine.
//!
//! A [`RevocationStore`] answers three questions: was this token (by `jti`) revoked, was its
//! session (by `sid`) logged out, and were this subject's tokens revoked wholesale ("log out
//! everywhere", a password change)? The gate
//! asks only after the signature and claims have verified, so forged tokens cost nothing and
//! can never add to the list.
//!
//! [`MemoryRevocations`] serves one process. With feature `redis`, `RedisRevocations` shares
//! one list between every gate and auth service of a fleet.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisRevocations, RedisRevocationsBuilder};
pub use memory::{MemoryRevocations, DEFAULT_GRACE};

pub use crate::BoxFuture;

/// What the gate knows of a verified token when it asks about revocation.
#[derive(Debug, Clone, Copy)]
pub struct TokenId<'a> {
    /// The token's `jti` (for a token without one, accepted by a policy that makes `jti`
    /// optional: its derived id, [`Claims::derive_jti`](crate::Claims::derive_jti)).
    pub jti: &'a str,
    /// The token's `sub`.
    pub sub: &'a str,
    /// The token's `iss` when another issuer's keys verified it
    /// ([`TokenVerifierBuilder::issuer_keys`](crate::TokenVerifierBuilder::issuer_keys) and
    /// the like); `None` for a token of the verifier's own keys. A subject is one issuer's
    /// name for someone: look subject cut-offs up by [`subject_key`](Self::subject_key).
    pub issuer: Option<&'a str>,
    /// The token's `sid` (session id), when it has one.
    pub sid: Option<&'a str>,
    /// The token's `iat`.
    pub iat: u64,
    /// The token's `exp`.
    pub exp: u64,
}

impl<'a> TokenId<'a> {
    /// What the gate asks about verified `claims` of its own keys (the gate sets
    /// [`issuer`](Self::issuer) itself for another issuer's).
    pub fn of<C>(claims: &'a crate::Claims<C>) -> Self {
        Self {
            jti: &claims.jti,
            sub: &claims.sub,
            issuer: None,
            sid: claims.sid.as_deref(),
            iat: claims.iat,
            exp: claims.exp,
        }
    }

    /// The name subject cut-offs of this token are recorded under: its `sub` for a token of
    /// the verifier's own keys, [`issuer_subject`] for another issuer's. A local user who
    /// registers a provider user's `sub` as their name and logs out everywhere thus ends
    /// only their own tokens.
    ///
    /// ```
    /// use jwt_gate::revocation::{issuer_subject, TokenId};
    ///
    /// let own = TokenId { jti: "j1", sub: "alice", issuer: None, sid: None, iat: 1, exp: 2 };
    /// assert_eq!(own.subject_key(), "alice");
    /// let theirs = TokenId { issuer: Some("https://idp.example"), ..own };
    /// assert_eq!(theirs.subject_key(), issuer_subject("https://idp.example", "alice"));
    /// ```
    pub fn subject_key(&self) -> Cow<'a, str> {
        match self.issuer {
            None => Cow::Borrowed(self.sub),
            Some(iss) => Cow::Owned(issuer_subject(iss, self.sub)),
        }
    }
}

/// The name under which a cut-off of subject `sub` of issuer `iss` (one of a verifier's
/// other issuers) is recorded, and which
/// [`revoke_issuer_subject`](RevocationStore::revoke_issuer_subject) records: a NUL, the
/// issuer's length, `:`, the issuer, then the subject. No username or subject of the
/// verifier's own keys starts with a NUL, and the length keeps two issuers apart.
pub fn issuer_subject(iss: &str, sub: &str) -> String {
    format!("\0{}:{iss}{sub}", iss.len())
}

/// A store's answer to "is this token revoked?".
pub enum RevocationCheck {
    /// Not revoked.
    Valid,
    /// Revoked: by `jti`, or by a cut-off on its subject.
    Revoked,
    /// The store cannot tell right now; the gate fails closed (`503`).
    Unavailable,
    /// The answer needs I/O. Stores that can answer from memory never return this, which
    /// keeps the gate's hot path free of allocation.
    Pending(BoxFuture<'static, RevocationCheck>),
}

impl fmt::Debug for RevocationCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Valid => "Valid",
            Self::Revoked => "Revoked",
            Self::Unavailable => "Unavailable",
            Self::Pending(_) => "Pending",
        })
    }
}

impl RevocationCheck {
    /// The answer as a refusal, if it is one. A check still pending counts as unavailable:
    /// callers that can wait await it first.
    pub(crate) fn verdict(self) -> Result<(), crate::AuthError> {
        match self {
            Self::Valid => Ok(()),
            Self::Revoked => Err(crate::AuthError::Revoked),
            Self::Unavailable | Self::Pending(_) => {
                Err(crate::AuthError::RevocationStoreUnavailable)
            }
        }
    }
}

/// The store could not record or answer; nothing was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationError {
    message: String,
}

impl RevocationError {
    /// An error with a message for logs (never shown to clients).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "revocation store unavailable: {}", self.message)
    }
}

impl std::error::Error for RevocationError {}

/// A list of revoked tokens, shared by every gate and auth service built with it.
///
/// Entries need only outlive the tokens they name: once a token has expired the gate
/// refuses it anyway, so a store may forget it (plus the gate's leeway).
///
/// ```
/// use jwt_gate::revocation::{MemoryRevocations, RevocationCheck, RevocationStore, TokenId};
///
/// # tokio_test_block_on(async {
/// let store = MemoryRevocations::new();
/// let token = TokenId { jti: "j1", sub: "alice", issuer: None, sid: None, iat: 1_700_000_000, exp: 4_000_000_000 };
/// assert!(matches!(store.check(&token), RevocationCheck::Valid));
/// store.revoke("j1", token.exp).await.unwrap();
/// assert!(matches!(store.check(&token), RevocationCheck::Revoked));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub trait RevocationStore: Send + Sync + 'static {
    /// Whether `token` is revoked. Called on every authenticated request: answer from memory
    /// when possible. Subject cut-offs are matched by [`TokenId::subject_key`], not `sub`
    /// alone: another issuer's `alice` is not the verifier's own `alice`, and
    /// [`revoke_issuer_subject`](Self::revoke_issuer_subject) records under that key.
    fn check(&self, token: &TokenId<'_>) -> RevocationCheck;

    /// Revokes the token whose `jti` is given, until `expires_at` (its `exp`). Resolves only
    /// once the revocation is durable in the store.
    fn revoke(&self, jti: &str, expires_at: u64) -> BoxFuture<'_, Result<(), RevocationError>>;

    /// Revokes every token of `sub` issued before `issued_before` (`iat < issued_before`).
    /// The cut-off may be forgotten after `keep_until`: `issued_before` plus the longest token
    /// lifetime accepted. It applies to the tokens whose
    /// [`subject_key`](TokenId::subject_key) is `sub`: those of the verifier's own keys
    /// (another issuer's subjects: [`revoke_issuer_subject`](Self::revoke_issuer_subject)).
    fn revoke_subject(
        &self,
        sub: &str,
        issued_before: u64,
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>>;

    /// Revokes every token of subject `sub` of issuer `iss`, one of the verifier's other
    /// issuers, issued before `issued_before`: a provider's back-channel logout, or an
    /// operator cutting off a provider's user. Recorded as a subject cut-off of
    /// [`issuer_subject`]`(iss, sub)`, which tokens of the verifier's own keys never match.
    fn revoke_issuer_subject(
        &self,
        iss: &str,
        sub: &str,
        issued_before: u64,
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        self.revoke_subject(&issuer_subject(iss, sub), issued_before, keep_until)
    }

    /// Revokes every token whose `sid` is one of `sessions`, whenever it was issued (a
    /// logout, or a refresh token replayed): all of them or, on error, none. The entries may
    /// be forgotten after `keep_until`.
    ///
    /// The default refuses, so that a store written before sessions existed makes logout
    /// fail with `503` rather than claim a revocation it cannot enforce.
    fn revoke_sessions(
        &self,
        sessions: &[&str],
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        let _ = (sessions, keep_until);
        Box::pin(std::future::ready(Err(RevocationError::new(
            "this revocation store cannot revoke sessions",
        ))))
    }

    /// How long after a token's expiry (or a cut-off's `keep_until`) the store still remembers
    /// it. [`TokenVerifierBuilder::build`](crate::TokenVerifierBuilder::build) refuses a
    /// leeway longer than this, since a token the gate still accepts within its leeway must
    /// still be known as revoked. `None` (the default) says the store keeps entries at least
    /// as long as any leeway, or cannot tell; then nothing is checked.
    fn grace(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A shared store is a store: give an `Arc` of one (or a `Arc<dyn RevocationStore>` chosen
/// at run time) to every verifier and auth service that should see the same revocations.
impl<T: RevocationStore + ?Sized> RevocationStore for Arc<T> {
    fn check(&self, token: &TokenId<'_>) -> RevocationCheck {
        (**self).check(token)
    }

    fn revoke(&self, jti: &str, expires_at: u64) -> BoxFuture<'_, Result<(), RevocationError>> {
        (**self).revoke(jti, expires_at)
    }

    fn revoke_subject(
        &self,
        sub: &str,
        issued_before: u64,
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        (**self).revoke_subject(sub, issued_before, keep_until)
    }

    fn revoke_issuer_subject(
        &self,
        iss: &str,
        sub: &str,
        issued_before: u64,
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        (**self).revoke_issuer_subject(iss, sub, issued_before, keep_until)
    }

    fn revoke_sessions(
        &self,
        sessions: &[&str],
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        (**self).revoke_sessions(sessions, keep_until)
    }

    fn grace(&self) -> Option<std::time::Duration> {
        (**self).grace()
    }
}
