//! Prometheus metrics (the `prometheus` crate): the `Metrics` port the domain reports to, plus
//! the chain gauges the composition root's probe sets. Rendered in the text exposition format.

use std::collections::HashSet;
use std::sync::Mutex;

use ethers::types::{Address, U256};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::domain::dal::{ChainSample, JobEnd, Load, Metrics, Revert};
use crate::domain::model::{ErrorCode, Readiness};

/// How many job owners get a label of their own in `executor_gas_burner_outputs_total`: the first
/// this many distinct owners seen burning gas; later ones count under `job_owner="other"` (the
/// log names every one). An attacker with many owner contracts cannot grow the series unbounded.
pub const MAX_GAS_BURNER_LABELS: usize = 100;
/// The `job_owner` label of the owners past `MAX_GAS_BURNER_LABELS`.
pub const OTHER_JOB_OWNERS: &str = "other";

/// Latency buckets, seconds: from a warm echo job to a whole window.
const BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct PromMetrics {
    registry: Registry,
    jobs_executed: IntCounterVec,
    jobs_finished: IntCounterVec,
    execution_seconds: Histogram,
    end_to_end_seconds: Histogram,
    oom_kills: IntCounter,
    outputs_reverted: IntCounterVec,
    slashed: IntCounter,
    gas_spent: IntCounter,
    gas_burners: IntCounterVec,
    /// The job owners with a label of their own (at most `MAX_GAS_BURNER_LABELS`).
    gas_burner_owners: Mutex<HashSet<Address>>,
    slots_busy: IntGauge,
    slots_total: IntGauge,
    jobs_queued: IntGauge,
    jobs_in_flight: IntGauge,
    job_capacity: IntGauge,
    ready: IntGauge,
    registered: IntGauge,
    workerd_found: IntGauge,
    cgroups_enforced: IntGauge,
    chain_head_lag: IntGauge,
    pending_transactions: IntGauge,
    gas_balance: Gauge,
    output_cost: Gauge,
    gas_nonce: IntGauge,
    gas_pending_nonce: IntGauge,
    chain_up: IntGauge,
    enclave_refused: IntGauge,
    store_errors: IntCounter,
    store_failing: IntGauge,
}

fn ether(wei: U256) -> f64 {
    // f64 is plenty for an amount shown in ether.
    ethers::utils::format_ether(wei).parse().unwrap_or(f64::NAN)
}

