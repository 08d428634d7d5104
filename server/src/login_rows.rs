//! The typed storage seam of logins: the web pages' server-side sessions and the phones'
//! refresh tokens with their families, as rows, with no key in sight.
//!
//! Both are stored under the SHA-256 of their secret (hex), never the secret itself: a stolen
//! copy of the store yields no usable cookie or token. [`LoginRows`] is one consistent read of
//! them; [`LoginWrites`] the rows a write transaction stages. The `sessions` and `auth`
//! (`RefreshTokens`) repositories above decide what they hold (who, until when, which token
//! replaced which). The keyspace implements both (below: its keys); so does
//! `record_rows::MemRows` in tests, and the seam's conformance suite runs on both.

use serde::{Deserialize, Serialize};

use crate::db::{from_json, key, to_json, DbError};
use crate::record_rows::KeyspaceWrites;
use crate::store::{prefix_end, KvRead};

/// A stored web session (under the hash of its id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSession {
    pub username: String,
    pub device_id: String,
    pub csrf: String,
    /// The user's `session_epoch` at login.
    pub epoch: u64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A stored refresh token (under the hash of the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RefreshRecord {
    pub username: String,
    pub device_id: String,
    pub family: String,
    pub expires_at: i64,
    pub used: bool,
    /// The user's session epoch at login: a password, role or org-unit change (which moves the
    /// epoch) ends the family.
    #[serde(default)]
    pub epoch: u64,
    /// When it was used, and the hash of the token issued in its place.
    #[serde(default)]
    pub used_at: i64,
    #[serde(default)]
    pub successor: Option<String>,
}

/// One consistent read of sessions and refresh tokens.
pub(crate) trait LoginRows {
    /// The session stored under `hash`.
    fn session(&self, hash: &str) -> Result<Option<StoredSession>, DbError>;
    /// Every session: its hash, and what it reads as (`None`: it does not read).
    fn all_sessions(&self) -> Result<Vec<(String, Option<StoredSession>)>, DbError>;
    /// The refresh token stored under `hash`.
    fn refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, DbError>;
    /// Every refresh token.
    fn all_refresh_tokens(&self) -> Result<Vec<RefreshRecord>, DbError>;
    /// Whether a refresh family was ended (reuse, logout, a changed account).
    fn family_ended(&self, family: &str) -> Result<bool, DbError>;
}

/// Sessions' and refresh tokens' rows a write transaction stages.
pub(crate) trait LoginWrites {
    fn put_session(&mut self, hash: &str, session: &StoredSession);
    fn drop_session(&mut self, hash: &str);
    fn put_refresh(&mut self, hash: &str, token: &RefreshRecord);
    fn end_family(&mut self, family: &str);
}

// ---------------------------------------------------------------------------------------------
// The keyspace. Keys: `w/{hash}` → [`StoredSession`], `rt/{hash}` → [`RefreshRecord`],
// `rf/{family}` → "revoked" (an ended family). PostgreSQL's views `gesync.sessions` and
// `gesync.refresh_tokens` (migration 6) read `username`, `device_id`, `created_at`,
// `expires_at`, and `family`, `used`, `used_at` with the `rf/` keys: changing their form needs
// a migration that changes the views with them.

const SESSIONS: &[u8] = b"w/";
const REFRESH: &[u8] = b"rt/";

fn session_key(hash: &str) -> Vec<u8> {
    key("w/", &[hash.as_bytes()])
}

fn refresh_key(hash: &str) -> Vec<u8> {
    key("rt/", &[hash.as_bytes()])
}

fn family_key(family: &str) -> Vec<u8> {
    key("rf/", &[family.as_bytes()])
}

fn refresh_of(v: &[u8]) -> Result<RefreshRecord, DbError> {
    from_json("refresh token", v)
}

impl<R: KvRead + ?Sized> LoginRows for R {
    fn session(&self, hash: &str) -> Result<Option<StoredSession>, DbError> {
        self.get(&session_key(hash))?.map(|v| from_json("session", &v)).transpose()
    }

    fn all_sessions(&self) -> Result<Vec<(String, Option<StoredSession>)>, DbError> {
        Ok(self
            .range(SESSIONS, &prefix_end(SESSIONS), usize::MAX)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k[SESSIONS.len()..]).into_owned(), serde_json::from_slice(&v).ok()))
            .collect())
    }

    fn refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, DbError> {
        self.get(&refresh_key(hash))?.map(|v| refresh_of(&v)).transpose()
    }

    fn all_refresh_tokens(&self) -> Result<Vec<RefreshRecord>, DbError> {
        self.range(REFRESH, &prefix_end(REFRESH), usize::MAX)?.into_iter().map(|(_, v)| refresh_of(&v)).collect()
    }

    fn family_ended(&self, family: &str) -> Result<bool, DbError> {
        Ok(self.get(&family_key(family))?.is_some())
    }
}

