//! Parsing configuration values: durations and schedules, booleans and numbers, networks, the
//! TOML file, the Standard Webhooks secret, and the https-unless-loopback rule.

use std::time::Duration;

use url::Url;

use super::{bad, ConfigError, Vars};
// Upward, on purpose: what counts as loopback is the outbound guard's answer, and the https rule
// for settings must give the same one. `outbound` imports nothing of the configuration.
use crate::outbound::is_loopback;

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

/// An address or a network: `10.0.0.1`, `10.0.0.0/8`, `::1`.
pub(super) fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or a network like 10.0.0.0/8"))
}

/// A Standard Webhooks secret: `whsec_` followed by base64 of 24 to 64 bytes.
pub(super) fn crate_standard_secret(s: &str) -> Result<(), String> {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let body = s.strip_prefix("whsec_").ok_or("must start with `whsec_` (Standard Webhooks)")?;
    match STANDARD.decode(body) {
        Ok(b) if (24..=64).contains(&b.len()) => Ok(()),
        _ => Err("must be `whsec_` followed by base64 of 24 to 64 random bytes (`connect-hub generate-key --webhook` prints one)".into()),
    }
}

pub(super) fn parse_toml(text: &str) -> Result<Vars, ConfigError> {
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

pub(super) fn parse_bool(name: &'static str, v: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(bad(name, format!("must be true or false, got `{other}`"))),
    }
}

pub(super) fn parse_u64(name: &'static str, v: Option<&str>, default: u64) -> Result<u64, ConfigError> {
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

/// A size like `10MiB`, `512KiB`, `1GiB`, `5MB` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size like 10MiB, 512KiB or 1048576"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("`{s}` has an unknown unit (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{s}` is too large"))
}

/// A comma-separated list of durations; at least one.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let items = s.split(',').filter(|p| !p.trim().is_empty()).map(parse_duration).collect::<Result<Vec<_>, _>>()?;
    if items.is_empty() {
        return Err("must list at least one delay, e.g. 5s,30s,2m".into());
    }
    Ok(items)
}
