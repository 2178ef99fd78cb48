//! Deploys the dev contracts (contracts/artifacts, compiled from contracts/*.sol) and wires them:
//! two dev ERC20 tokens (POND for stakes, USDC for job fees, given to anvil's ten accounts), the
//! permissive attestation verifier, UserCode, Executors, Jobs, then the dev-only
//! `Executors.setJobsContract(jobs)` and `Executors.whitelistEnclaveImage(DEV_PCRS)`.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ethers::abi::{Abi, Tokenize};
use ethers::contract::ContractFactory;
use ethers::signers::Signer;
use ethers::types::{Address, Bytes, U256};
use serde::Deserialize;

use super::dev_accounts::DEV_KEYS;
use super::{client, wallet, Client};

const EXECUTORS_ARTIFACT: &str = include_str!("../../contracts/artifacts/Executors.json");
const JOBS_ARTIFACT: &str = include_str!("../../contracts/artifacts/Jobs.json");
const USER_CODE_ARTIFACT: &str = include_str!("../../contracts/artifacts/UserCode.json");
const TOKEN_ARTIFACT: &str = include_str!("../../contracts/artifacts/DevToken.json");
const VERIFIER_ARTIFACT: &str =
    include_str!("../../contracts/artifacts/DevAttestationVerifier.json");

/// PCR0..2 of the enclave image a dev deployment whitelists (48 bytes each, like Nitro's SHA-384
/// PCRs). Dev attestations carry them.
pub const DEV_PCRS: [[u8; 48]; 3] = [[0x11; 48], [0x22; 48], [0x33; 48]];

/// One POND or one USDC in base units (18 and 6 decimals).
pub const POND: u128 = 1_000_000_000_000_000_000;
pub const USDC: u128 = 1_000_000;

/// The constructor arguments of a dev deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployParams {
    /// `Jobs.EXECUTION_BUFFER_TIME`, seconds.
    pub execution_buffer_secs: u64,
    /// `Jobs.SIGN_MAX_AGE`, seconds.
    pub sign_max_age_secs: u64,
    /// `Executors.ATTESTATION_MAX_AGE`, seconds.
    pub attestation_max_age_secs: u64,
    /// `Jobs.NO_OF_NODES_TO_SELECT`.
    pub executors_to_select: u8,
    /// `Executors.MIN_STAKE_AMOUNT`, POND base units.
    pub min_stake: u128,
    /// `executionFeePerMs` and `stakingRewardPerMs` of every env, USDC base units per ms.
    pub execution_fee_per_ms: u128,
    pub staking_reward_per_ms: u128,
}

impl Default for DeployParams {
    fn default() -> Self {
        Self {
            execution_buffer_secs: 60,
            sign_max_age_secs: 600,
            attestation_max_age_secs: 600,
            executors_to_select: 3,
            min_stake: POND,
            execution_fee_per_ms: 1,
            staking_reward_per_ms: 1,
        }
    }
}

/// Where the contracts of one deployment live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    pub executors: Address,
    pub jobs: Address,
    pub user_code: Address,
    /// The stake token (`Executors.TOKEN`).
    pub pond: Address,
    /// The fee token (`Jobs.USDC_TOKEN`).
    pub usdc: Address,
    pub attestation_verifier: Address,
}

/// What a dev token gives each of anvil's accounts: plenty for any test.
const DEV_BALANCE_TOKENS: u128 = 1_000_000;

#[derive(Deserialize)]
struct Artifact {
    #[serde(rename = "contractName")]
    name: String,
    abi: Abi,
    bytecode: Bytes,
}

fn artifact(json: &str) -> Result<Artifact> {
    serde_json::from_str(json).context("a contract artifact in contracts/artifacts is malformed")
}

async fn deploy<T: Tokenize>(
    client: &Arc<Client>,
    artifact: &Artifact,
    args: T,
) -> Result<Address> {
    let factory = ContractFactory::new(
        artifact.abi.clone(),
        artifact.bytecode.clone(),
        client.clone(),
    );
    let (contract, receipt) = factory
        .deploy(args)
        .with_context(|| format!("encoding the {} constructor", artifact.name))?
        .send_with_receipt()
        .await
        .with_context(|| format!("deploying {}", artifact.name))?;
    if receipt.status != Some(1u64.into()) {
        bail!("deploying {} reverted", artifact.name);
    }
    Ok(contract.address())
}

