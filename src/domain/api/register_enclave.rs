//! The signed registration message the owner passes to `Executors.registerExecutor`.

use crate::domain::eip712::registration_digest;
use crate::domain::model::{Registration, EXECUTOR_ENV};
use crate::domain::{DomainError, Executor};

impl Executor {
    /// Signs `Register(owner, jobCapacity, env, signTimestamp)` with the enclave key and starts
    /// following the chain, so the registration event is not missed.
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
        let digest = registration_digest(owner, job_capacity, EXECUTOR_ENV, sign_timestamp);
        let signature = self.ports.signer.sign_digest(digest)?;
        self.request_follow();
        Ok(Registration {
            owner,
            job_capacity,
            env: EXECUTOR_ENV,
            sign_timestamp,
            signature,
        })
    }
}
