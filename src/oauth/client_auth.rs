//! Client authentication at the token, introspection and revocation
//! endpoints (RFC 6749 §2.3, RFC 7523 §2.2, RFC 8705 §2).
//!
//! The HTTP edge turns a request into [`PresentedCredentials`] (what the
//! client showed, and how); [`authenticate`] decides. Exactly one method per
//! request (RFC 6749 §2.3: "MUST NOT use more than one authentication method
//! in each request"); secrets are compared as keyed hashes in constant time,
//! and an unknown client costs the same hash as a known one.

use time::OffsetDateTime;

use super::assertion::{AssertionExpectations, claimed_client, verify_assertion};
use super::clients::{Client, ClientId, ClientStatus, TokenEndpointAuthMethod};
use super::secrets::{SecretPepper, verify_secret, verify_secret_dummy};
use crate::store::{Store, StoreError};

/// What a client presented to authenticate, and how.
#[derive(Clone, PartialEq, Eq)]
pub enum PresentedCredentials {
    /// `Authorization: Basic` (RFC 6749 §2.3.1).
    Basic {
        /// Client id.
        client_id: String,
        /// Secret.
        secret: String,
    },
    /// `client_id` and `client_secret` in the body (RFC 6749 §2.3.1).
    Post {
        /// Client id.
        client_id: String,
        /// Secret.
        secret: String,
    },
    /// `private_key_jwt`: a JWT signed with a registered key (RFC 7523 §2.2).
    Assertion {
        /// The assertion.
        assertion: String,
    },
    /// `tls_client_auth`: `client_id` plus the subject DN of the client
    /// certificate the TLS layer verified (RFC 8705 §2.1).
    Certificate {
        /// Client id.
        client_id: String,
        /// RFC 4514 subject of the verified client certificate.
        subject_dn: String,
    },
    /// Only `client_id`: a public client.
    None {
        /// Client id.
        client_id: String,
    },
}

impl std::fmt::Debug for PresentedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        match self {
            Self::Basic { client_id, .. } => write!(f, "Basic({client_id})"),
            Self::Post { client_id, .. } => write!(f, "Post({client_id})"),
            Self::Assertion { .. } => f.write_str("Assertion"),
            Self::Certificate { client_id, .. } => write!(f, "Certificate({client_id})"),
            Self::None { client_id } => write!(f, "None({client_id})"),
        }
    }
}

impl PresentedCredentials {
    /// The method's registered name.
    pub fn method(&self) -> TokenEndpointAuthMethod {
        match self {
            Self::Basic { .. } => TokenEndpointAuthMethod::ClientSecretBasic,
            Self::Post { .. } => TokenEndpointAuthMethod::ClientSecretPost,
            Self::Assertion { .. } => TokenEndpointAuthMethod::PrivateKeyJwt,
            Self::Certificate { .. } => TokenEndpointAuthMethod::TlsClientAuth,
            Self::None { .. } => TokenEndpointAuthMethod::None,
        }
    }

    /// `tls_client_auth` credentials from a verified client certificate
    /// (DER, leaf); `None` if it cannot be parsed.
    pub fn from_certificate(client_id: String, certificate_der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::FromDer as _;
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(certificate_der).ok()?;
        Some(Self::Certificate {
            client_id,
            subject_dn: crate::pki::inspect::name_to_rfc4514(cert.subject()),
        })
    }

    /// Whether HTTP Basic was used (then `invalid_client` carries
    /// `WWW-Authenticate: Basic`, RFC 6749 §5.2).
    pub fn used_basic(&self) -> bool {
        matches!(self, Self::Basic { .. })
    }

    fn client_id(&self) -> Option<String> {
        match self {
            Self::Basic { client_id, .. }
            | Self::Post { client_id, .. }
            | Self::Certificate { client_id, .. }
            | Self::None { client_id } => Some(client_id.clone()),
            Self::Assertion { assertion } => claimed_client(assertion),
        }
    }
}

/// A client that proved who it is.
#[derive(Clone, Debug)]
pub struct AuthenticatedClient {
    /// The client as stored.
    pub client: Client,
    /// How it authenticated (recorded in provenance and audit).
    pub method: TokenEndpointAuthMethod,
}

