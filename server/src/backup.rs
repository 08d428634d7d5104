//! Checked backups: every key-value entry of the store, length-prefixed, followed by a SHA-256 of
//! everything before it. `restore` verifies the checksum before writing anything, and only into
//! an empty directory, so a damaged backup never becomes a half-restored store.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::store::{Batch, Entry, Kv, PgKv, SledKv, StoreError};

const MAGIC: &[u8] = b"GESYNC-BACKUP-1\n";
const END: u32 = u32::MAX;

/// Writes a backup of `db` to `out` (via a temporary file, renamed when complete).
///
/// The backup is one consistent point of the store: it is read in one consistent read
/// ([`Kv::begin_read`]), so every record, its feed entry, the feed sequence number and the
/// figures are copied as of the same moment (on the embedded store, pushes wait while it runs;
/// pulls continue). Everything acknowledged before the backup began is in it.
pub fn write_backup(db: &Db, out: &Path) -> Result<u64, String> {
    let cut = db.kv().begin_read().map_err(|e| e.to_string())?;
    let (file, tmp) = new_private_beside(out)?;
    let mut w = BufWriter::new(file);
    let mut hash = Sha256::new();
    let mut n = 0u64;
    {
        let mut put = |w: &mut BufWriter<std::fs::File>, bytes: &[u8]| -> Result<(), StoreError> {
            hash.update(bytes);
            w.write_all(bytes).map_err(|e| StoreError::Io(e.to_string()))
        };
        put(&mut w, MAGIC).map_err(|e| e.to_string())?;
        cut.for_each(&mut |k, v| {
            put(&mut w, &(k.len() as u32).to_be_bytes())?;
            put(&mut w, k)?;
            put(&mut w, &(v.len() as u32).to_be_bytes())?;
            put(&mut w, v)?;
            n += 1;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        put(&mut w, &END.to_be_bytes()).map_err(|e| e.to_string())?;
    }
    w.write_all(&hash.finalize()).map_err(|e| e.to_string())?;
    let file = w.into_inner().map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, out).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(n)
}

/// A new file beside `target`, readable by its owner only (a backup holds everything the store
/// does), under a random name, created with `O_CREAT | O_EXCL`: a file or a symbolic link
/// planted in a shared directory is never written through. The caller renames it onto
/// `target` once it is complete (a rename replaces a link planted there, never its target).
fn new_private_beside(target: &Path) -> Result<(std::fs::File, std::path::PathBuf), String> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "backup".into());
    let tmp = target.with_file_name(format!(".{name}.{:016x}.partial", rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    Ok((file, tmp))
}

/// Parses and verifies a backup file, returning its entries.
pub fn read_backup(from: &Path) -> Result<Vec<Entry>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(from).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    parse_backup(&bytes).ok_or_else(|| format!("{} is not a complete gesync backup (damaged or truncated)", from.display()))
}

/// The entries of a backup's bytes, checked against its checksum (`None`: damaged or truncated).
fn parse_backup(bytes: &[u8]) -> Option<Vec<Entry>> {
    if bytes.len() < MAGIC.len() + 4 + 32 || !bytes.starts_with(MAGIC) {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut pos = MAGIC.len();
    let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
        let b = body.get(*pos..pos.checked_add(n)?)?;
        *pos += n;
        Some(b)
    };
    let read_u32 = |pos: &mut usize| take(pos, 4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    let mut out = Vec::new();
    loop {
        let klen = read_u32(&mut pos)?;
        if klen == END {
            break;
        }
        let k = take(&mut pos, klen as usize)?.to_vec();
        let vlen = read_u32(&mut pos)? as usize;
        let v = take(&mut pos, vlen)?.to_vec();
        out.push((k, v));
    }
    (pos == body.len()).then_some(out)
}

/// The first bytes of a backup encrypted with a passphrase (see [`encrypt_file`]).
const SEALED_MAGIC: &[u8; 8] = b"GSBSEAL1";
/// Encrypts the backup file `plain` into `out` with a key derived from `passphrase` (argon2id,
/// random salt) and XChaCha20-Poly1305, mode 0600; the plain file is removed.
pub fn encrypt_file(plain: &Path, out: &Path, passphrase: &str) -> Result<(), String> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let bytes = std::fs::read(plain).map_err(|e| format!("cannot read {}: {e}", plain.display()))?;
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(&derive(passphrase, &salt)?.into());
    let sealed = cipher.encrypt(&nonce.into(), bytes.as_slice()).map_err(|_| "cannot encrypt the backup".to_string())?;
    let mut file = [SEALED_MAGIC.as_slice(), &salt, &nonce].concat();
    file.extend(sealed);
    write_private(out, &file)?;
    std::fs::remove_file(plain).map_err(|e| format!("cannot remove {}: {e}", plain.display()))
}

