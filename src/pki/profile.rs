//! The certificate profile: every policy choice about what slcs puts into a
//! certificate, loaded from TOML (`certs/profile.toml` is the built-in
//! development default) and validated before the server starts.
//!
//! The profile decides lifetimes, the subject name form, accepted key types,
//! certificatePolicies and the provenance OID. It never holds key material.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

use super::dn::{AttributeType, SubjectPolicy};
use super::goodkey::KeyPolicy;
use super::provenance::{MAX_STEPS, oid_is_valid_for_x509};

/// The built-in development profile.
pub const BUILTIN_PROFILE: &str = include_str!("../../certs/profile.toml");

/// Validity must stay below the IGTF short-lived credential threshold of
/// 1,000,000 seconds, whatever the profile says.
pub const HARD_MAX_LIFETIME_SECS: u64 = 999_999;

/// Back-dating beyond this is refused: it would hide clock problems.
const MAX_BACKDATE_SECS: u64 = 3600;

/// What to do with a requested lifetime above the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AboveMax {
    /// Issue with the maximum lifetime.
    Clamp,
    /// Refuse the request.
    Refuse,
}

/// A validated certificate profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Longest validity, back-dating included.
    pub max_lifetime: Duration,
    /// Validity when none is requested.
    pub default_lifetime: Duration,
    /// Shortest validity worth issuing.
    pub min_lifetime: Duration,
    /// How far notBefore is set before now.
    pub backdate: Duration,
    /// Requests above the maximum.
    pub above_max: AboveMax,
    /// Most delegation steps in one certificate.
    pub max_chain_steps: usize,
    /// certificatePolicies OIDs, dotted.
    pub policies: Vec<String>,
    /// The certificatePolicies extension value, encoded once at load.
    pub certificate_policies_der: Option<Vec<u8>>,
    /// The provenance extension OID, as arcs.
    pub provenance_oid: Vec<u64>,
    /// The same OID, dotted.
    pub provenance_oid_text: String,
    /// How subject names are formed.
    pub subject: SubjectPolicy,
    /// Which CSR keys are accepted.
    pub keys: KeyPolicy,
}

/// What can be wrong with a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read certificate profile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a wrong type.
    #[error("invalid certificate profile {source_name}: {message}")]
    Parse {
        /// Where the profile came from.
        source_name: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A value is not allowed.
    #[error("invalid certificate profile: `{key}` {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The validity window chosen for one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
}

/// Why no validity window could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidityError {
    /// A lifetime of zero seconds was requested.
    #[error("requested lifetime must be at least 1 second")]
    ZeroLifetime,
    /// The profile refuses lifetimes above its maximum.
    #[error("requested lifetime {requested} s exceeds the maximum of {max} s")]
    AboveMaximum {
        /// Requested seconds.
        requested: u64,
        /// Allowed seconds.
        max: u64,
    },
    /// What is left before a hard limit (approval expiry, CA expiry) is
    /// shorter than the profile's minimum.
    #[error("only {remaining} s of validity remain before {limit} ends; the minimum is {min} s")]
    TooShort {
        /// Seconds that would remain.
        remaining: i64,
        /// The minimum.
        min: u64,
        /// Which limit cut it short.
        limit: &'static str,
    },
}

/// An upper bound on notAfter imposed by something other than the profile.
#[derive(Clone, Copy, Debug)]
pub struct NotAfterLimit {
    /// The latest allowed notAfter.
    pub at: OffsetDateTime,
    /// What imposes it, for the error message ("the approval", "the access token").
    pub reason: &'static str,
}

impl Profile {
    /// The built-in development profile.
    pub fn builtin() -> Result<Self, ProfileError> {
        Self::parse(BUILTIN_PROFILE, "built-in", None)
    }

