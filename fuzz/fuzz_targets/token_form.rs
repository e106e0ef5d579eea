//! `application/x-www-form-urlencoded` bodies of `/token`, `/introspect`,
//! `/revoke` and `/certificate`: `slcs::http::form::OAuthForm::parse_allowing`
//! with `REPEATABLE` (what the `OAuthForm` extractor runs on the body), then
//! `slcs::http::extract::presented_credentials`, which reads the client's
//! credentials from the form and the `Authorization` header (including the
//! HTTP Basic decoding and the client-assertion peek).
//!
//! Input: the body, optionally followed by a NUL byte and the value of an
//! `Authorization` header.
//!
//! Properties:
//! - `parse` (nothing repeatable) accepts only what `parse_allowing` accepts,
//!   with the same parameters;
//! - `get(name)` answers for every parameter with a value, except a
//!   repeatable one (`audience`, `resource`) given more than once, and then
//!   its answer is the only value;
//! - re-encoding the parsed parameters with `encode` and parsing again gives
//!   the same parameters;
//! - `decode(encode(s)) == s` for every string.

#![no_main]

use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use slcs::http::extract::presented_credentials;
use slcs::http::form::{decode, encode, OAuthForm, REPEATABLE};

fn pairs(form: &OAuthForm) -> Vec<(String, String)> {
    form.iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (body, authorization) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };

    // decode/encode on arbitrary text.
    let text = String::from_utf8_lossy(body);
    assert_eq!(
        decode(encode(&text).as_bytes()).as_deref(),
        Ok(&*text),
        "decode(encode(s)) != s"
    );

    let strict = OAuthForm::parse(body);
    let form = match OAuthForm::parse_allowing(body, REPEATABLE) {
        Ok(form) => form,
        Err(error) => {
            let _ = error.to_string();
            assert!(strict.is_err(), "parse accepted what parse_allowing refused");
            return;
        }
    };
    if let Ok(strict) = &strict {
        assert_eq!(pairs(strict), pairs(&form), "parse and parse_allowing disagree");
    }

    let parsed = pairs(&form);
    for (name, value) in &parsed {
        let values = form.all(name);
        assert!(values.contains(&value.as_str()));
        match form.get(name) {
            Some(one) => {
                assert_eq!(values, [one], "get answered for a repeated parameter");
            }
            // Only a repeatable name can be present more than once (an
            // empty occurrence counts: `get` never picks one of several).
            None => assert!(
                REPEATABLE.contains(&name.as_str()),
                "get ignored {name:?}, which is given once"
            ),
        }
    }

    // The parsed form, written out again, parses to the same parameters.
    let rewritten = parsed
        .iter()
        .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let reparsed = OAuthForm::parse_allowing(rewritten.as_bytes(), REPEATABLE)
        .unwrap_or_else(|e| panic!("the re-encoded form is refused: {e}"));
    assert_eq!(pairs(&reparsed), parsed, "re-encoding changed the form");

    // The client's credentials, as /token reads them.
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    match presented_credentials(&headers, &form, None) {
        Ok(presented) => {
            let _ = presented.used_basic();
        }
        Err(error) => {
            let _ = format!("{error:?}");
        }
    }
});
