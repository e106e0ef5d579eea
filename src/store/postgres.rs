//! The PostgreSQL backend, for several replicas sharing one database.
//!
//! Durability: a statement or transaction that returns has committed, and
//! PostgreSQL's default `synchronous_commit = on` has flushed its WAL, so
//! "acknowledged" means on the database's stable storage (with synchronous
//! replication configured, on its standbys too: that is the operator's
//! choice, docs/operations.md).
//!
//! Correctness across replicas never relies on anything held in this
//! process. Each single-use or counted thing is one atomic statement or a
//! compare-and-swap on the stored bytes:
//!
//! - a serial, a client id, a username, a user code, a single-use id: a
//!   primary key or unique constraint, so of two concurrent inserts one
//!   fails (`SerialInUse`, `ClientExists`, `Conflict`, `false`);
//! - a code redemption, a refresh rotation, a device or approval change:
//!   `UPDATE … WHERE key = $1 AND record = $read`, the bytes read before,
//!   so of two racing writers exactly one changes a row;
//! - a quota: one `INSERT … ON CONFLICT DO UPDATE … WHERE` that counts and
//!   checks the limit under the row lock;
//! - the audit chain: appending locks its head row, so the replicas write
//!   one chain in one order (the price: audit appends are serialised across
//!   replicas, docs/performance.md).
//!
//! Reads go to the database every time; no revocation, approval or client
//! is cached here, so a replica sees another's revocation as soon as it
//! has committed (docs/operations.md, "Several replicas").
//!
//! Every record is stored as the JSON bytes serde writes (the same bytes as
//! the sled backend), beside the columns SQL needs to find, order,
//! constrain and expire it.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use time::OffsetDateTime;

use super::{
    AUDIT_SCAN_LIMIT, AuditEvent, AuditLog, AuditPage, AuditQuery, AuditRecord,
    CertificateRevocation, ClientStore, IssuanceIntent, IssuanceLog, IssuanceQuery, IssuanceRecord,
    IssuanceState, Origin, Outcome, QuotaStore, QuotaTake, ReplayCache, RevocationStore,
    RevokeOutcome, Serial, Store, StoreError, StoreHealth, audit_chain, origins_of,
};
use crate::oauth::clients::{Client, ClientId};

mod accounts;

/// The migrations this build carries, oldest first. Each is applied once,
/// in its own transaction, under PostgreSQL's advisory lock (so replicas
/// starting together do not race); sqlx records each with a checksum and
/// refuses a database whose applied migrations were changed since.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("postgres/migrations/0001_initial.sql"),
    ),
    (
        2,
        "shared signing keys",
        include_str!("postgres/migrations/0002_signing_keys.sql"),
    ),
];

/// The newest schema version this build writes and understands.
pub fn schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

const META_CA_KEY: &str = "ca_key_sha256";
const META_HEALTH_PROBE: &str = "health_probe";

/// How to reach the database and size the pool.
#[derive(Clone)]
pub struct PgOptions {
    /// libpq-style URL (`postgres://user:password@host:port/db?sslmode=…`);
    /// may hold a password, so it is never printed.
    pub url: String,
    /// The password, when not in the URL (read from `store.password_file`).
    pub password: Option<zeroize::Zeroizing<String>>,
    /// Most connections this replica opens.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a request waits for a free connection (or for a new one
    /// to be made) before the store reports itself unavailable.
    pub acquire_timeout: Duration,
    /// How long one statement may run on the server before PostgreSQL
    /// cancels it (`statement_timeout`).
    pub statement_timeout: Duration,
    /// Hex SHA-256 of the CA's SubjectPublicKeyInfo: binds the database to
    /// its CA, as with sled.
    pub ca_key_sha256: Option<String>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    // postgres://user:password@host/… → postgres://user:***@host/…
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable PostgreSQL URL>".into();
    };
    let (authority, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query parameters may carry `password=` too.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    if tail.is_empty() {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}/{tail}")
    }
}

/// The store on PostgreSQL.
pub struct PgStore {
    pool: PgPool,
    display: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.display)
            .finish_non_exhaustive()
    }
}

/// What `slcs migrate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// The schema version before.
    pub from: i64,
    /// The schema version now.
    pub to: i64,
}

impl PgStore {
    fn pool_options(options: &PgOptions) -> Result<(PgPoolOptions, PgConnectOptions), StoreError> {
        let display = redact_url(&options.url);
        let connect: PgConnectOptions =
            options
                .url
                .parse()
                .map_err(|e: sqlx::Error| StoreError::Corrupt {
                    path: display.clone(),
                    detail: format!("not a usable PostgreSQL URL: {e}"),
                })?;
        let connect = match &options.password {
            Some(password) => connect.password(password),
            None => connect,
        };
        let statement_timeout = options.statement_timeout.as_millis().to_string();
        let connect = connect
            .application_name("slcs")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx already tests each connection when it comes back to the
            // pool (and drops one that died with the database, so the pool
            // recovers by itself once the database is back); testing it
            // again before each use would add a round trip to every query.
            .test_before_acquire(false);
        Ok((pool, connect))
    }

