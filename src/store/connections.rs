//! Connections as admins and the API see them (everything but the secrets): reading, searching,
//! counting, disconnecting, and noting a use.

use secrecy::{ExposeSecret, SecretString};

use super::{audit::insert_audit, Store};
use crate::{
    crypto::Aad,
    domain::{hex, sha256, status::Status, CompanyId, ConnectionId, ConnectionStatus, Provider},
};

/// The shown status (`domain::status`) in SQL, for filtering and counting by it: `active` is
/// `not_yet_used` for a client-credentials connection that never had a token. Keep in step with
/// [`Connection::shown_status`].
const SHOWN_STATUS: &str = "case when status = 'active' and provider <> 'snapinspect' and access_token is null \
    and token_obtained_at is null and last_exchange_at is null then 'not_yet_used' else status end";

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
    /// The tokens that came in the connect callback's URL have not been exchanged yet.
    pub callback_tokens_pending: bool,
    /// Client-credentials settings (none of them secret; the client secret is never read here).
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub domain: Option<String>,
    pub environment: Option<String>,
    pub token_url: Option<String>,
    pub auth_style: Option<String>,
    pub token_expires_at: Option<i64>,
    /// Which of the organisation's end users it belongs to (from its connect session).
    pub end_user_id: Option<String>,
    pub end_user_email: Option<String>,
    pub end_user_display_name: Option<String>,
    pub tags: std::collections::BTreeMap<String, String>,
    /// The provider API the proxy calls (client credentials; may hold `{domain}`).
    pub api_url: Option<String>,
    /// The last health check: when, its outcome (`ok`, `refused`, `failed`) and, unless ok, why.
    pub last_checked_at: Option<i64>,
    pub last_check: Option<String>,
    pub last_check_error: Option<String>,
}

/// A connection as the API proxy sees it: where its requests go, and whether it may be used.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    pub provider: Provider,
    pub status: ConnectionStatus,
    /// The client-credentials API URL as stored (may hold `{domain}`).
    pub api_url: Option<String>,
    pub domain: Option<String>,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ConnectionRecord {
    id: String,
    provider: String,
    name: String,
    company_id: Option<i64>,
    status: String,
    has_tokens: i64,
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
    /// 0 or 1: read through `case`, as sqlx's Any driver decodes no SQLite `boolean`.
    callback_tokens_pending: i64,
    client_id: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    domain: Option<String>,
    environment: Option<String>,
    token_url: Option<String>,
    auth_style: Option<String>,
    token_expires_at: Option<i64>,
    end_user_id: Option<String>,
    end_user_email: Option<String>,
    end_user_display_name: Option<String>,
    tags: Option<String>,
    api_url: Option<String>,
    last_checked_at: Option<i64>,
    last_check: Option<String>,
    last_check_error: Option<String>,
}

pub(super) const CONNECTION_COLUMNS: &str = "id, provider, name, company_id, status, \
    case when access_token is null then 0 else 1 end as has_tokens, token_fingerprint, token_version, token_obtained_at, \
    user_info, created_at, connected_at, last_exchange_at, last_used_at, last_error, last_error_at, \
    failure_count, retry_after, case when callback_tokens_pending then 1 else 0 end as callback_tokens_pending, client_id, scope, audience, domain, environment, token_url, auth_style, \
    token_expires_at, end_user_id, end_user_email, end_user_display_name, tags, api_url, \
    last_checked_at, last_check, last_check_error";

impl TryFrom<ConnectionRecord> for Connection {
    type Error = anyhow::Error;

    fn try_from(r: ConnectionRecord) -> anyhow::Result<Self> {
        Ok(Connection {
            id: ConnectionId::parse(&r.id)?,
            provider: Provider::parse(&r.provider)?,
            name: r.name,
            company_id: r.company_id.map(CompanyId::new).transpose()?,
            status: ConnectionStatus::parse(&r.status)?,
            has_tokens: r.has_tokens != 0,
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
            callback_tokens_pending: r.callback_tokens_pending != 0,
            client_id: r.client_id,
            scope: r.scope,
            audience: r.audience,
            domain: r.domain,
            environment: r.environment,
            token_url: r.token_url,
            auth_style: r.auth_style,
            token_expires_at: r.token_expires_at,
            end_user_id: r.end_user_id,
            end_user_email: r.end_user_email,
            end_user_display_name: r.end_user_display_name,
            tags: r.tags.map(|t| serde_json::from_str(&t)).transpose()?.unwrap_or_default(),
            api_url: r.api_url,
            last_checked_at: r.last_checked_at,
            last_check: r.last_check,
            last_check_error: r.last_check_error,
        })
    }
}

