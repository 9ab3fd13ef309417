//! Endpoints managed from the console and from `/api/v1/endpoints`, over real HTTP: secrets shown
//! once and checked against delivered signatures with the `standardwebhooks` crate, field errors,
//! CSRF, the audit log, per-endpoint rates, the API's scopes and OpenAPI, and the outbound guard.

use connect_hub::{
    auth::api_keys::KeyScope,
    demo::receiver::{Delivery, Reply},
    time::now_ms,
};
use serde_json::{json, Value};

use crate::helpers::{location, receiver, spawn_app, spawn_app_with, verifies, TestApp, CREATE, SIGNED};

fn kind(d: &Delivery) -> String {
    serde_json::from_slice::<Value>(&d.body).unwrap()["type"].as_str().unwrap_or_default().to_owned()
}

/// The text of the element with this id (up to the next tag).
fn text_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id} on the page:\n{html}"));
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    rest[open..].split('<').next().unwrap().trim().to_owned()
}

/// The endpoint id in a secret page's "Go to endpoint" link.
fn id_on(html: &str) -> String {
    let start = html.find("/admin/endpoints/ep_").expect("a link to the endpoint") + "/admin/endpoints/".len();
    html[start..].split('"').next().unwrap().to_owned()
}

async fn audit(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query_as::<_, (String, String, Option<String>)>("select actor, action, detail from audit_log order by id")
        .fetch_all(app.state.store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|(a, b, c)| (a, b, c.unwrap_or_default()))
        .collect()
}

/// Add an endpoint through the console; returns the secret page's (endpoint id, secret).
async fn console_add(app: &TestApp, csrf: &str, url: &str, events: &str) -> (String, String) {
    let res = app
        .admin_post(
            "/admin/endpoints/new",
            &[("csrf", csrf), ("url", url), ("events", events), ("description", "prod")],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let html = res.text().await.unwrap();
    (id_on(&html), text_of(&html, "new-secret"))
}

#[tokio::test]
async fn the_console_adds_an_endpoint_shows_its_secret_once_and_that_secret_verifies_its_deliveries() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let list = app.page("/admin/endpoints").await;
    assert!(list.contains("href=\"/admin/endpoints\" aria-current=\"page\""), "a nav entry");
    let form = app.page("/admin/endpoints/new").await;
    assert!(form.contains("name=\"csrf\""));
    let (r, url) = receiver();
    let (id, secret) = console_add(&app, &csrf, &url, "Review_Signed").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    for page in [app.page("/admin/endpoints").await, app.page(&format!("/admin/endpoints/{id}")).await] {
        assert!(page.contains(&id) && page.contains(&url));
        assert!(!page.contains(&secret), "the secret is shown only once");
    }
    let e = app.page(&format!("/admin/endpoints/{id}")).await;
    assert_eq!(text_of(&e, "events"), "Review_Signed");
    assert_eq!(text_of(&e, "description"), "prod");

    app.connect_company(6847).await;
    app.send_event(CREATE).await;
    let signed = app.send_event(SIGNED).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1, "only the filtered type: {:?}", got.iter().map(kind).collect::<Vec<_>>());
    assert_eq!(got[0].webhook_id, signed.as_str());
    assert!(verifies(&got[0], &secret), "the secret shown verifies the delivery");
    let added = audit(&app).await.into_iter().find(|(_, action, _)| action == "endpoint_add").expect("audited");
    assert_eq!(added.0, "admin:ops@example.com");
    assert!(added.2.contains(&id) && !added.2.contains(&secret));
}

