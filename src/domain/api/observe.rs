//! What operators watch: the metrics exposition and an honest readiness report.

use crate::domain::dal::Load;
use crate::domain::model::{ChainStatus, Probe, Readiness};
use crate::domain::{DomainError, Executor};

/// A probe older than this no longer proves the chain is reachable.
const PROBE_FRESH_MS: u64 = 30_000;

impl Executor {
    /// Every metric in the Prometheus text format, with the current load and readiness.
    pub fn metrics_text(&self) -> String {
        let (slots_busy, slots_total, _) = self.slot_usage();
        let (jobs_queued, jobs_in_flight) = self.load();
        self.ports.metrics.set_load(Load {
            slots_busy,
            slots_total,
            jobs_queued,
            jobs_in_flight,
            job_capacity: self.job_capacity(),
        });
        match self.readiness() {
            Ok(readiness) => self.ports.metrics.set_readiness(readiness),
            // Not ready as far as anyone can tell; the store error is logged where it matters.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read readiness for the metrics");
                self.ports.metrics.set_readiness(Readiness {
                    registered: false,
                    chain_connected: false,
                    cgroups_enforced: self.ports.slots.enforced(),
                    unlimited_slots_allowed: self.settings.allow_unlimited_slots,
                    workerd_found: false,
                    enclave_verified: self.enclave_refusal().is_none(),
                    follower_ok: false,
                    head_lag: None,
                    follower_problem: Some(format!("the store cannot be read: {e}")),
                    ready: false,
                });
            }
        }
        self.ports.metrics.render()
    }

    /// Jobs announced on registration (one per slot unless configured).
    pub fn job_capacity(&self) -> usize {
        self.settings
            .job_capacity
            .unwrap_or_else(|| self.ports.slots.capacity())
    }

    /// The last probe of the chain and sandbox, if any ran yet.
    pub fn last_probe(&self) -> Option<Probe> {
        *self.probe.lock().unwrap_or_else(|p| p.into_inner())
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
        let cgroups_enforced = self.ports.slots.enforced();
        let unlimited_slots_allowed = self.settings.allow_unlimited_slots;
        let enclave_verified = self.enclave_refusal().is_none();
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
            cgroups_enforced,
            unlimited_slots_allowed,
            workerd_found,
            enclave_verified,
            follower_ok,
            head_lag,
            follower_problem,
            ready: registered
                && chain_connected
                && workerd_found
                && enclave_verified
                && follower_ok
                && (cgroups_enforced || unlimited_slots_allowed),
        })
    }
}
