//! The API proxy over real HTTP: requests reach the fake SnapInspect's and the fake token
//! servers' API routes with the connection's token, answers come back as they are.

use std::time::Duration;

use connect_hub::{
    auth::api_keys::KeyScope,
    client_credentials::CredentialsInput,
    demo::token_server::FakeTokenServer,
    domain::{ConnectionId, Provider},
};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

fn proxy_url(app: &TestApp, id: &ConnectionId, path: &str) -> String {
    format!("{}/api/v1/connections/{id}/proxy/{path}", app.addr)
}

/// A connected SnapInspect company and a full-scope key.
async fn snapinspect(app: &TestApp) -> (ConnectionId, String) {
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("proxy").await;
    (id, key)
}

/// A request written byte for byte (reqwest would resolve `..` before sending): status, headers
/// and body.
async fn raw_request(app: &TestApp, method: &str, target: &str, key: &str) -> (u16, String) {
    let addr = app.addr.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_request_reaches_the_api_with_the_connections_token_and_nothing_of_the_callers() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    let res = reqwest::Client::new()
        .get(proxy_url(&app, &id, "echo/inspections/42?expand=photos&x=%20y"))
        .bearer_auth(&key)
        .header("cookie", "hub_session=stolen")
        .header("x-forwarded-for", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .header("x-connect-hub-actor", "spoof")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("x-request-id", "req-7")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-connect-hub-error").is_none(), "the upstream's pretend hub header is dropped");
    assert!(res.headers().get("set-cookie").is_none(), "the upstream's cookie is dropped");
    assert_eq!(res.headers().get("x-upstream").unwrap(), "echo", "its other headers come back");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/echo/inspections/42");
    assert_eq!(body["query"], "expand=photos&x=%20y");
    assert_eq!(body["authorizations"], 1, "only the hub's Authorization, which the fake accepted");
    let headers = body["headers"].as_object().unwrap();
    for dropped in ["cookie", "x-forwarded-for", "forwarded", "x-connect-hub-actor", "x-hop"] {
        assert!(!headers.contains_key(dropped), "{dropped} must not reach the upstream: {body}");
    }
    assert_eq!(headers["x-request-id"], "req-7");
    assert_eq!(headers["accept"], "application/json");
    assert_ne!(headers["host"].as_str(), Some(app.addr.trim_start_matches("http://")), "Host is the upstream's");
    let token = app.state.tokens.token(&id).await.unwrap();
    assert!(!body.to_string().contains(token.token.expose_secret()), "the token is in no answer");
    assert!(!body.to_string().contains(&key));
}

#[tokio::test]
async fn every_method_and_body_passes_and_a_head_keeps_its_length() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    let http = reqwest::Client::new();
    // Above the API's 64 KiB limit: the proxy has its own.
    let big = vec![b'a'; 300 * 1024];
    for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::PATCH, reqwest::Method::DELETE] {
        let res = http
            .request(method.clone(), proxy_url(&app, &id, "echo/things"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{method}");
        let body: Value = res.json().await.unwrap();
        assert_eq!((body["method"].as_str(), body["body_bytes"].as_u64()), (Some(method.as_str()), Some(300 * 1024)));
        assert_eq!(body["headers"]["content-type"], "application/json");
    }
    let head = http.head(proxy_url(&app, &id, "files/2")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers().get("content-length").unwrap(), "2097152");
    assert!(head.bytes().await.unwrap().is_empty());
    let options =
        http.request(reqwest::Method::OPTIONS, proxy_url(&app, &id, "echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(options.status(), 405);
    assert_eq!(options.headers().get("x-connect-hub-error").unwrap(), "method_not_allowed");
    assert_eq!(options.headers().get("allow").unwrap(), "GET, HEAD, POST, PUT, PATCH, DELETE");
}

#[tokio::test]
async fn no_path_can_leave_the_connections_api_and_nothing_is_sent() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    let before = app.fake.api_calls();
    for path in [
        "../integration/ExchangeToken",
        "echo/../../integration/ExchangeToken",
        "%2e%2e/integration/ExchangeToken",
        "echo/%2E%2E/%2e%2e/user",
        ".%2e/user",
        "echo%2f..%2f..%2fuser",
        "echo%5c..%5cuser",
        "echo\\..\\user",
        "/127.0.0.1:1/x",
        "//127.0.0.1:1/x",
        "http://127.0.0.1:1/x",
        "http:%2f%2f127.0.0.1:1",
        "user@127.0.0.1:1/x",
        "echo%40127.0.0.1",
        "echo%00x",
        "echo%0d%0aHost:%20other",
        "%252e%252e/user",
    ] {
        let (status, text) = raw_request(&app, "GET", &format!("/api/v1/connections/{id}/proxy/{path}"), &key).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.to_ascii_lowercase().contains("x-connect-hub-error: bad_path"), "{path}: {text}");
    }
    assert_eq!(app.fake.api_calls(), before, "nothing reached the upstream");
    // The same request with an honest path goes through.
    let (status, _) = raw_request(&app, "GET", &format!("/api/v1/connections/{id}/proxy/echo/ok"), &key).await;
    assert_eq!(status, 200);
    assert_eq!(app.fake.api_calls(), before + 1);
}

#[tokio::test]
async fn a_hundred_requests_that_all_get_the_same_401_make_one_exchange() {
    let app = spawn_app_with(|v| {
        v.insert("PROXY_MAX_IN_FLIGHT".into(), "128".into());
        v.insert("RATE_LIMIT_API".into(), "0".into());
    })
    .await;
    let (id, key) = snapinspect(&app).await;
    // Settle the connect link's own exchange first, then revoke the access token at SnapInspect.
    app.state.tokens.exchange_callback_tokens(&id).await.unwrap();
    let _ = app.state.tokens.token(&id).await.unwrap();
    let exchanges = app.fake.exchanges();
    app.fake.revoke_access_tokens(6847);
    let http = reqwest::Client::new();
    let calls = (0..100).map(|_| {
        let (http, url, key) = (http.clone(), proxy_url(&app, &id, "echo/x"), key.clone());
        async move {
            let res = http.get(url).bearer_auth(key).send().await.unwrap();
            (res.status().as_u16(), res.headers().get("x-connect-hub-retry").map(|v| v.to_str().unwrap().to_owned()))
        }
    });
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    // A request that set out after the exchange had finished carried the new token at once.
    let retried = results.iter().filter(|(_, r)| r.as_deref() == Some("retried")).count();
    assert!(results.iter().all(|(_, r)| r.is_none() || r.as_deref() == Some("retried")), "{results:?}");
    assert!(retried >= 10, "many set out with the refused token and shared one exchange: {retried}");
    assert_eq!(app.fake.exchanges() - exchanges, 1, "one exchange for all of them");
    assert_eq!(app.state.proxy.stats.retries("retried"), retried as u64);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("connect_hub_proxy_token_retries_total{{outcome=\"retried\"}} {retried}")),
        "{metrics}"
    );
    assert!(metrics.contains("connect_hub_proxy_requests_total{provider=\"snapinspect\",class=\"2xx\"} 100"));
}

