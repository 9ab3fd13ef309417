//! The operator's one-shot commands: `migrate-store`, `rotate-key` and `events replay --dead` (with
//! progress on a terminal, one summary line otherwise), `backup`, and `connect-link`.

use std::path::Path;

use super::{
    cli_settings, open_store,
    progress::{bar, Progress},
};

/// `migrate-store --from --to`: copy, verify, and say so in one line.
pub(super) async fn migrate_store(from: &str, to: &str) -> anyhow::Result<()> {
    // The duplicate window is filled from the events received within it; its length is read
    // through the configuration (`connect-hub.toml`, then the environment) like every setting.
    let window = i64::try_from(cli_settings()?.dedupe_window_secs).unwrap_or(i64::MAX / 1000);
    let mut progress = Progress::new();
    let report = crate::store::migrate_store_with(from, to, window * 1000, &mut |p| {
        progress.update(format!(
            "copying table {}/{} {:<20} {}",
            p.index + 1,
            p.of,
            p.table,
            bar(p.copied as u64, p.rows as u64)
        ))
    })
    .await?;
    let rows: i64 = report.tables.iter().map(|(_, n)| n).sum();
    let per_table: Vec<String> = report.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
    progress.finish(&format!(
        "copied {rows} rows in {} tables ({}); every table has the same row count in both. Point DATABASE_URL at the new database.",
        report.tables.len(),
        per_table.join(", ")
    ));
    Ok(())
}

/// `rotate-key`: re-seal every secret under the current key.
pub(super) async fn rotate_key() -> anyhow::Result<()> {
    let store = open_store(&cli_settings()?).await?;
    let mut progress = Progress::new();
    let result = store.rotate_keys_with(&mut |n, of| progress.update(format!("re-encrypting {}", bar(n, of)))).await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    progress.finish(&format!(
        "re-encrypted {} values under key {}; {} were already under it. Once every instance runs with the new \
         ENCRYPTION_KEY, the old key can be removed from ENCRYPTION_KEYS_OLD.",
        report.resealed,
        store.keys().current_key_id(),
        report.already_current
    ));
    store.close().await;
    Ok(())
}

/// How many dead events one transaction of `events replay --dead` puts back.
const REPLAY_CHUNK: i64 = 500;

/// `events replay --dead [--type T] [--company C]`: the console's "Replay all", through the same
/// store function, a chunk at a time so a terminal sees how far it is.
pub(super) async fn replay_dead_events(
    store: &crate::store::Store,
    kind: Option<String>,
    company: Option<String>,
) -> anyhow::Result<()> {
    use crate::domain::{limits::LIMITS, status::Status, CompanyId};
    let kind = kind.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty());
    if let Some(k) = &kind {
        anyhow::ensure!(!k.contains('\0'), "an event type cannot hold a NUL character");
        let max = LIMITS.event_type;
        anyhow::ensure!(k.chars().count() <= max, "an event type has at most {max} characters");
    }
    let company = company.as_deref().map(CompanyId::parse).transpose()?;
    let filter = crate::store::EventFilter { kind, company, ..Default::default() };
    let total = store.count_events(&crate::store::EventFilter { status: Some(Status::Dead), ..filter.clone() }).await?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut progress = Progress::new();
    let mut done = 0u64;
    // Bounded by the count taken first: an event that dies again meanwhile waits for the next run.
    while done < total {
        let chunk = REPLAY_CHUNK.min(i64::try_from(total - done).unwrap_or(REPLAY_CHUNK));
        let n = store.replay_dead(&filter, Some(chunk), crate::time::now_ms(), "cli").await?;
        if n == 0 {
            break;
        }
        done += n;
        progress.update(format!("replaying dead events {}", bar(done, total)));
    }
    progress.finish(&format!("{done} dead events are queued again; a running worker processes them within a second"));
    Ok(())
}

/// `backup PATH`: a consistent copy of the SQLite database.
pub(super) async fn backup(path: &Path) -> anyhow::Result<()> {
    let store = open_store(&cli_settings()?).await?;
    let bytes = store.backup(path).await;
    store.close().await;
    println!(
        "backed up to {} ({} KiB); the tokens in it are still encrypted under ENCRYPTION_KEY",
        path.display(),
        bytes? / 1024
    );
    Ok(())
}

pub(super) async fn connect_link(end_user: String, return_url: Option<String>) -> anyhow::Result<()> {
    let settings = cli_settings()?;
    let request = crate::domain::connect_session::SessionRequest {
        end_user_id: Some(end_user),
        return_url,
        ..Default::default()
    };
    let (end_user, return_url) = request.check(&settings.connect_return_origins).map_err(|e| {
        anyhow::anyhow!("{}", e.replace("end_user_id", "--end-user").replace("return_url", "--return-url"))
    })?;
    let store = open_store(&settings).await?;
    let issued = store.issue_connect_session(&settings.public_url, &end_user, return_url.as_ref(), None, "cli").await?;
    println!("{}", issued.connect_url);
    eprintln!("single use, valid until {}", crate::time::format_utc(issued.expires_at));
    Ok(())
}
