//! The device authorization grant (RFC 8628): a CLI or a box without a
//! browser asks for a user code, the person confirms it at `/device` in
//! their own browser, and the device polls the token endpoint.
//!
//! Device codes carry 256 random bits and are stored as keyed hashes
//! (ATTACKS DV-02). User codes are 8 characters from RFC 8628 §6.1's
//! 20-consonant alphabet (34.5 bits), expire with the device code, and the
//! verification page is throttled per address (DV-01). Confirming always
//! takes an explicit POST after sign-in, on a page that names the client,
//! its owner, the scopes and delegatees, and warns against codes received
//! from others (DV-05); an approval on record does not skip it.

use std::collections::BTreeSet;

use serde::Serialize;
use time::OffsetDateTime;

use super::authorize::ConsentView;
use super::client_auth::AuthenticatedClient;
use super::clients::{Client, ClientId, ClientStatus, GrantType};
use super::grants::{DeviceRecord, DeviceStatus, UserGrant, random_secret, secret_key};
use super::user_grants::user_may_use;
use super::{GrantError, TokenResponse, TokenService, narrow_scope, random_id};
use crate::store::{AuditEvent, StoreError};
use crate::users::session::Session;

/// RFC 8628 §6.1: no vowels (no words), no look-alikes.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Characters in a user code.
const USER_CODE_LEN: usize = 8;
/// Path of the verification page.
pub const DEVICE_PAGE_PATH: &str = "/device";

/// The device authorization response (RFC 8628 §3.2).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceAuthorization {
    /// The device's secret.
    pub device_code: String,
    /// What the person types, `XXXX-XXXX`.
    pub user_code: String,
    /// Where the person goes.
    pub verification_uri: String,
    /// The same, with the user code filled in (it only pre-fills the form).
    pub verification_uri_complete: String,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// Why the verification page cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Unknown, expired or already used user code (one message: no oracle).
    #[error("that code is not valid; check it and try again, or start again on your device")]
    UnknownCode,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The normal form of a user code: upper case, separators and spaces
/// dropped, so `bcdf-ghjk` and `BCDF GHJK` are one code (one throttle
/// bucket too).
pub fn normalize_user_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t'))
        .flat_map(char::to_uppercase)
        .take(64)
        .collect()
}

/// `XXXX-XXXX` for display.
pub fn display_user_code(normalized: &str) -> String {
    let (left, right) = normalized.split_at(normalized.len().min(USER_CODE_LEN / 2));
    format!("{left}-{right}")
}

fn random_user_code() -> Option<String> {
    let mut bytes = [0u8; USER_CODE_LEN];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    // 256 is not a multiple of 20: redraw bytes ≥ 240 to keep every
    // character equally likely.
    let mut code = String::with_capacity(USER_CODE_LEN);
    for mut byte in bytes {
        while byte >= 240 {
            let mut one = [0u8; 1];
            aws_lc_rs::rand::fill(&mut one).ok()?;
            byte = one[0];
        }
        code.push(char::from(*USER_CODE_ALPHABET.get(usize::from(byte % 20))?));
    }
    Some(code)
}

