//! Settlement, recovery after a restart, and pruning the journal.

use super::*;

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
        .records
        .iter()
        .map(|r| r.job.id)
        .collect()
}
