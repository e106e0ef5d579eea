//! JWT access tokens (RFC 9068): minting with the current signing key and
//! verifying against the fixed key set.
//!
//! This module owns the token format and every check a verifier makes. It
//! never picks a key or an algorithm from the token (RFC 8725 §3.1, §3.10):
//! `kid` is only a lookup into [`KeySet`], the algorithm is the one that key
//! is bound to, and headers that carry or point at keys (`jwk`, `jku`,
//! `x5u`, `x5c`) or demand extensions (`crit`) are refused. It never makes a
//! network request, never reads the wall clock (`now` is an argument), and
//! its error messages never echo token content.
//!
//! Verification order: size, shape and header (no crypto), then the
//! signature and the registered claims through `jsonwebtoken` with a pinned
//! [`jsonwebtoken::Validation`], then slcs's own claim checks with
//! `Expectations::now` as the only clock.
//!
//! Decisions where the RFCs leave a choice:
//! - `typ` is compared ASCII case-insensitively: it is a media type
//!   (RFC 7515 §4.1.9, RFC 2045 §5.1), so `at+JWT` and
//!   `application/AT+JWT` are the same type as `at+jwt` (RFC 9068 §4).
//! - Duplicate member names in the header or the claims set make the token
//!   malformed (RFC 7515 §4 and RFC 7519 §4 allow rejecting them; taking
//!   the last one would let two parsers disagree). Nested objects (`act`)
//!   are parsed with the last-wins rule of `serde_json`.
//! - NumericDate claims (`exp`, `iat`, `nbf`) must be JSON integers that fit
//!   an `i64`: no strings, no fractions, no exponents, no `null`. slcs
//!   mints whole seconds only.
//! - Only `alg`, `typ` and `kid` may appear in the header, which is exactly
//!   what [`mint`] writes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::keys::{KeySet, SigningKey};

/// Longest token accepted or minted. Ours are well under 2 KiB; the bound
/// caps parsing work for hostile input (ATTACKS JWT-09).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest `kid` looked up (ours are 16 characters).
pub const MAX_KID_BYTES: usize = 64;

/// The `typ` header slcs writes (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The claims of an slcs access token (RFC 9068 §2.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer: the authorization server's identifier, compared exactly.
    pub iss: String,
    /// Subject: a user, or `service:<client_id>` for a service account.
    pub sub: String,
    /// Audience: the resource server(s) the token is for.
    pub aud: Audience,
    /// The client the token was issued to (RFC 9068 §2.2, RFC 8693 §4.3).
    pub client_id: String,
    /// Space-separated granted scopes (RFC 9068 §2.2.3); may be empty.
    pub scope: String,
    /// Unique token id (RFC 7519 §4.1.7), for revocation.
    pub jti: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The root grant this token descends from (revocation families).
    pub grant_id: String,
    /// Whether `sub` is a person or a service account (RFC 9700 §4.15: a
    /// resource server must be able to tell them apart).
    #[serde(rename = "slcs_sub_type")]
    pub subject_type: SubjectType,
    /// RFC 8693 §4.1 actor chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// How the client authenticated when the grant was made
    /// (`client_secret_basic`, `tls_client_auth`, …): recorded in the
    /// certificate's provenance as the root step's `clientAuth`.
    #[serde(
        default,
        rename = "slcs_client_auth",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_auth: Option<String>,
    /// The grant the token came from (`client_credentials`, …): the root
    /// step's `grantType` in the certificate's provenance.
    #[serde(
        default,
        rename = "slcs_grant_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub grant_type: Option<String>,
    /// When the user authenticated (RFC 9068 §2.2.1); user tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// Authentication context class (RFC 9068 §2.2.1); user tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// Authentication methods (RFC 9068 §2.2.1, RFC 8176); user tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// The user's stored approval this token was issued under (BRIEF §3):
    /// recorded in the certificate's provenance, and checked to be live.
    #[serde(
        default,
        rename = "slcs_approval",
        skip_serializing_if = "Option::is_none"
    )]
    pub approval_id: Option<String>,
}

/// The `aud` claim: one or more audiences (RFC 7519 §4.1.3). A single
/// audience is written as a string, several as an array; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience(Vec<String>);

impl Audience {
    /// One audience.
    pub fn one(audience: impl Into<String>) -> Self {
        Self(vec![audience.into()])
    }

    /// Several audiences; `None` if `audiences` is empty.
    pub fn many(audiences: Vec<String>) -> Option<Self> {
        (!audiences.is_empty()).then_some(Self(audiences))
    }

    /// Whether `audience` is one of them (exact comparison).
    pub fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|a| a == audience)
    }

    /// The audiences.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            One(String),
            Many(Vec<String>),
        }
        match Wire::deserialize(deserializer)? {
            Wire::One(one) => Ok(Self::one(one)),
            Wire::Many(many) => {
                Self::many(many).ok_or_else(|| serde::de::Error::custom("empty audience"))
            }
        }
    }
}

/// What kind of principal `sub` names (claim `slcs_sub_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    /// A person.
    User,
    /// A service account (client credentials grant).
    Service,
}

/// What the verifier expects of a token.
#[derive(Clone, Debug)]
pub struct Expectations<'a> {
    /// The issuer identifier; `iss` must equal it exactly.
    pub issuer: &'a str,
    /// This resource server's identifier; `aud` must contain it.
    pub audience: &'a str,
    /// The current time, seconds since the epoch: the only clock used.
    pub now: i64,
    /// Allowed clock skew for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// Why a token was refused or could not be minted. Messages are safe to
/// show a client: they never include token content or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url segments, a segment that is not valid base64url
    /// (padding, other characters), a header or claims set that is not a
    /// JSON object, duplicate member names, or a header without `alg`.
    #[error("the token is malformed")]
    Malformed,
    /// Longer than [`MAX_TOKEN_BYTES`] (also refused by [`mint`]).
    #[error("the token is too large")]
    TooLarge,
    /// `typ` is missing or not `at+jwt` / `application/at+jwt` (RFC 9068 §4).
    #[error("the token is not an access token")]
    WrongType,
    /// `kid` is missing, longer than [`MAX_KID_BYTES`], or names no key in
    /// the set that verifies at this time.
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// `alg` is `none` (any case), HMAC, unsupported, or not exactly the
    /// algorithm of the key named by `kid` (RFC 8725 §3.1).
    #[error("the token's signing algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The header carries the named parameter, which slcs never accepts
    /// (RFC 8725 §3.10: key material or key URLs in the header; `crit`).
    #[error("the token header must not contain {0}")]
    ForbiddenHeader(&'static str),
    /// The signature is empty, of the wrong length, all zero, or does not
    /// verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` is not after `now - leeway`.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is more than the leeway after `now`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not exactly the expected issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` does not contain this resource server.
    #[error("the token is not intended for this audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("the token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an unusable value (empty string,
    /// non-integer date, unknown subject type).
    #[error("the token's {0} claim is invalid")]
    BadClaim(&'static str),
    /// The server could not sign (internal; the detail is for the log).
    #[error("the token could not be signed")]
    Signing(String),
}

/// Mints an access token signed by the current key. The header is exactly
/// `{"alg": <the key's algorithm>, "typ": "at+jwt", "kid": <kid>}`.
pub fn mint(keys: &KeySet, claims: &AccessTokenClaims) -> Result<String, JwtError> {
    sign_compact(keys, ACCESS_TOKEN_TYP, claims)
}

/// Signs `claims` as a compact JWS with the current key and the header
/// `{"alg", "typ": typ, "kid"}`: access tokens (`at+jwt`) and OpenID
/// Connect ID tokens (`JWT`) share the key set and this one signer, and
/// differ by `typ` so that one can never be taken for the other
/// (RFC 8725 §3.11, RFC 9068 §4).
pub fn sign_compact<T: Serialize>(
    keys: &KeySet,
    typ: &'static str,
    claims: &T,
) -> Result<String, JwtError> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'static str,
        typ: &'static str,
        kid: &'a str,
    }
    let key = keys.current();
    let header = Header {
        alg: key.algorithm().name(),
        typ,
        kid: key.kid(),
    };
    // Signed directly with the parsed key held by the key set:
    // `jsonwebtoken::encode` re-parses (and for EC keys re-validates) the
    // PKCS#8 key on every call, which measured 1.7x slower for ES256 and
    // 2.8x slower for RS256.
    let header = serde_json::to_vec(&header).map_err(|e| JwtError::Signing(e.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|e| JwtError::Signing(e.to_string()))?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key
        .sign(token.as_bytes())
        .map_err(|e| JwtError::Signing(e.to_string()))?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    // A token our own verifier would refuse is not worth issuing.
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    Ok(token)
}

