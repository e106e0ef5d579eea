//! Durable state behind one trait, [`Store`], so the domain never knows which
//! database it talks to. Only this module knows sled and PostgreSQL.
//!
//! Contract for every backend: a method that returns `Ok` has made its write
//! durable (on disk, fsynced; for PostgreSQL, committed) — "nothing
//! acknowledged is lost". Methods speak
//! the domain (`record_intent` refuses a serial that exists, atomically), not
//! key-value operations. Later issues add clients, users, approvals, grants,
//! tokens and audit as further supertraits of [`Store`].

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::delegation::Approval;
use crate::oauth::clients::{Client, ClientId};
use crate::oauth::grants::{
    AuthorizationCode, CodeRedemption, DeviceRecord, PendingAuthorization, RefreshRecord,
    TokenLineage,
};
use crate::pki::provenance::DelegationProvenance;
use crate::users::User;
use crate::users::session::Session;

pub mod audit_chain;
#[cfg(test)]
pub(crate) mod conformance;
pub mod export;
pub mod memory;
pub mod postgres;
pub mod sled;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 3;

/// Failures of the store. Each variant says what the operator must do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error(
        "the data directory {0} is locked by another slcs process; stop it first (only one process may use a sled store)"
    )]
    Locked(String),
    /// The database cannot be read.
    #[error(
        "the store at {path} is corrupt or unreadable: {detail}; restore it from a backup (slcs refuses to start on an empty store in its place)"
    )]
    Corrupt {
        /// Where.
        path: String,
        /// What the backend said.
        detail: String,
    },
    /// The database was written by a newer slcs.
    #[error(
        "the store has schema version {found}, newer than this build's {supported}; run a newer slcs"
    )]
    SchemaTooNew {
        /// On disk.
        found: u32,
        /// Understood here.
        supported: u32,
    },
    /// The database is behind this build's schema.
    #[error(
        "the database at {location} has schema version {found}, this build needs {needed}: run `slcs migrate` (or start with `slcs serve --migrate`)"
    )]
    SchemaBehind {
        /// Where (password redacted).
        location: String,
        /// In the database.
        found: u32,
        /// Needed here.
        needed: u32,
    },
    /// The store is missing although the data directory was initialised.
    #[error(
        "the store at {0} is missing or empty but the data directory already holds a CA; refusing to start on an empty store (restore it from a backup, or run `slcs init` once if this is a new deployment)"
    )]
    Missing(String),
    /// The store belongs to a different CA.
    #[error("the store at {0} was created for a different CA key; refusing to mix issuance logs")]
    ForeignCa(String),
    /// The serial is already in the issuance log.
    #[error("serial {0} is already recorded")]
    SerialInUse(Serial),
    /// A client with this id exists already.
    #[error("client {0} already exists")]
    ClientExists(String),
    /// A user with this username (regardless of case) exists already.
    #[error("user {0} already exists")]
    UserExists(String),
    /// The record changed since it was read; re-read and retry.
    #[error("{0} was changed concurrently; retry")]
    Conflict(String),
    /// No record with this serial.
    #[error("no issuance record for serial {0}")]
    UnknownSerial(Serial),
    /// A record is in the wrong state for the operation.
    #[error("issuance record {serial} is {state:?}, expected {expected:?}")]
    WrongState {
        /// The record.
        serial: Serial,
        /// Its state.
        state: IssuanceState,
        /// The state required.
        expected: IssuanceState,
    },
    /// Reading or writing failed (disk full, I/O error); the write is not durable.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A stored record cannot be decoded.
    #[error("stored record {key} cannot be decoded: {detail}")]
    Decode {
        /// Which record.
        key: String,
        /// Why.
        detail: String,
    },
}

/// A certificate serial number: the DER INTEGER content octets, positive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Serial(Vec<u8>);

impl Serial {
    /// Wraps content octets; refuses empty, negative, non-minimal or over-long
    /// encodings (RFC 5280 §4.1.2.2: positive, at most 20 octets).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        match bytes.as_slice() {
            [] => Err("empty serial".into()),
            b if b.len() > 20 => Err("serial longer than 20 octets".into()),
            [first, ..] if first & 0x80 != 0 => Err("negative serial".into()),
            [0, second, ..] if second & 0x80 == 0 => Err("non-minimal serial encoding".into()),
            [0] => Err("serial zero".into()),
            _ => Ok(Self(bytes)),
        }
    }

    /// The content octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Upper-case hexadecimal, no separators (as `openssl x509 -serial` prints it).
    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

