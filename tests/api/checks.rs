//! Connection health checks (issue 19 item 6): a revoked SnapInspect connection is found by the
//! periodic check and announced, a 401 makes one exchange, an outage changes no status and is
//! retried sooner, a failing client-credentials connection recovers, two instances check each
//! connection once a round, and people see the checks in the CLI, the console, the API and /metrics.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use connect_hub::{
    checks::Outcome,
    client_credentials::CredentialsInput,
    demo::{snapinspect::UserShape, token_server::FakeTokenServer},
    domain::{ConnectionId, ConnectionStatus, Provider},
    store::Connection,
    time::now_ms,
};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::{api, eventually, forwarding, hub, spawn_app_with, spawn_token_server, unescape, TestApp};

/// An app whose background work runs (so the checker does), checking every `interval`, and
/// forwarding every event to the test's receiver.
async fn checking_app(interval: &str) -> TestApp {
    checking_app_with(interval, |_| {}).await
}

async fn checking_app_with(interval: &str, more: impl FnOnce(&mut BTreeMap<String, String>)) -> TestApp {
    let interval = interval.to_owned();
    spawn_app_with(move |v| {
        v.insert("WORKER_ENABLED".into(), "true".into());
        v.insert("CONNECTION_CHECK_INTERVAL".into(), interval);
        forwarding(v);
        more(v);
    })
    .await
}

async fn connection(app: &TestApp, id: &ConnectionId) -> Connection {
    app.state.store.connection(id).await.unwrap().expect("the connection exists")
}

/// Connect a company and wait until the pair from the connect link has been exchanged (in the
/// background), so the tokens stay as they are unless a check changes them.
async fn connected(app: &TestApp, company: i64) -> ConnectionId {
    let id = app.connect_company(company).await;
    eventually(10, "the connect link's tokens are exchanged", || async {
        !connection(app, &id).await.callback_tokens_pending
    })
    .await;
    id
}

/// The events of `kind` the receiver got, as JSON.
fn received(app: &TestApp, kind: &str) -> Vec<Value> {
    app.receiver
        .received()
        .iter()
        .map(|d| serde_json::from_slice::<Value>(&d.body).unwrap())
        .filter(|e| e["type"] == kind)
        .collect()
}

fn checks(app: &TestApp, provider: Provider, outcome: &str) -> u64 {
    app.state.metrics.connection_checks.get(provider, outcome)
}

