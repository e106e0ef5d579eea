//! `slcs store export` / `slcs store import`: a deployment's whole store as
//! JSON lines, to move it between backends (sled → PostgreSQL when one
//! machine is no longer enough, and back) or to inspect it.
//!
//! The format is the domain's, not a backend's: one record per line,
//! `{"kind": …, "record": …}`, the records as serde writes them elsewhere
//! in slcs. The first line is a header naming the format and its version;
//! the last is a trailer counting the lines between, so a truncated file is
//! refused rather than half imported. Audit records carry their stored
//! bytes (base64), so the hash chain is moved exactly and `slcs audit
//! verify` passes after the move; indexes (usernames, origins, a person's
//! events) are not exported but rebuilt by the importing backend.
//!
//! Import goes into an empty store only: merging two deployments' logs
//! would break both audit chains and could mix serials.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{IssuanceRecord, Store, StoreError};
use crate::delegation::Approval;
use crate::oauth::clients::Client;
use crate::oauth::grants::{
    AuthorizationCode, DeviceRecord, PendingAuthorization, RefreshRecord, TokenLineage,
};
use crate::users::User;
use crate::users::session::Session;

/// The format's name, in the header.
pub const FORMAT: &str = "slcs-store-export";
/// The version of the format this build writes and reads.
pub const VERSION: u32 = 1;

/// One line of an export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum ExportRecord {
    /// The first line.
    Header {
        /// [`FORMAT`].
        format: String,
        /// [`VERSION`].
        version: u32,
        /// The backend exported from.
        backend: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        exported_at: OffsetDateTime,
    },
    /// The CA the store belongs to (hex SHA-256 of its public key).
    CaBinding {
        /// The fingerprint.
        ca_key_sha256: String,
    },
    /// A registered client.
    Client(Client),
    /// A person's account.
    User(User),
    /// A browser session.
    Session(Session),
    /// An approval (current or replaced).
    Approval(Approval),
    /// Which approval is a person's current one for a client.
    CurrentApproval {
        /// The person.
        sub: String,
        /// The client.
        client_id: String,
        /// The approval.
        approval_id: String,
    },
    /// A grant made under an approval.
    ApprovalGrant {
        /// The approval.
        approval_id: String,
        /// The grant.
        grant_id: String,
    },
    /// An authorization request waiting for sign-in or consent.
    Pending(PendingAuthorization),
    /// An authorization code.
    Code(AuthorizationCode),
    /// A refresh token record.
    Refresh(RefreshRecord),
    /// A device authorization.
    Device(DeviceRecord),
    /// How an exchanged token came to be.
    Lineage(TokenLineage),
    /// An issuance log entry.
    Issuance(IssuanceRecord),
    /// A revoked access token.
    RevokedToken {
        /// Its id.
        jti: String,
        /// When it expires (the entry may go after).
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// A revoked grant.
    RevokedGrant {
        /// Its id.
        grant_id: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        revoked_at: OffsetDateTime,
    },
    /// A used single-use id (base64 of its bytes: it may hold any).
    UsedOnce {
        /// base64 of the id.
        id: String,
        /// Until when it is kept.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// An issuance quota's count in its window.
    Quota {
        /// The quota.
        key: String,
        /// Used so far.
        used: u64,
        /// The window's end.
        #[serde(with = "time::serde::rfc3339")]
        window_end: OffsetDateTime,
    },
    /// An audit record exactly as stored (see `audit_chain`).
    Audit {
        /// Its sequence number.
        seq: u64,
        /// base64 of the stored bytes.
        stored: String,
    },
    /// The signing keys replicas share (PostgreSQL), sealed.
    SigningKeys {
        /// Their generation.
        generation: u64,
        /// base64 of the sealed set.
        sealed: String,
    },
    /// The last line: how many records came between header and trailer.
    Trailer {
        /// The count.
        records: u64,
    },
}

impl ExportRecord {
    /// An audit record from its stored bytes.
    pub fn audit(seq: u64, stored: &[u8]) -> Self {
        Self::Audit {
            seq,
            stored: STANDARD.encode(stored),
        }
    }

    /// A used single-use id.
    pub fn used_once(id: &[u8], expires_at: OffsetDateTime) -> Self {
        Self::UsedOnce {
            id: STANDARD.encode(id),
            expires_at,
        }
    }

    /// The stored bytes of an audit record, or a used id.
    pub fn bytes(text: &str) -> Result<Vec<u8>, StoreError> {
        STANDARD.decode(text).map_err(|e| StoreError::Decode {
            key: "export".into(),
            detail: format!("not base64: {e}"),
        })
    }
}

/// Receives exported records one at a time.
pub trait ExportSink: Send {
    /// Takes one record.
    fn put(&mut self, record: ExportRecord) -> Result<(), StoreError>;
}

/// What an export or import moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Records between header and trailer.
    pub records: u64,
    /// Of which audit records.
    pub audit: u64,
    /// Of which issuance records.
    pub issuance: u64,
}

struct JsonLines<W: Write + Send> {
    out: W,
    moved: Moved,
}

impl<W: Write + Send> ExportSink for JsonLines<W> {
    fn put(&mut self, record: ExportRecord) -> Result<(), StoreError> {
        match &record {
            ExportRecord::Audit { .. } => self.moved.audit += 1,
            ExportRecord::Issuance(_) => self.moved.issuance += 1,
            _ => {}
        }
        self.moved.records += 1;
        write_line(&mut self.out, &record)
    }
}

fn write_line(out: &mut impl Write, record: &ExportRecord) -> Result<(), StoreError> {
    let mut line = serde_json::to_vec(record)
        .map_err(|e| StoreError::Io(format!("cannot encode an export record: {e}")))?;
    line.push(b'\n');
    out.write_all(&line)
        .map_err(|e| StoreError::Io(format!("cannot write the export: {e}")))
}

