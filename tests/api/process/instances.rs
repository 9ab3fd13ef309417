//! Many instances on one PostgreSQL database: three `serve` processes share connects, console
//! sessions, API keys, the duplicate window, token exchanges and the queue (one SIGKILLed under
//! load loses nothing); and an instance drops what another replaced or revoked (NOTIFY).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use connect_hub::{auth::api_keys::ApiKeys, config::Settings, store::Store};
use futures_util::future::join_all;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::harness::{EventStream, HubProcess, ServeChild};
use crate::helpers::{
    browser_client, csrf_from, spawn_app, spawn_app_with, TestApp, TestDb, ADMIN_EMAIL, ADMIN_PASSWORD,
};

const SKIP: &str = "skipped on SQLite: many instances need PostgreSQL; this runs in the PostgreSQL pass";

/// Three `serve` processes on one database, behind one `PUBLIC_URL` (the first's address, standing
/// for the load balancer), using the first's fake SnapInspect and receiver.
struct Cluster {
    hubs: Vec<HubProcess>,
    children: Vec<Option<ServeChild>>,
    db: TestDb,
}

impl Cluster {
    async fn start(dir: &Path) -> Option<Cluster> {
        let db = TestDb::new(dir).await;
        if !db.is_postgres() {
            println!("{SKIP}");
            return None;
        }
        let bin = Path::new(env!("CARGO_BIN_EXE_connect-hub"));
        let mut hubs: Vec<HubProcess> = Vec::new();
        for name in ["a", "b", "c"] {
            let home = dir.join(name);
            std::fs::create_dir_all(&home).unwrap();
            let mut hub = HubProcess::new(bin, &home).unwrap();
            if let Some(first) = hubs.first() {
                let bind = hub.env["BIND_ADDR"].clone();
                hub.env = first.env.clone();
                hub.env.insert("BIND_ADDR".into(), bind);
            } else {
                hub.env.insert("DATABASE_URL".into(), db.url.clone());
            }
            hub.log = Some(home.join("serve.log"));
            hubs.push(hub);
        }
        let mut children = Vec::new();
        for hub in &hubs {
            children.push(Some(hub.start().await.unwrap()));
        }
        Some(Cluster { hubs, children, db })
    }

    fn base(&self, i: usize) -> &str {
        &self.hubs[i].base
    }

    /// The store as a CLI command on the same database sees it.
    async fn store(&self) -> Store {
        let settings = Settings::from_vars(&self.hubs[0].env).unwrap();
        Store::open(&self.db.url, None, Arc::new(settings.keyring().unwrap())).await.unwrap()
    }

    async fn api_key(&self) -> (String, String) {
        let (id, key) = ApiKeys::new(self.store().await).create("cluster", "test").await.unwrap();
        (id, key.expose_secret().to_owned())
    }
}

async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

