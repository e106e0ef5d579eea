//! People over real HTTPS: a "browser" with a cookie jar signs in, reads
//! CSRF tokens out of the real pages, approves, and the portal redeems the
//! code; ID tokens are checked against `/jwks` with aws-lc-rs (no JWT
//! library); the access token obtains a certificate `openssl verify`
//! accepts; revoking the approval on `/account` ends the refresh token and
//! marks the certificate revoked. The `[core]` entries AZ-01, AZ-02,
//! CODE-01, CODE-04, CODE-08, RT-01 and RT-02 of ATTACKS.md, and the WEB
//! entries that apply, are tests named after them.

use std::collections::HashMap;
use std::sync::Barrier;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::certificate::{inspect_json, issued_count, post_csr, verify_with_openssl};
use crate::token::{admin, register, service_client_json};
use crate::{HttpResponse, Server, form_encode};

const FORM: &str = "application/x-www-form-urlencoded";
pub const PASSWORD: &str = "correct horse battery staple";
pub const PORTAL_CB: &str = "https://portal.example/cb";

/// A user agent: cookies as the server sets them, no redirects followed.
pub struct Browser<'a> {
    pub server: &'a Server,
    pub cookies: HashMap<String, String>,
}

impl<'a> Browser<'a> {
    pub fn new(server: &'a Server) -> Self {
        Self {
            server,
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &HttpResponse) {
        for (name, value) in &response.headers {
            if !name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let first = value.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            if value.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
    }

    pub fn get(&mut self, path: &str) -> HttpResponse {
        let cookie = self.cookie_header();
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("Cookie", cookie.as_str())]
        };
        let response = self.server.send("GET", path, &headers, None);
        self.keep_cookies(&response);
        response
    }

    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> HttpResponse {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let cookie = self.cookie_header();
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("Cookie", cookie.as_str())]
        };
        let response = self.server.post(path, &headers, FORM, &body);
        self.keep_cookies(&response);
        response
    }

    /// Follows `response`'s Location if it is on this server.
    pub fn follow(&mut self, response: &HttpResponse) -> HttpResponse {
        let location = response
            .header("location")
            .unwrap_or_else(|| panic!("no Location ({}): {}", response.status, response.text()));
        assert!(location.starts_with('/'), "not local: {location}");
        self.get(location)
    }

    /// Signs in on the login page `login` (a response carrying the form).
    pub fn sign_in(
        &mut self,
        login_page: &HttpResponse,
        username: &str,
        password: &str,
    ) -> HttpResponse {
        let html = login_page.text();
        let csrf = hidden(&html, "csrf_token");
        let mut form = vec![
            ("csrf_token", csrf.as_str()),
            ("username", username),
            ("password", password),
        ];
        let continue_to = try_hidden(&html, "continue");
        if let Some(c) = continue_to.as_deref() {
            form.push(("continue", c));
        }
        self.post("/login", &form)
    }
}

/// A page's text with minijinja's escapes of `/` and `&` undone, for
/// matching URLs.
pub fn html_of(response: &HttpResponse) -> String {
    response.text().replace("&#x2f;", "/").replace("&amp;", "&")
}

/// The first link of the account page `html` to an approval's `verb`
/// page (`revoke`, `edit`).
pub fn approval_link(html: &str, verb: &str) -> String {
    let end = format!("/{verb}\"");
    let stop = html
        .find(&end)
        .unwrap_or_else(|| panic!("no {verb} link in {html}"));
    let start = html[..stop].rfind("/account/approvals/").unwrap();
    html[start..stop + end.len() - 1].to_owned()
}

/// The value of the hidden input `name` in `html`.
pub fn hidden(html: &str, name: &str) -> String {
    try_hidden(html, name).unwrap_or_else(|| panic!("no hidden {name} in {html}"))
}

fn try_hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&#x2f;", "/")
            .replace("&amp;", "&"),
    )
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                slcs::http::form::decode(v.as_bytes()).unwrap(),
            )
        })
        .collect()
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(bytes);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, b64.encode(digest.as_ref()))
}

/// A web portal declaring `wps` as its delegatee, plus the `wps` service
/// client; returns the portal's secret.
pub fn register_portal(server: &Server) -> String {
    let (wps, _) = register(server, &service_client_json("wps"));
    assert_eq!(wps.status, 201, "{}", wps.text());
    let (portal, secret) = register(
        server,
        &json!({
            "client": {
                "clientId": "portal",
                "name": "Climate Portal",
                "description": "Browse and process climate data",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": [PORTAL_CB],
                "baseUrl": "https://portal.example/",
                "defaultClientScopes": ["openid", "slcs:certificate"],
                "optionalClientScopes": ["profile", "email", "offline_access"]
            },
            "maintainers": [],
            "featureAuthenticate": false,
            "slcs": { "delegatees": ["wps"] }
        }),
    );
    assert_eq!(portal.status, 201, "{}", portal.text());
    secret.unwrap()
}

/// A running server with the portal (and `wps`) registered and Alice's
/// account: (its directory, the server, the portal's secret, Alice's
/// subject). Keep the directory bound for as long as the server runs.
pub fn portal_world(env: &[(&str, &str)]) -> (tempfile::TempDir, Server, String, String) {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), env);
    let secret = register_portal(&server);
    let sub = alice(&server);
    (work, server, secret, sub)
}

