//! The connect flow's `state` values: stored as hashes, bound to a browser, consumed once, and
//! gone after their ten minutes.

use super::{ConnectSession, Store};
use crate::domain::ConnectionId;

/// What a consumed `state` says about where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumedState {
    /// The connect session it was started from, while that session exists.
    pub session_id: Option<String>,
    /// For a reconnect link: the connection it repairs, kept even after that connection is gone.
    pub reconnect_of: Option<ConnectionId>,
    /// The session's return URL, kept likewise.
    pub return_url: Option<String>,
}

/// Why a callback's `state` was refused. Each says something different to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRejection {
    /// We never issued it (or it was purged long ago).
    Unknown,
    /// It was issued more than ten minutes ago.
    Expired,
    /// It has already been used once.
    AlreadyUsed,
    /// It was issued to another browser.
    OtherBrowser,
}

impl Store {
    /// Remember a freshly issued state (by hash) for the browser whose binding hash is given, and
    /// the connect session it was started from, if any.
    pub async fn insert_state(
        &self,
        state_hash: &[u8],
        browser_hash: &[u8],
        session: Option<&ConnectSession>,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "insert into oauth_states (state_hash, browser_hash, session_id, reconnect_of, return_url, created_at, \
             expires_at) values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(state_hash)
        .bind(browser_hash)
        .bind(session.map(|s| s.id.as_str()))
        .bind(session.and_then(|s| s.connection_id.as_ref()).map(ConnectionId::as_str))
        .bind(session.and_then(|s| s.return_url.as_deref()))
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consume a state atomically (RFC 9700 §2.1: one use): succeeds for exactly one caller, and
    /// only if it is unexpired and was issued to this browser. A refusal consumes nothing.
    /// Answers where the state came from (a connect session, a reconnect link).
    #[tracing::instrument(skip_all)]
    pub async fn consume_state(
        &self,
        state_hash: &[u8],
        browser_hash: Option<&[u8]>,
        now: i64,
    ) -> anyhow::Result<Result<ConsumedState, StateRejection>> {
        if let Some(browser) = browser_hash {
            let used: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "update oauth_states set used_at = $3 \
                 where state_hash = $1 and browser_hash = $2 and used_at is null and expires_at > $3 \
                 returning session_id, reconnect_of, return_url",
            )
            .bind(state_hash)
            .bind(browser)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if let Some((session_id, reconnect_of, return_url)) = used {
                let reconnect_of = reconnect_of.map(|c| ConnectionId::parse(&c)).transpose()?;
                return Ok(Ok(ConsumedState { session_id, reconnect_of, return_url }));
            }
        }
        // Not consumed: say why, without changing anything.
        let row: Option<(Vec<u8>, i64, Option<i64>)> =
            sqlx::query_as("select browser_hash, expires_at, used_at from oauth_states where state_hash = $1")
                .bind(state_hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Err(match row {
            None => StateRejection::Unknown,
            Some((_, _, Some(_))) => StateRejection::AlreadyUsed,
            Some((issued_to, _, None)) if Some(issued_to.as_slice()) != browser_hash => StateRejection::OtherBrowser,
            Some((_, expires_at, None)) if expires_at <= now => StateRejection::Expired,
            // Consumed by a concurrent request between our update and this read.
            Some(_) => StateRejection::AlreadyUsed,
        }))
    }
}
