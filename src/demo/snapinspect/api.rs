//! The fake's API: ExchangeToken (all six fields checked, both tokens rotated, the old pair
//! invalidated), `/user` and inspection reads for a valid token only.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{token, FakeSnapInspect, Fault, Grant, UserShape, COMPANIES};
use crate::demo::fakes::{fields, is_form};

fn oauth_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({ "error": error, "error_description": description }))
}

pub(super) async fn exchange_token(
    req: HttpRequest,
    body: web::Bytes,
    fake: web::Data<FakeSnapInspect>,
) -> HttpResponse {
    let fault = {
        let mut s = fake.state();
        s.exchange_calls += 1;
        s.exchange_faults.pop_front()
    };
    match fault {
        Some(Fault::Status(code)) => return oauth_error(code, "server_error", "scripted failure"),
        Some(Fault::StatusRetryAfter(code, secs)) => {
            let mut res = oauth_error(code, "temporarily_unavailable", "scripted failure");
            res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return res;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::NoRefreshToken) | None => {}
    }
    let keep_refresh = matches!(fault, Some(Fault::NoRefreshToken));
    if !is_form(&req) {
        return oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded");
    }
    let p = match fields(&body) {
        Ok(p) => p,
        Err(e) => return oauth_error(400, "invalid_request", &e),
    };
    for name in ["response_type", "client_id", "client_secret", "redirect_uri", "state", "refresh_token"] {
        if p.get(name).is_none_or(|v| v.is_empty()) {
            return oauth_error(400, "invalid_request", &format!("{name} is required"));
        }
    }
    if p["response_type"] != "code" {
        return oauth_error(400, "unsupported_response_type", "response_type must be code");
    }
    if p["client_id"] != fake.config.client_id || p["client_secret"] != fake.config.client_secret {
        return oauth_error(401, "invalid_client", "unknown client or wrong secret");
    }
    if p["redirect_uri"] != fake.config.redirect_uri {
        return oauth_error(400, "invalid_request", "redirect_uri does not match the registered redirect URL");
    }
    let mut s = fake.state();
    let Some(old_access) = s.refresh.remove(&p["refresh_token"]) else {
        return oauth_error(400, "invalid_grant", "the refresh token is unknown or was already used");
    };
    // Rotate: the old pair stops working, a new one is issued for the same grant.
    let grant = s.access.remove(&old_access).unwrap_or(Grant { company: None, user_id: 0 });
    let access = token("si_at_");
    s.access.insert(access.clone(), grant);
    s.exchanges += 1;
    if keep_refresh {
        s.refresh.insert(p["refresh_token"].clone(), access.clone());
        s.save();
        return HttpResponse::Ok().json(json!({ "access_token": access, "token_type": "Bearer", "state": p["state"] }));
    }
    let refresh = token("si_rt_");
    s.refresh.insert(refresh.clone(), access.clone());
    s.save();
    HttpResponse::Ok().json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "state": p["state"],
        "refresh_token": refresh,
    }))
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn authorised(req: &HttpRequest, fake: &FakeSnapInspect) -> Option<Grant> {
    let token = bearer(req)?;
    fake.state().access.get(&token).cloned()
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "invalid_token" }))
}

pub(super) async fn user(req: HttpRequest, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let delay = {
        let mut s = fake.state();
        s.user_calls += 1;
        if let Some(token) = bearer(&req) {
            s.user_call_times.entry(token).or_default().push(std::time::Instant::now());
        }
        s.user_delay
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let Some(grant) = authorised(&req, &fake) else {
        return unauthorized();
    };
    let shape = fake.state().user_shape.unwrap_or(UserShape::TopLevel);
    let name = grant
        .company
        .and_then(|c| COMPANIES.iter().find(|(id, _)| *id == c).map(|(_, n)| (*n).to_owned()))
        .or_else(|| grant.company.map(|c| format!("Company {c}")));
    let body = match (shape, grant.company) {
        (UserShape::Fail(code), _) => {
            return HttpResponse::build(
                actix_web::http::StatusCode::from_u16(code)
                    .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
            )
            .json(json!({ "error": "scripted failure" }))
        }
        (_, None) => {
            json!({ "iUserID": grant.user_id, "sName": "Demo Inspector", "sEmail": "inspector@example.com" })
        }
        (UserShape::TopLevel, Some(c)) => json!({
            "iUserID": grant.user_id, "sName": "Demo Inspector", "sEmail": "inspector@example.com",
            "iCompanyID": c, "sCompanyName": name,
        }),
        (UserShape::Nested, Some(c)) => json!({
            "oUser": { "iUserID": grant.user_id, "sName": "Demo Inspector" },
            "oCompany": { "iCompanyID": c, "sName": name },
        }),
    };
    HttpResponse::Ok().json(body)
}

pub(super) async fn inspection(
    req: HttpRequest,
    path: web::Path<String>,
    fake: web::Data<FakeSnapInspect>,
) -> HttpResponse {
    let (fault, delay) = {
        let mut s = fake.state();
        s.inspection_calls += 1;
        (s.inspection_faults.pop_front(), s.inspection_delays.pop_front())
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(code) = fault {
        return HttpResponse::build(
            actix_web::http::StatusCode::from_u16(code).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
        )
        .json(json!({ "error": "scripted failure" }));
    }
    let Some(grant) = authorised(&req, &fake) else {
        return unauthorized();
    };
    let Ok(id) = path.parse::<i64>() else {
        return HttpResponse::NotFound().json(json!({ "error": "no such inspection" }));
    };
    HttpResponse::Ok().json(json!({
        "iInspectionID": id,
        "iCompanyID": grant.company,
        "sTitle": format!("Inspection {id}"),
        "sAddress": "12 Harbour Street",
        "sStatus": "Completed",
    }))
}