#[tokio::test]
async fn a_refused_exchange_means_needs_reconnect_for_the_app_and_the_connection() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    app.state.tokens.exchange_callback_tokens(&id).await.unwrap();
    app.fake.revoke_access_tokens(6847);
    app.fake.push_exchange_fault(connect_hub::demo::snapinspect::Fault::Status(400));
    let res = reqwest::Client::new().get(proxy_url(&app, &id, "user")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "needs_reconnect");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "needs_reconnect");
    let c = app.state.store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status.as_str(), "needs_reconnect");
    assert_eq!(app.state.proxy.stats.retries("refused"), 1);
    // Later requests are answered at once, without calling anyone.
    let calls = app.fake.api_calls();
    let again = reqwest::Client::new().get(proxy_url(&app, &id, "user")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(app.fake.api_calls(), calls);
}

#[tokio::test]
async fn upstream_errors_come_back_as_they_are_and_are_not_retried() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    let http = reqwest::Client::new();
    for (status, after) in [(429, Some("7")), (503, Some("30")), (500, None), (404, None)] {
        let calls = app.fake.api_calls();
        let q = match after {
            Some(a) => format!("echo/x?status={status}&retry_after={a}"),
            None => format!("echo/x?status={status}"),
        };
        let res = http.get(proxy_url(&app, &id, &q)).bearer_auth(&key).send().await.unwrap();
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(res.headers().get("retry-after").map(|v| v.to_str().unwrap()), after);
        assert!(res.headers().get("x-connect-hub-error").is_none(), "the upstream answered, not the hub");
        assert_eq!(app.fake.api_calls(), calls + 1, "sent once");
    }
}

