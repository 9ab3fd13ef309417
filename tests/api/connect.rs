//! The connect flow, from the button to a linked company, and every way a callback is refused,
//! told in our own words and never in what the link carried.

use std::collections::BTreeMap;

use connect_hub::{demo::snapinspect::UserShape, domain::ConnectionStatus};
use secrecy::ExposeSecret;

use crate::helpers::{browser_client, location, spawn_app, CLIENT_ID};

#[tokio::test]
async fn the_landing_page_shows_the_connect_button() {
    let app = spawn_app().await;
    let res = app.get("/").await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("Connect with SnapInspect"));
    assert!(body.contains("href=\"/connect/snapinspect\""));
}

#[tokio::test]
async fn starting_redirects_to_snapinspect_with_the_four_parameters_and_a_fresh_state() {
    let app = spawn_app().await;
    let first = app.start_connect().await;
    let second = app.start_connect().await;
    assert!(first.as_str().starts_with(&format!("{}/integration/SnapInspectConnect?", app.fake_addr)));
    let q: BTreeMap<String, String> = first.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{}/connect/snapinspect/callback", app.addr));
    assert!(q["state"].len() >= 22, "at least 128 bits of state");
    let q2: BTreeMap<String, String> = second.query_pairs().into_owned().collect();
    assert_ne!(q["state"], q2["state"], "every start gets a new state");
    // The state is stored only as a hash.
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("select state_hash from oauth_states").fetch_all(app.state.store.pool()).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|h| h.as_slice() != q["state"].as_bytes()));
}

#[tokio::test]
async fn allowing_access_links_the_company_and_the_result_page_names_it() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let res = connected.callback;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/connect/snapinspect/done", "a clean URL without tokens");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert_eq!(res.headers()["cache-control"], "no-store");

    let page = app.get("/connect/snapinspect/done").await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("Harbour View Realty"), "{body}");
    assert!(body.contains("6847"));
    assert!(!body.contains(&connected.access_token) && !body.contains(&connected.refresh_token));

    let conns = app.state.store.connections().await.unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].company_id.unwrap().get(), 6847);
    assert_eq!(conns[0].status, ConnectionStatus::Active);
    let tokens = app.state.store.tokens(&conns[0].id).await.unwrap().unwrap();
    assert_eq!(tokens.access.unwrap().expose_secret(), connected.access_token);
    assert_eq!(tokens.refresh.unwrap().expose_secret(), connected.refresh_token);
}

#[tokio::test]
async fn a_company_nested_one_object_down_in_user_is_identified() {
    let app = spawn_app().await;
    app.fake.set_user_shape(UserShape::Nested);
    app.connect(Some(7012)).await;
    let conns = app.state.store.connections().await.unwrap();
    assert_eq!(conns[0].company_id.unwrap().get(), 7012);
    assert_eq!(conns[0].name, "Northside Property Inspections");
    assert!(conns[0].user_info.as_deref().unwrap().contains("oCompany"), "the raw /user JSON is kept");
}

#[tokio::test]
async fn a_user_without_a_company_is_kept_as_unidentified() {
    let app = spawn_app().await;
    let connected = app.connect(None).await;
    assert_eq!(connected.callback.status(), 303);
    let body = app.get("/connect/snapinspect/done").await.text().await.unwrap();
    assert!(body.contains("did not tell us which company"), "{body}");
    let conns = app.state.store.connections().await.unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].status, ConnectionStatus::Unidentified);
    assert!(conns[0].company_id.is_none());
    assert!(conns[0].has_tokens, "the tokens are kept for when an admin assigns the company");
}

