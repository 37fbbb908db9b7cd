//! Users and sessions in PostgreSQL (feature `postgres`): one database behind a fleet of auth
//! services.

mod builder;
mod schema;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

pub use builder::PostgresUserStoreBuilder;
use schema::{Schema, Sql};

use super::{
    BoxFuture, GrantChange, IssuedRefresh, RefreshSession, Registration, Rotation, StoreResult,
    TokenHash, User, UserStore, UserStoreError, MAX_SESSIONS_PER_USER, ROTATION_WINDOW_SECS,
    SPENT_TOKENS_KEPT,
};
use crate::clock::{Clock, SystemClock};

/// How often, at most, one store sweeps out expired refresh tokens and the sessions they
/// leave empty.
const SWEEP_INTERVAL_SECS: u64 = 60;

/// A [`UserStore`] in PostgreSQL: every auth service of a fleet pointed at one database (and
/// schema) sees the same users and sessions. Clones share the connection pool.
///
/// Opening it applies the embedded migrations (under an advisory lock, so a fleet starting
/// at once is fine). Usernames are unique on [`User::key`] by the primary key and on
/// [`User::lookalike_key`] by a unique index (filled in for users made before it); refresh
/// tokens are stored as their SHA-256 hashes only. Registration is one atomic
/// `INSERT … ON CONFLICT DO NOTHING`; a rotation locks its session row (`SELECT … FOR
/// UPDATE`) before it reads the token, so of two concurrent uses of one refresh token one
/// rotates and the other is seen as a reuse, under the default `READ COMMITTED`.
///
/// Every failure (unreachable server, timeout, lost connection) is a [`UserStoreError`],
/// which the service answers with `503`. The connection URL, and so its password, never
/// appears in `Debug` output, errors or logs.
///
/// ```no_run
/// use jwt_gate::store::PostgresUserStore;
///
/// # async fn run() -> Result<(), jwt_gate::store::UserStoreError> {
/// let users = PostgresUserStore::connect("postgres://auth:secret@10.0.0.7/app")
///     .schema("auth")
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresUserStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: Schema,
    sql: Sql,
    timeout: Duration,
    next_sweep: AtomicU64,
}

impl std::fmt::Debug for PostgresUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresUserStore")
            .field("schema", &self.inner.schema.name())
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresUserStore {
    /// Options for a store on a new pool of connections to `url` (a `postgres://` URL or a
    /// `key=value` connection string, without TLS); `.await` them to connect and migrate.
    pub fn connect(url: &str) -> PostgresUserStoreBuilder {
        PostgresUserStoreBuilder::from_url(url)
    }

    /// Options for a store on a pool the application already has (its TLS, sizes and
    /// timeouts are kept); `.await` them to migrate. The pool is a `deadpool_postgres::Pool`
    /// of deadpool-postgres 0.14.
    ///
    /// ```no_run
    /// use jwt_gate::store::PostgresUserStore;
    ///
    /// # async fn run(pool: deadpool_postgres::Pool) -> Result<(), jwt_gate::store::UserStoreError> {
    /// let users = PostgresUserStore::with_pool(pool.clone()).schema("auth").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_pool(pool: Pool) -> PostgresUserStoreBuilder {
        PostgresUserStoreBuilder::from_pool(pool)
    }

    /// The schema the tables are in, when one was named.
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.name()
    }

    fn new(pool: Pool, schema: Schema, timeout: Duration) -> Self {
        let sql = schema.statements();
        Self {
            inner: Arc::new(Inner {
                pool,
                schema,
                sql,
                timeout,
                next_sweep: AtomicU64::new(0),
            }),
        }
    }

    /// Runs `work` on a pooled connection, within the store's timeout. A timed-out
    /// transaction is dropped, which rolls it back.
    fn run<'a, T: Send + 'a>(
        &'a self,
        work: impl FnOnce(Object, &'a Inner) -> BoxFuture<'a, Result<T, PgError>> + Send + 'a,
    ) -> BoxFuture<'a, StoreResult<T>> {
        let inner = &*self.inner;
        Box::pin(async move {
            let attempt = async {
                let client = inner.pool.get().await.map_err(pool_error)?;
                work(client, inner).await.map_err(query_error)
            };
            tokio::time::timeout(inner.timeout, attempt)
                .await
                .map_err(|_| UserStoreError::new("PostgreSQL did not answer in time"))?
        })
    }
}

type PgError = tokio_postgres::Error;

fn pool_error(error: deadpool_postgres::PoolError) -> UserStoreError {
    UserStoreError::new(format!("no PostgreSQL connection: {}", with_causes(&error)))
}

/// The error and what caused it: "error connecting to server" alone does not tell a refused
/// connection from a wrong password. Neither holds the URL, so no password shows.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let said = match error.downcast_ref::<tokio_postgres::error::DbError>() {
            Some(db) => said_by_server(db),
            None => error.to_string(),
        };
        // Some wrappers already print their source.
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = error.source();
    }
    text
}

