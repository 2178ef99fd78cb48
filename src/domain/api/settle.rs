//! Timeout settlement: once a job's window is over and not every selected executor answered,
//! send one `slashOnExecutionTimeout` (a refusal because someone else settled it is fine). A job
//! the chain refuses to settle (unknown id, deleted) is journalled settled and never retried.

use std::sync::Arc;

use ethers::types::U256;

use crate::domain::dal::{Revert, TxOutcome};
use crate::domain::model::JobState;
use crate::domain::Executor;

/// How often a settlement is retried when the chain's clock is behind ours or the RPC fails.
const MAX_ATTEMPTS: u32 = 10;

impl Executor {
    pub(crate) async fn settle_job(self: Arc<Self>, id: U256) {
        let mut backoff = self.settings.retry_backoff_ms.max(500);
        for _ in 0..MAX_ATTEMPTS {
            let record = match self.ports.store.job(id) {
                Ok(Some(record)) => record,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "cannot read the journal to settle");
                    return;
                }
            };
            if record.settled || record.job.fully_answered(record.output_count) {
                return;
            }
            // The id may now belong to a later job (a reorg): that one has its own, later turn.
            let due = record
                .job
                .window_end_ms(self.settings.execution_buffer_secs)
                + self.settings.settle_margin_ms;
            if self.ports.clock.now_ms() < due {
                return;
            }
            if !record.slash_sent {
                if let Err(e) = self.update_job(id, |r| r.slash_sent = true) {
                    tracing::error!(job = %id, error = %e, "cannot journal the settlement");
                    return;
                }
            }
            let result = self.ports.chain.slash_on_execution_timeout(id).await;
            if let Ok(outcome) = &result {
                self.count_gas(id, outcome.gas_used());
            }
            let settled_by = match result {
                Ok(TxOutcome::Mined { tx_hash, .. }) => {
                    tracing::info!(job = %id, tx = ?tx_hash, "settled a timed-out job");
                    "this executor"
                }
                Ok(TxOutcome::Reverted {
                    revert: Revert::InvalidJob,
                    ..
                }) => "another party (or deleted at its 3rd output)",
                Ok(TxOutcome::Reverted {
                    revert: Revert::DeadlineNotOver,
                    ..
                }) => {
                    // The chain's clock lags ours: wait for the next blocks.
                    self.ports.clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(8_000);
                    continue;
                }
                Ok(TxOutcome::Reverted { revert, .. }) => {
                    // Any other refusal is final (an unknown id, a key the chain refuses, …):
                    // journal it so that neither this loop nor a restart sends it again.
                    tracing::warn!(job = %id, ?revert, "settlement refused; not retried");
                    let journalled = self.update_job(id, |record| record.settled = true);
                    if let Err(e) = journalled {
                        tracing::error!(job = %id, error = %e, "cannot journal the refused settlement");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "settlement not sent; retrying");
                    self.ports.clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(8_000);
                    continue;
                }
            };
            let me = self.ports.signer.address();
            let journalled = self.update_job(id, |record| {
                record.settled = true;
                // An abandoned job keeps the reason it was given up for.
                if record.job.selects(me)
                    && !matches!(
                        record.state,
                        JobState::Confirmed { .. } | JobState::Abandoned { .. }
                    )
                {
                    record.state = JobState::Abandoned {
                        reason: format!("settled on timeout by {settled_by} without our output"),
                    };
                }
            });
            if let Err(e) = journalled {
                tracing::error!(job = %id, error = %e, "cannot journal the settlement");
            }
            return;
        }
        tracing::warn!(job = %id, "gave up settling after {MAX_ATTEMPTS} attempts");
    }
}
