//! Subject distinguished names: built from policy and the authenticated
//! identity, never from the CSR (ATTACKS CSR-09), and rendered per RFC 4514.
//!
//! Every value becomes exactly one AttributeValue of its own RDN; nothing is
//! concatenated into a string and re-parsed (ATTACKS CERT-01). The person CN
//! ends in a suffix derived from SHA-256(issuer ‖ 0x00 ‖ sub), so two users
//! never share a DN even with the same display name (CERT-02), and the same
//! identity always yields the same DN.

use std::fmt::Write as _;
use std::str::FromStr;

use base64::Engine as _;

/// RFC 5280 Appendix A upper bounds, in characters.
const UB_COMMON_NAME: usize = 64;
const UB_ORGANIZATION_NAME: usize = 64;
const UB_ORGANIZATIONAL_UNIT_NAME: usize = 64;
const UB_LOCALITY_NAME: usize = 128;
const UB_STATE_NAME: usize = 128;
/// No upper bound is given for domainComponent; keep it to one DNS label.
const UB_DOMAIN_COMPONENT: usize = 63;

/// Length of the display-name part of a person CN: 43 + 1 space + 16-character
/// suffix = 60, inside `ub-common-name` (64).
pub const DISPLAY_NAME_MAX_CHARS: usize = 43;
/// Length of the identity suffix: 12 bytes of SHA-256, base64url without padding.
pub const SUFFIX_CHARS: usize = 16;

/// Attribute types slcs puts in subject names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttributeType {
    /// countryName (2.5.4.6), PrintableString of two letters.
    Country,
    /// stateOrProvinceName (2.5.4.8).
    State,
    /// localityName (2.5.4.7).
    Locality,
    /// organizationName (2.5.4.10).
    Organization,
    /// organizationalUnitName (2.5.4.11).
    OrganizationalUnit,
    /// domainComponent (0.9.2342.19200300.100.1.25), IA5String (RFC 4519 §2.4).
    DomainComponent,
    /// commonName (2.5.4.3).
    CommonName,
}

impl AttributeType {
    /// The RFC 4514 short name.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Country => "C",
            Self::State => "ST",
            Self::Locality => "L",
            Self::Organization => "O",
            Self::OrganizationalUnit => "OU",
            Self::DomainComponent => "DC",
            Self::CommonName => "CN",
        }
    }

    fn upper_bound(self) -> usize {
        match self {
            Self::Country => 2,
            Self::State => UB_STATE_NAME,
            Self::Locality => UB_LOCALITY_NAME,
            Self::Organization => UB_ORGANIZATION_NAME,
            Self::OrganizationalUnit => UB_ORGANIZATIONAL_UNIT_NAME,
            Self::DomainComponent => UB_DOMAIN_COMPONENT,
            Self::CommonName => UB_COMMON_NAME,
        }
    }

    fn to_rcgen(self) -> rcgen::DnType {
        match self {
            Self::Country => rcgen::DnType::CountryName,
            Self::State => rcgen::DnType::StateOrProvinceName,
            Self::Locality => rcgen::DnType::LocalityName,
            Self::Organization => rcgen::DnType::OrganizationName,
            Self::OrganizationalUnit => rcgen::DnType::OrganizationalUnitName,
            Self::DomainComponent => {
                rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 25])
            }
            Self::CommonName => rcgen::DnType::CommonName,
        }
    }
}

impl FromStr for AttributeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "C" => Self::Country,
            "ST" => Self::State,
            "L" => Self::Locality,
            "O" => Self::Organization,
            "OU" => Self::OrganizationalUnit,
            "DC" => Self::DomainComponent,
            "CN" => Self::CommonName,
            other => {
                return Err(format!(
                    "unknown attribute type {other:?}; expected C, ST, L, O, OU or DC"
                ));
            }
        })
    }
}

/// Whom a certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateIdentity {
    /// A person authenticated by the authorization server.
    Person {
        /// The AS issuer URL (`iss`).
        issuer: String,
        /// The user's stable subject identifier (`sub`).
        subject: String,
        /// The name shown to people; may be empty, may change.
        display_name: String,
    },
    /// A service account: a client acting only as itself.
    ServiceAccount {
        /// The client id.
        client_id: String,
    },
}

/// How subject names are formed; part of the certificate profile.
#[derive(Clone, Debug)]
pub struct SubjectPolicy {
    base: Vec<(AttributeType, String)>,
    person_ou: Option<String>,
    service_ou: String,
}

