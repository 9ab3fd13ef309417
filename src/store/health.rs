//! Whether the database answers, as the store's users last found it: the gauge `/metrics` shows
//! and the count of database errors by operation, shared by every clone of the store.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

/// Set by the readiness probe, the background probe and every loop's `Outage`. Starts up: the
/// store answered when it was opened (its migrations ran).
#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self { up: AtomicBool::new(true), errors: Mutex::new(BTreeMap::new()) }
    }
}

impl StoreHealth {
    /// Whether the database answered the last time anyone asked it.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The database answered.
    pub fn answered(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    /// `operation` failed against the database (it does not answer, or refused the statement).
    pub fn failed(&self, operation: &'static str) {
        self.up.store(false, Ordering::Relaxed);
        *self.errors.lock().expect("store health poisoned").entry(operation).or_default() += 1;
    }

    /// The errors counted so far, by operation (sorted).
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        self.errors.lock().expect("store health poisoned").iter().map(|(k, v)| (*k, *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::StoreHealth;

    #[test]
    fn a_failure_takes_the_gauge_down_and_is_counted_until_the_store_answers() {
        let h = StoreHealth::default();
        assert!(h.is_up());
        h.failed("claim_events");
        h.failed("claim_events");
        h.failed("listen");
        assert!(!h.is_up());
        assert_eq!(h.errors(), vec![("claim_events", 2), ("listen", 1)]);
        h.answered();
        assert!(h.is_up());
        assert_eq!(h.errors(), vec![("claim_events", 2), ("listen", 1)], "counters only grow");
    }
}
