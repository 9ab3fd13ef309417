//! The worker: reading the inspection, signed forwarding (to the endpoint FORWARD_URL defines),
//! retries, Retry-After, 410, dead deliveries and events, replay, leases, the one exchange a 401
//! triggers, and the retention of done and waiting events.

use connect_hub::{demo::receiver::Reply, domain::EventState, store::EventFilter};
use serde_json::Value;

use crate::helpers::{forwarding, spawn_app_with, TestApp, CREATE, FORWARD_SECRET};

async fn connected_app(
    customise: impl FnOnce(&mut std::collections::BTreeMap<String, String>),
) -> (TestApp, connect_hub::domain::ConnectionId) {
    let app = spawn_app_with(|v| {
        forwarding(v);
        customise(v);
    })
    .await;
    let conn = app.connect_company(6847).await;
    // The connect's own `connection.created` goes out first; these tests look at what follows.
    app.state.worker.drain().await.unwrap();
    app.receiver.clear();
    (app, conn)
}

/// The one delivery of an event (to the FORWARD_URL endpoint).
async fn delivery(app: &TestApp, id: &connect_hub::domain::EventId) -> connect_hub::store::DeliveryRow {
    let e = app.event(id).await;
    let mut d = app.state.store.event_deliveries(e.rowid).await.unwrap();
    assert_eq!(d.len(), 1, "one delivery");
    d.remove(0)
}

#[tokio::test]
async fn a_forwarded_event_carries_a_signature_an_independent_verifier_accepts() {
    let (app, conn) = connected_app(|_| {}).await;
    let id = app.send_event(CREATE).await;
    assert_eq!(app.state.worker.drain().await.unwrap(), 2, "one enrichment, one delivery");

    let got = app.receiver.received();
    assert_eq!(got.len(), 1);
    let d = &got[0];
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", d.webhook_id.parse().unwrap());
    headers.insert("webhook-timestamp", d.timestamp.parse().unwrap());
    headers.insert("webhook-signature", d.signature.parse().unwrap());
    let verifier = standardwebhooks::Webhook::new(FORWARD_SECRET).unwrap();
    verifier.verify(&d.body, &headers).expect("the standardwebhooks crate accepts our signature");
    let mut tampered = d.body.clone();
    tampered[5] ^= 1;
    assert!(verifier.verify(&tampered, &headers).is_err(), "and would notice tampering");

    assert_eq!(d.webhook_id, id.as_str());
    let env: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(env["id"], id.as_str());
    assert_eq!(env["type"], "Create_Inspection");
    assert_eq!(env["company_id"], 6847);
    assert_eq!(env["connection_id"], conn.as_str());
    assert!(env["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(env["payload"], serde_json::from_str::<Value>(CREATE).unwrap(), "the original payload");
    assert_eq!(env["inspection"]["iInspectionID"], 1388563, "the inspection read from the API");

    let e = app.event(&id).await;
    assert_eq!(e.state, "done");
    assert!(e.completed_at.is_some());
    assert!(e.inspection.unwrap().contains("1388563"));
    let attempts = app.state.store.event_attempts(e.rowid).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "done");
    assert_eq!(attempts[0].http_status, Some(200));
}

#[tokio::test]
async fn without_forwarding_the_event_is_done_once_the_inspection_is_read() {
    let app = spawn_app_with(|_| {}).await;
    app.connect_company(6847).await;
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let e = app.event(&id).await;
    assert_eq!(e.state, "done");
    assert!(e.inspection.is_some());
    assert!(app.receiver.received().is_empty());
    assert_eq!(app.fake.inspection_calls(), 1);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_and_then_succeeds() {
    let (app, _) = connected_app(|_| {}).await;
    app.receiver.push_reply(Reply::Status(500));
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let d = delivery(&app, &id).await;
    assert_eq!(d.state, "done");
    let attempts = app.state.store.delivery_attempts(d.id).await.unwrap();
    let summary: Vec<(String, Option<i64>)> = attempts.iter().map(|a| (a.outcome.clone(), a.http_status)).collect();
    assert_eq!(summary, [("retry".to_owned(), Some(500)), ("done".to_owned(), Some(200))]);
    assert!(attempts[0].error.as_deref().unwrap().contains("HTTP 500"));
    assert_eq!(app.receiver.received().len(), 2);
}

#[tokio::test]
async fn a_failed_inspection_read_is_retried_too() {
    let (app, _) = connected_app(|_| {}).await;
    app.fake.push_inspection_fault(503);
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let e = app.event(&id).await;
    assert_eq!(e.state, "done");
    let attempts = app.state.store.event_attempts(e.rowid).await.unwrap();
    assert_eq!(attempts[0].http_status, Some(503));
    assert!(attempts[0].error.as_deref().unwrap().contains("reading inspection 1388563"));
    assert_eq!(app.receiver.received().len(), 1, "nothing was forwarded before the read worked");
}

#[tokio::test]
async fn retries_follow_the_schedule_and_retry_after_is_honoured() {
    let (app, _) = connected_app(|v| {
        v.insert("RETRY_SCHEDULE".into(), "30s,2m".into());
    })
    .await;
    app.receiver.push_reply(Reply::Status(500));
    let id = app.send_event(CREATE).await;
    let before = connect_hub::time::now_ms();
    app.state.worker.drain().await.unwrap();
    let d = delivery(&app, &id).await;
    assert_eq!(d.state, "retrying");
    let wait = d.next_attempt_at.unwrap() - before;
    assert!((27_000..=34_000).contains(&wait), "about 30 s with jitter: {wait} ms");
    assert_eq!(app.state.worker.drain().await.unwrap(), 0, "not due yet");

    // The receiver asks for more time than the schedule: it gets it.
    sqlx::query("update deliveries set next_attempt_at = 0 where id = $1")
        .bind(d.id)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    app.receiver.push_reply(Reply::RetryAfter(503, 600));
    let before = connect_hub::time::now_ms();
    assert_eq!(app.state.worker.drain().await.unwrap(), 1);
    let d = delivery(&app, &id).await;
    assert_eq!(d.state, "retrying");
    assert!(d.next_attempt_at.unwrap() - before >= 600_000, "Retry-After: 600 honoured");
}

#[tokio::test]
async fn a_410_stops_at_once() {
    let (app, _) = connected_app(|_| {}).await;
    app.receiver.push_reply(Reply::Status(410));
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&id).await.state, "done", "the event itself was processed");
    let d = delivery(&app, &id).await;
    assert_eq!(d.state, "dead");
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_status, Some(410));
    assert!(d.last_error.unwrap().contains("410"));
    assert_eq!(app.receiver.received().len(), 1);
}

