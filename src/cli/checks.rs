//! `connections check ID` (run a connection's health check now; the exit code says whether it
//! passed) and `connections list`, which shows each connection's last check.

use std::sync::Arc;

use clap::Subcommand;

use super::{shown, truncate};
use crate::{
    checks::Checker, config::Settings, domain::ConnectionId, metrics::Metrics, state::Clients, store::Store,
    time::format_utc, tokens::TokenManager,
};

#[derive(Subcommand)]
pub enum CheckCommand {
    /// Run the connection's health check now (SnapInspect: /user with the current token, one
    /// exchange after a 401; client credentials: fetch a token) and print what it found; exits
    /// non-zero unless it passed.
    Check { id: String },
}

pub(super) async fn check(settings: &Settings, store: &Store, command: CheckCommand) -> anyhow::Result<()> {
    let CheckCommand::Check { id } = command;
    let id = ConnectionId::parse(&id)?;
    let clients = Clients::new(settings)?;
    let metrics = Arc::new(Metrics::default());
    let tokens = Arc::new(TokenManager::new(
        store.clone(),
        clients.snapinspect.clone(),
        clients.token_urls,
        settings.token_default_lifetime,
        metrics.clone(),
    ));
    let checker = Checker::new(store.clone(), tokens, clients.snapinspect, metrics, settings.connection_check_interval);
    let outcome = checker.check_now(&id).await?.ok_or_else(|| anyhow::anyhow!("there is no connection {id}"))?;
    // Our own messages, which may quote a provider's (redacted) answer: written out safely.
    println!("{}", shown(&outcome.describe()));
    anyhow::ensure!(outcome.passed(), "the check of connection {id} did not pass ({})", outcome.outcome.as_str());
    Ok(())
}

/// Every connection: id, provider, company / name, status, last refresh, last check.
pub(super) async fn list(store: &Store) -> anyhow::Result<()> {
    let all = store.connections().await?;
    if all.is_empty() {
        println!("no connections yet");
        return Ok(());
    }
    println!(
        "{:<30}  {:<15}  {:<40}  {:<15}  {:<20}  LAST CHECK",
        "ID", "PROVIDER", "COMPANY / NAME", "STATUS", "LAST REFRESH"
    );
    for c in all {
        let who = match c.company_id {
            Some(id) => format!("{id} {}", c.name),
            None => c.name.clone(),
        };
        let last = c.last_exchange_at.map(format_utc).unwrap_or_else(|| "never".into());
        let check = match (&c.last_check, c.last_checked_at) {
            (Some(outcome), Some(at)) => format!("{outcome} {}", format_utc(at)),
            _ => "not checked".into(),
        };
        println!(
            "{:<30}  {:<15}  {:<40}  {:<15}  {last:<20}  {check}",
            c.id,
            c.provider.as_str(),
            truncate(&who, 40),
            // The shown status (`domain::status`), as the console and the API show it.
            c.shown_status().as_str()
        );
    }
    Ok(())
}
