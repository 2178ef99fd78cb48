//! Start-up recovery from the journal: re-queue accepted jobs, re-send signed outputs, put
//! every unsettled job back on the settlement timetable (reading only open jobs), and take back
//! the nonces of superseded jobs' outputs still journalled as to take back; and pruning of
//! finished jobs (reading only jobs whose window ended before the retention).

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
    /// Output transactions of superseded jobs whose nonces are being taken back.
    pub taking_back: usize,
}

/// How often a running executor prunes its journal.
const PRUNE_INTERVAL_MS: u64 = 3_600_000;
/// Jobs pruned per hold of the journal lock.
const PRUNE_BATCH: usize = 256;

impl Executor {
    /// Resumes every job the journal holds. Call once, before following the chain.
    pub fn recover(self: &Arc<Self>) -> Result<RecoveryReport, DomainError> {
        // Pruning is left to the pruner, which starts at once in the background.
        let mut report = RecoveryReport::default();
        let now = self.ports.clock.now_ms();
        for record in self.ports.store.open_jobs()? {
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
        // Jobs a reorg superseded before the restart: their outputs may still be in a pool.
        let superseded = self.ports.store.take_backs()?;
        report.taking_back = superseded.len();
        self.take_back_outputs(superseded);
        Ok(report)
    }

    /// Removes finished jobs (not ours, answered, or given up) once their window closed longer
    /// ago than the retention: by then the chain has long settled them. Returns how many.
    /// Walks only jobs whose window closed that long ago, a batch at a time, so the journal
    /// lock is never held for long.
    pub fn prune_journal(&self) -> Result<usize, DomainError> {
        let now = self.ports.clock.now_ms();
        let ended_before = now.saturating_sub(
            self.settings
                .journal_retention_ms
                .saturating_add(self.settings.execution_buffer_secs.saturating_mul(1000)),
        );
        let mut pruned = 0;
        let mut after = None;
        loop {
            let batch = self
                .ports
                .store
                .expired_jobs(ended_before, after, PRUNE_BATCH)?;
            let Some(last) = batch.last() else { break };
            after = Some((last.job.window_end_ms(0), last.job.id));
            let removed = {
                let _journal = self.journal_lock();
                let mut removed = 0;
                for record in &batch {
                    // Read again under the lock: the job may have moved on since.
                    let finished = self
                        .ports
                        .store
                        .job(record.job.id)?
                        .is_some_and(|current| current.state.is_final());
                    if finished {
                        self.ports.store.remove_job(record.job.id)?;
                        removed += 1;
                    }
                }
                removed
            };
            // Made durable outside the lock: writers of live jobs do not wait for it.
            if removed > 0 {
                self.ports.store.flush()?;
                pruned += removed;
            }
            if batch.len() < PRUNE_BATCH {
                break;
            }
        }
        Ok(pruned)
    }

    /// Prunes the journal at start and then every hour, for executors that run for weeks.
    pub async fn run_pruner(self: Arc<Self>) {
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                self.ports.clock.sleep_ms(PRUNE_INTERVAL_MS).await;
            }
            // Off the async workers: a week-old hour of jobs can be many records.
            let executor = self.clone();
            match tokio::task::spawn_blocking(move || executor.prune_journal()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(pruned)) => tracing::info!(pruned, "finished jobs pruned from the journal"),
                Ok(Err(e)) => tracing::error!(error = %e, "cannot prune the journal"),
                Err(e) => tracing::error!(error = %e, "the pruning task failed"),
            }
        }
    }
}
