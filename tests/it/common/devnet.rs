//! A devnet (anvil and the dev contracts) for the integration tests that drive whole executors.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use ethers::types::H256;

use serverless_executor::client::deploy::{DeployParams, TeeDeployParams};
use serverless_executor::client::devnet::{DevExecutor, Devnet, DevnetOptions, ExecutorOptions};
use serverless_executor::client::jobs::{create_job, wait_for_response, CreatedJob, JobResponse};

/// Starts a devnet in `dir` whose Jobs has `execution_buffer_secs` of buffer and selects
/// `executors_to_select` executors per job. `RUST_LOG` shows the executors' logs on failure.
pub async fn devnet(dir: &Path, execution_buffer_secs: u64, executors_to_select: u8) -> Devnet {
    init_logs();
    Devnet::start(DevnetOptions {
        anvil_port: None,
        deploy: DeployParams {
            execution_buffer_secs,
            executors_to_select,
            ..DeployParams::default()
        },
        work_dir: dir.to_path_buf(),
    })
    .await
    .expect("devnet starts")
}

/// Starts a TEE-generation devnet in `dir` (contracts/tee) with `params`, but a 5 s execution
/// buffer and one node selected per job and per secret.
pub async fn tee_devnet(dir: &Path, params: TeeDeployParams) -> Devnet {
    init_logs();
    Devnet::start_tee(
        DevnetOptions {
            anvil_port: None,
            deploy: Default::default(),
            work_dir: dir.to_path_buf(),
        },
        TeeDeployParams {
            execution_buffer_secs: 5,
            nodes_to_select: 1,
            ..params
        },
    )
    .await
    .expect("TEE devnet starts")
}

/// `RUST_LOG` shows the executors' logs in the test output.
fn init_logs() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// Starts an executor on `account`'s keys that takes four jobs at once, configured and
/// registered on `net` like an operator would.
pub async fn executor(net: &Devnet, account: usize) -> DevExecutor {
    net.start_executor(ExecutorOptions {
        account,
        job_capacity: 4,
        ..ExecutorOptions::default()
    })
    .await
    .expect("executor starts and registers")
}

/// Starts devnet executors 1 to `count`, as `executor` does each.
pub async fn executors(net: &Devnet, count: usize) -> Vec<DevExecutor> {
    let mut started = Vec::with_capacity(count);
    for account in 1..=count {
        started.push(executor(net, account).await);
    }
    started
}

/// Creates an env-1 job as the job author (paying its escrow).
pub async fn job(
    net: &Devnet,
    codehash: H256,
    input: &[u8],
    deadline_ms: u64,
) -> anyhow::Result<CreatedJob> {
    create_job(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.jobs,
        1,
        codehash,
        input,
        deadline_ms,
    )
    .await
}

/// The first output the chain records for `created`, waiting up to `wait`.
pub async fn answer(net: &Devnet, created: &CreatedJob, wait: Duration) -> JobResponse {
    wait_for_response(
        &net.anvil.http_url(),
        net.deployment.jobs,
        created.job_id,
        wait,
    )
    .await
    .expect("the job is answered")
    .remove(0)
}
