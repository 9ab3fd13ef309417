//! All SQL lives here, written once for SQLite and PostgreSQL (sqlx's `Any` driver; what differs
//! is in `dialect`). The store applies migrations and seals/opens every secret column.

mod admins;
mod api_keys;
mod attempts;
mod audit;
mod bench;
mod connect_sessions;
mod connection_checks;
mod connection_events;
mod connections;
mod copy;
mod credentials;
mod deliveries;
mod delivery_claims;
mod delivery_health;
mod dialect;
mod endpoint_stats;
mod endpoints;
mod events;
mod health;
mod intake;
mod links;
mod outage;
mod rotate;
mod rows;
mod secrets;
mod sessions;
mod states;
mod throttle;

use std::{path::Path, sync::Arc};

use anyhow::Context;
use sqlx::AnyPool;

pub use admins::Admin;
pub use api_keys::ApiKey;
pub use attempts::{Attempt, AttemptOutcome, ClaimedEvent, FinishedEvent, NewAttempt};
pub use audit::AuditEntry;
pub use connect_sessions::{ConnectSession, NewConnectSession, SessionRejection};
pub use connection_checks::ClaimedCheck;
pub use connections::{Connection, ConnectionFilter, ProxyTarget};
pub use copy::{migrate_store, migrate_store_with, CopyProgress, CopyReport};
pub use credentials::StoredCredentials;
pub use deliveries::{DeliveryAttempt, DeliveryReplayRefusal, DeliveryRow, OperationalEvent};
pub use delivery_claims::{ClaimAsk, ClaimedDelivery, DeliveryEvent};
pub use dialect::Backend;
pub use endpoint_stats::{EndpointStats, FailedAttempt};
pub use endpoints::{DeliveryTarget, Endpoint, EndpointChange, NewEndpoint, SigningSecrets};
pub use events::{EventFilter, EventRow, ReplayRefusal};
pub use health::StoreHealth;
pub use intake::{EventWriter, Inserted, WindowEntry, Written};
pub use links::{AssignRefusal, LinkRefusal, NewSnapInspectLink, SavedLink};
pub use outage::{Outage, FIRST_BACKOFF};
pub use rotate::RotationReport;
pub use rows::{DeliveryResult, NewEvent};
pub use secrets::{ExchangeFailure, LeaseOutcome, StoredTokens};
pub use states::{ConsumedState, StateRejection};
pub use throttle::{account_hash, ThrottleKey, ThrottleRow};

use crate::crypto::KeyRing;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The transaction every multi-statement write runs in (see [`Store::write_tx`]).
pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The database plus the key ring that seals its secret columns. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writer: dialect::WriterOptions,
    keys: Arc<KeyRing>,
    /// Whether the database answers, shared by every clone (see `health`).
    health: Arc<StoreHealth>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// A pool on `DATABASE_URL` (`sqlite://` or `postgres://`), unmigrated. A SQLite file (and its
/// directory) is created if needed, readable by its owner only.
///
/// `max_pages` caps a SQLite file (`max_page_count`): past it writes fail cleanly ("database or
/// disk is full") instead of filling the disk. PostgreSQL ignores it.
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    writer: dialect::WriterOptions,
}

impl Database {
    pub async fn connect(database_url: &str, max_pages: Option<u64>) -> anyhow::Result<Self> {
        let (backend, pool, writer) = dialect::connect(database_url, max_pages).await?;
        Ok(Self { pool, backend, writer })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Apply every migration not yet applied (forward only), from this backend's own set.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        migrator(self.backend).run(&self.pool).await.context("applying database migrations")
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn migrator(backend: Backend) -> &'static sqlx::migrate::Migrator {
    match backend {
        Backend::Sqlite => &SQLITE_MIGRATOR,
        Backend::Postgres => &POSTGRES_MIGRATOR,
    }
}

/// Create an empty file that only this user can read and write; `false` if it already exists.
pub fn create_private(path: &Path) -> std::io::Result<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether every migration this binary knows for `backend` is applied (for `/readyz`).
pub async fn migrations_current(pool: &AnyPool, backend: Backend) -> anyhow::Result<bool> {
    let applied: Vec<i64> = sqlx::query_scalar("select version from _sqlx_migrations where success = true")
        .fetch_all(pool)
        .await
        .context("reading the migrations table")?;
    Ok(migrator(backend).iter().all(|m| applied.contains(&m.version)))
}

impl Store {
    pub fn new(db: Database, keys: Arc<KeyRing>) -> Self {
        Self { pool: db.pool, backend: db.backend, writer: db.writer, keys, health: Arc::default() }
    }

    /// The same database seen through another key ring (a key rotation's before and after).
    pub fn with_keys(&self, keys: Arc<KeyRing>) -> Self {
        Self { keys, ..self.clone() }
    }

    /// Open, migrate and wrap: what `serve` and every CLI command do first.
    pub async fn open(database_url: &str, max_pages: Option<u64>, keys: Arc<KeyRing>) -> anyhow::Result<Self> {
        let db = Database::connect(database_url, max_pages).await?;
        db.migrate().await?;
        Ok(Self::new(db, keys))
    }

