//! The `devnet` command: anvil, the dev contracts (v2, or the TEE generation with
//! `--protocol tee`), an executor registered on them and a demo job whose output it prints (on
//! the TEE generation also a secret created, injected, acknowledged and read by a job); then it
//! serves until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serverless_executor::client::deploy::{DeployParams, TeeDeployParams};
use serverless_executor::client::devnet::{DevExecutor, Devnet, DevnetOptions, ExecutorOptions};
use serverless_executor::client::jobs::{create_job, save_code, wait_for_response};
use serverless_executor::client::tee::{create_secret, create_tee_job, SecretRequest};
use serverless_executor::client::{admin, secrets};
use serverless_executor::domain::model::Protocol;

/// The demo job: prime factorisation.
const DEMO_CODE: &str = include_str!("../../examples/factors.js");
/// The TEE generation's demo job: reads its secret as env.secret.
const SECRET_CODE: &str = include_str!("../../examples/secret.js");
/// The demo secret (what an API key would be).
const DEMO_SECRET: &[u8] = b"hunter2";

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
    /// The secret listener's port (`POST /inject-secret`; with --protocol tee).
    #[arg(long, default_value_t = 6003)]
    secret_port: u16,
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
            extra: match args.protocol {
                Protocol::V2 => vec![],
                Protocol::Tee => vec![(
                    "SECRET_LISTEN_ADDR".into(),
                    format!("127.0.0.1:{}", args.secret_port),
                )],
            },
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
            "export EXECUTOR_PROTOCOL=tee\nexport EXECUTOR_TEE_MANAGER_ADDRESS={:?}\nexport EXECUTOR_SECRET_MANAGER_ADDRESS={:?}\n",
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
    let public_key = match &devnet.tee {
        Some(tee) => Some(secret_demo(&devnet, tee.deployment.secret_manager, &executor).await?),
        None => None,
    };
    if args.exit_after_demo {
        return executor.stop().await;
    }
    println!();
    println!("Serving. Try the client (in another shell):");
    println!("  source {}", env_file.display());
    println!(
        "  cargo run -q -- client run-job --file examples/factors.js --input '{{\"num\":10}}'"
    );
    if let Some(public_key) = public_key {
        println!("  cargo run -q -- client create-secret --size-limit 64   # prints the secret id");
        println!("  printf my-api-key > my.secret");
        println!(
            "  OWNER_KEY={} cargo run -q -- client inject-secret --secret-id <id> \\\n      \
             --secret-file my.secret --enclave-public-key {public_key} --url http://127.0.0.1:{}",
            devnet.author_key(),
            args.secret_port
        );
        println!("  cargo run -q -- client run-job --file examples/secret.js --secret-id <id>");
    }
    println!("Ctrl-C (or SIGTERM) stops everything.");
    serverless_executor::bootstrap::wait_for_signal().await?;
    println!("stopping");
    executor.stop().await
}

/// The secret half of the TEE demo, as a job author does it: create a secret on SecretManager,
/// inject it into the executor (sealed to its enclave key, signed by the author), wait for the
/// acknowledgement on chain, run `examples/secret.js` with it. Returns the enclave public key.
async fn secret_demo(
    devnet: &Devnet,
    secret_manager: ethers::types::Address,
    executor: &DevExecutor,
) -> Result<String> {
    let http = devnet.anvil.http_url();
    let author = devnet.author_key();
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let request = SecretRequest {
        env: 1,
        size_limit: 64.into(),
        end_timestamp: end.into(),
        usdc_deposit: None,
        allowed: vec![],
    };
    let secret = create_secret(&http, author, secret_manager, &request).await?;
    println!(
        "demo secret  {} created, held by {:?}",
        secret.secret_id, secret.selected_enclaves
    );
    let client = reqwest::Client::new();
    let details = admin::get(&client, &executor.api_url, "/executor-details").await?;
    let public_key = details["enclave_public_key"]
        .as_str()
        .context("the executor's details lack its enclave public key")?
        .to_string();
    let sealed_to = secrets::enclave_public_key(&public_key)?;
    let body = secrets::inject_secret_body(
        secret.secret_id,
        DEMO_SECRET,
        &sealed_to,
        &serverless_executor::client::wallet(author)?,
    )?;
    let secret_url = match executor.running.secret_addr {
        Some(addr) => format!("http://{addr}"),
        None => bail!("the TEE executor does not serve injections"),
    };
    secrets::inject_secret(&client, &secret_url, &body).await?;
    let wait = Duration::from_secs(60);
    secrets::wait_for_acknowledgement(&http, secret_manager, secret.secret_id, wait).await?;
    println!(
        "demo secret  {:?} injected and acknowledged on chain",
        String::from_utf8_lossy(DEMO_SECRET)
    );
    let codehash = save_code(&http, author, devnet.deployment.user_code, SECRET_CODE).await?;
    let jobs = devnet.deployment.jobs;
    let job = create_tee_job(
        &http,
        author,
        jobs,
        1,
        secret.secret_id,
        codehash,
        b"",
        5000,
    )
    .await?;
    let responses = wait_for_response(&http, jobs, job.job_id, wait).await?;
    let Some(r) = responses.first() else {
        bail!("the secret job got no output");
    };
    println!(
        "secret job   {} (examples/secret.js: length and the secret reversed) output {} (error code {}, {} ms)",
        job.job_id,
        String::from_utf8_lossy(&r.output),
        r.error_code,
        r.total_time
    );
    Ok(public_key)
}
