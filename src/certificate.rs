//! The SLCS resource server proper (BRIEF §3–§4): an access token and a
//! CSR in, a short-lived end-entity certificate with the delegation chain
//! out; and the revocation and status of what was issued.
//!
//! Order of checks, each refusing before anything is written: the token
//! (signature, issuer, audience or shared-token presenter, expiry,
//! revocation, scope, active client), the identity it may yield, the
//! lifetime asked for, the CSR and the profile (in the engine's
//! [`prepare`](IssuanceEngine::prepare)); then the quotas are taken, and
//! only then does the engine record and sign (Boulder's order).

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::config::CertificateConfig;
use crate::oauth::TokenService;
use crate::oauth::grants::TokenLineage;
use crate::oauth::jwt::SubjectType;
use crate::oauth::resource::{AuthorizedToken, BearerError, Resource};
use crate::pki::dn::CertificateIdentity;
use crate::pki::issuer::{IssuanceEngine, IssuanceRequest, IssueError, IssuedCertificate};
use crate::pki::profile::NotAfterLimit;
use crate::pki::provenance::{DelegationProvenance, DelegationStep};
use crate::store::{IssuanceRecord, QuotaTake, RevokeOutcome, Serial, Store, StoreError};
use crate::users::User;

/// Longest lifetime a request may name. Above it the value is not a
/// short-lived credential at all (the IGTF threshold for short-lived
/// credentials is 10⁶ s), so it is refused as malformed rather than clamped
/// (ATTACKS CERT-04). Between the profile maximum and this, the profile's
/// `lifetime_above_max` rule applies.
pub const MAX_REQUESTABLE_LIFETIME_SECS: u64 = 1_000_000;

/// How long a token's quota window outlasts its `exp`: more than the 30 s
/// of clock leeway token verification allows.
const TOKEN_QUOTA_MARGIN: Duration = Duration::minutes(2);

/// One certificate request, as the HTTP edge read it.
#[derive(Clone, Copy, Debug)]
pub struct CertificateRequest<'a> {
    /// The access token.
    pub token: &'a str,
    /// The client that authenticated in the same request, if any.
    pub presenter: Option<&'a crate::oauth::client_auth::AuthenticatedClient>,
    /// The CSR, PEM or DER.
    pub csr: &'a [u8],
    /// Requested lifetime in seconds.
    pub lifetime_secs: Option<u64>,
}

/// A certificate issued through the endpoint.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate and its record.
    pub certificate: IssuedCertificate,
    /// PEM certificates between it and the root (the root excluded).
    pub chain: Vec<String>,
    /// Seconds from now to notAfter.
    pub lifetime_secs: u64,
    /// When the lifetime granted is shorter than the one requested, why.
    pub shortened: Option<String>,
}

/// Why no certificate was issued. Each maps to one HTTP answer in
/// `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The token was refused (RFC 6750 §3.1).
    #[error(transparent)]
    Bearer(#[from] BearerError),
    /// The token may not yield a certificate of the identity it names
    /// (ATTACKS RS-04): 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A malformed request parameter: 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// The CSR, the key or the profile refused the request: 400.
    #[error(transparent)]
    Refused(IssueError),
    /// A quota is used up: 429 with `Retry-After`.
    #[error("{what}; retry after {retry_after_secs} s")]
    QuotaExceeded {
        /// Which quota, in words.
        what: &'static str,
        /// Seconds until the quota's window ends.
        retry_after_secs: u64,
    },
    /// Signing or recording failed: 500/503.
    #[error(transparent)]
    Failed(IssueError),
    /// The store failed: 503.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IssueError> for CertificateError {
    fn from(error: IssueError) -> Self {
        if error.is_request_error() {
            Self::Refused(error)
        } else {
            Self::Failed(error)
        }
    }
}

/// A certificate's status, as `GET /certificate/status/{serial}` and
/// `slcs cert status` report it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CertificateStatus {
    /// Hex serial.
    pub serial: String,
    /// `good`, `revoked`, `expired` or `unknown`.
    pub status: &'static str,
    /// RFC 4514 subject, when issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// notAfter (RFC 3339), when issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When revoked (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Why revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

/// The certificate endpoint's service.
pub struct CertificateService {
    tokens: Arc<TokenService>,
    engine: Arc<IssuanceEngine>,
    store: Arc<dyn Store>,
    config: CertificateConfig,
}

