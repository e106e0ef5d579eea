//! `POST /certificate` and its compatible aliases, `POST /oauth2/getcert`
//! (OA4MP/CILogon) and `POST /oauth/certificate/` (ESGF SLCS), plus
//! `GET /certificate/status/{serial}`.
//!
//! The three entry points differ only in how they read a request and write
//! an answer (the [`Dialect`]); what is checked and issued is the same
//! [`CertificateService::issue`](crate::certificate::CertificateService::issue).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;

use super::AppState;
use super::error::{CertificateFailure, EndpointError, OAuthError, Problem};
use super::extract::{bearer_token, presented_credentials};
use super::form::OAuthForm;
use super::server::PeerCertificates;
use crate::certificate::{CertificateRequest, Issued};
use crate::oauth::client_auth::AuthenticatedClient;

/// How an entry point reads requests and writes answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `POST /certificate`: RFC 6750 errors as JSON; PEM or JSON answers.
    Slcs,
    /// `POST /oauth2/getcert`: `certreq`, `certlifetime`, `access_token`;
    /// a `text/plain` PEM answer; errors as OAuth JSON, like OA4MP.
    Oa4mp,
    /// `POST /oauth/certificate/`: `certificate_request` with a bearer token;
    /// `text/plain` answers and errors, 403 for token problems, like the
    /// ESGF SLCS server (django-oauth-toolkit).
    Esgf,
}

impl Dialect {
    fn csr_field(self) -> &'static str {
        match self {
            Self::Oa4mp => "certreq",
            Self::Slcs | Self::Esgf => "certificate_request",
        }
    }

    fn lifetime_field(self) -> &'static str {
        match self {
            Self::Oa4mp => "certlifetime",
            Self::Slcs | Self::Esgf => "lifetime",
        }
    }
}

type PeerCerts = Option<axum::Extension<PeerCertificates>>;

#[utoipa::path(
    post, path = "/certificate", tag = "certificates",
    request_body(content(
        (super::openapi::CertificateForm = "application/x-www-form-urlencoded"),
        (Vec<u8> = "application/pkcs10"),
    )),
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The certificate and its chain: PEM, or JSON with `Accept: application/json`. `Slcs-Serial` names the serial.", content(
            (String = "application/x-pem-file"),
            (super::certificate::JsonCertificate = "application/json"),
        ), headers(("Slcs-Serial" = String, description = "The certificate's serial, hex."))),
        (status = "4XX", description = "RFC 6750 errors (401 `invalid_token`, 403 `insufficient_scope` or `access_denied`), 400 `invalid_request`, 415, 429 `quota_exceeded` or `too_many_requests` with `Retry-After`.", body = super::error::ErrorBody),
        (status = "5XX", description = "`server_error`, or 503 `temporarily_unavailable` with `Retry-After`.", body = super::error::ErrorBody),
    ),
)]
pub(super) async fn slcs(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    certs: PeerCerts,
    uri: Uri,
    body: Bytes,
) -> Response {
    endpoint(Dialect::Slcs, state, peer, headers, certs, uri, body).await
}

#[utoipa::path(
    post, path = "/oauth2/getcert", tag = "certificates",
    request_body(content = super::openapi::GetcertForm, content_type = "application/x-www-form-urlencoded"),
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The certificate and its chain, PEM (as OA4MP answers).", content_type = "text/plain", body = String),
        (status = "4XX", description = "As at `/certificate`.", body = super::error::ErrorBody),
        (status = "5XX", description = "`server_error`, or 503 `temporarily_unavailable`.", body = super::error::ErrorBody),
    ),
)]
pub(super) async fn oa4mp(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    certs: PeerCerts,
    uri: Uri,
    body: Bytes,
) -> Response {
    endpoint(Dialect::Oa4mp, state, peer, headers, certs, uri, body).await
}

