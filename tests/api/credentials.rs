//! Client-credentials connections against each provider's fake: the right request shape is
//! accepted, the wrong one refused with a message that says why, in one sentence wherever it is
//! shown; caching (and forgetting what another process deleted), expiry, the storm, backoff.

use std::net::TcpListener;

use connect_hub::{
    client_credentials::{AuthStyle, CredentialsInput},
    demo::token_server::{CredentialsIn, FakeTokenServer},
    domain::{ConnectionStatus, Provider},
    time::now_ms,
    tokens::TokenError,
};
use futures_util::future::join_all;
use secrecy::ExposeSecret;

use crate::helpers::{api, eventually, signicat_at, spawn_app, spawn_app_with, spawn_token_server, unescape, TestApp};

/// A secret with every character RFC 6749 §2.3.1's encoding matters for.
const TRICKY: &str = "s3cr+t%20:with space/é";

fn input(client_id: &str, url: String) -> CredentialsInput {
    CredentialsInput { client_id: client_id.into(), token_url: Some(url), ..Default::default() }
}

async fn refused(app: &TestApp, id: &connect_hub::domain::ConnectionId) -> String {
    match app.state.tokens.token(id).await {
        Err(TokenError::Provider(message)) => message,
        other => panic!("expected a refusal, got {:?}", other.map(|t| t.version)),
    }
}

#[tokio::test]
async fn snapdocs_takes_body_credentials_and_an_audience() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::snapdocs("sd-id", TRICKY);
    let url = format!("{}/oauth/token", spawn_token_server(&fake).await);
    let demo = CredentialsInput { environment: Some("demo".into()), ..input("sd-id", url.clone()) };
    let id = app.add_credentials(Provider::Snapdocs, demo, TRICKY).await;
    let t = app.state.tokens.token(&id).await.unwrap();
    assert!(fake.is_valid(t.token.expose_secret()));
    assert_eq!(fake.last_audience().as_deref(), Some("https://api.*.snpd.io"), "the demo environment's audience");

    // Credentials by HTTP Basic are refused, and the message says where they belong.
    let basic = CredentialsInput { auth: Some(AuthStyle::Basic), ..input("sd-id", url.clone()) };
    let id = app.add_credentials(Provider::Snapdocs, basic, TRICKY).await;
    let msg = refused(&app, &id).await;
    assert!(msg.contains("must be sent in the form body"), "{msg}");
    // Without an audience (a custom connection to the same server) it is refused too.
    let no_audience = CredentialsInput { auth: Some(AuthStyle::Post), ..input("sd-id", url) };
    let id = app.add_credentials(Provider::Custom, no_audience, TRICKY).await;
    assert!(refused(&app, &id).await.contains("audience is required"));
}

#[tokio::test]
async fn smartdocumentor_takes_body_credentials_and_scope_webapi() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::smartdocumentor("sm-id", "sm-secret");
    let url = format!("{}/connect/token", spawn_token_server(&fake).await);
    let id = app.add_credentials(Provider::SmartDocumentor, input("sm-id", url.clone()), "sm-secret").await;
    app.state.tokens.token(&id).await.unwrap();
    assert_eq!(fake.last_scope().as_deref(), Some("WebAPI"));

    let wrong = app.add_credentials(Provider::SmartDocumentor, input("sm-id", url.clone()), "not-the-secret").await;
    let msg = refused(&app, &wrong).await;
    assert!(msg.starts_with("the client id or secret is wrong or expired"), "{msg}");
    assert!(!msg.contains("not-the-secret"));
    let c = app.state.store.connection(&wrong).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Failing);
    assert_eq!(c.last_error.as_deref(), Some(msg.as_str()), "the admin sees the same words");

    let no_scope = CredentialsInput { auth: Some(AuthStyle::Post), ..input("sm-id", url) };
    let id = app.add_credentials(Provider::Custom, no_scope, "sm-secret").await;
    assert!(refused(&app, &id).await.contains("not allowed that scope"));
}

