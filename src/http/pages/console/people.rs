//! `GET /admin/people` (search), `GET /admin/people/{username}` and its
//! forms: disable or enable the account, set its guest flag, groups and
//! units, and make a password reset link to hand to the person.
//!
//! (`/admin/users` is the JSON API the `slcs user` verbs call; the pages
//! are under `/admin/people` so the two never share a path.)

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{Administrator, administrator_posting, audit, search_of};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::http::form::encode;
use crate::http::pages::{PageForm, date, message_page, render, source};
use crate::users::{AccountAccess, User, UserError};

/// The longest list a search shows.
const LIST_LIMIT: usize = 200;

#[derive(Serialize)]
struct PersonRow {
    username: String,
    /// The console page of the account.
    href: String,
    /// The username, percent-encoded for a query.
    query: String,
    /// `user:<sub>`, percent-encoded for a query.
    target_query: String,
    display_name: String,
    email: Option<String>,
    organisation: Option<String>,
    groups: Vec<String>,
    units: Vec<String>,
    guest: bool,
    disabled: bool,
    admin: bool,
    has_password: bool,
    created: String,
    sub: String,
}

impl PersonRow {
    fn of(user: &User) -> Self {
        Self {
            username: user.username.clone(),
            href: format!("/admin/people/{}", encode(&user.username)),
            query: encode(&user.username),
            target_query: encode(&format!("user:{}", user.sub)),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            organisation: user.organisation.clone(),
            groups: user.groups.iter().cloned().collect(),
            units: user.units.iter().cloned().collect(),
            guest: user.guest,
            disabled: user.disabled,
            admin: user.admin,
            has_password: user.password_hash.is_some(),
            created: date(user.created_at),
            sub: user.sub.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PeopleSearch {
    #[serde(default)]
    q: String,
}

fn matches(user: &User, text: &str) -> bool {
    let text = text.trim().to_lowercase();
    text.is_empty()
        || [
            Some(user.username.as_str()),
            Some(user.display_name.as_str()),
            user.email.as_deref(),
            user.organisation.as_deref(),
            Some(user.sub.as_str()),
        ]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&text))
}

/// `GET /admin/people?q=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    admin: Administrator,
    query: Result<Query<PeopleSearch>, QueryRejection>,
) -> Result<Response, PageError> {
    let search = search_of(query)?;
    let users: Vec<User> = state
        .inner
        .users
        .list()
        .await?
        .into_iter()
        .filter(|u| matches(u, &search.q))
        .collect();
    let rows: Vec<PersonRow> = users.iter().take(LIST_LIMIT).map(PersonRow::of).collect();
    Ok(render(
        StatusCode::OK,
        "admin_people.html",
        minijinja::context! {
            csrf_token => admin.csrf_token(&state),
            q => search.q,
            people => rows,
            total => users.len(),
            limited => users.len() > LIST_LIMIT,
        },
    ))
}

async fn person_of(
    state: &AppState,
    username: Result<Path<String>, PathRejection>,
) -> Result<User, PageError> {
    let not_found = || PageError::NotFound("No account has this username.".into());
    let Path(username) = username.map_err(|_| not_found())?;
    if crate::users::check_username(&username).is_err() {
        return Err(not_found());
    }
    state
        .inner
        .store
        .user_by_name(&username)
        .await?
        .ok_or_else(not_found)
}

fn person_page(csrf_token: &str, user: &User, status: StatusCode, error: Option<&str>) -> Response {
    render(
        status,
        "admin_person.html",
        minijinja::context! {
            csrf_token => csrf_token,
            person => PersonRow::of(user),
            error => error,
        },
    )
}

/// `GET /admin/people/{username}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    admin: Administrator,
    username: Result<Path<String>, PathRejection>,
) -> Result<Response, PageError> {
    let user = person_of(&state, username).await?;
    Ok(person_page(
        &admin.csrf_token(&state),
        &user,
        StatusCode::OK,
        None,
    ))
}

/// Labels from a textarea: one per line, blank lines ignored.
fn labels(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `POST /admin/people/{username}`: `action` is `disable`, `enable`,
/// `access` (with `guest`, `groups`, `units`) or `reset-link`.
pub(crate) async fn act(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    username: Result<Path<String>, PathRejection>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let admin =
        administrator_posting(&state, &headers, &form, "The account was not changed.").await?;
    let now = state.inner.clock.now();
    let user = person_of(&state, username).await?;
    let csrf_token = admin.csrf_token(&state);
    let actor = admin.actor();
    let users = &state.inner.users;
    let outcome = match form.get("action").unwrap_or_default() {
        "disable" if user.sub == admin.user.sub => Err(UserError::Invalid(
            "You cannot disable your own account here: another administrator must.".into(),
        )),
        "disable" => users.set_disabled(&user.username, true, &actor, now).await,
        "enable" => users.set_disabled(&user.username, false, &actor, now).await,
        "access" => {
            let access = AccountAccess {
                guest: form.get("guest") == Some("on"),
                groups: labels(form.get("groups").unwrap_or_default()),
                units: labels(form.get("units").unwrap_or_default()),
            };
            users.set_access(&user.username, access, &actor, now).await
        }
        "reset-link" => {
            if user.disabled {
                return Ok(person_page(
                    &csrf_token,
                    &user,
                    StatusCode::BAD_REQUEST,
                    Some("A disabled account cannot reset its password. Enable it first."),
                ));
            }
            let (token, expires) = state.inner.resets.issue(&user, now);
            audit(
                &state,
                &admin,
                "user.reset_link",
                format!("user:{}", user.sub),
                source(&peer),
                serde_json::json!({ "username": user.username, "expires": date(expires) }),
                now,
            )
            .await?;
            let link = format!(
                "{}/account/reset?token={}",
                state.inner.tokens.config().issuer.trim_end_matches('/'),
                encode(&token)
            );
            return Ok(message_page(
                StatusCode::OK,
                "Password reset link",
                &format!(
                    "Give this link to {} over a channel you trust (not the one a request for it came by). It works once, until {}, and stops working if the password is changed meanwhile.",
                    user.display_name,
                    date(expires)
                ),
                &[link],
                Some((
                    &format!("/admin/people/{}", encode(&user.username)),
                    "Back to the account",
                )),
            ));
        }
        _ => Err(UserError::Invalid("Choose what to change.".into())),
    };
    match outcome {
        Ok(updated) => Ok(person_page(&csrf_token, &updated, StatusCode::OK, None)),
        Err(UserError::Invalid(message)) => Ok(person_page(
            &csrf_token,
            &user,
            StatusCode::BAD_REQUEST,
            Some(&format!("{message} Nothing was changed.")),
        )),
        Err(UserError::NotFound(_)) => {
            Err(PageError::NotFound("No account has this username.".into()))
        }
        Err(UserError::Store(e)) => Err(e.into()),
        Err(other) => Err(PageError::Unavailable(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lines_without_blanks_or_duplicates() {
        let got = labels("all:projects\r\n\n  TVB-Workshops \nall:projects\n");
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            ["TVB-Workshops", "all:projects"]
        );
    }
}
