//! The certificate endpoint over real HTTPS: a service account's token and
//! a CSR become a certificate that `openssl verify` accepts; the OA4MP and
//! ESGF aliases take their originals' wire formats; every refused request
//! leaves the issuance log untouched; quotas hold under concurrency;
//! revocation reaches the certificates a token obtained.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::token::{admin, register, service_client_json};
use crate::{HttpResponse, Server, form_encode, openssl_output};

const FORM: &str = "application/x-www-form-urlencoded";

/// A P-256 CSR (PEM and DER) made with rcgen, subject ignored by slcs.
fn csr() -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin, CN=root");
    let csr = params.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), csr.der().to_vec())
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// Registers a service account and returns (secret, token).
pub fn service_token(server: &Server, id: &str) -> (String, String) {
    let (created, secret) = register(server, &service_client_json(id));
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = secret.unwrap();
    let token = server.post(
        "/token",
        &[("Authorization", &basic(id, &secret))],
        FORM,
        "grant_type=client_credentials&scope=slcs:certificate",
    );
    assert_eq!(token.status, 200, "{}", token.text());
    (
        secret,
        token.json()["access_token"].as_str().unwrap().to_owned(),
    )
}

pub fn issued_count(server: &Server) -> u64 {
    server.get("/healthz").json()["store"]["issuance_records"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}", server.get("/healthz").text()))
}

pub fn post_csr(server: &Server, token: &str, extra: &str) -> HttpResponse {
    let (pem, _) = csr();
    let auth = format!("Bearer {token}");
    server.post(
        "/certificate",
        &[("Authorization", &auth)],
        FORM,
        &format!("certificate_request={}{extra}", form_encode(&pem)),
    )
}

pub fn verify_with_openssl(server: &Server, pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    std::fs::write(&cert, pem).unwrap();
    let verify = openssl_output(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "sslclient",
        cert.to_str().unwrap(),
    ]);
    assert!(
        verify.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    subject_of(pem)
}

/// `slcs inspect --json` of a PEM certificate.
pub fn inspect_json(pem: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cert.pem");
    std::fs::write(&path, pem).unwrap();
    let inspected = crate::run_slcs(&["inspect", "--json", path.to_str().unwrap()], &[]);
    assert!(inspected.status.success());
    serde_json::from_slice(&inspected.stdout).unwrap()
}

#[test]
fn service_account_certificate_in_pem_json_and_pkcs10() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "openeo-batch");

    // Form + PEM CSR → PEM certificate, chain up to (not including) the root.
    let response = post_csr(&server, &token, "&lifetime=3600");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/x-pem-file")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let pem = response.text();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1, "root not sent");
    // CSR-09: the CSR's subject is ignored; the service DN form is used.
    let subject = verify_with_openssl(&server, &pem);
    assert!(subject.contains("CN=openeo-batch"), "{subject}");
    assert!(subject.contains("OU=Service Accounts"), "{subject}");
    assert!(!subject.contains("root"), "{subject}");

    // The provenance names the service account, its grant and this token.
    let inspected = inspect_json(&pem);
    let provenance = &inspected["provenance"];
    assert_eq!(provenance["subject"], "service:openeo-batch", "{inspected}");
    let steps = provenance["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["grant_type"], "client_credentials");
    assert_eq!(steps[0]["client_auth"], "client_secret_basic");
    assert_eq!(steps[0]["client_name"], "openEO batch jobs");
    assert_eq!(steps[1]["grant_type"], "certificate");
    assert_eq!(steps[1]["client_id"], "openeo-batch");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(provenance["token_id"], claims["jti"]);
    assert_eq!(provenance["grant_id"], claims["grant_id"]);

    // Accept: application/json.
    let auth = format!("Bearer {token}");
    let json_response = {
        let (pem, _) = csr();
        server.post(
            "/certificate",
            &[("Authorization", &auth), ("Accept", "application/json")],
            FORM,
            &format!("certificate_request={}&lifetime=999999", form_encode(&pem)),
        )
    };
    assert_eq!(json_response.status, 200, "{}", json_response.text());
    let body = json_response.json();
    for member in [
        "certificate",
        "chain",
        "serial",
        "not_before",
        "not_after",
        "subject",
    ] {
        assert!(body.get(member).is_some(), "{member} missing: {body}");
    }
    // CERT-04: asked for more than the profile maximum → clamped, and said so.
    assert!(body["lifetime"].as_u64().unwrap() <= 43_200);
    assert!(
        body["lifetime_note"]
            .as_str()
            .unwrap()
            .contains("requested 999999 s")
    );
    let status = server.send(
        "GET",
        &format!("/certificate/status/{}", body["serial"].as_str().unwrap()),
        &[("Authorization", &admin(&server))],
        None,
    );
    assert_eq!(status.json()["status"], "good", "{}", status.text());
    assert_eq!(issued_count(&server), 2);
}

