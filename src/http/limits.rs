//! Abuse limits in front of the handlers (ATTACKS ROB-*):
//!
//! - **rate limits** on what an abuser would hammer — the token,
//!   certificate, device, introspection and revocation endpoints and the
//!   sign-in and other credential-checking forms — per client address,
//!   `429` with `Retry-After` before any parsing, hashing or store access;
//!   and per client id (HTTP Basic) for clients that proved their secret:
//!   only answered (2xx) requests use a client's budget, so nobody can
//!   lock a client out by sending its id with a wrong secret (that is the
//!   per-address limit's business);
//! - **load shedding**: at most `server.max_in_flight` requests are handled
//!   at once, and one more is refused at once with `503` and
//!   `Retry-After` rather than queued, so latency stays bounded when the
//!   service is saturated (tower's `ConcurrencyLimit` under `LoadShed`).
//!
//! Connection limits (per address, in all, slow clients) are the
//! listener's ([`super::server`]). The rate limiters are GCRA (the
//! `governor` crate): a steady rate with bursts of twice that, remembered
//! per key in memory and forgotten once idle.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::{PageError, error_response};

/// Keys remembered before idle ones are forgotten.
const FORGET_ABOVE: usize = 100_000;

/// The rate limiters.
pub struct RateLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    /// Clients over their budget, until when.
    client_blocked: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_address", &self.per_address.is_some())
            .field("per_client", &self.per_client.is_some())
            .finish()
    }
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl RateLimits {
    /// Limits of `per_address` and `per_client` requests a second (0: none).
    pub fn new(per_address: u32, per_client: u32) -> Self {
        Self {
            per_address: limiter(per_address),
            per_client: limiter(per_client),
            client_blocked: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

/// What a limited request is, by where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limited {
    /// Not limited here.
    No,
    /// A JSON endpoint: refused with a JSON error.
    Api,
    /// A page's form: refused with a page.
    Page,
}

/// Which requests are rate limited: the ones that check a credential or
/// issue something. Reading pages and metadata is not.
fn limited(method: &Method, path: &str) -> Limited {
    if method != Method::POST {
        return Limited::No;
    }
    match path {
        "/token"
        | "/device_authorization"
        | "/introspect"
        | "/revoke"
        | "/certificate"
        | "/oauth2/getcert"
        | "/oauth/certificate/" => Limited::Api,
        "/login"
        | "/device"
        | "/device/confirm"
        | "/admin/verify"
        | "/account/password"
        | "/account/reset"
        | "/account/approvals/revoke-all" => Limited::Page,
        _ => Limited::No,
    }
}

/// The client id of an HTTP Basic `Authorization` header (RFC 6749
/// §2.3.1), if any: the part before the colon, as sent (still
/// form-encoded; a key, not an identity).
fn basic_client_id(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    if encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, _) = text.split_once(':')?;
    Some(id.chars().take(256).collect())
}

fn refused(kind: Limited, wait: std::time::Duration) -> Response {
    let seconds = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1);
    if kind == Limited::Page {
        return PageError::TooMany {
            message: format!(
                "Too many requests from your address. Wait {seconds} seconds, then try again."
            ),
            retry_after: seconds,
        }
        .into_response();
    }
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        &format!("too many requests; retry after {seconds} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The middleware: checks the address's and the client's budgets.
pub async fn rate_limit(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let kind = limited(request.method(), request.uri().path());
    if kind == Limited::No {
        return next.run(request).await;
    }
    if let Some(limiter) = &limits.per_address
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        if limiter.len() > FORGET_ABOVE {
            limiter.retain_recent();
        }
        if let Err(not_until) = limiter.check_key(&peer.ip()) {
            metrics::counter!(crate::observability::RATE_LIMITED, "limit" => "per_address")
                .increment(1);
            return refused(kind, not_until.wait_time_from(limiter.clock().now()));
        }
    }
    let client = limits.per_client.as_ref().and(basic_client_id(&request));
    if let Some(client) = &client
        && let Some(wait) = limits.client_wait(client)
    {
        metrics::counter!(crate::observability::RATE_LIMITED, "limit" => "per_client").increment(1);
        return refused(kind, wait);
    }
    let response = next.run(request).await;
    if let Some(client) = client
        && response.status().is_success()
    {
        limits.client_answered(client);
    }
    response
}

impl RateLimits {
    fn blocked(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        self.client_blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `client` must still wait, if it is over its budget.
    fn client_wait(&self, client: &str) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        let mut blocked = self.blocked();
        match blocked.get(client) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                blocked.remove(client);
                None
            }
            None => None,
        }
    }

    /// Counts one answered request of `client`; over budget, it waits.
    fn client_answered(&self, client: String) {
        let Some(limiter) = &self.per_client else {
            return;
        };
        if limiter.len() > FORGET_ABOVE {
            limiter.retain_recent();
        }
        if let Err(not_until) = limiter.check_key(&client) {
            let wait = not_until.wait_time_from(limiter.clock().now());
            let mut blocked = self.blocked();
            if blocked.len() > FORGET_ABOVE {
                let now = std::time::Instant::now();
                blocked.retain(|_, until| *until > now);
            }
            blocked.insert(client, std::time::Instant::now() + wait);
        }
    }
}

