//! The TEE generation's owner and user tooling, through the protocol surface (`effects::chain::tee`):
//! register a TEE node on TeeManager (stake approved to TeeManager first), drain / revive /
//! deregister it, create a job with a secret id on the TEE Jobs, create a secret on SecretManager.

use anyhow::{anyhow, bail, Context, Result};
use ethers::contract::{ContractCall, EthEvent};
use ethers::signers::Signer;
use ethers::types::{Address, H256, U256};
use serde_json::Value;

use super::jobs::{approve_exactly, job_price, send, CreatedJob};
use super::register::{parse_attestation, parse_registration, read_source, RegisterRequest};
use super::{client, wallet, Client};
use crate::effects::chain::tee::{
    Attestation, JobCreatedFilter, SecretCreatedFilter, SecretManager, TeeJobs, TeeManager,
};

/// The storage capacity of a TEE registration message (`storage_capacity`, bytes).
pub fn storage_capacity_of(message: &[u8]) -> Result<u64> {
    let body: Value = serde_json::from_slice(message)
        .context("the registration message is not JSON from GET /signed-registration-message")?;
    body["storage_capacity"].as_u64().ok_or_else(|| {
        anyhow!(
            "the registration message has no storage_capacity: the executor does not run with \
             EXECUTOR_PROTOCOL=tee"
        )
    })
}

/// Registers a TEE node from `owner_key`: checks the message was signed for this owner, approves
/// the stake to TeeManager, calls `registerTeeNode`. Returns the enclave address and transaction.
pub async fn register_tee_node(
    http_url: &str,
    owner_key: &str,
    tee_manager: Address,
    request: &RegisterRequest,
) -> Result<(Address, H256)> {
    let owner = wallet(owner_key).context("the owner key")?.address();
    let message = read_source(&request.registration).await?;
    let (registration, signed_for) = parse_registration(&message)?;
    let storage_capacity = storage_capacity_of(&message)?;
    if signed_for != owner {
        bail!(
            "the registration message was signed for owner {signed_for:?}, but the owner key is \
             {owner:?}: the executor's immutable config must name the account that registers it"
        );
    }
    let mut proof = parse_attestation(&read_source(&request.attestation).await?)?;
    proof.signature = request.attestation_signature.clone();
    let client = client(http_url, owner_key).await?;
    let contract = TeeManager::new(tee_manager, client.clone());
    let stake = match request.stake {
        Some(stake) => stake,
        None => contract
            .min_stake_amount()
            .call()
            .await
            .context("reading TeeManager.MIN_STAKE_AMOUNT")?,
    };
    if !stake.is_zero() {
        let token = contract
            .staking_token()
            .call()
            .await
            .context("reading TeeManager.STAKING_TOKEN")?;
        approve_exactly(&client, token, tee_manager, stake, "the stake").await?;
    }
    let attestation = Attestation {
        enclave_pub_key: proof.enclave_public_key.clone().into(),
        pcr0: proof.pcr0.clone().into(),
        pcr1: proof.pcr1.clone().into(),
        pcr2: proof.pcr2.clone().into(),
        timestamp_in_milliseconds: U256::from(proof.timestamp_ms),
    };
    let call = contract.register_tee_node(
        proof.signature.clone().into(),
        attestation,
        U256::from(registration.job_capacity),
        U256::from(storage_capacity),
        registration.env,
        U256::from(registration.sign_timestamp),
        registration.signature.clone().into(),
        stake,
    );
    let tx = send("TeeManager.registerTeeNode", call)
        .await?
        .transaction_hash;
    let enclave = Address::from_slice(&ethers::utils::keccak256(&proof.enclave_public_key)[12..]);
    Ok((enclave, tx))
}

/// The owner's node calls on TeeManager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeCall {
    Drain,
    Revive,
    Deregister,
}

/// `drainTeeNode` / `reviveTeeNode` / `deregisterTeeNode(enclave)` from the owner's key.
pub async fn tee_node_call(
    http_url: &str,
    owner_key: &str,
    tee_manager: Address,
    enclave: Address,
    which: NodeCall,
) -> Result<H256> {
    let contract = TeeManager::new(tee_manager, client(http_url, owner_key).await?);
    let (name, call): (&str, ContractCall<Client, ()>) = match which {
        NodeCall::Drain => ("TeeManager.drainTeeNode", contract.drain_tee_node(enclave)),
        NodeCall::Revive => (
            "TeeManager.reviveTeeNode",
            contract.revive_tee_node(enclave),
        ),
        NodeCall::Deregister => (
            "TeeManager.deregisterTeeNode",
            contract.deregister_tee_node(enclave),
        ),
    };
    Ok(send(name, call).await?.transaction_hash)
}

