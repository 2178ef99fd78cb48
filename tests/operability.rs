//! What an operator watches, on a real devnet run (anvil + workerd): logs (secrets never
//! appear, the level changes at run time over the admin API), job status from the journal,
//! Prometheus metrics and readiness. One test: the log capture is process-wide.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::devnet::{Devnet, DevnetOptions, ExecutorOptions};
use serverless_executor::client::jobs::{create_job, save_code, wait_for_response};
use serverless_executor::config::LogFormat;

/// Every log line of this process, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_status_metrics_and_logs_but_never_secrets() {
    let logs = Captured::default();
    serverless_executor::logging::init_with_writer("info", LogFormat::Json, logs.clone(), false);

    let dir = tempfile::tempdir().unwrap();
    let net = Devnet::start(DevnetOptions {
        anvil_port: None,
        deploy: DeployParams {
            execution_buffer_secs: 5,
            executors_to_select: 1,
            ..DeployParams::default()
        },
        work_dir: dir.path().to_path_buf(),
    })
    .await
    .expect("devnet starts");
    let ex = net
        .start_executor(ExecutorOptions::default())
        .await
        .expect("executor starts and registers");
    let http = reqwest::Client::new();

    // The log level changes at run time: debug lines appear only after the change.
    tracing::debug!("marker-before-change");
    let r = http
        .put(format!("{}/log-level", ex.admin_url))
        .json(&json!({"level": "info,operability=debug"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    tracing::debug!("marker-after-change");
    let (_, level) = get(&http, &format!("{}/log-level", ex.admin_url)).await;
    assert!(level.contains("operability=debug"), "{level}");
    let r = http
        .put(format!("{}/log-level", ex.admin_url))
        .json(&json!({"level": "info,=="}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "a bad filter is refused");

    // A job runs; its status comes from the journal.
    let rpc = net.anvil.http_url();
    let code = include_str!("../examples/factors.js");
    let codehash = save_code(&rpc, net.author_key(), net.deployment.user_code, code)
        .await
        .unwrap();
    let job = create_job(
        &rpc,
        net.author_key(),
        net.deployment.jobs,
        1,
        codehash,
        br#"{"num":10}"#,
        5000,
    )
    .await
    .unwrap();
    let responses = wait_for_response(
        &rpc,
        net.deployment.jobs,
        job.job_id,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let on_chain = &responses[0];
    let status_url = format!("{}/jobs/{}", ex.api_url, job.job_id);
    let status: Value = loop {
        let (code, body) = get(&http, &status_url).await;
        assert_eq!(code, 200, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        // The journal learns the transaction hash from the receipt (the event may come first).
        if status["state"] == "confirmed" && !status["tx_hash"].is_null() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["error_code"], 0);
    assert_eq!(status["total_time_ms"], on_chain.total_time);
    assert_eq!(status["selected"], true);
    assert_eq!(
        status["tx_hash"],
        format!("{:?}", on_chain.tx_hash.unwrap())
    );
    let (_, list) = get(&http, &format!("{}/jobs?state=confirmed", ex.api_url)).await;
    assert!(list.contains(&job.job_id.to_string()), "{list}");

    // Metrics, in the Prometheus text format.
    let (code, metrics) = get(&http, &format!("{}/metrics", ex.api_url)).await;
    assert_eq!(code, 200);
    for line in [
        "executor_jobs_executed_total{error_code=\"0\"} 1",
        "executor_jobs_finished_total{error_code=\"0\",outcome=\"confirmed\"} 1",
        "executor_job_execution_seconds_count 1",
        "executor_job_end_to_end_seconds_count 1",
        "executor_slots_total 4",
        "executor_slots_busy 0",
        "executor_jobs_queued 0",
        "executor_sandbox_oom_kills_total 0",
        "executor_chain_up 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no line {line} in\n{metrics}"
        );
    }
    for name in [
        "executor_chain_head_lag_blocks ",
        "executor_gas_balance_ether ",
    ] {
        assert!(metrics.contains(name), "no {name} in\n{metrics}");
    }

    // Readiness, honestly.
    let (_, health) = get(&http, &format!("{}/health", ex.api_url)).await;
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["registered"], true, "{health}");
    assert_eq!(health["chain_connected"], true, "{health}");
    assert_eq!(health["workerd_found"], true, "{health}");
    // Ready exactly when the slots' limits hold (no one allowed unlimited slots here).
    assert_eq!(health["unlimited_slots_allowed"], false, "{health}");
    let enforced = health["cgroups_enforced"].as_bool().unwrap();
    assert_eq!(health["ready"], enforced, "{health}");
    let reasons = health["not_ready_because"].as_array().unwrap();
    assert_eq!(reasons.is_empty(), enforced, "{health}");
    if !enforced {
        println!("note: cgroups not available here, so the executor was rightly not ready");
    }

    let enclave_secret = std::fs::read(dir.path().join("executor-1/enclave.key")).unwrap();
    ex.stop().await.unwrap();

    let text = logs.text();
    assert!(text.contains("job executed"), "the run was logged:\n{text}");
    assert!(text.contains("gas key configured"), "{text}");
    assert!(
        !text.contains("marker-before-change"),
        "debug was off at first"
    );
    assert!(
        text.contains("marker-after-change"),
        "debug was on after the change"
    );
    let gas_key = net
        .anvil
        .key(DevAccount::ExecutorGas(1).index())
        .trim_start_matches("0x")
        .to_string();
    let owner_key = net
        .anvil
        .key(DevAccount::ExecutorOwner(1).index())
        .trim_start_matches("0x")
        .to_string();
    for (what, secret) in [
        ("enclave key", hex::encode(&enclave_secret)),
        ("gas key", gas_key),
        ("owner key", owner_key),
    ] {
        for form in [secret.to_lowercase(), secret.to_uppercase()] {
            assert!(!text.contains(&form), "the {what} appears in the logs");
        }
    }
}
