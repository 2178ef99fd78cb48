//! Test support for the ports: mockall stubs configured to behave like working adapters, and
//! the behavioural contract suites every implementation of a port must pass (the stubs here,
//! the real adapters in `tests/`). Compiled with the `mocks` feature (on in every test build).
//! One module per port.

// Test support: a broken expectation should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chain;
mod clock;
mod code;
mod metrics;
mod probe;
mod sandbox;
mod secrets;
mod signer;
mod slots;
mod store;

pub use chain::*;
pub use clock::*;
pub use code::*;
pub use metrics::*;
pub use probe::*;
pub use sandbox::*;
pub use secrets::*;
pub use signer::*;
pub use slots::*;
pub use store::*;

use ethers::types::{Address, H256, U256};

use super::model::Job;

/// The codehash of every `sample_job` (saved on `code_ok`'s chain).
pub const SAMPLE_CODEHASH: H256 = H256::repeat_byte(0xc0);

/// A job for tests: id, selected executors, window from `exec_start_time`.
pub fn sample_job(id: u64, selected: Vec<Address>, exec_start_time: u64) -> Job {
    Job {
        id: U256::from(id),
        env: 1,
        owner: Address::repeat_byte(0x0b),
        codehash: SAMPLE_CODEHASH,
        code_inputs: br#"{"num":10}"#.to_vec(),
        deadline_ms: 1000,
        selected_executors: selected,
        exec_start_time,
        origin: None,
        compact: None,
        secret_id: U256::zero(),
    }
}
