//! The TEE generation's secret flow end to end on anvil: a real executor (`EXECUTOR_PROTOCOL=tee`)
//! registered on TeeManager, a secret created on SecretManager, injected over the real secret
//! listener by the owner's tooling, acknowledged on chain by the executor, read by a job as
//! `env.secret` in workerd; liveness across a restart, drain and deregister.

use std::sync::Arc;
use std::time::Duration;

use ethers::providers::Middleware;
use ethers::signers::Signer;
use ethers::types::{Address, Filter, H256, U256};
use serde_json::Value;
use serverless_executor::client::deploy::TeeDeployParams;
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::devnet::{
    wait_for_chain_status, DevExecutor, Devnet, ExecutorOptions,
};
use serverless_executor::client::jobs::JobResponse;

use crate::common::devnet::tee_devnet;
use serverless_executor::client::jobs::{save_code, wait_for_response};
use serverless_executor::client::secrets::{
    enclave_public_key, inject_secret, inject_secret_body, wait_for_acknowledgement,
};
use serverless_executor::client::tee::{
    create_secret, create_tee_job, tee_node_call, CreatedSecret, NodeCall, SecretRequest,
};
use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::domain::eip712::acknowledge_digest;
use serverless_executor::effects::chain::tee::SecretManager;
use serverless_executor::effects::signer::EnclaveKey;

const SECRET_JOB: &str = include_str!("../../examples/secret.js");
const WAIT: Duration = Duration::from_secs(60);
// A stranger to the secret and the node: a devnet executor owner no test here registers.
const STRANGER: usize = 4;

async fn node(net: &Devnet) -> DevExecutor {
    net.start_executor(ExecutorOptions {
        account: 1,
        job_capacity: 4,
        ..ExecutorOptions::default()
    })
    .await
    .expect("the TEE node starts and registers")
}