/// Verifies an access token against the key set and returns its claims.
/// This is the resource server's check: `aud` must contain
/// `expect.audience`.
pub fn verify(
    keys: &KeySet,
    token: &str,
    expect: &Expectations<'_>,
) -> Result<AccessTokenClaims, JwtError> {
    verify_inner(
        keys,
        token,
        expect,
        AudienceCheck::Contains(expect.audience),
    )
}

/// Like [`verify`] but accepts any well-formed `aud` (present, a string or
/// a non-empty array of strings); `expect.audience` is ignored. For the
/// authorization server's own introspection and revocation, which decide
/// separately whether the caller is entitled to the token (RFC 7662 §2.2,
/// RFC 7009 §2.1). A resource server must never use this.
pub fn verify_for_any_audience(
    keys: &KeySet,
    token: &str,
    expect: &Expectations<'_>,
) -> Result<AccessTokenClaims, JwtError> {
    verify_inner(keys, token, expect, AudienceCheck::AnyWellFormed)
}

// ---------------------------------------------------------------------------
// Private.

#[derive(Clone, Copy)]
enum AudienceCheck<'a> {
    /// `aud` must contain this value (RFC 9068 §4).
    Contains(&'a str),
    /// `aud` must be present and well-formed only.
    AnyWellFormed,
}

fn verify_inner(
    keys: &KeySet,
    token: &str,
    expect: &Expectations<'_>,
    audience: AudienceCheck<'_>,
) -> Result<AccessTokenClaims, JwtError> {
    // 1. Shape, before anything is decoded (ATTACKS JWT-09).
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwtError::Malformed);
    };
    // RFC 7515 §2: base64url without padding; no '=', whitespace or
    // standard-alphabet characters anywhere (a padded payload would
    // otherwise only fail as a bad signature).
    if header_b64.is_empty()
        || payload_b64.is_empty()
        || ![header_b64, payload_b64, signature_b64]
            .iter()
            .all(|segment| segment.bytes().all(is_base64url))
    {
        return Err(JwtError::Malformed);
    }

    // 2. Header, decoded here and strictly; picks the key (no crypto yet).
    let header = decode_object(header_b64)?;
    let key = check_header(keys, &header, expect)?;

    // 3. Signature shape (RFC 8725 §3.3; CVE-2022-21449 "psychic
    //    signatures": an all-zero ECDSA signature must never pass).
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtError::Malformed)?;
    if signature.len() != key.signature_len() || signature.iter().all(|&b| b == 0) {
        return Err(JwtError::BadSignature);
    }

    // 4. Signature and registered claims through jsonwebtoken, pinned to
    //    the key's one algorithm.
    let validation = validation_for(key, expect, audience);
    let data = match jsonwebtoken::decode::<UniqueObject>(token, key.decoding_key(), &validation) {
        Ok(data) => data,
        Err(e) => return Err(library_error(e.kind(), payload_b64, expect, audience)),
    };

    // 5. slcs's own checks, with `expect.now` as the clock.
    check_claims(data.claims.0, expect, audience)
}

/// Header parameters refused by name. `jwk`, `jku`, `x5u`, `x5c`: keys or
/// key URLs chosen by the sender (RFC 8725 §3.10, ATTACKS JWT-04);
/// `crit`: extensions slcs does not implement (RFC 7515 §4.1.11); the
/// rest: JWE (RFC 7516), unencoded payloads (RFC 7797), thumbprints and
/// content types slcs never writes.
const FORBIDDEN_HEADERS: &[&str] = &[
    "jwk", "jku", "x5u", "x5c", "crit", "x5t", "x5t#S256", "cty", "b64", "enc", "zip", "epk",
    "apu", "apv", "iv", "tag", "p2s", "p2c", "url", "nonce", "ppt",
];

/// The registered claims jsonwebtoken must find with the right type.
/// (`iat` is not among the names jsonwebtoken checks; slcs checks it in
/// `check_claims`. Listing it keeps the intent in one place.)
const REQUIRED_SPEC_CLAIMS: &[&str] = &["exp", "iat", "iss", "aud", "sub"];

fn check_header<'k>(
    keys: &'k KeySet,
    header: &Map<String, Value>,
    expect: &Expectations<'_>,
) -> Result<&'k SigningKey, JwtError> {
    for name in header.keys() {
        match name.as_str() {
            "alg" | "typ" | "kid" => {}
            other => {
                return Err(JwtError::ForbiddenHeader(
                    FORBIDDEN_HEADERS
                        .iter()
                        .find(|f| **f == other)
                        .copied()
                        .unwrap_or("unknown parameters"),
                ));
            }
        }
    }

    // RFC 9068 §4: typ is at+jwt or application/at+jwt; media types are
    // case-insensitive (RFC 7515 §4.1.9).
    let typ = header.get("typ").and_then(Value::as_str);
    let typ_ok = typ.is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(JwtError::WrongType);
    }

    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        _ => return Err(JwtError::Malformed),
    };
    // RFC 9068 §4 / RFC 8725 §3.2: never `none`; RFC 8725 §3.1: never an
    // HMAC algorithm, whose "secret" an attacker could take from the JWKS.
    // Refused here in any spelling, before the kid is even looked at.
    if alg.eq_ignore_ascii_case("none")
        || alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("hs"))
    {
        return Err(JwtError::AlgorithmNotAllowed);
    }

    let kid = match header.get("kid") {
        Some(Value::String(kid)) => kid.as_str(),
        Some(_) => return Err(JwtError::Malformed),
        None => return Err(JwtError::UnknownKey),
    };
    if kid.is_empty() || kid.len() > MAX_KID_BYTES {
        return Err(JwtError::UnknownKey);
    }
    let key = keys
        .verifying_key(kid, to_datetime(expect.now)?)
        .ok_or(JwtError::UnknownKey)?;
    // The key decides the algorithm; the header must agree exactly
    // (case-sensitive, RFC 7515 §4.1.1).
    if alg != key.algorithm().name() {
        return Err(JwtError::AlgorithmNotAllowed);
    }
    Ok(key)
}

