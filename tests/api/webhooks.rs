//! Webhook intake: every answer SnapInspect can get, and what is stored behind each (events that
//! can never match a connection are kept as rejected).

use connect_hub::domain::EventState;
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, CREATE, WEBHOOK_SECRET};

#[tokio::test]
async fn a_webhook_is_stored_as_received_before_the_200_that_names_it() {
    let app = spawn_app().await;
    let res = app.post_webhook(CREATE).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["received"], true);
    let id = connect_hub::domain::EventId::parse(v["id"].as_str().unwrap()).unwrap();
    let e = app.event(&id).await;
    assert_eq!(e.payload, CREATE, "the raw body, byte for byte");
    assert_eq!(e.event_type.as_deref(), Some("Create_Inspection"));
    assert_eq!(e.company_id, Some(6847));
    assert_eq!(e.inspection_id, Some(1388563));
    assert_eq!(e.state, "unmatched", "no connection for company 6847 yet");
}

#[tokio::test]
async fn an_event_for_a_connected_company_is_queued_for_its_connection() {
    let app = spawn_app().await;
    let conn = app.connect_company(6847).await;
    let id = app.send_event(CREATE).await;
    let e = app.event(&id).await;
    assert_eq!(e.state, "pending");
    assert_eq!(e.connection_id.as_deref(), Some(conn.as_str()));
}

