//! Who is calling `/api/v1`: the [`ApiCaller`] extractor checks `Authorization: Bearer <api key>`
//! and the key's rate limit, and says what the key's scope lets it do.

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use secrecy::{ExposeSecret, SecretString};

use super::{not_found, parse_id};
use crate::{
    auth::api_keys::{Caller, Verdict},
    domain::ConnectionId,
    error::{ApiError, AppError},
    state::AppState,
};

/// The application calling, identified by its API key.
pub struct ApiCaller(pub(super) Caller);

impl FromRequest for ApiCaller {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| SecretString::from(key.trim().to_owned()));
        let state = req.app_data::<web::Data<AppState>>().expect("app state is registered").clone();
        let address = crate::routes::client_address(req);
        Box::pin(async move {
            let Some(key) = presented.filter(|k| !k.expose_secret().is_empty()) else {
                return Err(ApiError(AppError::Unauthorized {
                    code: "missing_api_key",
                    message: "send an API key as `Authorization: Bearer <key>` (create one with `connect-hub api-key create`)".into(),
                })
                .into());
            };
            // The guessing limit is checked before the database is: an address already refused
            // for unknown keys costs no query.
            let guessing = || state.limits.api_guessing.peek(&address);
            let verdict = state
                .api_keys
                .verify_unless_refused(&key, guessing)
                .await
                .map_err(|e| ApiError(AppError::Internal(e)))?;
            let guessed = |wait| {
                state.metrics.rate_limited.inc("api_key_guessing");
                ApiError(crate::routes::too_many("rate_limited", "Too many requests with unknown API keys", wait))
            };
            match verdict {
                Verdict::Valid(caller) => match state.limits.api.check(&caller.key_id) {
                    Ok(()) => Ok(ApiCaller(caller)),
                    Err(wait) => {
                        state.metrics.rate_limited.inc("api");
                        Err(ApiError(crate::routes::too_many(
                            "rate_limited",
                            "This API key is over its rate limit",
                            wait,
                        ))
                        .into())
                    }
                },
                Verdict::NotLookedUp(wait) => Err(guessed(wait).into()),
                Verdict::Unknown => {
                    if let Err(wait) = state.limits.api_guessing.check(&address) {
                        return Err(guessed(wait).into());
                    }
                    Err(ApiError(AppError::Unauthorized {
                        code: "invalid_api_key",
                        message: "this API key is unknown or revoked".into(),
                    })
                    .into())
                }
            }
        })
    }
}

impl ApiCaller {
    pub(super) fn caller(&self) -> &Caller {
        &self.0
    }

    pub(super) fn actor(&self) -> String {
        format!("api:{}", self.0.name)
    }

    /// The connection, if this key may use it; one outside its scope is answered like an unknown
    /// one, so a limited key learns nothing about the others.
    pub(super) fn connection(&self, raw: &str) -> Result<ConnectionId, ApiError> {
        let id = parse_id(raw)?;
        if !self.0.may_use(&id) {
            return Err(not_found(raw));
        }
        Ok(id)
    }

    pub(super) fn check_may_refresh(&self) -> Result<(), ApiError> {
        if self.0.read_only {
            return Err(ApiError(AppError::Forbidden {
                code: "read_only_key",
                message: "this API key is read-only: it can get tokens but not force a refresh".into(),
            }));
        }
        Ok(())
    }
}
