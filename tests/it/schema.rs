//! The OpenAPI description (`GET /openapi.json`) against the running
//! server: the committed copy in `docs/openapi.json` is the served one, and
//! schemathesis (PyPI; `.ci/run` installs it into `.venv` and sets
//! `SCHEMATHESIS_REQUIRED=1`) generates requests from the description and
//! finds no 5xx and no answer outside it.

use std::path::Path;
use std::process::Command;

use crate::Server;

/// `docs/openapi.json` is what the server serves; `UPDATE_OPENAPI=1` writes
/// it after a change to the API.
#[test]
fn the_committed_description_is_the_served_one() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let served = server.get("/openapi.json");
    assert_eq!(served.status, 200);
    assert!(
        served
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json"))
    );
    let served = served.text();
    let document: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let committed_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, format!("{served}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed.trim_end() == served.trim_end(),
        "docs/openapi.json differs from GET /openapi.json: run UPDATE_OPENAPI=1 cargo test the_committed_description"
    );
}

/// The whole API against its description: schemathesis's coverage,
/// fuzzing and stateful phases, with a real credential for each security scheme (a registered
/// client's Basic secret, its access token, the admin token), find no 5xx,
/// no status, media type, header or body outside the description.
#[test]
fn api_schema_fuzzing_finds_no_server_error_and_no_schema_violation() {
    let Some(python) = crate::venv_python("schemathesis", "SCHEMATHESIS_REQUIRED") else {
        return;
    };
    let st = python.with_file_name("st");
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &[
            // Thousands of requests from one address and one client.
            ("SLCS_SERVER_RATE_PER_ADDRESS", "0"),
            ("SLCS_SERVER_RATE_PER_CLIENT", "0"),
        ],
    );
    let (created, secret) =
        crate::token::register(&server, &crate::token::service_client_json("schemathesis"));
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = secret.unwrap();
    let token = crate::token::token_basic(
        &server,
        "schemathesis",
        &secret,
        "grant_type=client_credentials&scope=slcs%3Acertificate",
    );
    assert_eq!(token.status, 200, "{}", token.text());
    let access_token = token.json()["access_token"].as_str().unwrap().to_owned();

    let ca = server.data_dir.join("ca").join("ca.pem");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let output = Command::new(&st)
        // Its cache (`.schemathesis/`) goes with the scratch directory.
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(format!(
            "https://localhost:{}/openapi.json",
            server.addr.port()
        ))
        .arg("--tls-verify")
        .arg(&ca)
        .env("SLCS_ST_CLIENT_ID", "schemathesis")
        .env("SLCS_ST_CLIENT_SECRET", &secret)
        .env("SLCS_ST_ACCESS_TOKEN", &access_token)
        .env("SLCS_ST_ADMIN_TOKEN", server.admin_token())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
    // The figures for the record (docs/security.md).
    let cases = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_default()
        .trim();
    println!("schemathesis: {cases}");
    assert!(
        cases.contains("passed") && !cases.contains("failed"),
        "{stdout}"
    );
    // The server is still up and answers.
    assert_eq!(server.get("/healthz").status, 200);
}
