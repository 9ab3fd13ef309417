//! SnapInspect 3, as its published document describes it: the SnapInspect Connect redirect flow,
//! the ExchangeToken endpoint, and the API (`/user`, inspections).

pub mod client;
pub mod connect;
pub mod webhook;

pub use client::{ApiCallError, ExchangeError, ExchangedTokens, SnapInspectClient, UserInfo};

use serde_json::Value;

use crate::domain::{text::without_nul, CompanyId};

/// Which company a `/user` body belongs to, read tolerantly: nothing public documents that body, so
/// we look for `iCompanyID` at the top level and then one object down (e.g. `{"oCompany": {...}}`),
/// and take a company name from beside it if there is one.
pub fn identify(user: &Value) -> (Option<CompanyId>, Option<String>) {
    let name_in = |obj: &serde_json::Map<String, Value>| {
        ["sCompanyName", "sCompany", "sName", "name"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str))
            .map(|s| without_nul(&s.trim().chars().take(200).collect::<String>()).into_owned())
            .filter(|s| !s.is_empty())
    };
    let Some(top) = user.as_object() else {
        return (None, None);
    };
    if let Some(id) = top.get("iCompanyID").and_then(CompanyId::from_json) {
        let name = top.get("sCompanyName").and_then(Value::as_str).map(|s| without_nul(s).into_owned());
        return (Some(id), name);
    }
    for value in top.values() {
        if let Some(inner) = value.as_object() {
            if let Some(id) = inner.get("iCompanyID").and_then(CompanyId::from_json) {
                return (Some(id), name_in(inner));
            }
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn company_is_found_at_the_top_or_one_object_down() {
        let (id, _) = identify(&json!({"iUserID": 1, "iCompanyID": 6847}));
        assert_eq!(id.unwrap().get(), 6847);
        let (id, name) = identify(&json!({"oUser": {"iUserID": 1}, "oCompany": {"iCompanyID": "42", "sName": "Acme"}}));
        assert_eq!(id.unwrap().get(), 42);
        assert_eq!(name.as_deref(), Some("Acme"));
    }

    #[test]
    fn no_company_anywhere_means_unidentified() {
        assert_eq!(identify(&json!({"iUserID": 1, "oDeep": {"oDeeper": {"iCompanyID": 5}}})).0, None);
        assert_eq!(identify(&json!([1, 2])).0, None);
        assert_eq!(identify(&json!({"iCompanyID": -3})).0, None);
    }
}
