//! Issue 10, items 6, 8, 9 (callback) and 10: a disconnect is not undone by an exchange in flight,
//! the connect link's tokens are exchanged in the background, the callback shows nothing a
//! stranger's link carried, and API keys can be scoped.

use std::time::{Duration, Instant};

use connect_hub::{
    api_keys::KeyScope,
    client_credentials::CredentialsInput,
    domain::{sha256, ConnectionId, ConnectionStatus, Provider},
    fake::{
        snapinspect::{Fault, UserShape},
        token_server::FakeTokenServer,
    },
    store::LeaseOutcome,
    time::now_ms,
    tokens::TokenError,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::helpers::{csrf_from, spawn_app, spawn_app_with, spawn_token_server, TestApp};

/// Wait until `check` holds, or fail after `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
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

async fn lease(app: &TestApp, id: &ConnectionId) -> (Option<String>, Option<i64>) {
    sqlx::query_as("select exchange_lease_owner, exchange_lease_until from connections where id = $1")
        .bind(id.as_str())
        .fetch_one(app.state.store.pool())
        .await
        .unwrap()
}

async fn retry_after(app: &TestApp, id: &ConnectionId) -> i64 {
    app.state.store.connection(id).await.unwrap().unwrap().retry_after.expect("a backoff is set")
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

async fn api(app: &TestApp, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", app.addr))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

// ---- 6: a disconnect is not undone by an exchange in flight ----

#[tokio::test]
async fn a_disconnect_while_an_exchange_is_in_flight_sticks_and_the_new_pair_is_not_handed_out() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("reader").await;
    app.fake.push_exchange_fault(Fault::Delay(Duration::from_millis(1500)));

    let tokens = app.state.tokens.clone();
    let refresh_id = id.clone();
    let in_flight = tokio::spawn(async move { tokens.refresh(&refresh_id, "test").await });
    eventually(5, "the exchange reaches SnapInspect", || async { app.fake.exchange_calls() == 1 }).await;
    // Our lease is live for a while yet (not written already expired).
    let (owner, until) = lease(&app, &id).await;
    assert!(owner.is_some_and(|o| o.starts_with("proc_")));
    assert!(until.unwrap() > now_ms() + 50_000, "the lease runs about a minute from its start");

    let res = app.admin_post(&format!("/admin/connections/{id}/disconnect"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let outcome = in_flight.await.unwrap();
    assert!(matches!(outcome, Err(TokenError::Disconnected)), "{:?}", outcome.map(|t| t.version));
    assert_eq!(app.fake.exchanges(), 1, "SnapInspect did issue a pair; we did not keep it");

    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Disconnected, "the disconnect stuck");
    assert!(!c.has_tokens, "no token was written back");
    let (status, body) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "disconnected", "{body}");
    let (status, body) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), &key).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("disconnected")));
}

#[tokio::test]
async fn a_disconnect_from_the_command_line_during_an_exchange_also_sticks() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    app.fake.push_exchange_fault(Fault::Delay(Duration::from_millis(1500)));
    let tokens = app.state.tokens.clone();
    let refresh_id = id.clone();
    let in_flight = tokio::spawn(async move { tokens.refresh(&refresh_id, "test").await });
    eventually(5, "the exchange reaches SnapInspect", || async { app.fake.exchange_calls() == 1 }).await;
    // Another process: only the store changes, this process's memory is not told.
    assert!(app.state.store.disconnect(&id, now_ms(), "cli").await.unwrap());
    assert!(matches!(in_flight.await.unwrap(), Err(TokenError::Disconnected)));
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!((c.status, c.has_tokens), (ConnectionStatus::Disconnected, false));
    assert!(matches!(app.state.tokens.token(&id).await, Err(TokenError::Disconnected)));
}

#[tokio::test]
async fn a_console_disconnect_drops_the_cached_token_at_once() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("reader").await;
    let (status, _) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!(status, 200, "now cached in memory");
    let res = app.admin_post(&format!("/admin/connections/{id}/disconnect"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let (status, body) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("disconnected")), "not the cached token: {body}");
}