#[tokio::test]
async fn bad_endpoint_input_in_the_console_comes_back_beside_its_field_with_a_400() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let long = "x".repeat(501);
    for (url, events, description, field) in [
        ("ftp://example.com/x", "", "", "url"),
        ("https://u:p@example.com/", "", "", "url"),
        ("http://10.1.2.3/hooks", "", "", "url"),
        ("http://169.254.169.254/latest", "", "", "url"),
        ("https://example.com/hooks", "bad type", "", "events"),
        ("https://example.com/hooks", "", long.as_str(), "description"),
    ] {
        let res = app
            .admin_post(
                "/admin/endpoints/new",
                &[("csrf", &csrf), ("url", url), ("events", events), ("description", description)],
            )
            .await;
        assert_eq!(res.status(), 400, "{url} {events}");
        let html = res.text().await.unwrap();
        assert!(html.contains(&format!("id=\"{field}-error\"")), "{field}: {html}");
        assert!(
            html.contains(&format!("value=\"{}\"", url.replace('&', "&amp;"))) || field != "url",
            "kept what was typed"
        );
    }
    let blocked = app
        .admin_post("/admin/endpoints/new", &[("csrf", &csrf), ("url", "http://10.1.2.3/hooks")])
        .await
        .text()
        .await
        .unwrap();
    assert!(text_of(&blocked, "url-error").contains("OUTBOUND_ALLOW_NETWORKS"), "says how to allow it");
    assert!(app.state.store.endpoints().await.unwrap().is_empty(), "nothing was added");

    let (_, url) = receiver();
    let (id, _) = console_add(&app, &csrf, &url, "").await;
    let res = app
        .admin_post(&format!("/admin/endpoints/{id}/edit"), &[("csrf", &csrf), ("url", "http://192.168.1.1/x")])
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("id=\"url-error\""));
    let ep = &app.state.store.endpoints().await.unwrap()[0];
    assert_eq!(ep.url, url, "unchanged");
    let res = app.get("/admin/endpoints/ep_nope").await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn every_endpoint_action_in_the_console_needs_its_csrf_token() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let (r, url) = receiver();
    let (id, _) = console_add(&app, &csrf, &url, "").await;
    for path in ["new", "edit", "disable", "rotate", "test", "remove"] {
        let path =
            if path == "new" { "/admin/endpoints/new".to_owned() } else { format!("/admin/endpoints/{id}/{path}") };
        let res =
            app.admin_post(&path, &[("csrf", "forged"), ("url", "https://example.com/"), ("overlap", "1h")]).await;
        assert_eq!(res.status(), 403, "{path}");
    }
    let all = app.state.store.endpoints().await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].enabled && all[0].url == url && all[0].previous_until.is_none());
    assert_eq!(r.count(), 0, "no test was sent");
}

