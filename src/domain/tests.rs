//! Unit tests of the domain APIs against mockall stubs of the ports.

use std::sync::{Arc, Mutex};

use ethers::types::{Address, H256, U256};

use super::api::FollowVerdict;
use super::dal::*;
use super::eip712::{output_digest, recover, registration_digest};
use super::model::*;
use super::owner_auth::{mutable_config_message, OwnerSignature};
use super::testing::*;
use super::{AuthRejection, DomainError, Executor, Ports, Settings};

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
        code: Arc::new(code),
        sandbox: Arc::new(sandbox),
        slots: Arc::new(counting_slots(slots)),
        chain: Arc::new(writer),
        reader: Arc::new(reader),
        probe: Arc::new(probed_chain(Some(100), true)),
        metrics: Arc::new(counting_metrics()),
    };
    // The stub slots enforce no limits; the harness's operator accepts that, as a devnet would.
    let settings = Settings {
        execution_buffer_secs: 10,
        allow_unlimited_slots: true,
        ..Settings::default()
    };
    Harness {
        executor: Executor::new(ports, settings),
        chain,
        store,
    }
}

fn harness() -> Harness {
    harness_with(code_ok(), echo_sandbox(), 2)
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

#[test]
fn the_owner_is_set_once_and_never_to_zero() {
    let h = harness();
    let zero = h.executor.configure_immutable(Address::zero()).unwrap_err();
    assert!(matches!(zero, DomainError::InvalidOwner(_)));
    h.executor
        .configure_immutable(Address::repeat_byte(1))
        .unwrap();
    let again = h
        .executor
        .configure_immutable(Address::repeat_byte(2))
        .unwrap_err();
    assert!(matches!(again, DomainError::OwnerAlreadySet(a) if a == Address::repeat_byte(1)));
    assert_eq!(
        h.executor.details().unwrap().owner_address,
        Address::repeat_byte(1)
    );
}

#[test]
fn the_gas_key_is_validated_and_replaceable() {
    let h = harness();
    assert!(matches!(
        h.executor.configure_mutable([0; 32], None),
        Err(DomainError::InvalidGasKey(_))
    ));
    assert!(matches!(
        h.executor.configure_mutable([0xff; 32], None),
        Err(DomainError::InvalidGasKey(_))
    ));
    assert_eq!(
        h.store.gas_key().unwrap(),
        None,
        "a refused key is not stored"
    );
    // Before an owner exists there is no one to sign: unsigned changes pass.
    h.executor.configure_mutable([1; 32], None).unwrap();
    h.executor.configure_mutable([2; 32], None).unwrap();
    assert_eq!(h.store.gas_key().unwrap(), Some([2; 32]));
}

/// The owner's EIP-191 signature of a gas key change, as the client builds it.
fn owner_signs(
    owner: &ethers::signers::LocalWallet,
    gas: [u8; 32],
    timestamp: u64,
) -> OwnerSignature {
    let gas_key = k256::ecdsa::SigningKey::from_slice(&gas).unwrap();
    let gas = ethers::utils::secret_key_to_address(&gas_key);
    let message = mutable_config_message(enclave(), gas, timestamp);
    let signature = owner
        .sign_hash(ethers::utils::hash_message(message))
        .unwrap()
        .to_vec();
    OwnerSignature {
        timestamp,
        signature: signature.try_into().unwrap(),
    }
}

#[tokio::test(start_paused = true)]
async fn once_the_owner_is_set_the_gas_key_needs_its_fresh_unreplayed_signature() {
    use ethers::signers::Signer;
    let h = harness();
    let owner = ethers::signers::LocalWallet::from_bytes(&[7; 32]).unwrap();
    let stranger = ethers::signers::LocalWallet::from_bytes(&[8; 32]).unwrap();
    h.executor.configure_immutable(owner.address()).unwrap();
    let now = T0_MS / 1000;
    let rejection =
        |auth: Option<&OwnerSignature>| match h.executor.configure_mutable([1; 32], auth) {
            Err(DomainError::Unauthorized(r)) => r,
            other => panic!("expected a rejection, got {other:?}"),
        };
    assert_eq!(rejection(None), AuthRejection::Missing);
    assert!(matches!(
        rejection(Some(&owner_signs(&stranger, [1; 32], now))),
        AuthRejection::WrongSigner { owner: o, .. } if o == owner.address()
    ));
    // Signed for another gas key: recovers to someone else.
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [2; 32], now))),
        AuthRejection::WrongSigner { .. }
    ));
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [1; 32], now - 301))),
        AuthRejection::Stale {
            age_secs: 301,
            max_age_secs: 300
        }
    ));
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [1; 32], now + 3600))),
        AuthRejection::FromTheFuture { .. }
    ));
    assert_eq!(
        h.store.gas_key().unwrap(),
        None,
        "nothing refused was stored"
    );

    let good = owner_signs(&owner, [1; 32], now - 10);
    h.executor.configure_mutable([1; 32], Some(&good)).unwrap();
    assert_eq!(
        rejection(Some(&good)),
        AuthRejection::Replayed {
            timestamp: now - 10,
            last: now - 10
        }
    );
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [1; 32], now - 20))),
        AuthRejection::Replayed { .. }
    ));
    h.executor
        .configure_mutable([1; 32], Some(&owner_signs(&owner, [1; 32], now)))
        .unwrap();
}

#[test]
fn unsigned_changes_pass_only_when_explicitly_allowed() {
    let mut h = harness();
    let owner = Address::repeat_byte(3);
    h.executor.configure_immutable(owner).unwrap();
    assert!(h.executor.configure_mutable([1; 32], None).is_err());
    let ports = h.executor.ports().clone();
    let settings = Settings {
        admin_allow_unsigned: true,
        ..h.executor.settings().clone()
    };
    h.executor = Executor::new(ports, settings);
    h.executor.configure_mutable([1; 32], None).unwrap();
}

#[tokio::test(start_paused = true)]
async fn registration_needs_both_configs_and_recovers_to_the_enclave() {
    let h = harness();
    let follow = h.executor.follow_requested();
    assert!(matches!(
        h.executor.register_enclave(),
        Err(DomainError::NotConfigured(_))
    ));
    h.executor.configure_mutable([1; 32], None).unwrap();
    assert!(matches!(
        h.executor.register_enclave(),
        Err(DomainError::NotConfigured(_))
    ));
    let owner = Address::repeat_byte(0x0e);
    h.executor.configure_immutable(owner).unwrap();
    let reg = h.executor.register_enclave().unwrap();
    assert_eq!((reg.owner, reg.job_capacity, reg.env), (owner, 2, 1));
    assert_eq!(reg.sign_timestamp, T0_MS / 1000);
    let digest = registration_digest(owner, 2, 1, reg.sign_timestamp);
    assert_eq!(recover(digest, &reg.signature), Some(enclave()));
    assert!(
        *follow.borrow(),
        "asking for the message starts the chain listener"
    );
}