/// Creates a user through the admin API; returns its subject.
pub fn add_user(server: &Server, body: Value) -> String {
    let created = server.post(
        "/admin/users",
        &[("Authorization", &admin(server))],
        "application/json",
        &body.to_string(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    created.json()["sub"].as_str().unwrap().to_owned()
}

pub fn alice(server: &Server) -> String {
    add_user(
        server,
        json!({
            "username": "alice",
            "display_name": "Alice Martin",
            "email": "alice@ipsl.example",
            "organisation": "IPSL",
            "password": PASSWORD
        }),
    )
}

/// `/authorize?...` for the portal with `scope`, `state`, `nonce` and the
/// S256 `challenge`.
pub fn authorize_path(scope: &str, challenge: &str, extra: &str) -> String {
    format!(
        "/authorize?response_type=code&client_id=portal&redirect_uri={}&scope={}&state=st-123&nonce=n-456&code_challenge={challenge}&code_challenge_method=S256{extra}",
        form_encode(PORTAL_CB),
        form_encode(scope)
    )
}

/// Runs the browser through sign-in (if asked) and consent (if shown,
/// approving with every delegatee ticked); returns the final redirect to
/// the portal.
pub fn authorize(browser: &mut Browser<'_>, path: &str) -> HttpResponse {
    let mut response = browser.get(path);
    for _ in 0..6 {
        match response.status {
            303 => {
                let location = response.header("location").unwrap().to_owned();
                if location.starts_with(PORTAL_CB) {
                    return response;
                }
                response = browser.get(&location);
            }
            200 if html_of(&response).contains("action=\"/login\"") => {
                let page = response;
                response = browser.sign_in(&page, "alice", PASSWORD);
            }
            200 if html_of(&response).contains("action=\"/authorize/consent\"") => {
                response = approve_all(browser, &response);
            }
            _ => panic!("unexpected {}: {}", response.status, response.text()),
        }
    }
    panic!("no redirect to the portal");
}

/// A fresh authorization request at `path`: to the login page, Alice signs
/// in, and the page that follows (the consent page, the first time).
pub fn sign_in_for(browser: &mut Browser<'_>, path: &str) -> HttpResponse {
    let start = browser.get(path);
    let login = browser.follow(&start);
    let signed_in = browser.sign_in(&login, "alice", PASSWORD);
    browser.follow(&signed_in)
}

/// The code of a covered (or first, approved) authorization request for
/// `scope` with the S256 `challenge`: what the portal receives.
pub fn code_for(browser: &mut Browser<'_>, scope: &str, challenge: &str) -> String {
    let back = authorize(browser, &authorize_path(scope, challenge, ""));
    query_of(back.header("location").unwrap())["code"].clone()
}

/// Alice approves the portal for `openid offline_access slcs:certificate`
/// and the portal (secret `secret`) redeems the code: the token response.
pub fn offline_tokens(server: &Server, secret: &str, browser: &mut Browser<'_>) -> HttpResponse {
    let (verifier, challenge) = pkce();
    let code = code_for(
        browser,
        "openid offline_access slcs:certificate",
        &challenge,
    );
    redeem(server, secret, &code, &verifier)
}

/// Approves a consent page, ticking every delegatee shown.
pub fn approve_all(browser: &mut Browser<'_>, consent: &HttpResponse) -> HttpResponse {
    let html = consent.text();
    let csrf = hidden(&html, "csrf_token");
    let request = hidden(&html, "request");
    let delegatees: Vec<String> = html
        .match_indices("name=\"delegatee.")
        .map(|(at, m)| {
            let rest = &html[at + m.len()..];
            format!("delegatee.{}", &rest[..rest.find('"').unwrap()])
        })
        .collect();
    let mut form = vec![
        ("csrf_token", csrf.as_str()),
        ("request", request.as_str()),
        ("decision", "approve"),
    ];
    for d in &delegatees {
        form.push((d.as_str(), "on"));
    }
    browser.post("/authorize/consent", &form)
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// Redeems `code` as the portal.
pub fn redeem(server: &Server, secret: &str, code: &str, verifier: &str) -> HttpResponse {
    server.post(
        "/token",
        &[("Authorization", &basic("portal", secret))],
        FORM,
        &format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
            form_encode(code),
            form_encode(PORTAL_CB)
        ),
    )
}

pub fn refresh(server: &Server, secret: &str, token: &str) -> HttpResponse {
    server.post(
        "/token",
        &[("Authorization", &basic("portal", secret))],
        FORM,
        &format!(
            "grant_type=refresh_token&refresh_token={}",
            form_encode(token)
        ),
    )
}

pub fn introspect_active(server: &Server, secret: &str, token: &str) -> bool {
    let response = server.post(
        "/introspect",
        &[("Authorization", &basic("portal", secret))],
        FORM,
        &format!("token={}", form_encode(token)),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["active"].as_bool().unwrap()
}

/// Verifies a compact ES256 JWS with aws-lc-rs and the key `/jwks`
/// publishes (no JWT library); returns (header, claims).
pub fn verify_jws(server: &Server, token: &str) -> (Value, Value) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let jwks = server.get("/jwks").json();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid published in /jwks")
        .clone();
    let mut point = vec![4u8];
    point.extend(b64.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(b64.decode(key["y"].as_str().unwrap()).unwrap());
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .verify(
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &b64.decode(parts[2]).unwrap(),
    )
    .expect("signature verifies with the published key");
    (
        header,
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap(),
    )
}

/// Runs `request` on `n` threads released together by a barrier; the
/// answers in thread order.
pub fn concurrently(n: usize, request: impl Fn() -> HttpResponse + Sync) -> Vec<HttpResponse> {
    let barrier = Barrier::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    request()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub fn audit_actions(server: &Server) -> Vec<String> {
    audit_events(server)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// The audit log's first 1000 events, oldest first (admin API).
pub fn audit_events(server: &Server) -> Vec<Value> {
    let audit = server.send(
        "GET",
        "/admin/audit?limit=1000",
        &[("Authorization", &admin(server))],
        None,
    );
    audit
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("{}", audit.text()))
        .clone()
}

/// `GET /certificate/status/{serial}` with the admin token: the status
/// (`good`, `revoked`, `expired`, `unknown`) and the whole answer.
pub fn certificate_status(server: &Server, serial: &str) -> (String, String) {
    let answer = server.send(
        "GET",
        &format!("/certificate/status/{serial}"),
        &[("Authorization", &admin(server))],
        None,
    );
    let status = answer.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, answer.text())
}

#[test]
fn web_09_code_flow_signs_in_approves_once_and_revocation_ends_everything() {
    let (_work, server, secret, sub) = portal_world(&[]);
    let mut browser = Browser::new(&server);
    let scope = "openid profile offline_access slcs:certificate";
    let (verifier, challenge) = pkce();

    // Not signed in: to the login page, which sets the pre-login cookie
    // and carries every page header.
    let start = browser.get(&authorize_path(scope, &challenge, ""));
    assert_eq!(start.status, 303, "{}", start.text());
    let login = browser.follow(&start);
    assert_eq!(login.status, 200);
    assert!(login.text().contains("Climate Portal"), "names the client");
    let csp = login.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(login.header("x-frame-options"), Some("DENY"));
    let set_cookie = login.header("set-cookie").unwrap();
    assert!(set_cookie.starts_with("__Host-slcs-pre="), "{set_cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }

    // WEB-09: a wrong password and an unknown user read the same.
    let wrong = browser.sign_in(&login, "alice", "not the password at all");
    let unknown = browser.sign_in(&login, "mallory", "not the password at all");
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    let message = |r: &HttpResponse| {
        let html = r.text();
        let start = html.find("role=\"alert\"").unwrap();
        html[start..start + 80].to_owned()
    };
    assert_eq!(message(&wrong), message(&unknown));
    assert!(!browser.cookies.contains_key("__Host-slcs-session"));

    // Signing in continues the request: the consent page.
    let signed_in = browser.sign_in(&login, "alice", PASSWORD);
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    let session = browser.cookies["__Host-slcs-session"].clone();
    let consent = browser.follow(&signed_in);
    assert_eq!(consent.status, 200, "{}", consent.text());
    let html = html_of(&consent);
    for shown in [
        "Approve Climate Portal",
        "Alice Martin",
        "slcs:certificate",
        "Obtain short-lived X.509 certificates in your name",
        "offline_access",
        "name=\"delegatee.wps\"",
        "openEO batch jobs",
        PORTAL_CB,
    ] {
        assert!(html.contains(shown), "consent page lacks {shown}: {html}");
    }
    let back = approve_all(&mut browser, &consent);
    assert_eq!(back.status, 303, "{}", back.text());
    let location = back.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{PORTAL_CB}?code=")),
        "{location}"
    );
    let answer = query_of(location);
    assert_eq!(answer["state"], "st-123");
    assert_eq!(answer["iss"], "https://localhost:8443", "RFC 9207 iss");

    // The portal redeems the code.
    let tokens = redeem(&server, &secret, &answer["code"], &verifier);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let tokens = tokens.json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh_token.starts_with("slcs_rt_"));

    // The ID token, checked without the server's code.
    let (header, id) = verify_jws(&server, tokens["id_token"].as_str().unwrap());
    assert_eq!(header["typ"], "JWT");
    assert_eq!(id["iss"], "https://localhost:8443");
    assert_eq!(id["aud"], "portal");
    assert_eq!(id["sub"], sub.as_str());
    assert_eq!(id["nonce"], "n-456");
    assert_eq!(id["amr"], json!(["pwd"]));
    assert_eq!(id["name"], "Alice Martin");
    assert!(id.get("email").is_none(), "email scope not requested");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access.as_bytes());
    let at_hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
    assert_eq!(id["at_hash"], at_hash.as_str());
    assert!(id["auth_time"].as_i64().unwrap() <= id["iat"].as_i64().unwrap());
    let (at_header, at) = verify_jws(&server, &access);
    assert_eq!(at_header["typ"], "at+jwt");
    assert_eq!(at["aud"], "https://localhost:8443/certificate");
    assert_eq!(at["sub"], sub.as_str());
    let approval_id = at["slcs_approval"].as_str().unwrap().to_owned();

    // /userinfo releases what the scope allows.
    let info = server.send(
        "GET",
        "/userinfo",
        &[("Authorization", &format!("Bearer {access}"))],
        None,
    );
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["preferred_username"], "alice");
    assert!(info.json().get("email").is_none());

    // Sign-in and delegation in one step: the same access token gets a
    // certificate naming Alice, with the approval in its provenance.
    let issued = post_csr(&server, &access, "");
    assert_eq!(issued.status, 200, "{}", issued.text());
    let pem = issued.text();
    let subject = verify_with_openssl(&server, &pem);
    assert!(subject.contains("Alice Martin"), "{subject}");
    let provenance = inspect_json(&pem)["provenance"].clone();
    assert_eq!(provenance["subject"], sub.as_str());
    assert_eq!(provenance["steps"][0]["grant_type"], "authorization_code");
    assert_eq!(provenance["steps"][0]["approval_id"], approval_id.as_str());
    let serial = inspect_json(&pem)["serial"].as_str().unwrap().to_owned();

    // A second request for the same scopes skips the consent page.
    let (verifier2, challenge2) = pkce();
    let again = browser.get(&authorize_path(scope, &challenge2, ""));
    assert_eq!(again.status, 303, "{}", again.text());
    let location = again.header("location").unwrap();
    assert!(
        location.starts_with(PORTAL_CB),
        "consent skipped: {location}"
    );
    let second = redeem(&server, &secret, &query_of(location)["code"], &verifier2);
    assert_eq!(second.status, 200, "{}", second.text());

    // A wider one asks for the difference only.
    let wider = browser.get(&authorize_path(&format!("{scope} email"), &challenge2, ""));
    assert_eq!(wider.status, 200, "{}", wider.text());
    let html = wider.text();
    let new_part = &html[html.find("It now also asks to").expect("difference shown")
        ..html
            .find("You approved before")
            .expect("approved part shown")];
    assert!(new_part.contains("<code>email</code>"), "{new_part}");
    assert!(!new_part.contains("slcs:certificate"), "{new_part}");

    // The refresh token rotates.
    let rotated = refresh(&server, &secret, &refresh_token);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let refresh2 = rotated.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh_token);

    // /account lists the approval as a chain and revokes it.
    let account = browser.get("/account");
    assert_eq!(account.status, 200, "{}", account.text());
    let html = html_of(&account);
    assert!(html.contains("Climate Portal"), "{html}");
    assert!(html.contains(&format!("/account/approvals/{approval_id}/revoke")));
    // Her recent activity: the sign-in, the approval, the tokens.
    let activity = &html[html.find("Recent activity").expect("activity shown")..];
    for line in [
        "Signed in",
        "Approved portal",
        "portal received an access token (authorization_code)",
    ] {
        assert!(activity.contains(line), "{line}: {activity}");
    }
    // Her certificate, as PEM, for her only: another person, a stranger
    // and a made-up serial all get the same "not found".
    let download = browser.get(&format!("/account/certificates/{serial}"));
    assert_eq!(download.status, 200, "{}", download.text());
    assert_eq!(
        download.header("content-disposition"),
        Some(format!("attachment; filename=\"{serial}.pem\"").as_str())
    );
    let first_block = |text: &str| {
        let end = "-----END CERTIFICATE-----";
        text[..text.find(end).unwrap() + end.len()].to_owned()
    };
    assert_eq!(first_block(&download.text()), first_block(&pem));
    assert!(!download.text().contains("PRIVATE KEY"));
    add_user(
        &server,
        json!({"username": "bob", "display_name": "Bob", "password": PASSWORD}),
    );
    let mut bob = Browser::new(&server);
    let login = bob.get("/login");
    bob.sign_in(&login, "bob", PASSWORD);
    let mut stranger = Browser::new(&server);
    let not_found = |answer: HttpResponse, what: &str| {
        assert_eq!(answer.status, 404, "{what}: {}", answer.text());
        assert!(!answer.text().contains("BEGIN CERTIFICATE"));
    };
    not_found(
        bob.get(&format!("/account/certificates/{serial}")),
        "Bob asks for Alice's",
    );
    let bobs = html_of(&bob.get("/account"));
    assert!(
        !bobs.contains("Approved portal"),
        "Alice's activity: {bobs}"
    );
    not_found(browser.get("/account/certificates/zz"), "malformed");
    not_found(
        browser.get("/account/certificates/7fffffffffffffff"),
        "never issued",
    );
    assert_eq!(
        stranger
            .get(&format!("/account/certificates/{serial}"))
            .status,
        303,
        "to the login page"
    );
    // Revoking takes a confirmation that says what it will end.
    let confirm = browser.get(&format!("/account/approvals/{approval_id}/revoke"));
    assert_eq!(confirm.status, 200, "{}", confirm.text());
    let confirm_html = html_of(&confirm);
    assert!(
        confirm_html.contains("Revoke Climate Portal?"),
        "{confirm_html}"
    );
    assert!(confirm_html.contains(&serial), "{confirm_html}");
    assert_eq!(
        bob.get(&format!("/account/approvals/{approval_id}/revoke"))
            .status,
        404,
        "not Bob's approval"
    );
    // WEB-02: without the form's token nothing is revoked.
    let forged = browser.post(&format!("/account/approvals/{approval_id}/revoke"), &[]);
    assert_eq!(forged.status, 403);
    assert!(introspect_active(&server, &secret, &access));
    let csrf = hidden(&confirm_html, "csrf_token");
    let revoked = browser.post(
        &format!("/account/approvals/{approval_id}/revoke"),
        &[("csrf_token", &csrf)],
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(revoked.text().contains(&serial), "{}", revoked.text());

    // Everything issued under it is dead.
    let after = refresh(&server, &secret, &refresh2);
    assert_eq!(after.status, 400);
    assert_eq!(after.json()["error"], "invalid_grant");
    assert!(!introspect_active(&server, &secret, &access));
    let (status, answer) = certificate_status(&server, &serial);
    assert_eq!(status, "revoked", "{answer}");
    let refused = post_csr(&server, &access, "");
    assert_eq!(refused.status, 401, "{}", refused.text());
    // The session is still the one signed in (the browser kept it).
    assert_eq!(browser.cookies["__Host-slcs-session"], session);
    let actions = audit_actions(&server);
    for action in [
        "user.login",
        "approval.create",
        "approval.revoke",
        "grant.revoke",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action} not audited");
    }
}

