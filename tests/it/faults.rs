//! Fault tests with real processes: the executor binary is started, killed (SIGKILL) and
//! restarted against a real anvil, its WebSocket and HTTP RPC are cut or made to fail through a
//! TCP proxy, and its journal is corrupted or removed. Each test checks the chain: every job
//! the executor accepted gets exactly one output from it, whatever happened in between.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ethers::middleware::Middleware;
use ethers::providers::{Http, Provider};
use ethers::signers::Signer;
use ethers::types::{Address, BlockNumber, H256, U256};
use serde_json::Value;
use serverless_executor::client::admin;
use serverless_executor::client::dev_accounts::DevAccount;
use serverless_executor::client::devnet::{wait_for_chain_status, Devnet, ExecutorOptions};
use serverless_executor::client::jobs::{
    create_job, save_code, wait_for_response, CreatedJob, JobResponse,
};
use serverless_executor::effects::cgroup::rmdir_patiently;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::free_port;
use crate::common::proxy::Proxy;

/// Long enough that a job outlives a kill and restart, short enough for a quick test.
const BUFFER_SECS: u64 = 60;
const WAIT: Duration = Duration::from_secs(90);
/// The owner's anvil account; its gas key is account + 5.
const ACCOUNT: usize = 1;
/// Answers its input after `ms` milliseconds of waiting (not CPU).
const SLOW_ECHO: &str = r#"export default { async fetch(request) {
  const input = await request.text();
  const ms = Number(input.split(":")[0]);
  await new Promise((resolve) => setTimeout(resolve, ms));
  return new Response("done " + input);
} }"#;

async fn devnet(dir: &Path) -> Devnet {
    crate::common::devnet::devnet(dir, BUFFER_SECS, 1).await
}

/// The executor binary running as its own process, with its JSON log collected.
struct ExecutorProcess {
    child: Child,
    api_url: String,
    admin_url: String,
    log: Arc<Mutex<Vec<Value>>>,
    settings: HashMap<String, String>,
}

/// A killed executor runs no shutdown code: its slot cgroups stay behind (empty once its
/// workerd processes, which die with it, are gone). Removes them, so test runs leave no
/// cgroups on the machine; only the test's own unique parent (a restart makes it anew).
impl Drop for ExecutorProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let Some(parent) = self.settings.get("CGROUP_PARENT") else {
            return;
        };
        if !parent.starts_with("serverless-executor-devnet-") {
            return;
        }
        let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
        if let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(mounts.flatten().map(|m| m.path()));
        }
        for dir in roots.iter().map(|root| root.join(parent)) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let slots = entries.flatten().map(|e| e.path()).filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("slot-"))
            });
            for slot in slots {
                let _ = rmdir_patiently(&slot);
            }
            let _ = rmdir_patiently(&dir);
        }
    }
}

impl ExecutorProcess {
    /// Starts `serverless-executor serve` with these settings (`EXECUTOR_*` without the prefix).
    fn spawn(settings: &HashMap<String, String>) -> ExecutorProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_serverless-executor"));
        command
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .env("EXECUTOR_LOG_FORMAT", "json")
            .env("EXECUTOR_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in settings {
            command.env(format!("EXECUTOR_{name}"), value);
        }
        let mut child = command.spawn().expect("the executor binary starts");
        let log: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // Lines that are not JSON (a start-up error) are kept as plain strings.
                let entry = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(entry);
            }
        });
        ExecutorProcess {
            child,
            api_url: format!("http://127.0.0.1:{}", settings["PORT"]),
            admin_url: format!("http://127.0.0.1:{}", settings["ADMIN_PORT"]),
            log,
            settings: settings.clone(),
        }
    }

    fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        let tail = log.len().saturating_sub(60);
        log[tail..]
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Log entries whose message is `message` (and whose `job` field is `job`, when given).
    fn entries(&self, message: &str, job: Option<U256>) -> Vec<Value> {
        let job = job.map(|j| j.to_string());
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["fields"]["message"] == message)
            .filter(|e| {
                job.as_ref()
                    .is_none_or(|j| e["fields"]["job"] == j.as_str())
            })
            .cloned()
            .collect()
    }

    /// Waits until the log holds an entry with `message` (for `job`), returns it.
    async fn wait_for_log(&self, message: &str, job: Option<U256>) -> Value {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(entry) = self.entries(message, job).into_iter().next() {
                return entry;
            }
            assert!(
                started.elapsed() < WAIT,
                "no log entry '{message}' (job {job:?}) in {WAIT:?}; the log ends with:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_serving(&self) {
        if let Err(e) = wait_for_chain_status(&self.api_url, "serving", WAIT).await {
            panic!("{e}; the log ends with:\n{}", self.log_text());
        }
    }

    /// SIGKILL: no shutdown code runs.
    async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// SIGTERM, then the exit status (within `timeout`).
    async fn terminate(mut self, timeout: Duration) -> (std::process::ExitStatus, Self) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {timeout:?} of SIGTERM"))
            .expect("wait");
        (status, self)
    }

    /// Waits for the process to exit on its own.
    async fn exit_status(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the executor did not exit within {timeout:?}"))
            .expect("wait")
    }
}

