//! Key types of the CA itself (the keys in CSRs are governed by
//! [`super::goodkey`]).

use std::fmt;
use std::str::FromStr;

/// The key type of a CA created by `slcs init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKeyType {
    /// ECDSA on P-256 with SHA-256; the default: fast, small, universally supported.
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 3072 with PKCS#1 v1.5 and SHA-256, for relying parties without ECDSA.
    Rsa3072,
}

impl CaKeyType {
    /// Every supported value, in documentation order.
    pub const ALL: [CaKeyType; 3] = [Self::EcdsaP256, Self::EcdsaP384, Self::Rsa3072];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa3072 => "rsa-3072",
        }
    }

    /// Generates a fresh key pair of this type.
    pub fn generate(self) -> Result<rcgen::KeyPair, rcgen::Error> {
        match self {
            Self::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Self::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            Self::Rsa3072 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
        }
    }
}

impl fmt::Display for CaKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CaKeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown CA key type {s:?}; expected ecdsa-p256, ecdsa-p384 or rsa-3072")
            })
    }
}
