//! Connections: linking a SnapInspect company (one row per company), reading its tokens, and the
//! exchange bookkeeping (lease, commit of a new pair, failures and backoff).

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use super::{audit::insert_audit, is_unique_violation, Store};
use crate::{
    crypto::Aad,
    domain::{hex, sha256, CompanyId, ConnectionId, ConnectionStatus, Provider},
};

/// A connection as admins and the CLI see it: everything but the secrets.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: ConnectionId,
    pub provider: Provider,
    pub name: String,
    pub company_id: Option<CompanyId>,
    pub status: ConnectionStatus,
    pub has_tokens: bool,
    pub token_fingerprint: Option<String>,
    pub token_version: i64,
    pub token_obtained_at: Option<i64>,
    pub user_info: Option<String>,
    pub created_at: i64,
    pub connected_at: i64,
    pub last_exchange_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub failure_count: i64,
    pub retry_after: Option<i64>,
    /// Client-credentials settings (none of them secret; the client secret is never read here).
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub domain: Option<String>,
    pub environment: Option<String>,
    pub token_url: Option<String>,
    pub auth_style: Option<String>,
    pub token_expires_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ConnectionRecord {
    id: String,
    provider: String,
    name: String,
    company_id: Option<i64>,
    status: String,
    has_tokens: bool,
    token_fingerprint: Option<String>,
    token_version: i64,
    token_obtained_at: Option<i64>,
    user_info: Option<String>,
    created_at: i64,
    connected_at: i64,
    last_exchange_at: Option<i64>,
    last_used_at: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    failure_count: i64,
    retry_after: Option<i64>,
    client_id: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    domain: Option<String>,
    environment: Option<String>,
    token_url: Option<String>,
    auth_style: Option<String>,
    token_expires_at: Option<i64>,
}

pub(super) const CONNECTION_COLUMNS: &str = "id, provider, name, company_id, status, \
    (access_token is not null) as has_tokens, token_fingerprint, token_version, token_obtained_at, \
    user_info, created_at, connected_at, last_exchange_at, last_used_at, last_error, last_error_at, \
    failure_count, retry_after, client_id, scope, audience, domain, environment, token_url, auth_style, \
    token_expires_at";

impl TryFrom<ConnectionRecord> for Connection {
    type Error = anyhow::Error;

    fn try_from(r: ConnectionRecord) -> anyhow::Result<Self> {
        Ok(Connection {
            id: ConnectionId::parse(&r.id)?,
            provider: Provider::parse(&r.provider)?,
            name: r.name,
            company_id: r.company_id.map(CompanyId::new).transpose()?,
            status: ConnectionStatus::parse(&r.status)?,
            has_tokens: r.has_tokens,
            token_fingerprint: r.token_fingerprint,
            token_version: r.token_version,
            token_obtained_at: r.token_obtained_at,
            user_info: r.user_info,
            created_at: r.created_at,
            connected_at: r.connected_at,
            last_exchange_at: r.last_exchange_at,
            last_used_at: r.last_used_at,
            last_error: r.last_error,
            last_error_at: r.last_error_at,
            failure_count: r.failure_count,
            retry_after: r.retry_after,
            client_id: r.client_id,
            scope: r.scope,
            audience: r.audience,
            domain: r.domain,
            environment: r.environment,
            token_url: r.token_url,
            auth_style: r.auth_style,
            token_expires_at: r.token_expires_at,
        })
    }
}

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

/// What the connect callback hands the store once SnapInspect has redirected back.
pub struct NewSnapInspectLink {
    pub company_id: Option<CompanyId>,
    pub name: String,
    pub user_info: Option<String>,
    pub access_token: SecretString,
    pub refresh_token: SecretString,
}

