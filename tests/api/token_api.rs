//! `/api/v1`: keys (valid, revoked, missing, scoped to connections or read-only), tokens for every
//! kind of connection, forced refresh and its cooldown, the error codes, and the OpenAPI document;
//! plus API keys and client-credentials connections from the CLI and the console.

use connect_hub::{
    auth::api_keys::KeyScope,
    client_credentials::CredentialsInput,
    demo::token_server::FakeTokenServer,
    domain::{sha256, ConnectionId, Provider},
    time::now_ms,
};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::{api, csrf_from, spawn_app, spawn_token_server, unescape, TestApp};

async fn snapdocs(app: &TestApp) -> (FakeTokenServer, connect_hub::domain::ConnectionId) {
    let fake = FakeTokenServer::snapdocs("sd", "sd-secret");
    let url = format!("{}/oauth/token", spawn_token_server(&fake).await);
    let input = CredentialsInput { client_id: "sd".into(), token_url: Some(url), ..Default::default() };
    let id = app.add_credentials(Provider::Snapdocs, input, "sd-secret").await;
    (fake, id)
}

#[tokio::test]
async fn a_valid_key_gets_a_token_and_it_is_cached() {
    let app = spawn_app().await;
    let (fake, id) = snapdocs(&app).await;
    let (_, key) = app.api_key("billing").await;
    let res = app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["connection_id"], id.as_str());
    assert_eq!(v["provider"], "snapdocs");
    assert_eq!(v["token_type"], "Bearer");
    assert!(fake.is_valid(v["access_token"].as_str().unwrap()));
    assert!(v["expires_in"].as_i64().unwrap() > 3500);
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let again: Value = app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await.json().await.unwrap();
    assert_eq!(again["access_token"], v["access_token"]);
    assert_eq!(fake.calls(), 1, "refreshed only when needed");

    // Forced refreshes have a 5 s cooldown after each new token (see the cooldown test below): step past it.
    past_the_refresh_cooldown(&app).await;
    let forced: Value = app
        .api_get(&format!("/api/v1/connections/{id}/token?force_refresh=true"), Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(forced["access_token"], v["access_token"]);
    assert_eq!(fake.calls(), 2);
    past_the_refresh_cooldown(&app).await;
    let posted = reqwest::Client::new()
        .post(format!("{}/api/v1/connections/{id}/refresh", app.addr))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(fake.calls(), 3);
    let audit = app.state.store.audit_entries(Some(&id), None, 10).await.unwrap();
    assert!(audit.iter().any(|a| a.actor == "api:billing"), "the audit log names the key");
}

#[tokio::test]
async fn a_missing_unknown_or_revoked_key_is_refused() {
    let app = spawn_app().await;
    let (fake, id) = snapdocs(&app).await;
    let path = format!("/api/v1/connections/{id}/token");
    let res = app.api_get(&path, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"connect-hub\"");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "missing_api_key");
    let v: Value = app.api_get(&path, Some("chk_madeup")).await.json().await.unwrap();
    assert_eq!(v["error"], "invalid_api_key");

    let (key_id, key) = app.api_key("temp").await;
    assert_eq!(app.api_get(&path, Some(&key)).await.status(), 200);
    assert!(app.state.api_keys.revoke(&key_id, "test").await.unwrap());
    let res = app.api_get(&path, Some(&key)).await;
    assert_eq!(res.status(), 401, "revoked at once in this process");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "invalid_api_key");
    assert_eq!(fake.calls(), 1, "refused keys never reach the provider");
}

#[tokio::test]
async fn a_key_check_that_read_the_store_before_a_revoke_does_not_put_the_key_back_in_memory() {
    let app = spawn_app().await;
    let (_, id) = snapdocs(&app).await;
    let (key_id, key) = app.api_key("racing").await;
    let path = format!("/api/v1/connections/{id}/token");
    // A check reads the store just before the revoke, and keeps what it read just after.
    let read = app.state.api_keys.look_up(&secrecy::SecretString::from(key.clone())).await.unwrap();
    assert!(app.state.api_keys.revoke(&key_id, "test").await.unwrap());
    assert_eq!(app.state.api_keys.remember(read).map(|c| c.key_id), Some(key_id.clone()), "it read a live key");
    assert!(!app.state.api_keys.remembers(&key_id), "but memory does not keep it past the revoke");
    assert_eq!(app.api_get(&path, Some(&key)).await.status(), 401, "revoked at once");
}

