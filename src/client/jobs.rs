//! Job-author and operator helpers, all through the protocol surface (the bindings of
//! `effects::chain::bindings`): save code (current or legacy form), register an executor (stake
//! approved first) / drain / revive / deregister it, create a job (its USDC escrow approved
//! first), wait for its outputs. Refusals are reported by the chain's own names.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ethers::abi::Detokenize;
use ethers::contract::{ContractCall, ContractError, EthEvent};
use ethers::providers::{Middleware, Provider, Ws};
use ethers::types::{Address, BlockNumber, Filter, TransactionReceipt, H256, U256};

use super::{client, provider, Client};
use crate::effects::chain::bindings::{
    Attestation, Erc20, Executors, ExecutorsTokens, JobCreatedFilter, JobRespondedFilter, Jobs,
    JobsFees, UserCode,
};
use crate::effects::chain::revert::decode_revert;

/// Sends a contract call and waits for its successful receipt, with reverts named.
pub(crate) async fn send<D: Detokenize>(
    what: &str,
    call: ContractCall<Client, D>,
) -> Result<TransactionReceipt> {
    // Generous margin: createJob's cost depends on which executors the on-chain draw picks
    // (a slot counter going 0 → 1 costs 15k more gas than 1 → 2), and the draw's seed differs
    // between the estimate and the mined block.
    let estimate = call.estimate_gas().await.map_err(|e| describe(what, e))?;
    let call = call.gas(estimate + estimate / 2 + 50_000);
    let pending = call.send().await.map_err(|e| describe(what, e))?;
    let receipt = pending
        .await
        .with_context(|| format!("waiting for the {what} receipt"))?
        .ok_or_else(|| anyhow!("{what}: the transaction was dropped from the mempool"))?;
    if receipt.status != Some(1u64.into()) {
        bail!(
            "{what} reverted in transaction {:?}",
            receipt.transaction_hash
        );
    }
    Ok(receipt)
}

fn describe(what: &str, error: ContractError<Client>) -> anyhow::Error {
    match error.as_revert() {
        Some(data) => anyhow!("{what} refused by the chain: {}", decode_revert(data)),
        None => anyhow!("{what} failed: {error}"),
    }
}

/// Which `saveCodeInCallData` a job author calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodeForm {
    /// `saveCodeInCallData(string,bytes)`, Marlin's published code contract.
    #[default]
    Current,
    /// `saveCodeInCallData(string)`, the 2024 standalone code contract.
    Legacy,
}

/// Saves `source` as job code (current form, empty metadata); returns the codehash (the
/// transaction's hash).
pub async fn save_code(
    http_url: &str,
    key: &str,
    user_code: Address,
    source: &str,
) -> Result<H256> {
    save_code_as(http_url, key, user_code, source, CodeForm::Current, &[]).await
}

/// Saves `source` as job code with `form` (`metadata` goes with the current form only).
pub async fn save_code_as(
    http_url: &str,
    key: &str,
    user_code: Address,
    source: &str,
    form: CodeForm,
    metadata: &[u8],
) -> Result<H256> {
    let client = client(http_url, key).await?;
    let contract = UserCode::new(user_code, client);
    let receipt = match form {
        CodeForm::Current => {
            let call = contract
                .save_code_in_call_data_with_metadata(source.to_string(), metadata.to_vec().into());
            send("UserCode.saveCodeInCallData(string,bytes)", call).await?
        }
        CodeForm::Legacy => {
            let call = contract.save_code_in_call_data(source.to_string());
            send("UserCode.saveCodeInCallData(string)", call).await?
        }
    };
    Ok(receipt.transaction_hash)
}

/// An enclave's attestation as `registerExecutor` takes it, with the attestation verifier's
/// signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationProof {
    /// 64-byte uncompressed enclave public key without the 04 prefix.
    pub enclave_public_key: Vec<u8>,
    pub pcr0: Vec<u8>,
    pub pcr1: Vec<u8>,
    pub pcr2: Vec<u8>,
    pub timestamp_ms: u64,
    /// The verifier's signature (anything for the dev verifier).
    pub signature: Vec<u8>,
}

impl AttestationProof {
    /// What a devnet uses: the dev image's PCRs, taken now, no verifier signature (the dev
    /// verifier accepts any).
    pub fn dev(enclave_public_key: [u8; 64]) -> Self {
        let [pcr0, pcr1, pcr2] = super::deploy::DEV_PCRS.map(|p| p.to_vec());
        Self {
            enclave_public_key: enclave_public_key.to_vec(),
            pcr0,
            pcr1,
            pcr2,
            timestamp_ms: unix_ms(),
            signature: vec![],
        }
    }
}

/// The arguments of `registerExecutor` that come from the executor (its signed registration
/// message) and the operator (stake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorRegistration {
    pub job_capacity: u64,
    /// Unix seconds.
    pub sign_timestamp: u64,
    /// 65 bytes r ‖ s ‖ v from the enclave.
    pub signature: Vec<u8>,
    pub env: u8,
    pub stake_amount: U256,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Makes sure `spender` may take `amount` of `token` from the client's account: tells how much is
