//! The client registry as a service: registration, reading, replacement,
//! status changes and access grants, each checked against who is asking,
//! written to the store and to the audit log. The rules themselves live in
//! [`super::clients`]; this module only sequences them with storage.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::clients::{
    self, AccessGrantError, Client, ClientId, ClientRepresentation, ClientStatus,
    RegistrationContext, RegistrationError, RotateSecretError, StatusChangeError,
};
use super::metadata::SCOPES;
use super::secrets::{ClientSecret, SecretError, SecretPepper};
use crate::store::{AuditEvent, Store, StoreError};

/// ATTACKS REG-03 (the EBRAINS rule that "users need to be in the 'service
/// providers' group"): whether a person holding an access token for the
/// registration API may use it. The person must have an active account,
/// not be a guest, and belong to `group` (`oauth.registration_group`); with
/// no group configured, no person may. Service accounts are not asked:
/// they reach the API only through the `slcs:clients` scope, which an
/// administrator grants them.
pub fn person_may_register(
    person: Option<&crate::users::User>,
    group: &str,
) -> Result<(), RegistryError> {
    let Some(person) = person.filter(|p| !p.disabled) else {
        return Err(RegistryError::Forbidden(
            "the person this token names has no active account here".into(),
        ));
    };
    if group.is_empty() {
        return Err(RegistryError::Forbidden(
            "people do not register clients here; ask an administrator".into(),
        ));
    }
    if person.guest {
        return Err(RegistryError::Forbidden(
            "guest accounts cannot register clients".into(),
        ));
    }
    if !person.groups.contains(group) {
        return Err(RegistryError::Forbidden(format!(
            "registering clients needs membership of the group {group:?}"
        )));
    }
    Ok(())
}

/// Who is calling the registration API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The caller's subject (`admin` for the admin token).
    pub subject: String,
    /// Whether the caller is an slcs administrator.
    pub is_admin: bool,
    /// Peer address, for the audit log.
    pub source: Option<String>,
}

/// A client as the API returns it, with a secret only right after creation
/// or rotation (shown once, ATTACKS REG-11).
#[derive(Debug)]
pub struct ClientView {
    /// The representation (never a secret).
    pub representation: ClientRepresentation,
    /// A new secret in clear, if one was just generated.
    pub new_secret: Option<ClientSecret>,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A rule of the registration was broken.
    #[error(transparent)]
    Invalid(#[from] RegistrationError),
    /// No such client — also the answer for a client the caller may not see,
    /// so that ids of others' clients are not disclosed (ATTACKS REG-01).
    #[error("no client with this id is visible to you")]
    NotFound,
    /// The caller may see the client but not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The id is taken.
    #[error("a client with id {0} exists already")]
    Exists(String),
    /// Changed concurrently.
    #[error("the client was changed concurrently; fetch it again and retry")]
    Conflict,
    /// A status change that is not allowed.
    #[error(transparent)]
    Status(#[from] StatusChangeError),
    /// A group or unit grant refused.
    #[error(transparent)]
    Access(#[from] AccessGrantError),
    /// Rotation on a client without a secret.
    #[error(transparent)]
    Rotate(#[from] RotateSecretError),
    /// Secret generation failed.
    #[error("secret generation failed: {0}")]
    Secret(#[from] SecretError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RegistryError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::ClientExists(id) => Self::Exists(id),
            StoreError::Conflict(_) => Self::Conflict,
            other => Self::Store(other),
        }
    }
}

/// The registry over a store, with the pepper secrets are hashed with.
#[derive(Clone, Copy)]
pub struct Registry<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The client-secret pepper.
    pub pepper: &'a SecretPepper,
    /// Development profile: loopback redirect URIs allowed.
    pub development: bool,
}

impl std::fmt::Debug for Registry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("development", &self.development)
            .finish_non_exhaustive()
    }
}