fn validation_for(
    key: &SigningKey,
    expect: &Expectations<'_>,
    audience: AudienceCheck<'_>,
) -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(key.algorithm().jwt_algorithm());
    validation.algorithms = vec![key.algorithm().jwt_algorithm()];
    // jsonwebtoken < 10.3 treated a claim of the wrong JSON type as absent
    // and skipped its check (CVE-2026-25537); requiring the claims makes a
    // wrong type fail as "missing" in every version.
    validation.required_spec_claims = REQUIRED_SPEC_CLAIMS
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    validation.leeway = expect.leeway_secs;
    validation.set_issuer(&[expect.issuer]);
    match audience {
        AudienceCheck::Contains(audience) => {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
        }
        // jsonwebtoken refuses any `aud` when none is expected; `aud` stays
        // in `required_spec_claims`, so it must still be present and typed.
        AudienceCheck::AnyWellFormed => validation.validate_aud = false,
    }
    // jsonwebtoken compares `exp` and `nbf` with its own reading of
    // `SystemTime::now()` (validation.rs `get_current_timestamp`), which
    // would make a second clock authoritative beside `expect.now` and break
    // every fixed-clock test (a token valid at `now` refused, or expired at
    // `now` accepted, depending on the host's clock). Both checks are
    // therefore done in `check_claims` against `expect.now`, with the same
    // leeway and stricter typing; `required_spec_claims` above still makes
    // jsonwebtoken insist on a numeric `exp`.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation
}

/// Maps a jsonwebtoken failure. Its claim checks run only after the
/// signature verified, so for those the payload is authentic and slcs's
/// own checks give the precise reason (jsonwebtoken reports a wrong-typed
/// claim as missing, and checks required claims in hash-set order).
fn library_error(
    kind: &ErrorKind,
    payload_b64: &str,
    expect: &Expectations<'_>,
    audience: AudienceCheck<'_>,
) -> JwtError {
    let fallback = match kind {
        ErrorKind::InvalidSignature => return JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => return JwtError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(name) => JwtError::MissingClaim(claim_name(name)),
        ErrorKind::InvalidClaimFormat(name) => JwtError::BadClaim(claim_name(name)),
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidSubject => JwtError::BadClaim("sub"),
        // Also a claims problem: jsonwebtoken's claim parsing aborts with a
        // JSON error on an object or array where it expects a number.
        ErrorKind::Json(_) => JwtError::Malformed,
        // Base64, JSON, UTF-8, shape, and any kind added later.
        _ => return JwtError::Malformed,
    };
    match decode_object(payload_b64).and_then(|claims| check_claims(claims, expect, audience)) {
        Err(precise) => precise,
        Ok(_) => fallback,
    }
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

fn claim_name(name: &str) -> &'static str {
    REQUIRED_SPEC_CLAIMS
        .iter()
        .chain(["nbf"].iter())
        .find(|c| **c == name)
        .copied()
        .unwrap_or("registered")
}

/// Checks every claim against `expect` and builds the typed claims.
fn check_claims(
    mut claims: Map<String, Value>,
    expect: &Expectations<'_>,
    audience: AudienceCheck<'_>,
) -> Result<AccessTokenClaims, JwtError> {
    let leeway = i64::try_from(expect.leeway_secs).unwrap_or(i64::MAX);

    // RFC 9068 §4: iss exactly the issuer (a string, not an array).
    match claims.get("iss") {
        None => return Err(JwtError::MissingClaim("iss")),
        Some(Value::String(iss)) if iss == expect.issuer => {}
        Some(Value::String(_)) => return Err(JwtError::WrongIssuer),
        Some(_) => return Err(JwtError::BadClaim("iss")),
    }
    // RFC 9068 §4: aud must contain this resource server.
    let auds: Vec<&str> = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) if !auds.is_empty() => {
            let mut strings = Vec::with_capacity(auds.len());
            for aud in auds {
                match aud {
                    Value::String(aud) => strings.push(aud.as_str()),
                    _ => return Err(JwtError::BadClaim("aud")),
                }
            }
            strings
        }
        Some(_) => return Err(JwtError::BadClaim("aud")),
    };
    if let AudienceCheck::Contains(expected) = audience
        && !auds.contains(&expected)
    {
        return Err(JwtError::WrongAudience);
    }
    non_empty_string(&claims, "sub")?;

    let exp = numeric_date(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    let iat = numeric_date(&claims, "iat")?.ok_or(JwtError::MissingClaim("iat"))?;
    let nbf = numeric_date(&claims, "nbf")?;
    // RFC 7519 §4.1.4: valid only while now is before exp (plus leeway).
    if expect.now.saturating_sub(leeway) >= exp {
        return Err(JwtError::Expired);
    }
    // RFC 7519 §4.1.5: not before nbf; a token "issued" in the future is
    // equally not valid yet.
    let latest = expect.now.saturating_add(leeway);
    if nbf.is_some_and(|nbf| nbf > latest) || iat > latest {
        return Err(JwtError::NotYetValid);
    }

    non_empty_string(&claims, "client_id")?;
    non_empty_string(&claims, "jti")?;
    non_empty_string(&claims, "grant_id")?;
    match claims.get("scope") {
        None => return Err(JwtError::MissingClaim("scope")),
        Some(Value::String(_)) => {}
        Some(_) => return Err(JwtError::BadClaim("scope")),
    }
    match claims.get("slcs_sub_type") {
        None => return Err(JwtError::MissingClaim("slcs_sub_type")),
        Some(Value::String(t)) if t == "user" || t == "service" => {}
        Some(_) => return Err(JwtError::BadClaim("slcs_sub_type")),
    }
    match claims.get("act") {
        None | Some(Value::Object(_)) => {}
        Some(_) => return Err(JwtError::BadClaim("act")),
    }
    for name in ["slcs_client_auth", "slcs_grant_type"] {
        match claims.get(name) {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(JwtError::BadClaim(name)),
        }
    }

    // Everything is checked; only the typed fields are kept.
    claims.retain(|name, _| KNOWN_CLAIMS.contains(&name.as_str()));
    serde_json::from_value(Value::Object(claims)).map_err(|_| JwtError::Malformed)
}

const KNOWN_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "client_id",
    "scope",
    "jti",
    "iat",
    "exp",
    "nbf",
    "grant_id",
    "slcs_sub_type",
    "act",
    "slcs_client_auth",
    "slcs_grant_type",
    "auth_time",
    "acr",
    "amr",
    "slcs_approval",
];

fn non_empty_string(claims: &Map<String, Value>, name: &'static str) -> Result<(), JwtError> {
    match claims.get(name) {
        None => Err(JwtError::MissingClaim(name)),
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(_) => Err(JwtError::BadClaim(name)),
    }
}

/// A NumericDate that is a JSON integer fitting an i64; `None` if absent.
/// `null`, strings, fractions and exponent forms (which serde_json parses
/// as floats, e.g. `1e300`) are refused (ATTACKS JWT-07).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(JwtError::BadClaim(name)),
        Some(_) => Err(JwtError::BadClaim(name)),
    }
}

