//! `/api/v1/endpoints`: list, create (the secret is in the answer once), get, change, delete and
//! rotate the secret. Endpoints are organisation-wide, so only keys for every connection manage them.

use std::time::Duration;

use actix_web::{http::header, web, HttpResponse};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    body::{parse_json, parse_json_or_default},
    iso, ApiCaller,
};
use crate::{
    delivery::manage::{self, EndpointInput, ManageError},
    error::{ApiError, AppError},
    state::AppState,
    store::Endpoint,
    time::rfc3339,
};

/// The old secret keeps signing this long when `overlap_secs` is not given (as the CLI does).
const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Mounted inside the `/api/v1` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/endpoints").route(web::get().to(list)).route(web::post().to(create)))
        .service(
            web::resource("/endpoints/{id}")
                .route(web::get().to(get))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .route("/endpoints/{id}/rotate-secret", web::post().to(rotate));
}

impl ApiCaller {
    /// Endpoints receive every connection's events: a key limited to some connections may not see
    /// or change them, and a read-only key may only read them.
    fn check_may_manage_endpoints(&self, write: bool) -> Result<(), ApiError> {
        if self.caller().connections.is_some() {
            return Err(ApiError(AppError::Forbidden {
                code: "connection_scoped_key",
                message:
                    "endpoints receive every connection's events: use a key that is not limited to some connections"
                        .into(),
            }));
        }
        if write && self.caller().read_only {
            return Err(ApiError(AppError::Forbidden {
                code: "read_only_key",
                message: "this API key is read-only: it can list endpoints but not change them".into(),
            }));
        }
        Ok(())
    }
}

/// The endpoint URLs the API takes, exactly as `static/openapi.json` documents them (a test checks
/// that the two agree): http(s), a host name, an optional port, path and query. Anything the
/// document calls invalid is refused, so the document is the contract (IPv6 literals are for the
/// command line and the console).
pub(crate) const URL_PATTERN: &str = r"^https?://([A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,9}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})(:([1-9][0-9]{0,3}|[1-5][0-9]{4}))?(/([A-Za-z0-9._~/-]|%[0-9A-Fa-f]{2})*)?(\?([A-Za-z0-9._~=&-]|%[0-9A-Fa-f]{2})*)?$";

static URL_SHAPE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(URL_PATTERN).expect("the documented pattern compiles"));

fn documented_url(url: Option<&str>) -> Result<(), ApiError> {
    match url {
        Some(u) if !URL_SHAPE.is_match(u) => Err(api_error(ManageError::Invalid {
            field: "url",
            message: "the endpoint URL must be http(s)://host[:port][/path][?query] with a host name or an IPv4 \
                      address (see the OpenAPI document's pattern)"
                .into(),
        })),
        _ => Ok(()),
    }
}

/// JSON names each event type on its own, so an empty one is a mistake, not a separator to skip
/// (as the command line's `--events a,,b` may be).
fn no_blank_types(events: &[String]) -> Result<(), ApiError> {
    if events.iter().any(|t| t.trim().is_empty()) {
        return Err(api_error(ManageError::Invalid { field: "events", message: "an event type is empty".into() }));
    }
    Ok(())
}

fn api_error(e: ManageError) -> ApiError {
    match e {
        ManageError::Invalid { field, message } => {
            let code = match field {
                "url" => "invalid_url",
                "events" => "invalid_events",
                "description" => "invalid_description",
                "overlap" => "invalid_overlap",
                _ => "bad_request",
            };
            ApiError(AppError::BadRequest { code, title: "Invalid endpoint", message })
        }
        other => ApiError(other.into()),
    }
}

fn endpoint_json(e: &Endpoint) -> Value {
    json!({
        "id": e.id.as_str(),
        "url": e.url,
        "description": e.description,
        "events": e.event_types.as_slice(),
        "enabled": e.enabled,
        "failing": manage::failing(e),
        "disabled_reason": e.disabled_reason,
        "disabled_at": iso(e.disabled_at),
        "last_success_at": iso(e.last_success_at),
        "last_failure_at": iso(e.last_failure_at),
        "last_status": e.last_status,
        "previous_secret_until": iso(e.previous_until.filter(|u| *u > crate::time::now_ms())),
        "created_at": iso(Some(e.created_at)),
        "updated_at": iso(Some(e.updated_at)),
        // Allowed but likely a mistake: event types the hub does not know (a misspelt filter).
        "warnings": e.event_types.warnings(),
    })
}

fn ok(body: Value) -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