    async fn connect(options: &PgOptions) -> Result<(PgPool, String), StoreError> {
        let display = redact_url(&options.url);
        let (pool, connect) = Self::pool_options(options)?;
        let pool = pool.connect_with(connect).await.map_err(|e| {
            StoreError::Io(format!("cannot connect to PostgreSQL at {display}: {e}"))
        })?;
        Ok((pool, display))
    }

    /// Applies the migrations this build carries that the database lacks
    /// (`slcs migrate`). Safe to run from several replicas at once.
    pub async fn migrate(options: &PgOptions) -> Result<MigrationReport, StoreError> {
        let (pool, display) = Self::connect(options).await?;
        let from = applied_version(&pool).await?;
        if from > schema_version() {
            return Err(StoreError::SchemaTooNew {
                found: u32::try_from(from).unwrap_or(u32::MAX),
                supported: u32::try_from(schema_version()).unwrap_or(u32::MAX),
            });
        }
        migrator()
            .run(&pool)
            .await
            .map_err(|e| StoreError::Corrupt {
                path: display.clone(),
                detail: format!("migration failed: {e}"),
            })?;
        let to = applied_version(&pool).await?;
        pool.close().await;
        Ok(MigrationReport { from, to })
    }

    /// Opens the store on a database that `slcs migrate` brought to this
    /// build's schema; refuses one that is behind (run `slcs migrate`),
    /// ahead (run a newer slcs), or bound to another CA.
    pub async fn open(options: &PgOptions) -> Result<Self, StoreError> {
        let (pool, display) = Self::connect(options).await?;
        let found = applied_version(&pool).await?;
        match found.cmp(&schema_version()) {
            std::cmp::Ordering::Less => {
                return Err(StoreError::SchemaBehind {
                    location: display,
                    found: u32::try_from(found).unwrap_or_default(),
                    needed: u32::try_from(schema_version()).unwrap_or_default(),
                });
            }
            std::cmp::Ordering::Greater => {
                return Err(StoreError::SchemaTooNew {
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                    supported: u32::try_from(schema_version()).unwrap_or(u32::MAX),
                });
            }
            std::cmp::Ordering::Equal => {}
        }
        if let Some(expected) = &options.ca_key_sha256 {
            // The first replica to start binds the database to its CA; the
            // others must carry the same CA.
            sqlx::query(
                "INSERT INTO slcs_meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(META_CA_KEY)
            .bind(expected)
            .execute(&pool)
            .await
            .map_err(db)?;
            let bound: String = sqlx::query_scalar("SELECT value FROM slcs_meta WHERE key = $1")
                .bind(META_CA_KEY)
                .fetch_one(&pool)
                .await
                .map_err(db)?;
            if bound != *expected {
                return Err(StoreError::ForeignCa(display));
            }
        }
        Ok(Self { pool, display })
    }

    /// Where the database is (password redacted).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn read_issuance(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM issuance WHERE serial = $1")
                .bind(serial.as_bytes())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        stored
            .map(|bytes| decode_issuance(&bytes, serial))
            .transpose()
    }

    /// Moves an `Intent` record to its outcome: a compare-and-swap against
    /// the bytes read, retried if another writer changed the record.
    async fn finish(
        &self,
        serial: &Serial,
        outcome: Outcome<'_>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        loop {
            let current: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT record FROM issuance WHERE serial = $1")
                    .bind(serial.as_bytes())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
            let Some(current) = current else {
                return Err(StoreError::UnknownSerial(serial.clone()));
            };
            let mut record = decode_issuance(&current, serial)?;
            record.finish(outcome, at)?;
            let swapped =
                sqlx::query("UPDATE issuance SET record = $3 WHERE serial = $1 AND record = $2")
                    .bind(serial.as_bytes())
                    .bind(&current)
                    .bind(encode(&record, "issuance record")?)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?
                    .rows_affected();
            if swapped == 1 {
                return Ok(());
            }
        }
    }
}

/// The highest migration applied; 0 on a database slcs never touched.
async fn applied_version(pool: &PgPool) -> Result<i64, StoreError> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    if table.is_none() {
        return Ok(0);
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(db)?;
    Ok(version.unwrap_or(0))
}

/// A database failure as the domain sees it. Every failure to reach or use
/// the database is `Io`, which the HTTP edge answers with 503 (fail closed:
/// nothing is issued on state that could not be read).
pub(crate) fn db(error: sqlx::Error) -> StoreError {
    StoreError::Io(format!("PostgreSQL: {error}"))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

fn encode<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io(format!("cannot encode {what}: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: what.to_owned(),
        detail: e.to_string(),
    })
}

fn decode_issuance(bytes: &[u8], serial: &Serial) -> Result<IssuanceRecord, StoreError> {
    decode(bytes, &format!("issuance {serial}"))
}

/// A lookup key that came from outside: PostgreSQL's text cannot hold NUL,
/// and no stored key contains one, so such a key names nothing (as it would
/// in sled) instead of failing the query.
fn lookup_key(key: &str) -> Option<&str> {
    (!key.contains('\0')).then_some(key)
}

