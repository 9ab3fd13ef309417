//! The database goes away and comes back, under webhook load, on a PostgreSQL server of the
//! test's own: a stop and start of the server, then `pg_terminate_backend` on every session of the
//! hub. While it is away webhooks get 503 with `Retry-After`, `/readyz` a quick 503, `/healthz` 200
//! and `/metrics` the store gauge at 0; afterwards everything works again without a restart, and
//! every event answered 200 is stored once and delivered.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use super::{
    harness::{EventStream, HubProcess, WEBHOOK_SECRET},
    pg_cluster::{binaries_or_skip, PgCluster},
};

/// A client whose every request must answer within this: `/readyz` and intake answer at once
/// when the database is down, not after a pool's acquire timeout (5 s, or sqlx's 30 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

struct Probe {
    client: reqwest::Client,
    base: String,
}

impl Probe {
    async fn status(&self, path: &str) -> anyhow::Result<u16> {
        Ok(self.client.get(format!("{}{path}", self.base)).send().await?.status().as_u16())
    }

    async fn text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.client.get(format!("{}{path}", self.base)).send().await?.text().await?)
    }

    /// Post one webhook; its status and `Retry-After`.
    async fn webhook(&self, inspection: u64) -> anyhow::Result<(u16, Option<String>)> {
        let body = format!(r#"{{"sType":"Create_Inspection","iInspectionID":{inspection},"iCompanyID":6847}}"#);
        let res =
            self.client.post(format!("{}/webhooks/snapinspect/{WEBHOOK_SECRET}", self.base)).body(body).send().await?;
        let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((res.status().as_u16(), retry))
    }

    /// Until the hub serves again: ready, and a webhook answered 200.
    async fn until_recovered(&self, inspection: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.status("/readyz").await.ok() == Some(200);
            if ready && self.webhook(inspection).await.ok().map(|r| r.0) == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "the hub did not serve again within a minute of the database");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the hub answers while the database is down (asked until webhooks get 503).
async fn check_while_down(probe: &Probe, seq: &mut u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        *seq += 1;
        match probe.webhook(*seq).await.expect("intake answers while the database is down") {
            (503, retry) => {
                let secs: u64 = retry.expect("a 503 says when to retry").parse().expect("Retry-After in seconds");
                assert!(secs >= 1);
                break;
            }
            (200, _) => {} // committed before the server went away
            (other, _) => panic!("intake answered {other} while the database was down"),
        }
        assert!(Instant::now() < deadline, "intake never answered 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(probe.status("/readyz").await.expect("/readyz answers at once"), 503);
    assert_eq!(probe.status("/healthz").await.unwrap(), 200);
    let metrics = probe.text("/metrics").await.expect("/metrics answers while the database is down");
    assert!(metrics.contains("\nconnect_hub_store_up 0\n"), "{metrics}");
    assert!(!metrics.contains("\nconnect_hub_events{"), "no queue figures it could not read");
}

async fn scalar(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn the_hub_rides_out_a_restart_of_postgresql_and_the_end_of_all_its_sessions() {
    let Some(bin) = binaries_or_skip("db_outage") else { return };
    let cluster = PgCluster::start(bin).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::new(Path::new(env!("CARGO_BIN_EXE_connect-hub")), dir.path()).unwrap();
    hub.env.insert("DATABASE_URL".into(), cluster.url("hub"));
    let log = dir.path().join("hub.log");
    hub.log = Some(log.clone());
    let _child = hub.start().await.unwrap();
    hub.connect(6847).await.unwrap();
    // An API key, made by the command line before the outages, to use after them.
    let out = std::process::Command::new(&hub.bin)
        .args(["api-key", "create", "--name", "outage"])
        .env_clear()
        .envs(&hub.env)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let api_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let probe =
        Probe { client: reqwest::Client::builder().timeout(ANSWER_WITHIN).build().unwrap(), base: hub.base.clone() };
    let mut seq = 900_000_000u64;
    let mut acked: Vec<String> = Vec::new();

    // 1. The server stops for about two seconds, under load, and starts again.
    let stream = EventStream::start(&hub.base, 6, 6847, 0);
    stream.wait_for(200, Duration::from_secs(60)).await.unwrap();
    cluster.stop().unwrap();
    check_while_down(&probe, &mut seq).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start_again().unwrap();
    seq += 1;
    probe.until_recovered(seq).await;
    let before = stream.acked_count();
    stream.wait_for(before + 200, Duration::from_secs(60)).await.unwrap();
    let (a, refused, errors) = stream.stop().await;
    assert!(!refused.is_empty(), "the stream saw 503s during the outage");
    assert_eq!(errors, 0, "nothing but 200 and 503");
    acked.extend(a);

    // 2. Every session of the hub is ended (`pg_terminate_backend`), under load.
    let admin = sqlx::PgPool::connect(&cluster.url("postgres")).await.unwrap();
    let stream = EventStream::start(&hub.base, 6, 6847, 10_000_000);
    stream.wait_for(200, Duration::from_secs(60)).await.unwrap();
    let ended = scalar(
        &admin,
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = 'hub' and pid <> pg_backend_pid()) t",
    )
    .await;
    assert!(ended >= 2, "the hub's pool, writer and listener had sessions ({ended})");
    let before = stream.acked_count();
    stream.wait_for(before + 200, Duration::from_secs(60)).await.unwrap();
    let (a, _, errors) = stream.stop().await;
    assert_eq!(errors, 0, "nothing but 200 and 503");
    acked.extend(a);
    seq += 1;
    probe.until_recovered(seq).await;

    // Everything works again without a restart: the listener is back on the server...
    let hub_db = sqlx::PgPool::connect(&cluster.url("hub")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(&admin, "select count(*) from pg_stat_activity where datname = 'hub' and query ilike 'listen%'").await
        == 0
    {
        assert!(Instant::now() < deadline, "the LISTEN connection did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... the API and the console answer, and the metrics, with the outage counted ...
    let res = probe.client.get(format!("{}/api/v1/connections", hub.base)).bearer_auth(&api_key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("6847"), "the connection is listed");
    assert_eq!(probe.status("/admin/login").await.unwrap(), 200);
    let metrics = probe.text("/metrics").await.unwrap();
    assert!(metrics.contains("\nconnect_hub_store_up 1\n"), "{metrics}");
    assert!(metrics.contains("connect_hub_store_errors_total{operation=\"ready\"}"), "{metrics}");

    // ... and every event answered 200 is stored once, processed and delivered.
    let acked: HashSet<String> = acked.into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored: Vec<(String, String)> =
            sqlx::query_as("select public_id, state from events").fetch_all(&hub_db).await.unwrap();
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for (id, _) in &stored {
            *copies.entry(id.as_str()).or_default() += 1;
        }
        let missing = acked.iter().filter(|id| !copies.contains_key(id.as_str())).count();
        assert_eq!(missing, 0, "{missing} events answered 200 are not stored");
        assert!(copies.values().all(|n| *n == 1), "an event stored twice");
        let done: HashSet<&str> = stored.iter().filter(|(_, s)| s == "done").map(|(id, _)| id.as_str()).collect();
        let delivered: HashSet<String> = hub.receiver.received().into_iter().map(|d| d.webhook_id).collect();
        let undone = acked.iter().filter(|id| !done.contains(id.as_str())).count();
        let undelivered = acked.difference(&delivered).count();
        if undone == 0 && undelivered == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "of {} events answered 200, {undone} not processed and {undelivered} not delivered",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing half-written: every event the worker finished has its delivery row.
    let orphans = scalar(
        &hub_db,
        "select count(*) from events e where e.state = 'done' and e.connection_id is not null \
         and not exists (select 1 from deliveries d where d.event_id = e.id)",
    )
    .await;
    assert_eq!(orphans, 0, "events done without their deliveries");

    // Each loop that met the outage logged it once at its start and once at its end, not once
    // per try (a loop may also ride through it, its query waiting for the server to return).
    let text = std::fs::read_to_string(&log).unwrap();
    let mut met = 0;
    for what in ["claiming events", "claiming deliveries", "storing webhook events", "listening for other instances"] {
        let started = text.matches(&format!("{what} failed: the database does not answer")).count();
        let ended = text.matches(&format!("{what} works again")).count();
        assert!(started <= 2, "{what}: {started} lines at the start of two outages\n{text}");
        assert_eq!(started, ended, "{what}: each outage logged as ended\n{text}");
        met += started;
    }
    assert!(met >= 2, "the loops logged the outages\n{text}");
    let warn_lines = text.lines().filter(|l| l.contains("WARN")).count();
    eprintln!("db_outage: {} events answered 200, {warn_lines} WARN lines logged", acked.len());
}
