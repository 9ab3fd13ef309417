//! The API keeps the promises of its own OpenAPI document: 405 with `Allow` for an undeclared
//! method on a known path, strict query parameters, every status declared.

use connect_hub::{client_credentials::CredentialsInput, demo::token_server::FakeTokenServer, domain::Provider};
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_token_server, TestApp};

async fn send(app: &TestApp, method: &str, path: &str, key: &str) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    reqwest::Client::new().request(method, format!("{}{path}", app.addr)).bearer_auth(key).send().await.unwrap()
}

#[tokio::test]
async fn an_undeclared_method_on_a_known_path_is_405_with_allow() {
    let app = spawn_app().await;
    let (_, key) = app.api_key("contract").await;
    let id = "con_aaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (method, path, allow) in [
        ("TRACE", "/api/v1/connections".to_owned(), "GET"),
        ("POST", "/api/v1/connections".to_owned(), "GET"),
        ("DELETE", format!("/api/v1/connections/{id}/token"), "GET"),
        ("GET", format!("/api/v1/connections/{id}/refresh"), "POST"),
    ] {
        let res = send(&app, method, &path, &key).await;
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        assert_eq!(res.headers()["x-connect-hub-error"], "method_not_allowed", "the hub answered");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
    // Paths the document does not list stay 404, whatever the method.
    for (method, path) in [
        ("TRACE", "/api/v1/nothing-here".to_owned()),
        ("GET", "/api/v1/connections/x/tokens".to_owned()),
        ("GET", "/api/v1/connections//token".to_owned()),
        ("POST", format!("/api/v1/connections/{id}")),
    ] {
        let res = send(&app, method, &path, &key).await;
        assert_eq!(res.status(), 404, "{method} {path}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "not_found");
    }
}

#[tokio::test]
async fn force_refresh_takes_only_true_or_false() {
    let app = spawn_app().await;
    let fake = FakeTokenServer::snapdocs("sd", "sd-secret");
    let url = format!("{}/oauth/token", spawn_token_server(&fake).await);
    let input = CredentialsInput { client_id: "sd".into(), token_url: Some(url), ..Default::default() };
    let id = app.add_credentials(Provider::Snapdocs, input, "sd-secret").await;
    let (_, key) = app.api_key("contract").await;
    for bad in ["", "1", "0", "yes", "TRUE"] {
        let res = send(&app, "GET", &format!("/api/v1/connections/{id}/token?force_refresh={bad}"), &key).await;
        assert_eq!(res.status(), 400, "force_refresh={bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "bad_query");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("the query string does not fit the API"), "{message}");
        assert!(!message.contains("Query deserialize error"), "{message}");
    }
    assert_eq!(fake.calls(), 0, "a refused parameter asks the provider nothing");
    let res = send(&app, "GET", &format!("/api/v1/connections/{id}/token?force_refresh=false"), &key).await;
    assert_eq!(res.status(), 200);
    let res = send(&app, "GET", &format!("/api/v1/connections/{id}/token?force_refresh=true"), &key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(fake.calls(), 1, "the first token; the forced one is within the cooldown");
}

#[tokio::test]
async fn every_operation_declares_the_statuses_it_can_answer() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            // Every operation needs a key, is rate limited and refuses a body over the limit.
            for status in ["401", "429", "413"] {
                assert!(responses.contains_key(status), "{method} {path} does not declare {status}");
            }
            // Every operation on one connection can miss it.
            if path.contains("{id}") {
                assert!(responses.contains_key("404"), "{method} {path} does not declare 404");
            }
        }
    }
    assert!(operations >= 3);
    assert_eq!(
        doc["components"]["responses"]["TooManyRequests"]["headers"]["Retry-After"]["schema"]["type"],
        "integer"
    );
}