impl TryFrom<String> for Serial {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bytes = hex::decode(&value).map_err(|e| format!("serial {value:?}: {e}"))?;
        Self::from_bytes(bytes)
    }
}

impl From<Serial> for String {
    fn from(value: Serial) -> Self {
        value.to_hex()
    }
}

impl std::str::FromStr for Serial {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.replace(':', ""))
    }
}

/// Where an issuance stands (Boulder's order: intent, then certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuanceState {
    /// Recorded before signing; a certificate may or may not exist.
    Intent,
    /// Signed and recorded; the certificate may have been returned.
    Issued,
    /// Signing failed or the result was discarded; no certificate left slcs.
    Abandoned,
}

/// What is recorded durably before a certificate is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceIntent {
    /// The serial it will carry.
    pub serial: Serial,
    /// RFC 4514 subject.
    pub subject: String,
    /// Hex SHA-256 of the certified SubjectPublicKeyInfo.
    pub key_sha256: String,
    /// Key type, e.g. "ECDSA P-256".
    pub key_type: String,
    /// notBefore.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The delegation chain written into the certificate.
    pub provenance: DelegationProvenance,
    /// When the intent was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// One entry of the issuance log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceRecord {
    /// The intent, as recorded before signing.
    pub intent: IssuanceIntent,
    /// Current state.
    pub state: IssuanceState,
    /// The DER certificate, once issued.
    #[serde(default, with = "opt_base64")]
    pub certificate: Option<Vec<u8>>,
    /// When the certificate was recorded, or the intent abandoned.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why an intent was abandoned.
    #[serde(default)]
    pub abandon_reason: Option<String>,
    /// Set once the certificate is revoked; never cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<CertificateRevocation>,
}

/// Why, when and by whom a certificate was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRevocation {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Why (free text: "token revoked", "key compromise", ...).
    pub reason: String,
    /// Who: `admin`, `client:<id>`, ...
    pub by: String,
}

/// What revoking one certificate did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// It is now revoked.
    Revoked,
    /// It was revoked before; the first revocation stands.
    AlreadyRevoked,
    /// No issued certificate has this serial (unknown, or an intent that
    /// never produced one).
    NotIssued,
}

/// How far an issuance quota is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaTake {
    /// Taken; this many are now used in the window.
    Granted(u64),
    /// The limit is reached; nothing was taken.
    Exhausted,
}

