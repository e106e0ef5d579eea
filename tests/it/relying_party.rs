//! Relying parties over mutual TLS (ATTACKS §14): certificates issued by the
//! engine are presented to the relying-party server of `slcs::relying_party`
//! (what `examples/relying_party.rs` runs), in-process on 127.0.0.1:0, over
//! real TLS handshakes with rustls (TLS 1.2 and 1.3) and curl as clients.
//!
//! The server trusts only the slcs CA of the test's data directory for
//! client certificates; it has its own, unrelated, server certificate.
//! Certificates slcs would never issue (no clientAuth EKU, CA:TRUE, a broken
//! provenance extension) are made with rcgen and the test CA's key, read
//! from the data directory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::AlertDescription;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use slcs::config::Config;
use slcs::pki::dn::CertificateIdentity;
use slcs::pki::issuer::{IssuanceEngine, IssuanceRequest, IssuedCertificate};
use slcs::pki::provenance::{DelegationProvenance, DelegationStep};
use slcs::relying_party;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{HttpResponse, now, open_engine, parse_response};

/// The development profile's provenance OID.
const OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 1];

/// A relying-party server running on the test's runtime; stopped on drop.
pub(crate) struct RelyingParty {
    addr: SocketAddr,
    /// The CA of the server's own certificate (clients trust it).
    server_ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RelyingParty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RelyingParty {
    /// Trusts `slcs_ca_pem` for client certificates; serves `/whoami`.
    pub(crate) async fn start(slcs_ca_pem: &str) -> Self {
        let (server_ca_pem, chain_pem, key_pem) = server_identity();
        let tls = relying_party::server_config(
            slcs_ca_pem.as_bytes(),
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = relying_party::whoami_router(OID.to_vec());
        let task = tokio::spawn(relying_party::serve(
            listener,
            tls,
            app,
            std::future::pending(),
        ));
        Self {
            addr,
            server_ca_pem,
            task,
        }
    }

    /// `GET /whoami` over a fresh connection with rustls, presenting
    /// `client` (or no certificate). An `Err` is the TLS failure.
    pub(crate) async fn whoami(
        &self,
        client: Option<&ClientCert>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Result<HttpResponse, std::io::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.server_ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some(client) => builder
                .with_client_auth_cert(
                    std::iter::once(&client.der)
                        .chain(&client.intermediates)
                        .map(|der| CertificateDer::from(der.clone()))
                        .collect(),
                    PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let exchange = async {
            let mut tls = connector.connect(name, tcp).await?;
            let request = b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            if let Err(error) = tls.write_all(request).await {
                // The server may have closed already: its alert is still
                // there to read, and is the error that matters.
                let mut rest = Vec::new();
                return Err(tls.read_to_end(&mut rest).await.err().unwrap_or(error));
            }
            let mut raw = Vec::new();
            match tls.read_to_end(&mut raw).await {
                Ok(_) => {}
                // No close_notify after a complete response is fine here.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(e) => return Err(e),
            }
            Ok(parse_response(&raw))
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
            .await
            .expect("the exchange finished")
    }

    /// Asserts that the handshake fails, in TLS 1.2 and 1.3, with `alert`
    /// from the server, and that no HTTP response is ever read.
    async fn assert_refused(&self, client: Option<&ClientCert>, alert: AlertDescription) {
        for version in [&TLS12, &TLS13] {
            let error = match self.whoami(client, version).await {
                Ok(response) => panic!(
                    "{:?}: expected a refused handshake, got HTTP {} {}",
                    version.version,
                    response.status,
                    response.text()
                ),
                Err(error) => error,
            };
            let received = error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            assert_eq!(
                received,
                Some(&rustls::Error::AlertReceived(alert)),
                "{:?}: {error}",
                version.version
            );
        }
    }

    /// `GET /whoami` with curl (OpenSSL): `Some(Ok(body))` when curl got a
    /// response, `Some(Err(stderr))` when it failed, `None` when curl is not
    /// installed (the caller then skips its curl checks).
    async fn curl(
        &self,
        client: Option<&ClientCert>,
        dir: &Path,
    ) -> Option<Result<String, String>> {
        let tag = crate::rand_tag();
        let server_ca = dir.join(format!("rp-ca-{tag}.pem"));
        std::fs::write(&server_ca, &self.server_ca_pem).unwrap();
        let port = self.addr.port();
        let mut args = vec![
            "--silent".to_owned(),
            "--show-error".to_owned(),
            "--max-time".to_owned(),
            "20".to_owned(),
            "--cacert".to_owned(),
            server_ca.to_str().unwrap().to_owned(),
            "--resolve".to_owned(),
            format!("localhost:{port}:127.0.0.1"),
        ];
        if let Some(client) = client {
            let cert = dir.join(format!("client-{tag}.pem"));
            let key = dir.join(format!("client-{tag}.key"));
            std::fs::write(
                &cert,
                pem::encode(&pem::Pem::new("CERTIFICATE", client.der.clone())),
            )
            .unwrap();
            std::fs::write(&key, &client.key_pem).unwrap();
            args.extend([
                "--cert".to_owned(),
                cert.to_str().unwrap().to_owned(),
                "--key".to_owned(),
                key.to_str().unwrap().to_owned(),
            ]);
        }
        args.push(format!("https://localhost:{port}/whoami"));
        let output = tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output())
            .await
            .unwrap();
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("curl is not installed; skipping the curl checks");
                return None;
            }
            Err(e) => panic!("curl: {e}"),
        };
        Some(if output.status.success() {
            Ok(String::from_utf8(output.stdout).unwrap())
        } else {
            assert!(output.stdout.is_empty(), "curl printed a body on failure");
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        })
    }
}

/// The relying party's own TLS identity: a throwaway CA and a `localhost`
/// certificate. Returns (CA PEM, chain PEM, key PEM).
fn server_identity() -> (String, String, String) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "relying-party test server CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A client certificate (DER) and its key (PKCS#8 PEM).
pub(crate) struct ClientCert {
    pub(crate) der: Vec<u8>,
    pub(crate) key_pem: String,
    /// Sent after the end-entity certificate in the TLS `Certificate`
    /// message (RFC 8446 §4.4.2).
    pub(crate) intermediates: Vec<Vec<u8>>,
}

/// Issues a certificate with the engine, for a fresh P-256 key, as if at
/// `at` (the engine takes the time as an argument).
async fn issue(
    engine: &IssuanceEngine,
    identity: CertificateIdentity,
    provenance: DelegationProvenance,
    at: time::OffsetDateTime,
) -> (ClientCert, IssuedCertificate) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let request = IssuanceRequest {
        identity,
        provenance,
        requested_lifetime_secs: Some(3600),
        not_after_limits: Vec::new(),
    };
    let issued = engine.issue(csr.der(), &request, at).await.unwrap();
    (
        ClientCert {
            der: issued.der.clone(),
            key_pem: key.serialize_pem(),
            intermediates: Vec::new(),
        },
        issued,
    )
}

