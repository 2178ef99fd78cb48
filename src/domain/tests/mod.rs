//! Unit tests of the domain APIs against the stubs in `domain::testing`, a module per API;
//! the harness and shared helpers are here.

use std::sync::{Arc, Mutex};

use ethers::types::{Address, H256, U256};

use super::api::FollowVerdict;
use super::dal::*;
use super::eip712::{output_digest, recover, registration_digest};
use super::model::*;
use super::owner_auth::{mutable_config_message, OwnerSignature};
use super::testing::*;
use super::{AuthRejection, DomainError, Executor, Ports, Settings};

mod configure;
mod contracts;
mod execute;
mod readiness;
mod reorg;
mod reorg_sends;
mod secrets;
mod settle;
mod store_failure;
mod submit;

const ENCLAVE_SECRET: [u8; 32] = [0x42; 32];
const T0_MS: u64 = 1_700_000_000_000;

fn enclave() -> Address {
    key_signer(ENCLAVE_SECRET).address()
}

struct Harness {
    executor: Arc<Executor>,
    chain: ChainScript,
    store: Arc<dyn Store>,
}

fn harness_with(code: MockCodeSource, sandbox: MockSandbox, slots: usize) -> Harness {
    harness_on(
        code,
        sandbox,
        slots,
        Arc::new(memory_store()),
        canonical_reader(),
    )
}

fn harness_on(
    code: MockCodeSource,
    sandbox: MockSandbox,
    slots: usize,
    store: Arc<dyn Store>,
    reader: MockChainReader,
) -> Harness {
    let chain = ChainScript::default();
    let writer = chain.writer(store.clone());
    harness_of(code, sandbox, slots, store, reader, chain, writer)
}

/// The usual harness, but its chain writer expects exactly the transactions `expect` sets up
/// (mockall expectations; any other transaction fails the test).
fn harness_expecting(expect: impl FnOnce(&mut MockChainWriter)) -> Harness {
    harness_of(
        code_ok(),
        echo_sandbox(),
        2,
        Arc::new(memory_store()),
        canonical_reader(),
        ChainScript::default(),
        ChainScript::writer_expecting(expect),
    )
}

fn harness_of(
    code: MockCodeSource,
    sandbox: MockSandbox,
    slots: usize,
    store: Arc<dyn Store>,
    reader: MockChainReader,
    chain: ChainScript,
    writer: MockChainWriter,
) -> Harness {
    let ports = Ports {
        signer: Arc::new(key_signer(ENCLAVE_SECRET)),
        clock: Arc::new(TokioClock::starting_at(T0_MS)),
        store: store.clone(),
        secrets: Arc::new(memory_secrets()),
        code: Arc::new(code),
        sandbox: Arc::new(sandbox),
        slots: Arc::new(
            SLOTS_OVERRIDE
                .with(|o| o.borrow_mut().take())
                .unwrap_or_else(|| counting_slots(slots)),
        ),
        chain: Arc::new(writer),
        reader: Arc::new(reader),
        probe: Arc::new(probed_chain(Some(100), true)),
        metrics: Arc::new(counting_metrics()),
    };
    // The stub slots enforce no limits; the harness's operator accepts that, as a devnet would.
    let mut settings = Settings {
        execution_buffer_secs: 10,
        allow_unlimited_slots: true,
        ..Settings::default()
    };
    SETTINGS_OVERRIDE.with(|o| {
        if let Some(adjust) = o.borrow_mut().take() {
            adjust(&mut settings);
        }
    });
    Harness {
        executor: Executor::new(ports, settings),
        chain,
        store,
    }
}

fn harness() -> Harness {
    harness_with(code_ok(), echo_sandbox(), 2)
}

type AdjustSettings = Box<dyn FnOnce(&mut Settings)>;

thread_local! {
    /// A change to the settings of the next harness built on this thread (`harness_adjusted`).
    static SETTINGS_OVERRIDE: std::cell::RefCell<Option<AdjustSettings>> =
        const { std::cell::RefCell::new(None) };
    /// The slots of the next harness built on this thread, instead of `counting_slots`.
    static SLOTS_OVERRIDE: std::cell::RefCell<Option<crate::domain::dal::MockSlots>> =
        const { std::cell::RefCell::new(None) };
}

/// `harness()` on `slots`.
fn harness_on_slots(slots: crate::domain::dal::MockSlots) -> Harness {
    SLOTS_OVERRIDE.with(|o| *o.borrow_mut() = Some(slots));
    harness()
}

/// `harness()` with its settings changed by `adjust` (e.g. the TEE generation).
fn harness_adjusted(adjust: impl FnOnce(&mut Settings) + 'static) -> Harness {
    SETTINGS_OVERRIDE.with(|o| *o.borrow_mut() = Some(Box::new(adjust)));
    harness()
}

fn log(block: u64, event: ChainEvent) -> ChainLog {
    ChainLog {
        position: LogPosition {
            block_number: block,
            log_index: 0,
        },
        block_hash: H256::repeat_byte(block as u8),
        removed: false,
        event,
    }
}

/// The gas key the harness's operator sets before registering.
const GAS_SECRET: [u8; 32] = [0x6a; 32];

/// Configured as an operator does (gas key, then owner) and registered on chain.
fn registered(h: &Harness) {
    let owner = Address::repeat_byte(0x0e);
    h.executor.configure_mutable(GAS_SECRET, None).unwrap();
    h.executor.configure_immutable(owner).unwrap();
    let verdict = h
        .executor
        .on_chain_event(log(
            1,
            ChainEvent::ExecutorRegistered {
                enclave: enclave(),
                owner,
                job_capacity: U256::from(2),
                env: 1,
            },
        ))
        .unwrap();
    assert_eq!(verdict, FollowVerdict::Continue);
    assert_eq!(h.executor.chain_status().unwrap(), ChainStatus::Serving);
}

fn job_now(id: u64, selected: Vec<Address>, input: &[u8]) -> Job {
    let mut job = sample_job(id, selected, T0_MS / 1000);
    job.code_inputs = input.to_vec();
    job
}

/// What a job that ran fine for 3 ms and answered `output` returns.
fn outcome_of(output: &[u8]) -> ExecutionOutcome {
    ExecutionOutcome {
        output: output.to_vec(),
        error_code: ErrorCode::Ok,
        total_time_ms: 3,
    }
}

async fn settle_all(h: &Harness) {
    tokio::spawn(h.executor.clone().run_dispatcher());
    tokio::spawn(h.executor.clone().run_settler());
    // Let every job run, submit and reach its settlement check (windows are 11 s).
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
}

/// `job` as announced by the JobCreated log in block `block` (hash and tx hash from `block`).
fn created_in(mut job: Job, block: u8) -> Job {
    job.origin = Some(JobOrigin {
        block_number: u64::from(block),
        block_hash: H256::repeat_byte(block),
        tx_hash: H256::repeat_byte(block ^ 0xff),
        log_index: 0,
    });
    job
}

fn removed(block: u64, event: ChainEvent) -> ChainLog {
    ChainLog {
        removed: true,
        ..log(block, event)
    }
}
