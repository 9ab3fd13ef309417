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
