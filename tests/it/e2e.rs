//! The full job lifecycle on a real chain: each test starts its own anvil, deploys the dev
//! contracts, and runs real executors (real workerd, real cgroups where allowed) that are
//! configured over their HTTP API and registered on chain like an operator would.

use std::time::Duration;

use ethers::middleware::Middleware;
use ethers::types::{Address, Filter, TransactionRequest, H256, U256};
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::devnet::Devnet;
use serverless_executor::client::jobs::{
    create_job, deregister_executor, drain_executor, register_executor, revive_executor, save_code,
    wait_for_outputs, AttestationProof, ExecutorRegistration,
};
use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::domain::eip712::registration_digest;
use serverless_executor::effects::signer::EnclaveKey;

use crate::common::devnet::{answer, executor, executors, job};

const FACTORS: &str = include_str!("../../examples/factors.js");
const WAIT: Duration = Duration::from_secs(60);
/// A short buffer keeps settlement tests quick; jobs still have deadline + 5 s to answer.
const BUFFER_SECS: u64 = 5;

async fn devnet(dir: &std::path::Path, executors_to_select: u8) -> Devnet {
    crate::common::devnet::devnet(dir, BUFFER_SECS, executors_to_select).await
}

/// Registers an enclave that no process serves (it never answers), for `env`.
async fn register_silent_executor(net: &Devnet, dir: &std::path::Path, env: u8) -> Address {
    let key = EnclaveKey::generate(&dir.join(format!("silent-{env}.key"))).unwrap();
    let owner = ethers::signers::Signer::address(
        &serverless_executor::client::wallet(net.anvil.key(DevAccount::ExecutorOwner(4).index()))
            .unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signature = key
        .sign_digest(registration_digest(owner, 10, env, now))
        .unwrap();
    let registration = ExecutorRegistration {
        job_capacity: 10,
        sign_timestamp: now,
        signature: signature.to_vec(),
        env,
        stake_amount: U256::from(net.options.deploy.min_stake),
    };
    register_executor(
        &net.anvil.http_url(),
        net.anvil.key(DevAccount::ExecutorOwner(4).index()),
        net.deployment.executors,
        &registration,
        &AttestationProof::dev(key.public_key()),
    )
    .await
    .expect("silent executor registers");
    key.address()
}

async fn save(net: &Devnet, source: &str) -> H256 {
    save_code(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.user_code,
        source,
    )
    .await
    .expect("code saved")
}

/// Logs of `SlashedOnExecutionTimeout` for a job.
async fn slashes(net: &Devnet, job_id: U256) -> usize {
    let provider = serverless_executor::client::provider(&net.anvil.http_url()).unwrap();
    let filter = Filter::new()
        .address(net.deployment.jobs)
        .event("SlashedOnExecutionTimeout(uint256,address)")
        .topic1({
            let mut topic = [0u8; 32];
            job_id.to_big_endian(&mut topic);
            H256(topic)
        })
        .from_block(0u64);
    provider.get_logs(&filter).await.unwrap().len()
}

#[tokio::test]
async fn jobs_run_and_every_error_code_lands_on_chain() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    let ex = executor(&net, 1).await;
    let factors = save(&net, FACTORS).await;

    // Prime factorisation, three inputs at once.
    let mut created = vec![];
    for (input, expected) in [(10, "2,5"), (20, "2,2,5"), (600, "2,2,2,3,5,5")] {
        let input = format!(r#"{{"num":{input}}}"#);
        created.push((
            job(&net, factors, input.as_bytes(), 5000).await.unwrap(),
            expected,
        ));
    }
    for (created, expected) in &created {
        assert_eq!(created.selected_executors, vec![ex.enclave]);
        let r = answer(&net, created, WAIT).await;
        assert_eq!(r.executor, ex.enclave);
        assert_eq!(String::from_utf8_lossy(&r.output), *expected);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.output_count, 1);
    }

    // 1: no such transaction; a transaction to another contract (the createJob one).
    let missing = job(&net, H256::repeat_byte(0x77), b"{}", 5000)
        .await
        .unwrap();
    let wrong_contract = job(&net, created[0].0.tx_hash, b"{}", 5000).await.unwrap();
    // 2: a call to UserCode whose string is not UTF-8.
    let provider = serverless_executor::client::client(&net.anvil.http_url(), net.author_key())
        .await
        .unwrap();
    let mut data = vec![0xff, 0x7c, 0xda, 0xf3];
    data.extend(ethers::abi::encode(&[ethers::abi::Token::Bytes(vec![
        0xff, 0xfe, 0xfd,
    ])]));
    let bad_tx = provider
        .send_transaction(
            TransactionRequest::new()
                .to(net.deployment.user_code)
                .data(data)
                .gas(200_000),
            None,
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .unwrap();
    let bad_calldata = job(&net, bad_tx.transaction_hash, b"{}", 5000)
        .await
        .unwrap();
    // 3: a syntax error; 4: an endless loop past its 1 s deadline.
    let syntax = save(&net, "export default { async fetch( { oops").await;
    let syntax = job(&net, syntax, b"", 5000).await.unwrap();
    let endless = save(&net, "export default { async fetch() { for (;;) {} } };").await;
    let endless = job(&net, endless, b"", 1000).await.unwrap();

    for (created, code) in [
        (&missing, 1),
        (&wrong_contract, 1),
        (&bad_calldata, 2),
        (&syntax, 3),
        (&endless, 4),
    ] {
        let r = answer(&net, created, WAIT).await;
        assert_eq!(r.error_code, code, "job {}", created.job_id);
        assert!(
            r.output.is_empty(),
            "job {}: {:?}",
            created.job_id,
            r.output
        );
        if code == 4 {
            assert_eq!(r.total_time, 1000, "a timed-out job reports its deadline");
        }
    }
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn jobs_for_others_are_left_alone_but_settled_after_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    let ex = executor(&net, 1).await;
    let env2 = register_silent_executor(&net, dir.path(), 2).await;
    let silent = register_silent_executor(&net, dir.path(), 1).await;
    let factors = save(&net, FACTORS).await;

    // A job for env 2 selects the env-2 executor and is none of ours.
    let env2_job = create_job(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.jobs,
        2,
        factors,
        br#"{"num":10}"#,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(env2_job.selected_executors, vec![env2]);

    // Selection is random among free executors: create jobs until one picks the silent one.
    let mut theirs = None;
    let mut ours = vec![];
    for _ in 0..40 {
        let created = job(&net, factors, br#"{"num":10}"#, 1000).await.unwrap();
        if created.selected_executors == vec![silent] {
            theirs = Some(created);
            break;
        }
        ours.push(created);
    }
    let theirs = theirs.expect("the silent executor is selected at some point");
    for created in &ours {
        assert_eq!(answer(&net, created, WAIT).await.executor, ex.enclave);
    }

    // After deadline (1 s) + buffer (5 s) + margin, our executor settles the silent one's job.
    let started = tokio::time::Instant::now();
    // The slash lands on chain first; the executor journals it once it has the receipt.
    let journal = &ex.running.executor.ports().store;
    let record = loop {
        let record = journal.job(theirs.job_id).unwrap().unwrap();
        if slashes(&net, theirs.job_id).await > 0 && record.settled {
            break record;
        }
        assert!(
            started.elapsed() < WAIT,
            "the job was never settled: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(slashes(&net, theirs.job_id).await, 1);
    assert!(record.settled && record.slash_sent, "{record:?}");
    assert_eq!(
        record.state.name(),
        "observed",
        "a job for another executor is never run"
    );

    // The env-2 job never entered our journal and got no output from us.
    assert_eq!(
        ex.running
            .executor
            .ports()
            .store
            .job(env2_job.job_id)
            .unwrap(),
        None
    );
    let outputs = wait_for_outputs(
        &net.anvil.http_url(),
        net.deployment.jobs,
        env2_job.job_id,
        1,
        Duration::from_millis(500),
    )
    .await;
    assert!(
        outputs.is_err(),
        "nobody answers the env-2 job: {outputs:?}"
    );
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn three_selected_executors_all_submit() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 3).await;
    let executors = executors(&net, 3).await;
    let factors = save(&net, FACTORS).await;
    let created = job(&net, factors, br#"{"num":600}"#, 5000).await.unwrap();
    assert_eq!(created.selected_executors.len(), 3);
    let outputs = wait_for_outputs(
        &net.anvil.http_url(),
        net.deployment.jobs,
        created.job_id,
        3,
        WAIT,
    )
    .await
    .unwrap();
    let mut who: Vec<Address> = outputs.iter().map(|r| r.executor).collect();
    who.sort();
    let mut expected: Vec<Address> = executors.iter().map(|e| e.enclave).collect();
    expected.sort();
    assert_eq!(who, expected);
    assert!(outputs
        .iter()
        .all(|r| r.output == b"2,2,2,3,5,5" && r.error_code == 0));
    assert_eq!(outputs.iter().map(|r| r.output_count).max(), Some(3));
    for ex in executors {
        ex.stop().await.unwrap();
    }
}

#[tokio::test]
async fn drain_revive_and_deregister_are_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    let ex = executor(&net, 1).await;
    let factors = save(&net, FACTORS).await;
    let http = net.anvil.http_url();
    let executors = net.deployment.executors;

    drain_executor(&http, &ex.owner_key, executors, ex.enclave)
        .await
        .unwrap();
    ex.wait_for_status("draining", WAIT).await.unwrap();
    let refused = job(&net, factors, br#"{"num":10}"#, 5000).await;
    assert!(refused.is_err(), "a drained executor is not selected");

    revive_executor(&http, &ex.owner_key, executors, ex.enclave)
        .await
        .unwrap();
    ex.wait_for_status("serving", WAIT).await.unwrap();
    let created = job(&net, factors, br#"{"num":10}"#, 5000).await.unwrap();
    assert_eq!(answer(&net, &created, WAIT).await.output, b"2,5");

    drain_executor(&http, &ex.owner_key, executors, ex.enclave)
        .await
        .unwrap();
    deregister_executor(&http, &ex.owner_key, executors, ex.enclave)
        .await
        .unwrap();
    ex.wait_for_status("deregistered", WAIT).await.unwrap();
    ex.stop().await.unwrap();
}

/// Warm mode: the last slot's workerd never starts listening (a wrapper sleeps in its place,
/// recognised by its slot cgroup). The job is sent to a slot whose process is ready rather than
/// waiting on that one until its deadline (before, the most recently released slot was taken
/// first, which after start-up was the last one started). At shutdown the slots' cgroups go,
/// processes and all.
#[tokio::test]
async fn a_job_goes_to_a_ready_slot_while_another_slot_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("workerd-slot-3-never-listens");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$(cat /proc/self/cgroup)\" in *'/slot-3'*) exec sleep 600;; esac\nexec '{}' \"$@\"\n",
            serverless_executor::config::default_workerd_path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let net = devnet(dir.path(), 1).await;
    let parent = format!("executor-ready-slot-test-{}", std::process::id());
    let ex = net
        .start_executor(serverless_executor::client::devnet::ExecutorOptions {
            account: 1,
            job_capacity: 4,
            extra: vec![
                ("CGROUP_PARENT".into(), parent.clone()),
                ("SANDBOX_MODE".into(), "warm".into()),
                ("WORKERD_PATH".into(), wrapper.display().to_string()),
            ],
            ..Default::default()
        })
        .await
        .expect("executor starts and registers");
    let state: serde_json::Value = reqwest::get(format!("{}/", ex.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if state["cgroups_enforced"] != serde_json::Value::Bool(true) {
        println!("SKIP: without slot cgroups the wrapper cannot tell the slots apart");
        return;
    }
    let factors = save(&net, FACTORS).await;
    let created = job(&net, factors, br#"{"num":600}"#, 5000).await.unwrap();
    let r = answer(&net, &created, WAIT).await;
    assert_eq!(
        r.error_code, 0,
        "the job waited on the slot that never listens"
    );
    assert_eq!(String::from_utf8_lossy(&r.output), "2,2,2,3,5,5");
    ex.running
        .shutdown(Duration::from_secs(10))
        .await
        .expect("the executor stops");
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu",
    ] {
        let dir = std::path::Path::new(root).join(&parent);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
