//! The embedded sled backend.
//!
//! Durability: sled keeps writes in memory and flushes them in the background
//! every 500 ms; a crash loses whatever was not flushed. So every write here
//! waits for `Db::flush` before it returns. On Linux sled 0.34 implements
//! that flush with `sync_file_range`, which survives a process crash but not
//! a power cut (no drive cache flush, no file-size update), so each flush is
//! followed by `fdatasync` on sled's log file: acknowledged means on stable
//! storage.
//!
//! Group commit: writers do not fsync one by one. Each write is applied in
//! memory, then the writer enqueues a waiter with the [`GroupCommit`] thread,
//! which takes every waiter queued so far, issues one `flush`, and answers
//! them all. A waiter is only ever answered by a flush that started after it
//! was queued, so after its own write: correctness does not depend on timing,
//! and N concurrent writers cost about one fsync instead of N.
//!
//! Multi-key updates (an issuance record and its index entries) use no sled
//! transaction: sled's transactions serialise on a global lock and spin
//! under contention, which cost a third of the certificate path's CPU. The
//! index entries are written first and the record last, by a
//! compare-and-swap that refuses a serial in use; a crash in between leaves
//! index entries that name no record, which readers treat as "not issued",
//! never a record its indexes miss. One flush makes all of them durable.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::oauth::clients::{Client, ClientId};

use super::{
    AUDIT_SCAN_LIMIT, AuditEvent, AuditLog, AuditPage, AuditQuery, AuditRecord,
    CertificateRevocation, ClientStore, IssuanceIntent, IssuanceLog, IssuanceQuery, IssuanceRecord,
    IssuanceState, Origin, Outcome, QuotaStore, QuotaTake, ReplayCache, RevocationStore,
    RevokeOutcome, SCHEMA_VERSION, Serial, Store, StoreError, StoreHealth, audit_chain,
    newest_issuances, origin_keys,
};

mod accounts;

const META_SCHEMA_VERSION: &[u8] = b"schema_version";
const META_CA_KEY: &[u8] = b"ca_key_sha256";
const META_HEALTH_PROBE: &[u8] = b"health_probe";

/// Whether opening may create a new, empty store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// `slcs init` and first start: create the store if it does not exist.
    CreateIfMissing,
    /// A data directory that already holds a CA: the store must exist and
    /// carry a schema version; an empty store in its place is refused, since
    /// starting on one would forget every issuance (ATTACKS ROB-07).
    MustExist,
}

/// Options for [`SledStore::open`].
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// Database directory.
    pub path: PathBuf,
    /// Page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// Create or require.
    pub mode: OpenMode,
    /// Hex SHA-256 of the CA's SubjectPublicKeyInfo: binds the store to its
    /// CA so one CA's log is never mixed with another's.
    pub ca_key_sha256: Option<String>,
}

/// Counters of the group-commit thread.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// fsyncs issued.
    pub flushes: AtomicU64,
    /// Writes made durable by them.
    pub writes: AtomicU64,
}