#[tokio::test]
async fn the_same_payload_within_the_window_is_counted_not_queued_twice() {
    let app = spawn_app().await;
    let first = app.send_event(CREATE).await;
    // SnapInspect's retry may differ in spacing or key order: still the same event.
    let res = app.post_webhook(r#"{"iCompanyID":6847,"iInspectionID":1388563,"sType":"Create_Inspection"}"#).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["id"], first.as_str(), "answers with the original event's id");
    assert_eq!(app.event_count().await, 1);
    assert_eq!(app.event(&first).await.duplicates, 1);
    // Another company with the same fields is another event.
    app.send_event(r#"{ "sType": "Create_Inspection", "iInspectionID": 1388563, "iCompanyID": 7012 }"#).await;
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn a_duplicate_is_still_recognised_after_a_restart() {
    let mut app = spawn_app().await;
    let first = app.send_event(CREATE).await;
    app.restart().await;
    let v: Value = app.post_webhook(CREATE).await.json().await.unwrap();
    assert_eq!(v["duplicate"], true, "the window is reloaded from the store");
    assert_eq!(v["id"], first.as_str());
    assert_eq!(app.event_count().await, 1);
}

/// Make every event arrive `ms` earlier, in the window too (on PostgreSQL instances share it in
/// the database; SQLite's is read back from the events at a restart).
async fn age_events(app: &crate::helpers::TestApp, ms: i64) {
    let pool = app.state.store.pool();
    sqlx::query("update events set received_at = received_at - $1").bind(ms).execute(pool).await.unwrap();
    if app.db.is_postgres() {
        sqlx::query("update event_dedupe set received_at = received_at - $1").bind(ms).execute(pool).await.unwrap();
    }
}

#[tokio::test]
async fn the_same_payload_after_the_window_is_a_new_event() {
    let mut app = spawn_app().await;
    app.send_event(CREATE).await;
    // Two hours and a moment pass (the restart makes the writer read the window back from the store).
    age_events(&app, 7_200_001).await;
    app.restart().await;
    let res: Value = app.post_webhook(CREATE).await.json().await.unwrap();
    assert!(res.get("duplicate").is_none(), "{res}");
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn the_window_is_configurable() {
    let mut app = spawn_app_with(|v| {
        v.insert("DEDUPE_WINDOW_SECS".into(), "60".into());
    })
    .await;
    app.send_event(CREATE).await;
    age_events(&app, 59_000).await;
    app.restart().await;
    let v: Value = app.post_webhook(CREATE).await.json().await.unwrap();
    assert_eq!(v["duplicate"], true, "59 s ago is inside a 60 s window");
    age_events(&app, 2_000).await;
    app.restart().await;
    app.send_event(CREATE).await;
    assert_eq!(app.event_count().await, 2, "61 s ago is outside it");
}

#[tokio::test]
async fn a_wrong_secret_is_a_404_that_reveals_nothing() {
    let app = spawn_app().await;
    let wrong =
        app.client.post(format!("{}/webhooks/snapinspect/not-the-secret", app.addr)).body(CREATE).send().await.unwrap();
    assert_eq!(wrong.status(), 404);
    let wrong_body = wrong.text().await.unwrap();
    let unknown = app.client.post(format!("{}/no/such/route", app.addr)).body(CREATE).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(wrong_body, unknown.text().await.unwrap(), "looks exactly like any unknown address");
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn the_older_secret_is_still_accepted_while_the_url_is_rotated() {
    let app = spawn_app_with(|v| {
        v.insert("WEBHOOK_SECRET_OLD".into(), "the-old-secret".into());
    })
    .await;
    for secret in [WEBHOOK_SECRET, "the-old-secret"] {
        let res = app
            .client
            .post(format!("{}/webhooks/snapinspect/{secret}", app.addr))
            .body(format!(r#"{{"sType":"Create_Inspection","iCompanyID":1,"n":"{secret}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{secret}");
    }
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413() {
    let app = spawn_app().await;
    let big = format!(r#"{{"sType":"Create_Inspection","iCompanyID":6847,"pad":"{}"}}"#, "x".repeat(64 * 1024));
    let res = app.post_webhook(&big).await;
    assert_eq!(res.status(), 413);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "payload_too_large");
    // Without a Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.as_bytes().chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .client
        .post(format!("{}/webhooks/snapinspect/{WEBHOOK_SECRET}", app.addr))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(app.event_count().await, 0);
    // Exactly 64 KiB is fine.
    let pad = 64 * 1024 - r#"{"sType":"X","iCompanyID":6847,"pad":""}"#.len();
    let exact = format!(r#"{{"sType":"X","iCompanyID":6847,"pad":"{}"}}"#, "y".repeat(pad));
    assert_eq!(exact.len(), 64 * 1024);
    assert_eq!(app.post_webhook(&exact).await.status(), 200);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_with_a_reason() {
    let app = spawn_app().await;
    for (body, says) in [
        ("[1,2]", "must be a JSON object, got an array"),
        ("\"text\"", "must be a JSON object, got a string"),
        ("{\"sType\":", "not valid JSON"),
        ("", "body is empty"),
    ] {
        let res = app.post_webhook(body).await;
        assert_eq!(res.status(), 400, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"], "invalid_payload");
        assert!(v["message"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn any_content_type_is_accepted() {
    let app = spawn_app().await;
    for (i, ct) in ["text/plain", "application/x-www-form-urlencoded", ""].iter().enumerate() {
        let mut req = app
            .client
            .post(format!("{}/webhooks/snapinspect/{WEBHOOK_SECRET}", app.addr))
            .body(format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#));
        if !ct.is_empty() {
            req = req.header("content-type", *ct);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{ct}");
    }
    assert_eq!(app.event_count().await, 3);
}

#[tokio::test]
async fn unknown_types_and_extra_fields_are_kept_never_dropped() {
    let app = spawn_app().await;
    let body = r#"{"sType":"Brand_New_Thing","iCompanyID":6847,"oExtra":{"a":[1,2,3]},"sNote":"kept"}"#;
    let id = app.send_event(body).await;
    let e = app.event(&id).await;
    assert_eq!(e.payload, body);
    assert_eq!(e.event_type.as_deref(), Some("Brand_New_Thing"));
}

#[tokio::test]
async fn an_event_for_an_unconnected_company_waits_and_is_processed_once_it_connects() {
    let app = spawn_app_with(crate::helpers::forwarding).await;
    let id = app.send_event(CREATE).await;
    assert_eq!(app.state.worker.drain().await.unwrap(), 0, "nothing to do while unmatched");
    assert_eq!(app.event(&id).await.state, "unmatched");

    let conn = app.connect_company(6847).await;
    let e = app.event(&id).await;
    assert_eq!(e.state, "pending", "matched on connect");
    assert_eq!(e.connection_id.as_deref(), Some(conn.as_str()));
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&id).await.state, "done");
    let ours: Vec<_> = app.receiver.received().into_iter().filter(|d| d.webhook_id == id.as_str()).collect();
    assert_eq!(ours.len(), 1, "delivered once (beside the connect's connection.created)");
}

#[tokio::test]
async fn events_that_can_never_match_are_rejected_and_still_replayable() {
    let app = crate::helpers::spawn_app().await;
    let none = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1}"#).await;
    let words = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":"Harbour"}"#).await;
    let zero = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":0}"#).await;
    let waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":4,"iCompanyID":9999}"#).await;
    for id in [&none, &words, &zero] {
        assert_eq!(app.event(id).await.state, "rejected", "{id}");
    }
    assert_eq!(app.event(&waiting).await.state, "unmatched");

    app.sign_in().await;
    let dashboard = app.page("/admin").await;
    assert!(dashboard.contains("id=\"rejected-count\">3</span> rejected events</a>"), "{dashboard}");
    assert!(dashboard.contains("id=\"unmatched-count\">1</span> unmatched event</a>"), "one event, singular");
    assert!(dashboard.contains("id=\"dead-count\">0</span> dead events</a>"));
    let listed = app.get("/admin/events?status=rejected").await;
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await.unwrap();
    assert!(listed.contains(none.as_str()) && !listed.contains(waiting.as_str()));

    // Replayed, it is processed without a connection.
    let page = app.page(&format!("/admin/events/{none}")).await;
    assert!(page.contains("id=\"replay\"") && page.contains("id=\"dismiss\""), "{page}");
    let csrf = crate::helpers::csrf_from(&page);
    assert_eq!(app.admin_post(&format!("/admin/events/{none}/replay"), &[("csrf", &csrf)]).await.status(), 303);
    assert_eq!(app.event(&none).await.state, "pending");
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&none).await.state, "done");
}

#[tokio::test]
async fn concurrent_webhooks_are_each_stored_and_answered_with_their_own_id() {
    let app = spawn_app().await;
    let bodies: Vec<String> =
        (0..300).map(|i| format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).collect();
    let answers = join_all(bodies.iter().map(|b| app.post_webhook(b))).await;
    let mut ids = std::collections::HashSet::new();
    for a in answers {
        assert_eq!(a.status(), 200);
        let v: Value = a.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 300, "each request got its own event");
    assert_eq!(app.event_count().await, 300);
    for id in ids {
        let e = app.event(&connect_hub::domain::EventId::parse(&id).unwrap()).await;
        assert!(bodies.contains(&e.payload));
    }
}

#[tokio::test]
async fn when_the_store_fails_the_answer_is_503_so_snapinspect_retries() {
    let app = spawn_app().await;
    sqlx::query("alter table events rename to events_away").execute(app.state.store.pool()).await.unwrap();
    let res = app.post_webhook(CREATE).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "store_unavailable");
    sqlx::query("alter table events_away rename to events").execute(app.state.store.pool()).await.unwrap();
    // And once the store is back, the retry is stored.
    assert_eq!(app.post_webhook(CREATE).await.status(), 200);
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn events_list_and_replay_work_from_the_shell() {
    let app = spawn_app_with(crate::helpers::forwarding).await;
    app.connect_company(6847).await;
    for _ in 0..3 {
        app.fake.push_inspection_fault(500);
    }
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&id).await.state, EventState::Dead.as_str());

    let out = crate::helpers::hub(&app, &["events", "list", "--status", "dead"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(id.as_str()) && text.contains("dead") && text.contains("reading inspection"), "{text}");
    let out = crate::helpers::hub(&app, &["events", "replay", id.as_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(app.event(&id).await.state, "pending");
    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&id).await.state, "done");
    let out = crate::helpers::hub(&app, &["events", "list", "--status", "bogus"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown event status"));
}
