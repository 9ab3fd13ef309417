//! Configuration: the environment variables PRODUCT.md names, optionally also read (lower-case) from
//! `connect-hub.toml`; the environment wins. Parsing checks every value's shape up front.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

mod load;
mod parse;
#[cfg(test)]
mod tests;

pub use parse::{parse_duration, parse_schedule, require_https_unless_loopback};

use crate::{
    crypto::{self, KeyRing},
    tls::TlsFiles,
};

/// A configuration value that is missing or malformed; the message names it and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{name} {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

impl From<crate::brand::BrandError> for ConfigError {
    fn from(e: crate::brand::BrandError) -> Self {
        bad(e.setting, e.problem)
    }
}

pub(crate) fn bad(name: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { name, problem: problem.into() }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The registered SnapInspect application and where SnapInspect lives.
#[derive(Debug, Clone)]
pub struct SnapInspectSettings {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub authorize_url: Url,
    pub exchange_url: Url,
    /// Always ends with `/`, so `user` and the inspection path join under it.
    pub api_url: Url,
    /// The API path an inspection is read from; `{id}` is replaced by the inspection id.
    pub inspection_path: String,
}

/// `DATABASE_URL`. A `postgres://` URL may carry a password: `Debug` prints it as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for DatabaseUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for DatabaseUrl {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                write!(f, "{:?}", url.as_str())
            }
            Ok(_) => write!(f, "{:?}", self.0),
            Err(_) => f.write_str("\"(not a URL)\""),
        }
    }
}

/// Everything the service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    pub bind_addr: SocketAddr,
    /// The external base URL, without a trailing slash.
    pub public_url: Url,
    pub tls: Option<TlsFiles>,
    pub encryption_key: Option<SecretString>,
    pub encryption_keys_old: Vec<SecretString>,
    pub session_key: Option<SecretString>,
    pub snapinspect: SnapInspectSettings,
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_old: Option<SecretString>,
    pub forward_url: Option<Url>,
    pub forward_secret: Option<SecretString>,
    pub worker_enabled: bool,
    pub retry_schedule: Vec<Duration>,
    pub lease_secs: u64,
    /// Deliveries in flight at once, in all (`WORKER_CONCURRENCY`).
    pub worker_concurrency: usize,
    /// Deliveries in flight at once to one endpoint (`ENDPOINT_CONCURRENCY`).
    pub endpoint_concurrency: usize,
    /// The most endpoints there may be (`ENDPOINTS_MAX`): each costs every instance's worker a
    /// little even when nothing is due, so their number is bounded.
    pub endpoints_max: usize,
    /// An endpoint whose deliveries failed without a success for this long is disabled.
    pub endpoint_disable_after: Duration,
    pub dedupe_window_secs: u64,
    /// Done events older than this are purged.
    pub event_retention: Duration,
    /// The lifetime assumed for a client-credentials token whose response has no `expires_in`.
    pub token_default_lifetime: Duration,
    /// Admin sessions end after this long without a request.
    pub admin_idle_timeout: Duration,
    /// Group commit for webhook intake (off only to measure the baseline).
    pub group_commit: bool,
    /// With TLS: a plain-http listener that only redirects to https.
    pub http_redirect_addr: Option<SocketAddr>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (none by default).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// When set, `/metrics` wants `Authorization: Bearer <this>`.
    pub metrics_token: Option<SecretString>,
    /// Total timeout of every outbound call (connect: at most 5 s).
    pub outbound_timeout: Duration,
    /// Extra root certificates (PEM) trusted for outbound calls, e.g. an internal CA.
    pub outbound_ca_file: Option<PathBuf>,
    /// Networks that stored token URLs may reach although they are loopback, private, link-local
    /// or otherwise not public: `OUTBOUND_ALLOW_NETWORKS` and `TOKEN_URL_ALLOW_NETWORKS` (none by default).
    pub token_url_allow_networks: Vec<ipnet::IpNet>,
    /// The same for endpoints' URLs: `OUTBOUND_ALLOW_NETWORKS` and `ENDPOINT_ALLOW_NETWORKS`.
    pub endpoint_allow_networks: Vec<ipnet::IpNet>,
    /// A cap on the SQLite file, in pages (4 KiB): past it, writes fail cleanly instead of filling the disk.
    pub sqlite_max_pages: Option<u64>,
    pub rate_limits: RateLimits,
    /// Origins a connect session's `return_url` may point to (`CONNECT_RETURN_ORIGINS`).
    pub connect_return_origins: Vec<crate::domain::connect_session::ReturnOrigin>,
    /// Whether `/` and `/connect/snapinspect` start a connect without a connect session.
    pub connect_public_start: bool,
    /// The organisation's brand on end-user pages.
    pub brand: crate::brand::BrandSettings,
    /// The largest request body the API proxy passes on (`PROXY_MAX_BODY`).
    pub proxy_max_body: u64,
    /// Proxied requests at once per connection (`PROXY_MAX_IN_FLIGHT`); past it, 429.
    pub proxy_max_in_flight: usize,
    pub rust_log: String,
    pub log_format: LogFormat,
    /// How often each connection's health is checked (`CONNECTION_CHECK_INTERVAL`); zero: never.
    pub connection_check_interval: Duration,
}

