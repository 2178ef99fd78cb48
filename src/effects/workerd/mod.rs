//! One sandboxed run of a job in workerd: write the job and a generated config into a fresh
//! run directory, start workerd on a socket the executor already listens on, send exactly one
//! `POST /` with the input, read the answer under the output limit and the deadline, then kill
//! and reap workerd and remove the directory (on every path, cancellation included).
//!
//! Load failures are seen without polling: the exchange is raced against workerd's exit, and
//! workerd exits non-zero before serving when the job does not load.
//!
//! `SANDBOX_MODE=warm` keeps one workerd per slot instead and loads each job into a fresh
//! isolate of it (`warm.rs`); both modes give the same results for the same jobs.

mod capnp;
mod child;
pub mod confine;
mod exchange;
mod prepared;
mod prewarm;
mod warm;

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

pub use capnp::{
    render_config, render_host_js, render_warm_config, ALWAYS_DENIED, COMPATIBILITY_DATE, ENTRY_JS,
    NO_NETWORK_JS,
};
pub use confine::Confinement;

use self::capnp::{CONFIG_FILE, ENTRY_MODULE, JOB_MODULE, SECRET_FILE};
use self::child::{describe_exit, Workerd};
use self::exchange::Answer;
use self::warm::WarmPool;
use crate::config::{EgressPolicy, SandboxConfig, SandboxMode};
use crate::domain::dal::{RunResult, Sandbox, SandboxError, Slot};
use crate::domain::stage::{Stage, STAGE_TARGET};

/// Longest Unix socket path (sun_path is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// After the connection failed, how long workerd has to finish dying before the run is
/// called a crash without an exit status.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Distinguishes run directories of one process (the pid distinguishes processes).
static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs jobs in a new workerd process each (`SANDBOX_MODE=process`), or in each slot's warm
/// workerd (`SANDBOX_MODE=warm`).
#[derive(Debug)]
pub struct WorkerdSandbox {
    workerd_path: PathBuf,
    work_dir: PathBuf,
    output_limit: usize,
    egress: EgressPolicy,
    config_text: String,
    /// The same config with the `secret` data binding, for jobs that have a secret.
    config_with_secret: String,
    /// What confines every workerd besides its slot's cgroups.
    confinement: Confinement,
    /// The slots' warm processes (warm mode only).
    warm: Option<Arc<WarmPool>>,
}

/// Everything known about one run; [`Sandbox::run`] keeps only `result`.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub result: RunResult,
    /// workerd's process id (gone by the time the report is returned).
    pub pid: u32,
    /// How workerd ended on its own, if it did before the executor killed it.
    pub exit: Option<String>,
    /// The start of workerd's stderr (each line is also logged at debug level).
    pub stderr: String,
    /// Wall time from the start of the run to the result.
    pub elapsed: Duration,
    /// Wall time from the start of the run until the job could be handed over: workerd
    /// listening (per-job mode), the slot's process taken and connected (warm mode; the
    /// job's isolate is made after this, unless `prepared`).
    pub ready: Option<Duration>,
    /// Whether the job ran on an isolate made before it came (warm mode, `prepared.rs`).
    pub prepared: bool,
}

/// How the race between the answer, workerd's exit and the deadline ended.
enum Phase {
    /// The answer, and the warm host worker's outcome header.
    Answered(Answer, Option<String>),
    ConnectionFailed(String, Option<ExitStatus>),
    Exited(ExitStatus),
    DeadlinePassed,
}

