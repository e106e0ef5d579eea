//! Entries of ATTACKS.md not covered by a larger scenario elsewhere, one
//! small test each (or a few entries that share a set-up).

use base64::Engine as _;
use serde_json::json;

use crate::certificate::{claims_of, forge, post_csr, service_token};
use crate::people::{
    Browser, PORTAL_CB, authorize_path, pkce, portal_world, query_of, redeem, refresh,
};
use crate::token::{register, service_client_json, token_basic};
use crate::{Server, form_encode};

const FORM: &str = "application/x-www-form-urlencoded";

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// AZ-06: only `response_type=code`: the implicit and hybrid types and
/// unknown ones get no token and no code. AZ-10: no CORS on /authorize.
/// AZ-11: the sign-in and consent pages load nothing from elsewhere and
/// send no Referer.
#[test]
fn az_06_az_10_az_11_only_code_no_cors_and_nothing_third_party_on_the_pages() {
    let (_work, server, _, _) = portal_world(&[]);
    let (_, challenge) = pkce();
    for response_type in ["token", "code%20token", "id_token%20token", "foo"] {
        let path = authorize_path("openid", &challenge, "").replace(
            "response_type=code",
            &format!("response_type={response_type}"),
        );
        let answer = Browser::new(&server).get(&path);
        let location = answer.header("location").unwrap_or_default().to_owned();
        assert!(
            !location.contains("code=") && !location.contains("access_token"),
            "{response_type}: {location}"
        );
        if location.starts_with(PORTAL_CB) {
            assert_eq!(
                query_of(&location)["error"],
                "unsupported_response_type",
                "{response_type}"
            );
        } else {
            assert_eq!(answer.status, 400, "{response_type}: {}", answer.text());
        }
    }
    let evil = [("Origin", "https://evil.test")];
    let path = authorize_path("openid", &challenge, "");
    for method in ["GET", "OPTIONS"] {
        let answer = server.send(method, &path, &evil, None);
        assert!(
            answer.header("access-control-allow-origin").is_none(),
            "{method} /authorize"
        );
    }
    let mut browser = Browser::new(&server);
    let start = browser.get(&path);
    let login = browser.follow(&start);
    let signed_in = browser.sign_in(&login, "alice", crate::people::PASSWORD);
    let consent = browser.follow(&signed_in);
    assert_eq!(consent.status, 200);
    for page in [&login, &consent] {
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        let csp = page.header("content-security-policy").unwrap();
        assert!(
            csp.contains("img-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        let html = page.text();
        for external in ["src=\"http", "href=\"http", "src=\"//", "<script"] {
            assert!(!html.contains(external), "{external}: {html}");
        }
    }
}

/// A code for the portal, with its verifier.
fn portal_code(browser: &mut Browser<'_>) -> (String, String) {
    let (verifier, challenge) = pkce();
    (
        crate::people::code_for(browser, "openid slcs:certificate", &challenge),
        verifier,
    )
}

/// CODE-02, CODE-03: a wrong, missing, challenge-valued or malformed
/// verifier gets `invalid_grant`, and spends the code. CODE-07: a code is
/// bound to its client and redirect URI. CA-02: a confidential client
/// that sends only its id is `invalid_client`.
#[test]
fn code_02_code_03_code_07_ca_02_a_code_needs_its_verifier_client_and_redirect_uri() {
    let (_work, server, secret, _) = portal_world(&[]);
    let (wps_created, wps_secret) = (true, {
        // `wps` is registered by the portal world as a service client.
        let (_, s) = register(&server, &service_client_json("wps2"));
        s.unwrap()
    });
    assert!(wps_created);
    let mut browser = Browser::new(&server);
    let redeem_with = |code: &str, verifier: Option<&str>, redirect: Option<&str>, auth: &str| {
        let mut body = format!("grant_type=authorization_code&code={}", form_encode(code));
        if let Some(v) = verifier {
            body.push_str(&format!("&code_verifier={}", form_encode(v)));
        }
        if let Some(r) = redirect {
            body.push_str(&format!("&redirect_uri={}", form_encode(r)));
        }
        server.post("/token", &[("Authorization", auth)], FORM, &body)
    };
    let portal = basic("portal", &secret);
    let bad_verifiers: Vec<Option<String>> = vec![
        Some("a".repeat(43)),
        None,
        Some("b".repeat(42)),
        Some("c".repeat(129)),
        Some(format!("{}+/=", "d".repeat(43))),
        Some(format!("{} é", "e".repeat(43))),
    ];
    for verifier in bad_verifiers {
        let (code, _) = portal_code(&mut browser);
        let answer = redeem_with(&code, verifier.as_deref(), Some(PORTAL_CB), &portal);
        assert_eq!(answer.status, 400, "{verifier:?}: {}", answer.text());
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error == "invalid_grant" || error == "invalid_request",
            "{verifier:?}: {error}"
        );
        assert!(answer.json().get("access_token").is_none());
    }
    // The challenge itself as the verifier (plain-style).
    let (verifier, challenge) = pkce();
    let code = crate::people::code_for(&mut browser, "openid", &challenge);
    let plain = redeem_with(&code, Some(&challenge), Some(PORTAL_CB), &portal);
    assert_eq!(plain.json()["error"], "invalid_grant", "{}", plain.text());
    let _ = verifier;

    // CODE-07: another client, another redirect URI, no redirect URI.
    let (code, verifier) = portal_code(&mut browser);
    let other_client = redeem_with(
        &code,
        Some(&verifier),
        Some(PORTAL_CB),
        &basic("wps2", &wps_secret),
    );
    assert!(
        other_client.status == 400 || other_client.status == 401,
        "{}",
        other_client.text()
    );
    assert!(other_client.json().get("access_token").is_none());
    for redirect in [Some("https://portal.example/other"), None] {
        let (code, verifier) = portal_code(&mut browser);
        let answer = redeem_with(&code, Some(&verifier), redirect, &portal);
        assert_eq!(answer.status, 400, "{redirect:?}: {}", answer.text());
        assert!(answer.json().get("access_token").is_none());
    }

    // CA-02: the portal (confidential) with its id only, in the body.
    let (code, verifier) = portal_code(&mut browser);
    let anonymous = server.post(
        "/token",
        &[],
        FORM,
        &format!(
            "grant_type=authorization_code&client_id=portal&code={}&code_verifier={verifier}&redirect_uri={}",
            form_encode(&code),
            form_encode(PORTAL_CB)
        ),
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(anonymous.json()["error"], "invalid_client");
    // And the code was not spent by that: the portal still redeems it.
    assert_eq!(redeem(&server, &secret, &code, &verifier).status, 200);
}

/// RT-03: a refresh never widens the scope (narrowing is allowed).
/// RT-06: a refresh token is no access token at the resource server, and
/// an access token is no refresh token at the token endpoint. JWT-11: an
/// access token revoked at the AS gets nothing from the resource server
/// at once.
#[test]
fn rt_03_rt_06_jwt_11_refresh_tokens_never_widen_never_pass_as_access_tokens() {
    let (_work, server, secret, _) = portal_world(&[]);
    let mut browser = Browser::new(&server);
    let tokens = crate::people::offline_tokens(&server, &secret, &mut browser);
    let refresh_token = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let access = tokens.json()["access_token"].as_str().unwrap().to_owned();
    let portal = basic("portal", &secret);
    let wider = server.post(
        "/token",
        &[("Authorization", &portal)],
        FORM,
        &format!(
            "grant_type=refresh_token&refresh_token={}&scope={}",
            form_encode(&refresh_token),
            form_encode("openid slcs:certificate email")
        ),
    );
    assert_eq!(wider.json()["error"], "invalid_scope", "{}", wider.text());
    let narrower = server.post(
        "/token",
        &[("Authorization", &portal)],
        FORM,
        &format!(
            "grant_type=refresh_token&refresh_token={}&scope=openid",
            form_encode(&refresh_token)
        ),
    );
    assert_eq!(narrower.status, 200, "{}", narrower.text());
    assert_eq!(narrower.json()["scope"], "openid");
    let refresh_token = narrower.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // RT-06 both ways.
    let as_bearer = post_csr(&server, &refresh_token, "");
    assert_eq!(as_bearer.status, 401, "{}", as_bearer.text());
    assert!(
        as_bearer
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let as_refresh = refresh(&server, &secret, &access);
    assert_eq!(
        as_refresh.json()["error"],
        "invalid_grant",
        "{}",
        as_refresh.text()
    );

    // JWT-11: revoked at /revoke, refused at /certificate straight away.
    assert_eq!(post_csr(&server, &access, "").status, 200);
    let revoked = server.post(
        "/revoke",
        &[("Authorization", &portal)],
        FORM,
        &format!("token={}", form_encode(&access)),
    );
    assert_eq!(revoked.status, 200);
    let refused = post_csr(&server, &access, "");
    assert_eq!(refused.status, 401, "{}", refused.text());
}

/// IR-03: expired, revoked, malformed, forged and never-issued tokens
/// all introspect as the same `{"active":false}`. IR-05: revoking garbage
/// or with an odd hint is 200 and no oracle.
#[test]
fn ir_03_ir_05_inactive_tokens_look_alike_and_revoking_garbage_is_200() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (secret, token) = service_token(&server, "svc");
    let auth = basic("svc", &secret);
    let mut expired = claims_of(&token);
    expired["exp"] = json!(expired["iat"].as_i64().unwrap() - 3600);
    expired["iat"] = json!(expired["iat"].as_i64().unwrap() - 7200);
    expired["jti"] = json!("at_expired_one");
    let expired = forge(&server, &expired);
    let (_, revoked) = service_token(&server, "svc2");
    let (svc2_secret, _) = {
        let (_, s) = register(&server, &service_client_json("svc3"));
        (s.unwrap(), ())
    };
    let _ = svc2_secret;
    let revoke = |token: &str, hint: &str| {
        server.post(
            "/revoke",
            &[("Authorization", &auth)],
            FORM,
            &format!("token={}{hint}", form_encode(token)),
        )
    };
    // A token of another client cannot be revoked by svc (RFC 7009 §2.1),
    // so svc revokes one of its own.
    let (_, own) = {
        let answer = token_basic(&server, "svc", &secret, "grant_type=client_credentials");
        (
            (),
            answer.json()["access_token"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(revoke(&own, "").status, 200);
    let mut bodies = Vec::new();
    for inactive in [
        expired.as_str(),
        own.as_str(),
        "x.y.z",
        "not a token at all",
        &format!("{}x", &token[..token.len() - 1]),
        revoked.as_str(), // another client's live token: not svc's to learn about
    ] {
        let answer = server.post(
            "/introspect",
            &[("Authorization", &auth)],
            FORM,
            &format!("token={}", form_encode(inactive)),
        );
        assert_eq!(answer.status, 200);
        bodies.push(answer.text());
    }
    assert!(
        bodies.iter().all(|b| b == "{\"active\":false}"),
        "{bodies:?}"
    );
    for (garbage, hint) in [
        ("garbage", ""),
        ("garbage", "&token_type_hint=foo"),
        (token.as_str(), "&token_type_hint=refresh_token"),
    ] {
        let answer = revoke(garbage, hint);
        assert_eq!(answer.status, 200, "{garbage} {hint}: {}", answer.text());
        assert!(
            answer.text().is_empty() || answer.text() == "{}",
            "{}",
            answer.text()
        );
    }
    // The hint contradicted the type, and the token was found anyway.
    let after = server.post(
        "/introspect",
        &[("Authorization", &auth)],
        FORM,
        &format!("token={}", form_encode(&token)),
    );
    assert_eq!(after.text(), "{\"active\":false}");
}

/// ROB-03: HTTP/2 is not offered at all (ALPN `http/1.1` only), so its
/// flood attacks have nothing to aim at: a client that speaks only h2
/// cannot negotiate it.
#[test]
fn rob_03_http2_is_not_offered() {
    use std::io::Write as _;
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let connection = crate::client_connection(&server.ca_pem(), &[b"h2"]);
    let tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    // The HTTP/2 connection preface.
    let sent = tls
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .and_then(|()| tls.flush());
    let negotiated = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    assert!(
        sent.is_err() || negotiated.as_deref() != Some(b"h2".as_slice()),
        "h2 was negotiated"
    );
    // And the server still serves HTTP/1.1.
    assert_eq!(server.get("/healthz").status, 200);
}

/// ROB-14: error bodies name no internals: no file path, no source
/// location, no panic, no backend name, no key material.
#[test]
fn rob_14_error_bodies_name_no_internals() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let (_, token) = service_token(&server, "svc");
    let auth = format!("Bearer {token}");
    let admin = crate::token::admin(&server);
    let answers = [
        server.post("/token", &[], FORM, "grant_type=%zz"),
        server.post("/token", &[], "application/json", "{\"grant_type\":"),
        server.post(
            "/certificate",
            &[("Authorization", &auth)],
            FORM,
            "certificate_request=-----BEGIN%20CERTIFICATE%20REQUEST-----%0AMIIB%0A-----END%20CERTIFICATE%20REQUEST-----",
        ),
        server.post(
            "/rest/v1/oidc/clients",
            &[("Authorization", &admin)],
            "application/json",
            "{\"client\": {\"clientId\": [1, 2, {\"deep\": [[[[]]]]}]}}",
        ),
        server.send("GET", "/certificate/status/zz", &[("Authorization", &admin)], None),
        server.send("GET", "/no/such/thing", &[], None),
    ];
    let data_dir = server.data_dir.to_string_lossy().into_owned();
    for answer in &answers {
        assert!(
            answer.status >= 400 && answer.status < 500,
            "{}",
            answer.text()
        );
        let body = answer.text();
        for leak in [
            data_dir.as_str(),
            "src/",
            ".rs:",
            "panicked",
            "sled",
            "backtrace",
            "BEGIN PRIVATE KEY",
            "/root",
            "/home",
        ] {
            assert!(!body.contains(leak), "{leak} in {body}");
        }
    }
}

/// AZ-13: a client gets only the grants it is registered for: a service
/// account cannot start the code flow, a public client cannot use client
/// credentials, and nobody gets the password grant.
#[test]
fn az_13_a_client_gets_only_the_grants_it_is_registered_for() {
    let (_work, server, secret, _) = portal_world(&[]);
    let (created, svc_secret) = register(&server, &service_client_json("svc"));
    assert_eq!(created.status, 201);
    let (_, challenge) = pkce();
    let path =
        authorize_path("openid", &challenge, "").replace("client_id=portal&", "client_id=svc&");
    let answer = Browser::new(&server).get(&path);
    let location = answer.header("location").unwrap_or_default().to_owned();
    assert!(!location.contains("code="), "{location}");
    assert!(
        answer.status == 400 || location.contains("error=unauthorized_client"),
        "{} {location}",
        answer.status
    );
    // The device-flow client of the command line: public.
    crate::people::register_cli_client(&server);
    let spa = server.post(
        "/token",
        &[],
        FORM,
        "grant_type=client_credentials&client_id=slcs-cli",
    );
    assert!(spa.status == 400 || spa.status == 401, "{}", spa.text());
    let error = spa.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error == "unauthorized_client" || error == "invalid_client",
        "{error}"
    );
    assert!(spa.json().get("access_token").is_none());
    for (id, secret) in [
        ("portal", secret.as_str()),
        ("svc", svc_secret.as_deref().unwrap()),
    ] {
        let password = token_basic(
            &server,
            id,
            secret,
            "grant_type=password&username=alice&password=x",
        );
        assert_eq!(password.json()["error"], "unsupported_grant_type", "{id}");
    }
}

/// RP-05 (the slcs endpoint's side): a ClientHello sent a byte at a time,
/// a handshake abandoned with `close_notify`, and a record of garbage
/// neither crash nor busy the server: it goes on serving.
#[test]
fn rp_05_fragmented_and_abandoned_handshakes_leave_the_server_serving() {
    use std::io::{Read as _, Write as _};
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    // A real ClientHello, from rustls, cut into one-byte writes.
    let hello = {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    };
    let mut threads = Vec::new();
    for variant in 0..3 {
        let addr = server.addr;
        let hello = hello.clone();
        threads.push(std::thread::spawn(move || {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(15)))
                .unwrap();
            match variant {
                0 => {
                    for byte in &hello {
                        if tcp.write_all(std::slice::from_ref(byte)).is_err() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
                1 => {
                    let _ = tcp.write_all(&hello);
                    // close_notify, in the clear, in the middle of the handshake.
                    let _ = tcp.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00]);
                }
                _ => {
                    let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]);
                    let _ = tcp.write_all(&[0u8; 512]);
                }
            }
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest);
        }));
    }
    for _ in 0..5 {
        assert_eq!(server.get("/healthz").status, 200);
    }
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(server.get("/healthz").status, 200);
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

