//! Encryption at rest: every store file is `MAGIC ‖ VERSION ‖ nonce(24) ‖ XChaCha20-Poly1305
//! ciphertext`, with a fresh random nonce per write. The associated data binds each ciphertext to
//! its file name, so swapping two record files is detected as damage.
//!
//! The 32-byte key comes from a [`KeyProvider`]: a passphrase stretched with argon2id, or a random
//! key kept in a key file outside the store (the stand-in for a platform keystore).

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GSST";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;

/// The environment variable holding the store passphrase.
pub const SECRET_ENV: &str = "GESYNC_STORE_SECRET";
/// The environment variable naming the directory of key files.
pub const KEY_DIR_ENV: &str = "GESYNC_KEY_DIR";

/// argon2id cost: 46 MiB, one pass, one lane (the OWASP minimum for argon2id).
const ARGON2_M_KIB: u32 = 46 * 1024;
const ARGON2_T: u32 = 1;
const ARGON2_P: u32 = 1;
/// Name of the (cleartext) salt file inside a passphrase-protected store.
pub(crate) const SALT_FILE: &str = "salt";

/// A 256-bit store key. `Debug` never shows it.
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StoreKey(bytes)
    }

    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        StoreKey(k)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<hidden>)")
    }
}

/// Where a store's key comes from. `create_key` runs once, when a store is made in `dir` (the
/// directory exists); `open_key` every time it is opened; `forget_key` when the store is wiped.
pub trait KeyProvider: Send + Sync {
    /// A short name kept in the store's cleartext marker, so that opening a store with the wrong
    /// kind of key gives a useful message.
    fn mode(&self) -> &'static str;
    fn create_key(&self, dir: &Path) -> Result<StoreKey>;
    fn open_key(&self, dir: &Path) -> Result<StoreKey>;
    fn forget_key(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
}

/// The provider chosen by the environment: a passphrase from `GESYNC_STORE_SECRET` when it is set
/// and not empty, otherwise a key file (`$GESYNC_KEY_DIR` or `$HOME/.config/gesync-field/keys`).
pub fn key_provider_from_env() -> Result<Box<dyn KeyProvider>> {
    match std::env::var(SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => Ok(Box::new(Passphrase::new(secret))),
        _ => Ok(Box::new(KeyFile::from_env()?)),
    }
}

/// A passphrase stretched with argon2id; the random salt is kept in the clear in the store.
pub struct Passphrase(String);

impl Passphrase {
    pub fn new(secret: impl Into<String>) -> Self {
        Passphrase(secret.into())
    }

    fn derive(&self, salt: &[u8]) -> Result<StoreKey> {
        let params = argon2::Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32))
            .map_err(|e| Error::Config(format!("argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(self.0.as_bytes(), salt, &mut key)
            .map_err(|e| Error::Config(format!("cannot derive the store key: {e}")))?;
        Ok(StoreKey(key))
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<hidden>)")
    }
}

impl KeyProvider for Passphrase {
    fn mode(&self) -> &'static str {
        "passphrase"
    }

    fn create_key(&self, dir: &Path) -> Result<StoreKey> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        write_atomic(&dir.join(SALT_FILE), &salt)?;
        self.derive(&salt)
    }

    /// Removes the salt, durably, before anything else of the store: without it the passphrase
    /// derives nothing, so a wipe cut short after this step leaves nothing readable.
    fn forget_key(&self, dir: &Path) -> Result<()> {
        remove_durably(&dir.join(SALT_FILE))
    }

    fn open_key(&self, dir: &Path) -> Result<StoreKey> {
        let path = dir.join(SALT_FILE);
        let salt = fs::read(&path).map_err(Error::io("read", &path))?;
        if salt.len() < 8 {
            return Err(Error::Corrupt {
                path,
                detail: "the salt file is too short".into(),
            });
        }
        self.derive(&salt)
    }
}

/// A random key in a file outside the store, named by the SHA-256 of the store's canonical path,
/// readable by the owner only. Wiping the store deletes the key file too.
#[derive(Debug, Clone)]
pub struct KeyFile {
    key_dir: PathBuf,
}

impl KeyFile {
    pub fn new(key_dir: impl Into<PathBuf>) -> Self {
        KeyFile {
            key_dir: key_dir.into(),
        }
    }

    /// `$GESYNC_KEY_DIR`, else `$HOME/.config/gesync-field/keys`.
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os(KEY_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(KeyFile::new(dir));
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => Ok(KeyFile::new(
                Path::new(&home).join(".config/gesync-field/keys"),
            )),
            None => Err(Error::Config(format!(
                "no place for the store key: set {KEY_DIR_ENV} or HOME, or set {SECRET_ENV}"
            ))),
        }
    }

    fn path_for(&self, store_dir: &Path) -> Result<PathBuf> {
        let canonical = store_dir
            .canonicalize()
            .map_err(Error::io("resolve", store_dir))?;
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        Ok(self.key_dir.join(format!("{}.key", hex::encode(digest))))
    }
}

