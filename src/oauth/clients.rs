//! OAuth clients: the model slcs stores, the EBRAINS/Keycloak JSON
//! representation of the registration API (seed `003_*`), and the
//! registration rules.
//!
//! Pure domain: no HTTP, no storage, no clock (`now` comes in the
//! [`RegistrationContext`]). A handler parses JSON into a
//! [`ClientRepresentation`], calls [`validate_registration`], then
//! [`create_client`] (POST) or [`apply_update`] (PUT), stores the resulting
//! [`Client`] and shows a newly generated secret exactly once.
//!
//! What this module must never do: take a server-owned field (owner, status,
//! secret, grants, timestamps) from input (ATTACKS REG-02); put a secret, or
//! its hash, into a representation (REG-11); compare redirect URIs any other
//! way than as exact strings (RFC 9700 §2.1, §4.1.3).
//!
//! The rules and their reasons are written up in `docs/clients.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::secrets::{ClientSecret, HashedSecret, SecretError, SecretPepper};

/// Longest client id, in characters: it is also the service account's
/// certificate CN, and RFC 5280's `ub-common-name` is 64.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Longest client name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest redirect URI (or origin, root or base URL), in bytes.
pub const MAX_URI_BYTES: usize = 2048;
/// Most redirect URIs per client.
pub const MAX_REDIRECT_URIS: usize = 16;
/// Most web origins per client.
pub const MAX_WEB_ORIGINS: usize = 16;
/// Most maintainers per client.
pub const MAX_MAINTAINERS: usize = 32;
/// Longest maintainer (user name or subject), in characters.
pub const MAX_USER_CHARS: usize = 255;
/// Most declared delegatees per client.
pub const MAX_DELEGATEES: usize = 32;
/// Most scopes (default + optional) per client.
pub const MAX_SCOPES: usize = 64;
/// Longest scope token, in characters.
pub const MAX_SCOPE_CHARS: usize = 128;
/// Most Keycloak `attributes` entries kept per client.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key, in characters.
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 128;
/// Longest attribute value, in characters.
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 2048;
/// Largest JWK Set for `private_key_jwt`, serialised, in bytes.
pub const MAX_JWKS_BYTES: usize = 16 * 1024;
/// Most keys in a JWK Set.
pub const MAX_JWKS_KEYS: usize = 10;
/// Longest RFC 8705 subject DN, in characters.
pub const MAX_TLS_SUBJECT_DN_CHARS: usize = 1024;
/// Longest group name, in characters.
pub const MAX_GROUP_CHARS: usize = 128;
/// Longest unit path, in characters.
pub const MAX_UNIT_PATH_CHARS: usize = 512;
/// Most segments in a unit path.
pub const MAX_UNIT_SEGMENTS: usize = 16;
/// Longest segment of a unit path, in characters.
pub const MAX_UNIT_SEGMENT_CHARS: usize = 64;
/// Most groups (and, separately, units) granted access to one client.
pub const MAX_ACCESS_GRANTS: usize = 256;

/// Largest `slcs.maxCertificateLifetimeSecs`: below the IGTF short-lived
/// credential threshold of 10⁶ s (the profile's own maximum applies too).
pub const MAX_CERTIFICATE_LIFETIME_SECS: u64 = 999_999;

/// Scopes no registration may ask for, whatever the configured allowed set.
pub const FORBIDDEN_SCOPES: &[&str] = &["slcs:admin"];

/// Namespaces used for non-client subjects (audit actors are `user:<sub>`,
/// `client:<id>`; service-account tokens have `sub = service:<client_id>`).
/// A client id never starts with one (ATTACKS TX-15).
const RESERVED_ID_PREFIXES: &[&str] = &["service:", "user:", "client:"];
/// Ids that name the server or a role rather than a client (compared
/// case-insensitively).
const RESERVED_IDS: &[&str] = &[
    "admin",
    "administrator",
    "anonymous",
    "client",
    "guest",
    "root",
    "service",
    "slcs",
    "system",
    "user",
];
/// Query parameters the authorization server appends to a redirect
/// (RFC 6749 §4.1.2 and §4.1.2.1, RFC 9207): a registered URI that already
/// carries one could be confused with a response.
const RESERVED_QUERY_PARAMETERS: &[&str] = &[
    "code",
    "state",
    "iss",
    "error",
    "error_description",
    "error_uri",
];
/// How many characters of caller input an error message repeats.
const ECHO_CHARS: usize = 80;

// ---------------------------------------------------------------------------
// Client ids
// ---------------------------------------------------------------------------

/// A client identifier: 1 to 64 characters of `[A-Za-z0-9._-]`, starting
/// with a letter or digit, not in a subject namespace (`service:`, `user:`,
/// `client:`), not a reserved word, not shaped like a UUID.
///
/// Why (ATTACKS TX-15, RFC 9700 §4.15: the AS "SHOULD NOT allow clients to
/// influence their client_id or any claim that could cause confusion with a
/// genuine resource owner"): service-account tokens carry
/// `sub = service:<client_id>`, a namespace user subjects never use, so a
/// client id cannot equal a user's `sub` by construction. On top of that,
/// ids that look like user subjects are refused: UUIDs (Keycloak, EBRAINS
/// and EGI user subjects are UUIDs) and the names of roles. The handler also
/// refuses an id that is a known user's name or subject
/// ([`RegistrationContext::client_id_names_a_user`]).
///
/// The first character must be alphanumeric so that an id is never `.` or
/// `..` when it appears as a URL path segment
/// (`/rest/v1/oidc/clients/{clientId}`).
///
/// Ids compare case-sensitively (the seed uses `tutorialOidcApi`); the
/// store keeps them unique under [`ClientId::folded`] so `Portal` cannot be
/// registered next to `portal`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

/// Why a string is not a [`ClientId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    /// The id is empty.
    #[error("a client id must not be empty")]
    Empty,
    /// The id is longer than [`MAX_CLIENT_ID_CHARS`].
    #[error("a client id has at most {MAX_CLIENT_ID_CHARS} characters, this one has {0}")]
    TooLong(usize),
    /// The id starts with a subject namespace prefix.
    #[error(
        "a client id must not start with `{0}`: that prefix names accounts, not clients, and would let a client pass for a user or a service account (RFC 9700 §4.15)"
    )]
    NamespacePrefix(&'static str),
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("a client id may contain only letters, digits, `.`, `_` and `-`; found {0:?}")]
    BadCharacter(char),
    /// The first character is not a letter or digit.
    #[error("a client id must start with a letter or a digit")]
    BadFirstCharacter,
    /// A reserved word.
    #[error("`{0}` is reserved and cannot be used as a client id")]
    Reserved(String),
    /// Shaped like a user subject (a UUID, or 32 hex digits).
    #[error(
        "a client id must not look like a user subject (a UUID or 32 hexadecimal digits), so that no client can be confused with a person (RFC 9700 §4.15); choose a descriptive id"
    )]
    LooksLikeUserSubject,
}

impl ClientId {
    /// Checks `value` against the rules above.
    pub fn parse(value: &str) -> Result<Self, ClientIdError> {
        if value.is_empty() {
            return Err(ClientIdError::Empty);
        }
        let lower = value.to_ascii_lowercase();
        if let Some(prefix) = RESERVED_ID_PREFIXES.iter().find(|p| lower.starts_with(**p)) {
            return Err(ClientIdError::NamespacePrefix(prefix));
        }
        let chars = value.chars().count();
        if chars > MAX_CLIENT_ID_CHARS {
            return Err(ClientIdError::TooLong(chars));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ClientIdError::BadCharacter(bad));
        }
        if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(ClientIdError::BadFirstCharacter);
        }
        if RESERVED_IDS.contains(&lower.as_str()) {
            return Err(ClientIdError::Reserved(value.to_owned()));
        }
        if looks_like_uuid(&lower) {
            return Err(ClientIdError::LooksLikeUserSubject);
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as registered.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id in ASCII lower case: the key under which the store keeps ids
    /// unique, so look-alikes differing only in case cannot coexist.
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// The `sub` of this client's own (client credentials) tokens. The
    /// `service:` namespace is never used by user subjects (ATTACKS TX-15).
    pub fn service_subject(&self) -> String {
        format!("service:{}", self.0)
    }
}

impl TryFrom<String> for ClientId {
    type Error = ClientIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ClientId> for String {
    fn from(value: ClientId) -> Self {
        value.0
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------
// Kinds, statuses, grants, authentication methods
// ---------------------------------------------------------------------------

/// What sort of client this is; derived from the representation's flags,
/// never chosen directly (see [`validate_registration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Server-side web application: confidential, authorization code.
    Web,
    /// Single-page application: public, authorization code with PKCE.
    Spa,
    /// Native or input-constrained application using the device grant
    /// (RFC 8628), public or confidential.
    Native,
    /// Server-to-server client acting only as itself (client credentials).
    Service,
}

impl ClientKind {
    /// The lower-case name used in JSON and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Spa => "spa",
            Self::Native => "native",
            Self::Service => "service",
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a client is in its life: `pending → active → suspended`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    /// Registered, waiting for an administrator (the EGI "Registration
    /// Pending" state, seed `000_*`). Cannot authenticate.
    Pending,
    /// Approved; may authenticate and obtain tokens.
    Active,
    /// Switched off by an administrator. Cannot authenticate; its tokens
    /// fail introspection (ATTACKS CA-06).
    Suspended,
}

impl ClientStatus {
    /// The lower-case name used in JSON and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    /// Whether an administrator may move a client from `self` to `to`:
    /// approve (pending → active), reject (pending → suspended), suspend
    /// (active → suspended), reinstate (suspended → active), and send back
    /// for review (active → pending, e.g. after [`needs_review`]).
    pub fn may_become(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::Pending, Self::Active)
                | (Self::Pending, Self::Suspended)
                | (Self::Active, Self::Suspended)
                | (Self::Suspended, Self::Active)
                | (Self::Active, Self::Pending)
        )
    }
}

impl fmt::Display for ClientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The grant types slcs implements, by their registered names. `implicit`
/// and `password` do not exist here at all (RFC 9700 §2.1.2, §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GrantType {
    /// RFC 6749 §4.1, always with PKCE S256.
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    /// RFC 6749 §6, rotated on use.
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// RFC 6749 §4.4: a service account acting as itself.
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// RFC 8628.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode,
    /// RFC 8693.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
}

impl GrantType {
    /// The `grant_type` value on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    }

    /// Parses a `grant_type` value; `None` for anything slcs does not
    /// implement (`password`, `implicit`, unknown): `unsupported_grant_type`.
    pub fn from_wire(value: &str) -> Option<Self> {
        [
            Self::AuthorizationCode,
            Self::RefreshToken,
            Self::ClientCredentials,
            Self::DeviceCode,
            Self::TokenExchange,
        ]
        .into_iter()
        .find(|g| g.name() == value)
    }
}