impl LoginWrites for KeyspaceWrites<'_> {
    fn put_session(&mut self, hash: &str, session: &StoredSession) {
        self.batch.put(session_key(hash), to_json(session));
    }

    fn drop_session(&mut self, hash: &str) {
        self.batch.delete(session_key(hash));
    }

    fn put_refresh(&mut self, hash: &str, token: &RefreshRecord) {
        self.batch.put(refresh_key(hash), to_json(token));
    }

    fn end_family(&mut self, family: &str) {
        self.batch.put(family_key(family), b"revoked".to_vec());
    }
}

#[cfg(test)]
impl LoginRows for crate::record_rows::MemRows {
    fn session(&self, hash: &str) -> Result<Option<StoredSession>, DbError> {
        Ok(self.sessions.get(hash).cloned())
    }
    fn all_sessions(&self) -> Result<Vec<(String, Option<StoredSession>)>, DbError> {
        Ok(self.sessions.iter().map(|(h, s)| (h.clone(), Some(s.clone()))).collect())
    }
    fn refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, DbError> {
        Ok(self.refresh.get(hash).cloned())
    }
    fn all_refresh_tokens(&self) -> Result<Vec<RefreshRecord>, DbError> {
        Ok(self.refresh.values().cloned().collect())
    }
    fn family_ended(&self, family: &str) -> Result<bool, DbError> {
        Ok(self.ended_families.contains(family))
    }
}

#[cfg(test)]
impl LoginWrites for crate::record_rows::MemRows {
    fn put_session(&mut self, hash: &str, session: &StoredSession) {
        self.sessions.insert(hash.to_string(), session.clone());
    }
    fn drop_session(&mut self, hash: &str) {
        self.sessions.remove(hash);
    }
    fn put_refresh(&mut self, hash: &str, token: &RefreshRecord) {
        self.refresh.insert(hash.to_string(), token.clone());
    }
    fn end_family(&mut self, family: &str) {
        self.ended_families.insert(family.to_string());
    }
}

/// Logins' part of the seams' conformance suite (see `record_rows::conform`): run on `MemRows`
/// and on the keyspace over every store.
#[cfg(test)]
pub(crate) mod conform {
    use super::*;
    use crate::record_rows::conform::RowStore;

    fn session(user: &str, expires_at: i64) -> StoredSession {
        StoredSession { username: user.into(), device_id: "web-1".into(), csrf: "c".repeat(43), epoch: 2, created_at: expires_at - 36_000, expires_at }
    }

    fn token(family: &str, used: bool) -> RefreshRecord {
        RefreshRecord { username: "officer".into(), device_id: "phone-1".into(), family: family.into(), expires_at: 1_800_000_000, used, epoch: 1, used_at: 0, successor: None }
    }

    pub(crate) fn suite<S: RowStore>(store: &mut S) {
        let (h1, h2, t1, t2) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32), "d4".repeat(32));
        {
            let cut = store.cut();
            assert!(cut.session(&h1).unwrap().is_none() && cut.all_sessions().unwrap().is_empty(), "an empty store");
            assert!(cut.refresh(&t1).unwrap().is_none() && cut.all_refresh_tokens().unwrap().is_empty() && !cut.family_ended("fam").unwrap());
        }
        store.commit(&mut |w| {
            w.put_session(&h2, &session("reviewer", 2_000));
            w.put_session(&h1, &session("district1", 1_000));
            w.put_refresh(&t1, &token("fam", true));
            w.put_refresh(&t2, &RefreshRecord { successor: None, ..token("fam", false) });
        });
        {
            let cut = store.cut();
            assert_eq!(cut.session(&h1).unwrap(), Some(session("district1", 1_000)));
            assert_eq!(cut.all_sessions().unwrap(), vec![(h1.clone(), Some(session("district1", 1_000))), (h2.clone(), Some(session("reviewer", 2_000)))], "every session, by hash");
            assert_eq!(cut.refresh(&t1).unwrap(), Some(token("fam", true)));
            assert_eq!(cut.all_refresh_tokens().unwrap().iter().filter(|t| !t.used).count(), 1);
            assert!(!cut.family_ended("fam").unwrap());
        }
        store.commit(&mut |w| {
            w.drop_session(&h1);
            w.put_refresh(&t2, &token("fam", true));
            w.end_family("fam");
        });
        let cut = store.cut();
        assert!(cut.session(&h1).unwrap().is_none(), "a session ended");
        assert_eq!(cut.all_sessions().unwrap().len(), 1);
        assert_eq!(cut.refresh(&t2).unwrap().map(|t| t.used), Some(true), "a token rewritten");
        assert!(cut.family_ended("fam").unwrap() && !cut.family_ended("fa").unwrap(), "a family ended, and only it");
    }
}
