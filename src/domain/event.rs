//! A webhook event's identity and life: its time-ordered public id (`evt_…`) and the states it
//! moves through in the queue.

use std::fmt;

use super::{truncate, unique_bytes, ParseError};

/// Where a webhook event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventState {
    /// Stored and waiting for the worker.
    Pending,
    /// Claimed by a worker under a lease.
    Processing,
    /// An attempt failed; the next one is scheduled.
    Retrying,
    /// Processed (and forwarded, when forwarding is on).
    Done,
    /// Every attempt failed, or the receiver answered 410: kept for an admin to replay.
    Dead,
    /// No connection for its company yet: processed once the company connects, dismissed by an
    /// admin, or purged after `EVENT_RETENTION`.
    Unmatched,
    /// It names no company, or not a number: it can never match a connection. Kept to be looked
    /// at, replayed (processed without a connection) or dismissed; purged after `EVENT_RETENTION`.
    Rejected,
}

impl EventState {
    pub const ALL: [EventState; 7] = [
        EventState::Pending,
        EventState::Processing,
        EventState::Retrying,
        EventState::Done,
        EventState::Dead,
        EventState::Unmatched,
        EventState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Processing => "processing",
            EventState::Retrying => "retrying",
            EventState::Done => "done",
            EventState::Dead => "dead",
            EventState::Unmatched => "unmatched",
            EventState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL.into_iter().find(|st| st.as_str() == s.trim()).ok_or_else(|| {
            ParseError(format!(
                "unknown event status `{}`: use pending, processing, retrying, done, dead, unmatched or rejected",
                truncate(s)
            ))
        })
    }
}

impl fmt::Display for EventState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook event's public id: `evt_` followed by 26 characters of base32hex (RFC 4648 §7) over
/// 48 bits of millisecond time and 80 random bits. Time-ordered, so the unique index on it grows at
/// its end instead of taking a random write per event. It is what intake answers, and the
/// `webhook-id` of the forwarded message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

impl EventId {
    const PREFIX: &'static str = "evt_";

    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&crate::time::now_ms().to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&unique_bytes::<10>());
        let mut out = String::with_capacity(30);
        out.push_str(Self::PREFIX);
        let mut buffer: u32 = 0;
        let mut bits = 0;
        for b in bytes {
            buffer = (buffer << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(BASE32HEX[((buffer >> bits) & 31) as usize] as char);
            }
        }
        out.push(BASE32HEX[((buffer << (5 - bits)) & 31) as usize] as char);
        Self(out)
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let body = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| ParseError(format!("an event id starts with `evt_`, got `{}`", truncate(s))))?;
        if body.len() != 26 || !body.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()) {
            return Err(ParseError(format!("`{}` is not an event id", truncate(s))));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_sort_by_time_and_parse_back() {
        let a = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = EventId::generate();
        assert!(a.as_str() < b.as_str(), "{a} < {b}");
        assert_eq!(a.as_str().len(), 30);
        assert_eq!(EventId::parse(a.as_str()).unwrap(), a);
        assert!(EventId::parse("evt_short").is_err());
        assert!(EventId::parse("con_0123456789abcdefghijklmnop").is_err());
    }
}
