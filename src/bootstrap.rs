//! The composition root: configuration → adapters → domain → driving adapters (the HTTP
//! routes, the chain listener and timers in `listeners/`). The only place that knows which
//! adapter implements which port; it builds, injects, starts and stops, and decides nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::domain::dal::{EnclaveSigner, Store, StoreError};
use crate::domain::model::Deployment;
use crate::domain::{Executor, Ports, Settings};
use crate::effects::cgroup::CgroupSlots;
use crate::effects::chain::{LogFollower, OriginChecker, TxSender};
use crate::effects::clock::SystemClock;
use crate::effects::code_fetch::UserCodeSource;
use crate::effects::metrics::PromMetrics;
use crate::effects::secrets::{SledSecrets, SECRETS_SEALING_PURPOSE};
use crate::effects::signer::EnclaveKey;
use crate::effects::store::SledStore;
use crate::effects::workerd::WorkerdSandbox;
use crate::routes::{Services, Surface};

/// How long shutdown waits for the HTTP listeners to close their connections (they give
/// requests in progress 5 s).
const LISTENER_CLOSE: Duration = Duration::from_secs(6);
/// How long shutdown waits for the warm sandbox processes to be killed and reaped.
const SANDBOX_STOP: Duration = Duration::from_secs(5);

/// A started executor: its API address and the handles to stop it.
pub struct Running {
    pub api_addr: SocketAddr,
    /// Where the operator routes listen (loopback by default).
    pub admin_addr: SocketAddr,
    /// Where `POST /inject-secret` listens (None: not served).
    pub secret_addr: Option<SocketAddr>,
    pub executor: Arc<Executor>,
    store: Arc<SledStore>,
    /// Stopped and removed at the end of shutdown, not whenever their last holder lets go: a
    /// later start in this process (a test, an in-process restart) makes the same slot cgroups.
    sandbox: Arc<WorkerdSandbox>,
    slots: Arc<CgroupSlots>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The two HTTP listeners: on shutdown they close their connections themselves.
    listeners: JoinSet<()>,
    /// Says why, when the executor cannot go on (the store kept failing): the process should
    /// exit non-zero so that its supervisor restarts it.
    pub fatal: watch::Receiver<Option<String>>,
}

