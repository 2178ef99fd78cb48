//! Each port's contract suite over the very stub the domain tests use.

use super::*;

#[test]
fn the_counting_metrics_stub_keeps_the_metrics_contract() {
    metrics_contract(&counting_metrics());
}

#[test]
fn the_memory_store_stub_keeps_the_store_contract() {
    store_contract(&memory_store());
}

#[test]
fn the_memory_secrets_stub_keeps_the_secret_store_contract() {
    secret_store_contract(&memory_secrets());
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
