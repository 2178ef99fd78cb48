//! Signs an outcome with the enclave key and gets it on chain: journal first, then send, retrying
//! transient failures until the window closes and classifying the chain's refusals.

use std::sync::Arc;

use ethers::types::U256;

use crate::domain::dal::{ChainError, JobEnd, OutputPlan, Revert, TxOutcome};
use crate::domain::eip712::output_digest;
use crate::domain::model::{
    ExecutionOutcome, Job, JobState, SentTx, SignedOutput, SupersededOutput,
};
use crate::domain::stage::{Stage, STAGE_TARGET};
use crate::domain::{DomainError, Executor};

/// How often a refused-as-too-old signature is renewed before giving up.
const MAX_RESIGNS: u32 = 3;
/// How often a send in progress looks whether its job was superseded or removed by a reorg.
const SUPERSEDED_POLL_MS: u64 = 500;

impl Executor {
    /// Signs `outcome` for `job` with the current time as `signTimestamp`.
    pub fn sign_output(
        &self,
        job: &Job,
        outcome: &ExecutionOutcome,
    ) -> Result<SignedOutput, DomainError> {
        let sign_timestamp = self.ports.clock.now_ms() / 1000;
        let digest = output_digest(
            job.id,
            &outcome.output,
            outcome.total_time_ms,
            outcome.error_code.as_u8(),
            sign_timestamp,
        );
        let signature = self.ports.signer.sign_digest(digest)?;
        Ok(SignedOutput {
            job_id: job.id,
            output: outcome.output.clone(),
            total_time_ms: outcome.total_time_ms,
            error_code: outcome.error_code,
            sign_timestamp,
            signature: signature.to_vec(),
        })
    }

    /// Signs, journals and sends the output of an executed job.
    pub async fn submit_output(
        self: &Arc<Self>,
        job: &Job,
        outcome: ExecutionOutcome,
    ) -> Result<(), DomainError> {
        // A reorg may have given the id to another job while this one ran: never sign for it.
        if !self.is_current(job)? {
            tracing::warn!(job = %job.id, "job superseded or removed by a reorg while it ran; output dropped");
            return Ok(());
        }
        let signed = self.sign_output(job, &outcome)?;
        tracing::debug!(target: STAGE_TARGET, job = %job.id, stage = Stage::Signed.name());
        let journalled = self.set_state_deferred(
            job,
            JobState::Executed {
                output: signed.clone(),
            },
        );
        if let Err(DomainError::Superseded(_)) = journalled {
            tracing::warn!(job = %job.id, "job superseded or removed by a reorg while it ran; output dropped");
            return Ok(());
        }
        journalled?;
        tracing::info!(job = %job.id, error_code = outcome.error_code.as_u8(), total_time_ms = outcome.total_time_ms, "job executed");
        self.send_output(job, signed).await
    }

    /// Sends a signed output until it lands, is refused for good, or the window closes.
    /// Stops (without error) once the job is superseded or removed by a reorg.
    pub(crate) async fn send_output(
        self: &Arc<Self>,
        job: &Job,
        signed: SignedOutput,
    ) -> Result<(), DomainError> {
        match self.send_output_while_current(job, signed).await {
            Err(DomainError::Superseded(id)) => {
                tracing::warn!(job = %id, "job superseded or removed by a reorg; its output is not sent");
                Ok(())
            }
            other => other,
        }
    }

