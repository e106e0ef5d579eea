//! The slcs provenance extension: a non-critical X.509 extension that records
//! the delegation chain behind a certificate (who delegated to whom, with
//! which scope, when).
//!
//! The extension value (the contents of `extnValue`) is the DER encoding of
//! `DelegationProvenance` from this ASN.1 module, frozen as version 1:
//!
//! ```asn1
//! SlcsProvenance-2026 DEFINITIONS IMPLICIT TAGS ::= BEGIN
//! DelegationProvenance ::= SEQUENCE {
//!   version      INTEGER { v1(1) },      -- decoders MUST refuse other versions
//!   issuer       UTF8String,             -- OAuth AS issuer URL
//!   subject      UTF8String,             -- the user's (or service account's) sub
//!   authTime     GeneralizedTime,        -- when the principal authenticated
//!   authContext  [0] UTF8String OPTIONAL,-- acr / level of assurance
//!   grantId      UTF8String,             -- root grant id: audit and revocation handle
//!   steps        SEQUENCE SIZE (1..16) OF DelegationStep,  -- root client first, presenter last
//!   tokenId      UTF8String }            -- jti of the access token presented for this certificate
//! DelegationStep ::= SEQUENCE {
//!   clientId     UTF8String,
//!   clientName   [0] UTF8String OPTIONAL,
//!   grantType    UTF8String,             -- authorization_code, refresh_token, device_code, client_credentials, token-exchange, certificate
//!   scope        UTF8String,             -- space-separated, RFC 6749 §3.3
//!   time         GeneralizedTime,
//!   clientAuth   UTF8String,             -- client_secret_basic, tls_client_auth, none+pkce, ...
//!   approvalId   [1] UTF8String OPTIONAL }
//! END
//! ```
//!
//! Constraints not expressible in the module above, enforced on both encode
//! and decode: every UTF8String is at most [`MAX_STRING_BYTES`] bytes
//! (`scope`: [`MAX_SCOPE_BYTES`]) and contains no control character (Unicode
//! `Cc`) and no bidi control (U+200E, U+200F, U+202A..=U+202E,
//! U+2066..=U+2069); every GeneralizedTime follows RFC 5280 §4.1.2.5.2
//! (`YYYYMMDDHHMMSSZ`: UTC, whole seconds, no fractional part) with a year in
//! 1950..=9999. Any incompatible change gets a new version number; decoders
//! refuse versions they do not know. See `docs/provenance-asn1.md`.

use std::fmt;

use der::asn1::Utf8StringRef;
use der::{
    Decode, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader, Sequence,
    SliceReader, Tag, Writer,
};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The only version this module encodes and decodes.
pub const PROVENANCE_VERSION: u8 = 1;
/// Hard cap of the format on the number of delegation steps; policy caps are
/// lower and enforced elsewhere.
pub const MAX_STEPS: usize = 16;
/// Maximum length in bytes of any UTF8String except `scope`.
pub const MAX_STRING_BYTES: usize = 1024;
/// Maximum length in bytes of a step's `scope`.
pub const MAX_SCOPE_BYTES: usize = 4096;

/// Earliest year a provenance time may carry.
const MIN_YEAR: i32 = 1950;
/// Latest year a provenance time may carry (GeneralizedTime has four digits).
const MAX_YEAR: i32 = 9999;

/// The delegation chain behind a certificate (the decoded extension).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DelegationProvenance {
    /// OAuth authorization server issuer URL.
    pub issuer: String,
    /// The `sub` of the user or service account.
    pub subject: String,
    /// When the principal authenticated.
    #[serde(with = "rfc3339")]
    pub auth_time: OffsetDateTime,
    /// `acr` / level of assurance, if known.
    pub auth_context: Option<String>,
    /// Root grant id: the audit and revocation handle.
    pub grant_id: String,
    /// Root client first, presenter last.
    pub steps: Vec<DelegationStep>,
    /// `jti` of the access token presented for this certificate.
    pub token_id: String,
}

/// One hop of the delegation chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DelegationStep {
    /// OAuth `client_id` of the client acting at this step.
    pub client_id: String,
    /// Human-readable client name, if registered.
    pub client_name: Option<String>,
    /// Grant type: `authorization_code`, `refresh_token`, `device_code`,
    /// `client_credentials`, `token-exchange`, `certificate`.
    pub grant_type: String,
    /// Space-separated scope (RFC 6749 §3.3).
    pub scope: String,
    /// When this step happened.
    #[serde(with = "rfc3339")]
    pub time: OffsetDateTime,
    /// How the client authenticated: `client_secret_basic`,
    /// `tls_client_auth`, `none+pkce`, ...
    pub client_auth: String,
    /// Id of the user's approval (consent) record, if any.
    pub approval_id: Option<String>,
}

/// Why a provenance value could not be encoded or decoded.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProvenanceError {
    /// The input is not a DER `DelegationProvenance` (der's message).
    #[error("provenance extension is not valid DER: {0}")]
    Der(String),
    /// Bytes follow the `DelegationProvenance` SEQUENCE.
    #[error("trailing data after the provenance extension value")]
    TrailingData,
    /// The input decodes but is not in canonical DER (e.g. an unknown
    /// context-specific element that the decoder skipped).
    #[error("provenance extension is not in canonical DER")]
    NonCanonical,
    /// A version other than [`PROVENANCE_VERSION`].
    #[error("unsupported provenance version {0} (this decoder only knows version 1)")]
    UnsupportedVersion(i64),
    /// `steps` is empty.
    #[error("provenance has no delegation steps")]
    NoSteps,
    /// `steps` has more than [`MAX_STEPS`] entries.
    #[error("provenance has {found} delegation steps, more than the maximum of {max}")]
    TooManySteps {
        /// Number of steps present.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// A string is longer than its limit.
    #[error("provenance field {field} is longer than {max} bytes")]
    StringTooLong {
        /// Field name (`steps.scope` for a step's scope).
        field: &'static str,
        /// The limit in bytes.
        max: usize,
    },
    /// A string contains a control character or a bidi control.
    #[error("provenance field {field} contains a control or bidirectional-formatting character")]
    ForbiddenCharacter {
        /// Field name.
        field: &'static str,
    },
    /// A time is outside the years 1950..=9999 (in UTC).
    #[error("provenance field {field} is outside the years 1950..=9999 (UTC)")]
    TimeOutOfRange {
        /// Field name.
        field: &'static str,
    },
    /// A time has a fractional second.
    #[error("provenance field {field} has fractional seconds (only whole seconds are allowed)")]
    FractionalSeconds {
        /// Field name.
        field: &'static str,
    },
}

fn der_err(e: der::Error) -> ProvenanceError {
    ProvenanceError::Der(e.to_string())
}

