//! The fake's pages for people: the authorize page (Allow / Deny, after checking the four
//! documented parameters), the redirect back, and the page that fires webhooks.

use std::collections::HashMap;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use askama::Template;
use serde_json::json;

use super::{FakeSnapInspect, COMPANIES, FAKE_CSP};
use crate::demo::fakes::fields;

#[derive(Template)]
#[template(path = "fake/authorize.html")]
struct AuthorizePage<'a> {
    client_id: &'a str,
    redirect_uri: &'a str,
    state: &'a str,
    companies: &'a [(i64, &'a str)],
}

#[derive(Template)]
#[template(path = "fake/refused.html")]
struct RefusedPage<'a> {
    reason: &'a str,
}

fn refused(reason: &str) -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .body(RefusedPage { reason }.render().unwrap_or_else(|_| reason.to_owned()))
}

/// The checks the authorize endpoint makes on the four documented parameters.
fn check_authorize(fake: &FakeSnapInspect, p: &HashMap<String, String>) -> Result<(), String> {
    match p.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(other) => return Err(format!("response_type must be `code`, got `{other}`")),
        None => return Err("response_type is required".into()),
    }
    match p.get("client_id") {
        Some(id) if *id == fake.config.client_id => {}
        Some(_) => return Err("unknown client_id".into()),
        None => return Err("client_id is required".into()),
    }
    match p.get("redirect_uri") {
        Some(r) if *r == fake.config.redirect_uri => {}
        Some(_) => return Err("redirect_uri does not match the registered redirect URL".into()),
        None => return Err("redirect_uri is required".into()),
    }
    if p.get("state").is_none_or(|s| s.is_empty()) {
        return Err("state is required".into());
    }
    Ok(())
}

pub(super) async fn authorize_page(req: HttpRequest, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let p = match fields(req.query_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    if let Err(reason) = check_authorize(&fake, &p) {
        return refused(&reason);
    }
    let page = AuthorizePage {
        client_id: &p["client_id"],
        redirect_uri: &p["redirect_uri"],
        state: &p["state"],
        companies: COMPANIES,
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render().unwrap_or_default())
}

pub(super) async fn authorize_decision(body: web::Bytes, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let mut p = match fields(&body) {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    p.insert("response_type".into(), "code".into());
    if let Err(reason) = check_authorize(&fake, &p) {
        return refused(&reason);
    }
    let mut back = url::Url::parse(&fake.config.redirect_uri).expect("registered redirect_uri is a URL");
    if p.get("decision").map(String::as_str) == Some("allow") {
        let company = p.get("company").and_then(|c| c.trim().parse::<i64>().ok()).filter(|c| *c > 0);
        let (access, refresh) = fake.grant(company);
        back.query_pairs_mut()
            .append_pair("access_token", &access)
            .append_pair("token_type", "Bearer")
            .append_pair("state", &p["state"])
            .append_pair("refresh_token", &refresh);
    } else {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user declined to connect.")
            .append_pair("state", &p["state"]);
    }
    HttpResponse::SeeOther().insert_header((header::LOCATION, back.as_str())).finish()
}

#[derive(Template)]
#[template(path = "fake/fire_webhook.html")]
struct FirePage<'a> {
    target: Option<String>,
    message: Option<String>,
    /// What was sent, shown wrapped under the message.
    sent: Option<String>,
    /// The hub's origin (from the webhook URL), for links to where the event shows up.
    hub: Option<String>,
    /// Whether the hub has the demo's fake receiver to link to.
    receiver: bool,
    companies: &'a [(i64, &'a str)],
}

/// The origin of the hub the webhooks go to: its console, and in the demo the fake receiver, live
/// there.
fn hub_origin(fake: &FakeSnapInspect) -> Option<String> {
    let url = url::Url::parse(fake.config.webhook_url.as_deref()?).ok()?;
    Some(url.origin().ascii_serialization())
}

/// The webhook URL with its last path segment (the secret) masked, for display.
fn shown_target(fake: &FakeSnapInspect) -> Option<String> {
    let url = fake.config.webhook_url.as_deref()?;
    Some(match url.rsplit_once('/') {
        Some((head, _)) => format!("{head}/…"),
        None => "…".to_owned(),
    })
}

pub(super) async fn fire_webhook_page(fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let page = FirePage {
        target: shown_target(&fake),
        message: None,
        sent: None,
        hub: hub_origin(&fake),
        receiver: fake.links_receiver,
        companies: COMPANIES,
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .body(page.render().unwrap_or_default())
}

pub(super) async fn fire_webhook_submit(body: web::Bytes, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let p = fields(&body).unwrap_or_default();
    let company: i64 = p.get("company").and_then(|c| c.parse().ok()).unwrap_or(COMPANIES[0].0);
    let inspection: i64 = p.get("inspection").and_then(|c| c.parse().ok()).unwrap_or(1_388_563);
    let kind = p.get("type").map(String::as_str).unwrap_or("Create_Inspection");
    let payload = match kind {
        "Update_Inspection_Status" => {
            json!({ "sType": kind, "iInspectionID": inspection, "iCompanyID": company, "sStatus": "Completed" })
        }
        "Create_Review" | "Review_Signed" => {
            json!({ "sType": kind, "iInsReviewID": inspection + 1, "iInspectionID": inspection, "iCompanyID": company })
        }
        _ => {
            json!({ "sType": "Create_Inspection", "iInspectionID": inspection, "iCompanyID": company })
        }
    };
    let message = match fake.config.webhook_url.as_deref() {
        None => "No webhook URL is configured (start the fake with --webhook-url).".to_owned(),
        Some(url) => match fake.fire_webhook(url, &payload).await {
            Ok(status) => format!("Sent {kind} for company {company}: the hub answered HTTP {status}."),
            Err(e) => format!("Sending failed: {e}"),
        },
    };
    let sent = serde_json::to_string_pretty(&payload).ok();
    let page = FirePage {
        target: shown_target(&fake),
        message: Some(message),
        sent,
        hub: hub_origin(&fake),
        receiver: fake.links_receiver,
        companies: COMPANIES,
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .body(page.render().unwrap_or_default())
}
