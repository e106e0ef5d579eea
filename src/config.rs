//! Configuration: one TOML file plus `SLCS_*` environment overrides, turned by
//! [`load`] into a [`Config`] whose every field is already checked.
//!
//! Precedence, lowest first: built-in defaults, the file, `SLCS_*` variables,
//! command-line flags. Every key is listed in [`KEYS`] with its default and
//! meaning; `docs/operations.md` documents the same list (a test keeps the two
//! in step). Unknown keys, in the file or as `SLCS_*` variables, are errors
//! that name the key: a typo must never silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::pki::keys::CaKeyType;
use crate::pki::profile::{Profile, ProfileError};

/// The environment variable naming the configuration file; the only `SLCS_*`
/// variable that is not a configuration key.
pub const CONFIG_ENV: &str = "SLCS_CONFIG";

/// The environment variable `slcs token client-credentials` reads a client
/// secret from (never from the command line); not a configuration key.
pub const CLIENT_SECRET_ENV: &str = "SLCS_CLIENT_SECRET";

/// The data directory used when none is configured.
pub const DEFAULT_DATA_DIR: &str = "./slcs-data";

/// The kind of value a key holds, used to parse environment overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A string (also paths and addresses).
    Str,
    /// A non-negative integer.
    Int,
}

/// One configuration key: its dotted path in the file, kind, default and meaning.
#[derive(Debug)]
pub struct KeyDoc {
    /// Dotted path, e.g. `server.listen`.
    pub path: &'static str,
    /// How an environment override is parsed.
    pub kind: KeyKind,
    /// The default, as written in the docs.
    pub default: &'static str,
    /// What the key does.
    pub doc: &'static str,
}

impl KeyDoc {
    /// The environment variable that overrides this key: `SLCS_` + the path in
    /// upper case with dots as underscores (`server.listen` → `SLCS_SERVER_LISTEN`).
    pub fn env_name(&self) -> String {
        format!("SLCS_{}", self.path.to_ascii_uppercase().replace('.', "_"))
    }
}

