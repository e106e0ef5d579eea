//! `GET /account`, `GET|POST /account/approvals/{id}/revoke` and
//! `GET /account/certificates/{serial}`: the person's approvals, drawn as
//! chains (client → delegatees) with the certificates issued under each,
//! the confirmed revocation that ends everything issued under one (BRIEF
//! §3), and the download of a certificate.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde::Serialize;
use time::OffsetDateTime;

use super::{
    Continue, PageForm, date, message_page, render, see_other, session_of, session_posting, source,
};
use crate::http::AppState;
use crate::http::error::PageError;
use crate::oauth::clients::ClientId;
use crate::oauth::user_grants::ApprovalError;

#[derive(Serialize)]
struct ApprovalRow {
    id: String,
    client_id: String,
    client_name: String,
    scopes: Vec<String>,
    /// The delegatees ordered by their distance from the root client.
    delegatees: Vec<DelegateeRow>,
    /// The same, one entry per step below the root client: the chain as
    /// the person reads it (portal → service → brokers).
    steps: Vec<Vec<DelegateeRow>>,
    certificates: Vec<CertificateRow>,
    created: String,
    expires: String,
    last_used: Option<String>,
    status: &'static str,
    live: bool,
}

/// How many of the person's latest audit events the account page shows.
const RECENT_ACTIVITY: usize = 20;

#[derive(Serialize)]
struct ActivityRow {
    /// For ordering events and issuances together (not shown).
    #[serde(skip)]
    sort_at: OffsetDateTime,
    at: String,
    what: String,
    /// The address the request came from, when recorded.
    from: Option<String>,
}

#[derive(Serialize)]
struct SessionRow {
    created: String,
    expires: String,
    /// How the person signed in (`amr`, RFC 8176: `pwd`, …).
    method: String,
    /// The session of the browser looking at the page.
    current: bool,
}

#[derive(Clone, Serialize)]
struct DelegateeRow {
    client_id: String,
    name: String,
    /// The client that hands it work, if one the person approved declares it.
    via: Option<String>,
    scopes: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct CertificateRow {
    /// When it was recorded (for ordering, not shown).
    #[serde(skip)]
    recorded_at: OffsetDateTime,
    serial: String,
    subject: String,
    presenter: String,
    chain: String,
    not_after: String,
    status: &'static str,
}

impl CertificateRow {
    /// An issued certificate's row: the client that presented the token
    /// is the last step of its chain.
    pub(super) fn of(record: &crate::store::IssuanceRecord, now: OffsetDateTime) -> Self {
        let intent = &record.intent;
        Self {
            recorded_at: intent.recorded_at,
            serial: intent.serial.to_hex(),
            subject: intent.subject.clone(),
            presenter: intent
                .provenance
                .steps
                .last()
                .map(|s| s.client_id.clone())
                .unwrap_or_default(),
            chain: intent.provenance.chain_summary(),
            not_after: date(intent.not_after),
            status: certificate_status(record, now),
        }
    }
}

/// `revoked`, `expired`, `valid`, or for a record that never became a
/// certificate its state (`intent`, `abandoned`).
pub(super) fn certificate_status(
    record: &crate::store::IssuanceRecord,
    now: OffsetDateTime,
) -> &'static str {
    use crate::store::IssuanceState;
    match record.state {
        IssuanceState::Intent => "intent",
        IssuanceState::Abandoned => "abandoned",
        IssuanceState::Issued if record.revocation.is_some() => "revoked",
        IssuanceState::Issued if record.intent.not_after <= now => "expired",
        IssuanceState::Issued => "valid",
    }
}

