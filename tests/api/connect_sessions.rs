//! Connecting from the organisation's own app: connect sessions with return URLs, reconnect
//! links, public start off, branding, and the callback's clean redirects.

use std::collections::BTreeMap;

use reqwest::Response;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::helpers::{location, spawn_app, spawn_app_with, TestApp};

const APP_ORIGIN: &str = "http://127.0.0.1:9";
const RETURN_URL: &str = "http://127.0.0.1:9/settings/integrations?tenant=7";

fn with_return_origin(vars: &mut BTreeMap<String, String>) {
    vars.insert("CONNECT_RETURN_ORIGINS".into(), format!("https://app.example.com, {APP_ORIGIN}"));
}

/// A client-credentials connection (not SnapInspect: it has no company and no reconnect).
async fn credentials_connection(app: &TestApp) -> connect_hub::domain::ConnectionId {
    app.add_credentials(
        connect_hub::domain::Provider::Snapdocs,
        connect_hub::client_credentials::CredentialsInput {
            client_id: "id".into(),
            token_url: Some("http://127.0.0.1:9/token".into()),
            ..Default::default()
        },
        "secret",
    )
    .await
}

async fn post_json(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    reqwest::Client::new().post(format!("{}{path}", app.addr)).bearer_auth(key).json(body).send().await.unwrap()
}

