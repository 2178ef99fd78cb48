//! The TEE generation on a real chain: anvil with the TEE dev contracts (contracts/tee) and real
//! executors run with `EXECUTOR_PROTOCOL=tee`, configured over their HTTP API and registered on
//! TeeManager like an operator would; the SecretManager events through the real log follower.

use std::time::Duration;

use ethers::providers::Middleware;
use ethers::types::{Address, U256};
use serverless_executor::client::deploy::TeeDeployParams;
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::devnet::{DevExecutor, Devnet, ExecutorOptions};
use serverless_executor::client::jobs::{save_code, wait_for_response};
use serverless_executor::client::tee::{
    create_secret, create_tee_job, tee_node_call, NodeCall, SecretRequest,
};
use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::domain::eip712::{acknowledge_digest, alive_digest};
use serverless_executor::domain::model::{ChainEvent, Protocol, SecretEvent};
use serverless_executor::effects::chain::follower::FollowerItem;
use serverless_executor::effects::chain::tee::{SecretManager, TeeManager};
use serverless_executor::effects::chain::LogFollower;
use serverless_executor::effects::signer::EnclaveKey;

const FACTORS: &str = include_str!("../../examples/factors.js");
const WAIT: Duration = Duration::from_secs(60);

async fn tee_devnet(dir: &std::path::Path) -> Devnet {
    crate::common::devnet::tee_devnet(dir, TeeDeployParams::default()).await
}

async fn tee_executor(net: &Devnet, account: usize) -> DevExecutor {
    net.start_executor(ExecutorOptions {
        account,
        job_capacity: 4,
        ..ExecutorOptions::default()
    })
    .await
    .expect("TEE executor starts and registers on TeeManager")
}

fn tee_manager(net: &Devnet) -> Address {
    net.tee.expect("a TEE devnet").deployment.tee_manager
}

