//! The chain adapters against a real anvil with the dev contracts: the transaction sender
//! (`TxSender`, also the `ChainProbe`), the code source (`UserCodeSource`), the origin checker
//! (`OriginChecker`) and the log follower (`LogFollower`). The `ChainWriter`, `ChainProbe`,
//! `CodeSource` and `ChainReader` contract suites (`domain::testing`) run here against the real
//! adapters; the domain's unit tests run the same suites over the stubs it uses.
//!
//! Run with `cargo test --test it chain::`. Each test starts its own anvil.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ethers::middleware::Middleware;
use ethers::types::{Address, BlockNumber, TransactionRequest, H256, U256};
use serverless_executor::client;
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::jobs;
use serverless_executor::client::jobs::CodeForm;
use serverless_executor::config::{ChainConfig, Config};
use serverless_executor::domain::dal::{
    ignore_sent, ChainError, ChainWriter, CodeFetchError, CodeSource, OutputPlan, Revert, TxOutcome,
};
use serverless_executor::domain::model::{ChainEvent, ErrorCode};
use serverless_executor::domain::testing::{
    chain_probe_contract, chain_reader_contract, chain_writer_contract, code_source_contract,
    is_mined, revert_of, sample_job, CodeCase, ProbeCase, ReaderCase, WriterCase,
};
use serverless_executor::effects::chain::sender::RECEIPT_TIMEOUT;
use serverless_executor::effects::chain::{FollowerItem, LogFollower, OriginChecker, TxSender};
use serverless_executor::effects::code_fetch::{
    UserCodeSource, LEGACY_SAVE_CODE_SELECTOR, SAVE_CODE_SELECTOR,
};
use serverless_executor::effects::signer::EnclaveKey;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::common::anvil::{
    random_enclave, sign_output, Devnet, FIRST_GAS_ACCOUNT, JOB_AUTHOR, OPERATOR,
};
use crate::common::proxy::Proxy;

const OK_CODE: &str = "export default { fetch() { return new Response(\"ok\"); } };";

/// Two executors per job, a short window (5 s buffer) and a 30 s signature age limit.
fn params(executors_to_select: u8) -> DeployParams {
    DeployParams {
        execution_buffer_secs: 5,
        sign_max_age_secs: 30,
        attestation_max_age_secs: 600,
        executors_to_select,
        ..DeployParams::default()
    }
}

/// An output plan that never limits the tests: plenty of gas, a deadline far ahead.
fn plan() -> OutputPlan {
    OutputPlan {
        min_gas: 0,
        max_gas: 3_000_000,
        until_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 600_000,
    }
}

/// A devnet with two registered enclaves (capacity 4 each, both selected for every job).
async fn two_executor_devnet() -> (Devnet, EnclaveKey, EnclaveKey, H256) {
    two_executor_devnet_of(4).await
}

/// The same with `capacity` jobs each.
async fn two_executor_devnet_of(capacity: u64) -> (Devnet, EnclaveKey, EnclaveKey, H256) {
    let devnet = Devnet::start(params(2)).await;
    let (e1, e2) = (random_enclave(), random_enclave());
    devnet.register(&e1, OPERATOR, capacity).await;
    devnet.register(&e2, OPERATOR, capacity).await;
    let codehash = devnet.save_code(OK_CODE).await;
    (devnet, e1, e2, codehash)
}

#[tokio::test]
async fn chain_writer_contract_holds_for_the_tx_sender_and_windows_close() {
    let (devnet, e1, e2, codehash) = two_executor_devnet().await;
    let job = devnet.create_job(codehash, b"input", 5_000).await;
    assert_eq!(job.selected_executors.len(), 2);
    // Registered after the job was created: a verified enclave the job did not select.
    let e3 = random_enclave();
    devnet.register(&e3, OPERATOR, 4).await;
    let now = devnet.chain_time().await;
    let case = WriterCase {
        gas_secret: devnet.key(FIRST_GAS_ACCOUNT),
        output: sign_output(&e1, job.job_id, b"hello", 42, ErrorCode::Ok, now),
        stale_output: sign_output(&e2, job.job_id, b"late", 1, ErrorCode::Ok, now - 100),
        unselected_output: sign_output(&e3, job.job_id, b"x", 1, ErrorCode::Ok, now),
        unverified_output: sign_output(&random_enclave(), job.job_id, b"x", 1, ErrorCode::Ok, now),
        plan: plan(),
        open_job: job.job_id,
        unknown_job: U256::from(1000),
    };
    let sender = TxSender::new(devnet.chain_config()).expect("sender");
    chain_writer_contract(&sender, &case).await;

    // The output is on chain as JobResponded.
    let responses = jobs::wait_for_response(
        &devnet.http_url(),
        devnet.deployment.jobs,
        job.job_id,
        Duration::from_secs(5),
    )
    .await
    .expect("JobResponded");
    assert_eq!(responses.len(), 1);
    let response = &responses[0];
    assert_eq!(
        response.executor,
        serverless_executor::domain::dal::EnclaveSigner::address(&e1)
    );
    assert_eq!(response.output, b"hello");
    assert_eq!(response.total_time, 42);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.output_count, 1);

    // After deadline + buffer: outputs are refused, the slash lands once.
    devnet.advance(5 + 5 + 2).await;
    let now = devnet.chain_time().await;
    let late = sign_output(&e2, job.job_id, b"late", 1, ErrorCode::Ok, now);
    let outcome = sender.submit_output(&late, plan(), ignore_sent()).await;
    assert_eq!(
        revert_of(&outcome),
        Some(Revert::ExecutionTimeOver),
        "{outcome:?}"
    );
    let slash = sender.slash_on_execution_timeout(job.job_id).await;
    assert!(is_mined(&slash), "{slash:?}");
    let again = sender.slash_on_execution_timeout(job.job_id).await;
    assert_eq!(revert_of(&again), Some(Revert::InvalidJob), "{again:?}");
}

