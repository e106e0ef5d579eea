//! What the authorization server says about itself: RFC 8414 / OpenID
//! Connect Discovery metadata, and WebFinger (RFC 7033) answers.
//!
//! Only what exists is advertised: an endpoint or grant appears here in the
//! same change that implements it, so clients never discover a feature that
//! fails.

use serde::Serialize;

use crate::config::OAuthConfig;

/// The scopes slcs knows.
pub const SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "offline_access",
    super::resource::CERTIFICATE_SCOPE,
    super::resource::OA4MP_GETCERT_SCOPE,
    super::resource::CLIENTS_SCOPE,
];

/// RFC 8414 §2 authorization server metadata.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    device_authorization_endpoint: String,
    userinfo_endpoint: String,
    jwks_uri: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    /// slcs: where an access token and a CSR become a certificate (BRIEF §5).
    certificate_endpoint: String,
    /// slcs: the issuing CA certificate (PEM).
    certificate_authority_uri: String,
    scopes_supported: Vec<&'static str>,
    /// `code` only (RFC 9700 §2.1.2).
    response_types_supported: Vec<&'static str>,
    response_modes_supported: Vec<&'static str>,
    /// RFC 7636: S256 only, required of every client.
    code_challenge_methods_supported: Vec<&'static str>,
    /// RFC 9207.
    authorization_response_iss_parameter_supported: bool,
    subject_types_supported: Vec<&'static str>,
    id_token_signing_alg_values_supported: Vec<String>,
    prompt_values_supported: Vec<&'static str>,
    claims_supported: Vec<&'static str>,
    grant_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    /// RFC 9068 access tokens are signed with this algorithm.
    access_token_signing_alg_values_supported: Vec<String>,
}

/// The metadata for `config`.
pub fn server_metadata(config: &OAuthConfig) -> ServerMetadata {
    let url = |path: &str| format!("{}{path}", config.issuer);
    let auth_methods = vec![
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "tls_client_auth",
    ];
    ServerMetadata {
        issuer: config.issuer.clone(),
        authorization_endpoint: url("/authorize"),
        token_endpoint: url("/token"),
        device_authorization_endpoint: url("/device_authorization"),
        userinfo_endpoint: url("/userinfo"),
        jwks_uri: url("/jwks"),
        introspection_endpoint: url("/introspect"),
        revocation_endpoint: url("/revoke"),
        certificate_endpoint: url("/certificate"),
        certificate_authority_uri: url("/ca.pem"),
        scopes_supported: SCOPES.to_vec(),
        response_types_supported: vec!["code"],
        response_modes_supported: vec!["query"],
        code_challenge_methods_supported: vec!["S256"],
        authorization_response_iss_parameter_supported: true,
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: vec![config.signing_alg.clone()],
        prompt_values_supported: vec!["none", "login", "consent", "select_account"],
        claims_supported: vec![
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "at_hash",
            "azp",
            "name",
            "preferred_username",
            "organisation",
            "email",
            "email_verified",
        ],
        grant_types_supported: vec![
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ],
        token_endpoint_auth_methods_supported: {
            // Public clients (PKCE only) authenticate with `none`.
            let mut methods = auth_methods.clone();
            methods.push("none");
            methods
        },
        // The algorithms src/oauth/assertion.rs verifies.
        token_endpoint_auth_signing_alg_values_supported: vec![
            "ES256", "ES384", "EdDSA", "RS256", "PS256",
        ],
        introspection_endpoint_auth_methods_supported: auth_methods.clone(),
        revocation_endpoint_auth_methods_supported: auth_methods,
        access_token_signing_alg_values_supported: vec![config.signing_alg.clone()],
    }
}

/// A WebFinger JRD (RFC 7033 §4.4).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WebFingerResponse {
    subject: String,
    links: Vec<WebFingerLink>,
}

/// One link of a JRD.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WebFingerLink {
    rel: &'static str,
    href: String,
}

/// The OpenID Connect issuer relation (OIDC Discovery §2).
pub const ISSUER_REL: &str = "http://openid.net/specs/connect/1.0/issuer";

