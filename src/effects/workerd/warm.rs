//! Warm slots (`SANDBOX_MODE=warm`): one long-lived workerd per slot, started inside the slot's
//! cgroups, whose host worker loads each job into a fresh isolate (workerd's Worker Loader).
//! One job at a time per slot. A job that misses its deadline, overflows the output limit,
//! kills workerd (out of memory) or is cancelled gets its slot's process killed and a new one
//! started in its place; the other slots' processes are never touched.
//!
//! Each process's readiness (workerd said on its control pipe that its socket listens) is
//! watched, so that jobs go to slots whose process is ready (`ready`), and start-up brings the
//! slots up a core's worth at a time (`prewarm.rs`) instead of all at once: twenty processes
//! starting together on a small machine, each in a slot with a fraction of a core, made the
//! first job wait over a second for its slot's process.

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::Either;
use http_body_util::Full;
use tokio::sync::{watch, Mutex as AsyncMutex, OwnedMutexGuard};

use super::capnp::{
    render_host_js, render_warm_config, CODE_BYTES_HEADER, CONFIG_FILE, HOST_MODULE,
    OUTCOME_HEADER, SECRET_BYTES_HEADER,
};
use super::child::{describe_exit, Workerd};
use super::confine::Confinement;
use super::exchange::{self, Answer};
use super::prepared::Prepared;
use super::{classify_exit, race, result_name, Phase, RunDir, RunReport};
use crate::config::SandboxConfig;
use crate::domain::dal::{RunResult, SandboxError, Slot};
use crate::domain::stage::{Stage, STAGE_TARGET};

/// How long a run waits for the job's last log lines when the caller wants them.
const LOG_WAIT: Duration = Duration::from_millis(200);
/// A job's code is prepared for the slot's next job only after a clean run this short: its
/// top-level code, evaluated again then, is not expected to take long.
const PREPARE_AFTER_RUNS_UNDER: Duration = Duration::from_millis(250);
/// How long a prepared isolate may take to start. Past it the slot's process is replaced: the
/// job's top-level code may be stuck on workerd's thread (it need not run the same way twice),
/// and a job of other code must not wait behind it.
const PREPARE_LIMIT: Duration = Duration::from_secs(1);

/// A slot's current process: its generation (one per process started) and whether it listens.
type Readiness = watch::Sender<(u64, bool)>;

/// The warm processes, one per slot index, each behind its own lock (one job at a time).
#[derive(Debug)]
pub(super) struct WarmPool {
    workerd_path: PathBuf,
    work_dir: PathBuf,
    output_limit: usize,
    /// A process whose heaps hold more than this between jobs is replaced (half the slot's
    /// memory), before it leaves too little for the next job.
    recycle_rss_bytes: u64,
    config_text: String,
    host_js: String,
    confinement: Confinement,
    slots: Mutex<HashMap<usize, Arc<AsyncMutex<Option<WarmProcess>>>>>,
    readiness: Mutex<HashMap<usize, Readiness>>,
    generation: AtomicU64,
    /// Set by `stop_all`: slots still to be prewarmed are not started any more.
    stopping: AtomicBool,
}

/// One slot's workerd and its directory. Fields drop in order: workerd is killed first.
struct WarmProcess {
    workerd: Workerd,
    socket: PathBuf,
    cgroup_procs: Vec<PathBuf>,
    jobs: u64,
    /// The request prepared for the slot's next job, if any.
    prepared: Option<Prepared>,
    _dir: RunDir,
}

impl std::fmt::Debug for WarmProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmProcess")
            .field("pid", &self.workerd.pid())
            .field("jobs", &self.jobs)
            .finish()
    }
}

/// A slot's process held for one run. Unless the run ends cleanly (`keep`), dropping it kills
/// the process: a cancelled run never leaves its job running.
struct Lease {
    guard: OwnedMutexGuard<Option<WarmProcess>>,
    keep: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.keep {
            *self.guard = None;
        }
    }
}