#[tokio::test]
async fn concurrent_submits_use_distinct_nonces_from_the_chain() {
    let (devnet, e1, e2, codehash) = two_executor_devnet().await;
    let first = devnet.create_job(codehash, b"1", 5_000).await;
    let second = devnet.create_job(codehash, b"2", 5_000).await;
    let now = devnet.chain_time().await;
    // The gas account has already sent a transaction of its own: the chain's nonce wins.
    send_raw(
        &devnet,
        FIRST_GAS_ACCOUNT,
        Some(devnet.deployment.user_code),
        vec![],
    )
    .await;
    let sender = TxSender::new(devnet.chain_config()).expect("sender");
    sender
        .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT))
        .expect("gas key");
    let a = sign_output(&e1, first.job_id, b"a", 1, ErrorCode::Ok, now);
    let b = sign_output(&e1, second.job_id, b"b", 1, ErrorCode::Ok, now);
    let (ra, rb) = tokio::join!(
        sender.submit_output(&a, plan(), ignore_sent()),
        sender.submit_output(&b, plan(), ignore_sent())
    );
    let provider = devnet.provider();
    let mut nonces = Vec::new();
    for outcome in [ra, rb] {
        nonces.push(mined_nonce(&provider, outcome).await);
    }
    nonces.sort();
    assert_eq!(nonces, vec![U256::from(1), U256::from(2)]);

    // A new gas key starts from its own account's nonce.
    let new_gas = sender
        .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT + 1))
        .expect("gas key");
    let c = sign_output(&e2, first.job_id, b"c", 1, ErrorCode::Ok, now);
    let outcome = sender.submit_output(&c, plan(), ignore_sent()).await;
    let tx_hash = match &outcome {
        Ok(TxOutcome::Mined { tx_hash, .. }) => *tx_hash,
        other => panic!("mined: {other:?}"),
    };
    let tx = provider
        .get_transaction(tx_hash)
        .await
        .expect("eth_getTransactionByHash")
        .expect("the transaction exists");
    assert_eq!((tx.from, tx.nonce), (new_gas, U256::zero()));
}

/// The nonce of a mined outcome's transaction.
async fn mined_nonce(
    provider: &ethers::providers::Provider<ethers::providers::Http>,
    outcome: Result<TxOutcome, ChainError>,
) -> U256 {
    let Ok(TxOutcome::Mined { tx_hash, .. }) = outcome else {
        panic!("both land: {outcome:?}");
    };
    provider
        .get_transaction(tx_hash)
        .await
        .expect("eth_getTransactionByHash")
        .expect("the transaction exists")
        .nonce
}

async fn set_automine(devnet: &Devnet, on: bool) {
    devnet
        .provider()
        .request::<_, serde_json::Value>("evm_setAutomine", [on])
        .await
        .expect("evm_setAutomine");
}

/// Waits until anvil's pool holds `count` pending transactions.
async fn wait_for_pool(devnet: &Devnet, count: usize) {
    let provider = devnet.provider();
    for _ in 0..200 {
        let block = provider
            .get_block(BlockNumber::Pending)
            .await
            .expect("pending block");
        if block.map(|b| b.transactions.len()).unwrap_or(0) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pool never held {count} transactions");
}

#[tokio::test]
async fn a_reverted_receipt_is_replayed_for_its_reason() {
    let (devnet, e1, _e2, codehash) = two_executor_devnet().await;
    let job = devnet.create_job(codehash, b"in", 60_000).await;
    let now = devnet.chain_time().await;
    let output = Arc::new(sign_output(&e1, job.job_id, b"same", 1, ErrorCode::Ok, now));
    // Two senders (two gas accounts) race the same output into one block.
    let senders: Vec<Arc<TxSender>> = (0..2)
        .map(|i| {
            let sender = TxSender::new(devnet.chain_config()).expect("sender");
            sender
                .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT + i))
                .expect("gas key");
            Arc::new(sender)
        })
        .collect();
    set_automine(&devnet, false).await;
    let tasks: Vec<JoinHandle<_>> = senders
        .iter()
        .map(|sender| {
            let (sender, output) = (sender.clone(), output.clone());
            tokio::spawn(async move { sender.submit_output(&output, plan(), ignore_sent()).await })
        })
        .collect();
    wait_for_pool(&devnet, 2).await;
    devnet.anvil.mine().await.expect("evm_mine");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    set_automine(&devnet, true).await;
    assert_eq!(
        outcomes.iter().filter(|o| is_mined(o)).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|o| matches!(
            o,
            Ok(TxOutcome::Reverted {
                tx_hash: Some(_),
                revert: Revert::AlreadySubmittedOutput,
                ..
            })
        )),
        "the loser's receipt (status 0) is explained by replaying it: {outcomes:?}"
    );
}

