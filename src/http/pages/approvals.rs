//! Changing and ending approvals from the account page:
//!
//! - `GET|POST /account/approvals/{id}/edit`: narrow an approval (untick
//!   scopes, delegatees, or a delegatee's scopes) or extend it by the
//!   approval lifetime;
//! - `GET|POST /account/approvals/revoke-all`: end every approval at once,
//!   after the password again (a dangerous action: a session left open on
//!   a shared machine must not be enough).
//!
//! The edit form names checkboxes by position (`s3`, `d1_0`) in the order
//! the approval stores them, together with the approval's version; a post
//! whose version is not the stored one changes nothing, so a consent that
//! widened the approval meanwhile is never undone by an old form.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::{
    Continue, PageForm, date, message_page, password_again, render, see_other, session_of,
    session_posting, source,
};
use crate::delegation::{Approval, Narrowing};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::oauth::authorize::scope_meaning;
use crate::oauth::clients::ClientId;
use crate::oauth::user_grants::ApprovalError;

#[derive(Serialize)]
struct Choice {
    /// The checkbox name.
    field: String,
    scope: String,
    /// What it lets a client do, as the consent page said it.
    meaning: &'static str,
}

#[derive(Serialize)]
struct DelegateeChoices {
    client_id: String,
    name: String,
    scopes: Vec<Choice>,
}

/// The version a form was made from: when the approval last changed.
fn version(approval: &Approval) -> String {
    approval.updated_at.unix_timestamp_nanos().to_string()
}

async fn client_name(state: &AppState, id: &str) -> String {
    match ClientId::parse(id) {
        Ok(parsed) => state.inner.store.client(&parsed).await.ok().flatten(),
        Err(_) => None,
    }
    .map_or_else(|| id.to_owned(), |c| c.name)
}

/// The person's live approval `id`.
async fn live_approval(
    state: &AppState,
    sub: &str,
    id: &str,
    now: time::OffsetDateTime,
) -> Result<Approval, PageError> {
    state
        .inner
        .store
        .approval(id)
        .await?
        .filter(|a| a.sub == sub && a.is_live(now))
        .ok_or_else(|| {
            PageError::NotFound(
                "There is no such live approval in your account: it may have been revoked or have expired.".into(),
            )
        })
}

async fn edit_form(
    state: &AppState,
    binding: &str,
    approval: &Approval,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let scopes: Vec<Choice> = approval
        .scopes
        .iter()
        .enumerate()
        .map(|(j, scope)| Choice {
            field: format!("s{j}"),
            scope: scope.clone(),
            meaning: scope_meaning(scope),
        })
        .collect();
    let mut delegatees = Vec::new();
    for (i, (id, granted)) in approval.delegatees.iter().enumerate() {
        delegatees.push(DelegateeChoices {
            client_id: id.clone(),
            name: client_name(state, id).await,
            scopes: granted
                .iter()
                .enumerate()
                .map(|(j, scope)| Choice {
                    field: format!("d{i}_{j}"),
                    scope: scope.clone(),
                    meaning: scope_meaning(scope),
                })
                .collect(),
        });
    }
    let lifetime = time::Duration::try_from(state.inner.tokens.delegation().approval_lifetime)
        .unwrap_or(time::Duration::days(90));
    let now = state.inner.clock.now();
    render(
        status,
        "approval.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(binding),
            id => approval.id,
            version => version(approval),
            client_name => client_name(state, &approval.client_id).await,
            client_id => approval.client_id,
            scopes => scopes,
            delegatees => delegatees,
            expires => date(approval.expires_at),
            extended => date(approval.expires_at.max(now + lifetime)),
            error => error,
        },
    )
}

/// `GET /account/approvals/{id}/edit`.
pub(crate) async fn edit_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let Some((value, session)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Account.login_path()));
    };
    let approval = live_approval(&state, &session.sub, &id, now).await?;
    Ok(edit_form(&state, &value, &approval, StatusCode::OK, None).await)
}

/// What the ticked boxes of the edit form keep of `approval`.
fn ticked(approval: &Approval, form: &crate::http::form::OAuthForm) -> Narrowing {
    let on = |field: &str| form.get(field) == Some("on");
    let scopes: BTreeSet<String> = approval
        .scopes
        .iter()
        .enumerate()
        .filter(|(j, _)| on(&format!("s{j}")))
        .map(|(_, scope)| scope.clone())
        .collect();
    let delegatees: BTreeMap<String, BTreeSet<String>> = approval
        .delegatees
        .iter()
        .enumerate()
        .map(|(i, (id, granted))| {
            let kept = granted
                .iter()
                .enumerate()
                .filter(|(j, _)| on(&format!("d{i}_{j}")))
                .map(|(_, scope)| scope.clone())
                .collect();
            (id.clone(), kept)
        })
        .collect();
    Narrowing { scopes, delegatees }
}