/// One audit event as a line for the person it is about.
fn activity_line(event: &crate::store::AuditEvent) -> String {
    let detail = |name: &str| {
        event
            .detail
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let acting_client = event.actor.strip_prefix("client:").map(str::to_owned);
    let client = detail("client_id")
        .or_else(|| acting_client.clone())
        .unwrap_or_else(|| "an application".to_owned());
    let by_admin = event.actor == "admin";
    match event.action.as_str() {
        "user.login" => "Signed in".to_owned(),
        "user.create" => "Account created by the administrator".to_owned(),
        "user.set_password" if by_admin => "Password set by the administrator".to_owned(),
        "user.set_password" => "Password changed".to_owned(),
        "user.disable" => "Account disabled by the administrator".to_owned(),
        "user.enable" => "Account enabled by the administrator".to_owned(),
        "user.sessions.end" => {
            let ended = event
                .detail
                .get("ended")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            format!(
                "Signed out everywhere else ({ended} session{})",
                if ended == 1 { "" } else { "s" }
            )
        }
        "approval.create" => format!("Approved {client}"),
        "approval.widen" => format!("Approved more for {client}"),
        "approval.deny" => format!("Denied {client}"),
        "approval.revoke" => format!("Revoked the approval of {client}"),
        "grant.revoke" => format!("A sign-in of {client} was ended"),
        "token.issue" => format!(
            "{client} received an access token ({})",
            detail("grant_type").unwrap_or_else(|| "token".to_owned())
        ),
        "token.exchange" => {
            let names = |key: &str| -> Vec<String> {
                match event.detail.get(key) {
                    Some(serde_json::Value::Array(items)) => items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    Some(serde_json::Value::String(one)) => vec![one.clone()],
                    _ => Vec::new(),
                }
            };
            // Handed on to named delegatees, or taken over as the new
            // actor (the audience is then the certificate endpoint).
            let to: Vec<String> = names("aud")
                .into_iter()
                .filter(|a| !a.starts_with("https://"))
                .collect();
            if to.is_empty() {
                let mut chain = names("chain");
                chain.reverse();
                format!("{client} now acts for you along {}", chain.join(" → "))
            } else {
                format!("{client} passed a token on to {}", to.join(", "))
            }
        }
        "token.exchange.refused" => {
            format!("{client} was refused a token: you had not approved it there")
        }
        "refresh_token.reuse" => {
            format!("A refresh token of {client} was used twice; that sign-in was ended")
        }
        "certificate.revoke" => format!("Certificate {} marked revoked", event.target),
        other => other.to_owned(),
    }
}

/// How a session signed in, in words, from its `amr` values (RFC 8176).
fn sign_in_method(amr: &[String]) -> String {
    let words: Vec<&str> = amr
        .iter()
        .map(|m| match m.as_str() {
            "pwd" => "password",
            "otp" => "one-time code",
            "mfa" => "two factors",
            other => other,
        })
        .collect();
    if words.is_empty() {
        "signed in".to_owned()
    } else {
        format!("signed in with {}", words.join(" and "))
    }
}

/// `delegatees` grouped by steps below `root`: first those `root` hands
/// work to, then those each of them hands work to, and so on. A delegatee
/// no approved client declares any more (its `via` is gone) comes last,
/// in a step of its own, so it is still shown.
fn chain_steps(root: &str, mut delegatees: Vec<DelegateeRow>) -> Vec<Vec<DelegateeRow>> {
    let mut steps: Vec<Vec<DelegateeRow>> = Vec::new();
    let mut parents = vec![root.to_owned()];
    while !delegatees.is_empty() {
        let (step, rest): (Vec<_>, Vec<_>) = delegatees
            .into_iter()
            .partition(|d| d.via.as_ref().is_some_and(|v| parents.contains(v)));
        delegatees = rest;
        if step.is_empty() {
            steps.push(std::mem::take(&mut delegatees));
            break;
        }
        parents = step.iter().map(|d| d.client_id.clone()).collect();
        steps.push(step);
    }
    steps
}

/// The certificates issued under approval `approval_id`: those of its
/// grants, and through them of every token exchanged from them.
async fn certificates_under(
    store: &std::sync::Arc<dyn crate::store::Store>,
    approval_id: &str,
    now: OffsetDateTime,
) -> Result<Vec<CertificateRow>, crate::store::StoreError> {
    let mut certificates = Vec::new();
    for grant in store.grants_of(approval_id).await? {
        for serial in store
            .certificates_from(crate::store::Origin::Grant(&grant))
            .await?
        {
            if let Some(record) = store.issuance(&serial).await?
                && record.state == crate::store::IssuanceState::Issued
            {
                certificates.push(CertificateRow::of(&record, now));
            }
        }
    }
    Ok(certificates)
}

pub(crate) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let Some((value, session)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Account.login_path()));
    };
    let store = &state.inner.store;
    let user = super::account_of(&state, &session).await?;
    let client_of = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move {
            match ClientId::parse(&id) {
                Ok(parsed) => store.client(&parsed).await.ok().flatten(),
                Err(_) => None,
            }
        }
    };
    let mut approvals = Vec::new();
    let mut stored = store.approvals_of(&session.sub).await?;
    stored.sort_by_key(|a| std::cmp::Reverse(a.updated_at));
    for approval in stored {
        // Who hands work to whom: each approved delegatee under the root
        // client or under another approved delegatee that declares it.
        let root = client_of(&approval.client_id).await;
        let mut declared: Vec<(String, Vec<String>)> = vec![(
            approval.client_id.clone(),
            root.iter()
                .flat_map(|c| c.delegatees.iter().map(|d| d.as_str().to_owned()))
                .collect(),
        )];
        let mut names = std::collections::BTreeMap::new();
        for id in approval.delegatees.keys() {
            let client = client_of(id).await;
            names.insert(
                id.clone(),
                client
                    .as_ref()
                    .map_or_else(|| id.clone(), |c| c.name.clone()),
            );
            declared.push((
                id.clone(),
                client
                    .iter()
                    .flat_map(|c| c.delegatees.iter().map(|d| d.as_str().to_owned()))
                    .collect(),
            ));
        }
        let mut delegatees = Vec::new();
        for (id, scopes) in &approval.delegatees {
            let via = declared
                .iter()
                .find(|(parent, children)| parent != id && children.contains(id))
                .map(|(parent, _)| parent.clone());
            delegatees.push(DelegateeRow {
                client_id: id.clone(),
                name: names.get(id).cloned().unwrap_or_else(|| id.clone()),
                via,
                scopes: scopes.iter().cloned().collect(),
            });
        }
        let steps = chain_steps(&approval.client_id, delegatees);
        let delegatees = steps.iter().flatten().cloned().collect();
        let certificates = certificates_under(store, &approval.id, now).await?;
        let live = approval.is_live(now);
        approvals.push(ApprovalRow {
            client_name: root.map_or_else(|| approval.client_id.clone(), |c| c.name),
            certificates,
            id: approval.id,
            client_id: approval.client_id,
            scopes: approval.scopes.into_iter().collect(),
            delegatees,
            steps,
            created: date(approval.created_at),
            expires: date(approval.expires_at),
            last_used: approval.last_used.map(date),
            status: if approval.revoked.is_some() {
                "revoked"
            } else if live {
                "active"
            } else {
                "expired"
            },
            live,
        });
    }
    // The audit log has the sign-ins, consents and token events; the
    // issuances come from the issuance log (already read for the
    // approvals above), so a certificate costs no audit write.
    let mut activity: Vec<ActivityRow> = store
        .audit_of_person(&session.sub, RECENT_ACTIVITY)
        .await?
        .into_iter()
        .map(|record| ActivityRow {
            sort_at: record.event.at,
            at: date(record.event.at),
            what: activity_line(&record.event),
            from: record.event.source,
        })
        .collect();
    activity.extend(
        approvals
            .iter()
            .flat_map(|a| &a.certificates)
            .map(|c| ActivityRow {
                sort_at: c.recorded_at,
                at: date(c.recorded_at),
                what: format!(
                    "Certificate {} issued to {} ({})",
                    c.serial, c.presenter, c.chain
                ),
                from: None,
            }),
    );
    activity.sort_by_key(|row| std::cmp::Reverse(row.sort_at));
    activity.truncate(RECENT_ACTIVITY);
    let sessions: Vec<SessionRow> = state
        .inner
        .sessions
        .live_of(&session.sub, now)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            created: date(s.created_at),
            expires: date(s.expires_at),
            method: sign_in_method(&s.amr),
            current: s.id_hash == session.id_hash,
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        "account.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(&value),
            user => minijinja::context! {
                display_name => user.display_name,
                username => user.username,
                organisation => user.organisation,
            },
            live_approvals => approvals.iter().filter(|a| a.live).count(),
            approvals => approvals,
            sessions => sessions,
            activity => activity,
        },
    ))
}

