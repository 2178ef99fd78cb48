//! Reorgs on a real anvil, against a real executor (real workerd, real HTTP API): the chain is
//! snapshotted, a job reaches a state (queued, running, executed, confirmed), the chain is
//! reverted (`evm_revert`, which reports no `removed` logs) and another job gets the same id.
//! The new job must run and be answered with its own output, never with the old job's. Also:
//! a data directory refuses a configuration of another deployment.

use std::time::Duration;

use ethers::middleware::Middleware;
use ethers::types::{Address, H256, U256};
use serde_json::{json, Value};
use serverless_executor::bootstrap;
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::devnet::{DevExecutor, Devnet, ExecutorOptions};
use serverless_executor::client::jobs::{
    create_job, save_code, wait_for_outputs, CreatedJob, JobResponse,
};

const WAIT: Duration = Duration::from_secs(90);
/// Long enough that no window closes while a test reverts and recreates a job.
const BUFFER_SECS: u64 = 60;
const ACCOUNT: usize = 1;
/// Waits the milliseconds before the colon, then answers the word after it.
const WAIT_THEN_SAY: &str = r#"export default { async fetch(request) {
  const [ms, word] = (await request.text()).split(":");
  await new Promise((resolve) => setTimeout(resolve, Number(ms)));
  return new Response(word);
} }"#;

async fn devnet(dir: &std::path::Path) -> Devnet {
    crate::common::devnet::devnet(dir, BUFFER_SECS, 1).await
}

async fn executor(net: &Devnet, extra: &[(&str, &str)]) -> DevExecutor {
    net.start_executor(ExecutorOptions {
        account: ACCOUNT,
        job_capacity: 4,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ExecutorOptions::default()
    })
    .await
    .expect("executor starts and registers")
}

/// A devnet in a fresh directory (kept while the first value lives), our executor on it with
/// `extra` settings, and the test job's code saved.
async fn set_up(extra: &[(&str, &str)]) -> (tempfile::TempDir, Devnet, DevExecutor, H256) {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path()).await;
    let ex = executor(&net, extra).await;
    let code = save(&net).await;
    (dir, net, ex, code)
}

