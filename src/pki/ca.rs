//! CA material in the data directory: creating a development CA, a localhost
//! TLS certificate and an admin token on first start, and loading the CA.
//!
//! Nothing here ever overwrites a file: every file is created with
//! `O_CREAT|O_EXCL` and mode 0600 from the first byte (never chmod after
//! writing), fsynced, and its directory fsynced. Private keys leave this
//! module only towards [`super::issuer`] (`pub(super)`).

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keys::CaKeyType;
use super::serial::SerialGenerator;
use crate::config::Config;

/// Validity of a development CA.
const DEV_CA_DAYS: i64 = 3650;
/// Validity of the development TLS server certificate (the CA/B browser maximum).
const DEV_TLS_DAYS: i64 = 397;

/// Why CA material could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Only one of a certificate/key pair exists.
    #[error(
        "incomplete {what}: {present} exists but {missing} does not; slcs never overwrites key material — restore the missing file, or remove both to create new ones"
    )]
    Incomplete {
        /// Which material.
        what: &'static str,
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A private key file is readable by group or others.
    #[error("{0} is readable by other users (mode {1:o}); run `chmod 600` on it")]
    InsecureKeyFile(PathBuf, u32),
    /// A certificate or key cannot be parsed, or they do not belong together.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Key generation or signing failed.
    #[error("cannot create {what}: {message}")]
    Generate {
        /// Which material.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// What `init` did, to print once.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Files created in this run, with what they are.
    pub created: Vec<(&'static str, PathBuf)>,
    /// Whether a development CA was created in this run.
    pub created_dev_ca: bool,
    /// Key type of a CA created in this run.
    pub ca_key_type: Option<CaKeyType>,
}

/// The public half of the issuing CA.
#[derive(Clone, Debug)]
pub struct CaCertificate {
    der: Vec<u8>,
    pem: String,
    subject_der: Vec<u8>,
    spki_der: Vec<u8>,
    not_after: OffsetDateTime,
    is_root: bool,
}

impl CaCertificate {
    /// Parses and checks a CA certificate (PEM).
    pub fn from_pem(pem_text: &str, path: &Path) -> Result<Self, CaError> {
        let invalid = |message: String| CaError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let block =
            pem::parse(pem_text).map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
        if block.tag() != "CERTIFICATE" {
            return Err(invalid(format!(
                "expected a CERTIFICATE block, found {:?}",
                block.tag()
            )));
        }
        let der = block.into_contents();
        let (subject_der, spki_der, not_after, is_root) = {
            let (rest, cert) = X509Certificate::from_der(&der)
                .map_err(|e| invalid(format!("not a DER certificate: {e}")))?;
            if !rest.is_empty() {
                return Err(invalid("trailing data after the certificate".into()));
            }
            let is_ca = cert
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|bc| bc.value.ca);
            if !is_ca {
                return Err(invalid(
                    "not a CA certificate (basicConstraints cA is not TRUE)".into(),
                ));
            }
            (
                cert.subject().as_raw().to_vec(),
                cert.public_key().raw.to_vec(),
                cert.validity().not_after.to_datetime(),
                cert.subject().as_raw() == cert.issuer().as_raw(),
            )
        };
        let pem = super::certificate_pem(&der);
        Ok(Self {
            der,
            pem,
            subject_der,
            spki_der,
            not_after,
            is_root,
        })
    }

    /// DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM encoding.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// DER of the subject Name (the issuer name of every certificate it signs).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Hex SHA-256 of the SubjectPublicKeyInfo.
    pub fn key_sha256_hex(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &self.spki_der,
        ))
    }

    /// notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Whether it is self-issued (a root): then it is not sent with the
    /// certificates it signs, since relying parties must hold it already
    /// (RFC 5246 §7.4.2, RFC 8446 §4.4.2 allow omitting the root).
    pub fn is_root(&self) -> bool {
        self.is_root
    }
}