/// The outcome of linking: which connection, and whether it already existed.
#[derive(Debug, Clone)]
pub struct SavedLink {
    pub id: ConnectionId,
    pub reconnected: bool,
    /// Events that waited for this company and are now queued.
    pub matched_events: u64,
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

pub(super) fn aad<'a>(id: &'a str, column: &'a str) -> Aad<'a> {
    Aad { table: "connections", column, row: id }
}

/// A short, non-reversible fingerprint that tells two tokens apart on the admin pages.
pub fn fingerprint(token: &SecretString) -> String {
    hex(&sha256(token.expose_secret().as_bytes())[..4])
}

impl Store {
    /// Link a SnapInspect company: a new row, or the company's existing row with its tokens
    /// replaced (same id, same history). Without a company, always a new `unidentified` row.
    #[tracing::instrument(skip_all, fields(company_id = ?link.company_id))]
    pub async fn save_snapinspect_link(&self, link: &NewSnapInspectLink, now: i64) -> anyhow::Result<SavedLink> {
        // Two callbacks for the same company may race; the loser of the insert retries as an update.
        match self.try_save_link(link, now).await {
            Err(e) if e.downcast_ref::<sqlx::Error>().is_some_and(is_unique_violation) => {
                self.try_save_link(link, now).await
            }
            other => other,
        }
    }

