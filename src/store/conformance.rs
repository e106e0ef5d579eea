//! One set of store tests, run against every backend: what the [`Store`]
//! contract promises, shown on sled and on PostgreSQL alike.
//!
//! PostgreSQL is found through `PG_TEST_URL` (a role allowed to create
//! databases; `scripts/pg-throwaway start DIR` makes such a cluster and
//! prints the URL). Each test gets a fresh database. Without the variable
//! the PostgreSQL half is skipped with a note, unless `PG_REQUIRED=1`
//! (set by `.ci/run`), which makes it a failure.
//!
//! Races are run between two handles on one database: for PostgreSQL two
//! separate connection pools, as two replicas would hold; for sled, whose
//! data directory one process owns, the same store twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::postgres::{PgOptions, PgStore};
use super::*;
use crate::oauth::grants::{
    AuthorizationCode, CodeRedemption, DeviceRecord, RefreshRecord, RefreshState, TokenLineage,
    UserGrant,
};
use crate::pki::provenance::{DelegationProvenance, DelegationStep};
use crate::users::session::Session;

/// The environment variable naming the test cluster (not `SLCS_*`: the
/// server refuses unknown variables of its own prefix).
pub(crate) const PG_TEST_URL: &str = "PG_TEST_URL";

/// One backend under test, with a second handle on the same data.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) replica: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh, migrated PostgreSQL database on the test cluster: its URL, or
/// `None` (with a note) when there is no cluster and none is required.
pub(crate) async fn fresh_postgres_database() -> Option<String> {
    let Some(admin_url) = std::env::var(PG_TEST_URL)
        .ok()
        .filter(|url| !url.is_empty())
    else {
        assert!(
            std::env::var("PG_REQUIRED").as_deref() != Ok("1"),
            "PG_REQUIRED=1 but {PG_TEST_URL} is not set (scripts/pg-throwaway start DIR prints it)"
        );
        eprintln!("note: {PG_TEST_URL} not set; the PostgreSQL half of this test is skipped");
        return None;
    };
    let mut tag = [0u8; 8];
    aws_lc_rs::rand::fill(&mut tag).unwrap();
    let name = format!("slcs_test_{}", hex::encode(tag));
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("the test cluster accepts connections");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("the test role may create databases");
    admin.close().await;
    let url = match admin_url.rsplit_once('/') {
        Some((base, tail)) => match tail.split_once('?') {
            Some((_, query)) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        },
        None => panic!("{PG_TEST_URL} has no database part"),
    };
    PgStore::migrate(&pg_options(&url))
        .await
        .expect("migrations apply to a fresh database");
    Some(url)
}

/// Options for a test database.
pub(crate) fn pg_options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_owned(),
        password: None,
        max_connections: 8,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(30),
        ca_key_sha256: Some("aa".repeat(32)),
    }
}

/// sled, and PostgreSQL when there is a test cluster.
pub(crate) async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    // Bound to the same (pretend) CA as the PostgreSQL stores below.
    let sled: Arc<dyn Store> = Arc::new(
        super::sled::SledStore::open(&super::sled::SledOptions {
            path: dir.path().join("store"),
            cache_capacity_bytes: 8 << 20,
            mode: super::sled::OpenMode::CreateIfMissing,
            ca_key_sha256: Some("aa".repeat(32)),
        })
        .unwrap(),
    );
    let mut out = vec![Backend {
        name: "sled",
        replica: Arc::clone(&sled),
        store: sled,
        _dir: Some(dir),
    }];
    if let Some(url) = fresh_postgres_database().await {
        let store: Arc<dyn Store> = Arc::new(PgStore::open(&pg_options(&url)).await.unwrap());
        let replica: Arc<dyn Store> = Arc::new(PgStore::open(&pg_options(&url)).await.unwrap());
        out.push(Backend {
            name: "postgres",
            store,
            replica,
            _dir: None,
        });
    }
    out
}

/// The store of each of a race's contestants: alternately the two handles.
fn contestant(backend: &Backend, i: usize) -> Arc<dyn Store> {
    if i.is_multiple_of(2) {
        Arc::clone(&backend.store)
    } else {
        Arc::clone(&backend.replica)
    }
}

pub(crate) fn intent(serial: &[u8]) -> IssuanceIntent {
    let at = datetime!(2026-11-23 12:00:00 UTC);
    IssuanceIntent {
        serial: Serial::from_bytes(serial.to_vec()).unwrap(),
        subject: "CN=x".into(),
        key_sha256: "bb".repeat(32),
        key_type: "ECDSA P-256".into(),
        not_before: at,
        not_after: at + time::Duration::hours(1),
        provenance: DelegationProvenance {
            issuer: "https://as".into(),
            subject: "u".into(),
            auth_time: at,
            auth_context: None,
            grant_id: "g".into(),
            steps: vec![DelegationStep {
                client_id: "c".into(),
                client_name: None,
                grant_type: "client_credentials".into(),
                scope: "slcs:certificate".into(),
                time: at,
                client_auth: "client_secret_basic".into(),
                approval_id: None,
            }],
            token_id: "t".into(),
        },
        recorded_at: at,
    }
}

fn event(at: OffsetDateTime, actor: &str, action: &str, target: &str) -> AuditEvent {
    AuditEvent {
        at,
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        source: None,
        detail: serde_json::Value::Null,
    }
}

