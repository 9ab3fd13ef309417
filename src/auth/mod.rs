//! Who may do what: admin email and password values, Argon2id hashing, CSRF tokens derived from a
//! seed; below, the sign-in throttle, server-side sessions, API keys and small private cookies.

pub mod api_keys;
pub mod private_cookie;
pub mod session;
pub mod throttle;

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::ParseError;

/// An admin's email: trimmed, lower-case, plausibly an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let e = s.trim().to_lowercase();
        let ok = e.len() <= 254
            && e.split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
            && !e.chars().any(char::is_whitespace);
        if ok {
            Ok(Self(e))
        } else {
            Err(ParseError(format!("`{}` is not an email address", s.trim().chars().take(60).collect::<String>())))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a sign-in form's email field may be shown as in logs and the audit log: at most 100
/// characters, quoted and escaped (`{:?}`), so a line break or a control character cannot forge a
/// line and a huge field cannot flood the log.
pub fn loggable(raw: &str) -> String {
    format!("{:?}", raw.trim().chars().take(100).collect::<String>())
}

/// A new admin password: 12 to 1024 characters (long passphrases welcome, no composition rules,
/// as NIST SP 800-63B advises).
pub struct NewPassword(SecretString);

impl NewPassword {
    pub fn parse(s: SecretString) -> Result<Self, ParseError> {
        let n = s.expose_secret().chars().count();
        if n < 12 {
            return Err(ParseError(format!(
                "the password has {n} characters; use at least 12 (a few words make a good one)"
            )));
        }
        if n > 1024 {
            return Err(ParseError("the password is longer than 1024 characters".into()));
        }
        Ok(Self(s))
    }

    /// The Argon2id PHC string to store (OWASP's recommended parameters, a random salt).
    pub fn hash(&self) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(self.0.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
    }
}

/// Check a password against a stored hash. With no hash (unknown account), a dummy verification
/// runs anyway so the answer takes as long as for a real account.
pub fn verify_password(password: &SecretString, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        NewPassword(SecretString::from("not-a-real-password-0000".to_owned())).hash().expect("hashing a constant")
    });
    let phc = stored.unwrap_or(dummy);
    let ok = PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password.expose_secret().as_bytes(), &h).is_ok())
        .unwrap_or(false);
    ok && stored.is_some()
}

/// CSRF tokens: HMAC of a random per-session seed under a key derived from `SESSION_KEY`. The
/// seed lives in the (server-side) session; without the key, a copy of the database does not
/// yield the token.
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    pub fn derive(session_key: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(session_key).expect("HMAC takes any key length");
        mac.update(b"connect-hub csrf v1");
        Self(mac.finalize().into_bytes().into())
    }

    pub fn token(&self, seed: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(seed.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    pub fn verify(&self, seed: &str, given: &str) -> bool {
        bool::from(self.token(seed).as_bytes().ct_eq(given.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse(" Admin@Example.COM ").unwrap().as_str(), "admin@example.com");
        assert!(Email::parse("nobody").is_err());
        assert!(Email::parse("a@b").is_err());
        assert!(Email::parse("a b@c.de").is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let p = NewPassword::parse(SecretString::from("correct horse battery".to_owned())).unwrap();
        let h = p.hash().unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&SecretString::from("correct horse battery".to_owned()), Some(&h)));
        assert!(!verify_password(&SecretString::from("wrong horse battery".to_owned()), Some(&h)));
        assert!(!verify_password(&SecretString::from("correct horse battery".to_owned()), None));
        assert!(NewPassword::parse(SecretString::from("short".to_owned())).is_err());
    }

    #[test]
    fn email_limits_are_exact() {
        let local = "a".repeat(254 - "@example.com".len());
        assert!(Email::parse(&format!("{local}@example.com")).is_ok(), "254 characters");
        assert!(Email::parse(&format!("{local}a@example.com")).is_err(), "255 characters");
        assert!(Email::parse("@example.com").is_err());
        assert!(Email::parse("a@.example.com").is_err());
        assert!(Email::parse("a@example.com\n").is_ok());
        assert!(Email::parse("a@exa\tmple.com").is_err());
    }

    #[test]
    fn password_length_limits_are_exact() {
        let p = |n: usize| NewPassword::parse(SecretString::from("é".repeat(n))).is_ok();
        assert!(!p(11));
        assert!(p(12), "counted in characters, not bytes");
        assert!(p(1024));
        assert!(!p(1025));
    }

    #[test]
    fn an_unknown_account_never_matches_even_the_dummy_password() {
        assert!(!verify_password(&SecretString::from("not-a-real-password-0000".to_owned()), None));
    }

    #[test]
    fn emails_are_quoted_escaped_and_capped_for_logs() {
        assert_eq!(loggable(" a@b.c\nFAKE line "), "\"a@b.c\\nFAKE line\"");
        assert_eq!(loggable(&"x".repeat(100)), format!("\"{}\"", "x".repeat(100)));
        assert_eq!(loggable(&"x".repeat(101)), format!("\"{}\"", "x".repeat(100)));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let k = CsrfKey::derive(&[9u8; 64]);
        let t = k.token("seed-a");
        assert!(k.verify("seed-a", &t));
        assert!(!k.verify("seed-b", &t));
        assert!(!k.verify("seed-a", "forged"));
    }
}
