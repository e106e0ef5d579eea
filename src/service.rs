//! Process start-up and shutdown: lock the data directory, create missing
//! material, open the store, start the issuance engine, serve, and on
//! SIGTERM/SIGINT stop accepting, drain, and flush.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fs2::FileExt as _;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::config::{PostgresConfig, StoreBackend};
use crate::http::server::{TlsSetupError, serve as serve_http, tls_config};
use crate::http::{AppState, RequestLimits, build_app};
use crate::oauth::admin::{AdminToken, AdminTokenError};
use crate::oauth::{TokenService, TokenServiceError};
use crate::pki::ca::{CaError, InitReport, create_dir_private, init_data_dir};
use crate::pki::issuer::{EngineError, IssuanceEngine};
use crate::pki::trustroots::{TrustRootError, render_trustroots, trust_root_files};
use crate::store::postgres::{MigrationReport, PgOptions, PgStore};
use crate::store::sled::{OpenMode, SledOptions, SledStore};
use crate::store::{Store, StoreError};

/// Why the service could not start or stopped abnormally. Each maps to an
/// exit code (see [`ServiceError::exit_code`] and docs/operations.md).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another process holds the data directory.
    #[error("the data directory {0} is locked by another slcs process")]
    Locked(PathBuf),
    /// CA or TLS material problem.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The store cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The issuance engine's start-up checks failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The token service could not start (signing keys, pepper).
    #[error(transparent)]
    Tokens(#[from] TokenServiceError),
    /// Local accounts could not be set up.
    #[error("user accounts: {0}")]
    Users(String),
    /// The admin token file is unusable.
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    /// Trust-root files could not be built.
    #[error(transparent)]
    TrustRoots(#[from] TrustRootError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why.
        source: std::io::Error,
    },
}

impl ServiceError {
    /// The process exit code: 2 configuration, 3 locked, 4 store unusable
    /// (corrupt, missing, newer schema, other CA), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Locked(_) | Self::Store(StoreError::Locked(_)) => 3,
            Self::Store(
                StoreError::Corrupt { .. }
                | StoreError::Missing(_)
                | StoreError::SchemaBehind { .. }
                | StoreError::SchemaTooNew { .. }
                | StoreError::ForeignCa(_)
                | StoreError::Decode { .. },
            ) => 4,
            _ => 1,
        }
    }
}

/// An exclusive lock on the data directory, held for the process lifetime.
/// One process per sled store; a second one fails fast with a clear error.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the data-directory lock (creating the directory if needed).
pub fn lock_data_dir(config: &Config) -> Result<DataDirLock, ServiceError> {
    create_dir_private(&config.data_dir)?;
    let path = config.lock_path();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServiceError::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
    file.try_lock_exclusive()
        .map_err(|_| ServiceError::Locked(config.data_dir.clone()))?;
    Ok(DataDirLock { _file: file })
}

/// Everything a running instance needs, opened and checked.
pub struct Opened {
    /// Held until the process ends.
    pub lock: DataDirLock,
    /// What was created on this start.
    pub report: InitReport,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The same store when it is sled (its commit counters, for `slcs bench`).
    pub sled: Option<Arc<SledStore>>,
    /// The issuance engine.
    pub engine: Arc<IssuanceEngine>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// Whether opening may create the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// `slcs init`: create whatever is missing, the store included.
    Init,
    /// `slcs serve` and tools: create material only on an empty data
    /// directory; an initialised directory must have its store.
    Run,
}

