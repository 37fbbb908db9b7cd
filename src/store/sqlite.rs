//! Users and sessions in one SQLite file (feature `sqlite`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction};

use super::{
    BoxFuture, IssuedRefresh, Registration, Rotation, StoreResult, TokenHash, User, UserStore,
    UserStoreError, MAX_SESSIONS_PER_USER, ROTATION_WINDOW_SECS, SPENT_TOKENS_KEPT,
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

/// The `user_version` of a database in the current layout.
const SCHEMA_VERSION: i64 = 2;

/// A [`UserStore`] in an SQLite file: durable, for one process. Clones share the connection.
///
/// The database runs in WAL mode with `synchronous = FULL`: every acknowledged write has been
/// synced to disk before the call returns, so it survives not only a killed process but a
/// power cut. (`NORMAL` would survive `kill -9` too, but may lose the last commits on power
/// loss; a registration the client was told succeeded must not vanish.)
///
/// Each call runs on Tokio's blocking pool, never on an async worker thread.
///
/// ```no_run
/// use jwt_gate::store::SqliteUserStore;
///
/// let users = SqliteUserStore::open("./jwt-gate.db").expect("the database opens");
/// ```
#[derive(Clone)]
pub struct SqliteUserStore {
    connection: Arc<Mutex<Connection>>,
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
        let connection = Connection::open(path).map_err(store_error)?;
        Self::prepare(connection)
    }

    /// A private database in memory: for tests.
    pub fn open_in_memory() -> Result<Self, UserStoreError> {
        Self::prepare(Connection::open_in_memory().map_err(store_error)?)
    }

    fn prepare(mut connection: Connection) -> Result<Self, UserStoreError> {
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(store_error)?;
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(store_error)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(store_error)?;
        migrate(&mut connection)?;
        migrate_lookalikes(&mut connection).map_err(store_error)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` with the connection on the blocking pool.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let connection = self.connection.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
                work(&mut connection).map_err(store_error)
            })
            .await
            .map_err(|error| UserStoreError::new(error.to_string()))?
        })
    }
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
    if version < SCHEMA_VERSION {
        transaction
            .execute_batch(SCHEMA_V1)
            .and_then(|()| transaction.execute_batch(MIGRATION_V2))
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
                    f.generation, f.window_start, f.window_count
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
    })
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
        self.run(move |connection| {
            let lookalike = user.lookalike_key();
            let inserted = connection.execute(
                "INSERT INTO users (key, username, email, password_hash, lookalike)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.key,
                    user.username,
                    user.email,
                    user.password_hash,
                    lookalike
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
        let key = key.to_owned();
        self.run(move |connection| {
            connection
                .query_row(
                    "SELECT key, username, email, password_hash FROM users WHERE key = ?1",
                    params![key],
                    |row| {
                        Ok(User {
                            key: row.get(0)?,
                            username: row.get(1)?,
                            email: row.get(2)?,
                            password_hash: row.get(3)?,
                        })
                    },
                )
                .optional()
        })
    }

    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        password_hash: String,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let key = key.to_owned();
        self.run(move |connection| {
            connection.execute(
                "UPDATE users SET password_hash = ?1 WHERE key = ?2",
                params![password_hash, key],
            )?;
            Ok(())
        })
    }

    fn insert_refresh_token<'a>(
        &'a self,
        user_key: &'a str,
        session: &'a str,
        expires_at: u64,
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let (user_key, session) = (user_key.to_owned(), session.to_owned());
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
                "INSERT INTO refresh_families (family, user_key, expires_at) VALUES (?1, ?2, ?3)",
                params![session, user_key, to_sql_time(expires_at)],
            )?;
            let token_expires_at = to_sql_time(token.expires_at.min(expires_at));
            insert_token(&transaction, &session, 0, token_expires_at, &token.hash)?;
            transaction.commit()
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
        self.run(move |connection| {
            let mut statement = connection.prepare(
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
