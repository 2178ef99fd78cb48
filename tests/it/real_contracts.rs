//! The executor and the client on contracts that behave like Marlin's published serverless-v2
//! ones (the dev contracts; contracts/README.md): both code forms, deletion at the 3rd output,
//! job ids the chain never had, an enclave key the chain refuses, and the job author's escrow.
//! Real anvil, real workerd, real HTTP; each test starts its own devnet.

use std::time::Duration;

use ethers::middleware::Middleware;
use ethers::signers::{LocalWallet, Signer};
use ethers::types::{Address, Filter, TransactionRequest, H256, U256};
use serverless_executor::client::deploy::revoke_dev_image;
use serverless_executor::client::devnet::{Devnet, ExecutorOptions};
use serverless_executor::client::jobs::{
    create_job, save_code, save_code_as, wait_for_outputs, CodeForm,
};
use serverless_executor::domain::dal::{
    ignore_sent, ChainWriter, OutputPlan, Revert, Store, TxOutcome,
};
use serverless_executor::domain::eip712::output_digest;
use serverless_executor::domain::model::{ErrorCode, Job, JobRecord, JobState, SignedOutput};
use serverless_executor::effects::chain::bindings::Erc20;
use serverless_executor::effects::chain::TxSender;
use serverless_executor::effects::code_fetch::SAVE_CODE_SELECTOR;
use serverless_executor::effects::signer::EnclaveKey;

use crate::common::devnet::{answer, executor, executors, job};
use serverless_executor::effects::store::SledStore;

const ECHO: &str =
    "export default { async fetch(request) { return new Response(await request.text()); } };";
const WAIT: Duration = Duration::from_secs(60);
const BUFFER_SECS: u64 = 5;