#[tokio::test]
async fn an_exchange_whose_lease_was_taken_over_hands_nothing_out_and_keeps_the_pair_for_next_time() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("app").await;
    app.fake.push_exchange_fault(Fault::Delay(Duration::from_millis(1500)));
    let tokens = app.state.tokens.clone();
    let refresh_id = id.clone();
    let in_flight = tokio::spawn(async move { tokens.refresh(&refresh_id, "test").await });
    eventually(5, "the exchange reaches SnapInspect", || async { app.fake.exchange_calls() == 1 }).await;
    // As if our lease ran out and another process took it.
    sqlx::query("update connections set exchange_lease_owner = 'other'").execute(app.state.store.pool()).await.unwrap();
    assert!(matches!(in_flight.await.unwrap(), Err(TokenError::Superseded)));
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.status), (1, ConnectionStatus::Active), "nothing stored");
    // The other process gives up; the next refresh stores the pair SnapInspect already issued.
    app.state.store.release_exchange_lease(&id, "other").await.unwrap();
    let (status, body) = api(&app, reqwest::Method::POST, &format!("/connections/{id}/refresh"), &key).await;
    assert_eq!(status, 200, "{body}");
    assert!(app.fake.is_valid_access_token(body["access_token"].as_str().unwrap()));
    assert_eq!(app.fake.exchange_calls(), 1, "no second exchange: the old refresh token is already spent");
}

#[tokio::test]
async fn a_refresh_failure_after_a_cli_disconnect_leaves_it_disconnected() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let (owner, now) = ("proc_this", now_ms());
    assert_eq!(
        app.state.store.acquire_exchange_lease(&id, owner, now, now + 60_000).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert!(app.state.store.disconnect(&id, now, "cli").await.unwrap());
    let failure = connect_hub::store::ExchangeFailure::Dead { message: "refused".into() };
    assert!(!app.state.store.record_exchange_failure(&id, owner, &failure, now, "test").await.unwrap());
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Disconnected, "not turned into needs_reconnect");
}

#[tokio::test]
async fn a_commit_under_someone_elses_lease_or_an_expired_one_is_refused() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let store = &app.state.store;
    let before = store.tokens(&id).await.unwrap().unwrap().version;
    let now = now_ms();

    assert_eq!(store.acquire_exchange_lease(&id, "a", now, now + 60_000).await.unwrap(), LeaseOutcome::Acquired);
    assert_eq!(store.commit_exchange(&id, "b", &secret("from-b"), None, now, "b").await.unwrap(), None);
    assert_eq!(
        store.store_issued_token(&id, "b", &secret("from-b"), now + 60_000, now, "b").await.unwrap(),
        None,
        "a client-credentials token is guarded the same way"
    );
    assert_eq!(store.tokens(&id).await.unwrap().unwrap().version, before, "nothing changed");

    // Our own lease, but it ran out before the commit.
    assert_eq!(store.acquire_exchange_lease(&id, "a", now, now + 10).await.unwrap(), LeaseOutcome::Acquired);
    assert_eq!(store.commit_exchange(&id, "a", &secret("late"), None, now + 10, "a").await.unwrap(), None);
    assert_eq!(store.store_issued_token(&id, "a", &secret("late"), now + 99, now + 10, "a").await.unwrap(), None);

    // Our own live lease, but the connection was disconnected meanwhile (the lease left in place
    // here, so only the status stands in the way).
    assert_eq!(store.acquire_exchange_lease(&id, "a", now, now + 60_000).await.unwrap(), LeaseOutcome::Acquired);
    sqlx::query("update connections set status = 'disconnected'").execute(store.pool()).await.unwrap();
    assert_eq!(store.commit_exchange(&id, "a", &secret("late"), None, now, "a").await.unwrap(), None);
    assert_eq!(store.store_issued_token(&id, "a", &secret("late"), now + 99, now, "a").await.unwrap(), None);
    let failure = connect_hub::store::ExchangeFailure::Transient { message: "x".into(), retry_after: now };
    assert!(!store.record_exchange_failure(&id, "a", &failure, now, "a").await.unwrap());
    sqlx::query("update connections set status = 'active'").execute(store.pool()).await.unwrap();
    assert_eq!(store.tokens(&id).await.unwrap().unwrap().version, before, "nothing changed");

    // Still ours and live: it lands, and the lease is given back.
    assert_eq!(
        store.commit_exchange(&id, "a", &secret("on-time"), None, now + 9, "a").await.unwrap(),
        Some(before + 1)
    );
    assert_eq!(lease(&app, &id).await, (None, None));
    let t = store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(t.access.unwrap().expose_secret(), "on-time");
}