/// Why a WebFinger query has no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebFingerError {
    /// `resource` missing or not an `acct:`/`https:` URI (400, RFC 7033 §4.2).
    #[error("resource must be an acct: or https: URI")]
    BadResource,
    /// This server does not serve that resource (404, RFC 7033 §4.2).
    #[error("this server does not serve that resource")]
    NotHere,
}

/// Answers "which issuer serves `resource`?" for accounts at this issuer's
/// host: `acct:user@host` (RFC 7565) or the issuer's own URLs. Users of other
/// hosts get 404: slcs never points at an issuer it is not.
pub fn webfinger(
    config: &OAuthConfig,
    resource: Option<&str>,
) -> Result<WebFingerResponse, WebFingerError> {
    let resource = resource
        .filter(|r| r.len() <= 512 && !r.chars().any(char::is_control))
        .ok_or(WebFingerError::BadResource)?;
    let issuer_host = config
        .issuer
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let host = if let Some(account) = resource.strip_prefix("acct:") {
        account
            .rsplit_once('@')
            .filter(|(user, host)| !user.is_empty() && !host.is_empty())
            .map(|(_, host)| host)
            .ok_or(WebFingerError::BadResource)?
    } else if let Some(rest) = resource.strip_prefix("https://") {
        rest.split('/').next().unwrap_or_default()
    } else {
        return Err(WebFingerError::BadResource);
    };
    // Host names compare case-insensitively (RFC 3986 §6.2.2.1).
    let host_only = |h: &str| h.split(':').next().unwrap_or_default().to_ascii_lowercase();
    if host_only(host) != host_only(issuer_host) {
        return Err(WebFingerError::NotHere);
    }
    Ok(WebFingerResponse {
        subject: resource.to_owned(),
        links: vec![WebFingerLink {
            rel: ISSUER_REL,
            href: config.issuer.clone(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> OAuthConfig {
        OAuthConfig {
            issuer: "https://as.example:8443".into(),
            certificate_audience: "https://as.example:8443/certificate".into(),
            access_token_lifetime: Duration::from_secs(900),
            signing_alg: "ES256".into(),
            key_rotation: Duration::from_secs(86_400),
            shared_keys_refresh: Duration::from_secs(30),
            refresh_token_lifetime: Duration::from_secs(86_400),
            refresh_reuse_grace: Duration::ZERO,
            device_code_lifetime: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(5),
            registration_group: "service-providers".into(),
        }
    }

    #[test]
    fn metadata_lists_endpoints_under_the_issuer() {
        let json = serde_json::to_value(server_metadata(&config())).unwrap();
        assert_eq!(json["issuer"], "https://as.example:8443");
        assert_eq!(json["token_endpoint"], "https://as.example:8443/token");
        assert_eq!(json["jwks_uri"], "https://as.example:8443/jwks");
        assert_eq!(
            json["grant_types_supported"],
            serde_json::json!([
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(
            json["authorization_endpoint"],
            "https://as.example:8443/authorize"
        );
        assert_eq!(
            json["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert!(
            json["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("none"))
        );
    }

    #[test]
    fn webfinger_answers_for_this_host_only() {
        let answer = webfinger(&config(), Some("acct:alice@AS.example")).unwrap();
        let json = serde_json::to_value(answer).unwrap();
        assert_eq!(json["links"][0]["href"], "https://as.example:8443");
        assert_eq!(json["links"][0]["rel"], ISSUER_REL);
        assert_eq!(
            webfinger(&config(), Some("acct:alice@other.example")),
            Err(WebFingerError::NotHere)
        );
        assert_eq!(
            webfinger(&config(), Some("mailto:a@b")),
            Err(WebFingerError::BadResource)
        );
        assert_eq!(webfinger(&config(), None), Err(WebFingerError::BadResource));
        assert_eq!(
            webfinger(&config(), Some("acct:@as.example")),
            Err(WebFingerError::BadResource)
        );
    }
}
