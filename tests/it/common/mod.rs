//! Helpers shared by the integration tests.

pub mod anvil;
pub mod devnet;
pub mod proxy;
pub mod server;