impl TokenService {
    /// RFC 8628 §3.1–3.2: a client asks for a device and user code.
    pub async fn device_authorization(
        &self,
        client: &AuthenticatedClient,
        requested_scope: Option<&str>,
        requested_resource: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<DeviceAuthorization, GrantError> {
        let registered = &client.client;
        if !registered.allows_grant(GrantType::DeviceCode) {
            return Err(GrantError::UnauthorizedClient(
                "this client is not registered for the device authorization grant".into(),
            ));
        }
        let resource = self.requested_resource(requested_resource)?;
        let scope = narrow_scope(
            requested_scope,
            &registered.scopes,
            &registered.default_scopes,
            resource,
        )?;
        let lifetime = self.config().device_code_lifetime;
        let interval = self.config().device_poll_interval.as_secs();
        let random_failed = || GrantError::Signing("random generator failed".into());
        let device_code = random_secret("slcs_dc_").ok_or_else(random_failed)?;
        let mut record = DeviceRecord {
            hash: secret_key(self.pepper(), "device", &device_code),
            user_code: random_user_code().ok_or_else(random_failed)?,
            client_id: registered.id.as_str().to_owned(),
            scopes: scope.split(' ').map(str::to_owned).collect(),
            resource: self.indicator(resource),
            created_at: now,
            expires_at: now
                + time::Duration::try_from(lifetime).unwrap_or(time::Duration::minutes(10)),
            interval_secs: interval,
            last_poll: None,
            status: DeviceStatus::Pending,
        };
        // A user code still in use (1 in 2^34 per live code) draws again.
        let mut attempts = 0;
        loop {
            match self.store().put_device(&record).await {
                Ok(()) => break,
                Err(StoreError::Conflict(_)) if attempts < 5 => {
                    attempts += 1;
                    record.user_code = random_user_code().ok_or_else(random_failed)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let display = display_user_code(&record.user_code);
        let verification_uri = format!("{}{DEVICE_PAGE_PATH}", self.config().issuer);
        Ok(DeviceAuthorization {
            device_code,
            verification_uri_complete: format!("{verification_uri}?user_code={display}"),
            user_code: display,
            verification_uri,
            expires_in: lifetime.as_secs(),
            interval,
        })
    }

    /// The pending device authorization of a user code, with its client.
    async fn device_request(
        &self,
        user_code: &str,
        now: OffsetDateTime,
    ) -> Result<(DeviceRecord, Client), DeviceError> {
        let code = normalize_user_code(user_code);
        if code.len() != USER_CODE_LEN {
            return Err(DeviceError::UnknownCode);
        }
        let record = self
            .store()
            .device_by_user_code(&code)
            .await?
            .filter(|r| r.expires_at > now && r.status == DeviceStatus::Pending)
            .ok_or(DeviceError::UnknownCode)?;
        let client = match ClientId::parse(&record.client_id) {
            Ok(id) => self.store().client(&id).await?,
            Err(_) => None,
        }
        .filter(|c| c.status == ClientStatus::Active)
        .ok_or(DeviceError::UnknownCode)?;
        Ok((record, client))
    }

    /// The confirmation page of `user_code` for the signed-in person: who
    /// asks, for what, and what is new beyond their approval.
    pub async fn device_confirmation(
        &self,
        user_code: &str,
        session: &Session,
        now: OffsetDateTime,
    ) -> Result<ConsentView, DeviceError> {
        let (record, client) = self.device_request(user_code, now).await?;
        let need = self
            .consent_need_for(&client, &session.sub, &record.scopes, None, now)
            .await?;
        let name = self
            .users()
            .user(&session.sub)
            .await?
            .map(|u| u.display_name)
            .unwrap_or_default();
        // Every requested scope is listed: on this page the person confirms
        // the device's whole request, not only what is new.
        let mut view = self.consent_view(
            display_user_code(&record.user_code),
            &client,
            String::new(),
            &record.resource,
            &need,
            name,
        );
        if view.new_scopes.is_empty() {
            view.new_scopes = std::mem::take(&mut view.approved_scopes);
        }
        Ok(view)
    }

    /// The person's decision at the verification page (CSRF-checked POST).
    /// Approving records the approval and arms the device code; refusing,
    /// or a person the client does not admit, makes the next poll
    /// `access_denied` (ATTACKS DV-07).
    pub async fn device_decide(
        &self,
        user_code: &str,
        session: &Session,
        approved: bool,
        accepted_delegatees: &BTreeSet<String>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<bool, DeviceError> {
        let (record, client) = self.device_request(user_code, now).await?;
        let admitted = match self.users().user(&session.sub).await? {
            Some(user) => user_may_use(&client, &user).is_ok(),
            None => false,
        };
        let status = if approved && admitted {
            let approval = self
                .record_approval(
                    &session.sub,
                    &client,
                    &record.scopes,
                    None,
                    accepted_delegatees,
                    false,
                    source.clone(),
                    now,
                )
                .await?;
            let grant = UserGrant {
                grant_id: random_id("dg").map_err(|e| StoreError::Io(e.to_string()))?,
                sub: session.sub.clone(),
                client_id: record.client_id.clone(),
                scope: record
                    .scopes
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                resource: record.resource.clone(),
                approval_id: approval.id,
                auth_time: session.auth_time,
                amr: session.amr.clone(),
                root_grant_type: GrantType::DeviceCode.name().to_owned(),
            };
            self.store()
                .add_grant(&grant.approval_id, &grant.grant_id)
                .await?;
            DeviceStatus::Approved {
                grant: Box::new(grant),
            }
        } else {
            DeviceStatus::Denied
        };
        let granted = matches!(status, DeviceStatus::Approved { .. });
        let updated = DeviceRecord {
            status,
            ..record.clone()
        };
        self.store()
            .replace_device(&record, &updated)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => DeviceError::UnknownCode,
                other => DeviceError::Store(other),
            })?;
        self.store()
            .append_audit(&AuditEvent {
                at: now,
                actor: format!("user:{}", session.sub),
                action: if granted {
                    "device.approve".into()
                } else {
                    "device.deny".into()
                },
                target: record.client_id.clone(),
                source,
                detail: serde_json::json!({ "scopes": record.scopes }),
            })
            .await?;
        Ok(granted)
    }

    /// The device code grant (RFC 8628 §3.4–3.5): the device polls until
    /// the person decides. Exactly one poll after approval receives tokens
    /// (a compare-and-swap to `redeemed`, ATTACKS DV-04).
    pub async fn device_code(
        &self,
        client: &AuthenticatedClient,
        device_code: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        if !client.client.allows_grant(GrantType::DeviceCode) {
            return Err(GrantError::UnauthorizedClient(
                "this client is not registered for the device authorization grant".into(),
            ));
        }
        let hash = secret_key(self.pepper(), "device", device_code);
        let invalid = || GrantError::InvalidGrant("the device code is not valid".into());
        loop {
            let record = self.store().device(&hash).await?.ok_or_else(invalid)?;
            if record.client_id != client.client.id.as_str() {
                return Err(invalid());
            }
            if now >= record.expires_at {
                return Err(GrantError::ExpiredToken);
            }
            // RFC 8628 §3.5: polling faster than the interval is slow_down,
            // and the interval grows by 5 seconds.
            let too_fast = record.last_poll.is_some_and(|last| {
                now - last
                    < time::Duration::seconds(i64::try_from(record.interval_secs).unwrap_or(5))
            });
            let mut updated = record.clone();
            updated.last_poll = Some(now);
            if too_fast {
                updated.interval_secs = record.interval_secs.saturating_add(5).min(60);
            }
            let outcome = match &record.status {
                _ if too_fast => Err(GrantError::SlowDown(updated.interval_secs)),
                DeviceStatus::Pending => Err(GrantError::AuthorizationPending),
                DeviceStatus::Denied => Err(GrantError::AccessDenied(
                    "the person denied the request, or the application does not admit them".into(),
                )),
                DeviceStatus::Redeemed => Err(invalid()),
                DeviceStatus::Approved { grant } => {
                    updated.status = DeviceStatus::Redeemed;
                    Ok(grant.as_ref().clone())
                }
            };
            match self.store().replace_device(&record, &updated).await {
                Ok(()) => {}
                // A concurrent poll changed it: decide again on what it wrote.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            let grant = outcome?;
            let (user, _) = self
                .grant_is_live(&grant, &client.client, true, now)
                .await?;
            let refresh = if grant.has_scope("offline_access")
                && client.client.allows_grant(GrantType::RefreshToken)
            {
                Some(self.new_refresh(&grant, now).await?)
            } else {
                None
            };
            return self
                .mint_for_grant(
                    &grant,
                    &grant.scope,
                    client,
                    &user,
                    None,
                    refresh,
                    GrantType::DeviceCode.name(),
                    source,
                    now,
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_rfc_alphabet_and_normalize() {
        let code = random_user_code().unwrap();
        assert_eq!(code.len(), USER_CODE_LEN);
        assert!(
            code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)),
            "{code}"
        );
        let shown = display_user_code(&code);
        assert_eq!(shown.len(), 9);
        assert_eq!(normalize_user_code(&shown.to_lowercase()), code);
        assert_eq!(normalize_user_code("bcdf ghjk"), "BCDFGHJK");
    }
}