/// A server's error as its code and message, never its DETAIL, which may quote a row.
fn said_by_server(db: &tokio_postgres::error::DbError) -> String {
    format!("{}: {}", db.code().code(), db.message())
}

/// The server's own errors are reduced to their code and message: their DETAIL may quote
/// the failing row, and a row can hold a password hash.
fn query_error(error: PgError) -> UserStoreError {
    match error.as_db_error() {
        Some(db) => UserStoreError::new(format!("PostgreSQL {}", said_by_server(db))),
        None => UserStoreError::new(format!("PostgreSQL: {}", with_causes(&error))),
    }
}

/// Seconds since the epoch as PostgreSQL's `bigint`; far-future instants saturate.
fn to_sql_time(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

fn from_sql_time(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0)
}

/// Runs the cached statement `sql` and returns its rows.
async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, PgError> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

async fn execute(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, PgError> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

async fn insert_token(
    client: &impl GenericClient,
    sql: &Sql,
    family: &str,
    generation: i64,
    expires_at: i64,
    hash: &TokenHash,
) -> Result<(), PgError> {
    execute(
        client,
        &sql.insert_token,
        &[&&hash[..], &family, &generation, &expires_at],
    )
    .await
    .map(drop)
}

async fn rotate(
    client: &mut Object,
    sql: &Sql,
    presented: &TokenHash,
    now: i64,
    next: &IssuedRefresh,
    max_per_window: u32,
) -> Result<Rotation, PgError> {
    let hash = &presented[..];
    let transaction = client.transaction().await?;
    let Some(row) = query(&transaction, &sql.family_of_token, &[&hash])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Rotation::Invalid);
    };
    let session: String = row.try_get(0)?;
    // The session row is the lock every rotation and revocation of this family takes, in
    // the same order (session, then token) as a cascading delete: no deadlocks, and the
    // token is read only once the lock is held, in a statement that sees every commit
    // that came before it.
    let Some(family) = query(&transaction, &sql.lock_session, &[&session])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Rotation::Invalid);
    };
    let user_key: String = family.try_get(0)?;
    let revoked: bool = family.try_get(1)?;
    let family_expires_at: i64 = family.try_get(2)?;
    let generation: i64 = family.try_get(3)?;
    let window_start: i64 = family.try_get(4)?;
    let window_count: i32 = family.try_get(5)?;
    let scopes: Vec<String> = family.try_get(6)?;
    let Some(token) = query(&transaction, &sql.token_state, &[&hash])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Rotation::Invalid);
    };
    let spent: bool = token.try_get(0)?;
    let expires_at: i64 = token.try_get(1)?;
    if expires_at <= now || family_expires_at <= now {
        return Ok(Rotation::Invalid);
    }
    if revoked {
        return Ok(Rotation::Ended { session });
    }
    if spent {
        execute(&transaction, &sql.revoke_family, &[&session]).await?;
        transaction.commit().await?;
        return Ok(Rotation::Reused { session });
    }
    let window = to_sql_time(ROTATION_WINDOW_SECS);
    let (window_start, window_count) = if now >= window_start.saturating_add(window) {
        (now, 0)
    } else {
        (window_start, window_count)
    };
    if i64::from(window_count) >= i64::from(max_per_window) {
        return Ok(Rotation::Throttled {
            retry_after: from_sql_time(window_start + window - now),
        });
    }
    let generation = generation + 1;
    execute(&transaction, &sql.spend_token, &[&hash]).await?;
    execute(
        &transaction,
        &sql.advance_family,
        &[&session, &generation, &window_start, &(window_count + 1)],
    )
    .await?;
    let next_expires_at = to_sql_time(next.expires_at).min(family_expires_at);
    insert_token(
        &transaction,
        sql,
        &session,
        generation,
        next_expires_at,
        &next.hash,
    )
    .await?;
    let oldest_kept = generation - i64::try_from(SPENT_TOKENS_KEPT).unwrap_or(i64::MAX);
    execute(&transaction, &sql.prune_tokens, &[&session, &oldest_kept]).await?;
    transaction.commit().await?;
    Ok(Rotation::Rotated {
        user_key,
        session,
        scopes,
    })
}

