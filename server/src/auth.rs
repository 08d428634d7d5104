//! Passwords, tokens and login throttling.
//!
//! - Passwords: argon2id, 48 MiB, 2 passes (above OWASP's 46 MiB minimum), PHC strings. Hashing
//!   runs on the blocking pool behind a semaphore so a burst of logins cannot exhaust memory.
//! - Access tokens: EdDSA JWTs, 15 minutes, `iss`/`aud`/`exp` checked, the algorithm fixed by
//!   the server (never read from the token). The key pair is made on first start and kept in
//!   the store. Each request also checks the user (not disabled, same session epoch) and the
//!   device (not revoked), so disabling a user or revoking a device takes effect at once.
//!   A token whose signature was checked once is remembered (by its SHA-256, up to
//!   [`VERIFIED_TOKENS`]) until it expires: the signature is not checked again on each request.
//! - Refresh tokens: 32 random bytes, stored only as SHA-256, bound to one device, rotated on
//!   every use; presenting a used one revokes its whole family (theft detection).
//!   Stored through the typed storage seam of `login_rows.rs`, which alone knows their keys
//!   (and says what PostgreSQL's view `gesync.refresh_tokens` reads of them).


use std::collections::HashMap;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{now_secs, Db, DbError};
use crate::login_rows::{LoginRows, LoginWrites, RefreshRecord};
use crate::model::{Principal, Role};
use crate::store::Batch;

pub const ACCESS_TTL_SECS: i64 = 15 * 60;
pub const REFRESH_TTL_SECS: i64 = 90 * 24 * 3600;
pub const MIN_PASSWORD_LEN: usize = 10;
const ISSUER: &str = "gesync";
const AUDIENCE: &str = "gesync-api";

fn argon2() -> Argon2<'static> {
    let params = Params::new(48 * 1024, 2, 1, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Whether `u` may be a username: 3 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_username(u: &str) -> bool {
    (3..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Checks the password policy; the message never contains the password.
pub fn check_password_policy(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!("password must be at least {MIN_PASSWORD_LEN} characters"));
    }
    if password.len() > 1024 {
        return Err("password must be at most 1024 bytes".into());
    }
    Ok(())
}

/// Hashes a password (argon2id PHC string). CPU- and memory-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2().hash_password(password.as_bytes(), &salt).expect("argon2 hashing").to_string()
}

/// Verifies a password against a PHC string. Parameters are read from the string, so hashes made
/// with older parameters still verify.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A PHC string for a password nobody knows, verified against when the username does not exist
/// so that timing does not reveal which usernames exist.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not-a-real-password-0000"))
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub org: String,
    pub dev: String,
    /// Session epoch of the user when the token was issued.
    pub ep: u64,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// The refresh-token family the token was issued with ("" for none): when that family is
    /// revoked (reuse detected, logout), its access tokens stop working at once.
    #[serde(default)]
    pub fam: String,
}

/// Seconds an access token is still taken after its `exp` (clocks differ a little).
const LEEWAY_SECS: i64 = 30;

/// Most access tokens whose signature [`Keys::verify_access`] remembers having checked: more
/// than the phones of a province syncing within a token's life (15 minutes); when full it
/// starts again from none.
pub const VERIFIED_TOKENS: usize = 8192;

/// The server's signing keys.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// HMAC-SHA256 key of the device proofs ([`Keys::device_proof`]).
    device_proof: Vec<u8>,
    /// The claims of access tokens whose signature was checked, by the token's SHA-256: a
    /// phone shows one token on every request until it expires, and checking an Ed25519
    /// signature is about a tenth of a no-op sync's CPU. Only verified tokens enter.
    verified: parking_lot::Mutex<HashMap<[u8; 32], Claims>>,
}

