//! The failed sign-in throttle's rows: reserve an attempt on several keys in one write
//! transaction (so parallel guesses cannot outrun the count), clear, refund, prune.

use super::Store;
use crate::domain::sha256;

/// One throttle key's count, as the policy in `auth` reads and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ThrottleRow {
    pub failures: i64,
    pub window_start: i64,
    pub locked_until: i64,
    pub lockouts: i64,
    pub expires_at: i64,
}

/// A key to reserve an attempt on: its hash, and for per-account keys the account's hash and
/// the key hash of the address it came from (so a password reset can lift that address too).
pub struct ThrottleKey {
    pub key_hash: Vec<u8>,
    pub account_hash: Option<Vec<u8>>,
    pub address_hash: Option<Vec<u8>>,
}

/// The hash an account's throttle rows carry, so a password reset can find them.
pub fn account_hash(email: &str) -> Vec<u8> {
    sha256(format!("account:{email}").as_bytes())
}

impl Store {
    /// For each key in turn, read its row and let `decide` give the row to write, or `Err` to
    /// refuse the attempt (then nothing is written). All in one write transaction: concurrent
    /// reservations, from this process or another, are serialised.
    pub async fn throttle_reserve<E>(
        &self,
        keys: &[ThrottleKey],
        mut decide: impl FnMut(usize, Option<ThrottleRow>) -> Result<ThrottleRow, E>,
    ) -> anyhow::Result<Result<(), E>> {
        let mut tx = self.write_tx().await?;
        // Keys in a fixed order, so two reservations that share keys cannot deadlock.
        let mut locks: Vec<&[u8]> = keys.iter().map(|k| k.key_hash.as_slice()).collect();
        locks.sort_unstable();
        for key in locks {
            self.lock_key(&mut tx, key).await?;
        }
        let mut rows = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let row: Option<ThrottleRow> = sqlx::query_as(
                "select failures, window_start, locked_until, lockouts, expires_at from sign_in_throttle where key_hash = $1",
            )
            .bind(&key.key_hash)
            .fetch_optional(&mut *tx)
            .await?;
            match decide(i, row) {
                Ok(new) => rows.push(new),
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        for (key, row) in keys.iter().zip(rows) {
            sqlx::query(
                "insert into sign_in_throttle
                     (key_hash, account_hash, address_hash, failures, window_start, locked_until, lockouts, expires_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8)
                 on conflict (key_hash) do update set failures = $4, window_start = $5, locked_until = $6,
                     lockouts = $7, expires_at = $8",
            )
            .bind(&key.key_hash)
            .bind(&key.account_hash)
            .bind(&key.address_hash)
            .bind(row.failures)
            .bind(row.window_start)
            .bind(row.locked_until)
            .bind(row.lockouts)
            .bind(row.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Forget a key (a successful sign-in clears its account-and-address count).
    pub async fn throttle_clear(&self, key_hash: &[u8]) -> anyhow::Result<()> {
        sqlx::query("delete from sign_in_throttle where key_hash = $1").bind(key_hash).execute(&self.pool).await?;
        Ok(())
    }

    /// Give back one reserved attempt (a successful sign-in was not a failure); a lock stays.
    pub async fn throttle_refund(&self, key_hash: &[u8]) -> anyhow::Result<()> {
        sqlx::query("update sign_in_throttle set failures = failures - 1 where key_hash = $1 and failures > 0")
            .bind(key_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The row for a key, if any (for tests and the console).
    pub async fn throttle_row(&self, key_hash: &[u8]) -> anyhow::Result<Option<ThrottleRow>> {
        Ok(sqlx::query_as(
            "select failures, window_start, locked_until, lockouts, expires_at from sign_in_throttle where key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// Clear an account's throttle rows, and those of the addresses its failures came from (inside
/// the password reset's transaction): the owner who locked themselves out gets straight back in.
pub(super) async fn clear_account(tx: &mut super::Tx, email: &str) -> Result<(), sqlx::Error> {
    let account = account_hash(email);
    sqlx::query(
        "delete from sign_in_throttle where key_hash in
             (select address_hash from sign_in_throttle where account_hash = $1 and address_hash is not null)",
    )
    .bind(&account)
    .execute(&mut **tx)
    .await?;
    sqlx::query("delete from sign_in_throttle where account_hash = $1").bind(&account).execute(&mut **tx).await?;
    Ok(())
}
