//! Attacks on the executor's gas and nonce, performed against real parts: a fresh anvil with the
//! dev contracts, a real executor (real workerd, HTTP API), hostile job owners and fee spikes.

use std::time::Duration;

use ethers::abi::{Abi, Token};
use ethers::contract::ContractFactory;
use ethers::middleware::Middleware;
use ethers::types::{Address, Bytes, TransactionRequest, H256, U256};
use serde::Deserialize;
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::devnet::{DevExecutor, Devnet, DevnetOptions, ExecutorOptions};
use serverless_executor::client::jobs::save_code;
use serverless_executor::domain::model::{JobRecord, JobState};

const FACTORS: &str = include_str!("../examples/factors.js");
const GAS_BURNER: &str = include_str!("../contracts/artifacts/test/GasBurner.json");
const WAIT: Duration = Duration::from_secs(90);
const BUFFER_SECS: u64 = 5;

async fn devnet(dir: &std::path::Path) -> Devnet {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    Devnet::start(DevnetOptions {
        anvil_port: None,
        deploy: DeployParams {
            execution_buffer_secs: BUFFER_SECS,
            executors_to_select: 1,
            ..DeployParams::default()
        },
        work_dir: dir.to_path_buf(),
    })
    .await
    .expect("devnet starts")
}

#[derive(Deserialize)]
struct Artifact {
    abi: Abi,
    bytecode: Bytes,
}

/// Deploys the hostile job owner (contracts/test/GasBurner.sol) from the job author's account.
async fn deploy_gas_burner(
    net: &Devnet,
) -> ethers::contract::Contract<serverless_executor::client::Client> {
    let artifact: Artifact = serde_json::from_str(GAS_BURNER).expect("GasBurner artifact");
    let client = serverless_executor::client::client(&net.anvil.http_url(), net.author_key())
        .await
        .unwrap();
    let factory = ContractFactory::new(artifact.abi, artifact.bytecode, client);
    factory
        .deploy(())
        .unwrap()
        .send()
        .await
        .expect("GasBurner deploys")
}

/// `Executors.slashCount(enclave)` of the dev contracts.
async fn slash_count(net: &Devnet, enclave: Address) -> U256 {
    let mut data = ethers::utils::id("slashCount(address)").to_vec();
    data.extend(ethers::abi::encode(&[Token::Address(enclave)]));
    let provider = serverless_executor::client::provider(&net.anvil.http_url()).unwrap();
    let out = provider
        .call(
            &TransactionRequest::new()
                .to(net.deployment.executors)
                .data(data)
                .into(),
            None,
        )
        .await
        .expect("slashCount");
    U256::from_big_endian(&out)
}

/// Waits until the executor's journal holds a final state for `job_id`.
async fn final_record(ex: &DevExecutor, job_id: U256) -> JobRecord {
    let started = tokio::time::Instant::now();
    loop {
        let record = ex.running.executor.ports().store.job(job_id).unwrap();
        if let Some(record) = &record {
            if matches!(
                record.state,
                JobState::Confirmed { .. } | JobState::Abandoned { .. }
            ) {
                return record.clone();
            }
        }
        assert!(
            started.elapsed() < WAIT,
            "job {job_id} never ended: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of an unlabelled metric in the executor's `/metrics`.
async fn metric(ex: &DevExecutor, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", ex.api_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The attack of issue #12: a job owner whose `oysterResultCall` burns all its gas when the
/// transaction pays for gas. An estimate without fee fields sees a cheap callback; the real output
/// then ran out of gas, was abandoned, and the executor slashed itself after the window.
#[tokio::test]
async fn a_gas_burning_job_owner_cannot_make_us_miss_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path()).await;
    let ex = net
        .start_executor(ExecutorOptions {
            account: 1,
            ..ExecutorOptions::default()
        })
        .await
        .expect("executor starts");
    let codehash: H256 = save_code(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.user_code,
        FACTORS,
    )
    .await
    .unwrap();
    let burner = deploy_gas_burner(&net).await;

    let call = burner
        .method::<_, U256>(
            "createJob",
            (
                net.deployment.jobs,
                1u8,
                codehash,
                Bytes::from(br#"{"num":10}"#.to_vec()),
                U256::from(5000u64),
            ),
        )
        .unwrap();
    let job_id = call.call().await.expect("createJob simulates");
    let receipt = call
        .gas(1_000_000u64)
        .send()
        .await
        .unwrap()
        .await
        .unwrap()
        .expect("createJob mined");
    assert_eq!(receipt.status, Some(1u64.into()), "createJob by the burner");

    let record = final_record(&ex, job_id).await;
    let JobState::Confirmed {
        tx_hash: Some(tx_hash),
        ..
    } = &record.state
    else {
        panic!("the output must land despite the gas-burning callback: {record:?}");
    };
    let provider = serverless_executor::client::provider(&net.anvil.http_url()).unwrap();
    let output_receipt = provider
        .get_transaction_receipt(*tx_hash)
        .await
        .unwrap()
        .expect("the output's receipt");
    assert_eq!(output_receipt.status, Some(1u64.into()));
    let used = output_receipt.gas_used.unwrap().as_u64();
    // The attack really happened: the callback burnt (far) more than an output needs.
    assert!(used > 300_000, "the callback did not burn: {used} gas");

    // One selected executor answered: the job is settled and can never be slashed.
    assert_eq!(slash_count(&net, ex.enclave).await, U256::zero());

    // Gas spent is reported, in the journal and in the metrics.
    assert!(
        record.gas_spent >= used,
        "journal: {} gas spent, the receipt says {used}",
        record.gas_spent
    );
    let total = metric(&ex, "executor_gas_spent_total")
        .await
        .expect("executor_gas_spent_total is exported");
    assert!(total >= used as f64, "metric {total} < {used}");
    ex.stop().await.unwrap();
}