/// ROB-12: an oversized `state` is refused at the client's redirect URI
/// and not sent back (a payload is never reflected in full); oversized
/// scope and client_id values are refused before any work.
#[test]
fn rob_12_oversized_parameters_are_refused_and_never_reflected() {
    let (_work, server, _, _) = portal_world(&[]);
    let (_, challenge) = pkce();
    let state = "S".repeat(5000);
    let path =
        authorize_path("openid", &challenge, "").replace("state=st-123", &format!("state={state}"));
    let answer = Browser::new(&server).get(&path);
    assert_eq!(answer.status, 303, "{}", answer.text());
    let location = answer.header("location").unwrap();
    assert!(location.starts_with(PORTAL_CB), "{location}");
    assert_eq!(query_of(location)["error"], "invalid_request");
    assert!(
        !location.contains("SSSS"),
        "the state came back: {} bytes",
        location.len()
    );
    // Huge scope and client_id: refused, and not repeated in full.
    let scope = "s".repeat(10_000);
    let huge_scope = authorize_path(&scope, &challenge, "");
    let answer = server.get(&huge_scope);
    assert!(
        answer.status == 431
            || answer.status == 400
            || answer.status == 414
            || answer.status == 303,
        "{}",
        answer.status
    );
    assert!(!answer.text().contains(&"s".repeat(200)));
    let location = answer.header("location").unwrap_or_default();
    assert!(
        !location.contains(&"s".repeat(200)),
        "{}",
        &location[..location.len().min(300)]
    );
    let client = "c".repeat(10_000);
    let answer = server.get(
        &authorize_path("openid", &challenge, "")
            .replace("client_id=portal", &format!("client_id={client}")),
    );
    assert!(
        answer.status == 400 || answer.status == 431,
        "{}",
        answer.status
    );
    assert!(!answer.text().contains(&"c".repeat(200)));
}

