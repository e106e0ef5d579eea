//! The person's sign-in security on their account: `GET|POST
//! /account/password` (change the password, which signs out every other
//! session) and `POST /account/sessions/end-others` (sign out everywhere
//! else). The sessions themselves are listed on `/account`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{
    Continue, PageForm, message_page, password_again, render, see_other, session_of,
    session_posting, source,
};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::users::{MAX_PASSWORD_BYTES, UserError, UserSource as _};

/// What the password form shows: its token and, after a refusal, why.
fn password_form(
    state: &AppState,
    binding: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    render(
        status,
        "password.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(binding),
            error => error,
        },
    )
}

pub(crate) async fn password_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let Some((value, _)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Account.login_path()));
    };
    Ok(password_form(&state, &value, StatusCode::OK, None))
}

/// A password change proves the current password again (a session left
/// open on a shared machine must not be enough to take the account over),
/// under the sign-in throttle (else this form would be a way around it),
/// and ends every other session, since one of them may be the reason for
/// the change.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let (value, session) =
        session_posting(&state, &headers, &form, "Your password was not changed.").await?;
    let user = super::account_of(&state, &session).await?;
    let current = form.get("current_password").unwrap_or_default();
    let new = form.get("new_password").unwrap_or_default();
    if current.len() > MAX_PASSWORD_BYTES || new.len() > MAX_PASSWORD_BYTES {
        return Err(PageError::BadRequest(format!(
            "Passwords are at most {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    if form.get("repeat_password").unwrap_or_default() != new {
        return Ok(password_form(
            &state,
            &value,
            StatusCode::BAD_REQUEST,
            Some("The new password and its repetition differ. Nothing was changed."),
        ));
    }
    let address = source(&peer);
    if !password_again(&state, &user.username, current, &address, now).await? {
        return Ok(password_form(
            &state,
            &value,
            StatusCode::UNAUTHORIZED,
            Some("The current password is wrong. Nothing was changed."),
        ));
    }
    let actor = format!("user:{}", session.sub);
    match state
        .inner
        .users
        .set_password(&user.username, new.to_owned(), &actor, now)
        .await
    {
        Ok(_) => {}
        Err(UserError::Invalid(why)) => {
            return Ok(password_form(
                &state,
                &value,
                StatusCode::BAD_REQUEST,
                Some(&format!(
                    "The new password is refused: {why}. Nothing was changed."
                )),
            ));
        }
        Err(UserError::Store(e)) => return Err(e.into()),
        Err(other) => return Err(PageError::Unavailable(other.to_string())),
    }
    let ended = end_others(&state, &session.sub, &session.id_hash, &address, now).await?;
    Ok(message_page(
        StatusCode::OK,
        "Password changed",
        "Use the new password from now on.",
        &[signed_out(ended)],
        Some(("/account", "Back to your account")),
    ))
}

pub(crate) async fn end_other_sessions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let (_, session) = session_posting(&state, &headers, &form, "No session was ended.").await?;
    let ended = end_others(&state, &session.sub, &session.id_hash, &source(&peer), now).await?;
    Ok(message_page(
        StatusCode::OK,
        "Signed out everywhere else",
        "This browser stays signed in.",
        &[signed_out(ended)],
        Some(("/account", "Back to your account")),
    ))
}

/// Ends the other sessions of `sub` and records it.
async fn end_others(
    state: &AppState,
    sub: &str,
    keep: &str,
    address: &str,
    now: time::OffsetDateTime,
) -> Result<usize, PageError> {
    let ended = state.inner.sessions.end_others(sub, keep).await?;
    super::audit_own(
        state,
        sub,
        "user.sessions.end",
        address.to_owned(),
        serde_json::json!({ "ended": ended }),
        now,
    )
    .await?;
    Ok(ended)
}

fn signed_out(ended: usize) -> String {
    match ended {
        0 => "You were signed in nowhere else.".to_owned(),
        1 => "1 other session was signed out.".to_owned(),
        n => format!("{n} other sessions were signed out."),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct ResetQuery {
    #[serde(default)]
    token: String,
}

fn invalid_reset_link() -> Response {
    message_page(
        StatusCode::BAD_REQUEST,
        "This link does not work",
        "The password reset link has expired, was used already, or the password was changed since. Ask your administrator for a new one.",
        &[],
        Some(("/login", "Sign in")),
    )
}

/// The account a reset token is a live link for.
async fn reset_account(
    state: &AppState,
    token: &str,
    now: time::OffsetDateTime,
) -> Result<Option<crate::users::User>, PageError> {
    let resets = &state.inner.resets;
    let Some(sub) = resets.subject_of(token) else {
        return Ok(None);
    };
    Ok(state
        .inner
        .users
        .user(&sub)
        .await?
        .filter(|user| !user.disabled && resets.is_valid(token, user, now)))
}

fn reset_form(
    state: &AppState,
    pre: &str,
    set_pre: bool,
    token: &str,
    username: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let mut response = render(
        status,
        "reset.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(pre),
            token => token,
            username => username,
            error => error,
        },
    );
    if set_pre {
        response.headers_mut().append(
            axum::http::header::SET_COOKIE,
            super::set_cookie(super::PRE_LOGIN_COOKIE, pre, None),
        );
    }
    response
}

/// `GET /account/reset?token=`: the form of a live reset link. Its CSRF
/// token is bound to the pre-login cookie, like the login form's.
pub(crate) async fn reset_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ResetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let Ok(axum::extract::Query(query)) = query else {
        return Ok(invalid_reset_link());
    };
    let Some(user) = reset_account(&state, &query.token, now).await? else {
        return Ok(invalid_reset_link());
    };
    let (pre, set_pre) = super::login::pre_login(&headers)?;
    Ok(reset_form(
        &state,
        &pre,
        set_pre,
        &query.token,
        &user.username,
        StatusCode::OK,
        None,
    ))
}

/// `POST /account/reset`: sets the new password (which spends the link)
/// and signs the account out everywhere.
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let pre = super::cookie(&headers, super::PRE_LOGIN_COOKIE).ok_or_else(|| {
        PageError::Forbidden(
            "Your browser did not send back the form's cookie. Allow cookies for this site and open the link again.".into(),
        )
    })?;
    super::require_csrf(
        &state,
        &pre,
        &form,
        "This form was not sent by this site. Open the link again; nothing was changed.",
    )?;
    let token = form.get("token").unwrap_or_default();
    let Some(user) = reset_account(&state, token, now).await? else {
        return Ok(invalid_reset_link());
    };
    let new = form.get("new_password").unwrap_or_default();
    let refuse = |message: &str| {
        Ok(reset_form(
            &state,
            &pre,
            false,
            token,
            &user.username,
            StatusCode::BAD_REQUEST,
            Some(message),
        ))
    };
    if form.get("repeat_password").unwrap_or_default() != new {
        return refuse("The new password and its repetition differ. Nothing was changed.");
    }
    match state
        .inner
        .users
        .reset_password(&state.inner.resets, token, new.to_owned(), now)
        .await
    {
        Ok(_) => {}
        Err(UserError::Invalid(message)) => {
            return refuse(&format!("{message}. Nothing was changed."));
        }
        Err(UserError::Store(e)) => return Err(e.into()),
        Err(other) => return Err(PageError::Unavailable(other.to_string())),
    }
    let ended = end_others(&state, &user.sub, "", &source(&peer), now).await?;
    Ok(message_page(
        StatusCode::OK,
        "Password set",
        "Your new password is set. Sign in with it.",
        &[match ended {
            0 => "You were signed in nowhere.".to_owned(),
            1 => "1 session was signed out.".to_owned(),
            n => format!("{n} sessions were signed out."),
        }],
        Some(("/account", "Sign in")),
    ))
}
