//! Bad CSRs are refused with a clear error and leave no issuance-log entry
//! (ATTACKS CSR-01..CSR-07, CSR-11).

use std::path::Path;

use slcs::pki::issuer::IssueError;

use crate::issuance::{KeyKind, openssl_csr, person_request, rcgen_csr};
use crate::{now, open_engine, openssl};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/csr")
            .join(name),
    )
    .unwrap()
}

/// A CSR for `key` (an OpenSSL key file) with `req` arguments.
fn csr_with_key(dir: &Path, key: &Path, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{}.csr", crate::rand_tag()));
    let mut args = vec![
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=x",
    ];
    args.extend(extra);
    args.extend(["-out", out.to_str().unwrap()]);
    openssl(&args);
    std::fs::read(out).unwrap()
}

fn genpkey(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    let out = dir.join(format!("{}.key", crate::rand_tag()));
    let mut all = vec!["genpkey"];
    all.extend(args);
    all.extend(["-out", out.to_str().unwrap()]);
    openssl(&all);
    out
}

/// Flips a bit in the last byte (inside the signature) of a PEM CSR.
fn corrupt_signature(pem_csr: &[u8]) -> Vec<u8> {
    let block = pem::parse(pem_csr).unwrap();
    let mut der = block.contents().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    der
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_01_csr_02_csr_03_csr_04_csr_06_csr_11_bad_csrs_are_refused_with_a_clear_error_and_no_log_entry()
 {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (_config, opened) = open_engine(&dir.join("data"), "ecdsa-p256");

    let rsa2048 = genpkey(
        dir,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let dsa_params = dir.join("dsa-params.pem");
    openssl(&[
        "genpkey",
        "-genparam",
        "-algorithm",
        "DSA",
        "-pkeyopt",
        "dsa_paramgen_bits:2048",
        "-out",
        dsa_params.to_str().unwrap(),
    ]);
    let dsa = genpkey(dir, &["-paramfile", dsa_params.to_str().unwrap()]);

    let good_p256 = rcgen_csr(KeyKind::P256);
    let mut trailing = good_p256.clone();
    trailing.extend_from_slice(&[0, 0]);
    let mut oversized = b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec();
    oversized.extend(std::iter::repeat_n(b'A', 64 * 1024));

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "CSR-01 bad signature",
            corrupt_signature(&openssl_csr(dir, KeyKind::P256, &[])),
            "proof of possession",
        ),
        (
            "CSR-03 RSA-1024",
            openssl_csr(dir, KeyKind::Rsa(1024), &[]),
            "1024 bits",
        ),
        ("CSR-03 RSA-8192", fixture("rsa-8192.pem"), "8192 bits"),
        ("CSR-04 RSA e=3", fixture("rsa-e3.pem"), "e=65537"),
        (
            "goodkey small prime factor",
            fixture("rsa-small-factor.pem"),
            "small prime",
        ),
        ("goodkey ROCA", fixture("rsa-roca.pem"), "ROCA"),
        ("goodkey Fermat", fixture("rsa-fermat.pem"), "Fermat"),
        (
            "CSR-06 P-192",
            csr_with_key(
                dir,
                &genpkey(
                    dir,
                    &[
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:prime192v1",
                    ],
                ),
                &[],
            ),
            "P-192",
        ),
        (
            "CSR-06 secp256k1",
            csr_with_key(
                dir,
                &genpkey(
                    dir,
                    &[
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:secp256k1",
                    ],
                ),
                &[],
            ),
            "secp256k1",
        ),
        ("CSR-02 DSA", csr_with_key(dir, &dsa, &[]), "DSA"),
        (
            "CSR-02 MD5",
            csr_with_key(dir, &rsa2048, &["-md5"]),
            "md5WithRSAEncryption",
        ),
        (
            "CSR-02 SHA-1",
            csr_with_key(dir, &rsa2048, &["-sha1"]),
            "sha1WithRSAEncryption",
        ),
        ("trailing bytes after the DER", trailing, "trailing data"),
        ("CSR-11 over 64 KiB", oversized, "limit is 65536"),
        ("garbage", b"\x00\x01garbage\xff".to_vec(), "not valid DER"),
        ("empty", Vec::new(), "empty"),
        (
            "a certificate, not a CSR",
            opened.engine.ca_certificate().pem().as_bytes().to_vec(),
            "CERTIFICATE REQUEST",
        ),
    ];

    for (label, csr, expected) in cases {
        let err = opened
            .engine
            .issue(&csr, &person_request("Alice", now()), now())
            .await
            .expect_err(label);
        assert!(
            matches!(err, IssueError::Csr(_)),
            "{label}: expected a CSR error, got {err:?}"
        );
        assert!(err.is_request_error(), "{label}");
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "{label}: message {message:?} does not mention {expected:?}"
        );
        assert_eq!(
            opened.store.issuance_count().await.unwrap(),
            0,
            "{label}: a refused request left an issuance-log entry"
        );
    }

    // The same key material, well-formed, is accepted: the refusals above are
    // about the flaw, not the plumbing.
    opened
        .engine
        .issue(
            &csr_with_key(dir, &rsa2048, &["-sha256"]),
            &person_request("A", now()),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(opened.store.issuance_count().await.unwrap(), 1);
}

/// A blocklisted key (SPKI SHA-256 in the profile's blocklist) is refused.
#[tokio::test]
async fn blocklisted_keys_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let csr = rcgen_csr(KeyKind::P256);
    use x509_parser::prelude::FromDer as _;
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&csr).unwrap();
    let spki = parsed.certification_request_info.subject_pki.raw;
    let hash = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki));
    std::fs::write(
        work.path().join("blocked.txt"),
        format!("# compromised\n{hash}\n"),
    )
    .unwrap();
    let profile =
        slcs::pki::profile::BUILTIN_PROFILE.to_owned() + "\nblocklist = \"blocked.txt\"\n";
    std::fs::write(work.path().join("profile.toml"), profile).unwrap();

    let data = work.path().join("data");
    let profile_path = work.path().join("profile.toml");
    let config = crate::config_for(
        &data,
        &[("SLCS_CA_PROFILE", profile_path.to_str().unwrap())],
    );
    let opened = crate::open_blocking(&config);
    let err = opened
        .engine
        .issue(&csr, &person_request("A", now()), now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("blocklisted"), "{err}");
    assert_eq!(opened.store.issuance_count().await.unwrap(), 0);
    opened
        .engine
        .issue(
            &rcgen_csr(KeyKind::P256),
            &person_request("A", now()),
            now(),
        )
        .await
        .unwrap();
}
