//! The `bench` subcommand: measures, on this machine and for each sandbox mode, (1) sandbox
//! latency of a trivial and a CPU-bound job, (2) end-to-end job latency on an anvil devnet split
//! into stages, (3) throughput at job capacity 20 with the executor's peak RSS and CPU time.
//! The executor runs as a child process (this binary, `serve`) so that its memory and CPU are
//! its own; its JSON log's `job_stage` marks give the stage boundaries. This module owns the
//! arguments and the orchestration (and the printed tables); the parts live beside it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serverless_executor::config::SandboxMode;
use serverless_executor::domain::stage::Stage;
use serverless_executor::effects::cgroup::CgroupSlots;
use serverless_executor::effects::workerd::WorkerdSandbox;

mod child;
mod devnet;
mod procfs;
mod sandbox;
mod scale;
mod stages;

use procfs::{cores, cpu_model, kernel_release, load_average, mem_total_mib};
use sandbox::{sandbox_config, sandbox_latency};

/// Answers with its input.
const ECHO_JOB: &str =
    "export default { async fetch(request) { return new Response(await request.arrayBuffer()); } };";
/// Prime factorisation by trial division (the devnet's demo job).
const FACTORS_JOB: &str = include_str!("../../../examples/factors.js");
/// 3162277 × 3162283: about 3.2 million trial divisions.
const LARGE_NUMBER: &str = r#"{"num":10000014798391}"#;
const LARGE_NUMBER_FACTORS: &str = "3162277,3162283";
/// The stage marks of one job, in order (`job_stage` events of the executor's log).
const STAGES: &[(Stage, &str)] = &[
    (Stage::Seen, "createJob mined + event delivered"),
    (Stage::CodeFetched, "queue + code fetch"),
    (Stage::SandboxReady, "sandbox start"),
    (Stage::Executed, "execution"),
    (Stage::Signed, "signing"),
    (Stage::Sent, "transaction send"),
    (Stage::Mined, "mining (receipt)"),
];

#[derive(Args)]
pub struct BenchArgs {
    /// Sandbox runs per job kind and mode.
    #[arg(long, default_value_t = 200)]
    sandbox_runs: usize,
    /// Idle time between sandbox runs, ms. 0 runs them back to back, which keeps the slot
    /// busy at its CPU quota; an executor's slots mostly idle between jobs.
    #[arg(long, default_value_t = 0)]
    sandbox_gap_ms: u64,
    /// Jobs of the end-to-end latency part, one at a time.
    #[arg(long, default_value_t = 100)]
    e2e_jobs: usize,
    /// Jobs of the throughput part, created as fast as the chain takes them.
    #[arg(long, default_value_t = 500)]
    throughput_jobs: usize,
    /// Job capacity (slots) of the executor in the devnet parts.
    #[arg(long, default_value_t = 20)]
    capacity: usize,
    /// Sandbox modes to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "process,warm")]
    modes: Vec<String>,
    /// Measure only the sandbox (no devnet).
    #[arg(long)]
    sandbox_only: bool,
    /// Run the scale benchmark instead: a large journal, the job API and a job under a flood.
    #[arg(long)]
    scale: bool,
    /// Jobs journalled for the scale benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    scale_jobs: u64,
    /// Jobs run one at a time for the scale benchmark's latency, idle and under the flood each.
    #[arg(long, default_value_t = 20)]
    scale_e2e_jobs: usize,
    /// The executor binary the devnet parts start (default: this one), e.g. an older build to
    /// compare with in the same conditions.
    #[arg(long)]
    executor: Option<std::path::PathBuf>,
}

pub async fn run_bench(args: BenchArgs) -> Result<()> {
    let modes = args
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "process" => Ok(SandboxMode::Process),
            "warm" => Ok(SandboxMode::Warm),
            other => Err(anyhow!("--modes: unknown mode {other} (process or warm)")),
        })
        .collect::<Result<Vec<_>>>()?;
    if args.sandbox_runs == 0 || args.e2e_jobs == 0 || args.throughput_jobs == 0 {
        bail!("--sandbox-runs, --e2e-jobs and --throughput-jobs must be at least 1");
    }
    if !(1..=1000).contains(&args.capacity) {
        bail!("--capacity must be 1..=1000");
    }
    if let Some(path) = &args.executor {
        child::use_executor(path.clone());
    }
    let started = Instant::now();
    let work_dir = std::env::temp_dir().join(format!("executor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let result = if args.scale {
        scale::run(&args, &work_dir).await
    } else {
        bench(&args, &modes, &work_dir).await
    };
    let _ = std::fs::remove_dir_all(&work_dir);
    println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
    result
}

