//! Exchanging refresh tokens on demand: rotation, one exchange at a time, dead tokens, provider
//! failures and backoff.

use connect_hub::{domain::ConnectionStatus, fake::snapinspect::Fault, tokens::TokenError};
use futures_util::future::join_all;
use secrecy::ExposeSecret;

use crate::helpers::{spawn_app, spawn_app_with, CLIENT_ID, CLIENT_SECRET};

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
