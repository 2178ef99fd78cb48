//! The log follower: turns the protocol's events into an ordered stream of `ChainLog`s, without
//! losing any across disconnects: v2's seven on Executors and Jobs, or the TEE generation's
//! (TeeManager, Jobs and SecretManager; decoded in `tee.rs`) — the same backfill, reorg and
//! cursor handling for both.
//!
//! On every (re)connect it first subscribes to logs over WebSocket (so nothing emitted from then
//! on is missed), then backfills with `eth_getLogs` over HTTP from its cursor up to the head in
//! bounded ranges, then streams live logs. Every `POLL_INTERVAL` it scans again from the cursor to
//! the head (a safety net for logs the subscription missed) and reports
//! `FollowerItem::Synced { next_block }` once every log up to `next_block - 1` was delivered.
//! Duplicates (a log seen both by the subscription and by a scan) are dropped by remembering
//! `(block hash, log index)` in a recent window; `removed: true` logs (reorgs) are delivered as
//! such. Disconnects are retried with exponential backoff. The follower stops when the receiver
//! is dropped.
//!
//! Reorgs are followed even when the node reports no `removed` logs: the follower remembers the
//! hashes of recent blocks (bounded) and, before each scan, checks the highest one against the
//! chain. When it changed, it walks down to the last height that still matches, delivers the
//! removal of every log it had delivered from the replaced blocks, reports
//! `FollowerItem::Rewound` and scans again from the first replaced block.
//!
//! A job's start time is its block's timestamp: taken from the log where the node sends
//! `blockTimestamp`, else asked for by block hash (cached).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use ethers::contract::EthEvent;
use ethers::providers::{Http, Middleware, Provider, ProviderError, Ws};
use ethers::types::{Address, BlockNumber, Filter, Log, ValueOrArray, H256, U256, U64};
use futures::{FutureExt, StreamExt};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bindings::{
    ExecutorDeregisteredFilter, ExecutorDrainedFilter, ExecutorRegisteredFilter,
    ExecutorRevivedFilter, JobCreatedFilter, JobRespondedFilter, SlashedOnExecutionTimeoutFilter,
};
use super::tee::{self, SecretInterest, TeeContracts};
use crate::config::ChainConfig;
use crate::domain::model::{ChainEvent, ChainLog, Job, JobOrigin, LogPosition, Protocol};

/// Largest block range of one `eth_getLogs` (halved on failure, down to one block).
pub const BACKFILL_RANGE: u64 = 2000;
/// With no cursor yet, the first scan starts this many blocks below the head, so that a
/// registration mined just before the follower asked for the head is not missed.
pub const START_LOOKBACK_BLOCKS: u64 = 256;

/// How often the follower scans from its cursor to the head and reports `Synced`.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the WebSocket is asked for the block number to find a dead connection.
pub const WS_LIVENESS_INTERVAL: Duration = Duration::from_secs(10);
/// The longest any single RPC request may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before reconnecting; doubles up to `BACKOFF_MAX`.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Logs of blocks this far below the cursor are forgotten by the duplicate filter.
pub const SEEN_WINDOW_BLOCKS: u64 = 256;
/// Heights below the cursor whose block hashes (and delivered logs) are remembered to notice
/// reorgs; a reorg deeper than this is followed only from this depth.
pub const REORG_MEMORY_BLOCKS: u64 = 128;
/// Block timestamps kept, by block hash.
const BLOCK_TIME_CACHE: usize = 1024;

/// What the follower sends to the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
// Nearly every item is a log: boxing it would cost an allocation each for nothing.
#[allow(clippy::large_enum_variant)]
pub enum FollowerItem {
    /// One protocol log, in (block, log index) order (reorgs aside).
    Log(ChainLog),
    /// Every log of blocks below `next_block` has been delivered.
    Synced { next_block: u64 },
    /// A reorg replaced the blocks from `next_block` on: the removal of the logs delivered from
    /// them was delivered just before, and they are scanned again.
    Rewound { next_block: u64 },
}

/// Follows the Executors and Jobs contracts of one chain.
pub struct LogFollower {
    config: ChainConfig,
    enclave: Address,
    poll_interval: Duration,
    /// TEE generation: the SecretManager whose events concern our secrets.
    secret_manager: Option<Address>,
    /// TEE generation: secrets known to concern us before the first log is read.
    known_secrets: Vec<U256>,
}

/// Why a connection ended.
enum SessionEnd {
    /// The receiver is gone: stop.
    ReceiverGone,
    /// Connection or RPC trouble: reconnect.
    Failed(String),
}

type SessionResult = Result<(), SessionEnd>;

fn failed(what: &str, error: impl std::fmt::Display) -> SessionEnd {
    SessionEnd::Failed(format!("{what}: {error}"))
}

