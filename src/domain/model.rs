//! Plain data of the protocol: jobs, outcomes, error codes, registration, chain events and the
//! journal's job states. No behaviour beyond conversions; everything here is serialisable.

use ethers::types::{Address, H256, U256};
use serde::{Deserialize, Serialize};

/// The execution environment this executor serves (JavaScript on workerd).
pub const EXECUTOR_ENV: u8 = 1;

/// Marlin's published Jobs deletes a job's record at this many outputs.
pub const OUTPUTS_THAT_DELETE_A_JOB: usize = 3;

/// The protocol's `errorCode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ErrorCode {
    /// The code ran; the output is the worker's response body.
    Ok = 0,
    /// Code transaction not found, or sent to another contract than UserCode.
    CodeNotFound = 1,
    /// Calldata is not a valid `saveCodeInCallData(string,bytes)` or `saveCodeInCallData(string)` call.
    BadCalldata = 2,
    /// The code failed to load (syntax error, no default export).
    LoadFailed = 3,
    /// The job did not finish within its deadline.
    DeadlineExceeded = 4,
    /// The output is larger than the output limit.
    OutputTooLarge = 5,
}

impl ErrorCode {
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Ok,
            1 => Self::CodeNotFound,
            2 => Self::BadCalldata,
            3 => Self::LoadFailed,
            4 => Self::DeadlineExceeded,
            5 => Self::OutputTooLarge,
            _ => return None,
        })
    }
}

/// A job as announced by `JobCreated`, plus the block facts the window is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: U256,
    pub env: u8,
    pub owner: Address,
    pub codehash: H256,
    #[serde(with = "hex_bytes")]
    pub code_inputs: Vec<u8>,
    /// Execution budget in milliseconds.
    pub deadline_ms: u64,
    pub selected_executors: Vec<Address>,
    /// `execStartTime`: the timestamp (unix seconds) of the block that created the job.
    pub exec_start_time: u64,
    /// The `JobCreated` log that announced it (None in records written before it was kept, and
    /// in compact records).
    #[serde(default)]
    pub origin: Option<JobOrigin>,
    /// Set in a compact record (a job that does not select us, see `JobRecord::trimmed`): its
    /// owner, codehash, inputs, selected addresses and origin are not kept (zero or empty
    /// here); their digest and the number of selected executors stand in for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact: Option<JobDigest>,
    /// The TEE generation's `secretId`: the secret the job reads as `env.secret` (0: none, and
    /// always 0 in the v2 generation).
    #[serde(default, skip_serializing_if = "U256::is_zero")]
    pub secret_id: U256,
}

/// What a compact record keeps of a job's terms: enough to settle it and to tell it from
/// another job a reorg gave the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDigest {
    /// `Job::identity` of the full job, over its origin when it had one.
    pub identity: H256,
    /// Whether `identity` covers an origin (records older than origins have none).
    pub with_origin: bool,
    /// How many executors the job selected (counted up to 255: past 3 more change nothing).
    pub selected_count: u8,
}

/// Where a job was announced: its `JobCreated` log. A reorg can give a job id to another job,
/// so the id alone does not identify a job; the id with its origin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobOrigin {
    pub block_number: u64,
    pub block_hash: H256,
    pub tx_hash: H256,
    pub log_index: u64,
}

impl Job {
    /// The last moment (unix ms) at which the chain still accepts an output:
    /// `execStartTime*1000 + deadline + EXECUTION_BUFFER_TIME*1000`.
    pub fn window_end_ms(&self, execution_buffer_secs: u64) -> u64 {
        self.exec_start_time
            .saturating_mul(1000)
            .saturating_add(self.deadline_ms)
            .saturating_add(execution_buffer_secs.saturating_mul(1000))
    }

    /// Whether `enclave` is among the selected executors (never, for a compact record: only
    /// jobs that do not select us are compacted).
    pub fn selects(&self, enclave: Address) -> bool {
        self.selected_executors.contains(&enclave)
    }

