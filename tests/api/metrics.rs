//! `/metrics`: webhooks, attempts, events, connections and HTTP requests counted in the Prometheus
//! text format, with no secret in a label, and an optional scrape token.

use crate::helpers::{spawn_app_with, WEBHOOK_SECRET};

#[tokio::test]
async fn metrics_count_webhooks_attempts_and_requests() {
    let app = spawn_app_with(crate::helpers::forwarding).await;
    app.connect_company(6847).await;
    app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":6847}"#).await;
    app.post_webhook(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":6847}"#).await;
    app.post_webhook("[]").await;
    app.client.post(format!("{}/webhooks/snapinspect/wrong", app.addr)).body("{}").send().await.unwrap();
    app.state.worker.drain().await.unwrap();
    app.get("/healthz").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    for line in [
        "connect_hub_webhooks_received_total 1",
        "connect_hub_webhooks_duplicate_total 1",
        "connect_hub_webhooks_rejected_total{reason=\"invalid\"} 1",
        "connect_hub_webhooks_rejected_total{reason=\"secret\"} 1",
        "connect_hub_event_attempts_total{outcome=\"done\"} 1",
        // The webhook, and the connect's own `connection.created`.
        "connect_hub_events{status=\"done\"} 2",
        "connect_hub_connections{status=\"active\"} 1",
        "connect_hub_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "connect_hub_http_request_duration_seconds_count{route=\"/healthz\"} 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        !text.contains(WEBHOOK_SECRET) && !text.contains("/webhooks/snapinspect/wrong"),
        "no secret path in a label"
    );
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let app = spawn_app_with(|v| {
        v.insert("METRICS_TOKEN".into(), "scrape-me".into());
    })
    .await;
    assert_eq!(app.get("/metrics").await.status(), 401);
    let res =
        reqwest::Client::new().get(format!("{}/metrics", app.addr)).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(res.status(), 200);
}