impl Keys {
    /// Loads the Ed25519 key pair from the store, making it on first start.
    pub fn load(db: &Db) -> Result<Self, DbError> {
        let der = db.secret(crate::db::TOKEN_SIGNING_SECRET, || {
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            sk.to_pkcs8_der().expect("pkcs8 encoding").as_bytes().to_vec()
        })?;
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let sk = ed25519_dalek::SigningKey::from_pkcs8_der(&der).map_err(|e| crate::db::corrupt("jwt key", e))?;
        let device_proof = db.secret("device-proof-hmac", || {
            let mut key = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            key
        })?;
        Ok(Keys {
            encoding: EncodingKey::from_ed_der(&der),
            decoding: DecodingKey::from_ed_der(sk.verifying_key().as_bytes()),
            device_proof,
            verified: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The proof that `device_id` logged in as `username` here: given with every successful
    /// login, kept by the phone (or in the browser's device cookie) and shown with the next
    /// password login, so that the throttle can tell the owner's device from anyone naming its
    /// id (`crate::throttle::Caller`). 128 bits of HMAC-SHA256, hex.
    pub fn device_proof(&self, username: &str, device_id: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.device_proof).expect("HMAC takes any key length");
        mac.update(username.to_lowercase().as_bytes());
        mac.update(&[0]);
        mac.update(device_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// True when `proof` is the device proof of (`username`, `device_id`); compared as hashes,
    /// so the time taken says nothing about how much of it was right.
    pub fn is_device_proof(&self, username: &str, device_id: &str, proof: &str) -> bool {
        use sha2::Digest;
        sha2::Sha256::digest(self.device_proof(username, device_id).as_bytes()) == sha2::Sha256::digest(proof.as_bytes())
    }

    pub fn issue_access(&self, p: &Principal, epoch: u64, family: Option<&str>) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: p.username.clone(),
            role: p.role,
            org: p.org_unit.clone(),
            dev: p.device_id.clone(),
            ep: epoch,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + ACCESS_TTL_SECS,
            fam: family.unwrap_or_default().to_string(),
        };
        jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::EdDSA), &claims, &self.encoding).expect("EdDSA signing")
    }

    /// Verifies signature (EdDSA only), `exp`, `iss` and `aud`.
    /// A token that was verified before is checked again for its expiry only (the caller
    /// checks the user, the session and the device on every request).
    pub fn verify_access(&self, token: &str) -> Result<Claims, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.verified.lock().get(&digest) {
            return if claims.exp < now_secs() - LEEWAY_SECS { Err(TokenError::Expired) } else { Ok(claims.clone()) };
        }
        let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = LEEWAY_SECS as u64;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map(|d| d.claims).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(digest, claims.clone());
        Ok(claims)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

/// How long a used refresh token may come back without being taken for a stolen one: a phone
/// on 2G whose refresh answer was lost on a cut asks again with the same token.
pub const REFRESH_GRACE_SECS: i64 = 120;

/// A refresh token exchanged for a new one of the same family.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub username: String,
    pub device_id: String,
    pub family: String,
    /// The user's session epoch when the family began.
    pub epoch: u64,
    /// The new refresh token (its hash is stored, never the token).
    pub token: String,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshError {
    Unknown,
    Expired,
    /// A used token came back: its family is now revoked.
    Reused,
}

/// Refresh tokens and their families: a repository of [`Db`] (`Db::refresh_tokens`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct RefreshTokens<'a> {
    pub(crate) db: &'a Db,
}