/// Builds everything from `config` and starts serving. Fails with a message naming the problem.
pub async fn start(config: Config) -> Result<Running> {
    // Same-user processes (an escaped workerd) cannot read this one's memory or /proc entries.
    if let Err(e) = crate::effects::workerd::confine::harden_executor() {
        tracing::warn!("cannot make the executor non-dumpable: {e}");
    }
    check_storage_capacity(&config).await?;
    let enclave = Arc::new(EnclaveKey::load(&config.enclave_key_file)?);
    let unreadable = || {
        format!(
            "the store in EXECUTOR_DATA_DIR={} cannot be read. To rebuild the journal from the \
             chain, move that directory aside and start again, then set the owner and gas key \
             again (jobs are found again from EXECUTOR_START_BLOCK, or the last {} blocks)",
            config.data_dir.display(),
            crate::effects::chain::follower::START_LOOKBACK_BLOCKS
        )
    };
    let sealing_key = enclave.derive_key(crate::effects::store::SEALING_PURPOSE);
    // Opening may migrate an old journal: not on an async worker.
    let data_dir = config.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || SledStore::open(&data_dir, sealing_key))
        .await
        .context("the store's opening task failed")?;
    let store = match opened {
        Ok(store) => Arc::new(store),
        // Held, not broken: no rebuild advice.
        Err(e @ StoreError::Locked(_)) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).context(unreadable())),
    };
    // Warns loudly, once, when cgroups cannot be used.
    let slots = Arc::new(CgroupSlots::new(config.slots, &config.sandbox));
    if !crate::domain::dal::Slots::enforced(slots.as_ref()) {
        if config.sandbox.allow_unlimited_slots {
            tracing::warn!("EXECUTOR_ALLOW_UNLIMITED_SLOTS is on: serving with unlimited slots");
        } else {
            tracing::error!(
                "NOT READY: slot limits cannot be enforced; jobs would run unlimited. Give the \
                 executor a delegated cgroup (see README, Sandbox containment) or set \
                 EXECUTOR_ALLOW_UNLIMITED_SLOTS=true"
            );
        }
    }
    let sandbox = Arc::new(WorkerdSandbox::new(&config.sandbox)?);
    // Jobs go to slots whose warm process listens, while the others start. Weak: the slots
    // must not keep the sandbox (its processes in the slots' cgroups) alive past their cleanup.
    let warm = Arc::downgrade(&sandbox);
    slots.prefer(move |index| warm.upgrade().is_some_and(|s| s.ready(index)));
    prewarm(&sandbox, slots.as_ref()).await?;
    let secrets = Arc::new(SledSecrets::open(
        store.sled_db(),
        enclave.derive_key(SECRETS_SEALING_PURPOSE),
    )?);
    let chain = Arc::new(
        TxSender::new(config.chain.clone())?
            .with_max_fee_per_gas(config.gas.max_fee_per_gas)
            .with_secret_manager(config.secret_manager_address)
            .with_fee_cache(Duration::from_millis(config.gas.fee_cache_ms)),
    );
    let code = Arc::new(UserCodeSource::new(&config.chain)?);
    let reader = Arc::new(
        OriginChecker::new(&config.chain)?
            .with_secret_manager(config.secret_manager_address)
            .with_heads(chain.heads()),
    );
    // Subscribed from the start: the first job's checks and receipt already follow new heads.
    chain.heads().watch();
    let metrics = Arc::new(PromMetrics::new().context("cannot set up the metrics")?);

    let ports = Ports {
        signer: enclave.clone(),
        clock: Arc::new(SystemClock),
        store: store.clone(),
        secrets,
        code,
        sandbox: sandbox.clone(),
        slots: slots.clone(),
        chain: chain.clone(),
        reader,
        probe: chain,
        metrics,
    };
    let settings = Settings {
        execution_buffer_secs: config.chain.execution_buffer_secs,
        job_capacity: Some(config.job_capacity),
        admin_signature_max_age_secs: config.admin.signature_max_age_secs,
        admin_allow_unsigned: config.admin.allow_unsigned,
        allow_unlimited_slots: config.sandbox.allow_unlimited_slots,
        max_output_gas: config.gas.max_output_gas,
        denied_job_owners: config.gas.denied_job_owners.clone(),
        store_failure_limit_ms: config.store_failure_limit_secs.saturating_mul(1000),
        max_head_lag_blocks: config.max_head_lag_blocks,
        protocol: config.chain.protocol,
        storage_capacity: config.storage_capacity,
        secret_store: config.secret_manager_address.is_some(),
        secret_ack_timeout_secs: config.secrets.ack_timeout_secs,
        secret_mark_alive_timeout_secs: config.secrets.mark_alive_timeout_secs,
        ..Settings::default()
    };
    let executor = Executor::new(ports, settings);
    if config.chain.is_configured() {
        // A journal of another chain or contracts would answer the wrong jobs.
        executor
            .claim_deployment(Deployment {
                chain_id: config.chain.chain_id,
                executors: config.chain.executors_address,
                jobs: config.chain.jobs_address,
                user_code: config.chain.user_code_address,
            })
            .with_context(|| {
                format!(
                    "EXECUTOR_DATA_DIR={} belongs to another deployment: give this chain and \
                     these contracts their own data directory (or set EXECUTOR_CHAIN_ID and the \
                     contract addresses back)",
                    config.data_dir.display()
                )
            })?;
    }
    if let Some(gas) = executor.restore_gas_key().with_context(unreadable)? {
        tracing::info!(gas_address = ?gas, "gas key restored from the store");
    }
    let report = executor.recover().with_context(unreadable)?;
    tracing::info!(?report, "journal recovered");
    let acks = executor.recover_secrets().with_context(unreadable)?;
    if acks > 0 {
        tracing::info!(acks, "secret acknowledgements sent again");
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (fatal_tx, fatal) = watch::channel(None);
    let mut tasks = JoinSet::new();
    tasks.spawn(executor.clone().run_dispatcher());
    tasks.spawn(executor.clone().run_settler());
    tasks.spawn(executor.clone().run_pruner());
    tasks.spawn(crate::listeners::timers::probe(
        executor.clone(),
        shutdown_rx.clone(),
    ));
    if executor.keeps_secrets() {
        tasks.spawn(crate::listeners::timers::secret_duties(
            executor.clone(),
            shutdown_rx.clone(),
        ));
    }

    let listener = TcpListener::bind((config.listen_addr, config.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (EXECUTOR_LISTEN_ADDR, EXECUTOR_PORT)",
                config.listen_addr, config.port
            )
        })?;
    let api_addr = listener.local_addr()?;
    let admin_listener = TcpListener::bind((config.admin.listen_addr, config.admin.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (EXECUTOR_ADMIN_LISTEN_ADDR, EXECUTOR_ADMIN_PORT)",
                config.admin.listen_addr, config.admin.port
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;
    // Only a secret store takes secrets (and a v2 executor leaves the port to others).
    let secret_listen_addr = config
        .secrets
        .listen_addr
        .filter(|_| config.secret_manager_address.is_some());
    let secret_listener =
        match secret_listen_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (EXECUTOR_SECRET_LISTEN_ADDR)")
            })?),
            None => None,
        };
    let secret_addr = secret_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let services = Arc::new(Services::new(
        executor.clone(),
        config.public.clone(),
        config.admin.allowed_hosts.clone(),
    ));
    let mut listeners = JoinSet::new();
    listeners.spawn(crate::routes::serve(
        listener,
        services.clone(),
        Surface::Public,
        shutdown_rx.clone(),
    ));
    listeners.spawn(crate::routes::serve(
        admin_listener,
        services.clone(),
        Surface::Admin,
        shutdown_rx.clone(),
    ));
    if let Some(secret_listener) = secret_listener {
        listeners.spawn(crate::routes::serve(
            secret_listener,
            services,
            Surface::Secrets,
            shutdown_rx.clone(),
        ));
    }
    tracing::info!(%api_addr, enclave = ?enclave.address(), "executor API listening");
    tracing::info!(%admin_addr, "operator (admin) API listening");
    if let Some(secret_addr) = secret_addr {
        tracing::info!(%secret_addr, "secret listener (POST /inject-secret) listening");
    }
    if !config.admin.listen_addr.is_loopback() {
        tracing::warn!(
            %admin_addr,
            "the admin API is reachable from the network: anyone who reaches it first can set the owner"
        );
    }
    if config.admin.allow_unsigned {
        tracing::warn!(
            "EXECUTOR_ADMIN_ALLOW_UNSIGNED is on: gas key changes need no owner signature"
        );
    }

    if config.chain.is_configured() {
        let follower = LogFollower::new(config.chain.clone(), enclave.address())
            .with_secret_manager(config.secret_manager_address)
            .with_known_secrets(executor.known_secret_ids()?);
        tasks.spawn(crate::listeners::chain::follow(
            executor.clone(),
            follower,
            config.chain.start_block,
            shutdown_rx,
            fatal_tx,
        ));
    } else {
        tracing::warn!("contract addresses are not configured: the chain is not followed");
    }
    Ok(Running {
        api_addr,
        admin_addr,
        secret_addr,
        executor,
        store,
        sandbox,
        slots,
        shutdown,
        tasks,
        listeners,
        fatal,
    })
}

