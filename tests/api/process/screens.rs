//! The small screens of issue 21 in a real browser, each with its screenshot: the reconnect link
//! shown whole, the API-key form, a wrong-company reconnect, the console's 404, result widths.

use serde_json::{json, Value};

use super::browser::Browser;
use crate::helpers::spawn_app;

/// The width in CSS pixels of the first element matching `css`.
async fn width(b: &Browser, css: &str) -> f64 {
    b.find(css).await;
    b.run("return document.querySelector(arguments[0]).getBoundingClientRect().width;", json!([css]))
        .await
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn the_reconnect_link_is_shown_whole_in_a_read_only_box_to_copy_from() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    app.fake.revoke_grant(6847);
    assert!(app.state.tokens.refresh(&id, "test").await.is_err(), "the connection needs reconnecting now");
    let Some(mut b) = Browser::start("reconnect_link").await else { return };
    b.sign_in(&app).await;
    b.goto(&format!("{}/admin/connections/{id}", app.addr)).await;
    b.screenshot("connection-needing-reconnect").await;
    b.click("#get-reconnect-link").await;
    let url = b.value("#reconnect-url").await;
    assert!(url.starts_with(&format!("{}/connect/s/", app.addr)) && url.len() > 60, "{url}");
    let shown = b
        .run(
            "const t = document.querySelector('#reconnect-url'); \
             return [t.tagName, t.readOnly, t.scrollWidth <= t.clientWidth, t.scrollHeight <= t.clientHeight];",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!(["TEXTAREA", true, true, true]), "a read-only box showing the whole link");
    assert!(b.text("#copy-hint").await.contains("select all"));
    b.screenshot("reconnect-link-1280").await;
    b.resize(375, 812).await;
    b.refresh().await;
    b.screenshot("reconnect-link-375").await;
    b.quit().await;
}

#[tokio::test]
async fn the_api_key_form_picks_connections_from_a_list_and_keeps_what_was_typed_after_a_refusal() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    app.connect_company(7012).await;
    let Some(mut b) = Browser::start("api_key_form").await else { return };
    b.sign_in(&app).await;
    b.goto(&format!("{}/admin/api-keys", app.addr)).await;
    assert_eq!(b.count("#new-key-form [placeholder]").await, 0, "no placeholder to be cut off");
    // The checkbox sits on its label's line, just before its words.
    let beside = b
        .run(
            "const i = document.querySelector('#read_only'), t = i.closest('label').querySelector('span'); \
             const a = i.getBoundingClientRect(), w = t.getBoundingClientRect(); \
             return w.left >= a.right && w.left - a.right < 16 && a.top < w.bottom && w.top < a.bottom;",
            json!([]),
        )
        .await;
    assert_eq!(beside, Value::Bool(true), "the read-only checkbox is beside its label");
    assert_eq!(b.count("#connection-choices input[type=checkbox]").await, 2, "one box per connection");
    b.screenshot("api-key-form").await;

    // A name of spaces is refused; the ticks stay.
    b.type_into("#name", "   ").await;
    b.click(&format!("#connection-choices input[value='{id}']")).await;
    b.click("#read_only").await;
    b.click("#create-key").await;
    assert!(b.text("#key-error").await.contains("Give the key a name"));
    let kept = b
        .run(
            "return [document.querySelector('#name').value, \
             document.querySelector(`#connection-choices input[value='${arguments[0]}']`).checked, \
             document.querySelectorAll('#connection-choices input:checked').length, \
             document.querySelector('#read_only').checked];",
            json!([id.as_str()]),
        )
        .await;
    assert_eq!(kept, json!(["   ", true, 1, true]), "what was typed and ticked is kept");
    b.screenshot("api-key-form-refused").await;

    b.clear("#name").await;
    b.type_into("#name", "warehouse").await;
    b.click("#create-key").await;
    assert!(b.text("#new-key").await.starts_with("chk_"));
    let keys = app.state.api_keys.list().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].connection_scope.as_deref(), Some(id.as_str()), "limited to the ticked connection");
    assert!(keys[0].read_only);
    b.screenshot("api-key-created").await;
    b.quit().await;
}

#[tokio::test]
async fn a_wrong_company_reconnect_says_to_ask_for_a_new_link_on_a_page_as_wide_as_the_start_page() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let (_, key) = app.api_key("crm").await;
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/connections/{id}/reconnect-session", app.addr))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let link = res.json::<Value>().await.unwrap()["connect_url"].as_str().unwrap().to_owned();
    let Some(mut b) = Browser::start("wrong_company").await else { return };
    b.goto(&format!("{}/", app.addr)).await;
    let start = width(&b, "main > .card").await;
    assert_eq!(start, 640.0, "the landing card is 640 px");
    b.goto(&link).await;
    b.click("#continue").await;
    b.click("#company option[value='7012']").await;
    b.click("#allow").await;
    assert!(b.text("#reason").await.contains("ask for a new link"));
    assert_eq!(b.count("#try-again").await, 0, "no Try again that would start a new public connect");
    assert_eq!(width(&b, "main > .card").await, start, "the result page is as wide as the landing page");
    b.screenshot("wrong-company-1280").await;

    // The success page too.
    b.goto(&format!("{}/", app.addr)).await;
    b.click("#connect-snapinspect").await;
    b.click("#company option[value='9001']").await;
    b.click("#allow").await;
    assert!(b.text("#linked-company").await.contains("Coastal Strata Management"));
    assert_eq!(width(&b, "main > .card").await, start, "the connected page is as wide as the landing page");
    b.screenshot("connected-1280").await;
    b.quit().await;
}

#[tokio::test]
async fn an_unknown_console_address_gets_the_consoles_own_404_page() {
    let app = spawn_app().await;
    // Not signed in: the console's page, pointing to sign-in.
    let res = app.get("/admin/nope").await;
    assert_eq!(res.status(), 404);
    let page = res.text().await.unwrap();
    assert!(page.contains("There is no such page in the console."), "{page}");
    assert!(page.contains("id=\"error-back\"") && page.contains("href=\"/admin/login\""), "{page}");
    let Some(mut b) = Browser::start("admin_404").await else { return };
    b.sign_in(&app).await;
    b.goto(&format!("{}/admin/nope/deeper", app.addr)).await;
    assert_eq!(
        b.text("#error-message").await,
        "There is no such page in the console. Check the address, or start from the dashboard."
    );
    assert_eq!(b.count("nav[aria-label='Admin sections'] a").await, 6, "with the console's navigation");
    b.screenshot("admin-404").await;
    b.quit().await;
}
