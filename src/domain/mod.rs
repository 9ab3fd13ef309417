//! The small value types the rest of the code passes around: ids, company ids, providers, statuses,
//! single-use tokens, random and encoding helpers. Each parses once; a value that exists is valid.

pub mod connect_session;
pub mod endpoint;
mod event;
pub mod limits;
pub mod status;
pub mod text;

pub use event::{EventId, EventState};

use std::fmt;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Errors from parsing a domain value; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// `n` bytes from the operating system's CSPRNG: for secrets (states, session keys, nonces).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// `n` bytes from the thread-local CSPRNG (ChaCha, seeded from the OS): for identifiers made on
/// every request (event and request ids), without a system call each.
pub fn unique_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::thread_rng().fill_bytes(&mut out);
    out
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lower case, without padding: compact, URL-safe, case-insensitive ids.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// SHA-256 of a value, for storing high-entropy secrets (states, session ids, API keys) by hash.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A single-use secret handed to a browser (the connect flow's `state`, a connect link's token):
/// 256 bits from the OS, URL-safe. The store keeps only [`OpaqueToken::hash_of`] what came back.
pub struct OpaqueToken(String);

impl OpaqueToken {
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps: sha256 of the value as received.
    pub fn hash_of(received: &str) -> Vec<u8> {
        sha256(received.as_bytes())
    }
}

/// A connection's id: `con_` followed by 26 base32 characters (128 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(String);

impl ConnectionId {
    const PREFIX: &'static str = "con_";

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, base32(&random_bytes::<16>())))
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let body = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| ParseError(format!("a connection id starts with `con_`, got `{}`", truncate(s))))?;
        if body.len() != 26 || !body.bytes().all(|b| BASE32.contains(&b)) {
            return Err(ParseError(format!("`{}` is not a connection id", truncate(s))));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// SnapInspect's internal company id (`iCompanyID`): a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompanyId(i64);

impl CompanyId {
    pub fn new(n: i64) -> Result<Self, ParseError> {
        if n > 0 {
            Ok(Self(n))
        } else {
            Err(ParseError(format!("a company id is a positive integer, got {n}")))
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        s.trim()
            .parse::<i64>()
            .map_err(|_| ParseError(format!("a company id is a positive integer, got `{}`", truncate(s))))
            .and_then(Self::new)
    }

    /// Read a company id from JSON, which SnapInspect may send as a number or a numeric string.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Number(n) => n.as_i64().and_then(|n| Self::new(n).ok()),
            serde_json::Value::String(s) => Self::parse(s).ok(),
            _ => None,
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for CompanyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The platforms a connection can be with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    SnapInspect,
    Snapdocs,
    SmartDocumentor,
    Signicat,
    Docplanner,
    Custom,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::SnapInspect,
        Provider::Snapdocs,
        Provider::SmartDocumentor,
        Provider::Signicat,
        Provider::Docplanner,
        Provider::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::SnapInspect => "snapinspect",
            Provider::Snapdocs => "snapdocs",
            Provider::SmartDocumentor => "smartdocumentor",
            Provider::Signicat => "signicat",
            Provider::Docplanner => "docplanner",
            Provider::Custom => "custom",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Provider::SnapInspect => "SnapInspect",
            Provider::Snapdocs => "Snapdocs",
            Provider::SmartDocumentor => "SmartDocumentor",
            Provider::Signicat => "Signicat",
            Provider::Docplanner => "Docplanner",
            Provider::Custom => "Custom",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            ParseError(format!(
                "unknown provider `{}`: use snapinspect, snapdocs, smartdocumentor, signicat, docplanner or custom",
                truncate(s)
            ))
        })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    /// Tokens are present and the last call to the provider worked (or none failed yet).
    Active,
    /// The provider refused the refresh token: an end user has to connect again.
    NeedsReconnect,
    /// Linked, but SnapInspect did not tell us which company: an admin assigns it.
    Unidentified,
    /// A client-credentials connection whose last token request failed.
    Failing,
    /// An admin disconnected it: the tokens are deleted, the history is kept.
    Disconnected,
}

impl ConnectionStatus {
    pub const ALL: [ConnectionStatus; 5] = [
        ConnectionStatus::Active,
        ConnectionStatus::NeedsReconnect,
        ConnectionStatus::Unidentified,
        ConnectionStatus::Failing,
        ConnectionStatus::Disconnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::NeedsReconnect => "needs_reconnect",
            ConnectionStatus::Unidentified => "unidentified",
            ConnectionStatus::Failing => "failing",
            ConnectionStatus::Disconnected => "disconnected",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s.trim())
            .ok_or_else(|| ParseError(format!("unknown connection status `{}`", truncate(s))))
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn connection_ids_round_trip_and_reject_garbage() {
        let id = ConnectionId::generate();
        assert_eq!(ConnectionId::parse(id.as_str()).unwrap(), id);
        assert!(ConnectionId::parse("con_short").is_err());
        assert!(ConnectionId::parse("abc").is_err());
        assert!(ConnectionId::parse("con_AAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
    }

    #[test]
    fn company_ids_come_from_numbers_or_numeric_strings() {
        assert_eq!(CompanyId::from_json(&serde_json::json!(6847)).unwrap().get(), 6847);
        assert_eq!(CompanyId::from_json(&serde_json::json!("6847")).unwrap().get(), 6847);
        assert!(CompanyId::from_json(&serde_json::json!(0)).is_none());
        assert!(CompanyId::from_json(&serde_json::json!("x")).is_none());
        assert!(CompanyId::from_json(&serde_json::json!(null)).is_none());
    }
}
