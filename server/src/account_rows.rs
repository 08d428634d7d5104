//! The typed storage seam of accounts and their devices, as rows, with no key in sight.
//!
//! [`AccountRows`] is one consistent read of them; [`AccountWrites`] the rows a write
//! transaction stages. The `accounts` repository above decides what they hold (the device cap,
//! a login, a revoke); `org_units` and `check` read them through this seam. The keyspace
//! implements both (below: its keys); so does `record_rows::MemRows` in tests, in plain maps,
//! and the seam's conformance suite runs on both.

use crate::db::{from_json, key, to_json, DbError};
use crate::model::{Device, User};
use crate::record_rows::KeyspaceWrites;
use crate::store::{prefix_end, KvRead};

/// One consistent read of accounts and devices.
pub(crate) trait AccountRows {
    fn user(&self, username: &str) -> Result<Option<User>, DbError>;
    /// Every account, by username.
    fn users(&self) -> Result<Vec<User>, DbError>;
    fn device(&self, username: &str, device_id: &str) -> Result<Option<Device>, DbError>;
    /// An account's devices, by device id.
    fn devices_of(&self, username: &str) -> Result<Vec<Device>, DbError>;
    /// Every account's devices, by username then device id.
    fn all_devices(&self) -> Result<Vec<Device>, DbError>;
}

/// Accounts' and devices' rows a write transaction stages.
pub(crate) trait AccountWrites {
    fn put_user(&mut self, user: &User);
    fn put_device(&mut self, device: &Device);
}

// ---------------------------------------------------------------------------------------------
// The keyspace. Keys: `u/{username}` → [`User`] (JSON; the trigger reads it into
// `gesync.accounts` without its password hash), `d/{username}/{device_id}` → [`Device`]
// (JSON, into `gesync.devices`).

const USERS: &[u8] = b"u/";
const DEVICES: &[u8] = b"d/";

fn user_key(username: &str) -> Vec<u8> {
    key("u/", &[username.as_bytes()])
}

fn device_key(username: &str, device_id: &str) -> Vec<u8> {
    key("d/", &[username.as_bytes(), device_id.as_bytes()])
}

fn rows_under<T: serde::de::DeserializeOwned>(r: &(impl KvRead + ?Sized), prefix: &[u8], what: &str) -> Result<Vec<T>, DbError> {
    r.range(prefix, &prefix_end(prefix), usize::MAX)?.into_iter().map(|(_, v)| from_json(what, &v)).collect()
}

fn row<T: serde::de::DeserializeOwned>(r: &(impl KvRead + ?Sized), k: &[u8], what: &str) -> Result<Option<T>, DbError> {
    r.get(k)?.map(|v| from_json(what, &v)).transpose()
}

impl<R: KvRead + ?Sized> AccountRows for R {
    fn user(&self, username: &str) -> Result<Option<User>, DbError> {
        row(self, &user_key(username), "user")
    }

    fn users(&self) -> Result<Vec<User>, DbError> {
        rows_under(self, USERS, "user")
    }

    fn device(&self, username: &str, device_id: &str) -> Result<Option<Device>, DbError> {
        row(self, &device_key(username, device_id), "device")
    }

    fn devices_of(&self, username: &str) -> Result<Vec<Device>, DbError> {
        rows_under(self, &key("d/", &[username.as_bytes(), b""]), "device")
    }

    fn all_devices(&self) -> Result<Vec<Device>, DbError> {
        rows_under(self, DEVICES, "device")
    }
}

impl AccountWrites for KeyspaceWrites<'_> {
    fn put_user(&mut self, user: &User) {
        self.batch.put(user_key(&user.username), to_json(user));
    }

    fn put_device(&mut self, device: &Device) {
        self.batch.put(device_key(&device.username, &device.device_id), to_json(device));
    }
}