/// How an intent ends.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// Signed; the DER certificate.
    Issued(&'a [u8]),
    /// Never released; why.
    Abandoned(&'a str),
}

/// Where a certificate came from, as the issuance log indexes it: the grant
/// and the token it was issued from, and every client of its delegation
/// chain (for cascading revocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// The root grant (`grant_id`).
    Grant(&'a str),
    /// The access token (`jti`).
    Token(&'a str),
    /// A client at any step of the chain: root, actor or presenter.
    Client(&'a str),
}

impl Origin<'_> {
    fn kind(self) -> (u8, &'static str) {
        match self {
            Self::Grant(_) => (b'g', "grant"),
            Self::Token(_) => (b't', "token"),
            Self::Client(_) => (b'c', "client"),
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::Grant(id) | Self::Token(id) | Self::Client(id) => id,
        }
    }

    /// The index key prefix of this origin.
    pub fn prefix(&self) -> Vec<u8> {
        let mut key = vec![self.kind().0, b':'];
        key.extend_from_slice(self.id().as_bytes());
        key.push(0);
        key
    }

    /// Whether `intent` came from this origin (for backends without the
    /// index).
    pub fn matches(&self, intent: &IssuanceIntent) -> bool {
        let provenance = &intent.provenance;
        match self {
            Self::Grant(id) => provenance.grant_id == *id,
            Self::Token(id) => provenance.token_id == *id,
            Self::Client(id) => provenance.steps.iter().any(|s| s.client_id == *id),
        }
    }
}

/// The origins under which a certificate is found: its grant, its token,
/// and each distinct client of its chain.
pub fn origins_of(intent: &IssuanceIntent) -> Vec<Origin<'_>> {
    let provenance = &intent.provenance;
    let mut origins = vec![
        Origin::Grant(&provenance.grant_id),
        Origin::Token(&provenance.token_id),
    ];
    for step in &provenance.steps {
        let client = Origin::Client(&step.client_id);
        if !origins.contains(&client) {
            origins.push(client);
        }
    }
    origins
}

/// The index keys of [`origins_of`] (sled's origin index).
pub fn origin_keys(intent: &IssuanceIntent) -> Vec<Vec<u8>> {
    origins_of(intent)
        .iter()
        .map(|origin| {
            let mut key = origin.prefix();
            key.extend_from_slice(intent.serial.as_bytes());
            key
        })
        .collect()
}

impl IssuanceRecord {
    /// A fresh record in the `Intent` state.
    pub fn from_intent(intent: &IssuanceIntent) -> Self {
        Self {
            intent: intent.clone(),
            state: IssuanceState::Intent,
            certificate: None,
            finished_at: None,
            abandon_reason: None,
            revocation: None,
        }
    }

    /// Moves an `Intent` to its outcome; any other state is refused, so a
    /// record is finished at most once whatever the backend.
    pub fn finish(&mut self, outcome: Outcome<'_>, at: OffsetDateTime) -> Result<(), StoreError> {
        if self.state != IssuanceState::Intent {
            return Err(StoreError::WrongState {
                serial: self.intent.serial.clone(),
                state: self.state,
                expected: IssuanceState::Intent,
            });
        }
        match outcome {
            Outcome::Issued(der) => {
                self.state = IssuanceState::Issued;
                self.certificate = Some(der.to_vec());
            }
            Outcome::Abandoned(reason) => {
                self.state = IssuanceState::Abandoned;
                self.abandon_reason = Some(reason.to_owned());
            }
        }
        self.finished_at = Some(at);
        Ok(())
    }
}

/// An administrator's search of the issuance log: every field given must
/// match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuanceQuery {
    /// The person or service account the certificate stands for (`sub`).
    pub subject: Option<String>,
    /// A client anywhere in the delegation chain.
    pub client_id: Option<String>,
    /// Exactly this serial.
    pub serial: Option<Serial>,
    /// Recorded at or after.
    pub from: Option<OffsetDateTime>,
    /// Recorded before.
    pub until: Option<OffsetDateTime>,
}

impl IssuanceQuery {
    /// Whether `record` is one the query asks for.
    pub fn matches(&self, record: &IssuanceRecord) -> bool {
        let intent = &record.intent;
        self.subject
            .as_ref()
            .is_none_or(|sub| intent.provenance.subject == *sub)
            && self
                .client_id
                .as_ref()
                .is_none_or(|id| Origin::Client(id).matches(intent))
            && self.serial.as_ref().is_none_or(|s| intent.serial == *s)
            && self.from.is_none_or(|from| intent.recorded_at >= from)
            && self.until.is_none_or(|until| intent.recorded_at < until)
    }
}

/// An administrator's search of the audit log: every field given must
/// match; text fields match as substrings, case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Part of the actor (`user:…`, `client:…`, `admin`).
    pub actor: Option<String>,
    /// Part of the action (`client.`, `token.revoke`, …).
    pub action: Option<String>,
    /// Part of the target.
    pub target: Option<String>,
    /// At or after.
    pub from: Option<OffsetDateTime>,
    /// Before.
    pub until: Option<OffsetDateTime>,
}

impl AuditQuery {
    /// Whether `event` is one the query asks for.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        let contains = |field: &str, part: &Option<String>| {
            part.as_ref()
                .is_none_or(|p| field.to_lowercase().contains(&p.to_lowercase()))
        };
        contains(&event.actor, &self.actor)
            && contains(&event.action, &self.action)
            && contains(&event.target, &self.target)
            && self.from.is_none_or(|from| event.at >= from)
            && self.until.is_none_or(|until| event.at < until)
    }
}

/// A page of audit search results, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// The matching events.
    pub records: Vec<AuditRecord>,
    /// Where to go on (the `before` of the next page), if the log goes on.
    pub next_before: Option<u64>,
}

