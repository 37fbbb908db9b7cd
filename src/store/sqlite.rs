//! Users and sessions in one SQLite file (feature `sqlite`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};

use super::{
    BoxFuture, GrantChange, IssuedRefresh, RefreshSession, Registration, Rotation, StoreResult,
    TokenHash, User, UserStore, UserStoreError, MAX_SESSIONS_PER_USER, ROTATION_WINDOW_SECS,
    SPENT_TOKENS_KEPT,
};
use crate::clock::{Clock, SystemClock};

/// The first layout, as version 1 of this crate created it (`user_version` 0). Every
/// database is first brought to it, so that one migration path serves new and old files.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS users (
    key           TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    lookalike     TEXT
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash       BLOB PRIMARY KEY,
    family     TEXT NOT NULL,
    user_key   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    spent      INTEGER NOT NULL DEFAULT 0,
    revoked    INTEGER NOT NULL DEFAULT 0,
    access_jti TEXT NOT NULL,
    access_exp INTEGER NOT NULL
);
";

/// Version 2: one row per family (its owner, absolute end, revocation, generation counter
/// and rotation window) and token rows that only name their family and generation, so a
/// family's spent tokens beyond the newest few can be deleted. Existing families keep
/// working: each ends when its newest token would have, and its tokens keep their order.
const MIGRATION_V2: &str = "
CREATE TABLE refresh_families (
    family       TEXT PRIMARY KEY,
    user_key     TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked      INTEGER NOT NULL DEFAULT 0,
    generation   INTEGER NOT NULL DEFAULT 0,
    window_start INTEGER NOT NULL DEFAULT 0,
    window_count INTEGER NOT NULL DEFAULT 0
);
INSERT INTO refresh_families (family, user_key, expires_at, revoked, generation)
    SELECT family, MIN(user_key), MAX(expires_at), MAX(revoked), MAX(rowid)
    FROM refresh_tokens GROUP BY family ORDER BY MIN(rowid);
CREATE TABLE refresh_tokens_v2 (
    hash       BLOB PRIMARY KEY,
    family     TEXT NOT NULL,
    generation INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO refresh_tokens_v2 (hash, family, generation, expires_at, spent)
    SELECT hash, family, rowid, expires_at, spent FROM refresh_tokens;
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_v2 RENAME TO refresh_tokens;
CREATE INDEX refresh_families_user ON refresh_families (user_key);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family, generation);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
";

/// Version 3: the roles and scopes each user holds, and the scopes each session was granted
/// at its login, as space-separated names (no name holds a space). Existing users hold none,
/// and existing sessions were granted none.
const MIGRATION_V3: &str = "
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_families ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
";

/// The `user_version` of a database in the current layout.
const SCHEMA_VERSION: i64 = 3;

/// A [`UserStore`] in an SQLite file: durable, for one process. Clones share the connections
/// and the users kept in memory.
///
/// The database runs in WAL mode with `synchronous = FULL`: every acknowledged write has been
/// synced to disk before the call returns, so it survives not only a killed process but a
/// power cut. (`NORMAL` would survive `kill -9` too, but may lose the last commits on power
/// loss; a registration the client was told succeeded must not vanish.)
///
/// Writes go through one connection, one at a time (SQLite has one writer). Reads of a file
/// database (`find_user`, which a protected route may run on every request, and
/// `sessions_of`) run on a few read-only connections of their own, in parallel with each
/// other and with a write: WAL lets readers see the last committed state without waiting for
/// the writer. Each call runs on Tokio's blocking pool, never on an async worker thread.
///
/// Users found are kept in memory (up to 16,384 of them, least recently used first out), so
/// that `find_user` for a user seen before answers without a thread hop or a query. Every
/// write to a user through this store (clones included) drops its copy before the write
/// returns, and a read that raced a write never puts what it read back: a `find_user` that
/// starts after a write has returned sees that write. A write by anything else on the same
/// file (an admin tool revoking a role, another process, a second store opened on it) is
/// seen within a tenth of a second: a cache hit asks SQLite, at most that often, whether
/// another connection has committed since (`PRAGMA data_version` on this store's writer), and
/// every cached user is dropped when one has; while that question cannot be asked (a write
/// of this store's is under way), users are read from the file. Within a process, open a
/// file once and clone the store.
///
/// ```no_run
/// use jwt_gate::store::SqliteUserStore;
///
/// let users = SqliteUserStore::open("./jwt-gate.db").expect("the database opens");
/// ```
#[derive(Clone)]
pub struct SqliteUserStore {
    writer: Arc<Mutex<Connection>>,
    /// Empty for a database in memory, whose only connection is the writer.
    readers: Arc<Readers>,
    users: Arc<UserCache>,
}

