//! `POST /token` — RFC 6749 §3.2: client credentials (§4.4), authorization
//! code (§4.1.3), refresh (§6), device code (RFC 8628 §3.4) and token
//! exchange (RFC 8693); and
//! `POST /device_authorization` (RFC 8628 §3.1). Grants not implemented
//! are `unsupported_grant_type` (ATTACKS ROB-15: an exhaustive match, never
//! "parsed but unsupported, so allowed").

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

use super::AppState;
use super::error::OAuthError;
use super::extract::authenticated_client;
use super::form::OAuthForm;
use super::server::PeerCertificates;
use crate::oauth::exchange::ExchangeRequest;
use crate::oauth::user_grants::CodeRequest;

#[utoipa::path(
    post, path = "/token", tag = "oauth",
    request_body(content = super::openapi::TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = []), ()),
    responses(
        (status = 200, description = "A token response (RFC 6749 §5.1), `Cache-Control: no-store`.", body = crate::oauth::TokenResponse),
    ),
)]
pub(super) async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    peer_certificates: Option<axum::Extension<PeerCertificates>>,
    form: OAuthForm,
) -> Result<Response, OAuthError> {
    let service = &state.inner.tokens;
    let now = state.inner.clock.now();
    let grant_type = form.required("grant_type")?;
    // Only token exchange names several targets (RFC 8693 §2.1); every
    // other grant makes a token for one resource (RFC 8707 §2).
    if grant_type != crate::oauth::clients::GrantType::TokenExchange.name()
        && (form.all("resource").len() > 1 || !form.all("audience").is_empty())
    {
        return Err(OAuthError::invalid_target(
            "one resource per token, and audience only with token exchange",
        ));
    }
    let client = authenticated_client(
        service,
        &headers,
        peer_certificates.as_ref().map(|e| &e.0),
        &form,
        "/token",
        now,
    )
    .await?;
    let source = Some(peer.ip().to_string());
    let response = match grant_type {
        "client_credentials" => {
            service
                .client_credentials(
                    &client,
                    form.get("scope"),
                    form.get("resource"),
                    source,
                    now,
                )
                .await?
        }
        "authorization_code" => {
            let code = form.required("code")?;
            service
                .authorization_code(
                    &client,
                    CodeRequest {
                        code,
                        redirect_uri: form.get("redirect_uri"),
                        code_verifier: form.get("code_verifier"),
                    },
                    source,
                    now,
                )
                .await?
        }
        "refresh_token" => {
            let token = form.required("refresh_token")?;
            service
                .refresh(&client, token, form.get("scope"), source, now)
                .await?
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            let device_code = form.required("device_code")?;
            service
                .device_code(&client, device_code, source, now)
                .await?
        }
        "urn:ietf:params:oauth:grant-type:token-exchange" => {
            let request = ExchangeRequest {
                subject_token: form.get("subject_token"),
                subject_token_type: form.get("subject_token_type"),
                actor_token: form.get("actor_token"),
                actor_token_type: form.get("actor_token_type"),
                requested_token_type: form.get("requested_token_type"),
                audience: form.all("audience"),
                resource: form.all("resource"),
                scope: form.get("scope"),
            };
            service
                .token_exchange(&client, &request, source, now)
                .await?
        }
        "password" => {
            // RFC 9700 §2.4: the resource owner password grant MUST NOT be used.
            return Err(OAuthError::unsupported_grant_type(
                "the password grant is not supported (RFC 9700 §2.4)",
            ));
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant type {grant_type} is not supported by this server yet"
            )));
        }
        other => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "unknown grant type {:?}",
                other.chars().take(64).collect::<String>()
            )));
        }
    };
    // RFC 6749 §5.1: no-store on every token response.
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(response),
    )
        .into_response())
}

/// `POST /device_authorization` (RFC 8628 §3.1–3.2). Public clients send
/// their `client_id` only; confidential ones authenticate as at `/token`.
#[utoipa::path(
    post, path = "/device_authorization", tag = "oauth",
    request_body(content = super::openapi::DeviceAuthorizationForm, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = []), ()),
    responses(
        (status = 200, description = "The device and user codes (RFC 8628 §3.2).", body = crate::oauth::device::DeviceAuthorization),
    ),
)]
pub(super) async fn device_authorization(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer_certificates: Option<axum::Extension<PeerCertificates>>,
    form: OAuthForm,
) -> Result<Response, OAuthError> {
    let service = &state.inner.tokens;
    let now = state.inner.clock.now();
    let client = authenticated_client(
        service,
        &headers,
        peer_certificates.as_ref().map(|e| &e.0),
        &form,
        "/device_authorization",
        now,
    )
    .await?;
    if form.all("resource").len() > 1 || !form.all("audience").is_empty() {
        return Err(OAuthError::invalid_target("one resource per token"));
    }
    let response = service
        .device_authorization(&client, form.get("scope"), form.get("resource"), now)
        .await?;
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(response),
    )
        .into_response())
}
