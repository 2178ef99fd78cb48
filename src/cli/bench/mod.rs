//! The `bench` subcommand: measures, on this machine and for each sandbox mode, (1) sandbox
//! latency of a trivial and a CPU-bound job, (2) end-to-end job latency on an anvil devnet split
//! into stages, (3) throughput at job capacity 20 with the executor's peak RSS and CPU time.
//! The executor runs as a child process (this binary, `serve`) so that its memory and CPU are
//! its own; its JSON log's `job_stage` marks give the stage boundaries.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ethers::contract::EthEvent;
use ethers::providers::Middleware;
use ethers::types::{Address, H256, U256};
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::devnet::{
    wait_for_chain_status, Devnet, DevnetOptions, ExecutorOptions,
};
use serverless_executor::client::jobs::save_code;
use serverless_executor::config::{default_workerd_path, EgressPolicy, SandboxConfig, SandboxMode};
use serverless_executor::domain::dal::{RunResult, Sandbox, Slots};
use serverless_executor::effects::cgroup::CgroupSlots;
use serverless_executor::effects::chain::bindings::{JobCreatedFilter, Jobs};
use serverless_executor::effects::signer::EnclaveKey;
use serverless_executor::effects::workerd::WorkerdSandbox;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

mod scale;

/// Answers with its input.
const ECHO_JOB: &str =
    "export default { async fetch(request) { return new Response(await request.arrayBuffer()); } };";
/// Prime factorisation by trial division (the devnet's demo job).
const FACTORS_JOB: &str = include_str!("../../../examples/factors.js");
/// 3162277 × 3162283: about 3.2 million trial divisions.
const LARGE_NUMBER: &str = r#"{"num":10000014798391}"#;
const LARGE_NUMBER_FACTORS: &str = "3162277,3162283";
/// The stage marks of one job, in order (`job_stage` events of the executor's log).
const STAGES: &[(&str, &str)] = &[
    ("seen", "createJob mined + event delivered"),
    ("code_fetched", "queue + code fetch"),
    ("sandbox_ready", "sandbox start"),
    ("executed", "execution"),
    ("signed", "signing"),
    ("sent", "transaction send"),
    ("mined", "mining (receipt)"),
];

#[derive(Args)]
pub struct BenchArgs {
    /// Sandbox runs per job kind and mode.
    #[arg(long, default_value_t = 200)]
    sandbox_runs: usize,
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
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
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
            Some(v) => format!("{v:?}; slots of 100 MiB and 50% of one core (the defaults)"),
            None => format!(
                "not available ({}): runs are not limited",
                slots.unenforced_reason().unwrap_or("?")
            ),
        }
    );
    println!(
        "build:     {}",
        if cfg!(debug_assertions) {
            "debug (use --release for representative figures)"
        } else {
            "release"
        }
    );
    drop(slots);

    println!(
        "\n## 1. Sandbox latency ({} runs per row, one at a time, in one slot)\n",
        args.sandbox_runs
    );
    println!("| mode | job | p50 | p99 | max | mean | ready p50 | runs throttled |");
    println!("|---|---|---|---|---|---|---|---|");
    for mode in modes {
        sandbox_latency(*mode, args.sandbox_runs, work_dir).await?;
    }
    if args.sandbox_only {
        return Ok(());
    }

    let mut e2e = Vec::new();
    for mode in modes {
        e2e.push((*mode, devnet_part(*mode, args, work_dir).await?));
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
    println!(
        "\n## 3. Throughput (capacity {}, {} echo jobs created as fast as the chain takes them)\n",
        args.capacity, args.throughput_jobs
    );
    println!("| mode | jobs/s | wall | executor peak RSS | executor CPU | workerd peak RSS (all) | anvil CPU | machine CPU busy | createJob retries |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let share = |cpu: Duration, wall: Duration| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    for (mode, part) in &e2e {
        let t = &part.throughput;
        println!(
            "| {mode:?} | {:.1} | {:.1} s | {:.1} MiB | {:.2} s ({:.0}% of a core) | {:.0} MiB | {:.2} s ({:.0}%) | {:.1} s ({:.0}% of {} cores) | {} |",
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
            t.retries
        );
    }
    Ok(())
}