fn secret_manager(net: &Devnet) -> Address {
    net.tee.expect("a TEE devnet").deployment.secret_manager
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The job author's secret of at most `size_limit` bytes, kept an hour.
async fn author_secret(net: &Devnet, size_limit: u64) -> CreatedSecret {
    create_secret(
        &net.anvil.http_url(),
        net.author_key(),
        secret_manager(net),
        &SecretRequest {
            env: 1,
            size_limit: size_limit.into(),
            end_timestamp: (now_secs() + 3600).into(),
            usdc_deposit: None,
            allowed: vec![],
        },
    )
    .await
    .expect("the author creates a secret")
}

/// Where the node's secret listener is, and its enclave public key as its API publishes it.
async fn secret_listener(ex: &DevExecutor) -> (String, [u8; 65]) {
    let url = format!(
        "http://{}",
        ex.running
            .secret_addr
            .expect("a TEE node serves injections")
    );
    let details: Value = reqwest::get(format!("{}/executor-details", ex.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = enclave_public_key(details["enclave_public_key"].as_str().unwrap()).unwrap();
    (url, key)
}

fn held(ex: &DevExecutor, secret_id: U256) -> Option<Vec<u8>> {
    ex.running
        .executor
        .ports()
        .secrets
        .plaintext(secret_id)
        .unwrap()
}

/// Logs of `signature` from SecretManager whose first indexed topic is `topic1`.
async fn manager_logs(net: &Devnet, signature: &str, topic1: H256) -> Vec<ethers::types::Log> {
    let provider = serverless_executor::client::provider(&net.anvil.http_url()).unwrap();
    let filter = Filter::new()
        .address(secret_manager(net))
        .topic0(H256(ethers::utils::keccak256(signature)))
        .topic1(topic1)
        .from_block(0u64);
    provider.get_logs(&filter).await.unwrap()
}

fn address_topic(address: Address) -> H256 {
    H256::from(address)
}

fn id_topic(id: U256) -> H256 {
    let mut topic = [0u8; 32];
    id.to_big_endian(&mut topic);
    H256(topic)
}

/// Runs `examples/secret.js` as the job author with secret `secret_id` (0: none); checks the job
/// selects `ex` and returns its answer on chain.
async fn run_secret_job(net: &Devnet, ex: &DevExecutor, secret_id: U256) -> JobResponse {
    let http = net.anvil.http_url();
    let author = net.author_key();
    let codehash = save_code(&http, author, net.deployment.user_code, SECRET_JOB)
        .await
        .unwrap();
    let jobs = net.deployment.jobs;
    let job = create_tee_job(&http, author, jobs, 1, secret_id, codehash, b"", 5000)
        .await
        .expect("the secret's owner may create jobs once it is acknowledged");
    assert_eq!(job.selected_executors, vec![ex.enclave]);
    wait_for_response(&http, jobs, job.job_id, WAIT)
        .await
        .expect("the job is answered")
        .remove(0)
}

/// The whole flow an operator and a job author go through: the node registers (start_executor),
/// the author creates a secret and injects it (hostile injections refused first), the node
/// acknowledges on chain, a job reads the secret; a drain deletes it, deregistration follows.
#[tokio::test]
async fn a_secret_is_injected_acknowledged_read_by_a_job_and_deleted_on_drain() {
    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(dir.path(), TeeDeployParams::default()).await;
    let http = net.anvil.http_url();
    let ex = node(&net).await;
    let secret = author_secret(&net, 64).await;
    assert_eq!(secret.selected_enclaves, vec![ex.enclave]);
    let (url, public_key) = secret_listener(&ex).await;
    let client = reqwest::Client::new();
    let author = serverless_executor::client::wallet(net.author_key()).unwrap();
    let stranger =
        serverless_executor::client::wallet(DevAccount::ExecutorOwner(STRANGER).key()).unwrap();

    // Hostile injections against the real listener: each refused by name, nothing kept.
    let refusals = [
        (
            "signed by a stranger",
            inject_secret_body(secret.secret_id, b"evil", &public_key, &stranger).unwrap(),
            "not to the secret's owner",
        ),
        (
            "a secret id never created",
            inject_secret_body(U256::from(99), b"x", &public_key, &author).unwrap(),
            "not assigned to this store",
        ),
        (
            "larger than the size limit on chain",
            inject_secret_body(secret.secret_id, &[1u8; 65], &public_key, &author).unwrap(),
            "size limit on chain is 64",
        ),
    ];
    for (what, body, message) in refusals {
        let error = format!(
            "{:#}",
            inject_secret(&client, &url, &body).await.unwrap_err()
        );
        assert!(error.contains(message), "{what}: {error}");
        assert_eq!(held(&ex, secret.secret_id), None, "{what}: nothing kept");
    }

    // The owner's injection: the signed acknowledgement comes back and reaches the chain.
    let body = inject_secret_body(secret.secret_id, b"hunter2", &public_key, &author).unwrap();
    let ack = inject_secret(&client, &url, &body).await.unwrap();
    assert_eq!(ack["secret_id"], serde_json::json!(1));
    let stores = wait_for_acknowledgement(&http, secret_manager(&net), secret.secret_id, WAIT)
        .await
        .expect("the node acknowledges on chain");
    assert_eq!(stores, vec![ex.enclave]);
    let replay = inject_secret(&client, &url, &body).await.unwrap_err();
    assert!(
        format!("{replay:#}").contains("already stored"),
        "{replay:#}"
    );

    // A job that names the secret reads it as env.secret; one without a secret gets none.
    let answer = run_secret_job(&net, &ex, secret.secret_id).await;
    assert_eq!(
        (
            String::from_utf8_lossy(&answer.output).as_ref(),
            answer.error_code
        ),
        ("7:2retnuh", 0)
    );
    let answer = run_secret_job(&net, &ex, U256::zero()).await;
    assert!(
        String::from_utf8_lossy(&answer.output).contains("this job needs a secret"),
        "{answer:?}"
    );

    // Drained: the node gives its secrets up (SecretManager re-assigns them) and deletes them.
    let tee_manager = net.tee.unwrap().deployment.tee_manager;
    let owner_key = DevAccount::ExecutorOwner(1).key();
    tee_node_call(&http, owner_key, tee_manager, ex.enclave, NodeCall::Drain)
        .await
        .unwrap();
    ex.wait_for_status("draining", WAIT).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while held(&ex, secret.secret_id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drained node still holds the secret"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tee_node_call(
        &http,
        owner_key,
        tee_manager,
        ex.enclave,
        NodeCall::Deregister,
    )
    .await
    .expect("a drained node with its secrets given up deregisters");
    ex.wait_for_status("deregistered", WAIT).await.unwrap();
    ex.stop().await.unwrap();
}

/// Jobs are drawn among the stores that acknowledged; a store that acknowledged but lost the
/// plaintext (here: the enclave's acknowledgement sent without an injection) still answers,
/// with error 3, so it is not slashed for silence.
#[tokio::test]
async fn a_job_whose_secret_the_node_does_not_hold_is_answered_with_error_3() {
    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(dir.path(), TeeDeployParams::default()).await;
    let http = net.anvil.http_url();
    let ex = node(&net).await;
    let secret = author_secret(&net, 64).await;
    let key = EnclaveKey::load(&net.executor_dir(1).unwrap().join("enclave.key")).unwrap();
    let now = now_secs();
    let signature = key
        .sign_digest(acknowledge_digest(secret.secret_id, now))
        .unwrap();
    let client =
        serverless_executor::client::client(&http, DevAccount::ExecutorOwner(STRANGER).key())
            .await
            .unwrap();
    SecretManager::new(secret_manager(&net), client)
        .acknowledge_store(secret.secret_id, now.into(), signature.to_vec().into())
        .send()
        .await
        .unwrap()
        .await
        .unwrap();
    // Answered, not left to time out.
    let answer = run_secret_job(&net, &ex, secret.secret_id).await;
    assert_eq!(answer.error_code, 3, "{answer:?}");
    assert_eq!(
        String::from_utf8_lossy(&answer.output),
        "secret 1 is not held by this executor"
    );
    ex.stop().await.unwrap();
}

/// `markStoreAlive` keeps coming across a restart (the last one is journalled), so a stranger's
/// `markStoreDead` past MARK_ALIVE_TIMEOUT since registration still finds the store alive.
#[tokio::test]
async fn the_node_stays_alive_across_a_restart_and_cannot_be_marked_dead() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = 20;
    let net = tee_devnet(
        dir.path(),
        TeeDeployParams {
            mark_alive_timeout_secs: timeout,
            ..TeeDeployParams::default()
        },
    )
    .await;
    let http = net.anvil.http_url();
    let registered_at = now_secs();
    let ex = node(&net).await;
    let enclave = ex.enclave;
    let alive = |net| manager_logs(net, "SecretStoreAlive(address)", address_topic(enclave));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * timeout);
    while alive(&net).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no markStoreAlive");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Down for a while, then started again on the same data directory.
    let opts = ExecutorOptions::default();
    let exec_dir = net.executor_dir(1).unwrap();
    ex.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(timeout / 4)).await;
    let before_restart = alive(&net).await.len();
    let running =
        serverless_executor::bootstrap::start(net.executor_config(&exec_dir, &opts).unwrap())
            .await
            .unwrap();
    let api_url = format!("http://{}", running.api_addr);
    wait_for_chain_status(&api_url, "serving", WAIT)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2 * timeout);
    while alive(&net).await.len() == before_restart {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no markStoreAlive after the restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Past the timeout since registration: only the alive marks keep the store from slashing.
    let wait_until = registered_at + timeout + 3;
    let now = now_secs();
    if now < wait_until {
        tokio::time::sleep(Duration::from_secs(wait_until - now)).await;
    }
    let gas = serverless_executor::client::wallet(DevAccount::ExecutorGas(1).key())
        .unwrap()
        .address();
    let provider = serverless_executor::client::provider(&http).unwrap();
    for log in alive(&net).await {
        let tx = provider
            .get_transaction(log.transaction_hash.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tx.from, gas, "markStoreAlive is paid by the gas account");
    }
    let stranger =
        serverless_executor::client::client(&http, DevAccount::ExecutorOwner(STRANGER).key())
            .await
            .unwrap();
    let refused = SecretManager::new(secret_manager(&net), stranger)
        .mark_store_dead(enclave)
        .send()
        .await
        .expect_err("an alive store cannot be marked dead");
    let revert = format!("{refused:?}");
    let selector = hex::encode(&ethers::utils::keccak256("SecretManagerStoreIsAlive()")[..4]);
    assert!(revert.contains(&selector), "{revert}");
    running.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// A secret its owner never injects: once ACKNOWLEDGEMENT_TIMEOUT has passed the node reports it
/// with `acknowledgeStoreFailed` from its gas account (the owner is refunded) and forgets it.
#[tokio::test]
async fn an_uninjected_secret_is_reported_with_acknowledge_store_failed() {
    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(
        dir.path(),
        TeeDeployParams {
            acknowledgement_timeout_secs: 4,
            ..TeeDeployParams::default()
        },
    )
    .await;
    let ex = node(&net).await;
    let secret = author_secret(&net, 64).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let failed = loop {
        let logs = manager_logs(
            &net,
            "SecretStoreAcknowledgementFailed(uint256)",
            id_topic(secret.secret_id),
        )
        .await;
        if let Some(log) = logs.into_iter().next() {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acknowledgeStoreFailed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let provider = Arc::new(serverless_executor::client::provider(&net.anvil.http_url()).unwrap());
    let tx = provider
        .get_transaction(failed.transaction_hash.unwrap())
        .await
        .unwrap()
        .unwrap();
    let gas = serverless_executor::client::wallet(DevAccount::ExecutorGas(1).key())
        .unwrap()
        .address();
    assert_eq!(tx.from, gas, "sent by the node's gas account");
    let deadline = tokio::time::Instant::now() + WAIT;
    while ex
        .running
        .executor
        .ports()
        .secrets
        .secret(secret.secret_id)
        .unwrap()
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the void secret is forgotten"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ex.stop().await.unwrap();
}
