//! The issuance engine against independent implementations: CSRs made by
//! OpenSSL and by rcgen, certificates checked by `openssl verify`,
//! `openssl asn1parse`, `openssl x509` and `slcs inspect`.

use std::path::Path;
use std::sync::Arc;

use slcs::pki::dn::CertificateIdentity;
use slcs::pki::issuer::{IssuanceRequest, IssueError, IssuedCertificate};
use slcs::pki::provenance::{DelegationProvenance, DelegationStep};
use slcs::pki::serial::{RandomFailure, RandomSource, SerialGenerator};
use slcs::store::IssuanceLog as _;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{now, open_engine, openssl, run_slcs};

/// Key types slcs certifies.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    Rsa(u32),
    P256,
    P384,
    Ed25519,
}

pub const ALL_KEYS: [KeyKind; 6] = [
    KeyKind::Rsa(2048),
    KeyKind::Rsa(3072),
    KeyKind::Rsa(4096),
    KeyKind::P256,
    KeyKind::P384,
    KeyKind::Ed25519,
];

impl KeyKind {
    pub fn name(self) -> String {
        match self {
            KeyKind::Rsa(bits) => format!("rsa{bits}"),
            KeyKind::P256 => "p256".into(),
            KeyKind::P384 => "p384".into(),
            KeyKind::Ed25519 => "ed25519".into(),
        }
    }
}

/// A CSR made by `openssl req` (PEM), with extra `req` arguments.
pub fn openssl_csr(dir: &Path, kind: KeyKind, extra: &[&str]) -> Vec<u8> {
    let tag = crate::rand_tag();
    let key = dir.join(format!("{}-{tag}.key", kind.name()));
    let csr = dir.join(format!("{}-{tag}.csr", kind.name()));
    let newkey: Vec<String> = match kind {
        KeyKind::Rsa(bits) => vec!["-newkey".into(), format!("rsa:{bits}")],
        KeyKind::P256 => vec![
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-256".into(),
        ],
        KeyKind::P384 => vec![
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-384".into(),
        ],
        KeyKind::Ed25519 => vec!["-newkey".into(), "ed25519".into()],
    };
    let mut args: Vec<&str> = vec!["req", "-new", "-nodes", "-subj", "/CN=admin/O=Evil"];
    args.extend(newkey.iter().map(String::as_str));
    args.extend([
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]);
    args.extend(extra);
    openssl(&args);
    std::fs::read(csr).unwrap()
}

/// A CSR made by rcgen (DER).
pub fn rcgen_csr(kind: KeyKind) -> Vec<u8> {
    let key = match kind {
        KeyKind::Rsa(bits) => rcgen::KeyPair::generate_rsa_for(
            &rcgen::PKCS_RSA_SHA256,
            match bits {
                2048 => rcgen::RsaKeySize::_2048,
                3072 => rcgen::RsaKeySize::_3072,
                _ => rcgen::RsaKeySize::_4096,
            },
        ),
        KeyKind::P256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyKind::P384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyKind::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
    }
    .unwrap();
    let params = rcgen::CertificateParams::new(vec!["rcgen.test".into()]).unwrap();
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap()
}

/// A three-step chain: portal → WPS → broker.
pub fn sample_provenance(at: OffsetDateTime) -> DelegationProvenance {
    let at = whole_seconds(at);
    let step =
        |client: &str, name: Option<&str>, grant: &str, auth: &str, approval: Option<&str>| {
            DelegationStep {
                client_id: client.into(),
                client_name: name.map(str::to_owned),
                grant_type: grant.into(),
                scope: "openid slcs:certificate opendap:read".into(),
                time: at,
                client_auth: auth.into(),
                approval_id: approval.map(str::to_owned),
            }
        };
    DelegationProvenance {
        issuer: "https://slcs.example".into(),
        subject: "user-7".into(),
        auth_time: at - time::Duration::minutes(5),
        auth_context: Some("https://refeds.org/assurance/IAP/medium".into()),
        grant_id: "grant-42".into(),
        steps: vec![
            step(
                "climate-portal",
                Some("Climate Portal"),
                "authorization_code",
                "none+pkce",
                Some("approval-1"),
            ),
            step(
                "wps",
                Some("Processing Service"),
                "token-exchange",
                "client_secret_basic",
                Some("approval-1"),
            ),
            step("broker-a", None, "certificate", "tls_client_auth", None),
        ],
        token_id: "jti-123".into(),
    }
}

