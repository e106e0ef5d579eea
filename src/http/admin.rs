//! Operator endpoints behind the admin token: `POST /admin/keys/rotate`
//! and `GET /admin/audit` (the audit log, oldest first, paged by sequence
//! number).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::Problem;
use super::extract::bearer_token;

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let token = bearer_token(headers)
        .map_err(|_| Problem::unauthorized("malformed Authorization header"))?
        .ok_or_else(|| Problem::unauthorized("the admin token is required"))?;
    if state.inner.admin.verify(token) {
        Ok(())
    } else {
        Err(Problem::unauthorized(
            "the bearer token is not the admin token",
        ))
    }
}

#[utoipa::path(
    post, path = "/admin/keys/rotate", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Rotated; the new key signs from now on.", body = super::openapi::RotatedKeys),
    ),
)]
pub(super) async fn rotate_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let now = state.inner.clock.now();
    state
        .inner
        .tokens
        .rotate_keys(true, "admin", now)
        .await
        .map_err(Problem::internal)?;
    Ok(Json(super::openapi::RotatedKeys {
        current_kid: state.inner.tokens.current_kid(),
    })
    .into_response())
}

/// Paging through the audit log.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Records after this sequence number (default 0: from the start).
    #[serde(default)]
    after: u64,
    /// How many at most (1 to 1000 for the log, to 10 000 for the export).
    limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/admin/audit", tag = "admin",
    params(AuditQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Audit records after `after`, oldest first.", body = Vec<crate::store::AuditRecord>),
    ),
)]
pub(super) async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let Query(query) = query.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let events = state
        .inner
        .store
        .audit_events(query.after, limit)
        .await
        .map_err(Problem::unavailable)?;
    Ok(Json(events).into_response())
}

/// `GET /admin/audit/verify`: checks the audit log's hash chain from the
/// first record to the last (`slcs audit verify`). Always 200; `intact`
/// says whether anything was found, `problems` where.
#[utoipa::path(
    get, path = "/admin/audit/verify", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The hash chain's check; always 200, `intact` says whether it holds.", body = super::openapi::AuditVerification),
    ),
)]
pub(super) async fn verify_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let report = crate::store::verify_audit(state.inner.store.as_ref())
        .await
        .map_err(Problem::unavailable)?;
    Ok(Json(super::openapi::AuditVerification {
        intact: report.is_intact(),
        report,
    })
    .into_response())
}

/// `GET /admin/audit/export?after=&limit=`: the audit log as JSON lines
/// (`application/x-ndjson`) for a SIEM, oldest first: `seq`, the chain's
/// `prev` and `hash` (hex; null for records from before the chain), and
/// `event` exactly as stored, so the export can be verified without slcs
/// (the hash is over those bytes; docs/security.md).
#[utoipa::path(
    get, path = "/admin/audit/export", tag = "admin",
    params(AuditQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "JSON lines: `seq`, `prev`, `hash`, `event`.", content_type = "application/x-ndjson", body = String),
    ),
)]
pub(super) async fn export_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    use crate::store::audit_chain::Entry;
    require_admin(&state, &headers)?;
    let Query(query) = query.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let stored = state
        .inner
        .store
        .audit_stored(query.after, limit)
        .await
        .map_err(Problem::unavailable)?;
    let mut body = Vec::new();
    for (seq, bytes) in &stored {
        let Some(entry) = Entry::parse(*seq, bytes) else {
            return Err(Problem::internal(format!(
                "audit record {seq} is unreadable: run `slcs audit verify`"
            )));
        };
        // The event is JSON already: written verbatim into the line.
        let (prev, hash) = entry.link.map_or_else(
            || ("null".to_owned(), "null".to_owned()),
            |(prev, hash)| {
                (
                    format!("\"{}\"", hex::encode(prev)),
                    format!("\"{}\"", hex::encode(hash)),
                )
            },
        );
        body.extend_from_slice(
            format!("{{\"seq\":{seq},\"prev\":{prev},\"hash\":{hash},\"event\":").as_bytes(),
        );
        body.extend_from_slice(&entry.event);
        body.extend_from_slice(b"}\n");
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response())
}

/// Why a certificate is revoked.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    /// At most 256 characters.
    reason: Option<String>,
}

