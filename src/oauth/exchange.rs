//! Token exchange (RFC 8693) gated by the person's stored approval: how a
//! portal's token travels down a chain of approved delegatees, each hop
//! narrower, none longer-lived, every one recorded.
//!
//! Two kinds of exchange, told apart by the subject token's own claims,
//! never by which parameters the request used:
//!
//! - **Hand-off**: a client exchanges a token issued to itself, naming some
//!   of its approved delegatees in `audience`. The new token is still the
//!   client's (same actor), narrowed to what every named delegatee was
//!   approved for, and can be presented only by those delegatees
//!   (authenticating as themselves) at the certificate endpoint, or
//!   exchanged by one of them. This is the seed's shared token for
//!   trusted delegatees (job brokers A and B).
//! - **Delegation**: a client named in the subject token's `aud` exchanges
//!   it and becomes the new actor: `client_id` is the exchanging client,
//!   `act` nests the previous actors (most recent outermost, RFC 8693
//!   §4.1), the scope narrows to what the person approved for it.
//!
//! Everything is checked against the store at exchange time (ATTACKS
//! TX-01…TX-17): the approval is live and names the delegatee, the hop is
//! one the registered client declares, the scope never widens, `exp` never
//! extends, the chain never exceeds the approval's and the server's depth,
//! the subject token is the caller's to exchange and is live. No refresh
//! token is ever issued by an exchange, and no exchanged token is without
//! `act` (no impersonation).

use std::borrow::Cow;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::client_auth::AuthenticatedClient;
use super::clients::{Client, ClientId, ClientStatus, GrantType};
use super::grants::TokenLineage;
use super::jwt::{self, AccessTokenClaims, Audience, SubjectType};
use super::resource::Resource;
use super::{GrantError, TokenResponse, TokenService, random_id};
use crate::delegation::{Approval, is_delegable};
use crate::store::AuditEvent;

/// RFC 8693 §3: the access token type URI.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Most `audience` values one exchange may name (RFC 8693 §2.1.1 lets the
/// server refuse too many targets).
const MAX_AUDIENCES: usize = 10;
/// Hard cap on the `act` nesting read from a token, whatever the
/// configuration (ATTACKS TX-08).
const MAX_ACT_DEPTH: usize = 16;

/// The parameters of a token exchange request (RFC 8693 §2.1).
#[derive(Clone, Debug, Default)]
pub struct ExchangeRequest<'a> {
    /// `subject_token`.
    pub subject_token: Option<&'a str>,
    /// `subject_token_type`.
    pub subject_token_type: Option<&'a str>,
    /// `actor_token`.
    pub actor_token: Option<&'a str>,
    /// `actor_token_type`.
    pub actor_token_type: Option<&'a str>,
    /// `requested_token_type`.
    pub requested_token_type: Option<&'a str>,
    /// Every `audience` value.
    pub audience: Vec<&'a str>,
    /// Every `resource` value.
    pub resource: Vec<&'a str>,
    /// `scope`.
    pub scope: Option<&'a str>,
}

/// The actors of a token, most recent first, from its `act` claim; the
/// holder alone for a token with none. Refuses a malformed or too deep
/// `act` (ATTACKS TX-08, TX-09).
pub fn actors(claims: &AccessTokenClaims) -> Result<Vec<String>, GrantError> {
    let malformed = || {
        GrantError::InvalidRequest(
            "the subject token's act claim is not a chain of actors (RFC 8693 §4.1)".into(),
        )
    };
    let mut chain = Vec::new();
    let mut next = claims.act.as_ref();
    while let Some(act) = next {
        if chain.len() == MAX_ACT_DEPTH {
            return Err(GrantError::InvalidRequest(
                "the subject token's actor chain is too deep".into(),
            ));
        }
        let object = act.as_object().ok_or_else(malformed)?;
        let sub = object
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(malformed)?;
        chain.push(sub.to_owned());
        next = object.get("act");
    }
    match chain.first() {
        None => chain.push(claims.client_id.clone()),
        // Every `act` we mint names the token's own client as the current
        // actor; a token where they differ was not minted by this code and
        // is refused rather than interpreted either way.
        Some(current) if *current != claims.client_id => return Err(malformed()),
        Some(_) => {}
    }
    Ok(chain)
}

