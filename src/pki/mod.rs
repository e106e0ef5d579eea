//! Public-key infrastructure: the certificate profile, CSR checks, subject
//! names, the provenance extension, and the issuance engine that alone holds
//! the CA key.
//!
//! `provenance` is the part relying parties use: it decodes the delegation
//! chain from an slcs certificate.

pub mod ca;
pub mod csr;
pub mod dn;
pub mod goodkey;
pub mod inspect;
pub mod issuer;
pub mod keys;
pub mod profile;
pub mod provenance;
pub mod serial;
pub mod trustroots;

/// A DER certificate as PEM with LF line endings, as on disk, as rcgen
/// writes the issued ones, and as every PEM tool reads them.
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
