//! The authorization endpoint (RFC 6749 §3.1, §4.1; OIDC Core §3.1.2):
//! checking the request, sign-in, consent against stored approvals, and the
//! authorization code.
//!
//! The order of checks is the security argument (RFC 6749 §4.1.2.1,
//! RFC 9700 §4.11.2): until the client and its redirect URI are known to
//! belong together, every error is a page and nothing is redirected or
//! stored (ATTACKS AZ-01, AZ-02, AZ-07); after that, errors go back to the
//! client with `state` and `iss` (RFC 9207). Only `active` clients get
//! this far, and a client becomes active only when an administrator
//! approves its registration, so error redirects only ever go to vetted
//! URIs (AZ-03).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::OffsetDateTime;

use super::clients::{Client, ClientId, ClientStatus, GrantType};
use super::grants::{PENDING_LIFETIME, PendingAuthorization, Prompt, UserGrant};
use super::user_grants::user_may_use;
use super::{GrantError, TokenService, narrow_scope, random_id};
use crate::delegation::{ConsentNeed, OfferedDelegatee, approve, consent_needed, is_delegable};
use crate::store::{AuditEvent, StoreError};
use crate::users::session::Session;

/// Longest `state` and `nonce` accepted (they come back verbatim).
const MAX_ECHOED_CHARS: usize = 1024;