#[tokio::test]
async fn signicat_takes_http_basic_with_form_encoded_credentials_and_scopes() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::signicat("sig id+1", TRICKY);
    let url = format!("{}/oauth/connect/token", spawn_token_server(&fake).await);
    let ok = CredentialsInput { scope: Some("document_read,document_write".into()), ..input("sig id+1", url.clone()) };
    let id = app.add_credentials(Provider::Signicat, ok, TRICKY).await;
    app.state.tokens.token(&id).await.unwrap();
    assert_eq!(fake.last_scope().as_deref(), Some("document_read document_write"), "space-separated on the wire");

    let in_body = CredentialsInput {
        scope: Some("document_read".into()),
        auth: Some(AuthStyle::Post),
        ..input("sig id+1", url.clone())
    };
    let id = app.add_credentials(Provider::Signicat, in_body, TRICKY).await;
    assert!(refused(&app, &id).await.contains("must use HTTP Basic"));

    let no_scope = CredentialsInput { auth: Some(AuthStyle::Basic), ..input("sig id+1", url) };
    let id = app.add_credentials(Provider::Custom, no_scope, TRICKY).await;
    assert!(refused(&app, &id).await.contains("not allowed that scope"));
}

#[tokio::test]
async fn docplanner_fills_the_domain_in_takes_basic_and_caps_tokens_at_a_day() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::docplanner("dp-id", TRICKY, "doctoralia.es");
    fake.set_expires_in(3 * 86_400);
    let url = format!("{}/www.{{domain}}/oauth/v2/token", spawn_token_server(&fake).await);
    let ok = CredentialsInput { domain: Some("doctoralia.es".into()), ..input("dp-id", url.clone()) };
    let id = app.add_credentials(Provider::Docplanner, ok, TRICKY).await;
    let before = connect_hub::time::now_ms();
    let t = app.state.tokens.token(&id).await.unwrap();
    assert_eq!(fake.last_scope().as_deref(), Some("integration"));
    let life = t.expires_at.unwrap() - before;
    assert!(life <= 86_401_000 && life > 86_300_000, "at most 24 hours, whatever expires_in says: {life}");

    let wrong_country = CredentialsInput { domain: Some("znanylekarz.pl".into()), ..input("dp-id", url.clone()) };
    let id = app.add_credentials(Provider::Docplanner, wrong_country, TRICKY).await;
    assert!(refused(&app, &id).await.contains("HTTP 404"));
    let in_body =
        CredentialsInput { domain: Some("doctoralia.es".into()), auth: Some(AuthStyle::Post), ..input("dp-id", url) };
    let id = app.add_credentials(Provider::Docplanner, in_body, TRICKY).await;
    assert!(refused(&app, &id).await.contains("must use HTTP Basic"));
}

#[tokio::test]
async fn a_server_that_does_not_decode_basic_credentials_needs_the_raw_switch() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::custom("raw id", TRICKY, CredentialsIn::Basic { decode: false });
    let url = format!("{}/token", spawn_token_server(&fake).await);
    let encoded = CredentialsInput { auth: Some(AuthStyle::Basic), ..input("raw id", url.clone()) };
    let id = app.add_credentials(Provider::Custom, encoded, TRICKY).await;
    assert!(refused(&app, &id).await.contains("wrong or expired"), "RFC encoding does not match a raw server");
    let raw = CredentialsInput { auth: Some(AuthStyle::BasicRaw), ..input("raw id", url) };
    let id = app.add_credentials(Provider::Custom, raw, TRICKY).await;
    app.state.tokens.token(&id).await.unwrap();
}

async fn signicat_app() -> (TestApp, FakeTokenServer, connect_hub::domain::ConnectionId) {
    let app = spawn_app_with(|v| {
        v.insert("TOKEN_DEFAULT_LIFETIME".into(), "10m".into());
    })
    .await;
    let fake = FakeTokenServer::signicat("id", "secret");
    let url = format!("{}/oauth/connect/token", spawn_token_server(&fake).await);
    let id = app
        .add_credentials(
            Provider::Signicat,
            CredentialsInput { scope: Some("identify".into()), ..input("id", url) },
            "secret",
        )
        .await;
    (app, fake, id)
}