/// CA-06: suspending a delegatee stops, at once, every token exchanged
/// through it: the broker's shared token gets no certificate and
/// introspects as inactive, although it was issued before the
/// suspension and names an active root client.
#[test]
fn ca_06_a_suspended_delegatee_stops_every_token_along_its_chain() {
    use crate::delegation::{
        certificate, introspect_active, portal_token, register_chain, walk_chain,
    };
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let chain = register_chain(&server);
    crate::people::alice(&server);
    let mut browser = Browser::new(&server);
    let t0 = portal_token(&server, &chain, &mut browser);
    let [_, _, t3] = walk_chain(&server, &chain, &t0, "&audience=broker-a");
    assert!(introspect_active(&server, "broker-a", &chain.broker_a, &t3));
    let suspended = server.send(
        "PUT",
        "/rest/v1/oidc/clients/wps/status",
        &[("Authorization", &crate::token::admin(&server))],
        Some((
            "application/json",
            r#"{"status":"suspended","reason":"compromised"}"#,
        )),
    );
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    assert!(!introspect_active(
        &server,
        "broker-a",
        &chain.broker_a,
        &t3
    ));
    let refused = certificate(&server, &t3, Some(("broker-a", &chain.broker_a)));
    assert_eq!(refused.status, 401, "{}", refused.text());
    // Upstream is untouched: the portal's own token still works.
    assert!(introspect_active(&server, "portal", &chain.portal, &t0));
    assert_eq!(post_csr(&server, &t0, "").status, 200);
}

