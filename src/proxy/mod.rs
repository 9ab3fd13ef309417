//! The API proxy: an app's request to a provider's API, sent with the connection's token put in by
//! the hub and the answer streamed back as it is. A token the upstream refuses is replaced once.

// The app never holds a token: the hub picks it, and after a 401 replaces it (joining any exchange
// in flight) and resends a body it kept. Nothing here knows actix: the route turns the request
// into a `ProxyRequest` and the `ProxyAnswer` back into a response.

mod body;
mod clients;
mod error;
mod headers;
mod limit;
mod path;
mod stats;
mod targets;

pub use body::{RequestBody, REPLAYABLE};
pub use clients::{PerThread, Upstreams};
pub use error::ProxyError;
pub use headers::HUB_PREFIX;
pub use path::{upstream_url, BadPath};
pub use stats::ProxyStats;

use std::{io, pin::Pin, sync::Arc, time::Duration, time::Instant};

use bytes::Bytes;
use futures_util::Stream;
use reqwest::{header::HeaderMap, Method};
use secrecy::ExposeSecret;
use url::Url;

use crate::{
    client_credentials::resolve_api_url,
    domain::{ConnectionId, Provider},
    store::{ProxyTarget, Store},
    time::now_ms,
    tokens::{AccessToken, TokenError, TokenManager},
};

/// The header that says what the hub did about a 401 from the upstream.
pub const RETRY_HEADER: &str = "x-connect-hub-retry";

/// How the proxy reaches upstreams, and its limits.
pub struct ProxySettings {
    /// `SNAPINSPECT_API_URL`: where SnapInspect connections' requests go.
    pub snapinspect_api: Url,
    /// The clients, one pair per thread (see `clients`).
    pub clients: PerThread,
    /// `OUTBOUND_TIMEOUT`: the upstream's status line must arrive within it, and a body may not
    /// stall for longer.
    pub timeout: Duration,
    pub max_body: u64,
    pub max_in_flight: usize,
}

pub struct Proxy {
    targets: targets::Targets,
    tokens: Arc<TokenManager>,
    settings: ProxySettings,
    in_flight: limit::InFlight,
    pub stats: ProxyStats,
}

/// An app's request, as the route read it.
pub struct ProxyRequest {
    pub connection: ConnectionId,
    pub method: Method,
    /// The path below the API base, as it arrived (percent-encoded), without a leading `/`.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: RequestBody,
    /// Who asks (`api:<key name>`), for the token manager's audit of an exchange.
    pub actor: String,
}

/// The upstream's answer, to be passed back as it is.
pub struct ProxyAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The upstream's `Content-Length`, when it gave one: the body is exactly that long.
    pub length: Option<u64>,
    pub body: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    /// What the hub did about a 401, for [`RETRY_HEADER`].
    pub retry: Option<&'static str>,
}

/// A connection's API base, ending in `/`: `SNAPINSPECT_API_URL` for SnapInspect, the stored API URL
/// (with its `{domain}`) otherwise, or None when it has none. A stored URL was checked when it was
/// saved; one that no longer parses is as good as none.
pub fn api_base(provider: Provider, api_url: Option<&str>, domain: Option<&str>, snapinspect_api: &Url) -> Option<Url> {
    if provider == Provider::SnapInspect {
        let mut base = snapinspect_api.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        return Some(base);
    }
    resolve_api_url(api_url?, domain).ok()
}

impl Proxy {
    pub fn new(store: Store, tokens: Arc<TokenManager>, settings: ProxySettings) -> Self {
        let in_flight = limit::InFlight::new(settings.max_in_flight);
        Self { targets: targets::Targets::new(store), tokens, settings, in_flight, stats: ProxyStats::default() }
    }

    pub fn max_body(&self) -> u64 {
        self.settings.max_body
    }

    /// The token version this process last read the connection's target with, if any (tests of
    /// the memory: a proxied request reads no database while it holds).
    pub fn target_read_with(&self, id: &ConnectionId) -> Option<i64> {
        self.targets.known(id).map(|(_, version)| version)
    }

    /// Send the request upstream with the connection's token and hand back the answer. Every
    /// failure before an upstream answer is a [`ProxyError`]; an upstream's own error status is an
    /// answer like any other.
    pub async fn forward(&self, req: ProxyRequest) -> Result<ProxyAnswer, ProxyError> {
        let started = Instant::now();
        let id = req.connection.clone();
        let mut provider = None;
        let outcome = self.forward_inner(req, started, &mut provider).await;
        if let (Err(e), Some(p)) = (&outcome, provider) {
            self.stats.answered(&id, p, e.status(), started.elapsed().as_secs_f64(), now_ms());
        }
        outcome
    }