fn origin_kind(origin: Origin<'_>) -> i8 {
    // "char" columns are i8 in sqlx.
    match origin {
        Origin::Grant(_) => b'g' as i8,
        Origin::Token(_) => b't' as i8,
        Origin::Client(_) => b'c' as i8,
    }
}

fn origin_id<'a>(origin: &Origin<'a>) -> &'a str {
    match *origin {
        Origin::Grant(id) | Origin::Token(id) | Origin::Client(id) => id,
    }
}

/// Inserts an issuance record and its origins in one statement; binds
/// with [`append_origins`].
fn insert_issuance_statement() -> &'static str {
    "WITH record AS (
         INSERT INTO issuance (serial, subject, key_sha256, recorded_at, record)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING serial)
     INSERT INTO issuance_origins (kind, origin, serial)
     SELECT o.kind, o.origin, record.serial
     FROM record, unnest($6::\"char\"[], $7::text[]) AS o(kind, origin)
     ON CONFLICT DO NOTHING"
}

/// Binds [`insert_issuance_statement`]'s parameters: `intent`'s columns,
/// the stored `record` and the origins it is found under.
fn append_origins<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    intent: &'q IssuanceIntent,
    record: &'q [u8],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let origins = origins_of(intent);
    let kinds: Vec<i8> = origins.iter().map(|o| origin_kind(*o)).collect();
    let ids: Vec<String> = origins.iter().map(|o| origin_id(o).to_owned()).collect();
    query
        .bind(intent.serial.as_bytes())
        .bind(&intent.provenance.subject)
        .bind(&intent.key_sha256)
        .bind(intent.recorded_at)
        .bind(record)
        .bind(kinds)
        .bind(ids)
}

/// Appends `event` to the audit chain inside `tx`, in one statement: the
/// head row moves to the new link (its update locks it until `tx` commits,
/// so the replicas' appends form one sequence), the record is stored
/// sealed after the old head, and the person index follows. The link is
/// computed by the database with its `sha256()` over exactly the bytes
/// [`audit_chain::link_hash`] hashes (the chain's domain tag, the sequence
/// number as 8 big-endian bytes, the previous hash, the event's JSON), so
/// the lock is held for one round trip and the commit, not for several.
/// Visible, and durable, when the statement's transaction commits (on the
/// pool: the statement itself; in a transaction: with the rest of it).
pub(crate) async fn append_audit_in<'e>(
    executor: impl sqlx::Executor<'e, Database = Postgres>,
    event: &AuditEvent,
) -> Result<u64, StoreError> {
    let event_json = encode(event, "audit event")?;
    let persons: Vec<String> = event
        .persons()
        .into_iter()
        .filter_map(lookup_key)
        .map(str::to_owned)
        .collect();
    // In SET, `hash` and `seq` are the row as it was: `prev` takes the old
    // head, and the new hash links to it.
    let seq: i64 = sqlx::query_scalar(
        "WITH link AS (
             UPDATE audit_head
             SET prev = hash,
                 seq = seq + 1,
                 hash = sha256($1 || int8send(seq + 1) || hash || $2)
             RETURNING seq, prev, hash),
         record AS (
             INSERT INTO audit (seq, stored)
             SELECT seq, $3 || prev || hash || $2 FROM link
             RETURNING seq),
         persons AS (
             INSERT INTO audit_persons (sub, seq)
             SELECT person, link.seq FROM link, unnest($4::text[]) AS person)
         SELECT seq FROM record",
    )
    .bind(audit_chain::DOMAIN)
    .bind(&event_json)
    .bind(&[audit_chain::CHAINED][..])
    .bind(&persons)
    .fetch_one(executor)
    .await
    .map_err(db)?;
    u64::try_from(seq).map_err(|_| StoreError::Decode {
        key: "audit_head".into(),
        detail: "negative sequence number".into(),
    })
}

fn audit_record(seq: i64, stored: &[u8]) -> Result<AuditRecord, StoreError> {
    let seq = u64::try_from(seq).map_err(|_| StoreError::Decode {
        key: format!("audit {seq}"),
        detail: "negative sequence number".into(),
    })?;
    let entry = audit_chain::Entry::parse(seq, stored).ok_or_else(|| StoreError::Decode {
        key: format!("audit {seq}"),
        detail: "neither a chained record nor JSON".into(),
    })?;
    Ok(AuditRecord {
        seq,
        event: decode(&entry.event, &format!("audit {seq}"))?,
    })
}

/// Times of revocations, single-use ids and quota windows are kept to the
/// second, as sled keeps them, so both backends hold (and export) the same
/// values; nothing finer matters for an expiry.
fn whole_seconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap_or(at)
}

fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl IssuanceLog for PgStore {
    async fn record_intent(&self, intent: &IssuanceIntent) -> Result<(), StoreError> {
        let record = encode(&IssuanceRecord::from_intent(intent), "issuance record")?;
        // One statement, so one round trip and one commit: the record and
        // its origins, or (serial in use) neither.
        let inserted = append_origins(sqlx::query(insert_issuance_statement()), intent, &record)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::SerialInUse(intent.serial.clone()))
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn record_issued(
        &self,
        serial: &Serial,
        certificate_der: &[u8],
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.finish(serial, Outcome::Issued(certificate_der), at)
            .await
    }

    async fn record_abandoned(
        &self,
        serial: &Serial,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.finish(serial, Outcome::Abandoned(reason), at).await
    }

    async fn issuance(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        self.read_issuance(serial).await
    }

    async fn certificates_from(&self, origin: Origin<'_>) -> Result<Vec<Serial>, StoreError> {
        let Some(id) = lookup_key(origin_id(&origin)) else {
            return Ok(Vec::new());
        };
        let serials: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT serial FROM issuance_origins WHERE kind = $1 AND origin = $2 ORDER BY serial",
        )
        .bind(origin_kind(origin))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        serials
            .into_iter()
            .map(|bytes| {
                Serial::from_bytes(bytes).map_err(|detail| StoreError::Decode {
                    key: "issuance_origins".into(),
                    detail,
                })
            })
            .collect()
    }

    async fn issuance_count(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM issuance")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn search_issuances(
        &self,
        query: &IssuanceQuery,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        // The indexes narrow the search; `query.matches` below is the
        // definition, applied again so both backends answer alike.
        if query.subject.as_deref().is_some_and(|s| s.contains('\0'))
            || query.client_id.as_deref().is_some_and(|c| c.contains('\0'))
        {
            return Ok(Vec::new());
        }
        let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT serial, record FROM issuance i
             WHERE ($1::text IS NULL OR i.subject = $1)
               AND ($2::text IS NULL OR EXISTS (
                     SELECT 1 FROM issuance_origins o
                     WHERE o.kind = 'c' AND o.origin = $2 AND o.serial = i.serial))
               AND ($3::bytea IS NULL OR i.serial = $3)
               AND ($4::timestamptz IS NULL OR i.recorded_at >= $4)
               AND ($5::timestamptz IS NULL OR i.recorded_at < $5)
             ORDER BY i.recorded_at DESC
             LIMIT $6",
        )
        .bind(query.subject.as_deref())
        .bind(query.client_id.as_deref())
        .bind(query.serial.as_ref().map(Serial::as_bytes))
        .bind(query.from)
        .bind(query.until)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for (serial, record) in rows {
            let serial = Serial::from_bytes(serial).map_err(|detail| StoreError::Decode {
                key: "issuance".into(),
                detail,
            })?;
            let record = decode_issuance(&record, &serial)?;
            if query.matches(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl AuditLog for PgStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        // One statement, its own transaction: one round trip.
        append_audit_in(&self.pool, event).await
    }

    async fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_stored(after, limit)
            .await?
            .into_iter()
            .map(|(seq, stored)| audit_record(sql_seq(seq), &stored))
            .collect()
    }

    async fn audit_stored(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, stored FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(sql_seq(after))
                .bind(sql_limit(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(seq, stored)| (u64::try_from(seq).unwrap_or_default(), stored))
            .collect())
    }

    async fn search_audit(
        &self,
        query: &AuditQuery,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        // Newest first, a batch at a time, filtered here with the same
        // definition as sled's and the same bound on what one search reads.
        const BATCH: usize = 500;
        let mut page = AuditPage::default();
        let mut end = before.map_or(i64::MAX, sql_seq);
        let mut read = 0usize;
        loop {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, stored FROM audit WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(end)
            .bind(sql_limit(BATCH))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let exhausted = rows.len() < BATCH;
            for (seq, stored) in rows {
                if page.records.len() == limit || read == AUDIT_SCAN_LIMIT {
                    // More may match further back.
                    page.next_before =
                        Some(u64::try_from(seq).unwrap_or_default().saturating_add(1));
                    return Ok(page);
                }
                read += 1;
                end = seq;
                let record = audit_record(seq, &stored)?;
                if query.matches(&record.event) {
                    page.records.push(record);
                }
            }
            if exhausted {
                return Ok(page);
            }
        }
    }

    async fn audit_of_person(
        &self,
        sub: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let Some(sub) = lookup_key(sub) else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT a.seq, a.stored FROM audit_persons p JOIN audit a ON a.seq = p.seq
             WHERE p.sub = $1 ORDER BY p.seq DESC LIMIT $2",
        )
        .bind(sub)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|(seq, stored)| audit_record(*seq, stored))
            .collect()
    }
}

