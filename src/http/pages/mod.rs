//! The HTML side of the authorization server: sign-in, consent, the device
//! verification page and the account page. Server-rendered (minijinja,
//! auto-escaping every value: client names and descriptions are chosen by
//! whoever registers a client), no JavaScript, one stylesheet.
//!
//! Cookies are `__Host-` prefixed (`Secure`, `Path=/`, no `Domain`: a
//! sibling host cannot plant or overwrite them, ATTACKS WEB-05),
//! `HttpOnly` and `SameSite=Lax`. Every form carries a CSRF token bound to
//! the browser's session (or, before sign-in, its pre-login cookie) and,
//! for decisions, to the request decided (WEB-01, WEB-03).

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use super::AppState;
use super::error::PageError;
use crate::users::session::Session;

pub(super) mod account;
pub(super) mod approvals;
pub(super) mod authorize;
pub(super) mod console;
pub(super) mod device;
pub(super) mod login;
pub(super) mod security;

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-slcs-session";
/// The pre-login cookie the login form's CSRF token is bound to.
pub const PRE_LOGIN_COOKIE: &str = "__Host-slcs-pre";

/// The policy of every page: nothing but our own stylesheet loads, no
/// script at all, never framed (RFC 9700 §4.16, ATTACKS WEB-04, WEB-07).
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Every template, compiled once. A template that does not compile is a
/// build defect the unit tests catch; at run time it is logged and its
/// pages answer 500.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    environment().unwrap_or_else(|error| {
        tracing::error!(%error, "page templates do not compile");
        Environment::new()
    })
});

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("consent.html", include_str!("templates/consent.html")),
        ("device.html", include_str!("templates/device.html")),
        ("message.html", include_str!("templates/message.html")),
        ("account.html", include_str!("templates/account.html")),
        ("revoke.html", include_str!("templates/revoke.html")),
        ("password.html", include_str!("templates/password.html")),
        ("reset.html", include_str!("templates/reset.html")),
        ("approval.html", include_str!("templates/approval.html")),
        ("revoke_all.html", include_str!("templates/revoke_all.html")),
        ("admin_base.html", include_str!("templates/admin_base.html")),
        (
            "admin_verify.html",
            include_str!("templates/admin_verify.html"),
        ),
        ("admin_home.html", include_str!("templates/admin_home.html")),
        (
            "admin_clients.html",
            include_str!("templates/admin_clients.html"),
        ),
        (
            "admin_client.html",
            include_str!("templates/admin_client.html"),
        ),
        (
            "admin_people.html",
            include_str!("templates/admin_people.html"),
        ),
        (
            "admin_person.html",
            include_str!("templates/admin_person.html"),
        ),
        (
            "admin_issuances.html",
            include_str!("templates/admin_issuances.html"),
        ),
        (
            "admin_events.html",
            include_str!("templates/admin_events.html"),
        ),
    ] {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// The stylesheet, served at `/static/slcs.css`.
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("static/slcs.css"),
    )
        .into_response()
}

/// Renders `template` with `context` as an HTML page with the page headers.
pub fn render(status: StatusCode, template: &str, context: impl Serialize) -> Response {
    let body = TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(context));
    match body {
        Ok(html) => with_page_headers((status, html).into_response()),
        Err(error) => {
            tracing::error!(%error, template, "page rendering failed");
            with_page_headers(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The page could not be shown. Try again later.",
                )
                    .into_response(),
            )
        }
    }
}

/// A page with a title, a message, optional detail lines and a local link.
pub fn message_page(
    status: StatusCode,
    title: &str,
    message: &str,
    details: &[String],
    link: Option<(&str, &str)>,
) -> Response {
    render(
        status,
        "message.html",
        minijinja::context! {
            title => title,
            message => message,
            details => details,
            error => status.is_client_error() || status.is_server_error(),
            link_href => link.map(|(href, _)| href),
            link_text => link.map(|(_, text)| text),
        },
    )
}

fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        axum::http::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A 303 to `location` (after a POST, the browser follows with GET).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    with_page_headers(response)
}

/// The value of cookie `name`. A name sent twice counts as absent: with
/// two values the browser's order decides, and an attacker able to add one
/// (cookie tossing) must not get to choose.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v.to_owned());
            }
        }
    }
    found
}

