//! The people workloads of the load harness: `refresh` (rotating refresh
//! tokens), `code-flow` (authorization request to code to tokens, for a
//! person already signed in whose approval covers the request),
//! `token-exchange` (a processing service exchanging the portal's hand-off
//! token, RFC 8693) and `delegation-chain` (that exchange, the shared
//! token for a job broker, and the broker's certificate).
//!
//! Before the clock starts: an account, a delegation chain of clients
//! (a confidential web portal declaring a processing service, which
//! declares a broker), a few sign-ins through the real login page (their
//! argon2 cost is reported on its own, as `login_ms`, and never mixed into
//! the flows), and one approval of the whole chain through the real
//! consent page.

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
    /// The processing service: exchanges the portal's hand-off tokens.
    wps: ChainClient,
    /// The job broker: presents the shared token at `/certificate`.
    broker: ChainClient,
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
        let broker = ChainClient {
            id: format!("load-broker-{tag}"),
            secret: String::new(),
        };
        let broker = ChainClient {
            secret: register(
                client,
                &admin,
                serde_json::json!({
                    "client": {
                        "clientId": broker.id,
                        "name": "slcs load harness broker",
                        "serviceAccountsEnabled": true,
                        "defaultClientScopes": ["slcs:certificate"],
                    }
                }),
            )
            .await?,
            ..broker
        };
        let wps_id = format!("load-wps-{tag}");
        let wps = ChainClient {
            secret: register(
                client,
                &admin,
                serde_json::json!({
                    "client": {
                        "clientId": wps_id,
                        "name": "slcs load harness processing service",
                        "serviceAccountsEnabled": true,
                        "defaultClientScopes": ["slcs:certificate"],
                    },
                    "slcs": {"delegatees": [broker.id], "tokenExchangeEnabled": true}
                }),
            )
            .await?,
            id: wps_id,
        };
        let secret = register(
            client,
            &admin,
            serde_json::json!({
                "client": {
                    "clientId": client_id,
                    "name": "slcs load harness portal",
                    "standardFlowEnabled": true,
                    "consentRequired": true,
                    "redirectUris": [REDIRECT_URI],
                    "defaultClientScopes": ["openid", "slcs:certificate"],
                    "optionalClientScopes": ["offline_access"],
                },
                "slcs": {"delegatees": [wps.id], "tokenExchangeEnabled": true}
            }),
        )
        .await?;
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
            wps,
            broker,
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
        // The whole chain approved: the service and the broker below it.
        let form = format!(
            "csrf_token={}&request={}&decision=approve&delegatee.{}=on&delegatee.{}=on",
            percent_encode(&csrf),
            percent_encode(&request),
            percent_encode(&people.wps.id),
            percent_encode(&people.broker.id)
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

    /// The portal's token handed to the processing service (set-up of the
    /// exchange workloads, not counted).
    pub(super) async fn hand_off(&self, connection: &mut Connection) -> Result<String, u16> {
        let tokens = self.code_flow(connection).await?;
        let token = access_token(&tokens)?;
        let audience = format!("&audience={}", percent_encode(&self.wps.id));
        let handed = self
            .exchange(connection, &self.basic, &token, &audience)
            .await?;
        access_token(&handed)
    }

    /// The processing service exchanges the hand-off token and becomes
    /// the actor: its own token.
    pub(super) async fn delegate(
        &self,
        connection: &mut Connection,
        handed: &str,
    ) -> Result<String, u16> {
        let answer = self
            .exchange(connection, &self.wps.basic(), handed, "")
            .await?;
        access_token(&answer)
    }

    /// The whole chain below the portal: the service's exchange, its
    /// shared token for the broker, and the broker's certificate for
    /// `csr_body` (a `certificate_request=…` form).
    pub(super) async fn chain(
        &self,
        connection: &mut Connection,
        handed: &str,
        csr_body: &[u8],
    ) -> Result<(), u16> {
        let own = self.delegate(connection, handed).await?;
        let audience = format!("&audience={}", percent_encode(&self.broker.id));
        let shared = self
            .exchange(connection, &self.wps.basic(), &own, &audience)
            .await?;
        let shared = access_token(&shared)?;
        let mut body = csr_body.to_vec();
        body.extend_from_slice(
            format!(
                "&client_id={}&client_secret={}",
                percent_encode(&self.broker.id),
                percent_encode(&self.broker.secret)
            )
            .as_bytes(),
        );
        let answer = connection
            .request(
                "POST",
                "/certificate",
                Some(&format!("Bearer {shared}")),
                Some((FORM, body)),
            )
            .await
            .map_err(|_| 0u16)?;
        if answer.status == 200 {
            Ok(())
        } else {
            Err(answer.status)
        }
    }

    async fn exchange(
        &self,
        connection: &mut Connection,
        basic: &str,
        subject: &str,
        extra: &str,
    ) -> Result<serde_json::Value, u16> {
        let form = format!(
            "grant_type={}&subject_token={}&subject_token_type={}{extra}",
            percent_encode("urn:ietf:params:oauth:grant-type:token-exchange"),
            percent_encode(subject),
            percent_encode("urn:ietf:params:oauth:token-type:access_token"),
        );
        post_token(connection, basic, form).await
    }

    async fn token(
        &self,
        connection: &mut Connection,
        form: String,
    ) -> Result<serde_json::Value, u16> {
        post_token(connection, &self.basic, form).await
    }
}