/// Why no subject name could be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnError {
    /// A service account id that cannot be a CN.
    #[error(
        "service account id {0:?} cannot be used in a certificate subject: it must be 1 to 64 printable characters"
    )]
    BadClientId(String),
    /// An identity without a subject identifier.
    #[error("the identity has an empty issuer or subject identifier")]
    MissingIdentifier,
}

impl SubjectPolicy {
    /// Checks and builds a policy. Each attribute type may appear at most
    /// once in the base (rcgen's `DistinguishedName` keys entries by type),
    /// CN is reserved for slcs, and the person and service OUs must differ so
    /// that the two DN forms can never collide.
    pub fn new(
        base: Vec<(AttributeType, String)>,
        person_ou: Option<String>,
        service_ou: String,
    ) -> Result<Self, String> {
        let mut seen = Vec::new();
        for (kind, value) in &base {
            if *kind == AttributeType::CommonName {
                return Err("base must not contain CN: slcs builds the CN".into());
            }
            if seen.contains(kind) {
                return Err(format!(
                    "base names {} twice; each attribute type may appear once",
                    kind.short_name()
                ));
            }
            seen.push(*kind);
            check_fixed_value(*kind, value)?;
        }
        let has_ou = seen.contains(&AttributeType::OrganizationalUnit);
        if has_ou {
            return Err("base must not contain OU: person_ou and service_ou supply it".into());
        }
        check_fixed_value(AttributeType::OrganizationalUnit, &service_ou)?;
        if let Some(ou) = &person_ou {
            check_fixed_value(AttributeType::OrganizationalUnit, ou)?;
            if ou == &service_ou {
                return Err("person_ou and service_ou must differ".into());
            }
        }
        Ok(Self {
            base,
            person_ou,
            service_ou,
        })
    }

    /// The fixed leading RDNs, most general first.
    pub fn base_rdns(&self) -> &[(AttributeType, String)] {
        &self.base
    }

    /// The subject name for `identity`.
    pub fn subject_for(&self, identity: &CertificateIdentity) -> Result<SubjectName, DnError> {
        let mut rdns = self.base.clone();
        match identity {
            CertificateIdentity::Person {
                issuer,
                subject,
                display_name,
            } => {
                if issuer.is_empty() || subject.is_empty() {
                    return Err(DnError::MissingIdentifier);
                }
                if let Some(ou) = &self.person_ou {
                    rdns.push((AttributeType::OrganizationalUnit, ou.clone()));
                }
                let suffix = identity_suffix(issuer, subject);
                let name = sanitize_display_name(display_name);
                let cn = if name.is_empty() {
                    suffix
                } else {
                    format!("{name} {suffix}")
                };
                rdns.push((AttributeType::CommonName, cn));
            }
            CertificateIdentity::ServiceAccount { client_id } => {
                let length = client_id.chars().count();
                if length == 0
                    || length > UB_COMMON_NAME
                    || client_id.chars().any(is_forbidden_char)
                    || client_id.trim() != client_id
                {
                    return Err(DnError::BadClientId(client_id.clone()));
                }
                rdns.push((AttributeType::OrganizationalUnit, self.service_ou.clone()));
                rdns.push((AttributeType::CommonName, client_id.clone()));
            }
        }
        Ok(SubjectName { rdns })
    }
}

fn check_fixed_value(kind: AttributeType, value: &str) -> Result<(), String> {
    let length = value.chars().count();
    if length == 0 || length > kind.upper_bound() {
        return Err(format!(
            "{} value must be 1 to {} characters",
            kind.short_name(),
            kind.upper_bound()
        ));
    }
    if value.chars().any(is_forbidden_char) || value.trim() != value {
        return Err(format!(
            "{} value {value:?} has control characters or surrounding spaces",
            kind.short_name()
        ));
    }
    match kind {
        AttributeType::Country
            if value.len() != 2 || !value.chars().all(|c| c.is_ascii_uppercase()) =>
        {
            Err("C must be a two-letter upper-case country code".into())
        }
        AttributeType::DomainComponent
            if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            Err("DC must be a DNS label (letters, digits, '-')".into())
        }
        _ => Ok(()),
    }
}

/// An ordered subject name, most general RDN first (X.501 order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectName {
    rdns: Vec<(AttributeType, String)>,
}

impl SubjectName {
    /// The RDNs, most general first.
    pub fn rdns(&self) -> &[(AttributeType, String)] {
        &self.rdns
    }

    /// The RFC 4514 string (most specific RDN first).
    pub fn to_rfc4514(&self) -> String {
        rfc4514(self.rdns.iter().map(|(t, v)| (t.short_name(), v.as_str())))
    }

