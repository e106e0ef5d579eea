//! The token service over real HTTPS: a service account registered with the
//! seed's server-to-server JSON obtains tokens by client credentials, the
//! token verifies against `/jwks` with an implementation independent of the
//! server's (aws-lc-rs ECDSA over the JWS signing input), introspection and
//! revocation behave per RFC 7662/7009, and the ATTACKS entries of sections
//! 3, 6 and 8 that apply without users are refused.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{HttpResponse, Server};

const FORM: &str = "application/x-www-form-urlencoded";

/// The seed's server-to-server shape (003: standardFlowEnabled=false,
/// consentRequired=false, no redirect URIs, serviceAccountsEnabled=true).
pub fn service_client_json(id: &str) -> Value {
    json!({
        "client": {
            "clientId": id,
            "name": "openEO batch jobs",
            "description": "Service account for unattended processing",
            "standardFlowEnabled": false,
            "consentRequired": false,
            "serviceAccountsEnabled": true,
            "redirectUris": [],
            "defaultClientScopes": ["openid", "slcs:certificate"]
        },
        "maintainers": [],
        "featureAuthenticate": false
    })
}

pub fn admin(server: &Server) -> String {
    format!("Bearer {}", server.admin_token())
}

/// Registers a client as admin; returns (response JSON, secret).
pub fn register(server: &Server, body: &Value) -> (HttpResponse, Option<String>) {
    let auth = admin(server);
    let response = server.post(
        "/rest/v1/oidc/clients",
        &[("Authorization", &auth)],
        "application/json",
        &body.to_string(),
    );
    let secret = (response.status == 201)
        .then(|| {
            response.json()["client"]["secret"]
                .as_str()
                .map(str::to_owned)
        })
        .flatten();
    (response, secret)
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

pub fn token_basic(server: &Server, id: &str, secret: &str, body: &str) -> HttpResponse {
    let auth = basic(id, secret);
    server.post("/token", &[("Authorization", &auth)], FORM, body)
}

/// Verifies an ES256 JWS with aws-lc-rs directly, using the JWK from /jwks:
/// no JWT library involved.
fn verify_independently(server: &Server, token: &str) -> Value {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let jwks = server.get("/jwks").json();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid published in /jwks");
    assert!(key.get("d").is_none(), "private key material published");
    let mut point = vec![4u8];
    point.extend(b64.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(b64.decode(key["y"].as_str().unwrap()).unwrap());
    let signature = b64.decode(parts[2]).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
    .expect("signature verifies with the published key");
    serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap()
}

#[test]
fn service_account_client_credentials_introspection_and_revocation() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (created, secret) = register(&server, &service_client_json("openeo-batch"));
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = secret.expect("secret shown once at creation");
    assert!(secret.starts_with("slcs_cs_"), "scanner-friendly prefix");

    // Shown once: a later GET has no secret.
    let auth = admin(&server);
    let shown = server.send(
        "GET",
        "/rest/v1/oidc/clients/openeo-batch",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert!(!shown.text().contains(&secret));
    assert!(shown.json()["client"].get("secret").is_none());

    // client_secret_basic and client_secret_post.
    let by_basic = token_basic(
        &server,
        "openeo-batch",
        &secret,
        "grant_type=client_credentials",
    );
    assert_eq!(by_basic.status, 200, "{}", by_basic.text());
    assert_eq!(by_basic.header("cache-control"), Some("no-store"));
    let by_post = server.post(
        "/token",
        &[],
        FORM,
        &format!("grant_type=client_credentials&client_id=openeo-batch&client_secret={secret}&scope=slcs%3Acertificate"),
    );
    assert_eq!(by_post.status, 200, "{}", by_post.text());
    assert_eq!(by_post.json()["scope"], "slcs:certificate");

    let body = by_basic.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "openid slcs:certificate");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims = verify_independently(&server, &token);
    assert_eq!(claims["sub"], "service:openeo-batch");
    assert_eq!(claims["client_id"], "openeo-batch");
    assert_eq!(claims["iss"], "https://localhost:8443");
    assert_eq!(claims["aud"], "https://localhost:8443/certificate");
    assert_eq!(claims["slcs_sub_type"], "service");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());

    // Introspection by the client itself: active, with the claims.
    let introspect = |token: &str| {
        let auth = basic("openeo-batch", &secret);
        server.post(
            "/introspect",
            &[("Authorization", &auth)],
            FORM,
            &format!("token={token}"),
        )
    };
    let active = introspect(&token);
    assert_eq!(active.status, 200, "{}", active.text());
    let active = active.json();
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], "service:openeo-batch");
    assert_eq!(active["scope"], "openid slcs:certificate");

    // Revocation: then inactive; the other token stays active.
    let auth = basic("openeo-batch", &secret);
    let revoked = server.post(
        "/revoke",
        &[("Authorization", &auth)],
        FORM,
        &format!("token={token}"),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(introspect(&token).json(), json!({"active": false}));
    let other = by_post.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&other).json()["active"], true);

    // IR-05: unknown tokens revoke "successfully" without effect.
    let garbage = server.post(
        "/revoke",
        &[("Authorization", &auth)],
        FORM,
        "token=garbage&token_type_hint=foo",
    );
    assert_eq!(garbage.status, 200);

    // The audit log recorded creation, issuance and revocation.
    drop(server);
}

