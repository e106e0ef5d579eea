//! Client assertions: `private_key_jwt` (RFC 7523 §2.2 and §3; OpenID
//! Connect Core §9), verified against the JWK Set the client registered.
//!
//! The same hardening as for access tokens (RFC 8725): the algorithm comes
//! from the registered key, never from the header alone; `none`, HMAC and
//! header-embedded keys (`jwk`, `jku`, `x5u`, `x5c`) are refused; `exp` is
//! required and the assertion must be short-lived; `jti` is single-use (the
//! caller records it atomically, ATTACKS CA-05).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde::Deserialize;
use serde_json::Value;

/// `client_assertion_type` for JWT client assertions (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest assertion accepted, in bytes.
const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// Longest assertion lifetime accepted (exp − now), in seconds.
const MAX_LIFETIME_SECS: i64 = 300;
/// Clock skew tolerated.
const LEEWAY_SECS: i64 = 30;

/// What the assertion must say.
#[derive(Clone, Copy, Debug)]
pub struct AssertionExpectations<'a> {
    /// The client (`iss` and `sub`).
    pub client_id: &'a str,
    /// Acceptable `aud` values: the issuer and the endpoint URLs.
    pub audiences: &'a [String],
    /// Now, in seconds.
    pub now: i64,
}

/// The parts of a verified assertion the caller needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The single-use identifier.
    pub jti: String,
    /// Expiry, seconds.
    pub exp: i64,
}

/// Why an assertion was refused (all answer `invalid_client`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssertionError {
    /// Not a compact JWS, or too large.
    #[error("the client assertion is malformed")]
    Malformed,
    /// A header parameter slcs refuses.
    #[error("the client assertion header carries {0}, which is not accepted")]
    ForbiddenHeader(&'static str),
    /// `alg` missing, `none`, HMAC or not the registered key's.
    #[error("the client assertion algorithm is not accepted")]
    Algorithm,
    /// No registered key fits.
    #[error("no registered key matches the client assertion")]
    UnknownKey,
    /// The signature or a claim failed.
    #[error("the client assertion is not valid: {0}")]
    Invalid(&'static str),
}

/// The client id an assertion claims (`sub`), read without verification so
/// that the registered keys can be found. Never trust it further.
pub fn claimed_client(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("sub")?.as_str().map(str::to_owned)
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: i64,
    nbf: Option<i64>,
    jti: String,
}

/// Verifies `assertion` against the client's registered JWK Set.
pub fn verify_assertion(
    jwks: &Value,
    assertion: &str,
    expect: &AssertionExpectations<'_>,
) -> Result<VerifiedAssertion, AssertionError> {
    if assertion.len() > MAX_ASSERTION_BYTES || assertion.split('.').count() != 3 {
        return Err(AssertionError::Malformed);
    }
    let header_b64 = assertion
        .split('.')
        .next()
        .ok_or(AssertionError::Malformed)?;
    let header: serde_json::Map<String, Value> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(AssertionError::Malformed)?;
    // RFC 8725 §3.10: keys come only from the registration.
    for (name, label) in [
        ("jwk", "jwk"),
        ("jku", "jku"),
        ("x5u", "x5u"),
        ("x5c", "x5c"),
        ("crit", "crit"),
    ] {
        if header.contains_key(name) {
            return Err(AssertionError::ForbiddenHeader(label));
        }
    }
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AssertionError::Algorithm)?;
    let algorithm = match alg_name {
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        _ => return Err(AssertionError::Algorithm),
    };
    let kid = header.get("kid").and_then(Value::as_str);
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(AssertionError::UnknownKey)?;
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.get("kid").and_then(Value::as_str) == Some(kid)))
        .collect();
    let [key] = candidates.as_slice() else {
        // No key, or several without a kid to choose: refuse rather than try
        // each (RFC 7515 §4.1.4 kid).
        return Err(AssertionError::UnknownKey);
    };
    // A key registered with an `alg` is used with that one only (RFC 8725 §3.1).
    if key
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|registered| registered != alg_name)
    {
        return Err(AssertionError::Algorithm);
    }
    let jwk: Jwk =
        serde_json::from_value((*key).clone()).map_err(|_| AssertionError::UnknownKey)?;
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| AssertionError::UnknownKey)?;

    let mut validation = Validation::new(algorithm);
    // Time is checked below against `expect.now`, the one clock slcs uses.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.set_issuer(&[expect.client_id]);
    validation.set_audience(expect.audiences);
    let claims = jsonwebtoken::decode::<Claims>(assertion, &decoding, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AssertionError::Invalid(match e.kind() {
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                ErrorKind::InvalidAlgorithm => "algorithm does not fit the key",
                _ => "could not be verified",
            })
        })?
        .claims;
    if claims.sub != expect.client_id || claims.iss != expect.client_id {
        return Err(AssertionError::Invalid("iss and sub must be the client id"));
    }
    if claims.exp + LEEWAY_SECS < expect.now {
        return Err(AssertionError::Invalid("expired"));
    }
    if claims.exp > expect.now + MAX_LIFETIME_SECS + LEEWAY_SECS {
        return Err(AssertionError::Invalid(
            "expires too far in the future (at most 5 minutes)",
        ));
    }
    if claims.nbf.is_some_and(|nbf| nbf > expect.now + LEEWAY_SECS) {
        return Err(AssertionError::Invalid("not yet valid"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(AssertionError::Invalid("jti must be 1 to 256 characters"));
    }
    Ok(VerifiedAssertion {
        jti: claims.jti,
        exp: claims.exp,
    })
}