// ---------------------------------------------------------------------------
// Wire types: a one-to-one mirror of the ASN.1 module.
//
// The module is `IMPLICIT TAGS`. The OPTIONAL components carry context tags
// because X.680 requires the components of a SEQUENCE that may be absent to
// have tags distinct from the components that follow them: an untagged
// `authContext UTF8String OPTIONAL` followed by `grantId UTF8String` would be
// ambiguous (a decoder could not tell whether a lone UTF8String is the
// context or the grant). IMPLICIT context tags replace the UTF8String tag, so
// `[0]` is encoded as the primitive tag 0x80 (and `[1]` as 0x81) followed by
// the UTF-8 bytes.
// ---------------------------------------------------------------------------

/// `DelegationProvenance` on the wire.
#[derive(Sequence)]
#[asn1(tag_mode = "IMPLICIT")]
struct ProvenanceWire<'a> {
    version: i64,
    issuer: Utf8StringRef<'a>,
    subject: Utf8StringRef<'a>,
    auth_time: GenTime,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    auth_context: Option<Utf8StringRef<'a>>,
    grant_id: Utf8StringRef<'a>,
    steps: Vec<StepWire<'a>>,
    token_id: Utf8StringRef<'a>,
}

/// `DelegationStep` on the wire.
#[derive(Sequence)]
#[asn1(tag_mode = "IMPLICIT")]
struct StepWire<'a> {
    client_id: Utf8StringRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    client_name: Option<Utf8StringRef<'a>>,
    grant_type: Utf8StringRef<'a>,
    scope: Utf8StringRef<'a>,
    time: GenTime,
    client_auth: Utf8StringRef<'a>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    approval_id: Option<Utf8StringRef<'a>>,
}

/// RFC 5280 GeneralizedTime (`YYYYMMDDHHMMSSZ`) for any year 0000..=9999.
///
/// `der::asn1::GeneralizedTime` cannot be used: its `DateTime` starts at
/// 1970 (Unix epoch), and this format allows authentication times from 1950.
/// Like der's type it refuses anything but exactly 15 bytes ending in `Z`,
/// i.e. fractional seconds, offsets and missing seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GenTime(PrimitiveDateTime);

impl GenTime {
    const LEN: usize = 15;
}

impl FixedTag for GenTime {
    const TAG: Tag = Tag::GeneralizedTime;
}

/// Two ASCII digits to their value.
fn two_digits(hi: u8, lo: u8) -> der::Result<u8> {
    if hi.is_ascii_digit() && lo.is_ascii_digit() {
        Ok((hi - b'0') * 10 + (lo - b'0'))
    } else {
        Err(Tag::GeneralizedTime.value_error())
    }
}

impl<'a> DecodeValue<'a> for GenTime {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        if usize::try_from(header.length)? != Self::LEN {
            return Err(Tag::GeneralizedTime.value_error());
        }
        let mut buf = [0u8; Self::LEN];
        reader.read_into(&mut buf)?;
        let [
            y1,
            y2,
            y3,
            y4,
            mo1,
            mo2,
            d1,
            d2,
            h1,
            h2,
            mi1,
            mi2,
            s1,
            s2,
            b'Z',
        ] = buf
        else {
            return Err(Tag::GeneralizedTime.value_error());
        };
        let year = i32::from(two_digits(y1, y2)?) * 100 + i32::from(two_digits(y3, y4)?);
        let month = Month::try_from(two_digits(mo1, mo2)?)
            .map_err(|_| Tag::GeneralizedTime.value_error())?;
        let date = Date::from_calendar_date(year, month, two_digits(d1, d2)?)
            .map_err(|_| Tag::GeneralizedTime.value_error())?;
        let time = Time::from_hms(
            two_digits(h1, h2)?,
            two_digits(mi1, mi2)?,
            two_digits(s1, s2)?,
        )
        .map_err(|_| Tag::GeneralizedTime.value_error())?;
        Ok(Self(PrimitiveDateTime::new(date, time)))
    }
}

impl EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(Self::LEN)
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        let dt = self.0;
        let year = u16::try_from(dt.year()).map_err(|_| Tag::GeneralizedTime.value_error())?;
        if year > 9999 || dt.nanosecond() != 0 {
            return Err(Tag::GeneralizedTime.value_error());
        }
        let text = format!(
            "{year:04}{:02}{:02}{:02}{:02}{:02}Z",
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        writer.write(text.as_bytes())
    }
}

// ---------------------------------------------------------------------------
// Validation shared by encode and decode.
// ---------------------------------------------------------------------------

/// Control characters (Unicode `Cc`) and the bidi controls.
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_str(field: &'static str, value: &str, max: usize) -> Result<(), ProvenanceError> {
    if value.len() > max {
        return Err(ProvenanceError::StringTooLong { field, max });
    }
    if value.chars().any(is_forbidden_char) {
        return Err(ProvenanceError::ForbiddenCharacter { field });
    }
    Ok(())
}

fn check_opt_str(field: &'static str, value: Option<&str>) -> Result<(), ProvenanceError> {
    value.map_or(Ok(()), |v| check_str(field, v, MAX_STRING_BYTES))
}

/// The UTC wall-clock time of `t`, if it fits the format.
fn to_gen_time(field: &'static str, t: OffsetDateTime) -> Result<GenTime, ProvenanceError> {
    let utc = t
        .checked_to_offset(UtcOffset::UTC)
        .ok_or(ProvenanceError::TimeOutOfRange { field })?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&utc.year()) {
        return Err(ProvenanceError::TimeOutOfRange { field });
    }
    if utc.nanosecond() != 0 {
        return Err(ProvenanceError::FractionalSeconds { field });
    }
    Ok(GenTime(PrimitiveDateTime::new(utc.date(), utc.time())))
}

impl DelegationProvenance {
    /// All format limits, in a fixed order (step count first).
    fn validate(&self) -> Result<(), ProvenanceError> {
        if self.steps.is_empty() {
            return Err(ProvenanceError::NoSteps);
        }
        if self.steps.len() > MAX_STEPS {
            return Err(ProvenanceError::TooManySteps {
                found: self.steps.len(),
                max: MAX_STEPS,
            });
        }
        check_str("issuer", &self.issuer, MAX_STRING_BYTES)?;
        check_str("subject", &self.subject, MAX_STRING_BYTES)?;
        to_gen_time("auth_time", self.auth_time)?;
        check_opt_str("auth_context", self.auth_context.as_deref())?;
        check_str("grant_id", &self.grant_id, MAX_STRING_BYTES)?;
        for step in &self.steps {
            check_str("steps.client_id", &step.client_id, MAX_STRING_BYTES)?;
            check_opt_str("steps.client_name", step.client_name.as_deref())?;
            check_str("steps.grant_type", &step.grant_type, MAX_STRING_BYTES)?;
            check_str("steps.scope", &step.scope, MAX_SCOPE_BYTES)?;
            to_gen_time("steps.time", step.time)?;
            check_str("steps.client_auth", &step.client_auth, MAX_STRING_BYTES)?;
            check_opt_str("steps.approval_id", step.approval_id.as_deref())?;
        }
        check_str("token_id", &self.token_id, MAX_STRING_BYTES)?;
        Ok(())
    }