#[tokio::test]
async fn a_tee_node_registers_runs_a_plain_job_and_follows_drain_revive_deregister() {
    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(dir.path()).await;
    let http = net.anvil.http_url();
    // Registered: TeeNodeRegistered seen (start_executor waits for "serving").
    let ex = tee_executor(&net, 1).await;
    let owner_key = DevAccount::ExecutorOwner(1).key();
    let provider = serverless_executor::client::provider(&http).unwrap();
    let manager = TeeManager::new(tee_manager(&net), std::sync::Arc::new(provider));
    let (stake, owner, env, draining) = manager.tee_nodes(ex.enclave).call().await.unwrap();
    assert_eq!(
        owner,
        ethers::signers::Signer::address(&serverless_executor::client::wallet(owner_key).unwrap())
    );
    assert_eq!((env, draining), (1, false));
    assert!(!stake.is_zero());
    // The signed message of a TEE node carries its storage capacity.
    let message: serde_json::Value =
        reqwest::get(format!("{}/signed-registration-message", ex.api_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(message["storage_capacity"], 100_000_000u64);
    // Marlin's operator tooling reads /tee-details: the same facts, one gas address for both
    // roles, and never the RPC URL (Marlin's carries its API key).
    let details: serde_json::Value = reqwest::get(format!("{}/executor-details", ex.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tee_details: serde_json::Value = reqwest::get(format!("{}/tee-details", ex.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in ["enclave_address", "enclave_public_key", "owner_address"] {
        assert_eq!(tee_details[field], details[field], "{field}");
    }
    assert_eq!(tee_details["executor_gas_address"], details["gas_address"]);
    assert_eq!(
        tee_details["secret_store_gas_address"],
        details["gas_address"]
    );
    assert_ne!(details["gas_address"], format!("{:?}", Address::zero()));
    assert!(tee_details.get("ws_rpc_url").is_none(), "{tee_details}");

    // A plain job (secret id 0) runs and its output is accepted by the TEE Jobs.
    let codehash = save_code(&http, net.author_key(), net.deployment.user_code, FACTORS)
        .await
        .unwrap();
    let job = create_tee_job(
        &http,
        net.author_key(),
        net.deployment.jobs,
        1,
        U256::zero(),
        codehash,
        br#"{"num":600}"#,
        5000,
    )
    .await
    .unwrap();
    assert_eq!(job.selected_executors, vec![ex.enclave]);
    let responses = wait_for_response(&http, net.deployment.jobs, job.job_id, WAIT)
        .await
        .unwrap();
    assert_eq!(responses[0].executor, ex.enclave);
    assert_eq!(String::from_utf8_lossy(&responses[0].output), "2,2,2,3,5,5");
    assert_eq!(responses[0].error_code, 0);

    // Drain, revive, drain and deregister on TeeManager are followed.
    let tm = tee_manager(&net);
    for (call, status) in [
        (NodeCall::Drain, "draining"),
        (NodeCall::Revive, "serving"),
        (NodeCall::Drain, "draining"),
        (NodeCall::Deregister, "deregistered"),
    ] {
        tee_node_call(&http, owner_key, tm, ex.enclave, call)
            .await
            .unwrap_or_else(|e| panic!("{call:?}: {e:#}"));
        ex.wait_for_status(status, WAIT)
            .await
            .unwrap_or_else(|e| panic!("after {call:?}: {e:#}"));
    }
    let (_, owner, _, _) = manager.tee_nodes(ex.enclave).call().await.unwrap();
    assert!(owner.is_zero(), "deregistered nodes are deleted");
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn a_storage_capacity_below_the_largest_secret_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(dir.path()).await;
    let exec_dir = net.executor_dir(1).unwrap();
    let max = net.tee.unwrap().params.global_max_secret_size;
    let too_small = ExecutorOptions {
        extra: vec![("STORAGE_CAPACITY".into(), (max - 1).to_string())],
        ..ExecutorOptions::default()
    };
    let config = net.executor_config(&exec_dir, &too_small).unwrap();
    assert_eq!(config.chain.protocol, Protocol::Tee);
    let error = match serverless_executor::bootstrap::start(config).await {
        Ok(_) => panic!("an executor whose outputs would all revert must not start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("EXECUTOR_STORAGE_CAPACITY"), "{error}");
    assert!(error.contains(&max.to_string()), "{error}");

    // Exactly GLOBAL_MAX_SECRET_SIZE is enough.
    let enough = ExecutorOptions {
        extra: vec![("STORAGE_CAPACITY".into(), max.to_string())],
        ..ExecutorOptions::default()
    };
    let running =
        serverless_executor::bootstrap::start(net.executor_config(&exec_dir, &enough).unwrap())
            .await
            .expect("starts with storage capacity = GLOBAL_MAX_SECRET_SIZE");
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// SecretManager's events about our secrets reach the follower as `ChainEvent::Secret`, and the
/// store-side signatures (`Acknowledge`, `Alive`) the chain checks are the ones `eip712` makes.
#[tokio::test]
async fn secret_events_of_our_secrets_reach_the_follower() {
    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(dir.path()).await;
    let ex = tee_executor(&net, 1).await;
    let tee = net.tee.unwrap();
    let http = net.anvil.http_url();
    let key = EnclaveKey::load(&net.executor_dir(1).unwrap().join("enclave.key")).unwrap();
    assert_eq!(key.address(), ex.enclave);

    let config = net
        .executor_config(&net.executor_dir(1).unwrap(), &ExecutorOptions::default())
        .unwrap();
    let follower = LogFollower::new(config.chain.clone(), ex.enclave)
        .with_secret_manager(config.secret_manager_address)
        .with_poll_interval(Duration::from_millis(100));
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let head = serverless_executor::client::provider(&http)
        .unwrap()
        .get_block_number()
        .await
        .unwrap()
        .as_u64();
    let task = tokio::spawn(follower.run(Some(head), tx));

    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let secret = create_secret(
        &http,
        net.author_key(),
        tee.deployment.secret_manager,
        &SecretRequest {
            env: 1,
            size_limit: 1000.into(),
            end_timestamp: end.into(),
            usdc_deposit: None,
            allowed: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(secret.secret_id, U256::one(), "secret ids start at 1");
    assert_eq!(secret.selected_enclaves, vec![ex.enclave]);

    // The store acknowledges with the enclave key, and proves liveness.
    let client = serverless_executor::client::client(&http, DevAccount::ExecutorGas(1).key())
        .await
        .unwrap();
    let manager = SecretManager::new(tee.deployment.secret_manager, client);
    let now = end - 3600;
    let ack = key
        .sign_digest(acknowledge_digest(secret.secret_id, now))
        .unwrap();
    manager
        .acknowledge_store(secret.secret_id, now.into(), ack.to_vec().into())
        .send()
        .await
        .expect("the chain accepts our Acknowledge signature")
        .await
        .unwrap();
    let alive = key.sign_digest(alive_digest(now)).unwrap();
    let receipt = manager
        .mark_store_alive(now.into(), alive.to_vec().into())
        .send()
        .await
        .expect("the chain accepts our Alive signature")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receipt.status, Some(1u64.into()));
    manager
        .terminate_secret(secret.secret_id)
        .send()
        .await
        .expect_err("only the secret's owner may terminate it");

    let mut seen = vec![];
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 2 {
        let item = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the secret events arrive")
            .expect("the follower runs");
        if let FollowerItem::Log(log) = item {
            if let ChainEvent::Secret(event) = log.event {
                seen.push(event);
            }
        }
    }
    assert!(
        matches!(&seen[0], SecretEvent::Created { secret_id, selected, size_limit, .. }
            if *secret_id == secret.secret_id && selected == &vec![ex.enclave] && *size_limit == U256::from(1000)),
        "{seen:?}"
    );
    assert_eq!(
        seen[1],
        SecretEvent::Acknowledged {
            secret_id: secret.secret_id,
            enclave: ex.enclave
        }
    );
    task.abort();
    ex.stop().await.unwrap();
}

/// §3.11 kept by the dev contracts: a node registered with less storage than
/// GLOBAL_MAX_SECRET_SIZE (registration does not check it) has every output revert with
/// Panic(0x11), which the adapter names with its TEE meaning.
#[tokio::test]
async fn outputs_of_a_node_with_too_little_storage_revert_with_panic_0x11() {
    use serverless_executor::domain::eip712::output_digest;
    use serverless_executor::effects::chain::bindings::Jobs;
    use serverless_executor::effects::chain::revert::decode_revert;

    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(dir.path()).await;
    let http = net.anvil.http_url();
    let now = now_secs();
    let capacity = net.tee.unwrap().params.global_max_secret_size - 1;
    let key = silent_node(&net, dir.path(), 2, capacity).await;
    let enclave = key.address();

    let codehash = save_code(&http, net.author_key(), net.deployment.user_code, FACTORS)
        .await
        .unwrap();
    let job = create_tee_job(
        &http,
        net.author_key(),
        net.deployment.jobs,
        1,
        U256::zero(),
        codehash,
        b"{}",
        5000,
    )
    .await
    .unwrap();
    assert_eq!(job.selected_executors, vec![enclave]);
    let output = b"2,5".to_vec();
    let signature = key
        .sign_digest(output_digest(job.job_id, &output, 10, 0, now))
        .unwrap();
    let client = serverless_executor::client::client(&http, DevAccount::ExecutorGas(2).key())
        .await
        .unwrap();
    let jobs = Jobs::new(net.deployment.jobs, client);
    let error = jobs
        .submit_output(
            signature.to_vec().into(),
            job.job_id,
            output.into(),
            10.into(),
            0,
            now.into(),
        )
        .send()
        .await
        .expect_err("the slot release underflows");
    let revert = decode_revert(error.as_revert().expect("a revert, not an RPC failure"));
    assert!(
        format!("{revert:?}").contains("panic 0x11")
            && format!("{revert:?}").contains("GLOBAL_MAX_SECRET_SIZE"),
        "{revert:?}"
    );
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Registers on TeeManager, from devnet owner `account`, an enclave no process serves, with
/// `storage_capacity`; returns its key.
async fn silent_node(
    net: &Devnet,
    dir: &std::path::Path,
    account: usize,
    storage_capacity: u64,
) -> EnclaveKey {
    use serverless_executor::client::register::{dev_attestation_json, RegisterRequest};
    use serverless_executor::domain::eip712::tee_registration_digest;
    let key = EnclaveKey::generate(&dir.join(format!("silent-{account}.key"))).unwrap();
    let owner_key = DevAccount::ExecutorOwner(account).key();
    let owner =
        ethers::signers::Signer::address(&serverless_executor::client::wallet(owner_key).unwrap());
    let now = now_secs();
    let signature = key
        .sign_digest(tee_registration_digest(owner, 4, storage_capacity, 1, now))
        .unwrap();
    let message = serde_json::json!({
        "job_capacity": 4, "storage_capacity": storage_capacity, "sign_timestamp": now, "env": 1,
        "owner": format!("{owner:?}"), "signature": format!("0x{}", hex::encode(signature)),
    });
    let message_file = dir.join(format!("message-{account}.json"));
    std::fs::write(&message_file, message.to_string()).unwrap();
    let attestation_file = dir.join(format!("attestation-{account}.json"));
    std::fs::write(
        &attestation_file,
        dev_attestation_json(key.public_key()).to_string(),
    )
    .unwrap();
    let (enclave, _) = serverless_executor::client::tee::register_tee_node(
        &net.anvil.http_url(),
        owner_key,
        tee_manager(net),
        &RegisterRequest {
            registration: message_file.display().to_string(),
            attestation: attestation_file.display().to_string(),
            attestation_signature: vec![],
            stake: None,
        },
    )
    .await
    .expect("registration does not check the storage capacity");
    assert_eq!(enclave, key.address());
    key
}

/// A job with an acknowledged secret selects the store holding it; only the secret's owner (or
/// an allowed address) may create one, and not before every store acknowledged.
#[tokio::test]
async fn a_job_with_a_secret_goes_to_the_store_that_holds_it() {
    use serverless_executor::effects::chain::tee::SecretManager;
    let dir = tempfile::tempdir().unwrap();
    let net = tee_devnet(dir.path()).await;
    let http = net.anvil.http_url();
    let tee = net.tee.unwrap();
    let keys = [
        silent_node(&net, dir.path(), 2, 100_000_000).await,
        silent_node(&net, dir.path(), 3, 100_000_000).await,
    ];
    let end = now_secs() + 3600;
    let secret = create_secret(
        &http,
        net.author_key(),
        tee.deployment.secret_manager,
        &SecretRequest {
            env: 1,
            size_limit: 1000.into(),
            end_timestamp: end.into(),
            usdc_deposit: None,
            allowed: vec![],
        },
    )
    .await
    .unwrap();
    let [holder] = secret.selected_enclaves[..] else {
        panic!("one store selected: {:?}", secret.selected_enclaves);
    };
    let holder_key = keys.iter().find(|k| k.address() == holder).unwrap();
    let codehash = save_code(&http, net.author_key(), net.deployment.user_code, FACTORS)
        .await
        .unwrap();
    let job = |author: &'static str| {
        create_tee_job(
            &http,
            author,
            net.deployment.jobs,
            1,
            secret.secret_id,
            codehash,
            b"{}",
            1000,
        )
    };
    let early = job(net.author_key()).await.unwrap_err().to_string();
    assert!(early.contains("SecretManagerUnacknowledged"), "{early}");

    let client = serverless_executor::client::client(&http, DevAccount::ExecutorGas(2).key())
        .await
        .unwrap();
    let manager = SecretManager::new(tee.deployment.secret_manager, client);
    let now = now_secs();
    let ack = holder_key
        .sign_digest(acknowledge_digest(secret.secret_id, now))
        .unwrap();
    manager
        .acknowledge_store(secret.secret_id, now.into(), ack.to_vec().into())
        .send()
        .await
        .unwrap()
        .await
        .unwrap();
    for _ in 0..3 {
        let created = job(net.author_key()).await.unwrap();
        assert_eq!(created.selected_executors, vec![holder]);
    }
    let stranger = DevAccount::ExecutorOwner(4).key();
    let refused = job(stranger).await.unwrap_err().to_string();
    assert!(refused.contains("SecretManagerUserNotAllowed"), "{refused}");
}
