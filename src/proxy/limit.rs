//! At most `PROXY_MAX_IN_FLIGHT` proxied requests at once per connection: a permit is taken when a
//! request starts and given back when its answer's body has been sent (or dropped).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::domain::ConnectionId;

#[derive(Clone)]
pub struct InFlight {
    max: usize,
    counts: Arc<Mutex<HashMap<ConnectionId, usize>>>,
}

/// One request's place; dropping it frees the place.
pub struct Permit {
    id: ConnectionId,
    counts: Arc<Mutex<HashMap<ConnectionId, usize>>>,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self { max, counts: Arc::default() }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more request to this connection, or None when `max` are already running.
    pub fn try_acquire(&self, id: &ConnectionId) -> Option<Permit> {
        let mut counts = self.counts.lock().expect("in-flight poisoned");
        let n = counts.entry(id.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Permit { id: id.clone(), counts: self.counts.clone() })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("in-flight poisoned");
        if let Some(n) = counts.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_connection_and_given_back() {
        let limit = InFlight::new(2);
        let (a, b) = (ConnectionId::generate(), ConnectionId::generate());
        let one = limit.try_acquire(&a).unwrap();
        let two = limit.try_acquire(&a).unwrap();
        assert!(limit.try_acquire(&a).is_none(), "the third at once is refused");
        assert!(limit.try_acquire(&b).is_some(), "another connection has its own places");
        drop(one);
        let three = limit.try_acquire(&a).expect("a place given back is free again");
        assert!(limit.try_acquire(&a).is_none());
        drop(two);
        drop(three);
        assert!(limit.counts.lock().unwrap().is_empty(), "a connection with nothing in flight takes no memory");
        let (x, y) = (limit.try_acquire(&a).unwrap(), limit.try_acquire(&a).unwrap());
        drop((x, y));
    }
}