#[test]
fn ca_01_wrong_missing_or_doubled_client_credentials() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, secret) = register(&server, &service_client_json("svc"));
    let secret = secret.unwrap();

    let wrong = token_basic(&server, "svc", "wrong", "grant_type=client_credentials");
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );

    let mut near = secret.clone();
    let last = near.pop().unwrap();
    near.push(if last == 'A' { 'B' } else { 'A' });
    let near_miss = token_basic(&server, "svc", &near, "grant_type=client_credentials");
    assert_eq!(near_miss.status, 401);
    // Unknown client: the same answer.
    let unknown = token_basic(&server, "nobody", &secret, "grant_type=client_credentials");
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.json(), wrong.json());

    let missing = server.post("/token", &[], FORM, "grant_type=client_credentials");
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"], "invalid_client");

    // CA-02: a confidential client without its secret.
    let no_secret = server.post(
        "/token",
        &[],
        FORM,
        "grant_type=client_credentials&client_id=svc",
    );
    assert_eq!(no_secret.status, 401);

    let doubled = token_basic(
        &server,
        "svc",
        &secret,
        &format!("grant_type=client_credentials&client_secret={secret}"),
    );
    assert_eq!(doubled.status, 400);
    assert_eq!(doubled.json()["error"], "invalid_request");
}

#[test]
fn ir_01_introspection_requires_client_authentication() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let response = server.post("/introspect", &[], FORM, "token=abc");
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["error"], "invalid_client");
}

#[test]
fn ir_02_introspection_of_another_clients_token_is_inactive() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, a) = register(&server, &service_client_json("svc-a"));
    let (_, b) = register(&server, &service_client_json("svc-b"));
    let token = token_basic(
        &server,
        "svc-a",
        &a.unwrap(),
        "grant_type=client_credentials",
    )
    .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = basic("svc-b", &b.unwrap());
    let answer = server.post(
        "/introspect",
        &[("Authorization", &auth)],
        FORM,
        &format!("token={token}"),
    );
    assert_eq!(answer.json(), json!({"active": false}));
    // RFC 7009 §2.1: B may not revoke A's token.
    let revoke = server.post(
        "/revoke",
        &[("Authorization", &auth)],
        FORM,
        &format!("token={token}"),
    );
    assert_eq!(revoke.status, 400);
    assert_eq!(revoke.json()["error"], "unauthorized_client");
}

#[test]
fn jwt_01_alg_none_and_forged_tokens_are_inactive_at_introspection() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, secret) = register(&server, &service_client_json("svc"));
    let secret = secret.unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = json!({
        "iss": "https://localhost:8443", "sub": "service:svc", "aud": "https://localhost:8443/certificate",
        "client_id": "svc", "scope": "slcs:certificate", "jti": "forged", "iat": 1_900_000_000i64,
        "exp": 4_000_000_000i64, "grant_id": "g", "slcs_sub_type": "service"
    });
    let payload = b64.encode(claims.to_string());
    let auth = basic("svc", &secret);
    for alg in ["none", "None", "NONE", "HS256"] {
        let header = b64.encode(json!({"alg": alg, "typ": "at+jwt"}).to_string());
        for signature in ["", "c2ln"] {
            let token = format!("{header}.{payload}.{signature}");
            let answer = server.post(
                "/introspect",
                &[("Authorization", &auth)],
                FORM,
                &format!("token={token}"),
            );
            assert_eq!(answer.json(), json!({"active": false}), "alg {alg}");
        }
    }
}

