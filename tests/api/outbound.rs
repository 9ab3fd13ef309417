//! What the hub sends out and reads back: a stored client secret only goes where it went before,
//! stored URLs cannot reach loopback or private addresses unless allowed, and every answer is read
//! with a cap, so a huge one is a clear error and not memory growth.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use connect_hub::{
    client_credentials::{AuthStyle, CredentialsInput},
    demo::token_server::FakeTokenServer,
    domain::{ConnectionId, Provider},
    tokens::TokenError,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::helpers::{spawn_app, spawn_app_with, spawn_token_server, TestApp};

const SECRET: &str = "the-stored-secret";

/// A test app whose stored URLs may reach no private address at all.
async fn spawn_app_without_allowance() -> TestApp {
    spawn_app_with(|vars| {
        vars.remove("OUTBOUND_ALLOW_NETWORKS");
    })
    .await
}

fn custom(url: &str) -> CredentialsInput {
    CredentialsInput {
        client_id: "cc-id".into(),
        token_url: Some(url.to_owned()),
        auth: Some(AuthStyle::Basic),
        ..Default::default()
    }
}

async fn token_error(app: &TestApp, id: &ConnectionId) -> String {
    match app.state.tokens.token(id).await {
        Err(TokenError::Provider(message)) => message,
        other => panic!("expected the token request to fail, got {:?}", other.map(|t| t.version)),
    }
}

/// The connection's settings as stored.
async fn stored_token_url(app: &TestApp, id: &ConnectionId) -> String {
    app.state.store.credentials(id).await.unwrap().unwrap().settings.token_url
}

// ---- The write-only secret only goes where it went before ----

async fn add_in_console(app: &TestApp, csrf: &str, url: &str) -> ConnectionId {
    let res = app
        .admin_post(
            "/admin/connections/new",
            &[
                ("csrf", csrf),
                ("provider", "custom"),
                ("name", "Custom"),
                ("client_id", "cc-id"),
                ("client_secret", SECRET),
                ("token_url", url),
                ("auth", "basic"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "added: {}", res.text().await.unwrap());
    ConnectionId::parse(crate::helpers::location(&res).rsplit('/').next().unwrap()).unwrap()
}

async fn edit(app: &TestApp, csrf: &str, id: &ConnectionId, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("csrf", csrf), ("name", "Custom")];
    form.extend_from_slice(fields);
    app.admin_post(&format!("/admin/connections/{id}/edit"), &form).await
}

#[tokio::test]
async fn changing_only_the_token_url_with_an_empty_secret_is_refused_and_the_new_host_hears_nothing() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let good = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let good_url = format!("{}{}", spawn_token_server(&good).await, good.token_path());
    let thief = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let thief_url = format!("{}{}", spawn_token_server(&thief).await, thief.token_path());
    let id = add_in_console(&app, &csrf, &good_url).await;

    let res = edit(
        &app,
        &csrf,
        &id,
        &[("client_id", "cc-id"), ("client_secret", ""), ("token_url", &thief_url), ("auth", "basic")],
    )
    .await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    let beside = page.split("id=\"client_secret-error\"").nth(1).expect("the error is shown beside the secret field");
    assert!(beside.starts_with(">enter the client secret again"), "{page}");
    assert!(page.contains(&thief_url), "the form keeps what was typed");
    assert_eq!(stored_token_url(&app, &id).await, good_url, "nothing was saved");

    // "Test connection" still goes to the stored URL only.
    app.admin_post(&format!("/admin/connections/{id}/test"), &[("csrf", &csrf)]).await;
    assert_eq!(good.issued(), 1);
    assert_eq!(thief.calls(), 0, "the new host received nothing");
}

