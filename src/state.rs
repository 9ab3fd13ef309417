//! The state every handler shares: the settings, the store, the token manager, the intake writer,
//! the worker, keys, limits and metrics, built once per process from the settings.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use crate::{
    auth::api_keys::ApiKeys,
    auth::{
        throttle::{HashGate, Policy, SignInThrottle},
        CsrfKey,
    },
    config::Settings,
    domain::CompanyId,
    limits::RateLimiter,
    metrics::Metrics,
    queue::{
        ingest::{IngestOptions, Ingestor},
        worker::{Worker, WorkerConfig},
    },
    snapinspect::SnapInspectClient,
    store::{SavedLink, Store},
    time::now_ms,
    tokens::TokenManager,
};

/// Everything handlers share. One instance per process, so the token manager's per-connection
/// locks really are per connection.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub tokens: Arc<TokenManager>,
    pub snapinspect: Option<SnapInspectClient>,
    pub http: reqwest::Client,
    pub ingestor: Ingestor,
    pub worker: Arc<Worker>,
    pub api_keys: ApiKeys,
    pub csrf: CsrfKey,
    /// Failed admin sign-ins, per account-and-address and per address, in the database.
    pub login_throttle: SignInThrottle,
    /// The cap on concurrent password hashing.
    pub hash_gate: HashGate,
    /// For the small encrypted cookies of people who are not signed in.
    pub cookies: crate::auth::private_cookie::CookieKey,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub webhook_secrets: crate::snapinspect::webhook::WebhookSecrets,
    /// The organisation's brand on end-user pages.
    pub brand: crate::brand::Brand,
    /// The API proxy (`/api/v1/connections/{id}/proxy/…`).
    pub proxy: Arc<crate::proxy::Proxy>,
    /// The connection health checker (its periodic task runs beside the worker).
    pub checker: Arc<crate::checks::Checker>,
}

/// The request rate limits (see `RateLimits` in the configuration).
pub struct Limits {
    /// Per API key.
    pub api: RateLimiter,
    /// Per client address: requests with an unknown API key.
    pub api_guessing: RateLimiter,
    /// Per client address: starting the connect flow.
    pub connect: RateLimiter,
    /// Per client address: sign-in attempts.
    pub sign_in: RateLimiter,
}

impl Limits {
    fn new(r: &crate::config::RateLimits) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            api: RateLimiter::new(r.api_per_second, Duration::from_secs(1), r.api_per_second.saturating_mul(2)),
            api_guessing: RateLimiter::new(30, minute, 30),
            connect: RateLimiter::new(r.connect_per_minute, minute, r.connect_per_minute),
            sign_in: RateLimiter::new(r.sign_in_per_minute, minute, r.sign_in_per_minute),
        }
    }
}

/// The outbound clients, built from the settings: the operator's own URLs (SnapInspect,
/// `FORWARD_URL`) go out plainly, URLs from the database through the guard, each kind with its own
/// allowed networks.
pub struct Clients {
    pub http: reqwest::Client,
    /// For stored token URLs (`TOKEN_URL_ALLOW_NETWORKS`).
    pub token_urls: crate::outbound::GuardedClient,
    /// For endpoints' URLs (`ENDPOINT_ALLOW_NETWORKS`).
    pub endpoints: crate::outbound::GuardedClient,
    /// None until `SNAPINSPECT_CLIENT_ID` and `SNAPINSPECT_CLIENT_SECRET` are set.
    pub snapinspect: Option<SnapInspectClient>,
    /// The API proxy's: for `SNAPINSPECT_API_URL`, and through the guard for stored API URLs
    /// (`TOKEN_URL_ALLOW_NETWORKS`), both for long streams (no total timeout).
    pub proxy: crate::proxy::PerThread,
}

impl Clients {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let roots = match &settings.outbound_ca_file {
            Some(path) => crate::tls::read_roots(path)?,
            None => Vec::new(),
        };
        let http = crate::outbound::client::build_with(settings.outbound_timeout, &roots)?;
        let snapinspect = SnapInspectClient::new(http.clone(), &settings.snapinspect, settings.redirect_uri());
        let guarded = |policy| crate::outbound::GuardedClient::build(settings.outbound_timeout, &roots, policy);
        let token_urls = guarded(settings.token_url_policy())?;
        let endpoints = guarded(settings.endpoint_policy())?;
        let (idle, policy) = (settings.outbound_timeout, settings.token_url_policy());
        let proxy = crate::proxy::PerThread::new(move || {
            Ok(crate::proxy::Upstreams {
                trusted: crate::outbound::client::streaming_builder(idle, &roots).build()?,
                stored: crate::outbound::GuardedClient::streaming(idle, &roots, policy.clone())?,
            })
        })?;
        Ok(Self { http, token_urls, endpoints, snapinspect, proxy })
    }
}

