//! # gesync-server
//!
//! The server of gesync: it merges the Automerge documents phones push, keeps them durably in
//! sled, serves each phone the changes in its scope, and keeps the indicator figures of every
//! org unit current.
//!
//! Code map: [`store`] (the `Kv` trait, sled and memory), [`db`] (tables on top of it: org
//! units, users, devices, audit), `records` (push/pull of the sync protocol), `figures`
//! (materialized indicator counters), [`auth`] (passwords, tokens, throttling), [`model`]
//! (roles and the access policy), [`api`] (HTTP handlers), [`report_file`] and [`xlsx`] (the
//! report as a CSV or Excel download), [`server`] (TLS, launch, shutdown), [`demo`] (demo
//! data), [`web`] (the web pages).
#![forbid(unsafe_code)]

#[cfg(unix)]
pub mod admin_socket;
pub mod api;
pub mod auth;
pub mod backup;
pub mod cli;
#[cfg(test)]
mod conformance;
pub mod conn;
pub mod db;
pub mod demo;
pub mod error;
mod figures;
pub mod model;
pub mod org_units;
pub mod records;
pub mod report_file;
pub mod review;
pub mod server;
pub mod store;
pub mod throttle;
pub mod web;
pub mod xlsx;

pub use db::Db;
pub use conn::Limits;
pub use server::{launch, open_db, Config, Tls};
