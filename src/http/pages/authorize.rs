//! `GET /authorize`, `GET /authorize/continue` and `POST /authorize/consent`
//! (RFC 6749 §3.1, §4.1.1–4.1.2; OIDC Core §3.1.2): the browser's side of
//! the code flow. Policy lives in `oauth::authorize`; this module reads
//! requests, checks CSRF, and turns each step into a page or a redirect.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;

use super::{Continue, PageForm, render, require_csrf, see_other, session_of, source};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::http::form::{OAuthForm, encode};
use crate::oauth::authorize::{AuthorizeError, AuthorizeParams, AuthorizeStep, ConsentView};
use crate::users::session::Session;

/// `redirect_uri` with `params` added to its query (RFC 6749 §4.1.2: the
/// URI's own query is kept).
pub(super) fn with_query(redirect_uri: &str, params: &[(&str, String)]) -> String {
    let mut url = redirect_uri.to_owned();
    let mut separator = if url.contains('?') { '&' } else { '?' };
    for (name, value) in params {
        url.push(separator);
        url.push_str(name);
        url.push('=');
        url.push_str(&encode(value));
        separator = '&';
    }
    url
}

/// The binding of a decision form's CSRF token: the session and the
/// request decided, so a token lifted from another browser or another
/// request is worthless (ATTACKS WEB-01).
pub(super) fn decision_binding(session_value: &str, request: &str) -> String {
    format!("{session_value}\0{request}")
}

/// Turns an authorization step into the response.
pub(super) fn respond(
    state: &AppState,
    step: Result<AuthorizeStep, AuthorizeError>,
    session_value: Option<&str>,
) -> Result<Response, PageError> {
    match step {
        Ok(AuthorizeStep::Login { request }) => {
            Ok(see_other(&Continue::Authorize(request).login_path()))
        }
        Ok(AuthorizeStep::Consent(view)) => {
            let session_value =
                session_value.ok_or_else(|| PageError::Forbidden("Sign in to continue.".into()))?;
            Ok(consent_page(state, &view, session_value, false))
        }
        Ok(AuthorizeStep::Redirect {
            redirect_uri,
            params,
        }) => Ok(see_other(&with_query(&redirect_uri, &params))),
        Err(AuthorizeError::Redirect {
            redirect_uri,
            error,
            description,
            state: client_state,
        }) => {
            let mut params = vec![
                ("error", error.to_owned()),
                ("error_description", description),
            ];
            if let Some(client_state) = client_state {
                params.push(("state", client_state));
            }
            // RFC 9207 §2: `iss` in error responses too.
            params.push(("iss", state.inner.tokens.config().issuer.clone()));
            Ok(see_other(&with_query(&redirect_uri, &params)))
        }
        Err(other) => Err(other.into()),
    }
}

/// The consent page for `view` (also the device confirmation page).
pub(super) fn consent_page(
    state: &AppState,
    view: &ConsentView,
    session_value: &str,
    device: bool,
) -> Response {
    render(
        StatusCode::OK,
        "consent.html",
        minijinja::context! {
            view => view,
            device => device,
            action => if device { "/device/confirm" } else { "/authorize/consent" },
            request_field => if device { "user_code" } else { "request" },
            csrf_token => state
                .inner
                .sessions
                .csrf_token(&decision_binding(session_value, &view.request)),
        },
    )
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, PageError> {
    // The same strict parser as form bodies: a repeated parameter is an
    // error page, never resolved either way (ATTACKS AZ-07).
    let query = OAuthForm::parse(uri.query().unwrap_or_default().as_bytes())
        .map_err(|e| PageError::BadRequest(format!("The sign-in request is malformed: {e}.")))?;
    begin(&state, &headers, &query).await
}

/// `POST /authorize`: the same request as a form body (OIDC Core
/// §3.1.2.1: the authorization endpoint supports GET and POST).
pub(crate) async fn authorize_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let form = OAuthForm::parse(&body)
        .map_err(|e| PageError::BadRequest(format!("The sign-in request is malformed: {e}.")))?;
    begin(&state, &headers, &form).await
}

async fn begin(
    state: &AppState,
    headers: &HeaderMap,
    query: &OAuthForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let params: AuthorizeParams = query
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let session = session_of(state, headers).await?;
    let step = state
        .inner
        .tokens
        .begin_authorization(&params, session.as_ref().map(|(_, s)| s), now)
        .await;
    respond(state, step, session.as_ref().map(|(v, _)| v.as_str()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ContinueQuery {
    request: String,
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ContinueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query.map_err(|_| {
        PageError::BadRequest(
            "The link is malformed. Go back to the application and start again.".into(),
        )
    })?;
    let now = state.inner.clock.now();
    let session = session_of(&state, &headers).await?;
    let step = state
        .inner
        .tokens
        .continue_authorization(&query.request, session.as_ref().map(|(_, s)| s), now)
        .await;
    respond(&state, step, session.as_ref().map(|(v, _)| v.as_str()))
}

/// The signed-in session of a decision form, with its CSRF token checked
/// against `subject` (the request or user code decided).
pub(super) async fn decision_session(
    state: &AppState,
    headers: &HeaderMap,
    form: &OAuthForm,
    subject: &str,
) -> Result<(String, Session), PageError> {
    let (value, session) = session_of(state, headers).await?.ok_or_else(|| {
        PageError::Forbidden(
            "You are not signed in (or your session ended). Start again from the application."
                .into(),
        )
    })?;
    require_csrf(
        state,
        &decision_binding(&value, subject),
        form,
        "This decision was not made on a page this site showed you. Nothing was approved.",
    )?;
    Ok((value, session))
}

/// The decision and the accepted delegatees of a consent form: `decision`
/// is `approve` or `deny`; each ticked delegatee is `delegatee.<id>=on`.
pub(super) fn decision(form: &OAuthForm) -> Result<(bool, BTreeSet<String>), PageError> {
    let approved = match form.get("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => return Err(PageError::BadRequest("Choose Approve or Deny.".into())),
    };
    let accepted = form
        .iter()
        .filter(|(_, value)| *value == "on")
        .filter_map(|(name, _)| name.strip_prefix("delegatee."))
        .map(str::to_owned)
        .collect();
    Ok((approved, accepted))
}

pub(crate) async fn consent(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let request = form
        .get("request")
        .ok_or_else(|| PageError::BadRequest("The form names no request.".into()))?;
    let (value, session) = decision_session(&state, &headers, &form, request).await?;
    let (approved, accepted) = decision(&form)?;
    let step = state
        .inner
        .tokens
        .decide_consent(
            request,
            &session,
            approved,
            &accepted,
            Some(source(&peer)),
            now,
        )
        .await;
    respond(&state, step, Some(&value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_keeps_the_registered_query() {
        assert_eq!(
            with_query(
                "https://p.test/cb",
                &[("code", "a b".into()), ("state", "x&y".into())]
            ),
            "https://p.test/cb?code=a%20b&state=x%26y"
        );
        assert_eq!(
            with_query("https://p.test/cb?tenant=1", &[("code", "c".into())]),
            "https://p.test/cb?tenant=1&code=c"
        );
    }
}
