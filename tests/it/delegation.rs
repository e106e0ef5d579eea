//! Delegation chains over real HTTPS (issue 8, seed 004 "ESGF Delegation"):
//! Alice approves the climate portal P with its declared chain, P hands
//! its token to the processing service W, W exchanges it (becoming the
//! actor) and shares a narrowed token with job brokers A and B, and each
//! broker, authenticating as itself, gets a certificate whose provenance
//! reads P ⇐ W ⇐ broker. Every client is a separate identity with its own
//! credentials; every refusal of ATTACKS §7 that applies is a test named
//! after its entry.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::certificate::{claims_of, forge, inspect_json, issued_count, verify_with_openssl};
use crate::people::{Browser, PORTAL_CB, alice, authorize_path, html_of, pkce, query_of, redeem};
use crate::token::{admin, register};
use crate::{HttpResponse, Server, form_encode};

const FORM: &str = "application/x-www-form-urlencoded";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Registered clients and their secrets.
pub struct Chain {
    pub portal: String,
    pub wps: String,
    pub broker_a: String,
    pub broker_b: String,
}

fn service(id: &str, name: &str, delegatees: &[&str], exchange: bool) -> Value {
    json!({
        "client": {
            "clientId": id,
            "name": name,
            "serviceAccountsEnabled": true,
            "defaultClientScopes": ["slcs:certificate"]
        },
        "slcs": { "delegatees": delegatees, "tokenExchangeEnabled": exchange }
    })
}

pub fn registered(server: &Server, body: &Value) -> String {
    let (created, secret) = register(server, body);
    assert_eq!(created.status, 201, "{}", created.text());
    secret.unwrap()
}

/// P → W → {A, B}, all active.
pub fn register_chain(server: &Server) -> Chain {
    let broker_a = registered(server, &service("broker-a", "Job broker A", &[], true));
    let broker_b = registered(server, &service("broker-b", "Job broker B", &[], false));
    let wps = registered(
        server,
        &service("wps", "Processing service", &["broker-a", "broker-b"], true),
    );
    let portal = registered(
        server,
        &json!({
            "client": {
                "clientId": "portal",
                "name": "Climate Portal",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": [PORTAL_CB],
                "defaultClientScopes": ["openid", "slcs:certificate"],
                "optionalClientScopes": ["offline_access"]
            },
            "slcs": { "delegatees": ["wps"], "tokenExchangeEnabled": true }
        }),
    );
    Chain {
        portal,
        wps,
        broker_a,
        broker_b,
    }
}

/// A running server with the chain registered and Alice's account: (its
/// directory, the server, the chain). Keep the directory bound while the
/// server runs.
fn chain_world() -> (tempfile::TempDir, Server, Chain) {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let chain = register_chain(&server);
    alice(&server);
    (work, server, chain)
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// A token exchange by `id`, with extra form parameters.
pub fn exchange(
    server: &Server,
    id: &str,
    secret: &str,
    subject: &str,
    extra: &str,
) -> HttpResponse {
    server.post(
        "/token",
        &[("Authorization", &basic(id, secret))],
        FORM,
        &format!(
            "grant_type={}&subject_token={}&subject_token_type={}{extra}",
            form_encode(EXCHANGE),
            form_encode(subject),
            form_encode(ACCESS)
        ),
    )
}

pub fn token_of(response: &HttpResponse) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["access_token"].as_str().unwrap().to_owned()
}

/// A certificate for `token`, presented by `presenter` with its secret in
/// the form (client_secret_post); the PEM.
pub fn certificate(server: &Server, token: &str, presenter: Option<(&str, &str)>) -> HttpResponse {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let mut form = format!("certificate_request={}", form_encode(&csr));
    if let Some((id, secret)) = presenter {
        form.push_str(&format!(
            "&client_id={}&client_secret={}",
            form_encode(id),
            form_encode(secret)
        ));
    }
    let response = server.post(
        "/certificate",
        &[("Authorization", &format!("Bearer {token}"))],
        FORM,
        &form,
    );
    if response.status == 200 {
        // Keep the key with the certificate for the mTLS check.
        let mut bundle = response.text();
        bundle.push_str(&key.serialize_pem());
        return HttpResponse {
            status: 200,
            headers: response.headers,
            body: bundle.into_bytes(),
        };
    }
    response
}

pub fn introspect_active(server: &Server, id: &str, secret: &str, token: &str) -> bool {
    let response = server.post(
        "/introspect",
        &[("Authorization", &basic(id, secret))],
        FORM,
        &format!("token={}", form_encode(token)),
    );
    response.json()["active"].as_bool().unwrap()
}

/// Alice approves the portal (every delegatee ticked) and the portal
/// redeems a code: its token.
pub fn portal_token(server: &Server, chain: &Chain, browser: &mut Browser<'_>) -> String {
    let (verifier, challenge) = pkce();
    let code = crate::people::code_for(browser, "openid slcs:certificate", &challenge);
    token_of(&redeem(server, &chain.portal, &code, &verifier))
}

/// The portal hands its token `t0` to W (RFC 8693 hand-off): `t1`, still
/// the portal's, for W only.
pub fn hand_off(server: &Server, chain: &Chain, t0: &str) -> String {
    token_of(&exchange(
        server,
        "portal",
        &chain.portal,
        t0,
        "&audience=wps",
    ))
}

/// The chain below the portal's token `t0`: P's hand-off to W (`t1`), W's
/// own token (`t2`), and W's token shared with `brokers` (`&audience=…`)
/// (`t3`).
pub fn walk_chain(server: &Server, chain: &Chain, t0: &str, brokers: &str) -> [String; 3] {
    let t1 = hand_off(server, chain, t0);
    let t2 = token_of(&exchange(server, "wps", &chain.wps, &t1, ""));
    let t3 = token_of(&exchange(server, "wps", &chain.wps, &t2, brokers));
    [t1, t2, t3]
}