/// How a client authenticates at the token endpoint (RFC 7591 §2
/// `token_endpoint_auth_method` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    /// Secret in HTTP Basic (RFC 6749 §2.3.1). The default for confidential
    /// clients, as in the openEO/EGI guide (seed `000_*`).
    ClientSecretBasic,
    /// Secret in the form body (RFC 6749 §2.3.1).
    ClientSecretPost,
    /// JWT signed with a key from the registered JWK Set (RFC 7523 §2.2).
    PrivateKeyJwt,
    /// Mutual TLS with a PKI certificate whose subject DN is registered
    /// (RFC 8705 §2.1).
    TlsClientAuth,
    /// No authentication: public clients (SPA, public native), PKCE only.
    None,
}

impl TokenEndpointAuthMethod {
    /// The RFC 7591 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::None => "none",
        }
    }

    /// Whether the client holds a secret generated by slcs.
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }

    /// The Keycloak `clientAuthenticatorType` for this method.
    fn keycloak_authenticator(self) -> Option<&'static str> {
        match self {
            Self::ClientSecretBasic | Self::ClientSecretPost => Some("client-secret"),
            Self::PrivateKeyJwt => Some("client-jwt"),
            Self::TlsClientAuth => Some("client-x509"),
            Self::None => None,
        }
    }
}

impl fmt::Display for TokenEndpointAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The seed's `featureAuthenticate`: when enabled, only members of the
/// listed groups or units may use the client. The grants are changed only
/// through [`grant_group`], [`revoke_group`], [`grant_unit`] and
/// [`revoke_unit`], never from the representation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureAuthenticate {
    /// Whether access is restricted to the groups and units below.
    pub enabled: bool,
    /// Group names granted access (e.g. `TVB-Workshops`).
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Unit paths granted access (e.g. `all:projects:hbp`).
    #[serde(default)]
    pub units: BTreeSet<String>,
}

// ---------------------------------------------------------------------------
// Redirect URIs
// ---------------------------------------------------------------------------

/// A redirect URI that passed the registration rules. The only comparison
/// is exact string equality ([`RegisteredRedirectUri::matches`]): no
/// normalisation, no case folding, no wildcard, no prefix, no port
/// variation (RFC 9700 §2.1, §4.1.3; RFC 3986 §6.2.1 simple string
/// comparison).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegisteredRedirectUri(String);

/// Why a URI was refused (redirect URIs, web origins, root and base URLs).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriProblem {
    /// Longer than [`MAX_URI_BYTES`].
    #[error("is {0} bytes long; at most {MAX_URI_BYTES} are accepted")]
    TooLong(usize),
    /// `javascript:`, `data:` or `vbscript:`, in any case.
    #[error(
        "uses the `{0}:` scheme, which runs code or embeds content in the browser; only https URIs are accepted (RFC 9700 §2.6)"
    )]
    DangerousScheme(&'static str),
    /// Whitespace or a control character anywhere.
    #[error("contains whitespace or a control character")]
    ControlOrWhitespace,
    /// A `*` anywhere.
    #[error(
        "contains `*`, but slcs compares redirect URIs by exact string match (RFC 9700 §2.1, §4.1.3), so wildcards are not supported: a wildcard would also match look-alike hosts and paths; register each full redirect URI instead, e.g. https://app.example.org/login/callback"
    )]
    Wildcard,
    /// A `#` fragment.
    #[error("contains a fragment (`#…`), which a redirect URI must not have (RFC 6749 §3.1.2)")]
    Fragment,
    /// A backslash, which browsers treat as `/`.
    #[error("contains a backslash, which browsers read as `/`")]
    Backslash,
    /// No scheme: relative or garbled.
    #[error(
        "is not an absolute URI (https://host/path); relative URIs are not resolved against rootUrl"
    )]
    NotAbsolute,
    /// Upper-case letters in the scheme.
    #[error("the scheme must be written in lower case (`https`)")]
    SchemeNotLowerCase,
    /// Neither https nor http.
    #[error(
        "uses the `{0}` scheme; only https is accepted (http only for loopback hosts on a development server; private-use schemes are not supported)"
    )]
    SchemeNotAllowed(String),
    /// `https:host` without `//`.
    #[error("has no `//host` after the scheme (like `https:evil.example`)")]
    MissingAuthority,
    /// `user@host`.
    #[error(
        "contains user information (`…@host`), which is refused because it disguises the real host"
    )]
    UserInfo,
    /// `https:///path`.
    #[error("has an empty host")]
    EmptyHost,
    /// Upper-case letters in the host.
    #[error(
        "the host must be written in lower case, because redirect URIs are compared as exact strings"
    )]
    HostNotLowerCase,
    /// Non-ASCII host, or an `xn--` label.
    #[error(
        "has an internationalised (IDN) host name (non-ASCII, or an `xn--` label); IDN hosts are refused because look-alike names mislead users on the consent page"
    )]
    IdnHost,
    /// Not a DNS name or IP literal slcs accepts.
    #[error("has an invalid host: {0}")]
    InvalidHost(&'static str),
    /// Port not a number in 1..=65535 written without leading zeros.
    #[error("has an invalid port (a number from 1 to 65535, without leading zeros)")]
    InvalidPort,
    /// localhost, 127.0.0.0/8 or `[::1]` on a production server.
    #[error(
        "points at the local machine (localhost, 127.0.0.0/8 or [::1]); loopback URIs are accepted only by a development server (seed 003: localhost clients belong on the integration environment)"
    )]
    Loopback,
    /// http for anything but a loopback host on a development server.
    #[error(
        "uses http; redirect URIs must use https (RFC 9700 §2.6), http is accepted only for loopback hosts on a development server"
    )]
    HttpNotAllowed,
    /// Non-ASCII characters outside the host.
    #[error("contains non-ASCII characters; percent-encode them")]
    NotAscii,
    /// A character RFC 3986 does not allow there.
    #[error("contains {0:?}, which is not allowed there (RFC 3986 §3.3, §3.4)")]
    InvalidCharacter(char),
    /// `%` not followed by two hex digits.
    #[error("has a `%` not followed by two hexadecimal digits")]
    InvalidPercentEncoding,
    /// A `.` or `..` path segment, also as `%2e` or `..;`.
    #[error(
        "has a `.` or `..` path segment (also as `%2e` or `..;`), which browsers and servers resolve differently"
    )]
    DotSegment,
    /// A query parameter the AS adds to the redirect itself.
    #[error(
        "has a `{0}` query parameter, which slcs adds to the redirect itself (RFC 6749 §4.1.2, RFC 9207); remove it"
    )]
    ReservedQueryParameter(&'static str),
    /// A web origin with a path, query or trailing slash.
    #[error("is not an origin: write scheme://host[:port], without path, query or trailing slash")]
    NotAnOrigin,
}

impl RegisteredRedirectUri {
    /// Checks `value` against the registration rules (ATTACKS AZ-04).
    /// `development` admits loopback hosts, and http for them.
    pub fn parse(value: &str, development: bool) -> Result<Self, UriProblem> {
        parse_uri(value, development)?;
        Ok(Self(value.to_owned()))
    }

    /// The URI exactly as registered.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a presented `redirect_uri` is this one: byte-for-byte
    /// equality and nothing else (RFC 9700 §2.1).
    pub fn matches(&self, presented: &str) -> bool {
        self.0 == presented
    }

    /// The host, for display on consent pages (ATTACKS REG-05).
    pub fn host(&self) -> &str {
        parse_uri(&self.0, true).map(|p| p.host).unwrap_or("")
    }
}

impl TryFrom<String> for RegisteredRedirectUri {
    type Error = UriProblem;

    /// Re-checks a stored URI with the lenient (development) rules: a store
    /// written by a development server stays readable.
    fn try_from(value: String) -> Result<Self, Self::Error> {
        parse_uri(&value, true)?;
        Ok(Self(value))
    }
}

impl From<RegisteredRedirectUri> for String {
    fn from(value: RegisteredRedirectUri) -> Self {
        value.0
    }
}

impl fmt::Display for RegisteredRedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------
// The stored client
// ---------------------------------------------------------------------------

/// A registered client as slcs stores it. The secret is only ever its keyed
/// hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client id; never changes.
    pub id: ClientId,
    /// Display name (consent page).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Derived from the flags at registration; never changes.
    pub kind: ClientKind,
    /// Subject of the user who registered it; never taken from input.
    pub owner: String,
    /// Users who may also read and update it (the owner always may).
    #[serde(default)]
    pub maintainers: BTreeSet<String>,
    /// Exact redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<RegisteredRedirectUri>,
    /// Origins allowed to call the token endpoint from a browser (CORS).
    #[serde(default)]
    pub web_origins: Vec<String>,
    /// Keycloak `rootUrl`: informational link.
    #[serde(default)]
    pub root_url: Option<String>,
    /// Keycloak `baseUrl`: the application's home page, for display.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Grant types the token endpoint accepts from this client.
    pub grant_types: BTreeSet<GrantType>,
    /// Every scope the client may obtain (default + optional).
    #[serde(default)]
    pub scopes: BTreeSet<String>,
    /// Scopes granted when a request names none (RFC 6749 §3.3); a subset
    /// of `scopes`.
    #[serde(default)]
    pub default_scopes: BTreeSet<String>,
    /// Clients this client declares it will hand tokens to (delegation).
    #[serde(default)]
    pub delegatees: BTreeSet<ClientId>,
    /// Group/unit restriction.
    #[serde(default)]
    pub feature_authenticate: FeatureAuthenticate,
    /// Whether guest accounts are refused (seed: default true).
    #[serde(default = "default_true")]
    pub access_denied_to_guests: bool,
    /// Life-cycle state.
    pub status: ClientStatus,
    /// Keyed hash of the client secret, for secret-based methods.
    #[serde(default)]
    pub secret: Option<HashedSecret>,
    /// Public JWK Set for `private_key_jwt`.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Expected certificate subject DN for `tls_client_auth` (RFC 8705 §2.1.2).
    #[serde(default)]
    pub tls_client_auth_subject_dn: Option<String>,
    /// How it authenticates at the token endpoint.
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    /// Whether authorization requests must carry PKCE (S256). True for every
    /// client that may use the authorization code grant: slcs enforces PKCE
    /// for all of them (BRIEF §5), and the seed promises it for SPAs.
    #[serde(default = "default_true")]
    pub pkce_required: bool,
    /// Keycloak `attributes` (e.g. `contacts`), kept verbatim and never
    /// interpreted.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The longest certificate the certificate endpoint issues on this
    /// client's tokens (client policy, BRIEF §4); `None`: the profile's.
    #[serde(default)]
    pub max_certificate_lifetime_secs: Option<u64>,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Who registered it (the owner, or an administrator acting for them).
    pub created_by: String,
}

impl Client {
    /// Whether the client is public (no credentials; PKCE only).
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == TokenEndpointAuthMethod::None
    }

    /// Whether the token endpoint accepts `grant` from this client.
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// The registered redirect URI exactly equal to `presented`, if any
    /// (RFC 9700 §2.1).
    pub fn redirect_uri(&self, presented: &str) -> Option<&RegisteredRedirectUri> {
        self.redirect_uris.iter().find(|u| u.matches(presented))
    }
}

