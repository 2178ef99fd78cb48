//! Helpers shared by the integration tests.

pub mod anvil;
pub mod proxy;
