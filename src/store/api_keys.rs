//! API keys for `/api/v1`: created (only the hash is kept), looked up by hash, revoked.

use super::{audit::insert_audit, Store};

/// An API key's record; the key itself is never stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Store {
    pub async fn create_api_key(
        &self,
        id: &str,
        name: &str,
        key_hash: &[u8],
        prefix: &str,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("insert into api_keys (id, name, key_hash, prefix, created_at) values ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(name)
            .bind(key_hash)
            .bind(prefix)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, now, actor, "api_key_created", None, &format!("{id} ({name})")).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn api_key_by_hash(&self, key_hash: &[u8]) -> anyhow::Result<Option<ApiKey>> {
        Ok(sqlx::query_as(
            "select id, name, prefix, created_at, last_used_at, revoked_at from api_keys where key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?)
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
        Ok(sqlx::query_as(
            "select id, name, prefix, created_at, last_used_at, revoked_at from api_keys order by created_at desc",
        )
        .fetch_all(&self.pool)
        .await?)
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