#[test]
fn pkcs10_body_is_accepted() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    let (pem, _) = csr();
    let auth = format!("Bearer {token}");
    // PEM text as an application/pkcs10 body (the DER form is binary and
    // this test client sends text; the unit tests cover DER detection).
    let response = server.post(
        "/certificate",
        &[("Authorization", &auth)],
        "application/pkcs10",
        &pem,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    verify_with_openssl(&server, &response.text());
}

#[test]
fn oa4mp_and_esgf_aliases_take_their_wire_formats() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (secret, token) = service_token(&server, "wps-broker");

    // OA4MP getcert: client_id + client_secret + access_token in the form,
    // certreq = URL-safe base64 DER without padding, certlifetime seconds.
    let (_, der) = csr();
    let certreq = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der);
    let response = server.post(
        "/oauth2/getcert",
        &[],
        FORM,
        &format!(
            "client_id=wps-broker&client_secret={}&access_token={token}&certreq={certreq}&certlifetime=86400",
            form_encode(&secret)
        ),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    verify_with_openssl(&server, &response.text());

    // OA4MP errors are OAuth JSON.
    let refused = server.post(
        "/oauth2/getcert",
        &[],
        FORM,
        &format!("access_token={token}&certreq=%%%"),
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["error"], "invalid_request");

    // ESGF: Bearer + certificate_request (PEM) → text/plain certificate.
    let (pem, _) = csr();
    let auth = format!("Bearer {token}");
    let response = server.post(
        "/oauth/certificate/",
        &[("Authorization", &auth)],
        FORM,
        &format!("certificate_request={}", form_encode(&pem)),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    verify_with_openssl(&server, &response.text());
    // ESGF token errors: 403 with a plain-text reason, as django-oauth-toolkit.
    let response = server.post(
        "/oauth/certificate/",
        &[("Authorization", "Bearer not-a-token")],
        FORM,
        &format!("certificate_request={}", form_encode(&pem)),
    );
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(issued_count(&server), 2);
}

/// Every refusal: the right error, and nothing in the issuance log.
#[test]
fn rs_01_rs_02_rs_05_cert_04_refusals_issue_nothing() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (secret, token) = service_token(&server, "svc");
    let (pem, _) = csr();
    let form = format!("certificate_request={}", form_encode(&pem));
    let bearer = format!("Bearer {token}");
    let check = |response: HttpResponse, status: u16, error: &str| {
        assert_eq!(response.status, status, "{}", response.text());
        assert_eq!(response.json()["error"], error, "{}", response.text());
    };

    // No token: 401 with a bare challenge (RFC 6750 §3.1).
    let none = server.post("/certificate", &[], FORM, &form);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"slcs\"")
    );
    check(none, 401, "invalid_token");
    // RS-01: two tokens.
    check(
        server.post(
            "/certificate",
            &[("Authorization", &bearer)],
            FORM,
            &format!("{form}&access_token={token}"),
        ),
        400,
        "invalid_request",
    );
    // RS-02: token in the query string.
    check(
        server.post(
            &format!("/certificate?access_token={token}"),
            &[],
            FORM,
            &form,
        ),
        400,
        "invalid_request",
    );
    // A forged or garbled token.
    let garbled = server.post(
        "/certificate",
        &[("Authorization", "Bearer x.y.z")],
        FORM,
        &form,
    );
    assert!(
        garbled
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    check(garbled, 401, "invalid_token");
    // Wrong audience: a registration-API token.
    let mut body = service_client_json("api-bot");
    body["client"]["optionalClientScopes"] = json!(["slcs:clients"]);
    let (_, api_secret) = register(&server, &body);
    let issuer = server.get("/.well-known/oauth-authorization-server").json()["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    let api_token = server.post(
        "/token",
        &[("Authorization", &basic("api-bot", &api_secret.unwrap()))],
        FORM,
        &format!(
            "grant_type=client_credentials&resource={}",
            form_encode(&format!("{issuer}/rest/v1/oidc/clients"))
        ),
    );
    let api_bearer = format!(
        "Bearer {}",
        api_token.json()["access_token"].as_str().unwrap()
    );
    check(
        server.post(
            "/certificate",
            &[("Authorization", &api_bearer)],
            FORM,
            &form,
        ),
        401,
        "invalid_token",
    );
    // RS-05: a token without the certificate scope.
    let openid = server.post(
        "/token",
        &[("Authorization", &basic("svc", &secret))],
        FORM,
        "grant_type=client_credentials&scope=openid",
    );
    let openid_bearer = format!("Bearer {}", openid.json()["access_token"].as_str().unwrap());
    let scoped = server.post(
        "/certificate",
        &[("Authorization", &openid_bearer)],
        FORM,
        &form,
    );
    assert!(
        scoped
            .header("www-authenticate")
            .unwrap()
            .contains("scope=\"slcs:certificate\"")
    );
    check(scoped, 403, "insufficient_scope");
    // CERT-04: malformed and absurd lifetimes.
    for lifetime in ["0", "-1", "1.5", "12h", "9223372036854775807", "315360000"] {
        check(
            server.post(
                "/certificate",
                &[("Authorization", &bearer)],
                FORM,
                &format!("{form}&lifetime={lifetime}"),
            ),
            400,
            "invalid_request",
        );
    }
    // Bad CSRs (the foundation's fixtures) and non-CSR input.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/csr");
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let bad = std::fs::read_to_string(&path).unwrap();
        check(
            server.post(
                "/certificate",
                &[("Authorization", &bearer)],
                FORM,
                &format!("certificate_request={}", form_encode(&bad)),
            ),
            400,
            "invalid_request",
        );
    }
    check(
        server.post(
            "/certificate",
            &[("Authorization", &bearer)],
            FORM,
            "certificate_request=AAAA",
        ),
        400,
        "invalid_request",
    );
    check(
        server.post(
            "/certificate",
            &[("Authorization", &bearer)],
            FORM,
            "lifetime=60",
        ),
        400,
        "invalid_request",
    );
    // Wrong content type; oversized body.
    check(
        server.post(
            "/certificate",
            &[("Authorization", &bearer)],
            "application/json",
            "{}",
        ),
        415,
        "invalid_request",
    );
    // Announced above the limit: refused before the body is read (sending
    // it all would race the server's early answer).
    let oversized = server.request(&format!(
        "POST /certificate HTTP/1.1\r\nHost: localhost\r\nAuthorization: {bearer}\r\nContent-Type: {FORM}\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\ncertificate_request="
    ));
    assert_eq!(oversized.status, 413);
    // A revoked token.
    let revoked = server.post(
        "/revoke",
        &[("Authorization", &basic("svc", &secret))],
        FORM,
        &format!("token={token}"),
    );
    assert_eq!(revoked.status, 200);
    check(
        server.post("/certificate", &[("Authorization", &bearer)], FORM, &form),
        401,
        "invalid_token",
    );
    assert_eq!(issued_count(&server), 0, "nothing was issued");
}