pub fn person_request(display_name: &str, at: OffsetDateTime) -> IssuanceRequest {
    IssuanceRequest {
        identity: CertificateIdentity::Person {
            issuer: "https://slcs.example".into(),
            subject: "user-7".into(),
            display_name: display_name.into(),
        },
        provenance: sample_provenance(at),
        requested_lifetime_secs: Some(3600),
        not_after_limits: Vec::new(),
    }
}

fn write_pem(dir: &Path, name: &str, issued: &IssuedCertificate) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, &issued.pem).unwrap();
    path
}

fn extension_oids(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.extensions()
        .iter()
        .map(|e| slcs::pki::inspect::dotted_oid(e.oid.as_bytes()))
        .collect()
}

/// Every CA key type × every CSR key type × {OpenSSL, rcgen}: OpenSSL
/// verifies the chain, finds the provenance extension at its OID, and
/// `slcs inspect` prints the chain that went in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_from_openssl_and_rcgen_verifies_with_openssl() {
    let work = tempfile::tempdir().unwrap();
    let mut csrs = Vec::new();
    for kind in ALL_KEYS {
        csrs.push((
            format!("openssl-{}", kind.name()),
            openssl_csr(work.path(), kind, &[]),
        ));
        csrs.push((format!("rcgen-{}", kind.name()), rcgen_csr(kind)));
    }
    for ca_type in ["ecdsa-p256", "ecdsa-p384", "rsa-3072"] {
        let data = tempfile::tempdir().unwrap();
        let (config, opened) = open_engine(data.path(), ca_type);
        let ca = config.ca.cert.to_str().unwrap().to_owned();
        for (label, csr) in &csrs {
            let request = person_request("Alice Example", now());
            let issued = opened.engine.issue(csr, &request, now()).await.unwrap();
            let path = write_pem(work.path(), &format!("{ca_type}-{label}.pem"), &issued);
            let path = path.to_str().unwrap();

            let verified = openssl(&["verify", "-CAfile", &ca, "-purpose", "sslclient", path]);
            assert!(
                verified.trim_end().ends_with(": OK"),
                "{ca_type} {label}: {verified}"
            );

            let parsed = openssl(&["asn1parse", "-in", path]);
            assert!(
                parsed.contains(":1.3.6.1.4.1.32473.1"),
                "{ca_type} {label}: provenance OID missing from asn1parse output"
            );

            let inspected = run_slcs(&["inspect", "--json", path], &[]);
            assert!(
                inspected.status.success(),
                "{}",
                String::from_utf8_lossy(&inspected.stderr)
            );
            let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
            let chain: DelegationProvenance =
                serde_json::from_value(json["provenance"].clone()).unwrap();
            assert_eq!(chain, request.provenance, "{ca_type} {label}");
            assert_eq!(json["serial"], issued.serial.to_hex());
            assert_eq!(json["subject"], issued.subject);

            let record = opened
                .store
                .issuance(&issued.serial)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.certificate.as_deref(), Some(issued.der.as_slice()));
        }
        // Human-readable inspect shows each step.
        let last = work.path().join(format!("{ca_type}-rcgen-p256.pem"));
        let text = run_slcs(&["inspect", last.to_str().unwrap()], &[]);
        let text = String::from_utf8_lossy(&text.stdout);
        for needle in [
            "climate-portal",
            "Processing Service",
            "broker-a",
            "grant-42",
            "jti-123",
        ] {
            assert!(
                text.contains(needle),
                "inspect output lacks {needle}: {text}"
            );
        }
    }
}