fn to_datetime(unix: i64) -> Result<OffsetDateTime, JwtError> {
    // A `now` outside the calendar cannot come from a real clock; no key is
    // valid then.
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| JwtError::UnknownKey)
}

/// Strict base64url (no padding, canonical trailing bits) of a JSON object
/// without duplicate member names.
fn decode_object(segment: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice::<UniqueObject>(&bytes)
        .map(|o| o.0)
        .map_err(|_| JwtError::Malformed)
}

/// A JSON object whose top-level member names are unique. serde_json's own
/// `Map` keeps the last duplicate silently; this refuses it.
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueObject;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some(name) = access.next_key::<String>()? {
                    if map.contains_key(&name) {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(name, value);
                }
                Ok(UniqueObject(map))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA512,
        RSA_PSS_SHA256, RsaKeyPair,
    };
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    use super::*;
    use crate::oauth::keys::SigningAlgorithm;

    const ISS: &str = "https://slcs.test";
    const AUD: &str = "https://slcs.test/certificate";
    /// 2030-03-17: after the host clock on purpose, so a check against the
    /// host clock instead of `now` would show.
    const NOW: i64 = 1_900_000_000;
    const ALGS: [SigningAlgorithm; 3] = [
        SigningAlgorithm::Es256,
        SigningAlgorithm::EdDsa,
        SigningAlgorithm::Rs256,
    ];

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        keys: KeySet,
    }

    fn fixture(alg: SigningAlgorithm) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let keys = KeySet::load_or_create(&dir, alg, at(NOW - 3600)).unwrap();
        Fixture {
            _tmp: tmp,
            dir,
            keys,
        }
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn claims() -> AccessTokenClaims {
        AccessTokenClaims {
            iss: ISS.into(),
            sub: "alice".into(),
            aud: Audience::one(AUD),
            client_id: "client-1".into(),
            scope: "openid certificate".into(),
            jti: "jti-1".into(),
            iat: NOW,
            exp: NOW + 900,
            nbf: None,
            grant_id: "grant-1".into(),
            subject_type: SubjectType::User,
            act: None,
            client_auth: None,
            grant_type: None,
            auth_time: None,
            acr: None,
            amr: None,
            approval_id: None,
        }
    }

    fn expect() -> Expectations<'static> {
        expect_at(NOW)
    }

    fn expect_at(now: i64) -> Expectations<'static> {
        Expectations {
            issuer: ISS,
            audience: AUD,
            now,
            leeway_secs: 60,
        }
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn good_header(keys: &KeySet) -> Value {
        json!({"alg": keys.current().algorithm().name(), "typ": "at+jwt", "kid": keys.current().kid()})
    }

    fn good_claims() -> Value {
        serde_json::to_value(claims()).unwrap()
    }

    /// A token with the given raw header and claims bytes, validly signed
    /// by the current key.
    fn sign_raw(keys: &KeySet, header: &[u8], claims: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signature = keys.current().sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(signature))
    }

    fn sign_json(keys: &KeySet, header: &Value, claims: &Value) -> String {
        sign_raw(
            keys,
            &serde_json::to_vec(header).unwrap(),
            &serde_json::to_vec(claims).unwrap(),
        )
    }

    /// A token with the given header and claims and an arbitrary signature.
    fn with_signature(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(serde_json::to_vec(header).unwrap()),
            b64(serde_json::to_vec(claims).unwrap()),
            b64(signature)
        )
    }

    fn with_claims(keys: &KeySet, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut claims = good_claims();
        edit(claims.as_object_mut().unwrap());
        sign_json(keys, &good_header(keys), &claims)
    }

    fn with_header(keys: &KeySet, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut header = good_header(keys);
        edit(header.as_object_mut().unwrap());
        sign_json(keys, &header, &good_claims())
    }

    fn pkcs8_of(dir: &Path, kid: &str) -> Vec<u8> {
        let pem = std::fs::read_to_string(dir.join(format!("{kid}.pem"))).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }

    fn hmac_sha(alg: aws_lc_rs::hmac::Algorithm, secret: &[u8], input: &str) -> Vec<u8> {
        let key = aws_lc_rs::hmac::Key::new(alg, secret);
        aws_lc_rs::hmac::sign(&key, input.as_bytes())
            .as_ref()
            .to_vec()
    }

    fn refused(keys: &KeySet, token: &str) -> JwtError {
        verify(keys, token, &expect()).unwrap_err()
    }

    // --- round trips, JWKS, rotation -------------------------------------

    #[test]
    fn round_trip_all_algorithms() {
        for alg in ALGS {
            let f = fixture(alg);
            let token = mint(&f.keys, &claims()).unwrap();
            assert_eq!(
                verify(&f.keys, &token, &expect()).unwrap(),
                claims(),
                "{alg}"
            );

            let header_b64 = token.split('.').next().unwrap();
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).unwrap()).unwrap();
            assert_eq!(
                header,
                good_header(&f.keys),
                "{alg}: header is alg, typ, kid only"
            );

            // Every optional claim set, several audiences.
            let mut full = claims();
            full.aud = Audience::many(vec!["https://other.test".into(), AUD.into()]).unwrap();
            full.nbf = Some(NOW - 10);
            full.subject_type = SubjectType::Service;
            full.act = Some(json!({"sub": "portal", "act": {"sub": "gateway"}}));
            let token = mint(&f.keys, &full).unwrap();
            assert_eq!(verify(&f.keys, &token, &expect()).unwrap(), full, "{alg}");
        }
    }

    #[test]
    fn claims_serialize_as_rfc_9068_says() {
        let value = good_claims();
        assert_eq!(value["aud"], AUD, "a single audience is a string");
        assert_eq!(value["slcs_sub_type"], "user");
        assert_eq!(value["grant_id"], "grant-1");
        assert!(value.get("nbf").is_none() && value.get("act").is_none());
        let two = Audience::many(vec!["a".into(), "b".into()]).unwrap();
        assert_eq!(serde_json::to_value(&two).unwrap(), json!(["a", "b"]));
        assert!(Audience::many(Vec::new()).is_none());
        assert!(serde_json::from_value::<Audience>(json!([])).is_err());
        assert_eq!(
            serde_json::from_value::<Audience>(json!(["a"])).unwrap(),
            Audience::one("a")
        );
    }

    #[test]
    fn jwks_verifies_a_token_through_an_independent_path() {
        for alg in ALGS {
            let f = fixture(alg);
            let token = mint(&f.keys, &claims()).unwrap();
            let jwks: jsonwebtoken::jwk::JwkSet =
                serde_json::from_value(f.keys.jwks(at(NOW))).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
            let mut validation = jsonwebtoken::Validation::new(alg.jwt_algorithm());
            validation.set_audience(&[AUD]);
            validation.set_issuer(&[ISS]);
            let data = jsonwebtoken::decode::<AccessTokenClaims>(&token, &key, &validation)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(data.claims, claims());
            assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));

            // And a token signed by some other key does not verify with it.
            let other = fixture(alg);
            let foreign = mint(&other.keys, &claims()).unwrap();
            assert!(jsonwebtoken::decode::<Value>(&foreign, &key, &validation).is_err());
            assert_eq!(refused(&f.keys, &foreign), JwtError::UnknownKey);
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_verifiable_until_retired_keys_expire() {
        let mut f = fixture(SigningAlgorithm::Es256);
        let mut long = claims();
        long.exp = NOW + 4 * 3600;
        let old = mint(&f.keys, &long).unwrap();
        let old_kid = f.keys.current().kid().to_owned();

        f.keys
            .rotate(&f.dir, at(NOW + 10), Duration::from_secs(3600))
            .unwrap();
        assert_ne!(f.keys.current().kid(), old_kid);
        // Signed by the retired key, inside its window: still good.
        assert_eq!(verify(&f.keys, &old, &expect_at(NOW + 20)).unwrap(), long);
        let new = mint(&f.keys, &long).unwrap();
        assert!(verify(&f.keys, &new, &expect_at(NOW + 20)).is_ok());

        // The retired key's window has passed: its token fails, the new
        // key's token does not.
        let later = expect_at(NOW + 10 + 3600);
        assert_eq!(
            verify(&f.keys, &old, &later).unwrap_err(),
            JwtError::UnknownKey
        );
        assert!(verify(&f.keys, &new, &later).is_ok());

        // After the next rotation the retired key is gone entirely.
        f.keys
            .rotate(&f.dir, at(NOW + 2 * 3600), Duration::from_secs(3600))
            .unwrap();
        assert!(f.keys.keys().all(|k| k.kid() != old_kid));
        assert_eq!(
            verify(&f.keys, &old, &expect_at(NOW + 2 * 3600)).unwrap_err(),
            JwtError::UnknownKey
        );
    }

    #[test]
    fn a_token_signed_by_the_next_key_verifies() {
        // Another replica may already have rotated.
        let f = fixture(SigningAlgorithm::EdDsa);
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": f.keys.next().kid()});
        let input = format!(
            "{}.{}",
            b64(serde_json::to_vec(&header).unwrap()),
            b64(serde_json::to_vec(&good_claims()).unwrap())
        );
        let signature = f.keys.next().sign(input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64(signature));
        assert!(verify(&f.keys, &token, &expect()).is_ok());
    }

    #[test]
    fn now_is_authoritative_not_the_host_clock() {
        let f = fixture(SigningAlgorithm::Es256);
        // Expired long ago by the host clock, valid at the given `now`.
        let past = 1_000_000_000;
        let mut old = claims();
        old.iat = past;
        old.exp = past + 900;
        let token = mint(&f.keys, &old).unwrap();
        // The key set was created at NOW - 3600; the key is current, so any
        // `now` finds it.
        assert_eq!(verify(&f.keys, &token, &expect_at(past + 1)).unwrap(), old);
        assert_eq!(refused(&f.keys, &token), JwtError::Expired);
    }

    #[test]
    fn leeway_applies_to_exp_nbf_and_iat() {
        let f = fixture(SigningAlgorithm::Es256);
        let ok = |edit: &dyn Fn(&mut AccessTokenClaims)| {
            let mut c = claims();
            edit(&mut c);
            verify(&f.keys, &mint(&f.keys, &c).unwrap(), &expect())
        };
        assert!(ok(&|c| c.exp = NOW - 59).is_ok());
        assert_eq!(ok(&|c| c.exp = NOW - 60).unwrap_err(), JwtError::Expired);
        assert!(ok(&|c| c.nbf = Some(NOW + 60)).is_ok());
        assert_eq!(
            ok(&|c| c.nbf = Some(NOW + 61)).unwrap_err(),
            JwtError::NotYetValid
        );
        assert!(ok(&|c| c.iat = NOW + 60).is_ok());
        assert_eq!(
            ok(&|c| c.iat = NOW + 61).unwrap_err(),
            JwtError::NotYetValid
        );
    }

    #[test]
    fn required_string_claims_must_be_present_and_non_empty() {
        let f = fixture(SigningAlgorithm::Es256);
        for name in ["sub", "client_id", "jti", "grant_id"] {
            let token = with_claims(&f.keys, |c| {
                c.insert(name.into(), json!(""));
            });
            assert_eq!(refused(&f.keys, &token), JwtError::BadClaim(name));
            let token = with_claims(&f.keys, |c| {
                c.remove(name);
            });
            assert_eq!(refused(&f.keys, &token), JwtError::MissingClaim(name));
        }
        for (name, value) in [
            ("scope", json!(["openid"])),
            ("slcs_sub_type", json!("robot")),
            ("slcs_sub_type", json!("User")),
            ("act", json!("portal")),
            ("sub", json!(42)),
        ] {
            let token = with_claims(&f.keys, |c| {
                c.insert(name.into(), value.clone());
            });
            assert_eq!(
                refused(&f.keys, &token),
                JwtError::BadClaim(name),
                "{value}"
            );
        }
        for name in ["scope", "slcs_sub_type"] {
            let token = with_claims(&f.keys, |c| {
                c.remove(name);
            });
            assert_eq!(refused(&f.keys, &token), JwtError::MissingClaim(name));
        }
        // Unknown extra claims are ignored (RFC 7519 §4: must be ignored
        // when not understood).
        let token = with_claims(&f.keys, |c| {
            c.insert("cnf".into(), json!({"x5t#S256": "abc"}));
        });
        assert_eq!(verify(&f.keys, &token, &expect()).unwrap(), claims());
    }

    #[test]
    fn verify_for_any_audience_skips_only_the_audience_match() {
        let f = fixture(SigningAlgorithm::Es256);
        let any = |token: &str| verify_for_any_audience(&f.keys, token, &expect());
        for aud in [
            json!("https://opendap.test"),
            json!(["wps", "other"]),
            json!(AUD),
        ] {
            let token = with_claims(&f.keys, |c| {
                c.insert("aud".into(), aud.clone());
            });
            assert!(any(&token).is_ok(), "{aud}");
        }
        let cases: Vec<(&str, Option<Value>, JwtError)> = vec![
            ("aud", None, JwtError::MissingClaim("aud")),
            ("aud", Some(json!({"aud": AUD})), JwtError::BadClaim("aud")),
            ("aud", Some(json!([])), JwtError::BadClaim("aud")),
            (
                "iss",
                Some(json!("https://evil.test")),
                JwtError::WrongIssuer,
            ),
            ("exp", Some(json!(NOW - 3600)), JwtError::Expired),
        ];
        for (name, value, expected) in cases {
            let token = with_claims(&f.keys, |c| match &value {
                Some(v) => {
                    c.insert(name.into(), v.clone());
                }
                None => {
                    c.remove(name);
                }
            });
            assert_eq!(any(&token).unwrap_err(), expected, "{name} = {value:?}");
        }
        let token = with_header(&f.keys, |h| {
            h.insert("alg".into(), json!("none"));
        });
        assert_eq!(any(&token).unwrap_err(), JwtError::AlgorithmNotAllowed);
    }

    #[test]
    fn mint_refuses_what_verify_would_refuse_for_size() {
        let f = fixture(SigningAlgorithm::Es256);
        let mut big = claims();
        big.act = Some(json!({"sub": "x".repeat(MAX_TOKEN_BYTES)}));
        assert_eq!(mint(&f.keys, &big).unwrap_err(), JwtError::TooLarge);
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let f = fixture(SigningAlgorithm::Es256);
        let marker = "<script>alert(1)</script>";
        let tokens = [
            with_header(&f.keys, |h| {
                h.insert("kid".into(), json!(marker));
            }),
            with_header(&f.keys, |h| {
                h.insert("alg".into(), json!(marker));
            }),
            with_header(&f.keys, |h| {
                h.insert(marker.into(), json!(1));
            }),
            with_claims(&f.keys, |c| {
                c.insert("iss".into(), json!(marker));
            }),
            with_claims(&f.keys, |c| {
                c.insert("aud".into(), json!(marker));
            }),
            marker.to_owned(),
        ];
        for token in tokens {
            let message = refused(&f.keys, &token).to_string();
            assert!(!message.contains("script"), "{message}");
        }
    }

    // --- ATTACKS.md section 6 ---------------------------------------------

    #[test]
    fn jwt_01_alg_none_refused() {
        let f = fixture(SigningAlgorithm::Es256);
        let claims = good_claims();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let with_kid = json!({"alg": alg, "typ": "at+jwt", "kid": f.keys.current().kid()});
            let without_kid = json!({"alg": alg, "typ": "at+jwt"});
            for header in [&with_kid, &without_kid] {
                // Empty signature, a junk one, and one of the right length.
                for signature in [&b""[..], b"signature", &[7u8; 64]] {
                    let token = with_signature(header, &claims, signature);
                    assert_eq!(
                        refused(&f.keys, &token),
                        JwtError::AlgorithmNotAllowed,
                        "{alg}"
                    );
                }
            }
        }
        // The canonical attack string, literally.
        let token = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{}.",
            b64(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(refused(&f.keys, &token), JwtError::AlgorithmNotAllowed);
    }

    #[test]
    fn jwt_02_hs256_with_public_key_as_secret_refused() {
        for alg in ALGS {
            let f = fixture(alg);
            let key = f.keys.current();
            let spki = key.public_key_der();
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                STANDARD.encode(spki)
            );
            let jwk = serde_json::to_string(key.jwk()).unwrap();
            let jwks = serde_json::to_string(&f.keys.jwks(at(NOW))).unwrap();
            let secrets: [&[u8]; 5] = [
                pem.as_bytes(),
                pem.trim_end().as_bytes(),
                spki,
                jwk.as_bytes(),
                jwks.as_bytes(),
            ];
            for secret in secrets {
                for (name, hmac) in [
                    ("HS256", aws_lc_rs::hmac::HMAC_SHA256),
                    ("HS384", aws_lc_rs::hmac::HMAC_SHA384),
                    ("HS512", aws_lc_rs::hmac::HMAC_SHA512),
                ] {
                    let header = json!({"alg": name, "typ": "at+jwt", "kid": key.kid()});
                    let input = format!(
                        "{}.{}",
                        b64(serde_json::to_vec(&header).unwrap()),
                        b64(serde_json::to_vec(&good_claims()).unwrap())
                    );
                    let token = format!("{input}.{}", b64(hmac_sha(hmac, secret, &input)));
                    assert_eq!(refused(&f.keys, &token), JwtError::AlgorithmNotAllowed);

                    // Second wall: even past the header check, jsonwebtoken
                    // with the pinned Validation refuses it.
                    let err = jsonwebtoken::decode::<Value>(
                        &token,
                        key.decoding_key(),
                        &validation_for(key, &expect(), AudienceCheck::Contains(AUD)),
                    )
                    .unwrap_err();
                    assert!(matches!(err.kind(), ErrorKind::InvalidAlgorithm), "{err:?}");
                }
            }
        }
    }

    #[test]
    fn jwt_02_off_list_algorithms_refused() {
        let rsa = fixture(SigningAlgorithm::Rs256);
        let rsa_key = rsa.keys.current();
        let pair = RsaKeyPair::from_pkcs8(&pkcs8_of(&rsa.dir, rsa_key.kid())).unwrap();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Real signatures by the real RS256 key under other RSA algorithms.
        for (alg, padding) in [
            (
                "PS256",
                &RSA_PSS_SHA256 as &'static dyn aws_lc_rs::signature::RsaEncoding,
            ),
            ("RS512", &RSA_PKCS1_SHA512),
        ] {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": rsa_key.kid()});
            let input = format!(
                "{}.{}",
                b64(serde_json::to_vec(&header).unwrap()),
                b64(serde_json::to_vec(&good_claims()).unwrap())
            );
            let mut signature = vec![0u8; pair.public_modulus_len()];
            pair.sign(padding, &rng, input.as_bytes(), &mut signature)
                .unwrap();
            let token = format!("{input}.{}", b64(&signature));
            assert_eq!(
                refused(&rsa.keys, &token),
                JwtError::AlgorithmNotAllowed,
                "{alg}"
            );
        }

        let ec = fixture(SigningAlgorithm::Es256);
        for alg in [
            "ES256K", "HS512", "ES256 ", " ES256", "es256", "Es256", "ES384", "ES512", "RS256",
            "EdDSA", "Ed25519", "PS256", "",
        ] {
            // Validly signed by the ES256 key, only the alg changed.
            let token = with_header(&ec.keys, |h| {
                h.insert("alg".into(), json!(alg));
            });
            assert_eq!(
                refused(&ec.keys, &token),
                JwtError::AlgorithmNotAllowed,
                "{alg:?}"
            );
        }
        for alg in [json!(null), json!(["ES256"]), json!(256)] {
            let token = with_header(&ec.keys, |h| {
                h.insert("alg".into(), alg.clone());
            });
            assert_eq!(refused(&ec.keys, &token), JwtError::Malformed, "{alg}");
        }
        let token = with_header(&ec.keys, |h| {
            h.remove("alg");
        });
        assert_eq!(refused(&ec.keys, &token), JwtError::Malformed);
    }

    #[test]
    fn jwt_03_empty_or_zero_signature_refused() {
        for alg in ALGS {
            let f = fixture(alg);
            let header = good_header(&f.keys);
            let body = good_claims();
            let len = f.keys.current().signature_len();
            for signature in [
                Vec::new(),
                vec![0u8; len],
                vec![0u8; len - 1],
                vec![0u8; len + 1],
                vec![0x5a; len - 1],
                vec![0x5a; len + 1],
                vec![0x5a; len],
            ] {
                let token = with_signature(&header, &body, &signature);
                assert_eq!(
                    refused(&f.keys, &token),
                    JwtError::BadSignature,
                    "{alg} {signature:?}"
                );
            }
            // A valid signature over other claims.
            let genuine = mint(&f.keys, &claims()).unwrap();
            let signature = genuine.rsplit('.').next().unwrap();
            let mut other = claims();
            other.sub = "root".into();
            let forged = format!(
                "{}.{}.{signature}",
                b64(serde_json::to_vec(&header).unwrap()),
                b64(serde_json::to_vec(&other).unwrap())
            );
            assert_eq!(refused(&f.keys, &forged), JwtError::BadSignature);
        }
        // ECDSA r = 0 with a non-zero s, and the all-zero signature straight
        // into the crypto (past slcs's own zero check): CVE-2022-21449.
        let f = fixture(SigningAlgorithm::Es256);
        let header = good_header(&f.keys);
        let mut r_zero = vec![0u8; 64];
        r_zero[63] = 1;
        let token = with_signature(&header, &good_claims(), &r_zero);
        assert_eq!(refused(&f.keys, &token), JwtError::BadSignature);
        let zero = with_signature(&header, &good_claims(), &[0u8; 64]);
        let key = f.keys.current();
        let err = jsonwebtoken::decode::<Value>(
            &zero,
            key.decoding_key(),
            &validation_for(key, &expect(), AudienceCheck::Contains(AUD)),
        )
        .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidSignature), "{err:?}");
    }

    #[test]
    fn jwt_04_embedded_keys_refused() {
        let f = fixture(SigningAlgorithm::Es256);
        let kid = f.keys.current().kid().to_owned();

        // Header `jwk` with the attacker's key, signed by the attacker.
        let attacker = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = attacker.public_key().as_ref().to_vec();
        let attacker_jwk = json!({
            "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])
        });
        for header in [
            json!({"alg": "ES256", "typ": "at+jwt", "jwk": attacker_jwk}),
            json!({"alg": "ES256", "typ": "at+jwt", "kid": kid, "jwk": attacker_jwk}),
        ] {
            let input = format!(
                "{}.{}",
                b64(serde_json::to_vec(&header).unwrap()),
                b64(serde_json::to_vec(&good_claims()).unwrap())
            );
            let signature = attacker
                .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
                .unwrap();
            let token = format!("{input}.{}", b64(signature.as_ref()));
            assert_eq!(refused(&f.keys, &token), JwtError::ForbiddenHeader("jwk"));
        }

        // Key URLs and certificates: refused by name, validly signed or not.
        for (name, value) in [
            ("jku", json!("https://evil.test/jwks.json")),
            ("x5u", json!("http://169.254.169.254/latest/meta-data/")),
            (
                "x5c",
                json!([STANDARD.encode(b"attacker self-signed cert")]),
            ),
            ("crit", json!(["exp"])),
            ("x5t#S256", json!("abc")),
            ("cty", json!("JWT")),
            ("b64", json!(false)),
        ] {
            let token = with_header(&f.keys, |h| {
                h.insert(name.into(), value.clone());
            });
            match refused(&f.keys, &token) {
                JwtError::ForbiddenHeader(reported) => assert_eq!(reported, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        let token = with_header(&f.keys, |h| {
            h.insert("x-custom".into(), json!("1"));
        });
        assert_eq!(
            refused(&f.keys, &token),
            JwtError::ForbiddenHeader("unknown parameters")
        );

        // `kid` is a lookup key into a fixed map with a bounded length.
        for bad in [
            "../../../../dev/null".to_owned(),
            "' OR '1'='1".to_owned(),
            "x".repeat(MAX_KID_BYTES + 1),
            "AAAAAAAAAAAAAAAA".to_owned(),
            kid.to_lowercase(),
            format!("{kid} "),
            String::new(),
        ] {
            let token = with_header(&f.keys, |h| {
                h.insert("kid".into(), json!(bad));
            });
            assert_eq!(refused(&f.keys, &token), JwtError::UnknownKey, "{bad:?}");
        }
        let token = with_header(&f.keys, |h| {
            h.insert("kid".into(), json!("k".repeat(100 * 1024)));
        });
        assert_eq!(refused(&f.keys, &token), JwtError::TooLarge);
        let token = with_header(&f.keys, |h| {
            h.remove("kid");
        });
        assert_eq!(refused(&f.keys, &token), JwtError::UnknownKey);
        let token = with_header(&f.keys, |h| {
            h.insert("kid".into(), json!([kid]));
        });
        assert_eq!(refused(&f.keys, &token), JwtError::Malformed);
    }

    #[test]
    fn jwt_06_wrong_typ_refused() {
        let f = fixture(SigningAlgorithm::Es256);
        for typ in [
            json!("JWT"),
            json!("jwt"),
            json!("application/jwt"),
            json!("logout+jwt"),
            json!("client-authentication+jwt"),
            json!("rt+jwt"),
            json!("at+jwt "),
            json!("application/at+jwt; charset=utf-8"),
            json!("at-jwt"),
            json!(""),
            json!(null),
            json!(["at+jwt"]),
        ] {
            let token = with_header(&f.keys, |h| {
                h.insert("typ".into(), typ.clone());
            });
            assert_eq!(refused(&f.keys, &token), JwtError::WrongType, "{typ}");
        }
        let token = with_header(&f.keys, |h| {
            h.remove("typ");
        });
        assert_eq!(refused(&f.keys, &token), JwtError::WrongType);

        // Media types are case-insensitive (RFC 7515 §4.1.9, RFC 2045).
        for typ in [
            "at+jwt",
            "application/at+jwt",
            "at+JWT",
            "AT+JWT",
            "Application/At+Jwt",
        ] {
            let token = with_header(&f.keys, |h| {
                h.insert("typ".into(), json!(typ));
            });
            assert!(verify(&f.keys, &token, &expect()).is_ok(), "{typ}");
        }
    }

    #[test]
    fn jwt_07_claim_type_confusion_refused() {
        let f = fixture(SigningAlgorithm::Es256);
        let cases: Vec<(&str, Option<Value>, JwtError)> = vec![
            ("exp", Some(json!("9999999999")), JwtError::BadClaim("exp")),
            ("nbf", Some(json!("99999999999")), JwtError::BadClaim("nbf")),
            ("exp", Some(json!(1e300)), JwtError::BadClaim("exp")),
            ("exp", Some(json!(-1)), JwtError::Expired),
            ("exp", Some(Value::Null), JwtError::BadClaim("exp")),
            ("exp", None, JwtError::MissingClaim("exp")),
            ("nbf", Some(json!(NOW + 3600)), JwtError::NotYetValid),
            ("nbf", Some(Value::Null), JwtError::BadClaim("nbf")),
            (
                "exp",
                Some(json!(NOW as f64 + 900.5)),
                JwtError::BadClaim("exp"),
            ),
            ("exp", Some(json!(u64::MAX)), JwtError::BadClaim("exp")),
            ("exp", Some(json!(true)), JwtError::BadClaim("exp")),
            (
                "exp",
                Some(json!({"$date": NOW + 900})),
                JwtError::BadClaim("exp"),
            ),
            ("iat", Some(json!("1900000000")), JwtError::BadClaim("iat")),
            ("iat", None, JwtError::MissingClaim("iat")),
            ("iat", Some(json!(NOW + 3600)), JwtError::NotYetValid),
        ];
        for (name, value, expected) in cases {
            let token = with_claims(&f.keys, |c| match &value {
                Some(v) => {
                    c.insert(name.into(), v.clone());
                }
                None => {
                    c.remove(name);
                }
            });
            assert_eq!(refused(&f.keys, &token), expected, "{name} = {value:?}");
        }
        // The exponent form is a float to serde_json even when integral.
        let token = sign_raw(
            &f.keys,
            &serde_json::to_vec(&good_header(&f.keys)).unwrap(),
            serde_json::to_string(&good_claims())
                .unwrap()
                .replace(&format!("\"exp\":{}", NOW + 900), "\"exp\":1.9000009e9")
                .as_bytes(),
        );
        assert_eq!(refused(&f.keys, &token), JwtError::BadClaim("exp"));
    }

    #[test]
    fn jwt_08_audience_and_issuer_enforced() {
        let f = fixture(SigningAlgorithm::Es256);
        let cases: Vec<(&str, Option<Value>, JwtError)> = vec![
            (
                "aud",
                Some(json!(["https://opendap.test"])),
                JwtError::WrongAudience,
            ),
            ("aud", Some(json!(["wps"])), JwtError::WrongAudience),
            ("aud", Some(json!("wps")), JwtError::WrongAudience),
            (
                "aud",
                Some(json!(format!("{AUD}/"))),
                JwtError::WrongAudience,
            ),
            ("aud", None, JwtError::MissingClaim("aud")),
            ("aud", Some(json!({"aud": AUD})), JwtError::BadClaim("aud")),
            ("aud", Some(json!([])), JwtError::BadClaim("aud")),
            ("aud", Some(json!([AUD, 1])), JwtError::BadClaim("aud")),
            ("aud", Some(Value::Null), JwtError::BadClaim("aud")),
            (
                "iss",
                Some(json!("https://evil.test")),
                JwtError::WrongIssuer,
            ),
            ("iss", Some(json!(format!("{ISS}/"))), JwtError::WrongIssuer),
            (
                "iss",
                Some(json!("HTTPS://SLCS.TEST")),
                JwtError::WrongIssuer,
            ),
            ("iss", None, JwtError::MissingClaim("iss")),
            // jsonwebtoken alone accepts an iss array that contains the
            // issuer; RFC 7519 §4.1.1 makes iss one StringOrURI.
            (
                "iss",
                Some(json!([ISS, "https://evil.test"])),
                JwtError::BadClaim("iss"),
            ),
            ("iss", Some(json!({"iss": ISS})), JwtError::BadClaim("iss")),
        ];
        for (name, value, expected) in cases {
            let token = with_claims(&f.keys, |c| match &value {
                Some(v) => {
                    c.insert(name.into(), v.clone());
                }
                None => {
                    c.remove(name);
                }
            });
            assert_eq!(refused(&f.keys, &token), expected, "{name} = {value:?}");
        }
        // RFC 9068 §4: aud must *contain* the resource server.
        let token = with_claims(&f.keys, |c| {
            c.insert("aud".into(), json!(["https://opendap.test", AUD]));
        });
        assert!(verify(&f.keys, &token, &expect()).is_ok());
    }

    #[test]
    fn jwt_09_malformed_tokens_refused() {
        let f = fixture(SigningAlgorithm::Es256);
        let good = mint(&f.keys, &claims()).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let (h, p, s) = (parts[0], parts[1], parts[2]);

        for token in [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}.{s}.{s}.{s}"),
            format!("{h}..{s}"),
            format!(".{p}.{s}"),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}=.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}=="),
            format!("{}.{p}.{s}", h.replace('J', "+")),
            format!(
                "{h}.{p}.{}",
                s.replacen(|c: char| c.is_ascii_alphanumeric(), "/", 1)
            ),
            format!("{h}.{p}.{s} "),
            format!(" {h}.{p}.{s}"),
            format!("{h}.{p}\n.{s}"),
            format!("{h}.{p}.{s}*"),
            format!("Bearer {good}"),
        ] {
            assert_eq!(refused(&f.keys, &token), JwtError::Malformed, "{token:?}");
        }
        // A trailing base64url character: 65 signature octets, refused by
        // length before any crypto.
        assert_eq!(
            refused(&f.keys, &format!("{good}A")),
            JwtError::BadSignature
        );
        // Non-canonical trailing bits in the last character.
        let mut tweaked = s.to_owned();
        let last = tweaked.pop().unwrap();
        tweaked.push(if last == 'B' { 'C' } else { 'B' });
        assert!(verify(&f.keys, &format!("{h}.{p}.{tweaked}"), &expect()).is_err());

        // 1 MB, and 10 000 levels of nesting: refused by size first.
        assert_eq!(refused(&f.keys, &"a".repeat(1 << 20)), JwtError::TooLarge);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let token = sign_raw(
            &f.keys,
            &serde_json::to_vec(&good_header(&f.keys)).unwrap(),
            deep.as_bytes(),
        );
        assert_eq!(refused(&f.keys, &token), JwtError::TooLarge);
        // Nesting that fits in 8 KiB hits serde_json's recursion limit.
        let mut claims_text = serde_json::to_string(&good_claims()).unwrap();
        claims_text.pop();
        // 300 levels, past serde_json's limit of 128.
        claims_text.push_str(",\"act\":");
        claims_text.push_str(&"{\"act\":".repeat(300));
        claims_text.push_str("{}");
        claims_text.push_str(&"}".repeat(301));
        let token = sign_raw(
            &f.keys,
            &serde_json::to_vec(&good_header(&f.keys)).unwrap(),
            claims_text.as_bytes(),
        );
        assert!(token.len() <= MAX_TOKEN_BYTES);
        assert_eq!(refused(&f.keys, &token), JwtError::Malformed);

        // Header that is JSON but not an object, or not JSON.
        for header in [
            &b"[\"ES256\"]"[..],
            b"\"at+jwt\"",
            b"null",
            b"{",
            b"",
            b"\xff\xfe",
        ] {
            let token = format!("{}.{p}.{s}", b64(header));
            assert_eq!(refused(&f.keys, &token), JwtError::Malformed, "{header:?}");
        }

        // Duplicate member names: rejected (RFC 7519 §4 permits either
        // rejecting or taking the last; rejecting leaves no room for two
        // parsers to disagree).
        let header = format!(
            r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}","kid":"other"}}"#,
            f.keys.current().kid()
        );
        let token = sign_raw(
            &f.keys,
            header.as_bytes(),
            &serde_json::to_vec(&good_claims()).unwrap(),
        );
        assert_eq!(refused(&f.keys, &token), JwtError::Malformed);
        let header_bytes = serde_json::to_vec(&good_header(&f.keys)).unwrap();
        let mut dup = serde_json::to_string(&good_claims()).unwrap();
        dup.pop();
        dup.push_str(r#","sub":"root"}"#);
        let token = sign_raw(&f.keys, &header_bytes, dup.as_bytes());
        assert_eq!(refused(&f.keys, &token), JwtError::Malformed);
        // The same with sub first: the order does not matter.
        let dup =
            serde_json::to_string(&good_claims())
                .unwrap()
                .replacen('{', r#"{"sub":"root","#, 1);
        let token = sign_raw(&f.keys, &header_bytes, dup.as_bytes());
        assert_eq!(refused(&f.keys, &token), JwtError::Malformed);

        // Invalid UTF-8 inside a claim (RFC 8725 §3.7).
        let mut bad = serde_json::to_vec(&good_claims()).unwrap();
        let at = bad.windows(5).position(|w| w == b"alice").unwrap();
        bad[at] = 0xff;
        let token = sign_raw(&f.keys, &header_bytes, &bad);
        assert_eq!(refused(&f.keys, &token), JwtError::Malformed);

        // Claims that are JSON but not an object.
        for payload in [&b"[]"[..], b"\"alice\"", b"null", b"42"] {
            let token = sign_raw(&f.keys, &header_bytes, payload);
            assert_eq!(refused(&f.keys, &token), JwtError::Malformed, "{payload:?}");
        }
    }
}