impl AuthenticatedClient {
    /// Whether it proved possession of a credential (anything but `none`).
    pub fn has_credentials(&self) -> bool {
        self.method != TokenEndpointAuthMethod::None
    }
}

/// Why a client was not authenticated. Every variant answers
/// `invalid_client`; the messages do not reveal which part was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// Unknown client, wrong secret, or a method the client did not register.
    #[error("client authentication failed")]
    Failed,
    /// The client is registered but not active.
    #[error("client is {0}")]
    NotActive(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Authenticates `presented` against the registry. `audiences` are the
/// values a client assertion's `aud` may carry (the issuer, the endpoint).
pub async fn authenticate(
    store: &dyn Store,
    pepper: &SecretPepper,
    presented: &PresentedCredentials,
    audiences: &[String],
    now: OffsetDateTime,
) -> Result<AuthenticatedClient, ClientAuthError> {
    let client = match presented.client_id().map(|id| ClientId::parse(&id)) {
        Some(Ok(id)) => store.client(&id).await?,
        _ => None,
    };
    let Some(client) = client else {
        // Same work as for a known client: no timing oracle on client ids.
        if let PresentedCredentials::Basic { secret, .. }
        | PresentedCredentials::Post { secret, .. } = presented
        {
            verify_secret_dummy(pepper, secret);
        }
        return Err(ClientAuthError::Failed);
    };
    let method = presented.method();
    let secret_ok = match (presented, &client.secret) {
        (
            PresentedCredentials::Basic { secret, .. } | PresentedCredentials::Post { secret, .. },
            Some(stored),
        ) => verify_secret(pepper, secret, stored),
        (
            PresentedCredentials::Basic { secret, .. } | PresentedCredentials::Post { secret, .. },
            None,
        ) => {
            // A public client sending a secret (ATTACKS CA-02).
            verify_secret_dummy(pepper, secret);
            false
        }
        // A confidential client sending no secret (CA-02), or a public client:
        // public clients have no secret to check, and only grants that allow
        // them (authorization code with PKCE, later) accept `none`.
        (PresentedCredentials::Assertion { assertion }, _) => {
            let Some(jwks) = &client.jwks else {
                return Err(ClientAuthError::Failed);
            };
            let verified = verify_assertion(
                jwks,
                assertion,
                &AssertionExpectations {
                    client_id: client.id.as_str(),
                    audiences,
                    now: now.unix_timestamp(),
                },
            )
            .map_err(|e| {
                tracing::debug!(client = client.id.as_str(), error = %e, "client assertion refused");
                ClientAuthError::Failed
            })?;
            // RFC 7523 §3 item 7 / ATTACKS CA-05: one use per jti, decided
            // atomically before anything is minted.
            let expires = OffsetDateTime::from_unix_timestamp(verified.exp).unwrap_or(now);
            let key = format!("assertion\0{}\0{}", client.id.as_str(), verified.jti);
            store.use_once(&key, expires).await?
        }
        (PresentedCredentials::Certificate { subject_dn, .. }, _) => {
            // RFC 8705 §2.1.2: the certificate (already verified by the TLS
            // layer against the slcs CA) must carry the registered subject
            // DN, compared as RFC 4514 strings.
            client
                .tls_client_auth_subject_dn
                .as_deref()
                .is_some_and(|registered| registered == subject_dn)
        }
        (PresentedCredentials::None { .. }, stored) => stored.is_none(),
    };
    // The method must be the one the client registered (RFC 7591 §2
    // token_endpoint_auth_method); basic and post are interchangeable for
    // a secret-holding client, as most servers allow.
    let registered = client.token_endpoint_auth_method;
    let method_ok = registered == method
        || matches!(
            (registered, method),
            (
                TokenEndpointAuthMethod::ClientSecretBasic
                    | TokenEndpointAuthMethod::ClientSecretPost,
                TokenEndpointAuthMethod::ClientSecretBasic
                    | TokenEndpointAuthMethod::ClientSecretPost
            )
        );
    if !(secret_ok && method_ok) {
        return Err(ClientAuthError::Failed);
    }
    match client.status {
        ClientStatus::Active => Ok(AuthenticatedClient { client, method }),
        ClientStatus::Pending => Err(ClientAuthError::NotActive("pending approval")),
        ClientStatus::Suspended => Err(ClientAuthError::NotActive("suspended")),
    }
}
