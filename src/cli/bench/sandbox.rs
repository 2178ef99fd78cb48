//! Part 1 of the bench: sandbox latency of a trivial and a CPU-bound job in one slot, without
//! a chain.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serverless_executor::config::{default_workerd_path, EgressPolicy, SandboxConfig, SandboxMode};
use serverless_executor::domain::dal::{RunResult, Sandbox, Slots};
use serverless_executor::effects::cgroup::{parse_cpu_stat, CgroupSlots};
use serverless_executor::effects::workerd::WorkerdSandbox;

use super::{pct, ECHO_JOB, FACTORS_JOB, LARGE_NUMBER, LARGE_NUMBER_FACTORS};

pub fn sandbox_config(mode: SandboxMode, work_dir: &Path, name: &str) -> SandboxConfig {
    SandboxConfig {
        workerd_path: std::env::var_os("EXECUTOR_WORKERD_PATH")
            .map(Into::into)
            .unwrap_or_else(default_workerd_path),
        mode,
        slot_memory_bytes: 100 * 1024 * 1024,
        slot_cpu_percent: 50,
        output_limit_bytes: 20480,
        egress: EgressPolicy::Public,
        cgroup_parent: format!("serverless-executor-bench-{}-{name}", std::process::id()),
        work_dir: work_dir.join(format!("sandbox-{name}")),
        // Like the executor: workerd as EXECUTOR_SANDBOX_UID/GID when both are set.
        sandbox_user: std::env::var("EXECUTOR_SANDBOX_UID")
            .ok()
            .and_then(|u| u.parse().ok())
            .zip(
                std::env::var("EXECUTOR_SANDBOX_GID")
                    .ok()
                    .and_then(|g| g.parse().ok()),
            ),
        hidden_paths: Vec::new(),
        allow_unlimited_slots: true,
    }
}

pub async fn sandbox_latency(
    mode: SandboxMode,
    runs: usize,
    gap_ms: u64,
    work_dir: &Path,
) -> Result<()> {
    let config = sandbox_config(mode, work_dir, &format!("{mode:?}").to_lowercase());
    let sandbox = WorkerdSandbox::new(&config)?;
    let slots = CgroupSlots::new(1, &config);
    let slot = slots.try_acquire().ok_or_else(|| anyhow!("no slot"))?;
    sandbox.prewarm(std::slice::from_ref(&slot), 1).await?;
    let cases: [(&str, &str, &[u8], &[u8]); 2] = [
        ("echo (64 B)", ECHO_JOB, &[b'x'; 64], &[b'x'; 64]),
        (
            "factorise 10000014798391",
            FACTORS_JOB,
            LARGE_NUMBER.as_bytes(),
            LARGE_NUMBER_FACTORS.as_bytes(),
        ),
    ];
    for (name, code, input, expected) in cases {
        // One run first, not counted (page cache, first spawn).
        sandbox.run(&slot, code, input, None, 30_000).await?;
        let mut total = Vec::with_capacity(runs);
        let mut ready = Vec::with_capacity(runs);
        let (mut throttled_runs, mut burst_runs, mut prepared_runs) = (0, 0, 0);
        for _ in 0..runs {
            if gap_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(gap_ms)).await;
            }
            let before = cpu_stat(&slots, slot.index);
            let report = sandbox
                .run_detailed(&slot, code, input, None, 30_000)
                .await?;
            let after = cpu_stat(&slots, slot.index);
            if after.throttled > before.throttled {
                throttled_runs += 1;
            }
            if after.bursts > before.bursts {
                burst_runs += 1;
            }
            if report.prepared {
                prepared_runs += 1;
            }
            if report.result != RunResult::Output(expected.to_vec()) {
                bail!("{mode:?} {name}: unexpected result {:?}", report.result);
            }
            total.push(report.elapsed.as_secs_f64() * 1000.0);
            ready.push(report.ready.unwrap_or_default().as_secs_f64() * 1000.0);
        }
        let mean = total.iter().sum::<f64>() / total.len() as f64;
        println!(
            "| {mode:?} | {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {prepared_runs} of {runs} | {} |",
            pct(&mut total, 0.5),
            pct(&mut total, 0.99),
            pct(&mut total, 1.0),
            mean,
            pct(&mut ready, 0.5),
            if slots.enforced() {
                format!("{throttled_runs} of {runs} | {burst_runs} of {runs}")
            } else {
                "no cgroup | no cgroup".into()
            }
        );
    }
    slots.release(slot);
    drop(sandbox);
    slots.cleanup();
    Ok(())
}

/// What the slot's `cpu.stat` counts so far.
#[derive(Default)]
struct CpuStat {
    /// CFS periods in which the quota ran out.
    throttled: u64,
    /// Periods that used quota carried over (CFS burst; 0 where the kernel lacks it).
    bursts: u64,
}

fn cpu_stat(slots: &CgroupSlots, index: usize) -> CpuStat {
    let mut stat = CpuStat::default();
    for text in slots
        .slot_dirs(index)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cpu.stat")).ok())
    {
        stat.throttled += parse_cpu_stat(&text, "nr_throttled").unwrap_or(0);
        stat.bursts += parse_cpu_stat(&text, "nr_bursts").unwrap_or(0);
    }
    stat
}
