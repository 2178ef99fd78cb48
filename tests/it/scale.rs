//! Scale properties of the journal and the public API: a listing that blocks for seconds does
//! not delay a job; per-client limits answer 429; pages stay correct while jobs are inserted
//! and pruned; an old-layout journal is migrated at start; the job routes can be turned off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ethers::types::{Address, H256, U256};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;
use serverless_executor::bootstrap::Running;
use serverless_executor::config::PublicConfig;
use serverless_executor::domain::dal::{
    ChainWriter, EnclaveSigner, JobOrder, JobQuery, JobSlice, Store, StoreError,
};
use serverless_executor::domain::model::{
    ChainEvent, ChainLog, ChainStatus, ErrorCode, JobRecord, JobState, LogPosition, SignedOutput,
    SupersededOutput,
};
use serverless_executor::domain::testing::memory_store as stub_store;
use serverless_executor::domain::testing::{
    code_ok, counting_metrics, counting_slots, echo_sandbox, key_signer, memory_secrets,
    memory_store, probed_chain, sample_job, ChainScript,
};
use serverless_executor::domain::{Executor, Ports, Settings};
use serverless_executor::effects::clock::SystemClock;
use serverless_executor::effects::signer::EnclaveKey;
use serverless_executor::effects::store::SledStore;
use serverless_executor::routes::{self, Services, Surface};
use tokio::net::TcpListener;
use tokio::sync::watch;

const ENCLAVE_SECRET: [u8; 32] = [0x42; 32];

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Holds listings until opened (or until a bound long past any test's needs).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    fn wait(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let _ = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(30), |open| !*open)
            .unwrap();
    }

    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The memory store stub whose listings wait at a gate (the stub itself runs one call of a
/// method at a time, so the wait happens here, in front of it).
struct GatedListings {
    inner: Box<dyn Store>,
    gate: Arc<Gate>,
}

impl GatedListings {
    fn new(gate: Arc<Gate>) -> Self {
        Self {
            inner: Box::new(stub_store()),
            gate,
        }
    }
}

impl Store for GatedListings {
    fn owner(&self) -> Result<Option<Address>, StoreError> {
        self.inner.owner()
    }
    fn set_owner_once(&self, owner: Address) -> Result<bool, StoreError> {
        self.inner.set_owner_once(owner)
    }
    fn gas_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.gas_key()
    }
    fn set_gas_key(&self, secret: [u8; 32]) -> Result<(), StoreError> {
        self.inner.set_gas_key(secret)
    }
    fn config_timestamp(&self) -> Result<Option<u64>, StoreError> {
        self.inner.config_timestamp()
    }
    fn advance_config_timestamp(&self, timestamp: u64) -> Result<bool, StoreError> {
        self.inner.advance_config_timestamp(timestamp)
    }
    fn cursor(&self) -> Result<Option<u64>, StoreError> {
        self.inner.cursor()
    }
    fn set_cursor(&self, next_block: u64) -> Result<(), StoreError> {
        self.inner.set_cursor(next_block)
    }
    fn chain_status(&self) -> Result<ChainStatus, StoreError> {
        self.inner.chain_status()
    }
    fn set_chain_status(&self, status: ChainStatus) -> Result<(), StoreError> {
        self.inner.set_chain_status(status)
    }
    fn job(&self, id: U256) -> Result<Option<JobRecord>, StoreError> {
        self.inner.job(id)
    }
    fn put_job(&self, record: &JobRecord) -> Result<(), StoreError> {
        self.inner.put_job(record)
    }
    fn remove_job(&self, id: U256) -> Result<(), StoreError> {
        self.inner.remove_job(id)
    }
    fn list_jobs(&self, query: &JobQuery) -> Result<JobSlice, StoreError> {
        self.gate.wait();
        self.inner.list_jobs(query)
    }
    fn open_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.open_jobs()
    }
    fn expired_jobs(
        &self,
        ended_before_ms: u64,
        after: Option<(u64, U256)>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.expired_jobs(ended_before_ms, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn deployment(
        &self,
    ) -> Result<Option<serverless_executor::domain::model::Deployment>, StoreError> {
        self.inner.deployment()
    }
    fn set_deployment(
        &self,
        deployment: &serverless_executor::domain::model::Deployment,
    ) -> Result<(), StoreError> {
        self.inner.set_deployment(deployment)
    }
    fn take_backs(&self) -> Result<Vec<SupersededOutput>, StoreError> {
        self.inner.take_backs()
    }
    fn put_take_back(&self, output: &SupersededOutput) -> Result<(), StoreError> {
        self.inner.put_take_back(output)
    }
    fn remove_take_back(&self, tx_hash: H256) -> Result<(), StoreError> {
        self.inner.remove_take_back(tx_hash)
    }
}

/// Ports that do no I/O but the store given: the domain tests' stubs (code and sandbox answer
/// at once, outputs mine), with a gas key set.
fn ports(store: Arc<dyn Store>) -> Ports {
    let chain = ChainScript::default().writer(store.clone());
    chain.set_gas_key([0x6a; 32]).expect("a valid gas key");
    Ports {
        signer: Arc::new(key_signer(ENCLAVE_SECRET)),
        clock: Arc::new(SystemClock),
        store,
        secrets: Arc::new(memory_secrets()),
        code: Arc::new(code_ok()),
        sandbox: Arc::new(echo_sandbox()),
        slots: Arc::new(counting_slots(2)),
        chain: Arc::new(chain),
        reader: Arc::new(serverless_executor::domain::testing::canonical_reader()),
        probe: Arc::new(probed_chain(None, true)),
        metrics: Arc::new(counting_metrics()),
    }
}

/// The public listener on loopback in front of `executor`.
async fn serve_public(
    executor: Arc<Executor>,
    public: PublicConfig,
) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let services = Arc::new(Services::new(executor, public, Vec::new()));
    tokio::spawn(routes::serve(listener, services, Surface::Public, stopped));
    (base, stop)
}

