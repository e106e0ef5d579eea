//! The load harness behind `slcs load`: drives a running slcs over HTTPS
//! keep-alive with a named workload and reports throughput, latency
//! percentiles, errors by status, the server's CPU per request and peak RSS
//! (from `/proc`, when its pid is given), and the machine's own signing
//! ceiling, measured in the same run with the crypto library slcs uses, so
//! that results read as a fraction of what the machine can do.
//!
//! Everything a workload needs (a service client, tokens, a pool of CSRs)
//! is made before the clock starts; requests during the warm-up are not
//! counted. Each of `concurrency` workers holds one connection and sends
//! one request at a time (a closed loop, like `wrk`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admin_client::{AdminClient, Answer, ClientError, Connection, percent_encode};

mod people;

/// A named workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `POST /token`, client credentials with HTTP Basic.
    ClientCredentials,
    /// `POST /introspect` of a live token.
    Introspect,
    /// `POST /certificate` with a CSR from the pool.
    Certificate,
    /// Tokens, introspections and certificates interleaved 2:2:1.
    Mixed,
    /// `POST /token` refresh grants, each rotating the worker's refresh
    /// token (a person signed in and approved before the clock starts).
    Refresh,
    /// Whole authorization code flows for a signed-in person whose
    /// approval covers the request: `GET /authorize` (a redirect with a
    /// code) and the code's redemption with PKCE, counted as one.
    CodeFlow,
    /// RFC 8693 token exchanges: a processing service exchanges the
    /// portal's hand-off token and becomes the actor.
    TokenExchange,
    /// A whole delegation chain below the portal, counted as one: the
    /// service's exchange, its shared token for a broker, and the broker's
    /// certificate.
    DelegationChain,
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const ALL: [Self; 8] = [
        Self::ClientCredentials,
        Self::Introspect,
        Self::Certificate,
        Self::Mixed,
        Self::Refresh,
        Self::CodeFlow,
        Self::TokenExchange,
        Self::DelegationChain,
    ];

    fn needs_csrs(self) -> bool {
        matches!(
            self,
            Self::Certificate | Self::Mixed | Self::DelegationChain
        )
    }

    fn flow(self) -> Option<people::PeopleFlow> {
        match self {
            Self::Refresh => Some(people::PeopleFlow::Refresh),
            Self::CodeFlow => Some(people::PeopleFlow::Code),
            Self::TokenExchange => Some(people::PeopleFlow::TokenExchange),
            Self::DelegationChain => Some(people::PeopleFlow::DelegationChain),
            _ => None,
        }
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "client-credentials" => Self::ClientCredentials,
            "introspect" => Self::Introspect,
            "certificate" => Self::Certificate,
            "mixed" => Self::Mixed,
            "refresh" => Self::Refresh,
            "code-flow" => Self::CodeFlow,
            "token-exchange" => Self::TokenExchange,
            "delegation-chain" => Self::DelegationChain,
            other => {
                return Err(format!(
                    "unknown workload {other:?}: client-credentials, introspect, certificate, mixed, refresh, code-flow, token-exchange, delegation-chain or all"
                ));
            }
        })
    }
}

/// Key type of the CSR pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsrKey {
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// RSA-3072.
    Rsa3072,
    /// Ed25519.
    Ed25519,
}

impl std::str::FromStr for CsrKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ecdsa-p256" => Self::EcdsaP256,
            "ecdsa-p384" => Self::EcdsaP384,
            "rsa-3072" => Self::Rsa3072,
            "ed25519" => Self::Ed25519,
            other => {
                return Err(format!(
                    "unknown CSR key type {other:?}: ecdsa-p256, ecdsa-p384, rsa-3072 or ed25519"
                ));
            }
        })
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Which workload.
    pub workload: Workload,
    /// Connections, each with one request in flight.
    pub concurrency: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before the measurement starts (requests not counted).
    pub warmup: Duration,
    /// Key type of the CSRs.
    pub csr_key: CsrKey,
    /// How many CSRs to make before the clock starts.
    pub csr_pool: usize,
    /// The server's process id, for CPU and RSS from `/proc`.
    pub server_pid: Option<u32>,
    /// Seconds spent measuring the signing ceiling (0: skip).
    pub ceiling_secs: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// The machine's limits, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Ceiling {
    /// Threads used (one per core).
    pub threads: usize,
    /// The CA key type found in the server's `/ca.pem`.
    pub ca_key: String,
    /// CA signatures per second, all threads.
    pub ca_signs_per_sec: f64,
    /// CSR signature verifications per second, all threads.
    pub csr_verifies_per_sec: f64,
    /// ES256 signatures per second (one per access token).
    pub es256_signs_per_sec: f64,
    /// ES256 verifications per second (one per token presented).
    pub es256_verifies_per_sec: f64,
    /// Certificates per second if only the CSR verify and the CA signature
    /// cost anything: 1 / (1/signs + 1/verifies).
    pub certificates_per_sec: f64,
}