impl WarmPool {
    pub(super) fn new(config: &SandboxConfig, work_dir: PathBuf, confinement: Confinement) -> Self {
        WarmPool {
            workerd_path: config.workerd_path.clone(),
            work_dir,
            output_limit: config.output_limit_bytes,
            recycle_rss_bytes: config.slot_memory_bytes / 2,
            config_text: render_warm_config(config.egress),
            host_js: render_host_js(),
            confinement,
            slots: Mutex::new(HashMap::new()),
            readiness: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    fn readiness(&self, index: usize) -> Readiness {
        let mut all = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(index)
            .or_insert_with(|| watch::channel((0, false)).0)
            .clone()
    }

    /// Whether the slot's process listens now (false while it starts, or if it has none) and
    /// is not busy starting the isolate prepared for its next job (a few ms; a job sent then
    /// waits for it, while another slot's prepared isolate may be there already). Never
    /// blocks: the slot pool asks it to prefer ready slots.
    pub(super) fn ready(&self, index: usize) -> bool {
        let listening = {
            let all = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
            all.get(&index).is_some_and(|r| r.borrow().1)
        };
        if !listening {
            return false;
        }
        let Some(cell) = self.existing_cell(index) else {
            return true;
        };
        // Held: a job runs there (or is about to); its process listens.
        let Ok(guard) = cell.try_lock() else {
            return true;
        };
        guard.as_ref().is_none_or(|process| {
            process
                .prepared
                .as_ref()
                .is_none_or(|p| p.settled(&process.workerd))
        })
    }

    /// The slot's cell if it has one (never makes one: a stopped slot stays gone).
    fn existing_cell(&self, index: usize) -> Option<Arc<AsyncMutex<Option<WarmProcess>>>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(&index).cloned()
    }

    fn cell(&self, index: usize) -> Arc<AsyncMutex<Option<WarmProcess>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(index).or_default().clone()
    }

    /// Starts the slots' processes, a core's worth at a time (`prewarm.rs`). Returns once
    /// `first_ready` of them listen; the rest start in the background, where a job that comes
    /// first is sent to a ready slot (`ready`).
    pub(super) async fn prewarm(
        self: &Arc<Self>,
        slots: &[Slot],
        first_ready: usize,
    ) -> Result<(), SandboxError> {
        super::prewarm::prewarm(self, slots, first_ready, super::prewarm::concurrency()).await
    }

