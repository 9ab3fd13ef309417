//! Calls to SnapInspect: ExchangeToken (form POST, rotates both tokens), `GET /user` and the
//! inspection read, each with the shared client's timeouts and no redirects.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::OpaqueToken;
use crate::{
    config::SnapInspectSettings,
    domain::{text::escaped, CompanyId},
    outbound::client::{
        describe_request, describe_transport, read_capped, read_excerpt, redact, retry_after, snippet, BodyError,
        ANSWER_CAP, EXCERPT_CAP,
    },
};

/// The registered application, ready to call SnapInspect.
#[derive(Clone)]
pub struct SnapInspectClient {
    http: reqwest::Client,
    settings: SnapInspectSettings,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: String,
}

/// A freshly exchanged pair. `refresh` is `None` when SnapInspect sent none (keep the old one).
pub struct ExchangedTokens {
    pub access: SecretString,
    pub refresh: Option<SecretString>,
}

/// Why an exchange failed; the variant decides what happens to the connection.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// A 4xx about the grant: the refresh token is dead, an end user must reconnect.
    #[error("SnapInspect refused the refresh token (HTTP {status}: {detail})")]
    Rejected { status: u16, detail: String },
    /// A 4xx about our application (`invalid_client`): the configuration is wrong, not the connection.
    #[error("SnapInspect refused our client id or secret (HTTP {status}: {detail}); check SNAPINSPECT_CLIENT_ID and SNAPINSPECT_CLIENT_SECRET")]
    ClientRejected { status: u16, detail: String },
    /// A 5xx, 429, timeout or network failure: try again later.
    #[error("{message}")]
    Transient { message: String, retry_after: Option<Duration> },
    /// A 2xx whose body is not the documented JSON.
    #[error("SnapInspect answered the exchange with something other than the documented JSON: {0}")]
    Malformed(String),
}

/// Why an API call (`/user`, inspections) failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error("SnapInspect refused the access token (HTTP 401)")]
    Unauthorized,
    #[error("SnapInspect answered HTTP {status}: {detail}")]
    Status { status: u16, detail: String, retry_after: Option<Duration> },
    #[error("could not reach SnapInspect: {0}")]
    Transport(String),
    #[error("SnapInspect's answer is not JSON: {0}")]
    NotJson(String),
    /// Longer than any real answer; it was not read past the cap.
    #[error("{0}")]
    TooLarge(String),
}

/// The body of `GET /user`, kept raw, plus the company we could read from it.
pub struct UserInfo {
    pub raw: String,
    pub company_id: Option<CompanyId>,
    pub company_name: Option<String>,
}

#[derive(Deserialize)]
struct ExchangeResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    refresh_token: Option<String>,
}