    /// Wire form without the limit checks (the caller validates).
    fn to_wire(&self) -> Result<ProvenanceWire<'_>, ProvenanceError> {
        fn s(v: &str) -> Result<Utf8StringRef<'_>, ProvenanceError> {
            Utf8StringRef::new(v).map_err(der_err)
        }
        fn opt(v: Option<&str>) -> Result<Option<Utf8StringRef<'_>>, ProvenanceError> {
            v.map(s).transpose()
        }
        let steps = self
            .steps
            .iter()
            .map(|step| {
                Ok(StepWire {
                    client_id: s(&step.client_id)?,
                    client_name: opt(step.client_name.as_deref())?,
                    grant_type: s(&step.grant_type)?,
                    scope: s(&step.scope)?,
                    time: to_gen_time("steps.time", step.time)?,
                    client_auth: s(&step.client_auth)?,
                    approval_id: opt(step.approval_id.as_deref())?,
                })
            })
            .collect::<Result<Vec<_>, ProvenanceError>>()?;
        Ok(ProvenanceWire {
            version: i64::from(PROVENANCE_VERSION),
            issuer: s(&self.issuer)?,
            subject: s(&self.subject)?,
            auth_time: to_gen_time("auth_time", self.auth_time)?,
            auth_context: opt(self.auth_context.as_deref())?,
            grant_id: s(&self.grant_id)?,
            steps,
            token_id: s(&self.token_id)?,
        })
    }

    fn from_wire(wire: &ProvenanceWire<'_>) -> Self {
        fn own(v: Option<Utf8StringRef<'_>>) -> Option<String> {
            v.map(|v| v.as_str().to_owned())
        }
        Self {
            issuer: wire.issuer.as_str().to_owned(),
            subject: wire.subject.as_str().to_owned(),
            auth_time: wire.auth_time.0.assume_utc(),
            auth_context: own(wire.auth_context),
            grant_id: wire.grant_id.as_str().to_owned(),
            steps: wire
                .steps
                .iter()
                .map(|step| DelegationStep {
                    client_id: step.client_id.as_str().to_owned(),
                    client_name: own(step.client_name),
                    grant_type: step.grant_type.as_str().to_owned(),
                    scope: step.scope.as_str().to_owned(),
                    time: step.time.0.assume_utc(),
                    client_auth: step.client_auth.as_str().to_owned(),
                    approval_id: own(step.approval_id),
                })
                .collect(),
            token_id: wire.token_id.as_str().to_owned(),
        }
    }

    /// Checks the limits (1..=MAX_STEPS steps, string lengths, no control
    /// characters (Unicode Cc) or bidi controls (U+200E, U+200F,
    /// U+202A..=U+202E, U+2066..=U+2069) in any string, times at whole
    /// seconds and in years 1950..=9999) and encodes DER.
    ///
    /// Times are converted to UTC; [`from_der`](Self::from_der) returns them
    /// with a UTC offset.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::NoSteps`], [`ProvenanceError::TooManySteps`],
    /// [`ProvenanceError::StringTooLong`],
    /// [`ProvenanceError::ForbiddenCharacter`],
    /// [`ProvenanceError::TimeOutOfRange`] or
    /// [`ProvenanceError::FractionalSeconds`] for the first limit broken.
    pub fn to_der(&self) -> Result<Vec<u8>, ProvenanceError> {
        self.validate()?;
        self.to_wire()?.to_der().map_err(der_err)
    }

    /// Strict DER decode of the extension value (extnValue contents):
    /// refuses trailing bytes, unknown versions, limits exceeded, non-DER
    /// encodings, with a clear error.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::UnsupportedVersion`] for any version but 1 (checked
    /// first), [`ProvenanceError::Der`] for anything der refuses,
    /// [`ProvenanceError::TrailingData`], the limit errors of
    /// [`to_der`](Self::to_der), and [`ProvenanceError::NonCanonical`] if the
    /// input is not exactly the DER encoding of what it decodes to.
    pub fn from_der(bytes: &[u8]) -> Result<Self, ProvenanceError> {
        // Look at the version first, so that a later version whose layout
        // differs is reported as such rather than as a DER error.
        if let Ok(version) = peek_version(bytes)
            && version != i64::from(PROVENANCE_VERSION)
        {
            return Err(ProvenanceError::UnsupportedVersion(version));
        }
        let mut reader = SliceReader::new(bytes).map_err(der_err)?;
        let wire = ProvenanceWire::decode(&mut reader).map_err(der_err)?;
        if !reader.is_finished() {
            return Err(ProvenanceError::TrailingData);
        }
        if wire.version != i64::from(PROVENANCE_VERSION) {
            return Err(ProvenanceError::UnsupportedVersion(wire.version));
        }
        let provenance = Self::from_wire(&wire);
        provenance.validate()?;
        // der 0.7 silently skips a context-specific element whose tag number
        // is lower than the one an OPTIONAL field expects (e.g. a stray [0]
        // before or instead of a step's [1] approvalId). Re-encoding and
        // comparing closes that and any other non-canonical leniency.
        if wire.to_der().map_err(der_err)? != bytes {
            return Err(ProvenanceError::NonCanonical);
        }
        Ok(provenance)
    }

    /// The presenter: the last step.
    #[must_use]
    pub fn presenter(&self) -> Option<&DelegationStep> {
        self.steps.last()
    }
}

/// The `version` INTEGER at the start of the outer SEQUENCE.
fn peek_version(bytes: &[u8]) -> der::Result<i64> {
    let mut reader = SliceReader::new(bytes)?;
    let header = Header::decode(&mut reader)?;
    header.tag.assert_eq(Tag::Sequence)?;
    i64::decode(&mut reader)
}

// ---------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------

/// A string for a terminal: control characters, bidi controls and line or
/// paragraph separators as `\u{..}`, backslash as `\\`, and (when quoted)
/// `"` as `\"`.
struct Escaped<'a> {
    text: &'a str,
    quoted: bool,
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        if self.quoted {
            f.write_char('"')?;
        }
        for c in self.text.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' if self.quoted => f.write_str("\\\"")?,
                c if is_forbidden_char(c) || matches!(c, '\u{2028}' | '\u{2029}') => {
                    write!(f, "\\u{{{:x}}}", u32::from(c))?;
                }
                c => f.write_char(c)?,
            }
        }
        if self.quoted {
            f.write_char('"')?;
        }
        Ok(())
    }
}

fn esc(text: &str) -> Escaped<'_> {
    Escaped {
        text,
        quoted: false,
    }
}

fn quoted(text: &str) -> Escaped<'_> {
    Escaped { text, quoted: true }
}

