//! A connection's secrets and their bookkeeping: the opened tokens, the lease that keeps one
//! exchange at a time per connection across processes, committing a new pair, recording a failure.

use anyhow::Context;
use secrecy::SecretString;

use super::{
    audit::insert_audit,
    connections::{aad, fingerprint},
    Store,
};
use crate::domain::{ConnectionId, ConnectionStatus, Provider};

#[derive(sqlx::FromRow)]
struct TokenRecord {
    provider: String,
    status: String,
    access_token: Option<Vec<u8>>,
    refresh_token: Option<Vec<u8>>,
    token_version: i64,
    retry_after: Option<i64>,
    token_expires_at: Option<i64>,
    token_obtained_at: Option<i64>,
    /// 0 or 1 (see `CONNECTION_COLUMNS`).
    callback_tokens_pending: i64,
    last_exchange_at: Option<i64>,
}

/// A connection's current secrets, opened.
pub struct StoredTokens {
    pub provider: Provider,
    pub status: ConnectionStatus,
    pub access: Option<SecretString>,
    pub refresh: Option<SecretString>,
    pub version: i64,
    pub retry_after: Option<i64>,
    /// When the access token expires (client-credentials tokens; SnapInspect's do not).
    pub expires_at: Option<i64>,
    pub obtained_at: Option<i64>,
    /// The pair from the connect callback's URL has not been exchanged yet.
    pub callback_pending: bool,
    /// When the provider last issued a new token (an exchange or a fetch; not the connect).
    pub last_exchange_at: Option<i64>,
}

/// Whether this process may run the exchange now.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired,
    /// Another process is exchanging; its lease ends at `until`.
    HeldElsewhere {
        until: i64,
    },
    NotFound,
}

/// How an exchange failed, which decides what happens to the connection.
#[derive(Debug)]
pub enum ExchangeFailure {
    /// The provider refused the refresh token: the connection needs an end user to reconnect.
    Dead { message: String },
    /// The provider or the network failed: tokens stay, and no new try before `retry_after`.
    Transient { message: String, retry_after: i64 },
    /// A client-credentials request was refused or failed: the connection is `failing` until a
    /// token is issued again, and no new try before `retry_after`.
    Failing { message: String, retry_after: i64 },
}

