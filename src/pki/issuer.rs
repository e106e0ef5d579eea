//! The issuance engine: CSR + identity + provenance in, certificate out, in
//! Boulder's order.
//!
//! 1. verify the CSR (key policy, proof of possession) — [`super::csr`];
//! 2. build the certificate from the profile alone: subject from the
//!    identity, validity from policy, extensions exactly those of
//!    `docs/certificate-profile.md`;
//! 3. draw a serial and record the *intent* durably (the store refuses a
//!    serial it holds, so serials never repeat);
//! 4. sign (a [`Reserved`] certificate is consumed by value: it can be signed
//!    once), and check the result structurally against what was meant;
//! 5. record the certificate durably, and only then return it.
//!
//! A crash between 3 and 5 leaves an intent without a certificate, never a
//! certificate without a log entry. Only this module holds the CA key; its
//! type is private to `pki`.

use std::sync::Arc;

use rcgen::{
    CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca::{CaCertificate, CaError, load_ca};
use super::csr::{CsrError, VerifiedCsr, verify_csr};
use super::dn::{CertificateIdentity, DnError, SubjectName};
use super::goodkey::KeyDescription;
use super::profile::{NotAfterLimit, Profile, Validity, ValidityError};
use super::provenance::{DelegationProvenance, ProvenanceError};
use super::serial::{RandomFailure, SerialGenerator};
use crate::config::Config;
use crate::store::{IssuanceIntent, IssuanceLog, Serial, StoreError};

/// Serial draws before giving up; a collision of 136 random bits is already
/// beyond belief, so repeated ones mean a broken random source.
const SERIAL_ATTEMPTS: usize = 4;

/// What the caller (the certificate endpoint, later) asks for.
#[derive(Clone, Debug)]
pub struct IssuanceRequest {
    /// Whom the certificate names.
    pub identity: CertificateIdentity,
    /// The delegation chain to record.
    pub provenance: DelegationProvenance,
    /// Requested lifetime in seconds; `None` for the profile default.
    pub requested_lifetime_secs: Option<u64>,
    /// Upper bounds on notAfter besides the profile's (approval expiry,
    /// token expiry, client policy).
    pub not_after_limits: Vec<NotAfterLimit>,
}

/// A certificate that was issued and recorded.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// Its serial.
    pub serial: Serial,
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// RFC 4514 subject.
    pub subject: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// The certified key.
    pub key: KeyDescription,
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR or its key was refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// No subject could be built for the identity.
    #[error(transparent)]
    Subject(#[from] DnError),
    /// No acceptable validity window.
    #[error(transparent)]
    Validity(#[from] ValidityError),
    /// The provenance does not fit the format.
    #[error("delegation provenance refused: {0}")]
    Provenance(#[from] ProvenanceError),
    /// More delegation steps than the profile allows.
    #[error("delegation chain has {found} steps; the profile allows at most {max}")]
    ChainTooLong {
        /// Steps given.
        found: usize,
        /// Allowed.
        max: usize,
    },
    /// The random source failed.
    #[error(transparent)]
    Random(#[from] RandomFailure),
    /// Every serial drawn was taken.
    #[error(
        "could not draw an unused serial in {SERIAL_ATTEMPTS} attempts; the random source is suspect"
    )]
    SerialsExhausted,
    /// rcgen could not build or sign the certificate.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The signed certificate is not what was meant; it was discarded.
    #[error("issued certificate failed its self-check ({0}); it was discarded")]
    SelfCheck(&'static str),
    /// The issuance log could not record the intent or the certificate.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IssueError {
    /// Whether the request was at fault (400), as opposed to the server (5xx).
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            Self::Csr(_)
                | Self::Subject(_)
                | Self::Validity(_)
                | Self::Provenance(_)
                | Self::ChainTooLong { .. }
        )
    }
}

/// The issuing CA: certificate and signing key. Private to this module.
struct IssuingCa {
    issuer: rcgen::Issuer<'static, KeyPair>,
    certificate: CaCertificate,
}

/// Issues certificates under one CA and profile, recording each in the log.
pub struct IssuanceEngine {
    ca: IssuingCa,
    profile: Profile,
    serials: SerialGenerator,
    log: Arc<dyn IssuanceLog>,
}

impl std::fmt::Debug for IssuanceEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuanceEngine")
            .field("ca", &self.ca.certificate.key_sha256_hex())
            .field("serials", &self.serials)
            .finish_non_exhaustive()
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The CA material is unusable.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The startup canary failed: certificates would not chain to the CA.
    #[error("startup self-test failed: {0}")]
    Canary(String),
}