fn whole_seconds(t: time::OffsetDateTime) -> time::OffsetDateTime {
    t.replace_nanosecond(0).unwrap()
}

/// A service account acting as itself: one client-credentials step.
fn harvester() -> (CertificateIdentity, DelegationProvenance) {
    let at = whole_seconds(now());
    (
        CertificateIdentity::ServiceAccount {
            client_id: "harvester".into(),
        },
        DelegationProvenance {
            issuer: "https://slcs.example".into(),
            subject: "service:harvester".into(),
            auth_time: at,
            auth_context: None,
            grant_id: "grant-svc-1".into(),
            steps: vec![DelegationStep {
                client_id: "harvester".into(),
                client_name: Some("Catalogue harvester".into()),
                grant_type: "client_credentials".into(),
                scope: "slcs:certificate opendap:read".into(),
                time: at,
                client_auth: "private_key_jwt".into(),
                approval_id: None,
            }],
            token_id: "jti-svc-1".into(),
        },
    )
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// rcgen parameters for a client certificate shaped like slcs's: the
/// service-account subject, clientAuth, CA:FALSE, valid now. Tests then
/// break one property at a time.
fn forged_params(extensions: Vec<CustomExtension>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "slcs development");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "Service Accounts");
    params
        .distinguished_name
        .push(DnType::CommonName, "harvester");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = now() - time::Duration::minutes(5);
    params.not_after = now() + time::Duration::hours(1);
    params.custom_extensions = extensions;
    params
}