#[tokio::test]
async fn a_token_is_reused_until_near_its_expiry() {
    let (app, fake, id) = signicat_app().await;
    let a = app.state.tokens.token(&id).await.unwrap();
    let b = app.state.tokens.token(&id).await.unwrap();
    assert_eq!(fake.calls(), 1, "two asks, one provider call");
    assert_eq!(a.token.expose_secret(), b.token.expose_secret());
    // Another process (a new token manager on the same database) reuses the stored token too.
    app.state.tokens.forget(&id);
    app.state.tokens.token(&id).await.unwrap();
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn a_short_lived_token_is_reused_and_then_replaced() {
    let (app, fake, id) = signicat_app().await;
    fake.set_expires_in(2);
    let first = app.state.tokens.token(&id).await.unwrap();
    assert_eq!(
        app.state.tokens.token(&id).await.unwrap().token.expose_secret(),
        first.token.expose_secret(),
        "reused at first"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let t = app.state.tokens.token(&id).await.unwrap();
        if t.token.expose_secret() != first.token.expose_secret() {
            assert!(t.expires_at.unwrap() > first.expires_at.unwrap());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a new token before the old one expired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(fake.calls(), 2, "exactly one new fetch");
    assert!(connect_hub::time::now_ms() < first.expires_at.unwrap(), "replaced before it expired");
}

#[tokio::test]
async fn a_response_without_expires_in_gets_the_default_lifetime() {
    let (app, fake, id) = signicat_app().await;
    fake.omit_expires_in();
    let before = connect_hub::time::now_ms();
    let t = app.state.tokens.token(&id).await.unwrap();
    let life = t.expires_at.unwrap() - before;
    assert!((599_000..=600_500).contains(&life), "TOKEN_DEFAULT_LIFETIME=10m: {life}");
}

#[tokio::test]
async fn a_thousand_concurrent_asks_for_an_expired_token_make_one_call() {
    let (app, fake, id) = signicat_app().await;
    app.state.tokens.token(&id).await.unwrap();
    // The token expires.
    sqlx::query("update connections set token_expires_at = $1")
        .bind(connect_hub::time::now_ms() - 1)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    app.state.tokens.forget(&id);
    let results = join_all((0..1000).map(|_| app.state.tokens.token(&id))).await;
    assert_eq!(fake.calls(), 2, "the first token, then exactly one for the storm");
    let tokens: std::collections::HashSet<String> =
        results.into_iter().map(|r| r.unwrap().token.expose_secret().to_owned()).collect();
    assert_eq!(tokens.len(), 1, "everyone got the same new token");
}

#[tokio::test]
async fn after_a_failure_the_next_try_waits() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::signicat("id", "secret");
    let url = format!("{}/oauth/connect/token", spawn_token_server(&fake).await);
    let id = app
        .add_credentials(
            Provider::Signicat,
            CredentialsInput { scope: Some("identify".into()), ..input("id", url) },
            "wrong",
        )
        .await;
    assert!(matches!(app.state.tokens.token(&id).await, Err(TokenError::Provider(_))));
    for _ in 0..20 {
        match app.state.tokens.token(&id).await {
            Err(TokenError::BackingOff { retry_in, last_error }) => {
                assert!(retry_in.as_millis() >= 1_000, "a floor");
                assert!(last_error.contains("wrong or expired"));
            }
            other => panic!("expected backing off, got {:?}", other.map(|t| t.version)),
        }
    }
    assert_eq!(fake.calls(), 1, "a wrong secret is not a storm");
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Failing);
    assert!(c.retry_after.unwrap() > connect_hub::time::now_ms());
    // Once the wait is over, it tries again.
    sqlx::query("update connections set retry_after = 0").execute(app.state.store.pool()).await.unwrap();
    assert!(matches!(app.state.tokens.token(&id).await, Err(TokenError::Provider(_))));
    assert_eq!(fake.calls(), 2);
    let second = app.state.store.connection(&id).await.unwrap().unwrap();
    assert!(
        second.retry_after.unwrap() - second.last_error_at.unwrap()
            >= c.retry_after.unwrap() - c.last_error_at.unwrap() - 500,
        "the wait grows"
    );
}

#[tokio::test]
async fn a_provider_outage_near_expiry_still_hands_out_the_unexpired_token() {
    let (app, fake, id) = signicat_app().await;
    fake.set_expires_in(60);
    let first = app.state.tokens.token(&id).await.unwrap();
    // 57 s into its 60, inside the margin (the last 6 s), with the provider down.
    let now = connect_hub::time::now_ms();
    sqlx::query("update connections set token_expires_at = $1, token_obtained_at = $2")
        .bind(now + 3_000)
        .bind(now - 57_000)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    app.state.tokens.forget(&id);
    fake.push_fault(503);
    let t = app.state.tokens.token(&id).await.unwrap();
    assert_eq!(t.token.expose_secret(), first.token.expose_secret(), "the old token still works for 3 s");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn keys_of_a_connection_are_sealed_and_rotate_with_the_rest() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::smartdocumentor("id", "the-secret-value");
    let url = format!("{}/connect/token", spawn_token_server(&fake).await);
    let id = app.add_credentials(Provider::SmartDocumentor, input("id", url), "the-secret-value").await;
    let t = app.state.tokens.token(&id).await.unwrap();
    let mut bytes = Vec::new();
    // On PostgreSQL there is no file to read; the rotation below still shows both are sealed.
    for suffix in ["", "-wal"].into_iter().filter(|_| !app.db.is_postgres()) {
        bytes.extend(std::fs::read(format!("{}{suffix}", app.db_path.display())).unwrap_or_default());
    }
    for secret in ["the-secret-value", t.token.expose_secret()] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "no plaintext secret or token in the file"
        );
    }
    let report = app.state.store.rotate_keys().await.unwrap();
    assert_eq!(report.already_current, 2, "the token and the client secret are sealed columns too");
}

