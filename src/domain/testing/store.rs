//! The `Store` port: an in-memory stub (`memory_store`), a store whose writes fail on request
//! (`FlakyStore`), and the contract every store keeps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ethers::types::{Address, H256, U256};

use crate::domain::dal::{JobOrder, JobQuery, JobSlice, MockStore, Store};
use crate::domain::model::{
    ChainStatus, Deployment, ErrorCode, JobRecord, JobState, SentTx, SignedOutput, SupersededOutput,
};

use super::sample_job;

#[derive(Default)]
struct MemoryState {
    owner: Option<Address>,
    gas_key: Option<[u8; 32]>,
    config_timestamp: Option<u64>,
    cursor: Option<u64>,
    status: ChainStatus,
    jobs: BTreeMap<U256, JobRecord>,
    deployment: Option<Deployment>,
    take_backs: BTreeMap<H256, SupersededOutput>,
}

/// A `MockStore` that keeps everything in memory, like a store that never fails.
pub fn memory_store() -> MockStore {
    let state = Arc::new(Mutex::new(MemoryState::default()));
    let mut store = MockStore::new();
    macro_rules! with {
        ($method:ident, |$s:ident $(, $arg:ident)*| $body:expr) => {{
            let state = state.clone();
            store.$method().returning(move |$($arg),*| {
                #[allow(unused_mut)]
                let mut $s = state.lock().unwrap();
                $body
            });
        }};
    }
    with!(expect_owner, |s| Ok(s.owner));
    with!(expect_set_owner_once, |s, owner| {
        if s.owner.is_some() {
            Ok(false)
        } else {
            s.owner = Some(owner);
            Ok(true)
        }
    });
    with!(expect_gas_key, |s| Ok(s.gas_key));
    with!(expect_set_gas_key, |s, key| {
        s.gas_key = Some(key);
        Ok(())
    });
    with!(expect_config_timestamp, |s| Ok(s.config_timestamp));
    with!(expect_advance_config_timestamp, |s, timestamp| {
        if s.config_timestamp.is_some_and(|last| timestamp <= last) {
            Ok(false)
        } else {
            s.config_timestamp = Some(timestamp);
            Ok(true)
        }
    });
    with!(expect_cursor, |s| Ok(s.cursor));
    with!(expect_set_cursor, |s, block| {
        s.cursor = Some(block);
        Ok(())
    });
    with!(expect_chain_status, |s| Ok(s.status));
    with!(expect_set_chain_status, |s, status| {
        s.status = status;
        Ok(())
    });
    with!(expect_job, |s, id| Ok(s.jobs.get(&id).cloned()));
    with!(expect_put_job, |s, record| {
        s.jobs.insert(record.job.id, record.clone().trimmed());
        Ok(())
    });
    with!(expect_write_job, |s, record| {
        s.jobs.insert(record.job.id, record.clone().trimmed());
        Ok(())
    });
    with!(expect_remove_job, |s, id| {
        s.jobs.remove(&id);
        Ok(())
    });
    with!(expect_deployment, |s| Ok(s.deployment));
    with!(expect_set_deployment, |s, deployment| {
        s.deployment = Some(*deployment);
        Ok(())
    });
    with!(expect_list_jobs, |s, query| {
        let page = s.jobs.values().filter(|r| query.admits(r)).cloned();
        let records = match query.order {
            JobOrder::Ascending => page.take(query.limit).collect(),
            JobOrder::Descending => page.rev().take(query.limit).collect(),
        };
        Ok(JobSlice {
            records,
            resume_after: None,
        })
    });
    with!(expect_open_jobs, |s| Ok(s
        .jobs
        .values()
        .filter(|r| r.is_open())
        .cloned()
        .collect()));
    with!(expect_expired_jobs, |s, ended_before_ms, after, limit| {
        let mut ended: Vec<(u64, JobRecord)> = s
            .jobs
            .values()
            .map(|r| (r.job.window_end_ms(0), r.clone()))
            .filter(|(end, r)| {
                *end < ended_before_ms && after.is_none_or(|after| (*end, r.job.id) > after)
            })
            .collect();
        ended.sort_by_key(|(end, r)| (*end, r.job.id));
        Ok(ended.into_iter().take(limit).map(|(_, r)| r).collect())
    });
    with!(expect_take_backs, |s| Ok(s
        .take_backs
        .values()
        .copied()
        .collect()));
    with!(expect_put_take_back, |s, output| {
        s.take_backs.insert(output.tx.tx_hash, *output);
        Ok(())
    });
    with!(expect_remove_take_back, |s, tx_hash| {
        s.take_backs.remove(&tx_hash);
        Ok(())
    });
    store.expect_flush().returning(|| Ok(()));
    store
}

