//! A harness for driving the real binary from outside, as SnapInspect and a browser would: the
//! `serve` process configured against a fake SnapInspect and a fake receiver running in the
//! caller's process, the connect flow over HTTP, and a stream of webhooks from many senders that
//! remembers which got a 200. The crash, log and instance tests use it, and so does the fault run
//! (`examples/faults.rs` includes this file by path), so it depends on the library alone.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::Value;

use connect_hub::{
    crypto::generate_key_b64,
    demo::{
        fakes::serve,
        receiver::FakeReceiver,
        snapinspect::{FakeConfig, FakeSnapInspect},
    },
};

// The secrets every test hub is configured with, a `serve` process here or the in-process app of
// helpers.rs (which uses these). The client secret has characters a form must encode.
pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-secret+/:% é";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The settings every test hub starts from, a `serve` process here or the in-process app of
/// helpers.rs: its database, address and public URL, fresh keys, the fake SnapInspect at
/// `fake_addr` and the test secrets.
pub fn test_settings(
    database_url: String,
    bind_addr: String,
    public_url: &str,
    fake_addr: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url),
        ("BIND_ADDR", bind_addr),
        ("PUBLIC_URL", public_url.to_owned()),
        ("ENCRYPTION_KEY", generate_key_b64(32)),
        ("SESSION_KEY", generate_key_b64(64)),
        ("SNAPINSPECT_CLIENT_ID", CLIENT_ID.into()),
        ("SNAPINSPECT_CLIENT_SECRET", CLIENT_SECRET.into()),
        ("SNAPINSPECT_AUTHORIZE_URL", format!("{fake_addr}/integration/SnapInspectConnect")),
        ("SNAPINSPECT_EXCHANGE_URL", format!("{fake_addr}/integration/ExchangeToken")),
        ("SNAPINSPECT_API_URL", format!("{fake_addr}/")),
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ("FORWARD_SECRET", FORWARD_SECRET.into()),
        // The fake token servers tests start are on loopback.
        ("OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8".into()),
        // No health checks unless a test asks for them: one at a random moment would add calls
        // to the fake SnapInspect that other tests count.
        ("CONNECTION_CHECK_INTERVAL", "0".into()),
    ]
}

/// The `serve` process and its configuration. The fakes run in the caller's tokio runtime.
pub struct HubProcess {
    pub bin: PathBuf,
    pub env: BTreeMap<String, String>,
    pub base: String,
    pub dir: PathBuf,
    pub fake: FakeSnapInspect,
    pub receiver: FakeReceiver,
    /// Where the process's stderr goes (nowhere if unset).
    pub log: Option<PathBuf>,
}

