//! A person's grants at the token endpoint: authorization codes with PKCE
//! (RFC 6749 §4.1, RFC 7636), rotated refresh tokens (RFC 6749 §6,
//! RFC 9700 §4.14.2), the ID tokens that go with them (OIDC Core §3.1.3),
//! `/userinfo`, and revoking an approval with everything issued under it.
//!
//! Every grant re-checks, each time it yields a token, that what the
//! person decided still holds: the approval is live, the grant is not
//! revoked, the account is enabled and still admitted by the client's
//! group, unit and guest rules (ATTACKS CODE-11, CA-06).

use serde::Serialize;
use time::OffsetDateTime;

use super::client_auth::AuthenticatedClient;
use super::clients::{Client, GrantType};
use super::grants::{
    AuthorizationCode, CODE_LIFETIME, CodeRedemption, RefreshRecord, RefreshState, UserGrant,
    random_secret, secret_key,
};
use super::id_token::{ACR_PASSWORD, ID_TOKEN_TYP, IdTokenClaims, PersonClaims, at_hash};
use super::jwt::{self, AccessTokenClaims, Audience, SubjectType};
use super::resource::BearerError;
use super::{GrantError, TokenResponse, TokenService, random_id};
use crate::store::{AuditEvent, Serial, StoreError};
use crate::users::User;

/// Prefix of refresh tokens (secret scanners can recognise a leaked one).
pub const REFRESH_TOKEN_PREFIX: &str = "slcs_rt_";
/// Prefix of authorization codes.
pub const CODE_PREFIX: &str = "slcs_ac_";

/// Whether `user` may use `client`: enabled, not a guest where guests are
/// refused, and a member of one of its groups or units where access is
/// restricted (the seed's `featureAuthenticate` and
/// `accessDeniedToGuests`). The message is shown to the person.
pub fn user_may_use(client: &Client, user: &User) -> Result<(), &'static str> {
    if user.disabled {
        return Err("your account is disabled");
    }
    if client.access_denied_to_guests && user.guest {
        return Err("this application does not accept guest accounts");
    }
    let restriction = &client.feature_authenticate;
    if restriction.enabled
        && !restriction.groups.iter().any(|g| user.groups.contains(g))
        && !restriction.units.iter().any(|u| user.in_unit(u))
    {
        return Err("this application is restricted to members of certain groups or units");
    }
    Ok(())
}

/// The parameters of an authorization code redemption (RFC 6749 §4.1.3,
/// RFC 7636 §4.5).
#[derive(Clone, Copy, Debug)]
pub struct CodeRequest<'a> {
    /// `code`.
    pub code: &'a str,
    /// `redirect_uri`.
    pub redirect_uri: Option<&'a str>,
    /// `code_verifier`.
    pub code_verifier: Option<&'a str>,
}

/// What revoking an approval revoked.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApprovalRevoked {
    /// The approval.
    pub approval_id: String,
    /// Grants (token families) revoked.
    pub grants: Vec<String>,
    /// Certificates marked revoked in the issuance log.
    pub certificates: Vec<String>,
}

