//! Reorgs: superseded and removed jobs.

use super::*;

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
async fn an_others_job_is_journalled_compact_and_a_reorg_reusing_its_id_replaces_it() {
    let h = harness();
    registered(&h);
    let others = vec![Address::repeat_byte(0x98), Address::repeat_byte(0x99)];
    let old = created_in(job_now(5, others.clone(), b"old"), 7);
    h.executor
        .on_chain_event(log(7, ChainEvent::JobCreated(old.clone())))
        .unwrap();
    h.executor
        .on_chain_event(log(
            7,
            ChainEvent::JobResponded {
                job_id: old.id,
                executor: others[0],
                output_count: 1,
            },
        ))
        .unwrap();
    let record = h.store.job(old.id).unwrap().unwrap();
    assert!(record.job.compact.is_some() && record.job.code_inputs.is_empty());
    assert_eq!((record.output_count, record.settled), (1, false));
    let status = h.executor.job_status(old.id).unwrap();
    assert_eq!((status.state, status.selected), ("observed", false));
    assert_eq!(status.deadline_ms, old.deadline_ms);

    // Delivered again (a backfill): the compact record is the very job; nothing changes.
    h.executor
        .on_chain_event(log(7, ChainEvent::JobCreated(old.clone())))
        .unwrap();
    assert_eq!(h.store.job(old.id).unwrap(), Some(record));

    // A reorg gives the id to another job of others': a new record, outputs not carried over.
    let reused = created_in(job_now(5, others.clone(), b"old"), 8);
    h.executor
        .on_chain_event(log(8, ChainEvent::JobCreated(reused.clone())))
        .unwrap();
    let record = h.store.job(old.id).unwrap().unwrap();
    assert!(record.job.same_job(&reused) && !record.job.same_job(&old));
    assert_eq!(record.output_count, 0);
    // A removed log of the superseded job leaves the new one alone.
    h.executor
        .on_chain_event(removed(7, ChainEvent::JobCreated(old.clone())))
        .unwrap();
    assert!(h.store.job(old.id).unwrap().is_some());

    // And again, to a job that selects us: it runs, and settlement finds our output.
    let ours = created_in(job_now(5, vec![enclave()], b"ours"), 9);
    h.executor
        .on_chain_event(log(9, ChainEvent::JobCreated(ours.clone())))
        .unwrap();
    let record = h.store.job(old.id).unwrap().unwrap();
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(record.job, ours, "a job of ours is journalled whole");
    settle_all(&h).await;
    assert_eq!(sent_outputs(&h), vec![b"ours".to_vec()]);
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
