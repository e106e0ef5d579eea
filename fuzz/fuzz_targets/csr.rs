//! PKCS#10 requests as the certificate endpoint checks them:
//! `slcs::pki::csr::verify_csr` (size limit, PEM or DER, strict DER parse,
//! key policy, proof of possession) under the key policy of the built-in
//! certificate profile, which is what `IssuanceEngine::prepare` applies.
//!
//! Property: a request accepted as DER is accepted, with the same key, when
//! the same bytes arrive as a PEM block (both block labels).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slcs::pki::csr::{verify_csr, MAX_CSR_BYTES};
use slcs::pki::goodkey::KeyPolicy;
use slcs::pki::profile::Profile;

fn policy() -> &'static KeyPolicy {
    static POLICY: OnceLock<KeyPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        Profile::builtin()
            .expect("the built-in certificate profile loads")
            .keys
    })
}

fn as_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    // The input as it comes: DER, or PEM when it is PEM text.
    let result = verify_csr(data, policy);
    if let Err(error) = &result {
        // Error messages are shown to clients; rendering one must not fail.
        let _ = error.to_string();
    }
    let Ok(accepted) = result else {
        return;
    };
    let _ = accepted.key().label();
    // Accepted and not PEM text itself: it was DER. The same DER armoured as
    // PEM must give the same key. (A PEM of a CSR just under the size limit
    // can exceed the limit; that is the limit working, not a difference.)
    if data.trim_ascii_start().starts_with(b"-----BEGIN") {
        return;
    }
    for tag in ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"] {
        let text = as_pem(tag, data);
        if text.len() > MAX_CSR_BYTES {
            continue;
        }
        match verify_csr(text.as_bytes(), policy) {
            Ok(again) => {
                assert_eq!(again.spki_der(), accepted.spki_der(), "{tag}: another key");
                assert_eq!(again.key(), accepted.key(), "{tag}: another key description");
            }
            Err(error) => panic!("accepted as DER, refused as PEM ({tag}): {error}"),
        }
    }
});
