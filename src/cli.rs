//! The `slcs` command line: `init`, `serve`, `config validate`, `inspect`,
//! `bench`. Argument parsing and output only; the work is done by
//! [`crate::service`] and the domain modules.

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
    },
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
    /// Obtain tokens from the running server.
    Token {
        #[command(subcommand)]
        action: TokenAction,
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
    /// Read the audit log of the running server (admin token).
    Audit {
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
    /// client-credentials, introspect, certificate, mixed, or all (each in turn).
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
    /// Get a token by client credentials (secret from SLCS_CLIENT_SECRET or
    /// --secret-file), make a key, send its CSR, and write certificate and
    /// key (0600) to /tmp/x509up_u<uid> unless --out/--cert-out say otherwise.
    Get {
        /// Client id of the service account.
        #[arg(long)]
        client_id: String,
        /// File holding the client secret.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
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
            let opened = service::open(&config, &SystemClock, StartMode::Init)?;
            print_report(&opened.report);
            if opened.report.created.is_empty() {
                say!(
                    "slcs: data directory {} is already initialised; nothing created",
                    config.data_dir.display()
                );
            }
            Ok(())
        }
        Command::Serve { listen } => {
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
        Command::Token { action, server } => {
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(token_command(&api, action))
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
            let api = remote(&cli, server)?;
            runtime(Some(1))?.block_on(cert_command(&api, action))
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
            after,
            limit,
            server,
        } => {
            let api = remote(&cli, server)?;
            let path = format!("/admin/audit?after={after}&limit={limit}");
            runtime(Some(1))?.block_on(async {
                let answer = api.admin("GET", &path, None).await?;
                api.print(answer)
            })
        }
    }
}

// ---------------------------------------------------------------------------
// Verbs that talk to the running server.

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
    let config = load_config(cli, CliOverrides::default())?;
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| format!("https://localhost:{}", config.server.listen.port()));
    let cacert = args
        .cacert
        .clone()
        .unwrap_or_else(|| config.ca.cert.clone());
    let client = crate::admin_client::AdminClient::new(&server, &cacert).map_err(remote_error)?;
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

fn cert_command<'a>(api: &'a Remote, action: &'a CertAction) -> RemoteFuture<'a> {
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
                key_type,
                lifetime,
                out,
                cert_out,
                key_out,
            } => {
                let request = CertGet {
                    client_id,
                    secret_file: secret_file.as_deref(),
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

struct CertGet<'a> {
    client_id: &'a str,
    secret_file: Option<&'a Path>,
    key_type: &'a str,
    lifetime: Option<u64>,
    out: Option<&'a Path>,
    split: Option<(&'a Path, &'a Path)>,
}

async fn cert_get(api: &Remote, request: &CertGet<'_>) -> Result<(), ServiceError> {
    let refused = |context: String, detail: String| ServiceError::Io {
        context,
        source: std::io::Error::other(detail),
    };
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
    let token = client_credentials(
        api,
        request.client_id,
        request.secret_file,
        Some("slcs:certificate"),
    )
    .await?;
    if token.status != 200 {
        return api.print(token);
    }
    let access_token = token
        .json()
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| refused("the token response".into(), "no access_token".into()))?;
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
    let key_pem = key.serialize_pem();
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
            let mut bundle = text("certificate");
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
    let opened = service::open(
        &config,
        &clock,
        if scratch.is_some() {
            StartMode::Init
        } else {
            StartMode::Run
        },
    )?;
    let engine = if durable {
        Arc::clone(&opened.engine)
    } else {
        Arc::new(IssuanceEngine::start(
            &config,
            Arc::new(MemoryIssuanceLog::default()) as Arc<dyn IssuanceLog>,
            clock.now(),
        )?)
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let request = bench_request(clock.now());
    let result = runtime(Some(threads))?.block_on(run_bench(
        engine,
        Arc::new(csrs),
        request,
        args.count,
        args.concurrency.max(1),
        args.print_serials,
    ));
    let stats = opened.store.commit_stats();
    let flushes = stats.flushes.load(Ordering::Relaxed);
    let writes = stats.writes.load(Ordering::Relaxed);
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