fn sandbox_config(mode: SandboxMode, work_dir: &Path, name: &str) -> SandboxConfig {
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

async fn sandbox_latency(mode: SandboxMode, runs: usize, work_dir: &Path) -> Result<()> {
    let config = sandbox_config(mode, work_dir, &format!("{mode:?}").to_lowercase());
    let sandbox = WorkerdSandbox::new(&config)?;
    let slots = CgroupSlots::new(1, &config);
    let slot = slots.try_acquire().ok_or_else(|| anyhow!("no slot"))?;
    sandbox.prewarm(std::slice::from_ref(&slot)).await?;
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
        sandbox.run(&slot, code, input, 30_000).await?;
        let mut total = Vec::with_capacity(runs);
        let mut ready = Vec::with_capacity(runs);
        let mut throttled_runs = 0;
        for _ in 0..runs {
            let throttled = nr_throttled(&slots, slot.index);
            let report = sandbox.run_detailed(&slot, code, input, 30_000).await?;
            if nr_throttled(&slots, slot.index) > throttled {
                throttled_runs += 1;
            }
            if report.result != RunResult::Output(expected.to_vec()) {
                bail!("{mode:?} {name}: unexpected result {:?}", report.result);
            }
            total.push(report.elapsed.as_secs_f64() * 1000.0);
            ready.push(report.ready.unwrap_or_default().as_secs_f64() * 1000.0);
        }
        let mean = total.iter().sum::<f64>() / total.len() as f64;
        println!(
            "| {mode:?} | {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            pct(&mut total, 0.5),
            pct(&mut total, 0.99),
            pct(&mut total, 1.0),
            mean,
            pct(&mut ready, 0.5),
            if slots.enforced() {
                format!("{throttled_runs} of {runs}")
            } else {
                "no cgroup".into()
            }
        );
    }
    slots.release(slot);
    drop(sandbox);
    slots.cleanup();
    Ok(())
}

