//! What a newcomer tripped over (issue 13, item 5): error chains that read as one sentence, console
//! errors that stay in the console, webhooks that can never match, and the small things.

use std::net::TcpListener;

use connect_hub::{client_credentials::CredentialsInput, domain::Provider};

use crate::helpers::{spawn_app_with, TestApp};

/// Undo the HTML escaping a template applies, so a test can look for the sentence a person reads.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// A Signicat connection whose token URL is `url`, in an app that gives up on calls after 300 ms.
async fn signicat_at(url: &str) -> (TestApp, connect_hub::domain::ConnectionId) {
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

/// The console's "Test" button, the connection's last error, the audit log and the API all say
/// `sentence`, and the page says it after the provider's name, once.
async fn assert_said_everywhere(app: &TestApp, id: &connect_hub::domain::ConnectionId, sentence: &str) {
    let csrf = app.sign_in().await;
    let res = app.admin_post(&format!("/admin/connections/{id}/test"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let page = unescape(&app.page(&format!("/admin/connections/{id}")).await);
    assert!(page.contains(&format!("Signicat did not issue a token: {sentence}")), "the flash: {page}");
    assert!(page.contains(&format!("{sentence} (")), "the last error: {page}");

    let c = app.state.store.connection(id).await.unwrap().unwrap();
    assert_eq!(c.last_error.as_deref(), Some(sentence));
    let audit = app.state.store.recent_failures(10).await.unwrap();
    assert_eq!(audit.first().and_then(|a| a.detail.as_deref()), Some(sentence), "the audit log");

    let (_, key) = app.api_key("reader").await;
    let listed: serde_json::Value = app.api_get("/api/v1/connections", Some(&key)).await.json().await.unwrap();
    assert_eq!(listed["connections"][0]["last_error"], sentence, "the API");
}

#[tokio::test]
async fn a_refused_connection_reads_as_one_sentence_everywhere() {
    // A port nobody listens on: bind, note it, let go.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/oauth/connect/token");
    let (app, id) = signicat_at(&url).await;
    assert_said_everywhere(&app, &id, &format!("the token request to {url} could not connect")).await;
}

#[tokio::test]
async fn a_token_server_that_never_answers_reads_as_one_sentence_everywhere() {
    // The kernel accepts the connection into the backlog; nobody ever reads or answers it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/oauth/connect/token", silent.local_addr().unwrap());
    let (app, id) = signicat_at(&url).await;
    assert_said_everywhere(&app, &id, &format!("the token request to {url} timed out")).await;
    drop(silent);
}

/// A `demo` process, killed when the test ends however it ends.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_prints_the_line_that_lets_the_cli_use_its_database_and_keys() {
    use std::{
        io::BufRead,
        process::{Command, Stdio},
        sync::mpsc,
        time::{Duration, Instant},
    };
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["demo", "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("demo-data"))
        .env_remove("ENCRYPTION_KEY")
        .env_remove("DATABASE_URL")
        .env_remove("CONNECT_HUB_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let export = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the demo prints an export line before the deadline");
        if let Some(rest) = line.trim().strip_prefix("export CONNECT_HUB_CONFIG=") {
            break rest.to_owned();
        }
    };
    assert!(std::path::Path::new(&export).is_absolute(), "works from any directory: {export}");

    // From another directory, with nothing but that line, the CLI sees the demo's connections.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["connections", "list"])
        .current_dir(elsewhere.path())
        .env_remove("ENCRYPTION_KEY")
        .env_remove("DATABASE_URL")
        .env("CONNECT_HUB_CONFIG", &export)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["Snapdocs (demo, fake)", "Signicat (demo, fake)", "Docplanner (demo, fake)"] {
        assert!(stdout.contains(name), "{stdout}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the file holds the demo's keys: only its owner may read it");
    }
}

#[tokio::test]
async fn a_bad_event_filter_shows_the_list_with_the_message_beside_the_field() {
    let app = crate::helpers::spawn_app().await;
    app.sign_in().await;
    for (query, field, words) in [
        ("company=Harbour", "company-error", "a company id is a positive integer"),
        ("status=bogus", "status-error", "bogus"),
        ("after=garbage", "page-error", "This page link is broken"),
        ("before=garbage&company=7", "page-error", "This page link is broken"),
    ] {
        let res = app.get(&format!("/admin/events?{query}")).await;
        assert_eq!(res.status(), 400, "{query}");
        let page = unescape(&res.text().await.unwrap());
        let beside = page.split(&format!("id=\"{field}\">")).nth(1).unwrap_or_else(|| panic!("{query}: {page}"));
        assert!(beside.split('<').next().unwrap().contains(words), "{query}: {page}");
        // Still the events list, in the console, with its navigation.
        assert!(page.contains("<h1>Events</h1>"), "{query}");
        assert!(page.contains("href=\"/admin/audit\""), "{query}");
        assert!(!page.contains("Query deserialize error"), "{query}");
        assert!(!page.contains("Start again"), "{query}");
    }
    // A good filter is no error.
    assert_eq!(app.get("/admin/events?company=7&status=dead").await.status(), 200);
}

#[tokio::test]
async fn a_bad_connection_status_shows_the_list_with_the_message_beside_it() {
    let app = crate::helpers::spawn_app().await;
    app.connect_company(6847).await;
    app.sign_in().await;
    let res = app.get("/admin/connections?status=bogus").await;
    assert_eq!(res.status(), 400);
    let page = unescape(&res.text().await.unwrap());
    let beside = page.split("id=\"status-error\">").nth(1).expect("a message beside the status");
    assert!(beside.split('<').next().unwrap().contains("bogus"), "{page}");
    assert!(page.contains("<h1>Connections</h1>") && page.contains("Harbour View Realty"), "the list, unfiltered");
    let good = app.get("/admin/connections?status=active").await;
    assert_eq!(good.status(), 200);
    assert!(!good.text().await.unwrap().contains("status-error"));
}

#[tokio::test]
async fn console_errors_stay_in_the_console_with_a_way_back_to_the_section() {
    let app = crate::helpers::spawn_app().await;
    app.sign_in().await;
    for (path, status, back) in [
        ("/admin/api-keys/key_nonsense/revoke", 404, "/admin/api-keys"),
        ("/admin/audit?before=garbage", 400, "/admin/audit"),
        ("/admin/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa", 404, "/admin/connections"),
        ("/admin/events/nonsense", 404, "/admin/events"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), status, "{path}");
        let page = res.text().await.unwrap();
        assert!(page.contains("connect-hub admin"), "{path}: {page}");
        assert!(page.contains("href=\"/admin/events\">Events</a>"), "the console's navigation: {path}");
        assert!(page.contains(&format!("href=\"{back}\" id=\"error-back\"")), "{path}: {page}");
        assert!(!page.contains("Start again"), "{path}");
        assert!(!page.contains("Query deserialize error"), "{path}: {page}");
    }
}

#[tokio::test]
async fn the_sign_in_429_page_links_back_to_sign_in() {
    let app = crate::helpers::spawn_app().await;
    app.create_admin(crate::helpers::ADMIN_EMAIL, crate::helpers::ADMIN_PASSWORD).await;
    let client = crate::helpers::browser_client();
    let mut last = None;
    for _ in 0..5 {
        last = Some(app.try_sign_in(&client, crate::helpers::ADMIN_EMAIL, "a wrong guess!!").await);
    }
    let res = last.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let page = res.text().await.unwrap();
    assert!(page.contains("href=\"/admin/login\" id=\"error-back\""), "{page}");
    assert!(!page.contains("Start again"));
    assert!(!page.contains("href=\"/admin/events\""), "no console navigation for someone not signed in");
}

#[tokio::test]
async fn end_user_error_pages_show_no_status_numbers_or_backticks() {
    let app = crate::helpers::spawn_app().await;
    // A callback without its parameters: an end-user page (after the redirect to a clean URL).
    let res = app.get("/connect/snapinspect/callback?state=x").await;
    let res = app.follow(&app.client, res).await;
    assert!(res.status().is_client_error());
    let page = res.text().await.unwrap();
    assert!(page.contains("id=\"reason\""), "{page}");
    assert!(!page.contains("HTTP 4"), "{page}");
    assert!(!page.contains('`'), "{page}");
}

#[tokio::test]
async fn events_that_can_never_match_are_rejected_and_still_replayable() {
    let app = crate::helpers::spawn_app().await;
    let none = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1}"#).await;
    let words = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":"Harbour"}"#).await;
    let zero = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":0}"#).await;
    let waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":4,"iCompanyID":9999}"#).await;
    for id in [&none, &words, &zero] {
        assert_eq!(app.event(id).await.state, "rejected", "{id}");
    }
    assert_eq!(app.event(&waiting).await.state, "unmatched");

    app.sign_in().await;
    let dashboard = app.page("/admin").await;
    assert!(dashboard.contains("id=\"rejected-count\">3</span> rejected events</a>"), "{dashboard}");
    assert!(dashboard.contains("id=\"unmatched-count\">1</span> unmatched event</a>"), "one event, singular");
    assert!(dashboard.contains("id=\"dead-count\">0</span> dead events</a>"));
    let listed = app.get("/admin/events?status=rejected").await;
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await.unwrap();
    assert!(listed.contains(none.as_str()) && !listed.contains(waiting.as_str()));

    // Replayed, it is processed without a connection.
    let page = app.page(&format!("/admin/events/{none}")).await;
    assert!(page.contains("id=\"replay\"") && page.contains("id=\"dismiss\""), "{page}");
    let csrf = crate::helpers::csrf_from(&page);
    assert_eq!(app.admin_post(&format!("/admin/events/{none}/replay"), &[("csrf", &csrf)]).await.status(), 303);
    assert_eq!(app.event(&none).await.state, "pending");
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&none).await.state, "done");
}