impl std::fmt::Debug for CertificateService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CertificateService {
    /// Bundles the parts.
    pub fn new(
        tokens: Arc<TokenService>,
        engine: Arc<IssuanceEngine>,
        store: Arc<dyn Store>,
        config: CertificateConfig,
    ) -> Self {
        Self {
            tokens,
            engine,
            store,
            config,
        }
    }

    /// Issues a certificate for `request` at `now`.
    pub async fn issue(
        &self,
        request: &CertificateRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<Issued, CertificateError> {
        // Only a presenter that proved possession of a credential counts: a
        // public client's bare `client_id` proves nothing (BRIEF §3: "client
        // secret or mTLS").
        let presenter = request
            .presenter
            .filter(|p| p.has_credentials())
            .map(|p| p.client.id.as_str());
        let authorized = self
            .tokens
            .authorize_bearer(request.token, Resource::Certificate, presenter, now)
            .await?;
        let (person, approval_ends) = match authorized.claims.subject_type {
            SubjectType::User => {
                let (person, ends) = self.live_person(&authorized, now).await?;
                // A shared token's presenter must admit the person too
                // (ATTACKS REG-09): its own guest, group and unit rules.
                if let Some(presenter) = request.presenter {
                    crate::oauth::user_grants::user_may_use(&presenter.client, &person)
                        .map_err(CertificateError::Forbidden)?;
                }
                (Some(person), ends)
            }
            SubjectType::Service => (None, None),
        };
        let identity = identity(
            &authorized,
            person.as_ref(),
            self.tokens.config().issuer.as_str(),
        )?;
        if let Some(lifetime) = request.lifetime_secs
            && lifetime > MAX_REQUESTABLE_LIFETIME_SECS
        {
            return Err(CertificateError::InvalidRequest(format!(
                "lifetime {lifetime} s is not a short-lived credential; ask for at most {MAX_REQUESTABLE_LIFETIME_SECS} s (the profile grants at most {} s)",
                self.engine.profile().max_lifetime.as_secs()
            )));
        }
        let hops = self.exchange_hops(&authorized.claims).await?;
        let provenance = provenance(&authorized, &hops, request, now);
        // Client policy (BRIEF §4): the strictest of the token's client and,
        // for a shared token, the presenting client.
        let policy = std::iter::once(&authorized.client)
            .chain(request.presenter.map(|p| &p.client))
            .filter_map(|c| c.max_certificate_lifetime_secs)
            .min();
        // A certificate never outlives the person's approval it was
        // issued under (ATTACKS CERT-04).
        let not_after_limits = policy
            .map(|secs| NotAfterLimit {
                at: now + Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)),
                reason: "the client's certificate lifetime policy",
            })
            .into_iter()
            .chain(approval_ends.map(|at| NotAfterLimit {
                at,
                reason: "the end of the person's approval",
            }))
            .collect();
        let issuance = IssuanceRequest {
            identity,
            provenance,
            requested_lifetime_secs: request.lifetime_secs,
            not_after_limits,
        };
        // An RSA key's checks are long CPU work (small primes, ROCA,
        // Fermat rounds): on the blocking pool, so that a burst of them
        // cannot stall the runtime's workers and with them every other
        // request, store commits included. An EC or Ed25519 key's checks
        // take tens of microseconds, less than the hand-off would.
        let prepared = if crate::pki::csr::has_rsa_key(request.csr) {
            let engine = Arc::clone(&self.engine);
            let csr = request.csr.to_vec();
            tokio::task::spawn_blocking(move || engine.prepare(&csr, &issuance, now))
                .await
                .map_err(|e| {
                    CertificateError::Failed(crate::pki::issuer::IssueError::Signing(format!(
                        "the key checks did not finish: {e}"
                    )))
                })??
        } else {
            self.engine.prepare(request.csr, &issuance, now)?
        };
        self.take_quotas(&authorized, now).await?;
        let certificate = self.engine.issue_prepared(prepared, now).await?;
        // ATTACKS ROB-10: the token, its grant and the person's approval
        // are checked again now that the certificate is durably in the log.
        // A revocation that answered before this read is seen here, and
        // the certificate never leaves; one that had not yet written its
        // mark finds the certificate in the log when it cascades. Either
        // way nothing good is released after a revocation's 200 (the
        // cascade skips intents, so the check before issuing is not enough).
        if let Err(error) = self.still_authorized(&authorized, presenter, now).await {
            crate::store::revoke_certificate(
                self.store.as_ref(),
                &certificate.serial,
                "its token, grant or approval stopped being valid while it was being issued",
                "slcs",
                None,
                now,
            )
            .await?;
            return Err(error);
        }
        metrics::counter!(
            crate::observability::CERTIFICATES_ISSUED,
            "key_type" => certificate.key.label()
        )
        .increment(1);
        let chain = if self.engine.ca_certificate().is_root() {
            Vec::new()
        } else {
            vec![self.engine.ca_certificate().pem().to_owned()]
        };
        let lifetime_secs =
            u64::try_from((certificate.not_after - now).whole_seconds()).unwrap_or_default();
        let shortened = request
            .lifetime_secs
            .filter(|asked| *asked > lifetime_secs)
            .map(|asked| {
                let client = policy
                    .map(|secs| format!(", the client's policy {secs} s"))
                    .unwrap_or_default();
                format!(
                    "requested {asked} s, granted {lifetime_secs} s: bounded by the profile maximum of {} s (back-dating included){client} and the CA's expiry",
                    self.engine.profile().max_lifetime.as_secs()
                )
            });
        Ok(Issued {
            certificate,
            chain,
            lifetime_secs,
            shortened,
        })
    }

    /// Takes one unit of the token's and of the subject's quota, atomically
    /// each (no overshoot under concurrency).
    async fn take_quotas(
        &self,
        authorized: &AuthorizedToken,
        now: OffsetDateTime,
    ) -> Result<(), CertificateError> {
        let claims = &authorized.claims;
        // The window outlives the token, including the verifiers' clock
        // leeway after `exp`: a window that ended while the token was still
        // accepted would hand it a fresh quota.
        let token_end = OffsetDateTime::from_unix_timestamp(claims.exp)
            .unwrap_or(now)
            .max(now)
            + TOKEN_QUOTA_MARGIN;
        let taken = self
            .store
            .take_quota(
                &format!("token:{}", claims.jti),
                self.config.quota_per_token,
                token_end,
                now,
            )
            .await?;
        if taken == QuotaTake::Exhausted {
            metrics::counter!(crate::observability::QUOTA_REJECTIONS, "quota" => "per_token")
                .increment(1);
            return Err(CertificateError::QuotaExceeded {
                what: "this access token has obtained all the certificates it may; get a new token",
                retry_after_secs: seconds_until(token_end, now),
            });
        }
        let hour_end = next_hour(now);
        let taken = self
            .store
            .take_quota(
                &format!("subject:{}", claims.sub),
                self.config.quota_per_subject_per_hour,
                hour_end,
                now,
            )
            .await?;
        if taken == QuotaTake::Exhausted {
            metrics::counter!(
                crate::observability::QUOTA_REJECTIONS,
                "quota" => "per_subject_hour"
            )
            .increment(1);
            return Err(CertificateError::QuotaExceeded {
                what: "this subject has obtained all the certificates it may this hour",
                retry_after_secs: seconds_until(hour_end, now),
            });
        }
        Ok(())
    }

    /// Revokes one certificate; `by` is recorded with `reason`.
    pub async fn revoke(
        &self,
        serial: &Serial,
        reason: &str,
        by: &str,
        source: Option<String>,
        now: OffsetDateTime,
    ) -> Result<RevokeOutcome, StoreError> {
        crate::store::revoke_certificate(self.store.as_ref(), serial, reason, by, source, now).await
    }

    /// The status of `serial`.
    pub async fn status(
        &self,
        serial: &Serial,
        now: OffsetDateTime,
    ) -> Result<CertificateStatus, StoreError> {
        let record = self.store.issuance(serial).await?;
        Ok(status_of(serial, record.as_ref(), now))
    }
}

