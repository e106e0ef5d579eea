//! For relying parties: accepting slcs certificates over mutual TLS and
//! reading whom they name and on whose behalf they act.
//!
//! A relying party (an OPeNDAP or WPS server, say) trusts the slcs CA for
//! client certificates and nothing else, lets its TLS stack validate the
//! client's chain (RFC 5280 §6 path validation, done here by rustls'
//! `WebPkiClientVerifier`), and only then reads the certificate:
//!
//! ```no_run
//! # fn demo(ca_pem: &[u8], leaf_der: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use slcs::relying_party::{client_verifier, read_peer};
//!
//! // At start-up: client certificates must chain to the slcs CA.
//! let verifier = client_verifier(ca_pem)?;
//! // ... hand `verifier` to rustls::ServerConfig::builder().with_client_cert_verifier ...
//!
//! // Per connection, after the handshake: the leaf rustls verified.
//! let peer = read_peer(leaf_der, &[1, 3, 6, 1, 4, 1, 32473, 1])?;
//! println!("{} acting for {:?} via {:?}", peer.subject_dn, peer.principal(), peer.chain());
//! # Ok(())
//! # }
//! ```
//!
//! [`read_peer`] does not repeat what the TLS stack validated (chain,
//! signature, validity, extended key usage): it trusts its input only
//! because the handshake accepted it. What it does refuse is a certificate
//! it cannot read unambiguously (a malformed provenance extension, or the
//! extension twice: RFC 5280 §4.2 allows each extension once, and
//! x509-parser would silently return the first) and a CA certificate, which
//! OpenSSL-based servers (nginx, Apache httpd, Python's `ssl`) accept as a
//! TLS client certificate although rustls does not.
//!
//! [`server_config`], [`serve`] and [`whoami_router`] are a small, complete
//! mTLS server built from these pieces; `examples/relying_party.rs` runs it
//! and `docs/relying-parties.md` shows the same with nginx, Apache httpd and
//! Python.
//!
//! This module must never weaken client authentication: there is no
//! "optional client certificate" mode here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::inspect::{name_to_rfc4514, oid_content_octets};
use crate::pki::provenance::{DelegationProvenance, DelegationStep, ProvenanceError};

/// The provenance OID of slcs's built-in development profile
/// (`certs/profile.toml`). Production deployments use their own OID: ask the
/// slcs operator for it.
pub const DEVELOPMENT_PROVENANCE_OID: &str = "1.3.6.1.4.1.32473.1";

/// Subjects of service accounts start with this (`sub = service:<client_id>`);
/// slcs never gives a user a subject in this namespace.
pub const SERVICE_SUBJECT_PREFIX: &str = "service:";

/// How long [`serve`] waits for a client to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`serve`] waits for a request head once a connection is open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a verified client certificate names, and the delegation chain it
/// carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// The certificate's subject, RFC 4514 (most specific RDN first), e.g.
    /// `CN=harvester,OU=Service Accounts,O=slcs development`.
    pub subject_dn: String,
    /// The certificate's issuer, RFC 4514.
    pub issuer_dn: String,
    /// The serial number, upper-case hexadecimal without separators (as
    /// `openssl x509 -serial` prints it and slcs logs it).
    pub serial_hex: String,
    /// notBefore.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The decoded provenance extension; `None` when the certificate has
    /// none (for instance a certificate of another deployment's profile, or
    /// one looked up with the wrong OID).
    pub provenance: Option<DelegationProvenance>,
}

impl PeerIdentity {
    /// On whose behalf the certificate acts: the provenance `subject` (the
    /// OAuth `sub` of the user or service account), if the certificate
    /// carries provenance.
    #[must_use]
    pub fn principal(&self) -> Option<&str> {
        self.provenance.as_ref().map(|p| p.subject.as_str())
    }

    /// Whether the principal is a service account (its subject is in the
    /// `service:` namespace) rather than a person.
    #[must_use]
    pub fn is_service_account(&self) -> bool {
        self.principal()
            .is_some_and(|s| s.starts_with(SERVICE_SUBJECT_PREFIX))
    }