#[async_trait]
impl ClientStore for PgStore {
    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO clients (folded_id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(client.id.folded())
        .bind(encode(client, "client")?)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::ClientExists(client.id.as_str().to_owned()));
        }
        Ok(())
    }

    async fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM clients WHERE folded_id = $1")
                .bind(id.folded())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        let client: Option<Client> = stored
            .map(|bytes| decode(&bytes, &format!("client {}", id.as_str())))
            .transpose()?;
        // Unique regardless of case, but an id names its client only when
        // spelled exactly as registered.
        Ok(client.filter(|client| client.id == *id))
    }

    async fn update_client(&self, expected: &Client, updated: &Client) -> Result<(), StoreError> {
        let conflict = || StoreError::Conflict(format!("client {}", expected.id.as_str()));
        let folded = expected.id.folded();
        accounts::replace_record(
            &self.pool,
            accounts::CLIENTS,
            &folded,
            expected,
            updated,
            None,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => conflict(),
            other => other,
        })
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM clients ORDER BY folded_id")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.iter().map(|bytes| decode(bytes, "client")).collect()
    }
}

#[async_trait]
impl ReplayCache for PgStore {
    async fn use_once(&self, id: &str, expires_at: OffsetDateTime) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO used_once (id, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id.as_bytes())
        .bind(whole_seconds(expires_at))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(inserted == 1)
    }
}

#[async_trait]
impl QuotaStore for PgStore {
    async fn take_quota(
        &self,
        key: &str,
        limit: u64,
        window_end: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<QuotaTake, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(QuotaTake::Exhausted);
        }
        // One statement: the row lock taken by ON CONFLICT makes the check
        // and the count one step, so concurrent takers on any replica never
        // overshoot. A window that ended restarts at one.
        let used: Option<i64> = sqlx::query_scalar(
            "INSERT INTO quotas AS q (key, used, window_end) VALUES ($1, 1, $2)
             ON CONFLICT (key) DO UPDATE SET
                 used = CASE WHEN q.window_end <= $3 THEN 1 ELSE q.used + 1 END,
                 window_end = CASE WHEN q.window_end <= $3 THEN $2 ELSE q.window_end END
             WHERE q.window_end <= $3 OR q.used < $4
             RETURNING used",
        )
        .bind(key)
        .bind(whole_seconds(window_end))
        .bind(now)
        .bind(limit)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(match used {
            Some(used) => QuotaTake::Granted(u64::try_from(used).unwrap_or_default()),
            None => QuotaTake::Exhausted,
        })
    }
}

