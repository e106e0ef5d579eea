//! The authorization server: clients, their authentication, signing keys,
//! access tokens, introspection and revocation.
//!
//! [`TokenService`] is what the HTTP edge calls: one method per endpoint,
//! each taking `now`. It owns the signing keys and the client-secret pepper;
//! nothing outside this module sees either.

use std::sync::{Arc, RwLock};

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{Config, DelegationConfig, OAuthConfig};
use crate::store::{AuditEvent, Store, StoreError};
use crate::users::UserSource;

pub mod admin;
pub mod assertion;
pub mod authorize;
pub mod client_auth;
pub mod clients;
pub mod device;
pub mod exchange;
pub mod grants;
pub mod id_token;
pub mod jwt;
pub mod keys;
pub mod metadata;
pub mod registry;
pub mod resource;
pub mod secrets;
pub mod user_grants;

use client_auth::{AuthenticatedClient, ClientAuthError, PresentedCredentials};
use clients::{ClientKind, GrantType};
use jwt::{AccessTokenClaims, Audience, Expectations, SubjectType};
use keys::{KeySet, SigningAlgorithm};
use resource::{BearerError, Resource};
use secrets::SecretPepper;

/// Leeway for clock skew between slcs instances and relying parties.
const CLOCK_LEEWAY_SECS: u64 = 30;

/// The token service behind `/token`, `/introspect`, `/revoke` and `/jwks`.
pub struct TokenService {
    store: Arc<dyn Store>,
    keys: RwLock<KeySet>,
    key_home: KeyHome,
    pepper: SecretPepper,
    config: OAuthConfig,
    delegation: DelegationConfig,
    users: Arc<dyn UserSource>,
}

/// Where the signing keys live.
enum KeyHome {
    /// `<data_dir>/keys/` of a single process (sled).
    Directory(std::path::PathBuf),
    /// The store shared by the replicas, sealed under `kek`; `generation`
    /// is that of the set held in memory.
    Shared {
        kek: keys::KeySealingKey,
        generation: std::sync::atomic::AtomicU64,
    },
}

/// What the key-encryption key of shared signing keys is derived for.
const KEY_SEALING_PURPOSE: &str = "slcs signing-key sealing v1";

/// A signing key as the admin console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    /// Key id.
    pub kid: String,
    /// JWS algorithm.
    pub algorithm: &'static str,
    /// Current, next or retired.
    pub state: keys::KeyState,
    /// Generated.
    pub created_at: OffsetDateTime,
    /// Became current.
    pub activated_at: Option<OffsetDateTime>,
    /// A retired key verifies until then.
    pub verify_until: Option<OffsetDateTime>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// Why the token service could not start.
