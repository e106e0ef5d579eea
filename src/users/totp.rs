//! Time-based one-time passwords (RFC 6238), the administrators' second
//! factor.
//!
//! HOTP (RFC 4226) over HMAC-SHA-1 with 30-second steps and six digits:
//! the parameters every authenticator app supports (Google Authenticator
//! ignores anything else in the `otpauth://` URI). The HMAC comes from the
//! one crypto backend slcs already links (aws-lc-rs); what is written
//! here is only the step arithmetic and RFC 4226 §5.3's truncation.
//!
//! A code is accepted for the current step and one step either side
//! (RFC 6238 §5.2 recommends at most one step of delay), and never twice:
//! the step of the last accepted code is stored with the account, and no
//! code of that step or an earlier one is accepted again (§5.2, "the
//! verifier MUST NOT accept the second attempt of the same OTP").

use aws_lc_rs::hmac;
use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Seconds per step (RFC 6238 §4.1, X = 30).
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Secret length: 160 bits, the HMAC-SHA-1 output size RFC 4226 §4
/// recommends.
const SECRET_BYTES: usize = 20;

/// An account's enrolled TOTP secret and the step of the last code used.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totp {
    /// The shared secret, base32 without padding (the `otpauth://` form).
    /// Kept readable: a TOTP verifier must compute codes from it, so it
    /// cannot be hashed like a password.
    pub secret: String,
    /// The step of the last accepted code.
    #[serde(default)]
    pub last_step: Option<u64>,
    /// When it was enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
}

impl std::fmt::Debug for Totp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Totp")
            .field("last_step", &self.last_step)
            .field("enrolled_at", &self.enrolled_at)
            .finish_non_exhaustive()
    }
}

/// Why a presented code was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpRefusal {
    /// Not six digits, or no step in the window matches.
    Wrong,
    /// It matches a step already used.
    Replayed,
}

impl Totp {
    /// A fresh random secret.
    pub fn generate(now: OffsetDateTime) -> Result<Self, super::UserError> {
        let mut secret = [0u8; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| super::UserError::Internal("random generator failed".into()))?;
        Ok(Self {
            secret: BASE32_NOPAD.encode(&secret),
            last_step: None,
            enrolled_at: now,
        })
    }

    /// The code of step `step`.
    pub fn code_at(&self, step: u64) -> Option<String> {
        let key = BASE32_NOPAD.decode(self.secret.as_bytes()).ok()?;
        Some(hotp(&key, step))
    }

    /// Checks `code` at time `now`; on success, the step it matched, to
    /// be stored as `last_step` before the code counts as used.
    pub fn check(&self, code: &str, now: OffsetDateTime) -> Result<u64, TotpRefusal> {
        let code = code.trim();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpRefusal::Wrong);
        }
        let Ok(key) = BASE32_NOPAD.decode(self.secret.as_bytes()) else {
            return Err(TotpRefusal::Wrong);
        };
        let Ok(current) = u64::try_from(now.unix_timestamp() / STEP_SECS) else {
            return Err(TotpRefusal::Wrong);
        };
        // Every candidate is computed and compared, so the time taken does
        // not tell which step matched.
        let mut matched = None;
        for step in current.saturating_sub(1)..=current.saturating_add(1) {
            let expected = hotp(&key, step);
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                expected.as_bytes(),
                code.as_bytes(),
            )
            .is_ok()
            {
                matched = Some(step);
            }
        }
        match matched {
            None => Err(TotpRefusal::Wrong),
            Some(step) if self.last_step.is_some_and(|last| step <= last) => {
                Err(TotpRefusal::Replayed)
            }
            Some(step) => Ok(step),
        }
    }
}

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 of the big-endian counter, dynamic
/// truncation, the low `DIGITS` decimal digits.
fn hotp(key: &[u8], counter: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    let word = mac
        .get(offset..offset + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
        & 0x7fff_ffff;
    format!(
        "{:0width$}",
        word % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret(last_step: Option<u64>) -> Totp {
        Totp {
            // RFC 6238 Appendix B's SHA-1 seed, "12345678901234567890".
            secret: BASE32_NOPAD.encode(b"12345678901234567890"),
            last_step,
            enrolled_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn rfc_6238_and_4226_test_vectors() {
        // RFC 4226 Appendix D (six digits), counters 0 to 9.
        let hotp_expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, expected) in hotp_expected.iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", counter as u64), *expected);
        }
        // RFC 6238 Appendix B, SHA-1 column, low six of the eight digits.
        for (time, expected) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            let now = OffsetDateTime::from_unix_timestamp(time).unwrap();
            let step = (time / STEP_SECS) as u64;
            let totp = rfc_secret(None);
            assert_eq!(totp.code_at(step).as_deref(), Some(expected), "{time}");
            assert_eq!(totp.check(expected, now), Ok(step), "{time}");
        }
    }

    #[test]
    fn one_step_of_drift_either_side_and_no_more() {
        let totp = rfc_secret(None);
        let now = OffsetDateTime::from_unix_timestamp(1_111_111_111).unwrap();
        let step = (1_111_111_111 / STEP_SECS) as u64;
        for (offset, accepted) in [(-2i64, false), (-1, true), (1, true), (2, false)] {
            let other = step.checked_add_signed(offset).unwrap();
            let code = totp.code_at(other).unwrap();
            assert_eq!(totp.check(&code, now).is_ok(), accepted, "{offset}");
        }
    }

    #[test]
    fn a_used_step_and_earlier_ones_are_refused() {
        let now = OffsetDateTime::from_unix_timestamp(1_111_111_111).unwrap();
        let step = (1_111_111_111 / STEP_SECS) as u64;
        let code = rfc_secret(None).code_at(step).unwrap();
        assert_eq!(
            rfc_secret(Some(step)).check(&code, now),
            Err(TotpRefusal::Replayed)
        );
        let earlier = rfc_secret(None).code_at(step - 1).unwrap();
        assert_eq!(
            rfc_secret(Some(step)).check(&earlier, now),
            Err(TotpRefusal::Replayed)
        );
        let later = rfc_secret(None).code_at(step + 1).unwrap();
        assert_eq!(rfc_secret(Some(step)).check(&later, now), Ok(step + 1));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let totp = rfc_secret(Some(3));
        let shown = format!("{totp:?}");
        assert!(!shown.contains(&totp.secret), "{shown}");
        let mut user = crate::users::User::example("u", "ada", OffsetDateTime::UNIX_EPOCH);
        user.password_hash = Some("$argon2id$v=19$secret-hash".into());
        user.totp = Some(totp.clone());
        let shown = format!("{user:?}");
        assert!(
            !shown.contains("secret-hash") && !shown.contains(&totp.secret),
            "{shown}"
        );
    }

    #[test]
    fn malformed_codes_are_wrong_not_errors() {
        let totp = rfc_secret(None);
        let now = OffsetDateTime::from_unix_timestamp(59).unwrap();
        for bad in ["", "28708", "2870822", "28708a", "２８７０８２", "287 082"] {
            assert_eq!(totp.check(bad, now), Err(TotpRefusal::Wrong), "{bad:?}");
        }
        assert_eq!(totp.check(" 287082 ", now), Ok(1));
        let fresh = Totp::generate(now).unwrap();
        assert_eq!(fresh.secret.len(), 32);
        assert_ne!(fresh.secret, Totp::generate(now).unwrap().secret);
    }
}
