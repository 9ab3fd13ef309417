//! Managing endpoints, the one way the CLI, the console and the API change them: check the input
//! (a URL also against the outbound guard), generate secrets, rotate, and send a test event.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{
    clients::DeliveryClients,
    forward::{deliver, Outcome, Signer},
};
use crate::{
    domain::{
        endpoint::{generate_secret, EndpointId, EndpointUrl, EventTypes},
        EventId,
    },
    outbound::Policy,
    store::{Endpoint, EndpointChange, NewEndpoint, Store},
    time::{format_utc, now_ms, rfc3339},
};

/// The type of the message "Send test event" sends; it goes to that one endpoint only.
pub const TEST_EVENT_TYPE: &str = "endpoint.test";
/// The longest a description may be.
pub const MAX_DESCRIPTION: usize = crate::domain::limits::LIMITS.description;
/// The longest an old secret may keep signing after a rotation.
pub const MAX_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_URL: usize = crate::domain::limits::LIMITS.url;
/// The most event types one filter may name.
pub const MAX_EVENT_TYPES: usize = 100;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// 400: the named field ("url", "events", "description", "overlap") is wrong.
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    /// 404: no endpoint with this id.
    #[error("no endpoint with id {0}")]
    NotFound(String),
    /// 409: there are already `ENDPOINTS_MAX` (`max`) endpoints.
    #[error("{}", too_many(*max))]
    TooMany { max: usize },
    /// 409: the `FORWARD_URL` endpoint cannot be removed: the setting defines it at every start.
    #[error("{FORWARD_DEFINED}")]
    ForwardDefined,
    /// 500
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn too_many(max: usize) -> String {
    let (are, s) = if max == 1 { ("is", "") } else { ("are", "s") };
    format!("There {are} already {max} endpoint{s}, the most ENDPOINTS_MAX allows: remove one, or raise ENDPOINTS_MAX.")
}

const FORWARD_DEFINED: &str = "This endpoint is defined by FORWARD_URL: it would come back at the next start. \
    Unset FORWARD_URL and FORWARD_SECRET and restart to remove it, or disable it to pause its deliveries.";

fn invalid(field: &'static str, message: impl Into<String>) -> ManageError {
    ManageError::Invalid { field, message: message.into() }
}

impl From<ManageError> for crate::error::AppError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid { message, .. } => crate::error::AppError::bad_request(message),
            ManageError::NotFound(id) => crate::error::AppError::NotFound {
                code: "endpoint_not_found",
                message: format!("There is no endpoint with id {id}."),
            },
            e @ ManageError::TooMany { .. } => {
                crate::error::AppError::Conflict { code: "too_many_endpoints", message: e.to_string() }
            }
            e @ ManageError::ForwardDefined => {
                crate::error::AppError::Conflict { code: "defined_by_forward_url", message: e.to_string() }
            }
            ManageError::Internal(e) => crate::error::AppError::Internal(e),
        }
    }
}

/// What a person or a program submits for an endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    pub url: String,
    /// Event types; empty means every type.
    pub events: Vec<String>,
    pub description: String,
}

impl EndpointInput {
    /// From the CLI's and the console's comma-separated list of event types.
    pub fn with_csv(url: &str, events: &str, description: &str) -> Self {
        Self {
            url: url.to_owned(),
            events: events.split(',').map(str::to_owned).collect(),
            description: description.to_owned(),
        }
    }
}

/// What is allowed but will likely never work, one sentence each: event types the hub does not
/// know (a misspelt filter matches nothing). The console shows them beside the field, the API in
/// `warnings`.
pub fn warnings(input: &EndpointInput) -> Vec<String> {
    EventTypes::parse_list(input.events.iter().map(String::as_str)).map(|t| t.warnings()).unwrap_or_default()
}

/// The input, checked.
struct Checked {
    url: EndpointUrl,
    events: EventTypes,
    description: String,
}

