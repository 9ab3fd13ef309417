//! One batch of the intake: the events waiting at that moment split into new ones and duplicates
//! (of the window, of its part not loaded yet, of one another), and what each request is told.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::dedupe::Deduper;
use crate::{
    domain::EventId,
    store::{Inserted, NewEvent, Written},
};

/// The event could not be stored: the caller answers 503 so SnapInspect retries.
#[derive(Debug, thiserror::Error)]
#[error("the event store is unavailable right now")]
pub struct Unavailable;

pub(super) type Reply = oneshot::Sender<Result<Inserted, Unavailable>>;

/// A request waiting for its event to be stored.
pub(super) struct Job {
    pub event: NewEvent,
    pub reply: Reply,
}

/// A batch on its way to the store.
pub(super) struct Batch {
    /// The events to store, none of them a duplicate of another in the batch.
    pub fresh: Vec<NewEvent>,
    /// How many duplicates of each original (earlier, or in `fresh`) arrived in the batch.
    pub duplicates: Vec<(EventId, i64)>,
    /// What each request is told if the store takes the batch as it is, in the order of `replies`.
    outcomes: Vec<Inserted>,
    replies: Vec<Reply>,
}

impl Batch {
    /// Take every job, each a new event or a duplicate of one the window (or `unloaded`, its part
    /// not loaded yet) knows, or of one earlier in the batch.
    pub fn split(jobs: &mut Vec<Job>, dedupe: &Deduper, unloaded: &HashMap<String, EventId>) -> Self {
        let mut fresh: Vec<NewEvent> = Vec::with_capacity(jobs.len());
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut in_batch: HashMap<String, EventId> = HashMap::new();
        let mut duplicates: HashMap<EventId, i64> = HashMap::new();
        for job in jobs.drain(..) {
            let hash = &job.event.payload.dedupe_hash;
            let known = dedupe.original(hash).or_else(|| unloaded.get(hash).cloned());
            match known.or_else(|| in_batch.get(hash).cloned()) {
                Some(original) => {
                    *duplicates.entry(original.clone()).or_default() += 1;
                    outcomes.push(Inserted::Duplicate(original));
                }
                None => {
                    in_batch.insert(hash.clone(), job.event.id.clone());
                    outcomes.push(Inserted::Stored(job.event.id.clone()));
                    fresh.push(job.event);
                }
            }
            replies.push(job.reply);
        }
        Self { fresh, duplicates: duplicates.into_iter().collect(), outcomes, replies }
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether the batch stored an event (not only duplicates, or events another instance had).
    pub fn stored_any(&self, written: &Written) -> bool {
        self.fresh.iter().any(|e| !written.taken.contains_key(&e.id) && !written.failed.contains(&e.id))
    }

    /// Remember the events stored (or taken by another instance, under that one's id) in the
    /// window, and tell each request.
    pub fn answer(self, written: &Written, dedupe: &mut Deduper) {
        // One the store refused is not remembered, so its sender's retry is not taken for a duplicate.
        for e in self.fresh.iter().filter(|e| !written.failed.contains(&e.id)) {
            let id = written.taken.get(&e.id).unwrap_or(&e.id);
            dedupe.remember(&e.payload.dedupe_hash, id, e.received_at);
        }
        for (reply, outcome) in self.replies.into_iter().zip(self.outcomes) {
            let _ = reply.send(told(outcome, written));
        }
    }

    /// Tell every request that its event was not stored.
    pub fn refuse(self) {
        for reply in self.replies {
            let _ = reply.send(Err(Unavailable));
        }
    }
}

/// What a request of a written batch is told: its event (or, if another instance stored it first,
/// that one), or 503 when the store refused its event, or the original it duplicates.
fn told(outcome: Inserted, written: &Written) -> Result<Inserted, Unavailable> {
    let id = match &outcome {
        Inserted::Stored(id) | Inserted::Duplicate(id) => id,
    };
    if written.failed.contains(id) {
        return Err(Unavailable);
    }
    Ok(match written.taken.get(id) {
        Some(original) => Inserted::Duplicate(original.clone()),
        None => outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::now_ms;

    #[test]
    fn a_request_is_told_of_its_event_the_one_stored_first_or_that_the_store_refused_it() {
        let [a, b, c, d] = [(); 4].map(|_| EventId::generate());
        let written = Written { taken: [(b.clone(), c.clone())].into(), failed: [d.clone()].into() };
        assert_eq!(told(Inserted::Stored(a.clone()), &written).unwrap(), Inserted::Stored(a.clone()));
        assert_eq!(told(Inserted::Duplicate(a.clone()), &written).unwrap(), Inserted::Duplicate(a));
        assert_eq!(told(Inserted::Stored(b.clone()), &written).unwrap(), Inserted::Duplicate(c.clone()));
        assert_eq!(told(Inserted::Duplicate(b), &written).unwrap(), Inserted::Duplicate(c));
        assert!(told(Inserted::Stored(d.clone()), &written).is_err(), "refused: 503");
        assert!(told(Inserted::Duplicate(d), &written).is_err(), "a duplicate of a refused one too");
    }

    fn job(hash: &str) -> (Job, oneshot::Receiver<Result<Inserted, Unavailable>>) {
        let mut payload = crate::snapinspect::webhook::parse_payload(br#"{"company_id":1}"#).unwrap();
        payload.dedupe_hash = hash.into();
        let (reply, answer) = oneshot::channel();
        (Job { event: NewEvent { id: EventId::generate(), received_at: now_ms(), payload }, reply }, answer)
    }

    #[tokio::test]
    async fn a_batch_splits_into_new_events_and_duplicates_of_the_window_the_unloaded_part_and_one_another() {
        let mut dedupe = Deduper::new(60_000, 100);
        let (known, unloaded_id) = (EventId::generate(), EventId::generate());
        dedupe.remember("0123456789abcdef0123456789abcdef", &known, now_ms());
        let unloaded: HashMap<String, EventId> = [("old".to_owned(), unloaded_id.clone())].into();
        let (jobs, answers): (Vec<_>, Vec<_>) =
            ["0123456789abcdef0123456789abcdef", "old", "new", "new", "other"].into_iter().map(job).unzip();
        let mut jobs = jobs;
        let ids: Vec<EventId> = jobs.iter().map(|j| j.event.id.clone()).collect();
        let batch = Batch::split(&mut jobs, &dedupe, &unloaded);
        assert!(jobs.is_empty(), "every job is taken");
        assert_eq!(batch.len(), 5);
        let fresh: Vec<&EventId> = batch.fresh.iter().map(|e| &e.id).collect();
        assert_eq!(fresh, [&ids[2], &ids[4]]);
        let mut counted = batch.duplicates.clone();
        counted.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut expected = vec![(known.clone(), 1), (unloaded_id.clone(), 1), (ids[2].clone(), 1)];
        expected.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(counted, expected);

        // Stored as it is, except the last, which another instance had.
        let theirs = EventId::generate();
        let written = Written { taken: [(ids[4].clone(), theirs.clone())].into(), failed: Default::default() };
        assert!(batch.stored_any(&written));
        batch.answer(&written, &mut dedupe);
        let mut told = Vec::new();
        for a in answers {
            told.push(a.await.unwrap().unwrap());
        }
        assert_eq!(
            told,
            [
                Inserted::Duplicate(known),
                Inserted::Duplicate(unloaded_id),
                Inserted::Stored(ids[2].clone()),
                Inserted::Duplicate(ids[2].clone()),
                Inserted::Duplicate(theirs.clone()),
            ]
        );
        assert_eq!(dedupe.original("new"), Some(ids[2].clone()), "remembered");
        assert_eq!(dedupe.original("other"), Some(theirs), "remembered as the other instance's");
    }

    #[tokio::test]
    async fn a_refused_batch_tells_every_request_and_remembers_nothing() {
        let dedupe = Deduper::new(60_000, 100);
        let (jobs, answers): (Vec<_>, Vec<_>) = ["a", "a", "b"].into_iter().map(job).unzip();
        let mut jobs = jobs;
        let batch = Batch::split(&mut jobs, &dedupe, &HashMap::new());
        batch.refuse();
        for a in answers {
            assert!(a.await.unwrap().is_err());
        }
    }

    #[test]
    fn a_batch_of_only_refused_or_taken_events_stored_nothing() {
        let dedupe = Deduper::new(60_000, 100);
        let (jobs, _answers): (Vec<_>, Vec<_>) = ["a", "b"].into_iter().map(job).unzip();
        let mut jobs = jobs;
        let batch = Batch::split(&mut jobs, &dedupe, &HashMap::new());
        let (a, b) = (batch.fresh[0].id.clone(), batch.fresh[1].id.clone());
        let written = Written { taken: [(a, EventId::generate())].into(), failed: [b.clone()].into() };
        assert!(!batch.stored_any(&written));
        let written = Written { taken: Default::default(), failed: [b].into() };
        assert!(batch.stored_any(&written));
    }
}
