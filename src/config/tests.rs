//! The configuration's parsing, against the names and defaults PRODUCT.md gives: every setting's
//! default, its accepted shapes, and the one-line message a malformed value gets.

use super::{parse::parse_toml, *};

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

#[test]
fn outbound_allow_networks_is_a_list_of_networks_and_none_by_default() {
    let none = Settings::from_vars(&Vars::new()).unwrap();
    assert!(none.token_url_allow_networks.is_empty() && none.endpoint_allow_networks.is_empty());
    let s = Settings::from_vars(&vars(&[("OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8, ::1 ,10.1.2.3")])).unwrap();
    let nets: Vec<String> = s.token_url_allow_networks.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["127.0.0.0/8", "::1/128", "10.1.2.3/32"]);
    assert_eq!(s.endpoint_allow_networks, s.token_url_allow_networks, "both kinds of stored URL");
    let err = Settings::from_vars(&vars(&[("OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,10.0.0.0/33")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "OUTBOUND_ALLOW_NETWORKS `10.0.0.0/33` is not an IP address or a network like 10.0.0.0/8"
    );
}

#[test]
fn token_urls_and_endpoints_each_add_their_own_networks() {
    let s = Settings::from_vars(&vars(&[
        ("OUTBOUND_ALLOW_NETWORKS", "10.1.0.0/16"),
        ("TOKEN_URL_ALLOW_NETWORKS", "10.2.0.0/16"),
        ("ENDPOINT_ALLOW_NETWORKS", "10.3.0.0/16,10.4.0.9"),
    ]))
    .unwrap();
    let shown = |nets: &[ipnet::IpNet]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(shown(&s.token_url_allow_networks), ["10.1.0.0/16", "10.2.0.0/16"]);
    assert_eq!(shown(&s.endpoint_allow_networks), ["10.1.0.0/16", "10.3.0.0/16", "10.4.0.9/32"]);
    let ip = |a: &str| a.parse::<std::net::IpAddr>().unwrap();
    assert!(s.token_url_policy().check_ip(ip("10.2.0.1")).is_ok());
    assert!(s.endpoint_policy().check_ip(ip("10.2.0.1")).is_err());
    assert!(s.endpoint_policy().check_ip(ip("10.4.0.9")).is_ok());
    assert!(s.token_url_policy().check_ip(ip("10.4.0.9")).is_err());
    for name in ["TOKEN_URL_ALLOW_NETWORKS", "ENDPOINT_ALLOW_NETWORKS"] {
        let err = Settings::from_vars(&vars(&[(name, "nope")])).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{name} `nope` is not")), "{err}");
    }
}

#[test]
fn a_database_password_never_prints_with_the_settings() {
    let s = Settings::from_vars(&vars(&[("DATABASE_URL", "postgres://hub:s3cret-pw@db.internal:5432/hub")])).unwrap();
    assert_eq!(s.database_url, "postgres://hub:s3cret-pw@db.internal:5432/hub", "the URL itself is kept whole");
    let printed = format!("{s:?}");
    assert!(!printed.contains("s3cret-pw"), "{printed}");
    assert!(printed.contains("postgres://hub:***@db.internal:5432/hub"), "{printed}");
    let plain = Settings::from_vars(&vars(&[("DATABASE_URL", "sqlite://data/hub.db")])).unwrap();
    assert!(format!("{plain:?}").contains("sqlite://data/hub.db"));
}

#[test]
fn delivery_settings_have_their_defaults_and_bounds() {
    let s = Settings::from_vars(&Vars::new()).unwrap();
    assert_eq!(s.worker_concurrency, 64);
    assert_eq!(s.endpoint_concurrency, 16);
    assert_eq!(s.endpoints_max, 1000);
    assert_eq!(s.endpoint_disable_after, std::time::Duration::from_secs(5 * 86_400));
    assert_eq!(s.delivery_lease(), std::time::Duration::from_secs(60), "LEASE_SECS beats 2 × 20 s + 10 s");
    let s = Settings::from_vars(&vars(&[
        ("WORKER_CONCURRENCY", "8"),
        ("ENDPOINT_CONCURRENCY", "2"),
        ("ENDPOINT_DISABLE_AFTER", "90m"),
        ("LEASE_SECS", "5"),
        ("ENDPOINTS_MAX", "25"),
    ]))
    .unwrap();
    assert_eq!((s.worker_concurrency, s.endpoint_concurrency, s.endpoints_max), (8, 2, 25));
    assert_eq!(s.endpoint_disable_after, std::time::Duration::from_secs(5400));
    assert_eq!(s.delivery_lease(), std::time::Duration::from_secs(50), "always longer than two outbound timeouts");
    assert!(Settings::from_vars(&vars(&[("WORKER_CONCURRENCY", "0")]))
        .unwrap_err()
        .to_string()
        .starts_with("WORKER_CONCURRENCY"));
    for bad in ["0", "10001", "many"] {
        let e = Settings::from_vars(&vars(&[("ENDPOINTS_MAX", bad)])).unwrap_err().to_string();
        assert!(e.starts_with("ENDPOINTS_MAX"), "{bad}: {e}");
    }
    assert!(Settings::from_vars(&vars(&[("ENDPOINT_CONCURRENCY", "10001")])).is_err());
    assert!(Settings::from_vars(&vars(&[("ENDPOINT_CONCURRENCY", "10000")])).is_ok());
    assert!(Settings::from_vars(&vars(&[("ENDPOINT_DISABLE_AFTER", "soon")])).is_err());
}

#[test]
fn proxy_settings_have_their_defaults_units_and_bounds() {
    let s = Settings::from_vars(&Vars::new()).unwrap();
    assert_eq!((s.proxy_max_body, s.proxy_max_in_flight), (10 << 20, 32));
    for (given, bytes) in [
        ("512KiB", 512 << 10),
        ("3MiB", 3 << 20),
        ("1GiB", 1 << 30),
        ("5MB", 5_000_000),
        ("2kB", 2000),
        ("3KB", 3000),
        ("2GB", 2_000_000_000),
        ("7", 7),
        ("9B", 9),
    ] {
        let s = Settings::from_vars(&vars(&[("PROXY_MAX_BODY", given)])).unwrap();
        assert_eq!(s.proxy_max_body, bytes, "{given}");
    }
    for bad in ["10 MiB?", "MiB", "-1", "10TiB", "99999999999999999999GiB", "18446744073709551615GiB"] {
        let e = Settings::from_vars(&vars(&[("PROXY_MAX_BODY", bad)])).unwrap_err().to_string();
        assert!(e.starts_with("PROXY_MAX_BODY"), "{bad}: {e}");
    }
    let s = Settings::from_vars(&vars(&[("PROXY_MAX_IN_FLIGHT", "4")])).unwrap();
    assert_eq!(s.proxy_max_in_flight, 4);
    assert!(Settings::from_vars(&vars(&[("PROXY_MAX_IN_FLIGHT", "0")])).is_err());
}

#[test]
fn the_connection_check_interval_defaults_to_six_hours_takes_short_values_and_zero_turns_it_off() {
    let s = Settings::from_vars(&Vars::new()).unwrap();
    assert_eq!(s.connection_check_interval, Duration::from_secs(6 * 3600));
    let short = Settings::from_vars(&vars(&[("CONNECTION_CHECK_INTERVAL", "2s")])).unwrap();
    assert_eq!(short.connection_check_interval, Duration::from_secs(2));
    let off = Settings::from_vars(&vars(&[("CONNECTION_CHECK_INTERVAL", "0")])).unwrap();
    assert!(off.connection_check_interval.is_zero());
    let err = Settings::from_vars(&vars(&[("CONNECTION_CHECK_INTERVAL", "often")])).unwrap_err().to_string();
    assert!(err.starts_with("CONNECTION_CHECK_INTERVAL"), "{err}");
}
