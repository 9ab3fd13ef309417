//! `connect-hub demo` as a newcomer runs it: "Connect from your app" through the fake your-app
//! page in a real browser, the return origins it allows, and a restart that keeps it working.

use std::{
    io::BufRead,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::browser::Browser;

/// A `demo` (or `fake-snapinspect`) process, killed (and reaped) when dropped, however the test
/// ends.
struct Demo {
    child: Child,
    base: String,
    data: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Demo {
    /// Start `demo` on `data` and `port` with `args` (and `env`) added, once it has printed the
    /// line for the CLI (it is serving by then).
    fn start(data: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
            .args(["demo", "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .args(args)
            .env_remove("ENCRYPTION_KEY")
            .env_remove("DATABASE_URL")
            .env_remove("CONNECT_HUB_CONFIG")
            .env_remove("CONNECT_RETURN_ORIGINS")
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let demo = Demo { child, base: format!("http://127.0.0.1:{port}"), data: data.to_owned() };
        // Its stdout is read to the end on a thread of its own: a pipe closed after the line we
        // wait for would make the demo's next line fail, and the demo with it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("CONNECT_HUB_CONFIG=") {
                    let _ = tx.send(());
                }
            }
        });
        assert!(rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(), "the demo started");
        demo
    }

    /// `kill -TERM` and wait for it to exit.
    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the demo stopped cleanly: {status}");
    }

    /// The CLI on this demo's database and keys, as its printed `export` line sets it up.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_connect-hub"))
            .args(args)
            .env_remove("ENCRYPTION_KEY")
            .env_remove("DATABASE_URL")
            .env("CONNECT_HUB_CONFIG", self.data.join("connect-hub.toml"))
            .output()
            .unwrap()
    }

    async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&format!("sqlite://{}", self.data.join("connect-hub.db").display())).await.unwrap()
    }

    /// Connect `company` through the hub's own start page, as a browser clicking Allow would.
    async fn connect(&self, company: i64) {
        let browser =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let res = browser.get(format!("{}/connect/snapinspect", self.base)).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let authorize = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
        let q: std::collections::BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
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
        let back = browser.post(post).form(&form).send().await.unwrap();
        let callback = back.headers()["location"].to_str().unwrap().to_owned();
        let res = browser.get(callback).send().await.unwrap();
        assert_eq!(res.status(), 303, "the callback took the tokens");
        assert_eq!(res.headers()["location"], "/connect/snapinspect/done");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_newcomer_connects_from_the_demos_own_your_app_page_in_a_real_browser_and_sees_what_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("data"), free_port(), &[], &[]);
    let Some(mut b) = Browser::start("demo_your_app").await else { return };
    b.goto(&format!("{}/fake/app/", demo.base)).await;
    b.click("#connect").await;
    // The hub's own connect-link page, for the end user the app named.
    assert!(b.current_url().await.starts_with(&format!("{}/connect/s/", demo.base)));
    assert!(b.text("#for").await.contains("Harbour View Realty"));
    b.click("#continue").await;
    assert!(b.current_url().await.starts_with(&format!("{}/fake/snapinspect/", demo.base)), "at SnapInspect");
    b.click("#allow").await;
    assert_eq!(b.text("#status").await, "connected");
    assert_eq!(b.text("#end-user").await, "tenant-42");
    let shown_id = b.text("#connection-id").await;
    let confirmed = b.text("#confirmed").await;
    b.screenshot("back-in-your-app").await;
    let back = b.current_url().await;
    assert!(back.starts_with(&format!("{}/fake/app/back?", demo.base)), "{back}");
    assert!(!back.contains("chk_") && !back.contains("token"), "no API key or token in the URL: {back}");

    let pool = demo.pool().await;
    let (id, end_user): (String, Option<String>) =
        sqlx::query_as("select id, end_user_id from connections where provider = 'snapinspect' and company_id = 6847")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(shown_id, id);
    assert_eq!(end_user.as_deref(), Some("tenant-42"));
    assert_eq!(
        confirmed,
        "Confirmed with GET /api/v1/connections?end_user_id=…: Harbour View Realty, company 6847, status active, end user tenant-42."
    );

    // Deny comes back as `denied`, on the same page.
    b.goto(&format!("{}/fake/app/", demo.base)).await;
    b.click("#connect").await;
    b.click("#continue").await;
    b.click("#deny").await;
    assert_eq!(b.text("#status").await, "denied");
    b.screenshot("denied-in-your-app").await;
    // A refusal from the API is shown on the form, with what was typed kept.
    b.goto(&format!("{}/fake/app/", demo.base)).await;
    b.type_into("#display_name", " and more").await;
    b.clear("#end_user_id").await;
    b.click("#connect").await;
    assert_eq!(b.text("#app-error").await, "The hub answered 400: end_user_id must not be empty");
    assert_eq!(b.value("#display_name").await, "Harbour View Realty and more", "what was typed is kept");
    b.screenshot("refused-in-your-app").await;
    b.quit().await;
}

