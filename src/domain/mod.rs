//! The executor's business logic. Pure: it reaches the world only through the ports in `dal.rs`.
//! `Executor` holds the ports and the scheduling state; its public APIs live in `api/`.

pub mod api;
pub mod dal;
pub mod eip712;
pub mod error;
pub mod model;
pub mod owner_auth;
mod scheduler;
pub mod stage;
#[cfg(feature = "mocks")]
pub mod testing;
#[cfg(test)]
mod tests;
// Test builds get `mocks` from the crate's dev-dependency on itself (see Cargo.toml).
#[cfg(all(test, not(feature = "mocks")))]
compile_error!("the domain's unit tests need the `mocks` feature (its stubs and contract suites)");

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ethers::types::U256;

use tokio::sync::watch;

use dal::{
    ChainProbe, ChainReader, ChainWriter, Clock, CodeSource, EnclaveSigner, Metrics, Sandbox,
    SecretStore, Slots, Store,
};
pub use error::{AuthRejection, DomainError, SecretRefusal};
use scheduler::Scheduler;

/// Every port the domain talks through.
#[derive(Clone)]
pub struct Ports {
    pub signer: Arc<dyn EnclaveSigner>,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    /// The secret store's records and sealed secrets (TEE generation).
    pub secrets: Arc<dyn SecretStore>,
    pub code: Arc<dyn CodeSource>,
    pub sandbox: Arc<dyn Sandbox>,
    pub slots: Arc<dyn Slots>,
    pub chain: Arc<dyn ChainWriter>,
    pub reader: Arc<dyn ChainReader>,
    pub probe: Arc<dyn ChainProbe>,
    pub metrics: Arc<dyn Metrics>,
}

/// The default of `EXECUTOR_MAX_OUTPUT_GAS`.
pub const DEFAULT_MAX_OUTPUT_GAS: u64 = 3_000_000;

/// The default of `EXECUTOR_STORAGE_CAPACITY` (what Marlin's secret store announces).
pub const DEFAULT_STORAGE_CAPACITY: u64 = 100_000_000;

/// Protocol constants of the deployment and the executor's own timing choices.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `Jobs.EXECUTION_BUFFER_TIME`, seconds.
    pub execution_buffer_secs: u64,
    /// How long after a job's window closes the executor sends `slashOnExecutionTimeout`.
    pub settle_margin_ms: u64,
    /// A queued job is given up when less than this remains of its window.
    pub min_window_left_ms: u64,
    /// First pause between retries of a transient RPC failure (doubles, capped at 8×).
    pub retry_backoff_ms: u64,
    /// Finished jobs stay in the journal this long after their window closed.
    pub journal_retention_ms: u64,
    /// Jobs announced on registration; None: one per slot. More than the slots queue.
    pub job_capacity: Option<usize>,
    /// Oldest accepted owner signature on a mutable-config change, seconds.
    pub admin_signature_max_age_secs: u64,
    /// Accept unsigned mutable-config changes once the owner is set (old tooling only).
    pub admin_allow_unsigned: bool,
    /// Ready even when slot limits are not enforced (the operator's explicit choice).
    pub allow_unlimited_slots: bool,
    /// The highest gas limit of an output transaction (`EXECUTOR_MAX_OUTPUT_GAS`).
    pub max_output_gas: u64,
    /// Job owners whose jobs are refused (`EXECUTOR_DENIED_JOB_OWNERS`).
    pub denied_job_owners: Vec<ethers::types::Address>,
    /// How long handling chain logs may keep failing on the store before the executor gives up
    /// (and exits, so that a supervisor restarts it).
    pub store_failure_limit_ms: u64,
    /// Longest pause between retries of a failing store.
    pub store_retry_max_ms: u64,
    /// Not ready while the chain head is more than this many blocks past the follower.
    pub max_head_lag_blocks: u64,
    /// The contract generation: what the registration message signs.
    pub protocol: model::Protocol,
    /// TEE generation: the storage capacity announced on registration, bytes.
    pub storage_capacity: u64,
    /// Whether this executor is a secret store too (a SecretManager is configured): it records
    /// secrets, acknowledges injections and proves liveness.
    pub secret_store: bool,
    /// Overrides of SecretManager's `ACKNOWLEDGEMENT_TIMEOUT` and `MARK_ALIVE_TIMEOUT`, seconds
    /// (None: read from the chain).
    pub secret_ack_timeout_secs: Option<u64>,
    pub secret_mark_alive_timeout_secs: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            execution_buffer_secs: 60,
            settle_margin_ms: 1_000,
            min_window_left_ms: 500,
            retry_backoff_ms: 250,
            journal_retention_ms: 7 * 24 * 3_600_000,
            job_capacity: None,
            admin_signature_max_age_secs: 300,
            admin_allow_unsigned: false,
            allow_unlimited_slots: false,
            max_output_gas: DEFAULT_MAX_OUTPUT_GAS,
            denied_job_owners: Vec::new(),
            store_failure_limit_ms: 60_000,
            store_retry_max_ms: 5_000,
            max_head_lag_blocks: 50,
            protocol: model::Protocol::V2,
            storage_capacity: DEFAULT_STORAGE_CAPACITY,
            secret_store: false,
            secret_ack_timeout_secs: None,
            secret_mark_alive_timeout_secs: None,
        }
    }
}

