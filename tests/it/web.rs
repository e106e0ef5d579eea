//! The WEB entries of ATTACKS.md not already named elsewhere (WEB-01, 03,
//! 05, 08, 09 and 13 are in people.rs; WEB-04 in browser.rs): CSRF on every
//! form of the account pages and the admin console (WEB-02), the security
//! headers of every page and error (WEB-07), what the consent page says
//! (WEB-11), and a stored approval covering exactly what it approved
//! (WEB-12).

use serde_json::json;

use crate::console::{admin_browser, make_admin};
use crate::people::{
    Browser, PASSWORD, PORTAL_CB, alice, approval_link, audit_actions, authorize, authorize_path,
    hidden, html_of, pkce, portal_world, redeem, refresh, signed_in,
};
use crate::token::{admin, register};
use crate::{HttpResponse, Server, form_encode};

/// Posts `form` to `path` with the browser's cookies but the given
/// content type, as a cross-site page could.
fn post_as(browser: &Browser<'_>, path: &str, content_type: &str, body: &str) -> HttpResponse {
    let cookie = browser
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    browser
        .server
        .post(path, &[("Cookie", &cookie)], content_type, body)
}

/// WEB-02: every state-changing form of the account pages and the console
/// refuses a post without this session's CSRF token (none, another
/// session's, or smuggled in a `text/plain` body), and nothing changes.
#[test]
fn web_02_every_account_and_console_form_wants_this_sessions_csrf_token() {
    let (_work, server, secret, _) = portal_world(&[]);
    let totp = make_admin(&server, "olga");
    let mut alice_browser = Browser::new(&server);
    let (verifier, challenge) = pkce();
    let code = crate::people::code_for(
        &mut alice_browser,
        "openid offline_access slcs:certificate",
        &challenge,
    );
    let tokens = redeem(&server, &secret, &code, &verifier);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let refresh_token = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let account = html_of(&alice_browser.get("/account"));
    let revoke = approval_link(&account, "revoke");
    let edit = approval_link(&account, "edit");
    let edit_page = html_of(&alice_browser.get(&edit));
    let version = hidden(&edit_page, "version");
    // A token that is valid, but for another session: the attacker's own.
    let mut attacker = signed_in(&server, "olga", PASSWORD);
    let foreign = hidden(&attacker.get("/account").text(), "csrf_token");
    let mut olga = admin_browser(&server, "olga", &totp);

    let before = audit_actions(&server).len();
    let alice_forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (revoke.as_str(), vec![]),
        (
            edit.as_str(),
            vec![("action", "extend"), ("version", version.as_str())],
        ),
        (
            "/account/approvals/revoke-all",
            vec![("password", PASSWORD)],
        ),
        ("/account/sessions/end-others", vec![]),
        (
            "/account/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", "a hijacked password"),
                ("repeat_password", "a hijacked password"),
            ],
        ),
        ("/logout", vec![]),
    ];
    let console_forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/admin/clients/portal/status",
            vec![("status", "suspended"), ("reason", "csrf")],
        ),
        ("/admin/people/alice", vec![("action", "disable")]),
        ("/admin/people/alice", vec![("action", "reset-link")]),
    ];
    for (browser, forms) in [
        (&mut alice_browser, alice_forms),
        (&mut olga, console_forms),
    ] {
        for (path, fields) in forms {
            for token in [None, Some(foreign.as_str())] {
                let mut form = fields.clone();
                if let Some(token) = token {
                    form.push(("csrf_token", token));
                }
                let answer = browser.post(path, &form);
                assert_eq!(answer.status, 403, "{path} {token:?}: {}", answer.text());
                assert!(answer.text().contains("not sent by this site"), "{path}");
            }
            // The `fetch` trick: a text/plain body dodges CORS preflight
            // but is no form this site reads.
            let body = fields
                .iter()
                .map(|(k, v)| format!("{k}={}", form_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let smuggled = post_as(browser, path, "text/plain", &body);
            assert!(
                smuggled.status == 400 || smuggled.status == 415 || smuggled.status == 403,
                "{path}: {} {}",
                smuggled.status,
                smuggled.text()
            );
        }
    }
    // Nothing happened: no audit event, the approval and sessions live,
    // the password unchanged, the portal unsuspended, Alice enabled.
    assert_eq!(audit_actions(&server).len(), before, "nothing audited");
    assert_eq!(alice_browser.get("/account").status, 200, "still signed in");
    let refreshed = refresh(&server, &secret, &refresh_token);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    assert_eq!(attacker.get("/account").status, 200);
    let mut again = Browser::new(&server);
    let login = again.get("/login");
    assert_eq!(again.sign_in(&login, "alice", PASSWORD).status, 303);
    // And the second factor's form, for a session without one yet.
    let mut second = signed_in(&server, "olga", PASSWORD);
    let code = crate::console::totp_code(&totp, 1);
    assert_eq!(
        second
            .post(
                "/admin/verify",
                &[("code", &code), ("csrf_token", &foreign)]
            )
            .status,
        403
    );
    assert_eq!(second.get("/admin").status, 303, "still no second factor");
}

/// The headers WEB-07 asks of every response, and the page ones of every
/// HTML page, error pages and redirects included.
fn assert_security_headers(what: &str, response: &HttpResponse) {
    let header = |name: &str| {
        response
            .header(name)
            .unwrap_or_else(|| panic!("{what}: no {name} ({})", response.status))
    };
    let hsts = header("strict-transport-security");
    let max_age: u64 = hsts
        .strip_prefix("max-age=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age >= 31_536_000, "{what}: {hsts}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert!(
        !csp.contains("script-src"),
        "{what}: no script source at all: {csp}"
    );
    let content_type = response.header("content-type");
    if let Some(content_type) = content_type
        && content_type.starts_with("text/")
    {
        assert!(
            content_type.contains("charset=utf-8"),
            "{what}: {content_type}"
        );
        assert_eq!(
            header("cross-origin-opener-policy"),
            "same-origin",
            "{what}"
        );
        assert_eq!(header("cache-control"), "no-store", "{what}");
    }
}

#[test]
fn web_07_every_page_redirect_and_error_carries_the_security_headers() {
    let (_work, server, _, _) = portal_world(&[]);
    let totp = make_admin(&server, "olga");
    let mut anonymous = Browser::new(&server);
    let mut checked = 0;
    let (_, challenge) = pkce();
    for path in [
        "/login",
        "/device",
        "/account",
        "/admin",
        "/admin/verify",
        "/account/reset?token=junk",
        "/authorize?client_id=nobody",
        &authorize_path("openid", &challenge, ""),
        "/no/such/page",
        "/healthz",
        "/jwks",
    ] {
        assert_security_headers(path, &anonymous.get(path));
        checked += 1;
    }
    let bad_form = anonymous.post("/login", &[("username", "a"), ("username", "b")]);
    assert_eq!(bad_form.status, 400);
    assert_security_headers("an unreadable form", &bad_form);
    let mut alice = signed_in(&server, "alice", PASSWORD);
    for path in [
        "/account",
        "/account/password",
        "/account/approvals/revoke-all",
        "/admin",
    ] {
        assert_security_headers(path, &alice.get(path));
        checked += 1;
    }
    let mut olga = admin_browser(&server, "olga", &totp);
    for path in [
        "/admin",
        "/admin/clients",
        "/admin/clients/portal",
        "/admin/people",
        "/admin/people/alice",
        "/admin/issuances",
        "/admin/events",
        "/admin/events?from=junk",
        "/admin/clients/nobody",
    ] {
        let answer = olga.get(path);
        assert!(
            answer
                .header("content-type")
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert_security_headers(path, &answer);
        checked += 1;
    }
    assert_eq!(checked, 24);
    let stylesheet = anonymous.get("/static/slcs.css");
    assert_eq!(
        stylesheet.header("content-type"),
        Some("text/css; charset=utf-8")
    );
}

/// WEB-12: a stored approval is reused only for exactly what it covers.
/// A wider scope, a delegatee the portal newly declares, and another of
/// its registered redirect URIs each ask again, for the difference only; a
/// narrower request does not ask.
#[test]
fn web_12_a_stored_approval_covers_its_scopes_delegatees_and_redirect_uris_only() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    alice(&server);
    let service = |id: &str| {
        json!({"client": {"clientId": id, "name": id, "serviceAccountsEnabled": true,
                          "defaultClientScopes": ["slcs:certificate"]}})
    };
    for id in ["wps", "broker"] {
        assert_eq!(register(&server, &service(id)).0.status, 201);
    }
    let second_cb = "https://portal.example/other-cb";
    let mut portal = json!({
        "client": {
            "clientId": "portal",
            "name": "Climate Portal",
            "standardFlowEnabled": true,
            "consentRequired": true,
            "redirectUris": [PORTAL_CB, second_cb],
            "defaultClientScopes": ["openid", "slcs:certificate"],
            "optionalClientScopes": ["email"]
        },
        "slcs": { "delegatees": ["wps"] }
    });
    assert_eq!(register(&server, &portal).0.status, 201);
    let mut browser = Browser::new(&server);
    let (_, challenge) = pkce();
    let scope = "openid slcs:certificate";
    let first = authorize(&mut browser, &authorize_path(scope, &challenge, ""));
    assert!(first.header("location").unwrap().starts_with(PORTAL_CB));

    // Covered, and narrower: no page.
    for asked in [scope, "openid"] {
        let answer = browser.get(&authorize_path(asked, &challenge, ""));
        assert_eq!(answer.status, 303, "{asked}: {}", answer.text());
        assert!(answer.header("location").unwrap().starts_with(PORTAL_CB));
    }
    let consent_for = |browser: &mut Browser<'_>, path: &str| {
        let page = browser.get(path);
        assert_eq!(page.status, 200, "{path}: asks again: {}", page.text());
        let html = html_of(&page);
        assert!(html.contains("action=\"/authorize/consent\""), "{html}");
        html
    };
    // Wider scope: only the difference.
    let wider = consent_for(
        &mut browser,
        &authorize_path(&format!("{scope} email"), &challenge, ""),
    );
    assert!(wider.contains("It now also asks to"), "{wider}");
    // Another registered redirect URI.
    let other = authorize_path(scope, &challenge, "").replace(
        &format!("redirect_uri={}", form_encode(PORTAL_CB)),
        &format!("redirect_uri={}", form_encode(second_cb)),
    );
    let html = consent_for(&mut browser, &other);
    assert!(html.contains(second_cb), "names the new address: {html}");
    // A delegatee the portal now declares: asked about, alone.
    portal["slcs"]["delegatees"] = json!(["wps", "broker"]);
    let replaced = server.send(
        "PUT",
        "/rest/v1/oidc/clients/portal",
        &[("Authorization", &admin(&server))],
        Some(("application/json", &portal.to_string())),
    );
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    let html = consent_for(&mut browser, &authorize_path(scope, &challenge, ""));
    assert!(html.contains("name=\"delegatee.broker\""), "{html}");
    assert!(
        !html.contains("name=\"delegatee.wps\""),
        "wps was approved: {html}"
    );
}

/// ATTACKS WEB-11: the consent page for a portal with a declared chain
/// (P hands work to W, W to brokers A and B) names, for each delegatee, its
/// name, client id, owner, the client it receives from, the scopes it would
/// get and whether it passes them on (W does, the brokers do not); and for
/// the request, the resource the tokens are for, the scopes, and how long
/// the approval is kept.
#[test]
fn web_11_consent_names_each_delegatee_its_owner_onward_delegation_and_the_resource() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    crate::delegation::register_chain(&server);
    alice(&server);
    let mut browser = Browser::new(&server);
    let (_, challenge) = pkce();
    let consent = crate::people::sign_in_for(
        &mut browser,
        &authorize_path("openid slcs:certificate", &challenge, ""),
    );
    assert_eq!(consent.status, 200, "{}", consent.text());
    let html = html_of(&consent);
    let issuer = server.get("/.well-known/oauth-authorization-server").json()["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        html.contains(&format!(
            "the certificate service: short-lived certificates that name you <code>{issuer}/certificate</code>"
        )),
        "{html}"
    );
    assert!(html.contains("<code>slcs:certificate</code>"), "{html}");
    assert!(html.contains("kept for 90 days"), "{html}");
    // Each delegatee's entry, in the tree's order.
    let entry = |id: &str| {
        let start = html
            .find(&format!("name=\"delegatee.{id}\""))
            .unwrap_or_else(|| panic!("{id} not offered: {html}"));
        let end = html[start..]
            .find("</li>\n")
            .map_or(html.len(), |e| start + e);
        html[start..end].to_owned()
    };
    let wps = entry("wps");
    assert!(
        wps.contains("<strong>Processing service</strong> <code>wps</code>"),
        "{wps}"
    );
    assert!(wps.contains("Registered by <code>admin</code>"), "{wps}");
    assert!(wps.contains("It may pass these rights on"), "{wps}");
    for (id, name) in [("broker-a", "Job broker A"), ("broker-b", "Job broker B")] {
        let broker = entry(id);
        assert!(
            broker.contains(&format!("<strong>{name}</strong> <code>{id}</code>")),
            "{broker}"
        );
        assert!(
            broker.contains("receives from <code>wps</code>"),
            "{broker}"
        );
        assert!(
            broker.contains("Registered by <code>admin</code>"),
            "{broker}"
        );
        assert!(broker.contains("It does not pass them on."), "{broker}");
        assert!(broker.contains("<code>slcs:certificate</code>"), "{broker}");
    }
}
