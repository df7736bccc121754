//! hawzu-gate: the authorization sidecar for the Hawzu API.
//!
//! It holds Hawzu access tokens and decides, for each API request, whether
//! the bearer token that came with it may make that request. The parts
//! follow docs/design.md: tokens, stores, the decision, the front doors, the
//! admin plane.

#![forbid(unsafe_code)]
// Proving a door's future `Send` walks decide → cache → store → the Redis
// client's futures, which is about the default limit of 128 deep: small
// changes anywhere on that path (or incremental builds) tip it over.
#![recursion_limit = "256"]

pub mod admin;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod clients;
pub mod config;
pub mod console;
pub mod decide;
pub mod doors;
pub mod expiring;
pub mod files;
pub mod headers;
pub mod leaks;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod redact;
pub mod refusal;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod traces;
pub mod usage;
pub mod web;
pub mod webhooks;
