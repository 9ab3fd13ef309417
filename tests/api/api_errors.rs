//! One error vocabulary on `/api/v1`: every operation that takes a JSON body (found from the
//! OpenAPI document) answers a non-JSON, a wrongly typed and a too-large body alike; and the
//! console says what to do with an endpoint URL that is not one.

use reqwest::{header::CONTENT_TYPE, Method};
use serde_json::{json, Value};

use crate::helpers::{receiver, spawn_app, TestApp};

const OPENAPI: &str = include_str!("../../static/openapi.json");

/// Every operation with a JSON request body: its method, path template, and its body's schema.
fn json_operations() -> Vec<(Method, String, Value)> {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema") else { continue };
            let schema = match schema["$ref"].as_str() {
                Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
                None => schema.clone(),
            };
            out.push((Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), path.clone(), schema));
        }
    }
    out
}

/// A value of another JSON type than the schema's `type`.
fn wrong_type(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("string") => json!(5),
        Some("array") => json!("not a list"),
        Some("boolean") => json!("yes"),
        Some("object") => json!([1]),
        _ => json!({ "nested": true }),
    }
}

async fn send(app: &TestApp, key: &str, method: &Method, path: &str, body: reqwest::Body) -> reqwest::Response {
    reqwest::Client::new()
        .request(method.clone(), format!("{}/api/v1{path}", app.addr))
        .bearer_auth(key)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The answer's status and JSON, after checking it is the one error shape: a JSON object with
/// `error` (also the `x-connect-hub-error` header) and a `message`, and only the optional
/// `field`, `line` and `column` beside them.
async fn error_of(res: reqwest::Response, what: &str) -> (u16, Value) {
    let status = res.status().as_u16();
    let header = res.headers().get("x-connect-hub-error").map(|h| h.to_str().unwrap().to_owned());
    let content_type = res.headers().get(CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json", "{what}");
    let v: Value = res.json().await.unwrap();
    let obj = v.as_object().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(obj.keys().all(|k| ["error", "message", "field", "line", "column"].contains(&k.as_str())), "{what}: {v}");
    assert_eq!(header.as_deref(), v["error"].as_str(), "{what}");
    let message = v["message"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(!message.is_empty() && message.chars().next().unwrap().is_lowercase(), "a sentence: {what}: {v}");
    (status, v)
}

#[tokio::test]
async fn every_json_route_answers_a_bad_body_with_bad_json_and_a_large_one_with_the_same_413() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("shapes").await;
    let con = app.connect_company(6847).await;
    let (_, url) = receiver();
    let (status, made) =
        error_or_value(send(&app, &key, &Method::POST, "/endpoints", json!({ "url": url }).to_string().into()).await)
            .await;
    assert_eq!(status, 201, "{made}");
    let ep = made["id"].as_str().unwrap().to_owned();
    let operations = json_operations();
    assert_eq!(operations.len(), 6, "the document's JSON operations: {operations:?}");
    let mut too_large = Vec::new();
    for (method, template, schema) in &operations {
        let id = if template.starts_with("/endpoints") { ep.as_str() } else { con.as_str() };
        let path = template.replace("{id}", id);
        let what = format!("{method} {template}");

        // Not JSON at all: the same code, where it went wrong, and none of serde's words.
        let (status, v) = error_of(send(&app, &key, method, &path, "this is not JSON".into()).await, &what).await;
        assert_eq!((status, v["error"].as_str()), (400, Some("bad_json")), "{what}: {v}");
        assert_eq!((v["line"].as_u64(), v["column"].as_u64()), (Some(1), Some(2)), "{what}: {v}");
        assert_eq!(v["message"], "the body is not valid JSON (line 1, column 2)", "{what}");

        // JSON, but not an object.
        let (status, v) = error_of(send(&app, &key, method, &path, "[1, 2]".into()).await, &what).await;
        assert_eq!(
            (status, v["error"].as_str(), v["message"].as_str()),
            (400, Some("bad_json"), Some("the body must be a JSON object {…}")),
            "{what}"
        );

        // An object with a field of the wrong type: named, with its line.
        let (field, field_schema) = schema["properties"].as_object().unwrap().iter().next().unwrap();
        let body = json!({ field.as_str(): wrong_type(field_schema) }).to_string();
        let (status, v) = error_of(send(&app, &key, method, &path, body.clone().into()).await, &what).await;
        assert_eq!(
            (status, v["error"].as_str(), v["field"].as_str()),
            (400, Some("bad_json"), Some(field.as_str())),
            "{what} {body}: {v}"
        );
        assert!(v["message"].as_str().unwrap().starts_with(&format!("the field `{field}` must be ")), "{what}: {v}");
        assert!(!v["message"].as_str().unwrap().contains("expected"), "our words, not serde's: {v}");

        // A field the operation does not have.
        let (status, v) = error_of(send(&app, &key, method, &path, r#"{"colour": "red"}"#.into()).await, &what).await;
        assert_eq!(
            (status, v["error"].as_str(), v["field"].as_str()),
            (400, Some("bad_json"), Some("colour")),
            "{what}: {v}"
        );

        // Too large, declared and chunked.
        let declared = send(&app, &key, method, &path, vec![b' '; 100 * 1024].into()).await;
        too_large.push(error_of(declared, &what).await);
        let chunks = futures_util::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
        let chunked = send(&app, &key, method, &path, reqwest::Body::wrap_stream(chunks)).await;
        too_large.push(error_of(chunked, &format!("chunked {what}")).await);
    }
    let first = too_large[0].clone();
    assert_eq!(first.0, 413);
    assert_eq!(first.1["error"], "body_too_large");
    assert!(too_large.iter().all(|answer| *answer == first), "{too_large:?}");
    // Nothing was done by any of them.
    assert_eq!(app.state.store.endpoints().await.unwrap().len(), 1);
    let sessions: i64 =
        sqlx::query_scalar("select count(*) from connect_sessions").fetch_one(app.state.store.pool()).await.unwrap();
    assert_eq!(sessions, 0);
}

async fn error_or_value(res: reqwest::Response) -> (u16, Value) {
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn a_value_the_json_carries_but_the_operation_refuses_has_its_own_code() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("values").await;
    let body = json!({ "end_user_id": "" }).to_string();
    let (status, v) =
        error_of(send(&app, &key, &Method::POST, "/connect-sessions", body.into()).await, "empty id").await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_value")), "{v}");
    let (status, v) = error_of(
        send(&app, &key, &Method::POST, "/endpoints", json!({ "url": "ftp://x/" }).to_string().into()).await,
        "ftp",
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_url")), "{v}");
}

#[tokio::test]
async fn the_console_says_to_add_https_in_front_of_an_endpoint_url_without_one() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let res = app.admin_post("/admin/endpoints/new", &[("csrf", &csrf), ("url", "hooks.example.com/in")]).await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("add https:// in front, as in https://hooks.example.com/in"),
        "{}",
        html.lines().filter(|l| l.contains("url-error")).collect::<Vec<_>>().join("\n")
    );
    assert!(!html.contains("relative URL without a base"));
    assert!(app.state.store.endpoints().await.unwrap().is_empty());
}
