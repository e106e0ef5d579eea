//! The HTTPS listener: rustls over hyper's HTTP/1.1 connection driver, with
//! limits that hold against slow and idle clients.
//!
//! `axum::serve` installs no hyper `Timer`, so hyper's header-read timeout is
//! inert there and a Slowloris client can hold a connection forever
//! (tokio-rs/axum#2741; ATTACKS ROB-02). Here every connection has:
//! - a TLS handshake deadline;
//! - hyper's header-read timeout, with a Tokio timer installed;
//! - an idle watchdog that closes connections with no traffic (keep-alive
//!   connections waiting for a next request, stalled bodies);
//! - a cap on concurrent connections (a semaphore taken before `accept`),
//!   and one per client address, so that one address holding connections
//!   open cannot take every slot from everyone else.
//!
//! The request deadline itself is the router's `TimeoutLayer`. HTTP/2 is not
//! offered (ALPN `http/1.1` only): slcs has no use for it, and it removes a
//! whole family of flood attacks (ATTACKS ROB-03).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::ServerConfig as Settings;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate chain cannot be read.
    #[error("TLS certificate {path}: {message}")]
    Certificate {
        /// File.
        path: String,
        /// Why.
        message: String,
    },
    /// The key cannot be read.
    #[error("TLS private key {path}: {message}")]
    Key {
        /// File.
        path: String,
        /// Why.
        message: String,
    },
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("TLS client-certificate verifier: {0}")]
    ClientVerifier(String),
}

/// The client certificate chain a peer presented in the TLS handshake
/// (leaf first), already verified against the client-certificate trust
/// anchors. Inserted into every request of that connection; absent when the
/// client sent none (client certificates are optional: RFC 8705 §2 mutual
/// TLS is one client authentication method among several).
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Builds the rustls server configuration: aws-lc-rs provider (the one
/// crypto backend of slcs), TLS 1.2 and 1.3 with rustls' safe defaults,
/// ALPN `http/1.1`. Client certificates are requested but optional, and
/// verified against `client_roots` (the slcs CA): a certificate that does
/// not chain is a failed handshake, never an anonymous request.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect())
        .map_err(|e| TlsSetupError::Certificate {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Certificate {
            path: cert.display().to_string(),
            message: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for root in client_roots {
        roots.add(root.clone())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsSetupError::ClientVerifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish within the grace period, and
/// returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<ServerConfig>,
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let per_address = Arc::new(AddressSlots::new(settings.max_connections_per_address));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(settings.max_header_bytes)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(address_slot) = per_address.take(peer.ip()) else {
            // Closed at once: this address holds its share already.
            tracing::debug!(%peer, "connection refused: too many from this address");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            acceptor: acceptor.clone(),
            app: app.clone(),
            http: Arc::clone(&http),
            handshake_timeout: settings.tls_handshake_timeout,
            idle_timeout: settings.idle_timeout,
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            connection.run(tcp, peer, watcher).await;
            drop(address_slot);
            drop(permit);
        });
    }

    drop(listener);
    tracing::info!("no longer accepting connections; finishing in-flight requests");
    match tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            grace_secs = settings.shutdown_grace.as_secs(),
            "grace period over; closing remaining connections"
        ),
    }
}

/// Connections open per client address.
struct AddressSlots {
    limit: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl AddressSlots {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn open(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more connection from `address`, or `None` when it
    /// holds its limit.
    fn take(self: &Arc<Self>, address: std::net::IpAddr) -> Option<AddressSlot> {
        let mut open = self.open();
        let count = open.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: Arc::clone(self),
            address,
        })
    }
}

/// One connection's place in its address's count, given back on drop.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    address: std::net::IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

struct Connection {
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
}

impl Connection {
    async fn run(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let tls =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
        let peer_certificates = tls
            .get_ref()
            .1
            .peer_certificates()
            .filter(|chain| !chain.is_empty())
            .map(|chain| {
                PeerCertificates(Arc::new(
                    chain.iter().map(|c| c.clone().into_owned()).collect(),
                ))
            });
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(IdleIo {
            inner: tls,
            activity: Arc::clone(&activity),
        });
        let app = self.app;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(certificates) = &peer_certificates {
                request.extensions_mut().insert(certificates.clone());
            }
            app.clone().oneshot(request)
        });
        let connection = watcher.watch(self.http.serve_connection(io, service));
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            }
            () = activity.idle_for(self.idle_timeout) => {
                tracing::debug!(%peer, "idle timeout; closing connection");
            }
        }
    }
}

/// When a connection last moved bytes.
struct Activity {
    start: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    /// Completes once no bytes moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// An I/O stream that records activity for the idle watchdog.
struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
