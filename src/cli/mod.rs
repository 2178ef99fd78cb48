//! The command line: one module per command (`serve`, the default; `keygen`; `devnet`; `client`;
//! `bench`). This module owns the argument tree and hands each command to its module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serverless_executor::config::LogFormat;

mod bench;
mod client;
mod devnet;
mod keygen;
mod serve;

#[derive(Parser)]
#[command(
    name = "serverless-executor",
    version,
    about = "Runs Oyster Serverless JavaScript jobs in workerd and answers them on chain"
)]
pub struct Cli {
    /// Optional TOML file with settings (environment variables override it).
    #[arg(long, global = true, env = "EXECUTOR_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the executor (the default).
    Serve,
    /// Write a new enclave key file (mode 0600) and print its address.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, default_value = "enclave.key")]
        out: PathBuf,
    },
    /// Start a local devnet: anvil, the dev contracts, a registered executor and a demo job.
    Devnet(devnet::DevnetArgs),
    /// Measure sandbox latency, end-to-end latency and throughput on a local devnet, in
    /// each sandbox mode; prints markdown tables (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Job-author and owner commands: deploy code, run a job (paying its escrow), register an
    /// executor.
    #[command(subcommand)]
    Client(client::ClientCommand),
}

fn init_logging(level: &str, format: LogFormat) {
    serverless_executor::logging::init(level, format);
}

/// Runs a command on a fresh runtime with logging at `level` (or `RUST_LOG`).
fn run_async<F, Fut>(level: &str, command: F) -> ExitCode
where
    F: FnOnce(()) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    init_logging(&level, LogFormat::Text);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command the command line names.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Keygen { out } => keygen::run(&out),
        Command::Devnet(args) => run_async("info", |_| devnet::run_devnet(args)),
        Command::Bench(args) => run_async("warn", |_| bench::run_bench(args)),
        Command::Client(command) => run_async("warn", |_| client::run_client(command)),
        Command::Serve => serve::run(cli.config.as_deref()),
    }
}