async fn rpc(net: &Devnet, method: &str, params: Value) -> Value {
    serverless_executor::client::provider(&net.anvil.http_url())
        .expect("provider")
        .request::<_, Value>(method, params)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

async fn job(net: &Devnet, codehash: H256, input: &str) -> CreatedJob {
    create_job(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.jobs,
        1,
        codehash,
        input.as_bytes(),
        20_000,
    )
    .await
    .expect("createJob")
}

/// The journal's state of job `id`, from the executor's API (None: not journalled).
async fn state(ex: &DevExecutor, id: U256) -> Option<String> {
    let response = reqwest::get(format!("{}/jobs/{id}", ex.api_url))
        .await
        .expect("GET /jobs/{id}");
    if response.status() == 404 {
        return None;
    }
    let body: Value = response.json().await.expect("JSON");
    body["state"].as_str().map(str::to_string)
}

async fn wait_for_state(ex: &DevExecutor, id: U256, wanted: &str) {
    wait_for_states(ex, id, &[wanted]).await
}

async fn wait_for_states(ex: &DevExecutor, id: U256, wanted: &[&str]) {
    let started = tokio::time::Instant::now();
    loop {
        let now = state(ex, id).await;
        if now.as_deref().is_some_and(|now| wanted.contains(&now)) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "job {id} never reached {wanted:?} (last: {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no job runs or sends its output in the executor.
async fn wait_idle(ex: &DevExecutor) {
    assert!(
        ex.running.executor.wait_idle(WAIT.as_millis() as u64).await,
        "the executor stayed busy"
    );
}

async fn outputs(net: &Devnet, id: U256) -> Vec<JobResponse> {
    wait_for_outputs(&net.anvil.http_url(), net.deployment.jobs, id, 1, WAIT)
        .await
        .expect("the job is answered")
}

/// The words answered on chain for job `id` (waits for the first).
async fn answered(net: &Devnet, id: U256) -> Vec<String> {
    outputs(net, id)
        .await
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.output).into_owned())
        .collect()
}

/// Reverts to `snapshot`, then creates the job that reuses the old job's id.
async fn reorg_and_reuse(
    net: &Devnet,
    snapshot: &Value,
    code: H256,
    old: &CreatedJob,
) -> CreatedJob {
    assert_eq!(rpc(net, "evm_revert", json!([snapshot])).await, json!(true));
    let new = job(net, code, "0:new").await;
    assert_eq!(
        new.job_id, old.job_id,
        "the reorg gives the id to another job"
    );
    assert_ne!(new.tx_hash, old.tx_hash);
    new
}

/// After the reorg only the new job's output lands, and only once.
async fn assert_only_the_new_job_is_answered(net: &Devnet, ex: &DevExecutor, id: U256) {
    assert_eq!(answered(net, id).await, vec!["new".to_string()]);
    // Whatever the old job's run or send was doing has ended by now.
    wait_idle(ex).await;
    assert_eq!(
        answered(net, id).await,
        vec!["new".to_string()],
        "the old job's output was never sent for the new job"
    );
    wait_for_state(ex, id, "confirmed").await;
}

#[tokio::test]
async fn a_queued_job_replaced_by_a_reorg_runs_the_new_job() {
    let (_dir, net, ex, code) = set_up(&[("SLOTS", "1")]).await;
    // Holds the only slot so that the next job waits in the queue.
    let long = job(&net, code, "5000:long").await;
    wait_for_state(&ex, long.job_id, "running").await;
    let snapshot = rpc(&net, "evm_snapshot", json!([])).await;
    let old = job(&net, code, "0:old").await;
    wait_for_state(&ex, old.job_id, "queued").await;

    let new = reorg_and_reuse(&net, &snapshot, code, &old).await;
    assert_only_the_new_job_is_answered(&net, &ex, new.job_id).await;
    assert_eq!(answered(&net, long.job_id).await, vec!["long".to_string()]);
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn a_running_job_replaced_by_a_reorg_is_not_answered_with_its_output() {
    let (_dir, net, ex, code) = set_up(&[]).await;
    let snapshot = rpc(&net, "evm_snapshot", json!([])).await;
    let old = job(&net, code, "4000:old").await;
    wait_for_state(&ex, old.job_id, "running").await;

    let new = reorg_and_reuse(&net, &snapshot, code, &old).await;
    assert_only_the_new_job_is_answered(&net, &ex, new.job_id).await;
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn an_executed_job_replaced_by_a_reorg_is_not_answered_with_its_output() {
    let (_dir, net, ex, code) = set_up(&[]).await;
    let snapshot = rpc(&net, "evm_snapshot", json!([])).await;
    // Without gas money the signed output cannot be sent: it stays `executed` (the revert
    // below restores the balance).
    rpc(&net, "anvil_setBalance", json!([gas_address(&net), "0x0"])).await;
    let old = job(&net, code, "0:old").await;
    wait_for_state(&ex, old.job_id, "executed").await;

    let new = reorg_and_reuse(&net, &snapshot, code, &old).await;
    assert_only_the_new_job_is_answered(&net, &ex, new.job_id).await;
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn a_submitted_output_is_not_sent_again_for_the_job_that_replaced_its_job() {
    let (_dir, net, ex, code) = set_up(&[]).await;
    let snapshot = rpc(&net, "evm_snapshot", json!([])).await;
    let old = job(&net, code, "300:old").await;
    // The output transaction is broadcast and waits in the pool: `submitted`.
    rpc(&net, "evm_setAutomine", json!([false])).await;
    wait_for_state(&ex, old.job_id, "submitted").await;
    // The reorg, and the pool loses the transaction (a node's pool is not kept across reorgs
    // for sure): were it replaced (same nonce, higher fees), it would answer the new job.
    assert_eq!(
        rpc(&net, "evm_revert", json!([snapshot])).await,
        json!(true)
    );
    rpc(&net, "anvil_dropAllTransactions", json!([])).await;
    rpc(&net, "evm_setAutomine", json!([true])).await;
    let new = job(&net, code, "0:new").await;
    assert_eq!(
        new.job_id, old.job_id,
        "the reorg gives the id to another job"
    );
    assert_only_the_new_job_is_answered(&net, &ex, new.job_id).await;
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn an_output_left_in_the_pool_by_a_reorg_is_taken_back_and_never_answers_the_new_job() {
    let (_dir, net, ex, code) = set_up(&[]).await;
    let gas = gas_address(&net);
    let fork_block = head(&net).await;
    let snapshot = rpc(&net, "evm_snapshot", json!([])).await;
    let old = job(&net, code, "300:old").await;
    // The output transaction is broadcast and waits in the pool: `submitted`.
    rpc(&net, "evm_setAutomine", json!([false])).await;
    wait_for_state(&ex, old.job_id, "submitted").await;
    let old_tx = submitted_tx(&ex, old.job_id).await;
    let old_raw = rpc(&net, "eth_getRawTransactionByHash", json!([old_tx])).await;
    let nonce = rpc(&net, "eth_getTransactionByHash", json!([old_tx])).await["nonce"].clone();

    // The reorg. anvil keeps a pool transaction across `evm_revert` (its nonce is still free)
    // and would mine it in the new job's own block, before anyone could see that job. Here the
    // node's pool loses it, and an attacker who kept its bytes sends it again as soon as the new
    // job is on chain: mined now, it would answer the new job with the old job's output.
    assert_eq!(
        rpc(&net, "evm_revert", json!([snapshot])).await,
        json!(true)
    );
    rpc(&net, "anvil_dropTransaction", json!([old_tx])).await;
    rpc(&net, "evm_setAutomine", json!([true])).await;
    let new = job(&net, code, "0:new").await;
    assert_eq!(
        new.job_id, old.job_id,
        "the reorg gives the id to another job"
    );
    rpc(&net, "evm_setAutomine", json!([false])).await;
    let replayed = try_rpc(&net, "eth_sendRawTransaction", json!([old_raw])).await;
    println!("the attacker sends the old output again: {replayed:?}");
    // Once the executor has seen the new job its output is sent; the old output's nonce was
    // taken back before that (a self-transfer replaces it in the pool, or is mined already).
    wait_for_states(&ex, new.job_id, &["submitted", "confirmed"]).await;
    rpc(&net, "evm_setAutomine", json!([true])).await;
    rpc(&net, "evm_mine", json!([])).await;

    assert_only_the_new_job_is_answered(&net, &ex, new.job_id).await;
    assert!(
        rpc(&net, "eth_getTransactionReceipt", json!([old_tx]))
            .await
            .is_null(),
        "the old output was never mined"
    );
    let mut at_nonce = Vec::new();
    for number in fork_block + 1..=head(&net).await {
        let block = rpc(
            &net,
            "eth_getBlockByNumber",
            json!([format!("{number:#x}"), true]),
        )
        .await;
        for tx in block["transactions"].as_array().expect("full transactions") {
            assert_ne!(
                tx["hash"],
                json!(old_tx),
                "the old output is in block {number}"
            );
            if tx["from"] == json!(gas) && tx["nonce"] == nonce {
                at_nonce.push(tx.clone());
            }
        }
    }
    assert_eq!(
        at_nonce.len(),
        1,
        "one transaction took the nonce: {at_nonce:?}"
    );
    let taken = &at_nonce[0];
    assert_eq!(
        taken["to"],
        json!(gas),
        "a self-transfer took the nonce: {taken}"
    );
    assert_eq!(taken["value"], json!("0x0"));
    assert_eq!(taken["input"], json!("0x"));
    let count = |block: &'static str| rpc(&net, "eth_getTransactionCount", json!([gas, block]));
    assert_eq!(
        count("latest").await,
        count("pending").await,
        "no nonce is left behind: nothing of ours waits in the pool"
    );
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn a_confirmed_job_replaced_by_a_reorg_does_not_swallow_the_new_job() {
    let (_dir, net, ex, code) = set_up(&[]).await;
    let snapshot = rpc(&net, "evm_snapshot", json!([])).await;
    let old = job(&net, code, "0:old").await;
    assert_eq!(answered(&net, old.job_id).await, vec!["old".to_string()]);
    wait_for_state(&ex, old.job_id, "confirmed").await;

    let new = reorg_and_reuse(&net, &snapshot, code, &old).await;
    assert_only_the_new_job_is_answered(&net, &ex, new.job_id).await;
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn a_reorg_while_the_executor_is_down_is_found_at_start() {
    let (_dir, net, ex, code) = set_up(&[]).await;
    let snapshot = rpc(&net, "evm_snapshot", json!([])).await;
    let old = job(&net, code, "0:old").await;
    assert_eq!(answered(&net, old.job_id).await, vec!["old".to_string()]);
    wait_for_state(&ex, old.job_id, "confirmed").await;
    let cursor_before = head(&net).await;
    ex.stop().await.unwrap();

    // While it is down: the reorg, and a new job under the old id in a block below its cursor.
    let new = reorg_and_reuse(&net, &snapshot, code, &old).await;
    assert!(new.block_number < cursor_before + 1);
    let config = net
        .executor_config(
            &net.executor_dir(ACCOUNT).unwrap(),
            &ExecutorOptions {
                account: ACCOUNT,
                job_capacity: 4,
                ..ExecutorOptions::default()
            },
        )
        .unwrap();
    let running = bootstrap::start(config).await.expect("restart");
    let api_url = format!("http://{}", running.api_addr);
    serverless_executor::client::devnet::wait_for_chain_status(&api_url, "serving", WAIT)
        .await
        .unwrap();
    assert_eq!(answered(&net, new.job_id).await, vec!["new".to_string()]);
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_data_directory_of_another_deployment_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path()).await;
    let opts = ExecutorOptions {
        account: ACCOUNT,
        ..ExecutorOptions::default()
    };
    let executor_dir = net.executor_dir(ACCOUNT).unwrap();
    let config = net.executor_config(&executor_dir, &opts).unwrap();
    let running = bootstrap::start(config.clone()).await.expect("first start");
    running.shutdown(Duration::from_secs(1)).await.unwrap();

    for other in [
        {
            let mut c = config.clone();
            c.chain.jobs_address = Address::repeat_byte(0x55);
            c
        },
        {
            let mut c = config.clone();
            c.chain.chain_id += 1;
            c
        },
    ] {
        let error = match bootstrap::start(other).await {
            Ok(_) => panic!("a data directory of another deployment was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains("EXECUTOR_DATA_DIR"), "{error}");
        assert!(error.contains("another deployment"), "{error}");
    }
    // Refusing changed nothing: the right configuration still starts on it.
    let running = bootstrap::start(config).await.expect("start again");
    running.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// The account that pays the test executor's gas.
fn gas_address(net: &Devnet) -> Address {
    let gas = serverless_executor::client::wallet(
        net.anvil.key(DevAccount::ExecutorGas(ACCOUNT).index()),
    )
    .unwrap();
    ethers::signers::Signer::address(&gas)
}

async fn head(net: &Devnet) -> u64 {
    serverless_executor::client::provider(&net.anvil.http_url())
        .unwrap()
        .get_block_number()
        .await
        .unwrap()
        .as_u64()
}

/// A JSON-RPC call whose refusal is an answer, not a failure.
async fn try_rpc(net: &Devnet, method: &str, params: Value) -> Result<Value, String> {
    serverless_executor::client::provider(&net.anvil.http_url())
        .expect("provider")
        .request::<_, Value>(method, params)
        .await
        .map_err(|e| e.to_string())
}

/// The hash of the output transaction the journal says job `id` last broadcast.
async fn submitted_tx(ex: &DevExecutor, id: U256) -> H256 {
    let body: Value = reqwest::get(format!("{}/jobs/{id}", ex.api_url))
        .await
        .expect("GET /jobs/{id}")
        .json()
        .await
        .expect("JSON");
    serde_json::from_value(body["tx_hash"].clone()).expect("a submitted job has a tx_hash")
}

async fn save(net: &Devnet) -> H256 {
    save_code(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.user_code,
        WAIT_THEN_SAY,
    )
    .await
    .expect("code saved")
}
