//! Connect sessions as values: what the organisation's app asks for (an end user, tags, a return
//! URL) checked into types, the link's id and URL, and the answers sent back to the app.

use std::collections::BTreeMap;

use url::Url;

use super::{base32, random_bytes, OpaqueToken};

/// How long a connect link works.
pub const SESSION_TTL_MS: i64 = 30 * 60 * 1000;
// The bounds of what the app sends are the ones every path uses (`limits`).
const MAX_END_USER_ID: usize = super::limits::LIMITS.end_user_id;
const MAX_TEXT: usize = super::limits::LIMITS.display_name;
const MAX_EMAIL: usize = super::limits::LIMITS.email;
const MAX_TAGS: usize = 20;
const MAX_TAG_KEY: usize = super::limits::LIMITS.tag_name;
const MAX_TAG_VALUE: usize = super::limits::LIMITS.tag_value;
const MAX_RETURN_URL: usize = super::limits::LIMITS.url;

/// An origin (`scheme://host[:port]`) a return URL may point to (`CONNECT_RETURN_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnOrigin(url::Origin);

impl ReturnOrigin {
    /// `scheme://host[:port]`, as compared.
    pub fn serialized(&self) -> String {
        self.0.ascii_serialization()
    }

    /// Only a bare http(s) origin: no path beyond `/`, no query, no credentials.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let u = Url::parse(raw).map_err(|e| format!("holds `{raw}`, which is not an origin ({e})"))?;
        if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
            return Err(format!("holds `{raw}`: an origin is http(s)://host[:port]"));
        }
        if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
            return Err(format!("holds `{raw}`: an origin is http(s)://host[:port], without a path"));
        }
        Ok(Self(u.origin()))
    }

    /// `CONNECT_RETURN_ORIGINS`: comma-separated origins.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Self::parse).collect()
    }
}

/// A return URL whose origin is one of the allowed ones, compared as origins (scheme, host and
/// port), never as string prefixes: `https://app.example.com.evil.com` is not `https://app.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnUrl(Url);

impl ReturnUrl {
    pub fn parse(raw: &str, allowed: &[ReturnOrigin]) -> Result<Self, String> {
        if raw.len() > MAX_RETURN_URL {
            return Err(format!("return_url is longer than {MAX_RETURN_URL} characters"));
        }
        let u = Url::parse(raw).map_err(|_| "return_url is not an absolute URL".to_owned())?;
        if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some() {
            return Err("return_url must be an http(s) URL without credentials".into());
        }
        if u.fragment().is_some() {
            return Err("return_url must not have a #fragment".into());
        }
        if !allowed.iter().any(|o| o.0 == u.origin()) {
            return Err(if allowed.is_empty() {
                "return_url is not allowed: this server has no CONNECT_RETURN_ORIGINS set".into()
            } else {
                "return_url's origin is not one of CONNECT_RETURN_ORIGINS".into()
            });
        }
        Ok(Self(u))
    }

    /// A URL read back from the store (it was checked at creation).
    pub fn stored(raw: &str) -> Option<Self> {
        Url::parse(raw).ok().map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with the outcome added to its own query.
    pub fn with_outcome(&self, connection_id: Option<&str>, outcome: &SessionOutcome) -> String {
        let mut u = self.0.clone();
        {
            let mut q = u.query_pairs_mut();
            if let Some(id) = connection_id {
                q.append_pair("connection_id", id);
            }
            match outcome {
                SessionOutcome::Connected => q.append_pair("status", "connected"),
                SessionOutcome::Denied => q.append_pair("status", "denied"),
                SessionOutcome::Failed(r) => q.append_pair("status", "failed").append_pair("reason", r.code()),
            };
        }
        u.into()
    }
}

/// How a session's connect ended, as its return URL tells the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    Connected,
    Denied,
    Failed(FailReason),
}

