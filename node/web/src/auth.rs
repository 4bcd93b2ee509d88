//! Login, logout, and the middleware that admits only signed-in staff of the right roles.
//!
//! Pages answer an anonymous visitor with a redirect to `/login`; APIs (`/api/...`) with 401 JSON.
//! A signed-in user of the wrong role gets 403. The signed-in account is put into the request's
//! extensions as [`CurrentUser`] for the handlers. A request is signed in by the session cookie
//! (then state changes need the session's CSRF token and WebSockets this node's origin:
//! [`crate::csrf`]) or by an API token in `Authorization: Bearer` ([`crate::api_tokens`]).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::accounts::{Account, StaffRole, SESSION_LIFETIME};
use crate::pages::{escape, page};
use crate::WebState;

pub const SESSION_COOKIE: &str = "grassroots_session";

/// The signed-in account, set by [`require_role`].
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Account);

pub(crate) fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_string())
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The session secret a request carries, for long-lived handlers (WebSockets) that must end
/// when the session does: check it with [`crate::Accounts::session_allows`].
pub fn session_of(headers: &HeaderMap) -> Option<String> {
    session_token(headers)
}

/// The `Set-Cookie` value that gives a session's pages their CSRF token.
fn csrf_cookie(state: &WebState, session: &str) -> String {
    format!(
        "{}={}; Path=/; SameSite=Strict; Max-Age={}{}",
        crate::csrf::CSRF_COOKIE,
        crate::csrf::token_for(session),
        SESSION_LIFETIME.whole_seconds(),
        if state.secure_cookies { "; Secure" } else { "" }
    )
}

/// The account of the request's session, if any.
pub fn signed_in(state: &WebState, headers: &HeaderMap) -> Option<Account> {
    let token = session_token(headers)?;
    state
        .accounts
        .session_account(&token, OffsetDateTime::now_utc())
        .ok()
        .flatten()
}

/// The secret of an `Authorization: Bearer` header, if the request has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// How a request proved who sent it.
enum Credential {
    /// The session cookie, with the session's secret.
    Session(String),
    /// An API token.
    Token,
}

/// The account behind a request, and how it proved it; `Err` with the response for a bad API
/// token (which never falls back to the cookie).
#[allow(clippy::result_large_err)]
fn authenticate(
    state: &WebState,
    headers: &HeaderMap,
    address: Option<&str>,
) -> Result<Option<(Account, Credential)>, Response> {
    if let Some(secret) = bearer(headers) {
        return match state.accounts.api_token_account(secret) {
            Ok(Some((account, token))) => {
                state
                    .accounts
                    .security_log()
                    .token_used(&token.id, &account.username, address);
                Ok(Some((account, Credential::Token)))
            }
            Ok(None) => {
                state.accounts.security_log().record(
                    "token-refused",
                    None,
                    None,
                    address,
                    "an unknown, revoked or disabled account's API token",
                );
                Err((
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    axum::Json(serde_json::json!({"error": "unknown or revoked API token"})),
                )
                    .into_response())
            }
            Err(error) => Err(error.into_response()),
        };
    }
    let Some(session) = session_token(headers) else {
        return Ok(None);
    };
    Ok(state
        .accounts
        .session_account(&session, OffsetDateTime::now_utc())
        .ok()
        .flatten()
        .map(|account| (account, Credential::Session(session))))
}

