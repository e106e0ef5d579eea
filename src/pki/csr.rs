//! PKCS#10 certification requests (RFC 2986): parse strictly, check the key
//! against policy, verify proof of possession, and keep only the public key.
//!
//! The subject, attributes and requested extensions of a CSR are never read
//! into a certificate (ATTACKS CSR-08, CSR-09): rcgen's own CSR parser copies
//! them, so slcs does not use it. What leaves this module is a
//! [`VerifiedCsr`]: a SubjectPublicKeyInfo whose holder proved possession of
//! the private key and whose key passed [`KeyPolicy`].

use std::borrow::Cow;

use aws_lc_rs::signature::{self, VerificationAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::AlgorithmIdentifier;

use super::goodkey::{EcCurve, KeyDescription, KeyPolicy, PublicKeyMaterial, WeakKey};

/// Largest CSR accepted, PEM or DER (ATTACKS CSR-11). An RSA-4096 CSR is
/// about 1.7 KB of PEM; 64 KiB leaves room for any honest request.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// Why a CSR was refused. Each message says precisely what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    /// Over [`MAX_CSR_BYTES`].
    #[error("certificate request is {0} bytes; the limit is {MAX_CSR_BYTES}")]
    TooLarge(usize),
    /// Nothing to parse.
    #[error("certificate request is empty")]
    Empty,
    /// PEM armour is broken or holds something else.
    #[error("certificate request PEM is invalid: {0}")]
    BadPem(String),
    /// Not a DER CertificationRequest.
    #[error("certificate request is not valid DER: {0}")]
    BadDer(String),
    /// Bytes after the CertificationRequest.
    #[error("certificate request has {0} bytes of trailing data after the DER structure")]
    TrailingData(usize),
    /// Only version 1 (0) exists.
    #[error("certificate request version must be v1 (0)")]
    BadVersion,
    /// Signature algorithm with a broken hash or DSA (ATTACKS CSR-02).
    #[error(
        "certificate request is signed with {0}, which is not accepted; sign with SHA-256 or stronger (RSA PKCS#1 v1.5, ECDSA) or Ed25519"
    )]
    WeakSignatureAlgorithm(&'static str),
    /// A signature algorithm not on the allow-list.
    #[error(
        "certificate request signature algorithm {0} is not supported; use sha256/384/512WithRSAEncryption, ecdsa-with-SHA256/384 or Ed25519"
    )]
    UnsupportedSignatureAlgorithm(String),
    /// Signature algorithm does not fit the key (e.g. ECDSA signature, RSA key).
    #[error("certificate request signature algorithm {signature} does not match its {key} key")]
    AlgorithmKeyMismatch {
        /// The signature algorithm.
        signature: &'static str,
        /// The key algorithm.
        key: &'static str,
    },
    /// Algorithm parameters where none (or NULL) belong.
    #[error("certificate request has unexpected parameters on {0}")]
    BadAlgorithmParameters(&'static str),
    /// A key algorithm slcs does not certify.
    #[error("{0} keys are not accepted; use RSA (2048, 3072, 4096), ECDSA P-256/P-384 or Ed25519")]
    UnsupportedKeyAlgorithm(String),
    /// An EC curve slcs does not certify.
    #[error("elliptic curve {0} is not accepted; use P-256 or P-384")]
    UnsupportedCurve(String),
    /// EC keys must name their curve (RFC 5480 §2.1.1).
    #[error("EC key with explicit or missing curve parameters; use a named curve (P-256 or P-384)")]
    ExplicitCurveParameters,
    /// The SubjectPublicKeyInfo cannot be decoded.
    #[error("public key is malformed: {0}")]
    MalformedKey(&'static str),
    /// The key failed policy.
    #[error("public key refused: {0}")]
    WeakKey(#[from] WeakKey),
    /// Proof of possession failed (RFC 2986 §3 note 2, ATTACKS CSR-01).
    #[error(
        "certificate request signature does not verify with its public key (proof of possession failed)"
    )]
    BadSignature,
}

/// A CSR that passed every check; only its public key is kept.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    spki_der: Vec<u8>,
    spki_sha256: [u8; 32],
    key: KeyDescription,
}

impl VerifiedCsr {
    /// The DER SubjectPublicKeyInfo to certify.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of the SubjectPublicKeyInfo.
    pub fn spki_sha256(&self) -> &[u8; 32] {
        &self.spki_sha256
    }

    /// What the key is.
    pub fn key(&self) -> &KeyDescription {
        &self.key
    }
}

