//! The value types of delivery: endpoint ids, endpoint URLs, event-type filters, `whsec_` secrets
//! and delivery states. Each parses once; a value that exists is valid.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use secrecy::SecretString;
use url::Url;

use super::{base32, random_bytes, ParseError};

/// An endpoint's id: `ep_` and 26 base32 characters, or `ep_forward` (the one `FORWARD_URL` defines).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(String);

impl EndpointId {
    pub const FORWARD: &'static str = "ep_forward";

    pub fn generate() -> Self {
        Self(format!("ep_{}", base32(&random_bytes::<16>())))
    }

    pub fn forward() -> Self {
        Self(Self::FORWARD.to_owned())
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let ok = s == Self::FORWARD
            || s.strip_prefix("ep_").is_some_and(|b| {
                b.len() == 26 && b.bytes().all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c))
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError(format!("`{}` is not an endpoint id (ep_…)", s.chars().take(40).collect::<String>())))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an endpoint receives: http or https, with a host, and no credentials in the URL (they
/// would be printed by `endpoints list` and stored in the clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let url = Url::parse(s.trim()).map_err(|e| ParseError(unparsable(s.trim(), e)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ParseError("the endpoint URL must be http:// or https://".into()));
        }
        if url.host().is_none() {
            return Err(ParseError("the endpoint URL has no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ParseError(
                "the endpoint URL must not carry a user name or password; endpoints verify our signature instead"
                    .into(),
            ));
        }
        if url.fragment().is_some() {
            return Err(ParseError("the endpoint URL must not have a #fragment".into()));
        }
        // The URL parser keeps a stray `%` as it is; such a URL is not a URI, and we would hand it on.
        if !percent_escapes_complete(url.as_str()) {
            return Err(ParseError("the endpoint URL has a `%` that is not followed by two hex digits".into()));
        }
        Ok(Self(url))
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Why a text is not a URL, as a person fixing it in a form needs to hear it (the parser's own
/// words, "relative URL without a base", say nothing to them).
fn unparsable(s: &str, e: url::ParseError) -> String {
    use url::ParseError as P;
    match e {
        P::RelativeUrlWithoutBase if s.is_empty() => {
            "enter the endpoint URL, e.g. https://hooks.example.com/events".into()
        }
        P::RelativeUrlWithoutBase if s.chars().count() <= 80 && !s.contains(char::is_whitespace) => format!(
            "the endpoint URL must start with https:// (or http://): add https:// in front, as in https://{}",
            s.trim_start_matches('/')
        ),
        P::RelativeUrlWithoutBase => {
            "the endpoint URL must start with https:// (or http://): add https:// in front".into()
        }
        P::EmptyHost => "the endpoint URL has no host name after https://".into(),
        P::InvalidPort => "the endpoint URL's port must be a number from 1 to 65535".into(),
        P::InvalidIpv4Address | P::InvalidIpv6Address => "the endpoint URL's IP address is not a valid one".into(),
        P::InvalidDomainCharacter | P::IdnaError => {
            "the endpoint URL's host name holds a character host names cannot have (a space, for instance)".into()
        }
        _ => "the endpoint URL is not a web address: write it as https://host/path".into(),
    }
}

/// Every `%` starts an escape: two hex digits follow it.
fn percent_escapes_complete(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().filter(|(_, c)| **c == b'%').all(|(i, _)| {
        b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    })
}

/// The event types an endpoint wants; empty means every type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTypes(Vec<String>);

impl EventTypes {
    /// A comma-separated list, e.g. `Review_Signed,connection.created`; blanks are ignored.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::parse_list(s.split(','))
    }

    /// One type per item (the API's JSON array); blanks are ignored, duplicates kept once.
    pub fn parse_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, ParseError> {
        let mut types: Vec<String> = Vec::new();
        for t in items.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            if t.len() > super::limits::LIMITS.event_type
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
            {
                return Err(ParseError(format!(
                    "`{}` is not an event type (letters, digits and . _ - : only)",
                    t.chars().take(40).collect::<String>()
                )));
            }
            if !types.iter().any(|x| x == t) {
                types.push(t.to_owned());
            }
        }
        Ok(Self(types))
    }

    pub fn from_stored(types: Vec<String>) -> Self {
        Self(types)
    }

    pub fn all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, kind: &str) -> bool {
        self.all() || self.0.iter().any(|t| t == kind)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// The event types the hub knows today: SnapInspect's `sType`s its document names, and the hub's
/// own. A filter may name others (SnapInspect may add types), but gets a warning.
pub const KNOWN_EVENT_TYPES: [&str; 10] = [
    "Create_Inspection",
    "Update_Inspection_Status",
    "Create_Review",
    "Review_Signed",
    "connection.created",
    "connection.needs_reconnect",
    "connection.recovered",
    "connection.disconnected",
    "delivery.dead",
    "endpoint.disabled",
];

impl EventTypes {
    /// The types in this filter that the hub does not know (none for "every type").
    pub fn unknown(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).filter(|t| !KNOWN_EVENT_TYPES.contains(t)).collect()
    }

    /// One warning per unknown type, naming the nearest known one when there is a close one, and
    /// the known types: an endpoint filtered on a misspelt type would never get an event.
    pub fn warnings(&self) -> Vec<String> {
        self.unknown()
            .into_iter()
            .map(|t| {
                let hint = nearest_known(t).map(|k| format!(" Did you mean {k}?")).unwrap_or_default();
                format!(
                    "`{}` is not an event type the hub knows, so it matches nothing today (it is kept, in case \
                     SnapInspect adds it).{hint} Known types: {}.",
                    super::text::escaped(&t.chars().take(100).collect::<String>()),
                    KNOWN_EVENT_TYPES.join(", ")
                )
            })
            .collect()
    }
}