#[tokio::test]
async fn an_unmined_transaction_is_replaced_with_the_same_nonce() {
    let (devnet, e1, _e2, codehash) = two_executor_devnet().await;
    let job = devnet.create_job(codehash, b"in", 60_000).await;
    let now = devnet.chain_time().await;
    let output = sign_output(&e1, job.job_id, b"slow", 1, ErrorCode::Ok, now);
    let sender = Arc::new(TxSender::new(devnet.chain_config()).expect("sender"));
    let gas = sender
        .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT))
        .expect("gas key");
    set_automine(&devnet, false).await;
    let task = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.submit_output(&output, plan(), ignore_sent()).await })
    };
    wait_for_pool(&devnet, 1).await;
    let provider = devnet.provider();
    let first = provider
        .get_block_with_txs(BlockNumber::Pending)
        .await
        .expect("pending block")
        .expect("a pending block")
        .transactions[0]
        .clone();
    // Past the receipt timeout the sender replaces it: same nonce, higher fees.
    let mut replacement = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending = provider
            .get_block_with_txs(BlockNumber::Pending)
            .await
            .expect("pending block")
            .expect("a pending block");
        if let Some(tx) = pending.transactions.iter().find(|tx| tx.hash != first.hash) {
            replacement = Some(tx.clone());
            break;
        }
    }
    let replacement =
        replacement.unwrap_or_else(|| panic!("no replacement within {RECEIPT_TIMEOUT:?} + 10 s"));
    assert_eq!(replacement.from, gas);
    assert_eq!(replacement.nonce, first.nonce);
    assert!(
        replacement.max_fee_per_gas > first.max_fee_per_gas,
        "{:?} > {:?}",
        replacement.max_fee_per_gas,
        first.max_fee_per_gas
    );
    devnet.anvil.mine().await.expect("evm_mine");
    let outcome = task.await.expect("task");
    set_automine(&devnet, true).await;
    assert!(
        matches!(outcome, Ok(TxOutcome::Mined { tx_hash, gas_used }) if tx_hash == replacement.hash && gas_used > 21_000),
        "{outcome:?}"
    );
    let nonce = provider
        .get_transaction_count(gas, None)
        .await
        .expect("nonce");
    assert_eq!(nonce, U256::one(), "exactly one transaction was mined");
}

/// The devnet's chain config with its HTTP requests through a counting proxy (WebSocket
/// straight to anvil), and the proxy.
async fn counted_config(devnet: &Devnet) -> (ChainConfig, Proxy) {
    let target: SocketAddr = format!("127.0.0.1:{}", devnet.anvil.port())
        .parse()
        .expect("address");
    let proxy = Proxy::start(target).await;
    let mut config = devnet.chain_config();
    config.rpc_http_url = proxy.http_url();
    (config, proxy)
}

/// A sender whose HTTP requests go through a counting proxy (its `newHeads` straight to anvil).
async fn counted_sender(devnet: &Devnet) -> (TxSender, Proxy) {
    let (config, proxy) = counted_config(devnet).await;
    (TxSender::new(config).expect("sender"), proxy)
}

#[tokio::test]
async fn outputs_in_a_row_ask_the_node_for_the_nonce_and_the_fees_once() {
    let (devnet, e1, _e2, codehash) = two_executor_devnet().await;
    let mut jobs = Vec::new();
    for input in [b"1", b"2", b"3"] {
        jobs.push(devnet.create_job(codehash, input, 60_000).await);
    }
    let now = devnet.chain_time().await;
    let (sender, proxy) = counted_sender(&devnet).await;
    // A long period, so that the count does not depend on how fast the machine is.
    let sender = sender.with_fee_cache(Duration::from_secs(60));
    sender
        .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT))
        .expect("gas key");
    let provider = devnet.provider();
    let mut nonces = Vec::new();
    for job in &jobs {
        let output = sign_output(&e1, job.job_id, b"out", 1, ErrorCode::Ok, now);
        let outcome = sender.submit_output(&output, plan(), ignore_sent()).await;
        nonces.push(mined_nonce(&provider, outcome).await);
    }
    assert_eq!(nonces, [0, 1, 2].map(U256::from));
    let calls = proxy.all_calls();
    // The nonce and the fees once; the estimate and the send once per output (the estimate
    // is never reused: a gas burner's callback is sized against the state of the moment).
    for (method, expected) in [
        ("eth_getTransactionCount", 1),
        ("eth_getBlockByNumber", 1),
        ("eth_maxPriorityFeePerGas", 1),
        ("eth_gasPrice", 0),
        ("eth_estimateGas", 3),
        ("eth_sendRawTransaction", 3),
    ] {
        assert_eq!(proxy.calls(method), expected, "{method}: {calls:?}");
    }
}

/// A sender through the counting proxy with the gas key set, after one mined output (`warm_up`'s)
/// so that its newHeads subscription is up.
async fn subscribed_sender(
    devnet: &Devnet,
    enclave: &EnclaveKey,
    warm_up: U256,
    now: u64,
) -> (Arc<TxSender>, Proxy) {
    let (sender, proxy) = counted_sender(devnet).await;
    let sender = Arc::new(sender);
    sender
        .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT))
        .expect("gas key");
    // The first wait for a receipt subscribes to newHeads.
    let first = sign_output(enclave, warm_up, b"w", 1, ErrorCode::Ok, now);
    let outcome = sender.submit_output(&first, plan(), ignore_sent()).await;
    assert!(is_mined(&outcome), "{outcome:?}");
    (sender, proxy)
}

/// A devnet with `outputs` jobs for the first executor (besides a warm-up one) and a subscribed
/// sender; returns the jobs' ids and the chain time to sign their outputs at.
async fn jobs_and_subscribed_sender(
    outputs: usize,
) -> (Devnet, EnclaveKey, Vec<U256>, u64, Arc<TxSender>, Proxy) {
    let (devnet, e1, _e2, codehash) = two_executor_devnet_of(outputs as u64 + 1).await;
    let warm_up = devnet.create_job(codehash, b"0", 60_000).await;
    let mut jobs = Vec::new();
    for i in 0..outputs {
        let job = devnet
            .create_job(codehash, i.to_string().as_bytes(), 60_000)
            .await;
        jobs.push(job.job_id);
    }
    let now = devnet.chain_time().await;
    let (sender, proxy) = subscribed_sender(&devnet, &e1, warm_up.job_id, now).await;
    (devnet, e1, jobs, now, sender, proxy)
}

