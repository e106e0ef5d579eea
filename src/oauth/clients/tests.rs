//! Unit tests for the client model and registration rules: one test per
//! rule, named for it, plus the seed's JSON payloads as fixtures.

use std::collections::BTreeSet;

use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::oauth::secrets::{PEPPER_BYTES, SecretPepper, verify_secret};

const NOW: OffsetDateTime = datetime!(2026-05-01 12:00 UTC);
const LATER: OffsetDateTime = datetime!(2026-05-02 12:00 UTC);

fn pepper() -> SecretPepper {
    SecretPepper::from_bytes(&[42u8; PEPPER_BYTES]).unwrap()
}

fn allowed() -> BTreeSet<String> {
    [
        "openid",
        "email",
        "profile",
        "team",
        "group",
        "slcs:certificate",
        "opendap:read",
        "slcs:admin",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn ctx<'a>(allowed: &'a BTreeSet<String>) -> RegistrationContext<'a> {
    RegistrationContext {
        caller: "messines".into(),
        caller_is_admin: false,
        development: false,
        now: NOW,
        existing: None,
        allowed_scopes: allowed,
        client_id_names_a_user: false,
    }
}

fn parse(v: serde_json::Value) -> ClientRepresentation {
    serde_json::from_value(v).unwrap()
}

fn validate(v: serde_json::Value) -> Result<ValidatedRegistration, RegistrationError> {
    let a = allowed();
    validate_registration(&parse(v), &ctx(&a))
}

fn validate_dev(v: serde_json::Value) -> Result<ValidatedRegistration, RegistrationError> {
    let a = allowed();
    let mut c = ctx(&a);
    c.development = true;
    validate_registration(&parse(v), &c)
}

/// Seed 003, the POST example, verbatim.
fn seed_post_example() -> serde_json::Value {
    json!({
    "client": {
       "clientId": "tutorialOidcApi",
       "name": "Tutorial OIDC API",
       "description": "A sample client demo for the OIDC API documentation",
       "rootUrl": "https://example.org",
       "baseUrl": "https://example.org",
       "redirectUris": [
           "https://example.org/login/*"
        ],
       "bearerOnly": false,
       "consentRequired": true,
       "standardFlowEnabled": true,
       "implicitFlowEnabled": false,
       "directAccessGrantsEnabled": false,
       "attributes": {
           "contacts": "first.contact@example.com; second.contact@example.com"
        },
       "defaultClientScopes": ["openid", "email"],
       "optionalClientScopes": ["profile","team","group"]
    },
    "maintainers": ["messines","bougault"],
    "featureAuthenticate" : false,
    "accessDeniedToGuests" : false
    })
}

/// Seed 003, the GET response, verbatim.
fn seed_get_response() -> serde_json::Value {
    json!({
       "client": {
           "id": "tutorialOidcApi",
           "clientId": "tutorialOidcApi",
           "name": "Tutorial OIDC API",
           "description": "A sample client demo for the OIDC API documentation",
           "rootUrl": "https://example.org",
           "adminUrl": null,
           "baseUrl": "https://example.org",
           "surrogateAuthRequired": false,
           "enabled": true,
           "alwaysDisplayInConsole": false,
           "clientAuthenticatorType": "client-secret",
           "secret": "IooQSAmrbPUqYgHdkklBMPsIBKlupUi",
           "registrationAccessToken": null,
           "redirectUris": [
               "https://example.org/login/*"
            ],
           "webOrigins": [
               "https://example.org"
            ],
           "bearerOnly": false,
           "consentRequired": true,
           "standardFlowEnabled": true,
           "implicitFlowEnabled": false,
           "directAccessGrantsEnabled": false,
           "serviceAccountsEnabled": false,
           "publicClient": false,
           "frontchannelLogout": false,
           "protocol": "openid-connect",
           "attributes": {
               "contacts": "first.contact@example.com; second.contact@example.com"
            },
           "authenticationFlowBindingOverrides": {},
           "fullScopeAllowed": false,
           "nodeReRegistrationTimeout": -1,
           "registeredNodes": null,
           "defaultClientScopes": [
               "openid",
               "email"
            ],
           "optionalClientScopes": [
               "profile",
               "team",
               "group"
            ],
           "access": null,
           "origin": null
        },
       "owner": "messines",
       "maintainers": [
           "messines",
           "bougault"
        ],
       "accessDeniedToGuests": false,
       "featureAuthenticate": false,
       "grantedAccess": {
           "users": [],
           "units": [],
           "groups": []
        },
       "featureAuthenticateIntValue": 0,
       "guestPropertyIntValue": 0
    })
}

/// Seed 003 "server-to-server (Client Credentials Flow)" bullets as JSON,
/// for the openEO/EGI service account of seed 000.
fn seed_server_to_server() -> serde_json::Value {
    json!({
        "client": {
            "clientId": "openeo-batch",
            "name": "openEO batch jobs",
            "standardFlowEnabled": false,
            "consentRequired": false,
            "redirectUris": [],
            "serviceAccountsEnabled": true,
            "defaultClientScopes": ["slcs:certificate"]
        }
    })
}

/// A registered service account `id` (for the store's tests).
pub(crate) fn service_account(id: &str) -> Client {
    let mut registration = seed_server_to_server();
    registration["client"]["clientId"] = json!(id);
    create(registration).client
}

/// Seed 003 "SPA" bullets as JSON.
fn seed_spa() -> serde_json::Value {
    json!({
        "client": {
            "clientId": "climate-spa",
            "name": "Climate SPA",
            "publicClient": true,
            "standardFlowEnabled": true,
            "consentRequired": true,
            "redirectUris": ["https://spa.example.org/callback"],
            "webOrigins": ["+"],
            "defaultClientScopes": ["openid"]
        }
    })
}

/// Seed 003 "server-side app" bullets as JSON.
fn web() -> serde_json::Value {
    json!({
        "client": {
            "clientId": "portal",
            "name": "Climate Portal",
            "standardFlowEnabled": true,
            "consentRequired": true,
            "redirectUris": ["https://portal.example.org/cb"],
            "defaultClientScopes": ["openid", "slcs:certificate"],
            "optionalClientScopes": ["opendap:read"]
        },
        "maintainers": ["bougault"]
    })
}

fn with_redirects(mut v: serde_json::Value, uris: &[&str]) -> serde_json::Value {
    v["client"]["redirectUris"] = json!(uris);
    v
}

fn redirect_problem(uri: &str) -> UriProblem {
    match validate(with_redirects(web(), &[uri])) {
        Err(RegistrationError::RedirectUri { problem, .. }) => problem,
        other => panic!("{uri}: expected a redirect URI problem, got {other:?}"),
    }
}

fn create(v: serde_json::Value) -> ClientChange {
    let a = allowed();
    let c = ctx(&a);
    let validated = validate_registration(&parse(v), &c).unwrap();
    create_client(validated, &c, &pepper()).unwrap()
}

fn update(
    existing: &Client,
    v: serde_json::Value,
    caller: &str,
    rotate: bool,
) -> Result<ClientChange, RegistrationError> {
    let a = allowed();
    let mut c = ctx(&a);
    c.caller = caller.into();
    c.now = LATER;
    c.existing = Some(existing);
    let validated = validate_registration(&parse(v), &c)?;
    Ok(apply_update(existing, validated, &c, &pepper(), rotate).unwrap())
}

// --- the seed's payloads -------------------------------------------------