/// Creates whatever is missing in the data directory: the development CA,
/// the TLS server certificate, the admin token. Existing files are reused,
/// never replaced.
pub fn init_data_dir(config: &Config, now: OffsetDateTime) -> Result<InitReport, CaError> {
    let mut report = InitReport::default();
    create_dir_private(&config.data_dir)?;

    let ca_cert_path = &config.ca.cert;
    let ca_key_path = &config.ca.key;
    if !pair_exists("CA", ca_cert_path, ca_key_path)? {
        create_dev_ca(config, now)?;
        report
            .created
            .push(("CA private key (0600)", ca_key_path.clone()));
        report
            .created
            .push(("CA certificate", ca_cert_path.clone()));
        report.created_dev_ca = true;
        report.ca_key_type = Some(config.ca.key_type);
    }

    let tls_cert = &config.server.tls_cert;
    let tls_key = &config.server.tls_key;
    if !pair_exists("TLS server certificate", tls_cert, tls_key)? {
        if !development_marker(config).exists() {
            // Never sign a localhost serverAuth certificate with an
            // operator's production CA: TLS material is theirs to provide.
            return Err(CaError::Invalid {
                path: tls_cert.clone(),
                message: "missing: slcs creates a localhost TLS certificate only under its own \
                          development CA; provide server.tls_cert and server.tls_key"
                    .into(),
            });
        }
        let (ca, key) = load_ca(config)?;
        create_tls_certificate(config, &ca, &key, now)?;
        report
            .created
            .push(("TLS server key (0600)", tls_key.clone()));
        report
            .created
            .push(("TLS server certificate for localhost", tls_cert.clone()));
    }

    let token_path = config.admin_token_path();
    if !token_path.exists() {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| CaError::Generate {
            what: "admin token",
            message: "system random number generator failed".into(),
        })?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        write_new_file(&token_path, format!("{token}\n").as_bytes(), true)?;
        report.created.push(("admin token (0600)", token_path));
    }
    Ok(report)
}

/// Whether a certificate/key pair exists: both (true), neither (false), or
/// half of it, which is refused rather than completed.
fn pair_exists(what: &'static str, cert: &Path, key: &Path) -> Result<bool, CaError> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(CaError::Incomplete {
            what,
            present: cert.to_path_buf(),
            missing: key.to_path_buf(),
        }),
        (false, true) => Err(CaError::Incomplete {
            what,
            present: key.to_path_buf(),
            missing: cert.to_path_buf(),
        }),
    }
}

/// Loads the CA certificate and its private key, checking that they belong
/// together and that the key file is private.
pub(super) fn load_ca(config: &Config) -> Result<(CaCertificate, KeyPair), CaError> {
    let cert_text = read_to_string(&config.ca.cert)?;
    let certificate = CaCertificate::from_pem(&cert_text, &config.ca.cert)?;
    let key = load_private_key(&config.ca.key)?;
    if key.subject_public_key_info() != certificate.spki_der {
        return Err(CaError::Invalid {
            path: config.ca.key.clone(),
            message: format!(
                "this key does not belong to the CA certificate {}",
                config.ca.cert.display()
            ),
        });
    }
    Ok((certificate, key))
}

/// Loads only the public CA certificate (for `/ca.pem` and tools).
pub fn load_ca_certificate(config: &Config) -> Result<CaCertificate, CaError> {
    let text = read_to_string(&config.ca.cert)?;
    CaCertificate::from_pem(&text, &config.ca.cert)
}

fn load_private_key(path: &Path) -> Result<KeyPair, CaError> {
    check_private_mode(path)?;
    let text = zeroize::Zeroizing::new(read_to_string(path)?);
    KeyPair::from_pem(&text).map_err(|e| CaError::Invalid {
        path: path.to_path_buf(),
        message: format!("not a usable PKCS#8 private key: {e}"),
    })
}

