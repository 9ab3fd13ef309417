//! The OAuth 2.0 client-credentials grant (RFC 6749 §4.4): one generic client, and presets that
//! encode what each provider's document demands.

pub mod client;
pub mod presets;

pub use client::{fetch_token, FetchError, IssuedToken};
pub use presets::{CredentialsInput, PresetError};

use std::fmt;

use url::Url;

use crate::domain::{ParseError, Provider};

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// HTTP Basic with id and secret form-encoded first, as §2.3.1 says (`client_secret_basic`).
    Basic,
    /// HTTP Basic with id and secret as they are, for servers that do not decode them.
    BasicRaw,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

impl AuthStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStyle::Basic => "basic",
            AuthStyle::BasicRaw => "basic-raw",
            AuthStyle::Post => "post",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s.trim() {
            "basic" => Ok(AuthStyle::Basic),
            "basic-raw" => Ok(AuthStyle::BasicRaw),
            "post" => Ok(AuthStyle::Post),
            other => Err(ParseError(format!("unknown auth style `{other}`: use basic, basic-raw or post"))),
        }
    }
}

impl fmt::Display for AuthStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API URL as stored (it may hold `{domain}`) made a base URL: `{domain}` filled in, a host,
/// nothing but a path, and always ending in `/` so that a proxied path lands below it.
pub fn resolve_api_url(raw: &str, domain: Option<&str>) -> Result<Url, PresetError> {
    let raw = match domain {
        Some(d) => raw.replace("{domain}", d),
        None => raw.to_owned(),
    };
    if raw.contains("{domain}") {
        return Err(PresetError::new(
            "api_url",
            "the API URL holds {domain} but no domain is set (e.g. doctoralia.es)",
        ));
    }
    let mut url = Url::parse(&raw)
        .map_err(|e| PresetError::new("api_url", format!("the API URL \"{raw}\" is not a URL: {e}")))?;
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(PresetError::new("api_url", format!("the API URL \"{raw}\" has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(PresetError::new("api_url", "the API URL must be a plain base URL: no query, fragment or user"));
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// A client-credentials connection's settings, resolved from a preset and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub provider: Provider,
    pub client_id: String,
    /// May contain `{domain}`.
    pub token_url: String,
    pub auth: AuthStyle,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub domain: Option<String>,
    pub environment: Option<String>,
    /// The provider API the proxy sends this connection's requests to; may contain `{domain}`.
    /// None: a custom provider given none (the proxy answers 409 `no_api_url`).
    pub api_url: Option<String>,
}

impl Settings {
    /// The token URL with `{domain}` filled in.
    pub fn resolved_token_url(&self) -> Result<Url, PresetError> {
        let raw = match &self.domain {
            Some(d) => self.token_url.replace("{domain}", d),
            None => self.token_url.clone(),
        };
        if raw.contains("{domain}") {
            return Err(PresetError::new(
                "domain",
                "the token URL holds {domain} but no domain is set (e.g. doctoralia.es)",
            ));
        }
        Url::parse(&raw)
            .map_err(|e| PresetError::new("token_url", format!("the token URL \"{raw}\" is not a URL: {e}")))
    }

    /// The API base URL with `{domain}` filled in, always ending in `/` (so a proxied path is
    /// appended below it), or None when the connection has none.
    pub fn resolved_api_url(&self) -> Result<Option<Url>, PresetError> {
        self.api_url.as_deref().map(|raw| resolve_api_url(raw, self.domain.as_deref())).transpose()
    }

    /// Whether the secret would go to the same place, as the same client, in the same way: an
    /// edit that changes any of these must come with the secret again, or a stolen console session
    /// could send the stored secret to a host of its choosing.
    pub fn same_destination(&self, other: &Settings) -> bool {
        self.provider == other.provider
            && self.client_id == other.client_id
            && self.token_url == other.token_url
            && self.auth == other.auth
            && self.domain == other.domain
            && self.environment == other.environment
            // The API URL receives the access token: moving it needs the secret again too.
            && self.api_url == other.api_url
    }

    /// The form fields besides the credentials: `scope` and `audience` when set.
    pub fn extra_fields(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(s) = &self.scope {
            out.push(("scope", s.clone()));
        }
        if let Some(a) = &self.audience {
            out.push(("audience", a.clone()));
        }
        out
    }

    /// The longest a token may be used, whatever `expires_in` says (Docplanner: 24 hours).
    pub fn max_lifetime_secs(&self) -> Option<u64> {
        (self.provider == Provider::Docplanner).then_some(24 * 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            provider: Provider::Custom,
            client_id: "id".into(),
            token_url: "https://{domain}/token".into(),
            auth: AuthStyle::Basic,
            scope: Some("a".into()),
            audience: Some("aud".into()),
            domain: Some("auth.example.com".into()),
            environment: Some("production".into()),
            api_url: Some("https://api.{domain}/v1".into()),
        }
    }

    #[test]
    fn any_change_to_where_or_how_the_secret_goes_is_a_new_destination() {
        let base = settings();
        assert!(base.same_destination(&base.clone()));
        let scope_and_audience = Settings { scope: Some("b".into()), audience: None, ..settings() };
        assert!(base.same_destination(&scope_and_audience), "scope and audience do not move the secret");
        let changed = [
            Settings { provider: Provider::Snapdocs, ..settings() },
            Settings { client_id: "other".into(), ..settings() },
            Settings { token_url: "https://evil.example/token".into(), ..settings() },
            Settings { auth: AuthStyle::Post, ..settings() },
            Settings { domain: Some("evil.example".into()), ..settings() },
            Settings { environment: Some("demo".into()), ..settings() },
            Settings { api_url: Some("https://evil.example/".into()), ..settings() },
            Settings { api_url: None, ..settings() },
        ];
        for (i, other) in changed.iter().enumerate() {
            assert!(!base.same_destination(other), "change {i}");
        }
    }

    #[test]
    fn an_api_url_is_a_plain_base_ending_in_a_slash() {
        let url = settings().resolved_api_url().unwrap().unwrap();
        assert_eq!(url.as_str(), "https://api.auth.example.com/v1/");
        assert_eq!(resolve_api_url("https://x.example/", None).unwrap().as_str(), "https://x.example/");
        assert_eq!(Settings { api_url: None, ..settings() }.resolved_api_url().unwrap(), None);
        for bad in [
            "https://x.example/?a=1",
            "https://x.example/#f",
            "https://u:p@x.example/",
            "https://u@x.example/",
            "https://:p@x.example/",
            "mailto:a@b",
            "file:///etc/",
            "nope",
        ] {
            assert_eq!(resolve_api_url(bad, None).unwrap_err().field, "api_url", "{bad}");
        }
        assert!(resolve_api_url("https://{domain}/", None).is_err(), "a {{domain}} needs a domain");
    }
}