#[tokio::test]
async fn a_connection_whose_access_was_revoked_turns_needs_reconnect_within_one_interval_and_says_the_check_found_it() {
    let app = checking_app("2s").await;
    let id = connected(&app, 6847).await;
    app.fake.revoke_grant(6847);
    let revoked = Instant::now();
    eventually(10, "the check finds the revoked connection", || async {
        connection(&app, &id).await.status == ConnectionStatus::NeedsReconnect
    })
    .await;
    // Within one interval of 2 s, plus a round's tick and the calls' own time.
    assert!(revoked.elapsed() < Duration::from_millis(2_000 + 500 + 1_500), "took {:?}", revoked.elapsed());
    let c = connection(&app, &id).await;
    assert_eq!(c.last_check.as_deref(), Some("refused"));
    let why = c.last_check_error.unwrap();
    assert!(why.contains("periodic connection check found its access revoked"), "{why}");
    assert!(why.contains("invalid_grant"), "the provider's answer is kept: {why}");
    assert_eq!(checks(&app, Provider::SnapInspect, "refused"), 1);

    eventually(10, "connection.needs_reconnect is delivered", || async {
        !received(&app, "connection.needs_reconnect").is_empty()
    })
    .await;
    let event = &received(&app, "connection.needs_reconnect")[0];
    assert_eq!(event["connection_id"], id.as_str());
    assert_eq!(event["payload"]["previous_status"], "active");
    let reason = event["payload"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the periodic connection check found its access revoked: SnapInspect refused"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_401_on_the_check_with_a_good_refresh_token_makes_exactly_one_exchange_and_the_connection_stays_active() {
    let app = checking_app("2s").await;
    let id = connected(&app, 6847).await;
    let (exchanges, calls) = (app.fake.exchanges(), app.fake.exchange_calls());
    // The access token stops working; its refresh token still exchanges.
    app.fake.revoke_access_tokens(6847);
    let revoked = now_ms();
    eventually(10, "a check exchanges after the 401", || async { app.fake.exchanges() > exchanges }).await;
    eventually(10, "the check after the exchange passes", || async {
        let c = connection(&app, &id).await;
        c.last_checked_at.is_some_and(|at| at >= revoked) && c.last_check.as_deref() == Some("ok")
    })
    .await;
    // Another round: the new token works, nothing is exchanged again.
    let passed = checks(&app, Provider::SnapInspect, "ok");
    eventually(10, "another check passes", || async { checks(&app, Provider::SnapInspect, "ok") > passed }).await;
    assert_eq!(app.fake.exchanges(), exchanges + 1, "one exchange");
    assert_eq!(app.fake.exchange_calls(), calls + 1, "one call to ExchangeToken");
    let c = connection(&app, &id).await;
    assert_eq!(c.status, ConnectionStatus::Active);
    assert_eq!(c.last_check_error, None);
    let token = app.state.tokens.token(&id).await.unwrap();
    assert!(app.fake.is_valid_access_token(token.token.expose_secret()), "the hub holds the new pair");
}

#[tokio::test]
async fn a_5xx_from_user_changes_no_status_records_the_failed_check_and_is_retried_sooner() {
    let app = checking_app("1h").await;
    let id = connected(&app, 6847).await;
    let calls = app.fake.exchange_calls();
    app.fake.set_user_shape(UserShape::Fail(503));
    let outcome = app.state.checker.check_now(&id).await.unwrap().unwrap();
    assert_eq!(outcome.outcome, Outcome::Failed);
    let c = connection(&app, &id).await;
    assert_eq!(c.status, ConnectionStatus::Active, "an outage is not the connection's fault");
    assert_eq!(c.last_check.as_deref(), Some("failed"));
    assert!(c.last_check_error.as_deref().unwrap().contains("HTTP 503"), "{:?}", c.last_check_error);
    let next = app.state.store.next_check_at(&id).await.unwrap().unwrap();
    let at = c.last_checked_at.unwrap();
    assert!((at + 2_000..=at + 2_400).contains(&next), "tried again in about 2 s, not in an hour: {}", next - at);

    // The periodic task tries again by itself, and once /user answers again the check passes.
    let user_calls = app.fake.user_calls();
    eventually(10, "the failed check is tried again", || async { app.fake.user_calls() > user_calls }).await;
    eventually(10, "the retry is recorded", || async { app.state.store.check_failures(&id).await.unwrap() == Some(2) })
        .await;
    let (c, next) = (connection(&app, &id).await, app.state.store.next_check_at(&id).await.unwrap().unwrap());
    let wait = next - c.last_checked_at.unwrap();
    assert!((3_200..=4_800).contains(&wait), "the second failure in a row waits about 4 s: {wait}");
    app.fake.set_user_shape(UserShape::TopLevel);
    eventually(15, "a check passes again", || async {
        connection(&app, &id).await.last_check.as_deref() == Some("ok")
    })
    .await;
    let c = connection(&app, &id).await;
    assert_eq!(c.status, ConnectionStatus::Active);
    assert_eq!(c.last_check_error, None);
    assert_eq!(app.fake.exchange_calls(), calls, "a 5xx is no reason to exchange");
    let next = app.state.store.next_check_at(&id).await.unwrap().unwrap();
    assert!(next - c.last_checked_at.unwrap() >= 2_880_000, "after an ok check, the full interval again");
    assert!(checks(&app, Provider::SnapInspect, "failed") >= 2);
}

#[tokio::test]
async fn a_failing_client_credentials_connection_that_works_again_turns_active_and_sends_recovered() {
    let app = checking_app("2s").await;
    let server = FakeTokenServer::signicat("id", "secret");
    let url = format!("{}/oauth/connect/token", spawn_token_server(&server).await);
    server.push_fault(503);
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(url),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Signicat, input, "secret").await;
    // The first token request (ours, or the first check's) meets the outage.
    let _ = app.state.tokens.token(&id).await;
    eventually(15, "a check finds it works again", || async {
        connection(&app, &id).await.status == ConnectionStatus::Active && server.issued() == 1
    })
    .await;
    eventually(10, "connection.recovered is delivered", || async {
        !received(&app, "connection.recovered").is_empty()
    })
    .await;
    let event = &received(&app, "connection.recovered")[0];
    assert_eq!(event["connection_id"], id.as_str());
    assert_eq!(event["payload"]["provider"], "signicat");
    assert_eq!(event["payload"]["previous_status"], "failing");
    assert_eq!(event["payload"]["status"], "active");
    let c = connection(&app, &id).await;
    assert_eq!(c.last_check.as_deref(), Some("ok"));
    assert!(checks(&app, Provider::Signicat, "ok") >= 1);
    let audit = app.state.store.audit_entries(Some(&id), None, 30).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "token_issued" && a.actor == connect_hub::tokens::CHECK_ACTOR),
        "the check fetched the token that recovered it"
    );
}