#[test]
fn rob_15_grants_and_clients_that_may_not_get_tokens_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, secret) = register(&server, &service_client_json("svc"));
    let secret = secret.unwrap();

    // AZ-13: the password grant does not exist; unknown grants fail closed.
    let password = token_basic(
        &server,
        "svc",
        &secret,
        "grant_type=password&username=a&password=b",
    );
    assert_eq!(password.json()["error"], "unsupported_grant_type");
    let unknown = token_basic(&server, "svc", &secret, "grant_type=urn%3Ax%3Aunknown");
    assert_eq!(unknown.json()["error"], "unsupported_grant_type");
    // RFC 6749 §3.3: scopes beyond the registration.
    let scope = token_basic(
        &server,
        "svc",
        &secret,
        "grant_type=client_credentials&scope=slcs%3Aadmin",
    );
    assert_eq!(scope.json()["error"], "invalid_scope");
    // AZ-07: repeated parameters.
    let repeated = token_basic(
        &server,
        "svc",
        &secret,
        "grant_type=client_credentials&grant_type=client_credentials",
    );
    assert_eq!(repeated.json()["error"], "invalid_request");

    // A suspended client is refused.
    let auth = admin(&server);
    let suspended = server.send(
        "PUT",
        "/rest/v1/oidc/clients/svc/status",
        &[("Authorization", &auth)],
        Some((
            "application/json",
            r#"{"status":"suspended","reason":"test"}"#,
        )),
    );
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    let refused = token_basic(&server, "svc", &secret, "grant_type=client_credentials");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"], "invalid_client");

    // Approved again: served; sent back to review (pending): refused; a
    // suspended client cannot skip back to review.
    for (status, expected) in [("active", 200), ("pending", 401), ("active", 200)] {
        let changed = server.send(
            "PUT",
            "/rest/v1/oidc/clients/svc/status",
            &[("Authorization", &auth)],
            Some(("application/json", &format!(r#"{{"status":"{status}"}}"#))),
        );
        assert_eq!(changed.status, 200, "{status}: {}", changed.text());
        let answer = token_basic(&server, "svc", &secret, "grant_type=client_credentials");
        assert_eq!(answer.status, expected, "{status}: {}", answer.text());
    }
}

#[test]
fn registration_rules_are_enforced_with_problem_documents() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);

    // No credentials, or a wrong token: 401 problem, nothing created.
    let anonymous = server.post(
        "/rest/v1/oidc/clients",
        &[],
        "application/json",
        &service_client_json("x1").to_string(),
    );
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("content-type"),
        Some("application/problem+json")
    );
    let wrong = server.post(
        "/rest/v1/oidc/clients",
        &[("Authorization", "Bearer not-the-admin-token")],
        "application/json",
        &service_client_json("x1").to_string(),
    );
    assert_eq!(wrong.status, 401);

    let web = |uris: Value, extra: Value| {
        let mut body = json!({
            "client": {
                "clientId": "portal",
                "name": "Climate Portal",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": uris,
            }
        });
        if let (Some(client), Some(extra)) = (body["client"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                client.insert(k.clone(), v.clone());
            }
        }
        body
    };
    let cases = [
        (
            "AZ-04 wildcard",
            web(json!(["https://portal.example/login/*"]), json!({})),
            "invalid_redirect_uri",
        ),
        (
            "AZ-04 javascript:",
            web(json!(["JaVaScRiPt:alert(1)//"]), json!({})),
            "invalid_redirect_uri",
        ),
        (
            "AZ-04 http",
            web(json!(["http://portal.example/cb"]), json!({})),
            "invalid_redirect_uri",
        ),
        (
            "AZ-04 fragment",
            web(json!(["https://portal.example/cb#x"]), json!({})),
            "invalid_redirect_uri",
        ),
        (
            "AZ-04 code in query",
            web(json!(["https://portal.example/cb?code=1"]), json!({})),
            "invalid_redirect_uri",
        ),
        (
            "AZ-04 relative",
            web(json!(["/cb"]), json!({})),
            "invalid_redirect_uri",
        ),
        (
            "REG-06 implicit",
            web(
                json!(["https://portal.example/cb"]),
                json!({"implicitFlowEnabled": true}),
            ),
            "invalid_client_metadata",
        ),
        (
            "REG-06 password",
            web(
                json!(["https://portal.example/cb"]),
                json!({"directAccessGrantsEnabled": true}),
            ),
            "invalid_client_metadata",
        ),
        (
            "seed: standard flow without consent",
            web(
                json!(["https://portal.example/cb"]),
                json!({"consentRequired": false}),
            ),
            "invalid_client_metadata",
        ),
        (
            "REG-02 chosen secret",
            web(
                json!(["https://portal.example/cb"]),
                json!({"secret": "chosen"}),
            ),
            "invalid_client_metadata",
        ),
        (
            "seed: service account with redirect URIs",
            json!({"client": {"clientId": "svc2", "name": "s", "serviceAccountsEnabled": true, "redirectUris": ["https://a.example/cb"]}}),
            "invalid_redirect_uri",
        ),
        (
            "TX-15 client id in the service namespace",
            service_client_json("service:alice"),
            "invalid_client_metadata",
        ),
    ];
    let auth = admin(&server);
    for (label, body, code) in cases {
        let response = server.post(
            "/rest/v1/oidc/clients",
            &[("Authorization", &auth)],
            "application/json",
            &body.to_string(),
        );
        assert_eq!(response.status, 400, "{label}: {}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json"),
            "{label}"
        );
        let problem = response.json();
        assert_eq!(problem["error"], code, "{label}: {problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{label}");
    }
    // Nothing of the above was created.
    let listed = server.send(
        "GET",
        "/rest/v1/oidc/clients",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(listed.json(), json!([]));

    // A valid web client, then the same id again (any case): 409.
    let ok = server.post(
        "/rest/v1/oidc/clients",
        &[("Authorization", &auth)],
        "application/json",
        &web(json!(["https://portal.example/cb"]), json!({})).to_string(),
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
    let mut again = web(json!(["https://portal.example/cb"]), json!({}));
    again["client"]["clientId"] = json!("Portal");
    let clash = server.post(
        "/rest/v1/oidc/clients",
        &[("Authorization", &auth)],
        "application/json",
        &again.to_string(),
    );
    assert_eq!(clash.status, 409, "{}", clash.text());
}

#[test]
fn discovery_jwks_and_webfinger() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let metadata = server.get(path).json();
        assert_eq!(metadata["issuer"], "https://localhost:8443");
        assert_eq!(metadata["token_endpoint"], "https://localhost:8443/token");
        assert_eq!(metadata["jwks_uri"], "https://localhost:8443/jwks");
        assert_eq!(
            metadata["grant_types_supported"],
            json!([
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(
            metadata["authorization_endpoint"],
            "https://localhost:8443/authorize"
        );
        assert_eq!(
            metadata["code_challenge_methods_supported"],
            json!(["S256"])
        );
        assert_eq!(metadata["response_types_supported"], json!(["code"]));
        assert_eq!(
            metadata["authorization_response_iss_parameter_supported"],
            json!(true)
        );
    }
    let jwks = server.get("/jwks");
    assert_eq!(
        jwks.header("content-type"),
        Some("application/jwk-set+json")
    );
    let keys = jwks.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "current and pre-published next key");
    for key in &keys {
        assert_eq!(key["alg"], "ES256");
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none());
    }
    let finger = server.get("/.well-known/webfinger?resource=acct%3Aalice%40localhost");
    assert_eq!(finger.status, 200, "{}", finger.text());
    assert_eq!(finger.json()["links"][0]["href"], "https://localhost:8443");
    let elsewhere = server.get("/.well-known/webfinger?resource=acct%3Aalice%40other.example");
    assert_eq!(elsewhere.status, 404);
    // Keys survive a restart unchanged.
    let kids: Vec<Value> = keys.iter().map(|k| k["kid"].clone()).collect();
    let data = server.data_dir.clone();
    assert!(server.terminate().success());
    let again = Server::start(&data, &[]);
    let kids_again: Vec<Value> = again.get("/jwks").json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, kids_again);
}

