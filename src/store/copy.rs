//! `migrate-store`: copy every row of a SQLite database into an empty, migrated PostgreSQL one,
//! byte for byte but a NUL in text (sealed secrets stay sealed, ids are kept); verify the counts.

use std::path::Path;

use anyhow::{bail, ensure, Context};
use sqlx::{any::AnyRow, AnyPool, Row};

use super::{migrations_current, Backend, Database};
use crate::domain::text::without_nul;

/// Every table, parents before children (foreign keys). A table the source has and this list
/// lacks stops the copy: nothing is left behind silently.
const TABLES: [&str; 14] = [
    "connections",
    "connect_sessions",
    "oauth_states",
    "sessions",
    "audit_log",
    "admins",
    "api_keys",
    "sign_in_throttle",
    "events",
    "event_attempts",
    "endpoints",
    "endpoint_event_types",
    "deliveries",
    "delivery_attempts",
];

/// SQLite's own bookkeeping, which PostgreSQL does another way and so does not have: the change
/// counter of endpoints (PostgreSQL NOTIFYs). Not copied.
const SQLITE_ONLY: [&str; 1] = ["endpoint_changes"];

/// At most this many bound values per insert (PostgreSQL allows 65535).
const MAX_PARAMS: usize = 30_000;

/// How many rows each table had, and now has, in both.
#[derive(Debug)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, i64)>,
}

/// A column of the target, and how its values travel.
struct Column {
    name: String,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Bool,
    Text,
    Bytes,
}

/// Copy `from` (a `sqlite://` file, fully migrated) into `to` (a `postgres://` database, migrated
/// here, which must hold no rows yet), in one transaction on the target. `dedupe_window_ms`: the
/// shared duplicate window is filled from the events received within it.
pub async fn migrate_store(from: &str, to: &str, dedupe_window_ms: i64) -> anyhow::Result<CopyReport> {
    migrate_store_with(from, to, dedupe_window_ms, &mut |_| {}).await
}

/// How far a copy is: `table` (the `index`th of `of`) has `copied` of its `rows` in the target.
#[derive(Debug, Clone, Copy)]
pub struct CopyProgress<'a> {
    pub table: &'a str,
    pub index: usize,
    pub of: usize,
    pub copied: usize,
    pub rows: usize,
}

