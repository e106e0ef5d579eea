//! Reading an slcs certificate back: subject, issuer, serial, validity, key,
//! and the decoded delegation chain. Used by `slcs inspect` and usable by
//! relying parties.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::oid_registry::{Oid, OidRegistry};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::public_key::PublicKey;

use super::dn::escape_value;
use super::provenance::{DelegationProvenance, oid_is_valid_for_x509};

/// What `slcs inspect` shows.
#[derive(Clone, Debug, Serialize)]
pub struct CertificateSummary {
    /// RFC 4514 subject.
    pub subject: String,
    /// RFC 4514 issuer.
    pub issuer: String,
    /// Upper-case hex serial.
    pub serial: String,
    /// notBefore.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Key type, e.g. "ECDSA P-256".
    pub key_type: String,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// OIDs of the extensions present, in order.
    pub extensions: Vec<String>,
    /// The decoded delegation chain, if the provenance extension is present.
    pub provenance: Option<DelegationProvenance>,
    /// Why the provenance extension could not be decoded, if it is present but bad.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance_error: Option<String>,
    /// The provenance OID looked for.
    pub provenance_oid: String,
}

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not a certificate in PEM or DER.
    #[error("not an X.509 certificate (PEM or DER): {0}")]
    NotACertificate(String),
    /// The provenance OID given is not a valid OID.
    #[error("invalid provenance OID: {0}")]
    BadOid(String),
}

/// Finds the extension with `provenance_oid` in a DER certificate and decodes it.
pub fn provenance_of(
    certificate_der: &[u8],
    provenance_oid: &str,
) -> Result<Option<DelegationProvenance>, String> {
    let wanted = oid_content_octets(provenance_oid)?;
    let (_, cert) = X509Certificate::from_der(certificate_der).map_err(|e| e.to_string())?;
    single_provenance(&cert, &wanted)
}

/// The provenance extension of `cert`, decoded; an error if it appears more
/// than once (RFC 5280 §4.2: at most one instance of an extension), so
/// that no reader silently picks one of two chains.
fn single_provenance(
    cert: &X509Certificate<'_>,
    wanted: &[u8],
) -> Result<Option<DelegationProvenance>, String> {
    let mut matching = cert
        .extensions()
        .iter()
        .filter(|ext| ext.oid.as_bytes() == wanted);
    match (matching.next(), matching.next()) {
        (None, _) => Ok(None),
        (Some(ext), None) => DelegationProvenance::from_der(ext.value)
            .map(Some)
            .map_err(|e| e.to_string()),
        (Some(_), Some(_)) => {
            Err("the provenance extension appears more than once (RFC 5280 §4.2)".into())
        }
    }
}

/// The DER content octets of a dotted OID. Extensions are matched on these
/// bytes: x509-parser's `to_id_string` misrenders OIDs whose first
/// subidentifier needs two octets (it prints 2.999.1 as 3.16.55.1).
pub fn oid_content_octets(dotted: &str) -> Result<Vec<u8>, String> {
    let arcs = oid_is_valid_for_x509(dotted)?;
    let (first, second, rest) = match arcs.as_slice() {
        [first, second, rest @ ..] => (*first, *second, rest),
        _ => return Err(format!("{dotted}: an OID has at least two arcs")),
    };
    let mut out = Vec::new();
    for arc in std::iter::once(first * 40 + second).chain(rest.iter().copied()) {
        let mut groups = vec![u8::try_from(arc & 0x7f).unwrap_or(0)];
        let mut value = arc >> 7;
        while value > 0 {
            groups.push(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
            value >>= 7;
        }
        out.extend(groups.iter().rev());
    }
    Ok(out)
}

/// Renders OID content octets in dotted form (correctly for every arc size).
pub fn dotted_oid(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for byte in content {
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let (first, second) = match value {
                    0..40 => (0, value),
                    40..80 => (1, value - 40),
                    _ => (2, value - 80),
                };
                arcs.push(first);
                arcs.push(second);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Summarises the first certificate in `input` (PEM or DER).
pub fn inspect(input: &[u8], provenance_oid: &str) -> Result<CertificateSummary, InspectError> {
    let der = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(input)
            .map_err(|_| InspectError::NotACertificate("PEM is not text".into()))?;
        let blocks =
            pem::parse_many(text).map_err(|e| InspectError::NotACertificate(e.to_string()))?;
        blocks
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or_else(|| InspectError::NotACertificate("no CERTIFICATE block".into()))?
            .into_contents()
    } else {
        input.to_vec()
    };
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| InspectError::NotACertificate(e.to_string()))?;
    let wanted = oid_content_octets(provenance_oid).map_err(InspectError::BadOid)?;
    let (provenance, provenance_error) = match single_provenance(&cert, &wanted) {
        Ok(provenance) => (provenance, None),
        Err(e) => (None, Some(e)),
    };
    Ok(CertificateSummary {
        subject: name_to_rfc4514(cert.subject()),
        issuer: name_to_rfc4514(cert.issuer()),
        serial: hex::encode_upper(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        key_type: key_type(&cert),
        is_ca: cert.is_ca(),
        extensions: cert
            .extensions()
            .iter()
            .map(|e| dotted_oid(e.oid.as_bytes()))
            .collect(),
        provenance,
        provenance_error,
        provenance_oid: provenance_oid.to_owned(),
    })
}

impl fmt::Display for CertificateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |t: &OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        writeln!(f, "Subject:     {}", self.subject)?;
        writeln!(f, "Issuer:      {}", self.issuer)?;
        writeln!(f, "Serial:      {}", self.serial)?;
        writeln!(f, "Not before:  {}", time(&self.not_before))?;
        writeln!(f, "Not after:   {}", time(&self.not_after))?;
        writeln!(f, "Key:         {}", self.key_type)?;
        writeln!(f, "CA:          {}", if self.is_ca { "yes" } else { "no" })?;
        match (&self.provenance, &self.provenance_error) {
            (Some(p), _) => {
                writeln!(f, "Delegation chain (extension {}):", self.provenance_oid)?;
                for line in p.to_string().lines() {
                    writeln!(f, "  {line}")?;
                }
            }
            (None, Some(e)) => writeln!(
                f,
                "Delegation chain: extension {} present but invalid: {e}",
                self.provenance_oid
            )?,
            (None, None) => writeln!(
                f,
                "Delegation chain: none (no extension {})",
                self.provenance_oid
            )?,
        }
        Ok(())
    }
}