#[tokio::test]
async fn on_postgresql_two_instances_check_each_connection_once_a_round() {
    let a = checking_app("3s").await;
    if !a.db.is_postgres() {
        println!("skipped on SQLite: many instances need PostgreSQL; this runs in the PostgreSQL pass");
        return;
    }
    // B shares A's database, keys and SnapInspect (the fake that issued the tokens).
    let shared: BTreeMap<String, String> = [
        "DATABASE_URL",
        "ENCRYPTION_KEY",
        "SESSION_KEY",
        "PUBLIC_URL",
        "SNAPINSPECT_AUTHORIZE_URL",
        "SNAPINSPECT_EXCHANGE_URL",
        "SNAPINSPECT_API_URL",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), a.vars[k].clone()))
    .collect();
    let b = checking_app_with("3s", move |v| v.extend(shared)).await;
    let mut tokens = Vec::new();
    for company in [6847, 7012, 9001, 4242] {
        let id = connected(&a, company).await;
        tokens.push(a.state.tokens.token(&id).await.unwrap().token.expose_secret().to_owned());
    }
    // A slow SnapInspect: each check is still in flight when the other instance's next round
    // looks for due checks (every 750 ms), so only the claim's lease keeps it from checking too.
    a.fake.set_user_delay(Duration::from_millis(1_000));
    // Two rounds at least for every connection.
    eventually(30, "every connection is checked twice", || async {
        tokens.iter().all(|t| a.fake.user_call_times(t).len() >= 2)
    })
    .await;
    for t in &tokens {
        let times = a.fake.user_call_times(t);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            // Rounds are 80 to 100 % of the interval apart (2.4 s to 3 s): two instances checking one
            // connection in the same round would be milliseconds apart.
            assert!(gap >= Duration::from_millis(2_300), "checked twice in one round: {gap:?} apart ({times:?})");
        }
    }
    let all = |app: &TestApp| checks(app, Provider::SnapInspect, "ok");
    let calls: usize = tokens.iter().map(|t| a.fake.user_call_times(t).len()).sum();
    let counted = all(&a) + all(&b);
    // Each call is one instance's check; those still in flight (one per connection at most) are
    // not counted yet.
    assert!(
        counted <= calls as u64 && counted + tokens.len() as u64 >= calls as u64,
        "{counted} checks, {calls} calls"
    );
    println!("checks: instance a {}, instance b {}", all(&a), all(&b));
}

#[tokio::test]
async fn with_the_interval_zero_nothing_is_checked() {
    let app = checking_app("0").await;
    let id = connected(&app, 6847).await;
    let calls = app.fake.user_calls();
    // An absence: give the checker (were it running) several of its shortest rounds.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(app.fake.user_calls(), calls, "no /user call");
    let c = connection(&app, &id).await;
    assert_eq!(c.last_checked_at, None);
    assert_eq!(app.state.store.next_check_at(&id).await.unwrap(), None, "not even scheduled");
    assert!(!app.state.checker.enabled());
}

