//! The duplicate window's reload at start, beside the intake: pages of the window newest first,
//! and, until they are all in, the part not loaded yet asked for a batch's unknown hashes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::dedupe::Deduper;
use crate::{
    domain::EventId,
    store::{Backend, Store, WindowEntry},
};

/// The duplicate window's reload: a task reads it a page at a time, newest first, and the writer
/// takes in each page between batches. Until it is done, a batch's hashes that the loaded part does
/// not know are looked up in the part not loaded yet (on SQLite; PostgreSQL's shared window decides
/// for every event anyway), so a webhook that arrives during the reload is answered as after it.
pub(super) struct Reload {
    pages: Option<mpsc::Receiver<Vec<WindowEntry>>>,
    since: i64,
    /// The oldest arrival merged so far: from `since` to here is not loaded yet.
    until: i64,
}

/// How long the reload waits after a failed page, at first and at most.
const RELOAD_RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

impl Reload {
    pub(super) fn start(store: Store, since: i64) -> Self {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut before, mut loaded, mut wait) = (None, 0usize, RELOAD_RETRY.0);
            loop {
                let page = match store.window_page(since, before.as_ref()).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error.chain = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "loading the duplicate window failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RELOAD_RETRY.1);
                        continue;
                    }
                };
                let Some(last) = page.last() else { break };
                before = Some((last.at, last.hash.clone()));
                loaded += page.len();
                if tx.send(page).await.is_err() {
                    break; // the window is full, or the writer is gone
                }
            }
            tracing::info!(events = loaded, ms = started.elapsed().as_millis() as u64, "duplicate window loaded");
        });
        Self { pages: Some(rx), since, until: i64::MAX }
    }

    pub(super) fn is_loading(&self) -> bool {
        self.pages.is_some()
    }

    /// The next page read (none: the reload is over). Only while loading.
    pub(super) async fn next_page(&mut self) -> Option<Vec<WindowEntry>> {
        match self.pages.as_mut() {
            Some(pages) => pages.recv().await,
            None => None,
        }
    }

    /// Take in a page (none: the reload is over).
    pub(super) fn take(&mut self, page: Option<Vec<WindowEntry>>, dedupe: &mut Deduper) {
        let Some(page) = page else {
            self.pages = None;
            return;
        };
        for e in page {
            if !dedupe.remember_older(&e.hash, &e.id, e.at) {
                self.pages = None; // full: older events are not wanted
                return;
            }
            self.until = e.at;
        }
    }

    /// Take in every page read so far.
    pub(super) fn merge_into(&mut self, dedupe: &mut Deduper) {
        while let Some(pages) = self.pages.as_mut() {
            match pages.try_recv() {
                Ok(page) => self.take(Some(page), dedupe),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => self.take(None, dedupe),
            }
        }
    }

    /// While the window loads (SQLite): the events of the part not loaded yet that the batch's
    /// unknown hashes duplicate, by hash.
    pub(super) async fn holders<'a>(
        &self,
        store: &Store,
        hashes: impl Iterator<Item = &'a str>,
        dedupe: &Deduper,
    ) -> anyhow::Result<HashMap<String, EventId>> {
        if self.pages.is_none() || store.backend() != Backend::Sqlite {
            return Ok(HashMap::new());
        }
        let unknown: Vec<&str> = hashes.filter(|h| dedupe.original(h).is_none()).collect();
        if unknown.is_empty() {
            return Ok(HashMap::new());
        }
        let mut found: Vec<WindowEntry> = store.window_holders(&unknown, self.since, self.until).await?;
        found.sort_by_key(|e| e.at); // the newest holder of a hash wins
        Ok(found.into_iter().map(|e| (e.hash, e.id)).collect())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::time::now_ms;

    /// A store in a SQLite file of its own, with `n` events received at `at` (hashes `bench1`…).
    pub(in crate::queue) async fn store_with_events(n: i64, at: i64) -> (tempfile::TempDir, Store) {
        let keys = Arc::new(crate::crypto::KeyRing::new(&[7u8; 32], &[]));
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = Store::open(&url, None, keys).await.unwrap();
        assert_eq!(store.bench_queue_events(n, at).await.unwrap(), n as u64);
        (dir, store)
    }

    #[tokio::test]
    async fn while_the_window_loads_a_hash_it_does_not_know_is_looked_up_in_the_part_not_loaded() {
        let now = now_ms();
        let (_dir, store) = store_with_events(3, now - 1000).await;
        let (pages, rx) = mpsc::channel(4);
        let mut reload = Reload { pages: Some(rx), since: now - 10_000, until: i64::MAX };
        let mut dedupe = Deduper::new(10_000, 100);
        let jobs = ["bench2", "never-seen"];
        let found = reload.holders(&store, jobs.into_iter(), &dedupe).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found["bench2"].as_str(), "evt_bench000001000000000000002");

        // Once that part is loaded (the page down to it), only what is older is looked up.
        let page = store.window_page(now - 10_000, None).await.unwrap();
        assert_eq!(page.len(), 3);
        pages.send(page[..1].to_vec()).await.unwrap();
        reload.merge_into(&mut dedupe);
        assert_eq!(dedupe.len(), 1);
        assert_eq!(reload.until, now - 1000);
        assert!(
            reload.holders(&store, jobs.into_iter(), &dedupe).await.unwrap().contains_key("bench2"),
            "same time, lower hash"
        );
        let outside = Reload { pages: reload.pages.take(), since: now - 10_000, until: now - 1001 };
        assert!(
            outside.holders(&store, jobs.into_iter(), &dedupe).await.unwrap().is_empty(),
            "the range not loaded is all it asks"
        );
        reload.pages = outside.pages;

        // Loaded: the window alone answers, and nothing is looked up.
        pages.send(page[1..].to_vec()).await.unwrap();
        drop(pages);
        reload.merge_into(&mut dedupe);
        assert_eq!(dedupe.len(), 3);
        assert!(reload.pages.is_none(), "the reload is done when its task ends");
        assert!(dedupe.original("bench2").is_some());
        assert!(reload.holders(&store, jobs.into_iter(), &dedupe).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_window_is_read_a_page_at_a_time_newest_first_within_the_window() {
        let now = now_ms();
        let (_dir, store) = store_with_events(3, now - 1000).await;
        let page = store.window_page(now - 10_000, None).await.unwrap();
        let hashes: Vec<&str> = page.iter().map(|e| e.hash.as_str()).collect();
        assert_eq!(hashes, ["bench3", "bench2", "bench1"], "newest first; at one time, by hash");
        let rest = store.window_page(now - 10_000, Some(&(page[0].at, page[0].hash.clone()))).await.unwrap();
        assert_eq!(rest, page[1..], "the next page starts after the cursor");
        assert!(store.window_page(now - 999, None).await.unwrap().is_empty(), "older than the window");
        assert_eq!(store.window_page(now - 1000, None).await.unwrap().len(), 3, "the window's edge is in it");
    }

    #[tokio::test]
    async fn the_reload_stops_taking_pages_once_the_window_is_full() {
        let (pages, rx) = mpsc::channel(4);
        let mut reload = Reload { pages: Some(rx), since: 0, until: i64::MAX };
        let mut dedupe = Deduper::new(10_000, 2);
        let entry = |hash: &str, at| WindowEntry { hash: hash.into(), id: EventId::generate(), at };
        pages.send(vec![entry("a", 30), entry("b", 20), entry("c", 10)]).await.unwrap();
        reload.merge_into(&mut dedupe);
        assert_eq!(dedupe.len(), 2);
        assert!(reload.pages.is_none(), "full: the reload is over");
        assert_eq!(reload.until, 20);
    }
}
