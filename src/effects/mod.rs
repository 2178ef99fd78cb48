//! Adapters: one module per side effect, each implementing a port of `domain::dal`.
//! They never call each other; `bootstrap.rs` wires them.

pub mod cgroup;
pub mod chain;
pub mod clock;
pub mod code_fetch;
pub(crate) mod group_flush;
pub mod metrics;
pub(crate) mod off_worker;
pub mod secrets;
pub mod signer;
pub mod store;
pub mod workerd;