/// What every `Store` must do. Run on an empty store.
pub fn store_contract(store: &dyn Store) {
    let owner = Address::repeat_byte(0x11);
    assert_eq!(store.owner().unwrap(), None, "a new store has no owner");
    assert!(
        store.set_owner_once(owner).unwrap(),
        "the first owner is accepted"
    );
    assert!(
        !store.set_owner_once(Address::repeat_byte(0x22)).unwrap(),
        "a second owner is refused"
    );
    assert_eq!(store.owner().unwrap(), Some(owner), "the first owner stays");

    assert_eq!(store.gas_key().unwrap(), None);
    store.set_gas_key([7; 32]).unwrap();
    store.set_gas_key([8; 32]).unwrap();
    assert_eq!(
        store.gas_key().unwrap(),
        Some([8; 32]),
        "the gas key is replaceable"
    );

    assert_eq!(store.config_timestamp().unwrap(), None);
    assert!(store.advance_config_timestamp(100).unwrap());
    assert!(
        !store.advance_config_timestamp(100).unwrap(),
        "the same timestamp is a replay"
    );
    assert!(
        !store.advance_config_timestamp(99).unwrap(),
        "older is refused"
    );
    assert!(store.advance_config_timestamp(101).unwrap());
    assert_eq!(store.config_timestamp().unwrap(), Some(101));

    assert_eq!(store.cursor().unwrap(), None);
    store.set_cursor(42).unwrap();
    assert_eq!(store.cursor().unwrap(), Some(42));

    assert_eq!(store.chain_status().unwrap(), ChainStatus::Unregistered);
    store.set_chain_status(ChainStatus::Draining).unwrap();
    assert_eq!(store.chain_status().unwrap(), ChainStatus::Draining);

    let big = U256::from(2).pow(U256::from(200));
    for id in [U256::from(300), U256::from(2), big] {
        let mut job = sample_job(0, vec![], 1);
        job.id = id;
        store
            .put_job(&JobRecord::new(job, JobState::Queued))
            .unwrap();
    }
    let all = |order| JobQuery {
        state: None,
        after: None,
        order,
        limit: 10,
    };
    let ids = |records: Vec<JobRecord>| records.iter().map(|r| r.job.id).collect::<Vec<_>>();
    let listed = |query: &JobQuery| store.list_jobs(query).unwrap().records;
    assert_eq!(
        ids(listed(&all(JobOrder::Ascending))),
        vec![U256::from(2), U256::from(300), big],
        "jobs come in id order"
    );
    assert_eq!(
        ids(listed(&all(JobOrder::Descending))),
        vec![big, U256::from(300), U256::from(2)],
        "newest first on request"
    );

    let mut record = store
        .job(U256::from(2))
        .unwrap()
        .expect("stored job is found");
    assert_eq!(
        record.job.code_inputs,
        br#"{"num":10}"#.to_vec(),
        "a queued job keeps its inputs"
    );
    record.state = JobState::Executed {
        output: SignedOutput {
            job_id: U256::from(2),
            output: vec![0, 255, 10],
            total_time_ms: 5,
            error_code: ErrorCode::Ok,
            sign_timestamp: 9,
            signature: vec![3; 65],
        },
    };
    record.output_count = 2;
    // Written without a flush (then flushed): read back and indexed as `put_job` does.
    store.write_job(&record).unwrap();
    store.flush().unwrap();
    assert_eq!(
        store.job(U256::from(2)).unwrap(),
        Some(record.clone()),
        "a record is replaced whole"
    );
    let page = |state, after, order, limit| {
        ids(listed(&JobQuery {
            state: Some(state),
            after,
            order,
            limit,
        }))
    };
    assert_eq!(
        page("executed", None, JobOrder::Ascending, 10),
        vec![U256::from(2)]
    );
    assert_eq!(
        page("queued", None, JobOrder::Ascending, 10),
        vec![U256::from(300), big],
        "the old state no longer lists a job that moved on"
    );
    assert_eq!(
        page("queued", Some(U256::from(300)), JobOrder::Ascending, 10),
        vec![big]
    );
    assert_eq!(
        page("queued", Some(big), JobOrder::Descending, 10),
        vec![U256::from(300)]
    );
    assert_eq!(page("queued", None, JobOrder::Descending, 1), vec![big]);
    assert!(page("confirmed", None, JobOrder::Ascending, 10).is_empty());

    // A finished job loses its inputs, and once settled recovery no longer needs it.
    record.state = JobState::Confirmed {
        output: None,
        tx_hash: None,
    };
    store.put_job(&record).unwrap();
    let stored = store.job(U256::from(2)).unwrap().unwrap();
    assert!(
        stored.job.code_inputs.is_empty(),
        "a confirmed job's inputs are dropped"
    );
    assert_eq!(
        ids(store.open_jobs().unwrap()),
        vec![U256::from(2), U256::from(300), big]
    );
    record.settled = true;
    store.put_job(&record).unwrap();
    assert_eq!(ids(store.open_jobs().unwrap()), vec![U256::from(300), big]);
    let observed = sample_job(7, vec![], 1);
    store
        .put_job(&JobRecord::new(observed, JobState::Observed))
        .unwrap();
    let stored = store.job(U256::from(7)).unwrap().unwrap();
    assert!(
        stored.job.code_inputs.is_empty(),
        "others' jobs are kept without inputs"
    );
    assert!(
        stored.is_open(),
        "an unsettled job stays open for settlement"
    );

    // By end of execution time: every sample job ends at the same time; ties go by id.
    let end = stored.job.window_end_ms(0);
    let expired = |before, after, limit| ids(store.expired_jobs(before, after, limit).unwrap());
    assert!(expired(end, None, 10).is_empty(), "strictly before");
    assert_eq!(
        expired(end + 1, None, 10),
        vec![U256::from(2), U256::from(7), U256::from(300), big]
    );
    assert_eq!(
        expired(end + 1, None, 2),
        vec![U256::from(2), U256::from(7)]
    );
    assert_eq!(
        expired(end + 1, Some((end, U256::from(7))), 10),
        vec![U256::from(300), big]
    );

    store.remove_job(U256::from(300)).unwrap();
    assert_eq!(store.job(U256::from(300)).unwrap(), None);
    assert_eq!(ids(listed(&all(JobOrder::Ascending))).len(), 3);
    assert!(page("queued", None, JobOrder::Ascending, 10) == vec![big]);
    assert_eq!(expired(end + 1, None, 10).len(), 3);
    assert_eq!(ids(store.open_jobs().unwrap()), vec![U256::from(7), big]);

    // A job's origin (its creating log) is kept, so a reorg that reuses its id is noticed.
    let mut job = sample_job(5, vec![], 1);
    job.origin = Some(crate::domain::model::JobOrigin {
        block_number: 9,
        block_hash: H256::repeat_byte(0xb9),
        tx_hash: H256::repeat_byte(0x79),
        log_index: 3,
    });
    store
        .put_job(&JobRecord::new(job.clone(), JobState::Queued))
        .unwrap();
    assert_eq!(store.job(U256::from(5)).unwrap().map(|r| r.job), Some(job));

    // A job that does not select us is kept compact: what settlement needs (window, selected
    // count, outputs seen, flags) and a digest of the rest; never its inputs, owner, code,
    // addresses or origin.
    let origin_in = |block: u8| {
        Some(crate::domain::model::JobOrigin {
            block_number: u64::from(block),
            block_hash: H256::repeat_byte(block),
            tx_hash: H256::repeat_byte(!block),
            log_index: 1,
        })
    };
    let theirs_in = |block: u8| {
        let mut job = sample_job(8, (1..=2).map(Address::repeat_byte).collect(), 1);
        job.origin = origin_in(block);
        job
    };
    let theirs = theirs_in(20);
    let mut record = JobRecord::new(theirs.clone(), JobState::Observed);
    record.output_count = 1;
    record.slash_sent = true;
    record.gas_spent = 21_000;
    store.put_job(&record).unwrap();
    let stored = store.job(U256::from(8)).unwrap().unwrap();
    let kept = &stored.job;
    assert!(kept.compact.is_some(), "an observed job is compact");
    assert!(
        kept.code_inputs.is_empty()
            && kept.selected_executors.is_empty()
            && kept.owner.is_zero()
            && kept.codehash.is_zero()
            && kept.origin.is_none(),
        "no inputs, addresses, code or origin: {stored:?}"
    );
    assert_eq!(
        (kept.id, kept.env, kept.deadline_ms, kept.exec_start_time),
        (
            theirs.id,
            theirs.env,
            theirs.deadline_ms,
            theirs.exec_start_time
        )
    );
    assert_eq!(kept.window_end_ms(20), theirs.window_end_ms(20));
    assert_eq!(kept.selected_count(), 2);
    assert!(!kept.fully_answered(1) && kept.fully_answered(2));
    assert_eq!(
        (stored.output_count, stored.settled, stored.slash_sent),
        (1, false, true)
    );
    assert_eq!((stored.slashed, stored.gas_spent), (false, 21_000));
    assert!(stored.is_open(), "open until settled");
    assert!(
        kept.same_job(&theirs) && theirs.same_job(kept),
        "the very job, delivered again, is recognised"
    );
    let reused = theirs_in(21);
    assert!(
        !kept.same_job(&reused) && !reused.same_job(kept),
        "another job a reorg gave the id is not"
    );
    assert_eq!(
        page("observed", Some(U256::from(7)), JobOrder::Ascending, 10),
        vec![U256::from(8)]
    );
    let mut settled = stored.clone();
    settled.output_count = 2;
    settled.settled = true;
    settled.slashed = true;
    store.put_job(&settled).unwrap();
    assert_eq!(
        store.job(U256::from(8)).unwrap(),
        Some(settled),
        "a compact record changes whole"
    );
    assert!(!ids(store.open_jobs().unwrap()).contains(&U256::from(8)));
    // The reorg's job replaces the compact record (the domain decides so by the digest).
    store
        .put_job(&JobRecord::new(reused.clone(), JobState::Observed))
        .unwrap();
    let replaced = store.job(U256::from(8)).unwrap().unwrap();
    assert!(replaced.job.same_job(&reused) && !replaced.job.same_job(&theirs));
    assert_eq!((replaced.output_count, replaced.settled), (0, false));
    store.remove_job(U256::from(8)).unwrap();

    assert_eq!(
        store.deployment().unwrap(),
        None,
        "a new store has no deployment"
    );
    let deployment = Deployment {
        chain_id: 31337,
        executors: Address::repeat_byte(1),
        jobs: Address::repeat_byte(2),
        user_code: Address::repeat_byte(3),
    };
    store.set_deployment(&deployment).unwrap();
    assert_eq!(store.deployment().unwrap(), Some(deployment));

    // Nonces to take back: kept by hash, in hash order, until removed.
    assert!(store.take_backs().unwrap().is_empty());
    let sent = |byte: u8, legacy: bool| SupersededOutput {
        job_id: U256::from(5),
        tx: SentTx {
            tx_hash: H256::repeat_byte(byte),
            from: Address::repeat_byte(0x6a),
            nonce: U256::from(byte),
            max_fee_per_gas: U256::from(2_000_000_000u64),
            max_priority_fee_per_gas: (!legacy).then(|| U256::from(1_000_000_000u64)),
        },
    };
    store.put_take_back(&sent(0xb2, true)).unwrap();
    store.put_take_back(&sent(0xa1, false)).unwrap();
    store.put_take_back(&sent(0xa1, false)).unwrap();
    assert_eq!(
        store.take_backs().unwrap(),
        vec![sent(0xa1, false), sent(0xb2, true)]
    );
    store.remove_take_back(H256::repeat_byte(0xa1)).unwrap();
    store.remove_take_back(H256::repeat_byte(0xcc)).unwrap();
    assert_eq!(store.take_backs().unwrap(), vec![sent(0xb2, true)]);
    store.flush().unwrap();
}