/// Locks the data directory, creates missing material, opens the store and
/// starts the engine. On PostgreSQL, `slcs init` (and `serve --migrate`)
/// also applies the schema migrations the database lacks.
pub async fn open(
    config: &Config,
    clock: &dyn Clock,
    mode: StartMode,
    migrate: bool,
) -> Result<Opened, ServiceError> {
    let lock = lock_data_dir(config)?;
    let mut report = init_data_dir(config, clock.now())?;
    if mode == StartMode::Init && !config.pepper_path().exists() {
        // Made here too (not only at the first `serve`), so that a freshly
        // initialised directory holds every secret a replica copies.
        crate::oauth::secrets::SecretPepper::load_or_create(&config.pepper_path())
            .map_err(|e| ServiceError::Tokens(crate::oauth::TokenServiceError::Pepper(e)))?;
        report
            .created
            .push(("secret pepper (0600)", config.pepper_path()));
    }
    let ca = crate::pki::ca::load_ca_certificate(config)?;
    let (store, sled): (Arc<dyn Store>, _) = match &config.store.backend {
        StoreBackend::Sled => {
            let store_mode = if mode == StartMode::Init || report.created_dev_ca {
                OpenMode::CreateIfMissing
            } else {
                OpenMode::MustExist
            };
            let store_existed = config.store.path.exists();
            let store = Arc::new(SledStore::open(&SledOptions {
                path: config.store.path.clone(),
                cache_capacity_bytes: config.store.cache_capacity_bytes,
                mode: store_mode,
                ca_key_sha256: Some(ca.key_sha256_hex()),
            })?);
            if !store_existed {
                report
                    .created
                    .push(("issuance store (empty)", config.store.path.clone()));
            }
            (Arc::clone(&store) as Arc<dyn Store>, Some(store))
        }
        StoreBackend::Postgres(postgres) => {
            let options = postgres_options(postgres, Some(ca.key_sha256_hex()))?;
            if migrate || mode == StartMode::Init {
                let migrated = PgStore::migrate(&options).await?;
                if migrated.from != migrated.to {
                    tracing::info!(
                        from = migrated.from,
                        to = migrated.to,
                        "PostgreSQL schema migrated"
                    );
                }
            }
            let store = PgStore::open(&options).await?;
            tracing::info!(database = %store.display(), "PostgreSQL store opened");
            (Arc::new(store) as Arc<dyn Store>, None)
        }
    };
    let engine = Arc::new(IssuanceEngine::start(
        config,
        Arc::clone(&store) as Arc<dyn crate::store::IssuanceLog>,
        clock.now(),
    )?);
    Ok(Opened {
        lock,
        report,
        store,
        sled,
        engine,
    })
}

/// The PostgreSQL options of `config`, the password read from its file.
pub fn postgres_options(
    config: &PostgresConfig,
    ca_key_sha256: Option<String>,
) -> Result<PgOptions, ServiceError> {
    let password = match &config.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ServiceError::Io {
                context: format!(
                    "cannot read the PostgreSQL password file {}",
                    path.display()
                ),
                source,
            })?;
            let password = zeroize::Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
            drop(zeroize::Zeroizing::new(text));
            Some(password)
        }
        None => None,
    };
    Ok(PgOptions {
        url: config.url.clone(),
        password,
        max_connections: config.max_connections,
        min_connections: config.min_connections,
        acquire_timeout: config.acquire_timeout,
        statement_timeout: config.statement_timeout,
        ca_key_sha256,
    })
}

/// Opens the configured store alone (no engine, no server) for `slcs
/// store`: a sled store under the data directory's lock; PostgreSQL
/// migrated first when `create`.
async fn open_store_only(
    config: &Config,
    create: bool,
) -> Result<(Option<DataDirLock>, Arc<dyn Store>), ServiceError> {
    let ca = crate::pki::ca::load_ca_certificate(config)?;
    match &config.store.backend {
        StoreBackend::Sled => {
            let lock = lock_data_dir(config)?;
            let store = SledStore::open(&SledOptions {
                path: config.store.path.clone(),
                cache_capacity_bytes: config.store.cache_capacity_bytes,
                mode: if create {
                    OpenMode::CreateIfMissing
                } else {
                    OpenMode::MustExist
                },
                ca_key_sha256: Some(ca.key_sha256_hex()),
            })?;
            Ok((Some(lock), Arc::new(store)))
        }
        StoreBackend::Postgres(postgres) => {
            let options = postgres_options(postgres, Some(ca.key_sha256_hex()))?;
            if create {
                PgStore::migrate(&options).await?;
            }
            Ok((None, Arc::new(PgStore::open(&options).await?)))
        }
    }
}

