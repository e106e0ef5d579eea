//! Users, sessions, approvals and in-flight grants on PostgreSQL.
//!
//! The index structures sled needs as separate trees (username → subject,
//! user code → device code, person and client → current approval, parent
//! → exchanged tokens) are columns and constraints here, written in the
//! same statement or transaction as their record.

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::{PgStore, append_audit_in, db, decode, encode, is_unique_violation, lookup_key};
use crate::delegation::Approval;
use crate::oauth::grants::{
    AuthorizationCode, CodeRedemption, DeviceRecord, PendingAuthorization, RefreshRecord,
    TokenLineage,
};
use crate::store::{AccountStore, AuditEvent, GrantStore, StoreError};
use crate::users::session::Session;
use crate::users::{User, fold_username};

/// A table of JSON records under one key column. Table and column names
/// are these constants, never input, so formatting them into SQL is safe.
#[derive(Clone, Copy)]
pub(super) struct Table {
    name: &'static str,
    key: &'static str,
    what: &'static str,
}

pub(super) const CLIENTS: Table = Table {
    name: "clients",
    key: "folded_id",
    what: "client",
};
const USERS: Table = Table {
    name: "users",
    key: "sub",
    what: "user",
};
const USERS_BY_NAME: Table = Table {
    name: "users",
    key: "username_folded",
    what: "user",
};
const SESSIONS: Table = Table {
    name: "sessions",
    key: "id_hash",
    what: "session",
};
const APPROVALS: Table = Table {
    name: "approvals",
    key: "id",
    what: "approval",
};
const PENDING: Table = Table {
    name: "pending_authorizations",
    key: "id",
    what: "authorization request",
};
const CODES: Table = Table {
    name: "authorization_codes",
    key: "hash",
    what: "authorization code",
};
const REFRESH: Table = Table {
    name: "refresh_tokens",
    key: "hash",
    what: "refresh token",
};
const DEVICES: Table = Table {
    name: "device_codes",
    key: "hash",
    what: "device code",
};
const DEVICES_BY_USER_CODE: Table = Table {
    name: "device_codes",
    key: "user_code",
    what: "device code",
};
const LINEAGE: Table = Table {
    name: "token_lineage",
    key: "jti",
    what: "token lineage",
};

