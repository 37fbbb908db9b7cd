//! Where the auth service keeps users and refresh-token sessions.
//!
//! A [`UserStore`] is deliberately small: create a user (atomically unique on the normalised
//! username and on its look-alike key), find one, replace a password hash, grant or revoke
//! roles and scopes ([`GrantChange`]), and the few refresh-token operations whose
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
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresUserStore, PostgresUserStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteUserStore;

/// The most sessions (refresh-token families) one user keeps: a new login beyond this ends the
/// user's oldest session, so logging in over and over cannot grow a store without bound.
pub const MAX_SESSIONS_PER_USER: usize = 64;

/// A SHA-256 hash of a refresh token: the only form in which a refresh token is stored.
pub type TokenHash = [u8; 32];

/// A registered user.
///
/// A new user holds no roles and no scopes; grant them with [`UserStore::change_grants`].
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
    /// The roles the user holds, sorted, each once: every access token issued to the user
    /// carries them at the verifier's [roles claim](crate::TokenVerifierBuilder::roles_claim).
    pub roles: Vec<String>,
    /// The scopes the user may be granted, sorted, each once: a token grants those the
    /// client asked for (all of them when it asked for none).
    pub scopes: Vec<String>,
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
    ///     roles: Vec::new(),
    ///     scopes: Vec::new(),
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
            .field("roles", &self.roles)
            .field("scopes", &self.scopes)
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

/// The longest role or scope name a store keeps, in bytes: every access token carries the
/// names, so they stay short.
pub const MAX_GRANT_NAME_BYTES: usize = 128;

/// A role or scope name that cannot be granted: empty, longer than
/// [`MAX_GRANT_NAME_BYTES`], or holding a character outside RFC 6749 §3.3's `scope-token`
/// (printable ASCII without space, `"` and `\`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidGrantName {
    kind: &'static str,
    name: String,
}

impl fmt::Display for InvalidGrantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} name {:?} cannot be granted: names are 1 to {MAX_GRANT_NAME_BYTES} bytes of \
             printable ASCII without spaces, '\"' or '\\' (RFC 6749 §3.3)",
            self.kind, self.name
        )
    }
}

impl std::error::Error for InvalidGrantName {}

/// Whether `name` may name a role or scope: 1 to [`MAX_GRANT_NAME_BYTES`] bytes of RFC 6749
/// §3.3's `scope-token` characters (`%x21 / %x23-5B / %x5D-7E`), so a space-separated
/// `scope` claim splits back into exactly the names granted.
///
/// ```
/// use jwt_gate::store::is_grant_name;
///
/// assert!(is_grant_name("orders:write"));
/// assert!(!is_grant_name("orders write"));
/// assert!(!is_grant_name(""));
/// ```
pub fn is_grant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_GRANT_NAME_BYTES
        && name
            .bytes()
            .all(|byte| byte > 0x20 && byte < 0x7f && byte != b'"' && byte != b'\\')
}

/// Roles and scopes to grant to or revoke from one user, applied at once by
/// [`UserStore::change_grants`]. Each name is checked as it is added; when one name is both
/// granted and revoked, the later call wins.
///
/// A grant takes effect on the user's next login or refresh: tokens already issued keep what
/// they carry until they expire (at most the access-token lifetime), and a refresh never
/// adds a scope its session was not granted at login.
///
/// ```
/// use jwt_gate::store::{GrantChange, MemoryUserStore, User, UserStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// # let store = MemoryUserStore::new();
/// # store.create_user(User {
/// #     key: "alice".into(), username: "alice".into(), email: "a@example.com".into(),
/// #     password_hash: String::new(), roles: Vec::new(), scopes: Vec::new(),
/// # }).await.unwrap();
/// let change = GrantChange::new()
///     .grant_role("admin")?
///     .grant_scope("orders:read")?
///     .grant_scope("orders:write")?;
/// assert!(store.change_grants("alice", &change).await.unwrap());
/// let alice = store.find_user("alice").await.unwrap().unwrap();
/// assert_eq!(alice.roles, ["admin"]);
/// assert_eq!(alice.scopes, ["orders:read", "orders:write"]);
///
/// // Nobody by that name: nothing changes.
/// assert!(!store.change_grants("nobody", &change).await.unwrap());
/// assert!(GrantChange::new().grant_scope("two words").is_err());
/// # Ok::<(), jwt_gate::store::InvalidGrantName>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantChange {
    /// Role name → granted (`true`) or revoked.
    roles: std::collections::BTreeMap<String, bool>,
    /// Scope name → granted (`true`) or revoked.
    scopes: std::collections::BTreeMap<String, bool>,
}

impl GrantChange {
    /// A change that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `name` as granted or revoked in `names`, once it is checked.
    fn set(
        names: &mut std::collections::BTreeMap<String, bool>,
        kind: &'static str,
        name: &str,
        granted: bool,
    ) -> Result<(), InvalidGrantName> {
        if !is_grant_name(name) {
            return Err(InvalidGrantName {
                kind,
                name: name.to_owned(),
            });
        }
        names.insert(name.to_owned(), granted);
        Ok(())
    }

    /// Grants the role `role` too.
    pub fn grant_role(mut self, role: &str) -> Result<Self, InvalidGrantName> {
        Self::set(&mut self.roles, "role", role, true)?;
        Ok(self)
    }

    /// Revokes the role `role` too (not holding it is fine).
    pub fn revoke_role(mut self, role: &str) -> Result<Self, InvalidGrantName> {
        Self::set(&mut self.roles, "role", role, false)?;
        Ok(self)
    }

    /// Grants the scope `scope` too.
    pub fn grant_scope(mut self, scope: &str) -> Result<Self, InvalidGrantName> {
        Self::set(&mut self.scopes, "scope", scope, true)?;
        Ok(self)
    }

