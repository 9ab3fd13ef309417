//! Linking SnapInspect companies: the callback's link (a new connection, or the company's existing one
//! with its tokens replaced, same id and history), and giving an unidentified connection its company.

// Either way the company's waiting events are queued in the same transaction.

use secrecy::SecretString;

use super::{
    audit::insert_audit,
    connections::{aad, fingerprint},
    is_unique_violation, Store,
};
use crate::{
    domain::connect_session::EndUser,
    domain::{CompanyId, ConnectionId, ConnectionStatus},
};

/// What the connect callback hands the store once SnapInspect has redirected back.
pub struct NewSnapInspectLink {
    pub company_id: Option<CompanyId>,
    pub name: String,
    pub user_info: Option<String>,
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    /// The end user a connect session named; `None` leaves an existing connection's as it was.
    pub end_user: Option<EndUser>,
}

/// Why a link's completion changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// The connection is gone (or is not a SnapInspect connection).
    ConnectionGone,
    /// SnapInspect connected a different company than the connection's.
    CompanyMismatch,
    /// A connect session's end user connected a company whose connection belongs to another end
    /// user (or to none): an end user's flow never changes whom a connection belongs to.
    CompanyAlreadyConnected,
}

/// The outcome of linking: which connection, and whether it already existed.
#[derive(Debug, Clone)]
pub struct SavedLink {
    pub id: ConnectionId,
    pub reconnected: bool,
    /// Events that waited for this company and are now queued.
    pub matched_events: u64,
}

/// Why a company cannot be assigned to an unidentified connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignRefusal {
    #[error("no such connection")]
    NotFound,
    #[error("only an unidentified SnapInspect connection can be assigned a company")]
    NotUnidentified,
    #[error("SnapInspect company {company} already has connection {existing}; disconnect that one first if this one replaces it")]
    CompanyTaken { company: CompanyId, existing: String },
}

impl Store {
    /// Link a SnapInspect company: a new row, or the company's existing row with its tokens
    /// replaced (same id, same history). Without a company, always a new `unidentified` row.
    /// Either way the pair is marked `callback_tokens_pending`: it travelled in a URL, so it is
    /// exchanged in the background as soon as possible. A link that names an end user takes an
    /// existing row only if that row is the same end user's; otherwise nothing changes.
    #[tracing::instrument(skip_all, fields(company_id = ?link.company_id))]
    pub async fn save_snapinspect_link(
        &self,
        link: &NewSnapInspectLink,
        now: i64,
    ) -> anyhow::Result<Result<SavedLink, LinkRefusal>> {
        // Two callbacks for the same company may race; the loser of the insert retries as an update.
        match self.try_save_link(link, now).await {
            Err(e) if e.downcast_ref::<sqlx::Error>().is_some_and(is_unique_violation) => {
                self.try_save_link(link, now).await
            }
            other => other,
        }
    }

