//! Stored approvals: a person's standing decision that a client may act for
//! them, with which scopes, and which of the client's declared delegatees
//! may receive what (BRIEF §3, "a decision is made once, kept centrally,
//! and can be revoked by the user").
//!
//! This module is the policy only: what an approval covers and what a new
//! request needs beyond it. Storing approvals, and revoking what was issued
//! under one, is sequenced by the token service (`oauth`).

pub mod scope;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Scopes that describe the person to the client (OIDC) and never travel
/// to a delegatee: a delegatee receives the right to act, not the profile.
pub const IDENTITY_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// Whether `scope` may be passed on to a delegatee.
pub fn is_delegable(scope: &str) -> bool {
    !IDENTITY_SCOPES.contains(&scope)
}

/// A person's approval of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Identifier (`ap_…`), recorded in tokens and certificates.
    pub id: String,
    /// The person.
    pub sub: String,
    /// The approved client.
    pub client_id: String,
    /// The scopes the client may receive.
    pub scopes: BTreeSet<String>,
    /// The redirect URIs the person approved sending codes to: a request
    /// to another registered URI asks again (ATTACKS WEB-12).
    #[serde(default)]
    pub redirect_uris: BTreeSet<String>,
    /// Delegatees the person approved, with the scopes each may receive.
    #[serde(default)]
    pub delegatees: BTreeMap<String, BTreeSet<String>>,
    /// Delegatees the person was shown and did not approve: not asked about
    /// again, until a `prompt=consent` request shows every delegatee and
    /// the person ticks it.
    #[serde(default)]
    pub declined_delegatees: BTreeSet<String>,
    /// How many hops of delegation below the client are allowed.
    pub max_depth: u32,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last widened.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// After this the approval no longer covers anything.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Last time a token was issued under it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used: Option<OffsetDateTime>,
    /// Set when revoked; never cleared (a new approval gets a new id).
    #[serde(default)]
    pub revoked: Option<ApprovalRevocation>,
}

/// When and by whom an approval was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRevocation {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who: `user:<sub>` or `admin`.
    pub by: String,
}

/// What a person keeps of an approval when narrowing it on their account
/// page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Scopes the client keeps.
    pub scopes: BTreeSet<String>,
    /// Delegatees kept, with the scopes each keeps; a delegatee left out
    /// (or left with no scope) is removed.
    pub delegatees: BTreeMap<String, BTreeSet<String>>,
}

/// Why an approval could not be narrowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NarrowError {
    /// Narrowing only removes: `0` was never approved.
    #[error("{0} was not approved, so it cannot be kept")]
    Wider(String),
    /// Nothing would be left.
    #[error("nothing would be left: revoke the approval instead")]
    Empty,
}

impl Approval {
    /// Whether it still covers anything at `now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.revoked.is_none() && now < self.expires_at
    }

    /// This approval keeping only `keep`. Narrowing never widens: keeping
    /// something not approved is refused, a delegatee keeps no scope its
    /// client loses (it could only ever receive a subset of what the
    /// client holds), and a removed delegatee counts as declined, so the
    /// consent page does not offer it again unasked.
    pub fn narrowed(&self, keep: &Narrowing, now: OffsetDateTime) -> Result<Self, NarrowError> {
        if let Some(extra) = keep.scopes.iter().find(|s| !self.scopes.contains(*s)) {
            return Err(NarrowError::Wider(format!("scope {extra}")));
        }
        if keep.scopes.is_empty() {
            return Err(NarrowError::Empty);
        }
        let mut delegatees = BTreeMap::new();
        for (id, scopes) in &keep.delegatees {
            let approved = self
                .delegatees
                .get(id)
                .ok_or_else(|| NarrowError::Wider(format!("delegatee {id}")))?;
            if let Some(extra) = scopes.iter().find(|s| !approved.contains(*s)) {
                return Err(NarrowError::Wider(format!("scope {extra} for {id}")));
            }
            let kept: BTreeSet<String> = scopes.intersection(&keep.scopes).cloned().collect();
            if !kept.is_empty() {
                delegatees.insert(id.clone(), kept);
            }
        }
        let mut narrowed = self.clone();
        for removed in self.delegatees.keys() {
            if !delegatees.contains_key(removed) {
                narrowed.declined_delegatees.insert(removed.clone());
            }
        }
        narrowed.scopes.clone_from(&keep.scopes);
        narrowed.delegatees = delegatees;
        narrowed.updated_at = now;
        Ok(narrowed)
    }

    /// This approval lasting `lifetime` from `now` (never shorter than it
    /// already lasts): the person's own renewal, the same span a new
    /// consent would give.
    pub fn extended(&self, lifetime: time::Duration, now: OffsetDateTime) -> Self {
        let mut extended = self.clone();
        extended.expires_at = self.expires_at.max(now + lifetime);
        extended.updated_at = now;
        extended
    }
}

