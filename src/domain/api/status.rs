//! What the operator's status page shows: readiness and why not, the chain, slots and queue,
//! the gas account and the latest journalled jobs (a short read of the journal's end, whatever
//! the journal holds).

use ethers::types::{Address, U256};

use crate::domain::api::{JobStatus, MAX_JOBS_PAGE};
use crate::domain::model::{ChainStatus, Readiness};
use crate::domain::{DomainError, Executor};

/// One look at the executor, for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub readiness: Readiness,
    pub chain_status: ChainStatus,
    pub enclave_address: Address,
    pub gas_address: Option<Address>,
    /// The chain's head at the last probe (None: the node did not answer).
    pub chain_head: Option<u64>,
    /// The first block whose logs are not yet known to be handled.
    pub cursor: Option<u64>,
    pub gas_balance_wei: Option<U256>,
    /// How long ago the last probe ran, ms (None: none yet).
    pub probe_age_ms: Option<u64>,
    pub slots_busy: usize,
    pub slots_total: usize,
    pub jobs_queued: usize,
    pub jobs_in_flight: usize,
    pub job_capacity: usize,
    /// The newest journalled jobs (highest ids), newest first; at most the number asked for.
    pub jobs: Vec<JobStatus>,
}

impl StatusReport {
    /// Blocks between the head and the cursor, when both are known.
    pub fn head_lag_blocks(&self) -> Option<u64> {
        self.chain_head
            .zip(self.cursor)
            .map(|(head, cursor)| (head + 1).saturating_sub(cursor))
    }
}

impl Executor {
    /// The status report with the latest `jobs` journalled jobs (1..=1000), newest first.
    pub fn status(&self, jobs: usize) -> Result<StatusReport, DomainError> {
        let (slots_busy, slots_total, _) = self.slot_usage();
        let (jobs_queued, jobs_in_flight) = self.load();
        let probe = self.last_probe();
        let now = self.ports.clock.now_ms();
        let page = self.latest_jobs(jobs.clamp(1, MAX_JOBS_PAGE))?;
        Ok(StatusReport {
            readiness: self.readiness()?,
            chain_status: self.chain_status()?,
            enclave_address: self.ports.signer.address(),
            gas_address: self.ports.chain.gas_address(),
            chain_head: probe.and_then(|p| p.chain_head),
            cursor: self.ports.store.cursor()?,
            gas_balance_wei: probe.and_then(|p| p.gas_balance_wei),
            probe_age_ms: probe.map(|p| now.saturating_sub(p.at_ms)),
            slots_busy,
            slots_total,
            jobs_queued,
            jobs_in_flight,
            job_capacity: self.job_capacity(),
            jobs: page.jobs,
        })
    }
}