async fn bench(args: &BenchArgs, modes: &[SandboxMode], work_dir: &Path) -> Result<()> {
    let config = sandbox_config(SandboxMode::Process, work_dir, "probe");
    let probe = WorkerdSandbox::new(&config)?;
    let slots = CgroupSlots::new(1, &config);
    println!("# serverless-executor bench");
    println!("workerd:   {}", probe.version().await?);
    println!(
        "machine:   {} cores, {}, {} MiB RAM",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        mem_total_mib()
    );
    println!(
        "load:      {} (1, 5, 15 min, before the bench)",
        load_average()
    );
    println!("kernel:    {}", kernel_release());
    println!(
        "cgroups:   {}",
        match slots.version() {
            Some(v) => format!("{v:?}; slots of 100 MiB and 50% of one core (the defaults)"),
            None => format!(
                "not available ({}): runs are not limited",
                slots.unenforced_reason().unwrap_or("?")
            ),
        }
    );
    println!("build:     {}", build_kind());
    drop(slots);

    println!(
        "\n## 1. Sandbox latency ({} runs per row, one at a time, in one slot, {} ms apart)\n",
        args.sandbox_runs, args.sandbox_gap_ms
    );
    println!(
        "| mode | job | p50 | p99 | max | mean | ready p50 | runs on a prepared isolate | runs throttled | runs on burst |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for mode in modes {
        sandbox_latency(*mode, args.sandbox_runs, args.sandbox_gap_ms, work_dir).await?;
    }
    if args.sandbox_only {
        return Ok(());
    }

    let mut e2e = Vec::new();
    for mode in modes {
        e2e.push((*mode, devnet::devnet_part(*mode, args, work_dir).await?));
    }
    println!(
        "\n## 2. End-to-end latency on the devnet ({} jobs one at a time, echo job, anvil automine)\n",
        args.e2e_jobs
    );
    println!("From just before `createJob` is sent to the executor holding the receipt of its");
    println!("`submitOutput`. Stages from the executor's `job_stage` log marks.\n");
    print!("| stage |");
    for (mode, _) in &e2e {
        print!(" {mode:?} p50 | {mode:?} p99 |");
    }
    println!();
    print!("|---|");
    for _ in &e2e {
        print!("---|---|");
    }
    println!();
    let rows = STAGES.len() + 1;
    for row in 0..rows {
        let name = match STAGES.get(row) {
            Some((_, name)) => *name,
            None => "**total**",
        };
        print!("| {name} |");
        for (_, part) in &e2e {
            let mut ms = part.stage_ms[row].clone();
            print!(
                " {:.1} ms | {:.1} ms |",
                pct(&mut ms, 0.5),
                pct(&mut ms, 0.99)
            );
        }
        println!();
    }
    print!("| executor's own part (event seen → output mined) |");
    for (_, part) in &e2e {
        let mut ms = part.internal_ms.clone();
        print!(
            " {:.1} ms | {:.1} ms |",
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.99)
        );
    }
    println!();
    println!(
        "\n### First jobs after a start (the executor's own part: event seen → output mined)\n"
    );
    println!("| mode | first job after start | restart to serving | recovered jobs | recovered: first | recovered: p50 | recovered: max | restart to all mined |");
    println!("|---|---|---|---|---|---|---|---|");
    for (mode, part) in &e2e {
        let r = &part.restart;
        let mut ms = r.internal_ms.clone();
        let first = ms.first().copied().unwrap_or(f64::NAN);
        println!(
            "| {mode:?} | {:.1} ms | {:.0} ms | {} | {first:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms |",
            part.first_job_ms,
            r.start.as_secs_f64() * 1000.0,
            r.jobs,
            pct(&mut ms, 0.5),
            pct(&mut ms, 1.0),
            r.all_mined.as_secs_f64() * 1000.0
        );
    }
    println!(
        "\n## 3. Throughput (capacity {}, {} echo jobs created as fast as the chain takes them)\n",
        args.capacity, args.throughput_jobs
    );
    println!("| mode | jobs/s | wall | executor peak RSS | executor CPU | workerd peak RSS (all) | anvil CPU | machine CPU busy | createJob retries | executor CPU per job |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let share = |cpu: Duration, wall: Duration| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    for (mode, part) in &e2e {
        let t = &part.throughput;
        println!(
            "| {mode:?} | {:.1} | {:.1} s | {:.1} MiB | {:.2} s ({:.0}% of a core) | {:.0} MiB | {:.2} s ({:.0}%) | {:.1} s ({:.0}% of {} cores) | {} | {:.2} ms |",
            t.jobs as f64 / t.wall.as_secs_f64(),
            t.wall.as_secs_f64(),
            t.peak_rss as f64 / 1048576.0,
            t.cpu.as_secs_f64(),
            share(t.cpu, t.wall),
            t.peak_workerd_rss as f64 / 1048576.0,
            t.anvil_cpu.as_secs_f64(),
            share(t.anvil_cpu, t.wall),
            t.machine_cpu.as_secs_f64(),
            share(t.machine_cpu, t.wall) / cores() as f64,
            cores(),
            t.retries,
            t.cpu.as_secs_f64() * 1000.0 / t.jobs as f64
        );
    }
    Ok(())
}

/// What kind of build this is, for the tables' heading.
fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug (use --release for representative figures)"
    } else {
        "release"
    }
}

/// The `q` quantile (nearest rank) of `v`, sorting it.
fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