fn default_true() -> bool {
    true
}

// ---------------------------------------------------------------------------
// The JSON representation (seed 003)
// ---------------------------------------------------------------------------

/// The body of `POST /rest/v1/oidc/clients`, `PUT …/{clientId}` and the
/// answer to `GET …/{clientId}`: the seed's envelope around a Keycloak
/// `client` object.
///
/// Input policy: every field of the seed and of Keycloak's
/// `ClientRepresentation` is accepted, so JSON fetched from EBRAINS or
/// Keycloak can be sent as it is; fields slcs has no use for are ignored.
/// Any other field is refused (`deny_unknown_fields`), so a typo such as
/// `consentRequierd` is an error rather than a silently different client.
/// Server-owned fields (`owner`, `grantedAccess`,
/// `featureAuthenticateIntValue`, `guestPropertyIntValue`, and the
/// response-only members of `slcs`) are ignored on input, as the seed says
/// of the first four (ATTACKS REG-02); a caller-chosen `client.secret` is
/// refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientRepresentation {
    /// The Keycloak client object (required).
    pub client: KeycloakClient,
    /// User names or subjects who may maintain the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainers: Option<Vec<String>>,
    /// Restrict access to granted groups/units (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_authenticate: Option<bool>,
    /// Refuse guest accounts (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_denied_to_guests: Option<bool>,
    /// Response only: the owner's subject. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Value>,
    /// Response only: `{"users": [], "units": […], "groups": […]}`. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_access: Option<Value>,
    /// Response only: 1 when `featureAuthenticate`, else 0. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_authenticate_int_value: Option<Value>,
    /// Response only: 1 when `accessDeniedToGuests`, else 0. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_property_int_value: Option<Value>,
    /// slcs extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slcs: Option<SlcsExtensions>,
}

/// Keycloak's `ClientRepresentation`, as far as seed 003 and slcs use it.
/// Absent booleans are false (Keycloak itself defaults `standardFlowEnabled`
/// and `directAccessGrantsEnabled` to true; slcs makes every flow explicit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeycloakClient {
    /// The client id (required on POST; on PUT, absent or equal to the path's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Display name; defaults to the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Application root URL (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_url: Option<String>,
    /// Application home page (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Exact redirect URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uris: Option<Vec<String>>,
    /// CORS origins; `+` means "the origins of the redirect URIs".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_origins: Option<Vec<String>>,
    /// Must be false: bearer-only clients are not registered in slcs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_only: Option<bool>,
    /// Must be true for standard and device flows, false for service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_required: Option<bool>,
    /// Authorization code flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_flow_enabled: Option<bool>,
    /// Must be false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicit_flow_enabled: Option<bool>,
    /// Must be false (resource owner password grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_access_grants_enabled: Option<bool>,
    /// Client credentials flow (service account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts_enabled: Option<bool>,
    /// Public client (no credentials, PKCE enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_client: Option<bool>,
    /// Must be `openid-connect` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Free-form string attributes, kept verbatim, never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    /// Scopes granted when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_client_scopes: Option<Vec<String>>,
    /// Further scopes the client may request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional_client_scopes: Option<Vec<String>>,
    /// `client-secret`, `client-jwt` or `client-x509`; must agree with
    /// `slcs.tokenEndpointAuthMethod` when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authenticator_type: Option<String>,
    /// Refused when non-empty: slcs generates secrets (ATTACKS REG-02).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Response: the client id. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Response: whether the client is active. Ignored on input (status is
    /// changed by administrators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_auth_required: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_display_in_console: Option<Value>,
    /// Keycloak field slcs ignores (no registration access tokens here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_roles: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_services_enabled: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_grants_only: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontchannel_logout: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_flow_binding_overrides: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_scope_allowed: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_re_registration_timeout: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_nodes: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_mappers: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_template: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_template_config: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_template_scope: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_template_mappers: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_settings: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Value>,
    /// Keycloak field slcs ignores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Value>,
}

/// slcs extensions, under the envelope's `slcs` member (next to the seed's
/// own extensions `maintainers`, `featureAuthenticate`, …) so that they can
/// never collide with a Keycloak field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlcsExtensions {
    /// Client ids this client will hand tokens to (delegation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegatees: Option<Vec<String>>,
    /// RFC 7591 token endpoint authentication method; default
    /// `client_secret_basic` for confidential clients, `none` for public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<TokenEndpointAuthMethod>,
    /// Public JWK Set (RFC 7517 §5) for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    /// Certificate subject DN for `tls_client_auth` (RFC 8705 §2.1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// May use token exchange (RFC 8693) as a delegatee; confidential only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange_enabled: Option<bool>,
    /// May use the device authorization grant (RFC 8628): kind `native`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_flow_enabled: Option<bool>,
    /// Longest certificate (seconds) issued on this client's tokens; the
    /// profile maximum when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_certificate_lifetime_secs: Option<u64>,
    /// Response only: the client's kind. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Value>,
    /// Response only: `pending`, `active` or `suspended`. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    /// Response only: the grant types. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Value>,
    /// Response only: whether PKCE is required. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkce_required: Option<Value>,
    /// Response only. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    /// Response only. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Value>,
    /// Response only. Ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Value>,
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

/// What the handler knows about the request besides its body.
#[derive(Clone, Debug)]
pub struct RegistrationContext<'a> {
    /// Subject of the authenticated caller; becomes the owner of a new client.
    pub caller: String,
    /// Whether the caller is an slcs administrator.
    pub caller_is_admin: bool,
    /// Development profile: loopback redirect URIs (and http for them) allowed.
    pub development: bool,
    /// The current time.
    pub now: OffsetDateTime,
    /// The client being replaced (PUT), or `None` (POST).
    pub existing: Option<&'a Client>,
    /// Scopes a client may register (from configuration).
    pub allowed_scopes: &'a BTreeSet<String>,
    /// Set by the handler when the requested client id is the name or
    /// subject of a known user (ATTACKS TX-15); the store lookup is its job.
    pub client_id_names_a_user: bool,
}

/// A representation that passed every rule: the only input
/// [`create_client`] and [`apply_update`] accept. Built only by
/// [`validate_registration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedRegistration {
    id: ClientId,
    name: String,
    description: String,
    kind: ClientKind,
    redirect_uris: Vec<RegisteredRedirectUri>,
    web_origins: Vec<String>,
    root_url: Option<String>,
    base_url: Option<String>,
    grant_types: BTreeSet<GrantType>,
    scopes: BTreeSet<String>,
    default_scopes: BTreeSet<String>,
    delegatees: BTreeSet<ClientId>,
    maintainers: BTreeSet<String>,
    feature_authenticate: bool,
    access_denied_to_guests: bool,
    token_endpoint_auth_method: TokenEndpointAuthMethod,
    jwks: Option<Value>,
    tls_client_auth_subject_dn: Option<String>,
    pkce_required: bool,
    attributes: BTreeMap<String, String>,
    max_certificate_lifetime_secs: Option<u64>,
}

impl ValidatedRegistration {
    /// The client id.
    pub fn id(&self) -> &ClientId {
        &self.id
    }

    /// The kind recognised from the flags.
    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// The token endpoint authentication method.
    pub fn token_endpoint_auth_method(&self) -> TokenEndpointAuthMethod {
        self.token_endpoint_auth_method
    }

    /// The grant types the client will be allowed.
    pub fn grant_types(&self) -> &BTreeSet<GrantType> {
        &self.grant_types
    }
}

