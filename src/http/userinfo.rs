//! `GET|POST /userinfo` (OIDC Core §5.3): the claims a person's access
//! token releases, by its scope. The token comes in the `Authorization`
//! header only (RFC 6750 §2.1); failures carry the RFC 6750 challenge.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::Problem;
use super::extract::bearer_token;

#[utoipa::path(
    get, path = "/userinfo", tag = "oauth",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The claims the token's scope releases (OIDC Core §5.3).", body = Object),
    ),
)]
pub(super) async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let token = bearer_token(&headers)
        .map_err(|_| Problem::unauthorized("malformed Authorization header"))?
        .ok_or_else(|| Problem::unauthorized("an access token is required"))?;
    let now = state.inner.clock.now();
    let claims = state.inner.tokens.userinfo(token, now).await?;
    Ok(Json(claims).into_response())
}
