//! Password reset links, made by an administrator and handed to the person
//! out of band.
//!
//! A link carries the subject, its expiry and a MAC over both and over the
//! account's current password hash, under the service's secret pepper. The
//! store keeps nothing: the link stops working when it expires and as soon
//! as the password changes, which using it does, so it works once (the
//! stateless design of many reset schemes; OWASP's Forgot Password Cheat
//! Sheet asks for single use, expiry and unguessability).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use super::User;
use crate::oauth::secrets::{SecretPepper, hash_secret};

/// How long a reset link works.
pub const RESET_LINK_LIFETIME: time::Duration = time::Duration::hours(24);

/// Makes and checks reset links.
#[derive(Clone)]
pub struct ResetLinks {
    pepper: SecretPepper,
}

impl std::fmt::Debug for ResetLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetLinks").finish_non_exhaustive()
    }
}

impl ResetLinks {
    /// Links signed under `pepper`.
    pub fn new(pepper: SecretPepper) -> Self {
        Self { pepper }
    }

    fn mac(&self, sub: &str, expires: i64, user: &User) -> String {
        let bound = user.password_hash.as_deref().unwrap_or("");
        URL_SAFE_NO_PAD.encode(
            hash_secret(
                &self.pepper,
                &format!("password-reset\0{sub}\0{expires}\0{bound}"),
            )
            .as_bytes(),
        )
    }

    /// The token of a link for `user`, working until `now` plus
    /// [`RESET_LINK_LIFETIME`].
    pub fn issue(&self, user: &User, now: OffsetDateTime) -> (String, OffsetDateTime) {
        let expires = now + RESET_LINK_LIFETIME;
        let seconds = expires.unix_timestamp();
        let token = format!(
            "{}.{seconds}.{}",
            URL_SAFE_NO_PAD.encode(user.sub.as_bytes()),
            self.mac(&user.sub, seconds, user)
        );
        (token, expires)
    }

    /// The subject a token names (not yet checked).
    pub fn subject_of(&self, token: &str) -> Option<String> {
        let (sub, _) = token.split_once('.')?;
        if sub.len() > 256 {
            return None;
        }
        String::from_utf8(URL_SAFE_NO_PAD.decode(sub).ok()?).ok()
    }

    /// Whether `token` is a live link for `user` as it is now.
    pub fn is_valid(&self, token: &str, user: &User, now: OffsetDateTime) -> bool {
        let mut parts = token.split('.');
        let (Some(_), Some(seconds), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expires) = seconds.parse::<i64>() else {
            return false;
        };
        if self.subject_of(token).as_deref() != Some(user.sub.as_str())
            || now.unix_timestamp() >= expires
        {
            return false;
        }
        let expected = self.mac(&user.sub, expires, user);
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), mac.as_bytes())
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> ResetLinks {
        ResetLinks::new(SecretPepper::from_bytes(&[7u8; 32]).unwrap())
    }

    #[test]
    fn a_link_works_until_it_expires_or_the_password_changes() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut ada = User::example("u-ada", "ada", now);
        ada.password_hash = Some("$argon2id$old".into());
        let links = links();
        let (token, expires) = links.issue(&ada, now);
        assert_eq!(expires, now + RESET_LINK_LIFETIME);
        assert_eq!(links.subject_of(&token).as_deref(), Some("u-ada"));
        assert!(links.is_valid(&token, &ada, now));
        assert!(links.is_valid(&token, &ada, expires - time::Duration::seconds(1)));
        assert!(!links.is_valid(&token, &ada, expires));

        let mut changed = ada.clone();
        changed.password_hash = Some("$argon2id$new".into());
        assert!(!links.is_valid(&token, &changed, now), "used or changed");

        let bob = User::example("u-bob", "bob", now);
        assert!(!links.is_valid(&token, &bob, now), "another account");
        let other = ResetLinks::new(SecretPepper::from_bytes(&[8u8; 32]).unwrap());
        assert!(!other.is_valid(&token, &ada, now), "another service");
        // A longer expiry written into the token breaks its MAC.
        let (sub, rest) = token.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        let forged = format!("{sub}.{}.{mac}", expires.unix_timestamp() + 86_400);
        assert!(!links.is_valid(&forged, &ada, now));
        for junk in ["", ".", "a.b.c", "a.b.c.d", &format!("{token}.x")] {
            assert!(!links.is_valid(junk, &ada, now), "{junk:?}");
        }
    }
}
