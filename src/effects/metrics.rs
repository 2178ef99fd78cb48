//! Prometheus metrics (the `prometheus` crate): the `Metrics` port the domain reports to, plus
//! the chain gauges the composition root's probe sets. Rendered in the text exposition format.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::domain::dal::{JobEnd, Load, Metrics};
use crate::domain::model::ErrorCode;

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
    slots_busy: IntGauge,
    slots_total: IntGauge,
    jobs_queued: IntGauge,
    jobs_in_flight: IntGauge,
    chain_head_lag: IntGauge,
    pending_transactions: IntGauge,
    gas_balance: Gauge,
    chain_up: IntGauge,
    store_errors: IntCounter,
    store_failing: IntGauge,
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
        Ok(Self {
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
            slots_busy: register!(IntGauge::new("slots_busy", "Job slots in use")?),
            slots_total: register!(IntGauge::new("slots_total", "Job slots in all")?),
            jobs_queued: register!(IntGauge::new("jobs_queued", "Jobs waiting for a slot")?),
            jobs_in_flight: register!(IntGauge::new(
                "jobs_in_flight",
                "Jobs running or submitting their output"
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
            chain_up: register!(IntGauge::new(
                "chain_up",
                "1 when the RPC node answered the last probe"
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
        })
    }

    /// What the periodic probe learned about the chain (None: not known this time).
    pub fn set_chain(
        &self,
        chain_up: bool,
        head_lag_blocks: Option<u64>,
        pending_transactions: u64,
        gas_balance_wei: Option<ethers::types::U256>,
    ) {
        self.chain_up.set(i64::from(chain_up));
        if let Some(lag) = head_lag_blocks {
            self.chain_head_lag.set(lag.min(i64::MAX as u64) as i64);
        }
        self.pending_transactions
            .set(pending_transactions.min(i64::MAX as u64) as i64);
        if let Some(wei) = gas_balance_wei {
            // f64 is plenty for a balance shown in ether.
            let ether = ethers::utils::format_ether(wei).parse().unwrap_or(f64::NAN);
            self.gas_balance.set(ether);
        }
    }
}

impl Metrics for PromMetrics {
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

    fn store_error(&self) {
        self.store_errors.inc();
    }

    fn set_store_failing(&self, failing: bool) {
        self.store_failing.set(i64::from(failing));
    }

    fn set_load(&self, load: Load) {
        let int = |n: usize| n.min(i64::MAX as usize) as i64;
        self.slots_busy.set(int(load.slots_busy));
        self.slots_total.set(int(load.slots_total));
        self.jobs_queued.set(int(load.jobs_queued));
        self.jobs_in_flight.set(int(load.jobs_in_flight));
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot render the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
