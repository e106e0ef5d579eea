//! `slcs serve` as a process: start-up on an empty data directory, the
//! public endpoints, locking, limits and timeouts, shutdown, bad
//! configuration and damaged stores.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::{HttpResponse, Server, openssl, parse_response, run_slcs};

/// Short deadlines so the timeout tests finish quickly.
const FAST: &[(&str, &str)] = &[
    ("SLCS_SERVER_HEADER_READ_TIMEOUT_SECS", "1"),
    ("SLCS_SERVER_TLS_HANDSHAKE_TIMEOUT_SECS", "1"),
    ("SLCS_SERVER_REQUEST_TIMEOUT_SECS", "2"),
    ("SLCS_SERVER_IDLE_TIMEOUT_SECS", "3"),
];

#[test]
fn first_start_serves_health_and_ca_and_a_restart_reuses_the_ca() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);

    let health = server.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    let json = health.json();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["store"]["ok"], true);
    assert_eq!(json["store"]["backend"], "sled");
    assert_eq!(json["store"]["schema_version"], 3);
    assert_eq!(health.header("cache-control"), Some("no-store"));
    assert_eq!(health.header("x-content-type-options"), Some("nosniff"));
    assert!(health.header("x-request-id").is_some());

    let ca = server.get("/ca.pem");
    assert_eq!(ca.status, 200);
    assert_eq!(ca.header("content-type"), Some("application/x-pem-file"));
    assert_eq!(ca.text(), server.ca_pem());
    let ca_path = work.path().join("served-ca.pem");
    std::fs::write(&ca_path, ca.text()).unwrap();
    let text = openssl(&["x509", "-in", ca_path.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");

    // Private material is private.
    use std::os::unix::fs::PermissionsExt as _;
    for secret in ["ca/ca-key.pem", "tls/server-key.pem", "admin-token"] {
        let mode = std::fs::metadata(data.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }

    let first_ca = server.ca_pem();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    let again = Server::start(&data, &[]);
    assert_eq!(
        again.get("/ca.pem").text(),
        first_ca,
        "restart must reuse the CA"
    );
    assert_eq!(again.get("/healthz").status, 200);
}

#[test]
fn a_second_instance_on_the_same_data_directory_fails_locked() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let _server = Server::start(&data, &[]);
    let output = run_slcs(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("locked"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn trustroots_use_the_openssl_hash_name_and_the_ca_file() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let response = server.get("/trustroots/");
    assert_eq!(response.status, 200);
    let body = response.text();
    let ca_path = server.data_dir.join("ca").join("ca.pem");
    let hash = openssl(&["x509", "-in", ca_path.to_str().unwrap(), "-noout", "-hash"]);
    let hash = hash.trim();
    let mut files = std::collections::HashMap::new();
    for line in body.lines() {
        let (name, content) = line.split_once('=').unwrap();
        let content = base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap();
        files.insert(name.to_owned(), String::from_utf8(content).unwrap());
    }
    assert_eq!(
        files.get(&format!("{hash}.0")),
        Some(&server.ca_pem()),
        "{body}"
    );
    let policy = &files[&format!("{hash}.signing_policy")];
    assert!(policy.contains("access_id_CA"), "{policy}");
    assert!(policy.contains("'\"/O=slcs development/*\"'"), "{policy}");
}

#[test]
fn errors_are_json_and_carry_the_security_headers() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let missing = server.get("/no/such/path");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");
    assert_eq!(
        missing.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(
        missing.header("strict-transport-security"),
        Some("max-age=31536000")
    );

    let wrong_method =
        server.request("DELETE /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["error"], "invalid_request");
}

/// ATTACKS ROB-01: a body above the limit gets 413 before it is read.
#[test]
fn rob_01_oversized_bodies_get_413() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let response = server.request(
        "POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_request");
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("cache-control"), Some("no-store"));

    // A head above the header limit is refused too (431).
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let response = server.request(&huge);
    assert_eq!(response.status, 431);
}

/// ATTACKS ROB-02: a client that never finishes its headers is cut off at
/// the header-read deadline while other clients are served.
#[test]
fn slowloris_headers_are_cut_off() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), FAST);
    let mut slow = server.connect();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    slow.flush().unwrap();

    // Meanwhile an honest client is served.
    assert_eq!(server.get("/healthz").status, 200);

    let started = Instant::now();
    // Keep trickling one byte at a time, as Slowloris does.
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(b"a").and_then(|()| slow.flush()).is_err() {
            closed = true;
            break;
        }
        slow.sock
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Ok(_) | Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the slow connection was never closed");
}

