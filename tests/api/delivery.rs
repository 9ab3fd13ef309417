//! Delivery to endpoints, over real loopback receivers: filters, isolation of a hanging endpoint,
//! the per-endpoint and overall caps, secret rotation with an overlap, auto-disable without loss,
//! stale claims, connection and operational events, `events show`, the console and `/metrics`.
//! Every signature a receiver gets is checked with the `standardwebhooks` crate.

use std::time::Duration;

use connect_hub::{
    demo::receiver::{Delivery, Reply},
    domain::endpoint::{generate_secret, DeliveryState, EndpointId, EndpointUrl, EventTypes},
    store::{ClaimAsk, ClaimedDelivery, DeliveryResult, ExchangeFailure, NewEndpoint, Store},
    time::now_ms,
};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::{receiver, spawn_app_with, webhook_headers, TestApp, CREATE, SIGNED};

/// Add an endpoint through the store (as the CLI does); returns its id and secret.
async fn endpoint(app: &TestApp, url: &str, types: &str) -> (EndpointId, String) {
    let id = EndpointId::generate();
    let secret = generate_secret();
    let new = NewEndpoint {
        id: &id,
        url: &EndpointUrl::parse(url).unwrap(),
        description: "test",
        event_types: &EventTypes::parse(types).unwrap(),
        secret: &secret,
    };
    app.state.store.create_endpoint(&new, now_ms(), "test").await.unwrap();
    (id, secret.expose_secret().to_owned())
}

/// Claim up to `n` of `ep`'s due deliveries and no other endpoint's, at most `budget` in all, as a
/// worker named after the claim would.
async fn claim(
    store: &Store,
    ep: &str,
    n: i64,
    budget: i64,
    claim_id: &str,
    now: i64,
    lease_until: i64,
) -> anyhow::Result<Vec<ClaimedDelivery>> {
    let room = [(ep, n)];
    let ask =
        ClaimAsk { owner: claim_id, claim_id, now, lease_until, budget, per_endpoint: 0, room: &room, start_at: "" };
    store.claim_deliveries(&ask).await
}

/// Every delivery verifies with `secret` (Standard Webhooks, independently implemented).
fn assert_all_verify(got: &[Delivery], secret: &str) {
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    for d in got {
        verifier
            .verify(&d.body, &webhook_headers(d))
            .unwrap_or_else(|e| panic!("{} does not verify: {e:?}", d.webhook_id));
    }
}

