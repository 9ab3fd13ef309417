//! What a health check found: ok, refused (the provider refused the connection: it needs
//! reconnecting) or failed (an outage, a timeout, a wrong answer: no status changes), and why.

use crate::tokens::TokenError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
}

impl Outcome {
    /// As the API, the store and `/metrics` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// A check's outcome and, unless it passed, why (never a token: the messages come from our own
/// errors, whose provider excerpts are redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub outcome: Outcome,
    pub error: Option<String>,
}

impl CheckOutcome {
    pub fn ok() -> Self {
        Self { outcome: Outcome::Ok, error: None }
    }

    pub fn failed(why: impl Into<String>) -> Self {
        Self { outcome: Outcome::Failed, error: Some(why.into()) }
    }

    pub fn refused(why: impl Into<String>) -> Self {
        Self { outcome: Outcome::Refused, error: Some(why.into()) }
    }

    /// A token the manager could not hand out: refused when the connection needs reconnecting,
    /// failed otherwise (an outage, a backoff, a disconnect).
    pub fn from_token_error(e: &TokenError) -> Self {
        match e {
            TokenError::NeedsReconnect(_) => Self::refused(e.to_string()),
            _ => Self::failed(e.to_string()),
        }
    }

    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// One line for people: `ok`, or the outcome and why.
    pub fn describe(&self) -> String {
        match &self.error {
            None => self.outcome.as_str().to_owned(),
            Some(why) => format!("{}: {why}", self.outcome.as_str()),
        }
    }
}