#[tokio::test]
async fn after_the_last_try_of_the_schedule_the_delivery_is_dead_and_replay_brings_it_back() {
    let (app, _) = connected_app(|_| {}).await;
    for _ in 0..3 {
        app.receiver.push_reply(Reply::Status(502));
    }
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let d = delivery(&app, &id).await;
    assert_eq!(d.state, "dead");
    assert_eq!(d.attempts, 3, "the first try and one per delay of the two-step schedule");
    assert!(d.last_error.as_deref().unwrap().contains("was the last one"));
    assert_eq!(app.state.store.delivery_attempts(d.id).await.unwrap().len(), 3);

    let n = app.state.store.replay_deliveries(&id, None, connect_hub::time::now_ms(), "test").await.unwrap().unwrap();
    assert_eq!(n, 1);
    app.state.worker.drain().await.unwrap();
    let d = delivery(&app, &id).await;
    assert_eq!(d.state, "done");
    assert_eq!(app.state.store.delivery_attempts(d.id).await.unwrap().len(), 4, "the history is kept");
}

#[tokio::test]
async fn after_the_last_try_of_the_schedule_an_unreadable_event_is_dead_and_replay_brings_it_back() {
    let (app, _) = connected_app(|_| {}).await;
    for _ in 0..3 {
        app.fake.push_inspection_fault(503);
    }
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let e = app.event(&id).await;
    assert_eq!(e.state, "dead");
    assert_eq!(e.attempts, 3);
    assert!(e.last_error.as_deref().unwrap().contains("was the last one"));
    assert!(app.state.store.event_deliveries(e.rowid).await.unwrap().is_empty(), "nothing fanned out");

    let previous = app.state.store.replay_event(&id, connect_hub::time::now_ms(), "test").await.unwrap().unwrap();
    assert_eq!(previous, EventState::Dead);
    app.state.worker.drain().await.unwrap();
    let e = app.event(&id).await;
    assert_eq!(e.state, "done");
    assert_eq!(app.state.store.event_attempts(e.rowid).await.unwrap().len(), 4, "the history is kept");
    assert_eq!(delivery(&app, &id).await.state, "done");
}

