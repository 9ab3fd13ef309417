//! Configuration: the environment variables PRODUCT.md names, optionally also read (lower-case) from
//! `connect-hub.toml`; the environment wins. Parsing checks every value's shape up front.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::crypto::{self, KeyRing};

/// A configuration value that is missing or malformed; the message names it and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{name} {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

fn bad(name: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { name, problem: problem.into() }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// TLS certificate and key files (PEM) for serving HTTPS natively.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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

/// Everything the service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
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
    /// A cap on the SQLite file, in pages (4 KiB): past it, writes fail cleanly instead of filling the disk.
    pub sqlite_max_pages: Option<u64>,
    pub rate_limits: RateLimits,
    pub rust_log: String,
    pub log_format: LogFormat,
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

type Vars = BTreeMap<String, String>;

impl Settings {
    /// Read `connect-hub.toml` (or the file named by `CONNECT_HUB_CONFIG`) if present, then the
    /// environment on top of it.
    pub fn load() -> Result<Self, ConfigError> {
        let mut vars = Vars::new();
        let path = std::env::var("CONNECT_HUB_CONFIG").unwrap_or_else(|_| "connect-hub.toml".into());
        match std::fs::read_to_string(&path) {
            Ok(text) => vars.extend(parse_toml(&text)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bad("CONNECT_HUB_CONFIG", format!("({path}) cannot be read: {e}"))),
        }
        vars.extend(
            std::env::vars()
                .filter(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())),
        );
        Self::from_vars(&vars)
    }

    /// Parse from upper-case names to values; missing optional values take their defaults.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let secret = |k: &str| get(k).map(|v| SecretString::from(v.to_owned()));
        let url = |k: &'static str, default: &str| -> Result<Url, ConfigError> {
            let raw = get(k).unwrap_or(default);
            let u = Url::parse(raw).map_err(|e| bad(k, format!("is not a URL ({e}): `{raw}`")))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(bad(k, "must be an http or https URL"));
            }
            Ok(u)
        };

        let bind_addr = get("BIND_ADDR").unwrap_or("127.0.0.1:8080");
        let bind_addr = bind_addr
            .parse()
            .map_err(|_| bad("BIND_ADDR", format!("must be host:port with an IP address, got `{bind_addr}`")))?;

        let mut public_url = url("PUBLIC_URL", "http://127.0.0.1:8080")?;
        let trimmed = public_url.path().trim_end_matches('/').to_owned();
        public_url.set_path(&trimmed);
        if public_url.query().is_some() || public_url.fragment().is_some() {
            return Err(bad("PUBLIC_URL", "must not carry a query or fragment"));
        }

        let tls = match (get("TLS_CERT"), get("TLS_KEY")) {
            (Some(c), Some(k)) => Some(TlsFiles { cert: c.into(), key: k.into() }),
            (None, None) => None,
            (Some(_), None) => return Err(bad("TLS_KEY", "is missing: TLS_CERT and TLS_KEY are set together")),
            (None, Some(_)) => return Err(bad("TLS_CERT", "is missing: TLS_CERT and TLS_KEY are set together")),
        };

        let encryption_key = secret("ENCRYPTION_KEY");
        if let Some(k) = &encryption_key {
            crypto::decode_key(k.expose_secret(), 32).map_err(|e| bad("ENCRYPTION_KEY", e.to_string()))?;
        }
        let encryption_keys_old = get("ENCRYPTION_KEYS_OLD")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| SecretString::from(s.to_owned()))
                    .collect()
            })
            .unwrap_or_else(Vec::new);
        for k in &encryption_keys_old {
            crypto::decode_key(k.expose_secret(), 32)
                .map_err(|e| bad("ENCRYPTION_KEYS_OLD", format!("holds a key that {e}")))?;
        }
        let session_key = secret("SESSION_KEY");
        if let Some(k) = &session_key {
            crypto::decode_key(k.expose_secret(), 64).map_err(|e| bad("SESSION_KEY", e.to_string()))?;
        }

        let mut api_url = url("SNAPINSPECT_API_URL", "https://api-v3.snapinspect.com/")?;
        if !api_url.path().ends_with('/') {
            let p = format!("{}/", api_url.path());
            api_url.set_path(&p);
        }
        let snapinspect = SnapInspectSettings {
            client_id: get("SNAPINSPECT_CLIENT_ID").map(str::to_owned),
            client_secret: secret("SNAPINSPECT_CLIENT_SECRET"),
            authorize_url: url(
                "SNAPINSPECT_AUTHORIZE_URL",
                "https://my.snapinspect.com/integration/SnapInspectConnect",
            )?,
            exchange_url: url("SNAPINSPECT_EXCHANGE_URL", "https://my.snapinspect.com/integration/ExchangeToken")?,
            api_url,
            inspection_path: {
                let p = get("SNAPINSPECT_INSPECTION_PATH").unwrap_or(DEFAULT_INSPECTION_PATH);
                if !p.contains("{id}") {
                    return Err(bad(
                        "SNAPINSPECT_INSPECTION_PATH",
                        "must contain `{id}`, where the inspection id goes",
                    ));
                }
                p.trim_start_matches('/').to_owned()
            },
        };

        let forward_url = get("FORWARD_URL").map(|_| url("FORWARD_URL", "")).transpose()?;
        let forward_secret = secret("FORWARD_SECRET");
        if let Some(s) = &forward_secret {
            crate_standard_secret(s.expose_secret()).map_err(|p| bad("FORWARD_SECRET", p))?;
        }
        if forward_url.is_some() && forward_secret.is_none() {
            return Err(bad(
                "FORWARD_SECRET",
                "is missing: forwarded events must be signed (generate one with `connect-hub generate-key --webhook`)",
            ));
        }

        let retry_schedule = parse_schedule(get("RETRY_SCHEDULE").unwrap_or(DEFAULT_RETRY_SCHEDULE))
            .map_err(|p| bad("RETRY_SCHEDULE", p))?;

        Ok(Settings {
            database_url: get("DATABASE_URL").unwrap_or("sqlite://data/connect-hub.db").to_owned(),
            bind_addr,
            public_url,
            tls,
            encryption_key,
            encryption_keys_old,
            session_key,
            snapinspect,
            webhook_secret: secret("WEBHOOK_SECRET"),
            webhook_secret_old: secret("WEBHOOK_SECRET_OLD"),
            forward_url,
            forward_secret,
            worker_enabled: parse_bool("WORKER_ENABLED", get("WORKER_ENABLED"), true)?,
            retry_schedule,
            lease_secs: parse_u64("LEASE_SECS", get("LEASE_SECS"), 60)?,
            dedupe_window_secs: parse_u64("DEDUPE_WINDOW_SECS", get("DEDUPE_WINDOW_SECS"), 7200)?,
            event_retention: parse_duration(get("EVENT_RETENTION").unwrap_or("7d"))
                .map_err(|p| bad("EVENT_RETENTION", p))?,
            token_default_lifetime: parse_duration(get("TOKEN_DEFAULT_LIFETIME").unwrap_or("1h"))
                .map_err(|p| bad("TOKEN_DEFAULT_LIFETIME", p))?,
            admin_idle_timeout: parse_duration(get("ADMIN_IDLE_TIMEOUT").unwrap_or("30m"))
                .map_err(|p| bad("ADMIN_IDLE_TIMEOUT", p))?,
            group_commit: parse_bool("INGEST_GROUP_COMMIT", get("INGEST_GROUP_COMMIT"), true)?,
            http_redirect_addr: get("HTTP_REDIRECT_ADDR")
                .map(|a| {
                    a.parse().map_err(|_| {
                        bad("HTTP_REDIRECT_ADDR", format!("must be host:port with an IP address, got `{a}`"))
                    })
                })
                .transpose()?,
            trusted_proxies: get("TRUSTED_PROXIES")
                .map(|v| {
                    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_net).collect::<Result<Vec<_>, _>>()
                })
                .transpose()
                .map_err(|p| bad("TRUSTED_PROXIES", p))?
                .unwrap_or_default(),
            metrics_token: secret("METRICS_TOKEN"),
            outbound_timeout: parse_duration(get("OUTBOUND_TIMEOUT").unwrap_or("20s"))
                .map_err(|p| bad("OUTBOUND_TIMEOUT", p))?,
            outbound_ca_file: get("OUTBOUND_CA_FILE").map(PathBuf::from),
            sqlite_max_pages: get("SQLITE_MAX_PAGE_COUNT")
                .map(|v| parse_u64("SQLITE_MAX_PAGE_COUNT", Some(v), 0))
                .transpose()?,
            rate_limits: RateLimits {
                api_per_second: parse_u64("RATE_LIMIT_API", get("RATE_LIMIT_API"), 100)? as u32,
                connect_per_minute: parse_u64("RATE_LIMIT_CONNECT", get("RATE_LIMIT_CONNECT"), 30)? as u32,
                sign_in_per_minute: parse_u64("RATE_LIMIT_SIGN_IN", get("RATE_LIMIT_SIGN_IN"), 30)? as u32,
            },
            rust_log: get("RUST_LOG").unwrap_or("info").to_owned(),
            log_format: match get("LOG_FORMAT").unwrap_or("pretty") {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                other => return Err(bad("LOG_FORMAT", format!("must be `pretty` or `json`, got `{other}`"))),
            },
        })
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
            crate::startup::tls::server_config(tls)
                .map_err(|e| bad("TLS_CERT", format!("/ TLS_KEY cannot be used: {e:#}")))?;
        }
        if let Some(ca) = &self.outbound_ca_file {
            crate::http_client::read_roots(ca)
                .map_err(|e| bad("OUTBOUND_CA_FILE", format!("cannot be used: {e:#}")))?;
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

    /// `PUBLIC_URL` + `/connect/snapinspect/callback`, as registered with SnapInspect.
    pub fn redirect_uri(&self) -> String {
        format!("{}/connect/snapinspect/callback", self.public_url.as_str().trim_end_matches('/'))
    }

    /// Whether cookies must be `Secure`.
    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

/// `http://` is refused unless the host is a loopback address (tests and `demo`).
pub fn require_https_unless_loopback(name: &'static str, url: &Url) -> Result<(), ConfigError> {
    if url.scheme() == "https" || is_loopback(url) {
        return Ok(());
    }
    Err(bad(
        name,
        format!(
            "must be an https URL (plain http is only allowed on loopback), got `{}`",
            url.origin().ascii_serialization()
        ),
    ))
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// An address or a network: `10.0.0.1`, `10.0.0.0/8`, `::1`.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or a network like 10.0.0.0/8"))
}

/// A Standard Webhooks secret: `whsec_` followed by base64 of 24 to 64 bytes.
fn crate_standard_secret(s: &str) -> Result<(), String> {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let body = s.strip_prefix("whsec_").ok_or("must start with `whsec_` (Standard Webhooks)")?;
    match STANDARD.decode(body) {
        Ok(b) if (24..=64).contains(&b.len()) => Ok(()),
        _ => Err("must be `whsec_` followed by base64 of 24 to 64 random bytes (`connect-hub generate-key --webhook` prints one)".into()),
    }
}

fn parse_toml(text: &str) -> Result<Vars, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e| bad("CONNECT_HUB_CONFIG", format!("is not valid TOML: {e}")))?;
    let mut vars = Vars::new();
    for (k, v) in table {
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            _ => return Err(bad("CONNECT_HUB_CONFIG", format!("key `{k}` must be a string, number, boolean or list"))),
        };
        vars.insert(k.to_ascii_uppercase(), value);
    }
    Ok(vars)
}