/// How many users a store keeps in memory: a few MiB at most (a user is its key, name,
/// email and password hash, about 200 bytes).
const CACHED_USERS: usize = 16_384;

/// How long a connection waits for another's lock on the file before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a user cached here may outlive a change made to the file by another connection.
/// Any commit counts, to any table, and so does another process's checkpoint of the log (a
/// backup tool's, say): each drops every cached user, and the next reads come from the file.
const FOREIGN_WRITES_CHECKED_EVERY: Duration = Duration::from_millis(100);

/// Users as last read, invalidated by every write to users, and wholly by another
/// connection's commit.
struct UserCache {
    entries: Cache<String, User>,
    writes: Mutex<WriteCount>,
    /// What `current_until` counts from.
    opened: Instant,
    /// Until when, in milliseconds since `opened`, the cached users may answer: the last look
    /// for another connection's commit, plus [`FOREIGN_WRITES_CHECKED_EVERY`]. Moved only
    /// once a look is over.
    current_until: AtomicU64,
    /// A look is under way (in one thread at a time).
    looking: AtomicBool,
    /// The writer's `PRAGMA data_version` when last asked: it moves only when another
    /// connection commits to the file.
    data_version: AtomicI64,
}

/// Every write to users is counted when it starts and when it ends. A read fills the cache
/// only if the count did not move since the read began and no write is under way: a write
/// commits between its start and its end, so a read racing it may have seen the row either
/// way, and while a committed write has not yet ended, another read may already see it from
/// the database; filling the cache then would let that reader see an older user next.
#[derive(Default)]
struct WriteCount {
    changes: u64,
    under_way: u32,
}

/// A write to one user, from before it runs until after it has committed or failed; it
/// drops the user's cached copy at both ends.
struct UserWrite<'a> {
    cache: &'a UserCache,
    key: &'a str,
}

impl Drop for UserWrite<'_> {
    fn drop(&mut self) {
        let mut writes = self.cache.writes();
        writes.changes += 1;
        writes.under_way -= 1;
        self.cache.entries.remove(self.key);
    }
}

impl UserCache {
    fn writes(&self) -> std::sync::MutexGuard<'_, WriteCount> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before a write to `key`; the write ends when the guard drops.
    fn write<'a>(&'a self, key: &'a str) -> UserWrite<'a> {
        let mut writes = self.writes();
        writes.changes += 1;
        writes.under_way += 1;
        self.entries.remove(key);
        UserWrite { cache: self, key }
    }

    /// The count a read takes before it starts.
    fn changes(&self) -> u64 {
        self.writes().changes
    }

    /// After reading `user`, if no write to users started or ended since the count was
    /// `before` and none is under way.
    fn fill(&self, user: &User, before: u64) {
        let writes = self.writes();
        if writes.changes == before && writes.under_way == 0 {
            self.entries.insert(user.key.clone(), user.clone());
        }
    }

    /// Whether the cached users may answer: they may while the last look for another
    /// connection's commit is under [`FOREIGN_WRITES_CHECKED_EVERY`] old. Past that, one
    /// thread looks again (dropping every cached user if some connection has committed since)
    /// while the others, and that thread too if it cannot look now, read from the file until
    /// the look is over. A read racing a drop cannot put back what it read before the commit:
    /// the count moves, as for a write of ours.
    fn is_current(&self, writer: &Mutex<Connection>) -> bool {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now < self.current_until.load(Ordering::Acquire) {
            return true;
        }
        if self.looking.swap(true, Ordering::Acquire) {
            return false;
        }
        let _looking = Looking(&self.looking);
        let current = self.look(writer);
        if current {
            let until = now.saturating_add(FOREIGN_WRITES_CHECKED_EVERY.as_millis() as u64);
            self.current_until.store(until, Ordering::Release);
        }
        current
    }

