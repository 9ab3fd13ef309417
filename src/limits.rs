//! Request rate limits: a token bucket per key (an API key, a client address), refilled steadily;
//! a request that finds the bucket empty is told how long to wait.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most `rate` requests per `per`, in bursts of up to `burst`. A rate of 0 turns it off.
pub struct RateLimiter {
    rate: u32,
    per: Duration,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: u32, per: Duration, burst: u32) -> Self {
        Self { rate, per, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// `Err(wait)` when `key` has used its allowance; otherwise the request is counted.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let per_token = self.per_token();
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        if buckets.len() > 100_000 {
            // Forget full buckets, so a spray of keys cannot grow this without bound.
            let burst = self.burst;
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() / per_token < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() / per_token).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) * per_token))
        }
    }

    /// What [`RateLimiter::check`] would say now, without counting anything: for work that only
    /// a request within the allowance deserves, decided before that work is done.
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let per_token = self.per_token();
        let buckets = self.buckets.lock().expect("rate limiter poisoned");
        let Some((tokens, at)) = buckets.get(key) else { return Ok(()) };
        let tokens = (tokens + at.elapsed().as_secs_f64() / per_token).min(self.burst);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) * per_token))
        }
    }

    fn per_token(&self) -> f64 {
        self.per.as_secs_f64() / f64::from(self.rate)
    }
}

/// Yes at most once per period for each key: for writes that only need to happen now and then,
/// such as a "last used" time, so that a hot path does not write on every call.
pub struct AtMostEvery {
    period_ms: i64,
    last: Mutex<HashMap<String, i64>>,
}

impl AtMostEvery {
    pub fn new(period: Duration) -> Self {
        Self { period_ms: period.as_millis() as i64, last: Mutex::new(HashMap::new()) }
    }

    /// Whether `key` is due at `now` (unix ms); if so, the next one is a period away.
    pub fn due(&self, key: &str, now: i64) -> bool {
        let mut last = self.last.lock().expect("AtMostEvery poisoned");
        match last.get_mut(key) {
            Some(at) if now - *at < self.period_ms => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                last.insert(key.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_asks_to_wait() {
        let l = RateLimiter::new(60, Duration::from_secs(60), 3);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900), "{wait:?}");
        assert!(l.check("b").is_ok(), "keys are separate");
    }

    #[test]
    fn at_most_every_says_yes_once_per_period() {
        let e = AtMostEvery::new(Duration::from_secs(60));
        assert!(e.due("a", 0));
        assert!(!e.due("a", 59_999));
        assert!(e.due("b", 1));
        assert!(e.due("a", 60_000));
    }

    #[test]
    fn peeking_counts_nothing_and_says_what_a_check_would() {
        let l = RateLimiter::new(2, Duration::from_secs(3600), 2);
        for _ in 0..5 {
            assert!(l.peek("a").is_ok(), "an unseen key has its whole burst");
        }
        assert!(l.check("a").is_ok() && l.check("a").is_ok());
        let wait = l.peek("a").unwrap_err();
        assert_eq!(l.check("a").unwrap_err().as_secs() / 60, wait.as_secs() / 60);
        assert!(wait > Duration::from_secs(1700), "{wait:?}");
        assert!(l.peek("b").is_ok(), "per key");
        assert!(RateLimiter::new(0, Duration::from_secs(1), 1).peek("a").is_ok(), "0 is off");
    }

    #[test]
    fn a_peek_sees_the_tokens_that_came_back_with_time() {
        // One token every 50 ms, a burst of one.
        let l = RateLimiter::new(20, Duration::from_secs(1), 1);
        assert!(l.check("a").is_ok());
        assert!(l.peek("a").is_err(), "the burst is spent");
        std::thread::sleep(Duration::from_millis(120));
        assert!(l.peek("a").is_ok(), "it has come back");
        assert!(l.check("a").is_ok(), "and a check agrees");
    }

    #[test]
    fn zero_is_off() {
        let l = RateLimiter::new(0, Duration::from_secs(1), 1);
        for _ in 0..1000 {
            assert!(l.check("a").is_ok());
        }
    }
}
