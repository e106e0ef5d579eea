//! People: local accounts, their passwords, and the brute-force throttle of
//! the login page.
//!
//! The rest of slcs sees a person only through [`UserSource`]: "who is this
//! username and password?" and "who is this subject?". [`LocalUsers`] answers
//! from the store; an upstream OIDC or SAML identity provider becomes another
//! implementation of the same trait, and nothing above it changes.
//!
//! Passwords are argon2id hashes in PHC string form (RFC 9106; parameters in
//! [`PasswordParams`], defaults from OWASP's password storage guidance:
//! 19 MiB, 2 passes, 1 lane). A failed login costs one full hash whether the
//! account exists or not, so neither the answer nor its time tells an
//! attacker which usernames exist (ATTACKS AUTH-*, "no user enumeration").

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{AuditEvent, Store, StoreError};

pub mod reset;
pub mod session;
pub mod totp;

use totp::{Totp, TotpRefusal};

/// Longest username accepted.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Shortest password accepted when an administrator sets one.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password hashed (argon2 takes any length; a cap bounds the work
/// a request can cause).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A person with a local account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The stable, opaque subject identifier (`sub`): never reassigned,
    /// never derived from the username (OIDC Core §5.7).
    pub sub: String,
    /// The login name, unique regardless of case.
    pub username: String,
    /// Shown on pages and written into certificates' CN.
    pub display_name: String,
    /// E-mail address (the `email` scope).
    #[serde(default)]
    pub email: Option<String>,
    /// Home organisation.
    #[serde(default)]
    pub organisation: Option<String>,
    /// Group names (e.g. `TVB-Workshops`), for clients restricted by
    /// `featureAuthenticate`.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// EBRAINS-style unit paths (`all:projects:hbp`); membership of a unit
    /// includes its sub-units.
    #[serde(default)]
    pub units: BTreeSet<String>,
    /// A guest account (refused by clients with `accessDeniedToGuests`).
    #[serde(default)]
    pub guest: bool,
    /// A disabled account cannot sign in, and its grants stop working.
    #[serde(default)]
    pub disabled: bool,
    /// argon2id PHC string; `None` for accounts without a local password.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// An administrator of this slcs (the `/admin` console). An
    /// administrator always has a second factor enrolled.
    #[serde(default)]
    pub admin: bool,
    /// The enrolled TOTP second factor, if any.
    #[serde(default)]
    pub totp: Option<Totp>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password hash.
        f.debug_struct("User")
            .field("sub", &self.sub)
            .field("username", &self.username)
            .field("disabled", &self.disabled)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether the user is in `unit` or one of its sub-units: unit paths are
    /// `:`-separated, and `all:projects` covers `all:projects:hbp`.
    pub fn in_unit(&self, unit: &str) -> bool {
        self.units.iter().any(|mine| {
            mine == unit
                || mine
                    .strip_prefix(unit)
                    .is_some_and(|rest| rest.starts_with(':'))
        })
    }
}

/// The case-folded form of a username, under which uniqueness is decided.
pub fn fold_username(username: &str) -> String {
    username.to_lowercase()
}

/// Checks a username: 1 to 64 characters of letters, digits and `._-@`.
pub fn check_username(username: &str) -> Result<(), UserError> {
    let ok = !username.is_empty()
        && username.chars().count() <= MAX_USERNAME_CHARS
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid(format!(
            "a username is 1 to {MAX_USERNAME_CHARS} characters of letters, digits and . _ - @"
        )))
    }
}

