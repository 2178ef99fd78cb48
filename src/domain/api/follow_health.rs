//! Whether the chain follower can keep its journal: the deployment a data directory belongs to,
//! and retries (with backoff, then giving up) when the store fails while chain logs are handled.

use crate::domain::dal::StoreError;
use crate::domain::model::Deployment;
use crate::domain::{DomainError, Executor};

impl Executor {
    /// Records the deployment on a fresh store, and refuses a store that belongs to another
    /// one: its journal (job ids, cursor) would be wrong for this chain and these contracts.
    pub fn claim_deployment(&self, configured: Deployment) -> Result<(), DomainError> {
        match self.ports.store.deployment()? {
            None => {
                self.ports.store.set_deployment(&configured)?;
                self.ports.store.flush()?;
                Ok(())
            }
            Some(stored) if stored == configured => Ok(()),
            Some(stored) => Err(DomainError::OtherDeployment(format!(
                "this data directory belongs to chain {} (Jobs {:?}, Executors {:?}, UserCode \
                 {:?}), not to the configured chain {} (Jobs {:?}, Executors {:?}, UserCode {:?})",
                stored.chain_id,
                stored.jobs,
                stored.executors,
                stored.user_code,
                configured.chain_id,
                configured.jobs,
                configured.executors,
                configured.user_code
            ))),
        }
    }

    /// Runs `handle` (one chain log's handling), retrying it with backoff while the store
    /// fails. While it fails the executor is not ready and the metrics say so. Gives up with
    /// the store's error once it has failed for longer than `store_failure_limit_ms`; any
    /// other error is returned at once. `handle` must be idempotent (chain log handling is).
    pub async fn with_store_retry<T>(
        &self,
        mut handle: impl FnMut() -> Result<T, DomainError>,
    ) -> Result<T, DomainError> {
        let clock = &self.ports.clock;
        let mut backoff = self.settings.retry_backoff_ms.max(1);
        loop {
            match handle() {
                Ok(value) => {
                    if self.store_failure_lock().take().is_some() {
                        tracing::info!("the store works again; following the chain");
                        self.ports.metrics.set_store_failing(false);
                    }
                    return Ok(value);
                }
                Err(DomainError::Store(e)) => {
                    let now = clock.now_ms();
                    let since = self.note_store_failure(now, &e);
                    let failing_ms = now.saturating_sub(since);
                    if failing_ms >= self.settings.store_failure_limit_ms {
                        tracing::error!(error = %e, failing_ms, "the store keeps failing; giving up");
                        return Err(DomainError::Store(e));
                    }
                    tracing::error!(error = %e, retry_in_ms = backoff, failing_ms, "the store failed while handling a chain log; retrying");
                    clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(self.settings.store_retry_max_ms.max(1));
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Why the follower cannot keep its journal right now, if it cannot.
    pub fn store_failure(&self) -> Option<String> {
        self.store_failure_lock()
            .as_ref()
            .map(|(_, reason)| reason.clone())
    }

    /// Records one failure; returns since when the store has been failing.
    fn note_store_failure(&self, now: u64, error: &StoreError) -> u64 {
        self.ports.metrics.store_error();
        let mut failure = self.store_failure_lock();
        let since = failure.as_ref().map_or(now, |(since, _)| *since);
        if failure.is_none() {
            self.ports.metrics.set_store_failing(true);
        }
        *failure = Some((since, error.to_string()));
        since
    }

    fn store_failure_lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, String)>> {
        self.store_failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}
