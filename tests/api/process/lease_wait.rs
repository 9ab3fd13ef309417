//! A command that must wait for another process's exchange lease says so on stderr at once, takes
//! the lease as soon as its holder gives it back, and gives up with a clear message at its end.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use crate::helpers::{spawn_app, TestApp};

const WAITING: &str = "another process is exchanging the tokens of connection";

/// Hold `id`'s exchange lease for `ms` from now, as another process mid-exchange would.
async fn hold_lease(app: &TestApp, id: &str, ms: i64) {
    let until = connect_hub::time::now_ms() + ms;
    sqlx::query(
        "update connections set exchange_lease_owner = 'proc_elsewhere', exchange_lease_until = $1 where id = $2",
    )
    .bind(until)
    .bind(id)
    .execute(app.state.store.pool())
    .await
    .unwrap();
}

/// `connect-hub connections refresh <id>` started with stderr piped; returns the child and a
/// channel that gets each stderr line as it is written.
fn refresh(app: &TestApp, id: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_connect-hub"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(app.dir.path());
    cmd.envs(&app.vars).args(["connections", "refresh", id]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

async fn next_line(rx: std::sync::mpsc::Receiver<String>) -> (Option<String>, std::sync::mpsc::Receiver<String>) {
    tokio::task::spawn_blocking(move || {
        let line = rx.recv_timeout(std::time::Duration::from_secs(30)).ok();
        (line, rx)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn refresh_says_at_once_that_it_waits_for_another_process_and_gives_up_at_the_leases_end() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    hold_lease(&app, id.as_str(), 2_500).await;
    let (child, rx) = refresh(&app, id.as_str());
    let (first, rx) = next_line(rx).await;
    let first = first.expect("a line on stderr while it waits");
    assert!(first.contains(WAITING) && first.contains(id.as_str()), "{first}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(!out.status.success(), "it gives up");
    assert!(out.stdout.is_empty(), "no token printed");
    let rest = rest.join("\n");
    assert!(rest.contains("gave up after") && rest.contains("exchange lease until its end"), "{rest}");
    assert!(!rest.contains(WAITING), "said once: {rest}");
    assert_eq!(app.fake.exchange_calls(), 0, "it did not take the other process's lease over");
}

#[tokio::test]
async fn a_lease_given_back_without_new_tokens_is_taken_at_once_not_at_its_end() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    // A lease for a minute, given back after the command started waiting with nothing stored (as
    // a holder whose exchange failed does): the command takes it and exchanges itself, instead of
    // waiting out the minute.
    hold_lease(&app, id.as_str(), 60_000).await;
    let (child, rx) = refresh(&app, id.as_str());
    let (first, _rx) = next_line(rx).await;
    assert!(first.expect("a line on stderr while it waits").contains(WAITING));
    sqlx::query("update connections set exchange_lease_owner = null, exchange_lease_until = null where id = $1")
        .bind(id.as_str())
        .execute(app.state.store.pool())
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(app.fake.is_valid_access_token(&token), "{token}");
    assert_eq!(app.fake.exchanges(), 1);
}
