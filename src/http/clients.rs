//! The client registration API, JSON-compatible with the EBRAINS OIDC client
//! API (seed 003): `POST/GET /rest/v1/oidc/clients`,
//! `GET/PUT /rest/v1/oidc/clients/{clientId}`,
//! `PUT/DELETE …/{clientId}/groups/{group}` and `…/units/{unitPath}`, plus
//! `PUT …/{clientId}/status` for administrators. Errors are RFC 9457 problem
//! documents carrying the RFC 7591 §3.2.2 code in `error`.
//!
//! Callers authenticate with `Authorization: Bearer`: the admin token, or an
//! access token issued by this server for this API (RFC 8707 resource
//! `<issuer>/rest/v1/oidc/clients`, scope `slcs:clients`), whose subject
//! becomes the owner of what it registers and may then manage only clients
//! it owns or maintains.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::Problem;
use super::extract::bearer_token;
use crate::oauth::clients::{ClientRepresentation, ClientStatus};
use crate::oauth::registry::{AccessChange, Caller, ClientView, Registry};
use crate::oauth::resource::Resource;

fn registry(state: &AppState) -> Registry<'_> {
    Registry {
        store: state.inner.store.as_ref(),
        pepper: state.inner.tokens.pepper(),
        development: state.inner.development,
    }
}

/// The caller, from the bearer token: the admin token or an access token
/// for this API.
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, Problem> {
    let token = bearer_token(headers)
        .map_err(|_| Problem::unauthorized("malformed Authorization header"))?
        .ok_or_else(|| Problem::unauthorized("a bearer token is required"))?;
    let source = Some(peer.ip().to_string());
    if state.inner.admin.verify(token) {
        return Ok(Caller {
            subject: "admin".into(),
            is_admin: true,
            source,
        });
    }
    let authorized = state
        .inner
        .tokens
        .authorize_bearer(
            token,
            Resource::ClientRegistration,
            None,
            state.inner.clock.now(),
        )
        .await?;
    if authorized.claims.subject_type == crate::oauth::jwt::SubjectType::User {
        let person = state
            .inner
            .tokens
            .users()
            .user(&authorized.claims.sub)
            .await
            .map_err(Problem::unavailable)?;
        crate::oauth::registry::person_may_register(
            person.as_ref(),
            &state.inner.tokens.config().registration_group,
        )?;
    }
    Ok(Caller {
        subject: authorized.claims.sub,
        is_admin: false,
        source,
    })
}

/// Path parameters are checked after the caller, so an anonymous request
/// learns nothing but 401; a bad one is a problem document, not plain text.
fn path_value(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(value)| value)
        .map_err(|e| Problem::bad_request("invalid_request", e.body_text()))
}

fn body(
    json: Result<Json<ClientRepresentation>, JsonRejection>,
) -> Result<ClientRepresentation, Problem> {
    json.map(|Json(rep)| rep)
        .map_err(|e| Problem::bad_request("invalid_client_metadata", e.body_text()))
}

/// The representation, with the new secret in `client.secret` when one was
/// just generated (shown this once).
fn view(status: StatusCode, view: ClientView) -> Response {
    let mut json = serde_json::to_value(&view.representation).unwrap_or_default();
    if let (Some(secret), Some(client)) = (&view.new_secret, json.get_mut("client"))
        && let Some(object) = client.as_object_mut()
    {
        object.insert(
            "secret".into(),
            serde_json::Value::String(secret.expose().to_owned()),
        );
    }
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(json),
    )
        .into_response()
}

#[utoipa::path(
    post, path = "/rest/v1/oidc/clients", tag = "registration",
    request_body = crate::oauth::clients::ClientRepresentation,
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 201, description = "Registered; `client.secret` holds the generated secret, shown this once.", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    json: Result<Json<ClientRepresentation>, JsonRejection>,
) -> Result<Response, Problem> {
    let caller = caller(&state, &headers, peer).await?;
    let rep = body(json)?;
    let now = state.inner.clock.now();
    let created = registry(&state).register(&caller, &rep, now).await?;
    Ok(view(StatusCode::CREATED, created))
}

#[utoipa::path(
    get, path = "/rest/v1/oidc/clients", tag = "registration",
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The clients the caller owns or maintains (all, for the admin token).", body = Vec<super::openapi::ClientSummary>),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = caller(&state, &headers, peer).await?;
    let clients = registry(&state).list(&caller).await?;
    let summaries: Vec<super::openapi::ClientSummary> = clients
        .iter()
        .map(|c| super::openapi::ClientSummary {
            client_id: c.id.as_str().to_owned(),
            name: c.name.clone(),
            kind: c.kind.name().to_owned(),
            status: c.status.name().to_owned(),
            owner: c.owner.clone(),
        })
        .collect();
    Ok(Json(summaries).into_response())
}

