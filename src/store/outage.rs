//! One background loop's view of a database outage: how long to back off after each failure
//! (doubling, capped), and a log line when it starts, at most one a minute while it lasts, one at its end.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::StoreHealth;

/// The first wait after a failure; each failure in a row doubles it up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Short enough that a loop is back within a few seconds of the database.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// While an outage lasts, a reminder at most this often.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What the loop should log now, if anything (see [`Outage::failed`] and [`Outage::answered`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    Started,
    /// Still failing: failures since the last line, and since the start.
    Lasting {
        since_last: u64,
        total: u64,
    },
    Ended {
        failures: u64,
        lasted: Duration,
    },
}

/// The state of one loop's outage. `what` names the loop's work in its log lines ("claiming
/// events"), `operation` the error counter it bumps on `/metrics` ("claim_events").
pub struct Outage {
    what: &'static str,
    operation: &'static str,
    health: Arc<StoreHealth>,
    started: Option<Instant>,
    last_line: Instant,
    failures: u64,
    unreported: u64,
    next_wait: Duration,
}

impl Outage {
    pub fn new(what: &'static str, operation: &'static str, health: Arc<StoreHealth>) -> Self {
        Self {
            what,
            operation,
            health,
            started: None,
            last_line: Instant::now(),
            failures: 0,
            unreported: 0,
            next_wait: FIRST_BACKOFF,
        }
    }

    /// Whether an outage is going on (the last try failed).
    pub fn ongoing(&self) -> bool {
        self.started.is_some()
    }

    /// The try failed with `error`: count it, log if due, and return how long to wait before the
    /// next try.
    pub fn failed(&mut self, error: &anyhow::Error) -> Duration {
        self.health.failed(self.operation);
        let (what, chain) = (self.what, format!("{error:#}"));
        match self.note_failure(Instant::now()) {
            Some(Note::Started) => {
                tracing::warn!(error.chain = %chain, "{what} failed: the database does not answer; retrying with backoff (logged again once a minute while it lasts)")
            }
            Some(Note::Lasting { since_last, total }) => tracing::warn!(
                error.chain = %chain, failures_since_last_line = since_last, failures = total,
                outage_secs = self.lasted().as_secs(), "{what} still fails: the database does not answer"
            ),
            _ => {}
        }
        let wait = self.next_wait;
        self.next_wait = (self.next_wait * 2).min(MAX_BACKOFF);
        wait
    }

    /// The try worked: if an outage was going on, it ended (logged once).
    pub fn answered(&mut self) {
        if self.started.is_none() {
            return;
        }
        self.health.answered();
        let what = self.what;
        if let Some(Note::Ended { failures, lasted }) = self.note_success() {
            tracing::warn!(failures, outage_secs = lasted.as_secs_f64(), "{what} works again: the database answers");
        }
    }

    fn lasted(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    fn note_failure(&mut self, now: Instant) -> Option<Note> {
        self.failures += 1;
        self.unreported += 1;
        if self.started.is_none() {
            self.started = Some(now);
            self.last_line = now;
            self.unreported = 0;
            return Some(Note::Started);
        }
        if now.duration_since(self.last_line) >= REMIND_EVERY {
            self.last_line = now;
            let since_last = std::mem::take(&mut self.unreported);
            return Some(Note::Lasting { since_last, total: self.failures });
        }
        None
    }

    fn note_success(&mut self) -> Option<Note> {
        let started = self.started.take()?;
        let failures = std::mem::take(&mut self.failures);
        self.unreported = 0;
        self.next_wait = FIRST_BACKOFF;
        Some(Note::Ended { failures, lasted: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outage() -> Outage {
        Outage::new("claiming events", "claim_events", Arc::new(StoreHealth::default()))
    }

    #[test]
    fn the_wait_doubles_from_the_first_backoff_up_to_the_cap_and_starts_over_after_success() {
        let mut o = outage();
        let e = anyhow::anyhow!("connection refused");
        let waits: Vec<u64> = (0..7).map(|_| o.failed(&e).as_millis() as u64).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        o.answered();
        assert!(!o.ongoing());
        assert_eq!(o.failed(&e), FIRST_BACKOFF);
    }

    #[test]
    fn an_outage_is_noted_when_it_starts_once_a_minute_while_it_lasts_and_when_it_ends() {
        let mut o = outage();
        let t0 = Instant::now();
        assert_eq!(o.note_failure(t0), Some(Note::Started));
        for s in 1..60 {
            assert_eq!(o.note_failure(t0 + Duration::from_secs(s)), None, "second {s}");
        }
        assert_eq!(o.note_failure(t0 + Duration::from_secs(60)), Some(Note::Lasting { since_last: 60, total: 61 }));
        assert_eq!(o.note_failure(t0 + Duration::from_secs(61)), None);
        assert_eq!(o.note_failure(t0 + Duration::from_secs(119)), None);
        assert_eq!(o.note_failure(t0 + Duration::from_secs(120)), Some(Note::Lasting { since_last: 3, total: 64 }));
        assert!(matches!(o.note_success(), Some(Note::Ended { failures: 64, .. })));
        assert_eq!(o.note_success(), None, "a success with no outage notes nothing");
    }

    #[test]
    fn failures_count_on_the_store_health_by_operation_and_a_success_brings_the_gauge_back() {
        let health = Arc::new(StoreHealth::default());
        let mut o = Outage::new("claiming deliveries", "claim_deliveries", health.clone());
        o.failed(&anyhow::anyhow!("down"));
        o.failed(&anyhow::anyhow!("down"));
        assert!(!health.is_up());
        assert_eq!(health.errors(), vec![("claim_deliveries", 2)]);
        o.answered();
        assert!(health.is_up());
    }
}