#[test]
fn seed_post_example_parses_and_its_wildcard_is_refused() {
    let err = validate(seed_post_example()).unwrap_err();
    assert!(matches!(
        err,
        RegistrationError::RedirectUri {
            index: 0,
            problem: UriProblem::Wildcard,
            ..
        }
    ));
    assert_eq!(err.oauth_error_code(), "invalid_redirect_uri");
}

#[test]
fn seed_post_example_with_an_exact_redirect_uri_is_a_web_client() {
    let v = with_redirects(seed_post_example(), &["https://example.org/login/callback"]);
    let change = create(v);
    let c = &change.client;
    assert_eq!(c.kind, ClientKind::Web);
    assert_eq!(
        c.token_endpoint_auth_method,
        TokenEndpointAuthMethod::ClientSecretBasic
    );
    assert!(change.new_secret.is_some());
    assert_eq!(
        c.grant_types,
        [GrantType::AuthorizationCode, GrantType::RefreshToken].into()
    );
    assert!(c.pkce_required);
    assert!(!c.access_denied_to_guests);
    assert!(!c.feature_authenticate.enabled);
    assert_eq!(
        c.default_scopes,
        ["openid".to_string(), "email".into()].into()
    );
    assert_eq!(c.scopes.len(), 5);
    assert_eq!(
        c.maintainers,
        ["messines".to_string(), "bougault".into()].into()
    );
    assert_eq!(
        c.attributes.get("contacts").map(String::as_str),
        Some("first.contact@example.com; second.contact@example.com")
    );
    assert_eq!(c.root_url.as_deref(), Some("https://example.org"));
}

#[test]
fn seed_get_response_parses_and_its_secret_is_refused() {
    let rep = parse(seed_get_response());
    let a = allowed();
    assert_eq!(
        validate_registration(&rep, &ctx(&a)).unwrap_err(),
        RegistrationError::SecretChosenByCaller
    );
}

#[test]
fn seed_get_response_without_secret_and_wildcard_validates_ignoring_server_fields() {
    let mut v = seed_get_response();
    v["client"].as_object_mut().unwrap().remove("secret");
    v["client"]["redirectUris"] = json!(["https://example.org/login/callback"]);
    v["owner"] = json!("victim");
    v["grantedAccess"] = json!({"users": ["mallory"], "units": ["all"], "groups": ["everyone"]});
    let change = create(v);
    assert_eq!(change.client.kind, ClientKind::Web);
    assert_eq!(change.client.owner, "messines");
    assert_eq!(
        change.client.web_origins,
        vec!["https://example.org".to_string()]
    );
    assert!(change.client.feature_authenticate.groups.is_empty());
}

#[test]
fn seed_server_to_server_is_a_service_client_with_client_credentials() {
    let change = create(seed_server_to_server());
    let c = &change.client;
    assert_eq!(c.kind, ClientKind::Service);
    assert_eq!(c.grant_types, [GrantType::ClientCredentials].into());
    assert!(!c.pkce_required);
    assert!(c.redirect_uris.is_empty());
    // Seed 000: "Client Secret over HTTP Basic".
    assert_eq!(
        c.token_endpoint_auth_method,
        TokenEndpointAuthMethod::ClientSecretBasic
    );
    let secret = change.new_secret.as_ref().unwrap();
    assert!(verify_secret(
        &pepper(),
        secret.expose(),
        c.secret.as_ref().unwrap()
    ));
    assert_eq!(c.id.service_subject(), "service:openeo-batch");
}

#[test]
fn seed_spa_is_a_public_spa_with_pkce_enforced() {
    let change = create(seed_spa());
    let c = &change.client;
    assert_eq!(c.kind, ClientKind::Spa);
    assert!(c.is_public());
    assert!(c.pkce_required);
    assert!(c.secret.is_none());
    assert!(change.new_secret.is_none());
    assert_eq!(c.web_origins, vec!["https://spa.example.org".to_string()]);
}

#[test]
fn device_flow_client_is_native() {
    let v = json!({"client": {
        "clientId": "slcs-cli", "publicClient": true, "consentRequired": true
    }, "slcs": {"deviceFlowEnabled": true}});
    let c = create(v).client;
    assert_eq!(c.kind, ClientKind::Native);
    assert_eq!(
        c.grant_types,
        [GrantType::RefreshToken, GrantType::DeviceCode].into()
    );
    assert!(c.is_public());
    assert!(!c.pkce_required);
}

#[test]
fn device_flow_requires_consent() {
    let v = json!({"client": {"clientId": "cli", "publicClient": true},
        "slcs": {"deviceFlowEnabled": true}});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::DeviceFlowWithoutConsent
    );
}

// --- flow rules (seed 003) ----------------------------------------------

#[test]
fn service_client_requires_service_accounts_enabled() {
    let mut v = seed_server_to_server();
    v["client"]["serviceAccountsEnabled"] = json!(false);
    assert_eq!(validate(v).unwrap_err(), RegistrationError::NoFlowEnabled);
}

#[test]
fn service_client_requires_standard_flow_disabled() {
    let mut v = seed_server_to_server();
    v["client"]["standardFlowEnabled"] = json!(true);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ServiceAccountWithStandardFlow
    );
}

#[test]
fn service_client_requires_consent_not_required() {
    let mut v = seed_server_to_server();
    v["client"]["consentRequired"] = json!(true);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ServiceAccountWithConsent
    );
}

#[test]
fn service_client_requires_no_redirect_uris() {
    let v = with_redirects(seed_server_to_server(), &["https://svc.example.org/cb"]);
    let err = validate(v).unwrap_err();
    assert_eq!(err, RegistrationError::ServiceAccountWithRedirectUris);
    assert_eq!(err.oauth_error_code(), "invalid_redirect_uri");
}

#[test]
fn service_client_cannot_be_public() {
    let mut v = seed_server_to_server();
    v["client"]["publicClient"] = json!(true);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ServiceAccountPublic
    );
}

#[test]
fn service_client_cannot_use_the_device_flow() {
    let mut v = seed_server_to_server();
    v["slcs"] = json!({"deviceFlowEnabled": true});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ServiceAccountWithDeviceFlow
    );
}

#[test]
fn reg_06_standard_flow_without_consent_refused() {
    let mut v = web();
    v["client"]["consentRequired"] = json!(false);
    let err = validate(v).unwrap_err();
    assert_eq!(err, RegistrationError::StandardFlowWithoutConsent);
    assert_eq!(err.oauth_error_code(), "invalid_client_metadata");
    let mut v = web();
    v["client"]
        .as_object_mut()
        .unwrap()
        .remove("consentRequired");
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::StandardFlowWithoutConsent
    );
}

#[test]
fn standard_flow_requires_redirect_uris() {
    let v = with_redirects(web(), &[]);
    let err = validate(v).unwrap_err();
    assert_eq!(err, RegistrationError::StandardFlowWithoutRedirectUris);
    assert_eq!(err.oauth_error_code(), "invalid_redirect_uri");
}

#[test]
fn redirect_uris_without_standard_flow_refused() {
    let v = json!({"client": {"clientId": "cli", "publicClient": true, "consentRequired": true,
        "redirectUris": ["https://x.example.org/cb"]}, "slcs": {"deviceFlowEnabled": true}});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::RedirectUrisWithoutStandardFlow
    );
}

#[test]
fn reg_06_implicit_and_password_grants_refused() {
    let mut v = web();
    v["client"]["implicitFlowEnabled"] = json!(true);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ImplicitFlowRefused
    );
    let mut v = web();
    v["client"]["directAccessGrantsEnabled"] = json!(true);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::PasswordGrantRefused
    );
    assert_eq!(GrantType::from_wire("password"), None);
    assert_eq!(GrantType::from_wire("implicit"), None);
    assert_eq!(
        GrantType::from_wire("client_credentials"),
        Some(GrantType::ClientCredentials)
    );
}