/// Submits an output of `job` on a task of its own.
fn spawn_output(
    sender: &Arc<TxSender>,
    enclave: &EnclaveKey,
    job: U256,
    now: u64,
) -> tokio::task::JoinHandle<Result<TxOutcome, ChainError>> {
    let (sender, output) = (
        sender.clone(),
        sign_output(enclave, job, b"o", 1, ErrorCode::Ok, now),
    );
    tokio::spawn(async move { sender.submit_output(&output, plan(), ignore_sent()).await })
}

/// Waits (up to 10 s) until the proxy has seen `count` raw transactions in all.
async fn wait_for_sends(proxy: &Proxy, count: usize) {
    for _ in 0..2000 {
        if proxy.calls("eth_sendRawTransaction") >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{} of {count} transactions sent",
        proxy.calls("eth_sendRawTransaction")
    );
}

#[tokio::test]
async fn a_receipt_waits_for_new_heads_rather_than_polling() {
    let (devnet, e1, jobs, now, sender, proxy) = jobs_and_subscribed_sender(1).await;

    set_automine(&devnet, false).await;
    let sends = proxy.calls("eth_sendRawTransaction");
    let task = spawn_output(&sender, &e1, jobs[0], now);
    wait_for_sends(&proxy, sends + 1).await;
    let before = proxy.calls("eth_getTransactionReceipt");
    // Unmined for 3 s: no block comes, and it is too soon for a replacement (RECEIPT_TIMEOUT).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_unmined = proxy.calls("eth_getTransactionReceipt") - before;
    devnet.anvil.mine().await.expect("evm_mine");
    let outcome = task.await.expect("task");
    set_automine(&devnet, true).await;
    assert!(is_mined(&outcome), "{outcome:?}");
    // Polling (2 ms doubling to 100 ms) asks about thirty times in 3 s; waiting on newHeads asks
    // at once and 2, 6 and 14 ms after the send (RECEIPT_EARLY_LOOKS), then once a second as a
    // safety net (RECEIPT_SAFETY_POLL).
    assert!(
        while_unmined <= 8,
        "{while_unmined} receipt requests while nothing was mined: {:?}",
        proxy.all_calls()
    );
}

/// On a node whose receipts are never there before their block's head (here each block is mined
/// 200 ms after the send, far from the last early look even on a loaded machine), early looks
/// only miss: after a few outputs the sender stops making them and looks once per output, when
/// the head of its block is announced.
#[tokio::test]
async fn early_receipt_looks_stop_where_they_never_find_one() {
    const OUTPUTS: usize = 10;
    let (devnet, e1, jobs, now, sender, proxy) = jobs_and_subscribed_sender(OUTPUTS).await;

    set_automine(&devnet, false).await;
    let mut looks = Vec::new();
    for job in jobs {
        let sends = proxy.calls("eth_sendRawTransaction");
        let before = proxy.calls("eth_getTransactionReceipt");
        let task = spawn_output(&sender, &e1, job, now);
        wait_for_sends(&proxy, sends + 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        devnet.anvil.mine().await.expect("evm_mine");
        let outcome = task.await.expect("task");
        assert!(is_mined(&outcome), "{outcome:?}");
        looks.push(proxy.calls("eth_getTransactionReceipt") - before);
    }
    set_automine(&devnet, true).await;
    // At first four early looks (at once, 2, 6 and 14 ms) and the head's; at the end the head's.
    assert!(looks[0] >= 4, "no early looks at first: {looks:?}");
    assert!(
        looks[OUTPUTS - 3..].iter().all(|&n| n == 1),
        "receipt requests per output: {looks:?}"
    );
}

/// Outputs waiting for their receipts at once: an account's transactions are mined in nonce
/// order, so only the lowest nonce looks on every head and early poll; the others look once a
/// second (the safety net) until it is mined, then at once, one after the other.
#[tokio::test]
async fn outputs_waiting_at_once_look_for_receipts_in_nonce_order() {
    const OUTPUTS: usize = 5;
    let (devnet, e1, jobs, now, sender, proxy) = jobs_and_subscribed_sender(OUTPUTS).await;

    set_automine(&devnet, false).await;
    let sends = proxy.calls("eth_sendRawTransaction");
    let before = proxy.calls("eth_getTransactionReceipt");
    let tasks: Vec<_> = jobs
        .iter()
        .map(|&job| spawn_output(&sender, &e1, job, now))
        .collect();
    wait_for_sends(&proxy, sends + OUTPUTS).await;
    // Unmined for 3 s (too soon for a replacement, RECEIPT_TIMEOUT).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_unmined = proxy.calls("eth_getTransactionReceipt") - before;
    // One block takes them all: the first finds its receipt on the head, each next one when
    // the one before it is done.
    devnet.anvil.mine().await.expect("evm_mine");
    for task in tasks {
        let outcome = task.await.expect("task");
        assert!(is_mined(&outcome), "{outcome:?}");
    }
    set_automine(&devnet, true).await;
    // The lowest nonce: at once, three early looks, then once a second (up to 8,
    // as `a_receipt_waits_for_new_heads_rather_than_polling`); the four behind it once a
    // second from their sends (3, +1 for timing). Each looking as the lowest does: about 35.
    assert!(
        while_unmined <= 8 + (OUTPUTS - 1) * 4,
        "{while_unmined} receipt requests while nothing was mined: {:?}",
        proxy.all_calls()
    );
}

#[tokio::test]
async fn chain_probe_contract_holds_for_the_tx_sender() {
    let devnet = Devnet::start(params(1)).await;
    let sender = TxSender::new(devnet.chain_config()).expect("sender");
    let without_key = ProbeCase {
        chain_up: true,
        gas_key: false,
    };
    chain_probe_contract(&sender, &without_key).await;
    sender
        .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT))
        .expect("a valid gas key");
    let with_key = ProbeCase {
        chain_up: true,
        gas_key: true,
    };
    chain_probe_contract(&sender, &with_key).await;
    // Without contracts configured the chain is not probed.
    let mut unconfigured = devnet.chain_config();
    unconfigured.jobs_address = Address::zero();
    let sender = TxSender::new(unconfigured).expect("sender");
    let down = ProbeCase {
        chain_up: false,
        gas_key: false,
    };
    chain_probe_contract(&sender, &down).await;
}