#[tokio::test]
async fn the_console_edits_disables_enables_and_removes_an_endpoint_and_audits_each() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let (_, old_url) = receiver();
    let (r, url) = receiver();
    let (id, secret) = console_add(&app, &csrf, &old_url, "").await;
    let form = app.page(&format!("/admin/endpoints/{id}/edit")).await;
    assert!(form.contains(&format!("value=\"{old_url}\"")));
    let res = app
        .admin_post(
            &format!("/admin/endpoints/{id}/edit"),
            &[
                ("csrf", &csrf),
                ("url", &url),
                ("events", "Create_Inspection, connection.created"),
                ("description", "staging"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("/admin/endpoints/{id}"));
    let page = app.page(&format!("/admin/endpoints/{id}")).await;
    assert_eq!(text_of(&page, "url"), url);
    assert_eq!(text_of(&page, "events"), "Create_Inspection,connection.created");
    assert_eq!(text_of(&page, "description"), "staging");

    let res = app.admin_post(&format!("/admin/endpoints/{id}/disable"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let page = app.page(&format!("/admin/endpoints/{id}")).await;
    assert_eq!(text_of(&page, "state"), "disabled");
    assert!(page.contains("id=\"enable\""));
    app.connect_company(6847).await;
    let event = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(r.count(), 0, "a disabled endpoint hears nothing");
    let kept = app.state.store.event_deliveries(app.event(&event).await.rowid).await.unwrap();
    assert_eq!(kept[0].state, "pending", "kept, not dropped");

    let res = app.admin_post(&format!("/admin/endpoints/{id}/enable"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(text_of(&app.page(&format!("/admin/endpoints/{id}")).await, "state"), "enabled");
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert!(got.iter().any(|d| d.webhook_id == event.as_str()), "enabling resumed the kept delivery");
    assert!(got.iter().all(|d| verifies(d, &secret)));

    let confirm = app.page(&format!("/admin/endpoints/{id}/remove")).await;
    assert!(confirm.contains("id=\"confirm-remove\"") && confirm.contains(&url));
    assert_eq!(app.state.store.endpoints().await.unwrap().len(), 1, "the confirmation page removes nothing");
    let res = app.admin_post(&format!("/admin/endpoints/{id}/remove"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/admin/endpoints");
    assert!(app.state.store.endpoints().await.unwrap().is_empty());
    assert_eq!(app.get(&format!("/admin/endpoints/{id}")).await.status(), 404);

    let actions: Vec<String> = audit(&app)
        .await
        .into_iter()
        .filter(|(actor, action, _)| actor == "admin:ops@example.com" && action.starts_with("endpoint_"))
        .map(|(_, action, _)| action)
        .collect();
    assert_eq!(actions, ["endpoint_add", "endpoint_edit", "endpoint_disable", "endpoint_enable", "endpoint_remove"]);
}

#[tokio::test]
async fn rotating_in_the_console_shows_the_new_secret_once_and_deliveries_verify_with_either() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let (r, url) = receiver();
    let (id, old) = console_add(&app, &csrf, &url, "").await;
    let res = app.admin_post(&format!("/admin/endpoints/{id}/rotate"), &[("csrf", &csrf), ("overlap", "2h")]).await;
    assert_eq!(res.status(), 400, "only the offered overlaps");
    let before = now_ms();
    let res = app.admin_post(&format!("/admin/endpoints/{id}/rotate"), &[("csrf", &csrf), ("overlap", "1h")]).await;
    assert_eq!(res.status(), 200);
    let new = text_of(&res.text().await.unwrap(), "new-secret");
    assert!(new.starts_with("whsec_") && new != old);
    let until = app.state.store.endpoints().await.unwrap()[0].previous_until.expect("an overlap");
    assert!((before + 3_600_000..=now_ms() + 3_600_000).contains(&until), "one hour: {}", until - before);
    assert!(!app.page(&format!("/admin/endpoints/{id}")).await.contains(&new), "shown once");

    app.connect_company(6847).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert!(!got.is_empty());
    for d in &got {
        assert!(verifies(d, &old) && verifies(d, &new), "both secrets verify during the overlap");
    }
    // The test send is signed like a delivery: with both secrets during the overlap.
    r.clear();
    app.admin_post(&format!("/admin/endpoints/{id}/test"), &[("csrf", &csrf)]).await;
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert!(verifies(&got[0], &old) && verifies(&got[0], &new));
    let res = app.admin_post(&format!("/admin/endpoints/{id}/rotate"), &[("csrf", &csrf), ("overlap", "7d")]).await;
    assert_eq!(res.status(), 200);
    let until = app.state.store.endpoints().await.unwrap()[0].previous_until.unwrap();
    assert!(until >= before + 7 * 86_400_000 && until <= now_ms() + 7 * 86_400_000);
}

#[tokio::test]
async fn send_test_event_reaches_only_that_endpoint_signed_and_says_what_it_answered() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let (a, a_url) = receiver();
    let (b, b_url) = receiver();
    let (a_id, a_secret) = console_add(&app, &csrf, &a_url, "Review_Signed").await;
    console_add(&app, &csrf, &b_url, "").await;
    let res = app.admin_post(&format!("/admin/endpoints/{a_id}/test"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let got = a.received();
    assert_eq!(got.len(), 1);
    assert_eq!(kind(&got[0]), "endpoint.test", "sent even though its filter does not name the type");
    assert!(verifies(&got[0], &a_secret));
    assert_eq!(b.count(), 0, "only the endpoint tested");
    let page = app.page(&format!("/admin/endpoints/{a_id}")).await;
    assert!(page.contains("notice ok") && text_of(&page, "flash").contains("HTTP 200"), "{page}");

    a.push_reply(Reply::Status(500));
    a.set_body("database down");
    app.admin_post(&format!("/admin/endpoints/{a_id}/test"), &[("csrf", &csrf)]).await;
    let flash = app.page(&format!("/admin/endpoints/{a_id}")).await;
    assert!(flash.contains("notice bad"));
    let flash = text_of(&flash, "flash");
    assert!(flash.contains("HTTP 500") && flash.contains("database down"), "{flash}");
    assert_eq!(a.count(), 2, "not retried");
    let tests = audit(&app).await.into_iter().filter(|(_, action, _)| action == "endpoint_test").count();
    assert_eq!(tests, 2);
    assert_eq!(app.event_count().await, 0, "a test is not an event in the queue");
}

/// Record attempts for the endpoint's (only) delivery: (minutes ago, duration ms, outcome).
async fn attempts(app: &TestApp, delivery: i64, rows: &[(i64, i64, &str)]) {
    for (ago, ms, outcome) in rows {
        sqlx::query(
            "insert into delivery_attempts (delivery_id, started_at, duration_ms, outcome) values ($1, $2, $3, $4)",
        )
        .bind(delivery)
        .bind(now_ms() - ago * 60_000)
        .bind(ms)
        .bind(*outcome)
        .execute(app.state.store.pool())
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_console_shows_each_endpoints_success_rate_and_latency_over_the_last_hour_and_day() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let (_, url) = receiver();
    let (id, _) = console_add(&app, &csrf, &url, "").await;
    let (_, quiet_url) = receiver();
    let (quiet, _) = console_add(&app, &csrf, &quiet_url, "Review_Signed").await;
    // Disabled, so the delivery waits and only the attempts written below exist.
    app.admin_post(&format!("/admin/endpoints/{id}/disable"), &[("csrf", &csrf)]).await;
    app.connect_company(6847).await;
    let event = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let delivery = app.state.store.event_deliveries(app.event(&event).await.rowid).await.unwrap();
    let delivery = delivery.iter().find(|d| d.endpoint_id == id).unwrap().id;
    // The last hour: ten attempts of 10..100 ms, seven of them good.
    let hour: Vec<(i64, i64, &str)> = (1..=10).map(|i| (i, i * 10, if i <= 7 { "done" } else { "retry" })).collect();
    attempts(&app, delivery, &hour).await;
    // Earlier today: ten slow good ones; three days ago: counted nowhere.
    attempts(&app, delivery, &[(120, 1000, "done"); 10]).await;
    attempts(&app, delivery, &[(3 * 1440, 5, "retry"); 5]).await;

    let stats = app.state.store.endpoint_stats(now_ms() - 3_600_000).await.unwrap();
    let h = stats[&id];
    assert_eq!((h.attempts, h.succeeded, h.p50_ms, h.p95_ms), (10, 7, Some(50), Some(100)));
    let page = app.page(&format!("/admin/endpoints/{id}")).await;
    assert_eq!(text_of(&page, "hour"), "70 % of 10 ok · p50 50 ms · p95 100 ms");
    assert_eq!(text_of(&page, "day"), "85 % of 20 ok · p50 100 ms · p95 1000 ms");
    let quiet = app.page(&format!("/admin/endpoints/{quiet}")).await;
    assert_eq!(text_of(&quiet, "hour"), "no attempts");
    assert_eq!(text_of(&quiet, "last-result"), "never tried");
    let list = app.page("/admin/endpoints").await;
    assert!(list.contains("70 % of 10 ok") && list.contains("85 % of 20 ok"), "{list}");
}

#[tokio::test]
async fn a_failing_endpoint_stands_out_with_its_badge_and_last_error() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let (bad, bad_url) = receiver();
    let (_, good_url) = receiver();
    let (bad_id, _) = console_add(&app, &csrf, &bad_url, "").await;
    let (good_id, _) = console_add(&app, &csrf, &good_url, "").await;
    for _ in 0..3 {
        bad.push_reply(Reply::Status(503));
    }
    app.connect_company(6847).await;
    app.state.worker.drain().await.unwrap();
    let page = app.page(&format!("/admin/endpoints/{bad_id}")).await;
    assert_eq!(text_of(&page, "state"), "failing");
    assert!(text_of(&page, "last-error").contains("HTTP 503"), "{page}");
    assert!(text_of(&page, "hour").starts_with("0 % of 3 ok"), "{}", text_of(&page, "hour"));
    let good = app.page(&format!("/admin/endpoints/{good_id}")).await;
    assert_eq!(text_of(&good, "state"), "enabled");
    assert_eq!(text_of(&good, "last-error"), "none");
    let list = app.page("/admin/endpoints").await;
    let row = |id: &str| {
        let row = &list[list.find(&format!("id=\"row-{id}\"")).unwrap()..];
        row[..row.find("</tr>").unwrap()].to_owned()
    };
    assert!(
        row(&bad_id).contains("badge failing")
            && row(&bad_id).contains("failed")
            && row(&bad_id).contains("(HTTP 503)")
    );
    assert!(row(&good_id).contains("badge enabled") && row(&good_id).contains("<td>ok "), "{}", row(&good_id));
}

async fn api(app: &TestApp, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}/api/v1{path}", app.addr)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_creates_reads_changes_rotates_and_deletes_an_endpoint() {
    use reqwest::Method;
    let app = spawn_app().await;
    let (_, key) = app.api_key("ops").await;
    let (r, url) = receiver();
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/endpoints", app.addr))
        .bearer_auth(&key)
        .json(&json!({ "url": url, "events": ["Review_Signed"], "description": "warehouse" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store", "it holds the secret");
    let id_loc = location(&res);
    let made: Value = res.json().await.unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(id_loc, format!("/api/v1/endpoints/{id}"));
    assert_eq!(
        (made["url"].as_str(), made["events"].clone(), made["enabled"].clone()),
        (Some(url.as_str()), json!(["Review_Signed"]), json!(true))
    );

    let res = app.api_get(&format!("/api/v1/endpoints/{id}"), Some(&key)).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, one) = api(&app, Method::GET, &format!("/endpoints/{id}"), &key, None).await;
    assert_eq!(status, 200);
    assert_eq!(one["description"], "warehouse");
    assert!(one.get("secret").is_none(), "the secret is never read back");
    let (_, all) = api(&app, Method::GET, "/endpoints", &key, None).await;
    assert_eq!(all["endpoints"].as_array().unwrap().len(), 1);
    assert!(!all.to_string().contains(&secret));

    app.connect_company(6847).await;
    let signed = app.send_event(SIGNED).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].webhook_id, signed.as_str());
    assert!(verifies(&got[0], &secret), "the secret from the API verifies");

    let (status, changed) =
        api(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, Some(json!({ "events": [], "enabled": false })))
            .await;
    assert_eq!(status, 200);
    assert_eq!(
        (changed["events"].clone(), changed["enabled"].clone(), changed["description"].clone()),
        (json!([]), json!(false), json!("warehouse"))
    );
    let created = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(r.count(), 1, "disabled: waits");
    let (_, changed) = api(
        &app,
        Method::PATCH,
        &format!("/endpoints/{id}"),
        &key,
        Some(json!({ "enabled": true, "description": "dw" })),
    )
    .await;
    assert_eq!((changed["enabled"].clone(), changed["description"].clone()), (json!(true), json!("dw")));
    app.state.worker.drain().await.unwrap();
    assert!(r.received().iter().any(|d| d.webhook_id == created.as_str()), "resumed after enabling");

    let before = now_ms();
    let (status, rotated) =
        api(&app, Method::POST, &format!("/endpoints/{id}/rotate-secret"), &key, Some(json!({ "overlap_secs": 3600 })))
            .await;
    assert_eq!(status, 200);
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != secret);
    assert!(rotated["previous_secret_until"].is_string());
    let until = app.state.store.endpoints().await.unwrap()[0].previous_until.unwrap();
    assert!((before + 3_600_000..=now_ms() + 3_600_000).contains(&until));
    r.clear();
    // Another review (the same body again would be dropped as a duplicate).
    app.send_event(&SIGNED.replace("\"iInsReviewID\": 5", "\"iInsReviewID\": 6")).await;
    app.state.worker.drain().await.unwrap();
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert!(verifies(&got[0], &secret) && verifies(&got[0], &new), "signed with both during the overlap");
    // No body: the old secret keeps signing for a day.
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/endpoints/{id}/rotate-secret", app.addr))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let until = app.state.store.endpoints().await.unwrap()[0].previous_until.unwrap();
    assert!(until >= before + 86_400_000 && until <= now_ms() + 86_400_000);
    let (_, zero) =
        api(&app, Method::POST, &format!("/endpoints/{id}/rotate-secret"), &key, Some(json!({ "overlap_secs": 0 })))
            .await;
    assert!(zero["previous_secret_until"].is_null());

    let (status, _) = api(&app, Method::DELETE, &format!("/endpoints/{id}"), &key, None).await;
    assert_eq!(status, 204);
    let (status, gone) = api(&app, Method::GET, &format!("/endpoints/{id}"), &key, None).await;
    assert_eq!((status, gone["error"].as_str()), (404, Some("endpoint_not_found")));
    let actions: Vec<String> =
        audit(&app).await.into_iter().filter(|(a, _, _)| a == "api:ops").map(|(_, b, _)| b).collect();
    assert_eq!(
        actions,
        [
            "endpoint_add",
            // The first change: the events (an edit), then the state.
            "endpoint_edit",
            "endpoint_disable",
            "endpoint_edit",
            "endpoint_enable",
            "endpoint_rotate_secret",
            "endpoint_rotate_secret",
            "endpoint_rotate_secret",
            "endpoint_remove"
        ]
    );
}

#[tokio::test]
async fn endpoint_api_errors_are_json_with_stable_codes() {
    use reqwest::Method;
    let app = spawn_app().await;
    let (_, key) = app.api_key("ops").await;
    for (body, code) in [
        (json!({ "url": "ftp://example.com/" }), "invalid_url"),
        (json!({ "url": "http://10.0.0.7/hooks" }), "invalid_url"),
        (json!({ "url": "https://example.com/", "events": ["a b"] }), "invalid_events"),
        (json!({ "url": "https://example.com/", "events": ["a,b"] }), "invalid_events"),
        (json!({ "url": "https://example.com/", "description": "d".repeat(501) }), "invalid_description"),
        (json!({ "url": "https://example.com/", "description": "ok\nFORGED line" }), "invalid_description"),
        (json!({ "url": "https://example.com/", "description": "\t" }), "invalid_description"),
        (json!({ "url": "https://example.com/a%3" }), "invalid_url"),
        (json!({ "url": "https://example.com/a?b=%zz" }), "invalid_url"),
        (json!({ "url": "https://example.com/", "colour": "red" }), "bad_json"),
        (json!({ "events": [] }), "bad_json"),
    ] {
        let (status, v) = api(&app, Method::POST, "/endpoints", &key, Some(body.clone())).await;
        assert_eq!((status, v["error"].as_str()), (400, Some(code)), "{body}");
        assert!(v["message"].is_string());
    }
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/endpoints", app.addr))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_json");
    assert!(app.state.store.endpoints().await.unwrap().is_empty());

    let (_, made) = api(&app, Method::POST, "/endpoints", &key, Some(json!({ "url": "https://example.com/h" }))).await;
    let id = made["id"].as_str().unwrap();
    let (status, v) = api(
        &app,
        Method::POST,
        &format!("/endpoints/{id}/rotate-secret"),
        &key,
        Some(json!({ "overlap_secs": 2_592_001 })),
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_overlap")));
    let (status, v) =
        api(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, Some(json!({ "url": "http://[::1]/x" }))).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_url")));
    assert_eq!(app.state.store.endpoints().await.unwrap()[0].url, "https://example.com/h");
    // The limits themselves are allowed.
    let longest = format!("https://example.com/{}", "a".repeat(2000 - 20));
    let body = json!({ "url": longest, "description": "d".repeat(500) });
    let (status, _) = api(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, Some(body)).await;
    assert_eq!(status, 200);
    let body = json!({ "url": format!("{longest}a") });
    let (status, v) = api(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, Some(body)).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_url")));
    let types: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let body = json!({ "events": types });
    let (status, v) = api(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, Some(body)).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_events")));
    let body = json!({ "events": types[..100] });
    let (status, v) = api(&app, Method::PATCH, &format!("/endpoints/{id}"), &key, Some(body)).await;
    assert_eq!((status, v["events"].as_array().map(Vec::len)), (200, Some(100)));
    let body = json!({ "overlap_secs": 2_592_000 });
    let (status, _) = api(&app, Method::POST, &format!("/endpoints/{id}/rotate-secret"), &key, Some(body)).await;
    assert_eq!(status, 200);
    for path in ["/endpoints/ep_aaaaaaaaaaaaaaaaaaaaaaaaaa", "/endpoints/nonsense"] {
        let (status, v) = api(&app, Method::GET, path, &key, None).await;
        assert_eq!((status, v["error"].as_str()), (404, Some("endpoint_not_found")), "{path}");
        let (status, _) = api(&app, Method::DELETE, path, &key, None).await;
        assert_eq!(status, 404);
    }
    let (status, v) = api(&app, Method::GET, "/endpoints", "chk_wrong", None).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_api_key")));
}

#[tokio::test]
async fn read_only_keys_may_only_read_endpoints_and_connection_scoped_keys_may_not_touch_them() {
    use reqwest::Method;
    let app = spawn_app().await;
    let (_, admin) = app.api_key("ops").await;
    let (_, made) =
        api(&app, Method::POST, "/endpoints", &admin, Some(json!({ "url": "https://example.com/h" }))).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let connection = app.connect_company(6847).await;
    let scope = |connections, read_only| KeyScope { connections, read_only };
    let (_, read_only) = app.state.api_keys.create_scoped("reader", &scope(None, true), "test").await.unwrap();
    let read_only = secrecy::ExposeSecret::expose_secret(&read_only).to_owned();
    let (_, scoped) =
        app.state.api_keys.create_scoped("one", &scope(Some(vec![connection]), false), "test").await.unwrap();
    let scoped = secrecy::ExposeSecret::expose_secret(&scoped).to_owned();

    let writes = [
        (Method::POST, "/endpoints".to_owned(), Some(json!({ "url": "https://example.com/other" }))),
        (Method::PATCH, format!("/endpoints/{id}"), Some(json!({ "enabled": false }))),
        (Method::POST, format!("/endpoints/{id}/rotate-secret"), Some(json!({}))),
        (Method::DELETE, format!("/endpoints/{id}"), None),
    ];
    let reads = [(Method::GET, "/endpoints".to_owned(), None), (Method::GET, format!("/endpoints/{id}"), None)];
    for (m, path, body) in &reads {
        assert_eq!(api(&app, m.clone(), path, &read_only, body.clone()).await.0, 200, "{path}");
    }
    for (m, path, body) in &writes {
        let (status, v) = api(&app, m.clone(), path, &read_only, body.clone()).await;
        assert_eq!((status, v["error"].as_str()), (403, Some("read_only_key")), "{m} {path}");
    }
    for (m, path, body) in reads.iter().chain(&writes) {
        let (status, v) = api(&app, m.clone(), path, &scoped, body.clone()).await;
        assert_eq!((status, v["error"].as_str()), (403, Some("connection_scoped_key")), "{m} {path}");
    }
    let all = app.state.store.endpoints().await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].enabled && all[0].previous_until.is_none(), "nothing changed");
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoints_operation_and_its_statuses() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let expect = [
        ("/endpoints", "get", &["200", "401", "403", "413", "429"][..], None),
        ("/endpoints", "post", &["201", "400", "401", "403", "409", "413", "429"], Some("NewEndpoint")),
        ("/endpoints/{id}", "get", &["200", "401", "403", "404", "413", "429"], None),
        ("/endpoints/{id}", "patch", &["200", "400", "401", "403", "404", "413", "429"], Some("EndpointChange")),
        ("/endpoints/{id}", "delete", &["204", "401", "403", "404", "409", "413", "429"], None),
        (
            "/endpoints/{id}/rotate-secret",
            "post",
            &["200", "400", "401", "403", "404", "413", "429"],
            Some("RotateSecret"),
        ),
    ];
    for (path, method, statuses, body) in expect {
        let op = &doc["paths"][path][method];
        assert!(op["operationId"].is_string(), "{method} {path}");
        let mut got: Vec<&str> = op["responses"].as_object().unwrap().keys().map(String::as_str).collect();
        got.sort();
        assert_eq!(got, statuses, "{method} {path}");
        if let Some(schema) = body {
            let r = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap();
            assert_eq!(r, format!("#/components/schemas/{schema}"));
        }
    }
    for schema in ["Endpoint", "EndpointWithSecret", "NewEndpoint", "EndpointChange", "RotateSecret"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // Every field the API answers with is described.
    let (_, key) = app.api_key("doc").await;
    let (_, made) =
        api(&app, reqwest::Method::POST, "/endpoints", &key, Some(json!({ "url": "https://example.com/" }))).await;
    let described = doc["components"]["schemas"]["Endpoint"]["properties"].as_object().unwrap();
    for field in made.as_object().unwrap().keys().filter(|k| *k != "secret") {
        assert!(described.contains_key(field), "{field} is not in the schema");
    }
}

#[tokio::test]
async fn a_stored_endpoint_reaching_loopback_without_the_allowance_is_refused_with_a_clear_error() {
    let app = spawn_app_with(|vars| {
        vars.remove("OUTBOUND_ALLOW_NETWORKS");
        crate::helpers::forwarding(vars);
    })
    .await;
    let (_, key) = app.api_key("ops").await;
    let (r, url) = receiver();
    // An address literal is refused when it is added.
    let (status, v) = api(&app, reqwest::Method::POST, "/endpoints", &key, Some(json!({ "url": url }))).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_url")));
    assert!(v["message"].as_str().unwrap().contains("loopback"));
    // A name is accepted, and refused on what it resolves to when delivering.
    let by_name = url.replace("127.0.0.1", "localhost");
    let (status, _) = api(&app, reqwest::Method::POST, "/endpoints", &key, Some(json!({ "url": by_name }))).await;
    assert_eq!(status, 201);
    app.connect_company(6847).await;
    let event = app.send_event(SIGNED).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(r.count(), 0, "the receiver heard nothing");
    let deliveries = app.state.store.event_deliveries(app.event(&event).await.rowid).await.unwrap();
    let stored = deliveries.iter().find(|d| d.endpoint_id != "ep_forward").unwrap();
    let tries = app.state.store.delivery_attempts(stored.id).await.unwrap();
    assert!(!tries.is_empty());
    for a in &tries {
        let error = a.error.as_deref().unwrap_or_default();
        assert!(error.contains("loopback") && error.contains("OUTBOUND_ALLOW_NETWORKS"), "{error}");
    }
    // The operator's FORWARD_URL is trusted: it still gets the event.
    let forward = deliveries.iter().find(|d| d.endpoint_id == "ep_forward").unwrap();
    assert_eq!(forward.state, "done");
    assert!(app.receiver.received().iter().any(|d| d.webhook_id == event.as_str()));
}

#[tokio::test]
async fn an_endpoint_with_a_blocked_address_literal_already_stored_is_not_called() {
    let app = spawn_app_with(|vars| {
        vars.remove("OUTBOUND_ALLOW_NETWORKS");
    })
    .await;
    let (r, url) = receiver();
    // Stored before the allowance was withdrawn (here: straight through the store).
    let id = connect_hub::domain::endpoint::EndpointId::generate();
    let secret = connect_hub::domain::endpoint::generate_secret();
    let new = connect_hub::store::NewEndpoint {
        id: &id,
        url: &connect_hub::domain::endpoint::EndpointUrl::parse(&url).unwrap(),
        description: "",
        event_types: &Default::default(),
        secret: &secret,
    };
    app.state.store.create_endpoint(&new, now_ms(), "test").await.unwrap();
    app.connect_company(6847).await;
    let event = app.send_event(SIGNED).await;
    app.state.worker.drain().await.unwrap();
    assert_eq!(r.count(), 0);
    let d = &app.state.store.event_deliveries(app.event(&event).await.rowid).await.unwrap()[0];
    assert_eq!(d.state, "dead", "retried on the schedule, then given up");
    let error = d.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("127.0.0.1") && error.contains("loopback"), "{error}");
    // The console's test send is refused the same way, with the reason.
    let csrf = app.sign_in().await;
    app.admin_post(&format!("/admin/endpoints/{id}/test"), &[("csrf", &csrf)]).await;
    let flash = text_of(&app.page(&format!("/admin/endpoints/{id}")).await, "flash");
    assert!(flash.contains("loopback"), "{flash}");
    assert_eq!(r.count(), 0);
}

#[tokio::test]
async fn the_forward_url_endpoint_keeps_its_trusted_url_but_its_filter_and_description_may_change() {
    use reqwest::Method;
    // Without the allowance: the operator's loopback FORWARD_URL is trusted, and stays editable.
    let app = spawn_app_with(|vars| {
        vars.remove("OUTBOUND_ALLOW_NETWORKS");
        crate::helpers::forwarding(vars);
    })
    .await;
    let (_, key) = app.api_key("ops").await;
    let body = json!({ "url": "https://example.com/elsewhere" });
    let (status, v) = api(&app, Method::PATCH, "/endpoints/ep_forward", &key, Some(body)).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_url")));
    assert!(v["message"].as_str().unwrap().contains("FORWARD_URL"));
    let body = json!({ "description": "the old receiver", "events": ["Review_Signed"] });
    let (status, v) = api(&app, Method::PATCH, "/endpoints/ep_forward", &key, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["url"], app.vars["TEST_RECEIVER_URL"].as_str());
    assert_eq!(v["events"], json!(["Review_Signed"]));
}

#[tokio::test]
async fn endpoint_pages_need_a_signed_in_admin() {
    let app = spawn_app().await;
    let (_, url) = receiver();
    let (_, key) = app.api_key("ops").await;
    let (_, made) = api(&app, reqwest::Method::POST, "/endpoints", &key, Some(json!({ "url": url }))).await;
    let id = made["id"].as_str().unwrap();
    for path in [
        "/admin/endpoints".to_owned(),
        "/admin/endpoints/new".to_owned(),
        format!("/admin/endpoints/{id}"),
        format!("/admin/endpoints/{id}/edit"),
        format!("/admin/endpoints/{id}/remove"),
    ] {
        let res = app.get(&path).await;
        assert_eq!(res.status(), 303, "{path}");
        assert!(location(&res).starts_with("/admin/login?next="), "{path}");
    }
    for action in ["enable", "disable", "rotate", "test", "remove", "edit"] {
        let res = app.admin_post(&format!("/admin/endpoints/{id}/{action}"), &[("csrf", "x"), ("overlap", "1h")]).await;
        assert_eq!(res.status(), 401, "{action}");
    }
    assert_eq!(app.admin_post("/admin/endpoints/new", &[("url", "https://example.com/")]).await.status(), 401);
    let all = app.state.store.endpoints().await.unwrap();
    assert_eq!((all.len(), all[0].enabled, all[0].previous_until), (1, true, None));
}