#[tokio::test]
async fn moving_the_api_url_needs_the_secret_again_and_a_kept_one_is_shown_only_when_not_the_presets() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let fake = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let url = format!("{}{}", spawn_token_server(&fake).await, fake.token_path());
    let id = add_in_console(&app, &csrf, &url).await;
    let fields = [("client_id", "cc-id"), ("token_url", url.as_str()), ("auth", "basic")];
    let moved = [&fields[..], &[("client_secret", ""), ("api_url", "https://127.0.0.1:9/stolen/")]].concat();
    let res = edit(&app, &csrf, &id, &moved).await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    assert!(page.split("id=\"client_secret-error\"").nth(1).unwrap().starts_with(">enter the client secret again"));
    assert_eq!(app.state.store.connection(&id).await.unwrap().unwrap().api_url, None, "nothing was saved");
    let with_secret = [&fields[..], &[("client_secret", SECRET), ("api_url", "https://127.0.0.1:9/api")]].concat();
    assert_eq!(edit(&app, &csrf, &id, &with_secret).await.status(), 303);
    assert_eq!(
        app.state.store.connection(&id).await.unwrap().unwrap().api_url.as_deref(),
        Some("https://127.0.0.1:9/api")
    );
    let form = app.page(&format!("/admin/connections/{id}/edit")).await;
    assert!(form.contains("value=\"https://127.0.0.1:9/api\""), "a custom API URL is shown in the form");

    // A Snapdocs connection keeps its preset API URL blank in the form, so the environment moves it.
    let input = connect_hub::client_credentials::CredentialsInput {
        client_id: "sd".into(),
        token_url: Some(url.clone()),
        environment: Some("demo".into()),
        ..Default::default()
    };
    let sd = app.add_credentials(connect_hub::domain::Provider::Snapdocs, input, SECRET).await;
    let stored = app.state.store.connection(&sd).await.unwrap().unwrap();
    assert_eq!(stored.api_url.as_deref(), Some("https://api.cs-demo0.snpd.io/"));
    let form = app.page(&format!("/admin/connections/{sd}/edit")).await;
    assert!(form.contains("id=\"api_url\" name=\"api_url\" value=\"\""), "{form}");
}

#[tokio::test]
async fn the_client_id_and_auth_method_need_the_secret_again_but_a_rename_does_not() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let fake = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let url = format!("{}{}", spawn_token_server(&fake).await, fake.token_path());
    let id = add_in_console(&app, &csrf, &url).await;

    for (what, fields) in [
        (
            "client id",
            [("client_id", "other-id"), ("client_secret", ""), ("token_url", url.as_str()), ("auth", "basic")],
        ),
        ("auth", [("client_id", "cc-id"), ("client_secret", ""), ("token_url", url.as_str()), ("auth", "post")]),
    ] {
        let res = edit(&app, &csrf, &id, &fields).await;
        assert_eq!(res.status(), 400, "{what}");
        assert!(res.text().await.unwrap().contains("id=\"client_secret-error\""), "{what}");
    }
    let stored = app.state.store.credentials(&id).await.unwrap().unwrap().settings;
    assert_eq!((stored.client_id.as_str(), stored.auth), ("cc-id", AuthStyle::Basic), "nothing was saved");

    // The same destination keeps the stored secret: a rename saves.
    let res = edit(
        &app,
        &csrf,
        &id,
        &[("client_id", "cc-id"), ("client_secret", ""), ("token_url", &url), ("auth", "basic")],
    )
    .await;
    assert_eq!(res.status(), 303);
    // A new destination with the secret typed again saves too.
    let moved = format!("{url}?moved=1");
    let res = edit(
        &app,
        &csrf,
        &id,
        &[("client_id", "cc-id"), ("client_secret", SECRET), ("token_url", &moved), ("auth", "basic")],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(stored_token_url(&app, &id).await, moved);
}

// ---- Stored URLs cannot reach private addresses unless an operator allows them ----

#[tokio::test]
async fn a_stored_loopback_token_url_is_refused_without_an_allowance_and_the_fake_hears_nothing() {
    let app = spawn_app_without_allowance().await;
    let fake = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let base = spawn_token_server(&fake).await;
    assert!(base.starts_with("http://127.0.0.1:"));
    // Stored directly, as the API or an older version could have: the guard is at the call.
    let id = app.add_credentials(Provider::Custom, custom(&format!("{base}{}", fake.token_path())), SECRET).await;
    let message = token_error(&app, &id).await;
    assert!(message.contains("127.0.0.1 is a loopback address"), "{message}");
    assert!(message.contains("OUTBOUND_ALLOW_NETWORKS"), "{message}");
    assert_eq!(fake.calls(), 0, "the fake received no request");
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.last_error.as_deref(), Some(message.as_str()), "the admin sees why");
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_when_it_is_resolved() {
    let app = spawn_app_without_allowance().await;
    let fake = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let base = spawn_token_server(&fake).await.replace("127.0.0.1", "localhost");
    let id = app.add_credentials(Provider::Custom, custom(&format!("{base}{}", fake.token_path())), SECRET).await;
    let message = token_error(&app, &id).await;
    assert!(message.starts_with("localhost resolves to "), "{message}");
    assert!(message.contains("a loopback address"), "{message}");
    assert_eq!(fake.calls(), 0, "the fake received no request");
}