    /// The client ids of the delegation chain, root client first and the
    /// presenter last; empty without provenance.
    #[must_use]
    pub fn chain(&self) -> Vec<&str> {
        self.provenance
            .iter()
            .flat_map(|p| p.steps.iter().map(|s| s.client_id.as_str()))
            .collect()
    }

    /// The last step: the client that obtained this certificate and is
    /// presenting it.
    #[must_use]
    pub fn presenter(&self) -> Option<&DelegationStep> {
        self.provenance
            .as_ref()
            .and_then(DelegationProvenance::presenter)
    }
}

/// Why a peer certificate could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelyingPartyError {
    /// The bytes are not a DER X.509 certificate (x509-parser's message).
    #[error("peer certificate is not a DER X.509 certificate: {0}")]
    NotACertificate(String),
    /// The certificate is a CA certificate (basicConstraints `cA` TRUE), not
    /// an end entity. slcs never issues one; rustls refuses it in the
    /// handshake, OpenSSL does not.
    #[error("peer certificate is a CA certificate, not a client certificate")]
    CaCertificate,
    /// Bytes follow the certificate's DER encoding.
    #[error("trailing data after the peer certificate")]
    TrailingData,
    /// The provenance OID passed in is not a usable OID.
    #[error("invalid provenance OID: {0}")]
    BadOid(String),
    /// The provenance extension appears more than once (RFC 5280 §4.2: "A
    /// certificate MUST NOT include more than one instance of a particular
    /// extension").
    #[error("the provenance extension {oid} appears {count} times")]
    DuplicateProvenance {
        /// The OID, dotted.
        oid: String,
        /// How many times it appears.
        count: usize,
    },
    /// The provenance extension is present but does not decode.
    #[error("the provenance extension {oid} is malformed: {source}")]
    MalformedProvenance {
        /// The OID, dotted.
        oid: String,
        /// What the decoder refused.
        #[source]
        source: ProvenanceError,
    },
}

/// Why a TLS configuration for a relying party could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The CA PEM has no readable CERTIFICATE block.
    #[error("CA certificate: {0}")]
    CaCertificate(String),
    /// The server's own certificate chain cannot be read.
    #[error("server certificate: {0}")]
    ServerCertificate(String),
    /// The server's private key cannot be read.
    #[error("server private key: {0}")]
    ServerKey(String),
    /// rustls refused the client-certificate verifier.
    #[error("client-certificate verifier: {0}")]
    Verifier(String),
    /// rustls refused the configuration (e.g. a key that does not match the
    /// certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads who a client certificate names and the delegation chain it
/// carries.
///
/// `cert_der` is the end-entity certificate **after** the TLS stack verified
/// it against the slcs CA (with rustls: the first entry of
/// `peer_certificates()`); this function checks no signature, validity or
/// key usage. `provenance_oid` is the deployment's provenance OID as arcs
/// (`[1, 3, 6, 1, 4, 1, 32473, 1]` for the development profile). The
/// extension is looked up by its encoded OID bytes.
///
/// # Errors
///
/// [`RelyingPartyError::NotACertificate`] or
/// [`RelyingPartyError::TrailingData`] for bytes that are not exactly one
/// certificate; [`RelyingPartyError::CaCertificate`] for a CA certificate;
/// [`RelyingPartyError::BadOid`] for an unusable OID;
/// [`RelyingPartyError::DuplicateProvenance`] when the extension appears more
/// than once; [`RelyingPartyError::MalformedProvenance`] when it does not
/// decode. A certificate without the extension is not an error: its
/// `provenance` is `None`.
pub fn read_peer(
    cert_der: &[u8],
    provenance_oid: &[u64],
) -> Result<PeerIdentity, RelyingPartyError> {
    let dotted = provenance_oid
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let wanted = oid_content_octets(&dotted).map_err(RelyingPartyError::BadOid)?;
    let (rest, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| RelyingPartyError::NotACertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RelyingPartyError::TrailingData);
    }
    if cert.is_ca() {
        return Err(RelyingPartyError::CaCertificate);
    }
    let mut matching = cert
        .extensions()
        .iter()
        .filter(|ext| ext.oid.as_bytes() == wanted.as_slice());
    let provenance = match (matching.next(), matching.count()) {
        (None, _) => None,
        (Some(ext), 0) => Some(DelegationProvenance::from_der(ext.value).map_err(|source| {
            RelyingPartyError::MalformedProvenance {
                oid: dotted.clone(),
                source,
            }
        })?),
        (Some(_), others) => {
            return Err(RelyingPartyError::DuplicateProvenance {
                oid: dotted,
                count: others + 1,
            });
        }
    };
    Ok(PeerIdentity {
        subject_dn: name_to_rfc4514(cert.subject()),
        issuer_dn: name_to_rfc4514(cert.issuer()),
        serial_hex: hex::encode_upper(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        provenance,
    })
}