/// Why a session's connect failed: stable codes, listed in the README (Connect from your app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// SnapInspect answered the authorize request with an error other than a denial.
    ProviderError,
    /// The link back from SnapInspect was malformed.
    BadCallback,
    /// SnapInspect did not say which account was connected (its `/user` failed).
    UserUnavailable,
    /// SnapInspect refused the token it had just issued.
    TokenRefused,
    /// A reconnect link was completed with another SnapInspect company.
    CompanyMismatch,
    /// A connect session's end user connected a company already connected for another end user
    /// (or for none): nothing changed; an admin can assign the connection.
    CompanyAlreadyConnected,
    /// The connection a reconnect link was for no longer exists.
    ConnectionGone,
    /// Something failed on the hub's side.
    Internal,
}

impl FailReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::ProviderError => "provider_error",
            Self::BadCallback => "bad_callback",
            Self::UserUnavailable => "user_unavailable",
            Self::TokenRefused => "token_refused",
            Self::CompanyMismatch => "company_mismatch",
            Self::CompanyAlreadyConnected => "company_already_connected",
            Self::ConnectionGone => "connection_gone",
            Self::Internal => "internal_error",
        }
    }
}

/// Who the new connection is for, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndUser {
    pub id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// The JSON body of `POST /api/v1/connect-sessions`, before checking.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub end_user_id: Option<String>,
    pub end_user_email: Option<String>,
    pub display_name: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub return_url: Option<String>,
}

fn text(name: &str, v: &str, max: usize) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if v.chars().count() > max {
        return Err(format!("{name} is longer than {max} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{name} must not contain control characters"));
    }
    Ok(v.to_owned())
}

impl EndUser {
    /// An end user an admin names (console, CLI, API), checked by the same rules as a connect
    /// session's; the message names the field and the rule.
    pub fn parse(
        id: String,
        email: Option<String>,
        display_name: Option<String>,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<Self, String> {
        let request =
            SessionRequest { end_user_id: Some(id), end_user_email: email, display_name, tags, return_url: None };
        Ok(request.check(&[])?.0)
    }
}

impl SessionRequest {
    /// Check every field; the message names the field and the rule.
    pub fn check(self, allowed: &[ReturnOrigin]) -> Result<(EndUser, Option<ReturnUrl>), String> {
        let id = self.end_user_id.ok_or("end_user_id is required")?;
        let id = text("end_user_id", &id, MAX_END_USER_ID)?;
        let email = self.end_user_email.map(|e| text("end_user_email", &e, MAX_EMAIL)).transpose()?;
        if email.as_deref().is_some_and(|e| !e.contains('@')) {
            return Err("end_user_email is not an email address".into());
        }
        let display_name = self.display_name.map(|d| text("display_name", &d, MAX_TEXT)).transpose()?;
        let tags = self.tags.unwrap_or_default();
        if tags.len() > MAX_TAGS {
            return Err(format!("tags has more than {MAX_TAGS} entries"));
        }
        for (k, v) in &tags {
            text("a tag name", k, MAX_TAG_KEY)?;
            if v.chars().count() > MAX_TAG_VALUE || v.chars().any(char::is_control) {
                return Err(format!(
                    "the tag `{}` has a value longer than {MAX_TAG_VALUE} characters or with control characters",
                    k.chars().take(MAX_TAG_KEY).collect::<String>()
                ));
            }
        }
        let return_url = self.return_url.map(|r| ReturnUrl::parse(&r, allowed)).transpose()?;
        Ok((EndUser { id, email, display_name, tags }, return_url))
    }
}

/// A new session's id: `cs_` + 26 base32 characters.
pub fn new_session_id() -> String {
    format!("cs_{}", base32(&random_bytes::<16>()))
}

/// `PUBLIC_URL/connect/s/{token}`.
pub fn connect_url(public_url: &Url, token: &OpaqueToken) -> String {
    format!("{}/connect/s/{}", public_url.as_str().trim_end_matches('/'), token.as_str())
}

/// A connect link just issued.
pub struct Issued {
    pub id: String,
    pub connect_url: String,
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> Vec<ReturnOrigin> {
        ReturnOrigin::parse_list("https://app.example.com, http://127.0.0.1:9000").unwrap()
    }

