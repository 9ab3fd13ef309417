//! All SQL lives here. The store opens SQLite (WAL, foreign keys, a busy timeout, `synchronous=FULL`),
//! applies migrations, and seals/opens every secret column with the key ring on the way in and out.

mod admins;
mod api_keys;
mod attempts;
mod audit;
mod connection_events;
mod connections;
mod credentials;
mod deliveries;
mod delivery_claims;
mod delivery_health;
mod endpoints;
mod events;
mod intake;
mod links;
mod rotate;
mod secrets;
mod sessions;
mod states;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};

pub use admins::Admin;
pub use api_keys::ApiKey;
pub use attempts::{Attempt, AttemptOutcome, ClaimedEvent, FinishedEvent, NewAttempt};
pub use audit::AuditEntry;
pub use connections::{Connection, ConnectionFilter};
pub use credentials::StoredCredentials;
pub use deliveries::{DeliveryAttempt, DeliveryReplayRefusal, DeliveryRow, OperationalEvent};
pub use delivery_claims::{ClaimedDelivery, DeliveryEvent, DeliveryResult};
pub use endpoints::{Endpoint, NewEndpoint, SigningSecrets};
pub use events::{EventFilter, EventRow, ReplayRefusal};
pub use intake::{EventWriter, Inserted, NewEvent};
pub use links::{AssignRefusal, NewSnapInspectLink, SavedLink};
pub use rotate::RotationReport;
pub use secrets::{ExchangeFailure, LeaseOutcome, StoredTokens};
pub use states::StateRejection;

use crate::crypto::KeyRing;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The database plus the key ring that seals its secret columns. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    keys: Arc<KeyRing>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Open the pool for `DATABASE_URL`, creating the SQLite file (and its directory) if needed.
///
/// `max_pages` caps the file (SQLite's `max_page_count`): past it writes fail cleanly ("database or
/// disk is full") instead of filling the disk.
pub async fn connect_pool(database_url: &str, max_pages: Option<u64>) -> anyhow::Result<SqlitePool> {
    if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        bail!("DATABASE_URL: this build stores data in SQLite only; the PostgreSQL store is not available yet (use sqlite://PATH)");
    }
    if !database_url.starts_with("sqlite:") {
        bail!("DATABASE_URL must start with sqlite:// (e.g. sqlite://data/connect-hub.db)");
    }
    let options = SqliteConnectOptions::from_str(database_url)
        .with_context(|| "DATABASE_URL is not a valid sqlite:// URL".to_string())?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Durability first: every commit is on disk before we answer (webhooks get their 200 only then).
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // Read pages through a memory map (no read syscall per page) and keep more of them cached.
        .pragma("mmap_size", "268435456")
        .pragma("cache_size", "-16384");
    let options = match max_pages {
        Some(n) => options.pragma("max_page_count", n.to_string()),
        None => options,
    };
    let file = options.get_filename().to_path_buf();
    // An in-memory database (`sqlite::memory:`, `?mode=memory`) has no file to prepare.
    let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
    if !in_memory {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the database directory {}", dir.display()))?;
        }
        // A new database is readable by this user only; SQLite gives its -wal and -shm files the
        // same mode. An existing one keeps the mode its operator chose, with a warning if it is open.
        if !create_private(&file).with_context(|| format!("cannot create the database at {}", file.display()))? {
            warn_if_shared(&file);
        }
    }
    SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open the database at {}", file.display()))
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

/// Say so when the database file can be read by other users of the machine.
fn warn_if_shared(file: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(file) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %file.display(),
                mode = format!("{:o}", mode & 0o777),
                "the database file is readable by other users; `chmod 600` it (and its -wal and -shm files)"
            );
        }
    }
}

/// Apply every migration not yet applied (forward only).
pub async fn migrate(pool: &SqlitePool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying database migrations")
}

/// Whether every migration this binary knows is applied (for `/readyz`).
pub async fn migrations_current(pool: &SqlitePool) -> anyhow::Result<bool> {
    let applied: Vec<i64> = sqlx::query_scalar("select version from _sqlx_migrations where success = true")
        .fetch_all(pool)
        .await
        .context("reading the migrations table")?;
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}

impl Store {
    pub fn new(pool: SqlitePool, keys: Arc<KeyRing>) -> Self {
        Self { pool, keys }
    }

    /// Open, migrate and wrap: what `serve` and every CLI command do first.
    pub async fn open(database_url: &str, max_pages: Option<u64>, keys: Arc<KeyRing>) -> anyhow::Result<Self> {
        let pool = connect_pool(database_url, max_pages).await?;
        migrate(&pool).await?;
        Ok(Self::new(pool, keys))
    }

    /// A write transaction. SQLite: `BEGIN IMMEDIATE` takes the write lock up front, so a
    /// transaction that reads before it writes cannot fail with a stale snapshot (SQLITE_BUSY)
    /// when another connection commits in between; the busy timeout makes it wait instead.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("begin immediate").await
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Whether the database answers and is fully migrated.
    pub async fn ready(&self) -> anyhow::Result<bool> {
        sqlx::query("select 1").execute(&self.pool).await.context("database unreachable")?;
        migrations_current(&self.pool).await
    }

    /// Delete expired connect states and sessions; returns how many rows went.
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
        Ok(states + sessions)
    }

    /// A consistent copy of the whole database, taken online (`VACUUM INTO`: one read transaction,
    /// so writers carry on). The target must not exist yet.
    #[tracing::instrument(skip_all)]
    pub async fn backup(&self, target: &Path) -> anyhow::Result<u64> {
        let path = target.to_str().ok_or_else(|| anyhow::anyhow!("the backup path must be UTF-8"))?;
        // `VACUUM INTO` fills an empty file: made here first, so the copy is private like the
        // database, and so an existing file is never touched.
        anyhow::ensure!(
            create_private(target).with_context(|| format!("cannot create {}", target.display()))?,
            "{} already exists; choose a new file",
            target.display()
        );
        if let Err(e) = sqlx::query("vacuum into $1").bind(path).execute(&self.pool).await {
            let _ = std::fs::remove_file(target);
            return Err(anyhow::Error::new(e).context("copying the database"));
        }
        Ok(std::fs::metadata(target)?.len())
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
        let pool = super::connect_pool("sqlite::memory:", None).await.unwrap();
        sqlx::query("create table t (x integer)").execute(&pool).await.unwrap();
        let stray = std::fs::read_dir(".")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("file:sqlx-in-memory"));
        assert!(!stray, "a file named after the in-memory database was created");
    }
}