#[cfg(test)]
impl User {
    /// A plain enabled account without a password, for unit tests.
    pub(crate) fn example(sub: &str, username: &str, at: OffsetDateTime) -> Self {
        Self {
            sub: sub.into(),
            username: username.into(),
            display_name: username.into(),
            email: None,
            organisation: None,
            groups: BTreeSet::new(),
            units: BTreeSet::new(),
            guest: false,
            disabled: false,
            password_hash: None,
            admin: false,
            totp: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordParams {
    fn argon2(self) -> Result<argon2::Argon2<'static>, UserError> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| UserError::Invalid(format!("argon2 parameters: {e}")))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    /// Hashes `password` with a fresh random salt.
    pub fn hash(self, password: &str) -> Result<String, UserError> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt)
            .map_err(|_| UserError::Internal("random generator failed".into()))?;
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| UserError::Internal(format!("salt: {e}")))?;
        self.argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| UserError::Internal(format!("argon2: {e}")))
    }

    /// A PHC string with these parameters, a random salt and a random
    /// output: no password matches it, and verifying against it costs
    /// exactly what a real verification costs. Made without running
    /// argon2, so keeping one costs neither start-up time nor the
    /// algorithm's memory (19 MiB by default).
    pub fn unmatchable_hash(self) -> Result<String, UserError> {
        let mut random = [0u8; 16 + 32];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| UserError::Internal("random generator failed".into()))?;
        let (salt, output) = random.split_at(16);
        let salt =
            SaltString::encode_b64(salt).map_err(|e| UserError::Internal(format!("salt: {e}")))?;
        // PHC strings use unpadded standard base64 (the PHC string format).
        let output = base64::engine::general_purpose::STANDARD_NO_PAD.encode(output);
        Ok(format!(
            "$argon2id$v=19$m={},t={},p={}${}${output}",
            self.memory_kib,
            self.iterations,
            self.parallelism,
            salt.as_str()
        ))
    }

    /// Whether `password` matches `stored` (a PHC string). The stored
    /// string's own parameters are used, so raising the defaults does not
    /// lock anyone out. The comparison inside argon2 is constant-time.
    pub fn verify(self, password: &str, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        let Ok(argon2) = self.argon2() else {
            return false;
        };
        argon2.verify_password(password.as_bytes(), &parsed).is_ok()
    }
}

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such user.
    #[error("no user {0:?}")]
    NotFound(String),
    /// The username is taken (regardless of case).
    #[error("the username {0:?} is taken")]
    Exists(String),
    /// Hashing or randomness failed.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a second-factor code was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SecondFactorError {
    /// The account has no second factor (or is gone or disabled).
    #[error("no second factor is enrolled for this account")]
    NotEnrolled,
    /// The code is wrong or was used already.
    #[error("the code is wrong or was used already")]
    Refused(TotpRefusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The parts of an account that clients' access rules look at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountAccess {
    /// Refused by clients with `accessDeniedToGuests`.
    pub guest: bool,
    /// Group names.
    pub groups: BTreeSet<String>,
    /// Unit paths.
    pub units: BTreeSet<String>,
}

/// What a successful login proved.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The person.
    pub user: User,
    /// RFC 8176 method references: `pwd` for a password.
    pub amr: Vec<String>,
}

/// Why a login failed. The page shows one message for all of `Failed`
/// (unknown user, wrong password, disabled account): no enumeration.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong username or password, or an account that may not sign in.
    #[error("the username or password is wrong")]
    Failed,
    /// Too many recent failures for this account or address.
    #[error("too many failed sign-ins; try again in {0} seconds")]
    Throttled(u64),
    /// The store or the hasher failed.
    #[error("{0}")]
    Internal(String),
}

/// Where people come from. Local accounts today; an upstream identity
/// provider later, behind the same two questions.
#[async_trait]
pub trait UserSource: Send + Sync {
    /// Checks a username and password.
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Authenticated, LoginError>;

    /// The current record of a subject (for tokens, consent and claims);
    /// `None` if unknown.
    async fn user(&self, sub: &str) -> Result<Option<User>, StoreError>;
}

/// Local accounts in the slcs store.
pub struct LocalUsers {
    store: Arc<dyn Store>,
    params: PasswordParams,
    /// A hash of a random password, verified against on the unknown-user
    /// path so that it costs what a real check costs.
    dummy_hash: String,
}

