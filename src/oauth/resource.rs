//! The protected resources slcs serves and how their bearer tokens are
//! checked (RFC 6750, RFC 8707, RFC 9068 §4).
//!
//! Every access token names exactly the resource it is for in `aud`
//! (RFC 8707 §2: audience-restricted tokens), and every resource accepts only
//! tokens naming it: a certificate-endpoint token cannot manage clients and a
//! registration-API token cannot obtain a certificate (RFC 9700 §2.3, least
//! privilege). Each resource has its own scopes, so a token request's scope
//! is checked against the resource it asks for.

use time::OffsetDateTime;

use super::clients::{ClientId, ClientStatus};
use super::jwt::{AccessTokenClaims, Expectations};
use crate::store::{Store, StoreError};

/// The scope of the certificate endpoint.
pub const CERTIFICATE_SCOPE: &str = "slcs:certificate";

/// The scope of the client registration API.
pub const CLIENTS_SCOPE: &str = "slcs:clients";

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

/// Checks `token` for `resource` at `now`: signature and header (pinned
/// algorithms, RFC 8725), `iss`, `aud` naming this resource, `exp`/`nbf`,
/// not revoked (token or grant), the resource's scope, and an active client.
/// The revocation check is two point lookups.
pub(super) async fn check_bearer(
    store: &dyn Store,
    verify: impl FnOnce(&Expectations<'_>) -> Option<AccessTokenClaims>,
    issuer: &str,
    audience: &str,
    resource: Resource,
    now: OffsetDateTime,
    leeway_secs: u64,
) -> Result<AccessTokenClaims, BearerError> {
    let claims = verify(&Expectations {
        issuer,
        audience,
        now: now.unix_timestamp(),
        leeway_secs,
    })
    .ok_or(BearerError::InvalidToken(
        "the access token is malformed, expired, not signed by this server, or not for this resource",
    ))?;
    if store.is_revoked(&claims.jti, &claims.grant_id).await? {
        return Err(BearerError::InvalidToken("the access token was revoked"));
    }
    let required = resource.required_scope();
    if !claims.scope.split(' ').any(|s| s == required) {
        return Err(BearerError::InsufficientScope(required));
    }
    let active = match ClientId::parse(&claims.client_id) {
        Ok(id) => store
            .client(&id)
            .await?
            .is_some_and(|c| c.status == ClientStatus::Active),
        Err(_) => false,
    };
    if !active {
        return Err(BearerError::InvalidToken(
            "the client this token was issued to is not active",
        ));
    }
    Ok(claims)
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
