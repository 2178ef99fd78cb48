//! Whether a job's creating log is on the canonical chain now: the receipt of its `createJob`
//! transaction, looked up by hash, must be in the same block and hold the same `JobCreated` log
//! (v2's or the TEE generation's, by the configured protocol).

use std::time::Duration;

use async_trait::async_trait;
use ethers::contract::EthEvent;
use ethers::providers::{Http, Middleware, Provider};
use ethers::types::{Address, H256};

use super::bindings::JobCreatedFilter;
use crate::config::ChainConfig;
use crate::domain::dal::{ChainError, ChainReader};
use crate::domain::model::{Job, Protocol};

/// The longest `eth_getTransactionReceipt` may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

pub struct OriginChecker {
    provider: Provider<Http>,
    jobs: Address,
    /// topic0 of the generation's `JobCreated`.
    job_created: H256,
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
        })
    }
}

#[async_trait]
impl ChainReader for OriginChecker {
    async fn job_is_canonical(&self, job: &Job) -> Result<bool, ChainError> {
        let Some(origin) = job.origin else {
            return Ok(true);
        };
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
}
