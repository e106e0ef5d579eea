//! The records of a person's grants while they are in flight: authorization
//! requests waiting for sign-in or consent, authorization codes, refresh
//! tokens and device codes. Secrets (codes, refresh tokens, device codes)
//! are stored only as keyed hashes ([`secret_key`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::secrets::{SecretPepper, hash_secret};

/// What a person authorised one client to do: carried from the code or
/// device code into every access and refresh token of the grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGrant {
    /// The grant (token family) id: revoking it revokes every token and
    /// marks every certificate issued from it.
    pub grant_id: String,
    /// The person.
    pub sub: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The resource (RFC 8707) the access tokens are for.
    pub resource: String,
    /// The approval it was granted under.
    pub approval_id: String,
    /// When the person authenticated.
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    /// How (RFC 8176).
    pub amr: Vec<String>,
    /// The grant type that began it (`authorization_code`,
    /// `urn:ietf:params:oauth:grant-type:device_code`), recorded as the root
    /// step of certificates' provenance.
    pub root_grant_type: String,
}

impl UserGrant {
    /// The scopes as a set.
    pub fn scopes(&self) -> BTreeSet<String> {
        self.scope.split(' ').map(str::to_owned).collect()
    }

    /// Whether the grant carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// RFC 6749 §3.1's `prompt` values (OIDC Core §3.1.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// `none`: no page may be shown; fail with `login_required` or
    /// `consent_required` instead.
    pub none: bool,
    /// `login`: re-authenticate even with a session.
    pub login: bool,
    /// `consent`: show the consent page even when an approval covers it.
    pub consent: bool,
}

/// A validated authorization request waiting for the person to sign in or
/// decide (OIDC Core §3.1.2). Kept in the store so that any replica can
/// continue it, for at most [`PENDING_LIFETIME`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    /// Random identifier carried by the login and consent forms.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The exactly matched redirect URI.
    pub redirect_uri: String,
    /// Requested scopes (each registered for the client).
    pub scopes: BTreeSet<String>,
    /// The resource indicator of the access token.
    pub resource: String,
    /// Client state, returned verbatim.
    pub state: Option<String>,
    /// OIDC nonce, copied into the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge (RFC 7636 §4.2).
    pub code_challenge: String,
    /// Prompt values.
    pub prompt: Prompt,
    /// OIDC `max_age`, seconds.
    pub max_age: Option<i64>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Discarded after this.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// How long a pending authorization request waits for sign-in and consent.
pub const PENDING_LIFETIME: time::Duration = time::Duration::minutes(15);

/// An authorization code (RFC 6749 §4.1.2), stored by its keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationCode {
    /// Keyed hash of the code.
    pub hash: String,
    /// What it grants.
    pub grant: UserGrant,
    /// The redirect URI it was sent to (RFC 6749 §4.1.3: must be repeated).
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// OIDC nonce.
    pub nonce: Option<String>,
    /// Issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expires (at most 60 s after issue).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Set by the first redemption; a second one finds it set.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub redeemed_at: Option<OffsetDateTime>,
}

/// Lifetime of an authorization code (RFC 6749 §4.1.2 recommends at most
/// 10 minutes; slcs uses 60 s, the bound).
pub const CODE_LIFETIME: time::Duration = time::Duration::seconds(60);

/// The outcome of redeeming a code, decided atomically by the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First redemption: the code is now spent.
    Fresh(AuthorizationCode),
    /// Already redeemed before (RFC 6749 §4.1.2: revoke what was issued).
    Replayed(AuthorizationCode),
    /// No such code.
    Unknown,
}

/// Where a refresh token is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RefreshState {
    /// Usable once.
    Active,
    /// Used: exchanged for `successor` at `at`.
    Rotated {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// Keyed hash of the token issued in exchange.
        successor: String,
    },
    /// Revoked (its grant was revoked, or a grace-period reuse replaced it).
    Revoked {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// A refresh token (RFC 6749 §6), stored by its keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Keyed hash of the token.
    pub hash: String,
    /// What it grants.
    pub grant: UserGrant,
    /// Issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Unusable after this.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Active, rotated or revoked.
    #[serde(flatten)]
    pub state: RefreshState,
}

/// Where a device authorization (RFC 8628) stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Waiting for the person at the verification page.
    Pending,
    /// The person approved; the next poll receives tokens.
    Approved {
        /// What was granted.
        grant: Box<UserGrant>,
    },
    /// The person refused.
    Denied,
    /// Tokens were issued; the device code is spent.
    Redeemed,
}

/// A device authorization, stored by the keyed hash of its device code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Keyed hash of the device code.
    pub hash: String,
    /// The user code, normalised (upper case, no separator).
    pub user_code: String,
    /// The client.
    pub client_id: String,
    /// Requested scopes.
    pub scopes: BTreeSet<String>,
    /// The resource indicator of the access token.
    pub resource: String,
    /// Issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Minimum seconds between polls (RFC 8628 §3.5 `slow_down` adds 5).
    pub interval_secs: u64,
    /// Last poll.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_poll: Option<OffsetDateTime>,
    /// Status.
    #[serde(flatten)]
    pub status: DeviceStatus,
}

/// The store key of a bearer secret (code, refresh token, device code): its
/// HMAC under the server pepper, with `kind` separating the domains.
pub fn secret_key(pepper: &SecretPepper, kind: &str, secret: &str) -> String {
    hex::encode(hash_secret(pepper, &format!("{kind}\0{secret}")).as_bytes())
}

/// A random secret: `prefix` + 256 bits, base64url.
pub fn random_secret(prefix: &str) -> Option<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// How an exchanged access token came to be (RFC 8693): the token it was
/// exchanged from, by whom, for what. Kept for as long as the token can
/// live, so that revoking a token reaches every token exchanged from it
/// (and their certificates), and so that a certificate's provenance can
/// name every hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLineage {
    /// The exchanged token's `jti`.
    pub jti: String,
    /// The subject token's `jti`.
    pub parent_jti: String,
    /// The client the subject token was issued to.
    pub parent_client_id: String,
    /// The subject token's scope.
    pub parent_scope: String,
    /// When the subject token was issued (seconds).
    pub parent_iat: i64,
    /// The exchanging client (the new token's `client_id`).
    pub client_id: String,
    /// How it authenticated.
    pub client_auth: String,
    /// Whether the exchanging client became the new actor (`false` for a
    /// token a client narrowed for its own delegatees).
    pub new_actor: bool,
    /// The new token's scope.
    pub scope: String,
    /// The new token's audience.
    pub audience: Vec<String>,
    /// When it was exchanged.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The new token's expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}
