//! Taking back the nonces of output transactions whose job a reorg superseded (its id given to
//! another job, or its creating log removed). An output's EIP-712 signature binds only the job
//! id, so such a transaction, still in a pool, would answer the job that now holds the id with the
//! old job's output. Each one is journalled before the job's record changes, its nonce is taken
//! by a self-transfer through `ChainWriter::take_back`, and it is forgotten once the chain has
//! used the nonce; recovery resumes those a restart interrupted.

use std::sync::Arc;

use crate::domain::dal::TakeBack;
use crate::domain::model::{JobRecord, JobState, SupersededOutput};
use crate::domain::{DomainError, Executor};

impl Executor {
    /// Decides what of `old`, the journal's record of a job a reorg has just superseded, must
    /// be taken back, and journals it (before the caller replaces or removes the record). A
    /// confirmed job's output is mined already: nothing can be taken back, it is only said.
    /// Call under the journal lock; hand the result to `take_back_outputs`.
    pub(crate) fn journal_superseded_outputs(
        &self,
        old: &JobRecord,
    ) -> Result<Vec<SupersededOutput>, DomainError> {
        if let JobState::Confirmed { tx_hash, .. } = &old.state {
            tracing::warn!(job = %old.job.id, tx = ?tx_hash,
                "the superseded job's output was mined before the reorg was seen; nothing can be taken back");
            return Ok(Vec::new());
        }
        let outputs: Vec<SupersededOutput> = old
            .sent
            .iter()
            .map(|tx| SupersededOutput {
                job_id: old.job.id,
                tx: *tx,
            })
            .collect();
        for output in &outputs {
            self.ports.store.put_take_back(output)?;
        }
        Ok(outputs)
    }

    /// Takes back the nonce of each output, in the background (counted as in flight).
    pub(crate) fn take_back_outputs(self: &Arc<Self>, outputs: Vec<SupersededOutput>) {
        for output in outputs {
            let executor = self.clone();
            self.spawn_in_flight(async move { executor.take_back_output(output).await });
        }
    }

    /// Replaces one superseded output's nonce with a self-transfer, retrying transient failures
    /// with backoff, and forgets it once the chain has used that nonce.
    async fn take_back_output(&self, output: SupersededOutput) {
        let SupersededOutput { job_id, tx } = output;
        tracing::warn!(job = %job_id, tx = ?tx.tx_hash, nonce = %tx.nonce,
            "job superseded by a reorg with its output transaction unmined; taking its nonce back");
        let mut backoff = self.settings.retry_backoff_ms;
        loop {
            match self.ports.chain.take_back(&tx).await {
                Ok(TakeBack::TakenBack { transfer, gas_used }) => {
                    self.ports.metrics.gas_spent(gas_used);
                    tracing::info!(job = %job_id, tx = ?tx.tx_hash, nonce = %tx.nonce, ?transfer,
                        "the superseded job's output can never be mined: a self-transfer took its nonce");
                    break;
                }
                Ok(TakeBack::OutputMined { tx_hash }) => {
                    tracing::warn!(job = %job_id, tx = ?tx_hash,
                        "the superseded job's output was mined before its nonce could be taken back");
                    break;
                }
                Ok(TakeBack::NonceUsed) => {
                    tracing::info!(job = %job_id, tx = ?tx.tx_hash, nonce = %tx.nonce,
                        "another transaction of ours holds the superseded output's nonce");
                    break;
                }
                Ok(TakeBack::OtherKey) => {
                    tracing::error!(job = %job_id, tx = ?tx.tx_hash, from = ?tx.from,
                        "the superseded job's output was signed with a gas key replaced since; \
                         its nonce cannot be taken back");
                    break;
                }
                Err(e) => {
                    tracing::warn!(job = %job_id, tx = ?tx.tx_hash, error = %e, backoff_ms = backoff,
                        "cannot take the superseded output's nonce back yet; retrying");
                    self.ports.clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(self.settings.retry_backoff_ms * 8);
                }
            }
        }
        if let Err(e) = self.ports.store.remove_take_back(tx.tx_hash) {
            // Left in the journal: the next start asks the chain again, which finds it done.
            tracing::error!(job = %job_id, tx = ?tx.tx_hash, error = %e, "cannot journal the taken-back nonce");
        }
    }
}
