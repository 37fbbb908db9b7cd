//! Configuring and opening a [`PostgresUserStore`].

use std::future::IntoFuture;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::schema::Schema;
use super::{pool_error, query_error, PostgresUserStore};
use crate::revocation::BoxFuture;
use crate::store::UserStoreError;

const DEFAULT_MAX_CONNECTIONS: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

enum Source {
    /// A parsed connection string, or why it did not parse (never holding the string itself,
    /// which may carry a password).
    Url(Box<Result<tokio_postgres::Config, String>>),
    Pool(Pool),
}

/// Options for a [`PostgresUserStore`], from [`PostgresUserStore::connect`] or
/// [`PostgresUserStore::with_pool`]; `.await` them to connect and migrate.
///
/// Opening fails, with a [`UserStoreError`], when the URL does not parse, the server cannot
/// be reached, or the migrations cannot be applied: an auth service that cannot store users
/// should not start.
///
/// ```no_run
/// use std::time::Duration;
/// use jwt_gate::store::PostgresUserStore;
///
/// # async fn run() -> Result<(), jwt_gate::store::UserStoreError> {
/// let users = PostgresUserStore::connect("postgres://auth:secret@10.0.0.7:5432/app")
///     .schema("auth")
///     .max_connections(32)
///     .timeout(Duration::from_secs(2))
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until awaited"]
pub struct PostgresUserStoreBuilder {
    source: Source,
    schema: Result<Schema, String>,
    max_connections: usize,
    timeout: Duration,
}

impl std::fmt::Debug for PostgresUserStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresUserStoreBuilder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresUserStoreBuilder {
    pub(super) fn from_url(url: &str) -> Self {
        // tokio-postgres names the bad option in its parse errors, never the value.
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|error| format!("bad PostgreSQL connection string: {error}"));
        Self::with_source(Source::Url(Box::new(config)))
    }

    pub(super) fn from_pool(pool: Pool) -> Self {
        Self::with_source(Source::Pool(pool))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            schema: Ok(Schema::default_path()),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Keeps the tables in the schema `name` (created if missing) instead of the connection's
    /// default schema. A plain identifier: ASCII letters, digits and `_`. Every auth service
    /// of one deployment must use the same.
    pub fn schema(mut self, name: &str) -> Self {
        self.schema = Schema::named(name);
        self
    }

    /// Opens at most this many connections (default 16). Ignored with
    /// [`with_pool`](PostgresUserStore::with_pool), whose pool keeps its own size.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Gives up on any one store operation, waiting for a connection included, after this
    /// long (default 5 s): the service then answers `503`. Also bounds connecting.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn pool(&mut self) -> Result<Pool, UserStoreError> {
        match &mut self.source {
            Source::Pool(pool) => Ok(pool.clone()),
            Source::Url(config) => {
                let config = config
                    .as_mut()
                    .as_mut()
                    .map_err(|error| UserStoreError::new(error.as_str()))?;
                config.connect_timeout(self.timeout);
                let manager = Manager::from_config(
                    config.clone(),
                    NoTls,
                    ManagerConfig {
                        recycling_method: RecyclingMethod::Fast,
                    },
                );
                Pool::builder(manager)
                    .max_size(self.max_connections)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(self.timeout))
                    .create_timeout(Some(self.timeout))
                    .recycle_timeout(Some(self.timeout))
                    .build()
                    .map_err(|error| UserStoreError::new(error.to_string()))
            }
        }
    }

    async fn open(mut self) -> Result<PostgresUserStore, UserStoreError> {
        let schema = self.schema.clone().map_err(UserStoreError::new)?;
        let pool = self.pool()?;
        let migrate = async {
            let mut client = pool.get().await.map_err(pool_error)?;
            schema.migrate(&mut client).await.map_err(query_error)
        };
        tokio::time::timeout(self.timeout, migrate)
            .await
            .map_err(|_| UserStoreError::new("PostgreSQL did not answer in time"))??;
        Ok(PostgresUserStore::new(pool, schema, self.timeout))
    }
}

impl IntoFuture for PostgresUserStoreBuilder {
    type Output = Result<PostgresUserStore, UserStoreError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
    }
}