impl HubProcess {
    /// Configure (not start) the binary at `bin` with its database under `dir`, on a free loopback
    /// port, and start the fakes.
    pub fn new(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let base = format!("http://127.0.0.1:{port}");
        let fake_listener = TcpListener::bind("127.0.0.1:0")?;
        let fake_addr = format!("http://{}", fake_listener.local_addr()?);
        let receiver_listener = TcpListener::bind("127.0.0.1:0")?;
        let receiver_url = format!("http://{}/events", receiver_listener.local_addr()?);
        let fake = FakeSnapInspect::new(FakeConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uri: format!("{base}/connect/snapinspect/callback"),
            webhook_url: None,
        });
        tokio::spawn(serve(fake.configure(), fake_listener)?);
        let receiver = FakeReceiver::new(Some(FORWARD_SECRET));
        tokio::spawn(serve(receiver.configure(), receiver_listener)?);
        let database_url = format!("sqlite://{}", dir.join("hub.db").display());
        let env = test_settings(database_url, format!("127.0.0.1:{port}"), &base, &fake_addr)
            .into_iter()
            .chain([
                ("FORWARD_URL", receiver_url),
                ("RETRY_SCHEDULE", "0s,1s,1s".into()),
                ("LEASE_SECS", "2".into()),
                ("RUST_LOG", "warn".into()),
            ])
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        // Absolute, because the process starts in `dir`.
        let bin = bin.canonicalize().with_context(|| format!("no binary at {}", bin.display()))?;
        Ok(Self { bin, env, base, dir: dir.to_owned(), fake, receiver, log: None })
    }

    /// Start `serve` and wait (up to 20 s) until it is ready. The caller owns the child, which is
    /// killed when dropped: a failing test leaves no server behind.
    pub async fn start(&self) -> anyhow::Result<ServeChild> {
        let stderr = match &self.log {
            Some(path) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
            None => Stdio::null(),
        };
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map(ServeChild)
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if client.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return Ok(child);
            }
            if let Some(status) = child.try_wait()? {
                bail!("the hub exited before it was ready ({status}); see its log, if the test keeps one");
            }
            if Instant::now() > deadline {
                // Dropping `child` kills and reaps it.
                bail!("the hub did not become ready within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Link `company` through the real connect flow, as a browser would click through it. Returns
    /// the callback URL SnapInspect sent the browser to (it carries the tokens).
    pub async fn connect(&self, company: i64) -> anyhow::Result<String> {
        self.connect_via(&self.base, &self.base, company).await
    }

    /// The connect flow started at the instance at `start` and finished at the one at `finish`
    /// (as a load balancer may send the browser's two requests to two instances): the callback
    /// SnapInspect redirects to (on `PUBLIC_URL`) is sent to `finish` instead.
    pub async fn connect_via(&self, start: &str, finish: &str, company: i64) -> anyhow::Result<String> {
        let location = |r: &reqwest::Response| -> anyhow::Result<String> {
            Ok(r.headers().get("location").context("a redirect")?.to_str()?.to_owned())
        };
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let res = browser.get(format!("{start}/connect/snapinspect")).send().await?;
        // The session cookie that binds the state to this "browser".
        let cookie = res
            .headers()
            .get("set-cookie")
            .context("a session cookie")?
            .to_str()?
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned();
        let authorize = url::Url::parse(&location(&res)?)?;
        let q: BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
        let mut post = authorize.clone();
        post.set_query(None);
        let company = company.to_string();
        let form = [
            ("client_id", q["client_id"].as_str()),
            ("redirect_uri", q["redirect_uri"].as_str()),
            ("state", q["state"].as_str()),
            ("company", company.as_str()),
            ("decision", "allow"),
        ];
        let back = browser.post(post).form(&form).send().await?;
        let callback = location(&back)?;
        let public = &self.env["PUBLIC_URL"];
        let target = match callback.strip_prefix(public.as_str()) {
            Some(rest) => format!("{finish}{rest}"),
            None => callback.clone(),
        };
        let res = browser.get(&target).header("cookie", cookie).send().await?;
        anyhow::ensure!(res.status() == 303, "the callback answered {}", res.status());
        Ok(callback)
    }

    /// A pool on the process's database, whichever store it is (SQLite allows readers beside it).
    pub async fn pool(&self) -> anyhow::Result<sqlx::AnyPool> {
        sqlx::any::install_default_drivers();
        Ok(sqlx::AnyPool::connect(&self.env["DATABASE_URL"]).await?)
    }

    /// `kill -TERM`, then wait; returns whether it exited 0.
    pub fn terminate(child: &mut Child) -> anyhow::Result<bool> {
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        Ok(child.wait()?.success())
    }
}

/// A `serve` process that is killed (and reaped) when dropped, on every path: a test that fails or
/// panics half-way must not leave servers running into the next run.
pub struct ServeChild(Child);

impl std::ops::Deref for ServeChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServeChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Webhooks sent from many tasks until stopped; remembers the ids answered 200 and counts 503s.
pub struct EventStream {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<String>>>,
    /// Bodies answered 503 (the store was full): SnapInspect would send them again.
    pub refused: Arc<Mutex<Vec<String>>>,
    pub errors: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EventStream {
    /// Start `senders` tasks posting distinct events for `company`; ids start at `offset`. A task
    /// stops at the first connection error (the server is gone) or when told to.
    pub fn start(base: &str, senders: usize, company: i64, offset: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let tasks = (0..senders)
            .map(|s| {
                let (stop, acked, refused, errors) = (stop.clone(), acked.clone(), refused.clone(), errors.clone());
                let url = format!("{base}/webhooks/snapinspect/{WEBHOOK_SECRET}");
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let body = format!(
                            r#"{{"sType":"Create_Inspection","iInspectionID":{},"iCompanyID":{company}}}"#,
                            offset + s * 1_000_000 + i
                        );
                        match client.post(&url).body(body.clone()).send().await {
                            Ok(r) if r.status() == 200 => {
                                if let Ok(v) = r.json::<Value>().await {
                                    if let Some(id) = v["id"].as_str() {
                                        acked.lock().expect("poisoned").push(id.to_owned());
                                    }
                                }
                            }
                            Ok(r) if r.status() == 503 => refused.lock().expect("poisoned").push(body),
                            Ok(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        Self { stop, acked, refused, errors, tasks }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().expect("poisoned").len()
    }

    /// Wait (up to `within`) until at least `n` events were answered 200.
    pub async fn wait_for(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while self.acked_count() < n {
            anyhow::ensure!(Instant::now() < deadline, "only {} events acknowledged", self.acked_count());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stop every sender and wait for them.
    pub async fn stop(self) -> (Vec<String>, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().expect("poisoned").clone();
        let refused = self.refused.lock().expect("poisoned").clone();
        (acked, refused, self.errors.load(Ordering::Relaxed))
    }
}