#[test]
fn reg_06_slcs_admin_scope_refused_even_when_configured() {
    let mut v = web();
    v["client"]["optionalClientScopes"] = json!(["slcs:admin"]);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ScopeForbidden("slcs:admin".into())
    );
}

#[test]
fn scope_outside_the_allowed_set_refused() {
    let mut v = web();
    v["client"]["defaultClientScopes"] = json!(["openid", "everything"]);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ScopeNotAllowed("everything".into())
    );
}

#[test]
fn scope_syntax_refused() {
    for bad in ["", "a b", "a\"b", "a\\b", "é"] {
        let mut v = web();
        v["client"]["defaultClientScopes"] = json!([bad]);
        assert!(
            matches!(validate(v).unwrap_err(), RegistrationError::ScopeSyntax(_)),
            "{bad:?}"
        );
    }
}

#[test]
fn too_many_scopes_refused() {
    let mut v = web();
    v["client"]["optionalClientScopes"] = json!(vec!["openid"; 65]);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TooManyScopes(67)
    );
}

#[test]
fn bearer_only_and_other_protocols_refused() {
    let mut v = web();
    v["client"]["bearerOnly"] = json!(true);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::BearerOnlyUnsupported
    );
    let mut v = web();
    v["client"]["protocol"] = json!("saml");
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ProtocolUnsupported("saml".into())
    );
}

#[test]
fn token_exchange_needs_a_confidential_client() {
    let mut v = seed_spa();
    v["slcs"] = json!({"tokenExchangeEnabled": true});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TokenExchangeForPublicClient
    );
    let mut v = web();
    v["slcs"] = json!({"tokenExchangeEnabled": true});
    assert!(
        validate(v)
            .unwrap()
            .grant_types()
            .contains(&GrantType::TokenExchange)
    );
}

// --- redirect URIs (ATTACKS AZ-04, AZ-01) ----------------------------------

#[test]
fn az_04_redirect_uri_javascript_refused() {
    for uri in [
        "javascript:alert(1)//",
        "JaVaScRiPt:alert(1)//",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
    ] {
        assert_eq!(
            redirect_problem(uri),
            UriProblem::DangerousScheme("javascript"),
            "{uri:?}"
        );
    }
}

#[test]
fn az_04_redirect_uri_data_and_vbscript_refused() {
    assert_eq!(
        redirect_problem("data:text/html,<script>alert(1)</script>"),
        UriProblem::DangerousScheme("data")
    );
    assert_eq!(
        redirect_problem("DATA:text/html,x"),
        UriProblem::DangerousScheme("data")
    );
    assert_eq!(
        redirect_problem("VBScript:msgbox(1)"),
        UriProblem::DangerousScheme("vbscript")
    );
}