impl Store {
    /// The connection's opened tokens and state, or `None` if there is no such connection.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn tokens(&self, id: &ConnectionId) -> anyhow::Result<Option<StoredTokens>> {
        let row: Option<TokenRecord> = sqlx::query_as(
            "select provider, status, access_token, refresh_token, token_version, retry_after, token_expires_at, \
             token_obtained_at, case when callback_tokens_pending then 1 else 0 end as callback_tokens_pending, \
             last_exchange_at from connections where id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(TokenRecord {
            provider,
            status,
            access_token: access,
            refresh_token: refresh,
            token_version: version,
            retry_after,
            token_expires_at: expires_at,
            token_obtained_at: obtained_at,
            callback_tokens_pending: callback_pending,
            last_exchange_at,
        }) = row
        else {
            return Ok(None);
        };
        let open = |blob: Option<Vec<u8>>, column: &str| -> anyhow::Result<Option<SecretString>> {
            blob.map(|b| self.keys.open_str(&b, aad(id.as_str(), column)))
                .transpose()
                .with_context(|| format!("opening connections.{column} of {id}"))
        };
        Ok(Some(StoredTokens {
            provider: Provider::parse(&provider)?,
            status: ConnectionStatus::parse(&status)?,
            access: open(access, "access_token")?,
            refresh: open(refresh, "refresh_token")?,
            version,
            retry_after,
            expires_at,
            obtained_at,
            callback_pending: callback_pending != 0,
            last_exchange_at,
        }))
    }

    /// Take the connection's exchange lease until `until`, unless another process holds it.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn acquire_exchange_lease(
        &self,
        id: &ConnectionId,
        owner: &str,
        now: i64,
        until: i64,
    ) -> anyhow::Result<LeaseOutcome> {
        let taken = sqlx::query(
            "update connections set exchange_lease_until = $3, exchange_lease_owner = $2 \
             where id = $1 and (exchange_lease_until is null or exchange_lease_until < $4 or exchange_lease_owner = $2)",
        )
        .bind(id.as_str())
        .bind(owner)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken == 1 {
            return Ok(LeaseOutcome::Acquired);
        }
        let held: Option<Option<i64>> =
            sqlx::query_scalar("select exchange_lease_until from connections where id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match held {
            None => LeaseOutcome::NotFound,
            Some(until) => LeaseOutcome::HeldElsewhere { until: until.unwrap_or(now) },
        })
    }

    /// Whether some process holds the connection's exchange lease at `now`.
    pub async fn exchange_lease_held(&self, id: &ConnectionId, now: i64) -> anyhow::Result<bool> {
        let until: Option<Option<i64>> =
            sqlx::query_scalar("select exchange_lease_until from connections where id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(until.flatten().is_some_and(|u| u >= now))
    }

    /// Give the lease back without changing anything else (nothing was exchanged).
    pub async fn release_exchange_lease(&self, id: &ConnectionId, owner: &str) -> anyhow::Result<()> {
        sqlx::query("update connections set exchange_lease_until = null, exchange_lease_owner = null where id = $1 and exchange_lease_owner = $2")
            .bind(id.as_str())
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Store a freshly exchanged pair in one transaction, before anyone uses it, but only while
    /// `owner` still holds the lease and the connection is not disconnected: the check is in the
    /// update's own `where`, so a disconnect (which clears the lease) cannot be undone by an
    /// exchange that was in flight. Without a new refresh token the old one is kept. Returns the
    /// new token version, or `None` when the commit was refused (nothing changed).
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn commit_exchange(
        &self,
        id: &ConnectionId,
        owner: &str,
        access: &SecretString,
        refresh: Option<&SecretString>,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let before = super::connection_events::status_before(&mut tx, id).await?;
        let sealed_access = self.keys.seal_str(access, aad(id.as_str(), "access_token"));
        let sealed_refresh = refresh.map(|r| self.keys.seal_str(r, aad(id.as_str(), "refresh_token")));
        let version: Option<i64> = sqlx::query_scalar(
            "update connections set access_token = $2, refresh_token = coalesce($3, refresh_token), \
             token_fingerprint = $4, token_version = token_version + 1, token_obtained_at = $5, \
             last_exchange_at = $5, updated_at = $5, last_error = null, last_error_at = null, failure_count = 0, \
             retry_after = null, exchange_lease_until = null, exchange_lease_owner = null, \
             callback_tokens_pending = false, \
             status = case when status = 'unidentified' then status else 'active' end \
             where id = $1 and exchange_lease_owner = $6 and exchange_lease_until > $5 and status <> 'disconnected' \
             returning token_version",
        )
        .bind(id.as_str())
        .bind(sealed_access)
        .bind(sealed_refresh)
        .bind(fingerprint(access))
        .bind(now)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        let detail = if refresh.is_some() {
            "new access and refresh tokens stored"
        } else {
            "new access token stored; the provider sent no refresh token, the old one is kept"
        };
        insert_audit(&mut tx, now, actor, "exchange", Some(id), detail).await?;
        super::connection_events::announce_change(&mut tx, id, before, now).await?;
        tx.commit().await?;
        Ok(Some(version))
    }

    /// Record a failed exchange: a dead refresh token marks the connection `needs_reconnect`; a
    /// transient failure keeps the tokens and sets the backoff. Releases the lease. Like a commit,
    /// it lands only while `owner` holds the lease and the connection is not disconnected, so a
    /// failure that finishes after a disconnect does not turn it into `needs_reconnect` or
    /// `failing`. Returns whether it was recorded.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn record_exchange_failure(
        &self,
        id: &ConnectionId,
        owner: &str,
        failure: &ExchangeFailure,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let (set_status, message, retry_after, action, detail) = match failure {
            ExchangeFailure::Dead { message } => (
                "status = 'needs_reconnect', ",
                message,
                None,
                "exchange_failed",
                format!("{message}; the connection needs to be reconnected"),
            ),
            ExchangeFailure::Failing { message, retry_after } => {
                ("status = 'failing', ", message, Some(*retry_after), "token_failed", message.clone())
            }
            ExchangeFailure::Transient { message, retry_after } => {
                ("", message, Some(*retry_after), "exchange_failed", format!("{message}; tokens unchanged"))
            }
        };
        let mut tx = self.write_tx().await?;
        let before = super::connection_events::status_before(&mut tx, id).await?;
        let n = sqlx::query(&format!(
            "update connections set {set_status}last_error = $2, last_error_at = $3, updated_at = $3, \
             failure_count = failure_count + 1, retry_after = $4, exchange_lease_until = null, exchange_lease_owner = null \
             where id = $1 and exchange_lease_owner = $5 and status <> 'disconnected'"
        ))
        .bind(id.as_str())
        .bind(message)
        .bind(now)
        .bind(retry_after)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, now, actor, action, Some(id), &detail).await?;
        super::connection_events::announce_change(&mut tx, id, before, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// SnapInspect connections whose connect-callback tokens are still waiting for their first
    /// exchange and whose backoff (if any) has run out: the background sweep exchanges them.
    pub async fn callback_tokens_due(&self, now: i64, limit: i64) -> anyhow::Result<Vec<ConnectionId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "select id from connections where callback_tokens_pending and provider = 'snapinspect' \
             and status in ('active', 'unidentified') and (retry_after is null or retry_after <= $1) \
             and (exchange_lease_until is null or exchange_lease_until < $1) order by updated_at limit $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| Ok(ConnectionId::parse(id)?)).collect()
    }

    /// How many consecutive exchanges have failed (for the backoff of the next one).
    pub async fn failure_count(&self, id: &ConnectionId) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("select failure_count from connections where id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0))
    }
}
