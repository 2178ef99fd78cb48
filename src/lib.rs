//! serverless-executor: runs JavaScript jobs requested on chain (Oyster Serverless protocol) in
//! workerd and answers them with outputs signed by the enclave key.
//!
//! Module map (ports and adapters; see `README.md`, "Layout"):
//!
//! - `domain`: the business logic, pure: the model, the ports (`domain::dal`, one trait per side
//!   effect), one file per public API (`domain::api`), the scheduler; with the `mocks` feature,
//!   `domain::testing` holds the one set of stubs and each port's contract suite.
//! - `effects`: the driven adapters, one per port: sled store, k256 signer, system clock,
//!   workerd sandbox, cgroup slots, ethers chain (sender, follower, origins), code fetch,
//!   prometheus metrics.
//! - `routes`: driving adapter: the hyper server (public and admin listeners), one module per
//!   route group, errors mapped to HTTP status once.
//! - `listeners`: driving adapters besides HTTP: the chain listener and the probe timer.
//! - `bootstrap`: the composition root: configuration → effects → domain → routes and
//!   listeners; start-up and shutdown, nothing else.
//! - `config`: every setting, from environment variables, validated at start.
//! - `logging`: `tracing` set-up with a filter changeable at run time.
//! - `client`: devnet, operator and job-author tooling (the `client` and `devnet` commands).

// Outside input (HTTP bodies, chain data, job output) must never panic the executor: errors are
// returned, never unwrapped. Tests may unwrap (clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod bootstrap;
pub mod client;
pub mod config;
pub mod domain;
pub mod effects;
pub mod listeners;
pub mod logging;
pub mod routes;
