//! Strict `application/x-www-form-urlencoded` bodies for the OAuth endpoints.
//!
//! RFC 6749 §3.1/§3.2: "Request and response parameters MUST NOT be included
//! more than once" — a repeated parameter is refused, never resolved by
//! taking the first or last (ATTACKS AZ-07, parameter pollution). Appendix B:
//! the encoding is UTF-8; invalid percent escapes and invalid UTF-8 are
//! refused rather than replaced (ROB-11). Parameters with empty values are
//! treated as absent (RFC 6749 §3.1).

use axum::extract::{FromRequest, Request};
use axum::http::header;

use super::error::OAuthError;

/// Most parameters an OAuth request may carry.
const MAX_PARAMETERS: usize = 64;

/// A parsed form: unique names, decoded values.
#[derive(Clone, Debug, Default)]
pub struct OAuthForm {
    params: Vec<(String, String)>,
}

/// Why a form body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the request body")]
    BadEscape,
    /// Decoded bytes are not UTF-8.
    #[error("the request body is not UTF-8")]
    NotUtf8,
    /// A parameter appears twice.
    #[error(
        "parameter {0} is repeated (RFC 6749 §3.1: parameters must not be included more than once)"
    )]
    Repeated(String),
    /// Too many parameters.
    #[error("too many parameters")]
    TooMany,
    /// Too many parameters, the overflowing one a repeatable target
    /// (`audience`, `resource`): RFC 8693 §2.1.1 names this case
    /// `invalid_target` (ATTACKS TX-13).
    #[error("too many audience or resource values")]
    TooManyTargets,
}

/// Parameters that RFC 8693 §2.1 and RFC 8707 §2 allow more than once
/// (several audiences or resources of one token request). Every other
/// parameter is unique (RFC 6749 §3.1).
pub const REPEATABLE: &[&str] = &["audience", "resource"];

impl OAuthForm {
    /// Parses a body strictly: no parameter repeated.
    pub fn parse(body: &[u8]) -> Result<Self, FormError> {
        Self::parse_allowing(body, &[])
    }

    /// Parses a body strictly, except that the names in `repeatable` may
    /// appear more than once (read them with [`Self::all`]; [`Self::get`]
    /// answers `None` for a repeated name, so it is never resolved by
    /// taking one of the values).
    pub fn parse_allowing(body: &[u8], repeatable: &[&str]) -> Result<Self, FormError> {
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (
                    pair.get(..at).unwrap_or_default(),
                    pair.get(at + 1..).unwrap_or_default(),
                ),
                None => (pair, &b""[..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if params.iter().any(|(n, _)| *n == name) && !repeatable.contains(&name.as_str()) {
                return Err(FormError::Repeated(name));
            }
            if params.len() == MAX_PARAMETERS {
                return Err(if repeatable.contains(&name.as_str()) {
                    FormError::TooManyTargets
                } else {
                    FormError::TooMany
                });
            }
            params.push((name, value));
        }
        Ok(Self { params })
    }

    /// Every parameter with a non-empty value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The value of `name`, if present once and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        let mut values = self.params.iter().filter(|(n, _)| n == name);
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Some(first.1.as_str()).filter(|v| !v.is_empty())
    }

    /// The value of `name`, which the request must carry once and
    /// non-empty: `invalid_request` naming it otherwise (RFC 6749 §5.2).
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }

    /// Every non-empty value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Percent-encodes every byte outside RFC 3986's unreserved set, for a
/// query or form component.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Decodes one form component: `+` is a space, `%XX` a byte.
pub fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(|c| hex_value(*c));
                let lo = bytes.next().and_then(|c| hex_value(*c));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(FormError::BadEscape),
                }
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the request body must be application/x-www-form-urlencoded",
            ));
        }
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|_| OAuthError::invalid_request("the request body could not be read"))?;
        Self::parse_allowing(&body, REPEATABLE).map_err(|e| match e {
            FormError::TooManyTargets => OAuthError::invalid_target(e.to_string()),
            _ => OAuthError::invalid_request(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let form = OAuthForm::parse(b"grant_type=client_credentials&scope=a+b%20c&empty=").unwrap();
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert_eq!(form.get("scope"), Some("a b c"));
        assert_eq!(form.get("empty"), None);
        assert_eq!(form.get("missing"), None);
    }

    #[test]
    fn only_audience_and_resource_may_repeat_and_get_never_picks_one() {
        let form =
            OAuthForm::parse_allowing(b"audience=a&audience=b&resource=r", REPEATABLE).unwrap();
        assert_eq!(form.all("audience"), ["a", "b"]);
        assert_eq!(form.get("audience"), None, "repeated: never one of them");
        assert_eq!(form.get("resource"), Some("r"));
        assert!(OAuthForm::parse_allowing(b"scope=a&scope=b", REPEATABLE).is_err());
        assert!(OAuthForm::parse(b"audience=a&audience=b").is_err());
    }

    #[test]
    fn az_07_repeated_parameters_refused() {
        assert_eq!(
            OAuthForm::parse(b"grant_type=a&grant_type=b").unwrap_err(),
            FormError::Repeated("grant_type".into())
        );
        // Encoded names count as the same name.
        assert!(OAuthForm::parse(b"scope=a&sc%6Fpe=b").is_err());
    }

    #[test]
    fn rob_11_bad_encodings_refused() {
        assert_eq!(
            OAuthForm::parse(b"a=%zz").unwrap_err(),
            FormError::BadEscape
        );
        assert_eq!(OAuthForm::parse(b"a=%4").unwrap_err(), FormError::BadEscape);
        assert_eq!(
            OAuthForm::parse(b"a=%C0%AF").unwrap_err(),
            FormError::NotUtf8
        );
        assert_eq!(OAuthForm::parse(b"a=\xff").unwrap_err(), FormError::NotUtf8);
        assert_eq!(OAuthForm::parse(b"a=%00").unwrap().get("a"), Some("\0"));
        let many: Vec<String> = (0..65).map(|i| format!("p{i}=1")).collect();
        assert_eq!(
            OAuthForm::parse(many.join("&").as_bytes()).unwrap_err(),
            FormError::TooMany
        );
        let targets: Vec<String> = (0..65).map(|_| "resource=r".to_owned()).collect();
        assert_eq!(
            OAuthForm::parse_allowing(targets.join("&").as_bytes(), REPEATABLE).unwrap_err(),
            FormError::TooManyTargets
        );
    }
}
