//! Small encrypted cookies for people who are not signed in (the sign-in form's CSRF seed, the
//! connect flow's browser binding): the browser keeps the state, so the server writes nothing.

use actix_web::{
    cookie::{time::Duration, Cookie, CookieJar, Key, SameSite},
    HttpRequest,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key for these cookies, derived from `SESSION_KEY` under its own label, so it is not the
/// session cookie's key. The cookie crate's private jar encrypts and authenticates (AES-256-GCM)
/// with the cookie's name as associated data: a value cannot be moved to another cookie.
pub struct CookieKey(Key);

impl CookieKey {
    pub fn derive(session_key: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(64);
        for label in [&b"connect-hub private cookies v1 a"[..], b"connect-hub private cookies v1 b"] {
            let mut mac = Hmac::<Sha256>::new_from_slice(session_key).expect("HMAC takes any key length");
            mac.update(label);
            bytes.extend_from_slice(&mac.finalize().into_bytes());
        }
        Self(Key::from(&bytes))
    }

    /// The cookie's value, if the request carries one this key sealed under this name.
    pub fn get(&self, req: &HttpRequest, name: &str) -> Option<String> {
        let cookie = req.cookie(name)?;
        let mut jar = CookieJar::new();
        jar.add_original(cookie);
        jar.private(&self.0).get(name).map(|c| c.value().to_owned())
    }

    /// A sealed cookie: `HttpOnly`, `SameSite=Lax`, `Secure` over https, for `path`, lasting `max_age`.
    pub fn seal(&self, name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> Cookie<'static> {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.0).add(
            Cookie::build(name.to_owned(), value.to_owned())
                .path(path.to_owned())
                .http_only(true)
                .secure(secure)
                .same_site(SameSite::Lax)
                .max_age(max_age)
                .finish(),
        );
        jar.get(name).cloned().expect("the cookie was just added")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_sealed_cookie_opens_only_under_its_key_and_name() {
        let key = CookieKey::derive(&[7u8; 64]);
        let c = key.seal("a", "secret-value", "/", Duration::minutes(5), true);
        assert!(!c.value().contains("secret-value"), "encrypted");
        assert!(c.http_only() == Some(true) && c.secure() == Some(true));
        assert_eq!(c.max_age(), Some(Duration::minutes(5)));
        let req = TestRequest::default().cookie(c.clone()).to_http_request();
        assert_eq!(key.get(&req, "a").as_deref(), Some("secret-value"));
        let other = CookieKey::derive(&[8u8; 64]);
        assert_eq!(other.get(&req, "a"), None, "another key");
        let moved = TestRequest::default().cookie(Cookie::new("b", c.value().to_owned())).to_http_request();
        assert_eq!(key.get(&moved, "b"), None, "another name");
        let forged = TestRequest::default().cookie(Cookie::new("a", "secret-value")).to_http_request();
        assert_eq!(key.get(&forged, "a"), None, "plain text");
    }
}