/// The openEO/EGI pattern end to end (seed 000): the real `openeo` Python
/// client runs `authenticate_oidc_client_credentials` with the id and secret
/// from environment variables against a fake openEO backend that lists slcs
/// as its provider, and the backend verifies the token with PyJWT against
/// slcs's JWKS. `.ci/run` installs openeo and PyJWT into `.venv` and sets
/// `OPENEO_REQUIRED=1`, so in CI a missing client fails instead of skipping.
#[test]
fn openeo_client_credentials_from_python() {
    let Some(python) = crate::venv_python("openeo, jwt", "OPENEO_REQUIRED") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (server, issuer) = crate::start_with_reachable_issuer(&work.path().join("data"));
    let (created, secret) = register(&server, &service_client_json("openeo-ci"));
    assert_eq!(created.status, 201, "{}", created.text());
    let ca = server.data_dir.join("ca").join("ca.pem");
    let output = std::process::Command::new(&python)
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python/openeo_client_credentials.py"),
        )
        .env("SLCS_TEST_ISSUER", &issuer)
        .env("OPENEO_CLIENT_ID", "openeo-ci")
        .env("OPENEO_CLIENT_SECRET", secret.unwrap())
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env_remove("SLCS_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.stderr()
    );
    assert!(stdout.contains("user_id=service:openeo-ci"), "{stdout}");
}

