//! Signals between instances on PostgreSQL: one `LISTEN` connection per process hears when another
//! stored events (wake the worker) or changed tokens, an API key or an endpoint (drop what memory holds).

use std::{sync::Arc, time::Duration};

use sqlx::postgres::{PgListener, PgPoolOptions};

use crate::{
    domain::ConnectionId,
    state::AppState,
    store::{Outage, FIRST_BACKOFF},
};

/// Events were stored (by any instance).
pub const EVENTS_CHANNEL: &str = "hub_events";
/// `con:<id>`: a connection's tokens or status changed, or it went; `key:<id>`: an API key did;
/// `ep:<id>`: an endpoint was added or removed, or its URL, state or secrets changed.
pub const FORGET_CHANNEL: &str = "hub_forget";

/// How long one try to reach the server for `LISTEN` may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// What one notification asks of this process.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    EventsStored,
    ForgetConnection(ConnectionId),
    ForgetKey(String),
    EndpointsChanged,
}

impl Signal {
    /// Read a notification; `None` for anything this version does not know.
    pub fn parse(channel: &str, payload: &str) -> Option<Self> {
        match (channel, payload.split_once(':')) {
            (EVENTS_CHANNEL, _) => Some(Signal::EventsStored),
            (FORGET_CHANNEL, Some(("con", id))) => ConnectionId::parse(id).ok().map(Signal::ForgetConnection),
            (FORGET_CHANNEL, Some(("key", id))) if !id.is_empty() => Some(Signal::ForgetKey(id.to_owned())),
            (FORGET_CHANNEL, Some(("ep", id))) if !id.is_empty() => Some(Signal::EndpointsChanged),
            _ => None,
        }
    }
}

/// Act on one signal.
pub fn apply(state: &AppState, signal: Signal) {
    match signal {
        Signal::EventsStored => state.worker.wake(),
        Signal::ForgetConnection(id) => state.tokens.forget_cached(&id),
        Signal::ForgetKey(id) => state.api_keys.forget(&id),
        Signal::EndpointsChanged => state.worker.dispatcher().forget_targets(),
    }
}

/// Listen until the process ends. When the connection drops, notifications may have been missed,
/// so everything cached is dropped before listening again (and once more when it is back).
pub async fn listen(database_url: String, state: Arc<AppState>) {
    let mut outage = Outage::new("listening for other instances", "listen", state.store.health().clone());
    loop {
        let heard = listen_once(&database_url, &state, &mut outage).await;
        forget_everything(&state);
        let wait = match heard {
            // Dropped after it had been listening: reconnect at once (a failure then backs off).
            Ok(()) => FIRST_BACKOFF,
            Err(e) => outage.failed(&e),
        };
        tokio::time::sleep(wait).await;
    }
}

/// Connect, listen, and act on notifications until the connection drops (`Ok`) or cannot be made.
async fn listen_once(database_url: &str, state: &AppState, outage: &mut Outage) -> anyhow::Result<()> {
    // Its own one-connection pool with a short acquire timeout: `PgListener::connect` would retry
    // a refused connection for 30 s, with waits growing to 6 s, before it gives up or gets through.
    let pool = PgPoolOptions::new().max_connections(1).acquire_timeout(CONNECT_WITHIN).connect_lazy(database_url)?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // Not reconnecting inside `try_recv`: the caller starts over, dropping the caches first.
    listener.eager_reconnect(false);
    listener.listen_all([EVENTS_CHANNEL, FORGET_CHANNEL]).await?;
    // Whatever changed before this point was not heard.
    forget_everything(state);
    outage.answered();
    tracing::debug!("listening for other instances");
    // `try_recv` gives `None` when the connection dropped.
    while let Some(n) = listener.try_recv().await? {
        if let Some(signal) = Signal::parse(n.channel(), n.payload()) {
            apply(state, signal);
        }
    }
    tracing::info!("lost the LISTEN connection; reconnecting");
    Ok(())
}

fn forget_everything(state: &AppState) {
    state.tokens.forget_all();
    state.api_keys.forget_all();
    state.worker.dispatcher().forget_targets();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_and_unknown_ones_ignored() {
        let id = ConnectionId::generate();
        assert_eq!(Signal::parse("hub_events", ""), Some(Signal::EventsStored));
        assert_eq!(Signal::parse("hub_forget", &format!("con:{id}")), Some(Signal::ForgetConnection(id)));
        assert_eq!(Signal::parse("hub_forget", "key:key_abc"), Some(Signal::ForgetKey("key_abc".into())));
        assert_eq!(Signal::parse("hub_forget", "ep:ep_forward"), Some(Signal::EndpointsChanged));
        for (channel, payload) in [
            ("hub_forget", "con:nope"),
            ("hub_forget", "key:"),
            ("hub_forget", "ep:"),
            ("hub_forget", "other:x"),
            ("hub_forget", "x"),
            ("elsewhere", "key:k"),
        ] {
            assert_eq!(Signal::parse(channel, payload), None, "{channel} {payload}");
        }
    }
}
