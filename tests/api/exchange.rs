//! Exchanging refresh tokens on demand: rotation, one exchange at a time, dead tokens, provider
//! failures and backoff; the exchange lease between processes, and a disconnect that no exchange
//! in flight undoes; the connect link's tokens, exchanged once in the background.

use std::time::Duration;

use connect_hub::{
    demo::snapinspect::Fault,
    domain::{ConnectionId, ConnectionStatus},
    store::LeaseOutcome,
    time::now_ms,
    tokens::TokenError,
};
use futures_util::future::join_all;
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{api, eventually, spawn_app, spawn_app_with, TestApp, CLIENT_ID, CLIENT_SECRET};

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

#[tokio::test]
async fn refresh_rotates_both_tokens_and_stores_the_new_pair_first() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;

    let fresh = app.state.tokens.refresh(&id, "test").await.unwrap();
    assert_eq!(app.fake.exchanges(), 1);
    assert_ne!(fresh.token.expose_secret(), connected.access_token);
    assert!(app.fake.is_valid_access_token(fresh.token.expose_secret()));
    assert!(!app.fake.is_valid_access_token(&connected.access_token), "SnapInspect invalidated the old pair");

    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.access.unwrap().expose_secret(),
        fresh.token.expose_secret(),
        "what we hand out is what is stored"
    );
    assert_ne!(stored.refresh.unwrap().expose_secret(), connected.refresh_token);
    assert_eq!(stored.version, fresh.version);
    let conn = app.state.store.connection(&id).await.unwrap().unwrap();
    assert!(conn.last_exchange_at.is_some());

    // And it keeps working: a second exchange uses the rotated refresh token.
    app.state.tokens.refresh(&id, "test").await.unwrap();
    assert_eq!(app.fake.exchanges(), 2);
}

#[tokio::test]
async fn a_hundred_concurrent_refreshes_make_one_exchange_and_all_get_the_new_token() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;

    let results = join_all((0..100).map(|_| app.state.tokens.refresh(&id, "test"))).await;
    assert_eq!(app.fake.exchange_calls(), 1, "exactly one exchange at SnapInspect");
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap().access.unwrap();
    for r in results {
        let t = r.expect("every caller gets a token");
        assert_eq!(t.token.expose_secret(), stored.expose_secret(), "everyone gets the new token");
    }
}

#[tokio::test]
async fn concurrent_refreshes_from_spawned_tasks_share_one_exchange() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    // Slow the exchange down so every task is waiting while it runs.
    app.fake.push_exchange_fault(Fault::Delay(std::time::Duration::from_millis(300)));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let tokens = app.state.tokens.clone();
            let id = id.clone();
            tokio::spawn(async move { tokens.refresh(&id, "test").await.map(|t| t.token.expose_secret().to_owned()) })
        })
        .collect();
    let tokens: Vec<String> = join_all(tasks).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(app.fake.exchange_calls(), 1);
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn a_refresh_after_a_401_uses_a_newer_token_if_someone_already_exchanged() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let old = app.state.tokens.token(&id).await.unwrap();
    let newer = app.state.tokens.refresh(&id, "test").await.unwrap();
    let again = app.state.tokens.refresh_if_still(&id, old.version, "test").await.unwrap();
    assert_eq!(app.fake.exchanges(), 1, "no second exchange for a token that is already replaced");
    assert_eq!(again.token.expose_secret(), newer.token.expose_secret());
}

#[tokio::test]
async fn a_response_without_a_refresh_token_keeps_the_old_one() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    app.fake.push_exchange_fault(Fault::NoRefreshToken);
    let fresh = app.state.tokens.refresh(&id, "test").await.unwrap();
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(stored.access.unwrap().expose_secret(), fresh.token.expose_secret());
    assert_eq!(stored.refresh.unwrap().expose_secret(), connected.refresh_token);
    // The kept refresh token still works.
    app.state.tokens.refresh(&id, "test").await.unwrap();
    assert_eq!(app.fake.exchanges(), 2);
}