/// Parse the input; a URL whose host is an address the outbound guard refuses is refused now, so
/// the person learns it here rather than from failing deliveries (a name is checked on what it
/// resolves to at every delivery).
/// `trusted`: a URL that skips the guard's check if kept as it is (`FORWARD_URL`'s, set by the
/// operator).
fn check(policy: &Policy, input: &EndpointInput, trusted: Option<&str>) -> Result<Checked, ManageError> {
    if input.url.trim().len() > MAX_URL {
        return Err(invalid("url", format!("the endpoint URL is longer than {MAX_URL} characters")));
    }
    let url = EndpointUrl::parse(&input.url).map_err(|e| invalid("url", e.to_string()))?;
    if trusted != Some(url.as_str()) {
        policy.check_url(url.url()).map_err(|b| invalid("url", format!("this URL cannot be used: {b}")))?;
    }
    let events = EventTypes::parse_list(input.events.iter().map(String::as_str))
        .map_err(|e| invalid("events", e.to_string()))?;
    // Counted as given, repeats included: the limit is on what was sent, as the API documents it.
    if input.events.len() > MAX_EVENT_TYPES {
        return Err(invalid("events", format!("name at most {MAX_EVENT_TYPES} event types (none: every type)")));
    }
    // Checked before trimming: a line break or escape sequence would forge lines in `endpoints list`.
    if input.description.chars().any(char::is_control) {
        return Err(invalid("description", "the description may not contain control characters (line breaks, tabs)"));
    }
    let description = input.description.trim();
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(invalid("description", format!("the description is longer than {MAX_DESCRIPTION} characters")));
    }
    Ok(Checked { url, events, description: description.to_owned() })
}

/// Add an endpoint, unless there are already `max` (`ENDPOINTS_MAX`); returns its id and its
/// secret (to show once).
pub async fn add(
    store: &Store,
    policy: &Policy,
    max: usize,
    input: &EndpointInput,
    actor: &str,
) -> Result<(EndpointId, SecretString), ManageError> {
    let c = check(policy, input, None)?;
    let id = EndpointId::generate();
    let secret = generate_secret();
    let new =
        NewEndpoint { id: &id, url: &c.url, description: &c.description, event_types: &c.events, secret: &secret };
    if !store.create_endpoint_within(&new, max, now_ms(), actor).await? {
        return Err(ManageError::TooMany { max });
    }
    Ok((id, secret))
}

/// The endpoint, or `NotFound`.
pub async fn load(store: &Store, id: &str) -> Result<Endpoint, ManageError> {
    let not_found = || ManageError::NotFound(id.chars().take(40).collect());
    let id = EndpointId::parse(id).map_err(|_| not_found())?;
    store.endpoint(&id).await?.ok_or_else(not_found)
}

/// Change the URL, description and event types. The `FORWARD_URL` endpoint keeps its URL: it is
/// the operator's setting (and trusted by the outbound guard), so the console may not move it.
pub async fn edit(
    store: &Store,
    policy: &Policy,
    id: &str,
    input: &EndpointInput,
    actor: &str,
) -> Result<Endpoint, ManageError> {
    let e = load(store, id).await?;
    let forward = e.id.as_str() == EndpointId::FORWARD;
    let c = check(policy, input, forward.then_some(e.url.as_str()))?;
    if forward && c.url.as_str() != e.url {
        return Err(invalid(
            "url",
            "this endpoint's URL is the FORWARD_URL setting: change the setting and restart instead",
        ));
    }
    let change = EndpointChange { url: &c.url, description: &c.description, event_types: &c.events };
    if !store.update_endpoint(&e.id, &change, now_ms(), actor).await? {
        return Err(ManageError::NotFound(e.id.to_string()));
    }
    load(store, e.id.as_str()).await
}

/// Enable (its waiting deliveries then go out in order) or disable (they wait).
pub async fn set_enabled(store: &Store, id: &str, enabled: bool, actor: &str) -> Result<Endpoint, ManageError> {
    let e = load(store, id).await?;
    let reason = if enabled { "" } else { "disabled by an operator" };
    if !store.set_endpoint_enabled(&e.id, enabled, reason, now_ms(), actor).await? {
        return Err(ManageError::NotFound(e.id.to_string()));
    }
    load(store, e.id.as_str()).await
}

/// Remove an endpoint and its deliveries; never the `FORWARD_URL` one, which the setting defines.
pub async fn remove(store: &Store, id: &str, actor: &str) -> Result<(), ManageError> {
    let e = load(store, id).await?;
    if e.id.as_str() == EndpointId::FORWARD {
        return Err(ManageError::ForwardDefined);
    }
    if !store.remove_endpoint(&e.id, now_ms(), actor).await? {
        return Err(ManageError::NotFound(e.id.to_string()));
    }
    Ok(())
}