    async fn send_output_while_current(
        self: &Arc<Self>,
        job: &Job,
        mut signed: SignedOutput,
    ) -> Result<(), DomainError> {
        let window_end = job.window_end_ms(self.settings.execution_buffer_secs);
        let mut backoff = self.settings.retry_backoff_ms;
        let mut resigns = 0;
        let mut plan = OutputPlan {
            min_gas: 0,
            max_gas: self.settings.max_output_gas,
            until_ms: window_end,
        };
        loop {
            self.confirm_on_chain(job, window_end).await?;
            let sent = {
                let (executor, job, signed) = (self.clone(), job.clone(), signed.clone());
                Arc::new(move |tx| executor.journal_sent(&job, &signed, tx))
            };
            let result = tokio::select! {
                biased;
                result = self.ports.chain.submit_output(&signed, plan, sent) => result,
                // Stop replacing the transaction: the output belongs to a job that is gone.
                () = self.until_superseded(job) => return Err(DomainError::Superseded(job.id)),
            };
            let gas = result.as_ref().map_or(0, TxOutcome::gas_used);
            // A mined output's gas is journalled with its `confirmed` below: one write.
            if !matches!(result, Ok(TxOutcome::Mined { .. })) {
                self.count_gas(job.id, gas);
            }
            if let Ok(TxOutcome::Reverted { revert, .. }) = &result {
                self.ports.metrics.output_reverted(revert);
            }
            match result {
                Ok(TxOutcome::Mined { tx_hash, .. }) => {
                    tracing::info!(job = %job.id, tx = ?tx_hash, "output on chain");
                    tracing::debug!(target: STAGE_TARGET, job = %job.id, stage = Stage::Mined.name());
                    // No flush of its own: recovery treats it as `submitted` (re-sent, refused as
                    // a duplicate at the estimate, confirmed), and the next flush covers it.
                    if gas > 0 {
                        self.ports.metrics.gas_spent(gas);
                    }
                    return self.write_state_and_gas(
                        job,
                        JobState::Confirmed {
                            output: Some(signed),
                            tx_hash: Some(tx_hash),
                        },
                        false,
                        gas,
                    );
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::AlreadySubmittedOutput,
                    ..
                }) => {
                    // An earlier attempt (before a restart or a resend) already landed.
                    tracing::info!(job = %job.id, "output was already on chain");
                    return self.set_state_deferred(
                        job,
                        JobState::Confirmed {
                            output: Some(signed),
                            tx_hash: None,
                        },
                    );
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::SignatureTooOld,
                    ..
                }) if resigns < MAX_RESIGNS => {
                    resigns += 1;
                    let outcome = ExecutionOutcome {
                        output: signed.output.clone(),
                        error_code: signed.error_code,
                        total_time_ms: signed.total_time_ms,
                    };
                    signed = self.sign_output(job, &outcome)?;
                    self.set_state(
                        job,
                        JobState::Executed {
                            output: signed.clone(),
                        },
                    )?;
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::ExecutionTimeOver,
                    ..
                }) => {
                    // The published Jobs says this both when the window closed and when the job
                    // was deleted at its 3rd output: either way nothing is left to do. If one of
                    // our transactions is among the outputs, the follower confirms the job.
                    let reason = if self.ports.clock.now_ms() < window_end {
                        "nothing left to do: the job was fully answered and deleted on chain \
                         (JobsExecutionTimeOver before its window closed)"
                    } else {
                        "nothing left to do: the job's window closed (JobsExecutionTimeOver)"
                    };
                    self.abandon(job, reason);
                    return Ok(());
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::UnknownJob,
                    ..
                }) => {
                    self.abandon(job, "the chain has no job with this id (Panic 0x32)");
                    return Ok(());
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::EnclaveNotVerified,
                    tx_hash,
                    ..
                }) => {
                    self.refuse_enclave(&format!(
                        "submitOutput of job {} refused with AttestationAutherKeyNotVerified \
                         (tx {tx_hash:?})",
                        job.id
                    ));
                    self.abandon(
                        job,
                        "the chain refuses this enclave key (AttestationAutherKeyNotVerified)",
                    );
                    return Ok(());
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::InvalidJob,
                    ..
                }) => {
                    // If an earlier transaction of ours completed the job, the follower turns
                    // this into `confirmed` when it reads our JobResponded.
                    self.abandon(
                        job,
                        "the job is no longer on chain: fully answered (perhaps by an earlier \
                         transaction of ours) or already settled",
                    );
                    return Ok(());
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::OutOfGas { gas_limit },
                    tx_hash,
                    ..
                }) => {
                    // A callback that burns all it is given leaves the output 1/64 of the gas
                    // at the call: more gas gives the output's own work room to finish.
                    self.ports.metrics.gas_burner(job.owner);
                    tracing::warn!(job = %job.id, owner = ?job.owner, gas_limit, tx = ?tx_hash,
                        "the output ran out of gas: the job owner's callback burns gas");
                    let more = gas_limit.saturating_mul(2).min(plan.max_gas);
                    if more <= gas_limit || self.ports.clock.now_ms() >= window_end {
                        self.abandon(
                            job,
                            &format!(
                                "the output ran out of gas at {gas_limit} gas (tx {tx_hash:?}); \
                                 EXECUTOR_MAX_OUTPUT_GAS is {} and job owner {:?} burns gas",
                                plan.max_gas, job.owner
                            ),
                        );
                        return Ok(());
                    }
                    plan.min_gas = more;
                }
                Ok(TxOutcome::Reverted {
                    revert, tx_hash, ..
                }) => {
                    self.abandon(
                        job,
                        &format!("the chain refused the output: {revert:?} (tx {tx_hash:?})"),
                    );
                    return Ok(());
                }
                Err(e @ (ChainError::Transient(_) | ChainError::NoGasKey)) => {
                    if self.ports.clock.now_ms() + backoff >= window_end {
                        self.abandon(
                            job,
                            &format!("the window closed while sending the output: {e}"),
                        );
                        return Ok(());
                    }
                    tracing::warn!(job = %job.id, error = %e, backoff_ms = backoff, "output not sent; retrying");
                    self.ports.clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(self.settings.retry_backoff_ms * 8);
                }
                Err(e) => {
                    self.abandon(job, &format!("output not sent: {e}"));
                    return Ok(());
                }
            }
        }
    }

    /// Adds the gas a transaction for job `id` cost to its journal record and the metrics.
    /// Not flushed on its own: durable with the journal's next flush. A crash before it loses
    /// the count (accounting), never the job's state.
    pub(crate) fn count_gas(&self, id: U256, gas: u64) {
        if gas == 0 {
            return;
        }
        self.ports.metrics.gas_spent(gas);
        if let Err(e) = self.update_job_deferred(id, |record| {
            record.gas_spent = record.gas_spent.saturating_add(gas)
        }) {
            tracing::error!(job = %id, error = %e, gas, "cannot journal the gas spent");
        }
    }

    /// Whether the journal still holds `job` itself under its id (not another job a reorg gave
    /// the id to, and not removed by a reorg).
    pub(crate) fn is_current(&self, job: &Job) -> Result<bool, DomainError> {
        Ok(self
            .ports
            .store
            .job(job.id)?
            .is_some_and(|record| record.job.same_job(job)))
    }

    /// Resolves once the journal no longer holds `job` itself.
    async fn until_superseded(&self, job: &Job) {
        loop {
            self.ports.clock.sleep_ms(SUPERSEDED_POLL_MS).await;
            if matches!(self.is_current(job), Ok(false)) {
                return;
            }
        }
    }

    /// Right before an output is sent: the job must still be the journal's and its creating log
    /// still on the canonical chain (the follower may not have seen a reorg yet). While the
    /// chain does not show the log (a reorg, or a node behind ours) this waits, until the
    /// window closes; a failing check lets the send go ahead (it would meet the same trouble).
    async fn confirm_on_chain(&self, job: &Job, window_end: u64) -> Result<(), DomainError> {
        let mut backoff = self.settings.retry_backoff_ms;
        loop {
            if !self.is_current(job)? {
                return Err(DomainError::Superseded(job.id));
            }
            match self.ports.reader.job_is_canonical(job).await {
                Ok(true) => return Ok(()),
                Err(e) => {
                    tracing::debug!(job = %job.id, error = %e, "cannot check the job's creating log; sending anyway");
                    return Ok(());
                }
                Ok(false) => {
                    if self.ports.clock.now_ms() + backoff >= window_end {
                        self.abandon(
                            job,
                            "the log that created the job is not on the chain (removed by a reorg)",
                        );
                        return Err(DomainError::Superseded(job.id));
                    }
                    tracing::warn!(job = %job.id, origin = ?job.origin, "the job's creating log is not on the chain now; output held");
                    self.ports.clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(self.settings.retry_backoff_ms * 8);
                }
            }
        }
    }

    /// Journals a broadcast output transaction (its nonce too, for a take-back). If a reorg
    /// superseded the job meanwhile, the transaction is one to take back.
    fn journal_sent(self: &Arc<Self>, job: &Job, signed: &SignedOutput, tx: SentTx) {
        let superseded = SupersededOutput { job_id: job.id, tx };
        let result = {
            let _journal = self.journal_lock();
            self.ports.store.job(job.id).and_then(|found| match found {
                Some(mut record) if record.job.same_job(job) => {
                    if matches!(
                        record.state,
                        JobState::Executed { .. } | JobState::Submitted { .. }
                    ) {
                        record.state = JobState::Submitted {
                            output: signed.clone(),
                            tx_hash: tx.tx_hash,
                        };
                    }
                    record.note_sent(tx);
                    self.ports.store.write_job(&record).map(|()| false)
                }
                _ => self.ports.store.put_take_back(&superseded).map(|()| true),
            })
        };
        match result {
            // Flushed off the send's path, while the receipt is looked up: the transaction is
            // out already, so the flush guards only against a crash in between (then the job
            // runs again, and one of its two outputs is refused as a duplicate).
            Ok(false) => {
                let (store, id, tx_hash) = (self.ports.store.clone(), job.id, tx.tx_hash);
                self.spawn_in_flight(async move {
                    match tokio::task::spawn_blocking(move || store.flush()).await {
                        Ok(Ok(())) => tracing::info!(job = %id, tx = ?tx_hash, "output sent"),
                        Ok(Err(e)) => {
                            tracing::error!(job = %id, error = %e, "cannot journal the sent output")
                        }
                        Err(e) => tracing::error!(job = %id, error = %e, "journal flush failed"),
                    }
                });
            }
            Ok(true) => self.take_back_outputs(vec![superseded]),
            Err(e) => tracing::error!(job = %job.id, error = %e, "cannot journal the sent output"),
        }
    }

    /// Journals a job's new state, keeping what the journal knows of it on chain. Fails with
    /// `Superseded` when the journal no longer holds this very job (a reorg).
    pub(crate) fn set_state(&self, job: &Job, state: JobState) -> Result<(), DomainError> {
        self.write_state(job, state, true)
    }

    /// `set_state` for a state that recovery treats as the one before it (`running` as `queued`,
    /// a first `executed` as `running`: the job is run again), so it need not be durable before
    /// the job goes on: it becomes durable with the next flush (at the latest the `submitted`
    /// before the output is broadcast), and a job saves one flush of the journal.
    pub(crate) fn set_state_deferred(&self, job: &Job, state: JobState) -> Result<(), DomainError> {
        self.write_state(job, state, false)
    }

    fn write_state(&self, job: &Job, state: JobState, flush: bool) -> Result<(), DomainError> {
        self.write_state_and_gas(job, state, flush, 0)
    }

    /// `write_state` that also adds `gas` to the job's gas spent (journal only; the caller
    /// counts it in the metrics).
    fn write_state_and_gas(
        &self,
        job: &Job,
        state: JobState,
        flush: bool,
        gas: u64,
    ) -> Result<(), DomainError> {
        let (record, was_final) = {
            let _journal = self.journal_lock();
            let mut record = match self.ports.store.job(job.id)? {
                Some(record) if record.job.same_job(job) => record,
                _ => return Err(DomainError::Superseded(job.id)),
            };
            let was_final = matches!(
                record.state,
                JobState::Confirmed { .. } | JobState::Abandoned { .. }
            );
            record.state = state;
            record.gas_spent = record.gas_spent.saturating_add(gas);
            self.ports.store.write_job(&record)?;
            (record, was_final)
        };
        // Durable before the caller acts on it; flushed outside the lock so that jobs
        // changing state at the same moment share the flush.
        if flush {
            self.ports.store.flush()?;
        }
        if !was_final {
            self.count_job_end(job, &record.state);
        }
        Ok(())
    }

    /// Reports a job's first final state to the metrics.
    pub(crate) fn count_job_end(&self, job: &Job, state: &JobState) {
        let (end, error_code) = match state {
            JobState::Confirmed { output, .. } => {
                (JobEnd::Confirmed, output.as_ref().map(|o| o.error_code))
            }
            JobState::Abandoned { .. } => (JobEnd::Abandoned, None),
            _ => return,
        };
        let created_ms = job.exec_start_time.saturating_mul(1000);
        let end_to_end_ms = self.ports.clock.now_ms().saturating_sub(created_ms);
        self.ports
            .metrics
            .job_finished(end, error_code, end_to_end_ms);
    }

    /// Gives a job up for good and says why, in the journal and the log. A job whose output
    /// the chain already shows stays confirmed (a refusal can race an earlier transaction).
    pub(crate) fn abandon(&self, job: &Job, reason: &str) {
        let state = JobState::Abandoned {
            reason: reason.to_string(),
        };
        let journalled = {
            let _journal = self.journal_lock();
            self.ports.store.job(job.id).and_then(|found| {
                // Another job under this id (a reorg), or none: nothing of ours to give up.
                let Some(mut record) = found.filter(|record| record.job.same_job(job)) else {
                    return Ok(false);
                };
                if matches!(record.state, JobState::Confirmed { .. }) {
                    return Ok(false);
                }
                let first_end = !matches!(record.state, JobState::Abandoned { .. });
                record.state = state;
                self.ports.store.put_job(&record)?;
                if first_end {
                    self.count_job_end(job, &record.state);
                }
                Ok(true)
            })
        };
        match journalled {
            Ok(true) => tracing::warn!(job = %job.id, %reason, "job abandoned"),
            Ok(false) => {
                tracing::info!(job = %job.id, %reason, "output already confirmed, or the job superseded by a reorg; not abandoned")
            }
            Err(e) => {
                tracing::error!(job = %job.id, %reason, error = %e, "cannot journal the abandoned job")
            }
        }
    }
}
