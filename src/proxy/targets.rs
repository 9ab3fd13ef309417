//! Where each connection's requests go, kept in memory with the token version it was read with:
//! a proxied request reads the database only when the connection's token changed since.

// An edit of a connection's API URL drops its token, so the next token has a new version and the
// target is read again before that token is sent anywhere. Status is not taken from here: the token
// manager refuses a disconnected or dead connection itself.

use std::{collections::HashMap, sync::Mutex};

use super::ProxyError;
use crate::{
    domain::{ConnectionId, ConnectionStatus},
    store::{ProxyTarget, Store},
};

pub struct Targets {
    store: Store,
    known: Mutex<HashMap<ConnectionId, (ProxyTarget, i64)>>,
}

impl Targets {
    pub fn new(store: Store) -> Self {
        Self { store, known: Mutex::new(HashMap::new()) }
    }

    /// The target as last read, and the token version it was read with; None if not known.
    pub fn known(&self, id: &ConnectionId) -> Option<(ProxyTarget, i64)> {
        self.known.lock().expect("targets poisoned").get(id).cloned()
    }

    pub fn remember(&self, id: &ConnectionId, target: &ProxyTarget, version: i64) {
        self.known.lock().expect("targets poisoned").insert(id.clone(), (target.clone(), version));
    }

    pub fn forget(&self, id: &ConnectionId) {
        self.known.lock().expect("targets poisoned").remove(id);
    }

    /// The target from the database; a disconnected or dead connection is refused at once.
    pub async fn read(&self, id: &ConnectionId) -> Result<ProxyTarget, ProxyError> {
        let target = self
            .store
            .proxy_target(id)
            .await
            .map_err(|e| ProxyError::Token(e.into()))?
            .ok_or_else(|| ProxyError::NotFound(id.to_string()));
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                self.forget(id);
                return Err(e);
            }
        };
        match target.status {
            ConnectionStatus::Disconnected => Err(ProxyError::Disconnected),
            ConnectionStatus::NeedsReconnect => Err(ProxyError::NeedsReconnect(target.last_error.unwrap_or_default())),
            _ => Ok(target),
        }
    }
}
