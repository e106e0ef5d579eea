//! Health: `GET /livez` says the process is up and answering (no store
//! access: a supervisor restarts a process that fails it, and restarting
//! does not help a database that is away); `GET /readyz` (also served as
//! `/healthz`) says the store completes a durable write round trip, 200 or
//! 503, so a load balancer takes a replica that lost its database out of
//! rotation until it is back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::store::StoreHealth;

/// The health answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    store: StoreHealth,
    ca: CaHealth,
}

/// The CA's expiry.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CaHealth {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    not_after: time::OffsetDateTime,
    expires_in_days: i64,
}

/// The liveness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Liveness {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
}

#[utoipa::path(
    get, path = "/livez", tag = "operations",
    responses(
        (status = 200, description = "The process is up and serving requests; the store is not consulted.", body = Liveness),
    ),
)]
pub(super) async fn livez(State(state): State<AppState>) -> Json<Liveness> {
    Json(Liveness {
        status: "alive",
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.inner.started.elapsed().as_secs(),
    })
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The store completed a durable write.", body = Health),
        (status = 503, description = "The store cannot make writes durable.", body = Health),
    ),
)]
pub(super) async fn readyz(state: State<AppState>) -> Response {
    healthz(state).await
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "The store completed a durable write.", body = Health),
        (status = 503, description = "The store cannot make writes durable.", body = Health),
    ),
)]
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    let app = &state.inner;
    let mut store = app.store.health().await;
    if let Some(detail) = store.error.take() {
        // The cause (paths, I/O errors) is for the operator's log, not for
        // whoever polls the endpoint (ATTACKS ROB-14).
        tracing::error!(%detail, "store health check failed");
        store.error = Some("the store cannot complete a durable write".into());
    }
    let now = app.clock.now();
    let not_after = app.engine.ca_certificate().not_after();
    let ok = store.ok;
    let body = Health {
        status: if ok { "ok" } else { "unavailable" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: app.started.elapsed().as_secs(),
        store,
        ca: CaHealth {
            not_after,
            expires_in_days: (not_after - now).whole_days(),
        },
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format. Open to loopback peers (a local
/// agent or `curl` on the host); from anywhere else the admin token is
/// required, since counts of tokens, certificates and refusals describe the
/// service's use.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format; open to loopback peers, elsewhere the admin token.", content_type = "text/plain", body = String),
    ),
)]
pub(super) async fn metrics(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    let admin = super::extract::bearer_token(&headers)
        .ok()
        .flatten()
        .is_some_and(|token| state.inner.admin.verify(token));
    if !peer.ip().is_loopback() && !admin {
        return super::error::Problem::unauthorized(
            "metrics are open to loopback peers; elsewhere send the admin token",
        )
        .into_response();
    }
    let Some(handle) = &state.inner.metrics else {
        return super::error::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "metrics are recorded by another server in this process",
        );
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
