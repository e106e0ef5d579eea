//! Browser sessions and CSRF tokens.
//!
//! A session is a random 256-bit value in a `__Host-` cookie; the store
//! keeps only its keyed hash (a stolen database yields no usable session).
//! Every sign-in makes a new session id (no fixation). CSRF tokens are an
//! HMAC of the value they are bound to: the signed-in session, or before
//! sign-in the pre-login cookie, so a token taken from one browser is
//! worthless in another (OWASP's "synchronizer token" without server
//! state).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Authenticated;
use crate::oauth::secrets::{SecretPepper, hash_secret};
use crate::store::{Store, StoreError};

/// How finely a session's last use is recorded.
const SEEN_GRANULARITY: time::Duration = time::Duration::minutes(1);

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Keyed hash of the cookie value (the store key).
    pub id_hash: String,
    /// The user.
    pub sub: String,
    /// When the user authenticated (OIDC `auth_time`).
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    /// How (RFC 8176 `amr`).
    pub amr: Vec<String>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Absolute end.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When the session was last used, to the minute (the idle timeout
    /// counts from here). Absent in sessions stored before it existed:
    /// `created_at` stands in.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// When a second factor (TOTP) was last proved in this session; the
    /// admin console wants one.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub second_factor_at: Option<OffsetDateTime>,
}