#[tokio::test]
async fn a_lease_is_held_until_it_runs_out_or_its_owner_releases_it() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let store = &app.state.store;
    let now = now_ms();
    assert_eq!(store.acquire_exchange_lease(&id, "a", now, now + 60_000).await.unwrap(), LeaseOutcome::Acquired);
    assert_eq!(
        store.acquire_exchange_lease(&id, "b", now, now + 60_000).await.unwrap(),
        LeaseOutcome::HeldElsewhere { until: now + 60_000 }
    );
    store.release_exchange_lease(&id, "b").await.unwrap();
    assert!(
        matches!(
            store.acquire_exchange_lease(&id, "b", now, now + 1).await.unwrap(),
            LeaseOutcome::HeldElsewhere { .. }
        ),
        "only the owner can release a lease"
    );
    store.release_exchange_lease(&id, "a").await.unwrap();
    assert_eq!(lease(&app, &id).await, (None, None));
    assert_eq!(store.acquire_exchange_lease(&id, "b", now, now + 1_000).await.unwrap(), LeaseOutcome::Acquired);
    // A lease that ran out is taken over; one that ends exactly now is still held.
    assert!(matches!(
        store.acquire_exchange_lease(&id, "c", now + 1_000, now + 2_000).await.unwrap(),
        LeaseOutcome::HeldElsewhere { .. }
    ));
    assert_eq!(store.acquire_exchange_lease(&id, "c", now + 1_001, now + 2_000).await.unwrap(), LeaseOutcome::Acquired);
    let other = ConnectionId::generate();
    assert_eq!(store.acquire_exchange_lease(&other, "c", now, now + 1).await.unwrap(), LeaseOutcome::NotFound);
}

#[tokio::test]
async fn a_failed_exchange_releases_the_lease_so_another_process_can_try() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    // Backing off: no call to SnapInspect, and the lease taken for the check is given back.
    sqlx::query("update connections set retry_after = $1")
        .bind(now_ms() + 60_000)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    assert!(matches!(app.state.tokens.refresh(&id, "test").await, Err(TokenError::BackingOff { .. })));
    assert_eq!(lease(&app, &id).await, (None, None));
    assert_eq!(app.fake.exchange_calls(), 0);
}

#[tokio::test]
async fn the_backoff_grows_with_each_failure_in_a_row_and_starts_at_about_two_seconds() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    app.fake.push_exchange_fault(Fault::Status(500));
    let before = now_ms();
    assert!(matches!(app.state.tokens.refresh(&id, "test").await, Err(TokenError::Provider(_))));
    let first = retry_after(&app, &id).await - before;
    assert!((1_600..=2_400 + 1_000).contains(&first), "about 2 s after one failure, got {first} ms");
    assert_eq!(lease(&app, &id).await, (None, None));

    // Let the next try happen now; it fails too, and waits about twice as long.
    sqlx::query("update connections set retry_after = null").execute(app.state.store.pool()).await.unwrap();
    app.fake.push_exchange_fault(Fault::Status(500));
    let before = now_ms();
    assert!(app.state.tokens.refresh(&id, "test").await.is_err());
    let second = retry_after(&app, &id).await - before;
    assert!((3_200..=4_800 + 1_000).contains(&second), "about 4 s after two failures, got {second} ms");
    assert_eq!(app.state.store.failure_count(&id).await.unwrap(), 2);

    // And once the backoff is over, it exchanges again.
    sqlx::query("update connections set retry_after = null").execute(app.state.store.pool()).await.unwrap();
    let t = app.state.tokens.refresh(&id, "test").await.unwrap();
    assert!(app.fake.is_valid_access_token(t.token.expose_secret()));
    assert_eq!(app.state.store.failure_count(&id).await.unwrap(), 0);
}

