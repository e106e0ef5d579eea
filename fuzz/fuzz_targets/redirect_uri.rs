//! Redirect URIs: the registration rules
//! (`slcs::oauth::clients::RegisteredRedirectUri::parse`, production and
//! development) and the match of a presented `redirect_uri` against a
//! registered one (`RegisteredRedirectUri::matches`, what
//! `Client::redirect_uri` and the authorization endpoint use).
//!
//! Input: the registered URI, a NUL byte, the presented URI (without a NUL
//! the presented URI is the registered one).
//!
//! Properties, for a URI accepted as registrable:
//! - it matches itself, and matches a presented URI exactly when the two
//!   are the same string (no normalisation of any kind);
//! - production rules are never looser than development rules;
//! - a stored URI reads back (`TryFrom<String>`, the store's lenient
//!   re-check; serde) as the same URI;
//! - its host, shown on consent pages, is non-empty and part of it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slcs::oauth::clients::RegisteredRedirectUri;

fn check(registered: &str, presented: &str) {
    let production = RegisteredRedirectUri::parse(registered, false);
    let development = RegisteredRedirectUri::parse(registered, true);
    if let Err(problem) = &production {
        let _ = problem.to_string();
    }
    if production.is_ok() {
        assert!(
            development.is_ok(),
            "accepted in production, refused in development"
        );
    }
    let Ok(uri) = development else {
        return;
    };
    assert_eq!(uri.as_str(), registered);
    assert!(uri.matches(registered), "a registered URI does not match itself");
    assert_eq!(
        uri.matches(presented),
        registered == presented,
        "matching is not exact string equality"
    );

    let host = uri.host();
    assert!(!host.is_empty(), "an accepted URI has an empty host");
    assert!(registered.contains(host), "the host is not part of the URI");

    let stored = RegisteredRedirectUri::try_from(registered.to_owned())
        .unwrap_or_else(|p| panic!("a registered URI is refused when read back: {p}"));
    assert_eq!(stored, uri);
    let json = serde_json::to_string(&uri).expect("serialises");
    let back: RegisteredRedirectUri =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("stored form refused: {e}"));
    assert_eq!(back, uri);
    assert_eq!(String::from(back), registered);
}

fuzz_target!(|data: &[u8]| {
    let (registered, presented) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let registered = String::from_utf8_lossy(registered);
    let presented = String::from_utf8_lossy(presented);
    check(&registered, &presented);
    // The presented URI goes through the same rules (a client may register
    // what another presents).
    check(&presented, &registered);
});