#[tokio::test]
async fn the_demo_allows_its_own_origin_and_adds_those_of_return_origin_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(
        &dir.path().join("data"),
        free_port(),
        &["--return-origin", "https://app.example.com", "--return-origin", "http://127.0.0.1:3000"],
        &[("CONNECT_RETURN_ORIGINS", "https://staging.example.com")],
    );
    // The README's walkthrough: a key from the CLI, then a session with a return URL.
    let out = demo.cli(&["api-key", "create", "--name", "my-app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let http = reqwest::Client::new();
    let session = |return_url: String| {
        http.post(format!("{}/api/v1/connect-sessions", demo.base))
            .bearer_auth(&key)
            .json(
                &json!({ "end_user_id": "tenant-42", "display_name": "Harbour View Realty", "return_url": return_url }),
            )
            .send()
    };
    for allowed in [
        format!("{}/fake/app/back?tenant=42", demo.base),
        "https://app.example.com/settings/integrations?tenant=42".to_owned(),
        "http://127.0.0.1:3000/back".to_owned(),
        "https://staging.example.com/settings".to_owned(),
    ] {
        let res = session(allowed.clone()).await.unwrap();
        assert_eq!(res.status(), 201, "{allowed} is allowed");
        let body: Value = res.json().await.unwrap();
        assert!(body["connect_url"].as_str().unwrap().starts_with(&format!("{}/connect/s/", demo.base)));
    }
    let res = session("https://app.example.com.evil.com/settings".into()).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["message"], "return_url's origin is not one of CONNECT_RETURN_ORIGINS");
}

#[tokio::test]
async fn a_bad_return_origin_stops_the_demo_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["demo", "--bind", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--return-origin", "app.example.com"])
        .env_remove("CONNECT_RETURN_ORIGINS")
        .env_remove("CONNECT_HUB_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CONNECT_RETURN_ORIGINS") && err.contains("app.example.com"), "{err}");
}

#[tokio::test]
async fn a_restarted_demo_still_exchanges_the_tokens_its_fake_snapinspect_issued_before() {
    let dir = tempfile::tempdir().unwrap();
    let (data, port) = (dir.path().join("data"), free_port());
    let demo = Demo::start(&data, port, &[], &[]);
    demo.connect(6847).await;
    // The connect link's pair is exchanged in the background right after connecting: wait for it,
    // so the pair the hub holds is the one the fake issued last.
    let pool = demo.pool().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let row: Option<(String, i64)> = sqlx::query_as(
            "select id, token_version from connections where provider = 'snapinspect' and last_exchange_at is not null",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some((id, _)) = row {
            break id;
        }
        assert!(Instant::now() < deadline, "the connect link's tokens were exchanged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    pool.close().await;
    demo.stop();

    let demo = Demo::start(&data, port, &[], &[]);
    let out = demo.cli(&["connections", "refresh", &id]);
    assert!(out.status.success(), "exchange after a restart: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).trim().starts_with("si_at_"));
    let pool = demo.pool().await;
    let (status, last_error): (String, Option<String>) =
        sqlx::query_as("select status, last_error from connections where id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), last_error), ("active", None));
    // And once more: the pair just issued after the restart is kept too.
    let out = demo.cli(&["connections", "refresh", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn the_demos_fire_webhook_page_links_its_receiver_and_the_standalone_fake_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("data"), free_port(), &[], &[]);
    let page =
        reqwest::get(format!("{}/fake/snapinspect/fire-webhook", demo.base)).await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("href=\"{}/fake/receiver/\" id=\"receiver-link\"", demo.base)), "{page}");
    assert_eq!(reqwest::get(format!("{}/fake/receiver/", demo.base)).await.unwrap().status(), 200);
    drop(demo);

    // `fake-snapinspect` alone, posting to a `serve` (which has no /fake/receiver/).
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["fake-snapinspect", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--webhook-url", "http://127.0.0.1:8080/webhooks/snapinspect/secret"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed and reaped when the test ends, however it ends.
    let _fake = Demo { child, base: String::new(), data: PathBuf::new() };
    let url = format!("http://127.0.0.1:{port}/fire-webhook");
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        if let Ok(res) = reqwest::get(&url).await {
            break res.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the standalone fake started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(page.contains("href=\"http://127.0.0.1:8080/admin/events\""), "{page}");
    assert!(!page.contains("/fake/receiver/"), "no link to a receiver serve does not have: {page}");
}
