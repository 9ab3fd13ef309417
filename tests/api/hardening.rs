//! Production hardening: HTTPS, the redirect listener, security headers, body limits, rate
//! limits, metrics and backups.

use std::io::Write;

use serde_json::Value;

use crate::helpers::{location, spawn_app, spawn_app_with, WEBHOOK_SECRET};

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/admin/login", "/no/such/page", "/healthz"] {
        let res = app.get(path).await;
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"), "no inline script, no script at all");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain http");
    }
}

#[tokio::test]
async fn https_public_urls_get_hsts() {
    let app = spawn_app_with(|v| {
        v.insert("PUBLIC_URL".into(), "https://hub.example.com".into());
    })
    .await;
    let res = app.get("/").await;
    assert!(res.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age=63072000"));
}

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, reqwest::Certificate) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key, reqwest::Certificate::from_pem(made.cert.pem().as_bytes()).unwrap())
}

#[tokio::test]
async fn with_a_certificate_it_serves_https_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, root) = self_signed(dir.path());
    let app = spawn_app_with(|v| {
        let bind = v["BIND_ADDR"].clone();
        v.insert("PUBLIC_URL".into(), format!("https://{bind}"));
        v.insert("TLS_CERT".into(), cert.display().to_string());
        v.insert("TLS_KEY".into(), key.display().to_string());
    })
    .await;
    let https = app.addr.replace("http://", "https://");
    let client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();
    let res = client.get(format!("{https}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("strict-transport-security"));
    // Plain http to the TLS port gets nowhere.
    assert!(reqwest::get(format!("{}/healthz", app.addr)).await.is_err());
    // A client that does not trust the certificate is refused.
    assert!(reqwest::get(format!("{https}/healthz")).await.is_err());
}

#[tokio::test]
async fn a_broken_certificate_stops_serve_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .arg("serve")
        .env_clear()
        .env("ENCRYPTION_KEY", connect_hub::crypto::generate_key_b64(32))
        .env("SESSION_KEY", connect_hub::crypto::generate_key_b64(64))
        .env("TLS_CERT", dir.path().join("cert.pem"))
        .env("TLS_KEY", dir.path().join("key.pem"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS_CERT") && err.contains("cannot be used"), "{err}");
}

#[tokio::test]
async fn the_plain_listener_only_redirects_to_https() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let public = url::Url::parse("https://hub.example.com").unwrap();
    let server = connect_hub::startup::headers::redirect_server(listener, public).unwrap();
    tokio::spawn(server);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = client.get(format!("http://{addr}/admin/events?status=dead")).send().await.unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(location(&res), "https://hub.example.com/admin/events?status=dead");
    let res = client.post(format!("http://{addr}/webhooks/snapinspect/x")).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 308, "a POST is redirected with its method kept, not served");
}

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

#[tokio::test]
async fn backup_makes_a_consistent_copy_while_serving() {
    let app = spawn_app().await;
    if app.skip_on_postgres("`backup` is SQLite's VACUUM INTO (PostgreSQL's refusal is in stores.rs)") {
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
