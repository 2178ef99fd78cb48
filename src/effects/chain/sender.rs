//! The transaction sender: owns the gas key and the nonce, sends `submitOutput` and
//! `slashOnExecutionTimeout`.
//!
//! Each send: fees from the node (EIP-1559 when blocks carry a base fee, legacy otherwise), capped
//! by `EXECUTOR_MAX_FEE_PER_GAS_GWEI` (above it: wait and say so) → estimate gas with those very
//! fee fields (a callback can tell a free estimate from a paid run by `GASPRICE`; a revert there is
//! the usual way the chain says no) → the gas limit (for outputs: room for a callback that burns
//! all it gets, see `output_gas_limit`) → under a tokio mutex, so two transactions never share a
//! nonce: the local next nonce (in doubt: the higher of it and the chain's pending nonce), sign locally, send raw → outside
//! the mutex, wait for the receipt. A transaction not mined within `RECEIPT_TIMEOUT` is replaced
//! (same nonce, fees raised to the market or bumped by `FEE_BUMP_PERCENT`, never above the cap)
//! for as long as it can still matter; once its deadline passes, the nonce is freed with a
//! self-transfer. A nonce is never left behind. The same self-transfer takes back the nonce of
//! an output whose job a reorg superseded (`take_back`). A receipt with status 0 is an out-of-gas when it
//! used its whole limit, else it is replayed with `eth_call` at its block to learn why.
//!
//! Per output the node is asked as little as is safe: the nonce is kept locally (`nonce.rs`), fee
//! data is reused for `EXECUTOR_FEE_CACHE_MS` (`fee_cache.rs`; replacements ask the market), and
//! receipts are looked up when `newHeads` announces a block (`heads.rs`), polled where it cannot,
//! and of the transactions waited for at once only the lowest nonce looks (`receipt_turns.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ethers::abi::{AbiEncode, Token};
use ethers::providers::{Http, Middleware, Provider, ProviderError};
use ethers::signers::{LocalWallet, Signer};
use ethers::types::transaction::eip2718::TypedTransaction;
use ethers::types::{
    Address, BlockId, BlockNumber, Bytes, Eip1559TransactionRequest, TransactionReceipt,
    TransactionRequest, H256, U256, U64,
};
use ethers::utils::keccak256;
use tokio::sync::{watch, Mutex};

use super::bindings::{SlashOnExecutionTimeoutCall, SubmitOutputCall};
use super::early_looks::EarlyLooks;
use super::fee_cache::{FeeCache, FeeData};
use super::heads::{HeadState, Heads};
use super::nonce::NonceState;
use super::receipt_turns::{ReceiptTurns, Turn};
use super::revert::revert_of;
use crate::config::ChainConfig;
use crate::domain::dal::{
    ignore_sent, ChainError, ChainWriter, OnSent, OutputPlan, Revert, TakeBack, TxOutcome,
};
use crate::domain::model::{SecretAck, SentTx, SignedOutput};

/// The name of the output call, in logs and for the cost metric.
const SUBMIT_OUTPUT: &str = "submitOutput";
/// How long one sent transaction may stay unmined before it is replaced.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(6);
/// How often the receipt is polled at most (small: anvil's automine answers at once).
pub const RECEIPT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The first wait between receipt polls; doubled up to `RECEIPT_POLL_INTERVAL`. (An automining
/// node mines within a few ms of the send: a flat 100 ms wait added up to 100 ms to a job.)
pub const RECEIPT_FIRST_POLL: Duration = Duration::from_millis(2);
/// While `newHeads` is subscribed, receipts are also looked up this often without a new head (a
/// subscription can die without a word).
pub const RECEIPT_SAFETY_POLL: Duration = Duration::from_secs(1);
/// While subscribed, a look at once and this many timed ones (2, 6 and 14 ms after the send)
/// while no head has come, as long as such looks find receipts (`EarlyLooks`): anvil has the
/// receipt within a few ms, sometimes tens of ms before its `newHeads` notification.
pub const RECEIPT_EARLY_LOOKS: u32 = 3;
/// How long fee data is reused by default (`EXECUTOR_FEE_CACHE_MS`).
pub const DEFAULT_FEE_CACHE: Duration = Duration::from_millis(2000);
/// How often a transaction with a new nonce is tried when the node refuses it (nonce taken
/// meanwhile, or underpriced against one of ours).
pub const MAX_NONCE_TRIES: usize = 4;
/// Each replacement raises the fees by this much (nodes require at least 10–12.5 %).
pub const FEE_BUMP_PERCENT: u64 = 25;
/// What nodes require of a replacement: both fees raised by at least this much.
const MIN_BUMP_PERCENT: u64 = 10;
/// Gas the output's own work may still need after the job owner's result callback returns
/// (the callback event, bookkeeping). A callback gets at most 63/64 of the gas left at the call,
/// so keeping 64 × this in the limit leaves the output room to finish whatever the callback does.
pub const CALLBACK_TAIL_GAS: u64 = 10_000;
/// Gas of a plain transfer: the self-transfer that frees a nonce whose transaction came too late.
const TRANSFER_GAS: u64 = 21_000;
/// How often the fees are looked at again while the base fee is above the cap.
pub const FEE_CAP_POLL: Duration = Duration::from_secs(1);
/// A slash has no window of its own: its transaction is given this long before its nonce is freed.
pub const SLASH_PATIENCE: Duration = Duration::from_secs(120);
/// After a deadline, how long the self-transfer is kept being replaced before the nonce is left
/// to the chain (the next send asks the chain for the nonce again).
pub const CANCEL_PATIENCE: Duration = Duration::from_secs(600);
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
    /// `EXECUTOR_MAX_FEE_PER_GAS_GWEI` in wei: no fee field ever above it.
    max_fee_per_gas: Option<U256>,
    /// SecretManager (TEE generation), where the secret store's transactions go.
    secret_manager: Option<Address>,
    fee_cache: FeeCache,
    heads: Arc<Heads>,
    /// Transactions waited for at once look for their receipts in nonce order.
    turns: ReceiptTurns,
    /// Whether looking for receipts before their head is announced pays on this node.
    early_looks: EarlyLooks,
}

#[derive(Debug, Clone, Copy)]
enum Fees {
    Eip1559 { max_fee: U256, priority_fee: U256 },
    Legacy { gas_price: U256 },
}

