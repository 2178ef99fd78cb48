//! Running jobs: error codes, code fetch, chain events, dispatch order.

use super::*;

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

/// TEE generation: SecretManager events are the secret store's business; until it exists the
/// domain accepts them (live or removed), moves the cursor and changes nothing else.
#[tokio::test]
async fn secret_events_are_accepted_and_change_nothing_yet() {
    let h = harness();
    registered(&h);
    let created = ChainEvent::Secret(SecretEvent::Created {
        secret_id: U256::from(1),
        owner: Address::repeat_byte(3),
        size_limit: U256::from(10),
        end_timestamp: U256::from(2_000_000_000u64),
        selected: vec![enclave()],
    });
    let verdict = h.executor.on_chain_event(log(5, created.clone())).unwrap();
    assert_eq!(verdict, FollowVerdict::Continue);
    assert_eq!(h.store.cursor().unwrap(), Some(5));
    let verdict = h.executor.on_chain_event(removed(6, created)).unwrap();
    assert_eq!(verdict, FollowVerdict::Continue);
    assert_eq!(h.store.cursor().unwrap(), Some(6));
    assert_eq!(h.executor.chain_status().unwrap(), ChainStatus::Serving);
    assert_eq!(h.executor.load().0, 0, "no job from a secret event");
}

/// A pool that holds its free slots back (for a busy one that is ready) answers None while not
/// every slot is busy, and nothing wakes the dispatcher when that changes: it asks again within
/// milliseconds, not at its 1 s safety tick.
#[tokio::test(start_paused = true)]
async fn slots_held_back_for_a_ready_one_are_asked_for_again_soon() {
    let h = harness_on_slots(crate::domain::testing::declining_slots(2, 3));
    registered(&h);
    let started = tokio::time::Instant::now();
    h.executor
        .on_chain_event(log(
            2,
            ChainEvent::JobCreated(job_now(1, vec![enclave()], b"x")),
        ))
        .unwrap();
    tokio::spawn(h.executor.clone().run_dispatcher());
    while h.chain.outputs.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the job never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // Paused time: only the dispatcher's own waits move it (three declines).
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(100),
        "the job waited {waited:?} for a free slot"
    );
}
