//! The integration tests, one binary with a module per topic (one link instead of twelve).
//! Each module runs against real parts: workerd, anvil with the dev contracts, the HTTP server,
//! cgroups where the machine allows them. Run one topic with `cargo test --test it chain::`.
//! `tests/operability.rs` stays a binary of its own: its log capture is process-wide.

mod common;

/// The chain adapters (sender, code source, follower) on anvil, and their port suites.
mod chain;
/// The committed dev-contract artifacts match the sources and the wire protocol.
mod contracts_artifacts;
/// The full job lifecycle with real executors on a devnet.
mod e2e;
/// Crashes, restarts, cut connections and a failing disk, with the real binary.
mod faults;
/// The operator API end to end, and the store, signer and clock adapters' suites.
mod foundation;
/// The HTTP surface under hostile input.
mod hardening;
/// Gas and nonce attacks: gas-burning job owners, fee spikes.
mod hostile;
/// Alert rules, dashboard metrics and the status page in a real browser.
mod monitoring;
/// Behaviours of Marlin's published contracts, on the dev contracts that copy them.
mod real_contracts;
/// Reorgs that give a job's id to another job, in each state.
mod reorg;
/// The sandbox against real workerd and cgroups, in both modes.
mod sandbox;
/// The journal and the public API at scale.
mod scale;
/// The secret store over HTTP: injections, refusals, sealing at rest.
mod secrets;
/// The TEE generation: registration on TeeManager, jobs, drain/revive/deregister, secret events.
mod tee;
/// The TEE generation's secret flow on anvil: inject, acknowledge, a job reads env.secret,
/// liveness across a restart, acknowledgeStoreFailed, drain.
mod tee_secrets;