#[test]
fn az_04_wildcard_refused_with_explanation() {
    for uri in [
        "https://*.portal.test/*",
        "https://app.example.com*",
        "https://portal.example.org/cb/*",
    ] {
        assert_eq!(redirect_problem(uri), UriProblem::Wildcard);
    }
    let msg = validate(with_redirects(web(), &["https://*.portal.test/*"]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("client.redirectUris[0]"), "{msg}");
    assert!(msg.contains("exact string match"), "{msg}");
    assert!(msg.contains("RFC 9700"), "{msg}");
}

#[test]
fn az_04_http_redirect_refused() {
    assert_eq!(
        redirect_problem("http://portal.test/cb"),
        UriProblem::HttpNotAllowed
    );
    let dev = validate_dev(with_redirects(web(), &["http://portal.test/cb"])).unwrap_err();
    assert!(matches!(
        dev,
        RegistrationError::RedirectUri {
            problem: UriProblem::HttpNotAllowed,
            ..
        }
    ));
}

#[test]
fn az_04_localhost_refused_in_production() {
    for uri in [
        "http://localhost:8080/cb",
        "https://localhost/cb",
        "http://127.0.0.1/cb",
        "http://127.1.2.3:9000/cb",
        "http://[::1]:8080/cb",
        "https://app.localhost/cb",
    ] {
        assert_eq!(redirect_problem(uri), UriProblem::Loopback, "{uri}");
    }
}

#[test]
fn az_04_localhost_allowed_in_development() {
    let v = with_redirects(
        web(),
        &[
            "http://localhost:8080/cb",
            "http://127.0.0.1/cb",
            "http://[::1]:8080/cb",
        ],
    );
    let validated = validate_dev(v).unwrap();
    assert_eq!(validated.kind(), ClientKind::Web);
}

#[test]
fn az_04_fragment_refused() {
    assert_eq!(
        redirect_problem("https://portal.test/cb#x"),
        UriProblem::Fragment
    );
    assert_eq!(
        redirect_problem("https://portal.test/cb#"),
        UriProblem::Fragment
    );
}

#[test]
fn az_04_code_and_state_query_parameters_refused() {
    assert_eq!(
        redirect_problem("https://portal.test/cb?code=1"),
        UriProblem::ReservedQueryParameter("code")
    );
    assert_eq!(
        redirect_problem("https://portal.test/cb?a=1&state"),
        UriProblem::ReservedQueryParameter("state")
    );
    assert_eq!(
        redirect_problem("https://portal.test/cb?%63ode=1"),
        UriProblem::ReservedQueryParameter("code")
    );
    assert_eq!(
        redirect_problem("https://portal.test/cb?iss=x"),
        UriProblem::ReservedQueryParameter("iss")
    );
    // Other query parameters are fine (and matched exactly).
    assert!(validate(with_redirects(web(), &["https://portal.test/cb?tenant=a"])).is_ok());
}

#[test]
fn az_04_relative_redirect_uri_refused() {
    assert_eq!(redirect_problem("/cb"), UriProblem::NotAbsolute);
    assert_eq!(redirect_problem("portal.test/cb"), UriProblem::NotAbsolute);
    assert_eq!(
        redirect_problem("//portal.test/cb"),
        UriProblem::NotAbsolute
    );
    assert_eq!(redirect_problem(""), UriProblem::NotAbsolute);
}

#[test]
fn az_04_scheme_without_authority_refused() {
    assert_eq!(
        redirect_problem("https:evil.test"),
        UriProblem::MissingAuthority
    );
    assert_eq!(
        redirect_problem("https:/evil.test/cb"),
        UriProblem::MissingAuthority
    );
}

#[test]
fn az_04_other_schemes_refused() {
    assert_eq!(
        redirect_problem("com.example.app:/cb"),
        UriProblem::SchemeNotAllowed("com.example.app".into())
    );
    assert_eq!(
        redirect_problem("ftp://x.example/cb"),
        UriProblem::SchemeNotAllowed("ftp".into())
    );
    assert_eq!(
        redirect_problem("HTTPS://portal.test/cb"),
        UriProblem::SchemeNotLowerCase
    );
}

#[test]
fn az_04_userinfo_refused() {
    for uri in [
        "https://portal.test@evil.test/cb",
        "https://a@b@evil.test/cb",
        "https://portal.test%2F@evil.test/cb",
        "https://user:pass@portal.test/cb",
    ] {
        assert_eq!(redirect_problem(uri), UriProblem::UserInfo, "{uri}");
    }
}

#[test]
fn az_04_host_must_be_lower_case_ascii() {
    assert_eq!(
        redirect_problem("https://PORTAL.test/cb"),
        UriProblem::HostNotLowerCase
    );
    assert_eq!(
        redirect_problem("https://pörtal.test/cb"),
        UriProblem::IdnHost
    );
    assert_eq!(
        redirect_problem("https://xn--prtal-jua.test/cb"),
        UriProblem::IdnHost
    );
    // Cyrillic "а" in an otherwise Latin host.
    assert_eq!(
        redirect_problem("https://p\u{0430}ypal.com/cb"),
        UriProblem::IdnHost
    );
    let msg = validate(with_redirects(web(), &["https://pörtal.test/cb"]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("IDN"), "{msg}");
}

#[test]
fn az_04_malformed_hosts_refused() {
    for uri in [
        "https:///cb",
        "https://portal.test%2F.evil/cb",
        "https://portal_test/cb",
        "https://portal..test/cb",
        "https://portal.test./cb",
        "https://-portal.test/cb",
        "https://1.2.3/cb",
        "https://0.0.0.0/cb",
        "https://[::]/cb",
        "https://[fe80::1%25eth0]/cb",
        "https://[::1/cb",
    ] {
        let p = redirect_problem(uri);
        assert!(
            matches!(p, UriProblem::InvalidHost(_) | UriProblem::EmptyHost),
            "{uri}: {p:?}"
        );
    }
    assert!(validate(with_redirects(web(), &["https://192.0.2.7:8443/cb"])).is_ok());
    assert!(validate(with_redirects(web(), &["https://[2001:db8::1]/cb"])).is_ok());
    assert_eq!(
        redirect_problem("https://[2001:DB8::1]/cb"),
        UriProblem::HostNotLowerCase
    );
}

#[test]
fn az_04_invalid_port_refused() {
    for uri in [
        "https://portal.test:/cb",
        "https://portal.test:0/cb",
        "https://portal.test:65536/cb",
        "https://portal.test:0443/cb",
        "https://portal.test:44a/cb",
        "https://portal.test:1:2/cb",
    ] {
        assert_eq!(redirect_problem(uri), UriProblem::InvalidPort, "{uri}");
    }
}

#[test]
fn az_04_dot_segments_refused() {
    for uri in [
        "https://portal.test/cb/../evil",
        "https://portal.test/cb/..;/evil",
        "https://portal.test/cb/%2e%2E/evil",
        "https://portal.test/./cb",
        "https://portal.test/cb/..",
    ] {
        assert_eq!(redirect_problem(uri), UriProblem::DotSegment, "{uri}");
    }
    assert!(validate(with_redirects(web(), &["https://portal.test/a..b/c.d"])).is_ok());
}

#[test]
fn az_04_backslash_whitespace_and_bad_characters_refused() {
    assert_eq!(
        redirect_problem("https://portal.test\\@evil.test/cb"),
        UriProblem::Backslash
    );
    assert_eq!(
        redirect_problem("https://portal.test/c b"),
        UriProblem::ControlOrWhitespace
    );
    assert_eq!(
        redirect_problem("https://portal.test/cb\n"),
        UriProblem::ControlOrWhitespace
    );
    assert_eq!(
        redirect_problem("https://portal.test/c<b"),
        UriProblem::InvalidCharacter('<')
    );
    assert_eq!(
        redirect_problem("https://portal.test/c%zz"),
        UriProblem::InvalidPercentEncoding
    );
    assert_eq!(
        redirect_problem("https://portal.test/cé"),
        UriProblem::NotAscii
    );
}

#[test]
fn az_04_too_many_redirect_uris_refused() {
    let uris: Vec<String> = (0..10_000)
        .map(|i| format!("https://portal.test/cb{i}"))
        .collect();
    let mut v = web();
    v["client"]["redirectUris"] = json!(uris);
    let err = validate(v).unwrap_err();
    assert_eq!(err, RegistrationError::TooManyRedirectUris(10_000));
    assert_eq!(err.oauth_error_code(), "invalid_redirect_uri");
    let sixteen: Vec<String> = (0..16)
        .map(|i| format!("https://portal.test/cb{i}"))
        .collect();
    let mut v = web();
    v["client"]["redirectUris"] = json!(sixteen);
    assert!(validate(v).is_ok());
}

#[test]
fn az_04_overlong_redirect_uri_refused() {
    let long = format!("https://portal.test/{}", "a".repeat(100 * 1024));
    assert_eq!(redirect_problem(&long), UriProblem::TooLong(long.len()));
    let msg = validate(with_redirects(web(), &[&long]))
        .unwrap_err()
        .to_string();
    assert!(msg.len() < 1000, "the message must not echo 100 KB");
}

#[test]
fn az_04_duplicate_redirect_uri_refused() {
    let v = with_redirects(web(), &["https://portal.test/cb", "https://portal.test/cb"]);
    assert!(matches!(
        validate(v).unwrap_err(),
        RegistrationError::DuplicateRedirectUri(_)
    ));
}

#[test]
fn az_01_registered_redirect_uri_matches_exactly_only() {
    let registered = RegisteredRedirectUri::parse("https://portal.test/cb", false).unwrap();
    assert!(registered.matches("https://portal.test/cb"));
    for presented in [
        "https://portal.test/cb/",
        "https://portal.test/cb/../evil",
        "https://portal.test/cb/..;/evil",
        "https://portal.test/cb?x=1",
        "https://portal.test/cb#f",
        "https://PORTAL.test/cb",
        "http://portal.test/cb",
        "https://portal.test:8443/cb",
        "https://portal.test:443/cb",
        "https://portal.test.evil.test/cb",
        "https://portal.test@evil.test/cb",
        "https://portal.test/CB",
        "https://portal.test/%63b",
    ] {
        assert!(!registered.matches(presented), "{presented}");
    }
    assert_eq!(registered.host(), "portal.test");
}

#[test]
fn stored_redirect_uri_is_rechecked_on_load() {
    let bad: Result<RegisteredRedirectUri, _> = serde_json::from_str("\"javascript:alert(1)\"");
    assert!(bad.is_err());
    let ok: RegisteredRedirectUri = serde_json::from_str("\"http://localhost:8080/cb\"").unwrap();
    assert_eq!(ok.as_str(), "http://localhost:8080/cb");
}

// --- web origins and links ------------------------------------------------

#[test]
fn web_origins_are_origins_and_plus_expands_to_redirect_origins() {
    let mut v = with_redirects(web(), &["https://portal.test:8443/cb", "https://b.test/x"]);
    v["client"]["webOrigins"] = json!(["+", "https://other.test"]);
    let c = create(v).client;
    assert_eq!(
        c.web_origins,
        vec![
            "https://portal.test:8443",
            "https://b.test",
            "https://other.test"
        ]
    );
    for (origin, problem) in [
        ("*", UriProblem::Wildcard),
        ("https://*.test", UriProblem::Wildcard),
        ("https://other.test/", UriProblem::NotAnOrigin),
        ("https://other.test/app", UriProblem::NotAnOrigin),
        ("http://other.test", UriProblem::HttpNotAllowed),
    ] {
        let mut v = web();
        v["client"]["webOrigins"] = json!([origin]);
        match validate(v).unwrap_err() {
            RegistrationError::WebOrigin { problem: p, .. } => assert_eq!(p, problem, "{origin}"),
            other => panic!("{origin}: {other:?}"),
        }
    }
}

#[test]
fn root_and_base_urls_follow_the_uri_rules() {
    let mut v = web();
    v["client"]["rootUrl"] = json!("http://portal.test");
    assert!(matches!(
        validate(v).unwrap_err(),
        RegistrationError::LinkUrl {
            field: "rootUrl",
            problem: UriProblem::HttpNotAllowed,
            ..
        }
    ));
    let mut v = web();
    v["client"]["baseUrl"] = json!("/app");
    assert!(matches!(
        validate(v).unwrap_err(),
        RegistrationError::LinkUrl {
            field: "baseUrl",
            problem: UriProblem::NotAbsolute,
            ..
        }
    ));
    let mut v = web();
    v["client"]["baseUrl"] = json!("");
    assert_eq!(create(v).client.base_url, None);
}

// --- client ids (ATTACKS TX-15) -------------------------------------------

#[test]
fn tx_15_client_id_in_user_namespace_refused() {
    for (id, expected) in [
        ("service:alice", ClientIdError::NamespacePrefix("service:")),
        ("Service:alice", ClientIdError::NamespacePrefix("service:")),
        ("user:alice", ClientIdError::NamespacePrefix("user:")),
        ("client:portal", ClientIdError::NamespacePrefix("client:")),
        (
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            ClientIdError::LooksLikeUserSubject,
        ),
        (
            "0F8FAD5BD9CB469FA16570867728950E",
            ClientIdError::LooksLikeUserSubject,
        ),
        ("admin", ClientIdError::Reserved("admin".into())),
        ("Slcs", ClientIdError::Reserved("Slcs".into())),
    ] {
        let mut v = web();
        v["client"]["clientId"] = json!(id);
        assert_eq!(
            validate(v).unwrap_err(),
            RegistrationError::ClientId(expected),
            "{id}"
        );
    }
    // A client id that names a known user (the handler looked it up).
    let a = allowed();
    let mut c = ctx(&a);
    c.client_id_names_a_user = true;
    let mut v = web();
    v["client"]["clientId"] = json!("alice");
    assert_eq!(
        validate_registration(&parse(v), &c).unwrap_err(),
        RegistrationError::ClientIdNamesUser
    );
}

#[test]
fn client_id_syntax_rules() {
    assert_eq!(ClientId::parse(""), Err(ClientIdError::Empty));
    assert_eq!(
        ClientId::parse(&"a".repeat(65)),
        Err(ClientIdError::TooLong(65))
    );
    assert!(ClientId::parse(&"a".repeat(64)).is_ok());
    assert_eq!(
        ClientId::parse("a/b"),
        Err(ClientIdError::BadCharacter('/'))
    );
    assert_eq!(
        ClientId::parse("a b"),
        Err(ClientIdError::BadCharacter(' '))
    );
    assert_eq!(
        ClientId::parse("alice@example.org"),
        Err(ClientIdError::BadCharacter('@'))
    );
    assert_eq!(
        ClientId::parse("porta\u{0142}"),
        Err(ClientIdError::BadCharacter('\u{0142}'))
    );
    assert_eq!(ClientId::parse(".."), Err(ClientIdError::BadFirstCharacter));
    assert_eq!(ClientId::parse("-x"), Err(ClientIdError::BadFirstCharacter));
    assert!(ClientId::parse("tutorialOidcApi").is_ok());
    assert_eq!(ClientId::parse("Portal").unwrap().folded(), "portal");
    let err = validate(json!({"client": {"standardFlowEnabled": true}})).unwrap_err();
    assert_eq!(err, RegistrationError::ClientIdMissing);
}

#[test]
fn client_id_serde_revalidates() {
    assert!(serde_json::from_str::<ClientId>("\"service:x\"").is_err());
    assert_eq!(
        serde_json::from_str::<ClientId>("\"wps\"")
            .unwrap()
            .as_str(),
        "wps"
    );
}

// --- mass assignment and unknown fields (ATTACKS REG-02) -------------------

#[test]
fn reg_02_mass_assignment_fields_ignored() {
    let mut v = web();
    v["owner"] = json!("victim");
    v["grantedAccess"] = json!({"users": [], "units": ["all"], "groups": ["everyone"]});
    v["featureAuthenticateIntValue"] = json!(0);
    v["guestPropertyIntValue"] = json!(0);
    v["featureAuthenticate"] = json!(true);
    v["client"]["enabled"] = json!(true);
    v["client"]["id"] = json!("other");
    v["slcs"] = json!({"status": "active", "kind": "service", "createdBy": "admin",
        "grantTypes": ["client_credentials"], "pkceRequired": false});
    let c = create(v).client;
    assert_eq!(c.owner, "messines");
    assert_eq!(c.created_by, "messines");
    assert_eq!(c.status, ClientStatus::Pending);
    assert_eq!(c.kind, ClientKind::Web);
    assert!(c.pkce_required);
    assert!(!c.allows_grant(GrantType::ClientCredentials));
    assert!(c.feature_authenticate.enabled);
    assert!(c.feature_authenticate.groups.is_empty());
    assert!(c.feature_authenticate.units.is_empty());
    // Guests stay refused unless the field itself says otherwise.
    assert!(c.access_denied_to_guests);
}

#[test]
fn reg_02_caller_chosen_secret_refused() {
    let mut v = seed_server_to_server();
    v["client"]["secret"] = json!("chosen");
    let err = validate(v).unwrap_err();
    assert_eq!(err, RegistrationError::SecretChosenByCaller);
    assert!(err.to_string().contains("client.secret"));
    // A blank or null secret (a scrubbed export) is harmless.
    let mut v = seed_server_to_server();
    v["client"]["secret"] = json!("");
    assert!(validate(v).is_ok());
    let mut v = seed_server_to_server();
    v["client"]["secret"] = json!(null);
    assert!(validate(v).is_ok());
}

#[test]
fn reg_02_unknown_fields_refused() {
    let mut v = web();
    v["trusted"] = json!(true);
    assert!(serde_json::from_value::<ClientRepresentation>(v).is_err());
    let mut v = web();
    v["client"]["consentRequierd"] = json!(false);
    let err = serde_json::from_value::<ClientRepresentation>(v).unwrap_err();
    assert!(err.to_string().contains("consentRequierd"), "{err}");
    let mut v = web();
    v["client_secret"] = json!("chosen");
    assert!(serde_json::from_value::<ClientRepresentation>(v).is_err());
    let mut v = web();
    v["slcs"] = json!({"trusted": true});
    assert!(serde_json::from_value::<ClientRepresentation>(v).is_err());
    assert!(serde_json::from_value::<ClientRepresentation>(json!({})).is_err());
}

// --- names, descriptions, attributes --------------------------------------

#[test]
fn reg_05_name_rules_refuse_control_and_invisible_characters() {
    let mut v = web();
    v["client"]["name"] = json!("n".repeat(129));
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TextTooLong {
            field: "client.name",
            max: 128
        }
    );
    for bad in [
        "Port\u{0007}al",
        "EBRAINS\u{202E}latroP",
        "EBRAINS\u{200B}Portal",
    ] {
        let mut v = web();
        v["client"]["name"] = json!(bad);
        assert_eq!(
            validate(v).unwrap_err(),
            RegistrationError::TextControlCharacter {
                field: "client.name"
            }
        );
    }
    let mut v = web();
    v["client"].as_object_mut().unwrap().remove("name");
    assert_eq!(create(v).client.name, "portal");
}

#[test]
fn description_rules() {
    let mut v = web();
    v["client"]["description"] = json!("d".repeat(1025));
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TextTooLong {
            field: "client.description",
            max: 1024
        }
    );
    let mut v = web();
    v["client"]["description"] = json!("d".repeat(1024));
    assert!(validate(v).is_ok());
}

