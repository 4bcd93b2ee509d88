//! Cross-site request forgery and cross-site WebSockets.
//!
//! The session cookie is `SameSite=Strict`, but "site" is the registrable domain: another
//! application on the hospital's domain (`pacs.hospital.cn` beside `grassroots.hospital.cn`)
//! is same-site, so its pages could post forms to ours with our cookie (relink a slide to
//! another patient's case, claim a case, upload) and open our live-session WebSockets. So:
//!
//! - Every request that changes state (any method but GET, HEAD, OPTIONS) and is authenticated by
//!   the session cookie must carry the session's CSRF token, in the `X-CSRF-Token` header (our
//!   scripts) or a `csrf` form field (our HTML forms). The token is derived from the session's
//!   secret (BLAKE3 `derive_key`), so it needs no storage and dies with the session; the browser
//!   gets it in a readable `grassroots_csrf` cookie, which pages of other origins cannot read
//!   (cookies without `Domain` are host-only), and which one they could plant (a sibling domain
//!   can set cookies for the parent) would not match the session.
//! - A WebSocket handshake must come from a page of this node: its `Origin` must name the host
//!   the request was made to (a reverse proxy must pass `Host` through).
//! - Requests with an API token (`crate::api_tokens`) carry no cookie and need neither.
//!
//! `/login` and `/logout` are outside: forging either gains an attacker nothing but a nuisance.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// The cookie the page's scripts read the token from.
pub const CSRF_COOKIE: &str = "grassroots_csrf";
/// The header our scripts send it in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field our HTML forms send it in (filled by `/static/grassroots.js`).
pub const CSRF_FIELD: &str = "csrf";
/// A form body is read for its token only up to this size (our forms are a few fields).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The CSRF token of the session whose secret is `session`.
pub fn token_for(session: &str) -> String {
    hex::encode(blake3::derive_key(
        "grassroots 2026-11 session csrf token",
        session.as_bytes(),
    ))
}

/// The CSRF token among a login response's `Set-Cookie` values, for programs that sign in as a
/// browser does (the demo, the benches, `grassroots registry`) and send it as [`CSRF_HEADER`].
pub fn token_in_set_cookies<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    values.into_iter().find_map(|value| {
        let (name, rest) = value.split_once('=')?;
        (name.trim() == CSRF_COOKIE)
            .then(|| {
                rest.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .filter(|token| !token.is_empty())
    })
}

/// Whether a request with this method can change anything.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn matches(sent: &str, expected: &str) -> bool {
    // blake3::Hash compares in constant time.
    blake3::hash(sent.trim().as_bytes()) == blake3::hash(expected.as_bytes())
}

fn refusal(detail: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({ "error": detail })),
    )
        .into_response()
}

/// Checks that a state-changing request authenticated by the session `session` carries its
/// token; returns the request (its body intact) or the 403 to send.
pub async fn check(request: Request, session: &str) -> Result<Request, Response> {
    let expected = token_for(session);
    if let Some(sent) = request.headers().get(CSRF_HEADER) {
        return match sent.to_str() {
            Ok(sent) if matches(sent, &expected) => Ok(request),
            _ => Err(refusal(
                "the CSRF token does not belong to this session: reload the page",
            )),
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refusal(
            "a request made with a session cookie needs the X-CSRF-Token header (scripts: use an API token instead)",
        ));
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return Err(refusal("form too large"));
    };
    let sent = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.into_owned());
    match sent {
        Some(sent) if matches(&sent, &expected) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(refusal(
            "this form has no valid CSRF token: reload the page and send it again",
        )),
    }
}

/// Whether a request asks to become a WebSocket.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether the request's `Origin` is the host it was sent to (scheme aside: a TLS-terminating
/// proxy changes it). A request without `Origin` is refused: browsers always send it with a
/// WebSocket handshake.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(host)) = (origin, host) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form_request(body: &str, header_token: Option<&str>) -> Request {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/view/x/case")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(token) = header_token {
            builder = builder.header(CSRF_HEADER, token);
        }
        builder.body(Body::from(body.to_string())).unwrap()
    }

    #[tokio::test]
    async fn tokens_are_checked_in_the_header_or_the_form_and_the_body_survives() {
        let session = "ab".repeat(32);
        let token = token_for(&session);
        assert_ne!(token, token_for(&"cd".repeat(32)));
        assert!(check(form_request("number=S1", Some(&token)), &session)
            .await
            .is_ok());
        assert!(check(form_request("number=S1", Some("00")), &session)
            .await
            .is_err());
        assert!(check(form_request("number=S1", None), &session)
            .await
            .is_err());
        let body = format!("number=S26-1&csrf={token}");
        let passed = check(form_request(&body, None), &session).await.unwrap();
        let bytes = axum::body::to_bytes(passed.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(bytes, body.as_bytes());
        let json = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/referrals")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        assert!(check(json, &session).await.is_err());
    }

    #[test]
    fn the_token_is_found_among_set_cookies() {
        let found = token_in_set_cookies([
            "grassroots_session=abc; Path=/; HttpOnly",
            "grassroots_csrf=0f1e; Path=/; SameSite=Strict",
        ]);
        assert_eq!(found.as_deref(), Some("0f1e"));
        assert_eq!(token_in_set_cookies(["grassroots_csrf=; Max-Age=0"]), None);
    }

    #[test]
    fn websockets_must_come_from_this_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_static("edge.hospital.cn:8441"),
        );
        assert!(!same_origin(&headers), "no Origin");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://pacs.hospital.cn"),
        );
        assert!(!same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://edge.hospital.cn:8441"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://edge.hospital.cn:8441.evil.cn"),
        );
        assert!(!same_origin(&headers));
    }
}
