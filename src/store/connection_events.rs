//! Connection events (`connection.created`, `.needs_reconnect`, `.recovered`, `.disconnected`), raised
//! in the transaction that changes the status (read before, announced after): exactly when it commits.

use serde_json::json;

use super::{
    deliveries::{insert_operational, OperationalEvent},
    Tx,
};
use crate::domain::ConnectionId;

/// The connection's status now (call before changing it).
pub(super) async fn status_before(tx: &mut Tx, id: &ConnectionId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select status from connections where id = $1").bind(id.as_str()).fetch_optional(&mut **tx).await
}

/// Which event a status change is, if any.
pub(super) fn event_for(before: Option<&str>, after: &str) -> Option<&'static str> {
    match (before, after) {
        (Some(b), a) if b == a => None,
        (None, _) => Some("connection.created"),
        (_, "needs_reconnect") => Some("connection.needs_reconnect"),
        (_, "disconnected") => Some("connection.disconnected"),
        (Some("needs_reconnect" | "failing" | "disconnected"), "active") => Some("connection.recovered"),
        _ => None,
    }
}

/// Raise the event for the change from `before` to the connection's status now (if it is one).
pub(super) async fn announce_change(
    tx: &mut Tx,
    id: &ConnectionId,
    before: Option<String>,
    now: i64,
) -> Result<(), sqlx::Error> {
    type Row = (String, String, Option<i64>, String, Option<String>, Option<String>, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "select provider, name, company_id, status, last_error, end_user_id, tags from connections where id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((provider, name, company, status, last_error, end_user_id, tags)) = row else { return Ok(()) };
    // Tags were stored as a JSON object of strings by this program; anything else reads as none.
    let tags: serde_json::Value =
        tags.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| serde_json::json!({}));
    let Some(kind) = event_for(before.as_deref(), &status) else { return Ok(()) };
    let reason = (kind == "connection.needs_reconnect").then_some(last_error).flatten();
    let event = OperationalEvent {
        kind,
        data: json!({
            "connection_id": id.as_str(),
            "provider": provider,
            "company_id": company,
            "name": name,
            "status": status,
            "previous_status": before,
            "reason": reason,
            "end_user_id": end_user_id,
            "tags": tags,
        }),
        connection_id: Some(id.as_str().to_owned()),
        company_id: company,
    };
    insert_operational(tx, &event, now, None).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::event_for;

    #[test]
    fn status_changes_map_to_their_events() {
        assert_eq!(event_for(None, "active"), Some("connection.created"));
        assert_eq!(event_for(None, "unidentified"), Some("connection.created"));
        assert_eq!(event_for(Some("active"), "needs_reconnect"), Some("connection.needs_reconnect"));
        assert_eq!(event_for(Some("needs_reconnect"), "needs_reconnect"), None, "no repeat");
        assert_eq!(event_for(Some("needs_reconnect"), "active"), Some("connection.recovered"));
        assert_eq!(event_for(Some("failing"), "active"), Some("connection.recovered"));
        assert_eq!(event_for(Some("disconnected"), "active"), Some("connection.recovered"));
        assert_eq!(event_for(Some("active"), "disconnected"), Some("connection.disconnected"));
        assert_eq!(event_for(Some("active"), "active"), None);
        assert_eq!(event_for(Some("unidentified"), "active"), None, "assigning a company is not a recovery");
        assert_eq!(event_for(Some("active"), "failing"), None);
    }
}