    /// Starts the slot's process unless it has one (or a job holds the slot: the job starts
    /// its own); the watch of its readiness. None once the pool is stopping: a process started
    /// after `stop_all` went by would keep its slot's cgroup busy past shutdown.
    pub(super) async fn start(
        &self,
        slot: &Slot,
    ) -> Result<Option<watch::Receiver<(u64, bool)>>, SandboxError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let cell = self.cell(slot.index);
        if let Ok(mut guard) = cell.try_lock() {
            if guard.is_none() {
                *guard = Some(self.spawn(slot)?);
            }
            // `stop_all` may have passed this cell while it was held: the process is ours to stop.
            if self.stopping.load(Ordering::SeqCst) {
                if let Some(mut process) = guard.take() {
                    process.workerd.kill_and_reap().await;
                }
                return Ok(None);
            }
        }
        Ok(Some(self.readiness(slot.index).subscribe()))
    }

    /// Stops a slot's process (e.g. the self-check's, which no job uses again).
    pub(super) async fn stop(&self, index: usize) {
        let cell = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index);
        self.readiness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index);
        if let Some(cell) = cell {
            if let Some(mut process) = cell.lock().await.take() {
                process.workerd.kill_and_reap().await;
            }
        }
    }

    /// Stops the processes of idle slots (at shutdown), so that their cgroups can go at once.
    /// A slot still running a job past the shutdown grace is not waited for: its job must not
    /// finish now (it runs again after the restart), and its process ends with the executor.
    pub(super) async fn stop_all(&self) {
        // First, so that prewarming still in the background starts no more slots.
        self.stopping.store(true, Ordering::SeqCst);
        let cells: Vec<_> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for cell in cells {
            let process = match cell.try_lock() {
                Ok(mut idle) => idle.take(),
                Err(_) => None,
            };
            if let Some(mut process) = process {
                process.workerd.kill_and_reap().await;
            }
        }
    }

    /// The pid of a slot's process, if it has one (for tests and the bench).
    pub(super) async fn pid(&self, index: usize) -> Option<u32> {
        let cell = self.cell(index);
        let guard = cell.lock().await;
        guard.as_ref().map(|p| p.workerd.pid())
    }

    fn spawn(&self, slot: &Slot) -> Result<WarmProcess, SandboxError> {
        let dir = RunDir::create(&self.work_dir, self.confinement.user())?;
        dir.write(CONFIG_FILE, self.config_text.as_bytes())?;
        dir.write(HOST_MODULE, self.host_js.as_bytes())?;
        let socket = dir.path().join("http.sock");
        let listener = UnixListener::bind(&socket)
            .map_err(|e| SandboxError(format!("cannot listen on {}: {e}", socket.display())))?;
        let mut workerd = Workerd::spawn(
            &self.workerd_path,
            dir.path(),
            &listener,
            slot,
            true,
            &self.confinement,
        )?;
        // Ready once workerd says it listens; a late word of a replaced process is ignored.
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let readiness = self.readiness(slot.index);
        readiness.send_replace((generation, false));
        if let Some(listening) = workerd.take_listening() {
            tokio::spawn(async move {
                if listening.await {
                    readiness.send_if_modified(|state| {
                        let current = state.0 == generation;
                        state.1 |= current;
                        current
                    });
                }
            });
        }
        tracing::debug!(
            slot = slot.index,
            pid = workerd.pid(),
            "warm workerd started"
        );
        Ok(WarmProcess {
            workerd,
            socket,
            cgroup_procs: slot.cgroup_procs.clone(),
            jobs: 0,
            prepared: None,
            _dir: dir,
        })
    }

    /// Runs one job in the slot's warm process; `want_stderr` waits for the job's last log
    /// lines (the report's `stderr`), which the executor's hot path does not need. The job's
    /// secret travels in its own request only (never kept by the pool or the host worker).
    pub(super) async fn run(
        self: &Arc<Self>,
        slot: &Slot,
        code: &str,
        input: &[u8],
        secret: Option<&[u8]>,
        deadline_ms: u64,
        want_stderr: bool,
    ) -> Result<RunReport, SandboxError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(deadline_ms);
        let cell = self.cell(slot.index);
        let Ok(guard) = tokio::time::timeout_at(deadline, cell.lock_owned()).await else {
            // Another run held the slot past this job's deadline (callers never share a slot).
            return Ok(report(
                RunResult::DeadlineExceeded,
                0,
                None,
                String::new(),
                started,
                None,
            ));
        };
        let mut lease = Lease { guard, keep: false };
        // A process of other cgroups, or one that died since its last job, is replaced.
        let stale = match lease.guard.as_mut() {
            Some(p) => p.cgroup_procs != slot.cgroup_procs || p.workerd.try_exited().is_some(),
            None => true,
        };
        if stale {
            *lease.guard = None;
            *lease.guard = Some(self.spawn(slot)?);
        }
        // The request prepared after the slot's last job: this job's if it fits; else dropped
        // once the process is free of its start-up.
        let prepared = match lease.guard.as_mut().and_then(|p| p.prepared.take()) {
            Some(p) if p.fits(code, secret.is_some()) => Some(p),
            Some(p) => {
                self.settle(&mut lease.guard, slot, p, deadline).await;
                None
            }
            None => None,
        };
        let Some(process) = lease.guard.as_mut() else {
            return Err(SandboxError("no warm process".into()));
        };
        process.jobs += 1;
        let jobs_done = process.workerd.jobs_done();
        let pid = process.workerd.pid();
        let was_prepared = prepared.is_some();

        let mut headers = vec![(CODE_BYTES_HEADER, code.len().to_string())];
        let exchange = if let Some(prepared) = prepared {
            // Its isolate's start-up lines belong to this job: the stderr kept is not emptied.
            Either::Left(prepared.send_input(input))
        } else {
            // Lines logged between jobs belong to no job.
            process.workerd.take_stderr();
            let stream = tokio::net::UnixStream::connect(&process.socket)
                .await
                .map_err(|e| {
                    SandboxError(format!(
                        "cannot connect to {}: {e}",
                        process.socket.display()
                    ))
                })?;
            // code | secret | input, framed by the two lengths (no secret header: no secret).
            let secret_len = secret.map_or(0, <[u8]>::len);
            let mut body = Vec::with_capacity(code.len() + secret_len + input.len());
            body.extend_from_slice(code.as_bytes());
            body.extend_from_slice(secret.unwrap_or_default());
            body.extend_from_slice(input);
            if secret.is_some() {
                headers.push((SECRET_BYTES_HEADER, secret_len.to_string()));
            }
            Either::Right(exchange::post_with(
                stream,
                Full::new(Bytes::from(body)),
                &headers,
                Some(OUTCOME_HEADER),
                self.output_limit,
            ))
        };
        let ready = Some(started.elapsed());
        tracing::debug!(target: STAGE_TARGET, stage = Stage::SandboxReady.name(), slot = slot.index);
        tokio::pin!(exchange);
        let workerd = &mut process.workerd;
        let phase = race(&mut exchange, workerd, deadline).await;

        let (result, keep) = match phase {
            Phase::Answered(Answer::Body(body), outcome) => match outcome.as_deref() {
                Some("output") => (RunResult::Output(body), true),
                Some("load-failed") => (
                    RunResult::LoadFailed(String::from_utf8_lossy(&body).trim().to_string()),
                    true,
                ),
                _ => {
                    return Err(SandboxError(format!(
                        "the warm host worker answered without {OUTCOME_HEADER}: {}",
                        String::from_utf8_lossy(&body)
                    )))
                }
            },
            Phase::Answered(Answer::TooLarge, outcome) => match outcome.as_deref() {
                Some("load-failed") => (
                    RunResult::LoadFailed("the job did not load (message too long)".into()),
                    false,
                ),
                // The job may still be streaming: its process goes.
                _ => (RunResult::OutputTooLarge, false),
            },
            Phase::DeadlinePassed => (RunResult::DeadlineExceeded, false),
            Phase::Exited(status) | Phase::ConnectionFailed(_, Some(status)) => {
                let stderr = process.workerd.stderr().await;
                if status.code().is_some() {
                    // The host worker itself failed: not the job's doing.
                    return Err(SandboxError(format!(
                        "warm workerd (slot {}) exited with {}: {}",
                        slot.index,
                        describe_exit(status),
                        stderr.trim()
                    )));
                }
                (classify_exit(status, &stderr), false)
            }
            Phase::ConnectionFailed(why, None) => (
                RunResult::Crashed(format!(
                    "workerd closed the connection without an answer: {why}"
                )),
                false,
            ),
        };

        let mut exit = None;
        let stderr;
        if keep {
            if want_stderr {
                process
                    .workerd
                    .wait_jobs_done(jobs_done + 1, LOG_WAIT)
                    .await;
            }
            stderr = process.workerd.take_stderr();
            lease.keep = true;
            let rss = process.workerd.anon_rss_bytes().unwrap_or(0);
            if rss > self.recycle_rss_bytes {
                tracing::info!(
                    slot = slot.index,
                    pid,
                    rss,
                    jobs = process.jobs,
                    "warm workerd's heaps grew past half the slot's memory; replacing it"
                );
                self.restart(&mut lease.guard, slot).await;
            }
            let clean = matches!(result, RunResult::Output(_));
            if clean && secret.is_none() && started.elapsed() < PREPARE_AFTER_RUNS_UNDER {
                self.prepare(&mut lease.guard, slot, code).await;
            }
        } else {
            exit = process.workerd.try_exited().map(describe_exit);
            process.workerd.kill_and_reap().await;
            let mut text = process.workerd.take_stderr();
            text.push_str(&process.workerd.stderr().await);
            stderr = text;
            tracing::info!(
                slot = slot.index,
                pid,
                result = result_name(&result),
                "warm workerd killed after its job; starting a new one for the slot"
            );
            self.restart(&mut lease.guard, slot).await;
            lease.keep = true;
        }
        let mut report = report(result, pid, exit, stderr, started, ready);
        report.prepared = was_prepared;
        tracing::debug!(
            slot = slot.index,
            pid,
            elapsed_ms = report.elapsed.as_millis() as u64,
            result = result_name(&report.result),
            "warm sandbox run finished"
        );
        Ok(report)
    }

    /// Replaces the slot's process with a new one (killed and reaped first).
    async fn restart(&self, process: &mut Option<WarmProcess>, slot: &Slot) {
        if let Some(mut old) = process.take() {
            old.workerd.kill_and_reap().await;
        }
        match self.spawn(slot) {
            Ok(new) => *process = Some(new),
            // The next run of the slot tries again.
            Err(e) => tracing::error!(slot = slot.index, error = %e, "cannot restart warm workerd"),
        }
    }

    /// Opens a request with `code` for the slot's next job (`prepared.rs`), and has it
    /// watched: a process whose prepared isolate has not started within `PREPARE_LIMIT` is
    /// replaced even if no job comes, since the job's top-level code may be using the slot's CPU.
    async fn prepare(self: &Arc<Self>, process: &mut Option<WarmProcess>, slot: &Slot, code: &str) {
        let Some(process) = process.as_mut() else {
            return;
        };
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        match Prepared::open(&process.socket, code, self.output_limit).await {
            Ok(prepared) => {
                let nonce = prepared.nonce().to_string();
                process.prepared = Some(prepared);
                let pool = Arc::downgrade(self);
                let slot = slot.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(PREPARE_LIMIT).await;
                    if let Some(pool) = pool.upgrade() {
                        pool.replace_if_stuck(&slot, &nonce).await;
                    }
                });
            }
            Err(e) => {
                tracing::debug!(slot = slot.index, error = %e, "cannot prepare the slot's next isolate")
            }
        }
    }

    /// Drops a prepared request that does not fit the job, once the slot's process is free of
    /// its start-up; a process still in it at `PREPARE_LIMIT` (or the job's deadline), or whose
    /// heaps are past half the slot's memory then, is replaced.
    async fn settle(
        &self,
        process: &mut Option<WarmProcess>,
        slot: &Slot,
        prepared: Prepared,
        deadline: tokio::time::Instant,
    ) {
        let Some(current) = process.as_mut() else {
            return;
        };
        let until = (prepared.opened + PREPARE_LIMIT).min(deadline);
        let started = prepared.settled(&current.workerd)
            || current.workerd.wait_prepared(prepared.nonce(), until).await
            || prepared.settled(&current.workerd);
        drop(prepared);
        if !started {
            tracing::warn!(
                slot = slot.index,
                pid = current.workerd.pid(),
                "the isolate prepared for the slot's next job did not start in time; replacing the slot's process"
            );
        } else {
            // The dropped isolate's memory goes only when the host worker collects garbage:
            // what its top-level code kept must not crowd out this job.
            let rss = current.workerd.anon_rss_bytes().unwrap_or(0);
            if rss <= self.recycle_rss_bytes {
                return;
            }
            tracing::info!(
                slot = slot.index,
                pid = current.workerd.pid(),
                rss,
                "the isolate prepared for the slot's next job, not used, holds memory; replacing the slot's process"
            );
        }
        self.restart(process, slot).await;
    }

    /// The watch of a prepared request: replaces the slot's idle process if the request's
    /// isolate has still not started. A job holding the slot settles it itself.
    async fn replace_if_stuck(&self, slot: &Slot, nonce: &str) {
        let Some(cell) = self.existing_cell(slot.index) else {
            return;
        };
        let Ok(mut guard) = cell.try_lock() else {
            return;
        };
        let stuck = guard.as_ref().is_some_and(|process| {
            process
                .prepared
                .as_ref()
                .is_some_and(|p| p.nonce() == nonce && !p.settled(&process.workerd))
        });
        if !stuck {
            return;
        }
        tracing::warn!(
            slot = slot.index,
            "the isolate prepared for the slot's next job did not start within {PREPARE_LIMIT:?}; replacing the slot's process"
        );
        if self.stopping.load(Ordering::SeqCst) {
            if let Some(mut process) = guard.take() {
                process.workerd.kill_and_reap().await;
            }
        } else {
            self.restart(&mut guard, slot).await;
        }
    }
}

fn report(
    result: RunResult,
    pid: u32,
    exit: Option<String>,
    stderr: String,
    started: Instant,
    ready: Option<Duration>,
) -> RunReport {
    RunReport {
        result,
        pid,
        exit,
        stderr,
        elapsed: started.elapsed(),
        ready,
        prepared: false,
    }
}
