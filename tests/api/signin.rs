//! Signing in to the console and staying signed in: sign-out sticks, anonymous visitors write
//! nothing, password hashing is capped, the sign-in throttle is counted first and cannot lock the
//! owner out, and what a sign-in form carries is checked before it is logged or followed; the
//! sign-in page's own messages.

use std::time::Duration;

use connect_hub::{
    auth::session::DbSessionStore,
    store::{account_hash, Store},
};
use reqwest::{header::SET_COOKIE, Response};
use sqlx::Connection;

use crate::helpers::{
    browser_client, csrf_from, location, spawn_app, spawn_app_with, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD,
};

/// A client with no cookie store: the test carries cookies by hand, as a thief would.
fn bare() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `name=value` of the cookie `name` a response sets, if any.
fn set_cookie(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")) && c.len() > name.len() + 1)
}

/// Sign in by hand; returns the session cookie (`name=value`).
async fn sign_in_by_hand(app: &TestApp, forwarded_for: Option<&str>) -> String {
    let (status, res) = post_sign_in(app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", forwarded_for).await;
    assert_eq!(status, 303);
    set_cookie(&res, "connect_hub_session").expect("a session cookie")
}

/// Load the sign-in page, then post the form from the same "browser" (optionally through a
/// trusted proxy that says who the client is).
async fn post_sign_in(
    app: &TestApp,
    email: &str,
    password: &str,
    next: &str,
    forwarded_for: Option<&str>,
) -> (u16, Response) {
    let client = bare();
    let with_xff = |r: reqwest::RequestBuilder| match forwarded_for {
        Some(a) => r.header("x-forwarded-for", a),
        None => r,
    };
    let page = with_xff(client.get(format!("{}/admin/login", app.addr))).send().await.unwrap();
    let cookie = set_cookie(&page, "connect_hub_sign_in").expect("a sign-in cookie");
    let csrf = csrf_from(&page.text().await.unwrap());
    let res = with_xff(client.post(format!("{}/admin/login", app.addr)))
        .header("cookie", cookie)
        .form(&[("email", email), ("password", password), ("csrf", &csrf), ("next", next)])
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res)
}

async fn get_with(app: &TestApp, cookie: &str, path: &str) -> Response {
    bare().get(format!("{}{path}", app.addr)).header("cookie", cookie).send().await.unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(app.state.store.pool()).await.unwrap()
}

/// Counts the server's writes. SQLite: `data_version` on a connection of our own changes whenever
/// any other connection commits a change. PostgreSQL: every inserted or updated row version gets a
/// new `xmin` and a delete changes a count, so the tables' counts and newest `xmin` change too.
enum WriteCounter {
    Sqlite(sqlx::SqliteConnection),
    Postgres,
}

const TABLES: [&str; 9] = [
    "connections",
    "oauth_states",
    "sessions",
    "audit_log",
    "events",
    "event_attempts",
    "admins",
    "api_keys",
    "sign_in_throttle",
];

impl WriteCounter {
    async fn open(app: &TestApp) -> Self {
        if app.db.is_postgres() {
            return Self::Postgres;
        }
        Self::Sqlite(sqlx::SqliteConnection::connect(&format!("sqlite://{}", app.db_path.display())).await.unwrap())
    }

    async fn version(&mut self, app: &TestApp) -> String {
        match self {
            Self::Sqlite(c) => {
                let v: i64 = sqlx::query_scalar("pragma data_version").fetch_one(c).await.unwrap();
                v.to_string()
            }
            Self::Postgres => {
                let mut parts = Vec::new();
                for t in TABLES {
                    let sql = format!("select count(*) || '/' || coalesce(max(xmin::text::bigint), 0) from {t}");
                    let v: String = sqlx::query_scalar(&sql).fetch_one(app.state.store.pool()).await.unwrap();
                    parts.push(format!("{t}={v}"));
                }
                parts.join(" ")
            }
        }
    }
}

// Signing in and out, sessions and accounts --------------------------------------------------