    /// One look for another connection's commit; `false` if it could not be made now.
    fn look(&self, writer: &Mutex<Connection>) -> bool {
        // A write of ours holds the writer, perhaps for seconds (a busy file): this request
        // reads from the file, and the next hit asks again.
        let connection = match writer.try_lock() {
            Ok(connection) => connection,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        // This runs on an async task: the version is read without the busy timeout's wait
        // (another process holding the file during a log recovery, say), and a version that
        // cannot be read counts as a change, so the cache is dropped rather than trusted.
        let version = match connection.busy_timeout(Duration::ZERO) {
            Ok(()) => data_version(&connection),
            Err(_) => UNKNOWN_VERSION,
        };
        let _ = connection.busy_timeout(BUSY_TIMEOUT);
        if self.data_version.swap(version, Ordering::Relaxed) != version
            || version == UNKNOWN_VERSION
        {
            let mut writes = self.writes();
            writes.changes += 1;
            self.entries.clear();
        }
        true
    }
}

/// Stands for a `PRAGMA data_version` that could not be read; a look counts it as a change.
const UNKNOWN_VERSION: i64 = i64::MIN;

/// `connection`'s `PRAGMA data_version`: it moves when another connection commits to the
/// file.
fn data_version(connection: &Connection) -> i64 {
    connection
        .query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0))
        .unwrap_or(UNKNOWN_VERSION)
}

/// A look under way, over when this drops, panic or not: a flag left set would send every
/// later read to the file.
struct Looking<'a>(&'a AtomicBool);

impl Drop for Looking<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The read-only connections, handed out round-robin, a busy one skipped.
struct Readers {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

/// How many read-only connections a store keeps: one per core, up to four (more cannot run
/// at once, and each holds a page cache).
fn reader_count() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get().clamp(2, 4))
}

impl std::fmt::Debug for SqliteUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUserStore").finish_non_exhaustive()
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn store_error(error: rusqlite::Error) -> UserStoreError {
    UserStoreError::new(error.to_string())
}

/// Role and scope names as one text column: space-separated (no name holds a space).
fn join_names(names: &[String]) -> String {
    names.join(" ")
}

/// The names of a text column written by [`join_names`].
fn split_names(joined: &str) -> Vec<String> {
    joined
        .split(' ')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

fn to_sql_time(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

impl SqliteUserStore {
    /// Opens (creating if needed) the database at `path`. A new file is created readable
    /// by its owner only (on Unix): it holds password hashes. SQLite gives its `-wal` and
    /// `-shm` files the same permissions.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, UserStoreError> {
        let path = path.as_ref();
        create_private(path).map_err(|error| UserStoreError::new(error.to_string()))?;
        let writer = Self::prepare(Connection::open(path).map_err(store_error)?)?;
        // Opened after the writer has set WAL mode and migrated, so they read the current
        // layout. Read-only: a bug in a read path cannot write.
        let connections = (0..reader_count())
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                reader.busy_timeout(BUSY_TIMEOUT)?;
                Ok(Mutex::new(reader))
            })
            .collect::<rusqlite::Result<_>>()
            .map_err(store_error)?;
        Ok(Self::with(writer, connections))
    }

    /// A private database in memory: for tests. Reads share its one connection.
    pub fn open_in_memory() -> Result<Self, UserStoreError> {
        let writer = Self::prepare(Connection::open_in_memory().map_err(store_error)?)?;
        Ok(Self::with(writer, Vec::new()))
    }

    fn with(writer: Connection, readers: Vec<Mutex<Connection>>) -> Self {
        // Read now, so that only commits made after the store opened count as foreign.
        let data_version = data_version(&writer);
        Self {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Readers {
                connections: readers,
                next: AtomicUsize::new(0),
            }),
            users: Arc::new(UserCache {
                entries: Cache::new(CACHED_USERS),
                writes: Mutex::default(),
                opened: Instant::now(),
                current_until: AtomicU64::new(0),
                looking: AtomicBool::new(false),
                data_version: AtomicI64::new(data_version),
            }),
        }
    }

    fn prepare(mut connection: Connection) -> Result<Connection, UserStoreError> {
        connection.busy_timeout(BUSY_TIMEOUT).map_err(store_error)?;
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(store_error)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(store_error)?;
        migrate(&mut connection)?;
        migrate_lookalikes(&mut connection).map_err(store_error)?;
        Ok(connection)
    }

    /// Runs `work` with the writer on the blocking pool.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let writer = self.writer.clone();
        blocking(move || {
            let mut connection = writer.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
    }

    /// Runs `work` with a free read-only connection (the writer for a database in memory)
    /// on the blocking pool.
    fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let (writer, readers) = (self.writer.clone(), self.readers.clone());
        blocking(move || {
            let count = readers.connections.len();
            if count == 0 {
                return work(&writer.lock().unwrap_or_else(PoisonError::into_inner));
            }
            let first = readers.next.fetch_add(1, Ordering::Relaxed);
            let free = (0..count)
                .find_map(|step| readers.connections[(first + step) % count].try_lock().ok());
            // All busy: wait for the one whose turn it is.
            let connection = match free {
                Some(connection) => connection,
                None => readers.connections[first % count]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            };
            work(&connection)
        })
    }
}

