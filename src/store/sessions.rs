//! Server-side session rows for actix-session: the key's hash, the values as JSON, an expiry; a
//! row that is gone is never re-created by a late write.

use std::collections::HashMap;

use super::Store;

impl Store {
    pub async fn session_load(&self, key_hash: &[u8], now: i64) -> anyhow::Result<Option<HashMap<String, String>>> {
        let state: Option<String> =
            sqlx::query_scalar("select state from sessions where key_hash = $1 and expires_at > $2")
                .bind(key_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        state.map(|s| serde_json::from_str(&s).map_err(Into::into)).transpose()
    }

    pub async fn session_insert(
        &self,
        key_hash: &[u8],
        state: &HashMap<String, String>,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        sqlx::query("insert into sessions (key_hash, state, expires_at) values ($1, $2, $3)")
            .bind(key_hash)
            .bind(serde_json::to_string(state)?)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replace a session's values; false if the session is gone (expired or purged).
    pub async fn session_update(
        &self,
        key_hash: &[u8],
        state: &HashMap<String, String>,
        expires_at: i64,
    ) -> anyhow::Result<bool> {
        let n = sqlx::query("update sessions set state = $2, expires_at = $3 where key_hash = $1")
            .bind(key_hash)
            .bind(serde_json::to_string(state)?)
            .bind(expires_at)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Move a session's expiry to `expires_at`, only if it is now before `unless_after`: true if
    /// the row was rewritten. A missing row stays missing.
    pub async fn session_extend(&self, key_hash: &[u8], expires_at: i64, unless_after: i64) -> anyhow::Result<bool> {
        let n = sqlx::query("update sessions set expires_at = $2 where key_hash = $1 and expires_at <= $3")
            .bind(key_hash)
            .bind(expires_at)
            .bind(unless_after)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn session_delete(&self, key_hash: &[u8]) -> anyhow::Result<()> {
        sqlx::query("delete from sessions where key_hash = $1").bind(key_hash).execute(&self.pool).await?;
        Ok(())
    }
}