/// RFC 3339 in UTC, falling back to `time`'s own format if that fails.
fn rfc3339_utc(t: OffsetDateTime) -> String {
    t.checked_to_offset(UtcOffset::UTC)
        .and_then(|utc| utc.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

impl DelegationProvenance {
    /// The chain in one line, the person first and the presenter last,
    /// each acting for the one before: `alice ⇐ portal ⇐ wps ⇐ broker-a`.
    /// A client that appears at two consecutive steps (the root presenting
    /// its own token) is named once. Relying parties decide on the person
    /// and the last actor; the others are informational (RFC 8693 §4.1).
    pub fn chain_summary(&self) -> String {
        // A service account acts as itself: its subject is
        // `service:<root client>`, named once as the client.
        let own_account = self
            .steps
            .first()
            .is_some_and(|root| self.subject.strip_prefix("service:") == Some(&root.client_id));
        let mut names: Vec<&str> = if own_account {
            Vec::new()
        } else {
            vec![self.subject.as_str()]
        };
        for (n, step) in self.steps.iter().enumerate() {
            let consecutive = names.last() == Some(&step.client_id.as_str());
            if (n == 0 && !own_account) || !consecutive {
                names.push(&step.client_id);
            }
        }
        names
            .iter()
            .map(|n| esc(n).to_string())
            .collect::<Vec<_>>()
            .join(" ⇐ ")
    }
}

impl fmt::Display for DelegationProvenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chain:        {}", self.chain_summary())?;
        writeln!(f, "issuer:       {}", esc(&self.issuer))?;
        writeln!(f, "subject:      {}", esc(&self.subject))?;
        writeln!(f, "auth time:    {}", rfc3339_utc(self.auth_time))?;
        match &self.auth_context {
            Some(ctx) => writeln!(f, "auth context: {}", esc(ctx))?,
            None => writeln!(f, "auth context: (none)")?,
        }
        writeln!(f, "grant:        {}", esc(&self.grant_id))?;
        writeln!(f, "token:        {}", esc(&self.token_id))?;
        write!(f, "steps (root client first, presenter last):")?;
        for (n, step) in self.steps.iter().enumerate() {
            write!(f, "\n  {}. {}", n + 1, esc(&step.client_id))?;
            if let Some(name) = &step.client_name {
                write!(f, " ({})", esc(name))?;
            }
            write!(
                f,
                " via {} [{}] scope {} at {}",
                esc(&step.grant_type),
                esc(&step.client_auth),
                quoted(&step.scope),
                rfc3339_utc(step.time)
            )?;
            if let Some(approval) = &step.approval_id {
                write!(f, " approval {}", esc(approval))?;
            }
        }
        Ok(())
    }
}

/// serde for `OffsetDateTime` as an RFC 3339 string, like
/// `time::serde::rfc3339` (which needs `time`'s `serde` feature).
mod rfc3339 {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(super) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(D::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Extension OID
// ---------------------------------------------------------------------------

/// Parses a dotted OID string (e.g. `"1.3.6.1.4.1.32473.1"`) for use as the extension
/// OID and returns its arcs (rcgen's `CustomExtension::from_oid_content`
/// takes `&[u64]`).
///
/// Requires at least 2 arcs, first arc 0..=2, second arc ≤ 39 when the first
/// is 0 or 1, no empty arcs, no leading zeros, and every arc (and the first
/// encoded subidentifier, 40·first + second) below 2^31: Go's crypto/x509,
/// pkilint's pyasn1 and RustCrypto const-oid reject larger arcs (e.g.
/// `2.25.<UUID>`). The DER encoding must also fit const-oid's 39 bytes.
///
/// # Errors
///
/// A message naming the offending arc or rule.
pub fn oid_is_valid_for_x509(oid: &str) -> Result<Vec<u64>, String> {
    const ARC_LIMIT: u64 = 1 << 31;
    const MAX_ENCODED_BYTES: usize = 39;
    let mut arcs = Vec::new();
    for (i, part) in oid.split('.').enumerate() {
        if part.is_empty() {
            return Err(format!("OID {oid:?}: arc {} is empty", i + 1));
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "OID {oid:?}: arc {} ({part:?}) is not a decimal number",
                i + 1
            ));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(format!(
                "OID {oid:?}: arc {} ({part}) has a leading zero",
                i + 1
            ));
        }
        let arc = part
            .parse::<u64>()
            .ok()
            .filter(|a| *a < ARC_LIMIT)
            .ok_or_else(|| {
                format!(
                    "OID {oid:?}: arc {} ({part}) is 2^31 or more, which Go's crypto/x509, \
                     pyasn1-based linters and RustCrypto const-oid reject",
                    i + 1
                )
            })?;
        arcs.push(arc);
    }
    let (first, second, rest) = match arcs.as_slice() {
        [first, second, rest @ ..] => (*first, *second, rest),
        _ => return Err(format!("OID {oid:?}: needs at least two arcs")),
    };
    if first > 2 {
        return Err(format!("OID {oid:?}: first arc must be 0, 1 or 2"));
    }
    if first < 2 && second > 39 {
        return Err(format!(
            "OID {oid:?}: second arc must be at most 39 when the first is 0 or 1"
        ));
    }
    let head = first * 40 + second;
    // The first two arcs share one subidentifier, 40*first+second. When it
    // needs more than one octet (2.48 and above, e.g. the 2.999 example arc)
    // pyasn1 — and so pkilint — fails to decode the certificate ("OID
    // contains out-of-range arc"), and x509-parser prints 2.999.1 as
    // 3.16.55.1. Such OIDs are valid X.509 but not interoperable: refuse them.
    if head > 127 {
        return Err(format!(
            "OID {oid:?}: its first two arcs encode as {head} (above 127), which pyasn1-based \
             tools such as pkilint cannot decode; use an arc such as 1.3.6.1.4.1.<your PEN>"
        ));
    }
    let base128_len = |v: u64| (64 - (v | 1).leading_zeros() as usize).div_ceil(7);
    let encoded: usize = base128_len(head) + rest.iter().map(|a| base128_len(*a)).sum::<usize>();
    if encoded > MAX_ENCODED_BYTES {
        return Err(format!(
            "OID {oid:?}: encodes to {encoded} bytes, more than the {MAX_ENCODED_BYTES} RustCrypto const-oid accepts"
        ));
    }
    Ok(arcs)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]
mod tests {
    use super::*;
    use der::asn1::AnyRef;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn sample() -> DelegationProvenance {
        DelegationProvenance {
            issuer: "https://login.example.org".into(),
            subject: "3f9c2a1e-alice".into(),
            auth_time: datetime!(2026-03-02 08:15:30 UTC),
            auth_context: Some("https://refeds.org/assurance/IAP/medium".into()),
            grant_id: "gr-7Q2M".into(),
            steps: vec![
                DelegationStep {
                    client_id: "portal".into(),
                    client_name: Some("Climate Portal".into()),
                    grant_type: "authorization_code".into(),
                    scope: "openid compute:submit storage:read".into(),
                    time: datetime!(2026-03-02 08:15:42 UTC),
                    client_auth: "none+pkce".into(),
                    approval_id: Some("ap-1".into()),
                },
                DelegationStep {
                    client_id: "wps".into(),
                    client_name: Some("Processing Service".into()),
                    grant_type: "token-exchange".into(),
                    scope: "compute:submit storage:read".into(),
                    time: datetime!(2026-03-02 08:20:03 UTC),
                    client_auth: "tls_client_auth".into(),
                    approval_id: None,
                },
                DelegationStep {
                    client_id: "broker".into(),
                    client_name: None,
                    grant_type: "certificate".into(),
                    scope: "storage:read".into(),
                    time: datetime!(2026-03-02 08:20:05 UTC),
                    client_auth: "client_secret_basic".into(),
                    approval_id: None,
                },
            ],
            token_id: "jti-b41c".into(),
        }
    }