/// The stored record of `table` at `key`, decoded.
async fn get<T: DeserializeOwned>(
    pool: &PgPool,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let Table {
        name: table,
        key: key_column,
        what,
    } = table;
    let Some(key) = lookup_key(key) else {
        return Ok(None);
    };
    // `table` and `key_column` are this module's constants, never input.
    let stored: Option<Vec<u8>> = sqlx::query_scalar(&format!(
        "SELECT record FROM {table} WHERE {key_column} = $1"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    stored.map(|bytes| decode(&bytes, what)).transpose()
}

/// Replaces the record of `table` at `key` with `updated` if it still
/// decodes to `expected`: a compare-and-swap on the bytes read, so of two
/// writers on any replicas one wins and the other gets `Conflict`.
pub(super) async fn replace_record<T: Serialize + DeserializeOwned + PartialEq>(
    pool: &PgPool,
    table: Table,
    key: &str,
    expected: &T,
    updated: &T,
    expires_at: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    let Table {
        name: table,
        key: key_column,
        what,
    } = table;
    let conflict = || StoreError::Conflict(what.to_owned());
    let key = lookup_key(key).ok_or_else(conflict)?;
    let current: Option<Vec<u8>> = sqlx::query_scalar(&format!(
        "SELECT record FROM {table} WHERE {key_column} = $1"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    let current = current.ok_or_else(conflict)?;
    let stored: T = decode(&current, what)?;
    if stored != *expected {
        return Err(conflict());
    }
    // A record that expires keeps its expiry column in step, for purging.
    let set_expiry = if expires_at.is_some() {
        ", expires_at = $4"
    } else {
        ""
    };
    let statement = format!(
        "UPDATE {table} SET record = $3{set_expiry} WHERE {key_column} = $1 AND record = $2"
    );
    let swapped = sqlx::query(&statement)
        .bind(key)
        .bind(&current)
        .bind(encode(updated, what)?);
    let swapped = match expires_at {
        Some(at) => swapped.bind(at),
        None => swapped,
    }
    .execute(pool)
    .await
    .map_err(db)?
    .rows_affected();
    if swapped == 1 {
        Ok(())
    } else {
        Err(conflict())
    }
}

/// Deletes the record of `table` at `key`, if any.
async fn delete(pool: &PgPool, table: Table, key: &str) -> Result<(), StoreError> {
    let Some(key) = lookup_key(key) else {
        return Ok(());
    };
    sqlx::query(&format!(
        "DELETE FROM {} WHERE {} = $1",
        table.name, table.key
    ))
    .bind(key)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// Inserts a record that expires, refusing a key in use (`Conflict`).
async fn insert_expiring<T: Serialize>(
    pool: &PgPool,
    table: Table,
    key: &str,
    expires_at: OffsetDateTime,
    record: &T,
) -> Result<(), StoreError> {
    let Table {
        name: table,
        key: key_column,
        what,
    } = table;
    let inserted = sqlx::query(&format!(
        "INSERT INTO {table} ({key_column}, expires_at, record) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING"
    ))
    .bind(key)
    .bind(expires_at)
    .bind(encode(record, what)?)
    .execute(pool)
    .await
    .map_err(db)?
    .rows_affected();
    if inserted == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(what.to_owned()))
    }
}

async fn strings(pool: &PgPool, statement: &str, key: &str) -> Result<Vec<String>, StoreError> {
    let Some(key) = lookup_key(key) else {
        return Ok(Vec::new());
    };
    sqlx::query_scalar(statement)
        .bind(key)
        .fetch_all(pool)
        .await
        .map_err(db)
}

async fn records<T: DeserializeOwned>(
    pool: &PgPool,
    statement: &str,
    key: &str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let Some(key) = lookup_key(key) else {
        return Ok(Vec::new());
    };
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(statement)
        .bind(key)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(|bytes| decode(bytes, what)).collect()
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let inserted =
            sqlx::query("INSERT INTO users (sub, username_folded, record) VALUES ($1, $2, $3)")
                .bind(&user.sub)
                .bind(fold_username(&user.username))
                .bind(encode(user, "user")?)
                .execute(&self.pool)
                .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && e.constraint() == Some("users_pkey") =>
            {
                Err(StoreError::Conflict(format!("user {}", user.sub)))
            }
            Err(e) if is_unique_violation(&e) => Err(StoreError::UserExists(user.username.clone())),
            Err(e) => Err(db(e)),
        }
    }

    async fn user(&self, sub: &str) -> Result<Option<User>, StoreError> {
        get(&self.pool, USERS, sub).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        get(&self.pool, USERS_BY_NAME, &fold_username(username)).await
    }

    async fn update_user(&self, expected: &User, updated: &User) -> Result<(), StoreError> {
        if expected.sub != updated.sub || expected.username != updated.username {
            return Err(StoreError::Conflict(
                "a user's subject and username never change".into(),
            ));
        }
        replace_record(&self.pool, USERS, &expected.sub, expected, updated, None).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT record FROM users ORDER BY sub")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|bytes| decode(bytes, "user")).collect()
    }

    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, sub, expires_at, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id_hash) DO UPDATE
                 SET sub = excluded.sub, expires_at = excluded.expires_at, record = excluded.record",
        )
        .bind(&session.id_hash)
        .bind(&session.sub)
        .bind(session.expires_at)
        .bind(encode(session, "session")?)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        get(&self.pool, SESSIONS, id_hash).await
    }

    async fn touch_session(
        &self,
        expected: &Session,
        updated: &Session,
    ) -> Result<bool, StoreError> {
        let touched = replace_record(
            &self.pool,
            SESSIONS,
            &expected.id_hash,
            expected,
            updated,
            Some(updated.expires_at),
        )
        .await;
        match touched {
            Ok(()) => Ok(true),
            // Changed or ended meanwhile (on any replica).
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        delete(&self.pool, SESSIONS, id_hash).await
    }

    async fn sessions_of(&self, sub: &str) -> Result<Vec<Session>, StoreError> {
        records(
            &self.pool,
            "SELECT record FROM sessions WHERE sub = $1 ORDER BY id_hash",
            sub,
            "session",
        )
        .await
    }
}

