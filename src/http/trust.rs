//! The CA certificate for relying parties: `GET /ca.pem` (PEM) and
//! `GET /trustroots/` (ESGF Online-CA format, see [`crate::pki::trustroots`]).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

/// Public and stable for hours: caches may keep it (the CA changes only on
/// rotation, which publishes the new root ahead of use).
const CACHEABLE: &str = "public, max-age=3600";

#[utoipa::path(
    get, path = "/ca.pem", tag = "discovery",
    responses((status = 200, description = "The issuing CA certificate.", content_type = "application/x-pem-file", body = String)),
)]
pub(super) async fn ca_pem(State(state): State<AppState>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, CACHEABLE),
        ],
        state.inner.engine.ca_certificate().pem().to_owned(),
    )
}

#[utoipa::path(
    get, path = "/trustroots/", tag = "discovery",
    responses((status = 200, description = "The CA in the ESGF Online-CA trustroots format.", content_type = "text/plain", body = String)),
)]
pub(super) async fn trustroots(State(state): State<AppState>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, CACHEABLE),
        ],
        state.inner.trustroots.clone(),
    )
}
