//! What the executor does with each protocol event the chain listener delivers. The domain
//! decides here; the chain adapter only delivers logs in order and sends transactions.

use std::sync::Arc;

use crate::domain::model::{
    ChainEvent, ChainLog, ChainStatus, Job, JobRecord, JobState, EXECUTOR_ENV,
};
use crate::domain::stage::{Stage, STAGE_TARGET};
use crate::domain::{DomainError, Executor};

/// Whether the listener should keep following the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowVerdict {
    Continue,
    /// The enclave was deregistered: stop listening.
    Stop,
}

impl Executor {
    /// Handles one log. Idempotent: a log delivered twice (backfill after a reconnect) changes
    /// nothing the second time.
    pub fn on_chain_event(self: &Arc<Self>, log: ChainLog) -> Result<FollowVerdict, DomainError> {
        let me = self.ports.signer.address();
        let store = &self.ports.store;
        let verdict = match log.event {
            ChainEvent::ExecutorRegistered { enclave, owner, .. } if enclave == me => {
                if log.removed {
                    tracing::warn!("our registration was removed by a reorg; waiting for it again");
                    store.set_chain_status(ChainStatus::Unregistered)?;
                } else if Some(owner) == store.owner()? {
                    tracing::info!(owner = ?owner, "enclave registered on chain; serving jobs");
                    store.set_chain_status(ChainStatus::Serving)?;
                    self.clear_enclave_refusal();
                } else {
                    tracing::warn!(owner = ?owner, "enclave registered by an unexpected owner; ignored");
                }
                FollowVerdict::Continue
            }
            ChainEvent::ExecutorDrained { enclave } if enclave == me && !log.removed => {
                tracing::info!("executor drained: no new jobs");
                store.set_chain_status(ChainStatus::Draining)?;
                // The chain gives our secrets to other stores.
                self.forget_all_secrets()?;
                FollowVerdict::Continue
            }
            ChainEvent::ExecutorRevived { enclave } if enclave == me && !log.removed => {
                tracing::info!("executor revived: taking jobs again");
                store.set_chain_status(ChainStatus::Serving)?;
                FollowVerdict::Continue
            }
            ChainEvent::ExecutorDeregistered { enclave } if enclave == me && !log.removed => {
                tracing::info!("executor deregistered: no longer following the chain");
                store.set_chain_status(ChainStatus::Deregistered)?;
                self.forget_all_secrets()?;
                FollowVerdict::Stop
            }
            ChainEvent::JobCreated(job) => {
                if log.removed {
                    self.forget_removed_job(&job)?;
                } else {
                    self.on_job_created(job)?;
                }
                FollowVerdict::Continue
            }
            ChainEvent::JobResponded {
                job_id,
                executor,
                output_count,
            } if !log.removed => {
                let mut ended = None;
                // Not flushed: until it is durable, neither is the cursor past this log.
                self.update_job_deferred(job_id, |record| {
                    record.output_count = record.output_count.max(output_count);
                    if record.job.fully_answered(record.output_count) {
                        record.settled = true;
                    }
                    if executor == me && !matches!(record.state, JobState::Confirmed { .. }) {
                        tracing::info!(job = %job_id, "our output seen on chain");
                        if !matches!(record.state, JobState::Abandoned { .. }) {
                            ended = Some(record.job.clone());
                        }
                        let output = match &record.state {
                            JobState::Executed { output } | JobState::Submitted { output, .. } => {
                                Some(output.clone())
                            }
                            _ => None,
                        };
                        record.state = JobState::Confirmed {
                            output,
                            tx_hash: None,
                        };
                    }
                })?;
                // Our output seen on chain before the sender's receipt: the job ends here.
                if let Some(job) = ended {
                    if let Some(record) = self.ports.store.job(job.id)? {
                        self.count_job_end(&job, &record.state);
                    }
                }
                FollowVerdict::Continue
            }
            ChainEvent::SlashedOnExecutionTimeout { job_id, enclave }
                if enclave == me && !log.removed =>
            {
                // Counted once per job: a log delivered again finds the journal marked. A job
                // the journal does not hold (pruned, or before a rebuild) is counted anyway.
                let mut first = true;
                self.update_job(job_id, |record| {
                    first = !record.slashed;
                    record.slashed = true;
                    record.settled = true;
                })?;
                if first {
                    tracing::warn!(job = %job_id, "this enclave was slashed on execution timeout");
                    self.ports.metrics.enclave_slashed();
                }
                FollowVerdict::Continue
            }
            ChainEvent::Secret(event) => {
                if log.removed {
                    self.on_secret_event_removed(event)?;
                } else {
                    self.on_secret_event(event)?;
                }
                FollowVerdict::Continue
            }
            other => {
                if log.removed {
                    tracing::warn!(event = ?other, "a reorg removed a log; nothing to undo");
                }
                FollowVerdict::Continue
            }
        };
        self.advance_cursor(log.position.block_number)?;
        Ok(verdict)
    }