/// `POST /token` with HTTP Basic credentials; the JSON of a 200, else the
/// status (0: no answer).
async fn post_token(
    connection: &mut Connection,
    basic: &str,
    form: String,
) -> Result<serde_json::Value, u16> {
    let answer = connection
        .request(
            "POST",
            "/token",
            Some(basic),
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

/// A service client of the chain and its credentials.
#[derive(Clone, Debug)]
struct ChainClient {
    id: String,
    secret: String,
}

impl ChainClient {
    fn basic(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                percent_encode(&self.id),
                percent_encode(&self.secret)
            ))
        )
    }
}

/// Registers a client; returns its secret.
async fn register(
    client: &AdminClient,
    admin: &str,
    registration: serde_json::Value,
) -> Result<String, LoadError> {
    let registered = client
        .send(
            "POST",
            "/rest/v1/oidc/clients",
            Some(admin),
            Some(("application/json", registration.to_string().into_bytes())),
        )
        .await?;
    registered
        .json()
        .pointer("/client/secret")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            setup(format!(
                "registering a load client failed ({}): {}",
                registered.status,
                registered.json()
            ))
        })
}

fn access_token(answer: &serde_json::Value) -> Result<String, u16> {
    answer
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or(0u16)
}

/// Which people workload a worker runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum PeopleFlow {
    /// Refresh-token grants, each rotating the worker's token.
    Refresh,
    /// Whole code flows.
    Code,
    /// Token exchanges by the processing service.
    TokenExchange,
    /// Exchange, shared token and the broker's certificate.
    DelegationChain,
}

/// One worker's closed loop of `flow` until `deadline`; `csr_bodies` feed
/// the chain's certificates.
pub(super) async fn run_worker(
    people: People,
    client: AdminClient,
    mut connection: Connection,
    flow: PeopleFlow,
    csr_bodies: std::sync::Arc<Vec<Vec<u8>>>,
    measure_from: Instant,
    deadline: Instant,
) -> Outcome {
    let mut outcome = Outcome::default();
    // The worker's own grant (refresh) or hand-off token (exchanges),
    // made when missing and not counted.
    let mut held: Option<String> = None;
    let mut sequence = 0usize;
    while Instant::now() < deadline {
        let needs_held = !matches!(flow, PeopleFlow::Code);
        if needs_held && held.is_none() {
            let made = match flow {
                PeopleFlow::Refresh => people.code_flow(&mut connection).await.and_then(|tokens| {
                    tokens
                        .get("refresh_token")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                        .ok_or(0u16)
                }),
                _ => people.hand_off(&mut connection).await,
            };
            match made {
                Ok(token) => held = Some(token),
                Err(_) => {
                    *outcome.errors.entry(0).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        }
        sequence += 1;
        let sent = Instant::now();
        let held_token = held.as_deref().unwrap_or_default();
        let result: Result<Option<String>, u16> = match flow {
            PeopleFlow::Refresh => {
                people
                    .refresh(&mut connection, held_token)
                    .await
                    .map(|tokens| {
                        tokens
                            .get("refresh_token")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned)
                    })
            }
            PeopleFlow::Code => people.code_flow(&mut connection).await.map(|_| None),
            PeopleFlow::TokenExchange => people
                .delegate(&mut connection, held_token)
                .await
                .map(|_| held.clone()),
            PeopleFlow::DelegationChain => {
                let body = csr_bodies
                    .get(sequence % csr_bodies.len().max(1))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                people
                    .chain(&mut connection, held_token, body)
                    .await
                    .map(|()| held.clone())
            }
        };
        let took = sent.elapsed();
        let counted = sent >= measure_from && Instant::now() <= deadline;
        match result {
            Ok(next) => {
                held = next;
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
                held = None;
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