/// Runs `work` on Tokio's blocking pool: SQLite calls block.
fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> BoxFuture<'static, StoreResult<T>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(move || work().map_err(store_error))
            .await
            .map_err(|error| UserStoreError::new(error.to_string()))?
    })
}

/// Brings the database to [`SCHEMA_VERSION`], in one transaction: a crash midway leaves
/// the old layout, which the next open migrates again.
fn migrate(connection: &mut Connection) -> Result<(), UserStoreError> {
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(store_error)?;
    if version > SCHEMA_VERSION {
        // A newer release wrote this file: its layout is unknown here, so touch nothing.
        return Err(UserStoreError::new(format!(
            "the database is at schema version {version}, newer than this build knows ({SCHEMA_VERSION})"
        )));
    }
    if version < 2 {
        transaction
            .execute_batch(SCHEMA_V1)
            .and_then(|()| transaction.execute_batch(MIGRATION_V2))
            .map_err(store_error)?;
    }
    if version < SCHEMA_VERSION {
        transaction
            .execute_batch(MIGRATION_V3)
            .and_then(|()| transaction.pragma_update(None, "user_version", SCHEMA_VERSION))
            .map_err(store_error)?;
    }
    transaction.commit().map_err(store_error)
}

/// Gives every user a look-alike key, under a unique index, adding the column to a database
/// made before it existed. Users are taken in registration order and each claims its key
/// unless an older user holds it: of existing accounts that look alike, the oldest keeps the
/// name and the others keep working (they still log in by their own key) without a look-alike
/// key, so no new account can take the name either. Renaming or merging them is left to the
/// operator, whom a warning tells; nothing is decided for them at startup.
fn migrate_lookalikes(connection: &mut Connection) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let has_column: bool = transaction.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('users') WHERE name = 'lookalike'",
        [],
        |row| row.get(0),
    )?;
    if !has_column {
        transaction.execute_batch("ALTER TABLE users ADD COLUMN lookalike TEXT")?;
    }
    transaction
        .execute_batch("CREATE UNIQUE INDEX IF NOT EXISTS users_lookalike ON users (lookalike)")?;
    let keys: Vec<String> = transaction
        .prepare("SELECT key FROM users WHERE lookalike IS NULL ORDER BY rowid")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut collisions = 0_usize;
    for key in keys {
        let lookalike = crate::service::identity::lookalike_key(&key);
        let claimed = transaction.execute(
            "UPDATE users SET lookalike = ?1 WHERE key = ?2
             AND NOT EXISTS (SELECT 1 FROM users WHERE lookalike = ?1)",
            params![lookalike, key],
        )?;
        if claimed == 0 {
            collisions += 1;
        }
    }
    transaction.commit()?;
    if collisions > 0 {
        tracing::warn!(
            accounts = collisions,
            "existing accounts look alike an older one; they keep working, and no new account \
             can take their names (SELECT key FROM users WHERE lookalike IS NULL lists them)"
        );
    }
    Ok(())
}

