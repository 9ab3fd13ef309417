//! Text from outside with bytes a store cannot hold as they are (a NUL, `\u0000`): webhooks, receivers'
//! and providers' answers and query parameters, on both stores; and a batch write that fails anyway
//! is retried row by row, so one bad row fails alone.

use std::net::TcpListener;

use actix_web::{web, HttpResponse};
use connect_hub::{
    client_credentials::CredentialsInput,
    domain::{
        endpoint::{generate_secret, DeliveryState, EndpointId, EndpointUrl, EventTypes},
        EventId, Provider,
    },
    snapinspect::webhook::parse_payload,
    store::{DeliveryResult, NewEndpoint, NewEvent},
    time::now_ms,
};
use serde_json::Value;

use crate::helpers::{api, forwarding, receiver, spawn_app, spawn_app_with, TestApp, CREATE};

/// An endpoint for every event type, added through the store as the CLI does.
async fn endpoint(app: &TestApp, url: &str) -> EndpointId {
    let id = EndpointId::generate();
    let new = NewEndpoint {
        id: &id,
        url: &EndpointUrl::parse(url).unwrap(),
        description: "test",
        event_types: &EventTypes::parse("").unwrap(),
        secret: &generate_secret(),
    };
    app.state.store.create_endpoint(&new, now_ms(), "test").await.unwrap();
    id
}

#[tokio::test]
async fn a_receiver_answering_a_nul_byte_is_recorded_and_takes_no_other_endpoint_with_it() {
    let app = spawn_app().await;
    let (nul, nul_url) = receiver();
    nul.set_body("ok\0 and more");
    let (plain, plain_url) = receiver();
    endpoint(&app, &nul_url).await;
    endpoint(&app, &plain_url).await;
    app.connect_company(6847).await;
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();

    let rowid = app.event(&id).await.rowid;
    let deliveries = app.state.store.event_deliveries(rowid).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    for d in &deliveries {
        assert_eq!((d.state.as_str(), d.attempts), ("done", 1), "{d:?}");
        let attempts = app.state.store.delivery_attempts(d.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "one attempt, recorded: {attempts:?}");
        assert_eq!(attempts[0].http_status, Some(200));
        if d.url == nul_url {
            let excerpt = attempts[0].response_excerpt.clone().unwrap();
            assert!(excerpt.starts_with("ok") && excerpt.ends_with(" and more"), "the answer is kept: {excerpt:?}");
            assert!(!excerpt.contains('\0'), "with its NUL escaped: {excerpt:?}");
        }
    }
    // Nothing is left to send again: each receiver got the event (and the connect's) once.
    app.state.worker.drain().await.unwrap();
    assert_eq!((nul.count(), plain.count()), (2, 2));
}

#[tokio::test]
async fn a_webhook_holding_an_escaped_nul_is_stored_and_delivered_as_received() {
    let app = spawn_app_with(forwarding).await;
    app.connect_company(6847).await;
    let body = r#"{"sType":"Create\u0000Inspection","iInspectionID":1388563,"iCompanyID":6847,"sStatus":"a\u0000b"}"#;
    let res = app.post_webhook(body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let v: Value = res.json().await.unwrap();
    let id = EventId::parse(v["id"].as_str().unwrap()).unwrap();
    assert_eq!(app.event(&id).await.payload, body, "kept byte for byte");

    app.state.worker.drain().await.unwrap();
    assert_eq!(app.event(&id).await.state, "done");
    let got = app.receiver.received().into_iter().find(|d| d.webhook_id == id.as_str()).expect("delivered");
    let delivered: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(delivered["payload"]["sType"], "Create\u{0}Inspection", "as received, NUL and all");
    assert_eq!(delivered["payload"]["sStatus"], "a\u{0}b");
}

#[tokio::test]
async fn a_provider_answer_with_a_nul_is_kept_as_the_connections_last_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let answer = |cfg: &mut web::ServiceConfig| {
        cfg.route(
            "/token",
            web::post().to(|| async {
                HttpResponse::BadRequest()
                    .content_type("application/json")
                    .body(r#"{"error":"invalid_client","error_description":"no\u0000such client"}"#)
            }),
        );
    };
    tokio::spawn(connect_hub::demo::fakes::serve(answer, listener).unwrap());
    let app = spawn_app().await;
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(url),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let id = app.add_credentials(Provider::Signicat, input, "secret").await;
    assert!(app.state.tokens.token(&id).await.is_err());
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    let error = c.last_error.expect("the failure is recorded");
    assert!(error.contains("no") && error.contains("such client") && !error.contains('\0'), "{error:?}");
    assert_eq!(c.status.as_str(), "failing");
}

#[tokio::test]
async fn a_query_parameter_that_cannot_match_is_a_400_not_a_500() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("reader").await;
    for bad in ["a%00b", "a%1Bb", "%7F"] {
        let (status, body) = api(&app, reqwest::Method::GET, &format!("/connections?end_user_id={bad}"), &key).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.to_string().contains("end_user_id"), "the answer names the parameter: {body}");
    }
    let (status, body) = api(&app, reqwest::Method::GET, "/connections?end_user_id=tenant-a", &key).await;
    assert_eq!((status, body["connections"].as_array().map(Vec::len)), (200, Some(0)));
    // The console's filters alike.
    app.sign_in().await;
    let res = app.get("/admin/events?type=Create%00Inspection").await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("cannot hold a NUL"));
    assert_eq!(app.get("/admin/events?type=Create_Inspection").await.status(), 200);
    assert_eq!(app.get("/admin/connections?q=Acme%00").await.status(), 400);
    assert_eq!(app.get("/admin/connections?q=Acme").await.status(), 200);
}