/// Deploys the tokens, the verifier, UserCode, Executors and Jobs from `deployer_key`, wires Jobs
/// into Executors and whitelists the dev image.
pub async fn deploy_dev_contracts(
    http_url: &str,
    deployer_key: &str,
    params: DeployParams,
) -> Result<Deployment> {
    let client = client(http_url, deployer_key).await?;
    let holders = DEV_KEYS
        .iter()
        .map(|key| wallet(key).map(|w| w.address()))
        .collect::<Result<Vec<Address>>>()?;
    let token = artifact(TOKEN_ARTIFACT)?;
    let pond = deploy(
        &client,
        &token,
        (
            "Dev POND".to_string(),
            "POND".to_string(),
            18u8,
            holders.clone(),
            U256::from(DEV_BALANCE_TOKENS * POND),
        ),
    )
    .await?;
    let usdc = deploy(
        &client,
        &token,
        (
            "Dev USDC".to_string(),
            "USDC".to_string(),
            6u8,
            holders,
            U256::from(DEV_BALANCE_TOKENS * USDC),
        ),
    )
    .await?;
    let attestation_verifier = deploy(&client, &artifact(VERIFIER_ARTIFACT)?, ()).await?;
    let user_code = deploy(&client, &artifact(USER_CODE_ARTIFACT)?, ()).await?;
    let executors_artifact = artifact(EXECUTORS_ARTIFACT)?;
    let executors = deploy(
        &client,
        &executors_artifact,
        (
            pond,
            attestation_verifier,
            U256::from(params.attestation_max_age_secs),
            U256::from(params.min_stake),
        ),
    )
    .await?;
    let jobs = deploy(
        &client,
        &artifact(JOBS_ARTIFACT)?,
        (
            executors,
            usdc,
            U256::from(params.execution_buffer_secs),
            U256::from(params.sign_max_age_secs),
            U256::from(params.executors_to_select),
            U256::from(params.execution_fee_per_ms),
            U256::from(params.staking_reward_per_ms),
        ),
    )
    .await?;

    let contract = ethers::contract::Contract::new(executors, executors_artifact.abi, client);
    let [pcr0, pcr1, pcr2] = DEV_PCRS.map(|pcr| Bytes::from(pcr.to_vec()));
    let wiring = [
        (
            "Executors.setJobsContract",
            contract.method::<_, ()>("setJobsContract", jobs),
        ),
        (
            "Executors.whitelistEnclaveImage",
            contract.method::<_, ()>("whitelistEnclaveImage", (pcr0, pcr1, pcr2)),
        ),
    ];
    for (what, call) in wiring {
        let receipt = call
            .with_context(|| format!("encoding {what}"))?
            .send()
            .await
            .with_context(|| what.to_string())?
            .await
            .with_context(|| format!("waiting for {what}"))?
            .ok_or_else(|| anyhow!("{what} was dropped from the mempool"))?;
        if receipt.status != Some(1u64.into()) {
            bail!("{what} reverted");
        }
    }
    tracing::info!(
        ?executors,
        ?jobs,
        ?user_code,
        ?pond,
        ?usdc,
        "dev contracts deployed"
    );
    Ok(Deployment {
        executors,
        jobs,
        user_code,
        pond,
        usdc,
        attestation_verifier,
    })
}

/// The image id `keccak256(PCR0 ‖ PCR1 ‖ PCR2)` of the dev image (for `revokeEnclaveImage`).
pub fn dev_image_id() -> [u8; 32] {
    ethers::utils::keccak256(DEV_PCRS.concat())
}

/// Dev-only: revokes the dev image, so the chain no longer takes outputs of enclaves
/// registered with it (`AttestationAutherKeyNotVerified`).
pub async fn revoke_dev_image(
    http_url: &str,
    deployer_key: &str,
    deployment: &Deployment,
) -> Result<()> {
    let client = client(http_url, deployer_key).await?;
    let contract = ethers::contract::Contract::new(
        deployment.executors,
        artifact(EXECUTORS_ARTIFACT)?.abi,
        client,
    );
    let receipt = contract
        .method::<_, ()>("revokeEnclaveImage", dev_image_id())
        .context("encoding revokeEnclaveImage")?
        .send()
        .await
        .context("Executors.revokeEnclaveImage")?
        .await
        .context("waiting for Executors.revokeEnclaveImage")?
        .ok_or_else(|| anyhow!("Executors.revokeEnclaveImage was dropped from the mempool"))?;
    if receipt.status != Some(1u64.into()) {
        bail!("Executors.revokeEnclaveImage reverted");
    }
    Ok(())
}

const TEE_MANAGER_ARTIFACT: &str = include_str!("../../contracts/artifacts/tee/TeeManager.json");
const TEE_EXECUTORS_ARTIFACT: &str = include_str!("../../contracts/artifacts/tee/Executors.json");
const TEE_SECRET_STORE_ARTIFACT: &str =
    include_str!("../../contracts/artifacts/tee/SecretStore.json");
const TEE_SECRET_MANAGER_ARTIFACT: &str =
    include_str!("../../contracts/artifacts/tee/SecretManager.json");
const TEE_JOBS_ARTIFACT: &str = include_str!("../../contracts/artifacts/tee/Jobs.json");