/// TEE generation: refuses to start when the storage capacity is below the SecretManager's
/// `GLOBAL_MAX_SECRET_SIZE` (every output of the node would revert on chain).
async fn check_storage_capacity(config: &Config) -> Result<()> {
    let Some(secret_manager) = config.secret_manager_address else {
        return Ok(());
    };
    if !config.chain.is_configured() {
        // Not following a chain (the same warning below says so): nothing to check against.
        return Ok(());
    }
    let max = crate::effects::chain::tee::global_max_secret_size(
        &config.chain.rpc_http_url,
        secret_manager,
    )
    .await
    .with_context(|| {
        format!(
            "cannot read GLOBAL_MAX_SECRET_SIZE from the SecretManager {secret_manager:?} \
             (EXECUTOR_SECRET_MANAGER_ADDRESS, EXECUTOR_RPC_HTTP_URL): it bounds \
             EXECUTOR_STORAGE_CAPACITY"
        )
    })?;
    if let Some(problem) =
        crate::domain::api::storage_capacity_problem(config.storage_capacity, max)
    {
        anyhow::bail!(problem);
    }
    tracing::info!(
        storage_capacity = config.storage_capacity,
        global_max_secret_size = %max,
        "TEE generation: storage capacity checked"
    );
    Ok(())
}

