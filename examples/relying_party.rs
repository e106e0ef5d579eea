//! A relying party that accepts slcs certificates: a stand-in for an
//! OPeNDAP or WPS server.
//!
//! It trusts the slcs CA, and only the slcs CA, for client certificates,
//! refuses the TLS handshake of any client without such a certificate, and
//! answers `GET /whoami` with what the certificate says: its subject, serial
//! and expiry, on whose behalf it acts, and the delegation chain.
//!
//! ```sh
//! cargo run --example relying_party -- \
//!     --ca slcs-data/ca/ca.pem --cert rp.pem --key rp-key.pem \
//!     --listen 127.0.0.1:9443
//! curl --cacert rp-ca.pem --cert job.pem --key job-key.pem https://localhost:9443/whoami
//! ```
//!
//! The pieces are in `slcs::relying_party` (`server_config`, `serve`,
//! `whoami_router`, `read_peer`); `docs/relying-parties.md` explains them and
//! shows the same with nginx, Apache httpd and Python.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use slcs::pki::provenance::oid_is_valid_for_x509;
use slcs::relying_party::{self, DEVELOPMENT_PROVENANCE_OID};

/// An mTLS server that accepts slcs certificates and reports who presented them.
#[derive(Debug, Parser)]
struct Args {
    /// The slcs CA certificate (PEM, from `GET /ca.pem`): the only trusted root for clients.
    #[arg(long)]
    ca: PathBuf,
    /// This server's own certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// This server's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The OID of the slcs provenance extension (the deployment's profile says which).
    #[arg(long, default_value = DEVELOPMENT_PROVENANCE_OID)]
    provenance_oid: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let provenance_oid = oid_is_valid_for_x509(&args.provenance_oid)?;
    let tls = relying_party::server_config(
        &std::fs::read(&args.ca)?,
        &std::fs::read(&args.cert)?,
        &std::fs::read(&args.key)?,
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    #[allow(clippy::print_stdout, reason = "the address is this program's output")]
    {
        println!("listening on {}", listener.local_addr()?);
    }
    let app = relying_party::whoami_router(provenance_oid);
    relying_party::serve(listener, tls, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