/// Races the exchange against workerd's exit, until the deadline. After a failed connection
/// workerd gets `EXIT_GRACE` to finish dying, so the run is described by its exit.
async fn race(
    exchange: impl std::future::Future<Output = Result<(Answer, Option<String>), String>>,
    workerd: &mut Workerd,
    deadline: tokio::time::Instant,
) -> Phase {
    tokio::pin!(exchange);
    tokio::time::timeout_at(deadline, async {
        tokio::select! {
            answer = &mut exchange => match answer {
                Ok((answer, outcome)) => Phase::Answered(answer, outcome),
                Err(why) => {
                    let status = tokio::time::timeout(EXIT_GRACE, workerd.wait()).await;
                    Phase::ConnectionFailed(why, status.ok().and_then(Result::ok))
                }
            },
            status = workerd.wait() => match status {
                Ok(status) => Phase::Exited(status),
                Err(e) => Phase::ConnectionFailed(format!("cannot wait for workerd: {e}"), None),
            },
        }
    })
    .await
    .unwrap_or(Phase::DeadlinePassed)
}

impl WorkerdSandbox {
    /// Checks that the binary exists and the work directory is usable; runs nothing.
    pub fn new(config: &SandboxConfig) -> Result<Self, SandboxError> {
        let meta = std::fs::metadata(&config.workerd_path).map_err(|e| {
            SandboxError(format!(
                "workerd binary {} not usable: {e} (run tools/install.sh or set EXECUTOR_WORKERD_PATH)",
                config.workerd_path.display()
            ))
        })?;
        if !meta.is_file() {
            return Err(SandboxError(format!(
                "workerd binary {} is not a file",
                config.workerd_path.display()
            )));
        }
        std::fs::create_dir_all(&config.work_dir).map_err(|e| {
            SandboxError(format!(
                "cannot create sandbox directory {}: {e}",
                config.work_dir.display()
            ))
        })?;
        let work_dir = config
            .work_dir
            .canonicalize()
            .unwrap_or_else(|_| config.work_dir.clone());
        // run-<pid>-<seq>/http.sock must fit in a Unix socket address.
        let longest = work_dir.join("run-4294967295-18446744073709551615/http.sock");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SandboxError(format!(
                "sandbox directory {} is too long for a Unix socket path: choose a shorter EXECUTOR_SANDBOX_DIR",
                work_dir.display()
            )));
        }
        let request = confine::Request {
            user: config.sandbox_user,
            hidden: config.hidden_paths.clone(),
            file_modes_only: false,
        };
        let confinement = Confinement::establish(&request, &config.workerd_path)
            .map_err(|e| SandboxError(format!("cannot confine workerd: {e}")))?;
        tracing::info!(layers = %confinement.describe(), "workerd confinement");
        if !confinement.hides_secrets() && !config.hidden_paths.is_empty() {
            tracing::warn!(
                "workerd runs as the executor's user in the executor's mount view: a runtime \
                 escape could read the data directory and the enclave key file (run as root, or \
                 set EXECUTOR_SANDBOX_UID/GID)"
            );
        }
        if let Some((_, gid)) = confinement.user() {
            // The sandbox user reaches its run directories through their group only.
            share_with_group(&work_dir, gid, 0o710)?;
        }
        let warm = match config.mode {
            SandboxMode::Process => None,
            SandboxMode::Warm => Some(Arc::new(WarmPool::new(
                config,
                work_dir.clone(),
                confinement.clone(),
            ))),
        };
        Ok(WorkerdSandbox {
            workerd_path: config.workerd_path.clone(),
            work_dir,
            output_limit: config.output_limit_bytes,
            egress: config.egress,
            config_text: render_config(config.egress, false),
            config_with_secret: render_config(config.egress, true),
            confinement,
            warm,
        })
    }

    pub fn egress(&self) -> EgressPolicy {
        self.egress
    }

    /// What confines every workerd this sandbox starts.
    pub fn confinement(&self) -> &Confinement {
        &self.confinement
    }

    pub fn mode(&self) -> SandboxMode {
        match self.warm {
            Some(_) => SandboxMode::Warm,
            None => SandboxMode::Process,
        }
    }

    /// Warm mode: starts the slots' workerd processes (as many at once as there are cores) rather
    /// than at their first jobs; returns once `first_ready` of them listen, the rest start in the
    /// background.
    /// (No-op in per-job mode.)
    pub async fn prewarm(&self, slots: &[Slot], first_ready: usize) -> Result<(), SandboxError> {
        match &self.warm {
            Some(pool) => pool.prewarm(slots, first_ready).await,
            None => Ok(()),
        }
    }

    /// Stops the warm processes (warm mode; per-job processes end with their runs).
    pub async fn stop(&self) {
        if let Some(pool) = &self.warm {
            pool.stop_all().await;
        }
    }

    /// Whether a job in this slot would start at once: warm mode, whether the slot's process
    /// listens now (not while it starts); per-job mode, always.
    pub fn ready(&self, slot_index: usize) -> bool {
        match &self.warm {
            Some(pool) => pool.ready(slot_index),
            None => true,
        }
    }

    /// Warm mode: the pid of the slot's workerd, if it has one now.
    pub async fn warm_pid(&self, slot_index: usize) -> Option<u32> {
        match &self.warm {
            Some(pool) => pool.pid(slot_index).await,
            None => None,
        }
    }

    /// `workerd --version`, e.g. "workerd 2026-11-17".
    pub async fn version(&self) -> Result<String, SandboxError> {
        let out = tokio::process::Command::new(&self.workerd_path)
            .arg("--version")
            .env_clear()
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| SandboxError(format!("cannot run workerd --version: {e}")))?;
        if !out.status.success() {
            return Err(SandboxError(format!(
                "workerd --version failed: {}",
                describe_exit(out.status)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs a trivial echo job once (no slot limits): proves the binary, the generated config
    /// and the socket hand-over work on this machine. For start-up.
    pub async fn self_check(&self) -> Result<(), SandboxError> {
        let slot = Slot {
            index: usize::MAX,
            cgroup_procs: Vec::new(),
        };
        let code =
            "export default { async fetch(r) { return new Response(await r.arrayBuffer()) } }";
        let report = self
            .run_detailed(&slot, code, b"self-check", None, 30_000)
            .await;
        if let Some(pool) = &self.warm {
            pool.stop(slot.index).await;
        }
        let report = report?;
        match report.result {
            RunResult::Output(out) if out == b"self-check" => Ok(()),
            other => Err(SandboxError(format!(
                "workerd self-check failed: {other:?}; stderr: {}",
                report.stderr.trim()
            ))),
        }
    }

    /// One run, with what is known about workerd besides the result (in warm mode, `pid` is
    /// the slot's process and `stderr` what it logged during this job).
    pub async fn run_detailed(
        &self,
        slot: &Slot,
        code: &str,
        input: &[u8],
        secret: Option<&[u8]>,
        deadline_ms: u64,
    ) -> Result<RunReport, SandboxError> {
        match &self.warm {
            Some(pool) => pool.run(slot, code, input, secret, deadline_ms, true).await,
            None => {
                self.run_process(slot, code, input, secret, deadline_ms)
                    .await
            }
        }
    }

    /// One run in a new workerd process.
    async fn run_process(
        &self,
        slot: &Slot,
        code: &str,
        input: &[u8],
        secret: Option<&[u8]>,
        deadline_ms: u64,
    ) -> Result<RunReport, SandboxError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(deadline_ms);
        let run_dir = RunDir::create(&self.work_dir, self.confinement.user())?;
        let config = match secret {
            Some(secret) => {
                run_dir.write_private(SECRET_FILE, secret, self.confinement.user())?;
                &self.config_with_secret
            }
            None => &self.config_text,
        };
        run_dir.write(CONFIG_FILE, config.as_bytes())?;
        run_dir.write(ENTRY_MODULE, ENTRY_JS.as_bytes())?;
        run_dir.write(JOB_MODULE, code.as_bytes())?;

        // Listen, and connect at once: the connection waits in the backlog until workerd
        // accepts it, so there is no port to race for and no readiness to poll.
        let socket_path = run_dir.path().join("http.sock");
        let listener = UnixListener::bind(&socket_path).map_err(|e| {
            SandboxError(format!("cannot listen on {}: {e}", socket_path.display()))
        })?;
        let stream = UnixStream::connect(&socket_path)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(s)
            })
            .map_err(|e| {
                SandboxError(format!("cannot connect to {}: {e}", socket_path.display()))
            })?;
        let mut workerd = Workerd::spawn(
            &self.workerd_path,
            run_dir.path(),
            &listener,
            slot,
            false,
            &self.confinement,
        )?;
        // Only workerd holds the listener now: if it dies, the connection is reset.
        drop(listener);

        let exchange = exchange::post(stream, Bytes::copy_from_slice(input), self.output_limit);
        tokio::pin!(exchange);
        // workerd has loaded the job (or died trying) once its socket listens.
        let listening = tokio::time::timeout_at(deadline, workerd.listening()).await;
        let ready = listening.is_ok().then(|| started.elapsed());
        tracing::debug!(target: STAGE_TARGET, stage = Stage::SandboxReady.name(), slot = slot.index);
        let phase = race(
            futures::FutureExt::map(exchange, |answer| answer.map(|a| (a, None))),
            &mut workerd,
            deadline,
        )
        .await;

        let exited_on_its_own = match &phase {
            Phase::Exited(status) | Phase::ConnectionFailed(_, Some(status)) => Some(*status),
            _ => None,
        };
        workerd.kill_and_reap().await;
        let stderr = workerd.stderr().await;
        let result = match phase {
            Phase::Answered(Answer::Body(body), _) => RunResult::Output(body),
            Phase::Answered(Answer::TooLarge, _) => RunResult::OutputTooLarge,
            Phase::DeadlinePassed => RunResult::DeadlineExceeded,
            Phase::Exited(status) => classify_exit(status, &stderr),
            Phase::ConnectionFailed(_, Some(status)) => classify_exit(status, &stderr),
            Phase::ConnectionFailed(why, None) => RunResult::Crashed(format!(
                "workerd closed the connection without an answer: {why}"
            )),
        };
        let report = RunReport {
            result,
            pid: workerd.pid(),
            exit: exited_on_its_own.map(describe_exit),
            stderr,
            elapsed: started.elapsed(),
            ready,
            prepared: false,
        };
        tracing::debug!(
            slot = slot.index,
            pid = report.pid,
            elapsed_ms = report.elapsed.as_millis() as u64,
            result = result_name(&report.result),
            "sandbox run finished"
        );
        Ok(report)
    }
}