/// `createJob(env, secretId, codehash, inputs, deadline_ms)` on the TEE Jobs, after approving
/// exactly its escrow; the id and selection come from the receipt's `JobCreated`.
#[allow(clippy::too_many_arguments)]
pub async fn create_tee_job(
    http_url: &str,
    key: &str,
    jobs: Address,
    env: u8,
    secret_id: U256,
    codehash: H256,
    inputs: &[u8],
    deadline_ms: u64,
) -> Result<CreatedJob> {
    let client = client(http_url, key).await?;
    let (price, token) = job_price(client.clone(), jobs, env, deadline_ms).await?;
    approve_exactly(&client, token, jobs, price, "the job's escrow").await?;
    let contract = TeeJobs::new(jobs, client);
    let receipt = send(
        "Jobs.createJob",
        contract.create_job(
            env,
            secret_id,
            codehash.0,
            inputs.to_vec().into(),
            deadline_ms.into(),
        ),
    )
    .await?;
    let created = receipt
        .logs
        .iter()
        .filter(|log| log.address == jobs)
        .find_map(|log| <JobCreatedFilter as EthEvent>::decode_log(&log.clone().into()).ok())
        .ok_or_else(|| anyhow!("the createJob receipt has no JobCreated log (a v2 Jobs?)"))?;
    Ok(CreatedJob {
        job_id: created.job_id,
        selected_executors: created.selected_executors,
        tx_hash: receipt.transaction_hash,
        block_number: receipt.block_number.map(|n| n.as_u64()).unwrap_or_default(),
    })
}

/// A secret as `createSecret` made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSecret {
    pub secret_id: U256,
    pub selected_enclaves: Vec<Address>,
    pub tx_hash: H256,
}

/// What a secret asks of `createSecret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRequest {
    pub env: u8,
    pub size_limit: U256,
    /// Unix seconds.
    pub end_timestamp: U256,
    /// USDC base units (None: the minimum, from SECRET_STORE_FEE_RATE and NO_OF_NODES_TO_SELECT).
    pub usdc_deposit: Option<U256>,
    /// Who else may run jobs with it.
    pub allowed: Vec<Address>,
}

/// `createSecret` from `key`, after approving the deposit; returns the id and selected stores.
pub async fn create_secret(
    http_url: &str,
    key: &str,
    secret_manager: Address,
    request: &SecretRequest,
) -> Result<CreatedSecret> {
    use ethers::providers::Middleware;
    let client = client(http_url, key).await?;
    let contract = SecretManager::new(secret_manager, client.clone());
    let deposit = match request.usdc_deposit {
        Some(deposit) => deposit,
        None => {
            let now = client
                .get_block(ethers::types::BlockNumber::Latest)
                .await?
                .map(|b| b.timestamp)
                .unwrap_or_default();
            let rate = contract.secret_store_fee_rate().call().await?;
            let nodes = contract.no_of_nodes_to_select().call().await?;
            request.end_timestamp.saturating_sub(now) * request.size_limit * rate * nodes
        }
    };
    if !deposit.is_zero() {
        let token = contract
            .usdc_token()
            .call()
            .await
            .context("reading SecretManager.USDC_TOKEN")?;
        approve_exactly(
            &client,
            token,
            secret_manager,
            deposit,
            "the secret's deposit",
        )
        .await?;
    }
    let receipt = send(
        "SecretManager.createSecret",
        contract.create_secret(
            request.env,
            request.size_limit,
            request.end_timestamp,
            deposit,
            request.allowed.clone(),
        ),
    )
    .await?;
    let created = receipt
        .logs
        .iter()
        .filter(|log| log.address == secret_manager)
        .find_map(|log| <SecretCreatedFilter as EthEvent>::decode_log(&log.clone().into()).ok())
        .ok_or_else(|| anyhow!("the createSecret receipt has no SecretCreated log"))?;
    Ok(CreatedSecret {
        secret_id: created.secret_id,
        selected_enclaves: created.selected_enclaves,
        tx_hash: receipt.transaction_hash,
    })
}
