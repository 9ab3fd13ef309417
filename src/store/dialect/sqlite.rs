//! SQLite's side: the file made private before first use, every connection's pragmas, the intake's
//! and delivery results' batches as multi-statement queries, WAL checkpoints, `VACUUM INTO` backups.

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context;
use serde_json::json;
use sqlx::{
    any::AnyPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous},
    AnyPool, ConnectOptions, Connection, Executor,
};

use crate::{
    domain::{CompanyId, EventId},
    store::{
        create_private,
        rows::{outcome_of, DeliveryResult, NewEvent},
        Tx,
    },
};

const MMAP_SIZE: &str = "268435456";
const CACHE_SIZE: &str = "-16384";
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Open the pool, creating the SQLite file (and its directory) if needed. Returns the pool and the
/// full options, which the intake writer opens its own connection with.
///
/// `max_pages` caps the file (SQLite's `max_page_count`): past it writes fail cleanly ("database or
/// disk is full") instead of filling the disk.
pub(crate) async fn connect(
    database_url: &str,
    max_pages: Option<u64>,
    pool: AnyPoolOptions,
) -> anyhow::Result<(AnyPool, SqliteConnectOptions)> {
    let options = SqliteConnectOptions::from_str(database_url)
        .with_context(|| "DATABASE_URL is not a valid sqlite:// URL".to_string())?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Durability first: every commit is on disk before we answer (webhooks get their 200 only then).
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // Read pages through a memory map (no read syscall per page) and keep more of them cached.
        .pragma("mmap_size", MMAP_SIZE)
        .pragma("cache_size", CACHE_SIZE);
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
        // One connection with the full options first: it switches the file to WAL (a lasting
        // setting that needs the file to itself), before the pool opens several at once.
        options
            .connect()
            .await
            .with_context(|| format!("cannot open the database at {}", file.display()))?
            .close()
            .await?;
    }
    // The `Any` driver opens SQLite from the URL alone, so the per-connection settings above are
    // applied again to each of the pool's connections as it opens.
    let mut pragmas = format!(
        "pragma journal_mode = wal; pragma synchronous = full; pragma foreign_keys = on; \
         pragma busy_timeout = {}; pragma mmap_size = {MMAP_SIZE}; pragma cache_size = {CACHE_SIZE};",
        BUSY_TIMEOUT.as_millis()
    );
    if let Some(n) = max_pages {
        pragmas.push_str(&format!(" pragma max_page_count = {n};"));
    }
    let pool = pool
        .after_connect(move |conn, _| {
            let pragmas = pragmas.clone();
            Box::pin(async move {
                conn.execute(pragmas.as_str()).await?;
                Ok(())
            })
        })
        .connect(database_url)
        .await
        .with_context(|| format!("cannot open the database at {}", file.display()))?;
    Ok((pool, options))
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

/// The intake writer's connection: automatic checkpoints off, so a commit never waits for one.
pub(crate) async fn writer(options: &SqliteConnectOptions) -> anyhow::Result<SqliteConnection> {
    let options = options
        .clone()
        .pragma("wal_autocheckpoint", "0")
        // When the WAL restarts, a file that grew past this is cut back.
        .pragma("journal_size_limit", "67108864");
    options.connect().await.context("opening the intake writer's connection")
}

const INSERT_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// `insert into events … values (…), (…)` for `rows` rows (one of `INSERT_CHUNKS`), built once.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        INSERT_CHUNKS
            .iter()
            .map(|&n| {
                // Anonymous `?` parameters: sqlx looks a named one up by name, which SQLite does
                // by a linear walk, so 700 `$N` would cost more than the insert. Events start
                // unmatched (or rejected, see `NewEvent::initial_state`); MATCH_SQL then gives
                // those of connected companies their connection.
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, null, ?, ?)"; n];
                format!(
                    "insert into events (public_id, received_at, event_type, company_id, inspection_id, review_id, \
                     status_text, payload, payload_hash, connection_id, state, next_attempt_at) values {}",
                    values.join(", ")
                )
            })
            .collect()
    });
    let i = INSERT_CHUNKS.iter().position(|n| *n == rows).expect("a chunk size");
    &all[i]
}

/// Match the batch's events (their ids bound as a JSON array) to their companies' connections.
const MATCH_SQL: &str = "update events set state = 'pending', connection_id = (select c.id from connections c \
    where c.provider = 'snapinspect' and c.company_id = events.company_id and c.status <> 'disconnected') \
    where public_id in (select value from json_each(?)) and company_id in (select company_id from connections \
    where provider = 'snapinspect' and status <> 'disconnected' and company_id is not null)";