/// `POST /admin/certificates/{serial}/revoke`: marks an issued certificate
/// revoked in the issuance log (`slcs cert revoke`).
#[utoipa::path(
    post, path = "/admin/certificates/{serial}/revoke", tag = "admin",
    params(("serial" = String, Path, description = "The serial, hex.")),
    request_body(content = Option<RevokeBody>, description = "Optional: why."),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Revoked (or already revoked): the certificate's status.", body = crate::certificate::CertificateStatus),
    ),
)]
pub(super) async fn revoke_certificate(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    serial: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    use crate::store::RevokeOutcome;
    require_admin(&state, &headers)?;
    let serial = super::extract::serial_from_path(serial)?;
    // An empty body is allowed: the reason is optional.
    let reason = match body {
        Ok(Json(body)) => body.reason,
        Err(axum::extract::rejection::JsonRejection::MissingJsonContentType(_)) => None,
        Err(e) => return Err(Problem::bad_request("invalid_request", e.body_text())),
    };
    let reason = reason.unwrap_or_else(|| "revoked by an administrator".into());
    if reason.chars().count() > 256 || reason.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "invalid_request",
            "reason: at most 256 characters, no control characters",
        ));
    }
    let now = state.inner.clock.now();
    let outcome = state
        .inner
        .certificates
        .revoke(&serial, &reason, "admin", Some(peer.ip().to_string()), now)
        .await
        .map_err(Problem::unavailable)?;
    let status = state
        .inner
        .certificates
        .status(&serial, now)
        .await
        .map_err(Problem::unavailable)?;
    match outcome {
        RevokeOutcome::NotIssued => Err(Problem::not_found(
            "no certificate with this serial was issued",
        )),
        RevokeOutcome::Revoked | RevokeOutcome::AlreadyRevoked => Ok(Json(status).into_response()),
    }
}

/// `POST /admin/grants/{grant_id}/revoke`: revokes every token of a grant
/// and the certificates issued from it (`slcs grant revoke`).
#[utoipa::path(
    post, path = "/admin/grants/{grant}/revoke", tag = "admin",
    params(("grant" = String, Path, description = "The grant id.")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every token of the grant revoked, with the certificates issued from them.", body = super::openapi::RevokedGrant),
    ),
)]
pub(super) async fn revoke_grant(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    grant: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let axum::extract::Path(grant) =
        grant.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    if grant.is_empty() || grant.len() > 128 || grant.chars().any(|c| c.is_control()) {
        return Err(Problem::bad_request(
            "invalid_request",
            "a grant id is 1 to 128 characters without control characters",
        ));
    }
    let now = state.inner.clock.now();
    let revoked = state
        .inner
        .tokens
        .revoke_grant(&grant, "admin", Some(peer.ip().to_string()), now)
        .await
        .map_err(Problem::unavailable)?;
    let serials: Vec<String> = revoked.iter().map(crate::store::Serial::to_hex).collect();
    Ok(Json(super::openapi::RevokedGrant {
        grant_id: grant,
        revoked_certificates: serials,
    })
    .into_response())
}

/// An account as the admin API shows it (never the password hash).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct UserView {
    sub: String,
    username: String,
    display_name: String,
    email: Option<String>,
    organisation: Option<String>,
    groups: Vec<String>,
    units: Vec<String>,
    guest: bool,
    disabled: bool,
    has_password: bool,
    admin: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: time::OffsetDateTime,
}

impl From<crate::users::User> for UserView {
    fn from(user: crate::users::User) -> Self {
        Self {
            has_password: user.password_hash.is_some(),
            admin: user.admin,
            sub: user.sub,
            username: user.username,
            display_name: user.display_name,
            email: user.email,
            organisation: user.organisation,
            groups: user.groups.into_iter().collect(),
            units: user.units.into_iter().collect(),
            guest: user.guest,
            disabled: user.disabled,
            created_at: user.created_at,
        }
    }
}

fn user_problem(error: crate::users::UserError) -> Problem {
    use crate::users::UserError;
    match error {
        UserError::Invalid(m) => Problem::bad_request("invalid_request", m),
        UserError::NotFound(_) => Problem::not_found(error.to_string()),
        UserError::Exists(_) => Problem::conflict(error.to_string()),
        UserError::Internal(m) => Problem::internal(m),
        UserError::Store(e) => Problem::unavailable(e),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("invalid_request", format!("invalid JSON body: {e}")))
}

/// `POST /admin/users`: creates a local account.
#[utoipa::path(
    post, path = "/admin/users", tag = "admin",
    request_body = crate::users::NewUser,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created.", body = UserView),
    ),
)]
pub(super) async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let new: crate::users::NewUser = json_body(&body)?;
    let now = state.inner.clock.now();
    let user = state
        .inner
        .users
        .create(new, "admin", now)
        .await
        .map_err(user_problem)?;
    Ok((axum::http::StatusCode::CREATED, Json(UserView::from(user))).into_response())
}

