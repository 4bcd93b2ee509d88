//! API tokens: how scripts, scanners, PACS and DICOMweb clients act for an account without a
//! browser session.
//!
//! An admin creates a token for an account (`grassroots user token add`, or
//! `POST /api/v1/tokens`); the secret (`grt_` and 64 hex digits) is shown once and only its
//! BLAKE3 hash is stored, so a copy of the data directory hands out no live token. A token is
//! scoped to the role its account had when it was made: if the account's role changes, or the
//! account goes, the token stops working. It is sent as `Authorization: Bearer grt_...`, carries
//! no cookie, and so needs no CSRF token (a browser never adds it to a cross-site request). An
//! admin can list tokens (by id and name, never the secret) and revoke them.

use grassroots_store::Table;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::accounts::{Account, Accounts, StaffRole};
use crate::WebError;

/// Every token starts with this, so that a secret pasted into the wrong place is recognisable
/// (and secret scanners can find one committed by mistake).
pub const TOKEN_PREFIX: &str = "grt_";

/// At most this many tokens per account.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 20;

/// A token as stored and listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// The first 12 hex digits of the secret's hash: names the token in lists, logs and revocation.
    pub id: String,
    /// What it is for ("slide scanner", "PACS C-STORE forwarder").
    pub name: String,
    pub username: String,
    /// The role the token acts with: its account's role when it was made.
    pub role: StaffRole,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

fn secret_key(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

pub(crate) fn open_table(store: &grassroots_store::Store) -> Result<Table<ApiToken>, WebError> {
    Ok(store.table("api_tokens")?)
}

impl Accounts {
    /// Makes a token for `username` (with that account's role); returns the secret, shown once.
    pub fn create_api_token(
        &self,
        username: &str,
        name: &str,
        created_by: &str,
        now: OffsetDateTime,
    ) -> Result<(String, ApiToken), WebError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
            return Err(WebError::BadRequest(
                "a token needs a name of 1 to 80 characters saying what it is for".into(),
            ));
        }
        let account = self
            .account(username)?
            .ok_or_else(|| WebError::NotFound(format!("no account {username:?}")))?;
        let held = self
            .api_tokens()?
            .iter()
            .filter(|t| t.username == username)
            .count();
        if held >= MAX_TOKENS_PER_ACCOUNT {
            return Err(WebError::BadRequest(format!(
                "{username} already has {MAX_TOKENS_PER_ACCOUNT} tokens: revoke one first"
            )));
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let key = secret_key(&secret);
        let token = ApiToken {
            id: key[..12].to_string(),
            name: name.to_string(),
            username: account.username,
            role: account.role,
            created_by: created_by.to_string(),
            created_at: now,
        };
        self.tokens.put_durable(&key, &token)?;
        Ok((secret, token))
    }

    /// Every token, oldest first.
    pub fn api_tokens(&self) -> Result<Vec<ApiToken>, WebError> {
        let mut all: Vec<ApiToken> = self.tokens.entries()?.into_iter().map(|(_, t)| t).collect();
        all.sort_by_key(|t| t.created_at);
        Ok(all)
    }

    /// Revokes the token `id`; the token that went, if there was one.
    pub fn revoke_api_token(&self, id: &str) -> Result<Option<ApiToken>, WebError> {
        let found = self
            .tokens
            .entries()?
            .into_iter()
            .find(|(_, token)| token.id == id);
        match found {
            Some((key, token)) => {
                self.tokens.remove_durable(&key)?;
                Ok(Some(token))
            }
            None => Ok(None),
        }
    }

    /// The account a token acts for, with the token; none if the secret is unknown or revoked,
    /// the account is gone, or its role is no longer the token's.
    pub fn api_token_account(&self, secret: &str) -> Result<Option<(Account, ApiToken)>, WebError> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() != TOKEN_PREFIX.len() + 64 {
            return Ok(None);
        }
        let Some(token) = self.tokens.get(&secret_key(secret))? else {
            return Ok(None);
        };
        Ok(self
            .account(&token.username)?
            .filter(|account| account.role == token.role && !account.disabled)
            .map(|account| (account, token)))
    }
}

