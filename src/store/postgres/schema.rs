//! The tables, the migrations that make them, and the SQL the store runs against them.

use deadpool_postgres::Object;

/// The key space of the advisory locks this crate takes (`'jw'` as an integer), so they
/// cannot collide with an application's own advisory locks on other spaces.
const LOCK_SPACE: i32 = 0x6a77;

/// The embedded migrations, in order. Each runs once per schema, inside the transaction that
/// records it. `{s}` stands for the schema qualifier (empty, or `"name".`). Append only:
/// a deployed migration is never edited.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
    CREATE TABLE {s}jwt_gate_users (
        key           text PRIMARY KEY,
        username      text NOT NULL,
        email         text NOT NULL,
        password_hash text NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE {s}jwt_gate_sessions (
        id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        family   text NOT NULL UNIQUE,
        user_key text NOT NULL,
        revoked  boolean NOT NULL DEFAULT false
    );
    CREATE INDEX jwt_gate_sessions_user ON {s}jwt_gate_sessions (user_key, id);
    CREATE TABLE {s}jwt_gate_refresh_tokens (
        hash       bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
        family     text NOT NULL REFERENCES {s}jwt_gate_sessions (family) ON DELETE CASCADE,
        expires_at bigint NOT NULL,
        spent      boolean NOT NULL DEFAULT false,
        access_jti text NOT NULL,
        access_exp bigint NOT NULL
    );
    CREATE INDEX jwt_gate_refresh_tokens_family ON {s}jwt_gate_refresh_tokens (family);
    CREATE INDEX jwt_gate_refresh_tokens_access ON {s}jwt_gate_refresh_tokens (access_jti);
    CREATE INDEX jwt_gate_refresh_tokens_expiry ON {s}jwt_gate_refresh_tokens (expires_at);
    ",
    ),
    // Look-alike usernames (UTS #39 skeletons) are unique too. Existing rows get their keys
    // from `claim_lookalikes`, which needs Rust to compute them.
    (
        2,
        "
    ALTER TABLE {s}jwt_gate_users ADD COLUMN lookalike text;
    CREATE UNIQUE INDEX jwt_gate_users_lookalike ON {s}jwt_gate_users (lookalike);
    ",
    ),
    // Bounded families: each session has an absolute end, a generation counter and a
    // rotation window; tokens carry their generation so spent ones beyond the newest few can
    // be deleted, and no longer the access token issued with them (access tokens name their
    // session in `sid` instead). Existing sessions end when their newest token would have.
    // Written to be harmless when run again over its own result.
    (
        3,
        "
    ALTER TABLE {s}jwt_gate_sessions
        ADD COLUMN IF NOT EXISTS expires_at   bigint  NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS generation   bigint  NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS window_start bigint  NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS window_count integer NOT NULL DEFAULT 0;
    ALTER TABLE {s}jwt_gate_refresh_tokens
        ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0;
    UPDATE {s}jwt_gate_refresh_tokens t SET generation = numbered.n
        FROM (SELECT hash, row_number() OVER (PARTITION BY family ORDER BY expires_at, spent DESC) AS n
              FROM {s}jwt_gate_refresh_tokens) numbered
        WHERE numbered.hash = t.hash;
    UPDATE {s}jwt_gate_sessions s
        SET expires_at = coalesce(newest.expires_at, 0), generation = coalesce(newest.generation, 0)
        FROM (SELECT family, max(expires_at) AS expires_at, max(generation) AS generation
              FROM {s}jwt_gate_refresh_tokens GROUP BY family) newest
        WHERE newest.family = s.family;
    ALTER TABLE {s}jwt_gate_sessions ALTER COLUMN expires_at DROP DEFAULT;
    ALTER TABLE {s}jwt_gate_refresh_tokens
        DROP COLUMN IF EXISTS access_jti, DROP COLUMN IF EXISTS access_exp;
    DROP INDEX IF EXISTS {s}jwt_gate_refresh_tokens_family;
    CREATE INDEX IF NOT EXISTS jwt_gate_refresh_tokens_generation
        ON {s}jwt_gate_refresh_tokens (family, generation);
    ",
    ),
    // The roles and scopes each user holds, and the scopes each session was granted at its
    // login. Existing users hold none; existing sessions were granted none.
    (
        4,
        "
    ALTER TABLE {s}jwt_gate_users
        ADD COLUMN IF NOT EXISTS roles  text[] NOT NULL DEFAULT '{}',
        ADD COLUMN IF NOT EXISTS scopes text[] NOT NULL DEFAULT '{}';
    ALTER TABLE {s}jwt_gate_sessions
        ADD COLUMN IF NOT EXISTS scopes text[] NOT NULL DEFAULT '{}';
    ",
    ),
];