#[tokio::test]
async fn a_slow_or_absent_upstream_is_a_504_or_a_502_from_the_hub() {
    let app = spawn_app_with(|v| {
        v.insert("OUTBOUND_TIMEOUT".into(), "300ms".into());
    })
    .await;
    let (id, key) = snapinspect(&app).await;
    app.fake.push_inspection_delay(Duration::from_secs(2));
    let res = reqwest::Client::new().get(proxy_url(&app, &id, "inspections/9")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "upstream_timeout");
    // A body that goes idle for longer is cut: the caller gets less than the declared length.
    let res = reqwest::Client::new()
        .get(proxy_url(&app, &id, "files/1?stall_ms=1500"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!((res.status().as_u16(), res.content_length()), (200, Some(1 << 20)));
    assert!(res.bytes().await.is_err(), "the stalled stream is cut, not waited for");
    // The same stall within the timeout is waited for.
    app.fake.push_inspection_delay(Duration::from_millis(100));
    let res = reqwest::Client::new().get(proxy_url(&app, &id, "inspections/9")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);

    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some("http://127.0.0.1:1/token".into()),
        api_url: Some("http://127.0.0.1:1/api/".into()),
        scope: Some("x".into()),
        ..Default::default()
    };
    // A token that is already stored, so only the API is unreachable.
    let cc = app.add_credentials(Provider::Signicat, input, "secret").await;
    let server = FakeTokenServer::signicat("id", "secret");
    let base = spawn_token_server(&server).await;
    let moved = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(format!("{base}{}", server.token_path())),
        api_url: Some("http://127.0.0.1:1/api/".into()),
        scope: Some("x".into()),
        ..Default::default()
    };
    let settings = moved.resolve(Provider::Signicat).unwrap();
    app.state.store.update_credentials_connection(&cc, "x", &settings, None, 0, "test").await.unwrap();
    app.state.tokens.forget(&cc);
    let res = reqwest::Client::new().get(proxy_url(&app, &cc, "echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "upstream_unreachable");
    let body = res.text().await.unwrap();
    assert!(!body.contains("secret"), "{body}");
}

/// A Signicat connection whose API is the fake token server's `/api/`.
async fn signicat(app: &TestApp, server: &FakeTokenServer) -> ConnectionId {
    let base = spawn_token_server(server).await;
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(format!("{base}{}", server.token_path())),
        api_url: Some(format!("{base}/api")),
        scope: Some("document_read".into()),
        ..Default::default()
    };
    app.add_credentials(Provider::Signicat, input, "secret").await
}

#[tokio::test]
async fn a_client_credentials_token_the_api_refuses_is_fetched_again_once() {
    let app = spawn_app().await;
    let server = FakeTokenServer::signicat("id", "secret");
    let id = signicat(&app, &server).await;
    let (_, key) = app.api_key("proxy").await;
    let http = reqwest::Client::new();
    let res = http.get(proxy_url(&app, &id, "echo/documents")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["path"], "/api/echo/documents");
    assert_eq!(server.issued(), 1);
    assert_eq!(server.api_calls(), 1, "one request reached the provider's API");
    server.revoke_all();
    let calls = (0..20).map(|_| {
        let (http, url, key) = (http.clone(), proxy_url(&app, &id, "echo/documents"), key.clone());
        async move { http.get(url).bearer_auth(key).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(server.issued(), 2, "one new token for all twenty");
    assert!(server.api_calls() >= 21, "each was sent, the refused ones twice: {}", server.api_calls());
    let (status, list) = api(&app, reqwest::Method::GET, "/connections", &key).await;
    assert_eq!(status, 200);
    let shown = list["connections"].as_array().unwrap().iter().find(|c| c["id"] == id.as_str()).unwrap().clone();
    assert_eq!(shown["api_url"].as_str().unwrap(), format!("{}/", server_base(&shown)));
}

fn server_base(c: &Value) -> String {
    c["api_url"].as_str().unwrap().trim_end_matches('/').to_owned()
}

#[tokio::test]
async fn a_connection_without_an_api_url_and_keys_outside_their_scope_are_refused() {
    let app = spawn_app().await;
    let server = FakeTokenServer::custom("id", "secret", connect_hub::demo::token_server::CredentialsIn::Body);
    let base = spawn_token_server(&server).await;
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(format!("{base}/token")),
        auth: Some(connect_hub::client_credentials::AuthStyle::Post),
        ..Default::default()
    };
    let custom = app.add_credentials(Provider::Custom, input, "secret").await;
    let (snap, key) = snapinspect(&app).await;
    let res = reqwest::Client::new().get(proxy_url(&app, &custom, "x")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "no_api_url");

    let only_custom = KeyScope { connections: Some(vec![custom.clone()]), read_only: false };
    let (_, limited) = app.state.api_keys.create_scoped("limited", &only_custom, "test").await.unwrap();
    let res = reqwest::Client::new()
        .get(proxy_url(&app, &snap, "echo"))
        .bearer_auth(limited.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "connection_not_found");

    let read_only = KeyScope { connections: None, read_only: true };
    let (_, ro) = app.state.api_keys.create_scoped("ro", &read_only, "test").await.unwrap();
    let http = reqwest::Client::new();
    let get = http.get(proxy_url(&app, &snap, "echo")).bearer_auth(ro.expose_secret()).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let calls = app.fake.api_calls();
    for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::PATCH, reqwest::Method::DELETE] {
        let res =
            http.request(method, proxy_url(&app, &snap, "echo")).bearer_auth(ro.expose_secret()).send().await.unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "read_only_key");
    }
    assert_eq!(app.fake.api_calls(), calls);
    let none = http.get(proxy_url(&app, &snap, "echo")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers().get("x-connect-hub-error").unwrap(), "missing_api_key");
}

#[tokio::test]
async fn a_large_body_is_streamed_once_and_a_body_over_the_limit_is_refused() {
    let app = spawn_app_with(|v| {
        v.insert("PROXY_MAX_BODY".into(), "4MiB".into());
    })
    .await;
    let (id, key) = snapinspect(&app).await;
    app.state.tokens.exchange_callback_tokens(&id).await.unwrap();
    let http = reqwest::Client::new();
    let three = vec![b'z'; 3 << 20];
    let res =
        http.post(proxy_url(&app, &id, "echo/upload")).bearer_auth(&key).body(three.clone()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["body_bytes"], 3 << 20);

    let calls = app.fake.api_calls();
    let declared =
        http.post(proxy_url(&app, &id, "echo/upload")).bearer_auth(&key).body(vec![0u8; 5 << 20]).send().await.unwrap();
    assert_eq!(declared.status(), 413);
    assert_eq!(declared.headers().get("x-connect-hub-error").unwrap(), "body_too_large");
    assert_eq!(app.fake.api_calls(), calls, "a declared length over the limit sends nothing");
    // Without a declared length the body is cut where it passes the limit.
    let chunks = futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![1u8; 64 * 1024])));
    let chunked = http
        .post(proxy_url(&app, &id, "echo/upload"))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);
    assert_eq!(chunked.headers().get("x-connect-hub-error").unwrap(), "body_too_large");

    // A streamed body cannot be resent: its 401 comes back, marked.
    app.fake.revoke_access_tokens(6847);
    let res = http.post(proxy_url(&app, &id, "echo/upload")).bearer_auth(&key).body(three).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("x-connect-hub-error").is_none());
    assert!(res.headers().get("x-connect-hub-retry").unwrap().to_str().unwrap().starts_with("not-retried"));
    assert_eq!(app.state.proxy.stats.retries("not_retried_large_body"), 1);
}

