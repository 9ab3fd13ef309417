//! Duplicate detection for intake, in the writer's memory: every payload hash seen within the window
//! (two hours), bounded and warmed at start; on PostgreSQL the database's shared window decides.

use std::collections::{HashMap, VecDeque};

use crate::domain::EventId;

/// At most this many hashes are remembered (about 100 bytes each).
pub const MAX_ENTRIES: usize = 1_000_000;

pub struct Deduper {
    window_ms: i64,
    cap: usize,
    ids: HashMap<String, EventId>,
    order: VecDeque<(i64, String)>,
    warned: bool,
}

impl Deduper {
    pub fn new(window_ms: i64, cap: usize) -> Self {
        Self { window_ms, cap, ids: HashMap::new(), order: VecDeque::new(), warned: false }
    }

    /// Forget hashes received before the window.
    pub fn expire(&mut self, now: i64) {
        while let Some((at, _)) = self.order.front() {
            if *at >= now - self.window_ms {
                break;
            }
            let (_, hash) = self.order.pop_front().expect("front exists");
            self.ids.remove(&hash);
        }
    }

    /// The event this payload hash duplicates, if it was received within the window.
    pub fn original(&self, hash: &str) -> Option<&EventId> {
        self.ids.get(hash)
    }

    /// Remember a stored event (call in order of arrival).
    pub fn remember(&mut self, hash: String, id: EventId, received_at: i64) {
        if self.ids.len() >= self.cap {
            if !self.warned {
                tracing::warn!(
                    cap = self.cap,
                    "more events than the duplicate window can hold: the oldest are forgotten early"
                );
                self.warned = true;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back((received_at, hash.clone()));
        self.ids.insert(hash, id);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let mut d = Deduper::new(1000, 10);
        let id = EventId::generate();
        d.remember("h1".into(), id.clone(), 100);
        assert_eq!(d.original("h1"), Some(&id));
        d.expire(1100);
        assert!(d.original("h1").is_some(), "exactly at the edge it is still a duplicate");
        d.expire(1101);
        assert!(d.original("h1").is_none());
        assert!(d.is_empty());
    }

    #[test]
    fn is_bounded() {
        let mut d = Deduper::new(i64::MAX / 2, 3);
        for i in 0..5 {
            d.remember(format!("h{i}"), EventId::generate(), i);
        }
        assert_eq!(d.len(), 3);
        assert!(d.original("h0").is_none() && d.original("h4").is_some());
    }
}
