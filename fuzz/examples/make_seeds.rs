//! Regenerates the generated seed corpora and the JWT test keys:
//!
//! - `corpus/csr/`: PKCS#10 requests made by `openssl req` (P-256, P-384,
//!   RSA-2048, RSA-3072, Ed25519, as DER and PEM; one with extensions; and
//!   real requests slcs refuses: P-521, RSA-1024, SHA-1);
//! - `corpus/provenance/`: the provenance extension values of certificates
//!   issued by a real `IssuanceEngine` (development CA, sled store) for those
//!   requests;
//! - `fixtures/jwt-keys/` and `corpus/jwt/`: a key set made by `KeySet`
//!   itself (RS256, then ES256, then EdDSA keys, rotated so that all of them
//!   still verify at the fixed time the `jwt` target uses), tokens minted
//!   with each algorithm, and claims sets in JSON.
//!
//! The hand-written corpora (`token_form`, `redirect_uri`, `registration`)
//! are not touched. Run from the repository root (needs `openssl`):
//!
//!     CARGO_TARGET_DIR=/work/target-fuzz cargo run --manifest-path fuzz/Cargo.toml --example make_seeds

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use slcs::clock::SystemClock;
use slcs::config::CliOverrides;
use slcs::oauth::jwt::{mint, verify, AccessTokenClaims, Audience, Expectations, SubjectType};
use slcs::oauth::keys::{KeySet, SigningAlgorithm};
use slcs::pki::dn::CertificateIdentity;
use slcs::pki::issuer::{IssuanceEngine, IssuanceRequest};
use slcs::pki::provenance::{DelegationProvenance, DelegationStep};
use slcs::service::StartMode;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Must equal `NOW` in `fuzz_targets/jwt.rs`.
const NOW: i64 = 1_780_000_000;
const ISSUER: &str = "https://localhost:8443";
const AUDIENCE: &str = "https://localhost:8443/certificate";
const PROVENANCE_OID: &str = "1.3.6.1.4.1.32473.1";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("slcs-make-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    let csr_dir = fresh(&fuzz.join("corpus/csr"))?;
    let csrs = make_csrs(&scratch, &csr_dir)?;
    let provenance_dir = fresh(&fuzz.join("corpus/provenance"))?;
    issue_and_extract(&scratch.join("data"), &csrs, &provenance_dir)?;
    let keys_dir = fresh(&fuzz.join("fixtures/jwt-keys"))?;
    let jwt_dir = fresh(&fuzz.join("corpus/jwt"))?;
    make_keys_and_tokens(&scratch.join("keys"), &keys_dir, &jwt_dir)?;

    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// Empties (or creates) a directory.
fn fresh(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

// ---------------------------------------------------------------------------
// CSRs

/// Makes the requests with `openssl req`; returns the DER of those slcs
/// accepts, for issuance. Private keys stay in `scratch`.
fn make_csrs(scratch: &Path, out: &Path) -> Result<Vec<Vec<u8>>> {
    let key = scratch.join("csr-key.pem");
    let k = key.to_string_lossy().into_owned();
    let new_key = |spec: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = vec!["req".into(), "-new".into()];
        args.extend(spec.iter().map(|s| (*s).to_owned()));
        args.extend(["-nodes", "-keyout", k.as_str()].map(str::to_owned));
        args
    };
    let p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let cases: Vec<(&str, Vec<String>, &str, bool)> = vec![
        ("p256.der", new_key(&p256), "/CN=x", true),
        ("p384.der", new_key(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]), "/CN=x", true),
        ("rsa2048.der", new_key(&["-newkey", "rsa:2048"]), "/CN=x", true),
        ("rsa3072-sha384.der", new_key(&["-newkey", "rsa:3072", "-sha384"]), "/CN=x", true),
        ("ed25519.der", new_key(&["-newkey", "ed25519"]), "/CN=x", true),
        (
            "p256-extensions.der",
            {
                let mut a = new_key(&p256);
                a.extend(
                    [
                        "-addext",
                        "subjectAltName=DNS:job.example.org,email:alice@example.org",
                        "-addext",
                        "keyUsage=critical,digitalSignature",
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                    ]
                    .map(str::to_owned),
                );
                a
            },
            "/C=BE/O=Example/OU=Jobs/CN=alice",
            true,
        ),
        // Real requests that slcs refuses: another curve, a short key, SHA-1.
        ("p521-refused.der", new_key(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]), "/CN=x", false),
        ("rsa1024-refused.der", new_key(&["-newkey", "rsa:1024"]), "/CN=x", false),
        ("p256-sha1-refused.der", new_key(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-sha1"]), "/CN=x", false),
    ];
    let mut accepted = Vec::new();
    for (name, mut args, subject, ok) in cases {
        let file = out.join(name);
        let path = file.to_string_lossy().into_owned();
        args.extend(["-subj", subject, "-outform", "DER", "-out", path.as_str()].map(str::to_owned));
        openssl(&args)?;
        if ok {
            accepted.push(std::fs::read(&file)?);
        }
        std::fs::remove_file(&key)?;
    }
    // The same requests as PEM, as `slcs cert get` and curl users send them.
    for (der, pem) in [("p256.der", "p256.pem"), ("ed25519.der", "ed25519.pem"), ("rsa2048.der", "rsa2048.pem")] {
        openssl(&[
            "req".into(),
            "-inform".into(),
            "DER".into(),
            "-in".into(),
            out.join(der).to_string_lossy().into_owned(),
            "-out".into(),
            out.join(pem).to_string_lossy().into_owned(),
        ])?;
    }
    Ok(accepted)
}

fn openssl(args: &[String]) -> Result<()> {
    let output = Command::new("openssl").args(args).output()?;
    if !output.status.success() {
        return Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Provenance, from issued certificates

fn step(
    client: &str,
    name: Option<&str>,
    grant: &str,
    scope: &str,
    time: i64,
    auth: &str,
    approval: Option<&str>,
) -> DelegationStep {
    DelegationStep {
        client_id: client.into(),
        client_name: name.map(str::to_owned),
        grant_type: grant.into(),
        scope: scope.into(),
        time: at(time),
        client_auth: auth.into(),
        approval_id: approval.map(str::to_owned),
    }
}

fn requests() -> Vec<(&'static str, IssuanceRequest)> {
    let t = NOW - 600;
    let person = |subject: &str, name: &str| CertificateIdentity::Person {
        issuer: ISSUER.into(),
        subject: subject.into(),
        display_name: name.into(),
    };
    let request = |identity, provenance| IssuanceRequest {
        identity,
        provenance,
        requested_lifetime_secs: Some(3600),
        not_after_limits: Vec::new(),
    };
    vec![
        (
            "chain-portal-wps-broker",
            request(
                person("u-ade50362bfcea4ca92c5e22e2ffb98c5", "Alice Example"),
                DelegationProvenance {
                    issuer: ISSUER.into(),
                    subject: "u-ade50362bfcea4ca92c5e22e2ffb98c5".into(),
                    auth_time: at(t),
                    auth_context: Some("https://refeds.org/assurance/IAP/medium".into()),
                    grant_id: "gr-7Q2MkX1b".into(),
                    steps: vec![
                        step("portal", Some("Climate Portal"), "authorization_code", "openid slcs:certificate compute:submit", t + 12, "client_secret_basic", Some("ap-1f3e")),
                        step("wps", None, "token-exchange", "slcs:certificate compute:submit", t + 60, "tls_client_auth", Some("ap-1f3e")),
                        step("broker-a", Some("Job broker A"), "certificate", "slcs:certificate", t + 65, "private_key_jwt", None),
                    ],
                    token_id: "jti-b41c9d".into(),
                },
            ),
        ),
        (
            "service-account",
            request(
                CertificateIdentity::ServiceAccount { client_id: "openeo-batch".into() },
                DelegationProvenance {
                    issuer: ISSUER.into(),
                    subject: "service:openeo-batch".into(),
                    auth_time: at(t),
                    auth_context: None,
                    grant_id: "gr-svc-01".into(),
                    steps: vec![
                        step("openeo-batch", Some("openEO batch jobs"), "client_credentials", "slcs:certificate", t, "client_secret_basic", None),
                        step("openeo-batch", Some("openEO batch jobs"), "certificate", "slcs:certificate", t + 1, "client_secret_basic", None),
                    ],
                    token_id: "jti-0001".into(),
                },
            ),
        ),
        (
            "device-flow-unicode",
            request(
                person("u-0c1d", "Zoë Ł'Évêque"),
                DelegationProvenance {
                    issuer: ISSUER.into(),
                    subject: "u-0c1d".into(),
                    auth_time: at(t),
                    auth_context: Some("urn:slcs:acr:password+totp".into()),
                    grant_id: "gr-dev-2".into(),
                    steps: vec![
                        step("slcs-cli", Some("slcs command line — Ω ⇐ 雲"), "urn:ietf:params:oauth:grant-type:device_code", "openid slcs:certificate offline_access", t + 30, "none", Some("ap-9")),
                        step("slcs-cli", Some("slcs command line — Ω ⇐ 雲"), "refresh_token", "slcs:certificate", t + 300, "none", Some("ap-9")),
                        step("slcs-cli", None, "certificate", "slcs:certificate storage.read:/esgf/cmip6 storage.modify:/home/zoe", t + 301, "none", None),
                    ],
                    token_id: "jti-dev-3".into(),
                },
            ),
        ),
    ]
}

fn issue_and_extract(data_dir: &Path, csrs: &[Vec<u8>], out: &Path) -> Result<()> {
    let vars = vec![(
        "SLCS_DATA_DIR".to_owned(),
        data_dir.to_string_lossy().into_owned(),
    )];
    let config = slcs::config::load(None, vars, &CliOverrides::default())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let opened = slcs::service::open(&config, &SystemClock, StartMode::Init)?;
        let engine: Arc<IssuanceEngine> = Arc::clone(&opened.engine);
        for (n, (name, request)) in requests().into_iter().enumerate() {
            let csr = &csrs[n % csrs.len()];
            let now = slcs::clock::Clock::now(&SystemClock);
            let issued = engine.issue(csr, &request, now).await?;
            let (_, cert) = X509Certificate::from_der(&issued.der)
                .map_err(|e| format!("issued certificate unreadable: {e}"))?;
            let ext = cert
                .extensions()
                .iter()
                .find(|e| e.oid.to_id_string() == PROVENANCE_OID)
                .ok_or("no provenance extension in an issued certificate")?;
            // A sanity check: the value decodes to what went in.
            let decoded = DelegationProvenance::from_der(ext.value)?;
            if decoded != request.provenance {
                return Err("the issued provenance differs from the request".into());
            }
            std::fs::write(out.join(format!("{name}.der")), ext.value)?;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // The smallest value the format allows: one step, short strings.
    let small = DelegationProvenance {
        issuer: "i".into(),
        subject: "s".into(),
        auth_time: at(0),
        auth_context: None,
        grant_id: "g".into(),
        steps: vec![step("c", None, "client_credentials", "", 0, "a", None)],
        token_id: "t".into(),
    };
    std::fs::write(out.join("minimal.der"), small.to_der()?)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// JWT keys and tokens

fn claims(kid_note: &str, user: bool) -> AccessTokenClaims {
    let iat = NOW - 120;
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: if user {
            "u-ade50362bfcea4ca92c5e22e2ffb98c5".into()
        } else {
            "service:openeo-batch".into()
        },
        aud: Audience::one(AUDIENCE),
        client_id: if user { "wps".into() } else { "openeo-batch".into() },
        scope: "slcs:certificate".into(),
        jti: format!("jti-{kid_note}"),
        iat,
        exp: iat + 600,
        nbf: None,
        grant_id: "gr-7Q2MkX1b".into(),
        subject_type: if user { SubjectType::User } else { SubjectType::Service },
        act: user.then(|| serde_json::json!({"sub": "wps", "act": {"sub": "portal"}})),
        client_auth: Some("client_secret_basic".into()),
        grant_type: Some(if user { "authorization_code" } else { "client_credentials" }.into()),
        auth_time: user.then_some(NOW - 900),
        acr: user.then(|| "https://refeds.org/assurance/IAP/medium".to_owned()),
        amr: user.then(|| vec!["pwd".to_owned(), "otp".to_owned()]),
        approval_id: user.then(|| "ap-1f3e".to_owned()),
    }
}

fn make_keys_and_tokens(work: &Path, keys_out: &Path, jwt_out: &Path) -> Result<()> {
    let keep = Duration::from_secs(10 * 365 * 86_400);
    let mut tokens: Vec<(String, String)> = Vec::new();

    // RS256 keys first (current and next), then two rotations to ES256, then
    // two to EdDSA: every key is still published at NOW.
    let mut keys = KeySet::load_or_create(work, SigningAlgorithm::Rs256, at(NOW - 50_000))?;
    tokens.push(("rs256-service.jwt".into(), mint(&keys, &claims("rs256", false))?));
    drop(keys);
    keys = KeySet::load_or_create(work, SigningAlgorithm::Es256, at(NOW - 40_000))?;
    keys.rotate(work, at(NOW - 40_000), keep)?;
    keys.rotate(work, at(NOW - 30_000), keep)?;
    tokens.push(("es256-user.jwt".into(), mint(&keys, &claims("es256", true))?));
    drop(keys);
    keys = KeySet::load_or_create(work, SigningAlgorithm::EdDsa, at(NOW - 20_000))?;
    keys.rotate(work, at(NOW - 20_000), keep)?;
    keys.rotate(work, at(NOW - 10_000), keep)?;
    tokens.push(("eddsa-user.jwt".into(), mint(&keys, &claims("eddsa-user", true))?));
    tokens.push(("eddsa-service.jwt".into(), mint(&keys, &claims("eddsa-service", false))?));
    let mut two_audiences = claims("eddsa-aud", false);
    two_audiences.aud = Audience::many(vec![
        AUDIENCE.into(),
        format!("{ISSUER}/rest/v1/oidc/clients"),
    ])
    .ok_or("two audiences")?;
    two_audiences.nbf = Some(NOW - 120);
    tokens.push(("eddsa-two-audiences.jwt".into(), mint(&keys, &two_audiences)?));

    for (name, token) in &tokens {
        std::fs::write(jwt_out.join(name), token)?;
    }
    // Claims sets (the JSON mode of the target).
    std::fs::write(
        jwt_out.join("claims-user.json"),
        serde_json::to_vec(&claims("claims-user", true))?,
    )?;
    std::fs::write(
        jwt_out.join("claims-service.json"),
        serde_json::to_vec(&claims("claims-service", false))?,
    )?;

    for entry in std::fs::read_dir(work)? {
        let entry = entry?;
        std::fs::copy(entry.path(), keys_out.join(entry.file_name()))?;
    }

    // Every seed token verifies at NOW against the committed key set, as the
    // `jwt` target will check it.
    let committed = KeySet::load_or_create(keys_out, SigningAlgorithm::EdDsa, at(NOW))?;
    let expect = Expectations {
        issuer: ISSUER,
        audience: AUDIENCE,
        now: NOW,
        leeway_secs: 30,
    };
    for (name, token) in &tokens {
        verify(&committed, token, &expect).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