/// CERT-04: a person's certificate never outlives the approval it was
/// issued under: with the approval ending in an hour, the certificate
/// ends within the hour, not at the profile's 12 hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_04_a_certificate_never_outlives_its_approval() {
    use slcs::store::GrantStore as _;
    let (work, server, secret, sub) = portal_world(&[]);
    let data = work.path().join("data");
    let mut browser = Browser::new(&server);
    let (verifier, challenge) = pkce();
    let code = crate::people::code_for(&mut browser, "openid slcs:certificate", &challenge);
    let tokens = redeem(&server, &secret, &code, &verifier);
    let access = tokens.json()["access_token"].as_str().unwrap().to_owned();
    drop(browser);
    assert!(server.terminate().success());

    // The approval now ends in an hour (as if it were 89 days old).
    let ends = crate::now() + time::Duration::hours(1);
    {
        let store = slcs::store::sled::SledStore::open(&slcs::store::sled::SledOptions {
            path: data.join("store"),
            cache_capacity_bytes: 8 << 20,
            mode: slcs::store::sled::OpenMode::MustExist,
            ca_key_sha256: None,
        })
        .unwrap();
        let approval = store.approvals_of(&sub).await.unwrap().pop().unwrap();
        let mut shorter = approval.clone();
        shorter.expires_at = ends;
        store
            .save_approval(Some(&approval), &shorter)
            .await
            .unwrap();
    }
    let server = Server::start(&data, &[]);
    let issued = post_csr(&server, &access, "");
    assert_eq!(issued.status, 200, "{}", issued.text());
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("c.pem");
    std::fs::write(&pem, issued.text()).unwrap();
    let not_after = crate::openssl(&["x509", "-in", pem.to_str().unwrap(), "-noout", "-enddate"]);
    let not_after = not_after.trim().trim_start_matches("notAfter=");
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
    );
    let not_after = time::PrimitiveDateTime::parse(not_after, format)
        .unwrap()
        .assume_utc();
    assert!(
        not_after <= ends,
        "{not_after} is after the approval's end {ends}"
    );
    assert!(not_after > ends - time::Duration::minutes(5), "{not_after}");
}