#[cfg(test)]
impl AccountRows for crate::record_rows::MemRows {
    fn user(&self, username: &str) -> Result<Option<User>, DbError> {
        Ok(self.users.get(username).cloned())
    }
    fn users(&self) -> Result<Vec<User>, DbError> {
        Ok(self.users.values().cloned().collect())
    }
    fn device(&self, username: &str, device_id: &str) -> Result<Option<Device>, DbError> {
        Ok(self.devices.get(&(username.to_string(), device_id.to_string())).cloned())
    }
    fn devices_of(&self, username: &str) -> Result<Vec<Device>, DbError> {
        Ok(self.devices.iter().filter(|((u, _), _)| u == username).map(|(_, d)| d.clone()).collect())
    }
    fn all_devices(&self) -> Result<Vec<Device>, DbError> {
        Ok(self.devices.values().cloned().collect())
    }
}

#[cfg(test)]
impl AccountWrites for crate::record_rows::MemRows {
    fn put_user(&mut self, user: &User) {
        self.users.insert(user.username.clone(), user.clone());
    }
    fn put_device(&mut self, device: &Device) {
        self.devices.insert((device.username.clone(), device.device_id.clone()), device.clone());
    }
}

/// Accounts' part of the seams' conformance suite (see `record_rows::conform`): run on
/// `MemRows` and on the keyspace over every store.
#[cfg(test)]
pub(crate) mod conform {
    use super::*;
    use crate::model::Role;
    use crate::record_rows::conform::RowStore;

    fn user(name: &str, role: Role) -> User {
        User { username: name.into(), password_hash: "$argon2id$not-a-real-hash".into(), role, org_unit: "04701".into(), disabled: false, session_epoch: 0 }
    }

    fn device(user: &str, id: &str, seen: i64) -> Device {
        Device { username: user.into(), device_id: id.into(), first_seen: seen, last_seen: seen, revoked: false }
    }

    fn names(users: &[User]) -> Vec<&str> {
        users.iter().map(|u| u.username.as_str()).collect()
    }

    fn ids(devices: &[Device]) -> Vec<(&str, &str)> {
        devices.iter().map(|d| (d.username.as_str(), d.device_id.as_str())).collect()
    }

    pub(crate) fn suite<S: RowStore>(store: &mut S) {
        {
            let cut = store.cut();
            assert!(cut.user("officer").unwrap().is_none() && cut.users().unwrap().is_empty() && cut.all_devices().unwrap().is_empty(), "an empty store");
        }
        // `officer` and `officer2`: one name a prefix of the other, whose devices must not mix.
        store.commit(&mut |w| {
            w.put_user(&user("officer2", Role::CommuneOfficer));
            w.put_user(&user("officer", Role::CommuneOfficer));
            w.put_user(&user("admin", Role::Admin));
            w.put_device(&device("officer", "phone-b", 2));
            w.put_device(&device("officer", "phone-a", 1));
            w.put_device(&device("officer2", "phone-a", 3));
        });
        {
            let cut = store.cut();
            assert_eq!(cut.user("officer").unwrap().map(|u| u.role), Some(Role::CommuneOfficer));
            assert!(cut.user("officer3").unwrap().is_none());
            assert_eq!(names(&cut.users().unwrap()), ["admin", "officer", "officer2"], "by username");
            assert_eq!(ids(&cut.devices_of("officer").unwrap()), [("officer", "phone-a"), ("officer", "phone-b")], "an account's own devices, by id");
            assert_eq!(ids(&cut.all_devices().unwrap()), [("officer", "phone-a"), ("officer", "phone-b"), ("officer2", "phone-a")]);
            assert_eq!(cut.device("officer2", "phone-a").unwrap().map(|d| d.last_seen), Some(3));
            assert!(cut.device("officer2", "phone-b").unwrap().is_none());
        }
        store.commit(&mut |w| {
            w.put_user(&User { disabled: true, ..user("officer", Role::CommuneOfficer) });
            w.put_device(&Device { revoked: true, ..device("officer", "phone-a", 1) });
        });
        let cut = store.cut();
        assert!(cut.user("officer").unwrap().unwrap().disabled, "a user rewritten");
        assert!(cut.device("officer", "phone-a").unwrap().unwrap().revoked, "a device rewritten");
        assert_eq!(cut.users().unwrap().len(), 3);
    }
}
