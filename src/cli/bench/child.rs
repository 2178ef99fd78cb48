//! The executor as a child process of the bench (this binary, `serve`), so that its memory and
//! CPU are its own: started, enrolled on the devnet, stopped gracefully.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serverless_executor::client::devnet::{wait_for_chain_status, Devnet, ExecutorOptions};
use serverless_executor::config::SandboxMode;
use serverless_executor::effects::signer::EnclaveKey;

use super::stages::{read_log, StageLog};

/// The executor binary to start instead of this one (`bench --executor`).
static EXECUTOR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

pub fn use_executor(path: std::path::PathBuf) {
    let _ = EXECUTOR.set(path);
}

/// Starts this binary's (or `--executor`'s) `serve` with `settings` (`EXECUTOR_*` names without the prefix) as its
/// only `EXECUTOR_*` environment, its stderr (the log) going to `stderr`; killed on drop.
pub fn spawn_executor(
    settings: impl IntoIterator<Item = (String, String)>,
    stderr: Stdio,
) -> Result<tokio::process::Child> {
    let exe = match EXECUTOR.get() {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let mut command = tokio::process::Command::new(exe);
    command.arg("serve");
    for (name, _) in std::env::vars() {
        if name.starts_with("EXECUTOR_") {
            command.env_remove(name);
        }
    }
    for (k, v) in settings {
        command.env(format!("EXECUTOR_{k}"), v);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the executor")
}

/// The executor as a child process of the bench.
pub struct ChildExecutor {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub api_url: String,
    /// Its `EXECUTOR_*` settings, to start it again on the same data directory.
    settings: HashMap<String, String>,
}

pub async fn start_executor(
    devnet: &Devnet,
    mode: SandboxMode,
    capacity: usize,
    dir: &Path,
    log: Arc<StageLog>,
    extra: &[(&str, &str)],
) -> Result<ChildExecutor> {
    let exe_dir = dir.join("executor");
    std::fs::create_dir_all(&exe_dir)?;
    // The scale part journals jobs for this key before the executor starts.
    if !exe_dir.join("enclave.key").exists() {
        EnclaveKey::generate(&exe_dir.join("enclave.key"))?;
    }
    let port = free_port()?;
    let admin_port = free_port()?;
    let mut settings = devnet.executor_settings(
        &exe_dir,
        &ExecutorOptions {
            account: 1,
            job_capacity: capacity,
            api_port: port,
            admin_port,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    );
    settings.insert("SANDBOX_MODE".into(), format!("{mode:?}").to_lowercase());
    settings.insert("LOG_FORMAT".into(), "json".into());
    settings.insert("LOG_LEVEL".into(), "warn,job_stage=debug".into());
    let mut executor = ChildExecutor {
        child: spawn_serving(&settings, &log)?,
        pid: 0,
        api_url: format!("http://127.0.0.1:{port}"),
        settings,
    };
    executor.pid = executor.child.id().unwrap_or_default();
    wait_listening(&executor.api_url).await?;
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    devnet.enroll(&executor.api_url, &admin_url, 1).await?;
    wait_for_chain_status(&executor.api_url, "serving", Duration::from_secs(30)).await?;
    Ok(executor)
}

/// Starts a stopped executor again on its data directory (it is enrolled already): returns
/// once it follows the chain again.
pub async fn restart_executor(executor: &mut ChildExecutor, log: &Arc<StageLog>) -> Result<()> {
    executor.child = spawn_serving(&executor.settings, log)?;
    executor.pid = executor.child.id().unwrap_or_default();
    wait_listening(&executor.api_url).await?;
    wait_for_chain_status(&executor.api_url, "serving", Duration::from_secs(30)).await
}

fn spawn_serving(
    settings: &HashMap<String, String>,
    log: &Arc<StageLog>,
) -> Result<tokio::process::Child> {
    let mut child = spawn_executor(settings.clone(), Stdio::piped())?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no executor stderr"))?;
    tokio::spawn(read_log(stderr, log.clone()));
    Ok(child)
}

async fn wait_listening(api_url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{api_url}/")).await.is_err() {
        if Instant::now() > deadline {
            bail!("the executor did not start listening on {api_url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub async fn stop_executor(executor: &mut ChildExecutor) {
    // SIGTERM: a graceful stop removes the slots' cgroups.
    // SAFETY: plain kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(executor.pid as libc::pid_t, libc::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(40), executor.child.wait())
        .await
        .is_err()
    {
        eprintln!(
            "[bench] executor at {} did not stop; killing it",
            executor.api_url
        );
        let _ = executor.child.kill().await;
    }
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
