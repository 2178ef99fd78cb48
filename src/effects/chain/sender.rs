//! The transaction sender: owns the gas key and the nonce, sends `submitOutput` and
//! `slashOnExecutionTimeout`.
//!
//! Each send: estimate gas (a revert there is the usual way the chain says no) → fees from the
//! node (EIP-1559 when blocks carry a base fee, legacy otherwise) → under a tokio mutex, so two
//! transactions never share a nonce: nonce = max(local next nonce, chain pending nonce), sign
//! locally, send raw → outside the mutex, poll for the receipt. A transaction not mined within
//! `RECEIPT_TIMEOUT` is replaced (same nonce, fees bumped by `FEE_BUMP_PERCENT`) up to
//! `MAX_SENDS` times. A receipt with status 0 is replayed with `eth_call` at its block to learn
//! why. The nonce is asked from the chain again after errors and after a gas key change.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ethers::abi::AbiEncode;
use ethers::providers::{Http, Middleware, Provider, ProviderError};
use ethers::signers::{LocalWallet, Signer};
use ethers::types::transaction::eip2718::TypedTransaction;
use ethers::types::{
    Address, BlockId, BlockNumber, Bytes, Eip1559TransactionRequest, TransactionReceipt,
    TransactionRequest, H256, U256, U64,
};
use ethers::utils::keccak256;
use tokio::sync::Mutex;

use super::bindings::{SlashOnExecutionTimeoutCall, SubmitOutputCall};
use super::revert::revert_of;
use crate::config::ChainConfig;
use crate::domain::dal::{ignore_sent, ChainError, ChainWriter, OnSent, Revert, TxOutcome};
use crate::domain::model::SignedOutput;

/// The name of the output call, in logs and for the cost metric.
const SUBMIT_OUTPUT: &str = "submitOutput";
/// How long one sent transaction may stay unmined before it is replaced.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(6);
/// How often the receipt is polled at most (small: anvil's automine answers at once).
pub const RECEIPT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The first wait between receipt polls; doubled up to `RECEIPT_POLL_INTERVAL`. (An automining
/// node mines within a few ms of the send: a flat 100 ms wait added up to 100 ms to a job.)
pub const RECEIPT_FIRST_POLL: Duration = Duration::from_millis(2);
/// The first send plus the replacements (same nonce, higher fees).
pub const MAX_SENDS: usize = 4;
/// Each replacement raises the fees by this much (nodes require at least 10–12.5 %).
pub const FEE_BUMP_PERCENT: u64 = 25;
/// Added to the gas estimate: the state can change between estimate and inclusion (another
/// executor's output makes ours the one that settles the job and pays for it).
pub const GAS_MARGIN_PERCENT: u64 = 50;
/// Added on top of the margin, for the same reason.
pub const GAS_MARGIN_FIXED: u64 = 50_000;
/// The longest any single RPC request may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Gas one output is assumed to use until the first one is mined (for the cost metric).
pub const OUTPUT_GAS_BEFORE_FIRST: u64 = 300_000;
/// Priority fee used when the node does not answer `eth_maxPriorityFeePerGas`.
const FALLBACK_PRIORITY_FEE: u64 = 1_000_000_000;

pub struct TxSender {
    config: ChainConfig,
    provider: Provider<Http>,
    wallet: RwLock<Option<LocalWallet>>,
    /// Bumped on every gas key change; the nonce state of an older key is discarded.
    key_generation: AtomicU64,
    nonce: Mutex<NonceState>,
    /// Transactions being sent or waited for (for metrics).
    pending: AtomicU64,
    /// Gas used by the last mined `submitOutput` (0: none yet), for the cost metric.
    output_gas: AtomicU64,
}

/// What the sender knows about the gas account's nonce. Only touched under the send lock.
#[derive(Debug, Default)]
struct NonceState {
    key_generation: u64,
    /// The nonce after our last sent transaction; None = ask the chain.
    next: Option<U256>,
}

#[derive(Debug, Clone, Copy)]
enum Fees {
    Eip1559 { max_fee: U256, priority_fee: U256 },
    Legacy { gas_price: U256 },
}

impl Fees {
    fn bumped(self) -> Self {
        let bump = |v: U256| v + v * FEE_BUMP_PERCENT / 100 + 1;
        match self {
            Fees::Eip1559 {
                max_fee,
                priority_fee,
            } => Fees::Eip1559 {
                max_fee: bump(max_fee),
                priority_fee: bump(priority_fee),
            },
            Fees::Legacy { gas_price } => Fees::Legacy {
                gas_price: bump(gas_price),
            },
        }
    }
}

/// Why sending a transaction with a new nonce failed.
enum SendFailure {
    /// The nonce was used meanwhile (by another sender of this key): take a new one.
    NonceTooLow(ChainError),
    /// Another transaction of ours holds the nonce in the pool: bid higher.
    Underpriced(ChainError),
    Other(ChainError),
}

/// The node's refusals of `eth_sendRawTransaction` the sender reacts to.
enum Refusal {
    /// The node already has this very transaction.
    Known,
    NonceTooLow,
    /// A transaction with this nonce and higher fees is in the pool.
    Underpriced,
}

fn classify(error: &ProviderError) -> Option<Refusal> {
    let message = error.to_string().to_ascii_lowercase();
    if message.contains("already known") || message.contains("already imported") {
        Some(Refusal::Known)
    } else if message.contains("nonce too low") {
        Some(Refusal::NonceTooLow)
    } else if message.contains("underpriced") {
        Some(Refusal::Underpriced)
    } else {
        None
    }
}

/// Everything of a transaction except its nonce and fees.
struct Call {
    name: &'static str,
    from: Address,
    to: Address,
    data: Bytes,
}

impl Call {
    fn request(&self) -> TypedTransaction {
        TransactionRequest::new()
            .from(self.from)
            .to(self.to)
            .data(self.data.clone())
            .into()
    }
}

/// Counts one transaction as pending until dropped (also when the send is cancelled).
struct Pending<'a>(&'a AtomicU64);