impl IssuanceEngine {
    /// Loads the CA named by `config` and checks, by signing a throwaway
    /// canary certificate and verifying it against the CA certificate, that
    /// what this engine issues chains to that CA (issuer name bytes, AKI,
    /// signature). The canary is never recorded or released.
    pub fn start(
        config: &Config,
        log: Arc<dyn IssuanceLog>,
        now: OffsetDateTime,
    ) -> Result<Self, EngineError> {
        let (certificate, key) = load_ca(config)?;
        let issuer = rcgen::Issuer::from_ca_cert_der(&certificate.der().to_vec().into(), key)
            .map_err(|e| EngineError::Canary(format!("CA certificate unusable: {e}")))?;
        let engine = Self {
            ca: IssuingCa {
                issuer,
                certificate,
            },
            profile: config.ca.profile.clone(),
            serials: SerialGenerator::new(config.ca.serial_prefix),
            log,
        };
        engine.canary(now)?;
        Ok(engine)
    }

    /// Replaces the serial generator (tests force collisions with it).
    pub fn with_serials(mut self, serials: SerialGenerator) -> Self {
        self.serials = serials;
        self
    }

    /// The CA certificate.
    pub fn ca_certificate(&self) -> &CaCertificate {
        &self.ca.certificate
    }

    /// The profile in force.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Issues one certificate (see the module documentation for the order).
    pub async fn issue(
        &self,
        csr: &[u8],
        request: &IssuanceRequest,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, IssueError> {
        let prepared = self.prepare(csr, request, now)?;
        self.issue_prepared(prepared, now).await
    }

    /// Steps 3–6 for a template from [`prepare`](Self::prepare): lets a
    /// caller admit the request (quotas) after the CSR and the profile
    /// accepted it and before anything is written.
    pub async fn issue_prepared(
        &self,
        prepared: Prepared,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, IssueError> {
        let reserved = self.reserve(prepared, now).await?;
        let serial = reserved.serial.clone();
        let issued = match self.sign(reserved) {
            Ok(issued) => issued,
            Err(error) => {
                // The intent stays explained in the log. If even that write
                // fails, the intent alone still shows that no certificate
                // left slcs with this serial.
                let _ = self
                    .log
                    .record_abandoned(&serial, &error.to_string(), now)
                    .await;
                return Err(error);
            }
        };
        self.log
            .record_issued(&issued.serial, &issued.der, now)
            .await?;
        Ok(issued)
    }

    /// Steps 1–2: everything that needs no serial and writes nothing (CSR,
    /// key policy, subject, provenance, validity).
    pub fn prepare(
        &self,
        csr: &[u8],
        request: &IssuanceRequest,
        now: OffsetDateTime,
    ) -> Result<Prepared, IssueError> {
        let csr = verify_csr(csr, &self.profile.keys)?;
        let subject = self.profile.subject.subject_for(&request.identity)?;
        let steps = request.provenance.steps.len();
        if steps > self.profile.max_chain_steps {
            return Err(IssueError::ChainTooLong {
                found: steps,
                max: self.profile.max_chain_steps,
            });
        }
        let provenance_der = request.provenance.to_der()?;
        let mut limits = request.not_after_limits.clone();
        // RFC 5280 §6 path validation fails past the CA's own notAfter.
        limits.push(NotAfterLimit {
            at: self.ca.certificate.not_after(),
            reason: "the CA certificate",
        });
        let validity = self
            .profile
            .validity(now, request.requested_lifetime_secs, &limits)?;
        let params = self.params(&subject, &csr, validity, provenance_der)?;
        Ok(Prepared {
            params,
            csr,
            subject,
            validity,
            provenance: request.provenance.clone(),
        })
    }

    /// The certificate template: the profile's extensions and nothing else.
    fn params(
        &self,
        subject: &SubjectName,
        csr: &VerifiedCsr,
        validity: Validity,
        provenance_der: Vec<u8>,
    ) -> Result<CertificateParams, IssueError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject
            .to_rcgen()
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        // basicConstraints critical, cA FALSE (RFC 5280 §4.2.1.9).
        params.is_ca = IsCa::ExplicitNoCa;
        // keyUsage critical (RFC 5280 §4.2.1.3): digitalSignature, which
        // TLS client authentication needs; for RSA keys also
        // keyEncipherment, as grid EEC profiles carry it for relying
        // parties that encrypt to the holder's key (e.g. GSI delegation).
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if matches!(csr.key(), KeyDescription::Rsa { .. }) {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // SKI: the leftmost 160 bits of SHA-256 over the DER
        // SubjectPublicKeyInfo (rcgen's KeyIdMethod::Sha256; RFC 5280
        // §4.2.1.2 leaves the method to the CA); AKI from the CA
        // (RFC 5280 §4.2.1.1, needed for path building).
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.use_authority_key_identifier_extension = true;
        if let Some(policies) = &self.profile.certificate_policies_der {
            // certificatePolicies (2.5.29.32), non-critical as RFC 5280 §4.2.1.4 allows.
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[2, 5, 29, 32],
                    policies.clone(),
                ));
        }
        // Non-critical: relying parties that do not know it still accept the
        // certificate (RFC 5280 §4.2).
        let mut provenance =
            CustomExtension::from_oid_content(&self.profile.provenance_oid, provenance_der);
        provenance.set_criticality(false);
        params.custom_extensions.push(provenance);
        Ok(params)
    }