/// A family's state as a rotation reads it.
struct FamilyState {
    family: String,
    user_key: String,
    scopes: String,
    token_expires_at: i64,
    spent: bool,
    family_expires_at: i64,
    revoked: bool,
    generation: i64,
    window_start: i64,
    window_count: i64,
}

fn rotate(
    connection: &mut Connection,
    presented: TokenHash,
    now: u64,
    next: IssuedRefresh,
    max_per_window: u32,
) -> rusqlite::Result<Rotation> {
    // IMMEDIATE takes the write lock up front, so two rotations of one token are serialised.
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let state = transaction
        .query_row(
            "SELECT t.family, f.user_key, t.expires_at, t.spent, f.expires_at, f.revoked,
                    f.generation, f.window_start, f.window_count, f.scopes
             FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family
             WHERE t.hash = ?1",
            params![&presented[..]],
            |row| {
                Ok(FamilyState {
                    family: row.get(0)?,
                    user_key: row.get(1)?,
                    token_expires_at: row.get(2)?,
                    spent: row.get(3)?,
                    family_expires_at: row.get(4)?,
                    revoked: row.get(5)?,
                    generation: row.get(6)?,
                    window_start: row.get(7)?,
                    window_count: row.get(8)?,
                    scopes: row.get(9)?,
                })
            },
        )
        .optional()?;
    let Some(state) = state else {
        return Ok(Rotation::Invalid);
    };
    let now = to_sql_time(now);
    if state.token_expires_at <= now || state.family_expires_at <= now {
        return Ok(Rotation::Invalid);
    }
    let session = state.family;
    if state.revoked {
        return Ok(Rotation::Ended { session });
    }
    if state.spent {
        transaction.execute(
            "UPDATE refresh_families SET revoked = 1 WHERE family = ?1",
            params![session],
        )?;
        transaction.commit()?;
        return Ok(Rotation::Reused { session });
    }
    let window = to_sql_time(ROTATION_WINDOW_SECS);
    let (window_start, window_count) = if now >= state.window_start.saturating_add(window) {
        (now, 0)
    } else {
        (state.window_start, state.window_count)
    };
    if window_count >= i64::from(max_per_window) {
        return Ok(Rotation::Throttled {
            retry_after: u64::try_from(window_start + window - now).unwrap_or(0),
        });
    }
    let generation = state.generation + 1;
    transaction.execute(
        "UPDATE refresh_tokens SET spent = 1 WHERE hash = ?1",
        params![&presented[..]],
    )?;
    transaction.execute(
        "UPDATE refresh_families SET generation = ?2, window_start = ?3, window_count = ?4
         WHERE family = ?1",
        params![session, generation, window_start, window_count + 1],
    )?;
    let expires_at = to_sql_time(next.expires_at).min(state.family_expires_at);
    insert_token(&transaction, &session, generation, expires_at, &next.hash)?;
    transaction.execute(
        "DELETE FROM refresh_tokens WHERE family = ?1 AND generation < ?2",
        params![
            session,
            generation - i64::try_from(SPENT_TOKENS_KEPT).unwrap_or(i64::MAX)
        ],
    )?;
    transaction.commit()?;
    Ok(Rotation::Rotated {
        user_key: state.user_key,
        session,
        scopes: split_names(&state.scopes),
    })
}

/// Reads, changes and writes back one user's grants in one write transaction.
fn change_grants(
    connection: &mut Connection,
    key: &str,
    change: &GrantChange,
) -> rusqlite::Result<bool> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let held = transaction
        .query_row(
            "SELECT roles, scopes FROM users WHERE key = ?1",
            params![key],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()?;
    let Some((roles, scopes)) = held else {
        return Ok(false);
    };
    let (mut roles, mut scopes) = (split_names(&roles), split_names(&scopes));
    change.apply(&mut roles, &mut scopes);
    transaction.execute(
        "UPDATE users SET roles = ?2, scopes = ?3 WHERE key = ?1",
        params![key, join_names(&roles), join_names(&scopes)],
    )?;
    transaction.commit()?;
    Ok(true)
}

