//! The people workloads of the load harness: `refresh` (rotating refresh
//! tokens) and `code-flow` (authorization request to code to tokens, for a
//! person already signed in whose approval covers the request).
//!
//! Before the clock starts: an account, a confidential web client, a few
//! sign-ins through the real login page (their argon2 cost is reported on
//! its own, as `login_ms`, and never mixed into the flows), and one
//! approval through the real consent page.

use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{FORM, LoadError, Outcome};
use crate::admin_client::{AdminClient, Answer, Connection, percent_encode};

/// Where codes are sent (never fetched: the harness reads the redirect).
const REDIRECT_URI: &str = "https://load.example/cb";
/// Sign-ins timed during set-up.
const TIMED_LOGINS: u32 = 3;

/// What the people workloads share.
#[derive(Clone, Debug)]
pub(super) struct People {
    basic: String,
    client_id: String,
    /// `__Host-slcs-session=…` of the signed-in harness account.
    session: String,
    /// Mean sign-in latency (one argon2id verification each), ms.
    pub(super) login_ms: f64,
}

fn setup(message: String) -> LoadError {
    LoadError::Setup(message)
}

/// The `name=value` of the cookie `name` a response sets.
fn set_cookie(answer: &Answer, name: &str) -> Option<String> {
    answer
        .headers
        .get_all(hyper::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the hidden input `name` of a page.
fn hidden(page: &[u8], name: &str) -> Option<String> {
    let page = String::from_utf8_lossy(page);
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = start + page.get(start..)?.find('"')?;
    page.get(start..end).map(str::to_owned)
}

/// The `code` of a redirect to the client.
fn code_of(answer: &Answer) -> Option<String> {
    let location = answer.headers.get(hyper::header::LOCATION)?.to_str().ok()?;
    let query = location.strip_prefix(REDIRECT_URI)?.strip_prefix('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "code")
        .and_then(|(_, value)| crate::http::form::decode(value.as_bytes()).ok())
}

/// A fresh PKCE verifier and its S256 challenge (RFC 7636).
fn pkce() -> Result<(String, String), LoadError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| LoadError::Keys("random".into()))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(bytes);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    Ok((verifier, b64.encode(digest.as_ref())))
}

impl People {
    /// Creates the account and the client, signs in, approves once.
    pub(super) async fn prepare(
        client: &AdminClient,
        admin_token: &str,
        tag: &str,
    ) -> Result<Self, LoadError> {
        let admin = format!("Bearer {admin_token}");
        let username = format!("load-{tag}");
        let mut random = [0u8; 16];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| LoadError::Keys("random".into()))?;
        let password = hex::encode(random);
        let user = serde_json::json!({
            "username": username,
            "display_name": "slcs load harness",
            "password": password,
        });
        let created = client
            .send(
                "POST",
                "/admin/users",
                Some(&admin),
                Some(("application/json", user.to_string().into_bytes())),
            )
            .await?;
        if created.status != 201 {
            return Err(setup(format!(
                "creating the load account failed ({}): {}",
                created.status,
                created.json()
            )));
        }
        let client_id = format!("load-web-{tag}");
        let registration = serde_json::json!({
            "client": {
                "clientId": client_id,
                "name": "slcs load harness portal",
                "standardFlowEnabled": true,
                "consentRequired": true,
                "redirectUris": [REDIRECT_URI],
                "defaultClientScopes": ["openid", "slcs:certificate"],
                "optionalClientScopes": ["offline_access"],
            }
        });
        let registered = client
            .send(
                "POST",
                "/rest/v1/oidc/clients",
                Some(&admin),
                Some(("application/json", registration.to_string().into_bytes())),
            )
            .await?;
        let secret = registered
            .json()
            .pointer("/client/secret")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                setup(format!(
                    "registering the load portal failed ({}): {}",
                    registered.status,
                    registered.json()
                ))
            })?;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                percent_encode(&client_id),
                percent_encode(&secret)
            ))
        );
        let mut connection = client.open().await?;
        let mut session = String::new();
        let mut login_time = Duration::ZERO;
        for _ in 0..TIMED_LOGINS {
            let page = connection
                .request_with("GET", "/login", None, None, None)
                .await?;
            let pre = set_cookie(&page, "__Host-slcs-pre")
                .ok_or_else(|| setup("the login page set no cookie".into()))?;
            let csrf = hidden(&page.body, "csrf_token")
                .ok_or_else(|| setup("the login page has no CSRF token".into()))?;
            let form = format!(
                "csrf_token={}&username={}&password={}",
                percent_encode(&csrf),
                percent_encode(&username),
                percent_encode(&password)
            );
            let started = Instant::now();
            let signed_in = connection
                .request_with(
                    "POST",
                    "/login",
                    None,
                    Some(&pre),
                    Some((FORM, form.into_bytes())),
                )
                .await?;
            login_time += started.elapsed();
            session = set_cookie(&signed_in, "__Host-slcs-session")
                .ok_or_else(|| setup(format!("signing in failed ({})", signed_in.status)))?;
        }
        let people = Self {
            basic,
            client_id,
            session,
            login_ms: login_time.as_secs_f64() * 1000.0 / f64::from(TIMED_LOGINS),
        };
        // The first authorization shows the consent page; approve it.
        let (_, challenge) = pkce()?;
        let consent = connection
            .request_with(
                "GET",
                &people.authorize_path(&challenge),
                None,
                Some(&people.session),
                None,
            )
            .await?;
        let (Some(csrf), Some(request)) = (
            hidden(&consent.body, "csrf_token"),
            hidden(&consent.body, "request"),
        ) else {
            return Err(setup(format!(
                "expected the consent page, got {}",
                consent.status
            )));
        };
        let form = format!(
            "csrf_token={}&request={}&decision=approve",
            percent_encode(&csrf),
            percent_encode(&request)
        );
        let approved = connection
            .request_with(
                "POST",
                "/authorize/consent",
                None,
                Some(&people.session),
                Some((FORM, form.into_bytes())),
            )
            .await?;
        code_of(&approved)
            .ok_or_else(|| setup(format!("approving failed ({})", approved.status)))?;
        Ok(people)
    }

    fn authorize_path(&self, challenge: &str) -> String {
        format!(
            "/authorize?response_type=code&client_id={}&redirect_uri={}&scope={}&code_challenge={challenge}&code_challenge_method=S256&state=load",
            percent_encode(&self.client_id),
            percent_encode(REDIRECT_URI),
            percent_encode("openid offline_access slcs:certificate"),
        )
    }

    /// One code flow: the authorization request (a redirect with a code,
    /// the approval covering it) and the code's redemption. Returns the
    /// token response, or the status that ended it.
    pub(super) async fn code_flow(
        &self,
        connection: &mut Connection,
    ) -> Result<serde_json::Value, u16> {
        let (verifier, challenge) = pkce().map_err(|_| 0u16)?;
        let redirect = connection
            .request_with(
                "GET",
                &self.authorize_path(&challenge),
                None,
                Some(&self.session),
                None,
            )
            .await
            .map_err(|_| 0u16)?;
        let code = code_of(&redirect).ok_or(redirect.status)?;
        let form = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
            percent_encode(&code),
            percent_encode(REDIRECT_URI)
        );
        self.token(connection, form).await
    }

    /// One refresh, rotating `refresh_token`.
    pub(super) async fn refresh(
        &self,
        connection: &mut Connection,
        refresh_token: &str,
    ) -> Result<serde_json::Value, u16> {
        let form = format!(
            "grant_type=refresh_token&refresh_token={}",
            percent_encode(refresh_token)
        );
        self.token(connection, form).await
    }

    async fn token(
        &self,
        connection: &mut Connection,
        form: String,
    ) -> Result<serde_json::Value, u16> {
        let answer = connection
            .request(
                "POST",
                "/token",
                Some(&self.basic),
                Some((FORM, form.into_bytes())),
            )
            .await
            .map_err(|_| 0u16)?;
        if answer.status == 200 {
            Ok(answer.json())
        } else {
            Err(answer.status)
        }
    }
}

