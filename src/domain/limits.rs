//! The longest each text a person or a program gives may be, defined once: the console's
//! `maxlength`, the server's checks (console, CLI, API alike) and the README's table read these.

use super::ParseError;

/// Every bound, by what it bounds. Lengths are in characters (Unicode scalar values), counted
/// after trimming; the console's `maxlength` counts UTF-16 units, which is never fewer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client-credentials connection's name (console, `connections add --name`).
    pub connection_name: usize,
    /// An endpoint's description.
    pub description: usize,
    /// Every URL: endpoint, token, API and return URLs.
    pub url: usize,
    /// A client id, scope, audience (client credentials).
    pub client_id: usize,
    pub scope: usize,
    pub audience: usize,
    /// A client secret.
    pub client_secret: usize,
    /// A Docplanner domain (a DNS name).
    pub domain: usize,
    /// An end user's id, email and display name; a tag's name and value.
    pub end_user_id: usize,
    pub email: usize,
    pub display_name: usize,
    pub tag_name: usize,
    pub tag_value: usize,
    /// One event type, and a filter's comma-separated list of them.
    pub event_type: usize,
    pub event_types_text: usize,
    /// An API key's name.
    pub api_key_name: usize,
    /// An admin's email and password at sign-in.
    pub admin_email: usize,
    pub password: usize,
    /// A search or filter field in the console's lists; a company id.
    pub search: usize,
    pub company_id: usize,
}

/// The bounds. Changing one changes the console, the server and (through the test that reads it)
/// the README's table.
pub const LIMITS: Limits = Limits {
    connection_name: 200,
    description: 500,
    url: 2000,
    client_id: 512,
    scope: 1000,
    audience: 500,
    client_secret: 4096,
    domain: 253,
    end_user_id: 200,
    email: 320,
    display_name: 200,
    tag_name: 64,
    tag_value: 200,
    event_type: 100,
    // 100 types of 100 characters, with their commas and a space each.
    event_types_text: 10_200,
    api_key_name: 100,
    admin_email: 254,
    password: 1024,
    search: 200,
    company_id: 19,
};

/// What the README's table lists: the field as people know it, and its bound.
pub const TABLE: [(&str, usize); 20] = [
    ("connection name", LIMITS.connection_name),
    ("endpoint description", LIMITS.description),
    ("any URL (endpoint, token, API, return URL)", LIMITS.url),
    ("client id", LIMITS.client_id),
    ("scope", LIMITS.scope),
    ("audience", LIMITS.audience),
    ("client secret", LIMITS.client_secret),
    ("domain (Docplanner)", LIMITS.domain),
    ("end user id", LIMITS.end_user_id),
    ("end user email", LIMITS.email),
    ("display name", LIMITS.display_name),
    ("tag name", LIMITS.tag_name),
    ("tag value", LIMITS.tag_value),
    ("event type", LIMITS.event_type),
    ("event types, comma-separated (console)", LIMITS.event_types_text),
    ("API key name", LIMITS.api_key_name),
    ("admin email (sign-in)", LIMITS.admin_email),
    ("admin password", LIMITS.password),
    ("search and filter fields", LIMITS.search),
    ("company id (digits)", LIMITS.company_id),
];

/// `value` trimmed, if it has at most `max` characters; otherwise a message naming `what` and the
/// bound (and how long it was), as a person reads it.
pub fn bounded<'a>(what: &str, value: &'a str, max: usize) -> Result<&'a str, ParseError> {
    let v = value.trim();
    let n = v.chars().count();
    if n > max {
        return Err(ParseError(format!("the {what} is {n} characters long; the most is {max}")));
    }
    Ok(v)
}

/// A connection's name: 1 to `connection_name` characters, no control characters (a line break
/// would forge a line in `connections list`). Every path that names a connection goes through it.
pub fn connection_name(value: &str) -> Result<&str, ParseError> {
    let v = bounded("connection name", value, LIMITS.connection_name)?;
    if v.is_empty() {
        return Err(ParseError("give the connection a name".into()));
    }
    if v.chars().any(char::is_control) {
        return Err(ParseError("the connection name may not contain control characters (line breaks, tabs)".into()));
    }
    Ok(v)
}

/// An API key's name: 1 to `api_key_name` characters (not bytes). The console, the CLI and
/// [`crate::auth::api_keys`] all go through it.
pub fn api_key_name(value: &str) -> Result<&str, ParseError> {
    let v = bounded("API key name", value, LIMITS.api_key_name)?;
    if v.is_empty() {
        return Err(ParseError("give the API key a name, e.g. the application that will use it".into()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_refused_past_its_bound_with_the_bound_in_the_message() {
        assert_eq!(connection_name("  Snapdocs production ").unwrap(), "Snapdocs production");
        assert_eq!(connection_name(&"é".repeat(200)).unwrap().chars().count(), 200, "characters, not bytes");
        let e = connection_name(&"x".repeat(3000)).unwrap_err().to_string();
        assert_eq!(e, "the connection name is 3000 characters long; the most is 200");
        assert!(connection_name("   ").is_err());
        assert!(connection_name("a\nb").is_err());
    }

    #[test]
    fn the_readme_table_lists_every_bound_as_defined_here() {
        let readme = include_str!("../../README.md");
        for (what, max) in TABLE {
            let row = format!("| {what} | {max} |");
            assert!(readme.contains(&row), "the README's table of input bounds has the row `{row}`");
        }
    }
}