/// The `act` claim for `chain` (most recent actor first): nested objects
/// with `sub` only; nothing is copied from a presented token.
fn act_claim(chain: &[String]) -> Option<Value> {
    chain.iter().rev().fold(None, |inner, actor| {
        let mut object = Map::new();
        object.insert("sub".into(), Value::String(actor.clone()));
        if let Some(inner) = inner {
            object.insert("act".into(), inner);
        }
        Some(Value::Object(object))
    })
}

/// Whether `approval` lets `delegatee` receive from `from`: the person
/// approved it, and `from`'s registration declares it. One of the two is
/// always the authenticated `caller`, whose record was read moments ago to
/// authenticate it; only the other is read from the store.
async fn approved_hop(
    service: &TokenService,
    approval: &Approval,
    from: &str,
    delegatee: &str,
    caller: &Client,
) -> Result<bool, GrantError> {
    if !approval.delegatees.contains_key(delegatee) {
        return Ok(false);
    }
    let declared = client_record(service, from, caller)
        .await?
        .filter(|c| c.status == ClientStatus::Active)
        .is_some_and(|c| c.delegatees.iter().any(|d| d.as_str() == delegatee));
    if !declared {
        return Ok(false);
    }
    let active = client_record(service, delegatee, caller)
        .await?
        .is_some_and(|c| c.status == ClientStatus::Active);
    Ok(active)
}

/// The registration of client `id`: the caller's own record when it is the
/// caller, otherwise the stored one.
async fn client_record<'a>(
    service: &TokenService,
    id: &str,
    caller: &'a Client,
) -> Result<Option<Cow<'a, Client>>, GrantError> {
    if id == caller.id.as_str() {
        return Ok(Some(Cow::Borrowed(caller)));
    }
    Ok(match ClientId::parse(id) {
        Ok(id) => service.store().client(&id).await?.map(Cow::Owned),
        Err(_) => None,
    })
}

/// The scope for a party approved for `allowed`, from the parent's scope:
/// identity scopes never travel (BRIEF §3), nothing widens (RFC 8693
/// §2.2.1, ATTACKS TX-01).
fn narrowed(
    requested: Option<&str>,
    parent: &str,
    allowed: &std::collections::BTreeSet<String>,
) -> Result<String, GrantError> {
    let parent: Vec<&str> = parent.split(' ').filter(|s| is_delegable(s)).collect();
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    crate::delegation::scope::narrow(requested, &parent.join(" "), &allowed)
        .map_err(|e| GrantError::InvalidScope(e.to_string()))
}