/// Why an approval could not be revoked or changed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No such approval of this person.
    #[error("no such approval")]
    NotFound,
    /// Revoked or expired: there is nothing left to change.
    #[error("the approval has been revoked or has expired")]
    NotLive,
    /// What the person saw is no longer what is stored (a consent widened
    /// it meanwhile): nothing was changed, they should look again.
    #[error("the approval changed meanwhile")]
    Changed,
    /// The narrowing asked for is not one.
    #[error(transparent)]
    Narrow(#[from] crate::delegation::NarrowError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a PKCE challenge is remembered to notice a repeat.
const PKCE_REPEAT_WINDOW: time::Duration = time::Duration::hours(24);

impl TokenService {
    /// Issues an authorization code for `grant` (RFC 6749 §4.1.2): records
    /// the grant under its approval first, so revoking the approval reaches
    /// a code not yet redeemed, then the code's keyed hash. Returns the code.
    pub async fn issue_code(
        &self,
        grant: UserGrant,
        redirect_uri: &str,
        code_challenge: &str,
        nonce: Option<String>,
        now: OffsetDateTime,
    ) -> Result<String, GrantError> {
        let code = random_secret(CODE_PREFIX)
            .ok_or_else(|| GrantError::Signing("random generator failed".into()))?;
        let (grant_client, grant_sub) = (grant.client_id.clone(), grant.sub.clone());
        self.store()
            .add_grant(&grant.approval_id, &grant.grant_id)
            .await?;
        self.store()
            .put_code(&AuthorizationCode {
                hash: secret_key(self.pepper(), "code", &code),
                grant,
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: code_challenge.to_owned(),
                nonce,
                created_at: now,
                expires_at: now + CODE_LIFETIME,
                redeemed_at: None,
            })
            .await?;
        self.note_repeated_challenge(&grant_client, &grant_sub, code_challenge, now)
            .await?;
        Ok(code)
    }

    /// RFC 9700 §2.1.1 (ATTACKS CODE-05): a client whose PKCE challenges
    /// repeat is not making a fresh verifier per request, so its codes are
    /// only as safe as that one verifier. The code is still issued (a
    /// reloaded authorization page repeats a challenge legitimately), but a
    /// repeat within a day is logged, audited as `authorize.pkce_repeated`
    /// for the operator to follow up, and counted. The record is the
    /// store's single-use cache, so replicas see each other's challenges.
    async fn note_repeated_challenge(
        &self,
        client_id: &str,
        sub: &str,
        code_challenge: &str,
        now: OffsetDateTime,
    ) -> Result<(), GrantError> {
        let key = format!("pkce/{client_id}/{code_challenge}");
        if self
            .store()
            .use_once(&key, now + PKCE_REPEAT_WINDOW)
            .await?
        {
            return Ok(());
        }
        tracing::warn!(
            client = %client_id,
            "PKCE challenge repeated: the client reuses its code_verifier (RFC 9700 §2.1.1)"
        );
        metrics::counter!(crate::observability::PKCE_CHALLENGE_REPEATED).increment(1);
        self.store()
            .append_audit(&AuditEvent {
                at: now,
                actor: format!("client:{client_id}"),
                action: "authorize.pkce_repeated".into(),
                target: client_id.to_owned(),
                source: None,
                detail: serde_json::json!({ "sub": sub, "code_challenge": code_challenge }),
            })
            .await?;
        Ok(())
    }

    /// The authorization code grant (RFC 6749 §4.1.3 with RFC 7636 §4.6).
    /// The code is spent by the first redemption, atomically, before any
    /// other check: of concurrent redemptions exactly one proceeds
    /// (ATTACKS CODE-08), and a wrong verifier burns the code so that it
    /// cannot be guessed at (CODE-02). A second redemption revokes
    /// everything the first one obtained (RFC 6749 §4.1.2).
    pub async fn authorization_code(
        &self,
        client: &AuthenticatedClient,
        request: CodeRequest<'_>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        if !client.client.allows_grant(GrantType::AuthorizationCode) {
            return Err(GrantError::UnauthorizedClient(
                "this client is not registered for the authorization_code grant".into(),
            ));
        }
        let hash = secret_key(self.pepper(), "code", request.code);
        let code = match self.store().redeem_code(&hash, now).await? {
            CodeRedemption::Unknown => {
                return Err(GrantError::InvalidGrant(
                    "the authorization code is not valid".into(),
                ));
            }
            CodeRedemption::Replayed(code) => {
                if code.grant.client_id == client.client.id.as_str() {
                    let actor = format!("client:{}", code.grant.client_id);
                    self.revoke_grant(&code.grant.grant_id, &actor, source, now)
                        .await?;
                    tracing::warn!(
                        grant = %code.grant.grant_id,
                        "authorization code redeemed twice; its grant is revoked"
                    );
                }
                return Err(GrantError::InvalidGrant(
                    "the authorization code was already used; everything issued from it is revoked"
                        .into(),
                ));
            }
            CodeRedemption::Fresh(code) => code,
        };
        // RFC 6749 §4.1.3: issued to this client, for this redirect URI.
        if code.grant.client_id != client.client.id.as_str() {
            return Err(GrantError::InvalidGrant(
                "the authorization code was issued to another client".into(),
            ));
        }
        if now >= code.expires_at {
            return Err(GrantError::InvalidGrant(
                "the authorization code has expired".into(),
            ));
        }
        if request.redirect_uri != Some(code.redirect_uri.as_str()) {
            return Err(GrantError::InvalidGrant(
                "redirect_uri differs from the authorization request's".into(),
            ));
        }
        verify_pkce(request.code_verifier, &code.code_challenge)?;
        // The grant's own revocation is not consulted here: the only thing
        // that can revoke a grant between its code's issue and redemption
        // is a concurrent replay of this very code, and the single-use swap
        // above already made this request the one winner (ATTACKS CODE-08:
        // exactly one 200). The tokens it gets are revoked with the grant.
        // A revoked approval (CODE-11) is still refused.
        let (user, _) = self
            .grant_is_live(&code.grant, &client.client, false, now)
            .await?;
        let with_refresh = code.grant.has_scope("offline_access")
            && client.client.allows_grant(GrantType::RefreshToken);
        let refresh = if with_refresh {
            Some(self.new_refresh(&code.grant, now).await?)
        } else {
            None
        };
        let grant = code.grant.clone();
        self.mint_for_grant(
            &grant,
            &grant.scope,
            client,
            &user,
            code.nonce.as_deref(),
            refresh,
            "authorization_code",
            source,
            now,
        )
        .await
    }

    /// The refresh token grant (RFC 6749 §6), rotating on every use
    /// (RFC 9700 §4.14.2). A token presented after it was rotated is a
    /// reuse: the whole grant is revoked (ATTACKS RT-01), unless
    /// `oauth.refresh_reuse_grace_secs` is set, the reuse comes within it,
    /// and the successor was never used (a lost response): then the
    /// successor is revoked and replaced, so the family never forks (RT-02).
    pub async fn refresh(
        &self,
        client: &AuthenticatedClient,
        token: &str,
        requested_scope: Option<&str>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        if !client.client.allows_grant(GrantType::RefreshToken) {
            return Err(GrantError::UnauthorizedClient(
                "this client is not registered for the refresh_token grant".into(),
            ));
        }
        let invalid = || GrantError::InvalidGrant("the refresh token is not valid".into());
        let hash = secret_key(self.pepper(), "refresh", token);
        let record = self
            .store()
            .refresh_token(&hash)
            .await?
            .ok_or_else(invalid)?;
        if record.grant.client_id != client.client.id.as_str() {
            // RFC 9700 §4.14.2: bound to the client it was issued to.
            return Err(invalid());
        }
        match &record.state {
            RefreshState::Active => {}
            RefreshState::Revoked { .. } => return Err(invalid()),
            RefreshState::Rotated { at, successor } => {
                return self
                    .refresh_reused(
                        client,
                        &record,
                        *at,
                        successor,
                        requested_scope,
                        source,
                        now,
                    )
                    .await;
            }
        }
        self.rotate(client, &record, requested_scope, source, now)
            .await
    }

    /// Exchanges the stored refresh token `stored` for a successor and an
    /// access token. The successor is stored first (unreachable until the
    /// swap), then `stored` is swapped to rotated: of concurrent refreshes
    /// exactly one swap succeeds, and a loser is treated as a reuse.
    async fn rotate(
        &self,
        client: &AuthenticatedClient,
        stored: &RefreshRecord,
        requested_scope: Option<&str>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        if now >= stored.expires_at {
            return Err(GrantError::InvalidGrant(
                "the refresh token has expired; sign in again".into(),
            ));
        }
        let scope = narrow_refresh_scope(&stored.grant, requested_scope)?;
        let (user, approval) = self
            .grant_is_live(&stored.grant, &client.client, true, now)
            .await?;
        // The person may have narrowed the approval since the grant: the
        // refresh carries no scope it no longer covers.
        let scope = within_approval(&scope, &approval)?;
        let successor = random_secret(REFRESH_TOKEN_PREFIX)
            .ok_or_else(|| GrantError::Signing("random generator failed".into()))?;
        let successor_hash = secret_key(self.pepper(), "refresh", &successor);
        self.store()
            .put_refresh(&RefreshRecord {
                hash: successor_hash.clone(),
                grant: stored.grant.clone(),
                created_at: now,
                expires_at: stored.expires_at,
                state: RefreshState::Active,
            })
            .await?;
        let rotated = RefreshRecord {
            state: RefreshState::Rotated {
                at: now,
                successor: successor_hash,
            },
            ..stored.clone()
        };
        match self.store().replace_refresh(stored, &rotated).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                let actor = format!("client:{}", stored.grant.client_id);
                self.revoke_grant(&stored.grant.grant_id, &actor, source, now)
                    .await?;
                return Err(GrantError::InvalidGrant(
                    "the refresh token was used concurrently; its grant is revoked".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.mint_for_grant(
            &stored.grant,
            &scope,
            client,
            &user,
            None,
            Some(successor),
            "refresh_token",
            source,
            now,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn refresh_reused(
        &self,
        client: &AuthenticatedClient,
        record: &RefreshRecord,
        rotated_at: OffsetDateTime,
        successor_hash: &str,
        requested_scope: Option<&str>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        let grace = time::Duration::try_from(self.config().refresh_reuse_grace)
            .unwrap_or(time::Duration::ZERO);
        if grace > time::Duration::ZERO && now - rotated_at <= grace {
            let successor = self.store().refresh_token(successor_hash).await?;
            if let Some(successor) = successor.filter(|s| s.state == RefreshState::Active) {
                // A lost response: retire the successor nobody has used and
                // rotate the presented token again. If the successor is
                // used meanwhile the swap fails and this is a reuse after all.
                let retired = RefreshRecord {
                    state: RefreshState::Revoked { at: now },
                    ..successor.clone()
                };
                if self
                    .store()
                    .replace_refresh(&successor, &retired)
                    .await
                    .is_ok()
                {
                    return self
                        .rotate(client, record, requested_scope, source, now)
                        .await;
                }
            }
        }
        let actor = format!("client:{}", record.grant.client_id);
        self.revoke_grant(&record.grant.grant_id, &actor, source.clone(), now)
            .await?;
        self.store()
            .append_audit(&AuditEvent {
                at: now,
                actor,
                action: "refresh_token.reuse".into(),
                target: record.grant.grant_id.clone(),
                source,
                detail: serde_json::json!({ "sub": record.grant.sub }),
            })
            .await?;
        Err(GrantError::InvalidGrant(
            "the refresh token was already used; its grant is revoked (RFC 9700 §4.14.2)".into(),
        ))
    }

    /// A new refresh token for `grant`, valid for
    /// `oauth.refresh_token_lifetime_secs` but never beyond its approval.
    pub(super) async fn new_refresh(
        &self,
        grant: &UserGrant,
        now: OffsetDateTime,
    ) -> Result<String, GrantError> {
        let token = random_secret(REFRESH_TOKEN_PREFIX)
            .ok_or_else(|| GrantError::Signing("random generator failed".into()))?;
        let lifetime = time::Duration::try_from(self.config().refresh_token_lifetime)
            .unwrap_or(time::Duration::days(30));
        let approval_end = self
            .store()
            .approval(&grant.approval_id)
            .await?
            .map_or(now, |a| a.expires_at);
        self.store()
            .put_refresh(&RefreshRecord {
                hash: secret_key(self.pepper(), "refresh", &token),
                grant: grant.clone(),
                created_at: now,
                expires_at: (now + lifetime).min(approval_end),
                state: RefreshState::Active,
            })
            .await?;
        Ok(token)
    }

    /// Whether `grant` may still yield tokens for `client` at `now` (the
    /// grant's own revocation checked when `check_revoked`); returns the
    /// person.
    pub(super) async fn grant_is_live(
        &self,
        grant: &UserGrant,
        client: &Client,
        check_revoked: bool,
        now: OffsetDateTime,
    ) -> Result<(User, crate::delegation::Approval), GrantError> {
        let refused = |why: &str| GrantError::InvalidGrant(why.to_owned());
        if check_revoked && self.store().is_revoked("", &grant.grant_id).await? {
            return Err(refused("the grant has been revoked"));
        }
        let approval = self
            .store()
            .approval(&grant.approval_id)
            .await?
            .filter(|a| a.is_live(now))
            .ok_or_else(|| {
                refused("the person's approval of this client has been revoked or has expired")
            })?;
        let user = self
            .users()
            .user(&grant.sub)
            .await?
            .ok_or_else(|| refused("the account no longer exists"))?;
        user_may_use(client, &user).map_err(refused)?;
        Ok((user, approval))
    }

    /// Mints the access token (and, per scope, the ID token) of a grant,
    /// audits the issue and records the approval's use.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn mint_for_grant(
        &self,
        grant: &UserGrant,
        scope: &str,
        client: &AuthenticatedClient,
        user: &User,
        nonce: Option<&str>,
        refresh_token: Option<String>,
        grant_type: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        let lifetime = self.config().access_token_lifetime;
        let iat = now.unix_timestamp();
        let exp = iat + i64::try_from(lifetime.as_secs()).unwrap_or(900);
        let claims = AccessTokenClaims {
            iss: self.config().issuer.clone(),
            sub: grant.sub.clone(),
            aud: Audience::one(grant.resource.clone()),
            client_id: grant.client_id.clone(),
            scope: scope.to_owned(),
            jti: random_id("at")?,
            iat,
            exp,
            nbf: None,
            grant_id: grant.grant_id.clone(),
            subject_type: SubjectType::User,
            act: None,
            client_auth: Some(client.method.name().to_owned()),
            grant_type: Some(grant.root_grant_type.clone()),
            auth_time: Some(grant.auth_time.unix_timestamp()),
            acr: Some(ACR_PASSWORD.to_owned()),
            amr: Some(grant.amr.clone()),
            approval_id: Some(grant.approval_id.clone()),
        };
        let (access_token, id_token) = {
            let keys = self.keys_read();
            let access_token =
                jwt::mint(&keys, &claims).map_err(|e| GrantError::Signing(e.to_string()))?;
            let id_token = if scope.split(' ').any(|s| s == "openid") {
                let id_claims = IdTokenClaims {
                    iss: claims.iss.clone(),
                    sub: claims.sub.clone(),
                    aud: grant.client_id.clone(),
                    azp: grant.client_id.clone(),
                    exp,
                    iat,
                    auth_time: grant.auth_time.unix_timestamp(),
                    nonce: nonce.map(str::to_owned),
                    acr: ACR_PASSWORD.to_owned(),
                    amr: grant.amr.clone(),
                    at_hash: Some(at_hash(keys.algorithm(), &access_token)),
                    profile: PersonClaims::for_scope(user, scope),
                };
                Some(
                    jwt::sign_compact(&keys, ID_TOKEN_TYP, &id_claims)
                        .map_err(|e| GrantError::Signing(e.to_string()))?,
                )
            } else {
                None
            };
            (access_token, id_token)
        };
        self.store()
            .append_audit(&AuditEvent {
                at: now,
                actor: format!("client:{}", grant.client_id),
                action: "token.issue".into(),
                target: claims.jti.clone(),
                source,
                detail: serde_json::json!({
                    "grant_type": grant_type,
                    "grant_id": grant.grant_id,
                    "sub": grant.sub,
                    "approval_id": grant.approval_id,
                    "scope": scope,
                    "aud": claims.aud,
                    "client_auth": client.method.name(),
                    "refresh_token": refresh_token.is_some(),
                    "exp": exp,
                }),
            })
            .await?;
        self.touch_approval(&grant.approval_id, now).await?;
        metrics::counter!(crate::observability::TOKENS_ISSUED, "grant_type" => grant_type.to_owned())
            .increment(1);
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: lifetime.as_secs(),
            scope: scope.to_owned(),
            refresh_token,
            id_token,
            issued_token_type: None,
        })
    }

    /// Records that an approval was just used (shown in the workspace).
    /// At most one write a minute per approval; a lost race is harmless.
    async fn touch_approval(&self, id: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        let Some(approval) = self.store().approval(id).await? else {
            return Ok(());
        };
        if approval
            .last_used
            .is_some_and(|last| now - last < time::Duration::minutes(1))
        {
            return Ok(());
        }
        let mut used = approval.clone();
        used.last_used = Some(now);
        match self.store().save_approval(Some(&approval), &used).await {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Revokes `sub`'s approval `approval_id`: the approval stops covering
    /// anything, every grant made under it is revoked (so its refresh and
    /// access tokens fail), and every certificate issued from those grants
    /// is marked revoked in the issuance log (BRIEF §3).
    pub async fn revoke_approval(
        &self,
        sub: &str,
        approval_id: &str,
        actor: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<ApprovalRevoked, ApprovalError> {
        loop {
            let approval = self
                .store()
                .approval(approval_id)
                .await?
                .filter(|a| a.sub == sub)
                .ok_or(ApprovalError::NotFound)?;
            if approval.revoked.is_none() {
                let mut revoked = approval.clone();
                revoked.revoked = Some(crate::delegation::ApprovalRevocation {
                    at: now,
                    by: actor.to_owned(),
                });
                match self.store().save_approval(Some(&approval), &revoked).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
                self.store()
                    .append_audit(&AuditEvent {
                        at: now,
                        actor: actor.to_owned(),
                        action: "approval.revoke".into(),
                        target: approval.id.clone(),
                        source: source.clone(),
                        detail: serde_json::json!({
                            "sub": approval.sub,
                            "client_id": approval.client_id,
                        }),
                    })
                    .await?;
            }
            // Revoking again finishes a cascade a crash interrupted.
            let mut summary = ApprovalRevoked {
                approval_id: approval.id.clone(),
                ..ApprovalRevoked::default()
            };
            for grant in self.store().grants_of(&approval.id).await? {
                let serials: Vec<Serial> = self
                    .revoke_grant(&grant, actor, source.clone(), now)
                    .await?;
                summary
                    .certificates
                    .extend(serials.iter().map(Serial::to_hex));
                summary.grants.push(grant);
            }
            return Ok(summary);
        }
    }

    /// Narrows `sub`'s live approval `approval_id` to `keep`, provided its
    /// scopes and delegatees are still those of `seen` (what the person
    /// decided on). From then on its tokens carry only what is kept:
    /// refreshes are cut down to the kept scopes and exchanges to the kept
    /// delegatees; tokens already issued run out within their lifetime.
    pub async fn narrow_approval(
        &self,
        sub: &str,
        seen: &crate::delegation::Approval,
        keep: &crate::delegation::Narrowing,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<crate::delegation::Approval, ApprovalError> {
        self.change_approval(sub, &seen.id, "approval.narrow", source, now, |current| {
            if current.scopes != seen.scopes || current.delegatees != seen.delegatees {
                return Err(ApprovalError::Changed);
            }
            Ok(current.narrowed(keep, now)?)
        })
        .await
    }

    /// Extends `sub`'s live approval `approval_id` to the configured
    /// approval lifetime from `now` (what a new consent would give).
    pub async fn extend_approval(
        &self,
        sub: &str,
        approval_id: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<crate::delegation::Approval, ApprovalError> {
        let lifetime = time::Duration::try_from(self.delegation().approval_lifetime)
            .unwrap_or(time::Duration::days(90));
        self.change_approval(
            sub,
            approval_id,
            "approval.extend",
            source,
            now,
            |current| Ok(current.extended(lifetime, now)),
        )
        .await
    }

    /// Applies `change` to the person's live approval by compare-and-swap
    /// and audits it, durably, before answering.
    async fn change_approval(
        &self,
        sub: &str,
        approval_id: &str,
        action: &str,
        source: Option<String>,
        now: OffsetDateTime,
        change: impl Fn(
            &crate::delegation::Approval,
        ) -> Result<crate::delegation::Approval, ApprovalError>,
    ) -> Result<crate::delegation::Approval, ApprovalError> {
        loop {
            let current = self
                .store()
                .approval(approval_id)
                .await?
                .filter(|a| a.sub == sub)
                .ok_or(ApprovalError::NotFound)?;
            if !current.is_live(now) {
                return Err(ApprovalError::NotLive);
            }
            let changed = change(&current)?;
            match self.store().save_approval(Some(&current), &changed).await {
                Ok(()) => {}
                // Its last use was recorded meanwhile: decide again on
                // the fresh record.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            self.store()
                .append_audit(&AuditEvent {
                    at: now,
                    actor: format!("user:{sub}"),
                    action: action.to_owned(),
                    target: changed.id.clone(),
                    source,
                    detail: serde_json::json!({
                        "sub": sub,
                        "client_id": changed.client_id,
                        "scopes": changed.scopes,
                        "delegatees": changed.delegatees.keys().collect::<Vec<_>>(),
                        "expires": changed.expires_at.unix_timestamp(),
                    }),
                })
                .await?;
            return Ok(changed);
        }
    }

    /// OIDC `/userinfo` (OIDC Core §5.3): the claims the token's scope
    /// releases, for a live user token carrying `openid`.
    pub async fn userinfo(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<serde_json::Value, BearerError> {
        let claims = self
            .verify_any(token, now)
            .ok_or(BearerError::InvalidToken("the access token is not valid"))?;
        if claims.subject_type != SubjectType::User {
            return Err(BearerError::InvalidToken(
                "userinfo describes people; this is a service-account token",
            ));
        }
        if self
            .store()
            .is_revoked(&claims.jti, &claims.grant_id)
            .await?
        {
            return Err(BearerError::InvalidToken(
                "the access token has been revoked",
            ));
        }
        if !claims.scope.split(' ').any(|s| s == "openid") {
            return Err(BearerError::InsufficientScope("openid"));
        }
        let user = self
            .users()
            .user(&claims.sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(BearerError::InvalidToken("the account is not available"))?;
        let mut body = serde_json::to_value(PersonClaims::for_scope(&user, &claims.scope))
            .unwrap_or_else(|_| serde_json::json!({}));
        if let Some(object) = body.as_object_mut() {
            object.insert("sub".into(), serde_json::Value::String(user.sub));
        }
        Ok(body)
    }
}

/// RFC 6749 §6: a refresh may narrow the scope, never widen it
/// (ATTACKS RT-03).
fn narrow_refresh_scope(grant: &UserGrant, requested: Option<&str>) -> Result<String, GrantError> {
    let Some(requested) = requested else {
        return Ok(grant.scope.clone());
    };
    let granted = grant.scopes();
    let mut scope: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !granted.contains(s) {
            return Err(GrantError::InvalidScope(format!(
                "scope {s:?} was not granted; a refresh may only narrow the scope"
            )));
        }
        if !scope.contains(&s) {
            scope.push(s);
        }
    }
    if scope.is_empty() {
        return Err(GrantError::InvalidScope(
            "the requested scope is empty".into(),
        ));
    }
    Ok(scope.join(" "))
}

/// `scope` without what `approval` no longer covers; `invalid_grant` when
/// nothing is left (the person narrowed the approval away from this
/// grant's every scope).
fn within_approval(
    scope: &str,
    approval: &crate::delegation::Approval,
) -> Result<String, GrantError> {
    let kept: Vec<&str> = scope
        .split(' ')
        .filter(|s| approval.scopes.contains(*s))
        .collect();
    if kept.is_empty() {
        return Err(GrantError::InvalidGrant(
            "the person's approval no longer covers any scope of this grant".into(),
        ));
    }
    Ok(kept.join(" "))
}

/// RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) must equal the stored
/// challenge; a verifier must be 43 to 128 unreserved characters (§4.1).
/// Every failure is `invalid_grant` (one documented choice for CODE-02 and
/// CODE-03).
pub fn verify_pkce(verifier: Option<&str>, challenge: &str) -> Result<(), GrantError> {
    use base64::Engine as _;
    let verifier = verifier.ok_or_else(|| {
        GrantError::InvalidGrant("code_verifier is required (PKCE, RFC 7636)".into())
    })?;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return Err(GrantError::InvalidGrant(
            "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~".into(),
        ));
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    if aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes())
        .is_err()
    {
        return Err(GrantError::InvalidGrant(
            "code_verifier does not match the code_challenge".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::macros::datetime;

    use super::*;
    use crate::oauth::authorize::AuthorizeStep;
    use crate::oauth::clients::TokenEndpointAuthMethod;
    use crate::oauth::registry::{Caller, Registry};
    use crate::store::sled::{OpenMode, SledOptions, SledStore};
    use crate::users::session::Session;
    use crate::users::{LocalUsers, NewUser, PasswordParams, UserSource as _};

    const T0: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    /// A token service on a fresh store with the portal registered and a
    /// person signed in at `T0`; time is whatever each call passes.
    struct Fixture {
        _dir: tempfile::TempDir,
        tokens: TokenService,
        portal: AuthenticatedClient,
        session: Session,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::load(
            None,
            [
                ("SLCS_DATA_DIR".to_owned(), dir.path().display().to_string()),
                (
                    "SLCS_OAUTH_REFRESH_TOKEN_LIFETIME_SECS".to_owned(),
                    "3600".to_owned(),
                ),
            ],
            &crate::config::CliOverrides::default(),
        )
        .unwrap();
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let store: Arc<dyn crate::store::Store> = Arc::new(
            SledStore::open(&SledOptions {
                path: config.store.path.clone(),
                cache_capacity_bytes: 8 << 20,
                mode: OpenMode::CreateIfMissing,
                ca_key_sha256: None,
            })
            .unwrap(),
        );
        let cheap = PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let users = Arc::new(LocalUsers::new(Arc::clone(&store), cheap).unwrap());
        let tokens = TokenService::start(&config, Arc::clone(&store), users.clone(), T0)
            .await
            .unwrap();
        let representation = serde_json::from_value(serde_json::json!({
            "client": {
                "clientId": "portal",
                "name": "Portal",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": ["https://portal.example/cb"],
                "defaultClientScopes": ["openid", "slcs:certificate"],
                "optionalClientScopes": ["offline_access"]
            }
        }))
        .unwrap();
        let admin = Caller {
            subject: "admin".into(),
            is_admin: true,
            source: None,
        };
        let registry = Registry {
            store: store.as_ref(),
            pepper: tokens.pepper(),
            development: true,
        };
        registry
            .register(&admin, &representation, T0)
            .await
            .unwrap();
        let client = store
            .client(&crate::oauth::clients::ClientId::parse("portal").unwrap())
            .await
            .unwrap()
            .unwrap();
        let alice = users
            .create(
                NewUser {
                    username: "alice".into(),
                    display_name: "Alice".into(),
                    password: Some("a long enough password".into()),
                    ..NewUser::default()
                },
                "admin",
                T0,
            )
            .await
            .unwrap();
        assert!(
            users
                .authenticate("alice", "a long enough password")
                .await
                .is_ok()
        );
        Fixture {
            _dir: dir,
            tokens,
            portal: AuthenticatedClient {
                client,
                method: TokenEndpointAuthMethod::ClientSecretBasic,
            },
            session: Session {
                id_hash: "s".into(),
                sub: alice.sub,
                auth_time: T0,
                amr: vec!["pwd".into()],
                created_at: T0,
                expires_at: T0 + time::Duration::hours(8),
                last_seen: Some(T0),
                second_factor_at: None,
            },
        }
    }

    fn params(extra: &[(&str, &str)]) -> crate::oauth::authorize::AuthorizeParams {
        let mut params: crate::oauth::authorize::AuthorizeParams = [
            ("response_type", "code"),
            ("client_id", "portal"),
            ("redirect_uri", "https://portal.example/cb"),
            ("scope", "openid offline_access slcs:certificate"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        params
    }

    /// Approves (first time) and returns a code issued at `at`.
    async fn code_at(f: &Fixture, at: OffsetDateTime) -> String {
        let step = f
            .tokens
            .begin_authorization(&params(&[]), Some(&f.session), at)
            .await
            .unwrap();
        let step = match step {
            AuthorizeStep::Consent(view) => f
                .tokens
                .decide_consent(
                    &view.request,
                    &f.session,
                    true,
                    &std::collections::BTreeSet::new(),
                    None,
                    at,
                )
                .await
                .unwrap(),
            other => other,
        };
        let AuthorizeStep::Redirect { params, .. } = step else {
            panic!("no redirect: {step:?}");
        };
        params
            .into_iter()
            .find(|(name, _)| *name == "code")
            .unwrap()
            .1
    }

    fn request(code: &str) -> CodeRequest<'_> {
        CodeRequest {
            code,
            redirect_uri: Some("https://portal.example/cb"),
            code_verifier: Some(VERIFIER),
        }
    }

    #[tokio::test]
    async fn code_09_a_code_is_dead_one_second_after_its_60() {
        let f = fixture().await;
        let code = code_at(&f, T0).await;
        let late = T0 + CODE_LIFETIME + time::Duration::seconds(1);
        let refused = f
            .tokens
            .authorization_code(&f.portal, request(&code), None, late)
            .await;
        assert!(
            matches!(&refused, Err(GrantError::InvalidGrant(m)) if m.contains("expired")),
            "{refused:?}"
        );
        let code = code_at(&f, T0).await;
        let in_time = T0 + CODE_LIFETIME - time::Duration::seconds(1);
        assert!(
            f.tokens
                .authorization_code(&f.portal, request(&code), None, in_time)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn rt_07_refreshing_never_extends_the_absolute_lifetime() {
        let f = fixture().await;
        let code = code_at(&f, T0).await;
        let first = f
            .tokens
            .authorization_code(&f.portal, request(&code), None, T0)
            .await
            .unwrap();
        // Every 20 minutes: fine until the hour (oauth.refresh_token_lifetime_secs
        // = 3600) has passed since the grant, whatever the activity.
        let mut token = first.refresh_token.unwrap();
        for step in 1..=2 {
            let at = T0 + time::Duration::minutes(20 * step);
            let next = f
                .tokens
                .refresh(&f.portal, &token, None, None, at)
                .await
                .unwrap();
            token = next.refresh_token.unwrap();
        }
        let past = T0 + time::Duration::seconds(3601);
        let refused = f.tokens.refresh(&f.portal, &token, None, None, past).await;
        assert!(
            matches!(&refused, Err(GrantError::InvalidGrant(m)) if m.contains("expired")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn max_age_and_prompt_login_send_an_old_session_back_to_sign_in() {
        let f = fixture().await;
        code_at(&f, T0).await;
        let later = T0 + time::Duration::minutes(10);
        let step = |extra: &'static [(&'static str, &'static str)]| {
            let f = &f;
            async move {
                f.tokens
                    .begin_authorization(&params(extra), Some(&f.session), later)
                    .await
                    .unwrap()
            }
        };
        // Signed in 600 s ago: max_age=900 is fine, max_age=300 is not.
        assert!(matches!(
            step(&[("max_age", "900")]).await,
            AuthorizeStep::Redirect { .. }
        ));
        assert!(matches!(
            step(&[("max_age", "300")]).await,
            AuthorizeStep::Login { .. }
        ));
        assert!(matches!(
            step(&[("prompt", "login")]).await,
            AuthorizeStep::Login { .. }
        ));
        // An expired approval covers nothing: the consent page again.
        let much_later = T0 + time::Duration::days(91);
        let fresh = Session {
            auth_time: much_later,
            expires_at: much_later + time::Duration::hours(1),
            ..f.session.clone()
        };
        let step = f
            .tokens
            .begin_authorization(&params(&[]), Some(&fresh), much_later)
            .await
            .unwrap();
        assert!(matches!(step, AuthorizeStep::Consent(_)), "{step:?}");
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verify_pkce(Some(verifier), challenge).is_ok());
        assert!(verify_pkce(Some(&verifier.replace('d', "e")), challenge).is_err());
        assert!(verify_pkce(None, challenge).is_err());
        // The challenge itself as verifier (plain-style) fails.
        assert!(verify_pkce(Some(challenge), challenge).is_err());
        // Malformed verifiers: too short, too long, outside the alphabet.
        assert!(verify_pkce(Some(&"a".repeat(42)), challenge).is_err());
        assert!(verify_pkce(Some(&"a".repeat(129)), challenge).is_err());
        assert!(verify_pkce(Some(&format!("{}+", "a".repeat(43))), challenge).is_err());
    }
}
