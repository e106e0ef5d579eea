//! `GET /openapi.json`: the OpenAPI 3.1 description of the machine-facing
//! APIs (OAuth, certificates, discovery, client registration, the admin
//! API), generated at build time from the handlers' `#[utoipa::path]`
//! annotations and the wire types' `ToSchema` derives, so a renamed field
//! or a new answer shows up in the description without anyone editing it.
//! The HTML pages (`/authorize`, `/login`, `/account`, `/admin`, …) are for
//! browsers and are not described here.
//!
//! The test suite points schemathesis at a live server with this
//! description (`tests/it/schema.rs`; docs/security.md, "API schema
//! testing").
//!
//! The form bodies are parsed by [`super::form::OAuthForm`], which takes any
//! field; the structs below exist only to describe which fields each
//! endpoint reads.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The description, assembled from the annotated handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "slcs",
        description = "OAuth 2.0-protected Short-Lived Credential Service: an authorization server that keeps people's approvals of delegation, and a resource server that turns an access token and a PKCS#10 request into a short-lived X.509 certificate recording the delegation chain. Errors of the OAuth endpoints are RFC 6749 §5.2 JSON; errors of the registration and admin APIs are RFC 9457 problem documents."
    ),
    paths(
        super::token::token,
        super::token::device_authorization,
        super::introspect::introspect,
        super::revoke::revoke,
        super::userinfo::userinfo,
        super::certificate::slcs,
        super::certificate::oa4mp,
        super::certificate::esgf,
        super::certificate::status,
        super::metadata::authorization_server,
        super::metadata::openid_configuration,
        super::metadata::jwks,
        super::metadata::webfinger,
        super::trust::ca_pem,
        super::trust::trustroots,
        super::health::healthz,
        super::health::readyz,
        super::health::livez,
        super::health::metrics,
        super::clients::create,
        super::clients::list,
        super::clients::show,
        super::clients::replace,
        super::clients::set_status,
        super::clients::grant_group,
        super::clients::revoke_group,
        super::clients::grant_unit,
        super::clients::revoke_unit,
        super::admin::create_user,
        super::admin::list_users,
        super::admin::disable_user,
        super::admin::enable_user,
        super::admin::set_password,
        super::admin::set_admin,
        super::admin::revoke_certificate,
        super::admin::revoke_grant,
        super::admin::rotate_keys,
        super::admin::audit,
        super::admin::verify_audit,
        super::admin::export_audit,
        openapi_json,
    ),
    components(schemas(super::error::ProblemBody, super::error::ErrorBody)),
    modifiers(&SecuritySchemes, &ErrorResponses),
    tags(
        (name = "oauth", description = "The authorization server's endpoints for clients (RFC 6749, 7009, 7662, 8628, 8693)."),
        (name = "certificates", description = "The credential service: an access token and a CSR become a short-lived certificate."),
        (name = "discovery", description = "Metadata, keys and trust anchors; public."),
        (name = "registration", description = "Client registration (the EBRAINS-style JSON API)."),
        (name = "admin", description = "Operator API behind the admin token."),
        (name = "operations", description = "Health, metrics and this description."),
    )
)]
pub struct ApiDoc;

/// The security schemes the annotations name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        // RFC 6749 §2.3.1; private_key_jwt and mutual TLS are the other
        // registered methods, carried in the form or the TLS handshake.
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        // RFC 6750 §2.1: an slcs access token (an RFC 9068 JWT).
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // The operator's admin token (`slcs admin-token`).
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The error answers, described once per family instead of on every
/// operation: the OAuth endpoints answer RFC 6749 §5.2 JSON; the
/// registration and admin APIs (and the other endpoints behind a bearer
/// token) RFC 9457 problem documents, except for the limit layers' 408, 413
/// and 503, which are OAuth-style JSON on every endpoint. An operation that
/// names its own `4XX` (the certificate endpoints, webfinger) keeps it.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let content = |schema: &str| {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build()
        };
        let oauth = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", content("OAuthError"))
                .build()
        };
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", content("ProblemDocument"))
                .content("application/json", content("OAuthError"))
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut operation.responses.responses;
                if responses.contains_key("4XX") {
                    continue;
                }
                let tags = operation.tags.as_deref().unwrap_or_default();
                let tagged = |tag: &str| tags.iter().any(|t| t == tag);
                let bearer = ["/userinfo", "/metrics", "/certificate/status/{serial}"];
                let (client, server) = if tagged("oauth") && path != "/userinfo" {
                    (
                        oauth(
                            "An RFC 6749 §5.2 error: 400 `invalid_request`, `invalid_grant`, `invalid_scope`, …; 401 `invalid_client`; 429 with `Retry-After`.",
                        ),
                        oauth(
                            "`server_error`, or 503 `temporarily_unavailable` with `Retry-After`.",
                        ),
                    )
                } else if tagged("registration")
                    || tagged("admin")
                    || bearer.contains(&path.as_str())
                {
                    (
                        problem(
                            "A problem document: 401 `invalid_token`, 403 `insufficient_scope` or `access_denied`, 404, 409, 400 with the RFC 7591 code; the limit layers' 408 and 413 as OAuth-style JSON.",
                        ),
                        problem(
                            "500 `server_error`; 503 `temporarily_unavailable` with `Retry-After`.",
                        ),
                    )
                } else {
                    continue;
                };
                responses.insert("4XX".into(), client.into());
                responses.insert("5XX".into(), server.into());
            }
        }
    }
}

/// The JSON of the description, built once.
pub(super) fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}

