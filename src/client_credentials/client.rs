//! The generic RFC 6749 §4.4 client: POST `grant_type=client_credentials` to the token URL,
//! authenticated by HTTP Basic or in the body, and the JSON answer turned into a token or an error.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{AuthStyle, Settings};
use crate::{
    domain::text::escaped,
    outbound::client::redact,
    outbound::client::{describe_request, retry_after},
    outbound::client::{read_capped, read_excerpt, snippet, BodyError, ANSWER_CAP, EXCERPT_CAP},
    outbound::{blocked_in, GuardedClient},
};

/// A token as the provider issued it.
#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

/// Why no token was issued.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The provider refused (4xx): the settings are wrong; the message says which, in plain words.
    #[error("{message}")]
    Refused { status: u16, code: Option<String>, message: String },
    /// The provider or the network failed (5xx, 429, timeout): try again later.
    #[error("{message}")]
    Transient { message: String, retry_after: Option<Duration> },
    /// A 2xx that is not a usable token.
    #[error("the provider answered with something other than a token: {0}")]
    Malformed(String),
    /// The settings cannot even make a request.
    #[error("{0}")]
    Settings(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before they are joined with `:`
/// and base64-encoded.
pub fn basic_credentials(client_id: &str, secret: &str, style: AuthStyle) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = match style {
        AuthStyle::BasicRaw => format!("{client_id}:{secret}"),
        _ => format!("{}:{}", enc(client_id), enc(secret)),
    };
    format!("Basic {}", STANDARD.encode(pair))
}

/// What an RFC 6749 §5.2 error code means, for the person who has to fix it.
fn explain(code: &str, description: Option<&str>, status: u16) -> String {
    let plain = match code {
        "invalid_client" => "the client id or secret is wrong or expired".to_owned(),
        "invalid_scope" => "the client is not allowed that scope".to_owned(),
        "unauthorized_client" => "this client may not use the client-credentials grant".to_owned(),
        "unsupported_grant_type" => "the provider does not offer the client-credentials grant here".to_owned(),
        "invalid_request" => "the provider says the request is malformed".to_owned(),
        "access_denied" => "the provider denied access to this client".to_owned(),
        other => format!("the provider answered `{}`", escaped(other)),
    };
    // The provider's own words are kept as the connection's last error and printed: written out.
    let code = escaped(code);
    match description.filter(|d| !d.is_empty()) {
        Some(d) => format!("{plain} (HTTP {status}, {code}: {})", escaped(d)),
        None => format!("{plain} (HTTP {status}, {code})"),
    }
}

/// Ask for a token.
#[tracing::instrument(skip_all, fields(provider = %settings.provider))]
pub async fn fetch_token(
    http: &GuardedClient,
    settings: &Settings,
    secret: &SecretString,
) -> Result<IssuedToken, FetchError> {
    let url = settings.resolved_token_url().map_err(|e| FetchError::Settings(e.to_string()))?;
    let from = format!("the token URL ({})", url.host_str().unwrap_or_default());
    let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".into())];
    form.extend(settings.extra_fields());
    let mut req = http.post(url).map_err(|b| FetchError::Settings(b.to_string()))?;
    req = req.header(reqwest::header::ACCEPT, "application/json");
    match settings.auth {
        AuthStyle::Post => {
            form.push(("client_id", settings.client_id.clone()));
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        style => {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                basic_credentials(&settings.client_id, secret.expose_secret(), style),
            );
        }
    }
    let res = req.form(&form).send().await.map_err(|e| match blocked_in(&e) {
        // The settings point at an address the operator has not allowed: no retry will help.
        Some(blocked) => FetchError::Settings(blocked.to_string()),
        None => FetchError::Transient {
            // The page adds the provider's name; here only what happened to which URL.
            message: describe_request("the token request", &e),
            retry_after: None,
        },
    })?;
    let status = res.status();
    let wait = retry_after(res.headers());
    // A token is small; an error only matters for its first words.
    let body = if status.is_success() {
        read_capped(res, ANSWER_CAP, &from).await.map_err(|e| match e {
            BodyError::TooLarge { .. } => FetchError::Malformed(e.to_string()),
            BodyError::Transport(e) => {
                FetchError::Transient { message: describe_request("the token request", &e), retry_after: None }
            }
        })?
    } else {
        read_excerpt(res, EXCERPT_CAP).await
    };
    let body = redact(&body, &[secret]);
    let code = status.as_u16();
    if status.is_server_error() || code == 429 || code == 408 {
        return Err(FetchError::Transient {
            message: format!("{} answered HTTP {code}: {}", settings.provider.label(), snippet(&body)),
            retry_after: wait,
        });
    }
    if !status.is_success() {
        let parsed: Option<ErrorResponse> = serde_json::from_str(&body).ok();
        let error = parsed.as_ref().and_then(|e| e.error.clone());
        let description = parsed.as_ref().and_then(|e| e.error_description.clone());
        let message = match &error {
            Some(e) => explain(e, description.as_deref(), code),
            None if code == 401 => {
                format!("the client id or secret is wrong or expired (HTTP 401: {})", snippet(&body))
            }
            None if code == 403 => format!("the client is not allowed this (HTTP 403: {})", snippet(&body)),
            None => {
                format!("{} refused the token request (HTTP {code}: {})", settings.provider.label(), snippet(&body))
            }
        };
        return Err(FetchError::Refused { status: code, code: error, message });
    }
    let parsed: TokenResponse = serde_json::from_str(&body).map_err(|e| FetchError::Malformed(e.to_string()))?;
    let access_token =
        parsed.access_token.filter(|t| !t.is_empty()).ok_or_else(|| FetchError::Malformed("no access_token".into()))?;
    let token_type = parsed.token_type.unwrap_or_else(|| "Bearer".into());
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(FetchError::Malformed(format!(
            "token_type `{}` is not Bearer",
            escaped(&token_type.chars().take(20).collect::<String>())
        )));
    }
    // Some servers send expires_in as a string; a missing or unreadable one means "not said".
    let expires_in = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(IssuedToken { access_token: SecretString::from(access_token), token_type, expires_in, scope: parsed.scope })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_first_per_rfc6749() {
        // id "a b", secret "p+%:é" -> "a+b:p%2B%25%3A%C3%A9"
        let h = basic_credentials("a b", "p+%:é", AuthStyle::Basic);
        assert_eq!(h, format!("Basic {}", STANDARD.encode("a+b:p%2B%25%3A%C3%A9")));
        let raw = basic_credentials("a b", "p+%:é", AuthStyle::BasicRaw);
        assert_eq!(raw, format!("Basic {}", STANDARD.encode("a b:p+%:é")));
    }

    #[test]
    fn error_codes_become_plain_words() {
        assert!(explain("invalid_client", None, 400).starts_with("the client id or secret is wrong or expired"));
        assert!(explain("invalid_scope", Some("no"), 400).contains("not allowed that scope"));
    }
}
