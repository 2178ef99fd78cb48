//! Every setting of the executor: read from `EXECUTOR_*` environment variables (and optionally a
//! TOML file) through the `config` crate, validated once at start with errors naming the variable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ethers::types::Address;
use thiserror::Error;

use crate::domain::model::Protocol;

/// The prefix of every environment variable.
pub const ENV_PREFIX: &str = "EXECUTOR";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: String, reason: String },
    #[error("configuration file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Who user code may reach over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressPolicy {
    /// Public internet addresses only (never loopback, private, link-local or metadata).
    Public,
    /// No network at all.
    None,
}

/// How the sandbox runs jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// A new workerd process for every job.
    Process,
    /// One warm workerd per slot; each job in a fresh isolate of it (Worker Loader).
    Warm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The sandbox's limits and where its binary lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    pub workerd_path: PathBuf,
    pub mode: SandboxMode,
    /// Memory limit per slot, bytes.
    pub slot_memory_bytes: u64,
    /// CPU share per slot, percent of one core (1..=100 × cores).
    pub slot_cpu_percent: u32,
    /// Largest output, bytes.
    pub output_limit_bytes: usize,
    pub egress: EgressPolicy,
    /// Parent cgroup (relative to each controller's root) under which slots are made.
    pub cgroup_parent: String,
    /// Where each run's config and sockets are written (and removed afterwards).
    pub work_dir: PathBuf,
    /// Separate uid and gid workerd runs as (None: the executor's own).
    pub sandbox_user: Option<(u32, u32)>,
    /// Hidden from workerd: the data directory and the enclave key file.
    pub hidden_paths: Vec<PathBuf>,
    /// Serve (be `ready`) even when slot limits cannot be enforced.
    pub allow_unlimited_slots: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    pub rpc_http_url: String,
    pub rpc_ws_url: String,
    pub chain_id: u64,
    /// Which contract generation the addresses belong to.
    pub protocol: Protocol,
    /// The registry the enclave registers on: v2's Executors, or the TEE generation's TeeManager
    /// (`EXECUTOR_TEE_MANAGER_ADDRESS` lands here in tee mode).
    pub executors_address: Address,
    pub jobs_address: Address,
    pub user_code_address: Address,
    /// `EXECUTION_BUFFER_TIME` of the Jobs contract, seconds.
    pub execution_buffer_secs: u64,
    /// `NO_OF_NODES_TO_SELECT` of the Jobs contract.
    pub selected_executors: u64,
    /// Size of the codehash → source cache.
    pub code_cache_size: usize,
    /// The first block to read when no cursor is persisted yet.
    pub start_block: Option<u64>,
}

impl ChainConfig {
    /// Whether contract addresses are set; without them the executor serves its API only.
    pub fn is_configured(&self) -> bool {
        !self.executors_address.is_zero()
            && !self.jobs_address.is_zero()
            && !self.user_code_address.is_zero()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen_addr: IpAddr,
    pub port: u16,
    pub enclave_key_file: PathBuf,
    pub data_dir: PathBuf,
    pub job_capacity: usize,
    /// Sandbox slots (at most `job_capacity`): jobs beyond them wait in the queue.
    pub slots: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    /// How long SIGTERM/SIGINT waits for running jobs and their outputs, seconds.
    pub shutdown_grace_secs: u64,
    /// How long handling chain logs may fail on the store before the process exits, seconds.
    pub store_failure_limit_secs: u64,
    /// Not ready while the follower is more than this many blocks behind the chain head.
    pub max_head_lag_blocks: u64,
    pub chain: ChainConfig,
    /// TEE generation: the SecretManager contract (None in v2 mode).
    pub secret_manager_address: Option<Address>,
    /// TEE generation: the storage capacity announced on registration, bytes.
    pub storage_capacity: u64,
    pub secrets: SecretsConfig,
    pub sandbox: SandboxConfig,
    pub admin: AdminConfig,
    pub gas: GasConfig,
    pub public: PublicConfig,
}

/// The built-in secret store: where owners inject secrets, and SecretManager's timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsConfig {
    /// Where `POST /inject-secret` listens (None: not served).
    pub listen_addr: Option<std::net::SocketAddr>,
    /// Overrides of SecretManager's `ACKNOWLEDGEMENT_TIMEOUT` and `MARK_ALIVE_TIMEOUT`, seconds
    /// (None: read from the chain).
    pub ack_timeout_secs: Option<u64>,
    pub mark_alive_timeout_secs: Option<u64>,
}

/// Limits of the public listener, per client address (an IPv6 client is its /64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicConfig {
    /// Requests of one client in progress at once; more get 429.
    pub max_concurrent_per_client: usize,
    /// Requests per second one client may send on average (0: no rate limit).
    pub rate_per_client: u32,
    /// Requests one client may send at once above the rate.
    pub rate_burst: u32,
    /// Whether the public listener serves the job routes (`/jobs`, `/jobs/{id}`).
    pub jobs_api: bool,
}

