//! The pages in a real browser (issue 9): headless Chromium, driven by
//! `tests/browser/pages.mjs` (playwright-core), against the real server.
//! This side starts the server and sets the scene (the MashMyData chain,
//! Alice, and a client and an account whose names are HTML/JS payloads);
//! the script plays the people and checks what they see. Skipped where
//! Chromium, node or the script's dependencies are missing, unless
//! `BROWSER_REQUIRED` is set (as `.ci/run` does).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::delegation::{register_chain, registered};
use crate::people::{PASSWORD, PORTAL_CB, add_user, alice, authorize_path, pkce};
use crate::{Server, wait_timeout};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The directory of the browser scripts, if everything they need is here.
fn browser_scripts() -> Option<&'static Path> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"));
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ready =
        node && Path::new(CHROMIUM).is_file() && dir.join("node_modules/playwright-core").is_dir();
    if ready {
        return Some(dir);
    }
    assert!(
        std::env::var("BROWSER_REQUIRED").is_err(),
        "browser tests required (BROWSER_REQUIRED) but node, {CHROMIUM} or tests/browser/node_modules is missing"
    );
    println!("no browser here; skipping (run .ci/run to install Chromium and playwright-core)");
    None
}

/// Keyboard-only use and WEB-11: a person signs in, approves the portal
/// with the delegatees its consent page shows; down the chain a broker
/// gets a certificate in her name; she sees the approval drawn as its
/// chain on the account page with that certificate (and downloads it),
/// and revokes the approval, all with the keyboard, after which the
/// portal's refresh fails. A guest is refused by a portal that does not
/// admit guests. Output escaping: payloads in a
/// client's name and description and in a display name stay text, and no
/// script runs. WEB-04: no page renders in another site's frame. An
/// administrator signs in with a TOTP code computed by the script, approves
/// a pending client (whose name is a payload too) with her password again,
/// and the client then gets tokens.
#[test]
fn web_04_web_11_keyboard_only_chain_certificate_and_revoke_guests_payloads_framing_and_admin() {
    let Some(scripts) = browser_scripts() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    let chain = register_chain(&server);
    alice(&server);
    add_user(
        &server,
        json!({
            "username": "mallory",
            "display_name": "<svg onload=alert(3)>",
            "password": PASSWORD
        }),
    );
    registered(
        &server,
        &json!({
            "client": {
                "clientId": "evil",
                "name": "Evil <img src=x onerror=alert(1)>",
                "description": "<script>alert(2)</script>",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": [PORTAL_CB],
                "defaultClientScopes": ["openid", "slcs:certificate"]
            }
        }),
    );
    let (verifier, challenge) = pkce();
    let scope = "openid slcs:certificate offline_access";
    let portal_path = authorize_path(scope, &challenge, "");
    add_user(
        &server,
        json!({"username": "gus", "display_name": "Gus", "guest": true, "password": PASSWORD}),
    );
    let (_, guest_challenge) = pkce();
    let guest_path = authorize_path("openid slcs:certificate", &guest_challenge, "");
    let broker_key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&broker_key)
        .unwrap()
        .pem()
        .unwrap();
    // An administrator, and a client a developer registered through the
    // registration API, waiting for her approval.
    let totp_secret = crate::console::make_admin(&server, "olga");
    let developer = crate::token::api_caller(&server, "ci-dev");
    let bearer = crate::token::api_token(&server, "ci-dev", &developer);
    let pending_name = "Jobs <img src=x onerror=alert(4)>";
    let mut pending = crate::token::service_client_json("jobs");
    pending["client"]["name"] = json!(pending_name);
    let created = server.post(
        "/rest/v1/oidc/clients",
        &[("Authorization", &bearer)],
        "application/json",
        &pending.to_string(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["slcs"]["status"], "pending");
    let pending_secret = created.json()["client"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, evil_challenge) = pkce();
    let evil_path = authorize_path("openid slcs:certificate", &evil_challenge, "")
        .replace("client_id=portal&", "client_id=evil&");
    // Screenshots for docs/ when asked for; elsewhere into the scratch
    // directory (taken either way, so the step is exercised).
    let shots = if std::env::var("UPDATE_SCREENSHOTS").is_ok() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        work.path().join("screenshots")
    };
    std::fs::create_dir_all(&shots).unwrap();

    let mut child = Command::new("node")
        .arg(scripts.join("pages.mjs"))
        .current_dir(scripts)
        .env(
            "SLCS_URL",
            format!("https://localhost:{}", server.addr.port()),
        )
        .env("NODE_EXTRA_CA_CERTS", data.join("ca").join("ca.pem"))
        .env("PORTAL_CB", PORTAL_CB)
        .env("PORTAL_SECRET", &chain.portal)
        .env("AUTHORIZE_PATH", &portal_path)
        .env("VERIFIER", &verifier)
        .env("EVIL_AUTHORIZE_PATH", &evil_path)
        .env("PASSWORD", PASSWORD)
        .env("WPS_SECRET", &chain.wps)
        .env("BROKER_A_SECRET", &chain.broker_a)
        .env("CSR_PEM", &csr)
        .env("GUEST_AUTHORIZE_PATH", &guest_path)
        .env("ADMIN_USERNAME", "olga")
        .env("TOTP_SECRET", &totp_secret)
        .env("PENDING_CLIENT", "jobs")
        .env("PENDING_NAME", pending_name)
        .env("PENDING_SECRET", &pending_secret)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(120));
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "browser script failed:\n{out}\n{err}");
    let results: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        results,
        json!({"keyboard": "ok", "guest": "ok", "xss": "ok", "framing": "ok", "admin": "ok"}),
        "{err}"
    );
    for page in [
        "login",
        "consent",
        "account",
        "approval",
        "revoke",
        "admin-verify",
        "admin",
        "admin-client",
        "admin-events",
        "admin-certificates",
    ] {
        assert!(shots.join(format!("{page}.png")).is_file(), "{page}.png");
    }
}
