//! A restart with a backlog: after SIGKILL with events queued and in the duplicate window, the hub
//! serves again and still knows a webhook SnapInspect sends again, on every store.

use std::process::Command;

use serde_json::Value;

use super::{harness::WEBHOOK_SECRET, hub};

const BODY: &str = r#"{"sType":"Create_Inspection","iInspectionID":424242,"iCompanyID":6847}"#;

async fn post(base: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/webhooks/snapinspect/{WEBHOOK_SECRET}"))
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn after_sigkill_with_a_backlog_a_webhook_sent_again_is_still_a_duplicate_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub(dir.path()).await;
    // Queued events stay queued (no worker), so the backlog is what the restart finds.
    hub.env.insert("WORKER_ENABLED".into(), "false".into());
    let mut child = hub.start().await.unwrap();
    hub.connect(6847).await.unwrap();
    let first = post(&hub.base).await;
    assert!(first["duplicate"].is_null(), "{first}");

    // 20,000 more events queued and in the window, written by the CLI as another process.
    let out = Command::new(&hub.bin)
        .args(["bench-claims", "--rows", "20000", "--claims", "1"])
        .env_clear()
        .envs(&hub.env)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _child = hub.start().await.unwrap();
    let again = post(&hub.base).await;
    assert_eq!(again["id"], first["id"], "the same event: {again}");
    assert_eq!(again["duplicate"], true, "{again}");
    let pool = hub.pool().await.unwrap();
    let (stored, duplicates): (i64, i64) =
        sqlx::query_as("select count(*), max(duplicates) from events where inspection_id = 424242")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((stored, duplicates), (1, 1), "stored once, counted once");
}