#[tokio::test]
async fn a_key_revoked_from_the_shell_stops_working_within_two_seconds() {
    let app = spawn_app().await;
    let (_, id) = snapdocs(&app).await;
    let (key_id, key) = app.api_key("ci").await;
    let path = format!("/api/v1/connections/{id}/token");
    assert_eq!(app.api_get(&path, Some(&key)).await.status(), 200);
    let out = crate::helpers::hub(&app, &["api-key", "revoke", &key_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.api_get(&path, Some(&key)).await.status() != 401 {
        assert!(std::time::Instant::now() < deadline, "still accepted after 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn errors_have_stable_codes() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("errors").await;
    let code = |v: Value| v["error"].as_str().unwrap().to_owned();
    let res = app.api_get("/api/v1/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/token", Some(&key)).await;
    assert_eq!(res.status(), 404);
    assert_eq!(code(res.json().await.unwrap()), "connection_not_found");
    let res = app.api_get("/api/v1/connections/nonsense/token", Some(&key)).await;
    assert_eq!(res.status(), 404);
    let res = app.api_get("/api/v1/nothing-here", Some(&key)).await;
    assert_eq!(res.status(), 404);
    assert_eq!(code(res.json().await.unwrap()), "not_found");

    let (fake, id) = snapdocs(&app).await;
    let res = app.api_get(&format!("/api/v1/connections/{id}/token?force_refresh=maybe"), Some(&key)).await;
    assert_eq!(res.status(), 400);
    assert_eq!(code(res.json().await.unwrap()), "bad_query");

    fake.push_fault(503);
    let res = app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await;
    assert_eq!(res.status(), 502);
    assert_eq!(code(res.json().await.unwrap()), "provider_error");
    let res = app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(code(res.json().await.unwrap()), "backing_off");
}

#[tokio::test]
async fn snapinspect_connections_are_served_too() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    let (_, key) = app.api_key("inspections").await;
    let v: Value = app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await.json().await.unwrap();
    assert_eq!(v["access_token"], connected.access_token.as_str());
    assert_eq!(v["provider"], "snapinspect");
    assert!(v["expires_at"].is_null(), "SnapInspect tokens live until exchanged");
    assert_eq!(app.fake.exchange_calls(), 0);
    let forced: Value = app
        .api_get(&format!("/api/v1/connections/{id}/token?force_refresh=true"), Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(forced["access_token"], v["access_token"]);
    assert_eq!(app.fake.exchanges(), 1);

    // A dead refresh token: 409 needs_reconnect.
    past_the_refresh_cooldown(&app).await;
    app.fake.push_exchange_fault(connect_hub::demo::snapinspect::Fault::Status(400));
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/connections/{id}/refresh", app.addr))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "needs_reconnect");
}

#[tokio::test]
async fn the_list_shows_every_connection_without_secrets() {
    let app = spawn_app().await;
    let (_, sd) = snapdocs(&app).await;
    app.connect_company(6847).await;
    let (_, key) = app.api_key("list").await;
    let res = app.api_get("/api/v1/connections", Some(&key)).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains("sd-secret") && !text.contains("access_token"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let all = v["connections"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().any(|c| c["id"] == sd.as_str() && c["provider"] == "snapdocs"));
    assert!(all.iter().any(|c| c["company_id"] == 6847 && c["status"] == "active"));
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let res = app.api_get("/api/v1/openapi.json", None).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    for path in ["/connections", "/connections/{id}/token", "/connections/{id}/refresh"] {
        assert!(v["paths"][path].is_object(), "{path}");
    }
    assert_eq!(v["components"]["securitySchemes"]["apiKey"]["scheme"], "bearer");
}

#[tokio::test]
async fn api_keys_and_client_credentials_connections_from_the_shell() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::signicat("shell-id", "shell secret+1");
    let url = format!("{}/oauth/connect/token", spawn_token_server(&fake).await);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .env_clear()
        .envs(&app.vars)
        .env("CLIENT_SECRET", "shell secret+1")
        .args([
            "connections",
            "add",
            "--provider",
            "signicat",
            "--name",
            "Signicat prod",
            "--client-id",
            "shell-id",
            "--scope",
            "document_read",
            "--token-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let token = crate::helpers::hub(&app, &["connections", "token", &id]);
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    assert!(fake.is_valid(String::from_utf8_lossy(&token.stdout).trim()));
    let list = String::from_utf8_lossy(&crate::helpers::hub(&app, &["connections", "list"]).stdout).into_owned();
    assert!(list.contains("signicat") && list.contains("Signicat prod"));

    // Wrong input says what to fix.
    let bad =
        crate::helpers::hub(&app, &["connections", "add", "--provider", "custom", "--name", "x", "--client-id", "y"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("a custom provider needs a token URL (--token-url)"));
    let no_secret = crate::helpers::hub(
        &app,
        &["connections", "add", "--provider", "smartdocumentor", "--name", "x", "--client-id", "y"],
    );
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("no client secret"));

    let created = crate::helpers::hub(&app, &["api-key", "create", "--name", "from the shell"]);
    let key = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(key.starts_with("chk_"));
    let res = app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await;
    assert_eq!(res.status(), 200);
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("select key_hash from api_keys").fetch_all(app.state.store.pool()).await.unwrap();
    assert!(stored.iter().all(|h| h.len() == 32 && h.as_slice() != key.as_bytes()), "only a hash is stored");
    let listed = String::from_utf8_lossy(&crate::helpers::hub(&app, &["api-key", "list"]).stdout).into_owned();
    assert!(listed.contains("from the shell") && !listed.contains(&key));
}

#[tokio::test]
async fn the_console_adds_tests_edits_and_deletes_a_client_credentials_connection() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::smartdocumentor("console-id", "console-secret");
    let url = format!("{}/connect/token", spawn_token_server(&fake).await);
    let csrf = app.sign_in().await;
    assert!(app.page("/admin/connections/new").await.contains("Add a client-credentials connection"));

    // A form that breaks the preset is shown again with the reason, and without the secret.
    let res = app
        .admin_post(
            "/admin/connections/new",
            &[
                ("csrf", &csrf),
                ("provider", "smartdocumentor"),
                ("name", "SD"),
                ("client_id", "console-id"),
                ("client_secret", "console-secret"),
                ("scope", "Other"),
                ("token_url", &url),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(body.contains("always WebAPI") && !body.contains("console-secret"));

    let res = app
        .admin_post(
            "/admin/connections/new",
            &[
                ("csrf", &csrf),
                ("provider", "smartdocumentor"),
                ("name", "SmartDocumentor"),
                ("client_id", "console-id"),
                ("client_secret", "console-secret"),
                ("token_url", &url),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let detail_path = crate::helpers::location(&res);
    let id = detail_path.rsplit('/').next().unwrap().to_owned();
    let page = app.page(&detail_path).await;
    assert!(page.contains("console-id") && page.contains("WebAPI") && !page.contains("console-secret"));

    app.admin_post(&format!("/admin/connections/{id}/test"), &[("csrf", &csrf)]).await;
    let page = app.page(&detail_path).await;
    assert!(page.contains("It works: SmartDocumentor issued a token"), "{page}");
    assert_eq!(fake.issued(), 1);

    // Edit: the secret is write-only, an empty field keeps it.
    let edit = app.page(&format!("/admin/connections/{id}/edit")).await;
    assert!(!edit.contains("console-secret") && edit.contains("leave empty to keep"));
    app.admin_post(
        &format!("/admin/connections/{id}/edit"),
        &[
            ("csrf", &csrf),
            ("name", "SmartDocumentor renamed"),
            ("client_id", "console-id"),
            ("client_secret", ""),
            ("token_url", &url),
        ],
    )
    .await;
    app.admin_post(&format!("/admin/connections/{id}/test"), &[("csrf", &csrf)]).await;
    let page = app.page(&detail_path).await;
    assert!(page.contains("SmartDocumentor renamed") && page.contains("It works"), "the kept secret still works");
    // A wrong new secret: the test says so in plain words.
    app.admin_post(
        &format!("/admin/connections/{id}/edit"),
        &[
            ("csrf", &csrf),
            ("name", "SD"),
            ("client_id", "console-id"),
            ("client_secret", "wrong"),
            ("token_url", &url),
        ],
    )
    .await;
    app.admin_post(&format!("/admin/connections/{id}/test"), &[("csrf", &csrf)]).await;
    assert!(app
        .page(&detail_path)
        .await
        .contains("did not issue a token: the client id or secret is wrong or expired"));

    assert!(app.page(&format!("/admin/connections/{id}/delete")).await.contains("Yes, delete"));
    let res = app.admin_post(&format!("/admin/connections/{id}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!(crate::helpers::location(&res), "/admin/connections");
    assert_eq!(app.get(&detail_path).await.status(), 404);
    assert!(app.page("/admin/audit").await.contains("connection deleted"));
}

#[tokio::test]
async fn a_client_credentials_page_shows_no_snapinspect_fields_and_says_not_yet_used() {
    let app = crate::helpers::spawn_app().await;
    let fake = connect_hub::demo::token_server::FakeTokenServer::snapdocs("sd", "sd-secret");
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
    // The name's error is beside the name.
    let fields =
        [("csrf", csrf.as_str()), ("name", " "), ("provider", "snapdocs"), ("client_id", "id"), ("client_secret", "s")];
    let res = app.admin_post("/admin/connections/new", &fields).await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    let beside = page.split("id=\"name-error\">").nth(1).unwrap_or_else(|| panic!("shown beside the name: {page}"));
    assert!(beside.starts_with("give the connection a name"), "{beside}");
    assert!(!page.contains("id=\"form-error\""));
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
async fn the_console_creates_shows_once_and_revokes_api_keys() {
    let app = spawn_app().await;
    let (_, id) = snapdocs(&app).await;
    let csrf = app.sign_in().await;
    let res = app.admin_post("/admin/api-keys", &[("csrf", &csrf), ("name", "warehouse")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let page = res.text().await.unwrap();
    let start = page.find("<pre id=\"new-key\">").unwrap() + "<pre id=\"new-key\">".len();
    let key = page[start..].split('<').next().unwrap().to_owned();
    assert!(key.starts_with("chk_"));
    assert_eq!(app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await.status(), 200);
    let list = app.page("/admin/api-keys").await;
    assert!(list.contains("warehouse") && !list.contains(&key), "shown once, never again");
    let key_id = list.split("href=\"/admin/api-keys/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    // Revoking asks first: the confirmation page carries the form.
    let confirm = app.page(&format!("/admin/api-keys/{key_id}/revoke")).await;
    assert!(confirm.contains("warehouse"), "{confirm}");
    app.admin_post(&format!("/admin/api-keys/{key_id}/revoke"), &[("csrf", &csrf_from(&confirm))]).await;
    assert!(app.page("/admin/api-keys").await.contains("revoked"));
    assert_eq!(app.api_get(&format!("/api/v1/connections/{id}/token"), Some(&key)).await.status(), 401);
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

/// Make the last new token older than the forced-refresh cooldown.
async fn past_the_refresh_cooldown(app: &crate::helpers::TestApp) {
    sqlx::query("update connections set last_exchange_at = last_exchange_at - 10000")
        .execute(app.state.store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_limited_to_some_connections_gets_404_for_the_others() {
    let app = spawn_app().await;
    let mine = app.connect_company(6847).await;
    let theirs = app.connect_company(7012).await;
    let scope = KeyScope { connections: Some(vec![mine.clone()]), read_only: false };
    let (_, key) = app.state.api_keys.create_scoped("limited", &scope, "test").await.unwrap();
    let key = key.expose_secret().to_owned();

    let (status, list) = api(&app, reqwest::Method::GET, "/connections", &key).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["connections"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [mine.as_str()]);
    for (method, path) in [
        (reqwest::Method::GET, format!("/connections/{theirs}/token")),
        (reqwest::Method::GET, format!("/connections/{theirs}/token?force_refresh=true")),
        (reqwest::Method::POST, format!("/connections/{theirs}/refresh")),
    ] {
        let (status, body) = api(&app, method, &path, &key).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("connection_not_found")), "{path}");
    }
    let (status, _) = api(&app, reqwest::Method::GET, &format!("/connections/{mine}/token"), &key).await;
    assert_eq!(status, 200);
    let (status, _) = api(&app, reqwest::Method::POST, &format!("/connections/{mine}/refresh"), &key).await;
    assert_eq!(status, 200);
    assert!(
        app.state
            .api_keys
            .create_scoped("x", &KeyScope { connections: Some(vec![ConnectionId::generate()]), read_only: false }, "t")
            .await
            .is_err(),
        "an unknown connection is refused"
    );
}

#[tokio::test]
async fn a_read_only_key_cannot_force_a_refresh() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let scope = KeyScope { connections: None, read_only: true };
    let (_, key) = app.state.api_keys.create_scoped("reader", &scope, "test").await.unwrap();
    let key = key.expose_secret().to_owned();
    let (status, body) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), &key).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("read_only_key")), "{body}");
    let (status, body) =
        api(&app, reqwest::Method::GET, &format!("/connections/{id}/token?force_refresh=true"), &key).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("read_only_key")), "{body}");
    let (status, _) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!(status, 200, "it can still read tokens");
    assert_eq!(app.fake.exchange_calls(), 0);
}

#[tokio::test]
async fn keys_made_before_scoping_keep_full_access() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let key = "chk_OLDKEYOLDKEYOLDKEYOLDKEYOLDKEYOLDKEYOLDKEYOLDKEYOLDK";
    // As a key row was written before migration 0007: no scope columns given.
    sqlx::query("insert into api_keys (id, name, key_hash, prefix, created_at) values ('key_old', 'old', $1, 'chk_OLDKEYOL', 0)")
        .bind(sha256(key.as_bytes()))
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let (status, list) = api(&app, reqwest::Method::GET, "/connections", key).await;
    assert_eq!((status, list["connections"].as_array().unwrap().len()), (200, 1));
    let (status, _) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), key).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_forced_refresh_within_the_cooldown_hands_back_the_token_just_made() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("app").await;
    // A connect is not a rotation: the first forced refresh after it exchanges.
    let (status, first) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), &key).await;
    assert_eq!(status, 200);
    for path in [format!("/connections/{id}/refresh"), format!("/connections/{id}/token?force_refresh=true")] {
        let method = if path.ends_with("refresh") { reqwest::Method::POST } else { reqwest::Method::GET };
        let (status, again) = api(&app, method, &path, &key).await;
        assert_eq!(status, 200);
        assert_eq!(again["access_token"], first["access_token"], "the token just made, not a new rotation");
    }
    assert_eq!(app.fake.exchanges(), 1);
    // Once the cooldown is over, a forced refresh rotates again.
    sqlx::query("update connections set last_exchange_at = $1")
        .bind(now_ms() - 5_001)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let (_, later) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), &key).await;
    assert_ne!(later["access_token"], first["access_token"]);
    assert_eq!(app.fake.exchanges(), 2);
}

#[tokio::test]
async fn api_key_create_takes_connections_and_read_only_from_the_shell() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let other = app.connect_company(7012).await;
    let out =
        crate::helpers::hub(&app, &["api-key", "create", "--name", "ci", "--connections", id.as_str(), "--read-only"]);
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (status, _) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!(status, 200);
    let (status, _) = api(&app, reqwest::Method::GET, &format!("/connections/{other}/token"), &key).await;
    assert_eq!(status, 404);
    let (status, _) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), &key).await;
    assert_eq!(status, 403);
    let bad = crate::helpers::hub(&app, &["api-key", "create", "--name", "ci", "--connections", "con_nope"]);
    assert!(!bad.status.success());
    let list = String::from_utf8(crate::helpers::hub(&app, &["api-key", "list"]).stdout).unwrap();
    assert!(list.contains(&format!("{id}, read-only")), "{list}");
}