#[test]
fn mashmydata_chain_portal_wps_brokers_each_get_a_certificate_naming_the_chain() {
    let (_work, server, chain) = chain_world();
    let mut browser = Browser::new(&server);

    // The consent page shows the whole declared chain.
    let (_, challenge) = pkce();
    let consent = crate::people::sign_in_for(
        &mut browser,
        &authorize_path("openid slcs:certificate", &challenge, ""),
    );
    let html = html_of(&consent);
    for shown in [
        "delegatee.wps",
        "delegatee.broker-a",
        "delegatee.broker-b",
        "receives from <code>wps</code>",
    ] {
        assert!(html.contains(shown), "consent lacks {shown}: {html}");
    }
    let t0 = portal_token(&server, &chain, &mut browser);

    // P hands its token to W: still P's, for W only, narrowed to what W
    // was approved for (no identity scope travels).
    let t1 = hand_off(&server, &chain, &t0);
    let c1 = claims_of(&t1);
    assert_eq!(c1["client_id"], "portal");
    assert_eq!(c1["aud"], "wps");
    assert_eq!(c1["scope"], "slcs:certificate");
    assert_eq!(c1["act"], json!({"sub": "portal"}));

    // W exchanges it and becomes the actor.
    let t2_response = exchange(&server, "wps", &chain.wps, &t1, "");
    assert_eq!(
        t2_response.json()["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let t2 = token_of(&t2_response);
    let c2 = claims_of(&t2);
    assert_eq!(c2["client_id"], "wps");
    assert_eq!(c2["act"], json!({"sub": "wps", "act": {"sub": "portal"}}));
    assert_eq!(c2["aud"], "https://localhost:8443/certificate");
    assert!(
        c2["exp"].as_i64() <= claims_of(&t0)["exp"].as_i64(),
        "TX-02"
    );
    assert!(t2_response.json().get("refresh_token").is_none());

    // W shares one token with brokers A and B.
    let t3 = token_of(&exchange(
        &server,
        "wps",
        &chain.wps,
        &t2,
        "&audience=broker-a&audience=broker-b",
    ));
    assert_eq!(claims_of(&t3)["aud"], json!(["broker-a", "broker-b"]));

    // Each broker, authenticating as itself, gets its certificate; the
    // token alone, or another client, gets nothing.
    assert_eq!(certificate(&server, &t3, None).status, 401);
    assert_eq!(
        certificate(&server, &t3, Some(("wps", &chain.wps))).status,
        401,
        "W is not among the parties"
    );
    let mut issued = Vec::new();
    for (id, secret) in [("broker-a", &chain.broker_a), ("broker-b", &chain.broker_b)] {
        let response = certificate(&server, &t3, Some((id, secret)));
        assert_eq!(response.status, 200, "{id}: {}", response.text());
        let bundle = response.text();
        let subject = verify_with_openssl(&server, &bundle);
        assert!(subject.contains("Alice Martin"), "{subject}");
        let provenance = inspect_json(&bundle)["provenance"].clone();
        let steps: Vec<(String, String)> = provenance["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["client_id"].as_str().unwrap().to_owned(),
                    s["grant_type"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                ("portal".to_owned(), "authorization_code".to_owned()),
                ("wps".to_owned(), EXCHANGE.to_owned()),
                (id.to_owned(), "certificate".to_owned()),
            ],
            "{provenance}"
        );
        let times: Vec<&str> = provenance["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["time"].as_str().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "in order: {times:?}"
        );
        assert_eq!(provenance["steps"][1]["scope"], "slcs:certificate");
        issued.push((id, bundle));
    }

    // The relying party (OPeNDAP-like, mTLS) accepts each and reads the
    // chain P ⇐ W ⇐ broker.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let rp = crate::relying_party::RelyingParty::start(&server.ca_pem()).await;
        for (id, bundle) in &issued {
            let (_, block) = x509_parser::pem::parse_x509_pem(bundle.as_bytes()).unwrap();
            let key_start = bundle.find("-----BEGIN PRIVATE KEY").unwrap();
            let client = crate::relying_party::ClientCert {
                der: block.contents.clone(),
                key_pem: bundle[key_start..].to_owned(),
                intermediates: Vec::new(),
            };
            let answer = rp
                .whoami(Some(&client), &rustls::version::TLS13)
                .await
                .unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text());
            let seen = answer.json();
            let chain: Vec<&str> = seen["chain"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["client_id"].as_str().unwrap())
                .collect();
            assert_eq!(chain, ["portal", "wps", *id], "{seen}");
            assert!(
                seen["summary"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(" ⇐ portal ⇐ wps ⇐ {id}")),
                "{seen}"
            );
            assert_eq!(seen["presenter"], *id);
        }
    });

    // Alice's account page draws the approval as its chain and lists what
    // was issued along it.
    let account = html_of(&browser.get("/account"));
    assert!(
        account.contains("2 certificates issued under it"),
        "{account}"
    );
    assert!(account.contains("portal ⇐ wps ⇐ broker-a"), "{account}");
    assert!(
        account.contains("receives from <code>wps</code>"),
        "{account}"
    );

    // Introspection by W shows the chain of its token and the
    // certificates issued from the shared one.
    let seen = server.post(
        "/introspect",
        &[("Authorization", &basic("wps", &chain.wps))],
        FORM,
        &format!("token={}", form_encode(&t3)),
    );
    let seen = seen.json();
    assert_eq!(seen["act"], json!({"sub": "wps", "act": {"sub": "portal"}}));
    assert_eq!(
        seen["slcs_certificates"].as_array().unwrap().len(),
        2,
        "{seen}"
    );

    // Cascade: W revokes its exchanged token → the shared token and the
    // brokers' certificates go; P's token does not.
    let p_certificate = certificate(&server, &t0, None);
    assert_eq!(p_certificate.status, 200, "{}", p_certificate.text());
    let revoked = server.post(
        "/revoke",
        &[("Authorization", &basic("wps", &chain.wps))],
        FORM,
        &format!("token={}", form_encode(&t2)),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(!introspect_active(&server, "wps", &chain.wps, &t3));
    assert!(introspect_active(&server, "portal", &chain.portal, &t0));
    for (_, bundle) in &issued {
        let serial = inspect_json(bundle)["serial"].as_str().unwrap().to_owned();
        let (status, answer) = crate::people::certificate_status(&server, &serial);
        assert_eq!(status, "revoked", "{answer}");
    }
    let p_serial = inspect_json(&p_certificate.text())["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = server.send(
        "GET",
        &format!("/certificate/status/{p_serial}"),
        &[("Authorization", &admin(&server))],
        None,
    );
    assert_eq!(status.json()["status"], "good", "upstream untouched");
}