#[async_trait]
impl Sandbox for WorkerdSandbox {
    async fn run<'s>(
        &self,
        slot: &Slot,
        code: &str,
        input: &[u8],
        secret: Option<&'s [u8]>,
        deadline_ms: u64,
    ) -> Result<RunResult, SandboxError> {
        let report = match &self.warm {
            Some(pool) => {
                pool.run(slot, code, input, secret, deadline_ms, false)
                    .await?
            }
            None => {
                self.run_process(slot, code, input, secret, deadline_ms)
                    .await?
            }
        };
        Ok(report.result)
    }

    fn runtime_found(&self) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&self.workerd_path)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
}

/// workerd ended before answering. Killed by a signal (the OOM killer's SIGKILL, a V8 fatal
/// error's abort): a crash. A non-zero exit before serving: the job did not load (workerd
/// prints "service main: Uncaught SyntaxError: …" and exits 1).
fn classify_exit(status: ExitStatus, stderr: &str) -> RunResult {
    match status.code() {
        Some(0) => RunResult::Crashed("workerd exited before answering".into()),
        Some(_) => RunResult::LoadFailed(load_message(stderr, status)),
        None => {
            let hint = if status_is_sigkill(status) {
                " (out of memory?)"
            } else {
                ""
            };
            RunResult::Crashed(format!(
                "workerd was killed by {}{hint}",
                describe_exit(status)
            ))
        }
    }
}