#[tokio::test]
async fn migrate_store_copies_rows_an_older_version_stored_with_a_nul() {
    let probe = tempfile::tempdir().unwrap();
    let target = crate::helpers::TestDb::new(probe.path()).await;
    if !target.is_postgres() {
        println!("skipped: migrate-store needs a PostgreSQL server (TEST_DATABASE_URL)");
        return;
    }
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", sqlite_dir.path().join("old.db").display());
    let url = sqlite_url.clone();
    let old = spawn_app_with(move |v| {
        v.insert("DATABASE_URL".into(), url);
    })
    .await;
    let id = old.send_event(CREATE).await;
    // SQLite holds any byte, and earlier versions stored parsed fields and errors as they came.
    sqlx::query("update events set event_type = 'Create' || char(0) || 'Inspection', last_error = 'x' || char(0) where public_id = $1")
        .bind(id.as_str())
        .execute(old.state.store.pool())
        .await
        .unwrap();

    let out = crate::helpers::hub(&old, &["migrate-store", "--from", &sqlite_url, "--to", &target.url]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let moved = sqlx::AnyPool::connect(&target.url).await.unwrap();
    let (kind, error, payload): (String, String, String) =
        sqlx::query_as("select event_type, last_error, payload from events where public_id = $1")
            .bind(id.as_str())
            .fetch_one(&moved)
            .await
            .unwrap();
    assert_eq!((kind.as_str(), error.as_str()), ("Create\\u{0}Inspection", "x\\u{0}"), "the NUL written out");
    assert_eq!(payload, CREATE, "the rest byte for byte");
    moved.close().await;
}

/// Make the database itself refuse rows of `table` whose `column` says `poison`: a write that
/// fails for one row only, whatever the reason, as a stand-in for any row a store cannot take.
async fn poison(app: &TestApp, table: &str, column: &str) {
    let pool = app.state.store.pool();
    let statements = if app.db.is_postgres() {
        vec![
            format!(
                "create function poison_{table}() returns trigger language plpgsql as $$ begin \
                 if new.{column} like '%poison%' then raise exception 'poisoned row'; end if; return new; end $$"
            ),
            format!(
                "create trigger poison_{table} before insert on {table} for each row execute function poison_{table}()"
            ),
        ]
    } else {
        vec![format!(
            "create trigger poison_{table} before insert on {table} when new.{column} like '%poison%' \
             begin select raise(abort, 'poisoned row'); end"
        )]
    };
    for sql in statements {
        sqlx::query(&sql).execute(pool).await.unwrap();
    }
}

fn new_event(body: &str) -> NewEvent {
    NewEvent { id: EventId::generate(), received_at: now_ms(), payload: parse_payload(body.as_bytes()).unwrap() }
}

#[tokio::test]
async fn a_batch_of_webhooks_with_one_row_the_store_refuses_stores_the_others() {
    let app = spawn_app().await;
    poison(&app, "events", "payload").await;
    let body = |i: i64, kind: &str| format!(r#"{{"sType":"{kind}","iInspectionID":{i},"iCompanyID":6847}}"#);
    let batch = [
        new_event(&body(1, "Create_Inspection")),
        new_event(&body(2, "poison")),
        new_event(&body(3, "Create_Inspection")),
    ];
    let mut writer = app.state.store.event_writer().await.unwrap();
    let written = writer.insert(&batch, &[], 7_200_000).await.unwrap();
    assert_eq!(written.failed, [batch[1].id.clone()].into(), "only the refused one failed");
    for (e, stored) in batch.iter().zip([true, false, true]) {
        assert_eq!(app.state.store.event(&e.id).await.unwrap().is_some(), stored, "{}", e.payload.raw);
    }
    // Over HTTP: the refused one is a 503 (SnapInspect sends it again), the others are stored.
    let res = app.post_webhook(&body(4, "poison")).await;
    assert_eq!(res.status(), 503);
    let res = app.post_webhook(&body(5, "Create_Inspection")).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_refused_batch_with_duplicates_is_tried_row_by_row_and_one_where_every_row_fails_is_an_error() {
    let app = spawn_app().await;
    poison(&app, "events", "payload").await;
    let body = |i: i64, kind: &str| format!(r#"{{"sType":"{kind}","iInspectionID":{i},"iCompanyID":6847}}"#);
    let mut writer = app.state.store.event_writer().await.unwrap();
    // Two events and one duplicate of the first: the batch fails, each is tried alone.
    let batch = [new_event(&body(1, "Create_Inspection")), new_event(&body(2, "poison"))];
    let written = writer.insert(&batch, &[(batch[0].id.clone(), 1)], 7_200_000).await.unwrap();
    assert_eq!(written.failed, [batch[1].id.clone()].into());
    assert!(app.state.store.event(&batch[0].id).await.unwrap().is_some());
    // Every row refused: nothing could be stored, and that is an error (each sender gets 503).
    let all_bad = [new_event(&body(3, "poison")), new_event(&body(4, "poison"))];
    assert!(writer.insert(&all_bad, &[], 7_200_000).await.is_err());
}

#[tokio::test]
async fn a_batch_of_delivery_results_with_one_row_the_store_refuses_records_the_others() {
    let app = spawn_app().await;
    poison(&app, "delivery_attempts", "response_excerpt").await;
    let (_, first_url) = receiver();
    let (_, second_url) = receiver();
    let (_, third_url) = receiver();
    for url in [&first_url, &second_url, &third_url] {
        endpoint(&app, url).await;
    }
    app.connect_company(6847).await;
    app.state.worker.run_once().await.unwrap();
    let now = now_ms();
    let ask = connect_hub::store::ClaimAsk {
        owner: "w",
        claim_id: "clm_poison",
        now,
        lease_until: now + 60_000,
        budget: 10,
        per_endpoint: 10,
        room: &[],
        start_at: "",
    };
    let claimed = app.state.store.claim_deliveries(&ask).await.unwrap();

    assert_eq!(claimed.len(), 3, "the connect's event, once per endpoint");
    let results: Vec<DeliveryResult> = claimed
        .iter()
        .zip(["ok", "poison", "ok"])
        .map(|(d, answer)| DeliveryResult {
            delivery_id: d.id,
            endpoint_id: d.endpoint_id.clone(),
            claim_id: d.claim_id.clone(),
            started_at: now,
            duration_ms: 3,
            state: DeliveryState::Done,
            retry_at: 0,
            http_status: Some(200),
            error: None,
            response_excerpt: Some(answer.into()),
        })
        .collect();
    assert_eq!(app.state.store.record_delivery_results(&results, now, 0).await.unwrap(), 2);
    let rowid = app.event(&claimed[0].event.id).await.rowid;
    let deliveries = app.state.store.event_deliveries(rowid).await.unwrap();
    for (r, want) in results.iter().zip(["done", "processing", "done"]) {
        let d = deliveries.iter().find(|d| d.id == r.delivery_id).unwrap();
        assert_eq!(d.state, want, "{r:?}");
    }
    // Every result of a batch refused (the one still processing, twice): none could be recorded,
    // and that is an error.
    let refused = [results[1].clone(), results[1].clone()];
    assert!(app.state.store.record_delivery_results(&refused, now, 0).await.is_err());
}