/// The known type within two edits (ignoring case) of `t`, if there is one.
fn nearest_known(t: &str) -> Option<&'static str> {
    let t = t.to_ascii_lowercase();
    KNOWN_EVENT_TYPES
        .into_iter()
        .map(|k| (edit_distance(&t, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (event types are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl fmt::Display for EventTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all() {
            f.write_str("*")
        } else {
            f.write_str(&self.0.join(","))
        }
    }
}

/// A fresh Standard Webhooks secret: `whsec_` and base64 of 32 random bytes.
pub fn generate_secret() -> SecretString {
    SecretString::from(format!("whsec_{}", STANDARD.encode(random_bytes::<32>())))
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Processing,
    Retrying,
    Done,
    Dead,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 5] = [
        DeliveryState::Pending,
        DeliveryState::Processing,
        DeliveryState::Retrying,
        DeliveryState::Done,
        DeliveryState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Processing => "processing",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Done => "done",
            DeliveryState::Dead => "dead",
        }
    }

    /// A state as the store keeps it.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s.trim())
            .ok_or_else(|| ParseError(format!("unknown delivery state `{}`", s.chars().take(40).collect::<String>())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_a_scheme_says_to_add_https_in_front() {
        let e = EndpointUrl::parse("hooks.example.com/in").unwrap_err().to_string();
        assert_eq!(
            e,
            "the endpoint URL must start with https:// (or http://): add https:// in front, as in https://hooks.example.com/in"
        );
        assert!(!e.contains("relative URL"), "{e}");
        let port = EndpointUrl::parse("https://example.com:99999/").unwrap_err().to_string();
        assert_eq!(port, "the endpoint URL's port must be a number from 1 to 65535");
    }

    #[test]
    fn endpoint_ids_parse_back_and_reject_others() {
        let id = EndpointId::generate();
        assert_eq!(EndpointId::parse(id.as_str()).unwrap(), id);
        assert!(EndpointId::parse("ep_forward").is_ok());
        assert!(EndpointId::parse("ep_short").is_err());
        assert!(EndpointId::parse("con_abcdefghijklmnopqrstuvwxyz").is_err());
        assert!(EndpointId::parse("ep_ABCDEFGHIJKLMNOPQRSTUVWXYZ").is_err());
    }

    #[test]
    fn endpoint_urls_must_be_http_without_credentials() {
        assert!(EndpointUrl::parse("https://example.com/hooks").is_ok());
        assert!(EndpointUrl::parse("http://127.0.0.1:9/x").is_ok());
        assert!(EndpointUrl::parse("ftp://example.com/").is_err());
        assert!(EndpointUrl::parse("https://user:pw@example.com/").is_err());
        assert!(EndpointUrl::parse("https://user@example.com/").is_err());
        assert!(EndpointUrl::parse("https://example.com/#x").is_err());
        assert!(EndpointUrl::parse("not a url").is_err());
        // Percent escapes are whole, or the URL is not a URI (the parser would keep them as given).
        assert!(EndpointUrl::parse("https://example.com/a%20b?c=%2F").is_ok());
        for bad in [
            "https://example.com/00RsX%3",
            "https://example.com/%",
            "https://example.com/a?b=%g1",
            "https://example.com/%1",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_type_filters_match_only_their_types_and_empty_matches_all() {
        let f = EventTypes::parse(" Review_Signed, connection.created ,,Review_Signed").unwrap();
        assert_eq!(f.as_slice(), ["Review_Signed", "connection.created"]);
        assert!(f.matches("Review_Signed") && f.matches("connection.created"));
        assert!(!f.matches("Create_Inspection") && !f.matches("Review"));
        assert_eq!(f.to_string(), "Review_Signed,connection.created");
        let all = EventTypes::parse("").unwrap();
        assert!(all.all() && all.matches("anything"));
        assert_eq!(all.to_string(), "*");
        assert!(EventTypes::parse("bad type").is_err());
    }

    #[test]
    fn unknown_event_types_are_kept_with_a_warning_that_names_the_known_ones() {
        let f = EventTypes::parse("Review_Sgined,connection.created,Brand_New").unwrap();
        assert_eq!(f.as_slice(), ["Review_Sgined", "connection.created", "Brand_New"], "still allowed");
        assert_eq!(f.unknown(), ["Review_Sgined", "Brand_New"]);
        let w = f.warnings();
        assert_eq!(w.len(), 2);
        assert!(w[0].starts_with("`Review_Sgined` is not an event type the hub knows"), "{}", w[0]);
        assert!(w[0].contains("Did you mean Review_Signed?"), "{}", w[0]);
        assert!(!w[1].contains("Did you mean"), "{}", w[1]);
        for k in KNOWN_EVENT_TYPES {
            assert!(w[1].contains(k), "{k} is named");
        }
        assert!(EventTypes::parse("").unwrap().warnings().is_empty());
        assert!(EventTypes::parse(&KNOWN_EVENT_TYPES.join(",")).unwrap().warnings().is_empty());
    }

    #[test]
    fn generated_secrets_are_standard_webhooks_secrets() {
        use secrecy::ExposeSecret;
        let s = generate_secret();
        let body = s.expose_secret().strip_prefix("whsec_").unwrap();
        assert_eq!(STANDARD.decode(body).unwrap().len(), 32);
        assert_ne!(s.expose_secret(), generate_secret().expose_secret());
    }
}