    async fn try_save_link(
        &self,
        link: &NewSnapInspectLink,
        now: i64,
    ) -> anyhow::Result<Result<SavedLink, LinkRefusal>> {
        let mut tx = self.write_tx().await?;
        let existing: Option<(String, Option<String>)> = match link.company_id {
            Some(c) => {
                sqlx::query_as(
                    "select id, end_user_id from connections where provider = 'snapinspect' and company_id = $1",
                )
                .bind(c.get())
                .fetch_optional(&mut *tx)
                .await?
            }
            None => None,
        };
        let (id, reconnected) = match existing {
            Some((_, owner)) if link.end_user.as_ref().is_some_and(|u| owner.as_deref() != Some(u.id.as_str())) => {
                return Ok(Err(LinkRefusal::CompanyAlreadyConnected));
            }
            Some((id, _)) => (ConnectionId::parse(&id)?, true),
            None => (ConnectionId::generate(), false),
        };
        let before = super::connection_events::status_before(&mut tx, &id).await?;
        let access = self.keys.seal_str(&link.access_token, aad(id.as_str(), "access_token"));
        let refresh = self.keys.seal_str(&link.refresh_token, aad(id.as_str(), "refresh_token"));
        let status = if link.company_id.is_some() { ConnectionStatus::Active } else { ConnectionStatus::Unidentified };
        let fp = fingerprint(&link.access_token);
        if reconnected {
            update_tokens(&mut tx, &id, link, link.end_user.as_ref(), status, [access, refresh], &fp, now).await?;
        } else {
            sqlx::query(
                "insert into connections (id, provider, name, company_id, status, access_token, refresh_token, \
                 token_fingerprint, token_version, token_obtained_at, user_info, created_at, updated_at, connected_at, \
                 callback_tokens_pending, end_user_id, end_user_email, end_user_display_name, tags) \
                 values ($1, 'snapinspect', $2, $3, $4, $5, $6, $7, 1, $8, $9, $8, $8, $8, true, $10, $11, $12, $13)",
            )
            .bind(id.as_str())
            .bind(&link.name)
            .bind(link.company_id.map(CompanyId::get))
            .bind(status.as_str())
            .bind(access)
            .bind(refresh)
            .bind(fp)
            .bind(now)
            .bind(&link.user_info)
            .bind(link.end_user.as_ref().map(|u| &u.id))
            .bind(link.end_user.as_ref().and_then(|u| u.email.as_ref()))
            .bind(link.end_user.as_ref().and_then(|u| u.display_name.as_ref()))
            .bind(link.end_user.as_ref().and_then(|u| super::connect_sessions::tags_json(&u.tags)))
            .execute(&mut *tx)
            .await?;
        }
        let action = if reconnected { "reconnect" } else { "connect" };
        let detail = match link.company_id {
            Some(c) => format!("SnapInspect company {c} ({})", link.name),
            None => "SnapInspect did not say which company: waiting for an admin to assign it".to_owned(),
        };
        insert_audit(&mut tx, now, "end-user", action, Some(&id), &detail).await?;
        let matched_events = match link.company_id {
            Some(c) => super::events::match_unmatched(&mut tx, &id, c, now).await?,
            None => 0,
        };
        super::connection_events::announce_change(&mut tx, &id, before, now).await?;
        tx.commit().await?;
        Ok(Ok(SavedLink { id, reconnected, matched_events }))
    }