#[tokio::test]
async fn a_dead_refresh_token_marks_the_connection_needs_reconnect() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    // Someone else uses our refresh token, so SnapInspect has rotated it away from us.
    let res = reqwest::Client::new()
        .post(format!("{}/integration/ExchangeToken", app.fake_addr))
        .form(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("redirect_uri", &format!("{}/connect/snapinspect/callback", app.addr)),
            ("state", "x"),
            ("refresh_token", &connected.refresh_token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let err = app.state.tokens.refresh(&id, "test").await.unwrap_err();
    assert!(matches!(err, TokenError::NeedsReconnect(_)), "{err}");
    let conn = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(conn.status, ConnectionStatus::NeedsReconnect);
    assert!(conn.last_error.unwrap().contains("invalid_grant"), "the reason is recorded");
    // No further calls to SnapInspect for a dead connection.
    let calls = app.fake.exchange_calls();
    assert!(matches!(app.state.tokens.refresh(&id, "test").await, Err(TokenError::NeedsReconnect(_))));
    assert!(matches!(app.state.tokens.token(&id).await, Err(TokenError::NeedsReconnect(_))));
    assert_eq!(app.fake.exchange_calls(), calls);

    // The end user reconnecting brings it back, same id.
    app.connect(Some(6847)).await;
    let conn = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(conn.status, ConnectionStatus::Active);
    app.state.tokens.refresh(&id, "test").await.unwrap();
}

#[tokio::test]
async fn a_provider_500_leaves_the_tokens_unchanged_and_the_next_try_waits() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    app.fake.push_exchange_fault(Fault::Status(500));

    let err = app.state.tokens.refresh(&id, "test").await.unwrap_err();
    assert!(matches!(err, TokenError::Provider(_)), "{err}");
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(stored.access.unwrap().expose_secret(), connected.access_token, "tokens unchanged");
    assert_eq!(stored.refresh.unwrap().expose_secret(), connected.refresh_token);
    let conn = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(conn.status, ConnectionStatus::Active, "a provider outage is not the connection's fault");
    assert!(conn.last_error.unwrap().contains("500"));
    assert!(conn.retry_after.unwrap() > conn.last_error_at.unwrap());

    // Asking again right away does not hammer SnapInspect.
    let err = app.state.tokens.refresh(&id, "test").await.unwrap_err();
    assert!(matches!(err, TokenError::BackingOff { .. }), "{err}");
    assert_eq!(app.fake.exchange_calls(), 1);
    // The current token is still handed out meanwhile.
    assert_eq!(app.state.tokens.token(&id).await.unwrap().token.expose_secret(), connected.access_token);

    // Once the backoff has passed, the exchange goes through.
    sqlx::query("update connections set retry_after = 0").execute(app.state.store.pool()).await.unwrap();
    app.state.tokens.refresh(&id, "test").await.unwrap();
    assert_eq!(app.fake.exchanges(), 1);
    let conn = app.state.store.connection(&id).await.unwrap().unwrap();
    assert!(conn.last_error.is_none() && conn.failure_count == 0);
}

#[tokio::test]
async fn a_wrong_client_secret_does_not_blame_the_connection() {
    let app = spawn_app_with(|v| {
        v.insert("SNAPINSPECT_CLIENT_SECRET".into(), "wrong".into());
    })
    .await;
    // Link with the fake directly (the connect flow does not use the secret).
    let id = app.connect_company(6847).await;
    let err = app.state.tokens.refresh(&id, "test").await.unwrap_err();
    assert!(err.to_string().contains("SNAPINSPECT_CLIENT_SECRET"), "{err}");
    let conn = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(conn.status, ConnectionStatus::Active);
}

#[tokio::test]
async fn a_lease_held_by_another_process_is_waited_for_not_raced() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let now = connect_hub::time::now_ms();
    // Another process holds the lease; it finishes (stores a new pair) a moment later.
    sqlx::query("update connections set exchange_lease_until = $1, exchange_lease_owner = 'other'")
        .bind(now + 5_000)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let store = app.state.store.clone();
    let other = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let t = secrecy::SecretString::from("from-the-other-process".to_owned());
        store.commit_exchange(&other, "other", &t, None, connect_hub::time::now_ms(), "other").await.unwrap().unwrap();
    });
    let t = app.state.tokens.refresh(&id, "test").await.unwrap();
    assert_eq!(t.token.expose_secret(), "from-the-other-process");
    assert_eq!(app.fake.exchange_calls(), 0, "we did not exchange a refresh token the other process was using");
}

// ---- A disconnect is not undone by an exchange in flight; leases between processes ----

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

// ---- The connect link's tokens are exchanged promptly, in the background ----

#[tokio::test]
async fn connect_link_tokens_already_exchanged_are_not_exchanged_again() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    assert!(app.state.tokens.exchange_callback_tokens(&id).await.unwrap(), "the first time, it exchanges");
    assert_eq!(app.fake.exchanges(), 1);
    assert!(!app.state.tokens.exchange_callback_tokens(&id).await.unwrap(), "nothing is pending any more");
    assert_eq!(app.fake.exchanges(), 1, "and SnapInspect is not asked again");
}

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
