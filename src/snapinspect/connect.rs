//! The browser side of SnapInspect Connect: the authorize URL for a `state`, and parsing the
//! redirect back (`access_token`, `token_type`, `state`, `refresh_token`, or an error).

use secrecy::SecretString;
use url::Url;

use crate::domain::OpaqueToken;

/// How long a state is valid.
pub const STATE_TTL_MS: i64 = 10 * 60 * 1000;
const MAX_QUERY_LEN: usize = 16 * 1024;
const MAX_VALUE_LEN: usize = 4096;

/// The authorize redirect: `response_type=code`, `client_id`, `redirect_uri`, `state`, encoded.
pub fn authorize_url(authorize: &Url, client_id: &str, redirect_uri: &str, state: &OpaqueToken) -> Url {
    let mut url = authorize.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", state.as_str());
    url
}

/// What SnapInspect sent back, checked for shape (the state is checked against the store later).
#[derive(Debug)]
pub enum Callback {
    Approved { state: String, access_token: SecretString, refresh_token: SecretString },
    Denied { state: Option<String>, error: String, description: Option<String> },
}

/// Why a callback's query is unusable. The message is for the person in the browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("The link back from SnapInspect is incomplete: it has no `state`. Please start again.")]
    MissingState,
    #[error("SnapInspect sent no access token. Please start again.")]
    MissingAccessToken,
    #[error("SnapInspect sent no refresh token. Please start again.")]
    MissingRefreshToken,
    #[error("SnapInspect sent no token type; only Bearer tokens are accepted. Please start again.")]
    MissingTokenType,
    #[error("SnapInspect sent a token of type `{0}`; only Bearer tokens are accepted.")]
    WrongTokenType(String),
    #[error("The link back from SnapInspect repeats the parameter `{0}`, so it is ambiguous. Please start again.")]
    Repeated(String),
    #[error("The link back from SnapInspect is too long to be genuine. Please start again.")]
    TooLong,
}

/// Parse the callback's raw query string. Pure, so it can be fuzzed.
pub fn parse_callback(query: &str) -> Result<Callback, CallbackError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(CallbackError::TooLong);
    }
    const KNOWN: [&str; 7] =
        ["access_token", "token_type", "state", "refresh_token", "error", "error_description", "error_uri"];
    let mut values: [Option<String>; 7] = Default::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let Some(i) = KNOWN.iter().position(|n| *n == k) else {
            continue;
        };
        if values[i].is_some() {
            return Err(CallbackError::Repeated(KNOWN[i].to_owned()));
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(CallbackError::TooLong);
        }
        values[i] = Some(v.into_owned()).filter(|v| !v.is_empty());
    }
    let [access, token_type, state, refresh, error, description, _] = values;

    if let Some(error) = error {
        return Ok(Callback::Denied { state, error, description });
    }
    let state = state.ok_or(CallbackError::MissingState)?;
    let access = access.ok_or(CallbackError::MissingAccessToken)?;
    let refresh = refresh.ok_or(CallbackError::MissingRefreshToken)?;
    match token_type {
        None => return Err(CallbackError::MissingTokenType),
        Some(t) if !t.eq_ignore_ascii_case("bearer") => {
            return Err(CallbackError::WrongTokenType(t.chars().take(40).collect()))
        }
        Some(_) => {}
    }
    Ok(Callback::Approved {
        state,
        access_token: SecretString::from(access),
        refresh_token: SecretString::from(refresh),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn authorize_url_carries_the_four_parameters_encoded() {
        let state = OpaqueToken::generate();
        let url = authorize_url(
            &Url::parse("https://my.snapinspect.com/integration/SnapInspectConnect").unwrap(),
            "client id&x",
            "https://hub.example.com/connect/snapinspect/callback",
            &state,
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("response_type".into(), "code".into()));
        assert_eq!(pairs[1], ("client_id".into(), "client id&x".into()));
        assert_eq!(pairs[2].1, "https://hub.example.com/connect/snapinspect/callback");
        assert_eq!(pairs[3].1, state.as_str());
        assert!(url.as_str().contains("client_id=client+id%26x"));
        assert!(state.as_str().len() >= 43, "256 bits of state");
    }

    #[test]
    fn an_approved_callback_parses() {
        let cb = parse_callback("access_token=a%2Bb&token_type=bearer&state=s1&refresh_token=r").unwrap();
        let Callback::Approved { state, access_token, refresh_token } = cb else { panic!("approved") };
        assert_eq!(state, "s1");
        assert_eq!(access_token.expose_secret(), "a+b");
        assert_eq!(refresh_token.expose_secret(), "r");
    }

    #[test]
    fn every_missing_or_wrong_part_is_named() {
        assert_eq!(
            parse_callback("access_token=a&token_type=Bearer&refresh_token=r").unwrap_err(),
            CallbackError::MissingState
        );
        assert_eq!(
            parse_callback("state=s&token_type=Bearer&refresh_token=r").unwrap_err(),
            CallbackError::MissingAccessToken
        );
        assert_eq!(
            parse_callback("state=s&token_type=Bearer&access_token=a").unwrap_err(),
            CallbackError::MissingRefreshToken
        );
        assert_eq!(
            parse_callback("state=s&access_token=a&refresh_token=r").unwrap_err(),
            CallbackError::MissingTokenType
        );
        assert_eq!(
            parse_callback("state=s&access_token=a&refresh_token=r&token_type=mac").unwrap_err(),
            CallbackError::WrongTokenType("mac".into())
        );
        assert_eq!(parse_callback("state=s&state=t").unwrap_err(), CallbackError::Repeated("state".into()));
    }

    #[test]
    fn an_error_means_denied() {
        let cb = parse_callback("error=access_denied&state=s").unwrap();
        assert!(matches!(cb, Callback::Denied { state: Some(s), error, .. } if s == "s" && error == "access_denied"));
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let cb = parse_callback("access_token=SECRETA&token_type=Bearer&state=s&refresh_token=SECRETR").unwrap();
        let dbg = format!("{cb:?}");
        assert!(!dbg.contains("SECRETA") && !dbg.contains("SECRETR"), "{dbg}");
    }
}
