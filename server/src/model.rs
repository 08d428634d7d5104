//! The server's stored account types (users, devices), dates in Vietnam's time, and the org
//! tree and access policy of `sync-core` (re-exported: one policy for every caller).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Vietnam's time zone: UTC+7 all year (no daylight saving).
pub fn vietnam() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(7 * 3600).expect("a valid offset")
}

/// Today's date in Vietnam.
pub fn today() -> chrono::NaiveDate {
    chrono::Utc::now().with_timezone(&vietnam()).date_naive()
}

/// A merge's effective date, `YYYY-MM-DD`.
pub fn parse_effective(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("`{}` is not a date: give the effective date as YYYY-MM-DD", s.chars().take(20).collect::<String>()))
}

pub use sync_core::org::{OrgTree, OrgUnit, Principal, Role, COMMUNE_LEVEL};

/// A user account. The password hash is an argon2id PHC string.
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub role: Role,
    pub org_unit: String,
    pub password_hash: String,
    #[serde(default)]
    pub disabled: bool,
    /// Bumped when the user is disabled or their password or role changes: access tokens carry
    /// it, so every older session ends at once.
    #[serde(default)]
    pub session_epoch: u64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("org_unit", &self.org_unit)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A device (phone or browser) a user logged in from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub username: String,
    pub device_id: String,
    pub first_seen: i64,
    pub last_seen: i64,
    #[serde(default)]
    pub revoked: bool,
}

/// The device ids the server names itself: a browser of the web pages (`web-…`) and an API
/// login that named no device (`api-…`). Such a session holds no unsent work, so it may be
/// retired to make room for a new device (`Accounts::login_device`).
pub const SERVER_MADE_DEVICE_PREFIXES: [&str; 2] = ["web-", "api-"];

pub fn server_made_device(device_id: &str) -> bool {
    SERVER_MADE_DEVICE_PREFIXES.iter().any(|p| device_id.starts_with(p))
}

/// The one device-liveness rule: a device answers for its sessions only while it is registered
/// and not revoked. A token or session naming a device the store does not know fails closed.
pub fn device_is_live(device: Option<&Device>) -> bool {
    device.is_some_and(|d| !d.revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one device rule.
    #[test]
    fn an_unknown_or_revoked_device_fails_closed() {
        let device = |revoked| Device { username: "u".into(), device_id: "d".into(), first_seen: 0, last_seen: 0, revoked };
        assert!(device_is_live(Some(&device(false))));
        assert!(!device_is_live(Some(&device(true))));
        assert!(!device_is_live(None), "an unknown device fails closed");
    }
}