#[tokio::test]
async fn snapinspects_retry_after_is_honoured() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    app.fake.push_exchange_fault(Fault::StatusRetryAfter(503, 120));
    let before = now_ms();
    assert!(app.state.tokens.refresh(&id, "test").await.is_err());
    assert!(retry_after(&app, &id).await >= before + 119_000, "no new try for the two minutes SnapInspect asked");
    assert!(matches!(app.state.tokens.refresh(&id, "test").await, Err(TokenError::BackingOff { .. })));
    assert_eq!(app.fake.exchange_calls(), 1);
}

#[tokio::test]
async fn a_snapinspect_token_exchanged_by_another_process_is_handed_out_within_seconds() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("reader").await;
    let (status, first) = api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await;
    assert_eq!(status, 200);
    // Another process exchanges and stores a new pair.
    let (store, now) = (&app.state.store, now_ms());
    assert_eq!(store.acquire_exchange_lease(&id, "other", now, now + 60_000).await.unwrap(), LeaseOutcome::Acquired);
    store.commit_exchange(&id, "other", &secret("from-elsewhere"), None, now, "other").await.unwrap().unwrap();
    assert_ne!(first["access_token"], "from-elsewhere");
    eventually(5, "the new token is handed out", || async {
        api(&app, reqwest::Method::GET, &format!("/connections/{id}/token"), &key).await.1["access_token"]
            == "from-elsewhere"
    })
    .await;
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

#[tokio::test]
async fn connect_link_tokens_already_exchanged_are_not_exchanged_again() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    assert!(app.state.tokens.exchange_callback_tokens(&id).await.unwrap(), "the first time, it exchanges");
    assert_eq!(app.fake.exchanges(), 1);
    assert!(!app.state.tokens.exchange_callback_tokens(&id).await.unwrap(), "nothing is pending any more");
    assert_eq!(app.fake.exchanges(), 1, "and SnapInspect is not asked again");
}

// ---- 8: the connect link's tokens are exchanged promptly, in the background ----

fn with_worker(vars: &mut std::collections::BTreeMap<String, String>) {
    vars.insert("WORKER_ENABLED".into(), "true".into());
}

#[tokio::test]
async fn the_connect_links_tokens_are_exchanged_once_in_the_background() {
    let app = spawn_app_with(with_worker).await;
    app.sign_in().await;
    app.fake.push_exchange_fault(Fault::Delay(Duration::from_secs(3)));
    let connected = app.connect(Some(6847)).await;
    assert_eq!(connected.callback.status(), 303);
    assert_eq!(app.fake.exchanges(), 0, "the end user's page did not wait for the exchange");
    let id = app.connection_id_for(6847).await;

    eventually(10, "the connect link's pair is exchanged", || async { app.fake.exchanges() == 1 }).await;
    eventually(5, "the new pair is stored", || async {
        !app.state.store.connection(&id).await.unwrap().unwrap().callback_tokens_pending
    })
    .await;
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2, "the stored token version went up");
    assert!(!app.fake.is_valid_access_token(&connected.access_token), "the link's access token is dead");
    assert!(app.fake.is_valid_access_token(stored.access.unwrap().expose_secret()));
    assert_eq!(app.state.tokens.sweep_callback_tokens().await.unwrap(), 0, "nothing left to sweep");
    assert_eq!(app.fake.exchange_calls(), 1, "exchanged once");
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("Tokens from the connect link") && page.contains("exchanged at"), "{page}");
}

