//! Reading the settings: `connect-hub.toml` (or `CONNECT_HUB_CONFIG`) if present, the environment
//! on top of it, and every value parsed into its type, with its default, before anything starts.

use std::{cell::RefCell, collections::BTreeSet, path::PathBuf};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    bad,
    parse::{
        crate_standard_secret, parse_bool, parse_duration, parse_net, parse_schedule, parse_size, parse_toml, parse_u64,
    },
    ConfigError, DatabaseUrl, LogFormat, RateLimits, Settings, SnapInspectSettings, Vars, DEFAULT_INSPECTION_PATH,
    DEFAULT_RETRY_SCHEDULE,
};
use crate::{crypto, tls::TlsFiles};

/// The setting that names the configuration file (read by [`Settings::load`], before the rest).
pub const CONFIG_FILE_SETTING: &str = "CONNECT_HUB_CONFIG";

/// A whole number from 1 to 10,000.
fn positive(name: &'static str, v: Option<&str>, default: u64) -> Result<usize, ConfigError> {
    match parse_u64(name, v, default)? {
        n @ 1..=10_000 => Ok(n as usize),
        n => Err(bad(name, format!("must be between 1 and 10000, got {n}"))),
    }
}

impl Settings {
    /// Read `connect-hub.toml` (or the file named by `CONNECT_HUB_CONFIG`) if present, then the
    /// environment on top of it.
    pub fn load() -> Result<Self, ConfigError> {
        let mut vars = Vars::new();
        let path = std::env::var(CONFIG_FILE_SETTING).unwrap_or_else(|_| "connect-hub.toml".into());
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
        Self::from_vars_noting(vars, &RefCell::default())
    }

    /// Every setting the configuration reads, found by reading none (each takes its default): the
    /// names the README's settings table must list, straight from the loader, so the two cannot drift.
    pub fn names_read() -> BTreeSet<&'static str> {
        let read = RefCell::default();
        // With nothing set every value takes its default, so every name is asked for.
        let _ = Self::from_vars_noting(&Vars::new(), &read);
        let mut names = read.into_inner();
        names.insert(CONFIG_FILE_SETTING);
        names
    }

    /// `from_vars`, noting in `read` each name it looks up.
    fn from_vars_noting(vars: &Vars, read: &RefCell<BTreeSet<&'static str>>) -> Result<Self, ConfigError> {
        let get = |k: &'static str| {
            read.borrow_mut().insert(k);
            vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
        };
        let secret = |k: &'static str| get(k).map(|v| SecretString::from(v.to_owned()));
        let url = |k: &'static str, default: &str| -> Result<Url, ConfigError> {
            let raw = get(k).unwrap_or(default);
            let u = Url::parse(raw).map_err(|e| bad(k, format!("is not a URL ({e}): `{raw}`")))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(bad(k, "must be an http or https URL"));
            }
            Ok(u)
        };
        // Comma-separated addresses or networks; unset or blank: none.
        let networks = |k: &'static str| -> Result<Vec<ipnet::IpNet>, ConfigError> {
            let list = get(k).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty());
            list.map(parse_net).collect::<Result<_, _>>().map_err(|p| bad(k, p))
        };
        // OUTBOUND_ALLOW_NETWORKS opens a network to both kinds of stored URL, the other two to one
        // kind: an identity provider's network allowed for token URLs is no endpoint's to POST into.
        let outbound = networks("OUTBOUND_ALLOW_NETWORKS")?;

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
            database_url: DatabaseUrl(get("DATABASE_URL").unwrap_or("sqlite://data/connect-hub.db").to_owned()),
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
            worker_concurrency: positive("WORKER_CONCURRENCY", get("WORKER_CONCURRENCY"), 64)?,
            endpoint_concurrency: positive("ENDPOINT_CONCURRENCY", get("ENDPOINT_CONCURRENCY"), 16)?,
            endpoints_max: positive("ENDPOINTS_MAX", get("ENDPOINTS_MAX"), 1000)?,
            endpoint_disable_after: parse_duration(get("ENDPOINT_DISABLE_AFTER").unwrap_or("5d"))
                .map_err(|p| bad("ENDPOINT_DISABLE_AFTER", p))?,
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
            trusted_proxies: networks("TRUSTED_PROXIES")?,
            metrics_token: secret("METRICS_TOKEN"),
            outbound_timeout: parse_duration(get("OUTBOUND_TIMEOUT").unwrap_or("20s"))
                .map_err(|p| bad("OUTBOUND_TIMEOUT", p))?,
            outbound_ca_file: get("OUTBOUND_CA_FILE").map(PathBuf::from),
            token_url_allow_networks: [outbound.clone(), networks("TOKEN_URL_ALLOW_NETWORKS")?].concat(),
            endpoint_allow_networks: [outbound, networks("ENDPOINT_ALLOW_NETWORKS")?].concat(),
            sqlite_max_pages: get("SQLITE_MAX_PAGE_COUNT")
                .map(|v| parse_u64("SQLITE_MAX_PAGE_COUNT", Some(v), 0))
                .transpose()?,
            rate_limits: RateLimits {
                api_per_second: parse_u64("RATE_LIMIT_API", get("RATE_LIMIT_API"), 100)? as u32,
                connect_per_minute: parse_u64("RATE_LIMIT_CONNECT", get("RATE_LIMIT_CONNECT"), 30)? as u32,
                sign_in_per_minute: parse_u64("RATE_LIMIT_SIGN_IN", get("RATE_LIMIT_SIGN_IN"), 30)? as u32,
            },
            connect_return_origins: crate::domain::connect_session::ReturnOrigin::parse_list(
                get("CONNECT_RETURN_ORIGINS").unwrap_or(""),
            )
            .map_err(|p| bad("CONNECT_RETURN_ORIGINS", p))?,
            connect_public_start: parse_bool("CONNECT_PUBLIC_START", get("CONNECT_PUBLIC_START"), true)?,
            brand: crate::brand::BrandSettings {
                name: get("BRAND_NAME")
                    .map(crate::brand::BrandSettings::parse_name)
                    .transpose()
                    .map_err(|p| bad("BRAND_NAME", p))?,
                logo: get("BRAND_LOGO").map(PathBuf::from),
                color: get("BRAND_COLOR")
                    .map(crate::brand::BrandSettings::parse_color)
                    .transpose()
                    .map_err(|p| bad("BRAND_COLOR", p))?,
                support_url: get("BRAND_SUPPORT_URL")
                    .map(crate::brand::BrandSettings::parse_support_url)
                    .transpose()
                    .map_err(|p| bad("BRAND_SUPPORT_URL", p))?,
            },
            proxy_max_body: parse_size(get("PROXY_MAX_BODY").unwrap_or("10MiB"))
                .map_err(|p| bad("PROXY_MAX_BODY", p))?,
            proxy_max_in_flight: positive("PROXY_MAX_IN_FLIGHT", get("PROXY_MAX_IN_FLIGHT"), 32)?,
            rust_log: get("RUST_LOG").unwrap_or("info").to_owned(),
            log_format: match get("LOG_FORMAT").unwrap_or("pretty") {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                other => return Err(bad("LOG_FORMAT", format!("must be `pretty` or `json`, got `{other}`"))),
            },
            connection_check_interval: parse_duration(get("CONNECTION_CHECK_INTERVAL").unwrap_or("6h"))
                .map_err(|p| bad("CONNECTION_CHECK_INTERVAL", p))?,
        })
    }
}
