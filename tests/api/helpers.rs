//! `spawn_app()`: the application on a random loopback port with a fresh database (a SQLite file, or
//! a new PostgreSQL database when `TEST_DATABASE_URL` names a server), pointed at a fake SnapInspect
//! on another random port; and a client that keeps cookies and follows no redirects.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use actix_web::{dev::ServerHandle, web};
use connect_hub::{
    client_credentials::CredentialsInput,
    config::Settings,
    demo::{
        receiver::{Delivery, FakeReceiver},
        snapinspect::{FakeConfig, FakeSnapInspect},
    },
    domain::Provider,
    startup::{AppState, Application},
};
use reqwest::{header::LOCATION, Response};
use serde_json::Value;

use crate::process::harness::test_settings;
pub use crate::process::harness::{CLIENT_ID, CLIENT_SECRET, FORWARD_SECRET, WEBHOOK_SECRET};

pub struct TestApp {
    pub addr: String,
    pub client: reqwest::Client,
    pub state: web::Data<AppState>,
    pub fake: FakeSnapInspect,
    pub fake_addr: String,
    pub receiver: FakeReceiver,
    /// The SQLite file (meaningless on PostgreSQL: see [`TestApp::skip_on_postgres`]).
    pub db_path: PathBuf,
    pub vars: BTreeMap<String, String>,
    handle: ServerHandle,
    app_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    fake_handle: ServerHandle,
    receiver_handle: ServerHandle,
    pub dir: tempfile::TempDir,
    // Last: dropped after the app is told to stop.
    pub db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop both servers without waiting; the runtime ends with the test anyway.
        let handles = [self.handle.clone(), self.fake_handle.clone(), self.receiver_handle.clone()];
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for h in handles {
                    h.stop(false).await;
                }
            });
        }
    }
}

/// A client like a browser: keeps cookies, does not follow redirects.
pub fn browser_client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        connect_hub::telemetry::init("debug", connect_hub::config::LogFormat::Pretty);
    }
}

