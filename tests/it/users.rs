//! `slcs user …`, `slcs login` and `slcs cert get` for people, against a
//! running server: passwords reach the server from a file or standard
//! input, never from the command line, and exactly as written (less one
//! trailing newline); the admin API never shows a hash; the device flow
//! leaves a private credentials file whose refresh token `cert get`
//! rotates in place.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::people::{Browser, confirm_device_as, register_cli_client};
use crate::{Server, form_encode, openssl, slcs_bin};

const FORM: &str = "application/x-www-form-urlencoded";

/// `slcs --data-dir DATA <args> --server URL`, with `stdin` as standard
/// input (closed after it, so the CLI sees the end).
fn slcs_with_stdin(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let url = format!("https://localhost:{}", server.addr.port());
    let mut child = Command::new(slcs_bin())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(args)
        .args(["--server", &url])
        .env_remove("SLCS_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The same with nothing on standard input.
fn slcs(server: &Server, args: &[&str]) -> Output {
    slcs_with_stdin(server, args, b"")
}

fn succeeded(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A private file holding `contents`.
fn secret_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Signs in on the login page; the session cookie on success.
fn sign_in(server: &Server, username: &str, password: &str) -> Option<String> {
    let mut browser = Browser::new(server);
    let page = browser.get("/login");
    assert_eq!(page.status, 200, "{}", page.text());
    let response = browser.sign_in(&page, username, password);
    match response.status {
        303 => Some(browser.cookies["__Host-slcs-session"].clone()),
        401 => None,
        other => panic!("sign-in answered {other}: {}", response.text()),
    }
}

fn user<'a>(list: &'a Value, username: &str) -> Option<&'a Value> {
    list.as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username)
}