#[tokio::test]
async fn signing_in_gives_a_new_session_id_and_goes_where_the_admin_was_going() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let page = app.get("/admin/login?next=/admin/events").await;
    let before =
        page.headers().get("set-cookie").expect("the sign-in page starts a session").to_str().unwrap().to_owned();
    assert!(before.contains("HttpOnly") && before.contains("SameSite=Lax"), "{before}");
    assert!(!before.contains("Secure"), "plain http on loopback");
    let csrf = csrf_from(&page.text().await.unwrap());
    let res = app
        .admin_post(
            "/admin/login",
            &[("email", " OPS@example.com "), ("password", ADMIN_PASSWORD), ("csrf", &csrf), ("next", "/admin/events")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/admin/events");
    let after = res.headers().get("set-cookie").expect("a renewed session cookie").to_str().unwrap().to_owned();
    assert_ne!(before.split(';').next(), after.split(';').next(), "the session id changed at sign-in");
    assert_eq!(app.get("/admin").await.status(), 200);

    // The pre-sign-in cookie is worth nothing now.
    let old = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = old
        .get(format!("{}/admin", app.addr))
        .header("cookie", before.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn next_never_leaves_the_console() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let page = app.get("/admin/login").await.text().await.unwrap();
    let res = app
        .admin_post(
            "/admin/login",
            &[
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("csrf", &csrf_from(&page)),
                ("next", "//evil.example/admin"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/admin");
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_recorded_without_the_password() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let res = app.try_sign_in(&app.client, ADMIN_EMAIL, "hunter2-wrong-password").await;
    assert_eq!(res.status(), 401);
    let body = res.text().await.unwrap();
    assert!(body.contains("do not match an admin account"));
    assert!(!body.contains("hunter2"));
    assert_eq!(app.get("/admin").await.status(), 303, "not signed in");
    let audit = app.state.store.audit_entries(None, None, 10).await.unwrap();
    let failed = audit.iter().find(|a| a.action == "sign_in_failed").expect("the failure is in the audit log");
    assert!(failed.detail.as_deref().unwrap().contains(ADMIN_EMAIL));
    assert!(audit.iter().all(|a| !a.detail.as_deref().unwrap_or("").contains("hunter2")));
    // An unknown account gets the same answer.
    let res = app.try_sign_in(&app.client, "nobody@example.com", ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn the_sign_in_form_needs_its_csrf_token() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    app.get("/admin/login").await;
    let res = app
        .admin_post("/admin/login", &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("csrf", "forged")])
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.get("/admin").await.status(), 303);
}

#[tokio::test]
async fn an_expired_session_sends_the_admin_back_to_sign_in() {
    let app = spawn_app().await;
    app.sign_in().await;
    sqlx::query("update sessions set expires_at = 0").execute(app.state.store.pool()).await.unwrap();
    let res = app.get("/admin").await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with("/admin/login"));
}

#[tokio::test]
async fn the_idle_timeout_is_the_session_lifetime_and_each_request_extends_it() {
    let app = spawn_app_with(|v| {
        v.insert("ADMIN_IDLE_TIMEOUT".into(), "10m".into());
    })
    .await;
    app.sign_in().await;
    let expires: i64 =
        sqlx::query_scalar("select max(expires_at) from sessions").fetch_one(app.state.store.pool()).await.unwrap();
    let left = expires - connect_hub::time::now_ms();
    assert!((590_000..=600_000).contains(&left), "{left}");
}

#[tokio::test]
async fn resetting_the_password_ends_the_admins_sessions() {
    let app = spawn_app().await;
    app.sign_in().await;
    app.create_admin(ADMIN_EMAIL, "a brand new passphrase").await;
    assert_eq!(app.get("/admin").await.status(), 303);
}

#[tokio::test]
async fn signing_out_purges_the_session() {
    let app = spawn_app().await;
    let csrf = app.sign_in().await;
    let sessions_before: i64 =
        sqlx::query_scalar("select count(*) from sessions").fetch_one(app.state.store.pool()).await.unwrap();
    let res = app.admin_post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/admin/login?signed_out=1");
    let sessions_after: i64 =
        sqlx::query_scalar("select count(*) from sessions").fetch_one(app.state.store.pool()).await.unwrap();
    assert_eq!(sessions_after, sessions_before - 1, "the session row is gone");
    assert_eq!(app.get("/admin").await.status(), 303);
}

#[tokio::test]
async fn signing_out_says_so_on_the_sign_in_page() {
    let app = crate::helpers::spawn_app().await;
    let csrf = app.sign_in().await;
    let res = app.admin_post("/admin/logout", &[("csrf", &csrf)]).await;
    let page = app.page(&crate::helpers::location(&res)).await;
    assert!(page.contains("id=\"signed-out\">You are signed out."), "{page}");
    assert!(!app.page("/admin/login").await.contains("signed-out"), "only after signing out");
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_url_is_https() {
    let app = spawn_app_with(|v| {
        v.insert("PUBLIC_URL".into(), "https://hub.example.com".into());
    })
    .await;
    let res = app.get("/admin/login").await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
}

#[tokio::test]
async fn admin_create_from_the_shell_takes_the_password_on_stdin() {
    use std::io::Write;
    let app = spawn_app().await;
    let run = |password: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"));
        cmd.env_clear().envs(&app.vars).args(["admin", "create", "--email", "Shell@Example.com", "--password-stdin"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let short = run("short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12"));
    let ok = run("a long enough passphrase");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("admin shell@example.com created"));
    let res = app.try_sign_in(&app.client, "shell@example.com", "a long enough passphrase").await;
    assert_eq!(res.status(), 303);
    let again = run("another long passphrase");
    assert!(String::from_utf8_lossy(&again.stdout).contains("reset"));
}

// Sign-out sticks ----------------------------------------------------------------------------

#[tokio::test]
async fn cookies_taken_before_and_around_sign_out_stay_signed_out() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for round in 0..3 {
        let cookie = sign_in_by_hand(&app, None).await;
        let csrf = csrf_from(&get_with(&app, &cookie, "/admin").await.text().await.unwrap());
        // Console pages in flight while the admin signs out; keep every session cookie they return.
        let pages: Vec<_> = (0..24)
            .map(|_| {
                let (app_addr, cookie) = (app.addr.clone(), cookie.clone());
                tokio::spawn(async move {
                    let res = bare().get(format!("{app_addr}/admin")).header("cookie", cookie).send().await.unwrap();
                    set_cookie(&res, "connect_hub_session")
                })
            })
            .collect();
        let out = bare()
            .post(format!("{}/admin/logout", app.addr))
            .header("cookie", &cookie)
            .form(&[("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(out.status(), 303, "round {round}: signed out");
        let mut cookies = vec![cookie];
        for p in pages {
            cookies.extend(p.await.unwrap());
        }
        for c in &cookies {
            let res = get_with(&app, c, "/admin").await;
            assert_eq!(res.status(), 303, "round {round}: a cookie from around sign-out is signed out");
            assert!(location(&res).starts_with("/admin/login"));
            let res = bare()
                .post(format!("{}/admin/api-keys", app.addr))
                .header("cookie", c)
                .form(&[("csrf", csrf.as_str()), ("name", "stolen")])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 401, "round {round}: the old cookie cannot create an API key");
        }
        assert_eq!(count(&app, "select count(*) from sessions").await, 0, "round {round}: no session came back");
    }
    assert_eq!(count(&app, "select count(*) from api_keys").await, 0);
}

#[tokio::test]
async fn a_session_whose_row_is_gone_is_not_re_created_by_a_late_write() {
    let app = spawn_app().await;
    let store = DbSessionStore::new(app.state.store.clone());
    let ttl = actix_web::cookie::time::Duration::minutes(30);
    let mut state = std::collections::HashMap::new();
    state.insert("admin_id".to_owned(), "1".to_owned());
    let key = actix_session::storage::SessionStore::save(&store, state.clone(), &ttl).await.unwrap();
    assert_eq!(count(&app, "select count(*) from sessions").await, 1);
    actix_session::storage::SessionStore::delete(&store, &key).await.unwrap();
    // A request that loaded the session before the sign-out now writes it back.
    let key = actix_session::storage::SessionStore::update(&store, key, state, &ttl).await.unwrap();
    actix_session::storage::SessionStore::update_ttl(&store, &key, &ttl).await.unwrap();
    assert_eq!(count(&app, "select count(*) from sessions").await, 0, "not re-created");
    assert_eq!(actix_session::storage::SessionStore::load(&store, &key).await.unwrap(), None);
    // Only a signed-in session is ever stored.
    let mut anonymous = std::collections::HashMap::new();
    anonymous.insert("csrf_seed".to_owned(), "x".to_owned());
    actix_session::storage::SessionStore::save(&store, anonymous, &ttl).await.unwrap();
    assert_eq!(count(&app, "select count(*) from sessions").await, 0, "nothing stored without a sign-in");
}

// Anonymous visitors write nothing, a session's expiry at most once a minute -----------------

#[tokio::test]
async fn anonymous_visitors_make_the_server_write_nothing() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // A genuine cookie of a session that has ended, as a visitor might still carry.
    let stale = sign_in_by_hand(&app, None).await;
    sqlx::query("delete from sessions").execute(app.state.store.pool()).await.unwrap();
    let mut writes = WriteCounter::open(&app).await;
    let before = writes.version(&app).await;
    let paths =
        ["/admin/login", "/admin", "/admin/nope", "/", "/connect/snapinspect/done", "/admin/login?next=/admin/x"];
    for i in 0..200 {
        let path = paths[i % paths.len()];
        let req = bare().get(format!("{}{path}", app.addr));
        let req = if i % 2 == 0 { req.header("cookie", &stale) } else { req };
        let status = req.send().await.unwrap().status().as_u16();
        assert!([200, 303, 404].contains(&status), "{path}: {status}");
    }
    assert_eq!(count(&app, "select count(*) from sessions").await, 0, "no session rows");
    assert_eq!(writes.version(&app).await, before, "nothing at all was written");

    // Starting a connect stores its `state` (rate-limited per address), but no session.
    let res = bare().get(format!("{}/connect/snapinspect", app.addr)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert!(set_cookie(&res, "connect_hub_browser").is_some(), "the browser binding is a cookie");
    assert_eq!(count(&app, "select count(*) from oauth_states").await, 1);
    assert_eq!(count(&app, "select count(*) from sessions").await, 0);
}

#[tokio::test]
async fn the_connect_flow_binds_the_browser_and_shows_the_result_without_a_session_row() {
    let app = spawn_app().await;
    let c = app.connect(Some(6847)).await;
    assert_eq!(c.callback.status(), 303);
    assert_eq!(location(&c.callback), "/connect/snapinspect/done");
    let done = app.page("/connect/snapinspect/done").await;
    assert!(done.contains("Harbour View Realty"), "{done}");
    assert_eq!(count(&app, "select count(*) from sessions").await, 0);
    // Another browser (no binding cookie) cannot use a state this one started.
    let authorize = app.start_connect().await;
    let callback = app.decide_at_fake(&authorize, Some(6848), true).await;
    let other = crate::helpers::browser_client();
    let res = other.get(&callback).send().await.unwrap();
    let res = app.follow(&other, res).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("different browser"));
}

#[tokio::test]
async fn a_session_whose_values_change_lasts_the_idle_timeout_from_that_request() {
    let app = spawn_app_with(|v| {
        v.insert("ADMIN_IDLE_TIMEOUT".into(), "10m".into());
    })
    .await;
    let csrf = app.sign_in().await;
    let (key_id, _) = app.api_key("old").await;
    // Revoking sets a message for the next page: the session's values change and are written.
    let res = app.admin_post(&format!("/admin/api-keys/{key_id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let page = app.page("/admin/api-keys").await;
    assert!(page.contains("revoked"), "{page}");
    let left = count(&app, "select max(expires_at) from sessions").await - connect_hub::time::now_ms();
    assert!((590_000..=600_000).contains(&left), "ten minutes from the write, not {left} ms");
}

#[tokio::test]
async fn the_store_says_whether_it_moved_a_sessions_expiry() {
    let app = spawn_app().await;
    let store = &app.state.store;
    let key = [7u8; 32];
    let state = std::collections::HashMap::from([("admin_id".to_owned(), "1".to_owned())]);
    // Times in the future, so no clean-up takes the row meanwhile.
    let t = connect_hub::time::now_ms() + 3_600_000;
    store.session_insert(&key, &state, t).await.unwrap();
    assert!(!store.session_extend(&key, t + 100_000, t - 1).await.unwrap(), "not yet due: untouched");
    assert_eq!(count(&app, "select max(expires_at) from sessions").await, t);
    assert!(store.session_extend(&key, t + 100_000, t).await.unwrap(), "due: moved");
    assert_eq!(count(&app, "select max(expires_at) from sessions").await, t + 100_000);
    assert!(!store.session_extend(&[8u8; 32], t + 200_000, t + 300_000).await.unwrap(), "no such session");
}

#[tokio::test]
async fn a_signed_in_session_is_extended_at_most_once_a_minute() {
    let app = spawn_app_with(|v| {
        v.insert("ADMIN_IDLE_TIMEOUT".into(), "10m".into());
    })
    .await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let cookie = sign_in_by_hand(&app, None).await;
    let expiry = || count(&app, "select max(expires_at) from sessions");
    let first = expiry().await;
    let left = first - connect_hub::time::now_ms();
    assert!((590_000..=600_000).contains(&left), "{left}");
    let mut writes = WriteCounter::open(&app).await;
    let before = writes.version(&app).await;
    for path in ["/admin", "/admin/nope", "/admin/events", "/admin"] {
        get_with(&app, &cookie, path).await;
    }
    assert_eq!(expiry().await, first, "not rewritten within the minute");
    assert_eq!(writes.version(&app).await, before, "no write at all");

    // A minute later (the row's expiry moved back by one), the next request extends it.
    sqlx::query("update sessions set expires_at = expires_at - 60000").execute(app.state.store.pool()).await.unwrap();
    let res = get_with(&app, &cookie, "/admin").await;
    assert_eq!(res.status(), 200);
    let extended = expiry().await;
    let left = extended - connect_hub::time::now_ms();
    assert!(extended > first && (590_000..=600_000).contains(&left), "{left}");
}

// Password hashing is capped -----------------------------------------------------------------

#[tokio::test]
async fn parallel_sign_ins_past_the_hashing_cap_are_turned_away_at_once() {
    let app = spawn_app_with(|v| {
        v.insert("TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
        v.insert("RATE_LIMIT_SIGN_IN".into(), "0".into());
    })
    .await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // Forms loaded first, then 40 posts at once from 40 addresses; half for unknown accounts.
    let mut forms = Vec::new();
    for i in 0..40 {
        let xff = format!("198.51.100.{}", i + 1);
        let client = bare();
        let page = client.get(format!("{}/admin/login", app.addr)).send().await.unwrap();
        let cookie = set_cookie(&page, "connect_hub_sign_in").unwrap();
        forms.push((client, xff, cookie, csrf_from(&page.text().await.unwrap()), i));
    }
    let posts = forms.into_iter().map(|(client, xff, cookie, csrf, i)| {
        let url = format!("{}/admin/login", app.addr);
        async move {
            let email = if i % 2 == 0 { ADMIN_EMAIL.to_owned() } else { format!("nobody{i}@example.com") };
            let res = client
                .post(url)
                .header("x-forwarded-for", xff)
                .header("cookie", cookie)
                .form(&[("email", email.as_str()), ("password", "a wrong password"), ("csrf", &csrf)])
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()))
        }
    });
    let answers = futures_util::future::join_all(posts).await;
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "some are turned away: {answers:?}");
    assert!(busy.iter().all(|(_, retry)| retry.as_deref() == Some("1")), "{busy:?}");
    assert!(answers.iter().all(|(s, _)| [401, 503].contains(s)), "{answers:?}");
    let m = &app.state.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::SeqCst);
    let cap = std::thread::available_parallelism().unwrap().get() as u64;
    assert!((1..=cap).contains(&load(&m.hashing_max_in_flight)), "never more than {cap} at once");
    assert_eq!(load(&m.hashing_total) + busy.len() as u64, 40, "every other one was checked");
    assert_eq!(load(&m.hashing_refused), busy.len() as u64);
    assert_eq!(load(&m.hashing_in_flight), 0);
    assert_eq!(
        count(&app, "select count(*) from audit_log where action = 'sign_in_failed'").await,
        40 - busy.len() as i64
    );
}

// The throttle -------------------------------------------------------------------------------

#[tokio::test]
async fn repeated_failures_lock_the_account_with_how_long_to_wait() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for _ in 0..4 {
        assert_eq!(app.try_sign_in(&app.client, ADMIN_EMAIL, "wrong password!!").await.status(), 401);
    }
    let res = app.try_sign_in(&app.client, ADMIN_EMAIL, "wrong password!!").await;
    assert_eq!(res.status(), 429, "the fifth failure locks");
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&wait), "{wait}");
    assert!(res.text().await.unwrap().contains("Wait 60 seconds"));
    // Locked even with the right password, and from another browser.
    let other = browser_client();
    assert_eq!(app.try_sign_in(&other, ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn the_sign_in_429_page_links_back_to_sign_in() {
    let app = crate::helpers::spawn_app().await;
    app.create_admin(crate::helpers::ADMIN_EMAIL, crate::helpers::ADMIN_PASSWORD).await;
    let client = crate::helpers::browser_client();
    let mut last = None;
    for _ in 0..5 {
        last = Some(app.try_sign_in(&client, crate::helpers::ADMIN_EMAIL, "a wrong guess!!").await);
    }
    let res = last.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let page = res.text().await.unwrap();
    assert!(page.contains("href=\"/admin/login\" id=\"error-back\""), "{page}");
    assert!(!page.contains("Start again"));
    assert!(!page.contains("href=\"/admin/events\""), "no console navigation for someone not signed in");
}

#[tokio::test]
async fn repeated_failures_from_one_address_lock_it_for_every_account() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for i in 0..5 {
        let res = app.try_sign_in(&app.client, &format!("guess{i}@example.com"), "whatever-password").await;
        assert_ne!(res.status(), 303);
    }
    let res = app.try_sign_in(&app.client, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 429, "this address is locked");
}

/// Sign in, retrying while the server says it is busy (503), until a deadline.
async fn sign_in_until_answered(app: &TestApp, email: &str, password: &str, xff: Option<&str>) -> u16 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = post_sign_in(app, email, password, "/admin", xff).await;
        if status != 503 || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn parallel_wrong_guesses_get_at_most_the_allowed_number_evaluated() {
    let app = spawn_app_with(|v| {
        v.insert("RATE_LIMIT_SIGN_IN".into(), "0".into());
    })
    .await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let guesses = (0..30).map(|i| {
        let app = &app;
        async move { sign_in_until_answered(app, ADMIN_EMAIL, &format!("wrong guess number {i}"), None).await }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let evaluated = app.state.metrics.hashing_total.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(evaluated, 5, "exactly the allowance was checked: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 26, "{statuses:?}");
}

#[tokio::test]
async fn the_owner_signs_in_from_another_address_while_the_attackers_stays_locked() {
    let app = spawn_app_with(|v| {
        v.insert("TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    })
    .await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let attacker = Some("203.0.113.9");
    for _ in 0..4 {
        assert_eq!(post_sign_in(&app, ADMIN_EMAIL, "attacker guess!!", "/admin", attacker).await.0, 401);
    }
    let (status, res) = post_sign_in(&app, ADMIN_EMAIL, "attacker guess!!", "/admin", attacker).await;
    assert_eq!(status, 429, "the fifth failure locks");
    assert_eq!(res.headers()["retry-after"], "60");
    assert_eq!(post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", attacker).await.0, 429, "still locked");
    // The owner, elsewhere, gets in.
    let (status, res) = post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", Some("198.51.100.7")).await;
    assert_eq!(status, 303, "the owner is not locked out");
    assert_eq!(location(&res), "/admin");
    // Success forgets the owner's count from there, and gives the address its attempt back.
    let [pair, address] = connect_hub::auth::throttle::keys(ADMIN_EMAIL, "198.51.100.7");
    assert_eq!(app.state.store.throttle_row(&pair.key_hash).await.unwrap(), None);
    assert_eq!(app.state.store.throttle_row(&address.key_hash).await.unwrap().unwrap().failures, 0);
    assert_eq!(post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", attacker).await.0, 429, "the attacker is");
}

#[tokio::test]
async fn ipv6_clients_are_throttled_by_their_64() {
    let app = spawn_app_with(|v| {
        v.insert("TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    })
    .await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for i in 1..=5 {
        let xff = format!("2001:db8:0:7::{i}");
        post_sign_in(&app, &format!("guess{i}@example.com"), "attacker guess!!", "/admin", Some(&xff)).await;
    }
    let same_64 = post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", Some("2001:db8:0:7::99")).await.0;
    assert_eq!(same_64, 429, "another address in the same /64 is the same client");
    let next_64 = post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", Some("2001:db8:0:8::1")).await.0;
    assert_eq!(next_64, 303);
}

#[tokio::test]
async fn a_password_reset_from_the_shell_clears_the_accounts_throttle() {
    use std::io::Write;
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    app.create_admin("other@example.com", ADMIN_PASSWORD).await;
    for _ in 0..5 {
        post_sign_in(&app, ADMIN_EMAIL, "forgotten password", "/admin", None).await;
    }
    assert_eq!(post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", None).await.0, 429);
    // Someone else's failures elsewhere are none of this reset's business.
    let other_pair = &connect_hub::auth::throttle::keys("other@example.com", "192.0.2.1")[0];
    app.state
        .store
        .throttle_reserve(std::slice::from_ref(other_pair), |_, _| {
            connect_hub::auth::throttle::Policy::DEFAULT.reserve(None, connect_hub::time::now_ms()).map(|r| r.0)
        })
        .await
        .unwrap()
        .unwrap();

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connect-hub"));
    cmd.env_clear().envs(&app.vars).args(["admin", "create", "--email", ADMIN_EMAIL, "--password-stdin"]);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"a brand new passphrase\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let left: Vec<Vec<u8>> =
        sqlx::query_scalar("select key_hash from sign_in_throttle").fetch_all(app.state.store.pool()).await.unwrap();
    assert_eq!(left, vec![other_pair.key_hash.clone()], "only the other account's row is left");
    let ours: i64 = sqlx::query_scalar("select count(*) from sign_in_throttle where account_hash = $1")
        .bind(account_hash(ADMIN_EMAIL))
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(ours, 0);
    assert_eq!(post_sign_in(&app, ADMIN_EMAIL, "a brand new passphrase", "/admin", None).await.0, 303);
}

#[tokio::test]
async fn expired_throttle_rows_are_pruned() {
    let app = spawn_app().await;
    for i in 0..3 {
        post_sign_in(&app, &format!("spray{i}@example.com"), "attacker guess!!", "/admin", None).await;
    }
    assert_eq!(count(&app, "select count(*) from sign_in_throttle").await, 4, "three pairs and one address");
    let store: &Store = &app.state.store;
    let now = connect_hub::time::now_ms();
    let expires: i64 = count(&app, "select min(expires_at) from sign_in_throttle").await;
    // Kept for the window plus one longest lock: 15 + 15 minutes.
    assert!((now + 29 * 60_000..=now + 30 * 60_000).contains(&expires), "{}", expires - now);
    store.purge_expired(expires - 1).await.unwrap();
    assert_eq!(count(&app, "select count(*) from sign_in_throttle").await, 4, "not yet");
    store.purge_expired(now + 31 * 60_000).await.unwrap();
    assert_eq!(count(&app, "select count(*) from sign_in_throttle").await, 0);
}

// What the form carries ----------------------------------------------------------------------

#[tokio::test]
async fn a_forged_line_in_the_email_is_quoted_and_capped_in_the_audit_log() {
    let app = spawn_app().await;
    // A line break is no email address: answered beside the field, and nothing is written.
    let email = format!("x@example.com\n2026-01-01 INFO admin signed in{}", "z".repeat(5_000));
    assert_eq!(post_sign_in(&app, &email, "attacker guess!!", "/admin", None).await.0, 400);
    let audit = app.state.store.audit_entries(None, None, 10).await.unwrap();
    assert!(!audit.iter().any(|a| a.action == "sign_in_failed"), "a malformed form is not a failed sign-in");
    // A well-formed one that does not match is audited quoted and capped.
    let email = format!("x{}@example.com", "\u{202e}z".repeat(40));
    assert_eq!(post_sign_in(&app, &email, "attacker guess!!", "/admin", None).await.0, 401);
    let audit = app.state.store.audit_entries(None, None, 10).await.unwrap();
    let failed = audit.iter().find(|a| a.action == "sign_in_failed").unwrap();
    let detail = failed.detail.as_deref().unwrap();
    assert!(detail.starts_with("as \"x\\u{202e}z"), "{detail}");
    assert!(detail.len() < 1000, "capped: {}", detail.len());
}

#[tokio::test]
async fn a_control_character_in_next_falls_back_to_the_console() {
    let app = spawn_app().await;
    app.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let page = app.get("/admin/login?next=%2Fadmin%0D%0ASet-Cookie:%20x=y").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("name=\"next\" value=\"/admin\""), "{html}");
    let (status, res) = post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin\r\nSet-Cookie: x=y", None).await;
    assert_eq!(status, 303);
    assert_eq!(location(&res), "/admin");
    let (status, res) = post_sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin/events\u{0}", None).await;
    assert_eq!((status, location(&res)), (303, "/admin".to_owned()));
}