    /// The same name for rcgen. Country is a PrintableString and DC an
    /// IA5String as their schemas require (RFC 5280 Appendix A, RFC 4519);
    /// everything else is UTF8String (RFC 5280 §4.1.2.6).
    pub(crate) fn to_rcgen(&self) -> Result<rcgen::DistinguishedName, rcgen::Error> {
        let mut dn = rcgen::DistinguishedName::new();
        for (kind, value) in &self.rdns {
            let value = match kind {
                AttributeType::Country => rcgen::DnValue::PrintableString(
                    rcgen::string::PrintableString::try_from(value.as_str())?,
                ),
                AttributeType::DomainComponent => {
                    rcgen::DnValue::Ia5String(rcgen::string::Ia5String::try_from(value.as_str())?)
                }
                _ => rcgen::DnValue::Utf8String(value.clone()),
            };
            dn.push(kind.to_rcgen(), value);
        }
        Ok(dn)
    }
}

/// Renders attribute/value pairs (most general first) as an RFC 4514 string.
pub fn rfc4514<'a>(rdns: impl DoubleEndedIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (i, (kind, value)) in rdns.rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(kind);
        out.push('=');
        escape_value(value, &mut out);
    }
    out
}

/// RFC 4514 §2.4 escaping of one attribute value.
pub fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            // Other controls never reach a DN built by slcs, but names read
            // from foreign certificates may carry them: hex-escape so that a
            // terminal or log cannot be spoofed.
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{byte:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// The 16-character identity suffix: base64url(SHA-256(iss ‖ 0x00 ‖ sub))[..16].
/// An issuer URL cannot contain NUL, so the first NUL separates the two
/// parts unambiguously.
pub fn identity_suffix(issuer: &str, subject: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(issuer.as_bytes());
    ctx.update(&[0]);
    ctx.update(subject.as_bytes());
    let digest = ctx.finish();
    let prefix = digest.as_ref().get(..12).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(prefix)
}

/// Characters never allowed into a DN value: controls (Cc), bidi and
/// zero-width format characters that make one name look like another
/// (CERT-01), and line/paragraph separators.
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Drops forbidden characters, collapses whitespace runs to one space, trims,
/// and cuts to [`DISPLAY_NAME_MAX_CHARS`].
pub fn sanitize_display_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(4 * DISPLAY_NAME_MAX_CHARS));
    let mut pending_space = false;
    let mut count = 0;
    for c in name.chars().filter(|c| !is_forbidden_char(*c)) {
        if c.is_whitespace() {
            pending_space = count > 0;
            continue;
        }
        if pending_space {
            if count + 2 > DISPLAY_NAME_MAX_CHARS {
                break;
            }
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        if count + 1 > DISPLAY_NAME_MAX_CHARS {
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> SubjectPolicy {
        SubjectPolicy::new(
            vec![(AttributeType::Organization, "slcs development".into())],
            Some("People".into()),
            "Service Accounts".into(),
        )
        .unwrap()
    }

    fn person(name: &str) -> CertificateIdentity {
        CertificateIdentity::Person {
            issuer: "https://as.example".into(),
            subject: "u-123".into(),
            display_name: name.into(),
        }
    }

    #[test]
    fn person_dn_has_name_and_stable_suffix() {
        let dn = policy().subject_for(&person("Alice Example")).unwrap();
        let suffix = identity_suffix("https://as.example", "u-123");
        assert_eq!(suffix.chars().count(), SUFFIX_CHARS);
        assert_eq!(
            dn.to_rfc4514(),
            format!("CN=Alice Example {suffix},OU=People,O=slcs development")
        );
        assert_eq!(dn, policy().subject_for(&person("Alice Example")).unwrap());
    }

    #[test]
    fn cert_02_same_display_name_different_users_differ() {
        let a = policy().subject_for(&person("Bob")).unwrap();
        let b = policy()
            .subject_for(&CertificateIdentity::Person {
                issuer: "https://as.example".into(),
                subject: "u-124".into(),
                display_name: "Bob".into(),
            })
            .unwrap();
        assert_ne!(a, b);
        // Moving bytes between issuer and subject changes the suffix.
        assert_ne!(
            identity_suffix("https://a", "bc"),
            identity_suffix("https://ab", "c")
        );
    }

    #[test]
    fn special_characters_are_escaped_not_parsed() {
        let dn = policy()
            .subject_for(&person("#Alice, CN=Bob+OU=x <y> \"q\"; \\ z "))
            .unwrap();
        let cn = &dn.rdns().last().unwrap().1;
        // The value is kept as one attribute (trailing space trimmed).
        assert!(cn.starts_with("#Alice, CN=Bob+OU=x <y> \"q\"; \\ z "));
        let text = dn.to_rfc4514();
        assert!(
            text.starts_with("CN=\\#Alice\\, CN=Bob\\+OU=x \\<y\\> \\\"q\\\"\\; \\\\ z "),
            "{text}"
        );
    }

    #[test]
    fn controls_bidi_and_length_are_handled() {
        let name = sanitize_display_name("Ali\u{202E}ce\r\n\0 Smith\u{200B}");
        assert_eq!(name, "Alice Smith");
        let long = "x".repeat(200);
        assert_eq!(
            sanitize_display_name(&long).chars().count(),
            DISPLAY_NAME_MAX_CHARS
        );
        let dn = policy().subject_for(&person(&long)).unwrap();
        assert!(dn.rdns().last().unwrap().1.chars().count() <= UB_COMMON_NAME);
        let empty = policy().subject_for(&person("  \t ")).unwrap();
        assert_eq!(empty.rdns().last().unwrap().1.chars().count(), SUFFIX_CHARS);
        let unicode = policy().subject_for(&person("Zoë Ğüneş 山田")).unwrap();
        assert!(unicode.to_rfc4514().starts_with("CN=Zoë Ğüneş 山田 "));
    }

    #[test]
    fn service_accounts_have_their_own_form() {
        let dn = policy()
            .subject_for(&CertificateIdentity::ServiceAccount {
                client_id: "ci-pipeline".into(),
            })
            .unwrap();
        assert_eq!(
            dn.to_rfc4514(),
            "CN=ci-pipeline,OU=Service Accounts,O=slcs development"
        );
        for bad in ["", " x", "a\nb", &"y".repeat(65)] {
            assert!(
                policy()
                    .subject_for(&CertificateIdentity::ServiceAccount {
                        client_id: bad.to_owned()
                    })
                    .is_err()
            );
        }
    }

    #[test]
    fn policy_rules() {
        let dc = |v: &str| (AttributeType::DomainComponent, v.to_owned());
        assert!(SubjectPolicy::new(vec![dc("org"), dc("example")], None, "S".into()).is_err());
        assert!(SubjectPolicy::new(vec![dc("ex ample")], None, "S".into()).is_err());
        assert!(
            SubjectPolicy::new(
                vec![(AttributeType::Country, "de".into())],
                None,
                "S".into()
            )
            .is_err()
        );
        for country in ["D", "DEU", "DE"] {
            let ok = SubjectPolicy::new(
                vec![(AttributeType::Country, country.into())],
                None,
                "S".into(),
            )
            .is_ok();
            assert_eq!(ok, country == "DE", "{country}");
        }
        assert!(SubjectPolicy::new(vec![], Some("S".into()), "S".into()).is_err());
        assert!(SubjectPolicy::new(vec![dc("example")], None, "S".into()).is_ok());
    }

    proptest! {
        #[test]
        fn any_display_name_gives_a_bounded_stable_dn(name in "\\PC{0,300}", sub in "[a-z0-9-]{1,40}") {
            let id = CertificateIdentity::Person {
                issuer: "https://as.example".into(),
                subject: sub,
                display_name: name,
            };
            let a = policy().subject_for(&id).unwrap();
            let b = policy().subject_for(&id).unwrap();
            prop_assert_eq!(&a, &b);
            let cn = &a.rdns().last().unwrap().1;
            prop_assert!(cn.chars().count() <= UB_COMMON_NAME);
            prop_assert!(!cn.chars().any(is_forbidden_char));
            prop_assert!(!cn.starts_with(' ') && !cn.ends_with(' '));
            prop_assert!(a.to_rcgen().is_ok());
        }

        #[test]
        fn escaping_round_trips(value in "\\PC{0,80}") {
            let mut escaped = String::new();
            escape_value(&value, &mut escaped);
            prop_assert_eq!(unescape(&escaped), value);
        }
    }

    /// A minimal RFC 4514 value unescaper, for the round-trip property only.
    fn unescape(s: &str) -> String {
        let mut bytes = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            let first = chars.next().unwrap();
            if first.is_ascii_hexdigit() && chars.peek().is_some_and(char::is_ascii_hexdigit) {
                let second = chars.next().unwrap();
                bytes.push(u8::from_str_radix(&format!("{first}{second}"), 16).unwrap());
            } else {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(first.encode_utf8(&mut buf).as_bytes());
            }
        }
        String::from_utf8(bytes).unwrap()
    }
}
