//! Whether a job's creating log is on the canonical chain now: the receipt of its `createJob`
//! transaction, looked up by hash, must be in the same block and hold the same `JobCreated` log
//! (v2's or the TEE generation's, by the configured protocol). A yes is kept while `newHeads`
//! announces no other block than the one it was given under, or the job's own (the chain has
//! not moved past it), so a check made while the job runs serves for its send. Also reads
//! SecretManager's two timeouts (TEE generation).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ethers::contract::EthEvent;
use ethers::providers::{Http, Middleware, Provider};
use ethers::types::transaction::eip2718::TypedTransaction;
use ethers::types::{Address, TransactionRequest, H256, U256};

use super::bindings::JobCreatedFilter;
use super::heads::{Head, Heads};
use crate::config::ChainConfig;
use crate::domain::dal::{ChainError, ChainReader};
use crate::domain::model::{Job, JobOrigin, Protocol, SecretTimeouts};

/// The longest `eth_getTransactionReceipt` may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Yes answers kept at once (one per job running or sending; the oldest goes first).
const KEPT_ANSWERS: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

pub struct OriginChecker {
    provider: Provider<Http>,
    jobs: Address,
    /// topic0 of the generation's `JobCreated`.
    job_created: H256,
    secret_manager: Option<Address>,
    /// The node's heads; without them no answer is kept.
    heads: Option<Arc<Heads>>,
    /// Jobs found on the canonical chain, each with the head announced before it was asked.
    canonical: Mutex<lru::LruCache<(U256, H256), Head>>,
}

impl OriginChecker {
    pub fn new(config: &ChainConfig) -> Result<Self, ChainError> {
        let provider = Provider::<Http>::try_from(config.rpc_http_url.as_str()).map_err(|e| {
            ChainError::Transient(format!("bad RPC URL {}: {e}", config.rpc_http_url))
        })?;
        Ok(Self {
            provider,
            jobs: config.jobs_address,
            job_created: match config.protocol {
                Protocol::V2 => JobCreatedFilter::signature(),
                Protocol::Tee => super::tee::JobCreatedFilter::signature(),
            },
            secret_manager: None,
            heads: None,
            canonical: Mutex::new(lru::LruCache::new(KEPT_ANSWERS)),
        })
    }

    /// Keeps yes answers while `heads` announces no other block (without: every call asks).
    pub fn with_heads(mut self, heads: Arc<Heads>) -> Self {
        self.heads = Some(heads);
        self
    }

    /// The head announced now, if the subscription is live and says which block it is.
    fn head(&self) -> Option<Head> {
        self.heads
            .as_ref()
            .and_then(|heads| heads.live_latest())
            .filter(|head| head.hash.is_some())
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, lru::LruCache<(U256, H256), Head>> {
        self.canonical.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks the creating log up on the node.
    async fn ask(&self, job: &Job, origin: JobOrigin) -> Result<bool, ChainError> {
        let receipt = tokio::time::timeout(
            RPC_TIMEOUT,
            self.provider.get_transaction_receipt(origin.tx_hash),
        )
        .await
        .map_err(|_| ChainError::Transient("eth_getTransactionReceipt timed out".into()))?
        .map_err(|e| ChainError::Transient(format!("eth_getTransactionReceipt: {e}")))?;
        // Nodes answer receipts of canonical transactions only.
        let Some(receipt) = receipt else {
            return Ok(false);
        };
        if receipt.block_hash != Some(origin.block_hash) {
            return Ok(false);
        }
        let mut id = [0u8; 32];
        job.id.to_big_endian(&mut id);
        Ok(receipt.logs.iter().any(|log| {
            log.log_index.map(|i| i.low_u64()) == Some(origin.log_index)
                && log.address == self.jobs
                && log.topics.first() == Some(&self.job_created)
                && log.topics.get(1) == Some(&H256(id))
        }))
    }

    /// Reads SecretManager's timeouts from `secret_manager` (None: there is none).
    pub fn with_secret_manager(mut self, secret_manager: Option<Address>) -> Self {
        self.secret_manager = secret_manager;
        self
    }

    /// A `uint256` public getter of `contract` without arguments, as u64 (saturating).
    async fn read_u256(&self, contract: Address, getter: &str) -> Result<u64, ChainError> {
        let call: TypedTransaction = TransactionRequest::new()
            .to(contract)
            .data(ethers::utils::id(getter).to_vec())
            .into();
        let answer = tokio::time::timeout(RPC_TIMEOUT, self.provider.call(&call, None))
            .await
            .map_err(|_| ChainError::Transient(format!("eth_call {getter} timed out")))?
            .map_err(|e| ChainError::Transient(format!("eth_call {getter}: {e}")))?;
        if answer.len() != 32 {
            return Err(ChainError::Transient(format!(
                "{getter} answered {} bytes, not a uint256 (is {contract:?} SecretManager?)",
                answer.len()
            )));
        }
        let value = U256::from_big_endian(&answer);
        Ok(if value > U256::from(u64::MAX) {
            u64::MAX
        } else {
            value.as_u64()
        })
    }
}

#[async_trait]
impl ChainReader for OriginChecker {
    async fn job_is_canonical(&self, job: &Job) -> Result<bool, ChainError> {
        let Some(origin) = job.origin else {
            return Ok(true);
        };
        let key = (job.id, origin.block_hash);
        // Taken before asking: a block announced while the node answers is a new one.
        let before = self.head();
        if let Some(head) = before {
            // Kept while no other block was announced, or once the job's own block is the
            // newest (its announcement may come after the log's, when the yes was given).
            let own = head.number == origin.block_number && head.hash == Some(origin.block_hash);
            if self
                .kept()
                .get(&key)
                .is_some_and(|kept| *kept == head || own)
            {
                tracing::debug!(job = %job.id, head = head.number, "creating log on the chain (kept)");
                return Ok(true);
            }
        }
        let canonical = self.ask(job, origin).await?;
        tracing::debug!(job = %job.id, head = ?before.map(|h| h.number), canonical, "creating log looked up");
        let mut kept = self.kept();
        match before {
            Some(head) if canonical => {
                kept.put(key, head);
            }
            _ => {
                kept.pop(&key);
            }
        }
        Ok(canonical)
    }

    async fn secret_timeouts(&self) -> Result<Option<SecretTimeouts>, ChainError> {
        let Some(secret_manager) = self.secret_manager else {
            return Ok(None);
        };
        Ok(Some(SecretTimeouts {
            acknowledgement_secs: self
                .read_u256(secret_manager, "ACKNOWLEDGEMENT_TIMEOUT()")
                .await?,
            mark_alive_secs: self
                .read_u256(secret_manager, "MARK_ALIVE_TIMEOUT()")
                .await?,
        }))
    }
}