/// `slcs store export`: the configured store as JSON lines on `out`.
pub async fn export_store(
    config: &Config,
    out: impl std::io::Write + Send,
    now: time::OffsetDateTime,
) -> Result<crate::store::export::Moved, ServiceError> {
    let (_lock, store) = open_store_only(config, false).await?;
    Ok(crate::store::export::export(store.as_ref(), out, now).await?)
}

/// `slcs store import`: an export into the configured, empty store.
pub async fn import_store(
    config: &Config,
    path: &std::path::Path,
) -> Result<crate::store::export::Moved, ServiceError> {
    let (_lock, store) = open_store_only(config, true).await?;
    Ok(crate::store::export::import(store.as_ref(), path).await?)
}

/// `slcs migrate`: brings the configured PostgreSQL database to this
/// build's schema.
pub async fn migrate(config: &Config) -> Result<MigrationReport, ServiceError> {
    let StoreBackend::Postgres(postgres) = &config.store.backend else {
        return Err(ServiceError::Config(ConfigError::Invalid {
            key: "store.backend",
            message: "`slcs migrate` is for the postgres backend; sled stores migrate themselves when opened".into(),
        }));
    };
    Ok(PgStore::migrate(&postgres_options(postgres, None)?).await?)
}

/// Runs the HTTPS service until SIGTERM or SIGINT. `on_ready` is called with
/// the bound address once the listener accepts connections.
pub async fn serve(
    config: &Config,
    migrate: bool,
    clock: Arc<dyn Clock>,
    on_start: impl FnOnce(&InitReport),
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServiceError> {
    let opened = open(config, clock.as_ref(), StartMode::Run, migrate).await?;
    on_start(&opened.report);
    crate::pki::ca::check_private_mode(&config.server.tls_key)?;
    let client_roots = [rustls_pki_types::CertificateDer::from(
        opened.engine.ca_certificate().der().to_vec(),
    )];
    let tls = tls_config(
        &config.server.tls_cert,
        &config.server.tls_key,
        &client_roots,
    )?;
    let files = trust_root_files(opened.engine.ca_certificate(), &config.ca.profile.subject)?;
    let store: Arc<dyn Store> = Arc::clone(&opened.store);
    let users = Arc::new(
        crate::users::LocalUsers::new(Arc::clone(&store), config.users.password)
            .map_err(|e| ServiceError::Users(e.to_string()))?,
    );
    let tokens = Arc::new(
        TokenService::start(
            config,
            Arc::clone(&store),
            Arc::clone(&users) as Arc<dyn crate::users::UserSource>,
            clock.now(),
        )
        .await?,
    );
    let metrics = crate::observability::install();
    let upkeep = metrics.clone().map(crate::observability::spawn_upkeep);
    let maintenance =
        spawn_maintenance(Arc::clone(&tokens), Arc::clone(&store), Arc::clone(&clock));
    let key_refresh = store
        .shares_signing_keys()
        .then(|| spawn_key_refresh(Arc::clone(&tokens)));
    let admin = AdminToken::load(&config.admin_token_path())?;
    let development = crate::pki::ca::is_development_ca(config);
    if development {
        tracing::warn!(
            "development CA in use: loopback redirect URIs are accepted at registration"
        );
    }
    let state = AppState::new(
        store,
        Arc::clone(&opened.engine),
        tokens,
        config.certificate,
        admin,
        development,
        clock,
        render_trustroots(&files),
        metrics.clone(),
        crate::http::PeopleSetup {
            users,
            config: config.users,
        },
    );
    let app = build_app(
        state,
        RequestLimits {
            max_body_bytes: config.server.max_body_bytes,
            request_timeout: config.server.request_timeout,
            max_in_flight: config.server.max_in_flight,
            rate_per_address: config.server.rate_per_address,
            rate_per_client: config.server.rate_per_client,
        },
    );
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServiceError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServiceError::Io {
        context: "cannot read the listen address".into(),
        source,
    })?;
    tracing::info!(
        addr = %local,
        ca_key = %opened.engine.ca_certificate().key_sha256_hex(),
        profile = %config.ca.profile_source,
        "slcs listening"
    );
    on_ready(local);
    // Stops on a signal, or when the store can no longer make writes
    // durable: see `store_watchdog`.
    let failed_store = std::sync::Mutex::new(None);
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => {}
            detail = store_watchdog(Arc::clone(&opened.store)) => {
                tracing::error!(
                    %detail,
                    "the store can no longer make writes durable; stopping so that a supervisor restarts slcs once the disk has space again"
                );
                *failed_store.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(detail);
            }
        }
    };
    serve_http(listener, app, tls, &config.server, stop).await;
    maintenance.abort();
    if let Some(key_refresh) = key_refresh {
        key_refresh.abort();
    }
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    let failed_store = failed_store
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(detail) = failed_store {
        return Err(ServiceError::Store(StoreError::Io(format!(
            "the store can no longer make writes durable ({detail}); free space on the store's disk and start slcs again"
        ))));
    }

    // In-flight requests are done (or cut at the grace period): make sure
    // everything written is on disk before the process exits.
    opened.store.flush().await?;
    tracing::info!("store flushed; stopped");
    Ok(())
}