#[tokio::test]
async fn an_allowed_network_lets_the_same_token_url_through() {
    // spawn_app allows 127.0.0.0/8; `localhost` also resolves to ::1, which is dropped, not fatal.
    let app = spawn_app().await;
    let fake = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let base = spawn_token_server(&fake).await;
    for base in [base.clone(), base.replace("127.0.0.1", "localhost")] {
        let id = app.add_credentials(Provider::Custom, custom(&format!("{base}{}", fake.token_path())), SECRET).await;
        let token = app.state.tokens.token(&id).await.unwrap();
        assert!(fake.is_valid(secrecy::ExposeSecret::expose_secret(&token.token)));
    }
    assert_eq!(fake.issued(), 2);
}

#[tokio::test]
async fn the_console_refuses_a_token_url_on_a_blocked_address_beside_the_field() {
    let app = spawn_app_without_allowance().await;
    let csrf = app.sign_in().await;
    for url in ["http://127.0.0.1:9/token", "https://[::ffff:169.254.169.254]/token", "https://10.0.0.8/token"] {
        let res = app
            .admin_post(
                "/admin/connections/new",
                &[
                    ("csrf", &csrf),
                    ("provider", "custom"),
                    ("name", "Custom"),
                    ("client_id", "cc-id"),
                    ("client_secret", SECRET),
                    ("token_url", url),
                    ("auth", "basic"),
                ],
            )
            .await;
        assert_eq!(res.status(), 400, "{url}");
        let page = res.text().await.unwrap();
        let beside = page.split("id=\"token_url-error\"").nth(1).expect("the error is shown beside the token URL");
        assert!(beside.starts_with(">this token URL cannot be used: "), "{page}");
        assert!(!page.contains(SECRET));
    }
    assert_eq!(app.connection_count().await, 0, "nothing was stored");
}

