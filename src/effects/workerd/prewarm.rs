//! Start-up of the warm slots: their processes start in the background, as many at once as the
//! machine has cores (in the order the slot pool hands slots out), and `prewarm` returns once the
//! first few listen. One at a time left jobs recovered at a restart to start cold processes of
//! their own; all at once (twenty, each in a slot with a fraction of a core) made the first job
//! wait over a second.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::warm::WarmPool;
use crate::domain::dal::{SandboxError, Slot};

/// How long one start may hold its turn waiting for its process to listen before the next slot
/// starts anyway (the late one keeps starting; jobs go to ready slots meanwhile).
const START_WAIT: Duration = Duration::from_secs(2);

/// How many slots start at once: the machine's cores.
pub(super) fn concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, Default, Clone)]
struct Progress {
    /// Starts that ended (listening, late or failed).
    ended: usize,
    ready: usize,
    /// The first start that failed.
    error: Option<String>,
}

/// Starts the slots' processes, `at_once` at a time, and returns once `first_ready` of them
/// listen (or every start ended); a failure before then is returned. The rest go on in the
/// background; a pool dropped meanwhile (shutdown) stops them.
pub(super) async fn prewarm(
    pool: &Arc<WarmPool>,
    slots: &[Slot],
    first_ready: usize,
    at_once: usize,
) -> Result<(), SandboxError> {
    let total = slots.len();
    let (progress, mut watch) = watch::channel(Progress::default());
    let weak = Arc::downgrade(pool);
    let slots = slots.to_vec();
    tokio::spawn(async move {
        let progress = &progress;
        futures::stream::iter(slots)
            .for_each_concurrent(at_once.max(1), |slot| {
                let weak = weak.clone();
                async move {
                    let Some(pool) = weak.upgrade() else { return };
                    let started = pool.start(&slot).await;
                    drop(pool);
                    let listening = match started {
                        // The pool is stopping (shutdown): not a failure.
                        Ok(None) => false,
                        Ok(Some(mut ready)) => matches!(
                            tokio::time::timeout(START_WAIT, ready.wait_for(|r| r.1)).await,
                            Ok(Ok(_))
                        ),
                        Err(e) => {
                            tracing::error!(slot = slot.index, error = %e, "cannot start warm workerd");
                            progress.send_modify(|p| {
                                p.error.get_or_insert_with(|| e.to_string());
                            });
                            false
                        }
                    };
                    progress.send_modify(|p| {
                        p.ended += 1;
                        p.ready += usize::from(listening);
                    });
                }
            })
            .await;
    });
    let want = first_ready.min(total);
    let Ok(state) = watch
        .wait_for(|p| p.ready >= want || p.ended >= total)
        .await
        .map(|p| p.clone())
    else {
        return Ok(());
    };
    match state.error {
        Some(error) if state.ready < want => Err(SandboxError(error)),
        _ => Ok(()),
    }
}