/// An eight-hour password session `id` of `sub`, begun at `at`.
pub(crate) fn session(id: &str, sub: &str, at: OffsetDateTime) -> Session {
    Session {
        id_hash: id.into(),
        sub: sub.into(),
        auth_time: at,
        amr: vec!["pwd".into()],
        created_at: at,
        expires_at: at + time::Duration::hours(8),
        last_seen: None,
        second_factor_at: None,
    }
}

fn grant() -> UserGrant {
    UserGrant {
        grant_id: "ag_1".into(),
        sub: "u-1".into(),
        client_id: "portal".into(),
        scope: "openid".into(),
        resource: "https://as/certificate".into(),
        approval_id: "ap_1".into(),
        auth_time: datetime!(2026-11-29 12:00 UTC),
        amr: vec!["pwd".into()],
        root_grant_type: "authorization_code".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cert_03_of_concurrent_intents_for_one_serial_exactly_one_wins() {
    for backend in backends().await {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = contestant(&backend, i);
                tokio::spawn(async move { store.record_intent(&intent(&[3, 3])).await })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => won += 1,
                Err(StoreError::SerialInUse(_)) => {}
                Err(other) => panic!("{}: {other}", backend.name),
            }
        }
        assert_eq!(won, 1, "{}", backend.name);
        assert_eq!(backend.store.issuance_count().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn an_intent_is_finished_once_and_read_back_whole() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-23 12:00:01 UTC);
        store.record_intent(&intent(&[1, 2])).await.unwrap();
        let serial = Serial::from_bytes(vec![1, 2]).unwrap();
        assert!(
            store.issuance(&serial).await.unwrap().unwrap().state == IssuanceState::Intent,
            "{}",
            backend.name
        );
        store.record_issued(&serial, b"DER", at).await.unwrap();
        assert!(matches!(
            backend.replica.record_issued(&serial, b"DER", at).await,
            Err(StoreError::WrongState { .. })
        ));
        assert!(matches!(
            store.record_abandoned(&serial, "late", at).await,
            Err(StoreError::WrongState { .. })
        ));
        assert!(matches!(
            store.record_intent(&intent(&[1, 2])).await,
            Err(StoreError::SerialInUse(_))
        ));
        let record = backend.replica.issuance(&serial).await.unwrap().unwrap();
        assert_eq!(record.state, IssuanceState::Issued);
        assert_eq!(record.certificate.as_deref(), Some(&b"DER"[..]));
        assert_eq!(record.intent, intent(&[1, 2]));
        assert_eq!(record.finished_at, Some(at));
        let unknown = Serial::from_bytes(vec![9]).unwrap();
        assert!(matches!(
            store.record_abandoned(&unknown, "x", at).await,
            Err(StoreError::UnknownSerial(_))
        ));
        assert!(store.issuance(&unknown).await.unwrap().is_none());
        assert!(store.health().await.ok, "{}", backend.name);
    }
}

