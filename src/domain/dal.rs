//! The ports: one trait per side effect the domain needs. The domain sees the world only through
//! these; `effects/` implements them and `bootstrap.rs` wires them. Each has a shared behavioural
//! suite in `domain::contract_tests` that runs against the mockall stub and the real adapter.

use std::path::PathBuf;

use std::sync::Arc;

use async_trait::async_trait;
use ethers::types::{Address, H256, U256};
use thiserror::Error;

use super::model::{
    ChainStatus, Deployment, ErrorCode, Job, JobRecord, Readiness, SecretAck, SecretRecord,
    SecretTimeouts, SentTx, SignedOutput, SupersededOutput,
};

/// The enclave key: the executor's identity. Signs registration and outputs.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait EnclaveSigner: Send + Sync {
    fn address(&self) -> Address;
    /// The 64-byte uncompressed public key without the `04` prefix.
    fn public_key(&self) -> [u8; 64];
    /// Signs a 32-byte digest: 65 bytes `r ‖ s ‖ v`, `v = 27 + recovery id`.
    fn sign_digest(&self, digest: [u8; 32]) -> Result<[u8; 65], SignerError>;
    /// Opens a message ECIES-encrypted to the enclave public key (secp256k1, as the `ecies`
    /// crate 0.2 seals it: ephemeral key ‖ nonce ‖ tag ‖ AES-256-GCM ciphertext). The key never
    /// leaves the signer.
    fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>, SignerError>;
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("enclave signing failed: {0}")]
pub struct SignerError(pub String);

/// Wall-clock time and waiting. Unix milliseconds throughout.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
    async fn sleep_ms(&self, ms: u64);
}

/// Durable state: configuration, chain cursor and the job journal.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Store: Send + Sync {
    fn owner(&self) -> Result<Option<Address>, StoreError>;
    /// Sets the owner if none is set; returns false (and changes nothing) when one already is.
    fn set_owner_once(&self, owner: Address) -> Result<bool, StoreError>;
    fn gas_key(&self) -> Result<Option<[u8; 32]>, StoreError>;
    fn set_gas_key(&self, secret: [u8; 32]) -> Result<(), StoreError>;
    /// The timestamp of the last accepted owner-signed configuration change.
    fn config_timestamp(&self) -> Result<Option<u64>, StoreError>;
    /// Records `timestamp` if it is later than the last one (atomically, durably); returns
    /// false and changes nothing otherwise. This is what makes a replayed change fail.
    fn advance_config_timestamp(&self, timestamp: u64) -> Result<bool, StoreError>;
    /// The first block whose logs are not yet known to be handled.
    fn cursor(&self) -> Result<Option<u64>, StoreError>;
    fn set_cursor(&self, next_block: u64) -> Result<(), StoreError>;
    fn chain_status(&self) -> Result<ChainStatus, StoreError>;
    fn set_chain_status(&self, status: ChainStatus) -> Result<(), StoreError>;
    fn job(&self, id: U256) -> Result<Option<JobRecord>, StoreError>;
    /// Journals `record` as `JobRecord::trimmed` keeps it, durably.
    fn put_job(&self, record: &JobRecord) -> Result<(), StoreError>;
    /// Journals `record` as `put_job` does, durable only at the next `flush` (or `put_job`): for
    /// a writer that holds the journal lock, so that it flushes after letting go and concurrent
    /// jobs share one flush, or for a record whose loss a later write covers. Writes become
    /// durable in the order they were made: once one is, every earlier one is too (a crash
    /// keeps a prefix). Unless overridden it is `put_job`.
    fn write_job(&self, record: &JobRecord) -> Result<(), StoreError> {
        self.put_job(record)
    }
    /// Removes a job and its index entries; durable at the next `flush` or `put_job`.
    fn remove_job(&self, id: U256) -> Result<(), StoreError>;
    /// One page of the journal: at most `query.limit` jobs past `query.after` in `query.order`,
    /// only those in `query.state` if given. Touches about as many records as it returns, or a
    /// bounded number of them (then `JobSlice::resume_after` says where it stopped).
    fn list_jobs(&self, query: &JobQuery) -> Result<JobSlice, StoreError>;
    /// Every job for which `JobRecord::is_open` holds, in id order: what recovery resumes.
    fn open_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// At most `limit` jobs whose execution time ended (`execStartTime*1000 + deadline`, the
    /// window without the buffer) before `ended_before_ms`, earliest first, starting past
    /// `after` (the `(end, id)` of the last job of the previous batch).
    fn expired_jobs(
        &self,
        ended_before_ms: u64,
        after: Option<(u64, U256)>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// The chain and contracts this store's journal belongs to (None until first recorded).
    fn deployment(&self) -> Result<Option<Deployment>, StoreError>;
    fn set_deployment(&self, deployment: &Deployment) -> Result<(), StoreError>;
    /// Output transactions of jobs a reorg superseded whose nonces are still to be taken back
    /// (`ChainWriter::take_back`), in hash order.
    fn take_backs(&self) -> Result<Vec<SupersededOutput>, StoreError>;
    /// Adds one (keyed by its transaction's hash), durably.
    fn put_take_back(&self, output: &SupersededOutput) -> Result<(), StoreError>;
    /// Removes one, durably; nothing happens if it is unknown.
    fn remove_take_back(&self, tx_hash: H256) -> Result<(), StoreError>;
}