/// [`migrate_store`], telling `progress` after each batch of rows it copies.
pub async fn migrate_store_with(
    from: &str,
    to: &str,
    dedupe_window_ms: i64,
    progress: &mut (dyn FnMut(CopyProgress<'_>) + Send),
) -> anyhow::Result<CopyReport> {
    ensure!(Backend::of_url(from)? == Backend::Sqlite, "--from must be a sqlite:// URL (the database to move)");
    ensure!(Backend::of_url(to)? == Backend::Postgres, "--to must be a postgres:// URL (the database to move to)");
    let file = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(from)
        .context("--from is not a valid sqlite:// URL")?;
    let file = file.get_filename().to_path_buf();
    ensure!(Path::new(&file).is_file(), "the source database {} does not exist", file.display());
    let source = Database::connect(from, None).await.context("opening the source database")?;
    ensure!(
        migrations_current(source.pool(), Backend::Sqlite).await.context("reading the source's migrations")?,
        "the source database is not fully migrated: run `connect-hub migrate` with DATABASE_URL={from} first"
    );
    let target = Database::connect(to, None).await.context("opening the target database")?;
    target.migrate().await?;
    let sp = source.pool();
    let tp = target.pool();

    let names: Vec<String> = sqlx::query_scalar(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' and name <> '_sqlx_migrations'",
    )
    .fetch_all(sp)
    .await?;
    if let Some(unknown) = names.iter().find(|n| !TABLES.contains(&n.as_str()) && !SQLITE_ONLY.contains(&n.as_str())) {
        bail!("the source has a table `{unknown}` this version does not know how to copy");
    }
    for table in TABLES {
        let n = count(tp, table).await?;
        ensure!(n == 0, "the target is not empty ({table} has {n} rows): migrate into a new, empty database");
    }

    let mut tx = tp.begin().await?;
    let mut report = CopyReport { tables: Vec::new() };
    for (index, table) in TABLES.into_iter().enumerate() {
        let columns = target_columns(tp, table).await?;
        let list = columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
        // SQLite's booleans are read as the 0/1 they are (the `Any` driver has no SQLite boolean).
        let select = columns
            .iter()
            .map(|c| match c.kind {
                Kind::Bool => format!("cast({0} as integer) as {0}", c.name),
                _ => c.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!("select {select} from {table}")).fetch_all(sp).await?;
        let per = (MAX_PARAMS / columns.len()).max(1);
        let (of, total) = (TABLES.len(), rows.len());
        progress(CopyProgress { table, index, of, copied: 0, rows: total });
        for (n, chunk) in rows.chunks(per).enumerate() {
            let values = (0..chunk.len())
                .map(|r| {
                    let row = (1..=columns.len()).map(|c| format!("${}", r * columns.len() + c)).collect::<Vec<_>>();
                    format!("({})", row.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            // Ids are kept (`overriding system value` lets explicit ids into identity columns).
            let sql = format!("insert into {table} ({list}) overriding system value values {values}");
            let mut q = sqlx::query(&sql);
            for row in chunk {
                for (i, c) in columns.iter().enumerate() {
                    q = bind(q, row, i, c).with_context(|| format!("reading {table}.{}", c.name))?;
                }
            }
            q.execute(&mut *tx).await.with_context(|| format!("copying {table}"))?;
            progress(CopyProgress { table, index, of, copied: (n * per + chunk.len()).min(total), rows: total });
        }
        report.tables.push((table, rows.len() as i64));
    }
    // New rows continue after the copied ids.
    let identities: Vec<(String, String)> = sqlx::query_as(
        "select table_name::text, column_name::text from information_schema.columns \
         where table_schema = current_schema() and is_identity = 'YES'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (table, column) in identities {
        sqlx::query(&format!(
            "select setval(pg_get_serial_sequence('{table}', '{column}'), coalesce(max({column}), 0) + 1, false) from {table}"
        ))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("resetting the id sequence of {table}"))?;
    }
    // Webhooks SnapInspect sends again after the move are still recognised as duplicates.
    sqlx::query(
        "insert into event_dedupe (payload_hash, public_id, received_at) \
         select distinct on (payload_hash) payload_hash, public_id, received_at from events \
         where received_at >= $1 order by payload_hash, received_at desc",
    )
    .bind(crate::time::now_ms() - dedupe_window_ms)
    .execute(&mut *tx)
    .await
    .context("filling the duplicate window")?;
    tx.commit().await.context("committing the copy")?;

    for (table, n) in &report.tables {
        let (s, t) = (count(sp, table).await?, count(tp, table).await?);
        ensure!(
            s == *n && t == *n,
            "{table}: {n} rows copied, but the source now has {s} and the target {t} (was the source in use?)"
        );
    }
    source.close().await;
    target.close().await;
    Ok(report)
}

async fn count(pool: &AnyPool, table: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(pool).await?)
}

/// The target's columns of `table`, in order, with how each value travels.
async fn target_columns(pool: &AnyPool, table: &str) -> anyhow::Result<Vec<Column>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text from information_schema.columns \
         where table_schema = current_schema() and table_name = $1 order by ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    ensure!(!rows.is_empty(), "the target has no table {table}");
    rows.into_iter()
        .map(|(name, ty)| {
            let kind = match ty.as_str() {
                "bigint" | "integer" | "smallint" => Kind::Int,
                "boolean" => Kind::Bool,
                "text" | "character varying" => Kind::Text,
                "bytea" => Kind::Bytes,
                other => bail!("{table}.{name} has a type ({other}) the copy does not handle"),
            };
            Ok(Column { name, kind })
        })
        .collect()
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Bind the source row's value for `column` as the target's type. SQLite keeps booleans as 0/1,
/// and text with any byte: a NUL (which earlier versions stored as it came) is written out as
/// `\u{0}`, since PostgreSQL's `text` cannot hold it, as this version stores it on both.
fn bind<'q>(q: Query<'q>, row: &AnyRow, i: usize, column: &Column) -> anyhow::Result<Query<'q>> {
    Ok(match column.kind {
        Kind::Int => q.bind(row.try_get::<Option<i64>, _>(i)?),
        Kind::Bool => q.bind(row.try_get::<Option<i64>, _>(i)?.map(|v| v != 0)),
        Kind::Text => q.bind(row.try_get::<Option<String>, _>(i)?.map(|s| without_nul(&s).into_owned())),
        Kind::Bytes => q.bind(row.try_get::<Option<Vec<u8>>, _>(i)?),
    })
}
