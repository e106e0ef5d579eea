//! The protected resources slcs serves and how their bearer tokens are
//! checked (RFC 6750, RFC 8707, RFC 9068 §4).
//!
//! Every access token names exactly the resource it is for in `aud`
//! (RFC 8707 §2: audience-restricted tokens), and every resource accepts only
//! tokens naming it: a certificate-endpoint token cannot manage clients and a
//! registration-API token cannot obtain a certificate (RFC 9700 §2.3, least
//! privilege). Each resource has its own scopes, so a token request's scope
//! is checked against the resource it asks for.

use super::clients::{Client, ClientId, ClientStatus};
use super::jwt::AccessTokenClaims;
use crate::store::{Store, StoreError};

/// The scope of the certificate endpoint.
pub const CERTIFICATE_SCOPE: &str = "slcs:certificate";

/// The scope of the client registration API.
pub const CLIENTS_SCOPE: &str = "slcs:clients";

/// The scope OA4MP/CILogon clients ask for (`/oauth2/getcert`), accepted
/// as a synonym of [`CERTIFICATE_SCOPE`].
pub const OA4MP_GETCERT_SCOPE: &str = "edu.uiuc.ncsa.myproxy.getcert";

/// Path of the client registration API; its resource indicator is the issuer
/// followed by this path.
pub const CLIENTS_API_PATH: &str = "/rest/v1/oidc/clients";

/// A protected resource of this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `POST /certificate` and its aliases; the default resource.
    Certificate,
    /// The client registration API.
    ClientRegistration,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Self; 2] = [Self::Certificate, Self::ClientRegistration];

    /// The resource indicator, which is also the tokens' `aud`.
    pub fn indicator(self, issuer: &str, certificate_audience: &str) -> String {
        match self {
            Self::Certificate => certificate_audience.to_owned(),
            Self::ClientRegistration => format!("{issuer}{CLIENTS_API_PATH}"),
        }
    }

    /// Whether `scope` may appear in a token for this resource. The
    /// registration API takes only its own scope; the certificate resource
    /// takes every scope but that one (OIDC scopes ride along with it).
    pub fn admits_scope(self, scope: &str) -> bool {
        match self {
            Self::ClientRegistration => scope == CLIENTS_SCOPE,
            Self::Certificate => scope != CLIENTS_SCOPE,
        }
    }

    /// Whether a token carrying `scope` may be used here.
    pub fn satisfied_by(self, scope: &str) -> bool {
        match self {
            Self::Certificate => scope == CERTIFICATE_SCOPE || scope == OA4MP_GETCERT_SCOPE,
            Self::ClientRegistration => scope == CLIENTS_SCOPE,
        }
    }

    /// The scope a token must carry to be used here.
    pub fn required_scope(self) -> &'static str {
        match self {
            Self::Certificate => CERTIFICATE_SCOPE,
            Self::ClientRegistration => CLIENTS_SCOPE,
        }
    }
}