/// Which people workload a worker runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Flow {
    /// Refresh-token grants, each rotating the worker's token.
    Refresh,
    /// Whole code flows.
    CodeFlow,
}

/// One worker's closed loop of `flow` until `deadline`.
pub(super) async fn run_worker(
    people: People,
    client: AdminClient,
    mut connection: Connection,
    flow: Flow,
    measure_from: Instant,
    deadline: Instant,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut refresh_token: Option<String> = None;
    while Instant::now() < deadline {
        if matches!(flow, Flow::Refresh) && refresh_token.is_none() {
            // The worker's own grant, not counted.
            match people.code_flow(&mut connection).await {
                Ok(tokens) => {
                    refresh_token = tokens
                        .get("refresh_token")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned);
                }
                Err(_) => {
                    *outcome.errors.entry(0).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        }
        let sent = Instant::now();
        let result = match (flow, refresh_token.as_deref()) {
            (Flow::Refresh, Some(token)) => people.refresh(&mut connection, token).await,
            _ => people.code_flow(&mut connection).await,
        };
        let took = sent.elapsed();
        let counted = sent >= measure_from && Instant::now() <= deadline;
        match result {
            Ok(tokens) => {
                if matches!(flow, Flow::Refresh) {
                    refresh_token = tokens
                        .get("refresh_token")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned);
                }
                if counted {
                    outcome
                        .latencies_us
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                }
            }
            Err(status) => {
                if counted {
                    *outcome.errors.entry(status).or_default() += 1;
                }
                refresh_token = None;
                if status == 0 {
                    match client.open().await {
                        Ok(fresh) => connection = fresh,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
    }
    outcome
}
