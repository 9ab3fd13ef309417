//! Fake client-credentials token servers for Snapdocs, SmartDocumentor, Signicat and Docplanner,
//! each enforcing its own document (credentials, scope or audience, errors); tests steer them.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::json;

use crate::domain::{base32, random_bytes, Provider};

/// Where the client must put its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsIn {
    /// HTTP Basic; `decode` says whether the server form-decodes id and secret (RFC 6749 §2.3.1).
    Basic {
        decode: bool,
    },
    Body,
}

/// What the `scope` field must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeRule {
    Any,
    Required,
    Exactly(&'static str),
}

#[derive(Debug, Clone)]
struct Rules {
    provider: Provider,
    client_id: String,
    client_secret: String,
    credentials: CredentialsIn,
    scope: ScopeRule,
    audience_required: bool,
    /// Docplanner: the host part of the path must be `www.{this}`.
    domain: Option<String>,
}

#[derive(Default)]
struct State {
    calls: u64,
    issued: u64,
    faults: VecDeque<u16>,
    expires_in: Option<u64>,
    omit_expires_in: bool,
    valid: HashSet<String>,
    last_scope: Option<String>,
    last_audience: Option<String>,
}

/// A handle on one fake token server.
#[derive(Clone)]
pub struct FakeTokenServer {
    rules: Arc<Rules>,
    state: Arc<Mutex<State>>,
    api: crate::demo::upstream::ApiRoutes,
}

impl FakeTokenServer {
    fn new(rules: Rules) -> Self {
        let state = Arc::new(Mutex::new(State { expires_in: Some(3600), ..Default::default() }));
        let tokens = state.clone();
        let api = crate::demo::upstream::ApiRoutes::new(move |t| {
            tokens.lock().expect("token server state poisoned").valid.contains(t)
        });
        Self { rules: Arc::new(rules), state, api }
    }

    /// Snapdocs: credentials in the body, `audience` required (Auth0 style).
    pub fn snapdocs(client_id: &str, secret: &str) -> Self {
        Self::new(Rules {
            provider: Provider::Snapdocs,
            client_id: client_id.into(),
            client_secret: secret.into(),
            credentials: CredentialsIn::Body,
            scope: ScopeRule::Any,
            audience_required: true,
            domain: None,
        })
    }

    /// SmartDocumentor: credentials in the body, `scope=WebAPI`, `{"error":"invalid_client"}`.
    pub fn smartdocumentor(client_id: &str, secret: &str) -> Self {
        Self::new(Rules {
            provider: Provider::SmartDocumentor,
            client_id: client_id.into(),
            client_secret: secret.into(),
            credentials: CredentialsIn::Body,
            scope: ScopeRule::Exactly("WebAPI"),
            audience_required: false,
            domain: None,
        })
    }

    /// Signicat: HTTP Basic only, a scope list required.
    pub fn signicat(client_id: &str, secret: &str) -> Self {
        Self::new(Rules {
            provider: Provider::Signicat,
            client_id: client_id.into(),
            client_secret: secret.into(),
            credentials: CredentialsIn::Basic { decode: true },
            scope: ScopeRule::Required,
            audience_required: false,
            domain: None,
        })
    }

    /// Docplanner: HTTP Basic only, `scope=integration`, served at `/www.{domain}/oauth/v2/token`.
    pub fn docplanner(client_id: &str, secret: &str, domain: &str) -> Self {
        Self::new(Rules {
            provider: Provider::Docplanner,
            client_id: client_id.into(),
            client_secret: secret.into(),
            credentials: CredentialsIn::Basic { decode: true },
            scope: ScopeRule::Exactly("integration"),
            audience_required: false,
            domain: Some(domain.into()),
        })
    }