#[tokio::test]
async fn a_failed_exchange_of_the_connect_links_tokens_keeps_them_and_a_later_sweep_succeeds() {
    let app = spawn_app_with(with_worker).await;
    app.sign_in().await;
    app.fake.push_exchange_fault(Fault::Status(500));
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    eventually(5, "the first try fails", || async {
        app.state.store.connection(&id).await.unwrap().unwrap().last_error.is_some()
    })
    .await;
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert!(c.callback_tokens_pending);
    assert_eq!(c.status, ConnectionStatus::Active);
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(stored.access.unwrap().expose_secret(), connected.access_token, "the pair is kept");
    let page = app.page(&format!("/admin/connections/{id}")).await;
    let shown = page.split("not yet exchanged, next try in ").nth(1).expect("the pending state is shown");
    let secs: i64 = shown.split(' ').next().unwrap().parse().unwrap();
    assert!((1..=3).contains(&secs), "about two seconds of backoff, rounded up: {secs}");

    eventually(10, "a sweep exchanges it once the backoff is over", || async {
        let _ = app.state.tokens.sweep_callback_tokens().await.unwrap();
        !app.state.store.connection(&id).await.unwrap().unwrap().callback_tokens_pending
    })
    .await;
    assert_eq!(app.fake.exchanges(), 1);
    assert!(!app.fake.is_valid_access_token(&connected.access_token));
    assert_eq!(app.state.store.tokens(&id).await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn without_background_work_the_connect_links_tokens_wait_for_a_sweep() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    assert!(app.state.store.connection(&id).await.unwrap().unwrap().callback_tokens_pending);
    assert_eq!(app.state.tokens.sweep_callback_tokens().await.unwrap(), 1);
    assert!(!app.fake.is_valid_access_token(&connected.access_token));
    // A disconnected connection is not swept.
    let other = app.connect_company(7012).await;
    app.state.store.disconnect(&other, now_ms(), "cli").await.unwrap();
    assert_eq!(app.state.tokens.sweep_callback_tokens().await.unwrap(), 0);
    assert_eq!(app.fake.exchanges(), 1);
}

// ---- 9: the callback's error page and anonymous unidentified connections ----

#[tokio::test]
async fn a_callback_error_with_a_bogus_state_does_not_show_what_the_link_carried() {
    let app = spawn_app().await;
    let res = app
        .get("/connect/snapinspect/callback?error=server_error&error_description=Call+0800+555+to+unlock&state=bogus")
        .await;
    let res = app.follow(&app.client, res).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("was not connected") && body.contains("start again"), "{body}");
    assert!(!body.contains("0800") && !body.contains("unlock"), "the link's text is not shown: {body}");
    assert!(!body.contains("server_error") && !body.contains("temporary"), "nor words chosen by its code: {body}");
}

#[tokio::test]
async fn a_callback_error_with_a_valid_state_shows_only_our_words_for_its_code() {
    let app = spawn_app().await;
    for (code, ours) in [
        ("temporarily_unavailable", "temporary problem"),
        ("server_error", "temporary problem"),
        ("unauthorized_client", "setup problem"),
        ("invalid_request", "setup problem"),
        ("access_denied", "You chose not to allow access"),
        ("made_up", "did not connect your account"),
    ] {
        let authorize = app.start_connect().await;
        let state = authorize.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
        let query = format!("error={code}&error_description=Visit+evil.example+now&state={state}");
        let res = app.get(&format!("/connect/snapinspect/callback?{query}")).await;
        let body = app.follow(&app.client, res).await.text().await.unwrap();
        assert!(body.contains(ours), "{code}: {body}");
        assert!(!body.contains("evil.example") && !body.contains(code), "{code}: {body}");
    }
}

#[tokio::test]
async fn a_user_endpoint_failing_with_500_stores_no_connection_and_offers_to_try_again() {
    let app = spawn_app().await;
    app.fake.set_user_shape(UserShape::Fail(500));
    let connected = app.connect(Some(6847)).await;
    let page = app.follow(&app.client, connected.callback).await;
    assert_eq!(page.status(), 502);
    let body = page.text().await.unwrap();
    assert!(body.contains("try again") && body.contains("href=\"/connect/snapinspect\""), "{body}");
    assert_eq!(app.connection_count().await, 0);
}

// ---- 10: scoped API keys and the forced-refresh cooldown ----

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
    assert_eq!(res.status(), 303);
    assert!(app.page("/admin/api-keys").await.contains("not a connection id"));
}
