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
