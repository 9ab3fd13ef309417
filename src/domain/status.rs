//! One status model for what people and programs are shown: a connection's and an event's status,
//! each with its name, label and colour class, the same in the console, the CLI and the API.

use std::fmt;

use super::{endpoint::DeliveryState, ConnectionStatus, EventState, ParseError, Provider};

/// A status as shown. The store keeps a connection's lifecycle (`ConnectionStatus`) and an event's
/// queue state (`EventState`) and each delivery's; what is shown is derived from them here, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    // A connection's.
    /// Tokens are present and the last call worked (or none failed yet).
    Active,
    /// A client-credentials connection that never fetched a token: nothing says yet that it works.
    NotYetUsed,
    NeedsReconnect,
    Unidentified,
    Failing,
    Disconnected,
    // An event's.
    Pending,
    Processing,
    Retrying,
    /// Processed, but a delivery is still waiting or in flight.
    Delivering,
    /// Processed, and a delivery failed once and is scheduled again.
    DeliveryRetrying,
    /// Processed, but a delivery gave up (every attempt failed, or the receiver answered 410).
    DeliveryDead,
    /// Processed and delivered everywhere it was due (or nowhere was due).
    Done,
    Dead,
    Unmatched,
    Rejected,
}

impl Status {
    /// Every connection status, in the order the dashboard and the filter list them.
    pub const CONNECTION: [Status; 6] = [
        Status::Active,
        Status::NotYetUsed,
        Status::NeedsReconnect,
        Status::Unidentified,
        Status::Failing,
        Status::Disconnected,
    ];

    /// Every event status.
    pub const EVENT: [Status; 10] = [
        Status::Pending,
        Status::Processing,
        Status::Retrying,
        Status::Delivering,
        Status::DeliveryRetrying,
        Status::DeliveryDead,
        Status::Done,
        Status::Dead,
        Status::Unmatched,
        Status::Rejected,
    ];

    /// The name programs see (the API's `status`, the console's `?status=`, the CLI's column).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::NotYetUsed => "not_yet_used",
            Status::NeedsReconnect => "needs_reconnect",
            Status::Unidentified => "unidentified",
            Status::Failing => "failing",
            Status::Disconnected => "disconnected",
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Retrying => "retrying",
            Status::Delivering => "delivering",
            Status::DeliveryRetrying => "delivery_retrying",
            Status::DeliveryDead => "delivery_dead",
            Status::Done => "done",
            Status::Dead => "dead",
            Status::Unmatched => "unmatched",
            Status::Rejected => "rejected",
        }
    }

    /// What people read.
    pub fn label(self) -> &'static str {
        match self {
            Status::NotYetUsed => "not yet used",
            Status::NeedsReconnect => "needs reconnect",
            Status::DeliveryRetrying => "delivery retrying",
            Status::DeliveryDead => "delivery dead",
            other => other.as_str(),
        }
    }

    /// The colour class of its badge: `ok` (green), `warn` (amber), `bad` (red) or `idle` (grey).
    pub fn class(self) -> &'static str {
        match self {
            Status::Active | Status::Done => "ok",
            Status::Unidentified | Status::Retrying | Status::DeliveryRetrying | Status::Unmatched => "warn",
            Status::NeedsReconnect | Status::Failing | Status::Dead | Status::DeliveryDead | Status::Rejected => "bad",
            Status::NotYetUsed | Status::Disconnected | Status::Pending | Status::Processing | Status::Delivering => {
                "idle"
            }
        }
    }

    /// A connection's status from what the store keeps: `active` is shown as `not_yet_used` for a
    /// client-credentials connection that has never had a token.
    pub fn of_connection(stored: ConnectionStatus, provider: Provider, ever_had_a_token: bool) -> Self {
        match stored {
            ConnectionStatus::Active if provider != Provider::SnapInspect && !ever_had_a_token => Status::NotYetUsed,
            ConnectionStatus::Active => Status::Active,
            ConnectionStatus::NeedsReconnect => Status::NeedsReconnect,
            ConnectionStatus::Unidentified => Status::Unidentified,
            ConnectionStatus::Failing => Status::Failing,
            ConnectionStatus::Disconnected => Status::Disconnected,
        }
    }

    /// An event's status from its queue state and its deliveries' states: a processed event is
    /// `done` only once no delivery is waiting, retrying or dead.
    pub fn of_event(state: EventState, deliveries: impl IntoIterator<Item = DeliveryState>) -> Self {
        match state {
            EventState::Done => {
                let worst = deliveries.into_iter().max_by_key(|d| delivery_rank(*d));
                match worst {
                    Some(DeliveryState::Dead) => Status::DeliveryDead,
                    Some(DeliveryState::Retrying) => Status::DeliveryRetrying,
                    Some(DeliveryState::Pending | DeliveryState::Processing) => Status::Delivering,
                    Some(DeliveryState::Done) | None => Status::Done,
                }
            }
            EventState::Pending => Status::Pending,
            EventState::Processing => Status::Processing,
            EventState::Retrying => Status::Retrying,
            EventState::Dead => Status::Dead,
            EventState::Unmatched => Status::Unmatched,
            EventState::Rejected => Status::Rejected,
        }
    }

    /// A connection status by name (the console's filter); the message lists them.
    pub fn parse_connection(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        Self::CONNECTION.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::CONNECTION.iter().map(|s| s.as_str()).collect();
            ParseError(format!("unknown connection status `{}`: use {}", super::truncate(s), names.join(", ")))
        })
    }

    /// An event status by name (the console's and the CLI's filter); the message lists them.
    pub fn parse_event(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        Self::EVENT.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::EVENT.iter().map(|s| s.as_str()).collect();
            ParseError(format!("unknown event status `{}`: use {}", super::truncate(s), names.join(", ")))
        })
    }

    /// The stored event state a shown event status comes from (`done` for the delivery ones).
    pub fn stored_event_state(self) -> Option<EventState> {
        match self {
            Status::Pending => Some(EventState::Pending),
            Status::Processing => Some(EventState::Processing),
            Status::Retrying => Some(EventState::Retrying),
            Status::Delivering | Status::DeliveryRetrying | Status::DeliveryDead | Status::Done => {
                Some(EventState::Done)
            }
            Status::Dead => Some(EventState::Dead),
            Status::Unmatched => Some(EventState::Unmatched),
            Status::Rejected => Some(EventState::Rejected),
            _ => None,
        }
    }

    /// The stored statuses a shown connection status comes from.
    pub fn stored_connection_status(self) -> Option<ConnectionStatus> {
        match self {
            Status::Active | Status::NotYetUsed => Some(ConnectionStatus::Active),
            Status::NeedsReconnect => Some(ConnectionStatus::NeedsReconnect),
            Status::Unidentified => Some(ConnectionStatus::Unidentified),
            Status::Failing => Some(ConnectionStatus::Failing),
            Status::Disconnected => Some(ConnectionStatus::Disconnected),
            _ => None,
        }
    }
}