/// The constructor arguments of a dev deployment of the TEE generation (contracts/tee).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeeDeployParams {
    /// `Jobs.EXECUTION_BUFFER_TIME`, seconds.
    pub execution_buffer_secs: u64,
    /// `Jobs.SIGN_MAX_AGE`, seconds.
    pub sign_max_age_secs: u64,
    /// `TeeManager.ATTESTATION_MAX_AGE` (attestations, registration and store signatures), seconds.
    pub attestation_max_age_secs: u64,
    /// `NO_OF_NODES_TO_SELECT` of Jobs and of SecretManager.
    pub nodes_to_select: u8,
    /// `TeeManager.MIN_STAKE_AMOUNT`, POND base units.
    pub min_stake: u128,
    /// `SLASH_PERCENT_IN_BIPS` of `SLASH_MAX_BIPS` (1e6).
    pub slash_bips: u64,
    /// `executionFeePerMs` and `stakingRewardPerMs` of env 1, USDC base units per ms.
    pub execution_fee_per_ms: u128,
    pub staking_reward_per_ms: u128,
    /// `SecretManager.GLOBAL_MAX_SECRET_SIZE`, bytes.
    pub global_max_secret_size: u64,
    /// Shortest and longest secret lifetime, seconds.
    pub min_store_duration_secs: u64,
    pub max_store_duration_secs: u64,
    /// `SecretManager.ACKNOWLEDGEMENT_TIMEOUT`, seconds.
    pub acknowledgement_timeout_secs: u64,
    /// `SecretManager.MARK_ALIVE_TIMEOUT`, seconds.
    pub mark_alive_timeout_secs: u64,
    /// `SecretManager.SECRET_STORE_FEE_RATE`, USDC base units per byte and second.
    pub secret_store_fee_rate: u128,
}

impl Default for TeeDeployParams {
    /// Marlin's wiring (N = 3, 1e6-byte secrets, 0.01 % slashes) with timeouts short enough for tests.
    fn default() -> Self {
        Self {
            execution_buffer_secs: 60,
            sign_max_age_secs: 600,
            attestation_max_age_secs: 600,
            nodes_to_select: 3,
            min_stake: POND,
            slash_bips: 100,
            execution_fee_per_ms: 1,
            staking_reward_per_ms: 1,
            global_max_secret_size: 1_000_000,
            min_store_duration_secs: 10,
            max_store_duration_secs: 1_000_000,
            acknowledgement_timeout_secs: 30,
            mark_alive_timeout_secs: 120,
            secret_store_fee_rate: 0,
        }
    }
}

/// Where the contracts of one TEE-generation deployment live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeeDeployment {
    pub tee_manager: Address,
    pub executors: Address,
    pub secret_store: Address,
    pub secret_manager: Address,
    pub jobs: Address,
    pub user_code: Address,
    pub pond: Address,
    pub usdc: Address,
    pub attestation_verifier: Address,
}

async fn send_wiring(
    client: &Arc<Client>,
    calls: Vec<(&str, Address, &Abi, &str, Vec<ethers::abi::Token>)>,
) -> Result<()> {
    use ethers::providers::Middleware;
    for (what, address, abi, method, args) in calls {
        let data = abi
            .function(method)
            .and_then(|f| f.encode_input(&args))
            .with_context(|| format!("encoding {what}"))?;
        let request = ethers::types::TransactionRequest::new()
            .to(address)
            .data(data);
        let receipt = client
            .send_transaction(request, None)
            .await
            .with_context(|| what.to_string())?
            .await
            .with_context(|| format!("waiting for {what}"))?
            .ok_or_else(|| anyhow!("{what} was dropped from the mempool"))?;
        if receipt.status != Some(1u64.into()) {
            bail!("{what} reverted");
        }
    }
    Ok(())
}