/// `GET /api/v1/tokens` (admins): every token, without secrets.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts",
    responses((status = 200, description = "Every token, without its secret", body = Vec<ApiToken>), crate::openapi::Refusals))]
pub async fn list_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.accounts.api_tokens() {
        Ok(all) => axum::Json(all).into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    pub name: String,
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: ApiToken,
    /// `Authorization: Bearer <secret>`; stored only as a hash, so it cannot be shown again.
    pub secret: String,
}

/// `POST /api/v1/tokens` (admins), `{"user": ..., "name": ...}`: 201 with the token and its
/// secret, which is shown this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", request_body = NewToken,
    responses(
        (status = 201, description = "The token and its secret, shown this once", body = CreatedToken),
        (status = 400, description = "The account cannot hold a token (unknown, disabled)", body = crate::openapi::ApiError),
        (status = 404, description = "No such account", body = crate::openapi::ApiError),
        crate::openapi::Refusals, crate::openapi::InputRefusals))]
pub async fn create_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    axum::extract::Extension(crate::CurrentUser(admin)): axum::extract::Extension<
        crate::CurrentUser,
    >,
    axum::Json(new): axum::Json<NewToken>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.accounts.create_api_token(
        &new.user,
        &new.name,
        &admin.username,
        OffsetDateTime::now_utc(),
    ) {
        Ok((secret, token)) => {
            state.accounts.security_log().record(
                "token-created",
                Some(&token.username),
                Some(&admin.username),
                None,
                format!("token {} ({}) as {}", token.id, token.name, token.role),
            );
            (
                axum::http::StatusCode::CREATED,
                axum::Json(CreatedToken { token, secret }),
            )
                .into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// `DELETE /api/v1/tokens/{id}` (admins): the token stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The token's id (its hash's first 12 hex digits)")),
    responses(
        (status = 200, description = "The token that was revoked", body = ApiToken),
        (status = 404, description = "No such token", body = crate::openapi::ApiError),
        crate::openapi::Refusals))]
pub async fn revoke_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    axum::extract::Extension(crate::CurrentUser(admin)): axum::extract::Extension<
        crate::CurrentUser,
    >,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.accounts.revoke_api_token(&id) {
        Ok(Some(token)) => {
            state.accounts.security_log().record(
                "token-revoked",
                Some(&token.username),
                Some(&admin.username),
                None,
                format!("token {} ({})", token.id, token.name),
            );
            axum::Json(token).into_response()
        }
        Ok(None) => WebError::NotFound(format!("no API token {id}")).into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_act_for_their_account_in_its_role_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = grassroots_store::Store::open(dir.path()).unwrap();
        let accounts = Accounts::open(&store).unwrap();
        let now = OffsetDateTime::now_utc();
        accounts
            .add_user("scanner", StaffRole::Clinician, "correct horse", now)
            .unwrap();
        let (secret, token) = accounts
            .create_api_token("scanner", "Slide scanner", "it-wu", now)
            .unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_eq!(token.role, StaffRole::Clinician);
        let (account, _) = accounts.api_token_account(&secret).unwrap().unwrap();
        assert_eq!(account.username, "scanner");
        // Only the hash is stored.
        let stored = serde_json::to_string(&accounts.tokens.entries().unwrap()).unwrap();
        assert!(!stored.contains(&secret[TOKEN_PREFIX.len()..]));
        // Wrong, malformed and unknown secrets act for nobody.
        assert!(accounts.api_token_account("grt_00").unwrap().is_none());
        let mut wrong = secret.clone();
        wrong.replace_range(10..11, if &secret[10..11] == "a" { "b" } else { "a" });
        assert!(accounts.api_token_account(&wrong).unwrap().is_none());
        assert!(accounts
            .create_api_token("nobody", "x", "it-wu", now)
            .is_err());
        assert!(accounts
            .create_api_token("scanner", " ", "it-wu", now)
            .is_err());
        // Revoked: gone.
        assert_eq!(accounts.revoke_api_token(&token.id).unwrap(), Some(token));
        assert!(accounts.api_token_account(&secret).unwrap().is_none());
        assert!(accounts.api_tokens().unwrap().is_empty());
    }
}
