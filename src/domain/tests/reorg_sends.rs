//! Reorgs of jobs whose output is being sent: stopped sends and nonces taken back.

use super::*;

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
    async fn acknowledge_store(&self, _ack: &SecretAck) -> Result<TxOutcome, ChainError> {
        std::future::pending().await
    }
    async fn acknowledge_store_failed(&self, _id: U256) -> Result<TxOutcome, ChainError> {
        std::future::pending().await
    }
    async fn mark_store_alive(&self, _at: u64, _sig: &[u8]) -> Result<TxOutcome, ChainError> {
        std::future::pending().await
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