/// A P-256 key pair for client assertions, its public JWK, and a signer.
struct AssertionKey {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
    jwk: Value,
}

impl AssertionKey {
    fn new(kid: &str) -> Self {
        use aws_lc_rs::signature::KeyPair as _;
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
        });
        Self { pair, jwk }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self.pair.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64.encode(signature.as_ref()))
    }

    fn assertion(&self, client: &str, audience: &str, jti: &str) -> String {
        let now = crate::now().unix_timestamp();
        self.sign(
            &json!({"alg": "ES256", "kid": self.jwk["kid"], "typ": "JWT"}),
            &json!({"iss": client, "sub": client, "aud": audience, "jti": jti, "iat": now, "exp": now + 60}),
        )
    }
}

fn assertion_body(assertion: &str) -> String {
    format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
    )
}

#[test]
fn private_key_jwt_client_credentials_and_ca_05_replay() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let key = AssertionKey::new("k1");
    let mut body = service_client_json("jwt-svc");
    body["slcs"] =
        json!({"tokenEndpointAuthMethod": "private_key_jwt", "jwks": {"keys": [key.jwk.clone()]}});
    let (created, secret) = register(&server, &body);
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(secret.is_none(), "no secret for private_key_jwt");

    let audience = "https://localhost:8443/token";
    let assertion = key.assertion("jwt-svc", audience, "jti-1");
    let ok = server.post("/token", &[], FORM, &assertion_body(&assertion));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let claims = verify_independently(&server, ok.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "service:jwt-svc");

    // CA-05: the same assertion again.
    let replay = server.post("/token", &[], FORM, &assertion_body(&assertion));
    assert_eq!(replay.status, 401, "{}", replay.text());
    assert_eq!(replay.json()["error"], "invalid_client");

    // CA-05: ten concurrent uses of a fresh assertion, exactly one wins.
    let fresh = key.assertion("jwt-svc", audience, "jti-2");
    let results: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                scope.spawn(|| {
                    server
                        .post("/token", &[], FORM, &assertion_body(&fresh))
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|s| **s == 200).count(),
        1,
        "{results:?}"
    );

    // JWT-04 for assertions: an embedded key, a wrong audience, another
    // client's key, an over-long lifetime.
    let now = crate::now().unix_timestamp();
    let embedded = key.sign(
        &json!({"alg": "ES256", "kid": "k1", "jwk": key.jwk}),
        &json!({"iss": "jwt-svc", "sub": "jwt-svc", "aud": audience, "jti": "j3", "exp": now + 60}),
    );
    let wrong_aud = key.assertion("jwt-svc", "https://evil.example/token", "j4");
    let other = AssertionKey::new("k1").assertion("jwt-svc", audience, "j5");
    let long = key.sign(
        &json!({"alg": "ES256", "kid": "k1"}),
        &json!({"iss": "jwt-svc", "sub": "jwt-svc", "aud": audience, "jti": "j6", "exp": now + 86_400}),
    );
    for (label, assertion) in [
        ("embedded jwk", embedded),
        ("audience", wrong_aud),
        ("foreign key", other),
        ("lifetime", long),
    ] {
        let refused = server.post("/token", &[], FORM, &assertion_body(&assertion));
        assert_eq!(refused.status, 401, "{label}: {}", refused.text());
        assert_eq!(refused.json()["error"], "invalid_client", "{label}");
    }
}

