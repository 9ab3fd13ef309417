//! Admin accounts: create or reset (by email; a reset ends the account's sessions), and the
//! look-ups for sign-in and for every request.

use super::{audit::insert_audit, Store};

/// An admin as the console needs it; the password hash stays in the store module's callers only
/// for verification, and never prints.
#[derive(Clone, sqlx::FromRow)]
pub struct Admin {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub session_epoch: i64,
    pub last_login_at: Option<i64>,
}

// By hand, not derived: a hash in a log line is an offline guessing target.
impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"***")
            .field("session_epoch", &self.session_epoch)
            .field("last_login_at", &self.last_login_at)
            .finish()
    }
}

impl Store {
    /// Create the admin, or reset its password (which ends its sessions and clears its sign-in
    /// throttle). Returns true if created.
    pub async fn upsert_admin(&self, email: &str, password_hash: &str, now: i64, actor: &str) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let existing: Option<i64> =
            sqlx::query_scalar("select id from admins where email = $1").bind(email).fetch_optional(&mut *tx).await?;
        let created = existing.is_none();
        if created {
            sqlx::query("insert into admins (email, password_hash, created_at, updated_at) values ($1, $2, $3, $3)")
                .bind(email)
                .bind(password_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "update admins set password_hash = $2, session_epoch = session_epoch + 1, updated_at = $3 where email = $1",
            )
            .bind(email)
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // A reset also lifts the account's sign-in throttle, for every process on this database.
        super::throttle::clear_account(&mut tx, email).await?;
        let action = if created { "admin_created" } else { "admin_password_reset" };
        insert_audit(&mut tx, now, actor, action, None, email).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn admin_by_email(&self, email: &str) -> anyhow::Result<Option<Admin>> {
        Ok(sqlx::query_as("select id, email, password_hash, session_epoch, last_login_at from admins where email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn admin_by_id(&self, id: i64) -> anyhow::Result<Option<Admin>> {
        Ok(sqlx::query_as("select id, email, password_hash, session_epoch, last_login_at from admins where id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn record_login(&self, admin: &Admin, now: i64, from: &str) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("update admins set last_login_at = $2 where id = $1")
            .bind(admin.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, now, &format!("admin:{}", admin.email), "sign_in", None, &format!("from {from}")).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn admin_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from admins").fetch_one(&self.pool).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::Admin;

    #[test]
    fn an_admin_prints_without_its_password_hash() {
        let admin = Admin {
            id: 7,
            email: "ops@example.com".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            session_epoch: 3,
            last_login_at: Some(1),
        };
        let shown = format!("{admin:?}");
        assert!(!shown.contains("argon2id") && !shown.contains("aGFzaA"), "{shown}");
        assert!(shown.contains("ops@example.com") && shown.contains("password_hash: \"***\""), "{shown}");
    }
}
