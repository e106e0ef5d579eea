//! The one integration-test binary: the real `slcs` binary on loopback ports,
//! real TLS, real CSRs made by OpenSSL and rcgen, certificates checked by
//! OpenSSL (and pkilint where installed).

// Tests fail loudly: unwrap, expect, panics and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    unreachable_pub
)]

mod audit;
mod browser;
mod catalogue;
mod certificate;
mod console;
mod delegation;
mod durability;
mod issuance;
mod people;
mod pkilint;
mod refusals;
mod relying_party;
mod replicas;
mod schema;
mod security;
mod server;
mod token;
mod users;
mod web;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use slcs::clock::{Clock, SystemClock};
use slcs::config::{CliOverrides, Config};
use slcs::service::{Opened, StartMode};

/// The binary under test.
pub fn slcs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_slcs")
}

/// Runs `slcs` with arguments and environment; waits.
pub fn run_slcs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(slcs_bin());
    command.args(args).env_remove("SLCS_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run slcs")
}

/// Runs `openssl` with arguments; panics with its stderr if it fails.
pub fn openssl(args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (the CI script installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `openssl` and returns its whole output, success or not.
pub fn openssl_output(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl")
}

/// A configuration for a data directory, as the binary would load it.
pub fn config_for(dir: &Path, env: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> =
        vec![("SLCS_DATA_DIR".into(), dir.to_string_lossy().into_owned())];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    slcs::config::load(None, vars, &CliOverrides::default()).unwrap()
}

/// Opens an engine on a fresh data directory with a CA of `ca_key_type`.
pub fn open_engine(dir: &Path, ca_key_type: &str) -> (Config, Opened) {
    let config = config_for(dir, &[("SLCS_CA_KEY_TYPE", ca_key_type)]);
    let opened = open_blocking(&config);
    (config, opened)
}

/// `service::open` (sled, `slcs init`) from sync or async test code alike:
/// on a thread of its own with a runtime of its own (a sled store does not
/// belong to a runtime).
pub fn open_blocking(config: &Config) -> Opened {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(slcs::service::open(
                        config,
                        &SystemClock,
                        StartMode::Init,
                        false,
                    ))
                    .unwrap()
            })
            .join()
            .unwrap()
    })
}

/// Now, from the system clock.
pub fn now() -> time::OffsetDateTime {
    SystemClock.now()
}

/// A running `slcs serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub stderr_path: PathBuf,
}