/// CA-03, IR-07: guessing a client's secret at `/token`, or hammering
/// `/introspect` and `/revoke`, from one address meets the per-address
/// rate limit (429 with `Retry-After`) before any secret is checked; the
/// real client, elsewhere, is not locked out.
#[test]
fn ca_03_ir_07_secret_guessing_and_introspection_floods_are_rate_limited() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        // One a second, bursts of 2: a request would have to take a
        // second for the budget to refill.
        &[("SLCS_SERVER_RATE_PER_ADDRESS", "1")],
    );
    let (_, secret) = register(&server, &service_client_json("svc"));
    let secret = secret.unwrap();
    let guesser = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 66));
    for path in ["/token", "/introspect", "/revoke"] {
        let body = "grant_type=client_credentials&token=x";
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {}\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n\r\n{body}",
            basic("svc", "wrong-guess"),
            body.len()
        );
        let mut limited = false;
        for _ in 0..40 {
            let answer = crate::request_from(guesser, &server, &raw).unwrap();
            if answer.status == 429 {
                assert!(answer.header("retry-after").is_some(), "{path}");
                assert_eq!(answer.json()["error"], "too_many_requests");
                limited = true;
                break;
            }
            assert_eq!(answer.status, 401, "{path}: {}", answer.text());
        }
        assert!(limited, "{path} was never limited");
    }
    let answer = token_basic(&server, "svc", &secret, "grant_type=client_credentials");
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// REG-09: a delegatee's own access rules hold along a chain: a guest
/// signed in through a portal that admits guests cannot be acted for by a
/// service that refuses them, neither by exchange nor as the presenter of
/// a shared token.
#[test]
fn reg_09_a_delegatee_that_refuses_guests_is_not_reached_through_a_portal() {
    use crate::delegation::{certificate, decide_consent, exchange, registered, token_of};
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let wps = registered(
        &server,
        &json!({
            "client": {"clientId": "wps", "name": "Processing service",
                       "serviceAccountsEnabled": true, "defaultClientScopes": ["slcs:certificate"]},
            "slcs": {"tokenExchangeEnabled": true}
        }),
    );
    let portal = registered(
        &server,
        &json!({
            "client": {"clientId": "portal", "name": "Open Portal", "standardFlowEnabled": true,
                       "consentRequired": true, "redirectUris": [PORTAL_CB],
                       "defaultClientScopes": ["openid", "slcs:certificate"]},
            "accessDeniedToGuests": false,
            "slcs": {"delegatees": ["wps"], "tokenExchangeEnabled": true}
        }),
    );
    crate::people::add_user(
        &server,
        json!({"username": "gus", "display_name": "Gus", "guest": true, "password": crate::people::PASSWORD}),
    );
    let (verifier, challenge) = pkce();
    let back = decide_consent(
        &server,
        "gus",
        &authorize_path("openid slcs:certificate", &challenge, ""),
        &["wps"],
    );
    let code = query_of(back.header("location").unwrap())["code"].clone();
    let t0 = token_of(&redeem(&server, &portal, &code, &verifier));
    // The portal admits guests: its own certificate and hand-off work.
    assert_eq!(post_csr(&server, &t0, "").status, 200);
    let t1 = token_of(&exchange(&server, "portal", &portal, &t0, "&audience=wps"));
    // The service refuses guests: it cannot take over, nor present.
    let taken = exchange(&server, "wps", &wps, &t1, "");
    assert_eq!(taken.status, 400, "{}", taken.text());
    assert_eq!(taken.json()["error"], "invalid_grant");
    let presented = certificate(&server, &t1, Some(("wps", &wps)));
    assert_eq!(presented.status, 403, "{}", presented.text());
}