/// A delegatee offered on the consent page, with the scopes it would
/// receive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OfferedDelegatee {
    /// Client id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// Who registered it (a person's subject, or `admin`).
    pub owner: String,
    /// The client that would hand it work (the root client or another
    /// delegatee): its parent in the declared chain.
    pub via: String,
    /// Scopes it would receive: what its parent would receive (for the
    /// root client, the request's delegable scopes) that the delegatee is
    /// registered for.
    pub scopes: BTreeSet<String>,
}

/// What a request needs the person to decide, beyond their live approval.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConsentNeed {
    /// Scopes not yet approved.
    pub new_scopes: BTreeSet<String>,
    /// Scopes already approved (shown as such, not asked again).
    pub approved_scopes: BTreeSet<String>,
    /// Delegatees (or delegatee scopes) not yet approved or declined.
    pub new_delegatees: Vec<OfferedDelegatee>,
    /// The request's redirect URI, if not yet approved.
    pub new_redirect_uri: Option<String>,
}

impl ConsentNeed {
    /// Whether nothing needs deciding.
    pub fn is_empty(&self) -> bool {
        self.new_scopes.is_empty()
            && self.new_delegatees.is_empty()
            && self.new_redirect_uri.is_none()
    }
}

/// The difference between what a request asks (`requested` scopes,
/// `offered` delegatees with the scopes each would receive, and a code
/// sent to `redirect_uri`, if any) and what the person's `existing`
/// approval, if live at `now`, already covers (BRIEF §3: "anything wider
/// asks again for the difference only").
pub fn consent_needed(
    existing: Option<&Approval>,
    requested: &BTreeSet<String>,
    offered: &[OfferedDelegatee],
    redirect_uri: Option<&str>,
    now: OffsetDateTime,
) -> ConsentNeed {
    let live = existing.filter(|a| a.is_live(now));
    let new_redirect_uri = redirect_uri
        .filter(|uri| !live.is_some_and(|a| a.redirect_uris.contains(*uri)))
        .map(str::to_owned);
    let approved: BTreeSet<String> = live.map(|a| a.scopes.clone()).unwrap_or_default();
    let new_scopes: BTreeSet<String> = requested.difference(&approved).cloned().collect();
    let approved_scopes: BTreeSet<String> = requested.intersection(&approved).cloned().collect();
    let new_delegatees = offered
        .iter()
        .filter(|d| !d.scopes.is_empty())
        .filter(|d| match live {
            None => true,
            Some(a) => {
                if a.declined_delegatees.contains(&d.client_id) {
                    return false;
                }
                match a.delegatees.get(&d.client_id) {
                    None => true,
                    Some(granted) => !d.scopes.is_subset(granted),
                }
            }
        })
        .cloned()
        .collect();
    ConsentNeed {
        new_scopes,
        approved_scopes,
        new_delegatees,
        new_redirect_uri,
    }
}

