//! The command line does what the console does, run as the real binary: disconnect and delete a
//! connection, update an endpoint (each audited as `cli`), the long commands' progress on a
//! terminal and one summary line otherwise, and `admin create`'s sign-in address.

use connect_hub::{
    client_credentials::CredentialsInput,
    delivery::manage::{self, EndpointInput},
    domain::{ConnectionStatus, Provider},
};

use crate::helpers::{hub, receiver, spawn_app, TestApp};

fn out(o: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The audit rows written by the command line, as (action, detail).
async fn cli_audit(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, Option<String>)>(
        "select action, detail from audit_log where actor = 'cli' order by id",
    )
    .fetch_all(app.state.store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(a, d)| (a, d.unwrap_or_default()))
    .collect()
}

#[tokio::test]
async fn connections_disconnect_and_delete_from_the_shell_do_what_the_console_does() {
    let app = spawn_app().await;
    app.connect(Some(6847)).await;
    let snap = app.connection_id_for(6847).await;

    // A SnapInspect connection is disconnected, not deleted, as in the console.
    let refused = hub(&app, &["connections", "delete", snap.as_str()]);
    assert!(!refused.status.success());
    let (_, err) = out(&refused);
    assert!(
        err.contains("SnapInspect connections are disconnected, not deleted") && err.contains("disconnect"),
        "{err}"
    );
    assert!(app.state.store.connection(&snap).await.unwrap().is_some(), "still there");

    let done = hub(&app, &["connections", "disconnect", snap.as_str()]);
    let (stdout, err) = out(&done);
    assert!(done.status.success(), "{err}");
    assert!(stdout.contains(&format!("disconnected {snap}")), "{stdout}");
    let c = app.state.store.connection(&snap).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Disconnected);
    let tokens = app.state.store.tokens(&snap).await.unwrap().unwrap();
    assert!(tokens.access.is_none(), "its tokens are deleted");
    let again = hub(&app, &["connections", "disconnect", snap.as_str()]);
    assert!(!again.status.success());
    assert!(out(&again).1.contains("already disconnected"), "{:?}", out(&again));

    // A client-credentials connection is deleted, secret and all.
    let input = CredentialsInput {
        client_id: "id".into(),
        token_url: Some("http://127.0.0.1:9/token".into()),
        scope: Some("identify".into()),
        ..Default::default()
    };
    let cc = app.add_credentials(Provider::Signicat, input, "secret").await;
    let deleted = hub(&app, &["connections", "delete", cc.as_str()]);
    assert!(deleted.status.success(), "{:?}", out(&deleted));
    assert!(app.state.store.connection(&cc).await.unwrap().is_none());
    let missing = hub(&app, &["connections", "delete", cc.as_str()]);
    assert!(!missing.status.success());
    assert!(out(&missing).1.contains("there is no connection"), "{:?}", out(&missing));

    let audit = cli_audit(&app).await;
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["disconnect", "connection_deleted"], "{audit:?}");
    assert!(audit[1].1.contains(cc.as_str()), "{audit:?}");
}

