//! Trust roots in the formats grid and ESGF clients expect.
//!
//! `/trustroots/` follows the ESGF Online-CA service: one line per file,
//! `<filename>=<base64 of the file>`. Clients write each file into a CA
//! directory used as OpenSSL's `-CApath`, so the CA certificate must be named
//! `<subject hash>.0`, the hash OpenSSL computes (`openssl x509 -hash`). The
//! Globus `.signing_policy` file beside it says which subjects the CA signs.

use base64::Engine as _;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use super::ca::CaCertificate;
use super::dn::SubjectPolicy;

/// Why the trust-root files could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build trust roots: {0}")]
pub struct TrustRootError(String);

/// One file of the trust-root directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRootFile {
    /// File name.
    pub name: String,
    /// Contents.
    pub contents: Vec<u8>,
}

/// The files of the trust-root directory for `ca`.
pub fn trust_root_files(
    ca: &CaCertificate,
    subjects: &SubjectPolicy,
) -> Result<Vec<TrustRootFile>, TrustRootError> {
    let (_, cert) =
        X509Certificate::from_der(ca.der()).map_err(|e| TrustRootError(e.to_string()))?;
    let hash = openssl_subject_hash(cert.subject())?;
    let ca_slash = slash_form(cert.subject());
    let signed_slash: String = subjects
        .base_rdns()
        .iter()
        .map(|(kind, value)| format!("/{}={}", kind.short_name(), value))
        .collect();
    let policy = format!(
        "# Signing policy of the slcs CA {ca_slash}\n\
         access_id_CA      X509         '{ca_slash}'\n\
         pos_rights        globus       CA:sign\n\
         cond_subjects     globus       '\"{signed_slash}/*\"'\n"
    );
    Ok(vec![
        TrustRootFile {
            name: format!("{hash:08x}.0"),
            contents: ca.pem().as_bytes().to_vec(),
        },
        TrustRootFile {
            name: format!("{hash:08x}.signing_policy"),
            contents: policy.into_bytes(),
        },
    ])
}

/// The `/trustroots/` body: `name=base64(contents)` lines.
pub fn render_trustroots(files: &[TrustRootFile]) -> String {
    files
        .iter()
        .map(|f| {
            format!(
                "{}={}\n",
                f.name,
                base64::engine::general_purpose::STANDARD.encode(&f.contents)
            )
        })
        .collect()
}

/// OpenSSL's `X509_NAME_hash`: SHA-1 over the canonical encoding of the name
/// (each string value converted to UTF-8, trimmed, inner whitespace runs
/// collapsed to one space, ASCII lower-cased, re-encoded as UTF8String; the
/// RDN SETs concatenated without the outer SEQUENCE), first four octets read
/// little-endian.
pub fn openssl_subject_hash(name: &X509Name<'_>) -> Result<u32, TrustRootError> {
    #[derive(der::Sequence, PartialEq, Eq, PartialOrd, Ord)]
    struct AttributeTypeAndValue {
        kind: der::asn1::ObjectIdentifier,
        value: der::asn1::Any,
    }
    impl der::ValueOrd for AttributeTypeAndValue {
        fn value_cmp(&self, other: &Self) -> der::Result<std::cmp::Ordering> {
            Ok(der::Encode::to_der(self)?.cmp(&der::Encode::to_der(other)?))
        }
    }

    let fail = |e: der::Error| TrustRootError(e.to_string());
    let mut canonical = Vec::new();
    for rdn in name.iter() {
        let mut set = der::asn1::SetOfVec::new();
        for atv in rdn.iter() {
            let kind = der::asn1::ObjectIdentifier::from_bytes(atv.attr_type().as_bytes())
                .map_err(|e| TrustRootError(e.to_string()))?;
            let value = atv.attr_value();
            let tag = value.header.tag().0;
            let any = match canonical_string(tag, value.data) {
                Some(text) => der::asn1::Any::new(der::Tag::Utf8String, text.into_bytes()),
                None => {
                    let tag = u8::try_from(tag)
                        .ok()
                        .and_then(|t| der::Tag::try_from(t).ok())
                        .ok_or_else(|| TrustRootError(format!("unsupported tag {tag}")))?;
                    der::asn1::Any::new(tag, value.data.to_vec())
                }
            }
            .map_err(fail)?;
            set.insert(AttributeTypeAndValue { kind, value: any })
                .map_err(fail)?;
        }
        canonical.extend(der::Encode::to_der(&set).map_err(fail)?);
    }
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &canonical);
    let first: [u8; 4] = digest
        .as_ref()
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| TrustRootError("digest too short".into()))?;
    Ok(u32::from_le_bytes(first))
}

/// The canonical form of a string-typed value, or `None` for other types.
fn canonical_string(tag: u32, data: &[u8]) -> Option<String> {
    let text = match tag {
        // UTF8String, PrintableString, IA5String, VisibleString
        12 | 19 | 22 | 26 => String::from_utf8_lossy(data).into_owned(),
        // T61String, treated as Latin-1 as OpenSSL does
        20 => data.iter().map(|&b| char::from(b)).collect(),
        // BMPString (UTF-16BE)
        30 => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| {
                    u16::from_be_bytes([
                        c.first().copied().unwrap_or(0),
                        c.get(1).copied().unwrap_or(0),
                    ])
                })
                .collect();
            String::from_utf16_lossy(&units)
        }
        // UniversalString (UTF-32BE)
        28 => data
            .chunks_exact(4)
            .filter_map(|c| <[u8; 4]>::try_from(c).ok())
            .filter_map(|c| char::from_u32(u32::from_be_bytes(c)))
            .collect(),
        _ => return None,
    };
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r');
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.trim_matches(is_space).chars() {
        if is_space(c) {
            pending_space = true;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c.to_ascii_lowercase());
    }
    Some(out)
}

/// The one-line `/A=b/C=d` form used by Globus signing policies.
fn slash_form(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for rdn in name.iter() {
        for (i, atv) in rdn.iter().enumerate() {
            out.push(if i == 0 { '/' } else { '+' });
            let short = super::inspect::attribute_short_name(atv.attr_type());
            out.push_str(&short);
            out.push('=');
            out.push_str(atv.as_str().unwrap_or("?"));
        }
    }
    out
}