/// What the executor is willing to pay for its transactions, and to whom it refuses service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GasConfig {
    /// The highest gas limit of an output transaction.
    pub max_output_gas: u64,
    /// No fee field above this, in wei (None: no cap).
    pub max_fee_per_gas: Option<ethers::types::U256>,
    /// How long fee data read from the node is reused, ms (0: never).
    pub fee_cache_ms: u64,
    /// Job owners whose jobs are refused.
    pub denied_job_owners: Vec<Address>,
}

/// The operator (admin) listener and how owner-signed configuration is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen_addr: IpAddr,
    pub port: u16,
    /// Oldest accepted owner signature on a mutable-config change, seconds.
    pub signature_max_age_secs: u64,
    /// Accept unsigned mutable-config changes after the owner is set (old tooling only).
    pub allow_unsigned: bool,
    /// Host names (besides loopback ones) the admin listener answers to.
    pub allowed_hosts: Vec<String>,
}

/// Each variable (without prefix), its default and its meaning; `.env.example` and the README
/// list the same. Tests check that `.env.example` and the README's table name them all.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("LISTEN_ADDR", "127.0.0.1", "address the HTTP API binds to"),
    ("PORT", "6001", "port of the HTTP API"),
    (
        "ENCLAVE_KEY_FILE",
        "enclave.key",
        "file with the raw 32-byte enclave secret key",
    ),
    (
        "DATA_DIR",
        "data",
        "directory of the sled store (config, cursor, job journal)",
    ),
    (
        "JOB_CAPACITY",
        "20",
        "jobs taken at once, announced on registration",
    ),
    (
        "SLOTS",
        "",
        "sandboxes run at once (empty: JOB_CAPACITY); with fewer, jobs queue earliest deadline first",
    ),
    (
        "LOG_LEVEL",
        "info",
        "tracing filter, e.g. info or serverless_executor=debug",
    ),
    ("LOG_FORMAT", "text", "log format: text or json"),
    (
        "RPC_HTTP_URL",
        "http://127.0.0.1:8545",
        "JSON-RPC endpoint over HTTP",
    ),
    (
        "RPC_WS_URL",
        "ws://127.0.0.1:8545",
        "JSON-RPC endpoint over WebSocket (log subscription)",
    ),
    ("CHAIN_ID", "31337", "chain id used to sign transactions"),
    (
        "PROTOCOL",
        "v2",
        "contract generation: v2 (Executors, Jobs, UserCode) or tee (TeeManager, SecretManager, Jobs with secrets, UserCode)",
    ),
    (
        "EXECUTORS_ADDRESS",
        "0x0000000000000000000000000000000000000000",
        "Executors contract",
    ),
    (
        "JOBS_ADDRESS",
        "0x0000000000000000000000000000000000000000",
        "Jobs contract",
    ),
    (
        "USER_CODE_ADDRESS",
        "0x0000000000000000000000000000000000000000",
        "UserCode contract",
    ),
    (
        "TEE_MANAGER_ADDRESS",
        "",
        "tee only (required): TeeManager contract, in place of EXECUTORS_ADDRESS",
    ),
    (
        "SECRET_MANAGER_ADDRESS",
        "",
        "tee only (required): SecretManager contract",
    ),
    (
        "STORAGE_CAPACITY",
        "100000000",
        "tee only: secret storage announced on registration, bytes; must be at least SecretManager.GLOBAL_MAX_SECRET_SIZE",
    ),
    (
        "EXECUTION_BUFFER_TIME",
        "60",
        "Jobs.EXECUTION_BUFFER_TIME in seconds",
    ),
    ("NUM_SELECTED_EXECUTORS", "3", "Jobs.NO_OF_NODES_TO_SELECT"),
    (
        "CODE_CACHE_SIZE",
        "100",
        "number of job sources kept in memory, by codehash",
    ),
    (
        "START_BLOCK",
        "",
        "first block to follow when no cursor is stored (empty: 256 blocks below the head)",
    ),
    (
        "WORKERD_PATH",
        "",
        "workerd binary (empty: the one tools/ installs)",
    ),
    (
        "SANDBOX_MODE",
        "warm",
        "warm: one workerd per slot, a fresh isolate per job; process: a new workerd per job",
    ),
    ("SLOT_MEMORY_MB", "100", "memory limit of each slot, MiB"),
    (
        "SLOT_CPU_PERCENT",
        "50",
        "CPU share of each slot, percent of one core",
    ),
    (
        "OUTPUT_LIMIT_BYTES",
        "20480",
        "largest output; larger gives error 5",
    ),
    (
        "EGRESS",
        "public",
        "what user code may fetch: public (public internet only) or none",
    ),
    (
        "CGROUP_PARENT",
        "serverless-executor",
        "parent cgroup of the slots",
    ),
    (
        "ALLOW_UNLIMITED_SLOTS",
        "false",
        "be ready and run jobs even when slot limits (cgroups) cannot be enforced",
    ),
    (
        "SANDBOX_UID",
        "",
        "uid workerd runs as, set with SANDBOX_GID (empty: the executor's own; needs root)",
    ),
    (
        "SANDBOX_GID",
        "",
        "gid workerd runs as, set with SANDBOX_UID",
    ),
    (
        "SHUTDOWN_GRACE",
        "30",
        "seconds SIGTERM/SIGINT waits for running jobs to finish and submit before exiting",
    ),
    (
        "STORE_FAILURE_LIMIT",
        "60",
        "seconds the store may keep failing while chain logs are handled (retried with backoff, not ready) before the process exits non-zero",
    ),
    (
        "MAX_HEAD_LAG",
        "50",
        "not ready while the chain head is more than this many blocks past the last handled block",
    ),
    (
        "SANDBOX_DIR",
        "",
        "scratch directory of sandbox runs (empty: the system temp dir)",
    ),
    // Public listener limits.
    (
        "PUBLIC_MAX_CONCURRENT_PER_CLIENT",
        "8",
        "public API requests one client (IP address; IPv6: its /64) may have in progress; more get 429",
    ),
    (
        "PUBLIC_RATE_PER_CLIENT",
        "50",
        "public API requests per second one client may send on average (0: no limit); more get 429 with Retry-After",
    ),
    (
        "PUBLIC_RATE_BURST",
        "100",
        "public API requests one client may send at once above that rate",
    ),
    (
        "PUBLIC_JOBS_API",
        "true",
        "serve the job status routes (/jobs, /jobs/{id}) on the public listener",
    ),
    // Admin listener (operator routes) and owner-signed configuration.
    (
        "ADMIN_LISTEN_ADDR",
        "127.0.0.1",
        "address the admin (operator) API binds to",
    ),
    ("ADMIN_PORT", "6002", "port of the admin (operator) API"),
    (
        "ADMIN_SIGNATURE_MAX_AGE",
        "300",
        "oldest accepted owner signature on /mutable-config, seconds",
    ),
    (
        "ADMIN_ALLOW_UNSIGNED",
        "false",
        "accept unsigned /mutable-config once the owner is set (old tooling only)",
    ),
    (
        "ADMIN_ALLOWED_HOSTS",
        "",
        "comma-separated Host names the admin API answers to besides localhost and loopback addresses",
    ),
    // Gas: what the executor pays, and for whom.
    (
        "MAX_OUTPUT_GAS",
        "3000000",
        "highest gas limit of an output transaction (room for a result callback that burns all it gets)",
    ),
    (
        "MAX_FEE_PER_GAS_GWEI",
        "200",
        "highest fee per gas of any transaction, gwei (decimals allowed; empty: no cap); above it the executor waits",
    ),
    (
        "FEE_CACHE_MS",
        "2000",
        "how long fee data read from the node is reused, ms (0: read for every transaction); a new head brings its base fee, a fee refusal drops it, replacements always ask",
    ),
    (
        "DENIED_JOB_OWNERS",
        "",
        "comma-separated job owner addresses whose jobs are refused (not run; the chain slashes for them)",
    ),
    // The built-in secret store (TEE generation).
    (
        "SECRET_LISTEN_ADDR",
        "127.0.0.1:6003",
        "address:port of the secret listener (POST /inject-secret) for secret owners, served in tee mode (empty: off)",
    ),
    (
        "SECRET_ACK_TIMEOUT",
        "",
        "SecretManager.ACKNOWLEDGEMENT_TIMEOUT override, seconds (empty: read from the chain)",
    ),
    (
        "SECRET_MARK_ALIVE_TIMEOUT",
        "",
        "SecretManager.MARK_ALIVE_TIMEOUT override, seconds (empty: read from the chain)",
    ),
];