/// A new secret; the old one also signs for `overlap` (none when zero). Returns the new secret and
/// when the overlap ends.
pub async fn rotate(
    store: &Store,
    id: &str,
    overlap: Duration,
    actor: &str,
) -> Result<(SecretString, i64), ManageError> {
    if overlap > MAX_OVERLAP {
        return Err(invalid("overlap", "the overlap may be at most 30 days"));
    }
    let e = load(store, id).await?;
    let now = now_ms();
    let secret = generate_secret();
    let until = now + overlap.as_millis() as i64;
    if !store.rotate_endpoint_secret(&e.id, &secret, until, now, actor).await? {
        return Err(ManageError::NotFound(e.id.to_string()));
    }
    Ok((secret, until))
}

/// How a test send went.
#[derive(Debug)]
pub struct TestSent {
    pub event_id: String,
    pub status: Option<u16>,
    pub delivered: bool,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub excerpt: Option<String>,
}

/// Send one `endpoint.test` message to this endpoint now, signed like every delivery, and say
/// what happened. Synchronous on purpose: the person who clicks wants the answer on the next page,
/// and a test should neither wait behind the backlog nor be retried for hours. It is sent even to
/// a disabled endpoint (to check it before enabling) and recorded in the audit log only.
pub async fn send_test(
    store: &Store,
    clients: &DeliveryClients,
    id: &str,
    actor: &str,
) -> Result<TestSent, ManageError> {
    let e = load(store, id).await?;
    let now = now_ms();
    let url = EndpointUrl::parse(&e.url).map_err(|err| ManageError::Internal(err.into()))?;
    let secrets = store.endpoint_secrets(&e.id, now).await?.ok_or_else(|| ManageError::NotFound(e.id.to_string()))?;
    let current = Signer::from_secret(secrets.current.expose_secret())?;
    let previous = secrets.previous.map(|p| Signer::from_secret(p.expose_secret())).transpose()?;
    let signers: Vec<&Signer> = std::iter::once(&current).chain(previous.as_ref()).collect();
    let event_id = EventId::generate();
    let body = json!({
        "id": event_id.as_str(),
        "type": TEST_EVENT_TYPE,
        "company_id": null,
        "connection_id": null,
        "received_at": rfc3339(now),
        "payload": { "endpoint_id": e.id.as_str(), "message": "a test event sent from connect-hub; no action needed" },
        "inspection": null,
    });
    let clock = Instant::now();
    let sent =
        deliver(clients.post(e.id.as_str(), url.url()), &signers, event_id.as_str(), body.to_string().into_bytes())
            .await;
    let duration_ms = clock.elapsed().as_millis() as i64;
    let (delivered, error) = match sent.outcome {
        Outcome::Delivered => (true, None),
        Outcome::Gone => (false, Some("the receiver answered 410 Gone".to_owned())),
        Outcome::Failed { error, .. } => (false, Some(error)),
    };
    let status = sent.status.map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"));
    store.audit(now_ms(), actor, "endpoint_test", None, &format!("{} {status}", e.id)).await?;
    // Its last result is this one: right after "Delivered test event … HTTP 200", the page says so.
    store.record_test_result(&e.id, delivered, sent.status, now_ms()).await?;
    Ok(TestSent {
        event_id: event_id.as_str().to_owned(),
        status: sent.status,
        delivered,
        error,
        duration_ms,
        excerpt: sent.excerpt,
    })
}

/// The last result in a few words: when the last success or failure was, and its status.
pub fn last_result(e: &Endpoint) -> String {
    match (e.last_success_at, e.last_failure_at) {
        (Some(s), f) if f.is_none_or(|f| s >= f) => format!("ok {}", format_utc(s)),
        (_, Some(f)) => format!(
            "failed {} (HTTP {})",
            format_utc(f),
            e.last_status.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
        ),
        _ => "never tried".into(),
    }
}

/// Whether its deliveries are failing: a failure and no success since (the console marks it).
pub fn failing(e: &Endpoint) -> bool {
    e.failing_since.is_some()
}