/// What `Store::list_jobs` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSlice {
    pub records: Vec<JobRecord>,
    /// Set when the store stopped looking before the page was full and before the end of the
    /// journal (it reads a bounded number of records per page): the next page starts past it.
    pub resume_after: Option<U256>,
}

/// The order of a page of jobs, by job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobOrder {
    /// Oldest first: `after` is a lower bound.
    #[default]
    Ascending,
    /// Newest first: `after` is an upper bound.
    Descending,
}

/// Which page of the journal `Store::list_jobs` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs in this state (one of `model::JOB_STATES`).
    pub state: Option<&'static str>,
    /// Only jobs past this id, in `order`.
    pub after: Option<U256>,
    pub order: JobOrder,
    pub limit: usize,
}

impl JobQuery {
    /// Whether `record` belongs on this page (ignoring the limit).
    pub fn admits(&self, record: &JobRecord) -> bool {
        let id = record.job.id;
        let past = match (self.after, self.order) {
            (None, _) => true,
            (Some(after), JobOrder::Ascending) => id > after,
            (Some(after), JobOrder::Descending) => id < after,
        };
        past && self.state.is_none_or(|s| record.state.name() == s)
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("store holds a corrupt record under {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the store in {0} is locked by another process (another executor with the same EXECUTOR_DATA_DIR?)")]
    Locked(String),
}

/// The secret store (TEE generation): records of the secrets SecretManager told us about, the
/// plaintext of those injected into us (sealed at rest, bound to their id), and when the chain
/// last saw us alive.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait SecretStore: Send + Sync {
    fn secret(&self, id: U256) -> Result<Option<SecretRecord>, StoreError>;
    /// Every record, in id order.
    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError>;
    /// Writes `record`, and with `plaintext` its bytes too (in one step), durably. Without
    /// `plaintext` the bytes already kept stay.
    // mockall needs the lifetime named (an elided one inside `Option` does not mock).
    #[allow(clippy::needless_lifetimes)]
    fn put_secret<'a>(
        &self,
        record: &SecretRecord,
        plaintext: Option<&'a [u8]>,
    ) -> Result<(), StoreError>;
    /// The plaintext kept for `id`, if any.
    fn plaintext(&self, id: U256) -> Result<Option<Vec<u8>>, StoreError>;
    /// Forgets the plaintext only (the record stays), durably.
    fn remove_plaintext(&self, id: U256) -> Result<(), StoreError>;
    /// Forgets the record and its plaintext, durably; nothing happens if unknown.
    fn remove_secret(&self, id: U256) -> Result<(), StoreError>;
    /// When (unix seconds) our last `markStoreAlive` was mined.
    fn last_alive(&self) -> Result<Option<u64>, StoreError>;
    /// Records it, durably.
    fn set_last_alive(&self, at_secs: u64) -> Result<(), StoreError>;
}

/// Where job code comes from: the calldata of a UserCode transaction.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CodeSource: Send + Sync {
    async fn fetch_code(&self, codehash: H256) -> Result<String, CodeFetchError>;
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodeFetchError {
    #[error("no transaction with hash {0:?}")]
    NotFound(H256),
    #[error("transaction {0:?} was not sent to the UserCode contract")]
    WrongContract(H256),
    #[error("calldata is not a saveCodeInCallData call: {0}")]
    BadCalldata(String),
    /// The RPC failed; the same call may succeed later.
    #[error("code fetch failed for now: {0}")]
    Transient(String),
}

/// A job slot: a place where exactly one job runs at a time, with its own resource limits.
/// `cgroup_procs` lists the `cgroup.procs` files a sandbox process must join before it runs
/// user code (empty when cgroups are not enforced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub index: usize,
    pub cgroup_procs: Vec<PathBuf>,
}