#[tokio::test]
async fn endpoints_update_changes_what_is_given_with_the_consoles_checks_and_keeps_the_rest() {
    let app = spawn_app().await;
    let (_, url) = receiver();
    let policy = app.state.settings.endpoint_policy();
    let input = EndpointInput::with_csv(&url, "Create_Inspection", "prod");
    let (id, _) = manage::add(&app.state.store, &policy, 10, &input, "test").await.unwrap();

    let ok = hub(&app, &["endpoints", "update", id.as_str(), "--events", "Review_Signed,connection.created"]);
    assert!(ok.status.success(), "{:?}", out(&ok));
    let e = manage::load(&app.state.store, id.as_str()).await.unwrap();
    assert_eq!(e.event_types.as_slice(), ["Review_Signed", "connection.created"]);
    assert_eq!((e.url.as_str(), e.description.as_str()), (url.as_str(), "prod"), "what was not given stays");

    // The console's checks, in the console's words.
    for (args, says) in [
        (vec!["--url", "hooks.example.com/in"], "add https:// in front"),
        (vec!["--url", "http://10.0.0.7/hooks"], "cannot be used"),
        (vec!["--events", "a b"], "event type"),
        (vec![], "nothing to change"),
    ] {
        let mut all = vec!["endpoints", "update", id.as_str()];
        all.extend(&args);
        let refused = hub(&app, &all);
        assert!(!refused.status.success(), "{args:?}");
        assert!(out(&refused).1.contains(says), "{args:?}: {}", out(&refused).1);
    }
    let unknown = hub(&app, &["endpoints", "update", "ep_nope", "--description", "x"]);
    assert!(out(&unknown).1.contains("no endpoint with id ep_nope"), "{:?}", out(&unknown));

    let ok = hub(&app, &["endpoints", "update", id.as_str(), "--events", "", "--description", "staging"]);
    assert!(ok.status.success(), "{:?}", out(&ok));
    let e = manage::load(&app.state.store, id.as_str()).await.unwrap();
    assert!(e.event_types.as_slice().is_empty(), "\"\" is every type");
    assert_eq!((e.url.as_str(), e.description.as_str()), (url.as_str(), "staging"));
    let actions: Vec<String> = cli_audit(&app).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(actions, ["endpoint_edit", "endpoint_edit"]);
}

