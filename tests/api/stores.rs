//! The same service on either store: the one `TEST_DATABASE_URL` names is the one in use, a
//! concurrent intake batch is stored, matched and deduplicated alike, `/readyz` reads each
//! store's migrations, `backup` copies a SQLite file while serving and on PostgreSQL points to
//! `pg_dump`, a size-capped SQLite file refuses writes cleanly; claims carry claim ids and skip
//! what another instance holds, the duplicate window is shared, and `migrate-store` moves a
//! SQLite database to PostgreSQL.

use std::{collections::HashMap, io::Write, sync::Arc, time::Duration};

use connect_hub::{
    domain::EventId,
    queue::ingest::{IngestOptions, Ingestor},
    store::{AttemptOutcome, Backend, FinishedEvent, Inserted, NewAttempt},
    time::now_ms,
};
use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::Notify;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn the_store_in_use_is_the_one_the_test_database_url_names() {
    let app = spawn_app().await;
    let wanted = match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    assert_eq!(app.state.store.backend(), wanted);
    assert_eq!(app.db.is_postgres(), wanted == Backend::Postgres);
}

#[tokio::test]
async fn a_concurrent_batch_is_stored_matched_to_connections_and_its_duplicates_counted() {
    let app = spawn_app().await;
    let conn = app.connect_company(6847).await;
    // 40 events for a connected company, 30 for one that is not, and every one of the first ten
    // of each sent three times: all in flight together, so they reach the writer in batches.
    let body =
        |company: i64, i: i64| format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":{company}}}"#);
    let mut bodies: Vec<String> = (0..40).map(|i| body(6847, i)).chain((0..30).map(|i| body(7012, i))).collect();
    for _ in 0..2 {
        bodies.extend((0..10).map(|i| body(6847, i)).chain((0..10).map(|i| body(7012, i))));
    }
    let answers = join_all(bodies.iter().map(|b| app.post_webhook(b))).await;
    let mut ids: HashMap<String, String> = HashMap::new();
    for (b, a) in bodies.iter().zip(answers) {
        assert_eq!(a.status(), 200);
        let v: Value = a.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(
            ids.entry(b.clone()).or_insert_with(|| id.clone()),
            &id,
            "a duplicate is answered with the original's id"
        );
    }
    assert_eq!(ids.len(), 70);
    // One more: the connect's own `connection.created` event.
    assert_eq!(app.event_count().await, 71, "duplicates are not stored again");
    for (b, id) in &ids {
        let e = app.event(&EventId::parse(id).unwrap()).await;
        assert_eq!(&e.payload, b);
        let n: i64 = e.inspection_id.unwrap();
        assert_eq!(e.duplicates, if n < 10 { 2 } else { 0 }, "{b}");
        if e.company_id == Some(6847) {
            assert_eq!((e.state.as_str(), e.connection_id.as_deref()), ("pending", Some(conn.as_str())), "{b}");
        } else {
            assert_eq!((e.state.as_str(), e.connection_id.as_deref()), ("unmatched", None), "{b}");
        }
    }
}

#[tokio::test]
async fn readyz_is_ready_only_while_every_migration_is_applied() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    sqlx::query("delete from _sqlx_migrations where version = 5").execute(app.state.store.pool()).await.unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("migrations are not applied"));
}

#[tokio::test]
async fn backup_makes_a_consistent_copy_while_serving() {
    let app = spawn_app().await;
    if app.skip_on_postgres("`backup` is SQLite's VACUUM INTO (PostgreSQL's refusal is tested below)") {
        return;
    }
    let connected = app.connect(Some(6847)).await;
    for i in 0..20 {
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
    }
    let target = app.dir.path().join("copy.db");
    let out = crate::helpers::hub(&app, &["backup", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up to"));
    let again = crate::helpers::hub(&app, &["backup", target.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "never overwrites");
    // The database, its WAL and the copy are readable by this user only.
    let wal = app.db_path.with_extension("db-wal");
    for file in [&app.db_path, &wal, &target] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{} has mode {:o}", file.display(), mode & 0o777);
    }

    let db = connect_hub::store::Database::connect(&format!("sqlite://{}", target.display()), None).await.unwrap();
    let keys = connect_hub::crypto::KeyRing::from_base64(
        &secrecy::SecretString::from(app.vars["ENCRYPTION_KEY"].clone()),
        &[],
    )
    .unwrap();
    let copy = connect_hub::store::Store::new(db, std::sync::Arc::new(keys));
    let id = app.connection_id_for(6847).await;
    let t = copy.tokens(&id).await.unwrap().unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&t.access.unwrap()), connected.access_token);
    let events: i64 = sqlx::query_scalar("select count(*) from events where event_type = 'Create_Inspection'")
        .fetch_one(copy.pool())
        .await
        .unwrap();
    assert_eq!(events, 20);
}

