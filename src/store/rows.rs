//! The rows both the store's tables and its dialects handle: a new event as intake hands it over,
//! and a finished delivery attempt to record. Here so that a dialect never imports a table module.

// `snapinspect` is a layer above the store: an event is kept as SnapInspect's parsed body, and
// the parser imports nothing of the store, so this value type is the one import that runs up.
use crate::snapinspect::webhook::WebhookPayload;
use crate::{
    domain::endpoint::DeliveryState,
    domain::{EventId, EventState},
};

/// An event as intake hands it to the store.
pub struct NewEvent {
    pub id: EventId,
    pub received_at: i64,
    pub payload: WebhookPayload,
}

impl NewEvent {
    /// `unmatched` until its company's connection takes it (at once, if there is one); `rejected`
    /// when it names no company (or one that is not a positive number), so it never could.
    pub fn initial_state(&self) -> EventState {
        match self.payload.company_id {
            Some(_) => EventState::Unmatched,
            None => EventState::Rejected,
        }
    }
}

/// One finished attempt, to record.
#[derive(Debug, Clone)]
pub struct DeliveryResult {
    pub delivery_id: i64,
    pub endpoint_id: String,
    pub claim_id: String,
    pub started_at: i64,
    pub duration_ms: i64,
    /// Done, Retrying or Dead.
    pub state: DeliveryState,
    /// When to try again (Retrying).
    pub retry_at: i64,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

impl DeliveryResult {
    pub(super) fn finished_at(&self) -> i64 {
        self.started_at + self.duration_ms
    }
}

/// What an attempt's row says about it: the outcome, and when it is next due or was finished.
pub(super) fn outcome_of(r: &DeliveryResult) -> (&'static str, Option<i64>, Option<i64>) {
    let outcome = match r.state {
        DeliveryState::Done => "done",
        DeliveryState::Dead => "dead",
        _ => "retry",
    };
    match r.state {
        DeliveryState::Done | DeliveryState::Dead => (outcome, None, Some(r.finished_at())),
        _ => (outcome, Some(r.retry_at), None),
    }
}