#[tokio::test]
async fn endpoints_add_and_update_warn_on_stderr_about_an_event_type_the_hub_does_not_know() {
    let app = spawn_app().await;
    let (_, url) = receiver();
    let added = hub(&app, &["endpoints", "add", "--url", &url, "--events", "Review_Sgined,Create_Inspection"]);
    assert!(added.status.success(), "still added: {:?}", out(&added));
    let (stdout, stderr) = out(&added);
    let warning = stderr.lines().find(|l| l.starts_with("warning: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(warning.contains("`Review_Sgined` is not an event type the hub knows"), "{warning}");
    assert!(warning.contains("Did you mean Review_Signed?"), "{warning}");
    assert!(warning.contains("Known types: "), "{warning}");
    assert_eq!(stderr.matches("warning: ").count(), 1, "Create_Inspection is known: {stderr}");
    assert!(!stdout.contains("warning"), "stdout keeps the id and the secret only: {stdout}");
    let id = stdout.lines().next().unwrap().to_owned();
    let e = manage::load(&app.state.store, &id).await.unwrap();
    assert_eq!(e.event_types.as_slice(), ["Create_Inspection", "Review_Sgined"], "the type is kept");

    let updated = hub(&app, &["endpoints", "update", &id, "--events", "Inspection_Complted"]);
    assert!(updated.status.success(), "{:?}", out(&updated));
    assert!(out(&updated).1.contains("warning: `Inspection_Complted` is not an event type"), "{:?}", out(&updated));
    let fixed = hub(&app, &["endpoints", "update", &id, "--events", "Review_Signed"]);
    assert!(fixed.status.success(), "{:?}", out(&fixed));
    assert!(!out(&fixed).1.contains("warning"), "{:?}", out(&fixed));
}

#[tokio::test]
async fn long_commands_print_one_summary_line_without_a_terminal_and_show_progress_on_one() {
    let app = spawn_app().await;
    app.connect(Some(6847)).await;
    let old = app.vars["ENCRYPTION_KEY"].clone();
    let mut vars = app.vars.clone();
    vars.insert("ENCRYPTION_KEY".into(), connect_hub::crypto::generate_key_b64(32));
    vars.insert("ENCRYPTION_KEYS_OLD".into(), old);

    // Piped: nothing but the summary, on one line.
    let piped = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"))
        .arg("rotate-key")
        .env_clear()
        .envs(&vars)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = out(&piped);
    assert!(piped.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("re-encrypted 2 values under key"), "{stdout}");
    assert!(!stderr.contains('\r') && !stderr.contains("re-encrypting"), "no progress when not a terminal: {stderr}");

    // On a terminal (a pseudo-terminal from util-linux's `script`): a progress line, then the summary.
    if std::process::Command::new("script").arg("--version").output().is_err() {
        println!("SKIPPED the terminal half: no `script` (util-linux) on the PATH");
        return;
    }
    let command = format!("{} rotate-key", env!("CARGO_BIN_EXE_connect-hub"));
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&vars)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    let (seen, _) = out(&tty);
    assert!(tty.status.success(), "{seen}");
    assert!(seen.contains("\r\x1b[Kre-encrypting [") && seen.contains("(2/2)"), "{seen:?}");
    assert!(seen.contains("re-encrypted 0 values under key") && seen.contains("2 were already under it"), "{seen:?}");
}

#[tokio::test]
async fn events_replay_dead_replays_the_dead_events_of_a_filter_with_progress_on_a_terminal() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (inspection, company) in [(1, 6847), (2, 6847), (3, 7012)] {
        let body =
            format!(r#"{{ "sType": "Create_Inspection", "iInspectionID": {inspection}, "iCompanyID": {company} }}"#);
        ids.push(app.send_event(&body).await);
    }
    sqlx::query("update events set state = 'dead', attempts = 9").execute(app.state.store.pool()).await.unwrap();
    let state = |i: usize| {
        let (app, id) = (&app, ids[i].clone());
        async move { app.event(&id).await.state }
    };

    // Piped: one summary line, no progress; only the company's dead events.
    let piped = hub(&app, &["events", "replay", "--dead", "--company", "6847"]);
    let (stdout, stderr) = out(&piped);
    assert!(piped.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["2 dead events are queued again; a running worker processes them within a second"]
    );
    assert!(!stderr.contains('\r') && !stderr.contains("replaying"), "no progress when not a terminal: {stderr:?}");
    assert_eq!((state(0).await, state(1).await, state(2).await), ("pending".into(), "pending".into(), "dead".into()));
    assert_eq!(cli_audit(&app).await, [("event_replay".to_owned(), "2 dead events replayed".to_owned())]);

    let refused = hub(&app, &["events", "replay", "--dead", "--endpoint", "ep_x"]);
    assert!(!refused.status.success());
    assert!(out(&refused).1.contains("cannot be used with"), "{:?}", out(&refused));
    assert!(!hub(&app, &["events", "replay"]).status.success(), "an id or --dead");

    if std::process::Command::new("script").arg("--version").output().is_err() {
        println!("SKIPPED the terminal half: no `script` (util-linux) on the PATH");
        return;
    }
    let command = format!("{} events replay --dead", env!("CARGO_BIN_EXE_connect-hub"));
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&app.vars)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    let (seen, _) = out(&tty);
    assert!(tty.status.success(), "{seen}");
    assert!(seen.contains("\r\x1b[Kreplaying dead events [") && seen.contains("(1/1)"), "{seen:?}");
    assert!(seen.contains("1 dead events are queued again"), "{seen:?}");
    assert_eq!(state(2).await, "pending");
}

#[tokio::test]
async fn admin_create_prints_the_address_to_sign_in_at() {
    use std::io::Write;
    let app = spawn_app().await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"));
    cmd.args(["admin", "create", "--email", "ops@example.com", "--password-stdin"])
        .env_clear()
        .envs(&app.vars)
        .current_dir(app.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse battery staple\n").unwrap();
    let done = child.wait_with_output().unwrap();
    let (stdout, stderr) = out(&done);
    assert!(done.status.success(), "{stderr}");
    let public = app.vars["PUBLIC_URL"].trim_end_matches('/');
    assert_eq!(stdout.trim(), format!("admin ops@example.com created; sign in at {public}/admin"));
    assert!(!stdout.contains("PUBLIC_URL"));
}
