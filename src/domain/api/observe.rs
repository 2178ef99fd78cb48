//! What operators watch: the metrics exposition and an honest readiness report.

use crate::domain::dal::Load;
use crate::domain::model::{ChainStatus, Probe, Readiness};
use crate::domain::{DomainError, Executor};

/// A probe older than this no longer proves the chain is reachable.
const PROBE_FRESH_MS: u64 = 30_000;

impl Executor {
    /// Every metric in the Prometheus text format, with the current load.
    pub fn metrics_text(&self) -> String {
        let (slots_busy, slots_total, _) = self.slot_usage();
        let (jobs_queued, jobs_in_flight) = self.load();
        self.ports.metrics.set_load(Load {
            slots_busy,
            slots_total,
            jobs_queued,
            jobs_in_flight,
        });
        self.ports.metrics.render()
    }

    /// Records what the periodic probe of the chain and sandbox found.
    pub fn record_probe(&self, probe: Probe) {
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(probe);
    }

    pub fn readiness(&self) -> Result<Readiness, DomainError> {
        let registered = matches!(
            self.chain_status()?,
            ChainStatus::Serving | ChainStatus::Draining
        );
        let probe = *self.probe.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.ports.clock.now_ms();
        let fresh = probe.filter(|p| now.saturating_sub(p.at_ms) <= PROBE_FRESH_MS);
        let chain_connected = fresh.is_some_and(|p| p.chain_head.is_some());
        let workerd_found = probe.is_some_and(|p| p.workerd_found);
        // The cursor is the first block not yet handled: head + 1 - cursor blocks are behind.
        let head_lag = fresh
            .and_then(|p| p.chain_head)
            .zip(self.ports.store.cursor()?)
            .map(|(head, cursor)| (head + 1).saturating_sub(cursor));
        let store_failure = self.store_failure();
        let follower_behind =
            registered && head_lag.is_some_and(|lag| lag > self.settings.max_head_lag_blocks);
        let follower_problem = match (store_failure, head_lag) {
            (Some(reason), _) => Some(format!("the store fails: {reason}")),
            (None, Some(lag)) if follower_behind => Some(format!(
                "the follower is {lag} blocks behind the chain head (at most {} allowed)",
                self.settings.max_head_lag_blocks
            )),
            _ => None,
        };
        let follower_ok = follower_problem.is_none();
        Ok(Readiness {
            registered,
            chain_connected,
            cgroups_enforced: self.ports.slots.enforced(),
            workerd_found,
            follower_ok,
            head_lag,
            follower_problem,
            ready: registered && chain_connected && workerd_found && follower_ok,
        })
    }
}
