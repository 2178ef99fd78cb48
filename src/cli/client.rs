//! The `client` commands: a job author's and an owner's thin command-line shells over the
//! library's `client::` (deploy code, run a job, set up and register an executor).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ethers::types::{Address, H256, U256};
use serverless_executor::client::admin;
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::jobs::{
    create_job, save_code, save_code_as, wait_for_response, CodeForm,
};
use serverless_executor::client::register::{register, RegisterRequest};
use serverless_executor::client::tee::{
    create_secret, create_tee_job, register_tee_node, SecretRequest,
};
use serverless_executor::domain::model::Protocol;

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
        /// v2's Executors (with --protocol v2).
        #[arg(long, env = "EXECUTOR_EXECUTORS_ADDRESS")]
        executors_address: Option<Address>,
        /// The TEE generation's TeeManager (with --protocol tee).
        #[arg(long, env = "EXECUTOR_TEE_MANAGER_ADDRESS")]
        tee_manager_address: Option<Address>,
        /// v2: registerExecutor on Executors; tee: registerTeeNode on TeeManager (the message
        /// must then carry storage_capacity).
        #[arg(long, env = "EXECUTOR_PROTOCOL", default_value = "v2")]
        protocol: Protocol,
        /// The owner's private key (hex); better passed in the environment.
        #[arg(long, env = "OWNER_KEY", hide_env_values = true)]
        owner_key: String,
    },
    /// TEE generation: create a secret on SecretManager (deposit approved first); prints its id
    /// and the stores selected to hold it.
    CreateSecret {
        /// Largest size of the secret, bytes (at most GLOBAL_MAX_SECRET_SIZE).
        #[arg(long)]
        size_limit: u64,
        /// How long the secret is kept, seconds from now.
        #[arg(long, default_value_t = 3600)]
        duration: u64,
        /// USDC base units, decimal (default: the minimum the contract asks).
        #[arg(long, value_parser = decimal_u256)]
        usdc_deposit: Option<U256>,
        /// Other job owners allowed to use it (comma-separated).
        #[arg(long, value_delimiter = ',')]
        allowed: Vec<Address>,
        #[arg(long, default_value_t = 1)]
        env: u8,
        #[arg(long, env = "EXECUTOR_SECRET_MANAGER_ADDRESS")]
        secret_manager_address: Address,
        #[command(flatten)]
        chain: ChainArgs,
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
        /// v2: createJob(env, codehash, inputs, deadline); tee: the TEE Jobs' createJob with a
        /// secret id.
        #[arg(long, env = "EXECUTOR_PROTOCOL", default_value = "v2")]
        protocol: Protocol,
        /// TEE generation: the secret the job reads (0: none).
        #[arg(long, default_value_t = 0)]
        secret_id: u64,
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
    /// The job author's private key (default: the devnet's job author, anvil's first dev
    /// account).
    #[arg(long, env = "CLIENT_KEY", default_value = DevAccount::JobAuthor.key(), hide_default_value = true)]
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
            tee_manager_address,
            protocol,
            owner_key,
        } => {
            let request = RegisterRequest {
                registration,
                attestation,
                attestation_signature: hex::decode(attestation_signature.trim_start_matches("0x"))
                    .context("--attestation-signature is not hex")?,
                stake,
            };
            let (enclave, tx) = match protocol {
                Protocol::V2 => {
                    let executors = executors_address.context(
                        "the Executors address is needed: --executors-address or EXECUTOR_EXECUTORS_ADDRESS",
                    )?;
                    register(&rpc_url, &owner_key, executors, &request).await?
                }
                Protocol::Tee => {
                    let tee_manager = tee_manager_address.context(
                        "the TeeManager address is needed: --tee-manager-address or EXECUTOR_TEE_MANAGER_ADDRESS",
                    )?;
                    register_tee_node(&rpc_url, &owner_key, tee_manager, &request).await?
                }
            };
            println!("registered enclave {enclave:?} in transaction {tx:?}");
        }
        ClientCommand::CreateSecret {
            size_limit,
            duration,
            usdc_deposit,
            allowed,
            env,
            secret_manager_address,
            chain,
        } => {
            let end = admin::now_secs().saturating_add(duration);
            let request = SecretRequest {
                env,
                size_limit: size_limit.into(),
                end_timestamp: end.into(),
                usdc_deposit,
                allowed,
            };
            let secret =
                create_secret(&chain.rpc_url, &chain.key, secret_manager_address, &request).await?;
            println!("secret id:  {}", secret.secret_id);
            for enclave in &secret.selected_enclaves {
                println!("store:      {enclave:?}");
            }
            println!("transaction {:?}", secret.tx_hash);
        }
        ClientCommand::RunJob {
            codehash,
            file,
            input,
            deadline,
            env,
            timeout,
            protocol,
            secret_id,
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
            let job = match protocol {
                Protocol::V2 if secret_id != 0 => {
                    bail!("--secret-id needs --protocol tee (v2 jobs have no secrets)")
                }
                Protocol::V2 => {
                    create_job(
                        &chain.rpc_url,
                        &chain.key,
                        chain.jobs()?,
                        env,
                        codehash,
                        input.as_bytes(),
                        deadline,
                    )
                    .await?
                }
                Protocol::Tee => {
                    create_tee_job(
                        &chain.rpc_url,
                        &chain.key,
                        chain.jobs()?,
                        env,
                        secret_id.into(),
                        codehash,
                        input.as_bytes(),
                        deadline,
                    )
                    .await?
                }
            };
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