#[test]
fn tx_01_tx_02_tx_03_tx_04_tx_10_tx_12_tx_13_tx_15_tx_17_exchanges_that_must_fail() {
    let (_work, server, chain) = chain_world();
    let mut browser = Browser::new(&server);
    let t0 = portal_token(&server, &chain, &mut browser);
    let t1 = hand_off(&server, &chain, &t0);
    let before = issued_count(&server);
    let error = |r: HttpResponse| {
        assert_eq!(r.status / 100, 4, "{}", r.text());
        r.json()["error"].as_str().unwrap().to_owned()
    };

    // TX-01: a wider scope than the subject's and the approval's.
    let wider = exchange(
        &server,
        "wps",
        &chain.wps,
        &t1,
        &format!("&scope={}", form_encode("slcs:certificate slcs:clients")),
    );
    assert_eq!(error(wider), "invalid_scope");
    // TX-02 / TX-17: no refresh token from an exchange.
    let refresh = exchange(
        &server,
        "wps",
        &chain.wps,
        &t1,
        &format!(
            "&requested_token_type={}",
            form_encode("urn:ietf:params:oauth:token-type:refresh_token")
        ),
    );
    assert_eq!(error(refresh), "invalid_request");
    // TX-17: exchanging your own token without handing it to anyone.
    assert_eq!(
        error(exchange(&server, "portal", &chain.portal, &t0, "")),
        "invalid_request"
    );
    // TX-03: a broker presenting the portal's token (skipping W), or W's
    // hand-off token; W presenting P's own token.
    assert_eq!(
        error(exchange(&server, "broker-a", &chain.broker_a, &t0, "")),
        "invalid_request"
    );
    assert_eq!(
        error(exchange(&server, "broker-a", &chain.broker_a, &t1, "")),
        "invalid_request"
    );
    assert_eq!(
        error(exchange(&server, "broker-b", &chain.broker_b, &t1, "")),
        "unauthorized_client",
        "broker-b is not registered for token exchange"
    );
    assert_eq!(
        error(exchange(&server, "wps", &chain.wps, &t0, "")),
        "invalid_request"
    );
    // TX-05: handing a token to a client the person never approved.
    let (created, _) = register(&server, &service("broker-x", "Unapproved", &[], false));
    assert_eq!(created.status, 201);
    assert_eq!(
        error(exchange(
            &server,
            "portal",
            &chain.portal,
            &t0,
            "&audience=broker-x"
        )),
        "invalid_target"
    );
    assert_eq!(
        error(exchange(
            &server,
            "portal",
            &chain.portal,
            &t0,
            "&audience=broker-a"
        )),
        "invalid_target",
        "broker-a is W's delegatee, not P's"
    );
    // TX-04: a public client cannot exchange.
    let public = server.post(
        "/token",
        &[],
        FORM,
        &format!(
            "grant_type={}&client_id=slcs-cli&subject_token={}&subject_token_type={}",
            form_encode(EXCHANGE),
            form_encode(&t1),
            form_encode(ACCESS)
        ),
    );
    assert_eq!(public.status, 401, "{}", public.text());
    // TX-10: actor tokens.
    for extra in [
        format!("&actor_token={}", form_encode(&t1)),
        format!("&actor_token_type={}", form_encode(ACCESS)),
        format!(
            "&actor_token={}&actor_token_type={}",
            form_encode(&t1),
            form_encode(ACCESS)
        ),
    ] {
        assert_eq!(
            error(exchange(&server, "wps", &chain.wps, &t1, &extra)),
            "invalid_request"
        );
    }
    // TX-12: the wrong subject_token_type, or not an access token at all.
    let wrong_type = server.post(
        "/token",
        &[("Authorization", &basic("wps", &chain.wps))],
        FORM,
        &format!(
            "grant_type={}&subject_token={}&subject_token_type={}",
            form_encode(EXCHANGE),
            form_encode(&t1),
            form_encode("urn:ietf:params:oauth:token-type:id_token")
        ),
    );
    assert_eq!(error(wrong_type), "invalid_request");
    assert_eq!(
        error(exchange(&server, "wps", &chain.wps, "slcs_rt_junk", "")),
        "invalid_request"
    );
    // TX-15: a service account's token never stands for a person.
    let service_token = token_of(&server.post(
        "/token",
        &[("Authorization", &basic("wps", &chain.wps))],
        FORM,
        "grant_type=client_credentials",
    ));
    assert_eq!(
        error(exchange(&server, "wps", &chain.wps, &service_token, "")),
        "invalid_request"
    );
    // TX-13: targets. A resource server the person never approved, one
    // with a fragment, a relative one, 200 of them, an unknown audience,
    // and more audiences than one exchange may name (RFC 8693 §2.1.1).
    let issuer = claims_of(&t0)["iss"].as_str().unwrap().to_owned();
    let indicator = form_encode(&format!("{issuer}/certificate"));
    let too_many_audiences: String = (0..11).map(|i| format!("&audience=broker-{i}")).collect();
    let hundreds_of_resources = format!("&resource={indicator}").repeat(200);
    for extra in [
        "&resource=https%3A%2F%2Fevil.test%2F".to_owned(),
        format!("&resource={indicator}%23x"),
        "&resource=slcs".to_owned(),
        hundreds_of_resources,
        "&audience=nobody-registered".to_owned(),
        too_many_audiences,
    ] {
        let answer = exchange(&server, "wps", &chain.wps, &t1, &extra);
        let description = answer.json()["error_description"].to_string();
        assert_eq!(error(answer), "invalid_target", "{description}");
    }
    // Nothing was issued by any of the refusals.
    assert_eq!(issued_count(&server), before);
    let audit = server.send(
        "GET",
        "/admin/audit?limit=1000",
        &[("Authorization", &admin(&server))],
        None,
    );
    let exchanges = audit
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.exchange")
        .count();
    assert_eq!(exchanges, 1, "only the hand-off was issued");
}

