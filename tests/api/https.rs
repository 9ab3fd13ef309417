//! HTTPS and the headers of every answer: the security headers on every page, HSTS when the public
//! URL is https, TLS served by the hub itself, and the plain listener that only redirects.

use crate::helpers::{location, spawn_app, spawn_app_with};

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
