//! The console's forms and lists in a real browser (issue 21): a long name stays inside the
//! Connections list, a misspelt event type is warned about beside its field, a malformed sign-in
//! is answered beside the field, and the status model's badges. Screenshots are kept.

use connect_hub::{client_credentials::CredentialsInput, domain::Provider};

use super::browser::Browser;
use crate::helpers::{spawn_app, ADMIN_EMAIL, ADMIN_PASSWORD};

#[tokio::test]
async fn long_names_stay_on_screen_and_forms_answer_beside_their_fields_in_a_real_browser() {
    let app = spawn_app().await;
    let Some(mut b) = Browser::start("forms").await else { return };
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // A malformed email is answered beside the field, and is not a failed sign-in.
    b.goto(&format!("{}/admin/login", app.addr)).await;
    b.type_into("#email", "admin@localhost").await;
    b.type_into("#password", "anything at all").await;
    b.click("#sign-in").await;
    assert_eq!(b.text("#email-error").await, "Enter your email address as name@example.com.");
    b.screenshot("sign-in-malformed").await;
    b.goto(&format!("{}/admin/login", app.addr)).await;
    b.type_into("#email", ADMIN_EMAIL).await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("#sign-in").await;
    assert!(b.current_url().await.ends_with("/admin"), "signed in");

    // The longest name allowed, with no spaces to break at, and a never-used connection.
    let settings = CredentialsInput {
        client_id: "id".into(),
        token_url: Some("http://127.0.0.1:9/token".into()),
        scope: Some("identify".into()),
        ..Default::default()
    }
    .resolve(Provider::Signicat)
    .unwrap();
    let name = "Northside-Signicat-production-".repeat(7)[..200].to_owned();
    let secret = secrecy::SecretString::from("secret".to_owned());
    app.state
        .store
        .add_credentials_connection(&name, &settings, &secret, connect_hub::time::now_ms(), "test")
        .await
        .unwrap();
    app.connect_company(6847).await;
    for (width, height) in [(1280, 900), (375, 812)] {
        b.resize(width, height).await;
        b.goto(&format!("{}/admin/connections", app.addr)).await;
        // At a laptop's width the whole table fits its card; on a phone the page never scrolls
        // sideways (the table scrolls inside its card, as every console table does there).
        let what = if width > 1000 { "#connections" } else { "main" };
        assert!(b.fits(what).await, "the Connections list stays on screen at {width} px");
        b.screenshot(&format!("connections-{width}")).await;
        b.goto(&format!("{}/admin", app.addr)).await;
        assert!(b.fits("main").await, "the dashboard fits at {width} px");
        b.screenshot(&format!("dashboard-{width}")).await;
    }
    b.resize(1280, 900).await;
    b.goto(&format!("{}/admin/connections?status=not_yet_used", app.addr)).await;
    assert_eq!(b.text("#connections tbody .badge").await, "not yet used");
    b.click("#connections tbody a").await;
    assert_eq!(b.text("#status").await, "not yet used");
    assert!(b.fits("main").await, "the connection's page fits");

    // A misspelt event type: warned beside the field, kept on the second Save.
    b.goto(&format!("{}/admin/endpoints/new", app.addr)).await;
    b.type_into("#url", "http://127.0.0.1:9/hooks").await;
    b.type_into("#events", "Review_Sgined").await;
    b.click("#save").await;
    let warning = b.text("#events-warning").await;
    assert!(warning.contains("Did you mean Review_Signed?"), "{warning}");
    b.screenshot("endpoint-warning").await;
    b.click("#save").await;
    assert!(b.text("main").await.contains("whsec_"), "saved: the secret page");
    b.quit().await;
}