/// missing when the balance is short, and approves exactly `amount` when the allowance is.
pub async fn approve_exactly(
    client: &std::sync::Arc<Client>,
    token: Address,
    spender: Address,
    amount: U256,
    what: &str,
) -> Result<()> {
    if amount.is_zero() {
        return Ok(());
    }
    let erc20 = Erc20::new(token, client.clone());
    let me = ethers::signers::Signer::address(client.signer());
    let symbol = erc20
        .symbol()
        .call()
        .await
        .unwrap_or_else(|_| "tokens".into());
    let balance = erc20
        .balance_of(me)
        .call()
        .await
        .with_context(|| format!("reading the {symbol} balance of {me:?}"))?;
    if balance < amount {
        bail!(
            "{what} needs {amount} {symbol} (base units) from {me:?}, which holds {balance}: \
             {} more are missing",
            amount - balance
        );
    }
    let allowance = erc20
        .allowance(me, spender)
        .call()
        .await
        .with_context(|| format!("reading the {symbol} allowance of {spender:?}"))?;
    if allowance < amount {
        send(
            &format!("{symbol}.approve({spender:?}, {amount})"),
            erc20.approve(spender, amount),
        )
        .await?;
    }
    Ok(())
}

/// `registerExecutor` from the owner's key: approves the stake (`Executors.TOKEN`) first.
pub async fn register_executor(
    http_url: &str,
    owner_key: &str,
    executors: Address,
    registration: &ExecutorRegistration,
    proof: &AttestationProof,
) -> Result<H256> {
    let client = client(http_url, owner_key).await?;
    if !registration.stake_amount.is_zero() {
        let token = ExecutorsTokens::new(executors, client.clone())
            .token()
            .call()
            .await
            .context("reading Executors.TOKEN (the stake token)")?;
        approve_exactly(
            &client,
            token,
            executors,
            registration.stake_amount,
            "the stake",
        )
        .await?;
    }
    let contract = Executors::new(executors, client);
    let attestation = Attestation {
        enclave_pub_key: proof.enclave_public_key.clone().into(),
        pcr0: proof.pcr0.clone().into(),
        pcr1: proof.pcr1.clone().into(),
        pcr2: proof.pcr2.clone().into(),
        timestamp_in_milliseconds: U256::from(proof.timestamp_ms),
    };
    let call = contract.register_executor(
        proof.signature.clone().into(),
        attestation,
        U256::from(registration.job_capacity),
        U256::from(registration.sign_timestamp),
        registration.signature.clone().into(),
        registration.stake_amount,
        registration.env,
    );
    Ok(send("Executors.registerExecutor", call)
        .await?
        .transaction_hash)
}

/// Sends one of the owner's calls on `Executors` for `enclave`.
async fn owner_call(
    http_url: &str,
    owner_key: &str,
    executors: Address,
    name: &str,
    call: impl FnOnce(&Executors<Client>) -> ContractCall<Client, ()>,
) -> Result<H256> {
    let contract = Executors::new(executors, client(http_url, owner_key).await?);
    Ok(send(name, call(&contract)).await?.transaction_hash)
}

/// `drainExecutor(enclave)` from the owner's key.
pub async fn drain_executor(
    url: &str,
    key: &str,
    executors: Address,
    enclave: Address,
) -> Result<H256> {
    owner_call(url, key, executors, "Executors.drainExecutor", |c| {
        c.drain_executor(enclave)
    })
    .await
}

/// `reviveExecutor(enclave)` from the owner's key.
pub async fn revive_executor(
    url: &str,
    key: &str,
    executors: Address,
    enclave: Address,
) -> Result<H256> {
    owner_call(url, key, executors, "Executors.reviveExecutor", |c| {
        c.revive_executor(enclave)
    })
    .await
}

/// `deregisterExecutor(enclave)` from the owner's key.
pub async fn deregister_executor(
    url: &str,
    key: &str,
    executors: Address,
    enclave: Address,
) -> Result<H256> {
    owner_call(url, key, executors, "Executors.deregisterExecutor", |c| {
        c.deregister_executor(enclave)
    })
    .await
}

/// A job as `createJob` made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedJob {
    pub job_id: U256,
    pub selected_executors: Vec<Address>,
    pub tx_hash: H256,
    pub block_number: u64,
}