/// A devnet with one executor process owned by `ACCOUNT`, configured and registered.
struct World {
    _dir: tempfile::TempDir,
    net: Devnet,
    executor_dir: PathBuf,
    enclave: Address,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let net = devnet(dir.path()).await;
        let executor_dir = net.executor_dir(ACCOUNT).expect("executor dir");
        World {
            _dir: dir,
            net,
            executor_dir,
            enclave: Address::zero(),
        }
    }

    /// Settings of the executor; `rpc` overrides its RPC URLs (through a proxy).
    fn settings(&self, job_capacity: usize, extra: &[(&str, String)]) -> HashMap<String, String> {
        let mut settings = self.net.executor_settings(
            &self.executor_dir,
            &ExecutorOptions {
                account: ACCOUNT,
                job_capacity,
                api_port: free_port(),
                admin_port: free_port(),
                extra: vec![],
            },
        );
        for (name, value) in extra {
            settings.insert(name.to_string(), value.clone());
        }
        settings
    }

    /// Starts the executor process, enrols it like an operator and waits until it serves.
    async fn start_executor(&mut self, settings: &HashMap<String, String>) -> ExecutorProcess {
        let executor = ExecutorProcess::spawn(settings);
        wait_for_api(&executor).await;
        self.enclave = self
            .net
            .enroll(&executor.api_url, &executor.admin_url, ACCOUNT)
            .await
            .expect("enrolment");
        executor.wait_serving().await;
        executor
    }

    async fn save(&self, source: &str) -> H256 {
        save_code(
            &self.net.anvil.http_url(),
            self.net.author_key(),
            self.net.deployment.user_code,
            source,
        )
        .await
        .expect("code saved")
    }

    async fn job(&self, codehash: H256, input: &str, deadline_ms: u64) -> CreatedJob {
        let created = create_job(
            &self.net.anvil.http_url(),
            self.net.author_key(),
            self.net.deployment.jobs,
            1,
            codehash,
            input.as_bytes(),
            deadline_ms,
        )
        .await
        .expect("job created");
        assert_eq!(
            created.selected_executors,
            vec![self.enclave],
            "the job selects our executor"
        );
        created
    }

    /// Waits for our executor's output of `job` and checks it is the only one it sent.
    async fn only_output(&self, job: &CreatedJob) -> JobResponse {
        let responses = wait_for_response(
            &self.net.anvil.http_url(),
            self.net.deployment.jobs,
            job.job_id,
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("job {}: {e}", job.job_id));
        let ours: Vec<_> = responses
            .into_iter()
            .filter(|r| r.executor == self.enclave)
            .collect();
        assert_eq!(ours.len(), 1, "one output from our executor: {ours:?}");
        ours.into_iter().next().unwrap()
    }

    fn provider(&self) -> Provider<Http> {
        serverless_executor::client::provider(&self.net.anvil.http_url()).unwrap()
    }

    fn gas_address(&self) -> Address {
        serverless_executor::client::wallet(
            self.net.anvil.key(DevAccount::ExecutorGas(ACCOUNT).index()),
        )
        .unwrap()
        .address()
    }

    async fn set_automine(&self, on: bool) {
        self.provider()
            .request::<_, Value>("evm_setAutomine", [on])
            .await
            .expect("evm_setAutomine");
    }

    /// How many successful `submitOutput` transactions the gas account got mined.
    async fn mined_nonce(&self) -> U256 {
        self.provider()
            .get_transaction_count(self.gas_address(), Some(BlockNumber::Latest.into()))
            .await
            .unwrap()
    }

    async fn pending_nonce(&self) -> U256 {
        self.provider()
            .get_transaction_count(self.gas_address(), Some(BlockNumber::Pending.into()))
            .await
            .unwrap()
    }

    fn anvil_addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.net.anvil.port())
            .parse()
            .unwrap()
    }
}