#[tokio::test]
async fn chain_reader_contract_holds_for_the_origin_checker() {
    use serverless_executor::domain::model::JobOrigin;
    let devnet = Devnet::start(params(1)).await;
    let enclave = random_enclave();
    devnet.register(&enclave, OPERATOR, 4).await;
    let codehash = devnet.save_code(OK_CODE).await;
    let created = devnet.create_job(codehash, b"input", 5_000).await;
    let receipt = devnet
        .provider()
        .get_transaction_receipt(created.tx_hash)
        .await
        .expect("eth_getTransactionReceipt")
        .expect("mined");
    let log_index = receipt
        .logs
        .iter()
        .find(|log| log.address == devnet.deployment.jobs)
        .and_then(|log| log.log_index)
        .expect("a JobCreated log")
        .low_u64();
    let origin = JobOrigin {
        block_number: created.block_number,
        block_hash: receipt.block_hash.expect("in a block"),
        tx_hash: created.tx_hash,
        log_index,
    };
    let job = |id: U256, origin: JobOrigin| {
        let mut job = sample_job(0, vec![], 1);
        job.id = id;
        job.origin = Some(origin);
        job
    };
    let case = ReaderCase {
        canonical: vec![job(created.job_id, origin)],
        off_chain: vec![
            // Another block at that height (as after a reorg), another transaction, another
            // job's id in this log, another log of the transaction.
            job(
                created.job_id,
                JobOrigin {
                    block_hash: H256::repeat_byte(0xbb),
                    ..origin
                },
            ),
            job(
                created.job_id,
                JobOrigin {
                    tx_hash: H256::repeat_byte(0x77),
                    ..origin
                },
            ),
            job(created.job_id + 1, origin),
            job(
                created.job_id,
                JobOrigin {
                    log_index: log_index + 100,
                    ..origin
                },
            ),
        ],
    };
    let reader = OriginChecker::new(&devnet.chain_config()).expect("origin checker");
    chain_reader_contract(&reader, &case).await;
}

/// Sends a raw transaction (explicit gas: it may revert) and returns its hash.
async fn send_raw(devnet: &Devnet, account: usize, to: Option<Address>, data: Vec<u8>) -> H256 {
    let client = client::client(&devnet.http_url(), devnet.anvil.key(account))
        .await
        .expect("client");
    let mut tx = TransactionRequest::new().data(data).gas(200_000u64);
    if let Some(to) = to {
        tx = tx.to(to);
    }
    let receipt = client
        .send_transaction(tx, None)
        .await
        .expect("eth_sendTransaction")
        .await
        .expect("receipt")
        .expect("mined");
    receipt.transaction_hash
}

fn calldata(selector: [u8; 4], arguments: Vec<u8>) -> Vec<u8> {
    let mut data = selector.to_vec();
    data.extend(arguments);
    data
}