/// The sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    issuance: sled::Tree,
    issuance_by_key: sled::Tree,
    /// Grant and token id → serial (see [`origin_keys`]).
    issuance_by_origin: sled::Tree,
    /// Quota key → (count, window end), 16 bytes big-endian.
    quotas: sled::Tree,
    audit: sled::Tree,
    /// `person sub \0 sequence number (8 bytes, big-endian)` → nothing.
    audit_by_person: sled::Tree,
    clients: sled::Tree,
    revoked_tokens: sled::Tree,
    revoked_grants: sled::Tree,
    used_once: sled::Tree,
    /// Users, sessions, approvals and in-flight grants.
    accounts: accounts::Trees,
    /// The hash of the newest audit record: the `prev` of the next. Held
    /// while a record is numbered and written, so sequence order and chain
    /// order are one.
    audit_head: std::sync::Mutex<[u8; audit_chain::HASH_BYTES]>,
    /// Records in `issuance`, counted once at open and kept in memory.
    issuance_records: AtomicU64,
    path: PathBuf,
    commit: GroupCommit,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SledStore {
    /// Opens (or, with [`OpenMode::CreateIfMissing`], creates) the store.
    /// Never panics on a damaged database: sled's own panics are caught and
    /// reported as [`StoreError::Corrupt`].
    pub fn open(options: &SledOptions) -> Result<Self, StoreError> {
        let path = options.path.clone();
        let display = path.display().to_string();
        let existed = path.exists();
        if options.mode == OpenMode::MustExist && !existed {
            return Err(StoreError::Missing(display));
        }
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(options.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput);
        let db = open_catching_panics(&config, &display)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| map_open_error(e, &display));
        let meta = tree("meta")?;
        let issuance = tree("issuance")?;
        let issuance_by_key = tree("issuance_by_key")?;
        let issuance_by_origin = tree("issuance_by_origin")?;
        let quotas = tree("quotas")?;
        let audit = tree("audit")?;
        let audit_by_person = tree("audit_by_person")?;
        let clients = tree("clients")?;
        let revoked_tokens = tree("revoked_tokens")?;
        let revoked_grants = tree("revoked_grants")?;
        let used_once = tree("used_once")?;
        let accounts = accounts::Trees::open(&db).map_err(|e| map_open_error(e, &display))?;

        // sled writes its log with sync_file_range on Linux, which neither
        // flushes the drive's write cache nor the file's size: fine after a
        // process crash, not after a power cut. The commit thread therefore
        // follows each flush with fdatasync(2) on the log file.
        let log_file = std::fs::File::open(path.join("db"))
            .map_err(|e| StoreError::Io(format!("cannot open {}/db: {e}", display)))?;
        let commit = GroupCommit::start(db.clone(), log_file)
            .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        let issuance_records = AtomicU64::new(issuance.len() as u64);
        // The chain goes on from the newest record; after records from
        // before the chain (or none), it starts at the genesis value.
        let head = match audit.last().map_err(|e| map_open_error(e, &display))? {
            Some((key, value)) => audit_seq(&key)
                .ok()
                .and_then(|seq| audit_chain::Entry::parse(seq, &value))
                .and_then(|entry| entry.link)
                .map_or(audit_chain::GENESIS, |(_, hash)| hash),
            None => audit_chain::GENESIS,
        };
        let store = Self {
            db,
            meta,
            issuance,
            issuance_by_key,
            issuance_by_origin,
            quotas,
            audit,
            audit_by_person,
            clients,
            revoked_tokens,
            revoked_grants,
            used_once,
            accounts,
            audit_head: std::sync::Mutex::new(head),
            issuance_records,
            path,
            commit,
        };
        store.check_schema(options)?;
        Ok(store)
    }

    /// Counters of the group-commit thread.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.commit.stats
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&self, options: &SledOptions) -> Result<(), StoreError> {
        let display = self.path.display().to_string();
        let version = self
            .meta
            .get(META_SCHEMA_VERSION)
            .map_err(|e| map_open_error(e, &display))?;
        match version {
            None => {
                let empty = self.issuance.is_empty() && self.meta.is_empty();
                if options.mode == OpenMode::MustExist || !empty {
                    return Err(if empty {
                        StoreError::Missing(display)
                    } else {
                        StoreError::Corrupt {
                            path: display,
                            detail: "records without a schema version".into(),
                        }
                    });
                }
                self.meta
                    .insert(META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(io)?;
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        path: display.clone(),
                        detail: "unreadable schema version".into(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                self.migrate(found)?;
            }
        }
        if let Some(expected) = &options.ca_key_sha256 {
            match self.meta.get(META_CA_KEY).map_err(io)? {
                Some(bound) if bound.as_ref() != expected.as_bytes() => {
                    return Err(StoreError::ForeignCa(display));
                }
                Some(_) => {}
                None => {
                    self.meta
                        .insert(META_CA_KEY, expected.as_bytes())
                        .map_err(io)?;
                }
            }
        }
        self.db.flush().map_err(io)?;
        Ok(())
    }

    /// The migration hook: brings a store written by an older schema up to
    /// [`SCHEMA_VERSION`], one version at a time, each step in a transaction
    /// that also bumps the version key. Version 1 is the first schema, so
    /// there is nothing to do yet; a future step is added as a match arm.
    fn migrate(&self, found: u32) -> Result<(), StoreError> {
        match found {
            SCHEMA_VERSION => Ok(()),
            1 => {
                self.index_origins()?;
                self.meta
                    .insert(META_SCHEMA_VERSION, &2u32.to_be_bytes())
                    .map_err(io)?;
                self.migrate(2)
            }
            // Schema 3 indexes certificates by every client of their chain
            // too; indexing again adds those keys.
            2 => {
                self.index_origins()?;
                self.meta
                    .insert(META_SCHEMA_VERSION, &3u32.to_be_bytes())
                    .map_err(io)?;
                self.migrate(3)
            }
            // Add `n => { self.migrate_from_n()?; self.migrate(n + 1) }` arms
            // here, each step in a transaction that also bumps the version.
            other => Err(StoreError::Corrupt {
                path: self.path.display().to_string(),
                detail: format!("no migration from schema version {other}"),
            }),
        }
    }

    async fn durable(&self) -> Result<(), StoreError> {
        self.commit.wait().await
    }

    /// Schema 1 → 2 → 3: index every record by its origins (grant, token,
    /// and since schema 3 each client of its chain). Idempotent, so a crash
    /// half-way is finished by the next start.
    fn index_origins(&self) -> Result<(), StoreError> {
        for record in self.every_issuance() {
            let record = record?;
            for origin in origin_keys(&record.intent) {
                self.issuance_by_origin.insert(origin, &[]).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Every issuance record, in serial order.
    fn every_issuance(&self) -> impl Iterator<Item = Result<IssuanceRecord, StoreError>> + '_ {
        self.issuance.iter().map(|entry| {
            let (key, value) = entry.map_err(io)?;
            let serial =
                Serial::from_bytes(key.to_vec()).map_err(|detail| StoreError::Corrupt {
                    path: self.path.display().to_string(),
                    detail,
                })?;
            decode(&value, &serial)
        })
    }

    fn read_record(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        self.issuance
            .get(serial.as_bytes())
            .map_err(io)?
            .map(|bytes| decode(&bytes, serial))
            .transpose()
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.commit.stop();
        let _ = self.db.flush();
    }
}

#[async_trait]
impl IssuanceLog for SledStore {
    async fn record_intent(&self, intent: &IssuanceIntent) -> Result<(), StoreError> {
        let value = encode(&IssuanceRecord::from_intent(intent))?;
        let serial = intent.serial.as_bytes();
        let mut index_key = intent.key_sha256.as_bytes().to_vec();
        index_key.push(b'/');
        index_key.extend_from_slice(serial);

        // No transaction (sled's take a global lock and spin under
        // contention): the index entries go first, then the record is
        // created with a compare-and-swap that refuses a serial in use. A
        // crash in between leaves index entries naming a serial with no
        // record, which every reader treats as "not issued"; never a record
        // without its index entries. The flush below makes all of it
        // durable at once (sled's log is written in order).
        let origins = origin_keys(intent);
        self.issuance_by_key
            .insert(index_key.as_slice(), &[])
            .map_err(io)?;
        for origin in &origins {
            self.issuance_by_origin
                .insert(origin.as_slice(), &[])
                .map_err(io)?;
        }
        if self
            .issuance
            .compare_and_swap(serial, None::<&[u8]>, Some(value.as_slice()))
            .map_err(io)?
            .is_err()
        {
            return Err(StoreError::SerialInUse(intent.serial.clone()));
        }
        self.issuance_records.fetch_add(1, Ordering::Relaxed);
        self.durable().await
    }

    async fn record_issued(
        &self,
        serial: &Serial,
        certificate_der: &[u8],
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.finish(serial, Outcome::Issued(certificate_der), at)?;
        self.durable().await
    }

    async fn record_abandoned(
        &self,
        serial: &Serial,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.finish(serial, Outcome::Abandoned(reason), at)?;
        self.durable().await
    }

    async fn issuance(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        self.read_record(serial)
    }

    async fn certificates_from(&self, origin: Origin<'_>) -> Result<Vec<Serial>, StoreError> {
        let prefix = origin.prefix();
        self.issuance_by_origin
            .scan_prefix(&prefix)
            .map(|entry| {
                let (key, _) = entry.map_err(io)?;
                let bytes = key.get(prefix.len()..).unwrap_or_default().to_vec();
                Serial::from_bytes(bytes).map_err(|detail| StoreError::Corrupt {
                    path: self.path.display().to_string(),
                    detail,
                })
            })
            .collect()
    }

    async fn issuance_count(&self) -> Result<u64, StoreError> {
        Ok(self.issuance_records.load(Ordering::Relaxed))
    }

    async fn search_issuances(
        &self,
        query: &IssuanceQuery,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        if let Some(serial) = &query.serial {
            // The key: one read.
            return Ok(self
                .read_record(serial)?
                .filter(|record| query.matches(record))
                .into_iter()
                .collect());
        }
        // Keyed by random serial, so no order to use: a full scan, which
        // is what an operator's occasional search can afford (a service
        // issuing a million certificates a day needs the PostgreSQL
        // backend's indexes).
        let mut matching = Vec::new();
        for record in self.every_issuance() {
            let record = record?;
            if query.matches(&record) {
                matching.push(record);
            }
        }
        Ok(newest_issuances(matching.into_iter(), limit))
    }
}

impl SledStore {
    fn audit_head(&self) -> std::sync::MutexGuard<'_, [u8; audit_chain::HASH_BYTES]> {
        self.audit_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes an audit event, chained to the one before (not yet durable:
    /// the caller waits for the flush). Returns its sequence number.
    fn insert_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        // sled's id generator is monotonic across restarts (it reserves
        // ranges durably), so sequence numbers are never reused.
        // sled's ids start at 0; sequence numbers start at 1 so that
        // `audit_events(0, …)` means "from the beginning".
        let event_json = serde_json::to_vec(event)
            .map_err(|e| StoreError::Io(format!("cannot encode audit event: {e}")))?;
        let seq = {
            let mut head = self.audit_head();
            let seq = self.db.generate_id().map_err(io)?.saturating_add(1);
            let (stored, hash) = audit_chain::seal(seq, &head, &event_json);
            self.audit.insert(seq.to_be_bytes(), stored).map_err(io)?;
            *head = hash;
            seq
        };
        // The index after the record, in the same flush.
        for sub in event.persons() {
            self.audit_by_person
                .insert(person_key(sub, seq), &[][..])
                .map_err(io)?;
        }
        Ok(seq)
    }

    /// Moves an `Intent` record to a final state, atomically: a
    /// compare-and-swap against the bytes read, retried if another writer
    /// changed the record in between (cheaper than a sled transaction).
    fn finish(
        &self,
        serial: &Serial,
        outcome: Outcome<'_>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let key = serial.as_bytes();
        loop {
            let Some(current) = self.issuance.get(key).map_err(io)? else {
                return Err(StoreError::UnknownSerial(serial.clone()));
            };
            let mut record = decode(&current, serial)?;
            record.finish(outcome, at)?;
            let value = encode(&record)?;
            match self
                .issuance
                .compare_and_swap(key, Some(current), Some(value))
                .map_err(io)?
            {
                Ok(()) => return Ok(()),
                Err(_) => continue,
            }
        }
    }
}

#[async_trait]
impl AuditLog for SledStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let seq = self.insert_audit(event)?;
        self.durable().await?;
        Ok(seq)
    }

    async fn audit_of_person(
        &self,
        sub: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut prefix = sub.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.audit_by_person.scan_prefix(&prefix).rev() {
            if out.len() == limit {
                break;
            }
            let (key, _) = entry.map_err(io)?;
            let Some(seq) = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            let Some(value) = self.audit.get(seq.to_be_bytes()).map_err(io)? else {
                continue;
            };
            out.push(audit_record(seq, &value)?);
        }
        Ok(out)
    }

    async fn search_audit(
        &self,
        query: &AuditQuery,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let end = before.unwrap_or(u64::MAX).to_be_bytes();
        let mut page = AuditPage::default();
        for (read, entry) in self.audit.range(..end).rev().enumerate() {
            let (key, value) = entry.map_err(io)?;
            let seq = audit_seq(&key)?;
            if page.records.len() == limit || read == AUDIT_SCAN_LIMIT {
                // More may match further back.
                page.next_before = Some(seq.saturating_add(1));
                break;
            }
            let record = audit_record(seq, &value)?;
            if query.matches(&record.event) {
                page.records.push(record);
            }
        }
        Ok(page)
    }

    async fn audit_stored(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for entry in self.audit.range(start..).take(limit) {
            let (key, value) = entry.map_err(io)?;
            out.push((audit_seq(&key)?, value.to_vec()));
        }
        Ok(out)
    }

    async fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for entry in self.audit.range(start..).take(limit) {
            let (key, value) = entry.map_err(io)?;
            let seq = audit_seq(&key)?;
            out.push(audit_record(seq, &value)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl ClientStore for SledStore {
    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        let value = serde_json::to_vec(client)
            .map_err(|e| StoreError::Io(format!("cannot encode client: {e}")))?;
        self.clients
            // Keyed by the case-folded id: `Portal` cannot be registered
            // beside `portal` (look-alike clients, ATTACKS REG-05).
            .compare_and_swap(client.id.folded().as_bytes(), None::<&[u8]>, Some(value))
            .map_err(io)?
            .map_err(|_| StoreError::ClientExists(client.id.as_str().to_owned()))?;
        self.durable().await
    }

    async fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        let stored = self
            .clients
            .get(id.folded().as_bytes())
            .map_err(io)?
            .map(|bytes| {
                serde_json::from_slice::<Client>(&bytes).map_err(|e| StoreError::Decode {
                    key: format!("client {}", id.as_str()),
                    detail: e.to_string(),
                })
            })
            .transpose()?;
        // Unique regardless of case, but an id still names its client only
        // when spelled exactly as registered.
        Ok(stored.filter(|client| client.id == *id))
    }

    async fn update_client(&self, expected: &Client, updated: &Client) -> Result<(), StoreError> {
        let encode_client = |c: &Client| {
            serde_json::to_vec(c).map_err(|e| StoreError::Io(format!("cannot encode client: {e}")))
        };
        let folded = expected.id.folded();
        let key = folded.as_bytes();
        let current = self.clients.get(key).map_err(io)?;
        let still_expected = current
            .as_ref()
            .and_then(|bytes| serde_json::from_slice::<Client>(bytes).ok())
            .is_some_and(|stored| stored == *expected);
        if !still_expected {
            return Err(StoreError::Conflict(format!(
                "client {}",
                expected.id.as_str()
            )));
        }
        self.clients
            .compare_and_swap(key, current, Some(encode_client(updated)?))
            .map_err(io)?
            .map_err(|_| StoreError::Conflict(format!("client {}", expected.id.as_str())))?;
        self.durable().await
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.clients
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(io)?;
                serde_json::from_slice(&value).map_err(|e| StoreError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl ReplayCache for SledStore {
    async fn use_once(&self, id: &str, expires_at: OffsetDateTime) -> Result<bool, StoreError> {
        let fresh = self
            .used_once
            .compare_and_swap(
                id.as_bytes(),
                None::<&[u8]>,
                Some(&expires_at.unix_timestamp().to_be_bytes()[..]),
            )
            .map_err(io)?
            .is_ok();
        if fresh {
            self.durable().await?;
        }
        Ok(fresh)
    }
}

#[async_trait]
impl QuotaStore for SledStore {
    async fn take_quota(
        &self,
        key: &str,
        limit: u64,
        window_end: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<QuotaTake, StoreError> {
        // A compare-and-swap loop: of concurrent takers exactly `limit` win
        // per window. No flush here: the intent written next is flushed, and
        // sled makes writes durable in order, so the count is on disk before
        // any certificate it admitted.
        loop {
            let current = self.quotas.get(key.as_bytes()).map_err(io)?;
            let (used, end) = current
                .as_deref()
                .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                .map(|bytes| {
                    let (count, end) = bytes.split_at(8);
                    (
                        u64::from_be_bytes(count.try_into().unwrap_or_default()),
                        i64::from_be_bytes(end.try_into().unwrap_or_default()),
                    )
                })
                .unwrap_or((0, i64::MIN));
            let (used, end) = if end <= now.unix_timestamp() {
                (0, window_end.unix_timestamp())
            } else {
                (used, end)
            };
            if used >= limit {
                return Ok(QuotaTake::Exhausted);
            }
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&(used + 1).to_be_bytes());
            value[8..].copy_from_slice(&end.to_be_bytes());
            if self
                .quotas
                .compare_and_swap(key.as_bytes(), current, Some(&value[..]))
                .map_err(io)?
                .is_ok()
            {
                return Ok(QuotaTake::Granted(used + 1));
            }
        }
    }
}

#[async_trait]
impl RevocationStore for SledStore {
    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        self.revoked_tokens
            .insert(jti.as_bytes(), &expires_at.unix_timestamp().to_be_bytes())
            .map_err(io)?;
        self.durable().await
    }

    async fn revoke_grant(&self, grant_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.revoked_grants
            .insert(grant_id.as_bytes(), &at.unix_timestamp().to_be_bytes())
            .map_err(io)?;
        self.durable().await
    }

    async fn is_revoked(&self, jti: &str, grant_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .revoked_tokens
            .contains_key(jti.as_bytes())
            .map_err(io)?
            || self
                .revoked_grants
                .contains_key(grant_id.as_bytes())
                .map_err(io)?)
    }
}

impl SledStore {
    /// Removes the entries of `tree` whose time (big-endian seconds at
    /// `offset` in the value) is before `cutoff`; a concurrent change to an
    /// entry keeps it (compare-and-swap against the value read).
    fn purge_tree(tree: &sled::Tree, offset: usize, cutoff: i64) -> Result<u64, StoreError> {
        let mut purged = 0;
        for entry in tree {
            let (key, value) = entry.map_err(io)?;
            let at = value
                .get(offset..offset + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(i64::from_be_bytes);
            if at.is_some_and(|at| at < cutoff)
                && tree
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)
                    .map_err(io)?
                    .is_ok()
            {
                purged += 1;
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl Store for SledStore {
    async fn revoke_certificate(
        &self,
        serial: &Serial,
        revocation: &CertificateRevocation,
        audit: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        use sled::Transactional as _;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        // A transaction on this rare path (sled's transactions are slow under
        // contention, which is why issuance avoids them): the revocation and
        // its audit record become visible, and durable, together or not at
        // all.
        let event = serde_json::to_vec(audit)
            .map_err(|e| StoreError::Io(format!("cannot encode audit event: {e}")))?;
        // The chain's head is held across the transaction: the record is
        // numbered and sealed after the newest one, and becomes the head
        // only if the transaction wrote it.
        let outcome = {
            let mut head = self.audit_head();
            let seq = self.db.generate_id().map_err(io)?.saturating_add(1);
            let (event, sealed_hash) = audit_chain::seal(seq, &head, &event);
            let key = serial.as_bytes();
            let outcome: Result<RevokeOutcome, TransactionError<StoreError>> =
                (&self.issuance, &self.audit).transaction(|(issuance, audit_log)| {
                    let abort = ConflictableTransactionError::Abort;
                    let Some(current) = issuance.get(key)? else {
                        return Ok(RevokeOutcome::NotIssued);
                    };
                    let mut record = decode(&current, serial).map_err(abort)?;
                    if record.state != IssuanceState::Issued {
                        return Ok(RevokeOutcome::NotIssued);
                    }
                    if record.revocation.is_some() {
                        return Ok(RevokeOutcome::AlreadyRevoked);
                    }
                    record.revocation = Some(revocation.clone());
                    issuance.insert(key, encode(&record).map_err(abort)?)?;
                    audit_log.insert(&seq.to_be_bytes(), event.as_slice())?;
                    Ok(RevokeOutcome::Revoked)
                });
            let outcome = outcome.map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => io(e),
            })?;
            if outcome == RevokeOutcome::Revoked {
                *head = sealed_hash;
            }
            outcome
        };
        if outcome == RevokeOutcome::Revoked {
            self.durable().await?;
        }
        Ok(outcome)
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        grace: time::Duration,
    ) -> Result<u64, StoreError> {
        let now_secs = now.unix_timestamp();
        let cutoff = (now - grace).unix_timestamp();
        // Quota values are (count, window end); the others are one expiry.
        let purged = Self::purge_tree(&self.quotas, 8, now_secs)?
            + Self::purge_tree(&self.revoked_tokens, 0, cutoff)?
            + Self::purge_tree(&self.used_once, 0, cutoff)?;
        let mut purged = purged;
        for tree in self.accounts.expiring() {
            purged += accounts::purge_expired_json(tree, now - grace)?;
        }
        purged += self.accounts.purge_orphans()?;
        Ok(purged)
    }

    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.clients.is_empty()
            && self.issuance.is_empty()
            && self.audit.is_empty()
            && self.no_users())
    }

    async fn export_records(
        &self,
        sink: &mut dyn super::export::ExportSink,
    ) -> Result<(), StoreError> {
        // The data directory's lock keeps a server away while this runs,
        // so the trees do not change under the export.
        use super::export::ExportRecord;
        if let Some(bound) = self.meta.get(META_CA_KEY).map_err(io)? {
            sink.put(ExportRecord::CaBinding {
                ca_key_sha256: String::from_utf8_lossy(&bound).into_owned(),
            })?;
        }
        for entry in &self.clients {
            let (_, value) = entry.map_err(io)?;
            let client = serde_json::from_slice(&value).map_err(|e| StoreError::Decode {
                key: "client".into(),
                detail: e.to_string(),
            })?;
            sink.put(ExportRecord::Client(client))?;
        }
        self.export_accounts(sink)?;
        for record in self.every_issuance() {
            sink.put(ExportRecord::Issuance(record?))?;
        }
        let seconds = |bytes: &[u8], at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(i64::from_be_bytes)
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .ok_or_else(|| StoreError::Decode {
                    key: "timestamp".into(),
                    detail: "not 8 bytes of seconds".into(),
                })
        };
        for entry in &self.revoked_tokens {
            let (key, value) = entry.map_err(io)?;
            sink.put(ExportRecord::RevokedToken {
                jti: String::from_utf8_lossy(&key).into_owned(),
                expires_at: seconds(&value, 0)?,
            })?;
        }
        for entry in &self.revoked_grants {
            let (key, value) = entry.map_err(io)?;
            sink.put(ExportRecord::RevokedGrant {
                grant_id: String::from_utf8_lossy(&key).into_owned(),
                revoked_at: seconds(&value, 0)?,
            })?;
        }
        for entry in &self.used_once {
            let (key, value) = entry.map_err(io)?;
            sink.put(ExportRecord::used_once(&key, seconds(&value, 0)?))?;
        }
        for entry in &self.quotas {
            let (key, value) = entry.map_err(io)?;
            let used = value
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            sink.put(ExportRecord::Quota {
                key: String::from_utf8_lossy(&key).into_owned(),
                used,
                window_end: seconds(&value, 8)?,
            })?;
        }
        for entry in &self.audit {
            let (key, value) = entry.map_err(io)?;
            sink.put(ExportRecord::audit(audit_seq(&key)?, &value))?;
        }
        Ok(())
    }

    async fn import_record(&self, record: super::export::ExportRecord) -> Result<(), StoreError> {
        use super::export::ExportRecord;
        if self.import_account(&record)? {
            return Ok(());
        }
        let seconds = |at: OffsetDateTime| at.unix_timestamp().to_be_bytes();
        match record {
            ExportRecord::CaBinding { ca_key_sha256 } => {
                match self.meta.get(META_CA_KEY).map_err(io)? {
                    Some(bound) if bound.as_ref() != ca_key_sha256.as_bytes() => {
                        return Err(StoreError::ForeignCa(self.path.display().to_string()));
                    }
                    Some(_) => {}
                    None => {
                        self.meta
                            .insert(META_CA_KEY, ca_key_sha256.as_bytes())
                            .map_err(io)?;
                    }
                }
            }
            ExportRecord::Issuance(record) => {
                let serial = record.intent.serial.as_bytes();
                let mut index_key = record.intent.key_sha256.as_bytes().to_vec();
                index_key.push(b'/');
                index_key.extend_from_slice(serial);
                self.issuance_by_key.insert(index_key, &[]).map_err(io)?;
                for origin in origin_keys(&record.intent) {
                    self.issuance_by_origin.insert(origin, &[]).map_err(io)?;
                }
                if self
                    .issuance
                    .insert(serial, encode(&record)?)
                    .map_err(io)?
                    .is_none()
                {
                    self.issuance_records.fetch_add(1, Ordering::Relaxed);
                }
            }
            ExportRecord::Quota {
                key,
                used,
                window_end,
            } => {
                let mut value = [0u8; 16];
                value[..8].copy_from_slice(&used.to_be_bytes());
                value[8..].copy_from_slice(&seconds(window_end));
                self.quotas.insert(key.as_bytes(), &value).map_err(io)?;
            }
            ExportRecord::Audit { seq, stored } => {
                let stored = ExportRecord::bytes(&stored)?;
                let entry =
                    audit_chain::Entry::parse(seq, &stored).ok_or_else(|| StoreError::Decode {
                        key: format!("audit {seq}"),
                        detail: "neither a chained record nor JSON".into(),
                    })?;
                let event: AuditEvent =
                    serde_json::from_slice(&entry.event).map_err(|e| StoreError::Decode {
                        key: format!("audit {seq}"),
                        detail: e.to_string(),
                    })?;
                self.audit.insert(seq.to_be_bytes(), stored).map_err(io)?;
                for sub in event.persons() {
                    self.audit_by_person
                        .insert(person_key(sub, seq), &[][..])
                        .map_err(io)?;
                }
            }
            // A single process keeps its signing keys in its data
            // directory (docs/operations.md, "Moving from sled to
            // PostgreSQL, and back").
            ExportRecord::SigningKeys { .. } => {}
            _ => return Err(super::export::not_imported_here()),
        }
        Ok(())
    }

    async fn finish_import(&self) -> Result<(), StoreError> {
        // New audit records go on after the imported ones: sequence numbers
        // come from sled's id generator, which must pass the highest
        // imported one, and the chain links to the last imported record.
        if let Some((key, value)) = self.audit.last().map_err(io)? {
            let last = audit_seq(&key)?;
            while self.db.generate_id().map_err(io)?.saturating_add(1) <= last {}
            let head = audit_chain::Entry::parse(last, &value)
                .and_then(|entry| entry.link)
                .map_or(audit_chain::GENESIS, |(_, hash)| hash);
            *self.audit_head() = head;
        }
        self.durable().await
    }

    async fn health(&self) -> StoreHealth {
        let probe = async {
            self.meta.insert(META_HEALTH_PROBE, &[1]).map_err(io)?;
            self.durable().await?;
            let version = self
                .meta
                .get(META_SCHEMA_VERSION)
                .map_err(io)?
                .and_then(|b| <[u8; 4]>::try_from(b.as_ref()).ok())
                .map_or(0, u32::from_be_bytes);
            Ok::<_, StoreError>((version, self.issuance_count().await?))
        };
        match probe.await {
            Ok((schema_version, issuance_records)) => StoreHealth {
                backend: "sled",
                ok: true,
                schema_version,
                issuance_records,
                error: None,
            },
            Err(e) => StoreHealth {
                backend: "sled",
                ok: false,
                schema_version: 0,
                issuance_records: 0,
                error: Some(e.to_string()),
            },
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.durable().await
    }
}

// ---------------------------------------------------------------------------

/// The group-commit thread (see the module documentation).
struct GroupCommit {
    sender: Option<mpsc::Sender<Waiter>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

type Waiter = tokio::sync::oneshot::Sender<Result<(), String>>;

/// How long the commit thread waits for more writers when writes are
/// concurrent: about one fsync on this class of disk, so a batch roughly
/// doubles while a lone writer is never delayed (docs/performance.md).
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(500);

impl GroupCommit {
    fn start(db: sled::Db, log_file: std::fs::File) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Waiter>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("slcs-group-commit".into())
            .spawn(move || {
                let mut previous_batch = 0usize;
                while let Ok(first) = receiver.recv() {
                    // Commit delay (as PostgreSQL's commit_delay): when the
                    // last batch showed concurrent writers, wait a moment
                    // for more to join, so one fsync serves more of them.
                    // A lone writer is never delayed.
                    if previous_batch > 1 {
                        std::thread::sleep(COMMIT_DELAY);
                    }
                    let mut batch = vec![first];
                    batch.extend(receiver.try_iter());
                    previous_batch = batch.len();
                    let started = std::time::Instant::now();
                    let result = db
                        .flush()
                        .map_err(|e| e.to_string())
                        .and_then(|_| log_file.sync_data().map_err(|e| e.to_string()));
                    metrics::histogram!(crate::observability::STORE_FLUSH_DURATION)
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!(crate::observability::STORE_FLUSH_BATCH)
                        .record(batch.len() as f64);
                    thread_stats.flushes.fetch_add(1, Ordering::Relaxed);
                    thread_stats
                        .writes
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for waiter in batch {
                        // A waiter whose request was cancelled has gone away;
                        // its write is durable all the same.
                        let _ = waiter.send(result.clone());
                    }
                }
            })?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            stats,
        })
    }

    async fn wait(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.sender
            .as_ref()
            .ok_or_else(|| StoreError::Io("store is closed".into()))?
            .send(tx)
            .map_err(|_| StoreError::Io("the commit thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Io("the commit thread has stopped".into()))?
            .map_err(StoreError::Io)
    }

    fn stop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_catching_panics(config: &sled::Config, display: &str) -> Result<sled::Db, StoreError> {
    // sled 0.34 can panic instead of returning `Corruption` on some damaged
    // files (spacejam/sled#1533). Catch it and report a clear error; keep the
    // panic message out of the operator's terminal.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| config.open()));
    std::panic::set_hook(previous_hook);
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(map_open_error(e, display)),
        Err(panic) => Err(StoreError::Corrupt {
            path: display.to_owned(),
            detail: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the database engine panicked while reading it".into()),
        }),
    }
}

fn map_open_error(error: sled::Error, display: &str) -> StoreError {
    match error {
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            StoreError::Locked(display.to_owned())
        }
        sled::Error::Io(e) => StoreError::Io(e.to_string()),
        other => StoreError::Corrupt {
            path: display.to_owned(),
            detail: other.to_string(),
        },
    }
}

fn io(error: sled::Error) -> StoreError {
    StoreError::Io(error.to_string())
}

fn encode(record: &IssuanceRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Io(format!("cannot encode record: {e}")))
}

fn decode(bytes: &[u8], serial: &Serial) -> Result<IssuanceRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: serial.to_hex(),
        detail: e.to_string(),
    })
}