/// Signs `params` for a fresh key with `issuer`.
fn forge(params: &CertificateParams, issuer: &Issuer<'_, KeyPair>) -> ClientCert {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    ClientCert {
        der: params.signed_by(&key, issuer).unwrap().der().to_vec(),
        key_pem: key.serialize_pem(),
        intermediates: Vec::new(),
    }
}

/// The slcs CA's name and key identifier with `key`: the real CA key (read
/// from the data directory) or an impostor's.
fn issuer_named_like_the_ca(engine: &IssuanceEngine, key: KeyPair) -> Issuer<'static, KeyPair> {
    let der = CertificateDer::from(engine.ca_certificate().der().to_vec());
    Issuer::from_ca_cert_der(&der, key).unwrap()
}

fn real_ca_key(config: &Config) -> KeyPair {
    KeyPair::from_pem(&std::fs::read_to_string(&config.ca.key).unwrap()).unwrap()
}

/// (a) A service-account certificate and a delegated person certificate
/// from slcs's CA are accepted; `/whoami` reports the subject, serial,
/// expiry, principal and chain, over rustls (TLS 1.2 and 1.3) and curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_accepts_slcs_certificates_and_reads_the_chain() {
    let work = tempfile::tempdir().unwrap();
    let (_config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;

    let (identity, provenance) = harvester();
    let (client, issued) = issue(&opened.engine, identity, provenance.clone(), now()).await;
    assert_eq!(
        issued.subject,
        "CN=harvester,OU=Service Accounts,O=slcs development"
    );
    let expected = json!({
        "subject_dn": issued.subject,
        "serial": issued.serial.to_hex(),
        "not_after": rfc3339(issued.not_after),
        "principal": "service:harvester",
        "service_account": true,
        "chain": [{
            "client_id": "harvester",
            "grant_type": "client_credentials",
            "scope": "slcs:certificate opendap:read",
            "time": rfc3339(provenance.steps[0].time),
            "client_auth": "private_key_jwt",
        }],
        "presenter": "harvester",
        "summary": "harvester",
        "grant_id": "grant-svc-1",
        "token_id": "jti-svc-1",
    });
    for version in [&TLS12, &TLS13] {
        let response = rp.whoami(Some(&client), version).await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json(), expected);
    }
    if let Some(outcome) = rp.curl(Some(&client), work.path()).await {
        let body = outcome.expect("curl is accepted");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            expected
        );
    }

    // A person's certificate obtained through a three-step delegation.
    let request = crate::issuance::person_request("Alice Example", now());
    let (client, issued) = issue(
        &opened.engine,
        request.identity.clone(),
        request.provenance.clone(),
        now(),
    )
    .await;
    let who = rp.whoami(Some(&client), &TLS13).await.unwrap().json();
    assert_eq!(who["subject_dn"], issued.subject.as_str());
    assert_eq!(who["principal"], "user-7");
    assert_eq!(who["service_account"], false);
    let chain: Vec<&str> = who["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["climate-portal", "wps", "broker-a"]);
    assert_eq!(who["chain"][1]["grant_type"], "token-exchange");
    assert_eq!(who["presenter"], "broker-a");
    assert_eq!(who["grant_id"], "grant-42");
    assert_eq!(who["token_id"], "jti-123");
}

