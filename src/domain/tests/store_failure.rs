//! A failing store, and what the journal makes durable when.

use super::*;

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

#[tokio::test(start_paused = true)]
async fn nothing_before_the_send_is_flushed_on_its_own_and_the_sent_output_is_flushed_after() {
    let (h, store) = flaky_harness();
    registered(&h);
    let job = job_now(1, vec![enclave()], b"x");
    h.executor
        .on_chain_event(log(2, ChainEvent::JobCreated(job)))
        .unwrap();
    settle_all(&h).await;
    assert_eq!(h.chain.outputs.lock().unwrap().len(), 1);
    let trace: Vec<String> = store
        .journal_trace()
        .into_iter()
        .filter(|entry| {
            entry == "flush" || entry.starts_with("put 1 ") || entry.starts_with("write 1 ")
        })
        .collect();
    let at = |entry: &str| {
        trace
            .iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("no {entry} in {trace:?}"))
    };
    let (queued, running, executed, submitted, confirmed) = (
        at("write 1 queued"),
        at("write 1 running"),
        at("write 1 executed"),
        at("write 1 submitted"),
        at("write 1 confirmed"),
    );
    assert!(
        queued < running && running < executed && executed < submitted && submitted < confirmed,
        "{trace:?}"
    );
    // Its first record: the cursor past its log is not durable before it either. Running and
    // executed: recovery runs a job it finds queued or running again.
    assert!(
        trace[queued..submitted].iter().all(|e| e != "flush"),
        "nothing before the send is flushed on its own: {trace:?}"
    );
    // The sent output is flushed, in the background (the receipt is not held up for it).
    assert!(trace[submitted..].iter().any(|e| e == "flush"), "{trace:?}");
    // The mined output's gas is journalled with `confirmed`, not by a write of its own.
    assert!(
        trace[submitted + 1..confirmed]
            .iter()
            .all(|e| !e.starts_with("write 1 ")),
        "{trace:?}"
    );
}