#[test]
fn az_01_az_02_bad_client_or_redirect_uri_is_a_page_never_a_redirect() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    register_portal(&server);
    let (_, challenge) = pkce();
    let with = |client: &str, redirect: Option<&str>| {
        let mut path = format!(
            "/authorize?response_type=code&client_id={}&scope=openid&state=s&code_challenge={challenge}&code_challenge_method=S256",
            form_encode(client)
        );
        if let Some(redirect) = redirect {
            path.push_str(&format!("&redirect_uri={}", form_encode(redirect)));
        }
        path
    };
    let mut cases: Vec<String> = [
        "https://portal.example/cb/",
        "https://portal.example/cb/../evil",
        "https://portal.example/cb/..;/evil",
        "https://portal.example/cb?x=1",
        "https://portal.example/cb#f",
        "https://PORTAL.example/cb",
        "http://portal.example/cb",
        "https://portal.example:8443/cb",
        "https://portal.example.evil.test/cb",
        "https://portal.example@evil.test/cb",
        "https://a@b@evil.test/cb",
        "https:evil.test",
        "https://portal.example%2F@evil.test/cb",
        "JaVaScRiPt:alert(1)//",
        "data:text/html,<script>alert(1)</script>",
        "https://xn--prtal-gra.example/cb",
    ]
    .iter()
    .map(|uri| with("portal", Some(uri)))
    .collect();
    // AZ-02: empty, unknown, or another client's pairing, or no URI.
    cases.push(with("", Some("https://evil.test/")));
    cases.push(with("doesnotexist", Some("https://evil.test/")));
    cases.push(with("wps", Some(PORTAL_CB)));
    cases.push(with("portal", None));
    // AZ-07: a repeated client_id or redirect_uri.
    cases.push(format!(
        "{}&client_id=evil",
        with("portal", Some(PORTAL_CB))
    ));
    cases.push(format!(
        "{}&redirect_uri={}",
        with("portal", Some(PORTAL_CB)),
        form_encode("https://evil.test/")
    ));
    for path in &cases {
        let response = server.get(path);
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert!(response.header("location").is_none(), "{path} redirected");
        assert_eq!(
            response.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(
            !response.text().contains("evil.test/")
                || !response.text().contains("href=\"https://evil"),
            "{path}"
        );
    }
}