#[tokio::test]
async fn the_cli_refuses_a_token_url_on_a_blocked_address() {
    let app = spawn_app_without_allowance().await;
    let args = [
        "connections",
        "add",
        "--provider",
        "custom",
        "--name",
        "x",
        "--client-id",
        "y",
        "--auth",
        "basic",
        "--token-url",
        "http://127.0.0.1:9/token",
    ];
    let out = crate::helpers::hub(&app, &args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--token-url cannot be used: 127.0.0.1 is a loopback address"), "{stderr}");
    assert_eq!(app.connection_count().await, 0);
}

#[tokio::test]
async fn an_api_url_on_a_blocked_address_is_refused_by_the_cli_and_the_console() {
    let app = spawn_app_without_allowance().await;
    let args = [
        "connections",
        "add",
        "--provider",
        "signicat",
        "--name",
        "x",
        "--client-id",
        "y",
        "--scope",
        "s",
        "--api-url",
        "https://10.0.0.8/api/",
    ];
    let out = crate::helpers::hub(&app, &args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-url cannot be used: 10.0.0.8 is"), "{stderr}");
    let plain = crate::helpers::hub(&app, &[&args[..11], &["http://api.example.com/"]].concat());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("the API URL must be https"), "only loopback may be http");
    let csrf = app.sign_in().await;
    let res = app
        .admin_post(
            "/admin/connections/new",
            &[
                ("csrf", &csrf),
                ("provider", "signicat"),
                ("name", "S"),
                ("client_id", "cc-id"),
                ("client_secret", SECRET),
                ("scope", "s"),
                ("api_url", "https://[::ffff:169.254.169.254]/"),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    let beside = page.split("id=\"api_url-error\"").nth(1).expect("the error is shown beside the API URL");
    assert!(beside.starts_with(">this API URL cannot be used: "), "{page}");
    assert_eq!(app.connection_count().await, 0, "nothing was stored");
}

// ---- Token URLs and endpoints are allowed networks separately ----

/// A POST of `url` as a new endpoint through the API: the status and the answer.
async fn add_endpoint(app: &TestApp, key: &str, url: &str) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/endpoints", app.addr))
        .bearer_auth(key)
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or_default())
}

/// The delivery errors of one event's only delivery.
async fn delivery_errors(app: &TestApp, event: &connect_hub::domain::EventId) -> Vec<String> {
    let store = &app.state.store;
    let d = store.event_deliveries(app.event(event).await.rowid).await.unwrap().remove(0);
    store.delivery_attempts(d.id).await.unwrap().into_iter().map(|a| a.error.unwrap_or_default()).collect()
}

#[tokio::test]
async fn allowing_token_urls_into_a_network_does_not_let_endpoints_post_into_it() {
    let app = spawn_app_with(|vars| {
        vars.remove("OUTBOUND_ALLOW_NETWORKS");
        vars.insert("TOKEN_URL_ALLOW_NETWORKS".into(), "127.0.0.0/8".into());
    })
    .await;
    // The internal identity provider answers.
    let idp = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let base = spawn_token_server(&idp).await;
    let id = app.add_credentials(Provider::Custom, custom(&format!("{base}{}", idp.token_path())), SECRET).await;
    app.state.tokens.token(&id).await.expect("the token URL is allowed");
    assert_eq!(idp.issued(), 1);

    // An endpoint on the same network is refused when added, and says which setting would allow it.
    let (_, key) = app.api_key("console").await;
    let (r, url) = crate::helpers::receiver();
    let (status, v) = add_endpoint(&app, &key, &url).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_url")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("ENDPOINT_ALLOW_NETWORKS"), "{v}");
    // A name that resolves there is refused when delivering: nothing reaches the network.
    let (status, _) = add_endpoint(&app, &key, &url.replace("127.0.0.1", "localhost")).await;
    assert_eq!(status, 201);
    app.connect_company(6847).await;
    let event = app.send_event(crate::helpers::SIGNED).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(r.count(), 0, "the receiver heard nothing");
    let errors = delivery_errors(&app, &event).await;
    assert!(!errors.is_empty() && errors.iter().all(|e| e.contains("ENDPOINT_ALLOW_NETWORKS")), "{errors:?}");
}

#[tokio::test]
async fn allowing_endpoints_into_a_network_does_not_let_token_urls_reach_it() {
    let app = spawn_app_with(|vars| {
        vars.remove("OUTBOUND_ALLOW_NETWORKS");
        vars.insert("ENDPOINT_ALLOW_NETWORKS".into(), "127.0.0.0/8".into());
    })
    .await;
    let (_, key) = app.api_key("console").await;
    let (r, url) = crate::helpers::receiver();
    let (status, v) = add_endpoint(&app, &key, &url).await;
    assert_eq!(status, 201, "{v}");
    app.connect_company(6847).await;
    let event = app.send_event(crate::helpers::SIGNED).await;
    app.state.worker.drain().await.unwrap();
    assert!(r.received().iter().any(|d| d.webhook_id == event.as_str()), "the endpoint is allowed");

    let fake = FakeTokenServer::custom(
        "cc-id",
        SECRET,
        connect_hub::demo::token_server::CredentialsIn::Basic { decode: true },
    );
    let base = spawn_token_server(&fake).await;
    let id = app.add_credentials(Provider::Custom, custom(&format!("{base}{}", fake.token_path())), SECRET).await;
    let message = token_error(&app, &id).await;
    assert!(message.contains("loopback") && message.contains("TOKEN_URL_ALLOW_NETWORKS"), "{message}");
    assert_eq!(fake.calls(), 0, "the token URL heard nothing");
}

// ---- Only the operator's FORWARD_URL is trusted ----

#[tokio::test]
async fn the_forward_endpoint_is_guarded_like_any_other_once_forward_url_no_longer_defines_it() {
    let mut app = spawn_app_with(|vars| {
        vars.remove("OUTBOUND_ALLOW_NETWORKS");
        crate::helpers::forwarding(vars);
    })
    .await;
    let heard = |app: &TestApp, id: &connect_hub::domain::EventId| {
        app.receiver.received().iter().any(|d| d.webhook_id == id.as_str())
    };
    app.connect_company(6847).await;
    let first = app.send_event(crate::helpers::CREATE).await;
    app.state.worker.drain().await.unwrap();
    assert!(heard(&app, &first), "FORWARD_URL is the operator's: trusted although it is loopback");

    // The operator removes FORWARD_URL; the endpoint it made stays, with its loopback URL.
    app.vars.remove("FORWARD_URL");
    app.restart().await;
    let event = app.send_event(crate::helpers::SIGNED).await;
    app.state.worker.drain().await.unwrap();
    assert!(!heard(&app, &event), "no longer trusted: the guard refused the delivery");
    let errors = delivery_errors(&app, &event).await;
    assert!(!errors.is_empty() && errors.iter().all(|e| e.contains("a loopback address")), "{errors:?}");
}

// ---- Answers are read with a cap ----

/// A server that answers every request with `status` and an endless chunked body (200 MiB at
/// most), counting the body bytes it managed to send before the client hung up.
async fn endless_answer(status: u16) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk, b"\r\n".to_vec()].concat();
                for _ in 0..(200 * 16) {
                    if socket.write_all(&framed).await.is_err() {
                        return;
                    }
                    counter.fetch_add(64 * 1024, Ordering::Relaxed);
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (base, sent)
}