/// The pool of job slots.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Slots: Send + Sync {
    fn capacity(&self) -> usize;
    /// Takes a free slot, or None when all are busy. Never blocks. It may also answer None
    /// while some are free, for a bounded time, to hold them back for a busy slot that is ready
    /// (sooner free than a cold one starts); the caller then asks again within a few ms.
    fn try_acquire(&self) -> Option<Slot>;
    fn release(&self, slot: Slot);
    fn busy(&self) -> usize;
    /// Whether cgroup limits are really applied to the slots.
    fn enforced(&self) -> bool;
    /// How many times the kernel's OOM killer has fired in this slot so far.
    fn oom_kills(&self, slot: &Slot) -> u64;
}

/// What one sandboxed run returned, before it becomes a protocol outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    /// The worker answered; the body is the output.
    Output(Vec<u8>),
    /// The code did not load (syntax error, no default export, …).
    LoadFailed(String),
    /// The deadline passed; the process was killed.
    DeadlineExceeded,
    /// The body grew past the output limit; reading stopped there.
    OutputTooLarge,
    /// The runtime died or answered nothing (for example killed for memory).
    Crashed(String),
}

/// The sandbox: runs one job's code on one input inside one slot.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// `secret` (a TEE-generation job's secret bytes) reaches the job, and only this job, as
    /// `env.secret`, an ArrayBuffer and the only key of `env`; `None` leaves `env` empty.
    async fn run<'s>(
        &self,
        slot: &Slot,
        code: &str,
        input: &[u8],
        secret: Option<&'s [u8]>,
        deadline_ms: u64,
    ) -> Result<RunResult, SandboxError>;
    /// Whether the runtime the sandbox starts (the workerd binary) is there and executable.
    fn runtime_found(&self) -> bool;
}

/// The sandbox itself could not work (not the user's code): e.g. workerd missing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("sandbox failed: {0}")]
pub struct SandboxError(pub String);

/// Why the chain refused a transaction, in the protocol's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revert {
    ExecutionTimeOver,
    SignatureTooOld,
    NotSelectedExecutor,
    AlreadySubmittedOutput,
    InvalidJob,
    DeadlineNotOver,
    /// `Panic(0x32)`: the published Jobs has no job with this id (never created).
    UnknownJob,
    /// `AttestationAutherKeyNotVerified()`: the signer is not (or no longer) a verified enclave.
    EnclaveNotVerified,
    /// The transaction used its whole gas limit (a job owner's callback can burn it).
    OutOfGas {
        gas_limit: u64,
    },
    Other(String),
}

impl Revert {
    /// A short stable name, for metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Revert::ExecutionTimeOver => "execution_time_over",
            Revert::SignatureTooOld => "signature_too_old",
            Revert::NotSelectedExecutor => "not_selected_executor",
            Revert::AlreadySubmittedOutput => "already_submitted_output",
            Revert::InvalidJob => "invalid_job",
            Revert::DeadlineNotOver => "deadline_not_over",
            Revert::UnknownJob => "unknown_job",
            Revert::EnclaveNotVerified => "enclave_not_verified",
            Revert::OutOfGas { .. } => "out_of_gas",
            Revert::Other(_) => "other",
        }
    }

    /// Every `name`, so that each counter series exists from the start.
    pub const NAMES: &'static [&'static str] = &[
        "execution_time_over",
        "signature_too_old",
        "not_selected_executor",
        "already_submitted_output",
        "invalid_job",
        "deadline_not_over",
        "unknown_job",
        "enclave_not_verified",
        "out_of_gas",
        "other",
    ];
}

impl std::fmt::Display for Revert {
    /// The chain's own name for the refusal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ExecutionTimeOver => f.write_str("JobsExecutionTimeOver"),
            Self::SignatureTooOld => f.write_str("JobsSignatureTooOld"),
            Self::NotSelectedExecutor => f.write_str("JobsNotSelectedExecutor"),
            Self::AlreadySubmittedOutput => f.write_str("JobsExecutorAlreadySubmittedOutput"),
            Self::InvalidJob => f.write_str("JobsInvalidJob"),
            Self::DeadlineNotOver => f.write_str("JobsDeadlineNotOver"),
            Self::UnknownJob => f.write_str("Panic(0x32): no job with this id"),
            Self::EnclaveNotVerified => f.write_str("AttestationAutherKeyNotVerified"),
            Self::OutOfGas { gas_limit } => write!(f, "out of gas (limit {gas_limit})"),
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

/// The end of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutcome {
    /// `gas_used` is what the gas account paid for (in gas units).
    Mined { tx_hash: H256, gas_used: u64 },
    /// Refused in the estimate (no hash, no gas) or mined with status 0.
    Reverted {
        tx_hash: Option<H256>,
        revert: Revert,
        gas_used: u64,
    },
}