/// How many CFS periods the slot's CPU quota has throttled so far (`cpu.stat`).
fn nr_throttled(slots: &CgroupSlots, index: usize) -> u64 {
    slots
        .slot_dirs(index)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cpu.stat")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("nr_throttled "))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The `q` quantile (nearest rank) of `v`, sorting it.
fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct DevnetPart {
    /// Per stage (then the total), the milliseconds of each job.
    stage_ms: Vec<Vec<f64>>,
    throughput: Throughput,
}

struct Throughput {
    jobs: usize,
    wall: Duration,
    peak_rss: u64,
    peak_workerd_rss: u64,
    cpu: Duration,
    anvil_cpu: Duration,
    /// Busy CPU time of the whole machine (all processes, all cores).
    machine_cpu: Duration,
    retries: usize,
}

/// What the executor's log said about each job: stage → unix µs of the mark.
#[derive(Default)]
struct StageLog {
    marks: Mutex<HashMap<String, HashMap<String, u64>>>,
    mined: Notify,
}

impl StageLog {
    fn get(&self, job: &str) -> Option<HashMap<String, u64>> {
        self.marks.lock().ok()?.get(job).cloned()
    }

    fn mined_count(&self) -> usize {
        self.marks
            .lock()
            .map(|m| m.values().filter(|s| s.contains_key("mined")).count())
            .unwrap_or(0)
    }
}

/// The executor as a child process of the bench.
struct ChildExecutor {
    child: tokio::process::Child,
    pid: u32,
    api_url: String,
}

async fn devnet_part(mode: SandboxMode, args: &BenchArgs, work_dir: &Path) -> Result<DevnetPart> {
    eprintln!("[bench] {mode:?}: starting anvil, the contracts and an executor");
    let dir = work_dir.join(format!("devnet-{mode:?}").to_lowercase());
    std::fs::create_dir_all(&dir)?;
    let devnet = Devnet::start(DevnetOptions {
        anvil_port: None,
        deploy: DeployParams {
            executors_to_select: 1,
            ..DeployParams::default()
        },
        work_dir: dir.clone(),
    })
    .await?;
    let http = devnet.anvil.http_url();
    let jobs = devnet.deployment.jobs;
    let codehash = save_code(
        &http,
        devnet.author_key(),
        devnet.deployment.user_code,
        ECHO_JOB,
    )
    .await?;

    let log = Arc::new(StageLog::default());
    let mut executor = start_executor(&devnet, mode, args.capacity, &dir, log.clone(), &[]).await?;
    // Whatever happens, the executor stops gracefully (its slots' cgroups are removed).
    let part = async {
        let creator = Creator::new(&http, devnet.author_key(), jobs).await?;

        // Warm-up (not counted): the code fetch fills the cache, the first slots start.
        for i in 0..3 {
            let (id, _) = creator
                .create(codehash, format!("{{\"warmup\":{i}}}").as_bytes())
                .await?;
            wait_mined(&log, &id, Duration::from_secs(60)).await?;
        }

        eprintln!("[bench] {mode:?}: {} jobs one at a time", args.e2e_jobs);
        let mut stage_ms = vec![Vec::new(); STAGES.len() + 1];
        for i in 0..args.e2e_jobs {
            let input = format!("{{\"job\":{i}}}");
            let (id, sent_us) = creator.create(codehash, input.as_bytes()).await?;
            wait_mined(&log, &id, Duration::from_secs(60)).await?;
            let marks = log
                .get(&id)
                .ok_or_else(|| anyhow!("no marks for job {id}"))?;
            let mut previous = sent_us;
            for (n, (stage, _)) in STAGES.iter().enumerate() {
                let at = *marks
                    .get(*stage)
                    .ok_or_else(|| anyhow!("job {id}: no {stage} mark in the executor's log"))?;
                stage_ms[n].push(at.saturating_sub(previous) as f64 / 1000.0);
                previous = at.max(previous);
            }
            stage_ms[STAGES.len()].push(previous.saturating_sub(sent_us) as f64 / 1000.0);
        }

        eprintln!(
            "[bench] {mode:?}: throughput, {} jobs",
            args.throughput_jobs
        );
        let mined_before = log.mined_count();
        let cpu_before = cpu_time(executor.pid);
        let anvil_pid = child_named(std::process::id(), "anvil");
        let anvil_before = anvil_pid.map(cpu_time).unwrap_or_default();
        let machine_before = machine_busy();
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            let pid = executor.pid;
            tokio::spawn(async move {
                let (mut peak, mut peak_workerd) = (0u64, 0u64);
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(rss_bytes(pid));
                    peak_workerd = peak_workerd.max(children_rss(pid));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (peak, peak_workerd)
            })
        };
        let started = Instant::now();
        let mut retries = 0;
        for i in 0..args.throughput_jobs {
            let input = format!("{{\"load\":{i}}}");
            loop {
                match creator.try_create(codehash, input.as_bytes()).await? {
                    true => break,
                    // Every slot of the executor is taken on chain: wait for an output.
                    false => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        }
        let target = mined_before + args.throughput_jobs;
        let limit = Instant::now() + Duration::from_secs(300);
        while log.mined_count() < target {
            if Instant::now() > limit {
                bail!(
                    "{mode:?}: only {} of {} jobs answered",
                    log.mined_count() - mined_before,
                    args.throughput_jobs
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), log.mined.notified()).await;
        }
        let wall = started.elapsed();
        let cpu = cpu_time(executor.pid).saturating_sub(cpu_before);
        let anvil_cpu = anvil_pid
            .map(cpu_time)
            .unwrap_or_default()
            .saturating_sub(anvil_before);
        let machine_cpu = machine_busy().saturating_sub(machine_before);
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let (peak_rss, peak_workerd_rss) = sampler.await?;

        Ok::<_, anyhow::Error>(DevnetPart {
            stage_ms,
            throughput: Throughput {
                jobs: args.throughput_jobs,
                wall,
                peak_rss,
                peak_workerd_rss,
                cpu,
                anvil_cpu,
                machine_cpu,
                retries,
            },
        })
    }
    .await;
    stop_executor(&mut executor).await;
    drop(devnet);
    part
}

async fn start_executor(
    devnet: &Devnet,
    mode: SandboxMode,
    capacity: usize,
    dir: &Path,
    log: Arc<StageLog>,
    extra: &[(&str, &str)],
) -> Result<ChildExecutor> {
    let exe_dir = dir.join("executor");
    std::fs::create_dir_all(&exe_dir)?;
    // The scale part journals jobs for this key before the executor starts.
    if !exe_dir.join("enclave.key").exists() {
        EnclaveKey::generate(&exe_dir.join("enclave.key"))?;
    }
    let port = free_port()?;
    let admin_port = free_port()?;
    let mut settings = devnet.executor_settings(
        &exe_dir,
        &ExecutorOptions {
            account: 1,
            job_capacity: capacity,
            api_port: port,
            admin_port,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    );
    settings.insert("SANDBOX_MODE".into(), format!("{mode:?}").to_lowercase());
    settings.insert("LOG_FORMAT".into(), "json".into());
    settings.insert("LOG_LEVEL".into(), "warn,job_stage=debug".into());
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut command = tokio::process::Command::new(exe);
    command.arg("serve");
    for (name, _) in std::env::vars() {
        if name.starts_with("EXECUTOR_") {
            command.env_remove(name);
        }
    }
    for (k, v) in &settings {
        command.env(format!("EXECUTOR_{k}"), v);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the executor")?;
    let pid = child.id().unwrap_or_default();
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no executor stderr"))?;
    tokio::spawn(read_log(stderr, log));
    let api_url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{api_url}/")).await.is_err() {
        if Instant::now() > deadline {
            bail!("the executor did not start listening on {api_url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    devnet.enroll(&api_url, &admin_url, 1).await?;
    wait_for_chain_status(&api_url, "serving", Duration::from_secs(30)).await?;
    Ok(ChildExecutor {
        child,
        pid,
        api_url,
    })
}

async fn stop_executor(executor: &mut ChildExecutor) {
    // SIGTERM: a graceful stop removes the slots' cgroups.
    // SAFETY: plain kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(executor.pid as libc::pid_t, libc::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(40), executor.child.wait())
        .await
        .is_err()
    {
        eprintln!(
            "[bench] executor at {} did not stop; killing it",
            executor.api_url
        );
        let _ = executor.child.kill().await;
    }
}

/// Reads the executor's JSON log: `job_stage` marks into `log`; warnings and errors echoed.
async fn read_log(stderr: tokio::process::ChildStderr, log: Arc<StageLog>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            eprintln!("[executor] {line}");
            continue;
        };
        if event["target"] != "job_stage" {
            eprintln!("[executor] {line}");
            continue;
        }
        let stage = event["fields"]["stage"].as_str().unwrap_or_default();
        let job = event["fields"]["job"]
            .as_str()
            .or_else(|| event["span"]["job"].as_str());
        let (Some(job), Some(at)) = (job, event["timestamp"].as_str().and_then(parse_rfc3339_us))
        else {
            continue;
        };
        if let Ok(mut marks) = log.marks.lock() {
            // The first mark of a stage counts (a retry sends again).
            marks
                .entry(job.to_string())
                .or_default()
                .entry(stage.to_string())
                .or_insert(at);
        }
        if stage == "mined" {
            log.mined.notify_waiters();
        }
    }
}

async fn wait_mined(log: &StageLog, job: &str, timeout: Duration) -> Result<()> {
    let limit = Instant::now() + timeout;
    loop {
        let notified = log.mined.notified();
        if log.get(job).is_some_and(|m| m.contains_key("mined")) {
            return Ok(());
        }
        if Instant::now() > limit {
            bail!("job {job} got no output within {timeout:?}");
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
    }
}

/// How many jobs' escrow the bench approves up front (more than any run creates).
const BENCH_JOBS_ESCROWED: u64 = 100_000;

/// Creates jobs from the author's account with a locally counted nonce, polling receipts
/// tightly (anvil automines).
struct Creator {
    contract: Jobs<serverless_executor::client::Client>,
    client: Arc<serverless_executor::client::Client>,
    nonce: tokio::sync::Mutex<U256>,
}

impl Creator {
    async fn new(http: &str, key: &str, jobs: Address) -> Result<Self> {
        let client = serverless_executor::client::client(http, key).await?;
        // The escrow of every job the bench may create, approved once: the jobs are sent
        // concurrently, so one approval per job would race.
        let (price, usdc) =
            serverless_executor::client::jobs::job_price(client.clone(), jobs, 1, 5000).await?;
        serverless_executor::client::jobs::approve_exactly(
            &client,
            usdc,
            jobs,
            price * U256::from(BENCH_JOBS_ESCROWED),
            "the benchmark's escrow",
        )
        .await?;
        let nonce = client
            .get_transaction_count(ethers::signers::Signer::address(client.signer()), None)
            .await?;
        Ok(Self {
            contract: Jobs::new(jobs, client.clone()),
            client,
            nonce: tokio::sync::Mutex::new(nonce),
        })
    }

    fn call(
        &self,
        codehash: H256,
        input: &[u8],
    ) -> ethers::contract::ContractCall<serverless_executor::client::Client, ()> {
        self.contract
            .create_job(1, codehash.0, input.to_vec().into(), 5000u64.into())
    }

    /// Creates one job; returns its id and the unix µs just before it was sent.
    async fn create(&self, codehash: H256, input: &[u8]) -> Result<(String, u64)> {
        let call = self.call(codehash, input);
        let gas = call
            .estimate_gas()
            .await
            .context("createJob would revert")?;
        let mut nonce = self.nonce.lock().await;
        let call = call.gas(gas + gas / 2 + 50_000).nonce(*nonce);
        let sent_us = unix_us();
        let hash = *call.send().await.context("sending createJob")?;
        *nonce += U256::one();
        drop(nonce);
        let receipt = self.receipt(hash).await?;
        let created = receipt
            .logs
            .iter()
            .find_map(|l| <JobCreatedFilter as EthEvent>::decode_log(&l.clone().into()).ok())
            .ok_or_else(|| anyhow!("createJob {hash:?} created no job"))?;
        Ok((created.job_id.to_string(), sent_us))
    }

    /// Creates one job unless the chain refuses it for want of a free executor (false).
    async fn try_create(&self, codehash: H256, input: &[u8]) -> Result<bool> {
        let call = self.call(codehash, input);
        let gas = match call.estimate_gas().await {
            Ok(gas) => gas,
            Err(e) if e.as_revert().is_some() => return Ok(false),
            Err(e) => return Err(anyhow!("createJob: {e}")),
        };
        let mut nonce = self.nonce.lock().await;
        let call = call.gas(gas + gas / 2 + 50_000).nonce(*nonce);
        let hash = *call.send().await.context("sending createJob")?;
        *nonce += U256::one();
        drop(nonce);
        let receipt = self.receipt(hash).await?;
        Ok(receipt.status == Some(1u64.into()))
    }

    async fn receipt(&self, hash: H256) -> Result<ethers::types::TransactionReceipt> {
        let limit = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.client.get_transaction_receipt(hash).await? {
                return Ok(r);
            }
            if Instant::now() > limit {
                bail!("createJob {hash:?} not mined");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `2026-11-23T17:20:00.123456Z` → unix µs.
fn parse_rfc3339_us(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
    let micros: i64 = format!("{:0<6}", &digits[..digits.len().min(6)])
        .parse()
        .ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_bytes(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

/// Total RSS of `pid`'s children (the workerd processes; each is a process-group leader).
fn children_rss(pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| status_kib(*p, "PPid:") == u64::from(pid))
        .map(rss_bytes)
        .sum()
}

/// User + system CPU time of a process.
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The first child of `pid` whose command name is `name`.
fn child_named(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            status_kib(*p, "PPid:") == u64::from(pid)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == name)
        })
}

/// Busy (non-idle, non-iowait) CPU time of the machine since boot, all cores.
fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(busy * 1_000_000 / hz)
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

fn mem_total_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_timestamps_parse_to_unix_micros() {
        assert_eq!(
            super::parse_rfc3339_us("1970-01-01T00:00:01.5Z"),
            Some(1_500_000)
        );
        assert_eq!(
            super::parse_rfc3339_us("2026-11-23T17:20:00.123456Z"),
            Some(1_795_454_400_123_456)
        );
    }
}