#[test]
fn suspended_clients_tokens_yield_nothing() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    let suspend = server.send(
        "PUT",
        "/rest/v1/oidc/clients/svc/status",
        &[("Authorization", &admin(&server))],
        Some((
            "application/json",
            r#"{"status":"suspended","reason":"test"}"#,
        )),
    );
    assert_eq!(suspend.status, 200, "{}", suspend.text());
    let response = post_csr(&server, &token, "");
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_token");
    assert_eq!(issued_count(&server), 0);
}

#[test]
fn quota_per_token_holds_exactly_under_200_concurrent_requests() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[
            ("SLCS_CERTIFICATE_QUOTA_PER_TOKEN", "50"),
            // 200 requests at once from one address: the quota, not the
            // rate limit, is what is tested here.
            ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
        ],
    );
    let (_, token) = service_token(&server, "svc");
    let forms: Vec<String> = (0..200)
        .map(|_| format!("certificate_request={}", form_encode(&csr().0)))
        .collect();
    let bearer = format!("Bearer {token}");
    let results: Vec<HttpResponse> = std::thread::scope(|scope| {
        let handles: Vec<_> = forms
            .iter()
            .map(|form| {
                let server = &server;
                let bearer = &bearer;
                scope.spawn(move || {
                    server.post("/certificate", &[("Authorization", bearer)], FORM, form)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&HttpResponse> = results.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok, 50, "exactly the quota");
    assert_eq!(limited.len(), 150);
    for response in limited {
        assert!(
            response
                .header("retry-after")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        assert_eq!(response.json()["error"], "quota_exceeded");
    }
    assert_eq!(issued_count(&server), 50);
}

#[test]
fn revoking_the_token_revokes_its_certificates() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (secret, token) = service_token(&server, "svc");
    let auth = format!("Bearer {token}");
    let (pem, _) = csr();
    let issued = server.post(
        "/certificate",
        &[("Authorization", &auth), ("Accept", "application/json")],
        FORM,
        &format!("certificate_request={}", form_encode(&pem)),
    );
    assert_eq!(issued.status, 200, "{}", issued.text());
    let serial = issued.json()["serial"].as_str().unwrap().to_owned();
    let status_path = format!("/certificate/status/{serial}");

    // Relying parties ask as registered clients; anonymous callers cannot.
    assert_eq!(server.get(&status_path).status, 401);
    let client_auth = basic("svc", &secret);
    let status = server.send(
        "GET",
        &status_path,
        &[("Authorization", &client_auth)],
        None,
    );
    assert_eq!(status.json()["status"], "good", "{}", status.text());

    let revoked = server.post(
        "/revoke",
        &[("Authorization", &client_auth)],
        FORM,
        &format!("token={token}"),
    );
    assert_eq!(revoked.status, 200);
    let status = server.send(
        "GET",
        &status_path,
        &[("Authorization", &client_auth)],
        None,
    );
    assert_eq!(status.json()["status"], "revoked", "{}", status.text());
    assert!(
        status.json()["revocation_reason"]
            .as_str()
            .unwrap()
            .contains("access token")
    );

    // An unknown serial is "unknown"; a malformed one is 400.
    let unknown = server.send(
        "GET",
        "/certificate/status/01AB",
        &[("Authorization", &client_auth)],
        None,
    );
    assert_eq!(unknown.json()["status"], "unknown");
    let malformed = server.send(
        "GET",
        "/certificate/status/zz",
        &[("Authorization", &client_auth)],
        None,
    );
    assert_eq!(malformed.status, 400);
}

#[test]
fn admin_revokes_a_certificate_by_serial() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    let issued = post_csr(&server, &token, "");
    assert_eq!(issued.status, 200);
    let serial = issued.header("slcs-serial").unwrap().to_owned();
    let path = format!("/admin/certificates/{serial}/revoke");
    let revoke = server.send(
        "POST",
        &path,
        &[("Authorization", &admin(&server))],
        Some(("application/json", r#"{"reason":"key compromise"}"#)),
    );
    assert_eq!(revoke.status, 200, "{}", revoke.text());
    assert_eq!(revoke.json()["status"], "revoked");
    assert_eq!(revoke.json()["revocation_reason"], "key compromise");
    // Not for anyone else.
    let bearer = format!("Bearer {token}");
    assert_eq!(
        server
            .send("POST", &path, &[("Authorization", &bearer)], None)
            .status,
        401
    );
    let audit = server.send(
        "GET",
        "/admin/audit",
        &[("Authorization", &admin(&server))],
        None,
    );
    assert!(audit.text().contains("certificate.revoke"));
}

#[test]
fn slcs_cert_get_writes_a_usable_credential() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    let (created, secret) = register(&server, &service_client_json("svc-cli"));
    assert_eq!(created.status, 201);
    let secret = secret.unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &url]);
        crate::run_slcs(&all, &[("SLCS_CLIENT_SECRET", &secret)])
    };

    // One grid-style file: certificate, key, chain; 0600.
    let bundle = work.path().join("x509up_test");
    let output = run(&[
        "cert",
        "get",
        "--client-id",
        "svc-cli",
        "--out",
        bundle.to_str().unwrap(),
        "--lifetime",
        "3600",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["subject"].as_str().unwrap().contains("CN=svc-cli"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(text.contains("BEGIN PRIVATE KEY"));
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("PRIVATE KEY"),
        "key never printed"
    );
    verify_with_openssl(&server, &text);
    // The key in the file is the certificate's key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.pem");
    std::fs::write(&file, &text).unwrap();
    let from_cert = openssl_output(&["x509", "-noout", "-pubkey", "-in", file.to_str().unwrap()]);
    let from_key = openssl_output(&["pkey", "-pubout", "-in", file.to_str().unwrap()]);
    assert_eq!(from_cert.stdout, from_key.stdout);
    let inspected = crate::run_slcs(&["inspect", "--json", bundle.to_str().unwrap()], &[]);
    assert!(inspected.status.success());

    // Separate files, another key type; then revoke it by serial.
    let cert = work.path().join("cert.pem");
    let key = work.path().join("key.pem");
    let output = run(&[
        "cert",
        "get",
        "--client-id",
        "svc-cli",
        "--key-type",
        "ed25519",
        "--cert-out",
        cert.to_str().unwrap(),
        "--key-out",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    verify_with_openssl(&server, &std::fs::read_to_string(&cert).unwrap());
    let serial = report["serial"].as_str().unwrap();
    let output = run(&["cert", "revoke", serial, "--reason", "test", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&["cert", "status", serial, "--json"]);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["status"], "revoked");

    // A wrong secret: no token, nothing written.
    let nothing = work.path().join("nothing");
    let mut all = vec!["--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(&["cert", "get", "--client-id", "svc-cli", "--out"]);
    all.push(nothing.to_str().unwrap());
    all.extend_from_slice(&["--server", &url]);
    let output = crate::run_slcs(&all, &[("SLCS_CLIENT_SECRET", "wrong")]);
    assert!(!output.status.success());
    assert!(!nothing.exists());
}

// ---------------------------------------------------------------------------
// Tokens the token service does not issue yet (person and shared tokens
// arrive with login and token exchange), signed with the server's own
// current key so that the resource server's rules can be exercised now.

/// The claims of a JWT, unverified.
pub fn claims_of(token: &str) -> Value {
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// `claims` signed with the server's current signing key, read from its
/// data directory.
pub fn forge(server: &Server, claims: &Value) -> String {
    let keys_dir = server.data_dir.join("keys");
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(keys_dir.join("keys.json")).unwrap())
            .unwrap();
    let kid = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "current")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let pem = std::fs::read(keys_dir.join(format!("{kid}.pem"))).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

fn subject_of(pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pem");
    std::fs::write(&path, pem).unwrap();
    let output = openssl_output(&[
        "x509",
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
        "-in",
        path.to_str().unwrap(),
    ]);
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn forged_signature_expired_and_wrong_issuer_tokens_are_invalid() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    let base = claims_of(&token);
    let now = base["iat"].as_i64().unwrap();
    let mut expired = base.clone();
    expired["iat"] = json!(now - 4000);
    expired["exp"] = json!(now - 3000);
    let mut issuer = base.clone();
    issuer["iss"] = json!("https://evil.example");
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [forge(&server, &expired), forge(&server, &issuer), tampered] {
        let response = post_csr(&server, &bad, "");
        assert_eq!(response.status, 401, "{}", response.text());
        assert_eq!(response.json()["error"], "invalid_token");
    }
    // The forging helper itself is sound: the untouched claims pass.
    assert_eq!(post_csr(&server, &forge(&server, &base), "").status, 200);
    assert_eq!(issued_count(&server), 1);
}

#[test]
fn rs_04_service_token_never_yields_a_user_certificate() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    // A CSR asking to be "alice" still gets the service account's DN.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["alice.example".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let auth = format!("Bearer {token}");
    let response = server.post(
        "/certificate",
        &[("Authorization", &auth)],
        FORM,
        &format!("certificate_request={}", form_encode(&pem)),
    );
    assert_eq!(response.status, 200);
    let subject = subject_of(&response.text());
    assert!(subject.contains("CN=svc,OU=Service Accounts"), "{subject}");
    assert!(
        !subject.contains("alice") && !subject.contains("People"),
        "{subject}"
    );

    // A service-type token naming a person, or another service, is refused.
    let base = claims_of(&token);
    for sub in ["alice", "service:other", "service:"] {
        let mut claims = base.clone();
        claims["sub"] = json!(sub);
        let response = post_csr(&server, &forge(&server, &claims), "");
        assert_eq!(response.status, 403, "{sub}: {}", response.text());
        assert_eq!(response.json()["error"], "access_denied");
    }
    // A person-type token cannot name a service account either.
    let mut claims = base.clone();
    claims["slcs_sub_type"] = json!("user");
    let response = post_csr(&server, &forge(&server, &claims), "");
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(issued_count(&server), 1);
}

#[test]
fn cert_01_person_subjects_are_one_escaped_rdn() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "portal");
    let mut claims = claims_of(&token);
    claims["slcs_sub_type"] = json!("user");
    // Display names are what a person's DN carries besides the hashed
    // suffix; whoever creates an account chooses them.
    let mut layouts = Vec::new();
    let mut subjects = Vec::new();
    for (i, display) in [
        "alice, CN=admin",
        "alice+CN=root",
        "/DC=org/CN=admin",
        "alice",
    ]
    .iter()
    .enumerate()
    {
        claims["sub"] = json!(crate::people::add_user(
            &server,
            json!({"username": format!("user{i}"), "display_name": display}),
        ));
        let response = post_csr(&server, &forge(&server, &claims), "");
        assert_eq!(response.status, 200, "{display}: {}", response.text());
        let pem = response.text();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let common_names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap().to_owned())
            .collect();
        // One CN, holding the display name verbatim as one value.
        assert_eq!(common_names.len(), 1, "{display}: {common_names:?}");
        assert!(common_names[0].starts_with(display), "{common_names:?}");
        // The same attribute types in the same order whatever the name.
        let layout: Vec<String> = cert
            .subject()
            .iter_attributes()
            .map(|a| a.attr_type().to_id_string())
            .collect();
        layouts.push(layout);
        let subject = subject_of(&pem);
        assert!(subject.contains("OU=People"), "{subject}");
        subjects.push(subject);
    }
    assert!(layouts.windows(2).all(|w| w[0] == w[1]), "{layouts:?}");
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 4, "distinct people give distinct DNs");
    // The same person twice: the same DN.
    let again = subject_of(&post_csr(&server, &forge(&server, &claims), "").text());
    assert!(subjects.contains(&again));
}

#[test]
fn shared_tokens_need_an_authenticated_presenter_in_aud() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "wps");
    let (broker_secret, _) = service_token(&server, "broker-a");
    let (outsider_secret, _) = service_token(&server, "broker-c");
    let mut claims = claims_of(&token);
    claims["sub"] = json!(crate::people::add_user(
        &server,
        json!({"username": "alice", "display_name": "Alice"}),
    ));
    claims["slcs_sub_type"] = json!("user");
    claims["aud"] = json!(["broker-a", "broker-b"]);
    claims["slcs_grant_type"] = json!("urn:ietf:params:oauth:grant-type:token-exchange");
    let shared = forge(&server, &claims);
    let (pem, _) = csr();
    let form = format!("certificate_request={}", form_encode(&pem));
    let bearer = format!("Bearer {shared}");

    // Stolen: presented alone, it yields nothing.
    let alone = server.post("/certificate", &[("Authorization", &bearer)], FORM, &form);
    assert_eq!(alone.status, 401, "{}", alone.text());
    assert_eq!(alone.json()["error"], "invalid_token");
    // An authenticated client that is not among the parties.
    let outsider = server.post(
        "/certificate",
        &[("Authorization", &bearer)],
        FORM,
        &format!(
            "{form}&client_id=broker-c&client_secret={}",
            form_encode(&outsider_secret)
        ),
    );
    assert_eq!(outsider.status, 401, "{}", outsider.text());
    // A public client named in aud proves nothing with its bare client_id.
    let public = json!({
        "client": {"clientId": "broker-b", "name": "Public broker", "publicClient": true, "consentRequired": true},
        "slcs": {"deviceFlowEnabled": true}
    });
    let (created, _) = register(&server, &public);
    assert_eq!(created.status, 201, "{}", created.text());
    let bare = server.post(
        "/certificate",
        &[("Authorization", &bearer)],
        FORM,
        &format!("{form}&client_id=broker-b"),
    );
    assert_eq!(bare.status, 401, "{}", bare.text());
    assert_eq!(bare.json()["error"], "invalid_token");
    // A party with a wrong secret.
    let wrong = server.post(
        "/certificate",
        &[("Authorization", &bearer)],
        FORM,
        &format!("{form}&client_id=broker-a&client_secret=wrong"),
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert_eq!(issued_count(&server), 0);

    // A party that authenticates: issued, and recorded as the presenter.
    let party = server.post(
        "/certificate",
        &[("Authorization", &bearer)],
        FORM,
        &format!(
            "{form}&client_id=broker-a&client_secret={}",
            form_encode(&broker_secret)
        ),
    );
    assert_eq!(party.status, 200, "{}", party.text());
    let inspected = inspect_json(&party.text());
    let steps = inspected["provenance"]["steps"].as_array().unwrap().clone();
    assert_eq!(steps[0]["client_id"], "wps");
    assert_eq!(steps[1]["client_id"], "broker-a");
    assert_eq!(steps[1]["client_auth"], "client_secret_post");
    assert_eq!(inspected["provenance"]["subject"], claims["sub"]);

    // An ordinary (single-audience) token presented by another client that
    // authenticates: refused, the token was not issued to it.
    let borrowed = server.post(
        "/certificate",
        &[("Authorization", &format!("Bearer {token}"))],
        FORM,
        &format!(
            "{form}&client_id=broker-a&client_secret={}",
            form_encode(&broker_secret)
        ),
    );
    assert_eq!(borrowed.status, 401, "{}", borrowed.text());
    assert_eq!(issued_count(&server), 1);
}