/// Signs `user` in on a fresh browser for the authorization request at
/// `path` and answers its consent page, ticking the delegatees in `tick`
/// only (none: every declared delegatee declined).
pub fn decide_consent(server: &Server, user: &str, path: &str, tick: &[&str]) -> HttpResponse {
    let mut browser = Browser::new(server);
    let start = browser.get(path);
    let login = browser.follow(&start);
    let signed_in = browser.sign_in(&login, user, crate::people::PASSWORD);
    let consent = browser.follow(&signed_in);
    let html = html_of(&consent);
    let csrf = crate::people::hidden(&html, "csrf_token");
    let request = crate::people::hidden(&html, "request");
    let ticks: Vec<String> = tick.iter().map(|d| format!("delegatee.{d}")).collect();
    let mut form = vec![
        ("csrf_token", csrf.as_str()),
        ("request", request.as_str()),
        ("decision", "approve"),
    ];
    form.extend(ticks.iter().map(|t| (t.as_str(), "on")));
    let back = browser.post("/authorize/consent", &form);
    assert_eq!(back.status, 303, "{}", back.text());
    back
}

/// An approval of W counts only for the person who gave it and under the
/// root client it was given to: Bob approving W under the portal, or Alice
/// approving W under another portal, does not let W receive Alice's token
/// from the portal. And `act`/`may_act` sent as request parameters mean
/// nothing: the chain comes from the signed subject token and the
/// authenticated caller only.
#[test]
fn tx_05_an_approval_of_another_user_or_root_client_is_no_approval_and_act_in_a_request_is_ignored()
{
    let (_work, server, chain) = chain_world();
    crate::people::add_user(
        &server,
        json!({"username": "bob", "display_name": "Bob Jones", "password": crate::people::PASSWORD}),
    );
    registered(
        &server,
        &json!({
            "client": {
                "clientId": "portal-2",
                "name": "Another Portal",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": [PORTAL_CB],
                "defaultClientScopes": ["openid", "slcs:certificate"]
            },
            "slcs": { "delegatees": ["wps"], "tokenExchangeEnabled": true }
        }),
    );
    let (_, challenge) = pkce();
    let portal_path = authorize_path("openid slcs:certificate", &challenge, "");
    let portal_2_path = portal_path.replace("client_id=portal&", "client_id=portal-2&");
    // Bob approves W under the portal; Alice approves W under portal-2.
    decide_consent(
        &server,
        "bob",
        &portal_path,
        &["wps", "broker-a", "broker-b"],
    );
    decide_consent(&server, "alice", &portal_2_path, &["wps"]);
    // Alice approves the portal itself but declines every delegatee.
    let (verifier, challenge) = pkce();
    let back = decide_consent(
        &server,
        "alice",
        &authorize_path("openid slcs:certificate", &challenge, ""),
        &[],
    );
    let code = query_of(back.header("location").unwrap())["code"].clone();
    let t0 = token_of(&redeem(&server, &chain.portal, &code, &verifier));
    let before = issued_count(&server);
    let refused = exchange(&server, "portal", &chain.portal, &t0, "&audience=wps");
    assert_eq!(
        refused.json()["error"],
        "invalid_target",
        "{}",
        refused.text()
    );
    assert_eq!(issued_count(&server), before);

    // With Alice's own approval of W under the portal, the same hand-off
    // works; parameters that try to name the chain are ignored.
    let mut browser = Browser::new(&server);
    let (verifier, challenge) = pkce();
    let consent = crate::people::sign_in_for(
        &mut browser,
        &authorize_path("openid slcs:certificate", &challenge, "&prompt=consent"),
    );
    let back = crate::people::approve_all(&mut browser, &consent);
    let code = query_of(back.header("location").unwrap())["code"].clone();
    let t0 = token_of(&redeem(&server, &chain.portal, &code, &verifier));
    let t1 = hand_off(&server, &chain, &t0);
    let forged = form_encode(r#"{"sub":"broker-b","act":{"sub":"portal-2"}}"#);
    let t2 = token_of(&exchange(
        &server,
        "wps",
        &chain.wps,
        &t1,
        &format!("&act={forged}&may_act={forged}"),
    ));
    let c2 = claims_of(&t2);
    assert_eq!(c2["act"], json!({"sub": "wps", "act": {"sub": "portal"}}));
    assert!(c2.get("may_act").is_none(), "{c2}");
}

/// `token` with its claims changed by `edit`, signed again with the
/// server's own signing key (read from its data directory, as only an
/// insider could): what a bug in our own minting could produce.
fn resigned(server: &Server, token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut body = claims_of(token);
    edit(&mut body);
    forge(server, &body)
}

#[test]
fn tx_09_a_malformed_act_is_refused_and_a_foreign_act_never_copied() {
    let (_work, server, chain) = chain_world();
    let mut browser = Browser::new(&server);
    let t0 = portal_token(&server, &chain, &mut browser);
    let t1 = hand_off(&server, &chain, &t0);
    // The unedited re-signed token is accepted: the refusals below are
    // about `act`, not about the re-signing.
    let same = resigned(&server, &t1, |_| {});
    assert_eq!(
        exchange(&server, "wps", &chain.wps, &same, "").status,
        200,
        "control"
    );
    let before = issued_count(&server);
    for bad in [
        json!("broker"),
        json!(["broker"]),
        json!({"sub": 1}),
        json!({"sub": ""}),
        json!({"sub": "portal", "act": "origin"}),
        // The current actor must be the token's own client.
        json!({"sub": "origin"}),
    ] {
        let forged = resigned(&server, &t1, |c| c["act"] = bad.clone());
        let answer = exchange(&server, "wps", &chain.wps, &forged, "");
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text());
        assert_eq!(answer.json()["error"], "invalid_request", "{bad}");
    }
    assert_eq!(issued_count(&server), before);

    // Members other than `sub` and `act` inside `act` mean nothing (RFC
    // 8693 §4.1): they do not invalidate the token and are never carried
    // into the one minted from it.
    let noisy = resigned(&server, &t1, |c| {
        c["act"] = json!({
            "sub": "portal", "exp": 1, "aud": "x", "scope": "everything",
            "act": {"sub": "origin", "nbf": 5}
        });
    });
    let minted = token_of(&exchange(&server, "wps", &chain.wps, &noisy, ""));
    assert_eq!(
        claims_of(&minted)["act"],
        json!({"sub": "wps", "act": {"sub": "portal", "act": {"sub": "origin"}}})
    );
}