    /// A server of some other vendor, with the given credential placement.
    pub fn custom(client_id: &str, secret: &str, credentials: CredentialsIn) -> Self {
        Self::new(Rules {
            provider: Provider::Custom,
            client_id: client_id.into(),
            client_secret: secret.into(),
            credentials,
            scope: ScopeRule::Any,
            audience_required: false,
            domain: None,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake token state poisoned")
    }

    /// The path the token endpoint is served at (relative to where the fake is mounted).
    pub fn token_path(&self) -> String {
        match self.rules.provider {
            Provider::Snapdocs => "/oauth/token".into(),
            Provider::SmartDocumentor => "/connect/token".into(),
            Provider::Signicat => "/oauth/connect/token".into(),
            Provider::Docplanner => "/www.{domain}/oauth/v2/token".into(),
            _ => "/token".into(),
        }
    }

    /// Every request to the token endpoint, refused or not.
    pub fn calls(&self) -> u64 {
        self.state().calls
    }

    /// Tokens issued.
    pub fn issued(&self) -> u64 {
        self.state().issued
    }

    pub fn is_valid(&self, token: &str) -> bool {
        self.state().valid.contains(token)
    }

    /// Make every issued token invalid (as if the provider revoked them): the API answers 401.
    pub fn revoke_all(&self) {
        self.state().valid.clear();
    }

    /// Requests to the provider API's test routes (`/api/echo/…`, `/api/files/…`).
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    /// The next requests answer with this status (e.g. 500, 503).
    pub fn push_fault(&self, status: u16) {
        self.state().faults.push_back(status);
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.state().expires_in = Some(secs);
    }

    /// Answer without `expires_in` (the client must assume a lifetime).
    pub fn omit_expires_in(&self) {
        self.state().omit_expires_in = true;
    }

    pub fn last_scope(&self) -> Option<String> {
        self.state().last_scope.clone()
    }

    pub fn last_audience(&self) -> Option<String> {
        self.state().last_audience.clone()
    }

    pub fn configure(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + Sync + 'static {
        let me = self.clone();
        move |cfg: &mut web::ServiceConfig| {
            let path = if me.rules.provider == Provider::Docplanner {
                "/{host}/oauth/v2/token".to_owned()
            } else {
                me.token_path()
            };
            cfg.app_data(web::Data::new(me.clone())).route(&path, web::post().to(token));
            // The provider's API, for the proxy: `{base}/api/` is the connection's API URL.
            me.api.mount(cfg, "/api");
        }
    }
}

fn error(status: u16, code: &str, description: Option<&str>) -> HttpResponse {
    let mut body = json!({ "error": code });
    if let Some(d) = description {
        body["error_description"] = json!(d);
    }
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(body)
}

fn form_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned())
}

/// The (id, secret) in an `Authorization: Basic` header, decoded as the rules say.
fn basic(req: &HttpRequest, decode: bool) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let pair = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = pair.split_once(':')?;
    if decode {
        Some((form_decode(id)?, form_decode(secret)?))
    } else {
        Some((id.to_owned(), secret.to_owned()))
    }
}

async fn token(req: HttpRequest, body: web::Bytes, fake: web::Data<FakeTokenServer>) -> HttpResponse {
    let rules = &fake.rules;
    let fault = {
        let mut s = fake.state();
        s.calls += 1;
        s.faults.pop_front()
    };
    if let Some(code) = fault {
        return error(code, "temporarily_unavailable", Some("scripted failure"));
    }
    if let Some(domain) = &rules.domain {
        if req.match_info().get("host") != Some(format!("www.{domain}").as_str()) {
            return HttpResponse::NotFound().finish();
        }
    }
    if !super::fakes::is_form(&req) {
        return error(400, "invalid_request", Some("the body must be application/x-www-form-urlencoded"));
    }
    let fields = match super::fakes::fields(&body) {
        Ok(f) => f,
        Err(e) => return error(400, "invalid_request", Some(&e)),
    };
    if fields.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return error(400, "unsupported_grant_type", Some("grant_type must be client_credentials"));
    }
    let in_body = fields.contains_key("client_id") || fields.contains_key("client_secret");
    let (id, secret) = match rules.credentials {
        CredentialsIn::Body => {
            if req.headers().contains_key(header::AUTHORIZATION) {
                return error(401, "invalid_client", Some("client_id and client_secret must be sent in the form body"));
            }
            (
                fields.get("client_id").cloned().unwrap_or_default(),
                fields.get("client_secret").cloned().unwrap_or_default(),
            )
        }
        CredentialsIn::Basic { decode } => {
            if in_body {
                return error(
                    401,
                    "invalid_client",
                    Some("client authentication must use HTTP Basic, not the form body"),
                );
            }
            match basic(&req, decode) {
                Some(pair) => pair,
                None => return error(401, "invalid_client", Some("HTTP Basic client authentication is required")),
            }
        }
    };
    if id != rules.client_id || secret != rules.client_secret {
        // SmartDocumentor's document shows exactly this body.
        return error(if rules.provider == Provider::SmartDocumentor { 400 } else { 401 }, "invalid_client", None);
    }
    let scope = fields.get("scope").cloned();
    match (&rules.scope, scope.as_deref()) {
        (ScopeRule::Required, None | Some("")) => return error(400, "invalid_scope", Some("a scope is required")),
        (ScopeRule::Exactly(want), got) if got != Some(*want) => {
            return error(400, "invalid_scope", Some(&format!("the scope must be {want}")))
        }
        _ => {}
    }
    let audience = fields.get("audience").cloned();
    if rules.audience_required && audience.as_deref().is_none_or(str::is_empty) {
        return error(400, "invalid_request", Some("audience is required"));
    }
    let access = format!("cc_{}", base32(&random_bytes::<20>()));
    let mut s = fake.state();
    s.issued += 1;
    s.valid.insert(access.clone());
    s.last_scope = scope.clone();
    s.last_audience = audience;
    let mut body = json!({ "access_token": access, "token_type": "Bearer", "scope": scope });
    if rules.provider == Provider::Docplanner {
        // As in Docplanner's example answer.
        body["token_type"] = json!("bearer");
        body["scope"] = serde_json::Value::Null;
    }
    if !s.omit_expires_in {
        body["expires_in"] = json!(s.expires_in.unwrap_or(3600));
    }
    HttpResponse::Ok().json(body)
}
