//! The executor's public APIs, one file each. Routes and the chain listener call only these.

mod configure;
mod details;
mod execute_job;
mod follow_health;
mod job_status;
mod observe;
mod on_chain_event;
mod probe;
mod recover;
mod register_enclave;
mod settle;
mod status;
mod submit_output;
mod take_back;

pub use job_status::{JobPage, JobStatus, JOB_STATES, MAX_JOBS_PAGE};
pub use on_chain_event::FollowVerdict;
pub use recover::RecoveryReport;
pub use register_enclave::storage_capacity_problem;
pub use status::StatusReport;