/// A rustls client-certificate verifier that **requires** a client
/// certificate chaining to the CA certificate(s) in `ca_pem` and to nothing
/// else (no system roots).
///
/// Every CERTIFICATE block of `ca_pem` becomes a trust anchor, so pass the
/// slcs CA alone (`GET /ca.pem`), or the old and the new CA during a CA
/// change. The verifier does RFC 5280 §6 path validation with rustls-webpki:
/// signature, validity at the current time, basicConstraints (a CA
/// certificate is refused as an end entity), and the extended key usage
/// (`id-kp-clientAuth` when the certificate has an EKU extension; slcs
/// certificates always do). It uses the aws-lc-rs provider, as the rest of
/// slcs does.
///
/// # Errors
///
/// [`SetupError::CaCertificate`] if `ca_pem` has no usable certificate;
/// [`SetupError::Verifier`] if rustls refuses the roots.
pub fn client_verifier(ca_pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, SetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    client_verifier_with_provider(ca_pem, provider)
}

/// A rustls server configuration for a relying party: TLS 1.2 and 1.3 with
/// rustls' safe defaults, the aws-lc-rs provider, ALPN `http/1.1`, the
/// server's own chain and key (PEM), and client certificates required from
/// the CA in `ca_pem` (see [`client_verifier`]).
///
/// # Errors
///
/// Any [`SetupError`].
pub fn server_config(
    ca_pem: &[u8],
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, SetupError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| SetupError::ServerCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(SetupError::ServerCertificate("no CERTIFICATE block".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| SetupError::ServerKey(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = client_verifier_with_provider(ca_pem, Arc::clone(&provider))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verified client certificate (end entity) of the connection a request
/// arrived on. [`serve`] inserts it into every request's extensions; read it
/// in a handler with `Extension<ClientCertificate>`.
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Arc<CertificateDer<'static>>);

/// Serves `app` over TLS with `tls` on `listener` until `shutdown`
/// completes (connections already open are not drained).
///
/// Each connection gets [`HANDSHAKE_TIMEOUT`] to complete the handshake; a
/// failed handshake (no client certificate, a certificate rustls refuses) is
/// logged and the connection dropped before any HTTP is read. Requests then
/// carry the client's end-entity certificate as a [`ClientCertificate`]
/// extension. HTTP/1.1 only, with [`HEADER_READ_TIMEOUT`] for request heads.
///
/// This is a small server for examples and tests: it has no connection cap
/// and no idle timeout. A production relying party typically terminates TLS
/// in its existing web server (see `docs/relying-parties.md`).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| ClientCertificate(Arc::new(leaf.clone().into_owned())));
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    if let Some(certificate) = &certificate {
                        request.extensions_mut().insert(certificate.clone());
                    }
                    app.clone().oneshot(request)
                });
            if let Err(error) = http.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// A router with one route, `GET /whoami`, answering what [`read_peer`]
/// reads from the client certificate as [`WhoAmI`] JSON.
///
/// Refusals use the `{"error", "error_description"}` shape of slcs: 401
/// `client_certificate_required` when the connection has no client
/// certificate (a server not built with [`server_config`]), 403
/// `invalid_client_certificate` when [`read_peer`] refuses the certificate.
pub fn whoami_router(provenance_oid: Vec<u64>) -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .with_state(Arc::<[u64]>::from(provenance_oid))
}

/// The `GET /whoami` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WhoAmI {
    /// [`PeerIdentity::subject_dn`].
    pub subject_dn: String,
    /// [`PeerIdentity::serial_hex`].
    pub serial: String,
    /// notAfter, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// [`PeerIdentity::principal`].
    pub principal: Option<String>,
    /// [`PeerIdentity::is_service_account`].
    pub service_account: bool,
    /// The delegation steps, root client first.
    pub chain: Vec<WhoAmIStep>,
    /// The chain in one line: `alice ⇐ portal ⇐ wps ⇐ broker-a`.
    pub summary: Option<String>,
    /// The presenter's client id.
    pub presenter: Option<String>,
    /// The root grant id (the audit and revocation handle at slcs).
    pub grant_id: Option<String>,
    /// The `jti` of the access token the certificate was issued for.
    pub token_id: Option<String>,
}