/// What one workload run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// The workload.
    pub workload: Workload,
    /// Connections.
    pub concurrency: usize,
    /// Measured seconds.
    pub duration_secs: f64,
    /// Requests completed in the measured window.
    pub requests: u64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency of the measured requests.
    pub latency_ms: Latency,
    /// Non-2xx answers by status (0: no answer at all).
    pub errors: BTreeMap<u16, u64>,
    /// Server CPU (user + system) per measured request, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_request: Option<f64>,
    /// The server's peak resident set, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_mib: Option<f64>,
    /// The machine's ceiling, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Ceiling>,
    /// For `certificate`: throughput / ceiling.certificates_per_sec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction_of_ceiling: Option<f64>,
    /// For the people workloads: mean latency of a sign-in (one argon2id
    /// password verification), measured during set-up and never part of
    /// the throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_ms: Option<f64>,
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The server could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Set-up was refused (registration, first token).
    #[error("{0}")]
    Setup(String),
    /// A CSR or a key for the ceiling could not be made.
    #[error("key generation failed: {0}")]
    Keys(String),
}

/// Runs `options.workload` against the server `client` talks to; the admin
/// token registers a throwaway service client for it.
pub async fn run(
    client: &AdminClient,
    admin_token: &str,
    options: &LoadOptions,
) -> Result<LoadReport, LoadError> {
    let setup = Setup::prepare(client, admin_token, options).await?;
    let ceiling = if options.ceiling_secs > 0.0 {
        let ca_pem = client.send("GET", "/ca.pem", None, None).await?;
        let ca_key = ca_key_of(&ca_pem.body);
        let seconds = options.ceiling_secs;
        let csr_key = options.csr_key;
        Some(
            tokio::task::spawn_blocking(move || measure_ceiling(&ca_key, csr_key, seconds))
                .await
                .map_err(|e| LoadError::Keys(e.to_string()))??,
        )
    } else {
        None
    };

    let started = Instant::now();
    let measure_from = started + options.warmup;
    let deadline = measure_from + options.duration;
    let mut workers = Vec::with_capacity(options.concurrency);
    for index in 0..options.concurrency {
        let connection = client.open().await?;
        if let (Some(flow), Some(people)) = (options.workload.flow(), &setup.people) {
            workers.push(tokio::spawn(people::run_worker(
                people.clone(),
                client.clone(),
                connection,
                flow,
                std::sync::Arc::clone(&setup.csr_bodies),
                measure_from,
                deadline,
            )));
            continue;
        }
        let worker = Worker {
            connection,
            client: client.clone(),
            setup: setup.clone(),
            index,
            token: None,
            token_uses: 0,
        };
        workers.push(tokio::spawn(worker.run(
            options.workload,
            measure_from,
            deadline,
        )));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = options.server_pid.and_then(process_cpu_secs);
    tokio::time::sleep_until(deadline.into()).await;
    let cpu_after = options.server_pid.and_then(process_cpu_secs);

    let mut latencies: Vec<u32> = Vec::new();
    let mut errors: BTreeMap<u16, u64> = BTreeMap::new();
    for worker in workers {
        let outcome = worker
            .await
            .map_err(|e| LoadError::Setup(format!("a worker failed: {e}")))?;
        latencies.extend(outcome.latencies_us);
        for (status, count) in outcome.errors {
            *errors.entry(status).or_default() += count;
        }
    }
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let seconds = options.duration.as_secs_f64();
    let throughput = requests as f64 / seconds;
    let server_cpu_us_per_request = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if requests > 0 => {
            Some((after - before) * 1e6 / requests as f64)
        }
        _ => None,
    };
    let fraction_of_ceiling = match (&ceiling, options.workload) {
        (Some(c), Workload::Certificate) if c.certificates_per_sec > 0.0 => {
            Some(throughput / c.certificates_per_sec)
        }
        _ => None,
    };
    Ok(LoadReport {
        workload: options.workload,
        concurrency: options.concurrency,
        duration_secs: seconds,
        requests,
        throughput,
        latency_ms: percentiles(&latencies),
        errors,
        server_cpu_us_per_request,
        server_peak_rss_mib: options.server_pid.and_then(peak_rss_mib),
        ceiling,
        fraction_of_ceiling,
        login_ms: setup.people.as_ref().map(|p| p.login_ms),
    })
}