/// Create a connect session; returns its JSON answer.
async fn session(app: &TestApp, key: &str, body: Value) -> Value {
    let res = post_json(app, "/api/v1/connect-sessions", key, &body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// Open a connect link in the app's browser; returns SnapInspect's authorize URL.
/// Open the link's page and press its Continue button; returns the button's answer.
async fn press_continue(app: &TestApp, connect_url: &str) -> Response {
    let page = app.client.get(connect_url).send().await.unwrap();
    assert_eq!(page.status(), 200, "the link's page");
    let html = page.text().await.unwrap();
    let token = form_token(&html);
    app.client.post(connect_url).form(&[("form_token", token.as_str())]).send().await.unwrap()
}

/// The Continue form's token on a link's page.
fn form_token(html: &str) -> String {
    let marker = "name=\"form_token\" value=\"";
    let at = html.find(marker).expect("the page has the Continue form") + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

async fn open_link(app: &TestApp, connect_url: &str) -> url::Url {
    let res = press_continue(app, connect_url).await;
    assert_eq!(res.status(), 303, "the link starts the flow");
    url::Url::parse(&location(&res)).unwrap()
}

/// Open the link, decide at the fake, and send the callback; returns the callback's response.
async fn complete(app: &TestApp, connect_url: &str, company: i64, allow: bool) -> Response {
    let authorize = open_link(app, connect_url).await;
    let back = app.decide_at_fake(&authorize, Some(company), allow).await;
    app.client.get(&back).send().await.unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(app.state.store.pool()).await.unwrap()
}

async fn event_payloads(app: &TestApp, kind: &str) -> Vec<Value> {
    let rows: Vec<String> = sqlx::query_scalar("select payload from events where event_type = $1 order by id")
        .bind(kind)
        .fetch_all(app.state.store.pool())
        .await
        .unwrap();
    rows.iter().map(|p| serde_json::from_str(p).unwrap()).collect()
}

#[tokio::test]
async fn a_connect_session_links_the_end_user_and_sends_the_browser_back_to_the_app() {
    let app = spawn_app_with(with_return_origin).await;
    let (_, key) = app.api_key("crm").await;
    let s = session(
        &app,
        &key,
        json!({"end_user_id": "tenant-42", "end_user_email": "ops@harbour.example", "display_name": "Harbour ops",
               "tags": {"plan": "pro", "region": "eu"}, "return_url": RETURN_URL}),
    )
    .await;
    assert!(s["id"].as_str().unwrap().starts_with("cs_"), "{s}");
    let connect_url = s["connect_url"].as_str().unwrap();
    let token = connect_url.strip_prefix(&format!("{}/connect/s/", app.addr)).expect("under PUBLIC_URL");
    assert!(token.len() >= 43, "256 bits");
    assert!(s["expires_at"].as_str().unwrap().ends_with('Z'), "RFC 3339: {s}");
    let life = count(&app, "select expires_at - created_at from connect_sessions").await;
    assert_eq!(life, 30 * 60 * 1000, "valid 30 minutes");
    let stored: Vec<u8> =
        sqlx::query_scalar("select token_hash from connect_sessions").fetch_one(app.state.store.pool()).await.unwrap();
    assert_eq!(stored, connect_hub::domain::sha256(token.as_bytes()), "only the token's hash is stored");

    let res = complete(&app, connect_url, 6847, true).await;
    let id = app.connection_id_for(6847).await;
    assert_eq!(
        location(&res),
        format!("http://127.0.0.1:9/settings/integrations?tenant=7&connection_id={}&status=connected", id.as_str())
    );
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.end_user_id.as_deref(), Some("tenant-42"));
    assert_eq!(c.end_user_email.as_deref(), Some("ops@harbour.example"));
    assert_eq!(c.end_user_display_name.as_deref(), Some("Harbour ops"));
    assert_eq!(c.tags.get("plan").map(String::as_str), Some("pro"));
    assert_eq!(c.tags.len(), 2);

    let created = event_payloads(&app, "connection.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["end_user_id"], "tenant-42");
    assert_eq!(created[0]["tags"], json!({"plan": "pro", "region": "eu"}));
}

#[tokio::test]
async fn a_return_url_outside_the_allowed_origins_is_refused_at_creation() {
    let app = spawn_app_with(with_return_origin).await;
    let (_, key) = app.api_key("crm").await;
    for bad in [
        "https://app.example.com.evil.com/back",
        "https://evil.com/?u=https://app.example.com",
        "http://app.example.com/back",
        "http://127.0.0.1:10/back",
        "/relative",
    ] {
        let res =
            post_json(&app, "/api/v1/connect-sessions", &key, &json!({"end_user_id": "u1", "return_url": bad})).await;
        assert_eq!(res.status(), 400, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("return_url"), "{body}");
    }
    let ok = post_json(
        &app,
        "/api/v1/connect-sessions",
        &key,
        &json!({"end_user_id": "u1", "return_url": "https://app.example.com/x"}),
    )
    .await;
    assert_eq!(ok.status(), 201);
    assert_eq!(count(&app, "select count(*) from connect_sessions").await, 1, "only the good one is stored");

    // With no CONNECT_RETURN_ORIGINS (the default), no return URL at all is accepted.
    let plain = spawn_app().await;
    let (_, key) = plain.api_key("crm").await;
    let res = post_json(
        &plain,
        "/api/v1/connect-sessions",
        &key,
        &json!({"end_user_id": "u1", "return_url": "http://127.0.0.1:9/"}),
    )
    .await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn a_connect_session_needs_a_writing_key_and_a_valid_body() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let anonymous = reqwest::Client::new()
        .post(format!("{}/api/v1/connect-sessions", app.addr))
        .json(&json!({"end_user_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let scope = connect_hub::auth::api_keys::KeyScope { connections: None, read_only: true };
    let (_, reader) = app.state.api_keys.create_scoped("reader", &scope, "test").await.unwrap();
    let res = post_json(&app, "/api/v1/connect-sessions", reader.expose_secret(), &json!({"end_user_id": "u1"})).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "read_only_key");
    for (body, code) in [
        (json!({}), "invalid_value"),
        (json!({"end_user_id": ""}), "invalid_value"),
        (json!({"end_user_id": "x".repeat(201)}), "invalid_value"),
        (json!({"end_user_id": "u1", "unknown": 1}), "bad_json"),
        (json!({"end_user_id": "u1", "tags": {"k": 1}}), "bad_json"),
    ] {
        let res = post_json(&app, "/api/v1/connect-sessions", &key, &body).await;
        assert_eq!(res.status(), 400, "{body}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"], code, "{body}");
    }
    assert_eq!(count(&app, "select count(*) from connect_sessions").await, 0);
    assert_eq!(
        post_json(&app, "/api/v1/connect-sessions", &key, &json!({"end_user_id": "x".repeat(200)})).await.status(),
        201
    );
}

#[tokio::test]
async fn a_connect_link_works_once() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let s = session(&app, &key, json!({"end_user_id": "u1"})).await;
    let url = s["connect_url"].as_str().unwrap();
    open_link(&app, url).await;
    let again = app.client.get(url).send().await.unwrap();
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already been used"));
    assert_eq!(count(&app, "select count(*) from oauth_states").await, 1, "the second open issued nothing");
    let session_id: Option<String> =
        sqlx::query_scalar("select session_id from oauth_states").fetch_one(app.state.store.pool()).await.unwrap();
    assert_eq!(session_id.as_deref(), s["id"].as_str(), "the state references the session");
}

#[tokio::test]
async fn an_expired_or_unknown_connect_link_is_a_clear_page_and_stores_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let s = session(&app, &key, json!({"end_user_id": "u1"})).await;
    // One millisecond before the end it still works: checked on a second session.
    let fresh = session(&app, &key, json!({"end_user_id": "u2"})).await;
    sqlx::query("update connect_sessions set expires_at = $1 where id = $2")
        .bind(connect_hub::time::now_ms() - 1)
        .bind(s["id"].as_str().unwrap())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let res = app.client.get(s["connect_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), 410);
    assert!(res.text().await.unwrap().contains("expired"));
    let res = app.get("/connect/s/not-a-token-we-issued").await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("not one we issued"));
    assert_eq!(count(&app, "select count(*) from oauth_states").await, 0, "no state issued");
    assert_eq!(count(&app, "select count(*) from connect_sessions where opened_at is not null").await, 0);
    sqlx::query("update connect_sessions set expires_at = $1 where id = $2")
        .bind(connect_hub::time::now_ms() + 60_000)
        .bind(fresh["id"].as_str().unwrap())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    open_link(&app, fresh["connect_url"].as_str().unwrap()).await;

    // Kept a day past their end (a late click is told "expired"), then purged.
    let now = connect_hub::time::now_ms();
    app.state.store.purge_expired(now).await.unwrap();
    assert_eq!(count(&app, "select count(*) from connect_sessions").await, 2);
    app.state.store.purge_expired(now + 24 * 3_600_000 + 2).await.unwrap();
    assert_eq!(count(&app, "select count(*) from connect_sessions").await, 1, "the expired one went");
    app.state.store.purge_expired(now + 24 * 3_600_000 + 120_000).await.unwrap();
    assert_eq!(count(&app, "select count(*) from connect_sessions").await, 0);
}

#[tokio::test]
async fn connections_can_be_listed_by_end_user() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let a = session(&app, &key, json!({"end_user_id": "tenant-a", "tags": {"plan": "pro"}})).await;
    let b = session(&app, &key, json!({"end_user_id": "tenant-b"})).await;
    complete(&app, a["connect_url"].as_str().unwrap(), 6847, true).await;
    complete(&app, b["connect_url"].as_str().unwrap(), 7012, true).await;
    app.connect_company(9001).await;

    let res = app.api_get("/api/v1/connections?end_user_id=tenant-a", Some(&key)).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let list = v["connections"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["company_id"], 6847);
    assert_eq!(list[0]["end_user_id"], "tenant-a");
    assert_eq!(list[0]["tags"], json!({"plan": "pro"}));
    let all: Value = app.api_get("/api/v1/connections", Some(&key)).await.json().await.unwrap();
    assert_eq!(all["connections"].as_array().unwrap().len(), 3);
    let none: Value = app.api_get("/api/v1/connections?end_user_id=nobody", Some(&key)).await.json().await.unwrap();
    assert_eq!(none["connections"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_denial_or_a_failure_goes_back_to_the_app_with_its_status() {
    let app = spawn_app_with(with_return_origin).await;
    let (_, key) = app.api_key("crm").await;
    let s = session(&app, &key, json!({"end_user_id": "u1", "return_url": RETURN_URL})).await;
    let res = complete(&app, s["connect_url"].as_str().unwrap(), 6847, false).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{RETURN_URL}&status=denied"));

    // An error other than a denial, with a state this browser was issued.
    let s = session(&app, &key, json!({"end_user_id": "u1", "return_url": RETURN_URL})).await;
    let authorize = open_link(&app, s["connect_url"].as_str().unwrap()).await;
    let state = authorize.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let res = app.get(&format!("/connect/snapinspect/callback?error=server_error&state={state}")).await;
    assert_eq!(location(&res), format!("{RETURN_URL}&status=failed&reason=provider_error"));

    app.fake.set_user_shape(connect_hub::demo::snapinspect::UserShape::Fail(503));
    let s = session(&app, &key, json!({"end_user_id": "u1", "return_url": RETURN_URL})).await;
    let res = complete(&app, s["connect_url"].as_str().unwrap(), 6847, true).await;
    assert_eq!(location(&res), format!("{RETURN_URL}&status=failed&reason=user_unavailable"));
    assert_eq!(app.connection_count().await, 0);
}

/// Connect 6847 through a session for tenant-42, then mark it as needing a reconnect.
async fn broken_connection(app: &TestApp, key: &str) -> connect_hub::domain::ConnectionId {
    let s = session(app, key, json!({"end_user_id": "tenant-42", "tags": {"plan": "pro"}})).await;
    complete(app, s["connect_url"].as_str().unwrap(), 6847, true).await;
    let id = app.connection_id_for(6847).await;
    sqlx::query("update connections set status = 'needs_reconnect', last_error = 'refused' where id = $1")
        .bind(id.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_reconnect_link_repairs_the_same_connection_in_place() {
    let app = spawn_app_with(with_return_origin).await;
    let (_, key) = app.api_key("crm").await;
    let id = broken_connection(&app, &key).await;
    let before = app.state.store.connection(&id).await.unwrap().unwrap();

    let path = format!("/api/v1/connections/{}/reconnect-session", id.as_str());
    let res = post_json(&app, &path, &key, &json!({"return_url": RETURN_URL})).await;
    assert_eq!(res.status(), 201);
    let s: Value = res.json().await.unwrap();
    let authorize = open_link(&app, s["connect_url"].as_str().unwrap()).await;
    let back = app.decide_at_fake(&authorize, Some(6847), true).await;
    let new_access =
        url::Url::parse(&back).unwrap().query_pairs().find(|(k, _)| k == "access_token").unwrap().1.into_owned();
    let res = app.client.get(&back).send().await.unwrap();
    assert_eq!(location(&res), format!("{RETURN_URL}&connection_id={}&status=connected", id.as_str()));

    assert_eq!(app.connection_count().await, 1, "the same connection, not a new one");
    let after = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(after.status, connect_hub::domain::ConnectionStatus::Active);
    assert_eq!(after.end_user_id.as_deref(), Some("tenant-42"));
    assert_eq!(after.tags, before.tags);
    assert_eq!(after.token_version, before.token_version + 1);
    let tokens = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(tokens.access.unwrap().expose_secret(), new_access);
    let recovered = event_payloads(&app, "connection.recovered").await;
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0]["connection_id"], id.as_str());
    assert_eq!(recovered[0]["previous_status"], "needs_reconnect");
    assert_eq!(recovered[0]["end_user_id"], "tenant-42");
}

#[tokio::test]
async fn a_reconnect_link_records_the_connections_own_end_user() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let id = broken_connection(&app, &key).await;
    let path = format!("/api/v1/connections/{}/reconnect-session", id.as_str());
    let s: Value = post_json(&app, &path, &key, &json!({})).await.json().await.unwrap();
    let token = s["connect_url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();

    let hash = connect_hub::domain::OpaqueToken::hash_of(&token);
    let opened = app.state.store.open_connect_session(&hash, connect_hub::time::now_ms()).await.unwrap();
    let session = opened.expect("the link just issued opens");
    assert_eq!(session.connection_id.as_ref(), Some(&id), "the link repairs that connection");
    assert_eq!(session.end_user.id, "tenant-42", "the session is for the connection's own end user");
    assert_eq!(session.end_user.tags.get("plan").map(String::as_str), Some("pro"));
}

#[tokio::test]
async fn a_reconnect_link_completed_by_another_company_changes_nothing() {
    let app = spawn_app_with(with_return_origin).await;
    let (_, key) = app.api_key("crm").await;
    let id = broken_connection(&app, &key).await;
    let before = app.state.store.connection(&id).await.unwrap().unwrap();
    let path = format!("/api/v1/connections/{}/reconnect-session", id.as_str());

    // Without a return URL: our own clear page.
    let s: Value = post_json(&app, &path, &key, &json!({})).await.json().await.unwrap();
    let res = complete(&app, s["connect_url"].as_str().unwrap(), 7012, true).await;
    let page = app.follow(&app.client, res).await;
    assert_eq!(page.status(), 409);
    let text = page.text().await.unwrap();
    assert!(text.contains("different SnapInspect company") && text.contains("was not reconnected"), "{text}");

    // With one: the app is told.
    let s: Value = post_json(&app, &path, &key, &json!({"return_url": RETURN_URL})).await.json().await.unwrap();
    let res = complete(&app, s["connect_url"].as_str().unwrap(), 7012, true).await;
    assert_eq!(
        location(&res),
        format!("{RETURN_URL}&connection_id={}&status=failed&reason=company_mismatch", id.as_str())
    );

    let after = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(after.status, connect_hub::domain::ConnectionStatus::NeedsReconnect);
    assert_eq!(after.token_version, before.token_version);
    assert_eq!(after.company_id, before.company_id);
    assert_eq!(app.connection_count().await, 1, "the other company's tokens are not stored");
    assert!(event_payloads(&app, "connection.recovered").await.is_empty());
}

#[tokio::test]
async fn reconnect_links_are_only_for_snapinspect_connections_within_the_keys_scope() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let cc = credentials_connection(&app).await;
    let res =
        post_json(&app, &format!("/api/v1/connections/{}/reconnect-session", cc.as_str()), &key, &json!({})).await;
    assert_eq!(res.status(), 409);
    let res =
        post_json(&app, "/api/v1/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/reconnect-session", &key, &json!({})).await;
    assert_eq!(res.status(), 404);
    // An unidentified connection has no company to check a reconnect against.
    app.connect(None).await;
    let unidentified =
        app.state.store.connections().await.unwrap().into_iter().find(|c| c.company_id.is_none()).unwrap();
    let path = format!("/api/v1/connections/{}/reconnect-session", unidentified.id.as_str());
    assert_eq!(post_json(&app, &path, &key, &json!({})).await.status(), 409);
    assert_eq!(count(&app, "select count(*) from connect_sessions").await, 0);

    // A key limited to some connections may repair its own, but start no new ones.
    let mine = app.connect_company(6847).await;
    let other = app.connect_company(7012).await;
    let scope = connect_hub::auth::api_keys::KeyScope { connections: Some(vec![mine.clone()]), read_only: false };
    let (_, scoped) = app.state.api_keys.create_scoped("scoped", &scope, "test").await.unwrap();
    let scoped = scoped.expose_secret();
    let res = post_json(&app, "/api/v1/connect-sessions", scoped, &json!({"end_user_id": "u1"})).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "scoped_key");
    let path =
        |id: &connect_hub::domain::ConnectionId| format!("/api/v1/connections/{}/reconnect-session", id.as_str());
    assert_eq!(post_json(&app, &path(&other), scoped, &json!({})).await.status(), 404);
    assert_eq!(post_json(&app, &path(&mine), scoped, &json!({})).await.status(), 201);
    let reader_scope = connect_hub::auth::api_keys::KeyScope { connections: None, read_only: true };
    let (_, reader) = app.state.api_keys.create_scoped("reader", &reader_scope, "test").await.unwrap();
    assert_eq!(post_json(&app, &path(&mine), reader.expose_secret(), &json!({})).await.status(), 403);
    assert_eq!(count(&app, "select count(*) from connect_sessions").await, 1);
}

#[tokio::test]
async fn the_console_offers_a_reconnect_link_for_a_connection_that_needs_one() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let healthy = app.connect_company(7012).await;
    let id = broken_connection(&app, &key).await;
    let csrf = app.sign_in().await;
    assert!(!app.page(&format!("/admin/connections/{}", healthy.as_str())).await.contains("get-reconnect-link"));
    let page = app.page(&format!("/admin/connections/{}", id.as_str())).await;
    assert!(page.contains("Get reconnect link"), "{page}");
    assert!(page.contains("<dd id=\"end-user\">tenant-42 · plan=pro</dd>"), "{page}");

    let path = format!("/admin/connections/{}/reconnect-link", id.as_str());
    assert_eq!(app.admin_post(&path, &[("csrf", "wrong")]).await.status(), 403);
    assert_eq!(count(&app, "select count(*) from connect_sessions where connection_id is not null").await, 0);
    let res = app.admin_post(&path, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = res.text().await.unwrap();
    let start = body.find(&format!("{}/connect/s/", app.addr)).expect("the link is shown");
    // Shown whole, in a read-only box: the link ends where the box does.
    let link: String = body[start..].chars().take_while(|c| *c != '<').collect();
    assert!(body[..start].ends_with("readonly rows=\"3\" spellcheck=\"false\">"), "{body}");
    let res = complete(&app, &link, 6847, true).await;
    assert_eq!(location(&res), "/connect/snapinspect/done");
    assert_eq!(
        app.state.store.connection(&id).await.unwrap().unwrap().status,
        connect_hub::domain::ConnectionStatus::Active
    );
}

#[tokio::test]
async fn with_public_start_off_connecting_starts_only_from_the_app() {
    let app = spawn_app_with(|v| {
        v.insert("CONNECT_PUBLIC_START".into(), "false".into());
    })
    .await;
    let home = app.page("/").await;
    assert!(!home.contains("href=\"/connect/snapinspect\""), "no button: {home}");
    assert!(home.contains("Connecting starts from"), "{home}");
    let res = app.get("/connect/snapinspect").await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("Connecting starts from your organisation"));
    assert_eq!(count(&app, "select count(*) from oauth_states").await, 0);

    let (_, key) = app.api_key("crm").await;
    let s = session(&app, &key, json!({"end_user_id": "u1"})).await;
    let res = complete(&app, s["connect_url"].as_str().unwrap(), 6847, true).await;
    assert_eq!(location(&res), "/connect/snapinspect/done", "a session still works");

    let default = spawn_app().await;
    assert!(default.page("/").await.contains("href=\"/connect/snapinspect\""), "on by default");
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-test-logo";

#[tokio::test]
async fn the_brand_name_colour_logo_and_support_link_are_on_end_user_pages() {
    let files = tempfile::tempdir().unwrap();
    let logo = files.path().join("logo.png");
    std::fs::write(&logo, PNG).unwrap();
    let app = spawn_app_with(|v| {
        v.insert("BRAND_NAME".into(), "Acme Inspections".into());
        v.insert("BRAND_COLOR".into(), "#0A7F3F".into());
        v.insert("BRAND_LOGO".into(), logo.display().to_string());
        v.insert("BRAND_SUPPORT_URL".into(), "https://help.acme.example/snapinspect".into());
    })
    .await;
    let home = app.page("/").await;
    assert!(home.contains("Acme Inspections wants access to your SnapInspect account"), "{home}");
    assert!(home.contains("src=\"/brand/logo\"") && home.contains("href=\"/brand/style.css\""), "{home}");
    assert!(home.contains("href=\"https://help.acme.example/snapinspect\""), "{home}");

    let res = app.get("/brand/logo").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert!(res.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    assert_eq!(res.bytes().await.unwrap().as_ref(), PNG);
    let css = app.get("/brand/style.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.text().await.unwrap().contains("--brand: #0a7f3f"));
    let csp = app.get("/").await.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(!csp.contains("script-src") && !csp.contains("unsafe-inline"), "the CSP stays script-free: {csp}");

    // The result pages carry the brand too.
    app.fake.set_user_shape(connect_hub::demo::snapinspect::UserShape::Fail(503));
    let c = app.connect(Some(6847)).await;
    let page = app.follow(&app.client, c.callback).await.text().await.unwrap();
    assert!(page.contains("Acme Inspections") && page.contains("/brand/logo"), "{page}");
}

#[tokio::test]
async fn without_a_brand_the_pages_look_as_before() {
    let app = spawn_app().await;
    let home = app.page("/").await;
    assert!(home.contains("Connect your SnapInspect account") && home.contains(">connect-hub<"), "{home}");
    assert!(!home.contains("/brand/"), "{home}");
    assert_eq!(app.get("/brand/logo").await.status(), 404);
}

#[tokio::test]
async fn an_svg_logo_is_served_with_a_policy_that_runs_nothing() {
    let files = tempfile::tempdir().unwrap();
    let logo = files.path().join("logo.svg");
    let svg = r#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#;
    std::fs::write(&logo, svg).unwrap();
    let app = spawn_app_with(|v| {
        v.insert("BRAND_LOGO".into(), logo.display().to_string());
    })
    .await;
    let res = app.get("/brand/logo").await;
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("sandbox"), "{csp}");
    assert_eq!(res.text().await.unwrap(), svg);
}

/// Run `connect-hub serve` with the test app's settings changed by `change`; it must stop at once.
fn serve_with(app: &TestApp, change: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(app.dir.path());
    for (k, v) in &app.vars {
        cmd.env(k, v);
    }
    // Another address, so a start that wrongly succeeded would not take the test app's port.
    cmd.env("BIND_ADDR", "127.0.0.1:0");
    for (k, v) in change {
        cmd.env(k, v);
    }
    cmd.arg("serve").output().unwrap()
}

#[tokio::test]
async fn bad_brand_values_stop_serve_with_one_clear_line() {
    let app = spawn_app().await;
    let files = tempfile::tempdir().unwrap();
    let gif = files.path().join("logo.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00").unwrap();
    let scripted = files.path().join("logo.svg");
    std::fs::write(&scripted, "<svg><script>alert(1)</script></svg>").unwrap();
    let big = files.path().join("big.png");
    let mut bytes = PNG.to_vec();
    bytes.resize(256 * 1024 + 1, 0);
    std::fs::write(&big, bytes).unwrap();
    let (gif, scripted, big) = (gif.display().to_string(), scripted.display().to_string(), big.display().to_string());
    for (name, value) in [
        ("BRAND_COLOR", "red"),
        ("BRAND_COLOR", "#12345"),
        ("BRAND_SUPPORT_URL", "javascript:alert(1)"),
        ("BRAND_LOGO", gif.as_str()),
        ("BRAND_LOGO", scripted.as_str()),
        ("BRAND_LOGO", big.as_str()),
        ("BRAND_LOGO", "/no/such/logo.png"),
        ("CONNECT_RETURN_ORIGINS", "https://app.example.com/path"),
        ("CONNECT_PUBLIC_START", "maybe"),
    ] {
        let out = serve_with(&app, &[(name, value)]);
        assert!(!out.status.success(), "{name}={value} must stop serve");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].starts_with(&format!("connect-hub: {name} ")), "{name}={value}: {err}");
    }
}

#[tokio::test]
async fn a_logo_that_could_run_or_load_anything_stops_serve_and_says_why() {
    let app = spawn_app().await;
    let files = tempfile::tempdir().unwrap();
    let ns = r#"xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink""#;
    for (name, svg, says) in [
        (
            "set",
            format!(r#"<svg {ns}><rect width="9"><set attributeName="onmouseover" to="alert(1)"/></rect></svg>"#),
            "<set>",
        ),
        ("entity", format!(r#"<svg {ns}><use xlink:href="&#106;avascript:alert(1)"/></svg>"#), "javascript:alert(1)"),
        (
            "foreign",
            format!(
                r#"<svg {ns}><foreignObject><iframe xmlns="http://www.w3.org/1999/xhtml" src="https://evil.example/"/></foreignObject></svg>"#
            ),
            "<foreignObject>",
        ),
        (
            "css",
            format!(r#"<svg {ns}><rect style="fill:url(https://evil.example/p)"/></svg>"#),
            "url(https://evil.example/p)",
        ),
    ] {
        let path = files.path().join(format!("{name}.svg"));
        std::fs::write(&path, svg).unwrap();
        let out = serve_with(&app, &[("BRAND_LOGO", path.to_str().unwrap())]);
        assert!(!out.status.success(), "{name} must stop serve");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].starts_with("connect-hub: BRAND_LOGO is an SVG "), "{name}: {err}");
        assert!(lines[0].contains(says), "{name} says why: {err}");
    }
}

#[tokio::test]
async fn a_logo_drawn_with_gradients_and_its_own_references_is_served_as_it_is() {
    let files = tempfile::tempdir().unwrap();
    let logo = files.path().join("logo.svg");
    let svg = r##"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg width="32" height="32" viewBox="0 0 32 32" version="1.1" id="svg1"
   inkscape:version="1.3.2" sodipodi:docname="logo.svg"
   xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
   xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"
   xmlns:xlink="http://www.w3.org/1999/xlink" xmlns="http://www.w3.org/2000/svg">
  <sodipodi:namedview id="namedview1" pagecolor="#ffffff" inkscape:zoom="8" />
  <defs id="defs1">
    <linearGradient id="grad"><stop offset="0" style="stop-color:#1a73e8;stop-opacity:1" /></linearGradient>
    <linearGradient xlink:href="#grad" id="grad2" x1="0" y1="0" x2="32" y2="32" gradientUnits="userSpaceOnUse" />
  </defs>
  <g inkscape:label="Layer 1" inkscape:groupmode="layer" id="layer1">
    <path style="fill:url(#grad2);stroke:none" d="M 0,0 H 32 V 32 H 0 Z" id="path1" />
  </g>
</svg>
"##;
    std::fs::write(&logo, svg).unwrap();
    let app = spawn_app_with(|v| {
        v.insert("BRAND_LOGO".into(), logo.display().to_string());
    })
    .await;
    let res = app.get("/brand/logo").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert_eq!(res.text().await.unwrap(), svg);
}

#[tokio::test]
async fn support_staff_can_print_a_connect_link_from_the_shell() {
    let app = spawn_app_with(with_return_origin).await;
    let out = crate::helpers::hub(&app, &["connect-link", "--end-user", "tenant-9", "--return-url", RETURN_URL]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(url.starts_with(&format!("{}/connect/s/", app.addr)), "{url}");
    let res = complete(&app, &url, 6847, true).await;
    let id = app.connection_id_for(6847).await;
    assert_eq!(location(&res), format!("{RETURN_URL}&connection_id={}&status=connected", id.as_str()));
    assert_eq!(app.state.store.connection(&id).await.unwrap().unwrap().end_user_id.as_deref(), Some("tenant-9"));

    let bad =
        crate::helpers::hub(&app, &["connect-link", "--end-user", "tenant-9", "--return-url", "https://evil.example/"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--return-url"));
}

#[tokio::test]
async fn every_callback_answer_is_a_redirect_that_leaves_the_tokens_behind() {
    let app = spawn_app().await;
    let c = app.connect(Some(6847)).await;
    assert_eq!(c.callback.status(), 303);
    assert_eq!(location(&c.callback), "/connect/snapinspect/done");
    for replay in [c.callback_url.clone(), c.callback_url.replace("state=", "state=x")] {
        let res = app.client.get(&replay).send().await.unwrap();
        assert_eq!(res.status(), 303, "{replay}");
        assert_eq!(location(&res), "/connect/snapinspect/result");
        let page = app.client.get(format!("{}/connect/snapinspect/result", app.addr)).send().await.unwrap();
        assert_eq!(page.status(), 400);
        let body = page.text().await.unwrap();
        assert!(!body.contains(&c.access_token) && !body.contains(&c.refresh_token));
    }
    let authorize = app.start_connect().await;
    let denied = app.decide_at_fake(&authorize, Some(6847), false).await;
    let res = app.client.get(&denied).send().await.unwrap();
    assert_eq!(location(&res), "/connect/snapinspect/result");
    let res = app.get("/connect/snapinspect/callback?state=s&state=t").await;
    assert_eq!(location(&res), "/connect/snapinspect/result");
    // The result page without the cookie sends people home.
    let fresh = crate::helpers::browser_client();
    let res = fresh.get(format!("{}/connect/snapinspect/result", app.addr)).send().await.unwrap();
    assert_eq!(location(&res), "/");
}

#[tokio::test]
async fn a_rate_limited_start_does_not_use_up_the_connect_link() {
    let app = spawn_app_with(|v| {
        v.insert("RATE_LIMIT_CONNECT".into(), "1".into());
    })
    .await;
    let (_, key) = app.api_key("crm").await;
    let s = session(&app, &key, json!({"end_user_id": "u1"})).await;
    app.start_connect().await;
    let res = press_continue(&app, s["connect_url"].as_str().unwrap()).await;
    assert_eq!(res.status(), 429);
    assert_eq!(count(&app, "select count(*) from connect_sessions where opened_at is null").await, 1, "still usable");
}

#[tokio::test]
async fn the_store_completes_a_reconnect_link_only_on_a_snapinspect_connection_with_that_company() {
    use connect_hub::store::{LinkRefusal, NewSnapInspectLink};
    let app = spawn_app().await;
    let link = |company: Option<i64>| NewSnapInspectLink {
        company_id: company.map(|c| connect_hub::domain::CompanyId::new(c).unwrap()),
        name: "Harbour View Realty".into(),
        user_info: None,
        access_token: "new-access".to_owned().into(),
        refresh_token: "new-refresh".to_owned().into(),
        end_user: None,
    };
    let reconnect = |id: connect_hub::domain::ConnectionId, company: Option<i64>| {
        let store = app.state.store.clone();
        let link = link(company);
        async move { store.reconnect_snapinspect_link(&id, &link, connect_hub::time::now_ms()).await.unwrap() }
    };
    // What the API refuses up front, the store refuses too (a session started before a change).
    let cc = credentials_connection(&app).await;
    assert_eq!(reconnect(cc, Some(6847)).await.err(), Some(LinkRefusal::ConnectionGone), "not SnapInspect");
    app.connect(None).await;
    let unidentified =
        app.state.store.connections().await.unwrap().into_iter().find(|c| c.company_id.is_none()).unwrap().id;
    assert_eq!(reconnect(unidentified, Some(6847)).await.err(), Some(LinkRefusal::CompanyMismatch), "no company");
    let known = app.connect_company(6847).await;
    assert_eq!(reconnect(known.clone(), Some(7012)).await.err(), Some(LinkRefusal::CompanyMismatch));
    assert!(reconnect(known, Some(6847)).await.is_ok(), "the same company reconnects");
}

/// The access token in SnapInspect's redirect back to us.
fn callback_access_token(back: &str) -> String {
    url::Url::parse(back).unwrap().query_pairs().find(|(k, _)| k == "access_token").unwrap().1.into_owned()
}

/// Wait until the fake SnapInspect no longer accepts `token`: the pair was exchanged (spent).
async fn wait_until_spent(app: &TestApp, token: &str) {
    let (fake, token) = (app.fake.clone(), token.to_owned());
    crate::helpers::eventually(10, "the callback's pair is spent", || {
        let ok = !fake.is_valid_access_token(&token);
        async move { ok }
    })
    .await;
}

#[tokio::test]
async fn an_end_users_flow_never_takes_a_company_connected_for_another_end_user() {
    let app = spawn_app_with(with_return_origin).await;
    let (_, key) = app.api_key("crm").await;
    let a = session(&app, &key, json!({"end_user_id": "tenant-A", "tags": {"plan": "a"}})).await;
    complete(&app, a["connect_url"].as_str().unwrap(), 6847, true).await;
    let id = app.connection_id_for(6847).await;
    let before = app.state.store.connection(&id).await.unwrap().unwrap();

    // Tenant B's user signs in to SnapInspect as the same company.
    let b =
        session(&app, &key, json!({"end_user_id": "tenant-B", "tags": {"plan": "b"}, "return_url": RETURN_URL})).await;
    let authorize = open_link(&app, b["connect_url"].as_str().unwrap()).await;
    let back = app.decide_at_fake(&authorize, Some(6847), true).await;
    let res = app.client.get(&back).send().await.unwrap();
    assert_eq!(location(&res), format!("{RETURN_URL}&status=failed&reason=company_already_connected"));

    let after = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(after.end_user_id.as_deref(), Some("tenant-A"), "the connection still belongs to tenant A");
    assert_eq!(after.tags, before.tags);
    assert_eq!(after.token_version, before.token_version, "A's tokens were not replaced");
    assert_eq!(app.connection_count().await, 1);
    let mine = app.state.store.connections_for_end_user("tenant-A").await.unwrap();
    assert_eq!(mine.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id.clone()]);
    assert!(app.state.store.connections_for_end_user("tenant-B").await.unwrap().is_empty());
    wait_until_spent(&app, &callback_access_token(&back)).await;

    // Without a return URL the person is told to ask the organisation's administrator, and is
    // not offered a "Try again" that could only end the same way.
    let c = session(&app, &key, json!({"end_user_id": "tenant-C"})).await;
    let res = complete(&app, c["connect_url"].as_str().unwrap(), 6847, true).await;
    let page = app.client.get(format!("{}{}", app.addr, location(&res))).send().await.unwrap();
    assert_eq!(page.status(), 409);
    let page = page.text().await.unwrap();
    assert!(page.contains("Ask your organisation&#39;s administrator"), "{page}");
    assert!(!page.contains("id=\"try-again\""), "trying again cannot help: {page}");
    assert!(page.contains("href=\"/\">Back to the start</a>"), "{page}");
}

#[tokio::test]
async fn the_same_end_user_connecting_again_refreshes_the_tokens() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let first = session(&app, &key, json!({"end_user_id": "tenant-A"})).await;
    complete(&app, first["connect_url"].as_str().unwrap(), 6847, true).await;
    let id = app.connection_id_for(6847).await;
    let before = app.state.store.connection(&id).await.unwrap().unwrap();
    let again = session(&app, &key, json!({"end_user_id": "tenant-A"})).await;
    let res = complete(&app, again["connect_url"].as_str().unwrap(), 6847, true).await;
    assert_eq!(location(&res), "/connect/snapinspect/done");
    let after = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(after.token_version, before.token_version + 1, "new tokens on the same connection");
    assert_eq!(after.end_user_id.as_deref(), Some("tenant-A"));
    assert_eq!(app.connection_count().await, 1);
}

#[tokio::test]
async fn a_company_connected_without_an_end_user_is_not_taken_by_a_session() {
    let app = spawn_app_with(with_return_origin).await;
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("crm").await;
    let s = session(&app, &key, json!({"end_user_id": "tenant-B", "return_url": RETURN_URL})).await;
    let res = complete(&app, s["connect_url"].as_str().unwrap(), 6847, true).await;
    assert_eq!(location(&res), format!("{RETURN_URL}&status=failed&reason=company_already_connected"));
    assert_eq!(app.state.store.connection(&id).await.unwrap().unwrap().end_user_id, None);
}

#[tokio::test]
async fn the_pair_of_every_refused_callback_is_spent() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let id = broken_connection(&app, &key).await;
    // A reconnect link completed as another company: company_mismatch.
    let path = format!("/api/v1/connections/{}/reconnect-session", id.as_str());
    let s: Value = post_json(&app, &path, &key, &json!({})).await.json().await.unwrap();
    let authorize = open_link(&app, s["connect_url"].as_str().unwrap()).await;
    let back = app.decide_at_fake(&authorize, Some(7012), true).await;
    app.client.get(&back).send().await.unwrap();
    wait_until_spent(&app, &callback_access_token(&back)).await;
    // `/user` failing (user_unavailable) or refusing the token (token_refused): nothing is
    // stored, and the pair dies all the same.
    for shape in
        [connect_hub::demo::snapinspect::UserShape::Fail(503), connect_hub::demo::snapinspect::UserShape::Fail(401)]
    {
        app.fake.set_user_shape(shape);
        let authorize = app.start_connect().await;
        let back = app.decide_at_fake(&authorize, Some(7013), true).await;
        let res = app.client.get(&back).send().await.unwrap();
        assert_eq!(res.status(), 303);
        wait_until_spent(&app, &callback_access_token(&back)).await;
    }
    assert_eq!(app.connection_count().await, 1, "only the broken connection");
}

/// An internal error (here the store refusing the new row) leaves the callback's pair alone:
/// the hub cannot tell whether a failed write was stored after all (a commit can fail after it
/// landed), and spending a stored pair would kill the connection it made.
#[tokio::test]
async fn a_store_failing_mid_callback_does_not_spend_the_pair() {
    let app = spawn_app().await;
    let fail = if app.db.is_postgres() {
        vec![
            "create function refuse_connection() returns trigger language plpgsql as \
             $$ begin raise exception 'the disk is full'; end $$",
            "create trigger refuse_connection before insert on connections \
             for each row execute function refuse_connection()",
        ]
    } else {
        vec![
            "create trigger refuse_connection before insert on connections \
              begin select raise(abort, 'the disk is full'); end",
        ]
    };
    for sql in fail {
        sqlx::query(sql).execute(app.state.store.pool()).await.unwrap();
    }
    let authorize = app.start_connect().await;
    let back = app.decide_at_fake(&authorize, Some(6847), true).await;
    let res = app.client.get(&back).send().await.unwrap();
    assert!(res.status().is_server_error() || res.status().is_redirection(), "{}", res.status());
    assert_eq!(app.connection_count().await, 0, "nothing was stored");
    // A refusal's pair is spent within milliseconds (see above); give this one ample time.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(app.fake.is_valid_access_token(&callback_access_token(&back)), "the pair was left alone");
}

#[tokio::test]
async fn a_connect_links_page_spends_nothing_and_only_its_button_does() {
    let app = spawn_app_with(|v| {
        v.insert("BRAND_NAME".into(), "Acme Inspections".into());
    })
    .await;
    let (_, key) = app.api_key("crm").await;
    let s = session(&app, &key, json!({"end_user_id": "u1", "display_name": "Ada Lovelace"})).await;
    let url = s["connect_url"].as_str().unwrap();
    // A mail scanner fetches the link, twice.
    for _ in 0..2 {
        let res = reqwest::Client::new().get(url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        // Browsers check a form's redirect against `form-action`: Continue may end at SnapInspect.
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains(&format!("form-action 'self' {}", app.fake_addr)), "{csp}");
        let html = res.text().await.unwrap();
        assert!(html.contains("Acme Inspections asks you to connect your SnapInspect account for"), "{html}");
        assert!(html.contains("Ada Lovelace"));
    }
    assert_eq!(count(&app, "select count(*) from connect_sessions where opened_at is null").await, 1, "unspent");
    assert_eq!(count(&app, "select count(*) from oauth_states").await, 0, "no flow started");
    // A form posted from elsewhere spends nothing.
    let res = app.client.post(url).form(&[("form_token", "forged")]).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(count(&app, "select count(*) from connect_sessions where opened_at is null").await, 1, "unspent");
    // The person's press of Continue does.
    let res = press_continue(&app, url).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with(&app.fake_addr), "to SnapInspect");
    assert_eq!(count(&app, "select count(*) from connect_sessions where opened_at is null").await, 0, "spent");
    let used = app.client.get(url).send().await.unwrap();
    assert_eq!(used.status(), 410, "a used link still says so");
}

#[tokio::test]
async fn a_reconnect_link_whose_connection_was_deleted_ends_in_connection_gone() {
    let app = spawn_app_with(with_return_origin).await;
    let (_, key) = app.api_key("crm").await;
    let id = broken_connection(&app, &key).await;
    let path = format!("/api/v1/connections/{}/reconnect-session", id.as_str());
    let s: Value = post_json(&app, &path, &key, &json!({"return_url": RETURN_URL})).await.json().await.unwrap();
    let authorize = open_link(&app, s["connect_url"].as_str().unwrap()).await;
    assert!(app.state.store.delete_connection(&id, connect_hub::time::now_ms(), "test").await.unwrap());

    let back = app.decide_at_fake(&authorize, Some(6847), true).await;
    let res = app.client.get(&back).send().await.unwrap();
    assert_eq!(
        location(&res),
        format!("{RETURN_URL}&connection_id={}&status=failed&reason=connection_gone", id.as_str())
    );
    assert_eq!(app.connection_count().await, 0, "no plain connection was made in its place");
    wait_until_spent(&app, &callback_access_token(&back)).await;
}

#[tokio::test]
async fn the_console_does_not_delete_a_snapinspect_connection() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    app.sign_in().await;
    let page = app.get(&format!("/admin/connections/{id}/delete")).await;
    assert_eq!(page.status(), 409);
    let csrf = crate::helpers::csrf_from(&app.page("/admin/connections").await);
    let res = app.admin_post(&format!("/admin/connections/{id}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 409);
    assert!(app.state.store.connection(&id).await.unwrap().is_some(), "still there");
}

/// The audit log's entries for a connection: (action, detail).
async fn audit_of(app: &TestApp, id: &connect_hub::domain::ConnectionId) -> Vec<(String, String)> {
    sqlx::query_as("select action, detail from audit_log where connection_id = $1 order by id")
        .bind(id.as_str())
        .fetch_all(app.state.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn only_an_admin_gives_a_connection_to_an_end_user_and_it_is_audited() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("crm").await;
    let a = session(&app, &key, json!({"end_user_id": "tenant-A", "tags": {"plan": "a"}})).await;
    complete(&app, a["connect_url"].as_str().unwrap(), 6847, true).await;
    let id = app.connection_id_for(6847).await;
    let path = format!("/api/v1/connections/{}/end-user", id.as_str());
    let put = |key: String, body: Value| {
        let url = format!("{}{path}", app.addr);
        async move { reqwest::Client::new().put(url).bearer_auth(key).json(&body).send().await.unwrap() }
    };

    // A key limited to this connection, or a read-only one, may not.
    let scoped = connect_hub::auth::api_keys::KeyScope { connections: Some(vec![id.clone()]), read_only: false };
    let (_, scoped) = app.state.api_keys.create_scoped("scoped", &scoped, "test").await.unwrap();
    let res = put(scoped.expose_secret().to_owned(), json!({"end_user_id": "tenant-B"})).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "full_scope_required");
    let res = put(key.clone(), json!({"end_user_id": " "})).await;
    assert_eq!(res.status(), 400, "a blank end user is refused");

    // A full key can: the connection is tenant B's, with B's tags, and the audit says who did it.
    let res = put(key.clone(), json!({"end_user_id": "tenant-B", "tags": {"plan": "b"}})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["end_user_id"], "tenant-B");
    assert_eq!(body["tags"]["plan"], "b");
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.end_user_id.as_deref(), Some("tenant-B"));
    assert!(audit_of(&app, &id)
        .await
        .contains(&("assign_end_user".to_owned(), "end user tenant-B (was tenant-A)".to_owned())));
    // Tenant B's own sessions now refresh it; tenant A's are refused.
    let again = session(&app, &key, json!({"end_user_id": "tenant-A"})).await;
    let res = complete(&app, again["connect_url"].as_str().unwrap(), 6847, true).await;
    assert_eq!(location(&res), "/connect/snapinspect/result");

    // From the shell and from the console.
    let out = crate::helpers::hub(&app, &["connections", "assign", id.as_str(), "--end-user", "tenant-C"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(app.state.store.connection(&id).await.unwrap().unwrap().end_user_id.as_deref(), Some("tenant-C"));
    app.sign_in().await;
    let html = app.page(&format!("/admin/connections/{id}")).await;
    let csrf = crate::helpers::csrf_from(&html);
    let fields = [
        ("csrf", csrf.as_str()),
        ("end_user_id", "tenant-D"),
        ("end_user_email", "ops@d.example"),
        ("display_name", " "),
    ];
    let res = app.admin_post(&format!("/admin/connections/{id}/end-user"), &fields).await;
    assert_eq!(res.status(), 303);
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.end_user_id.as_deref(), Some("tenant-D"));
    assert_eq!(c.end_user_email.as_deref(), Some("ops@d.example"), "a field given is kept");
    assert_eq!(c.end_user_display_name, None, "a blank field is no value");
    let actions: Vec<String> = audit_of(&app, &id).await.into_iter().map(|(a, d)| format!("{a}: {d}")).collect();
    assert!(actions.iter().any(|a| a == "assign_end_user: end user tenant-C (was tenant-B)"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "assign_end_user: end user tenant-D (was tenant-C)"), "{actions:?}");
}