/// One step of [`WhoAmI::chain`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WhoAmIStep {
    /// The client acting at this step.
    pub client_id: String,
    /// How it got its token (`authorization_code`,
    /// `urn:ietf:params:oauth:grant-type:token-exchange`, `certificate` for
    /// the presenter, …).
    pub grant_type: String,
    /// Space-separated scope.
    pub scope: String,
    /// When, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// How the client authenticated to slcs.
    pub client_auth: String,
}

impl From<&PeerIdentity> for WhoAmI {
    fn from(peer: &PeerIdentity) -> Self {
        let provenance = peer.provenance.as_ref();
        Self {
            subject_dn: peer.subject_dn.clone(),
            serial: peer.serial_hex.clone(),
            not_after: peer.not_after,
            principal: peer.principal().map(str::to_owned),
            service_account: peer.is_service_account(),
            summary: provenance.map(DelegationProvenance::chain_summary),
            chain: provenance
                .iter()
                .flat_map(|p| p.steps.iter())
                .map(|step| WhoAmIStep {
                    client_id: step.client_id.clone(),
                    grant_type: step.grant_type.clone(),
                    scope: step.scope.clone(),
                    time: step.time,
                    client_auth: step.client_auth.clone(),
                })
                .collect(),
            presenter: peer.presenter().map(|s| s.client_id.clone()),
            grant_id: provenance.map(|p| p.grant_id.clone()),
            token_id: provenance.map(|p| p.token_id.clone()),
        }
    }
}

// ---------------------------------------------------------------------------

fn client_verifier_with_provider(
    ca_pem: &[u8],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| SetupError::CaCertificate(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| SetupError::CaCertificate(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(SetupError::CaCertificate("no CERTIFICATE block".into()));
    }
    // No `allow_unauthenticated()`: a client without a certificate fails the
    // handshake (RFC 8705 §2 leaves it to the server whether a certificate
    // is required; a relying party that authorizes by certificate must).
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| SetupError::Verifier(e.to_string()))
}

async fn whoami(
    State(provenance_oid): State<Arc<[u64]>>,
    certificate: Option<Extension<ClientCertificate>>,
) -> Response {
    let Some(Extension(ClientCertificate(certificate))) = certificate else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "client_certificate_required",
            "this endpoint requires a client certificate".into(),
        );
    };
    match read_peer(&certificate, &provenance_oid) {
        Ok(peer) => axum::Json(WhoAmI::from(&peer)).into_response(),
        Err(error) => {
            tracing::info!(%error, "client certificate refused");
            refusal(
                StatusCode::FORBIDDEN,
                "invalid_client_certificate",
                error.to_string(),
            )
        }
    }
}

