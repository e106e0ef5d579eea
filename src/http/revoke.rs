//! `POST /revoke` — RFC 7009. The caller authenticates; revoking a token
//! that is not ours, or is malformed, answers 200 (§2.2: the client cannot
//! learn whether a token was valid); `token_type_hint` is only a hint and
//! an unknown one is ignored (ATTACKS IR-05).

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

use super::AppState;
use super::error::OAuthError;
use super::extract::authenticated_client;
use super::form::OAuthForm;
use super::server::PeerCertificates;

#[utoipa::path(
    post, path = "/revoke", tag = "oauth",
    request_body(content = super::openapi::TokenReference, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = [])),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke (RFC 7009 §2.2)."),
    ),
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    peer_certificates: Option<axum::Extension<PeerCertificates>>,
    form: OAuthForm,
) -> Result<Response, OAuthError> {
    let service = &state.inner.tokens;
    let now = state.inner.clock.now();
    let caller = authenticated_client(
        service,
        &headers,
        peer_certificates.as_ref().map(|e| &e.0),
        &form,
        "/revoke",
        now,
    )
    .await?;
    let token = form.required("token")?;
    service
        .revoke(&caller, token, Some(peer.ip().to_string()), now)
        .await?;
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
}