    /// How many executors the job selected.
    pub fn selected_count(&self) -> usize {
        match self.compact {
            Some(digest) => usize::from(digest.selected_count),
            None => self.selected_executors.len(),
        }
    }

    /// Whether `output_count` outputs leave nothing to settle: every selected executor answered,
    /// or the published Jobs deleted the job (at its 3rd output, whatever it selected).
    pub fn fully_answered(&self, output_count: u8) -> bool {
        let count = usize::from(output_count);
        count >= self.selected_count() || count >= OUTPUTS_THAT_DELETE_A_JOB
    }

    /// A digest of what makes this job this job: id, env, owner, codehash, deadline, selected
    /// executors, `execStartTime` and, `with_origin` (and it has one), its creating log. Not the
    /// inputs: the origin's block hash already commits to them, and a final record has dropped
    /// them. For a full job only (a compact one keeps the digest it was given).
    pub fn identity(&self, with_origin: bool) -> H256 {
        let mut bytes = Vec::with_capacity(160 + 20 * self.selected_executors.len());
        bytes.extend_from_slice(b"serverless-executor job identity v1");
        let mut id = [0u8; 32];
        self.id.to_big_endian(&mut id);
        bytes.extend_from_slice(&id);
        bytes.push(self.env);
        bytes.extend_from_slice(self.owner.as_bytes());
        bytes.extend_from_slice(self.codehash.as_bytes());
        bytes.extend_from_slice(&self.deadline_ms.to_be_bytes());
        bytes.extend_from_slice(&self.exec_start_time.to_be_bytes());
        bytes.extend_from_slice(&(self.selected_executors.len() as u64).to_be_bytes());
        for executor in &self.selected_executors {
            bytes.extend_from_slice(executor.as_bytes());
        }
        // Only a TEE job with a secret adds its id, so v2 digests already journalled stay valid.
        if !self.secret_id.is_zero() {
            let mut secret = [0u8; 32];
            self.secret_id.to_big_endian(&mut secret);
            bytes.extend_from_slice(b"secret");
            bytes.extend_from_slice(&secret);
        }
        match self.origin.filter(|_| with_origin) {
            Some(origin) => {
                bytes.push(1);
                bytes.extend_from_slice(&origin.block_number.to_be_bytes());
                bytes.extend_from_slice(origin.block_hash.as_bytes());
                bytes.extend_from_slice(origin.tx_hash.as_bytes());
                bytes.extend_from_slice(&origin.log_index.to_be_bytes());
            }
            None => bytes.push(0),
        }
        H256(ethers::utils::keccak256(bytes))
    }

    /// This job as a compact record keeps it: id, env, deadline and `execStartTime` (the
    /// window), and the digest of the rest in place of the rest. Compacting twice changes nothing.
    pub fn compacted(self) -> Job {
        if self.compact.is_some() {
            return self;
        }
        let with_origin = self.origin.is_some();
        let digest = JobDigest {
            identity: self.identity(with_origin),
            with_origin,
            selected_count: u8::try_from(self.selected_executors.len()).unwrap_or(u8::MAX),
        };
        Job {
            id: self.id,
            env: self.env,
            owner: Address::zero(),
            codehash: H256::zero(),
            code_inputs: Vec::new(),
            deadline_ms: self.deadline_ms,
            selected_executors: Vec::new(),
            exec_start_time: self.exec_start_time,
            origin: None,
            compact: Some(digest),
            secret_id: U256::zero(),
        }
    }

