//! Driving adapters besides HTTP: the chain listener (logs from the follower into the domain)
//! and the timers (the readiness probe). Like `routes/`, they call domain APIs only;
//! `bootstrap.rs` starts them and stops them through the shutdown signal.

pub mod chain;
pub mod timers;

use tokio::sync::watch;

/// Resolves once shutdown is signalled.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