impl CertificateService {
    /// The token-exchange hops behind `claims`, oldest first, from the
    /// lineage the exchanges recorded (bounded by the actor-chain cap).
    async fn exchange_hops(
        &self,
        claims: &crate::oauth::jwt::AccessTokenClaims,
    ) -> Result<Vec<TokenLineage>, CertificateError> {
        let mut hops = Vec::new();
        if claims.act.is_none() {
            return Ok(hops);
        }
        let mut jti = claims.jti.clone();
        while hops.len() < 16 {
            let Some(hop) = self.store.lineage(&jti).await? else {
                break;
            };
            jti = hop.parent_jti.clone();
            hops.push(hop);
        }
        hops.reverse();
        Ok(hops)
    }

    /// The checks of [`issue`](Self::issue) that a revocation can change,
    /// run again.
    async fn still_authorized(
        &self,
        authorized: &AuthorizedToken,
        presenter: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), CertificateError> {
        let authorized = self
            .tokens
            .recheck_bearer(authorized.claims.clone(), Resource::Certificate, presenter)
            .await?;
        if authorized.claims.subject_type == SubjectType::User {
            self.live_person(&authorized, now).await?;
        }
        Ok(())
    }

    /// The person a user token names, if their account is enabled, the
    /// token's client still admits them, and the approval it was issued
    /// under is live (a revoked approval has revoked the grant already;
    /// this also catches an approval that simply expired), with the end of
    /// that approval.
    async fn live_person(
        &self,
        authorized: &AuthorizedToken,
        now: OffsetDateTime,
    ) -> Result<(User, Option<OffsetDateTime>), CertificateError> {
        let claims = &authorized.claims;
        let user =
            self.tokens
                .users()
                .user(&claims.sub)
                .await?
                .ok_or(CertificateError::Forbidden(
                    "the person this token names has no account here",
                ))?;
        crate::oauth::user_grants::user_may_use(&authorized.client, &user)
            .map_err(CertificateError::Forbidden)?;
        let mut approval_ends = None;
        if let Some(approval_id) = &claims.approval_id {
            let approval = self
                .store
                .approval(approval_id)
                .await?
                .filter(|a| a.is_live(now) && a.sub == claims.sub)
                .ok_or(CertificateError::Forbidden(
                    "the person's approval this token was issued under has been revoked or has expired",
                ))?;
            approval_ends = Some(approval.expires_at);
        }
        Ok((user, approval_ends))
    }
}