fn types_of(got: &[Delivery]) -> Vec<String> {
    got.iter()
        .map(|d| serde_json::from_slice::<Value>(&d.body).unwrap()["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn body(d: &Delivery) -> Value {
    serde_json::from_slice(&d.body).unwrap()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn app_with(pairs: &[(&str, &str)]) -> TestApp {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    spawn_app_with(move |v| v.extend(pairs)).await
}

#[tokio::test]
async fn each_endpoint_gets_only_the_event_types_it_asked_for_and_every_signature_verifies() {
    let app = app_with(&[]).await;
    let (all, all_url) = receiver();
    let (signed, signed_url) = receiver();
    let (_, all_secret) = endpoint(&app, &all_url, "").await;
    let (_, signed_secret) = endpoint(&app, &signed_url, "Review_Signed").await;
    app.connect_company(6847).await;
    let create = app.send_event(CREATE).await;
    let review = app.send_event(SIGNED).await;
    app.state.worker.drain().await.unwrap();

    let got = all.received();
    let mut types = types_of(&got);
    types.sort();
    assert_eq!(types, ["Create_Inspection", "Review_Signed", "connection.created"]);
    assert_all_verify(&got, &all_secret);
    let got = signed.received();
    assert_eq!(types_of(&got), ["Review_Signed"], "only the type it asked for");
    assert_eq!(got[0].webhook_id, review.as_str());
    assert_all_verify(&got, &signed_secret);
    assert!(
        standardwebhooks::Webhook::new(&all_secret).unwrap().verify(&got[0].body, &webhook_headers(&got[0])).is_err(),
        "each endpoint has its own secret"
    );
    let e = app.event(&create).await;
    assert_eq!(e.state, "done");
    assert_eq!(app.state.store.event_deliveries(e.rowid).await.unwrap().len(), 1, "no delivery to the filtered one");
    let to_all = all.received().into_iter().find(|d| d.webhook_id == create.as_str()).unwrap();
    assert_eq!(body(&to_all)["inspection"]["iInspectionID"], 1388563, "enriched once, delivered to all");
    assert_eq!(app.fake.inspection_calls(), 2, "one read per event, not per endpoint");
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_back_the_others() {
    let app = app_with(&[
        ("WORKER_ENABLED", "true"),
        ("WORKER_CONCURRENCY", "4"),
        ("ENDPOINT_CONCURRENCY", "2"),
        ("OUTBOUND_TIMEOUT", "120s"),
    ])
    .await;
    let (hang, hang_url) = receiver();
    hang.set_behaviour(Duration::ZERO, true);
    let (fast, fast_url) = receiver();
    endpoint(&app, &hang_url, "Create_Inspection").await;
    let (_, secret) = endpoint(&app, &fast_url, "Create_Inspection").await;
    app.connect_company(6847).await;
    for i in 0..30 {
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
    }
    wait_until("the healthy endpoint got all 30", || fast.count() == 30).await;
    assert_all_verify(&fast.received(), &secret);
    assert_eq!(hang.count(), 0, "the hanging one answered nothing");
    assert_eq!(hang.max_in_flight(), 2, "and held only its own two slots");
    assert!(fast.max_in_flight() <= 2);
}

#[tokio::test]
async fn a_hanging_endpoint_gives_back_the_worker_slots_it_waits_in() {
    // The hanging endpoint alone could fill every slot of the worker.
    let app = app_with(&[
        ("WORKER_ENABLED", "true"),
        ("WORKER_CONCURRENCY", "2"),
        ("ENDPOINT_CONCURRENCY", "2"),
        ("OUTBOUND_TIMEOUT", "120s"),
    ])
    .await;
    let (hang, hang_url) = receiver();
    hang.set_behaviour(Duration::ZERO, true);
    endpoint(&app, &hang_url, "Create_Inspection").await;
    app.connect_company(6847).await;
    for i in 0..4 {
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
    }
    wait_until("the hanging endpoint holds its two", || hang.in_flight() == 2).await;
    let (fast, fast_url) = receiver();
    endpoint(&app, &fast_url, "Create_Inspection").await;
    for i in 4..10 {
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
    }
    // The six sent after it was added (events sent before may reach it too, if the worker had not
    // processed them yet when it was added).
    let later = || {
        let ids: std::collections::BTreeSet<i64> = fast
            .received()
            .iter()
            .filter_map(|d| {
                body(d)["data"]["iInspectionID"].as_i64().or_else(|| body(d)["inspection"]["iInspectionID"].as_i64())
            })
            .filter(|id| (4..10).contains(id))
            .collect();
        ids.len() == 6
    };
    wait_until("the other endpoint got the six sent after it was added", later).await;
    assert_eq!(hang.max_in_flight(), 2, "the hanging one never got more than its own two");
    assert!(fast.max_in_flight() <= 2, "and the others never more than WORKER_CONCURRENCY");
}

#[tokio::test]
async fn no_endpoint_ever_has_more_deliveries_in_flight_than_its_cap() {
    let app = app_with(&[("ENDPOINT_CONCURRENCY", "3")]).await;
    let (slow, url) = receiver();
    slow.set_behaviour(Duration::from_millis(40), false);
    endpoint(&app, &url, "Create_Inspection").await;
    app.connect_company(6847).await;
    for i in 0..24 {
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
    }
    app.state.worker.drain().await.unwrap();
    assert_eq!(slow.count(), 24);
    assert_eq!(slow.max_in_flight(), 3, "up to the cap, never past it");
}

#[tokio::test]
async fn no_more_deliveries_are_in_flight_than_worker_concurrency() {
    let app = app_with(&[("WORKER_CONCURRENCY", "5"), ("ENDPOINT_CONCURRENCY", "16")]).await;
    let (slow, url) = receiver();
    slow.set_behaviour(Duration::from_millis(40), false);
    // Three endpoints on one receiver: together they could hold 48.
    for _ in 0..3 {
        endpoint(&app, &url, "Create_Inspection").await;
    }
    app.connect_company(6847).await;
    for i in 0..12 {
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
    }
    app.state.worker.drain().await.unwrap();
    let states: Vec<(String, i64, Option<String>)> =
        sqlx::query_as("select state, attempts, last_error from deliveries where state <> 'done'")
            .fetch_all(app.state.store.pool())
            .await
            .unwrap();
    assert_eq!(slow.count(), 36, "{states:?}");
    assert_eq!(slow.max_in_flight(), 5);
}

#[tokio::test]
async fn during_a_rotation_overlap_every_delivery_carries_two_signatures_and_after_it_one() {
    let app = app_with(&[]).await;
    let (r, url) = receiver();
    let (id, old) = endpoint(&app, &url, "Create_Inspection").await;
    app.connect_company(6847).await;
    let new = generate_secret();
    let now = now_ms();
    assert!(app.state.store.rotate_endpoint_secret(&id, &new, now + 3_600_000, now, "test").await.unwrap());
    app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].signature.split(' ').count(), 2, "{}", got[0].signature);
    assert_all_verify(&got, &old);
    assert_all_verify(&got, new.expose_secret());
    // The console's test send is signed the same way.
    r.clear();
    test_send(&app, id.as_str()).await;
    assert_eq!(r.received()[0].signature.split(' ').count(), 2, "the test send, during the overlap");

    // The overlap ends.
    sqlx::query("update endpoints set previous_until = $1")
        .bind(now_ms() - 1)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    r.clear();
    app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":6847}"#).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_eq!(got[0].signature.split(' ').count(), 1, "{}", got[0].signature);
    assert_all_verify(&got, new.expose_secret());
    assert!(standardwebhooks::Webhook::new(&old).unwrap().verify(&got[0].body, &webhook_headers(&got[0])).is_err());
    r.clear();
    test_send(&app, id.as_str()).await;
    assert_eq!(r.received()[0].signature.split(' ').count(), 1, "the test send, after the overlap");

    // Without an overlap the old secret stops at once.
    let newer = generate_secret();
    let now = now_ms();
    app.state.store.rotate_endpoint_secret(&id, &newer, now, now, "test").await.unwrap();
    r.clear();
    app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":6847}"#).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_eq!(got[0].signature.split(' ').count(), 1);
    assert_all_verify(&got, newer.expose_secret());
}

async fn failing_since(app: &TestApp, id: &EndpointId, at: i64) {
    sqlx::query("update endpoints set failing_since = $2 where id = $1")
        .bind(id.as_str())
        .bind(at)
        .execute(app.state.store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_endpoint_failing_past_the_limit_is_disabled_keeps_its_deliveries_and_enable_resumes_them_in_order() {
    let app =
        app_with(&[("ENDPOINT_DISABLE_AFTER", "1h"), ("ENDPOINT_CONCURRENCY", "1"), ("RETRY_SCHEDULE", "0s,0s,0s")])
            .await;
    let (failing, url) = receiver();
    let (watcher, watcher_url) = receiver();
    let (ep, secret) = endpoint(&app, &url, "Create_Inspection").await;
    let (_, watcher_secret) = endpoint(&app, &watcher_url, "endpoint.disabled").await;
    app.connect_company(6847).await;

    // Failing for a minute less than the limit: one more failure does not disable it.
    failing.push_reply(Reply::Status(500));
    failing_since(&app, &ep, now_ms() - 3_540_000).await;
    let e1 = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let e = app.state.store.endpoint(&ep).await.unwrap().unwrap();
    assert!(e.enabled, "not yet");
    assert_eq!(e.failing_since, None, "the retry succeeded, so the streak ended");
    assert_eq!(failing.count(), 2);

    // Failing for a second past the limit: the next failure disables it.
    failing.clear();
    failing.push_reply(Reply::Status(500));
    failing_since(&app, &ep, now_ms() - 3_601_000).await;
    let e2 = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":6847}"#).await;
    app.state.worker.drain().await.unwrap();
    let e = app.state.store.endpoint(&ep).await.unwrap().unwrap();
    assert!(!e.enabled, "disabled");
    assert!(e.disabled_reason.unwrap().contains("ENDPOINT_DISABLE_AFTER"));
    assert_eq!(failing.count(), 1, "one failed attempt, then it waits");
    let told = watcher.received();
    assert_eq!(types_of(&told), ["endpoint.disabled"], "the other endpoint is told");
    assert_eq!(body(&told[0])["payload"]["endpoint_id"], ep.as_str());
    assert_all_verify(&told, &watcher_secret);

    // Events keep coming while it is disabled: their deliveries wait.
    let e3 = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":6847}"#).await;
    let e4 = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":4,"iCompanyID":6847}"#).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(failing.count(), 1, "nothing is sent to a disabled endpoint");
    let waiting = app.state.store.event_deliveries(app.event(&e4).await.rowid).await.unwrap();
    assert_eq!(waiting[0].state, "pending", "kept, not dropped");

    assert!(app.state.store.set_endpoint_enabled(&ep, true, "", now_ms(), "test").await.unwrap());
    app.state.worker.drain().await.unwrap();
    let got = failing.received();
    let ids: Vec<&str> = got.iter().map(|d| d.webhook_id.as_str()).collect();
    assert_eq!(ids, [e2.as_str(), e2.as_str(), e3.as_str(), e4.as_str()], "resumed in order, no replay needed");
    assert_all_verify(&got, &secret);
    assert_ne!(e1, e2);
}

#[tokio::test]
async fn a_result_from_a_stale_claim_is_not_recorded_and_its_lease_cannot_be_renewed() {
    let app = app_with(&[]).await;
    let (_, url) = receiver();
    let (ep, _) = endpoint(&app, &url, "Create_Inspection").await;
    app.connect_company(6847).await;
    let id = app.send_event(CREATE).await;
    app.state.worker.run_once().await.unwrap();
    let store = &app.state.store;
    let now = now_ms();
    let first = claim(store, ep.as_str(), 10, 10, "clm_one", now, now + 1000).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(claim(store, ep.as_str(), 10, 10, "clm_x", now, now + 1000).await.unwrap().is_empty());
    // The paused worker's lease ends; another claims the delivery.
    let later = now + 1000;
    let second = claim(store, ep.as_str(), 10, 10, "clm_two", later, later + 60_000).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);

    assert!(!store.renew_delivery_lease(first[0].id, "clm_one", later + 120_000).await.unwrap());
    let result = |claim: &str, state: DeliveryState| DeliveryResult {
        delivery_id: first[0].id,
        endpoint_id: ep.as_str().to_owned(),
        claim_id: claim.to_owned(),
        started_at: now,
        duration_ms: 5,
        state,
        retry_at: 0,
        http_status: Some(410),
        error: Some("stale".into()),
        response_excerpt: None,
    };
    assert_eq!(store.record_delivery_results(&[result("clm_one", DeliveryState::Dead)], later, 0).await.unwrap(), 0);
    let rowid = app.event(&id).await.rowid;
    let d = &store.event_deliveries(rowid).await.unwrap()[0];
    assert_eq!(d.state, "processing", "the stale result changed nothing");
    assert!(store.delivery_attempts(d.id).await.unwrap().is_empty(), "and recorded no attempt");

    assert!(store.renew_delivery_lease(first[0].id, "clm_two", later + 120_000).await.unwrap());
    let mut ok = result("clm_two", DeliveryState::Done);
    ok.http_status = Some(200);
    ok.error = None;
    assert_eq!(store.record_delivery_results(&[ok], later, 0).await.unwrap(), 1);
    let d = &store.event_deliveries(rowid).await.unwrap()[0];
    assert_eq!((d.state.as_str(), d.last_status), ("done", Some(200)));
    assert_eq!(store.delivery_attempts(d.id).await.unwrap().len(), 1);
    assert!(!store.renew_delivery_lease(first[0].id, "clm_two", later + 120_000).await.unwrap(), "finished");
}

#[tokio::test]
async fn connection_events_are_delivered_with_the_connection_provider_company_and_reason() {
    // One at a time, so they arrive in the order they happened.
    let app = app_with(&[("ENDPOINT_CONCURRENCY", "1")]).await;
    let (r, url) = receiver();
    let types = "connection.created,connection.needs_reconnect,connection.recovered,connection.disconnected";
    let (_, secret) = endpoint(&app, &url, types).await;
    let conn = app.connect_company(6847).await;
    let failure = ExchangeFailure::Dead { message: "the refresh token was revoked".into() };
    for _ in 0..2 {
        hold_lease(&app.state.store, &conn).await;
        assert!(app.state.store.record_exchange_failure(&conn, "test", &failure, now_ms(), "test").await.unwrap());
    }
    assert_eq!(app.connect_company(6847).await, conn, "reconnected, same connection");
    assert!(app.state.store.disconnect(&conn, now_ms(), "test").await.unwrap());
    app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();

    let got = r.received();
    assert_eq!(
        types_of(&got),
        ["connection.created", "connection.needs_reconnect", "connection.recovered", "connection.disconnected"],
        "each change once, and no webhook event"
    );
    assert_all_verify(&got, &secret);
    for d in &got {
        let b = body(d);
        assert_eq!(b["connection_id"], conn.as_str());
        assert_eq!(b["company_id"], 6847);
        assert_eq!(b["payload"]["provider"], "snapinspect");
        assert_eq!(b["payload"]["connection_id"], conn.as_str());
    }
    assert_eq!(body(&got[1])["payload"]["reason"], "the refresh token was revoked");
    assert_eq!(body(&got[2])["payload"]["previous_status"], "needs_reconnect");
}

#[tokio::test]
async fn a_dead_delivery_is_told_to_the_other_endpoints_and_one_delivery_can_be_replayed() {
    let app = app_with(&[]).await;
    let (gone, gone_url) = receiver();
    let (ops, ops_url) = receiver();
    let (gone_ep, _) = endpoint(&app, &gone_url, "").await;
    let (_, ops_secret) = endpoint(&app, &ops_url, "delivery.dead").await;
    app.connect_company(6847).await;
    app.state.worker.drain().await.unwrap();
    gone.clear();
    gone.push_reply(Reply::Status(410));
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();

    let told = ops.received();
    assert_eq!(types_of(&told), ["delivery.dead"]);
    assert_all_verify(&told, &ops_secret);
    let data = &body(&told[0])["payload"];
    assert_eq!(data["endpoint_id"], gone_ep.as_str());
    assert_eq!(data["event_id"], id.as_str());
    assert_eq!(data["last_status"], 410);
    assert_eq!(gone.count(), 1, "the endpoint whose delivery died is not told about itself");

    let out = crate::helpers::hub(&app, &["events", "replay", id.as_str(), "--endpoint", gone_ep.as_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 deliveries of event"));
    app.state.worker.drain().await.unwrap();
    assert_eq!(gone.count(), 2);
    let rowid = app.event(&id).await.rowid;
    assert_eq!(app.state.store.event_deliveries(rowid).await.unwrap()[0].state, "done");
    let missing = app.state.store.replay_deliveries(&id, Some("ep_forward"), now_ms(), "test").await.unwrap();
    assert!(missing.is_err(), "no delivery to that endpoint");
}

#[tokio::test]
async fn events_show_prints_each_attempt_with_its_status_latency_and_response_excerpt() {
    let app = app_with(&[]).await;
    let (r, url) = receiver();
    r.set_body(&format!("thanks, got it {}", "x".repeat(2000)));
    let (ep, _) = endpoint(&app, &url, "Create_Inspection").await;
    app.connect_company(6847).await;
    r.push_reply(Reply::Status(503));
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();

    let rowid = app.event(&id).await.rowid;
    let d = &app.state.store.event_deliveries(rowid).await.unwrap()[0];
    let attempts = app.state.store.delivery_attempts(d.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    let excerpt = attempts[0].response_excerpt.as_deref().unwrap();
    assert_eq!(excerpt.len(), 1024, "the first KiB of the answer");
    assert!(excerpt.starts_with("thanks, got it"));

    let out = crate::helpers::hub(&app, &["events", "show", id.as_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("delivery to {ep}")), "{text}");
    assert!(text.contains("HTTP 503") && text.contains("HTTP 200"), "{text}");
    assert!(text.contains(" ms") && text.contains("response: thanks, got it"), "{text}");
    assert!(text.contains("status done after 2 attempts"), "{text}");

    // The console's event page lists the deliveries and their attempts too.
    app.sign_in().await;
    let page = app.page(&format!("/admin/events/{id}")).await;
    assert!(page.contains(ep.as_str()) && page.contains("thanks, got it"));
    assert_eq!(page.matches("<td>503</td>").count(), 1);

    let bad = crate::helpers::hub(&app, &["events", "show", "evt_nope"]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn endpoints_are_managed_from_the_shell() {
    let app = app_with(&[]).await;
    let (r, url) = receiver();
    let out =
        crate::helpers::hub(&app, &["endpoints", "add", "--url", &url, "--events", "Create_Inspection,Review_Signed"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let id = lines.next().unwrap().to_owned();
    let secret = lines.next().unwrap().to_owned();
    assert!(id.starts_with("ep_") && secret.starts_with("whsec_"), "{text}");

    let list = String::from_utf8_lossy(&crate::helpers::hub(&app, &["endpoints", "list"]).stdout).into_owned();
    assert!(list.contains(&id) && list.contains("Create_Inspection,Review_Signed") && list.contains("enabled"));
    assert!(list.contains("never tried") && !list.contains("whsec_"), "{list}");

    assert!(crate::helpers::hub(&app, &["endpoints", "disable", &id]).status.success());
    assert!(String::from_utf8_lossy(&crate::helpers::hub(&app, &["endpoints", "list"]).stdout).contains("disabled"));
    assert!(crate::helpers::hub(&app, &["endpoints", "enable", &id]).status.success());

    let rotated = crate::helpers::hub(&app, &["endpoints", "rotate-secret", &id, "--overlap", "1h"]);
    let new_secret = String::from_utf8_lossy(&rotated.stdout).trim().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    app.connect_company(6847).await;
    app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_all_verify(&got, &secret);
    assert_all_verify(&got, &new_secret);
    let list = String::from_utf8_lossy(&crate::helpers::hub(&app, &["endpoints", "list"]).stdout).into_owned();
    assert!(list.contains("ok "), "the last result: {list}");

    for bad in [&["endpoints", "add", "--url", "https://u:p@example.com/"][..], &["endpoints", "enable", "ep_nope"]] {
        let out = crate::helpers::hub(&app, bad);
        assert!(!out.status.success(), "{bad:?}");
    }
    let unknown = crate::helpers::hub(&app, &["endpoints", "remove", "ep_aaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no endpoint with id"));
    assert!(crate::helpers::hub(&app, &["endpoints", "remove", &id]).status.success());
    assert!(app.state.store.endpoints().await.unwrap().is_empty());
}

#[tokio::test]
async fn forward_url_defines_one_endpoint_and_a_restart_updates_it() {
    let mut app = spawn_app_with(crate::helpers::forwarding).await;
    let eps = app.state.store.endpoints().await.unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].id.as_str(), "ep_forward");
    assert!(eps[0].event_types.all());
    let (_, other) = receiver();
    app.vars.insert("FORWARD_URL".into(), other.clone());
    app.restart().await;
    let eps = app.state.store.endpoints().await.unwrap();
    assert_eq!(eps.len(), 1, "updated, not added");
    assert_eq!(eps[0].url, other);
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
}

#[tokio::test]
async fn metrics_show_deliveries_by_endpoint_latency_queue_depth_with_zeros_and_the_oldest_due_age() {
    let app = app_with(&[]).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for state in ["pending", "processing", "retrying", "done", "dead"] {
        assert_eq!(metric(&text, &format!("connect_hub_deliveries{{state=\"{state}\"}}")), 0.0);
    }
    assert_eq!(metric(&text, "connect_hub_events{status=\"pending\"}"), 0.0, "events too, zeros included");
    assert_eq!(metric(&text, "connect_hub_oldest_due_delivery_age_seconds"), 0.0);
    assert_eq!(metric(&text, "connect_hub_delivery_duration_seconds_count"), 0.0);

    let (r, url) = receiver();
    let (ep, _) = endpoint(&app, &url, "Create_Inspection").await;
    app.connect_company(6847).await;
    app.send_event(CREATE).await;
    app.state.worker.run_once().await.unwrap();
    sqlx::query("update deliveries set next_attempt_at = $1")
        .bind(now_ms() - 90_000)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(metric(&text, "connect_hub_deliveries{state=\"pending\"}"), 1.0);
    let age = metric(&text, "connect_hub_oldest_due_delivery_age_seconds");
    assert!((90.0..600.0).contains(&age), "waited about 90 s: {age}");

    r.push_reply(Reply::Status(500));
    app.state.worker.drain().await.unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    let done = format!("connect_hub_deliveries_total{{endpoint=\"{ep}\",outcome=\"done\"}}");
    let retried = format!("connect_hub_deliveries_total{{endpoint=\"{ep}\",outcome=\"retrying\"}}");
    assert_eq!(metric(&text, &done), 1.0);
    assert_eq!(metric(&text, &retried), 1.0);
    assert_eq!(metric(&text, "connect_hub_delivery_duration_seconds_count"), 2.0);
    assert_eq!(metric(&text, "connect_hub_delivery_duration_seconds_bucket{le=\"+Inf\"}"), 2.0);
    assert_eq!(metric(&text, "connect_hub_deliveries{state=\"done\"}"), 1.0);
    assert_eq!(metric(&text, "connect_hub_deliveries{state=\"pending\"}"), 0.0);
    assert_eq!(metric(&text, "connect_hub_oldest_due_delivery_age_seconds"), 0.0);
}

#[tokio::test]
async fn replaying_a_delivered_event_sends_it_again_and_one_without_deliveries_goes_to_todays_endpoints() {
    let app = app_with(&[]).await;
    app.connect_company(6847).await;
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    assert!(app.state.store.event_deliveries(app.event(&id).await.rowid).await.unwrap().is_empty(), "no endpoint yet");

    let (r, url) = receiver();
    let (_, secret) = endpoint(&app, &url, "Create_Inspection").await;
    let replay = |app: &TestApp| {
        let store = app.state.store.clone();
        let id = id.clone();
        async move { store.replay_deliveries(&id, None, now_ms(), "test").await.unwrap().unwrap() }
    };
    assert_eq!(replay(&app).await, 1, "fanned out to the endpoint added since");
    app.state.worker.drain().await.unwrap();
    assert_eq!(replay(&app).await, 1, "nothing failed: sent again");
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_eq!(got.iter().map(|d| d.webhook_id.as_str()).collect::<Vec<_>>(), [id.as_str(), id.as_str()]);
    assert_all_verify(&got, &secret);

    let waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":4242}"#).await;
    let refused = app.state.store.replay_deliveries(&waiting, None, now_ms(), "test").await.unwrap();
    assert!(refused.is_err(), "an event not processed yet has no deliveries to replay");
}

#[tokio::test]
async fn rotate_key_reseals_endpoint_secrets_and_they_still_sign() {
    use std::sync::Arc;

    use connect_hub::crypto::{decode_key, generate_key_b64, KeyRing};
    let app = app_with(&[]).await;
    let (r, url) = receiver();
    let (id, old) = endpoint(&app, &url, "Create_Inspection").await;
    let new = generate_secret();
    let now = now_ms();
    app.state.store.rotate_endpoint_secret(&id, &new, now + 3_600_000, now, "test").await.unwrap();

    let old_key = decode_key(&app.vars["ENCRYPTION_KEY"], 32).unwrap();
    let ring = KeyRing::new(&decode_key(&generate_key_b64(32), 32).unwrap(), &[old_key]);
    let store = app.state.store.with_keys(Arc::new(ring));
    let report = store.rotate_keys().await.unwrap();
    assert_eq!(report.resealed, 2, "the endpoint's secret and its previous one");
    let secrets = store.endpoint_secrets(&id, now_ms()).await.unwrap().unwrap();
    assert_eq!(secrets.current.expose_secret(), new.expose_secret());
    assert_eq!(secrets.previous.unwrap().expose_secret(), old);
    let _ = r;
}

#[tokio::test]
async fn a_large_batch_of_results_is_recorded_in_one_go() {
    let app = app_with(&[]).await;
    let (_, url) = receiver();
    let (ep, _) = endpoint(&app, &url, "Create_Inspection").await;
    let (_, other_url) = receiver();
    endpoint(&app, &other_url, "Review_Signed").await;
    let store = &app.state.store;
    let now = now_ms();
    assert_eq!(store.bench_preload(140, &["Create_Inspection", "Review_Signed"], now).await.unwrap(), 140);
    let mut claimed = claim(store, ep.as_str(), 100, 30, "clm_big", now, now + 60_000).await.unwrap();
    assert_eq!(claimed.len(), 30, "no more than the budget");
    claimed.extend(claim(store, ep.as_str(), 100, 85, "clm_big", now, now + 60_000).await.unwrap());
    assert_eq!(claimed.len(), 70, "then the rest of this endpoint's, and only its");
    let results: Vec<DeliveryResult> = claimed
        .iter()
        .map(|d| DeliveryResult {
            delivery_id: d.id,
            endpoint_id: d.endpoint_id.clone(),
            claim_id: d.claim_id.clone(),
            started_at: now,
            duration_ms: 3,
            state: DeliveryState::Done,
            retry_at: 0,
            http_status: Some(204),
            error: None,
            response_excerpt: None,
        })
        .collect();
    assert_eq!(store.record_delivery_results(&results, now, 0).await.unwrap(), 70);
    let done: i64 = sqlx::query_scalar("select count(*) from deliveries where state = 'done' and last_status = 204")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(done, 70);
    let attempts: i64 =
        sqlx::query_scalar("select count(*) from delivery_attempts").fetch_one(store.pool()).await.unwrap();
    assert_eq!(attempts, 70);
    let room = [(ep.as_str(), 100), ("ep_forward", 5)];
    let ask = ClaimAsk {
        owner: "w",
        claim_id: "c",
        now,
        lease_until: now,
        budget: 3,
        per_endpoint: 0,
        room: &room,
        start_at: "",
    };
    assert!(store.claim_deliveries(&ask).await.unwrap().is_empty(), "nothing left for this endpoint");
}

#[tokio::test]
async fn client_credentials_connections_raise_created_needs_reconnect_and_recovered_too() {
    let app = app_with(&[("ENDPOINT_CONCURRENCY", "1")]).await;
    let (r, url) = receiver();
    endpoint(&app, &url, "connection.created,connection.needs_reconnect,connection.recovered").await;
    let input = connect_hub::client_credentials::CredentialsInput {
        client_id: "sd-id".into(),
        environment: Some("demo".into()),
        ..Default::default()
    };
    let id = app.add_credentials(connect_hub::domain::Provider::Snapdocs, input, "s3cret").await;
    let store = &app.state.store;
    let failing = ExchangeFailure::Failing { message: "the token endpoint answered 503".into(), retry_after: 0 };
    hold_lease(store, &id).await;
    assert!(store.record_exchange_failure(&id, "test", &failing, now_ms(), "test").await.unwrap());
    let token = secrecy::SecretString::from("tok".to_owned());
    for _ in 0..2 {
        hold_lease(store, &id).await;
        assert!(store
            .store_issued_token(&id, "test", &token, now_ms() + 3_600_000, now_ms(), "test")
            .await
            .unwrap()
            .is_some());
    }
    let dead = ExchangeFailure::Dead { message: "invalid_client".into() };
    hold_lease(store, &id).await;
    assert!(store.record_exchange_failure(&id, "test", &dead, now_ms(), "test").await.unwrap());
    app.state.worker.drain().await.unwrap();

    let got = r.received();
    assert_eq!(types_of(&got), ["connection.created", "connection.recovered", "connection.needs_reconnect"]);
    assert!(got.iter().all(|d| body(d)["payload"]["provider"] == "snapdocs"));
    assert_eq!(body(&got[1])["payload"]["previous_status"], "failing");
    assert_eq!(body(&got[2])["payload"]["reason"], "invalid_client");
}

/// Take a connection's exchange lease as the owner "test", as the token manager would before it
/// records an outcome (a commit lands only under its own live lease).
async fn hold_lease(store: &connect_hub::store::Store, id: &connect_hub::domain::ConnectionId) {
    let now = now_ms();
    let taken = store.acquire_exchange_lease(id, "test", now, now + 60_000).await.unwrap();
    assert_eq!(taken, connect_hub::store::LeaseOutcome::Acquired);
}

#[tokio::test]
async fn deliveries_claimed_but_not_started_are_given_back_on_shutdown() {
    let app = app_with(&[]).await;
    let (_, url) = receiver();
    let (ep, _) = endpoint(&app, &url, "Create_Inspection").await;
    let store = &app.state.store;
    let now = now_ms();
    store.bench_preload(3, &["Create_Inspection"], now).await.unwrap();
    let claimed = claim(store, ep.as_str(), 3, 3, "clm_a", now, now + 60_000).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let mine: Vec<(i64, String)> = claimed.iter().map(|d| (d.id, d.claim_id.clone())).collect();
    let stale = vec![(claimed[0].id, "clm_other".to_owned())];
    assert_eq!(store.release_deliveries(&stale, now).await.unwrap(), 0, "only the current claim gives back");
    assert_eq!(store.release_deliveries(&mine[..2], now).await.unwrap(), 2);
    let states: Vec<(String, i64)> =
        sqlx::query_as("select state, attempts from deliveries order by id").fetch_all(store.pool()).await.unwrap();
    assert_eq!(states, [("pending".into(), 0), ("pending".into(), 0), ("processing".into(), 1)]);
    let again = claim(store, ep.as_str(), 3, 3, "clm_b", now, now + 60_000).await.unwrap();
    assert_eq!(again.len(), 2, "due again at once");
    assert!(again.iter().all(|d| d.attempts == 1), "the given-back claim did not count as an attempt");
}

async fn test_send(app: &TestApp, id: &str) {
    let clients = app.state.worker.dispatcher().clients();
    connect_hub::delivery::manage::send_test(&app.state.store, clients, id, "test").await.unwrap();
}
