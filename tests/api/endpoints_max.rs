//! `ENDPOINTS_MAX`: one endpoint more than it allows is refused, with a clear error in the API (409
//! `too_many_endpoints`), the console and the command line, also when many are added at once.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{hub, spawn_app_with, unescape, TestApp};

async fn app_allowing(max: usize) -> TestApp {
    spawn_app_with(|v| {
        v.insert("ENDPOINTS_MAX".into(), max.to_string());
    })
    .await
}

async fn api(app: &TestApp, method: Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}/api/v1{path}", app.addr)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn add(app: &TestApp, key: &str, n: usize) -> (u16, Value) {
    api(app, Method::POST, "/endpoints", key, Some(json!({ "url": format!("https://example.com/{n}") }))).await
}

async fn count(app: &TestApp) -> usize {
    app.state.store.endpoints().await.unwrap().len()
}

#[tokio::test]
async fn the_api_refuses_an_endpoint_past_endpoints_max_with_a_409_and_a_code() {
    let app = app_allowing(2).await;
    let (_, key) = app.api_key("ops").await;
    let (_, first) = add(&app, &key, 1).await;
    assert_eq!(add(&app, &key, 2).await.0, 201);
    let (status, v) = add(&app, &key, 3).await;
    assert_eq!((status, v["error"].as_str()), (409, Some("too_many_endpoints")), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("2 endpoints") && message.contains("ENDPOINTS_MAX"), "{message}");
    assert_eq!(count(&app).await, 2);

    // Removing one makes room again.
    let (status, _) =
        api(&app, Method::DELETE, &format!("/endpoints/{}", first["id"].as_str().unwrap()), &key, None).await;
    assert_eq!(status, 204);
    assert_eq!(add(&app, &key, 4).await.0, 201);
}

#[tokio::test]
async fn endpoints_added_at_once_never_pass_endpoints_max() {
    let app = app_allowing(3).await;
    let (_, key) = app.api_key("ops").await;
    let answers = futures_util::future::join_all((0..10).map(|n| add(&app, &key, n))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 201, 201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(count(&app).await, 3);
}

#[tokio::test]
async fn the_console_and_the_command_line_refuse_an_endpoint_past_endpoints_max_and_say_why() {
    let app = app_allowing(1).await;
    assert!(hub(&app, &["endpoints", "add", "--url", "https://example.com/a"]).status.success());
    let out = hub(&app, &["endpoints", "add", "--url", "https://example.com/b"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 endpoint") && stderr.contains("ENDPOINTS_MAX"), "{stderr}");

    let csrf = app.sign_in().await;
    let res = app
        .admin_post("/admin/endpoints/new", &[("csrf", &csrf), ("url", "https://example.com/c"), ("events", "")])
        .await;
    assert_eq!(res.status(), 409);
    let page = unescape(&res.text().await.unwrap());
    assert!(page.contains("ENDPOINTS_MAX"), "{page}");
    assert!(page.contains("https://example.com/c"), "the form keeps what was typed");
    assert_eq!(count(&app).await, 1);
}