/// Poll `check` until it holds, or fail with `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn three_instances_share_connects_console_sessions_api_keys_and_the_duplicate_window() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path()).await else { return };
    let (a, b, c) = (cluster.base(0), cluster.base(1), cluster.base(2));
    let store = cluster.store().await;

    // A connect started on A finishes on B: the state and its browser binding are in the database.
    cluster.hubs[0].connect_via(a, b, 6847).await.unwrap();
    let connections = store.connections().await.unwrap();
    assert!(
        connections.iter().any(|c| c.company_id.map(|c| c.get()) == Some(6847) && c.status.as_str() == "active"),
        "connected through the other instance"
    );

    // A console session opened on A works on C, and signing out on B ends it everywhere.
    let hash = connect_hub::auth::NewPassword::parse(secrecy::SecretString::from(ADMIN_PASSWORD.to_owned()))
        .unwrap()
        .hash()
        .unwrap();
    store.upsert_admin(ADMIN_EMAIL, &hash, connect_hub::time::now_ms(), "test").await.unwrap();
    let browser = browser_client();
    let login = browser.get(format!("{a}/admin/login")).send().await.unwrap().text().await.unwrap();
    let res = browser
        .post(format!("{a}/admin/login"))
        .form(&[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("csrf", &csrf_from(&login)), ("next", "/admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "signed in on A");
    let on_c = browser.get(format!("{c}/admin")).send().await.unwrap();
    assert_eq!(on_c.status(), 200, "the session works on C");
    let csrf = csrf_from(&on_c.text().await.unwrap());

    // An API key works on every instance; revoked through C, every instance refuses it.
    let (key_id, key) = cluster.api_key().await;
    for base in [a, b, c] {
        let res =
            reqwest::Client::new().get(format!("{base}/api/v1/connections")).bearer_auth(&key).send().await.unwrap();
        assert_eq!(res.status(), 200, "{base} accepts the key");
    }
    let res =
        browser.post(format!("{c}/admin/api-keys/{key_id}/revoke")).form(&[("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(res.status(), 303);
    for base in [a, b, c] {
        let url = format!("{base}/api/v1/connections");
        eventually(Duration::from_secs(10), &format!("{base} still accepts the revoked key"), || async {
            status(reqwest::Client::new().get(&url).bearer_auth(&key)).await == 401
        })
        .await;
    }

    let res = browser.post(format!("{b}/admin/logout")).form(&[("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(res.status(), 303, "signed out on B");
    for base in [a, b, c] {
        let res = browser.get(format!("{base}/admin")).send().await.unwrap();
        assert_eq!(res.status(), 303, "{base}: the session is over");
        assert!(res.headers()["location"].to_str().unwrap().starts_with("/admin/login"));
    }

    // The same webhook sent to A and B at the same moment, twice each: one event, one id.
    let body = r#"{"sType":"Create_Inspection","iInspectionID":424242,"iCompanyID":6847}"#;
    let posts = [a, b, a, b].map(|base| {
        reqwest::Client::new()
            .post(format!("{base}/webhooks/snapinspect/{}", super::harness::WEBHOOK_SECRET))
            .body(body)
            .send()
    });
    let mut ids = HashSet::new();
    for res in join_all(posts).await {
        let res = res.unwrap();
        assert_eq!(res.status(), 200);
        ids.insert(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one event id: {ids:?}");
    let stored: i64 = sqlx::query_scalar("select count(*) from events where inspection_id = 424242")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 1, "stored once");
    store.close().await;
}

#[tokio::test]
async fn concurrent_forced_exchanges_from_three_instances_leave_one_live_token() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path()).await else { return };
    cluster.hubs[0].connect(6847).await.unwrap();
    let store = cluster.store().await;
    let id = store.connections().await.unwrap().into_iter().find(|c| c.company_id.map(|c| c.get()) == Some(6847));
    let id = id.unwrap().id;
    let (_, key) = cluster.api_key().await;
    // Let the connect's own background exchange of the callback's pair finish first.
    let fake = &cluster.hubs[0].fake;
    eventually(Duration::from_secs(20), "the callback's pair was exchanged", || async { fake.exchanges() >= 1 }).await;
    // ... and committed: the fake counts an exchange when it answers, before the hub stores the
    // new pair (and with it the `last_exchange_at` moved back below).
    eventually(Duration::from_secs(20), "the callback's exchange was committed", || async {
        store.tokens(&id).await.unwrap().is_some_and(|t| !t.callback_pending)
    })
    .await;

    // The cooldown after that exchange is over (a forced refresh inside it hands out that token).
    sqlx::query("update connections set last_exchange_at = last_exchange_at - 60000")
        .execute(store.pool())
        .await
        .unwrap();
    let before = fake.exchanges();
    let refreshes = (0..12).map(|i| {
        let base = cluster.base(i % 3).to_owned();
        let (key, id) = (key.clone(), id.clone());
        async move {
            let res = reqwest::Client::new()
                .post(format!("{base}/api/v1/connections/{id}/refresh"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or_default())
        }
    });
    let answers = join_all(refreshes).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    // Each process joins its own requests into one flight, and the lease row lets one process
    // exchange at a time: each exchange starts from the pair the one before it committed.
    let made = fake.exchanges() - before;
    assert!((1..=3).contains(&made), "{made} exchanges for twelve forced refreshes on three processes");

    // The token every instance now hands out is the stored one, and SnapInspect still honours it.
    let stored = store.tokens(&id).await.unwrap().unwrap();
    let stored = stored.access.expect("a stored access token");
    let stored = stored.expose_secret().to_owned();
    assert!(fake.is_valid_access_token(&stored), "the stored token is live at SnapInspect");
    for i in 0..3 {
        let url = format!("{}/api/v1/connections/{id}/token", cluster.base(i));
        let key = key.clone();
        let stored = stored.clone();
        eventually(Duration::from_secs(10), "every instance hands out the stored token", || {
            let (url, key, stored) = (url.clone(), key.clone(), stored.clone());
            async move {
                let res = reqwest::Client::new().get(&url).bearer_auth(&key).send().await.unwrap();
                let v: Value = res.json().await.unwrap_or_default();
                v["access_token"].as_str() == Some(stored.as_str())
            }
        })
        .await;
    }
    store.close().await;
}

#[tokio::test]
async fn an_instance_sigkilled_under_webhook_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = Cluster::start(dir.path()).await else { return };
    cluster.hubs[0].connect(6847).await.unwrap();

    let streams: Vec<EventStream> =
        (0..3).map(|i| EventStream::start(cluster.base(i), 4, 6847, i * 100_000_000)).collect();
    streams[1].wait_for(150, Duration::from_secs(60)).await.unwrap();
    // B dies mid-stream, holding claims and deliveries; A and C carry on.
    let mut b = cluster.children[1].take().unwrap();
    b.kill().unwrap();
    b.wait().unwrap();
    streams[0].wait_for(streams[0].acked_count() + 100, Duration::from_secs(60)).await.unwrap();
    let mut acked = HashSet::new();
    for s in streams {
        let (ids, _, _) = s.stop().await;
        acked.extend(ids);
    }
    assert!(acked.len() >= 250);

    let receiver = &cluster.hubs[0].receiver;
    eventually(Duration::from_secs(120), "every acknowledged event reaches the receiver", || async {
        let delivered: HashSet<String> = receiver.received().into_iter().map(|d| d.webhook_id).collect();
        acked.is_subset(&delivered)
    })
    .await;
    let mut times: HashMap<String, usize> = HashMap::new();
    for d in receiver.received() {
        *times.entry(d.webhook_id).or_default() += 1;
    }
    let twice = times.values().filter(|n| **n > 1).count();
    println!(
        "SIGKILL of one of three instances: {} events acknowledged, all delivered; {twice} delivered more than once \
         (at-least-once: the killed instance's claims ran out and were taken over)",
        acked.len()
    );
}

/// A second in-process instance on `first`'s database, with its keys.
async fn second_instance(first: &TestApp) -> TestApp {
    let shared: BTreeMap<String, String> = ["DATABASE_URL", "ENCRYPTION_KEY", "SESSION_KEY"]
        .into_iter()
        .map(|k| (k.to_owned(), first.vars[k].clone()))
        .collect();
    spawn_app_with(move |v| v.extend(shared)).await
}

/// Until both instances' listeners are connected (a listener that connects forgets everything,
/// which would blur what this test looks at).
async fn wait_for_listeners(app: &TestApp, n: i64) {
    let pool = app.state.store.pool().clone();
    eventually(Duration::from_secs(10), "the instances listen", || {
        let pool = pool.clone();
        async move {
            let listening: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity where datname = current_database() and query ilike 'listen%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            listening >= n
        }
    })
    .await;
}

#[tokio::test]
async fn on_postgresql_an_instance_forgets_a_token_and_a_key_another_replaced_or_revoked() {
    let a = spawn_app().await;
    if !a.db.is_postgres() {
        println!("{SKIP}");
        return;
    }
    let b = second_instance(&a).await;
    wait_for_listeners(&a, 2).await;
    let id = a.connect_company(6847).await;
    let (key_id, key) = a.api_key("shared").await;

    // B serves both from memory now.
    let token = b.state.tokens.token(&id).await.unwrap();
    assert!(b.state.tokens.remembers(&id));
    let caller =
        crate::helpers::verify_key(&b.state.api_keys, &secrecy::SecretString::from(key.clone())).await.unwrap();
    assert_eq!(caller.unwrap().key_id, key_id);
    assert!(b.state.api_keys.remembers(&key_id));

    // A exchanges the token and revokes the key: B hears of both and drops them (its own short
    // windows would only stop trusting them, not drop them).
    let fresh = a.state.tokens.refresh(&id, "test").await.unwrap();
    assert_ne!(secrecy::ExposeSecret::expose_secret(&fresh.token), secrecy::ExposeSecret::expose_secret(&token.token));
    eventually(Duration::from_secs(10), "B still holds the replaced token", || async {
        !b.state.tokens.remembers(&id)
    })
    .await;
    assert!(a.state.api_keys.revoke(&key_id, "test").await.unwrap());
    eventually(Duration::from_secs(10), "B still holds the revoked key", || async {
        !b.state.api_keys.remembers(&key_id)
    })
    .await;
    assert!(crate::helpers::verify_key(&b.state.api_keys, &secrecy::SecretString::from(key)).await.unwrap().is_none());
    let now = b.state.tokens.token(&id).await.unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&now.token),
        secrecy::ExposeSecret::expose_secret(&fresh.token),
        "B hands out the new token"
    );
}

#[tokio::test]
async fn on_postgresql_a_key_check_that_read_before_another_instance_revoked_it_is_not_kept() {
    let a = spawn_app().await;
    if !a.db.is_postgres() {
        println!("{SKIP}");
        return;
    }
    let b = second_instance(&a).await;
    wait_for_listeners(&a, 2).await;
    let (key_id, key) = a.api_key("racing").await;
    let key = secrecy::SecretString::from(key);
    crate::helpers::verify_key(&b.state.api_keys, &key).await.unwrap().unwrap();
    // B starts a check of the key (its trust ran out, say) and reads the store...
    let read = b.state.api_keys.look_up(&key).await.unwrap();
    // ...A revokes it, and B hears the NOTIFY (it drops the key it held)...
    assert!(a.state.api_keys.revoke(&key_id, "test").await.unwrap());
    eventually(Duration::from_secs(10), "B hears of the revoke", || async { !b.state.api_keys.remembers(&key_id) })
        .await;
    // ...then B's check would keep what it read: it must not.
    b.state.api_keys.remember(read);
    assert!(!b.state.api_keys.remembers(&key_id), "the stale read is not kept");
    assert!(crate::helpers::verify_key(&b.state.api_keys, &key).await.unwrap().is_none(), "B refuses the key at once");
}

#[tokio::test]
async fn on_postgresql_an_instance_whose_listener_drops_forgets_what_it_cached() {
    let app = spawn_app().await;
    if !app.db.is_postgres() {
        println!("{SKIP}");
        return;
    }
    wait_for_listeners(&app, 1).await;
    let id = app.connect_company(6847).await;
    let (key_id, key) = app.api_key("cached").await;
    app.state.tokens.token(&id).await.unwrap();
    crate::helpers::verify_key(&app.state.api_keys, &secrecy::SecretString::from(key)).await.unwrap().unwrap();
    assert!(app.state.tokens.remembers(&id) && app.state.api_keys.remembers(&key_id));
    // Notifications sent while the listener is away are lost: when it drops, nothing cached is kept.
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() \
         and query ilike 'listen%'",
    )
    .execute(app.state.store.pool())
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "the token and the key are forgotten", || async {
        !app.state.tokens.remembers(&id) && !app.state.api_keys.remembers(&key_id)
    })
    .await;
}
