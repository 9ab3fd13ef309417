//! The fault run behind `faults/run.sh`: on loopback, the real binary under webhook load is killed
//! with SIGKILL and restarted, SnapInspect answers 500s and times out, the receiver fails and asks
//! to retry later, and the database fills up (SQLite's `max_page_count`). Then it reports events
//! answered 200 against events stored, processed and delivered: they must be equal.

use std::{
    collections::HashSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use connect_hub::demo::receiver::Reply;
use harness::{EventStream, HubProcess, WEBHOOK_SECRET};

/// The harness the tests that start the binary use (it depends on the library alone).
#[path = "../tests/api/process/harness.rs"]
mod harness;

const COMPANY: i64 = 6847;

fn say(line: &str) {
    eprintln!("faults: {line}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = PathBuf::from(std::env::var("FAULTS_BIN").unwrap_or_else(|_| "target/release/connect-hub".into()));
    let kills: usize = std::env::var("FAULTS_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir()?;
    let mut hub = HubProcess::new(&bin, dir.path())?;
    // FAULTS_DATABASE_URL=postgres://… runs the same faults on an (empty) PostgreSQL database.
    if let Ok(url) = std::env::var("FAULTS_DATABASE_URL") {
        hub.env.insert("DATABASE_URL".into(), url);
    }
    let on_sqlite = hub.env["DATABASE_URL"].starts_with("sqlite:");
    // Short timeouts and a short schedule, so every failure here is retried within the run.
    hub.env.insert("OUTBOUND_TIMEOUT".into(), "2s".into());
    hub.env.insert("RETRY_SCHEDULE".into(), "0s,1s,1s,2s,2s,3s,3s,5s".into());
    hub.env.insert("LEASE_SECS".into(), "5".into());
    let mut acked: HashSet<String> = HashSet::new();
    let mut refused_total = 0usize;
    let mut offset = 0usize;

    let mut child = hub.start().await?;
    hub.connect(COMPANY).await?;

    say(&format!("1. SIGKILL under load, {kills} times"));
    for round in 0..kills {
        offset += 100_000_000;
        let stream = EventStream::start(&hub.base, 32, COMPANY, offset);
        stream.wait_for(300 + 200 * round, Duration::from_secs(60)).await?;
        child.kill()?;
        child.wait()?;
        let (ids, _, _) = stream.stop().await;
        say(&format!("   killed with {} events acknowledged in this round", ids.len()));
        acked.extend(ids);
        child = hub.start().await?;
    }

    say("2. SnapInspect answers 500 and times out; the receiver fails and says Retry-After");
    for _ in 0..150 {
        hub.fake.push_inspection_fault(500);
    }
    for _ in 0..10 {
        hub.fake.push_inspection_delay(Duration::from_secs(3));
    }
    for i in 0..150 {
        hub.receiver.push_reply(if i % 3 == 0 { Reply::RetryAfter(503, 1) } else { Reply::Status(500) });
    }
    offset += 100_000_000;
    let stream = EventStream::start(&hub.base, 16, COMPANY, offset);
    stream.wait_for(1500, Duration::from_secs(60)).await?;
    let (ids, _, _) = stream.stop().await;
    acked.extend(ids);

    if on_sqlite {
        say("3. the database is full");
        anyhow::ensure!(HubProcess::terminate(&mut child)?, "a clean stop exits 0");
        let pool = hub.pool().await?;
        let pages: i64 = sqlx::query_scalar("pragma page_count").fetch_one(&pool).await?;
        pool.close().await;
        hub.env.insert("SQLITE_MAX_PAGE_COUNT".into(), (pages + 40).to_string());
        child = hub.start().await?;
        offset += 100_000_000;
        let stream = EventStream::start(&hub.base, 16, COMPANY, offset);
        let deadline = Instant::now() + Duration::from_secs(60);
        while stream.refused.lock().expect("poisoned").len() < 200 {
            anyhow::ensure!(Instant::now() < deadline, "the store never filled up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (ids, refused, _) = stream.stop().await;
        say(&format!("   {} acknowledged, {} answered 503 while full", ids.len(), refused.len()));
        acked.extend(ids);
        refused_total += refused.len();

        say("4. room again; the refused events are sent again, as SnapInspect retries them");
        anyhow::ensure!(HubProcess::terminate(&mut child)?, "a clean stop exits 0");
        hub.env.remove("SQLITE_MAX_PAGE_COUNT");
        child = hub.start().await?;
        let client = reqwest::Client::new();
        let url = format!("{}/webhooks/snapinspect/{WEBHOOK_SECRET}", hub.base);
        for body in &refused {
            let res = client.post(&url).body(body.clone()).send().await?;
            anyhow::ensure!(res.status() == 200, "a retried event answered {}", res.status());
            let v: serde_json::Value = res.json().await?;
            acked.insert(v["id"].as_str().unwrap_or_default().to_owned());
        }
    } else {
        say("3-4. skipped: a full store is SQLite's max_page_count; PostgreSQL has no such cap to set");
    }

    say("5. waiting for every acknowledged event to be processed");
    let pool = hub.pool().await?;
    let deadline = Instant::now() + Duration::from_secs(240);
    let (stored, done) = loop {
        let stored: HashSet<String> =
            sqlx::query_scalar("select public_id from events").fetch_all(&pool).await?.into_iter().collect();
        let done: HashSet<String> = sqlx::query_scalar("select public_id from events where state = 'done'")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .collect();
        if acked.is_subset(&done) || Instant::now() > deadline {
            break (stored, done);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let delivered: HashSet<String> = hub.receiver.received().into_iter().map(|d| d.webhook_id).collect();
    let clean = HubProcess::terminate(&mut child)?;

    let acked_stored = acked.intersection(&stored).count();
    let acked_done = acked.intersection(&done).count();
    let acked_delivered = acked.intersection(&delivered).count();
    println!();
    println!(
        "connect-hub under faults ({kills} SIGKILLs, provider 500s and timeouts, receiver failures, a full database)"
    );
    println!("  events answered 200 ...................... {}", acked.len());
    println!("  of them in the store ..................... {acked_stored}");
    println!("  of them processed (done) ................. {acked_done}");
    println!("  of them delivered to the receiver ........ {acked_delivered}");
    println!("  answered 503 while the store was full .... {refused_total} (all sent again and accepted)");
    println!("  events in the store that got no 200 ...... {}", stored.difference(&acked).count());
    println!("  inspection reads at SnapInspect .......... {}", hub.fake.inspection_calls());
    println!("  final stop exited 0 ...................... {clean}");
    let equal = acked.len() == acked_stored && acked.len() == acked_done && acked.len() == acked_delivered;
    println!("  received with 200 == stored == processed == delivered: {}", if equal { "yes" } else { "NO" });
    anyhow::ensure!(equal && clean, "events were lost or not processed");
    Ok(())
}
