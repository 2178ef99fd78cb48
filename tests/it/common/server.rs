//! Executors started inside the test process on ephemeral ports (no chain): the settings every
//! such test shares, and a cgroup parent of their own so that one's shutdown spares the others.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serverless_executor::bootstrap::{self, Running};
use serverless_executor::config::Config;
use serverless_executor::effects::signer::EnclaveKey;

/// Numbers the executors of this process (each gets its own cgroup parent).
static NEXT_SERVER: AtomicUsize = AtomicUsize::new(0);

/// The settings of an executor in `dir` (key file, data and sandbox directories, ephemeral
/// ports, four jobs), with `overrides` applied last.
pub fn config(dir: &Path, overrides: &[(&str, &str)]) -> Config {
    let mut raw: HashMap<String, String> = [
        ("PORT", "0".to_string()),
        ("ADMIN_PORT", "0".to_string()),
        ("SECRET_LISTEN_ADDR", "127.0.0.1:0".to_string()),
        (
            "ENCLAVE_KEY_FILE",
            dir.join("enclave.key").display().to_string(),
        ),
        ("DATA_DIR", dir.join("data").display().to_string()),
        ("SANDBOX_DIR", dir.join("sandbox").display().to_string()),
        ("JOB_CAPACITY", "4".to_string()),
        (
            "CGROUP_PARENT",
            format!(
                "serverless-executor-test-{}-{}",
                std::process::id(),
                NEXT_SERVER.fetch_add(1, Ordering::Relaxed)
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        raw.insert(k.to_string(), v.to_string());
    }
    Config::from_map(&raw).expect("test config is valid")
}

/// Starts an executor in `dir` (making its enclave key first if there is none).
pub async fn start(dir: &Path, overrides: &[(&str, &str)]) -> Running {
    if !dir.join("enclave.key").exists() {
        EnclaveKey::generate(&dir.join("enclave.key")).unwrap();
    }
    bootstrap::start(config(dir, overrides))
        .await
        .expect("executor starts")
}