/// RP-01: a certificate with the very same subject DN, issued by another
/// slcs deployment's CA, fails the handshake (unknown CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_01_same_subject_from_another_ca_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (_config, ours) = open_engine(&work.path().join("ours"), "ecdsa-p256");
    let (_config, theirs) = open_engine(&work.path().join("theirs"), "ecdsa-p256");
    let rp = RelyingParty::start(ours.engine.ca_certificate().pem()).await;

    let (identity, provenance) = harvester();
    let (mine, my_issued) = issue(&ours.engine, identity.clone(), provenance.clone(), now()).await;
    let (foreign, foreign_issued) = issue(&theirs.engine, identity, provenance, now()).await;
    assert_eq!(my_issued.subject, foreign_issued.subject);

    assert_eq!(rp.whoami(Some(&mine), &TLS13).await.unwrap().status, 200);
    rp.assert_refused(Some(&foreign), AlertDescription::UnknownCA)
        .await;
    if let Some(outcome) = rp.curl(Some(&foreign), work.path()).await {
        let stderr = outcome.expect_err("curl is refused");
        assert!(stderr.contains("alert unknown ca"), "{stderr}");
    }
}

/// RP-01: no client certificate at all fails the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_01_no_client_certificate_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (_config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;
    rp.assert_refused(None, AlertDescription::CertificateRequired)
        .await;
    if let Some(outcome) = rp.curl(None, work.path()).await {
        let stderr = outcome.expect_err("curl is refused");
        assert!(stderr.contains("alert certificate required"), "{stderr}");
    }
}

/// RP-01: expired and not-yet-valid slcs certificates fail the handshake.
/// The engine issues them as if a day ago or a day ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_01_expired_and_not_yet_valid_certificates_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let (_config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;
    let day = time::Duration::days(1);

    let (identity, provenance) = harvester();
    let (expired, issued) = issue(
        &opened.engine,
        identity.clone(),
        provenance.clone(),
        now() - day,
    )
    .await;
    assert!(issued.not_after < now());
    rp.assert_refused(Some(&expired), AlertDescription::CertificateExpired)
        .await;

    let (future, issued) = issue(&opened.engine, identity, provenance, now() + day).await;
    assert!(issued.not_before > now());
    rp.assert_refused(Some(&future), AlertDescription::CertificateExpired)
        .await;
}

/// RP-01: certificates that only look like the slcs CA's: signed by another
/// key under the CA's exact name and key identifier, and a self-signed one
/// whose subject and issuer are the CA's name. Both fail the signature
/// check; the subject and the provenance extension inside are never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_01_impostors_with_the_slcs_ca_name_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let (config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;
    let (_, provenance) = harvester();
    let extension = CustomExtension::from_oid_content(OID, provenance.to_der().unwrap());
    let params = forged_params(vec![extension]);

    // Control: the same certificate signed by the real CA key is accepted,
    // so the refusals below are about the signer alone.
    let genuine = forge(
        &params,
        &issuer_named_like_the_ca(&opened.engine, real_ca_key(&config)),
    );
    let who = rp.whoami(Some(&genuine), &TLS13).await.unwrap();
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(who.json()["principal"], "service:harvester");

    let impostor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let impostor = forge(
        &params,
        &issuer_named_like_the_ca(&opened.engine, impostor_key),
    );
    rp.assert_refused(Some(&impostor), AlertDescription::DecryptError)
        .await;

    // Self-signed: subject = issuer = the CA's name.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut self_signed = forged_params(Vec::new());
    let (_, ca) =
        x509_parser::parse_x509_certificate(opened.engine.ca_certificate().der()).unwrap();
    self_signed.distinguished_name = DistinguishedName::new();
    for attribute in ca.subject().iter_attributes() {
        let kind = match attribute.attr_type().to_id_string().as_str() {
            "2.5.4.10" => DnType::OrganizationName,
            "2.5.4.3" => DnType::CommonName,
            other => panic!("unexpected CA name attribute {other}"),
        };
        self_signed
            .distinguished_name
            .push(kind, attribute.as_str().unwrap());
    }
    let self_signed = ClientCert {
        der: self_signed.self_signed(&key).unwrap().der().to_vec(),
        key_pem: key.serialize_pem(),
        intermediates: Vec::new(),
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(&self_signed.der).unwrap();
    assert_eq!(parsed.issuer().as_raw(), ca.subject().as_raw());
    rp.assert_refused(Some(&self_signed), AlertDescription::DecryptError)
        .await;
}