/// RFC 8705 tls_client_auth: a service certificate issued by slcs itself
/// authenticates the client whose registered subject DN it carries.
#[tokio::test]
async fn tls_client_auth_with_an_slcs_certificate() {
    use rustls_pki_types::pem::PemObject as _;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    // Issue a service certificate before the server takes the data directory.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let certificate = {
        let (_config, opened) = crate::open_engine(&data, "ecdsa-p256");
        let mut request = crate::issuance::person_request("", crate::now());
        request.identity = slcs::pki::dn::CertificateIdentity::ServiceAccount {
            client_id: "mtls-svc".into(),
        };
        opened
            .engine
            .issue(csr.der(), &request, crate::now())
            .await
            .unwrap()
    };
    let server = Server::start(&data, &[]);
    let mut body = service_client_json("mtls-svc");
    body["slcs"] = json!({
        "tokenEndpointAuthMethod": "tls_client_auth",
        "tlsClientAuthSubjectDn": certificate.subject,
    });
    let (created, _) = register(&server, &body);
    assert_eq!(created.status, 201, "{}", created.text());

    let connect_with_certificate = || {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(server.ca_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = vec![rustls_pki_types::CertificateDer::from(
            certificate.der.clone(),
        )];
        let private =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
                .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let tcp = std::net::TcpStream::connect(server.addr).unwrap();
        rustls::StreamOwned::new(connection, tcp)
    };
    let form = "grant_type=client_credentials&client_id=mtls-svc";
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let mut tls = connect_with_certificate();
    std::io::Write::write_all(&mut tls, request.as_bytes()).unwrap();
    let ok = crate::read_response(&mut tls);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        verify_independently(&server, ok.json()["access_token"].as_str().unwrap())["sub"],
        "service:mtls-svc"
    );

    // Without the certificate the same request is refused.
    let without = server.post("/token", &[], FORM, form);
    assert_eq!(without.status, 401, "{}", without.text());
    // The certificate does not authenticate a client registered with another DN.
    let mut other = service_client_json("mtls-other");
    other["slcs"] = json!({"tokenEndpointAuthMethod": "tls_client_auth", "tlsClientAuthSubjectDn": "CN=someone-else,O=slcs development"});
    assert_eq!(register(&server, &other).0.status, 201);
    let form = "grant_type=client_credentials&client_id=mtls-other";
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let mut tls = connect_with_certificate();
    std::io::Write::write_all(&mut tls, request.as_bytes()).unwrap();
    assert_eq!(crate::read_response(&mut tls).status, 401);
}

