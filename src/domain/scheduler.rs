//! When jobs run and when they are settled: the earliest-deadline-first queue of jobs waiting for
//! a slot, and the timetable of windows after which a job may be slashed on timeout.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ethers::types::U256;
use tokio::sync::Notify;
use tracing::Instrument;

use super::dal::{Slot, Slots};
use super::model::{Job, JobState};
use super::stage::STAGE_TARGET;
use super::Executor;

/// The dispatcher's safety tick: new jobs and released slots wake it sooner.
const DISPATCH_TICK_MS: u64 = 1_000;
/// How soon the dispatcher looks again when the slots held free ones back for a ready one.
const SLOT_RECHECK_MS: u64 = 5;

#[derive(Default)]
pub(crate) struct Scheduler {
    /// Jobs waiting for a slot, by the end of their window (earliest first).
    queue: Mutex<BinaryHeap<Reverse<(u64, U256)>>>,
    /// Jobs to look at once their window is over: (due time ms, job id).
    settle: Mutex<BTreeSet<(u64, U256)>>,
    dispatch_wake: Notify,
    settle_wake: Notify,
    in_flight: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain collections intact; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Scheduler {
    pub(crate) fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn wake(&self) {
        self.dispatch_wake.notify_one();
        self.settle_wake.notify_one();
    }

    pub(crate) fn push_job(&self, window_end_ms: u64, id: U256) {
        lock(&self.queue).push(Reverse((window_end_ms, id)));
        self.dispatch_wake.notify_one();
    }

    pub(crate) fn push_settlement(&self, due_ms: u64, id: U256) {
        lock(&self.settle).insert((due_ms, id));
        self.settle_wake.notify_one();
    }
}

/// Holds a slot for one run and gives it back however the run ends (also on panic).
struct SlotLease {
    slots: Arc<dyn Slots>,
    slot: Option<Slot>,
    executor: Arc<Executor>,
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.slots.release(slot);
            self.executor.scheduler.dispatch_wake.notify_one();
        }
    }
}