/// Why a registration (POST or PUT) was refused. One variant per rule; the
/// message names the JSON field. [`RegistrationError::oauth_error_code`]
/// gives the RFC 7591 §3.2.2 code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// PUT by someone who is not owner, maintainer or admin (ATTACKS REG-01).
    #[error("only the client's owner, a maintainer or an administrator may change it")]
    NotPermitted,
    /// A maintainer (not the owner) tried to change the maintainer list.
    #[error("maintainers: only the owner or an administrator may change the list of maintainers")]
    MaintainersChangedByNonOwner,
    /// POST without `client.clientId`.
    #[error("client.clientId is required")]
    ClientIdMissing,
    /// `client.clientId` breaks the id rules.
    #[error("client.clientId: {0}")]
    ClientId(#[source] ClientIdError),
    /// The id is a known user's name or subject (ATTACKS TX-15).
    #[error(
        "client.clientId: this id is the name of a user account; a client must not be confusable with a person (RFC 9700 §4.15)"
    )]
    ClientIdNamesUser,
    /// PUT whose body names a different client than the path.
    #[error(
        "client.clientId: `{requested}` does not match the client being updated (`{existing}`); a client id never changes"
    )]
    ClientIdChanged {
        /// The client being updated.
        existing: String,
        /// What the body says.
        requested: String,
    },
    /// A caller-chosen `client.secret` (ATTACKS REG-02).
    #[error(
        "client.secret: client secrets are generated by slcs and shown once; remove this field (ask for a rotation to get a new secret)"
    )]
    SecretChosenByCaller,
    /// `client.protocol` other than `openid-connect`.
    #[error("client.protocol: `{0}` is not supported; slcs speaks only `openid-connect`")]
    ProtocolUnsupported(String),
    /// `client.bearerOnly = true`.
    #[error(
        "client.bearerOnly: bearer-only clients are not registered in slcs; a resource server that introspects tokens registers as a server-to-server client (serviceAccountsEnabled=true)"
    )]
    BearerOnlyUnsupported,
    /// `client.implicitFlowEnabled = true` (ATTACKS REG-06).
    #[error(
        "client.implicitFlowEnabled: the implicit flow is not allowed (seed 003; RFC 9700 §2.1.2: tokens in the front channel leak); use the standard flow, which slcs runs with PKCE"
    )]
    ImplicitFlowRefused,
    /// `client.directAccessGrantsEnabled = true` (ATTACKS REG-06).
    #[error(
        "client.directAccessGrantsEnabled: the resource owner password grant is not allowed (RFC 9700 §2.4: it MUST NOT be used); use the standard flow, the device flow or client credentials"
    )]
    PasswordGrantRefused,
    /// Neither a user flow nor a service account.
    #[error(
        "no flow is enabled: a server-to-server client sets client.serviceAccountsEnabled=true (client credentials); an application users sign in to sets client.standardFlowEnabled=true with consentRequired=true and https redirectUris"
    )]
    NoFlowEnabled,
    /// Standard flow without consent (seed 003, ATTACKS REG-06, REG-07).
    #[error(
        "client.consentRequired: the standard flow requires consentRequired=true (seed 003: standard flow without consent is not allowed)"
    )]
    StandardFlowWithoutConsent,
    /// Device flow without consent.
    #[error(
        "client.consentRequired: the device flow requires consentRequired=true; users always approve what a device may do"
    )]
    DeviceFlowWithoutConsent,
    /// Standard flow without redirect URIs.
    #[error(
        "client.redirectUris: the standard flow needs at least one https redirect URI (seed 003)"
    )]
    StandardFlowWithoutRedirectUris,
    /// Redirect URIs on a client without the standard flow.
    #[error(
        "client.redirectUris: redirect URIs are only for the standard flow (standardFlowEnabled=true); remove them"
    )]
    RedirectUrisWithoutStandardFlow,
    /// Service account with the standard flow.
    #[error(
        "client.standardFlowEnabled: a server-to-server client (serviceAccountsEnabled=true) must have standardFlowEnabled=false, so no user can sign in with it (seed 003)"
    )]
    ServiceAccountWithStandardFlow,
    /// Service account with consent.
    #[error(
        "client.consentRequired: a server-to-server client (serviceAccountsEnabled=true) must have consentRequired=false (seed 003)"
    )]
    ServiceAccountWithConsent,
    /// Service account with redirect URIs.
    #[error(
        "client.redirectUris: a server-to-server client (serviceAccountsEnabled=true) must have no redirect URIs (seed 003)"
    )]
    ServiceAccountWithRedirectUris,
    /// Public service account.
    #[error(
        "client.publicClient: a server-to-server client must authenticate, so publicClient must be false"
    )]
    ServiceAccountPublic,
    /// Service account with the device flow.
    #[error(
        "slcs.deviceFlowEnabled: a server-to-server client acts only as itself and cannot use the device flow"
    )]
    ServiceAccountWithDeviceFlow,
    /// Token exchange for a public client.
    #[error(
        "slcs.tokenExchangeEnabled: token exchange needs a client that authenticates as itself; public clients cannot use it"
    )]
    TokenExchangeForPublicClient,
    /// PUT that would change the kind.
    #[error(
        "the flags describe a {to} client, but this client is a {from} client; a client's kind never changes (register a new client instead)"
    )]
    KindChanged {
        /// Current kind.
        from: ClientKind,
        /// Kind the new representation describes.
        to: ClientKind,
    },
    /// A redirect URI breaks a rule (ATTACKS AZ-04).
    #[error("client.redirectUris[{index}] `{uri}` {problem}")]
    RedirectUri {
        /// Position in the list.
        index: usize,
        /// The URI (shortened, control characters replaced).
        uri: String,
        /// What is wrong.
        problem: UriProblem,
    },
    /// More than [`MAX_REDIRECT_URIS`].
    #[error("client.redirectUris: {0} URIs given; at most {MAX_REDIRECT_URIS} are accepted")]
    TooManyRedirectUris(usize),
    /// The same URI twice.
    #[error("client.redirectUris: `{0}` is listed twice")]
    DuplicateRedirectUri(String),
    /// A web origin breaks a rule.
    #[error("client.webOrigins[{index}] `{origin}` {problem}")]
    WebOrigin {
        /// Position in the list.
        index: usize,
        /// The origin (shortened).
        origin: String,
        /// What is wrong.
        problem: UriProblem,
    },
    /// More than [`MAX_WEB_ORIGINS`].
    #[error("client.webOrigins: {0} origins given; at most {MAX_WEB_ORIGINS} are accepted")]
    TooManyWebOrigins(usize),
    /// `rootUrl` or `baseUrl` breaks a rule.
    #[error("client.{field} `{url}` {problem}")]
    LinkUrl {
        /// `rootUrl` or `baseUrl`.
        field: &'static str,
        /// The URL (shortened).
        url: String,
        /// What is wrong.
        problem: UriProblem,
    },
    /// Name or description too long.
    #[error("{field}: at most {max} characters")]
    TextTooLong {
        /// `client.name` or `client.description`.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// Control, bidirectional-override or invisible characters (they let a
    /// name imitate another on the consent page, ATTACKS REG-05).
    #[error("{field}: control, bidirectional-override and invisible characters are not allowed")]
    TextControlCharacter {
        /// `client.name` or `client.description`.
        field: &'static str,
    },
    /// A scope that is not an RFC 6749 §3.3 scope token.
    #[error(
        "client scopes: `{0}` is not a valid scope token (RFC 6749 §3.3: 1 to {MAX_SCOPE_CHARS} printable ASCII characters, no space, `\"` or `\\`)"
    )]
    ScopeSyntax(String),
    /// A scope no client may register (ATTACKS REG-06).
    #[error("client scopes: `{0}` can never be registered by a client")]
    ScopeForbidden(String),
    /// A scope outside the configured allowed set.
    #[error("client scopes: `{0}` is not offered by this server")]
    ScopeNotAllowed(String),
    /// More than [`MAX_SCOPES`].
    #[error("client scopes: {0} scopes given; at most {MAX_SCOPES} are accepted")]
    TooManyScopes(usize),
    /// A delegatee that is not a valid client id.
    #[error("slcs.delegatees: `{value}`: {source}")]
    DelegateeInvalid {
        /// The entry (shortened).
        value: String,
        /// Why.
        source: ClientIdError,
    },
    /// The client lists itself as delegatee.
    #[error("slcs.delegatees: a client cannot be its own delegatee")]
    DelegateeIsSelf,
    /// More than [`MAX_DELEGATEES`].
    #[error("slcs.delegatees: {0} given; at most {MAX_DELEGATEES} are accepted")]
    TooManyDelegatees(usize),
    /// A maintainer entry that is not a plausible user name.
    #[error(
        "maintainers: `{0}` is not a user name (1 to {MAX_USER_CHARS} characters, no whitespace or control characters)"
    )]
    MaintainerInvalid(String),
    /// More than [`MAX_MAINTAINERS`].
    #[error("maintainers: {0} given; at most {MAX_MAINTAINERS} are accepted")]
    TooManyMaintainers(usize),
    /// A public client with a credential-related field.
    #[error("{0}: public clients (publicClient=true) have no credentials; remove this field")]
    PublicClientCredentials(&'static str),
    /// A confidential client with method `none`.
    #[error(
        "slcs.tokenEndpointAuthMethod: `none` is only for public clients (publicClient=true); a confidential client authenticates"
    )]
    ConfidentialClientWithoutAuthentication,
    /// `clientAuthenticatorType` slcs does not offer.
    #[error(
        "client.clientAuthenticatorType: `{0}` is not supported; use client-secret, client-jwt or client-x509"
    )]
    AuthenticatorTypeUnsupported(String),
    /// `clientAuthenticatorType` and `slcs.tokenEndpointAuthMethod` disagree.
    #[error(
        "client.clientAuthenticatorType `{authenticator}` contradicts slcs.tokenEndpointAuthMethod `{method}`"
    )]
    AuthenticatorTypeConflict {
        /// The Keycloak value.
        authenticator: String,
        /// The slcs value.
        method: TokenEndpointAuthMethod,
    },
    /// `private_key_jwt` without a JWK Set.
    #[error("slcs.jwks: private_key_jwt needs the client's public JWK Set")]
    JwksRequired,
    /// A JWK Set slcs will not use.
    #[error("slcs.jwks: {0}")]
    JwksInvalid(&'static str),
    /// A JWK Set with another method.
    #[error("slcs.jwks: a JWK Set is only used with tokenEndpointAuthMethod=private_key_jwt")]
    JwksWithoutPrivateKeyJwt,
    /// `tls_client_auth` without a subject DN.
    #[error(
        "slcs.tlsClientAuthSubjectDn: tls_client_auth needs the expected certificate subject DN (RFC 8705 §2.1.2)"
    )]
    TlsSubjectDnRequired,
    /// A subject DN slcs will not use.
    #[error("slcs.tlsClientAuthSubjectDn: {0}")]
    TlsSubjectDnInvalid(&'static str),
    /// A subject DN with another method.
    #[error(
        "slcs.tlsClientAuthSubjectDn: a subject DN is only used with tokenEndpointAuthMethod=tls_client_auth"
    )]
    TlsSubjectDnWithoutTlsClientAuth,
    /// More than [`MAX_ATTRIBUTES`].
    #[error("client.attributes: {0} entries given; at most {MAX_ATTRIBUTES} are kept")]
    TooManyAttributes(usize),
    /// An attribute with a bad key or value.
    #[error("client.attributes[`{key}`]: {reason}")]
    AttributeInvalid {
        /// The key (shortened).
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A certificate lifetime outside what slcs can issue.
    #[error(
        "slcs.maxCertificateLifetimeSecs: {0} is out of range; give 60 to {MAX_CERTIFICATE_LIFETIME_SECS} seconds"
    )]
    CertificateLifetimeOutOfRange(u64),
}

impl RegistrationError {
    /// The RFC 7591 §3.2.2 error code: `invalid_redirect_uri` for anything
    /// about redirect URIs, `invalid_client_metadata` otherwise.
    pub fn oauth_error_code(&self) -> &'static str {
        match self {
            Self::RedirectUri { .. }
            | Self::TooManyRedirectUris(_)
            | Self::DuplicateRedirectUri(_)
            | Self::StandardFlowWithoutRedirectUris
            | Self::RedirectUrisWithoutStandardFlow
            | Self::ServiceAccountWithRedirectUris => "invalid_redirect_uri",
            _ => "invalid_client_metadata",
        }
    }

    /// Whether the refusal is about who is asking rather than what was
    /// sent: the API answers 403 for these, 400 for the rest.
    pub fn is_permission_denied(&self) -> bool {
        matches!(
            self,
            Self::NotPermitted | Self::MaintainersChangedByNonOwner
        )
    }
}