/// What every worker shares: the client's credentials, a token to
/// introspect, the CSR bodies, and for the people workloads a signed-in
/// person.
#[derive(Clone)]
struct Setup {
    basic: String,
    introspected: String,
    csr_bodies: std::sync::Arc<Vec<Vec<u8>>>,
    people: Option<people::People>,
}

impl Setup {
    async fn prepare(
        client: &AdminClient,
        admin_token: &str,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let mut tag = [0u8; 4];
        aws_lc_rs::rand::fill(&mut tag).map_err(|_| LoadError::Keys("random".into()))?;
        let client_id = format!("load-{}", hex::encode(tag));
        let registration = serde_json::json!({
            "client": {
                "clientId": client_id,
                "name": "slcs load harness",
                "serviceAccountsEnabled": true,
                "defaultClientScopes": ["slcs:certificate"],
            }
        });
        let created = client
            .send(
                "POST",
                "/rest/v1/oidc/clients",
                Some(&format!("Bearer {admin_token}")),
                Some(("application/json", registration.to_string().into_bytes())),
            )
            .await?;
        let secret = created
            .json()
            .pointer("/client/secret")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                LoadError::Setup(format!(
                    "registering the load client failed ({}): {}",
                    created.status,
                    created.json()
                ))
            })?;
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{}:{}", percent_encode(&client_id), percent_encode(&secret))
            )
        );
        let mut connection = client.open().await?;
        let introspected = fetch_token(&mut connection, &basic).await?;
        let csr_bodies = if options.workload.needs_csrs() {
            let (key, count) = (options.csr_key, options.csr_pool.max(1));
            tokio::task::spawn_blocking(move || csr_pool(key, count))
                .await
                .map_err(|e| LoadError::Keys(e.to_string()))??
        } else {
            Vec::new()
        };
        let people = match options.workload.flow() {
            Some(_) => Some(people::People::prepare(client, admin_token, &hex::encode(tag)).await?),
            None => None,
        };
        Ok(Self {
            basic,
            introspected,
            csr_bodies: std::sync::Arc::new(csr_bodies),
            people,
        })
    }
}

async fn fetch_token(connection: &mut Connection, basic: &str) -> Result<String, LoadError> {
    let answer = connection
        .request(
            "POST",
            "/token",
            Some(basic),
            Some((FORM, b"grant_type=client_credentials".to_vec())),
        )
        .await?;
    answer
        .json()
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| LoadError::Setup(format!("no token ({}): {}", answer.status, answer.json())))
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Certificates one token obtains before a worker takes a fresh one: below
/// the default per-token quota of 100.
const CERTIFICATES_PER_TOKEN: u32 = 90;

struct Worker {
    connection: Connection,
    client: AdminClient,
    setup: Setup,
    index: usize,
    token: Option<String>,
    token_uses: u32,
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    errors: BTreeMap<u16, u64>,
}

#[derive(Clone, Copy)]
enum Step {
    Token,
    Introspect,
    Certificate,
}

