//! A PostgreSQL server of the test's own (not the machine's): `initdb` into a temporary directory
//! as the `postgres` user, on a free loopback port, stopped and started at will.

use std::{net::TcpListener, path::PathBuf, process::Command};

use anyhow::{bail, Context};

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`, if any.
pub fn binaries() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

pub struct PgCluster {
    bin: PathBuf,
    /// Holds the data directory, the socket and the server's log; removed when dropped.
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    /// `initdb` (trust authentication) and start; the `hub` database is created.
    pub async fn start(bin: PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // The server runs as `postgres`: it must own the directory.
        run(Command::new("chown").args(["postgres:postgres", &dir.path().display().to_string()]))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let cluster = Self { bin, dir, port };
        cluster.as_postgres("initdb", &["-D", &cluster.data(), "-A", "trust", "-U", "postgres", "--no-sync"])?;
        cluster.start_again()?;
        let admin = sqlx::PgPool::connect(&cluster.url("postgres")).await?;
        sqlx::query("create database hub").execute(&admin).await?;
        admin.close().await;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.log().display().to_string();
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"])
    }

    /// `pg_ctl stop -m fast`: every session is ended, the server is down until `start_again`.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&program)
            .args(args)
            .current_dir(self.dir.path()))
        .with_context(|| format!("{} {}", program.display(), args.join(" ")))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Where the test's PostgreSQL binaries are, or `None` (with the reason printed) when the test
/// is to be skipped. With `CONNECT_HUB_REQUIRE_PG_BINARIES=1` their absence is a failure.
pub fn binaries_or_skip(test: &str) -> Option<PathBuf> {
    let found = binaries();
    if found.is_none() {
        assert!(
            std::env::var("CONNECT_HUB_REQUIRE_PG_BINARIES").as_deref() != Ok("1"),
            "{test}: no /usr/lib/postgresql/*/bin/initdb, and CONNECT_HUB_REQUIRE_PG_BINARIES=1"
        );
        eprintln!("{test}: skipped: no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb)");
    }
    found
}