async fn start_session(
    client: &mut Object,
    inner: &Inner,
    user_key: &str,
    session: &str,
    expires_at: u64,
    scopes: &[String],
    token: &IssuedRefresh,
) -> Result<(), PgError> {
    let sql = &inner.sql;
    let now = SystemClock.now();
    let due = inner.next_sweep.load(Ordering::Relaxed);
    if now >= due
        && inner
            .next_sweep
            .compare_exchange(
                due,
                now + SWEEP_INTERVAL_SECS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    {
        // Spent tokens are kept until they expire (to catch replays), then swept here. Each
        // sweep commits on its own, so no transaction ever holds token locks while waiting
        // for a session lock: everything else locks sessions first, and cannot deadlock it.
        execute(&*client, &sql.sweep_tokens, &[&to_sql_time(now)]).await?;
        execute(&*client, &sql.sweep_sessions, &[&to_sql_time(now)]).await?;
    }
    let expires_at = to_sql_time(expires_at);
    let transaction = client.transaction().await?;
    execute(
        &transaction,
        &sql.insert_session,
        &[&session, &user_key, &expires_at, &scopes],
    )
    .await?;
    let cap = i64::try_from(MAX_SESSIONS_PER_USER).unwrap_or(i64::MAX);
    execute(&transaction, &sql.cap_sessions, &[&user_key, &cap]).await?;
    let token_expires_at = to_sql_time(token.expires_at).min(expires_at);
    insert_token(&transaction, sql, session, 0, token_expires_at, &token.hash).await?;
    transaction.commit().await
}

fn user_from(row: &Row) -> Result<User, PgError> {
    Ok(User {
        key: row.try_get(0)?,
        username: row.try_get(1)?,
        email: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        roles: row.try_get(4)?,
        scopes: row.try_get(5)?,
    })
}

/// Locks the user's row, changes its grants, writes them back: concurrent changes queue on
/// the row lock, so none is lost.
async fn change_grants(
    client: &mut Object,
    sql: &Sql,
    key: &str,
    change: &GrantChange,
) -> Result<bool, PgError> {
    let transaction = client.transaction().await?;
    let Some(row) = query(&transaction, &sql.lock_grants, &[&key])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(false);
    };
    let mut roles: Vec<String> = row.try_get(0)?;
    let mut scopes: Vec<String> = row.try_get(1)?;
    change.apply(&mut roles, &mut scopes);
    execute(&transaction, &sql.update_grants, &[&key, &roles, &scopes]).await?;
    transaction.commit().await?;
    Ok(true)
}

impl UserStore for PostgresUserStore {
    fn create_user(&self, user: User) -> BoxFuture<'_, StoreResult<Registration>> {
        self.run(move |client, inner| {
            Box::pin(async move {
                // The primary key and the look-alike index decide between concurrent
                // registrations of one name.
                let lookalike = user.lookalike_key();
                let inserted = execute(
                    &client,
                    &inner.sql.insert_user,
                    &[
                        &user.key,
                        &user.username,
                        &user.email,
                        &user.password_hash,
                        &lookalike,
                        &user.roles,
                        &user.scopes,
                    ],
                )
                .await?;
                Ok(if inserted == 1 {
                    Registration::Created
                } else {
                    Registration::Taken
                })
            })
        })
    }

    fn find_user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<User>>> {
        self.run(move |client, inner| {
            Box::pin(async move {
                query(&client, &inner.sql.find_user, &[&key])
                    .await?
                    .first()
                    .map(user_from)
                    .transpose()
            })
        })
    }

    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        password_hash: String,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.run(move |client, inner| {
            Box::pin(async move {
                execute(
                    &client,
                    &inner.sql.update_password_hash,
                    &[&key, &password_hash],
                )
                .await
                .map(drop)
            })
        })
    }

    fn change_grants<'a>(
        &'a self,
        key: &'a str,
        change: &'a GrantChange,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.run(move |mut client, inner| {
            Box::pin(async move { change_grants(&mut client, &inner.sql, key, change).await })
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
        self.run(move |mut client, inner| {
            Box::pin(async move {
                start_session(
                    &mut client,
                    inner,
                    user_key,
                    session,
                    expires_at,
                    scopes,
                    &token,
                )
                .await
            })
        })
    }

    fn refresh_session<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Option<RefreshSession>>> {
        self.run(move |client, inner| {
            Box::pin(async move {
                let hash = &presented[..];
                query(
                    &client,
                    &inner.sql.session_of_token,
                    &[&hash, &to_sql_time(now)],
                )
                .await?
                .first()
                .map(|row| {
                    Ok(RefreshSession {
                        user_key: row.try_get(0)?,
                        session: row.try_get(1)?,
                    })
                })
                .transpose()
            })
        })
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
        max_per_window: u32,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        self.run(move |mut client, inner| {
            Box::pin(async move {
                let now = to_sql_time(now);
                rotate(
                    &mut client,
                    &inner.sql,
                    presented,
                    now,
                    &next,
                    max_per_window,
                )
                .await
            })
        })
    }

    fn sessions_of<'a>(
        &'a self,
        user_key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.run(move |client, inner| {
            Box::pin(async move {
                let rows = query(
                    &client,
                    &inner.sql.sessions_of,
                    &[&user_key, &to_sql_time(now)],
                )
                .await?;
                rows.iter().map(|row| row.try_get(0)).collect()
            })
        })
    }

    fn end_sessions<'a>(&'a self, sessions: &'a [&'a str]) -> BoxFuture<'a, StoreResult<()>> {
        self.run(move |client, inner| {
            Box::pin(async move {
                // One statement: every session ends, or none.
                execute(&client, &inner.sql.end_sessions, &[&sessions])
                    .await
                    .map(drop)
            })
        })
    }
}