/// `POST /account/approvals/{id}/edit`: `action` is `narrow` (with the
/// ticked boxes) or `extend`.
pub(crate) async fn edit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let (value, session) =
        session_posting(&state, &headers, &form, "The approval was not changed.").await?;
    let approval = live_approval(&state, &session.sub, &id, now).await?;
    if form.get("version") != Some(version(&approval).as_str()) {
        return Ok(edit_form(
            &state,
            &value,
            &approval,
            StatusCode::CONFLICT,
            Some("The approval changed since you opened this page (another consent, perhaps). Nothing was changed: here it is as it stands now."),
        )
        .await);
    }
    let tokens = &state.inner.tokens;
    let address = Some(source(&peer));
    let (outcome, done) = match form.get("action") {
        Some("narrow") => (
            tokens
                .narrow_approval(
                    &session.sub,
                    &approval,
                    &ticked(&approval, &form),
                    address,
                    now,
                )
                .await,
            "Only what you kept is approved now. Tokens already issued run out within their lifetime; refreshed and passed-on tokens carry only what you kept.",
        ),
        Some("extend") => (
            tokens
                .extend_approval(&session.sub, &approval.id, address, now)
                .await,
            "The approval is extended.",
        ),
        _ => {
            return Err(PageError::BadRequest(
                "Choose to keep what is ticked or to extend. Nothing was changed.".into(),
            ));
        }
    };
    match outcome {
        Ok(changed) => Ok(message_page(
            StatusCode::OK,
            "Approval changed",
            done,
            &[format!("It now lasts until {}.", date(changed.expires_at))],
            Some(("/account", "Back to your account")),
        )),
        Err(ApprovalError::Narrow(e)) => Ok(edit_form(
            &state,
            &value,
            &approval,
            StatusCode::BAD_REQUEST,
            Some(&format!(
                "{}. Nothing was changed.",
                capitalized(&e.to_string())
            )),
        )
        .await),
        Err(ApprovalError::Changed) => Ok(edit_form(
            &state,
            &value,
            &approval,
            StatusCode::CONFLICT,
            Some("The approval changed meanwhile. Nothing was changed: look again."),
        )
        .await),
        Err(ApprovalError::NotFound | ApprovalError::NotLive) => Err(PageError::NotFound(
            "There is no such live approval in your account.".into(),
        )),
        Err(ApprovalError::Store(e)) => Err(e.into()),
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The person's live approvals, with their clients' names.
async fn live_approvals(
    state: &AppState,
    sub: &str,
    now: time::OffsetDateTime,
) -> Result<Vec<(Approval, String)>, PageError> {
    let mut live = Vec::new();
    for approval in state.inner.store.approvals_of(sub).await? {
        if approval.is_live(now) {
            let name = client_name(state, &approval.client_id).await;
            live.push((approval, name));
        }
    }
    Ok(live)
}

fn revoke_all_form(
    state: &AppState,
    binding: &str,
    names: Vec<String>,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    render(
        status,
        "revoke_all.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(binding),
            clients => names,
            error => error,
        },
    )
}

/// `GET /account/approvals/revoke-all`.
pub(crate) async fn revoke_all_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let Some((value, session)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Account.login_path()));
    };
    let names = live_approvals(&state, &session.sub, now)
        .await?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    Ok(revoke_all_form(&state, &value, names, StatusCode::OK, None))
}

/// `POST /account/approvals/revoke-all`: with the password, revokes every
/// live approval (and so every grant, token and certificate under them).
pub(crate) async fn revoke_all(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let (value, session) = session_posting(&state, &headers, &form, "Nothing was revoked.").await?;
    let user = super::account_of(&state, &session).await?;
    let live = live_approvals(&state, &session.sub, now).await?;
    let address = source(&peer);
    let password = form.get("password").unwrap_or_default();
    if !password_again(&state, &user.username, password, &address, now).await? {
        return Ok(revoke_all_form(
            &state,
            &value,
            live.into_iter().map(|(_, name)| name).collect(),
            StatusCode::UNAUTHORIZED,
            Some("The password is wrong. Nothing was revoked."),
        ));
    }
    let actor = format!("user:{}", session.sub);
    let (mut grants, mut certificates) = (0, 0);
    for (approval, _) in &live {
        let revoked = state
            .inner
            .tokens
            .revoke_approval(
                &session.sub,
                &approval.id,
                &actor,
                Some(address.clone()),
                now,
            )
            .await
            .map_err(|e| PageError::Unavailable(e.to_string()))?;
        grants += revoked.grants.len();
        certificates += revoked.certificates.len();
    }
    Ok(message_page(
        StatusCode::OK,
        "Every approval revoked",
        "No application can act for you any more until you approve it again.",
        &[
            format!(
                "{} approval{} revoked: {}.",
                live.len(),
                if live.len() == 1 { "" } else { "s" },
                live.iter()
                    .map(|(_, name)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "{grants} sign-in{} of applications ended.",
                if grants == 1 { "" } else { "s" }
            ),
            format!(
                "{certificates} certificate{} marked revoked.",
                if certificates == 1 { "" } else { "s" }
            ),
        ],
        Some(("/account", "Back to your account")),
    ))
}
