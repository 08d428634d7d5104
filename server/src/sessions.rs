//! Server-side web sessions (the web pages use them), read and written through the typed
//! storage seam of `login_rows.rs`, which alone knows their keys.
//!
//! The browser holds only a random 256-bit session id in an `HttpOnly`, `SameSite=Strict`
//! cookie (`Secure` over HTTPS). The store keeps, under the id's SHA-256 (hex), who the session
//! belongs to, the browser's device id, the session's CSRF token, and when it ends: a stolen
//! copy of the store does not yield usable cookies.
//!
//! A session is checked against the user *as they are now* on every request: a disabled user,
//! a password, role or org-unit change (the user's `session_epoch` moves) or a revoked browser
//! device ends it at once, as it ends the user's API tokens.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{now_secs, Db, DbError};
use crate::login_rows::{LoginRows, LoginWrites, StoredSession};
use crate::model::Principal;
use crate::store::Batch;

/// Name of the session cookie.
pub const COOKIE: &str = "gesync_session";
/// A session ends this long after login (a working day), whatever happens.
pub const TTL_SECS: i64 = 10 * 3600;


/// A live session: who is calling, and the CSRF token their forms must carry.
#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    /// What the store keeps it under: the SHA-256 of its id.
    hash: String,
}

/// A fresh random token (session ids, CSRF tokens, login-form tokens), URL- and cookie-safe.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && !a.is_empty() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Web sessions: a repository of [`Db`] (`Db::sessions`), over the typed storage seams.
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
        let stored = StoredSession {
            username: p.username.clone(),
            device_id: p.device_id.clone(),
            csrf: random_token(),
            epoch,
            created_at: now,
            expires_at: now + TTL_SECS,
        };
        let mut batch = Batch::default();
        let mut w = self.db.stage(&mut batch);
        for (hash, s) in self.db.kv().all_sessions()? {
            match s {
                Some(s) if s.expires_at > now => {}
                _ => w.drop_session(&hash),
            }
        }
        w.put_session(&token_hash(&token), &stored);
        self.db.commit(batch)?;
        Ok(token)
    }

    /// The live session with this id, if any. An ended session is removed when seen.
    pub fn load(&self, token: &str) -> Result<Option<Session>, DbError> {
        if token.len() != 43 {
            return Ok(None);
        }
        let hash = token_hash(token);
        let Some(s) = self.db.kv().session(&hash)? else { return Ok(None) };
        let user = self.db.accounts().get_user(&s.username)?;
        let device = self.db.accounts().get_device(&s.username, &s.device_id)?;
        let live = s.expires_at > now_secs()
            && user.as_ref().is_some_and(|u| !u.disabled && u.session_epoch == s.epoch)
            && crate::model::device_is_live(device.as_ref());
        if !live {
            let mut b = Batch::default();
            self.db.stage(&mut b).drop_session(&hash);
            self.db.commit(b)?;
            return Ok(None);
        }
        let user = user.expect("checked above");
        Ok(Some(Session {
            principal: Principal { username: user.username, role: user.role, org_unit: user.org_unit, device_id: s.device_id },
            csrf: s.csrf,
            hash,
        }))
    }

    /// Ends a session (logout).
    pub fn end(&self, session: &Session) -> Result<(), DbError> {
        let mut b = Batch::default();
        self.db.stage(&mut b).drop_session(&session.hash);
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
        let stored = db.kv().all_sessions().unwrap();
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].0.contains(&token));
        assert!(!serde_json::to_string(&stored[0].1).unwrap().contains(&token));
        assert!(db.sessions().load("x".repeat(43).as_str()).unwrap().is_none());

        // A password change (epoch moves) ends it, and it is removed.
        let mut u = db.accounts().get_user("u1").unwrap().unwrap();
        u.session_epoch += 1;
        db.accounts().put_user(&u, false, None).unwrap();
        assert!(db.sessions().load(&token).unwrap().is_none());
        assert!(db.kv().all_sessions().unwrap().is_empty());

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
