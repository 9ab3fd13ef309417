//! Endpoints (where events are delivered): create, list, enable / disable, remove, rotate the
//! signing secret with an overlap, and the `FORWARD_URL` endpoint. Secrets are sealed per row.

use secrecy::SecretString;

use super::{audit::insert_audit, Store, Tx};
use crate::{
    crypto::Aad,
    domain::endpoint::{EndpointId, EndpointUrl, EventTypes},
};

/// An endpoint as the CLI, the console and the worker see it (without its secrets).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub url: String,
    pub description: String,
    pub event_types: EventTypes,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<i64>,
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_status: Option<i64>,
    pub previous_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The secrets an endpoint's deliveries are signed with right now: the current one, and the
/// previous one while its overlap lasts.
pub struct SigningSecrets {
    pub current: SecretString,
    pub previous: Option<SecretString>,
}

#[derive(sqlx::FromRow)]
struct EndpointRecord {
    id: String,
    url: String,
    description: String,
    state: String,
    disabled_reason: Option<String>,
    disabled_at: Option<i64>,
    failing_since: Option<i64>,
    last_success_at: Option<i64>,
    last_failure_at: Option<i64>,
    last_status: Option<i64>,
    previous_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, url, description, state, disabled_reason, disabled_at, failing_since, last_success_at, \
    last_failure_at, last_status, previous_until, created_at, updated_at";

fn aad<'a>(id: &'a str, column: &'a str) -> Aad<'a> {
    Aad { table: "endpoints", column, row: id }
}

/// Where an enabled endpoint's deliveries go, and what signs them.
pub struct DeliveryTarget {
    pub url: String,
    pub secrets: SigningSecrets,
    /// When the previous secret stops signing (`secrets.previous` is there until then).
    pub previous_until: Option<i64>,
}

/// What a new endpoint is made of.
pub struct NewEndpoint<'a> {
    pub id: &'a EndpointId,
    pub url: &'a EndpointUrl,
    pub description: &'a str,
    pub event_types: &'a EventTypes,
    pub secret: &'a SecretString,
}

/// An endpoint's new URL, description and event types (all three are set).
pub struct EndpointChange<'a> {
    pub url: &'a EndpointUrl,
    pub description: &'a str,
    pub event_types: &'a EventTypes,
}

impl Store {
    /// Add an endpoint however many there are already (tests and tools); people and programs
    /// add theirs through `delivery::manage`, with [`Store::create_endpoint_within`].
    pub async fn create_endpoint(&self, new: &NewEndpoint<'_>, now: i64, actor: &str) -> anyhow::Result<()> {
        // No count reaches usize::MAX, so this always adds.
        self.create_endpoint_within(new, usize::MAX, now, actor).await.map(drop)
    }

