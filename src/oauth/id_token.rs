//! OpenID Connect ID tokens (OIDC Core §2) and the claims about a person
//! released by scope (§5.4) to the ID token and `/userinfo`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::keys::SigningAlgorithm;
use crate::users::User;

/// The `typ` of ID tokens: plain `JWT`, never `at+jwt`, so that an ID
/// token is refused wherever an access token is expected (RFC 9068 §4,
/// RFC 8725 §3.11).
pub const ID_TOKEN_TYP: &str = "JWT";

/// The `acr` slcs asserts for a password sign-in: REFEDS Single-Factor
/// Authentication (<https://refeds.org/profile/sfa>).
pub const ACR_PASSWORD: &str = "https://refeds.org/profile/sfa";

/// The claims of an ID token.
#[derive(Clone, Debug, Serialize)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// The person.
    pub sub: String,
    /// The client (and only the client).
    pub aud: String,
    /// Authorized party: the client (OIDC Core §2).
    pub azp: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the person authenticated.
    pub auth_time: i64,
    /// The authorization request's nonce, verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authentication context class.
    pub acr: String,
    /// Authentication methods (RFC 8176).
    pub amr: Vec<String>,
    /// Left half of the hash of the access token (OIDC Core §3.1.3.6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// Profile and e-mail claims released by scope.
    #[serde(flatten)]
    pub profile: PersonClaims,
}

/// Claims about a person, by scope (OIDC Core §5.4): `profile` releases
/// name and username, `email` the address. `email_verified` is false:
/// local accounts' addresses are entered by an administrator, not proven.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PersonClaims {
    /// Full name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Organisation (not a registered OIDC claim; released with `profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// E-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the e-mail address was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl PersonClaims {
    /// The claims the space-separated `scope` releases about `user`.
    pub fn for_scope(user: &User, scope: &str) -> Self {
        let has = |wanted: &str| scope.split(' ').any(|s| s == wanted);
        let mut claims = Self::default();
        if has("profile") {
            claims.name = Some(user.display_name.clone());
            claims.preferred_username = Some(user.username.clone());
            claims.organisation = user.organisation.clone();
        }
        if has("email") && user.email.is_some() {
            claims.email = user.email.clone();
            claims.email_verified = Some(false);
        }
        claims
    }
}

/// `at_hash`: base64url of the left half of the hash of the access token's
/// ASCII octets, with the hash of the ID token's algorithm (OIDC Core
/// §3.1.3.6): SHA-256 for ES256 and RS256, SHA-512 for EdDSA with Ed25519
/// (OpenID Connect's EdDSA clarification).
pub fn at_hash(alg: SigningAlgorithm, access_token: &str) -> String {
    use aws_lc_rs::digest;
    let algorithm = match alg {
        SigningAlgorithm::EdDsa => &digest::SHA512,
        SigningAlgorithm::Es256 | SigningAlgorithm::Rs256 => &digest::SHA256,
    };
    let hash = digest::digest(algorithm, access_token.as_bytes());
    let bytes = hash.as_ref();
    URL_SAFE_NO_PAD.encode(bytes.get(..bytes.len() / 2).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OIDC Core Appendix A.3's access token and at_hash (RS256).
        assert_eq!(
            at_hash(
                SigningAlgorithm::Rs256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