const MIB: u64 = 1024 * 1024;

/// What the reader can have taken in at most: what the server managed to write before the reader
/// stopped, i.e. the cap plus what loopback's socket buffers hold (a few MiB). A reader without a
/// cap takes all 200 MiB. (This counts bytes, where `VmHWM` would count every test running beside
/// this one in the same process.)
const MOST_THE_SERVER_MAY_SEND: u64 = 24 * MIB;

#[tokio::test]
async fn a_token_url_streaming_200_mib_is_a_clear_error_and_memory_stays_flat() {
    let app = spawn_app().await;
    let (base, sent) = endless_answer(200).await;
    let id = app.add_credentials(Provider::Custom, custom(&format!("{base}/token")), SECRET).await;
    let message = token_error(&app, &id).await;
    assert!(message.contains("the answer from the token URL (127.0.0.1) is larger than 1 MiB"), "{message}");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < MOST_THE_SERVER_MAY_SEND, "reading stopped at the cap, not after {} MiB", sent / MIB);
}

#[tokio::test]
async fn an_error_answer_streaming_200_mib_is_cut_to_an_excerpt() {
    let app = spawn_app().await;
    let (base, sent) = endless_answer(500).await;
    let id = app.add_credentials(Provider::Custom, custom(&format!("{base}/token")), SECRET).await;
    let message = token_error(&app, &id).await;
    assert!(message.starts_with(&format!("Custom answered HTTP 500: {}…", "x".repeat(200))), "{message}");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < MOST_THE_SERVER_MAY_SEND, "reading stopped at the cap, not after {} MiB", sent / MIB);
}

#[tokio::test]
async fn a_snapinspect_api_answer_streaming_200_mib_does_not_grow_memory() {
    let (base, sent) = endless_answer(200).await;
    let app = spawn_app_with(|vars| {
        vars.insert("SNAPINSPECT_API_URL".into(), format!("{base}/"));
    })
    .await;
    // The connect flow asks `GET /user` who connected; the answer never ends.
    let _ = app.connect(Some(6847)).await;
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < MOST_THE_SERVER_MAY_SEND, "reading stopped at the cap, not after {} MiB", sent / MIB);
}

#[tokio::test]
async fn a_receiver_error_streaming_200_mib_is_kept_as_a_short_excerpt() {
    let (base, sent) = endless_answer(500).await;
    let app = spawn_app_with(|vars| {
        vars.insert("FORWARD_URL".into(), format!("{base}/events"));
    })
    .await;
    app.connect_company(6847).await;
    let id = app.send_event(r#"{ "sType": "Create_Inspection", "iInspectionID": 1388563, "iCompanyID": 6847 }"#).await;
    app.state.worker.drain().await.unwrap();
    let store = &app.state.store;
    let delivery = store.event_deliveries(app.event(&id).await.rowid).await.unwrap().remove(0);
    let error = delivery.last_error.unwrap();
    assert!(error.starts_with("the receiver answered HTTP 500"), "{error}");
    let attempt = store.delivery_attempts(delivery.id).await.unwrap().remove(0);
    assert_eq!(attempt.response_excerpt, Some("x".repeat(1024)), "the first KiB of the answer, and no more");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < MOST_THE_SERVER_MAY_SEND, "reading stopped at the cap, not after {} MiB", sent / MIB);
}

#[tokio::test]
async fn a_snapinspect_exchange_answer_streaming_200_mib_is_a_clear_error() {
    let (base, sent) = endless_answer(200).await;
    let app = spawn_app_with(|vars| {
        vars.insert("SNAPINSPECT_EXCHANGE_URL".into(), format!("{base}/integration/ExchangeToken"));
    })
    .await;
    let id = app.connect_company(6847).await;
    let error = app.state.tokens.refresh(&id, "test").await.expect_err("the exchange fails").to_string();
    assert!(error.contains("the answer from SnapInspect's ExchangeToken is larger than 1 MiB"), "{error}");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < MOST_THE_SERVER_MAY_SEND, "reading stopped at the cap, not after {} MiB", sent / MIB);
}
