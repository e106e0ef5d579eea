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
