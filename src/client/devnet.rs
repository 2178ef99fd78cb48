//! A whole local network in one call: anvil, the dev contracts, and executors started in this
//! process, configured over their own HTTP API and registered on chain exactly as an operator
//! would. Used by the `devnet` command and the end-to-end tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ethers::types::Address;
use serde_json::Value;

use super::admin;
use super::anvil::Anvil;
use super::deploy::{
    deploy_dev_contracts, deploy_tee_contracts, DeployParams, Deployment, TeeDeployParams,
    TeeDeployment,
};
use super::dev_accounts::{DevAccount, EXECUTORS};
use super::register;
use crate::bootstrap::{self, Running};
use crate::config::Config;
use crate::effects::signer::EnclaveKey;

/// Numbers the executors this process made (their cgroups must not collide).
static NEXT_EXECUTOR: AtomicUsize = AtomicUsize::new(0);

/// What the devnet is made of.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Anvil's port; a free one when None.
    pub anvil_port: Option<u16>,
    pub deploy: DeployParams,
    /// Scratch directory for executors' keys and data.
    pub work_dir: PathBuf,
}

/// A running anvil with the dev contracts deployed.
pub struct Devnet {
    pub anvil: Anvil,
    /// The v2 contracts; on a TEE devnet the same roles: `executors` is the TeeManager (the
    /// registry), `jobs` the TEE Jobs.
    pub deployment: Deployment,
    pub options: DevnetOptions,
    /// A TEE-generation devnet (`start_tee`): its contracts and parameters.
    pub tee: Option<TeeDevnet>,
}

/// What a TEE-generation devnet adds.
#[derive(Debug, Clone, Copy)]
pub struct TeeDevnet {
    pub deployment: TeeDeployment,
    pub params: TeeDeployParams,
}

/// An executor of the devnet, running in this process.
pub struct DevExecutor {
    pub running: Running,
    pub api_url: String,
    /// The admin (operator) API.
    pub admin_url: String,
    pub enclave: Address,
    /// The anvil account that owns it on chain.
    pub owner_key: String,
}

/// Settings of one devnet executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Which devnet executor it is (1..=4): the dev account that owns it (`dev_accounts`).
    pub account: usize,
    pub job_capacity: usize,
    /// The executor's API port (0: any free one).
    pub api_port: u16,
    /// The executor's admin API port (0: any free one).
    pub admin_port: u16,
    /// Extra `EXECUTOR_*` settings (names without the prefix).
    pub extra: Vec<(String, String)>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            account: 1,
            job_capacity: 4,
            api_port: 0,
            admin_port: 0,
            extra: vec![],
        }
    }
}

impl Devnet {
    /// Starts anvil and deploys the contracts.
    pub async fn start(options: DevnetOptions) -> Result<Self> {
        let anvil = Anvil::start(options.anvil_port, None).await?;
        let deployment = deploy_dev_contracts(
            &anvil.http_url(),
            DevAccount::Deployer.key(),
            options.deploy,
        )
        .await
        .context("deploying the dev contracts")?;
        Ok(Self {
            anvil,
            deployment,
            options,
            tee: None,
        })
    }

    /// Starts anvil and deploys the TEE generation's dev contracts (contracts/tee); its executors
    /// run with `EXECUTOR_PROTOCOL=tee` and register on TeeManager.
    pub async fn start_tee(options: DevnetOptions, params: TeeDeployParams) -> Result<Self> {
        let anvil = Anvil::start(options.anvil_port, None).await?;
        let tee = deploy_tee_contracts(&anvil.http_url(), DevAccount::Deployer.key(), params)
            .await
            .context("deploying the TEE dev contracts")?;
        let deployment = Deployment {
            executors: tee.tee_manager,
            jobs: tee.jobs,
            user_code: tee.user_code,
            pond: tee.pond,
            usdc: tee.usdc,
            attestation_verifier: tee.attestation_verifier,
        };
        Ok(Self {
            anvil,
            deployment,
            options,
            tee: Some(TeeDevnet {
                deployment: tee,
                params,
            }),
        })
    }

