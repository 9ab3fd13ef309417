//! A fake SnapInspect that enforces the published contract, so a client that breaks it fails: the authorize page (Allow
//! / Deny), ExchangeToken (six fields, rotation, old pair invalidated), `/user`, inspection reads, and firing webhooks.

// Tests steer it through [`FakeSnapInspect`].

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

mod api;
mod pages;
mod saved;

use actix_web::web;
use serde_json::Value;

use crate::domain::{base32, random_bytes};

/// The application the fake has "registered".
#[derive(Clone, Debug)]
pub struct FakeConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Must match the `redirect_uri` of every request exactly.
    pub redirect_uri: String,
    /// Where the "fire a webhook" page posts to.
    pub webhook_url: Option<String>,
}

/// The fake's pages style themselves inline; they run no script, and anything may be the target
/// of their forms (the redirect back goes to the hub).
pub(super) const FAKE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// The demo companies the authorize page offers.
pub const COMPANIES: &[(i64, &str)] =
    &[(6847, "Harbour View Realty"), (7012, "Northside Property Inspections"), (9001, "Coastal Strata Management")];

/// How `/user` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserShape {
    /// `{"iUserID": …, "iCompanyID": …, "sCompanyName": …}`
    TopLevel,
    /// `{"oUser": {…}, "oCompany": {"iCompanyID": …, "sName": …}}`
    Nested,
    /// Answers with this status and no company.
    Fail(u16),
}

/// A scripted misbehaviour of the next ExchangeToken call.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answer with this status (and the usual error body) without rotating anything.
    Status(u16),
    /// Like `Status`, with `Retry-After: <seconds>`.
    StatusRetryAfter(u16, u64),
    /// Wait this long, then behave normally.
    Delay(Duration),
    /// Rotate the access token but send no `refresh_token` (the old one stays valid).
    NoRefreshToken,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Grant {
    company: Option<i64>,
    user_id: i64,
}

#[derive(Default)]
struct State {
    /// access token -> grant
    access: HashMap<String, Grant>,
    /// refresh token -> its paired access token
    refresh: HashMap<String, String>,
    exchange_calls: u64,
    exchanges: u64,
    user_calls: u64,
    /// How long every `/user` call takes before answering.
    user_delay: Option<Duration>,
    /// When each `/user` call came, by the bearer token it carried.
    user_call_times: HashMap<String, Vec<std::time::Instant>>,
    inspection_calls: u64,
    exchange_faults: VecDeque<Fault>,
    user_shape: Option<UserShape>,
    /// Status codes the next inspection reads answer with (e.g. 500, 401).
    inspection_faults: VecDeque<u16>,
    /// How long the next inspection reads take before answering.
    inspection_delays: VecDeque<Duration>,
    /// Where the tokens are kept between runs (the demo's), if anywhere.
    saved_to: Option<std::path::PathBuf>,
}

impl State {
    /// Write the tokens to the state file, if there is one, after a change. A failed write is
    /// logged: the fake keeps working from memory.
    fn save(&self) {
        if let Some(path) = &self.saved_to {
            if let Err(e) = saved::store(path, &self.access, &self.refresh) {
                tracing::warn!(error = %format!("{e:#}"), "the fake SnapInspect could not save its tokens");
            }
        }
    }
}

/// A handle on one fake SnapInspect: mount it, steer it, read its counters.
#[derive(Clone)]
pub struct FakeSnapInspect {
    config: Arc<FakeConfig>,
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
    api: crate::demo::upstream::ApiRoutes,
    /// Whether the hub it posts webhooks to has the demo's fake receiver (`/fake/receiver/`), so
    /// the fire-webhook page may link to it: only `demo` mounts one.
    links_receiver: bool,
}

pub(super) fn token(prefix: &str) -> String {
    format!("{prefix}{}", base32(&random_bytes::<20>()))
}

impl FakeSnapInspect {
    pub fn new(config: FakeConfig) -> Self {
        Self::with_client(config, crate::outbound::client::build())
    }