/// Checks a POST or PUT body against every registration rule. Nothing is
/// created or changed here; on `Ok`, pass the result to [`create_client`]
/// (`ctx.existing == None`) or [`apply_update`].
///
/// The kind is recognised from the flags (seed 003):
/// - `serviceAccountsEnabled=true` → `service` (client credentials; needs
///   `standardFlowEnabled=false`, `consentRequired=false`, no redirect URIs,
///   not public);
/// - `slcs.deviceFlowEnabled=true` → `native` (device grant, optionally
///   also the standard flow; public or confidential);
/// - `standardFlowEnabled=true` and `publicClient=true` → `spa`;
/// - `standardFlowEnabled=true` → `web`.
pub fn validate_registration(
    rep: &ClientRepresentation,
    ctx: &RegistrationContext<'_>,
) -> Result<ValidatedRegistration, RegistrationError> {
    let c = &rep.client;
    if let Some(existing) = ctx.existing
        && !may_manage(existing, &ctx.caller, ctx.caller_is_admin)
    {
        return Err(RegistrationError::NotPermitted);
    }
    let id = check_client_id(c.client_id.as_deref(), ctx)?;

    // ATTACKS REG-02: the server chooses secrets. An empty or null value (a
    // Keycloak export with the secret blanked) is harmless.
    if c.secret.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(RegistrationError::SecretChosenByCaller);
    }
    if let Some(protocol) = c.protocol.as_deref()
        && protocol != "openid-connect"
    {
        return Err(RegistrationError::ProtocolUnsupported(echo(protocol)));
    }
    if c.bearer_only == Some(true) {
        return Err(RegistrationError::BearerOnlyUnsupported);
    }
    // Seed 003 and RFC 9700 §2.1.2 / §2.4: no implicit, no password grant.
    if c.implicit_flow_enabled == Some(true) {
        return Err(RegistrationError::ImplicitFlowRefused);
    }
    if c.direct_access_grants_enabled == Some(true) {
        return Err(RegistrationError::PasswordGrantRefused);
    }

    let name = match c.name.as_deref() {
        Some(n) if !n.trim().is_empty() => {
            check_text("client.name", n, MAX_NAME_CHARS)?;
            n.to_owned()
        }
        _ => id.as_str().to_owned(),
    };
    let description = c.description.clone().unwrap_or_default();
    check_text("client.description", &description, MAX_DESCRIPTION_CHARS)?;
    let root_url = check_link("rootUrl", c.root_url.as_deref(), ctx.development)?;
    let base_url = check_link("baseUrl", c.base_url.as_deref(), ctx.development)?;

    let redirect_uris = check_redirect_uris(
        c.redirect_uris.as_deref().unwrap_or_default(),
        ctx.development,
    )?;

    let ext = rep.slcs.clone().unwrap_or_default();
    let flow = Flags {
        standard: c.standard_flow_enabled == Some(true),
        consent: c.consent_required == Some(true),
        service: c.service_accounts_enabled == Some(true),
        public: c.public_client == Some(true),
        device: ext.device_flow_enabled == Some(true),
        exchange: ext.token_exchange_enabled == Some(true),
    };
    let (kind, grant_types) = recognise_kind(&flow, redirect_uris.is_empty())?;
    if let Some(existing) = ctx.existing
        && existing.kind != kind
    {
        return Err(RegistrationError::KindChanged {
            from: existing.kind,
            to: kind,
        });
    }

    let web_origins = check_web_origins(
        c.web_origins.as_deref().unwrap_or_default(),
        &redirect_uris,
        ctx.development,
    )?;
    let auth = check_authentication(c, &ext, flow.public)?;
    let (scopes, default_scopes) = check_scopes(
        c.default_client_scopes.as_deref().unwrap_or_default(),
        c.optional_client_scopes.as_deref().unwrap_or_default(),
        ctx.allowed_scopes,
    )?;
    let delegatees = check_delegatees(ext.delegatees.as_deref().unwrap_or_default(), &id)?;
    let maintainers = check_maintainers(rep.maintainers.as_deref().unwrap_or_default(), ctx)?;
    let attributes = check_attributes(c.attributes.as_ref())?;
    let max_certificate_lifetime_secs = match ext.max_certificate_lifetime_secs {
        Some(secs) if !(60..=MAX_CERTIFICATE_LIFETIME_SECS).contains(&secs) => {
            return Err(RegistrationError::CertificateLifetimeOutOfRange(secs));
        }
        other => other,
    };

    Ok(ValidatedRegistration {
        id,
        name,
        description,
        kind,
        pkce_required: grant_types.contains(&GrantType::AuthorizationCode),
        redirect_uris,
        web_origins,
        root_url,
        base_url,
        grant_types,
        scopes,
        default_scopes,
        delegatees,
        maintainers,
        // Seed 003: featureAuthenticate defaults to false,
        // accessDeniedToGuests to true.
        feature_authenticate: rep.feature_authenticate.unwrap_or(false),
        access_denied_to_guests: rep.access_denied_to_guests.unwrap_or(true),
        token_endpoint_auth_method: auth.method,
        jwks: auth.jwks,
        tls_client_auth_subject_dn: auth.tls_subject_dn,
        attributes,
        max_certificate_lifetime_secs,
    })
}

/// A client built or changed from a validated registration, with the new
/// secret in clear when one was generated (show it once, then drop it).
#[derive(Debug)]
pub struct ClientChange {
    /// The client to store.
    pub client: Client,
    /// A newly generated secret, or `None` if the secret did not change.
    pub new_secret: Option<ClientSecret>,
}

/// Builds a new client (POST). The caller becomes owner and creator; the
/// client starts `pending`, or `active` when an administrator registers it
/// (the EGI "Registration Pending" review, seed `000_*`). A secret is
/// generated when the authentication method uses one.
pub fn create_client(
    validated: ValidatedRegistration,
    ctx: &RegistrationContext<'_>,
    pepper: &SecretPepper,
) -> Result<ClientChange, SecretError> {
    let new_secret = if validated.token_endpoint_auth_method.uses_secret() {
        Some(ClientSecret::generate()?)
    } else {
        None
    };
    let status = if ctx.caller_is_admin {
        ClientStatus::Active
    } else {
        ClientStatus::Pending
    };
    let client = build_client(
        validated,
        Kept {
            owner: ctx.caller.clone(),
            status,
            secret: new_secret.as_ref().map(|s| s.hash(pepper)),
            granted: FeatureAuthenticate::default(),
            created_at: ctx.now,
            created_by: ctx.caller.clone(),
        },
        ctx.now,
    );
    Ok(ClientChange { client, new_secret })
}

/// Replaces `existing` with `validated` (PUT: the seed's "PUT replaces the
/// whole representation"; a field left out is reset to its default).
///
/// Kept from `existing`: id, kind (a change is refused earlier), owner,
/// status, created_at, created_by, and the secret — unless `rotate_secret`
/// is asked, or the new method needs a secret the client does not have yet.
/// A method without a secret drops the stored hash. `updated_at` becomes
/// `ctx.now`.
///
/// `featureAuthenticate` (ATTACKS REG-10): turning it from true to false
/// clears every group and unit grant, as the seed warns ("all the
/// Group/Unit specific accesses that were configured will be lost"); turning
/// it on again starts from no grants, so nobody regains access silently.
/// Grants are kept while it stays true.
pub fn apply_update(
    existing: &Client,
    validated: ValidatedRegistration,
    ctx: &RegistrationContext<'_>,
    pepper: &SecretPepper,
    rotate_secret: bool,
) -> Result<ClientChange, SecretError> {
    let (secret, new_secret) = if validated.token_endpoint_auth_method.uses_secret() {
        match (&existing.secret, rotate_secret) {
            (Some(kept), false) => (Some(kept.clone()), None),
            _ => {
                let fresh = ClientSecret::generate()?;
                (Some(fresh.hash(pepper)), Some(fresh))
            }
        }
    } else {
        (None, None)
    };
    let granted = if validated.feature_authenticate && existing.feature_authenticate.enabled {
        existing.feature_authenticate.clone()
    } else {
        FeatureAuthenticate::default()
    };
    let client = build_client(
        validated,
        Kept {
            owner: existing.owner.clone(),
            status: existing.status,
            secret,
            granted,
            created_at: existing.created_at,
            created_by: existing.created_by.clone(),
        },
        ctx.now,
    );
    Ok(ClientChange { client, new_secret })
}

/// Why a secret could not be rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotateSecretError {
    /// The client authenticates without a secret.
    #[error("client {id} authenticates with {method}, which uses no secret")]
    NoSecretMethod {
        /// The client.
        id: ClientId,
        /// Its method.
        method: TokenEndpointAuthMethod,
    },
    /// The random number generator failed; the old secret stays valid.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Replaces the client's secret with a fresh one and returns it in clear
/// (shown once). The old secret stops working as soon as the client is
/// stored (ATTACKS REG-11).
pub fn rotate_secret(
    client: &mut Client,
    pepper: &SecretPepper,
    now: OffsetDateTime,
) -> Result<ClientSecret, RotateSecretError> {
    if !client.token_endpoint_auth_method.uses_secret() {
        return Err(RotateSecretError::NoSecretMethod {
            id: client.id.clone(),
            method: client.token_endpoint_auth_method,
        });
    }
    let fresh = ClientSecret::generate()?;
    client.secret = Some(fresh.hash(pepper));
    client.updated_at = now;
    Ok(fresh)
}

/// Whether `caller` may read or change `client`: its owner, one of its
/// maintainers, or an administrator (seed 003; ATTACKS REG-01).
pub fn may_manage(client: &Client, caller: &str, caller_is_admin: bool) -> bool {
    caller_is_admin
        || (!caller.is_empty() && (client.owner == caller || client.maintainers.contains(caller)))
}

/// Whether an update widened what the client can do or where it sends
/// users: a new redirect URI or web origin, a new scope, grant type or
/// delegatee, another authentication method or key, or guests let in.
/// The handler audits such a change and may send an active client back
/// to review ([`change_status`] to `Pending`); narrowing never needs review.
pub fn needs_review(before: &Client, after: &Client) -> bool {
    let added =
        |a: &[RegisteredRedirectUri], b: &[RegisteredRedirectUri]| b.iter().any(|u| !a.contains(u));
    added(&before.redirect_uris, &after.redirect_uris)
        || after
            .web_origins
            .iter()
            .any(|o| !before.web_origins.contains(o))
        || !after.scopes.is_subset(&before.scopes)
        || !after.grant_types.is_subset(&before.grant_types)
        || !after.delegatees.is_subset(&before.delegatees)
        || after.token_endpoint_auth_method != before.token_endpoint_auth_method
        || after.jwks != before.jwks
        || after.tls_client_auth_subject_dn != before.tls_client_auth_subject_dn
        || (before.access_denied_to_guests && !after.access_denied_to_guests)
}

/// Why a status change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusChangeError {
    /// Not one of the transitions [`ClientStatus::may_become`] allows.
    #[error("a {from} client cannot become {to}")]
    NotAllowed {
        /// Current status.
        from: ClientStatus,
        /// Requested status.
        to: ClientStatus,
    },
}

/// Moves a client to `to` (administrators only: the handler checks).
/// Returns whether anything changed; asking for the current status is a
/// no-op, so `approve` twice is harmless.
pub fn change_status(
    client: &mut Client,
    to: ClientStatus,
    now: OffsetDateTime,
) -> Result<bool, StatusChangeError> {
    if client.status == to {
        return Ok(false);
    }
    if !client.status.may_become(to) {
        return Err(StatusChangeError::NotAllowed {
            from: client.status,
            to,
        });
    }
    client.status = to;
    client.updated_at = now;
    Ok(true)
}

// ---------------------------------------------------------------------------
// Group and unit grants (featureAuthenticate)
// ---------------------------------------------------------------------------

/// Why a group or unit grant was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessGrantError {
    /// Grants are only kept while `featureAuthenticate` is on; granting
    /// while it is off would arm access that nobody sees (ATTACKS REG-10).
    #[error(
        "featureAuthenticate is false for this client: set it to true first, then grant groups and units"
    )]
    FeatureAuthenticateDisabled,
    /// Not a group name.
    #[error(
        "group name: {0} (1 to {MAX_GROUP_CHARS} characters of letters, digits, `.`, `_` and `-`, starting with a letter or digit)"
    )]
    InvalidGroupName(&'static str),
    /// Not a unit path.
    #[error(
        "unit path: {0} (segments of letters, digits, `.`, `_` and `-` separated by `:`, e.g. all:projects:hbp)"
    )]
    InvalidUnitPath(&'static str),
    /// More than [`MAX_ACCESS_GRANTS`] groups or units.
    #[error("at most {MAX_ACCESS_GRANTS} groups and {MAX_ACCESS_GRANTS} units may be granted")]
    TooManyGrants,
}

