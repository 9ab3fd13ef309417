//! The background tasks beside the server (the worker and the LISTEN connection aside): the sweep
//! of connect-link tokens waiting for their first exchange, and the janitor's purges.

use std::{sync::Arc, time::Duration};

use crate::{store::Store, time::now_ms, tokens::TokenManager};

/// Every ten seconds: exchange the connect-callback tokens still waiting for their first exchange
/// (one that failed right after the connect, or whose process stopped before it ran).
pub(super) async fn callback_token_sweeper(tokens: Arc<TokenManager>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        match tokens.sweep_callback_tokens().await {
            Ok(n) if n > 0 => tracing::info!(connections = n, "exchanged the tokens from connect links"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "the connect-link token sweep failed"),
        }
    }
}

/// Every ten minutes: purge expired connect states and sessions, done events older than the
/// retention, and events that waited (unmatched or rejected) for longer than it.
pub(super) async fn janitor(store: Store, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let now = now_ms();
        match store.purge_expired(now).await {
            Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired states and sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "purging expired rows failed"),
        }
        match store.purge_done_events(now - retention.as_millis() as i64).await {
            Ok(n) if n > 0 => tracing::info!(events = n, "purged done events past their retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "purging done events failed"),
        }
        match store.purge_waiting_events(now - retention.as_millis() as i64).await {
            Ok(n) if n > 0 => tracing::info!(events = n, "purged unmatched and rejected events past their retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "purging waiting events failed"),
        }
    }
}