impl AppState {
    /// Open (and migrate) the store and build the clients from the settings.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let keys = Arc::new(settings.keyring()?);
        let store = Store::open(&settings.database_url, settings.sqlite_max_pages, keys).await?;
        if let (Some(url), Some(secret)) = (&settings.forward_url, &settings.forward_secret) {
            // FORWARD_URL / FORWARD_SECRET define (or update) one endpoint that takes every event.
            let url = crate::domain::endpoint::EndpointUrl::parse(url.as_str())
                .map_err(|e| crate::config::ConfigError { name: "FORWARD_URL", problem: e.to_string() })?;
            store.upsert_forward_endpoint(&url, secret, now_ms()).await?;
        }
        Self::with_store(settings, store)
    }

    /// Build the clients, the token manager, the intake writer and the worker (which runs only
    /// when `Application::run_until_stopped` starts it). Needs a tokio runtime.
    pub fn with_store(settings: Settings, store: Store) -> anyhow::Result<Self> {
        let Clients { http, token_urls, endpoints, snapinspect, proxy: proxy_clients } = Clients::new(&settings)?;
        let metrics = Arc::new(Metrics::default());
        let tokens = Arc::new(TokenManager::new(
            store.clone(),
            snapinspect.clone(),
            token_urls,
            settings.token_default_lifetime,
            metrics.clone(),
        ));
        let wake = Arc::new(Notify::new());
        let ingestor = Ingestor::spawn(
            store.clone(),
            IngestOptions {
                group_commit: settings.group_commit,
                dedupe_window: Duration::from_secs(settings.dedupe_window_secs),
            },
            wake.clone(),
        );
        let worker = Arc::new(Worker::new(
            store.clone(),
            snapinspect.clone(),
            tokens.clone(),
            // Endpoint URLs come from the database: guarded, except the operator's FORWARD_URL.
            crate::delivery::clients::DeliveryClients::new(http.clone(), endpoints, settings.forward_url.clone()),
            WorkerConfig {
                retry_schedule: settings.retry_schedule.clone(),
                lease: Duration::from_secs(settings.lease_secs.max(1)),
                delivery: crate::delivery::dispatcher::DeliveryConfig {
                    retry_schedule: settings.retry_schedule.clone(),
                    lease: settings.delivery_lease(),
                    concurrency: settings.worker_concurrency,
                    per_endpoint: settings.endpoint_concurrency,
                    disable_after: settings.endpoint_disable_after,
                },
            },
            wake,
            metrics.clone(),
        ));
        let csrf = CsrfKey::derive(&settings.session_key_bytes()?);
        let cookies = crate::auth::private_cookie::CookieKey::derive(&settings.session_key_bytes()?);
        // Five attempts within 15 minutes lock an account from one address (or one address for
        // every account) for a minute, doubling with each lock up to 15 minutes.
        let login_throttle = SignInThrottle::new(store.clone(), Policy::DEFAULT);
        let settings_limits = settings.rate_limits;
        let webhook_secrets = crate::snapinspect::webhook::WebhookSecrets::new(
            settings.webhook_secret.as_ref(),
            settings.webhook_secret_old.as_ref(),
        );
        let brand = crate::brand::Brand::load(&settings.brand)?;
        let proxy = Arc::new(crate::proxy::Proxy::new(
            store.clone(),
            tokens.clone(),
            crate::proxy::ProxySettings {
                snapinspect_api: settings.snapinspect.api_url.clone(),
                clients: proxy_clients,
                timeout: settings.outbound_timeout,
                max_body: settings.proxy_max_body,
                max_in_flight: settings.proxy_max_in_flight,
            },
        ));
        let checker = Arc::new(crate::checks::Checker::new(
            store.clone(),
            tokens.clone(),
            snapinspect.clone(),
            metrics.clone(),
            settings.connection_check_interval,
        ));
        Ok(Self {
            proxy,
            brand,
            webhook_secrets,
            api_keys: ApiKeys::new(store.clone()),
            settings: Arc::new(settings),
            store,
            tokens,
            snapinspect,
            http,
            ingestor,
            worker,
            csrf,
            cookies,
            login_throttle,
            hash_gate: HashGate::per_core(metrics.clone()),
            limits: Limits::new(&settings_limits),
            metrics,
            checker,
        })
    }

    /// Called after a SnapInspect company is (re)connected: its waiting events are queued now,
    /// and the pair that came in the callback's URL is exchanged in the background (the end
    /// user's page does not wait), where background work runs (`WORKER_ENABLED`). A failed
    /// exchange is retried by the sweep, with the usual backoff.
    /// An endpoint was added, changed or removed: the dispatcher reads the endpoints again, and
    /// the worker looks for due deliveries now (an enabled endpoint's waiting ones go out).
    pub async fn endpoints_changed(&self) {
        self.worker.dispatcher().forget_targets();
        self.worker.wake();
    }

    pub async fn on_connected(&self, saved: &SavedLink, company: Option<CompanyId>) {
        self.tokens.forget(&saved.id);
        if self.settings.worker_enabled {
            let (tokens, id) = (self.tokens.clone(), saved.id.clone());
            tokio::spawn(async move {
                if let Err(e) = tokens.exchange_callback_tokens(&id).await {
                    tracing::warn!(connection_id = %id, error = %e, "exchanging the connect link's tokens failed; retried later");
                }
            });
        }
        if saved.matched_events > 0 {
            tracing::info!(connection_id = %saved.id, company_id = ?company, events = saved.matched_events, "queued the events that waited for this company");
            self.worker.wake();
        }
    }
}