#[utoipa::path(
    post, path = "/oauth/certificate/", tag = "certificates",
    request_body(content = super::openapi::CertificateForm, content_type = "application/x-www-form-urlencoded"),
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The certificate and its chain, PEM (as the ESGF SLCS server answers).", content_type = "text/plain", body = String),
        (status = "4XX", description = "Certificate refusals as plain text (403 for token problems, as the ESGF server); client-authentication and limit errors as OAuth JSON.", content(
            (String = "text/plain"),
            (super::error::ErrorBody = "application/json"),
        )),
        (status = "5XX", description = "`server_error`, or 503 `temporarily_unavailable`.", content(
            (String = "text/plain"),
            (super::error::ErrorBody = "application/json"),
        )),
    ),
)]
pub(super) async fn esgf(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    certs: PeerCerts,
    uri: Uri,
    body: Bytes,
) -> Response {
    endpoint(Dialect::Esgf, state, peer, headers, certs, uri, body).await
}

async fn endpoint(
    dialect: Dialect,
    State(state): State<AppState>,
    ConnectInfo(_peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    certs: PeerCerts,
    uri: Uri,
    body: Bytes,
) -> Response {
    let wants_json = dialect == Dialect::Slcs && accepts_json(&headers);
    match issue(
        dialect,
        &state,
        &headers,
        certs.as_ref().map(|e| &e.0),
        &uri,
        &body,
    )
    .await
    {
        Ok(issued) => answer(dialect, wants_json, &issued),
        Err(error) => CertificateFailure { dialect, error }.into_response(),
    }
}

/// What a request carried, read per dialect.
struct Parsed {
    token: String,
    csr: Vec<u8>,
    lifetime: Option<u64>,
    presenter_form: OAuthForm,
}

async fn issue(
    dialect: Dialect,
    state: &AppState,
    headers: &HeaderMap,
    peer_certificates: Option<&PeerCertificates>,
    uri: &Uri,
    body: &[u8],
) -> Result<Issued, EndpointError> {
    let parsed = parse(dialect, headers, uri, body)?;
    let now = state.inner.clock.now();
    let presenter = presenter(
        state,
        headers,
        peer_certificates,
        &parsed.presenter_form,
        now,
    )
    .await?;
    let request = CertificateRequest {
        token: &parsed.token,
        presenter: presenter.as_ref(),
        csr: &parsed.csr,
        lifetime_secs: parsed.lifetime,
    };
    Ok(state.inner.certificates.issue(&request, now).await?)
}

fn parse(
    dialect: Dialect,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<Parsed, EndpointError> {
    // RFC 6750 §2.3 / RFC 9700 §4.3: a token in the URL ends up in logs and
    // Referer headers; it is refused, not merely ignored (ATTACKS RS-02).
    if let Some(query) = uri.query() {
        let query = OAuthForm::parse(query.as_bytes())
            .map_err(|e| EndpointError::InvalidRequest(e.to_string()))?;
        if query.get("access_token").is_some() {
            return Err(EndpointError::InvalidRequest(
                "an access token in the URL is refused (RFC 6750 §2.3); send it in the Authorization header".into(),
            ));
        }
    }
    let header_token = match bearer_token(headers) {
        Ok(token) => token.map(str::to_owned),
        Err(_) => {
            return Err(EndpointError::InvalidRequest(
                "the Authorization header is repeated or not text".into(),
            ));
        }
    };
    let content_type = media_type(headers);
    let (form, raw_csr) = match content_type.as_deref() {
        Some("application/x-www-form-urlencoded") => (
            OAuthForm::parse(body).map_err(|e| EndpointError::InvalidRequest(e.to_string()))?,
            None,
        ),
        Some("application/pkcs10") if dialect == Dialect::Slcs => {
            (OAuthForm::default(), Some(decode_csr_bytes(body)?))
        }
        _ => {
            return Err(EndpointError::UnsupportedMediaType(match dialect {
                Dialect::Slcs => {
                    "send application/x-www-form-urlencoded (certificate_request) or application/pkcs10"
                }
                Dialect::Oa4mp | Dialect::Esgf => "send application/x-www-form-urlencoded",
            }));
        }
    };
    // RFC 6750 §2: one token, one method (ATTACKS RS-01).
    let token = match (header_token, form.get("access_token")) {
        (Some(_), Some(_)) => {
            return Err(EndpointError::InvalidRequest(
                "the request carries two access tokens (header and body); send one (RFC 6750 §2)"
                    .into(),
            ));
        }
        (Some(token), None) => token,
        (None, Some(token)) => token.to_owned(),
        (None, None) => return Err(EndpointError::NoToken),
    };
    let csr = match raw_csr {
        Some(csr) => csr,
        None => {
            let field = dialect.csr_field();
            let value = form.get(field).ok_or_else(|| {
                EndpointError::InvalidRequest(format!(
                    "{field} is required: a PKCS#10 CSR, PEM or base64 DER"
                ))
            })?;
            decode_csr_text(value)?
        }
    };
    let lifetime = form
        .get(dialect.lifetime_field())
        .map(|value| parse_lifetime(dialect.lifetime_field(), value))
        .transpose()?;
    Ok(Parsed {
        token,
        csr,
        lifetime,
        presenter_form: form,
    })
}

/// The client presenting the token, if the request carries client
/// credentials (a shared token needs them; OA4MP clients always send them).
async fn presenter(
    state: &AppState,
    headers: &HeaderMap,
    peer_certificates: Option<&PeerCertificates>,
    form: &OAuthForm,
    now: time::OffsetDateTime,
) -> Result<Option<AuthenticatedClient>, EndpointError> {
    let mut client_headers = HeaderMap::new();
    let basic = headers.get(header::AUTHORIZATION).filter(|v| {
        v.as_bytes()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"basic "))
    });
    if let Some(value) = basic {
        client_headers.insert(header::AUTHORIZATION, value.clone());
    }
    let carries = basic.is_some()
        || [
            "client_id",
            "client_secret",
            "client_assertion",
            "client_assertion_type",
        ]
        .iter()
        .any(|p| form.get(p).is_some());
    if !carries {
        return Ok(None);
    }
    let presented = presented_credentials(&client_headers, form, peer_certificates)?;
    let client = state
        .inner
        .tokens
        .authenticate(&presented, "/certificate", now)
        .await
        .map_err(|e| OAuthError::from_client_auth(e, presented.used_basic()))?;
    Ok(Some(client))
}