impl Connection {
    /// Its status as every screen, the CLI and the API show it.
    pub fn shown_status(&self) -> Status {
        let ever_had_a_token = self.has_tokens || self.token_obtained_at.is_some() || self.last_exchange_at.is_some();
        Status::of_connection(self.status, self.provider, ever_had_a_token)
    }
}

pub(super) fn aad<'a>(id: &'a str, column: &'a str) -> Aad<'a> {
    Aad { table: "connections", column, row: id }
}

/// A short, non-reversible fingerprint that tells two tokens apart on the admin pages.
pub fn fingerprint(token: &SecretString) -> String {
    hex(&sha256(token.expose_secret().as_bytes())[..4])
}

impl Store {
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn connection(&self, id: &ConnectionId) -> anyhow::Result<Option<Connection>> {
        let sql = format!("select {CONNECTION_COLUMNS} from connections where id = $1");
        let rec: Option<ConnectionRecord> = sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(&self.pool).await?;
        rec.map(Connection::try_from).transpose()
    }

    /// What the API proxy needs to know of a connection before it sends anything: one indexed read.
    pub async fn proxy_target(&self, id: &ConnectionId) -> anyhow::Result<Option<ProxyTarget>> {
        type Row = (String, String, Option<String>, Option<String>, Option<String>);
        let row: Option<Row> =
            sqlx::query_as("select provider, status, api_url, domain, last_error from connections where id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(provider, status, api_url, domain, last_error)| {
            Ok(ProxyTarget {
                provider: Provider::parse(&provider)?,
                status: ConnectionStatus::parse(&status)?,
                api_url,
                domain,
                last_error,
            })
        })
        .transpose()
    }

    /// Every connection, newest first.
    pub async fn connections(&self) -> anyhow::Result<Vec<Connection>> {
        let sql = format!("select {CONNECTION_COLUMNS} from connections order by created_at desc, id");
        let recs: Vec<ConnectionRecord> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
        recs.into_iter().map(Connection::try_from).collect()
    }

    /// The connections of one of the organisation's end users, newest first.
    pub async fn connections_for_end_user(&self, end_user_id: &str) -> anyhow::Result<Vec<Connection>> {
        let sql =
            format!("select {CONNECTION_COLUMNS} from connections where end_user_id = $1 order by created_at desc, id");
        let recs: Vec<ConnectionRecord> = sqlx::query_as(&sql).bind(end_user_id).fetch_all(&self.pool).await?;
        recs.into_iter().map(Connection::try_from).collect()
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
    /// A shown status (`Status::CONNECTION`).
    pub status: Option<Status>,
}

impl Store {
    /// Connections matching the filter, newest first.
    pub async fn find_connections(&self, filter: &ConnectionFilter, limit: i64) -> anyhow::Result<Vec<Connection>> {
        let query = filter.query.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let company = query.and_then(|q| q.parse::<i64>().ok());
        let like = query.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        let sql = format!(
            "select {CONNECTION_COLUMNS} from connections \
             where ($1 is null or {SHOWN_STATUS} = $1) \
             and ($2 is null or company_id = $3 or lower(name) like lower($2) escape '\\' or id = $4) \
             order by created_at desc, id limit $5"
        );
        let recs: Vec<ConnectionRecord> = sqlx::query_as(&sql)
            .bind(filter.status.map(Status::as_str))
            .bind(like)
            .bind(company)
            .bind(query)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        recs.into_iter().map(Connection::try_from).collect()
    }

    /// How many connections are in each shown status (`domain::status`), for the dashboard.
    pub async fn shown_connection_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let sql = format!("select {SHOWN_STATUS} as shown, count(*) from connections group by 1 order by 1");
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    /// How many connections are in each stored status (the metrics).
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
        let before = super::connection_events::status_before(&mut tx, id).await?;
        let n = sqlx::query(
            "update connections set status = 'disconnected', access_token = null, refresh_token = null, \
             token_fingerprint = null, retry_after = null, exchange_lease_until = null, exchange_lease_owner = null, \
             callback_tokens_pending = false, updated_at = $2 where id = $1 and status <> 'disconnected'",
        )
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            insert_audit(&mut tx, now, actor, "disconnect", Some(id), "tokens deleted").await?;
            super::connection_events::announce_change(&mut tx, id, before, now).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }
}
