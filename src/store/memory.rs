//! Users and sessions in process memory: for tests, demos and single-process apps that can
//! afford to forget everything on restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    BoxFuture, IssuedRefresh, LiveAccess, Registration, Rotation, StoreResult, TokenHash, User,
    UserStore, MAX_SESSIONS_PER_USER,
};
use crate::clock::{Clock, SystemClock};

/// How often, at most, an insert sweeps out refresh tokens that have expired.
const PURGE_INTERVAL_SECS: u64 = 60;

/// A [`UserStore`] in memory. Clones share the same users.
///
/// Expired refresh tokens are swept out as new ones are issued, so memory is bounded by the
/// live sessions. Nothing survives the process: use `SqliteUserStore` (feature `sqlite`) for that.
///
/// ```
/// use jwt_gate::store::MemoryUserStore;
///
/// let users = MemoryUserStore::new();
/// let same_users = users.clone();
/// # let _ = same_users;
/// ```
#[derive(Clone)]
pub struct MemoryUserStore {
    inner: Arc<Inner>,
}

struct Inner {
    users: Mutex<Users>,
    sessions: Mutex<Sessions>,
    clock: Arc<dyn Clock>,
}

/// The users by key, and the look-alike keys taken, under one lock so that both are checked
/// and claimed at once.
#[derive(Default)]
struct Users {
    by_key: HashMap<String, User>,
    lookalikes: HashSet<String>,
}

#[derive(Default)]
struct Sessions {
    tokens: HashMap<TokenHash, RefreshRow>,
    families: HashMap<String, Family>,
    /// Each user's families, oldest first.
    by_user: HashMap<String, VecDeque<String>>,
    /// The family each access token was issued in, for logout.
    by_access: HashMap<String, String>,
    next_purge: u64,
}

struct RefreshRow {
    family: String,
    expires_at: u64,
    spent: bool,
    access_jti: String,
    access_exp: u64,
}

struct Family {
    user_key: String,
    revoked: bool,
    members: Vec<TokenHash>,
}

impl std::fmt::Debug for MemoryUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryUserStore")
            .field("users", &lock(&self.inner.users).by_key.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryUserStore {
    fn default() -> Self {
        Self::new()
    }
}

// No operation leaves a map half-updated when it panics, so a poisoned lock is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryUserStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// An empty store that reads time (for sweeping expired sessions) from `clock`.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                users: Mutex::new(Users::default()),
                sessions: Mutex::new(Sessions::default()),
                clock: Arc::new(clock),
            }),
        }
    }

    /// How many users are registered.
    pub fn user_count(&self) -> usize {
        lock(&self.inner.users).by_key.len()
    }

    /// How many refresh tokens (live or spent but not yet expired) are kept.
    pub fn refresh_token_count(&self) -> usize {
        lock(&self.inner.sessions).tokens.len()
    }
}

impl Sessions {
    fn purge_expired(&mut self, now: u64) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now + PURGE_INTERVAL_SECS;
        let by_access = &mut self.by_access;
        self.tokens.retain(|_, row| {
            let keep = row.expires_at > now;
            if !keep {
                by_access.remove(&row.access_jti);
            }
            keep
        });
        let tokens = &self.tokens;
        self.families.retain(|_, family| {
            family.members.retain(|hash| tokens.contains_key(hash));
            !family.members.is_empty()
        });
        let families = &self.families;
        self.by_user.retain(|_, owned| {
            owned.retain(|family| families.contains_key(family));
            !owned.is_empty()
        });
    }

    /// Starts `family` for `user_key`, dropping the user's oldest sessions beyond the cap.
    fn start_family(&mut self, user_key: &str, family: &str) {
        let owned = self.by_user.entry(user_key.to_owned()).or_default();
        owned.push_back(family.to_owned());
        let excess = owned.len().saturating_sub(MAX_SESSIONS_PER_USER);
        let dropped: Vec<String> = owned.drain(..excess).collect();
        for old in dropped {
            self.remove_family(&old);
        }
        self.families.insert(
            family.to_owned(),
            Family {
                user_key: user_key.to_owned(),
                revoked: false,
                members: Vec::new(),
            },
        );
    }

    fn remove_family(&mut self, family: &str) {
        let Some(entry) = self.families.remove(family) else {
            return;
        };
        for hash in entry.members {
            if let Some(row) = self.tokens.remove(&hash) {
                self.by_access.remove(&row.access_jti);
            }
        }
    }

    fn add(&mut self, family: &str, token: IssuedRefresh) {
        if let Some(entry) = self.families.get_mut(family) {
            entry.members.push(token.hash);
        }
        self.by_access
            .insert(token.access_jti.clone(), family.to_owned());
        self.tokens.insert(
            token.hash,
            RefreshRow {
                family: family.to_owned(),
                expires_at: token.expires_at,
                spent: false,
                access_jti: token.access_jti,
                access_exp: token.access_exp,
            },
        );
    }

    /// Revokes `family`, returning its access tokens still alive at `now`.
    fn revoke_family(&mut self, family: &str, now: u64) -> Vec<LiveAccess> {
        let Some(entry) = self.families.get_mut(family) else {
            return Vec::new();
        };
        entry.revoked = true;
        entry
            .members
            .iter()
            .filter_map(|hash| self.tokens.get(hash))
            .filter(|row| row.access_exp > now)
            .map(|row| LiveAccess {
                jti: row.access_jti.clone(),
                exp: row.access_exp,
            })
            .collect()
    }
}

