//! Building the application: the shared state, the HTTP server with its middleware and route
//! groups, and the background tasks that run beside it.

use std::{net::SocketAddr, net::TcpListener, sync::Arc, time::Duration};

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpServer};
use anyhow::Context;

use crate::{
    config::Settings,
    domain::{CompanyId, ConnectionId},
    error::AppError,
    routes,
    snapinspect::SnapInspectClient,
    store::Store,
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
}

impl AppState {
    /// Open (and migrate) the store and build the clients from the settings.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let keys = Arc::new(settings.keyring()?);
        let store = Store::open(&settings.database_url, keys).await?;
        Ok(Self::with_store(settings, store))
    }

    pub fn with_store(settings: Settings, store: Store) -> Self {
        let http = crate::http_client::build();
        let snapinspect = SnapInspectClient::new(http.clone(), &settings.snapinspect, settings.redirect_uri());
        let tokens = Arc::new(TokenManager::new(store.clone(), snapinspect.clone()));
        Self { settings: Arc::new(settings), store, tokens, snapinspect, http }
    }

    /// Called after a SnapInspect company is (re)connected.
    pub async fn on_connected(&self, id: &ConnectionId, company: Option<CompanyId>) {
        tracing::debug!(connection_id = %id, company_id = ?company, "connected");
    }
}

/// Extra routes mounted into the same server (the fake providers in `demo`).
pub type Mount = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// A bound, not yet running, server plus its state.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    state: web::Data<AppState>,
}

impl Application {
    /// Bind `BIND_ADDR` (port 0 picks a free port) and build the server.
    pub async fn build(settings: Settings, mount: Option<Mount>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.bind_addr)
            .with_context(|| format!("cannot listen on {} (BIND_ADDR)", settings.bind_addr))?;
        let state = AppState::new(settings).await?;
        Self::from_parts(listener, state, mount)
    }

    pub fn from_parts(listener: TcpListener, state: AppState, mount: Option<Mount>) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let state = web::Data::new(state);
        let session_key = state.settings.session_key_bytes()?;
        let secure = state.settings.is_https();
        let data = state.clone();
        let server = HttpServer::new(move || {
            let mount = mount.clone();
            App::new()
                .app_data(data.clone())
                .wrap(crate::session::middleware(
                    data.store.clone(),
                    &session_key,
                    secure,
                    Duration::from_secs(24 * 3600),
                ))
                .wrap(from_fn(telemetry::access_log))
                .configure(routes::health::configure)
                .configure(routes::assets::configure)
                .configure(routes::connect::configure)
                .configure(move |cfg| {
                    if let Some(m) = &mount {
                        m(cfg)
                    }
                })
                .default_service(web::to(not_found))
        })
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        Ok(Self { server, addr, state })
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

    /// Run until the server stops (SIGINT/SIGTERM, or its handle), with the background tasks.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let janitor = tokio::spawn(janitor(self.state.store.clone()));
        let result = self.server.await;
        janitor.abort();
        self.state.store.close().await;
        result
    }
}

async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::not_found("There is no page at this address. Start from the home page."))
}

/// Purge expired connect states and sessions every ten minutes.
async fn janitor(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match store.purge_expired(now_ms()).await {
            Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired states and sessions"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error.chain = %format!("{e:#}"), "purging expired rows failed")
            }
        }
    }
}