/// Every configuration key. Keep in step with the `File*` structs below and
/// with `docs/operations.md` (both checked by tests).
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        path: "data_dir",
        kind: KeyKind::Str,
        default: DEFAULT_DATA_DIR,
        doc: "Directory holding the CA, TLS material, admin token and the sled store.",
    },
    KeyDoc {
        path: "server.listen",
        kind: KeyKind::Str,
        default: "127.0.0.1:8443",
        doc: "Address and port of the HTTPS listener.",
    },
    KeyDoc {
        path: "server.tls_cert",
        kind: KeyKind::Str,
        default: "<data_dir>/tls/server.pem",
        doc: "PEM certificate chain the server presents.",
    },
    KeyDoc {
        path: "server.tls_key",
        kind: KeyKind::Str,
        default: "<data_dir>/tls/server-key.pem",
        doc: "PEM private key of the server certificate (mode 0600).",
    },
    KeyDoc {
        path: "server.max_body_bytes",
        kind: KeyKind::Int,
        default: "131072",
        doc: "Largest request body accepted; larger bodies get 413 before they are buffered.",
    },
    KeyDoc {
        path: "server.max_header_bytes",
        kind: KeyKind::Int,
        default: "16384",
        doc: "Largest request head (request line and headers); larger heads get 431.",
    },
    KeyDoc {
        path: "server.tls_handshake_timeout_secs",
        kind: KeyKind::Int,
        default: "10",
        doc: "A TLS handshake not finished within this time closes the connection.",
    },
    KeyDoc {
        path: "server.header_read_timeout_secs",
        kind: KeyKind::Int,
        default: "10",
        doc: "Request headers not received in full within this time close the connection (Slowloris).",
    },
    KeyDoc {
        path: "server.request_timeout_secs",
        kind: KeyKind::Int,
        default: "30",
        doc: "A request (body read and handling) not answered within this time gets 408.",
    },
    KeyDoc {
        path: "server.idle_timeout_secs",
        kind: KeyKind::Int,
        default: "60",
        doc: "A connection with no traffic for this long is closed. Must exceed the request timeout.",
    },
    KeyDoc {
        path: "server.max_connections",
        kind: KeyKind::Int,
        default: "1024",
        doc: "Concurrent connections; further clients wait in the listen backlog.",
    },
    KeyDoc {
        path: "server.max_connections_per_address",
        kind: KeyKind::Int,
        default: "256",
        doc: "Concurrent connections from one client address; more are closed at once, so one address cannot take every slot. Behind a reverse proxy, raise it to server.max_connections.",
    },
    KeyDoc {
        path: "server.max_in_flight",
        kind: KeyKind::Int,
        default: "512",
        doc: "Requests handled at once; one more is shed at once with 503 and Retry-After, before latency collapses.",
    },
    KeyDoc {
        path: "server.rate_per_address",
        kind: KeyKind::Int,
        default: "100",
        doc: "Requests per second one client address may make to the token, certificate, device, sign-in, introspection and revocation endpoints (bursts of twice that); more get 429 and Retry-After. 0: no limit.",
    },
    KeyDoc {
        path: "server.rate_per_client",
        kind: KeyKind::Int,
        default: "100",
        doc: "Requests per second one client (by its HTTP Basic client id) may make to the token, introspection and revocation endpoints (bursts of twice that); more get 429. 0: no limit.",
    },
    KeyDoc {
        path: "server.shutdown_grace_secs",
        kind: KeyKind::Int,
        default: "30",
        doc: "On SIGTERM/SIGINT, how long in-flight requests may take to finish.",
    },
    KeyDoc {
        path: "ca.key_type",
        kind: KeyKind::Str,
        default: "ecdsa-p256",
        doc: "Key type of a CA created by `slcs init`: ecdsa-p256, ecdsa-p384 or rsa-3072.",
    },
    KeyDoc {
        path: "ca.cert",
        kind: KeyKind::Str,
        default: "<data_dir>/ca/ca.pem",
        doc: "PEM certificate of the issuing CA.",
    },
    KeyDoc {
        path: "ca.key",
        kind: KeyKind::Str,
        default: "<data_dir>/ca/ca-key.pem",
        doc: "PEM (PKCS#8) private key of the issuing CA (mode 0600).",
    },
    KeyDoc {
        path: "ca.profile",
        kind: KeyKind::Str,
        default: "built-in certs/profile.toml",
        doc: "Certificate profile file; the built-in default is the development profile.",
    },
    KeyDoc {
        path: "ca.serial_prefix",
        kind: KeyKind::Int,
        default: "1",
        doc: "First octet of every serial (1..=127); give each replica its own.",
    },
    KeyDoc {
        path: "oauth.issuer",
        kind: KeyKind::Str,
        default: "https://localhost:8443",
        doc: "Issuer identifier of the authorization server (`iss`): an https URL without query or fragment, the base of every endpoint URL in discovery.",
    },
    KeyDoc {
        path: "oauth.certificate_audience",
        kind: KeyKind::Str,
        default: "<issuer>/certificate",
        doc: "Audience (`aud`) of access tokens for the certificate endpoint; the resource server accepts only tokens carrying it.",
    },
    KeyDoc {
        path: "oauth.access_token_lifetime_secs",
        kind: KeyKind::Int,
        default: "900",
        doc: "Lifetime of access tokens (60 to 86400 seconds).",
    },
    KeyDoc {
        path: "oauth.signing_alg",
        kind: KeyKind::Str,
        default: "ES256",
        doc: "Algorithm of the token signing keys: ES256, EdDSA or RS256. Each key is used with exactly one algorithm.",
    },
    KeyDoc {
        path: "oauth.key_rotation_days",
        kind: KeyKind::Int,
        default: "30",
        doc: "Age at which the current signing key is replaced by the pre-published next one.",
    },
    KeyDoc {
        path: "oauth.shared_keys_refresh_secs",
        kind: KeyKind::Int,
        default: "30",
        doc: "With the postgres backend: how often each replica re-reads the signing keys the replicas share, so a rotation on one reaches all within this time (1 to 3600).",
    },
    KeyDoc {
        path: "oauth.refresh_token_lifetime_secs",
        kind: KeyKind::Int,
        default: "2592000",
        doc: "Absolute lifetime of a grant's refresh tokens (3600 to 31536000 seconds): rotation never extends it, and it never outlives the approval.",
    },
    KeyDoc {
        path: "oauth.refresh_reuse_grace_secs",
        kind: KeyKind::Int,
        default: "0",
        doc: "Seconds (0 to 60) during which a just-rotated refresh token may be presented again, if its successor was never used, to recover a lost response; 0 turns the grace off, so any reuse revokes the grant.",
    },
    KeyDoc {
        path: "oauth.device_code_lifetime_secs",
        kind: KeyKind::Int,
        default: "600",
        doc: "Lifetime of a device authorization (RFC 8628), 60 to 1800 seconds.",
    },
    KeyDoc {
        path: "oauth.device_poll_interval_secs",
        kind: KeyKind::Int,
        default: "5",
        doc: "Minimum seconds between a device's polls (1 to 60); faster polls get slow_down.",
    },
    KeyDoc {
        path: "oauth.registration_group",
        kind: KeyKind::Str,
        default: "service-providers",
        doc: "Group a person must belong to (and not be a guest) to register clients with an access token for the registration API, as EBRAINS asks of its service providers; empty: only the admin token and service accounts granted `slcs:clients` register.",
    },
    KeyDoc {
        path: "users.argon2_memory_kib",
        kind: KeyKind::Int,
        default: "19456",
        doc: "argon2id memory cost of new password hashes, in KiB (8 to 4194304).",
    },
    KeyDoc {
        path: "users.argon2_iterations",
        kind: KeyKind::Int,
        default: "2",
        doc: "argon2id passes (1 to 64).",
    },
    KeyDoc {
        path: "users.argon2_parallelism",
        kind: KeyKind::Int,
        default: "1",
        doc: "argon2id lanes (1 to 16).",
    },
    KeyDoc {
        path: "users.session_lifetime_secs",
        kind: KeyKind::Int,
        default: "28800",
        doc: "Absolute lifetime of a browser session after sign-in (300 to 604800 seconds).",
    },
    KeyDoc {
        path: "users.session_idle_secs",
        kind: KeyKind::Int,
        default: "1800",
        doc: "A browser session unused for this long ends (60 to 86400 seconds, at most the lifetime).",
    },
    KeyDoc {
        path: "users.login_free_failures_per_account",
        kind: KeyKind::Int,
        default: "5",
        doc: "Failed sign-ins for one username before exponential back-off starts (1 to 100).",
    },
    KeyDoc {
        path: "users.login_free_failures_per_address",
        kind: KeyKind::Int,
        default: "20",
        doc: "Failed sign-ins from one client address before exponential back-off starts (1 to 10000).",
    },
    KeyDoc {
        path: "delegation.approval_lifetime_days",
        kind: KeyKind::Int,
        default: "90",
        doc: "How long a person's stored approval of a client lasts (1 to 730 days).",
    },
    KeyDoc {
        path: "delegation.max_depth",
        kind: KeyKind::Int,
        default: "3",
        doc: "Longest delegation chain below the approved client that an approval allows (0 to 8, and at most the certificate profile's max_chain_steps minus 2, since a certificate names the root client, every hop and the presenter).",
    },
    KeyDoc {
        path: "certificate.quota_per_token",
        kind: KeyKind::Int,
        default: "100",
        doc: "Most certificates one access token may obtain (1 to 1000000); the next request is answered 429.",
    },
    KeyDoc {
        path: "certificate.quota_per_subject_per_hour",
        kind: KeyKind::Int,
        default: "1000",
        doc: "Most certificates issued for one subject (user or service account) per clock hour, over all its tokens (1 to 1000000).",
    },
    KeyDoc {
        path: "store.backend",
        kind: KeyKind::Str,
        default: "sled",
        doc: "Storage backend: `sled` (embedded, one process) or `postgres` (several replicas sharing one PostgreSQL database).",
    },
    KeyDoc {
        path: "store.path",
        kind: KeyKind::Str,
        default: "<data_dir>/store",
        doc: "Directory of the sled database.",
    },
    KeyDoc {
        path: "store.cache_capacity_mb",
        kind: KeyKind::Int,
        default: "64",
        doc: "sled page cache size in MiB; the largest part of the server's memory.",
    },
    KeyDoc {
        path: "store.url",
        kind: KeyKind::Str,
        default: "(none)",
        doc: "PostgreSQL connection URL, required with `backend = \"postgres\"`: `postgres://slcs@db.example.org:5432/slcs?sslmode=verify-full&sslrootcert=/etc/slcs/db-ca.pem`. Keep the password out of it: use `store.password_file`.",
    },
    KeyDoc {
        path: "store.password_file",
        kind: KeyKind::Str,
        default: "(none)",
        doc: "File holding the PostgreSQL password (one line; readable by slcs only).",
    },
    KeyDoc {
        path: "store.max_connections",
        kind: KeyKind::Int,
        default: "16",
        doc: "Most PostgreSQL connections one replica opens (1 to 1000); replicas times this must stay below the server's max_connections.",
    },
    KeyDoc {
        path: "store.min_connections",
        kind: KeyKind::Int,
        default: "2",
        doc: "PostgreSQL connections kept open while idle (0 to store.max_connections).",
    },
    KeyDoc {
        path: "store.acquire_timeout_ms",
        kind: KeyKind::Int,
        default: "2000",
        doc: "How long a request waits for a PostgreSQL connection before it is answered 503 (100 to 60000).",
    },
    KeyDoc {
        path: "store.statement_timeout_ms",
        kind: KeyKind::Int,
        default: "5000",
        doc: "Longest one PostgreSQL statement may run before the server cancels it and the request is answered 503 (100 to 600000).",
    },
    KeyDoc {
        path: "log.format",
        kind: KeyKind::Str,
        default: "text",
        doc: "Log format on standard error: text or json.",
    },
    KeyDoc {
        path: "log.level",
        kind: KeyKind::Str,
        default: "info",
        doc: "Log filter, in tracing-subscriber EnvFilter syntax (e.g. `info,slcs=debug`).",
    },
];

