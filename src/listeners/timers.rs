//! The timers: the readiness probe every few seconds (the chain head, the gas account, the
//! workerd binary), until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Executor;

use super::stopped;

/// How often the chain and sandbox are probed for readiness and metrics.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Probes now and every `PROBE_INTERVAL` until shutdown.
pub async fn probe(executor: Arc<Executor>, mut shutdown: watch::Receiver<bool>) {
    loop {
        executor.probe().await;
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}
