//! Presets: what each provider's document demands (where the credentials go, scope, audience,
//! token URL, lifetime), turned into [`Settings`]: Snapdocs, SmartDocumentor, Signicat, Docplanner.

use super::{AuthStyle, Settings};
use crate::domain::Provider;

/// A setting that does not fit the provider. The message names the setting in plain words (it is
/// shown beside a form field as well as on the command line); `field` says which one, as the form
/// and the CLI flag name it (`token_url`, `--token-url`), or "" for none in particular.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PresetError {
    pub field: &'static str,
    pub message: String,
}

impl PresetError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }

    /// The message with the flag that sets the field, for the command line.
    pub fn for_cli(&self) -> String {
        match self.field {
            "" => self.message.clone(),
            field => format!("{} (--{})", self.message, field.replace('_', "-")),
        }
    }
}

fn err<T>(field: &'static str, msg: impl Into<String>) -> Result<T, PresetError> {
    Err(PresetError::new(field, msg))
}

const SNAPDOCS_DEMO_URL: &str = "https://login.demo-eks.snpd.io/oauth/token";
const SNAPDOCS_DEMO_AUDIENCE: &str = "https://api.*.snpd.io";
const SNAPDOCS_PRODUCTION_URL: &str = "https://login.snapdocs.com/oauth/token/";
const SNAPDOCS_PRODUCTION_AUDIENCE: &str = "https://api.snapdocs.com";
const SMARTDOCUMENTOR_URL: &str = "https://cloud.smartdocumentor.net/connect/token";
const SIGNICAT_URL: &str = "https://api.signicat.io/oauth/connect/token";
const DOCPLANNER_URL: &str = "https://www.{domain}/oauth/v2/token";
// The APIs the proxy calls, where each provider's document names one.
const SNAPDOCS_DEMO_API: &str = "https://api.cs-demo0.snpd.io/";
const SNAPDOCS_PRODUCTION_API: &str = "https://api.snapdocs.com/";
const SMARTDOCUMENTOR_API: &str = "https://cloud.smartdocumentor.net/";
const SIGNICAT_API: &str = "https://api.signicat.io/";
const DOCPLANNER_API: &str = "https://www.{domain}/";