/// RFC 4514 rendering of a Name read from a certificate (most specific RDN
/// first, multi-valued RDNs joined with `+`, non-string values as `#hex`).
pub fn name_to_rfc4514(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let mut part = attribute_short_name(atv.attr_type());
            part.push('=');
            match atv.as_str() {
                Ok(value) => escape_value(value, &mut part),
                Err(_) => {
                    // RFC 4514 §2.4: `#` and the hex of the value's whole
                    // BER encoding (tag, length, contents).
                    part.push('#');
                    let encoded = x509_parser::asn1_rs::ToDer::to_der_vec(atv.attr_value())
                        .unwrap_or_else(|_| atv.attr_value().data.to_vec());
                    part.push_str(&hex::encode(encoded));
                }
            }
            parts.push(part);
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

/// The short name of an attribute type (`CN`, `O`, `DC`, …) or its dotted OID.
pub fn attribute_short_name(oid: &Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        other => OidRegistry::default()
            .with_x509()
            .get(oid)
            .map(|e| e.sn().to_owned())
            .unwrap_or_else(|| other.to_owned()),
    }
}

/// The certified key's type, e.g. `ECDSA P-256`, `RSA-3072`, `Ed25519`.
pub fn key_type(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
            _ => "RSA (malformed)".into(),
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
                Some("1.3.132.0.34") => "ECDSA P-384".into(),
                Some(other) => format!("ECDSA (curve {other})"),
                None => "ECDSA (unnamed curve)".into(),
            }
        }
        "1.3.101.112" => "Ed25519".into(),
        other => format!("unknown ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn non_string_values_render_as_hex_of_their_whole_encoding() {
        // RFC 4514 §2.4: `#` + hex of the BER encoding, tag and length
        // included (a BMPString "ab" is 1e 04 00 61 00 62).
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::BmpString(rcgen::string::BmpString::try_from("ab").unwrap()),
        );
        let der = self_signed(params);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(name_to_rfc4514(cert.subject()), "CN=#1e0400610062");
    }

    #[test]
    fn a_duplicated_provenance_extension_is_refused() {
        let oid = [1, 3, 6, 1, 4, 1, 32473, 1];
        let mut params = rcgen::CertificateParams::default();
        for value in [vec![0x30, 0x00], vec![0x30, 0x00]] {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(&oid, value));
        }
        let der = self_signed(params);
        let error = provenance_of(&der, "1.3.6.1.4.1.32473.1").unwrap_err();
        assert!(error.contains("more than once"), "{error}");
    }

    #[test]
    fn oid_octets_round_trip_including_large_first_subidentifiers() {
        for oid in [
            "1.3.6.1.4.1.32473.1",
            "1.3.6.1.4.1.99999.1",
            "2.5.29.32",
            "0.9.2342.19200300.100.1.25",
        ] {
            let bytes = oid_content_octets(oid).unwrap();
            assert_eq!(dotted_oid(&bytes), oid);
        }
        // A first subidentifier of two octets decodes correctly here.
        assert_eq!(dotted_oid(&[0x88, 0x37, 0x01]), "2.999.1");
        assert!(oid_content_octets("2.999.1").is_err());
        assert_eq!(
            oid_content_octets("2.5.29.32").unwrap(),
            vec![0x55, 0x1d, 0x20]
        );
    }
}
