//! The tests that start the real `connect-hub` binary (or a real browser) as child processes, and
//! the harness that drives the binary from outside.

mod browser;
mod browser_forms;
mod cli;
mod cli_manage;
mod cli_printing;
mod crash;
mod db_outage;
mod demo;
pub mod harness;
mod instances;
mod lease_wait;
mod logs;
mod pg_cluster;
mod processes;
mod restart;
mod screens;

use std::{
    ops::{Deref, DerefMut},
    path::Path,
};

use harness::HubProcess;

use crate::helpers::TestDb;

/// The `serve` process on the test's database (see [`TestDb`]), which lives as long as it.
pub struct Hub {
    process: HubProcess,
    _db: TestDb,
}

impl Deref for Hub {
    type Target = HubProcess;
    fn deref(&self) -> &HubProcess {
        &self.process
    }
}

impl DerefMut for Hub {
    fn deref_mut(&mut self) -> &mut HubProcess {
        &mut self.process
    }
}

pub async fn hub(dir: &Path) -> Hub {
    let mut process = HubProcess::new(Path::new(env!("CARGO_BIN_EXE_connect-hub")), dir).unwrap();
    let db = TestDb::new(dir).await;
    process.env.insert("DATABASE_URL".into(), db.url.clone());
    Hub { process, _db: db }
}
