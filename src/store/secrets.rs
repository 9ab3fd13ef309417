//! A connection's secrets and their bookkeeping: reading the opened tokens, the lease that keeps
//! one exchange at a time per connection across processes, committing a new pair, and recording a
//! failure (a dead refresh token, or an outage and its backoff).

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
             token_obtained_at from connections where id = $1",
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

    /// Give the lease back without changing anything else (nothing was exchanged).
    pub async fn release_exchange_lease(&self, id: &ConnectionId, owner: &str) -> anyhow::Result<()> {
        sqlx::query("update connections set exchange_lease_until = null, exchange_lease_owner = null where id = $1 and exchange_lease_owner = $2")
            .bind(id.as_str())
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Store a freshly exchanged pair in one transaction, before anyone uses it. Without a new
    /// refresh token the old one is kept. Returns the new token version.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn commit_exchange(
        &self,
        id: &ConnectionId,
        access: &SecretString,
        refresh: Option<&SecretString>,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<i64> {
        let mut tx = self.write_tx().await?;
        let before = super::connection_events::status_before(&mut tx, id).await?;
        let sealed_access = self.keys.seal_str(access, aad(id.as_str(), "access_token"));
        let sealed_refresh = refresh.map(|r| self.keys.seal_str(r, aad(id.as_str(), "refresh_token")));
        let version: i64 = sqlx::query_scalar(
            "update connections set access_token = $2, refresh_token = coalesce($3, refresh_token), \
             token_fingerprint = $4, token_version = token_version + 1, token_obtained_at = $5, \
             last_exchange_at = $5, updated_at = $5, last_error = null, last_error_at = null, failure_count = 0, \
             retry_after = null, exchange_lease_until = null, exchange_lease_owner = null, \
             status = case when status = 'unidentified' then status else 'active' end \
             where id = $1 returning token_version",
        )
        .bind(id.as_str())
        .bind(sealed_access)
        .bind(sealed_refresh)
        .bind(fingerprint(access))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let detail = if refresh.is_some() {
            "new access and refresh tokens stored"
        } else {
            "new access token stored; the provider sent no refresh token, the old one is kept"
        };
        insert_audit(&mut tx, now, actor, "exchange", Some(id), detail).await?;
        super::connection_events::announce_change(&mut tx, id, before, now).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Record a failed exchange: a dead refresh token marks the connection `needs_reconnect`; a
    /// transient failure keeps the tokens and sets the backoff. Releases the lease.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn record_exchange_failure(
        &self,
        id: &ConnectionId,
        failure: &ExchangeFailure,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        let before = super::connection_events::status_before(&mut tx, id).await?;
        match failure {
            ExchangeFailure::Dead { message } => {
                sqlx::query(
                    "update connections set status = 'needs_reconnect', last_error = $2, last_error_at = $3, updated_at = $3, \
                     failure_count = failure_count + 1, retry_after = null, exchange_lease_until = null, exchange_lease_owner = null \
                     where id = $1",
                )
                .bind(id.as_str())
                .bind(message)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                insert_audit(
                    &mut tx,
                    now,
                    actor,
                    "exchange_failed",
                    Some(id),
                    &format!("{message}; the connection needs to be reconnected"),
                )
                .await?;
            }
            ExchangeFailure::Failing { message, retry_after } => {
                sqlx::query(
                    "update connections set status = 'failing', last_error = $2, last_error_at = $3, updated_at = $3, \
                     failure_count = failure_count + 1, retry_after = $4, exchange_lease_until = null, exchange_lease_owner = null \
                     where id = $1",
                )
                .bind(id.as_str())
                .bind(message)
                .bind(now)
                .bind(retry_after)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, now, actor, "token_failed", Some(id), message).await?;
            }
            ExchangeFailure::Transient { message, retry_after } => {
                sqlx::query(
                    "update connections set last_error = $2, last_error_at = $3, updated_at = $3, failure_count = failure_count + 1, \
                     retry_after = $4, exchange_lease_until = null, exchange_lease_owner = null where id = $1",
                )
                .bind(id.as_str())
                .bind(message)
                .bind(now)
                .bind(retry_after)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, now, actor, "exchange_failed", Some(id), &format!("{message}; tokens unchanged"))
                    .await?;
            }
        }
        super::connection_events::announce_change(&mut tx, id, before, now).await?;
        tx.commit().await?;
        Ok(())
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