/// The in-memory store whose next `n` writes fail (`fail_next_writes`), like a full or
/// read-only disk that comes back; reads keep working. It also traces the job writes and the
/// flushes (`journal_trace`), to tell what is made durable when.
pub struct FlakyStore {
    inner: MockStore,
    failures_left: AtomicU64,
    trace: std::sync::Mutex<Vec<String>>,
}

impl Default for FlakyStore {
    fn default() -> Self {
        Self {
            inner: memory_store(),
            failures_left: AtomicU64::new(0),
            trace: Default::default(),
        }
    }
}

impl FlakyStore {
    pub fn fail_next_writes(&self, n: u64) {
        self.failures_left.store(n, Ordering::SeqCst);
    }

    /// Every successful `put_job` (`put {id} {state}`), `write_job` (`write {id} {state}`)
    /// and `flush` (`flush`), in order.
    pub fn journal_trace(&self) -> Vec<String> {
        self.trace.lock().unwrap().clone()
    }

    fn note(&self, entry: String) {
        self.trace.lock().unwrap().push(entry);
    }

    fn write(&self) -> Result<(), crate::domain::dal::StoreError> {
        let failing = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(crate::domain::dal::StoreError::Io(
                "No space left on device".into(),
            ));
        }
        Ok(())
    }
}