async fn rpc<T>(
    what: &str,
    request: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, SessionEnd> {
    match tokio::time::timeout(RPC_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failed(what, e)),
        Err(_) => Err(SessionEnd::Failed(format!(
            "{what} timed out after {RPC_TIMEOUT:?}"
        ))),
    }
}

/// A log as the node sends it. Newer nodes (anvil, reth, recent geth) add the timestamp of the
/// log's block, which spares the follower one block request per job it sees.
// Serialize: ethers' `request` asks it of answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct NodeLog {
    #[serde(flatten)]
    log: Log,
    #[serde(
        rename = "blockTimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    block_timestamp: Option<U64>,
}

impl From<Log> for NodeLog {
    fn from(log: Log) -> Self {
        Self {
            log,
            block_timestamp: None,
        }
    }
}

/// What survives reconnects: the cursor and the duplicate filter.
struct State {
    /// The next block a scan starts at; None until the head is first known.
    cursor: Option<u64>,
    /// (block hash, log index) → (block number, whether the last delivery said removed).
    seen: HashMap<(H256, u64), (u64, bool)>,
    /// The highest `Synced` sent.
    synced: Option<u64>,
    /// The position of the last log delivered (to warn about out-of-order deliveries).
    last_position: Option<LogPosition>,
    block_times: LruCache<H256, u64>,
    /// Hash of each recent height, as first seen (a log's block, or the head a scan reached).
    recent_hashes: BTreeMap<u64, H256>,
    /// Logs delivered from each recent height, to deliver their removal after a reorg.
    recent_logs: BTreeMap<u64, Vec<ChainLog>>,
    /// TEE generation: the secrets whose id-only events concern us.
    secrets: SecretInterest,
}

impl State {
    fn new(from_block: Option<u64>) -> Self {
        Self {
            cursor: from_block,
            seen: HashMap::new(),
            synced: None,
            last_position: None,
            block_times: LruCache::new(
                NonZeroUsize::new(BLOCK_TIME_CACHE).unwrap_or(NonZeroUsize::MIN),
            ),
            recent_hashes: BTreeMap::new(),
            recent_logs: BTreeMap::new(),
            secrets: SecretInterest::default(),
        }
    }

    fn prune(&mut self) {
        if let Some(cursor) = self.cursor {
            let keep_from = cursor.saturating_sub(SEEN_WINDOW_BLOCKS);
            self.seen.retain(|_, (block, _)| *block >= keep_from);
            let remember_from = cursor.saturating_sub(REORG_MEMORY_BLOCKS);
            self.recent_hashes = self.recent_hashes.split_off(&remember_from);
            self.recent_logs = self.recent_logs.split_off(&remember_from);
        }
    }

    /// Remembers a height's hash unless one is known: a different one later means a reorg,
    /// which `follow_reorg` finds by asking the chain.
    fn remember_hash(&mut self, height: u64, hash: H256) {
        self.recent_hashes.entry(height).or_insert(hash);
    }

    /// Forgets what was remembered from `fork` on, except logs of blocks that are still on
    /// the chain (`canonical`: height → hash now); returns the logs whose blocks were replaced.
    fn replaced_from(&mut self, fork: u64, canonical: &HashMap<u64, H256>) -> Vec<ChainLog> {
        self.recent_hashes.retain(|height, _| *height < fork);
        let mut replaced = Vec::new();
        for (height, logs) in self.recent_logs.split_off(&fork) {
            let (kept, gone): (Vec<_>, Vec<_>) = logs
                .into_iter()
                .partition(|log| canonical.get(&height) == Some(&log.block_hash));
            if !kept.is_empty() {
                self.recent_hashes
                    .insert(height, canonical.get(&height).copied().unwrap_or_default());
                self.recent_logs.insert(height, kept);
            }
            replaced.extend(gone);
        }
        replaced
    }
}

/// A log the decoder does not turn into an event (not ours: silently dropped; malformed:
/// logged and dropped).
use tee::Skip;

impl LogFollower {
    pub fn new(config: ChainConfig, enclave: Address) -> Self {
        Self {
            config,
            enclave,
            poll_interval: POLL_INTERVAL,
            secret_manager: None,
            known_secrets: Vec::new(),
        }
    }

    /// TEE generation: follows this SecretManager's events about our secrets too.
    pub fn with_secret_manager(mut self, secret_manager: Option<Address>) -> Self {
        self.secret_manager = secret_manager;
        self
    }

    /// TEE generation: secrets already known to concern us (held by the store), whose later
    /// events must be delivered although their creation lies before the cursor.
    pub fn with_known_secrets(mut self, ids: impl IntoIterator<Item = U256>) -> Self {
        self.known_secrets.extend(ids);
        self
    }

    fn tee_contracts(&self) -> TeeContracts {
        TeeContracts {
            tee_manager: self.config.executors_address,
            jobs: self.config.jobs_address,
            secret_manager: self.secret_manager,
        }
    }