    /// With the client its "fire a webhook" page posts with (e.g. one trusting a demo certificate).
    pub fn with_client(config: FakeConfig, http: reqwest::Client) -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let tokens = state.clone();
        let api = crate::demo::upstream::ApiRoutes::new(move |t| {
            tokens.lock().expect("fake state poisoned").access.contains_key(t)
        });
        Self { config: Arc::new(config), state, http, api, links_receiver: false }
    }

    /// Link the fire-webhook page to the demo's fake receiver on the hub (`demo` serves one).
    pub fn linking_receiver(mut self) -> Self {
        self.links_receiver = true;
        self
    }

    /// Keep the tokens this fake issues in `path` (read now, written after every change), so a
    /// restarted demo can still exchange the tokens it handed out before.
    pub fn keeping_state_in(self, path: std::path::PathBuf) -> anyhow::Result<Self> {
        let saved = saved::load(&path)?;
        {
            let mut s = self.state();
            s.access = saved.access;
            s.refresh = saved.refresh;
            s.saved_to = Some(path);
        }
        Ok(self)
    }

    /// Requests to the API test routes (`echo/…`, `files/…`), with a valid token or not.
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake state poisoned")
    }

    pub fn config(&self) -> &FakeConfig {
        &self.config
    }

    /// Issue a pair as if the user clicked Allow (what the authorize page does).
    pub fn grant(&self, company: Option<i64>) -> (String, String) {
        let (access, refresh) = (token("si_at_"), token("si_rt_"));
        let mut s = self.state();
        s.access.insert(access.clone(), Grant { company, user_id: 500 + company.unwrap_or(0) % 97 });
        s.refresh.insert(refresh.clone(), access.clone());
        s.save();
        (access, refresh)
    }

    /// Successful exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.state().exchanges
    }

    /// Every call to ExchangeToken, refused or not.
    pub fn exchange_calls(&self) -> u64 {
        self.state().exchange_calls
    }

    pub fn user_calls(&self) -> u64 {
        self.state().user_calls
    }

    /// Make every `/user` call take this long (a slow SnapInspect).
    pub fn set_user_delay(&self, delay: Duration) {
        self.state().user_delay = Some(delay);
    }

    /// When `/user` was called with this bearer token (valid or not), in order.
    pub fn user_call_times(&self, token: &str) -> Vec<std::time::Instant> {
        self.state().user_call_times.get(token).cloned().unwrap_or_default()
    }

    pub fn inspection_calls(&self) -> u64 {
        self.state().inspection_calls
    }

    pub fn push_exchange_fault(&self, fault: Fault) {
        self.state().exchange_faults.push_back(fault);
    }

    pub fn set_user_shape(&self, shape: UserShape) {
        self.state().user_shape = Some(shape);
    }

    pub fn push_inspection_fault(&self, status: u16) {
        self.state().inspection_faults.push_back(status);
    }

    /// Make the next inspection read take this long (to outlast a client's timeout).
    pub fn push_inspection_delay(&self, delay: Duration) {
        self.state().inspection_delays.push_back(delay);
    }

    /// Whether this access token is currently valid (not rotated away).
    pub fn is_valid_access_token(&self, token: &str) -> bool {
        self.state().access.contains_key(token)
    }

    /// Invalidate every access token of a company (as if revoked), keeping the refresh tokens.
    pub fn revoke_access_tokens(&self, company: i64) {
        let mut s = self.state();
        s.access.retain(|_, g| g.company != Some(company));
        s.save();
    }

    /// Revoke a company's grant entirely (as SnapInspect does when access is withdrawn): its access
    /// tokens stop working and its refresh tokens are refused by ExchangeToken.
    pub fn revoke_grant(&self, company: i64) {
        let mut s = self.state();
        let revoked: std::collections::HashSet<String> =
            s.access.iter().filter(|(_, g)| g.company == Some(company)).map(|(t, _)| t.clone()).collect();
        s.access.retain(|t, _| !revoked.contains(t));
        s.refresh.retain(|_, access| !revoked.contains(access));
        s.save();
    }

    /// POST a webhook payload, as SnapInspect does: JSON, no signature. Returns the status.
    pub async fn fire_webhook(&self, url: &str, payload: &Value) -> Result<u16, String> {
        self.http
            .post(url)
            .json(payload)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| crate::outbound::client::describe_transport(&e))
    }

    /// The routes, relative to wherever the caller mounts them (`/` alone, `/fake/snapinspect` in
    /// `demo`): `integration/SnapInspectConnect`, `integration/ExchangeToken`, `user`,
    /// `inspections/{id}`, `fire-webhook`, and the proxy's test routes `echo/…` and `files/{mib}`.
    pub fn configure(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + Sync + 'static {
        let fake = self.clone();
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(fake.clone()))
                .route("/integration/SnapInspectConnect", web::get().to(pages::authorize_page))
                .route("/integration/SnapInspectConnect", web::post().to(pages::authorize_decision))
                .route("/integration/ExchangeToken", web::post().to(api::exchange_token))
                .route("/user", web::get().to(api::user))
                .route("/inspections/{id}", web::get().to(api::inspection))
                .route("/fire-webhook", web::get().to(pages::fire_webhook_page))
                .route("/fire-webhook", web::post().to(pages::fire_webhook_submit));
            fake.api.mount(cfg, "");
        }
    }
}