async fn wait_for_api(executor: &ExecutorProcess) {
    let http = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    while http
        .get(format!("{}/", executor.api_url))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < WAIT,
            "the executor API did not come up; log:\n{}",
            executor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn output_text(response: &JobResponse) -> String {
    String::from_utf8_lossy(&response.output).into_owned()
}

/// A world with an executor (two slots) serving, and a `SLOW_ECHO` job of `input` created.
async fn a_slow_job_on_a_new_executor(input: &str) -> (World, ExecutorProcess, CreatedJob) {
    let mut world = World::new().await;
    let settings = world.settings(2, &[]);
    let executor = world.start_executor(&settings).await;
    let code = world.save(SLOW_ECHO).await;
    let job = world.job(code, input, 20_000).await;
    (world, executor, job)
}

#[tokio::test]
async fn a_job_running_when_the_executor_is_killed_is_answered_once_after_restart() {
    let (world, executor, job) = a_slow_job_on_a_new_executor("3000:a").await;

    executor.wait_for_log("job running", Some(job.job_id)).await;
    // The queued record is not flushed on its own (the follower would read its log again): it
    // is durable with the journal's next flush, at most 500 ms later. The job runs 3 s.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let restarted = executor.respawn_after_kill().await;
    let recovered = restarted.wait_for_log("journal recovered", None).await;
    assert!(
        recovered.to_string().contains("requeued: 1"),
        "recovery re-queued the job: {recovered}"
    );
    let output = world.only_output(&job).await;
    assert_eq!(output.error_code, 0);
    assert_eq!(output_text(&output), "done 3000:a");
    restarted
        .wait_for_log("output on chain", Some(job.job_id))
        .await;
}

#[tokio::test]
async fn a_job_killed_the_moment_it_is_seen_is_answered_once_after_restart() {
    // Its journal record may not be durable yet: then neither is the cursor past its log, and
    // the restarted executor reads the log again; else recovery re-queues it. Either way, once.
    let (world, executor, job) = a_slow_job_on_a_new_executor("1000:s").await;

    executor.wait_for_log("job seen", Some(job.job_id)).await;
    let restarted = executor.respawn_after_kill().await;
    restarted
        .wait_for_log("output on chain", Some(job.job_id))
        .await;
    let output = world.only_output(&job).await;
    assert_eq!(output_text(&output), "done 1000:s");
    restarted.kill().await;
}

impl ExecutorProcess {
    async fn respawn_after_kill(self) -> ExecutorProcess {
        let settings = self.settings.clone();
        self.kill().await;
        let restarted = ExecutorProcess::spawn(&settings);
        wait_for_api(&restarted).await;
        restarted
    }
}

#[tokio::test]
async fn an_output_signed_but_not_mined_when_the_executor_is_killed_lands_exactly_once() {
    let (world, executor, job) = a_slow_job_on_a_new_executor("1500:b").await;
    // From now on transactions wait in the mempool: the output is sent but gets no receipt.
    world.set_automine(false).await;
    let before = world.mined_nonce().await;

    // Logged once the sent transaction is journalled (`submitted`, flushed).
    executor.wait_for_log("output sent", Some(job.job_id)).await;
    assert_ne!(
        world.pending_nonce().await,
        before,
        "the output is in the pool"
    );
    let restarted = executor.respawn_after_kill().await;
    let recovered = restarted.wait_for_log("journal recovered", None).await;
    assert!(
        recovered.to_string().contains("resubmitting: 1"),
        "recovery re-sends the signed output: {recovered}"
    );
    // Mining resumes: the first transaction lands; the re-sent one finds it on chain.
    world.set_automine(true).await;
    world.net.anvil.mine().await.unwrap();
    let output = world.only_output(&job).await;
    assert_eq!(output_text(&output), "done 1500:b");
    // The journal ends confirmed: by the re-sent transaction's refusal as a duplicate, or
    // (when the first transaction completed the job) by reading our JobResponded.
    let confirmed = tokio::time::timeout(WAIT, async {
        loop {
            let seen = [
                "output on chain",
                "output was already on chain",
                "our output seen on chain",
            ]
            .iter()
            .any(|m| !restarted.entries(m, Some(job.job_id)).is_empty());
            if seen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        confirmed.is_ok(),
        "the restarted executor confirms the output; log:\n{}",
        restarted.log_text()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let output = world.only_output(&job).await;
    assert_eq!(output_text(&output), "done 1500:b");
    restarted.kill().await;
}

#[tokio::test]
async fn jobs_created_while_the_websocket_is_cut_are_answered_after_it_returns() {
    let mut world = World::new().await;
    let mut proxy = Proxy::start(world.anvil_addr()).await;
    let settings = world.settings(4, &[("RPC_WS_URL", proxy.ws_url())]);
    let executor = world.start_executor(&settings).await;
    let code = world.save(SLOW_ECHO).await;

    proxy.stop();
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(world.job(code, &format!("10:cut{i}"), 10_000).await);
    }
    executor
        .wait_for_log("chain connection lost; reconnecting", None)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for job in &jobs {
        assert!(
            executor.entries("job seen", Some(job.job_id)).is_empty(),
            "job {} cannot be seen while the WebSocket is cut",
            job.job_id
        );
    }
    proxy.resume().await;
    for (i, job) in jobs.iter().enumerate() {
        let output = world.only_output(job).await;
        assert_eq!(output_text(&output), format!("done 10:cut{i}"));
    }
    executor.kill().await;
}

#[tokio::test]
async fn rpc_errors_are_retried_with_backoff_until_the_output_lands() {
    let mut world = World::new().await;
    let proxy = Proxy::start(world.anvil_addr()).await;
    let settings = world.settings(4, &[("RPC_HTTP_URL", proxy.http_url())]);
    let executor = world.start_executor(&settings).await;
    let code = world.save(SLOW_ECHO).await;
    let running = world.job(code, "1500:rpc", 20_000).await;
    executor
        .wait_for_log("job running", Some(running.job_id))
        .await;

    // The HTTP RPC answers 503 from now on: the running job's output cannot be sent, and a job
    // created meanwhile cannot be read (the follower backfills over HTTP).
    proxy.fail();
    let created = world.job(code, "10:rpc", 20_000).await;
    executor
        .wait_for_log("output not sent; retrying", Some(running.job_id))
        .await;
    executor
        .wait_for_log("chain connection lost; reconnecting", None)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backoffs: Vec<u64> = executor
        .entries("output not sent; retrying", Some(running.job_id))
        .iter()
        .filter_map(|e| e["fields"]["backoff_ms"].as_u64())
        .collect();
    assert!(
        backoffs.windows(2).all(|w| w[1] >= w[0]) && backoffs.len() >= 2,
        "retries back off: {backoffs:?}"
    );
    assert!(
        executor
            .entries("output on chain", Some(running.job_id))
            .is_empty(),
        "nothing reaches the chain while the RPC fails"
    );
    proxy.heal();
    assert_eq!(
        output_text(&world.only_output(&running).await),
        "done 1500:rpc"
    );
    assert_eq!(
        output_text(&world.only_output(&created).await),
        "done 10:rpc"
    );
    assert!(executor.entries("job abandoned", None).is_empty());
    executor.kill().await;
}

#[tokio::test]
async fn a_jobs_send_reuses_the_reorg_check_made_while_it_ran() {
    let mut world = World::new().await;
    let proxy = Proxy::start(world.anvil_addr()).await;
    let settings = world.settings(
        2,
        &[
            ("RPC_HTTP_URL", proxy.http_url()),
            (
                "LOG_LEVEL",
                "info,serverless_executor::effects::chain=debug".into(),
            ),
        ],
    );
    let executor = world.start_executor(&settings).await;
    let code = world.save(SLOW_ECHO).await;
    let job = world.job(code, "300:check", 20_000).await;
    executor
        .wait_for_log("output on chain", Some(job.job_id))
        .await;
    // No block came while it ran: the creating log's receipt is looked up once, while the job
    // runs, and that answer serves the send.
    let asked = executor.entries("creating log looked up", Some(job.job_id));
    let kept = executor.entries("creating log on the chain (kept)", Some(job.job_id));
    assert_eq!(
        (asked.len(), kept.len()),
        (1, 1),
        "asked {asked:?}, kept {kept:?}; calls: {:?}",
        proxy.all_calls()
    );
    assert_eq!(
        output_text(&world.only_output(&job).await),
        "done 300:check"
    );
    executor.kill().await;
}

#[tokio::test]
async fn more_jobs_than_slots_are_all_answered() {
    let mut world = World::new().await;
    let settings = world.settings(6, &[("SLOTS", "1".to_string())]);
    let executor = world.start_executor(&settings).await;
    let code = world.save(SLOW_ECHO).await;
    let mut jobs = Vec::new();
    for i in 0..6 {
        jobs.push(world.job(code, &format!("300:many{i}"), 20_000).await);
    }
    for (i, job) in jobs.iter().enumerate() {
        let output = world.only_output(job).await;
        assert_eq!(output_text(&output), format!("done 300:many{i}"));
    }
    // One slot: the jobs ran one after another, each on slot 0.
    let runs = executor.entries("job running", None);
    assert_eq!(runs.len(), 6, "every job ran once");
    assert!(runs.iter().all(|r| r["fields"]["slot"] == 0));
    executor.kill().await;
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_and_submit_then_exits_zero() {
    let (world, executor, job) = a_slow_job_on_a_new_executor("1500:term").await;
    executor.wait_for_log("job running", Some(job.job_id)).await;

    let (status, executor) = executor.terminate(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "exit 0 after SIGTERM: {status:?}; log:\n{}",
        executor.log_text()
    );
    // The output was on chain before the process exited.
    assert!(!executor
        .entries("output on chain", Some(job.job_id))
        .is_empty());
    let output = world.only_output(&job).await;
    assert_eq!(output_text(&output), "done 1500:term");
}

#[tokio::test]
async fn a_job_outliving_the_shutdown_grace_runs_again_after_restart() {
    let mut world = World::new().await;
    let settings = world.settings(2, &[("SHUTDOWN_GRACE", "1".to_string())]);
    let executor = world.start_executor(&settings).await;
    let code = world.save(SLOW_ECHO).await;
    let job = world.job(code, "4000:grace", 20_000).await;
    executor.wait_for_log("job running", Some(job.job_id)).await;

    let (status, executor) = executor.terminate(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "exit 0 after the grace period: {status:?}"
    );
    assert!(executor
        .entries("output on chain", Some(job.job_id))
        .is_empty());
    assert!(!executor
        .entries(
            "jobs still running after the grace period; they resume on restart",
            None
        )
        .is_empty());
    let restarted = ExecutorProcess::spawn(&settings);
    let recovered = restarted.wait_for_log("journal recovered", None).await;
    assert!(recovered.to_string().contains("requeued: 1"), "{recovered}");
    let output = world.only_output(&job).await;
    assert_eq!(output_text(&output), "done 4000:grace");
    restarted.kill().await;
}

/// Puts the executor down, creates a job for it meanwhile, and returns the job.
async fn job_while_down(world: &World, executor: ExecutorProcess) -> CreatedJob {
    executor.kill().await;
    let code = world.save(SLOW_ECHO).await;
    world.job(code, "10:down", 20_000).await
}

/// The operator's steps for an executor whose data directory was lost: the same enclave key,
/// owner and gas key again (signed by the owner); the registration on chain still holds.
async fn reconfigure(world: &World, executor: &ExecutorProcess) {
    let http = reqwest::Client::new();
    let owner = serverless_executor::client::wallet(world.net.anvil.key(ACCOUNT)).unwrap();
    admin::post(
        &http,
        &executor.admin_url,
        "/immutable-config",
        &admin::immutable_config_body(owner.address()),
    )
    .await
    .expect("owner set");
    let body = admin::signed_mutable_config_body(
        &owner,
        world.enclave,
        world
            .net
            .anvil
            .key(DevAccount::ExecutorGas(ACCOUNT).index()),
        admin::now_secs(),
    )
    .await
    .unwrap();
    admin::post(&http, &executor.admin_url, "/mutable-config", &body)
        .await
        .expect("gas key set");
    admin::get(&http, &executor.api_url, "/signed-registration-message")
        .await
        .expect("registration message");
}

#[tokio::test]
async fn a_missing_journal_is_rebuilt_from_the_chain() {
    let mut world = World::new().await;
    let settings = world.settings(2, &[]);
    let executor = world.start_executor(&settings).await;
    let job = job_while_down(&world, executor).await;

    std::fs::remove_dir_all(&settings["DATA_DIR"]).unwrap();
    let restarted = ExecutorProcess::spawn(&settings);
    wait_for_api(&restarted).await;
    reconfigure(&world, &restarted).await;
    restarted.wait_serving().await;
    let output = world.only_output(&job).await;
    assert_eq!(output_text(&output), "done 10:down");
    restarted.kill().await;
}

#[tokio::test]
async fn a_corrupt_journal_stops_start_up_with_a_clear_error_and_loses_nothing() {
    let mut world = World::new().await;
    let settings = world.settings(2, &[]);
    let executor = world.start_executor(&settings).await;
    let job = job_while_down(&world, executor).await;

    // Garbage over the store's files, as a bad disk or a half-copied backup leaves them.
    let data_dir = PathBuf::from(&settings["DATA_DIR"]);
    corrupt_files(&data_dir);
    let mut refused = ExecutorProcess::spawn(&settings);
    let status = refused.exit_status(WAIT).await;
    assert!(!status.success(), "start-up fails on a corrupt journal");
    let log = refused.log_text();
    assert!(
        log.contains("EXECUTOR_DATA_DIR") && log.contains(data_dir.to_str().unwrap()),
        "the error names the data directory: {log}"
    );
    assert!(
        log.contains("rebuild"),
        "the error says how to recover: {log}"
    );
    // The operator moves the directory aside as told; the chain still has the job.
    std::fs::rename(&data_dir, data_dir.with_extension("corrupt")).unwrap();
    let restarted = ExecutorProcess::spawn(&settings);
    wait_for_api(&restarted).await;
    reconfigure(&world, &restarted).await;
    restarted.wait_serving().await;
    let output = world.only_output(&job).await;
    assert_eq!(output_text(&output), "done 10:down");
    restarted.kill().await;
}

/// Overwrites every regular file under `dir` with a repeating garbage pattern of the same size.
fn corrupt_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            corrupt_files(&path);
        } else {
            let len = std::fs::metadata(&path).unwrap().len().max(64) as usize;
            let garbage: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            std::fs::write(&path, garbage).unwrap();
        }
    }
}

/// A small tmpfs mounted over a directory (needs root), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size_kib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k,mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(path.to_path_buf()))
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler file");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).and_then(|_| file.flush()).is_ok() {}
        // The last partial chunk too.
        while file.write_all(&[0u8; 512]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

async fn health(executor: &ExecutorProcess) -> Value {
    admin::get(&reqwest::Client::new(), &executor.api_url, "/")
        .await
        .expect("GET /")
}

#[tokio::test]
async fn a_full_data_directory_makes_the_executor_unready_then_exit_non_zero_and_nothing_is_lost() {
    let mut world = World::new().await;
    let data = world.executor_dir.join("data");
    let tmpfs = match Tmpfs::mount(&data, 16 * 1024) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("SKIP a_full_data_directory_makes_the_executor_unready_then_exit_non_zero_and_nothing_is_lost: {reason}");
            return;
        }
    };
    let settings = world.settings(
        4,
        &[
            ("STORE_FAILURE_LIMIT", "5".into()),
            ("SHUTDOWN_GRACE", "1".into()),
        ],
    );
    let mut executor = world.start_executor(&settings).await;
    let code = world.save(SLOW_ECHO).await;
    let filler = tmpfs.fill();

    // The job cannot be journalled: the follower retries, says why, and is not ready.
    let job = world.job(code, "0:full", 5000).await;
    executor
        .wait_for_log(
            "the store failed while handling a chain log; retrying",
            None,
        )
        .await;
    let started = tokio::time::Instant::now();
    loop {
        let health = health(&executor).await;
        if health["ready"] == false
            && health["follower_problem"]
                .as_str()
                .is_some_and(|p| p.contains("store"))
        {
            assert_eq!(health["follower_ok"], false, "{health}");
            break;
        }
        assert!(started.elapsed() < WAIT, "still ready: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", executor.api_url))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(metrics.contains("executor_store_failing 1"), "{metrics}");
    let status = executor.exit_status(WAIT).await;
    assert!(
        !status.success(),
        "the executor exits non-zero when the store keeps failing"
    );
    executor
        .wait_for_log("the store keeps failing; giving up", None)
        .await;

    // Space again: a restarted executor reads the job from its cursor and answers it once.
    std::fs::remove_file(filler).unwrap();
    let executor = ExecutorProcess::spawn(&settings);
    wait_for_api(&executor).await;
    executor.wait_serving().await;
    let output = world.only_output(&job).await;
    assert_eq!(String::from_utf8_lossy(&output.output), "done 0:full");
    executor.kill().await;
    drop(tmpfs);
}