/// The database a test runs on: a SQLite file in the test's directory, or, when
/// `TEST_DATABASE_URL` is a `postgres://` URL (a server, with or without a database), a new database
/// `hub_test_<run>_<random>` on that server, dropped again when this is dropped.
pub struct TestDb {
    pub url: String,
    /// The server URL and the database's name, on PostgreSQL.
    created: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(dir: &Path) -> Self {
        use sqlx::{Connection, Executor};
        match std::env::var("TEST_DATABASE_URL") {
            Ok(server) if server.starts_with("postgres") => {
                // `.ci/run` names its run, so it can drop whatever this run leaves behind.
                let run: String = std::env::var("TEST_DATABASE_RUN")
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(16)
                    .collect::<String>()
                    .to_lowercase();
                let name = format!("hub_test_{run}_{:016x}", rand::random::<u64>());
                let mut conn = sqlx::PgConnection::connect(&server).await.expect("TEST_DATABASE_URL answers");
                conn.execute(format!("create database {name}").as_str()).await.expect("create the test database");
                conn.close().await.ok();
                let mut url = url::Url::parse(&server).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                TestDb { url: url.to_string(), created: Some((server, name)) }
            }
            _ => TestDb { url: format!("sqlite://{}", dir.join("hub.db").display()), created: None },
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.created.is_some()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        use sqlx::{Connection, Executor};
        let Some((server, name)) = self.created.take() else { return };
        // Best effort, on a thread of its own: Drop cannot await, and the test's runtime may be
        // the current-thread kind. `with (force)` ends the app's connections still open.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                    let _ = conn.execute(format!("drop database if exists {name} with (force)").as_str()).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like `spawn_app`, letting the test change the configuration first. The worker is off (tests
/// drain the queue synchronously with `state.worker.drain()`); a fake receiver is always running,
/// and `forwarding` turns forwarding to it on.
pub async fn spawn_app_with(customise: impl FnOnce(&mut BTreeMap<String, String>)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("hub.db");
    let db = TestDb::new(dir.path()).await;
    let app_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver_url = format!("http://{}/events", receiver_listener.local_addr().unwrap());
    let addr = format!("http://{}", app_listener.local_addr().unwrap());
    let fake_addr = format!("http://{}", fake_listener.local_addr().unwrap());

    let mut vars = BTreeMap::new();
    let bind_addr = app_listener.local_addr().unwrap().to_string();
    for (k, v) in test_settings(db.url.clone(), bind_addr, &addr, &fake_addr).into_iter().chain([
        ("WORKER_ENABLED", "false".into()),
        ("RETRY_SCHEDULE", "0s,0s".into()),
        // Not a setting: where the fake receiver listens, for tests that turn forwarding on.
        ("TEST_RECEIVER_URL", receiver_url),
    ]) {
        vars.insert(k.to_owned(), v);
    }
    customise(&mut vars);
    let settings = Settings::from_vars(&vars).expect("test settings parse");
    settings.check_serve().expect("test settings are complete");

    let fake = FakeSnapInspect::new(FakeConfig {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uri: format!("{addr}/connect/snapinspect/callback"),
        webhook_url: Some(format!("{addr}/webhooks/snapinspect/{WEBHOOK_SECRET}")),
    });
    let fake_server = connect_hub::demo::fakes::serve(fake.configure(), fake_listener).unwrap();
    let fake_handle = fake_server.handle();
    tokio::spawn(fake_server);

    let receiver = FakeReceiver::new(Some(FORWARD_SECRET));
    let receiver_server = connect_hub::demo::fakes::serve(receiver.configure(), receiver_listener).unwrap();
    let receiver_handle = receiver_server.handle();
    tokio::spawn(receiver_server);

    let (state, handle, app_task) = launch(settings, app_listener).await;

    TestApp {
        addr,
        client: browser_client(),
        state,
        fake,
        fake_addr,
        receiver,
        db_path,
        vars,
        handle,
        app_task: Some(app_task),
        fake_handle,
        receiver_handle,
        dir,
        db,
    }
}

async fn launch(
    settings: Settings,
    listener: TcpListener,
) -> (web::Data<AppState>, ServerHandle, tokio::task::JoinHandle<std::io::Result<()>>) {
    let state = AppState::new(settings).await.expect("app state");
    let app = Application::from_parts(listener, state, None).unwrap();
    let handle = app.handle();
    let state = app.state();
    (state, handle, tokio::spawn(app.run_until_stopped()))
}

/// Turn forwarding to the test's fake receiver on.
pub fn forwarding(vars: &mut BTreeMap<String, String>) {
    let url = vars["TEST_RECEIVER_URL"].clone();
    vars.insert("FORWARD_URL".into(), url);
}

/// A hub forwarding to its fake receiver (retries an hour apart) with a connected company and one
/// event whose delivery the receiver refused once: processed itself, its delivery retrying.
pub async fn spawn_app_with_a_retrying_delivery() -> (TestApp, connect_hub::domain::EventId) {
    let app = spawn_app_with(|v| {
        forwarding(v);
        v.insert("RETRY_SCHEDULE".into(), "1h".into());
    })
    .await;
    app.connect_company(6847).await;
    // `connection.created` goes to the endpoint first; the event's delivery is the one refused.
    app.state.worker.drain().await.unwrap();
    app.receiver.push_reply(connect_hub::demo::receiver::Reply::Status(500));
    let event = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    (app, event)
}

pub fn location(res: &Response) -> String {
    res.headers().get(LOCATION).expect("a Location header").to_str().unwrap().to_owned()
}

/// What the connect flow produced at each step, for tests to inspect.
pub struct Connected {
    /// The callback URL SnapInspect redirected to (carries the tokens).
    pub callback_url: String,
    pub access_token: String,
    pub refresh_token: String,
    /// The callback's response.
    pub callback: Response,
}

impl TestApp {
    /// Stop the server as SIGTERM would (graceful: the worker finishes what it holds), without
    /// waiting for it.
    pub fn stop_gracefully(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(true).await });
    }

    /// Whether this test runs on PostgreSQL; if so, says why it is skipped there. For the few
    /// tests that are about SQLite's file itself.
    pub fn skip_on_postgres(&self, reason: &str) -> bool {
        let skip = self.db.is_postgres();
        if skip {
            println!("skipped on PostgreSQL: {reason}");
        }
        skip
    }

    /// Stop the application gracefully and start it again on the same address and database, as
    /// an operator's restart would.
    pub async fn restart(&mut self) {
        self.handle.stop(true).await;
        if let Some(task) = self.app_task.take() {
            task.await.unwrap().unwrap();
        }
        let listener = TcpListener::bind(self.addr.trim_start_matches("http://")).unwrap();
        let settings = Settings::from_vars(&self.vars).unwrap();
        let (state, handle, task) = launch(settings, listener).await;
        (self.state, self.handle, self.app_task) = (state, handle, Some(task));
    }

    /// Follow the callback's 303 to its clean page in `client`'s browser (its cookies say what
    /// happened); the address bar never keeps the tokens.
    pub async fn follow(&self, client: &reqwest::Client, res: Response) -> Response {
        assert_eq!(res.status(), 303, "every callback answer is a redirect to a clean URL");
        let to = location(&res);
        assert!(to.starts_with("/connect/snapinspect/") && !to.contains('?'), "a clean URL: {to}");
        client.get(format!("{}{to}", self.addr)).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(format!("{}{path}", self.addr)).send().await.unwrap()
    }

    /// GET /connect/snapinspect and return the authorize URL it redirects to.
    pub async fn start_connect_with(&self, client: &reqwest::Client) -> url::Url {
        let res = client.get(format!("{}/connect/snapinspect", self.addr)).send().await.unwrap();
        assert_eq!(res.status(), 303);
        url::Url::parse(&location(&res)).unwrap()
    }

    pub async fn start_connect(&self) -> url::Url {
        self.start_connect_with(&self.client).await
    }

    /// At the fake's authorize page: check it renders, then click Allow (with `company`) or Deny.
    /// Returns the URL SnapInspect redirects the browser back to.
    pub async fn decide_at_fake(&self, authorize: &url::Url, company: Option<i64>, allow: bool) -> String {
        let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let page = plain.get(authorize.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200, "the fake accepts our authorize request: {}", page.text().await.unwrap());
        let q: BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
        let company = company.map(|c| c.to_string()).unwrap_or_default();
        let form = [
            ("client_id", q["client_id"].as_str()),
            ("redirect_uri", q["redirect_uri"].as_str()),
            ("state", q["state"].as_str()),
            ("company", company.as_str()),
            ("decision", if allow { "allow" } else { "deny" }),
        ];
        let mut post_url = authorize.clone();
        post_url.set_query(None);
        let res = plain.post(post_url).form(&form).send().await.unwrap();
        assert_eq!(res.status(), 303);
        location(&res)
    }

    /// The whole flow in this client's "browser", up to and including the callback response.
    pub async fn connect(&self, company: Option<i64>) -> Connected {
        let authorize = self.start_connect().await;
        let callback_url = self.decide_at_fake(&authorize, company, true).await;
        let q: BTreeMap<String, String> = url::Url::parse(&callback_url).unwrap().query_pairs().into_owned().collect();
        let callback = self.client.get(&callback_url).send().await.unwrap();
        Connected {
            access_token: q["access_token"].clone(),
            refresh_token: q["refresh_token"].clone(),
            callback_url,
            callback,
        }
    }

    /// Connect a company and return its connection id.
    pub async fn connect_company(&self, company: i64) -> connect_hub::domain::ConnectionId {
        let c = self.connect(Some(company)).await;
        assert_eq!(c.callback.status(), 303, "connect succeeded");
        self.connection_id_for(company).await
    }

    pub async fn connection_id_for(&self, company: i64) -> connect_hub::domain::ConnectionId {
        self.state
            .store
            .connections()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.company_id.map(|c| c.get()) == Some(company))
            .expect("a connection for the company")
            .id
    }