fn limits(max_concurrent_per_client: usize) -> PublicConfig {
    PublicConfig {
        max_concurrent_per_client,
        rate_per_client: 0,
        rate_burst: 1,
        jobs_api: true,
    }
}

fn job_created(id: u64) -> ChainLog {
    let me = key_signer(ENCLAVE_SECRET).address();
    let mut job = sample_job(id, vec![me], now_secs());
    job.deadline_ms = 5_000;
    ChainLog {
        position: LogPosition {
            block_number: id,
            log_index: 0,
        },
        block_hash: H256::zero(),
        removed: false,
        event: ChainEvent::JobCreated(job),
    }
}

/// Two async workers, as on a 2-core machine: a listing run on one of them would stall it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_and_submits_while_job_listings_block() {
    let gate = Arc::new(Gate::default());
    let store: Arc<dyn Store> = Arc::new(GatedListings::new(gate.clone()));
    store.set_chain_status(ChainStatus::Serving).unwrap();
    let executor = Executor::new(ports(store.clone()), Settings::default());
    tokio::spawn(executor.clone().run_dispatcher());
    let (base, stop) = serve_public(executor.clone(), limits(64)).await;

    let http = reqwest::Client::new();
    let listings: Vec<_> = (0..8)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/jobs?limit=5"));
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    while gate.entered.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    executor.on_chain_event(job_created(1)).unwrap();
    let mut confirmed = false;
    for _ in 0..1500 {
        let state = store.job(U256::from(1)).unwrap().map(|r| r.state);
        if matches!(state, Some(JobState::Confirmed { .. })) {
            confirmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let still_blocked = !*gate.open.lock().unwrap();
    let in_flight = listings.iter().filter(|l| !l.is_finished()).count();
    assert!(
        confirmed && still_blocked,
        "the job must run, sign and land its output while the listings are still blocked"
    );
    assert_eq!(in_flight, 8, "every listing was still in flight");
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health answers while listings block");

    gate.release();
    for listing in listings {
        assert_eq!(listing.await.unwrap().unwrap(), 200);
    }
    stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_too_many_requests_in_progress_gets_429() {
    let gate = Arc::new(Gate::default());
    let store: Arc<dyn Store> = Arc::new(GatedListings::new(gate.clone()));
    let executor = Executor::new(ports(store), Settings::default());
    let (base, stop) = serve_public(executor, limits(2)).await;

    let http = reqwest::Client::new();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/jobs"));
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    while gate.entered.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("in progress"),
        "{body}"
    );

    gate.release();
    for request in slow {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let after = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(after.status(), 200, "finished requests free their places");
    stop.send_replace(true);
}

/// An executor in `dir` running one job at a time, a new workerd per job.
async fn start(dir: &Path, extra: &[(&str, &str)]) -> Running {
    let mut overrides = vec![("SANDBOX_MODE", "process"), ("JOB_CAPACITY", "1")];
    overrides.extend_from_slice(extra);
    crate::common::server::start(dir, &overrides).await
}

#[tokio::test]
async fn a_client_over_its_request_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(
        dir.path(),
        &[("PUBLIC_RATE_PER_CLIENT", "1"), ("PUBLIC_RATE_BURST", "3")],
    )
    .await;
    let (public, admin) = (running.api_addr, running.admin_addr);
    let http = reqwest::Client::new();
    let mut statuses = vec![];
    for _ in 0..5 {
        let r = http
            .get(format!("http://{public}/health"))
            .send()
            .await
            .unwrap();
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").cloned()));
    }
    assert!(
        statuses[..3].iter().all(|(s, _)| *s == 200),
        "the burst passes: {statuses:?}"
    );
    let (status, retry_after) = &statuses[4];
    assert_eq!(*status, 429, "{statuses:?}");
    let retry_after: u64 = retry_after
        .as_ref()
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // The operator's listener is not limited per client.
    for _ in 0..10 {
        let r = http
            .get(format!("http://{admin}/log-level"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    running.shutdown(Duration::from_secs(2)).await.unwrap();
}

fn confirmed(id: u64) -> JobState {
    JobState::Confirmed {
        output: Some(SignedOutput {
            job_id: id.into(),
            output: b"ok".to_vec(),
            total_time_ms: 5,
            error_code: ErrorCode::Ok,
            sign_timestamp: 1,
            signature: vec![1; 65],
        }),
        tx_hash: None,
    }
}

#[tokio::test]
async fn newest_first_pages_and_the_job_routes_switch() {
    let dir = tempfile::tempdir().unwrap();
    EnclaveKey::generate(&dir.path().join("enclave.key")).unwrap();
    {
        let store = SledStore::open(&dir.path().join("data"), [7; 32]).unwrap();
        for id in 1..=7u64 {
            let state = if id % 2 == 0 {
                JobState::Observed
            } else {
                confirmed(id)
            };
            let mut record = JobRecord::new(sample_job(id, vec![], now_secs()), state);
            record.settled = true;
            store.put_job(&record).unwrap();
        }
    }
    let running = start(dir.path(), &[]).await;
    let base = format!("http://{}", running.api_addr);
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, page) = get(format!("{base}/jobs?order=desc&limit=3")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["7", "6", "5"]);
    assert_eq!(page["next"], "5");
    let (_, page) = get(format!("{base}/jobs?order=desc&limit=3&after=5")).await;
    assert_eq!(ids(&page), ["4", "3", "2"]);
    let (_, page) = get(format!("{base}/jobs?order=desc&state=observed&after=6")).await;
    assert_eq!(ids(&page), ["4", "2"]);
    assert_eq!(page["next"], Value::Null);
    let (_, page) = get(format!("{base}/jobs?order=asc&state=confirmed&limit=2")).await;
    assert_eq!(ids(&page), ["1", "3"]);
    let (status, body) = get(format!("{base}/jobs?order=sideways")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("order"), "{body}");
    running.shutdown(Duration::from_secs(2)).await.unwrap();

    let running = start(dir.path(), &[("PUBLIC_JOBS_API", "false")]).await;
    let base = format!("http://{}", running.api_addr);
    for path in ["/jobs", "/jobs/1"] {
        let (status, body) = get(format!("{base}{path}")).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("EXECUTOR_PUBLIC_JOBS_API"),
            "{body}"
        );
    }
    let (status, _) = get(format!("{base}/health")).await;
    assert_eq!(status, 200);
    running.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// One step between two page reads.
#[derive(Debug, Clone)]
enum Step {
    /// Journal a new job: id, whether it is old enough to prune, and finished.
    Insert(u64, bool, bool),
    /// Run the pruner.
    Prune,
    /// Give a journalled job (by position) a new state.
    Move(usize, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..400, any::<bool>(), any::<bool>())
            .prop_map(|(id, old, done)| Step::Insert(id, old, done)),
        Just(Step::Prune),
        (any::<usize>(), any::<bool>()).prop_map(|(at, done)| Step::Move(at, done)),
    ]
}

fn record(id: u64, old: bool, finished: bool) -> JobRecord {
    let week = Settings::default().journal_retention_ms / 1000;
    let start = if old {
        now_secs() - week - 3_600
    } else {
        now_secs()
    };
    let state = if finished {
        JobState::Observed
    } else {
        JobState::Queued
    };
    JobRecord::new(sample_job(id, vec![], start), state)
}

/// Walks the journal a page at a time, changing it between pages, and checks each page against
/// what the journal held when it was read: in order, never twice, every job that stayed
/// throughout (in the state asked) listed exactly once.
fn walk(
    executor: &Executor,
    store: &dyn Store,
    order: JobOrder,
    state: Option<&'static str>,
    limit: usize,
    initial: &[(u64, bool, bool)],
    steps: &[Step],
) -> Result<(), TestCaseError> {
    for &(id, old, done) in initial {
        store.put_job(&record(id, old, done)).unwrap();
    }
    let snapshot = |store: &dyn Store| -> BTreeMap<u64, &'static str> {
        (1..400u64)
            .filter_map(|id| {
                store
                    .job(U256::from(id))
                    .unwrap()
                    .map(|r| (id, r.state.name()))
            })
            .filter(|(_, s)| state.is_none_or(|want| *s == want))
            .collect()
    };
    let before = snapshot(store);
    let mut ever: BTreeSet<u64> = before.keys().copied().collect();
    let mut removed_or_moved: BTreeSet<u64> = BTreeSet::new();
    let mut listed: Vec<u64> = vec![];
    let mut after = None;
    let mut steps = steps.iter();
    loop {
        let held = snapshot(store);
        let page = executor
            .list_jobs_in(order, state, after, limit)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for job in &page.jobs {
            let id = job.id.low_u64();
            prop_assert!(held.contains_key(&id), "{id} listed but not in the journal");
            prop_assert_eq!(Some(&job.state), held.get(&id));
            listed.push(id);
        }
        prop_assert!(page.jobs.len() <= limit);
        let Some(next) = page.next else { break };
        after = Some(next);
        if let Some(step) = steps.next() {
            match step.clone() {
                Step::Insert(id, old, done) => {
                    if store.job(U256::from(id)).unwrap().is_none() {
                        store.put_job(&record(id, old, done)).unwrap();
                        ever.insert(id);
                    }
                }
                Step::Prune => {
                    executor.prune_journal().unwrap();
                }
                Step::Move(at, done) => {
                    let ids: Vec<u64> = snapshot(store).keys().copied().collect();
                    if let Some(&id) = ids.get(at % ids.len().max(1)) {
                        let mut r = store.job(U256::from(id)).unwrap().unwrap();
                        r.state = if done {
                            confirmed(id)
                        } else {
                            JobState::Running
                        };
                        store.put_job(&r).unwrap();
                        removed_or_moved.insert(id);
                    }
                }
            }
            let now = snapshot(store);
            removed_or_moved.extend(ever.iter().filter(|id| !now.contains_key(id)));
        }
    }
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    if order == JobOrder::Descending {
        sorted.reverse();
    }
    prop_assert_eq!(&listed, &sorted, "pages come in order");
    sorted.dedup();
    prop_assert_eq!(listed.len(), sorted.len(), "no job is listed twice");
    let stayed: Vec<u64> = before
        .keys()
        .copied()
        .filter(|id| !removed_or_moved.contains(id))
        .collect();
    for id in stayed {
        prop_assert!(
            listed.contains(&id),
            "{id} stayed throughout but was not listed"
        );
    }
    Ok(())
}

/// Descending?, state filter, page size, initial jobs (id, old, finished), steps.
type WalkCase = (
    bool,
    Option<&'static str>,
    usize,
    Vec<(u64, bool, bool)>,
    Vec<Step>,
);

fn walk_cases() -> impl Strategy<Value = WalkCase> {
    (
        any::<bool>(),
        prop_oneof![Just(None), Just(Some("observed")), Just(Some("queued"))],
        1usize..7,
        prop::collection::vec((1u64..400, any::<bool>(), any::<bool>()), 0..40),
        prop::collection::vec(step(), 1..30),
    )
}

#[test]
fn pages_stay_correct_across_inserts_and_pruning() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&walk_cases(), |(desc, state, limit, initial, steps)| {
        let order = if desc {
            JobOrder::Descending
        } else {
            JobOrder::Ascending
        };
        // The real store, and the stub the domain tests use: both must keep the property.
        let dir = tempfile::tempdir().unwrap();
        let real: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), [7; 32]).unwrap());
        let stub: Arc<dyn Store> = Arc::new(memory_store());
        for store in [real, stub] {
            let executor = Executor::new(ports(store.clone()), Settings::default());
            walk(
                &executor,
                store.as_ref(),
                order,
                state,
                limit,
                &initial,
                &steps,
            )?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn an_old_layout_journal_is_migrated_once_at_open() {
    // Before the indexes (no layout version), and version 2: indexed, others' jobs in full.
    for layout in [None, Some(2u64)] {
        migrates_once(layout);
    }
}

fn migrates_once(layout: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    // Stores of that age also kept the gas key in clear, in sled: it is sealed at the same open.
    let gas_key = [0x5a; 32];
    let now = now_secs();
    let mut theirs = sample_job(1, vec![Address::repeat_byte(0xa1)], now);
    theirs.origin = Some(serverless_executor::domain::model::JobOrigin {
        block_number: 9,
        block_hash: H256::repeat_byte(9),
        tx_hash: H256::repeat_byte(0x99),
        log_index: 2,
    });
    let records: Vec<JobRecord> = vec![
        JobRecord::new(theirs.clone(), JobState::Observed),
        JobRecord::new(sample_job(2, vec![], now), JobState::Queued),
        {
            let mut r = JobRecord::new(sample_job(3, vec![], now), confirmed(3));
            r.settled = true;
            r
        },
    ];
    let key = |id: u64| {
        let mut key = [0u8; 32];
        U256::from(id).to_big_endian(&mut key);
        key
    };
    {
        // One tree of JSON records, inputs and all (version 2 had dropped others' inputs and
        // kept index entries beside).
        let db = sled::open(dir.path().join("db")).unwrap();
        let jobs = db.open_tree("jobs").unwrap();
        for r in &records {
            let mut r = r.clone();
            if layout.is_some() && r.state.is_final() {
                r.job.code_inputs.clear();
            }
            jobs.insert(key(r.job.id.low_u64()), serde_json::to_vec(&r).unwrap())
                .unwrap();
        }
        if let Some(version) = layout {
            db.insert("journal/layout", &version.to_be_bytes()).unwrap();
            let mut entry = vec![0u8];
            entry.extend_from_slice(&key(1));
            db.open_tree("jobs_by_state")
                .unwrap()
                .insert(entry, &[])
                .unwrap();
        }
        db.insert("config/gas_key", &gas_key[..]).unwrap();
        db.flush().unwrap();
    }
    for _ in 0..2 {
        let store = SledStore::open(dir.path(), [7; 32]).unwrap();
        assert_eq!(store.gas_key().unwrap(), Some(gas_key));
        let sealed = std::fs::read(dir.path().join("gas_key.sealed")).unwrap();
        assert!(
            !sealed.windows(32).any(|w| w == gas_key),
            "the gas key is sealed, not copied"
        );
        let job = |id: u64| store.job(U256::from(id)).unwrap().unwrap();
        let others = job(1);
        assert!(
            others.job.compact.is_some()
                && others.job.code_inputs.is_empty()
                && others.job.selected_executors.is_empty()
                && others.job.origin.is_none(),
            "others' jobs are made compact: {others:?}"
        );
        assert!(
            others.job.same_job(&theirs),
            "and still known as the same job"
        );
        assert_eq!(others.job.selected_count(), 1);
        assert_eq!(others.job.window_end_ms(0), theirs.window_end_ms(0));
        assert!(
            job(3).job.code_inputs.is_empty(),
            "confirmed inputs are dropped"
        );
        assert_eq!(job(2).job.code_inputs, records[1].job.code_inputs);
        assert!(job(2).job.compact.is_none() && job(3).job.compact.is_none());
        let open: Vec<U256> = store
            .open_jobs()
            .unwrap()
            .iter()
            .map(|r| r.job.id)
            .collect();
        assert_eq!(open, vec![U256::from(1), U256::from(2)]);
        let executor = Executor::new(ports(Arc::new(store)), Settings::default());
        for (state, id) in [("queued", 2), ("observed", 1)] {
            let page = executor
                .list_jobs_in(JobOrder::Ascending, Some(state), None, 10)
                .unwrap();
            assert_eq!(page.jobs.len(), 1);
            assert_eq!(page.jobs[0].id, U256::from(id));
        }
        drop(executor);
        // Read with the store closed: the clear gas key is gone from sled, and the record of
        // others' job is the compact one.
        std::thread::sleep(Duration::from_millis(200));
        let db = sled::open(dir.path().join("db")).unwrap();
        assert_eq!(db.get("config/gas_key").unwrap(), None);
        let jobs = db.open_tree("jobs").unwrap();
        let compact = jobs.get(key(1)).unwrap().unwrap();
        assert!(compact.len() <= 64, "{} bytes", compact.len());
        assert_eq!(jobs.get(key(2)).unwrap().unwrap().first(), Some(&b'{'));
        let by_state = db.open_tree("jobs_by_state").unwrap();
        assert!(
            by_state.scan_prefix([0u8]).next().is_none(),
            "observed jobs have no entry by state"
        );
        assert_eq!(by_state.len(), 2, "the queued and the confirmed job");
        drop((jobs, by_state, db));
        // sled lets go of its lock from a background thread.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_page_of_observed_jobs_reads_a_bounded_part_of_the_journal_and_says_where_to_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), [7; 32]).unwrap();
    let now = now_secs();
    // Only our jobs for longer than a page reads, then one observed job.
    let ours: Vec<JobRecord> = (1..=10_500)
        .map(|id| JobRecord::new(sample_job(id, vec![], now), confirmed(id)))
        .collect();
    store.import_jobs(&ours).unwrap();
    let theirs = JobRecord::new(sample_job(20_000, vec![], now), JobState::Observed);
    store.put_job(&theirs).unwrap();
    let executor = Executor::new(ports(Arc::new(store)), Settings::default());
    let mut after = None;
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let page = executor
            .list_jobs_in(JobOrder::Ascending, Some("observed"), after, 100)
            .unwrap();
        pages += 1;
        found.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(found, vec![U256::from(20_000)]);
    assert_eq!(
        pages, 2,
        "the first page stops short, and says where to go on"
    );
    let newest = executor
        .list_jobs_in(JobOrder::Descending, Some("observed"), None, 100)
        .unwrap();
    assert_eq!(newest.jobs.len(), 1);
    // It read on through our jobs as far as a page reads: the rest is one more page.
    let rest = executor
        .list_jobs_in(JobOrder::Descending, Some("observed"), newest.next, 100)
        .unwrap();
    assert!(newest.next.is_some() && rest.jobs.is_empty() && rest.next.is_none());
}