/// Where the tables live: the connection's `search_path`, or one named schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Schema {
    name: Option<String>,
}

impl Schema {
    /// The connection's default schema (its `search_path`).
    pub(super) fn default_path() -> Self {
        Self { name: None }
    }

    /// The schema `name`: a plain SQL identifier (ASCII letters, digits and `_`, not starting
    /// with a digit, at most 63 bytes), so it can be spliced into SQL safely.
    pub(super) fn named(name: &str) -> Result<Self, String> {
        let plain = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(format!(
                "schema name {name:?} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes)"
            ));
        }
        Ok(Self {
            name: Some(name.to_owned()),
        })
    }

    pub(super) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn qualifier(&self) -> String {
        self.name
            .as_ref()
            .map_or_else(String::new, |name| format!("\"{name}\"."))
    }

    fn expand(&self, sql: &str) -> String {
        sql.replace("{s}", &self.qualifier())
    }

    /// Brings the schema up to the newest migration. Safe to run from many processes at once:
    /// an advisory lock per schema lets one migrate while the others wait, then find nothing
    /// left to do.
    pub(super) async fn migrate(&self, client: &mut Object) -> Result<(), tokio_postgres::Error> {
        let transaction = client.transaction().await?;
        let lock_name = match &self.name {
            Some(name) => name.clone(),
            None => transaction
                .query_one("SELECT current_schema()::text", &[])
                .await?
                .try_get::<_, Option<String>>(0)?
                .unwrap_or_default(),
        };
        transaction
            .execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_SPACE, &lock_name],
            )
            .await?;
        if let Some(name) = &self.name {
            transaction
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{name}\""))
                .await?;
        }
        transaction
            .batch_execute(&self.expand(
                "CREATE TABLE IF NOT EXISTS {s}jwt_gate_migrations (
                     version    integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            ))
            .await?;
        let applied: i32 = transaction
            .query_one(
                &self.expand("SELECT coalesce(max(version), 0) FROM {s}jwt_gate_migrations"),
                &[],
            )
            .await?
            .try_get(0)?;
        for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
            transaction.batch_execute(&self.expand(sql)).await?;
            transaction
                .execute(
                    &self.expand("INSERT INTO {s}jwt_gate_migrations (version) VALUES ($1)"),
                    &[version],
                )
                .await?;
        }
        self.claim_lookalikes(&transaction).await?;
        transaction.commit().await
    }

    /// Gives every user without one its look-alike key, in registration order, in one
    /// statement: each claims its key unless an older user (or one already keyed) holds it.
    /// Of existing accounts that look alike, the oldest keeps the name; the others keep
    /// working (they log in by their own key) without a look-alike key, so no new account
    /// can take the name either. Renaming or merging them is the operator's call, whom a
    /// warning tells. Rows stay unkeyed only while they collide, so later starts find little.
    async fn claim_lookalikes(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let keys: Vec<String> = transaction
            .query(
                &self.expand(
                    "SELECT key FROM {s}jwt_gate_users WHERE lookalike IS NULL
                     ORDER BY created_at, key",
                ),
                &[],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        let lookalikes: Vec<String> = keys
            .iter()
            .map(|key| crate::service::identity::lookalike_key(key))
            .collect();
        let claimed = transaction
            .execute(
                &self.expand(
                    "UPDATE {s}jwt_gate_users u SET lookalike = first.lookalike
                     FROM (SELECT DISTINCT ON (lookalike) key, lookalike
                           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(key, lookalike, n)
                           ORDER BY lookalike, n) first
                     WHERE u.key = first.key AND NOT EXISTS
                           (SELECT 1 FROM {s}jwt_gate_users w WHERE w.lookalike = first.lookalike)",
                ),
                &[&keys, &lookalikes],
            )
            .await?;
        let collisions = keys.len() as u64 - claimed;
        if collisions > 0 {
            tracing::warn!(
                accounts = collisions,
                "existing accounts look alike an older one; they keep working, and no new \
                 account can take their names (SELECT key FROM jwt_gate_users WHERE lookalike \
                 IS NULL lists them)"
            );
        }
        Ok(())
    }

    pub(super) fn statements(&self) -> Sql {
        Sql {
            // No conflict target: the key and the look-alike key both refuse a second user.
            insert_user: self.expand(
                "INSERT INTO {s}jwt_gate_users
                     (key, username, email, password_hash, lookalike, roles, scopes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            ),
            find_user: self.expand(
                "SELECT key, username, email, password_hash, roles, scopes
                 FROM {s}jwt_gate_users WHERE key = $1",
            ),
            lock_grants: self.expand(
                "SELECT roles, scopes FROM {s}jwt_gate_users WHERE key = $1 FOR UPDATE",
            ),
            update_grants: self.expand(
                "UPDATE {s}jwt_gate_users SET roles = $2, scopes = $3 WHERE key = $1",
            ),
            update_password_hash: self
                .expand("UPDATE {s}jwt_gate_users SET password_hash = $2 WHERE key = $1"),
            sweep_tokens: self
                .expand("DELETE FROM {s}jwt_gate_refresh_tokens WHERE expires_at <= $1"),
            sweep_sessions: self.expand(
                "DELETE FROM {s}jwt_gate_sessions s WHERE s.expires_at <= $1 OR NOT EXISTS
                 (SELECT 1 FROM {s}jwt_gate_refresh_tokens t WHERE t.family = s.family)",
            ),
            insert_session: self.expand(
                "INSERT INTO {s}jwt_gate_sessions (family, user_key, expires_at, scopes)
                 VALUES ($1, $2, $3, $4)",
            ),
            cap_sessions: self.expand(
                "DELETE FROM {s}jwt_gate_sessions WHERE user_key = $1 AND id NOT IN
                 (SELECT id FROM {s}jwt_gate_sessions WHERE user_key = $1 ORDER BY id DESC LIMIT $2)",
            ),
            insert_token: self.expand(
                "INSERT INTO {s}jwt_gate_refresh_tokens (hash, family, generation, expires_at)
                 VALUES ($1, $2, $3, $4)",
            ),
            family_of_token: self
                .expand("SELECT family FROM {s}jwt_gate_refresh_tokens WHERE hash = $1"),
            session_of_token: self.expand(
                "SELECT s.user_key, s.family
                 FROM {s}jwt_gate_refresh_tokens t JOIN {s}jwt_gate_sessions s ON s.family = t.family
                 WHERE t.hash = $1 AND t.expires_at > $2 AND s.expires_at > $2",
            ),
            lock_session: self.expand(
                "SELECT user_key, revoked, expires_at, generation, window_start, window_count,
                        scopes
                 FROM {s}jwt_gate_sessions WHERE family = $1 FOR UPDATE",
            ),
            token_state: self.expand(
                "SELECT spent, expires_at FROM {s}jwt_gate_refresh_tokens WHERE hash = $1",
            ),
            spend_token: self
                .expand("UPDATE {s}jwt_gate_refresh_tokens SET spent = true WHERE hash = $1"),
            revoke_family: self
                .expand("UPDATE {s}jwt_gate_sessions SET revoked = true WHERE family = $1"),
            advance_family: self.expand(
                "UPDATE {s}jwt_gate_sessions SET generation = $2, window_start = $3, window_count = $4
                 WHERE family = $1",
            ),
            prune_tokens: self.expand(
                "DELETE FROM {s}jwt_gate_refresh_tokens WHERE family = $1 AND generation < $2",
            ),
            sessions_of: self.expand(
                "SELECT family FROM {s}jwt_gate_sessions WHERE user_key = $1 AND expires_at > $2",
            ),
            end_sessions: self.expand(
                "UPDATE {s}jwt_gate_sessions SET revoked = true WHERE family = ANY($1)",
            ),
        }
    }
}

/// Every statement the store runs, qualified for its schema once, at start.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) insert_user: String,
    pub(super) find_user: String,
    pub(super) lock_grants: String,
    pub(super) update_grants: String,
    pub(super) update_password_hash: String,
    pub(super) sweep_tokens: String,
    pub(super) sweep_sessions: String,
    pub(super) insert_session: String,
    pub(super) cap_sessions: String,
    pub(super) insert_token: String,
    pub(super) family_of_token: String,
    pub(super) session_of_token: String,
    pub(super) lock_session: String,
    pub(super) token_state: String,
    pub(super) spend_token: String,
    pub(super) revoke_family: String,
    pub(super) advance_family: String,
    pub(super) prune_tokens: String,
    pub(super) sessions_of: String,
    pub(super) end_sessions: String,
}

#[cfg(test)]
mod tests {
    use super::Schema;

    #[test]
    fn only_plain_identifiers_name_a_schema() {
        assert!(Schema::named("jwt_gate_test_1").is_ok());
        for bad in ["", "1abc", "a\"b", "a;DROP", "a b", "ä", &"x".repeat(64)] {
            assert!(Schema::named(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_named_schema_qualifies_every_table() {
        let sql = Schema::named("auth").unwrap().statements();
        assert!(sql.find_user.contains("FROM \"auth\".jwt_gate_users"));
        let default = Schema::default_path().statements();
        assert!(default.find_user.contains("FROM jwt_gate_users"));
    }
}