    /// POST a webhook body to the intake with the right secret.
    pub async fn post_webhook(&self, body: &str) -> Response {
        self.client
            .post(format!("{}/webhooks/snapinspect/{WEBHOOK_SECRET}", self.addr))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// POST a webhook and return the event id it was stored as.
    pub async fn send_event(&self, body: &str) -> connect_hub::domain::EventId {
        let res = self.post_webhook(body).await;
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = res.json().await.unwrap();
        connect_hub::domain::EventId::parse(v["id"].as_str().unwrap()).unwrap()
    }

    pub async fn event(&self, id: &connect_hub::domain::EventId) -> connect_hub::store::EventRow {
        self.state.store.event(id).await.unwrap().expect("the event is stored")
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events").fetch_one(self.state.store.pool()).await.unwrap()
    }

    pub async fn connection_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from connections").fetch_one(self.state.store.pool()).await.unwrap()
    }
}

pub const ADMIN_EMAIL: &str = "ops@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// The value of the first hidden `csrf` field on a page.
pub fn csrf_from(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field on the page") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

impl TestApp {
    pub async fn create_admin(&self, email: &str, password: &str) {
        let hash = connect_hub::auth::NewPassword::parse(secrecy::SecretString::from(password.to_owned()))
            .unwrap()
            .hash()
            .unwrap();
        self.state.store.upsert_admin(email, &hash, connect_hub::time::now_ms(), "test").await.unwrap();
    }

    /// Post the sign-in form from `client` (after loading the page for its CSRF token).
    pub async fn try_sign_in(&self, client: &reqwest::Client, email: &str, password: &str) -> Response {
        let page = client.get(format!("{}/admin/login", self.addr)).send().await.unwrap().text().await.unwrap();
        client
            .post(format!("{}/admin/login", self.addr))
            .form(&[("email", email), ("password", password), ("csrf", &csrf_from(&page)), ("next", "/admin")])
            .send()
            .await
            .unwrap()
    }

    /// Create the test admin and sign this app's client in; returns the session's CSRF token.
    pub async fn sign_in(&self) -> String {
        self.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let res = self.try_sign_in(&self.client, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(res.status(), 303, "signed in");
        assert_eq!(location(&res), "/admin");
        let dashboard = self.get("/admin").await.text().await.unwrap();
        csrf_from(&dashboard)
    }

    /// POST a console form with the given fields.
    pub async fn admin_post(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.client.post(format!("{}{path}", self.addr)).form(fields).send().await.unwrap()
    }

    pub async fn page(&self, path: &str) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), 200, "GET {path}");
        res.text().await.unwrap()
    }
}

