//! `bench --scale`: fills a journal with many jobs (ours and others', in every state), then
//! measures start-up, the job API's latency, the executor's RSS, bytes per job on disk, and the
//! end-to-end latency of a job on the devnet while 16 clients hammer `/jobs`.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use ethers::types::{Address, H256, U256};
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::devnet::{Devnet, DevnetOptions};
use serverless_executor::client::jobs::save_code;
use serverless_executor::config::SandboxMode;
use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::domain::model::{ErrorCode, Job, JobRecord, JobState, SignedOutput};
use serverless_executor::domain::stage::Stage;
use serverless_executor::domain::Settings;
use serverless_executor::effects::signer::EnclaveKey;
use serverless_executor::effects::store::{SledStore, SEALING_PURPOSE};

use super::child::{free_port, spawn_executor, start_executor, stop_executor};
use super::devnet::Creator;
use super::procfs::{load_average, rss_bytes, status_kib};
use super::stages::{wait_mined, StageLog};
use super::{build_kind, pct, BenchArgs, ECHO_JOB};

/// Journalled ids start here, clear of the devnet's own job ids (from 0).
const FIRST_ID: u64 = 1 << 40;
/// Requests per latency row.
const REQUESTS: usize = 300;
/// Clients of the flood.
const FLOOD_CLIENTS: usize = 16;
/// The flood is a worst case: no per-client limit stops it.
const NO_LIMITS: &[(&str, &str)] = &[
    ("PUBLIC_RATE_PER_CLIENT", "0"),
    ("PUBLIC_MAX_CONCURRENT_PER_CLIENT", "256"),
];

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `i`th journalled job: one in ten is ours (mostly confirmed, some abandoned, a few
/// unfinished), the rest others' (observed and settled, a few unsettled); one in a hundred ended
/// longer ago than the retention (pruned at start); the others over the last six days.
fn journal_record(i: u64, n: u64, me: Address, now: u64) -> JobRecord {
    let day = 86_400;
    let retention = Settings::default().journal_retention_ms / 1000;
    let exec_start_time = if i % 100 == 99 {
        now - retention - 2 * day
    } else {
        now - 6 * day * n.saturating_sub(i) / n.max(1)
    };
    let others = [Address::repeat_byte(0xa1), Address::repeat_byte(0xa2)];
    let ours = i.is_multiple_of(10);
    let mut selected = others.to_vec();
    selected.insert(0, if ours { me } else { Address::repeat_byte(0xa3) });
    let id = U256::from(FIRST_ID + i);
    let job = Job {
        id,
        env: 1,
        owner: Address::repeat_byte(0x0b),
        codehash: H256::repeat_byte(0xc0),
        code_inputs: vec![b'x'; 256],
        deadline_ms: 5_000,
        selected_executors: selected,
        exec_start_time,
        // Every followed job carries its creating log, as the follower journals it.
        origin: Some(serverless_executor::domain::model::JobOrigin {
            block_number: 1_000 + i,
            block_hash: H256::from_low_u64_be(i + 1),
            tx_hash: H256::from_low_u64_be(u64::MAX - i),
            log_index: 0,
        }),
        compact: None,
        secret_id: U256::zero(),
    };
    let output = || SignedOutput {
        job_id: id,
        output: br#"{"factors":[2,3,5,7]}"#.to_vec(),
        total_time_ms: 12,
        error_code: ErrorCode::Ok,
        sign_timestamp: exec_start_time + 1,
        signature: vec![0x1b; 65],
    };
    let k = i / 10;
    let (state, settled) = if !ours {
        (JobState::Observed, i % 100_003 != 1)
    } else if k < 20 {
        // A few of ours unfinished, their windows long closed: recovery gives them up.
        let state = match k % 4 {
            0 => JobState::Queued,
            1 => JobState::Running,
            2 => JobState::Executed { output: output() },
            _ => JobState::Submitted {
                output: output(),
                tx_hash: H256::repeat_byte(7),
            },
        };
        (state, true)
    } else if k.is_multiple_of(50) {
        let reason = "the window closed while the job waited for a slot".to_string();
        (JobState::Abandoned { reason }, true)
    } else {
        let state = JobState::Confirmed {
            output: Some(output()),
            tx_hash: Some(H256::repeat_byte(9)),
        };
        (state, true)
    };
    let mut record = JobRecord::new(job, state);
    record.settled = settled;
    record.output_count = if settled { 3 } else { 1 };
    record
}

/// Journals `n` jobs chosen by `pick` into a store in `dir`, in batches; `sealing_key` is the
/// one the executor derives from its enclave key.
fn fill(
    dir: &Path,
    sealing_key: [u8; 32],
    n: u64,
    pick: impl Fn(u64) -> JobRecord,
) -> Result<Duration> {
    let store = SledStore::open(dir, sealing_key).map_err(|e| anyhow!("{e}"))?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        batch.push(pick(i));
        if batch.len() == 10_000 || i + 1 == n {
            store.import_jobs(&batch).map_err(|e| anyhow!("{e}"))?;
            batch.clear();
        }
        if i > 0 && i % 100_000 == 0 {
            eprintln!("[bench] journalled {i} of {n} jobs");
        }
    }
    Ok(started.elapsed())
}

