//! Several `slcs serve` processes on one PostgreSQL database, as a
//! federation runs them behind a load balancer: whatever is single-use
//! stays single-use across replicas, a revocation on one is honoured by the
//! other, both sign and publish the same keys, serials never collide, and
//! a replica that loses the database fails closed and recovers by itself.
//!
//! PostgreSQL comes from `PG_TEST_URL` (`scripts/pg-throwaway start DIR`
//! prints one; `.ci/run` sets it and `PG_REQUIRED=1`). The test that stops
//! the database starts a cluster of its own, so the others are not hurt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::certificate::{post_csr, service_token};
use crate::people::{
    Browser, code_for, concurrently, introspect_active, pkce, redeem, refresh, register_portal,
};
use crate::token::admin;
use crate::{Server, form_encode, rand_tag, run_slcs};

/// The test cluster's URL, or `None` (with a note) when there is none and
/// none is required.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("PG_TEST_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        Some(url) => Some(url),
        None => {
            assert!(
                std::env::var("PG_REQUIRED").as_deref() != Ok("1"),
                "PG_REQUIRED=1 but PG_TEST_URL is not set (scripts/pg-throwaway start DIR prints it)"
            );
            eprintln!("note: PG_TEST_URL not set; skipping a PostgreSQL test");
            None
        }
    }
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, tail) = url.rsplit_once('/').unwrap();
    match tail.split_once('?') {
        Some((_, query)) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Runs one SQL statement with `psql`; its unaligned output.
pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("psql runs (apt-get install postgresql-client)");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A fresh, empty database on the cluster at `admin_url`.
pub fn fresh_database(admin_url: &str) -> String {
    let name = format!("slcs_it_{}", rand_tag());
    psql(admin_url, &format!("CREATE DATABASE {name}"));
    with_database(admin_url, &name)
}

/// The environment that puts a replica on `url`.
fn postgres_env(url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("SLCS_STORE_BACKEND".to_owned(), "postgres".to_owned()),
        ("SLCS_STORE_URL".to_owned(), url.to_owned()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// What every replica of a deployment shares besides the database: the CA,
/// the TLS identity, the pepper (client secrets and the sealed signing
/// keys are keyed with it) and the admin token. Not the signing keys,
/// which come from the database, nor the lock.
fn copy_deployment_secrets(from: &Path, to: &Path) {
    for dir in ["ca", "tls"] {
        std::fs::create_dir_all(to.join(dir)).unwrap();
        for entry in std::fs::read_dir(from.join(dir)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(dir).join(entry.file_name())).unwrap();
        }
    }
    for file in ["secret-pepper", "admin-token"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    for dir in [to.to_path_buf(), to.join("ca"), to.join("tls")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// Two replicas on one fresh database.
pub struct Deployment {
    pub url: String,
    pub a: Server,
    pub b: Server,
    pub work: tempfile::TempDir,
}

impl Deployment {
    pub fn start(admin_url: &str, extra: &[(&str, &str)]) -> Deployment {
        let url = fresh_database(admin_url);
        Self::start_on(&url, extra)
    }

    pub fn start_on(url: &str, extra: &[(&str, &str)]) -> Deployment {
        let work = tempfile::tempdir().unwrap();
        let env = postgres_env(url, extra);
        let (dir_a, dir_b) = (work.path().join("a"), work.path().join("b"));
        // `slcs init` makes the CA and brings the database to the schema.
        let init = run_slcs(
            &["--data-dir", dir_a.to_str().unwrap(), "init"],
            &as_refs(&env),
        );
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        // Each replica its own serial prefix (0x11, 0x12), as
        // docker-compose.yml gives them.
        let with_prefix = |prefix: &'static str| {
            let mut env = as_refs(&env);
            env.push(("SLCS_CA_SERIAL_PREFIX", prefix));
            env
        };
        let a = Server::start(&dir_a, &with_prefix("17"));
        copy_deployment_secrets(&dir_a, &dir_b);
        let b = Server::start(&dir_b, &with_prefix("18"));
        Deployment {
            url: url.to_owned(),
            a,
            b,
            work,
        }
    }
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn revoke(server: &Server, id: &str, secret: &str, token: &str) {
    let response = server.post(
        "/revoke",
        &[("Authorization", &basic(id, secret))],
        "application/x-www-form-urlencoded",
        &format!("token={}", form_encode(token)),
    );
    assert_eq!(response.status, 200, "{}", response.text());
}

fn serial_of(pem: &str) -> String {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let certificate = block.parse_x509().unwrap();
    hex::encode_upper(certificate.raw_serial())
}

fn jwks(server: &Server) -> serde_json::Value {
    let response = server.get("/jwks");
    assert_eq!(response.status, 200);
    response.json()
}

/// Two replicas: a client registered on one is known to the other; a code
/// issued by one is redeemed once through the other; concurrent refreshes
/// of one token across both leave one rotation; a revocation on one is
/// honoured by the other; a key rotation on one reaches the other's
/// signing and JWK set within `oauth.shared_keys_refresh_secs`.
#[test]
fn two_replicas_share_codes_refreshes_revocations_and_keys() {
    let Some(admin_url) = pg_admin_url() else {
        return;
    };
    let deployment = Deployment::start(&admin_url, &[("SLCS_OAUTH_SHARED_KEYS_REFRESH_SECS", "1")]);
    let (a, b) = (&deployment.a, &deployment.b);
    assert_eq!(b.get("/readyz").json()["store"]["backend"], "postgres");
    assert_eq!(jwks(a), jwks(b), "both publish the keys the database holds");

    let secret = register_portal(a);
    crate::people::alice(a);

    // A code from replica A, redeemed through B; then again through A.
    let mut browser = Browser::new(a);
    let (verifier, challenge) = pkce();
    let code = code_for(
        &mut browser,
        "openid offline_access slcs:certificate",
        &challenge,
    );
    let first = redeem(b, &secret, &code, &verifier);
    assert_eq!(first.status, 200, "{}", first.text());
    let again = redeem(a, &secret, &code, &verifier);
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["error"], "invalid_grant");
    // The replay revoked what the first redemption obtained (RFC 6749
    // §4.1.2), on both replicas.
    let access = first.json()["access_token"].as_str().unwrap().to_owned();
    assert!(!introspect_active(a, &secret, &access));
    assert!(!introspect_active(b, &secret, &access));

    // One refresh token presented 16 times at once, half to each replica:
    // one rotation wins; every other attempt is reuse (RFC 9700 §4.14.2)
    // and revokes the family, so at most one response carries tokens and
    // no descendant stays alive.
    let (verifier, challenge) = pkce();
    let code = code_for(
        &mut browser,
        "openid offline_access slcs:certificate",
        &challenge,
    );
    let family = redeem(a, &secret, &code, &verifier).json();
    let refresh_token = family["refresh_token"].as_str().unwrap().to_owned();
    let turn = AtomicUsize::new(0);
    let results = concurrently(16, || {
        let server = if turn.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            a
        } else {
            b
        };
        refresh(server, &secret, &refresh_token)
    });
    let winners: Vec<_> = results.iter().filter(|r| r.status == 200).collect();
    assert!(winners.len() <= 1, "{} refreshes succeeded", winners.len());
    for loser in results.iter().filter(|r| r.status != 200) {
        assert_eq!(loser.json()["error"], "invalid_grant", "{}", loser.text());
    }
    let rotations = psql(
        &deployment.url,
        "SELECT count(*) FROM refresh_tokens WHERE convert_from(record, 'UTF8')::jsonb -> 'state' ? 'rotated'",
    );
    assert_eq!(rotations.trim(), "1", "exactly one rotation of the token");
    for winner in winners {
        let next = winner.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(refresh(b, &secret, &next).json()["error"], "invalid_grant");
    }

    // A revocation on A is honoured by B: its certificate endpoint and
    // its introspection.
    let (svc_secret, token) = service_token(a, "openeo-batch");
    let issued = post_csr(b, &token, "");
    assert_eq!(issued.status, 200, "{}", issued.text());
    revoke(a, "openeo-batch", &svc_secret, &token);
    let refused = post_csr(b, &token, "");
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["error"], "invalid_token");
    // ... and the certificate the token obtained was revoked with it, as B
    // reports.
    let serial = serial_of(&issued.text());
    let (status, _) = crate::people::certificate_status(b, &serial);
    assert_eq!(status, "revoked");

    // A key rotation on A: B signs with the new key and publishes the same
    // set within the refresh period (1 s here).
    let before = jwks(b);
    let rotated = a.post(
        "/admin/keys/rotate",
        &[("Authorization", &admin(a))],
        "application/json",
        "",
    );
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_ne!(jwks(a), before);
    let deadline = Instant::now() + Duration::from_secs(10);
    while jwks(b) != jwks(a) {
        assert!(Instant::now() < deadline, "B did not adopt A's rotation");
        std::thread::sleep(Duration::from_millis(200));
    }
    let current_kid = |server: &Server| {
        let (_, token) = service_token_again(server, "openeo-batch", &svc_secret);
        let header = token.split('.').next().unwrap().to_owned();
        let header: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        current_kid(a),
        current_kid(b),
        "both sign with the same key"
    );
    // A token signed by one replica is accepted by the other.
    let (_, token) = service_token_again(b, "openeo-batch", &svc_secret);
    assert_eq!(post_csr(a, &token, "").status, 200);
}

/// A client-credentials token for an already registered service account.
fn service_token_again(server: &Server, id: &str, secret: &str) -> (u16, String) {
    let response = server.post(
        "/token",
        &[("Authorization", &basic(id, secret))],
        "application/x-www-form-urlencoded",
        "grant_type=client_credentials&scope=slcs:certificate",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    (
        response.status,
        response.json()["access_token"].as_str().unwrap().to_owned(),
    )
}

/// Unlimited quotas and rates, for load through the certificate endpoint.
const LOAD: &[(&str, &str)] = &[
    ("SLCS_CERTIFICATE_QUOTA_PER_TOKEN", "1000000"),
    ("SLCS_CERTIFICATE_QUOTA_PER_SUBJECT_PER_HOUR", "1000000"),
    ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
    ("SLCS_SERVER_RATE_PER_CLIENT", "0"),
];

/// Requests certificates through both replicas from `threads` threads
/// until `count` are acknowledged or `stop` is set; the serials of the
/// acknowledged ones.
fn issue_through(
    servers: &[&Server],
    token: &str,
    count: usize,
    threads: usize,
    stop: &AtomicBool,
) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let serials = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= count {
                        return;
                    }
                    let server = servers[n % servers.len()];
                    let response = post_csr(server, token, "");
                    assert_eq!(response.status, 200, "{}", response.text());
                    serials.lock().unwrap().push(serial_of(&response.text()));
                }
            });
        }
    });
    serials.into_inner().unwrap()
}