#[tokio::test]
async fn the_console_creates_a_scoped_read_only_key() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let id = app.connect_company(6847).await;
    let other = app.connect_company(7012).await;
    let res = app
        .admin_post(
            "/admin/api-keys",
            &[("csrf", &csrf), ("name", "dash"), ("connections", id.as_str()), ("read_only", "on")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    let marker = "<pre id=\"new-key\">";
    let start = page.find(marker).unwrap() + marker.len();
    let key = page[start..].split('<').next().unwrap().to_owned();
    assert!(page.contains(&format!("{id}; read-only")), "{page}");
    let (status, _) = api(&app, reqwest::Method::GET, &format!("/connections/{other}/token"), &key).await;
    assert_eq!(status, 404);
    let (status, _) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), &key).await;
    assert_eq!(status, 403);
    // A made-up connection id is refused with a message, not a 500.
    let csrf = csrf_from(&app.page("/admin/api-keys").await);
    let res = app.admin_post("/admin/api-keys", &[("csrf", &csrf), ("name", "x"), ("connections", "con_nope")]).await;
    assert_eq!(res.status(), 400, "the form again, saying why");
    let page = res.text().await.unwrap();
    assert!(page.contains("not a connection id"), "{page}");
    assert!(
        page.contains("id=\"name\" name=\"name\" required maxlength=\"100\" value=\"x\""),
        "the name is kept: {page}"
    );
}
