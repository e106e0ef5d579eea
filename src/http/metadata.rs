//! Discovery: `/.well-known/openid-configuration` and
//! `/.well-known/oauth-authorization-server` (RFC 8414), `/jwks` (RFC 7517)
//! and `/.well-known/webfinger` (RFC 7033).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::error_response;
use crate::oauth::metadata::{WebFingerError, server_metadata, webfinger as answer};

/// Public and cacheable for a few minutes; key rotation pre-publishes the
/// next key long before use, so a cached set is never stale for a verifier.
const CACHEABLE: &str = "public, max-age=300";

#[utoipa::path(
    get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, description = "RFC 8414 metadata.", body = crate::oauth::metadata::ServerMetadata)),
)]
pub(super) async fn authorization_server(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, CACHEABLE)],
        Json(server_metadata(state.inner.tokens.config())),
    )
        .into_response()
}

/// The same metadata under the OIDC Discovery name.
#[utoipa::path(
    get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "OpenID Connect Discovery 1.0 §3 metadata (the RFC 8414 document).", body = crate::oauth::metadata::ServerMetadata)),
)]
pub(super) async fn openid_configuration(state: State<AppState>) -> Response {
    authorization_server(state).await
}

#[utoipa::path(
    get, path = "/jwks", tag = "discovery",
    responses((status = 200, description = "The token-signing public keys (RFC 7517 §5), the next key included ahead of use.", content_type = "application/jwk-set+json", body = Object)),
)]
pub(super) async fn jwks(State(state): State<AppState>) -> Response {
    let now = state.inner.clock.now();
    (
        [
            (header::CACHE_CONTROL, CACHEABLE),
            (header::CONTENT_TYPE, "application/jwk-set+json"),
        ],
        state.inner.tokens.jwks(now).to_string(),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct WebFingerQuery {
    resource: Option<String>,
}

#[utoipa::path(
    get, path = "/.well-known/webfinger", tag = "discovery",
    params(("resource" = Option<String>, Query, description = "An `acct:` or `https:` URI of this issuer.")),
    responses(
        (status = 200, description = "RFC 7033 JRD naming this issuer (OIDC Discovery §2).", content_type = "application/jrd+json", body = Object),
        (status = "4XX", description = "400 for a missing or malformed resource, 404 for one not served here.", body = super::error::ErrorBody),
    ),
)]
pub(super) async fn webfinger(
    State(state): State<AppState>,
    query: Result<Query<WebFingerQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.ok();
    let resource = query.as_ref().and_then(|q| q.resource.as_deref());
    match answer(state.inner.tokens.config(), resource) {
        Ok(jrd) => (
            [
                (header::CONTENT_TYPE, "application/jrd+json"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            serde_json::to_string(&jrd).unwrap_or_default(),
        )
            .into_response(),
        Err(error @ WebFingerError::BadResource) => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &error.to_string(),
        ),
        Err(error @ WebFingerError::NotHere) => {
            error_response(StatusCode::NOT_FOUND, "not_found", &error.to_string())
        }
    }
}
