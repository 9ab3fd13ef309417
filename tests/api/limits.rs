//! Limits on what one client can send: request bodies are capped on every route, and connecting,
//! signing in and the API are rate-limited per address or per key (`RATE_LIMIT_*`).

use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, WEBHOOK_SECRET};

#[tokio::test]
async fn bodies_are_limited_everywhere() {
    let app = spawn_app().await;
    let big = "x".repeat(100 * 1024);
    let res =
        app.client.post(format!("{}/admin/login", app.addr)).form(&[("email", big.as_str())]).send().await.unwrap();
    assert_eq!(res.status(), 413);
    let res = app
        .client
        .post(format!("{}/webhooks/snapinspect/{WEBHOOK_SECRET}", app.addr))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn every_api_route_answers_an_oversized_body_with_the_same_json_413() {
    use reqwest::Method;
    let app = spawn_app().await;
    let (_, key) = app.api_key("big").await;
    let con = app.connect_company(6847).await;
    let (_, url) = crate::helpers::receiver();
    let made: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/endpoints", app.addr))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ep = made["id"].as_str().unwrap().to_owned();
    let reading = [
        (Method::POST, "/endpoints".to_owned()),
        (Method::PATCH, format!("/endpoints/{ep}")),
        (Method::POST, format!("/endpoints/{ep}/rotate-secret")),
        (Method::POST, "/connect-sessions".to_owned()),
        (Method::POST, format!("/connections/{con}/reconnect-session")),
    ];
    let others = [
        (Method::POST, format!("/connections/{con}/refresh")),
        (Method::GET, "/connections".to_owned()),
        (Method::GET, format!("/connections/{con}/token")),
        (Method::GET, "/openapi.json".to_owned()),
        (Method::DELETE, format!("/endpoints/{ep}")),
    ];
    let send = |method: Method, path: &str, body: reqwest::Body| {
        reqwest::Client::new()
            .request(method, format!("{}/api/v1{path}", app.addr))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mut answers = Vec::new();
    // With its length declared: refused before anything reads it, on every route.
    for (method, path) in reading.iter().chain(&others) {
        let res = send(method.clone(), path, vec![b' '; 100 * 1024].into()).await.unwrap();
        assert_eq!(res.status(), 413, "{method} {path}");
        answers.push((format!("{method} {path}"), res.json::<Value>().await.unwrap()));
    }
    // Chunked, without a length: refused where the body is read, once it passes the limit.
    for (method, path) in &reading {
        let chunks = futures_util::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
        let res = send(method.clone(), path, reqwest::Body::wrap_stream(chunks)).await.unwrap();
        assert_eq!(res.status(), 413, "chunked {method} {path}");
        answers.push((format!("chunked {method} {path}"), res.json::<Value>().await.unwrap()));
    }
    // A body of exactly the limit is read (and found not to be JSON).
    let res = send(Method::POST, "/endpoints", vec![b' '; 64 * 1024].into()).await.unwrap();
    assert_eq!(res.status(), 400, "exactly 64 KiB is within the limit");
    let first = &answers[0].1;
    assert_eq!(first["error"], "body_too_large", "{first}");
    assert!(first["message"].as_str().unwrap().contains("64 KiB"), "{first}");
    for (what, answer) in &answers {
        assert_eq!(answer, first, "{what}");
    }
    assert_eq!(app.state.store.endpoints().await.unwrap().len(), 1, "nothing was done");
}

#[tokio::test]
async fn starting_the_connect_flow_is_rate_limited_per_address() {
    let app = spawn_app_with(|v| {
        v.insert("RATE_LIMIT_CONNECT".into(), "3".into());
        v.insert("TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    })
    .await;
    let start = |from: &'static str| {
        app.client.get(format!("{}/connect/snapinspect", app.addr)).header("x-forwarded-for", from).send()
    };
    for _ in 0..3 {
        assert_eq!(start("2001:db8:0:7::1").await.unwrap().status(), 303);
    }
    let res = start("2001:db8:0:7::1").await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.text().await.unwrap().contains("Too many connection attempts"));
    // Counted per client: the rest of the same IPv6 /64 shares the limit, other clients do not.
    assert_eq!(start("2001:db8:0:7::99").await.unwrap().status(), 429);
    assert_eq!(start("2001:db8:0:8::1").await.unwrap().status(), 303);
    assert_eq!(start("198.51.100.7").await.unwrap().status(), 303);
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited_per_address() {
    let app = spawn_app_with(|v| {
        v.insert("RATE_LIMIT_SIGN_IN".into(), "2".into());
    })
    .await;
    app.create_admin("a@example.com", "a long enough password").await;
    assert_eq!(app.try_sign_in(&app.client, "a@example.com", "a long enough password").await.status(), 303);
    assert_eq!(app.try_sign_in(&app.client, "a@example.com", "a long enough password").await.status(), 303);
    assert_eq!(app.try_sign_in(&app.client, "a@example.com", "a long enough password").await.status(), 429);
}

#[tokio::test]
async fn the_api_is_rate_limited_per_key_and_key_guessing_per_address() {
    let app = spawn_app_with(|v| {
        v.insert("RATE_LIMIT_API".into(), "1".into());
    })
    .await;
    let (_, key) = app.api_key("busy").await;
    let (_, other) = app.api_key("calm").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.api_get("/api/v1/connections", Some(&key)).await.status().as_u16());
    }
    assert_eq!(&statuses[..2], &[200, 200], "a burst of two");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let res = app.api_get("/api/v1/connections", Some(&key)).await;
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    assert_eq!(app.api_get("/api/v1/connections", Some(&other)).await.status(), 200, "other keys are not affected");

    let mut last = 0;
    for i in 0..40 {
        last = app.api_get("/api/v1/connections", Some(&format!("chk_guess{i}"))).await.status().as_u16();
    }
    assert_eq!(last, 429, "guessing keys from one address is stopped");
}

#[tokio::test]
async fn an_address_refused_for_guessing_keys_is_answered_without_the_database() {
    let app = spawn_app().await;
    let (_, known) = app.api_key("app").await;
    assert_eq!(app.api_get("/api/v1/connections", Some(&known)).await.status(), 200);
    let mut last = 0;
    for i in 0..31 {
        last = app.api_get("/api/v1/connections", Some(&format!("chk_guess{i}"))).await.status().as_u16();
    }
    assert_eq!(last, 429, "the guessing limit is reached");
    // With the database gone, a lookup would be a 500: the 429 proves no lookup was made.
    app.state.store.close().await;
    let res = app.api_get("/api/v1/connections", Some("chk_another_guess")).await;
    assert_eq!(res.status(), 429, "{}", res.text().await.unwrap());
    let v: Value = app.api_get("/api/v1/connections", Some("chk_and_another")).await.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
}
