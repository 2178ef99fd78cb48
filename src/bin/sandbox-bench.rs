//! Latency of one sandboxed run: a trivial echo job run N times through `WorkerdSandbox`,
//! first in an unlimited slot, then in a cgroup slot (100 MiB, 50 % of a core: the defaults),
//! then N runs spread over 4 cgroup slots at once. Prints p50/p99/max per case and the machine.
//!
//! Usage: `cargo run --release --bin sandbox-bench [RUNS]` (or `SANDBOX_BENCH_RUNS`; default 200);
//! `SANDBOX_BENCH_CPU_PERCENT` changes the slots' CPU quota (default 50).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serverless_executor::config::{default_workerd_path, EgressPolicy, SandboxConfig, SandboxMode};
use serverless_executor::domain::dal::{RunResult, Sandbox, Slot, Slots};
use serverless_executor::effects::cgroup::CgroupSlots;
use serverless_executor::effects::workerd::WorkerdSandbox;

const ECHO_JOB: &str =
    "export default { async fetch(request) { return new Response(await request.arrayBuffer()); } };";
const PARALLEL_SLOTS: usize = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runs: usize = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SANDBOX_BENCH_RUNS").ok())
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200)
        .max(1);
    let cpu_percent: u32 = std::env::var("SANDBOX_BENCH_CPU_PERCENT")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50);
    let work_dir = std::env::temp_dir().join(format!("sandbox-bench-{}", std::process::id()));
    let config = SandboxConfig {
        workerd_path: std::env::var_os("EXECUTOR_WORKERD_PATH")
            .map(Into::into)
            .unwrap_or_else(default_workerd_path),
        mode: SandboxMode::Process,
        slot_memory_bytes: 100 * 1024 * 1024,
        slot_cpu_percent: cpu_percent,
        output_limit_bytes: 20480,
        egress: EgressPolicy::Public,
        cgroup_parent: format!("serverless-executor-bench-{}", std::process::id()),
        work_dir: work_dir.clone(),
    };
    let sandbox = Arc::new(WorkerdSandbox::new(&config)?);
    let slots = CgroupSlots::new(PARALLEL_SLOTS, &config);

    println!("workerd:   {}", sandbox.version().await?);
    println!(
        "machine:   {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!(
        "kernel:    {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "cgroups:   {}",
        match slots.version() {
            Some(v) => format!("{v:?}, slots of 100 MiB and {cpu_percent}% of one core"),
            None => format!(
                "not available ({})",
                slots.unenforced_reason().unwrap_or("?")
            ),
        }
    );
    println!("runs:      {runs} per case (echo job, 64-byte input, one workerd process per run)\n");

    let unlimited = Slot {
        index: 0,
        cgroup_procs: Vec::new(),
    };
    let t = sequential(&sandbox, &unlimited, runs).await?;
    report("sequential, no cgroup", &t, None);

    if slots.enforced() {
        let slot = slots
            .try_acquire()
            .ok_or_else(|| anyhow::anyhow!("no slot"))?;
        let t = sequential(&sandbox, &slot, runs).await?;
        report("sequential, cgroup slot", &t, None);
        slots.release(slot);
    } else {
        println!("sequential, cgroup slot: skipped (cgroups not available)");
    }

    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..PARALLEL_SLOTS {
        let slot = slots
            .try_acquire()
            .ok_or_else(|| anyhow::anyhow!("no slot"))?;
        let sandbox = sandbox.clone();
        let share = runs / PARALLEL_SLOTS + usize::from(worker < runs % PARALLEL_SLOTS);
        tasks.push(tokio::spawn(async move {
            let t = sequential(&sandbox, &slot, share).await;
            (slot, t)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let (slot, t) = task.await?;
        all.extend(t?);
        slots.release(slot);
    }
    let wall = started.elapsed();
    report(
        &format!(
            "{PARALLEL_SLOTS} slots at once{}",
            if slots.enforced() { ", cgroup" } else { "" }
        ),
        &all,
        Some(wall),
    );

    slots.cleanup();
    let _ = std::fs::remove_dir(&work_dir);
    Ok(())
}

async fn sequential(
    sandbox: &WorkerdSandbox,
    slot: &Slot,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let input = [b'x'; 64];
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let result = sandbox.run(slot, ECHO_JOB, &input, 30_000).await?;
        times.push(started.elapsed());
        if result != RunResult::Output(input.to_vec()) {
            anyhow::bail!("unexpected result: {result:?}");
        }
    }
    Ok(times)
}

fn report(case: &str, times: &[Duration], wall: Option<Duration>) {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    print!(
        "{case:<28} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms   mean {:>7.1} ms",
        pick(0.5),
        pick(0.99),
        ms[ms.len() - 1],
        mean
    );
    if let Some(wall) = wall {
        print!("   {:.1} runs/s", ms.len() as f64 / wall.as_secs_f64());
    }
    println!();
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
