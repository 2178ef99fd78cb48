//! Helpers shared by the integration tests.

pub mod anvil;
pub mod contracts_sandbox;
pub mod devnet;
pub mod proxy;
pub mod server;
