//! `POST /introspect` — RFC 7662. The caller must authenticate as a client
//! (§2.1: "To prevent token scanning attacks, the endpoint MUST also require
//! some form of authorization", ATTACKS IR-01); the answer for anything the
//! caller may not see is `{"active": false}`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::OAuthError;
use super::extract::authenticated_client;
use super::form::OAuthForm;
use super::server::PeerCertificates;

#[utoipa::path(
    post, path = "/introspect", tag = "oauth",
    request_body(content = super::openapi::TokenReference, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = [])),
    responses(
        (status = 200, description = "RFC 7662 §2.2: `{\"active\": false}` for anything the caller may not see.", body = crate::oauth::Introspection),
    ),
)]
pub(super) async fn introspect(
    State(state): State<AppState>,
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
        "/introspect",
        now,
    )
    .await?;
    // RFC 7662 §2.1: a public client (no credentials) may not introspect.
    if !caller.has_credentials() {
        return Err(OAuthError::invalid_client(
            "introspection requires client authentication",
            false,
        ));
    }
    let token = form.required("token")?;
    let answer = service.introspect(&caller, token, now).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}
