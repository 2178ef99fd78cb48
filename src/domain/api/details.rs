//! Public facts about the executor: enclave identity, gas and owner addresses, chain status.

use crate::domain::model::{ChainStatus, ExecutorDetails};
use crate::domain::{DomainError, Executor};

impl Executor {
    pub fn details(&self) -> Result<ExecutorDetails, DomainError> {
        Ok(ExecutorDetails {
            enclave_address: self.ports.signer.address(),
            enclave_public_key: self.ports.signer.public_key(),
            gas_address: self.ports.chain.gas_address().unwrap_or_default(),
            owner_address: self.ports.store.owner()?.unwrap_or_default(),
        })
    }

    pub fn chain_status(&self) -> Result<ChainStatus, DomainError> {
        Ok(self.ports.store.chain_status()?)
    }

    /// Slots in use and in all, and whether cgroup limits are enforced.
    pub fn slot_usage(&self) -> (usize, usize, bool) {
        let slots = &self.ports.slots;
        (slots.busy(), slots.capacity(), slots.enforced())
    }
}
