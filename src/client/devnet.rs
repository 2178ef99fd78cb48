//! A whole local network in one call: anvil, the dev contracts, and executors started in this
//! process, configured over their own HTTP API and registered on chain exactly as an operator
//! would. Used by the `devnet` command and the end-to-end tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ethers::types::Address;
use serde_json::{json, Value};

use super::anvil::Anvil;
use super::deploy::{deploy_dev_contracts, DeployParams, Deployment};
use super::jobs::{register_executor, ExecutorRegistration};
use crate::bootstrap::{self, Running};
use crate::config::Config;
use crate::effects::signer::EnclaveKey;

/// Anvil's account that deploys contracts and creates jobs.
pub const AUTHOR_KEY_INDEX: usize = 0;

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
    pub deployment: Deployment,
    pub options: DevnetOptions,
}

/// An executor of the devnet, running in this process.
pub struct DevExecutor {
    pub running: Running,
    pub api_url: String,
    pub enclave: Address,
    /// The anvil account that owns it on chain.
    pub owner_key: String,
}

/// Settings of one devnet executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Which of anvil's accounts owns it (1..=4); gas is paid by the account 5 above it.
    pub account: usize,
    pub job_capacity: usize,
    /// The executor's API port (0: any free one).
    pub api_port: u16,
    /// Extra `EXECUTOR_*` settings (names without the prefix).
    pub extra: Vec<(String, String)>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            account: 1,
            job_capacity: 4,
            api_port: 0,
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
            anvil.key(AUTHOR_KEY_INDEX),
            options.deploy,
        )
        .await
        .context("deploying the dev contracts")?;
        Ok(Self {
            anvil,
            deployment,
            options,
        })
    }

    pub fn author_key(&self) -> &'static str {
        self.anvil.key(AUTHOR_KEY_INDEX)
    }

    /// The executor settings that point at this devnet.
    pub fn executor_config(&self, dir: &Path, opts: &ExecutorOptions) -> Result<Config> {
        let raw = self.executor_settings(dir, opts);
        Config::from_map(&raw).map_err(|e| anyhow!("devnet executor settings: {e}"))
    }

    /// The same settings as raw `EXECUTOR_*` values (names without the prefix), e.g. for an
    /// executor started as a separate process.
    pub fn executor_settings(&self, dir: &Path, opts: &ExecutorOptions) -> HashMap<String, String> {
        let d = &self.deployment;
        let mut raw: HashMap<String, String> = [
            ("PORT", opts.api_port.to_string()),
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
                "CGROUP_PARENT",
                format!(
                    "serverless-executor-devnet-{}-{}",
                    std::process::id(),
                    opts.account
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in &opts.extra {
            raw.insert(k.clone(), v.clone());
        }
        raw
    }

    /// Starts an executor with a fresh enclave key, configures it over its HTTP API, registers
    /// it on chain and waits until it serves.
    pub async fn start_executor(&self, opts: ExecutorOptions) -> Result<DevExecutor> {
        if !(1..=4).contains(&opts.account) {
            bail!("devnet executor accounts are 1 to 4");
        }
        let dir = self
            .options
            .work_dir
            .join(format!("executor-{}", opts.account));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key_file = dir.join("enclave.key");
        if !key_file.exists() {
            EnclaveKey::generate(&key_file)?;
        }
        let config = self.executor_config(&dir, &opts)?;
        let running = bootstrap::start(config).await?;
        let api_url = format!("http://{}", running.api_addr);
        let enclave = self.register_over_api(&api_url, opts.account).await?;
        let executor = DevExecutor {
            running,
            api_url,
            enclave,
            owner_key: self.anvil.key(opts.account).to_string(),
        };
        executor
            .wait_for_status("serving", Duration::from_secs(30))
            .await?;
        Ok(executor)
    }

    /// Configures the executor serving `api_url` over its API (owner: anvil account
    /// `account`, gas: the account 5 above) and registers it on chain; returns its enclave.
    pub async fn register_over_api(&self, api_url: &str, account: usize) -> Result<Address> {
        let owner_key = self.anvil.key(account).to_string();
        let gas_key = self.anvil.key(account + 5).to_string();
        let owner = super::wallet(&owner_key)?;
        let http = reqwest::Client::new();
        let api = Api {
            http: &http,
            base: api_url,
        };
        api.post(
            "/immutable-config",
            json!({ "owner_address_hex": format!("{:?}", ethers::signers::Signer::address(&owner)) }),
        )
        .await?;
        api.post("/mutable-config", json!({ "gas_key_hex": gas_key }))
            .await?;
        let details = api.get("/executor-details").await?;
        let registration = api.get("/signed-registration-message").await?;
        let enclave: Address = field(&details, "enclave_address")?.parse()?;
        let public_key =
            hex::decode(field(&details, "enclave_public_key")?.trim_start_matches("0x"))?;
        let signature = hex::decode(field(&registration, "signature")?.trim_start_matches("0x"))?;
        let reg = ExecutorRegistration {
            enclave_public_key: public_key
                .try_into()
                .map_err(|_| anyhow!("the executor's public key is not 64 bytes"))?,
            job_capacity: number(&registration, "job_capacity")?,
            sign_timestamp: number(&registration, "sign_timestamp")?,
            signature,
            env: number(&registration, "env")? as u8,
            stake_amount: 0.into(),
        };
        register_executor(
            &self.anvil.http_url(),
            &owner_key,
            self.deployment.executors,
            &reg,
        )
        .await
        .context("registering the executor on chain")?;
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

/// Waits until the health of the executor at `api_url` reports `status` as its chain status.
pub async fn wait_for_chain_status(api_url: &str, status: &str, timeout: Duration) -> Result<()> {
    {
        let http = reqwest::Client::new();
        let api = Api {
            http: &http,
            base: api_url,
        };
        let started = tokio::time::Instant::now();
        loop {
            let health = api.get("/").await?;
            if health["chain_status"] == status {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!("the executor did not reach chain status {status} in {timeout:?}: {health}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Api<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
}

impl Api<'_> {
    async fn get(&self, path: &str) -> Result<Value> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await?;
        Self::body(path, r).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?;
        Self::body(path, r).await
    }

    async fn body(path: &str, r: reqwest::Response) -> Result<Value> {
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str> {
    body[name]
        .as_str()
        .ok_or_else(|| anyhow!("the executor's answer lacks {name}: {body}"))
}

fn number(body: &Value, name: &str) -> Result<u64> {
    body[name]
        .as_u64()
        .ok_or_else(|| anyhow!("the executor's answer lacks {name}: {body}"))
}
