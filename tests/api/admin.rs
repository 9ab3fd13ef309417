//! The admin console over HTTP: every access rule, CSRF on every action, errors that stay in the
//! console, and each page and action (signing in and sessions are in signin.rs).

use std::net::TcpListener;

use connect_hub::domain::ConnectionStatus;

use crate::helpers::{
    browser_client, csrf_from, forwarding, location, signicat_at, spawn_app, spawn_app_with, unescape, ADMIN_EMAIL,
    ADMIN_PASSWORD, CREATE,
};

#[tokio::test]
async fn every_page_redirects_to_sign_in_without_a_session() {
    let app = spawn_app().await;
    for path in [
        "/admin",
        "/admin/connections",
        "/admin/connections?status=active",
        "/admin/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "/admin/events",
        "/admin/events/evt_0000000000000000000000000a",
        "/admin/audit",
        "/admin/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/disconnect",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 303, "{path}");
        let to = location(&res);
        assert!(to.starts_with("/admin/login?next="), "{path} -> {to}");
    }
    let res = app.get("/admin/connections?status=active").await;
    assert_eq!(
        location(&res),
        "/admin/login?next=%2Fadmin%2Fconnections%3Fstatus%3Dactive",
        "comes back after sign-in"
    );
}

#[tokio::test]
async fn every_action_answers_401_without_a_session() {
    let app = spawn_app().await;
    for path in [
        "/admin/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/exchange",
        "/admin/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/disconnect",
        "/admin/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/assign",
        "/admin/events/evt_0000000000000000000000000a/replay",
        "/admin/events/replay-dead",
        "/admin/logout",
    ] {
        let res = app.admin_post(path, &[("csrf", "x")]).await;
        assert_eq!(res.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn an_action_with_a_wrong_csrf_token_is_refused_and_does_nothing() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    app.sign_in().await;
    for csrf in ["", "forged"] {
        let res = app.admin_post(&format!("/admin/connections/{id}/exchange"), &[("csrf", csrf)]).await;
        assert_eq!(res.status(), 403);
        assert!(res.text().await.unwrap().contains("did not come from this console"));
    }
    assert_eq!(app.fake.exchange_calls(), 0);
    // Another admin session's token is not this one's.
    let other = browser_client();
    app.try_sign_in(&other, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let their_page = other.get(format!("{}/admin", app.addr)).send().await.unwrap().text().await.unwrap();
    let res = app.admin_post(&format!("/admin/connections/{id}/exchange"), &[("csrf", &csrf_from(&their_page))]).await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn console_errors_stay_in_the_console_with_a_way_back_to_the_section() {
    let app = crate::helpers::spawn_app().await;
    app.sign_in().await;
    for (path, status, back) in [
        ("/admin/api-keys/key_nonsense/revoke", 404, "/admin/api-keys"),
        ("/admin/audit?before=garbage", 400, "/admin/audit"),
        ("/admin/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa", 404, "/admin/connections"),
        ("/admin/events/nonsense", 404, "/admin/events"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), status, "{path}");
        let page = res.text().await.unwrap();
        assert!(page.contains("connect-hub admin"), "{path}: {page}");
        assert!(page.contains("href=\"/admin/events\">Events</a>"), "the console's navigation: {path}");
        assert!(page.contains(&format!("href=\"{back}\" id=\"error-back\"")), "{path}: {page}");
        assert!(!page.contains("Start again"), "{path}");
        assert!(!page.contains("Query deserialize error"), "{path}: {page}");
    }
}

#[tokio::test]
async fn the_dashboard_counts_connections_events_and_shows_failures() {
    let app = spawn_app_with(forwarding).await;
    app.connect_company(6847).await;
    app.connect(None).await;
    for _ in 0..3 {
        app.fake.push_inspection_fault(500);
    }
    app.send_event(CREATE).await;
    app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":5,"iCompanyID":9001}"#).await;
    app.state.worker.drain().await.unwrap();
    let id = app.connection_id_for(6847).await;
    app.fake.push_exchange_fault(connect_hub::demo::snapinspect::Fault::Status(503));
    let _ = app.state.tokens.refresh(&id, "test").await;

    app.sign_in().await;
    let page = app.page("/admin").await;
    assert!(page.contains("href=\"/admin/connections?status=active\""));
    assert!(page.contains("<span class=\"stat\" id=\"dead-count\">1</span>"), "one dead event");
    assert!(page.contains("<span class=\"stat\" id=\"unmatched-count\">1</span>"), "one unmatched event");
    assert!(page.contains("ExchangeToken answered HTTP 503"), "the refresh failure is listed");
    assert!(page.contains(&format!("/admin/connections/{id}")));
}

#[tokio::test]
async fn refresh_failures_on_the_dashboard_name_the_connection() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (app, id) = signicat_at(&format!("http://127.0.0.1:{port}/token")).await;
    let _ = app.state.tokens.token(&id).await;
    app.sign_in().await;
    let page = app.page("/admin").await;
    // Cut with an ellipsis in the table if long; the whole name is its title.
    let link = format!("<a class=\"cut\" href=\"/admin/connections/{id}\" title=\"Signicat test\">Signicat test</a>");
    assert!(page.contains(&link), "{page}");
}

#[tokio::test]
async fn the_connection_list_searches_by_company_and_name_and_filters_by_status() {
    let app = spawn_app().await;
    app.connect_company(6847).await;
    app.connect_company(7012).await;
    app.sign_in().await;
    let all = app.page("/admin/connections").await;
    assert!(all.contains("Harbour View Realty") && all.contains("Northside Property Inspections"));
    let by_id = app.page("/admin/connections?q=6847").await;
    assert!(by_id.contains("Harbour View Realty") && !by_id.contains("Northside"));
    let by_name = app.page("/admin/connections?q=northside").await;
    assert!(by_name.contains("Northside") && !by_name.contains("Harbour View Realty"));
    let none = app.page("/admin/connections?status=needs_reconnect").await;
    assert!(none.contains("No connections match"));
    assert_eq!(app.get("/admin/connections?status=bogus").await.status(), 400);
}

#[tokio::test]
async fn a_bad_connection_status_shows_the_list_with_the_message_beside_it() {
    let app = crate::helpers::spawn_app().await;
    app.connect_company(6847).await;
    app.sign_in().await;
    let res = app.get("/admin/connections?status=bogus").await;
    assert_eq!(res.status(), 400);
    let page = unescape(&res.text().await.unwrap());
    let beside = page.split("id=\"status-error\">").nth(1).expect("a message beside the status");
    assert!(beside.split('<').next().unwrap().contains("bogus"), "{page}");
    assert!(page.contains("<h1>Connections</h1>") && page.contains("Harbour View Realty"), "the list, unfiltered");
    let good = app.get("/admin/connections?status=active").await;
    assert_eq!(good.status(), 200);
    assert!(!good.text().await.unwrap().contains("status-error"));
}

#[tokio::test]
async fn the_connection_page_shows_token_state_but_never_a_token_and_exchange_now_works() {
    let app = spawn_app().await;
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    let csrf = app.sign_in().await;
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("fingerprint") && page.contains("version 1"));
    assert!(page.contains("<dd id=\"last-exchange\">never</dd>"));
    assert!(!page.contains(&connected.access_token) && !page.contains(&connected.refresh_token));

    let res = app.admin_post(&format!("/admin/connections/{id}/exchange"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.fake.exchanges(), 1);
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("Exchanged: a new token pair is stored"), "a flash says what happened");
    assert!(!page.contains("<dd id=\"last-exchange\">never</dd>"));
    assert!(page.contains("version 2"));
    assert!(page.contains(&format!("<td class=\"actor\">{ADMIN_EMAIL}</td>")), "the audit trail names the admin");
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert!(!page.contains(secrecy::ExposeSecret::expose_secret(stored.access.as_ref().unwrap())));
    // The flash is shown once.
    assert!(!app.page(&format!("/admin/connections/{id}")).await.contains("Exchanged:"));
}

#[tokio::test]
async fn a_failed_exchange_is_explained_on_the_page() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let csrf = app.sign_in().await;
    app.fake.push_exchange_fault(connect_hub::demo::snapinspect::Fault::Status(502));
    app.admin_post(&format!("/admin/connections/{id}/exchange"), &[("csrf", &csrf)]).await;
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("The exchange did not happen") && page.contains("HTTP 502"), "{page}");
}

