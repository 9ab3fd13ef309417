//! Edits reach deliveries already claimed: a delivery waiting for its endpoint's slot goes to the
//! URL the endpoint has when it is sent, and not at all once the endpoint is disabled, however changed.

use connect_hub::{
    delivery::manage::{self, EndpointInput},
    demo::receiver::FakeReceiver,
    domain::EventId,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, hub, receiver, spawn_app, spawn_app_with, TestApp};

const ONE: &str = r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":6847}"#;
const TWO: &str = r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":6847}"#;
const THREE: &str = r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":6847}"#;

async fn api(app: &TestApp, method: Method, path: &str, key: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", app.addr))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The delivery of `event` (to the one endpoint it has).
async fn delivery(app: &TestApp, event: &EventId) -> connect_hub::store::DeliveryRow {
    state_of(app, event).await.expect("a delivery")
}

/// The delivery of `event`, once the worker has fanned it out.
async fn state_of(app: &TestApp, event: &EventId) -> Option<connect_hub::store::DeliveryRow> {
    let rowid = app.event(event).await.rowid;
    app.state.store.event_deliveries(rowid).await.unwrap().into_iter().next()
}

/// A running worker, one delivery at a time per endpoint; an endpoint (made through the API) at a
/// receiver that holds what it gets; two events, the first held at the receiver and the second
/// claimed behind it, waiting for the slot. Returns the app, the API key, the endpoint's id, the
/// receiver and both events.
async fn one_delivery_held_and_one_waiting() -> (TestApp, String, String, FakeReceiver, EventId, EventId) {
    let (app, key, id, held) = a_worker_and_an_endpoint_that_holds().await;
    app.connect_company(6847).await;
    let one = app.send_event(ONE).await;
    let two = app.send_event(TWO).await;
    eventually(20, "the first is at the receiver and the second claimed behind it", || async {
        held.in_flight() == 1 && state_of(&app, &two).await.is_some_and(|d| d.state == "processing")
    })
    .await;
    assert_eq!(delivery(&app, &one).await.state, "processing");
    (app, key, id, held, one, two)
}

/// A running worker, one delivery at a time per endpoint, and an endpoint (made through the API)
/// at a receiver that holds what it gets. Returns the app, the API key, the endpoint's id and the
/// receiver.
async fn a_worker_and_an_endpoint_that_holds() -> (TestApp, String, String, FakeReceiver) {
    let app = spawn_app_with(|v| {
        v.insert("WORKER_ENABLED".into(), "true".into());
        v.insert("ENDPOINT_CONCURRENCY".into(), "1".into());
        v.insert("OUTBOUND_TIMEOUT".into(), "120s".into());
    })
    .await;
    let (_, key) = app.api_key("ops").await;
    let (held, held_url) = receiver();
    held.hold();
    let id = create_endpoint(&app, &key, &held_url).await;
    (app, key, id, held)
}

/// An endpoint for `Create_Inspection` at `url`, made through the API; its id.
async fn create_endpoint(app: &TestApp, key: &str, url: &str) -> String {
    let (status, made) =
        api(app, Method::POST, "/endpoints", key, json!({ "url": url, "events": ["Create_Inspection"] })).await;
    assert_eq!(status, 201, "{made}");
    made["id"].as_str().unwrap().to_owned()
}

fn ids(r: &FakeReceiver) -> Vec<String> {
    r.received().into_iter().map(|d| d.webhook_id).collect()
}

#[tokio::test]
async fn a_claimed_delivery_goes_to_the_url_its_endpoint_has_when_it_is_sent() {
    let (app, key, id, old, one, two) = one_delivery_held_and_one_waiting().await;
    let (new, new_url) = receiver();
    let (status, _) = api(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, json!({ "url": new_url })).await;
    assert_eq!(status, 200);
    old.release();
    eventually(20, "both deliveries are done", || async { delivery(&app, &two).await.state == "done" }).await;
    assert_eq!(ids(&old), [one.as_str()], "the old URL got only what was already on its way");
    assert_eq!(ids(&new), [two.as_str()], "the waiting one went to the new URL");
}

#[tokio::test]
async fn a_claimed_delivery_is_not_sent_once_its_endpoint_is_disabled_and_goes_out_when_enabled() {
    let (app, key, id, r, one, two) = one_delivery_held_and_one_waiting().await;
    let path = format!("/endpoints/{id}");
    assert_eq!(api(&app, Method::PATCH, &path, &key, json!({ "enabled": false })).await.0, 200);
    r.release();
    eventually(20, "the first is done and the second waits again", || async {
        delivery(&app, &one).await.state == "done" && delivery(&app, &two).await.state == "pending"
    })
    .await;
    assert_eq!(ids(&r), [one.as_str()], "nothing was sent to the disabled endpoint");
    let waiting = delivery(&app, &two).await;
    assert_eq!(waiting.attempts, 0, "giving it back is not an attempt");
    assert!(app.state.store.delivery_attempts(waiting.id).await.unwrap().is_empty());

    assert_eq!(api(&app, Method::PATCH, &path, &key, json!({ "enabled": true })).await.0, 200);
    eventually(20, "the waiting one went out", || async { delivery(&app, &two).await.state == "done" }).await;
    assert_eq!(ids(&r), [one.as_str(), two.as_str()]);
}

#[tokio::test]
async fn an_endpoint_disabled_and_edited_from_the_command_line_is_seen_by_the_running_worker() {
    let (app, _, id, old, one, two) = one_delivery_held_and_one_waiting().await;
    let dispatcher = app.state.worker.dispatcher().clone();
    // Another process: SQLite's change counter tells the worker, PostgreSQL's NOTIFY.
    let out = hub(&app, &["endpoints", "disable", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(20, "the worker knows the endpoint is disabled", || async {
        dispatcher.endpoint_url(&id).await.unwrap().is_none()
    })
    .await;
    old.release();
    eventually(20, "the second waits again", || async { delivery(&app, &two).await.state == "pending" }).await;
    assert_eq!(ids(&old), [one.as_str()]);

    // Edited (on another instance's console) and enabled again from the shell: the worker follows
    // without being told.
    let (new, new_url) = receiver();
    let change = EndpointInput::with_csv(&new_url, "Create_Inspection", "");
    manage::edit(&app.state.store, dispatcher.clients().policy(), &id, &change, "another instance").await.unwrap();
    assert!(hub(&app, &["endpoints", "enable", &id]).status.success());
    eventually(20, "the waiting one went to the new URL", || async { new.count() == 1 }).await;
    assert_eq!(ids(&new), [two.as_str()]);
    assert_eq!(ids(&old), [one.as_str()]);
    let seen = dispatcher.endpoint_url(&id).await.unwrap();
    assert_eq!(seen.as_deref(), Some(new_url.as_str()), "what the worker would send to now");
}

#[tokio::test]
async fn on_shutdown_a_claimed_delivery_not_yet_started_is_given_back_at_once() {
    let (app, _, _, held, one, two) = one_delivery_held_and_one_waiting().await;
    app.stop_gracefully();
    // The first is still at the receiver; the second was claimed behind it and never started.
    eventually(20, "the waiting one was given back", || async { delivery(&app, &two).await.state == "pending" }).await;
    assert_eq!(delivery(&app, &one).await.state, "processing", "the one in flight is finished, not given back");
    // Released, it goes out, and the shutdown ends (closing the store).
    held.release();
    eventually(20, "the one in flight reached the receiver", || async { ids(&held) == [one.as_str()] }).await;
}

#[tokio::test]
async fn an_endpoint_with_nothing_in_flight_claims_its_slots_and_as_many_again_not_more() {
    // WORKER_CONCURRENCY stays at its default (64): the worker's budget is far above what one
    // endpoint may claim, so only the endpoint's own limit is at work.
    let (app, key, id, held) = a_worker_and_an_endpoint_that_holds().await;
    let path = format!("/endpoints/{id}");
    assert_eq!(api(&app, Method::PATCH, &path, &key, json!({ "enabled": false })).await.0, 200);
    app.connect_company(6847).await;
    let events = [app.send_event(ONE).await, app.send_event(TWO).await, app.send_event(THREE).await];
    for e in &events {
        eventually(20, "a delivery waits for the disabled endpoint", || async {
            state_of(&app, e).await.is_some_and(|d| d.state == "pending")
        })
        .await;
    }
    assert_eq!(api(&app, Method::PATCH, &path, &key, json!({ "enabled": true })).await.0, 200);
    // One claim takes what the endpoint may hold: one slot in flight (ENDPOINT_CONCURRENCY) and one
    // waiting behind it.
    eventually(20, "one at the receiver", || async { held.in_flight() == 1 }).await;
    let mut states = Vec::new();
    for e in &events {
        states.push(delivery(&app, e).await.state);
    }
    states.sort();
    assert_eq!(states, ["pending", "processing", "processing"]);
    held.release();
    for e in &events {
        eventually(20, "every delivery went out", || async { delivery(&app, e).await.state == "done" }).await;
    }
}

#[tokio::test]
async fn the_worker_reads_an_endpoint_once_and_again_only_once_endpoints_changed() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("ops").await;
    let (_, first) = receiver();
    let (_, second) = receiver();
    let id = create_endpoint(&app, &key, &first).await;
    let dispatcher = app.state.worker.dispatcher().clone();
    assert_eq!(dispatcher.endpoint_url(&id).await.unwrap().as_deref(), Some(first.as_str()));

    // A change nobody hears of (its trigger dropped: no change counter, no NOTIFY): the copy in
    // memory stands, read once.
    let drop = if app.db.is_postgres() {
        "drop trigger endpoints_changed on endpoints"
    } else {
        "drop trigger endpoints_changed"
    };
    let pool = app.state.store.pool();
    sqlx::query(drop).execute(pool).await.unwrap();
    sqlx::query(&format!("update endpoints set url = '{second}' where id = '{id}'")).execute(pool).await.unwrap();
    assert_eq!(dispatcher.endpoint_url(&id).await.unwrap().as_deref(), Some(first.as_str()), "kept");
    assert_eq!(dispatcher.endpoint_url(&id).await.unwrap().as_deref(), Some(first.as_str()), "still kept");

    // Told that endpoints changed (as NOTIFY or an edit in this process tells it): read again.
    dispatcher.forget_targets();
    assert_eq!(dispatcher.endpoint_url(&id).await.unwrap().as_deref(), Some(second.as_str()), "read again");
}