#[test]
fn code_01_code_04_pkce_is_required_and_s256_only() {
    let (_work, server, secret, _) = portal_world(&[]);
    let (verifier, challenge) = pkce();
    let base = format!(
        "/authorize?response_type=code&client_id=portal&redirect_uri={}&scope=openid&state=s1",
        form_encode(PORTAL_CB)
    );
    let cases = [
        String::new(),
        format!("&code_challenge={challenge}"),
        format!("&code_challenge={challenge}&code_challenge_method=plain"),
        format!("&code_challenge={challenge}&code_challenge_method=S512"),
        "&code_challenge=abcdefghijklmnopqrst&code_challenge_method=S256".to_owned(),
        format!(
            "&code_challenge={}&code_challenge_method=S256",
            "a".repeat(200)
        ),
    ];
    for extra in &cases {
        let response = server.get(&format!("{base}{extra}"));
        assert_eq!(response.status, 303, "{extra}: {}", response.text());
        let location = response.header("location").unwrap();
        assert!(location.starts_with(PORTAL_CB), "{location}");
        let answer = query_of(location);
        assert_eq!(answer["error"], "invalid_request", "{extra}");
        assert_eq!(answer["state"], "s1");
        assert_eq!(answer["iss"], "https://localhost:8443");
        assert!(!answer.contains_key("code"));
    }
    // AZ-06: no implicit or hybrid response types.
    for response_type in ["token", "code token", "id_token token", "foo"] {
        let path = authorize_path("openid", &challenge, "").replace(
            "response_type=code",
            &format!("response_type={}", form_encode(response_type)),
        );
        let response = server.get(&path);
        let answer = query_of(response.header("location").unwrap());
        assert_eq!(
            answer["error"], "unsupported_response_type",
            "{response_type}"
        );
    }

    // CODE-02: a code redeemed with a wrong verifier, or none, or the
    // challenge itself, fails, and the failed attempt burns the code.
    let mut browser = Browser::new(&server);
    for bad in [
        Some("x".repeat(43)),
        None,
        Some(challenge.clone()),
        Some(format!("{}+", "a".repeat(43))),
    ] {
        let code = code_for(&mut browser, "openid", &challenge);
        let body = match &bad {
            Some(v) => format!(
                "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
                form_encode(&code),
                form_encode(PORTAL_CB),
                form_encode(v)
            ),
            None => format!(
                "grant_type=authorization_code&code={}&redirect_uri={}",
                form_encode(&code),
                form_encode(PORTAL_CB)
            ),
        };
        let refused = server.post(
            "/token",
            &[("Authorization", &basic("portal", &secret))],
            FORM,
            &body,
        );
        assert_eq!(refused.status, 400, "{bad:?}");
        assert_eq!(refused.json()["error"], "invalid_grant", "{bad:?}");
        let retry = redeem(&server, &secret, &code, &verifier);
        assert_eq!(retry.json()["error"], "invalid_grant", "code burnt");
    }
    // CODE-07: redeemed with another redirect URI, or by another client.
    let code = code_for(&mut browser, "openid", &challenge);
    let other_uri = server.post(
        "/token",
        &[("Authorization", &basic("portal", &secret))],
        FORM,
        &format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
            form_encode(&code),
            form_encode("https://portal.example/other")
        ),
    );
    assert_eq!(other_uri.json()["error"], "invalid_grant");
}

