//! The delegation-provenance extension decoder:
//! `slcs::pki::provenance::DelegationProvenance::from_der`, the strict DER
//! decode that relying parties, `slcs inspect` and the relying-party
//! library run on the extension value of a certificate.
//!
//! Properties, for every input the decoder accepts:
//! - it is canonical: `to_der(from_der(b)) == b`;
//! - decoding the re-encoding gives the same value;
//! - the JSON form (`slcs inspect --json`) reads back as the same value;
//! - the text renderings (`Display`, `chain_summary`) do not fail.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slcs::pki::provenance::DelegationProvenance;

fuzz_target!(|data: &[u8]| {
    let provenance = match DelegationProvenance::from_der(data) {
        Ok(provenance) => provenance,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };

    let encoded = provenance
        .to_der()
        .expect("a decoded provenance value encodes again");
    assert_eq!(encoded, data, "accepted a non-canonical encoding");
    let decoded = DelegationProvenance::from_der(&encoded).expect("the re-encoding decodes");
    assert_eq!(decoded, provenance, "decode(encode(x)) != x");

    let json = serde_json::to_string(&provenance).expect("serialises as JSON");
    let from_json: DelegationProvenance =
        serde_json::from_str(&json).expect("its JSON form reads back");
    assert_eq!(from_json, provenance, "JSON round trip changed the value");

    let _ = provenance.to_string();
    let _ = provenance.chain_summary();
    assert!(provenance.presenter().is_some(), "a decoded chain has a presenter");
});