#[tokio::test]
async fn unmatched_and_rejected_events_can_be_dismissed_and_others_cannot() {
    let (app, company) = (crate::helpers::spawn_app().await, 6847);
    let waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":4,"iCompanyID":9999}"#).await;
    let rejected = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":5}"#).await;
    let csrf = app.sign_in().await;
    let page = app.page(&format!("/admin/events/{waiting}")).await;
    assert!(page.contains("id=\"dismiss\"") && !page.contains("id=\"replay\""), "{page}");
    for id in [&waiting, &rejected] {
        let res = app.admin_post(&format!("/admin/events/{id}/dismiss"), &[("csrf", &csrf)]).await;
        assert_eq!(res.status(), 303);
        assert!(app.state.store.event(id).await.unwrap().is_none(), "{id} is gone");
    }
    let audit = app.state.store.audit_entries(None, None, 5).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "event_dismissed").count(), 2);
    assert!(audit.iter().any(|a| a.detail.as_deref() == Some(&format!("event {waiting} (was unmatched)")[..])));

    // A matched event stays, and says why.
    app.connect_company(company).await;
    let matched = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":6,"iCompanyID":6847}"#).await;
    let res = app.admin_post(&format!("/admin/events/{matched}/dismiss"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert!(app.state.store.event(&matched).await.unwrap().is_some());
    let page = app.page(&format!("/admin/events/{matched}")).await;
    assert!(page.contains("Not dismissed"), "{page}");
    assert!(!page.contains("id=\"dismiss\""));
    // Without the form's token, nothing happens.
    let other = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":7}"#).await;
    assert_eq!(app.admin_post(&format!("/admin/events/{other}/dismiss"), &[("csrf", "wrong")]).await.status(), 403);
    assert!(app.state.store.event(&other).await.unwrap().is_some());
}

#[tokio::test]
async fn waiting_events_expire_after_the_retention_and_no_sooner() {
    let app = crate::helpers::spawn_app().await;
    let old_waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":9999}"#).await;
    let old_rejected = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2}"#).await;
    let new_waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":9999}"#).await;
    let now = connect_hub::time::now_ms();
    let retention = 7 * 86_400_000;
    for id in [&old_waiting, &old_rejected] {
        sqlx::query("update events set received_at = $1 where public_id = $2")
            .bind(now - retention - 1)
            .bind(id.as_str())
            .execute(app.state.store.pool())
            .await
            .unwrap();
    }
    // Exactly at the boundary: kept.
    sqlx::query("update events set received_at = $1 where public_id = $2")
        .bind(now - retention)
        .bind(new_waiting.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(app.state.store.purge_waiting_events(now - retention).await.unwrap(), 2);
    assert!(app.state.store.event(&old_waiting).await.unwrap().is_none());
    assert!(app.state.store.event(&old_rejected).await.unwrap().is_none());
    assert!(app.state.store.event(&new_waiting).await.unwrap().is_some());
}

#[tokio::test]
async fn a_client_credentials_page_shows_no_snapinspect_fields_and_says_not_yet_used() {
    let app = crate::helpers::spawn_app().await;
    let fake = connect_hub::fake::token_server::FakeTokenServer::snapdocs("sd", "sd-secret");
    let url = format!("{}/oauth/token", crate::helpers::spawn_token_server(&fake).await);
    let input = CredentialsInput { client_id: "sd".into(), token_url: Some(url), ..Default::default() };
    let id = app.add_credentials(Provider::Snapdocs, input, "sd-secret").await;
    app.sign_in().await;
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("id=\"status\">not yet used</span>"), "{page}");
    for snapinspect_only in ["<dt>Company</dt>", "<dt>Last exchange</dt>", "Recent events"] {
        assert!(!page.contains(snapinspect_only), "{snapinspect_only}");
    }
    let list = app.page("/admin/connections").await;
    assert!(list.contains(">not yet used</span>"), "{list}");

    // Once it has fetched a token it is simply active.
    app.state.tokens.token(&id).await.unwrap();
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("id=\"status\">active</span>"), "{page}");
    // The API keeps the stored status.
    let (_, key) = app.api_key("k").await;
    let listed: serde_json::Value = app.api_get("/api/v1/connections", Some(&key)).await.json().await.unwrap();
    assert_eq!(listed["connections"][0]["status"], "active");

    // A SnapInspect connection still shows its company, exchanges and events.
    app.connect_company(6847).await;
    let snap = app.connection_id_for(6847).await;
    let page = app.page(&format!("/admin/connections/{snap}")).await;
    for field in ["<dt>Company</dt>", "<dt>Last exchange</dt>", "Recent events"] {
        assert!(page.contains(field), "{field}");
    }
    assert!(page.contains("id=\"status\">active</span>"));
}

