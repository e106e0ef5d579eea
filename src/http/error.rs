//! The one mapping from failures to HTTP responses.
//!
//! Every error body is JSON `{"error": code, "error_description": text}` in
//! the style of RFC 6749 §5.2, so clients parse one shape everywhere.
//! Internal failures answer a generic `server_error` with the request id;
//! their detail goes to the log only (ATTACKS ROB-14).

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Errors a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such route.
    #[error("no such endpoint")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The store cannot make writes durable.
    #[error("storage unavailable: {0}")]
    StoreUnavailable(String),
}

/// An OAuth error (RFC 6749 §5.2), also the shape of the certificate
/// endpoints' RFC 6750 errors and of the limit layers' answers (408, 413,
/// 429, 503).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OAuthError)]
pub(super) struct ErrorBody<'a> {
    /// The RFC's code: `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `invalid_scope`, `invalid_token`, `too_many_requests`, …
    error: &'a str,
    /// What went wrong, for a person.
    error_description: &'a str,
}

/// A JSON error response.
pub fn error_response(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code,
            error_description: description,
        }),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::NotFound => {
                error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
            }
            Self::MethodNotAllowed => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "method not allowed on this endpoint",
            ),
            Self::StoreUnavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                // RFC 6749 §4.1.2.1 `temporarily_unavailable`: retry later.
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service cannot store data right now; retry later",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                response
            }
        }
    }
}

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Fallback for known paths with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Gives the bare 408 and 413 answers of the timeout and body-limit layers
/// the same JSON shape as every other error.
pub async fn normalize_layer_errors(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        StatusCode::REQUEST_TIMEOUT => error_response(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "the request was not completed in time",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        ),
        _ => response,
    }
}

/// An OAuth error response (RFC 6749 §5.2; RFC 7009 §2.2.1; RFC 7662 §2.3).
///
/// Token, introspection and revocation endpoints answer these as JSON with
/// `Cache-Control: no-store`; `invalid_client` is 401 and, when the client
/// tried HTTP Basic, carries `WWW-Authenticate: Basic` (RFC 6749 §5.2).
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }

    /// `invalid_request` (400).
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// `invalid_client` (401); `basic` when the client used HTTP Basic.
    pub fn invalid_client(description: impl Into<String>, basic: bool) -> Self {
        Self {
            basic_challenge: basic,
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
        }
    }

    /// `invalid_grant` (400).
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// `unauthorized_client` (400).
    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    /// `unsupported_grant_type` (400).
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    /// `invalid_scope` (400).
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// `invalid_target` (400, RFC 8707 §2): an invalid or unknown resource.
    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", description)
    }

    /// `unsupported_token_type` (400, RFC 7009 §2.2.1).
    pub fn unsupported_token_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            description,
        )
    }

    /// `server_error` (500); the detail goes to the log only.
    pub fn server_error(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }

    /// `temporarily_unavailable` (503); the detail goes to the log only.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "store unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service cannot store data right now; retry later",
        )
    }

    /// The OAuth error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable `error_description`.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status, self.code, &self.description);
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"slcs\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::unavailable(error)
    }
}

impl OAuthError {
    /// A failed client authentication: always `invalid_client` (RFC 6749
    /// §5.2) with one message, so the response does not say whether the id
    /// or the secret was wrong; `WWW-Authenticate: Basic` when Basic was used.
    pub fn from_client_auth(
        error: crate::oauth::client_auth::ClientAuthError,
        basic: bool,
    ) -> Self {
        use crate::oauth::client_auth::ClientAuthError;
        match error {
            ClientAuthError::Failed => Self::invalid_client("client authentication failed", basic),
            ClientAuthError::NotActive(state) => {
                Self::invalid_client(format!("the client is {state}"), basic)
            }
            ClientAuthError::Store(e) => Self::unavailable(e),
        }
    }
}

