//! docs/security.md kept true: its attack table names, for every entry of
//! the catalogue (`tests/attacks.ids`, the IDs of ATTACKS.md in its order),
//! the tests (integration or unit) whose names carry the entry's ID, and an entry without one is
//! marked as a gap or a deliberate difference, with the reason.
//! `UPDATE_SECURITY_TABLE=1 cargo test security_table` rewrites the Tests
//! column from the test sources.

use std::path::Path;

const BEGIN: &str = "<!-- attacks-table:begin -->";
const END: &str = "<!-- attacks-table:end -->";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every test function (`#[test]` or `#[tokio::test…]`) of the
/// integration tests and of the crate's unit tests.
fn test_names() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root().join("tests/it"), &mut files);
    rust_files(&root().join("src"), &mut files);
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut is_test = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
                is_test = true;
            } else if let Some(rest) = line
                .strip_prefix("fn ")
                .or_else(|| line.strip_prefix("async fn "))
                .filter(|_| is_test)
            {
                names.push(rest[..rest.find('(').unwrap()].to_owned());
                is_test = false;
            } else if !line.starts_with("#[") && !line.starts_with("//") && !line.is_empty() {
                is_test = false;
            }
        }
    }
    names
}

/// The tests whose names carry `id` (`AZ-01` as the word `az_01`).
fn covering<'a>(id: &str, names: &'a [String]) -> Vec<&'a str> {
    let token = id.to_lowercase().replace('-', "_");
    let mut found: Vec<&str> = names
        .iter()
        .filter(|name| {
            let padded = format!("_{name}_");
            padded.contains(&format!("_{token}_"))
        })
        .map(String::as_str)
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

#[test]
fn security_table_names_a_test_for_every_attack() {
    let ids: Vec<&str> = include_str!("../attacks.ids")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    // Where the catalogue itself is at hand, the list is checked against it.
    let catalogue = root().join("../shared/ATTACKS.md");
    if let Ok(text) = std::fs::read_to_string(&catalogue) {
        let listed: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("**"))
            .filter_map(|l| l.split_once(' ').map(|(id, _)| id.to_owned()))
            .filter(|id| {
                id.contains('-')
                    && id
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
            })
            .collect();
        assert_eq!(listed, ids, "tests/attacks.ids is not the catalogue's list");
    }
    let names = test_names();
    let path = root().join("docs/security.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("the table's begin marker") + BEGIN.len();
    let end = doc.find(END).expect("the table's end marker");
    let mut rows: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for line in doc[start..end].lines() {
        let cells: Vec<&str> = line.split('|').collect();
        let is_row = cells.len() == 5 && ids.contains(&cells[1].trim());
        if !is_row {
            rows.push(line.to_owned());
            continue;
        }
        let id = cells[1].trim();
        seen.push(id.to_owned());
        let tests = covering(id, &names);
        let column = tests
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if cells[2].trim() != column {
            problems.push(format!("{id}: the Tests column is out of date"));
        }
        let behaviour = cells[3].trim();
        if tests.is_empty()
            && !(behaviour.starts_with("**Gap:**") || behaviour.starts_with("**Differs:**"))
        {
            problems.push(format!(
                "{id}: no test carries the ID, and the row says neither Gap nor Differs"
            ));
        }
        if behaviour.is_empty() {
            problems.push(format!("{id}: no behaviour"));
        }
        rows.push(format!("| {id} | {column} | {behaviour} |"));
    }
    assert_eq!(seen, ids, "one row per catalogue entry, in its order");
    if std::env::var("UPDATE_SECURITY_TABLE").is_ok() {
        let updated = format!("{}{}\n{}", &doc[..start], rows.join("\n"), &doc[end..]);
        std::fs::write(
            &path,
            updated.replace(&format!("{BEGIN}\n\n"), &format!("{BEGIN}\n")),
        )
        .unwrap();
        return;
    }
    assert!(
        problems.is_empty(),
        "docs/security.md (UPDATE_SECURITY_TABLE=1 cargo test security_table rewrites the Tests column):\n{}",
        problems.join("\n")
    );
}