    /// Whether `other` is this very job, not another one that a reorg gave the same id: same
    /// id, code, inputs and terms, and the same creating log (the block time where a record
    /// predates origins). The journal drops the inputs of a job in a final state (`trimmed`), so
    /// empty inputs on one side compare as unknown; the creating log still tells jobs apart.
    ///
    /// A compact record is compared by its digest: the other job's must be the same (a full
    /// job with no origin never matches a digest that covers one).
    pub fn same_job(&self, other: &Job) -> bool {
        match (self.compact, other.compact) {
            (None, None) => {}
            (Some(a), Some(b)) => return self.id == other.id && a == b,
            (Some(digest), None) => return other.matches(digest),
            (None, Some(digest)) => return self.matches(digest),
        }
        let same_origin = match (self.origin, other.origin) {
            (Some(a), Some(b)) => a == b,
            _ => self.exec_start_time == other.exec_start_time,
        };
        let same_inputs = self.code_inputs == other.code_inputs
            || self.code_inputs.is_empty()
            || other.code_inputs.is_empty();
        self.id == other.id
            && self.codehash == other.codehash
            && same_inputs
            && self.owner == other.owner
            && self.env == other.env
            && self.deadline_ms == other.deadline_ms
            && self.selected_executors == other.selected_executors
            && self.secret_id == other.secret_id
            && same_origin
    }

    /// Whether this full job is the one `digest` was taken of.
    fn matches(&self, digest: JobDigest) -> bool {
        (self.origin.is_some() || !digest.with_origin)
            && self.identity(digest.with_origin) == digest.identity
    }
}

/// The chain and contracts a data directory belongs to: its journal means nothing elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub chain_id: u64,
    pub executors: Address,
    pub jobs: Address,
    pub user_code: Address,
}

/// What one execution produced, in protocol terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionOutcome {
    #[serde(with = "hex_bytes")]
    pub output: Vec<u8>,
    pub error_code: ErrorCode,
    /// Wall time in ms from the start of execution to the output.
    pub total_time_ms: u64,
}

/// An output signed by the enclave key, ready for `submitOutput`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOutput {
    pub job_id: U256,
    #[serde(with = "hex_bytes")]
    pub output: Vec<u8>,
    pub total_time_ms: u64,
    pub error_code: ErrorCode,
    /// Unix seconds.
    pub sign_timestamp: u64,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// The signed registration message an owner passes to `registerExecutor` (v2) or
/// `registerTeeNode` (TEE generation, which also signs a storage capacity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub owner: Address,
    pub job_capacity: u64,
    /// TEE generation only: the storage capacity signed with it, bytes.
    pub storage_capacity: Option<u64>,
    pub env: u8,
    pub sign_timestamp: u64,
    pub signature: [u8; 65],
}

/// Public facts about this executor, as `GET /executor-details` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorDetails {
    pub enclave_address: Address,
    pub enclave_public_key: [u8; 64],
    pub gas_address: Address,
    pub owner_address: Address,
}

/// What the composition root last learned about the world outside the domain (sampled
/// periodically): the chain's head block (None: the RPC did not answer) and the sandbox binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub chain_head: Option<u64>,
    pub workerd_found: bool,
    /// The gas account's balance in wei (None: no gas key, or the node did not answer).
    pub gas_balance_wei: Option<U256>,
    /// When it was taken, unix ms.
    pub at_ms: u64,
}

/// Whether the executor can do its work, and each reason it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Registered on chain (serving or draining).
    pub registered: bool,
    /// The RPC node answered the last probe, recently.
    pub chain_connected: bool,
    /// Slot limits are applied.
    pub cgroups_enforced: bool,
    /// The operator chose to serve without slot limits (`EXECUTOR_ALLOW_UNLIMITED_SLOTS`).
    pub unlimited_slots_allowed: bool,
    pub workerd_found: bool,
    /// The chain has not refused our enclave key (`AttestationAutherKeyNotVerified`).
    pub enclave_verified: bool,
    /// The follower keeps its journal (the store works) and keeps up with the chain head.
    pub follower_ok: bool,
    /// Blocks between the chain head and the first block not yet handled (when known).
    pub head_lag: Option<u64>,
    /// Why the follower is not ok.
    pub follower_problem: Option<String>,
    /// registered, chain connected, workerd found, the enclave key not refused, the follower
    /// ok, and slot limits enforced (or explicitly waived).
    pub ready: bool,
}