/// Warm mode: how many slots' processes listen before the executor serves (the rest start in
/// the background, as many at once as there are cores).
const READY_SLOTS_AT_START: usize = 2;

/// Warm mode: starts the slots' workerd processes a core's worth at a time, and returns once
/// the first few listen, so the first jobs (and the jobs recovered at a restart) find them warm.
async fn prewarm(sandbox: &WorkerdSandbox, slots: &CgroupSlots) -> Result<()> {
    use crate::domain::dal::Slots;
    let all: Vec<_> = std::iter::from_fn(|| slots.try_acquire()).collect();
    let warmed = sandbox.prewarm(&all, READY_SLOTS_AT_START).await;
    // Back in reverse, so that the pool hands slots out in the order they start: a job that
    // finds no ready slot takes the one starting next rather than one nobody started yet
    // (released in order, the first job took the slot the background would start last).
    for slot in all.into_iter().rev() {
        slots.release(slot);
    }
    warmed.context("starting the warm sandbox slots")?;
    Ok(())
}

impl Running {
    /// The slot cgroup directories this executor runs jobs in (empty without enforced limits).
    pub fn slot_cgroups(&self) -> Vec<std::path::PathBuf> {
        use crate::domain::dal::Slots;
        (0..self.slots.capacity())
            .flat_map(|index| self.slots.slot_dirs(index))
            .collect()
    }

    /// Stops taking jobs, lets running ones finish and submit (up to `grace`), flushes the
    /// journal and stops the server.
    pub async fn shutdown(mut self, grace: Duration) -> Result<()> {
        tracing::info!("shutting down: no new jobs");
        self.executor.stop_taking_jobs();
        if !self.executor.wait_idle(grace.as_millis() as u64).await {
            tracing::warn!("jobs still running after the grace period; they resume on restart");
        }
        self.shutdown.send_replace(true);
        self.store.flush()?;
        // Aborting a listener would leave its connection tasks (and the executor they hold,
        // with the store's lock) alive: let it close them, within a bound.
        let listeners = async { while self.listeners.join_next().await.is_some() {} };
        if tokio::time::timeout(LISTENER_CLOSE, listeners)
            .await
            .is_err()
        {
            self.listeners.abort_all();
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if tokio::time::timeout(SANDBOX_STOP, self.sandbox.stop())
            .await
            .is_err()
        {
            tracing::warn!("warm sandbox processes did not stop in time");
        }
        let slots = self.slots.clone();
        let _ = tokio::task::spawn_blocking(move || slots.cleanup()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs until SIGINT or SIGTERM; a second signal exits at once.
pub async fn run(config: Config) -> Result<()> {
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let running = start(config).await?;
    let mut fatal = running.fatal.clone();
    let reported = async {
        match fatal.wait_for(Option::is_some).await {
            Ok(failure) => failure.clone(),
            // No one left to report one (the chain is not followed): serve until a signal.
            Err(_) => std::future::pending().await,
        }
    };
    let failure = tokio::select! {
        signal = wait_for_signal() => { signal?; None }
        failure = reported => failure,
    };
    if let Some(reason) = failure {
        // Jobs in flight finish (they may not need the store); then exit non-zero.
        running.shutdown(grace).await?;
        anyhow::bail!("{reason}");
    }
    let shutdown = tokio::spawn(running.shutdown(grace));
    tokio::select! {
        result = shutdown => result.context("shutdown task failed")?,
        _ = wait_for_signal() => {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