impl<'a> Pending<'a> {
    fn start(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn transient(what: &str, error: impl std::fmt::Display) -> ChainError {
    ChainError::Transient(format!("{what}: {error}"))
}

/// Runs one RPC request with a timeout.
async fn rpc<T>(
    what: &str,
    request: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    match tokio::time::timeout(RPC_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(ProviderError::CustomError(format!(
            "{what} timed out after {RPC_TIMEOUT:?}"
        ))),
    }
}

impl TxSender {
    pub fn new(config: ChainConfig) -> Result<Self, ChainError> {
        let provider = Provider::<Http>::try_from(config.rpc_http_url.as_str()).map_err(|e| {
            ChainError::Transient(format!("bad RPC URL {}: {e}", config.rpc_http_url))
        })?;
        Ok(Self {
            config,
            provider,
            wallet: RwLock::new(None),
            key_generation: AtomicU64::new(0),
            nonce: Mutex::new(NonceState::default()),
            pending: AtomicU64::new(0),
            output_gas: AtomicU64::new(0),
        })
    }

    /// Transactions being sent or waited for now.
    pub fn pending_transactions(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// The chain's head block, or None when the node does not answer.
    pub async fn head_block(&self) -> Option<u64> {
        rpc("eth_blockNumber", self.provider.get_block_number())
            .await
            .ok()
            .map(|n| n.as_u64())
    }

    /// Gas one output uses: that of the last one mined, or `OUTPUT_GAS_BEFORE_FIRST`.
    pub fn output_gas(&self) -> u64 {
        match self.output_gas.load(Ordering::SeqCst) {
            0 => OUTPUT_GAS_BEFORE_FIRST,
            used => used,
        }
    }

    /// The node's gas price, when it answers.
    pub async fn gas_price(&self) -> Option<U256> {
        rpc("eth_gasPrice", self.provider.get_gas_price())
            .await
            .ok()
    }

    /// The gas account's nonce in the latest block and counting the node's pool, when a gas
    /// key is set and the node answers. A pool nonce above the mined one that stays so means
    /// a transaction is stuck.
    pub async fn gas_nonces(&self) -> Option<(u64, u64)> {
        let address = self.wallet().ok()?.address();
        let count = |block: BlockNumber| {
            rpc(
                "eth_getTransactionCount",
                self.provider
                    .get_transaction_count(address, Some(block.into())),
            )
        };
        let mined = count(BlockNumber::Latest).await.ok()?;
        let pending = count(BlockNumber::Pending).await.ok()?;
        Some((mined.low_u64(), pending.low_u64()))
    }

    /// The gas account's balance, when a gas key is set and the node answers.
    pub async fn gas_balance(&self) -> Option<U256> {
        let address = self.wallet().ok()?.address();
        rpc("eth_getBalance", self.provider.get_balance(address, None))
            .await
            .ok()
    }

    fn wallet(&self) -> Result<LocalWallet, ChainError> {
        self.wallet
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ChainError::NoGasKey)
    }

    /// Sends one call to the Jobs contract and follows it to its end.
    async fn send(
        &self,
        name: &'static str,
        data: Vec<u8>,
        sent: &dyn OnSent,
    ) -> Result<TxOutcome, ChainError> {
        let wallet = self.wallet()?;
        let call = Call {
            name,
            from: wallet.address(),
            to: self.config.jobs_address,
            data: data.into(),
        };
        let pending = Pending::start(&self.pending);
        let result = self.send_call(&wallet, &call, sent).await;
        drop(pending);
        match &result {
            Ok(outcome) => tracing::info!(call = name, ?outcome, "transaction finished"),
            Err(e) => tracing::warn!(call = name, error = %e, "transaction failed"),
        }
        result
    }

    async fn send_call(
        &self,
        wallet: &LocalWallet,
        call: &Call,
        on_sent: &dyn OnSent,
    ) -> Result<TxOutcome, ChainError> {
        let estimate = match rpc(
            "eth_estimateGas",
            self.provider.estimate_gas(&call.request(), None),
        )
        .await
        {
            Ok(gas) => gas,
            Err(e) => {
                return match revert_of(&e) {
                    Some(revert) => {
                        tracing::debug!(call = call.name, ?revert, "reverts in gas estimation");
                        Ok(TxOutcome::Reverted {
                            tx_hash: None,
                            revert,
                        })
                    }
                    None => Err(transient("eth_estimateGas", e)),
                };
            }
        };
        let gas = estimate + estimate * GAS_MARGIN_PERCENT / 100 + GAS_MARGIN_FIXED;
        let mut fees = self.fees().await?;

        // A fresh nonce, under the lock; the receipt is awaited outside it so that other
        // transactions are not held up by this one's block.
        let mut tries = 0;
        let (nonce, first_hash) = loop {
            tries += 1;
            match self.send_with_new_nonce(wallet, call, gas, fees).await {
                Ok(sent) => break sent,
                Err(SendFailure::NonceTooLow(_)) if tries < MAX_SENDS => {}
                Err(SendFailure::Underpriced(_)) if tries < MAX_SENDS => fees = fees.bumped(),
                Err(SendFailure::NonceTooLow(e) | SendFailure::Underpriced(e))
                | Err(SendFailure::Other(e)) => return Err(e),
            }
        };

        on_sent.sent(first_hash);
        let mut sent = vec![first_hash];
        for attempt in 1..=MAX_SENDS {
            if let Some(receipt) = self.wait_for_receipt(&sent, RECEIPT_TIMEOUT).await {
                return self.outcome(call, gas, receipt).await;
            }
            if attempt == MAX_SENDS {
                break;
            }
            fees = fees.bumped();
            tracing::warn!(
                call = call.name,
                %nonce,
                "not mined within {RECEIPT_TIMEOUT:?}; replacing it with higher fees"
            );
            let (raw, hash) = self.signed(wallet, call, nonce, gas, fees)?;
            match rpc(
                "eth_sendRawTransaction",
                self.provider.send_raw_transaction(raw),
            )
            .await
            {
                Ok(_) => on_sent.sent(hash),
                Err(e) => match classify(&e) {
                    // One of the earlier sends was mined meanwhile, or the node has this one.
                    Some(Refusal::NonceTooLow) | Some(Refusal::Known) => {}
                    // The next round bumps again.
                    Some(Refusal::Underpriced) => {
                        tracing::debug!(call = call.name, %nonce, "replacement underpriced")
                    }
                    None => {
                        tracing::warn!(call = call.name, %nonce, error = %e, "replacement not accepted")
                    }
                },
            }
            if !sent.contains(&hash) {
                sent.push(hash);
            }
            tracing::info!(call = call.name, tx_hash = ?hash, %nonce, attempt = attempt + 1, "replacement sent");
        }
        // The chain is the authority on the nonce again for the next send.
        self.nonce.lock().await.next = None;
        Err(ChainError::Transient(format!(
            "{} not mined after {MAX_SENDS} sends with nonce {nonce}",
            call.name
        )))
    }

    /// Takes the next nonce and sends the first transaction with it, under the send lock.
    async fn send_with_new_nonce(
        &self,
        wallet: &LocalWallet,
        call: &Call,
        gas: U256,
        fees: Fees,
    ) -> Result<(U256, H256), SendFailure> {
        let mut state = self.nonce.lock().await;
        let generation = self.key_generation.load(Ordering::SeqCst);
        if state.key_generation != generation {
            *state = NonceState {
                key_generation: generation,
                next: None,
            };
        }
        let pending = rpc(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(call.from, Some(BlockNumber::Pending.into())),
        )
        .await
        .map_err(|e| SendFailure::Other(transient("eth_getTransactionCount", e)))?;
        let nonce = state.next.map_or(pending, |local| local.max(pending));
        let (raw, hash) = self
            .signed(wallet, call, nonce, gas, fees)
            .map_err(SendFailure::Other)?;
        let sent = rpc(
            "eth_sendRawTransaction",
            self.provider.send_raw_transaction(raw),
        )
        .await;
        tracing::debug!(target: "job_stage", stage = "sent", call = call.name);
        match sent {
            Ok(_) => {}
            Err(e) => match classify(&e) {
                Some(Refusal::Known) => {}
                Some(Refusal::NonceTooLow) => {
                    state.next = None;
                    return Err(SendFailure::NonceTooLow(transient(
                        "eth_sendRawTransaction",
                        e,
                    )));
                }
                Some(Refusal::Underpriced) => {
                    // Another transaction of ours holds this nonce in the pool: outbid it.
                    return Err(SendFailure::Underpriced(transient(
                        "eth_sendRawTransaction",
                        e,
                    )));
                }
                None => {
                    state.next = None;
                    return Err(SendFailure::Other(transient("eth_sendRawTransaction", e)));
                }
            },
        }
        state.next = Some(nonce + 1);
        tracing::info!(call = call.name, tx_hash = ?hash, %nonce, "transaction sent");
        Ok((nonce, hash))
    }

    /// The raw signed transaction and its hash.
    fn signed(
        &self,
        wallet: &LocalWallet,
        call: &Call,
        nonce: U256,
        gas: U256,
        fees: Fees,
    ) -> Result<(Bytes, H256), ChainError> {
        let tx = self.transaction(call, nonce, gas, fees);
        let signature = wallet
            .sign_transaction_sync(&tx)
            .map_err(|e| transient("signing", e))?;
        let raw = tx.rlp_signed(&signature);
        let hash = H256::from(keccak256(&raw));
        Ok((raw, hash))
    }

    fn transaction(&self, call: &Call, nonce: U256, gas: U256, fees: Fees) -> TypedTransaction {
        match fees {
            Fees::Eip1559 {
                max_fee,
                priority_fee,
            } => Eip1559TransactionRequest::new()
                .from(call.from)
                .to(call.to)
                .data(call.data.clone())
                .nonce(nonce)
                .gas(gas)
                .max_fee_per_gas(max_fee)
                .max_priority_fee_per_gas(priority_fee)
                .chain_id(self.config.chain_id)
                .into(),
            Fees::Legacy { gas_price } => TransactionRequest::new()
                .from(call.from)
                .to(call.to)
                .data(call.data.clone())
                .nonce(nonce)
                .gas(gas)
                .gas_price(gas_price)
                .chain_id(self.config.chain_id)
                .into(),
        }
    }

    /// EIP-1559 fees when the latest block has a base fee, the legacy gas price otherwise.
    async fn fees(&self) -> Result<Fees, ChainError> {
        let block = rpc(
            "eth_getBlockByNumber",
            self.provider.get_block(BlockNumber::Latest),
        )
        .await
        .map_err(|e| transient("eth_getBlockByNumber", e))?
        .ok_or_else(|| ChainError::Transient("the node has no latest block".into()))?;
        match block.base_fee_per_gas {
            Some(base_fee) => {
                let priority_fee = rpc(
                    "eth_maxPriorityFeePerGas",
                    self.provider
                        .request::<_, U256>("eth_maxPriorityFeePerGas", ()),
                )
                .await
                .unwrap_or_else(|_| U256::from(FALLBACK_PRIORITY_FEE));
                Ok(Fees::Eip1559 {
                    max_fee: base_fee * 2 + priority_fee,
                    priority_fee,
                })
            }
            None => {
                let gas_price = rpc("eth_gasPrice", self.provider.get_gas_price())
                    .await
                    .map_err(|e| transient("eth_gasPrice", e))?;
                Ok(Fees::Legacy { gas_price })
            }
        }
    }

    /// Polls the receipts of every hash sent for one nonce until one is mined or time is up.
    async fn wait_for_receipt(
        &self,
        hashes: &[H256],
        timeout: Duration,
    ) -> Option<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = RECEIPT_FIRST_POLL;
        loop {
            for hash in hashes {
                match rpc(
                    "eth_getTransactionReceipt",
                    self.provider.get_transaction_receipt(*hash),
                )
                .await
                {
                    Ok(Some(receipt)) if receipt.block_number.is_some() => return Some(receipt),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(tx_hash = ?hash, error = %e, "receipt poll failed"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECEIPT_POLL_INTERVAL);
        }
    }

    /// Mined, or reverted with the reason learned by replaying the call at the receipt's block.
    async fn outcome(
        &self,
        call: &Call,
        gas: U256,
        receipt: TransactionReceipt,
    ) -> Result<TxOutcome, ChainError> {
        let tx_hash = receipt.transaction_hash;
        if receipt.status == Some(U64::from(1)) {
            if let (SUBMIT_OUTPUT, Some(used)) = (call.name, receipt.gas_used) {
                self.output_gas.store(used.low_u64(), Ordering::SeqCst);
            }
            return Ok(TxOutcome::Mined { tx_hash });
        }
        let block = receipt.block_number.map(|n| BlockId::Number(n.into()));
        let mut replay = call.request();
        replay.set_gas(gas);
        let revert = match rpc("eth_call", self.provider.call(&replay, block)).await {
            Err(e) => revert_of(&e)
                .unwrap_or_else(|| Revert::Other(format!("reverted; the replay failed: {e}"))),
            Ok(_) if receipt.gas_used.is_some_and(|used| used >= gas) => {
                Revert::Other(format!("out of gas (limit {gas})"))
            }
            Ok(_) => Revert::Other("reverted; the replay at its block succeeded".into()),
        };
        Ok(TxOutcome::Reverted {
            tx_hash: Some(tx_hash),
            revert,
        })
    }
}

#[async_trait]
impl ChainWriter for TxSender {
    fn set_gas_key(&self, secret: [u8; 32]) -> Result<Address, ChainError> {
        let wallet = LocalWallet::from_bytes(&secret)
            .map_err(|_| {
                ChainError::InvalidKey(
                    "not a valid secp256k1 secret (zero, or not below the curve order)".into(),
                )
            })?
            .with_chain_id(self.config.chain_id);
        let address = wallet.address();
        *self.wallet.write().unwrap_or_else(|p| p.into_inner()) = Some(wallet);
        self.key_generation.fetch_add(1, Ordering::SeqCst);
        Ok(address)
    }

    fn gas_address(&self) -> Option<Address> {
        self.wallet
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|w| w.address())
    }

    async fn submit_output(
        &self,
        output: &SignedOutput,
        sent: Arc<dyn OnSent>,
    ) -> Result<TxOutcome, ChainError> {
        let data = SubmitOutputCall {
            signature: output.signature.clone().into(),
            job_id: output.job_id,
            output: output.output.clone().into(),
            total_time: U256::from(output.total_time_ms),
            error_code: output.error_code.as_u8(),
            sign_timestamp: U256::from(output.sign_timestamp),
        }
        .encode();
        self.send(SUBMIT_OUTPUT, data, sent.as_ref()).await
    }

    async fn slash_on_execution_timeout(&self, job_id: U256) -> Result<TxOutcome, ChainError> {
        let data = SlashOnExecutionTimeoutCall { job_id }.encode();
        self.send("slashOnExecutionTimeout", data, ignore_sent().as_ref())
            .await
    }
}
