//! Command line: parse, set up logging, then hand over to `bootstrap` (or a client command).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "cli/bench/mod.rs"]
mod bench;
#[path = "cli/devnet.rs"]
mod devnet;
use serverless_executor::config::{Config, LogFormat};
use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::effects::signer::EnclaveKey;

#[derive(Parser)]
#[command(
    name = "serverless-executor",
    version,
    about = "Runs Oyster Serverless JavaScript jobs in workerd and answers them on chain"
)]
struct Cli {
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
    Client(devnet::ClientCommand),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Keygen { out } => match EnclaveKey::generate(&out) {
            Ok(key) => {
                println!("{:?}", key.address());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Devnet(args) => run_async("info", |_| devnet::run_devnet(args)),
        Command::Bench(args) => run_async("warn", |_| bench::run_bench(args)),
        Command::Client(command) => run_async("warn", |_| devnet::run_client(command)),
        Command::Serve => {
            let config = match Config::load(cli.config.as_deref()) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("error: configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log_level, config.log_format);
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
    }
}
