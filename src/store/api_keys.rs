//! API keys for `/api/v1`: created (only the hash is kept, with the key's scope), looked up by
//! hash, revoked.

use super::{audit::insert_audit, Store};

/// An API key's record; the key itself is never stored.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Comma-separated connection ids the key is limited to; `None`: every connection.
    pub connection_scope: Option<String>,
    /// The key may read tokens but not force a refresh.
    pub read_only: bool,
}

/// The row as read: `read_only` as the 0 or 1 of `case when read_only then 1 else 0 end`, since
/// sqlx's Any driver decodes no SQLite `boolean`.
#[derive(sqlx::FromRow)]
struct ApiKeyRecord {
    id: String,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    connection_scope: Option<String>,
    read_only: i64,
}

impl From<ApiKeyRecord> for ApiKey {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            connection_scope: r.connection_scope,
            read_only: r.read_only != 0,
        }
    }
}

const COLUMNS: &str = "id, name, prefix, created_at, last_used_at, revoked_at, connection_scope, \
    case when read_only then 1 else 0 end as read_only";

impl Store {
    #[allow(clippy::too_many_arguments)]
    pub async fn create_api_key(
        &self,
        id: &str,
        name: &str,
        key_hash: &[u8],
        prefix: &str,
        connection_scope: Option<&str>,
        read_only: bool,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "insert into api_keys (id, name, key_hash, prefix, connection_scope, read_only, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(name)
        .bind(key_hash)
        .bind(prefix)
        .bind(connection_scope)
        .bind(read_only)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let scope = match connection_scope {
            Some(c) => format!("connections {c}"),
            None => "every connection".to_owned(),
        };
        let access = if read_only { "read-only" } else { "read and refresh" };
        insert_audit(&mut tx, now, actor, "api_key_created", None, &format!("{id} ({name}): {scope}, {access}"))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn api_key_by_hash(&self, key_hash: &[u8]) -> anyhow::Result<Option<ApiKey>> {
        let row: Option<ApiKeyRecord> = sqlx::query_as(&format!("select {COLUMNS} from api_keys where key_hash = $1"))
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(ApiKey::from))
    }

    /// Revoke a key; false if there is no such key or it was already revoked.
    pub async fn revoke_api_key(&self, id: &str, now: i64, actor: &str) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("update api_keys set revoked_at = $2 where id = $1 and revoked_at is null")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            insert_audit(&mut tx, now, actor, "api_key_revoked", None, id).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn api_keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        let rows: Vec<ApiKeyRecord> =
            sqlx::query_as(&format!("select {COLUMNS} from api_keys order by created_at desc"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(ApiKey::from).collect())
    }

    pub async fn touch_api_key(&self, id: &str, now: i64) -> anyhow::Result<()> {
        sqlx::query("update api_keys set last_used_at = $2 where id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