#[test]
fn tx_05_tx_06_tx_08_unapproved_revoked_and_too_deep_chains_get_nothing() {
    let (work, server, chain) = chain_world();
    let data = work.path().join("data");

    // TX-05: Alice unticks broker-b on the consent page.
    let mut browser = Browser::new(&server);
    let (verifier, challenge) = pkce();
    let consent = crate::people::sign_in_for(
        &mut browser,
        &authorize_path("openid slcs:certificate", &challenge, ""),
    );
    let html = consent.text();
    let csrf = crate::people::hidden(&html, "csrf_token");
    let request = crate::people::hidden(&html, "request");
    let back = browser.post(
        "/authorize/consent",
        &[
            ("csrf_token", &csrf),
            ("request", &request),
            ("decision", "approve"),
            ("delegatee.wps", "on"),
            ("delegatee.broker-a", "on"),
        ],
    );
    let code = query_of(back.header("location").unwrap())["code"].clone();
    let t0 = token_of(&redeem(&server, &chain.portal, &code, &verifier));
    let t1 = hand_off(&server, &chain, &t0);
    let t2 = token_of(&exchange(&server, "wps", &chain.wps, &t1, ""));
    let refused = exchange(
        &server,
        "wps",
        &chain.wps,
        &t2,
        "&audience=broker-a&audience=broker-b",
    );
    assert_eq!(
        refused.json()["error"],
        "invalid_target",
        "{}",
        refused.text()
    );
    let t3 = token_of(&exchange(
        &server,
        "wps",
        &chain.wps,
        &t2,
        "&audience=broker-a",
    ));
    let granted = certificate(&server, &t3, Some(("broker-a", &chain.broker_a)));
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert_eq!(
        certificate(&server, &t3, Some(("broker-b", &chain.broker_b))).status,
        401,
        "broker-b was declined"
    );

    // TX-08: a second actor below W is two hops: fine under the default
    // cap of three. With the server's cap lowered to one hop, P → W still
    // works and the same exchange by the broker is refused.
    let t4 = token_of(&exchange(&server, "broker-a", &chain.broker_a, &t3, ""));
    assert_eq!(
        claims_of(&t4)["act"],
        json!({"sub": "broker-a", "act": {"sub": "wps", "act": {"sub": "portal"}}})
    );
    drop(browser);
    assert!(server.terminate().success());
    let server = Server::start(&data, &[("SLCS_DELEGATION_MAX_DEPTH", "1")]);
    let mut browser = Browser::new(&server);
    let t0 = portal_token(&server, &chain, &mut browser);
    let [_, t2, t3] = walk_chain(&server, &chain, &t0, "&audience=broker-a");
    let too_deep = exchange(&server, "broker-a", &chain.broker_a, &t3, "");
    assert_eq!(
        too_deep.json()["error"],
        "invalid_request",
        "{}",
        too_deep.text()
    );
    assert!(too_deep.text().contains("deep"), "{}", too_deep.text());
    let granted = certificate(&server, &t3, Some(("broker-a", &chain.broker_a)));
    assert_eq!(granted.status, 200, "{}", granted.text());

    // TX-06: Alice revokes the approval mid-chain: W can exchange no more,
    // the broker's token is dead at the certificate endpoint and at
    // introspection, the broker's certificate is marked revoked.
    let account = browser.get("/account");
    let html = html_of(&account);
    let csrf = crate::people::hidden(&html, "csrf_token");
    let path = crate::people::approval_link(&html, "revoke");
    // Her activity lists the broker's certificate among the events.
    let serial = inspect_json(&granted.text())["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        html.contains(&format!("Certificate {serial} issued to broker-a")),
        "{html}"
    );
    assert_eq!(browser.post(&path, &[("csrf_token", &csrf)]).status, 200);
    assert_eq!(
        exchange(&server, "wps", &chain.wps, &t2, "&audience=broker-a").json()["error"],
        "invalid_grant"
    );
    assert_eq!(
        certificate(&server, &t3, Some(("broker-a", &chain.broker_a))).status,
        401
    );
    assert!(!introspect_active(&server, "wps", &chain.wps, &t2));
    let (status, answer) = crate::people::certificate_status(&server, &serial);
    assert_eq!(status, "revoked", "{answer}");
}

