//! `GET /admin/issuances` (the issuance log, searched by person, client,
//! serial and time range) and `GET /admin/events` (the audit log, filtered
//! by actor, action, target and time range, newest first, paged).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Administrator, search_of};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::http::form::encode;
use crate::http::pages::account::{CertificateRow, certificate_status};
use crate::http::pages::{date, render};
use crate::store::{AuditQuery, IssuanceQuery, Serial};

/// Rows per page.
const PAGE_ROWS: usize = 100;

/// A date or date-time from a search form: `2026-11-29`, or RFC 3339
/// (`2026-11-29T10:00:00Z`); a bare date means its midnight, UTC.
fn parse_time(text: &str) -> Result<Option<OffsetDateTime>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(Some(at));
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, day)
        .map(|d| Some(d.midnight().assume_utc()))
        .map_err(|_| {
            format!("{text:?} is not a date (2026-11-29) or a time (2026-11-29T10:00:00Z)")
        })
}

/// The `from` and `until` of a search; what cannot be read goes to
/// `errors`, naming its field.
fn time_range(
    from: &str,
    until: &str,
    errors: &mut Vec<String>,
) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
    let mut read = |label: &str, text: &str| {
        parse_time(text).unwrap_or_else(|e| {
            errors.push(format!("{label}: {e}."));
            None
        })
    };
    (read("From", from), read("Until", until))
}

/// 400 when a search field could not be read (the page says which).
fn status_of(errors: &[String]) -> StatusCode {
    if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct IssuanceSearch {
    /// Username of the person.
    #[serde(default)]
    person: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
}

#[derive(Serialize)]
struct IssuanceRow {
    #[serde(flatten)]
    certificate: CertificateRow,
    recorded: String,
    state: &'static str,
    person: String,
}

/// `GET /admin/issuances?person=&client=&serial=&from=&until=`.
pub(crate) async fn issuances(
    State(state): State<AppState>,
    admin: Administrator,
    query: Result<Query<IssuanceSearch>, QueryRejection>,
) -> Result<Response, PageError> {
    let search = search_of(query)?;
    let now = state.inner.clock.now();
    let mut errors = Vec::new();
    let mut query = IssuanceQuery {
        client_id: non_empty(&search.client),
        ..IssuanceQuery::default()
    };
    (query.from, query.until) = time_range(&search.from, &search.until, &mut errors);
    if let Some(serial) = non_empty(&search.serial) {
        match serial.parse::<Serial>() {
            Ok(serial) => query.serial = Some(serial),
            Err(_) => errors.push("Serial: hexadecimal digits, colons allowed.".into()),
        }
    }
    let mut unknown_person = false;
    if let Some(username) = non_empty(&search.person) {
        // A person is searched by username; the log knows subjects. A
        // service account's subject (`service:<client>`) is taken as is.
        let sub = if username.contains(':') {
            Some(username)
        } else if crate::users::check_username(&username).is_ok() {
            state
                .inner
                .store
                .user_by_name(&username)
                .await?
                .map(|u| u.sub)
        } else {
            None
        };
        unknown_person = sub.is_none();
        query.subject = sub;
    }
    let records = if errors.is_empty() && !unknown_person {
        state
            .inner
            .store
            .search_issuances(&query, PAGE_ROWS)
            .await?
    } else {
        Vec::new()
    };
    if unknown_person {
        errors.push("Person: no account has this username.".into());
    }
    let mut people = std::collections::HashMap::new();
    let mut rows = Vec::with_capacity(records.len());
    for record in &records {
        let sub = record.intent.provenance.subject.clone();
        if !people.contains_key(&sub) {
            let name = state
                .inner
                .store
                .user(&sub)
                .await?
                .map_or_else(|| sub.clone(), |u| u.username);
            people.insert(sub.clone(), name);
        }
        rows.push(IssuanceRow {
            certificate: CertificateRow::of(record, now),
            recorded: date(record.intent.recorded_at),
            state: certificate_status(record, now),
            person: people.get(&sub).cloned().unwrap_or(sub),
        });
    }
    Ok(render(
        status_of(&errors),
        "admin_issuances.html",
        minijinja::context! {
            csrf_token => admin.csrf_token(&state),
            search => minijinja::context! {
                person => search.person,
                client => search.client,
                serial => search.serial,
                from => search.from,
                until => search.until,
            },
            errors => errors,
            rows => rows,
            limited => records.len() == PAGE_ROWS,
            page_rows => PAGE_ROWS,
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventSearch {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
    before: Option<u64>,
}

#[derive(Serialize)]
struct EventRow {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    target: String,
    source: Option<String>,
    detail: String,
}

/// `GET /admin/events?actor=&action=&target=&from=&until=&before=`.
pub(crate) async fn events(
    State(state): State<AppState>,
    admin: Administrator,
    query: Result<Query<EventSearch>, QueryRejection>,
) -> Result<Response, PageError> {
    let search = search_of(query)?;
    let mut errors = Vec::new();
    let mut query = AuditQuery {
        actor: non_empty(&search.actor),
        action: non_empty(&search.action),
        target: non_empty(&search.target),
        ..AuditQuery::default()
    };
    (query.from, query.until) = time_range(&search.from, &search.until, &mut errors);
    let page = if errors.is_empty() {
        state
            .inner
            .store
            .search_audit(&query, search.before, PAGE_ROWS)
            .await?
    } else {
        crate::store::AuditPage::default()
    };
    let rows: Vec<EventRow> = page
        .records
        .into_iter()
        .map(|record| EventRow {
            seq: record.seq,
            at: date(record.event.at),
            actor: record.event.actor,
            action: record.event.action,
            target: record.event.target,
            source: record.event.source,
            detail: if record.event.detail.is_null() {
                String::new()
            } else {
                record.event.detail.to_string()
            },
        })
        .collect();
    let older = page.next_before.map(|before| {
        format!(
            "/admin/events?actor={}&action={}&target={}&from={}&until={}&before={before}",
            encode(&search.actor),
            encode(&search.action),
            encode(&search.target),
            encode(&search.from),
            encode(&search.until),
        )
    });
    Ok(render(
        status_of(&errors),
        "admin_events.html",
        minijinja::context! {
            csrf_token => admin.csrf_token(&state),
            search => minijinja::context! {
                actor => search.actor,
                action => search.action,
                target => search.target,
                from => search.from,
                until => search.until,
            },
            errors => errors,
            rows => rows,
            older => older,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_times_are_dates_or_rfc_3339() {
        assert_eq!(parse_time(" ").unwrap(), None);
        assert_eq!(
            parse_time("2026-11-29").unwrap(),
            Some(time::macros::datetime!(2026-11-29 0:00 UTC))
        );
        assert_eq!(
            parse_time("2026-11-29T10:30:00+01:00").unwrap(),
            Some(time::macros::datetime!(2026-11-29 9:30 UTC))
        );
        for junk in [
            "yesterday",
            "2026-13-01",
            "29/11/2026",
            "2026-11-29T25:00:00Z",
        ] {
            assert!(parse_time(junk).is_err(), "{junk}");
        }
    }
}