impl From<crate::oauth::GrantError> for OAuthError {
    fn from(error: crate::oauth::GrantError) -> Self {
        use crate::oauth::GrantError;
        match error {
            GrantError::UnauthorizedClient(m) => Self::unauthorized_client(m),
            GrantError::InvalidScope(m) => Self::invalid_scope(m),
            GrantError::InvalidTarget(m) => Self::invalid_target(m),
            GrantError::InvalidGrant(m) => Self::invalid_grant(m),
            GrantError::InvalidClient(m) => Self::invalid_client(m, false),
            GrantError::InvalidRequest(m) => Self::invalid_request(m),
            GrantError::AuthorizationPending => Self::new(
                StatusCode::BAD_REQUEST,
                "authorization_pending",
                "the person has not approved or denied the request yet",
            ),
            GrantError::SlowDown(interval) => Self::new(
                StatusCode::BAD_REQUEST,
                "slow_down",
                format!("polling too fast; wait {interval} seconds between requests"),
            ),
            GrantError::AccessDenied(m) => Self::new(StatusCode::BAD_REQUEST, "access_denied", m),
            GrantError::ExpiredToken => Self::new(
                StatusCode::BAD_REQUEST,
                "expired_token",
                "the device code has expired; start the device flow again",
            ),
            GrantError::Signing(e) => Self::server_error(e),
            GrantError::Store(e) => Self::unavailable(e),
        }
    }
}

impl From<crate::oauth::RevokeError> for OAuthError {
    fn from(error: crate::oauth::RevokeError) -> Self {
        use crate::oauth::RevokeError;
        match error {
            // RFC 7009 §2.1: refused, and the client told why.
            RevokeError::NotYours => Self::unauthorized_client(error.to_string()),
            RevokeError::Store(e) => Self::unavailable(e),
        }
    }
}

/// An RFC 9457 problem document, for the client registration API. `error`
/// carries the RFC 7591 §3.2.2 code (`invalid_redirect_uri`,
/// `invalid_client_metadata`) where one applies.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

/// An RFC 9457 problem document.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ProblemDocument)]
pub(super) struct ProblemBody<'a> {
    /// `urn:slcs:problem:<error>`.
    #[serde(rename = "type")]
    kind: String,
    /// The HTTP reason phrase.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for a person.
    detail: &'a str,
    /// The code: RFC 7591 §3.2.2 (`invalid_redirect_uri`,
    /// `invalid_client_metadata`), RFC 6750 (`invalid_token`,
    /// `insufficient_scope`), or `not_found`, `conflict`, `access_denied`.
    error: &'a str,
}

impl Problem {
    /// 400 with an RFC 7591 code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            detail: detail.into(),
        }
    }

    /// 401: no usable credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_token",
            detail: detail.into(),
        }
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::with(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::with(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 500; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::with(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }

    /// 503; the detail goes to the log only.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "store unavailable");
        Self::with(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service cannot store data right now; retry later",
        )
    }

    fn with(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = ProblemBody {
            kind: format!("urn:slcs:problem:{}", self.code),
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
            error: self.code,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"slcs\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<crate::oauth::resource::BearerError> for Problem {
    fn from(error: crate::oauth::resource::BearerError) -> Self {
        use crate::oauth::resource::BearerError;
        match error {
            BearerError::InvalidRequest(m) => Self::bad_request("invalid_request", m),
            BearerError::InvalidToken(m) => Self::unauthorized(m),
            // RFC 6750 §3.1: 403 for a token without the needed scope.
            e @ BearerError::InsufficientScope(_) => {
                Self::with(StatusCode::FORBIDDEN, "insufficient_scope", e.to_string())
            }
            BearerError::Store(e) => Self::unavailable(e),
        }
    }
}

impl From<crate::oauth::registry::RegistryError> for Problem {
    fn from(error: crate::oauth::registry::RegistryError) -> Self {
        use crate::oauth::registry::RegistryError;
        let detail = error.to_string();
        match error {
            RegistryError::Invalid(e) if e.is_permission_denied() => {
                Self::with(StatusCode::FORBIDDEN, "access_denied", detail)
            }
            RegistryError::Invalid(e) => {
                Self::with(StatusCode::BAD_REQUEST, e.oauth_error_code(), detail)
            }
            RegistryError::NotFound => Self::with(StatusCode::NOT_FOUND, "not_found", detail),
            RegistryError::Forbidden(_) => {
                Self::with(StatusCode::FORBIDDEN, "access_denied", detail)
            }
            RegistryError::Exists(_) => {
                Self::with(StatusCode::CONFLICT, "invalid_client_metadata", detail)
            }
            RegistryError::Conflict => Self::with(StatusCode::CONFLICT, "conflict", detail),
            RegistryError::Status(_) | RegistryError::Access(_) | RegistryError::Rotate(_) => {
                Self::with(StatusCode::BAD_REQUEST, "invalid_request", detail)
            }
            RegistryError::Secret(e) => {
                tracing::error!(error = %e, "secret generation failed");
                Self::with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the server could not complete the request",
                )
            }
            RegistryError::Store(e) => {
                tracing::error!(error = %e, "store unavailable");
                Self::with(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service cannot store data right now; retry later",
                )
            }
        }
    }
}

/// Why the certificate endpoint (or an alias) issued nothing.
#[derive(Debug)]
pub enum EndpointError {
    /// No access token at all (RFC 6750 §3.1: 401 without an error code in
    /// the challenge).
    NoToken,
    /// A malformed request: 400 `invalid_request`.
    InvalidRequest(String),
    /// A body of another media type: 415.
    UnsupportedMediaType(&'static str),
    /// The presenting client failed to authenticate.
    Client(OAuthError),
    /// The domain refused or failed.
    Certificate(crate::certificate::CertificateError),
}

impl From<OAuthError> for EndpointError {
    fn from(error: OAuthError) -> Self {
        Self::Client(error)
    }
}

impl From<crate::certificate::CertificateError> for EndpointError {
    fn from(error: crate::certificate::CertificateError) -> Self {
        Self::Certificate(error)
    }
}

/// An [`EndpointError`] answered in the way of the entry point it came
/// through (docs/api.md, "Certificate endpoint").
#[derive(Debug)]
pub struct CertificateFailure {
    /// Which entry point.
    pub dialect: super::certificate::Dialect,
    /// What went wrong.
    pub error: EndpointError,
}

/// One failure: status, code, description, challenge, retry-after.
struct Failure {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// RFC 6750 §3 challenge error code: `None` for "no token at all".
    challenge: Option<&'static str>,
    scope: Option<&'static str>,
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            challenge: None,
            scope: None,
            retry_after: None,
        }
    }
}

