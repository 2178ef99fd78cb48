//! A devnet fixture for integration tests: a fresh anvil with the dev contracts deployed, and
//! helpers to register enclaves, save code, create jobs and sign outputs the way the executor
//! does (EIP-712 digests of `domain::eip712`, signed by `effects::signer::EnclaveKey`).

#![allow(dead_code)]

use ethers::providers::{Http, Middleware, Provider};
use ethers::types::{Address, BlockNumber, H256, U256};
use serverless_executor::client::anvil::Anvil;
use serverless_executor::client::deploy::{deploy_dev_contracts, DeployParams, Deployment};
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::jobs::{self, AttestationProof, CreatedJob, ExecutorRegistration};
use serverless_executor::config::ChainConfig;
use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::domain::eip712::{output_digest, registration_digest};
use serverless_executor::domain::model::{ErrorCode, SignedOutput, EXECUTOR_ENV};
use serverless_executor::effects::signer::EnclaveKey;

/// Dev account indexes of the fixture's roles, from the one table in `client::dev_accounts`.
pub const DEPLOYER: usize = DevAccount::Deployer.index();
pub const JOB_AUTHOR: usize = DevAccount::JobAuthor.index();
pub const OPERATOR: usize = DevAccount::ExecutorOwner(1).index();
/// The gas key of executors under test (the next accounts too, for a test's second sender).
pub const FIRST_GAS_ACCOUNT: usize = DevAccount::ExecutorGas(1).index();

/// anvil + dev contracts.
pub struct Devnet {
    pub anvil: Anvil,
    pub deployment: Deployment,
    pub params: DeployParams,
}

impl Devnet {
    /// Starts anvil (automine) and deploys the dev contracts with `params`.
    pub async fn start(params: DeployParams) -> Devnet {
        let anvil = Anvil::start(None, None).await.expect("anvil starts");
        let deployment = deploy_dev_contracts(&anvil.http_url(), anvil.key(DEPLOYER), params)
            .await
            .expect("dev contracts deploy");
        Devnet {
            anvil,
            deployment,
            params,
        }
    }

    pub fn http_url(&self) -> String {
        self.anvil.http_url()
    }

    pub fn ws_url(&self) -> String {
        self.anvil.ws_url()
    }

    pub fn provider(&self) -> Provider<Http> {
        Provider::<Http>::try_from(self.http_url()).expect("anvil URL parses")
    }

    /// The executor's chain settings for this devnet.
    pub fn chain_config(&self) -> ChainConfig {
        ChainConfig {
            rpc_http_url: self.http_url(),
            rpc_ws_url: self.ws_url(),
            chain_id: self.anvil.chain_id(),
            protocol: serverless_executor::domain::model::Protocol::V2,
            executors_address: self.deployment.executors,
            jobs_address: self.deployment.jobs,
            user_code_address: self.deployment.user_code,
            execution_buffer_secs: self.params.execution_buffer_secs,
            selected_executors: u64::from(self.params.executors_to_select),
            code_cache_size: 16,
            start_block: None,
        }
    }

    /// The private key of dev account `index`.
    pub fn key(&self, index: usize) -> [u8; 32] {
        let digits = self.anvil.key(index).trim_start_matches("0x");
        hex::decode(digits)
            .expect("dev keys are hex")
            .try_into()
            .expect("dev keys have 32 bytes")
    }

    pub async fn head(&self) -> u64 {
        self.provider()
            .get_block_number()
            .await
            .expect("eth_blockNumber")
            .as_u64()
    }

    /// The timestamp (unix seconds) of the latest block: the chain's "now".
    pub async fn chain_time(&self) -> u64 {
        self.provider()
            .get_block(BlockNumber::Latest)
            .await
            .expect("eth_getBlockByNumber")
            .expect("a latest block")
            .timestamp
            .as_u64()
    }

    /// Registers `enclave` (owner: dev account `owner`) with `job_capacity` slots, env 1.
    pub async fn register(&self, enclave: &EnclaveKey, owner: usize, job_capacity: u64) {
        let owner_address = serverless_executor::client::wallet(self.anvil.key(owner))
            .map(|w| ethers::signers::Signer::address(&w))
            .expect("dev key");
        let sign_timestamp = self.chain_time().await;
        let digest = registration_digest(owner_address, job_capacity, EXECUTOR_ENV, sign_timestamp);
        let signature = enclave.sign_digest(digest).expect("enclave signs");
        jobs::register_executor(
            &self.http_url(),
            self.anvil.key(owner),
            self.deployment.executors,
            &ExecutorRegistration {
                job_capacity,
                sign_timestamp,
                signature: signature.to_vec(),
                env: EXECUTOR_ENV,
                stake_amount: U256::from(self.params.min_stake),
            },
            &AttestationProof::dev(enclave.public_key()),
        )
        .await
        .expect("registerExecutor");
    }

    /// Saves `source` with the job author's key; returns the codehash.
    pub async fn save_code(&self, source: &str) -> H256 {
        jobs::save_code(
            &self.http_url(),
            self.anvil.key(JOB_AUTHOR),
            self.deployment.user_code,
            source,
        )
        .await
        .expect("saveCodeInCallData")
    }

    /// Creates a job (env 1) with the job author's key.
    pub async fn create_job(&self, codehash: H256, inputs: &[u8], deadline_ms: u64) -> CreatedJob {
        jobs::create_job(
            &self.http_url(),
            self.anvil.key(JOB_AUTHOR),
            self.deployment.jobs,
            EXECUTOR_ENV,
            codehash,
            inputs,
            deadline_ms,
        )
        .await
        .expect("createJob")
    }

    /// Moves the chain's clock forward by `seconds` and mines a block.
    pub async fn advance(&self, seconds: u64) {
        self.anvil
            .increase_time(seconds)
            .await
            .expect("evm_increaseTime");
        self.anvil.mine().await.expect("evm_mine");
    }
}

/// A fresh random enclave identity.
pub fn random_enclave() -> EnclaveKey {
    loop {
        let secret: [u8; 32] = rand::random();
        if let Some(key) = EnclaveKey::from_secret(&secret) {
            return key;
        }
    }
}

/// Signs an output as the executor does.
pub fn sign_output(
    enclave: &EnclaveKey,
    job_id: U256,
    output: &[u8],
    total_time_ms: u64,
    error_code: ErrorCode,
    sign_timestamp: u64,
) -> SignedOutput {
    let digest = output_digest(
        job_id,
        output,
        total_time_ms,
        error_code.as_u8(),
        sign_timestamp,
    );
    SignedOutput {
        job_id,
        output: output.to_vec(),
        total_time_ms,
        error_code,
        sign_timestamp,
        signature: enclave.sign_digest(digest).expect("enclave signs").to_vec(),
    }
}

/// The address of dev account `index`.
pub fn dev_address(devnet: &Devnet, index: usize) -> Address {
    let wallet = serverless_executor::client::wallet(devnet.anvil.key(index)).expect("dev key");
    ethers::signers::Signer::address(&wallet)
}