impl TxOutcome {
    pub fn gas_used(&self) -> u64 {
        match self {
            Self::Mined { gas_used, .. } | Self::Reverted { gas_used, .. } => *gas_used,
        }
    }
}

/// How an output transaction may be sent: its gas limit bounds and when it stops mattering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputPlan {
    /// The lowest gas limit to use (raised by the domain after an out-of-gas revert).
    pub min_gas: u64,
    /// The highest gas limit ever used (`EXECUTOR_MAX_OUTPUT_GAS`).
    pub max_gas: u64,
    /// Unix ms after which the chain refuses the output (the job's window end): a transaction
    /// still unmined then is replaced by a self-transfer so its nonce does not block others.
    pub until_ms: u64,
}

/// Hears each transaction `ChainWriter::submit_output` broadcasts (its hash, nonce and fees).
pub trait OnSent: Send + Sync {
    fn sent(&self, tx: SentTx);
}

impl<F: Fn(SentTx) + Send + Sync> OnSent for F {
    fn sent(&self, tx: SentTx) {
        self(tx)
    }
}

/// For `ChainWriter::submit_output` callers with no use for the transaction hash.
pub fn ignore_sent() -> Arc<dyn OnSent> {
    Arc::new(|_tx: SentTx| {})
}

/// What became of an output transaction whose nonce `ChainWriter::take_back` was asked to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeBack {
    /// A self-transfer (to the gas address, value 0) was mined with its nonce: the output can
    /// never be mined.
    TakenBack { transfer: H256, gas_used: u64 },
    /// The output itself was mined before its nonce could be taken (too late).
    OutputMined { tx_hash: H256 },
    /// Another transaction of ours holds the nonce (a later send, or a take-back before a
    /// restart): nothing of the output is left to take.
    NonceUsed,
    /// Signed with a gas key that is no longer configured: it cannot be replaced.
    OtherKey,
}

/// What the executor reads from the chain besides logs and code.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ChainReader: Send + Sync {
    /// Whether the `JobCreated` log that announced `job` (its origin) is on the canonical chain
    /// now: a reorg may have removed it, or given the job's id to another job. True for a job
    /// without a recorded origin (nothing to check). Asked while a job runs and again before
    /// its output is sent: an adapter may keep a yes for as long as the chain has not moved.
    async fn job_is_canonical(&self, job: &Job) -> Result<bool, ChainError>;
    /// SecretManager's `ACKNOWLEDGEMENT_TIMEOUT()` and `MARK_ALIVE_TIMEOUT()`; None when no
    /// SecretManager is configured (the v2 generation).
    async fn secret_timeouts(&self) -> Result<Option<SecretTimeouts>, ChainError>;
}

/// What the readiness probe asks the chain node about, besides logs: the head and the gas
/// account. None: the node did not answer (or there is no chain, or no gas key).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ChainProbe: Send + Sync {
    /// The latest block number.
    async fn head_block(&self) -> Option<u64>;
    /// The gas account's balance in wei.
    async fn gas_balance(&self) -> Option<U256>;
    /// The node's gas price in wei.
    async fn gas_price(&self) -> Option<U256>;
    /// The gas account's nonce in the latest block, and counting the node's pool.
    async fn gas_nonces(&self) -> Option<(u64, u64)>;
    /// Our transactions being sent or waited for.
    fn pending_transactions(&self) -> u64;
    /// The gas one output transaction takes (the last one's, or an estimate before any).
    fn output_gas(&self) -> u64;
}