/// RP-01: signed by the real slcs CA key but not a client certificate: an
/// EKU without clientAuth, or CA:TRUE. slcs never issues either; the RP
/// refuses them at the handshake anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_01_no_client_auth_eku_and_ca_certificates_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let (config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;
    let ca = issuer_named_like_the_ca(&opened.engine, real_ca_key(&config));

    let mut server_only = forged_params(Vec::new());
    server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    rp.assert_refused(
        Some(&forge(&server_only, &ca)),
        AlertDescription::UnsupportedCertificate,
    )
    .await;

    let mut ca_true = forged_params(Vec::new());
    ca_true.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_true.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    rp.assert_refused(
        Some(&forge(&ca_true, &ca)),
        AlertDescription::CertificateUnknown,
    )
    .await;
}

/// After a good handshake, the RP still refuses a certificate whose
/// provenance it cannot read unambiguously (malformed, or twice), and
/// accepts one without provenance as naming nobody but its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_refuses_unreadable_provenance_after_the_handshake() {
    let work = tempfile::tempdir().unwrap();
    let (config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;
    let ca = issuer_named_like_the_ca(&opened.engine, real_ca_key(&config));
    let (_, provenance) = harvester();
    let value = provenance.to_der().unwrap();
    let extension = |value: Vec<u8>| CustomExtension::from_oid_content(OID, value);

    let mut truncated = value.clone();
    truncated.pop();
    for (label, extensions) in [
        ("malformed", vec![extension(truncated)]),
        (
            "duplicated",
            vec![extension(value.clone()), extension(value.clone())],
        ),
    ] {
        let response = rp
            .whoami(Some(&forge(&forged_params(extensions), &ca)), &TLS13)
            .await
            .unwrap();
        assert_eq!(response.status, 403, "{label}: {}", response.text());
        assert_eq!(response.json()["error"], "invalid_client_certificate");
        println!("{label}: {}", response.json()["error_description"]);
    }

    let response = rp
        .whoami(Some(&forge(&forged_params(Vec::new()), &ca)), &TLS13)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let who = response.json();
    assert_eq!(
        who["subject_dn"],
        "CN=harvester,OU=Service Accounts,O=slcs development"
    );
    assert_eq!(who["principal"], serde_json::Value::Null);
    assert_eq!(who["service_account"], false);
    assert_eq!(who["chain"], json!([]));
    assert_eq!(who["presenter"], serde_json::Value::Null);
}

