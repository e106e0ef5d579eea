//! `GET /device`, `POST /device` and `POST /device/confirm`: the person's
//! side of the device flow (RFC 8628 §3.3). The code in
//! `verification_uri_complete` only pre-fills the form; confirming takes a
//! signed-in POST on the page that names the client (ATTACKS DV-05).
//! Wrong codes back off per address and per code (DV-01); a success never
//! resets the address's count.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::authorize::{consent_page, decision, decision_session};
use super::{
    Continue, PageForm, message_page, refuse_while_throttled, render, require_csrf, see_other,
    session_of, source,
};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::oauth::device::{DeviceError, display_user_code, normalize_user_code};

#[derive(Debug, Deserialize)]
pub(crate) struct DeviceQuery {
    user_code: Option<String>,
}

fn entry_form(
    state: &AppState,
    status: StatusCode,
    session_value: &str,
    user_code: &str,
    error: Option<&str>,
) -> Response {
    render(
        status,
        "device.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(session_value),
            user_code => user_code,
            error => error,
        },
    )
}

pub(crate) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DeviceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let code = query
        .ok()
        .and_then(|Query(q)| q.user_code)
        .map(|c| normalize_user_code(&c))
        .filter(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(|c| display_user_code(&c))
        .unwrap_or_default();
    let Some((value, _)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Device(code).login_path()));
    };
    Ok(entry_form(&state, StatusCode::OK, &value, &code, None))
}

pub(crate) async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let Some((value, session)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Device(String::new()).login_path()));
    };
    require_csrf(
        &state,
        &value,
        &form,
        "The code form was not sent by this site. Open the device page again.",
    )?;
    let entered = form.get("user_code").unwrap_or_default();
    let code = normalize_user_code(entered);
    let address = source(&peer);
    let throttle = &state.inner.device_throttle;
    let wait = throttle.wait(&code, &address, now);
    refuse_while_throttled(wait, "wrong codes")?;
    match state
        .inner
        .tokens
        .device_confirmation(&code, &session, now)
        .await
    {
        Ok(view) => Ok(consent_page(&state, &view, &value, true)),
        Err(DeviceError::UnknownCode) => {
            throttle.failed(&code, &address, now);
            Ok(entry_form(
                &state,
                StatusCode::BAD_REQUEST,
                &value,
                entered,
                Some(&DeviceError::UnknownCode.to_string()),
            ))
        }
        Err(DeviceError::Store(e)) => Err(e.into()),
    }
}

pub(crate) async fn confirm(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let shown = form
        .get("user_code")
        .ok_or_else(|| PageError::BadRequest("The form names no code.".into()))?;
    let (_, session) = decision_session(&state, &headers, &form, shown).await?;
    let (approved, accepted) = decision(&form)?;
    let granted = state
        .inner
        .tokens
        .device_decide(
            shown,
            &session,
            approved,
            &accepted,
            Some(source(&peer)),
            now,
        )
        .await
        .map_err(|e| match e {
            DeviceError::UnknownCode => PageError::BadRequest(e.to_string()),
            DeviceError::Store(e) => e.into(),
        })?;
    Ok(if granted {
        message_page(
            StatusCode::OK,
            "Device connected",
            "You can close this page and return to your device; it will continue on its own.",
            &[],
            Some(("/account", "See what you have approved")),
        )
    } else {
        message_page(
            StatusCode::OK,
            "Request refused",
            "The device will not get access. If you did not start this request, nothing more needs doing.",
            &[],
            None,
        )
    })
}