    /// Add an endpoint unless there are already `max`; false if there are. Counted in the same
    /// write transaction, under a lock on PostgreSQL, so endpoints added at once on several
    /// instances cannot pass `max` together.
    #[tracing::instrument(skip_all, fields(endpoint_id = %new.id))]
    pub async fn create_endpoint_within(
        &self,
        new: &NewEndpoint<'_>,
        max: usize,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let id = new.id.as_str();
        let mut tx = self.write_tx().await?;
        self.lock_key(&mut tx, b"endpoints:count").await?;
        let count: i64 = sqlx::query_scalar("select count(*) from endpoints").fetch_one(&mut *tx).await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= max {
            return Ok(false);
        }
        sqlx::query(
            "insert into endpoints (id, url, description, secret, state, created_at, updated_at) \
             values ($1, $2, $3, $4, 'enabled', $5, $5)",
        )
        .bind(id)
        .bind(new.url.as_str())
        .bind(new.description)
        .bind(self.keys.seal_str(new.secret, aad(id, "secret")))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        set_types(&mut tx, id, new.event_types).await?;
        insert_audit(&mut tx, now, actor, "endpoint_add", None, &format!("{id} {}", new.url.as_str())).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Change an endpoint's URL, description and event types (with an audit entry saying what
    /// changed); false if there is no such endpoint.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn update_endpoint(
        &self,
        id: &EndpointId,
        change: &EndpointChange<'_>,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("update endpoints set url = $2, description = $3, updated_at = $4 where id = $1")
            .bind(id.as_str())
            .bind(change.url.as_str())
            .bind(change.description)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            set_types(&mut tx, id.as_str(), change.event_types).await?;
            let detail = format!("{id} {} ({})", change.url.as_str(), change.event_types);
            insert_audit(&mut tx, now, actor, "endpoint_edit", None, &detail).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Define or update the endpoint `FORWARD_URL` / `FORWARD_SECRET` describe (all event types).
    pub async fn upsert_forward_endpoint(
        &self,
        url: &EndpointUrl,
        secret: &SecretString,
        now: i64,
    ) -> anyhow::Result<()> {
        let id = EndpointId::FORWARD;
        sqlx::query(
            "insert into endpoints (id, url, description, secret, state, created_at, updated_at) \
             values ($1, $2, 'FORWARD_URL', $3, 'enabled', $4, $4) \
             on conflict (id) do update set url = excluded.url, secret = excluded.secret, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(url.as_str())
        .bind(self.keys.seal_str(secret, aad(id, "secret")))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        let sql = format!("select {COLUMNS} from endpoints order by created_at, id");
        let recs: Vec<EndpointRecord> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
        let types: Vec<(String, String)> =
            sqlx::query_as("select endpoint_id, event_type from endpoint_event_types order by endpoint_id, event_type")
                .fetch_all(&self.pool)
                .await?;
        recs.into_iter()
            .map(|r| {
                let mine = types.iter().filter(|(e, _)| *e == r.id).map(|(_, t)| t.clone()).collect();
                endpoint(r, mine)
            })
            .collect()
    }

    pub async fn endpoint(&self, id: &EndpointId) -> anyhow::Result<Option<Endpoint>> {
        let sql = format!("select {COLUMNS} from endpoints where id = $1");
        let Some(rec) = sqlx::query_as::<_, EndpointRecord>(&sql).bind(id.as_str()).fetch_optional(&self.pool).await?
        else {
            return Ok(None);
        };
        let types = sqlx::query_scalar(
            "select event_type from endpoint_event_types where endpoint_id = $1 order by event_type",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        endpoint(rec, types).map(Some)
    }

    /// Where an endpoint's deliveries go at `now`, and what signs them; `None` when it is
    /// disabled or gone (its deliveries wait, or went with it).
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn delivery_target(&self, id: &str, now: i64) -> anyhow::Result<Option<DeliveryTarget>> {
        type Row = (String, String, Vec<u8>, Option<Vec<u8>>, Option<i64>);
        let row: Option<Row> =
            sqlx::query_as("select url, state, secret, previous_secret, previous_until from endpoints where id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((url, _, secret, previous, until)) = row.filter(|r| r.1 == "enabled") else { return Ok(None) };
        let secrets = self.open_secrets(id, &secret, previous.zip(until), now)?;
        Ok(Some(DeliveryTarget { url, secrets, previous_until: until }))
    }

    /// How many times endpoints have changed (see `Backend::endpoint_changes_sql`); `None` where
    /// the database tells every instance itself (PostgreSQL's NOTIFY).
    pub async fn endpoint_changes(&self) -> anyhow::Result<Option<i64>> {
        let Some(sql) = self.backend.endpoint_changes_sql() else { return Ok(None) };
        Ok(Some(sqlx::query_scalar(sql).fetch_one(&self.pool).await?))
    }

    /// The secrets to sign with at `now`. An expired previous secret is not returned.
    pub async fn endpoint_secrets(&self, id: &EndpointId, now: i64) -> anyhow::Result<Option<SigningSecrets>> {
        type Row = (Vec<u8>, Option<Vec<u8>>, Option<i64>);
        let row: Option<Row> =
            sqlx::query_as("select secret, previous_secret, previous_until from endpoints where id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let Some((secret, previous, until)) = row else { return Ok(None) };
        self.open_secrets(id.as_str(), &secret, previous.zip(until), now).map(Some)
    }

    fn open_secrets(
        &self,
        id: &str,
        secret: &[u8],
        previous: Option<(Vec<u8>, i64)>,
        now: i64,
    ) -> anyhow::Result<SigningSecrets> {
        let current = self.keys.open_str(secret, aad(id, "secret"))?;
        let previous = match previous {
            Some((blob, until)) if now < until => Some(self.keys.open_str(&blob, aad(id, "previous_secret"))?),
            _ => None,
        };
        Ok(SigningSecrets { current, previous })
    }
    /// Note a test send's result as the endpoint's last result (what its page and `endpoints list`
    /// show), without touching its failure streak: a test is not a delivery, so it neither disables
    /// nor rescues an endpoint.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn record_test_result(
        &self,
        id: &EndpointId,
        delivered: bool,
        status: Option<u16>,
        now: i64,
    ) -> anyhow::Result<()> {
        let column = if delivered { "last_success_at" } else { "last_failure_at" };
        sqlx::query(&format!("update endpoints set {column} = $2, last_status = $3 where id = $1"))
            .bind(id.as_str())
            .bind(now)
            .bind(status.map(i64::from))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Enable or disable; false if there is no such endpoint. Enabling clears the failure streak,
    /// so a re-enabled endpoint gets the whole `ENDPOINT_DISABLE_AFTER` again; its waiting
    /// deliveries go out in their order.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id, enabled))]
    pub async fn set_endpoint_enabled(
        &self,
        id: &EndpointId,
        enabled: bool,
        reason: &str,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = if enabled {
            sqlx::query(
                "update endpoints set state = 'enabled', disabled_reason = null, disabled_at = null, \
                 failing_since = null, updated_at = $2 where id = $1",
            )
        } else {
            sqlx::query(
                "update endpoints set state = 'disabled', disabled_reason = $3, disabled_at = $2, updated_at = $2 \
                 where id = $1",
            )
        }
        .bind(id.as_str())
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            let action = if enabled { "endpoint_enable" } else { "endpoint_disable" };
            insert_audit(&mut tx, now, actor, action, None, &format!("{id} {reason}")).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Remove an endpoint and its deliveries; false if there is no such endpoint.
    pub async fn remove_endpoint(&self, id: &EndpointId, now: i64, actor: &str) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("delete from endpoints where id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        if n.rows_affected() == 1 {
            insert_audit(&mut tx, now, actor, "endpoint_remove", None, id.as_str()).await?;
        }
        tx.commit().await?;
        Ok(n.rows_affected() == 1)
    }

    /// A new current secret; the old one keeps signing too until `previous_until` (none with a
    /// zero overlap). False if there is no such endpoint.
    pub async fn rotate_endpoint_secret(
        &self,
        id: &EndpointId,
        new_secret: &SecretString,
        previous_until: i64,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let old: Option<Vec<u8>> = sqlx::query_scalar("select secret from endpoints where id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(old) = old else { return Ok(false) };
        let previous = self.keys.open(&old, aad(id.as_str(), "secret"))?;
        let previous = (previous_until > now).then(|| self.keys.seal(&previous, aad(id.as_str(), "previous_secret")));
        sqlx::query(
            "update endpoints set secret = $2, previous_secret = $3, previous_until = $4, updated_at = $5 where id = $1",
        )
        .bind(id.as_str())
        .bind(self.keys.seal_str(new_secret, aad(id.as_str(), "secret")))
        .bind(previous)
        .bind((previous_until > now).then_some(previous_until))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, now, actor, "endpoint_rotate_secret", None, id.as_str()).await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn set_types(tx: &mut Tx, id: &str, types: &EventTypes) -> Result<(), sqlx::Error> {
    sqlx::query("delete from endpoint_event_types where endpoint_id = $1").bind(id).execute(&mut **tx).await?;
    for t in types.as_slice() {
        sqlx::query("insert into endpoint_event_types (endpoint_id, event_type) values ($1, $2)")
            .bind(id)
            .bind(t)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn endpoint(r: EndpointRecord, types: Vec<String>) -> anyhow::Result<Endpoint> {
    Ok(Endpoint {
        id: EndpointId::parse(&r.id)?,
        url: r.url,
        description: r.description,
        event_types: EventTypes::from_stored(types),
        enabled: r.state == "enabled",
        disabled_reason: r.disabled_reason,
        disabled_at: r.disabled_at,
        failing_since: r.failing_since,
        last_success_at: r.last_success_at,
        last_failure_at: r.last_failure_at,
        last_status: r.last_status,
        previous_until: r.previous_until,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}
