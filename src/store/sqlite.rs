//! Users and sessions in one SQLite file (feature `sqlite`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction};

use super::{
    BoxFuture, IssuedRefresh, LiveAccess, Registration, Rotation, StoreResult, TokenHash, User,
    UserStore, UserStoreError, MAX_SESSIONS_PER_USER,
};
use crate::clock::{Clock, SystemClock};

const SCHEMA: &str = "
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
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_tokens_user ON refresh_tokens (user_key);
CREATE INDEX IF NOT EXISTS refresh_tokens_access ON refresh_tokens (access_jti);
CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expires_at);
";

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
        connection.execute_batch(SCHEMA).map_err(store_error)?;
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

/// The access tokens still alive at `now` that were issued in the rows `sql` selects by one
/// parameter (a family or a user).
fn live_access(
    transaction: &Transaction<'_>,
    sql: &str,
    selector: &str,
    now: u64,
) -> rusqlite::Result<Vec<LiveAccess>> {
    let mut statement = transaction.prepare(sql)?;
    let rows = statement.query_map(params![selector, to_sql_time(now)], |row| {
        Ok(LiveAccess {
            jti: row.get(0)?,
            exp: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
        })
    })?;
    rows.collect()
}

const LIVE_ACCESS_OF_FAMILY: &str =
    "SELECT access_jti, access_exp FROM refresh_tokens WHERE family = ?1 AND access_exp > ?2";
const LIVE_ACCESS_OF_USER: &str =
    "SELECT access_jti, access_exp FROM refresh_tokens WHERE user_key = ?1 AND access_exp > ?2";

fn rotate(
    connection: &mut Connection,
    presented: TokenHash,
    now: u64,
    next: IssuedRefresh,
) -> rusqlite::Result<Rotation> {
    // IMMEDIATE takes the write lock up front, so two rotations of one token are serialised.
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let row: Option<(String, String, i64, bool, bool)> = transaction
        .query_row(
            "SELECT family, user_key, expires_at, spent, revoked FROM refresh_tokens WHERE hash = ?1",
            params![&presented[..]],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
        )
        .optional()?;
    let Some((family, user_key, expires_at, spent, revoked)) = row else {
        return Ok(Rotation::Invalid);
    };
    if revoked || expires_at <= to_sql_time(now) {
        return Ok(Rotation::Invalid);
    }
    if spent {
        transaction.execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
            params![family],
        )?;
        let live_access = live_access(&transaction, LIVE_ACCESS_OF_FAMILY, &family, now)?;
        transaction.commit()?;
        return Ok(Rotation::Reused { live_access });
    }
    transaction.execute(
        "UPDATE refresh_tokens SET spent = 1 WHERE hash = ?1",
        params![&presented[..]],
    )?;
    insert_token(&transaction, &user_key, &family, &next)?;
    transaction.commit()?;
    Ok(Rotation::Rotated { user_key })
}

fn insert_token(
    transaction: &Transaction<'_>,
    user_key: &str,
    family: &str,
    token: &IssuedRefresh,
) -> rusqlite::Result<()> {
    transaction.execute(
        "INSERT INTO refresh_tokens (hash, family, user_key, expires_at, access_jti, access_exp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            &token.hash[..],
            family,
            user_key,
            to_sql_time(token.expires_at),
            token.access_jti,
            to_sql_time(token.access_exp)
        ],
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
        family: &'a str,
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let (user_key, family) = (user_key.to_owned(), family.to_owned());
        self.run(move |connection| {
            let transaction = connection.transaction()?;
            // Spent tokens are kept until they expire (to catch replays), then swept here.
            transaction.execute(
                "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
                params![to_sql_time(SystemClock.now())],
            )?;
            // Families in creation order are families by their first row.
            transaction.execute(
                "DELETE FROM refresh_tokens WHERE family IN (
                     SELECT family FROM refresh_tokens WHERE user_key = ?1
                     GROUP BY family ORDER BY MIN(rowid) DESC LIMIT -1 OFFSET ?2)",
                params![
                    user_key,
                    i64::try_from(MAX_SESSIONS_PER_USER - 1).unwrap_or(i64::MAX)
                ],
            )?;
            insert_token(&transaction, &user_key, &family, &token)?;
            transaction.commit()
        })
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        let presented = *presented;
        self.run(move |connection| rotate(connection, presented, now, next))
    }

    fn revoke_session<'a>(&'a self, access_jti: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        let access_jti = access_jti.to_owned();
        self.run(move |connection| {
            connection.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family IN
                 (SELECT family FROM refresh_tokens WHERE access_jti = ?1)",
                params![access_jti],
            )?;
            Ok(())
        })
    }

    fn revoke_all_sessions<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<LiveAccess>>> {
        let user_key = user_key.to_owned();
        self.run(move |connection| {
            let transaction = connection.transaction()?;
            transaction.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE user_key = ?1",
                params![user_key],
            )?;
            let live = live_access(&transaction, LIVE_ACCESS_OF_USER, &user_key, now)?;
            transaction.commit()?;
            Ok(live)
        })
    }
}
