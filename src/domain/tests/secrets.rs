//! The secret store: injections (accepted once, each refusal changing nothing), SecretManager's
//! events, the timer's duties (acknowledgement failures, liveness across a restart, expiry) and
//! jobs that need a secret.

use std::time::Duration;

use super::*;
use crate::domain::api::alive_interval_secs;
use crate::domain::eip712::{acknowledge_digest, alive_digest, inject_secret_digest};
use crate::domain::SecretRefusal;

/// The secret's owner (a real key: injections carry its signature).
const OWNER_SECRET: [u8; 32] = [0x0c; 32];
const STRANGER_SECRET: [u8; 32] = [0x0d; 32];
const OTHER_STORE: Address = Address::repeat_byte(0x5f);

fn owner() -> Address {
    key_signer(OWNER_SECRET).address()
}

fn secret_settings() -> Settings {
    Settings {
        execution_buffer_secs: 10,
        allow_unlimited_slots: true,
        secret_store: true,
        ..Settings::default()
    }
}

/// The usual harness as a secret store over `secrets`, with `writer` as its chain writer.
fn store_harness(secrets: Arc<dyn SecretStore>, writer: Option<MockChainWriter>) -> Harness {
    let h = harness();
    let mut ports = Ports {
        secrets,
        ..h.executor.ports().clone()
    };
    if let Some(writer) = writer {
        ports.chain = Arc::new(writer);
    }
    Harness {
        executor: Executor::new(ports, secret_settings()),
        ..h
    }
}

fn created(id: u64, selected: Vec<Address>, size_limit: u64, end_timestamp: u64) -> ChainEvent {
    ChainEvent::Secret(SecretEvent::Created {
        secret_id: U256::from(id),
        owner: owner(),
        size_limit: U256::from(size_limit),
        end_timestamp: U256::from(end_timestamp),
        selected,
    })
}

fn secret_event(block: u64, event: SecretEvent) -> ChainLog {
    log(block, ChainEvent::Secret(event))
}

/// The body an owner sends: the secret sealed to our enclave key and their signature.
fn injection(id: u64, plaintext: &[u8], signer_secret: [u8; 32]) -> (Vec<u8>, Vec<u8>) {
    let sealed = encrypt_to(&key_signer(ENCLAVE_SECRET).public_key(), plaintext);
    let digest = inject_secret_digest(U256::from(id), &sealed);
    let signature = key_signer(signer_secret).sign_digest(digest).unwrap();
    (sealed, signature.to_vec())
}

fn later_secs(secs: u64) -> u64 {
    T0_MS / 1000 + secs
}

