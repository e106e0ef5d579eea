//! The admin console, `/admin`: for accounts with the administrator role,
//! after a second factor (TOTP, RFC 6238) in the same session.
//!
//! - `GET|POST /admin/verify`: the second factor;
//! - `GET /admin`: the service at a glance: pending clients, the CA and
//!   signing keys with their expiry warnings, the store, version, uptime
//!   and counts ([`home`]);
//! - clients ([`clients`]), people ([`people`]), the issuance and audit
//!   logs ([`logs`]).
//!
//! Every page passes [`administrator`] and every form
//! [`administrator_posting`]: signed in, still an administrator (the role
//! is read from the store on each request, so taking it away takes effect
//! at once), second factor proved within [`SECOND_FACTOR_MAX_AGE`], and
//! for forms the session's CSRF token. Whatever an administrator does goes
//! to the audit log under `user:<sub>`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::{
    Continue, PageForm, audit_own, date, refuse_while_throttled, render, require_csrf, see_other,
    session_of, set_cookie, source,
};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::store::AuditEvent;
use crate::users::session::Session;
use crate::users::{SecondFactorError, User, UserSource as _};

pub(crate) mod clients;
pub(crate) mod logs;
pub(crate) mod people;

/// How long a proved second factor opens the console; the session's own
/// idle and absolute timeouts apply as well, whichever ends first.
pub(crate) const SECOND_FACTOR_MAX_AGE: time::Duration = time::Duration::hours(8);

/// When the CA certificate or a signing key's end is this near, the
/// console warns.
const EXPIRY_WARNING: time::Duration = time::Duration::days(30);

/// A signed-in administrator who proved the second factor.
pub(crate) struct Administrator {
    /// The session cookie value (CSRF tokens are bound to it).
    pub(crate) value: String,
    /// The account, as stored now.
    pub(crate) user: User,
}

impl Administrator {
    /// The audit actor.
    pub(crate) fn actor(&self) -> String {
        format!("user:{}", self.user.sub)
    }

    /// The CSRF token for the console's forms.
    pub(crate) fn csrf_token(&self, state: &AppState) -> String {
        state.inner.sessions.csrf_token(&self.value)
    }
}

/// What stands between a browser and the console.
enum Gate {
    /// Through.
    Open(Administrator),
    /// Not signed in: to the login page, back here afterwards.
    SignIn,
    /// Signed in as an administrator without a recent second factor.
    SecondFactor(String, Session, User),
}

async fn gate(state: &AppState, headers: &HeaderMap) -> Result<Gate, PageError> {
    let Some((value, session)) = session_of(state, headers).await? else {
        return Ok(Gate::SignIn);
    };
    let user = state
        .inner
        .users
        .user(&session.sub)
        .await?
        .filter(|user| user.admin && !user.disabled && user.totp.is_some())
        .ok_or_else(|| {
            PageError::Denied(
                "The admin console is for administrators. Your account is not one; sign in with an administrator's account, or ask one to act for you.".into(),
            )
        })?;
    let now = state.inner.clock.now();
    let proved = session
        .second_factor_at
        .is_some_and(|at| now - at < SECOND_FACTOR_MAX_AGE);
    if proved {
        Ok(Gate::Open(Administrator { value, user }))
    } else {
        Ok(Gate::SecondFactor(value, session, user))
    }
}

/// The administrator viewing a console page, as an extractor: a browser
/// that is not one is answered instead (to the sign-in page, to the second
/// factor, or a page saying no).
impl axum::extract::FromRequestParts<AppState> for Administrator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        use axum::response::IntoResponse as _;
        match gate(state, &parts.headers).await {
            Ok(Gate::Open(admin)) => Ok(admin),
            Ok(Gate::SignIn) => Err(see_other(&Continue::Admin.login_path())),
            Ok(Gate::SecondFactor(..)) => Err(see_other("/admin/verify")),
            Err(refused) => Err(refused.into_response()),
        }
    }
}

/// A console search's query, or the page saying it could not be read.
pub(crate) fn search_of<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, PageError> {
    query
        .map(|axum::extract::Query(search)| search)
        .map_err(|_| PageError::BadRequest("The search could not be read.".into()))
}