/// `GET /openapi.json`.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This description (OpenAPI 3.1).", content_type = "application/json", body = Object)),
)]
pub(super) async fn openapi_json() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        document(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Form bodies (documentation only: OAuthForm parses them)
// ---------------------------------------------------------------------------

/// A token request (RFC 6749 §4.1.3, §4.4.2, §6; RFC 8628 §3.4;
/// RFC 8693 §2.1). Which fields apply depends on `grant_type`; client
/// credentials go in HTTP Basic, or as `client_id`/`client_secret`, or as
/// an RFC 7523 assertion.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct TokenForm {
    /// The grant.
    grant_type: GrantTypeName,
    /// Space-separated scopes.
    scope: Option<String>,
    /// RFC 8707 resource indicator (several only with token exchange).
    resource: Option<String>,
    /// RFC 8693 audience (token exchange only).
    audience: Option<String>,
    /// The authorization code.
    code: Option<String>,
    /// The redirect URI of the authorization request.
    redirect_uri: Option<String>,
    /// RFC 7636 PKCE verifier.
    code_verifier: Option<String>,
    /// The refresh token.
    refresh_token: Option<String>,
    /// RFC 8628 device code.
    device_code: Option<String>,
    /// RFC 8693 subject token (an slcs access token).
    subject_token: Option<String>,
    /// `urn:ietf:params:oauth:token-type:access_token`.
    subject_token_type: Option<String>,
    /// Refused: the actor is always the authenticated client.
    actor_token: Option<String>,
    /// Refused with `actor_token`.
    actor_token_type: Option<String>,
    /// `urn:ietf:params:oauth:token-type:access_token` when given.
    requested_token_type: Option<String>,
    /// Client id (public clients, or with `client_secret`).
    client_id: Option<String>,
    /// Client secret in the body (`client_secret_post`).
    client_secret: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    client_assertion_type: Option<String>,
    /// RFC 7523 client assertion (`private_key_jwt`).
    client_assertion: Option<String>,
}

/// The grant types `/token` takes (others are `unsupported_grant_type`).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub(super) enum GrantTypeName {
    /// RFC 6749 §4.4.
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// RFC 6749 §4.1.3.
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    /// RFC 6749 §6.
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// RFC 8628 §3.4.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode,
    /// RFC 8693 §2.1.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
}

/// A device authorization request (RFC 8628 §3.1).
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct DeviceAuthorizationForm {
    /// The public client's id.
    client_id: Option<String>,
    /// Space-separated scopes.
    scope: Option<String>,
    /// RFC 8707 resource indicator.
    resource: Option<String>,
}

/// An introspection or revocation request (RFC 7662 §2.1, RFC 7009 §2.1).
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct TokenReference {
    /// The token.
    token: String,
    /// A hint only; unknown values are ignored.
    token_type_hint: Option<String>,
    /// Client id (with `client_secret`).
    client_id: Option<String>,
    /// Client secret in the body.
    client_secret: Option<String>,
}

/// A certificate request at `/certificate` or `/oauth/certificate/`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct CertificateForm {
    /// A PKCS#10 CSR: PEM, or base64 (standard or URL-safe) of DER or PEM.
    certificate_request: String,
    /// Requested lifetime in whole seconds; the profile caps it.
    lifetime: Option<String>,
    /// The access token, when not in the `Authorization` header (never both).
    access_token: Option<String>,
    /// The presenting client's id (a shared token needs its presenter).
    client_id: Option<String>,
    /// The presenting client's secret.
    client_secret: Option<String>,
}

/// A certificate request at `/oauth2/getcert` (OA4MP names).
#[allow(dead_code)]
#[derive(ToSchema)]
pub(super) struct GetcertForm {
    /// A PKCS#10 CSR: PEM, or base64 of DER or PEM.
    certreq: String,
    /// Requested lifetime in whole seconds.
    certlifetime: Option<String>,
    /// The access token, when not in the `Authorization` header.
    access_token: Option<String>,
    /// The client's id.
    client_id: Option<String>,
    /// The client's secret.
    client_secret: Option<String>,
}

// ---------------------------------------------------------------------------
// Small JSON answers built in the handlers
// ---------------------------------------------------------------------------

/// The answer to `POST /admin/keys/rotate`.
#[derive(Serialize, ToSchema)]
pub(super) struct RotatedKeys {
    /// The key id new tokens are signed with.
    pub(super) current_kid: String,
}

/// The answer to `POST /admin/grants/{grant}/revoke`.
#[derive(Serialize, ToSchema)]
pub(super) struct RevokedGrant {
    /// The grant.
    pub(super) grant_id: String,
    /// Hex serials of the certificates marked revoked with it.
    pub(super) revoked_certificates: Vec<String>,
}

/// One client in `GET /rest/v1/oidc/clients`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClientSummary {
    /// The client id.
    pub(super) client_id: String,
    /// Display name.
    pub(super) name: String,
    /// `confidential`, `public`, `service` or `native`.
    pub(super) kind: String,
    /// `pending`, `active` or `suspended`.
    pub(super) status: String,
    /// The owner's subject.
    pub(super) owner: String,
}

/// The audit chain check, with `intact` added.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditVerification {
    /// Whether no problem was found.
    pub(super) intact: bool,
    /// The report.
    #[serde(flatten)]
    pub(super) report: crate::store::audit_chain::Report,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_openapi_3_1_and_names_every_api_path() {
        let document: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(
            document["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            document["openapi"]
        );
        let paths = document["paths"].as_object().unwrap();
        for path in [
            "/token",
            "/certificate",
            "/oauth2/getcert",
            "/rest/v1/oidc/clients/{id}",
            "/admin/audit/export",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        // Every operation names its responses, and every $ref resolves.
        let text = document.to_string();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
    }
}
