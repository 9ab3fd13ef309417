//! Numbers from outside that meet a time: a provider's or a receiver's `Retry-After` is capped at
//! the backoff's cap, and a token's `expires_in` saturates, so none wraps into the past or parks for decades.

use std::net::TcpListener;

use actix_web::{web, HttpResponse};
use connect_hub::{
    demo::{receiver::Reply, snapinspect::Fault, token_server::FakeTokenServer},
    domain::{ConnectionId, Provider},
    time::now_ms,
};

use crate::helpers::{api, forwarding, signicat_at, spawn_app, spawn_app_with, spawn_token_server, TestApp, CREATE};

/// The token manager's longest backoff (`tokens::BACKOFF_CAP`): 10 minutes.
const CAP_MS: i64 = 10 * 60 * 1000;

/// `Retry-After` values a provider may send: the largest u64, a billion seconds (decades), and
/// the largest that is still an i64 once in milliseconds (adding now to it overflows).
const HUGE: [u64; 3] = [u64::MAX, 1_000_000_000, i64::MAX as u64 / 1000];

async fn retry_after(app: &TestApp, id: &ConnectionId) -> i64 {
    app.state.store.connection(id).await.unwrap().unwrap().retry_after.expect("a backoff is set")
}

/// The backoff just set runs from `before` until about the cap: not in the past, not later.
fn assert_capped(wait_ms: i64, secs: u64) {
    assert!((CAP_MS - 1_000..=CAP_MS + 2_000).contains(&wait_ms), "Retry-After {secs}: waits {wait_ms} ms");
}

#[tokio::test]
async fn snapinspects_huge_retry_after_waits_the_backoff_cap_and_no_longer() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    for secs in HUGE {
        app.fake.push_exchange_fault(Fault::StatusRetryAfter(503, secs));
        let before = now_ms();
        assert!(app.state.tokens.refresh(&id, "test").await.is_err());
        assert_capped(retry_after(&app, &id).await - before, secs);
        sqlx::query("update connections set retry_after = null").execute(app.state.store.pool()).await.unwrap();
    }
    // And once it has passed, the exchange is tried again and works.
    app.state.tokens.refresh(&id, "test").await.unwrap();
}

#[tokio::test]
async fn a_token_servers_huge_retry_after_waits_the_backoff_cap_and_no_longer() {
    for secs in HUGE {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let busy = move |cfg: &mut web::ServiceConfig| {
            cfg.route(
                "/token",
                web::post().to(move || async move {
                    HttpResponse::ServiceUnavailable().insert_header(("retry-after", secs.to_string())).finish()
                }),
            );
        };
        tokio::spawn(connect_hub::demo::fakes::serve(busy, listener).unwrap());
        let (app, id) = signicat_at(&url).await;
        let before = now_ms();
        assert!(app.state.tokens.token(&id).await.is_err());
        assert_capped(retry_after(&app, &id).await - before, secs);
    }
}

#[tokio::test]
async fn a_token_that_expires_in_u64_max_seconds_is_valid_rather_than_already_expired() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::signicat("id", "secret");
    fake.set_expires_in(u64::MAX);
    let url = format!("{}/oauth/connect/token", spawn_token_server(&fake).await);
    let input = connect_hub::client_credentials::CredentialsInput {
        client_id: "id".into(),
        token_url: Some(url),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Signicat, input, "secret").await;
    let first = app.state.tokens.token(&id).await.unwrap();
    assert!(first.expires_at.unwrap() > now_ms() + 365 * 86_400_000, "{:?}", first.expires_at);
    let again = app.state.tokens.token(&id).await.unwrap();
    assert_eq!(again.version, first.version);
    assert_eq!(fake.issued(), 1, "the token is reused, not fetched again");
    // And the API hands it out with an expiry it can say.
    let (_, key) = app.api_key("reader").await;
    let (status, body) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_in"].as_i64().unwrap() > 365 * 86_400, "{body}");
}

#[tokio::test]
async fn a_receivers_huge_retry_after_parks_its_delivery_for_a_day_at_most() {
    let app = spawn_app_with(forwarding).await;
    app.connect_company(6847).await;
    let id = app.send_event(CREATE).await;
    // Both deliveries, this event's and the connect's own, are answered so.
    app.receiver.push_reply(Reply::RetryAfter(503, u64::MAX));
    app.receiver.push_reply(Reply::RetryAfter(503, u64::MAX));
    let before = now_ms();
    app.state.worker.drain().await.unwrap();
    let rowid = app.event(&id).await.rowid;
    let d = &app.state.store.event_deliveries(rowid).await.unwrap()[0];
    assert_eq!(d.state, "retrying");
    let wait = d.next_attempt_at.unwrap() - before;
    assert!((86_400_000 - 1_000..=86_400_000 + 2_000).contains(&wait), "waits {wait} ms");
}