#[tokio::test]
async fn when_user_cannot_be_read_nothing_is_stored_and_the_user_is_asked_to_try_again() {
    let app = spawn_app().await;
    app.fake.set_user_shape(UserShape::Fail(503));
    let connected = app.connect(Some(6847)).await;
    let page = app.follow(&app.client, connected.callback).await;
    assert_eq!(page.status(), 502);
    assert!(page.text().await.unwrap().contains("href=\"/connect/snapinspect\""), "offers to try again");
    assert_eq!(app.connection_count().await, 0, "no unidentified connection from an unanswered /user");
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
async fn reconnecting_the_same_company_keeps_its_id_and_replaces_its_tokens() {
    let app = spawn_app().await;
    let first = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    let second = app.connect(Some(6847)).await;
    assert_eq!(second.callback.status(), 303);
    assert_eq!(app.connection_count().await, 1, "one connection per company");
    assert_eq!(app.connection_id_for(6847).await, id, "same id");
    let tokens = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(tokens.access.unwrap().expose_secret(), second.access_token);
    assert_ne!(first.access_token, second.access_token);
    let audit = app.state.store.audit_entries(Some(&id), None, 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["reconnect", "connect"], "the history is kept");
}

#[tokio::test]
async fn denying_access_shows_a_not_connected_page_that_offers_to_try_again() {
    let app = spawn_app().await;
    let authorize = app.start_connect().await;
    let back = app.decide_at_fake(&authorize, Some(6847), false).await;
    assert!(back.contains("error=access_denied"));
    let res = app.client.get(&back).send().await.unwrap();
    let res = app.follow(&app.client, res).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("was not connected"), "{body}");
    assert!(body.contains("href=\"/connect/snapinspect\""), "offers to try again");
    assert_eq!(app.connection_count().await, 0);
}

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

/// Send the callback with `query` from the app's browser and check it redirects to a clean 400
/// page that says `expect`, with nothing stored.
async fn assert_refused(app: &crate::helpers::TestApp, client: &reqwest::Client, query: &str, expect: &str) {
    let res = client.get(format!("{}/connect/snapinspect/callback?{query}", app.addr)).send().await.unwrap();
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = app.follow(client, res).await;
    assert_eq!(res.status(), 400, "refused: {query}");
    let body = res.text().await.unwrap();
    assert!(body.contains(expect), "page says `{expect}`: {body}");
    assert!(!body.contains("at_secret") && !body.contains("rt_secret"), "tokens are never rendered");
    assert_eq!(app.connection_count().await, 0, "nothing stored");
}

async fn fresh_state(app: &crate::helpers::TestApp) -> String {
    let authorize = app.start_connect().await;
    authorize.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned()
}

#[tokio::test]
async fn a_callback_without_a_state_is_refused() {
    let app = spawn_app().await;
    assert_refused(&app, &app.client, "access_token=at_secret&token_type=Bearer&refresh_token=rt_secret", "no state")
        .await;
}

#[tokio::test]
async fn a_callback_with_an_unknown_state_is_refused() {
    let app = spawn_app().await;
    fresh_state(&app).await;
    assert_refused(
        &app,
        &app.client,
        "access_token=at_secret&token_type=Bearer&state=madeup&refresh_token=rt_secret",
        "does not belong to a connection we started",
    )
    .await;
}

#[tokio::test]
async fn a_callback_with_an_expired_state_is_refused() {
    let app = spawn_app().await;
    let state = fresh_state(&app).await;
    let (created, expires): (i64, i64) = sqlx::query_as("select created_at, expires_at from oauth_states")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(expires - created, 10 * 60 * 1000, "a state lives ten minutes from when it was made");
    assert!((created - connect_hub::time::now_ms()).abs() < 60_000, "made now");
    sqlx::query("update oauth_states set expires_at = created_at - 1").execute(app.state.store.pool()).await.unwrap();
    assert_refused(
        &app,
        &app.client,
        &format!("access_token=at_secret&token_type=Bearer&state={state}&refresh_token=rt_secret"),
        "has expired",
    )
    .await;
}

