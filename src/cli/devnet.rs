//! The `devnet` command: anvil, the dev contracts (v2, or the TEE generation with
//! `--protocol tee`), an executor registered on them and a demo job whose output it prints; then
//! it serves until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serverless_executor::client::deploy::{DeployParams, TeeDeployParams};
use serverless_executor::client::devnet::{Devnet, DevnetOptions, ExecutorOptions};
use serverless_executor::client::jobs::{create_job, save_code, wait_for_response};
use serverless_executor::client::tee::create_tee_job;
use serverless_executor::domain::model::Protocol;

/// The demo job: prime factorisation.
const DEMO_CODE: &str = include_str!("../../examples/factors.js");

#[derive(Args)]
pub struct DevnetArgs {
    /// anvil's port.
    #[arg(long, default_value_t = 8545)]
    anvil_port: u16,
    /// The executor's API port.
    #[arg(long, default_value_t = 6001)]
    api_port: u16,
    /// The executor's admin (operator) API port.
    #[arg(long, default_value_t = 6002)]
    admin_port: u16,
    /// Scratch directory (emptied at start): executor key, data, client settings.
    #[arg(long, default_value = ".devnet")]
    dir: PathBuf,
    /// Jobs.EXECUTION_BUFFER_TIME of the deployment, seconds.
    #[arg(long, default_value_t = 60)]
    execution_buffer: u64,
    /// Exit after the demo job instead of serving until Ctrl-C.
    #[arg(long)]
    exit_after_demo: bool,
    /// Contract generation: v2, or tee (TeeManager, SecretManager, Jobs with secrets).
    #[arg(long, default_value = "v2")]
    protocol: Protocol,
}

pub async fn run_devnet(args: DevnetArgs) -> Result<()> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot empty {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let work_dir = args.dir.canonicalize()?;
    let options = DevnetOptions {
        anvil_port: Some(args.anvil_port),
        deploy: DeployParams {
            execution_buffer_secs: args.execution_buffer,
            executors_to_select: 1,
            ..DeployParams::default()
        },
        work_dir: work_dir.clone(),
    };
    let devnet = match args.protocol {
        Protocol::V2 => Devnet::start(options).await?,
        Protocol::Tee => {
            let params = TeeDeployParams {
                execution_buffer_secs: args.execution_buffer,
                nodes_to_select: 1,
                ..TeeDeployParams::default()
            };
            Devnet::start_tee(options, params).await?
        }
    };
    let d = devnet.deployment;
    println!("anvil        {}", devnet.anvil.http_url());
    match &devnet.tee {
        None => println!("Executors    {:?}", d.executors),
        Some(tee) => {
            println!("TeeManager   {:?}", tee.deployment.tee_manager);
            println!("SecretManager {:?}", tee.deployment.secret_manager);
        }
    }
    println!("Jobs         {:?}", d.jobs);
    println!("UserCode     {:?}", d.user_code);
    println!("POND (stake) {:?}", d.pond);
    println!("USDC (fees)  {:?}", d.usdc);

    let executor = devnet
        .start_executor(ExecutorOptions {
            account: 1,
            job_capacity: 20,
            api_port: args.api_port,
            admin_port: args.admin_port,
            extra: vec![],
        })
        .await?;
    println!(
        "executor     {} (enclave {:?}, admin API {}), registered and serving",
        executor.api_url, executor.enclave, executor.admin_url
    );

    let env_file = work_dir.join("client.env");
    let registry = match &devnet.tee {
        None => format!("export EXECUTOR_EXECUTORS_ADDRESS={:?}\n", d.executors),
        Some(tee) => format!(
            "export EXECUTOR_TEE_MANAGER_ADDRESS={:?}\nexport EXECUTOR_SECRET_MANAGER_ADDRESS={:?}\n",
            tee.deployment.tee_manager, tee.deployment.secret_manager
        ),
    };
    std::fs::write(
        &env_file,
        format!(
            "export EXECUTOR_RPC_HTTP_URL={}\nexport EXECUTOR_JOBS_ADDRESS={:?}\nexport EXECUTOR_USER_CODE_ADDRESS={:?}\n{registry}",
            devnet.anvil.http_url(),
            d.jobs,
            d.user_code,
        ),
    )?;

    let http = devnet.anvil.http_url();
    let codehash = save_code(&http, devnet.author_key(), d.user_code, DEMO_CODE).await?;
    println!("demo code    examples/factors.js saved, codehash {codehash:?}");
    let input = br#"{"num":600}"#;
    let job = match args.protocol {
        Protocol::V2 => {
            create_job(&http, devnet.author_key(), d.jobs, 1, codehash, input, 5000).await?
        }
        // A plain job: no secret (id 0).
        Protocol::Tee => {
            let author = devnet.author_key();
            create_tee_job(&http, author, d.jobs, 1, 0.into(), codehash, input, 5000).await?
        }
    };
    println!(
        "demo job     {} created with input {}",
        job.job_id,
        String::from_utf8_lossy(input)
    );
    let responses = wait_for_response(&http, d.jobs, job.job_id, Duration::from_secs(60)).await?;
    let Some(r) = responses.first() else {
        bail!("the demo job got no output");
    };
    println!(
        "demo output  {} (error code {}, {} ms)",
        String::from_utf8_lossy(&r.output),
        r.error_code,
        r.total_time
    );
    if args.exit_after_demo {
        return executor.stop().await;
    }
    println!();
    println!("Serving. Try the client (in another shell):");
    println!("  source {}", env_file.display());
    let protocol = match args.protocol {
        Protocol::V2 => "",
        Protocol::Tee => " --protocol tee",
    };
    println!(
        "  cargo run -q -- client run-job{protocol} --file examples/factors.js --input '{{\"num\":10}}'"
    );
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    executor.stop().await
}