/// A TCP client that never starts the TLS handshake is dropped at the
/// handshake deadline.
#[test]
fn silent_tcp_clients_are_dropped_at_the_handshake_deadline() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), FAST);
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 16];
    let result = tcp.read(&mut buf);
    assert!(
        matches!(result, Ok(0))
            || matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected the server to close the connection, got {result:?}"
    );
}

/// Idle keep-alive connections are closed at the idle deadline.
#[test]
fn idle_keep_alive_connections_are_closed() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), FAST);
    let mut tls = server.connect();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    tls.flush().unwrap();
    let response = read_one_response(&mut tls);
    assert_eq!(response.status, 200);
    // The connection stays open for a next request, then idles out.
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 16];
    let result = tls.read(&mut buf);
    assert!(
        matches!(result, Ok(0))
            || matches!(&result, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut),
        "expected the idle connection to be closed, got {result:?}"
    );
}

/// Reads exactly one Content-Length response from a keep-alive connection.
fn read_one_response(stream: &mut impl Read) -> HttpResponse {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return parse_response(&raw);
            }
        }
    }
}

/// SIGTERM: stop accepting, drain, flush the store, exit 0.
#[test]
fn sigterm_shuts_down_gracefully() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    assert_eq!(server.get("/healthz").status, 200);
    let addr = server.addr;
    let stderr_path = server.stderr_path.clone();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(stderr_path).unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("store flushed"), "{log}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("slcs.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap();
    let output = run_slcs(&["--config", file.to_str().unwrap(), "serve"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lisen"), "{stderr}");

    let output = run_slcs(&["config", "validate", file.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lisen"));

    std::fs::write(
        &file,
        "data_dir = \"/tmp/x\"\n[server]\nlisten = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let output = run_slcs(&["config", "validate", file.to_str().unwrap()], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid"));

    let output = run_slcs(
        &[
            "--data-dir",
            work.path().join("d").to_str().unwrap(),
            "serve",
        ],
        &[("SLCS_SERVER_LISTN", "127.0.0.1:0")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SLCS_SERVER_LISTN"));
}

/// ATTACKS ROB-07: a damaged or missing store is refused with a clear
/// message and exit code 4 — never a panic, never a silent empty store.
#[test]
fn rob_07_damaged_or_missing_stores_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    assert_eq!(server.get("/healthz").status, 200);
    assert!(server.terminate().success());
    let store = data.join("store");
    let backup = work.path().join("store-backup");
    copy_dir(&store, &backup);

    let serve = || {
        run_slcs(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        )
    };
    let check = |label: &str, output: std::process::Output| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{label}: {stderr}");
        assert!(stderr.contains("store"), "{label}: {stderr}");
        assert!(!stderr.contains("panicked"), "{label}: {stderr}");
    };

    // Garbage over the database file.
    let db = store.join("db");
    let length = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0xA5u8; length.max(4096)]).unwrap();
    check("garbage db", serve());

    // An empty database file: sled would happily start afresh.
    std::fs::write(&db, b"").unwrap();
    check("empty db", serve());

    // No store at all.
    std::fs::remove_dir_all(&store).unwrap();
    let output = serve();
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing"));
    check("missing store", output);

    // Restored from the backup, it starts again.
    copy_dir(&backup, &store);
    let server = Server::start(&data, &[]);
    assert_eq!(server.get("/healthz").status, 200);
}