/// The administrator posting a console form, checked for the session's
/// CSRF token; `nothing_done` says what a refusal left undone. A form is
/// never redirected: a session that lost its second factor meanwhile is
/// refused, and the administrator starts over from the page.
pub(crate) async fn administrator_posting(
    state: &AppState,
    headers: &HeaderMap,
    form: &crate::http::form::OAuthForm,
    nothing_done: &str,
) -> Result<Administrator, PageError> {
    match gate(state, headers).await? {
        Gate::Open(admin) => {
            require_csrf(
                state,
                &admin.value,
                form,
                &format!("This form was not sent by this site. {nothing_done}"),
            )?;
            Ok(admin)
        }
        Gate::SignIn | Gate::SecondFactor(..) => Err(PageError::Forbidden(format!(
            "Your administrator session has ended or needs the second factor again. {nothing_done} Open the console again."
        ))),
    }
}

/// Appends an administrator's action to the audit log (durable before
/// the page says it is done).
pub(crate) async fn audit(
    state: &AppState,
    admin: &Administrator,
    action: &str,
    target: String,
    address: String,
    detail: serde_json::Value,
    now: time::OffsetDateTime,
) -> Result<(), PageError> {
    state
        .inner
        .store
        .append_audit(&AuditEvent {
            at: now,
            actor: admin.actor(),
            action: action.to_owned(),
            target,
            source: Some(address),
            detail,
        })
        .await?;
    Ok(())
}

fn verify_form(state: &AppState, value: &str, status: StatusCode, error: Option<&str>) -> Response {
    render(
        status,
        "admin_verify.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(value),
            error => error,
        },
    )
}

/// `GET /admin/verify`.
pub(crate) async fn verify_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    match gate(&state, &headers).await? {
        Gate::SignIn => Ok(see_other(&Continue::Admin.login_path())),
        Gate::Open(_) => Ok(see_other("/admin")),
        Gate::SecondFactor(value, ..) => Ok(verify_form(&state, &value, StatusCode::OK, None)),
    }
}

/// `POST /admin/verify`: checks the code under its own throttle (per
/// account and per address), marks its step used, and records the second
/// factor in the session.
pub(crate) async fn verify_submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let (value, session, user) = match gate(&state, &headers).await? {
        Gate::SignIn => {
            return Err(PageError::Forbidden(
                "You are not signed in. Sign in and try again.".into(),
            ));
        }
        Gate::Open(_) => return Ok(see_other("/admin")),
        Gate::SecondFactor(value, session, user) => (value, session, user),
    };
    require_csrf(
        &state,
        &value,
        &form,
        "This form was not sent by this site. Open the console again.",
    )?;
    let address = source(&peer);
    let throttle = &state.inner.second_factor_throttle;
    refuse_while_throttled(throttle.wait(&user.username, &address, now), "wrong codes")?;
    let code = form.get("code").unwrap_or_default();
    match state
        .inner
        .users
        .verify_second_factor(&user.sub, code, now)
        .await
    {
        Ok(()) => throttle.succeeded(&user.username),
        Err(SecondFactorError::Refused(_) | SecondFactorError::NotEnrolled) => {
            throttle.failed(&user.username, &address, now);
            audit_own(
                &state,
                &user.sub,
                "user.second_factor.refuse",
                address,
                serde_json::Value::Null,
                now,
            )
            .await?;
            return Ok(verify_form(
                &state,
                &value,
                StatusCode::UNAUTHORIZED,
                Some(
                    "The code is wrong, or was used already. Wait for the next code and try again.",
                ),
            ));
        }
        Err(SecondFactorError::Store(e)) => return Err(e.into()),
    }
    let Some((new_value, elevated)) = state.inner.sessions.elevate(&session, now).await? else {
        return Err(PageError::Forbidden(
            "Your session ended meanwhile. Sign in again.".into(),
        ));
    };
    audit_own(
        &state,
        &user.sub,
        "user.second_factor",
        address,
        serde_json::json!({ "amr": elevated.amr }),
        now,
    )
    .await?;
    let mut response = see_other("/admin");
    response.headers_mut().append(
        axum::http::header::SET_COOKIE,
        set_cookie(
            super::SESSION_COOKIE,
            &new_value,
            Some((elevated.expires_at - now).whole_seconds()),
        ),
    );
    Ok(response)
}

#[derive(Serialize)]
struct Expiry {
    at: String,
    /// `ok`, `warn` (within [`EXPIRY_WARNING`]) or `expired`.
    level: &'static str,
    days_left: i64,
}

fn expiry(at: time::OffsetDateTime, now: time::OffsetDateTime) -> Expiry {
    Expiry {
        at: date(at),
        level: if at <= now {
            "expired"
        } else if at - now <= EXPIRY_WARNING {
            "warn"
        } else {
            "ok"
        },
        days_left: (at - now).whole_days(),
    }
}

#[derive(Serialize)]
struct KeyRow {
    kid: String,
    algorithm: &'static str,
    state: &'static str,
    created: String,
    activated: Option<String>,
    verify_until: Option<String>,
}

