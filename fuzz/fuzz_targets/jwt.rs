//! Access-token verification: `slcs::oauth::jwt::verify` (the resource
//! server's check, behind `POST /certificate` and the registration API) and
//! `verify_for_any_audience` (introspection and revocation), against a fixed
//! key set: the test keys in `fuzz/fixtures/jwt-keys/` (current and next
//! EdDSA, retired ES256 and RS256 keys, all still accepted at `NOW`).
//!
//! Two kinds of input, told apart by their shape:
//! - anything that is not a JSON value is a compact token, verified as is
//!   (header, shape and signature checks on hostile bytes);
//! - a JSON value is a claims set: it is signed with the current key by
//!   `sign_compact` (as `mint` would sign it, `typ` `at+jwt`) and the token
//!   verified, so that mutated claims reach the checks after the signature.
//!
//! Properties: whatever `verify` accepts, `verify_for_any_audience` accepts
//! with the same claims; accepted claims are minted again by `mint` into a
//! token that verifies with the same claims (an `act` value holding a
//! fraction compared by presence only: see `comparable`).

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[path = "common/json.rs"]
mod json;

use json::has_float;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;
use slcs::oauth::jwt::{
    mint, sign_compact, verify, verify_for_any_audience, AccessTokenClaims, Expectations, JwtError,
    ACCESS_TOKEN_TYP,
};
use slcs::oauth::keys::{KeySet, SigningAlgorithm};

/// The fixed "now" of every verification (2026-05-28T20:26:40Z); the seed
/// tokens were minted for it by `examples/make_seeds.rs`.
const NOW: i64 = 1_780_000_000;
const ISSUER: &str = "https://localhost:8443";
const AUDIENCE: &str = "https://localhost:8443/certificate";

fn expectations() -> Expectations<'static> {
    Expectations {
        issuer: ISSUER,
        audience: AUDIENCE,
        now: NOW,
        leeway_secs: 30,
    }
}

/// Copies the committed key directory to a private temporary directory
/// (the loader insists on modes 0700 and 0600, which git does not keep),
/// loads it, and removes the copy.
fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jwt-keys");
        let copy = private_copy(&source);
        let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("NOW is a valid time");
        let keys = KeySet::load_or_create(&copy, SigningAlgorithm::EdDsa, now)
            .expect("the fixture key set loads");
        let _ = std::fs::remove_dir_all(&copy);
        keys
    })
}

fn private_copy(source: &Path) -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let dir = std::env::temp_dir().join(format!(
        "slcs-fuzz-jwt-keys-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("create a private temporary key directory");
    for entry in std::fs::read_dir(source).expect("read fuzz/fixtures/jwt-keys") {
        let entry = entry.expect("list fuzz/fixtures/jwt-keys");
        let bytes = std::fs::read(entry.path()).expect("read a fixture key file");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(entry.file_name()))
            .expect("copy a fixture key file");
        std::io::Write::write_all(&mut file, &bytes).expect("write a fixture key file");
    }
    dir
}

/// The claims as the round trip can keep them. `act` is carried as an
/// opaque JSON value, and serde_json (without its `float_roundtrip`
/// feature, which slcs does not enable) does not parse every long decimal
/// fraction to the nearest double: `…772.99999999999999999998880` reads
/// as `…772.9999999`, which prints and reads back as `…773.0`. slcs only
/// ever writes `act` objects of strings, so an `act` with a fraction in it
/// is compared by its presence only.
fn comparable(mut claims: AccessTokenClaims) -> AccessTokenClaims {
    if claims.act.as_ref().is_some_and(has_float) {
        claims.act = Some(Value::Null);
    }
    claims
}

fn check(token: &str) {
    let keys = keys();
    let expect = expectations();
    let for_resource = verify(keys, token, &expect);
    let for_introspection = verify_for_any_audience(keys, token, &expect);
    if let Err(error) = &for_resource {
        let _ = error.to_string();
    }
    // What the resource server accepts, introspection accepts too.
    if let Ok(claims) = &for_resource {
        assert_eq!(
            for_introspection.as_ref().ok(),
            Some(claims),
            "verify accepted a token that verify_for_any_audience refused"
        );
    }
    let Ok(claims) = for_introspection else {
        return;
    };
    match mint(keys, &claims) {
        Ok(again) => {
            let reverified = verify_for_any_audience(keys, &again, &expect)
                .unwrap_or_else(|e| panic!("re-minted accepted claims are refused: {e}"));
            assert_eq!(
                comparable(reverified),
                comparable(claims),
                "re-minting changed the claims"
            );
        }
        // The re-minted token may carry a longer signature than the one
        // accepted; over the size limit is the limit working.
        Err(JwtError::TooLarge) => {}
        Err(error) => panic!("accepted claims cannot be minted again: {error}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // A bearer token reaches the verifier only as a header value or
        // form field, both text; still, the lossy form is worth a look.
        check(&String::from_utf8_lossy(data));
        return;
    };
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(claims) => match sign_compact(keys(), ACCESS_TOKEN_TYP, &claims) {
            Ok(token) => check(&token),
            Err(JwtError::TooLarge) => {}
            Err(error) => panic!("signing fuzzed claims failed: {error}"),
        },
        Err(_) => check(text),
    }
});