#[test]
fn test_names_carry_ids_as_whole_words() {
    let names = vec![
        "az_01_az_02_bad_client".to_owned(),
        "tx_05_tx_06_chains".to_owned(),
        "rs_05_tokens".to_owned(),
        "web_04_web_11_framing".to_owned(),
        "cert_010_not_an_id".to_owned(),
    ];
    assert_eq!(covering("AZ-02", &names), ["az_01_az_02_bad_client"]);
    assert_eq!(covering("TX-06", &names), ["tx_05_tx_06_chains"]);
    assert_eq!(covering("RS-05", &names), ["rs_05_tokens"]);
    assert!(covering("CERT-01", &names).is_empty());
    assert!(covering("WEB-01", &names).is_empty());
    assert_eq!(covering("WEB-11", &names), ["web_04_web_11_framing"]);
}

/// Secrets hygiene: nothing secret that this test hands out or receives
/// reaches the server's log, even at the most verbose level for slcs:
/// client secret, admin token, password, authorization code and PKCE
/// verifier, access, refresh and ID tokens, session cookie, TOTP secret
/// and code, reset link, and the private keys in the data directory.
#[test]
fn secrets_handed_out_never_reach_the_logs() {
    use crate::people::{
        Browser, PASSWORD, hidden, html_of, pkce, redeem, refresh, register_portal,
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = crate::Server::start(&data, &[("SLCS_LOG_LEVEL", "debug,slcs=trace")]);
    let portal_secret = register_portal(&server);
    crate::people::alice(&server);
    let mut secrets: Vec<(&str, String)> = vec![
        ("the admin token", server.admin_token()),
        ("the portal's secret", portal_secret.clone()),
        ("a password", crate::people::PASSWORD.to_owned()),
    ];

    // A person signs in and approves; the portal redeems and refreshes.
    let mut browser = Browser::new(&server);
    let (verifier, challenge) = pkce();
    let code = crate::people::code_for(
        &mut browser,
        "openid offline_access slcs:certificate",
        &challenge,
    );
    let tokens = redeem(&server, &portal_secret, &code, &verifier);
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let json = tokens.json();
    let refreshed = refresh(
        &server,
        &portal_secret,
        json["refresh_token"].as_str().unwrap(),
    );
    assert_eq!(refreshed.status, 200);
    let certificate =
        crate::certificate::post_csr(&server, json["access_token"].as_str().unwrap(), "");
    assert_eq!(certificate.status, 200, "{}", certificate.text());
    secrets.extend([
        ("an authorization code", code),
        ("a PKCE verifier", verifier),
        (
            "an access token",
            json["access_token"].as_str().unwrap().to_owned(),
        ),
        (
            "a refresh token",
            json["refresh_token"].as_str().unwrap().to_owned(),
        ),
        ("an ID token", json["id_token"].as_str().unwrap().to_owned()),
        (
            "a rotated refresh token",
            refreshed.json()["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        ),
        (
            "a session cookie",
            browser.cookies["__Host-slcs-session"].clone(),
        ),
    ]);

    // An administrator with her second factor makes a reset link.
    let totp = crate::console::make_admin(&server, "olga");
    let totp_code = crate::console::totp_code(&totp, 0);
    let mut olga = crate::people::signed_in(&server, "olga", PASSWORD);
    let page = olga.get("/admin/verify");
    let csrf = hidden(&page.text(), "csrf_token");
    assert_eq!(
        olga.post(
            "/admin/verify",
            &[("csrf_token", &csrf), ("code", &totp_code)]
        )
        .status,
        303
    );
    let person = olga.get("/admin/people/alice");
    let csrf = hidden(&person.text(), "csrf_token");
    let made = olga.post(
        "/admin/people/alice",
        &[("csrf_token", &csrf), ("action", "reset-link")],
    );
    let html = html_of(&made);
    let at = html.find("token=").unwrap() + "token=".len();
    let reset = html[at..at + html[at..].find('<').unwrap()].to_owned();
    secrets.extend([
        ("a TOTP secret", totp),
        ("a TOTP code", totp_code),
        ("a reset link token", reset),
    ]);

    // The private keys at rest: each line of their PEM bodies.
    let mut key_files = vec![data.join("ca").join("ca-key.pem")];
    for entry in std::fs::read_dir(data.join("keys")).unwrap() {
        key_files.push(entry.unwrap().path());
    }
    let mut key_lines = Vec::new();
    for file in &key_files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        key_lines.extend(
            text.lines()
                .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                .map(str::to_owned),
        );
    }
    assert!(!key_lines.is_empty(), "found the keys in {key_files:?}");

    let log = server.stderr();
    assert!(
        log.len() > 1000,
        "the log was written at trace level: {}",
        log.len()
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "verbose log"
    );
    for (what, secret) in &secrets {
        assert!(secret.len() >= 6, "{what}");
        assert!(!log.contains(secret.as_str()), "{what} is in the log");
    }
    for line in &key_lines {
        assert!(
            !log.contains(line.as_str()),
            "a private key line is in the log"
        );
    }
}

/// The dependency review that works without the RustSec database (which
/// this build machine cannot reach; `scripts/audit` runs `cargo audit`
/// where it can): every advisory the attack catalogue names for a crate
/// slcs could link is checked against the versions `Cargo.lock` pins.
#[test]
fn dependencies_are_past_the_advisories_the_catalogue_names() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let mut packages: Vec<(String, (u64, u64, u64))> = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = \"") {
            name = Some(n.trim_end_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = \""), name.take()) {
            let mut parts = v
                .trim_end_matches('"')
                .split(['.', '-', '+'])
                .map(|p| p.parse::<u64>().unwrap_or(0));
            let version = (
                parts.next().unwrap_or(0),
                parts.next().unwrap_or(0),
                parts.next().unwrap_or(0),
            );
            packages.push((n, version));
        }
    }
    assert!(
        packages.iter().any(|(n, _)| n == "slcs"),
        "parsed Cargo.lock"
    );
    let versions = |crate_name: &str| -> Vec<(u64, u64, u64)> {
        packages
            .iter()
            .filter(|(n, _)| n == crate_name)
            .map(|(_, v)| *v)
            .collect()
    };
    // (crate, the first fixed version, the advisories)
    for (crate_name, fixed, advisories) in [
        (
            "rustls",
            (0, 23, 18),
            "RUSTSEC-2024-0399, RUSTSEC-2024-0336",
        ),
        (
            "rustls-webpki",
            (0, 103, 12),
            "RUSTSEC-2026-0098, RUSTSEC-2026-0099, RUSTSEC-2023-0053",
        ),
        ("axum-core", (0, 2, 8), "RUSTSEC-2022-0055"),
        ("ed25519-dalek", (2, 0, 0), "RUSTSEC-2022-0093"),
    ] {
        for version in versions(crate_name) {
            assert!(
                version >= fixed,
                "{crate_name} {version:?} is before {fixed:?} ({advisories})"
            );
        }
    }
    assert!(
        !versions("rustls").is_empty() && !versions("rustls-webpki").is_empty(),
        "the TLS stack is where it was"
    );
    // Crates that must not be linked at all: the unmaintained `webpki`
    // (RUSTSEC-2023-0052) and `h2` (slcs offers no HTTP/2: RUSTSEC-2023-0034,
    // RUSTSEC-2024-0003, RUSTSEC-2024-0332).
    for absent in ["webpki", "h2"] {
        assert!(versions(absent).is_empty(), "{absent} is in Cargo.lock");
    }
}