/// A CA key readable by others is refused (like ssh refuses such keys).
#[test]
fn a_world_readable_ca_key_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let output = run_slcs(&["--data-dir", data.to_str().unwrap(), "init"], &[]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("DEVELOPMENT CA"), "{stdout}");
    let key = data.join("ca").join("ca-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run_slcs(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));

    // `init` on an initialised directory creates nothing and overwrites nothing.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::read(&key).unwrap();
    let output = run_slcs(&["--data-dir", data.to_str().unwrap(), "init"], &[]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing created"));
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // Half a pair is refused, not completed.
    std::fs::remove_file(data.join("ca").join("ca.pem")).unwrap();
    let output = run_slcs(&["--data-dir", data.to_str().unwrap(), "init"], &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("incomplete CA"));
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn init_honours_the_ca_key_type() {
    for (kind, expected) in [("ecdsa-p384", "secp384r1"), ("rsa-3072", "3072 bit")] {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        let output = run_slcs(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "init",
                "--ca-key-type",
                kind,
            ],
            &[],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = openssl(&[
            "x509",
            "-in",
            data.join("ca/ca.pem").to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        assert!(text.contains(expected), "{kind}: {text}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An operator's own CA (made here by OpenSSL): `init` refuses to sign a
/// localhost TLS certificate with it, creates the store once TLS material is
/// provided, and the engine's start-up canary and issuance work under it.
#[tokio::test]
async fn a_provided_production_ca_is_used_and_never_signs_localhost_tls() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(data.join("ca")).unwrap();
    std::fs::create_dir_all(data.join("tls")).unwrap();
    let path = |p: &str| data.join(p).to_str().unwrap().to_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &path("ca/ca-key.pem"),
        "-out",
        &path("ca/ca.pem"),
        "-subj",
        "/O=Example Org/CN=Example Production CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        data.join("ca/ca-key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    let output = run_slcs(&["--data-dir", &path(""), "init"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("provide server.tls_cert"), "{stderr}");
    assert!(!data.join("tls/server.pem").exists());

    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &path("tls/server-key.pem"),
        "-out",
        &path("tls/server.pem"),
        "-subj",
        "/CN=localhost",
        "-days",
        "30",
        "-addext",
        "subjectAltName=DNS:localhost",
    ]);
    std::fs::set_permissions(
        data.join("tls/server-key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let output = run_slcs(&["--data-dir", &path(""), "init"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("issuance store (empty)"), "{stdout}");
    assert!(!stdout.contains("DEVELOPMENT CA"), "{stdout}");

    let (config, opened) = crate::open_engine(&data, "ecdsa-p256");
    let issued = opened
        .engine
        .issue(
            &crate::issuance::rcgen_csr(crate::issuance::KeyKind::P256),
            &crate::issuance::person_request("Alice", crate::now()),
            crate::now(),
        )
        .await
        .unwrap();
    let cert = work.path().join("cert.pem");
    std::fs::write(&cert, &issued.pem).unwrap();
    let verified = openssl(&[
        "verify",
        "-CAfile",
        config.ca.cert.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");
    assert!(issued.subject.contains("O=slcs development"));
}

/// Regression: `slcs bench` without `--data-dir` used the default
/// `./slcs-data` for its CA and store (the scratch directory only held the
/// lock), so a benchmark could write into a real deployment's store.
#[test]
fn bench_without_a_data_dir_works_in_a_scratch_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(crate::slcs_bin())
        .args([
            "bench",
            "--count",
            "3",
            "--log",
            "durable",
            "--ca-key-type",
            "ecdsa-p384",
            "--json",
        ])
        .current_dir(cwd.path())
        .env_remove("SLCS_CONFIG")
        .env_remove("SLCS_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["issued"], 3);
    assert!(json["fsyncs"].as_u64().unwrap() > 0);
    assert!(
        !cwd.path().join("slcs-data").exists(),
        "bench wrote into ./slcs-data"
    );
}

/// A client-credentials token request for `id`, form and Basic header.
fn token_request(id: &str, secret: &str, extra_headers: &str) -> String {
    let body = "grant_type=client_credentials&scope=slcs%3Acertificate";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Basic {basic}\r\n{extra_headers}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A certificate request for a fresh P-256 key with `token`.
/// A raw `POST /certificate` with a fresh P-256 CSR, `Connection: close`.
pub fn certificate_request(token: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let csr = format!("certificate_request={}", crate::form_encode(&pem));
    format!(
        "POST /certificate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{csr}",
        csr.len()
    )
}

fn loopback(last: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
}

/// ATTACKS ROB-02, ROB-05, RS-07: while 2 000 idle connections from twenty
/// addresses hold (more than the server takes at once), a slow client
/// trickles its headers, and another address floods the certificate
/// endpoint with bad tokens (claiming another address in
/// `X-Forwarded-For`), a client on its own address is still served: it
/// gets a token and a certificate. The flooder gets 429 with
/// `Retry-After`, keyed on its real address; a client over its own budget
/// gets 429 while another client is served; and a flood of wrong secrets
/// in a client's name does not lock that client out.
#[test]
fn rob_02_rob_05_rs_07_floods_leave_legitimate_clients_served() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[
            // Low rates, so that a slow, loaded machine cannot refill a
            // budget between two requests.
            ("SLCS_SERVER_RATE_PER_ADDRESS", "5"),
            ("SLCS_SERVER_RATE_PER_CLIENT", "1"),
            ("SLCS_SERVER_MAX_CONNECTIONS", "512"),
            ("SLCS_SERVER_MAX_CONNECTIONS_PER_ADDRESS", "100"),
            ("SLCS_SERVER_TLS_HANDSHAKE_TIMEOUT_SECS", "2"),
            ("SLCS_SERVER_HEADER_READ_TIMEOUT_SECS", "2"),
        ],
    );
    let (created, svc) = crate::token::register(&server, &crate::token::service_client_json("svc"));
    assert_eq!(created.status, 201);
    let svc = svc.unwrap();
    let (created, other) =
        crate::token::register(&server, &crate::token::service_client_json("other"));
    assert_eq!(created.status, 201);
    let other = other.unwrap();

    // 2 000 idle connections (never a TLS byte), 100 from each of twenty
    // addresses, held by a background thread until the end.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = server.addr;
    let holder = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for i in 0..2000u32 {
                let source = loopback(100 + u8::try_from(i % 20).unwrap());
                if let Ok(tcp) = crate::connect_from(source, addr) {
                    held.push(tcp);
                }
            }
            let opened = held.len();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            opened
        })
    };
    // A Slowloris client on the side.
    let mut slow = server.connect();
    slow.write_all(b"POST /token HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();

    // The flood of bad tokens, pretending to come from elsewhere.
    let flood = "POST /certificate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer not.a.token\r\nX-Forwarded-For: 127.0.0.1\r\nForwarded: for=127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b";
    let mut statuses = std::collections::BTreeMap::new();
    let mut retry_after = None;
    for _ in 0..120 {
        let Ok(answer) = crate::request_from(loopback(40), &server, flood) else {
            continue;
        };
        *statuses.entry(answer.status).or_insert(0) += 1;
        if answer.status == 429 {
            retry_after = answer.header("retry-after").map(str::to_owned);
        }
    }
    // Refused as bad requests while the address has budget, then limited.
    assert!(
        statuses.keys().all(|s| [400, 401, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) > 20,
        "{statuses:?}"
    );
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));

    // The legitimate client, on its own address: served, though it may
    // wait for a connection slot while the idle ones time out.
    let legit = loopback(1);
    let started = Instant::now();
    let token = loop {
        match crate::request_from(legit, &server, &token_request("svc", &svc, "")) {
            Ok(answer) if answer.status == 200 => {
                break answer.json()["access_token"].as_str().unwrap().to_owned();
            }
            Ok(answer) => panic!("{} {}", answer.status, answer.text()),
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("never served: {e}"),
        }
    };
    let certificate = crate::request_from(legit, &server, &certificate_request(&token)).unwrap();
    assert_eq!(certificate.status, 200, "{}", certificate.text());

    // A flood of wrong secrets in `other`'s name, from elsewhere, does not
    // lock `other` out.
    for _ in 0..30 {
        let _ = crate::request_from(loopback(50), &server, &token_request("other", "wrong", ""));
    }
    let answer = crate::request_from(legit, &server, &token_request("other", &other, "")).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());

    // `svc` over its own budget (1 a second, bursts of 2: a request would
    // have to take a second for the budget to refill): 429, while `other`
    // is still served from the same address.
    let mut limited = None;
    for _ in 0..40 {
        let answer = crate::request_from(legit, &server, &token_request("svc", &svc, "")).unwrap();
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200);
    }
    let limited = limited.expect("svc was never limited");
    assert_eq!(limited.json()["error"], "too_many_requests");
    assert!(limited.header("retry-after").is_some());
    let answer = crate::request_from(legit, &server, &token_request("other", &other, "")).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = holder.join().unwrap();
    assert!(opened >= 1000, "idle connections opened: {opened}");
    drop(slow);
    println!("idle connections held: {opened}; flood statuses: {statuses:?}");
}

/// ATTACKS ROB-05 (load): with `server.max_in_flight` requests being
/// handled, one more is shed at once with 503 and `Retry-After`, and the
/// service answers again once they finish.
#[test]
fn rob_05_a_request_over_capacity_is_shed_with_503() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[("SLCS_SERVER_MAX_IN_FLIGHT", "2")],
    );
    // Two requests whose bodies arrive slowly hold both places.
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut tls = server.connect();
        tls.write_all(
            b"POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\ngrant_type=",
        )
        .unwrap();
        tls.flush().unwrap();
        holding.push(tls);
    }
    // Once both are being handled (however long a loaded machine takes to
    // get there), one more request is shed.
    let started = Instant::now();
    let shed = loop {
        let answer = server.get("/healthz");
        if answer.status != 200 || started.elapsed() > Duration::from_secs(20) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(shed.status, 503, "{}", shed.text());
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(shed.json()["error"], "temporarily_unavailable");
    // The held requests finish; the service answers again.
    for mut tls in holding {
        tls.write_all(b"client_credentials&scope=openid12345678")
            .unwrap();
        tls.flush().unwrap();
        let answer = crate::read_response(&mut tls);
        assert_eq!(answer.status, 401, "{}", answer.text());
    }
    assert_eq!(server.get("/healthz").status, 200);
}

/// ATTACKS ROB-02: 5 000 idle connections (TCP open, never a TLS byte),
/// 100 from each of fifty addresses and all held open by the server at
/// once (its handshake deadline is longer than the test), do not stop a
/// client on another address from getting a token and a certificate. The
/// connections are still open afterwards: the client was served beside
/// them, not after they were dropped.
#[test]
fn rob_02_five_thousand_idle_connections_do_not_stop_service() {
    const HELD: u32 = 5000;
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[
            ("SLCS_SERVER_MAX_CONNECTIONS", "6000"),
            ("SLCS_SERVER_MAX_CONNECTIONS_PER_ADDRESS", "100"),
            ("SLCS_SERVER_TLS_HANDSHAKE_TIMEOUT_SECS", "300"),
            ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
        ],
    );
    let (created, secret) =
        crate::token::register(&server, &crate::token::service_client_json("svc"));
    assert_eq!(created.status, 201);
    let secret = secret.unwrap();

    // Five threads open a thousand connections each, ten addresses apiece.
    let addr = server.addr;
    let openers: Vec<_> = (0..5u8)
        .map(|thread| {
            std::thread::spawn(move || {
                (0..HELD / 5)
                    .filter_map(|i| {
                        let last = 100 + thread * 10 + u8::try_from(i % 10).unwrap();
                        crate::connect_from(loopback(last), addr).ok()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut held: Vec<TcpStream> = openers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(held.len(), HELD as usize, "connections opened");

    // The client, on its own address, is served while they are held.
    let legit = loopback(1);
    let token = crate::request_from(legit, &server, &token_request("svc", &secret, "")).unwrap();
    assert_eq!(token.status, 200, "{}", token.text());
    let token = token.json()["access_token"].as_str().unwrap().to_owned();
    let certificate = crate::request_from(legit, &server, &certificate_request(&token)).unwrap();
    assert_eq!(certificate.status, 200, "{}", certificate.text());

    // Every held connection is still open: a read finds no data and no
    // end of stream.
    let mut still_open = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                still_open += 1;
            }
            _ => {}
        }
    }
    assert_eq!(still_open, HELD, "held connections closed by the server");
    println!("idle connections held while serving: {still_open}");
}