/// 10 000 certificates issued through both replicas: every serial unique,
/// every one in the issuance log as issued.
#[test]
fn ten_thousand_certificates_through_two_replicas_have_unique_serials_all_logged() {
    let Some(admin_url) = pg_admin_url() else {
        return;
    };
    let deployment = Deployment::start(&admin_url, LOAD);
    let (_, token) = service_token(&deployment.a, "openeo-batch");
    let serials = issue_through(
        &[&deployment.a, &deployment.b],
        &token,
        10_000,
        8,
        &AtomicBool::new(false),
    );
    assert_eq!(serials.len(), 10_000);
    let unique: BTreeSet<&String> = serials.iter().collect();
    assert_eq!(unique.len(), 10_000, "serials collided");
    // Each replica's own prefix: both issued, and nothing else did.
    let by_prefix = |prefix: &str| serials.iter().filter(|s| s.starts_with(prefix)).count();
    assert_eq!(by_prefix("11") + by_prefix("12"), 10_000);
    assert!(by_prefix("11") >= 4_000 && by_prefix("12") >= 4_000);
    let logged: BTreeSet<String> = psql(
        &deployment.url,
        "SELECT upper(encode(serial, 'hex')) FROM issuance \
         WHERE convert_from(record, 'UTF8')::jsonb ->> 'state' = 'issued'",
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(logged.len(), 10_000);
    for serial in &serials {
        assert!(logged.contains(serial), "{serial} is not in the log");
    }
}

/// One replica killed (SIGKILL) while both serve certificates: the other
/// keeps serving, and every certificate either replica acknowledged is in
/// the log as issued.
#[test]
fn a_replica_killed_under_load_loses_nothing_and_the_other_serves_on() {
    let Some(admin_url) = pg_admin_url() else {
        return;
    };
    let Deployment {
        url,
        a,
        b,
        work: _work,
        ..
    } = Deployment::start(&admin_url, LOAD);
    let (_, token) = service_token(&a, "openeo-batch");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let a = Arc::new(Mutex::new(Some(a)));
    std::thread::scope(|scope| {
        // Load on A: until A dies, each acknowledged serial is kept.
        for _ in 0..4 {
            let (a, acknowledged, stop, token) = (&a, &acknowledged, &stop, &token);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(response) = a
                        .lock()
                        .unwrap()
                        .as_ref()
                        .map(|server| (server.addr, server.ca_pem()))
                    else {
                        return;
                    };
                    let (addr, ca) = response;
                    let Some(pem) = certificate_from(addr, &ca, token) else {
                        return;
                    };
                    acknowledged.lock().unwrap().push(serial_of(&pem));
                }
            });
        }
        // Load on B throughout.
        for _ in 0..2 {
            let (b, acknowledged, stop, token) = (&b, &acknowledged, &stop, &token);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let response = post_csr(b, token, "");
                    assert_eq!(response.status, 200, "{}", response.text());
                    acknowledged
                        .lock()
                        .unwrap()
                        .push(serial_of(&response.text()));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(3));
        let mut server = a.lock().unwrap().take().unwrap();
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let before_kill = acknowledged.lock().unwrap().len();
        // B goes on.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        let after = acknowledged.lock().unwrap().len();
        assert!(after > before_kill, "B served nothing after A died");
        drop(server);
    });
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "only {} certificates",
        acknowledged.len()
    );
    let logged: BTreeSet<String> = psql(
        &url,
        "SELECT upper(encode(serial, 'hex')) FROM issuance \
         WHERE convert_from(record, 'UTF8')::jsonb ->> 'state' = 'issued'",
    )
    .lines()
    .map(str::to_owned)
    .collect();
    for serial in &acknowledged {
        assert!(logged.contains(serial), "acknowledged {serial} was lost");
    }
    // What A had in flight when it died is an intent, never a certificate
    // that left without its record.
    let issued_without_certificate = psql(
        &url,
        "SELECT count(*) FROM issuance WHERE convert_from(record, 'UTF8')::jsonb ->> 'state' = 'issued' \
         AND convert_from(record, 'UTF8')::jsonb -> 'certificate' = 'null'::jsonb",
    );
    assert_eq!(issued_without_certificate.trim(), "0");
    assert_eq!(b.get("/readyz").status, 200);
}

