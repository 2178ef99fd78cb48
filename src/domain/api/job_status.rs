//! Job status from the journal: one job by id, or a page of jobs filtered by state, oldest or
//! newest first. A page reads about as many records as it returns.

use ethers::types::{H256, U256};

use crate::domain::dal::{JobOrder, JobQuery};
use crate::domain::model::{JobRecord, JobState};
use crate::domain::{DomainError, Executor};

pub use crate::domain::model::JOB_STATES;
/// Largest page of `list_jobs`.
pub const MAX_JOBS_PAGE: usize = 1000;

/// What the journal says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    pub id: U256,
    pub state: &'static str,
    /// Whether this executor was selected to run it.
    pub selected: bool,
    pub deadline_ms: u64,
    /// `execStartTime`, unix seconds.
    pub exec_start_time: u64,
    /// From our signed output, once there is one.
    pub error_code: Option<u8>,
    pub total_time_ms: Option<u64>,
    /// Our `submitOutput` transaction, when known.
    pub tx_hash: Option<H256>,
    /// Why it was abandoned.
    pub reason: Option<String>,
    /// Outputs seen on chain.
    pub output_count: u8,
    pub settled: bool,
    /// Gas our transactions for it cost so far.
    pub gas_spent: u64,
}

/// One page of jobs in the order asked; `next` is the `after` of the following page, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    pub jobs: Vec<JobStatus>,
    pub next: Option<U256>,
}

impl JobStatus {
    fn of(record: &JobRecord, me: ethers::types::Address) -> Self {
        let (output, tx_hash, reason) = match &record.state {
            JobState::Executed { output } => (Some(output), None, None),
            JobState::Submitted { output, tx_hash } => (Some(output), Some(*tx_hash), None),
            JobState::Confirmed { output, tx_hash } => (output.as_ref(), *tx_hash, None),
            JobState::Abandoned { reason } => (None, None, Some(reason.clone())),
            JobState::Observed | JobState::Queued | JobState::Running => (None, None, None),
        };
        Self {
            id: record.job.id,
            state: record.state.name(),
            selected: record.job.selects(me),
            deadline_ms: record.job.deadline_ms,
            exec_start_time: record.job.exec_start_time,
            error_code: output.map(|o| o.error_code.as_u8()),
            total_time_ms: output.map(|o| o.total_time_ms),
            tx_hash,
            reason,
            output_count: record.output_count,
            settled: record.settled,
            gas_spent: record.gas_spent,
        }
    }
}

impl Executor {
    pub fn job_status(&self, id: U256) -> Result<JobStatus, DomainError> {
        let record = self
            .ports
            .store
            .job(id)?
            .ok_or(DomainError::UnknownJob(id))?;
        Ok(JobStatus::of(&record, self.ports.signer.address()))
    }

    /// Jobs with id above `after`, in id order, in `state` if given, at most `limit` (1..=1000).
    pub fn list_jobs(
        &self,
        state: Option<&str>,
        after: Option<U256>,
        limit: usize,
    ) -> Result<JobPage, DomainError> {
        self.list_jobs_in(JobOrder::Ascending, state, after, limit)
    }

    /// The newest `limit` jobs (1..=1000), newest first: one short read of the journal's end.
    pub fn latest_jobs(&self, limit: usize) -> Result<JobPage, DomainError> {
        self.list_jobs_in(JobOrder::Descending, None, None, limit)
    }

    /// Jobs past `after` in `order` (above it oldest first, below it newest first), in `state`
    /// if given, at most `limit` (1..=1000).
    pub fn list_jobs_in(
        &self,
        order: JobOrder,
        state: Option<&str>,
        after: Option<U256>,
        limit: usize,
    ) -> Result<JobPage, DomainError> {
        let state = match state {
            None => None,
            Some(state) => Some(*JOB_STATES.iter().find(|s| **s == state).ok_or_else(|| {
                DomainError::BadQuery(format!(
                    "state: '{state}' is not one of {}",
                    JOB_STATES.join(", ")
                ))
            })?),
        };
        if !(1..=MAX_JOBS_PAGE).contains(&limit) {
            return Err(DomainError::BadQuery(format!(
                "limit: {limit} is outside 1..={MAX_JOBS_PAGE}"
            )));
        }
        let me = self.ports.signer.address();
        // One more than the page says whether another page follows.
        let slice = self.ports.store.list_jobs(&JobQuery {
            state,
            after,
            order,
            limit: limit + 1,
        })?;
        let mut jobs: Vec<JobStatus> = slice.records.iter().map(|r| JobStatus::of(r, me)).collect();
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id)
        } else {
            // The store read as far as it reads for one page: the rest may hold more.
            slice.resume_after
        };
        Ok(JobPage { jobs, next })
    }
}
