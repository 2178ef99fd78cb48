//! Lets an adapter's synchronous call that may wait for the disk (a flush, a long scan) run
//! without holding up the async worker it was called on.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`. On a multi-thread runtime's worker, tokio first hands the worker's other tasks to
/// another thread (`block_in_place`), so every other job goes on while `f` waits; anywhere else
/// (a blocking thread, a current-thread runtime, no runtime) `f` just runs.
pub(crate) fn off_the_worker<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_call_that_waits_leaves_the_only_worker_to_the_other_tasks() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            // Waits (as a flush waits for the disk) until the other task has run.
            let waiting = tokio::spawn(async move {
                off_the_worker(|| rx.recv_timeout(Duration::from_secs(10)).is_ok())
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let other = tokio::spawn(async move { tx.send(()).unwrap() });
            other.await.unwrap();
            assert!(
                waiting.await.unwrap(),
                "the other task ran while the call waited"
            );
        });
        // Elsewhere it just runs.
        assert_eq!(off_the_worker(|| 7), 7);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { assert_eq!(off_the_worker(|| 8), 8) });
    }
}
