//! Building the application: the shared state, the HTTP server with its middleware and route
//! groups (over TLS when configured), and the background tasks that run beside it.

pub mod headers;
pub mod tls;

use std::{net::SocketAddr, net::TcpListener, sync::Arc, time::Duration};

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpServer};
use anyhow::Context;

use tokio::sync::{watch, Notify};

use crate::{
    api_keys::ApiKeys,
    auth::{
        throttle::{HashGate, Policy, SignInThrottle},
        CsrfKey,
    },
    config::Settings,
    domain::CompanyId,
    error::AppError,
    limits::RateLimiter,
    metrics::Metrics,
    queue::{
        ingest::{IngestOptions, Ingestor},
        worker::{Worker, WorkerConfig},
    },
    routes,
    snapinspect::SnapInspectClient,
    store::{SavedLink, Store},
    telemetry,
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
    pub cookies: crate::private_cookie::CookieKey,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub webhook_secrets: crate::routes::webhooks::WebhookSecrets,
    /// The organisation's brand on end-user pages.
    pub brand: crate::brand::Brand,
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

impl AppState {
    /// Open (and migrate) the store and build the clients from the settings.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let keys = Arc::new(settings.keyring()?);
        let store = Store::open(&settings.database_url, settings.sqlite_max_pages, keys).await?;
        if let (Some(url), Some(secret)) = (&settings.forward_url, &settings.forward_secret) {
            // FORWARD_URL / FORWARD_SECRET define (or update) one endpoint that takes every event.
            let url = crate::delivery::types::EndpointUrl::parse(url.as_str())
                .map_err(|e| crate::config::ConfigError { name: "FORWARD_URL", problem: e.to_string() })?;
            store.upsert_forward_endpoint(&url, secret, now_ms()).await?;
        }
        Self::with_store(settings, store)
    }

    /// Build the clients, the token manager, the intake writer and the worker (which runs only
    /// when `Application::run_until_stopped` starts it). Needs a tokio runtime.
    pub fn with_store(settings: Settings, store: Store) -> anyhow::Result<Self> {
        let roots = match &settings.outbound_ca_file {
            Some(path) => crate::http_client::read_roots(path)?,
            None => Vec::new(),
        };
        let http = crate::http_client::build_with(settings.outbound_timeout, &roots)?;
        let snapinspect = SnapInspectClient::new(http.clone(), &settings.snapinspect, settings.redirect_uri());
        let metrics = Arc::new(Metrics::default());
        // URLs from the database go through the guarded client; the operator's own URLs (above) do not.
        let guarded =
            crate::outbound::GuardedClient::build(settings.outbound_timeout, &roots, settings.outbound_policy())?;
        let tokens = Arc::new(TokenManager::new(
            store.clone(),
            snapinspect.clone(),
            guarded.clone(),
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
            tokens.clone(),
            // Endpoint URLs come from the database: guarded, except the operator's FORWARD_URL.
            crate::delivery::clients::DeliveryClients::new(http.clone(), guarded),
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
        let cookies = crate::private_cookie::CookieKey::derive(&settings.session_key_bytes()?);
        // Five attempts within 15 minutes lock an account from one address (or one address for
        // every account) for a minute, doubling with each lock up to 15 minutes.
        let login_throttle = SignInThrottle::new(store.clone(), Policy::DEFAULT);
        let settings_limits = settings.rate_limits;
        let webhook_secrets = crate::routes::webhooks::WebhookSecrets::new(
            settings.webhook_secret.as_ref(),
            settings.webhook_secret_old.as_ref(),
        );
        let brand = crate::brand::Brand::load(&settings.brand)?;
        Ok(Self {
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
        })
    }

    /// Called after a SnapInspect company is (re)connected: its waiting events are queued now,
    /// and the pair that came in the callback's URL is exchanged in the background (the end
    /// user's page does not wait), where background work runs (`WORKER_ENABLED`). A failed
    /// exchange is retried by the sweep, with the usual backoff.
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

/// Extra routes mounted into the same server (the fake providers in `demo`).
pub type Mount = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// A bound, not yet running, server plus its state.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    state: web::Data<AppState>,
    /// The plain-http listener that redirects to https, when configured.
    redirect: Option<Server>,
}

/// The largest request body any route accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

impl Application {
    /// Bind `BIND_ADDR` (port 0 picks a free port) and build the server.
    pub async fn build(settings: Settings, mount: Option<Mount>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.bind_addr)
            .with_context(|| format!("cannot listen on {} (BIND_ADDR)", settings.bind_addr))?;
        let redirect = match settings.http_redirect_addr {
            Some(addr) => {
                let l =
                    TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (HTTP_REDIRECT_ADDR)"))?;
                Some(headers::redirect_server(l, settings.public_url.clone())?)
            }
            None => None,
        };
        let state = AppState::new(settings).await?;
        let mut app = Self::from_parts(listener, state, mount)?;
        app.redirect = redirect;
        Ok(app)
    }

    pub fn from_parts(listener: TcpListener, state: AppState, mount: Option<Mount>) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let state = web::Data::new(state);
        let session_key = state.settings.session_key_bytes()?;
        let secure = state.settings.is_https();
        let idle = state.settings.admin_idle_timeout;
        let data = state.clone();
        let server = HttpServer::new(move || {
            let mount = mount.clone();
            let session = crate::session::middleware(data.store.clone(), &session_key, secure, idle);
            App::new()
                .app_data(data.clone())
                // Every body is small: 64 KiB at most, for any route and extractor.
                .app_data(web::PayloadConfig::new(BODY_LIMIT))
                .app_data(web::FormConfig::default().limit(BODY_LIMIT))
                .app_data(web::JsonConfig::default().limit(BODY_LIMIT))
                .wrap(headers::security(secure))
                .wrap(from_fn(telemetry::access_log))
                // Machine routes first: no session, no cookies.
                .configure(routes::health::configure)
                .configure(routes::assets::configure)
                .configure(routes::webhooks::configure)
                .configure(routes::api::configure)
                .configure(move |cfg| {
                    if let Some(m) = &mount {
                        m(cfg)
                    }
                })
                // Pages for people, with a session (which ends after ADMIN_IDLE_TIMEOUT without a
                // request). The empty scope matches every remaining path, so it carries the 404.
                .service(
                    web::scope("")
                        .wrap(session)
                        .configure(routes::connect::configure)
                        .configure(routes::admin::configure)
                        .default_service(web::to(not_found)),
                )
        })
        .shutdown_timeout(10)
        // A slow client gets 10 s to send its request head, then 408.
        .client_request_timeout(Duration::from_secs(10));
        let server = match &state.settings.tls {
            Some(files) => server.listen_rustls_0_23(listener, tls::server_config(files)?)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Self { server, addr, state, redirect: None })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Run until the server stops (SIGINT/SIGTERM, or its handle), with the background tasks. On
    /// shutdown: stop accepting, let requests in flight (and so their intake commits) finish, let
    /// the worker end its current attempts (bounded), then close the database.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let settings = self.state.settings.clone();
        let (stop, stopped) = watch::channel(false);
        let worker = settings.worker_enabled.then(|| tokio::spawn(self.state.worker.clone().run(stopped)));
        let janitor = tokio::spawn(janitor(self.state.store.clone(), settings.event_retention));
        let sweeper = settings.worker_enabled.then(|| tokio::spawn(callback_token_sweeper(self.state.tokens.clone())));
        // Other instances on the same PostgreSQL database tell this one what changed.
        let listener = (self.state.store.backend() == crate::store::Backend::Postgres).then(|| {
            tokio::spawn(crate::notify::listen((*settings.database_url).to_owned(), self.state.clone().into_inner()))
        });
        let redirect = self.redirect.map(|r| {
            let handle = r.handle();
            tokio::spawn(r);
            handle
        });
        let result = self.server.await;
        if let Some(r) = redirect {
            r.stop(true).await;
        }
        let _ = stop.send(true);
        if let Some(w) = worker {
            if tokio::time::timeout(Duration::from_secs(15), w).await.is_err() {
                tracing::warn!(
                    "the worker did not finish its attempts in 15 s; their leases will expire and they will be retried"
                );
            }
        }
        janitor.abort();
        if let Some(s) = sweeper {
            s.abort();
        }
        if let Some(l) = listener {
            l.abort();
        }
        self.state.store.close().await;
        result
    }
}

async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(routes::not_found())
}

/// Every ten seconds: exchange the connect-callback tokens still waiting for their first exchange
/// (one that failed right after the connect, or whose process stopped before it ran).
async fn callback_token_sweeper(tokens: Arc<TokenManager>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        match tokens.sweep_callback_tokens().await {
            Ok(n) if n > 0 => tracing::info!(connections = n, "exchanged the tokens from connect links"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "the connect-link token sweep failed"),
        }
    }
}

/// Every ten minutes: purge expired connect states and sessions, done events older than the
/// retention, and events that waited (unmatched or rejected) for longer than it.
async fn janitor(store: Store, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let now = now_ms();
        match store.purge_expired(now).await {
            Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired states and sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "purging expired rows failed"),
        }
        match store.purge_done_events(now - retention.as_millis() as i64).await {
            Ok(n) if n > 0 => tracing::info!(events = n, "purged done events past their retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "purging done events failed"),
        }
        match store.purge_waiting_events(now - retention.as_millis() as i64).await {
            Ok(n) if n > 0 => tracing::info!(events = n, "purged unmatched and rejected events past their retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "purging waiting events failed"),
        }
    }
}