/// Deploys the TEE generation as Marlin's script wires it: tokens, verifier, UserCode,
/// TeeManager → Executors, SecretStore → Jobs → env 1 → SecretManager, each contract told of
/// the others, and the dev image whitelisted.
pub async fn deploy_tee_contracts(
    http_url: &str,
    deployer_key: &str,
    params: TeeDeployParams,
) -> Result<TeeDeployment> {
    use ethers::abi::Token;
    let client = client(http_url, deployer_key).await?;
    let deployer = client.address();
    let holders = DEV_KEYS
        .iter()
        .map(|key| wallet(key).map(|w| w.address()))
        .collect::<Result<Vec<Address>>>()?;
    let token = artifact(TOKEN_ARTIFACT)?;
    let pond = deploy(
        &client,
        &token,
        (
            "Dev POND".to_string(),
            "POND".to_string(),
            18u8,
            holders.clone(),
            U256::from(DEV_BALANCE_TOKENS * POND),
        ),
    )
    .await?;
    let usdc = deploy(
        &client,
        &token,
        (
            "Dev USDC".to_string(),
            "USDC".to_string(),
            6u8,
            holders,
            U256::from(DEV_BALANCE_TOKENS * USDC),
        ),
    )
    .await?;
    let attestation_verifier = deploy(&client, &artifact(VERIFIER_ARTIFACT)?, ()).await?;
    let user_code = deploy(&client, &artifact(USER_CODE_ARTIFACT)?, ()).await?;
    let tee_manager_artifact = artifact(TEE_MANAGER_ARTIFACT)?;
    let tee_manager = deploy(
        &client,
        &tee_manager_artifact,
        (
            attestation_verifier,
            U256::from(params.attestation_max_age_secs),
            pond,
            U256::from(params.min_stake),
            U256::from(params.slash_bips),
            U256::from(1_000_000u64),
        ),
    )
    .await?;
    let executors_artifact = artifact(TEE_EXECUTORS_ARTIFACT)?;
    let executors = deploy(&client, &executors_artifact, tee_manager).await?;
    let store_artifact = artifact(TEE_SECRET_STORE_ARTIFACT)?;
    let secret_store = deploy(&client, &store_artifact, tee_manager).await?;
    let jobs_artifact = artifact(TEE_JOBS_ARTIFACT)?;
    let jobs = deploy(
        &client,
        &jobs_artifact,
        (
            pond,
            usdc,
            U256::from(params.sign_max_age_secs),
            U256::from(params.execution_buffer_secs),
            U256::from(params.nodes_to_select),
            deployer,
            deployer,
        ),
    )
    .await?;
    let manager_artifact = artifact(TEE_SECRET_MANAGER_ARTIFACT)?;
    let secret_manager = deploy(
        &client,
        &manager_artifact,
        (
            usdc,
            U256::from(params.nodes_to_select),
            U256::from(params.global_max_secret_size),
            U256::from(params.min_store_duration_secs),
            U256::from(params.max_store_duration_secs),
            U256::from(params.acknowledgement_timeout_secs),
            U256::from(params.mark_alive_timeout_secs),
            U256::from(params.secret_store_fee_rate),
            deployer,
            tee_manager,
            executors,
            secret_store,
        ),
    )
    .await?;
    let address = |a: Address| vec![Token::Address(a)];
    let [pcr0, pcr1, pcr2] = DEV_PCRS.map(|pcr| Token::Bytes(pcr.to_vec()));
    send_wiring(
        &client,
        vec![
            (
                "TeeManager.setExecutors",
                tee_manager,
                &tee_manager_artifact.abi,
                "setExecutors",
                address(executors),
            ),
            (
                "TeeManager.setSecretStore",
                tee_manager,
                &tee_manager_artifact.abi,
                "setSecretStore",
                address(secret_store),
            ),
            (
                "Executors.setJobs",
                executors,
                &executors_artifact.abi,
                "setJobs",
                address(jobs),
            ),
            (
                "SecretStore.setJobs",
                secret_store,
                &store_artifact.abi,
                "setJobs",
                address(jobs),
            ),
            (
                "SecretStore.setSecretManager",
                secret_store,
                &store_artifact.abi,
                "setSecretManager",
                address(secret_manager),
            ),
            (
                "Jobs.setTeeManager",
                jobs,
                &jobs_artifact.abi,
                "setTeeManager",
                address(tee_manager),
            ),
            (
                "Jobs.setExecutors",
                jobs,
                &jobs_artifact.abi,
                "setExecutors",
                address(executors),
            ),
            (
                "Jobs.setSecretStore",
                jobs,
                &jobs_artifact.abi,
                "setSecretStore",
                address(secret_store),
            ),
            (
                "Jobs.setSecretManager",
                jobs,
                &jobs_artifact.abi,
                "setSecretManager",
                address(secret_manager),
            ),
            (
                "Jobs.addGlobalEnv",
                jobs,
                &jobs_artifact.abi,
                "addGlobalEnv",
                vec![
                    Token::Uint(1u64.into()),
                    Token::Uint(params.execution_fee_per_ms.into()),
                    Token::Uint(params.staking_reward_per_ms.into()),
                ],
            ),
            (
                "TeeManager.whitelistEnclaveImage",
                tee_manager,
                &tee_manager_artifact.abi,
                "whitelistEnclaveImage",
                vec![pcr0, pcr1, pcr2],
            ),
        ],
    )
    .await?;
    tracing::info!(
        ?tee_manager,
        ?jobs,
        ?secret_manager,
        ?user_code,
        "TEE dev contracts deployed"
    );
    Ok(TeeDeployment {
        tee_manager,
        executors,
        secret_store,
        secret_manager,
        jobs,
        user_code,
        pond,
        usdc,
        attestation_verifier,
    })
}
