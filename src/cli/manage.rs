//! The management commands for events, API keys and admins, each a thin layer over the store
//! (connections are `connections.rs`).

use clap::Subcommand;
use secrecy::ExposeSecret;

use super::{cli_settings, first_line_of_stdin, open_store, shown, truncate};
use crate::time::format_utc;

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        /// What the key is for, e.g. the application that will use it (the bound is in the
        /// README's table of input bounds).
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
        /// Only events in this status: pending, processing, retrying, delivering, delivery_retrying,
        /// delivery_dead, done, dead, unmatched or rejected (the status the console shows).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put an event back to be processed now, with a fresh schedule: an event whose processing
    /// failed is processed again; a processed one has its dead and retrying deliveries queued
    /// again (or, if none failed, all of them: sent again).
    ///
    /// With --dead instead of an id: every dead event (its processing gave up), or those of one
    /// type or company, as the console's "Replay all" does; in chunks, with progress on a terminal.
    Replay {
        #[arg(required_unless_present = "dead")]
        id: Option<String>,
        /// Only the delivery to this endpoint (ep_…), whatever its state.
        #[arg(long, conflicts_with = "dead")]
        endpoint: Option<String>,
        /// Every dead event matching --type and --company (all of them without).
        #[arg(long, conflicts_with = "id")]
        dead: bool,
        /// With --dead: only events of this type (e.g. Create_Inspection).
        #[arg(long = "type", requires = "dead", value_name = "TYPE")]
        kind: Option<String>,
        /// With --dead: only events of this SnapInspect company id.
        #[arg(long, requires = "dead")]
        company: Option<String>,
    },
    /// One event: its details, its deliveries, and every attempt (status, latency, response).
    Show { id: String },
}

pub(super) async fn events(command: EventsCommand) -> anyhow::Result<()> {
    use crate::{
        domain::{status::Status, EventId},
        store::EventFilter,
    };
    let store = open_store(&cli_settings()?).await?;
    let result = match command {
        EventsCommand::List { status, limit } => {
            let status = status.as_deref().map(Status::parse_event).transpose()?;
            let rows = store.events(&EventFilter { status, ..Default::default() }, limit.clamp(1, 10_000)).await?;
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
                        // The shown status (`domain::status`), as the console shows it.
                        e.status().as_str(),
                        e.attempts,
                        truncate(e.last_error.as_deref().unwrap_or(""), 80)
                    );
                }
            }
            Ok(())
        }
        EventsCommand::Show { id } => super::endpoints::show_event(&store, &id).await,
        EventsCommand::Replay { dead: true, kind, company, .. } => {
            super::operate::replay_dead_events(&store, kind, company).await
        }
        EventsCommand::Replay { id, endpoint, .. } => {
            let id = EventId::parse(id.as_deref().unwrap_or_default())?;
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
    let settings = cli_settings()?;
    let store = open_store(&settings).await?;
    let created = store.upsert_admin(email.as_str(), &hash, crate::time::now_ms(), "cli").await?;
    store.close().await;
    if created {
        let console = format!("{}/admin", settings.public_url.as_str().trim_end_matches('/'));
        println!("admin {} created; sign in at {console}", email.as_str());
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
            // The bound every path shares (`domain::limits`), checked before anything is looked up.
            crate::domain::limits::api_key_name(&name)?;
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