fn refusal(status: StatusCode, error: &'static str, description: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "error": error,
            "error_description": description,
        })),
    )
        .into_response()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use crate::pki::provenance::DelegationStep;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair,
    };
    use rustls_pki_types::UnixTime;
    use time::macros::datetime;

    const OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 1];

    fn provenance(subject: &str) -> DelegationProvenance {
        let at = datetime!(2026-03-01 10:00:00 UTC);
        let step = |client: &str, grant: &str| DelegationStep {
            client_id: client.into(),
            client_name: None,
            grant_type: grant.into(),
            scope: "opendap:read".into(),
            time: at,
            client_auth: "client_secret_basic".into(),
            approval_id: None,
        };
        DelegationProvenance {
            issuer: "https://slcs.example".into(),
            subject: subject.into(),
            auth_time: at,
            auth_context: None,
            grant_id: "grant-1".into(),
            steps: vec![
                step("portal", "authorization_code"),
                step("broker", "certificate"),
            ],
            token_id: "jti-1".into(),
        }
    }

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
        der: Vec<u8>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = datetime!(2026-01-01 00:00:00 UTC);
        params.not_after = datetime!(2027-01-01 00:00:00 UTC);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate valid for all of March 2026.
    fn leaf_params(extensions: Vec<CustomExtension>) -> CertificateParams {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "slcs test");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "Service Accounts");
        params
            .distinguished_name
            .push(DnType::CommonName, "harvester");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = datetime!(2026-03-01 00:00:00 UTC);
        params.not_after = datetime!(2026-04-01 00:00:00 UTC);
        params.custom_extensions = extensions;
        params
    }

    fn sign(params: &CertificateParams, ca: &Ca) -> Vec<u8> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    }

    fn provenance_extension(value: Vec<u8>) -> CustomExtension {
        CustomExtension::from_oid_content(OID, value)
    }

    #[test]
    fn reads_subject_serial_validity_and_chain() {
        let ca = ca("test CA");
        let der = sign(
            &leaf_params(vec![provenance_extension(
                provenance("service:harvester").to_der().unwrap(),
            )]),
            &ca,
        );
        let peer = read_peer(&der, OID).unwrap();
        let (_, parsed) = X509Certificate::from_der(&der).unwrap();
        // rcgen orders the RDNs its own way; the engine-issued subjects are
        // checked exactly in tests/it/relying_party.rs.
        assert_eq!(peer.subject_dn, name_to_rfc4514(parsed.subject()));
        assert!(peer.subject_dn.contains("CN=harvester"));
        assert_eq!(peer.issuer_dn, "CN=test CA");
        assert_eq!(peer.serial_hex, hex::encode_upper(parsed.raw_serial()));
        assert_eq!(peer.not_before, datetime!(2026-03-01 00:00:00 UTC));
        assert_eq!(peer.not_after, datetime!(2026-04-01 00:00:00 UTC));
        assert_eq!(peer.provenance, Some(provenance("service:harvester")));
        assert_eq!(peer.principal(), Some("service:harvester"));
        assert!(peer.is_service_account());
        assert_eq!(peer.chain(), ["portal", "broker"]);
        assert_eq!(peer.presenter().unwrap().client_id, "broker");

        let who = WhoAmI::from(&peer);
        assert_eq!(who.presenter.as_deref(), Some("broker"));
        assert_eq!(who.grant_id.as_deref(), Some("grant-1"));
        let json = serde_json::to_value(&who).unwrap();
        assert_eq!(json["not_after"], "2026-04-01T00:00:00Z");
        assert_eq!(json["chain"][0]["time"], "2026-03-01T10:00:00Z");
        assert_eq!(json["chain"][1]["grant_type"], "certificate");
    }

    #[test]
    fn a_person_is_not_a_service_account() {
        let ca = ca("test CA");
        let der = sign(
            &leaf_params(vec![provenance_extension(
                provenance("user-7").to_der().unwrap(),
            )]),
            &ca,
        );
        let peer = read_peer(&der, OID).unwrap();
        assert_eq!(peer.principal(), Some("user-7"));
        assert!(!peer.is_service_account());
    }

    #[test]
    fn no_extension_is_no_provenance_not_an_error() {
        let ca = ca("test CA");
        let der = sign(&leaf_params(Vec::new()), &ca);
        let peer = read_peer(&der, OID).unwrap();
        assert_eq!(peer.provenance, None);
        assert_eq!(peer.principal(), None);
        assert!(!peer.is_service_account());
        assert!(peer.chain().is_empty());
        assert!(peer.presenter().is_none());
        let who = WhoAmI::from(&peer);
        assert!(who.chain.is_empty() && who.token_id.is_none());

        // The extension under another OID is not found under this one.
        let der = sign(
            &leaf_params(vec![CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 32473, 2],
                provenance("user-7").to_der().unwrap(),
            )]),
            &ca,
        );
        assert_eq!(read_peer(&der, OID).unwrap().provenance, None);
    }

    #[test]
    fn a_malformed_extension_is_an_error() {
        let ca = ca("test CA");
        let mut trailing = provenance("user-7").to_der().unwrap();
        trailing.push(0);
        let mut version_2 = provenance("user-7").to_der().unwrap();
        // SEQUENCE header (4 octets for this length), then INTEGER 02 01 01.
        let version_at = version_2
            .windows(3)
            .position(|w| w == [0x02, 0x01, 0x01])
            .unwrap();
        version_2[version_at + 2] = 2;
        for value in [Vec::new(), b"not DER".to_vec(), trailing, version_2] {
            let der = sign(&leaf_params(vec![provenance_extension(value)]), &ca);
            let error = read_peer(&der, OID).unwrap_err();
            assert!(
                matches!(error, RelyingPartyError::MalformedProvenance { ref oid, .. } if oid == "1.3.6.1.4.1.32473.1"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_duplicated_extension_is_an_error() {
        let ca = ca("test CA");
        let value = provenance("user-7").to_der().unwrap();
        let der = sign(
            &leaf_params(vec![
                provenance_extension(value.clone()),
                provenance_extension(value),
            ]),
            &ca,
        );
        assert_eq!(
            read_peer(&der, OID).unwrap_err(),
            RelyingPartyError::DuplicateProvenance {
                oid: "1.3.6.1.4.1.32473.1".into(),
                count: 2
            }
        );
    }

    #[test]
    fn not_a_certificate_trailing_data_and_bad_oids_are_errors() {
        assert!(matches!(
            read_peer(b"\x30\x03\x02\x01\x01", OID),
            Err(RelyingPartyError::NotACertificate(_))
        ));
        let ca = ca("test CA");
        let mut der = sign(&leaf_params(Vec::new()), &ca);
        assert!(matches!(
            read_peer(&der, &[1]),
            Err(RelyingPartyError::BadOid(_))
        ));
        assert!(matches!(
            read_peer(&der, &[1, 3, 1 << 31]),
            Err(RelyingPartyError::BadOid(_))
        ));
        der.push(0);
        assert_eq!(
            read_peer(&der, OID).unwrap_err(),
            RelyingPartyError::TrailingData
        );
    }

    #[test]
    fn a_ca_certificate_is_an_error() {
        let ca = ca("test CA");
        let mut params = leaf_params(Vec::new());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert_eq!(
            read_peer(&sign(&params, &ca), OID).unwrap_err(),
            RelyingPartyError::CaCertificate
        );
        assert_eq!(
            read_peer(&ca.der, OID).unwrap_err(),
            RelyingPartyError::CaCertificate
        );
    }

    #[test]
    fn the_development_oid_is_the_builtin_profiles() {
        let profile = crate::pki::profile::Profile::builtin().unwrap();
        assert_eq!(profile.provenance_oid_text, DEVELOPMENT_PROVENANCE_OID);
        assert_eq!(profile.provenance_oid, OID);
    }

    // --- client_verifier: RFC 5280 §6 path validation by rustls ----------

    fn verify(ca_pem: &str, leaf: &[u8], at: OffsetDateTime) -> Result<(), rustls::Error> {
        let verifier = client_verifier(ca_pem.as_bytes()).unwrap();
        let when = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(at.unix_timestamp()).unwrap(),
        ));
        verifier
            .verify_client_cert(&CertificateDer::from(leaf.to_vec()), &[], when)
            .map(|_| ())
    }

    const MID_MARCH: OffsetDateTime = datetime!(2026-03-15 12:00:00 UTC);

    #[test]
    fn verifier_requires_a_certificate_from_the_ca() {
        let slcs = ca("slcs CA");
        let verifier = client_verifier(slcs.pem.as_bytes()).unwrap();
        assert!(verifier.client_auth_mandatory());
        assert!(verifier.offer_client_auth());
        assert_eq!(verifier.root_hint_subjects().len(), 1);

        let good = sign(&leaf_params(Vec::new()), &slcs);
        verify(&slcs.pem, &good, MID_MARCH).unwrap();

        // Without any EKU extension a certificate is valid for every purpose
        // (RFC 5280 §4.2.1.12), for rustls as for OpenSSL; slcs always sets
        // clientAuth. docs/relying-parties.md states this.
        let mut no_eku = leaf_params(Vec::new());
        no_eku.extended_key_usages = Vec::new();
        verify(&slcs.pem, &sign(&no_eku, &slcs), MID_MARCH).unwrap();
    }

    /// ATTACKS RP-01, checked on the verifier itself; `tests/it/relying_party.rs`
    /// repeats it over real TLS handshakes.
    #[test]
    fn rp_01_verifier_refuses_what_an_rp_must_refuse() {
        use rustls::CertificateError as E;
        let slcs = ca("slcs CA");
        let params = leaf_params(Vec::new());
        let good = sign(&params, &slcs);
        let cert_error = |r: Result<(), rustls::Error>| match r {
            Err(rustls::Error::InvalidCertificate(e)) => e,
            other => panic!("expected a certificate error, got {other:?}"),
        };

        // Expired and not yet valid.
        assert!(matches!(
            cert_error(verify(&slcs.pem, &good, datetime!(2026-04-02 00:00:00 UTC))),
            E::ExpiredContext { .. } | E::Expired
        ));
        assert!(matches!(
            cert_error(verify(&slcs.pem, &good, datetime!(2026-02-28 00:00:00 UTC))),
            E::NotValidYetContext { .. } | E::NotValidYet
        ));

        // Same subject, another CA.
        let other = sign(&params, &ca("another CA"));
        assert_eq!(
            cert_error(verify(&slcs.pem, &other, MID_MARCH)),
            E::UnknownIssuer
        );

        // Signed by another key under the slcs CA's very name.
        let impostor = sign(&params, &ca("slcs CA"));
        assert_eq!(
            cert_error(verify(&slcs.pem, &impostor, MID_MARCH)),
            E::BadSignature
        );

        // Self-signed, with the slcs CA's name as subject and issuer.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut self_signed = leaf_params(Vec::new());
        self_signed.distinguished_name = rcgen::DistinguishedName::new();
        self_signed
            .distinguished_name
            .push(DnType::CommonName, "slcs CA");
        let self_signed = self_signed.self_signed(&key).unwrap();
        assert_eq!(
            cert_error(verify(&slcs.pem, self_signed.der(), MID_MARCH)),
            E::BadSignature
        );

        // An EKU without clientAuth.
        let mut server_only = leaf_params(Vec::new());
        server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        assert!(matches!(
            cert_error(verify(&slcs.pem, &sign(&server_only, &slcs), MID_MARCH)),
            E::InvalidPurposeContext { .. } | E::InvalidPurpose
        ));

        // A CA certificate as the end entity.
        let mut ca_true = leaf_params(Vec::new());
        ca_true.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert!(matches!(
            cert_error(verify(&slcs.pem, &sign(&ca_true, &slcs), MID_MARCH)),
            E::Other(ref e) if format!("{e:?}").contains("CaUsedAsEndEntity")
        ));
    }

    #[test]
    fn setup_errors() {
        assert!(matches!(
            client_verifier(b""),
            Err(SetupError::CaCertificate(_))
        ));
        assert!(matches!(
            client_verifier(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(SetupError::CaCertificate(_))
        ));
        let slcs = ca("slcs CA");
        assert!(matches!(
            server_config(slcs.pem.as_bytes(), b"", b""),
            Err(SetupError::ServerCertificate(_))
        ));
        assert!(matches!(
            server_config(slcs.pem.as_bytes(), slcs.pem.as_bytes(), b""),
            Err(SetupError::ServerKey(_))
        ));
        // A key that is not the certificate's.
        let stranger = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(
            server_config(
                slcs.pem.as_bytes(),
                slcs.pem.as_bytes(),
                stranger.serialize_pem().as_bytes()
            ),
            Err(SetupError::Rustls(_))
        ));
    }
}