fn status_is_sigkill(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGKILL)
}

/// The useful part of workerd's complaint, without its "service main: " prefix.
fn load_message(stderr: &str, status: ExitStatus) -> String {
    let text: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty())
        .take(8)
        .collect();
    if text.is_empty() {
        return format!(
            "workerd exited with {} before serving",
            describe_exit(status)
        );
    }
    let mut message = text.join("\n");
    if let Some(rest) = message.strip_prefix("service main: ") {
        message = rest.to_string();
    }
    if message.len() > 2000 {
        let mut cut = 2000;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

fn result_name(result: &RunResult) -> &'static str {
    match result {
        RunResult::Output(_) => "output",
        RunResult::LoadFailed(_) => "load_failed",
        RunResult::DeadlineExceeded => "deadline_exceeded",
        RunResult::OutputTooLarge => "output_too_large",
        RunResult::Crashed(_) => "crashed",
    }
}

/// A run's private directory (mode 0700; 0750 with the sandbox user's group when workerd runs
/// as that user), removed with everything in it when dropped.
struct RunDir(PathBuf);

/// Gives `dir` to group `gid` with `mode` (the sandbox user reads through the group).
fn share_with_group(dir: &Path, gid: u32, mode: u32) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, None, Some(gid))
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| {
            SandboxError(format!(
                "cannot give {} to the sandbox group {gid}: {e}",
                dir.display()
            ))
        })
}