/// The approval after the person approved `need` for `requested` scopes:
/// of the delegatees shown (`need.new_delegatees`), those in `accepted`
/// (client ids) are approved and the others declined, so the page's
/// ticks are the decision, also when they withdraw an earlier approval of
/// a delegatee (`prompt=consent` shows them all). `existing` is widened in
/// place when live; otherwise a new approval with `new_id` replaces it.
/// `updated_at` moves only if something changed.
#[allow(clippy::too_many_arguments)]
pub fn approve(
    existing: Option<&Approval>,
    new_id: String,
    sub: &str,
    client_id: &str,
    requested: &BTreeSet<String>,
    need: &ConsentNeed,
    accepted: &BTreeSet<String>,
    max_depth: u32,
    lifetime: time::Duration,
    now: OffsetDateTime,
) -> Approval {
    let mut approval = match existing.filter(|a| a.is_live(now)) {
        Some(live) => live.clone(),
        None => Approval {
            id: new_id,
            sub: sub.to_owned(),
            client_id: client_id.to_owned(),
            scopes: BTreeSet::new(),
            redirect_uris: BTreeSet::new(),
            delegatees: BTreeMap::new(),
            declined_delegatees: BTreeSet::new(),
            max_depth,
            created_at: now,
            updated_at: now,
            expires_at: now + lifetime,
            last_used: None,
            revoked: None,
        },
    };
    let before = approval.clone();
    approval.scopes.extend(requested.iter().cloned());
    approval
        .redirect_uris
        .extend(need.new_redirect_uri.iter().cloned());
    for offered in &need.new_delegatees {
        if accepted.contains(&offered.client_id) {
            approval.declined_delegatees.remove(&offered.client_id);
            approval
                .delegatees
                .entry(offered.client_id.clone())
                .or_default()
                .extend(offered.scopes.iter().cloned());
        } else {
            approval.delegatees.remove(&offered.client_id);
            approval
                .declined_delegatees
                .insert(offered.client_id.clone());
        }
    }
    if approval != before {
        approval.updated_at = now;
    }
    approval
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// `approve` for person `u` and client `portal`, max depth 2.
    fn decide(
        existing: Option<&Approval>,
        id: &str,
        requested: &BTreeSet<String>,
        need: &ConsentNeed,
        accepted: &BTreeSet<String>,
        days: i64,
        now: OffsetDateTime,
    ) -> Approval {
        approve(
            existing,
            id.into(),
            "u",
            "portal",
            requested,
            need,
            accepted,
            2,
            time::Duration::days(days),
            now,
        )
    }

    fn broker(id: &str, scopes: &[&str]) -> OfferedDelegatee {
        OfferedDelegatee {
            client_id: id.into(),
            name: id.into(),
            owner: "admin".into(),
            via: "portal".into(),
            scopes: set(scopes),
        }
    }

    #[test]
    fn a_covered_request_needs_nothing_and_a_wider_one_only_the_difference() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let requested = set(&["openid", "slcs:certificate"]);
        let offered = [broker("wps", &["slcs:certificate"])];
        let first = consent_needed(None, &requested, &offered, None, now);
        assert_eq!(first.new_scopes, requested);
        assert_eq!(first.new_delegatees.len(), 1);

        let approval = decide(None, "ap-1", &requested, &first, &set(&["wps"]), 90, now);
        assert!(consent_needed(Some(&approval), &requested, &offered, None, now).is_empty());
        // A narrower request is covered too.
        assert!(consent_needed(Some(&approval), &set(&["openid"]), &offered, None, now).is_empty());

        let wider = set(&["openid", "slcs:certificate", "email"]);
        let need = consent_needed(Some(&approval), &wider, &offered, None, now);
        assert_eq!(need.new_scopes, set(&["email"]));
        assert_eq!(need.approved_scopes, set(&["openid", "slcs:certificate"]));
        assert!(need.new_delegatees.is_empty());

        // Widening keeps the id and the delegatees.
        let widened = decide(
            Some(&approval),
            "ap-2",
            &wider,
            &need,
            &BTreeSet::new(),
            90,
            now,
        );
        assert_eq!(widened.id, "ap-1");
        assert_eq!(widened.scopes, wider);
        assert_eq!(widened.delegatees["wps"], set(&["slcs:certificate"]));
    }

    #[test]
    fn narrowing_only_removes_and_a_removed_delegatee_is_not_offered_again() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let requested = set(&["openid", "email", "slcs:certificate"]);
        let offered = [
            broker("wps", &["slcs:certificate", "email"]),
            broker("broker-a", &["slcs:certificate"]),
        ];
        let need = consent_needed(None, &requested, &offered, None, now);
        let approval = decide(
            None,
            "ap-1",
            &requested,
            &need,
            &set(&["wps", "broker-a"]),
            90,
            now,
        );
        let later = now + time::Duration::hours(1);
        let keep = Narrowing {
            scopes: set(&["openid", "slcs:certificate"]),
            delegatees: [("wps".to_owned(), set(&["slcs:certificate", "email"]))].into(),
        };
        let narrowed = approval.narrowed(&keep, later).unwrap();
        assert_eq!(narrowed.id, "ap-1");
        assert_eq!(narrowed.scopes, set(&["openid", "slcs:certificate"]));
        // `email` left with the client, so the delegatee cannot keep it.
        assert_eq!(narrowed.delegatees["wps"], set(&["slcs:certificate"]));
        assert!(!narrowed.delegatees.contains_key("broker-a"));
        assert!(narrowed.declined_delegatees.contains("broker-a"));
        assert_eq!(narrowed.updated_at, later);
        assert_eq!(narrowed.expires_at, approval.expires_at);
        // What a request for the kept scopes offers: broker-a counts as
        // declined, wps is covered.
        let offered_now = [
            broker("wps", &["slcs:certificate"]),
            broker("broker-a", &["slcs:certificate"]),
        ];
        assert!(
            consent_needed(Some(&narrowed), &keep.scopes, &offered_now, None, later).is_empty(),
            "the removed delegatee counts as declined"
        );

        // Nothing is ever added, and nothing left means revoke.
        let wider = Narrowing {
            scopes: set(&["openid", "profile"]),
            ..Narrowing::default()
        };
        assert_eq!(
            approval.narrowed(&wider, later),
            Err(NarrowError::Wider("scope profile".into()))
        );
        let stranger = Narrowing {
            scopes: set(&["openid"]),
            delegatees: [("evil".to_owned(), set(&["openid"]))].into(),
        };
        assert_eq!(
            approval.narrowed(&stranger, later),
            Err(NarrowError::Wider("delegatee evil".into()))
        );
        let more_for_broker = Narrowing {
            scopes: requested.clone(),
            delegatees: [("broker-a".to_owned(), set(&["email"]))].into(),
        };
        assert!(matches!(
            approval.narrowed(&more_for_broker, later),
            Err(NarrowError::Wider(_))
        ));
        assert_eq!(
            approval.narrowed(&Narrowing::default(), later),
            Err(NarrowError::Empty)
        );
    }

    #[test]
    fn extending_renews_the_full_span_and_never_shortens() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let requested = set(&["slcs:certificate"]);
        let need = consent_needed(None, &requested, &[], None, now);
        let approval = decide(None, "ap-1", &requested, &need, &BTreeSet::new(), 90, now);
        let later = now + time::Duration::days(30);
        let extended = approval.extended(time::Duration::days(90), later);
        assert_eq!(extended.expires_at, later + time::Duration::days(90));
        assert_eq!(extended.scopes, approval.scopes);
        let shorter = approval.extended(time::Duration::days(1), later);
        assert_eq!(shorter.expires_at, approval.expires_at);
    }

    #[test]
    fn declined_delegatees_are_not_asked_again_but_new_ones_are() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let requested = set(&["slcs:certificate"]);
        let offered = [broker("wps", &["slcs:certificate"])];
        let need = consent_needed(None, &requested, &offered, None, now);
        let approval = decide(None, "ap-1", &requested, &need, &BTreeSet::new(), 90, now);
        assert!(approval.delegatees.is_empty());
        assert!(approval.declined_delegatees.contains("wps"));
        assert!(consent_needed(Some(&approval), &requested, &offered, None, now).is_empty());
        let more = [
            broker("wps", &["slcs:certificate"]),
            broker("broker-a", &["slcs:certificate"]),
        ];
        let need = consent_needed(Some(&approval), &requested, &more, None, now);
        assert_eq!(need.new_delegatees, vec![more[1].clone()]);
        assert!(need.new_scopes.is_empty());
    }

    #[test]
    fn an_expired_or_revoked_approval_covers_nothing() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let requested = set(&["slcs:certificate"]);
        let need = consent_needed(None, &requested, &[], None, now);
        let mut approval = decide(None, "ap-1", &requested, &need, &BTreeSet::new(), 1, now);
        let later = now + time::Duration::days(2);
        assert_eq!(
            consent_needed(Some(&approval), &requested, &[], None, later).new_scopes,
            requested
        );
        approval.revoked = Some(ApprovalRevocation {
            at: now,
            by: "user:u".into(),
        });
        assert!(!consent_needed(Some(&approval), &requested, &[], None, now).is_empty());
        // Approving again makes a new approval, not a revived one.
        let again = decide(
            Some(&approval),
            "ap-2",
            &requested,
            &need,
            &BTreeSet::new(),
            1,
            now,
        );
        assert_eq!(again.id, "ap-2");
        assert!(again.revoked.is_none());
    }

    #[test]
    fn a_full_consent_page_can_withdraw_or_restore_a_delegatee() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let requested = set(&["slcs:certificate"]);
        let offered = [broker("wps", &["slcs:certificate"])];
        let tick = |existing: Option<&Approval>, accepted: &[&str]| {
            // prompt=consent: the page shows the whole request.
            let shown = consent_needed(None, &requested, &offered, None, now);
            decide(existing, "ap-1", &requested, &shown, &set(accepted), 1, now)
        };
        let declined = tick(None, &[]);
        assert!(declined.declined_delegatees.contains("wps"));
        let restored = tick(Some(&declined), &["wps"]);
        assert!(restored.delegatees.contains_key("wps"));
        assert!(!restored.declined_delegatees.contains("wps"));
        let withdrawn = tick(Some(&restored), &[]);
        assert!(!withdrawn.delegatees.contains_key("wps"));
        // Deciding the same again changes nothing, not even updated_at.
        let later = now + time::Duration::minutes(5);
        let shown = consent_needed(None, &requested, &offered, None, later);
        let same = decide(
            Some(&withdrawn),
            "ap-2",
            &requested,
            &shown,
            &BTreeSet::new(),
            1,
            later,
        );
        assert_eq!(same, withdrawn);
    }

    #[test]
    fn another_redirect_uri_asks_again() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let requested = set(&["slcs:certificate"]);
        let need = consent_needed(None, &requested, &[], Some("https://p/cb"), now);
        assert_eq!(need.new_redirect_uri.as_deref(), Some("https://p/cb"));
        let approval = decide(None, "ap-1", &requested, &need, &BTreeSet::new(), 1, now);
        assert!(
            consent_needed(Some(&approval), &requested, &[], Some("https://p/cb"), now).is_empty()
        );
        let other = consent_needed(
            Some(&approval),
            &requested,
            &[],
            Some("https://p/other"),
            now,
        );
        assert!(other.new_scopes.is_empty());
        assert_eq!(other.new_redirect_uri.as_deref(), Some("https://p/other"));
    }

    #[test]
    fn identity_scopes_are_not_delegable() {
        assert!(!is_delegable("openid"));
        assert!(!is_delegable("offline_access"));
        assert!(is_delegable("slcs:certificate"));
    }
}