fn derive(passphrase: &str, salt: &[u8]) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    argon2::Argon2::default().hash_password_into(passphrase.as_bytes(), salt, &mut key).map_err(|e| format!("cannot derive the backup key: {e}"))?;
    Ok(key)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let (mut f, tmp) = new_private_beside(path)?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether `from` is a backup encrypted with a passphrase.
pub fn is_sealed(from: &Path) -> bool {
    let mut head = [0u8; 8];
    std::fs::File::open(from).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == SEALED_MAGIC
}

/// Restores a verified backup into `storage`: an empty directory, or a database that holds no
/// data yet. The file is the same whichever store wrote it, so this is also how a deployment
/// moves from the embedded store to PostgreSQL. An encrypted backup needs its passphrase. The
/// token-signing key is not restored, nor the store's epoch: the restored store starts a new
/// one ([`crate::store_rows::restored`]).
pub fn restore(from: &Path, storage: &crate::store::Storage, passphrase: Option<&str>) -> Result<u64, String> {
    let entries = if is_sealed(from) {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let passphrase = passphrase.ok_or_else(|| format!("{} is encrypted: give its passphrase with --passphrase-stdin", from.display()))?;
        let bytes = std::fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        let bad = || format!("{} is not a complete encrypted gesync backup", from.display());
        let rest = bytes.get(SEALED_MAGIC.len()..).ok_or_else(bad)?;
        if rest.len() < 40 {
            return Err(bad());
        }
        let (salt, rest) = rest.split_at(16);
        let (nonce, sealed) = rest.split_at(24);
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&derive(passphrase, salt)?.into());
        let plain = cipher
            .decrypt(chacha20poly1305::XNonce::from_slice(nonce), sealed)
            .map_err(|_| format!("wrong passphrase, or {} is damaged", from.display()))?;
        parse_backup(&plain).ok_or_else(bad)?
    } else {
        read_backup(from)?
    };
    let entries: Vec<_> = entries.into_iter().filter(|(k, _)| crate::store_rows::restored(k)).collect();
    let (kv, place): (Box<dyn Kv>, String) = match storage {
        crate::store::Storage::Embedded(data_dir) => {
            if data_dir.exists() && std::fs::read_dir(data_dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
                return Err(format!("{} is not empty: restore into a new, empty directory", data_dir.display()));
            }
            (Box::new(SledKv::open(data_dir).map_err(|e| e.to_string())?), data_dir.display().to_string())
        }
        crate::store::Storage::Postgres(config) => {
            let kv = PgKv::open(config).map_err(|e| e.to_string())?;
            if !kv.is_empty().map_err(|e| e.to_string())? {
                return Err(format!("the database ({}) already holds data: restore into a new, empty database", kv.describe()));
            }
            let place = kv.describe();
            (Box::new(kv), place)
        }
    };
    // Reporting rows go only where tables for people are kept (a backup of PostgreSQL restored
    // into the embedded store leaves them out; the other way, they are written below).
    let entries: Vec<_> = if kv.keeps_report_rows() { entries } else { entries.into_iter().filter(|(k, _)| !crate::record_rows::is_report_key(k)).collect() };
    let n = entries.len() as u64;
    for chunk in entries.chunks(10_000) {
        let mut b = Batch::default();
        for (k, v) in chunk {
            b.put(k.clone(), v.clone());
        }
        kv.write(b).map_err(|e| e.to_string())?;
    }
    // Prove the result opens as a store before declaring success. On the same handle: sled
    // releases its file lock a moment after the last handle drops, so a reopen could race it.
    let db = Db::open(kv).map_err(|e| format!("the restored store in {place} does not open ({e})"))?;
    // A new epoch, with the relay window open: phones push back what the backup lacks.
    db.set_epoch(true).map_err(|e| format!("the restored store in {place}: {e}"))?;
    // A backup from before records kept reporting rows: they are written now, from the documents.
    if db.records().report_rows_missing().map_err(|e| format!("the restored store in {place}: {e}"))? {
        db.rebuild_figures().map_err(|e| format!("the restored store in {place}: {e}"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use crate::store::SledKv;

    /// A backup file's bytes holding `entries`, as `write_backup` lays them out.
    fn backup_bytes(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        use sha2::Digest;
        let mut body = super::MAGIC.to_vec();
        for (k, v) in entries {
            for part in [k, v] {
                body.extend((part.len() as u32).to_be_bytes());
                body.extend(*part);
            }
        }
        body.extend(super::END.to_be_bytes());
        let sum = sha2::Sha256::digest(&body);
        [body, sum.to_vec()].concat()
    }

    #[test]
    fn a_backup_reads_back_whole_and_any_damage_or_cut_is_refused() {
        let entries: [(&[u8], &[u8]); 3] = [(b"one", b"7"), (b"two", &[0u8; 300]), (b"", b"")];
        let good = backup_bytes(&entries);
        let read = super::parse_backup(&good).expect("a whole backup reads");
        assert_eq!(read, entries.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<Vec<_>>());
        for cut in 0..good.len() {
            assert_eq!(super::parse_backup(&good[..cut]), None, "cut at {cut}");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            assert_eq!(super::parse_backup(&bad), None, "byte {at} flipped");
        }
        // A length past the end, with a checksum that matches: refused, no panic.
        let mut body = super::MAGIC.to_vec();
        body.extend(u32::MAX.wrapping_sub(1).to_be_bytes());
        let forged = [body.clone(), sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), &body)).to_vec()].concat();
        assert_eq!(super::parse_backup(&forged), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_store_directory_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kv = SledKv::open(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        // A backup of it likewise.
        let db = crate::db::Db::open(Box::new(kv)).unwrap();
        let out = dir.path().join("backup.gsb");
        super::write_backup(&db, &out).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// Issue "Security, second review" #12: names planted in a shared directory (the old
    /// temporary name, the backup's own name) as symbolic links to another file are never
    /// written through.
    #[cfg(unix)]
    #[test]
    fn a_backup_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open(&dir.path().join("data")).unwrap();
        let db = crate::db::Db::open(Box::new(kv)).unwrap();
        let victim = dir.path().join("someone-elses-file");
        std::fs::write(&victim, b"theirs").unwrap();
        let out = dir.path().join("backup.gsb");
        std::os::unix::fs::symlink(&victim, out.with_extension("partial")).unwrap();
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        let n = super::write_backup(&db, &out).unwrap();
        assert!(n > 0);
        assert_eq!(std::fs::read(&victim).unwrap(), b"theirs", "nothing went through the links");
        assert!(!std::fs::symlink_metadata(&out).unwrap().file_type().is_symlink(), "the backup replaced the link");
        assert!(super::read_backup(&out).is_ok());
        // An encrypted one likewise.
        let sealed = dir.path().join("sealed.gsb");
        std::os::unix::fs::symlink(&victim, &sealed).unwrap();
        super::encrypt_file(&out, &sealed, "a long enough passphrase").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"theirs");
        assert!(super::is_sealed(&sealed));
    }
}