impl RunDir {
    fn create(work_dir: &Path, user: Option<(u32, u32)>) -> Result<Self, SandboxError> {
        std::fs::create_dir_all(work_dir).map_err(|e| {
            SandboxError(format!(
                "cannot create sandbox directory {}: {e}",
                work_dir.display()
            ))
        })?;
        loop {
            let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
            let path = work_dir.join(format!("run-{}-{seq}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = RunDir(path);
                    if let Some((_, gid)) = user {
                        share_with_group(dir.path(), gid, 0o750)?;
                    }
                    return Ok(dir);
                }
                // Left over by an earlier process with the same pid: take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(SandboxError(format!(
                        "cannot create run directory {}: {e}",
                        path.display()
                    )))
                }
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let path = self.0.join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(|e| SandboxError(format!("cannot write {}: {e}", path.display())))
    }

    /// Writes a new file only its owner may read (mode 0400 from its creation on), owned by
    /// the sandbox user when workerd runs as one: a job's secret, readable by that run's
    /// workerd and, besides root, nobody else. Goes with the directory.
    fn write_private(
        &self,
        name: &str,
        contents: &[u8],
        user: Option<(u32, u32)>,
    ) -> Result<(), SandboxError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.0.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .and_then(|mut f| {
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
                }
                f.write_all(contents)
            })
            .map_err(|e| SandboxError(format!("cannot write {}: {e}", path.display())))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove run directory {}: {e}", self.0.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exits_are_classified() {
        let loaded = classify_exit(
            ExitStatus::from_raw(1 << 8),
            "service main: Uncaught SyntaxError: missing ) after argument list\n  at job.js:1:67\n",
        );
        assert_eq!(
            loaded,
            RunResult::LoadFailed(
                "Uncaught SyntaxError: missing ) after argument list\n  at job.js:1:67".into()
            )
        );
        assert!(matches!(
            classify_exit(ExitStatus::from_raw(libc::SIGKILL), ""),
            RunResult::Crashed(m) if m.contains("SIGKILL")
        ));
        assert!(matches!(
            classify_exit(ExitStatus::from_raw(2 << 8), ""),
            RunResult::LoadFailed(m) if m.contains("exit code 2")
        ));
        assert!(matches!(
            classify_exit(ExitStatus::from_raw(0), ""),
            RunResult::Crashed(_)
        ));
    }
}
