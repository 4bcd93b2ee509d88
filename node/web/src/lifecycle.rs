//! An account's life after it is made: an admin disables it (a doctor who left: sign-in,
//! sessions and API tokens stop at once), enables it again, gives it a new password (its
//! sessions end), or ends its sessions (a lost phone). Each is a security event.
//! `GET /api/v1/accounts` lists accounts without their password hashes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::accounts::{Account, Accounts, Permission, StaffRole, MIN_PASSWORD_LEN};
use crate::WebError;

/// An account as admins see it: never the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub username: String,
    pub role: StaffRole,
    pub disabled: bool,
    pub regions: Vec<String>,
    /// Permissions granted beyond the role.
    pub permissions: Vec<Permission>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<Account> for AccountView {
    fn from(account: Account) -> Self {
        Self {
            username: account.username,
            role: account.role,
            disabled: account.disabled,
            regions: account.regions,
            permissions: account.permissions,
            created_at: account.created_at,
        }
    }
}

impl Accounts {
    /// Whether the session `token` still signs its (enabled) account in with one of `roles`
    /// (those of the route the socket opened on): a live WebSocket asks this as it goes, so
    /// disabling an account, a new password, revoked sessions or a role taken away end it.
    pub fn session_allows(&self, token: &str, roles: &[StaffRole]) -> bool {
        self.session_account(token, OffsetDateTime::now_utc())
            .ok()
            .flatten()
            .is_some_and(|account| roles.contains(&account.role))
    }

    /// Ends every session of `username`; returns how many.
    pub fn end_sessions_of(&self, username: &str) -> Result<usize, WebError> {
        let mut ended = 0;
        for (key, session) in self.sessions.entries()? {
            if session.username == username {
                self.sessions.remove(&key)?;
                ended += 1;
            }
        }
        self.sessions.flush()?;
        Ok(ended)
    }

    fn change(
        &self,
        username: &str,
        mut change: impl FnMut(&mut Account),
    ) -> Result<Account, WebError> {
        let changed = self.users.update(username, |current| {
            current.map(|mut account| {
                change(&mut account);
                account
            })
        })?;
        self.users.flush()?;
        changed.ok_or_else(|| WebError::NotFound(format!("no account {username:?}")))
    }

    /// Disables (or enables) an account; disabling ends its sessions, and its API tokens stop
    /// working while it is disabled.
    pub fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        by: &str,
    ) -> Result<Account, WebError> {
        if disabled && username == by {
            return Err(WebError::BadRequest(
                "you cannot disable your own account".into(),
            ));
        }
        let account = self.change(username, |account| account.disabled = disabled)?;
        let ended = if disabled {
            self.end_sessions_of(username)?
        } else {
            0
        };
        let kind = if disabled {
            "account-disabled"
        } else {
            "account-enabled"
        };
        self.security_log().record(
            kind,
            Some(username),
            Some(by),
            None,
            format!("{ended} session(s) ended"),
        );
        Ok(account)
    }

    /// Grants `permission` to an account, or takes it back; a security event either way.
    pub fn set_permission(
        &self,
        username: &str,
        permission: Permission,
        granted: bool,
        by: &str,
    ) -> Result<Account, WebError> {
        let account = self.change(username, |account| {
            account.permissions.retain(|p| *p != permission);
            if granted {
                account.permissions.push(permission);
            }
        })?;
        let name = serde_json::to_value(permission)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.security_log().record(
            if granted {
                "permission-granted"
            } else {
                "permission-revoked"
            },
            Some(username),
            Some(by),
            None,
            name,
        );
        Ok(account)
    }

    /// Keeps the language the account chose for its pages.
    pub fn set_language(
        &self,
        username: &str,
        language: crate::i18n::Lang,
    ) -> Result<Account, WebError> {
        self.change(username, |account| account.language = Some(language))
    }

    /// Gives an account a new password and ends its sessions.
    pub fn reset_password(
        &self,
        username: &str,
        password: &str,
        by: &str,
    ) -> Result<Account, WebError> {
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(WebError::WeakPassword {
                min: MIN_PASSWORD_LEN,
            });
        }
        let hash = crate::accounts::hash_password(password)?;
        let account = self.change(username, |account| account.password_hash = hash.clone())?;
        let ended = self.end_sessions_of(username)?;
        self.security_log().record(
            "password-reset",
            Some(username),
            Some(by),
            None,
            format!("{ended} session(s) ended"),
        );
        Ok(account)
    }
}