/// Whether `input` (PEM or DER) looks like a request for an RSA key, to
/// schedule its costly checks; anything unreadable is `false` and left to
/// [`verify_csr`] to refuse.
pub fn has_rsa_key(input: &[u8]) -> bool {
    input.len() <= MAX_CSR_BYTES
        && der_from_pem_or_der(input).is_ok_and(|der| {
            X509CertificationRequest::from_der(&der).is_ok_and(|(_, csr)| {
                csr.certification_request_info
                    .subject_pki
                    .algorithm
                    .algorithm
                    == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
            })
        })
}

/// Parses a CSR given as PEM or DER, checks its key against `policy`, and
/// verifies its signature. The key check comes first: it bounds the cost of
/// the signature verification (no RSA-16384 verify, ATTACKS CSR-11).
pub fn verify_csr(input: &[u8], policy: &KeyPolicy) -> Result<VerifiedCsr, CsrError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge(input.len()));
    }
    let der = der_from_pem_or_der(input)?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| CsrError::BadDer(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData(rest.len()));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(CsrError::BadVersion);
    }

    let spki = &info.subject_pki;
    let key_algorithm = KeyAlgorithm::of(&spki.algorithm)?;
    if spki.subject_public_key.unused_bits != 0 {
        return Err(CsrError::MalformedKey(
            "public key bit string has unused bits",
        ));
    }
    let key_bytes: &[u8] = &spki.subject_public_key.data;
    let spki_sha256: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.raw)
        .as_ref()
        .try_into()
        .map_err(|_| CsrError::MalformedKey("digest length"))?;

    let key = match key_algorithm {
        KeyAlgorithm::Rsa => {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(CsrError::MalformedKey("RSAPublicKey cannot be decoded"));
            };
            policy.check(
                &PublicKeyMaterial::Rsa {
                    modulus: rsa.modulus,
                    exponent: rsa.exponent,
                },
                &spki_sha256,
            )?
        }
        KeyAlgorithm::Ec(curve) => policy.check(
            &PublicKeyMaterial::Ec {
                curve,
                point: key_bytes,
            },
            &spki_sha256,
        )?,
        KeyAlgorithm::Ed25519 => {
            policy.check(&PublicKeyMaterial::Ed25519 { key: key_bytes }, &spki_sha256)?
        }
    };

    let verifier = signature_verifier(&csr.signature_algorithm, key_algorithm)?;
    if csr.signature_value.unused_bits != 0 {
        return Err(CsrError::BadSignature);
    }
    signature::UnparsedPublicKey::new(verifier, key_bytes)
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| CsrError::BadSignature)?;

    Ok(VerifiedCsr {
        spki_der: spki.raw.to_vec(),
        spki_sha256,
        key,
    })
}

/// Accepts one PEM block (`CERTIFICATE REQUEST` or the legacy
/// `NEW CERTIFICATE REQUEST`) with nothing but whitespace around it, or DER.
fn der_from_pem_or_der(input: &[u8]) -> Result<Cow<'_, [u8]>, CsrError> {
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        return Err(CsrError::Empty);
    }
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(Cow::Borrowed(input));
    }
    let text =
        std::str::from_utf8(trimmed).map_err(|_| CsrError::BadPem("not ASCII text".into()))?;
    let blocks = pem::parse_many(text).map_err(|e| CsrError::BadPem(e.to_string()))?;
    let [block] = blocks.as_slice() else {
        return Err(CsrError::BadPem(format!(
            "expected exactly one PEM block, found {}",
            blocks.len()
        )));
    };
    if !matches!(
        block.tag(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(CsrError::BadPem(format!(
            "expected a CERTIFICATE REQUEST block, found {:?}",
            block.tag()
        )));
    }
    // pem::parse_many skips text between blocks; refuse anything after the
    // END line so that a CSR is one unambiguous object.
    let end_marker = format!("-----END {}-----", block.tag());
    if !text.trim_end().ends_with(&end_marker) {
        return Err(CsrError::BadPem("trailing data after the END line".into()));
    }
    Ok(Cow::Owned(block.contents().to_vec()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAlgorithm {
    Rsa,
    Ec(EcCurve),
    Ed25519,
}

impl KeyAlgorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::Ec(_) => "ECDSA",
            Self::Ed25519 => "Ed25519",
        }
    }

    fn of(algorithm: &AlgorithmIdentifier<'_>) -> Result<Self, CsrError> {
        let oid = algorithm.algorithm.to_id_string();
        match oid.as_str() {
            // rsaEncryption (RFC 3279 §2.3.1): parameters NULL.
            "1.2.840.113549.1.1.1" => {
                require_null_or_absent(algorithm, "rsaEncryption")?;
                Ok(Self::Rsa)
            }
            // id-ecPublicKey (RFC 5480 §2.1.1): namedCurve only.
            "1.2.840.10045.2.1" => {
                let curve = algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .ok_or(CsrError::ExplicitCurveParameters)?;
                match curve.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => Ok(Self::Ec(EcCurve::P256)),
                    "1.3.132.0.34" => Ok(Self::Ec(EcCurve::P384)),
                    other => Err(CsrError::UnsupportedCurve(curve_name(other))),
                }
            }
            // id-Ed25519 (RFC 8410 §3): parameters absent.
            "1.3.101.112" => {
                if algorithm.parameters.is_some() {
                    return Err(CsrError::BadAlgorithmParameters("Ed25519"));
                }
                Ok(Self::Ed25519)
            }
            "1.2.840.10040.4.1" => Err(CsrError::UnsupportedKeyAlgorithm("DSA".into())),
            "1.3.101.113" => Err(CsrError::UnsupportedKeyAlgorithm("Ed448".into())),
            "1.3.101.110" | "1.3.101.111" => Err(CsrError::UnsupportedKeyAlgorithm(
                "X25519/X448 (key agreement)".into(),
            )),
            "1.2.840.113549.1.1.10" => Err(CsrError::UnsupportedKeyAlgorithm(
                "RSASSA-PSS-restricted".into(),
            )),
            other => Err(CsrError::UnsupportedKeyAlgorithm(format!("OID {other}"))),
        }
    }
}