/// Store a batch and count its duplicates in one transaction (see `EventWriter::insert`).
pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
    duplicates: &[(EventId, i64)],
) -> anyhow::Result<()> {
    // The whole batch is one multi-statement query: one round trip to SQLite's thread instead
    // of one per statement, which under load is what a batch mostly waits for.
    let mut sql = String::from("begin immediate;\n");
    let mut rest = events.len();
    while rest > 0 {
        let size = INSERT_CHUNKS.iter().copied().find(|n| *n <= rest).unwrap_or(1);
        sql.push_str(insert_sql(size));
        sql.push_str(";\n");
        rest -= size;
    }
    let ids = json!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>()).to_string();
    if !events.is_empty() {
        // Events whose company is connected belong to that connection. The write lock is held
        // since `begin immediate`, so this sees exactly the connections a connect has committed.
        sql.push_str(MATCH_SQL);
        sql.push_str(";\n");
    }
    for _ in duplicates {
        sql.push_str("update events set duplicates = duplicates + ? where public_id = ?;\n");
    }
    sql.push_str("commit");

    let mut q = sqlx::query(&sql);
    for e in events {
        let p = &e.payload;
        q = q
            .bind(e.id.as_str())
            .bind(e.received_at)
            .bind(p.kind.as_deref())
            .bind(p.company_id.map(CompanyId::get))
            .bind(p.inspection_id)
            .bind(p.review_id)
            .bind(p.status.as_deref())
            .bind(p.raw.as_str())
            .bind(p.dedupe_hash.as_str())
            .bind(e.initial_state().as_str())
            // A new event is due at once.
            .bind(e.received_at);
    }
    if !events.is_empty() {
        q = q.bind(&ids);
    }
    for (id, count) in duplicates {
        q = q.bind(*count).bind(id.as_str());
    }
    if let Err(e) = q.execute(&mut *conn).await {
        // A statement failed part-way: end the transaction it left open.
        let _ = sqlx::query("rollback").execute(&mut *conn).await;
        return Err(anyhow::Error::new(e).context("storing webhook events"));
    }
    Ok(())
}

/// Events of the window with one of a JSON array of hashes (see `Store::window_holders`).
pub(crate) const WINDOW_HOLDERS_SQL: &str = "select payload_hash, public_id, received_at from events \
    where received_at >= $1 and received_at <= $2 and payload_hash in (select value from json_each($3))";

/// Copy committed WAL frames into the database file without blocking writers or readers.
pub(crate) const CHECKPOINT_SQL: &str = "pragma wal_checkpoint(passive)";

/// `VACUUM INTO` a new private file (see `Store::backup`).
pub(crate) async fn backup(pool: &AnyPool, target: &Path) -> anyhow::Result<u64> {
    let path = target.to_str().ok_or_else(|| anyhow::anyhow!("the backup path must be UTF-8"))?;
    // `VACUUM INTO` fills an empty file: made here first, so the copy is private like the
    // database, and so an existing file is never touched.
    anyhow::ensure!(
        create_private(target).with_context(|| format!("cannot create {}", target.display()))?,
        "{} already exists; choose a new file",
        target.display()
    );
    if let Err(e) = sqlx::query("vacuum into $1").bind(path).execute(pool).await {
        let _ = std::fs::remove_file(target);
        return Err(anyhow::Error::new(e).context("copying the database"));
    }
    Ok(std::fs::metadata(target)?.len())
}

/// How many results one statement group records (the rest go in smaller groups).
const RECORD_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// One result: the attempt, inserted only while the claim is current, then the delivery moved on.
const RECORD_SQL: &str = "insert into delivery_attempts (delivery_id, started_at, duration_ms, outcome, http_status, \
    error, response_excerpt) select id, ?, ?, ?, ?, ?, ? from deliveries where id = ? and claim_id = ? \
    and state = 'processing';\n\
    update deliveries set state = ?, next_attempt_at = ?, lease_owner = null, last_error = ?, last_status = ?, \
    completed_at = ? where id = ? and claim_id = ? and state = 'processing';\n";

/// Record delivery results whose claim is still current; returns how many were. Multi-statement
/// queries, one round trip to SQLite's thread per group, as in the intake's `insert`.
pub(crate) async fn record_delivery_results(tx: &mut Tx, results: &[DeliveryResult]) -> Result<u64, sqlx::Error> {
    let mut recorded = 0;
    let mut rest = results;
    while !rest.is_empty() {
        // A few fixed chunk sizes, so the prepared statements are reused from sqlx's cache.
        let size = RECORD_CHUNKS.iter().copied().find(|n| *n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = RECORD_SQL.repeat(size);
        let mut q = sqlx::query(&sql);
        for r in chunk {
            let (outcome, next, completed) = outcome_of(r);
            q = q
                .bind(r.started_at)
                .bind(r.duration_ms)
                .bind(outcome)
                .bind(r.http_status.map(i64::from))
                .bind(r.error.as_deref())
                .bind(r.response_excerpt.as_deref())
                .bind(r.delivery_id)
                .bind(&r.claim_id)
                .bind(r.state.as_str())
                .bind(next)
                .bind(r.error.as_deref())
                .bind(r.http_status.map(i64::from))
                .bind(completed)
                .bind(r.delivery_id)
                .bind(&r.claim_id);
        }
        // Each recorded result changes two rows (its attempt and its delivery).
        recorded += q.execute(&mut **tx).await?.rows_affected() / 2;
    }
    Ok(recorded)
}