#[tokio::test]
async fn certificates_are_found_by_grant_token_and_every_client_of_their_chain() {
    for backend in backends().await {
        let store = &backend.store;
        let mut first = intent(&[5, 1]);
        first.provenance.steps.push(DelegationStep {
            client_id: "broker".into(),
            ..first.provenance.steps[0].clone()
        });
        let mut second = intent(&[5, 2]);
        second.provenance.grant_id = "g2".into();
        second.provenance.token_id = "t2".into();
        store.record_intent(&first).await.unwrap();
        store.record_intent(&second).await.unwrap();
        let hex = |serials: Vec<Serial>| -> Vec<String> {
            let mut out: Vec<String> = serials.iter().map(Serial::to_hex).collect();
            out.sort();
            out
        };
        assert_eq!(
            hex(store.certificates_from(Origin::Grant("g")).await.unwrap()),
            ["0501"]
        );
        assert_eq!(
            hex(store.certificates_from(Origin::Token("t2")).await.unwrap()),
            ["0502"]
        );
        assert_eq!(
            hex(store.certificates_from(Origin::Client("c")).await.unwrap()),
            ["0501", "0502"]
        );
        assert_eq!(
            hex(store
                .certificates_from(Origin::Client("broker"))
                .await
                .unwrap()),
            ["0501"]
        );
        assert!(
            store
                .certificates_from(Origin::Grant("nothing\0here"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn issuance_search_matches_every_field_given_newest_first() {
    for backend in backends().await {
        let store = &backend.store;
        let t0 = datetime!(2026-11-29 12:00:00 UTC);
        for i in 0..6u8 {
            let mut record = intent(&[9, i + 1]);
            record.recorded_at = t0 + time::Duration::hours(i64::from(i));
            record.provenance.subject = if i < 3 { "u-ada" } else { "u-bob" }.into();
            if i % 2 == 1 {
                record.provenance.steps[0].client_id = "broker".into();
            }
            store.record_intent(&record).await.unwrap();
        }
        let serials = |records: Vec<IssuanceRecord>| -> Vec<u8> {
            records
                .iter()
                .map(|r| r.intent.serial.as_bytes()[1] - 1)
                .collect()
        };
        let all = IssuanceQuery::default();
        assert_eq!(
            serials(store.search_issuances(&all, 10).await.unwrap()),
            [5, 4, 3, 2, 1, 0],
            "{}",
            backend.name
        );
        assert_eq!(
            serials(store.search_issuances(&all, 2).await.unwrap()),
            [5, 4]
        );
        let ada_broker = IssuanceQuery {
            subject: Some("u-ada".into()),
            client_id: Some("broker".into()),
            ..IssuanceQuery::default()
        };
        assert_eq!(
            serials(store.search_issuances(&ada_broker, 10).await.unwrap()),
            [1]
        );
        let window = IssuanceQuery {
            from: Some(t0 + time::Duration::hours(2)),
            until: Some(t0 + time::Duration::hours(4)),
            ..IssuanceQuery::default()
        };
        assert_eq!(
            serials(store.search_issuances(&window, 10).await.unwrap()),
            [3, 2]
        );
        let by_serial = IssuanceQuery {
            serial: Some(Serial::from_bytes(vec![9, 5]).unwrap()),
            ..IssuanceQuery::default()
        };
        assert_eq!(
            serials(store.search_issuances(&by_serial, 10).await.unwrap()),
            [4]
        );
        let serial_and_other_subject = IssuanceQuery {
            subject: Some("u-ada".into()),
            ..by_serial
        };
        assert!(
            store
                .search_issuances(&serial_and_other_subject, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_is_revoked_once_with_its_audit_record() {
    for backend in backends().await {
        let at = datetime!(2026-11-29 12:00:00 UTC);
        let serial = intent(&[4, 4]).serial;
        backend.store.record_intent(&intent(&[4, 4])).await.unwrap();
        // An intent is not a certificate: nothing to revoke yet.
        assert_eq!(
            revoke_certificate(&*backend.store, &serial, "early", "admin", None, at)
                .await
                .unwrap(),
            RevokeOutcome::NotIssued
        );
        backend
            .store
            .record_issued(&serial, b"der", at)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = contestant(&backend, i);
                let serial = serial.clone();
                tokio::spawn(async move {
                    revoke_certificate(&*store, &serial, &format!("r{i}"), "admin", None, at).await
                })
            })
            .collect();
        let mut revoked = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                RevokeOutcome::Revoked => revoked += 1,
                RevokeOutcome::AlreadyRevoked => {}
                RevokeOutcome::NotIssued => panic!("{}: it is issued", backend.name),
            }
        }
        assert_eq!(revoked, 1, "{}: the first revocation stands", backend.name);
        let audited = backend.store.audit_events(0, 100).await.unwrap();
        assert_eq!(
            audited
                .iter()
                .filter(|r| r.event.action == "certificate.revoke")
                .count(),
            1,
            "{}: one audit record per revocation",
            backend.name
        );
        let unknown = Serial::from_bytes(vec![7]).unwrap();
        assert_eq!(
            revoke_certificate(&*backend.store, &unknown, "x", "admin", None, at)
                .await
                .unwrap(),
            RevokeOutcome::NotIssued
        );
        assert!(verify_audit(&*backend.store).await.unwrap().is_intact());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_chain_is_one_sequence_whoever_appends() {
    for backend in backends().await {
        let at = datetime!(2026-11-29 12:00:00 UTC);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = contestant(&backend, i);
                tokio::spawn(async move {
                    store
                        .append_audit(&event(at, "admin", "client.create", &format!("c{i}")))
                        .await
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 40, "{}: no sequence number twice", backend.name);
        let report = verify_audit(&*backend.replica).await.unwrap();
        assert!(report.is_intact(), "{}: {report:?}", backend.name);
        assert_eq!(report.verified, 40);
        let all = backend.store.audit_events(0, 100).await.unwrap();
        assert_eq!(all.len(), 40);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        let tail = backend.store.audit_events(all[10].seq, 2).await.unwrap();
        assert_eq!(tail, all[11..13]);
    }
}

#[tokio::test]
async fn each_persons_activity_is_read_newest_first_and_only_theirs() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-29 12:00:00 UTC);
        let with =
            |actor: &str, action: &str, target: &str, detail: serde_json::Value| AuditEvent {
                detail,
                ..event(at, actor, action, target)
            };
        let events = [
            with("user:u-1", "user.login", "user:u-1", serde_json::json!({})),
            with(
                "client:portal",
                "token.issue",
                "at_1",
                serde_json::json!({"sub": "u-1"}),
            ),
            with(
                "client:svc",
                "token.issue",
                "at_2",
                serde_json::json!({"sub": "service:svc"}),
            ),
            with("admin", "user.disable", "user:u-10", serde_json::json!({})),
            with(
                "client:wps",
                "token.exchange",
                "at_3",
                serde_json::json!({"sub": "u-1"}),
            ),
        ];
        for e in &events {
            store.append_audit(e).await.unwrap();
        }
        let actions = |records: Vec<AuditRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.event.action).collect()
        };
        assert_eq!(
            actions(store.audit_of_person("u-1", 10).await.unwrap()),
            ["token.exchange", "token.issue", "user.login"],
            "{}",
            backend.name
        );
        assert_eq!(
            actions(store.audit_of_person("u-1", 2).await.unwrap()),
            ["token.exchange", "token.issue"]
        );
        // "u-1" is not a prefix match for "u-10"; service accounts are no one's.
        assert_eq!(
            actions(store.audit_of_person("u-10", 10).await.unwrap()),
            ["user.disable"]
        );
        assert!(
            store
                .audit_of_person("service:svc", 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .audit_of_person("nobody", 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn audit_search_filters_and_pages_newest_first() {
    for backend in backends().await {
        let store = &backend.store;
        let t0 = datetime!(2026-11-29 12:00:00 UTC);
        for i in 0..10i64 {
            let (actor, action) = if i % 2 == 0 {
                ("admin", "client.approve")
            } else {
                ("user:u-1", "user.login")
            };
            store
                .append_audit(&event(
                    t0 + time::Duration::minutes(i),
                    actor,
                    action,
                    &format!("T-{i}"),
                ))
                .await
                .unwrap();
        }
        let targets = |page: &AuditPage| -> Vec<String> {
            page.records
                .iter()
                .map(|r| r.event.target.clone())
                .collect()
        };
        let approvals = AuditQuery {
            action: Some("APPROVE".into()),
            ..AuditQuery::default()
        };
        let first = store.search_audit(&approvals, None, 2).await.unwrap();
        assert_eq!(targets(&first), ["T-8", "T-6"], "{}", backend.name);
        let second = store
            .search_audit(&approvals, first.next_before, 2)
            .await
            .unwrap();
        assert_eq!(targets(&second), ["T-4", "T-2"]);
        let last = store
            .search_audit(&approvals, second.next_before, 2)
            .await
            .unwrap();
        assert_eq!(targets(&last), ["T-0"]);
        assert_eq!(last.next_before, None, "{}: the log's start", backend.name);
        let window = AuditQuery {
            actor: Some("user:".into()),
            from: Some(t0 + time::Duration::minutes(3)),
            until: Some(t0 + time::Duration::minutes(7)),
            ..AuditQuery::default()
        };
        assert_eq!(
            targets(&store.search_audit(&window, None, 100).await.unwrap()),
            ["T-5", "T-3"]
        );
        let target = AuditQuery {
            target: Some("t-1".into()),
            ..AuditQuery::default()
        };
        assert_eq!(
            targets(&store.search_audit(&target, None, 100).await.unwrap()),
            ["T-1"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ca_05_a_jti_is_used_once_even_concurrently() {
    for backend in backends().await {
        let at = datetime!(2026-11-23 12:05:00 UTC);
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = contestant(&backend, i);
                tokio::spawn(async move { store.use_once("client|jti-1", at).await })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "{}", backend.name);
        assert!(!backend.store.use_once("client|jti-1", at).await.unwrap());
        assert!(backend.store.use_once("client|jti-2", at).await.unwrap());
        // An id may hold any character a client put in its assertion.
        assert!(backend.store.use_once("client|j\0ti", at).await.unwrap());
        assert!(!backend.replica.use_once("client|j\0ti", at).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_never_overshoot_and_reset_with_their_window() {
    for backend in backends().await {
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let end = now + time::Duration::minutes(5);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = contestant(&backend, i);
                tokio::spawn(async move { store.take_quota("k", 10, end, now).await.unwrap() })
            })
            .collect();
        let mut granted = BTreeSet::new();
        for task in tasks {
            if let QuotaTake::Granted(n) = task.await.unwrap() {
                granted.insert(n);
            }
        }
        assert_eq!(granted, (1..=10).collect(), "{}", backend.name);
        // After the window, the count starts again.
        let later = end + time::Duration::seconds(1);
        assert_eq!(
            backend
                .store
                .take_quota("k", 10, later + time::Duration::minutes(5), later)
                .await
                .unwrap(),
            QuotaTake::Granted(1)
        );
        assert_eq!(
            backend.store.take_quota("none", 0, end, now).await.unwrap(),
            QuotaTake::Exhausted
        );
    }
}

#[tokio::test]
async fn revocations_of_tokens_and_grants_are_seen_by_every_handle() {
    for backend in backends().await {
        let at = datetime!(2026-11-23 12:00:00 UTC);
        let (store, replica) = (&backend.store, &backend.replica);
        assert!(!replica.is_revoked("t1", "g1").await.unwrap());
        store.revoke_token("t1", at).await.unwrap();
        assert!(
            replica.is_revoked("t1", "g1").await.unwrap(),
            "{}",
            backend.name
        );
        assert!(!replica.is_revoked("t2", "g1").await.unwrap());
        store.revoke_grant("g1", at).await.unwrap();
        assert!(replica.is_revoked("t2", "g1").await.unwrap());
        assert!(!replica.is_revoked("t3", "g2").await.unwrap());
        assert!(!replica.is_revoked("t\0", "g\0").await.unwrap());
        // Revoking again changes nothing and fails nothing.
        store.revoke_token("t1", at).await.unwrap();
        store.revoke_grant("g1", at).await.unwrap();
    }
}

#[tokio::test]
async fn expired_entries_are_purged_and_live_ones_kept() {
    for backend in backends().await {
        let store = &backend.store;
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let minutes = time::Duration::minutes;
        store
            .take_quota("ended", 1, now - minutes(1), now - minutes(2))
            .await
            .unwrap();
        store
            .take_quota("live", 1, now + minutes(5), now)
            .await
            .unwrap();
        store.revoke_token("old", now - minutes(20)).await.unwrap();
        store
            .revoke_token("recent", now - minutes(5))
            .await
            .unwrap();
        assert!(store.use_once("old-jti", now - minutes(20)).await.unwrap());
        assert!(store.use_once("new-jti", now + minutes(1)).await.unwrap());
        assert_eq!(
            store.purge_expired(now, minutes(10)).await.unwrap(),
            3,
            "{}",
            backend.name
        );
        // The ended window's count is gone: a take starts again at one;
        // the live one still counts.
        assert_eq!(
            store
                .take_quota("ended", 1, now + minutes(5), now)
                .await
                .unwrap(),
            QuotaTake::Granted(1)
        );
        assert_eq!(
            store
                .take_quota("live", 1, now + minutes(5), now)
                .await
                .unwrap(),
            QuotaTake::Exhausted
        );
        assert!(
            store.is_revoked("recent", "-").await.unwrap(),
            "within the grace"
        );
        assert!(!store.is_revoked("old", "-").await.unwrap());
        assert!(
            !store.use_once("new-jti", now + minutes(1)).await.unwrap(),
            "still used"
        );
        assert!(
            store.use_once("old-jti", now + minutes(1)).await.unwrap(),
            "forgotten"
        );
    }
}

#[tokio::test]
async fn clients_are_unique_regardless_of_case_and_replaced_only_from_what_was_read() {
    for backend in backends().await {
        let store = &backend.store;
        let client = crate::oauth::clients::tests::service_account("portal");
        store.create_client(&client).await.unwrap();
        let mut look_alike = crate::oauth::clients::tests::service_account("Portal");
        look_alike.name = "Evil".into();
        assert!(matches!(
            store.create_client(&look_alike).await,
            Err(StoreError::ClientExists(_))
        ));
        assert!(
            store.client(&look_alike.id).await.unwrap().is_none(),
            "{}: an id names its client only as registered",
            backend.name
        );
        let stored = backend.replica.client(&client.id).await.unwrap().unwrap();
        assert_eq!(stored, client);
        let mut renamed = client.clone();
        renamed.name = "Portal 2".into();
        store.update_client(&client, &renamed).await.unwrap();
        assert!(matches!(
            backend.replica.update_client(&client, &renamed).await,
            Err(StoreError::Conflict(_))
        ));
        store
            .create_client(&crate::oauth::clients::tests::service_account("broker"))
            .await
            .unwrap();
        let ids: Vec<String> = store
            .list_clients()
            .await
            .unwrap()
            .iter()
            .map(|c| c.id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["broker", "portal"]);
    }
}

#[tokio::test]
async fn usernames_are_unique_regardless_of_case_and_never_renamed() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-29 12:00 UTC);
        store
            .create_user(&crate::users::User::example("u-1", "Alice", at))
            .await
            .unwrap();
        assert!(matches!(
            store
                .create_user(&crate::users::User::example("u-2", "alice", at))
                .await,
            Err(StoreError::UserExists(_))
        ));
        assert!(
            store.user("u-2").await.unwrap().is_none(),
            "{}: the refused second user left nothing behind",
            backend.name
        );
        assert_eq!(
            store.user_by_name("ALICE").await.unwrap().unwrap().sub,
            "u-1"
        );
        assert!(store.user_by_name("al\0ice").await.unwrap().is_none());
        let current = store.user("u-1").await.unwrap().unwrap();
        let mut renamed = current.clone();
        renamed.username = "bob".into();
        assert!(store.update_user(&current, &renamed).await.is_err());
        let mut disabled = current.clone();
        disabled.disabled = true;
        store.update_user(&current, &disabled).await.unwrap();
        // A stale expected value is a conflict, not a silent overwrite.
        assert!(matches!(
            backend.replica.update_user(&current, &disabled).await,
            Err(StoreError::Conflict(_))
        ));
        store
            .create_user(&crate::users::User::example("u-0", "Zed", at))
            .await
            .unwrap();
        let subs: Vec<String> = store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.sub)
            .collect();
        assert_eq!(subs, ["u-0", "u-1"]);
    }
}

#[tokio::test]
async fn a_persons_sessions_are_listed_touched_and_ended() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-29 12:00 UTC);
        let session = |id: &str, sub: &str| session(id, sub, at);
        for (id, sub) in [("s1", "u-1"), ("s2", "u-1"), ("s3", "u-10")] {
            store.put_session(&session(id, sub)).await.unwrap();
        }
        let ids = |sessions: Vec<Session>| -> Vec<String> {
            sessions.into_iter().map(|s| s.id_hash).collect()
        };
        // "u-1" is not a prefix match for "u-10".
        assert_eq!(
            ids(store.sessions_of("u-1").await.unwrap()),
            ["s1", "s2"],
            "{}",
            backend.name
        );
        let seen = Session {
            last_seen: Some(at + time::Duration::minutes(1)),
            ..session("s2", "u-1")
        };
        assert!(
            store
                .touch_session(&session("s2", "u-1"), &seen)
                .await
                .unwrap()
        );
        assert!(
            !backend
                .replica
                .touch_session(&session("s2", "u-1"), &seen)
                .await
                .unwrap(),
            "{}: touched from a stale read",
            backend.name
        );
        assert_eq!(backend.replica.session("s2").await.unwrap(), Some(seen));
        store.delete_session("s1").await.unwrap();
        assert!(store.session("s1").await.unwrap().is_none());
        assert!(
            !store
                .touch_session(&session("s1", "u-1"), &session("s1", "u-1"))
                .await
                .unwrap()
        );
        assert_eq!(ids(store.sessions_of("u-1").await.unwrap()), ["s2"]);
        assert_eq!(ids(store.sessions_of("u-10").await.unwrap()), ["s3"]);
        assert!(store.session("s\0").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_is_redeemed_fresh_exactly_once_under_concurrency() {
    for backend in backends().await {
        let at = datetime!(2026-11-29 12:00 UTC);
        let code = AuthorizationCode {
            hash: "h1".into(),
            grant: grant(),
            redirect_uri: "https://p/cb".into(),
            code_challenge: "c".into(),
            nonce: None,
            created_at: at,
            expires_at: at + time::Duration::seconds(60),
            redeemed_at: None,
        };
        backend.store.put_code(&code).await.unwrap();
        assert!(matches!(
            backend.replica.put_code(&code).await,
            Err(StoreError::Conflict(_))
        ));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = contestant(&backend, i);
                tokio::spawn(async move { store.redeem_code("h1", at).await })
            })
            .collect();
        let (mut fresh, mut replayed) = (0, 0);
        for task in tasks {
            match task.await.unwrap().unwrap() {
                CodeRedemption::Fresh(_) => fresh += 1,
                CodeRedemption::Replayed(_) => replayed += 1,
                CodeRedemption::Unknown => panic!("{}: the code exists", backend.name),
            }
        }
        assert_eq!((fresh, replayed), (1, 15), "{}", backend.name);
        assert_eq!(
            backend.store.redeem_code("nope", at).await.unwrap(),
            CodeRedemption::Unknown
        );
        assert_eq!(
            backend.store.redeem_code("n\0pe", at).await.unwrap(),
            CodeRedemption::Unknown
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_refresh_rotations_exactly_one_wins() {
    for backend in backends().await {
        let at = datetime!(2026-11-29 12:00 UTC);
        let record = RefreshRecord {
            hash: "r1".into(),
            grant: grant(),
            created_at: at,
            expires_at: at + time::Duration::hours(1),
            state: RefreshState::Active,
        };
        backend.store.put_refresh(&record).await.unwrap();
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let store = contestant(&backend, i);
                let record = record.clone();
                tokio::spawn(async move {
                    let rotated = RefreshRecord {
                        state: RefreshState::Rotated {
                            at,
                            successor: format!("r-next-{i}"),
                        },
                        ..record.clone()
                    };
                    store.replace_refresh(&record, &rotated).await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => won += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(other) => panic!("{}: {other}", backend.name),
            }
        }
        assert_eq!(won, 1, "{}", backend.name);
        let stored = backend.replica.refresh_token("r1").await.unwrap().unwrap();
        assert!(matches!(stored.state, RefreshState::Rotated { .. }));
    }
}

#[tokio::test]
async fn approvals_are_replaced_only_from_what_was_read() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-29 12:00 UTC);
        let first = crate::delegation::Approval {
            id: "ap_1".into(),
            sub: "u-1".into(),
            client_id: "portal".into(),
            scopes: ["openid".to_owned()].into(),
            redirect_uris: BTreeSet::new(),
            delegatees: Default::default(),
            declined_delegatees: BTreeSet::new(),
            max_depth: 2,
            created_at: at,
            updated_at: at,
            expires_at: at + time::Duration::days(1),
            last_used: None,
            revoked: None,
        };
        store.save_approval(None, &first).await.unwrap();
        // A second "first" approval for the same pair is a conflict.
        let rival = crate::delegation::Approval {
            id: "ap_2".into(),
            ..first.clone()
        };
        assert!(backend.replica.save_approval(None, &rival).await.is_err());
        assert!(
            store.approval("ap_2").await.unwrap().is_none(),
            "{}: no orphan",
            backend.name
        );
        // Replacing by a new id moves the current pointer; the old stays.
        store.save_approval(Some(&first), &rival).await.unwrap();
        assert_eq!(
            store
                .current_approval("u-1", "portal")
                .await
                .unwrap()
                .unwrap()
                .id,
            "ap_2"
        );
        assert!(store.approval("ap_1").await.unwrap().is_some());
        assert_eq!(store.approvals_of("u-1").await.unwrap().len(), 1);
        // A change from a stale read is refused, in place or by a new id.
        let narrowed = crate::delegation::Approval {
            max_depth: 1,
            ..rival.clone()
        };
        store.save_approval(Some(&rival), &narrowed).await.unwrap();
        assert!(matches!(
            backend.replica.save_approval(Some(&rival), &narrowed).await,
            Err(StoreError::Conflict(_))
        ));
        let third = crate::delegation::Approval {
            id: "ap_3".into(),
            ..first.clone()
        };
        assert!(
            backend
                .replica
                .save_approval(Some(&first), &third)
                .await
                .is_err()
        );
        assert_eq!(
            store
                .current_approval("u-1", "portal")
                .await
                .unwrap()
                .unwrap(),
            narrowed
        );
        store.add_grant("ap_2", "ag_2").await.unwrap();
        store.add_grant("ap_2", "ag_1").await.unwrap();
        store.add_grant("ap_2", "ag_1").await.unwrap();
        assert_eq!(store.grants_of("ap_2").await.unwrap(), vec!["ag_1", "ag_2"]);
        assert!(store.grants_of("ap_1").await.unwrap().is_empty());
        assert!(
            store
                .current_approval("u-1", "nobody")
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn device_user_codes_are_unique_and_freed_when_purged() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-29 12:00 UTC);
        let device = DeviceRecord {
            hash: "d1".into(),
            user_code: "BCDFGHJK".into(),
            client_id: "cli".into(),
            scopes: BTreeSet::new(),
            resource: "r".into(),
            created_at: at,
            expires_at: at + time::Duration::minutes(10),
            interval_secs: 5,
            last_poll: None,
            status: crate::oauth::grants::DeviceStatus::Pending,
        };
        store.put_device(&device).await.unwrap();
        let clash = DeviceRecord {
            hash: "d2".into(),
            ..device.clone()
        };
        assert!(matches!(
            store.put_device(&clash).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(
            store.device("d2").await.unwrap().is_none(),
            "{}: no orphan",
            backend.name
        );
        assert_eq!(
            backend
                .replica
                .device_by_user_code("BCDFGHJK")
                .await
                .unwrap()
                .as_ref(),
            Some(&device)
        );
        let polled = DeviceRecord {
            last_poll: Some(at),
            ..device.clone()
        };
        store.replace_device(&device, &polled).await.unwrap();
        assert!(matches!(
            backend.replica.replace_device(&device, &polled).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.purge_expired(at, time::Duration::ZERO).await.unwrap(),
            0
        );
        let later = at + time::Duration::minutes(11);
        assert!(
            store
                .purge_expired(later, time::Duration::ZERO)
                .await
                .unwrap()
                >= 1
        );
        assert!(store.device("d1").await.unwrap().is_none());
        assert!(
            store
                .device_by_user_code("BCDFGHJK")
                .await
                .unwrap()
                .is_none()
        );
        store.put_device(&clash).await.unwrap();
    }
}

#[tokio::test]
async fn token_lineage_is_stored_with_its_audit_record_and_found_from_the_parent() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-29 12:00 UTC);
        let lineage = |jti: &str, parent: &str| TokenLineage {
            jti: jti.into(),
            parent_jti: parent.into(),
            parent_client_id: "wps".into(),
            parent_scope: "openid".into(),
            parent_iat: at.unix_timestamp(),
            client_id: "broker".into(),
            client_auth: "private_key_jwt".into(),
            new_actor: true,
            scope: "openid".into(),
            audience: vec!["https://as/certificate".into()],
            at,
            expires_at: at + time::Duration::minutes(10),
        };
        for (jti, parent) in [("at_b", "at_a"), ("at_c", "at_a"), ("at_d", "at_b")] {
            store
                .put_lineage(
                    &lineage(jti, parent),
                    &event(at, "client:broker", "token.exchange", jti),
                )
                .await
                .unwrap();
        }
        assert!(matches!(
            backend
                .replica
                .put_lineage(
                    &lineage("at_b", "at_x"),
                    &event(at, "x", "token.exchange", "at_b")
                )
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.exchanged_from("at_a").await.unwrap(),
            ["at_b", "at_c"],
            "{}",
            backend.name
        );
        assert_eq!(
            backend.replica.lineage("at_d").await.unwrap(),
            Some(lineage("at_d", "at_b"))
        );
        assert!(store.lineage("at_a").await.unwrap().is_none());
        let exchanges = store
            .audit_events(0, 100)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.event.action == "token.exchange")
            .count();
        assert_eq!(
            exchanges, 3,
            "{}: the refused one left no audit record",
            backend.name
        );
        let later = at + time::Duration::minutes(11);
        assert!(
            store
                .purge_expired(later, time::Duration::ZERO)
                .await
                .unwrap()
                >= 3
        );
        assert!(store.exchanged_from("at_a").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn pending_authorizations_are_stored_once_and_discarded() {
    for backend in backends().await {
        let store = &backend.store;
        let at = datetime!(2026-11-29 12:00 UTC);
        let pending = crate::oauth::grants::PendingAuthorization {
            id: "pa_1".into(),
            client_id: "portal".into(),
            redirect_uri: "https://p/cb".into(),
            scopes: ["openid".to_owned()].into(),
            resource: "https://as/certificate".into(),
            state: Some("xyz".into()),
            nonce: None,
            code_challenge: "c".into(),
            prompt: crate::oauth::grants::Prompt::default(),
            max_age: None,
            created_at: at,
            expires_at: at + time::Duration::minutes(15),
        };
        store.put_pending(&pending).await.unwrap();
        assert!(matches!(
            backend.replica.put_pending(&pending).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            backend.replica.pending("pa_1").await.unwrap().as_ref(),
            Some(&pending)
        );
        store.delete_pending("pa_1").await.unwrap();
        assert!(
            backend.replica.pending("pa_1").await.unwrap().is_none(),
            "{}",
            backend.name
        );
        store.delete_pending("pa_1").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_signing_keys_move_one_generation_at_a_time() {
    for backend in backends().await {
        if !backend.store.shares_signing_keys() {
            // A store of one process keeps them in its data directory.
            assert!(backend.store.shared_signing_keys().await.unwrap().is_none());
            assert!(
                backend
                    .store
                    .put_shared_signing_keys(1, b"x")
                    .await
                    .is_err()
            );
            continue;
        }
        assert!(backend.store.shared_signing_keys().await.unwrap().is_none());
        backend
            .store
            .put_shared_signing_keys(1, b"first")
            .await
            .unwrap();
        assert!(matches!(
            backend.replica.put_shared_signing_keys(1, b"rival").await,
            Err(StoreError::Conflict(_))
        ));
        // Two replicas rotating at once: one wins.
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = contestant(&backend, i);
                tokio::spawn(async move {
                    store
                        .put_shared_signing_keys(2, format!("second-{i}").as_bytes())
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                won += 1;
            }
        }
        assert_eq!(won, 1, "{}", backend.name);
        let (generation, sealed) = backend
            .replica
            .shared_signing_keys()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(generation, 2);
        assert!(sealed.starts_with(b"second-"));
        assert!(matches!(
            backend.store.put_shared_signing_keys(4, b"skipped").await,
            Err(StoreError::Conflict(_))
        ));
    }
}

/// Fills `store` with one of each kind of record export carries.
async fn populate(store: &dyn Store) {
    let at = datetime!(2026-11-29 12:00 UTC);
    store
        .create_client(&crate::oauth::clients::tests::service_account("portal"))
        .await
        .unwrap();
    store
        .create_user(&crate::users::User::example("u-1", "alice", at))
        .await
        .unwrap();
    store.record_intent(&intent(&[6, 1])).await.unwrap();
    store
        .record_issued(&intent(&[6, 1]).serial, b"der", at)
        .await
        .unwrap();
    revoke_certificate(store, &intent(&[6, 1]).serial, "test", "admin", None, at)
        .await
        .unwrap();
    store.revoke_token("at_1", at).await.unwrap();
    store.revoke_grant("ag_1", at).await.unwrap();
    store.use_once("client|j\0ti", at).await.unwrap();
    store
        .take_quota("token:at_2", 5, at + time::Duration::hours(2), at)
        .await
        .unwrap();
    store
        .append_audit(&event(at, "user:u-1", "user.login", "user:u-1"))
        .await
        .unwrap();
}

/// Export lines other than the header (which names the backend).
fn export_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .filter(|line| !line.contains("\"kind\":\"header\""))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn an_export_moves_whole_between_backends_and_a_damaged_one_changes_nothing() {
    let now = datetime!(2026-11-29 13:00 UTC);
    for source in backends().await {
        populate(source.store.as_ref()).await;
        let mut exported = Vec::new();
        let moved = export::export(source.store.as_ref(), &mut exported, now)
            .await
            .unwrap();
        assert_eq!(moved.issuance, 1);
        assert_eq!(moved.audit, 2, "the login and the revocation");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("export.jsonl");
        std::fs::write(&file, &exported).unwrap();
        let truncated = dir.path().join("truncated.jsonl");
        let text = String::from_utf8(exported.clone()).unwrap();
        let without_trailer: Vec<&str> = text.lines().filter(|l| !l.contains("trailer")).collect();
        std::fs::write(&truncated, without_trailer.join("\n")).unwrap();
        for target in backends().await {
            let err = export::import(target.store.as_ref(), &truncated)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("truncated"), "{err}");
            assert!(target.store.is_empty().await.unwrap(), "nothing written");
            export::import(target.store.as_ref(), &file).await.unwrap();
            let mut again = Vec::new();
            export::export(target.store.as_ref(), &mut again, now)
                .await
                .unwrap();
            assert_eq!(
                export_lines(&again),
                export_lines(&exported),
                "{} → {}",
                source.name,
                target.name
            );
            assert!(
                verify_audit(target.store.as_ref())
                    .await
                    .unwrap()
                    .is_intact()
            );
            // The chain goes on after the imported records.
            target
                .store
                .append_audit(&event(now, "admin", "client.create", "x"))
                .await
                .unwrap();
            let report = verify_audit(target.store.as_ref()).await.unwrap();
            assert!(
                report.is_intact(),
                "{} → {}: {report:?}",
                source.name,
                target.name
            );
            assert_eq!(report.verified, 3);
            // Imported indexes work: the username, the origins, the person.
            assert!(target.store.user_by_name("ALICE").await.unwrap().is_some());
            assert_eq!(
                target
                    .store
                    .certificates_from(Origin::Client("c"))
                    .await
                    .unwrap()
                    .len(),
                1
            );
            assert_eq!(
                target.store.audit_of_person("u-1", 10).await.unwrap().len(),
                1
            );
            assert!(!target.store.use_once("client|j\0ti", now).await.unwrap());
            assert!(target.store.is_revoked("at_1", "-").await.unwrap());
            assert_eq!(
                target
                    .store
                    .take_quota("token:at_2", 5, now + time::Duration::hours(1), now)
                    .await
                    .unwrap(),
                QuotaTake::Granted(2)
            );
            // A second import into the now populated store is refused.
            assert!(matches!(
                export::import(target.store.as_ref(), &file).await,
                Err(StoreError::Conflict(_))
            ));
        }
    }
}