fn parse_bool(name: &'static str, v: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(bad(name, format!("must be true or false, got `{other}`"))),
    }
}

fn parse_u64(name: &'static str, v: Option<&str>, default: u64) -> Result<u64, ConfigError> {
    v.map_or(Ok(default), |s| s.parse().map_err(|_| bad(name, format!("must be a whole number, got `{s}`"))))
}

/// A duration like `5s`, `2m`, `1h`, `1d` or `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 5s, 2m or 1h"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_millis(ms))
}

/// A comma-separated list of durations; at least one.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let items = s.split(',').filter(|p| !p.trim().is_empty()).map(parse_duration).collect::<Result<Vec<_>, _>>()?;
    if items.is_empty() {
        return Err("must list at least one delay, e.g. 5s,30s,2m".into());
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_product_contract() {
        let s = Settings::from_vars(&Vars::new()).unwrap();
        assert_eq!(s.database_url, "sqlite://data/connect-hub.db");
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.redirect_uri(), "http://127.0.0.1:8080/connect/snapinspect/callback");
        assert_eq!(s.snapinspect.api_url.as_str(), "https://api-v3.snapinspect.com/");
        assert_eq!(s.retry_schedule.len(), 9);
        let total: u64 = s.retry_schedule.iter().map(|d| d.as_secs()).sum();
        assert!((20 * 3600..=26 * 3600).contains(&total), "about a day in all: {total}s");
        assert_eq!(s.lease_secs, 60);
        assert_eq!(s.dedupe_window_secs, 7200);
        assert!(s.worker_enabled);
    }

    #[test]
    fn a_missing_key_stops_serve_with_a_hint() {
        let s = Settings::from_vars(&Vars::new()).unwrap();
        let err = s.check_serve().unwrap_err().to_string();
        assert!(err.starts_with("ENCRYPTION_KEY is missing"), "{err}");
        assert!(err.contains("generate-key"), "{err}");
    }

    #[test]
    fn a_malformed_key_is_named() {
        let err = Settings::from_vars(&vars(&[("SESSION_KEY", "c2hvcnQ=")])).unwrap_err().to_string();
        assert!(err.starts_with("SESSION_KEY decodes to 5 bytes"), "{err}");
    }

    #[test]
    fn plain_http_is_only_allowed_on_loopback() {
        let k32 = crypto::generate_key_b64(32);
        let k64 = crypto::generate_key_b64(64);
        let mut v = vars(&[("ENCRYPTION_KEY", &k32), ("SESSION_KEY", &k64), ("PUBLIC_URL", "http://hub.example.com")]);
        let err = Settings::from_vars(&v).unwrap().check_serve().unwrap_err().to_string();
        assert!(err.starts_with("PUBLIC_URL must be an https URL"), "{err}");
        v.insert("PUBLIC_URL".into(), "https://hub.example.com/".into());
        let s = Settings::from_vars(&v).unwrap();
        s.check_serve().unwrap();
        assert_eq!(s.redirect_uri(), "https://hub.example.com/connect/snapinspect/callback");
    }

    #[test]
    fn toml_keys_are_read_lower_case() {
        let v = parse_toml("bind_addr = \"0.0.0.0:9000\"\nlease_secs = 30\nworker_enabled = false\n").unwrap();
        let s = Settings::from_vars(&v).unwrap();
        assert_eq!(s.bind_addr.port(), 9000);
        assert_eq!(s.lease_secs, 30);
        assert!(!s.worker_enabled);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_schedule("").is_err());
    }
}