/// Suspending a client revokes what it had a hand in, downstream: its
/// exchanged tokens stop working and the certificates naming it (as actor
/// here) are marked revoked; the portal's own certificate, upstream of it,
/// is not.
#[test]
fn suspending_a_delegatee_revokes_its_chain_but_nothing_upstream() {
    let (_work, server, chain) = chain_world();
    let mut browser = Browser::new(&server);
    let t0 = portal_token(&server, &chain, &mut browser);
    let [_, _, t3] = walk_chain(&server, &chain, &t0, "&audience=broker-a");
    let broker = certificate(&server, &t3, Some(("broker-a", &chain.broker_a)));
    assert_eq!(broker.status, 200, "{}", broker.text());
    let portal = certificate(&server, &t0, None);
    assert_eq!(portal.status, 200, "{}", portal.text());

    let suspended = server.send(
        "PUT",
        "/rest/v1/oidc/clients/wps/status",
        &[("Authorization", &admin(&server))],
        Some((
            "application/json",
            r#"{"status": "suspended", "reason": "compromised"}"#,
        )),
    );
    assert!(suspended.status < 300, "{}", suspended.text());

    let status_of = |pem: &str| {
        let serial = inspect_json(pem)["serial"].as_str().unwrap().to_owned();
        server
            .send(
                "GET",
                &format!("/certificate/status/{serial}"),
                &[("Authorization", &admin(&server))],
                None,
            )
            .json()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status_of(&broker.text()), "revoked");
    assert_eq!(status_of(&portal.text()), "good", "upstream untouched");
    assert_eq!(
        certificate(&server, &t3, Some(("broker-a", &chain.broker_a))).status,
        401,
        "a token of the suspended client yields nothing"
    );
    assert!(introspect_active(&server, "portal", &chain.portal, &t0));
}

/// The checkboxes of an approval's edit page: (field, client or "", scope).
fn edit_choices(html: &str) -> Vec<(String, String, String)> {
    let mut choices = Vec::new();
    let mut client = String::new();
    for piece in html.split("<li>").skip(1) {
        if let Some(strong) = piece.find("</strong> <code>") {
            let rest = &piece[strong + "</strong> <code>".len()..];
            client = rest[..rest.find('<').unwrap()].to_owned();
        } else {
            client.clear();
        }
        for (at, _) in piece.match_indices("type=\"checkbox\" id=\"") {
            let rest = &piece[at + "type=\"checkbox\" id=\"".len()..];
            let field = rest[..rest.find('"').unwrap()].to_owned();
            let code = &rest[rest.find("<code>").unwrap() + "<code>".len()..];
            let scope = code[..code.find('<').unwrap()].to_owned();
            choices.push((field, client.clone(), scope));
        }
    }
    choices
}

