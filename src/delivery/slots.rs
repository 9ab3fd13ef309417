//! The dispatcher's book of slots: deliveries in flight, per worker and per endpoint, and claimed
//! ones waiting for a slot of their endpoint, taken in turns so a hanging endpoint holds only its own.

use std::collections::{HashMap, VecDeque};

use crate::store::ClaimedDelivery;

/// Deliveries in flight (each holds a slot) and claimed ones waiting for a slot of their
/// endpoint. Claiming ahead means a freed slot starts the next delivery at once, without waiting
/// for the database; so the rate does not depend on how many slots a slow endpoint holds.
#[derive(Default)]
pub(super) struct Slots {
    total: usize,
    by_endpoint: HashMap<String, usize>,
    queued: HashMap<String, VecDeque<ClaimedDelivery>>,
    queued_total: usize,
    /// In flight past `PARK_AFTER`: no longer in `total`.
    parked: usize,
}

impl Slots {
    /// What one endpoint holds: in flight and waiting.
    fn held(&self, endpoint: &str) -> usize {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0) + self.queued.get(endpoint).map_or(0, VecDeque::len)
    }

    /// How many more deliveries may be claimed, with `concurrency` slots: what is in flight,
    /// and as much again waiting.
    pub(super) fn budget(&self, concurrency: usize) -> usize {
        (2 * concurrency).saturating_sub(self.total + self.queued_total)
    }

    /// The room of each endpoint that holds something, out of `2 * per_endpoint` (in flight and
    /// as much again waiting); every other endpoint has all of it.
    pub(super) fn room(&self, per_endpoint: usize) -> Vec<(String, i64)> {
        let holding = self.by_endpoint.iter().filter(|(_, n)| **n > 0).map(|(e, _)| e);
        let waiting = self.queued.iter().filter(|(_, q)| !q.is_empty()).map(|(e, _)| e);
        let mut endpoints: Vec<&String> = holding.chain(waiting).collect();
        endpoints.sort();
        endpoints.dedup();
        endpoints.into_iter().map(|e| (e.clone(), (2 * per_endpoint).saturating_sub(self.held(e)) as i64)).collect()
    }

    /// Claimed deliveries join their endpoints' queues.
    pub(super) fn queue(&mut self, claimed: Vec<ClaimedDelivery>) {
        for d in claimed {
            self.queued_total += 1;
            self.queued.entry(d.endpoint_id.clone()).or_default().push_back(d);
        }
    }

    /// Take the queued deliveries that free slots allow, endpoints in turn, each now in flight.
    pub(super) fn take_ready(&mut self, concurrency: usize, per_endpoint: usize) -> Vec<ClaimedDelivery> {
        let mut start = Vec::new();
        let endpoints: Vec<String> =
            self.queued.iter().filter(|(_, q)| !q.is_empty()).map(|(e, _)| e.clone()).collect();
        let mut progressed = true;
        while progressed && self.total < concurrency {
            progressed = false;
            for e in &endpoints {
                if self.total >= concurrency {
                    break;
                }
                if self.by_endpoint.get(e).copied().unwrap_or(0) >= per_endpoint {
                    continue;
                }
                let Some(next) = self.queued.get_mut(e).and_then(VecDeque::pop_front) else { continue };
                self.queued_total -= 1;
                self.total += 1;
                *self.by_endpoint.entry(e.clone()).or_default() += 1;
                start.push(next);
                progressed = true;
            }
        }
        start
    }

    /// Everything still waiting (to give back on shutdown).
    pub(super) fn take_queued(&mut self) -> Vec<ClaimedDelivery> {
        self.queued_total = 0;
        self.queued.drain().flat_map(|(_, q)| q).collect()
    }

    /// A delivery waited past `PARK_AFTER`: its worker slot is free for others.
    pub(super) fn park(&mut self) {
        self.total -= 1;
        self.parked += 1;
    }

    /// A delivery in flight ended (parked or not).
    pub(super) fn finish(&mut self, endpoint: &str, parked: bool) {
        if parked {
            self.parked -= 1;
        } else {
            self.total -= 1;
        }
        if let Some(n) = self.by_endpoint.get_mut(endpoint) {
            *n -= 1;
        }
    }

    /// Nothing in flight or waiting.
    pub(super) fn empty(&self) -> bool {
        self.total == 0 && self.parked == 0 && self.queued_total == 0
    }
}
