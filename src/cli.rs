//! The command line (clap): parse, load configuration, set up logging, run the command. Every
//! command has `--help`; failures print one line that says what to fix and exit non-zero.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::{
    config::{ConfigError, Settings},
    domain::ConnectionId,
    startup::{AppState, Application},
    store::Store,
    telemetry,
    time::format_utc,
};

#[derive(Parser)]
#[command(
    name = "connect-hub",
    version,
    about = "Links an organisation's SnapInspect, Snapdocs, SmartDocumentor, Signicat and Docplanner accounts and keeps their tokens encrypted and fresh."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the configuration from the environment / connect-hub.toml (the default command).
    Serve,
    /// Serve everything built in on http://127.0.0.1:8080: SQLite and generated keys under ./data,
    /// a fake SnapInspect in the same process.
    Demo {
        /// Default 127.0.0.1:8080, or 127.0.0.1:8443 with --tls.
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Where the demo keeps its database and generated keys (kept between runs).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Serve https with a self-signed certificate (made under the data directory), and
        /// redirect http://127.0.0.1:8080 to it.
        #[arg(long)]
        tls: bool,
    },
    /// Run the fake SnapInspect alone, for developing against a separate `serve`.
    FakeSnapinspect {
        #[arg(long, default_value = "127.0.0.1:9090")]
        bind: SocketAddr,
        #[arg(long, default_value = "connect-hub-dev")]
        client_id: String,
        #[arg(long, env = "FAKE_SNAPINSPECT_CLIENT_SECRET", default_value = "dev-secret", hide_env_values = true)]
        client_secret: String,
        /// The redirect URL the fake accepts (the hub's PUBLIC_URL + /connect/snapinspect/callback).
        #[arg(long, default_value = "http://127.0.0.1:8080/connect/snapinspect/callback")]
        redirect_uri: String,
        /// The hub's webhook URL, for the fake's "fire a webhook" page.
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent copy of the database to PATH while the service runs.
    Backup { path: PathBuf },
    /// Re-encrypt every stored secret under the current ENCRYPTION_KEY (old keys in ENCRYPTION_KEYS_OLD).
    RotateKey,
    /// Manage admin accounts for the console.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Inspect and drive connections.
    Connections {
        #[command(subcommand)]
        command: ConnectionsCommand,
    },
    /// Inspect the webhook queue and put events back to be processed.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// API keys for /api/v1.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Print a fresh random key, base64-encoded, for ENCRYPTION_KEY (32 bytes) or SESSION_KEY (64 bytes).
    GenerateKey {
        #[arg(long, default_value_t = 32)]
        bytes: usize,
        /// Print a Standard Webhooks secret (`whsec_…`) for FORWARD_SECRET instead.
        #[arg(long)]
        webhook: bool,
    },
}

#[derive(Subcommand)]
enum ConnectionsCommand {
    /// Every connection: id, provider, company / name, status, last refresh.
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
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        name: String,
    },
    /// Revoke a key by its id (key_…).
    Revoke { id: String },
    /// Every key: id, name, prefix, created, last used, revoked.
    List,
}