/// Writes `store` to `out` as JSON lines: header, records, trailer.
pub async fn export(
    store: &dyn Store,
    out: impl Write + Send,
    now: OffsetDateTime,
) -> Result<Moved, StoreError> {
    let mut sink = JsonLines {
        out,
        moved: Moved::default(),
    };
    write_line(
        &mut sink.out,
        &ExportRecord::Header {
            format: FORMAT.into(),
            version: VERSION,
            backend: store.backend().into(),
            exported_at: now,
        },
    )?;
    store.export_records(&mut sink).await?;
    let records = sink.moved.records;
    write_line(&mut sink.out, &ExportRecord::Trailer { records })?;
    sink.out
        .flush()
        .map_err(|e| StoreError::Io(format!("cannot write the export: {e}")))?;
    Ok(sink.moved)
}

/// Checks an export line by line: header first, records, trailer last
/// with the right count. Returns the count.
fn check(input: impl BufRead) -> Result<u64, StoreError> {
    let mut records = 0u64;
    let mut header = false;
    let mut trailer = None;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| StoreError::Io(format!("cannot read the export: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        if trailer.is_some() {
            return Err(invalid(number, "a record after the trailer".into()));
        }
        match parse(number, &line)? {
            ExportRecord::Header {
                format, version, ..
            } => {
                if header || number != 1 {
                    return Err(invalid(number, "a second header".into()));
                }
                if format != FORMAT || version != VERSION {
                    return Err(invalid(
                        number,
                        format!(
                            "{format} version {version}; this build reads {FORMAT} version {VERSION}"
                        ),
                    ));
                }
                header = true;
            }
            _ if !header => {
                return Err(invalid(number, format!("not a {FORMAT} file (no header)")));
            }
            ExportRecord::Trailer { records: count } => trailer = Some(count),
            _ => records += 1,
        }
    }
    match trailer {
        None => Err(invalid(0, "no trailer: the file is truncated".into())),
        Some(count) if count != records => Err(invalid(
            0,
            format!("the trailer counts {count} records, the file holds {records}"),
        )),
        Some(_) => Ok(records),
    }
}

fn invalid(line: usize, detail: String) -> StoreError {
    StoreError::Decode {
        key: if line == 0 {
            "export".into()
        } else {
            format!("export line {line}")
        },
        detail,
    }
}

fn parse(number: usize, line: &str) -> Result<ExportRecord, StoreError> {
    serde_json::from_str(line).map_err(|e| invalid(number, e.to_string()))
}

/// Writes one record: through the store's own operations where one puts
/// exactly that record (the same constraints and indexes as in service),
/// else through the backend's [`Store::import_record`].
async fn import_one(store: &dyn Store, record: ExportRecord) -> Result<(), StoreError> {
    match record {
        ExportRecord::Client(client) => store.create_client(&client).await,
        ExportRecord::User(user) => store.create_user(&user).await,
        ExportRecord::Session(session) => store.put_session(&session).await,
        ExportRecord::ApprovalGrant {
            approval_id,
            grant_id,
        } => store.add_grant(&approval_id, &grant_id).await,
        ExportRecord::Pending(pending) => store.put_pending(&pending).await,
        ExportRecord::Code(code) => store.put_code(&code).await,
        ExportRecord::Refresh(refresh) => store.put_refresh(&refresh).await,
        ExportRecord::Device(device) => store.put_device(&device).await,
        ExportRecord::RevokedToken { jti, expires_at } => {
            store.revoke_token(&jti, expires_at).await
        }
        ExportRecord::RevokedGrant {
            grant_id,
            revoked_at,
        } => store.revoke_grant(&grant_id, revoked_at).await,
        ExportRecord::UsedOnce { id, expires_at } => {
            let id =
                String::from_utf8(ExportRecord::bytes(&id)?).map_err(|e| StoreError::Decode {
                    key: "used_once".into(),
                    detail: e.to_string(),
                })?;
            store.use_once(&id, expires_at).await.map(|_| ())
        }
        ExportRecord::Header { .. } | ExportRecord::Trailer { .. } => Ok(()),
        other => store.import_record(other).await,
    }
}

/// What a backend's [`Store::import_record`] answers for a record that
/// [`import`] puts through the store's operations instead.
pub fn not_imported_here() -> StoreError {
    StoreError::Io("this record is imported through the store's own operations".into())
}

/// Reads the export at `path` into `store`, which must be empty. The whole
/// file is checked first (header, every line, the trailer's count), so a
/// damaged or truncated file changes nothing; then it is read again and
/// written record by record (never held in memory whole).
pub async fn import(store: &dyn Store, path: &std::path::Path) -> Result<Moved, StoreError> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", path.display())))
    };
    let expected = check(open()?)?;
    if !store.is_empty().await? {
        return Err(StoreError::Conflict(
            "the target store is not empty; import goes into an empty store only".into(),
        ));
    }
    let mut moved = Moved::default();
    for (index, line) in open()?.lines().enumerate() {
        let line = line.map_err(|e| StoreError::Io(format!("cannot read the export: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse(index + 1, &line)?;
        match &record {
            ExportRecord::Header { .. } | ExportRecord::Trailer { .. } => continue,
            ExportRecord::Audit { .. } => moved.audit += 1,
            ExportRecord::Issuance(_) => moved.issuance += 1,
            _ => {}
        }
        moved.records += 1;
        import_one(store, record).await?;
    }
    if moved.records != expected {
        return Err(invalid(0, "the file changed while it was imported".into()));
    }
    store.finish_import().await?;
    Ok(moved)
}
