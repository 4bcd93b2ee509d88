//! Response headers every page and API of both nodes carries, so that a browser treats what a
//! node serves as what it is and nothing else: a Content-Security-Policy with no inline script
//! (a script that found its way into a page does not run), no framing by another site, no
//! MIME sniffing, and no referrer leaving the node (URLs name slides and referrals).

use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Scripts and styles come from the node itself (styles may be inline: the pages' layout uses a
/// few attributes); images from the node, or made in the page (OpenSeadragon's canvases); the
/// viewer's WebSockets go to the node itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Middleware adding the headers to every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