impl RefreshTokens<'_> {
    /// Issues the first refresh token of a new family, for a login at the user's session
    /// `epoch`. Returns the token and the family.
    pub fn issue_refresh(&self, username: &str, device_id: &str, epoch: u64) -> Result<(String, String), DbError> {
        let token = random_token();
        let rec = RefreshRecord {
            username: username.into(),
            device_id: device_id.into(),
            family: random_token(),
            expires_at: now_secs() + REFRESH_TTL_SECS,
            used: false,
            epoch,
            used_at: 0,
            successor: None,
        };
        let mut b = Batch::default();
        self.db.stage(&mut b).put_refresh(&token_hash(&token), &rec);
        self.db.commit(b)?;
        Ok((token, rec.family))
    }

    /// Whether a refresh-token family was revoked (reuse, logout, a changed account).
    pub fn refresh_family_revoked(&self, family: &str) -> Result<bool, DbError> {
        self.db.kv().family_ended(family)
    }

    /// Revokes a refresh-token family.
    pub fn revoke_refresh_family(&self, family: &str) -> Result<(), DbError> {
        let mut b = Batch::default();
        self.db.stage(&mut b).end_family(family);
        self.db.commit(b)
    }

    /// Exchanges a refresh token for a new one of its family, marking it used (in one write).
    ///
    /// A used token that comes back revokes its family (a stolen token was used), except in one
    /// case: the answer to the exchange was lost (a 2G link cut it), so the phone asks again
    /// with the same token within [`REFRESH_GRACE_SECS`] while the token given in its place has
    /// not been used. Then that lost token is spent and a new one issued: retrying a refresh is
    /// idempotent for the phone, at most one live token per family exists at any time, and if
    /// the "lost" token shows up after all, the family is revoked as for any reuse.
    pub fn use_refresh(&self, token: &str) -> Result<Result<Rotation, RefreshError>, DbError> {
        // One write transaction: two replicas given the same token at once rotate it once.
        let tx = self.db.kv().begin_write()?;
        let hash = token_hash(token);
        let Some(mut rec) = tx.refresh(&hash)? else { return Ok(Err(RefreshError::Unknown)) };
        if tx.family_ended(&rec.family)? {
            return Ok(Err(RefreshError::Reused));
        }
        let now = now_secs();
        let mut b = Batch::default();
        let mut w = self.db.stage(&mut b);
        if rec.used {
            let lost = match &rec.successor {
                Some(h) if now - rec.used_at <= REFRESH_GRACE_SECS => tx.refresh(h)?.is_some_and(|s| !s.used),
                _ => false,
            };
            if !lost {
                w.end_family(&rec.family);
                tx.commit(b)?;
                return Ok(Err(RefreshError::Reused));
            }
            // The lost token is spent, not forgotten: should it turn up after all (it was not
            // lost, so the retry came from someone else), it revokes the family as reuse does.
            if let Some(h) = &rec.successor {
                if let Some(mut lost) = tx.refresh(h)? {
                    lost.used = true;
                    lost.used_at = now;
                    w.put_refresh(h, &lost);
                }
            }
        }
        if rec.expires_at < now {
            return Ok(Err(RefreshError::Expired));
        }
        let next = random_token();
        let next_rec = RefreshRecord {
            username: rec.username.clone(),
            device_id: rec.device_id.clone(),
            family: rec.family.clone(),
            expires_at: now + REFRESH_TTL_SECS,
            used: false,
            epoch: rec.epoch,
            used_at: 0,
            successor: None,
        };
        w.put_refresh(&token_hash(&next), &next_rec);
        rec.used = true;
        rec.used_at = now;
        rec.successor = Some(token_hash(&next));
        w.put_refresh(&hash, &rec);
        tx.commit(b)?;
        Ok(Ok(Rotation { username: rec.username, device_id: rec.device_id, family: rec.family, epoch: rec.epoch, token: next }))
    }

    /// The tokens of a refresh family that may still be exchanged (never more than one).
    pub fn live_refresh_tokens(&self, family: &str) -> Result<usize, DbError> {
        Ok(self.db.kv().all_refresh_tokens()?.iter().filter(|rec| rec.family == family && !rec.used).count())
    }

    /// Revokes the family of a refresh token (logout).
    pub fn revoke_refresh_family_of(&self, token: &str) -> Result<(), DbError> {
        if let Some(rec) = self.db.kv().refresh(&token_hash(token))? {
            let mut b = Batch::default();
            self.db.stage(&mut b).end_family(&rec.family);
            self.db.commit(b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemKv;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$v=19$m=49152,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
        assert!(check_password_policy("short").is_err());
    }

    fn principal() -> Principal {
        Principal { username: "u".into(), role: Role::CommuneOfficer, org_unit: "01234".into(), device_id: "d1".into() }
    }

    #[test]
    fn tokens_verify_and_forgeries_fail() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let keys = Keys::load(&db).unwrap();
        let t = keys.issue_access(&principal(), 0, None);
        assert_eq!(keys.verify_access(&t).unwrap().sub, "u");
        // Same key after reload from the store.
        assert!(Keys::load(&db).unwrap().verify_access(&t).is_ok());
        // Another server's key: refused.
        let other = Keys::load(&Db::open(Box::new(MemKv::default())).unwrap()).unwrap();
        assert_eq!(other.verify_access(&t).unwrap_err(), TokenError::Invalid);
        // Tampered payload.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        claims["role"] = "admin".into();
        parts[1] = b64.encode(claims.to_string());
        assert_eq!(keys.verify_access(&parts.join(".")).unwrap_err(), TokenError::Invalid);
        // alg: none
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert_eq!(keys.verify_access(&none).unwrap_err(), TokenError::Invalid);
        // HS256 signed with the public key bytes (algorithm confusion).
        let hs = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"anything"),
        )
        .unwrap();
        assert_eq!(keys.verify_access(&hs).unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn a_remembered_token_still_expires_and_the_memory_is_bounded() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let keys = Keys::load(&db).unwrap();
        let t = keys.issue_access(&principal(), 0, None);
        assert_eq!(keys.verify_access(&t).unwrap().sub, "u");
        assert_eq!(keys.verified.lock().len(), 1);
        // Remembered: the second check reads the remembered claims, expiry included.
        let digest: [u8; 32] = Sha256::digest(t.as_bytes()).into();
        keys.verified.lock().get_mut(&digest).unwrap().exp = now_secs() - LEEWAY_SECS - 1;
        assert_eq!(keys.verify_access(&t).unwrap_err(), TokenError::Expired);
        // A token changed by one character is another token: checked, and refused.
        let mut forged = t.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.verify_access(&String::from_utf8(forged).unwrap()).unwrap_err(), TokenError::Invalid);
        assert_eq!(keys.verified.lock().len(), 1, "a refused token is not remembered");
        // Full: the next verified token starts the memory again.
        let claims = keys.verify_access(&keys.issue_access(&principal(), 1, None)).unwrap();
        let mut filler = keys.verified.lock().clone();
        for n in 0..VERIFIED_TOKENS as u32 {
            filler.insert(Sha256::digest(n.to_le_bytes()).into(), claims.clone());
        }
        *keys.verified.lock() = filler;
        assert!(keys.verified.lock().len() >= VERIFIED_TOKENS);
        keys.verify_access(&keys.issue_access(&principal(), 2, None)).unwrap();
        assert_eq!(keys.verified.lock().len(), 1);
    }

    #[test]
    fn expired_and_wrong_audience_tokens_fail() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let keys = Keys::load(&db).unwrap();
        let now = now_secs();
        let mk = |aud: &str, exp: i64| {
            let c = Claims { sub: "u".into(), role: Role::Admin, org: "04".into(), dev: "d".into(), ep: 0, iss: ISSUER.into(), aud: aud.into(), iat: now, exp, fam: String::new() };
            jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::EdDSA), &c, &keys.encoding).unwrap()
        };
        assert_eq!(keys.verify_access(&mk(AUDIENCE, now - 120)).unwrap_err(), TokenError::Expired);
        assert_eq!(keys.verify_access(&mk("other-app", now + 600)).unwrap_err(), TokenError::Invalid);
        assert!(keys.verify_access(&mk(AUDIENCE, now + 600)).is_ok());
    }

    #[test]
    fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let (t1, _) = db.refresh_tokens().issue_refresh("u", "d1", 0).unwrap();
        let r1 = db.refresh_tokens().use_refresh(&t1).unwrap().unwrap();
        assert_eq!((r1.username.as_str(), r1.device_id.as_str()), ("u", "d1"));
        let r2 = db.refresh_tokens().use_refresh(&r1.token).unwrap().unwrap();
        assert_eq!(r2.family, r1.family);
        // t1 again once its successor was used: theft detected, the family is revoked.
        assert!(matches!(db.refresh_tokens().use_refresh(&t1).unwrap(), Err(RefreshError::Reused)));
        assert!(matches!(db.refresh_tokens().use_refresh(&r2.token).unwrap(), Err(RefreshError::Reused)));
        assert!(matches!(db.refresh_tokens().use_refresh("garbage").unwrap(), Err(RefreshError::Unknown)));
    }

    #[test]
    fn a_refresh_whose_answer_was_lost_may_be_retried_once_its_successor_is_unused() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let (t1, _) = db.refresh_tokens().issue_refresh("u", "d1", 0).unwrap();
        let lost = db.refresh_tokens().use_refresh(&t1).unwrap().unwrap();
        let retried = db.refresh_tokens().use_refresh(&t1).unwrap().unwrap();
        assert_eq!(retried.family, lost.family);
        assert_ne!(retried.token, lost.token);
        // The retried answer's token works; the lost one, turning up, ends the family.
        let next = db.refresh_tokens().use_refresh(&retried.token).unwrap().unwrap();
        assert!(matches!(db.refresh_tokens().use_refresh(&lost.token).unwrap(), Err(RefreshError::Reused)));
        assert!(matches!(db.refresh_tokens().use_refresh(&next.token).unwrap(), Err(RefreshError::Reused)));
    }

}
