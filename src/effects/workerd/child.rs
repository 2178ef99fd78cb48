//! The workerd process of one run: spawned in its own process group, moved into the slot's
//! cgroups before it executes anything, bound to die with the executor, handed the already
//! listening socket, and always killed and reaped (explicitly, or by the guard on drop).

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::capnp::{CONFIG_FILE, JOB_DONE_LINE, PREPARED_LINE, SOCKET_NAME};
use super::confine::Confinement;
use crate::domain::dal::{SandboxError, Slot};

/// How much of workerd's stderr is kept for the run's report (all of it is logged).
const LOG_KEEP_BYTES: usize = 16 * 1024;
/// How long to wait for workerd's pipes to close once it is dead.
const LOG_DRAIN: Duration = Duration::from_millis(500);

/// A running (or finished but not yet forgotten) workerd. Dropping it kills the whole process
/// group if it was not reaped yet; tokio reaps the zombie in the background.
pub(super) struct Workerd {
    child: Child,
    pid: u32,
    reaped: Option<ExitStatus>,
    stderr: Arc<Mutex<String>>,
    pipes: Vec<JoinHandle<()>>,
    /// How many "job done" lines the warm host worker has written so far.
    jobs_done: tokio::sync::watch::Receiver<u64>,
    /// The nonce of the last prepared request whose isolate the host worker said has started.
    prepared: tokio::sync::watch::Receiver<String>,
    /// Read end of `--control-fd`: workerd writes a line on it once its socket listens.
    control: Option<tokio::net::unix::pipe::Receiver>,
}

impl Workerd {
    /// Spawns `workerd serve config.capnp --socket-fd http=<fd>` in `run_dir` (with
    /// `--experimental` for the warm host worker's Worker Loader).
    pub(super) fn spawn(
        workerd: &Path,
        run_dir: &Path,
        listener: &UnixListener,
        slot: &Slot,
        experimental: bool,
        confinement: &Confinement,
    ) -> Result<Self, SandboxError> {
        // Everything the child needs is prepared here: after fork only async-signal-safe calls.
        let procs = slot
            .cgroup_procs
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SandboxError("a cgroup path contains a NUL byte".into()))?;
        let listen_fd = listener.as_raw_fd();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let (control_read, control_write) = control_pipe()?;
        let control_fd = control_write.as_raw_fd();
        let confinement = confinement.clone();

