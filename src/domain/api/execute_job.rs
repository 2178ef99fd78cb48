//! Runs one job in one slot: fetch its code, run it in the sandbox, and turn what happened into
//! the protocol's `(output, errorCode, totalTime)`.

use crate::domain::dal::{CodeFetchError, RunResult, Slot};
use crate::domain::model::{ErrorCode, ExecutionOutcome, Job};
use crate::domain::stage::{Stage, STAGE_TARGET};
use crate::domain::Executor;

fn outcome(output: Vec<u8>, error_code: ErrorCode, total_time_ms: u64) -> ExecutionOutcome {
    ExecutionOutcome {
        output,
        error_code,
        total_time_ms,
    }
}

impl Executor {
    /// Executes `job` in `slot`. An `Err` means no honest outcome could be produced (the code
    /// source or the sandbox itself kept failing); the reason is for the journal.
    pub async fn execute_job(&self, job: &Job, slot: &Slot) -> Result<ExecutionOutcome, String> {
        let clock = &self.ports.clock;
        let window_end = job.window_end_ms(self.settings.execution_buffer_secs);
        let fetch_start = clock.now_ms();
        let mut backoff = self.settings.retry_backoff_ms;
        let code = loop {
            match self.ports.code.fetch_code(job.codehash).await {
                Ok(code) => break code,
                Err(CodeFetchError::NotFound(_) | CodeFetchError::WrongContract(_)) => {
                    let spent = clock.now_ms().saturating_sub(fetch_start);
                    return Ok(outcome(vec![], ErrorCode::CodeNotFound, spent));
                }
                Err(CodeFetchError::BadCalldata(reason)) => {
                    tracing::info!(job = %job.id, %reason, "job code calldata is invalid");
                    let spent = clock.now_ms().saturating_sub(fetch_start);
                    return Ok(outcome(vec![], ErrorCode::BadCalldata, spent));
                }
                Err(CodeFetchError::Transient(reason)) => {
                    if clock.now_ms() + backoff + self.settings.min_window_left_ms >= window_end {
                        return Err(format!("code fetch kept failing: {reason}"));
                    }
                    tracing::warn!(job = %job.id, %reason, backoff_ms = backoff, "code fetch failed; retrying");
                    clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(self.settings.retry_backoff_ms * 8);
                }
            }
        };

        tracing::debug!(target: STAGE_TARGET, job = %job.id, stage = Stage::CodeFetched.name());
        let ooms_before = self.ports.slots.oom_kills(slot);
        let mut attempts = 0;
        let (result, start) = loop {
            let start = clock.now_ms();
            match self
                .ports
                .sandbox
                // The secret store's lookup of `job.secret_id` is wired in by its own change.
                .run(slot, &code, &job.code_inputs, None, job.deadline_ms)
                .await
            {
                Ok(result) => break (result, start),
                Err(e) if attempts < 1 => {
                    attempts += 1;
                    tracing::error!(job = %job.id, error = %e, "sandbox failed; retrying once");
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let elapsed = clock.now_ms().saturating_sub(start);
        tracing::debug!(target: STAGE_TARGET, job = %job.id, stage = Stage::Executed.name());
        Ok(match result {
            RunResult::Output(body) => outcome(body, ErrorCode::Ok, elapsed),
            RunResult::LoadFailed(reason) => {
                tracing::info!(job = %job.id, %reason, "job code failed to load");
                outcome(vec![], ErrorCode::LoadFailed, elapsed)
            }
            RunResult::DeadlineExceeded => {
                outcome(vec![], ErrorCode::DeadlineExceeded, job.deadline_ms)
            }
            RunResult::OutputTooLarge => outcome(vec![], ErrorCode::OutputTooLarge, elapsed),
            RunResult::Crashed(reason) => {
                // The code ran and died: like an uncaught exception, error 0 with a body that says why.
                let oom = self.ports.slots.oom_kills(slot) > ooms_before;
                let body = if oom {
                    self.ports.metrics.sandbox_oom_kill();
                    tracing::warn!(job = %job.id, slot = slot.index, "job killed by the OOM killer");
                    "the job exceeded its memory limit".to_string()
                } else {
                    tracing::warn!(job = %job.id, %reason, "job runtime crashed");
                    format!("the job's runtime stopped: {reason}")
                };
                outcome(body.into_bytes(), ErrorCode::Ok, elapsed)
            }
        })
    }
}