/// Request rate limits (0 turns one off).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Per API key, per second (bursts of twice that).
    pub api_per_second: u32,
    /// Per client address, per minute: starting the connect flow.
    pub connect_per_minute: u32,
    /// Per client address, per minute: sign-in attempts.
    pub sign_in_per_minute: u32,
}

pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,30s,2m,10m,30m,1h,2h,6h,12h";
/// Assumed, because nothing public documents SnapInspect's inspection endpoint (see the README).
pub const DEFAULT_INSPECTION_PATH: &str = "inspections/{id}";

pub(crate) type Vars = BTreeMap<String, String>;

impl Settings {
    /// How long a claimed delivery is ours: `LEASE_SECS`, but always longer than two outbound
    /// timeouts (a claimed delivery may wait for one request of its endpoint, then make its own),
    /// so a lease never ends while its request may still be answered.
    pub fn delivery_lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1)).max(2 * self.outbound_timeout + Duration::from_secs(10))
    }

    /// The key ring, or an error naming the missing key and how to make one.
    pub fn keyring(&self) -> Result<KeyRing, ConfigError> {
        let key = self.encryption_key.as_ref().ok_or_else(|| {
            bad(
                "ENCRYPTION_KEY",
                "is missing: set it to base64 of 32 random bytes (`connect-hub generate-key` prints one)",
            )
        })?;
        KeyRing::from_base64(key, &self.encryption_keys_old).map_err(|e| bad("ENCRYPTION_KEY", e.to_string()))
    }

    /// The 64 session-cookie key bytes, or an error naming the missing key and how to make one.
    pub fn session_key_bytes(&self) -> Result<Vec<u8>, ConfigError> {
        let key = self.session_key.as_ref().ok_or_else(|| {
            bad(
                "SESSION_KEY",
                "is missing: set it to base64 of 64 random bytes (`connect-hub generate-key --bytes 64` prints one)",
            )
        })?;
        crypto::decode_key(key.expose_secret(), 64).map_err(|e| bad("SESSION_KEY", e.to_string()))
    }

    /// What `serve` needs beyond what parsing already checked: the keys, and https wherever we or
    /// a provider are reached from outside this machine.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        self.keyring()?;
        self.session_key_bytes()?;
        require_https_unless_loopback("PUBLIC_URL", &self.public_url)?;
        require_https_unless_loopback("SNAPINSPECT_AUTHORIZE_URL", &self.snapinspect.authorize_url)?;
        require_https_unless_loopback("SNAPINSPECT_EXCHANGE_URL", &self.snapinspect.exchange_url)?;
        require_https_unless_loopback("SNAPINSPECT_API_URL", &self.snapinspect.api_url)?;
        if let Some(u) = &self.forward_url {
            require_https_unless_loopback("FORWARD_URL", u)?;
        }
        if self.http_redirect_addr.is_some() && self.tls.is_none() {
            return Err(bad(
                "HTTP_REDIRECT_ADDR",
                "only makes sense with TLS_CERT and TLS_KEY: it redirects plain http to the https listener",
            ));
        }
        if let Some(tls) = &self.tls {
            crate::tls::server_config(tls).map_err(|e| bad("TLS_CERT", format!("/ TLS_KEY cannot be used: {e:#}")))?;
        }
        crate::brand::Brand::load(&self.brand)?;
        if let Some(ca) = &self.outbound_ca_file {
            crate::tls::read_roots(ca).map_err(|e| bad("OUTBOUND_CA_FILE", format!("cannot be used: {e:#}")))?;
        }
        if self.snapinspect.client_id.is_some() != self.snapinspect.client_secret.is_some() {
            let missing = if self.snapinspect.client_id.is_none() {
                "SNAPINSPECT_CLIENT_ID"
            } else {
                "SNAPINSPECT_CLIENT_SECRET"
            };
            return Err(bad(
                missing,
                "is missing: the SnapInspect client id and secret are set together (SnapInspect support sends both)",
            ));
        }
        Ok(())
    }

    /// Which addresses stored token URLs may reach (upward, like `parse`'s loopback rule: the
    /// guard is built from this setting and imports nothing of the configuration).
    pub fn token_url_policy(&self) -> crate::outbound::Policy {
        crate::outbound::Policy::new(self.token_url_allow_networks.clone(), "TOKEN_URL_ALLOW_NETWORKS")
    }

    /// Which addresses endpoints' URLs may reach.
    pub fn endpoint_policy(&self) -> crate::outbound::Policy {
        crate::outbound::Policy::new(self.endpoint_allow_networks.clone(), "ENDPOINT_ALLOW_NETWORKS")
    }

    /// `PUBLIC_URL` + `/connect/snapinspect/callback`, as registered with SnapInspect.
    pub fn redirect_uri(&self) -> String {
        format!("{}/connect/snapinspect/callback", self.public_url.as_str().trim_end_matches('/'))
    }

    /// Whether cookies must be `Secure`.
    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}