/// The whole path of issue 5: a service account runs `slcs cert get`
/// against a running slcs; the credential it writes is accepted over mutual
/// TLS by the relying party (rustls and curl), which reports the service
/// identity and the provenance chain; `openssl verify` agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_cert_get_then_mtls_to_a_relying_party() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = crate::Server::start(&data, &[]);
    let (created, secret) =
        crate::token::register(&server, &crate::token::service_client_json("harvester"));
    assert_eq!(created.status, 201, "{}", created.text());
    let cert_path = work.path().join("cert.pem");
    let key_path = work.path().join("key.pem");
    let url = format!("https://localhost:{}", server.addr.port());
    let output = crate::run_slcs(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "cert",
            "get",
            "--client-id",
            "harvester",
            "--cert-out",
            cert_path.to_str().unwrap(),
            "--key-out",
            key_path.to_str().unwrap(),
            "--server",
            &url,
        ],
        &[("SLCS_CLIENT_SECRET", &secret.unwrap())],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verify = crate::openssl_output(&[
        "verify",
        "-CAfile",
        data.join("ca/ca.pem").to_str().unwrap(),
        cert_path.to_str().unwrap(),
    ]);
    assert!(verify.status.success());

    let client = ClientCert {
        der: CertificateDer::from_pem_file(&cert_path).unwrap().to_vec(),
        key_pem: std::fs::read_to_string(&key_path).unwrap(),
        intermediates: Vec::new(),
    };
    let rp = RelyingParty::start(&server.ca_pem()).await;
    let response = rp.whoami(Some(&client), &TLS13).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let whoami = response.json();
    assert_eq!(whoami["principal"], "service:harvester");
    assert_eq!(whoami["service_account"], true);
    assert_eq!(whoami["presenter"], "harvester");
    let chain = whoami["chain"].as_array().unwrap();
    assert_eq!(chain[0]["grant_type"], "client_credentials");
    assert_eq!(chain[0]["client_auth"], "client_secret_basic");
    assert_eq!(chain[1]["grant_type"], "certificate");
    assert!(
        whoami["subject_dn"]
            .as_str()
            .unwrap()
            .starts_with("CN=harvester,OU=Service Accounts")
    );
    if let Some(outcome) = rp.curl(Some(&client), work.path()).await {
        let body: serde_json::Value =
            serde_json::from_str(&outcome.expect("curl is accepted")).unwrap();
        assert_eq!(body, whoami);
    }
}

/// A CA certificate named `cn` for `key`, to be signed by someone.
fn intermediate_params(cn: &str, extensions: Vec<CustomExtension>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.not_before = now() - time::Duration::minutes(5);
    params.not_after = now() + time::Duration::hours(1);
    params.custom_extensions = extensions;
    params
}

/// ATTACKS RP-02: a client sends fifty intermediates that all carry the
/// same name (subject and issuer alike) under different keys, the
/// end-entity certificate issued under that name: every candidate path is
/// a dead end, and a path builder without a budget tries exponentially
/// many. The relying party (rustls-webpki's verifier, which bounds the
/// signature checks of one verification) refuses the handshake, in both
/// TLS versions, well within the exchange's 20 s deadline; and then
/// serves a genuine client on the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_02_fifty_same_name_intermediates_are_refused_promptly() {
    let work = tempfile::tempdir().unwrap();
    let (config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;

    let keys: Vec<KeyPair> = (0..50)
        .map(|_| KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
        .collect();
    // Each is signed by the next one's key, under the shared name.
    let intermediates: Vec<Vec<u8>> = (0..keys.len())
        .map(|i| {
            let signer = Issuer::new(
                intermediate_params("slcs pathological", Vec::new()),
                &keys[(i + 1) % keys.len()],
            );
            intermediate_params("slcs pathological", Vec::new())
                .signed_by(&keys[i], &signer)
                .unwrap()
                .der()
                .to_vec()
        })
        .collect();
    let (_, provenance) = harvester();
    let extension = CustomExtension::from_oid_content(OID, provenance.to_der().unwrap());
    let mut client = forge(
        &forged_params(vec![extension]),
        &Issuer::new(
            intermediate_params("slcs pathological", Vec::new()),
            KeyPair::from_pem(&keys[0].serialize_pem()).unwrap(),
        ),
    );
    client.intermediates = intermediates;
    for version in [&TLS12, &TLS13] {
        let error = rp
            .whoami(Some(&client), version)
            .await
            .expect_err("a chain to nowhere was accepted");
        let received = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        assert!(
            matches!(received, Some(rustls::Error::AlertReceived(_))),
            "{:?}: {error}",
            version.version
        );
    }

    let genuine = forge(
        &forged_params(vec![CustomExtension::from_oid_content(
            OID,
            provenance.to_der().unwrap(),
        )]),
        &issuer_named_like_the_ca(&opened.engine, real_ca_key(&config)),
    );
    assert_eq!(rp.whoami(Some(&genuine), &TLS13).await.unwrap().status, 200);
}

/// The DER of a critical nameConstraints extension (RFC 5280 §4.2.1.10)
/// permitting one subtree: `tag` is the GeneralName's context tag (2 for
/// dNSName, 6 for uniformResourceIdentifier), `base` its value.
fn name_constraints(tag: u8, base: &str) -> CustomExtension {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let length = u8::try_from(content.len()).unwrap();
        assert!(length < 0x80, "short-form lengths only");
        [&[tag, length][..], content].concat()
    }
    let name = tlv(0x80 | tag, base.as_bytes());
    let subtree = tlv(0x30, &name);
    let permitted = tlv(0xA0, &subtree);
    let mut extension = CustomExtension::from_oid_content(&[2, 5, 29, 30], tlv(0x30, &permitted));
    extension.set_criticality(true);
    extension
}