#[test]
fn code_08_concurrent_double_redemption_yields_one_token_family() {
    let (_work, server, secret, _) = portal_world(&[]);
    let mut browser = Browser::new(&server);
    for round in 0..3 {
        let (verifier, challenge) = pkce();
        let code = code_for(&mut browser, "openid slcs:certificate", &challenge);
        let results = concurrently(16, || redeem(&server, &secret, &code, &verifier));
        let winners: Vec<&HttpResponse> = results.iter().filter(|r| r.status == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one redemption wins"
        );
        for loser in results.iter().filter(|r| r.status != 200) {
            assert_eq!(loser.json()["error"], "invalid_grant");
        }
        // The replays revoked what the winner obtained (RFC 6749 §4.1.2).
        let token = winners[0].json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            !introspect_active(&server, &secret, &token),
            "round {round}"
        );
    }
}

#[test]
fn rt_01_rt_02_rotation_reuse_detection_and_concurrent_refresh() {
    let (_work, server, secret, _) = portal_world(&[]);
    let mut browser = Browser::new(&server);
    let scope = "openid offline_access slcs:certificate";
    let tokens = |browser: &mut Browser<'_>| {
        let (verifier, challenge) = pkce();
        let code = code_for(browser, scope, &challenge);
        let response = redeem(&server, &secret, &code, &verifier);
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    };

    // RT-01: RT1 → RT2; RT1 again revokes the family, RT2 included.
    let first = tokens(&mut browser);
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let second = refresh(&server, &secret, &rt1);
    assert_eq!(second.status, 200, "{}", second.text());
    let rt2 = second.json()["refresh_token"].as_str().unwrap().to_owned();
    let access2 = second.json()["access_token"].as_str().unwrap().to_owned();
    let reuse = refresh(&server, &secret, &rt1);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert_eq!(
        refresh(&server, &secret, &rt2).json()["error"],
        "invalid_grant"
    );
    assert!(!introspect_active(&server, &secret, &access2));
    // RT-03: a refresh may not widen the scope.
    let fresh = tokens(&mut browser);
    let rt = fresh["refresh_token"].as_str().unwrap().to_owned();
    let widened = server.post(
        "/token",
        &[("Authorization", &basic("portal", &secret))],
        FORM,
        &format!(
            "grant_type=refresh_token&refresh_token={}&scope={}",
            form_encode(&rt),
            form_encode("slcs:certificate email")
        ),
    );
    assert_eq!(widened.json()["error"], "invalid_scope");
    // RT-06: an access token is not a refresh token.
    let access = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        refresh(&server, &secret, access).json()["error"],
        "invalid_grant"
    );

    // RT-02: 16 concurrent refreshes with one token: at most one succeeds,
    // and no two live descendants remain.
    let family = tokens(&mut browser);
    let rt = family["refresh_token"].as_str().unwrap().to_owned();
    let results = concurrently(16, || refresh(&server, &secret, &rt));
    let ok: Vec<&HttpResponse> = results.iter().filter(|r| r.status == 200).collect();
    assert!(ok.len() <= 1, "{} concurrent refreshes succeeded", ok.len());
    for refused in results.iter().filter(|r| r.status != 200) {
        assert_eq!(refused.json()["error"], "invalid_grant");
    }
    // The losers were reuses: the family is revoked, the winner's too.
    for winner in ok {
        let next = winner.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            refresh(&server, &secret, &next).json()["error"],
            "invalid_grant"
        );
    }
}

#[test]
fn web_01_web_03_web_08_web_13_forged_decisions_refused_logins_and_oversized_passwords_change_nothing()
 {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[("SLCS_USERS_LOGIN_FREE_FAILURES_PER_ACCOUNT", "3")],
    );
    register_portal(&server);
    alice(&server);
    let (_, challenge) = pkce();
    let before = audit_actions(&server).len();

    // WEB-03: a login post without the form's token, or with a token of
    // another browser, is refused before the password is looked at.
    let mut attacker = Browser::new(&server);
    let attacker_login = attacker.get("/login");
    let attacker_csrf = hidden(&attacker_login.text(), "csrf_token");
    let mut victim = Browser::new(&server);
    victim.get("/login");
    let no_token = victim.post("/login", &[("username", "alice"), ("password", PASSWORD)]);
    assert_eq!(no_token.status, 403);
    let lifted = victim.post(
        "/login",
        &[
            ("csrf_token", &attacker_csrf),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(lifted.status, 403);
    assert!(!victim.cookies.contains_key("__Host-slcs-session"));

    // WEB-01: a consent decision lifted from the attacker's own flow, or
    // sent without a token, or by GET, approves nothing.
    let consent = sign_in_for(
        &mut attacker,
        &authorize_path("openid slcs:certificate", &challenge, ""),
    );
    let html = consent.text();
    let (csrf, request) = (hidden(&html, "csrf_token"), hidden(&html, "request"));
    let mut other = Browser::new(&server);
    let start = other.get(&authorize_path("openid", &challenge, ""));
    let login = other.follow(&start);
    other.sign_in(&login, "alice", PASSWORD);
    let forged = other.post(
        "/authorize/consent",
        &[
            ("csrf_token", &csrf),
            ("request", &request),
            ("decision", "approve"),
        ],
    );
    assert_eq!(forged.status, 403, "{}", forged.text());
    let untokened = attacker.post(
        "/authorize/consent",
        &[("request", &request), ("decision", "approve")],
    );
    assert_eq!(untokened.status, 403);
    let by_get = attacker.get(&format!(
        "/authorize/consent?request={request}&decision=approve&csrf_token={csrf}"
    ));
    assert_eq!(by_get.status, 405);
    let actions = audit_actions(&server);
    assert!(
        !actions.iter().any(|a| a == "approval.create"),
        "{actions:?}"
    );

    // WEB-08: failures back off; then even the right password waits.
    let mut guesser = Browser::new(&server);
    let login = guesser.get("/login");
    for _ in 0..3 {
        assert_eq!(
            guesser
                .sign_in(&login, "alice", "wrong password here")
                .status,
            401
        );
    }
    assert_eq!(
        guesser
            .sign_in(&login, "alice", "wrong password here")
            .status,
        401
    );
    let throttled = guesser.sign_in(&login, "alice", PASSWORD);
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    assert!(throttled.header("retry-after").is_some());
    assert!(!guesser.cookies.contains_key("__Host-slcs-session"));
    // WEB-13: an oversized password is refused before hashing.
    let huge = "p".repeat(2000);
    assert_eq!(guesser.sign_in(&login, "bob", &huge).status, 400);

    // Refused attempts stored nothing but the two real sign-ins.
    let logins = audit_actions(&server)
        .iter()
        .skip(before)
        .filter(|a| a.as_str() == "user.login")
        .count();
    assert_eq!(logins, 2);
    assert_eq!(issued_count(&server), 0);
}

#[test]
fn restricted_clients_refuse_guests_and_outsiders_and_prompt_none_never_shows_a_page() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    register_portal(&server);
    add_user(
        &server,
        json!({"username": "alice", "display_name": "Alice", "guest": true, "password": PASSWORD}),
    );
    let (_, challenge) = pkce();
    // prompt=none without a session: login_required, at the client.
    let silent = server.get(&authorize_path("openid", &challenge, "&prompt=none"));
    assert_eq!(silent.status, 303);
    assert_eq!(
        query_of(silent.header("location").unwrap())["error"],
        "login_required"
    );
    // The portal refuses guests (seed default accessDeniedToGuests=true).
    let mut browser = Browser::new(&server);
    let refused = sign_in_for(&mut browser, &authorize_path("openid", &challenge, ""));
    assert_eq!(refused.status, 303, "{}", refused.text());
    let answer = query_of(refused.header("location").unwrap());
    assert_eq!(answer["error"], "access_denied");
    assert_eq!(answer["state"], "st-123");
    // Still refused silently: prompt=none never shows a page.
    let silent = browser.get(&authorize_path("openid", &challenge, "&prompt=none"));
    assert_eq!(
        query_of(silent.header("location").unwrap())["error"],
        "access_denied"
    );
}