#[test]
fn attribute_rules() {
    let mut v = web();
    let many: serde_json::Map<String, serde_json::Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    v["client"]["attributes"] = serde_json::Value::Object(many);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TooManyAttributes(33)
    );
    let mut v = web();
    v["client"]["attributes"] = json!({"contacts": "a\u{0000}b"});
    assert!(matches!(
        validate(v).unwrap_err(),
        RegistrationError::AttributeInvalid { .. }
    ));
}

// --- delegatees and maintainers --------------------------------------------

#[test]
fn delegatees_must_be_valid_client_ids_and_not_self() {
    let mut v = web();
    v["slcs"] = json!({"delegatees": ["wps", "broker-a"]});
    let c = create(v).client;
    assert_eq!(c.delegatees.len(), 2);
    let mut v = web();
    v["slcs"] = json!({"delegatees": ["service:wps"]});
    assert!(matches!(
        validate(v).unwrap_err(),
        RegistrationError::DelegateeInvalid {
            source: ClientIdError::NamespacePrefix(_),
            ..
        }
    ));
    let mut v = web();
    v["slcs"] = json!({"delegatees": ["Portal"]});
    assert_eq!(validate(v).unwrap_err(), RegistrationError::DelegateeIsSelf);
    let mut v = web();
    let many: Vec<String> = (0..33).map(|i| format!("d{i}")).collect();
    v["slcs"] = json!({"delegatees": many});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TooManyDelegatees(33)
    );
}