/// Transactions the executor sends, paid with the gas key.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ChainWriter: Send + Sync {
    /// Replaces the key that pays gas; returns its address.
    fn set_gas_key(&self, secret: [u8; 32]) -> Result<Address, ChainError>;
    fn gas_address(&self) -> Option<Address>;
    /// Sends `submitOutput` within `plan` and follows it to its end; `sent` hears each
    /// transaction hash as it is broadcast (a replacement has a new one), before any receipt.
    async fn submit_output(
        &self,
        output: &SignedOutput,
        plan: OutputPlan,
        sent: Arc<dyn OnSent>,
    ) -> Result<TxOutcome, ChainError>;
    async fn slash_on_execution_timeout(&self, job_id: U256) -> Result<TxOutcome, ChainError>;
    /// SecretManager `acknowledgeStore(secretId, signTimestamp, signature)`: our enclave-signed
    /// acknowledgement that we store the secret.
    async fn acknowledge_store(&self, ack: &SecretAck) -> Result<TxOutcome, ChainError>;
    /// SecretManager `acknowledgeStoreFailed(secretId)`: not every selected store acknowledged
    /// in time (anyone may send it).
    async fn acknowledge_store_failed(&self, secret_id: U256) -> Result<TxOutcome, ChainError>;
    /// SecretManager `markStoreAlive(signTimestamp, signature)` with our enclave-signed `Alive`.
    async fn mark_store_alive(
        &self,
        sign_timestamp: u64,
        signature: &[u8],
    ) -> Result<TxOutcome, ChainError>;
    /// Takes back the nonce of `tx` unless it is mined: replaces it with a self-transfer (21 000
    /// gas, to the gas address, value 0) bidding above it, as when an output's window closes,
    /// and follows that to its end. The first self-transfer is broadcast before any later send
    /// of ours takes a nonce.
    async fn take_back(&self, tx: &SentTx) -> Result<TakeBack, ChainError>;
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChainError {
    #[error("no gas key is configured")]
    NoGasKey,
    #[error("invalid gas key: {0}")]
    InvalidKey(String),
    /// RPC or network trouble; the same call may succeed later.
    #[error("chain request failed for now: {0}")]
    Transient(String),
    /// The contract this call needs has no address here (e.g. SecretManager in the v2 generation).
    #[error("{0} is not configured")]
    NoContract(&'static str),
}

/// How a job's journey ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// Our output is on chain.
    Confirmed,
    /// Given up without our output landing.
    Abandoned,
}

/// What the executor is doing right now, sampled when metrics are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    pub slots_busy: usize,
    pub slots_total: usize,
    pub jobs_queued: usize,
    pub jobs_in_flight: usize,
    /// Jobs announced on registration: how many the chain may give at once.
    pub job_capacity: usize,
}

/// What the periodic probe learned about the chain; None: not known this time (the gauge keeps
/// its last value).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainSample {
    pub chain_up: bool,
    pub head_lag_blocks: Option<u64>,
    pub pending_transactions: u64,
    pub gas_balance_wei: Option<U256>,
    /// What one output costs at the node's gas price now.
    pub output_cost_wei: Option<U256>,
    /// The gas account's nonce in the latest block, and counting the node's pool.
    pub gas_nonce: Option<u64>,
    pub gas_pending_nonce: Option<u64>,
}

/// Operational metrics: the domain reports events as they happen and its load when read;
/// the adapter renders them in the Prometheus text format.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Metrics: Send + Sync {
    /// A job ran in the sandbox and produced `error_code` after `execution_ms`.
    fn job_executed(&self, error_code: ErrorCode, execution_ms: u64);
    /// A selected job's journey ended; `end_to_end_ms` runs from its creation on chain.
    fn job_finished(&self, end: JobEnd, error_code: Option<ErrorCode>, end_to_end_ms: u64);
    /// The kernel's OOM killer stopped a job in its slot.
    fn sandbox_oom_kill(&self);
    /// The chain refused one of our `submitOutput` transactions.
    fn output_reverted(&self, revert: &Revert);
    /// The chain slashed this enclave (`SlashedOnExecutionTimeout` naming it), once per job.
    fn enclave_slashed(&self);
    /// Whether the chain refuses outputs signed by our enclave key as not verified.
    fn enclave_refused(&self, refused: bool);
    /// A transaction of ours was mined (or reverted on chain) and cost `gas` gas units.
    fn gas_spent(&self, gas: u64);
    /// An output for a job of `job_owner` ran out of gas: its result callback burns gas.
    fn gas_burner(&self, job_owner: Address);
    /// The store failed while a chain log was handled (it is retried).
    fn store_error(&self);
    /// Whether handling chain logs is stuck on a failing store right now.
    fn set_store_failing(&self, failing: bool);
    fn set_load(&self, load: Load);
    /// Whether the executor can do its work, and each reason, sampled when metrics are read.
    fn set_readiness(&self, readiness: Readiness);
    /// What the periodic probe learned about the chain and the gas account.
    fn set_chain(&self, sample: ChainSample);
    /// Every metric in the Prometheus text exposition format.
    fn render(&self) -> String;
}
