//! The console's forms and lists agree with the API and the CLI (issue 21, items 3, 7, 8 and 9):
//! every text input is bounded alike, forms warn about filters that match nothing, one status
//! model on every screen, and sign-in counts only real attempts.

use connect_hub::{client_credentials::CredentialsInput, demo::token_server::FakeTokenServer, domain::Provider};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    api, browser_client, csrf_from, forwarding, spawn_app, spawn_app_with, spawn_app_with_a_retrying_delivery,
    spawn_token_server, unescape, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD,
};

/// The text a person reads in the element with this id (up to its first tag).
fn text_of(page: &str, id: &str) -> Option<String> {
    let after = page.split(&format!("id=\"{id}\"")).nth(1)?;
    let inner = after.split_once('>')?.1;
    Some(unescape(inner.split('<').next().unwrap_or_default()))
}

/// Every `<input>` a person types into on `page` (not hidden, checkbox or read-only), as written.
fn typed_inputs(page: &str) -> Vec<String> {
    page.split("<input")
        .skip(1)
        .map(|rest| rest.split('>').next().unwrap().to_owned())
        .filter(|i| !i.contains("type=\"hidden\"") && !i.contains("type=\"checkbox\"") && !i.contains("readonly"))
        .collect()
}

async fn json_call(app: &TestApp, method: Method, path: &str, key: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", app.addr))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_3000_character_connection_name_is_refused_in_the_console_and_on_the_command_line() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let long = "N".repeat(3000);
    let res = app
        .admin_post(
            "/admin/connections/new",
            &[
                ("csrf", &csrf),
                ("provider", "signicat"),
                ("name", &long),
                ("client_id", "id"),
                ("client_secret", "secret"),
                ("scope", "identify"),
                ("token_url", "http://127.0.0.1:9/token"),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    assert_eq!(
        text_of(&page, "name-error").as_deref(),
        Some("the connection name is 3000 characters long; the most is 200"),
        "beside the field"
    );
    assert!(page.contains("aria-describedby=\"name-error\""));
    assert_eq!(app.connection_count().await, 0, "nothing was added");

    // The command line goes through the same check.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(app.dir.path());
    for (k, v) in &app.vars {
        cmd.env(k, v);
    }
    let out = cmd
        .env("CLIENT_SECRET", "secret")
        .args(["connections", "add", "--provider", "signicat", "--name", &long, "--client-id", "id"])
        .args(["--scope", "identify", "--token-url", "http://127.0.0.1:9/token"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the connection name is 3000 characters long; the most is 200"), "{stderr}");
    assert_eq!(app.connection_count().await, 0);

    // A name at the bound is taken.
    let res = app
        .admin_post(
            "/admin/connections/new",
            &[
                ("csrf", &csrf),
                ("provider", "signicat"),
                ("name", &"N".repeat(200)),
                ("client_id", "id"),
                ("client_secret", "secret"),
                ("scope", "identify"),
                ("token_url", "http://127.0.0.1:9/token"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.connection_count().await, 1);
}

#[tokio::test]
async fn the_api_refuses_over_long_text_with_a_json_400_naming_the_field() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("app").await;
    let (status, body) = json_call(
        &app,
        Method::POST,
        "/endpoints",
        &key,
        json!({ "url": "http://127.0.0.1:9/in", "description": "d".repeat(501) }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_description");
    assert!(body["message"].as_str().unwrap().contains("500 characters"), "{body}");
    let (status, body) = json_call(
        &app,
        Method::POST,
        "/connect-sessions",
        &key,
        json!({ "end_user_id": "u1", "display_name": "x".repeat(3000) }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("display_name is longer than 200 characters"), "{body}");
}

#[tokio::test]
async fn every_input_of_the_console_forms_has_a_maxlength() {
    let app = spawn_app().await;
    let login = reqwest::get(format!("{}/admin/login", app.addr)).await.unwrap().text().await.unwrap();
    app.sign_in().await;
    app.connect(None).await;
    let id = app.state.store.connections().await.unwrap()[0].id.clone();
    let mut pages = vec![("/admin/login".to_owned(), login)];
    for path in [
        "/admin/connections".to_owned(),
        "/admin/connections/new".to_owned(),
        "/admin/endpoints/new".to_owned(),
        "/admin/events".to_owned(),
        format!("/admin/connections/{id}"),
    ] {
        let page = app.page(&path).await;
        pages.push((path, page));
    }
    let mut seen = 0;
    for (path, page) in &pages {
        for input in typed_inputs(page) {
            seen += 1;
            assert!(input.contains("maxlength=\""), "an input on {path} without maxlength: <input{input}>");
        }
    }
    assert!(seen >= 20, "the forms were read ({seen} inputs)");
    assert!(pages[2].1.contains("id=\"name\" name=\"name\" value=\"\" required maxlength=\"200\""));
}

#[tokio::test]
async fn an_unknown_event_type_is_kept_with_a_warning_in_the_api_and_beside_the_console_field() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("app").await;
    let (status, body) = json_call(
        &app,
        Method::POST,
        "/endpoints",
        &key,
        json!({ "url": "http://127.0.0.1:9/in", "events": ["Review_Sgined", "Review_Signed"] }),
    )
    .await;
    assert_eq!(status, 201, "still allowed: {body}");
    assert_eq!(body["events"], json!(["Review_Sgined", "Review_Signed"]));
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    let w = warnings[0].as_str().unwrap();
    assert!(w.starts_with("`Review_Sgined` is not an event type the hub knows"), "{w}");
    assert!(w.contains("Did you mean Review_Signed?") && w.contains("connection.needs_reconnect"), "{w}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (_, got) = api(&app, Method::GET, &format!("/endpoints/{id}"), &key).await;
    assert_eq!(got["warnings"], body["warnings"]);
    let (_, fine) = json_call(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, json!({ "events": [] })).await;
    assert_eq!(fine["warnings"], json!([]), "every type: nothing to warn about");

    // The console: the first Save shows the warning beside the field and adds nothing.
    let csrf = app.sign_in().await;
    let before = app.state.store.endpoints().await.unwrap().len();
    let form = [("csrf", csrf.as_str()), ("url", "http://127.0.0.1:9/other"), ("events", "Review_Sgined")];
    let res = app.admin_post("/admin/endpoints/new", &form).await;
    assert_eq!(res.status(), 200);
    let page = unescape(&res.text().await.unwrap());
    let beside = page.split("id=\"events-warning\"").nth(1).expect("a warning beside the event types");
    assert!(beside.contains("Did you mean Review_Signed?") && beside.contains("Known types: Create_Inspection"));
    assert!(page.contains("name=\"warned\" value=\"Review_Sgined\""), "{page}");
    assert_eq!(app.state.store.endpoints().await.unwrap().len(), before, "not added yet");
    // Saving it again as it is keeps it.
    let again = [form[0], form[1], form[2], ("warned", "Review_Sgined")];
    let res = app.admin_post("/admin/endpoints/new", &again).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("whsec_"), "the secret page");
    assert_eq!(app.state.store.endpoints().await.unwrap().len(), before + 1);
}

#[tokio::test]
async fn the_forward_url_endpoint_cannot_be_deleted_through_the_api_or_the_console() {
    let app = spawn_app_with(forwarding).await;
    let (_, key) = app.api_key("app").await;
    let (status, body) = api(&app, Method::DELETE, "/endpoints/ep_forward", &key).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "defined_by_forward_url");
    assert!(body["message"].as_str().unwrap().contains("defined by FORWARD_URL"), "{body}");
    let csrf = app.sign_in().await;
    let confirm = app.page("/admin/endpoints/ep_forward/remove").await;
    assert!(confirm.contains("id=\"forward-defined\"") && !confirm.contains("confirm-remove"), "no remove button");
    assert!(!app.page("/admin/endpoints/ep_forward").await.contains("id=\"remove\""));
    let res = app.admin_post("/admin/endpoints/ep_forward/remove", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 409);
    assert!(unescape(&res.text().await.unwrap()).contains("defined by FORWARD_URL"));
    let (status, _) = api(&app, Method::GET, "/endpoints/ep_forward", &key).await;
    assert_eq!(status, 200, "still there");
}

/// A Signicat connection to a fake token server of its own, never used yet.
async fn signicat_connection(app: &TestApp) -> (FakeTokenServer, connect_hub::domain::ConnectionId) {
    let fake = FakeTokenServer::signicat("sg-id", "sg-secret");
    let url = format!("{}/oauth/connect/token", spawn_token_server(&fake).await);
    let input = CredentialsInput {
        client_id: "sg-id".into(),
        token_url: Some(url),
        scope: Some("identify".into()),
        ..Default::default()
    };
    (fake, app.add_credentials(Provider::Signicat, input, "sg-secret").await)
}

#[tokio::test]
async fn a_never_used_client_credentials_connection_is_not_yet_used_on_every_screen_the_api_and_the_cli() {
    let app = spawn_app().await;
    let (_fake, id) = signicat_connection(&app).await;
    app.sign_in().await;
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("<span class=\"badge idle\" id=\"status\">not yet used</span>"), "{page}");
    let dashboard = app.page("/admin").await;
    let count = |d: &str, status: &str| -> String {
        let row = d.split(&format!("href=\"/admin/connections?status={status}\"")).nth(1).unwrap();
        row.split("class=\"num\">").nth(1).unwrap().split('<').next().unwrap().to_owned()
    };
    assert_eq!(count(&dashboard, "not_yet_used"), "1");
    assert_eq!(count(&dashboard, "active"), "0", "not counted as active");
    let list = app.page("/admin/connections?status=not_yet_used").await;
    assert!(list.contains(&format!("/admin/connections/{id}")), "the list filters for it");
    assert!(list.contains("<option value=\"not_yet_used\" selected>not yet used</option>"));
    assert!(!app.page("/admin/connections?status=active").await.contains(&format!("/admin/connections/{id}")));
    let (_, key) = app.api_key("app").await;
    let (_, body) = api(&app, Method::GET, "/connections", &key).await;
    assert_eq!(body["connections"][0]["status"], "not_yet_used");
    let out = crate::helpers::hub(&app, &["connections", "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with(id.as_str())).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(" not_yet_used "), "{line}");

    // With its first token it is active, everywhere.
    app.state.tokens.token(&id).await.unwrap();
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("<span class=\"badge ok\" id=\"status\">active</span>"), "{page}");
    assert_eq!(count(&app.page("/admin").await, "active"), "1");
    let (_, body) = api(&app, Method::GET, "/connections", &key).await;
    assert_eq!(body["connections"][0]["status"], "active");
}

#[tokio::test]
async fn an_event_whose_delivery_is_retrying_is_not_shown_done() {
    let (app, event) = spawn_app_with_a_retrying_delivery().await;
    let row = app.event(&event).await;
    assert_eq!(row.state, "done", "the event itself is processed");
    assert_eq!(row.worst_delivery.as_deref(), Some("retrying"));
    app.sign_in().await;
    let page = app.page(&format!("/admin/events/{}", event.as_str())).await;
    assert!(page.contains("<span class=\"badge warn\" id=\"event-status\">delivery retrying</span>"), "{page}");
    let list = app.page("/admin/events").await;
    let row = list.split(&format!("/admin/events/{}", event.as_str())).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("<span class=\"badge warn\">delivery retrying</span>"), "{row}");
    let out = crate::helpers::hub(&app, &["events", "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" delivery_retrying "), "{stdout}");
}

#[tokio::test]
async fn after_a_console_test_send_the_endpoints_last_result_is_that_send() {
    let app = spawn_app().await;
    let (_, url) = crate::helpers::receiver();
    let csrf = app.sign_in().await;
    let res = app.admin_post("/admin/endpoints/new", &[("csrf", &csrf), ("url", &url), ("events", "")]).await;
    assert_eq!(res.status(), 200);
    let id = app.state.store.endpoints().await.unwrap().into_iter().find(|e| e.url == url).unwrap().id;
    let page = app.page(&format!("/admin/endpoints/{id}")).await;
    assert_eq!(text_of(&page, "last-result").as_deref(), Some("never tried"));
    let res = app.admin_post(&format!("/admin/endpoints/{id}/test"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let page = app.page(&format!("/admin/endpoints/{id}")).await;
    assert!(unescape(&page).contains("Delivered test event"), "the flash");
    let last = text_of(&page, "last-result").unwrap();
    assert!(last.starts_with("ok ") && last.contains("UTC"), "{last}");
}

#[tokio::test]
async fn the_dashboard_stops_listing_a_refresh_failure_once_the_connection_recovered() {
    let app = spawn_app().await;
    let (fake, id) = signicat_connection(&app).await;
    fake.push_fault(500);
    assert!(app.state.tokens.refresh(&id, "test").await.is_err());
    app.sign_in().await;
    let failures = |d: &str| d.split("id=\"h-fail\"").nth(1).unwrap().to_owned();
    let dashboard = app.page("/admin").await;
    assert!(failures(&dashboard).contains(&format!("/admin/connections/{id}")), "listed while failing");
    // The provider is back: past its back-off, the next token works.
    sqlx::query("update connections set retry_after = null").execute(app.state.store.pool()).await.unwrap();
    app.state.tokens.refresh(&id, "test").await.unwrap();
    let dashboard = app.page("/admin").await;
    assert!(!failures(&dashboard).contains(&format!("/admin/connections/{id}")), "{dashboard}");
    assert!(failures(&dashboard).contains("None. Every recent exchange worked."));
    // The audit log keeps it.
    let kept: i64 = sqlx::query_scalar("select count(*) from audit_log where action = 'token_failed'")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(kept, 1);
}

/// Load the sign-in page and post `email` and `password` from a fresh browser.
async fn sign_in_form(app: &TestApp, email: &str, password: &str) -> (u16, String) {
    let client = browser_client();
    let page = client.get(format!("{}/admin/login", app.addr)).send().await.unwrap().text().await.unwrap();
    let res = client
        .post(format!("{}/admin/login", app.addr))
        .form(&[("email", email), ("password", password), ("csrf", &csrf_from(&page)), ("next", "/admin")])
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

#[tokio::test]
async fn an_empty_or_malformed_sign_in_is_answered_beside_the_field_and_never_locks_the_account() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (status, page) = sign_in_form(&app, "", "").await;
    assert_eq!(status, 400);
    assert_eq!(text_of(&page, "email-error").as_deref(), Some("Enter your email."));
    assert!(!page.contains("do not match"), "{page}");
    let (status, page) = sign_in_form(&app, "not-an-email", "whatever").await;
    assert_eq!(status, 400);
    assert_eq!(text_of(&page, "email-error").as_deref(), Some("Enter your email address as name@example.com."));
    assert!(page.contains("value=\"not-an-email\""), "what was typed stays");
    let (status, page) = sign_in_form(&app, ADMIN_EMAIL, "").await;
    assert_eq!(status, 400);
    assert_eq!(text_of(&page, "password-error").as_deref(), Some("Enter your password."));
    // Many more malformed forms than the lock allows real attempts: none counts.
    for _ in 0..8 {
        assert_eq!(sign_in_form(&app, ADMIN_EMAIL, "").await.0, 400);
    }
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_log where action = 'sign_in_failed'")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(audited, 0, "no failed sign-in was recorded");
    assert_eq!(sign_in_form(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await.0, 303, "not locked");

    // A well-formed email and password that do not match is a real attempt: five lock it.
    let mut last = 0;
    for _ in 0..6 {
        last = sign_in_form(&app, ADMIN_EMAIL, "wrong password here").await.0;
    }
    assert_eq!(last, 429, "real attempts count");
}