#[tokio::test]
async fn the_command_line_runs_a_check_and_its_exit_code_says_whether_it_passed() {
    let app = checking_app("0").await;
    let id = connected(&app, 6847).await;
    let before = String::from_utf8_lossy(&hub(&app, &["connections", "list"]).stdout).to_string();
    assert!(before.lines().any(|l| l.starts_with(id.as_str()) && l.ends_with("not checked")), "{before}");
    let ok = hub(&app, &["connections", "check", id.as_str()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");
    let list = String::from_utf8_lossy(&hub(&app, &["connections", "list"]).stdout).to_string();
    assert!(list.lines().next().unwrap().ends_with("LAST CHECK"), "{list}");
    let row = list.lines().find(|l| l.starts_with(id.as_str())).unwrap();
    assert!(row.contains(" ok 20"), "the outcome and when: {row}");

    app.fake.set_user_shape(UserShape::Fail(502));
    let failed = hub(&app, &["connections", "check", id.as_str()]);
    assert!(!failed.status.success());
    let out = String::from_utf8_lossy(&failed.stdout);
    assert!(out.starts_with("failed: SnapInspect answered HTTP 502"), "{out}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("did not pass"));
    let list = String::from_utf8_lossy(&hub(&app, &["connections", "list"]).stdout).to_string();
    assert!(list.lines().find(|l| l.starts_with(id.as_str())).unwrap().contains(" failed 20"), "{list}");
    let unknown = hub(&app, &["connections", "check", ConnectionId::generate().as_str()]);
    assert!(!unknown.status.success());
}

#[tokio::test]
async fn the_console_button_the_api_fields_and_the_metric_show_the_checks() {
    let app = checking_app("0").await;
    let id = connected(&app, 6847).await;
    let (_, key) = app.api_key("checks").await;
    let (status, body) = api(&app, reqwest::Method::GET, "/connections", &key).await;
    assert_eq!(status, 200);
    let json = &body["connections"][0];
    assert_eq!(json["last_checked_at"], Value::Null);
    assert_eq!(json["last_check"], Value::Null);

    let csrf = app.sign_in().await;
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("id=\"check-now\""), "a Check now button");
    assert!(page.contains("not checked yet"));
    let refused = app.admin_post(&format!("/admin/connections/{id}/check"), &[("csrf", "wrong")]).await;
    assert_eq!(refused.status(), 403, "the button's form needs the CSRF token");
    assert_eq!(connection(&app, &id).await.last_checked_at, None);
    let res = app.admin_post(&format!("/admin/connections/{id}/check"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let page = unescape(&app.page(&format!("/admin/connections/{id}")).await);
    assert!(page.contains("Checked: ok, the connection works."), "the outcome is shown");
    let last = page.split("id=\"last-check\">").nth(1).unwrap();
    assert!(last.starts_with("ok ("), "{}", &last[..60.min(last.len())]);

    let (_, body) = api(&app, reqwest::Method::GET, "/connections", &key).await;
    let json = &body["connections"][0];
    assert_eq!(json["last_check"], "ok");
    assert_eq!(json["last_check_error"], Value::Null);
    let at = json["last_checked_at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == "2026-11-25T09:00:00.000Z".len(), "ISO like the other times: {at}");

    app.fake.set_user_shape(UserShape::Fail(500));
    app.admin_post(&format!("/admin/connections/{id}/check"), &[("csrf", &csrf)]).await;
    let page = unescape(&app.page(&format!("/admin/connections/{id}")).await);
    assert!(page.contains("Checked: failed: SnapInspect answered HTTP 500"), "the failure is shown");
    let list = unescape(&app.page("/admin/connections").await);
    assert!(list.contains("failed: SnapInspect answered HTTP 500"), "the list shows the last check");
    let (_, body) = api(&app, reqwest::Method::GET, "/connections", &key).await;
    let json = &body["connections"][0];
    assert_eq!(json["last_check"], "failed");
    assert!(json["last_check_error"].as_str().unwrap().contains("HTTP 500"));
    assert_eq!(json["status"], "active");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("connect_hub_connection_checks_total{provider=\"snapinspect\",outcome=\"ok\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("connect_hub_connection_checks_total{provider=\"snapinspect\",outcome=\"failed\"} 1\n"));
    assert!(metrics.contains("connect_hub_connection_checks_total{provider=\"signicat\",outcome=\"ok\"} 0\n"));
}

/// An app whose checker runs only when the test calls a round (background work is off).
async fn quiet_app(interval: &str) -> TestApp {
    let interval = interval.to_owned();
    spawn_app_with(move |v| {
        v.insert("CONNECTION_CHECK_INTERVAL".into(), interval);
    })
    .await
}

#[tokio::test]
async fn first_checks_are_spread_over_the_interval_not_all_at_once() {
    let app = quiet_app("1h").await;
    let mut ids = Vec::new();
    for company in [6847, 7012, 9001] {
        ids.push(app.connect_company(company).await);
    }
    let before = now_ms();
    let scheduled = app.state.store.schedule_first_checks(before, 3_600_000, 500).await.unwrap();
    assert_eq!(scheduled, 3, "each gets its first check time");
    assert_eq!(app.state.checker.round().await.unwrap(), 0, "nothing is due yet");
    let mut times = Vec::new();
    for id in &ids {
        let at = app.state.store.next_check_at(id).await.unwrap().expect("scheduled");
        assert!((before..before + 3_600_000).contains(&at), "within the interval: {}", at - before);
        times.push(at);
    }
    // Three random points within an hour all in its first minute: one chance in about 200,000.
    assert!(times.iter().any(|t| t - before > 60_000), "spread, not at once: {times:?}");
    assert_eq!(app.fake.user_calls(), 3, "only the connects' own /user calls");
}

#[tokio::test]
async fn a_client_credentials_token_fetched_within_the_interval_is_the_check_and_an_older_one_is_fetched_again() {
    let app = quiet_app("1h").await;
    let server = FakeTokenServer::signicat("id", "secret");
    let url = format!("{}/oauth/connect/token", spawn_token_server(&server).await);
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(url),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Signicat, input, "secret").await;
    app.state.tokens.token(&id).await.unwrap();
    assert_eq!(server.calls(), 1);
    let pool = app.state.store.pool().clone();
    let due = || async {
        sqlx::query("update connections set next_check_at = 0").execute(&pool).await.unwrap();
    };
    due().await;
    assert_eq!(app.state.checker.round().await.unwrap(), 1);
    assert_eq!(server.calls(), 1, "a token fetched within the interval needs no other");
    assert_eq!(connection(&app, &id).await.last_check.as_deref(), Some("ok"));

    // Fetched more than an interval ago (its lifetime is longer): the check fetches one.
    let long_ago = now_ms() - 2 * 3_600_000;
    sqlx::query("update connections set token_obtained_at = $1").bind(long_ago).execute(&pool).await.unwrap();
    due().await;
    assert_eq!(app.state.checker.round().await.unwrap(), 1);
    assert_eq!(server.calls(), 2, "the check fetched a token");
    let c = connection(&app, &id).await;
    assert_eq!(c.last_check.as_deref(), Some("ok"));
    assert!(c.token_obtained_at.unwrap() > long_ago);
}

#[tokio::test]
async fn a_check_in_flight_holds_its_claim_for_five_minutes() {
    let app = quiet_app("1h").await;
    let id = app.connect_company(6847).await;
    app.fake.set_user_delay(Duration::from_millis(1_500));
    sqlx::query("update connections set next_check_at = 0").execute(app.state.store.pool()).await.unwrap();
    let started = now_ms();
    let checker = app.state.checker.clone();
    let round = tokio::spawn(async move { checker.round().await.unwrap() });
    eventually(10, "the check is claimed", || async {
        app.state.store.next_check_at(&id).await.unwrap().is_some_and(|at| at > 0)
    })
    .await;
    let lease = app.state.store.next_check_at(&id).await.unwrap().unwrap();
    // While /user is slow, the claim keeps the check from any other instance's round.
    let ahead = lease - started;
    assert!((299_000..=302_000).contains(&ahead), "leased for five minutes: {ahead} ms");
    assert!(connection(&app, &id).await.last_checked_at.is_none(), "still in flight");
    assert_eq!(round.await.unwrap(), 1);
    let next = app.state.store.next_check_at(&id).await.unwrap().unwrap();
    assert!(next - connection(&app, &id).await.last_checked_at.unwrap() >= 2_880_000, "then a full interval");
}

#[tokio::test]
async fn a_client_credentials_check_whose_fetch_fails_fails_although_an_unexpired_token_is_still_handed_out() {
    let app = quiet_app("1h").await;
    let server = FakeTokenServer::signicat("id", "secret");
    let url = format!("{}/oauth/connect/token", spawn_token_server(&server).await);
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(url),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Signicat, input, "secret").await;
    app.state.tokens.token(&id).await.unwrap();
    server.push_fault(503);
    let outcome = app.state.checker.check_now(&id).await.unwrap().unwrap();
    assert_eq!(server.calls(), 2, "the check asked for a new token");
    assert_eq!(outcome.outcome, Outcome::Failed, "the old token still works, but the provider is down: {outcome:?}");
    let c = connection(&app, &id).await;
    assert_eq!(c.last_check.as_deref(), Some("failed"));
    assert!(c.last_check_error.unwrap().contains("503"));
    app.state.tokens.token(&id).await.expect("the unexpired token is still handed out");
}