#[tokio::test]
async fn a_size_capped_database_refuses_writes_cleanly() {
    let app = spawn_app_with(|v| {
        // The schema alone takes about 55 pages; room for a few 30 KB events more.
        v.insert("SQLITE_MAX_PAGE_COUNT".into(), "120".into());
    })
    .await;
    if app.skip_on_postgres("SQLITE_MAX_PAGE_COUNT caps a SQLite file") {
        return;
    }
    let pad = "p".repeat(30_000);
    let mut statuses = Vec::new();
    for i in 0..40 {
        let res = app.post_webhook(&format!(r#"{{"sType":"X","iCompanyID":1,"n":{i},"pad":"{pad}"}}"#)).await;
        statuses.push(res.status().as_u16());
    }
    assert!(statuses.contains(&200) && statuses.contains(&503), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503));
    let accepted = statuses.iter().filter(|s| **s == 200).count() as i64;
    assert_eq!(app.event_count().await, accepted, "every 200 is stored, nothing else");
    let _ = std::io::stdout().flush();
}

#[tokio::test]
async fn backup_on_postgresql_refuses_and_points_to_pg_dump() {
    let app = spawn_app().await;
    if !app.db.is_postgres() {
        println!("skipped on SQLite: its backup is tested above; this runs in the PostgreSQL pass");
        return;
    }
    let target = app.dir.path().join("copy.db");
    let out = crate::helpers::hub(&app, &["backup", target.to_str().unwrap()]);
    assert!(!out.status.success(), "a clear failure, not a silent success");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_dump") && stderr.contains("SQLite"), "{stderr}");
    assert!(!target.exists(), "no file is left behind");
}

fn finished(event: connect_hub::store::ClaimedEvent, outcome: AttemptOutcome) -> FinishedEvent {
    let attempt = NewAttempt { started_at: now_ms(), duration_ms: 1, outcome, http_status: None, error: None };
    FinishedEvent { event, attempt, retry_at: now_ms() + 60_000, inspection: None }
}

#[tokio::test]
async fn an_attempt_under_a_claim_that_was_taken_over_does_not_move_the_event() {
    let app = spawn_app().await;
    app.connect_company(6847).await;
    let id = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":6847}"#).await;
    let store = &app.state.store;
    let now = now_ms();
    // The same worker claims twice: its first lease ran out (it was paused) and it claimed again.
    // An owner check cannot tell the two claims apart; the claim id does.
    let stale: Vec<_> = store.claim_events("worker_a", now, now, 100).await.unwrap();
    let stale = stale.into_iter().find(|e| e.id == id).expect("claimed");
    let current: Vec<_> = store.claim_events("worker_a", now, now + 60_000, 100).await.unwrap();
    let current = current.into_iter().find(|e| e.id == id).expect("claimed again once the lease ran out");
    assert_ne!(stale.claim_id, current.claim_id);

    let kept = store.finish_attempts(&[finished(stale, AttemptOutcome::Dead)]).await.unwrap();
    assert_eq!(kept, vec![false], "the stale claim may not record");
    let e = app.event(&id).await;
    assert_eq!((e.state.as_str(), e.attempts), ("processing", 2), "left to the current claim");
    let kept = store.finish_attempts(&[finished(current, AttemptOutcome::Done)]).await.unwrap();
    assert_eq!(kept, vec![true]);
    assert_eq!(app.event(&id).await.state, "done");
}

#[tokio::test]
async fn a_claim_on_postgresql_skips_events_another_instance_is_claiming() {
    let app = spawn_app().await;
    if !app.db.is_postgres() {
        println!("skipped on SQLite: one writer claims at a time; this runs in the PostgreSQL pass");
        return;
    }
    app.connect_company(6847).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await,
        );
    }
    let store = &app.state.store;
    // Another instance is in the middle of claiming the oldest event: it holds its row lock.
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("select id from events where public_id = $1 for update")
        .bind(ids[0].as_str())
        .fetch_all(&mut *other)
        .await
        .unwrap();
    let now = now_ms();
    // Without `skip locked` this claim would wait for the other transaction (here: forever).
    let claimed = tokio::time::timeout(Duration::from_secs(5), store.claim_events("worker_b", now, now + 60_000, 100))
        .await
        .expect("the claim does not wait for rows another instance holds")
        .unwrap();
    let claimed: Vec<EventId> = claimed.into_iter().map(|e| e.id).collect();
    assert!(!claimed.contains(&ids[0]), "the locked event is skipped");
    assert!(claimed.contains(&ids[1]) && claimed.contains(&ids[2]), "the others are claimed");
    other.rollback().await.unwrap();
}