#[test]
fn csr_01_proof_of_possession_and_csr_08_extensions_at_the_endpoint() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    let auth = format!("Bearer {token}");
    let send_der = |der: &[u8]| {
        let value = base64::engine::general_purpose::STANDARD.encode(der);
        server.post(
            "/certificate",
            &[("Authorization", &auth)],
            FORM,
            &format!("certificate_request={}", form_encode(&value)),
        )
    };
    // CSR-01: one bit flipped in the signature.
    let (_, mut der) = csr();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let response = send_der(&der);
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(issued_count(&server), 0);

    // CSR-08: a CSR asking for CA:TRUE, keyCertSign, serverAuth and SANs
    // gets the profile and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let req = dir.path().join("r.pem");
    let made = openssl_output(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        req.to_str().unwrap(),
        "-subj",
        "/CN=evil",
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "extendedKeyUsage=serverAuth,codeSigning",
        "-addext",
        "subjectAltName=DNS:*.slcs.test,email:admin@example.org",
    ]);
    assert!(made.status.success());
    let response = server.post(
        "/certificate",
        &[("Authorization", &auth)],
        FORM,
        &format!(
            "certificate_request={}",
            form_encode(&std::fs::read_to_string(&req).unwrap())
        ),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let cert = dir.path().join("c.pem");
    std::fs::write(&cert, response.text()).unwrap();
    let text = String::from_utf8(
        openssl_output(&["x509", "-noout", "-text", "-in", cert.to_str().unwrap()]).stdout,
    )
    .unwrap();
    assert!(text.contains("CA:FALSE"), "{text}");
    for absent in [
        "CA:TRUE",
        "Certificate Sign",
        "Server Authentication",
        "Code Signing",
        "slcs.test",
        "Subject Alternative Name",
        "evil",
    ] {
        assert!(
            !text.contains(absent),
            "{absent} copied from the CSR:\n{text}"
        );
    }
    assert!(text.contains("TLS Web Client Authentication"));
}