impl TokenService {
    /// The token exchange grant (RFC 8693 §2) for the authenticated
    /// `client`.
    pub async fn token_exchange(
        &self,
        client: &AuthenticatedClient,
        request: &ExchangeRequest<'_>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        // RFC 8693 §2.1: an exchange without client authentication lets
        // anyone holding a token launder it (ATTACKS TX-04).
        if !client.has_credentials() {
            return Err(GrantError::InvalidClient(
                "token exchange requires client authentication; a public client cannot exchange"
                    .into(),
            ));
        }
        if !client.client.allows_grant(GrantType::TokenExchange) {
            return Err(GrantError::UnauthorizedClient(
                "this client is not registered for token exchange (slcs.tokenExchangeEnabled)"
                    .into(),
            ));
        }
        let invalid = |m: &str| GrantError::InvalidRequest(m.to_owned());
        let subject = request
            .subject_token
            .ok_or_else(|| invalid("subject_token is required"))?;
        if request.subject_token_type != Some(ACCESS_TOKEN_TYPE) {
            return Err(invalid(
                "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
            ));
        }
        match (request.actor_token, request.actor_token_type) {
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "actor_token and actor_token_type come together or not at all (RFC 8693 §2.1)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "actor_token is not accepted: the actor is the authenticated client",
                ));
            }
        }
        if request
            .requested_token_type
            .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
        {
            // No refresh token from an exchange: a delegated token never
            // outlives its subject token (ATTACKS TX-02, TX-17).
            return Err(invalid(
                "only access tokens are issued by token exchange (requested_token_type)",
            ));
        }
        let certificate_indicator = self.indicator(Resource::Certificate);
        match request.resource.as_slice() {
            [] => {}
            [one] if *one == certificate_indicator => {}
            _ => {
                return Err(GrantError::InvalidTarget(format!(
                    "the only resource an exchanged token can be for is {certificate_indicator}"
                )));
            }
        }
        if request.audience.len() > MAX_AUDIENCES {
            return Err(GrantError::InvalidTarget(format!(
                "at most {MAX_AUDIENCES} audiences"
            )));
        }

        // The subject token: ours, live, a person's.
        let claims = self.verify_any(subject, now).ok_or_else(|| {
            invalid("subject_token is not a valid access token of this server (malformed, expired or not signed by it)")
        })?;
        if claims.subject_type != SubjectType::User {
            // A service account acts only as itself (ATTACKS TX-15).
            return Err(invalid(
                "subject_token is a service account's token; it never stands for a person",
            ));
        }
        if self
            .store()
            .is_revoked(&claims.jti, &claims.grant_id)
            .await?
        {
            return Err(GrantError::InvalidGrant(
                "subject_token has been revoked".into(),
            ));
        }
        let chain = actors(&claims)?;
        let approval = match &claims.approval_id {
            Some(id) => self.store().approval(id).await?,
            None => None,
        }
        .filter(|a| a.sub == claims.sub && a.is_live(now))
        .ok_or_else(|| {
            GrantError::InvalidGrant(
                "the person's approval behind subject_token has been revoked or has expired".into(),
            )
        })?;
        let user = self
            .users()
            .user(&claims.sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| GrantError::InvalidGrant("the person's account is disabled".into()))?;
        // The caller must admit the person as the client that signed them
        // in did: a delegatee that refuses guests, or is restricted to
        // groups or units, is not reached around that through a portal
        // that admits them (ATTACKS REG-09).
        super::user_grants::user_may_use(&client.client, &user).map_err(|why| {
            GrantError::InvalidGrant(format!("{why} (the exchanging client's access rules)"))
        })?;

        // Whose token is it, and what does this exchange make of it?
        let me = client.client.id.as_str();
        let holder = claims.client_id.as_str();
        let (new_chain, new_actor) = if me == holder {
            if request.audience.is_empty() {
                return Err(invalid(
                    "exchanging your own token only serves to hand it to your delegatees: name them in audience",
                ));
            }
            (chain.clone(), false)
        } else if claims.aud.contains(me) {
            if !approved_hop(self, &approval, holder, me, &client.client).await? {
                self.audit_refusal(&claims, me, holder, source.clone(), now)
                    .await?;
                return Err(invalid(&format!(
                    "the person has not approved {me} as a delegatee of {holder}"
                )));
            }
            let mut chain = chain.clone();
            chain.insert(0, me.to_owned());
            (chain, true)
        } else {
            // ATTACKS TX-03: "subject_token unacceptable".
            return Err(invalid(
                "subject_token unacceptable: it was not issued to this client and does not name it in its audience",
            ));
        };
        let depth = new_chain.len().saturating_sub(1);
        let cap = approval.max_depth.min(self.delegation().max_depth) as usize;
        if depth > cap {
            return Err(invalid(&format!(
                "the delegation chain would be {depth} hops deep; at most {cap} are allowed"
            )));
        }

        // Scope: narrowed for the new actor, then for every audience
        // member, since each may present the token; an explicitly
        // requested scope must survive every narrowing whole (TX-01).
        let mut narrowing: Vec<std::collections::BTreeSet<String>> = Vec::new();
        if new_actor {
            narrowing.push(approval.delegatees.get(me).cloned().unwrap_or_default());
        }
        let mut audience: Vec<String> = Vec::new();
        for member in &request.audience {
            if *member == me || audience.iter().any(|a| a == member) {
                return Err(GrantError::InvalidTarget(format!(
                    "audience {member:?} is repeated or names the caller"
                )));
            }
            if !approved_hop(self, &approval, me, member, &client.client).await? {
                return Err(GrantError::InvalidTarget(format!(
                    "audience {member:?} is not a delegatee of {me} that the person approved"
                )));
            }
            narrowing.push(
                approval
                    .delegatees
                    .get(*member)
                    .cloned()
                    .unwrap_or_default(),
            );
            audience.push((*member).to_owned());
        }
        let mut scope = claims.scope.clone();
        for (step, allowed) in narrowing.iter().enumerate() {
            let requested = match request.scope {
                Some(explicit) if step == 0 => Some(explicit.to_owned()),
                Some(_) => Some(scope.clone()),
                None => None,
            };
            scope = narrowed(requested.as_deref(), &scope, allowed)?;
        }
        if audience.is_empty() {
            audience.push(certificate_indicator);
        }

        // Never longer-lived than the subject token or the approval
        // (ATTACKS TX-02).
        let lifetime = i64::try_from(self.config().access_token_lifetime.as_secs()).unwrap_or(900);
        let exp = claims
            .exp
            .min(now.unix_timestamp() + lifetime)
            .min(approval.expires_at.unix_timestamp());
        if exp <= now.unix_timestamp() {
            return Err(GrantError::InvalidGrant("subject_token has expired".into()));
        }
        let issued = AccessTokenClaims {
            iss: self.config().issuer.clone(),
            sub: claims.sub.clone(),
            aud: Audience::many(audience.clone())
                .ok_or_else(|| GrantError::Signing("empty audience".into()))?,
            client_id: me.to_owned(),
            scope: scope.clone(),
            jti: random_id("at")?,
            iat: now.unix_timestamp(),
            exp,
            nbf: None,
            grant_id: claims.grant_id.clone(),
            subject_type: SubjectType::User,
            act: act_claim(&new_chain),
            client_auth: claims.client_auth.clone(),
            grant_type: claims.grant_type.clone(),
            auth_time: claims.auth_time,
            acr: claims.acr.clone(),
            amr: claims.amr.clone(),
            approval_id: claims.approval_id.clone(),
        };
        let token = {
            let keys = self.keys_read();
            jwt::mint(&keys, &issued).map_err(|e| GrantError::Signing(e.to_string()))?
        };
        let expires_at = OffsetDateTime::from_unix_timestamp(exp).unwrap_or(now);
        // Recorded, with its audit event, before the token leaves:
        // revoking the subject token reaches this one, and certificates
        // name every hop.
        self.store()
            .put_lineage(
                &TokenLineage {
                    jti: issued.jti.clone(),
                    parent_jti: claims.jti.clone(),
                    parent_client_id: claims.client_id.clone(),
                    parent_scope: claims.scope.clone(),
                    parent_iat: claims.iat,
                    client_id: me.to_owned(),
                    client_auth: client.method.name().to_owned(),
                    new_actor,
                    scope: scope.clone(),
                    audience: audience.clone(),
                    at: now,
                    expires_at,
                },
                &AuditEvent {
                    at: now,
                    actor: format!("client:{me}"),
                    action: "token.exchange".into(),
                    target: issued.jti.clone(),
                    source,
                    detail: serde_json::json!({
                        "sub": user.sub,
                        "subject_jti": claims.jti,
                        "grant_id": claims.grant_id,
                        "approval_id": approval.id,
                        "chain": new_chain,
                        "scope": scope,
                        "aud": audience,
                        "exp": exp,
                    }),
                },
            )
            .await?;
        // ATTACKS ROB-10: a revocation of the grant or the approval that
        // answered while this exchange was in progress is seen here, and
        // the token never leaves (one that had not yet written its mark
        // answers after this token was made, and the token is dead with
        // its grant).
        let approval_live = self
            .store()
            .approval(&approval.id)
            .await?
            .is_some_and(|a| a.is_live(now));
        if !approval_live
            || self
                .store()
                .is_revoked(&claims.jti, &claims.grant_id)
                .await?
        {
            return Err(GrantError::InvalidGrant(
                "subject_token or the approval behind it was revoked during the exchange".into(),
            ));
        }
        metrics::counter!(crate::observability::TOKENS_ISSUED, "grant_type" => "token-exchange")
            .increment(1);
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: u64::try_from(exp - now.unix_timestamp()).unwrap_or(0),
            scope,
            refresh_token: None,
            id_token: None,
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
        })
    }

    async fn audit_refusal(
        &self,
        claims: &AccessTokenClaims,
        caller: &str,
        holder: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), GrantError> {
        // ATTACKS TX-05: the refusal names the person, the caller and the
        // missing approval.
        self.store()
            .append_audit(&AuditEvent {
                at: now,
                actor: format!("client:{caller}"),
                action: "token.exchange.refused".into(),
                target: claims.jti.clone(),
                source,
                detail: serde_json::json!({
                    "sub": claims.sub,
                    "approval_id": claims.approval_id,
                    "reason": format!("{caller} is not an approved delegatee of {holder}"),
                }),
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_with(act: Option<Value>) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://as".into(),
            sub: "u-1".into(),
            aud: Audience::one("https://as/certificate"),
            client_id: "wps".into(),
            scope: "slcs:certificate".into(),
            jti: "at_1".into(),
            iat: 0,
            exp: 900,
            nbf: None,
            grant_id: "ag_1".into(),
            subject_type: SubjectType::User,
            act,
            client_auth: None,
            grant_type: None,
            auth_time: None,
            acr: None,
            amr: None,
            approval_id: None,
        }
    }

    #[test]
    fn tx_09_a_malformed_act_is_refused_and_never_copied() {
        for bad in [
            serde_json::json!("broker"),
            serde_json::json!(["broker"]),
            serde_json::json!({"sub": 1}),
            serde_json::json!({"sub": ""}),
            serde_json::json!({"sub": "wps", "act": "portal"}),
            // The current actor is not the token's client.
            serde_json::json!({"sub": "broker", "act": {"sub": "wps"}}),
        ] {
            assert!(
                matches!(
                    actors(&claims_with(Some(bad.clone()))),
                    Err(GrantError::InvalidRequest(_))
                ),
                "{bad}"
            );
        }
        // Members other than `sub` and `act` are ignored for validity, and
        // the chain minted from it has `sub` and `act` only.
        let chain = actors(&claims_with(Some(serde_json::json!(
            {"sub": "wps", "exp": 1, "aud": "x", "act": {"sub": "portal"}}
        ))))
        .unwrap();
        assert_eq!(chain, ["wps", "portal"]);
        assert_eq!(
            act_claim(&chain).unwrap(),
            serde_json::json!({"sub": "wps", "act": {"sub": "portal"}})
        );
        // No act: the holder alone.
        assert_eq!(actors(&claims_with(None)).unwrap(), ["wps"]);
    }

    #[test]
    fn tx_08_an_act_deeper_than_the_hard_cap_is_refused() {
        let mut act = serde_json::json!({"sub": "a0"});
        for depth in 1..=MAX_ACT_DEPTH {
            act = serde_json::json!({"sub": format!("a{depth}"), "act": act});
        }
        assert!(matches!(
            actors(&claims_with(Some(act))),
            Err(GrantError::InvalidRequest(m)) if m.contains("too deep")
        ));
    }

    #[test]
    fn act_nests_the_most_recent_actor_outermost() {
        let act = act_claim(&["broker-a".into(), "wps".into(), "portal".into()]).unwrap();
        assert_eq!(
            act,
            serde_json::json!({"sub": "broker-a", "act": {"sub": "wps", "act": {"sub": "portal"}}})
        );
        assert!(act_claim(&[]).is_none());
    }
}
