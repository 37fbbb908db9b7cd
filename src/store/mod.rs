//! Where the auth service keeps users and refresh-token sessions.
//!
//! A [`UserStore`] is deliberately small: create a user (atomically unique on the normalised
//! username and on its look-alike key), find one, replace a password hash, and the few refresh-token operations whose
//! atomicity the service relies on. Every operation resolves only once its write is durable
//! in the store; an error means nothing was acknowledged, and the service answers `503`.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::sync::Arc;

pub use crate::BoxFuture;
pub use memory::MemoryUserStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresUserStore, PostgresUserStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteUserStore;

/// The most sessions (refresh-token families) one user keeps: a new login beyond this ends the
/// user's oldest session, so logging in over and over cannot grow a store without bound.
pub const MAX_SESSIONS_PER_USER: usize = 64;

/// A SHA-256 hash of a refresh token: the only form in which a refresh token is stored.
pub type TokenHash = [u8; 32];

/// A registered user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The username after NFKC and case folding: the unique key, and the tokens' `sub`.
    pub key: String,
    /// The username as registered (NFKC-normalised, case kept): what the user sees.
    pub username: String,
    /// The email address.
    pub email: String,
    /// The password hash, in PHC (`$argon2id$…`) or legacy bcrypt (`$2b$…`) form.
    pub password_hash: String,
}

impl User {
    /// The key no two users may share, beside [`key`](Self::key): the Unicode UTS #39
    /// confusable skeleton of the key, so names a reader cannot tell apart (Latin `scope` and
    /// Cyrillic `ѕсоре`, `sc0pe`) are one name. Every [`UserStore`] refuses a second user with
    /// the same look-alike key, as atomically as a second user with the same key.
    ///
    /// ```
    /// use jwt_gate::store::User;
    ///
    /// let user = |key: &str| User {
    ///     key: key.into(),
    ///     username: key.into(),
    ///     email: "x@example.com".into(),
    ///     password_hash: String::new(),
    /// };
    /// // Latin "scope", then "ѕсоре" in Cyrillic letters.
    /// assert_eq!(
    ///     user("scope").lookalike_key(),
    ///     user("\u{455}\u{441}\u{43e}\u{440}\u{435}").lookalike_key()
    /// );
    /// assert_ne!(user("scope").lookalike_key(), user("scape").lookalike_key());
    /// ```
    pub fn lookalike_key(&self) -> String {
        crate::service::identity::lookalike_key(&self.key)
    }
}

// A hash is not a secret in the way a password is, but it must never reach a log either.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("key", &self.key)
            .field("username", &self.username)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// The outcome of [`UserStore::create_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The user was stored.
    Created,
    /// A user with the same key or the same [look-alike key](User::lookalike_key) already
    /// exists; nothing was changed.
    Taken,
}

/// A refresh token being handed out, and the access token issued with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRefresh {
    /// SHA-256 of the refresh token.
    pub hash: TokenHash,
    /// When the refresh token stops working, in seconds since the epoch.
    pub expires_at: u64,
    /// The `jti` of the access token issued alongside.
    pub access_jti: String,
    /// That access token's `exp`.
    pub access_exp: u64,
}

/// An access token that was issued in a session which has just been revoked: the service
/// puts it on the revocation list too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAccess {
    /// The access token's `jti`.
    pub jti: String,
    /// The access token's `exp`.
    pub exp: u64,
}

/// The outcome of [`UserStore::rotate_refresh_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was valid; it is now spent, and `next` belongs to the same family.
    Rotated {
        /// The key of the user the family belongs to.
        user_key: String,
    },
    /// The presented token had already been spent: someone replayed it. The whole family has
    /// been revoked; these are the access tokens it issued that have not yet expired.
    Reused {
        /// Access tokens to revoke.
        live_access: Vec<LiveAccess>,
    },
    /// Unknown, expired, or from a revoked family. Nothing was changed.
    Invalid,
}

/// The store could not answer or record; nothing was acknowledged. The message is for logs
/// only and never reaches a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStoreError {
    message: String,
}

impl UserStoreError {
    /// An error with a message for logs.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for UserStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user store unavailable: {}", self.message)
    }
}

impl std::error::Error for UserStoreError {}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, UserStoreError>;

/// Users and refresh-token sessions, as the auth service needs them.
///
/// Refresh tokens are grouped in *families*: one per login, each rotation adds the next
/// token to the family and spends the one presented. A spent token presented again means
/// it was stolen (or the client replayed it), so the whole family is revoked (OAuth 2.0
/// Security BCP §4.14.2).
///
/// ```
/// use jwt_gate::store::{MemoryUserStore, Registration, User, UserStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryUserStore::new();
/// let alice = User {
///     key: "alice".into(),
///     username: "Alice".into(),
///     email: "alice@example.com".into(),
///     password_hash: "$argon2id$…".into(),
/// };
/// assert_eq!(store.create_user(alice.clone()).await.unwrap(), Registration::Created);
/// assert_eq!(store.create_user(alice).await.unwrap(), Registration::Taken);
/// assert_eq!(store.find_user("alice").await.unwrap().unwrap().username, "Alice");
/// # });
/// ```
pub trait UserStore: Send + Sync + 'static {
    /// Stores `user` unless a user with the same `key` or the same
    /// [`lookalike_key`](User::lookalike_key) exists: atomically, so of any number of
    /// concurrent registrations of one name, however spelled, exactly one is
    /// [`Registration::Created`].
    fn create_user(&self, user: User) -> BoxFuture<'_, StoreResult<Registration>>;

    /// The user whose key is `key`.
    fn find_user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<User>>>;

    /// Replaces the password hash of the user `key` (a legacy hash upgraded on login).
    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        password_hash: String,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Starts a new family for `user_key`, whose first token is `token`. When the user then has
    /// more than [`MAX_SESSIONS_PER_USER`] families, the oldest are forgotten.
    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        family: &'a str,
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Spends the token hashed as `presented` and adds `next` to its family, all at once:
    /// of two concurrent uses of one token, one rotates and the other is a reuse.
    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<Rotation>>;

    /// Revokes the family whose token was issued with the access token `access_jti` (a
    /// logout): its refresh tokens stop working. Unknown `jti`s are not an error.
    fn revoke_session<'a>(&'a self, access_jti: &'a str) -> BoxFuture<'a, StoreResult<()>>;

    /// Revokes every family of `user_key` (logout everywhere), returning the access tokens
    /// they issued that are still alive at `now`.
    fn revoke_all_sessions<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<LiveAccess>>>;
}

/// A shared store is a store: pass an `Arc` of one to several services (or a
/// `Arc<dyn UserStore>` chosen at run time).
impl<T: UserStore + ?Sized> UserStore for Arc<T> {
    fn create_user(&self, user: User) -> BoxFuture<'_, StoreResult<Registration>> {
        (**self).create_user(user)
    }

    fn find_user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<User>>> {
        (**self).find_user(key)
    }

    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        password_hash: String,
    ) -> BoxFuture<'a, StoreResult<()>> {
        (**self).update_password_hash(key, password_hash)
    }

    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        family: &'a str,
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        (**self).insert_refresh_token(user_key, family, token)
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        (**self).rotate_refresh_token(presented, now, next)
    }

    fn revoke_session<'a>(&'a self, access_jti: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        (**self).revoke_session(access_jti)
    }

    fn revoke_all_sessions<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<LiveAccess>>> {
        (**self).revoke_all_sessions(user_key, now)
    }
}