#[tokio::test]
async fn a_client_credentials_connection_deleted_by_another_process_stops_handing_out_its_cached_token() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::snapdocs("sd-id", "sd-secret");
    let url = format!("{}/oauth/token", spawn_token_server(&fake).await);
    let input = CredentialsInput {
        client_id: "sd-id".into(),
        token_url: Some(url),
        environment: Some("demo".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Snapdocs, input, "sd-secret").await;
    let (_, key) = app.api_key("reader").await;
    let (status, body) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!(status, 200, "{body}");
    // Deleted from the command line: this process's memory is not told.
    assert!(app.state.store.delete_connection(&id, now_ms(), "cli").await.unwrap());
    eventually(5, "the token API answers 404", || async {
        api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await.0 == 404
    })
    .await;
}

#[tokio::test]
async fn a_fresh_client_credentials_token_is_served_from_memory_without_reading_the_store() {
    let app = spawn_app().await;
    if app.skip_on_postgres(
        "there every change to a token NOTIFYs all instances, this one included, which drop it from memory",
    ) {
        return;
    }
    let fake = FakeTokenServer::snapdocs("sd-id", "sd-secret");
    let url = format!("{}/oauth/token", spawn_token_server(&fake).await);
    let input = CredentialsInput {
        client_id: "sd-id".into(),
        token_url: Some(url),
        environment: Some("demo".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Snapdocs, input, "sd-secret").await;
    let first = app.state.tokens.token(&id).await.unwrap();
    // The stored token is marked expired behind the manager's back (a column no instance is
    // notified about): within its trust window the manager answers from memory, with no new fetch.
    sqlx::query("update connections set token_expires_at = 0 where id = $1")
        .bind(id.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let again = app.state.tokens.token(&id).await.unwrap();
    assert_eq!(again.token.expose_secret(), first.token.expose_secret());
    assert_eq!(again.version, first.version);
    assert_eq!(fake.calls(), 1, "one fetch in all");
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
