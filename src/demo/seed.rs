//! What `demo` puts in its store on start: one connection per client-credentials fake, the second
//! endpoint, and the API key of the fake "your app" (kept beside the data, made again if revoked).

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::token_server::FakeTokenServer;
use crate::{client_credentials::CredentialsInput, domain::Provider, startup::Application};

/// The file beside the demo's data that holds the fake app's API key (the store has its hash).
const APP_KEY_FILE: &str = "demo-app-api-key";

/// The fake "your app"'s API key: the one kept in the data directory while the hub still accepts
/// it with full access, or a new one (its file rewritten, readable by this user only).
pub(super) async fn app_api_key(app: &Application, dir: &Path) -> anyhow::Result<SecretString> {
    let path = dir.join(APP_KEY_FILE);
    let keys = &app.state().api_keys;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let kept = SecretString::from(text.trim().to_owned());
        let usable = keys.remember(keys.look_up(&kept).await?).is_some_and(|c| c.connections.is_none() && !c.read_only);
        if usable {
            return Ok(kept);
        }
    }
    let (_, key) = keys.create("demo: the fake \"your app\" at /fake/app/", "demo").await?;
    super::write_private(&path, key.expose_secret())?;
    Ok(key)
}

/// The four client-credentials fakes, each with its demo credentials.
pub(super) fn demo_token_servers() -> Vec<(Provider, CredentialsInput, FakeTokenServer)> {
    let secret = DEMO_CC_SECRET;
    vec![
        (
            Provider::Snapdocs,
            CredentialsInput {
                client_id: "demo-snapdocs".into(),
                environment: Some("demo".into()),
                ..Default::default()
            },
            FakeTokenServer::snapdocs("demo-snapdocs", secret),
        ),
        (
            Provider::SmartDocumentor,
            CredentialsInput { client_id: "demo-smartdocumentor".into(), ..Default::default() },
            FakeTokenServer::smartdocumentor("demo-smartdocumentor", secret),
        ),
        (
            Provider::Signicat,
            CredentialsInput {
                client_id: "demo-signicat".into(),
                scope: Some("document_read document_write".into()),
                ..Default::default()
            },
            FakeTokenServer::signicat("demo-signicat", secret),
        ),
        (
            Provider::Docplanner,
            CredentialsInput {
                client_id: "demo-docplanner".into(),
                domain: Some("doctoralia.es".into()),
                ..Default::default()
            },
            FakeTokenServer::docplanner("demo-docplanner", secret, "doctoralia.es"),
        ),
    ]
}

/// The fakes' credentials; a demo, so not a secret.
const DEMO_CC_SECRET: &str = "demo-secret: not for production";

/// On first start, the second demo endpoint: the in-process receiver that only wants
/// `Review_Signed` (the first is FORWARD_URL's, which takes everything).
pub(super) async fn seed_signed_endpoint(app: &Application, public: &str, secret: &str) -> anyhow::Result<()> {
    use crate::domain::endpoint::{EndpointId, EndpointUrl, EventTypes};
    let store = &app.state().store;
    let url = EndpointUrl::parse(&format!("{public}/fake/receiver-signed/events"))?;
    if store.endpoints().await?.iter().any(|e| e.url == url.as_str()) {
        return Ok(());
    }
    let new = crate::store::NewEndpoint {
        id: &EndpointId::generate(),
        url: &url,
        description: "demo: only Review_Signed",
        event_types: &EventTypes::parse("Review_Signed")?,
        secret: &SecretString::from(secret.to_owned()),
    };
    store.create_endpoint(&new, crate::time::now_ms(), "demo").await
}

/// On first start, one connection per client-credentials provider, pointed at its fake (token URL
/// and API). A demo connection made before the proxy existed gets its fake's API URL.
pub(super) async fn seed_credentials_connections(
    app: &Application,
    public: &str,
    servers: &[(Provider, CredentialsInput, FakeTokenServer)],
) -> anyhow::Result<()> {
    let store = &app.state().store;
    let existing = store.connections().await?;
    let secret = SecretString::from(DEMO_CC_SECRET.to_owned());
    for (provider, input, server) in servers {
        let fake = format!("{public}/fake/{}", provider.as_str());
        let input = CredentialsInput {
            token_url: Some(format!("{fake}{}", server.token_path())),
            api_url: Some(format!("{fake}/api/")),
            ..input.clone()
        };
        let settings = input.resolve(*provider)?;
        let name = format!("{} (demo, fake)", provider.label());
        let now = crate::time::now_ms();
        match existing.iter().find(|c| c.provider == *provider) {
            None => {
                store.add_credentials_connection(&name, &settings, &secret, now, "demo").await?;
            }
            Some(c) if c.name == name && c.api_url.is_none() => {
                store.update_credentials_connection(&c.id, &name, &settings, Some(&secret), now, "demo").await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}
