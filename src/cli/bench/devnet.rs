//! Parts 2 and 3 of the bench on an anvil devnet: end-to-end latency of jobs one at a time,
//! split into stages by the executor's `job_stage` marks, and throughput at full capacity with
//! the executor's peak RSS and CPU time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use ethers::contract::EthEvent;
use ethers::providers::Middleware;
use ethers::types::{Address, H256, U256};
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::devnet::{Devnet, DevnetOptions};
use serverless_executor::client::jobs::save_code;
use serverless_executor::config::SandboxMode;
use serverless_executor::effects::chain::bindings::{JobCreatedFilter, Jobs};

use super::child::{restart_executor, start_executor, stop_executor};
use super::procfs::{child_named, children_rss, cpu_time, machine_busy, rss_bytes};
use super::stages::{internal_ms, wait_mined, StageLog};
use super::{BenchArgs, ECHO_JOB, STAGES};

pub struct DevnetPart {
    /// Per stage (then the total), the milliseconds of each job.
    pub stage_ms: Vec<Vec<f64>>,
    /// Per job, event seen → output mined (the executor's own part).
    pub internal_ms: Vec<f64>,
    /// The executor's own part of the first job after start (its slots just started).
    pub first_job_ms: f64,
    pub throughput: Throughput,
    pub restart: Restart,
}

/// Jobs created while the executor was stopped, run when it starts again.
pub struct Restart {
    pub jobs: usize,
    /// From starting the executor again to its serving (following the chain).
    pub start: Duration,
    /// From starting the executor again to the last of the jobs' outputs mined.
    pub all_mined: Duration,
    /// Per job, event seen → output mined.
    pub internal_ms: Vec<f64>,
}

/// How many jobs wait for the executor's restart (as after a crash with jobs in flight).
const RECOVERED_JOBS: usize = 10;

pub struct Throughput {
    pub jobs: usize,
    pub wall: Duration,
    pub peak_rss: u64,
    pub peak_workerd_rss: u64,
    pub cpu: Duration,
    pub anvil_cpu: Duration,
    /// Busy CPU time of the whole machine (all processes, all cores).
    pub machine_cpu: Duration,
    pub retries: usize,
}

pub async fn devnet_part(
    mode: SandboxMode,
    args: &BenchArgs,
    work_dir: &Path,
) -> Result<DevnetPart> {
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

        // Warm-up (not counted): the code fetch fills the cache, the first slots start. The
        // first one is the first job after start.
        let mut first_job_ms = f64::NAN;
        for i in 0..3 {
            let (id, _) = creator
                .create(codehash, format!("{{\"warmup\":{i}}}").as_bytes())
                .await?;
            wait_mined(&log, &id, Duration::from_secs(60)).await?;
            if i == 0 {
                first_job_ms = internal_ms(&log, &id)?;
            }
        }

        eprintln!("[bench] {mode:?}: {} jobs one at a time", args.e2e_jobs);
        let mut stage_ms = vec![Vec::new(); STAGES.len() + 1];
        let mut internal = Vec::new();
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
                    .get(stage)
                    .ok_or_else(|| anyhow!("job {id}: no {stage} mark in the executor's log"))?;
                stage_ms[n].push(at.saturating_sub(previous) as f64 / 1000.0);
                previous = at.max(previous);
            }
            stage_ms[STAGES.len()].push(previous.saturating_sub(sent_us) as f64 / 1000.0);
            internal.push(internal_ms(&log, &id)?);
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

        eprintln!("[bench] {mode:?}: restart with {RECOVERED_JOBS} jobs waiting");
        stop_executor(&mut executor).await;
        let mut waiting = Vec::new();
        for i in 0..RECOVERED_JOBS {
            let input = format!("{{\"recovered\":{i}}}");
            waiting.push(creator.create(codehash, input.as_bytes()).await?.0);
        }
        let restarted = Instant::now();
        restart_executor(&mut executor, &log).await?;
        let start = restarted.elapsed();
        let mut recovered_ms = Vec::new();
        for id in &waiting {
            wait_mined(&log, id, Duration::from_secs(60)).await?;
            recovered_ms.push(internal_ms(&log, id)?);
        }
        let all_mined = restarted.elapsed();

        Ok::<_, anyhow::Error>(DevnetPart {
            stage_ms,
            internal_ms: internal,
            first_job_ms,
            restart: Restart {
                jobs: RECOVERED_JOBS,
                start,
                all_mined,
                internal_ms: recovered_ms,
            },
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

/// How many jobs' escrow the bench approves up front (more than any run creates).
const BENCH_JOBS_ESCROWED: u64 = 100_000;

/// Creates jobs from the author's account with a locally counted nonce, polling receipts
/// tightly (anvil automines).
pub struct Creator {
    contract: Jobs<serverless_executor::client::Client>,
    client: Arc<serverless_executor::client::Client>,
    nonce: tokio::sync::Mutex<U256>,
}

impl Creator {
    pub async fn new(http: &str, key: &str, jobs: Address) -> Result<Self> {
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
    pub async fn create(&self, codehash: H256, input: &[u8]) -> Result<(String, u64)> {
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
    pub async fn try_create(&self, codehash: H256, input: &[u8]) -> Result<bool> {
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
