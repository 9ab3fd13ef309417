//! Durability against the real binary: SIGKILL in the middle of a stream of webhooks, a restart,
//! and every event that got a 200 is in the store and processed; SIGTERM drains and exits 0.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use super::{
    harness::{EventStream, HubProcess},
    hub,
};

async fn ids(pool: &sqlx::AnyPool, sql: &str) -> HashSet<String> {
    sqlx::query_scalar(sql).fetch_all(pool).await.unwrap().into_iter().collect()
}

const STORED: &str = "select public_id from events";
const DONE: &str = "select public_id from events where state = 'done'";

#[tokio::test]
async fn every_event_that_got_a_200_survives_sigkill_and_is_processed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let mut child = hub.start().await.unwrap();
    hub.connect(6847).await.unwrap();

    let stream = EventStream::start(&hub.base, 16, 6847, 0);
    stream.wait_for(400, Duration::from_secs(30)).await.unwrap();
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    let (acked, _, _) = stream.stop().await;
    let acked: HashSet<String> = acked.into_iter().collect();
    assert!(acked.len() >= 400);

    // Everything acknowledged is on disk, before any restart.
    let pool = hub.pool().await.unwrap();
    let stored = ids(&pool, STORED).await;
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events were lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // After a restart, every one of them is processed and delivered, including those a dead
    // worker held (enriched, then its delivery sent: an event is `done` once fanned out).
    let mut child = hub.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = ids(&pool, DONE).await;
        let delivered: HashSet<String> = hub.receiver.received().into_iter().map(|d| d.webhook_id).collect();
        if acked.is_subset(&done) && acked.is_subset(&delivered) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events processed, {} delivered",
            acked.intersection(&done).count(),
            acked.len(),
            acked.intersection(&delivered).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hub.fake.inspection_calls() as usize >= acked.len());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_stops_accepting_finishes_the_commits_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let mut child = hub.start().await.unwrap();
    let stream = EventStream::start(&hub.base, 16, 6847, 0);
    stream.wait_for(200, Duration::from_secs(30)).await.unwrap();
    let started = Instant::now();
    let clean = tokio::task::spawn_blocking(move || HubProcess::terminate(&mut child)).await.unwrap().unwrap();
    assert!(clean, "exit status 0");
    assert!(started.elapsed() < Duration::from_secs(30), "bounded shutdown");
    let (acked, _, _) = stream.stop().await;
    let stored = ids(&hub.pool().await.unwrap(), STORED).await;
    assert!(acked.iter().all(|id| stored.contains(id)), "every acknowledged event was committed before exit");
}
