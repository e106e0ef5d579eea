//! The person's sign-in security on their account: `GET|POST
//! /account/password` (change the password, which signs out every other
//! session) and `POST /account/sessions/end-others` (sign out everywhere
//! else). The sessions themselves are listed on `/account`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{
    Continue, PageForm, message_page, refuse_while_throttled, render, see_other, session_of,
    session_posting, source,
};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::store::AuditEvent;
use crate::users::{LoginError, MAX_PASSWORD_BYTES, UserError, UserSource as _};

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
    let user = state
        .inner
        .users
        .user(&session.sub)
        .await?
        .ok_or_else(|| PageError::Forbidden("Your account no longer exists.".into()))?;
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
    let throttle = &state.inner.login_throttle;
    refuse_while_throttled(
        throttle.wait(&user.username, &address, now),
        "failed password checks",
    )?;
    match state
        .inner
        .users
        .authenticate(&user.username, current)
        .await
    {
        Ok(_) => throttle.succeeded(&user.username),
        Err(LoginError::Failed) => {
            throttle.failed(&user.username, &address, now);
            return Ok(password_form(
                &state,
                &value,
                StatusCode::UNAUTHORIZED,
                Some("The current password is wrong. Nothing was changed."),
            ));
        }
        Err(LoginError::Throttled(wait)) => {
            return Err(PageError::TooMany {
                message: format!(
                    "Too many failed password checks. Wait {wait} seconds, then try again."
                ),
                retry_after: wait,
            });
        }
        Err(LoginError::Internal(detail)) => return Err(PageError::Unavailable(detail)),
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
    state
        .inner
        .store
        .append_audit(&AuditEvent {
            at: now,
            actor: format!("user:{sub}"),
            action: "user.sessions.end".into(),
            target: format!("user:{sub}"),
            source: Some(address.to_owned()),
            detail: serde_json::json!({ "ended": ended }),
        })
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
