//! pkilint (an independent PKIX linter, from PyPI) finds nothing to report on
//! a sample certificate of every key type, alone and as a signer/signee pair.
//!
//! `.ci/run` installs pkilint into `.venv` and sets `PKILINT_REQUIRED=1`,
//! so in CI a missing linter fails the test instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::issuance::{ALL_KEYS, person_request, rcgen_csr};
use crate::{now, open_engine};

fn pkilint_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("PKILINT_BIN_DIR").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("lint_pkix_cert").is_file())
}

fn lint(tool: &Path, args: &[&str]) -> String {
    let output = Command::new(tool).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && stdout.trim().is_empty(),
        "{} {args:?} reported:\n{stdout}{stderr}",
        tool.display()
    );
    stdout
}

#[tokio::test]
async fn pkilint_reports_nothing_on_every_key_type() {
    let Some(bin) = pkilint_dir() else {
        assert!(
            std::env::var("PKILINT_REQUIRED").is_err(),
            "pkilint is required (PKILINT_REQUIRED) but not installed"
        );
        println!("pkilint not installed; skipping (run .ci/run to install it)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    for ca_type in ["ecdsa-p256", "ecdsa-p384", "rsa-3072"] {
        let data = work.path().join(ca_type);
        let (config, opened) = open_engine(&data, ca_type);
        for kind in ALL_KEYS {
            let issued = opened
                .engine
                .issue(
                    &rcgen_csr(kind),
                    &person_request("Alice Example", now()),
                    now(),
                )
                .await
                .unwrap();
            let cert = work.path().join(format!("{ca_type}-{}.pem", kind.name()));
            std::fs::write(&cert, &issued.pem).unwrap();
            let cert = cert.to_str().unwrap();
            lint(
                &bin.join("lint_pkix_cert"),
                &["lint", "-s", "WARNING", cert],
            );
            lint(
                &bin.join("lint_pkix_signer_signee_cert_chain"),
                &["lint", config.ca.cert.to_str().unwrap(), cert],
            );
        }
    }
}
