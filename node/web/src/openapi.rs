//! The API contract: an OpenAPI 3.1 document generated from the handlers' own annotations.
//!
//! Every `/api/v1` route of both nodes is registered through utoipa-axum's `OpenApiRouter` with
//! `routes!`, so a route and its description are one declaration: a route cannot be served
//! without appearing in the document. Each node serves its document at [`DOCUMENT_PATH`], to
//! anyone (it describes the software, not the site's data), so that scripts and PACS clients can
//! generate their clients from it. `tests/openapi.rs` calls every operation of both documents on
//! real nodes and checks each answer against its schema.
//!
//! Errors of the API are JSON objects with an `error` field ([`ApiError`]), whoever produced
//! them: [`json_errors`] rewrites the plain-text refusals of axum's extractors (a malformed JSON
//! body, a bad query string, an unknown route) so that a client parses one shape; and it puts the
//! reason in the request's language (a browser's Chinese page shows a Chinese refusal), by the
//! catalogue's patterns (`i18n::message_in`).

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::i18n::Lang;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{InfoBuilder, OpenApi};
use utoipa::{IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;

/// Where each node serves its document.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// Every API route lives under this prefix.
pub const API_PREFIX: &str = "/api/v1/";
/// The security scheme of a browser's session (the cookie set by `/login`).
pub const SESSION_SCHEME: &str = "session";
/// The security scheme of an API token (`Authorization: Bearer grt_...`).
pub const TOKEN_SCHEME: &str = "token";
/// An error body is read for rewriting only up to this size (extractors' messages are short).
const MAX_ERROR_BYTES: usize = 16 * 1024;

/// Every refusal and failure of the API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// What went wrong, in words a person can act on.
    pub error: String,
}

/// The refusals any API operation may answer: who may call it is checked before the handler.
#[derive(IntoResponses)]
pub enum Refusals {
    /// Not signed in, or an unknown or revoked API token.
    #[response(status = 401)]
    Unauthenticated(ApiError),
    /// The account's role may not use this operation, or a state-changing request from a
    /// browser's session lacked its CSRF token.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// The node failed (its store, a worker); the request may be retried.
    #[response(status = 500)]
    Failed(ApiError),
}

/// The refusals of an operation that reads a JSON body or a query string, on top of
/// [`Refusals`]: axum's extractors answer these before the handler runs.
#[derive(IntoResponses)]
pub enum InputRefusals {
    /// The body or the query string could not be read (not JSON, a bad number...).
    #[response(status = 400)]
    BadRequest(ApiError),
    /// A JSON body was sent without `Content-Type: application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ApiError),
    /// The JSON is well formed but not what the operation takes (a missing or unknown field).
    #[response(status = 422)]
    Unprocessable(ApiError),
}

/// The node's router, ready to serve: its document (the operations `router` collected, with the
/// API's title, version and the two ways to authenticate) at [`DOCUMENT_PATH`], and the API's
/// errors made JSON.
pub fn finish(
    router: OpenApiRouter,
    title: &str,
    description: &str,
) -> Result<Router, crate::WebError> {
    let (router, collected) = router.split_for_parts();
    let document = document(collected, title, description);
    let json = document
        .to_pretty_json()
        .map_err(|error| crate::WebError::Internal(format!("OpenAPI document: {error}")))?;
    let body = axum::body::Bytes::from(json);
    Ok(router
        .route(
            DOCUMENT_PATH,
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) }),
        )
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(crate::headers::security_headers)))
}

fn document(mut collected: OpenApi, title: &str, description: &str) -> OpenApi {
    collected.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .build();
    let components = collected.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SESSION_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            crate::auth::SESSION_COOKIE,
            "The session of a signed-in browser (POST /login). A request that changes state \
             must also send the session's CSRF token in X-CSRF-Token.",
        ))),
    );
    components.add_security_scheme(
        TOKEN_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token an admin made (POST /api/v1/tokens); it acts with its \
                     account's role and needs no CSRF token.",
                ))
                .build(),
        ),
    );
    // Handlers' names repeat across modules (`list_api`); the method and path never do.
    for (path, item) in collected.paths.paths.iter_mut() {
        let name = path
            .trim_start_matches(API_PREFIX)
            .replace(['{', '}'], "")
            .replace(['/', '-'], "_");
        for (method, operation) in [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ] {
            if let Some(operation) = operation {
                operation.operation_id = Some(format!("{method}_{name}"));
            }
        }
    }
    collected.security = Some(vec![
        SecurityRequirement::new(SESSION_SCHEME, Vec::<String>::new()),
        SecurityRequirement::new(TOKEN_SCHEME, Vec::<String>::new()),
    ]);
    collected
}

/// Middleware: an API error whose body is not JSON (axum's extractor rejections are plain text;
/// an unknown route or method has no body) becomes `{"error": ...}` with the same status.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with(API_PREFIX);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let lang = response
        .extensions()
        .get::<Lang>()
        .copied()
        .unwrap_or_default();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(is_api || is_json) || (is_json && lang == Lang::En) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // An error body too long to be one of ours, or unreadable, becomes the status's reason.
    let bytes = to_bytes(body, MAX_ERROR_BYTES).await.unwrap_or_default();
    let error = if is_json && !bytes.is_empty() {
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(ApiError { error }) => error,
            // Some other JSON (not an error of ours): passed on untouched.
            Err(_) => return Response::from_parts(parts, Body::from(bytes)),
        }
    } else {
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if text.is_empty() {
            default_reason(status)
        } else {
            text
        }
    };
    let error = crate::i18n::message_in(lang, &error);
    let body = serde_json::to_vec(&ApiError { error }).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn default_reason(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "no such API route: see /api/v1/openapi.json".into(),
        StatusCode::METHOD_NOT_ALLOWED => {
            "this route does not take that method: see /api/v1/openapi.json".into()
        }
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    }
}
