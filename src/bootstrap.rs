//! The composition root: configuration → adapters → domain → HTTP server and chain listener.
//! The only place that knows which adapter implements which port; owns start-up and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::domain::api::FollowVerdict;
use crate::domain::dal::{EnclaveSigner, Store};
use crate::domain::model::ChainStatus;
use crate::domain::{Executor, Ports, Settings};
use crate::effects::cgroup::CgroupSlots;
use crate::effects::chain::{FollowerItem, LogFollower, TxSender};
use crate::effects::clock::SystemClock;
use crate::effects::code_fetch::UserCodeSource;
use crate::effects::signer::EnclaveKey;
use crate::effects::store::SledStore;
use crate::effects::workerd::WorkerdSandbox;

/// How long a graceful shutdown waits for running jobs and their outputs.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A started executor: its API address and the handles to stop it.
pub struct Running {
    pub api_addr: SocketAddr,
    pub executor: Arc<Executor>,
    store: Arc<SledStore>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Builds everything from `config` and starts serving. Fails with a message naming the problem.
pub async fn start(config: Config) -> Result<Running> {
    let enclave = Arc::new(EnclaveKey::load(&config.enclave_key_file)?);
    let store = Arc::new(
        SledStore::open(&config.data_dir)
            .with_context(|| format!("EXECUTOR_DATA_DIR={}", config.data_dir.display()))?,
    );
    // Warns loudly, once, when cgroups cannot be used.
    let slots = Arc::new(CgroupSlots::new(config.job_capacity, &config.sandbox));
    let sandbox = Arc::new(WorkerdSandbox::new(&config.sandbox)?);
    prewarm(&sandbox, slots.as_ref()).await?;
    let chain = Arc::new(TxSender::new(config.chain.clone())?);
    let code = Arc::new(UserCodeSource::new(&config.chain)?);

    let ports = Ports {
        signer: enclave.clone(),
        clock: Arc::new(SystemClock),
        store: store.clone(),
        code,
        sandbox,
        slots,
        chain,
    };
    let settings = Settings {
        execution_buffer_secs: config.chain.execution_buffer_secs,
        ..Settings::default()
    };
    let executor = Executor::new(ports, settings);
    if let Some(gas) = executor.restore_gas_key()? {
        tracing::info!(gas_address = ?gas, "gas key restored from the store");
    }
    let report = executor.recover()?;
    tracing::info!(?report, "journal recovered");

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(executor.clone().run_dispatcher());
    tasks.spawn(executor.clone().run_settler());

    let listener = TcpListener::bind((config.listen_addr, config.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (EXECUTOR_LISTEN_ADDR, EXECUTOR_PORT)",
                config.listen_addr, config.port
            )
        })?;
    let api_addr = listener.local_addr()?;
    tasks.spawn(crate::routes::serve(
        listener,
        executor.clone(),
        shutdown_rx.clone(),
    ));
    tracing::info!(%api_addr, enclave = ?enclave.address(), "executor API listening");

    if config.chain.is_configured() {
        tasks.spawn(follow_chain(
            config.clone(),
            executor.clone(),
            store.clone(),
            shutdown_rx,
        ));
    } else {
        tracing::warn!("contract addresses are not configured: the chain is not followed");
    }
    Ok(Running {
        api_addr,
        executor,
        store,
        shutdown,
        tasks,
    })
}

/// Follows the chain once the operator asked for the registration message (or an earlier run
/// did), feeding every log to the domain in order, until deregistration or shutdown.
async fn follow_chain(
    config: Config,
    executor: Arc<Executor>,
    store: Arc<SledStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let configured_before = matches!(store.owner(), Ok(Some(_)))
        && matches!(store.gas_key(), Ok(Some(_)))
        && !matches!(store.chain_status(), Ok(ChainStatus::Deregistered));
    if !configured_before {
        let mut requested = executor.follow_requested();
        tokio::select! {
            _ = requested.wait_for(|r| *r) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
    let from_block = match store.cursor() {
        Ok(cursor) => cursor.or(config.chain.start_block),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the chain cursor; not following the chain");
            return;
        }
    };
    let follower = LogFollower::new(
        config.chain.clone(),
        executor
            .details()
            .map(|d| d.enclave_address)
            .unwrap_or_default(),
    );
    let (tx, mut rx) = mpsc::channel(1024);
    let follow = tokio::spawn(follower.run(from_block, tx));
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = stopped(&mut shutdown) => None,
        };
        let Some(item) = item else { break };
        let handled = match item {
            FollowerItem::Log(log) => executor.on_chain_event(log),
            FollowerItem::Synced { next_block } => executor
                .on_chain_synced(next_block)
                .map(|_| FollowVerdict::Continue),
        };
        match handled {
            Ok(FollowVerdict::Continue) => {}
            Ok(FollowVerdict::Stop) => break,
            Err(e) => {
                // The log is not marked handled: it is read again after a restart.
                tracing::error!(error = %e, "cannot handle a chain log; stopping the listener");
                break;
            }
        }
    }
    follow.abort();
}

/// Warm mode: starts every slot's workerd now, so the first jobs find them warm.
async fn prewarm(sandbox: &WorkerdSandbox, slots: &CgroupSlots) -> Result<()> {
    use crate::domain::dal::Slots;
    let all: Vec<_> = std::iter::from_fn(|| slots.try_acquire()).collect();
    let warmed = sandbox.prewarm(&all).await;
    for slot in all {
        slots.release(slot);
    }
    warmed.context("starting the warm sandbox slots")?;
    Ok(())
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

impl Running {
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
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs until SIGINT or SIGTERM; a second signal exits at once.
pub async fn run(config: Config) -> Result<()> {
    let running = start(config).await?;
    wait_for_signal().await?;
    let shutdown = tokio::spawn(running.shutdown(SHUTDOWN_GRACE));
    tokio::select! {
        result = shutdown => result.context("shutdown task failed")?,
        _ = wait_for_signal() => {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
