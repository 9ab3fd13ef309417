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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::EventId, store::DeliveryEvent};

    fn claimed(id: i64, endpoint: &str) -> ClaimedDelivery {
        ClaimedDelivery {
            id,
            endpoint_id: endpoint.into(),
            attempts: 1,
            claim_id: "clm".into(),
            event: DeliveryEvent {
                id: EventId::generate(),
                received_at: 0,
                kind: None,
                company_id: None,
                connection_id: None,
                payload: "{}".into(),
                inspection: None,
            },
        }
    }

    /// The ids, sorted (endpoints take turns in no fixed order).
    fn ids(ds: &[ClaimedDelivery]) -> Vec<i64> {
        let mut ids: Vec<i64> = ds.iter().map(|d| d.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_budget_is_twice_the_slots_less_what_is_in_flight_and_waiting() {
        let mut s = Slots::default();
        assert_eq!(s.budget(4), 8, "in flight and as much again waiting");
        assert_eq!(s.budget(0), 0);
        s.queue(vec![claimed(1, "a"), claimed(2, "a"), claimed(3, "b")]);
        assert_eq!(s.budget(4), 5, "three waiting");
        assert_eq!(ids(&s.take_ready(2, 10)), vec![1, 3], "one of each endpoint first");
        assert_eq!(s.budget(4), 5, "two in flight, one waiting");
        assert_eq!(s.budget(3), 3);
        assert_eq!(s.budget(1), 0, "never below nothing");
    }

    #[test]
    fn an_endpoints_room_counts_what_it_has_in_flight_and_waiting() {
        let mut s = Slots::default();
        assert!(s.room(3).is_empty(), "an endpoint holding nothing has all its room");
        s.queue(vec![claimed(1, "a"), claimed(2, "a"), claimed(3, "a"), claimed(4, "b")]);
        assert_eq!(s.room(3), vec![("a".into(), 3), ("b".into(), 5)]);
        assert_eq!(ids(&s.take_ready(10, 2)), vec![1, 2, 4], "at most two of a's in flight");
        assert_eq!(s.room(3), vec![("a".into(), 3), ("b".into(), 5)], "moving to in flight changes nothing");
        assert_eq!(s.room(1), vec![("a".into(), 0), ("b".into(), 1)], "never below nothing");
        s.finish("b", false);
        assert_eq!(s.room(3), vec![("a".into(), 3)], "b holds nothing now");
    }

    #[test]
    fn ready_deliveries_are_taken_in_turns_within_both_limits() {
        let mut s = Slots::default();
        s.queue((1..=4).map(|i| claimed(i, "a")).chain((5..=6).map(|i| claimed(i, "b"))).collect());
        assert_eq!(ids(&s.take_ready(4, 2)), vec![1, 2, 5, 6], "two turns, two each");
        assert!(s.take_ready(4, 2).is_empty(), "every worker slot is taken");
        s.finish("a", false);
        assert_eq!(ids(&s.take_ready(4, 2)), vec![3], "a freed one of its own");
        s.finish("b", false);
        assert!(s.take_ready(4, 2).is_empty(), "a is at its own limit; 4 waits");
        assert!(!s.empty());
        assert_eq!(ids(&s.take_queued()), vec![4]);
        assert_eq!(s.budget(4), 5, "what waited is given back: three in flight");

        let mut s = Slots::default();
        s.queue(vec![claimed(1, "a"), claimed(2, "a")]);
        assert_eq!(ids(&s.take_ready(1, 5)), vec![1], "one worker slot");
    }

    #[test]
    fn a_parked_delivery_frees_its_worker_slot_but_not_its_endpoints() {
        let mut s = Slots::default();
        s.queue(vec![claimed(1, "a"), claimed(2, "a"), claimed(3, "b")]);
        assert_eq!(ids(&s.take_ready(2, 1)), vec![1, 3]);
        s.park();
        assert_eq!(s.budget(2), 2, "one in flight, one waiting, of four");
        assert!(s.take_ready(2, 1).is_empty(), "a's parked delivery still holds a's slot");
        s.finish("b", false);
        s.finish("a", true);
        assert!(!s.empty(), "2 still waits");
        assert_eq!(ids(&s.take_ready(2, 1)), vec![2]);
        s.finish("a", false);
        assert!(s.empty());
        assert_eq!(s.budget(2), 4);
    }

    #[test]
    fn empty_means_nothing_in_flight_parked_or_waiting() {
        let mut s = Slots::default();
        assert!(s.empty());
        s.queue(vec![claimed(1, "a")]);
        assert!(!s.empty(), "waiting");
        assert_eq!(s.take_ready(1, 1).len(), 1);
        assert!(!s.empty(), "in flight");
        s.park();
        assert!(!s.empty(), "parked");
        s.finish("a", true);
        assert!(s.empty());
    }
}