/// Who the certificate names. A service-account token names its own client
/// and nothing else: its subject must be `service:<client_id>` of the very
/// client it was issued to (ATTACKS RS-04, RFC 9700 §4.15). A person's
/// token names that person, with the display name of their account.
fn identity(
    authorized: &AuthorizedToken,
    person: Option<&User>,
    issuer: &str,
) -> Result<CertificateIdentity, CertificateError> {
    let claims = &authorized.claims;
    match claims.subject_type {
        SubjectType::Service => {
            if claims.sub.strip_prefix("service:") != Some(claims.client_id.as_str()) {
                return Err(CertificateError::Forbidden(
                    "a service-account token yields only the certificate of its own service account",
                ));
            }
            Ok(CertificateIdentity::ServiceAccount {
                client_id: claims.client_id.clone(),
            })
        }
        SubjectType::User => {
            if claims.sub.starts_with("service:") {
                return Err(CertificateError::Forbidden(
                    "a person's token cannot name a service account",
                ));
            }
            Ok(CertificateIdentity::Person {
                issuer: issuer.to_owned(),
                subject: claims.sub.clone(),
                // The DN's hashed suffix alone identifies the person; the
                // display name makes it readable.
                display_name: person.map(|p| p.display_name.clone()).unwrap_or_default(),
            })
        }
    }
}