/// The workerd binary that `tools/install.sh` installs, relative to the crate.
pub fn default_workerd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tools/node_modules/@cloudflare/workerd-linux-64/bin/workerd")
}

impl Config {
    /// Reads the process environment, and `file` if given.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path.to_path_buf())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(config::Environment::with_prefix(ENV_PREFIX));
        let built = builder.build().map_err(|e| ConfigError::File {
            path: file.map(|p| p.display().to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        let table: HashMap<String, config::Value> =
            built.try_deserialize().map_err(|e| ConfigError::File {
                path: file.map(|p| p.display().to_string()).unwrap_or_default(),
                reason: e.to_string(),
            })?;
        let mut raw = HashMap::new();
        for (key, value) in table {
            let key = key.to_ascii_uppercase();
            // EXECUTOR_CONFIG_FILE names the file itself (a command-line setting).
            if key != "CONFIG_FILE" {
                raw.insert(key, value.to_string());
            }
        }
        Self::from_map(&raw)
    }

    /// Builds and validates from variable names without prefix (`PORT`, …) to raw values.
    pub fn from_map(raw: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let known: Vec<&str> = VARIABLES.iter().map(|(n, _, _)| *n).collect();
        if let Some(unknown) = raw.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(invalid(unknown, "unknown setting (see .env.example)"));
        }
        let r = Reader { raw };
        let workerd_path = match r.text("WORKERD_PATH") {
            s if s.is_empty() => default_workerd_path(),
            s => PathBuf::from(s),
        };
        let sandbox_dir = match r.text("SANDBOX_DIR") {
            s if s.is_empty() => std::env::temp_dir().join("serverless-executor"),
            s => PathBuf::from(s),
        };
        let job_capacity: usize = r.number("JOB_CAPACITY", 1, 10_000)?;
        let slots = match r.text("SLOTS") {
            s if s.is_empty() => job_capacity,
            _ => r.number("SLOTS", 1, job_capacity)?,
        };
        let slot_memory_mb: u64 = r.number("SLOT_MEMORY_MB", 16, 1 << 20)?;
        let sandbox_user = match (
            r.text("SANDBOX_UID").is_empty(),
            r.text("SANDBOX_GID").is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some((
                r.number("SANDBOX_UID", 1, u32::MAX - 1)?,
                r.number("SANDBOX_GID", 1, u32::MAX - 1)?,
            )),
            (false, true) => return Err(invalid("SANDBOX_GID", "must be set with SANDBOX_UID")),
            (true, false) => return Err(invalid("SANDBOX_UID", "must be set with SANDBOX_GID")),
        };
        let enclave_key_file = PathBuf::from(r.non_empty("ENCLAVE_KEY_FILE")?);
        let data_dir = PathBuf::from(r.non_empty("DATA_DIR")?);
        let start_block = match r.text("START_BLOCK") {
            s if s.is_empty() => None,
            _ => Some(r.number("START_BLOCK", 0, u64::MAX)?),
        };
        let protocol: Protocol = r.parse("PROTOCOL", "v2 or tee")?;
        let (executors_address, secret_manager_address) = r.registry(protocol)?;
        Ok(Config {
            listen_addr: r.parse("LISTEN_ADDR", "an IP address")?,
            port: r.number("PORT", 0, u16::MAX)?,
            enclave_key_file: enclave_key_file.clone(),
            data_dir: data_dir.clone(),
            job_capacity,
            slots,
            log_level: r.non_empty("LOG_LEVEL")?,
            shutdown_grace_secs: r.number("SHUTDOWN_GRACE", 0, 3600)?,
            store_failure_limit_secs: r.number("STORE_FAILURE_LIMIT", 1, 86_400)?,
            max_head_lag_blocks: r.number("MAX_HEAD_LAG", 1, 1_000_000)?,
            log_format: match r.text("LOG_FORMAT").as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid("LOG_FORMAT", "must be text or json")),
            },
            chain: ChainConfig {
                rpc_http_url: r.url("RPC_HTTP_URL", &["http://", "https://"])?,
                rpc_ws_url: r.url("RPC_WS_URL", &["ws://", "wss://"])?,
                chain_id: r.number("CHAIN_ID", 1, u64::MAX)?,
                protocol,
                executors_address,
                jobs_address: r.address("JOBS_ADDRESS")?,
                user_code_address: r.address("USER_CODE_ADDRESS")?,
                execution_buffer_secs: r.number("EXECUTION_BUFFER_TIME", 0, 86_400)?,
                selected_executors: r.number("NUM_SELECTED_EXECUTORS", 1, 255)?,
                code_cache_size: r.number("CODE_CACHE_SIZE", 1, 1_000_000)?,
                start_block,
            },
            secret_manager_address,
            storage_capacity: r.number("STORAGE_CAPACITY", 1, u64::MAX)?,
            secrets: SecretsConfig {
                listen_addr: match r.text("SECRET_LISTEN_ADDR") {
                    v if v.is_empty() => None,
                    _ => Some(r.parse("SECRET_LISTEN_ADDR", "an address:port")?),
                },
                ack_timeout_secs: r.optional_number("SECRET_ACK_TIMEOUT", 1, 86_400 * 365)?,
                mark_alive_timeout_secs: r.optional_number(
                    "SECRET_MARK_ALIVE_TIMEOUT",
                    2,
                    86_400 * 365,
                )?,
            },
            sandbox: SandboxConfig {
                workerd_path,
                mode: match r.text("SANDBOX_MODE").as_str() {
                    "process" => SandboxMode::Process,
                    "warm" => SandboxMode::Warm,
                    _ => return Err(invalid("SANDBOX_MODE", "must be process or warm")),
                },
                slot_memory_bytes: slot_memory_mb * 1024 * 1024,
                slot_cpu_percent: r.number("SLOT_CPU_PERCENT", 1, 100 * 1024)?,
                output_limit_bytes: r.number("OUTPUT_LIMIT_BYTES", 1, 64 * 1024 * 1024)?,
                egress: match r.text("EGRESS").as_str() {
                    "public" => EgressPolicy::Public,
                    "none" => EgressPolicy::None,
                    _ => return Err(invalid("EGRESS", "must be public or none")),
                },
                cgroup_parent: {
                    let parent = r.non_empty("CGROUP_PARENT")?;
                    if parent
                        .split('/')
                        .any(|part| part.is_empty() || part == "..")
                    {
                        return Err(invalid(
                            "CGROUP_PARENT",
                            "must be a relative path without '..'",
                        ));
                    }
                    parent
                },
                work_dir: sandbox_dir,
                sandbox_user,
                hidden_paths: vec![data_dir, enclave_key_file],
                allow_unlimited_slots: r.boolean("ALLOW_UNLIMITED_SLOTS")?,
            },
            gas: GasConfig {
                max_output_gas: r.number("MAX_OUTPUT_GAS", 100_000, 1_000_000_000)?,
                max_fee_per_gas: match r.text("MAX_FEE_PER_GAS_GWEI") {
                    v if v.is_empty() => None,
                    v => Some(r.gwei("MAX_FEE_PER_GAS_GWEI", &v)?),
                },
                fee_cache_ms: r.number("FEE_CACHE_MS", 0, 60_000)?,
                denied_job_owners: r.addresses("DENIED_JOB_OWNERS")?,
            },
            admin: AdminConfig {
                listen_addr: r.parse("ADMIN_LISTEN_ADDR", "an IP address")?,
                port: r.number("ADMIN_PORT", 0, u16::MAX)?,
                signature_max_age_secs: r.number("ADMIN_SIGNATURE_MAX_AGE", 1, 86_400)?,
                allow_unsigned: r.boolean("ADMIN_ALLOW_UNSIGNED")?,
                allowed_hosts: r.host_list("ADMIN_ALLOWED_HOSTS")?,
            },
            public: PublicConfig {
                max_concurrent_per_client: r.number(
                    "PUBLIC_MAX_CONCURRENT_PER_CLIENT",
                    1,
                    crate::routes::MAX_CONNECTIONS,
                )?,
                rate_per_client: r.number("PUBLIC_RATE_PER_CLIENT", 0, 1_000_000)?,
                rate_burst: r.number("PUBLIC_RATE_BURST", 1, 1_000_000)?,
                jobs_api: r.boolean("PUBLIC_JOBS_API")?,
            },
        })
    }

    /// The variable name as the operator writes it.
    pub fn var(name: &str) -> String {
        format!("{ENV_PREFIX}_{name}")
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: Config::var(name),
        reason: reason.into(),
    }
}

