//! Start-up recovery from the journal: re-queue accepted jobs, re-send signed outputs, and put
//! every unsettled job back on the settlement timetable; and pruning of finished jobs.

use std::sync::Arc;

use crate::domain::model::{ExecutionOutcome, JobState};
use crate::domain::{DomainError, Executor};

/// What recovery found, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub requeued: usize,
    pub resubmitting: usize,
    pub abandoned: usize,
    pub settling: usize,
    /// Finished jobs older than the retention, removed from the journal.
    pub pruned: usize,
}

/// How often a running executor prunes its journal.
const PRUNE_INTERVAL_MS: u64 = 3_600_000;

impl Executor {
    /// Resumes every job the journal holds. Call once, before following the chain.
    pub fn recover(self: &Arc<Self>) -> Result<RecoveryReport, DomainError> {
        let mut report = RecoveryReport {
            pruned: self.prune_journal()?,
            ..RecoveryReport::default()
        };
        let now = self.ports.clock.now_ms();
        for record in self.ports.store.jobs()? {
            let job = record.job.clone();
            let window_end = job.window_end_ms(self.settings.execution_buffer_secs);
            if !record.settled {
                self.schedule_settlement(&job);
                report.settling += 1;
            }
            match record.state {
                JobState::Queued | JobState::Running => {
                    if now + self.settings.min_window_left_ms > window_end {
                        self.abandon(&job, "the window closed while the executor was down");
                        report.abandoned += 1;
                    } else {
                        self.set_state(&job, JobState::Queued)?;
                        self.enqueue(&job);
                        report.requeued += 1;
                    }
                }
                JobState::Executed { output } | JobState::Submitted { output, .. } => {
                    // Re-sign: the old signature may be older than the chain accepts.
                    let outcome = ExecutionOutcome {
                        output: output.output,
                        error_code: output.error_code,
                        total_time_ms: output.total_time_ms,
                    };
                    let signed = self.sign_output(&job, &outcome)?;
                    self.set_state(
                        &job,
                        JobState::Executed {
                            output: signed.clone(),
                        },
                    )?;
                    let executor = self.clone();
                    self.spawn_in_flight(async move {
                        if let Err(e) = executor.send_output(&job, signed).await {
                            tracing::error!(job = %job.id, error = %e, "recovered output not sent");
                        }
                    });
                    report.resubmitting += 1;
                }
                JobState::Observed | JobState::Confirmed { .. } | JobState::Abandoned { .. } => {}
            }
        }
        Ok(report)
    }

    /// Removes finished jobs (not ours, answered, or given up) once their window closed longer
    /// ago than the retention: by then the chain has long settled them. Returns how many.
    pub fn prune_journal(&self) -> Result<usize, DomainError> {
        let now = self.ports.clock.now_ms();
        let _journal = self.journal_lock();
        let mut pruned = 0;
        for record in self.ports.store.jobs()? {
            let finished = matches!(
                record.state,
                JobState::Observed | JobState::Confirmed { .. } | JobState::Abandoned { .. }
            );
            let window_end = record
                .job
                .window_end_ms(self.settings.execution_buffer_secs);
            if finished && window_end + self.settings.journal_retention_ms < now {
                self.ports.store.remove_job(record.job.id)?;
                pruned += 1;
            }
        }
        if pruned > 0 {
            self.ports.store.flush()?;
        }
        Ok(pruned)
    }

    /// Prunes the journal every hour, for executors that run for weeks.
    pub async fn run_pruner(self: Arc<Self>) {
        loop {
            self.ports.clock.sleep_ms(PRUNE_INTERVAL_MS).await;
            match self.prune_journal() {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "finished jobs pruned from the journal"),
                Err(e) => tracing::error!(error = %e, "cannot prune the journal"),
            }
        }
    }
}