fn curve_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.10045.3.1.1" => "P-192 (prime192v1)",
        "1.3.132.0.33" => "P-224 (secp224r1)",
        "1.3.132.0.35" => "P-521 (secp521r1)",
        "1.3.132.0.10" => "secp256k1",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        _ => return format!("OID {oid}"),
    };
    name.to_owned()
}

fn require_null_or_absent(
    algorithm: &AlgorithmIdentifier<'_>,
    name: &'static str,
) -> Result<(), CsrError> {
    match &algorithm.parameters {
        None => Ok(()),
        Some(any) if any.tag() == x509_parser::der_parser::asn1_rs::Tag::Null => Ok(()),
        Some(_) => Err(CsrError::BadAlgorithmParameters(name)),
    }
}

/// The allow-list of CSR signature algorithms (ATTACKS CSR-02; Boulder's
/// goodSignatureAlgorithms): no MD5, no SHA-1, no DSA. Signature verification
/// alone does not enforce this, since libraries still verify SHA-1.
fn signature_verifier(
    algorithm: &AlgorithmIdentifier<'_>,
    key: KeyAlgorithm,
) -> Result<&'static dyn VerificationAlgorithm, CsrError> {
    let oid = algorithm.algorithm.to_id_string();
    let (name, wanted): (&'static str, KeyAlgorithm) = match oid.as_str() {
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", KeyAlgorithm::Rsa),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", KeyAlgorithm::Rsa),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", KeyAlgorithm::Rsa),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", key_if_ec(key)),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", key_if_ec(key)),
        "1.3.101.112" => ("Ed25519", KeyAlgorithm::Ed25519),
        "1.2.840.113549.1.1.4" => {
            return Err(CsrError::WeakSignatureAlgorithm("md5WithRSAEncryption"));
        }
        "1.2.840.113549.1.1.2" => {
            return Err(CsrError::WeakSignatureAlgorithm("md2WithRSAEncryption"));
        }
        "1.2.840.113549.1.1.5" => {
            return Err(CsrError::WeakSignatureAlgorithm("sha1WithRSAEncryption"));
        }
        "1.2.840.10045.4.1" => return Err(CsrError::WeakSignatureAlgorithm("ecdsa-with-SHA1")),
        "1.2.840.10040.4.3" => return Err(CsrError::WeakSignatureAlgorithm("dsa-with-SHA1")),
        "2.16.840.1.101.3.4.3.1" | "2.16.840.1.101.3.4.3.2" => {
            return Err(CsrError::WeakSignatureAlgorithm("DSA"));
        }
        "1.2.840.113549.1.1.10" => {
            return Err(CsrError::UnsupportedSignatureAlgorithm("RSASSA-PSS".into()));
        }
        other => {
            return Err(CsrError::UnsupportedSignatureAlgorithm(format!(
                "OID {other}"
            )));
        }
    };
    if std::mem::discriminant(&wanted) != std::mem::discriminant(&key) {
        return Err(CsrError::AlgorithmKeyMismatch {
            signature: name,
            key: key.name(),
        });
    }
    match key {
        KeyAlgorithm::Rsa => require_null_or_absent(algorithm, name)?,
        _ if algorithm.parameters.is_some() => {
            return Err(CsrError::BadAlgorithmParameters(name));
        }
        _ => {}
    }
    Ok(match (name, key) {
        ("sha256WithRSAEncryption", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        ("sha384WithRSAEncryption", _) => &signature::RSA_PKCS1_2048_8192_SHA384,
        ("sha512WithRSAEncryption", _) => &signature::RSA_PKCS1_2048_8192_SHA512,
        ("ecdsa-with-SHA256", KeyAlgorithm::Ec(EcCurve::P256)) => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        ("ecdsa-with-SHA256", _) => &signature::ECDSA_P384_SHA256_ASN1,
        ("ecdsa-with-SHA384", KeyAlgorithm::Ec(EcCurve::P256)) => {
            &signature::ECDSA_P256_SHA384_ASN1
        }
        ("ecdsa-with-SHA384", _) => &signature::ECDSA_P384_SHA384_ASN1,
        _ => &signature::ED25519,
    })
}

