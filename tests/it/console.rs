//! The admin console over real HTTP: the role and the second factor it
//! wants, client approval with re-authentication, the people pages, the
//! reset link, and the searches of the issuance and audit logs.

use serde_json::json;

use crate::people::{
    Browser, PASSWORD, add_user, audit_actions, hidden, html_of, portal_world, signed_in,
};
use crate::token::{admin, api_caller, api_token, service_client_json, token_basic};
use crate::{HttpResponse, Server};

/// Makes an account `username` and an administrator of it; returns the
/// TOTP secret the API answered with.
pub fn make_admin(server: &Server, username: &str) -> String {
    add_user(
        server,
        json!({ "username": username, "display_name": "Olga Operator", "password": PASSWORD }),
    );
    let made = server.send(
        "PUT",
        &format!("/admin/users/{username}/admin"),
        &[("Authorization", &admin(server))],
        Some(("application/json", r#"{"admin":true}"#)),
    );
    assert_eq!(made.status, 200, "{}", made.text());
    let json = made.json();
    assert_eq!(json["admin"], true);
    let uri = json["totp"]["uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!(":{username}?secret=")), "{uri}");
    json["totp"]["secret"].as_str().unwrap().to_owned()
}

/// The code of `secret` `offset` steps from now.
pub fn totp_code(secret: &str, offset: i64) -> String {
    let now = crate::now().unix_timestamp();
    let step = u64::try_from(now / slcs::users::totp::STEP_SECS + offset).unwrap();
    slcs::users::totp::Totp {
        secret: secret.to_owned(),
        last_step: None,
        enrolled_at: time::OffsetDateTime::UNIX_EPOCH,
    }
    .code_at(step)
    .unwrap()
}

fn send_code(browser: &mut Browser<'_>, code: &str) -> HttpResponse {
    let page = browser.get("/admin/verify");
    assert_eq!(page.status, 200, "{}", page.text());
    let csrf = hidden(&page.text(), "csrf_token");
    browser.post("/admin/verify", &[("csrf_token", &csrf), ("code", code)])
}

/// A browser signed in as administrator `username` with the second factor
/// proved by the code `offset` steps from now.
pub fn admin_browser<'a>(server: &'a Server, username: &str, secret: &str) -> Browser<'a> {
    let mut browser = signed_in(server, username, PASSWORD);
    let done = send_code(&mut browser, &totp_code(secret, 0));
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(done.header("location"), Some("/admin"));
    browser
}

/// The CSRF token of the console page at `path`.
fn console_csrf(browser: &mut Browser<'_>, path: &str) -> String {
    let page = browser.get(path);
    assert_eq!(page.status, 200, "{path}: {}", page.text());
    hidden(&page.text(), "csrf_token")
}

#[test]
fn the_console_wants_the_role_and_a_second_factor_used_once() {
    let (_work, server, _, _) = portal_world(&[]);
    let secret = make_admin(&server, "olga");

    // Nobody signed in: to the login page, back to the console after.
    let mut anonymous = Browser::new(&server);
    for path in [
        "/admin",
        "/admin/clients",
        "/admin/people",
        "/admin/events",
        "/admin/issuances",
    ] {
        let answer = anonymous.get(path);
        assert_eq!(answer.status, 303, "{path}");
        assert_eq!(
            answer.header("location"),
            Some("/login?continue=admin"),
            "{path}"
        );
    }
    let login = anonymous.get("/login?continue=admin");
    assert_eq!(hidden(&login.text(), "continue"), "admin");

    // A person without the role is refused, whatever she signed in with.
    let mut alice = signed_in(&server, "alice", PASSWORD);
    let refused = alice.get("/admin");
    assert_eq!(refused.status, 403);
    assert!(
        refused.text().contains("for administrators"),
        "{}",
        refused.text()
    );
    assert_eq!(alice.get("/admin/verify").status, 403);

    // The administrator's password alone opens nothing: every page sends
    // her to the second factor, and a form is refused outright.
    let mut olga = signed_in(&server, "olga", PASSWORD);
    for path in ["/admin", "/admin/clients/portal", "/admin/people/alice"] {
        let answer = olga.get(path);
        assert_eq!(answer.status, 303, "{path}");
        assert_eq!(answer.header("location"), Some("/admin/verify"), "{path}");
    }
    let csrf = hidden(&olga.get("/admin/verify").text(), "csrf_token");
    let before = audit_actions(&server).len();
    let forced = olga.post(
        "/admin/clients/portal/status",
        &[
            ("csrf_token", &csrf),
            ("status", "suspended"),
            ("reason", "x"),
        ],
    );
    assert_eq!(forced.status, 403, "{}", forced.text());
    assert_eq!(server.get("/.well-known/openid-configuration").status, 200);
    assert!(!audit_actions(&server)[before..].contains(&"client.suspend".to_owned()));

    // A code without this site's CSRF token, or a wrong code, is refused
    // and recorded; the right one opens the console.
    let unsent = olga.post("/admin/verify", &[("code", &totp_code(&secret, 0))]);
    assert_eq!(unsent.status, 403);
    let wrong_code = format!(
        "{:06}",
        (totp_code(&secret, 0).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let wrong = send_code(&mut olga, &wrong_code);
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(audit_actions(&server).contains(&"user.second_factor.refuse".to_owned()));
    let code = totp_code(&secret, 0);
    let before_factor = olga.cookies["__Host-slcs-session"].clone();
    let opened = send_code(&mut olga, &code);
    assert_eq!(opened.status, 303, "{}", opened.text());
    // WEB-05: the second factor, a change of privilege, gets a new
    // session id; the old one is dead, so a planted id gains nothing.
    let after_factor = olga.cookies["__Host-slcs-session"].clone();
    assert_ne!(after_factor, before_factor);
    let mut planted = Browser::new(&server);
    planted
        .cookies
        .insert("__Host-slcs-session".into(), before_factor);
    assert_eq!(planted.get("/admin").status, 303);
    assert_eq!(
        planted.get("/admin").header("location"),
        Some("/login?continue=admin")
    );
    let home = olga.get("/admin");
    assert_eq!(home.status, 200, "{}", home.text());
    let html = home.text();
    for part in [
        "Overview",
        "Certificate authority",
        "Token signing keys",
        "current",
        "durable writes succeed",
        "Since start",
        "access tokens issued",
        "slcs 0.",
    ] {
        assert!(html.contains(part), "{part}: {html}");
    }
    assert!(
        !home
            .header("content-security-policy")
            .unwrap()
            .contains("unsafe-inline")
    );

    // The same code in another browser is a replay (RFC 6238 §5.2).
    let mut second = signed_in(&server, "olga", PASSWORD);
    let replayed = send_code(&mut second, &code);
    assert_eq!(replayed.status, 401, "{}", replayed.text());

    // Guessing is throttled per account: after three free failures the
    // answer is 429 before any code is checked.
    let mut throttled = false;
    for _ in 0..6 {
        let answer = send_code(&mut second, "000000");
        if answer.status == 429 {
            throttled = true;
            assert!(answer.header("retry-after").is_some());
            break;
        }
        assert_eq!(answer.status, 401);
    }
    assert!(throttled, "six wrong codes were never throttled");

    // Taking the role away takes effect on the next request.
    let removed = server.send(
        "PUT",
        "/admin/users/olga/admin",
        &[("Authorization", &admin(&server))],
        Some(("application/json", r#"{"admin":false}"#)),
    );
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert!(removed.json().get("totp").is_none());
    assert_eq!(olga.get("/admin").status, 403);
}

#[test]
fn an_administrator_approves_a_pending_client_after_proving_her_password_again() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let secret = make_admin(&server, "olga");

    // A developer registers a client with the registration API: it waits,
    // and cannot get tokens. Its name and description are hers to choose.
    let developer = api_caller(&server, "ci-dev");
    let bearer = api_token(&server, "ci-dev", &developer);
    let mut body = service_client_json("jobs");
    body["client"]["name"] = json!("<script>alert('name')</script>");
    body["client"]["description"] = json!("<img src=x onerror=alert(1)>");
    let created = server.post(
        "/rest/v1/oidc/clients",
        &[("Authorization", &bearer)],
        "application/json",
        &body.to_string(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["slcs"]["status"], "pending");
    let jobs_secret = created.json()["client"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let get_token = || {
        token_basic(
            &server,
            "jobs",
            &jobs_secret,
            "grant_type=client_credentials&scope=slcs:certificate",
        )
    };
    assert_eq!(get_token().status, 401);

    let mut olga = admin_browser(&server, "olga", &secret);
    // Listed first among the pending, on the overview and in the list;
    // the payloads are text, never markup.
    for path in [
        "/admin",
        "/admin/clients?status=pending",
        "/admin/clients?q=JOBS",
        "/admin/clients/jobs",
    ] {
        let page = olga.get(path);
        assert_eq!(page.status, 200, "{path}");
        let html = html_of(&page);
        assert!(html.contains("/admin/clients/jobs"), "{path}: {html}");
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
        assert!(html.contains("&lt;script&gt;"), "{path}");
    }
    let none = html_of(&olga.get("/admin/clients?q=no-such-thing"));
    assert!(!none.contains("/admin/clients/jobs"));
    let detail = olga.get("/admin/clients/jobs").text();
    // Every member of the registration, nested ones by their path.
    for field in [
        "<dt>client.clientId</dt><dd>jobs</dd>",
        "<dt>client.serviceAccountsEnabled</dt><dd>true</dd>",
        "<dt>owner</dt><dd>service:ci-dev</dd>",
        "<dt>slcs.status</dt><dd>pending</dd>",
    ] {
        assert!(detail.contains(field), "{field}: {detail}");
    }
    assert!(!detail.contains(&jobs_secret), "never a secret");

    // Approving wants the password again; without it, or with a wrong
    // one, nothing changes.
    let csrf = console_csrf(&mut olga, "/admin/clients/jobs");
    let path = "/admin/clients/jobs/status";
    let no_password = olga.post(path, &[("csrf_token", &csrf), ("status", "active")]);
    assert_eq!(no_password.status, 401, "{}", no_password.text());
    let wrong = olga.post(
        path,
        &[
            ("csrf_token", &csrf),
            ("status", "active"),
            ("password", "not the password"),
        ],
    );
    assert_eq!(wrong.status, 401);
    let forged = olga.post(
        path,
        &[
            ("csrf_token", "forged"),
            ("status", "active"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(forged.status, 403);
    let bad = olga.post(
        path,
        &[
            ("csrf_token", &csrf),
            ("status", "approved"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(bad.status, 400);
    assert_eq!(get_token().status, 401, "still pending");

    let approved = olga.post(
        path,
        &[
            ("csrf_token", &csrf),
            ("status", "active"),
            ("password", PASSWORD),
            ("reason", "reviewed with the ESGF team"),
        ],
    );
    assert_eq!(approved.status, 200, "{}", approved.text());
    assert!(approved.text().contains("approved"));
    assert_eq!(get_token().status, 200, "approved: tokens");

    // Suspending wants a reason, and then stops its tokens.
    let no_reason = olga.post(path, &[("csrf_token", &csrf), ("status", "suspended")]);
    assert_eq!(no_reason.status, 400);
    assert_eq!(get_token().status, 200);
    let suspended = olga.post(
        path,
        &[
            ("csrf_token", &csrf),
            ("status", "suspended"),
            ("reason", "leaked secret"),
        ],
    );
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    assert_eq!(get_token().status, 401);

    // Both decisions are in the audit log, by the administrator's
    // account, with their reasons; the audit page finds them.
    let olga_sub = server
        .send(
            "GET",
            "/admin/users",
            &[("Authorization", &admin(&server))],
            None,
        )
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "olga")
        .unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = olga.get("/admin/events?action=client.&target=jobs");
    assert_eq!(events.status, 200);
    let html = html_of(&events);
    assert!(
        html.contains("client.approve") && html.contains("client.suspend"),
        "{html}"
    );
    assert!(html.contains(&format!("user:{olga_sub}")), "{html}");
    assert!(
        html.contains("leaked secret") && html.contains("reviewed with the ESGF team"),
        "{html}"
    );
    // Filtered: another client's registration is not among them.
    assert!(html.contains("<code>jobs</code>"), "{html}");
    assert!(!html.contains("<code>ci-dev</code>"), "{html}");
}

#[test]
fn people_pages_edit_access_disable_and_hand_out_a_reset_link_that_works_once() {
    let (_work, server, _, _) = portal_world(&[]);
    let secret = make_admin(&server, "olga");
    add_user(
        &server,
        json!({
            "username": "mallory",
            "display_name": "<script>alert('display')</script>",
            "password": PASSWORD
        }),
    );
    let mut olga = admin_browser(&server, "olga", &secret);

    let list = olga.get("/admin/people?q=ALICE");
    assert_eq!(list.status, 200);
    let html = list.text();
    assert!(
        html.contains("Alice Martin") && !html.contains("olga"),
        "{html}"
    );
    let all = olga.get("/admin/people").text();
    assert!(
        !all.contains("<script>alert") && all.contains("&lt;script&gt;"),
        "{all}"
    );

    // Access: guest flag, groups and units; a bad label changes nothing.
    let csrf = console_csrf(&mut olga, "/admin/people/alice");
    let saved = olga.post(
        "/admin/people/alice",
        &[
            ("csrf_token", &csrf),
            ("action", "access"),
            ("guest", "on"),
            ("groups", "TVB-Workshops\n\n"),
            ("units", "all:projects:hbp"),
        ],
    );
    assert_eq!(saved.status, 200, "{}", saved.text());
    let users = || {
        server
            .send(
                "GET",
                "/admin/users",
                &[("Authorization", &admin(&server))],
                None,
            )
            .json()
    };
    let alice_now = |users: serde_json::Value| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "alice")
            .unwrap()
            .clone()
    };
    let stored = alice_now(users());
    assert_eq!(stored["guest"], true);
    assert_eq!(stored["groups"], json!(["TVB-Workshops"]));
    assert_eq!(stored["units"], json!(["all:projects:hbp"]));
    let refused = olga.post(
        "/admin/people/alice",
        &[
            ("csrf_token", &csrf),
            ("action", "access"),
            ("groups", "two words"),
        ],
    );
    assert_eq!(refused.status, 400);
    assert_eq!(alice_now(users())["groups"], json!(["TVB-Workshops"]));
    assert_eq!(alice_now(users())["guest"], true);

    // Disabling signs Alice out at once and keeps her out; an
    // administrator cannot disable herself here.
    let mut alice = signed_in(&server, "alice", PASSWORD);
    assert_eq!(alice.get("/account").status, 200);
    let disabled = olga.post(
        "/admin/people/alice",
        &[("csrf_token", &csrf), ("action", "disable")],
    );
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(alice.get("/account").status, 303, "signed out");
    let mut retry = Browser::new(&server);
    let login = retry.get("/login");
    assert_eq!(retry.sign_in(&login, "alice", PASSWORD).status, 401);
    let own = olga.post(
        "/admin/people/olga",
        &[("csrf_token", &csrf), ("action", "disable")],
    );
    assert_eq!(own.status, 400);
    let no_link = olga.post(
        "/admin/people/alice",
        &[("csrf_token", &csrf), ("action", "reset-link")],
    );
    assert_eq!(no_link.status, 400, "not for a disabled account");
    let enabled = olga.post(
        "/admin/people/alice",
        &[("csrf_token", &csrf), ("action", "enable")],
    );
    assert_eq!(enabled.status, 200);
    // Disabling through the admin API (`slcs user disable`) signs out too.
    let mut alice = signed_in(&server, "alice", PASSWORD);
    assert_eq!(alice.get("/account").status, 200);
    let api = |verb: &str| {
        server.send(
            "POST",
            &format!("/admin/users/alice/{verb}"),
            &[("Authorization", &admin(&server))],
            None,
        )
    };
    assert_eq!(api("disable").status, 200);
    assert_eq!(alice.get("/account").status, 303, "signed out by the API");
    assert_eq!(api("enable").status, 200);

    // A reset link: Alice sets a new password with it, once.
    let made = olga.post(
        "/admin/people/alice",
        &[("csrf_token", &csrf), ("action", "reset-link")],
    );
    assert_eq!(made.status, 200, "{}", made.text());
    let html = html_of(&made);
    let start = html.find("/account/reset?token=").unwrap();
    let end = start + html[start..].find('<').unwrap();
    let link = html[start..end].to_owned();
    assert!(audit_actions(&server).contains(&"user.reset_link".to_owned()));
    let mut alice = signed_in(&server, "alice", PASSWORD);
    let mut stranger = Browser::new(&server);
    let form = stranger.get(&link);
    assert_eq!(form.status, 200, "{}", form.text());
    let form_html = form.text();
    let fields = |new: &'static str, repeat: &'static str| {
        vec![
            ("csrf_token", hidden(&form_html, "csrf_token")),
            ("token", hidden(&form_html, "token")),
            ("new_password", new.to_owned()),
            ("repeat_password", repeat.to_owned()),
        ]
    };
    let post = |browser: &mut Browser<'_>, fields: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        browser.post("/account/reset", &pairs)
    };
    assert_eq!(
        post(
            &mut stranger,
            fields("a new long password", "a different one!!")
        )
        .status,
        400
    );
    assert_eq!(post(&mut stranger, fields("short", "short")).status, 400);
    let mut no_csrf = fields("a new long password", "a new long password");
    no_csrf[0].1 = "forged".into();
    assert_eq!(post(&mut stranger, no_csrf).status, 403);
    let set = post(
        &mut stranger,
        fields("a new long password", "a new long password"),
    );
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(alice.get("/account").status, 303, "signed out everywhere");
    let mut fresh = Browser::new(&server);
    let login = fresh.get("/login");
    assert_eq!(fresh.sign_in(&login, "alice", PASSWORD).status, 401);
    let login = fresh.get("/login");
    assert_eq!(
        fresh.sign_in(&login, "alice", "a new long password").status,
        303
    );
    // Spent: the link and its form are dead now.
    assert_eq!(stranger.get(&link).status, 400);
    assert_eq!(
        post(
            &mut stranger,
            fields("another long password", "another long password")
        )
        .status,
        400
    );
    assert_eq!(
        Browser::new(&server)
            .get("/account/reset?token=junk")
            .status,
        400
    );
}

#[test]
fn the_issuance_and_audit_logs_are_searched_by_person_client_serial_and_time() {
    let (_work, server, _, alice_sub) = portal_world(&[]);
    let secret = make_admin(&server, "olga");
    let (_, token) = crate::certificate::service_token(&server, "batch");
    let issued = crate::certificate::post_csr(&server, &token, "");
    assert_eq!(issued.status, 200, "{}", issued.text());
    let pem = issued.text();
    let serial = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pem");
        std::fs::write(&path, &pem).unwrap();
        crate::openssl(&["x509", "-in", path.to_str().unwrap(), "-noout", "-serial"])
            .trim()
            .trim_start_matches("serial=")
            .to_lowercase()
    };
    let mut olga = admin_browser(&server, "olga", &secret);
    let today = crate::now().date();
    let tomorrow = today.next_day().unwrap();
    let finds = |olga: &mut Browser<'_>, query: &str| {
        let page = olga.get(&format!("/admin/issuances?{query}"));
        (page.status, page.text().to_lowercase().contains(&serial))
    };
    assert_eq!(finds(&mut olga, ""), (200, true));
    assert_eq!(finds(&mut olga, "client=batch"), (200, true));
    assert_eq!(finds(&mut olga, "client=portal"), (200, false));
    assert_eq!(finds(&mut olga, &format!("serial={serial}")), (200, true));
    assert_eq!(finds(&mut olga, "person=service%3Abatch"), (200, true));
    assert_eq!(finds(&mut olga, "person=alice"), (200, false));
    assert_eq!(
        finds(&mut olga, &format!("from={today}&until={tomorrow}")),
        (200, true)
    );
    assert_eq!(finds(&mut olga, &format!("from={tomorrow}")), (200, false));
    assert_eq!(finds(&mut olga, "person=nobody").0, 400);
    assert_eq!(finds(&mut olga, "from=yesterday").0, 400);
    assert_eq!(finds(&mut olga, "serial=xyz").0, 400);

    // The audit log: by actor, action and target, newest first.
    let events = olga.get(&format!("/admin/events?target=user%3A{alice_sub}"));
    assert_eq!(events.status, 200);
    let html = events.text();
    assert!(html.contains("user.create"), "{html}");
    assert!(!html.contains("client.create"), "{html}");
    let created = olga.get("/admin/events?action=client.create").text();
    let batch = created.find("batch").unwrap();
    let portal = created.find("portal").unwrap();
    assert!(batch < portal, "newest first");
    assert_eq!(olga.get("/admin/events?from=not-a-date").status, 400);
    assert!(
        !olga
            .get(&format!("/admin/events?from={tomorrow}"))
            .text()
            .contains("client.create")
    );
}