#[tokio::test]
async fn code_source_contract_holds_for_user_code_source() {
    let devnet = Devnet::start(params(1)).await;
    let user_code = devnet.deployment.user_code;
    let saved = devnet.save_code(OK_CODE).await;
    let to_jobs = send_raw(&devnet, JOB_AUTHOR, Some(devnet.deployment.jobs), vec![]).await;
    let creation = send_raw(&devnet, JOB_AUTHOR, None, vec![0x00]).await;
    let junk = send_raw(
        &devnet,
        JOB_AUTHOR,
        Some(user_code),
        calldata(SAVE_CODE_SELECTOR, vec![0xab; 10]),
    )
    .await;
    let other_selector = send_raw(
        &devnet,
        JOB_AUTHOR,
        Some(user_code),
        calldata(
            [1, 2, 3, 4],
            ethers::abi::encode(&[ethers::abi::Token::String("x".into())]),
        ),
    )
    .await;
    let not_utf8 = send_raw(
        &devnet,
        JOB_AUTHOR,
        Some(user_code),
        calldata(
            SAVE_CODE_SELECTOR,
            ethers::abi::encode(&[ethers::abi::Token::Bytes(vec![0xff, 0xfe, 0x80])]),
        ),
    )
    .await;
    let case = CodeCase {
        saved,
        source: OK_CODE.into(),
        unknown: H256::random(),
        wrong_contract: vec![to_jobs],
        bad_calldata: vec![junk, other_selector, not_utf8],
    };
    let source = UserCodeSource::new(&devnet.chain_config()).expect("code source");
    code_source_contract(&source, &case).await;

    // Both forms of saveCodeInCallData, through the UserCode contract itself, and the current
    // form with long metadata (which comes after the code in the calldata's tail).
    let url = devnet.http_url();
    let author = devnet.anvil.key(JOB_AUTHOR);
    let legacy_code = "export default { fetch() { return new Response('legacy'); } };";
    let legacy = jobs::save_code_as(&url, author, user_code, legacy_code, CodeForm::Legacy, &[])
        .await
        .expect("legacy saveCodeInCallData(string)");
    let metadata: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let with_metadata = jobs::save_code_as(
        &url,
        author,
        user_code,
        OK_CODE,
        CodeForm::Current,
        &metadata,
    )
    .await
    .expect("saveCodeInCallData(string,bytes) with long metadata");
    assert_eq!(source.fetch_code(legacy).await, Ok(legacy_code.to_string()));
    assert_eq!(
        source.fetch_code(with_metadata).await,
        Ok(OK_CODE.to_string())
    );
    let legacy_junk = send_raw(
        &devnet,
        JOB_AUTHOR,
        Some(user_code),
        calldata(LEGACY_SAVE_CODE_SELECTOR, vec![0xab; 10]),
    )
    .await;
    assert!(matches!(
        source.fetch_code(legacy_junk).await,
        Err(CodeFetchError::BadCalldata(_))
    ));
    assert_eq!(
        source.fetch_code(creation).await,
        Err(CodeFetchError::WrongContract(creation)),
        "a contract creation is not a UserCode call"
    );

    // The UserCode address configured in mixed case still matches.
    let hex_address = format!("{:x}", user_code);
    let mixed: String = hex_address
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let raw: HashMap<String, String> = [
        ("RPC_HTTP_URL", devnet.http_url()),
        ("USER_CODE_ADDRESS", format!("0x{mixed}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = Config::from_map(&raw).expect("config");
    let mixed_source = UserCodeSource::new(&config.chain).expect("code source");
    assert_eq!(
        mixed_source.fetch_code(saved).await,
        Ok(OK_CODE.to_string())
    );

    // Only permanent answers are cached: with the node gone they still come back, while an
    // unknown hash is a transient failure, not a cached NotFound.
    drop(devnet);
    assert_eq!(source.fetch_code(saved).await, Ok(OK_CODE.to_string()));
    assert_eq!(
        source.fetch_code(to_jobs).await,
        Err(CodeFetchError::WrongContract(to_jobs))
    );
    assert!(matches!(
        source.fetch_code(case.unknown).await,
        Err(CodeFetchError::Transient(_))
    ));
}

// ------------------------------------------------------------------ LogFollower

/// Receives follower items until `done` says so (panics after `timeout`).
async fn collect_until(
    rx: &mut mpsc::Receiver<FollowerItem>,
    items: &mut Vec<FollowerItem>,
    timeout: Duration,
    done: impl Fn(&[FollowerItem]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(items) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => items.push(item),
            Ok(None) => panic!("the follower stopped; got {items:#?}"),
            Err(_) => panic!("timed out; got {items:#?}"),
        }
    }
}

fn job_ids(items: &[FollowerItem]) -> Vec<U256> {
    items
        .iter()
        .filter_map(|item| match item {
            FollowerItem::Log(log) => match &log.event {
                ChainEvent::JobCreated(job) => Some(job.id),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn synced_at_least(items: &[FollowerItem], block: u64) -> bool {
    items
        .iter()
        .any(|item| matches!(item, FollowerItem::Synced { next_block } if *next_block > block))
}

/// Logs in strictly increasing position, never removed, and never one behind a `Synced`.
fn assert_ordered_and_consistent(items: &[FollowerItem]) {
    let mut last = None;
    let mut synced = 0;
    for item in items {
        match item {
            FollowerItem::Log(log) => {
                assert!(!log.removed, "{log:?}");
                assert!(
                    log.position.block_number >= synced,
                    "a log of block {} after Synced {{ next_block: {synced} }}",
                    log.position.block_number
                );
                assert!(
                    last.is_none_or(|last| log.position > last),
                    "out of order or duplicate: {:?} after {last:?}",
                    log.position
                );
                last = Some(log.position);
            }
            FollowerItem::Synced { next_block } => {
                assert!(*next_block >= synced, "Synced went back");
                synced = *next_block;
            }
            FollowerItem::Rewound { next_block } => {
                panic!("no reorg happened, yet the follower rewound to {next_block}")
            }
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("serverless_executor=info")
        .try_init();
}

#[tokio::test]
async fn follower_backfills_then_streams_each_log_once_in_order() {
    init_tracing();
    let devnet = Devnet::start(params(1)).await;
    let (mine, other) = (random_enclave(), random_enclave());
    devnet.register(&mine, OPERATOR, 10).await;
    devnet.register(&other, OPERATOR, 10).await;
    let codehash = devnet.save_code(OK_CODE).await;
    let mut created = Vec::new();
    for i in 0..3u8 {
        created.push(devnet.create_job(codehash, &[i], 60_000).await);
    }
    let backfilled_to = devnet.head().await;

    let my_address = serverless_executor::domain::dal::EnclaveSigner::address(&mine);
    // Its HTTP requests are counted: anvil gives each log its block's timestamp, so no job
    // needs a block request for its start time.
    let (config, proxy) = counted_config(&devnet).await;
    // Scans only at (re)connect within this test: live logs must come from the subscription.
    let follower =
        LogFollower::new(config, my_address).with_poll_interval(Duration::from_secs(120));
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(follower.run(Some(0), tx));
    let mut items = Vec::new();
    collect_until(&mut rx, &mut items, Duration::from_secs(20), |items| {
        synced_at_least(items, backfilled_to)
    })
    .await;
    // Ids start at 0, as on the published Jobs.
    assert_eq!(
        job_ids(&items),
        vec![U256::from(0), U256::from(1), U256::from(2)]
    );

    // Live: three more jobs and one output.
    for i in 3..6u8 {
        created.push(devnet.create_job(codehash, &[i], 60_000).await);
    }
    let sender = TxSender::new(devnet.chain_config()).expect("sender");
    sender
        .set_gas_key(devnet.key(FIRST_GAS_ACCOUNT))
        .expect("gas key");
    let first = &created[0];
    let selected = if first.selected_executors[0] == my_address {
        &mine
    } else {
        &other
    };
    let now = devnet.chain_time().await;
    let output = sign_output(selected, first.job_id, b"ok", 3, ErrorCode::Ok, now);
    assert!(is_mined(
        &sender.submit_output(&output, plan(), ignore_sent()).await
    ));
    collect_until(&mut rx, &mut items, Duration::from_secs(20), |items| {
        job_ids(items).len() >= 6
            && items.iter().any(|i| {
                matches!(i, FollowerItem::Log(l) if matches!(l.event, ChainEvent::JobResponded { .. }))
            })
    })
    .await;
    // Nothing more arrives (no duplicates).
    tokio::time::sleep(Duration::from_millis(800)).await;
    while let Ok(item) = rx.try_recv() {
        items.push(item);
    }

    assert_ordered_and_consistent(&items);
    assert_eq!(
        job_ids(&items),
        (0..6u64).map(U256::from).collect::<Vec<_>>()
    );
    let provider = devnet.provider();
    for item in &items {
        let FollowerItem::Log(log) = item else {
            continue;
        };
        match &log.event {
            ChainEvent::JobCreated(job) => {
                let created = created
                    .iter()
                    .find(|c| c.job_id == job.id)
                    .expect("a job we created");
                assert_eq!(job.selected_executors, created.selected_executors);
                assert_eq!(job.codehash, codehash);
                assert_eq!(job.deadline_ms, 60_000);
                assert_eq!(job.env, 1);
                assert_eq!(log.position.block_number, created.block_number);
                let block = provider
                    .get_block(log.block_hash)
                    .await
                    .expect("block")
                    .expect("the block exists");
                assert_eq!(job.exec_start_time, block.timestamp.as_u64());
            }
            ChainEvent::ExecutorRegistered { enclave, .. } => {
                assert_eq!(*enclave, my_address, "other enclaves' events are filtered");
            }
            ChainEvent::JobResponded {
                job_id,
                output_count,
                ..
            } => {
                assert_eq!(*job_id, first.job_id);
                assert_eq!(*output_count, 1);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    let registered = items
        .iter()
        .filter(|i| matches!(i, FollowerItem::Log(l) if matches!(l.event, ChainEvent::ExecutorRegistered { .. })))
        .count();
    assert_eq!(registered, 1);
    let responded = items
        .iter()
        .filter(|i| matches!(i, FollowerItem::Log(l) if matches!(l.event, ChainEvent::JobResponded { .. })))
        .count();
    assert_eq!(responded, 1);
    // Six jobs, three backfilled (eth_getLogs) and three live (the subscription).
    assert!(proxy.calls("eth_getLogs") >= 1, "{:?}", proxy.all_calls());
    assert_eq!(
        proxy.calls("eth_getBlockByHash"),
        0,
        "{:?}",
        proxy.all_calls()
    );

    // The follower stops when its receiver is dropped.
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the follower returns once the receiver is gone")
        .expect("no panic");
}

#[tokio::test]
async fn follower_reconnects_and_delivers_what_it_missed_exactly_once() {
    init_tracing();
    let devnet = Devnet::start(params(1)).await;
    let enclave = random_enclave();
    devnet.register(&enclave, OPERATOR, 10).await;
    let codehash = devnet.save_code(OK_CODE).await;
    let start = devnet.head().await + 1;

    let target: SocketAddr = format!("127.0.0.1:{}", devnet.anvil.port())
        .parse()
        .expect("address");
    let mut proxy = Proxy::start(target).await;
    let mut config = devnet.chain_config();
    config.rpc_ws_url = proxy.ws_url();
    let follower = LogFollower::new(
        config,
        serverless_executor::domain::dal::EnclaveSigner::address(&enclave),
    )
    .with_poll_interval(Duration::from_millis(200));
    let (tx, mut rx) = mpsc::channel(64);
    let _task = tokio::spawn(follower.run(Some(start), tx));

    let mut items = Vec::new();
    devnet.create_job(codehash, b"1", 60_000).await;
    collect_until(&mut rx, &mut items, Duration::from_secs(20), |items| {
        job_ids(items).len() == 1
    })
    .await;

    // The WebSocket goes down; jobs are created meanwhile.
    proxy.stop();
    devnet.create_job(codehash, b"2", 60_000).await;
    devnet.create_job(codehash, b"3", 60_000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.resume().await;
    collect_until(&mut rx, &mut items, Duration::from_secs(30), |items| {
        job_ids(items).len() >= 3
    })
    .await;
    devnet.create_job(codehash, b"4", 60_000).await;
    let last_block = devnet.head().await;
    collect_until(&mut rx, &mut items, Duration::from_secs(20), |items| {
        job_ids(items).len() >= 4 && synced_at_least(items, last_block)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    while let Ok(item) = rx.try_recv() {
        items.push(item);
    }
    assert_ordered_and_consistent(&items);
    assert_eq!(
        job_ids(&items),
        (0..4u64).map(U256::from).collect::<Vec<_>>()
    );
}

/// The JobCreated logs in `items`: (removed, job).
fn created_jobs(items: &[FollowerItem]) -> Vec<(bool, serverless_executor::domain::model::Job)> {
    items
        .iter()
        .filter_map(|item| match item {
            FollowerItem::Log(log) => match &log.event {
                ChainEvent::JobCreated(job) => Some((log.removed, job.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A devnet with an enclave registered and `OK_CODE` saved, and a follower of its logs from
/// block 0 (polling every 100 ms besides the WebSocket): its items, and its task.
async fn following_a_registered_enclave(
) -> (Devnet, H256, mpsc::Receiver<FollowerItem>, JoinHandle<()>) {
    init_tracing();
    let devnet = Devnet::start(params(1)).await;
    let mine = random_enclave();
    devnet.register(&mine, OPERATOR, 10).await;
    let codehash = devnet.save_code(OK_CODE).await;
    let my_address = serverless_executor::domain::dal::EnclaveSigner::address(&mine);
    let follower = LogFollower::new(devnet.chain_config(), my_address)
        .with_poll_interval(Duration::from_millis(100));
    let (tx, rx) = mpsc::channel(256);
    let task = tokio::spawn(follower.run(Some(0), tx));
    (devnet, codehash, rx, task)
}

#[tokio::test]
async fn follower_follows_a_reorg_the_node_does_not_report_and_origins_tell_jobs_apart() {
    use serverless_executor::domain::dal::ChainReader;
    use serverless_executor::effects::chain::OriginChecker;
    let (devnet, codehash, mut rx, task) = following_a_registered_enclave().await;

    let provider = devnet.provider();
    let snapshot: serde_json::Value = provider
        .request("evm_snapshot", ())
        .await
        .expect("evm_snapshot");
    let old = devnet.create_job(codehash, b"old", 60_000).await;
    // Two more blocks: the reorg below replaces three.
    devnet.anvil.mine().await.unwrap();
    devnet.anvil.mine().await.unwrap();
    let head = devnet.head().await;
    let mut items = Vec::new();
    collect_until(&mut rx, &mut items, Duration::from_secs(20), |items| {
        synced_at_least(items, head) && job_ids(items).contains(&old.job_id)
    })
    .await;

    let reverted: bool = provider
        .request("evm_revert", [snapshot])
        .await
        .expect("evm_revert");
    assert!(reverted);
    let new = devnet.create_job(codehash, b"new", 60_000).await;
    assert_eq!(new.job_id, old.job_id, "the reorg reuses the id");
    collect_until(&mut rx, &mut items, Duration::from_secs(20), |items| {
        let jobs = created_jobs(items);
        jobs.iter()
            .any(|(removed, job)| *removed && job.code_inputs == b"old")
            && jobs
                .iter()
                .any(|(removed, job)| !*removed && job.code_inputs == b"new")
            && items
                .iter()
                .any(|item| matches!(item, FollowerItem::Rewound { .. }))
    })
    .await;

    let jobs = created_jobs(&items);
    let (_, old_job) = jobs
        .iter()
        .find(|(removed, job)| !*removed && job.code_inputs == b"old")
        .expect("the old job was delivered");
    let (_, removed_job) = jobs.iter().find(|(removed, _)| *removed).unwrap();
    let (_, new_job) = jobs
        .iter()
        .find(|(removed, job)| !*removed && job.code_inputs == b"new")
        .unwrap();
    assert_eq!(
        removed_job, old_job,
        "the removal names the job that was delivered"
    );
    let (old_origin, new_origin) = (old_job.origin.unwrap(), new_job.origin.unwrap());
    assert_eq!(old_origin.tx_hash, old.tx_hash);
    assert_eq!(new_origin.tx_hash, new.tx_hash);
    assert_eq!(old_origin.block_number, old.block_number);
    assert_ne!(old_origin.block_hash, new_origin.block_hash);
    assert!(!old_job.same_job(new_job), "one id, two jobs");
    let rewound = items
        .iter()
        .find_map(|item| match item {
            FollowerItem::Rewound { next_block } => Some(*next_block),
            _ => None,
        })
        .unwrap();
    assert!(
        rewound <= old.block_number,
        "rewound to {rewound}, above the replaced block {}",
        old.block_number
    );

    // The chain says which of the two is on it now.
    let checker = OriginChecker::new(&devnet.chain_config()).unwrap();
    assert!(!checker.job_is_canonical(old_job).await.unwrap());
    assert!(checker.job_is_canonical(new_job).await.unwrap());
    let mut forged = new_job.clone();
    forged.origin = Some(serverless_executor::domain::model::JobOrigin {
        log_index: new_origin.log_index + 1,
        ..new_origin
    });
    assert!(!checker.job_is_canonical(&forged).await.unwrap());
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

#[tokio::test]
async fn a_yes_from_the_origin_checker_lasts_until_the_node_announces_another_head() {
    use serverless_executor::domain::dal::ChainReader;
    use serverless_executor::effects::chain::heads::Heads;
    let (devnet, codehash, mut rx, task) = following_a_registered_enclave().await;
    let heads = Arc::new(Heads::new(devnet.ws_url()));
    let mut watch = heads.watch();
    let checker = OriginChecker::new(&devnet.chain_config())
        .unwrap()
        .with_heads(heads.clone());

    let provider = devnet.provider();
    let snapshot: serde_json::Value = provider.request("evm_snapshot", ()).await.unwrap();
    let created = devnet.create_job(codehash, b"kept", 60_000).await;
    let mut items = Vec::new();
    collect_until(&mut rx, &mut items, Duration::from_secs(20), |items| {
        job_ids(items).contains(&created.job_id)
    })
    .await;
    let (_, job) = created_jobs(&items).into_iter().next().unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|s| s.live && s.latest.is_some_and(|h| h.number >= created.block_number)),
    )
    .await
    .expect("the job's block is announced")
    .unwrap();
    assert!(checker.job_is_canonical(&job).await.unwrap());

    // The block is gone, but no head says so yet: the yes is kept (asking now would say no).
    let reverted: bool = provider.request("evm_revert", [snapshot]).await.unwrap();
    assert!(reverted);
    let unannounced = heads.latest();
    // anvil announces no head for `evm_revert`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(heads.latest(), unannounced);
    assert!(
        checker.job_is_canonical(&job).await.unwrap(),
        "kept while the announced head stands"
    );
    let fresh = OriginChecker::new(&devnet.chain_config()).unwrap();
    assert!(
        !fresh.job_is_canonical(&job).await.unwrap(),
        "the node no longer has the log"
    );

    // The next block is announced: the checker asks again and hears no.
    devnet.anvil.mine().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|s| s.latest != unannounced),
    )
    .await
    .expect("the new head is announced")
    .unwrap();
    assert!(!checker.job_is_canonical(&job).await.unwrap());
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