/// The public native client a CLI uses for the device flow.
pub fn register_cli_client(server: &Server) {
    let (created, _) = register(
        server,
        &json!({
            "client": {
                "clientId": "slcs-cli",
                "name": "slcs command line",
                "publicClient": true,
                "standardFlowEnabled": false,
                "consentRequired": true,
                "redirectUris": [],
                "defaultClientScopes": ["openid", "slcs:certificate"],
                "optionalClientScopes": ["offline_access"]
            },
            "maintainers": [],
            "featureAuthenticate": false,
            "slcs": { "deviceFlowEnabled": true }
        }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
}

fn device_poll(server: &Server, device_code: &str) -> HttpResponse {
    server.post(
        "/token",
        &[],
        FORM,
        &format!(
            "grant_type={}&device_code={}&client_id=slcs-cli",
            form_encode("urn:ietf:params:oauth:grant-type:device_code"),
            form_encode(device_code)
        ),
    )
}

/// Plays Alice at the verification page: sign in, enter (or confirm the
/// pre-filled) code, and decide.
pub fn confirm_device(browser: &mut Browser<'_>, user_code: &str, approve: bool) -> HttpResponse {
    confirm_device_as(browser, ("alice", PASSWORD), user_code, approve)
}

/// [`confirm_device`] for another person.
pub fn confirm_device_as(
    browser: &mut Browser<'_>,
    (username, password): (&str, &str),
    user_code: &str,
    approve: bool,
) -> HttpResponse {
    let start = browser.get(&format!("/device?user_code={}", form_encode(user_code)));
    let entry = if start.status == 303 {
        let login = browser.follow(&start);
        let signed_in = browser.sign_in(&login, username, password);
        assert_eq!(signed_in.status, 303, "{}", signed_in.text());
        browser.follow(&signed_in)
    } else {
        start
    };
    assert_eq!(entry.status, 200, "{}", entry.text());
    // verification_uri_complete only pre-fills the form (DV-05).
    assert!(entry.text().contains(&format!("value=\"{user_code}\"")));
    let csrf = hidden(&entry.text(), "csrf_token");
    let confirmation = browser.post(
        "/device",
        &[("csrf_token", &csrf), ("user_code", user_code)],
    );
    assert_eq!(confirmation.status, 200, "{}", confirmation.text());
    let html = html_of(&confirmation);
    for shown in [
        "slcs command line",
        "slcs-cli",
        "Never enter a code someone sent you",
        user_code,
    ] {
        assert!(html.contains(shown), "confirmation lacks {shown}: {html}");
    }
    let csrf = hidden(&html, "csrf_token");
    browser.post(
        "/device/confirm",
        &[
            ("csrf_token", &csrf),
            ("user_code", user_code),
            ("decision", if approve { "approve" } else { "deny" }),
        ],
    )
}

#[test]
fn dv_01_dv_02_dv_04_dv_05_dv_07_device_flow_is_confirmed_in_the_browser_and_redeemed_once() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[("SLCS_OAUTH_DEVICE_POLL_INTERVAL_SECS", "1")],
    );
    register_cli_client(&server);
    alice(&server);
    let start = |scope: &str| {
        let response = server.post(
            "/device_authorization",
            &[],
            FORM,
            &format!("client_id=slcs-cli&scope={}", form_encode(scope)),
        );
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    };
    let device = start("openid offline_access slcs:certificate");
    let user_code = device["user_code"].as_str().unwrap().to_owned();
    let device_code = device["device_code"].as_str().unwrap().to_owned();
    assert_eq!(user_code.len(), 9);
    assert_eq!(device["verification_uri"], "https://localhost:8443/device");
    assert_eq!(device["interval"], 1);
    assert_eq!(
        device_poll(&server, &device_code).json()["error"],
        "authorization_pending"
    );

    // DV-01: wrong codes back off per address.
    let mut browser = Browser::new(&server);
    let entry = {
        let start = browser.get("/device");
        let login = browser.follow(&start);
        let signed_in = browser.sign_in(&login, "alice", PASSWORD);
        browser.follow(&signed_in)
    };
    let csrf = hidden(&entry.text(), "csrf_token");
    let mut statuses = Vec::new();
    for i in 0..12 {
        let guess = format!("BCDF-{:04}", i).replace('0', "G").replace('1', "H");
        statuses.push(
            browser
                .post("/device", &[("csrf_token", &csrf), ("user_code", &guess)])
                .status,
        );
    }
    assert_eq!(statuses[0], 400);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");

    // The back-off is per address and short at first: wait it out, then
    // the person confirms the real code.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let done = confirm_device(&mut Browser::new(&server), &user_code, true);
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("Device connected"));

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let tokens = device_poll(&server, &device_code);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    assert!(
        tokens["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("slcs_rt_")
    );
    let (_, claims) = verify_jws(&server, tokens["access_token"].as_str().unwrap());
    assert_eq!(
        claims["slcs_grant_type"],
        "urn:ietf:params:oauth:grant-type:device_code"
    );
    // DV-04: redeemed once.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        device_poll(&server, &device_code).json()["error"],
        "invalid_grant"
    );
    // The access token gets a certificate.
    let issued = post_csr(&server, tokens["access_token"].as_str().unwrap(), "");
    assert_eq!(issued.status, 200, "{}", issued.text());

    // DV-02: a guessed device code is invalid_grant.
    let guessed = device_poll(&server, &format!("slcs_dc_{}", "A".repeat(43)));
    assert_eq!(guessed.json()["error"], "invalid_grant");

    // Polling faster than the interval is slow_down; a refusal is
    // access_denied at the next poll.
    let denied = start("openid");
    let code = denied["device_code"].as_str().unwrap().to_owned();
    assert_eq!(
        device_poll(&server, &code).json()["error"],
        "authorization_pending"
    );
    assert_eq!(device_poll(&server, &code).json()["error"], "slow_down");
    let refused = confirm_device(
        &mut Browser::new(&server),
        denied["user_code"].as_str().unwrap(),
        false,
    );
    assert!(refused.text().contains("Request refused"));
    std::thread::sleep(std::time::Duration::from_millis(6100));
    assert_eq!(device_poll(&server, &code).json()["error"], "access_denied");

    // DV-07: a guest approving for a client that refuses guests gets the
    // device nothing: access_denied at the next poll.
    add_user(
        &server,
        json!({"username": "gus", "display_name": "Gus", "guest": true, "password": PASSWORD}),
    );
    let guest = start("openid");
    let answer = confirm_device_as(
        &mut Browser::new(&server),
        ("gus", PASSWORD),
        guest["user_code"].as_str().unwrap(),
        true,
    );
    assert!(
        answer.text().contains("Request refused"),
        "{}",
        answer.text()
    );
    assert_eq!(
        device_poll(&server, guest["device_code"].as_str().unwrap()).json()["error"],
        "access_denied"
    );
}

