//! # gesync-server
//!
//! The server of gesync: it merges the Automerge documents phones push, keeps them durably (in
//! sled, or in PostgreSQL shared by several server processes), serves each phone the changes in
//! its scope, and keeps the indicator figures of every org unit current.
//!
//! Code map: [`store`] (the `Kv` trait: write transactions and consistent reads; sled, memory,
//! PostgreSQL), [`db`] (the container of the repositories below, the org tree, the store's epoch, secrets, and
//! which module owns each key prefix), [`accounts`] (users, devices), [`audit`] (the audit chain),
//! [`org_units`] (adding, moving, merging units), [`records`] (push/pull of the sync protocol,
//! driving the sans-IO core of `sync-core`), [`figures`] (materialized indicator counters,
//! approvals' flags), [`rebuild`] (the figures recomputed from the documents), [`review`],
//! [`sessions`] (web sessions), [`uploads`] (large records' slices), [`auth`] (passwords, tokens, throttling), [`model`]
//! (accounts; the roles and access policy of `sync-core`), [`api`] (HTTP handlers), [`report_file`] and [`xlsx`] (the
//! report as a CSV or Excel download), [`server`] (TLS, launch, shutdown), [`demo`] (demo
//! data), [`web`] (the web pages).
#![forbid(unsafe_code)]

#[cfg(unix)]
pub mod admin_socket;
pub mod accounts;
mod account_rows;
pub mod api;
pub mod app_assets;
pub mod audit;
mod audit_rows;
pub mod auth;
pub mod backup;
pub mod check;
pub mod cli;
#[cfg(test)]
mod conformance;
pub mod conn;
pub mod db;
pub mod demo;
pub mod error;
pub mod heap;
mod login_rows;
mod figure_rows;
pub mod figures;
pub mod model;
pub mod org_units;
pub mod rebuild;
mod record_rows;
pub mod records;
pub mod report_file;
pub mod review;
mod rows;
pub mod server;
pub mod sessions;
pub mod store;
mod store_rows;
pub mod throttle;
mod upload_rows;
pub mod uploads;
pub mod web;
pub mod xlsx;

pub use db::Db;
pub use conn::Limits;
pub use server::{launch, open_db, Config, Tls};

/// Every program that links the server runs on its allocator (see `heap-trim`): the server's
/// binary, and the benchmarks and tests that start it in their own process.
#[global_allocator]
static ALLOCATOR: heap_trim::Allocator = heap_trim::Allocator;
