//! Issue 21's leftovers after the four branches met: the events filter and the dashboard count by
//! the shown statuses, the CLI warns like the console, and the console's own pages everywhere.

use crate::helpers::{spawn_app, spawn_app_with_a_retrying_delivery};

/// The count in the dashboard's row whose link is `href`.
fn dashboard_count(page: &str, href: &str) -> String {
    let row = page.split(&format!("href=\"{href}\"")).nth(1).unwrap_or_else(|| panic!("no {href} in {page}"));
    row.split("class=\"num\">").nth(1).unwrap().split('<').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_events_filter_and_the_dashboard_take_the_delivery_statuses_the_screens_show() {
    let (app, event) = spawn_app_with_a_retrying_delivery().await;
    assert_eq!(app.event(&event).await.worst_delivery.as_deref(), Some("retrying"));
    let link = format!("/admin/events/{}", event.as_str());
    app.sign_in().await;

    let res = app.get("/admin/events?status=delivery_retrying").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains(&link), "{page}");
    assert!(page.contains("<option value=\"delivery_retrying\" selected>"), "{page}");
    for other in ["done", "delivering", "delivery_dead"] {
        let res = app.get(&format!("/admin/events?status={other}")).await;
        assert_eq!(res.status(), 200, "{other} is a status the filter takes");
        assert!(!res.text().await.unwrap().contains(&link), "not listed as {other}");
    }
    let res = app.get("/admin/events?status=nope").await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("delivery_retrying"), "the error names the statuses");

    let dashboard = app.page("/admin").await;
    assert_eq!(dashboard_count(&dashboard, "/admin/events?status=delivery_retrying"), "1");
    // `connection.created` is the one done event; the retrying one is not counted there.
    assert_eq!(dashboard_count(&dashboard, "/admin/events?status=done"), "1");

    let out = crate::helpers::hub(&app, &["events", "list", "--status", "delivery_retrying"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(event.as_str()));
    let out = crate::helpers::hub(&app, &["events", "list", "--status", "done"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(event.as_str()), "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "the header and connection.created: {stdout}");
}

#[tokio::test]
async fn an_api_key_name_is_bounded_in_characters_by_the_shared_limit_on_every_path() {
    let app = spawn_app().await;
    let max = connect_hub::domain::limits::LIMITS.api_key_name;
    // Two bytes a character: a byte count would refuse these names at half the bound.
    let longest = "é".repeat(max);
    let too_long = "é".repeat(max + 1);

    let out = crate::helpers::hub(&app, &["api-key", "create", "--name", &longest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = crate::helpers::hub(&app, &["api-key", "create", "--name", &too_long]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let says = format!("the API key name is {} characters long; the most is {max}", max + 1);
    assert!(stderr.contains(&says), "{stderr}");

    let csrf = app.sign_in().await;
    assert!(app.page("/admin/api-keys").await.contains(&format!("name=\"name\" required maxlength=\"{max}\"")));
    let res = app.admin_post("/admin/api-keys", &[("csrf", &csrf), ("name", &longest)]).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<pre id=\"new-key\">"));
    let res = app.admin_post("/admin/api-keys", &[("csrf", &csrf), ("name", &too_long)]).await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    assert!(page.contains(&format!("Give the key a name of 1 to {max} characters")), "{page}");
    assert!(app.state.api_keys.create(&too_long, "test").await.is_err(), "the key store refuses it too");
    let names: Vec<String> = app.state.api_keys.list().await.unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, [longest.clone(), longest], "the CLI's and the console's, whole");
}

#[tokio::test]
async fn a_wrong_method_on_a_console_address_gets_the_consoles_own_405_page() {
    let app = spawn_app().await;
    app.sign_in().await;
    let res = app.get("/admin/events/evt_nope/replay").await;
    assert_eq!(res.status(), 405);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = res.text().await.unwrap();
    assert!(page.contains("<h1 class=\"bad\">Not this way</h1>"), "{page}");
    assert!(page.contains("does not take a GET request"), "{page}");
    assert!(page.contains("<nav aria-label=\"Admin sections\">"), "with the console's navigation: {page}");
    assert!(page.contains("href=\"/admin/events\" id=\"error-back\">Back to events</a>"), "{page}");
    let res = app.client.delete(format!("{}/admin/api-keys", app.addr)).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let page = res.text().await.unwrap();
    assert!(page.contains("does not take a DELETE request"), "{page}");
    assert!(page.contains("href=\"/admin/api-keys\" id=\"error-back\""), "{page}");
}

#[tokio::test]
async fn a_100_kib_api_key_form_gets_the_consoles_413_page_and_makes_no_key() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let padding = "x".repeat(100 * 1024);
    let res = app.admin_post("/admin/api-keys", &[("csrf", &csrf), ("name", "warehouse"), ("pad", &padding)]).await;
    assert_eq!(res.status(), 413);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = res.text().await.unwrap();
    assert!(page.contains("<h1 class=\"bad\">Too large</h1>"), "{page}");
    assert!(page.contains("The form is larger than any form here can be."), "{page}");
    assert!(page.contains("href=\"/admin/api-keys\" id=\"error-back\""), "{page}");
    assert!(app.state.api_keys.list().await.unwrap().is_empty(), "no key was made");
    // A form within the limit still works.
    let res = app.admin_post("/admin/api-keys", &[("csrf", &csrf), ("name", "warehouse")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.state.api_keys.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_events_last_error_reads_as_a_sentence_with_the_providers_answer_folded_away() {
    let app = spawn_app().await;
    let event = app.send_event(crate::helpers::CREATE).await;
    let raw = r#"SnapInspect answered HTTP 503: {"error":"temporarily_unavailable","error_description":"Down for maintenance until 10:00"}"#;
    sqlx::query("update events set state = 'retrying', last_error = $1 where public_id = $2")
        .bind(raw)
        .bind(event.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    app.sign_in().await;
    let page = app.page(&format!("/admin/events/{}", event.as_str())).await;
    let cell = page.split("<dd id=\"last-error\">").nth(1).unwrap_or_else(|| panic!("{page}"));
    let (sentence, rest) = cell.split_once("<details").unwrap_or_else(|| panic!("no <details>: {cell}"));
    assert_eq!(sentence, "SnapInspect answered HTTP 503: Down for maintenance until 10:00.");
    let folded = rest.split("</details>").next().unwrap();
    assert!(folded.contains("<summary>The provider's answer</summary>"), "{folded}");
    let pre = folded.split("<pre>").nth(1).unwrap().split("</pre>").next().unwrap();
    assert_eq!(crate::helpers::unescape(pre), raw.trim_start_matches("SnapInspect answered "));
}

#[tokio::test]
async fn migrate_store_reads_the_duplicate_window_through_the_configuration_file_too() {
    let app = spawn_app().await;
    // The configuration file is read like the environment: a bad window there is refused first,
    // in the configuration's words, before either store is opened.
    std::fs::write(app.dir.path().join("connect-hub.toml"), "dedupe_window_secs = \"soon\"\n").unwrap();
    let from = format!("sqlite://{}", app.dir.path().join("nope.db").display());
    let out = crate::helpers::hub(&app, &["migrate-store", "--from", &from, "--to", "postgres://127.0.0.1:9/none"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEDUPE_WINDOW_SECS") && stderr.contains("`soon`"), "{stderr}");
    assert!(!stderr.contains("does not exist"), "refused before the source is looked at: {stderr}");
}