/// `certificate_request` / `certreq`: PEM, or base64 (standard or URL-safe
/// alphabet, padded or not, line breaks allowed) of DER or of PEM.
fn decode_csr_text(value: &str) -> Result<Vec<u8>, EndpointError> {
    let trimmed = value.trim();
    if trimmed.starts_with("-----BEGIN") {
        return Ok(trimmed.as_bytes().to_vec());
    }
    let compact: String = trimmed
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient);
    standard
        .decode(&compact)
        .or_else(|_| url_safe.decode(&compact))
        .map_err(|_| {
            EndpointError::InvalidRequest(
                "the certificate request is neither PEM nor base64 (standard or URL-safe alphabet)"
                    .into(),
            )
        })
}

/// An `application/pkcs10` body: DER (RFC 5967), or the same as text.
fn decode_csr_bytes(body: &[u8]) -> Result<Vec<u8>, EndpointError> {
    if body.first() == Some(&0x30) {
        return Ok(body.to_vec());
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        EndpointError::InvalidRequest("the application/pkcs10 body is neither DER nor text".into())
    })?;
    decode_csr_text(text)
}

/// A lifetime in whole seconds: digits only (no sign, fraction, unit or
/// exponent), within `u64` (ATTACKS CERT-04: malformed values are 400).
fn parse_lifetime(field: &str, value: &str) -> Result<u64, EndpointError> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::InvalidRequest(format!(
            "{field} must be a whole number of seconds"
        )));
    }
    value
        .parse()
        .map_err(|_| EndpointError::InvalidRequest(format!("{field} is out of range")))
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// A certificate as JSON (`Accept: application/json`).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct JsonCertificate<'a> {
    certificate: &'a str,
    chain: &'a [String],
    serial: String,
    not_before: String,
    not_after: String,
    subject: &'a str,
    lifetime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifetime_note: Option<&'a str>,
}