/// Lets spawned sends run (the clock is paused: this costs no real time).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn refusal(result: Result<SecretAck, DomainError>) -> SecretRefusal {
    match result {
        Err(DomainError::SecretRefused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_injection_is_stored_acknowledged_once_and_answered_with_our_signature() {
    let writer = ChainScript::writer_expecting(|chain| {
        chain
            .expect_acknowledge_store()
            .withf(|ack| ack.secret_id == U256::from(4))
            .times(1)
            .returning(|_| mined());
    });
    let h = store_harness(Arc::new(memory_secrets()), Some(writer));
    h.executor
        .on_chain_event(log(
            2,
            created(4, vec![enclave(), OTHER_STORE], 64, later_secs(3600)),
        ))
        .unwrap();
    let (sealed, signature) = injection(4, b"api-key-123", OWNER_SECRET);
    let ack = h
        .executor
        .inject_secret(U256::from(4), &sealed, &signature)
        .unwrap();
    assert_eq!(ack.secret_id, U256::from(4));
    assert_eq!(ack.sign_timestamp, T0_MS / 1000);
    assert_eq!(
        recover(
            acknowledge_digest(ack.secret_id, ack.sign_timestamp),
            &ack.signature
        ),
        Some(enclave()),
        "the acknowledgement is signed by the enclave key"
    );
    let secrets = &h.executor.ports().secrets;
    assert_eq!(
        secrets.plaintext(U256::from(4)).unwrap().as_deref(),
        Some(&b"api-key-123"[..])
    );
    assert_eq!(
        secrets.secret(U256::from(4)).unwrap().unwrap().state,
        SecretState::Stored
    );
    settle().await;
    // The chain sees our acknowledgement: acknowledged, and nothing more is sent.
    h.executor
        .on_chain_event(secret_event(
            3,
            SecretEvent::Acknowledged {
                secret_id: U256::from(4),
                enclave: enclave(),
            },
        ))
        .unwrap();
    assert_eq!(
        secrets.secret(U256::from(4)).unwrap().unwrap().state,
        SecretState::Acknowledged
    );
    h.executor.secret_tick().await.unwrap();
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn every_refused_injection_is_named_and_stores_nothing() {
    let h = store_harness(Arc::new(memory_secrets()), None);
    registered(&h);
    let ex = &h.executor;
    ex.on_chain_event(log(2, created(1, vec![enclave()], 8, later_secs(3600))))
        .unwrap();
    ex.on_chain_event(log(2, created(2, vec![OTHER_STORE], 8, later_secs(3600))))
        .unwrap();
    ex.on_chain_event(log(2, created(3, vec![enclave()], 8, later_secs(0))))
        .unwrap();
    let id = U256::from(1);

    let (sealed, signature) = injection(9, b"x", OWNER_SECRET);
    assert_eq!(
        refusal(ex.inject_secret(U256::from(9), &sealed, &signature)),
        SecretRefusal::NotAssigned(U256::from(9)),
        "never created"
    );
    let (sealed, signature) = injection(2, b"x", OWNER_SECRET);
    assert_eq!(
        refusal(ex.inject_secret(U256::from(2), &sealed, &signature)),
        SecretRefusal::NotAssigned(U256::from(2)),
        "created for another store"
    );
    let (sealed, signature) = injection(1, b"x", STRANGER_SECRET);
    assert_eq!(
        refusal(ex.inject_secret(id, &sealed, &signature)),
        SecretRefusal::NotOwner {
            signer: key_signer(STRANGER_SECRET).address(),
            owner: owner()
        }
    );
    let (sealed, _) = injection(1, b"x", OWNER_SECRET);
    assert_eq!(
        refusal(ex.inject_secret(id, &sealed, &[0u8; 65])),
        SecretRefusal::BadSignature
    );
    // Signed for another id: recovers to someone else.
    let (sealed, signature_for_5) = injection(5, b"x", OWNER_SECRET);
    assert!(matches!(
        refusal(ex.inject_secret(id, &sealed, &signature_for_5)),
        SecretRefusal::NotOwner { .. }
    ));
    // Sealed to another key, signed by the owner.
    let foreign = encrypt_to(&key_signer([0x33; 32]).public_key(), b"x");
    let signature = key_signer(OWNER_SECRET)
        .sign_digest(inject_secret_digest(id, &foreign))
        .unwrap();
    assert!(matches!(
        refusal(ex.inject_secret(id, &foreign, &signature)),
        SecretRefusal::Undecryptable(_)
    ));
    let (sealed, signature) = injection(1, b"nine byte", OWNER_SECRET);
    assert_eq!(
        refusal(ex.inject_secret(id, &sealed, &signature)),
        SecretRefusal::TooLarge { size: 9, limit: 8 }
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sealed, signature) = injection(3, b"x", OWNER_SECRET);
    assert!(matches!(
        refusal(ex.inject_secret(U256::from(3), &sealed, &signature)),
        SecretRefusal::Ended { .. }
    ));
    assert_eq!(
        ex.known_secret_ids().unwrap(),
        vec![U256::from(1), U256::from(2), U256::from(3)]
    );
    let secrets = &ex.ports().secrets;
    for id in 1..=3 {
        assert_eq!(
            secrets.plaintext(U256::from(id)).unwrap(),
            None,
            "secret {id}"
        );
    }
    assert_eq!(
        secrets.secret(id).unwrap().unwrap().state,
        SecretState::Awaiting,
        "still waiting for a good injection"
    );
    // A good one is accepted; the same again is a replay.
    let (sealed, signature) = injection(1, b"eight by", OWNER_SECRET);
    ex.inject_secret(id, &sealed, &signature).unwrap();
    assert_eq!(
        refusal(ex.inject_secret(id, &sealed, &signature)),
        SecretRefusal::AlreadyStored(id)
    );
    settle().await;
    assert_eq!(
        h.chain.secret_txs.lock().unwrap().len(),
        1,
        "one acknowledgement, for the accepted injection"
    );
}

#[tokio::test(start_paused = true)]
async fn missing_acknowledgements_are_reported_once_after_the_timeout() {
    let writer = ChainScript::writer_expecting(|chain| {
        chain
            .expect_acknowledge_store_failed()
            .withf(|id| *id == U256::from(1))
            .times(1)
            .returning(|_| mined());
    });
    let h = store_harness(Arc::new(memory_secrets()), Some(writer));
    let ex = &h.executor;
    // Secret 1: the other store never acknowledges. Secret 2: every store does.
    ex.on_chain_event(log(
        2,
        created(1, vec![enclave(), OTHER_STORE], 8, later_secs(9999)),
    ))
    .unwrap();
    ex.on_chain_event(log(
        2,
        created(2, vec![enclave(), OTHER_STORE], 8, later_secs(9999)),
    ))
    .unwrap();
    for store in [enclave(), OTHER_STORE] {
        ex.on_chain_event(secret_event(
            3,
            SecretEvent::Acknowledged {
                secret_id: U256::from(2),
                enclave: store,
            },
        ))
        .unwrap();
    }
    // Within the timeout (120 s from the stub reader) and its margin: nothing.
    tokio::time::sleep(Duration::from_secs(120)).await;
    ex.secret_tick().await.unwrap();
    settle().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ex.secret_tick().await.unwrap();
    settle().await;
    ex.secret_tick().await.unwrap();
    settle().await;
    assert!(
        ex.ports()
            .secrets
            .secret(U256::from(1))
            .unwrap()
            .unwrap()
            .ack_failed_sent
    );
}

/// The world executors restart in: the journal, the secret store and the wall clock.
#[derive(Clone)]
struct World {
    store: Arc<dyn Store>,
    secrets: Arc<dyn SecretStore>,
    clock: Arc<dyn Clock>,
}

impl World {
    fn new() -> Self {
        Self {
            store: Arc::new(memory_store()),
            secrets: Arc::new(memory_secrets()),
            clock: Arc::new(TokioClock::starting_at(T0_MS)),
        }
    }

    /// Configured and registered, as by an operator.
    fn register(&self) {
        let h = harness_on(
            code_ok(),
            echo_sandbox(),
            2,
            self.store.clone(),
            canonical_reader(),
        );
        registered(&h);
    }
}

/// One executor's life in `world`: it ticks every second for `secs` seconds, expecting exactly
/// `alive` markStoreAlive transactions.
async fn live(world: &World, secs: u64, alive: usize) -> Arc<Executor> {
    let World {
        store,
        secrets,
        clock,
    } = world.clone();
    let writer = ChainScript::writer_expecting(|chain| {
        chain
            .expect_mark_store_alive()
            .withf(|at, signature| recover(alive_digest(*at), signature) == Some(enclave()))
            .times(alive)
            .returning(|_, _| mined());
    });
    let h = harness_on(
        code_ok(),
        echo_sandbox(),
        2,
        store.clone(),
        canonical_reader(),
    );
    let ports = Ports {
        secrets,
        clock,
        chain: Arc::new(writer),
        ..h.executor.ports().clone()
    };
    let executor = Executor::new(ports, secret_settings());
    for _ in 0..secs {
        executor.secret_tick().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    executor
}

#[tokio::test(start_paused = true)]
async fn liveness_is_proven_on_time_across_a_restart() {
    let interval = alive_interval_secs(500);
    assert!((300..500).contains(&interval), "{interval}");
    let world = World::new();
    world.register();
    // First life: one alive at once, then none for 100 s.
    live(&world, 100, 1).await;
    let first = world.secrets.last_alive().unwrap().expect("journalled");
    assert_eq!(first, T0_MS / 1000);
    // Restarted: the journal says when the last one was; the next is due at first + interval,
    // not at once and not later.
    live(&world, interval - 100 - 1, 0).await;
    live(&world, 2, 1).await;
    let second = world.secrets.last_alive().unwrap().unwrap();
    assert_eq!(second, first + interval);
    // Down for longer than the interval: sent at once after the start.
    tokio::time::sleep(Duration::from_secs(2 * interval)).await;
    live(&world, 1, 1).await;
}

#[tokio::test(start_paused = true)]
async fn no_liveness_while_unregistered_or_draining() {
    let world = World::new();
    live(&world, 3, 0).await;
    world.register();
    let h = harness_on(
        code_ok(),
        echo_sandbox(),
        2,
        world.store.clone(),
        canonical_reader(),
    );
    h.executor
        .on_chain_event(log(3, ChainEvent::ExecutorDrained { enclave: enclave() }))
        .unwrap();
    live(&world, 3, 0).await;
}

/// A harness holding secret 1 (stored) and secret 2 (observed only).
async fn holding(end_timestamp: u64) -> Harness {
    let h = store_harness(Arc::new(memory_secrets()), None);
    registered(&h);
    let ex = &h.executor;
    ex.on_chain_event(log(2, created(1, vec![enclave()], 64, end_timestamp)))
        .unwrap();
    ex.on_chain_event(log(2, created(2, vec![OTHER_STORE], 64, end_timestamp)))
        .unwrap();
    let (sealed, signature) = injection(1, b"kept", OWNER_SECRET);
    ex.inject_secret(U256::one(), &sealed, &signature).unwrap();
    settle().await;
    h
}

fn held(h: &Harness) -> bool {
    h.executor
        .ports()
        .secrets
        .plaintext(U256::one())
        .unwrap()
        .is_some()
}

#[tokio::test(start_paused = true)]
async fn secrets_are_deleted_on_every_trigger() {
    let one = U256::one();
    let events = [
        SecretEvent::Terminated {
            secret_id: one,
            at: U256::from(later_secs(1)),
        },
        SecretEvent::Removed { secret_id: one },
        SecretEvent::AcknowledgementFailed { secret_id: one },
        SecretEvent::StoreReplaced {
            secret_id: one,
            previous: enclave(),
            replacement: OTHER_STORE,
            marked_dead: false,
        },
    ];
    for event in events {
        let h = holding(later_secs(3600)).await;
        assert!(held(&h));
        h.executor
            .on_chain_event(secret_event(5, event.clone()))
            .unwrap();
        assert!(!held(&h), "{event:?} deletes it");
        // Nothing of it is given to a job any more.
        let job = Job {
            secret_id: one,
            ..job_now(1, vec![enclave()], b"x")
        };
        let slot = Slot {
            index: 0,
            cgroup_procs: vec![],
        };
        let outcome = h.executor.execute_job(&job, &slot).await.unwrap();
        assert_eq!(outcome.error_code, ErrorCode::LoadFailed, "{event:?}");
    }
    // Drained: every held secret goes.
    let h = holding(later_secs(3600)).await;
    h.executor
        .on_chain_event(log(6, ChainEvent::ExecutorDrained { enclave: enclave() }))
        .unwrap();
    assert!(!held(&h), "drained");
    // Past its end (plus the margin): deleted by the timer, records of others' secrets too.
    let h = holding(later_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(10 + 5)).await;
    h.executor.secret_tick().await.unwrap();
    assert!(held(&h), "kept until the margin has passed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.executor.secret_tick().await.unwrap();
    assert!(!held(&h), "past its end");
    assert_eq!(h.executor.ports().secrets.secrets().unwrap(), vec![]);
    // An end extended on chain keeps it.
    let h = holding(later_secs(10)).await;
    h.executor
        .on_chain_event(secret_event(
            7,
            SecretEvent::EndTimestampUpdated {
                secret_id: one,
                end_timestamp: U256::from(later_secs(3600)),
            },
        ))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.executor.secret_tick().await.unwrap();
    assert!(held(&h), "the new end counts");
}

#[tokio::test(start_paused = true)]
async fn a_replacement_naming_us_can_be_injected() {
    let h = store_harness(Arc::new(memory_secrets()), None);
    let ex = &h.executor;
    ex.on_chain_event(log(2, created(7, vec![OTHER_STORE], 64, later_secs(3600))))
        .unwrap();
    ex.on_chain_event(secret_event(
        3,
        SecretEvent::StoreReplaced {
            secret_id: U256::from(7),
            previous: OTHER_STORE,
            replacement: enclave(),
            marked_dead: true,
        },
    ))
    .unwrap();
    let (sealed, signature) = injection(7, b"moved", OWNER_SECRET);
    ex.inject_secret(U256::from(7), &sealed, &signature)
        .unwrap();
    assert_eq!(
        ex.ports()
            .secrets
            .plaintext(U256::from(7))
            .unwrap()
            .as_deref(),
        Some(&b"moved"[..])
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_secret_we_do_not_hold_is_answered_with_error_3() {
    let mut sandbox = MockSandbox::new();
    sandbox.expect_run().never();
    sandbox.expect_runtime_found().return_const(true);
    let h = harness_with(code_ok(), sandbox, 2);
    let h = Harness {
        executor: Executor::new(h.executor.ports().clone(), secret_settings()),
        ..h
    };
    let job = Job {
        secret_id: U256::from(42),
        ..job_now(1, vec![enclave()], b"x")
    };
    let slot = Slot {
        index: 0,
        cgroup_procs: vec![],
    };
    let outcome = h.executor.execute_job(&job, &slot).await.unwrap();
    assert_eq!(outcome.error_code, ErrorCode::LoadFailed);
    assert_eq!(
        String::from_utf8(outcome.output).unwrap(),
        "secret 42 is not held by this executor"
    );
}

#[tokio::test(start_paused = true)]
async fn an_acknowledgement_signed_before_a_restart_is_sent_again() {
    let secrets: Arc<dyn SecretStore> = Arc::new(memory_secrets());
    let h = store_harness(secrets.clone(), None);
    h.executor
        .on_chain_event(log(2, created(1, vec![enclave()], 64, later_secs(3600))))
        .unwrap();
    let mut record = secrets.secret(U256::one()).unwrap().unwrap();
    let ack = SecretAck {
        secret_id: U256::one(),
        sign_timestamp: T0_MS / 1000,
        signature: vec![1; 65],
    };
    record.state = SecretState::Stored;
    record.ack = Some(ack.clone());
    secrets.put_secret(&record, Some(b"x")).unwrap();
    let writer = ChainScript::writer_expecting(|chain| {
        chain
            .expect_acknowledge_store()
            .withf(move |sent| *sent == ack)
            .times(1)
            .returning(|_| mined());
    });
    let restarted = store_harness(secrets, Some(writer));
    assert_eq!(restarted.executor.recover_secrets().unwrap(), 1);
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_with_the_secret_we_hold_and_only_its_own() {
    let h = holding(later_secs(3600)).await;
    let slot = Slot {
        index: 0,
        cgroup_procs: vec![],
    };
    let with_secret = Job {
        secret_id: U256::one(),
        ..job_now(1, vec![enclave()], b"secret")
    };
    let outcome = h.executor.execute_job(&with_secret, &slot).await.unwrap();
    assert_eq!(outcome.error_code, ErrorCode::Ok);
    assert_eq!(outcome.output, b"kept", "the sandbox got the stored secret");
    // Secret 2 is only observed here (another store holds it): not given, error 3.
    let observed = Job {
        secret_id: U256::from(2),
        ..job_now(2, vec![enclave()], b"secret")
    };
    let outcome = h.executor.execute_job(&observed, &slot).await.unwrap();
    assert_eq!(outcome.error_code, ErrorCode::LoadFailed);
    // A job without a secret gets none.
    let without = job_now(3, vec![enclave()], b"secret");
    let outcome = h.executor.execute_job(&without, &slot).await.unwrap();
    assert_eq!(outcome.output, NO_SECRET);
}