/// ATTACKS RP-04: an intermediate under the slcs CA constrains names to
/// one subtree. DNS names under `example.org`: a client certificate it
/// issued for a wildcard name outside is refused at the handshake, one
/// inside is accepted (the control: the refusal is the constraint's).
/// URIs with host `example.org`: rustls-webpki does not evaluate URI
/// constraints and fails closed, so a URI outside is refused and so is
/// one inside; this pins that a URI constraint is never ignored (the bug
/// of RUSTSEC-2026-0098).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_04_names_outside_an_intermediates_constraints_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let (config, opened) = open_engine(&work.path().join("data"), "ecdsa-p256");
    let rp = RelyingParty::start(opened.engine.ca_certificate().pem()).await;
    let root = issuer_named_like_the_ca(&opened.engine, real_ca_key(&config));
    let (_, provenance) = harvester();

    let cases = [
        (2, "example.org", "portal.example.org", "*.evil.example.com"),
        (
            6,
            "example.org",
            "https://example.org/portal",
            "https://evil.example.com/",
        ),
    ];
    for (tag, subtree, inside, outside) in cases {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = intermediate_params("slcs constrained", vec![name_constraints(tag, subtree)]);
        let intermediate = params.signed_by(&key, &root).unwrap().der().to_vec();
        let issuer = Issuer::new(params, key);
        let with_name = |name: &str| {
            let mut params = forged_params(vec![CustomExtension::from_oid_content(
                OID,
                provenance.to_der().unwrap(),
            )]);
            params.subject_alt_names = vec![if tag == 6 {
                rcgen::SanType::URI(name.try_into().unwrap())
            } else {
                rcgen::SanType::DnsName(name.try_into().unwrap())
            }];
            let mut client = forge(&params, &issuer);
            client.intermediates = vec![intermediate.clone()];
            client
        };
        let inside_answer = rp.whoami(Some(&with_name(inside)), &TLS13).await;
        let refused = if tag == 2 {
            assert_eq!(
                inside_answer.as_ref().map(|r| r.status).ok(),
                Some(200),
                "{inside} under {subtree}: {:?}",
                inside_answer.err()
            );
            vec![outside]
        } else {
            assert!(inside_answer.is_err(), "URI constraints are evaluated now");
            vec![outside, inside]
        };
        for (version, name) in [&TLS12, &TLS13]
            .into_iter()
            .flat_map(|v| refused.iter().map(move |n| (v, *n)))
        {
            let outside = name;
            let error = rp
                .whoami(Some(&with_name(outside)), version)
                .await
                .expect_err(outside);
            let received = error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            assert!(
                matches!(received, Some(rustls::Error::AlertReceived(_))),
                "{outside}: {error}"
            );
        }
    }
}
