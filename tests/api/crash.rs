//! Durability against the real binary: SIGKILL in the middle of a stream of webhooks, a restart,
//! and every event that got a 200 is in the store and processed; SIGTERM drains and exits 0.

use std::{
    collections::{BTreeMap, HashSet},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use connect_hub::{
    crypto::generate_key_b64,
    fake::{
        receiver::FakeReceiver,
        snapinspect::{FakeConfig, FakeSnapInspect},
    },
};
use serde_json::Value;

use crate::helpers::{browser_client, location, CLIENT_ID, CLIENT_SECRET, FORWARD_SECRET, WEBHOOK_SECRET};

/// The real binary, configured against fakes running in the test process.
pub struct Hub {
    pub env: BTreeMap<String, String>,
    pub base: String,
    pub fake: FakeSnapInspect,
    pub receiver: FakeReceiver,
    pub dir: tempfile::TempDir,
    /// Where the binary's stderr goes (nowhere if unset).
    pub log: Option<std::path::PathBuf>,
}

impl Hub {
    /// A configuration for the real binary, with the fakes running in this test process.
    // Not `Default`: it starts servers.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let fake_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fake_addr = format!("http://{}", fake_listener.local_addr().unwrap());
        let receiver_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let receiver_url = format!("http://{}/events", receiver_listener.local_addr().unwrap());

        let fake = FakeSnapInspect::new(FakeConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uri: format!("{base}/connect/snapinspect/callback"),
            webhook_url: None,
        });
        tokio::spawn(connect_hub::fake::serve(fake.configure(), fake_listener).unwrap());
        let receiver = FakeReceiver::new(Some(FORWARD_SECRET));
        tokio::spawn(connect_hub::fake::serve(receiver.configure(), receiver_listener).unwrap());

        let env: BTreeMap<String, String> = [
            ("DATABASE_URL", format!("sqlite://{}", dir.path().join("hub.db").display())),
            ("BIND_ADDR", format!("127.0.0.1:{port}")),
            ("PUBLIC_URL", base.clone()),
            ("ENCRYPTION_KEY", generate_key_b64(32)),
            ("SESSION_KEY", generate_key_b64(64)),
            ("SNAPINSPECT_CLIENT_ID", CLIENT_ID.into()),
            ("SNAPINSPECT_CLIENT_SECRET", CLIENT_SECRET.into()),
            ("SNAPINSPECT_AUTHORIZE_URL", format!("{fake_addr}/integration/SnapInspectConnect")),
            ("SNAPINSPECT_EXCHANGE_URL", format!("{fake_addr}/integration/ExchangeToken")),
            ("SNAPINSPECT_API_URL", format!("{fake_addr}/")),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
            ("FORWARD_URL", receiver_url),
            ("FORWARD_SECRET", FORWARD_SECRET.into()),
            ("RETRY_SCHEDULE", "0s,1s,1s".into()),
            ("LEASE_SECS", "2".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Hub { env, base, fake, receiver, dir, log: None }
    }

    // The caller owns the child and waits for it; clippy cannot see that across the return.
    #[allow(clippy::zombie_processes)]
    pub async fn start(&self) -> Child {
        let stderr = match &self.log {
            Some(path) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()),
            None => Stdio::null(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
            .arg("serve")
            .env_clear()
            .envs(&self.env)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if client.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return child;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the hub did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Link company 6847 through the real connect flow.
    /// Returns the callback URL SnapInspect sent the browser to (it carries the tokens).
    pub async fn connect(&self) -> String {
        let browser = browser_client();
        let res = browser.get(format!("{}/connect/snapinspect", self.base)).send().await.unwrap();
        let authorize = url::Url::parse(&location(&res)).unwrap();
        let q: BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
        let mut post = authorize.clone();
        post.set_query(None);
        let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let back = plain
            .post(post)
            .form(&[
                ("client_id", q["client_id"].as_str()),
                ("redirect_uri", q["redirect_uri"].as_str()),
                ("state", q["state"].as_str()),
                ("company", "6847"),
                ("decision", "allow"),
            ])
            .send()
            .await
            .unwrap();
        let callback = location(&back);
        let res = browser.get(&callback).send().await.unwrap();
        assert_eq!(res.status(), 303, "connected");
        callback
    }

    pub async fn store(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.env["DATABASE_URL"]).await.unwrap()
    }
}

/// Send webhooks from `senders` tasks until `stop`; returns the ids that were answered 200.
fn stream_events(
    base: &str,
    senders: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    offset: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..senders)
        .map(|s| {
            let (stop, acked) = (stop.clone(), acked.clone());
            let url = format!("{base}/webhooks/snapinspect/{WEBHOOK_SECRET}");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = format!(
                        r#"{{"sType":"Create_Inspection","iInspectionID":{},"iCompanyID":6847}}"#,
                        offset + s * 1_000_000 + i
                    );
                    match client.post(&url).body(body).send().await {
                        Ok(r) if r.status() == 200 => {
                            let v: Value = r.json().await.unwrap();
                            acked.lock().unwrap().push(v["id"].as_str().unwrap().to_owned());
                        }
                        // The server is gone or going: stop sending from this task.
                        _ => return,
                    }
                }
            })
        })
        .collect()
}

async fn wait_for(acked: &Arc<Mutex<Vec<String>>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "only {} events acknowledged", acked.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn every_event_that_got_a_200_survives_sigkill_and_is_processed_after_restart() {
    let hub = Hub::new();
    let mut child = hub.start().await;
    hub.connect().await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let senders = stream_events(&hub.base, 16, stop.clone(), acked.clone(), 0);
    wait_for(&acked, 400).await;
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() >= 400);

    // Everything acknowledged is on disk, before any restart.
    let pool = hub.store().await;
    let stored: HashSet<String> =
        sqlx::query_scalar("select public_id from events").fetch_all(&pool).await.unwrap().into_iter().collect();
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events were lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // After a restart, every one of them is processed (forwarded), including those a dead worker held.
    let mut child = hub.start().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done: HashSet<String> = sqlx::query_scalar("select public_id from events where state = 'done'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
        if acked.is_subset(&done) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events processed",
            acked.intersection(&done).count(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered: HashSet<String> = hub.receiver.received().into_iter().map(|d| d.webhook_id).collect();
    assert!(acked.is_subset(&delivered), "every acknowledged event reached the receiver");
    assert!(hub.fake.inspection_calls() as usize >= acked.len());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_stops_accepting_finishes_the_commits_in_flight_and_exits_0() {
    let hub = Hub::new();
    let child = hub.start().await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let senders = stream_events(&hub.base, 16, stop.clone(), acked.clone(), 0);
    wait_for(&acked, 200).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert!(output.status.success(), "exit status {:?}", output.status);
    assert!(started.elapsed() < Duration::from_secs(30), "bounded shutdown");
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let pool = hub.store().await;
    let stored: HashSet<String> =
        sqlx::query_scalar("select public_id from events").fetch_all(&pool).await.unwrap().into_iter().collect();
    assert!(acked.is_subset(&stored), "every acknowledged event was committed before exit");
}