impl Server {
    /// Starts `slcs serve` on 127.0.0.1:0 with `data_dir`; waits until it listens.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_on(data_dir, "127.0.0.1:0", env)
    }

    /// Starts `slcs serve` on `listen`.
    pub fn start_on(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> Server {
        let stderr_path = data_dir.with_extension(format!("stderr-{}", rand_tag()));
        Self::start_logging_to(data_dir, listen, env, stderr_path)
    }

    /// [`start_on`](Self::start_on), with the server's standard error
    /// written to `stderr_path`.
    pub fn start_logging_to(
        data_dir: &Path,
        listen: &str,
        env: &[(&str, &str)],
        stderr_path: PathBuf,
    ) -> Server {
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = Command::new(slcs_bin());
        command
            .args([
                "--data-dir",
                data_dir.to_str().unwrap(),
                "serve",
                "--listen",
                listen,
            ])
            .env_remove("SLCS_CONFIG")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                panic!(
                    "slcs exited before listening: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            };
            let line = line.unwrap();
            if let Some(addr) = line.strip_prefix("slcs listening on https://") {
                break addr.parse().unwrap();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            stderr_path,
        }
    }

    /// The CA certificate the server uses.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("ca").join("ca.pem")).unwrap()
    }

    /// A GET over a fresh TLS connection.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
    }

    /// A POST with a body and extra headers over a fresh TLS connection.
    pub fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: &str,
    ) -> HttpResponse {
        self.send("POST", path, headers, Some((content_type, body)))
    }

    /// Any method, with optional body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> HttpResponse {
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        match body {
            Some((content_type, body)) => {
                raw.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ));
            }
            None => raw.push_str("Content-Length: 0\r\n\r\n"),
        }
        self.request(&raw)
    }

    /// The admin token written on first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Sends raw request bytes over a fresh TLS connection; reads to EOF.
    pub fn request(&self, raw: &str) -> HttpResponse {
        let mut tls = self.connect();
        tls.write_all(raw.as_bytes()).unwrap();
        tls.flush().unwrap();
        read_response(&mut tls)
    }

    /// A TLS connection trusting only this server's CA.
    pub fn connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        tls_connect(self.addr, &self.ca_pem())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(40));
        std::mem::forget(self);
        status
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name with kill(1).
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for a child, killing it (and failing) after `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads one response from a connection the server will close.
pub fn read_response(stream: &mut impl Read) -> HttpResponse {
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // rustls reports a missing close_notify as UnexpectedEof; the bytes
        // read so far are what we need.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("read failed: {e}"),
    }
    parse_response(&raw)
}

/// Parses a complete HTTP/1.1 response (Content-Length bodies).
pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(length) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(length);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// A blocking rustls client connection trusting `ca_pem` only.
pub fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(client_connection(ca_pem, &[]), tcp)
}

/// A rustls client for `localhost` trusting `ca_pem` only, offering the
/// ALPN protocols `alpn`.
pub fn client_connection(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConnection {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    rustls::ClientConnection::new(Arc::new(config), name).unwrap()
}

/// A TCP connection to `addr` from the loopback address `source` (any of
/// 127.0.0.0/8), so that one test can be several client addresses.
pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(stream)
    })
}

/// Sends `raw` over TLS from `source` and reads the answer.
pub fn request_from(
    source: std::net::IpAddr,
    server: &Server,
    raw: &str,
) -> std::io::Result<HttpResponse> {
    let tcp = connect_from(source, server.addr)?;
    let mut tls = rustls::StreamOwned::new(client_connection(&server.ca_pem(), &[]), tcp);
    tls.write_all(raw.as_bytes())?;
    tls.flush()?;
    let mut bytes = Vec::new();
    match tls.read_to_end(&mut bytes) {
        Ok(_) => {}
        // The server closed without close_notify after answering.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !bytes.is_empty() => {}
        Err(e) => return Err(e),
    }
    // Only a whole answer counts (a server killed mid-answer sent none).
    let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    };
    let response = parse_response(&bytes);
    let declared = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if bytes.len() - split - 4 < declared {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(response)
}

/// A short random hex tag.
pub fn rand_tag() -> String {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

/// `application/x-www-form-urlencoded` encoding of one value (the CLI's
/// encoder: every byte but RFC 3986's unreserved characters escaped).
pub fn form_encode(value: &str) -> String {
    slcs::admin_client::percent_encode(value)
}

/// The project's `.venv` Python if it can import `modules` (comma
/// separated); `None` to skip when it cannot, unless `required_env` is set
/// (`.ci/run` sets it), in which case the test fails instead.
pub fn venv_python(modules: &str, required_env: &str) -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let usable = python.is_file()
        && Command::new(&python)
            .args(["-c", &format!("import {modules}")])
            .status()
            .is_ok_and(|s| s.success());
    if usable {
        return Some(python);
    }
    assert!(
        std::env::var(required_env).is_err(),
        "{modules} required ({required_env}) but not importable from .venv"
    );
    println!("{modules} not installed in .venv; skipping (run .ci/run to install it)");
    None
}

/// A server whose issuer is the URL clients reach: the port is chosen
/// first, then `oauth.issuer` names it. Returns the server and the issuer.
pub fn start_with_reachable_issuer(data_dir: &Path) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("https://localhost:{port}");
    let server = Server::start_on(
        data_dir,
        &format!("127.0.0.1:{port}"),
        &[("SLCS_OAUTH_ISSUER", &issuer)],
    );
    (server, issuer)
}