/// Which delivery state says the most about an event: the one needing attention first.
pub fn delivery_rank(d: DeliveryState) -> u8 {
    match d {
        DeliveryState::Done => 0,
        DeliveryState::Pending => 1,
        DeliveryState::Processing => 2,
        DeliveryState::Retrying => 3,
        DeliveryState::Dead => 4,
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_credentials_connection_without_a_token_is_not_yet_used_and_snapinspect_never_is() {
        let s = Status::of_connection(ConnectionStatus::Active, Provider::Signicat, false);
        assert_eq!((s.as_str(), s.label(), s.class()), ("not_yet_used", "not yet used", "idle"));
        assert_eq!(Status::of_connection(ConnectionStatus::Active, Provider::Signicat, true), Status::Active);
        assert_eq!(Status::of_connection(ConnectionStatus::Active, Provider::SnapInspect, false), Status::Active);
        assert_eq!(Status::of_connection(ConnectionStatus::Failing, Provider::Signicat, false), Status::Failing);
        assert_eq!(Status::parse_connection("not_yet_used").unwrap(), Status::NotYetUsed);
        assert!(Status::parse_connection("done").is_err(), "an event status is not a connection's");
    }

    #[test]
    fn a_processed_event_is_done_only_when_no_delivery_waits_retries_or_died() {
        use DeliveryState as D;
        let of = |d: &[D]| Status::of_event(EventState::Done, d.iter().copied());
        assert_eq!(of(&[]), Status::Done);
        assert_eq!(of(&[D::Done, D::Done]), Status::Done);
        assert_eq!(of(&[D::Done, D::Retrying]), Status::DeliveryRetrying);
        assert_ne!(of(&[D::Retrying]).class(), "ok", "a retrying delivery is never green");
        assert_eq!(of(&[D::Pending, D::Done]), Status::Delivering);
        assert_eq!(of(&[D::Retrying, D::Dead]), Status::DeliveryDead);
        assert_eq!(Status::of_event(EventState::Dead, [D::Done]), Status::Dead);
    }
}