/// ATTACKS CSR-08/CSR-09: a CSR asking for CA:TRUE, SANs, serverAuth and
/// certificate signing gets a certificate with the profile's extensions only,
/// and the CSR's subject is ignored.
#[tokio::test]
async fn csr_08_csr_09_csr_requested_extensions_and_subject_are_not_honoured() {
    let work = tempfile::tempdir().unwrap();
    let (config, opened) = open_engine(work.path(), "ecdsa-p256");
    let csr = openssl_csr(
        work.path(),
        KeyKind::P256,
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "extendedKeyUsage=serverAuth,codeSigning,OCSPSigning",
            "-addext",
            "subjectAltName=DNS:*.slcs.test,email:admin@slcs.test,IP:10.0.0.1",
            "-addext",
            "1.3.6.1.4.1.32473.1=DER:30:03:02:01:01",
        ],
    );
    let issued = opened
        .engine
        .issue(&csr, &person_request("Alice", now()), now())
        .await
        .unwrap();
    let path = write_pem(work.path(), "cert.pem", &issued);
    let text = openssl(&["x509", "-in", path.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("CA:TRUE"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(!text.contains("Server Authentication"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("Evil"), "CSR subject leaked: {text}");
    // Exactly the profile's extensions, in this order.
    assert_eq!(
        extension_oids(&issued.der),
        [
            "2.5.29.35",
            "2.5.29.15",
            "2.5.29.37",
            "2.5.29.14",
            "2.5.29.19",
            "1.3.6.1.4.1.32473.1"
        ]
    );
    // The provenance is the server's, not the CSR's forged one.
    let chain = slcs::pki::inspect::provenance_of(&issued.der, "1.3.6.1.4.1.32473.1")
        .unwrap()
        .unwrap();
    assert_eq!(chain.grant_id, "grant-42");
    // Key usage for an RSA key adds keyEncipherment.
    let rsa = openssl_csr(work.path(), KeyKind::Rsa(2048), &[]);
    let issued = opened
        .engine
        .issue(&rsa, &person_request("Alice", now()), now())
        .await
        .unwrap();
    let path = write_pem(work.path(), "rsa.pem", &issued);
    let text = openssl(&["x509", "-in", path.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    drop(config);
}

/// ATTACKS CERT-01/CERT-02: DN values with RFC 4514 specials, non-ASCII,
/// 200 characters and empty names give valid, correctly escaped DNs — checked
/// against OpenSSL's own RFC 2253 rendering — and the same identity always
/// gives the same DN.
#[tokio::test]
async fn cert_02_distinguished_names_are_escaped_bounded_and_stable() {
    let work = tempfile::tempdir().unwrap();
    let (_config, opened) = open_engine(work.path(), "ecdsa-p256");
    let csr = rcgen_csr(KeyKind::P256);
    let names = [
        "#Alice, CN=Bob+OU=x <y> \"q\"; \\ z = w".to_owned(),
        "Zoë Ğüneş 山田太郎".to_owned(),
        "x".repeat(200),
        String::new(),
        " leading and trailing ".to_owned(),
        "Ali\u{202E}ce\r\nSmith\0".to_owned(),
    ];
    for name in &names {
        let issued = opened
            .engine
            .issue(&csr, &person_request(name, now()), now())
            .await
            .unwrap();
        let path = write_pem(work.path(), "dn.pem", &issued);
        let subject = openssl(&[
            "x509",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253,-esc_msb",
        ]);
        let subject = subject.trim_end().strip_prefix("subject=").unwrap();
        assert_eq!(subject, issued.subject, "name {name:?}");
        let (_, cert) = X509Certificate::from_der(&issued.der).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert!(cn.chars().count() <= 64, "{cn}");
        assert!(!cn.chars().any(char::is_control), "{cn:?}");
        // Same identity, same DN bytes.
        let again = opened
            .engine
            .issue(&csr, &person_request(name, now()), now())
            .await
            .unwrap();
        let (_, cert_again) = X509Certificate::from_der(&again.der).unwrap();
        assert_eq!(cert.subject().as_raw(), cert_again.subject().as_raw());
    }
    // The escaped form of the specials, exactly.
    let issued = opened
        .engine
        .issue(&csr, &person_request(&names[0], now()), now())
        .await
        .unwrap();
    assert!(
        issued
            .subject
            .starts_with("CN=\\#Alice\\, CN=Bob\\+OU=x \\<y\\> \\\"q\\\"\\; \\\\ z = w "),
        "{}",
        issued.subject
    );
    assert!(issued.subject.ends_with(",OU=People,O=slcs development"));
}

/// Service accounts get their own DN form, never a person's.
#[tokio::test]
async fn service_account_certificates_name_the_account() {
    let work = tempfile::tempdir().unwrap();
    let (_config, opened) = open_engine(work.path(), "ecdsa-p256");
    let mut request = person_request("", now());
    request.identity = CertificateIdentity::ServiceAccount {
        client_id: "ci-pipeline".into(),
    };
    let issued = opened
        .engine
        .issue(&rcgen_csr(KeyKind::P256), &request, now())
        .await
        .unwrap();
    assert_eq!(
        issued.subject,
        "CN=ci-pipeline,OU=Service Accounts,O=slcs development"
    );
}

/// ATTACKS CERT-04/CERT-05: lifetimes are clamped to the profile maximum with
/// back-dating inside it, and never outlive a limit or the CA.
#[tokio::test]
async fn lifetimes_are_clamped_and_limited() {
    let work = tempfile::tempdir().unwrap();
    let (_config, opened) = open_engine(work.path(), "ecdsa-p256");
    let csr = rcgen_csr(KeyKind::P256);
    let at = whole_seconds(now());
    let mut request = person_request("A", at);
    request.requested_lifetime_secs = Some(315_360_000);
    let issued = opened.engine.issue(&csr, &request, at).await.unwrap();
    assert_eq!(issued.not_before, at - time::Duration::seconds(60));
    assert_eq!(
        issued.not_after - issued.not_before,
        time::Duration::seconds(43_200)
    );

    request.not_after_limits = vec![slcs::pki::profile::NotAfterLimit {
        at: at + time::Duration::minutes(5),
        reason: "the approval",
    }];
    let issued = opened.engine.issue(&csr, &request, at).await.unwrap();
    assert_eq!(issued.not_after, at + time::Duration::minutes(5));

    request.not_after_limits[0].at = at + time::Duration::seconds(30);
    let before = opened.store.issuance_count().await.unwrap();
    let err = opened.engine.issue(&csr, &request, at).await.unwrap_err();
    assert!(err.to_string().contains("the approval"), "{err}");
    assert_eq!(opened.store.issuance_count().await.unwrap(), before);

    request.not_after_limits.clear();
    request.requested_lifetime_secs = Some(0);
    assert!(matches!(
        opened.engine.issue(&csr, &request, at).await,
        Err(IssueError::Validity(_))
    ));
}

/// Replays a fixed script of random bytes, then repeats its last entry.
struct Scripted(std::sync::Mutex<Vec<u8>>);

impl RandomSource for Scripted {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomFailure> {
        let mut script = self.0.lock().unwrap();
        let value = if script.len() > 1 {
            script.remove(0)
        } else {
            script[0]
        };
        buf.fill(value);
        Ok(())
    }
}

/// ATTACKS CERT-03: a serial already in the log is never reused — the engine
/// draws again — and a random source that keeps repeating stops issuance.
#[tokio::test]
async fn serial_collisions_are_detected_by_the_store() {
    let work = tempfile::tempdir().unwrap();
    let (config, opened) = open_engine(work.path(), "ecdsa-p256");
    let engine = slcs::pki::issuer::IssuanceEngine::start(
        &config,
        Arc::clone(&opened.store) as Arc<dyn slcs::store::IssuanceLog>,
        now(),
    )
    .unwrap()
    .with_serials(SerialGenerator::with_random(
        1,
        Box::new(Scripted(std::sync::Mutex::new(vec![7, 7, 9]))),
    ));
    let csr = rcgen_csr(KeyKind::P256);
    let first = engine
        .issue(&csr, &person_request("A", now()), now())
        .await
        .unwrap();
    let second = engine
        .issue(&csr, &person_request("A", now()), now())
        .await
        .unwrap();
    assert_ne!(first.serial, second.serial);
    assert_eq!(second.serial.as_bytes()[1], 9, "the collision was retried");
    // Now the source only repeats 9: every draw collides.
    let err = engine
        .issue(&csr, &person_request("A", now()), now())
        .await
        .unwrap_err();
    assert!(matches!(err, IssueError::SerialsExhausted), "{err}");
    assert_eq!(opened.store.issuance_count().await.unwrap(), 2);
}

/// Serial uniqueness over 100,000 issuances through the whole engine
/// (in-memory log, so the test measures uniqueness, not the disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serials_are_unique_over_100k_issuances() {
    let work = tempfile::tempdir().unwrap();
    let (config, _opened) = open_engine(work.path(), "ecdsa-p256");
    let log = Arc::new(slcs::store::memory::MemoryIssuanceLog::default());
    let engine = Arc::new(
        slcs::pki::issuer::IssuanceEngine::start(
            &config,
            Arc::clone(&log) as Arc<dyn slcs::store::IssuanceLog>,
            now(),
        )
        .unwrap(),
    );
    let csr = Arc::new(rcgen_csr(KeyKind::P256));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (engine, csr) = (Arc::clone(&engine), Arc::clone(&csr));
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::with_capacity(25_000);
            for _ in 0..25_000 {
                let at = now();
                let issued = engine
                    .issue(&csr, &person_request("A", at), at)
                    .await
                    .unwrap();
                serials.push(issued.serial);
            }
            serials
        }));
    }
    let mut all = std::collections::HashSet::new();
    for task in tasks {
        for serial in task.await.unwrap() {
            assert_eq!(serial.as_bytes().len(), 18);
            assert_eq!(serial.as_bytes()[0], 1);
            assert!(all.insert(serial));
        }
    }
    assert_eq!(all.len(), 100_000);
    assert_eq!(log.issuance_count().await.unwrap(), 100_000);
}
