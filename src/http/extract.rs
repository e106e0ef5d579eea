//! Turning requests into what the domain needs: the client's presented
//! credentials (one method only) and bearer tokens.

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::error::OAuthError;
use super::form::{OAuthForm, decode};
use super::server::PeerCertificates;
use crate::oauth::TokenService;
use crate::oauth::assertion::{JWT_BEARER_ASSERTION, claimed_client};
use crate::oauth::client_auth::{AuthenticatedClient, PresentedCredentials};

/// Reads the client's credentials from the `Authorization` header and the
/// form. RFC 6749 §2.3: exactly one method per request — Basic together with
/// `client_secret` in the body is `invalid_request` (ATTACKS CA-01); a body
/// `client_id` that disagrees with the Basic one likewise.
pub fn presented_credentials(
    headers: &HeaderMap,
    form: &OAuthForm,
    peer_certificates: Option<&PeerCertificates>,
) -> Result<PresentedCredentials, OAuthError> {
    let authorization = authorization_header(headers)?;
    let basic = match authorization {
        Some(value) => match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => Some(rest.trim()),
            _ => {
                return Err(OAuthError::invalid_client(
                    "unsupported authorization scheme at this endpoint; use HTTP Basic",
                    true,
                ));
            }
        },
        None => None,
    };
    let body_secret = form.get("client_secret");
    let body_id = form.get("client_id");
    if form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some() {
        if basic.is_some() || body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "the client used two authentication methods (an assertion and a secret); use one",
            ));
        }
        if form.get("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        let assertion = form
            .get("client_assertion")
            .ok_or_else(|| OAuthError::invalid_request("client_assertion is missing"))?;
        // RFC 7523 §3 item 2: the assertion's sub is the client; a
        // client_id parameter, if sent, must agree.
        if let Some(id) = body_id
            && claimed_client(assertion).as_deref() != Some(id)
        {
            return Err(OAuthError::invalid_request(
                "client_id differs from the client assertion's subject",
            ));
        }
        return Ok(PresentedCredentials::Assertion {
            assertion: assertion.to_owned(),
        });
    }
    match (basic, body_secret) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "the client used two authentication methods (HTTP Basic and client_secret); use one",
        )),
        (Some(encoded), None) => {
            let (client_id, secret) = decode_basic(encoded)?;
            if body_id.is_some_and(|id| id != client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the HTTP Basic client",
                ));
            }
            Ok(PresentedCredentials::Basic { client_id, secret })
        }
        (None, Some(secret)) => {
            let client_id = body_id
                .ok_or_else(|| OAuthError::invalid_request("client_secret without client_id"))?;
            Ok(PresentedCredentials::Post {
                client_id: client_id.to_owned(),
                secret: secret.to_owned(),
            })
        }
        (None, None) => match body_id {
            // RFC 8705 §2: mutual TLS, with client_id in the request.
            Some(client_id) if peer_certificates.is_some() => peer_certificates
                .and_then(|chain| chain.0.first())
                .and_then(|leaf| {
                    PresentedCredentials::from_certificate(client_id.to_owned(), leaf.as_ref())
                })
                .ok_or_else(|| OAuthError::invalid_client("unreadable client certificate", false)),
            Some(client_id) => Ok(PresentedCredentials::None {
                client_id: client_id.to_owned(),
            }),
            None => Err(OAuthError::invalid_client(
                "client authentication is required",
                true,
            )),
        },
    }
}

/// Reads the client's credentials and authenticates them at `endpoint`
/// (`/token`, `/introspect`, `/revoke`); failures answer `invalid_client`.
pub(super) async fn authenticated_client(
    tokens: &TokenService,
    headers: &HeaderMap,
    peer_certificates: Option<&PeerCertificates>,
    form: &OAuthForm,
    endpoint: &str,
    now: time::OffsetDateTime,
) -> Result<AuthenticatedClient, OAuthError> {
    let presented = presented_credentials(headers, form, peer_certificates)?;
    tokens
        .authenticate(&presented, endpoint, now)
        .await
        .map_err(|e| OAuthError::from_client_auth(e, presented.used_basic()))
}

/// The `Authorization` header, if present; refused if repeated or not text.
fn authorization_header(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| OAuthError::invalid_request("the Authorization header is not text"))
}

/// RFC 6749 §2.3.1: id and secret are form-urlencoded, joined by `:`, then
/// base64-encoded (RFC 7617).
fn decode_basic(encoded: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed HTTP Basic credentials", true);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    let colon = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let (id, secret) = (
        raw.get(..colon).unwrap_or_default(),
        raw.get(colon + 1..).unwrap_or_default(),
    );
    let id = decode(id).map_err(|_| bad())?;
    let secret = decode(secret).map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

/// A certificate serial from a path segment: hex, colons allowed.
pub(super) fn serial_from_path(
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<crate::store::Serial, super::error::Problem> {
    use super::error::Problem;
    let axum::extract::Path(serial) =
        path.map_err(|e| Problem::bad_request("invalid_request", e.body_text()))?;
    serial
        .parse()
        .map_err(|e: String| Problem::bad_request("invalid_request", e))
}

/// The bearer token of `Authorization: Bearer` (RFC 6750 §2.1), if any.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    Ok(authorization_header(headers)?.and_then(|value| {
        value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(id: &str, secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let form = OAuthForm::parse(b"grant_type=client_credentials").unwrap();
        let presented = presented_credentials(&basic("svc%3A1", "s%2Bx+y"), &form, None).unwrap();
        assert_eq!(
            presented,
            PresentedCredentials::Basic {
                client_id: "svc:1".into(),
                secret: "s+x y".into()
            }
        );
    }

    #[test]
    fn ca_01_two_methods_are_invalid_request() {
        let form = OAuthForm::parse(b"client_id=svc&client_secret=x").unwrap();
        let err = presented_credentials(&basic("svc", "x"), &form, None).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        let form = OAuthForm::parse(b"client_id=other").unwrap();
        let err = presented_credentials(&basic("svc", "x"), &form, None).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
    }

    #[test]
    fn missing_or_malformed_credentials_are_invalid_client() {
        let empty = OAuthForm::default();
        assert_eq!(
            presented_credentials(&HeaderMap::new(), &empty, None)
                .unwrap_err()
                .code(),
            "invalid_client"
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(
            presented_credentials(&headers, &empty, None)
                .unwrap_err()
                .code(),
            "invalid_client"
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            presented_credentials(&headers, &empty, None)
                .unwrap_err()
                .code(),
            "invalid_client"
        );
    }
}
