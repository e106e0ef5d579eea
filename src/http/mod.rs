//! The HTTP edge: the TLS listener with its limits ([`server`]), the routes,
//! middleware, and the one error mapping ([`error`]).
//!
//! Handlers extract, call one domain function and return; they hold no
//! policy, crypto or storage logic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::certificate::CertificateService;
use crate::clock::Clock;
use crate::config::{CertificateConfig, UsersConfig};
use crate::oauth::TokenService;
use crate::oauth::admin::AdminToken;
use crate::pki::issuer::IssuanceEngine;
use crate::store::Store;
use crate::users::reset::ResetLinks;
use crate::users::session::Sessions;
use crate::users::{LocalUsers, LoginThrottle};

mod admin;
mod certificate;
mod clients;
pub mod error;
pub mod extract;
pub mod form;
mod health;
mod introspect;
pub mod limits;
mod metadata;
pub mod openapi;
pub mod pages;
mod revoke;
pub mod server;
mod token;
mod trust;
mod userinfo;

/// Everything handlers may use.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

struct AppInner {
    store: Arc<dyn Store>,
    engine: Arc<IssuanceEngine>,
    tokens: Arc<TokenService>,
    certificates: CertificateService,
    admin: AdminToken,
    development: bool,
    clock: Arc<dyn Clock>,
    trustroots: String,
    started: Instant,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    users: Arc<LocalUsers>,
    sessions: Sessions,
    login_throttle: LoginThrottle,
    device_throttle: LoginThrottle,
    /// Wrong second-factor codes, per account and per address.
    second_factor_throttle: LoginThrottle,
    resets: ResetLinks,
}

/// The people side of the application state.
#[derive(Debug)]
pub struct PeopleSetup {
    /// Local accounts.
    pub users: Arc<LocalUsers>,
    /// Their settings.
    pub config: UsersConfig,
}

impl AppState {
    /// Bundles the shared state. `trustroots` is rendered once at start;
    /// `development` allows loopback redirect URIs at registration.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<IssuanceEngine>,
        tokens: Arc<TokenService>,
        certificate_config: CertificateConfig,
        admin: AdminToken,
        development: bool,
        clock: Arc<dyn Clock>,
        trustroots: String,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        people: PeopleSetup,
    ) -> Self {
        let sessions = Sessions::new(
            Arc::clone(&store),
            tokens.pepper().clone(),
            time::Duration::try_from(people.config.session_lifetime)
                .unwrap_or(time::Duration::hours(8)),
            time::Duration::try_from(people.config.session_idle)
                .unwrap_or(time::Duration::minutes(30)),
        );
        let resets = ResetLinks::new(tokens.pepper().clone());
        let certificates = CertificateService::new(
            Arc::clone(&tokens),
            Arc::clone(&engine),
            Arc::clone(&store),
            certificate_config,
        );
        Self {
            inner: Arc::new(AppInner {
                certificates,
                store,
                engine,
                tokens,
                admin,
                development,
                clock,
                trustroots,
                started: Instant::now(),
                metrics,
                users: people.users,
                sessions,
                login_throttle: LoginThrottle::new(
                    people.config.login_free_failures_per_account,
                    people.config.login_free_failures_per_address,
                ),
                // Wrong user codes: 5 per code and 10 per address before
                // back-off (RFC 8628 §5.1).
                device_throttle: LoginThrottle::new(5, 10),
                // A six-digit code falls to about 330 000 guesses on
                // average (three codes are live at once): three free
                // tries, then the throttle's doubling back-off makes that
                // take years (RFC 6238 §5.2 asks for throttling).
                second_factor_throttle: LoginThrottle::new(3, 10),
                resets,
            }),
        }
    }
}

/// Per-request limits applied by the router.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Largest body.
    pub max_body_bytes: usize,
    /// Deadline for the whole request.
    pub request_timeout: Duration,
    /// Requests handled at once before load is shed.
    pub max_in_flight: usize,
    /// Per-address rate on the limited endpoints, per second (0: none).
    pub rate_per_address: u32,
    /// Per-client rate on the limited endpoints, per second (0: none).
    pub rate_per_client: u32,
}