#[async_trait]
impl GrantStore for PgStore {
    async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        get(&self.pool, APPROVALS, id).await
    }

    async fn current_approval(
        &self,
        sub: &str,
        client_id: &str,
    ) -> Result<Option<Approval>, StoreError> {
        let (Some(sub), Some(client_id)) = (lookup_key(sub), lookup_key(client_id)) else {
            return Ok(None);
        };
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT a.record FROM current_approvals c JOIN approvals a ON a.id = c.approval_id
             WHERE c.sub = $1 AND c.client_id = $2",
        )
        .bind(sub)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        stored.map(|bytes| decode(&bytes, "approval")).transpose()
    }

    async fn approvals_of(&self, sub: &str) -> Result<Vec<Approval>, StoreError> {
        records(
            &self.pool,
            "SELECT a.record FROM current_approvals c JOIN approvals a ON a.id = c.approval_id
             WHERE c.sub = $1 ORDER BY c.client_id",
            sub,
            "approval",
        )
        .await
    }

    async fn save_approval(
        &self,
        expected: Option<&Approval>,
        approval: &Approval,
    ) -> Result<(), StoreError> {
        let conflict = || StoreError::Conflict(format!("approval {}", approval.id));
        if let Some(old) = expected.filter(|old| old.id == approval.id) {
            return replace_record(&self.pool, APPROVALS, &approval.id, old, approval, None).await;
        }
        // A new approval: the record and the pointer that makes it current,
        // in one transaction; the pointer moves only from the approval read
        // (or from none), so two concurrent consents cannot both win.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&approval.id)
        .bind(encode(approval, "approval")?)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 0 {
            return Err(conflict());
        }
        let moved = match expected {
            Some(old) => sqlx::query(
                "UPDATE current_approvals SET approval_id = $3
                 WHERE sub = $1 AND client_id = $2 AND approval_id = $4",
            )
            .bind(&approval.sub)
            .bind(&approval.client_id)
            .bind(&approval.id)
            .bind(&old.id),
            None => sqlx::query(
                "INSERT INTO current_approvals (sub, client_id, approval_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&approval.sub)
            .bind(&approval.client_id)
            .bind(&approval.id),
        }
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if moved != 1 {
            return Err(conflict());
        }
        tx.commit().await.map_err(db)
    }

    async fn add_grant(&self, approval_id: &str, grant_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approval_grants (approval_id, grant_id) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
        )
        .bind(approval_id)
        .bind(grant_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn grants_of(&self, approval_id: &str) -> Result<Vec<String>, StoreError> {
        strings(
            &self.pool,
            "SELECT grant_id FROM approval_grants WHERE approval_id = $1 ORDER BY grant_id",
            approval_id,
        )
        .await
    }

    async fn put_pending(&self, pending: &PendingAuthorization) -> Result<(), StoreError> {
        insert_expiring(
            &self.pool,
            PENDING,
            &pending.id,
            pending.expires_at,
            pending,
        )
        .await
    }

    async fn pending(&self, id: &str) -> Result<Option<PendingAuthorization>, StoreError> {
        get(&self.pool, PENDING, id).await
    }

    async fn delete_pending(&self, id: &str) -> Result<(), StoreError> {
        delete(&self.pool, PENDING, id).await
    }

    async fn put_code(&self, code: &AuthorizationCode) -> Result<(), StoreError> {
        insert_expiring(&self.pool, CODES, &code.hash, code.expires_at, code).await
    }

    async fn redeem_code(
        &self,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<CodeRedemption, StoreError> {
        let Some(hash) = lookup_key(hash) else {
            return Ok(CodeRedemption::Unknown);
        };
        // A compare-and-swap on the bytes read: of concurrent redemptions
        // on any replicas exactly one moves the record to redeemed.
        loop {
            let current: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT record FROM authorization_codes WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
            let Some(current) = current else {
                return Ok(CodeRedemption::Unknown);
            };
            let mut code: AuthorizationCode = decode(&current, "authorization code")?;
            if code.redeemed_at.is_some() {
                return Ok(CodeRedemption::Replayed(code));
            }
            code.redeemed_at = Some(at);
            let swapped = sqlx::query(
                "UPDATE authorization_codes SET record = $3 WHERE hash = $1 AND record = $2",
            )
            .bind(hash)
            .bind(&current)
            .bind(encode(&code, "authorization code")?)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
            if swapped == 1 {
                return Ok(CodeRedemption::Fresh(code));
            }
        }
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        insert_expiring(&self.pool, REFRESH, &record.hash, record.expires_at, record).await
    }

    async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        get(&self.pool, REFRESH, hash).await
    }

    async fn replace_refresh(
        &self,
        expected: &RefreshRecord,
        updated: &RefreshRecord,
    ) -> Result<(), StoreError> {
        replace_record(
            &self.pool,
            REFRESH,
            &expected.hash,
            expected,
            updated,
            Some(updated.expires_at),
        )
        .await
    }

    async fn put_device(&self, record: &DeviceRecord) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO device_codes (hash, user_code, expires_at, record) VALUES ($1, $2, $3, $4)",
        )
        .bind(&record.hash)
        .bind(&record.user_code)
        .bind(record.expires_at)
        .bind(encode(record, "device code")?)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && e.constraint() == Some("device_codes_pkey") =>
            {
                Err(StoreError::Conflict("device code".into()))
            }
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict("user code in use".into()))
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn device(&self, hash: &str) -> Result<Option<DeviceRecord>, StoreError> {
        get(&self.pool, DEVICES, hash).await
    }

    async fn device_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        get(&self.pool, DEVICES_BY_USER_CODE, user_code).await
    }

    async fn replace_device(
        &self,
        expected: &DeviceRecord,
        updated: &DeviceRecord,
    ) -> Result<(), StoreError> {
        replace_record(
            &self.pool,
            DEVICES,
            &expected.hash,
            expected,
            updated,
            Some(updated.expires_at),
        )
        .await
    }

    async fn put_lineage(
        &self,
        lineage: &TokenLineage,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        // The lineage and the exchange's audit record commit together.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO token_lineage (jti, parent_jti, expires_at, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(&lineage.jti)
        .bind(&lineage.parent_jti)
        .bind(lineage.expires_at)
        .bind(encode(lineage, "token lineage")?)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict("token lineage".into()));
        }
        append_audit_in(&mut *tx, audit).await?;
        tx.commit().await.map_err(db)
    }

    async fn lineage(&self, jti: &str) -> Result<Option<TokenLineage>, StoreError> {
        get(&self.pool, LINEAGE, jti).await
    }

    async fn exchanged_from(&self, jti: &str) -> Result<Vec<String>, StoreError> {
        strings(
            &self.pool,
            "SELECT jti FROM token_lineage WHERE parent_jti = $1 ORDER BY jti",
            jti,
        )
        .await
    }
}