#[test]
fn maintainer_rules() {
    let mut v = web();
    let many: Vec<String> = (0..33).map(|i| format!("user{i}")).collect();
    v["maintainers"] = json!(many);
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TooManyMaintainers(33)
    );
    for bad in ["", "two words", "tab\tbed"] {
        let mut v = web();
        v["maintainers"] = json!([bad]);
        assert!(matches!(
            validate(v).unwrap_err(),
            RegistrationError::MaintainerInvalid(_)
        ));
    }
}

// --- authentication methods ------------------------------------------------

#[test]
fn public_client_has_no_credentials() {
    for ext in [
        json!({"tokenEndpointAuthMethod": "client_secret_basic"}),
        json!({"jwks": {"keys": []}}),
        json!({"tlsClientAuthSubjectDn": "CN=x"}),
    ] {
        let mut v = seed_spa();
        v["slcs"] = ext;
        assert!(matches!(
            validate(v).unwrap_err(),
            RegistrationError::PublicClientCredentials(_)
        ));
    }
    // Keycloak exports "client-secret" for public clients too: ignored.
    let mut v = seed_spa();
    v["client"]["clientAuthenticatorType"] = json!("client-secret");
    assert!(validate(v).is_ok());
}

#[test]
fn confidential_client_must_authenticate() {
    let mut v = web();
    v["slcs"] = json!({"tokenEndpointAuthMethod": "none"});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::ConfidentialClientWithoutAuthentication
    );
}

fn ec_jwks() -> serde_json::Value {
    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
}

#[test]
fn private_key_jwt_needs_a_public_jwks() {
    let mut v = seed_server_to_server();
    v["slcs"] = json!({"tokenEndpointAuthMethod": "private_key_jwt"});
    assert_eq!(validate(v).unwrap_err(), RegistrationError::JwksRequired);

    let mut v = seed_server_to_server();
    v["slcs"] = json!({"tokenEndpointAuthMethod": "private_key_jwt", "jwks": ec_jwks()});
    let change = create(v);
    assert_eq!(
        change.client.token_endpoint_auth_method,
        TokenEndpointAuthMethod::PrivateKeyJwt
    );
    assert!(change.client.secret.is_none());
    assert!(change.new_secret.is_none());

    let mut private = ec_jwks();
    private["keys"][0]["d"] = json!("secret");
    let mut oct = ec_jwks();
    oct["keys"][0] = json!({"kty": "oct", "k": "AAAA"});
    let mut hs = ec_jwks();
    hs["keys"][0]["alg"] = json!("HS256");
    for bad in [json!({}), json!({"keys": []}), json!([1]), private, oct, hs] {
        let mut v = seed_server_to_server();
        v["slcs"] = json!({"tokenEndpointAuthMethod": "private_key_jwt", "jwks": bad});
        assert!(matches!(
            validate(v).unwrap_err(),
            RegistrationError::JwksInvalid(_)
        ));
    }

    let mut v = seed_server_to_server();
    v["slcs"] = json!({"jwks": ec_jwks()});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::JwksWithoutPrivateKeyJwt
    );
}

#[test]
fn tls_client_auth_needs_a_subject_dn() {
    let mut v = seed_server_to_server();
    v["slcs"] = json!({"tokenEndpointAuthMethod": "tls_client_auth"});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TlsSubjectDnRequired
    );
    let mut v = seed_server_to_server();
    v["slcs"] = json!({"tokenEndpointAuthMethod": "tls_client_auth",
        "tlsClientAuthSubjectDn": "CN=wps,O=Example,C=DE"});
    let c = create(v).client;
    assert_eq!(
        c.tls_client_auth_subject_dn.as_deref(),
        Some("CN=wps,O=Example,C=DE")
    );
    assert!(c.secret.is_none());
    let mut v = seed_server_to_server();
    v["slcs"] = json!({"tokenEndpointAuthMethod": "tls_client_auth",
        "tlsClientAuthSubjectDn": "no equals sign"});
    assert!(matches!(
        validate(v).unwrap_err(),
        RegistrationError::TlsSubjectDnInvalid(_)
    ));
    let mut v = seed_server_to_server();
    v["slcs"] = json!({"tlsClientAuthSubjectDn": "CN=wps"});
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::TlsSubjectDnWithoutTlsClientAuth
    );
}

#[test]
fn keycloak_authenticator_type_maps_and_must_agree() {
    let mut v = seed_server_to_server();
    v["client"]["clientAuthenticatorType"] = json!("client-x509");
    v["slcs"] = json!({"tlsClientAuthSubjectDn": "CN=svc"});
    assert_eq!(
        validate(v).unwrap().token_endpoint_auth_method(),
        TokenEndpointAuthMethod::TlsClientAuth
    );
    let mut v = seed_server_to_server();
    v["client"]["clientAuthenticatorType"] = json!("client-secret");
    v["slcs"] = json!({"tokenEndpointAuthMethod": "client_secret_post"});
    assert_eq!(
        validate(v).unwrap().token_endpoint_auth_method(),
        TokenEndpointAuthMethod::ClientSecretPost
    );
    let mut v = seed_server_to_server();
    v["client"]["clientAuthenticatorType"] = json!("client-secret");
    v["slcs"] = json!({"tokenEndpointAuthMethod": "private_key_jwt", "jwks": ec_jwks()});
    assert!(matches!(
        validate(v).unwrap_err(),
        RegistrationError::AuthenticatorTypeConflict { .. }
    ));
    let mut v = seed_server_to_server();
    v["client"]["clientAuthenticatorType"] = json!("client-secret-jwt");
    assert_eq!(
        validate(v).unwrap_err(),
        RegistrationError::AuthenticatorTypeUnsupported("client-secret-jwt".into())
    );
}

// --- status, ownership, access --------------------------------------------

#[test]
fn reg_07_new_client_is_pending_unless_an_admin_registers_it() {
    assert_eq!(create(web()).client.status, ClientStatus::Pending);
    let a = allowed();
    let mut c = ctx(&a);
    c.caller = "admin-alice".into();
    c.caller_is_admin = true;
    let validated = validate_registration(&parse(web()), &c).unwrap();
    let client = create_client(validated, &c, &pepper()).unwrap().client;
    assert_eq!(client.status, ClientStatus::Active);
    assert_eq!(client.owner, "admin-alice");
    assert_eq!(client.created_at, NOW);
    assert_eq!(client.updated_at, NOW);
}

