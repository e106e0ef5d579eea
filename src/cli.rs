//! The `slcs` command line: `init`, `serve`, `config validate`, `inspect`,
//! `bench`, and the verbs that talk to a running server (`client`, `user`,
//! `token`, `login`, `cert`, `grant`, `keys`, `audit`, `load`). Argument
//! parsing and output only; the work is done by [`crate::service`], the
//! domain modules and the server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;

use crate::admin_client::percent_encode;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, CONFIG_ENV, CliOverrides, Config, LogFormat};
use crate::pki::ca::InitReport;
use crate::pki::dn::CertificateIdentity;
use crate::pki::issuer::{IssuanceEngine, IssuanceRequest};
use crate::pki::keys::CaKeyType;
use crate::pki::provenance::{DelegationProvenance, DelegationStep};
use crate::service::{self, ServiceError, StartMode};
use crate::store::IssuanceLog;
use crate::store::memory::MemoryIssuanceLog;

/// Writes a line to standard output. A closed pipe (`slcs inspect c.pem |
/// head -1`) ends the output quietly instead of panicking as `println!` does.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Debug, Parser)]
#[command(
    name = "slcs",
    version,
    about = "OAuth 2.0-protected Short-Lived Credential Service",
    long_about = "slcs issues short-lived X.509 certificates to OAuth clients acting for users, \
                  recording the delegation chain in each certificate."
)]
struct Cli {
    /// Configuration file (TOML). Also SLCS_CONFIG.
    #[arg(long, global = true, env = CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (default ./slcs-data). Also SLCS_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the development CA, TLS certificate, admin token and store if missing.
    Init {
        /// CA key type: ecdsa-p256 (default), ecdsa-p384 or rsa-3072.
        #[arg(long, value_name = "TYPE")]
        ca_key_type: Option<String>,
    },
    /// Run the HTTPS service (initialises an empty data directory first).
    Serve {
        /// Listen address, e.g. 127.0.0.1:8443.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// PostgreSQL backend: apply the schema migrations the database
        /// lacks before serving (safe with several replicas starting at once).
        #[arg(long)]
        migrate: bool,
    },
    /// Move a deployment's whole store between backends (sled ↔
    /// PostgreSQL) as versioned JSON lines: clients, users, approvals,
    /// grants, the issuance log and the audit chain.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Bring the PostgreSQL database to this build's schema (versioned
    /// migrations carried in the binary); safe to run while replicas serve
    /// the previous schema only where docs/operations.md says so.
    Migrate,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Show a certificate: subject, issuer, serial, validity, key and delegation chain.
    Inspect {
        /// Certificate file, PEM or DER.
        file: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// OID of the provenance extension (default: the configured profile's).
        #[arg(long, value_name = "OID")]
        provenance_oid: Option<String>,
    },
    /// Measure the issuance engine (certificates per second).
    Bench(BenchArgs),
    /// Load a running server with a named workload over HTTPS keep-alive
    /// (admin token, to register a throwaway service client).
    Load {
        #[command(flatten)]
        args: LoadArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Manage OAuth clients on the running server (admin token).
    Client {
        #[command(subcommand)]
        action: ClientAction,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Local user accounts of the running server (admin token).
    User {
        #[command(subcommand)]
        action: UserAction,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Obtain tokens from the running server.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Sign in with the device flow (RFC 8628) and keep the refresh token
    /// (0600) for `slcs cert get` without --client-id.
    Login {
        /// Client id of the public client to sign in through.
        #[arg(long)]
        client_id: String,
        /// Scope to request (offline_access brings the refresh token).
        #[arg(long, default_value = DEFAULT_LOGIN_SCOPE)]
        scope: String,
        /// Credentials file (default $XDG_CONFIG_HOME/slcs/credentials.json,
        /// else ~/.config/slcs/credentials.json).
        #[arg(long, value_name = "FILE")]
        credentials: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Certificates: obtain one for a new key, revoke, ask for a status.
    Cert {
        #[command(subcommand)]
        action: CertAction,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Grants of the running server (admin token).
    Grant {
        #[command(subcommand)]
        action: GrantAction,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Signing keys of the running server (admin token).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Read the audit log of the running server (admin token); with
    /// `verify`, check its hash chain; with `export`, write it as JSON lines.
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `slcs store` verbs. They open the configured store directly: stop a
/// sled server first (its data directory is locked); on PostgreSQL an
/// export reads one consistent snapshot while replicas serve.
#[derive(Debug, Subcommand)]
enum StoreAction {
    /// Write every record as JSON lines (header, records, trailer) to
    /// standard output or --output (created 0600: an export is as secret
    /// as the store, with password hashes and TOTP seeds in it).
    Export {
        /// File to write (created; refused if it exists).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Read an export into the configured store, which must be empty (a
    /// new sled directory, or a new PostgreSQL database: its schema is
    /// created first). The file is checked whole before anything is written.
    Import {
        /// The export file.
        file: PathBuf,
    },
}

/// Where the running server is and how to trust it.
#[derive(Debug, Args)]
struct ServerArgs {
    /// Server URL (default: https://localhost:<port of server.listen>).
    #[arg(long, value_name = "URL", global = true)]
    server: Option<String>,
    /// CA certificate to trust (default: the slcs CA of the data directory).
    #[arg(long, value_name = "FILE", global = true)]
    cacert: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ClientAction {
    /// Register a client from a JSON representation (file, or - for stdin).
    Create {
        /// The representation (EBRAINS/Keycloak JSON, see docs/clients.md).
        file: PathBuf,
    },
    /// List clients.
    List,
    /// Show one client.
    Show {
        /// Client id.
        id: String,
    },
    /// Approve a pending client.
    Approve {
        /// Client id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Suspend a client.
    Suspend {
        /// Client id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replace a client's secret; prints the new one once.
    RotateSecret {
        /// Client id.
        id: String,
    },
}

/// Passwords never come from the command line (`ps`, shell history): from
/// a file or standard input, less one trailing newline.
#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create a local account.
    Add {
        /// Login name.
        username: String,
        /// Name shown to people and put in certificates.
        #[arg(long, value_name = "NAME")]
        display_name: String,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Organisation.
        #[arg(long)]
        organisation: Option<String>,
        /// A group (repeat for several).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// A unit path, e.g. all:projects:hbp (repeat for several).
        #[arg(long = "unit", value_name = "UNIT")]
        units: Vec<String>,
        /// A guest account.
        #[arg(long)]
        guest: bool,
        /// File holding the initial password.
        #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
        /// Read the initial password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts (never their password hashes).
    List,
    /// Disable an account: no sign-in, and its grants stop yielding tokens.
    Disable {
        /// Login name.
        username: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Login name.
        username: String,
    },
    /// Set an account's password, from --password-file or standard input.
    SetPassword {
        /// Login name.
        username: String,
        /// File holding the password (default: standard input).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Make an account an administrator of the /admin console, with a
    /// fresh TOTP second factor: prints its secret and otpauth:// URI once,
    /// for the person's authenticator app. Run again to replace a lost one.
    MakeAdmin {
        /// Login name.
        username: String,
    },
    /// Take the administrator role and its second factor away.
    RemoveAdmin {
        /// Login name.
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Client credentials grant; the secret comes from SLCS_CLIENT_SECRET or --secret-file.
    ClientCredentials {
        /// Client id.
        #[arg(long)]
        client_id: String,
        /// File holding the client secret.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// Scope to request.
        #[arg(long)]
        scope: Option<String>,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// client-credentials, introspect, certificate, mixed, refresh, code-flow, token-exchange, delegation-chain, or all (each in turn).
    #[arg(long, default_value = "all")]
    workload: String,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// CSR key type: ecdsa-p256, ecdsa-p384, rsa-3072 or ed25519.
    #[arg(long, default_value = "ecdsa-p256")]
    csr_key_type: String,
    /// CSRs made before the clock starts.
    #[arg(long, default_value_t = 256)]
    csr_pool: usize,
    /// The server's pid, for its CPU per request and peak RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds spent measuring the machine's signing ceiling (0 to skip).
    #[arg(long, default_value_t = 2.0)]
    ceiling_secs: f64,
}

#[derive(Debug, Subcommand)]
enum CertAction {
    /// Get a token, make a key, send its CSR, and write certificate and key
    /// (0600) to /tmp/x509up_u<uid> unless --out/--cert-out say otherwise.
    /// The token: by client credentials with --client-id (secret from
    /// SLCS_CLIENT_SECRET or --secret-file), else from the refresh token
    /// `slcs login` stored.
    Get {
        /// Client id of the service account (without it: the person signed
        /// in with `slcs login`).
        #[arg(long)]
        client_id: Option<String>,
        /// File holding the client secret (with --client-id).
        #[arg(long, value_name = "FILE", requires = "client_id")]
        secret_file: Option<PathBuf>,
        /// Credentials file of `slcs login` (without --client-id; default
        /// $XDG_CONFIG_HOME/slcs/credentials.json, else
        /// ~/.config/slcs/credentials.json).
        #[arg(long, value_name = "FILE", conflicts_with = "client_id")]
        credentials: Option<PathBuf>,
        /// Key type: ecdsa-p256 (default), ecdsa-p384, ed25519, rsa-2048 or rsa-3072.
        #[arg(long, value_name = "TYPE", default_value = "ecdsa-p256")]
        key_type: String,
        /// Requested lifetime in seconds (default: the server's).
        #[arg(long, value_name = "SECONDS")]
        lifetime: Option<u64>,
        /// One file with certificate, chain and key (default /tmp/x509up_u<uid>).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["cert_out", "key_out"])]
        out: Option<PathBuf>,
        /// Certificate and chain to this file (needs --key-out).
        #[arg(long, value_name = "FILE", requires = "key_out")]
        cert_out: Option<PathBuf>,
        /// Private key to this file, 0600 (needs --cert-out).
        #[arg(long, value_name = "FILE", requires = "cert_out")]
        key_out: Option<PathBuf>,
    },
    /// Revoke an issued certificate (admin token).
    Revoke {
        /// Serial, hex (colons allowed).
        serial: String,
        /// Why (kept in the issuance and audit logs).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show a certificate's status: good, revoked, expired or unknown (admin token).
    Status {
        /// Serial, hex (colons allowed).
        serial: String,
    },
}

#[derive(Debug, Subcommand)]
enum GrantAction {
    /// Revoke every token of a grant and every certificate issued from it.
    Revoke {
        /// The grant id (`grant_id` in tokens, `grantId` in provenance).
        grant_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check the hash chain from the first record to the last: exits 1 and
    /// names the records if one was changed, deleted or reordered; prints
    /// the head hash to keep elsewhere.
    Verify,
    /// Every record after --after as JSON lines on standard output (seq,
    /// prev, hash, and the event exactly as stored), for a SIEM.
    Export {
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Rotate the signing keys now: the pre-published next key takes over.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Check a configuration file (and the profile it names) without starting.
    Validate {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Key type of the throwaway CA (ignored with --data-dir).
    #[arg(long, default_value = "ecdsa-p256")]
    ca_key_type: String,
    /// Key type of the CSRs: ecdsa-p256, ecdsa-p384, ed25519 or rsa-2048.
    #[arg(long, default_value = "ecdsa-p256")]
    csr_key_type: String,
    /// Certificates to issue.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Concurrent issuance tasks.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Issuance log: `durable` (sled, fsync before acknowledging) or `memory`.
    #[arg(long, default_value = "durable")]
    log: String,
    /// Print `serial <HEX>` for each acknowledged certificate.
    #[arg(long)]
    print_serials: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("slcs: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn load_config(cli: &Cli, overrides: CliOverrides) -> Result<Config, ServiceError> {
    let overrides = CliOverrides {
        data_dir: overrides.data_dir.or_else(|| cli.data_dir.clone()),
        ..overrides
    };
    Ok(config::load(
        cli.config.as_deref(),
        std::env::vars(),
        &overrides,
    )?)
}

fn run(cli: Cli) -> Result<(), ServiceError> {
    match &cli.command {
        Command::Init { ca_key_type } => {
            let config = load_config(
                &cli,
                CliOverrides {
                    ca_key_type: ca_key_type.clone(),
                    ..CliOverrides::default()
                },
            )?;
            init_logging(&config);
            let opened = runtime(Some(1))?.block_on(service::open(
                &config,
                &SystemClock,
                StartMode::Init,
                true,
            ))?;
            print_report(&opened.report);
            if opened.report.created.is_empty() {
                say!(
                    "slcs: data directory {} is already initialised; nothing created",
                    config.data_dir.display()
                );
            }
            Ok(())
        }
        Command::Store { action } => {
            let config = load_config(&cli, CliOverrides::default())?;
            init_logging(&config);
            let runtime = runtime(Some(2))?;
            match action {
                StoreAction::Export { output } => {
                    let moved = match output {
                        Some(path) => {
                            // As secret as the store itself: password and
                            // secret hashes, TOTP seeds, sealed keys.
                            use std::os::unix::fs::OpenOptionsExt as _;
                            let file = std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(0o600)
                                .open(path)
                                .map_err(|source| ServiceError::Io {
                                    context: format!("cannot create {}", path.display()),
                                    source,
                                })?;
                            runtime.block_on(service::export_store(
                                &config,
                                std::io::BufWriter::new(file),
                                SystemClock.now(),
                            ))?
                        }
                        None => runtime.block_on(service::export_store(
                            &config,
                            std::io::BufWriter::new(std::io::stdout()),
                            SystemClock.now(),
                        ))?,
                    };
                    eprintln!(
                        "slcs: exported {} records ({} issuance, {} audit)",
                        moved.records, moved.issuance, moved.audit
                    );
                }
                StoreAction::Import { file } => {
                    let moved = runtime.block_on(service::import_store(&config, file))?;
                    eprintln!(
                        "slcs: imported {} records ({} issuance, {} audit)",
                        moved.records, moved.issuance, moved.audit
                    );
                }
            }
            Ok(())
        }
        Command::Migrate => {
            let config = load_config(&cli, CliOverrides::default())?;
            init_logging(&config);
            let report = runtime(Some(1))?.block_on(service::migrate(&config))?;
            if report.from == report.to {
                say!(
                    "slcs: the database is at schema version {}; nothing to do",
                    report.to
                );
            } else {
                say!(
                    "slcs: migrated the database from schema version {} to {}",
                    report.from,
                    report.to
                );
            }
            Ok(())
        }
        Command::Serve { listen, migrate } => {
            let config = load_config(
                &cli,
                CliOverrides {
                    listen: listen.clone(),
                    ..CliOverrides::default()
                },
            )?;
            init_logging(&config);
            runtime(None)?.block_on(service::serve(
                &config,
                *migrate,
                Arc::new(SystemClock),
                print_report,
                |addr| {
                    say!("slcs listening on https://{addr}");
                    let _ = std::io::stdout().lock().flush();
                },
            ))
        }
        Command::Config {
            action: ConfigAction::Validate { file },
        } => {
            let config = config::validate_file(file)?;
            say!(
                "{}: valid (listen {}, data directory {}, profile: {})",
                file.display(),
                config.server.listen,
                config.data_dir.display(),
                config.ca.profile_source
            );
            Ok(())
        }
        Command::Inspect {
            file,
            json,
            provenance_oid,
        } => {
            let oid = match provenance_oid {
                Some(oid) => oid.clone(),
                None => {
                    load_config(&cli, CliOverrides::default())?
                        .ca
                        .profile
                        .provenance_oid_text
                }
            };
            let bytes = std::fs::read(file).map_err(|source| ServiceError::Io {
                context: format!("cannot read {}", file.display()),
                source,
            })?;
            let summary =
                crate::pki::inspect::inspect(&bytes, &oid).map_err(|e| ServiceError::Io {
                    context: file.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
            if *json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            } else {
                let _ = write!(std::io::stdout().lock(), "{summary}");
            }
            Ok(())
        }
        Command::Bench(args) => bench(&cli, args),
        Command::Load { args, server } => {
            let api = remote(&cli, server)?;
            runtime(None)?.block_on(load_command(&api, args))
        }
        Command::Client { action, server } => {
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(client_command(&api, action))
        }
        Command::User { action, server } => {
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(user_command(&api, action))
        }
        Command::Token { action, server } => {
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(token_command(&api, action))
        }
        Command::Login {
            client_id,
            scope,
            credentials,
            server,
        } => {
            // Resolved first: a missing $HOME fails before the person has
            // gone to the browser.
            let path = credentials_path(credentials.as_deref())?;
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(login(&api, client_id, scope, &path))
        }
        Command::Grant {
            action: GrantAction::Revoke { grant_id },
            server,
        } => {
            let api = remote(&cli, server)?;
            let path = format!("/admin/grants/{}/revoke", percent_encode(grant_id));
            runtime(Some(1))?.block_on(async {
                let answer = api.admin("POST", &path, None).await?;
                api.print(answer)
            })
        }
        Command::Cert { action, server } => {
            // A person's refresh token names its server: the request goes
            // there by default, and never to another one.
            let login = match action {
                CertAction::Get {
                    client_id: None,
                    credentials,
                    ..
                } => Some(PersonLogin::load(credentials.as_deref())?),
                _ => None,
            };
            let api = remote_to(
                &cli,
                server,
                login.as_ref().map(|login| login.stored.server.as_str()),
            )?;
            runtime(Some(1))?.block_on(cert_command(&api, action, login))
        }
        Command::Keys {
            action: KeysAction::Rotate,
            server,
        } => {
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(async {
                let answer = api.admin("POST", "/admin/keys/rotate", None).await?;
                api.print(answer)
            })
        }
        Command::Audit {
            action,
            after,
            limit,
            server,
        } => {
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(async {
                match action {
                    None => {
                        let path = format!("/admin/audit?after={after}&limit={limit}");
                        let answer = api.admin("GET", &path, None).await?;
                        api.print(answer)
                    }
                    Some(AuditAction::Verify) => audit_verify(&api).await,
                    Some(AuditAction::Export { after }) => audit_export(&api, *after).await,
                }
            })
        }
    }
}

// ---------------------------------------------------------------------------
// Verbs that talk to the running server.

/// `slcs audit verify`: the server's report; a broken chain is an error.
async fn audit_verify(api: &Remote) -> Result<(), ServiceError> {
    let answer = api.admin("GET", "/admin/audit/verify", None).await?;
    let intact =
        answer.status == 200 && answer.json().get("intact") == Some(&serde_json::Value::Bool(true));
    api.print(answer)?;
    if intact {
        Ok(())
    } else {
        Err(ServiceError::Io {
            context: "the audit log".into(),
            source: std::io::Error::other(
                "its hash chain is broken at the records listed under problems",
            ),
        })
    }
}

/// `slcs audit export`: every record after `after`, page by page, as the
/// server writes them.
async fn audit_export(api: &Remote, mut after: u64) -> Result<(), ServiceError> {
    use std::io::Write as _;
    const PAGE: usize = 1000;
    let mut out = std::io::stdout().lock();
    loop {
        let path = format!("/admin/audit/export?after={after}&limit={PAGE}");
        let answer = api.admin("GET", &path, None).await?;
        if answer.status != 200 {
            return api.print(answer);
        }
        let text = String::from_utf8_lossy(&answer.body);
        let mut lines = 0;
        for line in text.lines() {
            let seq = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
                .ok_or_else(|| ServiceError::Io {
                    context: "the audit export".into(),
                    source: std::io::Error::other("a line without a sequence number"),
                })?;
            writeln!(out, "{line}").map_err(|source| ServiceError::Io {
                context: "standard output".into(),
                source,
            })?;
            after = seq;
            lines += 1;
        }
        if lines < PAGE {
            return Ok(());
        }
    }
}

type RemoteFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ServiceError>> + 'a>>;

/// A connection to the running server with the operator's credentials.
struct Remote {
    client: crate::admin_client::AdminClient,
    admin_token: Option<String>,
    json: bool,
}

impl Remote {
    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<crate::admin_client::Answer, ServiceError> {
        let token = self
            .admin_token
            .as_deref()
            .ok_or_else(|| ServiceError::Io {
                context: "the admin token".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not readable in the data directory (run on the server host, as the slcs user)",
                ),
            })?;
        let authorization = format!("Bearer {token}");
        self.client
            .send(
                method,
                path,
                Some(&authorization),
                body.map(|b| ("application/json", b)),
            )
            .await
            .map_err(remote_error)
    }

    /// Prints the answer (pretty JSON, or the raw JSON with --json) and
    /// fails on an error status.
    fn print(&self, answer: crate::admin_client::Answer) -> Result<(), ServiceError> {
        let json = answer.json();
        if self.json {
            say!("{json}");
        } else {
            say!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
        }
        if answer.status >= 400 {
            return Err(ServiceError::Io {
                context: format!("the server answered {}", answer.status),
                source: std::io::Error::other(
                    json.get("detail")
                        .or_else(|| json.get("error_description"))
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("request refused")
                        .to_owned(),
                ),
            });
        }
        Ok(())
    }
}

fn remote_error(error: crate::admin_client::ClientError) -> ServiceError {
    ServiceError::Io {
        context: "request to the server".into(),
        source: std::io::Error::other(error.to_string()),
    }
}

fn remote(cli: &Cli, args: &ServerArgs) -> Result<Remote, ServiceError> {
    remote_to(cli, args, None)
}

/// The server of `--server`, else `bound` (the server a stored refresh
/// token belongs to), else the local one. With `bound`, any other server
/// is refused: a refresh token is a bearer credential and must reach only
/// the server that issued it.
fn remote_to(cli: &Cli, args: &ServerArgs, bound: Option<&str>) -> Result<Remote, ServiceError> {
    let config = load_config(cli, CliOverrides::default())?;
    let server = args
        .server
        .clone()
        .or_else(|| bound.map(str::to_owned))
        .unwrap_or_else(|| format!("https://localhost:{}", config.server.listen.port()));
    let cacert = args
        .cacert
        .clone()
        .unwrap_or_else(|| config.ca.cert.clone());
    let client = crate::admin_client::AdminClient::new(&server, &cacert).map_err(remote_error)?;
    if let Some(bound) = bound
        && client.server() != bound.trim_end_matches('/')
    {
        return Err(ServiceError::Io {
            context: "the credentials file".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "it holds a sign-in to {bound}, not to {}: run `slcs login --server {}` first, \
                     or pass --credentials for that server",
                    client.server(),
                    client.server()
                ),
            ),
        });
    }
    let admin_token = std::fs::read_to_string(config.admin_token_path())
        .ok()
        .map(|t| t.trim().to_owned());
    Ok(Remote {
        client,
        admin_token,
        json: args.json,
    })
}

fn client_command<'a>(api: &'a Remote, action: &'a ClientAction) -> RemoteFuture<'a> {
    Box::pin(async move {
        let status = |id: &str, status: &str, reason: &Option<String>| {
            (
                format!("/rest/v1/oidc/clients/{}/status", percent_encode(id)),
                serde_json::json!({ "status": status, "reason": reason })
                    .to_string()
                    .into_bytes(),
            )
        };
        let answer = match action {
            ClientAction::Create { file } => {
                let body = if file.as_os_str() == "-" {
                    let mut buffer = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer).map_err(
                        |source| ServiceError::Io {
                            context: "cannot read standard input".into(),
                            source,
                        },
                    )?;
                    buffer
                } else {
                    std::fs::read(file).map_err(|source| ServiceError::Io {
                        context: format!("cannot read {}", file.display()),
                        source,
                    })?
                };
                api.admin("POST", "/rest/v1/oidc/clients", Some(body))
                    .await?
            }
            ClientAction::List => api.admin("GET", "/rest/v1/oidc/clients", None).await?,
            ClientAction::Show { id } => {
                api.admin(
                    "GET",
                    &format!("/rest/v1/oidc/clients/{}", percent_encode(id)),
                    None,
                )
                .await?
            }
            ClientAction::Approve { id, reason } => {
                let (path, body) = status(id, "active", reason);
                api.admin("PUT", &path, Some(body)).await?
            }
            ClientAction::Suspend { id, reason } => {
                let (path, body) = status(id, "suspended", reason);
                api.admin("PUT", &path, Some(body)).await?
            }
            ClientAction::RotateSecret { id } => {
                let path = format!("/rest/v1/oidc/clients/{}", percent_encode(id));
                let current = api.admin("GET", &path, None).await?;
                if current.status != 200 {
                    return api.print(current);
                }
                api.admin(
                    "PUT",
                    &format!("{path}?rotate_secret=true"),
                    Some(current.body),
                )
                .await?
            }
        };
        api.print(answer)
    })
}

fn load_command<'a>(api: &'a Remote, args: &'a LoadArgs) -> RemoteFuture<'a> {
    Box::pin(async move {
        let usage = |message: String| ServiceError::Io {
            context: "slcs load".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
        };
        let workloads: Vec<crate::load::Workload> = if args.workload == "all" {
            crate::load::Workload::ALL.to_vec()
        } else {
            vec![args.workload.parse().map_err(usage)?]
        };
        let csr_key = args.csr_key_type.parse().map_err(usage)?;
        let positive = |name: &str, value: f64| {
            if (0.0..=3600.0).contains(&value) {
                Ok(std::time::Duration::from_secs_f64(value))
            } else {
                Err(usage(format!(
                    "--{name} must be between 0 and 3600 seconds"
                )))
            }
        };
        if args.concurrency == 0 || args.concurrency > 4096 {
            return Err(usage("--concurrency must be between 1 and 4096".into()));
        }
        let admin_token = api
            .admin_token
            .clone()
            .ok_or_else(|| usage("the admin token is not readable in the data directory".into()))?;
        let mut reports = Vec::new();
        for (index, workload) in workloads.into_iter().enumerate() {
            let options = crate::load::LoadOptions {
                workload,
                concurrency: args.concurrency,
                duration: positive("duration", args.duration)?,
                warmup: positive("warmup", args.warmup)?,
                csr_key,
                csr_pool: args.csr_pool.clamp(1, 100_000),
                server_pid: args.server_pid,
                // The ceiling once per invocation.
                ceiling_secs: if index == 0 { args.ceiling_secs } else { 0.0 },
            };
            let report = crate::load::run(&api.client, &admin_token, &options)
                .await
                .map_err(|e| usage(e.to_string()))?;
            if !api.json {
                print_load_report(&report);
            }
            reports.push(report);
        }
        if api.json {
            say!("{}", serde_json::to_string(&reports).unwrap_or_default());
        }
        Ok(())
    })
}

fn print_load_report(report: &crate::load::LoadReport) {
    if let Some(c) = &report.ceiling {
        say!(
            "ceiling ({} threads): CA {} {:.0} signs/s, CSR {:.0} verifies/s -> {:.0} certificates/s; ES256 {:.0} signs/s, {:.0} verifies/s",
            c.threads,
            c.ca_key,
            c.ca_signs_per_sec,
            c.csr_verifies_per_sec,
            c.certificates_per_sec,
            c.es256_signs_per_sec,
            c.es256_verifies_per_sec
        );
    }
    let optional =
        |v: Option<f64>, unit: &str| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} {unit}"));
    say!(
        "{:?}: c={} {:.0}/s p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms, errors {:?}, server CPU {} per request, peak RSS {}{}",
        report.workload,
        report.concurrency,
        report.throughput,
        report.latency_ms.p50,
        report.latency_ms.p90,
        report.latency_ms.p99,
        report.latency_ms.max,
        report.errors,
        optional(report.server_cpu_us_per_request, "µs"),
        optional(report.server_peak_rss_mib, "MiB"),
        report
            .fraction_of_ceiling
            .map(|f| format!(", {:.0} % of the ceiling", f * 100.0))
            .unwrap_or_default()
    );
    if let Some(login) = report.login_ms {
        say!("  (sign-in, measured apart: {login:.1} ms, one argon2id verification)");
    }
}

fn token_command<'a>(api: &'a Remote, action: &'a TokenAction) -> RemoteFuture<'a> {
    Box::pin(async move {
        let TokenAction::ClientCredentials {
            client_id,
            secret_file,
            scope,
        } = action;
        let answer =
            client_credentials(api, client_id, secret_file.as_deref(), scope.as_deref()).await?;
        api.print(answer)
    })
}

/// The client secret: from a file, else from `SLCS_CLIENT_SECRET`; never
/// from the command line (it would show in `ps` and shell history).
fn client_secret(secret_file: Option<&Path>) -> Result<String, ServiceError> {
    let secret = match secret_file {
        Some(file) => std::fs::read_to_string(file).map_err(|source| ServiceError::Io {
            context: format!("cannot read {}", file.display()),
            source,
        })?,
        None => std::env::var(config::CLIENT_SECRET_ENV).map_err(|_| ServiceError::Io {
            context: "the client secret".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("set {} or pass --secret-file", config::CLIENT_SECRET_ENV),
            ),
        })?,
    };
    Ok(secret.trim().to_owned())
}

/// The client credentials grant with HTTP Basic (RFC 6749 §4.4, §2.3.1:
/// id and secret are form-encoded before Basic).
async fn client_credentials(
    api: &Remote,
    client_id: &str,
    secret_file: Option<&Path>,
    scope: Option<&str>,
) -> Result<crate::admin_client::Answer, ServiceError> {
    let secret = client_secret(secret_file)?;
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", percent_encode(client_id), percent_encode(&secret)),
    );
    let mut form = "grant_type=client_credentials".to_owned();
    if let Some(scope) = scope {
        form.push_str("&scope=");
        form.push_str(&percent_encode(scope));
    }
    api.client
        .send(
            "POST",
            "/token",
            Some(&format!("Basic {basic}")),
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
        )
        .await
        .map_err(remote_error)
}

// ---------------------------------------------------------------------------
// `slcs user …`

fn user_command<'a>(api: &'a Remote, action: &'a UserAction) -> RemoteFuture<'a> {
    Box::pin(async move {
        let path = |username: &str, verb: &str| {
            format!("/admin/users/{}/{verb}", percent_encode(username))
        };
        let answer = match action {
            UserAction::Add {
                username,
                display_name,
                email,
                organisation,
                groups,
                units,
                guest,
                password_file,
                password_stdin,
            } => {
                let password = match (password_file, password_stdin) {
                    (Some(file), _) => Some(read_password(Some(file))?),
                    (None, true) => Some(read_password(None)?),
                    (None, false) => None,
                };
                let body = serde_json::json!({
                    "username": username,
                    "display_name": display_name,
                    "email": email,
                    "organisation": organisation,
                    "groups": groups,
                    "units": units,
                    "guest": guest,
                    "password": password,
                });
                api.admin("POST", "/admin/users", Some(body.to_string().into_bytes()))
                    .await?
            }
            UserAction::List => api.admin("GET", "/admin/users", None).await?,
            UserAction::Disable { username } => {
                api.admin("POST", &path(username, "disable"), None).await?
            }
            UserAction::Enable { username } => {
                api.admin("POST", &path(username, "enable"), None).await?
            }
            UserAction::SetPassword {
                username,
                password_file,
            } => {
                let password = read_password(password_file.as_deref())?;
                let body = serde_json::json!({ "password": password });
                api.admin(
                    "PUT",
                    &path(username, "password"),
                    Some(body.to_string().into_bytes()),
                )
                .await?
            }
            UserAction::MakeAdmin { username } | UserAction::RemoveAdmin { username } => {
                let admin = matches!(action, UserAction::MakeAdmin { .. });
                let body = serde_json::json!({ "admin": admin });
                api.admin(
                    "PUT",
                    &path(username, "admin"),
                    Some(body.to_string().into_bytes()),
                )
                .await?
            }
        };
        api.print(answer)
    })
}

/// A password from `file`, else from standard input; never from the
/// command line. One trailing newline (`\n` or `\r\n`, what `echo` or an
/// editor adds) is dropped and nothing else: spaces may be part of it.
fn read_password(file: Option<&Path>) -> Result<String, ServiceError> {
    let bytes = match file {
        Some(file) => std::fs::read(file).map_err(|source| ServiceError::Io {
            context: format!("cannot read {}", file.display()),
            source,
        })?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                // No way to turn echo off without unsafe code or a new
                // dependency: say so, and how to avoid it.
                eprintln!(
                    "slcs: type the password, then Enter and Ctrl-D (it is shown as typed; \
                     --password-file or a pipe avoid that)"
                );
            }
            let mut buffer = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer).map_err(|source| {
                ServiceError::Io {
                    context: "cannot read standard input".into(),
                    source,
                }
            })?;
            buffer
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| ServiceError::Io {
        context: "the password".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })?;
    Ok(strip_one_newline(text))
}

fn strip_one_newline(mut text: String) -> String {
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    text
}

// ---------------------------------------------------------------------------
// `slcs login` and the credentials file

/// What `slcs login` asks for by default: an ID token, certificates, and a
/// refresh token so that `slcs cert get` works later without a browser.
const DEFAULT_LOGIN_SCOPE: &str = "openid slcs:certificate offline_access";

/// RFC 8628 §3.5: on `slow_down` the interval grows by 5 seconds.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

const FORM: &str = "application/x-www-form-urlencoded";

/// The credentials file `slcs login` writes and `slcs cert get` reads and
/// rewrites (mode 0600). No `Debug`: it holds a refresh token.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLogin {
    server: String,
    client_id: String,
    refresh_token: String,
    scope: String,
    obtained_at: i64,
}

/// A person's sign-in, read under an exclusive lock on the credentials
/// that is held until this is dropped: two `slcs cert get` at once would
/// otherwise present the same refresh token, and the second presentation
/// of a rotated token revokes the whole grant.
struct PersonLogin {
    path: PathBuf,
    stored: StoredLogin,
    _lock: std::fs::File,
}

impl PersonLogin {
    /// Locks and reads the credentials file at `explicit` or the default
    /// path.
    fn load(explicit: Option<&Path>) -> Result<Self, ServiceError> {
        let path = credentials_path(explicit)?;
        // Without credentials, fail before the lock creates anything.
        std::fs::metadata(&path).map_err(|source| unreadable_credentials(&path, source))?;
        let lock = lock_credentials(&path)?;
        let stored = StoredLogin::read(&path)?;
        Ok(Self {
            path,
            stored,
            _lock: lock,
        })
    }
}

fn unreadable_credentials(path: &Path, source: std::io::Error) -> ServiceError {
    ServiceError::Io {
        context: format!(
            "cannot read the credentials {} (run `slcs login` first, or pass --client-id)",
            path.display()
        ),
        source,
    }
}

/// Takes the exclusive lock of the credentials at `path` (a `.lock` file
/// beside them, since the file itself is replaced by renaming), waiting
/// for another slcs process that holds it.
fn lock_credentials(path: &Path) -> Result<std::fs::File, ServiceError> {
    use fs2::FileExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let fail = |source| ServiceError::Io {
        context: format!("cannot lock {}", lock_path.display()),
        source,
    };
    create_private_parent(path).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(fail)?;
    if file.try_lock_exclusive().is_err() {
        eprintln!(
            "slcs: waiting for another slcs process using {}",
            path.display()
        );
        file.lock_exclusive().map_err(fail)?;
    }
    Ok(file)
}

/// Creates a missing parent directory of `path` with mode 0700.
fn create_private_parent(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        None => Ok(()),
    }
}

impl StoredLogin {
    /// Reads the credentials file at `path`.
    fn read(path: &Path) -> Result<Self, ServiceError> {
        let bytes = std::fs::read(path).map_err(|source| unreadable_credentials(path, source))?;
        // As ssh does with its keys: a token others could read may be
        // someone else's by now.
        let mode = crate::secure_fs::exposed_mode(path).map_err(|source| ServiceError::Io {
            context: format!("cannot check the mode of {}", path.display()),
            source,
        })?;
        if let Some(mode) = mode {
            return Err(ServiceError::Io {
                context: format!("the credentials {}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "mode {mode:o} lets others read the refresh token; `chmod 600` it, \
                         or better run `slcs login` again"
                    ),
                ),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ServiceError::Io {
            context: format!("the credentials {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// Replaces the file atomically, 0600 from the first byte; creates a
    /// missing directory 0700.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        create_private_parent(path)?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        crate::secure_fs::replace_file(path, &bytes, true)
    }
}

/// `--credentials`, else `$XDG_CONFIG_HOME/slcs/credentials.json`, else
/// `$HOME/.config/slcs/credentials.json`.
fn credentials_path(explicit: Option<&Path>) -> Result<PathBuf, ServiceError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    default_credentials_path(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
    .ok_or_else(|| ServiceError::Io {
        context: "the credentials file".into(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "neither XDG_CONFIG_HOME nor HOME is set: pass --credentials",
        ),
    })
}

fn default_credentials_path(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    // The XDG base directory specification ignores relative paths.
    let absolute = |value: Option<std::ffi::OsString>| {
        value.map(PathBuf::from).filter(|path| path.is_absolute())
    };
    absolute(xdg_config_home)
        .or_else(|| absolute(home).map(|home| home.join(".config")))
        .map(|config| config.join("slcs").join("credentials.json"))
}

/// A server-provided string, shown on a terminal without its control
/// characters (no escape sequences from the network).
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// The device authorization response (RFC 8628 §3.2). No `Debug`: it holds
/// the device code.
#[derive(serde::Deserialize)]
struct DeviceStart {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: u64,
    /// RFC 8628 §3.2: 5 seconds when absent.
    #[serde(default = "default_poll_interval")]
    interval: u64,
}

fn default_poll_interval() -> u64 {
    5
}

/// What one poll of the token endpoint says (RFC 8628 §3.5).
#[derive(Debug, PartialEq)]
enum Poll {
    /// The person has not answered yet.
    Pending,
    /// Polling too fast: wait longer.
    SlowDown,
    /// Tokens.
    Granted(serde_json::Value),
    /// Stop, with the reason.
    Failed(String),
}

fn poll_outcome(status: u16, answer: serde_json::Value) -> Poll {
    if status == 200 {
        return Poll::Granted(answer);
    }
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(printable)
            .unwrap_or_default()
    };
    match field("error").as_str() {
        "authorization_pending" => Poll::Pending,
        "slow_down" => Poll::SlowDown,
        "access_denied" => Poll::Failed("the sign-in was refused in the browser".into()),
        "expired_token" => {
            Poll::Failed("the code expired before it was confirmed; run `slcs login` again".into())
        }
        "" => Poll::Failed(format!("the server answered {status}")),
        error => {
            let description = field("error_description");
            Poll::Failed(if description.is_empty() {
                format!("the server answered {status} {error}")
            } else {
                format!("the server answered {status} {error}: {description}")
            })
        }
    }
}

/// Polls every `interval` (longer by `slow_down_step` after each
/// `slow_down`) until tokens come, a refusal, or `expires_in` has passed:
/// a poll that could only happen after the deadline is not made.
async fn poll_device<F, Fut>(
    mut interval: Duration,
    expires_in: Duration,
    slow_down_step: Duration,
    mut poll: F,
) -> Result<serde_json::Value, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Poll, ServiceError>>,
{
    let failed = |message: String| ServiceError::Io {
        context: "slcs login".into(),
        source: std::io::Error::other(message),
    };
    let expired =
        || failed("the code expired before it was confirmed; run `slcs login` again".into());
    let now = tokio::time::Instant::now();
    let deadline = now.checked_add(expires_in).unwrap_or(now);
    loop {
        if tokio::time::Instant::now()
            .checked_add(interval)
            .is_none_or(|next| next > deadline)
        {
            // Sleeping out the rest changes nothing: the code is dead then.
            return Err(expired());
        }
        tokio::time::sleep(interval).await;
        match poll().await? {
            Poll::Pending => {}
            Poll::SlowDown => interval = interval.saturating_add(slow_down_step),
            Poll::Granted(tokens) => return Ok(tokens),
            Poll::Failed(message) => return Err(failed(message)),
        }
    }
}

async fn login(
    api: &Remote,
    client_id: &str,
    scope: &str,
    path: &Path,
) -> Result<(), ServiceError> {
    let form = format!(
        "client_id={}&scope={}",
        percent_encode(client_id),
        percent_encode(scope)
    );
    let answer = api
        .client
        .send(
            "POST",
            "/device_authorization",
            None,
            Some((FORM, form.into_bytes())),
        )
        .await
        .map_err(remote_error)?;
    if answer.status != 200 {
        api.print(answer)?;
        return Err(unexpected_answer("the device authorization endpoint"));
    }
    let start: DeviceStart =
        serde_json::from_slice(&answer.body).map_err(|e| ServiceError::Io {
            context: "the device authorization response".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })?;
    eprintln!(
        "slcs: to sign in, open {} and enter the code {}",
        printable(&start.verification_uri),
        printable(&start.user_code)
    );
    if let Some(complete) = &start.verification_uri_complete {
        eprintln!("slcs: or open {}", printable(complete));
    }
    eprintln!(
        "slcs: waiting for the confirmation (the code expires in {} minutes)…",
        start.expires_in.div_ceil(60)
    );
    let form = format!(
        "grant_type={}&device_code={}&client_id={}",
        percent_encode("urn:ietf:params:oauth:grant-type:device_code"),
        percent_encode(&start.device_code),
        percent_encode(client_id)
    );
    let form = &form;
    let tokens = poll_device(
        // Never a busy loop and no absurd waits, whatever the server says.
        Duration::from_secs(start.interval.clamp(1, 600)),
        Duration::from_secs(start.expires_in.min(86_400)),
        SLOW_DOWN_STEP,
        move || async move {
            let answer = api
                .client
                .send(
                    "POST",
                    "/token",
                    None,
                    Some((FORM, form.clone().into_bytes())),
                )
                .await
                .map_err(remote_error)?;
            Ok(poll_outcome(answer.status, answer.json()))
        },
    )
    .await?;
    let text = |name: &str| {
        tokens
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let refresh_token = text("refresh_token").ok_or_else(|| ServiceError::Io {
        context: "slcs login".into(),
        source: std::io::Error::other(
            "the server issued no refresh token: the scope needs offline_access",
        ),
    })?;
    let stored = StoredLogin {
        server: api.client.server().to_owned(),
        client_id: client_id.to_owned(),
        refresh_token,
        scope: text("scope").unwrap_or_else(|| scope.to_owned()),
        obtained_at: SystemClock.now().unix_timestamp(),
    };
    // Under the lock: a `cert get` rotating the previous sign-in's token
    // must not write it over this one.
    let lock = lock_credentials(path)?;
    stored.save(path).map_err(|source| io_error(path, source))?;
    drop(lock);
    if api.json {
        say!(
            "{}",
            serde_json::json!({
                "server": stored.server,
                "client_id": stored.client_id,
                "scope": stored.scope,
                "obtained_at": stored.obtained_at,
                "credentials": path.display().to_string(),
            })
        );
    } else {
        say!(
            "slcs: signed in to {} ({}); credentials in {}",
            stored.server,
            printable(&stored.scope),
            path.display()
        );
    }
    Ok(())
}

/// Redeems the stored refresh token and writes its successor back at once,
/// before the certificate is even asked for: the old token is spent from
/// this moment, and a crash later must not leave it in the file.
async fn refresh_login(api: &Remote, login: &PersonLogin) -> Result<String, ServiceError> {
    let PersonLogin { path, stored, .. } = login;
    let form = format!(
        "grant_type=refresh_token&refresh_token={}&client_id={}",
        percent_encode(&stored.refresh_token),
        percent_encode(&stored.client_id)
    );
    let answer = api
        .client
        .send("POST", "/token", None, Some((FORM, form.into_bytes())))
        .await
        .map_err(remote_error)?;
    let tokens = answer.json();
    if answer.status != 200 {
        if tokens.get("error").and_then(serde_json::Value::as_str) == Some("invalid_grant") {
            return Err(ServiceError::Io {
                context: format!("the sign-in stored in {}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "it is no longer valid (expired, revoked or already used): run `slcs login` again",
                ),
            });
        }
        api.print(answer)?;
        return Err(unexpected_answer("the token endpoint"));
    }
    if let Some(successor) = tokens
        .get("refresh_token")
        .and_then(serde_json::Value::as_str)
    {
        let renewed = StoredLogin {
            server: stored.server.clone(),
            client_id: stored.client_id.clone(),
            refresh_token: successor.to_owned(),
            scope: tokens
                .get("scope")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&stored.scope)
                .to_owned(),
            obtained_at: SystemClock.now().unix_timestamp(),
        };
        renewed.save(path).map_err(|source| ServiceError::Io {
            context: format!(
                "cannot store the new refresh token in {} (the old one is spent: run `slcs login` again)",
                path.display()
            ),
            source,
        })?;
    }
    access_token_of(&tokens)
}

fn cert_command<'a>(
    api: &'a Remote,
    action: &'a CertAction,
    login: Option<PersonLogin>,
) -> RemoteFuture<'a> {
    Box::pin(async move {
        match action {
            CertAction::Revoke { serial, reason } => {
                let body = serde_json::json!({ "reason": reason }).to_string();
                let path = format!("/admin/certificates/{}/revoke", percent_encode(serial));
                let answer = api.admin("POST", &path, Some(body.into_bytes())).await?;
                api.print(answer)
            }
            CertAction::Status { serial } => {
                let path = format!("/certificate/status/{}", percent_encode(serial));
                let answer = api.admin("GET", &path, None).await?;
                api.print(answer)
            }
            CertAction::Get {
                client_id,
                secret_file,
                credentials: _,
                key_type,
                lifetime,
                out,
                cert_out,
                key_out,
            } => {
                let source = match (client_id, login) {
                    (Some(client_id), _) => TokenSource::Service {
                        client_id,
                        secret_file: secret_file.as_deref(),
                    },
                    (None, Some(login)) => TokenSource::Person(login),
                    // `run` loads the credentials whenever --client-id is absent.
                    (None, None) => {
                        return Err(ServiceError::Io {
                            context: "slcs cert get".into(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::InvalidInput,
                                "no credentials: pass --client-id or run `slcs login`",
                            ),
                        });
                    }
                };
                let request = CertGet {
                    source,
                    key_type,
                    lifetime: *lifetime,
                    out: out.as_deref(),
                    split: cert_out.as_deref().zip(key_out.as_deref()),
                };
                cert_get(api, &request).await
            }
        }
    })
}

/// How `cert get` obtains its access token; everything after that is
/// shared.
enum TokenSource<'a> {
    /// A service account: client credentials.
    Service {
        client_id: &'a str,
        secret_file: Option<&'a Path>,
    },
    /// A person signed in with `slcs login`: the stored refresh token.
    Person(PersonLogin),
}

struct CertGet<'a> {
    source: TokenSource<'a>,
    key_type: &'a str,
    lifetime: Option<u64>,
    out: Option<&'a Path>,
    split: Option<(&'a Path, &'a Path)>,
}

/// An access token for the certificate endpoint.
async fn certificate_token(api: &Remote, source: &TokenSource<'_>) -> Result<String, ServiceError> {
    let token = match source {
        TokenSource::Service {
            client_id,
            secret_file,
        } => client_credentials(api, client_id, *secret_file, Some("slcs:certificate")).await?,
        TokenSource::Person(login) => return refresh_login(api, login).await,
    };
    if token.status != 200 {
        api.print(token)?;
        return Err(unexpected_answer("the token endpoint"));
    }
    access_token_of(&token.json())
}

fn access_token_of(answer: &serde_json::Value) -> Result<String, ServiceError> {
    answer
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ServiceError::Io {
            context: "the token response".into(),
            source: std::io::Error::other("no access_token"),
        })
}

fn unexpected_answer(what: &str) -> ServiceError {
    ServiceError::Io {
        context: what.to_owned(),
        source: std::io::Error::other("unexpected answer"),
    }
}

async fn cert_get(api: &Remote, request: &CertGet<'_>) -> Result<(), ServiceError> {
    let refused = |context: String, detail: String| ServiceError::Io {
        context,
        source: std::io::Error::other(detail),
    };
    // The key type is checked before any token is obtained: a typo must
    // not spend a person's refresh token.
    let algorithm: &'static rcgen::SignatureAlgorithm = match request.key_type {
        "ecdsa-p256" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "ecdsa-p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "ed25519" => &rcgen::PKCS_ED25519,
        "rsa-2048" | "rsa-3072" => &rcgen::PKCS_RSA_SHA256,
        other => {
            return Err(refused(
                "--key-type".into(),
                format!(
                    "{other:?}: expected ecdsa-p256, ecdsa-p384, ed25519, rsa-2048 or rsa-3072"
                ),
            ));
        }
    };
    let access_token = certificate_token(api, &request.source).await?;
    let key = match request.key_type {
        "rsa-2048" => rcgen::KeyPair::generate_rsa_for(algorithm, rcgen::RsaKeySize::_2048),
        "rsa-3072" => rcgen::KeyPair::generate_rsa_for(algorithm, rcgen::RsaKeySize::_3072),
        _ => rcgen::KeyPair::generate_for(algorithm),
    }
    .map_err(|e| refused("key generation".into(), e.to_string()))?;
    // The subject is ignored by slcs (it names the token's subject); an
    // empty one keeps the CSR free of anything misleading.
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| refused("the certificate request".into(), e.to_string()))?;
    let mut form = format!("certificate_request={}", percent_encode(&csr));
    if let Some(lifetime) = request.lifetime {
        form.push_str(&format!("&lifetime={lifetime}"));
    }
    let answer = api
        .client
        .send(
            "POST",
            "/certificate",
            Some(&format!("Bearer {access_token}")),
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
        )
        .await
        .map_err(remote_error)?;
    if answer.status != 200 {
        return api.print(answer);
    }
    let issued = answer.json();
    let text = |name: &str| {
        issued
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut certificates = text("certificate");
    for link in issued
        .get("chain")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
    {
        certificates.push_str(link);
    }
    // The new private key, in our buffers, is wiped once written.
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let written = match request.split {
        Some((cert_path, key_path)) => {
            crate::secure_fs::replace_file(key_path, key_pem.as_bytes(), true)
                .map_err(|source| io_error(key_path, source))?;
            crate::secure_fs::replace_file(cert_path, certificates.as_bytes(), false)
                .map_err(|source| io_error(cert_path, source))?;
            vec![cert_path.to_path_buf(), key_path.to_path_buf()]
        }
        None => {
            let path = match request.out {
                Some(path) => path.to_path_buf(),
                None => default_proxy_path()?,
            };
            // The grid convention (MyProxy, Globus): certificate, key, chain.
            // Sized up front: growing would leave a copy of the key behind.
            let mut bundle =
                zeroize::Zeroizing::new(String::with_capacity(key_pem.len() + certificates.len()));
            bundle.push_str(&text("certificate"));
            bundle.push_str(&key_pem);
            bundle.push_str(certificates.trim_start_matches(&text("certificate")));
            crate::secure_fs::replace_file(&path, bundle.as_bytes(), true)
                .map_err(|source| io_error(&path, source))?;
            vec![path]
        }
    };
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    if api.json {
        say!(
            "{}",
            serde_json::json!({
                "files": files,
                "serial": text("serial"),
                "subject": text("subject"),
                "not_after": text("not_after"),
                "lifetime": issued.get("lifetime"),
                "lifetime_note": issued.get("lifetime_note"),
            })
        );
    } else {
        say!(
            "slcs: certificate {} for {}",
            text("serial"),
            text("subject")
        );
        say!("slcs: valid until {}", text("not_after"));
        if let Some(note) = issued
            .get("lifetime_note")
            .and_then(serde_json::Value::as_str)
        {
            say!("slcs: {note}");
        }
        say!("slcs: written to {}", files.join(" and "));
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> ServiceError {
    ServiceError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    }
}

/// `/tmp/x509up_u<uid>`, the location grid tools look in.
fn default_proxy_path() -> Result<PathBuf, ServiceError> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self")
        .map_err(|source| ServiceError::Io {
            context: "cannot find the user id (/proc/self)".into(),
            source,
        })?
        .uid();
    Ok(PathBuf::from(format!("/tmp/x509up_u{uid}")))
}

fn print_report(report: &InitReport) {
    if report.created.is_empty() {
        return;
    }
    if report.created_dev_ca {
        say!(
            "slcs: created a DEVELOPMENT CA ({}). Do not use it in production: see certs/README.md.",
            report
                .ca_key_type
                .map(CaKeyType::name)
                .unwrap_or("unknown key type")
        );
    }
    for (what, path) in &report.created {
        say!("slcs: {what}: {}", path.display());
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (the log's disk is full) is
        // dropped. Left on, tracing-subscriber reports the failure with
        // `eprintln!`, which panics when stderr cannot be written either,
        // taking the request down with it (found by ATTACKS ROB-08's test).
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, ServiceError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads.max(1));
    }
    builder
        .enable_all()
        .build()
        .map_err(|source| ServiceError::Io {
            context: "cannot start the async runtime".into(),
            source,
        })
}

// ---------------------------------------------------------------------------
// `slcs bench`

fn bench(cli: &Cli, args: &BenchArgs) -> Result<(), ServiceError> {
    let invalid = |message: String| {
        ServiceError::Config(config::ConfigError::Invalid {
            key: "bench",
            message,
        })
    };
    let durable = match args.log.as_str() {
        "durable" => true,
        "memory" => false,
        other => {
            return Err(invalid(format!(
                "--log must be durable or memory, got {other:?}"
            )));
        }
    };
    // A throwaway data directory unless one is given (the durability test
    // gives one, to find the serials afterwards).
    let scratch = if cli.data_dir.is_none() {
        let mut tag = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut tag);
        Some(std::env::temp_dir().join(format!("slcs-bench-{}", hex::encode(tag))))
    } else {
        None
    };
    let config = load_config(
        cli,
        CliOverrides {
            data_dir: scratch.clone().or_else(|| cli.data_dir.clone()),
            ca_key_type: Some(args.ca_key_type.clone()),
            ..CliOverrides::default()
        },
    )?;
    let csrs = bench_csrs(&args.csr_key_type).map_err(invalid)?;
    let clock = SystemClock;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    // One runtime for opening and for the run: a PostgreSQL pool belongs
    // to the runtime that made it.
    let bench_runtime = runtime(Some(threads))?;
    let opened = bench_runtime.block_on(service::open(
        &config,
        &clock,
        if scratch.is_some() {
            StartMode::Init
        } else {
            StartMode::Run
        },
        false,
    ))?;
    let engine = if durable {
        Arc::clone(&opened.engine)
    } else {
        Arc::new(IssuanceEngine::start(
            &config,
            Arc::new(MemoryIssuanceLog::default()) as Arc<dyn IssuanceLog>,
            clock.now(),
        )?)
    };
    let request = bench_request(clock.now());
    let result = bench_runtime.block_on(run_bench(
        engine,
        Arc::new(csrs),
        request,
        args.count,
        args.concurrency.max(1),
        args.print_serials,
    ));
    let (flushes, writes) = opened.sled.as_ref().map_or((0, 0), |sled| {
        let stats = sled.commit_stats();
        (
            stats.flushes.load(Ordering::Relaxed),
            stats.writes.load(Ordering::Relaxed),
        )
    });
    drop(opened);
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let (issued, elapsed, failures) = result;
    let rate = issued as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    if args.json {
        say!(
            "{}",
            serde_json::json!({
                "ca_key_type": args.ca_key_type,
                "csr_key_type": args.csr_key_type,
                "log": args.log,
                "threads": threads,
                "concurrency": args.concurrency,
                "issued": issued,
                "failures": failures,
                "seconds": elapsed.as_secs_f64(),
                "certificates_per_second": rate,
                "fsyncs": flushes,
                "durable_writes": writes,
            })
        );
    } else {
        say!(
            "bench: CA {} · CSR {} · log {} · {threads} thread(s) · {} concurrent",
            args.ca_key_type,
            args.csr_key_type,
            args.log,
            args.concurrency
        );
        say!(
            "issued {issued} certificates in {:.2} s: {rate:.0} certificates/s ({failures} failures)",
            elapsed.as_secs_f64()
        );
        if durable && flushes > 0 {
            say!(
                "group commit: {writes} durable writes in {flushes} fsyncs ({:.1} writes per fsync)",
                writes as f64 / flushes as f64
            );
        }
    }
    Ok(())
}

async fn run_bench(
    engine: Arc<IssuanceEngine>,
    csrs: Arc<Vec<Vec<u8>>>,
    request: IssuanceRequest,
    count: u64,
    concurrency: usize,
    print_serials: bool,
) -> (u64, Duration, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (engine, csrs, next, failures, request) = (
            Arc::clone(&engine),
            Arc::clone(&csrs),
            Arc::clone(&next),
            Arc::clone(&failures),
            Arc::clone(&request),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let index = usize::try_from(n).unwrap_or(0) % csrs.len().max(1);
                let Some(csr) = csrs.get(index) else { break };
                #[allow(clippy::disallowed_methods)] // benchmarks read real time
                let now = OffsetDateTime::now_utc();
                match engine.issue(csr, &request, now).await {
                    Ok(issued) if print_serials => {
                        // Printed only after the engine acknowledged, i.e.
                        // after the certificate is durable.
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "serial {}", issued.serial);
                        let _ = out.flush();
                    }
                    Ok(_) => {}
                    Err(error) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "bench issuance failed");
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    (count.saturating_sub(failed), elapsed, failed)
}

fn bench_csrs(kind: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut csrs = Vec::with_capacity(32);
    for _ in 0..32 {
        let key = match kind {
            "ecdsa-p256" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            "ecdsa-p384" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            "ed25519" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
            "rsa-2048" => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            other => return Err(format!("unknown --csr-key-type {other:?}")),
        }
        .map_err(|e| e.to_string())?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .map_err(|e| e.to_string())?;
        csrs.push(csr.der().to_vec());
    }
    Ok(csrs)
}

/// A realistic three-step chain: portal → WPS → job broker.
fn bench_request(now: OffsetDateTime) -> IssuanceRequest {
    let step = |client: &str, grant: &str, auth: &str| DelegationStep {
        client_id: client.into(),
        client_name: Some(format!("{client} (benchmark)")),
        grant_type: grant.into(),
        scope: "openid slcs:certificate opendap:read".into(),
        time: now.replace_nanosecond(0).unwrap_or(now),
        client_auth: auth.into(),
        approval_id: Some("ap-bench".into()),
    };
    IssuanceRequest {
        identity: CertificateIdentity::Person {
            issuer: "https://slcs.example".into(),
            subject: "bench-user".into(),
            display_name: "Bench User".into(),
        },
        provenance: DelegationProvenance {
            issuer: "https://slcs.example".into(),
            subject: "bench-user".into(),
            auth_time: now.replace_nanosecond(0).unwrap_or(now),
            auth_context: Some("https://refeds.org/assurance/IAP/medium".into()),
            grant_id: "grant-bench".into(),
            steps: vec![
                step("portal", "authorization_code", "client_secret_basic"),
                step("wps", "token-exchange", "client_secret_basic"),
                step("broker-a", "certificate", "tls_client_auth"),
            ],
            token_id: "jti-bench".into(),
        },
        requested_lifetime_secs: Some(3600),
        not_after_limits: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn passwords_and_secrets_have_no_command_line_flag() {
        for args in [
            &[
                "slcs",
                "user",
                "add",
                "alice",
                "--display-name",
                "A",
                "--password",
                "x",
            ][..],
            &["slcs", "user", "set-password", "alice", "--password", "x"],
            &["slcs", "user", "set-password", "alice", "secret"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        let both = Cli::try_parse_from([
            "slcs",
            "user",
            "add",
            "alice",
            "--display-name",
            "A",
            "--password-file",
            "f",
            "--password-stdin",
        ]);
        assert!(both.is_err(), "one password source at a time");
        let add = Cli::try_parse_from([
            "slcs",
            "user",
            "add",
            "alice",
            "--display-name",
            "Alice Smith",
            "--group",
            "g1",
            "--group",
            "g2",
            "--unit",
            "all:projects:hbp",
            "--guest",
        ])
        .unwrap();
        let Command::User {
            action:
                UserAction::Add {
                    groups,
                    units,
                    guest,
                    ..
                },
            ..
        } = add.command
        else {
            panic!("not user add");
        };
        assert_eq!(groups, ["g1", "g2"]);
        assert_eq!(units, ["all:projects:hbp"]);
        assert!(guest);
    }

    #[test]
    fn cert_get_takes_a_service_account_or_the_stored_login() {
        let person = Cli::try_parse_from(["slcs", "cert", "get", "--credentials", "c.json"]);
        assert!(person.is_ok());
        let service = Cli::try_parse_from(["slcs", "cert", "get", "--client-id", "svc"]);
        assert!(service.is_ok());
        // A secret file means a service account; credentials mean a person.
        assert!(Cli::try_parse_from(["slcs", "cert", "get", "--secret-file", "s"]).is_err());
        assert!(
            Cli::try_parse_from([
                "slcs",
                "cert",
                "get",
                "--client-id",
                "svc",
                "--credentials",
                "c.json"
            ])
            .is_err()
        );
        let login = Cli::try_parse_from(["slcs", "login", "--client-id", "cli"]).unwrap();
        let Command::Login { scope, .. } = login.command else {
            panic!("not login");
        };
        assert_eq!(scope, "openid slcs:certificate offline_access");
    }

    #[test]
    fn one_trailing_newline_is_dropped_and_nothing_else() {
        assert_eq!(strip_one_newline("pw\n".into()), "pw");
        assert_eq!(strip_one_newline("pw\r\n".into()), "pw");
        assert_eq!(strip_one_newline("pw\n\n".into()), "pw\n");
        assert_eq!(strip_one_newline(" pw \t".into()), " pw \t");
        assert_eq!(strip_one_newline("pw\r".into()), "pw\r");
        assert_eq!(strip_one_newline(String::new()), "");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, " correct horse \r\n").unwrap();
        assert_eq!(read_password(Some(&file)).unwrap(), " correct horse ");
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(read_password(Some(&file)).is_err(), "not UTF-8");
    }

    #[test]
    fn credentials_live_in_the_xdg_config_directory() {
        let path = |xdg: Option<&str>, home: Option<&str>| {
            default_credentials_path(xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            path(Some("/x/config"), Some("/home/a")),
            Some(PathBuf::from("/x/config/slcs/credentials.json"))
        );
        assert_eq!(
            path(None, Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/slcs/credentials.json"))
        );
        // The XDG specification ignores relative paths (and empty ones).
        assert_eq!(
            path(Some("relative"), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/slcs/credentials.json"))
        );
        assert_eq!(
            path(Some(""), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/slcs/credentials.json"))
        );
        assert_eq!(path(None, None), None);
    }

    #[test]
    fn credentials_are_private_from_the_first_byte_and_refused_when_exposed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("slcs").join("credentials.json");
        let stored = StoredLogin {
            server: "https://slcs.example:8443".into(),
            client_id: "cli".into(),
            refresh_token: "rt-1".into(),
            scope: DEFAULT_LOGIN_SCOPE.into(),
            obtained_at: 1_700_000_000,
        };
        stored.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        let loaded = PersonLogin::load(Some(&path)).unwrap();
        assert_eq!(loaded.path, path);
        assert_eq!(loaded.stored.refresh_token, "rt-1");
        assert_eq!(loaded.stored.server, stored.server);
        drop(loaded);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "server": "https://slcs.example:8443",
                "client_id": "cli",
                "refresh_token": "rt-1",
                "scope": DEFAULT_LOGIN_SCOPE,
                "obtained_at": 1_700_000_000,
            })
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            PersonLogin::load(Some(&path)).is_err(),
            "readable by others"
        );
        // Saving again replaces the file, private again.
        stored.save(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn one_process_at_a_time_holds_the_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        let held = lock_credentials(&path).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let lock = lock_credentials(&path);
                let _ = done.send(());
                lock.map(drop)
            })
        };
        assert!(
            finished.recv_timeout(Duration::from_millis(200)).is_err(),
            "the second lock waits"
        );
        drop(held);
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn token_endpoint_answers_map_to_rfc_8628_poll_outcomes() {
        let error = |code: &str| serde_json::json!({ "error": code });
        assert_eq!(
            poll_outcome(400, error("authorization_pending")),
            Poll::Pending
        );
        assert_eq!(poll_outcome(400, error("slow_down")), Poll::SlowDown);
        let tokens = serde_json::json!({ "access_token": "a", "refresh_token": "r" });
        assert_eq!(poll_outcome(200, tokens.clone()), Poll::Granted(tokens));
        for (status, answer, expected) in [
            (400, error("access_denied"), "refused"),
            (400, error("expired_token"), "expired"),
            (
                401,
                serde_json::json!({ "error": "invalid_client", "error_description": "bad\u{1b}[2J" }),
                "401 invalid_client: bad[2J",
            ),
            (503, serde_json::json!("oops"), "503"),
        ] {
            let Poll::Failed(message) = poll_outcome(status, answer) else {
                panic!("{status} should stop polling");
            };
            assert!(message.contains(expected), "{message}");
        }
    }

    fn scripted(
        script: Vec<Poll>,
    ) -> (
        Arc<AtomicUsize>,
        impl FnMut() -> std::future::Ready<Result<Poll, ServiceError>>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let mut script = script.into_iter();
        let poll = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(script.next().unwrap_or(Poll::Pending)))
        };
        (calls, poll)
    }

    #[test]
    fn device_polling_waits_slows_down_and_stops_at_expiry() {
        let runtime = runtime(Some(1)).unwrap();
        let ms = Duration::from_millis;

        // Pending, slow_down, then tokens: three polls, the wait after the
        // slow_down one step longer.
        let tokens = serde_json::json!({ "refresh_token": "r" });
        let (calls, poll) = scripted(vec![
            Poll::Pending,
            Poll::SlowDown,
            Poll::Granted(tokens.clone()),
        ]);
        let started = Instant::now();
        let got = runtime
            .block_on(poll_device(ms(20), ms(5_000), ms(100), poll))
            .unwrap();
        assert_eq!(got, tokens);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            started.elapsed() >= ms(20 + 20 + 120),
            "{:?}",
            started.elapsed()
        );

        // Never confirmed: bounded by expires_in, no busy loop.
        let (calls, poll) = scripted(Vec::new());
        let started = Instant::now();
        let error = runtime
            .block_on(poll_device(ms(50), ms(300), ms(100), poll))
            .unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
        assert!(
            started.elapsed() <= ms(300 + 200),
            "{:?}",
            started.elapsed()
        );
        let polls = calls.load(Ordering::SeqCst);
        assert!(
            (4..=6).contains(&polls),
            "{polls} polls in 300 ms every 50 ms"
        );

        // A refusal stops at once.
        let (calls, poll) = scripted(vec![Poll::Failed("the sign-in was refused".into())]);
        let error = runtime
            .block_on(poll_device(ms(10), ms(5_000), ms(10), poll))
            .unwrap_err();
        assert!(error.to_string().contains("refused"), "{error}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