#[test]
fn cert_03_serials_through_the_endpoint_are_unique_random_and_positive() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    let bearer = format!("Bearer {token}");
    let forms: Vec<String> = (0..96)
        .map(|_| format!("certificate_request={}", form_encode(&csr().0)))
        .collect();
    let serials: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = forms
            .chunks(6)
            .map(|chunk| {
                let (server, bearer) = (&server, &bearer);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|form| {
                            let r = server.post(
                                "/certificate",
                                &[("Authorization", bearer)],
                                FORM,
                                form,
                            );
                            assert_eq!(r.status, 200, "{}", r.text());
                            r.header("slcs-serial").unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut unique = serials.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 96);
    for serial in &serials {
        let bytes = hex::decode(serial).unwrap();
        assert!(bytes.len() <= 20 && bytes.len() >= 9, "{serial}");
        assert!(bytes[0] & 0x80 == 0, "positive: {serial}");
    }
    // Not sequential: no two serials differ by one in their last octets.
    let mut values: Vec<u128> = serials
        .iter()
        .map(|s| u128::from_str_radix(&s[s.len() - 32..], 16).unwrap())
        .collect();
    values.sort();
    assert!(values.windows(2).all(|w| w[1] - w[0] > 1));
}

#[test]
fn cert_04_client_policy_bounds_the_lifetime() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    for bad in [59, 1_000_000] {
        let mut body = service_client_json("short");
        body["slcs"] = json!({ "maxCertificateLifetimeSecs": bad });
        let (refused, _) = register(&server, &body);
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text());
        assert!(refused.text().contains("maxCertificateLifetimeSecs"));
    }
    let mut body = service_client_json("short");
    body["slcs"] = json!({ "maxCertificateLifetimeSecs": 600 });
    let (created, secret) = register(&server, &body);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["slcs"]["maxCertificateLifetimeSecs"], 600);
    let token = server.post(
        "/token",
        &[("Authorization", &basic("short", &secret.unwrap()))],
        FORM,
        "grant_type=client_credentials&scope=slcs:certificate",
    );
    let token = token.json()["access_token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let response = server.post(
        "/certificate",
        &[("Authorization", &auth), ("Accept", "application/json")],
        FORM,
        &format!(
            "certificate_request={}&lifetime=3600",
            form_encode(&csr().0)
        ),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert!(body["lifetime"].as_u64().unwrap() <= 600, "{body}");
    assert!(
        body["lifetime_note"]
            .as_str()
            .unwrap()
            .contains("client's policy 600 s"),
        "{body}"
    );
    assert!(response.header("slcs-lifetime-note").is_some());
}