/// The delegation chain for the certificate: the grant's root step, each
/// token exchange that made a new actor (`hops`, oldest first), then the
/// presentation at this endpoint.
fn provenance(
    authorized: &AuthorizedToken,
    hops: &[TokenLineage],
    request: &CertificateRequest<'_>,
    now: OffsetDateTime,
) -> DelegationProvenance {
    let claims = &authorized.claims;
    // The provenance format carries whole seconds (docs/provenance-asn1.md).
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap_or(now);
    let issued_at = at(claims.iat);
    // The root: the client the person's grant was made to. For an
    // exchanged token it is the innermost actor, and its scope and time
    // are the first exchange's parent's.
    let (root_client, root_scope, root_time) = match hops.first() {
        Some(first) => (
            first.parent_client_id.clone(),
            first.parent_scope.clone(),
            at(first.parent_iat),
        ),
        None => (claims.client_id.clone(), claims.scope.clone(), issued_at),
    };
    let mut steps = vec![DelegationStep {
        client_name: (root_client == claims.client_id).then(|| authorized.client.name.clone()),
        client_id: root_client,
        grant_type: claims
            .grant_type
            .clone()
            .unwrap_or_else(|| "unknown".to_owned()),
        scope: root_scope,
        time: root_time,
        client_auth: claims
            .client_auth
            .clone()
            .unwrap_or_else(|| "unknown".to_owned()),
        approval_id: claims.approval_id.clone(),
    }];
    for hop in hops.iter().filter(|h| h.new_actor) {
        steps.push(DelegationStep {
            client_id: hop.client_id.clone(),
            client_name: (hop.client_id == claims.client_id)
                .then(|| authorized.client.name.clone()),
            grant_type: crate::oauth::clients::GrantType::TokenExchange
                .name()
                .to_owned(),
            scope: hop.scope.clone(),
            time: hop.at.replace_nanosecond(0).unwrap_or(hop.at),
            client_auth: hop.client_auth.clone(),
            approval_id: claims.approval_id.clone(),
        });
    }
    steps.push(DelegationStep {
        client_id: authorized.presenter_id.clone(),
        client_name: if authorized.presenter_id == claims.client_id {
            Some(authorized.client.name.clone())
        } else {
            request.presenter.map(|p| p.client.name.clone())
        },
        grant_type: "certificate".to_owned(),
        scope: claims.scope.clone(),
        time: now,
        client_auth: request
            .presenter
            .map_or_else(|| "bearer".to_owned(), |p| p.method.name().to_owned()),
        approval_id: None,
    });
    DelegationProvenance {
        issuer: claims.iss.clone(),
        subject: claims.sub.clone(),
        auth_time: claims.auth_time.map(at).unwrap_or(issued_at),
        auth_context: claims.acr.clone(),
        grant_id: claims.grant_id.clone(),
        steps,
        token_id: claims.jti.clone(),
    }
}

fn status_of(
    serial: &Serial,
    record: Option<&IssuanceRecord>,
    now: OffsetDateTime,
) -> CertificateStatus {
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let issued = record.filter(|r| r.state == crate::store::IssuanceState::Issued);
    let Some(record) = issued else {
        return CertificateStatus {
            serial: serial.to_hex(),
            status: "unknown",
            subject: None,
            not_after: None,
            revoked_at: None,
            revocation_reason: None,
        };
    };
    let status = match (&record.revocation, record.intent.not_after <= now) {
        (Some(_), _) => "revoked",
        (None, true) => "expired",
        (None, false) => "good",
    };
    CertificateStatus {
        serial: serial.to_hex(),
        status,
        subject: Some(record.intent.subject.clone()),
        not_after: Some(rfc3339(record.intent.not_after)),
        revoked_at: record.revocation.as_ref().map(|r| rfc3339(r.at)),
        revocation_reason: record.revocation.as_ref().map(|r| r.reason.clone()),
    }
}

fn seconds_until(end: OffsetDateTime, now: OffsetDateTime) -> u64 {
    u64::try_from((end - now).whole_seconds())
        .unwrap_or(0)
        .max(1)
}

/// The start of the next clock hour (UTC).
fn next_hour(now: OffsetDateTime) -> OffsetDateTime {
    let seconds = now.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(3600) + 3600)
        .unwrap_or(now + Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn hour_windows_end_on_the_hour() {
        assert_eq!(
            next_hour(datetime!(2026-11-29 10:15:30 UTC)),
            datetime!(2026-11-29 11:00:00 UTC)
        );
        assert_eq!(
            next_hour(datetime!(2026-11-29 10:00:00 UTC)),
            datetime!(2026-11-29 11:00:00 UTC)
        );
        assert_eq!(
            seconds_until(
                datetime!(2026-11-29 11:00:00 UTC),
                datetime!(2026-11-29 10:59:59 UTC)
            ),
            1
        );
    }

    #[test]
    fn status_of_unknown_issued_revoked_and_expired() {
        let serial = Serial::from_bytes(vec![1, 2]).unwrap();
        let now = datetime!(2026-11-29 10:00:00 UTC);
        assert_eq!(status_of(&serial, None, now).status, "unknown");
    }
}
