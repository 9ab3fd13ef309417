//! The command line (clap): parse, load configuration, set up logging, run the command. Every
//! command has `--help`; failures print one line that says what to fix and exit non-zero.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

mod checks;
mod connections;
mod dev;
mod endpoints;
mod manage;
mod operate;
mod progress;
#[cfg(test)]
mod readme_tests;

use clap::{Parser, Subcommand};
use connections::{connections, ConnectionsCommand};
use manage::{admin_create, api_key, events, AdminCommand, ApiKeyCommand, EventsCommand};

use crate::{
    config::{ConfigError, Settings},
    startup::Application,
    store::Store,
    telemetry,
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
    /// a fake SnapInspect and a fake "your app" (/fake/app/) in the same process.
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
        /// Keep the demo's data in this database instead (e.g. postgres://postgres@127.0.0.1/hub_demo);
        /// the generated keys stay under the data directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Another origin (scheme://host[:port]) a connect session's return_url may point to,
        /// besides the demo's own (its fake "your app" at /fake/app/) and CONNECT_RETURN_ORIGINS.
        /// Repeatable.
        #[arg(long = "return-origin", value_name = "ORIGIN")]
        return_origins: Vec<String>,
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
    /// Copy every row of a SQLite database into a new, empty PostgreSQL database (secrets stay
    /// encrypted under the same ENCRYPTION_KEY; ids are kept) and verify the row counts. Stop
    /// `serve` first.
    MigrateStore {
        /// The SQLite database to move, e.g. sqlite://data/connect-hub.db
        #[arg(long)]
        from: String,
        /// The PostgreSQL database to move to, e.g. postgres://hub@127.0.0.1/hub
        #[arg(long)]
        to: String,
    },
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
    /// Where events are delivered: add, list, enable, disable, remove, rotate-secret.
    Endpoints {
        #[command(subcommand)]
        command: endpoints::EndpointsCommand,
    },
    /// A fake receiving application (for the delivery benchmark): answers 200 to POST /events,
    /// counts what arrived at GET /stats.
    FakeReceiver {
        #[arg(long, default_value = "127.0.0.1:9091")]
        bind: SocketAddr,
        /// Answer each delivery after this long.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Never answer (until the hub's outbound timeout gives up).
        #[arg(long)]
        hang: bool,
    },
    /// Benchmark helper: store N finished events fanned out to today's endpoints, at once.
    #[command(hide = true)]
    BenchPreload {
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// Comma-separated event types, used in turn.
        #[arg(long, default_value = "Create_Inspection")]
        types: String,
    },
    /// Print a single-use connect URL (30 minutes) for one end user, for support staff.
    ConnectLink {
        /// The organisation's id for the end user (or tenant) the new connection belongs to.
        #[arg(long)]
        end_user: String,
        /// Where the end user is sent afterwards; its origin must be in CONNECT_RETURN_ORIGINS.
        #[arg(long)]
        return_url: Option<String>,
    },
    /// Benchmark: queue ROWS due events (into a scratch database!), then time CLAIMS claims of 16
    /// as the worker makes them, and print the claim's query plan.
    #[command(hide = true)]
    BenchClaims {
        #[arg(long, default_value_t = 10_000)]
        rows: i64,
        #[arg(long, default_value_t = 200)]
        claims: u32,
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
                // A refusal may quote what was stored (a state, a name): written out like the rest.
                None => eprintln!("connect-hub: {}", shown(&format!("{e:#}"))),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve().await,
        Command::Demo { bind, data_dir, tls, database_url, return_origins } => {
            let default = if tls { "127.0.0.1:8443" } else { "127.0.0.1:8080" };
            let bind = bind.unwrap_or_else(|| default.parse().expect("a valid address"));
            let tls = tls.then(|| "127.0.0.1:8080".parse().expect("a valid address"));
            crate::demo::run(crate::demo::DemoOptions { bind, data_dir, tls, database_url, return_origins }).await
        }
        Command::FakeSnapinspect { bind, client_id, client_secret, redirect_uri, webhook_url } => {
            dev::fake_snapinspect(bind, client_id, client_secret, redirect_uri, webhook_url).await
        }
        Command::FakeReceiver { bind, delay_ms, hang } => dev::fake_receiver(bind, delay_ms, hang).await,
        Command::BenchClaims { rows, claims } => dev::bench_claims(rows, claims).await,
        Command::BenchPreload { events, types } => dev::bench_preload(events, types).await,
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
            let db = crate::store::Database::connect(&settings.database_url, settings.sqlite_max_pages).await?;
            db.migrate().await?;
            db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::MigrateStore { from, to } => operate::migrate_store(&from, &to).await,
        Command::Backup { path } => operate::backup(&path).await,
        Command::RotateKey => operate::rotate_key().await,
        Command::Connections { command } => connections(command).await,
        Command::Events { command } => events(command).await,
        Command::ApiKey { command } => api_key(command).await,
        Command::ConnectLink { end_user, return_url } => operate::connect_link(end_user, return_url).await,
        Command::Endpoints { command } => endpoints::endpoints(command).await,
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

/// A secret piped in: the first line of standard input, without its line ending.
fn first_line_of_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Stored text as a column of a listing: written out as [`shown`] says, then cut to `n` characters.
fn truncate(s: &str, n: usize) -> String {
    let s = shown(s);
    if s.chars().count() <= n {
        s.into_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Stored text as the terminal may show it: much of it came from outside (a receiver's answer, a
/// webhook's type, a company's name), and a control character in it would move the cursor or
/// rewrite the lines before it. Every command prints stored text through this (or `truncate`).
fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    crate::domain::text::escaped(s)
}