/// A `Set-Cookie` value for a `__Host-` cookie; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// Refuses (403, saying `why`) a form whose `csrf_token` is not the one
/// for `binding` (ATTACKS WEB-01, WEB-02, WEB-03).
pub(crate) fn require_csrf(
    state: &AppState,
    binding: &str,
    form: &super::form::OAuthForm,
    why: &str,
) -> Result<(), PageError> {
    let presented = form.get("csrf_token").unwrap_or_default();
    if state.inner.sessions.csrf_ok(binding, presented) {
        Ok(())
    } else {
        Err(PageError::Forbidden(why.to_owned()))
    }
}

/// 429 while a throttle says to wait `wait` seconds after too many `what`.
pub(crate) fn refuse_while_throttled(wait: u64, what: &str) -> Result<(), PageError> {
    if wait == 0 {
        return Ok(());
    }
    Err(PageError::TooMany {
        message: format!("Too many {what}. Wait {wait} seconds, then try again."),
        retry_after: wait,
    })
}

/// Proves the password of `username` again before a dangerous action (a
/// session left open on a shared machine must not be enough; OWASP ASVS
/// 3.7.1), under the sign-in throttle, else the form would be a way around
/// it. `Ok(false)` for a wrong password.
pub(crate) async fn password_again(
    state: &AppState,
    username: &str,
    password: &str,
    address: &str,
    now: time::OffsetDateTime,
) -> Result<bool, PageError> {
    use crate::users::{LoginError, MAX_PASSWORD_BYTES, UserSource as _};
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PageError::BadRequest(format!(
            "Passwords are at most {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    let throttle = &state.inner.login_throttle;
    refuse_while_throttled(
        throttle.wait(username, address, now),
        "failed password checks",
    )?;
    match state.inner.users.authenticate(username, password).await {
        Ok(_) => {
            throttle.succeeded(username);
            Ok(true)
        }
        Err(LoginError::Failed) => {
            throttle.failed(username, address, now);
            Ok(false)
        }
        Err(LoginError::Throttled(wait)) => Err(PageError::TooMany {
            message: format!(
                "Too many failed password checks. Wait {wait} seconds, then try again."
            ),
            retry_after: wait,
        }),
        Err(LoginError::Internal(detail)) => Err(PageError::Unavailable(detail)),
    }
}

/// A form posted to a page: parsed as strictly as the OAuth endpoints'
/// forms, but refused with a page that says what went wrong, never with
/// an OAuth JSON error a person cannot read.
#[derive(Debug)]
pub(crate) struct PageForm(pub super::form::OAuthForm);

impl<S: Send + Sync> axum::extract::FromRequest<S> for PageForm {
    type Rejection = PageError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, PageError> {
        super::form::OAuthForm::from_request(request, state)
            .await
            .map(PageForm)
            .map_err(|e| {
                PageError::BadRequest(format!(
                    "The form could not be read ({}). Go back, reload the page and try again.",
                    e.description()
                ))
            })
    }
}

/// The session behind a form posted to an account page, checked for the
/// form's CSRF token (ATTACKS WEB-02); `nothing_done` says what the
/// refusal left undone.
pub(crate) async fn session_posting(
    state: &AppState,
    headers: &HeaderMap,
    form: &super::form::OAuthForm,
    nothing_done: &str,
) -> Result<(String, Session), PageError> {
    let (value, session) = session_of(state, headers).await?.ok_or_else(|| {
        PageError::Forbidden("You are not signed in. Sign in and try again.".into())
    })?;
    require_csrf(
        state,
        &value,
        form,
        &format!("This form was not sent by this site. {nothing_done}"),
    )?;
    Ok((value, session))
}

/// The account of a signed-in session's person (gone accounts are
/// refused: their sessions outlive nothing else).
pub(crate) async fn account_of(
    state: &AppState,
    session: &Session,
) -> Result<crate::users::User, PageError> {
    use crate::users::UserSource as _;
    state
        .inner
        .users
        .user(&session.sub)
        .await?
        .ok_or_else(|| PageError::Forbidden("Your account no longer exists.".into()))
}

/// The browser's live session, with its cookie value.
pub async fn session_of(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, Session)>, PageError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = state.inner.clock.now();
    Ok(state
        .inner
        .sessions
        .find(&value, now)
        .await?
        .map(|session| (value, session)))
}

/// Where the login page sends the browser after sign-in: only these local
/// places, never a URL from the request (RFC 9700 §4.11, ATTACKS AZ-08).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Continue {
    /// A pending authorization request.
    Authorize(String),
    /// The device page, with a user code to pre-fill.
    Device(String),
    /// The account page.
    Account,
    /// The admin console.
    Admin,
}