/// `GET /admin/users`.
#[utoipa::path(
    get, path = "/admin/users", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every local account.", body = Vec<UserView>),
    ),
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let users = state
        .inner
        .users
        .list()
        .await
        .map_err(Problem::unavailable)?;
    let views: Vec<UserView> = users.into_iter().map(UserView::from).collect();
    Ok(Json(views).into_response())
}

async fn set_disabled(
    state: &AppState,
    headers: &HeaderMap,
    username: &str,
    disabled: bool,
) -> Result<Response, Problem> {
    require_admin(state, headers)?;
    let now = state.inner.clock.now();
    let user = state
        .inner
        .users
        .set_disabled(username, disabled, "admin", now)
        .await
        .map_err(user_problem)?;
    Ok(Json(UserView::from(user)).into_response())
}

/// `POST /admin/users/{username}/disable`: the account can no longer sign
/// in, and every grant it made stops yielding tokens and certificates.
#[utoipa::path(
    post, path = "/admin/users/{username}/disable", tag = "admin",
    params(("username" = String, Path, description = "The login name.")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Disabled: sessions ended, grants stop yielding tokens.", body = UserView),
    ),
)]
pub(super) async fn disable_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(username): axum::extract::Path<String>,
) -> Result<Response, Problem> {
    set_disabled(&state, &headers, &username, true).await
}

/// `POST /admin/users/{username}/enable`.
#[utoipa::path(
    post, path = "/admin/users/{username}/enable", tag = "admin",
    params(("username" = String, Path, description = "The login name.")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Enabled.", body = UserView),
    ),
)]
pub(super) async fn enable_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(username): axum::extract::Path<String>,
) -> Result<Response, Problem> {
    set_disabled(&state, &headers, &username, false).await
}

/// A new password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordBody {
    /// The password (the policy's length and strength apply).
    password: String,
}

/// `PUT /admin/users/{username}/password`.
#[utoipa::path(
    put, path = "/admin/users/{username}/password", tag = "admin",
    params(("username" = String, Path, description = "The login name.")),
    request_body = PasswordBody,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Password set.", body = UserView),
    ),
)]
pub(super) async fn set_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(username): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let PasswordBody { password } = json_body(&body)?;
    let now = state.inner.clock.now();
    let user = state
        .inner
        .users
        .set_password(&username, password, "admin", now)
        .await
        .map_err(user_problem)?;
    Ok(Json(UserView::from(user)).into_response())
}

/// The administrator role, given or taken.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminRoleBody {
    /// Whether the account is an administrator.
    admin: bool,
}

/// `PUT /admin/users/{username}/admin` with `{"admin": true}`: makes the
/// account an administrator with a fresh TOTP secret, answered once here
/// as the secret and an `otpauth://` URI for an authenticator app;
/// `{"admin": false}` takes the role and the secret away
/// (`slcs user make-admin`, `slcs user remove-admin`).
#[utoipa::path(
    put, path = "/admin/users/{username}/admin", tag = "admin",
    params(("username" = String, Path, description = "The login name.")),
    request_body = AdminRoleBody,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Role changed; when granted, `totp` holds the second factor's secret, shown this once.", body = AdminView),
    ),
)]
pub(super) async fn set_admin(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(username): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    require_admin(&state, &headers)?;
    let AdminRoleBody { admin } = json_body(&body)?;
    let now = state.inner.clock.now();
    let user = state
        .inner
        .users
        .set_admin(&username, admin, "admin", now)
        .await
        .map_err(user_problem)?;
    let totp = user.totp.as_ref().map(|totp| {
        let issuer = &state.inner.tokens.config().issuer;
        TotpView {
            uri: otpauth_uri(issuer, &user.username, &totp.secret),
            secret: totp.secret.clone(),
        }
    });
    Ok(Json(AdminView {
        user: UserView::from(user),
        totp,
    })
    .into_response())
}

/// An account just made an administrator: its second factor's secret,
/// shown this once.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct AdminView {
    #[serde(flatten)]
    user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp: Option<TotpView>,
}

/// A TOTP secret (RFC 6238), shown once.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct TotpView {
    /// Base32.
    secret: String,
    /// The `otpauth://` URI for an authenticator app.
    uri: String,
}

/// The `otpauth://` URI an authenticator app imports (the Key URI Format
/// of Google Authenticator, which the other apps follow): the label is
/// `host:username`, the host being the issuer's (what the app lists the
/// entry under), and the parameters are the RFC 6238 defaults slcs uses.
fn otpauth_uri(issuer: &str, username: &str, secret: &str) -> String {
    use super::form::encode;
    use crate::users::totp::{DIGITS, STEP_SECS};
    let issuer = issuer
        .strip_prefix("https://")
        .unwrap_or(issuer)
        .trim_end_matches('/');
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        encode(issuer),
        encode(username),
        encode(issuer),
    )
}
