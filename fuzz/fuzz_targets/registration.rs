//! Client registration (`POST`/`PUT /rest/v1/oidc/clients`): the JSON body
//! deserialised as `slcs::oauth::clients::ClientRepresentation` (the
//! EBRAINS envelope around a Keycloak client, `deny_unknown_fields`), then
//! `validate_registration` as the registry runs it, with the registry's
//! allowed scopes, on a production and a development server, for an
//! ordinary caller and an administrator.
//!
//! Properties, for every registration accepted:
//! - `create_client` builds the client, and the stored form of that client
//!   (the store's JSON) reads back as the same client;
//! - GET then PUT is stable: the client's own representation, serialised,
//!   parsed and validated again by its owner, and applied with
//!   `apply_update`, gives back the same client, and `needs_review` sees
//!   nothing widened. (A JWK Set holding a non-integer number is compared
//!   by presence only: see `comparable`.)

#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

#[path = "common/json.rs"]
mod json;

use json::has_float;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use slcs::oauth::clients::{
    apply_update, create_client, needs_review, to_representation, validate_registration, Client,
    ClientRepresentation, RegistrationContext,
};
use slcs::oauth::metadata::SCOPES;
use slcs::oauth::secrets::{SecretPepper, PEPPER_BYTES};
use time::OffsetDateTime;

const CALLER: &str = "messines";

fn allowed_scopes() -> &'static BTreeSet<String> {
    static SCOPES_SET: OnceLock<BTreeSet<String>> = OnceLock::new();
    SCOPES_SET.get_or_init(|| SCOPES.iter().map(|s| (*s).to_owned()).collect())
}

fn pepper() -> &'static SecretPepper {
    static PEPPER: OnceLock<SecretPepper> = OnceLock::new();
    PEPPER.get_or_init(|| {
        SecretPepper::from_bytes(&[7u8; PEPPER_BYTES]).expect("a pepper of the right length")
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("a valid time")
}

fn context(development: bool, caller_is_admin: bool) -> RegistrationContext<'static> {
    RegistrationContext {
        caller: CALLER.into(),
        caller_is_admin,
        development,
        now: now(),
        existing: None,
        allowed_scopes: allowed_scopes(),
        client_id_names_a_user: false,
    }
}

/// The client as a JSON round trip can keep it. A JWK Set is stored as an
/// opaque JSON value and may carry members slcs does not read; serde_json
/// (without its `float_roundtrip` feature, which slcs does not enable) does
/// not parse every long decimal fraction to the nearest double, so such a
/// number can change by one unit in the last place each time it is read.
/// A JWK Set with a fraction in it is compared by its presence only.
fn comparable(client: &Client) -> Client {
    let mut client = client.clone();
    if client.jwks.as_ref().is_some_and(has_float) {
        client.jwks = Some(Value::Null);
    }
    client
}

fn round_trip(rep: &ClientRepresentation, ctx: &RegistrationContext<'_>) {
    let validated = match validate_registration(rep, ctx) {
        Ok(validated) => validated,
        Err(error) => {
            // Answered as an RFC 7591 / RFC 9457 error: both parts render.
            let _ = error.to_string();
            let _ = error.oauth_error_code();
            return;
        }
    };
    let _ = (validated.id(), validated.kind(), validated.grant_types());
    let created = create_client(validated, ctx, pepper()).expect("a validated client is created");
    let client = created.client;

    // The store keeps clients as JSON.
    let stored = serde_json::to_string(&client).expect("a client serialises");
    let loaded: Client = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("a stored client does not read back: {e}\n{stored}"));
    assert_eq!(
        comparable(&loaded),
        comparable(&client),
        "the stored form changed the client"
    );

    // GET, then PUT of what GET returned, by the owner.
    let body = serde_json::to_string(&to_representation(&client)).expect("serialises");
    let again: ClientRepresentation = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET output is not a valid PUT body: {e}\n{body}"));
    let put_ctx = RegistrationContext {
        existing: Some(&client),
        ..ctx.clone()
    };
    let revalidated = validate_registration(&again, &put_ctx)
        .unwrap_or_else(|e| panic!("GET output refused on PUT: {e}\n{body}"));
    let updated = apply_update(&client, revalidated, &put_ctx, pepper(), false)
        .expect("a revalidated client is updated")
        .client;
    let (before, after) = (comparable(&client), comparable(&updated));
    assert_eq!(after, before, "GET then PUT changed the client\n{body}");
    assert!(
        !needs_review(&before, &after),
        "an unchanged client needs review"
    );
}

fuzz_target!(|data: &[u8]| {
    let rep: ClientRepresentation = match serde_json::from_slice(data) {
        Ok(rep) => rep,
        Err(_) => return,
    };
    for (development, caller_is_admin) in [(false, false), (true, false), (false, true)] {
        round_trip(&rep, &context(development, caller_is_admin));
    }
});
