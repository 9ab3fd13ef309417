//! The command line, run as the real binary against a test app's database and fake SnapInspect:
//! the connection commands, `serve` refusing what it cannot use, key rotation, and `demo`.

use std::{net::TcpListener, process::Command};

use secrecy::ExposeSecret;

use crate::helpers::{hub, spawn_app};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn connections_list_token_and_refresh_drive_the_token_manager_from_the_shell() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;

    let list = hub(&app, &["connections", "list"]);
    assert!(list.status.success(), "{list:?}");
    let text = stdout(&list);
    assert!(
        text.contains(id.as_str())
            && text.contains("snapinspect")
            && text.contains("6847 Harbour View Realty")
            && text.contains("active"),
        "{text}"
    );
    assert!(text.contains("never"), "no refresh yet: {text}");

    let token = hub(&app, &["connections", "token", id.as_str()]);
    assert!(token.status.success());
    assert_eq!(stdout(&token).trim(), connected.access_token);
    assert_eq!(app.fake.exchange_calls(), 0, "`token` does not exchange a token that is still valid");

    let refreshed = hub(&app, &["connections", "refresh", id.as_str()]);
    assert!(refreshed.status.success(), "{}", String::from_utf8_lossy(&refreshed.stderr));
    let new_token = stdout(&refreshed).trim().to_owned();
    assert_eq!(app.fake.exchanges(), 1);
    assert!(app.fake.is_valid_access_token(&new_token));
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert_eq!(stored.access.unwrap().expose_secret(), new_token);
    assert!(!stdout(&hub(&app, &["connections", "list"])).contains("never"));
}

#[tokio::test]
async fn an_unknown_connection_is_a_clear_error() {
    let app = spawn_app().await;
    let out = hub(&app, &["connections", "token", "con_aaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no connection with id"));
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_key_and_says_how_to_make_one() {
    let app = spawn_app().await;
    let out = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", &app.vars["DATABASE_URL"])
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("ENCRYPTION_KEY is missing") && err.contains("generate-key"), "{err}");
}

#[tokio::test]
async fn serve_refuses_a_malformed_key() {
    let app = spawn_app().await;
    let out = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .arg("serve")
        .env_clear()
        .env("ENCRYPTION_KEY", "dG9vIHNob3J0")
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ENCRYPTION_KEY decodes to 9 bytes, but 32"), "{err}");
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
async fn rotate_key_and_migrate_work_from_the_shell() {
    let mut app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    let old = app.vars["ENCRYPTION_KEY"].clone();
    app.vars.insert("ENCRYPTION_KEY".into(), connect_hub::crypto::generate_key_b64(32));
    app.vars.insert("ENCRYPTION_KEYS_OLD".into(), old);
    let out = hub(&app, &["rotate-key"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("re-encrypted 2 values"), "{}", stdout(&out));
    app.vars.remove("ENCRYPTION_KEYS_OLD");
    let token = hub(&app, &["connections", "token", id.as_str()]);
    assert_eq!(stdout(&token).trim(), connected.access_token, "readable with the new key alone");
    let migrate = hub(&app, &["migrate"]);
    assert!(migrate.status.success());
}

/// A `demo` process, killed when the test ends however it ends.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_prints_the_line_that_lets_the_cli_use_its_database_and_keys() {
    use std::{
        io::BufRead,
        process::{Command, Stdio},
        sync::mpsc,
        time::{Duration, Instant},
    };
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["demo", "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("demo-data"))
        .env_remove("ENCRYPTION_KEY")
        .env_remove("DATABASE_URL")
        .env_remove("CONNECT_HUB_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let export = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the demo prints an export line before the deadline");
        if let Some(rest) = line.trim().strip_prefix("export CONNECT_HUB_CONFIG=") {
            break rest.to_owned();
        }
    };
    assert!(std::path::Path::new(&export).is_absolute(), "works from any directory: {export}");

    // From another directory, with nothing but that line, the CLI sees the demo's connections.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["connections", "list"])
        .current_dir(elsewhere.path())
        .env_remove("ENCRYPTION_KEY")
        .env_remove("DATABASE_URL")
        .env("CONNECT_HUB_CONFIG", &export)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["Snapdocs (demo, fake)", "Signicat (demo, fake)", "Docplanner (demo, fake)"] {
        assert!(stdout.contains(name), "{stdout}");
    }

    // The proxy works on the demo out of the box: a key from the CLI, a call through the hub to
    // the fake Signicat's API.
    let out = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["api-key", "create", "--name", "demo-proxy"])
        .current_dir(elsewhere.path())
        .env_remove("ENCRYPTION_KEY")
        .env_remove("DATABASE_URL")
        .env("CONNECT_HUB_CONFIG", &export)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let list: serde_json::Value =
        http.get(format!("{base}/api/v1/connections")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    let signicat = list["connections"].as_array().unwrap().iter().find(|c| c["provider"] == "signicat").unwrap();
    assert_eq!(signicat["api_url"], format!("{base}/fake/signicat/api/"));
    let id = signicat["id"].as_str().unwrap();
    let res = http
        .get(format!("{base}/api/v1/connections/{id}/proxy/echo/documents"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let echoed: serde_json::Value = res.json().await.unwrap();
    assert_eq!(echoed["path"], "/fake/signicat/api/echo/documents");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the file holds the demo's keys: only its owner may read it");
    }
}

/// `demo` on `data`, on `port`, once it has printed its CLI line (killed when dropped).
fn start_demo(data: &std::path::Path, port: u16) -> Demo {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .args(["demo", "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env_remove("ENCRYPTION_KEY")
        .env_remove("DATABASE_URL")
        .env_remove("CONNECT_HUB_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    let ready =
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.contains("CONNECT_HUB_CONFIG="));
    assert!(ready, "the demo started");
    demo
}

#[tokio::test]
async fn a_restarted_demo_keeps_one_connection_a_provider_and_gives_old_ones_their_api_url() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    drop(start_demo(&data, port));
    // Demo data from before the proxy: no API URL on one of its connections, and one the operator
    // renamed (it is theirs now, and left as it is).
    let db = format!("sqlite://{}", data.join("connect-hub.db").display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().connect(&db).await.unwrap();
    sqlx::query("update connections set api_url = null where provider in ('signicat', 'snapdocs')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("update connections set name = 'Ours' where provider = 'snapdocs'").execute(&pool).await.unwrap();
    let _demo = start_demo(&data, port);
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select provider, name, api_url from connections where provider <> 'snapinspect' order by provider",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let providers: Vec<&str> = rows.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(providers, ["docplanner", "signicat", "smartdocumentor", "snapdocs"], "one each, none added twice");
    let signicat = rows.iter().find(|(p, _, _)| p == "signicat").unwrap();
    assert_eq!(signicat.2.as_deref(), Some(format!("http://127.0.0.1:{port}/fake/signicat/api/").as_str()));
    let snapdocs = rows.iter().find(|(p, _, _)| p == "snapdocs").unwrap();
    assert_eq!((snapdocs.1.as_str(), snapdocs.2.as_deref()), ("Ours", None), "a renamed one is the operator's");
    let docplanner = rows.iter().find(|(p, _, _)| p == "docplanner").unwrap();
    assert_eq!(docplanner.2.as_deref(), Some(format!("http://127.0.0.1:{port}/fake/docplanner/api/").as_str()));
}