    pub fn author_key(&self) -> &'static str {
        DevAccount::JobAuthor.key()
    }

    /// The executor settings that point at this devnet, as `EXECUTOR_*` names without the
    /// prefix (a separate executor process gets them as environment variables).
    pub fn executor_settings(&self, dir: &Path, opts: &ExecutorOptions) -> HashMap<String, String> {
        let d = &self.deployment;
        let mut raw: HashMap<String, String> = [
            ("PORT", opts.api_port.to_string()),
            ("ADMIN_PORT", opts.admin_port.to_string()),
            (
                "ENCLAVE_KEY_FILE",
                dir.join("enclave.key").display().to_string(),
            ),
            ("DATA_DIR", dir.join("data").display().to_string()),
            ("SANDBOX_DIR", dir.join("sandbox").display().to_string()),
            ("JOB_CAPACITY", opts.job_capacity.to_string()),
            ("RPC_HTTP_URL", self.anvil.http_url()),
            ("RPC_WS_URL", self.anvil.ws_url()),
            ("CHAIN_ID", self.anvil.chain_id().to_string()),
            ("EXECUTORS_ADDRESS", format!("{:?}", d.executors)),
            ("JOBS_ADDRESS", format!("{:?}", d.jobs)),
            ("USER_CODE_ADDRESS", format!("{:?}", d.user_code)),
            (
                "EXECUTION_BUFFER_TIME",
                self.options.deploy.execution_buffer_secs.to_string(),
            ),
            (
                "NUM_SELECTED_EXECUTORS",
                self.options.deploy.executors_to_select.to_string(),
            ),
            (
                // Unique per executor: tests run several devnets in one process at once.
                "CGROUP_PARENT",
                format!(
                    "serverless-executor-devnet-{}-{}-{}",
                    std::process::id(),
                    opts.account,
                    NEXT_EXECUTOR.fetch_add(1, Ordering::Relaxed)
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(tee) = &self.tee {
            raw.remove("EXECUTORS_ADDRESS");
            for (k, v) in [
                ("PROTOCOL", "tee".to_string()),
                (
                    "TEE_MANAGER_ADDRESS",
                    format!("{:?}", tee.deployment.tee_manager),
                ),
                (
                    "SECRET_MANAGER_ADDRESS",
                    format!("{:?}", tee.deployment.secret_manager),
                ),
                (
                    "EXECUTION_BUFFER_TIME",
                    tee.params.execution_buffer_secs.to_string(),
                ),
                (
                    "NUM_SELECTED_EXECUTORS",
                    tee.params.nodes_to_select.to_string(),
                ),
            ] {
                raw.insert(k.to_string(), v);
            }
        }
        for (k, v) in &opts.extra {
            raw.insert(k.clone(), v.clone());
        }
        raw
    }

    /// The executor settings that point at this devnet.
    pub fn executor_config(&self, dir: &Path, opts: &ExecutorOptions) -> Result<Config> {
        Config::from_map(&self.executor_settings(dir, opts))
            .map_err(|e| anyhow!("devnet executor settings: {e}"))
    }

    /// The directory of account `account`'s executor, with its enclave key (made if missing).
    pub fn executor_dir(&self, account: usize) -> Result<PathBuf> {
        if !EXECUTORS.contains(&account) {
            bail!("devnet executor accounts are 1 to 4");
        }
        let dir = self.options.work_dir.join(format!("executor-{account}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key_file = dir.join("enclave.key");
        if !key_file.exists() {
            EnclaveKey::generate(&key_file)?;
        }
        Ok(dir)
    }

    /// Starts an executor with a fresh enclave key, configures it over its HTTP API, registers
    /// it on chain and waits until it serves.
    pub async fn start_executor(&self, opts: ExecutorOptions) -> Result<DevExecutor> {
        let dir = self.executor_dir(opts.account)?;
        let config = self.executor_config(&dir, &opts)?;
        let running = bootstrap::start(config).await?;
        let api_url = format!("http://{}", running.api_addr);
        let admin_url = format!("http://{}", running.admin_addr);
        let enclave = self.enroll(&api_url, &admin_url, opts.account).await?;
        let executor = DevExecutor {
            running,
            api_url,
            admin_url,
            enclave,
            owner_key: DevAccount::ExecutorOwner(opts.account).key().to_string(),
        };
        executor
            .wait_for_status("serving", Duration::from_secs(30))
            .await?;
        Ok(executor)
    }

    /// Does what an operator does for the executor serving `api_url` (public) and `admin_url`
    /// (admin listener), devnet executor `account` (`dev_accounts`): sets the owner, then the
    /// gas key signed by the owner, then registers the enclave on chain with the signed
    /// registration message. Returns the enclave address.
    pub async fn enroll(&self, api_url: &str, admin_url: &str, account: usize) -> Result<Address> {
        let owner_key = DevAccount::ExecutorOwner(account).key().to_string();
        let gas_key = DevAccount::ExecutorGas(account).key().to_string();
        let owner = super::wallet(&owner_key)?;
        let http = reqwest::Client::new();
        let owner_address = ethers::signers::Signer::address(&owner);
        admin::post(
            &http,
            admin_url,
            "/immutable-config",
            &admin::immutable_config_body(owner_address),
        )
        .await?;
        let enclave = admin::enclave_address(&http, api_url).await?;
        let body =
            admin::signed_mutable_config_body(&owner, enclave, &gas_key, admin::now_secs()).await?;
        admin::post(&http, admin_url, "/mutable-config", &body).await?;
        // The owner's registration, exactly as `client register` does it: the signed message
        // from the executor's API, a dev attestation of its key (file), the dev verifier.
        let details = admin::get(&http, api_url, "/executor-details").await?;
        let public_key: [u8; 64] =
            hex::decode(field(&details, "enclave_public_key")?.trim_start_matches("0x"))?
                .try_into()
                .map_err(|_| anyhow!("the executor's public key is not 64 bytes"))?;
        let attestation_file = self
            .options
            .work_dir
            .join(format!("attestation-{account}-{enclave:?}.json"));
        std::fs::create_dir_all(&self.options.work_dir)
            .with_context(|| format!("cannot create {}", self.options.work_dir.display()))?;
        std::fs::write(
            &attestation_file,
            register::dev_attestation_json(public_key).to_string(),
        )
        .with_context(|| format!("cannot write {}", attestation_file.display()))?;
        let request = register::RegisterRequest {
            registration: format!("{api_url}/signed-registration-message"),
            attestation: attestation_file.display().to_string(),
            attestation_signature: vec![],
            stake: None,
        };
        let (registered, _) = match &self.tee {
            None => {
                register::register(
                    &self.anvil.http_url(),
                    &owner_key,
                    self.deployment.executors,
                    &request,
                )
                .await
            }
            Some(tee) => {
                super::tee::register_tee_node(
                    &self.anvil.http_url(),
                    &owner_key,
                    tee.deployment.tee_manager,
                    &request,
                )
                .await
            }
        }
        .context("registering the executor on chain")?;
        if registered != enclave {
            bail!("registered {registered:?}, but the executor's enclave is {enclave:?}");
        }
        Ok(enclave)
    }
}

impl DevExecutor {
    /// Waits until the executor's health reports `status` as its chain status.
    pub async fn wait_for_status(&self, status: &str, timeout: Duration) -> Result<()> {
        wait_for_chain_status(&self.api_url, status, timeout).await
    }

    /// Stops the executor gracefully.
    pub async fn stop(self) -> Result<()> {
        self.running.shutdown(Duration::from_secs(10)).await
    }
}

/// Waits until the executor serving `api_url` reports `status` as its chain status.
pub async fn wait_for_chain_status(api_url: &str, status: &str, timeout: Duration) -> Result<()> {
    let http = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    loop {
        // A process still starting refuses connections: that is not an answer yet.
        match admin::get(&http, api_url, "/").await {
            Ok(health) if health["chain_status"] == status => return Ok(()),
            Ok(health) if started.elapsed() > timeout => {
                bail!("the executor did not reach chain status {status} in {timeout:?}: {health}")
            }
            Err(e) if started.elapsed() > timeout => {
                bail!("the executor at {api_url} did not answer in {timeout:?}: {e}")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str> {
    body[name]
        .as_str()
        .ok_or_else(|| anyhow!("the executor's answer lacks {name}: {body}"))
}
