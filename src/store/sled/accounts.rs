//! Users, sessions, approvals and in-flight grants in sled.
//!
//! Each record is JSON under its natural key; every change is a
//! compare-and-swap against the bytes read (no sled transaction, see the
//! parent module), followed by the group-commit flush. Where a record has
//! an index (username → subject, user code → device code, person and
//! client → current approval), the record is written before the index
//! entry that names it, so a crash in between leaves at most an orphan
//! record nobody can reach, never an index entry without its record.

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::{SledStore, io};
use crate::delegation::Approval;
use crate::oauth::grants::{
    AuthorizationCode, CodeRedemption, DeviceRecord, PendingAuthorization, RefreshRecord,
    TokenLineage,
};
use crate::store::{AccountStore, AuditEvent, GrantStore, StoreError};
use crate::users::session::Session;
use crate::users::{User, fold_username};

/// The trees of this module.
pub(super) struct Trees {
    users: sled::Tree,
    users_by_name: sled::Tree,
    sessions: sled::Tree,
    /// `sub \0 session id hash` → nothing.
    sessions_by_user: sled::Tree,
    approvals: sled::Tree,
    current_approvals: sled::Tree,
    approval_grants: sled::Tree,
    pending: sled::Tree,
    codes: sled::Tree,
    refresh: sled::Tree,
    devices: sled::Tree,
    device_user_codes: sled::Tree,
    lineage: sled::Tree,
    /// `parent jti \0 child jti` → nothing.
    lineage_children: sled::Tree,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            users: db.open_tree("users")?,
            users_by_name: db.open_tree("users_by_name")?,
            sessions: db.open_tree("sessions")?,
            sessions_by_user: db.open_tree("sessions_by_user")?,
            approvals: db.open_tree("approvals")?,
            current_approvals: db.open_tree("current_approvals")?,
            approval_grants: db.open_tree("approval_grants")?,
            pending: db.open_tree("pending_authorizations")?,
            codes: db.open_tree("authorization_codes")?,
            refresh: db.open_tree("refresh_tokens")?,
            devices: db.open_tree("device_codes")?,
            device_user_codes: db.open_tree("device_user_codes")?,
            lineage: db.open_tree("token_lineage")?,
            lineage_children: db.open_tree("token_lineage_children")?,
        })
    }

    /// Trees whose JSON records carry an `expires_at` after which they are
    /// worthless: purged once it is older than the maintenance grace.
    pub(super) fn expiring(&self) -> [&sled::Tree; 6] {
        [
            &self.sessions,
            &self.pending,
            &self.codes,
            &self.refresh,
            &self.devices,
            &self.lineage,
        ]
    }

    /// Drops index entries whose record is gone: user codes of purged
    /// device records, child links of purged lineage records, a person's
    /// links to purged sessions.
    pub(super) fn purge_orphans(&self) -> Result<u64, StoreError> {
        let mut purged = purge_pair_index(&self.sessions_by_user, &self.sessions)?
            + purge_pair_index(&self.lineage_children, &self.lineage)?;
        for entry in &self.device_user_codes {
            let (key, hash) = entry.map_err(io)?;
            if !self.devices.contains_key(&hash).map_err(io)?
                && self
                    .device_user_codes
                    .compare_and_swap(&key, Some(&hash), None::<&[u8]>)
                    .map_err(io)?
                    .is_ok()
            {
                purged += 1;
            }
        }
        Ok(purged)
    }
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io(format!("cannot encode {what}: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: what.to_owned(),
        detail: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    what: &str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)
        .map_err(io)?
        .map(|bytes| decode(&bytes, what))
        .transpose()
}

/// Inserts `value` under a key that must not exist; `false` if it did.
fn insert_new<T: Serialize>(
    tree: &sled::Tree,
    key: &[u8],
    value: &T,
    what: &str,
) -> Result<bool, StoreError> {
    Ok(tree
        .compare_and_swap(key, None::<&[u8]>, Some(encode(value, what)?))
        .map_err(io)?
        .is_ok())
}

/// Replaces the record at `key` with `updated` if it still decodes to
/// `expected`; `Conflict` otherwise.
fn replace<T: Serialize + DeserializeOwned + PartialEq>(
    tree: &sled::Tree,
    key: &[u8],
    expected: &T,
    updated: &T,
    what: &str,
) -> Result<(), StoreError> {
    let conflict = || StoreError::Conflict(what.to_owned());
    let current = tree.get(key).map_err(io)?.ok_or_else(conflict)?;
    let stored: T = decode(&current, what)?;
    if stored != *expected {
        return Err(conflict());
    }
    tree.compare_and_swap(key, Some(current), Some(encode(updated, what)?))
        .map_err(io)?
        .map_err(|_| conflict())
}