#[tokio::test]
async fn past_the_limit_of_requests_in_flight_the_hub_answers_429() {
    let app = spawn_app_with(|v| {
        v.insert("PROXY_MAX_IN_FLIGHT".into(), "2".into());
    })
    .await;
    let (id, key) = snapinspect(&app).await;
    let http = reqwest::Client::new();
    // Two downloads whose bodies are not read yet hold both places.
    let one = http.get(proxy_url(&app, &id, "files/64")).bearer_auth(&key).send().await.unwrap();
    let two = http.get(proxy_url(&app, &id, "files/64")).bearer_auth(&key).send().await.unwrap();
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (200, 200));
    let third = http.get(proxy_url(&app, &id, "echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers().get("x-connect-hub-error").unwrap(), "too_many_in_flight");
    assert_eq!(third.headers().get("retry-after").unwrap(), "1");
    let said: Value = third.json().await.unwrap();
    assert!(said["message"].as_str().unwrap().starts_with("2 requests are already in flight"), "{said}");
    drop(one);
    let url = proxy_url(&app, &id, "echo");
    eventually(5, "a place is given back", || async {
        http.get(&url).bearer_auth(&key).send().await.unwrap().status() == 200
    })
    .await;
    drop(two);
}

/// The resident set of this process (the hub runs in it), in KiB: now, and at its peak.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_200_mib_download_streams_through_with_flat_memory() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    let (before, _) = rss_kib();
    let res = reqwest::Client::new().get(proxy_url(&app, &id, "files/200")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("content-length").unwrap(), "209715200");
    let mut stream = res.bytes_stream();
    let (mut total, mut peak) = (0u64, before);
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        total += chunk.unwrap().len() as u64;
        peak = peak.max(rss_kib().0);
    }
    assert_eq!(total, 200 << 20);
    // Holding the download anywhere would take 200 MiB; streaming takes a few buffers.
    assert!(peak - before < 64 * 1024, "the resident set grew by {} KiB", peak - before);
}