#[test]
fn revoking_a_grant_revokes_its_tokens_and_certificates() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    let (secret, token) = service_token(&server, "svc");
    let issued = post_csr(&server, &token, "");
    assert_eq!(issued.status, 200);
    let serial = issued.header("slcs-serial").unwrap().to_owned();
    let grant = claims_of(&token)["grant_id"].as_str().unwrap().to_owned();
    // Another grant of the same client is untouched.
    let other = server.post(
        "/token",
        &[("Authorization", &basic("svc", &secret))],
        FORM,
        "grant_type=client_credentials&scope=slcs:certificate",
    );
    let other = other.json()["access_token"].as_str().unwrap().to_owned();

    let url = format!("https://localhost:{}", server.addr.port());
    let output = crate::run_slcs(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "grant",
            "revoke",
            &grant,
            "--server",
            &url,
            "--json",
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["revoked_certificates"], json!([serial]));

    let (status, answer) = crate::people::certificate_status(&server, &serial);
    assert_eq!(status, "revoked", "{answer}");
    assert_eq!(
        post_csr(&server, &token, "").status,
        401,
        "the grant's token is dead"
    );
    assert_eq!(
        post_csr(&server, &other, "").status,
        200,
        "other grants live on"
    );
    let introspected = server.post(
        "/introspect",
        &[("Authorization", &basic("svc", &secret))],
        FORM,
        &format!("token={token}"),
    );
    assert_eq!(introspected.json()["active"], false);
}

