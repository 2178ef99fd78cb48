//! The timers: the readiness probe every few seconds (the chain head, the gas account, the
//! workerd binary), and the secret store's chain duties every second, until shutdown.

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

/// How often the secret store's duties run (liveness, missing acknowledgements, expiry).
pub const SECRET_TICK: Duration = Duration::from_secs(1);

/// Runs the secret store's duties now and every `SECRET_TICK` until shutdown.
pub async fn secret_duties(executor: Arc<Executor>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = executor.secret_tick().await {
            tracing::error!(error = %e, "the secret store's duties failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(SECRET_TICK) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}