/// `GET /admin`: the service at a glance.
pub(crate) async fn home(
    State(state): State<AppState>,
    admin: Administrator,
) -> Result<Response, PageError> {
    let app = &state.inner;
    let now = app.clock.now();
    let store = app.store.health().await;
    if let Some(detail) = &store.error {
        tracing::error!(%detail, "store health check failed");
    }
    let clients = app.store.list_clients().await?;
    let count = |status: crate::oauth::clients::ClientStatus| {
        clients.iter().filter(|c| c.status == status).count()
    };
    use crate::oauth::clients::ClientStatus;
    let pending: Vec<clients::ClientRow> = clients
        .iter()
        .filter(|c| c.status == ClientStatus::Pending)
        .map(clients::ClientRow::of)
        .collect();
    let users = app.users.list().await?;
    let ca = app.engine.ca_certificate();
    let mut warnings = Vec::new();
    let ca_expiry = expiry(ca.not_after(), now);
    if ca_expiry.level != "ok" {
        warnings.push(format!(
            "The CA certificate ends on {} ({} days): prepare its successor and publish it in the trust roots before then.",
            ca_expiry.at, ca_expiry.days_left
        ));
    }
    let keys: Vec<KeyRow> = app
        .tokens
        .key_status()
        .into_iter()
        .map(|key| KeyRow {
            kid: key.kid,
            algorithm: key.algorithm,
            state: match key.state {
                crate::oauth::keys::KeyState::Current => "current",
                crate::oauth::keys::KeyState::Next => "next",
                crate::oauth::keys::KeyState::Retired => "retired",
            },
            created: date(key.created_at),
            activated: key.activated_at.map(date),
            verify_until: key.verify_until.map(date),
        })
        .collect();
    let rotation = app.tokens.rotation_due_at().map(|at| expiry(at, now));
    if let Some(rotation) = &rotation
        && rotation.level == "expired"
    {
        warnings.push(format!(
            "The current signing key was due for rotation on {}; the maintenance task rotates it within the hour, or rotate now with `slcs keys rotate`.",
            rotation.at
        ));
    }
    if !store.ok {
        // The cause went to the log above; the page says what it means.
        warnings.push("The store cannot complete a durable write: issuance and sign-in fail until it can. See the server log.".into());
    }
    let uptime = app.started.elapsed().as_secs();
    // Since start, from the metrics recorder (absent when another server
    // in this process holds it, as in some tests).
    let since_start = app.metrics.as_ref().map(|handle| {
        use crate::observability::{
            CERTIFICATES_ISSUED, HTTP_REQUESTS, QUOTA_REJECTIONS, TOKENS_ISSUED, counter_total,
        };
        let text = handle.render();
        minijinja::context! {
            requests => counter_total(&text, HTTP_REQUESTS, ""),
            client_errors => counter_total(&text, HTTP_REQUESTS, "status=\"4"),
            server_errors => counter_total(&text, HTTP_REQUESTS, "status=\"5"),
            tokens => counter_total(&text, TOKENS_ISSUED, ""),
            certificates => counter_total(&text, CERTIFICATES_ISSUED, ""),
            quota_refusals => counter_total(&text, QUOTA_REJECTIONS, ""),
        }
    });
    Ok(render(
        StatusCode::OK,
        "admin_home.html",
        minijinja::context! {
            admin_name => admin.user.display_name,
            csrf_token => admin.csrf_token(&state),
            warnings => warnings,
            pending => pending,
            version => env!("CARGO_PKG_VERSION"),
            uptime => format!("{}d {}h {}m", uptime / 86_400, uptime / 3600 % 24, uptime / 60 % 60),
            store_ok => store.ok,
            store_backend => store.backend,
            clients_active => count(ClientStatus::Active),
            clients_pending => count(ClientStatus::Pending),
            clients_suspended => count(ClientStatus::Suspended),
            people => users.len(),
            people_disabled => users.iter().filter(|u| u.disabled).count(),
            administrators => users.iter().filter(|u| u.admin).count(),
            issuances => app.store.issuance_count().await?,
            since_start => since_start,
            ca_subject => ca_subject(ca),
            ca_expiry => ca_expiry,
            ca_key_sha256 => ca.key_sha256_hex(),
            ca_is_root => ca.is_root(),
            development => app.development,
            keys => keys,
            rotation => rotation,
        },
    ))
}

fn ca_subject(ca: &crate::pki::ca::CaCertificate) -> String {
    x509_parser::parse_x509_certificate(ca.der())
        .map(|(_, cert)| cert.subject().to_string())
        .unwrap_or_default()
}