/// What an operator gives (CLI flags or the console form); empty strings count as not given.
#[derive(Debug, Clone, Default)]
pub struct CredentialsInput {
    pub client_id: String,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub domain: Option<String>,
    pub environment: Option<String>,
    pub token_url: Option<String>,
    pub auth: Option<AuthStyle>,
    /// The API the proxy calls; overrides a preset's, required for a custom provider to be proxied.
    pub api_url: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A list of scopes as the wire wants it: space-separated (commas are accepted on input).
fn scopes(v: &str) -> String {
    v.split([' ', ',']).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

impl CredentialsInput {
    /// Every field within its bound (`domain::limits`), or the first one that is not.
    fn bounded(&self) -> Result<(), PresetError> {
        use crate::domain::limits::{bounded, LIMITS};
        let fields: [(&'static str, &str, Option<&str>, usize); 6] = [
            ("client_id", "client id", Some(self.client_id.as_str()), LIMITS.client_id),
            ("scope", "scope", self.scope.as_deref(), LIMITS.scope),
            ("audience", "audience", self.audience.as_deref(), LIMITS.audience),
            ("domain", "domain", self.domain.as_deref(), LIMITS.domain),
            ("token_url", "token URL", self.token_url.as_deref(), LIMITS.url),
            ("api_url", "API URL", self.api_url.as_deref(), LIMITS.url),
        ];
        for (field, what, value, max) in fields {
            if let Some(v) = value {
                bounded(what, v, max).map_err(|e| PresetError::new(field, e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Apply the provider's preset and check everything it requires.
    pub fn resolve(&self, provider: Provider) -> Result<Settings, PresetError> {
        let client_id = self.client_id.trim().to_owned();
        if client_id.is_empty() {
            return err("client_id", "a client id is required");
        }
        self.bounded()?;
        let url_override = given(&self.token_url);
        let api_override = given(&self.api_url);
        let scope = given(&self.scope).map(|s| scopes(&s));
        let mut s = Settings {
            provider,
            client_id,
            token_url: String::new(),
            auth: AuthStyle::Post,
            scope: None,
            audience: given(&self.audience),
            domain: None,
            environment: None,
            api_url: None,
        };
        match provider {
            Provider::SnapInspect => {
                return err(
                    "provider",
                    "SnapInspect is connected through the Connect with SnapInspect button, not with client credentials",
                )
            }
            Provider::Snapdocs => {
                let env = given(&self.environment).unwrap_or_else(|| "production".into());
                let (url, audience, api) = match env.as_str() {
                    "demo" => (SNAPDOCS_DEMO_URL, SNAPDOCS_DEMO_AUDIENCE, SNAPDOCS_DEMO_API),
                    "production" => (SNAPDOCS_PRODUCTION_URL, SNAPDOCS_PRODUCTION_AUDIENCE, SNAPDOCS_PRODUCTION_API),
                    other => {
                        return err(
                            "environment",
                            format!("Snapdocs has a demo and a production environment, not \"{other}\""),
                        )
                    }
                };
                s.token_url = url_override.unwrap_or_else(|| url.into());
                s.api_url = Some(api.into());
                s.audience = s.audience.or_else(|| Some(audience.into()));
                s.environment = Some(env);
                s.auth = self.auth.unwrap_or(AuthStyle::Post);
                s.scope = scope;
            }
            Provider::SmartDocumentor => {
                if scope.as_deref().is_some_and(|sc| sc != "WebAPI") {
                    return err("scope", "SmartDocumentor's scope is always WebAPI");
                }
                s.token_url = url_override.unwrap_or_else(|| SMARTDOCUMENTOR_URL.into());
                s.api_url = Some(SMARTDOCUMENTOR_API.into());
                s.scope = Some("WebAPI".into());
                s.auth = self.auth.unwrap_or(AuthStyle::Post);
            }
            Provider::Signicat => {
                let Some(scope) = scope else {
                    return err("scope", "Signicat needs the scopes to ask for, e.g. \"document_read document_write\"");
                };
                s.token_url = url_override.unwrap_or_else(|| SIGNICAT_URL.into());
                s.api_url = Some(SIGNICAT_API.into());
                s.scope = Some(scope);
                s.auth = self.auth.unwrap_or(AuthStyle::Basic);
            }
            Provider::Docplanner => {
                let Some(domain) = given(&self.domain).map(|d| d.trim_start_matches("www.").to_lowercase()) else {
                    return err(
                        "domain",
                        "Docplanner needs the country's domain, e.g. doctoralia.es or znanylekarz.pl",
                    );
                };
                if !domain.contains('.') || !domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                    return err("domain", format!("\"{domain}\" is not a domain like doctoralia.es"));
                }
                s.token_url = url_override.unwrap_or_else(|| DOCPLANNER_URL.into());
                s.api_url = Some(DOCPLANNER_API.into());
                s.domain = Some(domain);
                s.scope = Some(scope.unwrap_or_else(|| "integration".into()));
                s.auth = self.auth.unwrap_or(AuthStyle::Basic);
            }
            Provider::Custom => {
                let Some(url) = url_override else { return err("token_url", "a custom provider needs a token URL") };
                let Some(auth) = self.auth else {
                    return err("auth", "a custom provider needs a client authentication: basic, basic-raw or post");
                };
                s.token_url = url;
                s.auth = auth;
                s.scope = scope;
                s.domain = given(&self.domain);
            }
        }
        if let Some(api) = api_override {
            s.api_url = Some(api);
        }
        if let Some(api) = s.resolved_api_url()? {
            if api.scheme() != "https" && !crate::outbound::is_loopback(&api) {
                return err(
                    "api_url",
                    format!(
                        "the API URL must be https (only loopback may be plain http), got {}",
                        api.origin().ascii_serialization()
                    ),
                );
            }
        }
        let url = s.resolved_token_url()?;
        if url.scheme() != "https" && !crate::outbound::is_loopback(&url) {
            return err(
                "token_url",
                format!(
                    "the token URL must be https (only loopback may be plain http), got {}",
                    url.origin().ascii_serialization()
                ),
            );
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(client_id: &str) -> CredentialsInput {
        CredentialsInput { client_id: client_id.into(), ..Default::default() }
    }

    #[test]
    fn snapdocs_picks_url_and_audience_by_environment() {
        let s =
            CredentialsInput { environment: Some("demo".into()), ..input("id") }.resolve(Provider::Snapdocs).unwrap();
        assert_eq!(s.token_url, SNAPDOCS_DEMO_URL);
        assert_eq!(s.audience.as_deref(), Some(SNAPDOCS_DEMO_AUDIENCE));
        assert_eq!(s.auth, AuthStyle::Post);
        let p = input("id").resolve(Provider::Snapdocs).unwrap();
        assert_eq!(p.token_url, SNAPDOCS_PRODUCTION_URL);
        assert!(CredentialsInput { environment: Some("staging".into()), ..input("id") }
            .resolve(Provider::Snapdocs)
            .is_err());
    }

    #[test]
    fn smartdocumentor_always_asks_for_webapi() {
        let s = input("id").resolve(Provider::SmartDocumentor).unwrap();
        assert_eq!(s.scope.as_deref(), Some("WebAPI"));
        assert!(CredentialsInput { scope: Some("Other".into()), ..input("id") }
            .resolve(Provider::SmartDocumentor)
            .is_err());
    }

    #[test]
    fn signicat_needs_scopes_and_uses_basic() {
        assert!(input("id").resolve(Provider::Signicat).is_err());
        let s = CredentialsInput { scope: Some("document_read, identify".into()), ..input("id") }
            .resolve(Provider::Signicat)
            .unwrap();
        assert_eq!(s.scope.as_deref(), Some("document_read identify"));
        assert_eq!(s.auth, AuthStyle::Basic);
    }

    #[test]
    fn docplanner_needs_a_domain_and_caps_the_token_at_a_day() {
        assert!(input("id").resolve(Provider::Docplanner).is_err());
        let s = CredentialsInput { domain: Some("www.Doctoralia.es".into()), ..input("id") }
            .resolve(Provider::Docplanner)
            .unwrap();
        assert_eq!(s.resolved_token_url().unwrap().as_str(), "https://www.doctoralia.es/oauth/v2/token");
        assert_eq!(s.scope.as_deref(), Some("integration"));
        assert_eq!(s.max_lifetime_secs(), Some(86_400));
        assert!(CredentialsInput { domain: Some("evil/path".into()), ..input("id") }
            .resolve(Provider::Docplanner)
            .is_err());
    }

    #[test]
    fn the_command_line_gets_the_flag_and_the_form_plain_words() {
        let e = input("id").resolve(Provider::Custom).unwrap_err();
        assert_eq!(e.field, "token_url");
        assert_eq!(e.to_string(), "a custom provider needs a token URL");
        assert_eq!(e.for_cli(), "a custom provider needs a token URL (--token-url)");
        assert_eq!(PresetError::new("", "whole").for_cli(), "whole");
        let e = input("id").resolve(Provider::Docplanner).unwrap_err();
        assert_eq!(e.field, "domain");
        assert!(!e.message.contains("--"), "{}", e.message);
    }

    #[test]
    fn custom_needs_url_and_auth_and_https() {
        assert!(input("id").resolve(Provider::Custom).is_err());
        let plain = CredentialsInput {
            token_url: Some("http://auth.example.com/token".into()),
            auth: Some(AuthStyle::Post),
            ..input("id")
        };
        assert!(plain.resolve(Provider::Custom).unwrap_err().message.contains("must be https"));
        let local = CredentialsInput {
            token_url: Some("http://127.0.0.1:9/token".into()),
            auth: Some(AuthStyle::Post),
            ..input("id")
        };
        assert!(local.resolve(Provider::Custom).is_ok());
    }
}