/// Drops the entries [`pair_key`]`(a, b)` of `index` whose record `b` is
/// gone from `records`; how many.
fn purge_pair_index(index: &sled::Tree, records: &sled::Tree) -> Result<u64, StoreError> {
    let mut purged = 0;
    for entry in index {
        let (key, _) = entry.map_err(io)?;
        let record = key
            .iter()
            .position(|b| *b == 0)
            .and_then(|at| key.get(at + 1..))
            .unwrap_or_default();
        if !records.contains_key(record).map_err(io)?
            && index
                .compare_and_swap(&key, Some(&[][..]), None::<&[u8]>)
                .map_err(io)?
                .is_ok()
        {
            purged += 1;
        }
    }
    Ok(purged)
}

/// The `b`s of every [`pair_key`]`(first, b)` in `tree`.
fn second_halves(tree: &sled::Tree, first: &str) -> Result<Vec<String>, StoreError> {
    let mut prefix = first.as_bytes().to_vec();
    prefix.push(0);
    tree.scan_prefix(&prefix)
        .map(|entry| {
            let (key, _) = entry.map_err(io)?;
            Ok(String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default()).into_owned())
        })
        .collect()
}

fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut key = a.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    key
}

#[async_trait]
impl AccountStore for SledStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let t = &self.accounts;
        let folded = fold_username(&user.username);
        if !insert_new(&t.users, user.sub.as_bytes(), user, "user")? {
            return Err(StoreError::Conflict(format!("user {}", user.sub)));
        }
        if t.users_by_name
            .compare_and_swap(folded.as_bytes(), None::<&[u8]>, Some(user.sub.as_bytes()))
            .map_err(io)?
            .is_err()
        {
            t.users.remove(user.sub.as_bytes()).map_err(io)?;
            return Err(StoreError::UserExists(user.username.clone()));
        }
        self.durable().await
    }

    async fn user(&self, sub: &str) -> Result<Option<User>, StoreError> {
        get(&self.accounts.users, sub.as_bytes(), "user")
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let t = &self.accounts;
        let Some(sub) = t
            .users_by_name
            .get(fold_username(username).as_bytes())
            .map_err(io)?
        else {
            return Ok(None);
        };
        get(&t.users, &sub, "user")
    }

    async fn update_user(&self, expected: &User, updated: &User) -> Result<(), StoreError> {
        if expected.sub != updated.sub || expected.username != updated.username {
            return Err(StoreError::Conflict(
                "a user's subject and username never change".into(),
            ));
        }
        replace(
            &self.accounts.users,
            expected.sub.as_bytes(),
            expected,
            updated,
            "user",
        )?;
        self.durable().await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.accounts
            .users
            .iter()
            .map(|entry| {
                let (_, value) = entry.map_err(io)?;
                decode(&value, "user")
            })
            .collect()
    }

    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        // The record before the index entry that names it.
        let t = &self.accounts;
        t.sessions
            .insert(session.id_hash.as_bytes(), encode(session, "session")?)
            .map_err(io)?;
        t.sessions_by_user
            .insert(pair_key(&session.sub, &session.id_hash), &[][..])
            .map_err(io)?;
        self.durable().await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        get(&self.accounts.sessions, id_hash.as_bytes(), "session")
    }

    async fn touch_session(
        &self,
        expected: &Session,
        updated: &Session,
    ) -> Result<bool, StoreError> {
        match replace(
            &self.accounts.sessions,
            expected.id_hash.as_bytes(),
            expected,
            updated,
            "session",
        ) {
            Ok(()) => {
                self.durable().await?;
                Ok(true)
            }
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let t = &self.accounts;
        if let Some(bytes) = t.sessions.remove(id_hash.as_bytes()).map_err(io)? {
            let session: Session = decode(&bytes, "session")?;
            t.sessions_by_user
                .remove(pair_key(&session.sub, id_hash))
                .map_err(io)?;
        }
        self.durable().await
    }

    async fn sessions_of(&self, sub: &str) -> Result<Vec<Session>, StoreError> {
        let t = &self.accounts;
        let mut out = Vec::new();
        for id_hash in second_halves(&t.sessions_by_user, sub)? {
            if let Some(session) = get(&t.sessions, id_hash.as_bytes(), "session")? {
                out.push(session);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl GrantStore for SledStore {
    async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        get(&self.accounts.approvals, id.as_bytes(), "approval")
    }

    async fn current_approval(
        &self,
        sub: &str,
        client_id: &str,
    ) -> Result<Option<Approval>, StoreError> {
        let t = &self.accounts;
        let Some(id) = t
            .current_approvals
            .get(pair_key(sub, client_id))
            .map_err(io)?
        else {
            return Ok(None);
        };
        get(&t.approvals, &id, "approval")
    }

    async fn approvals_of(&self, sub: &str) -> Result<Vec<Approval>, StoreError> {
        let t = &self.accounts;
        let mut prefix = sub.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in t.current_approvals.scan_prefix(&prefix) {
            let (_, id) = entry.map_err(io)?;
            if let Some(approval) = get(&t.approvals, &id, "approval")? {
                out.push(approval);
            }
        }
        Ok(out)
    }

    async fn save_approval(
        &self,
        expected: Option<&Approval>,
        approval: &Approval,
    ) -> Result<(), StoreError> {
        let t = &self.accounts;
        let conflict = || StoreError::Conflict(format!("approval {}", approval.id));
        match expected {
            Some(old) if old.id == approval.id => {
                replace(
                    &t.approvals,
                    approval.id.as_bytes(),
                    old,
                    approval,
                    "approval",
                )?;
            }
            _ => {
                // A new approval: the record first, then the index entry
                // that makes it current, swapped from the one read.
                if !insert_new(&t.approvals, approval.id.as_bytes(), approval, "approval")? {
                    return Err(conflict());
                }
                let previous = expected.map(|old| old.id.as_bytes());
                if t.current_approvals
                    .compare_and_swap(
                        pair_key(&approval.sub, &approval.client_id),
                        previous,
                        Some(approval.id.as_bytes()),
                    )
                    .map_err(io)?
                    .is_err()
                {
                    t.approvals.remove(approval.id.as_bytes()).map_err(io)?;
                    return Err(conflict());
                }
            }
        }
        self.durable().await
    }

    async fn add_grant(&self, approval_id: &str, grant_id: &str) -> Result<(), StoreError> {
        self.accounts
            .approval_grants
            .insert(pair_key(approval_id, grant_id), &[])
            .map_err(io)?;
        self.durable().await
    }

    async fn grants_of(&self, approval_id: &str) -> Result<Vec<String>, StoreError> {
        second_halves(&self.accounts.approval_grants, approval_id)
    }

    async fn put_pending(&self, pending: &PendingAuthorization) -> Result<(), StoreError> {
        if !insert_new(
            &self.accounts.pending,
            pending.id.as_bytes(),
            pending,
            "authorization request",
        )? {
            return Err(StoreError::Conflict("authorization request".into()));
        }
        self.durable().await
    }

    async fn pending(&self, id: &str) -> Result<Option<PendingAuthorization>, StoreError> {
        get(
            &self.accounts.pending,
            id.as_bytes(),
            "authorization request",
        )
    }

    async fn delete_pending(&self, id: &str) -> Result<(), StoreError> {
        self.accounts.pending.remove(id.as_bytes()).map_err(io)?;
        self.durable().await
    }

    async fn put_code(&self, code: &AuthorizationCode) -> Result<(), StoreError> {
        if !insert_new(
            &self.accounts.codes,
            code.hash.as_bytes(),
            code,
            "authorization code",
        )? {
            return Err(StoreError::Conflict("authorization code".into()));
        }
        self.durable().await
    }

    async fn redeem_code(
        &self,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<CodeRedemption, StoreError> {
        let tree = &self.accounts.codes;
        loop {
            let Some(current) = tree.get(hash.as_bytes()).map_err(io)? else {
                return Ok(CodeRedemption::Unknown);
            };
            let mut code: AuthorizationCode = decode(&current, "authorization code")?;
            if code.redeemed_at.is_some() {
                return Ok(CodeRedemption::Replayed(code));
            }
            code.redeemed_at = Some(at);
            let updated = encode(&code, "authorization code")?;
            if tree
                .compare_and_swap(hash.as_bytes(), Some(current), Some(updated))
                .map_err(io)?
                .is_ok()
            {
                self.durable().await?;
                return Ok(CodeRedemption::Fresh(code));
            }
        }
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        if !insert_new(
            &self.accounts.refresh,
            record.hash.as_bytes(),
            record,
            "refresh token",
        )? {
            return Err(StoreError::Conflict("refresh token".into()));
        }
        self.durable().await
    }

    async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        get(&self.accounts.refresh, hash.as_bytes(), "refresh token")
    }

    async fn replace_refresh(
        &self,
        expected: &RefreshRecord,
        updated: &RefreshRecord,
    ) -> Result<(), StoreError> {
        replace(
            &self.accounts.refresh,
            expected.hash.as_bytes(),
            expected,
            updated,
            "refresh token",
        )?;
        self.durable().await
    }

    async fn put_device(&self, record: &DeviceRecord) -> Result<(), StoreError> {
        let t = &self.accounts;
        if !insert_new(&t.devices, record.hash.as_bytes(), record, "device code")? {
            return Err(StoreError::Conflict("device code".into()));
        }
        if t.device_user_codes
            .compare_and_swap(
                record.user_code.as_bytes(),
                None::<&[u8]>,
                Some(record.hash.as_bytes()),
            )
            .map_err(io)?
            .is_err()
        {
            t.devices.remove(record.hash.as_bytes()).map_err(io)?;
            return Err(StoreError::Conflict("user code in use".into()));
        }
        self.durable().await
    }

    async fn device(&self, hash: &str) -> Result<Option<DeviceRecord>, StoreError> {
        get(&self.accounts.devices, hash.as_bytes(), "device code")
    }

    async fn device_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let t = &self.accounts;
        let Some(hash) = t.device_user_codes.get(user_code.as_bytes()).map_err(io)? else {
            return Ok(None);
        };
        get(&t.devices, &hash, "device code")
    }

    async fn replace_device(
        &self,
        expected: &DeviceRecord,
        updated: &DeviceRecord,
    ) -> Result<(), StoreError> {
        replace(
            &self.accounts.devices,
            expected.hash.as_bytes(),
            expected,
            updated,
            "device code",
        )?;
        self.durable().await
    }

    async fn put_lineage(
        &self,
        lineage: &TokenLineage,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let t = &self.accounts;
        if !insert_new(&t.lineage, lineage.jti.as_bytes(), lineage, "token lineage")? {
            return Err(StoreError::Conflict("token lineage".into()));
        }
        t.lineage_children
            .insert(pair_key(&lineage.parent_jti, &lineage.jti), &[])
            .map_err(io)?;
        // The audit event rides on the same flush: sled writes its log in
        // order, so the one wait below makes all three durable.
        self.insert_audit(audit)?;
        self.durable().await
    }

    async fn lineage(&self, jti: &str) -> Result<Option<TokenLineage>, StoreError> {
        get(&self.accounts.lineage, jti.as_bytes(), "token lineage")
    }

    async fn exchanged_from(&self, jti: &str) -> Result<Vec<String>, StoreError> {
        second_halves(&self.accounts.lineage_children, jti)
    }
}

/// Export and import of this module's records (`slcs store export` /
/// `import`).
impl SledStore {
    /// Users, sessions, approvals and in-flight grants, as export records,
    /// in an order an import can replay.
    pub(super) fn export_accounts(
        &self,
        sink: &mut dyn crate::store::export::ExportSink,
    ) -> Result<(), StoreError> {
        use crate::store::export::ExportRecord;
        let t = &self.accounts;
        let each = |tree: &sled::Tree,
                    sink: &mut dyn crate::store::export::ExportSink,
                    make: &dyn Fn(&[u8]) -> Result<ExportRecord, StoreError>|
         -> Result<(), StoreError> {
            for entry in tree {
                let (_, value) = entry.map_err(io)?;
                sink.put(make(&value)?)?;
            }
            Ok(())
        };
        each(&t.users, sink, &|v| {
            Ok(ExportRecord::User(decode(v, "user")?))
        })?;
        each(&t.sessions, sink, &|v| {
            Ok(ExportRecord::Session(decode(v, "session")?))
        })?;
        each(&t.approvals, sink, &|v| {
            Ok(ExportRecord::Approval(decode(v, "approval")?))
        })?;
        for entry in &t.current_approvals {
            let (key, id) = entry.map_err(io)?;
            let (sub, client_id) = split_pair(&key);
            sink.put(ExportRecord::CurrentApproval {
                sub,
                client_id,
                approval_id: String::from_utf8_lossy(&id).into_owned(),
            })?;
        }
        for entry in &t.approval_grants {
            let (key, _) = entry.map_err(io)?;
            let (approval_id, grant_id) = split_pair(&key);
            sink.put(ExportRecord::ApprovalGrant {
                approval_id,
                grant_id,
            })?;
        }
        each(&t.pending, sink, &|v| {
            Ok(ExportRecord::Pending(decode(v, "authorization request")?))
        })?;
        each(&t.codes, sink, &|v| {
            Ok(ExportRecord::Code(decode(v, "authorization code")?))
        })?;
        each(&t.refresh, sink, &|v| {
            Ok(ExportRecord::Refresh(decode(v, "refresh token")?))
        })?;
        each(&t.devices, sink, &|v| {
            Ok(ExportRecord::Device(decode(v, "device code")?))
        })?;
        each(&t.lineage, sink, &|v| {
            Ok(ExportRecord::Lineage(decode(v, "token lineage")?))
        })
    }

    /// Writes an approval, a current-approval pointer or a token lineage
    /// record with its index entry; `false` for any other record.
    pub(super) fn import_account(
        &self,
        record: &crate::store::export::ExportRecord,
    ) -> Result<bool, StoreError> {
        use crate::store::export::ExportRecord;
        let t = &self.accounts;
        let put = |tree: &sled::Tree, key: &[u8], value: Vec<u8>| -> Result<(), StoreError> {
            tree.insert(key, value).map(|_| ()).map_err(io)
        };
        match record {
            ExportRecord::Approval(approval) => {
                put(
                    &t.approvals,
                    approval.id.as_bytes(),
                    encode(approval, "approval")?,
                )?;
            }
            ExportRecord::CurrentApproval {
                sub,
                client_id,
                approval_id,
            } => put(
                &t.current_approvals,
                &pair_key(sub, client_id),
                approval_id.as_bytes().to_vec(),
            )?,
            ExportRecord::Lineage(lineage) => {
                put(
                    &t.lineage,
                    lineage.jti.as_bytes(),
                    encode(lineage, "token lineage")?,
                )?;
                put(
                    &t.lineage_children,
                    &pair_key(&lineage.parent_jti, &lineage.jti),
                    Vec::new(),
                )?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether this module holds no user.
    pub(super) fn no_users(&self) -> bool {
        self.accounts.users.is_empty()
    }
}

/// The two halves of a [`pair_key`].
fn split_pair(key: &[u8]) -> (String, String) {
    let at = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    let (a, b) = key.split_at(at);
    (
        String::from_utf8_lossy(a).into_owned(),
        String::from_utf8_lossy(b.get(1..).unwrap_or_default()).into_owned(),
    )
}

/// Removes records of `tree` whose JSON `expires_at` is before `cutoff`.
pub(super) fn purge_expired_json(
    tree: &sled::Tree,
    cutoff: OffsetDateTime,
) -> Result<u64, StoreError> {
    #[derive(serde::Deserialize)]
    struct Expiring {
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    }
    let mut purged = 0;
    for entry in tree {
        let (key, value) = entry.map_err(io)?;
        let expired = serde_json::from_slice::<Expiring>(&value)
            .map(|e| e.expires_at < cutoff)
            .unwrap_or(false);
        if expired
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

#[cfg(test)]
// What every backend must do is shown by the conformance suite
// (src/store/conformance.rs); here, what only sled's separate index trees
// need: that purging leaves no index entry naming a gone record.
mod tests {
    use time::macros::datetime;

    use super::*;

    fn store(dir: &std::path::Path) -> SledStore {
        super::super::open_for_tests(dir)
    }

    #[tokio::test]
    async fn a_persons_sessions_are_listed_and_forgotten_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let at = datetime!(2026-11-29 12:00 UTC);
        let session = |id: &str, sub: &str| crate::store::conformance::session(id, sub, at);
        for (id, sub) in [("s1", "u-1"), ("s2", "u-1"), ("s3", "u-10")] {
            store.put_session(&session(id, sub)).await.unwrap();
        }
        let ids = |sessions: Vec<Session>| {
            let mut ids: Vec<String> = sessions.into_iter().map(|s| s.id_hash).collect();
            ids.sort();
            ids
        };
        // "u-1" is not a prefix match for "u-10".
        assert_eq!(ids(store.sessions_of("u-1").await.unwrap()), ["s1", "s2"]);
        store.delete_session("s1").await.unwrap();
        assert_eq!(ids(store.sessions_of("u-1").await.unwrap()), ["s2"]);
        assert_eq!(ids(store.sessions_of("u-10").await.unwrap()), ["s3"]);
        // A session purged by maintenance leaves no index entry behind.
        store.accounts.sessions.remove("s2").unwrap();
        assert_eq!(store.accounts.purge_orphans().unwrap(), 1);
        assert!(store.sessions_of("u-1").await.unwrap().is_empty());
        assert!(
            store
                .accounts
                .sessions_by_user
                .scan_prefix(pair_key("u-1", ""))
                .next()
                .is_none()
        );
    }
}
