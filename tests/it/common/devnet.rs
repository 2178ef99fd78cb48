//! A devnet (anvil and the dev contracts) for the integration tests that drive whole executors.
#![allow(dead_code)]

use std::path::Path;

use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::devnet::{Devnet, DevnetOptions};

/// Starts a devnet in `dir` whose Jobs has `execution_buffer_secs` of buffer and selects
/// `executors_to_select` executors per job. `RUST_LOG` shows the executors' logs on failure.
pub async fn devnet(dir: &Path, execution_buffer_secs: u64, executors_to_select: u8) -> Devnet {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    Devnet::start(DevnetOptions {
        anvil_port: None,
        deploy: DeployParams {
            execution_buffer_secs,
            executors_to_select,
            ..DeployParams::default()
        },
        work_dir: dir.to_path_buf(),
    })
    .await
    .expect("devnet starts")
}