/// The admin verbs of the `slcs` binary against a running server:
/// `client create|list|show|suspend|approve|rotate-secret`,
/// `token client-credentials` (secret from SLCS_CLIENT_SECRET), `keys
/// rotate` and `audit`.
#[test]
fn cli_admin_verbs_against_the_running_server() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    let url = format!("https://localhost:{}", server.addr.port());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--data-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &url, "--json"]);
        let output = crate::run_slcs(&all, env);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let json: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        (
            output.status.code(),
            json,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let file = work.path().join("client.json");
    std::fs::write(&file, service_client_json("cli-svc").to_string()).unwrap();

    let (code, created, err) = run(&["client", "create", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{err}");
    let secret = created["client"]["secret"].as_str().unwrap().to_owned();

    let (code, listed, _) = run(&["client", "list"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(listed[0]["clientId"], "cli-svc");

    let (code, suspended, _) = run(&["client", "suspend", "cli-svc", "--reason", "test"], &[]);
    assert_eq!(code, Some(0));
    assert!(suspended.to_string().contains("suspended"), "{suspended}");
    let (code, _, _) = run(
        &["token", "client-credentials", "--client-id", "cli-svc"],
        &[("SLCS_CLIENT_SECRET", &secret)],
    );
    assert_ne!(code, Some(0), "a suspended client gets no token");
    let (code, _, _) = run(&["client", "approve", "cli-svc"], &[]);
    assert_eq!(code, Some(0));

    let (code, token, err) = run(
        &["token", "client-credentials", "--client-id", "cli-svc"],
        &[("SLCS_CLIENT_SECRET", &secret)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(token["access_token"].as_str().unwrap().starts_with("ey"));

    let (code, rotated, _) = run(&["client", "rotate-secret", "cli-svc"], &[]);
    assert_eq!(code, Some(0));
    let fresh = rotated["client"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(fresh, secret);
    let (code, _, _) = run(
        &["token", "client-credentials", "--client-id", "cli-svc"],
        &[("SLCS_CLIENT_SECRET", &secret)],
    );
    assert_ne!(code, Some(0), "REG-11: the old secret stops working");
    let secret_file = work.path().join("secret");
    std::fs::write(&secret_file, &fresh).unwrap();
    let (code, _, err) = run(
        &[
            "token",
            "client-credentials",
            "--client-id",
            "cli-svc",
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");

    let before = server.get("/jwks").json();
    let (code, rotated_keys, _) = run(&["keys", "rotate"], &[]);
    assert_eq!(code, Some(0));
    let after = server.get("/jwks").json();
    let kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    // The pre-published next key signs now; the old one stays published.
    assert!(kids(&before).contains(&rotated_keys["current_kid"].as_str().unwrap().to_owned()));
    assert!(kids(&before).iter().all(|kid| kids(&after).contains(kid)));
    assert_eq!(kids(&after).len(), 3);

    let (code, audit, _) = run(&["audit", "--limit", "100"], &[]);
    assert_eq!(code, Some(0));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "client.create",
        "client.suspend",
        "client.approve",
        "token.issue",
        "client.update",
        "keys.rotate",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(
        !audit.to_string().contains(&fresh),
        "secrets never reach the audit log"
    );
}

/// Review findings, each a regression test: a public client cannot
/// introspect (RFC 7662 §2.1); rotating the secret of a client without one
/// is an error, not a silent success; malformed paths and queries of the
/// registration API answer problem documents, and only after the caller.
#[test]
fn registration_and_introspection_edge_cases() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let auth = admin(&server);
    let spa = json!({"client": {
        "clientId": "spa", "name": "SPA", "publicClient": true, "standardFlowEnabled": true,
        "consentRequired": true, "redirectUris": ["https://spa.example/cb"]
    }});
    let (created, secret) = register(&server, &spa);
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(secret.is_none());
    let public = server.post("/introspect", &[], FORM, "client_id=spa&token=anything");
    assert_eq!(public.status, 401, "{}", public.text());
    assert_eq!(public.json()["error"], "invalid_client");

    let key = AssertionKey::new("k1");
    let mut body = service_client_json("jwt-only");
    body["slcs"] =
        json!({"tokenEndpointAuthMethod": "private_key_jwt", "jwks": {"keys": [key.jwk.clone()]}});
    assert_eq!(register(&server, &body).0.status, 201);
    let rotate = server.send(
        "PUT",
        "/rest/v1/oidc/clients/jwt-only?rotate_secret=true",
        &[("Authorization", &auth)],
        Some(("application/json", &body.to_string())),
    );
    assert_eq!(rotate.status, 400, "{}", rotate.text());
    assert_eq!(
        rotate.header("content-type"),
        Some("application/problem+json")
    );

    let bad_query = server.send(
        "PUT",
        "/rest/v1/oidc/clients/jwt-only?rotate_secret=yes",
        &[("Authorization", &auth)],
        Some(("application/json", &body.to_string())),
    );
    assert_eq!(bad_query.status, 400);
    assert_eq!(
        bad_query.header("content-type"),
        Some("application/problem+json")
    );
    let anonymous = server.send(
        "PUT",
        "/rest/v1/oidc/clients/jwt-only?rotate_secret=yes",
        &[],
        Some(("application/json", &body.to_string())),
    );
    assert_eq!(anonymous.status, 401, "the caller is checked first");
    let bad_path = server.send(
        "GET",
        "/rest/v1/oidc/clients/%FF",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(bad_path.status, 400);
    assert_eq!(
        bad_path.header("content-type"),
        Some("application/problem+json")
    );
}

/// A service client that may call the registration API, with its secret.
pub fn api_caller(server: &Server, id: &str) -> String {
    let mut body = service_client_json(id);
    body["client"]["optionalClientScopes"] = json!(["slcs:clients"]);
    let (created, secret) = register(server, &body);
    assert_eq!(created.status, 201, "{}", created.text());
    secret.unwrap()
}

/// An access token for the registration API (RFC 8707 resource indicator).
pub fn api_token(server: &Server, id: &str, secret: &str) -> String {
    let issuer = server.get("/.well-known/oauth-authorization-server").json()["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    let resource = format!("{issuer}/rest/v1/oidc/clients");
    let body = format!(
        "grant_type=client_credentials&resource={}",
        crate::form_encode(&resource)
    );
    let response = token_basic(server, id, secret, &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    assert_eq!(json["scope"], "slcs:clients");
    let claims = verify_independently(server, json["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], resource.as_str());
    format!("Bearer {}", json["access_token"].as_str().unwrap())
}

#[test]
fn reg_01_only_owner_maintainer_or_admin_manages_a_client() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let alice_secret = api_caller(&server, "ci-alice");
    let mallory_secret = api_caller(&server, "ci-mallory");
    let alice = api_token(&server, "ci-alice", &alice_secret);
    let mallory = api_token(&server, "ci-mallory", &mallory_secret);

    // Alice registers a client with her API token: she owns it, and as she is
    // not an administrator it waits for approval.
    let created = server.post(
        "/rest/v1/oidc/clients",
        &[("Authorization", &alice)],
        "application/json",
        &service_client_json("alice-jobs").to_string(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["owner"], "service:ci-alice");
    assert_eq!(created.json()["slcs"]["status"], "pending");
    let path = "/rest/v1/oidc/clients/alice-jobs";
    let read = server.send("GET", path, &[("Authorization", &alice)], None);
    assert_eq!(read.status, 200, "{}", read.text());

    // Mallory can neither read, replace, re-scope nor list it; the answers
    // do not even confirm that it exists (ATTACKS REG-01).
    let before = server.send("GET", path, &[("Authorization", &admin(&server))], None);
    assert_eq!(
        server
            .send("GET", path, &[("Authorization", &mallory)], None)
            .status,
        404
    );
    let mut hijack = service_client_json("alice-jobs");
    hijack["maintainers"] = json!(["service:ci-mallory"]);
    let put = server.send(
        "PUT",
        path,
        &[("Authorization", &mallory)],
        Some(("application/json", &hijack.to_string())),
    );
    assert_eq!(put.status, 404, "{}", put.text());
    let group = server.send(
        "PUT",
        &format!("{path}/groups/everyone"),
        &[("Authorization", &mallory)],
        None,
    );
    assert_eq!(group.status, 404, "{}", group.text());
    let listed = server.send(
        "GET",
        "/rest/v1/oidc/clients",
        &[("Authorization", &mallory)],
        None,
    );
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json(),
        json!([]),
        "Mallory sees only her own clients"
    );
    // A non-admin cannot approve, not even her own client.
    let approve = server.send(
        "PUT",
        &format!("{path}/status"),
        &[("Authorization", &alice)],
        Some(("application/json", r#"{"status":"active"}"#)),
    );
    assert_eq!(approve.status, 403, "{}", approve.text());
    let after = server.send("GET", path, &[("Authorization", &admin(&server))], None);
    assert_eq!(before.json(), after.json(), "nothing changed");

    // Alice makes Mallory a maintainer: now Mallory may read and update it.
    let mut shared = service_client_json("alice-jobs");
    shared["maintainers"] = json!(["service:ci-mallory"]);
    let put = server.send(
        "PUT",
        path,
        &[("Authorization", &alice)],
        Some(("application/json", &shared.to_string())),
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let read = server.send("GET", path, &[("Authorization", &mallory)], None);
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["owner"], "service:ci-alice");
}

#[test]
fn rs_05_tokens_are_bound_to_one_resource() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let secret = api_caller(&server, "ci-bot");
    let clients = "/rest/v1/oidc/clients";

    // A certificate-endpoint token (the default resource) is refused by the
    // registration API: it names another audience.
    let certificate = token_basic(&server, "ci-bot", &secret, "grant_type=client_credentials");
    assert_eq!(certificate.status, 200, "{}", certificate.text());
    assert!(
        !certificate.json()["scope"]
            .as_str()
            .unwrap()
            .contains("slcs:clients")
    );
    let bearer = format!(
        "Bearer {}",
        certificate.json()["access_token"].as_str().unwrap()
    );
    let refused = server.send("GET", clients, &[("Authorization", &bearer)], None);
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["error"], "invalid_token");

    // The registration scope only with the registration resource, and that
    // resource only with its scope (RFC 8707 §2).
    let mixed = token_basic(
        &server,
        "ci-bot",
        &secret,
        "grant_type=client_credentials&scope=slcs:clients",
    );
    assert_eq!(mixed.status, 400);
    assert_eq!(mixed.json()["error"], "invalid_scope");
    let issuer = server.get("/.well-known/oauth-authorization-server").json()["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    let resource = crate::form_encode(&format!("{issuer}{clients}"));
    let wrong_scope = token_basic(
        &server,
        "ci-bot",
        &secret,
        &format!("grant_type=client_credentials&scope=slcs:certificate&resource={resource}"),
    );
    assert_eq!(wrong_scope.status, 400);
    assert_eq!(wrong_scope.json()["error"], "invalid_scope");
    let unknown = token_basic(
        &server,
        "ci-bot",
        &secret,
        "grant_type=client_credentials&resource=https%3A%2F%2Fevil.example%2F",
    );
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"], "invalid_target");

    // A registration token stops working when revoked or when its client is
    // suspended.
    let api = api_token(&server, "ci-bot", &secret);
    assert_eq!(
        server
            .send("GET", clients, &[("Authorization", &api)], None)
            .status,
        200
    );
    let suspend = server.send(
        "PUT",
        &format!("{clients}/ci-bot/status"),
        &[("Authorization", &admin(&server))],
        Some((
            "application/json",
            r#"{"status":"suspended","reason":"test"}"#,
        )),
    );
    assert_eq!(suspend.status, 200, "{}", suspend.text());
    let refused = server.send("GET", clients, &[("Authorization", &api)], None);
    assert_eq!(refused.status, 401, "{}", refused.text());
}
