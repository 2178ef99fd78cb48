//! The `serve` command (the default): load the configuration, set up logging and run the
//! executor (`bootstrap::run`) until it stops.

use std::path::Path;
use std::process::ExitCode;

use serverless_executor::config::Config;

pub fn run(config_file: Option<&Path>) -> ExitCode {
    let config = match Config::load(config_file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    super::init_logging(&config.log_level, config.log_format);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serverless_executor::bootstrap::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One async worker unless `TOKIO_WORKER_THREADS` says otherwise. The executor's own work per
/// job is a few milliseconds of I/O-bound bookkeeping (the jobs run in workerd): one worker does
/// it with fewer wake-ups across threads, and what may wait for the disk (flushes, long scans)
/// hands the worker's other tasks to another thread meanwhile (`effects::off_worker`).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    builder.enable_all().build()
}