/// One certificate request to the server at `addr`; `None` once it cannot
/// be reached or answers anything but a certificate (it was killed).
fn certificate_from(addr: std::net::SocketAddr, ca: &str, token: &str) -> Option<String> {
    let raw = crate::server::certificate_request(token);
    let stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let connection = crate::client_connection(ca, &[]);
    let mut tls = rustls::StreamOwned::new(connection, stream);
    std::io::Write::write_all(&mut tls, raw.as_bytes()).ok()?;
    let mut bytes = Vec::new();
    if std::io::Read::read_to_end(&mut tls, &mut bytes).is_err() && bytes.is_empty() {
        return None;
    }
    let response = crate::parse_response(&bytes);
    (response.status == 200).then(|| response.text())
}

/// A throw-away cluster of this test's own (it is stopped and started).
struct OwnCluster {
    dir: PathBuf,
    url: String,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        // Under /tmp itself: as root the cluster runs as `postgres`, which
        // must be able to reach its directory.
        let dir = std::env::temp_dir().join(format!("slcs-pg-{}", rand_tag()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let mut cluster = OwnCluster {
            dir,
            url: String::new(),
        };
        cluster.url = cluster.script(&["start", &port]).trim().to_owned();
        cluster
    }

    /// `scripts/pg-throwaway <action> <dir> [args]`; its standard output.
    fn script(&self, args: &[&str]) -> String {
        let (action, rest) = args.split_first().unwrap();
        let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-throwaway"))
            .arg(action)
            .arg(&self.dir)
            .args(rest)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg-throwaway {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn pg_ctl(&self, action: &str) {
        self.script(&[action]);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-throwaway"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL stopped for a while under two replicas: writes (tokens,
/// certificates) fail with 503 and issue nothing; reads that need fresh
/// revocation state (introspection, the certificate endpoint's checks)
/// fail closed with 503 rather than answer from stale state; the process
/// stays up (`/livez` 200, `/readyz` 503). Once the database is back both
/// replicas serve again without a restart, over TLS to PostgreSQL.
#[test]
fn a_database_outage_fails_closed_and_the_replicas_recover_by_themselves() {
    if pg_admin_url().is_none() {
        return;
    }
    let cluster = OwnCluster::start();
    let database = fresh_database(&cluster.url);
    // The replicas reach the database over TLS, verifying its certificate.
    let tls_url = format!(
        "{database}?sslmode=verify-full&sslrootcert={}",
        cluster.dir.join("ca.pem").display()
    );
    let deployment = Deployment::start_on(
        &tls_url,
        &[
            ("SLCS_STORE_ACQUIRE_TIMEOUT_MS", "500"),
            ("SLCS_STORE_MIN_CONNECTIONS", "0"),
        ],
    );
    let ssl = psql(
        &database,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE a.application_name = 'slcs' AND s.ssl",
    );
    assert_ne!(ssl.trim(), "0", "the replicas' connections use TLS");
    let (a, b) = (&deployment.a, &deployment.b);
    let (secret, token) = service_token(a, "openeo-batch");
    assert_eq!(post_csr(b, &token, "").status, 200);

    cluster.pg_ctl("stop");
    for server in [a, b] {
        let certificate = post_csr(server, &token, "");
        assert_eq!(certificate.status, 503, "{}", certificate.text());
        assert_eq!(certificate.json()["error"], "temporarily_unavailable");
        assert!(certificate.header("retry-after").is_some());
        let minted = server.post(
            "/token",
            &[("Authorization", &basic("openeo-batch", &secret))],
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&scope=slcs:certificate",
        );
        assert_eq!(minted.status, 503, "{}", minted.text());
        let introspected = server.post(
            "/introspect",
            &[("Authorization", &basic("openeo-batch", &secret))],
            "application/x-www-form-urlencoded",
            &format!("token={}", form_encode(&token)),
        );
        assert_eq!(introspected.status, 503, "{}", introspected.text());
        assert_eq!(server.get("/livez").status, 200);
        assert_eq!(server.get("/readyz").status, 503);
    }
    std::thread::sleep(Duration::from_secs(2));
    cluster.pg_ctl("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    for server in [a, b] {
        loop {
            let response = post_csr(server, &token, "");
            if response.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no recovery: {}",
                response.text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(server.get("/readyz").status, 200);
    }
    // The processes never stopped.
    let mut deployment = deployment;
    assert!(deployment.a.child.try_wait().unwrap().is_none());
    assert!(deployment.b.child.try_wait().unwrap().is_none());
    // Nothing was issued while the database was away: the log holds the
    // three certificates acknowledged around the outage.
    let issued = psql(&database, "SELECT count(*) FROM issuance");
    assert_eq!(issued.trim(), "3");
}

/// `slcs audit verify` against `server`: the report.
fn audit_verify(server: &Server) -> serde_json::Value {
    let url = format!("https://localhost:{}", server.addr.port());
    let output = run_slcs(
        &[
            "--data-dir",
            server.data_dir.to_str().unwrap(),
            "audit",
            "verify",
            "--server",
            &url,
            "--json",
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `slcs store <args>` on `data` with `env`; stderr.
fn store_verb(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["--data-dir", data.to_str().unwrap(), "store"];
    all.extend_from_slice(args);
    let output = run_slcs(&all, env);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "slcs store {args:?}: {stderr}");
    stderr
}

/// An export's records (header and trailer aside), as a set of lines.
fn records_of(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| {
            !line.starts_with("{\"kind\":\"header\"")
                && !line.starts_with("{\"kind\":\"trailer\"")
                && !line.starts_with("{\"kind\":\"signing_keys\"")
        })
        .map(str::to_owned)
        .collect()
}

/// A sled deployment moved to PostgreSQL and back: the same clients,
/// users, approvals and certificates are there (asserted record by record
/// and by using them: Alice signs in without being asked to consent again,
/// the portal's refresh token still works, certificates keep their
/// status), and the audit chain verifies after each move.
#[test]
fn a_sled_deployment_moves_to_postgres_and_back_without_losing_anything() {
    let Some(admin_url) = pg_admin_url() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    let secret = register_portal(&server);
    crate::people::alice(&server);
    let mut browser = Browser::new(&server);
    let tokens = crate::people::offline_tokens(&server, &secret, &mut browser);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let refresh_token = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let (svc_secret, token) = service_token(&server, "openeo-batch");
    let kept = serial_of(&post_csr(&server, &token, "").text());
    let revoked = serial_of(&post_csr(&server, &token, "").text());
    let answer = server.send(
        "POST",
        &format!("/admin/certificates/{revoked}/revoke"),
        &[("Authorization", &admin(&server))],
        Some(("application/json", r#"{"reason":"key compromise"}"#)),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let before = audit_verify(&server);
    assert_eq!(before["intact"], true);
    assert!(server.terminate().success());

    // sled → PostgreSQL.
    let from_sled = work.path().join("from-sled.jsonl");
    let said = store_verb(
        &data,
        &["export", "--output", from_sled.to_str().unwrap()],
        &[],
    );
    assert!(said.contains("exported"), "{said}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&from_sled).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "an export is as secret as the store");
    let url = fresh_database(&admin_url);
    let pg = postgres_env(&url, &[]);
    let said = store_verb(
        &data,
        &["import", from_sled.to_str().unwrap()],
        &as_refs(&pg),
    );
    assert!(said.contains("imported"), "{said}");
    // A second import finds the store in use and changes nothing.
    let mut all = vec!["--data-dir", data.to_str().unwrap(), "store", "import"];
    all.push(from_sled.to_str().unwrap());
    let again = run_slcs(&all, &as_refs(&pg));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let on_pg = Server::start(&data, &as_refs(&pg));
    assert_eq!(on_pg.get("/readyz").json()["store"]["backend"], "postgres");
    let check = |server: &Server, what: &str| {
        let report = audit_verify(server);
        assert_eq!(report["intact"], true, "{what}: {report}");
        assert_eq!(report["head"], before["head"], "{what}: the same chain");
        assert_eq!(report["records"], before["records"], "{what}");
        assert_eq!(
            crate::people::certificate_status(server, &kept).0,
            "good",
            "{what}"
        );
        assert_eq!(
            crate::people::certificate_status(server, &revoked).0,
            "revoked",
            "{what}"
        );
        // The service account's secret and its earlier token still work
        // (the signing keys came along from the data directory).
        assert_eq!(post_csr(server, &token, "").status, 200, "{what}");
        service_token_again(server, "openeo-batch", &svc_secret);
    };
    check(&on_pg, "on PostgreSQL");
    // Alice's approval moved: signing in goes straight back to the portal.
    let mut browser = Browser::new(&on_pg);
    let (_, challenge) = pkce();
    let after_sign_in = crate::people::sign_in_for(
        &mut browser,
        &crate::people::authorize_path("openid slcs:certificate", &challenge, ""),
    );
    assert_eq!(after_sign_in.status, 303, "{}", after_sign_in.text());
    assert!(
        after_sign_in
            .header("location")
            .unwrap()
            .starts_with(crate::people::PORTAL_CB)
    );
    let refreshed = refresh(&on_pg, &secret, &refresh_token);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    assert!(on_pg.terminate().success());

    // PostgreSQL → a new sled store: the records are the same again.
    let from_pg = work.path().join("from-pg.jsonl");
    store_verb(
        &data,
        &["export", "--output", from_pg.to_str().unwrap()],
        &as_refs(&pg),
    );
    let sled_again = [("SLCS_STORE_PATH", work.path().join("store-again"))];
    let sled_again: Vec<(&str, &str)> = sled_again
        .iter()
        .map(|(k, v)| (*k, v.to_str().unwrap()))
        .collect();
    store_verb(&data, &["import", from_pg.to_str().unwrap()], &sled_again);
    let round_trip = work.path().join("round-trip.jsonl");
    store_verb(
        &data,
        &["export", "--output", round_trip.to_str().unwrap()],
        &sled_again,
    );
    let (exported, again) = (records_of(&from_pg), records_of(&round_trip));
    let differ: Vec<&String> = exported.symmetric_difference(&again).collect();
    assert!(
        differ.is_empty(),
        "PostgreSQL → sled → export gives other records: {differ:#?}"
    );
    // What sled exported first is all there after the trip (later lines
    // are what the PostgreSQL server did meanwhile: sign-in, refresh, …).
    let original = records_of(&from_sled);
    let now = records_of(&round_trip);
    let lost: Vec<&String> = original
        .iter()
        .filter(|line| {
            // Records that change with use (a session, a refresh token's
            // state, a quota's count, an approval's last use) are compared
            // by kind and key below, not byte for byte.
            let mutable = [
                "\"kind\":\"session\"",
                "\"kind\":\"refresh\"",
                "\"kind\":\"quota\"",
                "\"kind\":\"approval\"",
                "\"kind\":\"user\"",
                "\"kind\":\"client\"",
            ];
            !mutable.iter().any(|kind| line.contains(kind)) && !now.contains(*line)
        })
        .collect();
    assert!(lost.is_empty(), "lost in the moves: {lost:#?}");
    let count = |records: &BTreeSet<String>, kind: &str| {
        records
            .iter()
            .filter(|line| line.contains(&format!("\"kind\":\"{kind}\"")))
            .count()
    };
    for kind in [
        "client",
        "user",
        "approval",
        "current_approval",
        "issuance",
        "audit",
    ] {
        assert!(
            count(&now, kind) >= count(&original, kind) && count(&original, kind) > 0,
            "{kind}: {} before, {} after",
            count(&original, kind),
            count(&now, kind)
        );
    }
    let on_sled = Server::start(&data, &sled_again);
    let report = audit_verify(&on_sled);
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(
        crate::people::certificate_status(&on_sled, &revoked).0,
        "revoked"
    );
    assert_eq!(crate::people::certificate_status(&on_sled, &kept).0, "good");
}

/// nginx with the `scale` profile's configuration (deploy/nginx-scale.conf),
/// its upstreams pointed at `replicas`, listening on a loopback port.
struct Balancer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// `None` (with a note) where nginx or its stream module is missing and
    /// `LB_REQUIRED` is not set.
    fn start(replicas: &[&Server]) -> Option<Balancer> {
        let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
        let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists());
        let Some(nginx) = nginx else {
            assert!(
                std::env::var("LB_REQUIRED").as_deref() != Ok("1"),
                "LB_REQUIRED=1 but nginx is not installed (apt-get install nginx libnginx-mod-stream)"
            );
            eprintln!("note: nginx not installed; skipping the load-balancer test");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/nginx-scale.conf"
        ))
        .unwrap();
        // The shipped file, with only what differs here changed: where the
        // replicas are, where nginx listens, and that it runs in the
        // foreground as this user.
        let mut config = String::new();
        if module.exists() {
            config.push_str(&format!("load_module {};\n", module.display()));
        }
        config.push_str(&format!(
            "daemon off;\nmaster_process off;\npid {0}/nginx.pid;\nerror_log {0}/error.log;\n",
            dir.path().display()
        ));
        let mut upstreams = replicas.iter();
        for line in shipped.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("server slcs-") {
                let replica = upstreams.next().unwrap();
                let rest = trimmed
                    .split_once(' ')
                    .unwrap()
                    .1
                    .split_once(' ')
                    .unwrap()
                    .1;
                config.push_str(&format!("        server {} {rest}\n", replica.addr));
            } else if trimmed.starts_with("listen 8443;") {
                config.push_str(&format!("        listen 127.0.0.1:{port};\n"));
            } else {
                config.push_str(line);
                config.push('\n');
            }
        }
        assert!(
            upstreams.next().is_none(),
            "the shipped file names two replicas"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(nginx)
            .args(["-e", &dir.path().join("error.log").to_string_lossy()])
            .args([
                "-p",
                &dir.path().to_string_lossy(),
                "-c",
                &path.to_string_lossy(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Balancer {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Certificates slcs counted as issued, from a replica's `/metrics`.
fn issued_by(server: &Server) -> f64 {
    server
        .get("/metrics")
        .text()
        .lines()
        .filter(|line| line.starts_with("slcs_certificates_issued_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `scale` profile's TCP balancer (the shipped nginx configuration) in
/// front of two replicas: requests through it reach both; a client
/// certificate reaches slcs through it (TLS passthrough, so RFC 8705
/// tls_client_auth works behind the balancer); with one replica killed the
/// balancer keeps serving from the other.
#[test]
fn the_scale_profiles_tcp_balancer_spreads_requests_and_keeps_mutual_tls_end_to_end() {
    use rustls_pki_types::pem::PemObject as _;
    let Some(admin_url) = pg_admin_url() else {
        return;
    };
    let deployment = Deployment::start(&admin_url, LOAD);
    let Some(balancer) = Balancer::start(&[&deployment.a, &deployment.b]) else {
        return;
    };
    // A `Server` handle on the balancer: the same CA and admin token.
    let mut front = Server {
        child: Command::new("sleep").arg("600").spawn().unwrap(),
        addr: balancer.addr,
        data_dir: deployment.a.data_dir.clone(),
        stderr_path: deployment.a.stderr_path.clone(),
    };
    let (_, token) = service_token(&front, "openeo-batch");
    for _ in 0..20 {
        let issued = post_csr(&front, &token, "");
        assert_eq!(issued.status, 200, "{}", issued.text());
    }
    let (on_a, on_b) = (issued_by(&deployment.a), issued_by(&deployment.b));
    assert_eq!(on_a + on_b, 20.0);
    assert!(
        on_a >= 1.0 && on_b >= 1.0,
        "A {on_a}, B {on_b}: one replica got everything"
    );

    // mutual TLS through the balancer: a certificate slcs issued to the
    // service account authenticates a client registered with its subject.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let issued = front.post(
        "/certificate",
        &[("Authorization", &format!("Bearer {token}"))],
        "application/x-www-form-urlencoded",
        &format!("certificate_request={}", form_encode(&csr)),
    );
    assert_eq!(issued.status, 200, "{}", issued.text());
    let pem = issued.text();
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    // RFC 4514, as a registration names it.
    let subject = slcs::pki::inspect::inspect(pem.as_bytes(), "1.3.6.1.4.1.32473.1")
        .unwrap()
        .subject;
    let mut body = crate::token::service_client_json("mtls-svc");
    body["slcs"] = serde_json::json!({
        "tokenEndpointAuthMethod": "tls_client_auth",
        "tlsClientAuthSubjectDn": subject,
    });
    let (created, _) = crate::token::register(&front, &body);
    assert_eq!(created.status, 201, "{}", created.text());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(front.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = vec![rustls_pki_types::CertificateDer::from(
        block.contents.clone(),
    )];
    let private =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, private)
    .unwrap();
    let form = "grant_type=client_credentials&client_id=mtls-svc";
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let connection = rustls::ClientConnection::new(
        Arc::new(config),
        rustls_pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(
        connection,
        std::net::TcpStream::connect(balancer.addr).unwrap(),
    );
    std::io::Write::write_all(&mut tls, request.as_bytes()).unwrap();
    let answer = crate::read_response(&mut tls);
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Without the certificate, through the same balancer: refused.
    let without = front.post("/token", &[], "application/x-www-form-urlencoded", form);
    assert_eq!(without.status, 401, "{}", without.text());

    // One replica gone: the balancer serves from the other.
    let Deployment { a, b, .. } = deployment;
    drop(a);
    for _ in 0..10 {
        let issued = post_csr(&front, &token, "");
        assert_eq!(issued.status, 200, "{}", issued.text());
    }
    assert_eq!(b.get("/readyz").status, 200);
    let _ = front.child.kill();
}

/// A new database is migrated explicitly (`slcs migrate`, versioned, once)
/// and then bound to the CA that first used it: a replica refuses a
/// database behind its schema, and one with another CA.
#[test]
fn a_database_is_migrated_explicitly_and_bound_to_one_ca() {
    let Some(admin_url) = pg_admin_url() else {
        return;
    };
    let url = fresh_database(&admin_url);
    let env = postgres_env(&url, &[]);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let serve = |data: &Path| {
        let mut command = Command::new(crate::slcs_bin());
        command
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("SLCS_CONFIG");
        for (k, v) in &env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let refused = serve(&data);
    assert_eq!(refused.status.code(), Some(4));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("schema version 0") && said.contains("slcs migrate"),
        "{said}"
    );
    assert_eq!(
        psql(&url, "SELECT to_regclass('issuance') IS NULL"),
        "t\n",
        "nothing created"
    );

    let migrate = || {
        run_slcs(
            &["--data-dir", data.to_str().unwrap(), "migrate"],
            &as_refs(&env),
        )
    };
    let first = migrate();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("from schema version 0 to 2"));
    let again = migrate();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM _sqlx_migrations"
        ),
        "1,2\n"
    );
    let server = Server::start(&data, &as_refs(&env));
    assert_eq!(server.get("/readyz").json()["store"]["schema_version"], 2);
    drop(server);

    // Another deployment (another CA) on the same database: refused.
    let other = work.path().join("other");
    let refused = serve(&other);
    assert_eq!(refused.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("different CA"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