/// Counts a job as in flight until its output is submitted or it is given up.
struct InFlight(Arc<Executor>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.scheduler.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Executor {
    /// Queues a selected job for a slot.
    pub(crate) fn enqueue(&self, job: &Job) {
        let end = job.window_end_ms(self.settings.execution_buffer_secs);
        self.scheduler.push_job(end, job.id);
    }

    /// Puts a job on the timetable of settlement checks.
    pub(crate) fn schedule_settlement(&self, job: &Job) {
        let due =
            job.window_end_ms(self.settings.execution_buffer_secs) + self.settings.settle_margin_ms;
        self.scheduler.push_settlement(due, job.id);
    }

    /// Runs `work` counted as in flight (shutdown waits for it).
    pub(crate) fn spawn_in_flight(
        self: &Arc<Self>,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.scheduler.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.clone());
        tokio::spawn(async move {
            let _in_flight = guard;
            work.await;
        });
    }

    /// Starts queued jobs as slots become free, earliest window first, until shutdown.
    pub async fn run_dispatcher(self: Arc<Self>) {
        loop {
            if self.is_stopping() {
                return;
            }
            let next = lock(&self.scheduler.queue)
                .peek()
                .map(|Reverse(entry)| *entry);
            let Some((window_end, id)) = next else {
                self.wait_dispatch().await;
                continue;
            };
            let Some(slot) = self.ports.slots.try_acquire() else {
                if self.ports.slots.busy() < self.ports.slots.capacity() {
                    // Free slots held back for a busy one that is ready (the port's choice);
                    // a slot becoming ready wakes nobody: look again shortly.
                    self.wait_dispatch_ms(SLOT_RECHECK_MS).await;
                } else {
                    self.wait_dispatch_ms(DISPATCH_TICK_MS).await;
                }
                continue;
            };
            lock(&self.scheduler.queue).pop();
            let lease = SlotLease {
                slots: self.ports.slots.clone(),
                slot: Some(slot),
                executor: self.clone(),
            };
            let job = match self.ports.store.job(id) {
                Ok(Some(record)) if record.state == JobState::Queued => record.job,
                Ok(_) => continue, // removed by a reorg, or already handled
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "cannot read the journal; job stays queued");
                    lock(&self.scheduler.queue).push(Reverse((window_end, id)));
                    drop(lease);
                    self.ports
                        .clock
                        .sleep_ms(self.settings.retry_backoff_ms)
                        .await;
                    continue;
                }
            };
            let now = self.ports.clock.now_ms();
            if now + self.settings.min_window_left_ms > window_end {
                self.abandon(&job, "the window closed while the job waited for a slot");
                continue;
            }
            if let Some(refusal) = self.enclave_refusal() {
                let reason = format!("not run: the chain refuses this enclave key ({refusal})");
                self.abandon(&job, &reason);
                continue;
            }
            // Journalled before the run starts, so that a second queue entry for the id (a
            // job superseded by a reorg) finds it taken; not flushed (recovery re-runs a
            // `running` job as a `queued` one).
            if let Err(e) = self.set_state_deferred(&job, JobState::Running) {
                tracing::error!(job = %job.id, error = %e, "cannot journal the run; job not started");
                continue;
            }
            let executor = self.clone();
            // The span names the job in the adapters' events (e.g. their stage marks).
            let span = tracing::info_span!(target: STAGE_TARGET, "job", job = %job.id);
            self.spawn_in_flight(
                async move { executor.run_job(job, lease).await }.instrument(span),
            );
        }
    }

    async fn wait_dispatch(&self) {
        self.wait_dispatch_ms(DISPATCH_TICK_MS).await;
    }

    /// Woken by a new job or a released slot, or after `ms`.
    async fn wait_dispatch_ms(&self, ms: u64) {
        tokio::select! {
            _ = self.scheduler.dispatch_wake.notified() => {}
            _ = self.ports.clock.sleep_ms(ms) => {}
        }
    }

    async fn run_job(self: &Arc<Self>, job: Job, lease: SlotLease) {
        let Some(slot) = lease.slot.as_ref() else {
            return;
        };
        tracing::info!(job = %job.id, slot = slot.index, "job running");
        // The check the send makes first, asked while the job runs: the reader keeps a yes
        // until the chain moves, so a short job's send need not ask again. Never waited for:
        // unanswered when the job ends, it is dropped and the send asks itself.
        let outcome = {
            let run = self.execute_job(&job, slot);
            let check = self.ports.reader.job_is_canonical(&job);
            tokio::pin!(run, check);
            let mut asked = false;
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut run => break outcome,
                    _ = &mut check, if !asked => asked = true,
                }
            }
        };
        // The slot is free for the next job while this one's output is submitted.
        drop(lease);
        match outcome {
            Ok(outcome) => {
                self.ports
                    .metrics
                    .job_executed(outcome.error_code, outcome.total_time_ms);
                if let Err(e) = self.submit_output(&job, outcome).await {
                    tracing::error!(job = %job.id, error = %e, "output not submitted");
                }
            }
            Err(reason) => self.abandon(&job, &reason),
        }
    }

    /// Looks at jobs whose window is over and settles those not fully answered.
    pub async fn run_settler(self: Arc<Self>) {
        loop {
            let now = self.ports.clock.now_ms();
            let next = lock(&self.scheduler.settle).first().copied();
            match next {
                None => {
                    tokio::select! {
                        _ = self.scheduler.settle_wake.notified() => {}
                        _ = self.ports.clock.sleep_ms(5_000) => {}
                    }
                }
                Some((due, _)) if due > now => {
                    tokio::select! {
                        _ = self.scheduler.settle_wake.notified() => {}
                        _ = self.ports.clock.sleep_ms(due - now) => {}
                    }
                }
                Some(entry) => {
                    lock(&self.scheduler.settle).remove(&entry);
                    let executor = self.clone();
                    tokio::spawn(async move { executor.settle_job(entry.1).await });
                }
            }
        }
    }
}