/// The executor: one per process, shared behind an `Arc` by routes and the chain listener.
pub struct Executor {
    ports: Ports,
    settings: Settings,
    /// Becomes true once the operator asked for the registration message: follow the chain.
    follow: watch::Sender<bool>,
    /// Set on shutdown: no new job is started.
    stopping: AtomicBool,
    scheduler: Scheduler,
    /// Serialises read-modify-write of journal records (never held across an await).
    journal: Mutex<()>,
    /// The last probe of the chain and sandbox (for readiness).
    probe: Mutex<Option<model::Probe>>,
    /// Why the chain refuses our enclave key (`AttestationAutherKeyNotVerified`), if it does:
    /// while set, no job is taken.
    enclave_refusal: Mutex<Option<String>>,
    /// Since when (unix ms) and why handling chain logs fails on the store; None when it works.
    store_failure: Mutex<Option<(u64, String)>>,
    /// The secret store's timeouts and transactions on their way.
    secret_duties: api::SecretDuties,
}

impl Executor {
    pub fn new(ports: Ports, settings: Settings) -> Arc<Self> {
        let (follow, _) = watch::channel(false);
        Arc::new(Self {
            ports,
            settings,
            follow,
            stopping: AtomicBool::new(false),
            scheduler: Scheduler::default(),
            journal: Mutex::new(()),
            probe: Mutex::new(None),
            enclave_refusal: Mutex::new(None),
            store_failure: Mutex::new(None),
            secret_duties: api::SecretDuties::default(),
        })
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Resolves to true once the chain should be followed.
    pub fn follow_requested(&self) -> watch::Receiver<bool> {
        self.follow.subscribe()
    }

    /// Whether the chain is followed from the start, without waiting for `follow_requested`:
    /// an earlier run was configured (owner and gas key set) and is not deregistered.
    pub fn should_follow_at_start(&self) -> bool {
        let store = &self.ports.store;
        matches!(store.owner(), Ok(Some(_)))
            && matches!(store.gas_key(), Ok(Some(_)))
            && !matches!(store.chain_status(), Ok(model::ChainStatus::Deregistered))
    }

    /// The first block whose logs are not yet known to be handled (None: none handled yet).
    pub fn chain_cursor(&self) -> Result<Option<u64>, DomainError> {
        Ok(self.ports.store.cursor()?)
    }

    pub(crate) fn request_follow(&self) {
        self.follow.send_replace(true);
    }

    /// Stops taking new jobs; running ones finish and submit.
    pub fn stop_taking_jobs(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.scheduler.wake();
    }

    /// Why the chain refuses outputs signed by our enclave key, when it does.
    pub fn enclave_refusal(&self) -> Option<String> {
        self.enclave_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The chain refused our enclave key: take no more jobs, and say so everywhere.
    pub(crate) fn refuse_enclave(&self, reason: &str) {
        let first = self
            .enclave_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(reason.to_string())
            .is_none();
        if first {
            tracing::error!(
                enclave = ?self.ports.signer.address(),
                %reason,
                "THE CHAIN REFUSES THIS ENCLAVE KEY: no jobs are taken until it is registered \
                 again with a valid attestation of a whitelisted image"
            );
        }
        self.ports.metrics.enclave_refused(true);
    }

    /// Our enclave was (re)registered: its key is verified again.
    pub(crate) fn clear_enclave_refusal(&self) {
        let was = self
            .enclave_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if was.is_some() {
            tracing::info!("enclave registered again: taking jobs");
            self.ports.metrics.enclave_refused(false);
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Jobs queued for a slot, and jobs running or submitting now.
    pub fn load(&self) -> (usize, usize) {
        (self.scheduler.queued(), self.scheduler.in_flight())
    }

    pub(crate) fn journal_lock(&self) -> MutexGuard<'_, ()> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads, changes and writes back one job's record; nothing happens if it is unknown.
    pub(crate) fn update_job(
        &self,
        id: U256,
        change: impl FnOnce(&mut model::JobRecord),
    ) -> Result<(), DomainError> {
        self.update_job_deferred(id, change)?;
        // Durable before the caller acts on it; flushed outside the lock so that jobs
        // changing state at the same moment share the flush.
        Ok(self.ports.store.flush()?)
    }

    /// `update_job` without a flush of its own: durable with the journal's next flush, for a
    /// change that a state written right after makes durable (or whose loss costs nothing).
    pub(crate) fn update_job_deferred(
        &self,
        id: U256,
        change: impl FnOnce(&mut model::JobRecord),
    ) -> Result<(), DomainError> {
        let _journal = self.journal_lock();
        let Some(mut record) = self.ports.store.job(id)? else {
            return Ok(());
        };
        change(&mut record);
        Ok(self.ports.store.write_job(&record)?)
    }

    /// Waits until no job is running or submitting, or `timeout_ms` passes; true if idle.
    pub async fn wait_idle(&self, timeout_ms: u64) -> bool {
        let deadline = self.ports.clock.now_ms() + timeout_ms;
        loop {
            if self.scheduler.in_flight() == 0 {
                return true;
            }
            if self.ports.clock.now_ms() >= deadline {
                return false;
            }
            self.ports.clock.sleep_ms(50).await;
        }
    }
}