#[tokio::test]
async fn a_callback_with_a_replayed_state_is_refused() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    assert_eq!(connected.callback.status(), 303);
    let res = app.client.get(&connected.callback_url).send().await.unwrap();
    let res = app.follow(&app.client, res).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("already been used"));
    assert_eq!(app.connection_count().await, 1, "the replay stored nothing more");
}

#[tokio::test]
async fn a_state_issued_to_another_browser_is_refused() {
    let app = spawn_app().await;
    let state = fresh_state(&app).await;
    let other_browser = browser_client();
    assert_refused(
        &app,
        &other_browser,
        &format!("access_token=at_secret&token_type=Bearer&state={state}&refresh_token=rt_secret"),
        "started in a different browser",
    )
    .await;
    // The victim's own browser can still use it: the refusal consumed nothing.
    let res = app
        .client
        .get(format!(
            "{}/connect/snapinspect/callback?access_token=x&token_type=Bearer&state={state}&refresh_token=y",
            app.addr
        ))
        .send()
        .await
        .unwrap();
    let page = app.follow(&app.client, res).await.text().await.unwrap();
    assert!(!page.contains("different browser") && !page.contains("already been used"), "{page}");
}

#[tokio::test]
async fn a_callback_without_tokens_or_with_another_token_type_is_refused() {
    let app = spawn_app().await;
    let state = fresh_state(&app).await;
    assert_refused(
        &app,
        &app.client,
        &format!("token_type=Bearer&state={state}&refresh_token=rt_secret"),
        "no access token",
    )
    .await;
    assert_refused(
        &app,
        &app.client,
        &format!("access_token=at_secret&token_type=Bearer&state={state}"),
        "no refresh token",
    )
    .await;
    assert_refused(
        &app,
        &app.client,
        &format!("access_token=at_secret&token_type=mac&state={state}&refresh_token=rt_secret"),
        "only Bearer tokens",
    )
    .await;
    assert_refused(
        &app,
        &app.client,
        &format!("access_token=at_secret&state={state}&refresh_token=rt_secret"),
        "no token type",
    )
    .await;
}

#[tokio::test]
async fn bearer_is_accepted_in_any_case() {
    let app = spawn_app().await;
    let authorize = app.start_connect().await;
    let back = app.decide_at_fake(&authorize, Some(6847), true).await;
    let res = app.client.get(back.replace("token_type=Bearer", "token_type=bEaReR")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(app.connection_count().await, 1);
}

#[tokio::test]
async fn the_fake_refuses_an_authorize_request_that_breaks_the_contract() {
    let app = spawn_app().await;
    let authorize = app.start_connect().await;
    let plain = reqwest::Client::new();
    for (param, value) in
        [("response_type", "token"), ("client_id", "someone-else"), ("redirect_uri", "https://evil.example/cb")]
    {
        let mut url = authorize.clone();
        let pairs: Vec<(String, String)> = authorize
            .query_pairs()
            .into_owned()
            .map(|(k, v)| if k == param { (k, value.to_owned()) } else { (k, v) })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let res = plain.get(url).send().await.unwrap();
        assert_eq!(res.status(), 400, "{param}={value} is refused");
    }
}

#[tokio::test]
async fn the_result_page_without_a_connection_sends_people_home() {
    let app = spawn_app().await;
    let res = app.get("/connect/snapinspect/done").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/");
}

#[tokio::test]
async fn without_a_snapinspect_application_the_button_explains_what_is_missing() {
    let app = crate::helpers::spawn_app_with(|v| {
        v.remove("SNAPINSPECT_CLIENT_ID");
        v.remove("SNAPINSPECT_CLIENT_SECRET");
    })
    .await;
    let body = app.get("/").await.text().await.unwrap();
    assert!(body.contains("not set up on this server"));
    let res = app.get("/connect/snapinspect").await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("SNAPINSPECT_CLIENT_ID"));
}

#[tokio::test]
async fn unknown_pages_are_a_friendly_404() {
    let app = spawn_app().await;
    let res = app.get("/no/such/page").await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("no page at this address"));
}