/// Another instance's intake on the same database: its own writer, with its own memory.
fn second_intake(app: &crate::helpers::TestApp) -> Ingestor {
    let options = IngestOptions { group_commit: true, dedupe_window: Duration::from_secs(7200) };
    Ingestor::spawn(app.state.store.clone(), options, Arc::new(Notify::new()))
}

fn payload(body: &str) -> connect_hub::snapinspect::webhook::WebhookPayload {
    connect_hub::snapinspect::webhook::parse_payload(body.as_bytes()).unwrap()
}

#[tokio::test]
async fn intake_wakes_the_worker_when_it_stored_something_new_and_not_for_a_duplicate() {
    use futures_util::FutureExt;
    let app = spawn_app().await;
    let stored = Arc::new(Notify::new());
    let options = IngestOptions { group_commit: true, dedupe_window: Duration::from_secs(7200) };
    let intake = Ingestor::spawn(app.state.store.clone(), options, stored.clone());
    let body = r#"{"sType":"Create_Inspection","iInspectionID":31,"iCompanyID":6847}"#;
    assert!(matches!(intake.submit(payload(body)).await.unwrap(), Inserted::Stored(_)));
    // The wake is given before the answer, so it is waiting by now (the worker polls only every 250 ms).
    assert!(stored.notified().now_or_never().is_some(), "a new event wakes the worker");
    assert!(matches!(intake.submit(payload(body)).await.unwrap(), Inserted::Duplicate(_)));
    assert!(stored.notified().now_or_never().is_none(), "a duplicate queues nothing, so wakes no one");
}

