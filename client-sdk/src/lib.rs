//! # client-sdk
//!
//! The phone side of gesync: an encrypted local store of records that works with no network,
//! and the sync loop that exchanges Automerge changes with the server. The `gesync-field` binary
//! (`src/main.rs`) is a thin command-line shell over [`Client`].
//!
//! ## Map
//! - [`Store`] (`store.rs`): the directory of encrypted, atomically written files — device state
//!   (device id, Automerge actor, server, tokens, cursor) and one file per record (document plus
//!   sync metadata: heads, the heads the server is known to have, rejection).
//! - [`KeyProvider`] (`crypto.rs`): where the store key comes from — a passphrase
//!   (`GESYNC_STORE_SECRET`, argon2id), a key file outside the store (the default, standing in
//!   for a platform keystore), or a key the program supplies.
//! - [`Client`] (`client.rs`): typed record operations (`create`, `set`, `append`, `delete`,
//!   `show`, `list`, `status`) and `login`; `sync.rs` adds [`Client::sync`] and
//!   [`Client::sync_with`] ([`SyncOptions`]: retries with backoff, page sizes that follow the
//!   measured link, compression), reporting [`SyncProgress`] after every exchange.
//! - [`Transport`] (`transport.rs`): the three server calls, with [`HttpTransport`] (reqwest +
//!   rustls) as the real one; tests use an in-process fake server.
//!
//! ## Invariants
//! - Every change made on this device carries the device's one Automerge actor.
//! - A record is *pending* when its heads differ from the heads the server is known to have,
//!   unless the server rejected exactly these heads.
//! - Nothing sensitive (record contents, tokens, passwords) appears in an error message, a log
//!   line or a `Debug` output; on disk it is encrypted.
//!
//! Architecture Invariant: the SDK knows nothing of the server's storage or handlers; it
//! speaks only the HTTP API of `contract.md` and the `sync-protocol` wire format.
#![forbid(unsafe_code)]

mod client;
mod crypto;
mod error;
mod store;
mod sync;
mod transport;

pub use client::Client;
pub use crypto::{
    key_provider_from_env, FixedKey, KeyFile, KeyProvider, Passphrase, StoreKey, KEY_DIR_ENV,
    SECRET_ENV,
};
pub use error::{Error, Result};
pub use store::{Store, SyncStatus};
pub use sync::{backoff, SyncOptions, SyncProgress, SyncReport, MAX_ROUNDS, PUSH_BUDGET};
pub use sync_protocol::{RecordId, RecordKind};
pub use transport::{
    normalize_server_url, BoxFuture, HttpConfig, HttpTransport, LoginRequest, Tokens, Transport,
    TransportError,
};