fn admin_of(extension: axum::extract::Extension<crate::CurrentUser>) -> String {
    extension.0 .0.username
}

/// `GET /api/v1/accounts` (admins).
#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts",
    responses((status = 200, description = "Every account of this node", body = Vec<AccountView>), crate::openapi::Refusals))]
pub async fn list_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.accounts.users() {
        Ok(users) => {
            let views: Vec<AccountView> = users.into_iter().map(AccountView::from).collect();
            axum::Json(views).into_response()
        }
        Err(error) => error.into_response(),
    }
}

fn answer(result: Result<Account, WebError>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match result {
        Ok(account) => axum::Json(AccountView::from(account)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /api/v1/accounts/{name}/disable` (admins).
#[utoipa::path(post, path = "/api/v1/accounts/{name}/disable", tag = "accounts", params(("name" = String, Path, description = "The account's user name")),
    responses(
        (status = 200, description = "The account, disabled: its sessions ended, its tokens refused", body = AccountView),
        (status = 400, description = "An admin cannot disable their own account", body = crate::openapi::ApiError),
        (status = 404, description = "No such account", body = crate::openapi::ApiError),
        crate::openapi::Refusals))]
pub async fn disable_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    admin: axum::extract::Extension<crate::CurrentUser>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    answer(state.accounts.set_disabled(&name, true, &admin_of(admin)))
}

/// `POST /api/v1/accounts/{name}/enable` (admins).
#[utoipa::path(post, path = "/api/v1/accounts/{name}/enable", tag = "accounts", params(("name" = String, Path, description = "The account's user name")),
    responses(
        (status = 200, description = "The account, enabled", body = AccountView),
        (status = 404, description = "No such account", body = crate::openapi::ApiError),
        crate::openapi::Refusals))]
pub async fn enable_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    admin: axum::extract::Extension<crate::CurrentUser>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    answer(state.accounts.set_disabled(&name, false, &admin_of(admin)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    password: String,
}

/// `POST /api/v1/accounts/{name}/password` (admins), `{"password": ...}`.
#[utoipa::path(post, path = "/api/v1/accounts/{name}/password", tag = "accounts", params(("name" = String, Path, description = "The account's user name")),
    request_body = NewPassword,
    responses(
        (status = 200, description = "The account, with its new password; its sessions ended", body = AccountView),
        (status = 404, description = "No such account", body = crate::openapi::ApiError),
        crate::openapi::Refusals, crate::openapi::InputRefusals))]
pub async fn password_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    admin: axum::extract::Extension<crate::CurrentUser>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Json(new): axum::Json<NewPassword>,
) -> axum::response::Response {
    let accounts = state.accounts.clone();
    let by = admin_of(admin);
    // argon2 hashing: off the async workers.
    let result =
        tokio::task::spawn_blocking(move || accounts.reset_password(&name, &new.password, &by))
            .await
            .unwrap_or_else(|e| Err(WebError::Internal(e.to_string())));
    answer(result)
}

/// `POST /api/v1/accounts/{name}/sessions/revoke` (admins): signs the account out everywhere.
#[utoipa::path(post, path = "/api/v1/accounts/{name}/sessions/revoke", tag = "accounts", params(("name" = String, Path, description = "The account's user name")),
    responses(
        (status = 200, description = "How many sessions were ended", body = EndedSessions),
        (status = 404, description = "No such account", body = crate::openapi::ApiError),
        crate::openapi::Refusals))]
pub async fn revoke_sessions_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    admin: axum::extract::Extension<crate::CurrentUser>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let by = admin_of(admin);
    match state.accounts.account(&name) {
        Ok(Some(_)) => {}
        Ok(None) => return WebError::NotFound(format!("no account {name:?}")).into_response(),
        Err(error) => return error.into_response(),
    }
    match state.accounts.end_sessions_of(&name) {
        Ok(ended) => {
            state.accounts.security_log().record(
                "sessions-revoked",
                Some(&name),
                Some(&by),
                None,
                format!("{ended} session(s) ended"),
            );
            axum::Json(EndedSessions { ended }).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// The answer of `POST /api/v1/accounts/{name}/sessions/revoke`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndedSessions {
    /// Sessions of the account that were open and are now ended.
    pub ended: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_account_cannot_sign_in_nor_use_its_sessions_or_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = grassroots_store::Store::open(dir.path()).unwrap();
        let accounts = Accounts::open(&store).unwrap();
        let now = OffsetDateTime::now_utc();
        accounts
            .add_user("dr.li", StaffRole::Clinician, "correct horse", now)
            .unwrap();
        let session = accounts.create_session("dr.li", now).unwrap();
        let (secret, _) = accounts
            .create_api_token("dr.li", "scanner", "it-wu", now)
            .unwrap();
        accounts.set_disabled("dr.li", true, "it-wu").unwrap();
        assert!(accounts.session_account(&session, now).unwrap().is_none());
        assert!(accounts
            .verify_password("dr.li", "correct horse")
            .unwrap()
            .is_none());
        assert!(accounts.api_token_account(&secret).unwrap().is_none());
        assert!(accounts.set_disabled("it-wu", true, "it-wu").is_err());
        // Enabled again: the token works again, the old session stays ended.
        accounts.set_disabled("dr.li", false, "it-wu").unwrap();
        assert!(accounts.api_token_account(&secret).unwrap().is_some());
        assert!(accounts.session_account(&session, now).unwrap().is_none());
        // A new password ends the sessions and the old password.
        let session = accounts.create_session("dr.li", now).unwrap();
        assert!(accounts.reset_password("dr.li", "short", "it-wu").is_err());
        accounts
            .reset_password("dr.li", "battery staple", "it-wu")
            .unwrap();
        assert!(accounts.session_account(&session, now).unwrap().is_none());
        assert!(accounts
            .verify_password("dr.li", "correct horse")
            .unwrap()
            .is_none());
        assert!(accounts
            .verify_password("dr.li", "battery staple")
            .unwrap()
            .is_some());
        let kinds: Vec<String> = accounts
            .security_log()
            .newest(10)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["password-reset", "account-enabled", "account-disabled"]
        );
    }
}

/// A permission to grant or take back.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionChange {
    permission: Permission,
    granted: bool,
}

/// `POST /api/v1/accounts/{name}/permissions` (admins), `{"permission": "dicom-retrieve",
/// "granted": true}`.
#[utoipa::path(post, path = "/api/v1/accounts/{name}/permissions", tag = "accounts", params(("name" = String, Path, description = "The account's user name")),
    request_body = PermissionChange,
    responses(
        (status = 200, description = "The account, with its permissions", body = AccountView),
        (status = 404, description = "No such account", body = crate::openapi::ApiError),
        crate::openapi::Refusals, crate::openapi::InputRefusals))]
pub async fn permissions_api(
    axum::extract::State(state): axum::extract::State<crate::WebState>,
    admin: axum::extract::Extension<crate::CurrentUser>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Json(change): axum::Json<PermissionChange>,
) -> axum::response::Response {
    answer(state.accounts.set_permission(
        &name,
        change.permission,
        change.granted,
        &admin_of(admin),
    ))
}
