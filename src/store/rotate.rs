//! `rotate-key`: re-seal every stored secret under the current key, and count what was already
//! under it.

use anyhow::Context;

use super::Store;
use crate::crypto::Aad;

/// Every sealed column: (table, primary-key column, secret column). A new secret column is added
/// here, or `rotate-key` would leave it under an old key.
pub(crate) const SEALED_COLUMNS: &[(&str, &str, &str)] = &[
    ("connections", "id", "access_token"),
    ("connections", "id", "refresh_token"),
    ("connections", "id", "client_secret"),
    ("endpoints", "id", "secret"),
    ("endpoints", "id", "previous_secret"),
];

/// What `rotate-key` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub resealed: u64,
    pub already_current: u64,
}

impl Store {
    /// Re-seal every value not sealed under the current key, in one transaction: either all move
    /// to the new key or none do. A value no configured key opens stops the rotation with its row.
    pub async fn rotate_keys(&self) -> anyhow::Result<RotationReport> {
        self.rotate_keys_with(&mut |_, _| {}).await
    }

    /// [`Store::rotate_keys`], telling `progress` (values looked at, values in all) as it goes.
    #[tracing::instrument(skip_all)]
    pub async fn rotate_keys_with(
        &self,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> anyhow::Result<RotationReport> {
        let mut report = RotationReport::default();
        let mut tx = self.write_tx().await?;
        let mut all = Vec::new();
        for (table, pk, column) in SEALED_COLUMNS {
            let sql = format!("select {pk}, {column} from {table} where {column} is not null");
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(&sql).fetch_all(&mut *tx).await?;
            all.push((table, pk, column, rows));
        }
        let total = all.iter().map(|(.., rows)| rows.len() as u64).sum();
        let mut seen = 0;
        progress(0, total);
        for (table, pk, column, rows) in all {
            for (id, blob) in rows {
                seen += 1;
                if seen % 100 == 0 || seen == total {
                    progress(seen, total);
                }
                if self.keys.is_current(&blob) {
                    report.already_current += 1;
                    continue;
                }
                let aad = Aad { table, column, row: &id };
                let plain = self
                    .keys
                    .open(&blob, aad)
                    .with_context(|| format!("{table}.{column} of row {id} does not open with any configured key"))?;
                let sealed = self.keys.seal(&plain, aad);
                let sql = format!("update {table} set {column} = $1 where {pk} = $2");
                sqlx::query(&sql).bind(sealed).bind(&id).execute(&mut *tx).await?;
                report.resealed += 1;
            }
        }
        tx.commit().await?;
        Ok(report)
    }
}