/// The sequence number an audit key holds.
fn audit_seq(key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Decode {
            key: hex::encode(key),
            detail: "audit key is not a sequence number".into(),
        })
}

/// Audit event `seq` from its stored bytes.
fn audit_record(seq: u64, value: &[u8]) -> Result<AuditRecord, StoreError> {
    let entry = audit_chain::Entry::parse(seq, value).ok_or_else(|| StoreError::Decode {
        key: seq.to_string(),
        detail: "neither a chained audit record nor JSON".into(),
    })?;
    let event = serde_json::from_slice(&entry.event).map_err(|e| StoreError::Decode {
        key: seq.to_string(),
        detail: e.to_string(),
    })?;
    Ok(AuditRecord { seq, event })
}

/// A store in `dir` for unit tests elsewhere in the crate.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn open_for_tests(dir: &Path) -> SledStore {
    SledStore::open(&SledOptions {
        path: dir.join("store"),
        cache_capacity_bytes: 8 << 20,
        mode: OpenMode::CreateIfMissing,
        ca_key_sha256: None,
    })
    .expect("a fresh store opens")
}

/// The key of event `seq` in person `sub`'s audit index: ordered by
/// sequence number within the person.
fn person_key(sub: &str, seq: u64) -> Vec<u8> {
    let mut key = sub.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::IssuanceState;
    use crate::store::conformance::intent;
    use time::macros::datetime;

    /// Opens a store just dropped in this process: sled's background
    /// flusher may hold the file lock for a moment after the drop (a
    /// restart is a new process and never sees this).
    fn reopen(options: &SledOptions) -> Result<SledStore, StoreError> {
        for _ in 0..100 {
            match SledStore::open(options) {
                Err(StoreError::Locked(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        SledStore::open(options)
    }

    fn options(dir: &Path, mode: OpenMode) -> SledOptions {
        SledOptions {
            path: dir.join("store"),
            cache_capacity_bytes: 8 << 20,
            mode,
            ca_key_sha256: Some("aa".repeat(32)),
        }
    }

    #[tokio::test]
    async fn the_audit_chain_survives_reopening_and_shows_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), OpenMode::CreateIfMissing);
        let event = |action: &str| AuditEvent {
            at: datetime!(2026-11-29 12:00:00 UTC),
            actor: "admin".into(),
            action: action.into(),
            target: "t".into(),
            source: None,
            detail: serde_json::Value::Null,
        };
        {
            let store = SledStore::open(&opts).unwrap();
            // A record from before the chain existed: plain JSON.
            let seq = store.db.generate_id().unwrap() + 1;
            store
                .audit
                .insert(
                    seq.to_be_bytes(),
                    serde_json::to_vec(&event("old")).unwrap(),
                )
                .unwrap();
            store.append_audit(&event("a")).await.unwrap();
            store.append_audit(&event("b")).await.unwrap();
        }
        let store = reopen(&opts).unwrap();
        // The chain goes on across the restart, revocations included.
        store.append_audit(&event("c")).await.unwrap();
        store.record_intent(&intent(&[4, 2])).await.unwrap();
        store
            .record_issued(
                &Serial::from_bytes(vec![4, 2]).unwrap(),
                b"der",
                datetime!(2026-11-29 12:00:00 UTC),
            )
            .await
            .unwrap();
        let revoked = crate::store::revoke_certificate(
            &store,
            &Serial::from_bytes(vec![4, 2]).unwrap(),
            "test",
            "admin",
            None,
            datetime!(2026-11-29 12:01:00 UTC),
        )
        .await
        .unwrap();
        assert_eq!(revoked, RevokeOutcome::Revoked);
        store.append_audit(&event("d")).await.unwrap();
        let report = crate::store::verify_audit(&store).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.unchained_before_chain, 1);
        assert_eq!(report.verified, 5);
        let actions: Vec<String> = store
            .audit_events(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event.action)
            .collect();
        assert_eq!(actions, ["old", "a", "b", "c", "certificate.revoke", "d"]);

        // One byte of a stored event changed: found, at that record.
        let seqs: Vec<u64> = store
            .audit_stored(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        let victim = seqs[2];
        let mut bytes = store
            .audit
            .get(victim.to_be_bytes())
            .unwrap()
            .unwrap()
            .to_vec();
        let at = bytes.len() - 2;
        bytes[at] ^= 0x20;
        store.audit.insert(victim.to_be_bytes(), bytes).unwrap();
        let report = crate::store::verify_audit(&store).await.unwrap();
        assert_eq!(
            report.problems,
            vec![audit_chain::Problem::Modified { seq: victim }]
        );
        // A record deleted: the next link breaks.
        let gone = seqs[4];
        store.audit.remove(gone.to_be_bytes()).unwrap();
        let report = crate::store::verify_audit(&store).await.unwrap();
        assert!(
            report
                .problems
                .contains(&audit_chain::Problem::Broken { seq: seqs[5] }),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn schema_1_stores_are_indexed_by_origin_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let at = datetime!(2026-11-23 12:00:00 UTC);
        {
            let store = SledStore::open(&options(dir.path(), OpenMode::CreateIfMissing)).unwrap();
            store.record_intent(&intent(&[1, 1])).await.unwrap();
            store
                .record_issued(&intent(&[1, 1]).serial, b"der", at)
                .await
                .unwrap();
            // Make it look like a schema-1 store: no origin index.
            store.issuance_by_origin.clear().unwrap();
            store
                .meta
                .insert(META_SCHEMA_VERSION, &1u32.to_be_bytes())
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen(&options(dir.path(), OpenMode::MustExist)).unwrap();
        let serial = intent(&[1, 1]).serial;
        assert_eq!(
            store.certificates_from(Origin::Grant("g")).await.unwrap(),
            vec![serial.clone()]
        );
        assert_eq!(
            store.certificates_from(Origin::Token("t")).await.unwrap(),
            vec![serial.clone()]
        );
        assert_eq!(
            store.certificates_from(Origin::Client("c")).await.unwrap(),
            vec![serial.clone()]
        );
        for other in [
            Origin::Grant("other"),
            Origin::Token("other"),
            Origin::Client("other"),
        ] {
            assert!(store.certificates_from(other).await.unwrap().is_empty());
        }
        assert_eq!(store.health().await.schema_version, SCHEMA_VERSION);
        // Revocation: once, then the first one stands; audited once.
        let revoke = |serial: Serial| {
            let store = &store;
            async move {
                crate::store::revoke_certificate(store, &serial, "test", "admin", None, at).await
            }
        };
        assert_eq!(
            revoke(serial.clone()).await.unwrap(),
            RevokeOutcome::Revoked
        );
        assert_eq!(
            revoke(serial.clone()).await.unwrap(),
            RevokeOutcome::AlreadyRevoked
        );
        let unknown = Serial::from_bytes(vec![7]).unwrap();
        assert_eq!(revoke(unknown).await.unwrap(), RevokeOutcome::NotIssued);
        let audited = store.audit_events(0, 10).await.unwrap();
        assert_eq!(audited.len(), 1, "one revocation, one audit record");
        assert_eq!(audited[0].event.action, "certificate.revoke");
    }

    /// A revocation is stored together with its audit record or not at all:
    /// when the commit fails, neither may be left behind alone.
    #[tokio::test]
    async fn a_revocation_is_never_stored_without_its_audit_record() {
        let dir = tempfile::tempdir().unwrap();
        let at = datetime!(2026-11-23 12:00:00 UTC);
        let mut store = SledStore::open(&options(dir.path(), OpenMode::CreateIfMissing)).unwrap();
        let serial = intent(&[4, 4]).serial;
        store.record_intent(&intent(&[4, 4])).await.unwrap();
        store.record_issued(&serial, b"der", at).await.unwrap();
        // The commit thread stops: every durable wait now fails.
        store.commit.stop();
        let result =
            crate::store::revoke_certificate(&store, &serial, "test", "admin", None, at).await;
        assert!(result.is_err(), "the caller is told it failed");
        let revoked = store
            .issuance(&serial)
            .await
            .unwrap()
            .unwrap()
            .revocation
            .is_some();
        let audited = store
            .audit_events(0, 10)
            .await
            .unwrap()
            .iter()
            .any(|r| r.event.action == "certificate.revoke");
        assert_eq!(revoked, audited, "revoked {revoked}, audited {audited}");
    }

    #[tokio::test]
    async fn intent_then_issued_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let at = datetime!(2026-11-23 12:00:01 UTC);
        {
            let store = SledStore::open(&options(dir.path(), OpenMode::CreateIfMissing)).unwrap();
            store.record_intent(&intent(&[1, 2])).await.unwrap();
            let serial = Serial::from_bytes(vec![1, 2]).unwrap();
            store.record_issued(&serial, b"DER", at).await.unwrap();
            assert!(matches!(
                store.record_issued(&serial, b"DER", at).await,
                Err(StoreError::WrongState { .. })
            ));
            assert!(matches!(
                store.record_intent(&intent(&[1, 2])).await,
                Err(StoreError::SerialInUse(_))
            ));
            assert_eq!(store.issuance_count().await.unwrap(), 1);
        }
        let store = reopen(&options(dir.path(), OpenMode::MustExist)).unwrap();
        let record = store
            .issuance(&Serial::from_bytes(vec![1, 2]).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.state, IssuanceState::Issued);
        assert_eq!(record.certificate.as_deref(), Some(&b"DER"[..]));
        assert_eq!(record.intent, intent(&[1, 2]));
        assert!(store.health().await.ok);
    }

    #[tokio::test]
    async fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SledStore::open(&options(dir.path(), OpenMode::CreateIfMissing)).unwrap());
        let mut tasks = Vec::new();
        for i in 0..64u8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store.record_intent(&intent(&[1, i])).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stats = store.commit_stats();
        assert_eq!(stats.writes.load(Ordering::Relaxed), 64);
        assert!(stats.flushes.load(Ordering::Relaxed) <= 64);
        assert_eq!(store.issuance_count().await.unwrap(), 64);
    }

    #[tokio::test]
    async fn missing_unknown_and_foreign_stores_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            reopen(&options(dir.path(), OpenMode::MustExist)),
            Err(StoreError::Missing(_))
        ));
        drop(SledStore::open(&options(dir.path(), OpenMode::CreateIfMissing)).unwrap());
        let mut other = options(dir.path(), OpenMode::MustExist);
        other.ca_key_sha256 = Some("cc".repeat(32));
        assert!(matches!(reopen(&other), Err(StoreError::ForeignCa(_))));
        {
            let store = reopen(&options(dir.path(), OpenMode::MustExist)).unwrap();
            store
                .meta
                .insert(META_SCHEMA_VERSION, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
        }
        assert!(matches!(
            reopen(&options(dir.path(), OpenMode::MustExist)),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }

    #[tokio::test]
    async fn audit_is_append_only_ordered_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let event = |n: u32| AuditEvent {
            at: datetime!(2026-11-23 12:00:00 UTC),
            actor: "admin".into(),
            action: "client.create".into(),
            target: format!("c{n}"),
            source: Some("127.0.0.1".into()),
            detail: serde_json::Value::Null,
        };
        let mut seqs = Vec::new();
        {
            let store = SledStore::open(&options(dir.path(), OpenMode::CreateIfMissing)).unwrap();
            for n in 0..5 {
                seqs.push(store.append_audit(&event(n)).await.unwrap());
            }
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let store = reopen(&options(dir.path(), OpenMode::MustExist)).unwrap();
        let next = store.append_audit(&event(5)).await.unwrap();
        assert!(
            next > seqs[4],
            "sequence numbers are never reused after a restart"
        );
        let all = store.audit_events(0, 100).await.unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].event.target, "c0");
        let tail = store.audit_events(seqs[2], 2).await.unwrap();
        assert_eq!(
            tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![seqs[3], seqs[4]]
        );
    }
}