impl SnapInspectClient {
    /// `None` when the SnapInspect application is not configured.
    pub fn new(http: reqwest::Client, settings: &SnapInspectSettings, redirect_uri: String) -> Option<Self> {
        Some(Self {
            http,
            settings: settings.clone(),
            client_id: settings.client_id.clone()?,
            client_secret: settings.client_secret.clone()?,
            redirect_uri,
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    pub fn settings(&self) -> &SnapInspectSettings {
        &self.settings
    }

    /// POST the six documented fields to ExchangeToken; SnapInspect answers with a new pair and
    /// invalidates the old one.
    #[tracing::instrument(skip_all)]
    pub async fn exchange(&self, refresh_token: &SecretString) -> Result<ExchangedTokens, ExchangeError> {
        let state = OpaqueToken::generate();
        let form = [
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("state", state.as_str()),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        let res = self
            .http
            .post(self.settings.exchange_url.clone())
            .form(&form)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ExchangeError::Transient {
                message: describe_request("the ExchangeToken request", &e),
                retry_after: None,
            })?;
        let status = res.status();
        let wait = retry_after(res.headers());
        // A token answer is small; of an error only the first words matter.
        let body = if status.is_success() {
            read_capped(res, ANSWER_CAP, "SnapInspect's ExchangeToken").await.map_err(|e| match e {
                BodyError::TooLarge { .. } => ExchangeError::Malformed(e.to_string()),
                BodyError::Transport(e) => ExchangeError::Transient {
                    message: describe_request("the ExchangeToken request", &e),
                    retry_after: None,
                },
            })?
        } else {
            read_excerpt(res, EXCERPT_CAP).await
        };
        // Never let an echoed secret reach a log line or an admin page.
        let detail = snippet(&redact(&body, &[refresh_token, &self.client_secret]));
        let code = status.as_u16();
        if status.is_server_error() || code == 429 || code == 408 {
            return Err(ExchangeError::Transient {
                message: format!("ExchangeToken answered HTTP {code}: {detail}"),
                retry_after: wait,
            });
        }
        if status.is_client_error() {
            return Err(if detail.contains("invalid_client") {
                ExchangeError::ClientRejected { status: code, detail }
            } else {
                ExchangeError::Rejected { status: code, detail }
            });
        }
        if !status.is_success() {
            return Err(ExchangeError::Transient {
                message: format!("ExchangeToken answered HTTP {code}"),
                retry_after: wait,
            });
        }
        let parsed: ExchangeResponse =
            serde_json::from_str(&body).map_err(|e| ExchangeError::Malformed(e.to_string()))?;
        if let Some(t) = parsed.token_type.as_deref() {
            if !t.eq_ignore_ascii_case("bearer") {
                return Err(ExchangeError::Malformed(format!(
                    "token_type `{}` is not Bearer",
                    escaped(&t.chars().take(20).collect::<String>())
                )));
            }
        }
        let access = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ExchangeError::Malformed("no access_token".into()))?;
        Ok(ExchangedTokens {
            access: SecretString::from(access),
            refresh: parsed.refresh_token.filter(|t| !t.is_empty()).map(SecretString::from),
        })
    }

    /// `GET {api}user` with the token: which user, and (if it says) which company.
    #[tracing::instrument(skip_all)]
    pub async fn user(&self, access_token: &SecretString) -> Result<UserInfo, ApiCallError> {
        let raw = self.get_json("user", access_token).await?;
        let value: Value = serde_json::from_str(&raw).map_err(|e| ApiCallError::NotJson(e.to_string()))?;
        let (company_id, company_name) = super::identify(&value);
        Ok(UserInfo { raw, company_id, company_name })
    }

    /// Read one inspection at the configured path; the raw JSON is returned as received.
    #[tracing::instrument(skip_all, fields(inspection_id))]
    pub async fn inspection(&self, access_token: &SecretString, inspection_id: i64) -> Result<Value, ApiCallError> {
        let path = self.settings.inspection_path.replace("{id}", &inspection_id.to_string());
        let raw = self.get_json(&path, access_token).await?;
        serde_json::from_str(&raw).map_err(|e| ApiCallError::NotJson(e.to_string()))
    }

    async fn get_json(&self, path: &str, token: &SecretString) -> Result<String, ApiCallError> {
        let url = self
            .settings
            .api_url
            .join(path)
            .map_err(|e| ApiCallError::Transport(format!("bad API path `{path}`: {e}")))?;
        let res = self
            .http
            .get(url)
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ApiCallError::Transport(describe_transport(&e)))?;
        let status = res.status();
        if status.as_u16() == 401 {
            return Err(ApiCallError::Unauthorized);
        }
        let wait = retry_after(res.headers());
        if !status.is_success() {
            let body = read_excerpt(res, EXCERPT_CAP).await;
            return Err(ApiCallError::Status {
                status: status.as_u16(),
                detail: snippet(&redact(&body, &[token])),
                retry_after: wait,
            });
        }
        let body = read_capped(res, ANSWER_CAP, "SnapInspect's API").await.map_err(|e| match e {
            BodyError::TooLarge { .. } => ApiCallError::TooLarge(e.to_string()),
            BodyError::Transport(e) => ApiCallError::Transport(describe_transport(&e)),
        })?;
        Ok(body)
    }
}