fn insert_token(
    transaction: &Transaction<'_>,
    family: &str,
    generation: i64,
    expires_at: i64,
    hash: &TokenHash,
) -> rusqlite::Result<()> {
    transaction.execute(
        "INSERT INTO refresh_tokens (hash, family, generation, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![&hash[..], family, generation, expires_at],
    )?;
    Ok(())
}

impl UserStore for SqliteUserStore {
    fn create_user(&self, user: User) -> BoxFuture<'_, StoreResult<Registration>> {
        let users = self.users.clone();
        self.run(move |connection| {
            let lookalike = user.lookalike_key();
            // Only absent users can be created, and absences are not cached; counted all the
            // same, so that every write to users invalidates.
            let _write = users.write(&user.key);
            let inserted = connection.execute(
                "INSERT INTO users (key, username, email, password_hash, lookalike, roles, scopes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    user.key,
                    user.username,
                    user.email,
                    user.password_hash,
                    lookalike,
                    join_names(&user.roles),
                    join_names(&user.scopes),
                ],
            );
            match inserted {
                Ok(_) => Ok(Registration::Created),
                // The primary key and the look-alike index decide between concurrent
                // registrations of one name.
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if error.code == ErrorCode::ConstraintViolation =>
                {
                    Ok(Registration::Taken)
                }
                Err(error) => Err(error),
            }
        })
    }

    fn find_user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<User>>> {
        // A database in memory has no connection but the writer: nothing else can write.
        let current = self.readers.connections.is_empty() || self.users.is_current(&self.writer);
        if let Some(user) = current.then(|| self.users.entries.get(key)).flatten() {
            return Box::pin(std::future::ready(Ok(Some(user))));
        }
        let users = self.users.clone();
        let before = users.changes();
        let key = key.to_owned();
        self.read(move |connection| {
            let user = connection
                .prepare_cached(
                    "SELECT key, username, email, password_hash, roles, scopes
                     FROM users WHERE key = ?1",
                )?
                .query_row(params![key], |row| {
                    Ok(User {
                        key: row.get(0)?,
                        username: row.get(1)?,
                        email: row.get(2)?,
                        password_hash: row.get(3)?,
                        roles: split_names(&row.get::<_, String>(4)?),
                        scopes: split_names(&row.get::<_, String>(5)?),
                    })
                })
                .optional()?;
            if let Some(user) = &user {
                users.fill(user, before);
            }
            Ok(user)
        })
    }

    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        password_hash: String,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let (key, users) = (key.to_owned(), self.users.clone());
        self.run(move |connection| {
            let _write = users.write(&key);
            connection
                .execute(
                    "UPDATE users SET password_hash = ?1 WHERE key = ?2",
                    params![password_hash, key],
                )
                .map(drop)
        })
    }

    fn change_grants<'a>(
        &'a self,
        key: &'a str,
        change: &'a GrantChange,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let (key, change, users) = (key.to_owned(), change.clone(), self.users.clone());
        self.run(move |connection| {
            let _write = users.write(&key);
            change_grants(connection, &key, &change)
        })
    }

    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        session: &'a str,
        expires_at: u64,
        scopes: &'a [String],
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let (user_key, session) = (user_key.to_owned(), session.to_owned());
        let scopes = join_names(scopes);
        self.run(move |connection| {
            let transaction = connection.transaction()?;
            // Spent tokens are kept until they expire (to catch replays), then swept here,
            // with the families they leave empty or that have reached their end.
            let now = to_sql_time(SystemClock.now());
            transaction.execute(
                "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
                params![now],
            )?;
            transaction.execute(
                "DELETE FROM refresh_families WHERE expires_at <= ?1 OR NOT EXISTS
                 (SELECT 1 FROM refresh_tokens t WHERE t.family = refresh_families.family)",
                params![now],
            )?;
            // Families in creation order are families by rowid.
            let beyond_cap = "SELECT family FROM refresh_families WHERE user_key = ?1
                 ORDER BY rowid DESC LIMIT -1 OFFSET ?2";
            let keep = i64::try_from(MAX_SESSIONS_PER_USER - 1).unwrap_or(i64::MAX);
            transaction.execute(
                &format!("DELETE FROM refresh_tokens WHERE family IN ({beyond_cap})"),
                params![user_key, keep],
            )?;
            transaction.execute(
                &format!("DELETE FROM refresh_families WHERE family IN ({beyond_cap})"),
                params![user_key, keep],
            )?;
            transaction.execute(
                "INSERT INTO refresh_families (family, user_key, expires_at, scopes)
                 VALUES (?1, ?2, ?3, ?4)",
                params![session, user_key, to_sql_time(expires_at), scopes],
            )?;
            let token_expires_at = to_sql_time(token.expires_at.min(expires_at));
            insert_token(&transaction, &session, 0, token_expires_at, &token.hash)?;
            transaction.commit()
        })
    }

    fn refresh_session<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Option<RefreshSession>>> {
        let presented = *presented;
        self.read(move |connection| {
            connection
                .prepare_cached(
                    "SELECT f.user_key, f.family
                     FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family
                     WHERE t.hash = ?1 AND t.expires_at > ?2 AND f.expires_at > ?2",
                )?
                .query_row(params![&presented[..], to_sql_time(now)], |row| {
                    Ok(RefreshSession {
                        user_key: row.get(0)?,
                        session: row.get(1)?,
                    })
                })
                .optional()
        })
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
        max_per_window: u32,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        let presented = *presented;
        self.run(move |connection| rotate(connection, presented, now, next, max_per_window))
    }

    fn sessions_of<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        let user_key = user_key.to_owned();
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT family FROM refresh_families WHERE user_key = ?1 AND expires_at > ?2",
            )?;
            let rows =
                statement.query_map(params![user_key, to_sql_time(now)], |row| row.get(0))?;
            rows.collect()
        })
    }

    fn end_sessions<'a>(&'a self, sessions: &'a [&'a str]) -> BoxFuture<'a, StoreResult<()>> {
        let sessions: Vec<String> = sessions.iter().map(|&session| session.to_owned()).collect();
        self.run(move |connection| {
            let transaction = connection.transaction()?;
            for session in &sessions {
                transaction.execute(
                    "UPDATE refresh_families SET revoked = 1 WHERE family = ?1",
                    params![session],
                )?;
            }
            transaction.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "jwt-gate-sqlite-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("users.db")
    }

    /// A write in progress: the store's writer connection held by another thread until this
    /// is dropped.
    struct WriteInProgress {
        release: std::sync::mpsc::Sender<()>,
        holder: Option<std::thread::JoinHandle<()>>,
    }

    impl WriteInProgress {
        fn of(store: &SqliteUserStore) -> Self {
            let (taken, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
            let writer = store.writer.clone();
            let holder = std::thread::spawn(move || {
                let _writing = writer.lock().unwrap();
                taken.0.send(()).unwrap();
                let _ = release.1.recv();
            });
            taken.1.recv().unwrap();
            Self {
                release: release.0,
                holder: Some(holder),
            }
        }
    }

    impl Drop for WriteInProgress {
        fn drop(&mut self) {
            let _ = self.release.send(());
            if let Some(holder) = self.holder.take() {
                holder.join().unwrap();
            }
        }
    }

    fn user(key: &str, roles: &[&str]) -> User {
        User {
            key: key.into(),
            username: key.into(),
            email: format!("{key}@example.com"),
            password_hash: "$argon2id$old".into(),
            roles: roles.iter().map(|&role| role.to_owned()).collect(),
            scopes: Vec::new(),
        }
    }

    /// An admin tool revoking a role runs in a process of its own (here, a second store on
    /// the same file): the serving store's cached copy must not outlive the change by more
    /// than the documented tenth of a second, or the user keeps getting the role at login.
    #[tokio::test]
    async fn a_change_made_through_another_connection_reaches_cached_users() {
        let path = temp_db("foreign");
        let serving = SqliteUserStore::open(&path).unwrap();
        serving.create_user(user("bob", &["admin"])).await.unwrap();
        assert_eq!(
            serving.find_user("bob").await.unwrap().unwrap().roles,
            ["admin"]
        );
        assert!(serving.users.entries.get("bob").is_some(), "bob is cached");

        let admin_tool = SqliteUserStore::open(&path).unwrap();
        let revoke = GrantChange::new().revoke_role("admin").unwrap();
        assert!(admin_tool.change_grants("bob", &revoke).await.unwrap());
        admin_tool
            .update_password_hash("bob", "$argon2id$new".into())
            .await
            .unwrap();
        tokio::time::sleep(FOREIGN_WRITES_CHECKED_EVERY + Duration::from_millis(50)).await;

        let bob = serving.find_user("bob").await.unwrap().unwrap();
        assert!(
            bob.roles.is_empty(),
            "the revoked role is gone: {:?}",
            bob.roles
        );
        assert_eq!(bob.password_hash, "$argon2id$new");
    }

    /// The look for another connection's commit needs the store's writer; while a write of
    /// the store's own holds it, a cached user must not be served past the bound either.
    #[tokio::test]
    async fn a_busy_writer_does_not_stretch_how_long_a_cached_user_lives() {
        let path = temp_db("busy-writer");
        let serving = SqliteUserStore::open(&path).unwrap();
        serving.create_user(user("bob", &["admin"])).await.unwrap();
        serving.find_user("bob").await.unwrap().unwrap();
        let admin_tool = SqliteUserStore::open(&path).unwrap();
        let revoke = GrantChange::new().revoke_role("admin").unwrap();
        assert!(admin_tool.change_grants("bob", &revoke).await.unwrap());

        let writing = WriteInProgress::of(&serving);
        tokio::time::sleep(FOREIGN_WRITES_CHECKED_EVERY + Duration::from_millis(50)).await;
        let bob = serving.find_user("bob").await.unwrap().unwrap();
        drop(writing);
        assert!(bob.roles.is_empty(), "read from the file: {:?}", bob.roles);
    }

    /// The store's own writes drop only the user written: were they taken for another
    /// connection's, every login (it writes a refresh token) would empty the cache.
    #[tokio::test]
    async fn the_stores_own_writes_keep_other_cached_users() {
        let store = SqliteUserStore::open(temp_db("own-writes")).unwrap();
        store.create_user(user("bob", &[])).await.unwrap();
        store.create_user(user("eve", &[])).await.unwrap();
        store.find_user("bob").await.unwrap().unwrap();
        store.find_user("eve").await.unwrap().unwrap();
        let grant = GrantChange::new().grant_role("clerk").unwrap();
        assert!(store.change_grants("bob", &grant).await.unwrap());
        tokio::time::sleep(FOREIGN_WRITES_CHECKED_EVERY + Duration::from_millis(50)).await;

        assert_eq!(
            store.find_user("bob").await.unwrap().unwrap().roles,
            ["clerk"]
        );
        assert!(
            store.users.entries.get("eve").is_some(),
            "eve stays cached after a write to bob"
        );
    }

    /// A protected route reads its user on every request; a login's write (synced to disk)
    /// must not hold those reads up.
    #[tokio::test]
    async fn reads_do_not_wait_for_a_write_in_progress() {
        let store = SqliteUserStore::open(temp_db("readers")).unwrap();
        let bob = user("bob", &["admin"]);
        store.create_user(bob.clone()).await.unwrap();

        let writing = WriteInProgress::of(&store);
        // Not a timing check: without read connections the reads would wait forever.
        let reads = async {
            (
                store.find_user("bob").await.unwrap(),
                store.sessions_of("bob", 0).await.unwrap(),
            )
        };
        let answered = tokio::time::timeout(std::time::Duration::from_secs(60), reads).await;
        drop(writing);
        assert_eq!(answered.expect("reads answered"), (Some(bob), Vec::new()));
    }
}