/// ATTACKS REG-03: people register clients with an access token for the
/// registration API only as members of `oauth.registration_group` (here
/// the default, `service-providers`) and not as guests. A member's
/// registration is accepted (and waits, `pending`, for an administrator);
/// a person outside the group and a guest in it get 403 `access_denied`,
/// an anonymous caller 401, and nothing is created for them.
#[test]
fn reg_03_only_service_providers_register_clients() {
    use crate::delegation::{decide_consent, registered, token_of};
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let portal = registered(
        &server,
        &json!({
            "client": {"clientId": "portal", "name": "Developer Portal", "standardFlowEnabled": true,
                       "consentRequired": true, "redirectUris": [PORTAL_CB],
                       "defaultClientScopes": ["openid"], "optionalClientScopes": ["slcs:clients"]},
            "accessDeniedToGuests": false
        }),
    );
    let people = [
        ("paula", json!(["service-providers"]), false),
        ("otto", json!(["climate"]), false),
        ("gus", json!(["service-providers"]), true),
    ];
    for (username, groups, guest) in &people {
        crate::people::add_user(
            &server,
            json!({"username": username, "display_name": username, "groups": groups,
                   "guest": guest, "password": crate::people::PASSWORD}),
        );
    }
    let issuer = server.get("/.well-known/oauth-authorization-server").json()["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    let resource = format!(
        "&resource={}",
        form_encode(&format!("{issuer}/rest/v1/oidc/clients"))
    );
    let register_as = |username: &str| {
        let (verifier, challenge) = pkce();
        let back = decide_consent(
            &server,
            username,
            &authorize_path("slcs:clients", &challenge, &resource),
            &[],
        );
        let code = query_of(back.header("location").unwrap())["code"].clone();
        let token = token_of(&redeem(&server, &portal, &code, &verifier));
        let mut body = service_client_json(&format!("svc-{username}"));
        body["client"]["name"] = json!(format!("Service of {username}"));
        server.post(
            "/rest/v1/oidc/clients",
            &[("Authorization", &format!("Bearer {token}"))],
            "application/json",
            &body.to_string(),
        )
    };
    let accepted = register_as("paula");
    assert_eq!(accepted.status, 201, "{}", accepted.text());
    assert_eq!(accepted.json()["slcs"]["status"], "pending");
    for (username, why) in [("otto", "service-providers"), ("gus", "guest")] {
        let refused = register_as(username);
        assert_eq!(refused.status, 403, "{username}: {}", refused.text());
        assert_eq!(refused.json()["error"], "access_denied");
        assert!(refused.text().contains(why), "{}", refused.text());
    }
    let anonymous = server.post(
        "/rest/v1/oidc/clients",
        &[],
        "application/json",
        &service_client_json("svc-anon").to_string(),
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    // Only Paula's client exists.
    let listed = server.send(
        "GET",
        "/rest/v1/oidc/clients",
        &[("Authorization", &crate::token::admin(&server))],
        None,
    );
    let ids: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clientId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["portal", "svc-paula"]);
}

