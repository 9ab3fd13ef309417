//! Which client a delivery goes out with: endpoint URLs stored in the database go through the
//! guarded client (`ENDPOINT_ALLOW_NETWORKS`); only the operator's own `FORWARD_URL` is trusted.

use url::Url;

use crate::domain::endpoint::EndpointId;
use crate::outbound::{Blocked, GuardedClient};

#[derive(Clone)]
pub struct DeliveryClients {
    /// For `ep_forward`, whose URL comes from the operator's environment, not from the database.
    trusted: reqwest::Client,
    guarded: GuardedClient,
    /// `FORWARD_URL`, if set: the one URL the trusted client is for.
    forward_url: Option<Url>,
}

impl DeliveryClients {
    pub fn new(trusted: reqwest::Client, guarded: GuardedClient, forward_url: Option<Url>) -> Self {
        Self { trusted, guarded, forward_url }
    }

    /// A POST to the endpoint's URL; refused at once when a stored URL names a blocked address
    /// (a name is checked on what it resolves to, when connecting).
    pub fn post(&self, endpoint_id: &str, url: &Url) -> Result<reqwest::RequestBuilder, Blocked> {
        // `ep_forward` is trusted only while FORWARD_URL defines it, here, as it is now: once the
        // setting is gone or differs (another instance, an old row), its row is a stored URL like any.
        if endpoint_id == EndpointId::FORWARD && self.forward_url.as_ref() == Some(url) {
            Ok(self.trusted.post(url.clone()))
        } else {
            self.guarded.post(url.clone())
        }
    }

    /// The guard's policy, for checking a URL before it is stored.
    pub fn policy(&self) -> &crate::outbound::Policy {
        self.guarded.policy()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn clients(forward: &str) -> DeliveryClients {
        let guarded = GuardedClient::build(Duration::from_secs(1), &[], crate::outbound::Policy::default()).unwrap();
        DeliveryClients::new(reqwest::Client::new(), guarded, Some(Url::parse(forward).unwrap()))
    }

    #[test]
    fn only_the_forward_endpoint_at_the_forward_url_skips_the_guard() {
        let c = clients("http://127.0.0.1:9/hook");
        let forward = Url::parse("http://127.0.0.1:9/hook").unwrap();
        let other = Url::parse("http://127.0.0.1:9/other").unwrap();
        assert!(c.post(EndpointId::FORWARD, &forward).is_ok(), "the operator's own URL");
        assert!(c.post(EndpointId::FORWARD, &other).is_err(), "an old row of ep_forward is a stored URL");
        assert!(c.post("ep_someone", &forward).is_err(), "another endpoint at the same URL is a stored URL");
        assert!(c.post("ep_someone", &other).is_err());
    }
}
