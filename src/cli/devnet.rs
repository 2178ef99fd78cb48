//! The `devnet` and `client` subcommands: thin command-line shells over `client::`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ethers::types::{Address, H256, U256};
use serverless_executor::client::admin;
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::devnet::{Devnet, DevnetOptions, ExecutorOptions};
use serverless_executor::client::jobs::{
    create_job, save_code, save_code_as, wait_for_response, CodeForm,
};
use serverless_executor::client::register::{register, RegisterRequest};

/// The demo job: prime factorisation.
const DEMO_CODE: &str = include_str!("../../examples/factors.js");
/// Anvil's first well-known dev account: for local devnets only.
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

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
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Operator: set the executor's owner (once) over its admin API.
    SetOwner {
        /// The owner's address (the account that registers the executor on chain).
        #[arg(long)]
        owner: Address,
        #[command(flatten)]
        api: ExecutorApiArgs,
    },
    /// Operator: set or replace the gas key, signed with the owner's key (EIP-191).
    SetGasKey {
        /// The new gas key (hex); better passed in the environment than on the command line.
        #[arg(long, env = "GAS_KEY", hide_env_values = true)]
        gas_key: String,
        /// The owner's private key (hex), which signs the change.
        #[arg(long, env = "OWNER_KEY", hide_env_values = true)]
        owner_key: String,
        /// The enclave address (default: read from the public API).
        #[arg(long)]
        enclave: Option<Address>,
        /// Signing time, unix seconds (default: now).
        #[arg(long)]
        timestamp: Option<u64>,
        /// Print the signed request body instead of sending it (e.g. for curl).
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        api: ExecutorApiArgs,
    },
    /// Save a JavaScript file as job code with UserCode; prints the codehash.
    DeployCode {
        #[arg(long)]
        file: PathBuf,
        /// Use the legacy saveCodeInCallData(string) instead of saveCodeInCallData(string,bytes).
        #[arg(long, conflicts_with = "metadata")]
        legacy: bool,
        /// Metadata (hex) saved with the code by the current function; empty by default.
        #[arg(long, default_value = "")]
        metadata: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Owner: register an executor on chain. Approves the stake (Executors.TOKEN) and calls
    /// registerExecutor with the executor's signed registration message, an attestation of its
    /// enclave and the attestation verifier's signature; prints the chain's refusal by name.
    Register {
        /// The signed registration message: the executor's
        /// http(s)://…/signed-registration-message URL, or a file with that JSON.
        #[arg(long)]
        registration: String,
        /// The attestation, a file or the http(s) URL of the enclave's attestation endpoint: a
        /// Nitro attestation document (CBOR, raw or hex), or JSON with enclave_public_key
        /// (64 bytes), pcr0, pcr1, pcr2 (48 bytes each), timestamp_ms.
        #[arg(long)]
        attestation: String,
        /// The attestation verifier's signature over the attestation (hex).
        #[arg(long)]
        attestation_signature: String,
        /// Stake, POND base units, decimal (default: the contract's MIN_STAKE_AMOUNT).
        #[arg(long, value_parser = decimal_u256)]
        stake: Option<U256>,
        #[arg(
            long,
            env = "EXECUTOR_RPC_HTTP_URL",
            default_value = "http://127.0.0.1:8545"
        )]
        rpc_url: String,
        #[arg(long, env = "EXECUTOR_EXECUTORS_ADDRESS")]
        executors_address: Address,
        /// The owner's private key (hex); better passed in the environment.
        #[arg(long, env = "OWNER_KEY", hide_env_values = true)]
        owner_key: String,
    },
    /// Create a job and wait for its output; prints output, error code and time.
    RunJob {
        /// Codehash of saved code (from deploy-code).
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        codehash: Option<H256>,
        /// Or a JavaScript file to save first.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The job input (the request body the code receives).
        #[arg(long, default_value = "")]
        input: String,
        /// Execution budget, milliseconds.
        #[arg(long, default_value_t = 5000)]
        deadline: u64,
        /// Execution environment (1: JavaScript).
        #[arg(long, default_value_t = 1)]
        env: u8,
        /// How long to wait for the output, seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

/// Where an executor's two APIs are.
#[derive(Args)]
pub struct ExecutorApiArgs {
    /// The public API (read-only routes; the enclave address is read there).
    #[arg(long, default_value = "http://127.0.0.1:6001")]
    api_url: String,
    /// The admin (operator) API.
    #[arg(long, default_value = "http://127.0.0.1:6002")]
    admin_url: String,
}

#[derive(Args)]
pub struct ChainArgs {
    #[arg(
        long,
        env = "EXECUTOR_RPC_HTTP_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    rpc_url: String,
    #[arg(long, env = "EXECUTOR_JOBS_ADDRESS")]
    jobs_address: Option<Address>,
    #[arg(long, env = "EXECUTOR_USER_CODE_ADDRESS")]
    user_code_address: Option<Address>,
    /// The job author's private key (default: anvil's first dev account).
    #[arg(long, env = "CLIENT_KEY", default_value = DEV_KEY, hide_default_value = true)]
    key: String,
}

impl ChainArgs {
    fn user_code(&self) -> Result<Address> {
        self.user_code_address.context(
            "the UserCode address is needed: --user-code-address or EXECUTOR_USER_CODE_ADDRESS",
        )
    }

    fn jobs(&self) -> Result<Address> {
        self.jobs_address
            .context("the Jobs address is needed: --jobs-address or EXECUTOR_JOBS_ADDRESS")
    }
}

/// A decimal amount (U256's own `FromStr` reads hex).
fn decimal_u256(text: &str) -> Result<U256, String> {
    U256::from_dec_str(text).map_err(|e| format!("not a decimal amount: {e}"))
}

fn read_code(file: &PathBuf) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

pub async fn run_client(command: ClientCommand) -> Result<()> {
    let http = reqwest::Client::new();
    match command {
        ClientCommand::SetOwner { owner, api } => {
            let body = admin::immutable_config_body(owner);
            let answer = admin::post(&http, &api.admin_url, "/immutable-config", &body).await?;
            println!("{answer}");
        }
        ClientCommand::SetGasKey {
            gas_key,
            owner_key,
            enclave,
            timestamp,
            print,
            api,
        } => {
            let owner = serverless_executor::client::wallet(&owner_key).context("the owner key")?;
            let enclave = match enclave {
                Some(enclave) => enclave,
                None => admin::enclave_address(&http, &api.api_url).await?,
            };
            let timestamp = timestamp.unwrap_or_else(admin::now_secs);
            let body =
                admin::signed_mutable_config_body(&owner, enclave, &gas_key, timestamp).await?;
            if print {
                println!("{body}");
            } else {
                let answer = admin::post(&http, &api.admin_url, "/mutable-config", &body).await?;
                println!("{answer}");
            }
        }
        ClientCommand::DeployCode {
            file,
            legacy,
            metadata,
            chain,
        } => {
            let metadata =
                hex::decode(metadata.trim_start_matches("0x")).context("--metadata is not hex")?;
            let form = if legacy {
                CodeForm::Legacy
            } else {
                CodeForm::Current
            };
            let codehash = save_code_as(
                &chain.rpc_url,
                &chain.key,
                chain.user_code()?,
                &read_code(&file)?,
                form,
                &metadata,
            )
            .await?;
            println!("{codehash:?}");
        }
        ClientCommand::Register {
            registration,
            attestation,
            attestation_signature,
            stake,
            rpc_url,
            executors_address,
            owner_key,
        } => {
            let request = RegisterRequest {
                registration,
                attestation,
                attestation_signature: hex::decode(attestation_signature.trim_start_matches("0x"))
                    .context("--attestation-signature is not hex")?,
                stake,
            };
            let (enclave, tx) = register(&rpc_url, &owner_key, executors_address, &request).await?;
            println!("registered enclave {enclave:?} in transaction {tx:?}");
        }
        ClientCommand::RunJob {
            codehash,
            file,
            input,
            deadline,
            env,
            timeout,
            chain,
        } => {
            let codehash = match (codehash, file) {
                (Some(hash), _) => hash,
                (None, Some(file)) => {
                    save_code(
                        &chain.rpc_url,
                        &chain.key,
                        chain.user_code()?,
                        &read_code(&file)?,
                    )
                    .await?
                }
                (None, None) => bail!("give --codehash or --file"),
            };
            let job = create_job(
                &chain.rpc_url,
                &chain.key,
                chain.jobs()?,
                env,
                codehash,
                input.as_bytes(),
                deadline,
            )
            .await?;
            eprintln!(
                "job {} created, selected executors {:?}",
                job.job_id, job.selected_executors
            );
            let responses = wait_for_response(
                &chain.rpc_url,
                chain.jobs()?,
                job.job_id,
                Duration::from_secs(timeout),
            )
            .await?;
            for r in responses {
                println!("job:        {}", job.job_id);
                println!("executor:   {:?}", r.executor);
                println!("output:     {}", String::from_utf8_lossy(&r.output));
                println!("error code: {}", r.error_code);
                println!("total time: {} ms", r.total_time);
            }
        }
    }
    Ok(())
}

pub async fn run_devnet(args: DevnetArgs) -> Result<()> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot empty {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let work_dir = args.dir.canonicalize()?;
    let devnet = Devnet::start(DevnetOptions {
        anvil_port: Some(args.anvil_port),
        deploy: DeployParams {
            execution_buffer_secs: args.execution_buffer,
            executors_to_select: 1,
            ..DeployParams::default()
        },
        work_dir: work_dir.clone(),
    })
    .await?;
    let d = devnet.deployment;
    println!("anvil        {}", devnet.anvil.http_url());
    println!("Executors    {:?}", d.executors);
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
    std::fs::write(
        &env_file,
        format!(
            "export EXECUTOR_RPC_HTTP_URL={}\nexport EXECUTOR_JOBS_ADDRESS={:?}\nexport EXECUTOR_USER_CODE_ADDRESS={:?}\nexport EXECUTOR_EXECUTORS_ADDRESS={:?}\n",
            devnet.anvil.http_url(),
            d.jobs,
            d.user_code,
            d.executors
        ),
    )?;

    let http = devnet.anvil.http_url();
    let codehash = save_code(&http, devnet.author_key(), d.user_code, DEMO_CODE).await?;
    println!("demo code    examples/factors.js saved, codehash {codehash:?}");
    let input = br#"{"num":600}"#;
    let job = create_job(&http, devnet.author_key(), d.jobs, 1, codehash, input, 5000).await?;
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
    println!(
        "  cargo run -q -- client run-job --file examples/factors.js --input '{{\"num\":10}}'"
    );
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    executor.stop().await
}