/// ATTACKS CODE-05: a portal that sends the same PKCE challenge in every
/// authorization request still gets its codes (each redeemed with the
/// verifier), but from the second one on each repeat is in the audit log
/// as `authorize.pkce_repeated` (and in the server's log), naming the
/// client; a fresh challenge adds nothing.
#[test]
fn code_05_repeated_pkce_challenges_are_accepted_and_logged() {
    let (_work, server, secret, sub) = portal_world(&[]);
    let mut browser = Browser::new(&server);
    let repeated = |server: &Server| {
        crate::people::audit_events(server)
            .into_iter()
            .filter(|e| e["action"] == "authorize.pkce_repeated")
            .collect::<Vec<_>>()
    };
    let (verifier, challenge) = pkce();
    for round in 0..3 {
        let code = crate::people::code_for(&mut browser, "openid slcs:certificate", &challenge);
        let tokens = redeem(&server, &secret, &code, &verifier);
        assert_eq!(tokens.status, 200, "round {round}: {}", tokens.text());
        assert_eq!(repeated(&server).len(), round, "round {round}");
    }
    let events = repeated(&server);
    assert!(events.iter().all(|e| e["actor"] == "client:portal"
        && e["target"] == "portal"
        && e["detail"]["sub"] == sub.as_str()
        && e["detail"]["code_challenge"] == challenge.as_str()));
    let (code, fresh_verifier) = portal_code(&mut browser);
    assert_eq!(redeem(&server, &secret, &code, &fresh_verifier).status, 200);
    assert_eq!(repeated(&server).len(), 2, "a fresh challenge is no repeat");
    let log = std::fs::read_to_string(&server.stderr_path).unwrap();
    assert!(log.contains("PKCE challenge repeated"), "{log}");
}
