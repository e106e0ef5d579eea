//! A small HTTPS client for the `slcs` verbs that talk to a running server
//! (`client …`, `user …`, `token …`, `login`, `cert …`, `keys rotate`,
//! `audit`): one request per connection over rustls (the aws-lc-rs
//! provider, as everywhere), trusting the slcs CA by default.
//!
//! Credentials never come from the command line (they would show in `ps`
//! and shell history): the admin token is read from the data directory, a
//! client secret from `SLCS_CLIENT_SECRET` or a file, a user's password
//! from a file or standard input, a refresh token from the credentials
//! file `slcs login` wrote.

use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

/// Percent-encodes every byte but RFC 3986's unreserved characters: right
/// for a form value (`application/x-www-form-urlencoded`), a path segment,
/// and the parts of HTTP Basic credentials (RFC 6749 §2.3.1).
pub fn percent_encode(value: &str) -> String {
    crate::http::form::encode(value)
}

/// Why a request to the server failed before an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not `https://host[:port]`.
    #[error("server URL {0:?} must be https://host[:port]")]
    BadUrl(String),
    /// The CA file cannot be read.
    #[error("cannot read the CA certificate {path}: {message}")]
    Ca {
        /// File.
        path: String,
        /// Why.
        message: String,
    },
    /// Connecting, TLS or HTTP failed.
    #[error("cannot reach {server}: {message}")]
    Connect {
        /// Server URL.
        server: String,
        /// Why.
        message: String,
    },
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// Response headers (`Location`, `Set-Cookie` for the load harness's
    /// browser steps).
    pub headers: hyper::HeaderMap,
}

impl Answer {
    /// The body as JSON, or as a JSON string if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned())
        })
    }
}

/// A client for one slcs server.
#[derive(Clone)]
pub struct AdminClient {
    server: String,
    host: String,
    port: u16,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("server", &self.server)
            .finish()
    }
}

impl AdminClient {
    /// A client for `server` (`https://host[:port]`) trusting the CA
    /// certificates in `ca_file`.
    pub fn new(server: &str, ca_file: &Path) -> Result<Self, ClientError> {
        let rest = server
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::BadUrl(server.to_owned()))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.is_empty() {
            return Err(ClientError::BadUrl(server.to_owned()));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host.to_owned(),
                port.parse()
                    .map_err(|_| ClientError::BadUrl(server.to_owned()))?,
            ),
            None => (authority.to_owned(), 443),
        };
        let ca_error = |message: String| ClientError::Ca {
            path: ca_file.display().to_string(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in
            CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_error(e.to_string()))?
        {
            roots
                .add(certificate.map_err(|e| ca_error(e.to_string()))?)
                .map_err(|e| ca_error(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ca_error(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            server: format!("https://{authority}"),
            host,
            port,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// The server's URL in its normal form, `https://host[:port]` (no
    /// trailing slash): what a credentials file records, and compares with.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one request on a fresh connection; `authorization` is the whole
    /// header value.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, ClientError> {
        self.open()
            .await?
            .request(method, path, authorization, body)
            .await
    }

    /// Opens a keep-alive connection for several requests in turn.
    pub async fn open(&self) -> Result<Connection, ClientError> {
        let fail = |message: String| ClientError::Connect {
            server: self.server.clone(),
            message,
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Requests are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone()).map_err(|e| fail(e.to_string()))?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            server: self.server.clone(),
            host: self.host.clone(),
        })
    }
}

/// One keep-alive HTTP/1.1 connection to the server.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    server: String,
    host: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, ClientError> {
        self.request_with(method, path, authorization, None, body)
            .await
    }

    /// [`Self::request`] with a `Cookie` header, for pages.
    pub async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        cookie: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, ClientError> {
        let fail = |message: String| ClientError::Connect {
            server: self.server.clone(),
            message,
        };
        self.sender.ready().await.map_err(|e| fail(e.to_string()))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        if let Some(value) = cookie {
            request = request.header(hyper::header::COOKIE, value);
        }
        let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
        if !bytes.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| fail(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(Answer {
            status,
            body,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("svc-1.a_b~c"), "svc-1.a_b~c");
        assert_eq!(percent_encode("a b+c/d:é"), "a%20b%2Bc%2Fd%3A%C3%A9");
        assert_eq!(percent_encode("../x"), "..%2Fx");
    }
}