/// The answer to a request shed because `server.max_in_flight` requests
/// are being handled (RFC 9110 §15.6.4: 503 with `Retry-After`).
pub async fn overloaded(_: tower::BoxError) -> Response {
    metrics::counter!(crate::observability::LOAD_SHED).increment(1);
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the service is at capacity; retry in a second",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_credential_checking_posts_are_limited() {
        assert_eq!(limited(&Method::POST, "/token"), Limited::Api);
        assert_eq!(limited(&Method::POST, "/certificate"), Limited::Api);
        assert_eq!(limited(&Method::POST, "/login"), Limited::Page);
        assert_eq!(limited(&Method::GET, "/login"), Limited::No);
        assert_eq!(limited(&Method::GET, "/jwks"), Limited::No);
        assert_eq!(
            limited(&Method::POST, "/account/approvals/x/revoke"),
            Limited::No
        );
    }

    #[test]
    fn a_burst_of_twice_the_rate_passes_then_the_key_waits() {
        let limits = RateLimits::new(5, 0);
        let limiter = limits.per_address.as_ref().unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let passed = (0..20).filter(|_| limiter.check_key(&ip).is_ok()).count();
        assert_eq!(passed, 10);
        assert!(
            limiter.check_key(&other).is_ok(),
            "another address has its own budget"
        );
        assert!(limits.per_client.is_none(), "0 is no limit");
        let wait = match limiter.check_key(&ip) {
            Err(not_until) => not_until.wait_time_from(limiter.clock().now()),
            Ok(_) => panic!("over budget"),
        };
        assert!(wait <= std::time::Duration::from_millis(200), "{wait:?}");
    }

    #[test]
    fn only_answered_requests_use_a_clients_budget() {
        let limits = RateLimits::new(0, 2);
        // Refused requests (a wrong secret) never reach `client_answered`:
        // however many, the client is not blocked.
        assert_eq!(limits.client_wait("portal"), None);
        // A burst of twice the rate passes; the fifth is one too many.
        for _ in 0..5 {
            limits.client_answered("portal".into());
        }
        let wait = limits.client_wait("portal").expect("over its budget");
        assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
        assert_eq!(limits.client_wait("other"), None);
    }

    #[test]
    fn the_basic_client_id_is_read_without_trusting_it() {
        let request = |value: &str| {
            axum::http::Request::builder()
                .header(header::AUTHORIZATION, value)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode("portal:secret");
        assert_eq!(
            basic_client_id(&request(&format!("Basic {encoded}"))).as_deref(),
            Some("portal")
        );
        assert_eq!(basic_client_id(&request("Bearer x")), None);
        assert_eq!(basic_client_id(&request("Basic !!!")), None);
    }
}