/// On her account page Alice narrows her approval of the portal (no
/// `openid`, no broker A) and extends it; a stale form changes nothing;
/// refreshes and exchanges carry only what she kept. Then she revokes
/// every approval at once, which wants her password.
#[test]
fn an_approval_is_narrowed_and_extended_on_the_account_page_and_all_revoked_with_the_password() {
    let (_work, server, chain) = chain_world();
    let mut browser = Browser::new(&server);
    let tokens = crate::people::offline_tokens(&server, &chain.portal, &mut browser);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let refresh_token = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let t0 = token_of(&tokens);
    let [_, t2, _] = walk_chain(&server, &chain, &t0, "&audience=broker-a");

    let account = html_of(&browser.get("/account"));
    let edit_path = crate::people::approval_link(&account, "edit");
    let page = browser.get(&edit_path);
    assert_eq!(page.status, 200, "{}", page.text());
    let html = html_of(&page);
    let choices = edit_choices(&html);
    let scopes: Vec<&str> = choices
        .iter()
        .filter(|(_, client, _)| client.is_empty())
        .map(|(_, _, scope)| scope.as_str())
        .collect();
    assert_eq!(scopes, ["offline_access", "openid", "slcs:certificate"]);
    for client in ["wps", "broker-a", "broker-b"] {
        assert!(
            choices.iter().any(|(_, c, _)| c == client),
            "{client}: {choices:?}"
        );
    }
    let csrf = crate::people::hidden(&html, "csrf_token");
    let version = crate::people::hidden(&html, "version");
    let keep: Vec<&str> = choices
        .iter()
        .filter(|(_, client, scope)| client != "broker-a" && scope != "openid")
        .map(|(field, _, _)| field.as_str())
        .collect();
    let post = |browser: &mut Browser<'_>, action: &str, version: &str, fields: &[&str]| {
        let mut form = vec![
            ("csrf_token", csrf.as_str()),
            ("action", action),
            ("version", version),
        ];
        form.extend(fields.iter().map(|f| (*f, "on")));
        browser.post(&edit_path, &form)
    };

    // A form from before a change, or one keeping nothing, changes nothing.
    assert_eq!(post(&mut browser, "narrow", "1", &keep).status, 409);
    assert_eq!(post(&mut browser, "narrow", &version, &[]).status, 400);
    let forged = browser.post(
        &edit_path,
        &[
            ("csrf_token", "forged"),
            ("action", "extend"),
            ("version", &version),
        ],
    );
    assert_eq!(forged.status, 403);
    let still = exchange(&server, "wps", &chain.wps, &t2, "&audience=broker-a");
    assert_eq!(still.status, 200, "unchanged so far: {}", still.text());

    let narrowed = post(&mut browser, "narrow", &version, &keep);
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    let refused = exchange(&server, "wps", &chain.wps, &t2, "&audience=broker-a");
    assert_eq!(
        refused.json()["error"],
        "invalid_target",
        "{}",
        refused.text()
    );
    let allowed = exchange(&server, "wps", &chain.wps, &t2, "&audience=broker-b");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let refreshed = crate::people::refresh(&server, &chain.portal, &refresh_token);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let scope = refreshed.json()["scope"].as_str().unwrap().to_owned();
    assert!(!scope.split(' ').any(|s| s == "openid"), "{scope}");
    assert!(scope.contains("slcs:certificate"), "{scope}");
    let refresh_token = refreshed.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Extending: the page's version moved on with the narrowing.
    let html = html_of(&browser.get(&edit_path));
    assert!(!html.contains("broker-a"), "{html}");
    let version = crate::people::hidden(&html, "version");
    let extended = post(&mut browser, "extend", &version, &[]);
    assert_eq!(extended.status, 200, "{}", extended.text());
    let actions = crate::people::audit_actions(&server);
    for action in ["approval.narrow", "approval.extend"] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action}: {actions:?}"
        );
    }

    // Revoke all: the password again, or nothing happens.
    let page = browser.get("/account/approvals/revoke-all");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Climate Portal"));
    let csrf = crate::people::hidden(&page.text(), "csrf_token");
    let wrong = browser.post(
        "/account/approvals/revoke-all",
        &[("csrf_token", &csrf), ("password", "not the password")],
    );
    assert_eq!(wrong.status, 401);
    let refreshed = crate::people::refresh(&server, &chain.portal, &refresh_token);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let refresh_token = refreshed.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = browser.post(
        "/account/approvals/revoke-all",
        &[("csrf_token", &csrf), ("password", crate::people::PASSWORD)],
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(
        done.text().contains("1 approval revoked"),
        "{}",
        done.text()
    );
    let dead = crate::people::refresh(&server, &chain.portal, &refresh_token);
    assert_eq!(dead.json()["error"], "invalid_grant", "{}", dead.text());
    assert_eq!(browser.get(&edit_path).status, 404);
}

/// ATTACKS ROB-10: a hundred times, Alice revokes her approval of the
/// portal on her account page while W keeps exchanging the portal's
/// hand-off and keeps asking for certificates, and broker B keeps asking
/// for certificates with W's shared token. Once the revocation has
/// answered 200, no certificate of that approval is good (each one either
/// was never released or is revoked: slcs checks the token and approval
/// again after the certificate is durably recorded, and refuses to hand
/// out one whose grant was revoked meanwhile), no request made after the
/// 200 gets a token or a certificate, and every token obtained during the
/// race is inactive.
#[test]
fn rob_10_revocation_racing_exchanges_and_certificates_leaves_nothing_live() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let work = tempfile::tempdir().unwrap();
    // Hundreds of requests a second from one address and client.
    let server = Server::start(
        &work.path().join("data"),
        &[
            ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
            ("SLCS_SERVER_RATE_PER_CLIENT", "0"),
        ],
    );
    let chain = register_chain(&server);
    alice(&server);
    let mut browser = Browser::new(&server);
    let (mut certificates, mut tokens, mut after_revocation) = (0, 0, 0);
    for iteration in 0..100 {
        let t0 = portal_token(&server, &chain, &mut browser);
        let [t1, t2, t3] = walk_chain(&server, &chain, &t0, "&audience=broker-b");
        let account = html_of(&browser.get("/account"));
        let revoke_path = crate::people::approval_link(&account, "revoke");
        let confirm = html_of(&browser.get(&revoke_path));
        let csrf = crate::people::hidden(&confirm, "csrf_token");

        let revoked_at: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
        let done = AtomicBool::new(false);
        // Each racer: (started, status, serial or token) per request.
        type Outcome = (Instant, u16, Option<String>);
        let race = |work: &dyn Fn() -> Outcome| {
            let mut outcomes = Vec::new();
            // Throughout the revocation, and once more after its 200.
            for _ in 0..5000 {
                let after = done.load(Ordering::SeqCst);
                outcomes.push(work());
                if after {
                    break;
                }
            }
            outcomes
        };
        let certificate_of = |token: &str, presenter: Option<(&str, &str)>| {
            let started = Instant::now();
            let answer = certificate(&server, token, presenter);
            let serial = answer.header("slcs-serial").map(str::to_owned);
            (started, answer.status, serial)
        };
        let (race, certificate_of) = (&race, &certificate_of);
        let (server, chain, t1, t2, t3) = (&server, &chain, &t1, &t2, &t3);
        let (exchanged, certified) = std::thread::scope(|scope| {
            let exchanges = scope.spawn(move || {
                race(&|| {
                    let started = Instant::now();
                    let answer = exchange(server, "wps", &chain.wps, t1, "");
                    let token = (answer.status == 200).then(|| token_of(&answer));
                    (started, answer.status, token)
                })
            });
            // Three certificate requests at a time from each of W and B.
            let certifiers: Vec<_> = (0..6)
                .map(|i| {
                    scope.spawn(move || {
                        if i % 2 == 0 {
                            race(&|| certificate_of(t2, None))
                        } else {
                            race(&|| certificate_of(t3, Some(("broker-b", &chain.broker_b))))
                        }
                    })
                })
                .collect();
            // Let the racers get going, then revoke.
            std::thread::sleep(std::time::Duration::from_millis(5 * (iteration % 4)));
            let answer = browser.post(&revoke_path, &[("csrf_token", &csrf)]);
            assert_eq!(answer.status, 200, "{}", answer.text());
            *revoked_at.lock().unwrap() = Some(Instant::now());
            done.store(true, Ordering::SeqCst);
            (
                exchanges.join().unwrap(),
                certifiers
                    .into_iter()
                    .flat_map(|c| c.join().unwrap())
                    .collect::<Vec<_>>(),
            )
        });
        let revoked_at = revoked_at.lock().unwrap().unwrap();
        for (started, status, token) in &exchanged {
            if *started > revoked_at {
                after_revocation += 1;
                assert_ne!(*status, 200, "an exchange after the revocation succeeded");
            }
            if let Some(token) = token {
                tokens += 1;
                assert!(
                    !introspect_active(server, "wps", &chain.wps, token),
                    "a token of the revoked approval is active"
                );
            }
        }
        for (started, status, serial) in &certified {
            if *started > revoked_at {
                after_revocation += 1;
                assert_ne!(
                    *status, 200,
                    "a certificate request after the revocation succeeded"
                );
            }
            if let Some(serial) = serial {
                certificates += 1;
                let (status, answer) = crate::people::certificate_status(server, serial);
                assert_eq!(
                    status, "revoked",
                    "iteration {iteration}: certificate {serial} of the revoked approval is {answer}"
                );
            }
        }
    }
    println!(
        "{certificates} certificates and {tokens} tokens obtained during the races, all dead; {after_revocation} requests after a revocation, all refused"
    );
}