#[test]
fn reg_01_owner_maintainer_or_admin_may_manage() {
    let c = create(web()).client;
    assert!(may_manage(&c, "messines", false));
    assert!(may_manage(&c, "bougault", false));
    assert!(may_manage(&c, "anyone", true));
    assert!(!may_manage(&c, "mallory", false));
    assert!(!may_manage(&c, "", false));
}

#[test]
fn reg_01_non_maintainer_update_refused() {
    let c = create(web()).client;
    let err = update(
        &c,
        with_redirects(web(), &["https://evil.test/cb"]),
        "mallory",
        false,
    )
    .unwrap_err();
    assert_eq!(err, RegistrationError::NotPermitted);
    assert!(err.is_permission_denied());
}

#[test]
fn maintainer_may_update_but_not_change_maintainers() {
    let c = create(web()).client;
    let mut v = web();
    v["client"]["name"] = json!("Renamed");
    let updated = update(&c, v, "bougault", false).unwrap().client;
    assert_eq!(updated.name, "Renamed");
    let mut v = web();
    v["maintainers"] = json!(["bougault", "accomplice"]);
    let err = update(&c, v.clone(), "bougault", false).unwrap_err();
    assert_eq!(err, RegistrationError::MaintainersChangedByNonOwner);
    assert!(err.is_permission_denied());
    let by_owner = update(&c, v, "messines", false).unwrap().client;
    assert!(by_owner.maintainers.contains("accomplice"));
}

#[test]
fn status_transitions() {
    let mut c = create(web()).client;
    assert_eq!(change_status(&mut c, ClientStatus::Active, LATER), Ok(true));
    assert_eq!(c.updated_at, LATER);
    assert_eq!(
        change_status(&mut c, ClientStatus::Active, LATER),
        Ok(false)
    );
    assert_eq!(
        change_status(&mut c, ClientStatus::Suspended, LATER),
        Ok(true)
    );
    assert_eq!(
        change_status(&mut c, ClientStatus::Pending, LATER),
        Err(StatusChangeError::NotAllowed {
            from: ClientStatus::Suspended,
            to: ClientStatus::Pending
        })
    );
    assert_eq!(change_status(&mut c, ClientStatus::Active, LATER), Ok(true));
    assert_eq!(
        change_status(&mut c, ClientStatus::Pending, LATER),
        Ok(true)
    );
}

// --- PUT semantics ----------------------------------------------------------

#[test]
fn put_keeps_id_owner_secret_status_and_creation() {
    let created = create(seed_server_to_server());
    let mut existing = created.client;
    existing.status = ClientStatus::Active;
    let secret = created.new_secret.unwrap();
    let mut v = seed_server_to_server();
    v["client"]["name"] = json!("renamed");
    v["client"].as_object_mut().unwrap().remove("clientId");
    let change = update(&existing, v, "messines", false).unwrap();
    let c = change.client;
    assert!(change.new_secret.is_none());
    assert_eq!(c.id, existing.id);
    assert_eq!(c.owner, existing.owner);
    assert_eq!(c.status, ClientStatus::Active);
    assert_eq!(c.created_at, NOW);
    assert_eq!(c.created_by, "messines");
    assert_eq!(c.updated_at, LATER);
    assert_eq!(c.name, "renamed");
    assert!(verify_secret(
        &pepper(),
        secret.expose(),
        c.secret.as_ref().unwrap()
    ));
}

#[test]
fn put_replaces_the_whole_representation() {
    let existing = create(web()).client;
    let v = json!({"client": {"clientId": "portal", "standardFlowEnabled": true,
        "consentRequired": true, "redirectUris": ["https://portal.example.org/cb"]},
        "maintainers": ["bougault"]});
    let c = update(&existing, v, "messines", false).unwrap().client;
    assert!(c.scopes.is_empty());
    assert_eq!(c.name, "portal");
    assert!(c.access_denied_to_guests);
}

#[test]
fn put_with_rotation_replaces_the_secret() {
    let created = create(seed_server_to_server());
    let old = created.new_secret.unwrap();
    let change = update(&created.client, seed_server_to_server(), "messines", true).unwrap();
    let new = change.new_secret.unwrap();
    let stored = change.client.secret.as_ref().unwrap();
    assert!(verify_secret(&pepper(), new.expose(), stored));
    assert!(!verify_secret(&pepper(), old.expose(), stored));
}

#[test]
fn reg_11_rotate_secret_invalidates_the_old_one() {
    let created = create(seed_server_to_server());
    let old = created.new_secret.unwrap();
    let mut c = created.client;
    let new = rotate_secret(&mut c, &pepper(), LATER).unwrap();
    let stored = c.secret.as_ref().unwrap();
    assert!(verify_secret(&pepper(), new.expose(), stored));
    assert!(!verify_secret(&pepper(), old.expose(), stored));
    assert_eq!(c.updated_at, LATER);
    let mut spa = create(seed_spa()).client;
    assert!(matches!(
        rotate_secret(&mut spa, &pepper(), LATER),
        Err(RotateSecretError::NoSecretMethod { .. })
    ));
}

#[test]
fn put_changing_method_drops_or_creates_the_secret() {
    let created = create(seed_server_to_server());
    let mut v = seed_server_to_server();
    v["slcs"] = json!({"tokenEndpointAuthMethod": "private_key_jwt", "jwks": ec_jwks()});
    let jwt = update(&created.client, v, "messines", false).unwrap();
    assert!(jwt.client.secret.is_none());
    assert!(jwt.new_secret.is_none());
    let back = update(&jwt.client, seed_server_to_server(), "messines", false).unwrap();
    assert!(back.client.secret.is_some());
    assert!(back.new_secret.is_some());
}

#[test]
fn put_cannot_change_the_kind_or_the_id() {
    let existing = create(web()).client;
    let mut v = seed_server_to_server();
    v["client"]["clientId"] = json!("portal");
    assert_eq!(
        update(&existing, v, "messines", false).unwrap_err(),
        RegistrationError::KindChanged {
            from: ClientKind::Web,
            to: ClientKind::Service
        }
    );
    let mut v = web();
    v["client"]["clientId"] = json!("other");
    assert!(matches!(
        update(&existing, v, "messines", false).unwrap_err(),
        RegistrationError::ClientIdChanged { .. }
    ));
}

#[test]
fn reg_10_feature_authenticate_off_clears_grants_and_on_starts_empty() {
    let mut v = web();
    v["featureAuthenticate"] = json!(true);
    let mut c = create(v.clone()).client;
    assert_eq!(grant_group(&mut c, "TVB-Workshops", NOW), Ok(true));
    assert_eq!(grant_unit(&mut c, "all:projects:hbp", NOW), Ok(true));

    // Staying on keeps the grants.
    let kept = update(&c, v.clone(), "messines", false).unwrap().client;
    assert!(kept.feature_authenticate.groups.contains("TVB-Workshops"));
    assert!(kept.feature_authenticate.units.contains("all:projects:hbp"));

    // Off clears them (seed 003 warning).
    let mut off = v.clone();
    off["featureAuthenticate"] = json!(false);
    let off = update(&kept, off, "messines", false).unwrap().client;
    assert!(!off.feature_authenticate.enabled);
    assert!(off.feature_authenticate.groups.is_empty());
    assert!(off.feature_authenticate.units.is_empty());

    // On again: nobody regains access silently.
    let on = update(&off, v, "messines", false).unwrap().client;
    assert!(on.feature_authenticate.enabled);
    assert!(on.feature_authenticate.groups.is_empty());
    assert!(on.feature_authenticate.units.is_empty());
}

