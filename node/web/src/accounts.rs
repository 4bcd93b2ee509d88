//! Staff accounts and their sessions, kept in the node's store.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes), each with
//! its own random salt. A session is a random 256-bit token held by the browser in an HttpOnly,
//! SameSite=Strict cookie; the store keeps only its BLAKE3 hash, so a copy of the data directory
//! does not hand out live sessions.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use grassroots_store::{Store, Table};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::WebError;

pub const MIN_PASSWORD_LEN: usize = 8;

/// How long a session lasts without a new login.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    /// County-hospital doctor or technician (edge).
    Clinician,
    /// Tertiary-hospital expert answering consults (hub).
    Expert,
    /// Health authority: aggregate dashboards only (hub).
    Authority,
    /// Runs the node.
    Admin,
}

impl StaffRole {
    /// Every role: a route any signed-in account may use is guarded with this.
    pub const ALL: &'static [StaffRole] = &[
        StaffRole::Clinician,
        StaffRole::Expert,
        StaffRole::Authority,
        StaffRole::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Clinician => "clinician",
            StaffRole::Expert => "expert",
            StaffRole::Authority => "authority",
            StaffRole::Admin => "admin",
        }
    }
}

impl fmt::Display for StaffRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StaffRole {
    type Err = WebError;

    fn from_str(text: &str) -> Result<Self, WebError> {
        match text {
            "clinician" => Ok(StaffRole::Clinician),
            "expert" => Ok(StaffRole::Expert),
            "authority" => Ok(StaffRole::Authority),
            "admin" => Ok(StaffRole::Admin),
            other => Err(WebError::UnknownRole(other.to_string())),
        }
    }
}

/// A region path as accounts and the coverage views compare them: its names trimmed, empty
/// ones dropped (" Henan / Kaifeng/ " is "Henan/Kaifeng").
pub fn normalize_region(text: &str) -> String {
    text.split('/')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub role: StaffRole,
    pub password_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Regions (`Province/Prefecture/County` prefixes) an authority account is limited to;
    /// empty: the whole network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Set by an admin (`crate::lifecycle`): no sign-in, no session, no API token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// The language the account chose for the pages (none: the browser's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<crate::i18n::Lang>,
    /// What the account may do beyond its role, granted one by one by an admin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

/// A permission beyond a role: none is given by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Retrieve original DICOM objects and frames (DICOMweb WADO-RS): data, not pictures,
    /// leaving the node. Viewing rendered pictures needs only the role.
    DicomRetrieve,
}

impl Account {
    /// Whether an admin granted the account `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        !self.disabled && self.permissions.contains(&permission)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) username: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

#[derive(Clone)]
pub struct Accounts {
    pub(crate) users: Table<Account>,
    pub(crate) sessions: Table<Session>,
    /// API tokens by the hash of their secret (`crate::api_tokens`).
    pub(crate) tokens: Table<crate::api_tokens::ApiToken>,
    /// Security events (`crate::security_log`).
    log: crate::security_log::SecurityLog,
    /// Verified against when a user does not exist, so that timing does not tell which names do.
    decoy_hash: String,
}

pub(crate) fn hash_password(password: &str) -> Result<String, WebError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| WebError::Hashing(e.to_string()))
}