fn answer(dialect: Dialect, wants_json: bool, issued: &Issued) -> Response {
    let cert = &issued.certificate;
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let mut response = if wants_json {
        axum::Json(JsonCertificate {
            certificate: &cert.pem,
            chain: &issued.chain,
            serial: cert.serial.to_hex(),
            not_before: rfc3339(cert.not_before),
            not_after: rfc3339(cert.not_after),
            subject: &cert.subject,
            lifetime: issued.lifetime_secs,
            lifetime_note: issued.shortened.as_deref(),
        })
        .into_response()
    } else {
        let mut pem = cert.pem.clone();
        for link in &issued.chain {
            pem.push_str(link);
        }
        let content_type = match dialect {
            Dialect::Slcs => "application/x-pem-file",
            Dialect::Oa4mp | Dialect::Esgf => "text/plain; charset=us-ascii",
        };
        ([(header::CONTENT_TYPE, content_type)], pem).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&cert.serial.to_hex()) {
        headers.insert("slcs-serial", value);
    }
    if let Some(note) = issued.shortened.as_deref()
        && let Ok(value) = HeaderValue::from_str(note)
    {
        headers.insert("slcs-lifetime-note", value);
    }
    response
}

/// `GET /certificate/status/{serial}`: for registered clients (relying
/// parties authenticate like at `/introspect`) and the admin token.
#[utoipa::path(
    get, path = "/certificate/status/{serial}", tag = "certificates",
    params(("serial" = String, Path, description = "The serial, hex.")),
    security(("client_basic" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "`good`, `revoked`, `expired` or `unknown`.", body = crate::certificate::CertificateStatus),
    ),
)]
pub(super) async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    certs: PeerCerts,
    serial: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let now = state.inner.clock.now();
    let is_admin = bearer_token(&headers)
        .ok()
        .flatten()
        .is_some_and(|token| state.inner.admin.verify(token));
    if !is_admin {
        let presented = presented_credentials(
            &headers,
            &OAuthForm::default(),
            certs.as_ref().map(|e| &e.0),
        )
        .map_err(|_| {
            Problem::unauthorized(
                "authenticate as a registered client (HTTP Basic) or with the admin token",
            )
        })?;
        state
            .inner
            .tokens
            .authenticate(&presented, "/certificate/status", now)
            .await
            .map_err(|_| Problem::unauthorized("client authentication failed"))?;
    }
    let serial = super::extract::serial_from_path(serial)?;
    let status = state
        .inner
        .certificates
        .status(&serial, now)
        .await
        .map_err(Problem::unavailable)?;
    Ok(axum::Json(status).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_04_lifetimes_are_whole_seconds() {
        assert_eq!(parse_lifetime("lifetime", "3600").unwrap(), 3600);
        assert_eq!(parse_lifetime("lifetime", "0").unwrap(), 0);
        for bad in [
            "-1",
            "1.5",
            "12h",
            "1e3",
            "+5",
            " 5",
            "",
            "99999999999999999999999",
        ] {
            assert!(parse_lifetime("lifetime", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn csr_text_in_every_accepted_encoding() {
        let der = vec![0x30u8, 0x82, 0x01, 0xfb, 0xff, 0xfe];
        let standard = base64::engine::general_purpose::STANDARD.encode(&der);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der);
        assert_eq!(decode_csr_text(&standard).unwrap(), der);
        assert_eq!(decode_csr_text(&url).unwrap(), der);
        let wrapped = format!("{}\n{}", &standard[..4], &standard[4..]);
        assert_eq!(decode_csr_text(&wrapped).unwrap(), der);
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(decode_csr_text(pem).unwrap(), pem.trim().as_bytes());
        assert!(decode_csr_text("not base64 !").is_err());
        assert_eq!(decode_csr_bytes(&der).unwrap(), der);
    }
}