    /// One short step, so the whole encoding is under 128 bytes.
    fn small() -> DelegationProvenance {
        DelegationProvenance {
            issuer: "i".into(),
            subject: "s".into(),
            auth_time: datetime!(2026-01-01 00:00:00 UTC),
            auth_context: None,
            grant_id: "g".into(),
            steps: vec![DelegationStep {
                client_id: "c".into(),
                client_name: None,
                grant_type: "t".into(),
                scope: "x".into(),
                time: datetime!(2026-01-01 00:00:01 UTC),
                client_auth: "a".into(),
                approval_id: None,
            }],
            token_id: "j".into(),
        }
    }

    /// Encodes without the limit checks, to produce invalid inputs.
    fn encode_unchecked(p: &DelegationProvenance) -> Vec<u8> {
        let mut wire = p.to_wire().unwrap();
        wire.version = 1;
        wire.to_der().unwrap()
    }

    /// The sample encoded (checked against `openssl asn1parse`, see the
    /// golden test and docs/provenance-asn1.md).
    const SAMPLE_HEX: &str = concat!(
        "308201a80201010c1968747470733a2f2f6c6f67696e2e6578616d706c652e6f72670c0e33663963",
        "326131652d616c696365180f32303236303330323038313533305a802768747470733a2f2f726566",
        "6564732e6f72672f6173737572616e63652f4941502f6d656469756d0c0767722d3751324d308201",
        "2930720c06706f7274616c800e436c696d61746520506f7274616c0c12617574686f72697a617469",
        "6f6e5f636f64650c226f70656e696420636f6d707574653a7375626d69742073746f726167653a72",
        "656164180f32303236303330323038313534325a0c096e6f6e652b706b6365810461702d3130680c",
        "03777073801250726f63657373696e6720536572766963650c0e746f6b656e2d65786368616e6765",
        "0c1b636f6d707574653a7375626d69742073746f726167653a72656164180f323032363033303230",
        "38323030335a0c0f746c735f636c69656e745f6175746830490c0662726f6b65720c0b6365727469",
        "6669636174650c0c73746f726167653a72656164180f32303236303330323038323030355a0c1363",
        "6c69656e745f7365637265745f62617369630c086a74692d62343163",
    );