impl Continue {
    /// Parses the login form's `continue` value; anything unknown is the
    /// account page.
    pub fn parse(value: Option<&str>) -> Self {
        let safe = |s: &str| {
            s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        };
        match value.and_then(|v| v.split_once(':')) {
            Some(("authorize", id)) if safe(id) && !id.is_empty() => Self::Authorize(id.into()),
            Some(("device", code)) if safe(code) => Self::Device(code.into()),
            _ if value == Some("admin") => Self::Admin,
            _ => Self::Account,
        }
    }

    /// The form value.
    pub fn encode(&self) -> String {
        match self {
            Self::Authorize(id) => format!("authorize:{id}"),
            Self::Device(code) => format!("device:{code}"),
            Self::Account => "account".into(),
            Self::Admin => "admin".into(),
        }
    }

    /// The local path.
    pub fn path(&self) -> String {
        use super::form::encode;
        match self {
            Self::Authorize(id) => format!("/authorize/continue?request={}", encode(id)),
            Self::Device(code) if code.is_empty() => "/device".into(),
            Self::Device(code) => format!("/device?user_code={}", encode(code)),
            Self::Account => "/account".into(),
            Self::Admin => "/admin".into(),
        }
    }

    /// The login page for this destination.
    pub fn login_path(&self) -> String {
        format!("/login?continue={}", super::form::encode(&self.encode()))
    }
}

/// Records, durably, something person `sub` did to their own account
/// (signing in, a second factor, ending sessions).
pub(crate) async fn audit_own(
    state: &AppState,
    sub: &str,
    action: &str,
    source: String,
    detail: serde_json::Value,
    now: time::OffsetDateTime,
) -> Result<(), PageError> {
    let person = format!("user:{sub}");
    state
        .inner
        .store
        .append_audit(&crate::store::AuditEvent {
            at: now,
            actor: person.clone(),
            action: action.to_owned(),
            target: person,
            source: Some(source),
            detail,
        })
        .await?;
    Ok(())
}

/// A time as pages show it: RFC 3339, to the second, in UTC.
pub(crate) fn date(at: time::OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The client address, for throttling and the audit log.
pub fn source(peer: &std::net::SocketAddr) -> String {
    peer.ip().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let evil = "<script>alert(1)</script>";
        if let Err(e) = environment() {
            panic!("{e:#}");
        }
        let page = message_page(
            StatusCode::OK,
            evil,
            evil,
            &[evil.to_owned()],
            Some(("/account", evil)),
        );
        assert_eq!(page.status(), StatusCode::OK);
        for name in [
            "base.html",
            "login.html",
            "consent.html",
            "device.html",
            "message.html",
            "account.html",
            "revoke.html",
            "password.html",
            "reset.html",
            "approval.html",
            "revoke_all.html",
            "admin_verify.html",
            "admin_home.html",
            "admin_clients.html",
            "admin_client.html",
            "admin_people.html",
            "admin_person.html",
            "admin_issuances.html",
            "admin_events.html",
        ] {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
        let html = TEMPLATES
            .get_template("message.html")
            .unwrap()
            .render(minijinja::context! { title => evil, message => evil })
            .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn continue_targets_are_local_only() {
        assert_eq!(
            Continue::parse(Some("authorize:ar_abc-1")),
            Continue::Authorize("ar_abc-1".into())
        );
        assert_eq!(
            Continue::parse(Some("device:BCDF-GHJK")),
            Continue::Device("BCDF-GHJK".into())
        );
        for hostile in [
            "https://evil.test/",
            "//evil.test",
            "/\\evil.test",
            "authorize:../../x",
            "authorize:",
            "authorize:a/b",
        ] {
            assert_eq!(
                Continue::parse(Some(hostile)),
                Continue::Account,
                "{hostile}"
            );
        }
        assert_eq!(Continue::parse(Some("admin")), Continue::Admin);
        assert_eq!(Continue::Admin.path(), "/admin");
        assert_eq!(
            Continue::Authorize("ar_x".into()).path(),
            "/authorize/continue?request=ar_x"
        );
    }

    #[test]
    fn duplicate_cookies_count_as_absent() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-slcs-session=x"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("x"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-slcs-session=y"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }
}