/// `GET /account/approvals/{id}/revoke`: what revoking would end, and the
/// button that does it. Revocation cannot be undone, so it takes a second,
/// deliberate step; the page names what is affected so the person decides
/// knowingly.
pub(crate) async fn confirm_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(approval_id): Path<String>,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    let Some((value, session)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Account.login_path()));
    };
    let store = &state.inner.store;
    let approval = store
        .approvals_of(&session.sub)
        .await?
        .into_iter()
        .find(|a| a.id == approval_id)
        .ok_or_else(|| PageError::NotFound("There is no such approval in your account.".into()))?;
    if !approval.is_live(now) {
        return Ok(message_page(
            StatusCode::OK,
            "Nothing to revoke",
            "This approval has already been revoked or has expired.",
            &[],
            Some(("/account", "Back to your account")),
        ));
    }
    let client_name = match ClientId::parse(&approval.client_id) {
        Ok(id) => store.client(&id).await?.map(|c| c.name),
        Err(_) => None,
    }
    .unwrap_or_else(|| approval.client_id.clone());
    let grants = store.grants_of(&approval.id).await?.len();
    let valid = certificates_under(store, &approval.id, now)
        .await?
        .into_iter()
        .filter(|c| c.status == "valid")
        .collect::<Vec<_>>();
    Ok(render(
        StatusCode::OK,
        "revoke.html",
        minijinja::context! {
            csrf_token => state.inner.sessions.csrf_token(&value),
            id => approval.id,
            client_name => client_name,
            client_id => approval.client_id,
            delegatees => approval.delegatees.keys().collect::<Vec<_>>(),
            grants => grants,
            certificates => valid,
        },
    ))
}