/// Grants `group` access (`PUT …/{clientId}/groups/{group}`). Returns
/// whether it was new.
pub fn grant_group(
    client: &mut Client,
    group: &str,
    now: OffsetDateTime,
) -> Result<bool, AccessGrantError> {
    check_group_name(group)?;
    grant(client, |fa| &mut fa.groups, group, now)
}

/// Revokes `group` (`DELETE …/groups/{group}`). Returns whether it was
/// granted.
pub fn revoke_group(
    client: &mut Client,
    group: &str,
    now: OffsetDateTime,
) -> Result<bool, AccessGrantError> {
    check_group_name(group)?;
    Ok(revoke(client, |fa| &mut fa.groups, group, now))
}

/// Grants the unit at `path` access (`PUT …/{clientId}/units/{unitPath}`,
/// e.g. `all:projects:hbp`). Returns whether it was new.
pub fn grant_unit(
    client: &mut Client,
    path: &str,
    now: OffsetDateTime,
) -> Result<bool, AccessGrantError> {
    check_unit_path(path)?;
    grant(client, |fa| &mut fa.units, path, now)
}

/// Revokes the unit at `path` (`DELETE …/units/{unitPath}`). Returns
/// whether it was granted.
pub fn revoke_unit(
    client: &mut Client,
    path: &str,
    now: OffsetDateTime,
) -> Result<bool, AccessGrantError> {
    check_unit_path(path)?;
    Ok(revoke(client, |fa| &mut fa.units, path, now))
}

/// Adds `name` to the grant set `set` picks; only while
/// `featureAuthenticate` is on, and within [`MAX_ACCESS_GRANTS`].
fn grant(
    client: &mut Client,
    set: impl FnOnce(&mut FeatureAuthenticate) -> &mut BTreeSet<String>,
    name: &str,
    now: OffsetDateTime,
) -> Result<bool, AccessGrantError> {
    if !client.feature_authenticate.enabled {
        return Err(AccessGrantError::FeatureAuthenticateDisabled);
    }
    let grants = set(&mut client.feature_authenticate);
    if grants.contains(name) {
        return Ok(false);
    }
    if grants.len() >= MAX_ACCESS_GRANTS {
        return Err(AccessGrantError::TooManyGrants);
    }
    grants.insert(name.to_owned());
    client.updated_at = now;
    Ok(true)
}

/// Removes `name` from the grant set `set` picks; whether it was there.
fn revoke(
    client: &mut Client,
    set: impl FnOnce(&mut FeatureAuthenticate) -> &mut BTreeSet<String>,
    name: &str,
    now: OffsetDateTime,
) -> bool {
    let removed = set(&mut client.feature_authenticate).remove(name);
    if removed {
        client.updated_at = now;
    }
    removed
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// The `GET …/{clientId}` answer, in the seed's shape. Never contains the
/// secret or its hash (ATTACKS REG-11); an edited copy can be sent back with
/// PUT as the seed recommends (the response-only fields are ignored then).
pub fn to_representation(client: &Client) -> ClientRepresentation {
    let strings = |set: &BTreeSet<String>| -> Vec<String> { set.iter().cloned().collect() };
    let string_values = |set: &BTreeSet<String>| -> Value {
        Value::Array(set.iter().cloned().map(Value::String).collect())
    };
    let optional_scopes: BTreeSet<String> = client
        .scopes
        .difference(&client.default_scopes)
        .cloned()
        .collect();
    let mut granted = serde_json::Map::new();
    granted.insert("users".into(), Value::Array(Vec::new()));
    granted.insert(
        "units".into(),
        string_values(&client.feature_authenticate.units),
    );
    granted.insert(
        "groups".into(),
        string_values(&client.feature_authenticate.groups),
    );
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
            .map(Value::String)
    };

    ClientRepresentation {
        client: KeycloakClient {
            id: Some(Value::String(client.id.to_string())),
            client_id: Some(client.id.to_string()),
            name: Some(client.name.clone()),
            description: Some(client.description.clone()),
            root_url: client.root_url.clone(),
            base_url: client.base_url.clone(),
            enabled: Some(Value::Bool(client.status == ClientStatus::Active)),
            client_authenticator_type: client
                .token_endpoint_auth_method
                .keycloak_authenticator()
                .map(str::to_owned),
            redirect_uris: Some(client.redirect_uris.iter().map(|u| u.0.clone()).collect()),
            web_origins: Some(client.web_origins.clone()),
            bearer_only: Some(false),
            consent_required: Some(client.kind != ClientKind::Service),
            standard_flow_enabled: Some(client.allows_grant(GrantType::AuthorizationCode)),
            implicit_flow_enabled: Some(false),
            direct_access_grants_enabled: Some(false),
            service_accounts_enabled: Some(client.allows_grant(GrantType::ClientCredentials)),
            public_client: Some(client.is_public()),
            protocol: Some("openid-connect".to_owned()),
            attributes: Some(client.attributes.clone()),
            default_client_scopes: Some(strings(&client.default_scopes)),
            optional_client_scopes: Some(strings(&optional_scopes)),
            ..KeycloakClient::default()
        },
        maintainers: Some(strings(&client.maintainers)),
        feature_authenticate: Some(client.feature_authenticate.enabled),
        access_denied_to_guests: Some(client.access_denied_to_guests),
        owner: Some(Value::String(client.owner.clone())),
        granted_access: Some(Value::Object(granted)),
        feature_authenticate_int_value: Some(Value::from(u8::from(
            client.feature_authenticate.enabled,
        ))),
        guest_property_int_value: Some(Value::from(u8::from(client.access_denied_to_guests))),
        slcs: Some(SlcsExtensions {
            delegatees: Some(client.delegatees.iter().map(ToString::to_string).collect()),
            token_endpoint_auth_method: Some(client.token_endpoint_auth_method),
            jwks: client.jwks.clone(),
            tls_client_auth_subject_dn: client.tls_client_auth_subject_dn.clone(),
            token_exchange_enabled: Some(client.allows_grant(GrantType::TokenExchange)),
            device_flow_enabled: Some(client.allows_grant(GrantType::DeviceCode)),
            max_certificate_lifetime_secs: client.max_certificate_lifetime_secs,
            kind: Some(Value::String(client.kind.name().to_owned())),
            status: Some(Value::String(client.status.name().to_owned())),
            grant_types: Some(Value::Array(
                client
                    .grant_types
                    .iter()
                    .map(|g| Value::String(g.name().to_owned()))
                    .collect(),
            )),
            pkce_required: Some(Value::Bool(client.pkce_required)),
            created_at: rfc3339(client.created_at),
            updated_at: rfc3339(client.updated_at),
            created_by: Some(Value::String(client.created_by.clone())),
        }),
    }
}

// ---------------------------------------------------------------------------
// Private: building
// ---------------------------------------------------------------------------

/// Server-owned state carried into a built client.
struct Kept {
    owner: String,
    status: ClientStatus,
    secret: Option<HashedSecret>,
    granted: FeatureAuthenticate,
    created_at: OffsetDateTime,
    created_by: String,
}

fn build_client(v: ValidatedRegistration, kept: Kept, now: OffsetDateTime) -> Client {
    Client {
        id: v.id,
        name: v.name,
        description: v.description,
        kind: v.kind,
        owner: kept.owner,
        maintainers: v.maintainers,
        redirect_uris: v.redirect_uris,
        web_origins: v.web_origins,
        root_url: v.root_url,
        base_url: v.base_url,
        grant_types: v.grant_types,
        scopes: v.scopes,
        default_scopes: v.default_scopes,
        delegatees: v.delegatees,
        feature_authenticate: FeatureAuthenticate {
            enabled: v.feature_authenticate,
            groups: kept.granted.groups,
            units: kept.granted.units,
        },
        access_denied_to_guests: v.access_denied_to_guests,
        status: kept.status,
        secret: kept.secret,
        jwks: v.jwks,
        tls_client_auth_subject_dn: v.tls_client_auth_subject_dn,
        token_endpoint_auth_method: v.token_endpoint_auth_method,
        pkce_required: v.pkce_required,
        attributes: v.attributes,
        max_certificate_lifetime_secs: v.max_certificate_lifetime_secs,
        created_at: kept.created_at,
        updated_at: now,
        created_by: kept.created_by,
    }
}

// ---------------------------------------------------------------------------
// Private: registration rules
// ---------------------------------------------------------------------------

struct Flags {
    standard: bool,
    consent: bool,
    service: bool,
    public: bool,
    device: bool,
    exchange: bool,
}

fn check_client_id(
    requested: Option<&str>,
    ctx: &RegistrationContext<'_>,
) -> Result<ClientId, RegistrationError> {
    if let Some(existing) = ctx.existing {
        // PUT: the id comes from the path; a body id must agree.
        return match requested {
            Some(r) if r != existing.id.as_str() => Err(RegistrationError::ClientIdChanged {
                existing: existing.id.to_string(),
                requested: echo(r),
            }),
            _ => Ok(existing.id.clone()),
        };
    }
    let Some(requested) = requested else {
        return Err(RegistrationError::ClientIdMissing);
    };
    let id = ClientId::parse(requested).map_err(RegistrationError::ClientId)?;
    if ctx.client_id_names_a_user {
        return Err(RegistrationError::ClientIdNamesUser);
    }
    Ok(id)
}

/// The seed's flow table, as code. Returns the kind and its grant types.
fn recognise_kind(
    f: &Flags,
    no_redirects: bool,
) -> Result<(ClientKind, BTreeSet<GrantType>), RegistrationError> {
    let mut grants = BTreeSet::new();
    let kind = if f.service {
        // Seed 003 "server-to-server": standardFlowEnabled false,
        // consentRequired false, redirectUri empty, serviceAccountEnabled true.
        if f.standard {
            return Err(RegistrationError::ServiceAccountWithStandardFlow);
        }
        if f.consent {
            return Err(RegistrationError::ServiceAccountWithConsent);
        }
        if !no_redirects {
            return Err(RegistrationError::ServiceAccountWithRedirectUris);
        }
        if f.public {
            return Err(RegistrationError::ServiceAccountPublic);
        }
        if f.device {
            return Err(RegistrationError::ServiceAccountWithDeviceFlow);
        }
        // RFC 6749 §4.4.3: no refresh token for client credentials.
        grants.insert(GrantType::ClientCredentials);
        ClientKind::Service
    } else {
        if !f.standard && !f.device {
            return Err(RegistrationError::NoFlowEnabled);
        }
        if f.standard {
            // Seed 003: no standard flow without consentRequired and
            // redirect URIs.
            if !f.consent {
                return Err(RegistrationError::StandardFlowWithoutConsent);
            }
            if no_redirects {
                return Err(RegistrationError::StandardFlowWithoutRedirectUris);
            }
            grants.insert(GrantType::AuthorizationCode);
        } else if !no_redirects {
            return Err(RegistrationError::RedirectUrisWithoutStandardFlow);
        }
        if f.device {
            if !f.consent {
                return Err(RegistrationError::DeviceFlowWithoutConsent);
            }
            grants.insert(GrantType::DeviceCode);
        }
        grants.insert(GrantType::RefreshToken);
        if f.device {
            ClientKind::Native
        } else if f.public {
            ClientKind::Spa
        } else {
            ClientKind::Web
        }
    };
    if f.exchange {
        // BRIEF §3: the delegatee authenticates as itself.
        if f.public {
            return Err(RegistrationError::TokenExchangeForPublicClient);
        }
        grants.insert(GrantType::TokenExchange);
    }
    Ok((kind, grants))
}