#[tokio::test(start_paused = true)]
async fn execution_maps_every_result_to_its_error_code() {
    let h = harness();
    let slot = Slot {
        index: 0,
        cgroup_procs: vec![],
    };
    let cases: [(&[u8], ErrorCode, &[u8]); 5] = [
        (b"2,5", ErrorCode::Ok, b"2,5"),
        (b"loop", ErrorCode::DeadlineExceeded, b""),
        (b"big", ErrorCode::OutputTooLarge, b""),
        (b"bad", ErrorCode::LoadFailed, b""),
        (b"oom", ErrorCode::Ok, b"the job's runtime stopped: killed"),
    ];
    for (input, code, output) in cases {
        let job = job_now(1, vec![], input);
        let outcome = h.executor.execute_job(&job, &slot).await.unwrap();
        assert_eq!(outcome.error_code, code, "input {input:?}");
        assert_eq!(outcome.output, output, "input {input:?}");
        if code == ErrorCode::DeadlineExceeded {
            assert_eq!(outcome.total_time_ms, job.deadline_ms);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn code_fetch_failures_become_codes_1_and_2_and_transient_ones_are_retried() {
    let mut code = MockCodeSource::new();
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    code.expect_fetch_code().returning(move |hash| {
        *c.lock().unwrap() += 1;
        match hash.0[0] {
            1 => Err(CodeFetchError::NotFound(hash)),
            2 => Err(CodeFetchError::WrongContract(hash)),
            3 => Err(CodeFetchError::BadCalldata("selector".into())),
            _ if *c.lock().unwrap() < 6 => Err(CodeFetchError::Transient("rpc down".into())),
            _ => Ok("code".into()),
        }
    });
    let h = harness_with(code, echo_sandbox(), 1);
    let slot = Slot {
        index: 0,
        cgroup_procs: vec![],
    };
    for (byte, expected) in [
        (1u8, ErrorCode::CodeNotFound),
        (2, ErrorCode::CodeNotFound),
        (3, ErrorCode::BadCalldata),
        (4, ErrorCode::Ok),
    ] {
        let mut job = job_now(1, vec![], b"in");
        job.codehash = H256::repeat_byte(byte);
        let outcome = h.executor.execute_job(&job, &slot).await.unwrap();
        assert_eq!(outcome.error_code, expected, "codehash byte {byte}");
    }
    assert_eq!(
        *calls.lock().unwrap(),
        6,
        "two transient failures were retried"
    );
}

#[tokio::test(start_paused = true)]
async fn events_are_ignored_until_registration_and_filtered_by_env() {
    let h = harness();
    let me = enclave();
    h.executor
        .on_chain_event(log(1, ChainEvent::JobCreated(job_now(1, vec![me], b"x"))))
        .unwrap();
    assert_eq!(h.store.job(U256::from(1)).unwrap(), None, "not serving yet");
    registered(&h);
    let mut env2 = job_now(2, vec![me], b"x");
    env2.env = 2;
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(env2)))
        .unwrap();
    assert_eq!(
        h.store.job(U256::from(2)).unwrap(),
        None,
        "env 2 is not ours"
    );
    h.executor
        .on_chain_event(log(3, ChainEvent::JobCreated(job_now(3, vec![me], b"x"))))
        .unwrap();
    h.executor
        .on_chain_event(log(3, ChainEvent::JobCreated(job_now(3, vec![me], b"x"))))
        .unwrap();
    let record = h.store.job(U256::from(3)).unwrap().unwrap();
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(record.job.code_inputs, b"x");
    assert_eq!(h.executor.load().0, 1);
    let other = Address::repeat_byte(0x99);
    h.executor
        .on_chain_event(log(
            4,
            ChainEvent::JobCreated(job_now(4, vec![other], b"x")),
        ))
        .unwrap();
    assert_eq!(
        h.store.job(U256::from(4)).unwrap().unwrap().state,
        JobState::Observed
    );
    assert_eq!(h.store.cursor().unwrap(), Some(4));
    h.executor.on_chain_synced(9).unwrap();
    h.executor
        .on_chain_event(log(5, ChainEvent::ExecutorDrained { enclave: other }))
        .unwrap();
    assert_eq!(
        h.store.cursor().unwrap(),
        Some(9),
        "the cursor never moves back"
    );
    assert_eq!(h.executor.chain_status().unwrap(), ChainStatus::Serving);
}

#[tokio::test(start_paused = true)]
async fn a_removed_job_creation_is_forgotten() {
    let h = harness();
    registered(&h);
    let job = job_now(5, vec![Address::repeat_byte(0x99)], b"x");
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(job.clone())))
        .unwrap();
    let mut removed = log(2, ChainEvent::JobCreated(job));
    removed.removed = true;
    h.executor.on_chain_event(removed).unwrap();
    assert_eq!(h.store.job(U256::from(5)).unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn drain_revive_and_deregister_follow_the_chain() {
    let h = harness();
    registered(&h);
    let me = enclave();
    h.executor
        .on_chain_event(log(2, ChainEvent::ExecutorDrained { enclave: me }))
        .unwrap();
    assert_eq!(h.executor.chain_status().unwrap(), ChainStatus::Draining);
    h.executor
        .on_chain_event(log(3, ChainEvent::ExecutorRevived { enclave: me }))
        .unwrap();
    assert_eq!(h.executor.chain_status().unwrap(), ChainStatus::Serving);
    let verdict = h
        .executor
        .on_chain_event(log(4, ChainEvent::ExecutorDeregistered { enclave: me }))
        .unwrap();
    assert_eq!(verdict, FollowVerdict::Stop);
    h.executor
        .on_chain_event(log(5, ChainEvent::JobCreated(job_now(6, vec![me], b"x"))))
        .unwrap();
    assert_eq!(h.store.job(U256::from(6)).unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn selected_jobs_run_sign_and_land_and_others_are_settled() {
    let h = harness();
    registered(&h);
    let me = enclave();
    for id in 1..=5u64 {
        let input = format!("job {id}");
        h.executor
            .on_chain_event(log(
                id + 1,
                ChainEvent::JobCreated(job_now(id, vec![me], input.as_bytes())),
            ))
            .unwrap();
    }
    let other = Address::repeat_byte(0x99);
    h.executor
        .on_chain_event(log(
            9,
            ChainEvent::JobCreated(job_now(9, vec![other], b"x")),
        ))
        .unwrap();
    settle_all(&h).await;
    let outputs = h.chain.outputs.lock().unwrap().clone();
    assert_eq!(outputs.len(), 5, "five jobs on two slots all answered");
    for out in &outputs {
        assert_eq!(out.output, format!("job {}", out.job_id).into_bytes());
        let digest = output_digest(
            out.job_id,
            &out.output,
            out.total_time_ms,
            out.error_code.as_u8(),
            out.sign_timestamp,
        );
        assert_eq!(recover(digest, &out.signature), Some(me));
        let record = h.store.job(out.job_id).unwrap().unwrap();
        assert!(matches!(record.state, JobState::Confirmed { .. }));
    }
    // Our jobs were never marked as answered on chain here, so they too are settled; job 9
    // (not ours) is settled exactly once.
    let slashes = h.chain.slashes.lock().unwrap().clone();
    assert_eq!(slashes.iter().filter(|id| **id == U256::from(9)).count(), 1);
    assert!(h.store.job(U256::from(9)).unwrap().unwrap().settled);
    let metrics = h.executor.metrics_text();
    assert!(metrics.contains("executed_0 5\n"), "{metrics}");
    assert!(metrics.contains("finished_Confirmed 5\n"), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_job_ends_once_in_the_metrics_whether_the_event_or_the_receipt_comes_first() {
    let h = harness();
    registered(&h);
    let me = enclave();
    let job = job_now(11, vec![me], b"x");
    let outcome = outcome_of(b"x");
    let output = h.executor.sign_output(&job, &outcome).unwrap();
    h.store
        .put_job(&JobRecord::new(
            job.clone(),
            JobState::Executed {
                output: output.clone(),
            },
        ))
        .unwrap();
    // The chain's JobResponded for us arrives before the sender's receipt.
    h.executor
        .on_chain_event(log(
            3,
            ChainEvent::JobResponded {
                job_id: job.id,
                executor: me,
                output_count: 1,
            },
        ))
        .unwrap();
    h.executor
        .set_state(
            &job,
            JobState::Confirmed {
                output: Some(output),
                tx_hash: Some(H256::repeat_byte(1)),
            },
        )
        .unwrap();
    let metrics = h.executor.metrics_text();
    assert!(metrics.contains("finished_Confirmed 1\n"), "{metrics}");
    let status = h.executor.job_status(job.id).unwrap();
    assert_eq!(status.state, "confirmed");
    assert_eq!(status.tx_hash, Some(H256::repeat_byte(1)));
    assert_eq!(status.error_code, Some(0));
    assert!(matches!(
        h.executor.job_status(U256::from(12)),
        Err(DomainError::UnknownJob(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn answered_jobs_are_not_settled() {
    let h = harness();
    registered(&h);
    let other = Address::repeat_byte(0x99);
    h.executor
        .on_chain_event(log(
            2,
            ChainEvent::JobCreated(job_now(7, vec![other], b"x")),
        ))
        .unwrap();
    h.executor
        .on_chain_event(log(
            3,
            ChainEvent::JobResponded {
                job_id: U256::from(7),
                executor: other,
                output_count: 1,
            },
        ))
        .unwrap();
    settle_all(&h).await;
    assert!(h.chain.slashes.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_earliest_window_runs_first_when_slots_are_short() {
    let h = harness_with(code_ok(), echo_sandbox(), 1);
    registered(&h);
    let me = enclave();
    let mut late = job_now(1, vec![me], b"late");
    late.deadline_ms = 5_000;
    let early = job_now(2, vec![me], b"early");
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(late)))
        .unwrap();
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(early)))
        .unwrap();
    settle_all(&h).await;
    let order: Vec<Vec<u8>> = h
        .chain
        .outputs
        .lock()
        .unwrap()
        .iter()
        .map(|o| o.output.clone())
        .collect();
    assert_eq!(order, vec![b"early".to_vec(), b"late".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn submission_refusals_are_classified() {
    let h = harness();
    registered(&h);
    let job = job_now(1, vec![enclave()], b"x");
    let outcome = outcome_of(b"x");
    let cases = [
        (
            vec![Err(ChainError::Transient("down".into())), mined()],
            "confirmed",
            2,
        ),
        (
            vec![reverted(Revert::AlreadySubmittedOutput)],
            "confirmed",
            1,
        ),
        (
            vec![reverted(Revert::SignatureTooOld), mined()],
            "confirmed",
            2,
        ),
        (vec![reverted(Revert::ExecutionTimeOver)], "abandoned", 1),
        (vec![reverted(Revert::NotSelectedExecutor)], "abandoned", 1),
    ];
    for (answers, state, sends) in cases {
        h.chain.outputs.lock().unwrap().clear();
        *h.chain.submit_answers.lock().unwrap() = answers;
        h.store
            .put_job(&JobRecord::new(job.clone(), JobState::Running))
            .unwrap();
        h.executor
            .submit_output(&job, outcome.clone())
            .await
            .unwrap();
        let record = h.store.job(job.id).unwrap().unwrap();
        assert_eq!(record.state.name(), state);
        assert_eq!(h.chain.outputs.lock().unwrap().len(), sends);
    }
}

fn out_of_gas(gas_limit: u64) -> Result<TxOutcome, ChainError> {
    Ok(TxOutcome::Reverted {
        tx_hash: Some(H256::repeat_byte(0x0f)),
        revert: Revert::OutOfGas { gas_limit },
        gas_used: gas_limit,
    })
}

#[tokio::test(start_paused = true)]
async fn an_output_out_of_gas_is_resent_with_more_gas_and_its_gas_is_counted() {
    let job = job_now(1, vec![enclave()], b"x");
    let until_ms = job.window_end_ms(10);
    // Three sends, in this order, each with twice the gas floor of the last; nothing else.
    let h = harness_expecting(|chain| {
        let mut sends = mockall::Sequence::new();
        for (floor, answer) in [
            (0, out_of_gas(700_000)),
            (1_400_000, out_of_gas(1_400_000)),
            (2_800_000, mined()),
        ] {
            chain
                .expect_submit_output()
                .withf(move |output, plan, _| {
                    output.job_id == U256::from(1)
                        && plan.min_gas == floor
                        && plan.max_gas == Settings::default().max_output_gas
                        && plan.until_ms == until_ms
                })
                .times(1)
                .in_sequence(&mut sends)
                .return_once(move |_, _, _| answer);
        }
    });
    registered(&h);
    // Journalled as running, as the dispatcher leaves it before the output is signed.
    h.store
        .put_job(&JobRecord::new(job.clone(), JobState::Running))
        .unwrap();
    h.executor
        .submit_output(&job, outcome_of(b"x"))
        .await
        .unwrap();

    let record = h.store.job(job.id).unwrap().unwrap();
    assert_eq!(record.state.name(), "confirmed", "{record:?}");
    // Reverted attempts cost gas too: all of it is in the journal and the metrics.
    assert_eq!(record.gas_spent, 700_000 + 1_400_000 + 50_000);
    let metrics = h.executor.metrics_text();
    assert!(metrics.contains("gas_spent 2150000\n"), "{metrics}");
    assert!(
        metrics.contains(&format!("gas_burner_{:?} 2\n", job.owner)),
        "the job owner is named as a gas burner: {metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_output_out_of_gas_at_the_maximum_is_abandoned_saying_why() {
    let h = harness();
    registered(&h);
    let job = job_now(1, vec![enclave()], b"x");
    // Journalled as running, as the dispatcher leaves it before the output is signed.
    h.store
        .put_job(&JobRecord::new(job.clone(), JobState::Running))
        .unwrap();
    let outcome = outcome_of(b"x");
    let max = Settings::default().max_output_gas;
    *h.chain.submit_answers.lock().unwrap() = vec![out_of_gas(max / 2 + 1), out_of_gas(max)];
    h.executor.submit_output(&job, outcome).await.unwrap();
    let record = h.store.job(job.id).unwrap().unwrap();
    let JobState::Abandoned { reason } = &record.state else {
        panic!("{record:?}");
    };
    assert!(
        reason.contains("out of gas") && reason.contains("EXECUTOR_MAX_OUTPUT_GAS"),
        "{reason}"
    );
    assert_eq!(
        h.chain.outputs.lock().unwrap().len(),
        2,
        "never above the maximum"
    );
    assert_eq!(h.chain.plans.lock().unwrap()[1].min_gas, max);
}

#[tokio::test(start_paused = true)]
async fn jobs_of_a_denied_job_owner_are_refused_and_never_run() {
    let denied = Address::repeat_byte(0xd0);
    let mut h = harness();
    let executor = Executor::new(
        h.executor.ports().clone(),
        Settings {
            execution_buffer_secs: 10,
            denied_job_owners: vec![denied],
            ..Settings::default()
        },
    );
    h.executor = executor;
    registered(&h);
    let mut theirs = job_now(1, vec![enclave()], b"x");
    theirs.owner = denied;
    let ours = job_now(2, vec![enclave()], b"y");
    for (block, job) in [(2, theirs.clone()), (3, ours.clone())] {
        h.executor
            .on_chain_event(log(block, ChainEvent::JobCreated(job)))
            .unwrap();
    }
    tokio::spawn(h.executor.clone().run_dispatcher());
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let refused = h.store.job(theirs.id).unwrap().unwrap();
    let JobState::Abandoned { reason } = &refused.state else {
        panic!("{refused:?}");
    };
    assert!(reason.contains("EXECUTOR_DENIED_JOB_OWNERS"), "{reason}");
    let sent: Vec<U256> = h
        .chain
        .outputs
        .lock()
        .unwrap()
        .iter()
        .map(|o| o.job_id)
        .collect();
    assert_eq!(sent, vec![ours.id], "only the other owner's job runs");
    assert_eq!(
        h.store.job(ours.id).unwrap().unwrap().state.name(),
        "confirmed"
    );
}

#[tokio::test(start_paused = true)]
async fn every_refused_output_is_counted_by_reason() {
    let h = harness();
    registered(&h);
    let job = job_now(1, vec![enclave()], b"x");
    // Journalled as running, as the dispatcher leaves it before the output is signed.
    h.store
        .put_job(&JobRecord::new(job.clone(), JobState::Running))
        .unwrap();
    let outcome = outcome_of(b"x");
    *h.chain.submit_answers.lock().unwrap() = vec![
        reverted(Revert::SignatureTooOld),
        reverted(Revert::ExecutionTimeOver),
    ];
    h.executor.submit_output(&job, outcome).await.unwrap();
    let metrics = h.executor.metrics_text();
    assert!(
        metrics.contains("reverted_signature_too_old 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reverted_execution_time_over 1\n"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn our_slash_is_counted_once_and_other_enclaves_slashes_not_at_all() {
    let h = harness();
    registered(&h);
    let me = enclave();
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(job_now(5, vec![me], b"x"))))
        .unwrap();
    let slashed = |enclave| ChainEvent::SlashedOnExecutionTimeout {
        job_id: U256::from(5),
        enclave,
    };
    h.executor
        .on_chain_event(log(9, slashed(Address::repeat_byte(0x99))))
        .unwrap();
    assert!(!h.executor.metrics_text().contains("slashed"));
    // Delivered twice (a backfill after a reconnect or restart): counted once.
    for _ in 0..2 {
        h.executor.on_chain_event(log(9, slashed(me))).unwrap();
    }
    let metrics = h.executor.metrics_text();
    assert!(metrics.contains("slashed 1\n"), "{metrics}");
    let record = h.store.job(U256::from(5)).unwrap().unwrap();
    assert!(record.slashed && record.settled);
}

#[tokio::test(start_paused = true)]
async fn the_metrics_say_whether_the_executor_is_ready() {
    let h = harness();
    assert!(h.executor.metrics_text().contains("ready 0\n"));
    registered(&h);
    h.executor.record_probe(Probe {
        chain_head: Some(10),
        workerd_found: true,
        gas_balance_wei: None,
        at_ms: T0_MS,
    });
    assert!(h.executor.metrics_text().contains("ready 1\n"));
}

#[tokio::test(start_paused = true)]
async fn the_status_report_shows_the_latest_jobs_newest_first_and_the_last_probe() {
    let h = harness();
    registered(&h);
    for id in 1..=15 {
        h.store
            .put_job(&JobRecord::new(
                job_now(id, vec![], b"x"),
                JobState::Observed,
            ))
            .unwrap();
    }
    h.store.set_cursor(101).unwrap();
    let before = h.executor.status(10).unwrap();
    assert_eq!(before.chain_head, None, "no probe yet");
    assert!(!before.readiness.ready);
    h.executor.record_probe(Probe {
        chain_head: Some(120),
        workerd_found: true,
        gas_balance_wei: Some(U256::from(7)),
        at_ms: T0_MS,
    });
    let report = h.executor.status(10).unwrap();
    let ids: Vec<U256> = report.jobs.iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        (6..=15).rev().map(U256::from).collect::<Vec<_>>(),
        "the last 10 journalled, newest first"
    );
    assert_eq!(report.head_lag_blocks(), Some(20));
    assert_eq!(report.gas_balance_wei, Some(U256::from(7)));
    assert_eq!(report.job_capacity, 2);
    assert!(report.readiness.ready);
    assert_eq!(report.chain_status, ChainStatus::Serving);
}

#[tokio::test(start_paused = true)]
async fn refusals_of_the_published_jobs_end_the_job_and_keep_a_landed_output_confirmed() {
    let h = harness();
    registered(&h);
    let me = enclave();
    let outcome = outcome_of(b"x");
    // Panic(0x32): no such job; one attempt, abandoned with the reason.
    let unknown = job_now(1, vec![me], b"x");
    // Journalled as running, as the dispatcher leaves it before the output is signed.
    h.store
        .put_job(&JobRecord::new(unknown.clone(), JobState::Running))
        .unwrap();
    *h.chain.submit_answers.lock().unwrap() = vec![reverted(Revert::UnknownJob)];
    h.executor
        .submit_output(&unknown, outcome.clone())
        .await
        .unwrap();
    let record = h.store.job(unknown.id).unwrap().unwrap();
    assert!(
        matches!(&record.state, JobState::Abandoned { reason } if reason.contains("no job with this id")),
        "{:?}",
        record.state
    );
    assert_eq!(h.chain.outputs.lock().unwrap().len(), 1);

    // JobsExecutionTimeOver inside the window: the job was deleted at its 3rd output. Nothing
    // is left to do; our JobResponded, read afterwards, makes it confirmed.
    let deleted = job_now(
        2,
        vec![me, Address::repeat_byte(2), Address::repeat_byte(3)],
        b"x",
    );
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(deleted.clone())))
        .unwrap();
    *h.chain.submit_answers.lock().unwrap() = vec![reverted(Revert::ExecutionTimeOver)];
    h.executor
        .submit_output(&deleted, outcome.clone())
        .await
        .unwrap();
    let record = h.store.job(deleted.id).unwrap().unwrap();
    assert!(
        matches!(&record.state, JobState::Abandoned { reason } if reason.contains("fully answered")),
        "{:?}",
        record.state
    );
    assert_eq!(h.chain.outputs.lock().unwrap().len(), 2, "not retried");
    for (block, executor, count) in [
        (3, me, 1),
        (4, Address::repeat_byte(2), 2),
        (5, Address::repeat_byte(3), 3),
    ] {
        h.executor
            .on_chain_event(log(
                block,
                ChainEvent::JobResponded {
                    job_id: deleted.id,
                    executor,
                    output_count: count,
                },
            ))
            .unwrap();
    }
    let record = h.store.job(deleted.id).unwrap().unwrap();
    assert_eq!(record.state.name(), "confirmed");
    assert!(record.settled, "fully answered: nothing to settle");

    settle_all(&h).await;
    assert!(
        h.chain.slashes.lock().unwrap().is_empty(),
        "{:?}",
        h.chain.slashes
    );
}

#[tokio::test(start_paused = true)]
async fn an_enclave_key_the_chain_refuses_stops_job_taking_until_registered_again() {
    let h = harness();
    registered(&h);
    let me = enclave();
    assert_eq!(h.executor.enclave_refusal(), None);
    *h.chain.submit_answers.lock().unwrap() = vec![reverted(Revert::EnclaveNotVerified)];
    h.executor
        .on_chain_event(log(
            2,
            ChainEvent::JobCreated(job_now(1, vec![me], b"first")),
        ))
        .unwrap();
    settle_all(&h).await;
    assert_eq!(h.chain.outputs.lock().unwrap().len(), 1);
    let refusal = h.executor.enclave_refusal().expect("the refusal is kept");
    assert!(
        refusal.contains("AttestationAutherKeyNotVerified"),
        "{refusal}"
    );
    let readiness = h.executor.readiness().unwrap();
    assert!(!readiness.enclave_verified && !readiness.ready);
    assert!(h.executor.metrics_text().contains("enclave_refused 1"));

    // The next job that selects us is refused without running, and says why.
    h.executor
        .on_chain_event(log(
            3,
            ChainEvent::JobCreated(job_now(2, vec![me], b"second")),
        ))
        .unwrap();
    settle_all(&h).await;
    assert_eq!(
        h.chain.outputs.lock().unwrap().len(),
        1,
        "not run, not sent"
    );
    let record = h.store.job(U256::from(2)).unwrap().unwrap();
    assert!(
        matches!(&record.state, JobState::Abandoned { reason } if reason.contains("refuses this enclave key")),
        "{:?}",
        record.state
    );

    // Registered again (a fresh attestation): jobs are taken again.
    h.executor
        .on_chain_event(log(
            4,
            ChainEvent::ExecutorRegistered {
                enclave: me,
                owner: Address::repeat_byte(0x0e),
                job_capacity: U256::from(2),
                env: 1,
            },
        ))
        .unwrap();
    assert_eq!(h.executor.enclave_refusal(), None);
    assert!(!h.executor.metrics_text().contains("enclave_refused"));
    let mut third = job_now(3, vec![me], b"third");
    third.exec_start_time = h.executor.ports().clock.now_ms() / 1000;
    h.executor
        .on_chain_event(log(5, ChainEvent::JobCreated(third)))
        .unwrap();
    settle_all(&h).await;
    assert_eq!(
        h.store.job(U256::from(3)).unwrap().unwrap().state.name(),
        "confirmed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_settlement_the_chain_refuses_for_good_is_never_sent_again() {
    // Exactly one settlement, of job 8, refused for good; no output and no other settlement.
    let h = harness_expecting(|chain| {
        chain
            .expect_slash_on_execution_timeout()
            .withf(|id| *id == U256::from(8))
            .times(1)
            .returning(|_| reverted(Revert::UnknownJob));
    });
    registered(&h);
    let other = Address::repeat_byte(0x99);
    h.executor
        .on_chain_event(log(
            2,
            ChainEvent::JobCreated(job_now(8, vec![other], b"x")),
        ))
        .unwrap();
    settle_all(&h).await;
    let record = h.store.job(U256::from(8)).unwrap().unwrap();
    assert!(record.settled, "journalled as settled");
    // A restart does not put it back on the settlement timetable.
    let report = h.executor.recover().unwrap();
    assert_eq!(report.settling, 0);
    settle_all(&h).await;
}

#[tokio::test(start_paused = true)]
async fn a_settlement_refused_because_already_settled_is_final() {
    let h = harness();
    registered(&h);
    let other = Address::repeat_byte(0x99);
    *h.chain.slash_answers.lock().unwrap() = vec![
        Err(ChainError::Transient("down".into())),
        reverted(Revert::DeadlineNotOver),
        reverted(Revert::InvalidJob),
    ];
    h.executor
        .on_chain_event(log(
            2,
            ChainEvent::JobCreated(job_now(8, vec![other], b"x")),
        ))
        .unwrap();
    settle_all(&h).await;
    assert_eq!(h.chain.slashes.lock().unwrap().len(), 3);
    let record = h.store.job(U256::from(8)).unwrap().unwrap();
    assert!(record.settled && record.slash_sent);
}

#[tokio::test(start_paused = true)]
async fn recovery_requeues_accepted_jobs_and_resends_signed_outputs() {
    let h = harness();
    registered(&h);
    let me = enclave();
    let queued = job_now(1, vec![me], b"queued");
    let running = job_now(2, vec![me], b"running");
    let executed = job_now(3, vec![me], b"executed");
    let mut expired = job_now(4, vec![me], b"expired");
    expired.exec_start_time -= 3600;
    let old_output = h
        .executor
        .sign_output(
            &executed,
            &ExecutionOutcome {
                output: b"executed".to_vec(),
                error_code: ErrorCode::Ok,
                total_time_ms: 1,
            },
        )
        .unwrap();
    for (job, state) in [
        (queued, JobState::Queued),
        (running, JobState::Running),
        (executed, JobState::Executed { output: old_output }),
        (expired, JobState::Queued),
    ] {
        h.store.put_job(&JobRecord::new(job, state)).unwrap();
    }
    let report = h.executor.recover().unwrap();
    assert_eq!(
        (report.requeued, report.resubmitting, report.abandoned),
        (2, 1, 1)
    );
    settle_all(&h).await;
    let mut sent: Vec<U256> = h
        .chain
        .outputs
        .lock()
        .unwrap()
        .iter()
        .map(|o| o.job_id)
        .collect();
    sent.sort();
    assert_eq!(sent, vec![U256::from(1), U256::from(2), U256::from(3)]);
    assert_eq!(
        h.store.job(U256::from(4)).unwrap().unwrap().state.name(),
        "abandoned"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sent_output_is_journalled_with_its_transaction_hash_before_the_receipt() {
    let h = harness();
    registered(&h);
    let job = job_now(7, vec![enclave()], b"hello");
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(job.clone())))
        .unwrap();
    settle_all(&h).await;
    let seen = h.chain.journal_when_sent.lock().unwrap().clone();
    assert!(
        matches!(
            seen.as_slice(),
            [JobState::Submitted { tx_hash, output }]
                if *tx_hash == H256::from_low_u64_be(7) && output.output == b"hello"
        ),
        "{seen:?}"
    );
    let record = h.store.job(job.id).unwrap().unwrap();
    assert_eq!(record.state.name(), "confirmed");
}

#[test]
fn a_refusal_after_confirmation_does_not_abandon_the_job() {
    let h = harness();
    let job = job_now(9, vec![enclave()], b"x");
    let confirmed = JobState::Confirmed {
        output: None,
        tx_hash: None,
    };
    h.store
        .put_job(&JobRecord::new(job.clone(), confirmed))
        .unwrap();
    h.executor.abandon(&job, "the chain refused the output");
    assert_eq!(
        h.store.job(job.id).unwrap().unwrap().state.name(),
        "confirmed"
    );
    // A job not yet confirmed is abandoned, with the reason.
    let other = job_now(10, vec![enclave()], b"y");
    h.store
        .put_job(&JobRecord::new(other.clone(), JobState::Running))
        .unwrap();
    h.executor.abandon(&other, "window closed");
    assert!(matches!(
        h.store.job(other.id).unwrap().unwrap().state,
        JobState::Abandoned { reason } if reason == "window closed"
    ));
}

#[tokio::test(start_paused = true)]
async fn finished_jobs_past_the_retention_are_pruned_and_open_ones_kept() {
    let h = harness();
    registered(&h);
    let me = enclave();
    let week = Settings::default().journal_retention_ms / 1000;
    let old = |id: u64| {
        let mut job = job_now(id, vec![me], b"old");
        job.exec_start_time -= week + 3600;
        job
    };
    let confirmed = JobState::Confirmed {
        output: None,
        tx_hash: None,
    };
    let abandoned = JobState::Abandoned {
        reason: "test".into(),
    };
    for (job, state) in [
        (old(1), confirmed.clone()),
        (old(2), abandoned.clone()),
        (old(3), JobState::Observed),
        // Old but never finished: recovery gives it up, pruning leaves it to a later round.
        (old(4), JobState::Queued),
        // Finished but recent: kept for the operator to look at.
        (job_now(5, vec![me], b"new"), confirmed),
    ] {
        h.store.put_job(&JobRecord::new(job, state)).unwrap();
    }
    assert_eq!(h.executor.prune_journal().unwrap(), 3);
    h.executor.recover().unwrap();
    let left: Vec<U256> = journal_ids(h.store.as_ref());
    assert_eq!(left, vec![U256::from(4), U256::from(5)]);
    // Recovery gave the old queued job up; the next round prunes it, then nothing is left to do.
    assert_eq!(h.executor.prune_journal().unwrap(), 1);
    assert_eq!(
        h.executor.prune_journal().unwrap(),
        0,
        "pruning is idempotent"
    );
    let left: Vec<U256> = journal_ids(h.store.as_ref());
    assert_eq!(left, vec![U256::from(5)]);
}

/// Every job id in the journal, oldest first.
fn journal_ids(store: &dyn Store) -> Vec<U256> {
    let all = JobQuery {
        state: None,
        after: None,
        order: JobOrder::Ascending,
        limit: usize::MAX,
    };
    store
        .list_jobs(&all)
        .unwrap()
        .iter()
        .map(|r| r.job.id)
        .collect()
}

#[test]
fn the_counting_metrics_stub_keeps_the_metrics_contract() {
    metrics_contract(&counting_metrics());
}

#[test]
fn the_memory_store_stub_keeps_the_store_contract() {
    store_contract(&memory_store());
}

#[test]
fn the_key_signer_stub_keeps_the_signer_contract() {
    signer_contract(&key_signer(ENCLAVE_SECRET));
}

#[tokio::test(start_paused = true)]
async fn the_tokio_clock_stub_keeps_the_clock_contract() {
    clock_contract(&TokioClock::starting_at(T0_MS)).await;
}

#[tokio::test]
async fn the_chain_script_keeps_the_chain_writer_contract() {
    let (case, rules) = scripted_writer_case();
    let writer = ChainScript::following(rules).writer(Arc::new(memory_store()));
    chain_writer_contract(&writer, &case).await;
}

#[tokio::test]
async fn the_reorged_reader_stub_keeps_the_chain_reader_contract() {
    let origin = |byte| JobOrigin {
        block_number: 9,
        block_hash: H256::repeat_byte(byte),
        tx_hash: H256::repeat_byte(0x79),
        log_index: 3,
    };
    let with_origin = |id, byte| {
        let mut job = sample_job(id, vec![], 1);
        job.origin = Some(origin(byte));
        job
    };
    let case = ReaderCase {
        canonical: vec![with_origin(1, 0xb1)],
        off_chain: vec![with_origin(2, 0xb2), with_origin(1, 0xb2)],
    };
    chain_reader_contract(&reorged_reader(vec![origin(0xb2)]), &case).await;
    // The domain tests' chain without reorgs: every origin is on it.
    let case = ReaderCase {
        canonical: vec![with_origin(1, 0xb1), with_origin(2, 0xb2)],
        off_chain: vec![],
    };
    chain_reader_contract(&canonical_reader(), &case).await;
}

#[tokio::test]
async fn the_code_stubs_keep_the_code_source_contract() {
    let (case, transactions) = code_on_chain_case();
    code_source_contract(&code_on_chain(transactions), &case).await;
    let case = CodeCase {
        saved: SAMPLE_CODEHASH,
        source: JOB_CODE.into(),
        unknown: H256::repeat_byte(0x0f),
        wrong_contract: vec![],
        bad_calldata: vec![],
    };
    code_source_contract(&code_ok(), &case).await;
}

#[tokio::test]
async fn the_counting_slots_stub_keeps_the_slots_contract() {
    slots_contract(&counting_slots(2)).await;
}

#[tokio::test]
async fn the_echo_sandbox_stub_keeps_the_sandbox_contract() {
    let slot = Slot {
        index: 0,
        cgroup_procs: vec![],
    };
    sandbox_contract(&echo_sandbox(), &slot).await;
}

#[tokio::test]
async fn the_probed_chain_stub_keeps_the_chain_probe_contract() {
    for (head, gas_key) in [(Some(100), true), (Some(100), false), (None, true)] {
        let case = ProbeCase {
            chain_up: head.is_some(),
            gas_key,
        };
        chain_probe_contract(&probed_chain(head, gas_key), &case).await;
    }
}

#[test]
fn without_slot_limits_the_executor_is_not_ready_unless_the_operator_allows_it() {
    // The stub slots report no enforced limits, like a container that cannot make cgroups.
    for allow in [false, true] {
        let mut h = harness();
        registered(&h);
        let ports = Ports {
            slots: Arc::new(counting_slots(2)),
            ..h.executor.ports().clone()
        };
        let settings = Settings {
            allow_unlimited_slots: allow,
            ..Settings::default()
        };
        h.executor = Executor::new(ports, settings);
        h.executor.record_probe(crate::domain::model::Probe {
            chain_head: Some(10),
            workerd_found: true,
            gas_balance_wei: None,
            at_ms: T0_MS,
        });
        let r = h.executor.readiness().unwrap();
        assert!(r.registered && r.chain_connected && r.workerd_found);
        assert!(!r.cgroups_enforced);
        assert_eq!(r.ready, allow, "{r:?}");
        let reasons = r.reasons();
        if allow {
            assert!(reasons.is_empty(), "{reasons:?}");
        } else {
            assert_eq!(reasons.len(), 1, "{reasons:?}");
            assert!(reasons[0].contains("EXECUTOR_ALLOW_UNLIMITED_SLOTS"));
        }
    }
}

// ---- reorgs --------------------------------------------------------------------------------

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

fn sent_outputs(h: &Harness) -> Vec<Vec<u8>> {
    h.chain
        .outputs
        .lock()
        .unwrap()
        .iter()
        .map(|o| o.output.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_job_id_reused_by_a_reorg_supersedes_the_queued_job_and_only_the_new_one_runs() {
    let h = harness();
    registered(&h);
    let old = created_in(job_now(5, vec![enclave()], b"old"), 7);
    let new = created_in(job_now(5, vec![enclave()], b"new"), 8);
    h.executor
        .on_chain_event(log(7, ChainEvent::JobCreated(old.clone())))
        .unwrap();
    // Delivered again (a backfill): the very same job changes nothing.
    h.executor
        .on_chain_event(log(7, ChainEvent::JobCreated(old)))
        .unwrap();
    h.executor
        .on_chain_event(log(8, ChainEvent::JobCreated(new.clone())))
        .unwrap();
    let record = h.store.job(U256::from(5)).unwrap().unwrap();
    assert!(record.job.same_job(&new), "the new job replaced the old");
    assert_eq!(record.state, JobState::Queued);
    settle_all(&h).await;
    assert_eq!(sent_outputs(&h), vec![b"new".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn no_output_is_signed_or_sent_for_a_job_superseded_while_running_or_executed() {
    let h = harness();
    registered(&h);
    let old = created_in(job_now(5, vec![enclave()], b"old"), 7);
    let new = created_in(job_now(5, vec![enclave()], b"new"), 8);

    // Running when the new job arrives: its outcome is dropped, the new record untouched.
    h.store
        .put_job(&JobRecord::new(old.clone(), JobState::Running))
        .unwrap();
    h.executor
        .on_chain_event(log(8, ChainEvent::JobCreated(new.clone())))
        .unwrap();
    h.executor
        .submit_output(&old, outcome_of(b"old"))
        .await
        .unwrap();
    assert!(sent_outputs(&h).is_empty());
    let record = h.store.job(U256::from(5)).unwrap().unwrap();
    assert!(record.job.same_job(&new) && record.state == JobState::Queued);

    // Executed (signed, not sent) when the new job arrives: the old output is never sent.
    let signed = h.executor.sign_output(&old, &outcome_of(b"old")).unwrap();
    h.store
        .put_job(&JobRecord::new(
            old.clone(),
            JobState::Executed {
                output: signed.clone(),
            },
        ))
        .unwrap();
    h.executor
        .on_chain_event(log(8, ChainEvent::JobCreated(new.clone())))
        .unwrap();
    h.executor.send_output(&old, signed).await.unwrap();
    assert!(sent_outputs(&h).is_empty());
    // Nor does giving the old job up touch the new one.
    h.executor.abandon(&old, "test");
    assert_eq!(
        h.store.job(U256::from(5)).unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_creating_log_forgets_its_job_in_any_state_but_not_another_job() {
    let h = harness();
    registered(&h);
    let job = created_in(job_now(5, vec![enclave()], b"x"), 7);
    let signed = h.executor.sign_output(&job, &outcome_of(b"x")).unwrap();
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::Executed {
            output: signed.clone(),
        },
        JobState::Submitted {
            output: signed.clone(),
            tx_hash: H256::repeat_byte(9),
        },
    ] {
        h.store
            .put_job(&JobRecord::new(job.clone(), state.clone()))
            .unwrap();
        h.executor
            .on_chain_event(removed(7, ChainEvent::JobCreated(job.clone())))
            .unwrap();
        assert_eq!(h.store.job(job.id).unwrap(), None, "{}", state.name());
    }
    // The in-flight work of a forgotten job stops before sending.
    h.executor.send_output(&job, signed).await.unwrap();
    assert!(sent_outputs(&h).is_empty());

    // A removal naming another job under the id leaves the journal's job alone.
    h.store
        .put_job(&JobRecord::new(job.clone(), JobState::Queued))
        .unwrap();
    let other = created_in(job_now(5, vec![enclave()], b"x"), 6);
    h.executor
        .on_chain_event(removed(6, ChainEvent::JobCreated(other)))
        .unwrap();
    assert!(h.store.job(job.id).unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn an_output_waits_while_its_creating_log_is_off_the_chain() {
    // Off the chain twice (a node behind ours), then there: sent once.
    let answers = Arc::new(Mutex::new(vec![false, false]));
    let mut reader = MockChainReader::new();
    let a = answers.clone();
    reader
        .expect_job_is_canonical()
        .returning(move |_| Ok(a.lock().unwrap().pop().unwrap_or(true)));
    let h = harness_on(
        code_ok(),
        echo_sandbox(),
        2,
        Arc::new(memory_store()),
        reader,
    );
    registered(&h);
    let job = created_in(job_now(5, vec![enclave()], b"x"), 7);
    h.store
        .put_job(&JobRecord::new(job.clone(), JobState::Running))
        .unwrap();
    h.executor
        .submit_output(&job, outcome_of(b"x"))
        .await
        .unwrap();
    assert_eq!(sent_outputs(&h), vec![b"x".to_vec()]);

    // Never there again (removed by a reorg no one reported): given up when the window closes.
    *answers.lock().unwrap() = vec![false; 1000];
    let job = created_in(job_now(6, vec![enclave()], b"y"), 7);
    h.store
        .put_job(&JobRecord::new(job.clone(), JobState::Running))
        .unwrap();
    h.executor
        .submit_output(&job, outcome_of(b"y"))
        .await
        .unwrap();
    assert_eq!(sent_outputs(&h).len(), 1, "the output was never sent");
    let state = h.store.job(job.id).unwrap().unwrap().state;
    assert!(
        matches!(&state, JobState::Abandoned { reason } if reason.contains("reorg")),
        "{state:?}"
    );
}

#[test]
fn a_rewind_moves_the_cursor_back_never_forward() {
    let h = harness();
    h.executor.on_chain_synced(100).unwrap();
    h.executor.on_chain_rewound(90).unwrap();
    assert_eq!(h.store.cursor().unwrap(), Some(90));
    h.executor.on_chain_rewound(95).unwrap();
    assert_eq!(h.store.cursor().unwrap(), Some(90));
}

#[test]
fn a_store_of_another_deployment_is_refused() {
    let h = harness();
    let ours = Deployment {
        chain_id: 1,
        executors: Address::repeat_byte(1),
        jobs: Address::repeat_byte(2),
        user_code: Address::repeat_byte(3),
    };
    h.executor.claim_deployment(ours).unwrap();
    h.executor.claim_deployment(ours).unwrap();
    assert_eq!(h.store.deployment().unwrap(), Some(ours));
    for other in [
        Deployment {
            chain_id: 2,
            ..ours
        },
        Deployment {
            jobs: Address::repeat_byte(9),
            ..ours
        },
    ] {
        assert!(matches!(
            h.executor.claim_deployment(other),
            Err(DomainError::OtherDeployment(_))
        ));
    }
    assert_eq!(h.store.deployment().unwrap(), Some(ours), "nothing changed");
}

// ---- a failing store -----------------------------------------------------------------------

fn flaky_harness() -> (Harness, Arc<FlakyStore>) {
    let flaky = Arc::new(FlakyStore::default());
    let h = harness_on(
        code_ok(),
        echo_sandbox(),
        2,
        flaky.clone(),
        canonical_reader(),
    );
    (h, flaky)
}

fn probe_now(h: &Harness, head: u64) {
    h.executor.record_probe(Probe {
        chain_head: Some(head),
        workerd_found: true,
        gas_balance_wei: None,
        at_ms: h.executor.ports().clock.now_ms(),
    });
}

#[tokio::test(start_paused = true)]
async fn a_store_failing_a_few_times_is_retried_with_backoff_while_not_ready() {
    let (h, flaky) = flaky_harness();
    registered(&h);
    h.executor.on_chain_synced(10).unwrap();
    probe_now(&h, 10);
    assert!(h.executor.readiness().unwrap().ready);

    flaky.fail_next_writes(3);
    let job = created_in(job_now(5, vec![enclave()], b"x"), 10);
    let executor = h.executor.clone();
    let handling = tokio::spawn(async move {
        executor
            .with_store_retry(|| {
                executor.on_chain_event(log(10, ChainEvent::JobCreated(job.clone())))
            })
            .await
    });
    // First failure, before the first retry (backoff starts at 250 ms).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    probe_now(&h, 10);
    let readiness = h.executor.readiness().unwrap();
    assert!(!readiness.ready && !readiness.follower_ok);
    assert!(
        readiness
            .follower_problem
            .as_deref()
            .is_some_and(|p| p.contains("No space left")),
        "{readiness:?}"
    );
    assert!(h.executor.metrics_text().contains("store_failing 1"));

    assert_eq!(handling.await.unwrap().unwrap(), FollowVerdict::Continue);
    assert_eq!(
        h.store.job(U256::from(5)).unwrap().map(|r| r.state),
        Some(JobState::Queued),
        "nothing was lost"
    );
    probe_now(&h, 10);
    assert!(h.executor.readiness().unwrap().ready, "ready again");
    let metrics = h.executor.metrics_text();
    assert!(metrics.contains("store_errors 3"), "{metrics}");
    assert!(metrics.contains("store_failing 0"), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_store_that_keeps_failing_is_given_up_after_the_bound() {
    let (h, flaky) = flaky_harness();
    registered(&h);
    flaky.fail_next_writes(u64::MAX);
    let started = h.executor.ports().clock.now_ms();
    let result = h
        .executor
        .with_store_retry(|| h.executor.on_chain_synced(20))
        .await;
    assert!(matches!(result, Err(DomainError::Store(_))), "{result:?}");
    let waited = h.executor.ports().clock.now_ms() - started;
    let limit = h.executor.settings().store_failure_limit_ms;
    assert!(
        (limit..limit + h.executor.settings().store_retry_max_ms).contains(&waited),
        "gave up after {waited} ms (limit {limit} ms)"
    );
    // Other errors are not retried.
    let calls = std::sync::atomic::AtomicU32::new(0);
    let other = h
        .executor
        .with_store_retry(|| -> Result<(), DomainError> {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(DomainError::UnknownJob(U256::one()))
        })
        .await;
    assert!(matches!(other, Err(DomainError::UnknownJob(_))));
    assert_eq!(calls.into_inner(), 1);
}

#[test]
fn a_follower_far_behind_the_head_is_not_ready() {
    let h = harness();
    registered(&h);
    h.executor.on_chain_synced(100).unwrap();
    probe_now(&h, 100 + h.executor.settings().max_head_lag_blocks - 1);
    assert!(h.executor.readiness().unwrap().ready);
    probe_now(&h, 100 + h.executor.settings().max_head_lag_blocks + 1);
    let readiness = h.executor.readiness().unwrap();
    assert!(!readiness.ready && !readiness.follower_ok);
    assert!(readiness
        .follower_problem
        .is_some_and(|p| p.contains("blocks behind")));
}

/// A chain writer whose `submitOutput` is broadcast but never mined (a stuck transaction).
struct NeverMined {
    sends: Arc<Mutex<Vec<SignedOutput>>>,
}

#[async_trait::async_trait]
impl ChainWriter for NeverMined {
    fn set_gas_key(&self, _secret: [u8; 32]) -> Result<Address, ChainError> {
        Ok(Address::repeat_byte(0x6a))
    }
    fn gas_address(&self) -> Option<Address> {
        Some(Address::repeat_byte(0x6a))
    }
    async fn submit_output(
        &self,
        output: &SignedOutput,
        _plan: OutputPlan,
        sent: Arc<dyn OnSent>,
    ) -> Result<TxOutcome, ChainError> {
        self.sends.lock().unwrap().push(output.clone());
        sent.sent(sent_tx(H256::repeat_byte(0x5e), 0));
        std::future::pending().await
    }
    async fn slash_on_execution_timeout(&self, _job_id: U256) -> Result<TxOutcome, ChainError> {
        std::future::pending().await
    }
    async fn take_back(&self, _tx: &SentTx) -> Result<TakeBack, ChainError> {
        Ok(TakeBack::NonceUsed)
    }
}

#[tokio::test(start_paused = true)]
async fn a_send_in_progress_stops_once_its_job_is_superseded() {
    let h = harness();
    let sends = Arc::new(Mutex::new(Vec::new()));
    let ports = Ports {
        chain: Arc::new(NeverMined {
            sends: sends.clone(),
        }),
        ..h.executor.ports().clone()
    };
    let executor = Executor::new(ports, h.executor.settings().clone());
    let old = created_in(job_now(5, vec![enclave()], b"old"), 7);
    let signed = executor.sign_output(&old, &outcome_of(b"old")).unwrap();
    h.store
        .put_job(&JobRecord::new(
            old.clone(),
            JobState::Executed {
                output: signed.clone(),
            },
        ))
        .unwrap();
    let sending = {
        let (executor, old) = (executor.clone(), old.clone());
        tokio::spawn(async move { executor.send_output(&old, signed).await })
    };
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(sends.lock().unwrap().len(), 1);
    assert_eq!(
        h.store.job(old.id).unwrap().unwrap().state.name(),
        "submitted"
    );
    assert!(!sending.is_finished(), "waiting for the receipt");

    // A reorg gives the id to another job: the send (and its replacements) stops.
    h.store
        .put_job(&JobRecord::new(
            created_in(job_now(5, vec![enclave()], b"new"), 8),
            JobState::Queued,
        ))
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(2), sending)
        .await
        .expect("the send stops")
        .unwrap()
        .unwrap();
    assert_eq!(sends.lock().unwrap().len(), 1);
    assert_eq!(
        h.store.job(old.id).unwrap().unwrap().state,
        JobState::Queued,
        "the new job's record is untouched"
    );
}

/// The harness's executor with `chain` as its chain writer (the same store and other ports).
fn with_chain(h: &Harness, chain: &Arc<MockChainWriter>) -> Arc<Executor> {
    let ports = Ports {
        chain: chain.clone(),
        ..h.executor.ports().clone()
    };
    Executor::new(ports, h.executor.settings().clone())
}

/// Waits until `executor` is idle, lets it go and checks `chain`'s expectations here.
async fn verify(executor: Arc<Executor>, chain: Arc<MockChainWriter>) {
    assert!(executor.wait_idle(60_000).await);
    drop(executor);
    tokio::task::yield_now().await;
    let mut chain = Arc::try_unwrap(chain).unwrap_or_else(|_| panic!("the writer is held"));
    chain.checkpoint();
}

/// A chain writer that expects exactly `times` take-backs, each of the transaction `tx_hash`.
fn expecting_take_backs(tx_hash: H256, times: usize) -> MockChainWriter {
    let mut chain = MockChainWriter::new();
    chain
        .expect_take_back()
        .withf(move |tx| tx.tx_hash == tx_hash && tx.nonce == U256::from(3))
        .times(times)
        .returning(|_| {
            Ok(TakeBack::TakenBack {
                transfer: H256::repeat_byte(0x7b),
                gas_used: 21_000,
            })
        });
    chain
}

/// Journals `job` in `state`, with `sent` as its output transactions.
fn journal(h: &Harness, job: &Job, state: JobState, sent: &[SentTx]) {
    let mut record = JobRecord::new(job.clone(), state);
    for tx in sent {
        record.note_sent(*tx);
    }
    h.store.put_job(&record).unwrap();
}

/// A registered executor, a job 5 it signed an output for, and the job a reorg gives id 5 to.
fn superseding_pair() -> (Harness, Job, Job, SignedOutput) {
    let h = harness();
    registered(&h);
    let old = created_in(job_now(5, vec![enclave()], b"old"), 7);
    let new = created_in(job_now(5, vec![enclave()], b"new"), 8);
    let signed = h.executor.sign_output(&old, &outcome_of(b"old")).unwrap();
    (h, old, new, signed)
}

#[tokio::test(start_paused = true)]
async fn a_superseded_submitted_job_has_its_pending_output_nonce_taken_back_once() {
    let (h, old, new, signed) = superseding_pair();
    let first = sent_tx(H256::repeat_byte(0x01), 3);
    let replacement = sent_tx(H256::repeat_byte(0x02), 3);
    // The id given to another job, or the creating log removed by a reorg: either way the
    // latest transaction with the old output's nonce is taken back, once.
    for superseding in [
        log(8, ChainEvent::JobCreated(new.clone())),
        removed(7, ChainEvent::JobCreated(old.clone())),
    ] {
        let chain = Arc::new(expecting_take_backs(replacement.tx_hash, 1));
        let executor = with_chain(&h, &chain);
        journal(
            &h,
            &old,
            JobState::Submitted {
                output: signed.clone(),
                tx_hash: replacement.tx_hash,
            },
            &[first, replacement],
        );
        assert_eq!(
            h.store.job(old.id).unwrap().unwrap().sent,
            vec![replacement],
            "one transaction per nonce: the latest"
        );
        executor.on_chain_event(superseding).unwrap();
        verify(executor, chain).await;
        assert!(
            h.store.take_backs().unwrap().is_empty(),
            "done and forgotten"
        );
    }
    assert!(
        h.store.job(old.id).unwrap().is_none(),
        "the removal forgot the job"
    );
}

#[tokio::test(start_paused = true)]
async fn a_superseded_job_that_was_confirmed_or_never_sent_takes_nothing_back() {
    let (h, old, new, signed) = superseding_pair();
    let tx = sent_tx(H256::repeat_byte(0x01), 3);
    let confirmed = JobState::Confirmed {
        output: Some(signed.clone()),
        tx_hash: Some(tx.tx_hash),
    };
    for (state, sent) in [
        (confirmed, vec![tx]),
        (JobState::Executed { output: signed }, vec![]),
        (JobState::Queued, vec![]),
    ] {
        let chain = Arc::new(expecting_take_backs(tx.tx_hash, 0));
        let executor = with_chain(&h, &chain);
        journal(&h, &old, state, &sent);
        executor
            .on_chain_event(log(8, ChainEvent::JobCreated(new.clone())))
            .unwrap();
        verify(executor, chain).await;
        assert!(h.store.take_backs().unwrap().is_empty());
        h.store.remove_job(old.id).unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_take_back_interrupted_by_a_restart_is_resumed_at_start() {
    let h = harness();
    let tx = sent_tx(H256::repeat_byte(0x01), 3);
    h.store
        .put_take_back(&SupersededOutput {
            job_id: U256::from(5),
            tx,
        })
        .unwrap();
    let mut chain = expecting_take_backs(tx.tx_hash, 0);
    // The first attempt meets a node that does not answer: retried.
    let mut calls = 0;
    chain
        .expect_take_back()
        .withf(move |sent| sent.tx_hash == tx.tx_hash)
        .times(2)
        .returning(move |_| {
            calls += 1;
            if calls == 1 {
                Err(ChainError::Transient("connection refused".into()))
            } else {
                Ok(TakeBack::NonceUsed)
            }
        });
    let chain = Arc::new(chain);
    let executor = with_chain(&h, &chain);
    let report = executor.recover().unwrap();
    assert_eq!(report.taking_back, 1);
    verify(executor, chain).await;
    assert!(h.store.take_backs().unwrap().is_empty());
}