#[tokio::test]
async fn a_refused_exchange_reads_as_a_sentence_with_snapinspects_json_folded_away() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let csrf = app.sign_in().await;
    app.fake.revoke_grant(6847);
    app.admin_post(&format!("/admin/connections/{id}/exchange"), &[("csrf", &csrf)]).await;
    let page = crate::helpers::unescape(&app.page(&format!("/admin/connections/{id}")).await);
    let sentence =
        "SnapInspect refused the refresh token (HTTP 400): the refresh token is unknown or was already used.";
    assert!(
        page.contains(&format!(
            "id=\"flash\">The exchange did not happen: the connection needs to be reconnected: {sentence} \
             SnapInspect's own answer is under Last error.</p>"
        )),
        "the flash is a sentence: {page}"
    );
    assert!(page.contains(&format!("<dd id=\"last-error\">{sentence} (")), "{page}");
    // The raw answer is only inside folded details (Last error, the audit trail), never in a
    // sentence or the flash.
    let raw = r#""error":"invalid_grant""#;
    let folded = format!("<summary>The provider's answer</summary><pre>HTTP 400: {{{raw}");
    assert!(page.contains(&format!("<details id=\"last-error-detail\">{folded}")), "{page}");
    assert_eq!(page.matches(raw).count(), page.matches(&folded).count(), "every copy is folded away: {page}");
    // The list and the dashboard show the sentence alone.
    let list = crate::helpers::unescape(&app.page("/admin/connections").await);
    assert!(list.contains(sentence) && !list.contains("invalid_grant"), "{list}");
    let dashboard = crate::helpers::unescape(&app.page("/admin").await);
    assert!(!dashboard.contains(r#""error":"#), "{dashboard}");
}

#[tokio::test]
async fn disconnecting_takes_a_confirmation_and_deletes_the_tokens() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let csrf = app.sign_in().await;
    let confirm = app.page(&format!("/admin/connections/{id}/disconnect")).await;
    assert!(confirm.contains("cannot be recovered") && confirm.contains("Yes, disconnect"));
    assert!(app.state.store.tokens(&id).await.unwrap().unwrap().access.is_some(), "nothing happens on GET");
    let res = app.admin_post(&format!("/admin/connections/{id}/disconnect"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let tokens = app.state.store.tokens(&id).await.unwrap().unwrap();
    assert!(tokens.access.is_none() && tokens.refresh.is_none(), "the tokens are deleted");
    assert_eq!(tokens.status, ConnectionStatus::Disconnected);
    let page = app.page(&format!("/admin/connections/{id}")).await;
    assert!(page.contains("no token stored") && page.contains("disconnect"));
    // Events for a disconnected company wait; reconnecting brings the same connection back.
    let ev = app.send_event(CREATE).await;
    assert_eq!(app.event(&ev).await.state, "unmatched");
    app.connect(Some(6847)).await;
    assert_eq!(app.connection_id_for(6847).await, id);
    assert_eq!(app.event(&ev).await.state, "pending");
}

#[tokio::test]
async fn an_unidentified_connection_is_assigned_its_company_and_its_events_follow() {
    let app = spawn_app().await;
    app.connect(None).await;
    app.connect_company(7012).await;
    let unidentified =
        app.state.store.connections().await.unwrap().into_iter().find(|c| c.company_id.is_none()).unwrap().id;
    let waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":1,"iCompanyID":9001}"#).await;
    let csrf = app.sign_in().await;
    let page = app.page(&format!("/admin/connections/{unidentified}")).await;
    assert!(page.contains("Assign SnapInspect company id"));

    // A company that already has a connection is refused, with the reason.
    app.admin_post(&format!("/admin/connections/{unidentified}/assign"), &[("csrf", &csrf), ("company_id", "7012")])
        .await;
    assert!(app.page(&format!("/admin/connections/{unidentified}")).await.contains("already has connection"));
    // Garbage is refused too.
    app.admin_post(&format!("/admin/connections/{unidentified}/assign"), &[("csrf", &csrf), ("company_id", "abc")])
        .await;
    assert!(app.page(&format!("/admin/connections/{unidentified}")).await.contains("Not assigned"));

    app.admin_post(&format!("/admin/connections/{unidentified}/assign"), &[("csrf", &csrf), ("company_id", "9001")])
        .await;
    let page = app.page(&format!("/admin/connections/{unidentified}")).await;
    assert!(page.contains("Assigned SnapInspect company 9001; 1 waiting events are now queued"), "{page}");
    let c = app.state.store.connection(&unidentified).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Active);
    assert_eq!(c.company_id.unwrap().get(), 9001);
    assert_eq!(app.event(&waiting).await.state, "pending");
}

#[tokio::test]
async fn the_event_list_pages_by_keyset_and_keeps_its_filter() {
    let app = spawn_app().await;
    for i in 0..120 {
        let company = if i % 2 == 0 { 6847 } else { 7012 };
        app.send_event(&format!(r#"{{"sType":"Create_Inspection","iInspectionID":{i},"iCompanyID":{company}}}"#)).await;
    }
    app.sign_in().await;
    let ids = |page: &str| -> Vec<String> {
        page.match_indices("href=\"/admin/events/evt_").map(|(i, _)| page[i + 20..i + 50].to_owned()).collect()
    };
    let link = |page: &str, id: &str| -> Option<String> {
        let marker = format!("id=\"{id}\"");
        let end = page.find(&marker)?;
        let start = page[..end].rfind("href=\"")? + 6;
        // The page escapes `&` in attributes, as HTML wants; a browser unescapes it.
        Some(page[start..].split('"').next().unwrap().replace("&#38;", "&").replace("&amp;", "&"))
    };
    let first = app.page("/admin/events").await;
    let page1 = ids(&first);
    assert_eq!(page1.len(), 50);
    assert!(link(&first, "newer").is_none(), "nothing newer than the first page");
    let second = app.page(&link(&first, "older").expect("an older page")).await;
    let page2 = ids(&second);
    assert_eq!(page2.len(), 50);
    let third = app.page(&link(&second, "older").unwrap()).await;
    let page3 = ids(&third);
    assert_eq!(page3.len(), 20);
    let all: std::collections::HashSet<&String> = page1.iter().chain(&page2).chain(&page3).collect();
    assert_eq!(all.len(), 120, "every event exactly once across the pages");
    // Newest first: the most recent event opens the first page.
    let newest = app.state.store.events(&Default::default(), 1).await.unwrap();
    assert_eq!(page1[0], newest[0].public_id);
    assert!(link(&third, "older").is_none(), "the end");
    let back = app.page(&link(&third, "newer").unwrap()).await;
    assert_eq!(ids(&back), page2, "newer goes back to the same page");

    // Filtered by company, paging keeps the filter.
    let filtered = app.page("/admin/events?company=7012").await;
    assert_eq!(ids(&filtered).len(), 50);
    let next = link(&filtered, "older").unwrap();
    assert!(next.contains("company=7012"), "{next}");
    assert_eq!(ids(&app.page(&next).await).len(), 10);
    assert!(app.page("/admin/events?type=Nothing_Like_This").await.contains("No events match"));
    assert_eq!(app.get("/admin/events?company=abc").await.status(), 400);
    assert_eq!(app.get("/admin/events?before=abc").await.status(), 400);
}

#[tokio::test]
async fn a_bad_event_filter_shows_the_list_with_the_message_beside_the_field() {
    let app = crate::helpers::spawn_app().await;
    app.sign_in().await;
    for (query, field, words) in [
        ("company=Harbour", "company-error", "a company id is a positive integer"),
        ("status=bogus", "status-error", "bogus"),
        ("after=garbage", "page-error", "This page link is broken"),
        ("before=garbage&company=7", "page-error", "This page link is broken"),
    ] {
        let res = app.get(&format!("/admin/events?{query}")).await;
        assert_eq!(res.status(), 400, "{query}");
        let page = unescape(&res.text().await.unwrap());
        let beside = page.split(&format!("id=\"{field}\">")).nth(1).unwrap_or_else(|| panic!("{query}: {page}"));
        assert!(beside.split('<').next().unwrap().contains(words), "{query}: {page}");
        // Still the events list, in the console, with its navigation.
        assert!(page.contains("<h1>Events</h1>"), "{query}");
        assert!(page.contains("href=\"/admin/audit\""), "{query}");
        assert!(!page.contains("Query deserialize error"), "{query}");
        assert!(!page.contains("Start again"), "{query}");
    }
    // A good filter is no error.
    assert_eq!(app.get("/admin/events?company=7&status=dead").await.status(), 200);
}

#[tokio::test]
async fn the_event_page_shows_the_payload_and_every_attempt_and_replays() {
    let app = spawn_app_with(forwarding).await;
    app.connect_company(6847).await;
    for _ in 0..3 {
        app.fake.push_inspection_fault(503);
    }
    let id = app.send_event(CREATE).await;
    app.state.worker.drain().await.unwrap();
    let csrf = app.sign_in().await;
    let page = app.page(&format!("/admin/events/{id}")).await;
    assert!(page.contains("&#34;sType&#34;: &#34;Create_Inspection&#34;"), "pretty-printed payload");
    let attempts = &page[page.find("id=\"attempts\"").expect("the attempts table")..];
    assert_eq!(attempts.matches("<td>503</td>").count(), 3, "every attempt, with its status");
    assert!(page.contains("id=\"event-status\">dead"));

    let res = app.admin_post(&format!("/admin/events/{id}/replay"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.event(&id).await.state, "pending");
    app.state.worker.drain().await.unwrap();
    let page = app.page(&format!("/admin/events/{id}")).await;
    assert!(page.contains("id=\"event-status\">done"));
    assert!(page.contains("iInspectionID"), "the inspection as read");
    assert_eq!(app.get("/admin/events/evt_nonsense").await.status(), 404);
}

#[tokio::test]
async fn replaying_all_dead_events_of_a_filter_from_the_console() {
    let app = spawn_app_with(|v| {
        forwarding(v);
        v.insert("RETRY_SCHEDULE".into(), "0s".into());
    })
    .await;
    app.connect_company(6847).await;
    app.connect_company(7012).await;
    for _ in 0..4 {
        app.fake.push_inspection_fault(500);
    }
    let a = app.send_event(CREATE).await;
    let b = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":2,"iCompanyID":7012}"#).await;
    app.state.worker.drain().await.unwrap();
    let csrf = app.sign_in().await;
    let page = app.page("/admin/events?status=dead&company=7012").await;
    assert!(page.contains("1 dead events match this filter"));
    let res = app.admin_post("/admin/events/replay-dead", &[("csrf", &csrf), ("company", "7012"), ("type", "")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.event(&a).await.state, "dead");
    assert_eq!(app.event(&b).await.state, "pending");
    let audit = app.page("/admin/audit").await;
    assert!(audit.contains("1 dead events replayed"));
}

#[tokio::test]
async fn unmatched_and_rejected_events_can_be_dismissed_and_others_cannot() {
    let (app, company) = (crate::helpers::spawn_app().await, 6847);
    let waiting = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":4,"iCompanyID":9999}"#).await;
    let rejected = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":5}"#).await;
    let csrf = app.sign_in().await;
    let page = app.page(&format!("/admin/events/{waiting}")).await;
    assert!(page.contains("id=\"dismiss\"") && !page.contains("id=\"replay\""), "{page}");
    for id in [&waiting, &rejected] {
        let res = app.admin_post(&format!("/admin/events/{id}/dismiss"), &[("csrf", &csrf)]).await;
        assert_eq!(res.status(), 303);
        assert!(app.state.store.event(id).await.unwrap().is_none(), "{id} is gone");
    }
    let audit = app.state.store.audit_entries(None, None, 5).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "event_dismissed").count(), 2);
    assert!(audit.iter().any(|a| a.detail.as_deref() == Some(&format!("event {waiting} (was unmatched)")[..])));

    // A matched event stays, and says why.
    app.connect_company(company).await;
    let matched = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":6,"iCompanyID":6847}"#).await;
    let res = app.admin_post(&format!("/admin/events/{matched}/dismiss"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    assert!(app.state.store.event(&matched).await.unwrap().is_some());
    let page = app.page(&format!("/admin/events/{matched}")).await;
    assert!(page.contains("Not dismissed"), "{page}");
    assert!(!page.contains("id=\"dismiss\""));
    // Without the form's token, nothing happens.
    let other = app.send_event(r#"{"sType":"Create_Inspection","iInspectionID":7}"#).await;
    assert_eq!(app.admin_post(&format!("/admin/events/{other}/dismiss"), &[("csrf", "wrong")]).await.status(), 403);
    assert!(app.state.store.event(&other).await.unwrap().is_some());
}

#[tokio::test]
async fn the_audit_log_records_who_did_what() {
    let app = spawn_app().await;
    let id = app.connect_company(6847).await;
    let csrf = app.sign_in().await;
    app.admin_post(&format!("/admin/connections/{id}/exchange"), &[("csrf", &csrf)]).await;
    app.admin_post(&format!("/admin/connections/{id}/disconnect"), &[("csrf", &csrf)]).await;
    let page = app.page("/admin/audit").await;
    for needle in
        ["connect", "sign in", "exchange", "disconnect", "end-user", &format!("<td class=\"actor\">{ADMIN_EMAIL}</td>")]
    {
        assert!(page.contains(needle), "{needle}");
    }
}

#[tokio::test]
async fn the_audit_log_shows_the_admins_email_and_the_time_apart_from_its_age() {
    let app = crate::helpers::spawn_app().await;
    app.sign_in().await;
    let page = app.page("/admin/audit").await;
    assert!(page.contains(&format!("<td class=\"actor\">{}</td>", crate::helpers::ADMIN_EMAIL)), "{page}");
    assert!(!page.contains("admin:"), "{page}");
    assert!(page.contains("<br><span class=\"muted\">0 s ago</span></td>") || page.contains("s ago</span></td>"));
}
