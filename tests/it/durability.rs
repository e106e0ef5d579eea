//! ATTACKS ROB-06: kill -9 during concurrent issuance, and during mixed
//! load on the real server, loses nothing that was acknowledged. A child process (`slcs bench --print-serials`) issues
//! certificates concurrently through the durable path and prints each serial
//! only after the engine acknowledged it; the test SIGKILLs it at a random
//! moment, reopens the store, and finds every printed serial issued.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use slcs::store::sled::{OpenMode, SledOptions, SledStore};
use slcs::store::{IssuanceLog as _, IssuanceState, Serial};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{run_slcs, slcs_bin, wait_timeout};

/// The store of data directory `data`, opened directly (the server is
/// down).
fn open_store(data: &std::path::Path) -> SledStore {
    SledStore::open(&SledOptions {
        path: data.join("store"),
        cache_capacity_bytes: 8 << 20,
        mode: OpenMode::MustExist,
        ca_key_sha256: None,
    })
    .unwrap()
}

fn random_below(limit: u32) -> u32 {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    u32::from_le_bytes(bytes) % limit
}

#[tokio::test]
async fn rob_06_acknowledged_certificates_survive_sigkill() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let data_arg = data.to_str().unwrap();
    assert!(
        run_slcs(&["--data-dir", data_arg, "init"], &[])
            .status
            .success()
    );

    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let kill_after = 10 + random_below(400) as usize;
        let mut child = Command::new(slcs_bin())
            .args([
                "--data-dir",
                data_arg,
                "bench",
                "--count",
                "1000000",
                "--concurrency",
                "8",
                "--threads",
                "2",
                "--print-serials",
            ])
            .env_remove("SLCS_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("bench stopped early").unwrap();
            acknowledged.push(line);
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        // Lines printed before the kill were acknowledged too.
        for line in lines {
            acknowledged.push(line.unwrap());
        }
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        assert!(!status.success(), "round {round}: the child was not killed");
    }

    let serials: Vec<Serial> = acknowledged
        .iter()
        .map(|line| line.strip_prefix("serial ").unwrap().parse().unwrap())
        .collect();
    let unique: HashSet<&Serial> = serials.iter().collect();
    assert_eq!(
        unique.len(),
        serials.len(),
        "a serial was acknowledged twice"
    );

    let store = open_store(&data);
    for serial in &serials {
        let record = store
            .issuance(serial)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged serial {serial} missing after kill -9"));
        assert_eq!(record.state, IssuanceState::Issued, "{serial}");
        let der = record.certificate.expect("certificate recorded");
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.raw_serial(), serial.as_bytes());
    }
    assert!(store.issuance_count().await.unwrap() >= serials.len() as u64);
    println!(
        "{} acknowledged certificates over 3 kills, all recovered",
        serials.len()
    );
}

/// What a client was told succeeded, before a crash.
#[derive(Debug)]
enum Acknowledged {
    /// A certificate (its serial).
    Certificate(Serial),
    /// An administrator's revocation of that certificate.
    CertificateRevoked(Serial),
    /// A person's approval of the portal (their subject), the consent's
    /// redirect carrying a code.
    Approval(String),
    /// A token revoked at `/revoke` (its jti and grant).
    TokenRevoked(String, String),
}