/// Middleware admitting only the given roles. Use with `axum::middleware::from_fn_with_state`:
/// `from_fn_with_state((web_state, &[StaffRole::Admin]), require_role)`.
pub async fn require_role(
    State((state, allowed)): State<(WebState, &'static [StaffRole])>,
    mut request: Request,
    next: Next,
) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| {
            crate::proxy::client_address(info.0, request.headers(), &state.trusted_proxies)
                .to_string()
        });
    let authenticated = match authenticate(&state, request.headers(), address.as_deref()) {
        Ok(authenticated) => authenticated,
        Err(response) => return response,
    };
    let Some((account, credential)) = authenticated else {
        if is_api {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "sign in first"})),
            )
                .into_response();
        }
        let next_path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let encoded = crate::pages::url_component(next_path);
        return Redirect::to(&format!("/login?next={encoded}")).into_response();
    };
    if !allowed.contains(&account.role) {
        let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        let message = format!(
            "this needs the role {}; you are {}",
            roles.join(" or "),
            account.role
        );
        if is_api {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"error": message})),
            )
                .into_response();
        }
        let body = format!(
            "<p class=\"error\">{}</p>",
            escape(&crate::i18n::message_in(crate::nav::lang(), &message))
        );
        return (
            StatusCode::FORBIDDEN,
            page(&state.node_title, "Not allowed", Some(&account), &body),
        )
            .into_response();
    }
    // A live session is a browser's: it ends with the browser's session, which a token has not.
    if matches!(credential, Credential::Token) && crate::csrf::is_websocket(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": "live sessions open from a signed-in browser, not with an API token"})),
        )
            .into_response();
    }
    if let Credential::Session(session) = &credential {
        if crate::csrf::is_websocket(request.headers())
            && !crate::csrf::same_origin(request.headers())
        {
            state.accounts.security_log().record(
                "origin-refused",
                Some(&account.username),
                None,
                address.as_deref(),
                format!(
                    "WebSocket to {} from origin {:?}",
                    request.uri().path(),
                    request
                        .headers()
                        .get(header::ORIGIN)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                ),
            );
            return (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"error": "a live session opens only from this node's own pages"})),
            )
                .into_response();
        }
        if crate::csrf::changes_state(request.method()) {
            let path = request.uri().path().to_string();
            request = match crate::csrf::check(request, session).await {
                Ok(request) => request,
                Err(refusal) => {
                    state.accounts.security_log().record(
                        "csrf-refused",
                        Some(&account.username),
                        None,
                        address.as_deref(),
                        format!("{path} without this session's CSRF token"),
                    );
                    return refusal;
                }
            };
        }
    }
    // A session from before CSRF tokens (or whose cookie was cleared) gets its token back.
    let restore_csrf = match &credential {
        Credential::Session(session) => (cookie(request.headers(), crate::csrf::CSRF_COOKIE)
            .as_deref()
            != Some(crate::csrf::token_for(session).as_str()))
        .then(|| csrf_cookie(&state, session)),
        Credential::Token => None,
    };
    crate::nav::prefer(account.language);
    request.extensions_mut().insert(CurrentUser(account));
    let mut response = next.run(request).await;
    if let Some(value) = restore_csrf.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
    /// `zh` or `en`: the sign-in page's language switch.
    lang: Option<String>,
}

/// Only same-site paths may be redirected to after login.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from URLs ("/\t/evil" becomes "//evil"), so any
        // whitespace or control character disqualifies the path.
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

fn login_form(state: &WebState, next: &str, error: Option<&str>) -> Response {
    let error_html = error
        .map(|e| {
            format!(
                r#"<p class="error" role="alert">{}</p>"#,
                escape(&crate::i18n::message_in(crate::nav::lang(), e))
            )
        })
        .unwrap_or_default();
    use crate::i18n::tr;
    let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let body = format!(
        r#"<form class="login card" method="post" action="/login">{error_html}
<input type="hidden" name="next" value="{next}">
<label for="username">{user_name}</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">{password}</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">{sign_in}</button>
<p class="lang-links"><a href="/login?lang=zh&amp;next={encoded}" lang="zh-CN">中文</a> · <a href="/login?lang=en&amp;next={encoded}" lang="en">English</a></p></form>"#,
        next = escape(next),
        user_name = tr("User name"),
        password = tr("Password"),
        sign_in = tr("Sign in"),
    );
    page(&state.node_title, tr("Sign in"), None, &body).into_response()
}