impl Store for FlakyStore {
    fn owner(&self) -> Result<Option<Address>, crate::domain::dal::StoreError> {
        self.inner.owner()
    }
    fn set_owner_once(&self, owner: Address) -> Result<bool, crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.set_owner_once(owner)
    }
    fn gas_key(&self) -> Result<Option<[u8; 32]>, crate::domain::dal::StoreError> {
        self.inner.gas_key()
    }
    fn set_gas_key(&self, secret: [u8; 32]) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.set_gas_key(secret)
    }
    fn config_timestamp(&self) -> Result<Option<u64>, crate::domain::dal::StoreError> {
        self.inner.config_timestamp()
    }
    fn advance_config_timestamp(
        &self,
        timestamp: u64,
    ) -> Result<bool, crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.advance_config_timestamp(timestamp)
    }
    fn cursor(&self) -> Result<Option<u64>, crate::domain::dal::StoreError> {
        self.inner.cursor()
    }
    fn set_cursor(&self, next_block: u64) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.set_cursor(next_block)
    }
    fn chain_status(&self) -> Result<ChainStatus, crate::domain::dal::StoreError> {
        self.inner.chain_status()
    }
    fn set_chain_status(&self, status: ChainStatus) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.set_chain_status(status)
    }
    fn job(&self, id: U256) -> Result<Option<JobRecord>, crate::domain::dal::StoreError> {
        self.inner.job(id)
    }
    fn put_job(&self, record: &JobRecord) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.put_job(record)?;
        self.note(format!("put {} {}", record.job.id, record.state.name()));
        Ok(())
    }
    fn write_job(&self, record: &JobRecord) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.write_job(record)?;
        self.note(format!("write {} {}", record.job.id, record.state.name()));
        Ok(())
    }
    fn remove_job(&self, id: U256) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.remove_job(id)
    }
    fn list_jobs(
        &self,
        query: &crate::domain::dal::JobQuery,
    ) -> Result<JobSlice, crate::domain::dal::StoreError> {
        self.inner.list_jobs(query)
    }
    fn open_jobs(&self) -> Result<Vec<JobRecord>, crate::domain::dal::StoreError> {
        self.inner.open_jobs()
    }
    fn expired_jobs(
        &self,
        ended_before_ms: u64,
        after: Option<(u64, U256)>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, crate::domain::dal::StoreError> {
        self.inner.expired_jobs(ended_before_ms, after, limit)
    }
    fn flush(&self) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.flush()?;
        self.note("flush".into());
        Ok(())
    }
    fn deployment(&self) -> Result<Option<Deployment>, crate::domain::dal::StoreError> {
        self.inner.deployment()
    }
    fn set_deployment(
        &self,
        deployment: &Deployment,
    ) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.set_deployment(deployment)
    }
    fn take_backs(&self) -> Result<Vec<SupersededOutput>, crate::domain::dal::StoreError> {
        self.inner.take_backs()
    }
    fn put_take_back(
        &self,
        output: &SupersededOutput,
    ) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.put_take_back(output)
    }
    fn remove_take_back(&self, tx_hash: H256) -> Result<(), crate::domain::dal::StoreError> {
        self.write()?;
        self.inner.remove_take_back(tx_hash)
    }
}
