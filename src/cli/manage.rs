//! The management commands: connections, events, API keys and admins, each a thin layer over the
//! store and the token manager.

use clap::Subcommand;
use secrecy::ExposeSecret;

use super::{cli_settings, first_line_of_stdin, open_store, shown, truncate};
use crate::{
    config::Settings, domain::ConnectionId, state::Clients, store::Store, time::format_utc, tokens::TokenManager,
};

#[derive(Subcommand)]
pub enum ConnectionsCommand {
    /// Every connection: id, provider, company / name, status, last refresh, last check.
    List,
    /// Add a client-credentials connection (the secret from --client-secret-stdin or CLIENT_SECRET).
    Add {
        /// snapdocs, smartdocumentor, signicat, docplanner or custom
        #[arg(long)]
        provider: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        client_id: String,
        /// Space- (or comma-) separated scopes (Signicat; SmartDocumentor is always WebAPI).
        #[arg(long)]
        scope: Option<String>,
        /// The API the token is for (Snapdocs; defaults per environment).
        #[arg(long)]
        audience: Option<String>,
        /// The country's domain for Docplanner, e.g. doctoralia.es.
        #[arg(long)]
        domain: Option<String>,
        /// Snapdocs: demo or production (default production).
        #[arg(long)]
        environment: Option<String>,
        /// Required for custom; overrides a preset's (e.g. a sandbox). May hold {domain}.
        #[arg(long)]
        token_url: Option<String>,
        /// basic, basic-raw (id and secret not form-encoded first) or post. Required for custom.
        #[arg(long)]
        auth: Option<String>,
        /// Read the client secret from the first line of standard input.
        #[arg(long)]
        client_secret_stdin: bool,
    },
    /// Print a valid access token (refreshing only if needed).
    Token { id: String },
    /// Force an exchange / a new token now, and print the new access token.
    Refresh { id: String },
    /// Give a connection to an end user of your app (the only way a connection changes hands;
    /// audited).
    Assign {
        id: String,
        /// Your app's id for the end user (or tenant).
        #[arg(long)]
        end_user: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
    #[command(flatten)]
    Checks(super::checks::CheckCommand),
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        name: String,
        /// Limit the key to these connections (comma-separated ids); others answer 404.
        #[arg(long, value_name = "ID,...")]
        connections: Option<String>,
        /// The key can get tokens but not force a refresh.
        #[arg(long)]
        read_only: bool,
    },
    /// Revoke a key by its id (key_…).
    Revoke { id: String },
    /// Every key: id, name, prefix, created, last used, revoked.
    List,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an admin, or reset its password (which signs it out everywhere).
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// The most recent events, newest first.
    List {
        /// Only events in this status: pending, processing, retrying, done, dead, unmatched or rejected.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put an event back to be processed now, with a fresh schedule: an event whose processing
    /// failed is processed again; a processed one has its dead and retrying deliveries queued
    /// again (or, if none failed, all of them: sent again).
    Replay {
        id: String,
        /// Only the delivery to this endpoint (ep_…), whatever its state.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// One event: its details, its deliveries, and every attempt (status, latency, response).
    Show { id: String },
}

/// The token manager alone, for `connections token` and `refresh`: no intake, no worker.
fn token_manager(settings: &Settings, store: &Store) -> anyhow::Result<TokenManager> {
    let clients = Clients::new(settings)?;
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    Ok(TokenManager::new(
        store.clone(),
        clients.snapinspect,
        clients.token_urls,
        settings.token_default_lifetime,
        metrics,
    ))
}

pub(super) async fn connections(command: ConnectionsCommand) -> anyhow::Result<()> {
    let settings = cli_settings()?;
    // A listing, an addition, a token: each opens the store and builds no more than it uses.
    let store = open_store(&settings).await?;
    let result = match command {
        ConnectionsCommand::List => super::checks::list(&store).await,
        ConnectionsCommand::Add {
            provider,
            name,
            client_id,
            scope,
            audience,
            domain,
            environment,
            token_url,
            auth,
            client_secret_stdin,
        } => {
            use crate::client_credentials::{AuthStyle, CredentialsInput};
            let provider = crate::domain::Provider::parse(&provider)?;
            let input = CredentialsInput {
                client_id,
                scope,
                audience,
                domain,
                environment,
                token_url,
                auth: auth.as_deref().map(AuthStyle::parse).transpose()?,
            };
            let credentials = input.resolve(provider).map_err(|e| anyhow::anyhow!(e.for_cli()))?;
            // An address the service may not call is refused now, not at the first token request.
            settings
                .token_url_policy()
                .check_url(&credentials.resolved_token_url().map_err(|e| anyhow::anyhow!(e.for_cli()))?)
                .map_err(|b| {
                    anyhow::anyhow!("--token-url cannot be used: {b} (e.g. TOKEN_URL_ALLOW_NETWORKS=10.0.0.0/8)")
                })?;
            let secret = if client_secret_stdin {
                first_line_of_stdin()?
            } else {
                std::env::var("CLIENT_SECRET").map_err(|_| {
                    anyhow::anyhow!("no client secret: pipe it to --client-secret-stdin or set CLIENT_SECRET")
                })?
            };
            anyhow::ensure!(!secret.is_empty(), "the client secret is empty");
            let name = name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let id = store
                .add_credentials_connection(
                    name,
                    &credentials,
                    &secrecy::SecretString::from(secret),
                    crate::time::now_ms(),
                    "cli",
                )
                .await?;
            println!("{id}");
            eprintln!(
                "added {} connection {}; `connect-hub connections token {id}` fetches a token",
                provider.label(),
                shown(name)
            );
            Ok(())
        }
        ConnectionsCommand::Token { id } => {
            let id = ConnectionId::parse(&id)?;
            let token = token_manager(&settings, &store)?.token(&id).await?;
            // A provider's token, printed as it is only when it holds nothing a terminal obeys.
            println!("{}", shown(token.token.expose_secret()));
            Ok(())
        }
        ConnectionsCommand::Refresh { id } => {
            let id = ConnectionId::parse(&id)?;
            let token = token_manager(&settings, &store)?.refresh(&id, "cli").await?;
            // A provider's token, printed as it is only when it holds nothing a terminal obeys.
            println!("{}", shown(token.token.expose_secret()));
            Ok(())
        }
        ConnectionsCommand::Assign { id, end_user, email, display_name } => {
            let id = ConnectionId::parse(&id)?;
            let user =
                crate::domain::connect_session::EndUser::parse(end_user, email, display_name, None).map_err(|e| {
                    anyhow::anyhow!(
                        "{}",
                        e.replace("end_user_id", "--end-user")
                            .replace("end_user_email", "--email")
                            .replace("display_name", "--display-name")
                    )
                })?;
            anyhow::ensure!(
                store.assign_end_user(&id, &user, crate::time::now_ms(), "cli").await?,
                "there is no connection {id}"
            );
            eprintln!("connection {id} now belongs to end user {}", user.id);
            Ok(())
        }
        ConnectionsCommand::Checks(command) => super::checks::check(&settings, &store, command).await,
    };
    store.close().await;
    result
}

pub(super) async fn events(command: EventsCommand) -> anyhow::Result<()> {
    use crate::{
        domain::{EventId, EventState},
        store::EventFilter,
    };
    let store = open_store(&cli_settings()?).await?;
    let result = match command {
        EventsCommand::List { status, limit } => {
            let state = status.as_deref().map(EventState::parse).transpose()?;
            let rows = store.events(&EventFilter { state, ..Default::default() }, limit.clamp(1, 10_000)).await?;
            if rows.is_empty() {
                println!("no events");
            } else {
                println!(
                    "{:<30}  {:<23}  {:<24}  {:>8}  {:<10}  {:>8}  LAST ERROR",
                    "ID", "RECEIVED", "TYPE", "COMPANY", "STATUS", "ATTEMPTS"
                );
                for e in rows {
                    println!(
                        "{:<30}  {:<23}  {:<24}  {:>8}  {:<10}  {:>8}  {}",
                        shown(&e.public_id),
                        format_utc(e.received_at),
                        truncate(e.event_type.as_deref().unwrap_or("-"), 24),
                        e.company_id.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                        shown(&e.state),
                        e.attempts,
                        truncate(e.last_error.as_deref().unwrap_or(""), 80)
                    );
                }
            }
            Ok(())
        }
        EventsCommand::Show { id } => super::endpoints::show_event(&store, &id).await,
        EventsCommand::Replay { id, endpoint } => {
            let id = EventId::parse(&id)?;
            let now = crate::time::now_ms();
            let endpoint = endpoint.map(|e| crate::domain::endpoint::EndpointId::parse(&e)).transpose()?;
            let state = store.event(&id).await?.map(|e| e.state);
            if endpoint.is_some() || state.as_deref() == Some("done") {
                let ep = endpoint.as_ref().map(|e| e.as_str());
                return match store.replay_deliveries(&id, ep, now, "cli").await? {
                    Ok(n) => {
                        println!("{n} deliveries of event {id} are queued again; a running worker sends them within a second");
                        store.close().await;
                        Ok(())
                    }
                    Err(refusal) => {
                        store.close().await;
                        Err(anyhow::anyhow!("{refusal}"))
                    }
                };
            }
            match store.replay_event(&id, now, "cli").await? {
                Ok(previous) => {
                    println!("event {id} ({previous}) is queued again; a running worker picks it up within a second");
                    Ok(())
                }
                Err(refusal) => Err(anyhow::anyhow!("{refusal}")),
            }
        }
    };
    store.close().await;
    result
}

pub(super) async fn admin_create(email: &str, password_stdin: bool) -> anyhow::Result<()> {
    use secrecy::SecretString;

    use crate::auth::{Email, NewPassword};
    let email = Email::parse(email)?;
    let password = if password_stdin {
        SecretString::from(first_line_of_stdin()?)
    } else {
        let first = rpassword::prompt_password(format!("Password for {}: ", email.as_str()))?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ; nothing was changed");
        SecretString::from(first)
    };
    let hash = NewPassword::parse(password)?.hash()?;
    let store = open_store(&cli_settings()?).await?;
    let created = store.upsert_admin(email.as_str(), &hash, crate::time::now_ms(), "cli").await?;
    store.close().await;
    if created {
        println!("admin {} created; sign in at PUBLIC_URL/admin", email.as_str());
    } else {
        println!("password of admin {} reset; its sessions have ended", email.as_str());
    }
    Ok(())
}

pub(super) async fn api_key(command: ApiKeyCommand) -> anyhow::Result<()> {
    use crate::auth::api_keys::ApiKeys;
    let store = open_store(&cli_settings()?).await?;
    let keys = ApiKeys::new(store.clone());
    let result = match command {
        ApiKeyCommand::Create { name, connections, read_only } => {
            let scope = crate::auth::api_keys::KeyScope {
                connections: match connections.as_deref() {
                    Some(raw) => Some(
                        crate::auth::api_keys::KeyScope::parse_connections(raw)?
                            .ok_or_else(|| anyhow::anyhow!("--connections needs at least one connection id"))?,
                    ),
                    None => None,
                },
                read_only,
            };
            let (id, key) = keys.create_scoped(&name, &scope, "cli").await?;
            println!("{}", key.expose_secret());
            eprintln!("created API key {id} ({}); it is shown only now, so store it safely", shown(name.trim()));
            Ok(())
        }
        ApiKeyCommand::Revoke { id } => {
            if keys.revoke(&id, "cli").await? {
                println!("revoked {id}; running servers stop accepting it within 2 seconds");
                Ok(())
            } else {
                Err(anyhow::anyhow!("no active API key with id {id}"))
            }
        }
        ApiKeyCommand::List => {
            println!(
                "{:<36}  {:<24}  {:<14}  {:<23}  {:<23}  {:<23}  SCOPE",
                "ID", "NAME", "PREFIX", "CREATED", "LAST USED", "REVOKED"
            );
            for k in keys.list().await? {
                let scope = format!(
                    "{}{}",
                    shown(k.connection_scope.as_deref().unwrap_or("all connections")),
                    if k.read_only { ", read-only" } else { "" }
                );
                println!(
                    "{:<36}  {:<24}  {:<14}  {:<23}  {:<23}  {:<23}  {scope}",
                    shown(&k.id),
                    truncate(&k.name, 24),
                    shown(&k.prefix),
                    format_utc(k.created_at),
                    k.last_used_at.map(format_utc).unwrap_or_else(|| "never".into()),
                    k.revoked_at.map(format_utc).unwrap_or_default()
                );
            }
            Ok(())
        }
    };
    store.close().await;
    result
}
