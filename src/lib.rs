//! # slcs — an OAuth 2.0-protected Short-Lived Credential Service
//!
//! slcs issues short-lived X.509 end-entity certificates to holders of OAuth
//! access tokens, recording in each certificate the delegation chain that led
//! to it (who delegated to whom, with which scope, when).
//!
//! The tree is the architecture; calls flow down, never up:
//!
//! ```text
//! cli, service      process start-up: config, data directory, signals
//!   http            the edge: TLS listener, limits, routes, the one error mapping
//!     certificate   the certificate endpoint: token + CSR → certificate; revocation
//!     oauth         clients, client authentication, signing keys, access tokens
//!     pki           certificate profile, CSR checks, DN, provenance, issuance engine
//!     store         the Store trait and its sled backend
//! relying_party     for relying parties: mTLS verifier, reading a peer certificate
//! config, clock     validated configuration; the only wall-clock read
//! ```
//!
//! Relying parties that only need to read the delegation chain use
//! [`relying_party::read_peer`] (on a peer certificate the TLS stack
//! verified), [`pki::inspect::provenance_of`] or
//! [`pki::provenance::DelegationProvenance::from_der`].

pub mod admin_client;
pub mod certificate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delegation;
pub mod http;
pub mod load;
pub mod oauth;
pub mod observability;
pub mod pki;
pub mod relying_party;
pub mod secure_fs;
pub mod service;
pub mod store;
pub mod users;