/// The code flow with Python Authlib as the portal, unchanged: discovery,
/// PKCE, the code, ID token validation with Authlib's own JOSE code,
/// userinfo, refresh, and a certificate for a `cryptography` CSR. `.ci/run`
/// installs Authlib into `.venv` and sets `AUTHLIB_REQUIRED=1`.
#[test]
fn authlib_portal_signs_in_and_gets_a_certificate() {
    let Some(python) = crate::venv_python("authlib, cryptography, requests", "AUTHLIB_REQUIRED")
    else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (server, issuer) = crate::start_with_reachable_issuer(&work.path().join("data"));
    let secret = register_portal(&server);
    let sub = alice(&server);
    let output = std::process::Command::new(&python)
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/authlib_portal.py"),
        )
        .env("SLCS_TEST_ISSUER", &issuer)
        .env("PORTAL_CLIENT_SECRET", &secret)
        .env("PORTAL_PASSWORD", PASSWORD)
        .env(
            "REQUESTS_CA_BUNDLE",
            server.data_dir.join("ca").join("ca.pem"),
        )
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
    assert!(stdout.contains(&format!("id_token_sub={sub}")), "{stdout}");
    assert!(stdout.contains("id_token_name=Alice Martin"), "{stdout}");
    assert!(
        stdout.contains("userinfo_email=alice@ipsl.example"),
        "{stdout}"
    );
    assert!(
        stdout.contains("certificate_subject=") && stdout.contains("Alice Martin"),
        "{stdout}"
    );
    assert!(stdout.contains("refreshed=yes"), "{stdout}");
}

#[test]
fn web_05_code_11_rt_04_az_08_ir_06_sessions_codes_and_tokens_stay_bound() {
    let (_work, server, secret, _) = portal_world(&[]);

    // WEB-05: a planted session cookie is replaced at sign-in, and the
    // planted value never becomes a session.
    let mut browser = Browser::new(&server);
    let planted = "A".repeat(43);
    browser
        .cookies
        .insert("__Host-slcs-session".into(), planted.clone());
    let login = browser.get("/login");
    let signed_in = browser.sign_in(&login, "alice", PASSWORD);
    assert_eq!(signed_in.status, 303);
    let session = browser.cookies["__Host-slcs-session"].clone();
    assert_ne!(session, planted);
    let mut planter = Browser::new(&server);
    planter
        .cookies
        .insert("__Host-slcs-session".into(), planted.clone());
    assert_eq!(
        planter.get("/account").status,
        303,
        "planted id is no session"
    );
    // AZ-08: after sign-in only local places; a URL in `continue` is ignored.
    let mut other = Browser::new(&server);
    let login = other.get(&format!(
        "/login?continue={}",
        form_encode("https://evil.test/")
    ));
    let to = other.sign_in(&login, "alice", PASSWORD);
    assert_eq!(to.header("location"), Some("/account"));
    // Sign-out ends the session server-side.
    let account = other.get("/account");
    let csrf = hidden(&account.text(), "csrf_token");
    let old = other.cookies["__Host-slcs-session"].clone();
    assert_eq!(other.post("/logout", &[("csrf_token", &csrf)]).status, 200);
    let mut replay = Browser::new(&server);
    replay.cookies.insert("__Host-slcs-session".into(), old);
    assert_eq!(replay.get("/account").status, 303, "ended session is dead");

    // CODE-11: the approval revoked between the code and its redemption.
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, "openid slcs:certificate", &challenge);
    let account = browser.get("/account");
    let html = html_of(&account);
    let csrf = hidden(&html, "csrf_token");
    let revoke_path = approval_link(&html, "revoke");
    assert_eq!(
        browser.post(&revoke_path, &[("csrf_token", &csrf)]).status,
        200
    );
    let late = redeem(&server, &secret, &code, &verifier);
    assert_eq!(late.status, 400, "{}", late.text());
    assert_eq!(late.json()["error"], "invalid_grant");

    // RT-04: the portal's refresh token presented by another client.
    let (verifier, challenge) = pkce();
    let code = code_for(
        &mut browser,
        "openid offline_access slcs:certificate",
        &challenge,
    );
    let tokens = redeem(&server, &secret, &code, &verifier).json();
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (wps, wps_secret) = register(
        &server,
        &json!({
            "client": {
                "clientId": "other-portal",
                "name": "Other",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": ["https://other.example/cb"],
                "defaultClientScopes": ["openid"]
            },
            "maintainers": [],
            "featureAuthenticate": false
        }),
    );
    assert_eq!(wps.status, 201, "{}", wps.text());
    let stolen = server.post(
        "/token",
        &[(
            "Authorization",
            &basic("other-portal", &wps_secret.unwrap()),
        )],
        FORM,
        &format!("grant_type=refresh_token&refresh_token={}", form_encode(rt)),
    );
    assert_eq!(stolen.json()["error"], "invalid_grant");
    // The rightful client still can.
    let rotated = refresh(&server, &secret, rt);
    assert_eq!(rotated.status, 200);
    let rt2 = rotated.json()["refresh_token"].as_str().unwrap().to_owned();
    let at2 = rotated.json()["access_token"].as_str().unwrap().to_owned();
    // RFC 7009 §2: a refresh token is revocable at /revoke, and its whole
    // grant goes with it.
    let revoked = server.post(
        "/revoke",
        &[("Authorization", &basic("portal", &secret))],
        FORM,
        &format!("token={}&token_type_hint=refresh_token", form_encode(&rt2)),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(
        refresh(&server, &secret, &rt2).json()["error"],
        "invalid_grant"
    );
    assert!(!introspect_active(&server, &secret, &at2));

    // OIDC Core §3.1.2.1: the authorization request also as a POST form.
    let (verifier, challenge) = pkce();
    let path = authorize_path("openid slcs:certificate", &challenge, "");
    let form: Vec<(String, String)> = query_of(&path).into_iter().collect();
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let posted = browser.post("/authorize", &form);
    assert_eq!(posted.status, 303, "{}", posted.text());
    let location = posted.header("location").unwrap().to_owned();
    let tokens = redeem(&server, &secret, &query_of(&location)["code"], &verifier);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let access = tokens.json()["access_token"].as_str().unwrap().to_owned();
    assert!(introspect_active(&server, &secret, &access));
    // A disabled account's tokens are inactive at once.
    let disabled = server.post(
        "/admin/users/alice/disable",
        &[("Authorization", &admin(&server))],
        "application/json",
        "",
    );
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert!(!introspect_active(&server, &secret, &access));
    // AZ-10: no CORS on the authorization endpoint.
    let cors = server.send(
        "GET",
        &authorize_path("openid", &challenge, ""),
        &[("Origin", "https://evil.test")],
        None,
    );
    assert!(cors.header("access-control-allow-origin").is_none());
}

