//! The command line prints stored text from outside (receivers' answers, webhook fields, names) with
//! its control characters written out, so what it prints cannot rewrite the lines before it.

use crate::helpers::{forwarding, hub, spawn_app, spawn_app_with, TestApp};

/// Cursor up, erase the line, a forged line, a window title, a C1 CSI, a bidi override.
const EVIL: &str = "ok\x1b[1A\x1b[2Kforged\x1b]0;pwned\x07\u{9b}2K\u{202e}";

/// How `EVIL` reads once written out.
const SHOWN: &str = "ok\\u{1b}[1A\\u{1b}[2Kforged\\u{1b}]0;pwned\\u{7}\\u{9b}2K\\u{202e}";

/// Run a command; its stdout, after checking it succeeded and printed no control character
/// but the newlines between its lines.
fn printed(app: &TestApp, args: &[&str]) -> String {
    let out = hub(app, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let raw: Vec<char> = text.chars().filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}').collect();
    assert!(raw.is_empty(), "{args:?} printed {raw:?} as is:\n{text}");
    text
}

#[tokio::test]
async fn every_listing_writes_out_the_control_characters_of_what_it_read() {
    let app = spawn_app_with(forwarding).await;
    let conn = app.connect_company(6847).await;
    app.receiver.set_body(EVIL);
    let kind = "Create\\u001b[2K_Inspection";
    let id = app.send_event(&format!(r#"{{"sType":"{kind}","iInspectionID":1388563,"iCompanyID":6847}}"#)).await;
    app.state.worker.drain().await.unwrap();
    // What SnapInspect's `/user` or an admin named things, and what is stored, as it came.
    sqlx::query("update connections set name = $1 where id = $2")
        .bind(EVIL)
        .bind(conn.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    sqlx::query("update events set last_error = $1 where public_id = $2")
        .bind(EVIL)
        .bind(id.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    app.api_key(&format!("key {EVIL}")).await;
    let stored = app.state.store.event(&id).await.unwrap().unwrap();
    assert_eq!(stored.event_type.as_deref(), Some("Create\x1b[2K_Inspection"), "the store keeps it as received");

    let show = printed(&app, &["events", "show", id.as_str()]);
    assert!(show.contains(&format!("response: {SHOWN}")), "{show}");
    assert!(show.contains("type       Create\\u{1b}[2K_Inspection"), "{show}");
    assert!(show.contains(&format!("last error {SHOWN}")), "{show}");
    let list = printed(&app, &["events", "list"]);
    assert!(list.contains("Create\\u{1b}[2K_Inspect"), "{list}");
    let list = printed(&app, &["connections", "list"]);
    assert!(list.contains("6847 ok\\u{1b}[1A"), "{list}");
    let list = printed(&app, &["api-key", "list"]);
    assert!(list.contains("key ok\\u{1b}[1A"), "{list}");
    printed(&app, &["endpoints", "list"]);

    // An error quoting what it was given is written out alike, on stderr.
    let out = hub(&app, &["events", "list", "--status", "x\x1b[2Ky"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("`x\\u{1b}[2Ky`") && !err.contains('\x1b'), "{err}");
}

#[tokio::test]
async fn endpoints_list_shows_forty_characters_whole_and_cuts_what_is_longer() {
    let app = spawn_app().await;
    let exact = "https://example.com/aaaaaaaaaaaaaaaaaaaa";
    let long = "https://example.com/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    assert_eq!(exact.len(), 40);
    for url in [exact, long] {
        let out = printed(&app, &["endpoints", "add", "--url", url]);
        assert!(out.starts_with("ep_"), "{out}");
    }
    let list = printed(&app, &["endpoints", "list"]);
    assert!(list.contains(&format!("{exact}  ")), "{list}");
    assert!(list.contains(&format!("{}…  ", &long[..39])) && !list.contains(long), "{list}");
}