/// ECDSA signatures fit any EC key; for a non-EC key, name a placeholder EC
/// key so the mismatch is reported.
fn key_if_ec(key: KeyAlgorithm) -> KeyAlgorithm {
    match key {
        KeyAlgorithm::Ec(_) => key,
        _ => KeyAlgorithm::Ec(EcCurve::P256),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData as _;

    fn csr_for(key: &rcgen::KeyPair) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["evil.test".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serialize_request(key).unwrap().der().to_vec()
    }

    #[test]
    fn rsa_requests_are_told_apart_for_scheduling() {
        use aws_lc_rs::encoding::AsDer as _;
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'_> = rsa.as_der().unwrap();
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let der = csr_for(&key);
        assert!(has_rsa_key(&der));
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(has_rsa_key(pem.as_bytes()));
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(!has_rsa_key(&csr_for(&ec)));
        assert!(!has_rsa_key(b"not a request"));
    }

    #[test]
    fn accepts_each_supported_key_type_in_der_and_pem() {
        let policy = KeyPolicy::default();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let der = csr_for(&key);
            let verified = verify_csr(&der, &policy).unwrap();
            assert_eq!(
                verified.spki_der(),
                key.subject_public_key_info().as_slice()
            );
            let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
            verify_csr(pem.as_bytes(), &policy).unwrap();
        }
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let verified = verify_csr(&csr_for(&rsa), &policy).unwrap();
        assert_eq!(verified.key(), &KeyDescription::Rsa { bits: 2048 });
    }

    #[test]
    fn refuses_malformed_input() {
        let policy = KeyPolicy::default();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = csr_for(&key);

        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(
            verify_csr(&trailing, &policy).unwrap_err(),
            CsrError::TrailingData(1)
        );
        assert_eq!(verify_csr(b"  \n", &policy).unwrap_err(), CsrError::Empty);
        assert!(matches!(
            verify_csr(b"garbage", &policy),
            Err(CsrError::BadDer(_))
        ));
        assert_eq!(
            verify_csr(&vec![0x30; MAX_CSR_BYTES + 1], &policy).unwrap_err(),
            CsrError::TooLarge(MAX_CSR_BYTES + 1)
        );
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
        let with_tail = format!("{pem}extra\n");
        assert!(matches!(
            verify_csr(with_tail.as_bytes(), &policy),
            Err(CsrError::BadPem(_))
        ));
        let two = format!("{pem}{pem}");
        assert!(matches!(
            verify_csr(two.as_bytes(), &policy),
            Err(CsrError::BadPem(_))
        ));
        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
        assert!(matches!(
            verify_csr(cert.as_bytes(), &policy),
            Err(CsrError::BadPem(_))
        ));

        // Every truncation is an error, never a panic.
        for len in 0..der.len() {
            assert!(verify_csr(der.get(..len).unwrap(), &policy).is_err());
        }
    }

    #[test]
    fn refuses_a_flipped_signature_bit() {
        let policy = KeyPolicy::default();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut der = csr_for(&key);
        let last = der.len() - 1;
        der[last] ^= 1;
        let err = verify_csr(&der, &policy).unwrap_err();
        assert!(
            matches!(err, CsrError::BadSignature | CsrError::BadDer(_)),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_a_swapped_public_key() {
        let policy = KeyPolicy::default();
        let signer = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = csr_for(&signer);
        let signer_point = signer.public_key_raw();
        let other_point = other.public_key_raw();
        let position = der
            .windows(signer_point.len())
            .position(|w| w == signer_point)
            .unwrap();
        let mut swapped = der.clone();
        swapped[position..position + other_point.len()].copy_from_slice(other_point);
        assert_eq!(
            verify_csr(&swapped, &policy).unwrap_err(),
            CsrError::BadSignature
        );
    }
}