/// What `createJob` escrows for a job of `env` with `deadline_ms`, and the token it is paid in:
/// `deadline × (executionFeePerMs + stakingRewardPerMs)` of `Jobs.USDC_TOKEN`.
pub async fn job_price<M: Middleware + 'static>(
    client: std::sync::Arc<M>,
    jobs: Address,
    env: u8,
    deadline_ms: u64,
) -> Result<(U256, Address)> {
    let fees = JobsFees::new(jobs, client);
    let token = fees
        .usdc_token()
        .call()
        .await
        .context("reading Jobs.USDC_TOKEN (the fee token)")?;
    let (execution_fee, staking_reward) = fees
        .execution_env(env)
        .call()
        .await
        .with_context(|| format!("reading Jobs.executionEnv({env})"))?;
    let price = U256::from(deadline_ms)
        .checked_mul(execution_fee.saturating_add(staking_reward))
        .ok_or_else(|| anyhow!("the price of a {deadline_ms} ms job overflows"))?;
    Ok((price, token))
}

/// `createJob(env, codehash, inputs, deadline_ms)`, after approving exactly its escrow; the id
/// and selection come from the `JobCreated` log of the receipt.
pub async fn create_job(
    http_url: &str,
    key: &str,
    jobs: Address,
    env: u8,
    codehash: H256,
    inputs: &[u8],
    deadline_ms: u64,
) -> Result<CreatedJob> {
    let client = client(http_url, key).await?;
    let (price, token) = job_price(client.clone(), jobs, env, deadline_ms).await?;
    approve_exactly(&client, token, jobs, price, "the job's escrow").await?;
    let contract = Jobs::new(jobs, client);
    let receipt = send(
        "Jobs.createJob",
        contract.create_job(env, codehash.0, inputs.to_vec().into(), deadline_ms.into()),
    )
    .await?;
    let created = receipt
        .logs
        .iter()
        .filter(|log| log.address == jobs)
        .find_map(|log| <JobCreatedFilter as EthEvent>::decode_log(&log.clone().into()).ok())
        .ok_or_else(|| anyhow!("the createJob receipt has no JobCreated log"))?;
    Ok(CreatedJob {
        job_id: created.job_id,
        selected_executors: created.selected_executors,
        tx_hash: receipt.transaction_hash,
        block_number: receipt.block_number.map(|n| n.as_u64()).unwrap_or_default(),
    })
}

/// One `JobResponded` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResponse {
    pub executor: Address,
    pub output: Vec<u8>,
    pub total_time: u64,
    pub error_code: u8,
    pub output_count: u8,
    pub block_number: u64,
    pub tx_hash: Option<H256>,
}

/// A uint256 as an indexed topic.
fn job_topic(job_id: U256) -> H256 {
    let mut bytes = [0u8; 32];
    job_id.to_big_endian(&mut bytes);
    H256(bytes)
}

async fn responses<M: Middleware>(
    provider: &M,
    jobs: Address,
    job_id: U256,
) -> Result<Vec<JobResponse>> {
    let filter = Filter::new()
        .address(jobs)
        .topic0(JobRespondedFilter::signature())
        .topic1(job_topic(job_id))
        .from_block(BlockNumber::Earliest)
        .to_block(BlockNumber::Latest);
    let logs = provider
        .get_logs(&filter)
        .await
        .map_err(|e| anyhow!("eth_getLogs for JobResponded: {e}"))?;
    let mut out = Vec::new();
    for log in logs {
        let block_number = log.block_number.map(|n| n.as_u64()).unwrap_or_default();
        let tx_hash = log.transaction_hash;
        let event = <JobRespondedFilter as EthEvent>::decode_log(&log.into())
            .context("a JobResponded log does not decode")?;
        out.push(JobResponse {
            executor: event.executor,
            output: event.output.to_vec(),
            total_time: event.total_time.low_u64(),
            error_code: event.error_code,
            output_count: event.output_count,
            block_number,
            tx_hash,
        });
    }
    Ok(out)
}

/// Waits until job `job_id` has at least `count` outputs on chain; returns them all.
/// `url` is http(s):// or ws(s)://. Scans from the first block: meant for devnets.
pub async fn wait_for_outputs(
    url: &str,
    jobs: Address,
    job_id: U256,
    count: usize,
    timeout: Duration,
) -> Result<Vec<JobResponse>> {
    let deadline = tokio::time::Instant::now() + timeout;
    enum Reader {
        Http(Provider<ethers::providers::Http>),
        Ws(Provider<Ws>),
    }
    let reader = if url.starts_with("ws://") || url.starts_with("wss://") {
        Reader::Ws(
            Provider::<Ws>::connect(url)
                .await
                .with_context(|| format!("cannot connect to {url}"))?,
        )
    } else {
        Reader::Http(provider(url)?)
    };
    loop {
        let found = match &reader {
            Reader::Ws(ws) => responses(ws, jobs, job_id).await?,
            Reader::Http(http) => responses(http, jobs, job_id).await?,
        };
        if found.len() >= count {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "job {job_id}: {} of {count} outputs after {timeout:?}",
                found.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for the first output of job `job_id` (returns every output seen by then).
pub async fn wait_for_response(
    url: &str,
    jobs: Address,
    job_id: U256,
    timeout: Duration,
) -> Result<Vec<JobResponse>> {
    wait_for_outputs(url, jobs, job_id, 1, timeout).await
}