    /// Step 3: a fresh serial and a durable intent.
    async fn reserve(
        &self,
        prepared: Prepared,
        now: OffsetDateTime,
    ) -> Result<Reserved, IssueError> {
        for _ in 0..SERIAL_ATTEMPTS {
            let serial = self.serials.next_serial()?;
            let intent = IssuanceIntent {
                serial: serial.clone(),
                subject: prepared.subject.to_rfc4514(),
                key_sha256: hex::encode(prepared.csr.spki_sha256()),
                key_type: prepared.csr.key().to_string(),
                not_before: prepared.validity.not_before,
                not_after: prepared.validity.not_after,
                provenance: prepared.provenance.clone(),
                recorded_at: now,
            };
            match self.log.record_intent(&intent).await {
                Ok(()) => {
                    return Ok(Reserved { serial, prepared });
                }
                Err(StoreError::SerialInUse(_)) => {
                    tracing::warn!(%serial, "serial collision; drawing another");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(IssueError::SerialsExhausted)
    }

    /// Step 4: sign once, then check the result against the intent.
    fn sign(&self, reserved: Reserved) -> Result<IssuedCertificate, IssueError> {
        let Reserved { serial, prepared } = reserved;
        let mut params = prepared.params;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(prepared.csr.spki_der())
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        let certificate = params
            .signed_by(&public_key, &self.ca.issuer)
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        let der = certificate.der().to_vec();
        self.self_check(&der, &serial, prepared.csr.spki_der())?;
        Ok(IssuedCertificate {
            serial,
            pem: certificate.pem(),
            der,
            subject: prepared.subject.to_rfc4514(),
            not_before: prepared.validity.not_before,
            not_after: prepared.validity.not_after,
            key: prepared.csr.key().clone(),
        })
    }

    /// What was signed is what was meant: the CSR's key, our serial, our
    /// issuer name, a leaf. Cheap structural checks on every certificate.
    fn self_check(&self, der: &[u8], serial: &Serial, spki: &[u8]) -> Result<(), IssueError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|_| IssueError::SelfCheck("does not parse"))?;
        if !rest.is_empty() {
            return Err(IssueError::SelfCheck("trailing data"));
        }
        if cert.public_key().raw != spki {
            return Err(IssueError::SelfCheck("public key differs from the CSR's"));
        }
        if cert.raw_serial() != serial.as_bytes() {
            return Err(IssueError::SelfCheck(
                "serial differs from the recorded one",
            ));
        }
        if cert.issuer().as_raw() != self.ca.certificate.subject_der() {
            return Err(IssueError::SelfCheck(
                "issuer name differs from the CA subject",
            ));
        }
        if cert.is_ca() {
            return Err(IssueError::SelfCheck("certificate is a CA"));
        }
        Ok(())
    }

    fn canary(&self, now: OffsetDateTime) -> Result<(), EngineError> {
        let fail = |m: String| EngineError::Canary(m);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| fail(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[1]));
        params.not_before = now;
        params.not_after = now + time::Duration::minutes(1);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.ca.issuer)
            .map_err(|e| fail(format!("cannot sign: {e}")))?;
        let (_, parsed) = X509Certificate::from_der(cert.der())
            .map_err(|e| fail(format!("canary does not parse: {e}")))?;
        let (_, ca) = X509Certificate::from_der(self.ca.certificate.der())
            .map_err(|e| fail(format!("CA certificate does not parse: {e}")))?;
        if parsed.issuer().as_raw() != ca.subject().as_raw() {
            return Err(fail(
                "the issuer name written by the signer differs from the CA certificate's subject \
                 (a CA subject with repeated attribute types is not supported)"
                    .into(),
            ));
        }
        parsed
            .verify_signature(Some(ca.public_key()))
            .map_err(|e| {
                fail(format!(
                    "canary signature does not verify with the CA key: {e}"
                ))
            })?;
        let aki = parsed
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        let ski = ca
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ski) => {
                    Some(ski.0.to_vec())
                }
                _ => None,
            });
        if ski.is_some() && aki != ski {
            return Err(fail(
                "authority key identifier differs from the CA's subject key identifier".into(),
            ));
        }
        Ok(())
    }
}

/// A certificate template that passed every check (steps 1–2).
/// A checked certificate template, not yet recorded or signed.
pub struct Prepared {
    params: CertificateParams,
    csr: VerifiedCsr,
    subject: SubjectName,
    validity: Validity,
    provenance: DelegationProvenance,
}

impl Prepared {
    /// The validity window the certificate will have.
    pub fn validity(&self) -> Validity {
        self.validity
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("subject", &self.subject.to_rfc4514())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A template whose serial and intent are durably recorded (step 3); signed
/// at most once, since signing consumes it.
struct Reserved {
    serial: Serial,
    prepared: Prepared,
}