    #[test]
    fn a_return_url_must_have_an_allowed_origin_exactly() {
        let o = origins();
        assert!(ReturnUrl::parse("https://app.example.com/settings?x=1", &o).is_ok());
        assert!(ReturnUrl::parse("http://127.0.0.1:9000/back", &o).is_ok());
        for bad in [
            "https://app.example.com.evil.com/",
            "https://evil.com/https://app.example.com",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "http://127.0.0.1:9001/back",
            "https://user@app.example.com/",
            "https://app.example.com/#frag",
            "javascript:alert(1)",
            "/relative",
        ] {
            assert!(ReturnUrl::parse(bad, &o).is_err(), "{bad} must be refused");
        }
        assert!(ReturnUrl::parse("https://app.example.com/", &[]).is_err());
    }

    #[test]
    fn origins_are_bare() {
        assert!(ReturnOrigin::parse("https://app.example.com/path").is_err());
        assert!(ReturnOrigin::parse("ftp://app.example.com").is_err());
        assert!(ReturnOrigin::parse("app.example.com").is_err());
        assert_eq!(ReturnOrigin::parse_list(" , ").unwrap(), vec![]);
        assert_eq!(
            ReturnOrigin::parse("https://A.example.com:443").unwrap(),
            ReturnOrigin::parse("https://a.example.com").unwrap()
        );
    }

    #[test]
    fn the_outcome_is_added_to_the_return_urls_query() {
        let r = ReturnUrl::parse("https://app.example.com/back?tenant=7", &origins()).unwrap();
        assert_eq!(
            r.with_outcome(Some("con_x"), &SessionOutcome::Connected),
            "https://app.example.com/back?tenant=7&connection_id=con_x&status=connected"
        );
        assert_eq!(
            r.with_outcome(None, &SessionOutcome::Denied),
            "https://app.example.com/back?tenant=7&status=denied"
        );
        assert_eq!(
            r.with_outcome(None, &SessionOutcome::Failed(FailReason::CompanyMismatch)),
            "https://app.example.com/back?tenant=7&status=failed&reason=company_mismatch"
        );
    }

    fn req(id: &str) -> SessionRequest {
        SessionRequest { end_user_id: Some(id.into()), ..Default::default() }
    }

    #[test]
    fn the_end_user_id_is_one_to_two_hundred_characters() {
        assert_eq!(req(&"x".repeat(200)).check(&[]).unwrap().0.id.len(), 200);
        assert!(req(&"x".repeat(201)).check(&[]).is_err());
        assert!(req(" ").check(&[]).is_err());
        assert!(req("a\nb").check(&[]).is_err());
        assert!(SessionRequest::default().check(&[]).is_err());
    }

    #[test]
    fn tags_are_bounded() {
        let mut r = req("u1");
        r.tags = Some((0..20).map(|i| (format!("k{i}"), "v".repeat(200))).collect());
        assert_eq!(r.check(&[]).unwrap().0.tags.len(), 20);
        let mut r = req("u1");
        r.tags = Some((0..21).map(|i| (format!("k{i}"), "v".into())).collect());
        assert!(r.check(&[]).is_err());
        let mut r = req("u1");
        r.tags = Some([("k".to_owned(), "v".repeat(201))].into());
        assert!(r.check(&[]).is_err());
        let mut r = req("u1");
        r.tags = Some([("k".repeat(65), "v".into())].into());
        assert!(r.check(&[]).is_err());
        let mut r = req("u1");
        r.end_user_email = Some("not-an-email".into());
        assert!(r.check(&[]).is_err());
    }

    #[test]
    fn the_connect_url_is_under_the_public_url() {
        let t = OpaqueToken::generate();
        assert!(t.as_str().len() >= 43, "256 bits");
        assert_eq!(
            connect_url(&Url::parse("https://hub.example.com/").unwrap(), &t),
            format!("https://hub.example.com/connect/s/{}", t.as_str())
        );
    }
}