    async fn try_save_link(&self, link: &NewSnapInspectLink, now: i64) -> anyhow::Result<SavedLink> {
        let mut tx = self.write_tx().await?;
        let existing: Option<String> = match link.company_id {
            Some(c) => {
                sqlx::query_scalar("select id from connections where provider = 'snapinspect' and company_id = $1")
                    .bind(c.get())
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        let (id, reconnected) = match existing {
            Some(id) => (ConnectionId::parse(&id)?, true),
            None => (ConnectionId::generate(), false),
        };
        let access = self.keys.seal_str(&link.access_token, aad(id.as_str(), "access_token"));
        let refresh = self.keys.seal_str(&link.refresh_token, aad(id.as_str(), "refresh_token"));
        let status = if link.company_id.is_some() { ConnectionStatus::Active } else { ConnectionStatus::Unidentified };
        let fp = fingerprint(&link.access_token);
        if reconnected {
            sqlx::query(
                "update connections set name = $2, status = $3, access_token = $4, refresh_token = $5, \
                 token_fingerprint = $6, token_version = token_version + 1, token_obtained_at = $7, user_info = $8, \
                 updated_at = $7, connected_at = $7, last_error = null, last_error_at = null, failure_count = 0, \
                 retry_after = null, exchange_lease_until = null, exchange_lease_owner = null where id = $1",
            )
            .bind(id.as_str())
            .bind(&link.name)
            .bind(status.as_str())
            .bind(access)
            .bind(refresh)
            .bind(fp)
            .bind(now)
            .bind(&link.user_info)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "insert into connections (id, provider, name, company_id, status, access_token, refresh_token, \
                 token_fingerprint, token_version, token_obtained_at, user_info, created_at, updated_at, connected_at) \
                 values ($1, 'snapinspect', $2, $3, $4, $5, $6, $7, 1, $8, $9, $8, $8, $8)",
            )
            .bind(id.as_str())
            .bind(&link.name)
            .bind(link.company_id.map(CompanyId::get))
            .bind(status.as_str())
            .bind(access)
            .bind(refresh)
            .bind(fp)
            .bind(now)
            .bind(&link.user_info)
            .execute(&mut *tx)
            .await?;
        }
        let action = if reconnected { "reconnect" } else { "connect" };
        let detail = match link.company_id {
            Some(c) => format!("SnapInspect company {c} ({})", link.name),
            None => "SnapInspect did not say which company: waiting for an admin to assign it".to_owned(),
        };
        insert_audit(&mut tx, now, "end-user", action, Some(&id), &detail).await?;
        let matched_events = match link.company_id {
            Some(c) => super::events::match_unmatched(&mut tx, &id, c, now).await?,
            None => 0,
        };
        tx.commit().await?;
        Ok(SavedLink { id, reconnected, matched_events })
    }

    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn connection(&self, id: &ConnectionId) -> anyhow::Result<Option<Connection>> {
        let sql = format!("select {CONNECTION_COLUMNS} from connections where id = $1");
        let rec: Option<ConnectionRecord> = sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(&self.pool).await?;
        rec.map(Connection::try_from).transpose()
    }

    /// Every connection, newest first.
    pub async fn connections(&self) -> anyhow::Result<Vec<Connection>> {
        let sql = format!("select {CONNECTION_COLUMNS} from connections order by created_at desc, id");
        let recs: Vec<ConnectionRecord> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
        recs.into_iter().map(Connection::try_from).collect()
    }

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

    /// Note that a token was handed out (at most one write a minute per connection).
    pub async fn touch_last_used(&self, id: &ConnectionId, now: i64) -> anyhow::Result<()> {
        sqlx::query(
            "update connections set last_used_at = $2 where id = $1 and (last_used_at is null or last_used_at < $3)",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Which connections to list: a search (company id, name or connection id) and a status.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub query: Option<String>,
    pub status: Option<ConnectionStatus>,
}

/// Why a company cannot be assigned to an unidentified connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignRefusal {
    #[error("no such connection")]
    NotFound,
    #[error("only an unidentified SnapInspect connection can be assigned a company")]
    NotUnidentified,
    #[error("SnapInspect company {company} already has connection {existing}; disconnect that one first if this one replaces it")]
    CompanyTaken { company: CompanyId, existing: String },
}

impl Store {
    /// Connections matching the filter, newest first.
    pub async fn find_connections(&self, filter: &ConnectionFilter, limit: i64) -> anyhow::Result<Vec<Connection>> {
        let query = filter.query.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let company = query.and_then(|q| q.parse::<i64>().ok());
        let like = query.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        let sql = format!(
            "select {CONNECTION_COLUMNS} from connections \
             where ($1 is null or status = $1) \
             and ($2 is null or company_id = $3 or name like $2 escape '\\' or id = $4) \
             order by created_at desc, id limit $5"
        );
        let recs: Vec<ConnectionRecord> = sqlx::query_as(&sql)
            .bind(filter.status.map(ConnectionStatus::as_str))
            .bind(like)
            .bind(company)
            .bind(query)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        recs.into_iter().map(Connection::try_from).collect()
    }

    /// How many connections are in each status.
    pub async fn connection_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("select status, count(*) from connections group by status order by status")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Disconnect: the tokens are deleted, the row and its history stay. False if there is no
    /// such connection or it is already disconnected.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn disconnect(&self, id: &ConnectionId, now: i64, actor: &str) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "update connections set status = 'disconnected', access_token = null, refresh_token = null, \
             token_fingerprint = null, retry_after = null, exchange_lease_until = null, exchange_lease_owner = null, \
             updated_at = $2 where id = $1 and status <> 'disconnected'",
        )
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            insert_audit(&mut tx, now, actor, "disconnect", Some(id), "tokens deleted").await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Give an unidentified SnapInspect connection its company; the company's waiting events are
    /// queued in the same transaction. Returns how many were.
    #[tracing::instrument(skip_all, fields(connection_id = %id, company_id = %company))]
    pub async fn assign_company(
        &self,
        id: &ConnectionId,
        company: CompanyId,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<Result<u64, AssignRefusal>> {
        let mut tx = self.write_tx().await?;
        let row: Option<(String, String)> = sqlx::query_as("select provider, status from connections where id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            None => return Ok(Err(AssignRefusal::NotFound)),
            Some((p, s)) if p != "snapinspect" || s != "unidentified" => {
                return Ok(Err(AssignRefusal::NotUnidentified))
            }
            Some(_) => {}
        }
        let existing: Option<String> =
            sqlx::query_scalar("select id from connections where provider = 'snapinspect' and company_id = $1")
                .bind(company.get())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(existing) = existing {
            return Ok(Err(AssignRefusal::CompanyTaken { company, existing }));
        }
        sqlx::query(
            "update connections set company_id = $2, status = 'active', name = $3, updated_at = $4 where id = $1",
        )
        .bind(id.as_str())
        .bind(company.get())
        .bind(format!("SnapInspect company {company}"))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, now, actor, "assign_company", Some(id), &format!("SnapInspect company {company}"))
            .await?;
        let matched = super::events::match_unmatched(&mut tx, id, company, now).await?;
        tx.commit().await?;
        Ok(Ok(matched))
    }
}