    /// A write transaction (see [`Backend::begin_write`]: `begin immediate` on SQLite).
    pub(crate) async fn write_tx(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin_with(self.backend.begin_write()).await
    }

    /// Hold `key` (any bytes) until `tx` ends, so concurrent read-then-write transactions on the
    /// same key run one after another on every backend (see `Backend::key_lock_sql`).
    pub(crate) async fn lock_key(&self, tx: &mut Tx, key: &[u8]) -> Result<(), sqlx::Error> {
        if let Some(sql) = self.backend.key_lock_sql() {
            let digest = crate::domain::sha256(key);
            let id = i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"));
            sqlx::query(sql).bind(id).execute(&mut **tx).await?;
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Whether the database answers, as its users last found it, and the errors they counted.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Whether the database answers and is fully migrated, within `within` (a pool waiting to
    /// reach a database that is down would otherwise wait for its acquire timeout). Updates the
    /// health gauge.
    pub async fn ready(&self, within: std::time::Duration) -> anyhow::Result<bool> {
        let check = async {
            sqlx::query("select 1").execute(&self.pool).await.context("database unreachable")?;
            migrations_current(&self.pool, self.backend).await
        };
        let result = match tokio::time::timeout(within, check).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("the database did not answer within {} ms", within.as_millis())),
        };
        match &result {
            Ok(_) => self.health.answered(),
            Err(_) => self.health.failed("ready"),
        }
        result
    }

    /// Delete expired connect states, sessions, connect links and sign-in throttle rows; returns how many rows went.
    #[tracing::instrument(skip_all)]
    pub async fn purge_expired(&self, now: i64) -> anyhow::Result<u64> {
        let states = sqlx::query("delete from oauth_states where expires_at < $1")
            .bind(now - 24 * 3_600_000) // keep used/expired states a day, so a replay is told "already used"
            .execute(&self.pool)
            .await?
            .rows_affected();
        let sessions = sqlx::query("delete from sessions where expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        // Sign-in throttle rows outlive their window and lock by `expires_at` (see `auth`).
        let throttle = sqlx::query("delete from sign_in_throttle where expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        // Connect links a day past their end: kept that long so a late click is told "expired".
        let links = self.purge_connect_sessions(now - 24 * 3_600_000).await?;
        Ok(states + sessions + throttle + links)
    }

    /// A consistent copy of the whole database, taken online (`VACUUM INTO`: one read transaction,
    /// so writers carry on). The target must not exist yet. SQLite only: PostgreSQL has `pg_dump`.
    #[tracing::instrument(skip_all)]
    pub async fn backup(&self, target: &Path) -> anyhow::Result<u64> {
        match self.backend {
            Backend::Sqlite => dialect::sqlite::backup(&self.pool, target).await,
            Backend::Postgres => anyhow::bail!(
                "`backup` copies a SQLite database; this one is PostgreSQL: use `pg_dump` instead \
                 (e.g. `pg_dump --format=custom --file=hub.dump \"$DATABASE_URL\"`)"
            ),
        }
    }

    /// Flush and close the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether an sqlx error is a unique-constraint violation (a concurrent insert won the race).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_in_memory_database_leaves_no_file_behind() {
        let db = super::Database::connect("sqlite::memory:", None).await.unwrap();
        sqlx::query("create table t (x integer)").execute(db.pool()).await.unwrap();
        let stray = std::fs::read_dir(".")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("file:sqlx-in-memory"));
        assert!(!stray, "a file named after the in-memory database was created");
    }

    #[tokio::test]
    async fn every_pooled_sqlite_connection_gets_the_durability_and_size_settings() {
        let dir = std::env::temp_dir().join(format!("hub-pragmas-{}", rand::random::<u64>()));
        let url = format!("sqlite://{}", dir.join("hub.db").display());
        let db = super::Database::connect(&url, Some(5000)).await.unwrap();
        // More connections than the first: each one the pool opens must carry the settings.
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(db.pool().acquire().await.unwrap());
        }
        for conn in &mut conns {
            let text = |sql: &'static str| sqlx::query_scalar::<_, String>(sql);
            let int = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
            assert_eq!(text("pragma journal_mode").fetch_one(&mut **conn).await.unwrap(), "wal");
            assert_eq!(int("pragma synchronous").fetch_one(&mut **conn).await.unwrap(), 2, "FULL");
            assert_eq!(int("pragma foreign_keys").fetch_one(&mut **conn).await.unwrap(), 1);
            assert_eq!(int("pragma busy_timeout").fetch_one(&mut **conn).await.unwrap(), 10_000);
            assert_eq!(int("pragma mmap_size").fetch_one(&mut **conn).await.unwrap(), 268_435_456);
            assert_eq!(int("pragma cache_size").fetch_one(&mut **conn).await.unwrap(), -16_384);
            assert_eq!(int("pragma max_page_count").fetch_one(&mut **conn).await.unwrap(), 5000);
        }
        drop(conns);
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