    /// Loads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates profile text; relative file names inside it are
    /// resolved against `base_dir`.
    pub fn parse(
        text: &str,
        source_name: &str,
        base_dir: Option<&Path>,
    ) -> Result<Self, ProfileError> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
        file.validate(base_dir)
    }

    /// Chooses notBefore and notAfter for a certificate issued at `now`.
    ///
    /// notBefore is back-dated, and the back-dating counts inside the maximum
    /// (RFC 5280 §4.1.2.5 validity is the whole window). notAfter is the
    /// earliest of: the requested (or default) lifetime from now, the
    /// profile maximum from notBefore, and every `limits` entry (CA expiry,
    /// approval expiry, client policy).
    pub fn validity(
        &self,
        now: OffsetDateTime,
        requested_secs: Option<u64>,
        limits: &[NotAfterLimit],
    ) -> Result<Validity, ValidityError> {
        // Certificates carry whole seconds (RFC 5280 §4.1.2.5.1/2: no fractions).
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let max = self.max_lifetime.as_secs();
        let lifetime = match requested_secs {
            None => self.default_lifetime.as_secs(),
            Some(0) => return Err(ValidityError::ZeroLifetime),
            Some(r) if r > max && self.above_max == AboveMax::Refuse => {
                return Err(ValidityError::AboveMaximum { requested: r, max });
            }
            Some(r) => r.min(max),
        };
        let not_before = now - self.backdate;
        let mut not_after =
            (now + Duration::from_secs(lifetime)).min(not_before + self.max_lifetime);
        let mut limited_by = "the requested lifetime";
        for limit in limits {
            let at = limit.at.replace_nanosecond(0).unwrap_or(limit.at);
            if at < not_after {
                not_after = at;
                limited_by = limit.reason;
            }
        }
        let remaining = (not_after - now).whole_seconds();
        let min = self.min_lifetime.as_secs();
        if remaining < i64::try_from(min).unwrap_or(i64::MAX) {
            return Err(ValidityError::TooShort {
                remaining: remaining.max(0),
                min,
                limit: limited_by,
            });
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }
}

// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    certificate: CertificateSection,
    subject: SubjectSection,
    keys: KeysSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateSection {
    max_lifetime_secs: u64,
    default_lifetime_secs: u64,
    min_lifetime_secs: u64,
    backdate_secs: u64,
    lifetime_above_max: AboveMax,
    max_chain_steps: u64,
    #[serde(default)]
    policies: Vec<String>,
    provenance_oid: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectSection {
    base: Vec<RdnEntry>,
    person_ou: Option<String>,
    service_ou: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RdnEntry {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysSection {
    allowed: Vec<String>,
    rsa_min_bits: u32,
    fermat_rounds: u32,
    blocklist: Option<PathBuf>,
}

fn invalid(key: &'static str, message: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        key,
        message: message.into(),
    }
}

impl ProfileFile {
    fn validate(self, base_dir: Option<&Path>) -> Result<Profile, ProfileError> {
        let c = self.certificate;
        if c.max_lifetime_secs == 0 || c.max_lifetime_secs > HARD_MAX_LIFETIME_SECS {
            return Err(invalid(
                "certificate.max_lifetime_secs",
                format!(
                    "must be between 1 and {HARD_MAX_LIFETIME_SECS} (below the IGTF 1,000,000 s short-lived threshold), got {}",
                    c.max_lifetime_secs
                ),
            ));
        }
        if c.default_lifetime_secs == 0 || c.default_lifetime_secs > c.max_lifetime_secs {
            return Err(invalid(
                "certificate.default_lifetime_secs",
                "must be between 1 and max_lifetime_secs",
            ));
        }
        if c.min_lifetime_secs == 0 || c.min_lifetime_secs > c.default_lifetime_secs {
            return Err(invalid(
                "certificate.min_lifetime_secs",
                "must be between 1 and default_lifetime_secs",
            ));
        }
        if c.backdate_secs > MAX_BACKDATE_SECS || c.backdate_secs >= c.max_lifetime_secs {
            return Err(invalid(
                "certificate.backdate_secs",
                format!("must be at most {MAX_BACKDATE_SECS} and below max_lifetime_secs"),
            ));
        }
        let max_chain_steps = usize::try_from(c.max_chain_steps)
            .ok()
            .filter(|n| (1..=MAX_STEPS).contains(n))
            .ok_or_else(|| {
                invalid(
                    "certificate.max_chain_steps",
                    format!("must be between 1 and {MAX_STEPS}"),
                )
            })?;
        let provenance_oid = oid_is_valid_for_x509(&c.provenance_oid)
            .map_err(|m| invalid("certificate.provenance_oid", m))?;
        let certificate_policies_der = certificate_policies_der(&c.policies)?;

        let s = self.subject;
        let mut base = Vec::with_capacity(s.base.len());
        for entry in s.base {
            let kind: AttributeType = entry
                .kind
                .parse()
                .map_err(|m: String| invalid("subject.base", m))?;
            base.push((kind, entry.value));
        }
        let subject = SubjectPolicy::new(base, s.person_ou, s.service_ou)
            .map_err(|m| invalid("subject", m))?;

        let k = self.keys;
        let mut keys = KeyPolicy {
            rsa_min_bits: k.rsa_min_bits,
            allow_rsa: false,
            allow_ecdsa_p256: false,
            allow_ecdsa_p384: false,
            allow_ed25519: false,
            fermat_rounds: k.fermat_rounds,
            blocked_spki_sha256: HashSet::new(),
        };
        if ![2048, 3072, 4096].contains(&k.rsa_min_bits) {
            return Err(invalid("keys.rsa_min_bits", "must be 2048, 3072 or 4096"));
        }
        if k.fermat_rounds > 100_000 {
            return Err(invalid("keys.fermat_rounds", "must be at most 100000"));
        }
        if k.allowed.is_empty() {
            return Err(invalid("keys.allowed", "must name at least one key type"));
        }
        for name in &k.allowed {
            match name.as_str() {
                "rsa" => keys.allow_rsa = true,
                "ecdsa-p256" => keys.allow_ecdsa_p256 = true,
                "ecdsa-p384" => keys.allow_ecdsa_p384 = true,
                "ed25519" => keys.allow_ed25519 = true,
                other => {
                    return Err(invalid(
                        "keys.allowed",
                        format!(
                            "unknown key type {other:?}; expected rsa, ecdsa-p256, ecdsa-p384 or ed25519"
                        ),
                    ));
                }
            }
        }
        if let Some(file) = k.blocklist {
            let path = match base_dir {
                Some(dir) if file.is_relative() => dir.join(file),
                _ => file,
            };
            keys.blocked_spki_sha256 = load_blocklist(&path)?;
        }

        Ok(Profile {
            max_lifetime: Duration::from_secs(c.max_lifetime_secs),
            default_lifetime: Duration::from_secs(c.default_lifetime_secs),
            min_lifetime: Duration::from_secs(c.min_lifetime_secs),
            backdate: Duration::from_secs(c.backdate_secs),
            above_max: c.lifetime_above_max,
            max_chain_steps,
            policies: c.policies,
            certificate_policies_der,
            provenance_oid,
            provenance_oid_text: c.provenance_oid,
            subject,
            keys,
        })
    }
}

/// certificatePolicies ::= SEQUENCE SIZE (1..MAX) OF PolicyInformation, each
/// with only a policyIdentifier (RFC 5280 §4.2.1.4); `None` when no policy
/// is configured, since an empty SEQUENCE is not allowed.
fn certificate_policies_der(oids: &[String]) -> Result<Option<Vec<u8>>, ProfileError> {
    #[derive(der::Sequence)]
    struct PolicyInformation {
        policy_identifier: der::asn1::ObjectIdentifier,
    }
    if oids.is_empty() {
        return Ok(None);
    }
    let mut policies = Vec::with_capacity(oids.len());
    for oid in oids {
        oid_is_valid_for_x509(oid).map_err(|m| invalid("certificate.policies", m))?;
        let policy_identifier = der::asn1::ObjectIdentifier::new(oid)
            .map_err(|e| invalid("certificate.policies", format!("{oid}: {e}")))?;
        policies.push(PolicyInformation { policy_identifier });
    }
    der::Encode::to_der(&policies)
        .map(Some)
        .map_err(|e| invalid("certificate.policies", e.to_string()))
}

/// Reads a blocklist: one hex SHA-256 of a DER SubjectPublicKeyInfo per line,
/// blank lines and `#` comments ignored.
fn load_blocklist(path: &Path) -> Result<HashSet<[u8; 32]>, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut set = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut hash = [0u8; 32];
        hex::decode_to_slice(line, &mut hash).map_err(|_| {
            invalid(
                "keys.blocklist",
                format!(
                    "{} line {}: expected 64 hex digits (SHA-256 of a SubjectPublicKeyInfo)",
                    path.display(),
                    number + 1
                ),
            )
        })?;
        set.insert(hash);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn profile() -> Profile {
        Profile::builtin().unwrap()
    }

    #[test]
    fn builtin_profile_is_valid_and_development_flagged() {
        let p = profile();
        assert_eq!(p.provenance_oid, vec![1, 3, 6, 1, 4, 1, 32473, 1]);
        assert_eq!(p.max_lifetime.as_secs(), 43200);
        assert!(p.max_lifetime.as_secs() < 1_000_000);
    }

    #[test]
    fn validity_backdates_inside_the_maximum() {
        let p = profile();
        let now = datetime!(2026-11-23 12:00:00.75 UTC);
        let v = p.validity(now, None, &[]).unwrap();
        assert_eq!(v.not_before, datetime!(2026-11-23 11:59:00 UTC));
        // Whole window never exceeds the maximum.
        assert_eq!(v.not_after - v.not_before, time::Duration::seconds(43200));
        let v = p.validity(now, Some(3600), &[]).unwrap();
        assert_eq!(v.not_after, datetime!(2026-11-23 13:00:00 UTC));
    }

    #[test]
    fn cert_05_validity_clamps_refuses_and_respects_limits() {
        let p = profile();
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let v = p.validity(now, Some(315_360_000), &[]).unwrap();
        assert_eq!(v.not_after - v.not_before, time::Duration::seconds(43200));
        assert_eq!(
            p.validity(now, Some(0), &[]),
            Err(ValidityError::ZeroLifetime)
        );

        let mut refusing = profile();
        refusing.above_max = AboveMax::Refuse;
        assert!(matches!(
            refusing.validity(now, Some(43201), &[]),
            Err(ValidityError::AboveMaximum { .. })
        ));

        let approval = NotAfterLimit {
            at: datetime!(2026-11-23 12:05:00 UTC),
            reason: "the approval",
        };
        let v = p.validity(now, None, &[approval]).unwrap();
        assert_eq!(v.not_after, approval.at);

        let ca = NotAfterLimit {
            at: datetime!(2026-11-23 12:00:30 UTC),
            reason: "the CA certificate",
        };
        let err = p.validity(now, None, &[approval, ca]).unwrap_err();
        assert_eq!(
            err,
            ValidityError::TooShort {
                remaining: 30,
                min: 60,
                limit: "the CA certificate"
            }
        );
    }

    #[test]
    fn invalid_profiles_are_refused_with_the_key() {
        let cases = [
            (
                "max_lifetime_secs = 43200",
                "max_lifetime_secs = 1000000",
                "max_lifetime_secs",
            ),
            (
                "provenance_oid = \"1.3.6.1.4.1.32473.1\"",
                "provenance_oid = \"2.25.329800735698586629295641978511506172918\"",
                "provenance_oid",
            ),
            (
                "max_chain_steps = 8",
                "max_chain_steps = 17",
                "max_chain_steps",
            ),
            ("rsa_min_bits = 2048", "rsa_min_bits = 1024", "rsa_min_bits"),
            (
                "allowed = [\"rsa\", \"ecdsa-p256\", \"ecdsa-p384\", \"ed25519\"]",
                "allowed = [\"dsa\"]",
                "allowed",
            ),
            (
                "service_ou = \"Service Accounts\"",
                "service_ou = \"People\"",
                "subject",
            ),
            (
                "base = [{ type = \"O\", value = \"slcs development\" }]",
                "base = [{ type = \"DC\", value = \"org\" }, { type = \"DC\", value = \"example\" }]",
                "subject",
            ),
            (
                "base = [{ type = \"O\", value = \"slcs development\" }]",
                "base = [{ type = \"CN\", value = \"x\" }]",
                "subject",
            ),
            (
                "backdate_secs = 60",
                "backdate_secs = 7200",
                "backdate_secs",
            ),
            (
                "lifetime_above_max = \"clamp\"",
                "lifetime_above_max = \"ignore\"",
                "lifetime_above_max",
            ),
        ];
        for (from, to, key) in cases {
            assert!(BUILTIN_PROFILE.contains(from), "{from}");
            let text = BUILTIN_PROFILE.replace(from, to);
            let err = Profile::parse(&text, "test", None).unwrap_err();
            assert!(err.to_string().contains(key), "{to}: {err}");
        }
        let err =
            Profile::parse(&format!("{BUILTIN_PROFILE}\nextra = 1\n"), "test", None).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn blocklist_is_loaded_relative_to_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("blocked.txt"),
            format!("# compromised\n{}\n\n", "ab".repeat(32)),
        )
        .unwrap();
        let text = format!("{BUILTIN_PROFILE}\nblocklist = \"blocked.txt\"\n");
        let path = dir.path().join("profile.toml");
        std::fs::write(&path, text).unwrap();
        let p = Profile::load(&path).unwrap();
        assert!(p.keys.blocked_spki_sha256.contains(&[0xab; 32]));

        std::fs::write(dir.path().join("blocked.txt"), "not-hex\n").unwrap();
        let err = Profile::load(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
