//! Building the application: the HTTP server with its middleware and route groups (over TLS
//! when configured), and the background tasks that run beside it. The shared state is `state`.

pub mod access_log;
pub mod headers;
pub mod notify;
mod tasks;

pub use crate::state::{AppState, Limits};

use std::{net::SocketAddr, net::TcpListener, sync::Arc, time::Duration};

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpServer};
use anyhow::Context;

use tokio::sync::watch;

use crate::{config::Settings, error::AppError, routes};

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
            let session = crate::auth::session::middleware(data.store.clone(), &session_key, secure, idle);
            App::new()
                .app_data(data.clone())
                // Every body is small: 64 KiB at most, for any route and extractor.
                .app_data(web::PayloadConfig::new(routes::BODY_LIMIT))
                .app_data(web::FormConfig::default().limit(routes::BODY_LIMIT))
                .app_data(web::JsonConfig::default().limit(routes::BODY_LIMIT))
                .wrap(headers::security(secure))
                .wrap(from_fn(access_log::access_log))
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
            Some(files) => server.listen_rustls_0_23(listener, crate::tls::server_config(files)?)?,
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
        let janitor = tokio::spawn(tasks::janitor(self.state.store.clone(), settings.event_retention));
        let probe = tokio::spawn(tasks::store_probe(self.state.store.clone()));
        let sweeper =
            settings.worker_enabled.then(|| tokio::spawn(tasks::callback_token_sweeper(self.state.tokens.clone())));
        // Connection health checks run where background work runs, unless CONNECTION_CHECK_INTERVAL=0.
        let checker = (settings.worker_enabled && self.state.checker.enabled())
            .then(|| tokio::spawn(self.state.checker.clone().run()));
        // Other instances on the same PostgreSQL database tell this one what changed.
        let listener = (self.state.store.backend() == crate::store::Backend::Postgres).then(|| {
            tokio::spawn(notify::listen((*settings.database_url).to_owned(), self.state.clone().into_inner()))
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
        probe.abort();
        if let Some(s) = sweeper {
            s.abort();
        }
        if let Some(c) = checker {
            c.abort();
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