/// Signs `username` in on a fresh browser (straight to the account page).
pub fn signed_in<'a>(server: &'a Server, username: &str, password: &str) -> Browser<'a> {
    let mut browser = Browser::new(server);
    let login = browser.get("/login");
    let answer = browser.sign_in(&login, username, password);
    assert_eq!(answer.status, 303, "{}", answer.text());
    browser
}

/// A password change proves the current password, refuses a repetition
/// that differs or a password too short, changes nothing when refused or
/// unsent by this site, and signs out every other session; "sign out
/// everywhere else" ends the others and keeps this one.
#[test]
fn a_password_change_proves_the_current_one_and_signs_out_everywhere_else() {
    let (_work, server, _, _) = portal_world(&[]);
    let mut here = signed_in(&server, "alice", PASSWORD);
    let mut elsewhere = signed_in(&server, "alice", PASSWORD);
    let account = html_of(&here.get("/account"));
    assert_eq!(account.matches("Since ").count(), 2, "{account}");
    assert_eq!(account.matches("this browser").count(), 1, "{account}");

    let page = here.get("/account/password");
    assert_eq!(page.status, 200, "{}", page.text());
    let csrf = hidden(&page.text(), "csrf_token");
    let new = "a much longer new passphrase";
    let attempt =
        |browser: &mut Browser<'_>, csrf: &str, current: &str, new: &str, repeat: &str| {
            browser.post(
                "/account/password",
                &[
                    ("csrf_token", csrf),
                    ("current_password", current),
                    ("new_password", new),
                    ("repeat_password", repeat),
                ],
            )
        };
    for (csrf, current, new_password, repeat, status) in [
        ("", PASSWORD, new, new, 403),
        (csrf.as_str(), "not the password", new, new, 401),
        (csrf.as_str(), PASSWORD, new, "something else entirely", 400),
        (csrf.as_str(), PASSWORD, "short", "short", 400),
    ] {
        let refused = attempt(&mut here, csrf, current, new_password, repeat);
        assert_eq!(refused.status, status, "{}", refused.text());
        assert!(
            status == 403 || refused.text().contains("Nothing was changed"),
            "{}",
            refused.text()
        );
    }
    // Nothing changed: the old password still signs in, the other
    // browser is still signed in.
    signed_in(&server, "alice", PASSWORD);
    assert_eq!(elsewhere.get("/account").status, 200);

    let changed = attempt(&mut here, &csrf, PASSWORD, new, new);
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert!(
        changed.text().contains("2 other sessions were signed out"),
        "{}",
        changed.text()
    );
    assert_eq!(here.get("/account").status, 200, "this browser stays");
    assert_eq!(elsewhere.get("/account").status, 303, "signed out");
    let mut old = Browser::new(&server);
    let login = old.get("/login");
    assert_eq!(old.sign_in(&login, "alice", PASSWORD).status, 401);
    let mut third = signed_in(&server, "alice", new);
    assert_eq!(third.get("/account").status, 200);

    // Sign out everywhere else: the third browser ends, this one stays.
    let account = here.get("/account");
    let csrf = hidden(&account.text(), "csrf_token");
    let forged = here.post("/account/sessions/end-others", &[]);
    assert_eq!(forged.status, 403);
    assert_eq!(
        third.get("/account").status,
        200,
        "nothing ended by a forged form"
    );
    let ended = here.post("/account/sessions/end-others", &[("csrf_token", &csrf)]);
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert!(
        ended.text().contains("1 other session was signed out"),
        "{}",
        ended.text()
    );
    assert_eq!(third.get("/account").status, 303);
    assert_eq!(here.get("/account").status, 200);
    let actions = audit_actions(&server);
    for action in ["user.set_password", "user.sessions.end"] {
        assert!(actions.iter().any(|a| a == action), "{action} not audited");
    }
}

/// A form a page cannot read gets a page saying so, never an OAuth JSON
/// error a person cannot read (issue 9: error pages say what went wrong).
#[test]
fn unreadable_page_forms_get_a_page_not_json() {
    let (_work, server, _, _) = portal_world(&[]);
    for (path, content_type, body) in [
        ("/login", "application/json", "{\"username\":\"alice\"}"),
        ("/login", FORM, "username=%zz"),
        ("/account/password", FORM, "csrf_token=a&csrf_token=b"),
        ("/device", "text/plain", "user_code=ABCD"),
    ] {
        let answer = server.post(path, &[], content_type, body);
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
        assert_eq!(
            answer.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert!(
            answer.text().contains("The form could not be read"),
            "{path}: {}",
            answer.text()
        );
    }
}