/// Bytes the files under `dir` take on disk.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// p50 and p99 (ms) of `REQUESTS` sequential GETs of `paths` in turn; every answer must be 200.
async fn latency(http: &reqwest::Client, base: &str, paths: &[String]) -> Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let path = &paths[i % paths.len()];
        let started = Instant::now();
        let response = http.get(format!("{base}{path}")).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
        }
    }
    Ok((pct(&mut ms, 0.5), pct(&mut ms, 0.99)))
}

/// Start-up, API latency and RSS of an executor (no chain) serving the journal in `exe_dir`.
async fn api_part(exe_dir: &Path, n: u64) -> Result<()> {
    let (port, admin_port) = (free_port()?, free_port()?);
    let settings = [
        ("PORT", port.to_string()),
        ("ADMIN_PORT", admin_port.to_string()),
        (
            "ENCLAVE_KEY_FILE",
            exe_dir.join("enclave.key").display().to_string(),
        ),
        ("DATA_DIR", exe_dir.join("data").display().to_string()),
        ("SANDBOX_DIR", exe_dir.join("sandbox").display().to_string()),
        ("SANDBOX_MODE", "process".into()),
        ("JOB_CAPACITY", "2".into()),
        ("LOG_LEVEL", "error".into()),
        (
            "CGROUP_PARENT",
            format!("serverless-executor-scale-{}", std::process::id()),
        ),
    ];
    let settings = settings
        .into_iter()
        .chain(NO_LIMITS.iter().map(|(k, v)| (*k, v.to_string())))
        .map(|(k, v)| (k.to_string(), v));
    let started = Instant::now();
    let mut child = spawn_executor(settings, Stdio::inherit())?;
    let pid = child.id().unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let limit = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > limit {
            bail!("the executor did not serve within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let startup = started.elapsed();
    let rss_start = rss_bytes(pid);

    let deep = FIRST_ID + n / 2;
    let rows: Vec<(&str, Vec<String>)> = vec![
        ("first page", vec!["/jobs?limit=100".into()]),
        (
            "deep page (after the middle id)",
            vec![format!("/jobs?limit=100&after={deep}")],
        ),
        ("newest first", vec!["/jobs?limit=100&order=desc".into()]),
        (
            "by state: confirmed (deep)",
            vec![format!("/jobs?limit=100&state=confirmed&after={deep}")],
        ),
        (
            "by state: abandoned (rare, spread out)",
            vec!["/jobs?limit=100&state=abandoned".into()],
        ),
        (
            "by state: observed, newest first",
            vec!["/jobs?limit=100&state=observed&order=desc".into()],
        ),
    ];
    println!("\n### Job API on a journal of {n} jobs (sequential requests, {REQUESTS} each)\n");
    println!("| request | p50 | p99 |");
    println!("|---|---|---|");
    for (name, paths) in &rows {
        let (p50, p99) = latency(&http, &base, paths).await?;
        println!("| `/jobs?limit=100` {name} | {p50:.2} ms | {p99:.2} ms |");
    }
    let ids: Vec<String> = (0..REQUESTS as u64)
        .map(|k| {
            let i = (k * 7_919 * 131) % n;
            // Not one of the jobs pruned at start.
            let i = if i % 100 == 99 { i - 1 } else { i };
            format!("/jobs/{}", FIRST_ID + i)
        })
        .collect();
    let (p50, p99) = latency(&http, &base, &ids).await?;
    println!("| `/jobs/{{id}}` (spread ids) | {p50:.2} ms | {p99:.2} ms |");
    let rss_after = rss_bytes(pid);
    let hwm = status_kib(pid, "VmHWM:") * 1024;
    println!("\n| start-up to serving | RSS after start | RSS after the requests | peak RSS |");
    println!("|---|---|---|---|");
    println!(
        "| {:.2} s | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
        startup.as_secs_f64(),
        rss_start as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        hwm as f64 / 1048576.0
    );
    // SAFETY: plain kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok(())
}

/// Hammers `/jobs` from `FLOOD_CLIENTS` clients until `stop`; counts the answers.
fn flood(base: &str, n: u64, stop: Arc<AtomicBool>, answered: Arc<AtomicU64>) {
    for c in 0..FLOOD_CLIENTS {
        let (base, stop, answered) = (base.to_string(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let after = FIRST_ID + (k * 104_729 + c as u64 * 7_919) % n.max(1);
                let path = match k % 3 {
                    0 => "/jobs?limit=100".to_string(),
                    1 => format!("/jobs?limit=100&after={after}"),
                    _ => format!("/jobs?limit=100&state=confirmed&after={after}"),
                };
                if let Ok(r) = http.get(format!("{base}{path}")).send().await {
                    if r.bytes().await.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                k += 1;
            }
        });
    }
}

/// Job latency on the devnet (createJob sent → our output's receipt), idle and under the flood.
async fn flood_part(args: &BenchArgs, dir: &Path, n: u64) -> Result<()> {
    eprintln!("[bench] starting anvil, the contracts and the executor on the big journal");
    let devnet = Devnet::start(DevnetOptions {
        anvil_port: None,
        deploy: DeployParams {
            executors_to_select: 1,
            ..DeployParams::default()
        },
        work_dir: dir.join("devnet"),
    })
    .await?;
    let http_url = devnet.anvil.http_url();
    let codehash = save_code(
        &http_url,
        devnet.author_key(),
        devnet.deployment.user_code,
        ECHO_JOB,
    )
    .await?;
    let log = Arc::new(StageLog::default());
    let started = Instant::now();
    let mut executor =
        start_executor(&devnet, SandboxMode::Warm, 2, dir, log.clone(), NO_LIMITS).await?;
    let enrolled = started.elapsed();
    let part = async {
        let creator = Creator::new(&http_url, devnet.author_key(), devnet.deployment.jobs).await?;
        let run = |label: &'static str| {
            let (creator, log) = (&creator, log.clone());
            async move {
                let mut ms = Vec::new();
                for i in 0..args.scale_e2e_jobs {
                    let input = format!("{{\"{label}\":{i}}}");
                    let (id, sent_us) = creator.create(codehash, input.as_bytes()).await?;
                    wait_mined(&log, &id, Duration::from_secs(60)).await?;
                    let mined = log
                        .get(&id)
                        .and_then(|m| m.get(&Stage::Mined).copied())
                        .ok_or_else(|| anyhow!("job {id}: no mined mark"))?;
                    ms.push(mined.saturating_sub(sent_us) as f64 / 1000.0);
                }
                Ok::<_, anyhow::Error>(ms)
            }
        };
        // Warm-up, not counted.
        run("warmup").await?;
        let mut idle = run("idle").await?;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        flood(&executor.api_url, n, stop.clone(), answered.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let flood_started = Instant::now();
        let before = answered.load(Ordering::Relaxed);
        let flooded = run("flooded").await;
        let served = answered.load(Ordering::Relaxed) - before;
        let flood_secs = flood_started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut flooded = flooded?;
        println!(
            "\n### A job on the devnet while {FLOOD_CLIENTS} clients hammer `/jobs` ({} jobs each, one at a time)\n",
            args.scale_e2e_jobs
        );
        println!(
            "A second start on the same journal (the first one pruned it), to serving on chain: {:.1} s",
            enrolled.as_secs_f64()
        );
        println!("(includes the operator's set-up and the registration transaction).\n");
        println!("| API | job p50 | job p99 | `/jobs` answered during the run |");
        println!("|---|---|---|---|");
        println!(
            "| idle | {:.1} ms | {:.1} ms | — |",
            pct(&mut idle, 0.5),
            pct(&mut idle, 0.99)
        );
        println!(
            "| flooded | {:.1} ms | {:.1} ms | {} ({:.0}/s) |",
            pct(&mut flooded, 0.5),
            pct(&mut flooded, 0.99),
            served,
            served as f64 / flood_secs
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop_executor(&mut executor).await;
    drop(devnet);
    part
}

pub async fn run(args: &BenchArgs, work_dir: &Path) -> Result<()> {
    let n = args.scale_jobs.max(1_000);
    println!("# serverless-executor bench --scale ({n} jobs)");
    println!("build:     {}", build_kind());
    println!(
        "load:      {} (1, 5, 15 min, before the bench)",
        load_average()
    );
    let dir = work_dir.join("scale");
    let exe_dir = dir.join("executor");
    std::fs::create_dir_all(&exe_dir)?;
    EnclaveKey::generate(&exe_dir.join("enclave.key"))?;
    let enclave = EnclaveKey::load(&exe_dir.join("enclave.key"))?;
    let me = enclave.address();
    let sealing_key = enclave.derive_key(SEALING_PURPOSE);
    let now = now_secs();

    // Bytes per job, apart: others' jobs, then ours (confirmed, with the output).
    let sample = (n / 10).clamp(1_000, 100_000);
    let others_dir = dir.join("others");
    fill(&others_dir, sealing_key, sample, |i| {
        let mut r = journal_record(i * 10 + 1, sample * 10, me, now);
        r.job.id = U256::from(FIRST_ID + i);
        r
    })?;
    let ours_dir = dir.join("ours");
    fill(&ours_dir, sealing_key, sample, |i| {
        let mut r = journal_record(i * 10 + 300, sample * 10, me, now);
        r.job.id = U256::from(FIRST_ID + i);
        r
    })?;
    println!("\n### Data directory bytes per job ({sample} jobs of each kind, on disk)\n");
    println!("| jobs | bytes per job |");
    println!("|---|---|");
    println!(
        "| others' (observed, settled) | {:.0} |",
        disk_bytes(&others_dir) as f64 / sample as f64
    );
    println!(
        "| ours (confirmed, with the signed output) | {:.0} |",
        disk_bytes(&ours_dir) as f64 / sample as f64
    );
    let _ = std::fs::remove_dir_all(&others_dir);
    let _ = std::fs::remove_dir_all(&ours_dir);

    eprintln!("[bench] journalling {n} jobs");
    let took = fill(&exe_dir.join("data"), sealing_key, n, |i| {
        journal_record(i, n, me, now)
    })?;
    let bytes = disk_bytes(&exe_dir.join("data"));
    println!(
        "\nThe whole journal: {n} jobs written in {:.1} s; {:.1} MiB on disk ({:.0} bytes per job).",
        took.as_secs_f64(),
        bytes as f64 / 1048576.0,
        bytes as f64 / n as f64
    );
    api_part(&exe_dir, n).await?;
    flood_part(args, &dir, n).await
}