fn classify(error: EndpointError) -> Result<Failure, Box<Response>> {
    use crate::certificate::CertificateError as C;
    use crate::oauth::resource::BearerError as B;
    Ok(match error {
        EndpointError::NoToken => Failure::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "an access token is required (Authorization: Bearer)",
        ),
        EndpointError::InvalidRequest(d) => Failure {
            challenge: Some("invalid_request"),
            ..Failure::new(StatusCode::BAD_REQUEST, "invalid_request", d)
        },
        EndpointError::UnsupportedMediaType(d) => {
            Failure::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", d)
        }
        EndpointError::Client(e) => return Err(Box::new(e.into_response())),
        EndpointError::Certificate(e) => match e {
            C::Bearer(B::InvalidRequest(d)) => Failure {
                challenge: Some("invalid_request"),
                ..Failure::new(StatusCode::BAD_REQUEST, "invalid_request", d)
            },
            C::Bearer(B::InvalidToken(d)) => Failure {
                challenge: Some("invalid_token"),
                ..Failure::new(StatusCode::UNAUTHORIZED, "invalid_token", d)
            },
            C::Bearer(e @ B::InsufficientScope(scope)) => Failure {
                challenge: Some("insufficient_scope"),
                scope: Some(scope),
                ..Failure::new(StatusCode::FORBIDDEN, "insufficient_scope", e.to_string())
            },
            C::Bearer(B::Store(e)) | C::Store(e) => {
                return Err(Box::new(
                    ApiError::StoreUnavailable(e.to_string()).into_response(),
                ));
            }
            C::Forbidden(d) => Failure::new(StatusCode::FORBIDDEN, "access_denied", d),
            C::InvalidRequest(d) => Failure::new(StatusCode::BAD_REQUEST, "invalid_request", d),
            C::Refused(e) => {
                Failure::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
            }
            e @ C::QuotaExceeded {
                retry_after_secs, ..
            } => Failure {
                retry_after: Some(retry_after_secs),
                ..Failure::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    e.to_string(),
                )
            },
            C::Failed(crate::pki::issuer::IssueError::Store(e)) => {
                return Err(Box::new(
                    ApiError::StoreUnavailable(e.to_string()).into_response(),
                ));
            }
            C::Failed(e) => {
                tracing::error!(error = %e, "certificate issuance failed");
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the server could not issue the certificate",
                )
            }
        },
    })
}

