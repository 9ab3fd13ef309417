//! `connect-hub connections …`: list, add, token, refresh, assign, disconnect and delete, each a
//! thin layer over the store and the token manager, as the console's are.

use clap::Subcommand;
use secrecy::ExposeSecret;

use super::{cli_settings, first_line_of_stdin, open_store, shown};
use crate::{config::Settings, domain::ConnectionId, state::Clients, store::Store, tokens::TokenManager};

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
        /// The provider API the proxy sends this connection's requests to (presets fill it where
        /// the provider's document names one; a custom provider needs it to be proxied).
        #[arg(long)]
        api_url: Option<String>,
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
    /// Disconnect: its tokens are deleted, the connection and its history stay (as the console's
    /// Disconnect; audited). The end user can connect again.
    Disconnect { id: String },
    /// Delete a client-credentials connection with its secret and token (audited). A SnapInspect
    /// connection is disconnected instead, as in the console.
    Delete { id: String },
    #[command(flatten)]
    Checks(super::checks::CheckCommand),
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
            api_url,
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
                api_url,
            };
            let credentials = input.resolve(provider).map_err(|e| anyhow::anyhow!(e.for_cli()))?;
            // An address the service may not call is refused now, not at the first request.
            let reachable = |flag: &str, url: url::Url| {
                settings.token_url_policy().check_url(&url).map_err(|b| {
                    anyhow::anyhow!("{flag} cannot be used: {b} (e.g. TOKEN_URL_ALLOW_NETWORKS=10.0.0.0/8)")
                })
            };
            let cli_error = |e: crate::client_credentials::PresetError| anyhow::anyhow!(e.for_cli());
            reachable("--token-url", credentials.resolved_token_url().map_err(cli_error)?)?;
            if let Some(api) = credentials.resolved_api_url().map_err(cli_error)? {
                reachable("--api-url", api)?;
            }
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
            let tokens = token_manager(&settings, &store)?.report_lease_waits(Box::new(|m| eprintln!("{m}")));
            let token = tokens.token(&id).await?;
            // A provider's token, printed as it is only when it holds nothing a terminal obeys.
            println!("{}", shown(token.token.expose_secret()));
            Ok(())
        }
        ConnectionsCommand::Refresh { id } => {
            let id = ConnectionId::parse(&id)?;
            // Someone is watching: a wait for another process's lease is said at once, and given
            // up on at the lease's end.
            let tokens = token_manager(&settings, &store)?.report_lease_waits(Box::new(|m| eprintln!("{m}")));
            let token = tokens.refresh(&id, "cli").await?;
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
        ConnectionsCommand::Disconnect { id } => {
            let id = ConnectionId::parse(&id)?;
            store.connection(&id).await?.ok_or_else(|| anyhow::anyhow!("there is no connection {id}"))?;
            anyhow::ensure!(
                store.disconnect(&id, crate::time::now_ms(), "cli").await?,
                "connection {id} was already disconnected"
            );
            println!("disconnected {id}: its tokens are deleted; the end user can connect again at any time");
            Ok(())
        }
        ConnectionsCommand::Delete { id } => {
            let id = ConnectionId::parse(&id)?;
            let c = store.connection(&id).await?.ok_or_else(|| anyhow::anyhow!("there is no connection {id}"))?;
            if let Some(why) = c.deletion_refusal() {
                anyhow::bail!("{why}: use `connect-hub connections disconnect {id}`");
            }
            anyhow::ensure!(
                store.delete_connection(&id, crate::time::now_ms(), "cli").await?,
                "there is no connection {id}; was it already deleted?"
            );
            println!("deleted {id} ({}), with its secret and token", shown(&c.name));
            Ok(())
        }
        ConnectionsCommand::Checks(command) => super::checks::check(&settings, &store, command).await,
    };
    store.close().await;
    result
}