/// The request id header, set on every response and logged with the request.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the application router.
pub fn build_app(state: AppState, limits: RequestLimits) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/livez", get(health::livez))
        .route("/metrics", get(health::metrics))
        .route("/ca.pem", get(trust::ca_pem))
        .route("/trustroots/", get(trust::trustroots))
        .route("/token", post(token::token))
        .route("/device_authorization", post(token::device_authorization))
        .route(
            "/authorize",
            get(pages::authorize::authorize).post(pages::authorize::authorize_post),
        )
        .route("/authorize/continue", get(pages::authorize::resume))
        .route("/authorize/consent", post(pages::authorize::consent))
        .route("/login", get(pages::login::page).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route(
            "/device",
            get(pages::device::page).post(pages::device::submit),
        )
        .route("/device/confirm", post(pages::device::confirm))
        .route("/account", get(pages::account::page))
        .route(
            "/account/certificates/{serial}",
            get(pages::account::certificate_pem),
        )
        .route(
            "/account/password",
            get(pages::security::password_page).post(pages::security::change_password),
        )
        .route(
            "/account/sessions/end-others",
            post(pages::security::end_other_sessions),
        )
        .route(
            "/account/approvals/{id}/revoke",
            get(pages::account::confirm_revoke).post(pages::account::revoke),
        )
        .route(
            "/account/approvals/{id}/edit",
            get(pages::approvals::edit_page).post(pages::approvals::edit),
        )
        .route(
            "/account/approvals/revoke-all",
            get(pages::approvals::revoke_all_page).post(pages::approvals::revoke_all),
        )
        .route(
            "/account/reset",
            get(pages::security::reset_page).post(pages::security::reset_password),
        )
        .route("/admin", get(pages::console::home))
        .route(
            "/admin/verify",
            get(pages::console::verify_page).post(pages::console::verify_submit),
        )
        .route("/admin/clients", get(pages::console::clients::list))
        .route("/admin/clients/{id}", get(pages::console::clients::show))
        .route(
            "/admin/clients/{id}/status",
            post(pages::console::clients::set_status),
        )
        .route("/admin/people", get(pages::console::people::list))
        .route(
            "/admin/people/{username}",
            get(pages::console::people::show).post(pages::console::people::act),
        )
        .route("/admin/issuances", get(pages::console::logs::issuances))
        .route("/admin/events", get(pages::console::logs::events))
        .route("/static/slcs.css", get(pages::stylesheet))
        .route(
            "/userinfo",
            get(userinfo::userinfo).post(userinfo::userinfo),
        )
        .route(
            "/admin/users",
            post(admin::create_user).get(admin::list_users),
        )
        .route("/admin/users/{username}/disable", post(admin::disable_user))
        .route("/admin/users/{username}/enable", post(admin::enable_user))
        .route("/admin/users/{username}/password", put(admin::set_password))
        .route("/admin/users/{username}/admin", put(admin::set_admin))
        .route("/certificate", post(certificate::slcs))
        .route("/oauth2/getcert", post(certificate::oa4mp))
        .route("/oauth/certificate/", post(certificate::esgf))
        .route("/certificate/status/{serial}", get(certificate::status))
        .route(
            "/admin/certificates/{serial}/revoke",
            post(admin::revoke_certificate),
        )
        .route("/admin/grants/{grant}/revoke", post(admin::revoke_grant))
        .route("/introspect", post(introspect::introspect))
        .route("/revoke", post(revoke::revoke))
        .route("/jwks", get(metadata::jwks))
        .route("/openapi.json", get(openapi::openapi_json))
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server),
        )
        .route(
            "/.well-known/openid-configuration",
            get(metadata::openid_configuration),
        )
        .route("/.well-known/webfinger", get(metadata::webfinger))
        .route(
            "/rest/v1/oidc/clients",
            post(clients::create).get(clients::list),
        )
        .route(
            "/rest/v1/oidc/clients/{id}",
            get(clients::show).put(clients::replace),
        )
        .route(
            "/rest/v1/oidc/clients/{id}/status",
            put(clients::set_status),
        )
        .route("/admin/keys/rotate", post(admin::rotate_keys))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/audit/verify", get(admin::verify_audit))
        .route("/admin/audit/export", get(admin::export_audit))
        .route(
            "/rest/v1/oidc/clients/{id}/groups/{group}",
            put(clients::grant_group).delete(clients::revoke_group),
        )
        .route(
            "/rest/v1/oidc/clients/{id}/units/{unit}",
            put(clients::grant_unit).delete(clients::revoke_unit),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        // Innermost, where the route template (MatchedPath) is known; the
        // 408 and 413 answered by the outer limit layers are not counted
        // here.
        .layer(middleware::from_fn(record_request))
        // Rate limits before any handler work, then load shedding: a
        // request over `max_in_flight` is refused at once, not queued.
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(limits::RateLimits::new(
                limits.rate_per_address,
                limits.rate_per_client,
            )),
            limits::rate_limit,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    limits::overloaded,
                ))
                .layer(tower::load_shed::LoadShedLayer::new())
                // One semaphore for every route: the router applies a
                // layer to each route separately.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    limits.max_in_flight,
                )),
        )
        // Each `.layer` wraps everything above it: the last one is outermost.
        // The 408 and 413 of the timeout and body-limit layers are turned
        // into JSON errors first, then every response gets the security
        // headers; the request id exists before the log line.
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(middleware::map_response(error::normalize_layer_errors))
        .layer(default_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(default_header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000",
        ))
        .layer(default_header(header::CACHE_CONTROL, "no-store"))
        .layer(default_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(default_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(default_header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .layer(TraceLayer::new_for_http().make_span_with(make_span))
        .layer(middleware::from_fn(request_id))
}

/// Sets a header unless the handler already chose one (e.g. a cacheable
/// `/ca.pem` keeps its own Cache-Control).
fn default_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

#[derive(Clone, Debug)]
struct RequestId(String);

async fn request_id(mut request: Request, next: Next) -> Response {
    let mut bytes = [0u8; 8];
    // A failed draw only weakens log correlation, never security.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    let id = hex::encode(bytes);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Counts the request and its latency under its route template (never the
/// raw path: a client must not be able to mint new series).
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        crate::observability::HTTP_REQUESTS,
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!(crate::observability::HTTP_DURATION, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn make_span(request: &Request) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.as_str())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}
