//! The proxy's HTTP clients, one pair per thread: each server worker drives its own pooled
//! upstream connections, so a proxied request wakes no other thread on its way out and back.

// A reqwest client's pooled connection is a task on the runtime that opened it. Shared by two
// actix workers (each its own single-threaded runtime), a request from one worker is written and
// read by the other, two cross-thread wake-ups per request.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::outbound::GuardedClient;

/// The two clients a proxied request may use.
#[derive(Clone)]
pub struct Upstreams {
    /// For `SNAPINSPECT_API_URL` (the operator's own setting).
    pub trusted: reqwest::Client,
    /// For stored API URLs, through the outbound guard (`TOKEN_URL_ALLOW_NETWORKS`).
    pub stored: GuardedClient,
}

type Make = dyn Fn() -> anyhow::Result<Upstreams> + Send + Sync;

/// Builds a thread's own [`Upstreams`] the first time that thread asks.
pub struct PerThread {
    id: u64,
    make: Arc<Make>,
    /// Built at start-up (so a client that cannot be built stops the start), and what a thread
    /// uses if building its own fails later.
    shared: Upstreams,
}

/// How many sets one thread keeps (each `AppState` has one; a test process makes many).
const KEPT_PER_THREAD: usize = 4;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static MINE: RefCell<Vec<(u64, Upstreams)>> = const { RefCell::new(Vec::new()) };
}

impl PerThread {
    pub fn new(make: impl Fn() -> anyhow::Result<Upstreams> + Send + Sync + 'static) -> anyhow::Result<Self> {
        let shared = make()?;
        Ok(Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), make: Arc::new(make), shared })
    }

    /// This thread's clients.
    pub fn get(&self) -> Upstreams {
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            if let Some((_, u)) = mine.iter().find(|(id, _)| *id == self.id) {
                return u.clone();
            }
            let made = (self.make)().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "building this thread's proxy clients failed; using the shared ones");
                self.shared.clone()
            });
            if mine.len() >= KEPT_PER_THREAD {
                mine.remove(0);
            }
            mine.push((self.id, made.clone()));
            made
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn upstreams() -> anyhow::Result<Upstreams> {
        let guarded = GuardedClient::build(std::time::Duration::from_secs(1), &[], crate::outbound::Policy::default());
        Ok(Upstreams { trusted: reqwest::Client::new(), stored: guarded? })
    }

    fn counting() -> (Arc<AtomicUsize>, PerThread) {
        let made = Arc::new(AtomicUsize::new(0));
        let count = made.clone();
        let per = PerThread::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
            upstreams()
        })
        .unwrap();
        (made, per)
    }

    #[test]
    fn each_thread_builds_its_own_once_and_keeps_it() {
        let (made, per) = counting();
        assert_eq!(made.load(Ordering::SeqCst), 1, "the shared set, at start-up");
        per.get();
        per.get();
        assert_eq!(made.load(Ordering::SeqCst), 2, "this thread's, once");
        std::thread::scope(|s| {
            s.spawn(|| {
                per.get();
                per.get();
            });
        });
        assert_eq!(made.load(Ordering::SeqCst), 3, "another thread's, once");
    }

    #[test]
    fn a_thread_whose_own_set_cannot_be_built_uses_the_shared_one() {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let per = PerThread::new(move || match count.fetch_add(1, Ordering::SeqCst) {
            0 => upstreams(),
            _ => anyhow::bail!("no TLS backend"),
        })
        .unwrap();
        per.get();
        per.get();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "tried once on this thread, then the shared set is kept");
    }

    #[test]
    fn a_thread_keeps_a_few_sets_and_drops_the_oldest() {
        let sets: Vec<(Arc<AtomicUsize>, PerThread)> = (0..KEPT_PER_THREAD + 1).map(|_| counting()).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for (_, per) in &sets {
                    per.get();
                }
                for (_, per) in &sets[1..] {
                    per.get();
                }
                assert_eq!(sets[1].0.load(Ordering::SeqCst), 2, "still kept");
                sets[0].1.get();
                assert_eq!(sets[0].0.load(Ordering::SeqCst), 3, "the oldest was dropped and is built again");
                MINE.with(|m| assert_eq!(m.borrow().len(), KEPT_PER_THREAD));
            });
        });
    }
}
