//! The health checks' counter, `connect_hub_connection_checks_total{provider, outcome}`: one
//! atomic per provider and outcome, every pair rendered (zeros too) so series never vanish.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::domain::Provider;

/// A check's outcomes, as the API and the counter name them.
pub const CHECK_OUTCOMES: [&str; 3] = ["ok", "refused", "failed"];

/// Checks run, by provider and outcome.
pub struct ConnectionChecks {
    counts: Vec<AtomicU64>,
}

impl Default for ConnectionChecks {
    fn default() -> Self {
        Self { counts: (0..Provider::ALL.len() * CHECK_OUTCOMES.len()).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl ConnectionChecks {
    fn slot(provider: Provider, outcome: &str) -> Option<usize> {
        let p = Provider::ALL.iter().position(|x| *x == provider)?;
        let o = CHECK_OUTCOMES.iter().position(|x| *x == outcome)?;
        Some(p * CHECK_OUTCOMES.len() + o)
    }

    /// Count one check of a `provider` connection that ended in `outcome` (one of `CHECK_OUTCOMES`).
    pub fn inc(&self, provider: Provider, outcome: &str) {
        if let Some(i) = Self::slot(provider, outcome) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, provider: Provider, outcome: &str) -> u64 {
        Self::slot(provider, outcome).map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    pub(super) fn render(&self, out: &mut String) {
        let name = "connect_hub_connection_checks_total";
        let _ =
            writeln!(out, "# HELP {name} Connection health checks, by provider and outcome.\n# TYPE {name} counter");
        for provider in Provider::ALL {
            for outcome in CHECK_OUTCOMES {
                let n = self.get(provider, outcome);
                let _ = writeln!(out, "{name}{{provider=\"{}\",outcome=\"{outcome}\"}} {n}", provider.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_and_outcome_has_a_counter_of_its_own() {
        let c = ConnectionChecks::default();
        let pairs: Vec<(Provider, &str)> =
            Provider::ALL.iter().flat_map(|p| CHECK_OUTCOMES.iter().map(move |o| (*p, *o))).collect();
        for (n, (provider, outcome)) in pairs.iter().enumerate() {
            for _ in 0..=n {
                c.inc(*provider, outcome);
            }
        }
        for (n, (provider, outcome)) in pairs.iter().enumerate() {
            assert_eq!(c.get(*provider, outcome), n as u64 + 1, "{} {outcome}", provider.as_str());
        }
    }

    #[test]
    fn each_provider_and_outcome_counts_apart() {
        let c = ConnectionChecks::default();
        c.inc(Provider::SnapInspect, "refused");
        c.inc(Provider::Signicat, "ok");
        c.inc(Provider::Signicat, "ok");
        c.inc(Provider::Signicat, "not-an-outcome");
        assert_eq!(c.get(Provider::SnapInspect, "refused"), 1);
        assert_eq!(c.get(Provider::SnapInspect, "ok"), 0);
        assert_eq!(c.get(Provider::Signicat, "ok"), 2);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("connect_hub_connection_checks_total{provider=\"signicat\",outcome=\"ok\"} 2\n"));
        assert!(out.contains("connect_hub_connection_checks_total{provider=\"snapinspect\",outcome=\"refused\"} 1\n"));
        assert!(out.contains("connect_hub_connection_checks_total{provider=\"custom\",outcome=\"failed\"} 0\n"));
    }
}