fn bump(v: U256, percent: u64) -> U256 {
    v + v * percent / 100 + 1
}

impl Fees {
    /// The fees of a transaction that bid `max_fee` per gas, with `priority_fee` (None: legacy).
    fn of(max_fee: U256, priority_fee: Option<U256>) -> Self {
        match priority_fee {
            Some(priority_fee) => Fees::Eip1559 {
                max_fee,
                priority_fee,
            },
            None => Fees::Legacy { gas_price: max_fee },
        }
    }

    fn bumped(self) -> Self {
        self.map(|v| bump(v, FEE_BUMP_PERCENT))
    }

    fn map(self, f: impl Fn(U256) -> U256) -> Self {
        match self {
            Fees::Eip1559 {
                max_fee,
                priority_fee,
            } => Fees::Eip1559 {
                max_fee: f(max_fee),
                priority_fee: f(priority_fee),
            },
            Fees::Legacy { gas_price } => Fees::Legacy {
                gas_price: f(gas_price),
            },
        }
    }

    /// The highest price per gas this may pay.
    fn max_fee(self) -> U256 {
        match self {
            Fees::Eip1559 { max_fee, .. } => max_fee,
            Fees::Legacy { gas_price } => gas_price,
        }
    }

    /// No field above `cap` (the priority fee never above the max fee).
    fn capped(self, cap: U256) -> Self {
        match self.map(|v| v.min(cap)) {
            Fees::Eip1559 {
                max_fee,
                priority_fee,
            } => Fees::Eip1559 {
                max_fee,
                priority_fee: priority_fee.min(max_fee),
            },
            legacy => legacy,
        }
    }

    /// Field by field the higher of the two (the same kind; else `self`).
    fn at_least(self, other: Fees) -> Self {
        match (self, other) {
            (
                Fees::Eip1559 {
                    max_fee,
                    priority_fee,
                },
                Fees::Eip1559 {
                    max_fee: m,
                    priority_fee: p,
                },
            ) => Fees::Eip1559 {
                max_fee: max_fee.max(m),
                priority_fee: priority_fee.max(p),
            },
            (Fees::Legacy { gas_price }, Fees::Legacy { gas_price: g }) => Fees::Legacy {
                gas_price: gas_price.max(g),
            },
            (fees, _) => fees,
        }
    }

    /// Whether a node takes `self` as a replacement of `last` (both fees up by 10 %).
    fn replaces(self, last: Fees) -> bool {
        let enough = |new: U256, old: U256| new > old + old * MIN_BUMP_PERCENT / 100;
        match (self, last) {
            (
                Fees::Eip1559 {
                    max_fee,
                    priority_fee,
                },
                Fees::Eip1559 {
                    max_fee: m,
                    priority_fee: p,
                },
            ) => enough(max_fee, m) && enough(priority_fee, p),
            (Fees::Legacy { gas_price }, Fees::Legacy { gas_price: g }) => enough(gas_price, g),
            _ => true,
        }
    }
}

/// The fees of the next replacement of a transaction last sent with `last`: the market's or a
/// bump, whichever is higher, never above `limit`; None when that is no valid replacement
/// (at the cap: the transaction waits for the base fee to fall).
fn replacement_fees(last: Fees, market: Fees, limit: Option<U256>) -> Option<Fees> {
    let wanted = last.bumped().at_least(market);
    let fees = match limit {
        Some(limit) => wanted.capped(limit),
        None => wanted,
    };
    fees.replaces(last).then_some(fees)
}

/// The gas limit of an output whose call was estimated at `estimate` gas, within `plan`.
///
/// The estimate with a margin, but at least `estimate + 64 × CALLBACK_TAIL_GAS`: a result callback
/// gets at most 63/64 of the gas left when it is called, so if it burns all of it, the output
/// keeps 1/64 of that — at least `CALLBACK_TAIL_GAS` — to finish its own work. Never below
/// `plan.min_gas` (raised after an out-of-gas) nor above `plan.max_gas`.
pub fn output_gas_limit(estimate: u64, plan: &OutputPlan) -> u64 {
    let margin = with_margin(estimate);
    let burn_proof = estimate.saturating_add(64 * CALLBACK_TAIL_GAS);
    margin.max(burn_proof).max(plan.min_gas).min(plan.max_gas)
}

/// The estimate plus the margin for state changes between estimate and inclusion (another
/// executor's output makes ours the one that settles the job and pays for it).
fn with_margin(estimate: u64) -> u64 {
    estimate
        .saturating_add(estimate * GAS_MARGIN_PERCENT / 100)
        .saturating_add(GAS_MARGIN_FIXED)
}

/// How one call's gas limit is chosen and until when it may land.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Output(OutputPlan),
    /// The estimate with the margin; the transaction matters until `until_ms`.
    Margin {
        until_ms: u64,
    },
}

impl Budget {
    fn until_ms(&self) -> u64 {
        match self {
            Budget::Output(plan) => plan.until_ms,
            Budget::Margin { until_ms } => *until_ms,
        }
    }
}