        let mut cmd = Command::new(workerd);
        cmd.arg("serve")
            .arg(CONFIG_FILE)
            .arg("--socket-fd")
            .arg(format!("{SOCKET_NAME}={listen_fd}"))
            .arg("--control-fd")
            .arg(control_fd.to_string())
            .args(experimental.then_some("--experimental"))
            .current_dir(run_dir)
            // Nothing of the executor's environment (keys, RPC URLs) reaches the sandbox.
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, open,
        // write, close, fcntl, and those of `Confinement::apply`) on data prepared before the
        // fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the executor. (The signal follows the *thread* that forked: the
                // executor spawns from its long-lived runtime threads.)
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // Join the slot's cgroups before any user code can run.
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(err);
                    }
                }
                // Let the listening socket and the control pipe survive exec (everything else
                // is close-on-exec).
                if libc::fcntl(listen_fd, libc::F_SETFD, 0) != 0
                    || libc::fcntl(control_fd, libc::F_SETFD, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // Its own mount view, user, no core dumps, no new privileges, seccomp.
                confinement.apply()?;
                // A change of user clears the death signal: set it again.
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            SandboxError(format!(
                "cannot start workerd ({}) in slot {}: {e}",
                workerd.display(),
                slot.index
            ))
        })?;
        // Only workerd writes to the control pipe now.
        drop(control_write);
        let control = tokio::net::unix::pipe::Receiver::from_owned_fd(control_read).ok();
        let pid = child.id().unwrap_or_default();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (done_tx, jobs_done) = tokio::sync::watch::channel(0u64);
        let (prepared_tx, prepared) = tokio::sync::watch::channel(String::new());
        let host = Arc::new(HostLines {
            jobs_done: done_tx,
            prepared: prepared_tx,
        });
        let mut pipes = Vec::new();
        if let Some(out) = child.stdout.take() {
            pipes.push(tokio::spawn(forward(
                out,
                pid,
                "stdout",
                None,
                host.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push(tokio::spawn(forward(
                err,
                pid,
                "stderr",
                Some(stderr.clone()),
                host,
            )));
        }
        tracing::debug!(pid, slot = slot.index, "workerd started");
        Ok(Workerd {
            child,
            pid,
            reaped: None,
            stderr,
            pipes,
            jobs_done,
            prepared,
            control,
        })
    }

    /// Waits until workerd says its socket listens (its config and modules are loaded);
    /// false if it never will (it died first). Once true, stays true.
    pub(super) async fn listening(&mut self) -> bool {
        let Some(pipe) = self.control.as_mut() else {
            return true;
        };
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        let ok = matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0);
        self.control = None;
        ok
    }

    /// The wait for workerd's "listening" line, detached from the process (warm mode watches
    /// it in a task of its own); None if it was taken or awaited already.
    pub(super) fn take_listening(
        &mut self,
    ) -> Option<impl std::future::Future<Output = bool> + Send + 'static> {
        let mut pipe = self.control.take()?;
        Some(async move {
            let mut reader = BufReader::new(&mut pipe);
            let mut line = Vec::new();
            matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0)
        })
    }

    /// How workerd ended, if it has (without waiting).
    pub(super) fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = Some(status);
            }
        }
        self.reaped
    }

    /// Empties the kept stderr and returns what it held (warm mode: one job's lines).
    pub(super) fn take_stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// How many jobs the warm host worker has reported done on stderr.
    pub(super) fn jobs_done(&self) -> u64 {
        *self.jobs_done.borrow()
    }

    /// Waits (at most `limit`) until the host worker has reported `count` jobs done, so
    /// that every log line of those jobs has been read.
    pub(super) async fn wait_jobs_done(&mut self, count: u64, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.jobs_done.wait_for(|n| *n >= count)).await;
    }

    /// Whether the host worker said that the isolate of the prepared request `nonce` started.
    pub(super) fn is_prepared(&self, nonce: &str) -> bool {
        *self.prepared.borrow() == nonce
    }

    /// Waits until the isolate of the prepared request `nonce` started, at most until `until`;
    /// whether it did.
    pub(super) async fn wait_prepared(&mut self, nonce: &str, until: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(until, self.prepared.wait_for(|n| n == nonce))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// workerd's resident anonymous memory (heaps; not its mapped binary), bytes (None once
    /// it is gone): `RssAnon`, read after every job as resident − shared pages from `statm`,
    /// which the kernel renders far more cheaply than `status`.
    pub(super) fn anon_rss_bytes(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid)).ok()?;
        anon_bytes_of_statm(&statm, page_size())
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until workerd exits on its own (cancel-safe).
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.reaped = Some(status);
        Ok(status)
    }

    /// Kills the process group unless already reaped, then reaps: afterwards the pid is gone.
    pub(super) async fn kill_and_reap(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        self.kill_group();
        match self.child.wait().await {
            Ok(status) => self.reaped = Some(status),
            Err(e) => tracing::warn!(pid = self.pid, "cannot reap workerd: {e}"),
        }
    }

    /// Waits (briefly) for the pipes to close, then returns the kept part of stderr.
    pub(super) async fn stderr(&mut self) -> String {
        for pipe in self.pipes.drain(..) {
            let _ = tokio::time::timeout(LOG_DRAIN, pipe).await;
        }
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn kill_group(&self) {
        if self.pid != 0 {
            // SAFETY: plain syscall; the group is ours (process_group(0)) and not yet reaped,
            // so its id cannot have been reused.
            unsafe {
                libc::killpg(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = Some(status);
            } else {
                self.kill_group();
            }
        }
        for pipe in &self.pipes {
            pipe.abort();
        }
    }
}

/// What the warm host worker's own lines have said so far.
struct HostLines {
    jobs_done: tokio::sync::watch::Sender<u64>,
    prepared: tokio::sync::watch::Sender<String>,
}

/// Logs each line of a pipe at debug level; keeps the start of stderr for the report; takes
/// note of the warm host worker's "job done" and "prepared" lines instead of logging them.
async fn forward(
    pipe: impl AsyncRead + Unpin,
    pid: u32,
    stream: &'static str,
    keep: Option<Arc<Mutex<String>>>,
    host: Arc<HostLines>,
) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if text == JOB_DONE_LINE {
                    host.jobs_done.send_modify(|n| *n += 1);
                    continue;
                }
                if let Some(nonce) = text
                    .strip_prefix(PREPARED_LINE)
                    .and_then(|rest| rest.strip_prefix(' '))
                {
                    // A job may print this line too, but cannot know the nonce.
                    host.prepared.send_replace(nonce.to_string());
                    continue;
                }
                tracing::debug!(pid, stream, "workerd: {text}");
                if let Some(keep) = &keep {
                    if let Ok(mut kept) = keep.lock() {
                        if kept.len() < LOG_KEEP_BYTES {
                            kept.push_str(text);
                            kept.push('\n');
                        }
                    }
                }
            }
        }
    }
}

/// A close-on-exec pipe; the read end non-blocking (for tokio).
fn control_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), SandboxError> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError(format!(
            "cannot make workerd's control pipe: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(read.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(read.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok((read, write))
}

/// Describes how workerd ended, for reports and crash reasons.
pub(super) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => {
            let name = match sig {
                libc::SIGKILL => "SIGKILL",
                libc::SIGABRT => "SIGABRT",
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGTRAP => "SIGTRAP",
                libc::SIGBUS => "SIGBUS",
                libc::SIGILL => "SIGILL",
                libc::SIGTERM => "SIGTERM",
                _ => "signal",
            };
            format!("signal {sig} ({name})")
        }
        _ => "unknown status".to_string(),
    }
}

/// `RssAnon` from `/proc/PID/statm` (in pages: size resident shared …; `shared` counts the
/// file-backed and shared-memory pages, so resident − shared are the anonymous ones).
fn anon_bytes_of_statm(statm: &str, page_size: u64) -> Option<u64> {
    let mut fields = statm.split_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    Some(resident.saturating_sub(shared) * page_size)
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf reads a constant of the running kernel.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_rss_anon() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    #[test]
    fn statm_gives_the_anonymous_pages() {
        assert_eq!(
            anon_bytes_of_statm("900 120 20 5 0 300 0\n", 4096),
            Some(100 * 4096)
        );
        assert_eq!(anon_bytes_of_statm("900", 4096), None);
        // The same figure the kernel reports as RssAnon, for this very process (a read
        // allocates a little, hence the slack).
        let before = status_rss_anon();
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let after = status_rss_anon();
        let anon = anon_bytes_of_statm(&statm, page_size()).unwrap();
        let slack = 1 << 20;
        assert!(
            anon + slack >= before.min(after) && anon <= before.max(after) + slack,
            "statm {anon} vs status {before}..{after}"
        );
    }
}