/// ATTACKS ROB-10, with the race held open: a certificate request for an
/// RSA-4096 key passes its token and approval checks, then spends about a
/// second in the key checks (the profile asks for 100 000 Fermat rounds);
/// meanwhile Alice revokes her approval and gets her 200, before the
/// request's intent is in the issuance log for the cascade to find. The
/// request must not come back with a good certificate: slcs checks the
/// token and the approval again once the certificate is durably recorded,
/// revokes it, and answers 401 `invalid_token`. (Before that re-check this
/// request got a certificate whose status stayed `good`.) A loaded machine
/// can fail to set the race up (the revocation slower than the key
/// checks); the scenario is then repeated with a fresh approval.
#[test]
fn rob_10_a_certificate_signed_while_its_approval_is_revoked_is_not_released() {
    use std::time::{Duration, Instant};
    let work = tempfile::tempdir().unwrap();
    let profile = slcs::pki::profile::BUILTIN_PROFILE
        .replace("fermat_rounds = 100\n", "fermat_rounds = 100000\n");
    assert!(profile.contains("fermat_rounds = 100000"));
    let profile_path = work.path().join("profile.toml");
    std::fs::write(&profile_path, profile).unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[("SLCS_CA_PROFILE", profile_path.to_str().unwrap())],
    );
    let chain = register_chain(&server);
    alice(&server);
    let mut browser = Browser::new(&server);
    let csr = crate::openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:4096",
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        "/CN=ignored",
    ]);
    for attempt in 1..=3 {
        let t0 = portal_token(&server, &chain, &mut browser);
        let [_, t2, _] = walk_chain(&server, &chain, &t0, "&audience=broker-b");
        let account = html_of(&browser.get("/account"));
        let revoke_path = crate::people::approval_link(&account, "revoke");
        let confirm = html_of(&browser.get(&revoke_path));
        let csrf = crate::people::hidden(&confirm, "csrf_token");

        let started = Instant::now();
        let ((answer, answered), revoked) = std::thread::scope(|scope| {
            let request = scope.spawn(|| {
                let answer = server.post(
                    "/certificate",
                    &[("Authorization", &format!("Bearer {t2}"))],
                    FORM,
                    &format!("certificate_request={}", form_encode(&csr)),
                );
                (answer, started.elapsed())
            });
            // The request is past its checks and in the key checks.
            std::thread::sleep(Duration::from_millis(100));
            let revoked = browser.post(&revoke_path, &[("csrf_token", &csrf)]);
            assert_eq!(revoked.status, 200, "{}", revoked.text());
            let revoked_at = started.elapsed();
            (request.join().unwrap(), revoked_at)
        });
        if answered < revoked {
            println!(
                "attempt {attempt}: the key checks ended at {answered:?}, before the revocation's 200 at {revoked:?}; again"
            );
            continue;
        }
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert_eq!(answer.json()["error"], "invalid_token");
        // Signed and recorded, never released, and revoked in the log.
        let serial = crate::people::audit_events(&server)
            .iter()
            .rev()
            .find(|e| {
                e["action"] == "certificate.revoke"
                    && e["detail"]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("while it was being issued"))
            })
            .map(|e| e["target"].as_str().unwrap().to_owned())
            .expect("the certificate was recorded, then revoked");
        let (status, answer) = crate::people::certificate_status(&server, &serial);
        assert_eq!(status, "revoked", "{answer}");
        println!("attempt {attempt}: revoked at {revoked:?}, refused at {answered:?}");
        return;
    }
    panic!("the race could not be set up in three attempts");
}