    #[test]
    fn round_trip_three_steps() {
        let p = sample();
        let der = p.to_der().unwrap();
        let back = DelegationProvenance::from_der(&der).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            back.presenter().map(|s| s.client_id.as_str()),
            Some("broker")
        );
        assert_eq!(back.to_der().unwrap(), der);
    }

    #[test]
    fn golden_bytes() {
        let der = sample().to_der().unwrap();
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, SAMPLE_HEX);
    }

    #[test]
    fn non_utc_offsets_are_normalised() {
        let mut p = sample();
        p.auth_time = datetime!(2026-03-02 09:15:30 +01:00);
        let back = DelegationProvenance::from_der(&p.to_der().unwrap()).unwrap();
        assert_eq!(back.auth_time.offset(), UtcOffset::UTC);
        assert_eq!(back, sample());
    }

    #[test]
    fn serde_json_round_trip_uses_rfc3339() {
        let p = sample();
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains("\"auth_time\":\"2026-03-02T08:15:30Z\""),
            "{json}"
        );
        let back: DelegationProvenance = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn display_is_readable() {
        let text = sample().to_string();
        let expected = "\
chain:        3f9c2a1e-alice ⇐ portal ⇐ wps ⇐ broker
issuer:       https://login.example.org
subject:      3f9c2a1e-alice
auth time:    2026-03-02T08:15:30Z
auth context: https://refeds.org/assurance/IAP/medium
grant:        gr-7Q2M
token:        jti-b41c
steps (root client first, presenter last):
  1. portal (Climate Portal) via authorization_code [none+pkce] scope \"openid compute:submit storage:read\" at 2026-03-02T08:15:42Z approval ap-1
  2. wps (Processing Service) via token-exchange [tls_client_auth] scope \"compute:submit storage:read\" at 2026-03-02T08:20:03Z
  3. broker via certificate [client_secret_basic] scope \"storage:read\" at 2026-03-02T08:20:05Z";
        assert_eq!(text, expected);
    }

    #[test]
    fn display_escapes_controls() {
        let mut p = sample();
        p.subject = "alice\u{1b}[2J\nroot\u{202e}".into();
        p.steps[0].scope = "a\"b\\c".into();
        let text = p.to_string();
        assert!(
            text.contains("subject:      alice\\u{1b}[2J\\u{a}root\\u{202e}\n"),
            "{text}"
        );
        assert!(text.contains("scope \"a\\\"b\\\\c\""), "{text}");
        assert!(!text.contains('\u{1b}'));
        assert_eq!(text.lines().count(), 11, "one line more: the chain summary");
        assert!(text.starts_with("chain:        alice\\u{1b}[2J"), "{text}");
    }

    // -- refusals ----------------------------------------------------------

    #[test]
    fn der_from_der_refuses_trailing_data() {
        // The der crate's own top-level decode refuses trailing data ...
        let mut der = sample().to_der().unwrap();
        der.push(0);
        let err = ProvenanceWire::from_der(&der).err().unwrap();
        assert!(
            matches!(err.kind(), der::ErrorKind::TrailingData { .. }),
            "{err}"
        );
        // ... and from_der maps it to TrailingData.
        assert_eq!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::TrailingData)
        );
        der.pop();
        der.extend_from_slice(&der.clone());
        assert_eq!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::TrailingData)
        );
    }

    #[test]
    fn refuses_version_2_and_others() {
        for v in [0, 2, -1, 255, i64::MAX] {
            let p = small();
            let mut wire = p.to_wire().unwrap();
            wire.version = v;
            let der = wire.to_der().unwrap();
            assert_eq!(
                DelegationProvenance::from_der(&der),
                Err(ProvenanceError::UnsupportedVersion(v))
            );
        }
    }

    /// A future version with a different layout is still reported as a
    /// version problem, not as a DER error.
    #[test]
    fn refuses_version_2_with_other_layout() {
        #[derive(Sequence)]
        struct V2<'a> {
            version: i64,
            whatever: Utf8StringRef<'a>,
        }
        let der = V2 {
            version: 2,
            whatever: Utf8StringRef::new("x").unwrap(),
        }
        .to_der()
        .unwrap();
        assert_eq!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn refuses_zero_steps() {
        let mut p = small();
        p.steps.clear();
        assert_eq!(p.to_der(), Err(ProvenanceError::NoSteps));
        assert_eq!(
            DelegationProvenance::from_der(&encode_unchecked(&p)),
            Err(ProvenanceError::NoSteps)
        );
    }

    #[test]
    fn cert_07_sixteen_steps_ok_seventeen_refused() {
        let mut p = small();
        p.steps = vec![p.steps[0].clone(); MAX_STEPS];
        let der = p.to_der().unwrap();
        assert_eq!(DelegationProvenance::from_der(&der).unwrap(), p);
        p.steps.push(p.steps[0].clone());
        let want = Some(ProvenanceError::TooManySteps { found: 17, max: 16 });
        assert_eq!(p.to_der().err(), want.clone());
        assert_eq!(
            DelegationProvenance::from_der(&encode_unchecked(&p)).err(),
            want
        );
    }

    #[test]
    fn cert_07_string_limits() {
        let mut p = sample();
        p.issuer = "a".repeat(MAX_STRING_BYTES);
        p.steps[1].scope = "s".repeat(MAX_SCOPE_BYTES);
        assert_eq!(
            DelegationProvenance::from_der(&p.to_der().unwrap()).unwrap(),
            p
        );

        let mut long = sample();
        long.issuer = "a".repeat(MAX_STRING_BYTES + 1);
        let want = Some(ProvenanceError::StringTooLong {
            field: "issuer",
            max: 1024,
        });
        assert_eq!(long.to_der().err(), want.clone());
        assert_eq!(
            DelegationProvenance::from_der(&encode_unchecked(&long)).err(),
            want
        );

        // Bytes, not characters: 342 × 'é' (2 bytes) = 684 bytes is fine, 513 is not.
        let mut p = sample();
        p.steps[2].approval_id = Some("é".repeat(513));
        assert_eq!(
            p.to_der(),
            Err(ProvenanceError::StringTooLong {
                field: "steps.approval_id",
                max: 1024
            })
        );

        let mut p = sample();
        p.steps[0].scope = "s".repeat(MAX_SCOPE_BYTES + 1);
        let want = Some(ProvenanceError::StringTooLong {
            field: "steps.scope",
            max: 4096,
        });
        assert_eq!(p.to_der().err(), want.clone());
        assert_eq!(
            DelegationProvenance::from_der(&encode_unchecked(&p)).err(),
            want
        );
    }

    #[test]
    fn refuses_control_and_bidi_characters() {
        for c in [
            '\0', '\n', '\u{7f}', '\u{85}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}',
            '\u{2066}', '\u{2069}',
        ] {
            let mut p = sample();
            p.steps[1].client_name = Some(format!("Processing{c}Service"));
            let want = Some(ProvenanceError::ForbiddenCharacter {
                field: "steps.client_name",
            });
            assert_eq!(p.to_der().err(), want.clone(), "{c:?}");
            assert_eq!(
                DelegationProvenance::from_der(&encode_unchecked(&p)).err(),
                want,
                "{c:?}"
            );
        }
        // Other invisible format characters are allowed (escaping is Display's job).
        let mut p = sample();
        p.subject = "zero\u{200b}width".into();
        assert!(p.to_der().is_ok());
    }

    #[test]
    fn refuses_fractional_seconds_and_out_of_range_years() {
        let mut p = sample();
        p.steps[2].time = datetime!(2026-03-02 08:20:05.5 UTC);
        assert_eq!(
            p.to_der(),
            Err(ProvenanceError::FractionalSeconds {
                field: "steps.time"
            })
        );

        let mut p = sample();
        p.auth_time = datetime!(2026-03-02 08:20:05.000_000_001 UTC);
        assert_eq!(
            p.to_der(),
            Err(ProvenanceError::FractionalSeconds { field: "auth_time" })
        );

        for t in [
            datetime!(1949-12-31 23:59:59 UTC),
            datetime!(1950-01-01 00:59:59 +01:00),
            datetime!(0001-01-01 00:00:00 UTC),
            datetime!(9999-12-31 23:00:00 -01:00),
        ] {
            let mut p = sample();
            p.auth_time = t;
            assert_eq!(
                p.to_der(),
                Err(ProvenanceError::TimeOutOfRange { field: "auth_time" }),
                "{t}"
            );
        }
        for t in [
            datetime!(1950-01-01 00:00:00 UTC),
            datetime!(9999-12-31 23:59:59 UTC),
        ] {
            let mut p = sample();
            p.auth_time = t;
            assert_eq!(
                DelegationProvenance::from_der(&p.to_der().unwrap()).unwrap(),
                p
            );
        }
    }

    /// `DelegationProvenance` with raw control over some elements, to build
    /// encodings that the real encoder never produces.
    #[derive(Sequence)]
    #[asn1(tag_mode = "IMPLICIT")]
    struct EvilProv<'a> {
        version: i64,
        issuer: Utf8StringRef<'a>,
        subject: Utf8StringRef<'a>,
        auth_time: AnyRef<'a>,
        #[asn1(context_specific = "0", optional = "true")]
        auth_context: Option<Utf8StringRef<'a>>,
        grant_id: Utf8StringRef<'a>,
        steps: Vec<EvilStep<'a>>,
        token_id: Utf8StringRef<'a>,
        #[asn1(optional = "true")]
        extra: Option<AnyRef<'a>>,
    }

    #[derive(Sequence)]
    #[asn1(tag_mode = "IMPLICIT")]
    struct EvilStep<'a> {
        client_id: Utf8StringRef<'a>,
        #[asn1(context_specific = "0", optional = "true")]
        client_name: Option<Utf8StringRef<'a>>,
        grant_type: Utf8StringRef<'a>,
        scope: Utf8StringRef<'a>,
        time: AnyRef<'a>,
        client_auth: Utf8StringRef<'a>,
        #[asn1(optional = "true")]
        before_approval: Option<AnyRef<'a>>,
        #[asn1(context_specific = "1", optional = "true")]
        approval_id: Option<Utf8StringRef<'a>>,
        #[asn1(optional = "true")]
        after_approval: Option<AnyRef<'a>>,
    }

    fn u(s: &str) -> Utf8StringRef<'_> {
        Utf8StringRef::new(s).unwrap()
    }

    fn gt(s: &str) -> AnyRef<'_> {
        AnyRef::new(Tag::GeneralizedTime, s.as_bytes()).unwrap()
    }

    fn evil<'a>(auth_time: AnyRef<'a>, step: EvilStep<'a>, extra: Option<AnyRef<'a>>) -> Vec<u8> {
        EvilProv {
            version: 1,
            issuer: u("i"),
            subject: u("s"),
            auth_time,
            auth_context: None,
            grant_id: u("g"),
            steps: vec![step],
            token_id: u("j"),
            extra,
        }
        .to_der()
        .unwrap()
    }

    fn evil_step(time: AnyRef<'_>) -> EvilStep<'_> {
        EvilStep {
            client_id: u("c"),
            client_name: None,
            grant_type: u("t"),
            scope: u("x"),
            time,
            client_auth: u("a"),
            before_approval: None,
            approval_id: None,
            after_approval: None,
        }
    }

    #[test]
    fn evil_baseline_matches_real_encoder() {
        let der = evil(
            gt("20260101000000Z"),
            evil_step(gt("20260101000001Z")),
            None,
        );
        assert_eq!(der, small().to_der().unwrap());
        assert_eq!(DelegationProvenance::from_der(&der).unwrap(), small());
    }

    #[test]
    fn refuses_non_rfc5280_generalized_time() {
        for bad in [
            "20260101000000.5Z",
            "20260101000000.0Z",
            "20260101000000",
            "20260101000000+0100",
            "202601010000Z",
            "20261301000000Z",
            "20260230000000Z",
            "20260101240000Z",
            "20260101235960Z",
            "2026010100000 Z",
            "+0260101000000Z",
        ] {
            let der = evil(gt(bad), evil_step(gt("20260101000001Z")), None);
            let err = DelegationProvenance::from_der(&der).unwrap_err();
            assert!(matches!(err, ProvenanceError::Der(_)), "{bad}: {err:?}");
        }
        // Well-formed but too early.
        let der = evil(
            gt("19491231235959Z"),
            evil_step(gt("20260101000001Z")),
            None,
        );
        assert_eq!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::TimeOutOfRange { field: "auth_time" })
        );
        // Before 1970 is fine (der's own GeneralizedTime could not do this).
        let der = evil(
            gt("19500101000000Z"),
            evil_step(gt("19691231235959Z")),
            None,
        );
        let p = DelegationProvenance::from_der(&der).unwrap();
        assert_eq!(p.steps[0].time, datetime!(1969-12-31 23:59:59 UTC));
    }

    #[test]
    fn refuses_extra_elements() {
        let t = || gt("20260101000001Z");
        // An extra element at the end of the outer SEQUENCE.
        let der = evil(t(), evil_step(t()), Some(u("x").into()));
        assert!(matches!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::Der(_))
        ));
        // An extra UTF8String at the end of a step.
        let mut step = evil_step(t());
        step.after_approval = Some(u("x").into());
        let der = evil(t(), step, None);
        assert!(matches!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::Der(_))
        ));
        // A stray [0] where [1] approvalId may stand (before it, or instead
        // of it): der 0.7 skips lower-numbered context-specific elements
        // while looking for [1]; the canonical re-encoding check catches it.
        let stray = || {
            let tag = Tag::ContextSpecific {
                constructed: false,
                number: der::TagNumber::N0,
            };
            AnyRef::new(tag, b"x").unwrap()
        };
        for with_approval in [true, false] {
            let mut step = evil_step(t());
            step.before_approval = Some(stray());
            step.approval_id = with_approval.then(|| u("ap"));
            let der = evil(t(), step, None);
            let r = ProvenanceWire::from_der(&der).map(|_| ());
            assert!(r.is_ok(), "der 0.7 behaviour changed: {r:?}");
            assert_eq!(
                DelegationProvenance::from_der(&der),
                Err(ProvenanceError::NonCanonical)
            );
        }
        // After [1] der itself refuses it.
        let mut step = evil_step(t());
        step.approval_id = Some(u("ap"));
        step.after_approval = Some(stray());
        let der = evil(t(), step, None);
        assert!(matches!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::Der(_))
        ));
    }

    #[test]
    fn refuses_explicit_tagging_of_optional_fields() {
        // [0] EXPLICIT (constructed 0xA0 wrapping a UTF8String) is not our encoding.
        let inner = u("Climate Portal").to_der().unwrap();
        let explicit = AnyRef::new(
            Tag::ContextSpecific {
                constructed: true,
                number: der::TagNumber::N0,
            },
            &inner,
        )
        .unwrap();
        // A step whose second element is an arbitrary TLV.
        #[derive(Sequence)]
        struct StepAny<'a> {
            client_id: Utf8StringRef<'a>,
            client_name: AnyRef<'a>,
            grant_type: Utf8StringRef<'a>,
            scope: Utf8StringRef<'a>,
            time: AnyRef<'a>,
            client_auth: Utf8StringRef<'a>,
        }
        #[derive(Sequence)]
        struct ProvAny<'a> {
            version: i64,
            issuer: Utf8StringRef<'a>,
            subject: Utf8StringRef<'a>,
            auth_time: AnyRef<'a>,
            grant_id: Utf8StringRef<'a>,
            steps: Vec<StepAny<'a>>,
            token_id: Utf8StringRef<'a>,
        }
        let der = ProvAny {
            version: 1,
            issuer: u("i"),
            subject: u("s"),
            auth_time: gt("20260101000000Z"),
            grant_id: u("g"),
            steps: vec![StepAny {
                client_id: u("c"),
                client_name: explicit,
                grant_type: u("t"),
                scope: u("x"),
                time: gt("20260101000001Z"),
                client_auth: u("a"),
            }],
            token_id: u("j"),
        }
        .to_der()
        .unwrap();
        assert!(matches!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::Der(_))
        ));
    }

    #[test]
    fn refuses_non_canonical_lengths_and_integers() {
        let der = small().to_der().unwrap();
        assert!(der.len() < 128 && der[1] < 0x80);
        let body = &der[2..];
        // Long-form length where the short form is required.
        let long1 = [&[0x30, 0x81, der[1]][..], body].concat();
        let long2 = [&[0x30, 0x82, 0x00, der[1]][..], body].concat();
        // Indefinite length (BER only).
        let indefinite = [&[0x30, 0x80][..], body, &[0, 0]].concat();
        for bad in [long1, long2, indefinite] {
            let err = DelegationProvenance::from_der(&bad).unwrap_err();
            assert!(matches!(err, ProvenanceError::Der(_)), "{err:?}");
        }
        // version INTEGER with a superfluous leading zero: 02 02 00 01.
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x01]);
        let padded = [&[0x30, der[1] + 1, 0x02, 0x02, 0x00, 0x01][..], &der[5..]].concat();
        let err = DelegationProvenance::from_der(&padded).unwrap_err();
        assert!(matches!(err, ProvenanceError::Der(_)), "{err:?}");
        // Not a SEQUENCE at all.
        assert!(matches!(
            DelegationProvenance::from_der(&[0x31, 0x00]),
            Err(ProvenanceError::Der(_))
        ));
        assert!(matches!(
            DelegationProvenance::from_der(&[]),
            Err(ProvenanceError::Der(_))
        ));
    }

    #[test]
    fn refuses_invalid_utf8() {
        let mut der = small().to_der().unwrap();
        // issuer "i" sits at 5..8: 0C 01 69.
        assert_eq!(&der[5..8], &[0x0c, 0x01, b'i']);
        der[7] = 0xff;
        assert!(matches!(
            DelegationProvenance::from_der(&der),
            Err(ProvenanceError::Der(_))
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for der in [sample().to_der().unwrap(), small().to_der().unwrap()] {
            for n in 0..der.len() {
                assert!(
                    DelegationProvenance::from_der(&der[..n]).is_err(),
                    "prefix {n}"
                );
            }
        }
    }

    #[test]
    fn golden_openssl_asn1parse() {
        let der = sample().to_der().unwrap();
        let child = std::process::Command::new("openssl")
            .args(["asn1parse", "-inform", "DER"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("note: openssl not found; skipping the asn1parse golden test");
                return;
            }
            Err(e) => panic!("spawning openssl: {e}"),
        };
        {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(&der).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // "   12:d=1  hl=2 l=  25 prim: UTF8STRING        :https://login..."
        let items: Vec<(String, String)> = text
            .lines()
            .map(|line| {
                let rest = line
                    .split_once("prim: ")
                    .or_else(|| line.split_once("cons: "))
                    .map(|(_, r)| r)
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"));
                let (kind, value) = rest.split_once(':').unwrap_or((rest, ""));
                (kind.trim().to_owned(), value.to_owned())
            })
            .collect();
        let expected: Vec<(&str, &str)> = vec![
            ("SEQUENCE", ""),
            ("INTEGER", "01"),
            ("UTF8STRING", "https://login.example.org"),
            ("UTF8STRING", "3f9c2a1e-alice"),
            ("GENERALIZEDTIME", "20260302081530Z"),
            ("cont [ 0 ]", ""),
            ("UTF8STRING", "gr-7Q2M"),
            ("SEQUENCE", ""),
            ("SEQUENCE", ""),
            ("UTF8STRING", "portal"),
            ("cont [ 0 ]", ""),
            ("UTF8STRING", "authorization_code"),
            ("UTF8STRING", "openid compute:submit storage:read"),
            ("GENERALIZEDTIME", "20260302081542Z"),
            ("UTF8STRING", "none+pkce"),
            ("cont [ 1 ]", ""),
            ("SEQUENCE", ""),
            ("UTF8STRING", "wps"),
            ("cont [ 0 ]", ""),
            ("UTF8STRING", "token-exchange"),
            ("UTF8STRING", "compute:submit storage:read"),
            ("GENERALIZEDTIME", "20260302082003Z"),
            ("UTF8STRING", "tls_client_auth"),
            ("SEQUENCE", ""),
            ("UTF8STRING", "broker"),
            ("UTF8STRING", "certificate"),
            ("UTF8STRING", "storage:read"),
            ("GENERALIZEDTIME", "20260302082005Z"),
            ("UTF8STRING", "client_secret_basic"),
            ("UTF8STRING", "jti-b41c"),
        ];
        let got: Vec<(&str, &str)> = items
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, expected, "openssl asn1parse output:\n{text}");
    }

    // -- OID ---------------------------------------------------------------

    #[test]
    fn oid_validation() {
        assert!(
            oid_is_valid_for_x509("2.999.1").is_err(),
            "2.999 does not interoperate"
        );
        assert_eq!(oid_is_valid_for_x509("2.47.1"), Ok(vec![2, 47, 1]));
        assert!(oid_is_valid_for_x509("2.48.1").is_err());
        assert_eq!(
            oid_is_valid_for_x509("1.3.6.1.4.1.32473.1"),
            Ok(vec![1, 3, 6, 1, 4, 1, 32473, 1])
        );
        assert_eq!(
            oid_is_valid_for_x509("1.3.6.1.4.1.99999.1"),
            Ok(vec![1, 3, 6, 1, 4, 1, 99999, 1])
        );
        assert_eq!(
            oid_is_valid_for_x509("2.5.2147483647"),
            Ok(vec![2, 5, 2_147_483_647])
        );
        assert_eq!(oid_is_valid_for_x509("0.39"), Ok(vec![0, 39]));
        assert_eq!(oid_is_valid_for_x509("2.0"), Ok(vec![2, 0]));
        for bad in [
            "2.25.329800735698586629295641978511506172918",
            "2.999.2147483648",
            "2.2147483600",
            "3.1",
            "1",
            "",
            "1.40",
            "0.40",
            "2.999.",
            "2..1",
            ".2.1",
            "2.01",
            "2.999.+1",
            "2.999.-1",
            "2.999. 1",
            "2.999.1a",
        ] {
            assert!(oid_is_valid_for_x509(bad).is_err(), "{bad:?} accepted");
        }
        // const-oid's 39-byte limit.
        let many = format!("2.5{}", ".2147483647".repeat(8));
        assert!(oid_is_valid_for_x509(&many).is_err());
        let fits = format!("2.5{}", ".2147483647".repeat(7));
        assert!(oid_is_valid_for_x509(&fits).is_ok());
    }

    // -- property tests ----------------------------------------------------

    fn text() -> impl Strategy<Value = String> {
        // Printable Unicode: no category C (so no Cc and no bidi controls).
        proptest::string::string_regex("\\PC{0,48}").unwrap()
    }

    fn when() -> impl Strategy<Value = OffsetDateTime> {
        let min = datetime!(1950-01-01 00:00:00 UTC).unix_timestamp();
        let max = datetime!(9999-12-31 23:59:59 UTC).unix_timestamp();
        (min..=max).prop_map(|s| OffsetDateTime::from_unix_timestamp(s).unwrap())
    }

    fn step() -> impl Strategy<Value = DelegationStep> {
        (
            text(),
            proptest::option::of(text()),
            text(),
            text(),
            when(),
            text(),
            proptest::option::of(text()),
        )
            .prop_map(
                |(client_id, client_name, grant_type, scope, time, client_auth, approval_id)| {
                    DelegationStep {
                        client_id,
                        client_name,
                        grant_type,
                        scope,
                        time,
                        client_auth,
                        approval_id,
                    }
                },
            )
    }

    fn provenance() -> impl Strategy<Value = DelegationProvenance> {
        (
            text(),
            text(),
            when(),
            proptest::option::of(text()),
            text(),
            proptest::collection::vec(step(), 1..=MAX_STEPS),
            text(),
        )
            .prop_map(
                |(issuer, subject, auth_time, auth_context, grant_id, steps, token_id)| {
                    DelegationProvenance {
                        issuer,
                        subject,
                        auth_time,
                        auth_context,
                        grant_id,
                        steps,
                        token_id,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(p in provenance()) {
            let der = p.to_der().unwrap();
            let back = DelegationProvenance::from_der(&der).unwrap();
            prop_assert_eq!(&back, &p);
            let _ = back.to_string();
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = DelegationProvenance::from_der(&bytes);
            let mut seq = vec![0x30, 0x82];
            seq.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
            seq.extend_from_slice(&bytes);
            let _ = DelegationProvenance::from_der(&seq);
        }

        /// Any mutation of a valid encoding is refused or decodes to
        /// something that re-encodes to exactly the mutated bytes.
        #[test]
        fn prop_mutations_are_refused_or_canonical(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        ) {
            let mut der = sample().to_der().unwrap();
            for (i, b) in edits {
                let i = i.index(der.len());
                der[i] = b;
            }
            if let Ok(p) = DelegationProvenance::from_der(&der) {
                prop_assert_eq!(p.to_der().unwrap(), der);
            }
        }
    }
}
