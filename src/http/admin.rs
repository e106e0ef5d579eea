//! Operator endpoints behind the admin token: `POST /admin/keys/rotate`
//! and `GET /admin/audit` (the audit log, oldest first, paged by sequence
//! number).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::Problem;
use super::extract::bearer_token;

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let token = bearer_token(headers)
        .map_err(|_| Problem::unauthorized("malformed Authorization header"))?
        .ok_or_else(|| Problem::unauthorized("the admin token is required"))?;
    if state.inner.admin.verify(token) {
        Ok(())
    } else {
        Err(Problem::unauthorized(
            "the bearer token is not the admin token",
        ))
    }
}

pub(super) async fn rotate_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let now = state.inner.clock.now();
    state
        .inner
        .tokens
        .rotate_keys(true, "admin", now)
        .await
        .map_err(Problem::internal)?;
    Ok(
        Json(serde_json::json!({ "current_kid": state.inner.tokens.current_kid() }))
            .into_response(),
    )
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

pub(super) async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let Query(query) = query.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let events = state
        .inner
        .store
        .audit_events(query.after, limit)
        .await
        .map_err(Problem::unavailable)?;
    Ok(Json(events).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    reason: Option<String>,
}

/// `POST /admin/certificates/{serial}/revoke`: marks an issued certificate
/// revoked in the issuance log (`slcs cert revoke`).
pub(super) async fn revoke_certificate(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    serial: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    use crate::store::RevokeOutcome;
    require_admin(&state, &headers)?;
    let serial = super::extract::serial_from_path(serial)?;
    // An empty body is allowed: the reason is optional.
    let reason = match body {
        Ok(Json(body)) => body.reason,
        Err(axum::extract::rejection::JsonRejection::MissingJsonContentType(_)) => None,
        Err(e) => return Err(Problem::bad_request("invalid_request", e.body_text())),
    };
    let reason = reason.unwrap_or_else(|| "revoked by an administrator".into());
    if reason.chars().count() > 256 || reason.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "invalid_request",
            "reason: at most 256 characters, no control characters",
        ));
    }
    let now = state.inner.clock.now();
    let outcome = state
        .inner
        .certificates
        .revoke(&serial, &reason, "admin", Some(peer.ip().to_string()), now)
        .await
        .map_err(Problem::unavailable)?;
    let status = state
        .inner
        .certificates
        .status(&serial, now)
        .await
        .map_err(Problem::unavailable)?;
    match outcome {
        RevokeOutcome::NotIssued => Err(Problem::not_found(
            "no certificate with this serial was issued",
        )),
        RevokeOutcome::Revoked | RevokeOutcome::AlreadyRevoked => Ok(Json(status).into_response()),
    }
}

/// `POST /admin/grants/{grant_id}/revoke`: revokes every token of a grant
/// and the certificates issued from it (`slcs grant revoke`).
pub(super) async fn revoke_grant(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    grant: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let axum::extract::Path(grant) =
        grant.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    if grant.is_empty() || grant.len() > 128 || grant.chars().any(|c| c.is_control()) {
        return Err(Problem::bad_request(
            "invalid_request",
            "a grant id is 1 to 128 characters without control characters",
        ));
    }
    let now = state.inner.clock.now();
    let revoked = state
        .inner
        .tokens
        .revoke_grant(&grant, "admin", Some(peer.ip().to_string()), now)
        .await
        .map_err(Problem::unavailable)?;
    let serials: Vec<String> = revoked.iter().map(crate::store::Serial::to_hex).collect();
    Ok(Json(serde_json::json!({
        "grant_id": grant,
        "revoked_certificates": serials,
    }))
    .into_response())
}