#[test]
fn user_verbs_manage_accounts_without_passwords_on_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let alice_password = "correct horse battery";
    let file = secret_file(work.path(), "alice.pw", &format!("{alice_password}\n"));

    // From a file, one trailing newline dropped; every attribute passed on.
    let alice = succeeded(&slcs(
        &server,
        &[
            "user",
            "add",
            "alice",
            "--display-name",
            "Alice Smith",
            "--email",
            "alice@example.org",
            "--organisation",
            "CNRS",
            "--group",
            "g1",
            "--group",
            "g2",
            "--unit",
            "all:projects:hbp",
            "--password-file",
            file.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["display_name"], "Alice Smith");
    assert_eq!(alice["email"], "alice@example.org");
    assert_eq!(alice["organisation"], "CNRS");
    assert_eq!(alice["groups"], json!(["g1", "g2"]));
    assert_eq!(alice["units"], json!(["all:projects:hbp"]));
    assert_eq!(alice["guest"], false);
    assert_eq!(alice["has_password"], true);

    // From standard input: CRLF dropped, the spaces kept.
    let bob_password = " spaces  around and inside ";
    let bob = succeeded(&slcs_with_stdin(
        &server,
        &[
            "user",
            "add",
            "bob",
            "--display-name",
            "Bob Guest",
            "--guest",
            "--password-stdin",
            "--json",
        ],
        format!("{bob_password}\r\n").as_bytes(),
    ));
    assert_eq!(bob["guest"], true);
    assert_eq!(bob["has_password"], true);

    // Without a password: an account that cannot sign in with one yet.
    let carol = succeeded(&slcs(
        &server,
        &["user", "add", "carol", "--display-name", "Carol", "--json"],
    ));
    assert_eq!(carol["has_password"], false);

    // The passwords are exactly what the files and the pipe held.
    assert!(sign_in(&server, "alice", alice_password).is_some());
    assert!(sign_in(&server, "bob", bob_password).is_some());
    assert!(sign_in(&server, "bob", bob_password.trim()).is_none());

    // A taken username and a too-short password fail, and create nothing.
    let stderr = failed(&slcs(
        &server,
        &["user", "add", "alice", "--display-name", "Another Alice"],
    ));
    assert!(stderr.contains("409"), "{stderr}");
    let short = secret_file(work.path(), "short.pw", "short\n");
    let stderr = failed(&slcs(
        &server,
        &[
            "user",
            "add",
            "dave",
            "--display-name",
            "Dave",
            "--password-file",
            short.to_str().unwrap(),
        ],
    ));
    assert!(stderr.contains("400"), "{stderr}");

    // The list shows the accounts, never a hash or a password.
    let listed = slcs(&server, &["user", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let list = succeeded(&listed);
    assert!(user(&list, "alice").is_some(), "{text}");
    assert_eq!(user(&list, "bob").unwrap()["display_name"], "Bob Guest");
    assert_eq!(user(&list, "carol").unwrap()["has_password"], false);
    assert!(
        user(&list, "dave").is_none(),
        "a refused add created nothing"
    );
    assert_eq!(list.as_array().unwrap().len(), 3);
    for secret in ["argon2", "hash", alice_password, bob_password] {
        assert!(!text.contains(secret), "{secret:?} in {text}");
    }

    // set-password: standard input by default, or a file.
    let new_password = "a new, longer password";
    let updated = succeeded(&slcs_with_stdin(
        &server,
        &["user", "set-password", "alice", "--json"],
        format!("{new_password}\n").as_bytes(),
    ));
    assert_eq!(updated["has_password"], true);
    assert!(sign_in(&server, "alice", alice_password).is_none());
    assert!(sign_in(&server, "alice", new_password).is_some());
    let file = secret_file(work.path(), "carol.pw", "carol's first password");
    let carol = succeeded(&slcs(
        &server,
        &[
            "user",
            "set-password",
            "carol",
            "--password-file",
            file.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(carol["has_password"], true);
    assert!(sign_in(&server, "carol", "carol's first password").is_some());
    let stderr = failed(&slcs_with_stdin(
        &server,
        &["user", "set-password", "carol"],
        b"too short\n",
    ));
    assert!(stderr.contains("400"), "{stderr}");

    // disable, then enable.
    let disabled = succeeded(&slcs(&server, &["user", "disable", "bob", "--json"]));
    assert_eq!(disabled["disabled"], true);
    assert!(sign_in(&server, "bob", bob_password).is_none());
    let list = succeeded(&slcs(&server, &["user", "list", "--json"]));
    assert_eq!(user(&list, "bob").unwrap()["disabled"], true);
    let enabled = succeeded(&slcs(&server, &["user", "enable", "bob", "--json"]));
    assert_eq!(enabled["disabled"], false);
    assert!(sign_in(&server, "bob", bob_password).is_some());
    let stderr = failed(&slcs(&server, &["user", "disable", "nobody"]));
    assert!(stderr.contains("404"), "{stderr}");
}

#[test]
fn login_by_device_flow_then_cert_get_rotates_the_stored_refresh_token() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[("SLCS_OAUTH_DEVICE_POLL_INTERVAL_SECS", "1")],
    );
    register_cli_client(&server);
    let password = secret_file(work.path(), "erin.pw", "erin's good password\n");
    succeeded(&slcs(
        &server,
        &[
            "user",
            "add",
            "erin",
            "--display-name",
            "Erin Example",
            "--password-file",
            password.to_str().unwrap(),
            "--json",
        ],
    ));

    // `slcs login` prints where to go on stderr, then polls.
    let credentials = work
        .path()
        .join("config")
        .join("slcs")
        .join("credentials.json");
    let url = format!("https://localhost:{}", server.addr.port());
    let mut login = Command::new(slcs_bin())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args([
            "login",
            "--client-id",
            "slcs-cli",
            "--server",
            &url,
            "--json",
        ])
        .arg("--credentials")
        .arg(&credentials)
        .env_remove("SLCS_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap());
    let mut instructions = String::new();
    let user_code = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{instructions}");
        instructions.push_str(&line);
        if let Some((_, code)) = line.trim_end().split_once("enter the code ") {
            break code.to_owned();
        }
    };
    assert!(instructions.contains("/device"), "{instructions}");
    assert_eq!(user_code.len(), 9, "XXXX-XXXX: {user_code}");

    // The person signs in, enters the code and approves.
    let confirmed = confirm_device_as(
        &mut Browser::new(&server),
        ("erin", "erin's good password"),
        &user_code,
        true,
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());

    let status = crate::wait_timeout(&mut login, Duration::from_secs(60));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut login.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{instructions}{rest}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["server"], url);
    assert_eq!(report["client_id"], "slcs-cli");
    assert!(report.get("refresh_token").is_none() && report.get("access_token").is_none());

    // The credentials file: 0600 in a new 0700 directory, with the token.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(mode(credentials.parent().unwrap()), 0o700);
    let read =
        || -> Value { serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap() };
    let first = read();
    assert_eq!(first["server"], url);
    assert_eq!(first["client_id"], "slcs-cli");
    assert!(first["scope"].as_str().unwrap().contains("offline_access"));
    assert!(first["obtained_at"].as_i64().unwrap() > 1_700_000_000);
    let first_token = first["refresh_token"].as_str().unwrap().to_owned();
    assert!(!stdout.contains(&first_token));

    // `cert get` without --client-id: the server comes from the file, the
    // refresh token is rotated in the file, the certificate names Erin.
    let bundle = work.path().join("x509up_erin");
    let cacert = server.data_dir.join("ca").join("ca.pem");
    let cert_get = |extra: &[&str]| {
        let mut command = Command::new(slcs_bin());
        command
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["cert", "get", "--json", "--out", bundle.to_str().unwrap()])
            .arg("--credentials")
            .arg(&credentials)
            .arg("--cacert")
            .arg(&cacert)
            .args(extra)
            .env_remove("SLCS_CONFIG")
            .env_remove("SLCS_CLIENT_SECRET");
        command.output().unwrap()
    };
    let issued = succeeded(&cert_get(&[]));
    assert!(
        issued["subject"].as_str().unwrap().contains("Erin Example"),
        "{issued}"
    );
    assert_eq!(mode(&bundle), 0o600);
    let subject = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-in",
        bundle.to_str().unwrap(),
    ]);
    assert!(subject.contains("Erin Example"), "{subject}");
    let second = read();
    let second_token = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, first_token, "rotated and written back");
    assert_eq!(mode(&credentials), 0o600);

    // The refresh token goes to no other server.
    let stderr = failed(&cert_get(&["--server", "https://localhost:1"]));
    assert!(stderr.contains("slcs login"), "{stderr}");
    assert_eq!(read()["refresh_token"], second_token);

    // A spent token presented again revokes the grant (RFC 9700 §4.14.2):
    // the stored successor no longer works, and the CLI says what to do.
    let reuse = server.post(
        "/token",
        &[],
        FORM,
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id=slcs-cli",
            form_encode(&first_token)
        ),
    );
    assert_eq!(reuse.status, 400, "{}", reuse.text());
    let stderr = failed(&cert_get(&[]));
    assert!(stderr.contains("run `slcs login` again"), "{stderr}");
}