/// `GET /account/certificates/{serial}`: one of the person's certificates
/// as PEM, to keep or to show a relying party. The certificate only: the
/// key never reaches slcs.
pub(crate) async fn certificate_pem(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(serial): Path<String>,
) -> Result<Response, PageError> {
    let Some((_, session)) = session_of(&state, &headers).await? else {
        return Ok(see_other(&Continue::Account.login_path()));
    };
    // The same answer for a malformed serial, someone else's certificate
    // and none at all: serials are not for enumerating.
    let not_yours = || PageError::NotFound("There is no such certificate in your account.".into());
    let serial: crate::store::Serial = serial.parse().map_err(|_| not_yours())?;
    let record = state
        .inner
        .store
        .issuance(&serial)
        .await?
        .filter(|r| r.intent.provenance.subject == session.sub)
        .ok_or_else(not_yours)?;
    let der = record.certificate.ok_or_else(not_yours)?;
    let body = crate::pki::certificate_pem(&der);
    let disposition = format!("attachment; filename=\"{}.pem\"", serial.to_hex());
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(approval_id): Path<String>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let now = state.inner.clock.now();
    // ATTACKS WEB-02: a revocation only from a form this site showed.
    let (_, session) = session_posting(&state, &headers, &form, "Nothing was revoked.").await?;
    let revoked = state
        .inner
        .tokens
        .revoke_approval(
            &session.sub,
            &approval_id,
            &format!("user:{}", session.sub),
            Some(source(&peer)),
            now,
        )
        .await
        .map_err(|e| match e {
            ApprovalError::NotFound => PageError::BadRequest("There is no such approval.".into()),
            ApprovalError::Store(e) => e.into(),
            other => PageError::BadRequest(format!("{other}.")),
        })?;
    let mut details = vec![format!(
        "{} grant{} revoked: their access and refresh tokens no longer work.",
        revoked.grants.len(),
        if revoked.grants.len() == 1 { "" } else { "s" }
    )];
    if revoked.certificates.is_empty() {
        details.push("No certificate had been issued under it.".into());
    } else {
        details.extend(
            revoked
                .certificates
                .iter()
                .map(|serial| format!("Certificate {serial} is marked revoked.")),
        );
    }
    Ok(message_page(
        StatusCode::OK,
        "Approval revoked",
        "The application can no longer act for you under this approval.",
        &details,
        Some(("/account", "Back to your account")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, via: Option<&str>) -> DelegateeRow {
        DelegateeRow {
            client_id: id.into(),
            name: id.into(),
            via: via.map(Into::into),
            scopes: Vec::new(),
        }
    }

    #[test]
    fn activity_reads_as_sentences() {
        let event =
            |actor: &str, action: &str, detail: serde_json::Value| crate::store::AuditEvent {
                at: time::macros::datetime!(2026-11-29 12:00 UTC),
                actor: actor.into(),
                action: action.into(),
                target: "x".into(),
                source: None,
                detail,
            };
        assert_eq!(
            activity_line(&event(
                "user:u",
                "approval.create",
                serde_json::json!({"client_id": "portal"})
            )),
            "Approved portal"
        );
        assert_eq!(
            activity_line(&event(
                "client:wps",
                "token.exchange",
                serde_json::json!({"chain": ["wps", "portal"], "aud": ["https://as/certificate"]})
            )),
            "wps now acts for you along portal → wps"
        );
        assert_eq!(
            activity_line(&event(
                "client:wps",
                "token.exchange",
                serde_json::json!({"chain": ["wps", "portal"], "aud": ["broker-a", "broker-b"]})
            )),
            "wps passed a token on to broker-a, broker-b"
        );
        assert_eq!(
            activity_line(&event("admin", "user.set_password", serde_json::json!({}))),
            "Password set by the administrator"
        );
        assert_eq!(
            activity_line(&event("user:u", "something.new", serde_json::json!({}))),
            "something.new"
        );
    }

    #[test]
    fn sign_in_methods_read_as_words() {
        assert_eq!(sign_in_method(&["pwd".into()]), "signed in with password");
        assert_eq!(
            sign_in_method(&["pwd".into(), "otp".into()]),
            "signed in with password and one-time code"
        );
        assert_eq!(sign_in_method(&[]), "signed in");
    }

    #[test]
    fn the_chain_is_drawn_step_by_step_from_the_root() {
        let steps = chain_steps(
            "portal",
            vec![
                row("broker-a", Some("wps")),
                row("orphan", None),
                row("broker-b", Some("wps")),
                row("wps", Some("portal")),
            ],
        );
        let ids: Vec<Vec<&str>> = steps
            .iter()
            .map(|s| s.iter().map(|d| d.client_id.as_str()).collect())
            .collect();
        assert_eq!(
            ids,
            [vec!["wps"], vec!["broker-a", "broker-b"], vec!["orphan"]]
        );
        assert!(chain_steps("portal", Vec::new()).is_empty());
    }
}