    /// Changes how often the follower scans and reports `Synced` (default `POLL_INTERVAL`).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The filter of the generation's events: v2's seven on Executors and Jobs, or the TEE
    /// generation's on TeeManager, Jobs and SecretManager.
    pub fn filter(&self) -> Filter {
        if self.config.protocol == Protocol::Tee {
            let mut addresses = vec![self.config.executors_address, self.config.jobs_address];
            addresses.extend(self.secret_manager);
            return Filter::new()
                .address(ValueOrArray::Array(addresses))
                .topic0(ValueOrArray::Array(tee::topics()));
        }
        Filter::new()
            .address(ValueOrArray::Array(vec![
                self.config.executors_address,
                self.config.jobs_address,
            ]))
            .topic0(ValueOrArray::Array(vec![
                ExecutorRegisteredFilter::signature(),
                ExecutorDrainedFilter::signature(),
                ExecutorRevivedFilter::signature(),
                ExecutorDeregisteredFilter::signature(),
                JobCreatedFilter::signature(),
                JobRespondedFilter::signature(),
                SlashedOnExecutionTimeoutFilter::signature(),
            ]))
    }

    /// Follows the chain from `from_block` (the current head when None) until `tx` is dropped.
    pub async fn run(self, from_block: Option<u64>, tx: mpsc::Sender<FollowerItem>) {
        let http = match Provider::<Http>::try_from(self.config.rpc_http_url.as_str()) {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(url = %self.config.rpc_http_url, error = %e, "bad RPC URL; not following the chain");
                return;
            }
        };
        let mut state = State::new(from_block);
        state.secrets.add(self.known_secrets.iter().copied());
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            match self.session(&http, &mut state, &tx).await {
                Ok(()) | Err(SessionEnd::ReceiverGone) => {
                    tracing::info!("chain log receiver dropped; follower stops");
                    return;
                }
                Err(SessionEnd::Failed(reason)) => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = BACKOFF_START;
                    }
                    tracing::warn!(
                        %reason,
                        cursor = ?state.cursor,
                        retry_in = ?backoff,
                        "chain connection lost; reconnecting"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection: subscribe, backfill, stream. Returns when it breaks.
    async fn session(
        &self,
        http: &Provider<Http>,
        state: &mut State,
        tx: &mpsc::Sender<FollowerItem>,
    ) -> SessionResult {
        let url = self.config.rpc_ws_url.as_str();
        // No ethers-level reconnects: a silent reconnect would lose the logs in between.
        let ws = rpc("WebSocket connect", async {
            Provider::<Ws>::connect_with_reconnects(url, 0).await
        })
        .await?;
        let mut live = rpc(
            "eth_subscribe logs",
            ws.subscribe::<_, NodeLog>(("logs", self.filter())),
        )
        .await?;
        tracing::info!(url, cursor = ?state.cursor, "subscribed to chain logs; backfilling");

        self.scan(http, state, tx).await?;
        tracing::info!(synced = ?state.synced, "backfill done; streaming live logs");

        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness = tokio::time::interval(WS_LIVENESS_INTERVAL);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        liveness.reset();
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => return Err(SessionEnd::ReceiverGone),
                log = live.next() => match log {
                    Some(log) => self.deliver(http, state, tx, log).await?,
                    None => return Err(SessionEnd::Failed("log subscription ended (WebSocket closed)".into())),
                },
                _ = poll.tick() => {
                    // Live logs already here go first, so deliveries stay in order.
                    while let Some(Some(log)) = live.next().now_or_never() {
                        self.deliver(http, state, tx, log).await?;
                    }
                    self.scan(http, state, tx).await?;
                }
                _ = liveness.tick() => {
                    rpc("WebSocket liveness check", ws.get_block_number()).await?;
                }
            }
        }
    }

    /// Delivers every log from the cursor to the head with `eth_getLogs` and advances the
    /// cursor, reporting `Synced` after each range.
    async fn scan(
        &self,
        http: &Provider<Http>,
        state: &mut State,
        tx: &mpsc::Sender<FollowerItem>,
    ) -> SessionResult {
        let head = rpc("eth_blockNumber", http.get_block_number())
            .await?
            .as_u64();
        self.follow_reorg(http, state, tx, head).await?;
        let mut from = *state
            .cursor
            .get_or_insert(head.saturating_sub(START_LOOKBACK_BLOCKS));
        let mut range = BACKFILL_RANGE;
        while from <= head {
            let to = head.min(from.saturating_add(range - 1));
            let filter = self
                .filter()
                .from_block(BlockNumber::Number(from.into()))
                .to_block(BlockNumber::Number(to.into()));
            let logs = rpc(
                "eth_getLogs",
                http.request::<_, Vec<NodeLog>>("eth_getLogs", [&filter]),
            );
            let mut logs = match logs.await {
                Ok(logs) => logs,
                Err(SessionEnd::Failed(reason)) if range > 1 => {
                    range = (range / 2).max(1);
                    tracing::debug!(%reason, from, to, next_range = range, "eth_getLogs failed; narrowing the range");
                    continue;
                }
                Err(e) => return Err(e),
            };
            logs.sort_by_key(|node_log| {
                (
                    node_log.log.block_number.map(|n| n.as_u64()),
                    node_log.log.log_index.map(|i| i.low_u64()),
                )
            });
            for log in logs {
                self.deliver(http, state, tx, log).await?;
            }
            state.cursor = Some(to + 1);
            if state.synced.is_none_or(|synced| to + 1 > synced) {
                tx.send(FollowerItem::Synced { next_block: to + 1 })
                    .await
                    .map_err(|_| SessionEnd::ReceiverGone)?;
                state.synced = Some(to + 1);
            }
            state.prune();
            from = to + 1;
        }
        if state.cursor.is_some_and(|cursor| cursor > head)
            && !state.recent_hashes.contains_key(&head)
        {
            let block = rpc("eth_getBlockByNumber", http.get_block(head)).await?;
            if let Some(hash) = block.and_then(|b| b.hash) {
                state.remember_hash(head, hash);
            }
        }
        Ok(())
    }

    /// Checks the remembered block hashes against the chain, highest first, down to the first
    /// that still matches. If any changed, delivers the removal of the logs delivered from the
    /// replaced blocks, reports `Rewound` and moves the cursor back to the first replaced one.
    async fn follow_reorg(
        &self,
        http: &Provider<Http>,
        state: &mut State,
        tx: &mpsc::Sender<FollowerItem>,
        head: u64,
    ) -> SessionResult {
        let remembered: Vec<(u64, H256)> = state
            .recent_hashes
            .iter()
            .rev()
            .map(|(height, hash)| (*height, *hash))
            .collect();
        let mut canonical = HashMap::new();
        let mut fork = None;
        for (height, hash) in remembered {
            // Above the head: a node behind the one we read before, or a shorter chain; only a
            // different hash at a height the node has is a reorg (anything above it goes too).
            if height > head {
                continue;
            }
            let now = rpc("eth_getBlockByNumber", http.get_block(height))
                .await?
                .and_then(|block| block.hash);
            if let Some(now) = now {
                canonical.insert(height, now);
            }
            if now == Some(hash) {
                break;
            }
            fork = Some(height);
        }
        let Some(fork) = fork else {
            return Ok(());
        };
        let replaced = state.replaced_from(fork, &canonical);
        tracing::warn!(
            fork,
            head,
            removed_logs = replaced.len(),
            "the chain reorganised: blocks from the fork on are read again"
        );
        for mut log in replaced {
            log.removed = true;
            let key = (log.block_hash, log.position.log_index);
            let block = log.position.block_number;
            tx.send(FollowerItem::Log(log))
                .await
                .map_err(|_| SessionEnd::ReceiverGone)?;
            state.seen.insert(key, (block, true));
        }
        if state.cursor.is_none_or(|cursor| cursor > fork) {
            state.cursor = Some(fork);
        }
        state.synced = state.synced.map(|synced| synced.min(fork));
        state.last_position = None;
        tx.send(FollowerItem::Rewound { next_block: fork })
            .await
            .map_err(|_| SessionEnd::ReceiverGone)
    }

    /// Decodes and sends one log unless it was already delivered in the same state.
    async fn deliver(
        &self,
        http: &Provider<Http>,
        state: &mut State,
        tx: &mpsc::Sender<FollowerItem>,
        NodeLog {
            log,
            block_timestamp,
        }: NodeLog,
    ) -> SessionResult {
        let (Some(block_hash), Some(block_number), Some(log_index)) =
            (log.block_hash, log.block_number, log.log_index)
        else {
            tracing::debug!(?log, "log without a block position (pending?) ignored");
            return Ok(());
        };
        let block_number = block_number.as_u64();
        let log_index = log_index.low_u64();
        // A log without a `removed` field is a live one (the reference skipped those).
        let removed = log.removed.unwrap_or(false);
        let key = (block_hash, log_index);
        if state.seen.get(&key).is_some_and(|(_, r)| *r == removed) {
            return Ok(());
        }
        let event = match self.decode(&log, &mut state.secrets) {
            Ok(event) => event,
            Err(Skip::NotOurs) => {
                state.seen.insert(key, (block_number, removed));
                return Ok(());
            }
            Err(Skip::Malformed(reason)) => {
                tracing::warn!(%reason, ?block_hash, block_number, log_index, tx_hash = ?log.transaction_hash, "undecodable protocol log skipped");
                state.seen.insert(key, (block_number, removed));
                return Ok(());
            }
        };
        // Zero is no timestamp (a node that fills the field in without knowing it).
        if let Some(time) = block_timestamp.map(|t| t.as_u64()).filter(|t| *t > 0) {
            state.block_times.put(block_hash, time);
        }
        let event = match event {
            ChainEvent::JobCreated(mut job) => {
                job.exec_start_time = self.block_time(http, state, block_hash, removed).await?;
                job.origin = Some(JobOrigin {
                    block_number,
                    block_hash,
                    tx_hash: log.transaction_hash.unwrap_or_default(),
                    log_index,
                });
                ChainEvent::JobCreated(job)
            }
            other => other,
        };
        let position = LogPosition {
            block_number,
            log_index,
        };
        if !removed && state.last_position.is_some_and(|last| position < last) {
            tracing::warn!(?position, last = ?state.last_position, "delivering a log out of order (missed by the subscription, or a reorg)");
        }
        let chain_log = ChainLog {
            position,
            block_hash,
            removed,
            event,
        };
        let logs = state.recent_logs.entry(block_number).or_default();
        if removed {
            logs.retain(|l| (l.block_hash, l.position.log_index) != key);
        } else {
            logs.push(chain_log.clone());
        }
        tx.send(FollowerItem::Log(chain_log))
            .await
            .map_err(|_| SessionEnd::ReceiverGone)?;
        state.seen.insert(key, (block_number, removed));
        if !removed {
            state.last_position = Some(position);
            state.remember_hash(block_number, block_hash);
        }
        Ok(())
    }

    /// The timestamp of a block, by hash (cached).
    async fn block_time(
        &self,
        http: &Provider<Http>,
        state: &mut State,
        block_hash: H256,
        removed: bool,
    ) -> Result<u64, SessionEnd> {
        if let Some(time) = state.block_times.get(&block_hash) {
            return Ok(*time);
        }
        let block = rpc("eth_getBlockByHash", http.get_block(block_hash)).await?;
        let time = match block {
            Some(block) => block.timestamp.low_u64(),
            // A removed log's block may be gone with the reorg; its time no longer matters.
            None if removed => 0,
            None => {
                return Err(SessionEnd::Failed(format!(
                    "block {block_hash:?} of a live log is unknown to the node (reorg?)"
                )))
            }
        };
        state.block_times.put(block_hash, time);
        Ok(time)
    }

    /// The protocol event a log carries (`exec_start_time` of a job is filled in by the caller).
    fn decode(&self, log: &Log, secrets: &mut SecretInterest) -> Result<ChainEvent, Skip> {
        if self.config.protocol == Protocol::Tee {
            return tee::decode(&self.tee_contracts(), self.enclave, secrets, log);
        }
        let Some(topic0) = log.topics.first().copied() else {
            return Err(Skip::NotOurs);
        };
        let raw = ethers::abi::RawLog {
            topics: log.topics.clone(),
            data: log.data.to_vec(),
        };
        let malformed = |e: ethers::abi::Error| Skip::Malformed(e.to_string());
        let from_executors = log.address == self.config.executors_address;
        let from_jobs = log.address == self.config.jobs_address;
        let executor_events = [
            ExecutorRegisteredFilter::signature(),
            ExecutorDrainedFilter::signature(),
            ExecutorRevivedFilter::signature(),
            ExecutorDeregisteredFilter::signature(),
        ];
        if executor_events.contains(&topic0) {
            if !from_executors {
                return Err(Skip::NotOurs);
            }
            // Every Executors event is indexed by the enclave address: skip other enclaves.
            if !self.enclave.is_zero() && log.topics.get(1) != Some(&H256::from(self.enclave)) {
                return Err(Skip::NotOurs);
            }
        } else if !from_jobs {
            return Err(Skip::NotOurs);
        }

        if topic0 == ExecutorRegisteredFilter::signature() {
            let e = <ExecutorRegisteredFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorRegistered {
                enclave: e.enclave_address,
                owner: e.owner,
                job_capacity: e.job_capacity,
                env: e.env,
            })
        } else if topic0 == ExecutorDrainedFilter::signature() {
            let e = <ExecutorDrainedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorDrained {
                enclave: e.enclave_address,
            })
        } else if topic0 == ExecutorRevivedFilter::signature() {
            let e = <ExecutorRevivedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorRevived {
                enclave: e.enclave_address,
            })
        } else if topic0 == ExecutorDeregisteredFilter::signature() {
            let e =
                <ExecutorDeregisteredFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorDeregistered {
                enclave: e.enclave_address,
            })
        } else if topic0 == JobCreatedFilter::signature() {
            let e = <JobCreatedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::JobCreated(Job {
                id: e.job_id,
                env: e.env,
                owner: e.job_owner,
                codehash: H256::from(e.codehash),
                code_inputs: e.code_inputs.to_vec(),
                deadline_ms: saturating_u64(e.deadline),
                selected_executors: e.selected_executors,
                exec_start_time: 0,
                origin: None,
                compact: None,
                secret_id: U256::zero(),
            }))
        } else if topic0 == JobRespondedFilter::signature() {
            let e = <JobRespondedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::JobResponded {
                job_id: e.job_id,
                executor: e.executor,
                output_count: e.output_count,
            })
        } else if topic0 == SlashedOnExecutionTimeoutFilter::signature() {
            // Only our own slashes matter (the enclave is the second indexed topic).
            if !self.enclave.is_zero() && log.topics.get(2) != Some(&H256::from(self.enclave)) {
                return Err(Skip::NotOurs);
            }
            let e = <SlashedOnExecutionTimeoutFilter as EthEvent>::decode_log(&raw)
                .map_err(malformed)?;
            Ok(ChainEvent::SlashedOnExecutionTimeout {
                job_id: e.job_id,
                enclave: e.enclave_address,
            })
        } else {
            Err(Skip::NotOurs)
        }
    }
}