/// Refuses a private key file that group or others can read.
pub fn check_private_mode(path: &Path) -> Result<(), CaError> {
    match crate::secure_fs::exposed_mode(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(CaError::InsecureKeyFile(path.to_path_buf(), mode)),
        Err(source) => Err(CaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_dev_ca(config: &Config, now: OffsetDateTime) -> Result<(), CaError> {
    let generate = |message: String| CaError::Generate {
        what: "development CA",
        message,
    };
    let key = config
        .ca
        .key_type
        .generate()
        .map_err(|e| generate(e.to_string()))?;
    let mut tag = [0u8; 4];
    aws_lc_rs::rand::fill(&mut tag).map_err(|_| generate("random generator failed".into()))?;

    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "slcs development");
    // A random tag keeps two development CAs apart in trust stores.
    name.push(
        DnType::CommonName,
        format!("slcs development CA {}", hex::encode(tag)),
    );
    params.distinguished_name = name;
    params.serial_number = Some(serial(config)?);
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(DEV_CA_DAYS);
    // pathLenConstraint 0: this CA signs end-entity certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params
        .self_signed(&key)
        .map_err(|e| generate(e.to_string()))?;

    if let Some(dir) = config.ca.key.parent() {
        create_dir_private(dir)?;
    }
    if let Some(dir) = config.ca.cert.parent() {
        create_dir_private(dir)?;
    }
    write_new_file(
        &config.ca.key,
        zeroize::Zeroizing::new(key.serialize_pem()).as_bytes(),
        true,
    )?;
    write_new_file(&config.ca.cert, certificate.pem().as_bytes(), false)?;
    write_new_file(
        &development_marker(config),
        b"This CA was created by `slcs init` for development. Do not trust it in production.\n",
        false,
    )?;
    Ok(())
}

/// Whether the configured CA is a development CA slcs created itself.
pub fn is_development_ca(config: &Config) -> bool {
    development_marker(config).exists()
}

/// Marks a CA that slcs created itself (`ca.pem` → `ca.development`).
fn development_marker(config: &Config) -> PathBuf {
    config.ca.cert.with_extension("development")
}

fn create_tls_certificate(
    config: &Config,
    ca: &CaCertificate,
    ca_key: &KeyPair,
    now: OffsetDateTime,
) -> Result<(), CaError> {
    let generate = |message: String| CaError::Generate {
        what: "TLS server certificate",
        message,
    };
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca.der.clone().into(), ca_key)
        .map_err(|e| generate(e.to_string()))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| generate(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "localhost");
    params.distinguished_name = name;
    params.subject_alt_names = vec![
        SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|e: rcgen::Error| generate(e.to_string()))?,
        ),
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    params.serial_number = Some(serial(config)?);
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = (now + time::Duration::days(DEV_TLS_DAYS)).min(ca.not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|e| generate(e.to_string()))?;

    for path in [&config.server.tls_key, &config.server.tls_cert] {
        if let Some(dir) = path.parent() {
            create_dir_private(dir)?;
        }
    }
    write_new_file(
        &config.server.tls_key,
        zeroize::Zeroizing::new(key.serialize_pem()).as_bytes(),
        true,
    )?;
    // The chain the server presents: leaf, then the CA.
    let chain = format!("{}{}", certificate.pem(), ca.pem);
    write_new_file(&config.server.tls_cert, chain.as_bytes(), false)?;
    Ok(())
}

fn serial(config: &Config) -> Result<rcgen::SerialNumber, CaError> {
    SerialGenerator::new(config.ca.serial_prefix)
        .next_serial()
        .map(|s| rcgen::SerialNumber::from_slice(s.as_bytes()))
        .map_err(|e| CaError::Generate {
            what: "serial number",
            message: e.to_string(),
        })
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates a directory (and parents) with mode 0700 if it does not exist.
pub fn create_dir_private(dir: &Path) -> Result<(), CaError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes a new file (never an existing one), mode 0600 for secrets and 0644
/// otherwise, fsyncs it and its directory.
fn write_new_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CaError> {
    crate::secure_fs::write_new_file(path, contents, secret).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}
