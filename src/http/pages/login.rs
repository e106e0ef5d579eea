//! `GET /login` and `POST /login`; `POST /logout`.
//!
//! The login form's CSRF token is bound to a pre-login cookie (ATTACKS
//! WEB-03). Every failure reads the same and costs one argon2
//! verification (WEB-09); failures back off per username and per address
//! (WEB-08). A successful sign-in always starts a new session and ends the
//! one the browser had (WEB-05).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::{
    Continue, PRE_LOGIN_COOKIE, PageForm, SESSION_COOKIE, audit_own, cookie,
    refuse_while_throttled, render, require_csrf, see_other, session_of, set_cookie, source,
};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::users::session::Sessions;
use crate::users::{LoginError, MAX_PASSWORD_BYTES};

#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(rename = "continue")]
    continue_to: Option<String>,
}

/// The pre-login cookie's value, and whether it must be set.
pub(super) fn pre_login(headers: &HeaderMap) -> Result<(String, bool), PageError> {
    match cookie(headers, PRE_LOGIN_COOKIE) {
        Some(value) if value.len() == 43 => Ok((value, false)),
        _ => Ok((Sessions::random_value()?, true)),
    }
}

async fn client_name_of(state: &AppState, target: &Continue) -> Option<String> {
    let Continue::Authorize(request) = target else {
        return None;
    };
    let store = state.inner.tokens.store();
    let pending = store.pending(request).await.ok().flatten()?;
    let id = crate::oauth::clients::ClientId::parse(&pending.client_id).ok()?;
    store.client(&id).await.ok().flatten().map(|c| c.name)
}

/// What the login form shows.
struct LoginForm<'a> {
    status: StatusCode,
    /// The pre-login cookie value the CSRF token is bound to.
    pre: &'a str,
    /// Whether the cookie is new and must be set.
    set_pre: bool,
    target: &'a Continue,
    client_name: Option<String>,
    username: &'a str,
    error: Option<&'a str>,
}

fn login_form(state: &AppState, form: LoginForm<'_>) -> Response {
    let mut response = render(
        form.status,
        "login.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(form.pre),
            continue_to => form.target.encode(),
            client_name => form.client_name,
            username => form.username,
            error => form.error,
        },
    );
    if form.set_pre {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(PRE_LOGIN_COOKIE, form.pre, None),
        );
    }
    response
}

pub(crate) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) =
        query.map_err(|_| PageError::BadRequest("The sign-in link is malformed.".into()))?;
    let target = Continue::parse(query.continue_to.as_deref());
    let (pre, set_pre) = pre_login(&headers)?;
    let client_name = client_name_of(&state, &target).await;
    Ok(login_form(
        &state,
        LoginForm {
            status: StatusCode::OK,
            pre: &pre,
            set_pre,
            target: &target,
            client_name,
            username: "",
            error: None,
        },
    ))
}

#[allow(clippy::too_many_lines)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let address = source(&peer);
    let target = Continue::parse(form.get("continue"));
    let pre = cookie(&headers, PRE_LOGIN_COOKIE).ok_or_else(|| {
        PageError::Forbidden(
            "Your browser did not send back the sign-in form's cookie. Allow cookies for this site and sign in again.".into(),
        )
    })?;
    require_csrf(
        &state,
        &pre,
        &form,
        "The sign-in form was not sent by this site, or it has expired. Open the sign-in page again.",
    )?;
    let username = form.get("username").unwrap_or_default();
    let password = form.get("password").unwrap_or_default();
    if password.len() > MAX_PASSWORD_BYTES {
        // Refused before any hashing (ATTACKS WEB-13).
        return Err(PageError::BadRequest(format!(
            "Passwords are at most {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    let throttle = &state.inner.login_throttle;
    let wait = throttle.wait(username, &address, now);
    refuse_while_throttled(wait, "failed sign-ins")?;
    match state
        .inner
        .tokens
        .users()
        .authenticate(username, password)
        .await
    {
        Ok(who) => {
            throttle.succeeded(username);
            // A new session id at every sign-in; the old one ends.
            if let Some(old) = cookie(&headers, SESSION_COOKIE) {
                state.inner.sessions.end(&old).await?;
            }
            let (value, session) = state.inner.sessions.start(&who, now).await?;
            audit_own(
                &state,
                &session.sub,
                "user.login",
                address,
                serde_json::json!({ "amr": session.amr }),
                now,
            )
            .await?;
            let max_age = (session.expires_at - now).whole_seconds();
            let mut response = see_other(&target.path());
            let cookies = response.headers_mut();
            cookies.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &value, Some(max_age)),
            );
            cookies.append(
                header::SET_COOKIE,
                set_cookie(PRE_LOGIN_COOKIE, "", Some(0)),
            );
            Ok(response)
        }
        Err(LoginError::Failed) => {
            throttle.failed(username, &address, now);
            let client_name = client_name_of(&state, &target).await;
            Ok(login_form(
                &state,
                LoginForm {
                    status: StatusCode::UNAUTHORIZED,
                    pre: &pre,
                    set_pre: false,
                    target: &target,
                    client_name,
                    username,
                    error: Some("The username or password is wrong."),
                },
            ))
        }
        Err(LoginError::Throttled(wait)) => Err(PageError::TooMany {
            message: format!("Too many failed sign-ins. Wait {wait} seconds, then try again."),
            retry_after: wait,
        }),
        Err(LoginError::Internal(detail)) => Err(PageError::Unavailable(detail)),
    }
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    if let Some((value, session)) = session_of(&state, &headers).await? {
        require_csrf(
            &state,
            &value,
            &form,
            "The sign-out form was not sent by this site. Open your account page again.",
        )?;
        state.inner.sessions.end(&value).await?;
        tracing::debug!(sub = %session.sub, "signed out");
    }
    let mut response = super::message_page(
        StatusCode::OK,
        "Signed out",
        "You are signed out of this service. Applications you approved keep their approvals until you revoke them.",
        &[],
        Some(("/account", "Sign in again")),
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    Ok(response)
}