#[tokio::test]
async fn replaying_all_dead_events_of_a_filter_requeues_only_those() {
    let (app, _) = connected_app(|v| {
        v.insert("RETRY_SCHEDULE".into(), "0s".into());
    })
    .await;
    for _ in 0..4 {
        app.fake.push_inspection_fault(503);
    }
    let a = app.send_event(CREATE).await;
    let b =
        app.send_event(r#"{"sType":"Review_Signed","iInsReviewID":5,"iInspectionID":1388563,"iCompanyID":6847}"#).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&a).await.state, "dead");
    assert_eq!(app.event(&b).await.state, "dead");
    let filter = EventFilter { kind: Some("Review_Signed".into()), ..Default::default() };
    assert_eq!(app.state.store.replay_dead(&filter, None, connect_hub::time::now_ms(), "test").await.unwrap(), 1);
    assert_eq!(app.event(&a).await.state, "dead");
    assert_eq!(app.event(&b).await.state, "pending");
}

#[tokio::test]
async fn a_401_from_snapinspect_makes_exactly_one_exchange_and_the_read_then_succeeds() {
    let (app, conn) = connected_app(|_| {}).await;
    app.fake.revoke_access_tokens(6847);
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&id).await.state, "done");
    assert_eq!(app.fake.exchanges(), 1, "one exchange");
    assert_eq!(app.fake.inspection_calls(), 2, "the 401, then the read with the new token");
    let t = app.state.tokens.token(&conn).await.unwrap();
    assert!(app.fake.is_valid_access_token(secrecy::ExposeSecret::expose_secret(&t.token)));
}

#[tokio::test]
async fn many_events_that_all_get_401_share_one_exchange() {
    let (app, _) = connected_app(|_| {}).await;
    app.fake.revoke_access_tokens(6847);
    for i in 0..10 {
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
    }
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.fake.exchanges(), 1);
    let done = app
        .state
        .store
        .events(
            &EventFilter {
                status: Some(connect_hub::domain::status::Status::Done),
                kind: Some("Create_Inspection".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 10);
}

#[tokio::test]
async fn an_event_whose_worker_died_is_claimed_again_when_its_lease_ends() {
    let (app, _) = connected_app(|_| {}).await;
    let id = app.send_event(CREATE).await;
    let now = connect_hub::time::now_ms();
    // A worker that claims the event and then dies.
    let claimed = app.state.store.claim_events("worker_that_died", now, now + 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(app.state.worker.drain().await.unwrap(), 0, "still leased to the dead worker");
    assert_eq!(app.event(&id).await.state, "processing");
    // Its lease runs out.
    sqlx::query("update events set next_attempt_at = $1").bind(now - 1).execute(app.state.store.pool()).await.unwrap();
    assert_eq!(app.state.worker.drain().await.unwrap(), 2, "enriched, then delivered");
    let e = app.event(&id).await;
    assert_eq!(e.state, "done");
    assert_eq!(e.attempts, 2, "the dead worker's claim counts as an attempt");
}

#[tokio::test]
async fn done_events_older_than_the_retention_are_purged() {
    let (app, _) = connected_app(|_| {}).await;
    let old = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let recent = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":6847}"#).await;
    app.state.worker.drain().await.unwrap();
    let waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":9999}"#).await;
    sqlx::query("update events set completed_at = 1000 where public_id = $1")
        .bind(old.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let purged = app.state.store.purge_done_events(connect_hub::time::now_ms() - 7 * 86_400_000).await.unwrap();
    assert_eq!(purged, 1);
    assert!(app.state.store.event(&old).await.unwrap().is_none());
    assert!(app.state.store.event(&recent).await.unwrap().is_some());
    assert!(app.state.store.event(&waiting).await.unwrap().is_some(), "unmatched events are never purged");
}

#[tokio::test]
async fn waiting_events_expire_after_the_retention_and_no_sooner() {
    let app = crate::helpers::spawn_app().await;
    let old_waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":9999}"#).await;
    let old_rejected = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2}"#).await;
    let new_waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":9999}"#).await;
    let now = connect_hub::time::now_ms();
    let retention = 7 * 86_400_000;
    for id in [&old_waiting, &old_rejected] {
        sqlx::query("update events set received_at = $1 where public_id = $2")
            .bind(now - retention - 1)
            .bind(id.as_str())
            .execute(app.state.store.pool())
            .await
            .unwrap();
    }
    // Exactly at the boundary: kept.
    sqlx::query("update events set received_at = $1 where public_id = $2")
        .bind(now - retention)
        .bind(new_waiting.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(app.state.store.purge_waiting_events(now - retention).await.unwrap(), 2);
    assert!(app.state.store.event(&old_waiting).await.unwrap().is_none());
    assert!(app.state.store.event(&old_rejected).await.unwrap().is_none());
    assert!(app.state.store.event(&new_waiting).await.unwrap().is_some());
}

#[tokio::test]
async fn the_background_worker_processes_events_without_being_asked() {
    let app = spawn_app_with(|v| {
        forwarding(v);
        v.insert("WORKER_ENABLED".into(), "true".into());
    })
    .await;
    app.connect_company(6847).await;
    let id = app.send_event(CREATE).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.receiver.received().iter().any(|d| d.webhook_id == id.as_str()) {
        assert!(std::time::Instant::now() < deadline, "delivered within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.event(&id).await.state, "done");
}