/// Reads one variable at a time, falling back to its default from `VARIABLES`.
struct Reader<'a> {
    raw: &'a HashMap<String, String>,
}

impl Reader<'_> {
    fn text(&self, name: &str) -> String {
        match self.raw.get(name) {
            Some(v) => v.trim().to_string(),
            None => VARIABLES
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, d, _)| d.to_string())
                .unwrap_or_default(),
        }
    }

    fn non_empty(&self, name: &str) -> Result<String, ConfigError> {
        let v = self.text(name);
        if v.is_empty() {
            return Err(invalid(name, "must not be empty"));
        }
        Ok(v)
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<T, ConfigError> {
        let v = self.text(name);
        v.parse()
            .map_err(|_| invalid(name, format!("'{v}' is not {what}")))
    }

    fn number<T>(&self, name: &str, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let v = self.text(name);
        let n: T = v
            .parse()
            .map_err(|_| invalid(name, format!("'{v}' is not a whole number")))?;
        if n < min || n > max {
            return Err(invalid(name, format!("{n} is outside {min}..={max}")));
        }
        Ok(n)
    }

    /// A number in `min..=max`, or None when empty.
    fn optional_number<T>(&self, name: &str, min: T, max: T) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        if self.text(name).is_empty() {
            return Ok(None);
        }
        self.number(name, min, max).map(Some)
    }

    fn boolean(&self, name: &str) -> Result<bool, ConfigError> {
        match self.text(name).to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            v => Err(invalid(name, format!("'{v}' is not true or false"))),
        }
    }

    /// A comma-separated list of host names or addresses (no ports, no spaces inside).
    fn host_list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        let mut hosts = Vec::new();
        for item in self.text(name).split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let valid = item.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
            });
            if !valid {
                return Err(invalid(
                    name,
                    format!("'{item}' is not a host name or address"),
                ));
            }
            hosts.push(item.to_ascii_lowercase());
        }
        Ok(hosts)
    }

    /// A positive amount of gwei (decimals allowed) in wei.
    fn gwei(&self, name: &str, v: &str) -> Result<ethers::types::U256, ConfigError> {
        let wei = match ethers::utils::parse_units(v, "gwei") {
            Ok(ethers::utils::ParseUnits::U256(wei)) => wei,
            Ok(ethers::utils::ParseUnits::I256(_)) => return Err(invalid(name, "must be above 0")),
            Err(_) => return Err(invalid(name, format!("'{v}' is not an amount of gwei"))),
        };
        if wei.is_zero() {
            return Err(invalid(name, "must be above 0"));
        }
        Ok(wei)
    }

    /// A comma-separated list of addresses (empty: none).
    fn addresses(&self, name: &str) -> Result<Vec<Address>, ConfigError> {
        self.text(name)
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                Self::parse_address(part)
                    .map_err(|reason| invalid(name, format!("'{part}': {reason}")))
            })
            .collect()
    }

    fn parse_address(v: &str) -> Result<Address, String> {
        let digits = v.strip_prefix("0x").unwrap_or(v);
        let bytes = hex::decode(digits).map_err(|_| "not a hex address".to_string())?;
        if bytes.len() != 20 {
            return Err(format!("an address has 20 bytes, this has {}", bytes.len()));
        }
        Ok(Address::from_slice(&bytes))
    }

    fn address(&self, name: &str) -> Result<Address, ConfigError> {
        let v = self.text(name);
        let digits = v.strip_prefix("0x").unwrap_or(&v);
        let bytes = hex::decode(digits)
            .map_err(|_| invalid(name, format!("'{v}' is not a hex address")))?;
        if bytes.len() != 20 {
            return Err(invalid(
                name,
                format!("an address has 20 bytes, '{v}' has {}", bytes.len()),
            ));
        }
        Ok(Address::from_slice(&bytes))
    }

    /// The registry address and the SecretManager of `protocol`: v2 takes EXECUTORS_ADDRESS and
    /// refuses the TEE ones; tee needs both TEE addresses and refuses EXECUTORS_ADDRESS (two
    /// registries would be ambiguous).
    fn registry(&self, protocol: Protocol) -> Result<(Address, Option<Address>), ConfigError> {
        let given = |name: &str| !self.text(name).is_empty();
        match protocol {
            Protocol::V2 => {
                for name in ["TEE_MANAGER_ADDRESS", "SECRET_MANAGER_ADDRESS"] {
                    if given(name) {
                        return Err(invalid(
                            name,
                            "is only used with EXECUTOR_PROTOCOL=tee (this executor is v2)",
                        ));
                    }
                }
                Ok((self.address("EXECUTORS_ADDRESS")?, None))
            }
            Protocol::Tee => {
                if !self.address("EXECUTORS_ADDRESS")?.is_zero() {
                    return Err(invalid(
                        "EXECUTORS_ADDRESS",
                        "is v2's registry; with EXECUTOR_PROTOCOL=tee set EXECUTOR_TEE_MANAGER_ADDRESS instead",
                    ));
                }
                let required = |name: &str| -> Result<Address, ConfigError> {
                    if !given(name) {
                        return Err(invalid(name, "is required with EXECUTOR_PROTOCOL=tee"));
                    }
                    let address = self.address(name)?;
                    if address.is_zero() {
                        return Err(invalid(name, "must not be the zero address"));
                    }
                    Ok(address)
                };
                let tee_manager = required("TEE_MANAGER_ADDRESS")?;
                let secret_manager = required("SECRET_MANAGER_ADDRESS")?;
                Ok((tee_manager, Some(secret_manager)))
            }
        }
    }

    fn url(&self, name: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let v = self.non_empty(name)?;
        if !schemes.iter().any(|s| v.starts_with(s)) || v.len() <= 8 {
            return Err(invalid(
                name,
                format!("'{v}' must start with {}", schemes.join(" or ")),
            ));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&raw)
    }

    #[test]
    fn defaults_are_valid() {
        let c = with(&[]).unwrap();
        assert_eq!(c.port, 6001);
        assert_eq!(c.job_capacity, 20);
        assert_eq!(c.slots, 20, "slots follow the job capacity");
        assert_eq!(c.sandbox.output_limit_bytes, 20480);
        assert_eq!(c.sandbox.slot_memory_bytes, 100 * 1024 * 1024);
        assert_eq!(c.sandbox.mode, SandboxMode::Warm);
        assert!(!c.chain.is_configured());
        assert!(
            c.admin.listen_addr.is_loopback(),
            "the admin API is local by default"
        );
        assert!(!c.admin.allow_unsigned);
        assert_eq!(c.secret_manager_address, None);
        assert_eq!(
            c.secrets.listen_addr,
            Some("127.0.0.1:6003".parse().unwrap()),
            "the secret listener is local by default"
        );
        assert_eq!(c.secrets.ack_timeout_secs, None);
    }

    #[test]
    fn gas_settings_parse_with_defaults() {
        let c = with(&[]).unwrap();
        assert_eq!(c.gas.max_output_gas, 3_000_000);
        assert_eq!(c.gas.fee_cache_ms, 2000);
        assert_eq!(
            c.gas.max_fee_per_gas,
            Some(ethers::types::U256::from(200_000_000_000u64))
        );
        assert!(c.gas.denied_job_owners.is_empty());
        let c = with(&[
            ("MAX_FEE_PER_GAS_GWEI", "0.5"),
            (
                "DENIED_JOB_OWNERS",
                " 0x00000000000000000000000000000000000000b1, 00000000000000000000000000000000000000B2 ",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.gas.max_fee_per_gas,
            Some(ethers::types::U256::from(500_000_000u64))
        );
        assert_eq!(
            c.gas.denied_job_owners,
            vec![
                Address::from_low_u64_be(0xb1),
                Address::from_low_u64_be(0xb2)
            ]
        );
        let uncapped = with(&[("MAX_FEE_PER_GAS_GWEI", "")]).unwrap();
        assert_eq!(uncapped.gas.max_fee_per_gas, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PORT", "70000"),
            ("PORT", "abc"),
            ("LISTEN_ADDR", "nowhere"),
            ("JOB_CAPACITY", "0"),
            ("SLOTS", "21"),
            ("SLOTS", "0"),
            ("JOBS_ADDRESS", "0x1234"),
            ("EXECUTORS_ADDRESS", "zz"),
            ("RPC_WS_URL", "http://x:1"),
            ("EGRESS", "some"),
            ("SANDBOX_MODE", "cold"),
            ("LOG_FORMAT", "xml"),
            ("CGROUP_PARENT", "../escape"),
            ("START_BLOCK", "-1"),
            ("ADMIN_LISTEN_ADDR", "localhost"),
            ("ADMIN_ALLOW_UNSIGNED", "maybe"),
            ("ADMIN_SIGNATURE_MAX_AGE", "0"),
            ("ADMIN_ALLOWED_HOSTS", "a.example, b/c"),
            ("ALLOW_UNLIMITED_SLOTS", "perhaps"),
            ("MAX_OUTPUT_GAS", "21000"),
            ("MAX_OUTPUT_GAS", "lots"),
            ("MAX_FEE_PER_GAS_GWEI", "0"),
            ("MAX_FEE_PER_GAS_GWEI", "-1"),
            ("MAX_FEE_PER_GAS_GWEI", "cheap"),
            ("FEE_CACHE_MS", "60001"),
            ("DENIED_JOB_OWNERS", "0x1234"),
            (
                "DENIED_JOB_OWNERS",
                "0x0000000000000000000000000000000000000001,nope",
            ),
            ("STORE_FAILURE_LIMIT", "0"),
            ("MAX_HEAD_LAG", "x"),
            ("PUBLIC_MAX_CONCURRENT_PER_CLIENT", "0"),
            ("PUBLIC_RATE_PER_CLIENT", "fast"),
            ("PUBLIC_RATE_BURST", "0"),
            ("PUBLIC_JOBS_API", "sometimes"),
            ("SECRET_MANAGER_ADDRESS", "0x12"),
            ("SECRET_LISTEN_ADDR", "127.0.0.1"),
            ("SECRET_ACK_TIMEOUT", "0"),
            ("SECRET_MARK_ALIVE_TIMEOUT", "soon"),
        ] {
            let err = with(&[(var, value)]).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("EXECUTOR_{var}:")),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn a_toml_file_sets_values_and_bad_ones_name_their_variable() {
        let dir = std::env::temp_dir().join(format!("executor-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "port = 7001\njob_capacity = 3\negress = \"none\"\n").unwrap();
        let c = Config::load(Some(&good)).unwrap();
        assert_eq!(
            (c.port, c.job_capacity, c.sandbox.egress),
            (7001, 3, EgressPolicy::None)
        );
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "job_capacity = \"many\"\n").unwrap();
        let err = Config::load(Some(&bad)).unwrap_err().to_string();
        assert!(err.starts_with("EXECUTOR_JOB_CAPACITY:"), "{err}");
        let missing = Config::load(Some(&dir.join("none.toml")))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("none.toml"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sandbox_user_is_both_ids_or_neither() {
        assert_eq!(with(&[]).unwrap().sandbox.sandbox_user, None);
        let c = with(&[("SANDBOX_UID", "10002"), ("SANDBOX_GID", "10003")]).unwrap();
        assert_eq!(c.sandbox.sandbox_user, Some((10002, 10003)));
        for (pairs, var) in [
            (&[("SANDBOX_UID", "10002")][..], "EXECUTOR_SANDBOX_GID:"),
            (&[("SANDBOX_GID", "10002")][..], "EXECUTOR_SANDBOX_UID:"),
            (
                &[("SANDBOX_UID", "0"), ("SANDBOX_GID", "1")][..],
                "EXECUTOR_SANDBOX_UID:",
            ),
            (
                &[("SANDBOX_UID", "1"), ("SANDBOX_GID", "x")][..],
                "EXECUTOR_SANDBOX_GID:",
            ),
        ] {
            let err = with(pairs).unwrap_err().to_string();
            assert!(err.starts_with(var), "{pairs:?}: {err}");
        }
        // The data directory and key file are what the sandbox must not see.
        let c = with(&[]).unwrap();
        assert_eq!(
            c.sandbox.hidden_paths,
            vec![PathBuf::from("data"), PathBuf::from("enclave.key")]
        );
    }

    #[test]
    fn the_tee_generation_takes_its_own_addresses() {
        let c = with(&[]).unwrap();
        assert_eq!(c.chain.protocol, Protocol::V2);
        assert_eq!(c.secret_manager_address, None);
        assert_eq!(c.storage_capacity, 100_000_000);
        let tee = [
            ("PROTOCOL", "tee"),
            (
                "TEE_MANAGER_ADDRESS",
                "0x00000000000000000000000000000000000000a1",
            ),
            (
                "SECRET_MANAGER_ADDRESS",
                "0x00000000000000000000000000000000000000a2",
            ),
            ("STORAGE_CAPACITY", "1000000"),
        ];
        let c = with(&tee).unwrap();
        assert_eq!(c.chain.protocol, Protocol::Tee);
        assert_eq!(c.chain.executors_address, Address::from_low_u64_be(0xa1));
        assert_eq!(
            c.secret_manager_address,
            Some(Address::from_low_u64_be(0xa2))
        );
        assert_eq!(c.storage_capacity, 1_000_000);
        for (missing, var) in [
            ("TEE_MANAGER_ADDRESS", "EXECUTOR_TEE_MANAGER_ADDRESS:"),
            ("SECRET_MANAGER_ADDRESS", "EXECUTOR_SECRET_MANAGER_ADDRESS:"),
        ] {
            let pairs: Vec<_> = tee.iter().copied().filter(|(k, _)| *k != missing).collect();
            let err = with(&pairs).unwrap_err().to_string();
            assert!(err.starts_with(var), "{err}");
            assert!(err.contains("required"), "{err}");
        }
        let mut both = tee.to_vec();
        both.push((
            "EXECUTORS_ADDRESS",
            "0x00000000000000000000000000000000000000a3",
        ));
        let err = with(&both).unwrap_err().to_string();
        assert!(err.starts_with("EXECUTOR_EXECUTORS_ADDRESS:"), "{err}");
        let err = with(&tee[1..]).unwrap_err().to_string();
        assert!(
            err.starts_with("EXECUTOR_TEE_MANAGER_ADDRESS:"),
            "v2 refuses: {err}"
        );
        for (var, value) in [
            ("PROTOCOL", "v3"),
            ("STORAGE_CAPACITY", "0"),
            ("STORAGE_CAPACITY", "lots"),
        ] {
            let err = with(&[(var, value)]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("EXECUTOR_{var}:")), "{err}");
        }
    }

    #[test]
    fn unknown_variables_are_refused() {
        let err = with(&[("PROT", "1")]).unwrap_err().to_string();
        assert!(err.contains("EXECUTOR_PROT"), "{err}");
    }

    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let example = include_str!("../.env.example");
        for (name, default, _) in VARIABLES {
            let line = format!("{}={}", Config::var(name), default);
            assert!(
                example.lines().any(|l| l.trim() == line),
                ".env.example lacks the line {line}"
            );
        }
    }

    #[test]
    fn readme_configuration_table_lists_every_variable() {
        let readme = include_str!("../README.md");
        for (name, default, _) in VARIABLES {
            let shown = if default.is_empty() {
                "(empty)".to_string()
            } else {
                format!("`{default}`")
            };
            let row = format!("| `{}` | {shown} |", Config::var(name));
            assert!(
                readme.lines().any(|l| l.starts_with(&row)),
                "README's configuration table lacks the row {row}"
            );
        }
    }
}