#[derive(Debug, thiserror::Error)]
pub enum TokenServiceError {
    /// Signing keys unusable.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The pepper file unusable.
    #[error(transparent)]
    Pepper(#[from] secrets::PepperError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token (an RFC 9068 JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until expiry.
    pub expires_in: u64,
    /// The granted scope (RFC 6749 §5.1: always returned here, so clients
    /// never have to guess when it was narrowed).
    pub scope: String,
    /// A refresh token (RFC 6749 §5.1), with `offline_access`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// An OIDC ID token, with `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// RFC 8693 §2.2.1: the type of the issued token (token exchange).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// Why a grant was refused; each maps to its RFC 6749 §5.2 code.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// `unauthorized_client`: the client may not use this grant.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// `invalid_scope`.
    #[error("{0}")]
    InvalidScope(String),
    /// `invalid_target` (RFC 8707 §2): an unknown or unusable resource.
    #[error("{0}")]
    InvalidTarget(String),
    /// `invalid_client`: the grant needs an authenticated client.
    #[error("{0}")]
    InvalidClient(String),
    /// `invalid_grant`: the code, refresh token or device code is not (or
    /// no longer) good, or what it stood for was revoked.
    #[error("{0}")]
    InvalidGrant(String),
    /// `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// RFC 8628 §3.5 `authorization_pending`.
    #[error("the person has not decided yet")]
    AuthorizationPending,
    /// RFC 8628 §3.5 `slow_down`.
    #[error("polling too fast; the interval is now {0} seconds")]
    SlowDown(u64),
    /// RFC 8628 §3.5 `access_denied`.
    #[error("{0}")]
    AccessDenied(String),
    /// RFC 8628 §3.5 `expired_token`.
    #[error("the device code has expired; start again")]
    ExpiredToken,
    /// Token minting failed (`server_error`).
    #[error("token signing failed: {0}")]
    Signing(String),
    /// The store failed (`temporarily_unavailable`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An RFC 7662 §2.2 introspection response.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Introspection {
    /// Whether the token is active for this caller.
    pub active: bool,
    /// The claims, only when active.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<IntrospectedClaims>,
}

// The schema by hand: derived, the flattened `Option` would read "the claims
// or null" where the wire has either `{"active": false}` alone or `active`
// with every claim (RFC 7662 §2.2), which is what this says.
impl utoipa::PartialSchema for Introspection {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Type};
        let active = |value: bool| {
            ObjectBuilder::new()
                .property(
                    "active",
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .enum_values(Some([value])),
                )
                .required("active")
        };
        OneOfBuilder::new()
            .description(Some(
                "RFC 7662 §2.2: `{\"active\": false}` alone, or `active` with the token's claims.",
            ))
            .item(active(false))
            .item(
                AllOfBuilder::new()
                    .item(active(true))
                    .item(Ref::from_schema_name(
                        <IntrospectedClaims as utoipa::ToSchema>::name(),
                    )),
            )
            .into()
    }
}

impl utoipa::ToSchema for Introspection {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema as _;
        schemas.push((
            IntrospectedClaims::name().into(),
            IntrospectedClaims::schema(),
        ));
        IntrospectedClaims::schemas(schemas);
    }
}

/// The members of an active introspection response.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IntrospectedClaims {
    scope: String,
    client_id: String,
    token_type: &'static str,
    exp: i64,
    iat: i64,
    sub: String,
    /// One audience, or several (RFC 7519 §4.1.3).
    #[schema(value_type = Object)]
    aud: Audience,
    iss: String,
    jti: String,
    grant_id: String,
    /// RFC 8693 §4.1: the actor chain of an exchanged token.
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<serde_json::Value>,
    /// Serials of the certificates issued from this token.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    slcs_certificates: Vec<String>,
}

