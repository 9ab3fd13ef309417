//! The dispatcher's copy of the enabled endpoints, each with its URL and its signers (the current
//! secret, and the previous one during a rotation's overlap), read again at most every 500 ms.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::ExposeSecret;
use url::Url;

use super::forward::Signer;
use crate::{store::Store, time::now_ms};

/// How long the worker keeps its list of endpoints (and their secrets) before reading it again.
const TARGETS_TTL: Duration = Duration::from_millis(500);
/// One enabled endpoint, ready to sign for.
pub(super) struct Target {
    pub(super) id: String,
    pub(super) url: Url,
    pub(super) current: Signer,
    /// The previous secret and when its overlap ends.
    pub(super) previous: Option<(Signer, i64)>,
}

/// The enabled endpoints, each shared with the deliveries in flight to it.
pub(super) type TargetList = Arc<Vec<Arc<Target>>>;

/// The enabled endpoints as last read, and when.
#[derive(Default)]
pub(super) struct Targets(tokio::sync::Mutex<Option<(Instant, TargetList)>>);

impl Targets {
    /// The enabled endpoints, read again when the copy is older than [`TARGETS_TTL`].
    pub(super) async fn get(&self, store: &Store) -> anyhow::Result<TargetList> {
        let mut cache = self.0.lock().await;
        if let Some((at, t)) = cache.as_ref() {
            if at.elapsed() < TARGETS_TTL {
                return Ok(t.clone());
            }
        }
        let now = now_ms();
        let mut out = Vec::new();
        for e in store.endpoints().await?.into_iter().filter(|e| e.enabled) {
            let Some(secrets) = store.endpoint_secrets(&e.id, now).await? else { continue };
            let url = match Url::parse(&e.url) {
                Ok(u) => u,
                Err(err) => {
                    tracing::warn!(endpoint_id = %e.id, error = %err, "endpoint URL does not parse; skipped");
                    continue;
                }
            };
            let current = Signer::from_secret(secrets.current.expose_secret())?;
            let previous = match (secrets.previous, e.previous_until) {
                (Some(p), Some(until)) => Some((Signer::from_secret(p.expose_secret())?, until)),
                _ => None,
            };
            out.push(Arc::new(Target { id: e.id.as_str().to_owned(), url, current, previous }));
        }
        let t = Arc::new(out);
        *cache = Some((Instant::now(), t.clone()));
        Ok(t)
    }

    /// Read the endpoints again at the next claim.
    pub(super) async fn forget(&self) {
        *self.0.lock().await = None;
    }
}
