//! Client-credentials connections: add, edit (the secret is write-only), delete, read their
//! settings and secret for a token request, and store an issued token with its expiry.

use anyhow::Context;
use secrecy::SecretString;

use super::{audit::insert_audit, connections::fingerprint, Store};
// `client_credentials` is a layer above the store: a connection's settings are stored as the
// grant describes them (value types only; the grant's code imports nothing of the store).
use crate::{
    client_credentials::{AuthStyle, Settings},
    domain::{ConnectionId, ConnectionStatus, Provider},
};

/// What a token request needs, opened.
pub struct StoredCredentials {
    pub settings: Settings,
    pub secret: SecretString,
    pub status: ConnectionStatus,
}

fn aad(id: &str) -> crate::crypto::Aad<'_> {
    super::connections::aad(id, "client_secret")
}

impl super::Connection {
    /// Why this connection may not be deleted, if it may not: a SnapInspect connection is
    /// disconnected instead (its history and reconnect links stay meaningful). The console and
    /// the CLI both ask this.
    pub fn deletion_refusal(&self) -> Option<&'static str> {
        (self.provider == Provider::SnapInspect).then_some("SnapInspect connections are disconnected, not deleted")
    }
}

impl Store {
    /// Add a client-credentials connection; it has no token until the first request.
    #[tracing::instrument(skip_all, fields(provider = %settings.provider))]
    pub async fn add_credentials_connection(
        &self,
        name: &str,
        settings: &Settings,
        secret: &SecretString,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<ConnectionId> {
        // The same bounds on every path (console, CLI, demo): the CLI's message is this error's.
        let name = crate::domain::limits::connection_name(name)?;
        secret_bounded(Some(secret))?;
        let id = ConnectionId::generate();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "insert into connections (id, provider, name, status, client_id, client_secret, scope, audience, domain, \
             environment, token_url, auth_style, created_at, updated_at, connected_at, api_url) \
             values ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12, $13)",
        )
        .bind(id.as_str())
        .bind(settings.provider.as_str())
        .bind(name)
        .bind(&settings.client_id)
        .bind(self.keys.seal_str(secret, aad(id.as_str())))
        .bind(&settings.scope)
        .bind(&settings.audience)
        .bind(&settings.domain)
        .bind(&settings.environment)
        .bind(&settings.token_url)
        .bind(settings.auth.as_str())
        .bind(now)
        .bind(&settings.api_url)
        .execute(&mut *tx)
        .await?;
        insert_audit(
            &mut tx,
            now,
            actor,
            "connection_added",
            Some(&id),
            &format!("{} client credentials, client id {}", settings.provider.label(), settings.client_id),
        )
        .await?;
        super::connection_events::announce_change(&mut tx, &id, None, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Change a client-credentials connection. Without a new secret the stored one is kept. The
    /// stored token is dropped (it was issued for the old settings) and any backoff cleared.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn update_credentials_connection(
        &self,
        id: &ConnectionId,
        name: &str,
        settings: &Settings,
        secret: Option<&SecretString>,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let name = crate::domain::limits::connection_name(name)?;
        secret_bounded(secret)?;
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "update connections set name = $2, client_id = $3, client_secret = coalesce($4, client_secret), scope = $5, \
             audience = $6, domain = $7, environment = $8, token_url = $9, auth_style = $10, access_token = null, \
             token_fingerprint = null, token_expires_at = null, status = 'active', last_error = null, last_error_at = null, \
             failure_count = 0, retry_after = null, updated_at = $11, api_url = $13 where id = $1 and provider = $12",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(&settings.client_id)
        .bind(secret.map(|s| self.keys.seal_str(s, aad(id.as_str()))))
        .bind(&settings.scope)
        .bind(&settings.audience)
        .bind(&settings.domain)
        .bind(&settings.environment)
        .bind(&settings.token_url)
        .bind(settings.auth.as_str())
        .bind(now)
        .bind(settings.provider.as_str())
        .bind(&settings.api_url)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            let what = if secret.is_some() { "settings and secret changed" } else { "settings changed; secret kept" };
            insert_audit(&mut tx, now, actor, "connection_edited", Some(id), what).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Delete a connection and its secrets. Its audit entries stay (without the link), its events
    /// stay (unlinked). False if there was none.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn delete_connection(&self, id: &ConnectionId, now: i64, actor: &str) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let name: Option<(String, String)> = sqlx::query_as("select name, provider from connections where id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((name, provider)) = name else { return Ok(false) };
        insert_audit(&mut tx, now, actor, "connection_deleted", None, &format!("{provider} connection {name} ({id})"))
            .await?;
        sqlx::query("delete from connections where id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The settings and opened secret of a client-credentials connection.
    pub async fn credentials(&self, id: &ConnectionId) -> anyhow::Result<Option<StoredCredentials>> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = sqlx::query_as(
            "select provider, status, client_id, client_secret, scope, audience, domain, environment, token_url, auth_style, \
             api_url from connections where id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some((provider, status, client_id, secret, scope, audience, domain, environment, token_url, auth, api_url)) =
            row
        else {
            return Ok(None);
        };
        let provider = Provider::parse(&provider)?;
        let (Some(client_id), Some(secret), Some(token_url), Some(auth)) = (client_id, secret, token_url, auth) else {
            anyhow::bail!("connection {id} is not a client-credentials connection");
        };
        Ok(Some(StoredCredentials {
            settings: Settings {
                provider,
                client_id,
                token_url,
                auth: AuthStyle::parse(&auth)?,
                scope,
                audience,
                domain,
                environment,
                api_url,
            },
            secret: self
                .keys
                .open_str(&secret, aad(id.as_str()))
                .with_context(|| format!("opening connections.client_secret of {id}"))?,
            status: ConnectionStatus::parse(&status)?,
        }))
    }

    /// Store an issued client-credentials token (sealed) with its expiry; the connection is
    /// active again. Lands only while `owner` holds the connection's lease and the connection is
    /// not disconnected (checked in the update itself), so a token fetched while an admin
    /// disconnected or deleted it is not stored. Returns the new token version, or `None` when
    /// the store was refused.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn store_issued_token(
        &self,
        id: &ConnectionId,
        owner: &str,
        token: &SecretString,
        expires_at: i64,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let before = super::connection_events::status_before(&mut tx, id).await?;
        let sealed = self.keys.seal_str(token, super::connections::aad(id.as_str(), "access_token"));
        let version: Option<i64> = sqlx::query_scalar(
            "update connections set access_token = $2, token_fingerprint = $3, token_expires_at = $4, token_obtained_at = $5, \
             token_version = token_version + 1, last_exchange_at = $5, updated_at = $5, status = 'active', last_error = null, \
             last_error_at = null, failure_count = 0, retry_after = null, exchange_lease_until = null, exchange_lease_owner = null \
             where id = $1 and exchange_lease_owner = $6 and exchange_lease_until > $5 and status <> 'disconnected' \
             returning token_version",
        )
        .bind(id.as_str())
        .bind(sealed)
        .bind(fingerprint(token))
        .bind(expires_at)
        .bind(now)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        insert_audit(
            &mut tx,
            now,
            actor,
            "token_issued",
            Some(id),
            &format!("a new token, valid until {}", crate::time::format_utc(expires_at)),
        )
        .await?;
        super::connection_events::announce_change(&mut tx, id, before, now).await?;
        tx.commit().await?;
        Ok(Some(version))
    }
}

/// A client secret within its bound (`domain::limits`).
fn secret_bounded(secret: Option<&SecretString>) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let max = crate::domain::limits::LIMITS.client_secret;
    if secret.is_some_and(|s| s.expose_secret().chars().count() > max) {
        anyhow::bail!("the client secret is longer than {max} characters");
    }
    Ok(())
}
