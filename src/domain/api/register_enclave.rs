//! The signed registration message the owner passes to `Executors.registerExecutor` (v2) or
//! `TeeManager.registerTeeNode` (TEE generation), and the start-up check of the storage capacity
//! the TEE generation needs.

use crate::domain::eip712::{registration_digest, tee_registration_digest};
use crate::domain::model::{Protocol, Registration, EXECUTOR_ENV};
use crate::domain::{DomainError, Executor};

impl Executor {
    /// Signs the generation's `Register` message with the enclave key and starts following the
    /// chain, so the registration event is not missed.
    pub fn register_enclave(&self) -> Result<Registration, DomainError> {
        let owner = self.ports.store.owner()?.ok_or(DomainError::NotConfigured(
            "the owner (POST /immutable-config)",
        ))?;
        if self.ports.chain.gas_address().is_none() {
            return Err(DomainError::NotConfigured(
                "the gas key (POST /mutable-config)",
            ));
        }
        let job_capacity = self.job_capacity() as u64;
        let sign_timestamp = self.ports.clock.now_ms() / 1000;
        let (digest, storage_capacity) = match self.settings.protocol {
            Protocol::V2 => (
                registration_digest(owner, job_capacity, EXECUTOR_ENV, sign_timestamp),
                None,
            ),
            Protocol::Tee => {
                let storage = self.settings.storage_capacity;
                (
                    tee_registration_digest(
                        owner,
                        job_capacity,
                        storage,
                        EXECUTOR_ENV,
                        sign_timestamp,
                    ),
                    Some(storage),
                )
            }
        };
        let signature = self.ports.signer.sign_digest(digest)?;
        self.request_follow();
        Ok(Registration {
            owner,
            job_capacity,
            storage_capacity,
            env: EXECUTOR_ENV,
            sign_timestamp,
            signature,
        })
    }
}

/// Why a TEE node with `storage_capacity` cannot serve next to `global_max_secret_size`
/// (SecretManager's `GLOBAL_MAX_SECRET_SIZE`), if it cannot: below it, every release of an
/// executor slot on chain computes `storageCapacity - GLOBAL_MAX_SECRET_SIZE` and reverts with
/// `Panic(0x11)`, so every output of the node and every slash involving it would fail.
pub fn storage_capacity_problem(
    storage_capacity: u64,
    global_max_secret_size: ethers::types::U256,
) -> Option<String> {
    if ethers::types::U256::from(storage_capacity) >= global_max_secret_size {
        return None;
    }
    Some(format!(
        "EXECUTOR_STORAGE_CAPACITY={storage_capacity} is below SecretManager.GLOBAL_MAX_SECRET_SIZE \
         ({global_max_secret_size}): on chain every output of this node and every slash \
         involving it would revert with Panic(0x11). Set EXECUTOR_STORAGE_CAPACITY to at least \
         {global_max_secret_size}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_capacity_below_the_largest_secret_is_refused() {
        let max = ethers::types::U256::from(1_000_000u64);
        assert_eq!(storage_capacity_problem(1_000_000, max), None);
        assert_eq!(storage_capacity_problem(100_000_000, max), None);
        let problem = storage_capacity_problem(999_999, max).unwrap();
        assert!(problem.contains("EXECUTOR_STORAGE_CAPACITY"), "{problem}");
        assert!(problem.contains("Panic(0x11)"), "{problem}");
    }
}