#[tokio::test]
async fn the_console_shows_the_api_url_and_the_last_hours_proxied_requests() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    let http = reqwest::Client::new();
    for q in ["echo", "echo", "echo?status=404"] {
        let _ = http.get(proxy_url(&app, &id, q)).bearer_auth(&key).send().await.unwrap().bytes().await;
    }
    app.sign_in().await;
    let page = unescape(&app.page(&format!("/admin/connections/{id}")).await);
    assert!(page.contains("2xx: 2 · 4xx: 1"), "{page}");
    assert!(page.contains(&format!("{}/", app.fake_addr)), "the API URL is shown");
}

#[tokio::test]
async fn an_edited_api_url_is_used_from_the_next_request_on() {
    let app = spawn_app().await;
    let server = FakeTokenServer::signicat("id", "secret");
    let id = signicat(&app, &server).await;
    let (_, key) = app.api_key("proxy").await;
    let http = reqwest::Client::new();
    assert_eq!(app.state.proxy.target_read_with(&id), None);
    let first: Value =
        http.get(proxy_url(&app, &id, "echo/a")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(first["path"], "/api/echo/a");
    let version = app.state.tokens.token(&id).await.unwrap().version;
    assert_eq!(app.state.proxy.target_read_with(&id), Some(version), "kept, with the token it was read with");
    // The console's edit: the API URL moves (with the secret), the stored token is dropped.
    let c = app.state.store.credentials(&id).await.unwrap().unwrap();
    let mut settings = c.settings.clone();
    settings.api_url = Some(format!("{}/api/echo/moved/", settings.token_url.split("/oauth").next().unwrap()));
    let secret = secrecy::SecretString::from("secret".to_owned());
    assert!(app.state.store.update_credentials_connection(&id, "S", &settings, Some(&secret), 0, "t").await.unwrap());
    app.state.tokens.forget(&id);
    let second: Value =
        http.get(proxy_url(&app, &id, "echo/a")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(second["path"], "/api/echo/moved/echo/a", "{second}");
    let new_version = app.state.tokens.token(&id).await.unwrap().version;
    assert!(new_version > version);
    assert_eq!(app.state.proxy.target_read_with(&id), Some(new_version), "read again with the new token");
    // Disconnected: refused by the hub, whatever it knew before.
    app.state.store.disconnect(&id, 0, "t").await.unwrap();
    app.state.tokens.forget(&id);
    let res = http.get(proxy_url(&app, &id, "echo/a")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "disconnected");
}

#[tokio::test]
async fn a_small_body_is_sent_again_with_the_new_token_after_a_401() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    app.state.tokens.exchange_callback_tokens(&id).await.unwrap();
    let exchanges = app.fake.exchanges();
    app.fake.revoke_access_tokens(6847);
    let body = vec![b'x'; 700 * 1024];
    let res = reqwest::Client::new()
        .put(proxy_url(&app, &id, "echo/notes"))
        .bearer_auth(&key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("x-connect-hub-retry").unwrap(), "retried");
    let echoed: Value = res.json().await.unwrap();
    assert_eq!((echoed["method"].as_str(), echoed["body_bytes"].as_u64()), (Some("PUT"), Some(700 * 1024)));
    assert_eq!(app.fake.exchanges() - exchanges, 1);
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_passes_and_one_byte_more_does_not() {
    let app = spawn_app_with(|v| {
        v.insert("PROXY_MAX_BODY".into(), "2MiB".into());
    })
    .await;
    let (id, key) = snapinspect(&app).await;
    let http = reqwest::Client::new();
    let post = |body: reqwest::Body| http.post(proxy_url(&app, &id, "echo/up")).bearer_auth(&key).body(body).send();
    let exact = post(vec![1u8; 2 << 20].into()).await.unwrap();
    assert_eq!(exact.status(), 200);
    assert_eq!(exact.json::<Value>().await.unwrap()["body_bytes"], 2 << 20);
    assert_eq!(post(vec![1u8; (2 << 20) + 1].into()).await.unwrap().status(), 413);
    let chunks = |n: usize| {
        let last = if n % 2 == 0 { 0 } else { 1 };
        let pieces = (0..32).map(|_| vec![1u8; 64 * 1024]).chain((last == 1).then(|| vec![1u8; 1]));
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces.map(Ok::<_, std::io::Error>)))
    };
    let exact = post(chunks(0)).await.unwrap();
    assert_eq!(exact.status(), 200, "2 MiB without a declared length");
    assert_eq!(post(chunks(1)).await.unwrap().status(), 413, "one byte more without a declared length");
}