/// ROB-06 under load (issue 10 item 7): mixed work — service tokens and
/// certificates, certificate revocations, people's consents, token
/// exchanges and token revocations — runs against the real server, which
/// is SIGKILLed at a random moment, three times. Afterwards every write a
/// client was answered for is in the store (each certificate issued and
/// whole, each revocation and approval present), nothing half-written is
/// visible (no issued record without its certificate), and the audit log's
/// hash chain is intact across the crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rob_06_mixed_load_survives_sigkill_with_every_acknowledged_write() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::Server;
    use crate::certificate::claims_of;
    use crate::delegation::{decide_consent, register_chain, token_of};
    use crate::people::{PASSWORD, add_user, authorize_path, pkce, query_of, redeem};

    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let env = [
        ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
        ("SLCS_SERVER_RATE_PER_CLIENT", "0"),
        ("SLCS_CERTIFICATE_QUOTA_PER_SUBJECT_PER_HOUR", "1000000"),
    ];
    let server = Server::start(&data, &env);
    let chain = register_chain(&server);
    let (created, svc_secret) =
        crate::token::register(&server, &crate::token::service_client_json("svc"));
    assert_eq!(created.status, 201);
    let svc_secret = svc_secret.unwrap();
    // One consent per person: enough people for every round.
    let people: Vec<(String, String)> = (0..72)
        .map(|i| {
            let name = format!("person{i}");
            let sub = add_user(
                &server,
                serde_json::json!({"username": name, "display_name": name, "password": PASSWORD}),
            );
            (name, sub)
        })
        .collect();
    drop(server);

    let acknowledged: Mutex<Vec<Acknowledged>> = Mutex::new(Vec::new());
    let ack = |a: Acknowledged| acknowledged.lock().unwrap().push(a);
    let next_person = std::sync::atomic::AtomicUsize::new(0);
    for round in 0..3 {
        let server = Server::start(&data, &env);
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(600 + u64::from(random_below(1200)));
        std::thread::scope(|scope| {
            // Service certificates, every third one revoked.
            scope.spawn(|| {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let token = crate::token::token_basic(
                            &server,
                            "svc",
                            &svc_secret,
                            "grant_type=client_credentials&scope=slcs%3Acertificate",
                        );
                        let token = token.json()["access_token"].as_str()?.to_owned();
                        let issued = crate::certificate::post_csr(&server, &token, "");
                        if issued.status != 200 {
                            return None;
                        }
                        let serial = crate::certificate::inspect_json(&issued.text())["serial"]
                            .as_str()?
                            .parse::<Serial>()
                            .ok()?;
                        Some(serial)
                    }));
                    let Ok(Some(serial)) = step else { continue };
                    ack(Acknowledged::Certificate(serial.clone()));
                    n += 1;
                    if n.is_multiple_of(3) {
                        let revoked = std::panic::catch_unwind(|| {
                            server.post(
                                &format!("/admin/certificates/{}/revoke", serial.to_hex()),
                                &[("Authorization", &crate::token::admin(&server))],
                                "application/json",
                                "{\"reason\":\"crash test\"}",
                            )
                        });
                        if revoked.is_ok_and(|r| r.status == 200) {
                            ack(Acknowledged::CertificateRevoked(serial));
                        }
                    }
                }
            });
            // People approving the portal; the portal exchanging and
            // revoking their tokens.
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next_person.fetch_add(1, Ordering::Relaxed);
                    let Some((name, sub)) = people.get(i) else {
                        break;
                    };
                    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let (verifier, challenge) = pkce();
                        let back = decide_consent(
                            &server,
                            name,
                            &authorize_path("openid slcs:certificate", &challenge, ""),
                            &["wps"],
                        );
                        let location = back.header("location")?.to_owned();
                        let code = query_of(&location).get("code")?.clone();
                        ack(Acknowledged::Approval(sub.clone()));
                        let t0 = token_of(&redeem(&server, &chain.portal, &code, &verifier));
                        let t1 = token_of(&crate::delegation::exchange(
                            &server,
                            "portal",
                            &chain.portal,
                            &t0,
                            "&audience=wps",
                        ));
                        let revoked = server.post(
                            "/revoke",
                            &[(
                                "Authorization",
                                &format!(
                                    "Basic {}",
                                    base64::Engine::encode(
                                        &base64::engine::general_purpose::STANDARD,
                                        format!("portal:{}", chain.portal)
                                    )
                                ),
                            )],
                            "application/x-www-form-urlencoded",
                            &format!("token={t1}"),
                        );
                        (revoked.status == 200).then_some(t1)
                    }));
                    if let Ok(Some(t1)) = step {
                        let claims = claims_of(&t1);
                        ack(Acknowledged::TokenRevoked(
                            claims["jti"].as_str().unwrap().to_owned(),
                            claims["grant_id"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
            });
            std::thread::sleep(kill_after);
            // SIGKILL: nothing flushed on the way out.
            crate::signal(&server.child, "KILL");
            stop.store(true, Ordering::Relaxed);
        });
        drop(server);
        assert!(
            !acknowledged.lock().unwrap().is_empty(),
            "round {round}: nothing was acknowledged"
        );
    }

    // Everything acknowledged is there.
    use slcs::store::{GrantStore as _, RevocationStore as _};
    let store = open_store(&data);
    let acknowledged = acknowledged.into_inner().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for a in &acknowledged {
        match a {
            Acknowledged::Certificate(serial) => {
                let record = store.issuance(serial).await.unwrap().expect("issued");
                assert_eq!(record.state, IssuanceState::Issued, "{serial}");
                assert!(record.certificate.is_some(), "{serial}");
                *counts.entry("certificates").or_insert(0) += 1;
            }
            Acknowledged::CertificateRevoked(serial) => {
                let record = store.issuance(serial).await.unwrap().expect("issued");
                assert!(record.revocation.is_some(), "revocation of {serial} lost");
                *counts.entry("certificate revocations").or_insert(0) += 1;
            }
            Acknowledged::Approval(sub) => {
                let approvals = store.approvals_of(sub).await.unwrap();
                assert!(
                    approvals.iter().any(|a| a.client_id == "portal"),
                    "approval of {sub} lost"
                );
                *counts.entry("approvals").or_insert(0) += 1;
            }
            Acknowledged::TokenRevoked(jti, grant) => {
                assert!(
                    store.is_revoked(jti, grant).await.unwrap(),
                    "revocation of {jti} lost"
                );
                *counts.entry("token revocations").or_insert(0) += 1;
            }
        }
    }
    // Nothing half-written: every issued record carries a certificate
    // whose serial is its own.
    let every = store
        .search_issuances(&slcs::store::IssuanceQuery::default(), usize::MAX)
        .await
        .unwrap();
    for record in &every {
        if record.state == IssuanceState::Issued {
            let der = record
                .certificate
                .as_ref()
                .expect("issued without a certificate");
            let (_, cert) = X509Certificate::from_der(der).unwrap();
            assert_eq!(cert.raw_serial(), record.intent.serial.as_bytes());
        } else {
            assert!(record.certificate.is_none());
        }
    }
    let report = slcs::store::verify_audit(&store).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    println!(
        "acknowledged before three SIGKILLs, all found: {counts:?}; {} issuance records; audit chain of {} records intact",
        every.len(),
        report.verified
    );
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped, also when
/// the test fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` when this machine does not let the test mount (not root, or a
    /// container without the capability), unless `TMPFS_REQUIRED` is
    /// set (`.ci/run` sets it when it runs as root), which makes it a failure.
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Self(at.to_path_buf()));
        }
        assert!(
            std::env::var_os("TMPFS_REQUIRED").is_none(),
            "mounting a tmpfs failed, and TMPFS_REQUIRED is set"
        );
        println!("cannot mount a tmpfs here (not root?); skipping");
        None
    }

    fn available_kib(&self) -> u64 {
        let output = Command::new("df")
            .args(["-k", "--output=avail"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// ATTACKS ROB-08: the data directory's disk fills up while certificates
/// are being requested. Requests are answered 503 `temporarily_unavailable`
/// with `Retry-After`, and none of them gets a certificate; slcs, whose
/// store refuses every write from then on, stops by itself and exits
/// non-zero (for its supervisor to restart it). With space back it starts
/// again: every certificate acknowledged before is in the log and good,
/// every record is whole (an issued record has its certificate; the
/// refused requests left at most intents or abandoned records), and
/// issuance works again.
#[test]
fn rob_08_a_full_disk_is_refused_with_503_and_slcs_recovers_when_space_returns() {
    let work = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&work.path().join("disk"), "64m") else {
        return;
    };
    // The store on the small disk; the rest of the data directory, and the
    // server's log, elsewhere.
    let data = work.path().join("data");
    let store_path = disk.0.join("store");
    let limits = [
        ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
        ("SLCS_SERVER_RATE_PER_CLIENT", "0"),
        ("SLCS_STORE_PATH", store_path.to_str().unwrap()),
    ];
    let mut server = crate::Server::start(&data, &limits);
    let (secret, token) = crate::certificate::service_token(&server, "svc");
    let mut acknowledged = Vec::new();
    let first = crate::certificate::post_csr(&server, &token, "");
    assert_eq!(first.status, 200, "{}", first.text());
    acknowledged.push(first.header("slcs-serial").unwrap().to_owned());

    // Fill the disk, leaving a few KiB.
    let filler = disk.0.join("filler");
    let keep_kib = 4;
    let fill_kib = disk.available_kib().saturating_sub(keep_kib);
    let status = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", &format!("count={fill_kib}")])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let mut refused = 0;
    for _ in 0..20 {
        let answer = crate::certificate::post_csr(&server, &token, "");
        match answer.status {
            // The last KiB may still take a record or two.
            200 => acknowledged.push(answer.header("slcs-serial").unwrap().to_owned()),
            503 => {
                refused += 1;
                assert_eq!(answer.json()["error"], "temporarily_unavailable");
                assert!(answer.header("retry-after").is_some());
                assert!(!answer.text().contains("BEGIN CERTIFICATE"));
            }
            other => panic!("{other}: {}", answer.text()),
        }
    }
    assert!(refused >= 15, "only {refused} of 20 refused on a full disk");

    // slcs stops by itself, non-zero, saying why.
    let exited = wait_timeout(&mut server.child, Duration::from_secs(60));
    assert!(!exited.success(), "{exited:?}");
    let log = std::fs::read_to_string(&server.stderr_path).unwrap();
    assert!(log.contains("can no longer make writes durable"), "{log}");
    drop(server);

    // Space returns: the store is whole, and slcs serves again.
    std::fs::remove_file(&filler).unwrap();
    {
        let store = SledStore::open(&SledOptions {
            path: store_path.clone(),
            cache_capacity_bytes: 8 << 20,
            mode: OpenMode::MustExist,
            ca_key_sha256: None,
        })
        .unwrap();
        let records = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store.search_issuances(&slcs::store::IssuanceQuery::default(), 10_000));
        for record in records.unwrap() {
            match record.state {
                IssuanceState::Issued => assert!(record.certificate.is_some()),
                IssuanceState::Intent | IssuanceState::Abandoned => {
                    assert!(record.certificate.is_none());
                    assert!(
                        !acknowledged.contains(&record.intent.serial.to_hex()),
                        "an acknowledged certificate is not issued"
                    );
                }
            }
        }
    }
    let server = crate::Server::start(&data, &limits);
    assert_eq!(server.get("/healthz").status, 200);
    for serial in &acknowledged {
        let (status, answer) = crate::people::certificate_status(&server, serial);
        assert_eq!(status, "good", "{serial}: {answer}");
    }
    let token = crate::token::token_basic(
        &server,
        "svc",
        &secret,
        "grant_type=client_credentials&scope=slcs%3Acertificate",
    );
    let token = token.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        crate::certificate::post_csr(&server, &token, "").status,
        200
    );
    println!(
        "{} certificates acknowledged, {refused} requests refused with 503 on the full disk",
        acknowledged.len()
    );
}

/// ATTACKS ROB-08, the log's side: with standard error on a device that is
/// always full (`/dev/full`), every request is still answered, the
/// failures included. (tracing-subscriber reported a log line it could not
/// write with `eprintln!`, which panicked in the request's task and cut
/// the connection without an answer; slcs now drops such lines.)
#[test]
fn rob_08_a_log_that_cannot_be_written_drops_lines_not_requests() {
    let work = tempfile::tempdir().unwrap();
    let server = crate::Server::start_logging_to(
        &work.path().join("data"),
        "127.0.0.1:0",
        &[("SLCS_LOG_LEVEL", "debug")],
        std::path::PathBuf::from("/dev/full"),
    );
    let (_, token) = crate::certificate::service_token(&server, "svc");
    for _ in 0..5 {
        assert_eq!(
            crate::certificate::post_csr(&server, &token, "").status,
            200
        );
        let refused = crate::certificate::post_csr(&server, "not-a-token", "");
        assert_eq!(refused.status, 401, "{}", refused.text());
        assert_eq!(server.get("/no/such/page").status, 404);
    }
}