    /// Revokes the scope `scope` too (not holding it is fine).
    pub fn revoke_scope(mut self, scope: &str) -> Result<Self, InvalidGrantName> {
        Self::set(&mut self.scopes, "scope", scope, false)?;
        Ok(self)
    }

    /// Applies the change to a user's `roles` and `scopes`, leaving each sorted and free of
    /// duplicates: what a store does inside its own atomic update.
    pub fn apply(&self, roles: &mut Vec<String>, scopes: &mut Vec<String>) {
        fn apply_to(names: &mut Vec<String>, changes: &std::collections::BTreeMap<String, bool>) {
            let mut set: std::collections::BTreeSet<String> = names.drain(..).collect();
            for (name, granted) in changes {
                if *granted {
                    set.insert(name.clone());
                } else {
                    set.remove(name);
                }
            }
            names.extend(set);
        }
        apply_to(roles, &self.roles);
        apply_to(scopes, &self.scopes);
    }
}

/// How many spent refresh tokens a family remembers besides its live one: a replay of any
/// of them is recognised as reuse and ends the family. An older one has been forgotten and
/// is refused as unknown, leaving the family alone. This bounds a family's storage however
/// often it is rotated.
pub const SPENT_TOKENS_KEPT: usize = 16;

/// How long the window of [`UserStore::rotate_refresh_token`]'s rate limit is, in seconds.
pub const ROTATION_WINDOW_SECS: u64 = 60;

/// A refresh token being handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRefresh {
    /// SHA-256 of the refresh token.
    pub hash: TokenHash,
    /// When the refresh token stops working, in seconds since the epoch. A store lowers it to
    /// the family's own end when that comes first.
    pub expires_at: u64,
}

/// The session a refresh token belongs to, found by [`UserStore::refresh_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshSession {
    /// The key of the user the session belongs to.
    pub user_key: String,
    /// The session's id (`sid`).
    pub session: String,
}

/// The outcome of [`UserStore::rotate_refresh_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was valid; it is now spent, and `next` belongs to the same family.
    Rotated {
        /// The key of the user the family belongs to.
        user_key: String,
        /// The family's id: the session id (`sid`) of the access tokens issued in it.
        session: String,
        /// The scopes granted at the family's login: no token of the session grants more.
        scopes: Vec<String>,
    },
    /// The presented token had already been spent: someone replayed it. The whole family has
    /// just been revoked; the service revokes the session's access tokens.
    Reused {
        /// The family's id.
        session: String,
    },
    /// The presented token belongs to a family revoked earlier (a logout, a replay). Nothing
    /// was changed; the service makes sure the session's access tokens are revoked, which
    /// retries a revocation that failed the first time.
    Ended {
        /// The family's id.
        session: String,
    },
    /// The family was rotated its limit of times within the current window; nothing was
    /// changed, and the presented token still works after `retry_after` seconds.
    Throttled {
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// Unknown, expired, or past its family's lifetime. Nothing was changed.
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
/// Security BCP §4.14.2). A family is also a session: its id is the `sid` of every access
/// token issued in it. Its storage is bounded: the live token plus the last
/// [`SPENT_TOKENS_KEPT`] spent ones, and it ends at an absolute instant however often it
/// is rotated.
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
///     roles: Vec::new(),
///     scopes: Vec::new(),
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

    /// Applies `change` to the roles and scopes of the user `key`, atomically: of concurrent
    /// changes to one user none is lost. `false` when there is no such user (nothing changed).
    fn change_grants<'a>(
        &'a self,
        key: &'a str,
        change: &'a GrantChange,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Starts a new family `session` for `user_key`, granted `scopes`, whose first token is
    /// `token` and which ends at `expires_at` whatever its rotations. When the user then has
    /// more than [`MAX_SESSIONS_PER_USER`] families, the oldest are forgotten.
    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        session: &'a str,
        expires_at: u64,
        scopes: &'a [String],
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// The session of the refresh token hashed as `presented`, changing nothing: whether the
    /// token is live or already spent, and whether its session was revoked, as long as
    /// neither the token nor its session has ended by `now`.
    fn refresh_session<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Option<RefreshSession>>>;

    /// Spends the token hashed as `presented` and adds `next` to its family, all at once:
    /// of two concurrent uses of one token, one rotates and the other is a reuse. A family
    /// rotated `max_per_window` times within [`ROTATION_WINDOW_SECS`] is
    /// [`Rotation::Throttled`] until the window ends; a replay is recognised even then.
    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
        max_per_window: u32,
    ) -> BoxFuture<'a, StoreResult<Rotation>>;

    /// The families of `user_key` that have not ended by `now`, revoked ones included.
    fn sessions_of<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>>;

    /// Revokes these families, all or (on error) none: their refresh tokens stop working.
    /// Unknown ids are not an error.
    fn end_sessions<'a>(&'a self, sessions: &'a [&'a str]) -> BoxFuture<'a, StoreResult<()>>;
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

    fn change_grants<'a>(
        &'a self,
        key: &'a str,
        change: &'a GrantChange,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        (**self).change_grants(key, change)
    }

    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        session: &'a str,
        expires_at: u64,
        scopes: &'a [String],
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        (**self).insert_refresh_token(user_key, session, expires_at, scopes, token)
    }

    fn refresh_session<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Option<RefreshSession>>> {
        (**self).refresh_session(presented, now)
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
        max_per_window: u32,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        (**self).rotate_refresh_token(presented, now, next, max_per_window)
    }

    fn sessions_of<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        (**self).sessions_of(user_key, now)
    }

    fn end_sessions<'a>(&'a self, sessions: &'a [&'a str]) -> BoxFuture<'a, StoreResult<()>> {
        (**self).end_sessions(sessions)
    }
}