#[tokio::test]
async fn stored_api_urls_go_through_the_outbound_guard_and_snapinspects_does_not() {
    let app = spawn_app_with(|v| {
        v.remove("OUTBOUND_ALLOW_NETWORKS");
        v.insert("TOKEN_URL_ALLOW_NETWORKS".into(), "127.0.0.1/32".into());
    })
    .await;
    // SNAPINSPECT_API_URL is the operator's own setting: the fake on loopback is reachable.
    let (snap, key) = snapinspect(&app).await;
    let res = reqwest::Client::new().get(proxy_url(&app, &snap, "echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // A stored API URL the guard does not allow (here stored directly, past the checks the CLI and
    // the console make) is refused at the call, though its token URL is allowed.
    let server = FakeTokenServer::signicat("id", "secret");
    let base = spawn_token_server(&server).await;
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some(format!("{base}{}", server.token_path())),
        api_url: Some(base.replace("127.0.0.1", "127.0.0.2") + "/api/"),
        scope: Some("s".into()),
        ..Default::default()
    };
    let cc = app.add_credentials(Provider::Signicat, input, "secret").await;
    let res = reqwest::Client::new().get(proxy_url(&app, &cc, "echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), "upstream_unreachable");
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("the API URL cannot be used: 127.0.0.2"), "{body}");
    assert_eq!(server.issued(), 1, "the token came from the allowed token URL");
    assert_eq!(server.api_calls(), 0, "and nothing reached the API");
}

#[tokio::test]
async fn a_status_read_from_the_database_is_refused_even_with_a_token_in_memory() {
    let app = spawn_app().await;
    let (id, key) = snapinspect(&app).await;
    // The token is in this process's memory, the target is not: a change another process made to
    // the row (here written directly, with no notification) is seen on the target's first read.
    app.state.tokens.token(&id).await.unwrap();
    let calls = app.fake.api_calls();
    for (status, code) in [("needs_reconnect", "needs_reconnect"), ("disconnected", "disconnected")] {
        sqlx::query(&format!("update connections set status = '{status}' where id = $1"))
            .bind(id.as_str())
            .execute(app.state.store.pool())
            .await
            .unwrap();
        let res = reqwest::Client::new().get(proxy_url(&app, &id, "echo")).bearer_auth(&key).send().await.unwrap();
        assert_eq!(res.status(), 409, "{status}");
        assert_eq!(res.headers().get("x-connect-hub-error").unwrap(), code);
    }
    assert_eq!(app.fake.api_calls(), calls, "nothing was sent");
    if !app.db.is_postgres() {
        // (On PostgreSQL the row's change is announced, and the token dropped, as it should be.)
        assert!(app.state.tokens.remembers(&id), "the token manager still held the token");
    }
    // A connection that is gone is forgotten here too.
    sqlx::query("update connections set status = 'active' where id = $1")
        .bind(id.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    app.state.tokens.forget(&id);
    let res = reqwest::Client::new().get(proxy_url(&app, &id, "echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(app.state.proxy.target_read_with(&id).is_some());
    sqlx::query("delete from connections where id = $1")
        .bind(id.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    app.state.tokens.forget(&id);
    let res = reqwest::Client::new().get(proxy_url(&app, &id, "echo")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(app.state.proxy.target_read_with(&id), None);
}

#[tokio::test]
async fn under_a_limit_below_a_mebibyte_a_held_body_is_cut_at_exactly_the_limit() {
    let app = spawn_app_with(|v| {
        v.insert("PROXY_MAX_BODY".into(), "256KiB".into());
    })
    .await;
    let (id, key) = snapinspect(&app).await;
    let http = reqwest::Client::new();
    // No declared length: the body is counted as it is read and held.
    let chunked = |extra: usize| {
        let pieces = (0..4).map(|_| vec![7u8; 64 * 1024]).chain((extra > 0).then(|| vec![7u8; extra]));
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces.map(Ok::<_, std::io::Error>)))
    };
    let send = |body| http.post(proxy_url(&app, &id, "echo/up")).bearer_auth(&key).body(body).send();
    let exact = send(chunked(0)).await.unwrap();
    assert_eq!(exact.status(), 200);
    assert_eq!(exact.json::<Value>().await.unwrap()["body_bytes"], 256 * 1024);
    let calls = app.fake.api_calls();
    for extra in [1, 40 * 1024] {
        let over = send(chunked(extra)).await.unwrap();
        assert_eq!(over.status(), 413, "{extra} bytes over");
        assert_eq!(over.headers().get("x-connect-hub-error").unwrap(), "body_too_large");
    }
    assert_eq!(app.fake.api_calls(), calls, "a held body over the limit is never sent");
}
