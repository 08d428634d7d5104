//! Accounts and their devices, read and written through the typed storage seam of
//! `account_rows.rs`, which alone knows their keys.

use crate::account_rows::{AccountRows, AccountWrites};
use crate::db::{AuditEvent, Db, DbError};
use crate::model::{Device, User};
use crate::store::{Batch, KvRead};

/// Most devices in use (not revoked) one account may have: a few phones and browsers. Every
/// device may hold an unfinished upload, so this also bounds what one account can make the
/// server keep.
pub const MAX_DEVICES_PER_ACCOUNT: usize = 6;

/// Accounts and their devices: a repository of [`Db`] (`Db::accounts`), over the typed storage seams.
#[derive(Clone, Copy)]
pub struct Accounts<'a> {
    pub(crate) db: &'a Db,
}

impl Accounts<'_> {
    pub fn get_user(&self, username: &str) -> Result<Option<User>, DbError> {
        self.db.kv().user(username)
    }

    pub fn list_users(&self) -> Result<Vec<User>, DbError> {
        self.db.kv().users()
    }

    /// Writes a user; `create` refuses an existing username.
    pub fn put_user(&self, user: &User, create: bool, audit: Option<AuditEvent>) -> Result<(), DbError> {
        // One transaction, so that two admins creating the same username cannot both succeed.
        let tx = self.db.kv().begin_write()?;
        if create && tx.user(&user.username)?.is_some() {
            return Err(DbError::Conflict(format!("user `{}` already exists", user.username)));
        }
        let mut batch = Batch::default();
        let mut w = self.db.stage(&mut batch);
        w.put_user(user);
        self.db.audit_log().audit_into(&*tx, &mut w, audit)?;
        Ok(tx.commit(batch)?)
    }

    /// Changes a user as stored now, in one write transaction (`None`: no such user). A
    /// disabled account's unfinished uploads go in the same write.
    pub fn update_user<E: From<DbError>>(&self, username: &str, audit: Option<AuditEvent>, change: impl FnOnce(&mut User) -> Result<(), E>) -> Result<Option<User>, E> {
        let tx = self.db.kv().begin_write().map_err(DbError::from)?;
        let Some(mut user) = tx.user(username)? else { return Ok(None) };
        change(&mut user)?;
        let mut batch = Batch::default();
        self.db.stage(&mut batch).put_user(&user);
        if user.disabled {
            self.db.uploads().drop_uploads_into(&*tx, &mut batch, username, None)?;
        }
        self.db.audit_log().audit_into(&*tx, &mut self.db.stage(&mut batch), audit)?;
        tx.commit(batch).map_err(DbError::from)?;
        Ok(Some(user))
    }

    pub fn get_device(&self, username: &str, device_id: &str) -> Result<Option<Device>, DbError> {
        self.db.kv().device(username, device_id)
    }

    pub fn list_devices(&self, username: &str) -> Result<Vec<Device>, DbError> {
        self.db.kv().devices_of(username)
    }

    /// Records a login from `device_id`, in one write transaction (so that a revoke racing
    /// the login always wins): a known device's `last_seen` moves; a revoked one is refused
    /// (`Ok(false)`); a new one is registered. Past [`MAX_DEVICES_PER_ACCOUNT`] devices in use,
    /// the account's least recently seen session the server itself named (a browser of the web
    /// pages, an API login that named no device: [`crate::model::server_made_device`]) is
    /// retired to make room; such a session holds no unsent work. A phone is never retired
    /// this way (revoking it wipes it): with only phones in use, the login is refused
    /// ([`DbError::TooManyDevices`]) until an admin removes an old one.
    pub fn login_device(&self, username: &str, device_id: &str, now: i64, audit: Option<AuditEvent>) -> Result<bool, DbError> {
        let tx = self.db.kv().begin_write()?;
        let mut batch = Batch::default();
        let device = match tx.device(username, device_id)? {
            Some(d) if d.revoked => return Ok(false),
            Some(d) => Device { last_seen: now, ..d },
            None => {
                let live: Vec<Device> = tx.devices_of(username)?.into_iter().filter(|d| !d.revoked).collect();
                if live.len() >= MAX_DEVICES_PER_ACCOUNT {
                    let oldest = live.into_iter().filter(|d| crate::model::server_made_device(&d.device_id)).min_by_key(|d| d.last_seen);
                    let Some(oldest) = oldest else {
                        return Err(DbError::TooManyDevices(MAX_DEVICES_PER_ACCOUNT));
                    };
                    self.revoke_into(&*tx, &mut batch, oldest)?;
                }
                Device { username: username.to_string(), device_id: device_id.to_string(), first_seen: now, last_seen: now, revoked: false }
            }
        };
        let mut w = self.db.stage(&mut batch);
        w.put_device(&device);
        self.db.audit_log().audit_into(&*tx, &mut w, audit)?;
        tx.commit(batch)?;
        Ok(true)
    }

    /// Revokes a device, in one write transaction, and drops its unfinished upload; `Ok(false)`
    /// when there is no such device.
    pub fn revoke_device(&self, username: &str, device_id: &str, audit: Option<AuditEvent>) -> Result<bool, DbError> {
        let tx = self.db.kv().begin_write()?;
        let Some(device) = tx.device(username, device_id)? else { return Ok(false) };
        let mut batch = Batch::default();
        self.revoke_into(&*tx, &mut batch, device)?;
        self.db.audit_log().audit_into(&*tx, &mut self.db.stage(&mut batch), audit)?;
        tx.commit(batch)?;
        Ok(true)
    }

    /// Puts into `batch` a device marked revoked and the removal of its unfinished upload, as
    /// read in the write transaction `r`.
    fn revoke_into(&self, r: &dyn KvRead, batch: &mut Batch, device: Device) -> Result<(), DbError> {
        self.db.uploads().drop_uploads_into(r, batch, &device.username, Some(&device.device_id))?;
        self.db.stage(batch).put_device(&Device { revoked: true, ..device });
        Ok(())
    }

    pub fn put_device(&self, device: &Device, audit: Option<AuditEvent>) -> Result<(), DbError> {
        let mut batch = Batch::default();
        self.db.stage(&mut batch).put_device(device);
        self.db.audit_log().commit_audited(batch, audit)
    }
}