fn token_key(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

impl Accounts {
    pub fn open(store: &Store) -> Result<Self, WebError> {
        Ok(Self {
            users: store.table("users")?,
            sessions: store.table("sessions")?,
            tokens: crate::api_tokens::open_table(store)?,
            log: crate::security_log::SecurityLog::open(store)?,
            decoy_hash: hash_password("decoy password never matches")?,
        })
    }

    pub fn add_user(
        &self,
        username: &str,
        role: StaffRole,
        password: &str,
        now: OffsetDateTime,
    ) -> Result<Account, WebError> {
        self.add_user_in_regions(username, role, password, &[], now)
    }

    /// Adds an account limited to `regions` (authority accounts only; empty: no limit). The
    /// limit is part of the account from its first write, so no crash leaves it unlimited.
    pub fn add_user_in_regions(
        &self,
        username: &str,
        role: StaffRole,
        password: &str,
        regions: &[String],
        now: OffsetDateTime,
    ) -> Result<Account, WebError> {
        let regions: Vec<String> = regions.iter().map(|r| normalize_region(r)).collect();
        if !regions.is_empty() && role != StaffRole::Authority {
            return Err(WebError::InvalidRegion(
                "only authority accounts are limited to regions".into(),
            ));
        }
        if let Some(bad) = regions
            .iter()
            .find(|r| r.is_empty() || r.len() > 200 || r.chars().any(char::is_control))
        {
            return Err(WebError::InvalidRegion(format!(
                "{bad:?} is not a region (Province/Prefecture/County)"
            )));
        }
        let valid = !username.is_empty()
            && username.len() <= 32
            && username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(WebError::InvalidUsername(username.to_string()));
        }
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(WebError::WeakPassword {
                min: MIN_PASSWORD_LEN,
            });
        }
        let account = Account {
            username: username.to_string(),
            role,
            password_hash: hash_password(password)?,
            created_at: now,
            regions,
            disabled: false,
            language: None,
            permissions: Vec::new(),
        };
        if !self.users.insert_new_durable(username, &account)? {
            return Err(WebError::UserExists(username.to_string()));
        }
        Ok(account)
    }

    /// Where security events are recorded.
    pub fn security_log(&self) -> &crate::security_log::SecurityLog {
        &self.log
    }

    /// The account named `username`, if there is one.
    pub fn account(&self, username: &str) -> Result<Option<Account>, WebError> {
        Ok(self.users.get(username)?)
    }

    pub fn users(&self) -> Result<Vec<Account>, WebError> {
        Ok(self
            .users
            .entries()?
            .into_iter()
            .map(|(_, account)| account)
            .collect())
    }

    /// The account if the password is right.
    pub fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Account>, WebError> {
        let account = self.users.get(username)?;
        let stored = account
            .as_ref()
            .map_or(self.decoy_hash.as_str(), |a| a.password_hash.as_str());
        let parsed = PasswordHash::new(stored).map_err(|e| WebError::Hashing(e.to_string()))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(account.filter(|account| matches && !account.disabled))
    }

    /// Starts a session and returns its token (for the cookie).
    pub fn create_session(&self, username: &str, now: OffsetDateTime) -> Result<String, WebError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        self.sessions.put_durable(
            &token_key(&token),
            &Session {
                username: username.to_string(),
                expires_at: now + SESSION_LIFETIME,
            },
        )?;
        Ok(token)
    }

    /// The account behind a live session token.
    pub fn session_account(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Account>, WebError> {
        let key = token_key(token);
        let Some(session) = self.sessions.get(&key)? else {
            return Ok(None);
        };
        if session.expires_at <= now {
            self.sessions.remove(&key)?;
            return Ok(None);
        }
        Ok(self
            .users
            .get(&session.username)?
            .filter(|account| !account.disabled))
    }

    /// Removes every expired session (a session is otherwise removed only when its cookie
    /// comes back, and most never do); returns how many went.
    pub fn sweep_expired_sessions(&self, now: OffsetDateTime) -> Result<usize, WebError> {
        let mut swept = 0;
        for (key, session) in self.sessions.entries()? {
            if session.expires_at <= now {
                self.sessions.remove(&key)?;
                swept += 1;
            }
        }
        self.sessions.flush()?;
        Ok(swept)
    }

    pub fn end_session(&self, token: &str) -> Result<(), WebError> {
        self.sessions.remove_durable(&token_key(token))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_sessions_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let accounts = Accounts::open(&store).unwrap();
        let now = OffsetDateTime::now_utc();
        accounts
            .add_user("dr.li", StaffRole::Expert, "correct horse", now)
            .unwrap();
        let old = accounts
            .create_session("dr.li", now - SESSION_LIFETIME - Duration::minutes(1))
            .unwrap();
        let live = accounts.create_session("dr.li", now).unwrap();
        assert_eq!(accounts.sweep_expired_sessions(now).unwrap(), 1);
        assert_eq!(accounts.sessions.len(), 1);
        assert!(accounts.session_account(&old, now).unwrap().is_none());
        assert!(accounts.session_account(&live, now).unwrap().is_some());
    }

    #[test]
    fn passwords_sessions_and_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let accounts = Accounts::open(&store).unwrap();
        let now = OffsetDateTime::now_utc();
        let account = accounts
            .add_user("dr.li", StaffRole::Expert, "correct horse", now)
            .unwrap();
        assert!(
            account.password_hash.starts_with("$argon2id$"),
            "{}",
            account.password_hash
        );
        assert!(!account.password_hash.contains("correct horse"));
        assert!(matches!(
            accounts.add_user("dr.li", StaffRole::Admin, "another one", now),
            Err(WebError::UserExists(_))
        ));
        assert!(matches!(
            accounts.add_user("bad name", StaffRole::Admin, "long enough", now),
            Err(WebError::InvalidUsername(_))
        ));
        assert!(matches!(
            accounts.add_user("x", StaffRole::Admin, "short", now),
            Err(WebError::WeakPassword { .. })
        ));
        assert!(matches!(
            "surgeon".parse::<StaffRole>(),
            Err(WebError::UnknownRole(_))
        ));

        assert_eq!(
            accounts
                .verify_password("dr.li", "correct horse")
                .unwrap()
                .unwrap()
                .role,
            StaffRole::Expert
        );
        assert!(accounts
            .verify_password("dr.li", "wrong")
            .unwrap()
            .is_none());
        assert!(accounts
            .verify_password("nobody", "correct horse")
            .unwrap()
            .is_none());

        let token = accounts.create_session("dr.li", now).unwrap();
        assert_eq!(
            accounts
                .session_account(&token, now)
                .unwrap()
                .unwrap()
                .username,
            "dr.li"
        );
        assert!(
            accounts
                .session_account(&token, now + SESSION_LIFETIME)
                .unwrap()
                .is_none(),
            "expired"
        );
        let token = accounts.create_session("dr.li", now).unwrap();
        accounts.end_session(&token).unwrap();
        assert!(accounts.session_account(&token, now).unwrap().is_none());
        assert!(accounts.session_account("forged", now).unwrap().is_none());
    }
}