async fn devnet(dir: &std::path::Path, executors_to_select: u8) -> Devnet {
    crate::common::devnet::devnet(dir, BUFFER_SECS, executors_to_select).await
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A transaction sender like the executor's, paying with anvil account 9.
fn sender(net: &Devnet) -> TxSender {
    let dir = net.executor_dir(1).unwrap();
    let config = net
        .executor_config(&dir, &ExecutorOptions::default())
        .unwrap();
    let sender = TxSender::new(config.chain).expect("sender");
    let secret: [u8; 32] = hex::decode(net.anvil.key(9).trim_start_matches("0x"))
        .unwrap()
        .try_into()
        .unwrap();
    sender.set_gas_key(secret).expect("gas key");
    sender
}

fn signed(key: &EnclaveKey, job_id: U256, output: &[u8]) -> SignedOutput {
    use serverless_executor::domain::dal::EnclaveSigner;
    let sign_timestamp = now_secs();
    let digest = output_digest(job_id, output, 1, 0, sign_timestamp);
    SignedOutput {
        job_id,
        output: output.to_vec(),
        total_time_ms: 1,
        error_code: ErrorCode::Ok,
        sign_timestamp,
        signature: key.sign_digest(digest).unwrap().to_vec(),
    }
}

fn revert_of(
    outcome: &Result<TxOutcome, serverless_executor::domain::dal::ChainError>,
) -> Option<Revert> {
    match outcome {
        Ok(TxOutcome::Reverted { revert, .. }) => Some(revert.clone()),
        _ => None,
    }
}

async fn slash_logs(net: &Devnet, job_id: U256) -> usize {
    let provider = serverless_executor::client::provider(&net.anvil.http_url()).unwrap();
    let mut topic = [0u8; 32];
    job_id.to_big_endian(&mut topic);
    let filter = Filter::new()
        .address(net.deployment.jobs)
        .event("SlashedOnExecutionTimeout(uint256,address)")
        .topic1(H256(topic))
        .from_block(0u64);
    provider.get_logs(&filter).await.unwrap().len()
}

#[tokio::test]
async fn code_saved_in_either_form_is_run_and_bad_calldata_is_error_2() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    let ex = executor(&net, 1).await;
    let (url, author, user_code) = (
        net.anvil.http_url(),
        net.author_key(),
        net.deployment.user_code,
    );

    let current = save_code(&url, author, user_code, ECHO).await.unwrap();
    let metadata: Vec<u8> = (0..8_000u32).map(|i| (i % 241) as u8).collect();
    let with_metadata = save_code_as(&url, author, user_code, ECHO, CodeForm::Current, &metadata)
        .await
        .unwrap();
    let legacy = save_code_as(&url, author, user_code, ECHO, CodeForm::Legacy, &[])
        .await
        .unwrap();
    // The current selector with the legacy arguments only: the metadata does not decode.
    let client = serverless_executor::client::client(&url, author)
        .await
        .unwrap();
    let mut data = SAVE_CODE_SELECTOR.to_vec();
    data.extend(ethers::abi::encode(&[ethers::abi::Token::String(
        ECHO.into(),
    )]));
    let truncated = client
        .send_transaction(
            TransactionRequest::new()
                .to(user_code)
                .data(data)
                .gas(300_000),
            None,
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .unwrap()
        .transaction_hash;

    for (codehash, input, code) in [
        (current, "current", 0),
        (with_metadata, "metadata", 0),
        (legacy, "legacy", 0),
        (truncated, "truncated", 2),
    ] {
        let created = job(&net, codehash, input.as_bytes(), 5000)
            .await
            .expect("createJob");
        let r = answer(&net, &created, WAIT).await;
        assert_eq!(r.error_code, code, "{input}");
        let expected: &[u8] = if code == 0 { input.as_bytes() } else { b"" };
        assert_eq!(r.output, expected, "{input}");
    }
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn a_job_answered_by_three_is_deleted_and_late_calls_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 3).await;
    let executors = executors(&net, 3).await;
    let codehash = save_code(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.user_code,
        ECHO,
    )
    .await
    .unwrap();
    let created = job(&net, codehash, b"all three", 1000)
        .await
        .expect("createJob");
    let outputs = wait_for_outputs(
        &net.anvil.http_url(),
        net.deployment.jobs,
        created.job_id,
        3,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(outputs.len(), 3);

    // Deleted at the 3rd output, inside its window: a late output is refused as
    // JobsExecutionTimeOver, a settlement as JobsInvalidJob.
    let sender = sender(&net);
    let key = EnclaveKey::load(&net.executor_dir(1).unwrap().join("enclave.key")).unwrap();
    let late = sender
        .submit_output(
            &signed(&key, created.job_id, b"late"),
            OutputPlan {
                min_gas: 0,
                max_gas: 3_000_000,
                until_ms: now_secs() * 1000 + 600_000,
            },
            ignore_sent(),
        )
        .await;
    assert_eq!(
        revert_of(&late),
        Some(Revert::ExecutionTimeOver),
        "{late:?}"
    );
    let slash = sender.slash_on_execution_timeout(created.job_id).await;
    assert_eq!(revert_of(&slash), Some(Revert::InvalidJob), "{slash:?}");

    // Past the window and the settlement margin: every executor's journal has the job
    // confirmed and settled, and nobody tried to settle it.
    tokio::time::sleep(Duration::from_secs(1 + BUFFER_SECS + 3)).await;
    for ex in &executors {
        let record = ex
            .running
            .executor
            .ports()
            .store
            .job(created.job_id)
            .unwrap()
            .expect("journalled");
        assert_eq!(record.state.name(), "confirmed", "{record:?}");
        assert!(record.settled && !record.slash_sent, "{record:?}");
        assert_eq!(record.output_count, 3);
    }
    assert_eq!(slash_logs(&net, created.job_id).await, 0);
    for ex in executors {
        ex.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_journalled_job_the_chain_never_had_is_given_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    // A journal that remembers a signed output for job 77 of this enclave (say, from another
    // deployment), written before the executor starts.
    let executor_dir = net.executor_dir(1).unwrap();
    let key = EnclaveKey::load(&executor_dir.join("enclave.key")).unwrap();
    let enclave = serverless_executor::domain::dal::EnclaveSigner::address(&key);
    let ghost = Job {
        id: U256::from(77),
        env: 1,
        owner: Address::repeat_byte(7),
        codehash: H256::repeat_byte(7),
        code_inputs: vec![],
        deadline_ms: 1000,
        selected_executors: vec![enclave],
        // The window closes in ~12 s: time to enrol the executor first.
        exec_start_time: now_secs() + 6,
        origin: None,
        compact: None,
        secret_id: U256::zero(),
    };
    {
        let store = SledStore::open(&executor_dir.join("data"), [0; 32]).unwrap();
        let output = signed(&key, ghost.id, b"ghost");
        store
            .put_job(&JobRecord::new(
                ghost.clone(),
                JobState::Executed { output },
            ))
            .unwrap();
        store.flush().unwrap();
    }
    let ex = executor(&net, 1).await;
    let journal = ex.running.executor.ports().store.clone();
    let started = tokio::time::Instant::now();
    let record = loop {
        let record = journal.job(ghost.id).unwrap().unwrap();
        if record.settled {
            break record;
        }
        assert!(started.elapsed() < WAIT, "never given up: {record:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        matches!(&record.state, JobState::Abandoned { reason } if reason.contains("no job with this id")),
        "{record:?}"
    );
    assert!(record.slash_sent, "one settlement was tried: {record:?}");
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn an_executor_whose_key_the_chain_refuses_takes_no_jobs_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    let ex = executor(&net, 1).await;
    let http = reqwest::Client::new();
    let health = serverless_executor::client::admin::get(&http, &ex.api_url, "/")
        .await
        .unwrap();
    assert_eq!(health["enclave_verified"], true, "{health}");
    let codehash = save_code(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.user_code,
        ECHO,
    )
    .await
    .unwrap();
    // The image this enclave attested is revoked: its key is no longer verified.
    revoke_dev_image(&net.anvil.http_url(), net.author_key(), &net.deployment)
        .await
        .unwrap();
    let first = job(&net, codehash, b"first", 2000)
        .await
        .expect("createJob");
    assert_eq!(first.selected_executors, vec![ex.enclave]);

    let journal = ex.running.executor.ports().store.clone();
    let started = tokio::time::Instant::now();
    loop {
        let record = journal.job(first.job_id).unwrap().unwrap();
        if record.state.name() == "abandoned" {
            break;
        }
        assert!(started.elapsed() < WAIT, "never refused: {record:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = serverless_executor::client::admin::get(&http, &ex.api_url, "/")
        .await
        .unwrap();
    assert_eq!(health["ready"], false, "{health}");
    assert_eq!(health["enclave_verified"], false, "{health}");
    let refusal = health["enclave_refusal"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("AttestationAutherKeyNotVerified"),
        "{health}"
    );
    let metrics = http
        .get(format!("{}/metrics", ex.api_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("executor_enclave_refused 1"), "{metrics}");

    // The next job that selects it is not run, and its journal says why.
    let second = job(&net, codehash, b"second", 2000)
        .await
        .expect("createJob");
    let started = tokio::time::Instant::now();
    let record = loop {
        if let Some(record) = journal.job(second.job_id).unwrap() {
            break record;
        }
        assert!(started.elapsed() < WAIT, "job never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(&record.state, JobState::Abandoned { reason } if reason.contains("refuses this enclave key")),
        "{record:?}"
    );
    let outputs = wait_for_outputs(
        &net.anvil.http_url(),
        net.deployment.jobs,
        second.job_id,
        1,
        Duration::from_millis(500),
    )
    .await;
    assert!(outputs.is_err(), "no output for a refused job: {outputs:?}");
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn the_client_pays_exactly_the_escrow_and_is_told_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    let ex = executor(&net, 1).await;
    let url = net.anvil.http_url();
    let provider = std::sync::Arc::new(serverless_executor::client::provider(&url).unwrap());
    let usdc = Erc20::new(net.deployment.usdc, provider.clone());
    let author = serverless_executor::client::wallet(net.author_key())
        .unwrap()
        .address();
    let owner = serverless_executor::client::wallet(&ex.owner_key)
        .unwrap()
        .address();
    let codehash = save_code(&url, net.author_key(), net.deployment.user_code, ECHO)
        .await
        .unwrap();

    let (author_before, owner_before) = (
        usdc.balance_of(author).call().await.unwrap(),
        usdc.balance_of(owner).call().await.unwrap(),
    );
    let deadline_ms = 5000u64;
    let params = net.options.deploy;
    let price = U256::from(deadline_ms)
        * U256::from(params.execution_fee_per_ms + params.staking_reward_per_ms);
    let created = job(&net, codehash, b"paid", deadline_ms)
        .await
        .expect("createJob");
    assert_eq!(
        usdc.balance_of(author).call().await.unwrap(),
        author_before - price,
        "the escrow is taken from the job author"
    );
    assert_eq!(
        usdc.allowance(author, net.deployment.jobs)
            .call()
            .await
            .unwrap(),
        U256::zero(),
        "exactly the escrow was approved"
    );
    assert_eq!(answer(&net, &created, WAIT).await.output, b"paid");
    assert_eq!(
        usdc.balance_of(owner).call().await.unwrap(),
        owner_before + price,
        "the one selected executor's owner is paid the escrow"
    );

    // An author with ether but no USDC is told how much is missing; no job is created.
    let broke = LocalWallet::new(&mut rand::thread_rng());
    let funder = serverless_executor::client::client(&url, net.anvil.key(9))
        .await
        .unwrap();
    funder
        .send_transaction(
            TransactionRequest::new()
                .to(broke.address())
                .value(U256::exp10(18)),
            None,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let broke_key = format!("0x{}", hex::encode(broke.signer().to_bytes()));
    let refused = create_job(
        &url,
        &broke_key,
        net.deployment.jobs,
        1,
        codehash,
        b"unpaid",
        deadline_ms,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains(&format!("{price} more are missing")),
        "{refused}"
    );
    ex.stop().await.unwrap();
}

#[tokio::test]
async fn registration_refusals_are_told_by_name() {
    use serverless_executor::client::register::{dev_attestation_json, register, RegisterRequest};
    use serverless_executor::domain::dal::EnclaveSigner;
    use serverless_executor::domain::eip712::registration_digest;

    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path(), 1).await;
    let url = net.anvil.http_url();
    let owner_key = net.anvil.key(4);
    let owner = serverless_executor::client::wallet(owner_key)
        .unwrap()
        .address();
    let key = EnclaveKey::generate(&dir.path().join("enclave.key")).unwrap();
    let now = now_secs();
    let signature = key
        .sign_digest(registration_digest(owner, 4, 1, now))
        .unwrap();
    let registration = dir.path().join("registration.json");
    std::fs::write(
        &registration,
        serde_json::json!({
            "job_capacity": 4, "sign_timestamp": now, "env": 1,
            "owner": format!("{owner:?}"),
            "signature": format!("0x{}", hex::encode(signature)),
        })
        .to_string(),
    )
    .unwrap();
    let attempt = |name: &str, attestation: serde_json::Value, stake: Option<U256>| {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, attestation.to_string()).unwrap();
        RegisterRequest {
            registration: registration.display().to_string(),
            attestation: file.display().to_string(),
            attestation_signature: vec![],
            stake,
        }
    };
    let good = dev_attestation_json(key.public_key());
    let mut other_image = good.clone();
    other_image["pcr0"] = serde_json::json!(format!("0x{}", "44".repeat(48)));
    let mut too_old = good.clone();
    too_old["timestamp_ms"] = serde_json::json!((now - 3600) * 1000);
    let executors = net.deployment.executors;
    for (request, name) in [
        (
            attempt("image", other_image, None),
            "AttestationAutherImageNotWhitelisted",
        ),
        (
            attempt("old", too_old, None),
            "AttestationAutherAttestationTooOld",
        ),
        (
            attempt("rich", good.clone(), Some(U256::exp10(30))),
            "more are missing",
        ),
    ] {
        let refused = register(&url, owner_key, executors, &request)
            .await
            .unwrap_err();
        assert!(format!("{refused:#}").contains(name), "{name}: {refused:#}");
    }
    // Signed for another owner: said before anything is sent.
    let refused = register(
        &url,
        net.anvil.key(5),
        executors,
        &attempt("good", good.clone(), None),
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("signed for owner"),
        "{refused:#}"
    );
    // The command an owner runs: a whitelisted, fresh attestation with the minimum stake.
    let request = attempt("good", good, None);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_serverless-executor"))
        .args([
            "client",
            "register",
            "--registration",
            &request.registration,
        ])
        .args([
            "--attestation",
            &request.attestation,
            "--attestation-signature",
            "0x",
        ])
        .args([
            "--rpc-url",
            &url,
            "--executors-address",
            &format!("{executors:?}"),
        ])
        .env("OWNER_KEY", owner_key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("registered enclave {:?}", key.address())),
        "{stdout}"
    );
    // Registering it again is refused, by name.
    let again = register(&url, owner_key, executors, &request)
        .await
        .unwrap_err();
    assert!(
        format!("{again:#}").contains("ExecutorsExecutorAlreadyExists"),
        "{again:#}"
    );
}