/// Hourly upkeep: signing-key rotation once the current key is older than
/// `oauth.key_rotation_days`, and purging store entries
/// that can no longer matter (ended quota windows, revocations of expired
/// tokens, used assertion ids), so the store does not grow with traffic.
fn spawn_maintenance(
    tokens: Arc<TokenService>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(error) = tokens.rotate_keys(false, "scheduler", clock.now()).await {
                tracing::error!(%error, "scheduled key rotation failed");
            }
            // Tokens are refused past exp + 30 s of leeway; ten minutes of
            // grace keeps a revocation well beyond any clock skew.
            match store
                .purge_expired(clock.now(), time::Duration::minutes(10))
                .await
            {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "expired store entries purged"),
                Err(error) => tracing::error!(%error, "purging expired store entries failed"),
            }
        }
    })
}

/// Replicas sharing a store re-read its signing keys every
/// `oauth.shared_keys_refresh_secs`, so a rotation made by one reaches
/// every replica's signing and JWK set within that time.
fn spawn_key_refresh(tokens: Arc<TokenService>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(tokens.config().shared_keys_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = tokens.refresh_shared_keys().await {
                tracing::warn!(%error, "reading the shared signing keys failed");
            }
        }
    })
}

/// How often the store is checked while serving, and after how many
/// failed checks in a row slcs stops.
const STORE_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);
const STORE_CHECK_FAILURES: u32 = 3;

/// Completes, with the store's error, once the store has failed
/// [`STORE_CHECK_FAILURES`] durable write round trips in a row.
///
/// ATTACKS ROB-08: a write that fails (a full disk) is answered 503 and
/// never acknowledged, but sled then refuses every later write with the
/// same error, even once space returns. Restarting is the recovery, and it
/// is safe: whatever was acknowledged is durable already, and a restart
/// reopens the store from disk. So slcs stops (gracefully: requests in
/// flight are answered first, with 503) and exits non-zero, for its
/// supervisor to start it again; until the disk has space, it will not
/// start. A disk that recovers between checks resets the count.
///
/// A store that recovers by itself (PostgreSQL: the pool reconnects once
/// the database is back) is only watched: requests meanwhile fail closed
/// with 503, and the replica serves again without a restart.
async fn store_watchdog(store: Arc<dyn Store>) -> String {
    let mut failures = 0;
    let mut tick = tokio::time::interval(STORE_CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let health = store.health().await;
        if health.ok {
            if failures > 0 {
                tracing::info!(failures, "store reachable again");
            }
            failures = 0;
            continue;
        }
        failures += 1;
        let detail = health.error.unwrap_or_else(|| "unknown error".into());
        tracing::warn!(%detail, failures, "store health check failed");
        if failures >= STORE_CHECK_FAILURES && !store.recovers_by_itself() {
            return detail;
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