#[tokio::test]
async fn the_credentials_form_speaks_of_its_own_fields_not_cli_flags() {
    let app = crate::helpers::spawn_app().await;
    let csrf = app.sign_in().await;
    let form = app.page("/admin/connections/new").await;
    assert!(!form.contains("production (default)"), "one production, not two");
    assert_eq!(form.matches(">production</option>").count(), 1);
    for (fields, field, words) in [
        (vec![("provider", "custom"), ("auth", "post")], "token_url", "a custom provider needs a token URL"),
        (
            vec![("provider", "custom"), ("token_url", "https://auth.example.com/t")],
            "auth",
            "needs a client authentication",
        ),
        (vec![("provider", "signicat")], "scope", "Signicat needs the scopes to ask for"),
        (vec![("provider", "docplanner")], "domain", "Docplanner needs the country's domain"),
        (
            vec![("provider", "snapdocs"), ("environment", "staging")],
            "environment",
            "a demo and a production environment",
        ),
    ] {
        let mut all = vec![("csrf", csrf.as_str()), ("name", "x"), ("client_id", "id"), ("client_secret", "s")];
        all.extend(fields);
        let res = app.admin_post("/admin/connections/new", &all).await;
        assert_eq!(res.status(), 400, "{field}");
        let page = unescape(&res.text().await.unwrap());
        let beside = page.split(&format!("id=\"{field}-error\">")).nth(1).unwrap_or_else(|| panic!("{field}: {page}"));
        let message = beside.split('<').next().unwrap();
        assert!(message.contains(words), "{field}: {message}");
        assert!(!message.contains("--"), "no command-line flags in a web form: {message}");
        assert!(!page.contains("id=\"form-error\""), "{field}: shown beside the field, not above the form");
    }
    // An error about no one field (here the name, which has no slot of its own) goes above the form.
    let fields =
        [("csrf", csrf.as_str()), ("name", " "), ("provider", "snapdocs"), ("client_id", "id"), ("client_secret", "s")];
    let res = app.admin_post("/admin/connections/new", &fields).await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    let above = page.split("id=\"form-error\">").nth(1).unwrap_or_else(|| panic!("shown above the form: {page}"));
    assert!(above.starts_with("give the connection a name"), "{above}");
}