/// Why an authorization request ends here.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// Shown to the person as a page; the browser is never redirected
    /// (unknown client, redirect URI not registered, repeated parameters,
    /// an expired request).
    #[error("{0}")]
    Page(String),
    /// Sent back to the client's (validated) redirect URI.
    #[error("{error}: {description}")]
    Redirect {
        /// Where.
        redirect_uri: String,
        /// RFC 6749 §4.1.2.1 / OIDC Core §3.1.2.6 code.
        error: &'static str,
        /// Human-readable text.
        description: String,
        /// The client's state.
        state: Option<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happens next in the browser.
#[derive(Debug)]
pub enum AuthorizeStep {
    /// The person must sign in, then the request continues.
    Login {
        /// The pending request.
        request: String,
    },
    /// The person must decide.
    Consent(Box<ConsentView>),
    /// Back to the client with these query parameters.
    Redirect {
        /// The validated redirect URI.
        redirect_uri: String,
        /// `code`, `state`, `iss` (or an error).
        params: Vec<(&'static str, String)>,
    },
}

/// What the consent page shows.
#[derive(Clone, Debug, Serialize)]
pub struct ConsentView {
    /// The pending request.
    pub request: String,
    /// The client.
    pub client_id: String,
    /// Its display name.
    pub client_name: String,
    /// Its description.
    pub client_description: String,
    /// Who registered it.
    pub client_owner: String,
    /// Its home page.
    pub client_home: Option<String>,
    /// Where the answer will be sent.
    pub redirect_uri: String,
    /// The resource (RFC 8707) the tokens will be for.
    pub resource: String,
    /// That resource in plain words.
    pub resource_name: &'static str,
    /// Scopes to decide on, with their meaning.
    pub new_scopes: Vec<ScopeView>,
    /// Scopes approved before (not asked again).
    pub approved_scopes: Vec<ScopeView>,
    /// Delegatees to decide on.
    pub delegatees: Vec<DelegateeView>,
    /// Whether the redirect URI is new to the person's approval.
    pub new_redirect_uri: bool,
    /// How long the approval lasts.
    pub approval_days: u64,
    /// How many further hops of delegation an approved delegatee allows.
    pub max_depth: u32,
    /// The person signed in.
    pub user_display_name: String,
}

/// A scope with its meaning in plain words.
#[derive(Clone, Debug, Serialize)]
pub struct ScopeView {
    /// The scope.
    pub scope: String,
    /// What it lets the client do.
    pub meaning: &'static str,
}

/// A delegatee on the consent page.
#[derive(Clone, Debug, Serialize)]
pub struct DelegateeView {
    /// Client id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Who registered it.
    pub owner: String,
    /// The client that hands it work (its parent in the chain).
    pub via: String,
    /// Whether it hands work on to delegatees of its own (listed with it).
    pub passes_on: bool,
    /// What it would receive.
    pub scopes: Vec<ScopeView>,
}

/// What each scope lets a client do, as the consent page says it.
pub fn scope_meaning(scope: &str) -> &'static str {
    match scope {
        "openid" => "Confirm who you are when you sign in to it",
        "profile" => "See your name, username and organisation",
        "email" => "See your e-mail address",
        "offline_access" => {
            "Keep acting for you while you are away, until you revoke this approval"
        }
        super::resource::CERTIFICATE_SCOPE | super::resource::OA4MP_GETCERT_SCOPE => {
            "Obtain short-lived X.509 certificates in your name, to fetch data and run work as you"
        }
        super::resource::CLIENTS_SCOPE => "Register and manage OAuth clients in your name",
        _ => "A permission defined by this service",
    }
}

fn scope_views(scopes: &BTreeSet<String>) -> Vec<ScopeView> {
    scopes
        .iter()
        .map(|s| ScopeView {
            scope: s.clone(),
            meaning: scope_meaning(s),
        })
        .collect()
}

/// The query of `/authorize`, each parameter at most once (RFC 6749 §3.1;
/// the edge refuses repeats before this is built).
pub type AuthorizeParams = BTreeMap<String, String>;

impl TokenService {
    /// Checks an authorization request and takes it as far as the
    /// browser's `session` allows: straight to the code when the person is
    /// signed in and their approval covers it (nothing stored but the
    /// code), otherwise stored as pending for the login or consent page.
    pub async fn begin_authorization(
        &self,
        params: &AuthorizeParams,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> Result<AuthorizeStep, AuthorizeError> {
        let page = |m: &str| AuthorizeError::Page(m.to_owned());
        // 1. The client and the redirect URI, before anything may be
        //    redirected.
        let client_id = params
            .get("client_id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| page("The request names no application (client_id is missing)."))?;
        let client = match ClientId::parse(client_id) {
            Ok(id) => self.store().client(&id).await?,
            Err(_) => None,
        }
        .ok_or_else(|| {
            page("The application that sent you here is not registered with this service.")
        })?;
        if client.status != ClientStatus::Active {
            return Err(page(
                "The application that sent you here is not approved to use this service.",
            ));
        }
        // Always required (OIDC Core §3.1.2.1; RFC 9700 §2.1 exact match),
        // even for a client with one registered URI: the URI a code goes
        // to is never implied.
        let redirect_uri = params.get("redirect_uri").ok_or_else(|| {
            page("The request does not say where to send you back (redirect_uri is missing).")
        })?;
        let redirect_uri = client
            .redirect_uri(redirect_uri)
            .ok_or_else(|| {
                page("The address this request wants to send you back to is not registered for the application. Nothing was sent to it.")
            })?
            .as_str()
            .to_owned();
        // An over-long state is refused below, and never sent back: an
        // error redirect must not carry an attacker's payload in full
        // (ATTACKS ROB-12).
        let state = params
            .get("state")
            .filter(|s| s.chars().count() <= MAX_ECHOED_CHARS)
            .cloned();
        let back = |error: &'static str, description: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: state.clone(),
        };
        // 2. Everything else, answered at the client.
        if params
            .get("state")
            .is_some_and(|s| s.chars().count() > MAX_ECHOED_CHARS)
        {
            return Err(back("invalid_request", "state is too long"));
        }
        if params.contains_key("request") {
            return Err(back(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if params.contains_key("request_uri") {
            return Err(back(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        match params.get("response_type").map(String::as_str) {
            Some("code") => {}
            None => return Err(back("invalid_request", "response_type is required")),
            // RFC 9700 §2.1.2: no implicit or hybrid flows (ATTACKS AZ-06).
            Some(_) => {
                return Err(back(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ));
            }
        }
        if params
            .get("response_mode")
            .is_some_and(|mode| mode != "query")
        {
            return Err(back(
                "invalid_request",
                "only response_mode=query is supported",
            ));
        }
        if !client.allows_grant(GrantType::AuthorizationCode) {
            return Err(back(
                "unauthorized_client",
                "this client is not registered for the authorization code flow",
            ));
        }
        // RFC 7636 §4.4.1 and RFC 9700 §2.1.1: PKCE with S256 for every
        // client; `plain` (the default when no method is sent) is refused
        // (ATTACKS CODE-01, CODE-04).
        let challenge = params
            .get("code_challenge")
            .ok_or_else(|| back("invalid_request", "code_challenge is required (PKCE S256)"))?;
        if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
            return Err(back(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not supported)",
            ));
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(back(
                "invalid_request",
                "code_challenge must be the 43-character base64url SHA-256 of the verifier",
            ));
        }
        let nonce = params.get("nonce").cloned();
        if nonce
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_ECHOED_CHARS)
        {
            return Err(back("invalid_request", "nonce is too long"));
        }
        let prompt = parse_prompt(params.get("prompt").map(String::as_str))
            .map_err(|m| back("invalid_request", m))?;
        let max_age = match params.get("max_age") {
            None => None,
            Some(value) => Some(
                value
                    .parse::<u32>()
                    .map(i64::from)
                    .map_err(|_| back("invalid_request", "max_age must be a number of seconds"))?,
            ),
        };
        let resource = self
            .requested_resource(params.get("resource").map(String::as_str))
            .map_err(|e| back("invalid_target", &e.to_string()))?;
        let scope = narrow_scope(
            params.get("scope").map(String::as_str),
            &client.scopes,
            &client.default_scopes,
            resource,
        )
        .map_err(|e| match e {
            GrantError::InvalidScope(m) => back("invalid_scope", &m),
            other => back("server_error", &other.to_string()),
        })?;
        let pending = PendingAuthorization {
            id: random_id("ar").map_err(|e| AuthorizeError::Page(e.to_string()))?,
            client_id: client.id.as_str().to_owned(),
            redirect_uri,
            scopes: scope.split(' ').map(str::to_owned).collect(),
            resource: self.indicator(resource),
            state,
            nonce,
            code_challenge: challenge.clone(),
            prompt,
            max_age,
            created_at: now,
            expires_at: now + PENDING_LIFETIME,
        };
        self.step(pending, &client, false, session, now).await
    }

    /// Continues a stored pending request for the browser's `session` (if
    /// any): sign-in, consent, or the code.
    pub async fn continue_authorization(
        &self,
        request: &str,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> Result<AuthorizeStep, AuthorizeError> {
        let (pending, client) = self.pending_request(request, now).await?;
        self.step(pending, &client, true, session, now).await
    }

    /// The next step of `pending` (already `stored`, or not yet).
    async fn step(
        &self,
        pending: PendingAuthorization,
        client: &Client,
        stored: bool,
        session: Option<&Session>,
        now: OffsetDateTime,
    ) -> Result<AuthorizeStep, AuthorizeError> {
        let back = |error: &'static str, description: &str| AuthorizeError::Redirect {
            redirect_uri: pending.redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: pending.state.clone(),
        };
        let fresh_enough = |s: &&Session| {
            let reauthenticated = !pending.prompt.login || s.auth_time >= pending.created_at;
            let within_max_age = pending
                .max_age
                .is_none_or(|max| (now - s.auth_time).whole_seconds() <= max);
            reauthenticated && within_max_age
        };
        let Some(session) = session.filter(fresh_enough) else {
            if pending.prompt.none {
                return Err(back("login_required", "the person is not signed in"));
            }
            if !stored {
                self.store().put_pending(&pending).await?;
            }
            return Ok(AuthorizeStep::Login {
                request: pending.id,
            });
        };
        let user = self
            .users()
            .user(&session.sub)
            .await?
            .ok_or_else(|| back("access_denied", "the account no longer exists"))?;
        user_may_use(client, &user).map_err(|m| back("access_denied", m))?;
        let need = self
            .consent_need(&pending, client, &session.sub, now)
            .await?;
        if need.is_empty() && !pending.prompt.consent {
            return self.grant_code(&pending, stored, session, now).await;
        }
        if pending.prompt.none {
            return Err(back(
                "consent_required",
                "the person has not approved this request",
            ));
        }
        // prompt=consent on a covered request shows the whole request.
        let need = if need.is_empty() {
            whole_request(
                &pending.scopes,
                &self.offered_delegatees(client, &pending.scopes).await?,
                now,
            )
        } else {
            need
        };
        if !stored {
            self.store().put_pending(&pending).await?;
        }
        Ok(AuthorizeStep::Consent(Box::new(self.consent_view(
            pending.id.clone(),
            client,
            pending.redirect_uri.clone(),
            &pending.resource,
            &need,
            user.display_name,
        ))))
    }

    /// The consent page's content for `need`.
    pub(super) fn consent_view(
        &self,
        request: String,
        client: &Client,
        redirect_uri: String,
        resource: &str,
        need: &ConsentNeed,
        user_display_name: String,
    ) -> ConsentView {
        let delegation = self.delegation();
        let resource_name =
            if resource == self.indicator(super::resource::Resource::ClientRegistration) {
                "the client registration API: registering and managing clients as you"
            } else {
                "the certificate service: short-lived certificates that name you"
            };
        ConsentView {
            request,
            client_id: client.id.as_str().to_owned(),
            client_name: client.name.clone(),
            client_description: client.description.clone(),
            client_owner: client.owner.clone(),
            client_home: client.base_url.clone().or(client.root_url.clone()),
            redirect_uri,
            resource: resource.to_owned(),
            resource_name,
            new_scopes: scope_views(&need.new_scopes),
            approved_scopes: scope_views(&need.approved_scopes),
            delegatees: need
                .new_delegatees
                .iter()
                .map(|d| DelegateeView {
                    client_id: d.client_id.clone(),
                    name: d.name.clone(),
                    owner: d.owner.clone(),
                    via: d.via.clone(),
                    passes_on: need.new_delegatees.iter().any(|o| o.via == d.client_id),
                    scopes: scope_views(&d.scopes),
                })
                .collect(),
            new_redirect_uri: need.new_redirect_uri.is_some(),
            approval_days: delegation.approval_lifetime.as_secs() / 86_400,
            max_depth: delegation.max_depth,
            user_display_name,
        }
    }

    /// The person's decision on the consent page (a POST whose CSRF token
    /// the edge checked against `session`). Approving stores or widens the
    /// approval, durably, before the code exists.
    pub async fn decide_consent(
        &self,
        request: &str,
        session: &Session,
        approved: bool,
        accepted_delegatees: &BTreeSet<String>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<AuthorizeStep, AuthorizeError> {
        let (pending, client) = self.pending_request(request, now).await?;
        let back = |error: &'static str, description: &str| AuthorizeError::Redirect {
            redirect_uri: pending.redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: pending.state.clone(),
        };
        let user = self
            .users()
            .user(&session.sub)
            .await?
            .ok_or_else(|| back("access_denied", "the account no longer exists"))?;
        user_may_use(&client, &user).map_err(|m| back("access_denied", m))?;
        let actor = format!("user:{}", session.sub);
        if !approved {
            self.store().delete_pending(&pending.id).await?;
            self.store()
                .append_audit(&AuditEvent {
                    at: now,
                    actor,
                    action: "approval.deny".into(),
                    target: client.id.as_str().to_owned(),
                    source,
                    detail: serde_json::json!({ "scope": pending.scopes }),
                })
                .await?;
            return Err(back("access_denied", "the person denied the request"));
        }
        let approval = self
            .record_approval(
                &session.sub,
                &client,
                &pending.scopes,
                Some(&pending.redirect_uri),
                accepted_delegatees,
                pending.prompt.consent,
                source,
                now,
            )
            .await?;
        tracing::debug!(approval = %approval.id, "consent stored");
        self.grant_code(&pending, true, session, now).await
    }

    /// Stores the person's approval of `client` for `scopes` (and
    /// `redirect_uri`), accepting `accepted_delegatees` among those the
    /// page showed: the difference from the live approval or, when that is
    /// empty and `whole_if_covered` (`prompt=consent`), the whole request,
    /// exactly as [`Self::continue_authorization`] showed it. A new
    /// approval, or the live one changed; durable and audited before it
    /// returns.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_approval(
        &self,
        sub: &str,
        client: &Client,
        scopes: &BTreeSet<String>,
        redirect_uri: Option<&str>,
        accepted_delegatees: &BTreeSet<String>,
        whole_if_covered: bool,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<crate::delegation::Approval, StoreError> {
        let delegation = self.delegation();
        let lifetime = time::Duration::try_from(delegation.approval_lifetime)
            .unwrap_or(time::Duration::days(90));
        loop {
            let existing = self
                .store()
                .current_approval(sub, client.id.as_str())
                .await?;
            let offered = self.offered_delegatees(client, scopes).await?;
            let mut need = consent_needed(existing.as_ref(), scopes, &offered, redirect_uri, now);
            if need.is_empty() && whole_if_covered {
                need = whole_request(scopes, &offered, now);
            }
            let new_id = random_id("ap").map_err(|e| StoreError::Io(e.to_string()))?;
            let approval = approve(
                existing.as_ref(),
                new_id,
                sub,
                client.id.as_str(),
                scopes,
                &need,
                accepted_delegatees,
                delegation.max_depth,
                lifetime,
                now,
            );
            if existing.as_ref() == Some(&approval) {
                return Ok(approval);
            }
            match self
                .store()
                .save_approval(existing.as_ref(), &approval)
                .await
            {
                Ok(()) => {
                    let widened = existing.as_ref().is_some_and(|e| e.id == approval.id);
                    self.store()
                        .append_audit(&AuditEvent {
                            at: now,
                            actor: format!("user:{sub}"),
                            action: if widened {
                                "approval.widen".into()
                            } else {
                                "approval.create".into()
                            },
                            target: approval.id.clone(),
                            source: source.clone(),
                            detail: serde_json::json!({
                                "client_id": approval.client_id,
                                "scopes": approval.scopes,
                                "delegatees": approval.delegatees,
                                "declined_delegatees": approval.declined_delegatees,
                                "redirect_uris": approval.redirect_uris,
                                "expires_at": approval.expires_at.unix_timestamp(),
                            }),
                        })
                        .await?;
                    return Ok(approval);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn pending_request(
        &self,
        request: &str,
        now: OffsetDateTime,
    ) -> Result<(PendingAuthorization, Client), AuthorizeError> {
        let expired = || {
            AuthorizeError::Page(
                "This sign-in request has expired or was already completed. Go back to the application and start again.".into(),
            )
        };
        let pending = self
            .store()
            .pending(request)
            .await?
            .filter(|p| p.expires_at > now)
            .ok_or_else(expired)?;
        let client = match ClientId::parse(&pending.client_id) {
            Ok(id) => self.store().client(&id).await?,
            Err(_) => None,
        }
        .filter(|c| c.status == ClientStatus::Active)
        .ok_or_else(|| {
            AuthorizeError::Page(
                "The application is no longer approved to use this service.".into(),
            )
        })?;
        Ok((pending, client))
    }

    pub(super) async fn consent_need_for(
        &self,
        client: &Client,
        sub: &str,
        scopes: &BTreeSet<String>,
        redirect_uri: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<ConsentNeed, StoreError> {
        let existing = self
            .store()
            .current_approval(sub, client.id.as_str())
            .await?;
        let offered = self.offered_delegatees(client, scopes).await?;
        Ok(consent_needed(
            existing.as_ref(),
            scopes,
            &offered,
            redirect_uri,
            now,
        ))
    }

    async fn consent_need(
        &self,
        pending: &PendingAuthorization,
        client: &Client,
        sub: &str,
        now: OffsetDateTime,
    ) -> Result<ConsentNeed, StoreError> {
        self.consent_need_for(
            client,
            sub,
            &pending.scopes,
            Some(&pending.redirect_uri),
            now,
        )
        .await
    }

    /// The client's declared delegatees that are active, with the scopes
    /// each would receive: the request's delegable scopes it is registered
    /// for.
    async fn offered_delegatees(
        &self,
        client: &Client,
        scopes: &BTreeSet<String>,
    ) -> Result<Vec<OfferedDelegatee>, StoreError> {
        // The declared tree below the client, breadth first, as deep as an
        // approval may reach: the client's delegatees, theirs, and so on.
        // Each receives at most what its parent would, and what it is
        // itself registered for. A client reached twice is offered once,
        // by the shortest route.
        let max_depth = self.delegation().max_depth as usize;
        let root: BTreeSet<String> = scopes.iter().filter(|s| is_delegable(s)).cloned().collect();
        let mut offered: Vec<OfferedDelegatee> = Vec::new();
        let mut level = vec![(client.clone(), root)];
        for _ in 0..max_depth {
            let mut next = Vec::new();
            for (parent, parent_scopes) in &level {
                for id in &parent.delegatees {
                    if id == &client.id || offered.iter().any(|o| o.client_id == id.as_str()) {
                        continue;
                    }
                    let Some(delegatee) = self.store().client(id).await? else {
                        continue;
                    };
                    if delegatee.status != ClientStatus::Active {
                        continue;
                    }
                    let receives: BTreeSet<String> = parent_scopes
                        .iter()
                        .filter(|s| delegatee.scopes.contains(*s))
                        .cloned()
                        .collect();
                    offered.push(OfferedDelegatee {
                        client_id: delegatee.id.as_str().to_owned(),
                        name: delegatee.name.clone(),
                        owner: delegatee.owner.clone(),
                        via: parent.id.as_str().to_owned(),
                        scopes: receives.clone(),
                    });
                    if !receives.is_empty() {
                        next.push((delegatee, receives));
                    }
                }
            }
            level = next;
        }
        Ok(offered)
    }

    /// Issues the code of a covered request and sends the browser back.
    async fn grant_code(
        &self,
        pending: &PendingAuthorization,
        stored: bool,
        session: &Session,
        now: OffsetDateTime,
    ) -> Result<AuthorizeStep, AuthorizeError> {
        let approval = self
            .store()
            .current_approval(&session.sub, &pending.client_id)
            .await?
            .filter(|a| a.is_live(now))
            .ok_or_else(|| AuthorizeError::Page("The approval was revoked meanwhile.".into()))?;
        let internal = |e: GrantError| match e {
            GrantError::Store(e) => AuthorizeError::Store(e),
            other => AuthorizeError::Page(format!("The code could not be issued: {other}")),
        };
        let grant = UserGrant {
            grant_id: random_id("ag").map_err(internal)?,
            sub: session.sub.clone(),
            client_id: pending.client_id.clone(),
            scope: pending
                .scopes
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            resource: pending.resource.clone(),
            approval_id: approval.id,
            auth_time: session.auth_time,
            amr: session.amr.clone(),
            root_grant_type: GrantType::AuthorizationCode.name().to_owned(),
        };
        let code = self
            .issue_code(
                grant,
                &pending.redirect_uri,
                &pending.code_challenge,
                pending.nonce.clone(),
                now,
            )
            .await
            .map_err(internal)?;
        if stored {
            self.store().delete_pending(&pending.id).await?;
        }
        let mut params = vec![("code", code)];
        if let Some(state) = &pending.state {
            params.push(("state", state.clone()));
        }
        // RFC 9207: the issuer identifier in every authorization response.
        params.push(("iss", self.config().issuer.clone()));
        Ok(AuthorizeStep::Redirect {
            redirect_uri: pending.redirect_uri.clone(),
            params,
        })
    }
}

/// What a `prompt=consent` page shows for a request the approval already
/// covers: every scope and delegatee, the redirect URI as approved.
fn whole_request(
    scopes: &BTreeSet<String>,
    offered: &[OfferedDelegatee],
    now: OffsetDateTime,
) -> ConsentNeed {
    let mut whole = consent_needed(None, scopes, offered, None, now);
    whole.new_redirect_uri = None;
    whole
}

/// OIDC Core §3.1.2.1 `prompt`: a space-separated list; `none` must stand
/// alone. `select_account` is accepted and means nothing here (one account
/// per browser).
fn parse_prompt(value: Option<&str>) -> Result<Prompt, &'static str> {
    let mut prompt = Prompt::default();
    let Some(value) = value else {
        return Ok(prompt);
    };
    let mut count = 0;
    for item in value.split(' ').filter(|s| !s.is_empty()) {
        count += 1;
        match item {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => {}
            _ => return Err("prompt may contain none, login, consent and select_account only"),
        }
    }
    if prompt.none && count > 1 {
        return Err("prompt=none cannot be combined with other values");
    }
    Ok(prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_none_stands_alone() {
        assert_eq!(parse_prompt(None).unwrap(), Prompt::default());
        assert!(parse_prompt(Some("login consent")).unwrap().consent);
        assert!(parse_prompt(Some("none")).unwrap().none);
        assert!(parse_prompt(Some("none login")).is_err());
        assert!(parse_prompt(Some("bogus")).is_err());
    }
}