/// Creates, finds and ends sessions; makes and checks CSRF tokens.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    pepper: SecretPepper,
    lifetime: time::Duration,
    idle: time::Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("lifetime", &self.lifetime)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions living `lifetime` from sign-in.
    pub fn new(
        store: Arc<dyn Store>,
        pepper: SecretPepper,
        lifetime: time::Duration,
        idle: time::Duration,
    ) -> Self {
        Self {
            store,
            pepper,
            lifetime,
            idle,
        }
    }

    /// A fresh random cookie value (256 bits, base64url).
    pub fn random_value() -> Result<String, StoreError> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| StoreError::Io("random generator failed".into()))?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn key(&self, cookie_value: &str) -> String {
        hex::encode(hash_secret(&self.pepper, &format!("session\0{cookie_value}")).as_bytes())
    }

    /// Starts a session for `who`; returns the cookie value. Durable on `Ok`.
    pub async fn start(
        &self,
        who: &Authenticated,
        now: OffsetDateTime,
    ) -> Result<(String, Session), StoreError> {
        let value = Self::random_value()?;
        let session = Session {
            id_hash: self.key(&value),
            sub: who.user.sub.clone(),
            auth_time: now,
            amr: who.amr.clone(),
            created_at: now,
            expires_at: now + self.lifetime,
            last_seen: Some(now),
            second_factor_at: None,
        };
        self.store.put_session(&session).await?;
        Ok((value, session))
    }

    /// The live session of `cookie_value`, if any.
    pub async fn find(
        &self,
        cookie_value: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        if cookie_value.len() != 43 {
            return Ok(None);
        }
        let Some(session) = self.store.session(&self.key(cookie_value)).await? else {
            return Ok(None);
        };
        let last_seen = session.last_seen.unwrap_or(session.created_at);
        if session.expires_at <= now || now - last_seen >= self.idle {
            // Over: the absolute end, or unused for too long (OWASP ASVS
            // 3.3.2: idle and absolute timeouts both).
            self.store.delete_session(&session.id_hash).await?;
            return Ok(None);
        }
        if now - last_seen >= SEEN_GRANULARITY {
            // Use is written at most once a minute: a page view is not
            // worth a durable write. Only over the record just read: a
            // session ended meanwhile (sign-out elsewhere, a password
            // change) must stay ended, never be written back.
            let mut seen = session.clone();
            seen.last_seen = Some(now);
            if !self.store.touch_session(&session, &seen).await? {
                return Ok(None);
            }
            return Ok(Some(seen));
        }
        Ok(Some(session))
    }

    /// The holder of `session` just proved a second factor: a new session
    /// replaces it (a new id at every change of privilege, as at sign-in,
    /// so a planted or observed id never gains the factor; ATTACKS WEB-05),
    /// with the same sign-in and absolute end, `second_factor_at` set and
    /// the RFC 8176 `otp` and `mfa` methods added. `None` if the session
    /// ended meanwhile (it is never brought back). Durable on `Some`.
    pub async fn elevate(
        &self,
        session: &Session,
        now: OffsetDateTime,
    ) -> Result<Option<(String, Session)>, StoreError> {
        if self.store.session(&session.id_hash).await?.is_none() {
            return Ok(None);
        }
        let value = Self::random_value()?;
        let mut elevated = session.clone();
        elevated.id_hash = self.key(&value);
        elevated.second_factor_at = Some(now);
        elevated.last_seen = Some(now);
        for method in ["otp", "mfa"] {
            if !elevated.amr.iter().any(|m| m == method) {
                elevated.amr.push(method.to_owned());
            }
        }
        self.store.put_session(&elevated).await?;
        self.store.delete_session(&session.id_hash).await?;
        Ok(Some((value, elevated)))
    }

    /// Ends the session of `cookie_value` (sign-out). Durable on `Ok`.
    pub async fn end(&self, cookie_value: &str) -> Result<(), StoreError> {
        self.store.delete_session(&self.key(cookie_value)).await
    }

    /// The live sessions of person `sub`, newest first.
    pub async fn live_of(
        &self,
        sub: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut sessions: Vec<Session> = self
            .store
            .sessions_of(sub)
            .await?
            .into_iter()
            .filter(|s| s.expires_at > now)
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    /// Ends every session of person `sub` but the one whose keyed hash is
    /// `keep`; how many it ended. Durable on `Ok`.
    pub async fn end_others(&self, sub: &str, keep: &str) -> Result<usize, StoreError> {
        let mut ended = 0;
        for session in self.store.sessions_of(sub).await? {
            if session.id_hash != keep {
                self.store.delete_session(&session.id_hash).await?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The CSRF token for forms shown to the holder of `binding` (the
    /// session or pre-login cookie value).
    pub fn csrf_token(&self, binding: &str) -> String {
        URL_SAFE_NO_PAD.encode(hash_secret(&self.pepper, &format!("csrf\0{binding}")).as_bytes())
    }

    /// Whether `presented` is the CSRF token for `binding`, compared in
    /// constant time.
    pub fn csrf_ok(&self, binding: &str, presented: &str) -> bool {
        let expected = self.csrf_token(binding);
        !binding.is_empty()
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                expected.as_bytes(),
                presented.as_bytes(),
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;

    use super::*;
    use crate::oauth::secrets::PEPPER_BYTES;
    use crate::users::User;

    const T0: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);

    fn sessions(dir: &std::path::Path) -> Sessions {
        Sessions::new(
            Arc::new(crate::store::sled::open_for_tests(dir)),
            SecretPepper::from_bytes(&[7u8; PEPPER_BYTES]).unwrap(),
            Duration::hours(8),
            Duration::minutes(30),
        )
    }

    fn alice() -> Authenticated {
        Authenticated {
            user: User::example("u-1", "alice", T0),
            amr: vec!["pwd".into()],
        }
    }

    #[tokio::test]
    async fn a_session_in_use_lives_to_its_absolute_end_and_an_unused_one_ends_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = sessions(dir.path());

        // In use every 29 minutes: alive until the absolute end, not after.
        let (value, _) = sessions.start(&alice(), T0).await.unwrap();
        let mut now = T0;
        while now + Duration::minutes(29) < T0 + Duration::hours(8) {
            now += Duration::minutes(29);
            assert!(sessions.find(&value, now).await.unwrap().is_some(), "{now}");
        }
        assert!(
            sessions
                .find(&value, T0 + Duration::hours(8))
                .await
                .unwrap()
                .is_none()
        );

        // Unused for 30 minutes: over, and forgotten.
        let (value, _) = sessions.start(&alice(), T0).await.unwrap();
        assert!(
            sessions
                .find(&value, T0 + Duration::minutes(29))
                .await
                .unwrap()
                .is_some()
        );
        let idle_from = T0 + Duration::minutes(29);
        assert!(
            sessions
                .find(&value, idle_from + Duration::minutes(30))
                .await
                .unwrap()
                .is_none()
        );
        assert!(sessions.live_of("u-1", idle_from).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn use_is_recorded_at_most_once_a_minute_and_old_sessions_count_from_creation() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = sessions(dir.path());
        let (value, _) = sessions.start(&alice(), T0).await.unwrap();
        let seen = |s: Option<Session>| s.unwrap().last_seen.unwrap();
        assert_eq!(
            seen(
                sessions
                    .find(&value, T0 + Duration::seconds(30))
                    .await
                    .unwrap()
            ),
            T0,
            "not rewritten within the minute"
        );
        let later = T0 + Duration::seconds(90);
        assert_eq!(seen(sessions.find(&value, later).await.unwrap()), later);

        // A session ended after it was read is not written back by the
        // touch of a request that read it before.
        let (value, read) = sessions.start(&alice(), T0).await.unwrap();
        sessions.end(&value).await.unwrap();
        let mut seen = read.clone();
        seen.last_seen = Some(later);
        assert!(!sessions.store.touch_session(&read, &seen).await.unwrap());
        assert!(
            sessions
                .store
                .session(&read.id_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(sessions.find(&value, later).await.unwrap().is_none());

        // A session stored before `last_seen` existed counts from its
        // creation.
        let (value, mut old) = sessions.start(&alice(), T0).await.unwrap();
        old.last_seen = None;
        sessions.store.put_session(&old).await.unwrap();
        assert!(
            sessions
                .find(&value, T0 + Duration::minutes(31))
                .await
                .unwrap()
                .is_none()
        );
    }
}