struct Authentication {
    method: TokenEndpointAuthMethod,
    jwks: Option<Value>,
    tls_subject_dn: Option<String>,
}

fn check_authentication(
    c: &KeycloakClient,
    ext: &SlcsExtensions,
    public: bool,
) -> Result<Authentication, RegistrationError> {
    use TokenEndpointAuthMethod as M;
    let tls_dn = ext
        .tls_client_auth_subject_dn
        .as_deref()
        .filter(|s| !s.is_empty());
    if public {
        // Keycloak exports `clientAuthenticatorType: client-secret` even for
        // public clients, so that field is ignored here.
        if ext.token_endpoint_auth_method.is_some_and(|m| m != M::None) {
            return Err(RegistrationError::PublicClientCredentials(
                "slcs.tokenEndpointAuthMethod",
            ));
        }
        if ext.jwks.is_some() {
            return Err(RegistrationError::PublicClientCredentials("slcs.jwks"));
        }
        if tls_dn.is_some() {
            return Err(RegistrationError::PublicClientCredentials(
                "slcs.tlsClientAuthSubjectDn",
            ));
        }
        return Ok(Authentication {
            method: M::None,
            jwks: None,
            tls_subject_dn: None,
        });
    }

    let from_keycloak = match c.client_authenticator_type.as_deref() {
        None | Some("") => None,
        Some("client-secret") => Some(M::ClientSecretBasic),
        Some("client-jwt") => Some(M::PrivateKeyJwt),
        Some("client-x509") => Some(M::TlsClientAuth),
        Some(other) => return Err(RegistrationError::AuthenticatorTypeUnsupported(echo(other))),
    };
    let method = match (ext.token_endpoint_auth_method, from_keycloak) {
        (Some(m), Some(k)) => {
            let agree = m == k || (m.uses_secret() && k.uses_secret());
            if !agree {
                return Err(RegistrationError::AuthenticatorTypeConflict {
                    authenticator: c.client_authenticator_type.clone().unwrap_or_default(),
                    method: m,
                });
            }
            m
        }
        (Some(m), None) => m,
        (None, Some(k)) => k,
        // Seed 000: "Client Secret over HTTP Basic".
        (None, None) => M::ClientSecretBasic,
    };
    if method == M::None {
        return Err(RegistrationError::ConfidentialClientWithoutAuthentication);
    }

    let jwks = match (&ext.jwks, method) {
        (Some(jwks), M::PrivateKeyJwt) => {
            check_jwks(jwks).map_err(RegistrationError::JwksInvalid)?;
            Some(jwks.clone())
        }
        (None, M::PrivateKeyJwt) => return Err(RegistrationError::JwksRequired),
        (Some(_), _) => return Err(RegistrationError::JwksWithoutPrivateKeyJwt),
        (None, _) => None,
    };
    let tls_subject_dn = match (tls_dn, method) {
        (Some(dn), M::TlsClientAuth) => {
            check_subject_dn(dn).map_err(RegistrationError::TlsSubjectDnInvalid)?;
            Some(dn.to_owned())
        }
        (None, M::TlsClientAuth) => return Err(RegistrationError::TlsSubjectDnRequired),
        (Some(_), _) => return Err(RegistrationError::TlsSubjectDnWithoutTlsClientAuth),
        (None, _) => None,
    };
    Ok(Authentication {
        method,
        jwks,
        tls_subject_dn,
    })
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), RegistrationError> {
    if value.chars().count() > max {
        return Err(RegistrationError::TextTooLong { field, max });
    }
    if value
        .chars()
        .any(|c| c.is_control() || is_deceptive_format_char(c))
    {
        return Err(RegistrationError::TextControlCharacter { field });
    }
    Ok(())
}

fn check_link(
    field: &'static str,
    value: Option<&str>,
    development: bool,
) -> Result<Option<String>, RegistrationError> {
    match value {
        None | Some("") => Ok(None),
        Some(url) => match parse_uri(url, development) {
            Ok(_) => Ok(Some(url.to_owned())),
            Err(problem) => Err(RegistrationError::LinkUrl {
                field,
                url: echo(url),
                problem,
            }),
        },
    }
}

fn check_redirect_uris(
    raw: &[String],
    development: bool,
) -> Result<Vec<RegisteredRedirectUri>, RegistrationError> {
    // Count first: 10 000 entries are refused before any is parsed (AZ-04).
    if raw.len() > MAX_REDIRECT_URIS {
        return Err(RegistrationError::TooManyRedirectUris(raw.len()));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (index, value) in raw.iter().enumerate() {
        let uri = RegisteredRedirectUri::parse(value, development).map_err(|problem| {
            RegistrationError::RedirectUri {
                index,
                uri: echo(value),
                problem,
            }
        })?;
        if !seen.insert(value.as_str()) {
            return Err(RegistrationError::DuplicateRedirectUri(echo(value)));
        }
        out.push(uri);
    }
    Ok(out)
}

fn check_web_origins(
    raw: &[String],
    redirect_uris: &[RegisteredRedirectUri],
    development: bool,
) -> Result<Vec<String>, RegistrationError> {
    if raw.len() > MAX_WEB_ORIGINS {
        return Err(RegistrationError::TooManyWebOrigins(raw.len()));
    }
    let mut out: Vec<String> = Vec::new();
    let mut push = |origin: String| {
        if !out.contains(&origin) {
            out.push(origin);
        }
    };
    for (index, value) in raw.iter().enumerate() {
        if value == "+" {
            // Keycloak: "+" stands for the origins of the redirect URIs.
            for uri in redirect_uris {
                if let Ok(p) = parse_uri(uri.as_str(), true) {
                    push(format!("{}://{}", p.scheme, p.authority));
                }
            }
            continue;
        }
        let parsed = parse_uri(value, development).and_then(|p| {
            if p.path.is_empty() && p.query.is_none() {
                Ok(())
            } else {
                Err(UriProblem::NotAnOrigin)
            }
        });
        if let Err(problem) = parsed {
            return Err(RegistrationError::WebOrigin {
                index,
                origin: echo(value),
                problem,
            });
        }
        push(value.clone());
    }
    if out.len() > MAX_WEB_ORIGINS {
        return Err(RegistrationError::TooManyWebOrigins(out.len()));
    }
    Ok(out)
}

fn check_scopes(
    default: &[String],
    optional: &[String],
    allowed: &BTreeSet<String>,
) -> Result<(BTreeSet<String>, BTreeSet<String>), RegistrationError> {
    let total = default.len().saturating_add(optional.len());
    if total > MAX_SCOPES {
        return Err(RegistrationError::TooManyScopes(total));
    }
    for scope in default.iter().chain(optional) {
        let valid = !scope.is_empty()
            && scope.chars().count() <= MAX_SCOPE_CHARS
            // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(RegistrationError::ScopeSyntax(echo(scope)));
        }
        if FORBIDDEN_SCOPES.contains(&scope.as_str()) {
            return Err(RegistrationError::ScopeForbidden(scope.clone()));
        }
        if !allowed.contains(scope) {
            return Err(RegistrationError::ScopeNotAllowed(scope.clone()));
        }
    }
    let default: BTreeSet<String> = default.iter().cloned().collect();
    let mut all = default.clone();
    all.extend(optional.iter().cloned());
    Ok((all, default))
}

fn check_delegatees(
    raw: &[String],
    me: &ClientId,
) -> Result<BTreeSet<ClientId>, RegistrationError> {
    if raw.len() > MAX_DELEGATEES {
        return Err(RegistrationError::TooManyDelegatees(raw.len()));
    }
    let mut out = BTreeSet::new();
    for value in raw {
        let id = ClientId::parse(value).map_err(|source| RegistrationError::DelegateeInvalid {
            value: echo(value),
            source,
        })?;
        if id.folded() == me.folded() {
            return Err(RegistrationError::DelegateeIsSelf);
        }
        out.insert(id);
    }
    Ok(out)
}

fn check_maintainers(
    raw: &[String],
    ctx: &RegistrationContext<'_>,
) -> Result<BTreeSet<String>, RegistrationError> {
    if raw.len() > MAX_MAINTAINERS {
        return Err(RegistrationError::TooManyMaintainers(raw.len()));
    }
    let mut out = BTreeSet::new();
    for value in raw {
        let valid = !value.is_empty()
            && value.chars().count() <= MAX_USER_CHARS
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || is_deceptive_format_char(c));
        if !valid {
            return Err(RegistrationError::MaintainerInvalid(echo(value)));
        }
        out.insert(value.clone());
    }
    if let Some(existing) = ctx.existing {
        // A maintainer may not co-opt others; the owner chooses maintainers.
        let privileged = ctx.caller_is_admin || existing.owner == ctx.caller;
        if !privileged && out != existing.maintainers {
            return Err(RegistrationError::MaintainersChangedByNonOwner);
        }
    }
    Ok(out)
}

fn check_attributes(
    raw: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, RegistrationError> {
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    if raw.len() > MAX_ATTRIBUTES {
        return Err(RegistrationError::TooManyAttributes(raw.len()));
    }
    for (key, value) in raw {
        let reason = if key.is_empty() || key.chars().count() > MAX_ATTRIBUTE_KEY_CHARS {
            Some("keys have 1 to 128 characters")
        } else if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            Some("keys have no whitespace or control characters")
        } else if value.chars().count() > MAX_ATTRIBUTE_VALUE_CHARS {
            Some("values have at most 2048 characters")
        } else if value
            .chars()
            .any(|c| c.is_control() || is_deceptive_format_char(c))
        {
            Some("values have no control, bidirectional-override or invisible characters")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(RegistrationError::AttributeInvalid {
                key: echo(key),
                reason,
            });
        }
    }
    Ok(raw.clone())
}

/// A public JWK Set usable for `private_key_jwt` (RFC 7517 §5, RFC 7523).
fn check_jwks(jwks: &Value) -> Result<(), &'static str> {
    let size = serde_json::to_vec(jwks)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_JWKS_BYTES {
        return Err("the JWK Set is larger than 16 KiB");
    }
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return Err("not a JWK Set: an object with a \"keys\" array is expected (RFC 7517 §5)");
    };
    if keys.is_empty() {
        return Err("the JWK Set has no keys");
    }
    if keys.len() > MAX_JWKS_KEYS {
        return Err("the JWK Set has more than 10 keys");
    }
    for key in keys {
        let Some(key) = key.as_object() else {
            return Err("every entry of \"keys\" must be a JWK object");
        };
        match key.get("kty").and_then(Value::as_str) {
            Some("EC" | "RSA" | "OKP") => {}
            Some("oct") => {
                return Err("symmetric (\"oct\") keys are refused; register a public key");
            }
            _ => return Err("every key needs \"kty\" EC, RSA or OKP"),
        }
        // RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2: private members.
        if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
            .iter()
            .any(|m| key.contains_key(*m))
        {
            return Err("a key contains private key material; publish only public keys");
        }
        if key.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            return Err("keys must be for signatures (\"use\": \"sig\")");
        }
        if let Some(alg) = key.get("alg") {
            match alg.as_str() {
                Some(a) if !a.starts_with("HS") && !a.eq_ignore_ascii_case("none") => {}
                _ => return Err("\"alg\" must name an asymmetric signature algorithm"),
            }
        }
    }
    Ok(())
}