#[async_trait]
impl RevocationStore for PgStore {
    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)
             ON CONFLICT (jti) DO UPDATE SET expires_at = greatest(revoked_tokens.expires_at, $2)",
        )
        .bind(jti)
        .bind(whole_seconds(expires_at))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn revoke_grant(&self, grant_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_grants (grant_id, revoked_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(grant_id)
        .bind(whole_seconds(at))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn is_revoked(&self, jti: &str, grant_id: &str) -> Result<bool, StoreError> {
        let (Some(jti), Some(grant_id)) = (lookup_key(jti), lookup_key(grant_id)) else {
            return Ok(false);
        };
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1)
                 OR EXISTS (SELECT 1 FROM revoked_grants WHERE grant_id = $2)",
        )
        .bind(jti)
        .bind(grant_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn health(&self) -> StoreHealth {
        let probe = async {
            // A write that commits: "reachable" is not enough, the
            // database must accept (and make durable) a write.
            sqlx::query(
                "INSERT INTO slcs_meta (key, value) VALUES ($1, now()::text)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(META_HEALTH_PROBE)
            .execute(&self.pool)
            .await
            .map_err(db)?;
            let version = applied_version(&self.pool).await?;
            Ok::<_, StoreError>((version, self.issuance_count().await?))
        };
        match probe.await {
            Ok((version, issuance_records)) => StoreHealth {
                backend: "postgres",
                ok: true,
                schema_version: u32::try_from(version).unwrap_or_default(),
                issuance_records,
                error: None,
            },
            Err(e) => StoreHealth {
                backend: "postgres",
                ok: false,
                schema_version: 0,
                issuance_records: 0,
                error: Some(e.to_string()),
            },
        }
    }

    fn recovers_by_itself(&self) -> bool {
        // The pool reconnects once the database is back.
        true
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged write has committed already.
        Ok(())
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.holds_nothing().await
    }

    async fn export_records(
        &self,
        sink: &mut dyn super::export::ExportSink,
    ) -> Result<(), StoreError> {
        self.export_all(sink).await
    }

    async fn import_record(&self, record: super::export::ExportRecord) -> Result<(), StoreError> {
        self.import_one(record).await
    }

    async fn finish_import(&self) -> Result<(), StoreError> {
        // Every record committed as it was written.
        Ok(())
    }

    fn shares_signing_keys(&self) -> bool {
        true
    }

    async fn shared_signing_keys(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT generation, sealed FROM signing_keys")
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(|(generation, sealed)| (u64::try_from(generation).unwrap_or_default(), sealed)))
    }

    async fn put_shared_signing_keys(
        &self,
        generation: u64,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        let generation = i64::try_from(generation)
            .map_err(|_| StoreError::Conflict("signing key generation".into()))?;
        // Generation 1 is an insert (the unique row refuses a second
        // one); later ones replace exactly the generation before.
        let written = if generation == 1 {
            sqlx::query(
                "INSERT INTO signing_keys (generation, sealed) VALUES (1, $1) ON CONFLICT DO NOTHING",
            )
            .bind(sealed)
            .execute(&self.pool)
            .await
        } else {
            sqlx::query(
                "UPDATE signing_keys SET generation = $1, sealed = $2 WHERE generation = $1 - 1",
            )
            .bind(generation)
            .bind(sealed)
            .execute(&self.pool)
            .await
        }
        .map_err(db)?
        .rows_affected();
        if written == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "signing keys (another replica changed them)".into(),
            ))
        }
    }

    async fn revoke_certificate(
        &self,
        serial: &Serial,
        revocation: &CertificateRevocation,
        audit: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        // One transaction: the revocation and its audit record commit
        // together or not at all. The row lock makes the first revocation
        // stand when two replicas revoke at once.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let current: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM issuance WHERE serial = $1 FOR UPDATE")
                .bind(serial.as_bytes())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(current) = current else {
            return Ok(RevokeOutcome::NotIssued);
        };
        let mut record = decode_issuance(&current, serial)?;
        if record.state != IssuanceState::Issued {
            return Ok(RevokeOutcome::NotIssued);
        }
        if record.revocation.is_some() {
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        record.revocation = Some(revocation.clone());
        sqlx::query("UPDATE issuance SET record = $2 WHERE serial = $1")
            .bind(serial.as_bytes())
            .bind(encode(&record, "issuance record")?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        append_audit_in(&mut *tx, audit).await?;
        tx.commit().await.map_err(db)?;
        Ok(RevokeOutcome::Revoked)
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        grace: time::Duration,
    ) -> Result<u64, StoreError> {
        let cutoff = now - grace;
        let mut purged = 0;
        let statements: [(&str, OffsetDateTime); 9] = [
            ("DELETE FROM quotas WHERE window_end <= $1", now),
            ("DELETE FROM revoked_tokens WHERE expires_at < $1", cutoff),
            ("DELETE FROM used_once WHERE expires_at < $1", cutoff),
            ("DELETE FROM sessions WHERE expires_at < $1", cutoff),
            (
                "DELETE FROM pending_authorizations WHERE expires_at < $1",
                cutoff,
            ),
            (
                "DELETE FROM authorization_codes WHERE expires_at < $1",
                cutoff,
            ),
            ("DELETE FROM refresh_tokens WHERE expires_at < $1", cutoff),
            ("DELETE FROM device_codes WHERE expires_at < $1", cutoff),
            ("DELETE FROM token_lineage WHERE expires_at < $1", cutoff),
        ];
        for (statement, before) in statements {
            purged += sqlx::query(statement)
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
        }
        Ok(purged)
    }
}

/// Export and import (`slcs store export` / `import`).
mod transfer {
    use sqlx::Row as _;
    use sqlx::postgres::PgRow;

    use super::{
        PgStore, StoreError, append_origins, db, decode, encode, insert_issuance_statement,
        lookup_key, sql_seq,
    };
    use crate::store::audit_chain;
    use crate::store::export::{ExportRecord, ExportSink};

    /// Runs `sql` through a cursor inside `tx` (a snapshot), handing each
    /// row to `each`; a thousand rows in memory at a time.
    async fn each_row(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        sql: &str,
        mut each: impl FnMut(&PgRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        sqlx::query(&format!("DECLARE export_rows NO SCROLL CURSOR FOR {sql}"))
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        loop {
            // Not a prepared statement: the same FETCH returns other
            // columns for each table's cursor, and a cached statement would
            // keep the first one's.
            let rows = sqlx::query("FETCH 1000 FROM export_rows")
                .persistent(false)
                .fetch_all(&mut **tx)
                .await
                .map_err(db)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                each(row)?;
            }
        }
        sqlx::query("CLOSE export_rows")
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    fn column<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        row: &'r PgRow,
        name: &str,
    ) -> Result<T, StoreError> {
        row.try_get(name).map_err(db)
    }

    async fn run(
        pool: &sqlx::PgPool,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<(), StoreError> {
        query.execute(pool).await.map(|_| ()).map_err(db)
    }

    /// A table of JSON records, each row exported as `line` makes it.
    async fn records(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        sink: &mut dyn ExportSink,
        sql: &str,
        what: &str,
        line: Line,
    ) -> Result<(), StoreError> {
        each_row(tx, sql, |row| {
            let bytes: Vec<u8> = column(row, "record")?;
            sink.put(line(&bytes, what)?)
        })
        .await
    }

    /// What makes one export line of a stored record.
    type Line = fn(&[u8], &str) -> Result<ExportRecord, StoreError>;

    /// The tables of JSON records, in export order (an approval before the
    /// pointers to it, which follow these), and the line each row becomes.
    const RECORD_TABLES: [(&str, &str, Line); 10] = [
        (
            "SELECT record FROM clients ORDER BY folded_id",
            "client",
            |b, w| Ok(ExportRecord::Client(decode(b, w)?)),
        ),
        ("SELECT record FROM users ORDER BY sub", "user", |b, w| {
            Ok(ExportRecord::User(decode(b, w)?))
        }),
        (
            "SELECT record FROM sessions ORDER BY id_hash",
            "session",
            |b, w| Ok(ExportRecord::Session(decode(b, w)?)),
        ),
        (
            "SELECT record FROM approvals ORDER BY id",
            "approval",
            |b, w| Ok(ExportRecord::Approval(decode(b, w)?)),
        ),
        (
            "SELECT record FROM pending_authorizations ORDER BY id",
            "authorization request",
            |b, w| Ok(ExportRecord::Pending(decode(b, w)?)),
        ),
        (
            "SELECT record FROM authorization_codes ORDER BY hash",
            "authorization code",
            |b, w| Ok(ExportRecord::Code(decode(b, w)?)),
        ),
        (
            "SELECT record FROM refresh_tokens ORDER BY hash",
            "refresh token",
            |b, w| Ok(ExportRecord::Refresh(decode(b, w)?)),
        ),
        (
            "SELECT record FROM device_codes ORDER BY hash",
            "device code",
            |b, w| Ok(ExportRecord::Device(decode(b, w)?)),
        ),
        (
            "SELECT record FROM token_lineage ORDER BY jti",
            "token lineage",
            |b, w| Ok(ExportRecord::Lineage(decode(b, w)?)),
        ),
        (
            "SELECT record FROM issuance ORDER BY recorded_at, serial",
            "issuance record",
            |b, w| Ok(ExportRecord::Issuance(decode(b, w)?)),
        ),
    ];

    impl PgStore {
        pub(super) async fn export_all(&self, sink: &mut dyn ExportSink) -> Result<(), StoreError> {
            // One snapshot for the whole export: replicas may go on
            // serving, and the file is still one consistent moment.
            let mut tx = self.pool.begin().await.map_err(db)?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let bound: Option<String> =
                sqlx::query_scalar("SELECT value FROM slcs_meta WHERE key = $1")
                    .bind(super::META_CA_KEY)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            if let Some(ca_key_sha256) = bound {
                sink.put(ExportRecord::CaBinding { ca_key_sha256 })?;
            }
            let tx = &mut tx;
            for (sql, what, line) in RECORD_TABLES {
                records(tx, sink, sql, what, line).await?;
            }
            each_row(
                tx,
                "SELECT sub, client_id, approval_id FROM current_approvals ORDER BY sub, client_id",
                |row| {
                    sink.put(ExportRecord::CurrentApproval {
                        sub: column(row, "sub")?,
                        client_id: column(row, "client_id")?,
                        approval_id: column(row, "approval_id")?,
                    })
                },
            )
            .await?;
            each_row(
                tx,
                "SELECT approval_id, grant_id FROM approval_grants ORDER BY approval_id, grant_id",
                |row| {
                    sink.put(ExportRecord::ApprovalGrant {
                        approval_id: column(row, "approval_id")?,
                        grant_id: column(row, "grant_id")?,
                    })
                },
            )
            .await?;
            each_row(
                tx,
                "SELECT jti, expires_at FROM revoked_tokens ORDER BY jti",
                |row| {
                    sink.put(ExportRecord::RevokedToken {
                        jti: column(row, "jti")?,
                        expires_at: column(row, "expires_at")?,
                    })
                },
            )
            .await?;
            each_row(
                tx,
                "SELECT grant_id, revoked_at FROM revoked_grants ORDER BY grant_id",
                |row| {
                    sink.put(ExportRecord::RevokedGrant {
                        grant_id: column(row, "grant_id")?,
                        revoked_at: column(row, "revoked_at")?,
                    })
                },
            )
            .await?;
            each_row(
                tx,
                "SELECT id, expires_at FROM used_once ORDER BY id",
                |row| {
                    let id: Vec<u8> = column(row, "id")?;
                    sink.put(ExportRecord::used_once(&id, column(row, "expires_at")?))
                },
            )
            .await?;
            each_row(
                tx,
                "SELECT key, used, window_end FROM quotas ORDER BY key",
                |row| {
                    let used: i64 = column(row, "used")?;
                    sink.put(ExportRecord::Quota {
                        key: column(row, "key")?,
                        used: u64::try_from(used).unwrap_or_default(),
                        window_end: column(row, "window_end")?,
                    })
                },
            )
            .await?;
            each_row(tx, "SELECT seq, stored FROM audit ORDER BY seq", |row| {
                let seq: i64 = column(row, "seq")?;
                let stored: Vec<u8> = column(row, "stored")?;
                sink.put(ExportRecord::audit(
                    u64::try_from(seq).unwrap_or_default(),
                    &stored,
                ))
            })
            .await?;
            each_row(tx, "SELECT generation, sealed FROM signing_keys", |row| {
                let generation: i64 = column(row, "generation")?;
                let sealed: Vec<u8> = column(row, "sealed")?;
                sink.put(ExportRecord::SigningKeys {
                    generation: u64::try_from(generation).unwrap_or_default(),
                    sealed: base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        sealed,
                    ),
                })
            })
            .await?;
            Ok(())
        }

        pub(super) async fn import_one(&self, record: ExportRecord) -> Result<(), StoreError> {
            let pool = &self.pool;
            match record {
                ExportRecord::CaBinding { ca_key_sha256 } => {
                    let bound: Option<String> =
                        sqlx::query_scalar("SELECT value FROM slcs_meta WHERE key = $1")
                            .bind(super::META_CA_KEY)
                            .fetch_optional(pool)
                            .await
                            .map_err(db)?;
                    match bound {
                        Some(bound) if bound != ca_key_sha256 => {
                            Err(StoreError::ForeignCa(self.display.clone()))
                        }
                        Some(_) => Ok(()),
                        None => {
                            run(pool, sqlx::query("INSERT INTO slcs_meta (key, value) VALUES ($1, $2)")
                                .bind(super::META_CA_KEY)
                                .bind(ca_key_sha256))
                            .await
                        }
                    }
                }
                ExportRecord::Approval(approval) => {
                    run(pool, sqlx::query("INSERT INTO approvals (id, record) VALUES ($1, $2)")
                        .bind(&approval.id)
                        .bind(encode(&approval, "approval")?))
                    .await
                }
                ExportRecord::CurrentApproval {
                    sub,
                    client_id,
                    approval_id,
                } => {
                    run(pool, sqlx::query(
                        "INSERT INTO current_approvals (sub, client_id, approval_id) VALUES ($1, $2, $3)",
                    )
                    .bind(sub)
                    .bind(client_id)
                    .bind(approval_id))
                    .await
                }
                ExportRecord::Lineage(lineage) => {
                    run(pool, sqlx::query(
                        "INSERT INTO token_lineage (jti, parent_jti, expires_at, record) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&lineage.jti)
                    .bind(&lineage.parent_jti)
                    .bind(lineage.expires_at)
                    .bind(encode(&lineage, "token lineage")?))
                    .await
                }
                ExportRecord::Issuance(record) => {
                    let stored = encode(&record, "issuance record")?;
                    append_origins(
                        sqlx::query(insert_issuance_statement()),
                        &record.intent,
                        &stored,
                    )
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .map_err(db)
                }
                ExportRecord::Quota {
                    key,
                    used,
                    window_end,
                } => {
                    run(pool, sqlx::query(
                        "INSERT INTO quotas (key, used, window_end) VALUES ($1, $2, $3)",
                    )
                    .bind(key)
                    .bind(i64::try_from(used).unwrap_or(i64::MAX))
                    .bind(window_end))
                    .await
                }
                ExportRecord::Audit { seq, stored } => {
                    let stored = ExportRecord::bytes(&stored)?;
                    self.import_audit(seq, &stored).await
                }
                ExportRecord::SigningKeys { generation, sealed } => {
                    run(pool, sqlx::query(
                        "INSERT INTO signing_keys (generation, sealed) VALUES ($1, $2)",
                    )
                    .bind(i64::try_from(generation).unwrap_or(i64::MAX))
                    .bind(ExportRecord::bytes(&sealed)?))
                    .await
                }
                _ => Err(crate::store::export::not_imported_here()),
            }
        }

        /// An audit record as it was stored, its person index, and the
        /// chain's head moved to it (the next append links after it).
        async fn import_audit(&self, seq: u64, stored: &[u8]) -> Result<(), StoreError> {
            let entry =
                audit_chain::Entry::parse(seq, stored).ok_or_else(|| StoreError::Decode {
                    key: format!("audit {seq}"),
                    detail: "neither a chained record nor JSON".into(),
                })?;
            let event: crate::store::AuditEvent = decode(&entry.event, "audit event")?;
            let head = entry.link.map_or(audit_chain::GENESIS, |(_, hash)| hash);
            let persons: Vec<String> = event
                .persons()
                .into_iter()
                .filter_map(lookup_key)
                .map(str::to_owned)
                .collect();
            let mut tx = self.pool.begin().await.map_err(db)?;
            sqlx::query("INSERT INTO audit (seq, stored) VALUES ($1, $2)")
                .bind(sql_seq(seq))
                .bind(stored)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            if !persons.is_empty() {
                sqlx::query("INSERT INTO audit_persons (sub, seq) SELECT unnest($1::text[]), $2")
                    .bind(&persons)
                    .bind(sql_seq(seq))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            let prev = entry.link.map_or(audit_chain::GENESIS, |(prev, _)| prev);
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2, prev = $3 WHERE seq < $1")
                .bind(sql_seq(seq))
                .bind(head.as_slice())
                .bind(prev.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)
        }

        pub(super) async fn holds_nothing(&self) -> Result<bool, StoreError> {
            sqlx::query_scalar(
                "SELECT NOT EXISTS (SELECT 1 FROM clients) AND NOT EXISTS (SELECT 1 FROM users)
                    AND NOT EXISTS (SELECT 1 FROM issuance) AND NOT EXISTS (SELECT 1 FROM audit)",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(db)
        }
    }
}
