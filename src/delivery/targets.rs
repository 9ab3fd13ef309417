//! The dispatcher's copy of the endpoints it sends to, each with its URL and signers, read when a
//! delivery first needs it and again only once endpoints have changed: never on a timer.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use anyhow::Context;
use secrecy::ExposeSecret;
use url::Url;

use super::forward::Signer;
use crate::{store::Store, time::now_ms};

/// One enabled endpoint, ready to sign for.
pub(super) struct Target {
    pub(super) id: String,
    pub(super) url: Url,
    pub(super) current: Signer,
    /// The previous secret and when its overlap ends.
    pub(super) previous: Option<(Signer, i64)>,
}

/// Which changes a copy has seen: those this process heard of (its own, and other instances'
/// NOTIFY on PostgreSQL), and the database's change counter (SQLite: another process, such as
/// the command line, may have changed them).
type Seen = (u64, i64);

#[derive(Default)]
struct Copy {
    seen: Seen,
    /// Bumped whenever the copy is dropped, so a read begun before cannot land after.
    generation: u64,
    /// `None`: disabled or gone.
    endpoints: HashMap<String, Option<Arc<Target>>>,
}

#[derive(Default)]
pub(super) struct Targets {
    heard: AtomicU64,
    copy: Mutex<Copy>,
    /// The last read of the database's change counter, and when that read began.
    counter: tokio::sync::Mutex<Option<(Instant, i64)>>,
}

impl Targets {
    /// Endpoints changed: the next delivery reads its endpoint again.
    pub(super) fn forget(&self) {
        self.heard.fetch_add(1, Ordering::SeqCst);
    }

    /// The endpoint as it is now, `None` when it is disabled or gone. Called just before each
    /// request, so an edit, a disable or a rotation reaches deliveries already claimed.
    pub(super) async fn get(&self, store: &Store, id: &str) -> anyhow::Result<Option<Arc<Target>>> {
        let seen = (self.heard.load(Ordering::SeqCst), self.counter(store).await?);
        let generation = {
            let mut copy = self.copy.lock().expect("targets poisoned");
            if seen.0 > copy.seen.0 || seen.1 > copy.seen.1 {
                copy.endpoints.clear();
                copy.generation += 1;
                copy.seen = (seen.0.max(copy.seen.0), seen.1.max(copy.seen.1));
            }
            if let Some(t) = copy.endpoints.get(id) {
                return Ok(t.clone());
            }
            copy.generation
        };
        let target = load(store, id).await?;
        let mut copy = self.copy.lock().expect("targets poisoned");
        if copy.generation == generation {
            copy.endpoints.insert(id.to_owned(), target.clone());
        }
        Ok(target)
    }

    /// The database's change counter (SQLite; 0 on PostgreSQL, whose NOTIFY bumps `heard`), read
    /// after the caller asked: a read already running when it asked may have missed a change.
    /// Callers that ask while a read runs share the next one, so a burst of sends costs one read.
    async fn counter(&self, store: &Store) -> anyhow::Result<i64> {
        let asked = Instant::now();
        let mut last = self.counter.lock().await;
        if let Some((began, n)) = *last {
            if began >= asked {
                return Ok(n);
            }
        }
        let began = Instant::now();
        let n = store.endpoint_changes().await?.unwrap_or(0);
        *last = Some((began, n));
        Ok(n)
    }
}

/// Read one endpoint and open its secrets.
async fn load(store: &Store, id: &str) -> anyhow::Result<Option<Arc<Target>>> {
    let now = now_ms();
    let Some(t) = store.delivery_target(id, now).await? else { return Ok(None) };
    let url = Url::parse(&t.url).context("the endpoint's URL does not parse")?;
    let current = Signer::from_secret(t.secrets.current.expose_secret())?;
    let previous = match (t.secrets.previous, t.previous_until) {
        (Some(p), Some(until)) => Some((Signer::from_secret(p.expose_secret())?, until)),
        _ => None,
    };
    Ok(Some(Arc::new(Target { id: id.to_owned(), url, current, previous })))
}