impl Readiness {
    /// Why the executor is not ready (empty when it is).
    pub fn reasons(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if !self.registered {
            why.push("not registered on chain");
        }
        if !self.chain_connected {
            why.push("the RPC node did not answer the last probe");
        }
        if !self.workerd_found {
            why.push("the workerd binary is missing or not executable");
        }
        if !self.follower_ok {
            why.push("the chain follower is failing or behind (see follower_problem)");
        }
        if !self.enclave_verified {
            why.push("the chain refuses our enclave key (AttestationAutherKeyNotVerified)");
        }
        if !self.cgroups_enforced && !self.unlimited_slots_allowed {
            why.push(
                "slot limits (cgroups) cannot be enforced; fix that (see README, Sandbox \
                 containment) or set EXECUTOR_ALLOW_UNLIMITED_SLOTS=true",
            );
        }
        why
    }
}

/// Where this executor stands on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ChainStatus {
    /// Not (yet) seen `ExecutorRegistered` for this enclave and owner.
    #[default]
    Unregistered,
    Serving,
    Draining,
    Deregistered,
}

/// A position in the chain's log stream; logs are ordered by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    pub block_number: u64,
    pub log_index: u64,
}

/// One log the chain adapter delivers: where it stands, whether a reorg removed it, what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLog {
    pub position: LogPosition,
    pub block_hash: H256,
    pub removed: bool,
    pub event: ChainEvent,
}

/// The protocol generation an executor speaks: Marlin's serverless-v2 contracts (Executors,
/// Jobs, UserCode) or the TEE generation (TeeManager, Executors, SecretStore, SecretManager,
/// Jobs with `secretId`), where one enclave is both an executor and a secret store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    V2,
    Tee,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::Tee => "tee",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v2" => Ok(Self::V2),
            "tee" => Ok(Self::Tee),
            other => Err(format!("unknown protocol {other:?}: expected v2 or tee")),
        }
    }
}

/// What SecretManager tells about user secrets (TEE generation), already decoded. Times are
/// unix seconds, as on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretEvent {
    /// `SecretCreated`: `selected` are the stores that must acknowledge it.
    Created {
        secret_id: U256,
        owner: Address,
        size_limit: U256,
        end_timestamp: U256,
        selected: Vec<Address>,
    },
    /// `SecretStoreAcknowledgementSuccess`: `enclave` acknowledged storing it.
    Acknowledged { secret_id: U256, enclave: Address },
    /// `SecretStoreAcknowledgementFailed`: not every store acknowledged in time; the secret is void.
    AcknowledgementFailed { secret_id: U256 },
    /// `SecretStoreReplaced`: `replacement` stores it in place of `previous` (dead or draining).
    StoreReplaced {
        secret_id: U256,
        previous: Address,
        replacement: Address,
        marked_dead: bool,
    },
    /// `SecretEndTimestampUpdated`.
    EndTimestampUpdated {
        secret_id: U256,
        end_timestamp: U256,
    },
    /// `SecretTerminated`: the owner ended it early, at `at`.
    Terminated { secret_id: U256, at: U256 },
    /// `SecretRemoved`: gone from the chain.
    Removed { secret_id: U256 },
}

/// The protocol events the executor follows, already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    ExecutorRegistered {
        enclave: Address,
        owner: Address,
        job_capacity: U256,
        env: u8,
    },
    JobCreated(Job),
    JobResponded {
        job_id: U256,
        executor: Address,
        output_count: u8,
    },
    ExecutorDrained {
        enclave: Address,
    },
    ExecutorRevived {
        enclave: Address,
    },
    ExecutorDeregistered {
        enclave: Address,
    },
    /// `slashOnExecutionTimeout` slashed `enclave` for not answering `job_id`.
    SlashedOnExecutionTimeout {
        job_id: U256,
        enclave: Address,
    },
    /// A SecretManager event (TEE generation only).
    Secret(SecretEvent),
}

/// A job's place in the journal. Written before the state is acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Seen on chain; this executor is not selected. Kept to settle the job after its window.
    Observed,
    /// Selected, waiting for a slot.
    Queued,
    /// Selected and running in a slot.
    Running,
    /// Executed; the signed output is not yet sent.
    Executed { output: SignedOutput },
    /// `submitOutput` sent; waiting for its receipt.
    Submitted { output: SignedOutput, tx_hash: H256 },
    /// Our output is on chain (the hash is unknown when only the chain's refusal of a
    /// duplicate, or the `JobResponded` event, told us).
    Confirmed {
        output: Option<SignedOutput>,
        tx_hash: Option<H256>,
    },
    /// Finished without our output landing (settled by a slash, window missed, rejected).
    Abandoned { reason: String },
}