    /// Complete a reconnect link: new tokens for `target`, same id, end user and tags, status back
    /// to active; only if SnapInspect connected the same company. A refusal stores nothing (the
    /// other company's freshly issued tokens are dropped).
    #[tracing::instrument(skip_all, fields(connection_id = %target, company_id = ?link.company_id))]
    pub async fn reconnect_snapinspect_link(
        &self,
        target: &ConnectionId,
        link: &NewSnapInspectLink,
        now: i64,
    ) -> anyhow::Result<Result<SavedLink, LinkRefusal>> {
        let mut tx = self.write_tx().await?;
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("select provider, company_id from connections where id = $1")
                .bind(target.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((_, company)) = row.filter(|(provider, _)| provider == "snapinspect") else {
            return Ok(Err(LinkRefusal::ConnectionGone));
        };
        let Some(company) = company else {
            return Ok(Err(LinkRefusal::CompanyMismatch));
        };
        let Some(new_company) = link.company_id.filter(|c| c.get() == company) else {
            return Ok(Err(LinkRefusal::CompanyMismatch));
        };
        let before = super::connection_events::status_before(&mut tx, target).await?;
        let access = self.keys.seal_str(&link.access_token, aad(target.as_str(), "access_token"));
        let refresh = self.keys.seal_str(&link.refresh_token, aad(target.as_str(), "refresh_token"));
        let fp = fingerprint(&link.access_token);
        // The end user and tags stay as they were: a reconnect link repairs, it does not reassign.
        update_tokens(&mut tx, target, link, None, ConnectionStatus::Active, [access, refresh], &fp, now).await?;
        let detail = format!("SnapInspect company {new_company} ({}) through a reconnect link", link.name);
        insert_audit(&mut tx, now, "end-user", "reconnect", Some(target), &detail).await?;
        let matched_events = super::events::match_unmatched(&mut tx, target, new_company, now).await?;
        super::connection_events::announce_change(&mut tx, target, before, now).await?;
        tx.commit().await?;
        Ok(Ok(SavedLink { id: target.clone(), reconnected: true, matched_events }))
    }

    /// Give an unidentified SnapInspect connection its company; the company's waiting events are
    /// queued in the same transaction. Returns how many were.
    #[tracing::instrument(skip_all, fields(connection_id = %id, company_id = %company))]
    pub async fn assign_company(
        &self,
        id: &ConnectionId,
        company: CompanyId,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<Result<u64, AssignRefusal>> {
        let mut tx = self.write_tx().await?;
        let row: Option<(String, String)> = sqlx::query_as("select provider, status from connections where id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            None => return Ok(Err(AssignRefusal::NotFound)),
            Some((p, s)) if p != "snapinspect" || s != "unidentified" => {
                return Ok(Err(AssignRefusal::NotUnidentified))
            }
            Some(_) => {}
        }
        let existing: Option<String> =
            sqlx::query_scalar("select id from connections where provider = 'snapinspect' and company_id = $1")
                .bind(company.get())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(existing) = existing {
            return Ok(Err(AssignRefusal::CompanyTaken { company, existing }));
        }
        sqlx::query(
            "update connections set company_id = $2, status = 'active', name = $3, updated_at = $4 where id = $1",
        )
        .bind(id.as_str())
        .bind(company.get())
        .bind(format!("SnapInspect company {company}"))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, now, actor, "assign_company", Some(id), &format!("SnapInspect company {company}"))
            .await?;
        let matched = super::events::match_unmatched(&mut tx, id, company, now).await?;
        tx.commit().await?;
        Ok(Ok(matched))
    }

    /// Give a connection to an end user of the organisation's app: an admin's decision, audited,
    /// and the only way a connection changes hands. False if there is no such connection.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn assign_end_user(
        &self,
        id: &ConnectionId,
        user: &EndUser,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let before: Option<(Option<String>,)> = sqlx::query_as("select end_user_id from connections where id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((before,)) = before else { return Ok(false) };
        sqlx::query(
            "update connections set end_user_id = $2, end_user_email = $3, end_user_display_name = $4, tags = $5, \
             updated_at = $6 where id = $1",
        )
        .bind(id.as_str())
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(super::connect_sessions::tags_json(&user.tags))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let detail = match before {
            Some(b) => format!("end user {} (was {b})", user.id),
            None => format!("end user {} (had none)", user.id),
        };
        insert_audit(&mut tx, now, actor, "assign_end_user", Some(id), &detail).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A new token pair for an existing connection (same id, same history); the end user only
/// changes when the link names one.
#[allow(clippy::too_many_arguments)]
async fn update_tokens(
    tx: &mut super::Tx,
    id: &ConnectionId,
    link: &NewSnapInspectLink,
    user: Option<&EndUser>,
    status: ConnectionStatus,
    [access, refresh]: [Vec<u8>; 2],
    fp: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update connections set name = $2, status = $3, access_token = $4, refresh_token = $5, \
         token_fingerprint = $6, token_version = token_version + 1, token_obtained_at = $7, user_info = $8, \
         updated_at = $7, connected_at = $7, last_error = null, last_error_at = null, failure_count = 0, \
         retry_after = null, exchange_lease_until = null, exchange_lease_owner = null, \
         callback_tokens_pending = true, \
         end_user_id = coalesce($9, end_user_id), end_user_email = case when $9 is null then end_user_email else $10 end, \
         end_user_display_name = case when $9 is null then end_user_display_name else $11 end, \
         tags = case when $9 is null then tags else $12 end where id = $1",
    )
    .bind(id.as_str())
    .bind(&link.name)
    .bind(status.as_str())
    .bind(access)
    .bind(refresh)
    .bind(fp)
    .bind(now)
    .bind(&link.user_info)
    .bind(user.map(|u| &u.id))
    .bind(user.and_then(|u| u.email.as_ref()))
    .bind(user.and_then(|u| u.display_name.as_ref()))
    .bind(user.and_then(|u| super::connect_sessions::tags_json(&u.tags)))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
