//! Connect sessions: created by the organisation's app (by hash of their link's token), opened
//! once within 30 minutes, and read back by the callback through the `state` that names them.

use std::collections::BTreeMap;

use super::Store;
use crate::{connect_sessions::EndUser, domain::ConnectionId};

/// A session as the callback needs it.
#[derive(Debug, Clone)]
pub struct ConnectSession {
    pub id: String,
    pub end_user: EndUser,
    pub return_url: Option<String>,
    /// For a reconnect link: the connection its completion updates.
    pub connection_id: Option<ConnectionId>,
}

/// What to store for a new session.
pub struct NewConnectSession<'a> {
    pub id: &'a str,
    pub token_hash: &'a [u8],
    pub end_user: &'a EndUser,
    pub return_url: Option<&'a str>,
    pub connection_id: Option<&'a ConnectionId>,
    pub created_by: &'a str,
    pub now: i64,
    pub expires_at: i64,
}

/// Why a connect link cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRejection {
    Unknown,
    Expired,
    AlreadyUsed,
}

type Row = (String, String, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);
const COLUMNS: &str = "id, end_user_id, end_user_email, display_name, tags, return_url, connection_id";

fn from_row(r: Row) -> anyhow::Result<ConnectSession> {
    let (id, end_user_id, email, display_name, tags, return_url, connection_id) = r;
    let tags: BTreeMap<String, String> = match tags {
        Some(t) => serde_json::from_str(&t)?,
        None => BTreeMap::new(),
    };
    Ok(ConnectSession {
        id,
        end_user: EndUser { id: end_user_id, email, display_name, tags },
        return_url,
        connection_id: connection_id.map(|c| ConnectionId::parse(&c)).transpose()?,
    })
}

/// Tags as stored: a JSON object, or null when there are none.
pub(super) fn tags_json(tags: &BTreeMap<String, String>) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).expect("a map of strings serialises"))
}

impl Store {
    #[tracing::instrument(skip_all, fields(session_id = s.id))]
    pub async fn insert_connect_session(&self, s: &NewConnectSession<'_>) -> anyhow::Result<()> {
        sqlx::query(
            "insert into connect_sessions (id, token_hash, end_user_id, end_user_email, display_name, tags, \
             return_url, connection_id, created_by, created_at, expires_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(s.id)
        .bind(s.token_hash)
        .bind(&s.end_user.id)
        .bind(&s.end_user.email)
        .bind(&s.end_user.display_name)
        .bind(tags_json(&s.end_user.tags))
        .bind(s.return_url)
        .bind(s.connection_id.map(ConnectionId::as_str))
        .bind(s.created_by)
        .bind(s.now)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Open a connect link: succeeds once, within its lifetime; a refusal changes nothing.
    #[tracing::instrument(skip_all)]
    pub async fn open_connect_session(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> anyhow::Result<Result<ConnectSession, SessionRejection>> {
        let sql = format!(
            "update connect_sessions set opened_at = $2 \
             where token_hash = $1 and opened_at is null and expires_at > $2 returning {COLUMNS}"
        );
        let row: Option<Row> = sqlx::query_as(&sql).bind(token_hash).bind(now).fetch_optional(&self.pool).await?;
        if let Some(row) = row {
            return Ok(Ok(from_row(row)?));
        }
        let seen: Option<(i64, Option<i64>)> =
            sqlx::query_as("select expires_at, opened_at from connect_sessions where token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Err(match seen {
            None => SessionRejection::Unknown,
            Some((_, Some(_))) => SessionRejection::AlreadyUsed,
            Some((_, None)) => SessionRejection::Expired,
        }))
    }

    /// Delete the connect sessions that expired before `before`.
    pub(super) async fn purge_connect_sessions(&self, before: i64) -> anyhow::Result<u64> {
        let n = sqlx::query("delete from connect_sessions where expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    pub async fn connect_session(&self, id: &str) -> anyhow::Result<Option<ConnectSession>> {
        let sql = format!("select {COLUMNS} from connect_sessions where id = $1");
        let row: Option<Row> = sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(from_row).transpose()
    }
}