/// Every journal state, as `JobState::name` spells it; a state's position here is its code
/// in the store's index by state.
pub const JOB_STATES: &[&str] = &[
    "observed",
    "queued",
    "running",
    "executed",
    "submitted",
    "confirmed",
    "abandoned",
];

impl JobState {
    /// The position of this state's name in `JOB_STATES`.
    pub fn code(&self) -> u8 {
        match self {
            Self::Observed => 0,
            Self::Queued => 1,
            Self::Running => 2,
            Self::Executed { .. } => 3,
            Self::Submitted { .. } => 4,
            Self::Confirmed { .. } => 5,
            Self::Abandoned { .. } => 6,
        }
    }

    /// Whether nothing more will happen to the job on our side: not ours, answered or given up.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Observed | Self::Confirmed { .. } | Self::Abandoned { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Observed => "observed",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Executed { .. } => "executed",
            Self::Submitted { .. } => "submitted",
            Self::Confirmed { .. } => "confirmed",
            Self::Abandoned { .. } => "abandoned",
        }
    }
}

/// One output transaction as broadcast (a replacement is another, with the same nonce): what
/// taking its nonce back needs when a reorg supersedes its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentTx {
    pub tx_hash: H256,
    /// The gas account that signed it.
    pub from: Address,
    pub nonce: U256,
    /// The highest price per gas it bids (legacy: its gas price).
    pub max_fee_per_gas: U256,
    /// Its priority fee per gas (None: a legacy transaction).
    pub max_priority_fee_per_gas: Option<U256>,
}

/// An output transaction of a job a reorg superseded: its nonce is to be taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupersededOutput {
    /// The id the job had (another job may hold it now).
    pub job_id: U256,
    pub tx: SentTx,
}

/// The journal's record of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: Job,
    pub state: JobState,
    /// Outputs seen on chain for this job (`JobResponded.outputCount`, the highest seen).
    pub output_count: u8,
    /// Whether the job is finished on chain (all responded, or slashed) and needs nothing more.
    pub settled: bool,
    /// Whether this executor has already sent `slashOnExecutionTimeout` for it.
    pub slash_sent: bool,
    /// Whether the chain slashed this enclave for it (counted once).
    #[serde(default)]
    pub slashed: bool,
    /// Gas our transactions for this job cost so far (outputs, reverted ones included, and
    /// the slash), in gas units. Journals written before it existed read as 0.
    #[serde(default)]
    pub gas_spent: u64,
    /// This job's output transactions broadcast so far, the latest per nonce: should a reorg
    /// supersede the job, the nonces of those not yet mined are taken back. Kept across a
    /// restart (a recovered output is sent again with a new nonce); dropped once confirmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<SentTx>,
}

impl JobRecord {
    pub fn new(job: Job, state: JobState) -> Self {
        Self {
            job,
            state,
            output_count: 0,
            settled: false,
            slash_sent: false,
            slashed: false,
            gas_spent: 0,
            sent: Vec::new(),
        }
    }

    /// Whether recovery must look at this job: it may still run or send, or still needs settling.
    pub fn is_open(&self) -> bool {
        !self.settled || !self.state.is_final()
    }

    /// What the journal keeps of this record: a job that will never run here again (not ours,
    /// answered, or given up) loses its inputs, which can be large and are needed only to run it;
    /// a job that does not select us (observed) is kept compact (`Job::compacted`): what
    /// settlement needs, and a digest of the rest to tell it from another job with its id.
    /// A confirmed job has nothing left to take back: its transactions go too.
    pub fn trimmed(mut self) -> Self {
        if self.state.is_final() {
            self.job.code_inputs = Vec::new();
        }
        if matches!(self.state, JobState::Confirmed { .. }) {
            self.sent = Vec::new();
        }
        if self.state == JobState::Observed {
            self.job = self.job.compacted();
        }
        self
    }