impl Worker {
    async fn run(
        mut self,
        workload: Workload,
        measure_from: Instant,
        deadline: Instant,
    ) -> Outcome {
        const MIXED: [Step; 5] = [
            Step::Token,
            Step::Introspect,
            Step::Certificate,
            Step::Token,
            Step::Introspect,
        ];
        let mut outcome = Outcome::default();
        let mut sequence = self.index;
        while Instant::now() < deadline {
            let step = match workload {
                Workload::ClientCredentials => Step::Token,
                Workload::Introspect => Step::Introspect,
                Workload::Certificate => Step::Certificate,
                Workload::Mixed => MIXED
                    .get(sequence % MIXED.len())
                    .copied()
                    .unwrap_or(Step::Token),
                // Run by `people::run_worker`; a plain worker never gets them.
                Workload::Refresh
                | Workload::CodeFlow
                | Workload::TokenExchange
                | Workload::DelegationChain => Step::Token,
            };
            sequence += 1;
            if matches!(step, Step::Certificate) && !self.ensure_token(&mut outcome).await {
                continue;
            }
            let (path, authorization, body) = self.request_for(step, sequence);
            let sent = Instant::now();
            let answer = self
                .connection
                .request("POST", path, Some(&authorization), Some((FORM, body)))
                .await;
            let took = sent.elapsed();
            let counted = sent >= measure_from && Instant::now() <= deadline;
            match answer {
                Ok(Answer { status, .. }) if (200..300).contains(&status) => {
                    if counted {
                        outcome
                            .latencies_us
                            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    }
                }
                Ok(Answer { status, .. }) => {
                    if counted {
                        *outcome.errors.entry(status).or_default() += 1;
                    }
                }
                Err(_) => {
                    if counted {
                        *outcome.errors.entry(0).or_default() += 1;
                    }
                    match self.client.open().await {
                        Ok(connection) => self.connection = connection,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
        outcome
    }

    /// A token with certificates left under the per-token quota; the token
    /// request is not counted.
    async fn ensure_token(&mut self, outcome: &mut Outcome) -> bool {
        if self.token.is_some() && self.token_uses < CERTIFICATES_PER_TOKEN {
            self.token_uses += 1;
            return true;
        }
        match fetch_token(&mut self.connection, &self.setup.basic).await {
            Ok(token) => {
                self.token = Some(token);
                self.token_uses = 1;
                true
            }
            Err(_) => {
                *outcome.errors.entry(0).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                false
            }
        }
    }

    fn request_for(&self, step: Step, sequence: usize) -> (&'static str, String, Vec<u8>) {
        match step {
            Step::Token => (
                "/token",
                self.setup.basic.clone(),
                b"grant_type=client_credentials".to_vec(),
            ),
            Step::Introspect => (
                "/introspect",
                self.setup.basic.clone(),
                format!("token={}", self.setup.introspected).into_bytes(),
            ),
            Step::Certificate => {
                let pool = &self.setup.csr_bodies;
                let body = pool
                    .get((sequence * 7919 + self.index) % pool.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                (
                    "/certificate",
                    format!("Bearer {}", self.token.as_deref().unwrap_or_default()),
                    body,
                )
            }
        }
    }
}

/// `count` CSR form bodies for fresh keys of type `key`.
fn csr_pool(key: CsrKey, count: usize) -> Result<Vec<Vec<u8>>, LoadError> {
    let algorithm: &'static rcgen::SignatureAlgorithm = match key {
        CsrKey::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        CsrKey::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        CsrKey::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        CsrKey::Ed25519 => &rcgen::PKCS_ED25519,
    };
    (0..count)
        .map(|_| {
            let pair = match key {
                CsrKey::Rsa3072 => {
                    rcgen::KeyPair::generate_rsa_for(algorithm, rcgen::RsaKeySize::_3072)
                }
                _ => rcgen::KeyPair::generate_for(algorithm),
            }
            .map_err(|e| LoadError::Keys(e.to_string()))?;
            let pem = rcgen::CertificateParams::default()
                .serialize_request(&pair)
                .and_then(|csr| csr.pem())
                .map_err(|e| LoadError::Keys(e.to_string()))?;
            Ok(format!("certificate_request={}", percent_encode(&pem)).into_bytes())
        })
        .collect()
}

/// The CA key type of a PEM CA certificate: `ecdsa-p256`, `ecdsa-p384`,
/// `rsa-<bits>`, `ed25519`, or `unknown`.
fn ca_key_of(pem_bytes: &[u8]) -> String {
    let Ok(block) = pem::parse(pem_bytes) else {
        return "unknown".into();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(block.contents()) else {
        return "unknown".into();
    };
    match crate::pki::inspect::key_type(&cert).as_str() {
        "ECDSA P-256" => "ecdsa-p256".into(),
        "ECDSA P-384" => "ecdsa-p384".into(),
        "Ed25519" => "ed25519".into(),
        rsa if rsa.starts_with("RSA-") => rsa.to_ascii_lowercase(),
        _ => "unknown".into(),
    }
}

/// Signs and verifies for `seconds` on one thread per core.
fn measure_ceiling(ca_key: &str, csr_key: CsrKey, seconds: f64) -> Result<Ceiling, LoadError> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let per = Duration::from_secs_f64((seconds / 4.0).max(0.05));
    let ca = Signer::for_name(ca_key)?;
    let csr = Signer::for_csr(csr_key)?;
    let es256 = Signer::for_name("ecdsa-p256")?;
    Ok(Ceiling {
        threads,
        ca_key: ca_key.to_owned(),
        ca_signs_per_sec: rate(threads, per, || ca.sign_once()),
        csr_verifies_per_sec: rate(threads, per, || csr.verify_once()),
        es256_signs_per_sec: rate(threads, per, || es256.sign_once()),
        es256_verifies_per_sec: rate(threads, per, || es256.verify_once()),
        certificates_per_sec: 0.0,
    }
    .with_certificate_ceiling())
}

impl Ceiling {
    fn with_certificate_ceiling(mut self) -> Self {
        if self.ca_signs_per_sec > 0.0 && self.csr_verifies_per_sec > 0.0 {
            self.certificates_per_sec =
                1.0 / (1.0 / self.ca_signs_per_sec + 1.0 / self.csr_verifies_per_sec);
        }
        self
    }
}

/// Operations per second of `op` run on `threads` threads for `each`.
fn rate(threads: usize, each: Duration, op: impl Fn() -> bool + Sync) -> f64 {
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let until = Instant::now() + each;
                    let mut done = 0u64;
                    while Instant::now() < until {
                        if op() {
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / each.as_secs_f64()
}

type SignFn = Box<dyn Fn() -> Option<Vec<u8>> + Send + Sync>;
type VerifyFn = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// One key with a message signed by it, for sign and verify rates.
struct Signer {
    sign: SignFn,
    verify: VerifyFn,
    signature: Vec<u8>,
}

const MESSAGE: &[u8] =
    b"slcs ceiling measurement: a message the size of a TBSCertificate hash input";

impl Signer {
    fn for_csr(key: CsrKey) -> Result<Self, LoadError> {
        Self::for_name(match key {
            CsrKey::EcdsaP256 => "ecdsa-p256",
            CsrKey::EcdsaP384 => "ecdsa-p384",
            CsrKey::Rsa3072 => "rsa-3072",
            CsrKey::Ed25519 => "ed25519",
        })
    }

    fn for_name(name: &str) -> Result<Self, LoadError> {
        use aws_lc_rs::signature::{self, KeyPair as _};
        let failed = |e: &dyn std::fmt::Display| LoadError::Keys(e.to_string());
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let (sign, verify): (SignFn, VerifyFn) = match name {
            "ecdsa-p256" | "ecdsa-p384" => {
                let (signing, verifying) = if name == "ecdsa-p256" {
                    (
                        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                        &signature::ECDSA_P256_SHA256_ASN1,
                    )
                } else {
                    (
                        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                        &signature::ECDSA_P384_SHA384_ASN1,
                    )
                };
                let pair = signature::EcdsaKeyPair::generate(signing).map_err(|e| failed(&e))?;
                let public = pair.public_key().as_ref().to_vec();
                let rng = rng.clone();
                (
                    Box::new(move || pair.sign(&rng, MESSAGE).ok().map(|s| s.as_ref().to_vec())),
                    Box::new(move |sig| {
                        signature::UnparsedPublicKey::new(verifying, &public)
                            .verify(MESSAGE, sig)
                            .is_ok()
                    }),
                )
            }
            "ed25519" => {
                let pair = signature::Ed25519KeyPair::generate().map_err(|e| failed(&e))?;
                let public = pair.public_key().as_ref().to_vec();
                (
                    Box::new(move || Some(pair.sign(MESSAGE).as_ref().to_vec())),
                    Box::new(move |sig| {
                        signature::UnparsedPublicKey::new(&signature::ED25519, &public)
                            .verify(MESSAGE, sig)
                            .is_ok()
                    }),
                )
            }
            rsa if rsa.starts_with("rsa-") => {
                let size = match rsa {
                    "rsa-2048" => aws_lc_rs::rsa::KeySize::Rsa2048,
                    "rsa-4096" => aws_lc_rs::rsa::KeySize::Rsa4096,
                    _ => aws_lc_rs::rsa::KeySize::Rsa3072,
                };
                let pair = signature::RsaKeyPair::generate(size).map_err(|e| failed(&e))?;
                let public = pair.public_key().as_ref().to_vec();
                let rng = rng.clone();
                (
                    Box::new(move || {
                        let mut out = vec![0u8; pair.public_modulus_len()];
                        pair.sign(&signature::RSA_PKCS1_SHA256, &rng, MESSAGE, &mut out)
                            .ok()
                            .map(|()| out)
                    }),
                    Box::new(move |sig| {
                        signature::UnparsedPublicKey::new(
                            &signature::RSA_PKCS1_2048_8192_SHA256,
                            &public,
                        )
                        .verify(MESSAGE, sig)
                        .is_ok()
                    }),
                )
            }
            other => {
                return Err(LoadError::Keys(format!(
                    "no ceiling for key type {other:?}"
                )));
            }
        };
        let signature = sign().ok_or_else(|| LoadError::Keys("signing failed".into()))?;
        Ok(Self {
            sign,
            verify,
            signature,
        })
    }

    fn sign_once(&self) -> bool {
        (self.sign)().is_some()
    }

    fn verify_once(&self) -> bool {
        (self.verify)(&self.signature)
    }
}

fn percentiles(sorted_us: &[u32]) -> Latency {
    let at = |q: f64| {
        if sorted_us.is_empty() {
            return 0.0;
        }
        let index = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
        f64::from(sorted_us.get(index).copied().unwrap_or(0)) / 1000.0
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// User + system CPU seconds of a process (all its threads), from
/// `/proc/<pid>/stat`.
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come field 3 (state) onwards: utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_sec())
}

/// `sysconf(_SC_CLK_TCK)`, read through `getconf` (no libc binding here);
/// 100 on every Linux this runs on otherwise.
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Peak resident set (`VmHWM`) of a process in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let us: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        let l = percentiles(&us);
        assert!((l.p50 - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p90 - 900.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < f64::EPSILON, "{l:?}");
        assert_eq!(percentiles(&[]).p99, 0.0);
    }

    #[test]
    fn own_process_cpu_and_rss_are_readable() {
        let pid = std::process::id();
        assert!(process_cpu_secs(pid).is_some());
        assert!(peak_rss_mib(pid).unwrap() > 0.0);
    }

    #[test]
    fn the_ceiling_is_measured_for_every_key_type() {
        for name in ["ecdsa-p256", "ecdsa-p384", "ed25519"] {
            let signer = Signer::for_name(name).unwrap();
            assert!(signer.sign_once() && signer.verify_once(), "{name}");
        }
        let ceiling = measure_ceiling("ecdsa-p256", CsrKey::EcdsaP256, 0.2).unwrap();
        assert!(ceiling.certificates_per_sec > 0.0);
        assert!(ceiling.certificates_per_sec < ceiling.ca_signs_per_sec);
    }

    #[test]
    fn csr_pools_hold_valid_csrs() {
        let pool = csr_pool(CsrKey::EcdsaP256, 2).unwrap();
        assert_eq!(pool.len(), 2);
        assert!(pool[0].starts_with(b"certificate_request=-----BEGIN"));
        assert_ne!(pool[0], pool[1]);
    }
}