#[utoipa::path(
    get, path = "/rest/v1/oidc/clients/{id}", tag = "registration",
    params(("id" = String, Path, description = "The client id.")),
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The registration.", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn show(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let caller = caller(&state, &headers, peer).await?;
    let id = path_value(id)?;
    let rep = registry(&state).show(&caller, &id).await?;
    Ok(Json(rep).into_response())
}

#[derive(Deserialize)]
pub(super) struct ReplaceQuery {
    #[serde(default)]
    rotate_secret: bool,
}

#[utoipa::path(
    put, path = "/rest/v1/oidc/clients/{id}", tag = "registration",
    params(("id" = String, Path, description = "The client id."), ("rotate_secret" = Option<bool>, Query, description = "Generate a new secret.")),
    request_body = crate::oauth::clients::ClientRepresentation,
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "Updated; with `rotate_secret=true`, `client.secret` holds the new secret.", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn replace(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ReplaceQuery>, QueryRejection>,
    json: Result<Json<ClientRepresentation>, JsonRejection>,
) -> Result<Response, Problem> {
    let caller = caller(&state, &headers, peer).await?;
    let id = path_value(id)?;
    let Query(query) = query.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let rep = body(json)?;
    let now = state.inner.clock.now();
    let updated = registry(&state)
        .replace(&caller, &id, &rep, query.rotate_secret, now)
        .await?;
    Ok(view(StatusCode::OK, updated))
}

/// A status change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusChange {
    /// `active`, `suspended` or `pending`.
    status: String,
    /// Why (kept in the audit log).
    reason: Option<String>,
}

#[utoipa::path(
    put, path = "/rest/v1/oidc/clients/{id}/status", tag = "registration",
    params(("id" = String, Path, description = "The client id.")),
    request_body = StatusChange,
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The registration with its new status (administrators only).", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn set_status(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    json: Result<Json<StatusChange>, JsonRejection>,
) -> Result<Response, Problem> {
    let caller = caller(&state, &headers, peer).await?;
    let id = path_value(id)?;
    let Json(change) = json.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let status = match change.status.as_str() {
        "active" => ClientStatus::Active,
        "suspended" => ClientStatus::Suspended,
        "pending" => ClientStatus::Pending,
        other => {
            return Err(Problem::bad_request(
                "invalid_request",
                format!("status must be active, suspended or pending, not {other:?}"),
            ));
        }
    };
    let now = state.inner.clock.now();
    let rep = registry(&state)
        .set_status(&caller, &id, status, change.reason.as_deref(), now)
        .await?;
    Ok(Json(rep).into_response())
}

async fn access(
    state: AppState,
    headers: HeaderMap,
    peer: SocketAddr,
    path: Result<Path<(String, String)>, PathRejection>,
    change: AccessChange,
) -> Result<Response, Problem> {
    let caller = caller(&state, &headers, peer).await?;
    let Path((id, name)) =
        path.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let now = state.inner.clock.now();
    let rep = registry(&state)
        .change_access(&caller, &id, change, &name, now)
        .await?;
    Ok(Json(rep).into_response())
}

#[utoipa::path(
    put, path = "/rest/v1/oidc/clients/{id}/groups/{group}", tag = "registration",
    params(("id" = String, Path, description = "The client id."), ("group" = String, Path, description = "The group.")),
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The registration with its access list changed.", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn grant_group(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    access(state, headers, peer, path, AccessChange::GrantGroup).await
}

#[utoipa::path(
    delete, path = "/rest/v1/oidc/clients/{id}/groups/{group}", tag = "registration",
    params(("id" = String, Path, description = "The client id."), ("group" = String, Path, description = "The group.")),
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The registration with its access list changed.", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn revoke_group(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    access(state, headers, peer, path, AccessChange::RevokeGroup).await
}

#[utoipa::path(
    put, path = "/rest/v1/oidc/clients/{id}/units/{unit}", tag = "registration",
    params(("id" = String, Path, description = "The client id."), ("unit" = String, Path, description = "The unit.")),
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The registration with its access list changed.", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn grant_unit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    access(state, headers, peer, path, AccessChange::GrantUnit).await
}

#[utoipa::path(
    delete, path = "/rest/v1/oidc/clients/{id}/units/{unit}", tag = "registration",
    params(("id" = String, Path, description = "The client id."), ("unit" = String, Path, description = "The unit.")),
    security(("admin_token" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The registration with its access list changed.", body = crate::oauth::clients::ClientRepresentation),
    ),
)]
pub(super) async fn revoke_unit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    access(state, headers, peer, path, AccessChange::RevokeUnit).await
}
