//! Server-side web sessions: the repository of `w/` (the web pages use it; no other module
//! knows its keys).
//!
//! The browser holds only a random 256-bit session id in an `HttpOnly`, `SameSite=Strict`
//! cookie (`Secure` over HTTPS). The store keeps, under `w/{sha256(id) hex}`, who the session
//! belongs to, the browser's device id, the session's CSRF token, and when it ends: a stolen
//! copy of the store does not yield usable cookies. PostgreSQL's view `gesync.sessions`
//! (migration 6) reads these values' `username`, `device_id`, `created_at` and `expires_at`:
//! changing their form needs a migration that changes the view with it.
//!
//! A session is checked against the user *as they are now* on every request: a disabled user,
//! a password, role or org-unit change (the user's `session_epoch` moves) or a revoked browser
//! device ends it at once, as it ends the user's API tokens.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{get_json, key, now_secs, to_json, Db, DbError};
use crate::model::Principal;
use crate::store::{prefix_end, Batch};

/// Name of the session cookie.
pub const COOKIE: &str = "gesync_session";
/// A session ends this long after login (a working day), whatever happens.
pub const TTL_SECS: i64 = 10 * 3600;

const PREFIX: &str = "w/";

#[derive(Serialize, Deserialize)]
struct Stored {
    username: String,
    device_id: String,
    csrf: String,
    /// The user's `session_epoch` at login.
    epoch: u64,
    created_at: i64,
    expires_at: i64,
}

/// A live session: who is calling, and the CSRF token their forms must carry.
#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    store_key: Vec<u8>,
}

/// A fresh random token (session ids, CSRF tokens, login-form tokens), URL- and cookie-safe.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn store_key(token: &str) -> Vec<u8> {
    key(PREFIX, &[hex::encode(Sha256::digest(token.as_bytes())).as_bytes()])
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && !a.is_empty() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Web sessions: the repository of [`Db`] that owns this module's keys (`Db::sessions`).
#[derive(Clone, Copy)]
pub struct Sessions<'a> {
    pub(crate) db: &'a Db,
}

impl Sessions<'_> {
    /// Starts a session for `p` (already authenticated) and returns its id for the cookie. Also
    /// drops sessions that have ended, so the table stays small without a background task.
    pub fn create(&self, p: &Principal, epoch: u64) -> Result<String, DbError> {
        let token = random_token();
        let now = now_secs();
        let stored = Stored {
            username: p.username.clone(),
            device_id: p.device_id.clone(),
            csrf: random_token(),
            epoch,
            created_at: now,
            expires_at: now + TTL_SECS,
        };
        let mut batch = Batch::default();
        for (k, v) in self.db.kv().range(PREFIX.as_bytes(), &prefix_end(PREFIX.as_bytes()), usize::MAX)? {
            match serde_json::from_slice::<Stored>(&v) {
                Ok(s) if s.expires_at > now => {}
                _ => batch.delete(k),
            }
        }
        batch.put(store_key(&token), to_json(&stored));
        self.db.commit(batch)?;
        Ok(token)
    }

    /// The live session with this id, if any. An ended session is removed when seen.
    pub fn load(&self, token: &str) -> Result<Option<Session>, DbError> {
        if token.len() != 43 {
            return Ok(None);
        }
        let k = store_key(token);
        let Some(s) = get_json::<Stored>(self.db.kv(), &k)? else { return Ok(None) };
        let user = self.db.accounts().get_user(&s.username)?;
        let device = self.db.accounts().get_device(&s.username, &s.device_id)?;
        let live = s.expires_at > now_secs()
            && user.as_ref().is_some_and(|u| !u.disabled && u.session_epoch == s.epoch)
            && crate::model::device_is_live(device.as_ref());
        if !live {
            let mut b = Batch::default();
            b.delete(k);
            self.db.commit(b)?;
            return Ok(None);
        }
        let user = user.expect("checked above");
        Ok(Some(Session {
            principal: Principal { username: user.username, role: user.role, org_unit: user.org_unit, device_id: s.device_id },
            csrf: s.csrf,
            store_key: k,
        }))
    }

    /// Ends a session (logout).
    pub fn end(&self, session: &Session) -> Result<(), DbError> {
        let mut b = Batch::default();
        b.delete(session.store_key.clone());
        self.db.commit(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, Role, User};
    use crate::store::MemKv;

    fn db_with_user() -> (Db, Principal) {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let user = User { username: "u1".into(), role: Role::DistrictStaff, org_unit: "047".into(), password_hash: String::new(), disabled: false, session_epoch: 3 };
        db.accounts().put_user(&user, true, None).unwrap();
        db.accounts().put_device(&Device { username: "u1".into(), device_id: "web-1".into(), first_seen: 0, last_seen: 0, revoked: false }, None).unwrap();
        (db, Principal { username: "u1".into(), role: Role::DistrictStaff, org_unit: "047".into(), device_id: "web-1".into() })
    }

    #[test]
    fn a_session_lives_until_the_user_or_device_changes() {
        let (db, p) = db_with_user();
        let token = db.sessions().create(&p, 3).unwrap();
        let s = db.sessions().load(&token).unwrap().expect("live session");
        assert_eq!(s.principal.username, "u1");
        assert_eq!(s.csrf.len(), 43);
        // The store never holds the id itself.
        let stored: Vec<_> = db.kv().range(b"w/", &prefix_end(b"w/"), 10).unwrap();
        assert_eq!(stored.len(), 1);
        assert!(!String::from_utf8_lossy(&stored[0].0).contains(&token));
        assert!(!String::from_utf8_lossy(&stored[0].1).contains(&token));
        assert!(db.sessions().load("x".repeat(43).as_str()).unwrap().is_none());

        // A password change (epoch moves) ends it, and it is removed.
        let mut u = db.accounts().get_user("u1").unwrap().unwrap();
        u.session_epoch += 1;
        db.accounts().put_user(&u, false, None).unwrap();
        assert!(db.sessions().load(&token).unwrap().is_none());
        assert!(db.kv().range(b"w/", &prefix_end(b"w/"), 10).unwrap().is_empty());

        // A revoked browser ends it too.
        let token = db.sessions().create(&p, 4).unwrap();
        assert!(db.sessions().load(&token).unwrap().is_some());
        db.accounts().put_device(&Device { username: "u1".into(), device_id: "web-1".into(), first_seen: 0, last_seen: 0, revoked: true }, None).unwrap();
        assert!(db.sessions().load(&token).unwrap().is_none());
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", ""));
    }
}
