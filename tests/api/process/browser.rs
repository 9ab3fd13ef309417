//! Real-browser tests: headless Chromium driven over W3C WebDriver (Debian's `chromium` and
//! `chromium-driver`). A screenshot of every page visited is kept under
//! `target/browser-screenshots/` so a failure can be looked at.
//!
//! Without chromedriver the tests say so and skip, unless `CONNECT_HUB_REQUIRE_BROWSER=1` (set by
//! `.ci/run`), where a missing browser is a failure.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};

use crate::helpers::{forwarding, spawn_app, spawn_app_with, ADMIN_EMAIL, ADMIN_PASSWORD};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    shots: PathBuf,
    shot_count: usize,
    _profile: tempfile::TempDir,
}

fn find_exe(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

impl Browser {
    /// Start chromedriver and a headless Chromium session, or `None` (skip) when they are not
    /// installed and not required.
    pub async fn start(test: &str) -> Option<Browser> {
        let required = std::env::var("CONNECT_HUB_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        let (Some(driver), Some(chromium)) =
            (find_exe(&["chromedriver"]), find_exe(&["chromium", "chromium-browser", "google-chrome"]))
        else {
            assert!(!required, "CONNECT_HUB_REQUIRE_BROWSER=1 but chromium / chromedriver are not installed (apt-get install chromium chromium-driver)");
            eprintln!("SKIPPED {test}: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            // Its own process group, so that dropping the browser ends chromium's processes too.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let res: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = res["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("a WebDriver session: {res}")).to_owned();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots").join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            driver: child,
            http,
            session: format!("{base}/session/{id}"),
            shots,
            shot_count: 0,
            _profile: profile,
        })
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    pub async fn goto(&mut self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
        self.screenshot("goto").await;
    }

    pub async fn current_url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Wait (up to 10 s) for an element matching `css` and return its id.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .cmd(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css })))
                .await;
            if let Some(id) = v[ELEMENT_KEY].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element `{css}` on {}", self.current_url().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&mut self, css: &str) {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/click"), Some(json!({}))).await;
        let name: String = css.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        self.screenshot(&format!("after-click-{}", name.trim_matches('-'))).await;
    }

    pub async fn type_into(&mut self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({ "text": text }))).await;
    }

    /// Empty a text field.
    pub async fn clear(&mut self, css: &str) {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/clear"), Some(json!({}))).await;
    }

    /// A form field's current value.
    pub async fn value(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{el}/property/value"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Run `script` in the page (`arguments[0]`… are `args`) and return what it returns.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// How many elements match `css` now (no waiting).
    pub async fn count(&self, css: &str) -> usize {
        let v =
            self.cmd(reqwest::Method::POST, "/elements", Some(json!({ "using": "css selector", "value": css }))).await;
        v.as_array().map_or(0, Vec::len)
    }

    /// Sign in to the console as the test admin (made first).
    pub async fn sign_in(&mut self, app: &crate::helpers::TestApp) {
        app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        self.goto(&format!("{}/admin/login", app.addr)).await;
        self.type_into("#email", ADMIN_EMAIL).await;
        self.type_into("#password", ADMIN_PASSWORD).await;
        self.click("#sign-in").await;
    }

    /// Resize the window (e.g. to a phone's width) for the screenshots that follow.
    pub async fn resize(&mut self, width: u32, height: u32) {
        self.cmd(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// Whether the element matching `css` fits inside its parent and the page has no sideways
    /// scroll: what "the table fits its card" means on screen.
    pub async fn fits(&self, css: &str) -> bool {
        self.find(css).await;
        let script = "const e = document.querySelector(arguments[0]); \
            return e.scrollWidth <= e.parentElement.clientWidth + 1 \
            && document.documentElement.scrollWidth <= window.innerWidth + 1;";
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [css] }))).await
            == Value::Bool(true)
    }

    pub async fn refresh(&mut self) {
        self.cmd(reqwest::Method::POST, "/refresh", Some(json!({}))).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Save a PNG of the current page as `NN-name.png`.
    pub async fn screenshot(&mut self, name: &str) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        if let Some(png) = v.as_str().and_then(|b| STANDARD.decode(b).ok()) {
            self.shot_count += 1;
            let _ = std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.shot_count)), png);
        }
    }

    /// The process group of chromedriver and the chromium it started.
    pub fn process_group(&self) -> u32 {
        self.driver.id()
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
        // Drop ends the processes.
    }
}

/// On every path (a passing test, a failed assert, a panic), chromedriver and every chromium
/// process it started are killed: they share chromedriver's process group.
impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn a_person_connects_snapinspect_in_a_real_browser_and_sees_the_company() {
    let app = spawn_app().await;
    let Some(mut browser) = Browser::start("connect_allow").await else { return };
    browser.goto(&format!("{}/", app.addr)).await;
    browser.click("#connect-snapinspect").await;
    assert!(browser.current_url().await.starts_with(&app.fake_addr), "on SnapInspect's page");
    browser.click("#allow").await;
    let linked = browser.text("#linked-company").await;
    browser.screenshot("result").await;
    assert!(linked.contains("Harbour View Realty"), "{linked}");
    assert!(linked.contains("6847"), "{linked}");
    let url = browser.current_url().await;
    assert_eq!(url, format!("{}/connect/snapinspect/done", app.addr), "a clean URL, no tokens");
    browser.quit().await;
    assert_eq!(app.connection_count().await, 1);
}

