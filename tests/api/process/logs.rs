//! What the real binary logs: JSON lines with a request id on every request's lines, and, after a
//! whole connect, exchange, client-credentials and webhook flow at debug level, none of the
//! secrets anywhere in it.

use std::{sync::Arc, time::Duration};

use connect_hub::{crypto::KeyRing, demo::token_server::FakeTokenServer, domain::ConnectionId, store::Store};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::helpers::spawn_token_server;

#[tokio::test]
async fn a_full_flow_logs_json_with_request_ids_and_no_secret_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = super::hub(dir.path()).await;
    let log = dir.path().join("hub.log");
    hub.log = Some(log.clone());
    hub.env.insert("LOG_FORMAT".into(), "json".into());
    hub.env.insert("RUST_LOG".into(), "debug".into());
    hub.env.insert("WORKER_ENABLED".into(), "true".into());
    let mut child = hub.start().await.unwrap();

    // Connect: the callback URL carries both tokens.
    let callback = hub.connect(6847).await.unwrap();
    let q: std::collections::BTreeMap<String, String> =
        url::Url::parse(&callback).unwrap().query_pairs().into_owned().collect();
    let mut secrets: Vec<String> = vec![q["access_token"].clone(), q["refresh_token"].clone()];

    // An API key, and an exchange through the API.
    let cli = |args: &[&str], stdin_env: Option<(&str, &str)>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"));
        cmd.env_clear().envs(&hub.env).current_dir(&hub.dir).args(args);
        if let Some((k, v)) = stdin_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let key = cli(&["api-key", "create", "--name", "logs"], None);
    secrets.push(key.clone());
    let pool = hub.pool().await.unwrap();
    let conn: String =
        sqlx::query_scalar("select id from connections where company_id = 6847").fetch_one(&pool).await.unwrap();
    let client = reqwest::Client::new();
    let v: Value = client
        .get(format!("{}/api/v1/connections/{conn}/token?force_refresh=true", hub.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(v["access_token"].as_str().unwrap().to_owned());

    // A client-credentials connection: its secret and its token.
    let fake = FakeTokenServer::signicat("logs-id", "the client secret 42");
    let fake_base = spawn_token_server(&fake).await;
    let url = format!("{fake_base}/oauth/connect/token");
    let api_url = format!("{fake_base}/api/");
    let cc = cli(
        &[
            "connections",
            "add",
            "--provider",
            "signicat",
            "--name",
            "S",
            "--client-id",
            "logs-id",
            "--scope",
            "identify",
            "--token-url",
            &url,
            "--api-url",
            &api_url,
        ],
        Some(("CLIENT_SECRET", "the client secret 42")),
    );
    secrets.push("the client secret 42".into());
    let v: Value = client
        .get(format!("{}/api/v1/connections/{cc}/token", hub.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(v["access_token"].as_str().unwrap().to_owned());

    // Through the proxy, both kinds, one of them after SnapInspect stopped taking the token (an
    // exchange on the way): then the pair as it is now.
    hub.fake.revoke_access_tokens(6847);
    for id in [&conn, &cc] {
        let res = client
            .get(format!("{}/api/v1/connections/{id}/proxy/echo/logged?q=1", hub.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let v: Value = client
        .get(format!("{}/api/v1/connections/{conn}/token", hub.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(v["access_token"].as_str().unwrap().to_owned());

    // A webhook, processed: the inspection read with the token, forwarded signed.
    let res = client
        .post(format!("{}/webhooks/snapinspect/{}", hub.base, hub.env["WEBHOOK_SECRET"]))
        .body(r#"{"sType":"Create_Inspection","iInspectionID":9,"iCompanyID":6847}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while hub.receiver.received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the event was forwarded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A failed sign-in with a password that must not be logged.
    let page = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let login = page.get(format!("{}/admin/login", hub.base)).send().await.unwrap().text().await.unwrap();
    page.post(format!("{}/admin/login", hub.base))
        .form(&[
            ("email", "ops@example.com"),
            ("password", "hunter2 is my password"),
            ("csrf", &crate::helpers::csrf_from(&login)),
        ])
        .send()
        .await
        .unwrap();
    secrets.push("hunter2 is my password".into());

    // The current refresh token too, as stored now.
    let keys = KeyRing::from_base64(&SecretString::from(hub.env["ENCRYPTION_KEY"].clone()), &[]).unwrap();
    let store = Store::open(&hub.env["DATABASE_URL"], None, Arc::new(keys)).await.unwrap();
    let stored = store.tokens(&ConnectionId::parse(&conn).unwrap()).await.unwrap().unwrap();
    secrets.push(stored.refresh.unwrap().expose_secret().to_owned());
    for k in ["WEBHOOK_SECRET", "FORWARD_SECRET", "ENCRYPTION_KEY", "SESSION_KEY", "SNAPINSPECT_CLIENT_SECRET"] {
        secrets.push(hub.env[k].clone());
    }

    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // One line per proxied request, with what an operator needs and no query.
    let proxied: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "proxied")
        .collect();
    assert_eq!(proxied.len(), 2, "{:?}", lines.iter().filter(|l| l.contains("proxied")).collect::<Vec<_>>());
    for p in &proxied {
        let f = p;
        assert!(f["path"].as_str().unwrap().ends_with("/echo/logged"), "{p}");
        assert_eq!((f["method"].as_str(), f["status"].as_u64()), (Some("GET"), Some(200)), "{p}");
        assert!(f["upstream_host"].is_string() && f["duration_ms"].is_u64() && f["bytes"].as_u64() > Some(0), "{p}");
        assert!(f["connection_id"] == conn.as_str() || f["connection_id"] == cc.as_str(), "{p}");
        assert!(request_id(p).is_some(), "written within the request's span: {p}");
    }
    assert!(lines.len() > 100, "debug level logs a lot: {}", lines.len());
    for secret in &secrets {
        assert!(secret.len() >= 8, "a secret worth searching for");
        let found: Vec<&&str> = lines.iter().filter(|l| l.contains(secret.as_str())).collect();
        assert!(found.is_empty(), "a secret is in the log: {}", found[0]);
        // Also URL- and form-encoded, as a query string would carry it.
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        assert!(!text.contains(&encoded), "an encoded secret is in the log");
    }
    let mut requests = 0;
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "request" {
            requests += 1;
            assert!(request_id(&v).is_some(), "a request id: {line}");
            assert!(v["route"].is_string(), "{line}");
        }
    }
    assert!(requests >= 7, "{requests} request lines");
    assert!(text.contains("/connect/snapinspect/callback") && !text.contains("callback?"), "the path, never the query");
    // Lines logged while handling a request carry its id too, not just the access line.
    let connected = lines.iter().find(|l| l.contains("SnapInspect connected")).expect("the connect is logged");
    let v: Value = serde_json::from_str(connected).unwrap();
    assert!(request_id(&v).is_some(), "{connected}");
}

/// The request id among a JSON line's spans.
fn request_id(line: &Value) -> Option<&str> {
    line["spans"].as_array()?.iter().find_map(|s| s["request_id"].as_str())
}