/// A SnapInspect webhook: an inspection created for company 6847.
pub const CREATE: &str = r#"{ "sType": "Create_Inspection", "iInspectionID": 1388563, "iCompanyID": 6847 }"#;
/// A SnapInspect webhook: a review of the same inspection signed.
pub const SIGNED: &str =
    r#"{ "sType": "Review_Signed", "iInsReviewID": 5, "iInspectionID": 1388563, "iCompanyID": 6847 }"#;

/// A fake receiver on its own loopback port; returns it and its `/events` URL.
pub fn receiver() -> (FakeReceiver, String) {
    let r = FakeReceiver::new(None);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(connect_hub::demo::fakes::serve(r.configure(), listener).unwrap());
    (r, url)
}

/// The Standard Webhooks headers a delivery came with.
pub fn webhook_headers(d: &Delivery) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("webhook-id", d.webhook_id.parse().unwrap());
    h.insert("webhook-timestamp", d.timestamp.parse().unwrap());
    h.insert("webhook-signature", d.signature.parse().unwrap());
    h
}

/// Whether a delivery's signature verifies with `secret`, by the `standardwebhooks` crate (an
/// implementation independent of ours).
pub fn verifies(d: &Delivery, secret: &str) -> bool {
    standardwebhooks::Webhook::new(secret).unwrap().verify(&d.body, &webhook_headers(d)).is_ok()
}

/// Run the real binary's command line with `args` against `app`'s database and settings, as an
/// operator's shell would.
pub fn hub(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(app.dir.path());
    for (k, v) in &app.vars {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

/// Run a fake token server on its own loopback port; returns its base URL (no trailing slash)
/// once it answers.
pub async fn spawn_token_server(server: &connect_hub::demo::token_server::FakeTokenServer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(connect_hub::demo::fakes::serve(server.configure(), listener).unwrap());
    // Any answer (a 404 here) means it is serving, even if the test then blocks its runtime.
    reqwest::get(format!("{base}/ready")).await.unwrap();
    base
}

impl TestApp {
    /// Add a client-credentials connection through the store, as the CLI and console do.
    pub async fn add_credentials(
        &self,
        provider: connect_hub::domain::Provider,
        input: connect_hub::client_credentials::CredentialsInput,
        secret: &str,
    ) -> connect_hub::domain::ConnectionId {
        let settings = input.resolve(provider).expect("valid settings");
        self.state
            .store
            .add_credentials_connection(
                &format!("{} test", provider.label()),
                &settings,
                &secrecy::SecretString::from(secret.to_owned()),
                connect_hub::time::now_ms(),
                "test",
            )
            .await
            .unwrap()
    }

    /// Create an API key; returns (id, key).
    pub async fn api_key(&self, name: &str) -> (String, String) {
        let (id, key) = self.state.api_keys.create(name, "test").await.unwrap();
        (id, secrecy::ExposeSecret::expose_secret(&key).to_owned())
    }

    pub async fn api_get(&self, path: &str, key: Option<&str>) -> Response {
        let mut req = reqwest::Client::new().get(format!("{}{path}", self.addr));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap()
    }
}

/// Wait until `check` holds, or fail after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call to `/api/v1{path}` with the key `key`; returns the status and the JSON body (null if none).
pub async fn api(app: &TestApp, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", app.addr))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Undo the HTML escaping a template applies, so a test can look for the sentence a person reads.
pub fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// A Signicat connection whose token URL is `url`, in an app that gives up on calls after 300 ms.
pub async fn signicat_at(url: &str) -> (TestApp, connect_hub::domain::ConnectionId) {
    let app = spawn_app_with(|v| {
        v.insert("OUTBOUND_TIMEOUT".into(), "300ms".into());
    })
    .await;
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(url.to_owned()),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Signicat, input, "secret").await;
    (app, id)
}

/// Who holds `key`, as a request would find (`None`: unknown or revoked), never refused a look-up.
pub async fn verify_key(
    keys: &connect_hub::auth::api_keys::ApiKeys,
    key: &secrecy::SecretString,
) -> anyhow::Result<Option<connect_hub::auth::api_keys::Caller>> {
    use connect_hub::auth::api_keys::Verdict;
    Ok(match keys.verify_unless_refused(key, || Ok(())).await? {
        Verdict::Valid(caller) => Some(caller),
        Verdict::Unknown | Verdict::NotLookedUp(_) => None,
    })
}