impl KeyProvider for KeyFile {
    fn mode(&self) -> &'static str {
        "keyfile"
    }

    fn create_key(&self, dir: &Path) -> Result<StoreKey> {
        create_private_dir(&self.key_dir)?;
        let key = StoreKey::random();
        write_atomic(&self.path_for(dir)?, &key.0)?;
        Ok(key)
    }

    fn open_key(&self, dir: &Path) -> Result<StoreKey> {
        let path = self.path_for(dir)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Config(format!(
                    "the key of this store is missing (looked for {}): set {KEY_DIR_ENV} to the \
                     key directory, or {SECRET_ENV} if the store was made with a passphrase",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::Corrupt {
            path,
            detail: "the key file is not 32 bytes".into(),
        })?;
        Ok(StoreKey(key))
    }

    fn forget_key(&self, dir: &Path) -> Result<()> {
        remove_if_present(&self.path_for(dir)?)
    }
}

/// A key given by the program (tests, simulators driving many phones, or an app that gets the key
/// from the platform keystore itself).
#[derive(Debug, Clone)]
pub struct FixedKey(pub StoreKey);

impl KeyProvider for FixedKey {
    fn mode(&self) -> &'static str {
        "fixed"
    }
    fn create_key(&self, _dir: &Path) -> Result<StoreKey> {
        Ok(self.0.clone())
    }
    fn open_key(&self, _dir: &Path) -> Result<StoreKey> {
        Ok(self.0.clone())
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(HEADER_LEN + name.len());
    a.extend_from_slice(MAGIC);
    a.push(VERSION);
    a.extend_from_slice(name.as_bytes());
    a
}

/// Encrypts `plain` for the file called `name` (relative to the store).
pub(crate) fn seal(key: &StoreKey, name: &str, plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad(name),
            },
        )
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Decrypts a file written by [`seal`]; a wrong key or any damage gives [`Error::Decrypt`].
pub(crate) fn open(key: &StoreKey, name: &str, file: &[u8]) -> Result<Vec<u8>> {
    if file.len() < HEADER_LEN || &file[..4] != MAGIC || file[4] != VERSION {
        return Err(Error::Decrypt);
    }
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt(
            XNonce::from_slice(&file[5..HEADER_LEN]),
            Payload {
                msg: &file[HEADER_LEN..],
                aad: &aad(name),
            },
        )
        .map_err(|_| Error::Decrypt)
}

/// Creates a directory (and parents) readable by the owner only.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(Error::io("create", dir))
}

/// Writes a file atomically: a temporary file in the same directory, fsync, rename, then fsync of
/// the directory, so a crash leaves either the old or the new content, never a mix. Mode 0600.
/// Removes a file; one that is not there is already removed.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// [`remove_if_present`], then syncs the directory so that the removal survives a crash.
pub(crate) fn remove_durably(path: &Path) -> Result<()> {
    remove_if_present(path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            d.sync_all().map_err(Error::io("sync", dir))?;
        }
    }
    Ok(())
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, true)
}

/// [`write_atomic`], with the fsyncs only when `durable`: the rename keeps it atomic either way.
pub(crate) fn write_atomic_with(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{}-{name}", uuid::Uuid::new_v4().simple()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut f = options.open(&tmp).map_err(Error::io("create", &tmp))?;
        f.write_all(bytes).map_err(Error::io("write", &tmp))?;
        if durable {
            f.sync_all().map_err(Error::io("sync", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(Error::io("replace", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Persist the rename itself. Directories cannot be opened for syncing everywhere; where they
    // cannot, the rename is still atomic.
    if durable {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_a_passphrase_key_removes_the_salt_so_nothing_left_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = Passphrase::new("mật khẩu của điện thoại");
        let key = p.create_key(dir.path()).unwrap();
        let sealed = seal(&key, "records/a", b"victim details");
        p.forget_key(dir.path()).unwrap();
        assert!(!dir.path().join(SALT_FILE).exists());
        // The passphrase alone derives nothing now; a new salt derives another key.
        assert!(p.open_key(dir.path()).is_err());
        let other = p.create_key(dir.path()).unwrap();
        assert!(matches!(open(&other, "records/a", &sealed), Err(Error::Decrypt)));
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let key = StoreKey::random();
        let sealed = seal(&key, "records/a", b"hello");
        assert_eq!(open(&key, "records/a", &sealed).unwrap(), b"hello");
        assert!(matches!(
            open(&key, "records/b", &sealed),
            Err(Error::Decrypt)
        ));
        assert!(matches!(
            open(&StoreKey::random(), "records/a", &sealed),
            Err(Error::Decrypt)
        ));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(open(&key, "records/a", &bad), Err(Error::Decrypt)));
        // Two writes of the same content differ (fresh nonce).
        assert_ne!(seal(&key, "x", b"same"), seal(&key, "x", b"same"));
    }

    #[test]
    fn passphrase_keys_depend_on_secret_and_salt() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Passphrase::new("correct horse")
            .create_key(dir.path())
            .unwrap();
        let again = Passphrase::new("correct horse")
            .open_key(dir.path())
            .unwrap();
        assert_eq!(k1.0, again.0);
        let wrong = Passphrase::new("wrong").open_key(dir.path()).unwrap();
        assert_ne!(k1.0, wrong.0);
    }
}