fn int(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

fn code_label(code: Option<ErrorCode>) -> String {
    code.map(|c| c.as_u8().to_string())
        .unwrap_or_else(|| "none".into())
}

impl PromMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("executor".into()), None)?;
        macro_rules! register {
            ($metric:expr) => {{
                let metric = $metric;
                registry.register(Box::new(metric.clone()))?;
                metric
            }};
        }
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
        };
        let metrics = Self {
            jobs_executed: register!(IntCounterVec::new(
                Opts::new("jobs_executed_total", "Jobs run in the sandbox, by error code"),
                &["error_code"],
            )?),
            jobs_finished: register!(IntCounterVec::new(
                Opts::new(
                    "jobs_finished_total",
                    "Selected jobs that ended: outcome confirmed (our output on chain) or abandoned, by error code"
                ),
                &["outcome", "error_code"],
            )?),
            execution_seconds: register!(histogram(
                "job_execution_seconds",
                "Execution time of a job in the sandbox (the output's totalTime)"
            )?),
            end_to_end_seconds: register!(histogram(
                "job_end_to_end_seconds",
                "From the job's creation block to its end (output confirmed, or abandoned)"
            )?),
            oom_kills: register!(IntCounter::new(
                "sandbox_oom_kills_total",
                "Jobs killed by the kernel's OOM killer in their slot"
            )?),
            outputs_reverted: register!(IntCounterVec::new(
                Opts::new(
                    "outputs_reverted_total",
                    "Our submitOutput transactions the chain refused, by reason"
                ),
                &["reason"],
            )?),
            slashed: register!(IntCounter::new(
                "slashed_total",
                "Jobs for which the chain slashed this enclave (SlashedOnExecutionTimeout)"
            )?),
            gas_spent: register!(IntCounter::new(
                "gas_spent_total",
                "Gas (units) our mined transactions cost: outputs, reverted ones included, and slashes"
            )?),
            gas_burners: register!(IntCounterVec::new(
                Opts::new(
                    "gas_burner_outputs_total",
                    "Outputs that ran out of gas, by job owner (whose result callback burns gas)"
                ),
                &["job_owner"],
            )?),
            gas_burner_owners: Mutex::new(HashSet::new()),
            slots_busy: register!(IntGauge::new("slots_busy", "Job slots in use")?),
            slots_total: register!(IntGauge::new("slots_total", "Job slots in all")?),
            jobs_queued: register!(IntGauge::new("jobs_queued", "Jobs waiting for a slot")?),
            jobs_in_flight: register!(IntGauge::new(
                "jobs_in_flight",
                "Jobs running or submitting their output"
            )?),
            job_capacity: register!(IntGauge::new(
                "job_capacity",
                "Jobs announced on registration: how many the chain may give at once"
            )?),
            ready: register!(IntGauge::new(
                "ready",
                "1 when registered, the chain is connected and workerd is found"
            )?),
            registered: register!(IntGauge::new(
                "registered",
                "1 when registered on chain (serving or draining)"
            )?),
            workerd_found: register!(IntGauge::new(
                "workerd_found",
                "1 when the workerd binary exists and is executable"
            )?),
            cgroups_enforced: register!(IntGauge::new(
                "cgroups_enforced",
                "1 when the slots' cgroup limits are applied"
            )?),
            chain_head_lag: register!(IntGauge::new(
                "chain_head_lag_blocks",
                "Blocks between the chain head and the first block not yet handled"
            )?),
            pending_transactions: register!(IntGauge::new(
                "pending_transactions",
                "Transactions sent and not yet finished"
            )?),
            gas_balance: register!(Gauge::new(
                "gas_balance_ether",
                "Balance of the gas account, ether"
            )?),
            output_cost: register!(Gauge::new(
                "output_cost_ether",
                "What one output transaction costs at the node's gas price now, ether"
            )?),
            gas_nonce: register!(IntGauge::new(
                "gas_account_nonce",
                "Nonce of the gas account in the latest block (transactions mined)"
            )?),
            gas_pending_nonce: register!(IntGauge::new(
                "gas_account_pending_nonce",
                "Nonce of the gas account counting the node's pool (transactions sent)"
            )?),
            chain_up: register!(IntGauge::new(
                "chain_up",
                "1 when the RPC node answered the last probe"
            )?),
            enclave_refused: register!(IntGauge::new(
                "enclave_refused",
                "1 when the chain refused an output because our enclave key is not (or no longer) verified: no jobs are taken"
            )?),
            store_errors: register!(IntCounter::new(
                "store_errors_total",
                "Store failures while chain logs were handled (each is retried)"
            )?),
            store_failing: register!(IntGauge::new(
                "store_failing",
                "1 while handling chain logs is stuck on a failing store (not ready)"
            )?),
            registry,
        };
        // Every known label value starts at 0, so that `increase()` sees the first event.
        for code in (0..=5u8).filter_map(ErrorCode::from_u8) {
            let code = code_label(Some(code));
            metrics.jobs_executed.with_label_values(&[code.as_str()]);
            metrics
                .jobs_finished
                .with_label_values(&["confirmed", code.as_str()]);
        }
        metrics
            .jobs_finished
            .with_label_values(&["abandoned", "none"]);
        for reason in Revert::NAMES {
            metrics.outputs_reverted.with_label_values(&[reason]);
        }
        Ok(metrics)
    }
}

impl Metrics for PromMetrics {
    /// What the periodic probe learned about the chain.
    fn set_chain(&self, sample: ChainSample) {
        self.chain_up.set(i64::from(sample.chain_up));
        if let Some(lag) = sample.head_lag_blocks {
            self.chain_head_lag.set(int(lag));
        }
        self.pending_transactions
            .set(int(sample.pending_transactions));
        if let Some(wei) = sample.gas_balance_wei {
            self.gas_balance.set(ether(wei));
        }
        if let Some(wei) = sample.output_cost_wei {
            self.output_cost.set(ether(wei));
        }
        if let Some(nonce) = sample.gas_nonce {
            self.gas_nonce.set(int(nonce));
        }
        if let Some(nonce) = sample.gas_pending_nonce {
            self.gas_pending_nonce.set(int(nonce));
        }
    }