#[tracing::instrument(skip_all)]
async fn list(caller: ApiCaller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.check_may_manage_endpoints(false)?;
    let all: Vec<Value> = state.store.endpoints().await?.iter().map(endpoint_json).collect();
    Ok(ok(json!({ "endpoints": all })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpointBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    description: String,
}

#[tracing::instrument(skip_all)]
async fn create(caller: ApiCaller, body: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.check_may_manage_endpoints(true)?;
    let b: NewEndpointBody = parse_json(&body)?;
    no_blank_types(&b.events)?;
    documented_url(Some(&b.url))?;
    let input = EndpointInput { url: b.url, events: b.events, description: b.description };
    let policy = state.worker.dispatcher().clients().policy();
    let max = state.settings.endpoints_max;
    let (id, secret) = manage::add(&state.store, policy, max, &input, &caller.actor()).await.map_err(api_error)?;
    state.endpoints_changed().await;
    let e = manage::load(&state.store, id.as_str()).await.map_err(api_error)?;
    let mut body = endpoint_json(&e);
    body["secret"] = json!(secret.expose_secret());
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::LOCATION, format!("/api/v1/endpoints/{id}")))
        .json(body))
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn get(caller: ApiCaller, id: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.check_may_manage_endpoints(false)?;
    let e = manage::load(&state.store, &id).await.map_err(api_error)?;
    Ok(ok(endpoint_json(&e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    url: Option<String>,
    description: Option<String>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn update(
    caller: ApiCaller,
    id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.check_may_manage_endpoints(true)?;
    let b: ChangeBody = parse_json(&body)?;
    let mut e = manage::load(&state.store, &id).await.map_err(api_error)?;
    no_blank_types(b.events.as_deref().unwrap_or_default())?;
    documented_url(b.url.as_deref())?;
    if b.url.is_some() || b.description.is_some() || b.events.is_some() {
        // What is not given stays as it is.
        let input = EndpointInput {
            url: b.url.unwrap_or(e.url),
            events: b.events.unwrap_or_else(|| e.event_types.as_slice().to_vec()),
            description: b.description.unwrap_or(e.description),
        };
        let policy = state.worker.dispatcher().clients().policy();
        e = manage::edit(&state.store, policy, e.id.as_str(), &input, &caller.actor()).await.map_err(api_error)?;
    }
    if let Some(enabled) = b.enabled.filter(|on| *on != e.enabled) {
        e = manage::set_enabled(&state.store, e.id.as_str(), enabled, &caller.actor()).await.map_err(api_error)?;
    }
    state.endpoints_changed().await;
    Ok(ok(endpoint_json(&e)))
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn delete(
    caller: ApiCaller,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.check_may_manage_endpoints(true)?;
    manage::remove(&state.store, &id, &caller.actor()).await.map_err(api_error)?;
    state.endpoints_changed().await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// A JSON number: `86400` and `86400.0` are the same integer to JSON Schema, so both are taken.
    overlap_secs: Option<serde_json::Number>,
}

/// Whole seconds from a JSON number, or a message for the `invalid_overlap` error.
fn whole_seconds(n: &serde_json::Number) -> Result<u64, String> {
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 2_592_000.0).map(|f| f as u64))
        .ok_or_else(|| format!("overlap_secs must be a whole number of seconds from 0 to 2592000, not {n}"))
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn rotate(
    caller: ApiCaller,
    id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.check_may_manage_endpoints(true)?;
    // The body is optional: none (or `{}`) keeps the old secret signing for a day.
    let b: RotateBody = parse_json_or_default(&body)?;
    let overlap = match &b.overlap_secs {
        None => DEFAULT_OVERLAP,
        Some(n) => Duration::from_secs(whole_seconds(n).map_err(|message| {
            ApiError(AppError::BadRequest { code: "invalid_overlap", title: "Invalid endpoint", message })
        })?),
    };
    let (secret, until) = manage::rotate(&state.store, &id, overlap, &caller.actor()).await.map_err(api_error)?;
    state.endpoints_changed().await;
    let e = manage::load(&state.store, &id).await.map_err(api_error)?;
    let mut body = endpoint_json(&e);
    body["secret"] = json!(secret.expose_secret());
    body["previous_secret_until"] = if overlap.is_zero() { Value::Null } else { json!(rfc3339(until)) };
    Ok(ok(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_pattern_is_the_one_the_document_publishes() {
        let doc: Value = serde_json::from_str(super::super::contract::OPENAPI).unwrap();
        for schema in ["NewEndpoint", "EndpointChange"] {
            assert_eq!(doc["components"]["schemas"][schema]["properties"]["url"]["pattern"], URL_PATTERN, "{schema}");
        }
        assert!(URL_SHAPE.is_match("https://hooks.example.com:8443/in?x=1"));
        assert!(!URL_SHAPE.is_match("http://a*"));
        assert!(!URL_SHAPE.is_match("ftp://example.com/"));
        assert!(URL_SHAPE.is_match("http://10.0.0.1/"), "the guard, not the pattern, judges addresses");
        assert!(!URL_SHAPE.is_match("http://256.0.0.1/"));
        assert!(!URL_SHAPE.is_match("http://[::1]/"), "IPv6 literals are for the CLI and the console");
    }
}
