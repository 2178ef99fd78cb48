//! The chain listener: once the chain should be followed, runs the log follower and hands every
//! log to the domain in order, until deregistration, shutdown or a store that keeps failing.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::domain::api::FollowVerdict;
use crate::domain::Executor;
use crate::effects::chain::follower::REORG_MEMORY_BLOCKS;
use crate::effects::chain::{FollowerItem, LogFollower};

use super::stopped;

/// Follows the chain once the operator asked for the registration message (or an earlier run
/// did), from the cursor (or `start_block` on a fresh store), until deregistration or shutdown.
/// Sends on `fatal` why, when a log cannot be handled (the executor should exit).
pub async fn follow(
    executor: Arc<Executor>,
    follower: LogFollower,
    start_block: Option<u64>,
    mut shutdown: watch::Receiver<bool>,
    fatal: watch::Sender<Option<String>>,
) {
    if !executor.should_follow_at_start() {
        let mut requested = executor.follow_requested();
        tokio::select! {
            _ = requested.wait_for(|r| *r) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
    // The last blocks before the cursor are read again: a reorg while the executor was down
    // may have given a journalled job's id to another job (the same job again changes nothing).
    let from_block = match executor.chain_cursor() {
        Ok(cursor) => cursor
            .map(|cursor| cursor.saturating_sub(REORG_MEMORY_BLOCKS))
            .or(start_block),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the chain cursor; not following the chain");
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let follow = tokio::spawn(follower.run(from_block, tx));
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = stopped(&mut shutdown) => None,
        };
        let Some(item) = item else { break };
        // A failing store is retried with backoff (not ready meanwhile), within a bound.
        let handled = executor
            .with_store_retry(|| match &item {
                FollowerItem::Log(log) => executor.on_chain_event(log.clone()),
                FollowerItem::Synced { next_block } => executor
                    .on_chain_synced(*next_block)
                    .map(|_| FollowVerdict::Continue),
                FollowerItem::Rewound { next_block } => executor
                    .on_chain_rewound(*next_block)
                    .map(|_| FollowVerdict::Continue),
            })
            .await;
        match handled {
            Ok(FollowVerdict::Continue) => {}
            Ok(FollowVerdict::Stop) => break,
            Err(e) => {
                // The log is not marked handled: it is read again after the restart.
                tracing::error!(error = %e, "cannot handle a chain log; the executor stops so that it is restarted");
                fatal.send_replace(Some(format!("cannot handle a chain log: {e}")));
                break;
            }
        }
    }
    follow.abort();
}