#[derive(Subcommand)]
enum AdminCommand {
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
enum EventsCommand {
    /// The most recent events, newest first.
    List {
        /// Only events in this status: pending, processing, retrying, done, dead or unmatched.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put an event back to be processed now (a dead, done or retrying one), with a fresh schedule.
    Replay { id: String },
}

/// Run the command line; the process exit code says whether it worked.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("connect-hub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ConfigError>() {
                Some(c) => eprintln!("connect-hub: {c}"),
                None => eprintln!("connect-hub: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve().await,
        Command::Demo { bind, data_dir, tls } => {
            let default = if tls { "127.0.0.1:8443" } else { "127.0.0.1:8080" };
            let bind = bind.unwrap_or_else(|| default.parse().expect("a valid address"));
            let tls = tls.then(|| "127.0.0.1:8080".parse().expect("a valid address"));
            crate::demo::run(crate::demo::DemoOptions { bind, data_dir, tls }).await
        }
        Command::FakeSnapinspect { bind, client_id, client_secret, redirect_uri, webhook_url } => {
            telemetry::init(
                &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                crate::config::LogFormat::Pretty,
            );
            fake_snapinspect(bind, client_id, client_secret, redirect_uri, webhook_url).await
        }
        Command::GenerateKey { bytes, webhook } => {
            if webhook {
                println!("whsec_{}", crate::crypto::generate_key_b64(32));
            } else {
                anyhow::ensure!((16..=128).contains(&bytes), "--bytes must be between 16 and 128");
                println!("{}", crate::crypto::generate_key_b64(bytes));
            }
            Ok(())
        }
        Command::Migrate => {
            let settings = cli_settings()?;
            let pool = crate::store::connect_pool(&settings.database_url, settings.sqlite_max_pages).await?;
            crate::store::migrate(&pool).await?;
            pool.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Backup { path } => {
            let store = open_store(&cli_settings()?).await?;
            let bytes = store.backup(&path).await?;
            store.close().await;
            println!(
                "backed up to {} ({} KiB); the tokens in it are still encrypted under ENCRYPTION_KEY",
                path.display(),
                bytes / 1024
            );
            Ok(())
        }
        Command::RotateKey => {
            let store = open_store(&cli_settings()?).await?;
            let report = store.rotate_keys().await?;
            println!(
                "re-encrypted {} values under key {}; {} were already under it",
                report.resealed,
                store.keys().current_key_id(),
                report.already_current
            );
            println!("once every instance runs with the new ENCRYPTION_KEY, the old key can be removed from ENCRYPTION_KEYS_OLD");
            store.close().await;
            Ok(())
        }
        Command::Connections { command } => connections(command).await,
        Command::Events { command } => events(command).await,
        Command::ApiKey { command } => api_key(command).await,
        Command::Admin { command: AdminCommand::Create { email, password_stdin } } => {
            admin_create(&email, password_stdin).await
        }
    }
}

/// Settings for a one-shot CLI command: logs go to stderr at `warn` unless RUST_LOG says otherwise.
fn cli_settings() -> anyhow::Result<Settings> {
    let settings = Settings::load()?;
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    telemetry::init(&level, settings.log_format);
    Ok(settings)
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let keys = Arc::new(settings.keyring()?);
    Store::open(&settings.database_url, settings.sqlite_max_pages, keys).await
}

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    settings.check_serve()?;
    telemetry::init(&settings.rust_log, settings.log_format);
    if settings.snapinspect.client_id.is_none() {
        tracing::warn!("SNAPINSPECT_CLIENT_ID is not set: the Connect with SnapInspect button is disabled");
    }
    let app = Application::build(settings, None).await?;
    tracing::info!(addr = %app.addr(), "connect-hub is serving");
    app.run_until_stopped().await?;
    tracing::info!("connect-hub stopped");
    Ok(())
}

async fn fake_snapinspect(
    bind: SocketAddr,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    webhook_url: Option<String>,
) -> anyhow::Result<()> {
    use crate::fake::snapinspect::{FakeConfig, FakeSnapInspect};
    let fake = FakeSnapInspect::new(FakeConfig {
        client_id: client_id.clone(),
        client_secret,
        redirect_uri: redirect_uri.clone(),
        webhook_url,
    });
    let listener = std::net::TcpListener::bind(bind)?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("fake SnapInspect on {base}");
    println!("  SNAPINSPECT_AUTHORIZE_URL={base}/integration/SnapInspectConnect");
    println!("  SNAPINSPECT_EXCHANGE_URL={base}/integration/ExchangeToken");
    println!("  SNAPINSPECT_API_URL={base}/");
    println!("  SNAPINSPECT_CLIENT_ID={client_id}  (secret from --client-secret / FAKE_SNAPINSPECT_CLIENT_SECRET)");
    println!("  registered redirect_uri: {redirect_uri}");
    println!("  fire webhooks at {base}/fire-webhook");
    // The standalone fake handles SIGINT/SIGTERM itself.
    let server = actix_web::HttpServer::new({
        let configure = fake.configure();
        move || actix_web::App::new().configure(configure.clone())
    })
    .workers(1)
    .listen(listener)?
    .run();
    server.await?;
    Ok(())
}

async fn connections(command: ConnectionsCommand) -> anyhow::Result<()> {
    let settings = cli_settings()?;
    let state = AppState::new(settings).await?;
    let result = match command {
        ConnectionsCommand::List => {
            let all = state.store.connections().await?;
            if all.is_empty() {
                println!("no connections yet");
            } else {
                println!("{:<30}  {:<15}  {:<40}  {:<15}  LAST REFRESH", "ID", "PROVIDER", "COMPANY / NAME", "STATUS");
                for c in all {
                    let who = match c.company_id {
                        Some(id) => format!("{id} {}", c.name),
                        None => c.name.clone(),
                    };
                    let last = c.last_exchange_at.map(format_utc).unwrap_or_else(|| "never".into());
                    println!(
                        "{:<30}  {:<15}  {:<40}  {:<15}  {last}",
                        c.id,
                        c.provider.as_str(),
                        truncate(&who, 40),
                        c.status.as_str()
                    );
                }
            }
            Ok(())
        }
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
            let settings = input.resolve(provider)?;
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
            let id = state
                .store
                .add_credentials_connection(
                    name,
                    &settings,
                    &secrecy::SecretString::from(secret),
                    crate::time::now_ms(),
                    "cli",
                )
                .await?;
            println!("{id}");
            eprintln!(
                "added {} connection {name}; `connect-hub connections token {id}` fetches a token",
                provider.label()
            );
            Ok(())
        }
        ConnectionsCommand::Token { id } => {
            let id = ConnectionId::parse(&id)?;
            let token = state.tokens.token(&id).await?;
            println!("{}", token.token.expose_secret());
            Ok(())
        }
        ConnectionsCommand::Refresh { id } => {
            let id = ConnectionId::parse(&id)?;
            let token = state.tokens.refresh(&id, "cli").await?;
            println!("{}", token.token.expose_secret());
            Ok(())
        }
    };
    state.store.close().await;
    result
}