pub async fn login_page(
    State(state): State<WebState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    // The sign-in page's own switch: this page in that language, and the next ones.
    let chosen = query.lang.as_deref().and_then(crate::i18n::Lang::parse);
    crate::nav::prefer(chosen);
    let error = match query.error.as_deref() {
        Some("invalid") => Some(crate::i18n::tr("Wrong user name or password.")),
        _ => None,
    };
    let mut response = login_form(&state, &safe_next(query.next.as_deref()), error);
    if let Some(lang) = chosen {
        if let Ok(value) = HeaderValue::from_str(&lang.cookie()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let address = crate::proxy::client_address(peer, &headers, &state.trusted_proxies).to_string();
    let next = safe_next(form.next.as_deref());
    if let Err(wait) = state
        .throttle
        .begin(&form.username, &address, Instant::now())
    {
        let known = state
            .accounts
            .account(&form.username)
            .ok()
            .flatten()
            .is_some();
        state.accounts.security_log().record(
            "login-throttled",
            known.then_some(form.username.as_str()),
            None,
            Some(&address),
            format!("asked to wait {} s", wait.as_secs().max(1)),
        );
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let mut response = login_form(
            &state,
            &next,
            Some(
                &crate::i18n::tr("Too many failed sign-ins. Try again in {} minute(s).")
                    .replace("{}", &minutes.to_string()),
            ),
        );
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let accounts = state.accounts.clone();
    let (username, password) = (form.username.clone(), form.password);
    // argon2 takes tens of milliseconds of CPU and 19 MiB: keep it off the async workers, and
    // only a few at a time.
    let Ok(_permit) = state.throttle.verifications.acquire().await else {
        return crate::WebError::Internal("login closed".into()).into_response();
    };
    let verified =
        tokio::task::spawn_blocking(move || accounts.verify_password(&username, &password)).await;
    let account = match verified {
        Ok(Ok(Some(account))) => account,
        Ok(Ok(None)) => {
            // A name that is no account may be a password typed in the wrong field: only the
            // names of real accounts reach the log.
            let known = state
                .accounts
                .users()
                .is_ok_and(|users| users.iter().any(|u| u.username == form.username));
            state.accounts.security_log().record(
                "login-failed",
                known.then_some(form.username.as_str()),
                None,
                Some(&address),
                if known {
                    "wrong password, or the account is disabled"
                } else {
                    "a name that is no account (not recorded)"
                },
            );
            let mut response = login_form(&state, &next, Some("Wrong user name or password."));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return response;
        }
        Ok(Err(error)) => return error.into_response(),
        Err(error) => return crate::WebError::Internal(error.to_string()).into_response(),
    };
    state.throttle.succeeded(&account.username, &address);
    let token = match state
        .accounts
        .create_session(&account.username, OffsetDateTime::now_utc())
    {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    tracing::info!(user = %account.username, role = %account.role, "signed in");
    // Every sign-in sweeps the sessions that expired unused, so the table does not only grow.
    if let Err(error) = state
        .accounts
        .sweep_expired_sessions(OffsetDateTime::now_utc())
    {
        tracing::warn!(%error, "cannot sweep expired sessions");
    }
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.whole_seconds(),
        if state.secure_cookies { "; Secure" } else { "" }
    );
    // Readable by this node's scripts (not HttpOnly): they send it back as the CSRF token.
    let csrf_cookie = csrf_cookie(&state, &token);
    let mut response = Redirect::to(&next).into_response();
    for cookie in [cookie, csrf_cookie] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

pub async fn logout(State(state): State<WebState>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        if let Err(error) = state.accounts.end_session(&token) {
            return error.into_response();
        }
    }
    let mut response = Redirect::to("/login").into_response();
    let expired = [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        format!(
            "{}=; Path=/; SameSite=Strict; Max-Age=0",
            crate::csrf::CSRF_COOKIE
        ),
    ];
    for cookie in expired {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/sites?x=1")), "/sites?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
    }
}
