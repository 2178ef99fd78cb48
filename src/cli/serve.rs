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
    let runtime = match tokio::runtime::Runtime::new() {
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
