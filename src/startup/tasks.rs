//! The background tasks beside the server (the worker and the LISTEN connection aside): the sweep
//! of connect-link tokens waiting for their first exchange, the janitor's purges, the store probe.

use std::{sync::Arc, time::Duration};

use crate::{
    store::{Outage, Store},
    time::now_ms,
    tokens::TokenManager,
};

/// Every second: ask the database whether it answers (bounded), for the `connect_hub_store_up`
/// gauge, so `/metrics` shows an outage even when no request or loop has run into it.
pub(super) async fn store_probe(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = store.ready(Duration::from_millis(900)).await;
    }
}

/// Every ten seconds: exchange the connect-callback tokens still waiting for their first exchange
/// (one that failed right after the connect, or whose process stopped before it ran).
pub(super) async fn callback_token_sweeper(tokens: Arc<TokenManager>) {
    let mut outage = Outage::new("the connect-link token sweep", "sweep_callback_tokens", tokens.store_health());
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        match tokens.sweep_callback_tokens().await {
            Ok(n) => {
                outage.answered();
                if n > 0 {
                    tracing::info!(connections = n, "exchanged the tokens from connect links");
                }
            }
            // The next tick is the backoff (10 s is already a few seconds).
            Err(e) => {
                outage.failed(&e);
            }
        }
    }
}

/// Every ten minutes: purge expired connect states and sessions, done events older than the
/// retention, and events that waited (unmatched or rejected) for longer than it. A failed round
/// is tried again with backoff (doubling, capped at a few seconds) until it works.
pub(super) async fn janitor(store: Store, retention: Duration) {
    let mut outage = Outage::new("purging expired rows", "purge", store.health().clone());
    loop {
        match purge(&store, retention).await {
            Ok(()) => {
                outage.answered();
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Err(e) => tokio::time::sleep(outage.failed(&e)).await,
        }
    }
}

async fn purge(store: &Store, retention: Duration) -> anyhow::Result<()> {
    let now = now_ms();
    let n = store.purge_expired(now).await?;
    if n > 0 {
        tracing::debug!(rows = n, "purged expired states and sessions");
    }
    let n = store.purge_done_events(now - retention.as_millis() as i64).await?;
    if n > 0 {
        tracing::info!(events = n, "purged done events past their retention");
    }
    let n = store.purge_waiting_events(now - retention.as_millis() as i64).await?;
    if n > 0 {
        tracing::info!(events = n, "purged unmatched and rejected events past their retention");
    }
    Ok(())
}