#[test]
fn grants_need_feature_authenticate() {
    let mut c = create(web()).client;
    assert_eq!(
        grant_group(&mut c, "TVB-Workshops", NOW),
        Err(AccessGrantError::FeatureAuthenticateDisabled)
    );
    assert_eq!(
        grant_unit(&mut c, "all:projects:hbp", NOW),
        Err(AccessGrantError::FeatureAuthenticateDisabled)
    );
    assert_eq!(revoke_group(&mut c, "TVB-Workshops", NOW), Ok(false));
}

#[test]
fn group_and_unit_grants_are_validated() {
    let mut v = web();
    v["featureAuthenticate"] = json!(true);
    let mut c = create(v).client;
    assert_eq!(grant_group(&mut c, "TVB-Workshops", NOW), Ok(true));
    assert_eq!(grant_group(&mut c, "TVB-Workshops", NOW), Ok(false));
    assert_eq!(revoke_group(&mut c, "TVB-Workshops", NOW), Ok(true));
    assert_eq!(revoke_group(&mut c, "TVB-Workshops", NOW), Ok(false));
    for bad in ["", "..", "a/b", "a b", "-x", &"g".repeat(129)] {
        assert!(
            matches!(
                grant_group(&mut c, bad, NOW),
                Err(AccessGrantError::InvalidGroupName(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(grant_unit(&mut c, "all:projects:hbp", NOW), Ok(true));
    assert_eq!(revoke_unit(&mut c, "all:projects:hbp", NOW), Ok(true));
    let seventeen = vec!["a"; 17].join(":");
    for bad in [
        "",
        "all::hbp",
        ":all",
        "all:",
        "all:..:hbp",
        "all:.:hbp",
        "..",
        "all/projects",
        "all:proj ects",
        &seventeen,
        &"u".repeat(513),
    ] {
        assert!(
            matches!(
                grant_unit(&mut c, bad, NOW),
                Err(AccessGrantError::InvalidUnitPath(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn too_many_group_grants_refused() {
    let mut v = web();
    v["featureAuthenticate"] = json!(true);
    let mut c = create(v).client;
    for i in 0..MAX_ACCESS_GRANTS {
        assert_eq!(grant_group(&mut c, &format!("g{i}"), NOW), Ok(true));
    }
    assert_eq!(
        grant_group(&mut c, "one-more", NOW),
        Err(AccessGrantError::TooManyGrants)
    );
}

#[test]
fn needs_review_flags_widening_only() {
    let before = create(web()).client;
    let wider = update(
        &before,
        with_redirects(
            web(),
            &[
                "https://portal.example.org/cb",
                "https://portal.example.org/cb2",
            ],
        ),
        "messines",
        false,
    )
    .unwrap()
    .client;
    assert!(needs_review(&before, &wider));
    let mut narrower = web();
    narrower["client"]["optionalClientScopes"] = json!([]);
    let narrower = update(&before, narrower, "messines", false).unwrap().client;
    assert!(!needs_review(&before, &narrower));
    let mut guests = web();
    guests["accessDeniedToGuests"] = json!(false);
    let guests = update(&before, guests, "messines", false).unwrap().client;
    assert!(needs_review(&before, &guests));
}

// --- output -----------------------------------------------------------------

#[test]
fn reg_11_representation_never_contains_the_secret() {
    let created = create(seed_server_to_server());
    let stored_hex: String = created.client.secret.clone().unwrap().into();
    let rep = to_representation(&created.client);
    let json = serde_json::to_string(&rep).unwrap();
    assert!(!json.contains("\"secret\""), "{json}");
    assert!(!json.contains(&stored_hex));
    assert!(!json.contains(created.new_secret.unwrap().expose()));
}

#[test]
fn representation_has_the_seed_shape() {
    let mut v = web();
    v["featureAuthenticate"] = json!(true);
    let mut c = create(v).client;
    grant_unit(&mut c, "all:projects:hbp", NOW).unwrap();
    let out = serde_json::to_value(to_representation(&c)).unwrap();
    assert_eq!(out["client"]["clientId"], "portal");
    assert_eq!(out["client"]["id"], "portal");
    assert_eq!(out["client"]["publicClient"], false);
    assert_eq!(out["client"]["consentRequired"], true);
    assert_eq!(out["client"]["clientAuthenticatorType"], "client-secret");
    assert_eq!(out["client"]["enabled"], false);
    assert_eq!(out["owner"], "messines");
    assert_eq!(
        out["grantedAccess"],
        json!({"users": [], "units": ["all:projects:hbp"], "groups": []})
    );
    assert_eq!(out["featureAuthenticateIntValue"], 1);
    assert_eq!(out["guestPropertyIntValue"], 1);
    assert_eq!(out["accessDeniedToGuests"], true);
    assert_eq!(out["slcs"]["kind"], "web");
    assert_eq!(out["slcs"]["status"], "pending");
    assert_eq!(
        out["slcs"]["tokenEndpointAuthMethod"],
        "client_secret_basic"
    );
    assert_eq!(out["slcs"]["createdAt"], "2026-05-01T12:00:00Z");
}

#[test]
fn get_then_put_round_trip_is_stable() {
    for fixture in [
        web(),
        seed_spa(),
        seed_server_to_server(),
        json!({"client": {"clientId": "cli", "publicClient": true, "consentRequired": true},
            "slcs": {"deviceFlowEnabled": true}}),
        json!({"client": {"clientId": "wps", "serviceAccountsEnabled": true},
            "slcs": {"tokenExchangeEnabled": true, "delegatees": ["broker-a"],
                     "tokenEndpointAuthMethod": "tls_client_auth",
                     "tlsClientAuthSubjectDn": "CN=wps,O=Example"}}),
    ] {
        let mut v = fixture;
        v["featureAuthenticate"] = json!(true);
        let mut original = create(v).client;
        grant_group(&mut original, "TVB-Workshops", NOW).unwrap();
        let body = serde_json::to_string(&to_representation(&original)).unwrap();
        let rep: ClientRepresentation = serde_json::from_str(&body).unwrap();
        let mut again = update(
            &original,
            serde_json::to_value(&rep).unwrap(),
            "messines",
            false,
        )
        .unwrap()
        .client;
        assert_eq!(again.updated_at, LATER);
        again.updated_at = original.updated_at;
        assert_eq!(again, original, "{body}");
    }
}

#[test]
fn client_storage_round_trip_keeps_the_hash() {
    let c = create(seed_server_to_server()).client;
    let stored = serde_json::to_string(&c).unwrap();
    assert!(stored.contains("\"secret\":\""));
    let back: Client = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, c);
}

#[test]
fn error_codes_follow_rfc_7591() {
    assert_eq!(
        RegistrationError::RedirectUri {
            index: 0,
            uri: "x".into(),
            problem: UriProblem::Fragment
        }
        .oauth_error_code(),
        "invalid_redirect_uri"
    );
    assert_eq!(
        RegistrationError::DuplicateRedirectUri("x".into()).oauth_error_code(),
        "invalid_redirect_uri"
    );
    assert_eq!(
        RegistrationError::ImplicitFlowRefused.oauth_error_code(),
        "invalid_client_metadata"
    );
    assert_eq!(
        RegistrationError::ScopeForbidden("s".into()).oauth_error_code(),
        "invalid_client_metadata"
    );
    assert!(!RegistrationError::ImplicitFlowRefused.is_permission_denied());
}
