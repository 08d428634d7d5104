//! # client-core
//!
//! The phone's side of a sync, without IO: no network, no files, no clock, no runtime. The
//! driver (the `client-sdk` library on tokio and files, the web app's WebAssembly module on
//! `fetch` and IndexedDB, a native app) owns those and asks a [`Session`] what to do:
//!
//! ```text
//!   driver                          Session (this crate)
//!   ──────                          ────────────────────
//!   next(store, now)           ──▶  builds the next request body, or Done(report)
//!   POST /api/v1/sync (bytes)
//!   answered(store, body, now) ──▶  applies the verdicts and pulled records to the store,
//!                                   store.barrier(), then moves the cursor; progress
//!   failed(now)                ──▶  what the exchange carried goes again; smaller pages
//!   wait backoff(failures, …)
//! ```
//!
//! Paging and its sizes ([`Pacer`]), slices of large records both ways, resuming after a cut,
//! scope changes, a new store epoch (reconciling after a restore) and the rules of what is
//! pushed are decided here once. The phone's store sits behind [`LocalStore`]; its record
//! metadata ([`RecordMeta`]) and sync state ([`SyncState`]) are this crate's types.
//!
//! Invariants:
//! - Pulled records reach durable storage ([`LocalStore::barrier`]) before the cursor that
//!   passes them is stored: a cut or a crash costs at most the page in flight.
//! - A record is pushed at most once per (heads, server heads) pair in one sync, unless the
//!   exchange carrying it failed; the loop ends after [`MAX_ROUNDS`] rounds whatever the server
//!   says.
#![forbid(unsafe_code)]

mod error;
mod meta;
mod session;
mod store;

pub use error::CoreError;
pub use meta::{load_doc, refresh_meta, sorted, Partial, RecordMeta, Rejection, SyncState, SyncStatus};
pub use session::{backoff, pending_count, Pacer, Refusal, Session, Step, SyncOptions, SyncProgress, SyncReport, MAX_ROUNDS, PUSH_BUDGET};
pub use store::LocalStore;
