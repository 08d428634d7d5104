//! # gesync-ffi
//!
//! The phone core for native apps (an Android app in Kotlin, an iOS app in Swift) through
//! UniFFI: the same encrypted store (`client-sdk`'s `Store`), records (`sync-protocol`) and
//! sync session (`client-core`) as `gesync-field` and the web app, so a native app
//! re-implements none of the protocol. `scripts/build-kotlin.sh` generates the Kotlin and
//! Swift bindings from the built library (library mode, the `uniffi-bindgen` binary of this
//! crate); `docs/mobile.md` shows an app's use.
//!
//! ## Map
//! - [`Phone`] (`phone.rs`): open a store with the app's [`KeyProvider`] (`keys.rs`: the key
//!   lives in Android Keystore or the iOS Keychain), create / set / append / delete / show /
//!   list records with their [`SyncStatus`] and [`Conflict`]s, login and sync with the
//!   library's own HTTPS client (`login`, `sync`: client-sdk's `Client` on tokio + reqwest).
//! - `session.rs`: the sync an app drives with its own HTTP stack and scheduler:
//!   `login_request`/`login_answer`, `begin_sync`, `next_step` ([`SyncStep`]: send, wait,
//!   done), `answer`, `failed`, `progress`; `wipe`.
//! - [`GesyncError`] (`error.rs`): one variant per stable code, `code()` to switch on.
//! - `types.rs`: the records that cross (records, HTTP requests and answers, progress).
//!
//! Architecture Invariant: no sync or record logic lives here. Requests are built and
//! answers applied by `client_core::Session`; what a refusal means is `client_core::Refusal`;
//! login, refresh and wipe bookkeeping is the SDK's `Client`. This crate only translates.
//!
//! (No `#![forbid(unsafe_code)]`: UniFFI's scaffolding is the `extern "C"` functions the
//! bindings call. This crate's own code has no `unsafe`.)

uniffi::setup_scaffolding!();

mod error;
mod keys;
mod phone;
mod session;
mod types;

pub use error::GesyncError;
pub use keys::KeyProvider;
pub use phone::Phone;
pub use types::{
    Conflict, ConflictValue, HttpAnswer, HttpRequest, Record, RecordKind, SyncListener, SyncProgress, SyncReport, SyncStatus,
    SyncStep,
};