impl std::fmt::Debug for LocalUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUsers")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl LocalUsers {
    /// Local accounts with the given hashing cost.
    pub fn new(store: Arc<dyn Store>, params: PasswordParams) -> Result<Self, UserError> {
        let dummy_hash = params.unmatchable_hash()?;
        Ok(Self {
            store,
            params,
            dummy_hash,
        })
    }

    /// The hashing parameters.
    pub fn params(&self) -> PasswordParams {
        self.params
    }

    /// Creates an account. The password, if any, must be at least
    /// [`MIN_PASSWORD_CHARS`] characters.
    pub async fn create(
        &self,
        new: NewUser,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<User, UserError> {
        check_username(&new.username)?;
        let display_name = new.display_name.trim().to_owned();
        if display_name.is_empty() || display_name.chars().count() > 128 {
            return Err(UserError::Invalid(
                "a display name is 1 to 128 characters".into(),
            ));
        }
        if let Some(email) = &new.email
            && (email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace))
        {
            return Err(UserError::Invalid(format!(
                "{email:?} is not an e-mail address"
            )));
        }
        for unit in &new.units {
            check_label("unit", unit)?;
        }
        for group in &new.groups {
            check_label("group", group)?;
        }
        let password_hash = match &new.password {
            Some(password) => Some(self.hash_blocking(password.clone()).await?),
            None => None,
        };
        let user = User {
            sub: random_subject()?,
            username: new.username,
            display_name,
            email: new.email,
            organisation: new.organisation,
            groups: new.groups,
            units: new.units,
            guest: new.guest,
            disabled: false,
            password_hash,
            admin: false,
            totp: None,
            created_at: now,
            updated_at: now,
        };
        self.store.create_user(&user).await.map_err(|e| match e {
            StoreError::UserExists(name) => UserError::Exists(name),
            other => UserError::Store(other),
        })?;
        self.audit(actor, "user.create", &user, now).await?;
        Ok(user)
    }

    /// Sets a new password.
    pub async fn set_password(
        &self,
        username: &str,
        password: String,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<User, UserError> {
        let hash = self.hash_blocking(password).await?;
        self.change(username, actor, "user.set_password", now, move |user| {
            user.password_hash = Some(hash.clone());
        })
        .await
    }

    /// Disables (or re-enables) an account; disabling ends its sessions.
    pub async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<User, UserError> {
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        let user = self
            .change(username, actor, action, now, move |user| {
                user.disabled = disabled;
            })
            .await?;
        if disabled {
            // Signed out everywhere at once, not at each session's end: a
            // disabled account uses nothing (its grants stopped with the
            // flag).
            for session in self.store.sessions_of(&user.sub).await? {
                self.store.delete_session(&session.id_hash).await?;
            }
        }
        Ok(user)
    }

    /// Makes `username` an administrator with a fresh TOTP secret (an
    /// earlier one is replaced), or, with `admin` false, takes the role and
    /// the secret away. The returned account carries the secret, to be
    /// shown to the operator once.
    pub async fn set_admin(
        &self,
        username: &str,
        admin: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<User, UserError> {
        let (action, totp) = if admin {
            ("user.make_admin", Some(Totp::generate(now)?))
        } else {
            ("user.remove_admin", None)
        };
        self.change(username, actor, action, now, move |user| {
            user.admin = admin;
            user.totp.clone_from(&totp);
        })
        .await
    }

    /// Sets what a client's access rules look at: the guest flag, groups
    /// and unit paths.
    pub async fn set_access(
        &self,
        username: &str,
        access: AccountAccess,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<User, UserError> {
        for unit in &access.units {
            check_label("unit", unit)?;
        }
        for group in &access.groups {
            check_label("group", group)?;
        }
        self.change(username, actor, "user.set_access", now, move |user| {
            user.guest = access.guest;
            user.groups.clone_from(&access.groups);
            user.units.clone_from(&access.units);
        })
        .await
    }

    /// Checks person `sub`'s second-factor code and marks its step used,
    /// durably, before answering: the same code never works twice
    /// (RFC 6238 §5.2), not even in two concurrent requests (the step is
    /// written by compare-and-swap over the record the code was checked
    /// against).
    pub async fn verify_second_factor(
        &self,
        sub: &str,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<(), SecondFactorError> {
        loop {
            let current = self
                .store
                .user(sub)
                .await?
                .filter(|user| !user.disabled)
                .ok_or(SecondFactorError::NotEnrolled)?;
            let totp = current
                .totp
                .as_ref()
                .ok_or(SecondFactorError::NotEnrolled)?;
            let step = totp.check(code, now).map_err(SecondFactorError::Refused)?;
            let mut updated = current.clone();
            if let Some(totp) = updated.totp.as_mut() {
                totp.last_step = Some(step);
            }
            match self.store.update_user(&current, &updated).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sets a new password on a reset link's account: the link's
    /// signature is checked against the account as it is now, so a link
    /// works once (the new password changes what it was bound to) and
    /// never after any other password change.
    pub async fn reset_password(
        &self,
        resets: &reset::ResetLinks,
        token: &str,
        password: String,
        now: OffsetDateTime,
    ) -> Result<User, UserError> {
        let invalid = || {
            UserError::Invalid(
                "this reset link is not valid: it has expired, was used, or the password was changed since".into(),
            )
        };
        let sub = resets.subject_of(token).ok_or_else(invalid)?;
        let current = self.store.user(&sub).await?.ok_or_else(invalid)?;
        if current.disabled || !resets.is_valid(token, &current, now) {
            return Err(invalid());
        }
        let hash = self.hash_blocking(password).await?;
        let mut updated = current.clone();
        updated.password_hash = Some(hash);
        updated.updated_at = now;
        // Over the record the link was checked against: two uses racing
        // cannot both succeed.
        match self.store.update_user(&current, &updated).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(invalid()),
            Err(e) => return Err(e.into()),
        }
        self.audit(&format!("user:{sub}"), "user.reset_password", &updated, now)
            .await?;
        Ok(updated)
    }

    /// Every account, by username.
    pub async fn list(&self) -> Result<Vec<User>, StoreError> {
        let mut users = self.store.list_users().await?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn change(
        &self,
        username: &str,
        actor: &str,
        action: &str,
        now: OffsetDateTime,
        edit: impl Fn(&mut User),
    ) -> Result<User, UserError> {
        loop {
            let current = self
                .store
                .user_by_name(username)
                .await?
                .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
            let mut updated = current.clone();
            edit(&mut updated);
            updated.updated_at = now;
            match self.store.update_user(&current, &updated).await {
                Ok(()) => {
                    self.audit(actor, action, &updated, now).await?;
                    return Ok(updated);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn hash_blocking(&self, password: String) -> Result<String, UserError> {
        check_password(&password)?;
        let params = self.params;
        tokio::task::spawn_blocking(move || params.hash(&password))
            .await
            .map_err(|e| UserError::Internal(format!("hashing task failed: {e}")))?
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        user: &User,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.store
            .append_audit(&AuditEvent {
                at: now,
                actor: actor.to_owned(),
                action: action.to_owned(),
                target: format!("user:{}", user.sub),
                source: None,
                detail: serde_json::json!({ "username": user.username }),
            })
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl UserSource for LocalUsers {
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Authenticated, LoginError> {
        let internal = |e: StoreError| LoginError::Internal(e.to_string());
        let found = if check_username(username).is_ok() && password.len() <= MAX_PASSWORD_BYTES {
            self.store.user_by_name(username).await.map_err(internal)?
        } else {
            None
        };
        // One full argon2 verification on every path: against the account's
        // hash, or against a dummy hash when there is no usable account.
        let stored = found
            .as_ref()
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let params = self.params;
        let presented: String = password.chars().take(MAX_PASSWORD_BYTES).collect();
        let matches = tokio::task::spawn_blocking(move || params.verify(&presented, &stored))
            .await
            .map_err(|e| LoginError::Internal(format!("hashing task failed: {e}")))?;
        match found {
            Some(user) if matches && user.password_hash.is_some() && !user.disabled => {
                Ok(Authenticated {
                    user,
                    amr: vec!["pwd".to_owned()],
                })
            }
            _ => Err(LoginError::Failed),
        }
    }

    async fn user(&self, sub: &str) -> Result<Option<User>, StoreError> {
        self.store.user(sub).await
    }
}

/// Input for a new account.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Organisation.
    #[serde(default)]
    pub organisation: Option<String>,
    /// Groups.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Unit paths.
    #[serde(default)]
    pub units: BTreeSet<String>,
    /// Guest account.
    #[serde(default)]
    pub guest: bool,
    /// Initial password (never logged).
    #[serde(default)]
    pub password: Option<String>,
}

fn check_password(password: &str) -> Result<(), UserError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::Invalid(format!(
            "a password is {MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_label(what: &str, value: &str) -> Result<(), UserError> {
    if value.is_empty()
        || value.len() > 128
        || value.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(UserError::Invalid(format!(
            "a {what} is 1 to 128 characters without spaces"
        )));
    }
    Ok(())
}

fn random_subject() -> Result<String, UserError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| UserError::Internal("random generator failed".into()))?;
    Ok(format!("u-{}", hex::encode(bytes)))
}

// ---------------------------------------------------------------------------
// Brute-force throttle

/// Per-account and per-address back-off for the login page (ATTACKS
/// AUTH-02). After `free_failures` consecutive failures a key must wait
/// 2, 4, 8, … seconds (at most 15 minutes) before its next attempt is even
/// checked. Keys are the case-folded username (whether or not it exists:
/// no enumeration) and the client address. A success clears the
/// account's count, not the address's.
///
/// In memory, per process: a restart forgets it, which costs an attacker
/// nothing they could not get by waiting, and keeps the hot path off the
/// store. The map is bounded; when full, entries whose wait has passed
/// are dropped first.
#[derive(Debug)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<String, Failures>>,
    account_free: u32,
    address_free: u32,
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    until: i64,
}

/// Most keys the throttle remembers.
const THROTTLE_CAPACITY: usize = 100_000;
/// Longest wait, in seconds.
const THROTTLE_MAX_WAIT: i64 = 15 * 60;

impl LoginThrottle {
    /// A throttle letting `account_free` failures per account and
    /// `address_free` per address pass before back-off starts.
    pub fn new(account_free: u32, address_free: u32) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            account_free,
            address_free,
        }
    }

    fn keys(username: &str, address: &str) -> [(String, bool); 2] {
        [
            (format!("a:{}", fold_username(username)), true),
            (format!("i:{address}"), false),
        ]
    }

    /// Seconds to wait before an attempt for `username` from `address` may
    /// be checked; 0 if it may be checked now.
    pub fn wait(&self, username: &str, address: &str, now: OffsetDateTime) -> u64 {
        let now = now.unix_timestamp();
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::keys(username, address)
            .iter()
            .filter_map(|(key, _)| entries.get(key))
            .map(|f| u64::try_from(f.until - now).unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// Records a failure.
    pub fn failed(&self, username: &str, address: &str, now: OffsetDateTime) {
        let now = now.unix_timestamp();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= THROTTLE_CAPACITY {
            entries.retain(|_, f| f.until > now);
            if entries.len() >= THROTTLE_CAPACITY {
                // Still full of live entries: an attack from very many
                // addresses. Keep the account keys, which protect users.
                entries.retain(|key, _| key.starts_with("a:"));
            }
        }
        for (key, is_account) in Self::keys(username, address) {
            let free = if is_account {
                self.account_free
            } else {
                self.address_free
            };
            let entry = entries.entry(key).or_insert(Failures {
                count: 0,
                until: now,
            });
            entry.count = entry.count.saturating_add(1);
            if entry.count > free {
                let exponent = (entry.count - free).min(20);
                let wait = (1i64 << exponent).min(THROTTLE_MAX_WAIT);
                entry.until = now + wait;
            }
        }
    }

    /// Records a success: the account's count starts again.
    pub fn succeeded(&self, username: &str) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.remove(&format!("a:{}", fold_username(username)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn cheap() -> PasswordParams {
        PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let hash = cheap().hash("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(cheap().verify("correct horse battery", &hash));
        assert!(!cheap().verify("correct horse batterx", &hash));
        assert!(!cheap().verify("correct horse battery", "not a phc string"));
        // Two hashes of one password differ (fresh salt).
        assert_ne!(hash, cheap().hash("correct horse battery").unwrap());
    }

    #[test]
    fn the_unknown_user_hash_has_real_parameters_and_matches_nothing() {
        let dummy = cheap().unmatchable_hash().unwrap();
        let real = cheap().hash("x").unwrap();
        // Same algorithm, version, parameters and field lengths as a real
        // hash, so verifying against it does the same work.
        let parsed = PasswordHash::new(&dummy).unwrap();
        let reference = PasswordHash::new(&real).unwrap();
        assert_eq!(parsed.algorithm, reference.algorithm);
        assert_eq!(parsed.version, reference.version);
        assert_eq!(parsed.params, reference.params);
        assert_eq!(
            parsed.hash.map(|h| h.len()),
            reference.hash.map(|h| h.len())
        );
        assert_eq!(
            parsed.salt.map(|s| s.len()),
            reference.salt.map(|s| s.len())
        );
        for guess in ["", "x", "password"] {
            assert!(!cheap().verify(guess, &dummy));
        }
        assert_ne!(dummy, cheap().unmatchable_hash().unwrap());
    }

    async fn ops_admin(dir: &std::path::Path) -> (LocalUsers, User) {
        let store: Arc<dyn Store> = Arc::new(crate::store::sled::open_for_tests(dir));
        let users = LocalUsers::new(store, cheap()).unwrap();
        let at = datetime!(2026-11-29 12:00 UTC);
        let new = NewUser {
            username: "ops".into(),
            display_name: "Ops".into(),
            password: Some("a long enough password".into()),
            ..NewUser::default()
        };
        users.create(new, "admin", at).await.unwrap();
        let admin = users.set_admin("ops", true, "admin", at).await.unwrap();
        (users, admin)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_second_factor_code_counts_once_even_under_16_concurrent_uses() {
        let dir = tempfile::tempdir().unwrap();
        let (users, admin) = ops_admin(dir.path()).await;
        assert!(admin.admin);
        let totp = admin.totp.clone().unwrap();
        let now = datetime!(2026-11-29 12:00:10 UTC);
        let step = u64::try_from(now.unix_timestamp() / totp::STEP_SECS).unwrap();
        let code = totp.code_at(step).unwrap();
        let users = Arc::new(users);
        let attempts: Vec<_> = (0..16)
            .map(|_| {
                let users = Arc::clone(&users);
                let (sub, code) = (admin.sub.clone(), code.clone());
                tokio::spawn(async move { users.verify_second_factor(&sub, &code, now).await })
            })
            .collect();
        let mut accepted = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(()) => accepted += 1,
                Err(SecondFactorError::Refused(TotpRefusal::Replayed)) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(accepted, 1);
        // The next step's code still works; a re-enrolment makes the old
        // secret worthless; taking the role away leaves no factor.
        let next = totp.code_at(step + 1).unwrap();
        users
            .verify_second_factor(&admin.sub, &next, now)
            .await
            .unwrap();
        let again = users.set_admin("ops", true, "admin", now).await.unwrap();
        assert_ne!(again.totp.as_ref().unwrap().secret, totp.secret);
        let later = now + time::Duration::minutes(5);
        let old_code = totp.code_at(step + 10).unwrap();
        assert!(matches!(
            users
                .verify_second_factor(&admin.sub, &old_code, later)
                .await,
            Err(SecondFactorError::Refused(TotpRefusal::Wrong))
        ));
        let removed = users.set_admin("ops", false, "admin", now).await.unwrap();
        assert!(!removed.admin && removed.totp.is_none());
        assert!(matches!(
            users
                .verify_second_factor(&admin.sub, "123456", later)
                .await,
            Err(SecondFactorError::NotEnrolled)
        ));
    }

    #[tokio::test]
    async fn a_reset_link_sets_one_password_once() {
        let dir = tempfile::tempdir().unwrap();
        let (users, admin) = ops_admin(dir.path()).await;
        let resets = reset::ResetLinks::new(
            crate::oauth::secrets::SecretPepper::from_bytes(&[3u8; 32]).unwrap(),
        );
        let now = datetime!(2026-11-29 13:00 UTC);
        let (token, _) = resets.issue(&admin, now);
        assert!(matches!(
            users
                .reset_password(&resets, &token, "short".into(), now)
                .await,
            Err(UserError::Invalid(_))
        ));
        let changed = users
            .reset_password(&resets, &token, "a brand new password".into(), now)
            .await
            .unwrap();
        assert!(cheap().verify(
            "a brand new password",
            changed.password_hash.as_deref().unwrap()
        ));
        assert!(matches!(
            users
                .reset_password(&resets, &token, "yet another password".into(), now)
                .await,
            Err(UserError::Invalid(_))
        ));
        assert!(
            users
                .authenticate("ops", "a brand new password")
                .await
                .is_ok()
        );
    }

    #[test]
    fn usernames_are_checked() {
        assert!(check_username("alice.smith@ebrains").is_ok());
        for bad in ["", "a b", "<script>", &"x".repeat(65), "ali\u{0}ce"] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn units_include_their_sub_units_only() {
        let at = datetime!(2026-11-29 12:00 UTC);
        let user = User {
            units: ["all:projects:hbp".to_owned()].into(),
            ..User::example("u", "a", at)
        };
        assert!(user.in_unit("all:projects:hbp"));
        assert!(user.in_unit("all:projects"));
        assert!(user.in_unit("all"));
        assert!(!user.in_unit("all:proj"));
        assert!(!user.in_unit("all:projects:hbp:sub"));
    }

    #[test]
    fn the_throttle_backs_off_exponentially_per_account_and_address() {
        let throttle = LoginThrottle::new(3, 10);
        let t0 = datetime!(2026-11-29 12:00 UTC);
        for _ in 0..3 {
            assert_eq!(throttle.wait("Alice", "10.0.0.1", t0), 0);
            throttle.failed("Alice", "10.0.0.1", t0);
        }
        // Three free failures, then 2 s, then 4 s.
        assert_eq!(throttle.wait("alice", "10.0.0.2", t0), 0);
        throttle.failed("alice", "10.0.0.2", t0);
        assert_eq!(throttle.wait("ALICE", "10.0.0.3", t0), 2);
        throttle.failed("alice", "10.0.0.3", t0);
        assert_eq!(throttle.wait("alice", "10.0.0.4", t0), 4);
        // Another account from the same address is not held back yet.
        assert_eq!(throttle.wait("bob", "10.0.0.1", t0), 0);
        // The wait passes with time.
        assert_eq!(
            throttle.wait("alice", "10.0.0.4", t0 + time::Duration::seconds(4)),
            0
        );
        // A success clears the account.
        throttle.succeeded("alice");
        assert_eq!(throttle.wait("alice", "10.0.0.9", t0), 0);
        // An address with many failures over many accounts is held back.
        let throttle = LoginThrottle::new(100, 2);
        for name in ["a", "b", "c"] {
            throttle.failed(name, "10.9.9.9", t0);
        }
        assert_eq!(throttle.wait("d", "10.9.9.9", t0), 2);
    }
}