#[tokio::test]
async fn a_person_who_clicks_deny_is_told_nothing_was_connected_and_can_try_again() {
    let app = spawn_app().await;
    let Some(mut browser) = Browser::start("connect_deny").await else { return };
    browser.goto(&format!("{}/", app.addr)).await;
    browser.click("#connect-snapinspect").await;
    browser.click("#deny").await;
    let reason = browser.text("#reason").await;
    assert!(reason.contains("chose not to allow"), "{reason}");
    browser.click("#try-again").await;
    assert!(browser.current_url().await.starts_with(&app.fake_addr), "try again goes back to SnapInspect");
    browser.quit().await;
    assert_eq!(app.connection_count().await, 0);
}

#[tokio::test]
async fn an_admin_exchanges_a_connection_and_replays_a_dead_event_in_a_real_browser() {
    let app = spawn_app_with(|v| {
        forwarding(v);
        v.insert("WORKER_ENABLED".into(), "true".into());
    })
    .await;
    let Some(mut b) = Browser::start("admin").await else { return };

    // An end user connects in this browser.
    b.goto(&format!("{}/", app.addr)).await;
    b.click("#connect-snapinspect").await;
    b.click("#allow").await;
    assert!(b.text("#linked-company").await.contains("Harbour View Realty"));

    // A webhook whose inspection cannot be read ends up dead (a failing delivery makes only
    // its delivery dead; the event itself is processed).
    for _ in 0..3 {
        app.fake.push_inspection_fault(500);
    }
    let event = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":77,"iCompanyID":6847}"#).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.event(&event).await.state != "dead" {
        assert!(Instant::now() < deadline, "the event died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The admin signs in.
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.goto(&format!("{}/admin", app.addr)).await;
    assert!(b.current_url().await.contains("/admin/login"), "sent to sign in first");
    b.type_into("#email", ADMIN_EMAIL).await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("#sign-in").await;
    assert_eq!(b.text("#dead-count").await, "1");

    // Finds the connection the connect flow made, and exchanges it now.
    b.click("a[href='/admin/connections']").await;
    b.click("#connections tbody a").await;
    // The tokens the connect link carried were exchanged in the background right after connecting.
    assert!(b.text("#callback-tokens").await.contains("exchanged"), "the connect link's tokens were exchanged");
    assert_eq!(app.fake.exchanges(), 1);
    let before = b.text("#last-exchange").await;
    assert!(before.contains("UTC"), "{before}");
    b.click("#exchange-now").await;
    assert!(b.text("#flash").await.contains("Exchanged"));
    let last = b.text("#last-exchange").await;
    assert!(last.contains("UTC"), "{last}");
    assert_eq!(app.fake.exchanges(), 2);

    // Replays the dead event from the dashboard's link, and sees it processed.
    b.click("a[href='/admin']").await;
    b.click("a[href='/admin/events?status=dead']").await;
    b.click("table.events tbody a").await;
    assert_eq!(b.text("#event-status").await, "dead");
    b.click("#replay").await;
    assert!(b.text("#flash").await.contains("Queued again"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        b.refresh().await;
        if b.text("#event-status").await == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "the replayed event was processed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot("replayed-done").await;
    // The audit log and the fire-webhook confirmation fit at a laptop's width and at a phone's.
    let failing = app
        .add_credentials(
            connect_hub::domain::Provider::Signicat,
            connect_hub::client_credentials::CredentialsInput {
                client_id: "id".into(),
                token_url: Some(
                    "http://127.0.0.1:9/a/rather/long/path/to/a/token/endpoint/that/does/not/answer".into(),
                ),
                scope: Some("identify".into()),
                ..Default::default()
            },
            "secret",
        )
        .await;
    let _ = app.state.tokens.token(&failing).await;
    for (width, height) in [(1280, 900), (375, 812)] {
        b.resize(width, height).await;
        b.goto(&format!("{}/admin/audit", app.addr)).await;
        assert!(b.fits("table.audit").await, "the audit table fits its card at {width} px");
        b.screenshot(&format!("audit-{width}")).await;
        b.goto(&format!("{}/admin", app.addr)).await;
        assert!(b.fits("main").await, "the dashboard fits at {width} px");
        b.screenshot(&format!("dashboard-{width}")).await;
        b.goto(&format!("{}/fire-webhook", app.fake_addr)).await;
        b.click("button.allow").await;
        assert!(b.text("#fire-result").await.contains("the hub answered HTTP 200"));
        assert!(b.fits("#sent").await, "the fire-webhook confirmation fits at {width} px");
        b.screenshot(&format!("fire-webhook-{width}")).await;
    }
    // The console on a phone.
    b.resize(390, 844).await;
    b.goto(&format!("{}/admin", app.addr)).await;
    b.goto(&format!("{}/admin/events", app.addr)).await;
    b.click("#sign-out").await;
    assert!(b.current_url().await.contains("/admin/login"));
    b.quit().await;
}

/// The organisation's own app, as a tiny local site: a settings page with the connect link, and
/// the page the hub sends the person back to.
fn org_app(listener: std::net::TcpListener, connect_url: String) {
    use actix_web::{web, HttpRequest, HttpResponse};
    let page = |body: String| {
        HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
            "<!doctype html><html><head><meta name=\"viewport\" content=\"width=device-width\"><title>Acme app</title></head><body>{body}</body></html>"
        ))
    };
    let server = connect_hub::demo::fakes::serve(
        move |cfg: &mut web::ServiceConfig| {
            let link = connect_url.clone();
            cfg.route(
                "/settings",
                web::get().to(move || {
                    let link = link.clone();
                    async move { page(format!("<h1>Acme settings</h1><p><a id=\"connect\" href=\"{link}\">Connect SnapInspect</a></p>")) }
                }),
            )
            .route(
                "/back",
                web::get().to(move |req: HttpRequest| async move {
                    let q: std::collections::BTreeMap<String, String> =
                        url::form_urlencoded::parse(req.query_string().as_bytes()).into_owned().collect();
                    let safe = |k: &str| q.get(k).map(|v| v.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()).unwrap_or_default();
                    page(format!(
                        "<h1>Back in Acme</h1><p>Status: <span id=\"status\">{}</span></p><p>Connection: <span id=\"connection\">{}</span></p>",
                        safe("status"),
                        safe("connection_id")
                    ))
                }),
            );
        },
        listener,
    )
    .unwrap();
    tokio::spawn(server);
}

#[tokio::test]
async fn a_person_connects_from_the_organisations_app_and_lands_back_in_it() {
    let org_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let org = format!("http://{}", org_listener.local_addr().unwrap());
    let logo = tempfile::tempdir().unwrap();
    let logo_path = logo.path().join("logo.svg");
    std::fs::write(
        &logo_path,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><circle cx="14" cy="14" r="12" fill="#0a7f3f"/></svg>"##,
    )
    .unwrap();
    let app = spawn_app_with(|v| {
        v.insert("CONNECT_RETURN_ORIGINS".into(), org.clone());
        v.insert("BRAND_NAME".into(), "Acme Inspections".into());
        v.insert("BRAND_COLOR".into(), "#0a7f3f".into());
        v.insert("BRAND_LOGO".into(), logo_path.display().to_string());
        v.insert("BRAND_SUPPORT_URL".into(), "https://help.acme.example/".into());
    })
    .await;
    let (_, key) = app.api_key("acme-app").await;
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/connect-sessions", app.addr))
        .bearer_auth(&key)
        .json(&json!({"end_user_id": "tenant-42", "tags": {"plan": "pro"}, "return_url": format!("{org}/back")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let connect_url = res.json::<Value>().await.unwrap()["connect_url"].as_str().unwrap().to_owned();
    org_app(org_listener, connect_url.clone());

    let Some(mut b) = Browser::start("connect_from_app").await else { return };
    b.goto(&format!("{org}/settings")).await;
    b.click("#connect").await;
    // The link's own page names the organisation; only its button spends the link.
    assert!(b.text("#asks").await.contains("Acme Inspections asks you to connect your SnapInspect account"));
    b.screenshot("connect-link-page-1280").await;
    b.click("#continue").await;
    assert!(b.current_url().await.starts_with(&app.fake_addr), "on SnapInspect's page");
    b.click("#allow").await;
    assert_eq!(b.text("#status").await, "connected");
    let id = app.connection_id_for(6847).await;
    assert_eq!(b.text("#connection").await, id.as_str());
    let back = b.current_url().await;
    assert!(back.starts_with(&format!("{org}/back?")) && !back.contains("token"), "{back}");
    b.screenshot("back-in-the-app-1280").await;
    assert_eq!(app.state.store.connection(&id).await.unwrap().unwrap().end_user_id.as_deref(), Some("tenant-42"));

    // The hub's own end-user pages, branded, at both widths: the used link and the start page.
    for (width, height) in [(1280, 900), (375, 812)] {
        b.resize(width, height).await;
        b.goto(&connect_url).await;
        assert!(b.text("#reason").await.contains("already been used"));
        assert!(b.text("#brand-name").await.contains("Acme Inspections"));
        b.screenshot(&format!("used-link-{width}")).await;
        b.goto(&format!("{}/", app.addr)).await;
        assert!(b.text("h1").await.contains("Acme Inspections wants access to your SnapInspect account"));
        b.screenshot(&format!("branded-start-{width}")).await;
        b.goto(&format!("{org}/back?status=connected&connection_id={}", id.as_str())).await;
        b.screenshot(&format!("back-in-the-app-{width}")).await;
    }
    b.quit().await;
}