    fn job_executed(&self, error_code: ErrorCode, execution_ms: u64) {
        self.jobs_executed
            .with_label_values(&[code_label(Some(error_code)).as_str()])
            .inc();
        self.execution_seconds.observe(execution_ms as f64 / 1000.0);
    }

    fn job_finished(&self, end: JobEnd, error_code: Option<ErrorCode>, end_to_end_ms: u64) {
        let outcome = match end {
            JobEnd::Confirmed => "confirmed",
            JobEnd::Abandoned => "abandoned",
        };
        self.jobs_finished
            .with_label_values(&[outcome, code_label(error_code).as_str()])
            .inc();
        self.end_to_end_seconds
            .observe(end_to_end_ms as f64 / 1000.0);
    }

    fn sandbox_oom_kill(&self) {
        self.oom_kills.inc();
    }

    fn output_reverted(&self, revert: &Revert) {
        self.outputs_reverted
            .with_label_values(&[revert.name()])
            .inc();
    }

    fn enclave_slashed(&self) {
        self.slashed.inc();
    }

    fn enclave_refused(&self, refused: bool) {
        self.enclave_refused.set(i64::from(refused));
    }

    fn gas_spent(&self, gas: u64) {
        self.gas_spent.inc_by(gas);
    }

    fn gas_burner(&self, job_owner: Address) {
        let label = {
            let mut owners = self
                .gas_burner_owners
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if owners.contains(&job_owner) || owners.len() < MAX_GAS_BURNER_LABELS {
                owners.insert(job_owner);
                format!("{job_owner:?}")
            } else {
                OTHER_JOB_OWNERS.to_string()
            }
        };
        self.gas_burners.with_label_values(&[label.as_str()]).inc();
    }

    fn store_error(&self) {
        self.store_errors.inc();
    }

    fn set_store_failing(&self, failing: bool) {
        self.store_failing.set(i64::from(failing));
    }

    fn set_load(&self, load: Load) {
        let int = |n: usize| int(n as u64);
        self.slots_busy.set(int(load.slots_busy));
        self.slots_total.set(int(load.slots_total));
        self.jobs_queued.set(int(load.jobs_queued));
        self.jobs_in_flight.set(int(load.jobs_in_flight));
        self.job_capacity.set(int(load.job_capacity));
    }

    fn set_readiness(&self, readiness: Readiness) {
        self.ready.set(i64::from(readiness.ready));
        self.registered.set(i64::from(readiness.registered));
        self.workerd_found.set(i64::from(readiness.workerd_found));
        self.cgroups_enforced
            .set(i64::from(readiness.cgroups_enforced));
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot render the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `executor_gas_burner_outputs_total` series: job owner label → count.
    fn burner_series(metrics: &PromMetrics) -> Vec<(String, String)> {
        metrics
            .render()
            .lines()
            .filter_map(|line| line.strip_prefix("executor_gas_burner_outputs_total{job_owner=\""))
            .filter_map(|rest| rest.split_once("\"} "))
            .map(|(owner, count)| (owner.to_string(), count.to_string()))
            .collect()
    }

    #[test]
    fn gas_burner_owners_past_the_bound_count_under_other() {
        let metrics = PromMetrics::new().unwrap();
        let owner = |i: usize| Address::from_low_u64_be(i as u64 + 1);
        for i in 0..MAX_GAS_BURNER_LABELS + 50 {
            metrics.gas_burner(owner(i));
        }
        // An owner with a label keeps it; a later one goes on counting under "other".
        metrics.gas_burner(owner(0));
        metrics.gas_burner(owner(MAX_GAS_BURNER_LABELS + 60));
        let series = burner_series(&metrics);
        assert_eq!(series.len(), MAX_GAS_BURNER_LABELS + 1, "{series:?}");
        let count = |label: &str| {
            series
                .iter()
                .find(|(owner, _)| owner == label)
                .map(|(_, count)| count.clone())
        };
        assert_eq!(count(&format!("{:?}", owner(0))).as_deref(), Some("2"));
        assert_eq!(
            count(&format!("{:?}", owner(MAX_GAS_BURNER_LABELS - 1))).as_deref(),
            Some("1")
        );
        assert_eq!(count(&format!("{:?}", owner(MAX_GAS_BURNER_LABELS))), None);
        assert_eq!(count(OTHER_JOB_OWNERS).as_deref(), Some("51"));
    }
}