impl Registry<'_> {
    /// Registers a client (POST).
    pub async fn register(
        &self,
        caller: &Caller,
        representation: &ClientRepresentation,
        now: OffsetDateTime,
    ) -> Result<ClientView, RegistryError> {
        let allowed = allowed_scopes();
        let ctx = context(caller, self.development, now, None, &allowed);
        let validated = clients::validate_registration(representation, &ctx)?;
        let change = clients::create_client(validated, &ctx, self.pepper)?;
        self.store.create_client(&change.client).await?;
        audit(
            self.store,
            caller,
            "client.create",
            &change.client,
            now,
            None,
        )
        .await?;
        Ok(ClientView {
            representation: clients::to_representation(&change.client),
            new_secret: change.new_secret,
        })
    }

    /// Reads a client (GET).
    pub async fn show(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ClientRepresentation, RegistryError> {
        let client = visible(self.store, caller, id).await?;
        Ok(clients::to_representation(&client))
    }

    /// Every client the caller may see.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<Client>, RegistryError> {
        Ok(self
            .store
            .list_clients()
            .await?
            .into_iter()
            .filter(|c| clients::may_manage(c, &caller.subject, caller.is_admin))
            .collect())
    }

    /// Replaces a client (PUT), optionally rotating its secret.
    pub async fn replace(
        &self,
        caller: &Caller,
        id: &str,
        representation: &ClientRepresentation,
        rotate_secret: bool,
        now: OffsetDateTime,
    ) -> Result<ClientView, RegistryError> {
        let existing = visible(self.store, caller, id).await?;
        let allowed = allowed_scopes();
        let ctx = context(caller, self.development, now, Some(&existing), &allowed);
        let validated = clients::validate_registration(representation, &ctx)?;
        let mut change =
            clients::apply_update(&existing, validated, &ctx, self.pepper, rotate_secret)?;
        // Asked to rotate a secret the client does not have: say so rather
        // than answer success without a secret.
        if rotate_secret && change.new_secret.is_none() {
            return Err(RegistryError::Rotate(RotateSecretError::NoSecretMethod {
                id: existing.id.clone(),
                method: change.client.token_endpoint_auth_method,
            }));
        }
        // A change that widens what a non-admin's client may do goes back to
        // review (pending), as a new registration would.
        if !caller.is_admin && clients::needs_review(&existing, &change.client) {
            clients::change_status(&mut change.client, ClientStatus::Pending, now)?;
        }
        self.store.update_client(&existing, &change.client).await?;
        let detail = change.new_secret.as_ref().map(|_| "secret rotated");
        audit(
            self.store,
            caller,
            "client.update",
            &change.client,
            now,
            detail,
        )
        .await?;
        Ok(ClientView {
            representation: clients::to_representation(&change.client),
            new_secret: change.new_secret,
        })
    }

    /// Approves or suspends a client: administrators only.
    pub async fn set_status(
        &self,
        caller: &Caller,
        id: &str,
        status: ClientStatus,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<ClientRepresentation, RegistryError> {
        if !caller.is_admin {
            return Err(RegistryError::Forbidden(
                "only an administrator may approve or suspend a client".into(),
            ));
        }
        let existing = visible(self.store, caller, id).await?;
        let mut updated = existing.clone();
        if clients::change_status(&mut updated, status, now)? {
            self.store.update_client(&existing, &updated).await?;
            let action = match status {
                ClientStatus::Active => "client.approve",
                ClientStatus::Suspended => "client.suspend",
                ClientStatus::Pending => "client.review",
            };
            audit(self.store, caller, action, &updated, now, reason).await?;
            if status == ClientStatus::Suspended {
                // Its tokens stop working at once (every check wants an
                // active client); the certificates it had a hand in, as
                // root, actor or presenter, are marked revoked, so relying
                // parties asking the status endpoint see it too. Nothing
                // upstream of it is touched.
                for serial in self
                    .store
                    .certificates_from(crate::store::Origin::Client(updated.id.as_str()))
                    .await?
                {
                    crate::store::revoke_certificate(
                        self.store,
                        &serial,
                        &format!("client {} was suspended", updated.id.as_str()),
                        &caller.subject,
                        caller.source.clone(),
                        now,
                    )
                    .await?;
                }
            }
        }
        Ok(clients::to_representation(&updated))
    }
}

/// What a grant operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessChange {
    /// PUT …/groups/{group}.
    GrantGroup,
    /// DELETE …/groups/{group}.
    RevokeGroup,
    /// PUT …/units/{unit}.
    GrantUnit,
    /// DELETE …/units/{unit}.
    RevokeUnit,
}

impl Registry<'_> {
    /// Grants or revokes a group's or unit's access to a client.
    pub async fn change_access(
        &self,
        caller: &Caller,
        id: &str,
        change: AccessChange,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<ClientRepresentation, RegistryError> {
        let existing = visible(self.store, caller, id).await?;
        let mut updated = existing.clone();
        let changed = match change {
            AccessChange::GrantGroup => clients::grant_group(&mut updated, name, now)?,
            AccessChange::RevokeGroup => clients::revoke_group(&mut updated, name, now)?,
            AccessChange::GrantUnit => clients::grant_unit(&mut updated, name, now)?,
            AccessChange::RevokeUnit => clients::revoke_unit(&mut updated, name, now)?,
        };
        if changed {
            self.store.update_client(&existing, &updated).await?;
            let action = match change {
                AccessChange::GrantGroup => "client.group.grant",
                AccessChange::RevokeGroup => "client.group.revoke",
                AccessChange::GrantUnit => "client.unit.grant",
                AccessChange::RevokeUnit => "client.unit.revoke",
            };
            audit(self.store, caller, action, &updated, now, Some(name)).await?;
        }
        Ok(clients::to_representation(&updated))
    }
}

/// The client, if it exists and the caller may manage it.
async fn visible(store: &dyn Store, caller: &Caller, id: &str) -> Result<Client, RegistryError> {
    let id = ClientId::parse(id).map_err(|_| RegistryError::NotFound)?;
    let client = store.client(&id).await?.ok_or(RegistryError::NotFound)?;
    if !clients::may_manage(&client, &caller.subject, caller.is_admin) {
        return Err(RegistryError::NotFound);
    }
    Ok(client)
}

fn context<'a>(
    caller: &Caller,
    development: bool,
    now: OffsetDateTime,
    existing: Option<&'a Client>,
    allowed_scopes: &'a BTreeSet<String>,
) -> RegistrationContext<'a> {
    RegistrationContext {
        caller: caller.subject.clone(),
        caller_is_admin: caller.is_admin,
        development,
        now,
        existing,
        allowed_scopes,
        // No user accounts exist yet (they arrive with the login issue);
        // then this looks the id up among users' names and subjects.
        client_id_names_a_user: false,
    }
}

fn allowed_scopes() -> BTreeSet<String> {
    SCOPES.iter().map(|s| (*s).to_owned()).collect()
}

async fn audit(
    store: &dyn Store,
    caller: &Caller,
    action: &str,
    client: &Client,
    now: OffsetDateTime,
    note: Option<&str>,
) -> Result<(), StoreError> {
    store
        .append_audit(&AuditEvent {
            at: now,
            actor: caller.subject.clone(),
            action: action.into(),
            target: client.id.as_str().to_owned(),
            source: caller.source.clone(),
            detail: serde_json::json!({
                "status": client.status.name(),
                "kind": client.kind.name(),
                "note": note,
            }),
        })
        .await
        .map(|_| ())
}
