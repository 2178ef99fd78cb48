//! Attacks on the executor's gas and nonce, performed against real parts: a fresh anvil with the
//! dev contracts, a real executor (real workerd, HTTP API), hostile job owners and fee spikes.

use std::str::FromStr;
use std::time::Duration;

use ethers::abi::{Abi, Token};
use ethers::contract::ContractFactory;
use ethers::middleware::Middleware;
use ethers::signers::Signer;
use ethers::types::{Address, Bytes, TransactionRequest, H256, U256};
use serde::Deserialize;
use serverless_executor::client::devnet::{DevExecutor, Devnet, ExecutorOptions};
use serverless_executor::client::jobs::save_code;
use serverless_executor::domain::model::{JobRecord, JobState};

const FACTORS: &str = include_str!("../../examples/factors.js");
const GAS_BURNER: &str = include_str!("../../contracts/artifacts/test/GasBurner.json");
const WAIT: Duration = Duration::from_secs(90);
const BUFFER_SECS: u64 = 5;

async fn devnet(dir: &std::path::Path) -> Devnet {
    crate::common::devnet::devnet(dir, BUFFER_SECS, 1).await
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
    let factory = ContractFactory::new(artifact.abi, artifact.bytecode, client.clone());
    let burner = factory
        .deploy(())
        .unwrap()
        .send()
        .await
        .expect("GasBurner deploys");
    // The job owner pays the escrow: give the burner USDC and let Jobs take it.
    let usdc = net.deployment.usdc;
    let amount = U256::exp10(11); // 100k of a 6-decimal token; each author holds 1M
    let mut transfer = ethers::utils::id("transfer(address,uint256)").to_vec();
    transfer.extend(ethers::abi::encode(&[
        Token::Address(burner.address()),
        Token::Uint(amount),
    ]));
    client
        .send_transaction(TransactionRequest::new().to(usdc).data(transfer), None)
        .await
        .unwrap()
        .await
        .unwrap()
        .expect("USDC sent to the burner");
    burner
        .method::<_, ()>("approve", (usdc, net.deployment.jobs, amount))
        .unwrap()
        .send()
        .await
        .unwrap()
        .await
        .unwrap()
        .expect("the burner approves Jobs");
    burner
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
    let status: serde_json::Value = reqwest::get(format!("{}/jobs/{job_id}", ex.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["gas_spent"],
        serde_json::json!(record.gas_spent),
        "{status}"
    );
    let total = metric(&ex, "executor_gas_spent_total")
        .await
        .expect("executor_gas_spent_total is exported");
    assert!(total >= used as f64, "metric {total} < {used}");
    ex.stop().await.unwrap();
}

/// One anvil RPC call with JSON parameters.
async fn anvil(net: &Devnet, method: &str, params: serde_json::Value) {
    serverless_executor::client::provider(&net.anvil.http_url())
        .unwrap()
        .request::<_, serde_json::Value>(method, params)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
}

async fn set_base_fee_gwei(net: &Devnet, gwei: u64) {
    let wei = U256::from(gwei) * U256::exp10(9);
    anvil(
        net,
        "anvil_setNextBlockBaseFeePerGas",
        serde_json::json!([format!("{wei:#x}")]),
    )
    .await;
}

async fn nonces(net: &Devnet, who: Address) -> (U256, U256) {
    let provider = serverless_executor::client::provider(&net.anvil.http_url()).unwrap();
    let latest = provider.get_transaction_count(who, None).await.unwrap();
    let pending = provider
        .get_transaction_count(who, Some(ethers::types::BlockNumber::Pending.into()))
        .await
        .unwrap();
    (latest, pending)
}

/// Creates a job with automine off (so nothing else lands in its block), then waits until the
/// executor's output transaction for it waits in the pool, unmined. Returns the job id.
async fn job_with_pending_output(
    net: &Devnet,
    codehash: H256,
    deadline_ms: u64,
    gas: Address,
) -> U256 {
    let (before, _) = nonces(net, gas).await;
    anvil(net, "evm_setIntervalMining", serde_json::json!([0])).await;
    anvil(net, "evm_setAutomine", serde_json::json!([false])).await;
    let created = {
        let (url, key, jobs) = (net.anvil.http_url(), net.author_key(), net.deployment.jobs);
        tokio::spawn(async move {
            serverless_executor::client::jobs::create_job(
                &url,
                key,
                jobs,
                1,
                codehash,
                br#"{"num":10}"#,
                deadline_ms,
            )
            .await
        })
    };
    // The author sends two transactions (the escrow's approval, then createJob): mine each as it
    // arrives and nothing after them, so the executor's output stays in the pool.
    let author = ethers::signers::LocalWallet::from_str(net.author_key())
        .unwrap()
        .address();
    let (author_start, _) = nonces(net, author).await;
    for _ in 0..400 {
        let (latest, pending) = nonces(net, author).await;
        if latest >= author_start + 2 {
            break;
        }
        if pending > latest {
            net.anvil.mine().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let job_id = created.await.unwrap().expect("createJob").job_id;
    for _ in 0..200 {
        let (latest, pending) = nonces(net, gas).await;
        assert_eq!(latest, before, "nothing is mined while automine is off");
        if pending > latest {
            return job_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the executor never sent an output for job {job_id}");
}

/// Every transaction the gas account got mined, in nonce order: (nonce, to, input, max fee).
async fn mined_from(net: &Devnet, who: Address) -> Vec<ethers::types::Transaction> {
    let provider = serverless_executor::client::provider(&net.anvil.http_url()).unwrap();
    let head = provider.get_block_number().await.unwrap().as_u64();
    let mut txs = vec![];
    for number in 0..=head {
        let block = provider.get_block_with_txs(number).await.unwrap().unwrap();
        txs.extend(block.transactions.into_iter().filter(|tx| tx.from == who));
    }
    txs.sort_by_key(|tx| tx.nonce);
    txs
}

/// The job id of a `submitOutput` call, None for any other transaction.
fn output_job(tx: &ethers::types::Transaction) -> Option<U256> {
    use ethers::abi::AbiDecode;
    use serverless_executor::effects::chain::bindings::SubmitOutputCall;
    SubmitOutputCall::decode(&tx.input)
        .ok()
        .map(|call| call.job_id)
}

/// Issue #12's fee spike: a stuck output used to be given up after four sends and its nonce
/// forgotten, blocking every later transaction. Now a stuck nonce is replaced (never above
/// `EXECUTOR_MAX_FEE_PER_GAS_GWEI`) until it lands, or, once its job's window is over, taken by a
/// self-transfer; exactly one output transaction lands per job and no nonce is left behind.
#[tokio::test]
async fn fee_spikes_never_leave_a_nonce_behind_and_each_job_lands_one_output() {
    const CAP_GWEI: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let net = devnet(dir.path()).await;
    let ex = net
        .start_executor(ExecutorOptions {
            account: 1,
            extra: vec![("MAX_FEE_PER_GAS_GWEI".into(), CAP_GWEI.to_string())],
            ..ExecutorOptions::default()
        })
        .await
        .expect("executor starts");
    let gas = ex.running.executor.ports().chain.gas_address().unwrap();
    let codehash: H256 = save_code(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.user_code,
        FACTORS,
    )
    .await
    .unwrap();
    let interval_mining = || anvil(&net, "evm_setIntervalMining", serde_json::json!([1]));

    // 1. The base fee jumps to 200 gwei right after our output is sent (a 30 s deadline): it is
    //    replaced, waits at the cap, and lands when the base fee falls under it (~11 blocks).
    let spiked = job_with_pending_output(&net, codehash, 30_000, gas).await;
    set_base_fee_gwei(&net, 200).await;
    net.anvil.mine().await.unwrap();
    interval_mining().await;
    let record = final_record(&ex, spiked).await;
    assert_eq!(record.state.name(), "confirmed", "{record:?}");

    // 2. A 1 s deadline and the base fee at 5000 gwei: the window closes with the output stuck,
    //    and a self-transfer takes its nonce (it lands once the spike is over).
    set_base_fee_gwei(&net, 1).await;
    net.anvil.mine().await.unwrap();
    let late = job_with_pending_output(&net, codehash, 1_000, gas).await;
    set_base_fee_gwei(&net, 5_000).await;
    net.anvil.mine().await.unwrap();
    interval_mining().await;
    let window_end = {
        let record = ex
            .running
            .executor
            .ports()
            .store
            .job(late)
            .unwrap()
            .unwrap();
        record.job.window_end_ms(BUFFER_SECS)
    };
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        if now > window_end + 3_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    set_base_fee_gwei(&net, 1).await;
    let record = final_record(&ex, late).await;
    assert_eq!(record.state.name(), "abandoned", "{record:?}");

    // 3. Later jobs are not blocked by either.
    let after = serverless_executor::client::jobs::create_job(
        &net.anvil.http_url(),
        net.author_key(),
        net.deployment.jobs,
        1,
        codehash,
        br#"{"num":10}"#,
        5_000,
    )
    .await
    .unwrap()
    .job_id;
    let record = final_record(&ex, after).await;
    assert_eq!(record.state.name(), "confirmed", "{record:?}");
    // The late job's settlement (a slash: we could not answer under the cap) comes after.
    let started = tokio::time::Instant::now();
    while !ex
        .running
        .executor
        .ports()
        .store
        .job(late)
        .unwrap()
        .unwrap()
        .settled
    {
        assert!(started.elapsed() < WAIT, "the late job is never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (latest, pending) = nonces(&net, gas).await;
    assert_eq!(
        latest, pending,
        "no transaction of ours is left in the pool"
    );

    let txs = mined_from(&net, gas).await;
    let mined_nonces: Vec<U256> = txs.iter().map(|tx| tx.nonce).collect();
    let expected: Vec<U256> = (0..latest.as_u64()).map(U256::from).collect();
    assert_eq!(
        mined_nonces, expected,
        "every nonce mined once, none skipped"
    );
    for job in [spiked, after] {
        let landed = txs.iter().filter(|tx| output_job(tx) == Some(job)).count();
        assert_eq!(landed, 1, "job {job}: one output transaction lands");
    }
    assert_eq!(
        txs.iter().filter(|tx| output_job(tx) == Some(late)).count(),
        0,
        "the late job's nonce went to a self-transfer"
    );
    let transfers: Vec<_> = txs.iter().filter(|tx| tx.to == Some(gas)).collect();
    assert_eq!(transfers.len(), 1, "{transfers:?}");
    assert!(transfers[0].input.is_empty() && transfers[0].value.is_zero());
    let cap = U256::from(CAP_GWEI) * U256::exp10(9);
    for tx in &txs {
        let max_fee = tx.max_fee_per_gas.or(tx.gas_price).unwrap();
        // The self-transfer may bid one bump (25 %) above the cap to replace a capped output.
        let limit = if tx.to == Some(gas) {
            cap + cap / 4 + 1
        } else {
            cap
        };
        assert!(max_fee <= limit, "{max_fee} > {limit}: {tx:?}");
    }
    ex.stop().await.unwrap();
}