    async fn forward_inner(
        &self,
        req: ProxyRequest,
        started: Instant,
        provider: &mut Option<Provider>,
    ) -> Result<ProxyAnswer, ProxyError> {
        let id = req.connection.clone();
        // The path is checked before any token is asked for (a client-credentials token may take
        // a call to the provider), against the target as last known, or as read now.
        let (mut target, seen_with) = match self.targets.known(&id) {
            Some((t, version)) => (t, Some(version)),
            None => (self.targets.read(&id).await?, None),
        };
        *provider = Some(target.provider);
        let mut url = upstream_url(&self.base(&target)?, &req.path, req.query.as_deref())?;
        let permit = self.in_flight.try_acquire(&id).ok_or(ProxyError::TooManyInFlight(self.in_flight.max()))?;
        let headers = headers::upstream_request(&req.headers);
        let token = self.token(&id).await?;
        if seen_with != Some(token.version) {
            // New to us, or its token changed since (an edit drops it): read where it goes again,
            // after the token, so the target is at least as new as the token it will carry.
            target = self.targets.read(&id).await?;
            url = upstream_url(&self.base(&target)?, &req.path, req.query.as_deref())?;
            self.targets.remember(&id, &target, token.version);
        }

        let (res, retry) = match req.body {
            RequestBody::Held(bytes) => {
                let res = self.send(&target, &req.method, &url, &headers, &token, bytes.clone().into(), None).await?;
                if res.status() != reqwest::StatusCode::UNAUTHORIZED {
                    (res, None)
                } else {
                    drop(res);
                    let fresh = match self.tokens.replace_refused(&token, &req.actor).await {
                        Ok(t) => t,
                        Err(e) => {
                            self.stats.retried(if matches!(e, TokenError::NeedsReconnect(_)) {
                                "refused"
                            } else {
                                "failed"
                            });
                            return Err(e.into());
                        }
                    };
                    self.stats.retried("retried");
                    let res = self.send(&target, &req.method, &url, &headers, &fresh, bytes.into(), None).await?;
                    (res, Some("retried"))
                }
            }
            RequestBody::Streamed { chunks, length, overflowed } => {
                let stream = RequestBody::into_stream(chunks, self.settings.timeout);
                let sent = self
                    .send(&target, &req.method, &url, &headers, &token, reqwest::Body::wrap_stream(stream), length)
                    .await;
                // The route cut a body that grew past PROXY_MAX_BODY: that, not the upstream, failed.
                if overflowed.load(std::sync::atomic::Ordering::Acquire) {
                    return Err(ProxyError::BodyTooLarge(self.settings.max_body));
                }
                let res = sent?;
                if res.status() == reqwest::StatusCode::UNAUTHORIZED {
                    // The body is gone: it cannot be resent, so the 401 is the app's to handle.
                    self.stats.retried("not_retried_large_body");
                    (res, Some("not-retried; the body was over 1 MiB and could not be resent"))
                } else {
                    (res, None)
                }
            }
        };

        let status = res.status().as_u16();
        self.stats.answered(&id, target.provider, status, started.elapsed().as_secs_f64(), now_ms());
        let headers = headers::caller_response(res.headers());
        // From the header: for a HEAD, reqwest's own figure is the empty body's 0.
        let length =
            res.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let (method, host, path) = (req.method.clone(), url.host_str().unwrap_or("").to_owned(), url.path().to_owned());
        // The line is written when the body has gone out, within the request's span (its id).
        let span = tracing::Span::current();
        let body = body::counted(res.bytes_stream(), move |bytes| {
            drop(permit);
            let _request = span.enter();
            tracing::info!(
                connection_id = %id,
                %method,
                upstream_host = %host,
                %path,
                status,
                duration_ms = started.elapsed().as_millis() as u64,
                bytes,
                "proxied"
            );
        });
        Ok(ProxyAnswer { status, headers, length, body: Box::pin(body), retry })
    }

    /// The connection's token; a connection that is gone is forgotten here too.
    async fn token(&self, id: &ConnectionId) -> Result<AccessToken, ProxyError> {
        self.tokens.token(id).await.map_err(|e| {
            if matches!(e, TokenError::NotFound(_)) {
                self.targets.forget(id);
            }
            e.into()
        })
    }

    fn base(&self, target: &ProxyTarget) -> Result<Url, ProxyError> {
        api_base(target.provider, target.api_url.as_deref(), target.domain.as_deref(), &self.settings.snapinspect_api)
            .ok_or(ProxyError::NoApiUrl)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        target: &ProxyTarget,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        token: &AccessToken,
        body: reqwest::Body,
        length: Option<u64>,
    ) -> Result<reqwest::Response, ProxyError> {
        let clients = self.settings.clients.get();
        let builder = if target.provider == Provider::SnapInspect {
            clients.trusted.request(method.clone(), url.clone())
        } else {
            clients
                .stored
                .request(method.clone(), url.clone())
                .map_err(|b| ProxyError::Unreachable(format!("the API URL cannot be used: {b}")))?
        };
        let mut builder = builder.headers(headers.clone()).bearer_auth(token.token.expose_secret()).body(body);
        if let Some(n) = length {
            builder = builder.header(reqwest::header::CONTENT_LENGTH, n);
        }
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, builder.send()).await {
            Err(_) => Err(ProxyError::Timeout(timeout.as_secs())),
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) if e.is_timeout() => Err(ProxyError::Timeout(timeout.as_secs())),
            Ok(Err(e)) => match crate::outbound::blocked_in(&e) {
                Some(b) => Err(ProxyError::Unreachable(format!("the API URL cannot be used: {b}"))),
                None => Err(ProxyError::Unreachable(crate::outbound::client::describe_transport(&e))),
            },
        }
    }
}
