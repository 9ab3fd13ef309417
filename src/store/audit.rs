//! The audit trail: who did what to which connection, and when; written in the transaction of the
//! change it records, read newest first.

use super::{Store, Tx};
use crate::domain::ConnectionId;

/// One line of the audit trail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub connection_id: Option<String>,
    pub detail: Option<String>,
}

/// Append to the audit trail inside the caller's transaction, so the entry and the change it
/// describes commit together.
pub(super) async fn insert_audit(
    tx: &mut Tx,
    at: i64,
    actor: &str,
    action: &str,
    connection: Option<&ConnectionId>,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into audit_log (at, actor, action, connection_id, detail) values ($1, $2, $3, $4, $5)")
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(connection.map(ConnectionId::as_str))
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// The most recent failures of token exchanges and fetches, newest first, of connections that
    /// have not recovered since: a failure followed by a good exchange (or token), a disconnection
    /// or a deletion is history (the audit log keeps it), not something to look at now.
    pub async fn recent_failures(&self, limit: i64) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(sqlx::query_as(
            "select a.id, a.at, a.actor, a.action, a.connection_id, a.detail from audit_log a \
             join connections c on c.id = a.connection_id \
             where a.action in ('exchange_failed', 'token_failed') and c.status <> 'disconnected' \
             and c.last_error_at is not null and (c.last_exchange_at is null or a.at > c.last_exchange_at) \
             order by a.id desc limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Record something that changed nothing else in the store (e.g. an admin signing in).
    pub async fn audit(
        &self,
        at: i64,
        actor: &str,
        action: &str,
        connection: Option<&ConnectionId>,
        detail: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        insert_audit(&mut tx, at, actor, action, connection, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The most recent entries, newest first, optionally for one connection, before an id (keyset).
    pub async fn audit_entries(
        &self,
        connection: Option<&ConnectionId>,
        before_id: Option<i64>,
        limit: i64,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(sqlx::query_as(
            "select id, at, actor, action, connection_id, detail from audit_log \
             where ($1 is null or connection_id = $1) and ($2 is null or id < $2) order by id desc limit $3",
        )
        .bind(connection.map(ConnectionId::as_str))
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