#[tokio::test]
async fn the_edit_form_shows_the_provider_as_text_not_an_input() {
    let app = crate::helpers::spawn_app().await;
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some("https://auth.example.com/token".into()),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Signicat, input, "secret").await;
    app.sign_in().await;
    let page = app.page(&format!("/admin/connections/{id}/edit")).await;
    assert!(page.contains("<p id=\"provider\" class=\"fixed\">Signicat"), "{page}");
    assert!(!page.contains("readonly"), "{page}");
    assert!(page.contains("<input type=\"hidden\" name=\"provider\" value=\"signicat\">"));
}

#[tokio::test]
async fn signing_out_says_so_on_the_sign_in_page() {
    let app = crate::helpers::spawn_app().await;
    let csrf = app.sign_in().await;
    let res = app.admin_post("/admin/logout", &[("csrf", &csrf)]).await;
    let page = app.page(&crate::helpers::location(&res)).await;
    assert!(page.contains("id=\"signed-out\">You are signed out."), "{page}");
    assert!(!app.page("/admin/login").await.contains("signed-out"), "only after signing out");
}

#[tokio::test]
async fn api_keys_show_active_and_revoking_asks_first() {
    let app = crate::helpers::spawn_app().await;
    let (id, key) = app.api_key("billing").await;
    let csrf = app.sign_in().await;
    let list = app.page("/admin/api-keys").await;
    let status = list.split(&format!("id=\"status-{id}\">")).nth(1).unwrap();
    assert!(status.starts_with("<span class=\"badge active\">active</span>"), "{status}");
    assert!(list.contains(&format!("href=\"/admin/api-keys/{id}/revoke\"")), "a link to a confirmation");
    assert!(!list.contains(&format!("action=\"/admin/api-keys/{id}/revoke\"")), "no one-click revoke");

    let confirm = app.page(&format!("/admin/api-keys/{id}/revoke")).await;
    assert!(confirm.contains("Revoke the API key billing?") && confirm.contains("id=\"confirm-revoke\""), "{confirm}");
    assert_eq!(app.api_get("/api/v1/connections", Some(&key)).await.status(), 200, "showing the page revokes nothing");
    let res = app.admin_post(&format!("/admin/api-keys/{id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.api_get("/api/v1/connections", Some(&key)).await.status(), 401);
    assert_eq!(app.get(&format!("/admin/api-keys/{id}/revoke")).await.status(), 404, "nothing left to revoke");
    let list = app.page("/admin/api-keys").await;
    assert!(list
        .split(&format!("id=\"status-{id}\">"))
        .nth(1)
        .unwrap()
        .starts_with("<span class=\"badge dead\">revoked"));
}

#[tokio::test]
async fn the_audit_log_shows_the_admins_email_and_the_time_apart_from_its_age() {
    let app = crate::helpers::spawn_app().await;
    app.sign_in().await;
    let page = app.page("/admin/audit").await;
    assert!(page.contains(&format!("<td class=\"actor\">{}</td>", crate::helpers::ADMIN_EMAIL)), "{page}");
    assert!(!page.contains("admin:"), "{page}");
    assert!(page.contains("<br><span class=\"muted\">0 s ago</span></td>") || page.contains("s ago</span></td>"));
}

#[tokio::test]
async fn refresh_failures_on_the_dashboard_name_the_connection() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (app, id) = signicat_at(&format!("http://127.0.0.1:{port}/token")).await;
    let _ = app.state.tokens.token(&id).await;
    app.sign_in().await;
    let page = app.page("/admin").await;
    assert!(page.contains(&format!("<a href=\"/admin/connections/{id}\">Signicat test</a>")), "{page}");
}

#[tokio::test]
async fn the_fire_webhook_page_and_the_receiver_link_to_each_other() {
    let app = crate::helpers::spawn_app().await;
    let page = reqwest::get(format!("{}/fire-webhook", app.fake_addr)).await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("href=\"{}/fake/receiver/\" id=\"receiver-link\"", app.addr)), "{page}");
    assert!(page.contains(&format!("href=\"{}/admin/events\"", app.addr)));
    let sent = reqwest::Client::new()
        .post(format!("{}/fire-webhook", app.fake_addr))
        .form(&[("type", "Create_Inspection"), ("company", "6847"), ("inspection", "5")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sent.contains("Sent Create_Inspection for company 6847: the hub answered HTTP 200."), "{sent}");
    assert!(sent.contains("<pre id=\"sent\">"), "the payload apart, where it can wrap");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let receiver = connect_hub::fake::receiver::FakeReceiver::new(None);
    tokio::spawn(connect_hub::fake::serve(receiver.configure(), listener).unwrap());
    let receiver = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(receiver.contains("href=\"/fake/snapinspect/fire-webhook\" id=\"fire-link\""), "{receiver}");
}