impl UserStore for MemoryUserStore {
    fn create_user(&self, user: User) -> BoxFuture<'_, StoreResult<Registration>> {
        let lookalike = user.lookalike_key();
        let mut users = lock(&self.inner.users);
        let outcome =
            if users.by_key.contains_key(&user.key) || users.lookalikes.contains(&lookalike) {
                Registration::Taken
            } else {
                users.lookalikes.insert(lookalike);
                users.by_key.insert(user.key.clone(), user);
                Registration::Created
            };
        drop(users);
        Box::pin(async move { Ok(outcome) })
    }

    fn find_user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<User>>> {
        let user = lock(&self.inner.users).by_key.get(key).cloned();
        Box::pin(async move { Ok(user) })
    }

    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        password_hash: String,
    ) -> BoxFuture<'a, StoreResult<()>> {
        if let Some(user) = lock(&self.inner.users).by_key.get_mut(key) {
            user.password_hash = password_hash;
        }
        Box::pin(async { Ok(()) })
    }

    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        family: &'a str,
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let mut sessions = lock(&self.inner.sessions);
        sessions.purge_expired(self.inner.clock.now());
        sessions.start_family(user_key, family);
        sessions.add(family, token);
        Box::pin(async { Ok(()) })
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        let mut sessions = lock(&self.inner.sessions);
        let outcome = rotate(&mut sessions, presented, now, next);
        Box::pin(async move { Ok(outcome) })
    }

    fn revoke_session<'a>(&'a self, access_jti: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        let mut sessions = lock(&self.inner.sessions);
        if let Some(family) = sessions.by_access.get(access_jti).cloned() {
            sessions.revoke_family(&family, u64::MAX);
        }
        Box::pin(async { Ok(()) })
    }

    fn revoke_all_sessions<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<LiveAccess>>> {
        let mut sessions = lock(&self.inner.sessions);
        let families: Vec<String> = sessions
            .by_user
            .get(user_key)
            .map(|owned| owned.iter().cloned().collect())
            .unwrap_or_default();
        let live = families
            .iter()
            .flat_map(|family| sessions.revoke_family(family, now))
            .collect();
        Box::pin(async move { Ok(live) })
    }
}

fn rotate(
    sessions: &mut Sessions,
    presented: &TokenHash,
    now: u64,
    next: IssuedRefresh,
) -> Rotation {
    let Some(row) = sessions.tokens.get_mut(presented) else {
        return Rotation::Invalid;
    };
    let family_name = row.family.clone();
    let Some(family) = sessions.families.get(&family_name) else {
        return Rotation::Invalid;
    };
    if family.revoked || row.expires_at <= now {
        return Rotation::Invalid;
    }
    if row.spent {
        let live_access = sessions.revoke_family(&family_name, now);
        return Rotation::Reused { live_access };
    }
    row.spent = true;
    let user_key = family.user_key.clone();
    sessions.add(&family_name, next);
    Rotation::Rotated { user_key }
}