/// A secret piped in: the first line of standard input, without its line ending.
fn first_line_of_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

async fn events(command: EventsCommand) -> anyhow::Result<()> {
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
                        e.public_id,
                        format_utc(e.received_at),
                        truncate(e.event_type.as_deref().unwrap_or("-"), 24),
                        e.company_id.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                        e.state,
                        e.attempts,
                        truncate(e.last_error.as_deref().unwrap_or(""), 80)
                    );
                }
            }
            Ok(())
        }
        EventsCommand::Replay { id } => {
            let id = EventId::parse(&id)?;
            match store.replay_event(&id, crate::time::now_ms(), "cli").await? {
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

async fn admin_create(email: &str, password_stdin: bool) -> anyhow::Result<()> {
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

async fn api_key(command: ApiKeyCommand) -> anyhow::Result<()> {
    use crate::api_keys::ApiKeys;
    let store = open_store(&cli_settings()?).await?;
    let keys = ApiKeys::new(store.clone());
    let result = match command {
        ApiKeyCommand::Create { name } => {
            let (id, key) = keys.create(&name, "cli").await?;
            println!("{}", key.expose_secret());
            eprintln!("created API key {id} ({}); it is shown only now, so store it safely", name.trim());
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
            println!("{:<36}  {:<24}  {:<14}  {:<23}  {:<23}  REVOKED", "ID", "NAME", "PREFIX", "CREATED", "LAST USED");
            for k in keys.list().await? {
                println!(
                    "{:<36}  {:<24}  {:<14}  {:<23}  {:<23}  {}",
                    k.id,
                    truncate(&k.name, 24),
                    k.prefix,
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