/// An RFC 4514 DN string for RFC 8705 §2.1.2 (compared by the client
/// authentication code, not here).
fn check_subject_dn(dn: &str) -> Result<(), &'static str> {
    if dn.chars().count() > MAX_TLS_SUBJECT_DN_CHARS {
        return Err("at most 1024 characters");
    }
    if dn
        .chars()
        .any(|c| c.is_control() || is_deceptive_format_char(c))
    {
        return Err("no control, bidirectional-override or invisible characters");
    }
    if !dn.contains('=') {
        return Err("not a distinguished name in RFC 4514 form (e.g. CN=wps,O=Example,C=DE)");
    }
    Ok(())
}

fn check_group_name(group: &str) -> Result<(), AccessGrantError> {
    if group.is_empty() {
        return Err(AccessGrantError::InvalidGroupName("empty"));
    }
    if group.chars().count() > MAX_GROUP_CHARS {
        return Err(AccessGrantError::InvalidGroupName("too long"));
    }
    if !group
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(AccessGrantError::InvalidGroupName("invalid character"));
    }
    if !group.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(AccessGrantError::InvalidGroupName(
            "must start with a letter or digit",
        ));
    }
    Ok(())
}

fn check_unit_path(path: &str) -> Result<(), AccessGrantError> {
    if path.is_empty() {
        return Err(AccessGrantError::InvalidUnitPath("empty"));
    }
    if path.chars().count() > MAX_UNIT_PATH_CHARS {
        return Err(AccessGrantError::InvalidUnitPath("too long"));
    }
    if path.contains('/') {
        return Err(AccessGrantError::InvalidUnitPath(
            "`/` is not a separator here",
        ));
    }
    let segments: Vec<&str> = path.split(':').collect();
    if segments.len() > MAX_UNIT_SEGMENTS {
        return Err(AccessGrantError::InvalidUnitPath("too many segments"));
    }
    for segment in segments {
        if segment.is_empty() {
            return Err(AccessGrantError::InvalidUnitPath("empty segment"));
        }
        if segment.chars().count() > MAX_UNIT_SEGMENT_CHARS {
            return Err(AccessGrantError::InvalidUnitPath("segment too long"));
        }
        if segment.chars().all(|c| c == '.') {
            return Err(AccessGrantError::InvalidUnitPath(
                "`.` and `..` segments are not allowed",
            ));
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(AccessGrantError::InvalidUnitPath("invalid character"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Private: strict URI parsing (no URL library: only what the rules need)
// ---------------------------------------------------------------------------

/// The parts of a URI that passed [`parse_uri`].
struct ParsedUri<'a> {
    scheme: &'a str,
    authority: &'a str,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

/// Parses `https://host[:port][/path][?query]` strictly. Refuses
/// everything RFC 9700 and ATTACKS AZ-01/AZ-04 name, and anything two
/// parsers could read differently (backslashes, dot segments, userinfo,
/// upper-case hosts, IDN).
fn parse_uri(s: &str, development: bool) -> Result<ParsedUri<'_>, UriProblem> {
    if s.len() > MAX_URI_BYTES {
        return Err(UriProblem::TooLong(s.len()));
    }
    // Browsers drop tabs and newlines and trim control characters before
    // reading a scheme (WHATWG URL), so look for a dangerous one the same
    // way, in any case (Keycloak CVE-2026-9086).
    let squeezed: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    for scheme in ["javascript", "data", "vbscript"] {
        if squeezed
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.starts_with(':'))
        {
            return Err(UriProblem::DangerousScheme(scheme));
        }
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UriProblem::ControlOrWhitespace);
    }
    if s.contains('*') {
        return Err(UriProblem::Wildcard);
    }
    if s.contains('#') {
        return Err(UriProblem::Fragment);
    }
    if s.contains('\\') {
        return Err(UriProblem::Backslash);
    }

    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(UriProblem::NotAbsolute);
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(UriProblem::NotAbsolute);
    }
    if scheme.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(UriProblem::SchemeNotLowerCase);
    }
    if scheme != "https" && scheme != "http" {
        return Err(UriProblem::SchemeNotAllowed(echo(scheme)));
    }
    // `https:evil.example` (anomalyco/openauth #299) has no authority.
    let Some(after) = rest.strip_prefix("//") else {
        return Err(UriProblem::MissingAuthority);
    };
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    let Some((authority, path_and_query)) = after.split_at_checked(authority_end) else {
        return Err(UriProblem::NotAbsolute);
    };
    // Any `@` in the authority is userinfo (Keycloak CVE-2026-7504: several
    // `@` confuse parsers about which host is meant).
    if authority.contains('@') {
        return Err(UriProblem::UserInfo);
    }
    let host = parse_authority(authority)?;
    let loopback = is_loopback(host);
    // Seed 003: "not localhost" in production; RFC 9700 §2.6: http only for
    // loopback redirection.
    if loopback && !development {
        return Err(UriProblem::Loopback);
    }
    if scheme == "http" && !loopback {
        return Err(UriProblem::HttpNotAllowed);
    }

    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if !path.is_ascii() || query.is_some_and(|q| !q.is_ascii()) {
        return Err(UriProblem::NotAscii);
    }
    check_uri_chars(path, false)?;
    for segment in path.split('/') {
        // `..;/` (Keycloak CVE-2026-3872): servlet containers strip `;…`.
        let bare = segment.split(';').next().unwrap_or_default();
        let decoded = percent_decode(bare);
        if decoded == b"." || decoded == b".." {
            return Err(UriProblem::DotSegment);
        }
    }
    if let Some(query) = query {
        check_uri_chars(query, true)?;
        for pair in query.split('&') {
            let name = percent_decode(pair.split('=').next().unwrap_or_default());
            if let Some(reserved) = RESERVED_QUERY_PARAMETERS
                .iter()
                .find(|r| r.as_bytes() == name.as_slice())
            {
                return Err(UriProblem::ReservedQueryParameter(reserved));
            }
        }
    }
    Ok(ParsedUri {
        scheme,
        authority,
        host,
        path,
        query,
    })
}

/// Checks `host[:port]` and returns the host.
fn parse_authority(authority: &str) -> Result<&str, UriProblem> {
    let (host, port) = if let Some(inner_and_rest) = authority.strip_prefix('[') {
        let Some((inner, after)) = inner_and_rest.split_once(']') else {
            return Err(UriProblem::InvalidHost("unterminated IPv6 literal"));
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(UriProblem::InvalidHost("text after an IPv6 literal")),
            },
        };
        let Ok(addr) = inner.parse::<Ipv6Addr>() else {
            return Err(UriProblem::InvalidHost("not an IPv6 address"));
        };
        if inner.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(UriProblem::HostNotLowerCase);
        }
        if addr.is_unspecified() {
            return Err(UriProblem::InvalidHost("the unspecified address"));
        }
        let end = inner.len().saturating_add(2);
        (authority.get(..end).unwrap_or(authority), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        let digits_ok = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && !port.starts_with('0');
        if !digits_ok || port.parse::<u16>().is_err() {
            return Err(UriProblem::InvalidPort);
        }
    }
    if host.starts_with('[') {
        return Ok(host);
    }
    check_dns_host(host)?;
    Ok(host)
}

fn check_dns_host(host: &str) -> Result<(), UriProblem> {
    if host.is_empty() {
        return Err(UriProblem::EmptyHost);
    }
    if !host.is_ascii() {
        return Err(UriProblem::IdnHost);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(UriProblem::InvalidHost(
            "only letters, digits, `.` and `-` (no `%`, `_` or other characters)",
        ));
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(UriProblem::HostNotLowerCase);
    }
    if host.len() > 253 {
        return Err(UriProblem::InvalidHost("longer than 253 characters"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(UriProblem::InvalidHost(
                "empty label (`..` or a trailing dot)",
            ));
        }
        if label.len() > 63 {
            return Err(UriProblem::InvalidHost("a label longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(UriProblem::InvalidHost("a label starts or ends with `-`"));
        }
        if label.starts_with("xn--") {
            return Err(UriProblem::IdnHost);
        }
    }
    // WHATWG URL reads a host whose last label is numeric as IPv4; accept
    // only a well-formed dotted quad.
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        match host.parse::<Ipv4Addr>() {
            Ok(a) if a.is_unspecified() => {
                return Err(UriProblem::InvalidHost("the unspecified address"));
            }
            Ok(_) => {}
            Err(_) => return Err(UriProblem::InvalidHost("not a dotted-quad IPv4 address")),
        }
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// RFC 3986 `pchar` (`/` too; `?` too in a query), with well-formed
/// percent-encoding. `*` and `#` were refused earlier.
fn check_uri_chars(part: &str, query: bool) -> Result<(), UriProblem> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i.saturating_add(1)) && hex(i.saturating_add(2))) {
                return Err(UriProblem::InvalidPercentEncoding);
            }
            i = i.saturating_add(3);
            continue;
        }
        let allowed =
            b.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@/".contains(&b) || (query && b == b'?');
        if !allowed {
            return Err(UriProblem::InvalidCharacter(char::from(b)));
        }
        i = i.saturating_add(1);
    }
    Ok(())
}

/// Decodes `%XX` escapes (input already checked to be well-formed ASCII).
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i.saturating_add(1)).and_then(|h| hex_value(*h));
            let lo = bytes.get(i.saturating_add(2)).and_then(|l| hex_value(*l));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi.wrapping_mul(16).wrapping_add(lo));
                i = i.saturating_add(3);
                continue;
            }
        }
        out.push(b);
        i = i.saturating_add(1);
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

// ---------------------------------------------------------------------------
// Private: small helpers
// ---------------------------------------------------------------------------

/// Bidirectional overrides and invisible characters: they let a name or a
/// URI look like another (Trojan Source, CVE-2021-42574; ATTACKS REG-05).
fn is_deceptive_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// 8-4-4-4-12 hex digits, or 32 hex digits.
fn looks_like_uuid(lower: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if lower.len() == 32 {
        return hex(lower);
    }
    let groups: Vec<&str> = lower.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| hex(g))
}

/// Caller input repeated in a message: at most [`ECHO_CHARS`] characters,
/// control and deceptive characters replaced.
pub(crate) fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(ECHO_CHARS)
        .map(|c| {
            if c.is_control() || is_deceptive_format_char(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect();
    if s.chars().nth(ECHO_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