/// Why a bearer token was not accepted (RFC 6750 §3.1). Descriptions never
/// echo token content.
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// `invalid_request`: the request carries no usable token or more than one.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// `invalid_token`: malformed, badly signed, expired, revoked, for
    /// another resource, or of an inactive client.
    #[error("{0}")]
    InvalidToken(&'static str),
    /// `insufficient_scope`: a good token without the needed scope.
    #[error("the access token lacks the scope {0}")]
    InsufficientScope(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token accepted at a resource, with the client it was issued to.
#[derive(Clone, Debug)]
pub struct AuthorizedToken {
    /// The verified claims.
    pub claims: AccessTokenClaims,
    /// The client the token was issued to (`client_id`), active.
    pub client: Client,
    /// Who presented it: the authenticated presenter of a shared token, else
    /// the token's own client.
    pub presenter_id: String,
}

/// Checks verified `claims` (signature, `iss`, `exp`/`nbf` and header were
/// checked by the caller; `None` if that failed) for `resource`, whose
/// indicator is `indicator`, presented by the authenticated client
/// `presenter` if any:
///
/// - a token whose `aud` is exactly this resource is a bearer token; a
///   presenter who authenticated anyway must be the token's client;
/// - an `aud` of clients is a token shared among trusted delegatees
///   (BRIEF §3; minted only by a token exchange that checked each of them
///   against the person's approval): only at the certificate endpoint, and
///   only presented by an authenticated client named in `aud`, so a
///   stolen shared token alone yields nothing;
/// - not revoked (token or grant; two point lookups), the resource's scope,
///   and the token's client still `active`.
pub(super) async fn check_bearer(
    store: &dyn Store,
    claims: Option<AccessTokenClaims>,
    indicator: &str,
    resource: Resource,
    presenter: Option<&str>,
) -> Result<AuthorizedToken, BearerError> {
    let claims = claims.ok_or(BearerError::InvalidToken(
        "the access token is malformed, expired, or not signed by this server",
    ))?;
    let presenter_id = if claims.aud.as_slice() == [indicator] {
        match presenter {
            Some(p) if p != claims.client_id => {
                return Err(BearerError::InvalidToken(
                    "the access token was issued to another client than the one presenting it",
                ));
            }
            _ => claims.client_id.clone(),
        }
    } else if resource == Resource::Certificate && !claims.aud.contains(indicator) {
        let presenter = presenter.ok_or(BearerError::InvalidToken(
            "this token is shared among several parties: the party presenting it must authenticate as a client",
        ))?;
        if !claims.aud.contains(presenter) {
            return Err(BearerError::InvalidToken(
                "the presenting client is not among the parties this token was shared with",
            ));
        }
        presenter.to_owned()
    } else {
        return Err(BearerError::InvalidToken(
            "the access token is for another resource",
        ));
    };
    if store.is_revoked(&claims.jti, &claims.grant_id).await? {
        return Err(BearerError::InvalidToken("the access token was revoked"));
    }
    if !claims.scope.split(' ').any(|s| resource.satisfied_by(s)) {
        return Err(BearerError::InsufficientScope(resource.required_scope()));
    }
    let client = match ClientId::parse(&claims.client_id) {
        Ok(id) => store.client(&id).await?,
        Err(_) => None,
    };
    let client =
        client
            .filter(|c| c.status == ClientStatus::Active)
            .ok_or(BearerError::InvalidToken(
                "the client this token was issued to is not active",
            ))?;
    if !actors_active(store, &claims).await? {
        return Err(BearerError::InvalidToken(
            "a client along this token's delegation chain is not active",
        ));
    }
    Ok(AuthorizedToken {
        claims,
        client,
        presenter_id,
    })
}

/// Whether every actor of `claims`' delegation chain (RFC 8693 `act`) is
/// an active client: suspending a delegatee stops the tokens exchanged
/// through it at once, at the resource server and at introspection
/// (ATTACKS CA-06), not only at their expiry. A malformed chain is not.
pub(crate) async fn actors_active(
    store: &dyn Store,
    claims: &AccessTokenClaims,
) -> Result<bool, StoreError> {
    let Ok(actors) = super::exchange::actors(claims) else {
        return Ok(false);
    };
    for actor in actors {
        if actor == claims.client_id {
            continue;
        }
        let active = match ClientId::parse(&actor) {
            Ok(id) => store
                .client(&id)
                .await?
                .is_some_and(|c| c.status == ClientStatus::Active),
            Err(_) => false,
        };
        if !active {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_admits_only_its_scopes() {
        assert!(Resource::ClientRegistration.admits_scope(CLIENTS_SCOPE));
        assert!(!Resource::ClientRegistration.admits_scope(CERTIFICATE_SCOPE));
        assert!(!Resource::ClientRegistration.admits_scope("openid"));
        assert!(Resource::Certificate.admits_scope(CERTIFICATE_SCOPE));
        assert!(Resource::Certificate.admits_scope("openid"));
        assert!(!Resource::Certificate.admits_scope(CLIENTS_SCOPE));
    }

    #[test]
    fn indicators_are_distinct() {
        let issuer = "https://as.example";
        let cert = Resource::Certificate.indicator(issuer, "https://as.example/certificate");
        let api = Resource::ClientRegistration.indicator(issuer, "https://as.example/certificate");
        assert_eq!(api, "https://as.example/rest/v1/oidc/clients");
        assert_ne!(cert, api);
    }
}
