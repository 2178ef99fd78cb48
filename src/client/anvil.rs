//! A local anvil devnet: spawned from the binary `tools/install.sh` installs (or `ANVIL_PATH`),
//! on a free port, ready once it answers `eth_chainId`, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ethers::providers::{Http, Middleware, Provider};
use ethers::types::U256;

use super::dev_accounts::DEV_KEYS;

/// The chain id anvil uses by default.
pub const ANVIL_CHAIN_ID: u64 = 31337;

/// How long anvil may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with a fresh free port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A running anvil; killed when dropped.
pub struct Anvil {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl std::fmt::Debug for Anvil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Anvil({})", self.http_url())
    }
}

/// The anvil binary: `ANVIL_PATH`, else the one `tools/install.sh` installs.
pub fn anvil_path() -> PathBuf {
    match std::env::var_os("ANVIL_PATH") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

impl Anvil {
    /// Starts anvil on `port` (a free one when None), mining every `block_time` seconds
    /// (on every transaction when None).
    pub async fn start(port: Option<u16>, block_time: Option<u64>) -> Result<Anvil> {
        let path = anvil_path();
        if !path.exists() {
            bail!(
                "anvil not found at {} (run `bash tools/install.sh`, or set ANVIL_PATH)",
                path.display()
            );
        }
        let attempts = if port.is_some() { 1 } else { PORT_ATTEMPTS };
        let mut last_error = anyhow!("anvil did not start");
        for _ in 0..attempts {
            let port = match port {
                Some(port) => port,
                None => free_port()?,
            };
            match Self::spawn(&path, port, block_time).await {
                Ok(anvil) => return Ok(anvil),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn spawn(path: &PathBuf, port: u16, block_time: Option<u64>) -> Result<Anvil> {
        let log_path =
            std::env::temp_dir().join(format!("anvil-{}-{port}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new(path);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(seconds) = block_time {
            command.args(["--block-time", &seconds.to_string()]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot run {}", path.display()))?;
        // From here on, dropping `anvil` kills the process.
        let mut anvil = Anvil {
            child,
            port,
            log_path,
        };
        let provider = Provider::<Http>::try_from(anvil.http_url())?;
        let started = Instant::now();
        loop {
            if let Some(status) = anvil.child.try_wait()? {
                bail!(
                    "anvil exited ({status}) on port {port}: {}",
                    anvil.log_tail()
                );
            }
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), provider.get_chainid()).await
            {
                return Ok(anvil);
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "anvil on port {port} did not answer within {READY_TIMEOUT:?}: {}",
                    anvil.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn chain_id(&self) -> u64 {
        ANVIL_CHAIN_ID
    }

    /// The private key (0x hex) of default account `index` (0..10).
    pub fn key(&self, index: usize) -> &'static str {
        DEV_KEYS[index % DEV_KEYS.len()]
    }

    pub fn keys(&self) -> &'static [&'static str; 10] {
        &DEV_KEYS
    }

    /// Moves the chain's clock forward (applies to the next block).
    pub async fn increase_time(&self, seconds: u64) -> Result<()> {
        let provider = Provider::<Http>::try_from(self.http_url())?;
        provider
            .request::<_, serde_json::Value>("evm_increaseTime", [U256::from(seconds)])
            .await
            .context("evm_increaseTime")?;
        Ok(())
    }

    /// Mines one block now.
    pub async fn mine(&self) -> Result<()> {
        let provider = Provider::<Http>::try_from(self.http_url())?;
        provider
            .request::<_, serde_json::Value>("evm_mine", ())
            .await
            .context("evm_mine")?;
        Ok(())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}