    /// The listener has handled every log below `next_block`.
    pub fn on_chain_synced(&self, next_block: u64) -> Result<(), DomainError> {
        self.advance_cursor(next_block)
    }

    /// A reorg replaced blocks from `next_block` on: their logs are read again from there (the
    /// listener has already delivered the removal of those it had delivered).
    pub fn on_chain_rewound(&self, next_block: u64) -> Result<(), DomainError> {
        let store = &self.ports.store;
        if store.cursor()?.is_some_and(|current| current > next_block) {
            tracing::warn!(next_block, "chain reorganised; cursor rewound");
            store.set_cursor(next_block)?;
        }
        Ok(())
    }

    fn advance_cursor(&self, block: u64) -> Result<(), DomainError> {
        let store = &self.ports.store;
        if store.cursor()?.is_none_or(|current| block > current) {
            store.set_cursor(block)?;
        }
        Ok(())
    }

    fn on_job_created(self: &Arc<Self>, job: Job) -> Result<(), DomainError> {
        if job.env != EXECUTOR_ENV {
            tracing::debug!(job = %job.id, env = job.env, "job for another environment; ignored");
            return Ok(());
        }
        let status = self.ports.store.chain_status()?;
        if !matches!(status, ChainStatus::Serving | ChainStatus::Draining) {
            return Ok(());
        }
        let _journal = self.journal_lock();
        let mut superseded = Vec::new();
        if let Some(known) = self.ports.store.job(job.id)? {
            if known.job.same_job(&job) {
                return Ok(()); // delivered again by a backfill
            }
            // A reorg gave the id to another job: the old record (and any work for it) is void.
            tracing::warn!(
                job = %job.id,
                old_state = known.state.name(),
                old_origin = ?known.job.origin,
                new_origin = ?job.origin,
                "job id reused by a reorg: the old job is superseded by the new one"
            );
            superseded = self.journal_superseded_outputs(&known)?;
        }
        let selected = job.selects(self.ports.signer.address());
        let refusal = self.enclave_refusal().filter(|_| selected);
        // Selected while shutting down: journalled as queued, so the next start runs it.
        let state = if let Some(refusal) = &refusal {
            JobState::Abandoned {
                reason: format!("not run: the chain refuses this enclave key ({refusal})"),
            }
        } else if !selected {
            JobState::Observed
        } else if self.settings.denied_job_owners.contains(&job.owner) {
            // The operator's choice: their callbacks cost more gas than a slash.
            JobState::Abandoned {
                reason: format!(
                    "job owner {:?} is on EXECUTOR_DENIED_JOB_OWNERS; the chain will slash \
                     this executor for the job",
                    job.owner
                ),
            }
        } else {
            JobState::Queued
        };
        // Not flushed: the cursor past this log is written after it, and the journal becomes
        // durable in the order it is written, so until this record is durable the follower
        // reads the log again after a restart. The flushes that matter come later (`submitted`).
        self.ports
            .store
            .write_job(&JobRecord::new(job.clone(), state.clone()))?;
        // Started before the new job runs: the old nonces are taken before its output is sent.
        self.take_back_outputs(superseded);
        tracing::info!(job = %job.id, selected, state = state.name(), "job seen");
        if let JobState::Abandoned { reason } = &state {
            tracing::error!(job = %job.id, owner = ?job.owner, %reason, "selected job refused");
            self.count_job_end(&job, &state);
        }
        if state == JobState::Queued {
            // Stage marks (`domain::stage`, debug): the benchmark reads their timestamps.
            tracing::debug!(target: STAGE_TARGET, job = %job.id, stage = Stage::Seen.name());
            self.enqueue(&job);
        }
        self.schedule_settlement(&job);
        Ok(())
    }

    /// A reorg dropped the log that created `job`: forget it, whatever its state, and take back
    /// the nonces of its unmined output transactions. Work still in flight for it finds it gone
    /// and stops before signing or sending; if the job comes back in another block it is a new
    /// record and runs again.
    fn forget_removed_job(self: &Arc<Self>, job: &Job) -> Result<(), DomainError> {
        let _journal = self.journal_lock();
        if let Some(record) = self.ports.store.job(job.id)? {
            if record.job.same_job(job) {
                tracing::warn!(job = %job.id, state = record.state.name(), "job creation removed by a reorg; forgotten");
                let superseded = self.journal_superseded_outputs(&record)?;
                self.ports.store.remove_job(job.id)?;
                self.ports.store.flush()?;
                self.take_back_outputs(superseded);
            } else {
                tracing::debug!(job = %job.id, "removed log names another job than the journal's; kept");
            }
        }
        Ok(())
    }
}