    /// Journals `tx`, broadcast for this job's output: it replaces the one sent with its nonce.
    pub fn note_sent(&mut self, tx: SentTx) {
        self.sent
            .retain(|known| (known.from, known.nonce) != (tx.from, tx.nonce));
        self.sent.push(tx);
    }
}

/// Hex (0x-prefixed) encoding of byte vectors in the journal, so records stay readable.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(bytes)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text.strip_prefix("0x").unwrap_or(&text);
        hex::decode(digits).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_reject_unknown() {
        for code in 0u8..=5 {
            assert_eq!(ErrorCode::from_u8(code).map(ErrorCode::as_u8), Some(code));
        }
        assert_eq!(ErrorCode::from_u8(6), None);
    }

    #[test]
    fn window_end_adds_deadline_ms_and_buffer_seconds() {
        let job = Job {
            id: U256::one(),
            env: 1,
            owner: Address::zero(),
            codehash: H256::zero(),
            code_inputs: vec![],
            deadline_ms: 1500,
            selected_executors: vec![],
            exec_start_time: 100,
            origin: None,
            compact: None,
            secret_id: U256::zero(),
        };
        assert_eq!(job.window_end_ms(20), 100_000 + 1500 + 20_000);
    }

    #[test]
    fn protocol_names_parse_back() {
        for protocol in [Protocol::V2, Protocol::Tee] {
            assert_eq!(protocol.name().parse::<Protocol>(), Ok(protocol));
        }
        assert_eq!(" TEE ".parse::<Protocol>(), Ok(Protocol::Tee));
        assert!("v3".parse::<Protocol>().unwrap_err().contains("v2 or tee"));
    }

    #[test]
    fn a_secret_id_is_part_of_a_jobs_identity() {
        let job = Job {
            id: U256::from(7),
            env: 1,
            owner: Address::repeat_byte(3),
            codehash: H256::repeat_byte(4),
            code_inputs: vec![1],
            deadline_ms: 1000,
            selected_executors: vec![Address::repeat_byte(1)],
            exec_start_time: 100,
            origin: None,
            compact: None,
            secret_id: U256::zero(),
        };
        let with_secret = Job {
            secret_id: U256::from(5),
            ..job.clone()
        };
        assert_ne!(job.identity(false), with_secret.identity(false));
        assert!(!job.same_job(&with_secret));
        assert!(with_secret.same_job(&with_secret.clone().compacted()));
        assert!(!job.same_job(&with_secret.compacted()));
    }

    #[test]
    fn a_job_is_fully_answered_by_all_its_executors_or_by_three() {
        let mut job = Job {
            id: U256::zero(),
            env: 1,
            owner: Address::zero(),
            codehash: H256::zero(),
            code_inputs: vec![],
            deadline_ms: 1,
            selected_executors: vec![Address::repeat_byte(1), Address::repeat_byte(2)],
            exec_start_time: 0,
            origin: None,
            compact: None,
            secret_id: U256::zero(),
        };
        assert!(!job.fully_answered(1));
        assert!(job.fully_answered(2));
        job.selected_executors = (1..=5).map(Address::repeat_byte).collect();
        assert!(!job.fully_answered(2));
        assert!(job.fully_answered(3), "deleted at the 3rd output");
    }

    #[test]
    fn journal_record_serialises_readably_and_back() {
        let out = SignedOutput {
            job_id: U256::from(7),
            output: b"2,5".to_vec(),
            total_time_ms: 12,
            error_code: ErrorCode::Ok,
            sign_timestamp: 1,
            signature: vec![1; 65],
        };
        let json = serde_json::to_string(&JobState::Executed { output: out }).unwrap();
        assert!(json.contains("\"state\":\"executed\""), "{json}");
        assert!(json.contains("0x322c35"), "{json}");
        let back: JobState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.name(), "executed");
    }
}
