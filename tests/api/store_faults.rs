//! What a store that is busy elsewhere must not break: a SQLite file held by another connection's
//! read transaction, or a `backup` in progress, while webhooks arrive; and the probes' `HEAD`.

use futures_util::future::join_all;
use sqlx::Connection;

use crate::helpers::spawn_app;

#[tokio::test]
async fn head_on_healthz_and_readyz_answers_like_get_without_a_body() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let get = app.client.get(format!("{}{path}", app.addr)).send().await.unwrap();
        let get_type = get.headers()["content-type"].clone();
        assert_eq!(get.status(), 200, "GET {path}");
        assert!(!get.bytes().await.unwrap().is_empty(), "GET {path} has a body");
        let head = app.client.head(format!("{}{path}", app.addr)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()["content-type"], get_type, "HEAD {path}");
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
    }
}

#[tokio::test]
async fn a_read_transaction_held_open_and_a_backup_do_not_fail_intake_on_sqlite() {
    let app = spawn_app().await;
    if app.skip_on_postgres("SQLite's file locking") {
        return;
    }
    app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":6847}"#).await;
    // Another process's reader: a transaction that has read, holding its snapshot of the file.
    let url = format!("sqlite://{}", app.db_path.display());
    let mut reader = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut tx = reader.begin().await.unwrap();
    let before: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(before, 1);

    let target = app.dir.path().join("backup.db");
    let backup = app.state.store.backup(&target);
    let app = &app;
    let posts = join_all((2..=101).map(|i| {
        let body = format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":6847}}"#);
        async move { app.post_webhook(&body).await.status().as_u16() }
    }));
    let (backup, statuses) = tokio::join!(backup, posts);
    backup.expect("the backup ran beside intake");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // The reader still sees its snapshot: it really held the file the whole time.
    let still: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(still, 1);
    tx.commit().await.unwrap();
    assert_eq!(app.event_count().await, 101);
}

#[tokio::test]
async fn metrics_show_whether_the_store_answers_and_its_errors_by_operation() {
    let app = spawn_app().await;
    app.state.store.health().failed("claim_events");
    let text = app.get("/metrics").await.text().await.unwrap();
    // The counts were read, so the store answers again; the error stays counted.
    assert!(text.contains("\nconnect_hub_store_up 1\n"), "{text}");
    assert!(text.contains("\nconnect_hub_store_errors_total{operation=\"claim_events\"} 1\n"), "{text}");
    assert!(text.contains("\nconnect_hub_events{status=\"pending\"} 0\n"), "{text}");
}
