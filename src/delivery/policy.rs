//! The retry policy shared by enrichment and delivery: follow the schedule with ±10 % jitter, honour `Retry-After` (up
//! to a day), and stop after the schedule's last delay or at once when the failure is permanent (410 Gone).

use std::time::Duration;

use rand::Rng;

/// The longest `Retry-After` we honour: a day.
pub use crate::outbound::client::MAX_RETRY_AFTER;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryIn(Duration),
    /// The schedule is used up (`exhausted`) or the failure is permanent.
    Dead {
        exhausted: bool,
    },
}

/// After failed attempt number `attempts` (1 for the first try): the schedule lists the delay
/// before each retry, so the first try plus one retry per delay are made.
pub fn after_failure(attempts: i64, schedule: &[Duration], permanent: bool, retry_after: Option<Duration>) -> Next {
    let exhausted = attempts.max(0) as usize > schedule.len();
    if permanent || exhausted {
        return Next::Dead { exhausted: exhausted && !permanent };
    }
    let delay = schedule[(attempts.max(1) - 1) as usize];
    let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.9..1.1));
    Next::RetryIn(retry_after.map_or(jittered, |r| r.min(MAX_RETRY_AFTER).max(jittered)))
}

/// The endpoint has failed without a success since `failing_since` for at least `after`.
pub fn disable_before(now: i64, after: Duration) -> i64 {
    now - after.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(100)];

    fn wait(n: Next) -> Duration {
        match n {
            Next::RetryIn(d) => d,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn follows_the_schedule_with_jitter_then_stops() {
        let first = wait(after_failure(1, &S, false, None));
        assert!(first >= Duration::from_secs(9) && first <= Duration::from_secs(11), "{first:?}");
        let second = wait(after_failure(2, &S, false, None));
        assert!(second >= Duration::from_secs(90) && second <= Duration::from_secs(110), "{second:?}");
        assert_eq!(after_failure(3, &S, false, None), Next::Dead { exhausted: true });
    }

    #[test]
    fn permanent_failures_stop_at_once_and_retry_after_is_honoured_up_to_a_day() {
        assert_eq!(after_failure(1, &S, true, None), Next::Dead { exhausted: false });
        assert_eq!(wait(after_failure(1, &S, false, Some(Duration::from_secs(600)))), Duration::from_secs(600));
        let short = wait(after_failure(1, &S, false, Some(Duration::from_secs(1))));
        assert!(short >= Duration::from_secs(9), "never sooner than the schedule: {short:?}");
        assert_eq!(wait(after_failure(1, &S, false, Some(Duration::from_secs(10 * 86_400)))), MAX_RETRY_AFTER);
    }

    #[test]
    fn disable_before_is_the_cutoff_in_the_past() {
        assert_eq!(disable_before(10_000, Duration::from_secs(3)), 7_000);
    }
}
