//! `connect-hub endpoints …` and `events show`: managing where events are delivered, and one
//! event's deliveries with their attempts.

use clap::Subcommand;
use secrecy::ExposeSecret;

use super::{cli_settings, open_store, shown, truncate};
use crate::{
    config::parse_duration,
    delivery::manage::{self, EndpointInput},
    domain::EventId,
    outbound::Policy,
    store::Store,
    time::format_utc,
};

#[derive(Subcommand)]
pub enum EndpointsCommand {
    /// Add an endpoint; prints its id and its signing secret (shown only now).
    Add {
        #[arg(long)]
        url: String,
        /// Comma-separated event types it wants (default: every type).
        #[arg(long)]
        events: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Every endpoint: id, URL, filter, state and last result.
    List,
    /// Change an endpoint's URL, event filter or description, with the checks of the console's
    /// Edit and the API's PATCH; what is not given stays as it is.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        /// Comma-separated event types it wants; "" for every type.
        #[arg(long)]
        events: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Start delivering again; deliveries that waited go out in order.
    Enable { id: String },
    /// Stop delivering; deliveries wait (nothing is dropped).
    Disable { id: String },
    /// Remove an endpoint and its deliveries.
    Remove { id: String },
    /// A new signing secret (printed); the old one also signs during the overlap.
    RotateSecret {
        id: String,
        /// How long the old secret keeps signing, e.g. 24h (0s: stop at once).
        #[arg(long, default_value = "24h")]
        overlap: String,
    },
}

/// What the console shows beside its event filter, on stderr: a type the hub does not know
/// matches nothing today (it is kept all the same).
fn warn(input: &EndpointInput) {
    for w in manage::warnings(input) {
        eprintln!("warning: {w}");
    }
}

pub(super) async fn endpoints(command: EndpointsCommand) -> anyhow::Result<()> {
    let settings = cli_settings()?;
    let store = open_store(&settings).await?;
    let result = run(&store, &settings.endpoint_policy(), settings.endpoints_max, command).await;
    store.close().await;
    result
}

async fn run(store: &Store, policy: &Policy, max: usize, command: EndpointsCommand) -> anyhow::Result<()> {
    match command {
        EndpointsCommand::Add { url, events, description } => {
            let input =
                EndpointInput::with_csv(&url, events.as_deref().unwrap_or(""), description.as_deref().unwrap_or(""));
            let (id, secret) = manage::add(store, policy, max, &input, "cli").await?;
            warn(&input);
            let e = manage::load(store, id.as_str()).await?;
            println!("{id}");
            println!("{}", secret.expose_secret());
            eprintln!(
                "added endpoint {id} for {} ({}); the secret is shown only now",
                shown(&e.url),
                shown(&e.event_types.to_string())
            );
            Ok(())
        }
        EndpointsCommand::List => {
            let all = store.endpoints().await?;
            if all.is_empty() {
                println!("no endpoints yet");
                return Ok(());
            }
            println!("{:<29}  {:<40}  {:<40}  {:<8}  LAST RESULT", "ID", "URL", "EVENTS", "STATE");
            for e in all {
                let state = if e.enabled { "enabled" } else { "disabled" };
                println!(
                    "{:<29}  {:<40}  {:<40}  {:<8}  {}",
                    e.id,
                    truncate(&e.url, 40),
                    truncate(&e.event_types.to_string(), 40),
                    state,
                    shown(&manage::last_result(&e))
                );
                if let Some(reason) = e.disabled_reason {
                    println!("{:<29}  disabled: {}", "", shown(&reason));
                }
            }
            Ok(())
        }
        EndpointsCommand::Update { id, url, events, description } => {
            anyhow::ensure!(
                url.is_some() || events.is_some() || description.is_some(),
                "nothing to change: give --url, --events or --description"
            );
            let e = manage::load(store, &id).await?;
            let mut input = EndpointInput::with_csv(
                url.as_deref().unwrap_or(&e.url),
                events.as_deref().unwrap_or(""),
                description.as_deref().unwrap_or(&e.description),
            );
            if events.is_none() {
                input.events = e.event_types.as_slice().to_vec();
            }
            let e = manage::edit(store, policy, e.id.as_str(), &input, "cli").await?;
            warn(&input);
            println!("endpoint {} now delivers {} to {}", e.id, shown(&e.event_types.to_string()), shown(&e.url));
            Ok(())
        }
        EndpointsCommand::Enable { id } => {
            let e = manage::set_enabled(store, &id, true, "cli").await?;
            println!("endpoint {} is enabled; its waiting deliveries go out in order", e.id);
            Ok(())
        }
        EndpointsCommand::Disable { id } => {
            let e = manage::set_enabled(store, &id, false, "cli").await?;
            println!("endpoint {} is disabled; its deliveries wait until `endpoints enable {}`", e.id, e.id);
            Ok(())
        }
        EndpointsCommand::Remove { id } => {
            manage::remove(store, &id, "cli").await?;
            println!("endpoint {} and its deliveries are removed", id.trim());
            Ok(())
        }
        EndpointsCommand::RotateSecret { id, overlap } => {
            let overlap = parse_duration(&overlap).map_err(|p| anyhow::anyhow!("--overlap {p}"))?;
            let (secret, until) = manage::rotate(store, &id, overlap, "cli").await?;
            let id = id.trim();
            println!("{}", secret.expose_secret());
            if overlap.is_zero() {
                eprintln!("new secret for {id}; the old one no longer signs");
            } else {
                eprintln!("new secret for {id}; until {} deliveries are signed with both", format_utc(until));
            }
            Ok(())
        }
    }
}

/// `events show ID`: the event, its deliveries and each delivery's attempts.
pub(super) async fn show_event(store: &Store, id: &str) -> anyhow::Result<()> {
    let id = EventId::parse(id)?;
    let e = store.event(&id).await?.ok_or_else(|| anyhow::anyhow!("no event with id {id}"))?;
    // Every stored text below may have come from outside: each is printed `shown`.
    println!("event      {}", shown(&e.public_id));
    println!("type       {}", shown(e.event_type.as_deref().unwrap_or("-")));
    println!("received   {}", format_utc(e.received_at));
    println!("company    {}", e.company_id.map(|c| c.to_string()).unwrap_or_else(|| "-".into()));
    println!("connection {}", shown(e.connection_id.as_deref().unwrap_or("-")));
    println!("status     {} ({} processing attempts)", shown(&e.state), e.attempts);
    if let Some(err) = &e.last_error {
        println!("last error {}", shown(err));
    }
    let deliveries = store.event_deliveries(e.rowid).await?;
    if deliveries.is_empty() {
        println!("\nno deliveries");
    }
    for d in deliveries {
        println!("\ndelivery to {} ({})", shown(&d.endpoint_id), shown(&d.url));
        let when = match (d.completed_at, d.next_attempt_at) {
            (Some(c), _) => format!(", finished {}", format_utc(c)),
            (None, Some(n)) => format!(", next attempt {}", format_utc(n)),
            _ => String::new(),
        };
        println!("  status {} after {} attempts{when}", shown(&d.state), d.attempts);
        for a in store.delivery_attempts(d.id).await? {
            let status = a.http_status.map(|s| format!("HTTP {s}")).unwrap_or_else(|| "no answer".into());
            println!("  - {}  {:<5}  {status}  {} ms", format_utc(a.started_at), shown(&a.outcome), a.duration_ms);
            if let Some(err) = a.error {
                println!("      error: {}", shown(&err));
            }
            if let Some(body) = a.response_excerpt {
                println!("      response: {}", truncate(&body.replace(['\n', '\r'], " "), 200));
            }
        }
    }
    Ok(())
}