#[tokio::test]
async fn on_postgresql_the_same_webhook_sent_to_two_instances_gets_one_event_id() {
    let app = spawn_app().await;
    if !app.db.is_postgres() {
        println!("skipped on SQLite: one instance, whose intake window is in memory; this runs in the PostgreSQL pass");
        return;
    }
    let other = second_intake(&app);
    let before = app.event_count().await;
    // One after the other: the second instance never saw the first event in its memory.
    let body = r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":6847}"#;
    let first = app.send_event(body).await;
    match other.submit(payload(body)).await.unwrap() {
        Inserted::Duplicate(id) => assert_eq!(id, first),
        stored => panic!("stored again on the other instance: {stored:?}"),
    }
    // At the same moment, several times each, on both instances.
    let body = r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":6847}"#;
    let here = join_all((0..3).map(|_| app.post_webhook(body)));
    let there = join_all((0..3).map(|_| other.submit(payload(body))));
    let (here, there) = tokio::join!(here, there);
    let mut ids = Vec::new();
    for res in here {
        assert_eq!(res.status(), 200);
        ids.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    for outcome in there {
        ids.push(match outcome.unwrap() {
            Inserted::Stored(id) | Inserted::Duplicate(id) => id.to_string(),
        });
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one event id for all six: {ids:?}");
    assert_eq!(app.event_count().await, before + 2, "each webhook stored once");
    let first = app.event(&first).await;
    let second = app.event(&EventId::parse(&ids[0]).unwrap()).await;
    assert_eq!((first.duplicates, second.duplicates), (1, 5), "every copy is counted on the one event");
}

#[tokio::test]
async fn on_postgresql_a_webhook_past_the_shared_window_is_a_new_event() {
    let app = spawn_app().await;
    if !app.db.is_postgres() {
        println!("skipped on SQLite: its window is in memory (see the intake tests); this runs in the PostgreSQL pass");
        return;
    }
    let other = second_intake(&app);
    let body = r#"{"sType":"Create_Inspection","iInspectionID":3,"iCompanyID":6847}"#;
    let first = app.send_event(body).await;
    // The first arrival is now just past the window (2 h), seen from the other instance.
    sqlx::query("update event_dedupe set received_at = received_at - 7200001")
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let again = match other.submit(payload(body)).await.unwrap() {
        Inserted::Stored(id) => id,
        dup => panic!("a webhook past the window is new: {dup:?}"),
    };
    assert_ne!(again, first);
    // And it now holds the window: a copy to the other instance is its duplicate.
    sqlx::query("update event_dedupe set received_at = received_at - 7199000")
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let mut third = second_intake(&app);
    match third.submit(payload(body)).await.unwrap() {
        Inserted::Duplicate(id) => assert_eq!(id, again, "just inside the window"),
        stored => panic!("{stored:?}"),
    }
    third = second_intake(&app);
    drop(third);
    assert_eq!(app.state.store.purge_duplicate_window(now_ms() - 7_200_000).await.unwrap(), 0, "inside: kept");
    assert_eq!(app.state.store.purge_duplicate_window(now_ms()).await.unwrap(), 1);
}

#[tokio::test]
async fn migrate_store_copies_a_sqlite_database_into_an_empty_postgresql_one_that_then_serves_it() {
    let probe = tempfile::tempdir().unwrap();
    let target = crate::helpers::TestDb::new(probe.path()).await;
    if !target.is_postgres() {
        println!("skipped: migrate-store needs a PostgreSQL server (TEST_DATABASE_URL)");
        return;
    }
    // The SQLite deployment, with a connection, events delivered to an endpoint, a key and an admin.
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", sqlite_dir.path().join("old.db").display());
    let url = sqlite_url.clone();
    let old = crate::helpers::spawn_app_with(move |v| {
        crate::helpers::forwarding(v);
        v.insert("DATABASE_URL".into(), url);
    })
    .await;
    let conn = old.connect_company(6847).await;
    let body = r#"{"sType":"Create_Inspection","iInspectionID":77,"iCompanyID":6847}"#;
    let event = old.send_event(body).await;
    old.state.worker.drain().await.unwrap();
    let token = old.state.tokens.token(&conn).await.unwrap();
    let (key_id, key) = old.api_key("moved").await;
    old.create_admin("ops@example.com", "correct horse battery staple").await;
    let counts = |pool: sqlx::AnyPool| async move {
        let mut out = Vec::new();
        for t in ["connections", "events", "event_attempts", "deliveries", "delivery_attempts", "api_keys", "admins"] {
            let n: i64 = sqlx::query_scalar(&format!("select count(*) from {t}")).fetch_one(&pool).await.unwrap();
            out.push((t, n));
        }
        out
    };
    let before = counts(old.state.store.pool().clone()).await;
    assert!(before.iter().all(|(_, n)| *n > 0), "every table has rows to move: {before:?}");

    let out = crate::helpers::hub(&old, &["migrate-store", "--from", &sqlite_url, "--to", &target.url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("same row count") && stdout.contains("delivery_attempts"), "{stdout}");

    // The same keys open the moved database: tokens, keys and events as they were.
    let shared: Vec<(String, String)> =
        ["ENCRYPTION_KEY", "SESSION_KEY"].into_iter().map(|k| (k.to_owned(), old.vars[k].clone())).collect();
    let target_url = target.url.clone();
    let new = crate::helpers::spawn_app_with(move |v| {
        crate::helpers::forwarding(v);
        v.extend(shared);
        v.insert("DATABASE_URL".into(), target_url);
    })
    .await;
    assert_eq!(counts(new.state.store.pool().clone()).await, before, "row counts per table");
    let moved = new.state.tokens.token(&conn).await.unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&moved.token),
        secrecy::ExposeSecret::expose_secret(&token.token),
        "sealed tokens still open (same row ids)"
    );
    let caller = crate::helpers::verify_key(&new.state.api_keys, &secrecy::SecretString::from(key)).await.unwrap();
    let caller = caller.unwrap();
    assert_eq!((caller.key_id.as_str(), caller.read_only), (key_id.as_str(), false), "a boolean keeps its value");
    assert_eq!(new.event(&event).await.state, "done");
    // A webhook sent again after the move is still a duplicate; a new one gets new ids (the
    // sequences continue after the copied ids) and is delivered.
    let again: Value = new.post_webhook(body).await.json().await.unwrap();
    assert_eq!((again["duplicate"].as_bool(), again["id"].as_str()), (Some(true), Some(event.as_str())));
    // (No inspection to read: this app's fake SnapInspect never issued the moved token.)
    let fresh = new.send_event(r#"{"sType":"Company_Updated","iCompanyID":6847}"#).await;
    new.state.worker.drain().await.unwrap();
    assert_eq!(new.event(&fresh).await.state, "done");
    let deliveries: i64 =
        sqlx::query_scalar("select count(*) from deliveries").fetch_one(new.state.store.pool()).await.unwrap();
    assert_eq!(deliveries, before.iter().find(|(t, _)| *t == "deliveries").unwrap().1 + 1);

    // Into a database that is not empty, or from a file that does not exist: a clear refusal.
    let out = crate::helpers::hub(&old, &["migrate-store", "--from", &sqlite_url, "--to", &target.url]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("target is not empty"), "{out:?}");
    let missing = format!("sqlite://{}", sqlite_dir.path().join("nope.db").display());
    let out = crate::helpers::hub(&old, &["migrate-store", "--from", &missing, "--to", &target.url]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"), "{out:?}");
    assert!(!sqlite_dir.path().join("nope.db").exists(), "no empty source is created");
}

#[tokio::test]
async fn a_claim_takes_the_longest_due_events_first_whatever_their_state() {
    let app = spawn_app().await;
    app.connect_company(6847).await;
    let now = now_ms();
    let mut ids = Vec::new();
    // (state, due in ms from now): a retry due first, an expired lease next, then a new event;
    // one not yet due.
    for (i, (state, due)) in
        [("pending", -1000), ("retrying", -3000), ("processing", -2000), ("pending", 60_000)].into_iter().enumerate()
    {
        let id =
            app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#)).await;
        sqlx::query("update events set state = $1, next_attempt_at = $2 where public_id = $3")
            .bind(state)
            .bind(now + due)
            .bind(id.as_str())
            .execute(app.state.store.pool())
            .await
            .unwrap();
        ids.push(id);
    }
    // The connect's own event is not for the worker to wait on here.
    sqlx::query("update events set state = 'done' where event_type <> 'Create_Inspection'")
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let store = &app.state.store;
    let first: std::collections::HashSet<EventId> =
        store.claim_events("w", now, now + 60_000, 2).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(first, [ids[1].clone(), ids[2].clone()].into(), "oldest due first, across states");
    let rest: Vec<EventId> =
        store.claim_events("w", now, now + 60_000, 10).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(rest, vec![ids[0].clone()], "the one not yet due waits");
}

#[tokio::test]
async fn a_delivery_claim_on_postgresql_skips_deliveries_another_instance_is_claiming() {
    let app = crate::helpers::spawn_app_with(crate::helpers::forwarding).await;
    if !app.db.is_postgres() {
        println!("skipped on SQLite: one writer claims at a time; this runs in the PostgreSQL pass");
        return;
    }
    app.connect_company(6847).await;
    for i in 0..3 {
        app.send_event(&format!(r#"{{"sType":"Company_Updated","iCompanyID":6847,"n":{i}}}"#)).await;
    }
    // Enriched and fanned out, not yet delivered.
    while app.state.worker.run_once().await.unwrap() > 0 {}
    let store = &app.state.store;
    let ids: Vec<i64> =
        sqlx::query_scalar("select id from deliveries order by id").fetch_all(store.pool()).await.unwrap();
    assert!(ids.len() >= 3, "{ids:?}");
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("select id from deliveries where id = $1 for update")
        .bind(ids[0])
        .fetch_all(&mut *other)
        .await
        .unwrap();
    let now = now_ms();
    let claimed = tokio::time::timeout(
        Duration::from_secs(5),
        store.claim_deliveries(&connect_hub::store::ClaimAsk {
            owner: "worker_b",
            claim_id: "clm_b",
            now,
            lease_until: now + 60_000,
            budget: 100,
            per_endpoint: 100,
            room: &[],
            start_at: "",
        }),
    )
    .await
    .expect("the claim does not wait for rows another instance holds")
    .unwrap();
    let claimed: Vec<i64> = claimed.into_iter().map(|d| d.id).collect();
    assert!(!claimed.contains(&ids[0]), "the locked delivery is skipped");
    assert_eq!(claimed.len(), ids.len() - 1, "the others are claimed");
    other.rollback().await.unwrap();
}

#[tokio::test]
async fn on_postgresql_storing_events_notifies_every_instance() {
    let app = spawn_app().await;
    if !app.db.is_postgres() {
        println!("skipped on SQLite: one instance, woken in-process; this runs in the PostgreSQL pass");
        return;
    }
    let mut listener = sqlx::postgres::PgListener::connect(&app.db.url).await.unwrap();
    listener.listen(connect_hub::startup::notify::EVENTS_CHANNEL).await.unwrap();
    app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":6847}"#).await;
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await.expect("a notification").unwrap();
    assert_eq!(
        connect_hub::startup::notify::Signal::parse(heard.channel(), heard.payload()),
        Some(connect_hub::startup::notify::Signal::EventsStored)
    );
}