impl IntoResponse for CertificateFailure {
    fn into_response(self) -> Response {
        use super::certificate::Dialect;
        let failure = match classify(self.error) {
            Ok(failure) => failure,
            Err(response) => return *response,
        };
        let mut response = match self.dialect {
            Dialect::Slcs | Dialect::Oa4mp => {
                error_response(failure.status, failure.code, &failure.description)
            }
            // django-oauth-toolkit answered 403 to every token problem, and
            // the ESGF server's errors were plain text.
            Dialect::Esgf => {
                let status = if failure.status == StatusCode::UNAUTHORIZED {
                    StatusCode::FORBIDDEN
                } else {
                    failure.status
                };
                (
                    status,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("{}\n", failure.description),
                )
                    .into_response()
            }
        };
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if self.dialect != Dialect::Esgf
            && matches!(
                failure.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
            )
            && (failure.challenge.is_some() || failure.status == StatusCode::UNAUTHORIZED)
        {
            // RFC 6750 §3: the challenge names the error; descriptions are
            // ours and never contain a quote.
            let mut challenge = String::from("Bearer realm=\"slcs\"");
            if let Some(code) = failure.challenge {
                challenge.push_str(&format!(", error=\"{code}\""));
                let description: String = failure
                    .description
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                    .collect();
                challenge.push_str(&format!(", error_description=\"{description}\""));
            }
            if let Some(scope) = failure.scope {
                challenge.push_str(&format!(", scope=\"{scope}\""));
            }
            if let Ok(value) = header::HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if let Some(seconds) = failure.retry_after
            && let Ok(value) = header::HeaderValue::from_str(&seconds.to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// Why a page (sign-in, consent, device, account) cannot be shown: an HTML
/// page that says what went wrong and what to do, never a stack trace.
#[derive(Debug)]
pub enum PageError {
    /// 400: a malformed or impossible request.
    BadRequest(String),
    /// 403: a form without a valid CSRF token, or a decision for a request
    /// this browser does not own (ATTACKS WEB-01).
    Forbidden(String),
    /// 403: a page this person may not use (the admin console for
    /// someone who is not an administrator).
    Denied(String),
    /// 404: nothing of this person's by that name (never says whether it
    /// exists for someone else).
    NotFound(String),
    /// 429: too many attempts; try again after `retry_after` seconds.
    TooMany {
        /// What to tell the person.
        message: String,
        /// Seconds.
        retry_after: u64,
    },
    /// 503: the store failed; the detail goes to the log.
    Unavailable(String),
}

impl From<crate::store::StoreError> for PageError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        use super::pages::message_page;
        match self {
            Self::BadRequest(message) => message_page(
                StatusCode::BAD_REQUEST,
                "This request cannot be completed",
                &message,
                &[],
                None,
            ),
            Self::Forbidden(message) => message_page(
                StatusCode::FORBIDDEN,
                "This form has expired",
                &message,
                &[],
                Some(("/account", "Go to your account")),
            ),
            Self::Denied(message) => message_page(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &message,
                &[],
                Some(("/account", "Go to your account")),
            ),
            Self::NotFound(message) => message_page(
                StatusCode::NOT_FOUND,
                "Not found",
                &message,
                &[],
                Some(("/account", "Go to your account")),
            ),
            Self::TooMany {
                message,
                retry_after,
            } => {
                let mut response = message_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts",
                    &message,
                    &[],
                    None,
                );
                if let Ok(value) = header::HeaderValue::from_str(&retry_after.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            Self::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                let mut response = message_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Temporarily unavailable",
                    "The service cannot store data right now. Try again in a minute.",
                    &[],
                    None,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                response
            }
        }
    }
}

impl From<crate::oauth::authorize::AuthorizeError> for PageError {
    fn from(error: crate::oauth::authorize::AuthorizeError) -> Self {
        use crate::oauth::authorize::AuthorizeError;
        match error {
            AuthorizeError::Page(message) => Self::BadRequest(message),
            AuthorizeError::Store(e) => Self::Unavailable(e.to_string()),
            // Redirects are answered by the handler; reaching here means a
            // handler forgot, and the safe answer is a page.
            AuthorizeError::Redirect { description, .. } => Self::BadRequest(description),
        }
    }
}