/// How many audit records one search reads at most: a search for
/// something rare stops there and offers to go on, so one page view never
/// reads the whole log.
pub const AUDIT_SCAN_LIMIT: usize = 20_000;

/// Health as reported by `/healthz`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoreHealth {
    /// Backend name.
    pub backend: &'static str,
    /// Whether a durable write round trip just succeeded.
    pub ok: bool,
    /// Schema version on disk.
    pub schema_version: u32,
    /// Issuance records held.
    pub issuance_records: u64,
    /// Why not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The issuance log: the record of every certificate slcs signed or meant to.
#[async_trait]
pub trait IssuanceLog: Send + Sync {
    /// Records an intent; refuses (`SerialInUse`) a serial already recorded,
    /// atomically, so two issuances can never share a serial (RFC 5280 §4.1.2.2).
    async fn record_intent(&self, intent: &IssuanceIntent) -> Result<(), StoreError>;

    /// Attaches the signed certificate to its intent. Durable on `Ok`; only
    /// then may the certificate leave the process.
    async fn record_issued(
        &self,
        serial: &Serial,
        certificate_der: &[u8],
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Marks an intent whose certificate was never released.
    async fn record_abandoned(
        &self,
        serial: &Serial,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Looks a serial up.
    async fn issuance(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError>;

    /// Serials of the certificates that came from `origin`, for cascading
    /// revocation.
    async fn certificates_from(&self, origin: Origin<'_>) -> Result<Vec<Serial>, StoreError>;

    /// Number of records (any state).
    async fn issuance_count(&self) -> Result<u64, StoreError>;

    /// The newest `limit` records (by when their intent was recorded) that
    /// `query` matches.
    async fn search_issuances(
        &self,
        query: &IssuanceQuery,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError>;
}

/// Keeps the newest `limit` of `records` by recording time, newest first.
pub fn newest_issuances(
    records: impl Iterator<Item = IssuanceRecord>,
    limit: usize,
) -> Vec<IssuanceRecord> {
    let mut out: Vec<IssuanceRecord> = records.collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.intent.recorded_at));
    out.truncate(limit);
    out
}

/// One entry of the audit log: who did what to what, when, from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// Who: `admin`, `client:<id>`, `user:<sub>`.
    pub actor: String,
    /// What, as a dotted verb: `client.create`, `token.issue`, `token.revoke`, …
    pub action: String,
    /// On what: a client id, a token id, a grant id.
    pub target: String,
    /// From where: the peer address, if the event came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Anything else worth keeping (never secrets).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// An audit event with its position in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Position: strictly increasing, never reused.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl AuditEvent {
    /// The people an event is about, for their own activity view: the one
    /// who acted (`user:` actor), the one acted upon (`user:` target), and
    /// the person a token or approval stood for (`detail.sub`). Service
    /// accounts are not people.
    pub fn persons(&self) -> std::collections::BTreeSet<&str> {
        [
            self.actor.strip_prefix("user:"),
            self.target.strip_prefix("user:"),
            self.detail.get("sub").and_then(serde_json::Value::as_str),
        ]
        .into_iter()
        .flatten()
        .filter(|sub| !sub.is_empty() && !sub.starts_with("service:"))
        .collect()
    }
}

/// Checks the whole audit chain of `log`, oldest first, a page at a time.
pub async fn verify_audit(log: &dyn AuditLog) -> Result<audit_chain::Report, StoreError> {
    const PAGE: usize = 1000;
    let mut verifier = audit_chain::Verifier::default();
    let mut after = 0;
    loop {
        let page = log.audit_stored(after, PAGE).await?;
        for (seq, stored) in &page {
            verifier.check(*seq, audit_chain::Entry::parse(*seq, stored).as_ref());
            after = *seq;
        }
        if page.len() < PAGE {
            return Ok(verifier.finish());
        }
    }
}

/// The append-only audit log, a hash chain ([`audit_chain`]).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends an event; durable on `Ok`. Returns its sequence number.
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError>;

    /// Events with `seq > after`, oldest first, at most `limit`.
    async fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// Records with `seq > after` as stored (see [`audit_chain`]), oldest
    /// first, at most `limit`: for verifying the chain and for export.
    async fn audit_stored(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Events with `seq < before` (all when `None`) that `query` matches,
    /// newest first: at most `limit`, reading at most
    /// [`AUDIT_SCAN_LIMIT`] records.
    async fn search_audit(
        &self,
        query: &AuditQuery,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage, StoreError>;

    /// The newest `limit` events about person `sub` (see
    /// [`AuditEvent::persons`]), newest first.
    async fn audit_of_person(
        &self,
        sub: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Revoked access tokens and grants. Access tokens are self-contained JWTs;
/// revocation (RFC 7009) is recorded here and checked by introspection and
/// by the resource server before anything is issued on a token.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Revokes one token by its `jti`; `expires_at` lets the entry be
    /// dropped once the token could not be used anyway. Durable on `Ok`.
    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError>;

    /// Revokes a whole grant: every token carrying this `grant_id` (the
    /// token family). Durable on `Ok`.
    async fn revoke_grant(&self, grant_id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Whether the token or its grant is revoked.
    async fn is_revoked(&self, jti: &str, grant_id: &str) -> Result<bool, StoreError>;
}

/// Single-use identifiers: client assertion `jti`s (RFC 7523 §3 item 7,
/// ATTACKS CA-05). The check and the insert are one atomic step, so of two
/// concurrent uses exactly one wins, and it happens before anything is minted.
#[async_trait]
pub trait ReplayCache: Send + Sync {
    /// Records `id` as used until `expires_at`; `Ok(false)` if it was
    /// already recorded. Durable on `Ok`.
    async fn use_once(&self, id: &str, expires_at: OffsetDateTime) -> Result<bool, StoreError>;
}

/// The client registry.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Creates a client; refuses an id in use (`ClientExists`), atomically.
    /// Durable on `Ok`.
    async fn create_client(&self, client: &Client) -> Result<(), StoreError>;

    /// Looks a client up.
    async fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError>;

    /// Replaces `expected` with `updated` if the stored client is still
    /// `expected` (optimistic concurrency: two admins editing at once
    /// cannot silently undo each other); `Conflict` otherwise. Durable on `Ok`.
    async fn update_client(&self, expected: &Client, updated: &Client) -> Result<(), StoreError>;

    /// Every client, ordered by id.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
}

/// Issuance quotas: counters that reset when their window ends.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Takes one unit of the quota `key` (at most `limit` per window; the
    /// window ends at `window_end`, after which the count restarts), in one
    /// atomic step so that concurrent requests never overshoot. The count
    /// becomes durable with the issuance that follows it.
    async fn take_quota(
        &self,
        key: &str,
        limit: u64,
        window_end: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<QuotaTake, StoreError>;
}

/// People and their browser sessions.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates a user; refuses a username in use regardless of case
    /// (`UserExists`), atomically. Durable on `Ok`.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;

    /// A user by subject.
    async fn user(&self, sub: &str) -> Result<Option<User>, StoreError>;

    /// A user by username, compared regardless of case.
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// Replaces `expected` with `updated` (same subject and username) if
    /// unchanged since read; `Conflict` otherwise. Durable on `Ok`.
    async fn update_user(&self, expected: &User, updated: &User) -> Result<(), StoreError>;

    /// Every user.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// Stores a session. Durable on `Ok`.
    async fn put_session(&self, session: &Session) -> Result<(), StoreError>;

    /// A session by the keyed hash of its cookie.
    async fn session(&self, id_hash: &str) -> Result<Option<Session>, StoreError>;

    /// Replaces session `expected` with `updated` (same id) if it is still
    /// stored exactly as `expected`; `false` if it changed or was ended
    /// meanwhile. Durable on `Ok(true)`.
    async fn touch_session(
        &self,
        expected: &Session,
        updated: &Session,
    ) -> Result<bool, StoreError>;

    /// Ends a session. Durable on `Ok`.
    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;

    /// Every stored session of person `sub` (expired ones included until
    /// maintenance purges them).
    async fn sessions_of(&self, sub: &str) -> Result<Vec<Session>, StoreError>;
}

/// Approvals and the in-flight parts of people's grants.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// An approval by id.
    async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError>;

    /// The person's current approval of a client (live or not), if any.
    async fn current_approval(
        &self,
        sub: &str,
        client_id: &str,
    ) -> Result<Option<Approval>, StoreError>;

    /// The person's current approvals, one per client.
    async fn approvals_of(&self, sub: &str) -> Result<Vec<Approval>, StoreError>;

    /// Stores `approval` as the person's current approval of its client,
    /// if the stored one is still `expected` (`None`: there was none, or a
    /// different approval is being replaced by a new id); `Conflict`
    /// otherwise. Durable on `Ok`.
    async fn save_approval(
        &self,
        expected: Option<&Approval>,
        approval: &Approval,
    ) -> Result<(), StoreError>;

    /// Records that `grant_id` was granted under `approval_id`, so that
    /// revoking the approval finds it. Durable on `Ok`.
    async fn add_grant(&self, approval_id: &str, grant_id: &str) -> Result<(), StoreError>;

    /// The grants made under an approval.
    async fn grants_of(&self, approval_id: &str) -> Result<Vec<String>, StoreError>;

    /// Stores a pending authorization request. Durable on `Ok`.
    async fn put_pending(&self, pending: &PendingAuthorization) -> Result<(), StoreError>;

    /// A pending authorization request by id.
    async fn pending(&self, id: &str) -> Result<Option<PendingAuthorization>, StoreError>;

    /// Discards a pending authorization request.
    async fn delete_pending(&self, id: &str) -> Result<(), StoreError>;

    /// Stores a new authorization code. Durable on `Ok`.
    async fn put_code(&self, code: &AuthorizationCode) -> Result<(), StoreError>;

    /// Redeems a code: of concurrent redemptions exactly one is `Fresh`.
    /// Durable on `Ok`.
    async fn redeem_code(
        &self,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<CodeRedemption, StoreError>;

    /// Stores a new refresh token. Durable on `Ok`.
    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError>;

    /// A refresh token by hash.
    async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError>;

    /// Replaces `expected` with `updated` if unchanged since read;
    /// `Conflict` otherwise (of two concurrent rotations one wins).
    /// Durable on `Ok`.
    async fn replace_refresh(
        &self,
        expected: &RefreshRecord,
        updated: &RefreshRecord,
    ) -> Result<(), StoreError>;

    /// Stores a new device authorization; `Conflict` if its user code is
    /// in use. Durable on `Ok`.
    async fn put_device(&self, record: &DeviceRecord) -> Result<(), StoreError>;

    /// A device authorization by the hash of its device code.
    async fn device(&self, hash: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// A device authorization by its (normalised) user code.
    async fn device_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceRecord>, StoreError>;

    /// Replaces `expected` with `updated` if unchanged since read;
    /// `Conflict` otherwise. Durable on `Ok`.
    async fn replace_device(
        &self,
        expected: &DeviceRecord,
        updated: &DeviceRecord,
    ) -> Result<(), StoreError>;

    /// Records how an exchanged token came to be, indexed by the token and
    /// by its parent, with the exchange's audit event: both durable on
    /// `Ok`, made so by one flush (an exchange is on the hot path).
    async fn put_lineage(
        &self,
        lineage: &TokenLineage,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The lineage of an exchanged token; `None` for a token that was not
    /// exchanged (or whose record has been purged after its expiry).
    async fn lineage(&self, jti: &str) -> Result<Option<TokenLineage>, StoreError>;

    /// The tokens exchanged from `jti`.
    async fn exchanged_from(&self, jti: &str) -> Result<Vec<String>, StoreError>;
}

/// Everything slcs keeps. Backends implement every supertrait.
#[async_trait]
pub trait Store:
    IssuanceLog
    + AuditLog
    + RevocationStore
    + ClientStore
    + ReplayCache
    + QuotaStore
    + AccountStore
    + GrantStore
    + Send
    + Sync
{
    /// Backend name, for health and logs.
    fn backend(&self) -> &'static str;

    /// Checks the store end to end (a durable write round trip).
    async fn health(&self) -> StoreHealth;

    /// Whether the store comes back by itself after failing (a database
    /// server that returns, reached again by a fresh connection), or keeps
    /// failing until the process reopens it (sled after an I/O error).
    /// The service stops for a restart only in the second case.
    fn recovers_by_itself(&self) -> bool {
        false
    }

    /// Whether replicas share this store, and with it the access-token
    /// signing keys ([`Store::shared_signing_keys`]); a store of one
    /// process leaves them in its data directory.
    fn shares_signing_keys(&self) -> bool {
        false
    }

    /// The sealed signing key set shared by the replicas, with its
    /// generation (1 for the first set, one more at each rotation); `None`
    /// before the first replica created it.
    async fn shared_signing_keys(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(None)
    }

    /// Stores `sealed` as generation `generation` if the stored set is
    /// generation `generation - 1` (none for 1): of two replicas rotating
    /// at once one wins, the other gets `Conflict` and reads the winner's.
    /// Durable on `Ok`.
    async fn put_shared_signing_keys(
        &self,
        generation: u64,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        let _ = (generation, sealed);
        Err(StoreError::Io(format!(
            "the {} backend keeps signing keys in the data directory",
            self.backend()
        )))
    }

    /// Whether the store holds nothing a deployment made (no client, user,
    /// issuance or audit record): the only target `slcs store import`
    /// writes into.
    async fn is_empty(&self) -> Result<bool, StoreError>;

    /// Hands every record to `sink` for `slcs store export`, in an order
    /// an import can replay (approvals before what points at them, audit
    /// records by sequence number). Indexes are not exported.
    async fn export_records(&self, sink: &mut dyn export::ExportSink) -> Result<(), StoreError>;

    /// Writes one exported record that no other operation puts as it was
    /// (the CA binding, approvals and which is current, token lineage,
    /// issuance records, quotas, audit records, shared signing keys),
    /// rebuilding the indexes that name it. For an empty store only (see
    /// [`export::import`]); other records go through the store's own
    /// operations.
    async fn import_record(&self, record: export::ExportRecord) -> Result<(), StoreError>;

    /// Completes an import: makes it durable and lets the store go on
    /// after the imported records (the audit chain's head, sequence
    /// numbers, counters).
    async fn finish_import(&self) -> Result<(), StoreError>;

    /// Forces everything written so far to disk; used at shutdown.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Revokes an issued certificate and appends `audit` in one atomic
    /// write: a revocation is never stored without its audit record, nor
    /// the record without the revocation. The first revocation stands
    /// (nothing is written for an already revoked or unknown serial).
    /// Durable on `Ok`.
    async fn revoke_certificate(
        &self,
        serial: &Serial,
        revocation: &CertificateRevocation,
        audit: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Drops entries that can no longer matter at `now`: quota windows that
    /// ended, revocations of tokens that expired more than `grace` ago, and
    /// single-use ids past their expiry plus `grace`. Returns how many.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        grace: time::Duration,
    ) -> Result<u64, StoreError>;
}

/// Revokes one certificate in the issuance log and audits it (used by the
/// certificate service and by token revocation's cascade).
pub async fn revoke_certificate(
    store: &dyn Store,
    serial: &Serial,
    reason: &str,
    by: &str,
    source: Option<String>,
    now: OffsetDateTime,
) -> Result<RevokeOutcome, StoreError> {
    store
        .revoke_certificate(
            serial,
            &CertificateRevocation {
                at: now,
                reason: reason.to_owned(),
                by: by.to_owned(),
            },
            &AuditEvent {
                at: now,
                actor: by.to_owned(),
                action: "certificate.revoke".into(),
                target: serial.to_hex(),
                source,
                detail: serde_json::json!({ "reason": reason }),
            },
        )
        .await
}

mod opt_base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_encoding_rules() {
        assert!(Serial::from_bytes(vec![]).is_err());
        assert!(Serial::from_bytes(vec![0]).is_err());
        assert!(Serial::from_bytes(vec![0x80]).is_err());
        assert!(Serial::from_bytes(vec![0, 0x01]).is_err());
        assert!(Serial::from_bytes(vec![1; 21]).is_err());
        assert!(Serial::from_bytes(vec![0, 0x80]).is_ok());
        let s = Serial::from_bytes(vec![0x01, 0xab]).unwrap();
        assert_eq!(s.to_hex(), "01AB");
        assert_eq!("01:ab".parse::<Serial>().unwrap(), s);
    }
}
