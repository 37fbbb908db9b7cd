//! Users and sessions in process memory: for tests, demos and single-process apps that can
//! afford to forget everything on restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    BoxFuture, GrantChange, IssuedRefresh, RefreshSession, Registration, Rotation, StoreResult,
    TokenHash, User, UserStore, MAX_SESSIONS_PER_USER, ROTATION_WINDOW_SECS, SPENT_TOKENS_KEPT,
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
    next_purge: u64,
}

struct RefreshRow {
    family: String,
    expires_at: u64,
    spent: bool,
}

struct Family {
    user_key: String,
    /// The scopes granted at login.
    scopes: Vec<String>,
    revoked: bool,
    /// The family's absolute end.
    expires_at: u64,
    /// Oldest first: at most the live token and [`SPENT_TOKENS_KEPT`] spent ones.
    members: VecDeque<TokenHash>,
    window_start: u64,
    window_count: u32,
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

    /// The stored forms (SHA-256 hashes) of the refresh tokens kept: what a dump of the store
    /// would reveal.
    pub fn refresh_token_hashes(&self) -> Vec<TokenHash> {
        lock(&self.inner.sessions).tokens.keys().copied().collect()
    }
}

impl Sessions {
    fn purge_expired(&mut self, now: u64) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now + PURGE_INTERVAL_SECS;
        self.tokens.retain(|_, row| row.expires_at > now);
        let tokens = &self.tokens;
        self.families.retain(|_, family| {
            family.members.retain(|hash| tokens.contains_key(hash));
            !family.members.is_empty() && family.expires_at > now
        });
        let families = &self.families;
        self.tokens
            .retain(|_, row| families.contains_key(&row.family));
        self.by_user.retain(|_, owned| {
            owned.retain(|family| families.contains_key(family));
            !owned.is_empty()
        });
    }

    /// Starts `family` for `user_key`, dropping the user's oldest sessions beyond the cap.
    fn start_family(
        &mut self,
        user_key: &str,
        family: &str,
        expires_at: u64,
        scopes: &[String],
        token: IssuedRefresh,
    ) {
        let owned = self.by_user.entry(user_key.to_owned()).or_default();
        owned.push_back(family.to_owned());
        let excess = owned.len().saturating_sub(MAX_SESSIONS_PER_USER);
        let dropped: Vec<String> = owned.drain(..excess).collect();
        for old in dropped {
            if let Some(entry) = self.families.remove(&old) {
                for hash in entry.members {
                    self.tokens.remove(&hash);
                }
            }
        }
        self.families.insert(
            family.to_owned(),
            Family {
                user_key: user_key.to_owned(),
                scopes: scopes.to_vec(),
                revoked: false,
                expires_at,
                members: VecDeque::new(),
                window_start: 0,
                window_count: 0,
            },
        );
        self.add(family, token);
    }

    /// Adds `token` to `family`, forgetting its oldest spent tokens beyond the bound.
    fn add(&mut self, family: &str, token: IssuedRefresh) {
        let Some(entry) = self.families.get_mut(family) else {
            return;
        };
        entry.members.push_back(token.hash);
        while entry.members.len() > SPENT_TOKENS_KEPT + 1 {
            if let Some(oldest) = entry.members.pop_front() {
                self.tokens.remove(&oldest);
            }
        }
        self.tokens.insert(
            token.hash,
            RefreshRow {
                family: family.to_owned(),
                expires_at: token.expires_at.min(entry.expires_at),
                spent: false,
            },
        );
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

    fn change_grants<'a>(
        &'a self,
        key: &'a str,
        change: &'a GrantChange,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let found = match lock(&self.inner.users).by_key.get_mut(key) {
            Some(user) => {
                change.apply(&mut user.roles, &mut user.scopes);
                true
            }
            None => false,
        };
        Box::pin(async move { Ok(found) })
    }

    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        session: &'a str,
        expires_at: u64,
        scopes: &'a [String],
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let mut sessions = lock(&self.inner.sessions);
        sessions.purge_expired(self.inner.clock.now());
        sessions.start_family(user_key, session, expires_at, scopes, token);
        Box::pin(async { Ok(()) })
    }

    fn refresh_session<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Option<RefreshSession>>> {
        let sessions = lock(&self.inner.sessions);
        let found = sessions.tokens.get(presented).and_then(|row| {
            let family = sessions.families.get(&row.family)?;
            (row.expires_at > now && family.expires_at > now).then(|| RefreshSession {
                user_key: family.user_key.clone(),
                session: row.family.clone(),
            })
        });
        Box::pin(async move { Ok(found) })
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
        max_per_window: u32,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        let mut sessions = lock(&self.inner.sessions);
        let outcome = rotate(&mut sessions, presented, now, next, max_per_window);
        Box::pin(async move { Ok(outcome) })
    }

    fn sessions_of<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        let sessions = lock(&self.inner.sessions);
        let live = sessions
            .by_user
            .get(user_key)
            .into_iter()
            .flatten()
            .filter(|family| {
                sessions
                    .families
                    .get(*family)
                    .is_some_and(|entry| entry.expires_at > now)
            })
            .cloned()
            .collect();
        Box::pin(async move { Ok(live) })
    }

    fn end_sessions<'a>(&'a self, sessions: &'a [&'a str]) -> BoxFuture<'a, StoreResult<()>> {
        let mut stored = lock(&self.inner.sessions);
        for session in sessions {
            if let Some(family) = stored.families.get_mut(*session) {
                family.revoked = true;
            }
        }
        Box::pin(async { Ok(()) })
    }
}

fn rotate(
    sessions: &mut Sessions,
    presented: &TokenHash,
    now: u64,
    next: IssuedRefresh,
    max_per_window: u32,
) -> Rotation {
    let Some(row) = sessions.tokens.get_mut(presented) else {
        return Rotation::Invalid;
    };
    let session = row.family.clone();
    let Some(family) = sessions.families.get_mut(&session) else {
        return Rotation::Invalid;
    };
    if row.expires_at <= now || family.expires_at <= now {
        return Rotation::Invalid;
    }
    if family.revoked {
        return Rotation::Ended { session };
    }
    if row.spent {
        family.revoked = true;
        return Rotation::Reused { session };
    }
    if now >= family.window_start.saturating_add(ROTATION_WINDOW_SECS) {
        family.window_start = now;
        family.window_count = 0;
    }
    if family.window_count >= max_per_window {
        return Rotation::Throttled {
            retry_after: family.window_start + ROTATION_WINDOW_SECS - now,
        };
    }
    family.window_count += 1;
    row.spent = true;
    let (user_key, scopes) = (family.user_key.clone(), family.scopes.clone());
    sessions.add(&session, next);
    Rotation::Rotated {
        user_key,
        session,
        scopes,
    }
}