fn saturating_u64(value: U256) -> u64 {
    if value > U256::from(u64::MAX) {
        u64::MAX
    } else {
        value.as_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethers::abi::{encode, Token};
    use ethers::types::{Bytes, U64};

    const ENCLAVE: Address = Address::repeat_byte(0xee);
    const EXECUTORS: Address = Address::repeat_byte(0x01);
    const JOBS: Address = Address::repeat_byte(0x02);

    fn follower() -> LogFollower {
        LogFollower::new(
            ChainConfig {
                // Never reached: the events below need no block header.
                rpc_http_url: "http://127.0.0.1:9".into(),
                rpc_ws_url: "ws://127.0.0.1:9".into(),
                chain_id: 31337,
                protocol: crate::domain::model::Protocol::V2,
                executors_address: EXECUTORS,
                jobs_address: JOBS,
                user_code_address: Address::repeat_byte(0x03),
                execution_buffer_secs: 60,
                selected_executors: 3,
                code_cache_size: 10,
                start_block: None,
            },
            ENCLAVE,
        )
    }

    fn registered(enclave: Address, contract: Address, block: u64, index: u64) -> Log {
        Log {
            address: contract,
            topics: vec![
                ExecutorRegisteredFilter::signature(),
                H256::from(enclave),
                H256::from(Address::repeat_byte(0x0a)),
            ],
            data: Bytes::from(encode(&[Token::Uint(5.into()), Token::Uint(1.into())])),
            block_hash: Some(H256::repeat_byte(block as u8)),
            block_number: Some(U64::from(block)),
            log_index: Some(U256::from(index)),
            transaction_hash: Some(H256::repeat_byte(0x77)),
            ..Default::default()
        }
    }

    async fn delivered(follower: &LogFollower, state: &mut State, log: Log) -> Vec<FollowerItem> {
        let http = Provider::<Http>::try_from("http://127.0.0.1:9").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        assert!(follower
            .deliver(&http, state, &tx, log.into())
            .await
            .is_ok());
        drop(tx);
        let mut items = Vec::new();
        while let Some(item) = rx.recv().await {
            items.push(item);
        }
        items
    }

    #[test]
    fn a_log_without_removed_field_is_live() {
        let json = serde_json::json!({
            "address": format!("{EXECUTORS:?}"),
            "topics": [],
            "data": "0x",
            "blockHash": format!("{:?}", H256::repeat_byte(1)),
            "blockNumber": "0x1",
            "transactionHash": format!("{:?}", H256::repeat_byte(2)),
            "transactionIndex": "0x0",
            "logIndex": "0x0"
        });
        let log: Log = serde_json::from_value(json).unwrap();
        assert_eq!(log.removed, None);
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_removals_delivered_once() {
        let f = follower();
        let mut state = State::new(Some(0));
        let log = registered(ENCLAVE, EXECUTORS, 3, 0);
        let first = delivered(&f, &mut state, log.clone()).await;
        assert!(
            matches!(
                first.as_slice(),
                [FollowerItem::Log(ChainLog {
                    removed: false,
                    event: ChainEvent::ExecutorRegistered { enclave, env: 1, .. },
                    position: LogPosition { block_number: 3, log_index: 0 },
                    ..
                })] if *enclave == ENCLAVE
            ),
            "{first:?}"
        );
        assert!(delivered(&f, &mut state, log.clone()).await.is_empty());

        let removed = Log {
            removed: Some(true),
            ..log.clone()
        };
        let gone = delivered(&f, &mut state, removed.clone()).await;
        assert!(matches!(
            gone.as_slice(),
            [FollowerItem::Log(ChainLog { removed: true, .. })]
        ));
        assert!(delivered(&f, &mut state, removed).await.is_empty());
        // Back again after the reorg is undone.
        let back = Log {
            removed: Some(false),
            ..log
        };
        assert_eq!(delivered(&f, &mut state, back).await.len(), 1);
    }

    #[tokio::test]
    async fn other_enclaves_wrong_contracts_and_junk_are_not_delivered() {
        let f = follower();
        let mut state = State::new(Some(0));
        let other = registered(Address::repeat_byte(0x99), EXECUTORS, 1, 0);
        assert!(delivered(&f, &mut state, other).await.is_empty());
        let wrong_contract = registered(ENCLAVE, JOBS, 1, 1);
        assert!(delivered(&f, &mut state, wrong_contract).await.is_empty());
        let junk = Log {
            address: JOBS,
            topics: vec![JobRespondedFilter::signature(), H256::zero(), H256::zero()],
            data: Bytes::from(vec![1, 2, 3]),
            ..registered(ENCLAVE, JOBS, 1, 2)
        };
        assert!(delivered(&f, &mut state, junk).await.is_empty());
        let pending = Log {
            block_hash: None,
            ..registered(ENCLAVE, EXECUTORS, 1, 3)
        };
        assert!(delivered(&f, &mut state, pending).await.is_empty());
    }

    #[tokio::test]
    async fn only_slashes_of_this_enclave_are_delivered() {
        let f = follower();
        let mut state = State::new(Some(0));
        let slashed = |enclave: Address, index: u64| Log {
            address: JOBS,
            topics: vec![
                SlashedOnExecutionTimeoutFilter::signature(),
                H256::from_low_u64_be(7),
                H256::from(enclave),
            ],
            data: Bytes::default(),
            ..registered(ENCLAVE, JOBS, 2, index)
        };
        let theirs = slashed(Address::repeat_byte(0x99), 0);
        assert!(delivered(&f, &mut state, theirs).await.is_empty());
        let ours = delivered(&f, &mut state, slashed(ENCLAVE, 1)).await;
        assert!(
            matches!(
                ours.as_slice(),
                [FollowerItem::Log(ChainLog {
                    event: ChainEvent::SlashedOnExecutionTimeout { job_id, enclave },
                    ..
                })] if *job_id == U256::from(7) && *enclave == ENCLAVE
            ),
            "{ours:?}"
        );
        assert!(f.filter().topics[0]
            .as_ref()
            .is_some_and(|t| format!("{t:?}").contains(&format!(
                "{:?}",
                SlashedOnExecutionTimeoutFilter::signature()
            ))));
    }

    #[test]
    fn a_reorg_forgets_what_it_replaced_and_keeps_logs_of_blocks_still_on_the_chain() {
        let mut state = State::new(Some(20));
        let chain_log = |block: u64, hash: u8, index: u64| ChainLog {
            position: LogPosition {
                block_number: block,
                log_index: index,
            },
            block_hash: H256::repeat_byte(hash),
            removed: false,
            event: ChainEvent::ExecutorDrained { enclave: ENCLAVE },
        };
        for (block, hash) in [(10, 0xa0), (11, 0xa1), (12, 0xa2)] {
            state.remember_hash(block, H256::repeat_byte(hash));
            state
                .recent_logs
                .entry(block)
                .or_default()
                .push(chain_log(block, hash, 0));
        }
        // Block 11 was replaced; the new block 11 (0xb1) was already delivered live.
        state.remember_hash(11, H256::repeat_byte(0xb1));
        assert_eq!(
            state.recent_hashes[&11],
            H256::repeat_byte(0xa1),
            "first seen kept"
        );
        state
            .recent_logs
            .entry(11)
            .or_default()
            .push(chain_log(11, 0xb1, 0));
        let canonical =
            HashMap::from([(11, H256::repeat_byte(0xb1)), (10, H256::repeat_byte(0xa0))]);
        let replaced = state.replaced_from(11, &canonical);
        let gone: Vec<(u64, H256)> = replaced
            .iter()
            .map(|l| (l.position.block_number, l.block_hash))
            .collect();
        assert_eq!(
            gone,
            vec![(11, H256::repeat_byte(0xa1)), (12, H256::repeat_byte(0xa2))]
        );
        assert_eq!(state.recent_logs[&11], vec![chain_log(11, 0xb1, 0)]);
        assert_eq!(state.recent_hashes[&11], H256::repeat_byte(0xb1));
        assert!(!state.recent_hashes.contains_key(&12));
        assert!(state.recent_hashes.contains_key(&10));
    }

    /// Tee mode: the filter names TeeManager, Jobs and SecretManager with the TEE topics, and the
    /// same delivery path (duplicates, removals) carries TEE logs as the v2 events.
    #[tokio::test]
    async fn tee_mode_follows_the_tee_contracts_through_the_same_path() {
        use crate::effects::chain::tee::{self, TeeNodeRegisteredFilter};
        const SECRET_MANAGER: Address = Address::repeat_byte(0x04);
        let mut config = follower().config;
        config.protocol = Protocol::Tee;
        let f = LogFollower::new(config, ENCLAVE).with_secret_manager(Some(SECRET_MANAGER));
        let filter = f.filter();
        let addresses = format!("{:?}", filter.address);
        for contract in [EXECUTORS, JOBS, SECRET_MANAGER] {
            assert!(addresses.contains(&format!("{contract:?}")), "{addresses}");
        }
        let topics = format!("{:?}", filter.topics[0]);
        for topic in tee::topics() {
            assert!(topics.contains(&format!("{topic:?}")), "{topics}");
        }
        assert!(!topics.contains(&format!("{:?}", ExecutorRegisteredFilter::signature())));

        let mut state = State::new(Some(0));
        let log = Log {
            topics: vec![
                TeeNodeRegisteredFilter::signature(),
                H256::from(ENCLAVE),
                H256::from(Address::repeat_byte(0x0a)),
            ],
            data: Bytes::from(encode(&[
                Token::Uint(5.into()),
                Token::Uint(100_000_000u64.into()),
                Token::Uint(1.into()),
            ])),
            ..registered(ENCLAVE, EXECUTORS, 4, 0)
        };
        let first = delivered(&f, &mut state, log.clone()).await;
        assert!(
            matches!(
                first.as_slice(),
                [FollowerItem::Log(ChainLog {
                    removed: false,
                    event: ChainEvent::ExecutorRegistered { enclave, env: 1, .. },
                    ..
                })] if *enclave == ENCLAVE
            ),
            "{first:?}"
        );
        assert!(delivered(&f, &mut state, log.clone()).await.is_empty());
        // v2's registration event is not the TEE registry's.
        let v2 = registered(ENCLAVE, EXECUTORS, 4, 1);
        assert!(delivered(&f, &mut state, v2).await.is_empty());
        let removed = Log {
            removed: Some(true),
            ..log
        };
        assert!(matches!(
            delivered(&f, &mut state, removed).await.as_slice(),
            [FollowerItem::Log(ChainLog { removed: true, .. })]
        ));
    }

    /// A `JobCreated` log as a node sends it, `blockTimestamp` as given (None: no field).
    fn job_created_json(block_timestamp: Option<&str>) -> serde_json::Value {
        let data = encode(&[
            Token::FixedBytes(vec![0x11; 32]),
            Token::Bytes(b"in".to_vec()),
            Token::Uint(5_000.into()),
            Token::Array(vec![Token::Address(ENCLAVE)]),
        ]);
        let mut json = serde_json::json!({
            "address": format!("{JOBS:?}"),
            "topics": [
                format!("{:?}", JobCreatedFilter::signature()),
                format!("{:?}", H256::from_low_u64_be(7)),
                format!("{:?}", H256::from_low_u64_be(1)),
                format!("{:?}", H256::from(Address::repeat_byte(0x0b))),
            ],
            "data": format!("0x{}", hex::encode(data)),
            "blockHash": format!("{:?}", H256::repeat_byte(9)),
            "blockNumber": "0x9",
            "transactionHash": format!("{:?}", H256::repeat_byte(2)),
            "transactionIndex": "0x0",
            "logIndex": "0x0",
            "removed": false
        });
        if let Some(time) = block_timestamp {
            json["blockTimestamp"] = serde_json::Value::from(time);
        }
        json
    }

    /// The job's start time comes from the log's `blockTimestamp` where the node sends one: no
    /// block request (the node here refuses every connection). Without it, or with zero, the
    /// block is asked for.
    #[tokio::test]
    async fn a_job_start_time_comes_from_the_log_when_the_node_sends_it() {
        let f = follower();
        let http = Provider::<Http>::try_from("http://127.0.0.1:9").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let timed: NodeLog = serde_json::from_value(job_created_json(Some("0x6b14cde4"))).unwrap();
        let mut state = State::new(Some(0));
        assert!(f.deliver(&http, &mut state, &tx, timed).await.is_ok());
        match rx.try_recv() {
            Ok(FollowerItem::Log(ChainLog {
                event: ChainEvent::JobCreated(job),
                ..
            })) => {
                assert_eq!(job.id, U256::from(7));
                assert_eq!(job.exec_start_time, 0x6b14cde4);
            }
            other => panic!("expected the job, got {other:?}"),
        }
        for untimed in [job_created_json(None), job_created_json(Some("0x0"))] {
            let untimed: NodeLog = serde_json::from_value(untimed).unwrap();
            let mut state = State::new(Some(0));
            let result = f.deliver(&http, &mut state, &tx, untimed).await;
            assert!(result.is_err(), "the block had to be asked for");
        }
    }

    #[test]
    fn the_seen_window_is_pruned_below_the_cursor() {
        let mut state = State::new(Some(1000));
        state.seen.insert((H256::repeat_byte(1), 0), (10, false));
        state.seen.insert((H256::repeat_byte(2), 0), (900, false));
        state.prune();
        assert_eq!(state.seen.len(), 1);
    }
}
