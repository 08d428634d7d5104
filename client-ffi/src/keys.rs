//! The store key comes from the app: [`KeyProvider`] is implemented in Kotlin or Swift, so the
//! key can live in Android Keystore (a key wrapped by a Keystore key, or derived from one) or
//! in the iOS Keychain. The store calls it when it is made, opened and wiped.

use std::path::Path;
use std::sync::Arc;

use client_sdk::StoreKey;

use crate::error::GesyncError;

/// Where a store's 32-byte key comes from, implemented by the app. `store_dir` names the store
/// (an app with one store per officer keeps one key per directory).
#[uniffi::export(with_foreign)]
pub trait KeyProvider: Send + Sync {
    /// Makes a new random key for a new store, keeps it, and returns it (32 bytes).
    fn create_key(&self, store_dir: String) -> Result<Vec<u8>, GesyncError>;
    /// The key kept for this store.
    fn open_key(&self, store_dir: String) -> Result<Vec<u8>, GesyncError>;
    /// Forgets the key: the store is being wiped (a revoked device, a disabled account, or a
    /// logout that leaves nothing). Called before the files are removed, so whatever a wipe cut
    /// short leaves behind is unreadable.
    fn forget_key(&self, store_dir: String) -> Result<(), GesyncError>;
}

/// The app's provider behind the SDK's [`client_sdk::KeyProvider`].
pub(crate) struct AppKeys(pub Arc<dyn KeyProvider>);

fn key(bytes: Vec<u8>) -> client_sdk::Result<StoreKey> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| client_sdk::Error::Config(format!("the app's key provider gave a key of {} bytes, not 32", b.len())))?;
    Ok(StoreKey::from_bytes(bytes))
}

fn failed(e: GesyncError) -> client_sdk::Error {
    client_sdk::Error::Config(format!("the app's key provider failed: {e}"))
}

fn name(dir: &Path) -> String {
    dir.to_string_lossy().into_owned()
}

impl client_sdk::KeyProvider for AppKeys {
    fn mode(&self) -> &'static str {
        "app"
    }
    fn create_key(&self, dir: &Path) -> client_sdk::Result<StoreKey> {
        key(self.0.create_key(name(dir)).map_err(failed)?)
    }
    fn open_key(&self, dir: &Path) -> client_sdk::Result<StoreKey> {
        key(self.0.open_key(name(dir)).map_err(failed)?)
    }
    fn forget_key(&self, dir: &Path) -> client_sdk::Result<()> {
        self.0.forget_key(name(dir)).map_err(failed)
    }
}
