//! Submitting outputs: refusals, gas, denied owners, metrics and status.

use super::*;

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
    journal_running(&h, &job);
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
    journal_running(&h, &job);
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
    journal_running(&h, &job);
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
    journal_running(&h, &unknown);
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

/// Journals `job` as running, as the dispatcher leaves it before the output is signed.
fn journal_running(h: &Harness, job: &Job) {
    h.store
        .put_job(&JobRecord::new(job.clone(), JobState::Running))
        .unwrap();
}
