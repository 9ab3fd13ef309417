//! Connect sessions: created by the organisation's app (by hash of their link's token), opened
//! once within 30 minutes, and read back by the callback through the `state` that names them.

use std::collections::BTreeMap;

use url::Url;

use super::{Connection, Store};
use crate::domain::{
    connect_session::{connect_url, new_session_id, EndUser, Issued, ReturnUrl, SESSION_TTL_MS},
    ConnectionId, OpaqueToken, Provider,
};

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

    /// A connect link as its page shows it, changing nothing: the same answers as
    /// [`Store::open_connect_session`], without spending the link.
    pub async fn peek_connect_session(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> anyhow::Result<Result<ConnectSession, SessionRejection>> {
        let sql = format!("select {COLUMNS}, expires_at, opened_at from connect_sessions where token_hash = $1");
        type Peeked = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            Option<i64>,
        );
        let row: Option<Peeked> = sqlx::query_as(&sql).bind(token_hash).fetch_optional(&self.pool).await?;
        let Some((id, end_user_id, email, display_name, tags, return_url, connection_id, expires_at, opened_at)) = row
        else {
            return Ok(Err(SessionRejection::Unknown));
        };
        if opened_at.is_some() {
            return Ok(Err(SessionRejection::AlreadyUsed));
        }
        if expires_at <= now {
            return Ok(Err(SessionRejection::Expired));
        }
        Ok(Ok(from_row((id, end_user_id, email, display_name, tags, return_url, connection_id))?))
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

impl Store {
    /// Issue a connect link for `end_user` (or, with `reconnect`, one that repairs that
    /// connection): a fresh token, stored only as its hash, valid for [`SESSION_TTL_MS`].
    pub async fn issue_connect_session(
        &self,
        public_url: &Url,
        end_user: &EndUser,
        return_url: Option<&ReturnUrl>,
        reconnect: Option<&ConnectionId>,
        created_by: &str,
    ) -> anyhow::Result<Issued> {
        let token = OpaqueToken::generate();
        let id = new_session_id();
        let now = crate::time::now_ms();
        let expires_at = now + SESSION_TTL_MS;
        self.insert_connect_session(&NewConnectSession {
            id: &id,
            token_hash: &OpaqueToken::hash_of(token.as_str()),
            end_user,
            return_url: return_url.map(ReturnUrl::as_str),
            connection_id: reconnect,
            created_by,
            now,
            expires_at,
        })
        .await?;
        tracing::info!(session_id = %id, reconnect = ?reconnect.map(|c| c.as_str()), created_by, "connect link issued");
        Ok(Issued { id, connect_url: connect_url(public_url, &token), expires_at })
    }
}

impl Connection {
    /// The end user a reconnect link records: the connection's own (kept as it is on completion).
    pub fn end_user(&self) -> EndUser {
        EndUser {
            id: self.end_user_id.clone().unwrap_or_default(),
            email: self.end_user_email.clone(),
            display_name: self.end_user_display_name.clone(),
            tags: self.tags.clone(),
        }
    }

    /// Why this connection cannot have a reconnect link, if it cannot.
    pub fn reconnect_refusal(&self) -> Option<&'static str> {
        if self.provider != Provider::SnapInspect {
            return Some("only SnapInspect connections are reconnected by their users; update a client-credentials connection's secret instead");
        }
        if self.company_id.is_none() {
            return Some("this connection has no SnapInspect company yet: assign one first, so a reconnect can be checked against it");
        }
        None
    }
}