/// A token within the verifiers' clock leeway after its `exp` still meets
/// its spent quota: the window must not end before the token does.
#[test]
fn quota_window_outlives_the_tokens_leeway() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[("SLCS_CERTIFICATE_QUOTA_PER_TOKEN", "1")],
    );
    let (_, token) = service_token(&server, "svc");
    let mut claims = claims_of(&token);
    let now = claims["iat"].as_i64().unwrap();
    claims["exp"] = json!(now - 10);
    claims["jti"] = json!("at_leeway");
    let late = forge(&server, &claims);
    assert_eq!(post_csr(&server, &late, "").status, 200);
    // Past any window that would end at `exp` or at the first request.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = post_csr(&server, &late, "");
    assert_eq!(again.status, 429, "{}", again.text());
}

/// The load harness in its smoke mode (what CI runs): every workload
/// completes against a real server without a single error answer. No
/// timing is asserted.
#[test]
fn load_harness_smoke_every_workload_without_errors() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(
        &data,
        &[
            ("SLCS_CERTIFICATE_QUOTA_PER_SUBJECT_PER_HOUR", "1000000"),
            // One address sends everything: the rate limits would measure
            // themselves.
            ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
            ("SLCS_SERVER_RATE_PER_CLIENT", "0"),
        ],
    );
    let url = format!("https://localhost:{}", server.addr.port());
    let pid = server.child.id().to_string();
    let output = crate::run_slcs(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "load",
            "--workload",
            "all",
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--csr-pool",
            "16",
            "--ceiling-secs",
            "0.2",
            "--server-pid",
            &pid,
            "--server",
            &url,
            "--json",
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Value = serde_json::from_slice(&output.stdout).unwrap();
    let reports = reports.as_array().unwrap();
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "client-credentials",
            "introspect",
            "certificate",
            "mixed",
            "refresh",
            "code-flow",
            "token-exchange",
            "delegation-chain"
        ]
    );
    for people in &reports[4..] {
        assert!(people["login_ms"].as_f64().unwrap() > 0.0, "{people}");
    }
    for report in reports {
        assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["errors"], json!({}), "{report}");
        assert!(report["server_cpu_us_per_request"].as_f64().unwrap() > 0.0);
        assert!(report["server_peak_rss_mib"].as_f64().unwrap() > 0.0);
    }
    assert!(
        reports[0]["ceiling"]["certificates_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

/// `GET /metrics` (Prometheus text): requests by route template and
/// status, tokens by grant type, certificates by key type, quota refusals,
/// and the store's group commits; label values never come from the request.
#[test]
fn metrics_count_requests_tokens_certificates_and_flushes() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[("SLCS_CERTIFICATE_QUOTA_PER_TOKEN", "1")],
    );
    let (_, token) = service_token(&server, "svc");
    assert_eq!(post_csr(&server, &token, "").status, 200);
    assert_eq!(post_csr(&server, &token, "").status, 429);
    assert_eq!(server.get("/no/such/path-1234").status, 404);

    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text();
    for expected in [
        r#"slcs_tokens_issued_total{grant_type="client_credentials"} 1"#,
        r#"slcs_certificates_issued_total{key_type="ecdsa-p256"} 1"#,
        r#"slcs_quota_rejections_total{quota="per_token"} 1"#,
        r#"route="/certificate""#,
        r#"status="429""#,
        "slcs_store_flush_seconds_bucket",
        "slcs_store_flush_batch_size_count",
        "slcs_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(text.contains(r#"route="unmatched""#));
    assert!(!text.contains("path-1234"), "raw paths never become labels");
}
