//! `GET /admin/clients` (search), `GET /admin/clients/{id}` (the full
//! registration) and `POST /admin/clients/{id}/status` (approve, suspend,
//! send back to review, with a reason; audited by the registry).
//!
//! Approving a client lets it obtain tokens on behalf of people, so it
//! asks for the administrator's password again (re-authentication for a
//! dangerous action), besides the console's second factor.

use std::net::SocketAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{Administrator, administrator_posting, search_of};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::http::form::encode;
use crate::http::pages::{PageForm, date, message_page, password_again, render, source};
use crate::oauth::clients::{Client, ClientId, ClientStatus, to_representation};
use crate::oauth::registry::{Caller, Registry, RegistryError};

/// The longest list a search shows.
const LIST_LIMIT: usize = 200;

/// A client in a list.
#[derive(Serialize)]
pub(crate) struct ClientRow {
    id: String,
    /// The console page of the client.
    href: String,
    /// The id, percent-encoded for a query.
    query: String,
    name: String,
    kind: &'static str,
    status: &'static str,
    owner: String,
    created: String,
}

impl ClientRow {
    pub(crate) fn of(client: &Client) -> Self {
        Self {
            id: client.id.as_str().to_owned(),
            href: format!("/admin/clients/{}", encode(client.id.as_str())),
            query: encode(client.id.as_str()),
            name: client.name.clone(),
            kind: client.kind.name(),
            status: client.status.name(),
            owner: client.owner.clone(),
            created: date(client.created_at),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ClientSearch {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
}

fn parse_status(name: &str) -> Option<ClientStatus> {
    match name {
        "pending" => Some(ClientStatus::Pending),
        "active" => Some(ClientStatus::Active),
        "suspended" => Some(ClientStatus::Suspended),
        _ => None,
    }
}

/// Whether `client` matches the search text: a case-insensitive part of
/// its id, name, description or owner.
fn matches(client: &Client, text: &str) -> bool {
    let text = text.trim().to_lowercase();
    text.is_empty()
        || [
            client.id.as_str(),
            &client.name,
            &client.description,
            &client.owner,
        ]
        .iter()
        .any(|field| field.to_lowercase().contains(&text))
}

/// `GET /admin/clients?q=&status=`: pending ones first, then by name.
pub(crate) async fn list(
    State(state): State<AppState>,
    admin: Administrator,
    query: Result<Query<ClientSearch>, QueryRejection>,
) -> Result<Response, PageError> {
    let search = search_of(query)?;
    let status = parse_status(&search.status);
    let mut clients: Vec<Client> = state
        .inner
        .store
        .list_clients()
        .await?
        .into_iter()
        .filter(|c| status.is_none_or(|s| c.status == s) && matches(c, &search.q))
        .collect();
    clients.sort_by(|a, b| {
        (a.status != ClientStatus::Pending, a.name.to_lowercase())
            .cmp(&(b.status != ClientStatus::Pending, b.name.to_lowercase()))
    });
    let total = clients.len();
    let rows: Vec<ClientRow> = clients.iter().take(LIST_LIMIT).map(ClientRow::of).collect();
    Ok(render(
        StatusCode::OK,
        "admin_clients.html",
        minijinja::context! {
            csrf_token => admin.csrf_token(&state),
            q => search.q,
            status => status.map(ClientStatus::name),
            clients => rows,
            total => total,
            limited => total > LIST_LIMIT,
        },
    ))
}

/// One registration field as the detail page shows it.
#[derive(Serialize)]
struct Field {
    name: String,
    value: String,
}

/// The registration as the API represents it, field by field (nested
/// members by their dotted path: `client.redirectUris`), so the page shows
/// exactly what the registration API would, never a secret.
fn fields(client: &Client) -> Vec<Field> {
    fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<Field>) {
        use serde_json::Value;
        let text = match value {
            Value::Null => return,
            Value::Object(map) => {
                for (name, member) in map {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    flatten(&path, member, out);
                }
                return;
            }
            Value::Array(items) if items.is_empty() => "none".to_owned(),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push(Field {
            name: prefix.to_owned(),
            value: text,
        });
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(to_representation(client)) {
        flatten("", &value, &mut out);
    }
    out
}

async fn client_of(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<Client, PageError> {
    let not_found = || PageError::NotFound("No client has this id.".into());
    let Path(id) = id.map_err(|_| not_found())?;
    let id = ClientId::parse(&id).map_err(|_| not_found())?;
    state.inner.store.client(&id).await?.ok_or_else(not_found)
}

fn detail_page(
    state: &AppState,
    csrf_token: &str,
    client: &Client,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let may = |to: ClientStatus| client.status.may_become(to);
    render(
        status,
        "admin_client.html",
        minijinja::context! {
            csrf_token => csrf_token,
            client => ClientRow::of(client),
            description => client.description,
            fields => fields(client),
            may_approve => may(ClientStatus::Active),
            may_suspend => may(ClientStatus::Suspended),
            may_review => may(ClientStatus::Pending),
            error => error,
            development => state.inner.development,
        },
    )
}

/// `GET /admin/clients/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    admin: Administrator,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, PageError> {
    let client = client_of(&state, id).await?;
    Ok(detail_page(
        &state,
        &admin.csrf_token(&state),
        &client,
        StatusCode::OK,
        None,
    ))
}

/// `POST /admin/clients/{id}/status`: `status` (active, suspended or
/// pending), `reason` (required except to approve), and to approve the
/// administrator's `password`.
pub(crate) async fn set_status(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let admin =
        administrator_posting(&state, &headers, &form, "The client was not changed.").await?;
    let now = state.inner.clock.now();
    let client = client_of(&state, id).await?;
    let csrf_token = admin.csrf_token(&state);
    let refuse = |message: &str| {
        Ok(detail_page(
            &state,
            &csrf_token,
            &client,
            StatusCode::BAD_REQUEST,
            Some(message),
        ))
    };
    let Some(status) = form.get("status").and_then(parse_status) else {
        return refuse("Choose approve, suspend or send back to review. Nothing was changed.");
    };
    let reason = form.get("reason").unwrap_or_default().trim();
    if reason.chars().count() > 256 || reason.chars().any(char::is_control) {
        return refuse("A reason is at most 256 characters on one line. Nothing was changed.");
    }
    if reason.is_empty() && status != ClientStatus::Active {
        return refuse("Say why: the reason is kept in the audit log. Nothing was changed.");
    }
    let address = source(&peer);
    if status == ClientStatus::Active {
        let password = form.get("password").unwrap_or_default();
        if !password_again(&state, &admin.user.username, password, &address, now).await? {
            return Ok(detail_page(
                &state,
                &csrf_token,
                &client,
                StatusCode::UNAUTHORIZED,
                Some("Your password is wrong. The client was not approved."),
            ));
        }
    }
    let registry = Registry {
        store: state.inner.store.as_ref(),
        pepper: state.inner.tokens.pepper(),
        development: state.inner.development,
    };
    let caller = Caller {
        subject: admin.actor(),
        is_admin: true,
        source: Some(address),
    };
    let reason = (!reason.is_empty()).then_some(reason);
    match registry
        .set_status(&caller, client.id.as_str(), status, reason, now)
        .await
    {
        Ok(_) => {}
        Err(RegistryError::Status(e)) => return refuse(&format!("{e}. Nothing was changed.")),
        Err(RegistryError::Conflict) => {
            return refuse("The client was changed meanwhile. Look at it again, then decide.");
        }
        Err(RegistryError::NotFound) => {
            return Err(PageError::NotFound("No client has this id.".into()));
        }
        Err(RegistryError::Store(e)) => return Err(e.into()),
        Err(other) => return refuse(&other.to_string()),
    }
    let done = match status {
        ClientStatus::Active => "approved: it may now obtain tokens",
        ClientStatus::Suspended => {
            "suspended: its tokens stop working now and the certificates it had a hand in are revoked"
        }
        ClientStatus::Pending => {
            "sent back to review: it cannot obtain tokens until approved again"
        }
    };
    Ok(message_page(
        StatusCode::OK,
        "Client updated",
        &format!("{} ({}) is {done}.", client.name, client.id.as_str()),
        &reason
            .map(|r| vec![format!("Reason recorded: {r}")])
            .unwrap_or_default(),
        Some(("/admin/clients", "Back to the clients")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_by_name_only() {
        for status in [
            ClientStatus::Pending,
            ClientStatus::Active,
            ClientStatus::Suspended,
        ] {
            assert_eq!(parse_status(status.name()), Some(status));
        }
        for junk in ["", "Active", "approved", "active "] {
            assert_eq!(parse_status(junk), None, "{junk:?}");
        }
    }
}