/// Wall-clock unix ms (the adapter's own deadline keeping; the chain has the last word).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn gwei(wei: U256) -> String {
    ethers::utils::format_units(wei, "gwei").unwrap_or_else(|_| wei.to_string())
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

    /// What the caller journals of this call's transaction `tx_hash`, sent with `nonce` and `fees`.
    fn sent(&self, tx_hash: H256, nonce: U256, fees: Fees) -> SentTx {
        let (max_fee_per_gas, max_priority_fee_per_gas) = match fees {
            Fees::Eip1559 {
                max_fee,
                priority_fee,
            } => (max_fee, Some(priority_fee)),
            Fees::Legacy { gas_price } => (gas_price, None),
        };
        SentTx {
            tx_hash,
            from: self.from,
            nonce,
            max_fee_per_gas,
            max_priority_fee_per_gas,
        }
    }

    /// The self-transfer that takes this call's nonce when the call came too late.
    fn cancel(&self) -> Call {
        Call {
            name: "self-transfer",
            from: self.from,
            to: self.from,
            data: Bytes::new(),
        }
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
            provider,
            wallet: RwLock::new(None),
            key_generation: AtomicU64::new(0),
            nonce: Mutex::new(NonceState::default()),
            pending: AtomicU64::new(0),
            output_gas: AtomicU64::new(0),
            max_fee_per_gas: None,
            secret_manager: None,
            fee_cache: FeeCache::new(DEFAULT_FEE_CACHE),
            heads: Arc::new(Heads::new(config.rpc_ws_url.clone())),
            turns: ReceiptTurns::default(),
            early_looks: EarlyLooks::default(),
            config,
        })
    }

    /// The node's `newHeads`, shared with whoever else needs to know the chain moved.
    pub fn heads(&self) -> Arc<Heads> {
        self.heads.clone()
    }

    /// A watch of heads whose current head counts as not yet seen: a receipt wait on it looks
    /// at once (for transactions sent before the watch began).
    fn heads_unseen(&self) -> watch::Receiver<HeadState> {
        let mut heads = self.heads.watch();
        heads.mark_changed();
        heads
    }

    /// Sends the secret store's transactions to `secret_manager` (None: they are refused).
    pub fn with_secret_manager(mut self, secret_manager: Option<Address>) -> Self {
        self.secret_manager = secret_manager;
        self
    }

    /// Sends one SecretManager call, given this long before its nonce is freed like a slash.
    async fn send_secret_call(
        &self,
        name: &'static str,
        data: Vec<u8>,
    ) -> Result<TxOutcome, ChainError> {
        // Like every send, refused first for want of a gas key.
        self.wallet()?;
        let to = self
            .secret_manager
            .ok_or(ChainError::NoContract("SecretManager"))?;
        let until_ms = now_ms().saturating_add(SLASH_PATIENCE.as_millis() as u64);
        self.send_to(
            to,
            name,
            data,
            Budget::Margin { until_ms },
            ignore_sent().as_ref(),
        )
        .await
    }

    /// Reuses fee data for `ttl` (`EXECUTOR_FEE_CACHE_MS`; zero: asks the node every time).
    pub fn with_fee_cache(mut self, ttl: Duration) -> Self {
        self.fee_cache = FeeCache::new(ttl);
        self
    }

    /// Whether receipts wait on the node's `newHeads` subscription now (else they are polled).
    pub fn watching_heads(&self) -> bool {
        self.heads.live()
    }

    /// Caps every fee field at `max_fee_per_gas` wei (None: no cap).
    pub fn with_max_fee_per_gas(mut self, max_fee_per_gas: Option<U256>) -> Self {
        self.max_fee_per_gas = max_fee_per_gas;
        self
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
        budget: Budget,
        sent: &dyn OnSent,
    ) -> Result<TxOutcome, ChainError> {
        self.send_to(self.config.jobs_address, name, data, budget, sent)
            .await
    }

    /// Sends one call to `to` and follows it to its end.
    async fn send_to(
        &self,
        to: Address,
        name: &'static str,
        data: Vec<u8>,
        budget: Budget,
        sent: &dyn OnSent,
    ) -> Result<TxOutcome, ChainError> {
        let wallet = self.wallet()?;
        let call = Call {
            name,
            from: wallet.address(),
            to,
            data: data.into(),
        };
        let pending = Pending::start(&self.pending);
        let result = self.send_call(&wallet, &call, budget, sent).await;
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
        budget: Budget,
        on_sent: &dyn OnSent,
    ) -> Result<TxOutcome, ChainError> {
        let until_ms = budget.until_ms();
        let mut fees = self.fees_under_cap(call.name, until_ms).await?;
        let mut estimate_request = self.transaction(call, None, None, fees);
        estimate_request.set_from(call.from);
        // Estimated for every transaction, never reused: what a job owner's callback burns
        // depends on the state (and on `GASPRICE`, hence the real fee fields), so only a fresh
        // estimate sizes the limit against a gas burner; and a revert here is how the chain says
        // no (job answered, window closed) before we pay for a transaction.
        let estimate = match rpc(
            "eth_estimateGas",
            self.provider.estimate_gas(&estimate_request, None),
        )
        .await
        {
            Ok(gas) => gas.min(U256::from(u64::MAX)).as_u64(),
            Err(e) => {
                return match revert_of(&e) {
                    Some(revert) => {
                        tracing::debug!(call = call.name, ?revert, "reverts in gas estimation");
                        Ok(TxOutcome::Reverted {
                            tx_hash: None,
                            revert,
                            gas_used: 0,
                        })
                    }
                    None => {
                        // Perhaps our fees are stale (below the base fee): read them again.
                        self.fee_cache.clear();
                        Err(transient("eth_estimateGas", e))
                    }
                };
            }
        };
        let gas = match &budget {
            Budget::Output(plan) if estimate > plan.max_gas => {
                // Sending it would only burn EXECUTOR_MAX_OUTPUT_GAS.
                tracing::warn!(
                    call = call.name,
                    estimate,
                    max = plan.max_gas,
                    "the estimate exceeds EXECUTOR_MAX_OUTPUT_GAS; not sent"
                );
                return Ok(TxOutcome::Reverted {
                    tx_hash: None,
                    revert: Revert::OutOfGas {
                        gas_limit: plan.max_gas,
                    },
                    gas_used: 0,
                });
            }
            Budget::Output(plan) => output_gas_limit(estimate, plan),
            Budget::Margin { .. } => with_margin(estimate),
        };
        let gas = U256::from(gas);

        // Every head from here on may hold the transaction.
        let mut heads = self.heads.watch();
        heads.borrow_and_update();
        // A fresh nonce, under the lock; the receipt is awaited outside it so that other
        // transactions are not held up by this one's block.
        let mut tries = 0;
        let (nonce, first_hash) = loop {
            tries += 1;
            match self.send_with_new_nonce(wallet, call, gas, fees).await {
                Ok(sent) => break sent,
                Err(SendFailure::NonceTooLow(_)) if tries < MAX_NONCE_TRIES => {}
                Err(SendFailure::Underpriced(_)) if tries < MAX_NONCE_TRIES => {
                    fees = match self.max_fee_per_gas {
                        Some(cap) => fees.bumped().capped(cap),
                        None => fees.bumped(),
                    }
                }
                Err(SendFailure::NonceTooLow(e) | SendFailure::Underpriced(e))
                | Err(SendFailure::Other(e)) => return Err(e),
            }
        };
        on_sent.sent(call.sent(first_hash, nonce, fees));
        self.follow_nonce(
            wallet, call, nonce, gas, fees, first_hash, until_ms, on_sent, heads,
        )
        .await
    }

    /// Follows the transactions sent with `nonce` until one is mined: replaced with higher fees
    /// while `until_ms` is ahead, then by a self-transfer, so the nonce never blocks later ones.
    #[allow(clippy::too_many_arguments)]
    async fn follow_nonce(
        &self,
        wallet: &LocalWallet,
        call: &Call,
        nonce: U256,
        gas: U256,
        mut fees: Fees,
        first_hash: H256,
        until_ms: u64,
        on_sent: &dyn OnSent,
        mut heads: watch::Receiver<HeadState>,
    ) -> Result<TxOutcome, ChainError> {
        let cancel = call.cancel();
        let mut turn = self.turns.enter(call.from, nonce);
        let mut sent = vec![first_hash];
        let mut cancels: Vec<H256> = vec![];
        // After a refused replacement or at the cap, look again soon: the base fee can fall
        // below our bid in the next block.
        let mut patience = RECEIPT_TIMEOUT;
        let mut at_cap_said = false;
        loop {
            let now = now_ms();
            let wait = if now < until_ms {
                patience.min(Duration::from_millis(until_ms - now))
            } else {
                patience
            };
            patience = FEE_CAP_POLL;
            let hashes: Vec<H256> = sent.iter().chain(&cancels).copied().collect();
            if let Some(receipt) = self
                .wait_for_receipt(&hashes, wait, &mut turn, &mut heads)
                .await
            {
                if cancels.contains(&receipt.transaction_hash) {
                    tracing::warn!(call = call.name, %nonce, tx_hash = ?receipt.transaction_hash,
                        "too late to land; the nonce went to a self-transfer");
                    return Ok(TxOutcome::Reverted {
                        tx_hash: Some(receipt.transaction_hash),
                        revert: Revert::ExecutionTimeOver,
                        gas_used: receipt.gas_used.unwrap_or_default().as_u64(),
                    });
                }
                return self.outcome(call, gas, receipt).await;
            }
            // A nonce above the node's next one can never be mined: the chain forgot our
            // earlier transactions (a reorg, or a pool that dropped them). Give the nonce back to
            // the chain and let the caller send again with a fresh one.
            if let Ok(pending) = rpc(
                "eth_getTransactionCount",
                self.provider
                    .get_transaction_count(call.from, Some(BlockNumber::Pending.into())),
            )
            .await
            {
                if pending < nonce {
                    self.nonce.lock().await.next = None;
                    tracing::warn!(call = call.name, %nonce, node_next_nonce = %pending,
                        "nonce gap: the chain forgot earlier transactions; sending again with a fresh nonce");
                    return Err(ChainError::Transient(format!(
                        "{} with nonce {nonce} sits behind a nonce gap (the node's next nonce is {pending})",
                        call.name
                    )));
                }
            }
            let now = now_ms();
            let late = now >= until_ms;
            if late && now >= until_ms.saturating_add(CANCEL_PATIENCE.as_millis() as u64) {
                // The chain is the authority on the nonce again for the next send.
                self.nonce.lock().await.next = None;
                return Err(ChainError::Transient(format!(
                    "{} with nonce {nonce} still unmined {CANCEL_PATIENCE:?} after its deadline",
                    call.name
                )));
            }
            let market = match self.market_fees().await {
                Ok((market, _)) => market,
                Err(e) => {
                    tracing::debug!(call = call.name, %nonce, error = %e, "no fees for a replacement");
                    continue;
                }
            };
            // A self-transfer costs 21 000 gas: it may bid one bump above the cap, so that it can
            // replace an output already sent at the cap.
            let limit = match self.max_fee_per_gas {
                Some(cap) if late => Some(bump(cap, FEE_BUMP_PERCENT)),
                cap => cap,
            };
            let Some(next) = replacement_fees(fees, market, limit) else {
                if !at_cap_said {
                    tracing::warn!(call = call.name, %nonce, max_fee_gwei = %gwei(fees.max_fee()),
                        "not mined and already at EXECUTOR_MAX_FEE_PER_GAS_GWEI; waiting for the base fee to fall");
                    at_cap_said = true;
                }
                continue;
            };
            let (what, signed) = if late {
                let transfer = self.signed(wallet, &cancel, nonce, U256::from(TRANSFER_GAS), next);
                (cancel.name, transfer)
            } else {
                (call.name, self.signed(wallet, call, nonce, gas, next))
            };
            let (raw, hash) = signed?;
            match rpc(
                "eth_sendRawTransaction",
                self.provider.send_raw_transaction(raw),
            )
            .await
            {
                Ok(_) => {
                    if !late {
                        on_sent.sent(call.sent(hash, nonce, next));
                    }
                }
                Err(e) => match classify(&e) {
                    // One of the earlier sends was mined meanwhile, or the node has this one.
                    Some(Refusal::NonceTooLow) | Some(Refusal::Known) => {}
                    // Not in the pool (e.g. below the base fee): the pool still holds the last
                    // accepted one, which the next round must outbid.
                    Some(Refusal::Underpriced) => {
                        tracing::debug!(call = what, %nonce, "replacement underpriced");
                        continue;
                    }
                    None => {
                        tracing::warn!(call = what, %nonce, error = %e, "replacement not accepted");
                        continue;
                    }
                },
            }
            fees = next;
            patience = RECEIPT_TIMEOUT;
            if late {
                if !cancels.contains(&hash) {
                    cancels.push(hash);
                }
            } else if !sent.contains(&hash) {
                sent.push(hash);
            }
            tracing::info!(call = what, replaces = call.name, tx_hash = ?hash, %nonce,
                max_fee_gwei = %gwei(fees.max_fee()), "replacement sent");
        }
    }

    /// Takes back the nonce of the output transaction `tx` (see `ChainWriter::take_back`): under
    /// the send lock, unless the chain has used the nonce or another send of ours holds it, the
    /// first self-transfer bids above the output (what the journal says it bid, or the node's
    /// pool if that is more) and later sends go past the nonce; then, as for an output whose
    /// window closed, the self-transfer is replaced until it is mined.
    async fn take_back_nonce(
        &self,
        wallet: &LocalWallet,
        tx: &SentTx,
    ) -> Result<TakeBack, ChainError> {
        let count = |block: BlockNumber| {
            rpc(
                "eth_getTransactionCount",
                self.provider
                    .get_transaction_count(tx.from, Some(block.into())),
            )
        };
        let output = Call {
            name: "superseded submitOutput",
            from: tx.from,
            to: self.config.jobs_address,
            data: Bytes::new(),
        };
        let transfer = output.cancel();
        let (fees, first_hash) = {
            let mut state = self.nonce_state().await;
            let mined = count(BlockNumber::Latest)
                .await
                .map_err(|e| transient("eth_getTransactionCount", e))?;
            if mined > tx.nonce {
                drop(state);
                return self.nonce_taken(tx).await;
            }
            let in_pool = rpc(
                "eth_getTransactionByHash",
                self.provider.get_transaction(tx.tx_hash),
            )
            .await
            .map_err(|e| transient("eth_getTransactionByHash", e))?;
            if in_pool.as_ref().is_some_and(|t| t.block_number.is_some()) {
                return Ok(TakeBack::OutputMined {
                    tx_hash: tx.tx_hash,
                });
            }
            let pending = count(BlockNumber::Pending)
                .await
                .map_err(|e| transient("eth_getTransactionCount", e))?;
            if in_pool.is_none() && pending > tx.nonce {
                // The node forgot the output and a later send of ours took its nonce.
                return Ok(TakeBack::NonceUsed);
            }
            if pending < tx.nonce {
                return Err(ChainError::Transient(format!(
                    "nonce {} sits behind a nonce gap (the node's next nonce is {pending})",
                    tx.nonce
                )));
            }
            let journalled = Fees::of(tx.max_fee_per_gas, tx.max_priority_fee_per_gas);
            let last = match &in_pool {
                Some(found) => journalled.at_least(Fees::of(
                    found
                        .max_fee_per_gas
                        .or(found.gas_price)
                        .unwrap_or_default(),
                    found.max_priority_fee_per_gas,
                )),
                None => journalled,
            };
            let (market, _) = self.market_fees().await?;
            // As for any self-transfer: one bump above the cap, to replace an output at the cap.
            let limit = self.max_fee_per_gas.map(|cap| bump(cap, FEE_BUMP_PERCENT));
            let fees = replacement_fees(last, market, limit).ok_or_else(|| {
                ChainError::Transient(format!(
                    "the output bid {} gwei: no self-transfer under EXECUTOR_MAX_FEE_PER_GAS_GWEI replaces it",
                    gwei(last.max_fee())
                ))
            })?;
            let (raw, hash) =
                self.signed(wallet, &transfer, tx.nonce, U256::from(TRANSFER_GAS), fees)?;
            if let Err(e) = rpc(
                "eth_sendRawTransaction",
                self.provider.send_raw_transaction(raw),
            )
            .await
            {
                match classify(&e) {
                    Some(Refusal::Known) => {}
                    Some(Refusal::NonceTooLow) => {
                        drop(state);
                        return self.nonce_taken(tx).await;
                    }
                    _ => return Err(transient("eth_sendRawTransaction", e)),
                }
            }
            state.taken_back(tx.nonce);
            tracing::info!(call = transfer.name, replaces = ?tx.tx_hash, tx_hash = ?hash,
                nonce = %tx.nonce, max_fee_gwei = %gwei(fees.max_fee()), "output taken back");
            (fees, hash)
        };
        let outcome = self
            .follow_nonce(
                wallet,
                &transfer,
                tx.nonce,
                U256::from(TRANSFER_GAS),
                fees,
                first_hash,
                now_ms(),
                ignore_sent().as_ref(),
                self.heads_unseen(),
            )
            .await?;
        Ok(match outcome {
            TxOutcome::Mined { tx_hash, gas_used }
            | TxOutcome::Reverted {
                tx_hash: Some(tx_hash),
                gas_used,
                ..
            } => TakeBack::TakenBack {
                transfer: tx_hash,
                gas_used,
            },
            TxOutcome::Reverted { tx_hash: None, .. } => TakeBack::NonceUsed,
        })
    }

    /// The chain has used the nonce of `tx`: by `tx` itself, or by another transaction.
    async fn nonce_taken(&self, tx: &SentTx) -> Result<TakeBack, ChainError> {
        let receipt = rpc(
            "eth_getTransactionReceipt",
            self.provider.get_transaction_receipt(tx.tx_hash),
        )
        .await
        .map_err(|e| transient("eth_getTransactionReceipt", e))?;
        Ok(match receipt {
            Some(receipt) if receipt.block_number.is_some() => TakeBack::OutputMined {
                tx_hash: tx.tx_hash,
            },
            _ => TakeBack::NonceUsed,
        })
    }

    /// The send lock, holding the nonce state of the current gas key.
    async fn nonce_state(&self) -> tokio::sync::MutexGuard<'_, NonceState> {
        let mut state = self.nonce.lock().await;
        let generation = self.key_generation.load(Ordering::SeqCst);
        if state.key_generation != generation {
            *state = NonceState::new(generation);
        }
        state
    }

    /// Takes the next nonce and sends the first transaction with it, under the send lock.
    async fn send_with_new_nonce(
        &self,
        wallet: &LocalWallet,
        call: &Call,
        gas: U256,
        fees: Fees,
    ) -> Result<(U256, H256), SendFailure> {
        let mut state = self.nonce_state().await;
        // The chain is asked only when the local count is in doubt (see `nonce.rs`).
        let nonce = match state.local() {
            Some(nonce) => nonce,
            None => {
                let pending = rpc(
                    "eth_getTransactionCount",
                    self.provider
                        .get_transaction_count(call.from, Some(BlockNumber::Pending.into())),
                )
                .await
                .map_err(|e| SendFailure::Other(transient("eth_getTransactionCount", e)))?;
                state.with_chain(pending)
            }
        };
        let (raw, hash) = self
            .signed(wallet, call, nonce, gas, fees)
            .map_err(SendFailure::Other)?;
        let sent = rpc(
            "eth_sendRawTransaction",
            self.provider.send_raw_transaction(raw),
        )
        .await;
        tracing::debug!(target: crate::domain::stage::STAGE_TARGET, stage = crate::domain::stage::Stage::Sent.name(), call = call.name);
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
                    // Another transaction of ours holds this nonce in the pool: outbid it (or
                    // go past it, if the chain counts it).
                    state.ask_chain = true;
                    self.fee_cache.clear();
                    return Err(SendFailure::Underpriced(transient(
                        "eth_sendRawTransaction",
                        e,
                    )));
                }
                None => {
                    // Perhaps a fee refusal (below the base fee): the next send reads both anew.
                    state.next = None;
                    self.fee_cache.clear();
                    return Err(SendFailure::Other(transient("eth_sendRawTransaction", e)));
                }
            },
        }
        state.sent(nonce);
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
        let tx = self.transaction(call, Some(nonce), Some(gas), fees);
        let signature = wallet
            .sign_transaction_sync(&tx)
            .map_err(|e| transient("signing", e))?;
        let raw = tx.rlp_signed(&signature);
        let hash = H256::from(keccak256(&raw));
        Ok((raw, hash))
    }

    /// The transaction of `call`; without nonce and gas it is what the estimate is asked about.
    fn transaction(
        &self,
        call: &Call,
        nonce: Option<U256>,
        gas: Option<U256>,
        fees: Fees,
    ) -> TypedTransaction {
        let mut tx: TypedTransaction = match fees {
            Fees::Eip1559 {
                max_fee,
                priority_fee,
            } => Eip1559TransactionRequest::new()
                .from(call.from)
                .to(call.to)
                .data(call.data.clone())
                .max_fee_per_gas(max_fee)
                .max_priority_fee_per_gas(priority_fee)
                .chain_id(self.config.chain_id)
                .into(),
            Fees::Legacy { gas_price } => TransactionRequest::new()
                .from(call.from)
                .to(call.to)
                .data(call.data.clone())
                .gas_price(gas_price)
                .chain_id(self.config.chain_id)
                .into(),
        };
        if let Some(nonce) = nonce {
            tx.set_nonce(nonce);
        }
        if let Some(gas) = gas {
            tx.set_gas(gas);
        }
        tx
    }

    /// The fees to bid, and the base fee (legacy: the gas price) the chain charges now: from the
    /// fee cache while it holds (`fee_cache.rs`), else from the node.
    async fn fees(&self) -> Result<(Fees, U256), ChainError> {
        let data = match self.fee_cache.get(self.heads.latest()) {
            Some(data) => data,
            None => {
                let data = self.fee_data().await?;
                self.fee_cache.put(data);
                data
            }
        };
        Ok(match data.priority_fee {
            Some(priority_fee) => (
                Fees::Eip1559 {
                    max_fee: data.base_fee * 2 + priority_fee,
                    priority_fee,
                },
                data.base_fee,
            ),
            None => (
                Fees::Legacy {
                    gas_price: data.base_fee,
                },
                data.base_fee,
            ),
        })
    }

    /// The market's fees now, asked of the node (replacements, take-backs, a base fee above the cap).
    async fn market_fees(&self) -> Result<(Fees, U256), ChainError> {
        self.fee_cache.clear();
        self.fees().await
    }

    /// What fees are made of, from the node: the latest block's base fee and
    /// `eth_maxPriorityFeePerGas`, or the legacy gas price when blocks carry no base fee.
    async fn fee_data(&self) -> Result<FeeData, ChainError> {
        let block = rpc(
            "eth_getBlockByNumber",
            self.provider.get_block(BlockNumber::Latest),
        )
        .await
        .map_err(|e| transient("eth_getBlockByNumber", e))?
        .ok_or_else(|| ChainError::Transient("the node has no latest block".into()))?;
        let block_number = block.number.map_or(0, |n| n.low_u64());
        match block.base_fee_per_gas {
            Some(base_fee) => {
                let priority_fee = rpc(
                    "eth_maxPriorityFeePerGas",
                    self.provider
                        .request::<_, U256>("eth_maxPriorityFeePerGas", ()),
                )
                .await
                .unwrap_or_else(|_| U256::from(FALLBACK_PRIORITY_FEE));
                Ok(FeeData {
                    base_fee,
                    priority_fee: Some(priority_fee),
                    block: block_number,
                })
            }
            None => {
                let gas_price = rpc("eth_gasPrice", self.provider.get_gas_price())
                    .await
                    .map_err(|e| transient("eth_gasPrice", e))?;
                Ok(FeeData {
                    base_fee: gas_price,
                    priority_fee: None,
                    block: block_number,
                })
            }
        }
    }

    /// The market's fees capped by `EXECUTOR_MAX_FEE_PER_GAS_GWEI`. While the chain's base fee
    /// is above the cap nothing of ours could be mined: wait (and say so) until it falls, or
    /// fail once `until_ms` has passed.
    async fn fees_under_cap(&self, name: &str, until_ms: u64) -> Result<Fees, ChainError> {
        let mut said = false;
        loop {
            let (fees, base_fee) = self.fees().await?;
            let Some(cap) = self.max_fee_per_gas else {
                return Ok(fees);
            };
            if base_fee <= cap {
                if said {
                    tracing::info!(call = name, base_fee_gwei = %gwei(base_fee), "the base fee is below EXECUTOR_MAX_FEE_PER_GAS_GWEI again; sending");
                }
                return Ok(fees.capped(cap));
            }
            if now_ms() >= until_ms {
                return Err(ChainError::Transient(format!(
                    "the base fee ({} gwei) stayed above EXECUTOR_MAX_FEE_PER_GAS_GWEI ({} gwei) until the deadline",
                    gwei(base_fee),
                    gwei(cap)
                )));
            }
            if !said {
                tracing::warn!(call = name, base_fee_gwei = %gwei(base_fee), cap_gwei = %gwei(cap),
                    "the base fee is above EXECUTOR_MAX_FEE_PER_GAS_GWEI; waiting for it to fall");
                said = true;
            }
            self.fee_cache.clear();
            tokio::time::sleep(FEE_CAP_POLL).await;
        }
    }

    /// Looks up the receipts of every hash sent for one nonce until one is mined or time is up.
    /// While `newHeads` is subscribed it looks when a head has been announced since its last look
    /// (`heads` was marked seen just before the first send, so the block that mined it always
    /// counts), when a lower nonce of ours was just mined, early (`RECEIPT_EARLY_LOOKS`) while
    /// no head comes and such looks pay, and every `RECEIPT_SAFETY_POLL`; without a subscription
    /// it polls with backoff.
    async fn wait_for_receipt(
        &self,
        hashes: &[H256],
        timeout: Duration,
        turn: &mut Turn<'_>,
        heads: &mut watch::Receiver<HeadState>,
    ) -> Option<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = RECEIPT_FIRST_POLL;
        // Set when the wait below ends on a new head or a lower nonce's receipt.
        let (mut new_head, mut line_moved) = (false, false);
        let mut early = match self.early_looks.this_wait() {
            true => RECEIPT_EARLY_LOOKS,
            false => 0,
        };
        // The first early look is at once.
        let mut early_due = early > 0 && turn.alone();
        loop {
            // A head announced since the last look (`changed` below marks it seen).
            let fresh = new_head || heads.has_changed().unwrap_or(true);
            new_head = false;
            let live = heads.borrow_and_update().live;
            // Behind an earlier nonce of ours, which must be mined first: look only now and
            // then (a safety net), and at once when the line moves.
            let behind = turn.behind();
            let now = tokio::time::Instant::now();
            let safety_due = now >= turn.looked_at + RECEIPT_SAFETY_POLL;
            let due = match behind {
                true => safety_due,
                false => !live || fresh || line_moved || early_due || safety_due,
            };
            // Only a look made for no other reason tells whether early looks pay.
            let early_look = live && early_due && !fresh && !line_moved;
            line_moved = false;
            early_due = false;
            if due {
                turn.looked_at = now;
                let found = self.look_for_receipt(hashes).await;
                if early_look {
                    self.early_looks.looked(found.is_some());
                }
                if found.is_some() {
                    return found;
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            let next_look = deadline.min(turn.looked_at + RECEIPT_SAFETY_POLL);
            if behind {
                tokio::select! {
                    () = turn.line_moved() => line_moved = true,
                    () = tokio::time::sleep_until(next_look) => {}
                }
                continue;
            }
            if live {
                let until = match early > 0 && turn.alone() {
                    false => next_look,
                    true => next_look.min(now + wait),
                };
                match tokio::time::timeout_at(until, heads.changed()).await {
                    Ok(Ok(())) => {
                        new_head = true;
                        continue;
                    }
                    Err(_) => {
                        if early > 0 {
                            early -= 1;
                            early_due = true;
                            wait = (wait * 2).min(RECEIPT_POLL_INTERVAL);
                        }
                        continue;
                    }
                    // The subscription's task is gone: poll.
                    Ok(Err(_)) => {}
                }
            }
            tokio::time::sleep_until(deadline.min(now + wait)).await;
            wait = (wait * 2).min(RECEIPT_POLL_INTERVAL);
        }
    }

    /// The first receipt found of `hashes` (a failed request counts as not found).
    async fn look_for_receipt(&self, hashes: &[H256]) -> Option<TransactionReceipt> {
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
        None
    }

    /// Mined, or reverted with the reason learned by replaying the call at the receipt's block.
    async fn outcome(
        &self,
        call: &Call,
        gas: U256,
        receipt: TransactionReceipt,
    ) -> Result<TxOutcome, ChainError> {
        let tx_hash = receipt.transaction_hash;
        let gas_used = receipt.gas_used.unwrap_or_default();
        if receipt.status == Some(U64::from(1)) {
            if call.name == SUBMIT_OUTPUT {
                self.output_gas.store(gas_used.low_u64(), Ordering::SeqCst);
            }
            return Ok(TxOutcome::Mined {
                tx_hash,
                gas_used: gas_used.as_u64(),
            });
        }
        if gas_used >= gas {
            // Only an exceptional halt (out of gas) takes the whole limit.
            return Ok(TxOutcome::Reverted {
                tx_hash: Some(tx_hash),
                revert: Revert::OutOfGas {
                    gas_limit: gas.as_u64(),
                },
                gas_used: gas_used.as_u64(),
            });
        }
        let block = receipt.block_number.map(|n| BlockId::Number(n.into()));
        let mut replay = call.request();
        replay.set_gas(gas);
        let revert = match rpc("eth_call", self.provider.call(&replay, block)).await {
            Err(e) => revert_of(&e)
                .unwrap_or_else(|| Revert::Other(format!("reverted; the replay failed: {e}"))),
            Ok(_) => Revert::Other("reverted; the replay at its block succeeded".into()),
        };
        Ok(TxOutcome::Reverted {
            tx_hash: Some(tx_hash),
            revert,
            gas_used: gas_used.as_u64(),
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
        plan: OutputPlan,
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
        self.send(SUBMIT_OUTPUT, data, Budget::Output(plan), sent.as_ref())
            .await
    }

    async fn slash_on_execution_timeout(&self, job_id: U256) -> Result<TxOutcome, ChainError> {
        let data = SlashOnExecutionTimeoutCall { job_id }.encode();
        let until_ms = now_ms().saturating_add(SLASH_PATIENCE.as_millis() as u64);
        self.send(
            "slashOnExecutionTimeout",
            data,
            Budget::Margin { until_ms },
            ignore_sent().as_ref(),
        )
        .await
    }

    async fn acknowledge_store(&self, ack: &SecretAck) -> Result<TxOutcome, ChainError> {
        let data = secret_call(
            ACKNOWLEDGE_STORE,
            &[
                Token::Uint(ack.secret_id),
                Token::Uint(U256::from(ack.sign_timestamp)),
                Token::Bytes(ack.signature.clone()),
            ],
        );
        self.send_secret_call("acknowledgeStore", data).await
    }

    async fn acknowledge_store_failed(&self, secret_id: U256) -> Result<TxOutcome, ChainError> {
        let data = secret_call(ACKNOWLEDGE_STORE_FAILED, &[Token::Uint(secret_id)]);
        self.send_secret_call("acknowledgeStoreFailed", data).await
    }

    async fn mark_store_alive(
        &self,
        sign_timestamp: u64,
        signature: &[u8],
    ) -> Result<TxOutcome, ChainError> {
        let data = secret_call(
            MARK_STORE_ALIVE,
            &[
                Token::Uint(U256::from(sign_timestamp)),
                Token::Bytes(signature.to_vec()),
            ],
        );
        self.send_secret_call("markStoreAlive", data).await
    }

    async fn take_back(&self, tx: &SentTx) -> Result<TakeBack, ChainError> {
        let wallet = self.wallet()?;
        if wallet.address() != tx.from {
            return Ok(TakeBack::OtherKey);
        }
        let pending = Pending::start(&self.pending);
        let result = self.take_back_nonce(&wallet, tx).await;
        drop(pending);
        match &result {
            Ok(end) => tracing::info!(tx_hash = ?tx.tx_hash, ?end, "take-back finished"),
            Err(e) => tracing::warn!(tx_hash = ?tx.tx_hash, error = %e, "take-back failed"),
        }
        result
    }
}

// SecretManager's store-side functions (encoded by hand: its bindings belong to the chain adapter).
const ACKNOWLEDGE_STORE: &str = "acknowledgeStore(uint256,uint256,bytes)";
const ACKNOWLEDGE_STORE_FAILED: &str = "acknowledgeStoreFailed(uint256)";
const MARK_STORE_ALIVE: &str = "markStoreAlive(uint256,bytes)";

/// Calldata of `function(args)`: its selector, then the ABI-encoded arguments.
fn secret_call(function: &str, args: &[Token]) -> Vec<u8> {
    let mut data = ethers::utils::id(function).to_vec();
    data.extend(ethers::abi::encode(args));
    data
}

/// The readiness probe's questions, answered by the gas account's node (none without a chain).
#[async_trait]
impl crate::domain::dal::ChainProbe for TxSender {
    async fn head_block(&self) -> Option<u64> {
        if !self.config.is_configured() {
            return None;
        }
        TxSender::head_block(self).await
    }

    async fn gas_balance(&self) -> Option<U256> {
        TxSender::gas_balance(self).await
    }

    async fn gas_price(&self) -> Option<U256> {
        TxSender::gas_price(self).await
    }

    async fn gas_nonces(&self) -> Option<(u64, u64)> {
        TxSender::gas_nonces(self).await
    }

    fn pending_transactions(&self) -> u64 {
        TxSender::pending_transactions(self)
    }

    fn output_gas(&self) -> u64 {
        TxSender::output_gas(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(min_gas: u64, max_gas: u64) -> OutputPlan {
        OutputPlan {
            min_gas,
            max_gas,
            until_ms: 0,
        }
    }

    #[test]
    fn secret_manager_selectors_are_the_published_ones() {
        for (function, selector) in [
            (ACKNOWLEDGE_STORE, "7f4e398c"),
            (ACKNOWLEDGE_STORE_FAILED, "2708e35c"),
            (MARK_STORE_ALIVE, "76c32e5e"),
        ] {
            assert_eq!(
                hex::encode(&secret_call(function, &[])[..4]),
                selector,
                "{function}"
            );
        }
    }

    #[test]
    fn an_output_keeps_room_for_its_own_work_after_a_burning_callback() {
        // Small estimate: the 63/64 reserve dominates the margin.
        let limit = output_gas_limit(100_000, &plan(0, 3_000_000));
        assert_eq!(limit, 100_000 + 64 * CALLBACK_TAIL_GAS);
        // Whatever was spent before the call (at most the estimate), a callback taking 63/64 of
        // the rest leaves at least CALLBACK_TAIL_GAS.
        for before in [0, 50_000, 100_000] {
            assert!((limit - before) / 64 >= CALLBACK_TAIL_GAS);
        }
        // Large estimate: the margin dominates.
        assert_eq!(
            output_gas_limit(2_000_000, &plan(0, 10_000_000)),
            2_000_000 + 1_000_000 + GAS_MARGIN_FIXED
        );
        // Raised by the domain after an out-of-gas, and never above the maximum.
        assert_eq!(
            output_gas_limit(100_000, &plan(1_500_000, 3_000_000)),
            1_500_000
        );
        assert_eq!(output_gas_limit(100_000, &plan(0, 400_000)), 400_000);
        assert_eq!(
            output_gas_limit(100_000, &plan(5_000_000, 3_000_000)),
            3_000_000
        );
    }

    fn eip1559(max_fee: u64, priority_fee: u64) -> Fees {
        Fees::Eip1559 {
            max_fee: U256::from(max_fee),
            priority_fee: U256::from(priority_fee),
        }
    }

    fn fields(fees: Fees) -> (u64, u64) {
        match fees {
            Fees::Eip1559 {
                max_fee,
                priority_fee,
            } => (max_fee.as_u64(), priority_fee.as_u64()),
            Fees::Legacy { gas_price } => (gas_price.as_u64(), 0),
        }
    }

    #[test]
    fn replacements_follow_the_market_bump_and_stop_at_the_cap() {
        let last = eip1559(1_000, 100);
        // A quiet market: a plain bump.
        let quiet = replacement_fees(last, eip1559(500, 50), None).unwrap();
        assert_eq!(fields(quiet), (1_251, 126));
        // A spike: straight to the market's fees.
        let spike = replacement_fees(last, eip1559(50_000, 100), None).unwrap();
        assert_eq!(fields(spike), (50_000, 126));
        // Capped: never above the cap, priority never above the max fee.
        let capped = replacement_fees(last, eip1559(50_000, 100), Some(U256::from(5_000))).unwrap();
        assert_eq!(fields(capped), (5_000, 126));
        // At the cap: no valid replacement (nodes want +10 % on both fees).
        assert_eq!(
            replacement_fees(
                eip1559(5_000, 126),
                eip1559(50_000, 100),
                Some(U256::from(5_000))
            )
            .map(fields),
            None
        );
        assert_eq!(
            replacement_fees(
                eip1559(5_000, 126),
                eip1559(50_000, 100),
                Some(U256::from(5_400))
            )
            .map(fields),
            None,
            "8 % more is not a replacement"
        );
        let legacy = replacement_fees(
            Fees::Legacy {
                gas_price: U256::from(100),
            },
            Fees::Legacy {
                gas_price: U256::from(90),
            },
            None,
        )
        .unwrap();
        assert_eq!(fields(legacy), (126, 0));
    }
}