impl TokenService {
    /// Loads (or on first start creates) the signing keys and the pepper,
    /// rotating the signing key if it is due. With a store shared by
    /// replicas the keys are the store's (the first replica to start puts
    /// them there: its data directory's keys if it has any, so tokens
    /// issued before a move to PostgreSQL stay valid, else new ones).
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        users: Arc<dyn UserSource>,
        now: OffsetDateTime,
    ) -> Result<Self, TokenServiceError> {
        let alg: SigningAlgorithm = config
            .oauth
            .signing_alg
            .parse()
            .map_err(keys::KeyError::Config)?;
        let pepper = SecretPepper::load_or_create(&config.pepper_path())?;
        let (keys, key_home) = if store.shares_signing_keys() {
            let kek = keys::KeySealingKey::new(&pepper.derive_key(KEY_SEALING_PURPOSE))?;
            let (keys, generation) =
                load_shared_keys(store.as_ref(), &kek, alg, &config.keys_dir(), now).await?;
            let home = KeyHome::Shared {
                kek,
                generation: std::sync::atomic::AtomicU64::new(generation),
            };
            (keys, home)
        } else {
            let mut keys = KeySet::load_or_create(&config.keys_dir(), alg, now)?;
            if keys.rotation_due(now, config.oauth.key_rotation) {
                keys.rotate(&config.keys_dir(), now, retired_key_validity(&config.oauth))?;
                tracing::info!("signing key rotated");
            }
            (keys, KeyHome::Directory(config.keys_dir()))
        };
        let service = Self {
            store,
            keys: RwLock::new(keys),
            key_home,
            pepper,
            config: config.oauth.clone(),
            delegation: config.delegation,
            users,
        };
        if matches!(service.key_home, KeyHome::Shared { .. }) {
            service.rotate_keys(false, "scheduler", now).await?;
        }
        Ok(service)
    }

    /// Where people come from.
    pub fn users(&self) -> &Arc<dyn UserSource> {
        &self.users
    }

    /// The approval settings.
    pub fn delegation(&self) -> DelegationConfig {
        self.delegation
    }

    fn keys_read(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The issuer configuration.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The pepper clients' secrets are hashed with.
    pub fn pepper(&self) -> &SecretPepper {
        &self.pepper
    }

    /// Authenticates a client at a token-service endpoint (`endpoint` is
    /// its path, e.g. `/token`: a client assertion may name the endpoint
    /// URL or the issuer as its audience, RFC 7523 §3 item 3).
    pub async fn authenticate(
        &self,
        presented: &PresentedCredentials,
        endpoint: &str,
        now: OffsetDateTime,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let audiences = [
            self.config.issuer.clone(),
            format!("{}{endpoint}", self.config.issuer),
        ];
        client_auth::authenticate(
            self.store.as_ref(),
            &self.pepper,
            presented,
            &audiences,
            now,
        )
        .await
    }

    /// The client credentials grant (RFC 6749 §4.4): a service account acts
    /// only as itself; its token's subject is `service:<client_id>`, never a
    /// person (BRIEF §3, ATTACKS RS-04/TX-15).
    pub async fn client_credentials(
        &self,
        client: &AuthenticatedClient,
        requested_scope: Option<&str>,
        requested_resource: Option<&str>,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, GrantError> {
        let registered = &client.client;
        let resource = self.resource(requested_resource)?;
        if registered.kind != ClientKind::Service
            || !registered
                .grant_types
                .contains(&GrantType::ClientCredentials)
        {
            return Err(GrantError::UnauthorizedClient(
                "this client is not registered for the client_credentials grant".into(),
            ));
        }
        let scope = narrow_scope(
            requested_scope,
            &registered.scopes,
            &registered.default_scopes,
            resource,
        )?;
        let lifetime = self.config.access_token_lifetime;
        let iat = now.unix_timestamp();
        let exp = iat + i64::try_from(lifetime.as_secs()).unwrap_or(900);
        let claims = AccessTokenClaims {
            iss: self.config.issuer.clone(),
            sub: format!("service:{}", registered.id.as_str()),
            aud: Audience::one(self.indicator(resource)),
            client_id: registered.id.as_str().to_owned(),
            scope: scope.clone(),
            jti: random_id("at")?,
            iat,
            exp,
            nbf: None,
            grant_id: random_id("cc")?,
            subject_type: SubjectType::Service,
            act: None,
            client_auth: Some(client.method.name().to_owned()),
            grant_type: Some("client_credentials".to_owned()),
            auth_time: None,
            acr: None,
            amr: None,
            approval_id: None,
        };
        let token = {
            let keys = self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            jwt::mint(&keys, &claims).map_err(|e| GrantError::Signing(e.to_string()))?
        };
        self.store
            .append_audit(&AuditEvent {
                at: now,
                actor: format!("client:{}", registered.id.as_str()),
                action: "token.issue".into(),
                target: claims.jti.clone(),
                source,
                detail: serde_json::json!({
                    "grant_type": "client_credentials",
                    "grant_id": claims.grant_id,
                    "scope": scope,
                    "aud": claims.aud,
                    "client_auth": client.method.name(),
                    "exp": exp,
                }),
            })
            .await?;
        metrics::counter!(
            crate::observability::TOKENS_ISSUED,
            "grant_type" => "client_credentials"
        )
        .increment(1);
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: lifetime.as_secs(),
            scope,
            refresh_token: None,
            id_token: None,
            issued_token_type: None,
        })
    }

    /// The resource a request names (RFC 8707), the certificate endpoint
    /// by default; `invalid_target` otherwise.
    pub fn requested_resource(&self, requested: Option<&str>) -> Result<Resource, GrantError> {
        self.resource(requested)
    }

    /// The resource indicator (and token audience) of `resource`.
    pub fn indicator(&self, resource: Resource) -> String {
        resource.indicator(&self.config.issuer, &self.config.certificate_audience)
    }

    /// RFC 8707 §2: the resource a token request names, the certificate
    /// endpoint when it names none; anything else is `invalid_target`.
    fn resource(&self, requested: Option<&str>) -> Result<Resource, GrantError> {
        let Some(requested) = requested else {
            return Ok(Resource::Certificate);
        };
        Resource::ALL
            .into_iter()
            .find(|r| self.indicator(*r) == requested)
            .ok_or_else(|| {
                GrantError::InvalidTarget(format!(
                    "unknown resource; this server issues tokens for {} and {}",
                    self.indicator(Resource::Certificate),
                    self.indicator(Resource::ClientRegistration)
                ))
            })
    }

    /// The resource-server check of a bearer token presented at `resource`
    /// (RFC 6750, RFC 9068 §4), by the authenticated client `presenter` if
    /// the request carried client credentials: see
    /// [`resource::check_bearer`].
    pub async fn authorize_bearer(
        &self,
        token: &str,
        resource: Resource,
        presenter: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<resource::AuthorizedToken, BearerError> {
        let claims = self.verify_any(token, now);
        resource::check_bearer(
            self.store.as_ref(),
            claims,
            &self.indicator(resource),
            resource,
            presenter,
        )
        .await
    }

    /// The checks of [`authorize_bearer`](Self::authorize_bearer) that
    /// depend on the store (revocation, the clients along the chain, the
    /// presenter), again, for a token already verified: what a revocation
    /// can change in the meantime, without verifying the signature twice.
    pub async fn recheck_bearer(
        &self,
        claims: AccessTokenClaims,
        resource: Resource,
        presenter: Option<&str>,
    ) -> Result<resource::AuthorizedToken, BearerError> {
        resource::check_bearer(
            self.store.as_ref(),
            Some(claims),
            &self.indicator(resource),
            resource,
            presenter,
        )
        .await
    }

    /// RFC 7662 introspection for an authenticated `caller`. Anything
    /// unknown, expired, revoked, malformed, or not the caller's business
    /// (neither issued to it nor naming it in `aud`) is the same
    /// `{"active": false}` (§2.2, ATTACKS IR-02/IR-03).
    pub async fn introspect(
        &self,
        caller: &AuthenticatedClient,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Introspection, StoreError> {
        let Some(claims) = self.verify_any(token, now) else {
            return Ok(Introspection::default());
        };
        let caller_id = caller.client.id.as_str();
        let entitled = claims.client_id == caller_id || claims.aud.contains(caller_id);
        if !entitled || self.store.is_revoked(&claims.jti, &claims.grant_id).await? {
            return Ok(Introspection::default());
        }
        // Active only while the client it was issued to and every client
        // along its chain are (ATTACKS CA-06).
        let root_active = match clients::ClientId::parse(&claims.client_id) {
            Ok(id) => self
                .store
                .client(&id)
                .await?
                .is_some_and(|c| c.status == clients::ClientStatus::Active),
            Err(_) => false,
        };
        if !root_active || !resource::actors_active(self.store.as_ref(), &claims).await? {
            return Ok(Introspection::default());
        }
        // A person's token stops being active with their account
        // (disabled or removed), not only at its expiry.
        if claims.subject_type == SubjectType::User
            && self
                .users
                .user(&claims.sub)
                .await?
                .is_none_or(|u| u.disabled)
        {
            return Ok(Introspection::default());
        }
        Ok(Introspection {
            active: true,
            claims: Some(IntrospectedClaims {
                scope: claims.scope,
                client_id: claims.client_id,
                token_type: "Bearer",
                exp: claims.exp,
                iat: claims.iat,
                sub: claims.sub,
                aud: claims.aud,
                iss: claims.iss,
                slcs_certificates: self
                    .store
                    .certificates_from(crate::store::Origin::Token(&claims.jti))
                    .await?
                    .iter()
                    .map(crate::store::Serial::to_hex)
                    .collect(),
                jti: claims.jti,
                grant_id: claims.grant_id,
                act: claims.act,
            }),
        })
    }

    /// RFC 7009 revocation by an authenticated `caller`, of an access
    /// token or a refresh token (§2: both MUST be revocable). A token that
    /// is not one of ours answers success without effect (§2.2: no
    /// oracle); a token of ours issued to another client is refused (§2.1).
    /// Revoking a refresh token revokes its whole grant, the access tokens
    /// and certificates issued from it included (§2.1 "related tokens").
    pub async fn revoke(
        &self,
        caller: &AuthenticatedClient,
        token: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), RevokeError> {
        let Some(claims) = self.verify_any(token, now) else {
            return self.revoke_refresh_token(caller, token, source, now).await;
        };
        if claims.client_id != caller.client.id.as_str() {
            return Err(RevokeError::NotYours);
        }
        let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).unwrap_or(now);
        self.store.revoke_token(&claims.jti, expires_at).await?;
        let actor = format!("client:{}", claims.client_id);
        self.store
            .append_audit(&AuditEvent {
                at: now,
                actor: actor.clone(),
                action: "token.revoke".into(),
                target: claims.jti.clone(),
                source: source.clone(),
                detail: serde_json::json!({ "grant_id": claims.grant_id }),
            })
            .await?;
        // What was derived from the token goes with it: the certificates
        // it obtained, and every token exchanged from it downstream with
        // their certificates; never anything upstream (issue 8 item 7).
        self.revoke_derived(&claims.jti, &actor, source, now)
            .await?;
        Ok(())
    }

    /// Marks the certificates of `jti` revoked, then revokes every token
    /// exchanged from it, recursively, with theirs.
    async fn revoke_derived(
        &self,
        jti: &str,
        actor: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut pending = vec![jti.to_owned()];
        // Chains are bounded (`delegation.max_depth`), fan-out is not: the
        // bound only stops a corrupt store from looping.
        let mut visited = 0usize;
        while let Some(current) = pending.pop() {
            visited += 1;
            if visited > 100_000 {
                break;
            }
            if current != jti {
                let expires_at = self
                    .store
                    .lineage(&current)
                    .await?
                    .map_or(now, |l| l.expires_at);
                self.store.revoke_token(&current, expires_at).await?;
                self.store
                    .append_audit(&AuditEvent {
                        at: now,
                        actor: actor.to_owned(),
                        action: "token.revoke".into(),
                        target: current.clone(),
                        source: source.clone(),
                        detail: serde_json::json!({ "exchanged_from_revoked": jti }),
                    })
                    .await?;
            }
            for serial in self
                .store
                .certificates_from(crate::store::Origin::Token(&current))
                .await?
            {
                crate::store::revoke_certificate(
                    self.store.as_ref(),
                    &serial,
                    if current == jti {
                        "the access token it was issued from was revoked"
                    } else {
                        "a token it was delegated from was revoked"
                    },
                    actor,
                    source.clone(),
                    now,
                )
                .await?;
            }
            pending.extend(self.store.exchanged_from(&current).await?);
        }
        Ok(())
    }

    async fn revoke_refresh_token(
        &self,
        caller: &AuthenticatedClient,
        token: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), RevokeError> {
        let hash = grants::secret_key(&self.pepper, "refresh", token);
        let Some(record) = self.store.refresh_token(&hash).await? else {
            return Ok(());
        };
        if record.grant.client_id != caller.client.id.as_str() {
            return Err(RevokeError::NotYours);
        }
        let actor = format!("client:{}", record.grant.client_id);
        self.revoke_grant(&record.grant.grant_id, &actor, source, now)
            .await?;
        Ok(())
    }

    /// Revokes a whole grant (every token carrying `grant_id`, RFC 7009
    /// §2.1's "related tokens") and the certificates issued from it. Used by
    /// administrators today, by approval revocation later. Returns the
    /// serials of the certificates newly revoked.
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        actor: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Vec<crate::store::Serial>, StoreError> {
        self.store.revoke_grant(grant_id, now).await?;
        self.store
            .append_audit(&AuditEvent {
                at: now,
                actor: actor.to_owned(),
                action: "grant.revoke".into(),
                target: grant_id.to_owned(),
                source: source.clone(),
                detail: serde_json::Value::Null,
            })
            .await?;
        let mut revoked = Vec::new();
        for serial in self
            .store
            .certificates_from(crate::store::Origin::Grant(grant_id))
            .await?
        {
            let outcome = crate::store::revoke_certificate(
                self.store.as_ref(),
                &serial,
                "the grant it was issued from was revoked",
                actor,
                source.clone(),
                now,
            )
            .await?;
            if outcome == crate::store::RevokeOutcome::Revoked {
                revoked.push(serial);
            }
        }
        Ok(revoked)
    }

    /// Rotates the signing keys now (`force`) or if the current key is older
    /// than the rotation period; the next key was published in the JWK set
    /// since the last rotation, so verifiers already have it. Returns
    /// whether a rotation happened.
    pub async fn rotate_keys(
        &self,
        force: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<bool, TokenServiceError> {
        let rotated = match &self.key_home {
            KeyHome::Directory(dir) => {
                let mut keys = self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !force && !keys.rotation_due(now, self.config.key_rotation) {
                    false
                } else {
                    keys.rotate(dir, now, retired_key_validity(&self.config))?;
                    true
                }
            }
            KeyHome::Shared { kek, generation } => {
                self.rotate_shared(kek, generation, force, now).await?
            }
        };
        if rotated {
            let current = self.current_kid();
            tracing::info!(kid = %current, "signing key rotated");
            self.store
                .append_audit(&AuditEvent {
                    at: now,
                    actor: actor.to_owned(),
                    action: "keys.rotate".into(),
                    target: current,
                    source: None,
                    detail: serde_json::Value::Null,
                })
                .await
                .map_err(TokenServiceError::Store)?;
        }
        Ok(rotated)
    }

    /// A rotation of the shared set: read the stored set, rotate it, store
    /// it as the next generation if no other replica did meanwhile (else
    /// read theirs, which is then not due any more), and only then sign
    /// with it. Whatever is read is adopted, so this also refreshes.
    async fn rotate_shared(
        &self,
        kek: &keys::KeySealingKey,
        generation: &std::sync::atomic::AtomicU64,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<bool, TokenServiceError> {
        let alg = self.keys_read().algorithm();
        let keep = shared_retired_key_validity(&self.config);
        for _ in 0..5 {
            let (stored, sealed) = self
                .store
                .shared_signing_keys()
                .await
                .map_err(TokenServiceError::Store)?
                .ok_or_else(|| {
                    TokenServiceError::Store(StoreError::Io(
                        "the shared signing keys are missing from the store".into(),
                    ))
                })?;
            let mut set = KeySet::unseal(&sealed, kek, alg)?;
            if !force && !set.rotation_due(now, self.config.key_rotation) {
                self.adopt_shared(set, generation, stored);
                return Ok(false);
            }
            set.rotate_detached(now, keep)?;
            match self
                .store
                .put_shared_signing_keys(stored + 1, &set.seal(kek)?)
                .await
            {
                Ok(()) => {
                    self.adopt_shared(set, generation, stored + 1);
                    return Ok(true);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(TokenServiceError::Store(e)),
            }
        }
        Err(TokenServiceError::Store(StoreError::Conflict(
            "signing keys: other replicas kept rotating; try again".into(),
        )))
    }

    fn adopt_shared(&self, set: KeySet, generation: &std::sync::atomic::AtomicU64, stored: u64) {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Never go back to an older set read before a newer one was adopted.
        if stored >= generation.load(std::sync::atomic::Ordering::Acquire) {
            *keys = set;
            generation.store(stored, std::sync::atomic::Ordering::Release);
        }
    }

    /// Re-reads the shared signing keys if another replica rotated them
    /// (every `oauth.shared_keys_refresh_secs`: within that time of a
    /// rotation on one replica, every replica signs with the new key and
    /// publishes the same JWK set); a no-op for keys in a directory.
    /// Returns whether the keys changed.
    pub async fn refresh_shared_keys(&self) -> Result<bool, TokenServiceError> {
        let KeyHome::Shared { kek, generation } = &self.key_home else {
            return Ok(false);
        };
        let Some((stored, sealed)) = self
            .store
            .shared_signing_keys()
            .await
            .map_err(TokenServiceError::Store)?
        else {
            return Ok(false);
        };
        if stored <= generation.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(false);
        }
        let alg = self.keys_read().algorithm();
        let set = KeySet::unseal(&sealed, kek, alg)?;
        self.adopt_shared(set, generation, stored);
        tracing::info!(
            generation = stored,
            "shared signing keys changed on another replica; adopted"
        );
        Ok(true)
    }

    /// Every signing key with its state, for the operator: current first,
    /// then next, then retired ones.
    pub fn key_status(&self) -> Vec<KeyStatus> {
        let keys = self.keys_read();
        let mut out: Vec<KeyStatus> = keys
            .keys()
            .map(|key| KeyStatus {
                kid: key.kid().to_owned(),
                algorithm: key.algorithm().name(),
                state: key.state(),
                created_at: key.created_at(),
                activated_at: key.activated_at(),
                verify_until: key.verify_until(),
            })
            .collect();
        out.sort_by_key(|key| match key.state {
            keys::KeyState::Current => 0,
            keys::KeyState::Next => 1,
            keys::KeyState::Retired => 2,
        });
        out
    }

    /// When the current key is due for rotation (the rotation period
    /// after it became current).
    pub fn rotation_due_at(&self) -> Option<OffsetDateTime> {
        let keys = self.keys_read();
        let current = keys.current();
        let since = current
            .activated_at()
            .unwrap_or_else(|| current.created_at());
        time::Duration::try_from(self.config.key_rotation)
            .ok()
            .map(|period| since + period)
    }

    /// The kid of the key that signs now.
    pub fn current_kid(&self) -> String {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .current()
            .kid()
            .to_owned()
    }

    /// The JWK set: current, next and still-valid retired keys.
    pub fn jwks(&self, now: OffsetDateTime) -> serde_json::Value {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .jwks(now)
    }

    /// Verifies signature, issuer, expiry and type, for any audience.
    fn verify_any(&self, token: &str, now: OffsetDateTime) -> Option<AccessTokenClaims> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jwt::verify_for_any_audience(
            &keys,
            token,
            &Expectations {
                issuer: &self.config.issuer,
                audience: "",
                now: now.unix_timestamp(),
                leeway_secs: CLOCK_LEEWAY_SECS,
            },
        )
        .ok()
    }
}

/// Why a revocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// RFC 7009 §2.1: the token was issued to another client.
    #[error("the token was not issued to this client")]
    NotYours,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Retired keys stay in the JWK set as long as a token they signed can live.
fn retired_key_validity(config: &OAuthConfig) -> std::time::Duration {
    config.access_token_lifetime + std::time::Duration::from_secs(CLOCK_LEEWAY_SECS)
}

/// With shared keys, another replica may go on signing with a key retired
/// elsewhere until its next refresh: its last tokens must still verify.
fn shared_retired_key_validity(config: &OAuthConfig) -> std::time::Duration {
    retired_key_validity(config) + config.shared_keys_refresh
}

/// The shared signing keys, created (generation 1) by the first replica:
/// from its data directory's keys if it has them, else new.
async fn load_shared_keys(
    store: &dyn Store,
    kek: &keys::KeySealingKey,
    alg: SigningAlgorithm,
    keys_dir: &std::path::Path,
    now: OffsetDateTime,
) -> Result<(KeySet, u64), TokenServiceError> {
    loop {
        if let Some((generation, sealed)) = store
            .shared_signing_keys()
            .await
            .map_err(TokenServiceError::Store)?
        {
            return Ok((KeySet::unseal(&sealed, kek, alg)?, generation));
        }
        let set = if keys_dir.join(keys::METADATA_FILE).exists() {
            tracing::info!(dir = %keys_dir.display(), "sharing this data directory's signing keys through the store");
            KeySet::load_or_create(keys_dir, alg, now)?
        } else {
            KeySet::generate_detached(alg, now)?
        };
        match store.put_shared_signing_keys(1, &set.seal(kek)?).await {
            Ok(()) => return Ok((set, 1)),
            // Another replica created them first: read theirs.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(TokenServiceError::Store(e)),
        }
    }
}

/// RFC 6749 §3.3: the requested scope, which must be within the
/// registered one (`invalid_scope` otherwise, never silently widened); the
/// client's default scopes when none is requested.
///
/// Scopes belong to resources (RFC 8707 §2): the defaults are those the
/// resource admits, and asking for another resource's scope is
/// `invalid_scope` with the resource to ask instead.
pub(crate) fn narrow_scope(
    requested: Option<&str>,
    registered: &std::collections::BTreeSet<String>,
    defaults: &std::collections::BTreeSet<String>,
    resource: Resource,
) -> Result<String, GrantError> {
    let Some(requested) = requested else {
        let defaults: Vec<&str> = match resource {
            Resource::Certificate => defaults.iter().map(String::as_str).collect(),
            // The registration API has one scope: a client registered for it
            // gets it without asking.
            Resource::ClientRegistration => registered
                .iter()
                .map(String::as_str)
                .filter(|s| *s == resource::CLIENTS_SCOPE)
                .collect(),
        };
        let defaults: Vec<&str> = defaults
            .into_iter()
            .filter(|s| resource.admits_scope(s))
            .collect();
        if defaults.is_empty() {
            return Err(GrantError::InvalidScope(
                "no scope requested and the client has no default scope for this resource".into(),
            ));
        }
        return Ok(defaults.join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !registered.contains(scope) {
            // Repeated bounded: a request's text is never reflected in
            // full (ATTACKS ROB-12).
            return Err(GrantError::InvalidScope(format!(
                "scope {:?} is not registered for this client",
                clients::echo(scope)
            )));
        }
        if !resource.admits_scope(scope) {
            return Err(GrantError::InvalidScope(match resource {
                Resource::Certificate => format!(
                    "scope {scope:?} is for the client registration API; request it with resource=<issuer>{}",
                    resource::CLIENTS_API_PATH
                ),
                Resource::ClientRegistration => format!(
                    "scope {scope:?} is not for the client registration API, whose only scope is {}",
                    resource::CLIENTS_SCOPE
                ),
            }));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    if granted.is_empty() {
        return Err(GrantError::InvalidScope(
            "the requested scope is empty".into(),
        ));
    }
    Ok(granted.join(" "))
}

/// A random identifier: `prefix` + 128 bits, base64url.
pub(crate) fn random_id(prefix: &str) -> Result<String, GrantError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| GrantError::Signing("random generator failed".into()))?;
    Ok(format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}