/// What can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("invalid configuration{}: {message}", location(.path))]
    Parse {
        /// The file, if the error came from one.
        path: Option<PathBuf>,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// An `SLCS_*` variable names no configuration key.
    #[error(
        "unknown environment variable {0}: no configuration key has this name (see docs/operations.md)"
    )]
    UnknownEnv(String),
    /// An `SLCS_*` variable's value does not fit its key.
    #[error("environment variable {name}: {message}")]
    BadEnv {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-formed but not allowed.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The certificate profile is invalid.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

fn location(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

/// Values given on the command line; they win over file and environment.
#[derive(Clone, Debug, Default)]
pub struct CliOverrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--ca-key-type` (for `init`).
    pub ca_key_type: Option<String>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The HTTPS listener.
    pub server: ServerConfig,
    /// The issuing CA.
    pub ca: CaConfig,
    /// The store.
    pub store: StoreConfig,
    /// Logging.
    pub log: LogConfig,
    /// The authorization server.
    pub oauth: OAuthConfig,
    /// The certificate endpoint.
    pub certificate: CertificateConfig,
    /// Local accounts and browser sessions.
    pub users: UsersConfig,
    /// Stored approvals.
    pub delegation: DelegationConfig,
}

/// Validated `[users]` settings.
#[derive(Clone, Copy, Debug)]
pub struct UsersConfig {
    /// argon2id cost of new password hashes.
    pub password: crate::users::PasswordParams,
    /// Absolute session lifetime.
    pub session_lifetime: Duration,
    /// A session unused for this long ends.
    pub session_idle: Duration,
    /// Failures per username before back-off.
    pub login_free_failures_per_account: u32,
    /// Failures per client address before back-off.
    pub login_free_failures_per_address: u32,
}

/// Validated `[delegation]` settings.
#[derive(Clone, Copy, Debug)]
pub struct DelegationConfig {
    /// Lifetime of a stored approval.
    pub approval_lifetime: Duration,
    /// Longest delegation chain below the approved client.
    pub max_depth: u32,
}

/// Validated `[certificate]` settings.
#[derive(Clone, Copy, Debug)]
pub struct CertificateConfig {
    /// Most certificates per access token.
    pub quota_per_token: u64,
    /// Most certificates per subject per clock hour.
    pub quota_per_subject_per_hour: u64,
}

/// Validated `[oauth]` settings.
#[derive(Clone, Debug)]
pub struct OAuthConfig {
    /// `iss`, without a trailing slash.
    pub issuer: String,
    /// `aud` of certificate-endpoint tokens.
    pub certificate_audience: String,
    /// Access-token lifetime.
    pub access_token_lifetime: Duration,
    /// Signing algorithm name (checked by the key module).
    pub signing_alg: String,
    /// Signing-key rotation period.
    pub key_rotation: Duration,
    /// How often replicas re-read shared signing keys.
    pub shared_keys_refresh: Duration,
    /// Absolute lifetime of a grant's refresh tokens.
    pub refresh_token_lifetime: Duration,
    /// Grace for presenting a just-rotated refresh token again (0: none).
    pub refresh_reuse_grace: Duration,
    /// Lifetime of a device authorization.
    pub device_code_lifetime: Duration,
    /// Minimum seconds between device polls.
    pub device_poll_interval: Duration,
    /// The group a person needs to register clients through the API
    /// (empty: no person may).
    pub registration_group: String,
}

/// Validated `[server]` settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Server certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Server private key (PEM).
    pub tls_key: PathBuf,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Request head limit.
    pub max_header_bytes: usize,
    /// TLS handshake deadline.
    pub tls_handshake_timeout: Duration,
    /// Deadline for receiving a request head.
    pub header_read_timeout: Duration,
    /// Deadline for a whole request.
    pub request_timeout: Duration,
    /// Idle connection deadline.
    pub idle_timeout: Duration,
    /// Concurrent connection cap.
    pub max_connections: usize,
    /// Concurrent connections from one address.
    pub max_connections_per_address: usize,
    /// Requests in flight before load is shed.
    pub max_in_flight: usize,
    /// Per-address rate on the sensitive endpoints, per second (0: none).
    pub rate_per_address: u32,
    /// Per-client rate on the client-authenticated endpoints (0: none).
    pub rate_per_client: u32,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
}

/// Validated `[ca]` settings.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// Key type used when `init` creates a CA.
    pub key_type: CaKeyType,
    /// CA certificate path.
    pub cert: PathBuf,
    /// CA key path.
    pub key: PathBuf,
    /// The certificate profile.
    pub profile: Profile,
    /// Where the profile came from, for messages.
    pub profile_source: String,
    /// Serial prefix octet.
    pub serial_prefix: u8,
}

/// Validated `[store]` settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Which backend, and how to reach it.
    pub backend: StoreBackend,
    /// sled directory.
    pub path: PathBuf,
    /// sled cache size in bytes.
    pub cache_capacity_bytes: u64,
}

/// The storage backend.
#[derive(Clone, Debug)]
pub enum StoreBackend {
    /// The embedded sled database at `StoreConfig::path`.
    Sled,
    /// A PostgreSQL database shared by several replicas.
    Postgres(PostgresConfig),
}

/// Validated PostgreSQL settings.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// Connection URL (without its password, which is in `password_file`).
    pub url: String,
    /// Where the password is.
    pub password_file: Option<PathBuf>,
    /// Pool size.
    pub max_connections: u32,
    /// Idle connections kept.
    pub min_connections: u32,
    /// Wait for a connection.
    pub acquire_timeout: Duration,
    /// Server-side statement timeout.
    pub statement_timeout: Duration,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated `[log]` settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// EnvFilter directive.
    pub level: String,
}

impl Config {
    /// Where the admin token lives.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    /// Where the data-directory lock file lives.
    pub fn lock_path(&self) -> PathBuf {
        self.data_dir.join("slcs.lock")
    }

    /// Where the token signing keys live.
    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }

    /// Where the client-secret pepper (HMAC key) lives.
    pub fn pepper_path(&self) -> PathBuf {
        self.data_dir.join("secret-pepper")
    }
}

/// Loads the configuration: `file` (if any), then the `SLCS_*` variables in
/// `env`, then `cli`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    cli: &CliOverrides,
) -> Result<Config, ConfigError> {
    let mut table = match file {
        Some(path) => read_table(path)?,
        None => toml::Table::new(),
    };
    apply_env(&mut table, env)?;
    apply_cli(&mut table, cli);
    let parsed =
        FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
            path: file.map(Path::to_path_buf),
            message: e.to_string(),
        })?;
    parsed.validate()
}

/// Checks a configuration file on its own (no environment), for
/// `slcs config validate`.
pub fn validate_file(path: &Path) -> Result<Config, ConfigError> {
    load(Some(path), std::iter::empty(), &CliOverrides::default())
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: Some(path.to_path_buf()),
        message: e.to_string(),
    })
}

fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        if !name.starts_with("SLCS_")
            || name == CONFIG_ENV
            || name == CLIENT_SECRET_ENV
            || is_service_link(&name)
        {
            continue;
        }
        let key = KEYS
            .iter()
            .find(|k| k.env_name() == name)
            .ok_or_else(|| ConfigError::UnknownEnv(name.clone()))?;
        let value = match key.kind {
            KeyKind::Str => toml::Value::String(value),
            KeyKind::Int => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| ConfigError::BadEnv {
                    name: name.clone(),
                    message: format!("`{}` expects an integer, got {value:?}", key.path),
                })?,
        };
        set_path(table, key.path, value);
    }
    Ok(())
}

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT*`
/// and `<SERVICE>_PORT*` for every Service, so a Service named `slcs` would
/// otherwise make the pod refuse to start. No configuration key begins with
/// `service` or `port`, so these names can never hide a typo of a real key.
fn is_service_link(name: &str) -> bool {
    name.starts_with("SLCS_SERVICE_") || name == "SLCS_PORT" || name.starts_with("SLCS_PORT_")
}

fn apply_cli(table: &mut toml::Table, cli: &CliOverrides) {
    if let Some(dir) = &cli.data_dir {
        set_path(
            table,
            "data_dir",
            toml::Value::String(dir.to_string_lossy().into_owned()),
        );
    }
    if let Some(listen) = &cli.listen {
        set_path(table, "server.listen", toml::Value::String(listen.clone()));
    }
    if let Some(kind) = &cli.ca_key_type {
        set_path(table, "ca.key_type", toml::Value::String(kind.clone()));
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut current = table;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            // A scalar where a section belongs: replace it, and let the
            // deserializer report the file's mistake if the key is wrong.
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        current = next;
    }
}

// ---------------------------------------------------------------------------
// File format. `deny_unknown_fields` makes every unknown key an error that
// names it; `default` lets every key be omitted.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    server: FileServer,
    ca: FileCa,
    store: FileStore,
    log: FileLog,
    oauth: FileOAuth,
    certificate: FileCertificate,
    users: FileUsers,
    delegation: FileDelegation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileUsers {
    argon2_memory_kib: u64,
    argon2_iterations: u64,
    argon2_parallelism: u64,
    session_lifetime_secs: u64,
    session_idle_secs: u64,
    login_free_failures_per_account: u64,
    login_free_failures_per_address: u64,
}

impl Default for FileUsers {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            session_lifetime_secs: 8 * 3600,
            session_idle_secs: 30 * 60,
            login_free_failures_per_account: 5,
            login_free_failures_per_address: 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileDelegation {
    approval_lifetime_days: u64,
    max_depth: u64,
}

impl Default for FileDelegation {
    fn default() -> Self {
        Self {
            approval_lifetime_days: 90,
            max_depth: 3,
        }
    }
}

impl FileUsers {
    fn validate(self) -> Result<UsersConfig, ConfigError> {
        let small = |key, value, min, max| {
            bounded(key, value, min, max).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        };
        let password = crate::users::PasswordParams {
            memory_kib: small(
                "users.argon2_memory_kib",
                self.argon2_memory_kib,
                8,
                4 << 20,
            )?,
            iterations: small("users.argon2_iterations", self.argon2_iterations, 1, 64)?,
            parallelism: small("users.argon2_parallelism", self.argon2_parallelism, 1, 16)?,
        };
        if password.memory_kib < 8 * password.parallelism {
            return Err(ConfigError::Invalid {
                key: "users.argon2_memory_kib",
                message: "must be at least 8 KiB per lane (RFC 9106 §3.1)".into(),
            });
        }
        let session_lifetime = bounded(
            "users.session_lifetime_secs",
            self.session_lifetime_secs,
            300,
            7 * 86_400,
        )? as u64;
        let session_idle = bounded(
            "users.session_idle_secs",
            self.session_idle_secs,
            60,
            86_400,
        )? as u64;
        if session_idle > session_lifetime {
            return Err(ConfigError::Invalid {
                key: "users.session_idle_secs",
                message: "must not exceed users.session_lifetime_secs".into(),
            });
        }
        Ok(UsersConfig {
            password,
            session_lifetime: Duration::from_secs(session_lifetime),
            session_idle: Duration::from_secs(session_idle),
            login_free_failures_per_account: small(
                "users.login_free_failures_per_account",
                self.login_free_failures_per_account,
                1,
                100,
            )?,
            login_free_failures_per_address: small(
                "users.login_free_failures_per_address",
                self.login_free_failures_per_address,
                1,
                10_000,
            )?,
        })
    }
}

impl FileDelegation {
    fn validate(self) -> Result<DelegationConfig, ConfigError> {
        Ok(DelegationConfig {
            approval_lifetime: Duration::from_secs(
                bounded(
                    "delegation.approval_lifetime_days",
                    self.approval_lifetime_days,
                    1,
                    730,
                )? as u64
                    * 86_400,
            ),
            max_depth: bounded("delegation.max_depth", self.max_depth, 0, 8)? as u32,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileCertificate {
    quota_per_token: u64,
    quota_per_subject_per_hour: u64,
}

impl Default for FileCertificate {
    fn default() -> Self {
        Self {
            quota_per_token: 100,
            quota_per_subject_per_hour: 1000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileOAuth {
    issuer: String,
    certificate_audience: Option<String>,
    access_token_lifetime_secs: u64,
    signing_alg: String,
    key_rotation_days: u64,
    shared_keys_refresh_secs: u64,
    refresh_token_lifetime_secs: u64,
    refresh_reuse_grace_secs: u64,
    device_code_lifetime_secs: u64,
    device_poll_interval_secs: u64,
    registration_group: String,
}

impl Default for FileOAuth {
    fn default() -> Self {
        Self {
            issuer: "https://localhost:8443".into(),
            certificate_audience: None,
            access_token_lifetime_secs: 900,
            signing_alg: "ES256".into(),
            key_rotation_days: 30,
            shared_keys_refresh_secs: 30,
            refresh_token_lifetime_secs: 30 * 86_400,
            refresh_reuse_grace_secs: 0,
            device_code_lifetime_secs: 600,
            device_poll_interval_secs: 5,
            registration_group: "service-providers".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileServer {
    listen: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_body_bytes: u64,
    max_header_bytes: u64,
    tls_handshake_timeout_secs: u64,
    header_read_timeout_secs: u64,
    request_timeout_secs: u64,
    idle_timeout_secs: u64,
    max_connections: u64,
    max_connections_per_address: u64,
    max_in_flight: u64,
    rate_per_address: u64,
    rate_per_client: u64,
    shutdown_grace_secs: u64,
}

impl Default for FileServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 128 * 1024,
            max_header_bytes: 16 * 1024,
            tls_handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 1024,
            max_connections_per_address: 256,
            max_in_flight: 512,
            rate_per_address: 100,
            rate_per_client: 100,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileCa {
    key_type: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    profile: Option<PathBuf>,
    serial_prefix: u64,
}

impl Default for FileCa {
    fn default() -> Self {
        Self {
            key_type: "ecdsa-p256".into(),
            cert: None,
            key: None,
            profile: None,
            serial_prefix: 1,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileStore {
    backend: String,
    path: Option<PathBuf>,
    cache_capacity_mb: u64,
    url: Option<String>,
    password_file: Option<PathBuf>,
    max_connections: u64,
    min_connections: u64,
    acquire_timeout_ms: u64,
    statement_timeout_ms: u64,
}

impl Default for FileStore {
    fn default() -> Self {
        Self {
            backend: "sled".into(),
            path: None,
            cache_capacity_mb: 64,
            url: None,
            password_file: None,
            max_connections: 16,
            min_connections: 2,
            acquire_timeout_ms: 2000,
            statement_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileLog {
    format: String,
    level: String,
}

impl Default for FileLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl FileOAuth {
    fn validate(self) -> Result<OAuthConfig, ConfigError> {
        // RFC 8414 §2: the issuer is an https URL with no query or fragment;
        // RFC 9207 and every `iss` check compare it as an exact string.
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        check_https_url("oauth.issuer", &issuer)?;
        let certificate_audience = self
            .certificate_audience
            .unwrap_or_else(|| format!("{issuer}/certificate"));
        check_https_url("oauth.certificate_audience", &certificate_audience)?;
        let lifetime = self.access_token_lifetime_secs;
        if !(60..=86_400).contains(&lifetime) {
            return Err(ConfigError::Invalid {
                key: "oauth.access_token_lifetime_secs",
                message: format!("must be between 60 and 86400 seconds, got {lifetime}"),
            });
        }
        if !["ES256", "EdDSA", "RS256"].contains(&self.signing_alg.as_str()) {
            return Err(ConfigError::Invalid {
                key: "oauth.signing_alg",
                message: format!("expected ES256, EdDSA or RS256, got {:?}", self.signing_alg),
            });
        }
        if !(1..=365).contains(&self.key_rotation_days) {
            return Err(ConfigError::Invalid {
                key: "oauth.key_rotation_days",
                message: format!("must be between 1 and 365, got {}", self.key_rotation_days),
            });
        }
        Ok(OAuthConfig {
            issuer,
            certificate_audience,
            access_token_lifetime: Duration::from_secs(lifetime),
            signing_alg: self.signing_alg,
            key_rotation: Duration::from_secs(self.key_rotation_days * 86_400),
            shared_keys_refresh: Duration::from_secs(bounded(
                "oauth.shared_keys_refresh_secs",
                self.shared_keys_refresh_secs,
                1,
                3600,
            )? as u64),
            refresh_token_lifetime: Duration::from_secs(bounded(
                "oauth.refresh_token_lifetime_secs",
                self.refresh_token_lifetime_secs,
                3600,
                365 * 86_400,
            )? as u64),
            refresh_reuse_grace: Duration::from_secs(bounded(
                "oauth.refresh_reuse_grace_secs",
                self.refresh_reuse_grace_secs,
                0,
                60,
            )? as u64),
            device_code_lifetime: Duration::from_secs(bounded(
                "oauth.device_code_lifetime_secs",
                self.device_code_lifetime_secs,
                60,
                1800,
            )? as u64),
            device_poll_interval: Duration::from_secs(bounded(
                "oauth.device_poll_interval_secs",
                self.device_poll_interval_secs,
                1,
                60,
            )? as u64),
            registration_group: self.registration_group.trim().to_owned(),
        })
    }
}

fn check_https_url(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let rest = value
        .strip_prefix("https://")
        .ok_or_else(|| ConfigError::Invalid {
            key,
            message: format!("{value:?} must be an https:// URL"),
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || value.contains(['?', '#', ' '])
        || host.contains('@')
        || value.chars().any(char::is_control)
    {
        return Err(ConfigError::Invalid {
            key,
            message: format!(
                "{value:?} must be an https URL with a host and no userinfo, query or fragment"
            ),
        });
    }
    Ok(())
}

/// Bounds on every duration setting: a zero timeout would disable a
/// protection, a huge one would make it meaningless.
const MAX_TIMEOUT_SECS: u64 = 3600;

fn seconds(key: &'static str, value: u64) -> Result<Duration, ConfigError> {
    if value == 0 || value > MAX_TIMEOUT_SECS {
        return Err(ConfigError::Invalid {
            key,
            message: format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {value}"),
        });
    }
    Ok(Duration::from_secs(value))
}

/// A per-second rate: 0 (no limit) to a million.
fn rate(key: &'static str, value: u64) -> Result<u32, ConfigError> {
    let value = bounded(key, value, 0, 1_000_000)?;
    u32::try_from(value).map_err(|_| ConfigError::Invalid {
        key,
        message: "too large".into(),
    })
}

/// The `[store]` settings of the PostgreSQL backend.
fn postgres_config(store: &FileStore) -> Result<PostgresConfig, ConfigError> {
    let url = store.url.clone().ok_or(ConfigError::Invalid {
        key: "store.url",
        message: "backend \"postgres\" needs the database's URL".into(),
    })?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::Invalid {
            key: "store.url",
            message: "must start with postgres:// or postgresql://".into(),
        });
    }
    let max_connections = bounded("store.max_connections", store.max_connections, 1, 1000)?;
    let min_connections = bounded(
        "store.min_connections",
        store.min_connections,
        0,
        store.max_connections,
    )?;
    let millis = |key, value, min, max| {
        bounded(key, value, min, max).map(|ms| Duration::from_millis(ms as u64))
    };
    Ok(PostgresConfig {
        url,
        password_file: store.password_file.clone(),
        max_connections: u32::try_from(max_connections).unwrap_or(16),
        min_connections: u32::try_from(min_connections).unwrap_or(2),
        acquire_timeout: millis(
            "store.acquire_timeout_ms",
            store.acquire_timeout_ms,
            100,
            60_000,
        )?,
        statement_timeout: millis(
            "store.statement_timeout_ms",
            store.statement_timeout_ms,
            100,
            600_000,
        )?,
    })
}

fn bounded(key: &'static str, value: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            key,
            message: format!("must be between {min} and {max}, got {value}"),
        });
    }
    usize::try_from(value).map_err(|_| ConfigError::Invalid {
        key,
        message: "too large for this platform".into(),
    })
}

impl FileConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let s = self.server;
        let listen: SocketAddr = s.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "server.listen",
            message: format!(
                "{:?} is not an address:port (e.g. 127.0.0.1:8443)",
                s.listen
            ),
        })?;
        let request_timeout = seconds("server.request_timeout_secs", s.request_timeout_secs)?;
        let idle_timeout = seconds("server.idle_timeout_secs", s.idle_timeout_secs)?;
        if idle_timeout <= request_timeout {
            // The idle watchdog must never cut a request that is still within
            // its own deadline.
            return Err(ConfigError::Invalid {
                key: "server.idle_timeout_secs",
                message: format!(
                    "must be greater than server.request_timeout_secs ({})",
                    request_timeout.as_secs()
                ),
            });
        }
        let server = ServerConfig {
            listen,
            tls_cert: s
                .tls_cert
                .unwrap_or_else(|| data_dir.join("tls").join("server.pem")),
            tls_key: s
                .tls_key
                .unwrap_or_else(|| data_dir.join("tls").join("server-key.pem")),
            max_body_bytes: bounded("server.max_body_bytes", s.max_body_bytes, 1024, 16 << 20)?,
            max_header_bytes: bounded(
                "server.max_header_bytes",
                s.max_header_bytes,
                1024,
                1 << 20,
            )?,
            tls_handshake_timeout: seconds(
                "server.tls_handshake_timeout_secs",
                s.tls_handshake_timeout_secs,
            )?,
            header_read_timeout: seconds(
                "server.header_read_timeout_secs",
                s.header_read_timeout_secs,
            )?,
            request_timeout,
            idle_timeout,
            max_connections: bounded("server.max_connections", s.max_connections, 1, 1 << 20)?,
            max_connections_per_address: bounded(
                "server.max_connections_per_address",
                s.max_connections_per_address,
                1,
                1 << 20,
            )?,
            max_in_flight: bounded("server.max_in_flight", s.max_in_flight, 1, 1 << 20)?,
            rate_per_address: rate("server.rate_per_address", s.rate_per_address)?,
            rate_per_client: rate("server.rate_per_client", s.rate_per_client)?,
            shutdown_grace: seconds("server.shutdown_grace_secs", s.shutdown_grace_secs)?,
        };

        let key_type: CaKeyType =
            self.ca
                .key_type
                .parse()
                .map_err(|message| ConfigError::Invalid {
                    key: "ca.key_type",
                    message,
                })?;
        let (profile, profile_source) = match &self.ca.profile {
            Some(path) => (Profile::load(path)?, path.display().to_string()),
            None => (
                Profile::builtin()?,
                "built-in development profile".to_owned(),
            ),
        };
        let serial_prefix = u8::try_from(self.ca.serial_prefix)
            .ok()
            .filter(|p| (1..=127).contains(p))
            .ok_or_else(|| ConfigError::Invalid {
                key: "ca.serial_prefix",
                message: format!(
                    "must be between 1 and 127 (the serial's first octet, kept positive), got {}",
                    self.ca.serial_prefix
                ),
            })?;
        let ca = CaConfig {
            key_type,
            cert: self
                .ca
                .cert
                .unwrap_or_else(|| data_dir.join("ca").join("ca.pem")),
            key: self
                .ca
                .key
                .unwrap_or_else(|| data_dir.join("ca").join("ca-key.pem")),
            profile,
            profile_source,
            serial_prefix,
        };

        let backend = match self.store.backend.as_str() {
            "sled" => StoreBackend::Sled,
            "postgres" => StoreBackend::Postgres(postgres_config(&self.store)?),
            other => {
                return Err(ConfigError::Invalid {
                    key: "store.backend",
                    message: format!(
                        "unknown backend {other:?}; this release supports \"sled\" and \"postgres\""
                    ),
                });
            }
        };
        let store = StoreConfig {
            backend,
            path: self.store.path.unwrap_or_else(|| data_dir.join("store")),
            cache_capacity_bytes: u64::try_from(bounded(
                "store.cache_capacity_mb",
                self.store.cache_capacity_mb,
                1,
                65536,
            )?)
            .unwrap_or(64)
                * 1024
                * 1024,
        };

        let format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    key: "log.format",
                    message: format!("expected \"text\" or \"json\", got {other:?}"),
                });
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!("{:?} is not a valid filter directive", self.log.level),
            });
        }
        let oauth = self.oauth.validate()?;
        let c = self.certificate;
        let certificate = CertificateConfig {
            quota_per_token: bounded(
                "certificate.quota_per_token",
                c.quota_per_token,
                1,
                1_000_000,
            )? as u64,
            quota_per_subject_per_hour: bounded(
                "certificate.quota_per_subject_per_hour",
                c.quota_per_subject_per_hour,
                1,
                1_000_000,
            )? as u64,
        };
        let users = self.users.validate()?;
        let delegation = self.delegation.validate()?;
        // A certificate names the root client, every hop and the presenter:
        // a chain the profile cannot record must not be allowed at all.
        let steps = delegation.max_depth as usize + 2;
        if steps > ca.profile.max_chain_steps {
            return Err(ConfigError::Invalid {
                key: "delegation.max_depth",
                message: format!(
                    "{} hops need {steps} provenance steps, but the certificate profile records at most {}",
                    delegation.max_depth, ca.profile.max_chain_steps
                ),
            });
        }
        Ok(Config {
            data_dir,
            server,
            ca,
            store,
            log: LogConfig {
                format,
                level: self.log.level,
            },
            oauth,
            certificate,
            users,
            delegation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slcs.toml");
        std::fs::write(&path, text).unwrap();
        load(
            Some(&path),
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            &CliOverrides::default(),
        )
    }

    #[test]
    fn defaults_are_valid_and_safe() {
        let config = load(None, std::iter::empty(), &CliOverrides::default()).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.ca.serial_prefix, 1);
        assert!(config.server.idle_timeout > config.server.request_timeout);
    }

    #[test]
    fn a_delegation_depth_the_profile_cannot_record_is_refused() {
        // The development profile records 8 steps: root, 6 hops, presenter.
        assert!(load_str("[delegation]\nmax_depth = 6\n", &[]).is_ok());
        let err = load_str("[delegation]\nmax_depth = 7\n", &[]).unwrap_err();
        assert!(err.to_string().contains("delegation.max_depth"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = load_str("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = load_str("colour = \"blue\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = load_str("[sever]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_unknown_env_is_an_error() {
        let config = load_str(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("SLCS_SERVER_LISTEN", "127.0.0.1:2"),
                ("SLCS_CA_SERIAL_PREFIX", "7"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 2);
        assert_eq!(config.ca.serial_prefix, 7);

        let err = load_str("", &[("SLCS_SERVER_LISTN", "x")]).unwrap_err();
        assert!(err.to_string().contains("SLCS_SERVER_LISTN"), "{err}");
        let err = load_str("", &[("SLCS_SERVER_MAX_CONNECTIONS", "many")]).unwrap_err();
        assert!(
            err.to_string().contains("SLCS_SERVER_MAX_CONNECTIONS"),
            "{err}"
        );
        // SLCS_CONFIG names the file and is not a key; Kubernetes
        // service-link variables are not keys either.
        load_str(
            "",
            &[
                (CONFIG_ENV, "/elsewhere.toml"),
                ("SLCS_PORT", "tcp://10.0.0.1:8443"),
                ("SLCS_PORT_8443_TCP_ADDR", "10.0.0.1"),
                ("SLCS_SERVICE_HOST", "10.0.0.1"),
                ("SLCS_SERVICE_PORT", "8443"),
            ],
        )
        .unwrap();
        assert!(KEYS.iter().all(|k| !is_service_link(&k.env_name())));
    }

    #[test]
    fn cli_wins_over_env() {
        let cli = CliOverrides {
            listen: Some("127.0.0.1:3".into()),
            ..CliOverrides::default()
        };
        let config = load(
            None,
            [("SLCS_SERVER_LISTEN".to_owned(), "127.0.0.1:2".to_owned())],
            &cli,
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 3);
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, key) in [
            ("[server]\nlisten = \"localhost\"\n", "server.listen"),
            (
                "[server]\nrequest_timeout_secs = 0\n",
                "server.request_timeout_secs",
            ),
            (
                "[server]\nidle_timeout_secs = 5\n",
                "server.idle_timeout_secs",
            ),
            ("[ca]\nserial_prefix = 0\n", "ca.serial_prefix"),
            ("[ca]\nserial_prefix = 128\n", "ca.serial_prefix"),
            ("[ca]\nkey_type = \"dsa\"\n", "ca.key_type"),
            ("[store]\nbackend = \"redis\"\n", "store.backend"),
            ("[store]\nbackend = \"postgres\"\n", "store.url"),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"mysql://db\"\n",
                "store.url",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/slcs\"\nmin_connections = 20\n",
                "store.min_connections",
            ),
            ("[oauth]\nissuer = \"http://as.example\"\n", "oauth.issuer"),
            (
                "[oauth]\nissuer = \"https://as.example/?x\"\n",
                "oauth.issuer",
            ),
            ("[oauth]\nsigning_alg = \"HS256\"\n", "oauth.signing_alg"),
            (
                "[oauth]\naccess_token_lifetime_secs = 5\n",
                "oauth.access_token_lifetime_secs",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
        ] {
            let err = load_str(text, &[]).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err = load_str("[server]\nlisten = 5\n", &[]).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn every_key_is_documented_in_operations_md() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
                .unwrap();
        for key in KEYS {
            assert!(
                doc.contains(&format!("`{}`", key.path)),
                "docs lack `{}`",
                key.path
            );
            assert!(
                doc.contains(&key.env_name()),
                "docs lack {}",
                key.env_name()
            );
            assert!(
                doc.contains(key.default),
                "docs lack the default of {}: {}",
                key.path,
                key.default
            );
        }
    }

    #[test]
    fn every_key_has_a_distinct_env_name_and_is_accepted_in_a_file() {
        let mut names: Vec<String> = KEYS.iter().map(KeyDoc::env_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
        // A file setting every documented key (to a valid value) parses: the
        // key list and the structs agree.
        let mut table = toml::Table::new();
        for key in KEYS {
            let value = match (key.path, key.kind) {
                ("ca.profile", _) => continue, // needs a real file; covered by profile tests
                ("server.listen", _) => toml::Value::String("127.0.0.1:9".into()),
                ("ca.key_type", _) => toml::Value::String("ecdsa-p384".into()),
                ("store.backend", _) => toml::Value::String("sled".into()),
                ("store.url", _) => toml::Value::String("postgres://slcs@db/slcs".into()),
                ("oauth.issuer", _) => toml::Value::String("https://as.example".into()),
                ("oauth.certificate_audience", _) => {
                    toml::Value::String("https://as.example/certificate".into())
                }
                ("oauth.signing_alg", _) => toml::Value::String("EdDSA".into()),
                ("oauth.access_token_lifetime_secs", _) => toml::Value::Integer(600),
                ("oauth.refresh_token_lifetime_secs", _) => toml::Value::Integer(7200),
                ("oauth.device_code_lifetime_secs", _) => toml::Value::Integer(300),
                ("users.argon2_memory_kib", _) => toml::Value::Integer(4096),
                ("users.session_lifetime_secs", _) => toml::Value::Integer(3600),
                ("users.session_idle_secs", _) => toml::Value::Integer(600),
                ("log.format", _) => toml::Value::String("json".into()),
                ("log.level", _) => toml::Value::String("debug".into()),
                ("server.idle_timeout_secs", _) => toml::Value::Integer(120),
                ("server.max_body_bytes" | "server.max_header_bytes", _) => {
                    toml::Value::Integer(4096)
                }
                (_, KeyKind::Int) => toml::Value::Integer(5),
                (_, KeyKind::Str) => toml::Value::String("/tmp/x".into()),
            };
            set_path(&mut table, key.path, value);
        }
        let text = toml::to_string(&table).unwrap();
        load_str(&text, &[]).unwrap();
    }
}
