//! sled in the data directory: owner, chain cursor and status, and the job journal with its
//! indexes (by state, open jobs, by end of execution time; layout in the README, "What survives
//! a restart"); beside it, the gas key sealed (ChaCha20-Poly1305) under a key derived from the
//! enclave key, in a file rewritten in place so a replaced key leaves no copy. The directory is
//! kept at mode 0700. Unflushed writes reach the disk in order (sled's log is recovered up to
//! its first torn message), which the domain's unflushed writes rely on (`Store::write_job`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use ethers::types::{Address, H256, U256};

use std::num::NonZeroUsize;
use std::ops::Bound;

use lru::LruCache;

use sled::transaction::{ConflictableTransactionError, Transactional};

use super::group_flush::GroupFlush;
use super::off_worker::off_the_worker;
use crate::domain::dal::{JobOrder, JobQuery, JobSlice, Store, StoreError};
use crate::domain::model::{
    ChainStatus, Deployment, Job, JobDigest, JobRecord, JobState, SupersededOutput, JOB_STATES,
};

const OWNER: &str = "config/owner";
/// Where earlier versions kept the gas key in clear, inside sled (migrated at open).
const LEGACY_GAS_KEY: &str = "config/gas_key";
/// The sealed gas key, in the data directory beside sled: version ‖ nonce ‖ ciphertext+tag.
const GAS_KEY_FILE: &str = "gas_key.sealed";
const SEAL_VERSION: u8 = 1;
const SEALED_LEN: usize = 1 + 12 + 32 + 16;
/// Bound into every seal: a sealed value cannot be passed off as another secret.
const GAS_KEY_AAD: &[u8] = b"serverless-executor gas key v1";
/// What the enclave key derives the sealing key for (see `EnclaveKey::derive_key`).
pub const SEALING_PURPOSE: &str = "store sealing key v1";
const CONFIG_TIMESTAMP: &str = "config/signed_change_timestamp";
const CURSOR: &str = "chain/cursor";
const STATUS: &str = "chain/status";
const DEPLOYMENT: &str = "chain/deployment";
const JOBS_TREE: &str = "jobs";
const BY_STATE_TREE: &str = "jobs_by_state";
const OPEN_TREE: &str = "jobs_open";
const BY_END_TREE: &str = "jobs_by_end";
/// Output transactions of superseded jobs whose nonces are still to be taken back.
const TAKE_BACKS_TREE: &str = "take_backs";
/// The journal's layout version; absent in stores written before the indexes existed, 2 in
/// those written before others' jobs were kept compact.
const LAYOUT: &str = "journal/layout";
const LAYOUT_VERSION: u64 = 3;
/// sled's page cache: it keeps hot records in memory and bounds the executor's RSS.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// The value of index entries: the key says it all.
const EMPTY: &[u8] = &[];
/// Records written per batch when migrating or importing.
const BATCH: usize = 10_000;
/// Observed jobs (most of the journal) have no entry in `jobs_by_state`: a page of them is read
/// from `jobs` by the first byte of each record, and reads at most this many records.
const OBSERVED_SCAN: usize = 10_000;
/// The code of `JobState::Observed` in `jobs_by_state` keys (`JOB_STATES`), never written.
const OBSERVED: u8 = 0;
/// Records kept as last written (`SledStore::written`): the jobs in flight and the latest seen.
const WRITTEN_RECORDS: usize = 256;
/// A record larger than this (encoded; large inputs) is not kept: bounds the keep to ~4 MiB.
const WRITTEN_RECORD_MAX: usize = 16 * 1024;

pub struct SledStore {
    db: sled::Db,
    jobs: sled::Tree,
    /// `state code (1 byte) ‖ job id` → empty: the jobs in each state but observed (see
    /// `OBSERVED_SCAN`).
    by_state: sled::Tree,
    /// `job id` → empty: the jobs recovery must look at (`JobRecord::is_open`).
    open: sled::Tree,
    /// `end of execution time, unix ms (8 bytes BE) ‖ job id` → empty: what pruning walks.
    by_end: sled::Tree,
    /// `tx hash` → the transaction (JSON): nonces to take back (`Store::take_backs`).
    take_backs: sled::Tree,
    gas_key_file: PathBuf,
    cipher: ChaCha20Poly1305,
    /// Serialises rewrites of the sealed gas key.
    gas_key_write: Mutex<()>,
    /// Every durable write goes through it: concurrent jobs share flushes (group commit).
    group: GroupFlush,
    /// The records this process wrote last, as written. A job in flight is read several times
    /// between writes, and decoding its JSON cost more than the rest of a read; a rewrite also
    /// learns here which index entries the record has already. Filled only by writes, under
    /// this lock together with their sled writes, so it never holds an older record than sled.
    written: Mutex<LruCache<U256, JobRecord>>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn corrupt(key: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn job_key(id: U256) -> [u8; 32] {
    let mut key = [0u8; 32];
    id.to_big_endian(&mut key);
    key
}

fn state_key(state: u8, id: U256) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = state;
    id.to_big_endian(&mut key[1..]);
    key
}

/// The end of a job's execution time: its window without the deployment's buffer.
fn job_end_ms(record: &JobRecord) -> u64 {
    record.job.window_end_ms(0)
}

fn end_key(end_ms: u64, id: U256) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&end_ms.to_be_bytes());
    id.to_big_endian(&mut key[8..]);
    key
}

/// The first byte of a compact record (a job that does not select us); a JSON record starts
/// with `{`.
const COMPACT_V1: u8 = 1;
/// version ‖ execStartTime (8) ‖ deadline ms (8) ‖ env ‖ selected count ‖ outputs seen ‖
/// flags ‖ identity digest (32) ‖ gas spent (8); the job id is the key.
const COMPACT_LEN: usize = 1 + 8 + 8 + 1 + 1 + 1 + 1 + 32 + 8;
const SETTLED: u8 = 1;
const SLASH_SENT: u8 = 2;
const SLASHED: u8 = 4;
const WITH_ORIGIN: u8 = 8;

/// A record as the `jobs` tree stores it: an observed job (`JobRecord::trimmed` made it
/// compact) in `COMPACT_LEN` bytes, any other as JSON.
fn encode(record: &JobRecord) -> Result<Vec<u8>, StoreError> {
    let Some(digest) = record
        .job
        .compact
        .filter(|_| record.state == JobState::Observed)
    else {
        return serde_json::to_vec(record).map_err(io);
    };
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    let mut out = Vec::with_capacity(COMPACT_LEN);
    out.push(COMPACT_V1);
    out.extend_from_slice(&record.job.exec_start_time.to_be_bytes());
    out.extend_from_slice(&record.job.deadline_ms.to_be_bytes());
    out.push(record.job.env);
    out.push(digest.selected_count);
    out.push(record.output_count);
    out.push(
        flag(record.settled, SETTLED)
            | flag(record.slash_sent, SLASH_SENT)
            | flag(record.slashed, SLASHED)
            | flag(digest.with_origin, WITH_ORIGIN),
    );
    out.extend_from_slice(digest.identity.as_bytes());
    out.extend_from_slice(&record.gas_spent.to_be_bytes());
    Ok(out)
}

fn decode(key: &[u8], value: &[u8]) -> Result<JobRecord, StoreError> {
    let id = U256::from_big_endian(key);
    let bad = |reason: &dyn std::fmt::Display| corrupt(&format!("jobs/{id}"), reason);
    if value.first() != Some(&COMPACT_V1) {
        return serde_json::from_slice(value).map_err(|e| bad(&e));
    }
    if value.len() != COMPACT_LEN {
        return Err(bad(&format!(
            "a compact record of {} bytes, not {COMPACT_LEN}",
            value.len()
        )));
    }
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&value[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    let flags = value[20];
    let job = Job {
        id,
        env: value[17],
        owner: Address::zero(),
        codehash: H256::zero(),
        code_inputs: Vec::new(),
        deadline_ms: u64_at(9),
        selected_executors: Vec::new(),
        exec_start_time: u64_at(1),
        origin: None,
        compact: Some(JobDigest {
            identity: H256::from_slice(&value[21..53]),
            with_origin: flags & WITH_ORIGIN != 0,
            selected_count: value[18],
        }),
        secret_id: U256::zero(),
    };
    Ok(JobRecord {
        job,
        state: JobState::Observed,
        output_count: value[19],
        settled: flags & SETTLED != 0,
        slash_sent: flags & SLASH_SENT != 0,
        slashed: flags & SLASHED != 0,
        gas_spent: u64_at(53),
        // Only our own outputs are sent; an observed job never has any.
        sent: Vec::new(),
    })
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, making the directory private to this user.
    /// `sealing_key` (derived from the enclave key) seals the gas key at rest.
    pub fn open(dir: &Path, sealing_key: [u8; 32]) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(format!("cannot create {}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(format!("cannot make {} private: {e}", dir.display())))?;
        let db = open_waiting_for_lock(&dir.join("db")).map_err(|e| {
            if is_lock_held(&e) {
                StoreError::Locked(dir.display().to_string())
            } else {
                io(format!("cannot open the store in {}: {e}", dir.display()))
            }
        })?;
        let store = Self {
            jobs: db.open_tree(JOBS_TREE).map_err(io)?,
            by_state: db.open_tree(BY_STATE_TREE).map_err(io)?,
            open: db.open_tree(OPEN_TREE).map_err(io)?,
            by_end: db.open_tree(BY_END_TREE).map_err(io)?,
            take_backs: db.open_tree(TAKE_BACKS_TREE).map_err(io)?,
            db,
            gas_key_file: dir.join(GAS_KEY_FILE),
            cipher: ChaCha20Poly1305::new(Key::from_slice(&sealing_key)),
            gas_key_write: Mutex::new(()),
            group: GroupFlush::default(),
            written: Mutex::new(LruCache::new(
                NonZeroUsize::new(WRITTEN_RECORDS).unwrap_or(NonZeroUsize::MIN),
            )),
        };
        store.migrate_clear_gas_key()?;
        store.migrate()?;
        Ok(store)
    }

    fn written(&self) -> std::sync::MutexGuard<'_, LruCache<U256, JobRecord>> {
        // A panic while holding it left sled and the keep as they were between two writes of
        // one record: forget every record rather than trust one.
        self.written.lock().unwrap_or_else(|poisoned| {
            let mut written = poisoned.into_inner();
            written.clear();
            written
        })
    }

    /// The sled database, for adapters that keep trees of their own in it (the secret store).
    pub fn sled_db(&self) -> sled::Db {
        self.db.clone()
    }

    /// Brings a journal of an earlier layout (before the indexes, or before compact records) to
    /// the current one, once, in batches: trims every record (others' jobs become compact) and
    /// builds the indexes again. Safe to interrupt: records of either form are read, and it
    /// starts over next time.
    fn migrate(&self) -> Result<(), StoreError> {
        if self.get_fixed::<8>(LAYOUT)?.map(u64::from_be_bytes) == Some(LAYOUT_VERSION) {
            return Ok(());
        }
        let mut migrated = 0usize;
        if !self.jobs.is_empty() {
            tracing::info!(
                "journal in an old layout: trimming records (others' jobs made compact) and \
                 building indexes"
            );
            for tree in [&self.by_state, &self.open, &self.by_end] {
                tree.clear().map_err(io)?;
            }
            let mut batch = Vec::with_capacity(BATCH);
            for entry in self.jobs.iter() {
                let (key, value) = entry.map_err(io)?;
                batch.push(decode(&key, &value)?);
                if batch.len() == BATCH {
                    migrated += batch.len();
                    self.import_jobs(&batch)?;
                    batch.clear();
                }
            }
            migrated += batch.len();
            self.import_jobs(&batch)?;
        }
        self.db
            .insert(LAYOUT, &LAYOUT_VERSION.to_be_bytes())
            .map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        if migrated > 0 {
            tracing::info!(jobs = migrated, "journal migrated to the current layout");
        }
        Ok(())
    }

    /// Writes many new records at once (trimmed, with their index entries) and flushes once:
    /// for migration and for filling a journal in the benchmark. Not atomic across records;
    /// records must not already be journalled in another state.
    pub fn import_jobs(&self, records: &[JobRecord]) -> Result<(), StoreError> {
        let mut written = self.written();
        for record in records {
            written.pop(&record.job.id);
        }
        let (mut jobs, mut by_state, mut open, mut by_end) = (
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
        );
        for record in records {
            let record = record.clone().trimmed();
            let id = record.job.id;
            let value = encode(&record)?;
            jobs.insert(&job_key(id), value);
            if record.state.code() != OBSERVED {
                by_state.insert(&state_key(record.state.code(), id)[..], EMPTY);
            }
            if record.is_open() {
                open.insert(&job_key(id), EMPTY);
            }
            by_end.insert(&end_key(job_end_ms(&record), id)[..], EMPTY);
        }
        self.jobs.apply_batch(jobs).map_err(io)?;
        self.by_state.apply_batch(by_state).map_err(io)?;
        self.open.apply_batch(open).map_err(io)?;
        self.by_end.apply_batch(by_end).map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        Ok(())
    }

    /// The records an index lists, in its order, skipping entries whose record has moved on
    /// since (the index and records are read outside one transaction).
    fn records_of(
        &self,
        ids: impl Iterator<Item = sled::Result<U256>>,
        limit: usize,
        keep: impl Fn(&JobRecord) -> bool,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            if out.len() == limit {
                break;
            }
            let id = id.map_err(io)?;
            if let Some(record) = self.job(id)? {
                if keep(&record) {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// An earlier version kept the gas key in clear inside sled: seal it and remove it there.
    fn migrate_clear_gas_key(&self) -> Result<(), StoreError> {
        let Some(clear) = self.get_fixed::<32>(LEGACY_GAS_KEY)? else {
            return Ok(());
        };
        if !self.gas_key_file.exists() {
            self.write_sealed_gas_key(clear)?;
        }
        self.db.remove(LEGACY_GAS_KEY).map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        tracing::warn!(
            "the gas key was stored in clear by an earlier version: it is sealed now, but sled's \
             log may keep the clear copy until it is compacted; replace the gas key to be sure"
        );
        Ok(())
    }

    fn seal(&self, secret: &[u8; 32]) -> Result<[u8; SEALED_LEN], StoreError> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: GAS_KEY_AAD,
                },
            )
            .map_err(|_| io("cannot seal the gas key"))?;
        let mut out = [0u8; SEALED_LEN];
        out[0] = SEAL_VERSION;
        out[1..13].copy_from_slice(&nonce);
        out[13..].copy_from_slice(&sealed);
        Ok(out)
    }

    fn unseal(&self, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
        let key = || self.gas_key_file.display().to_string();
        if bytes.len() != SEALED_LEN || bytes[0] != SEAL_VERSION {
            return Err(corrupt(
                &key(),
                format!(
                    "{} bytes, not a sealed gas key (version {SEAL_VERSION}, {SEALED_LEN} bytes)",
                    bytes.len()
                ),
            ));
        }
        let clear = self
            .cipher
            .decrypt(
                Nonce::from_slice(&bytes[1..13]),
                Payload {
                    msg: &bytes[13..],
                    aad: GAS_KEY_AAD,
                },
            )
            .map_err(|_| {
                corrupt(
                    &key(),
                    "cannot be opened with this enclave key (another enclave key file, or damaged): \
                     set the gas key again",
                )
            })?;
        clear
            .try_into()
            .map_err(|_| corrupt(&key(), "the sealed value is not 32 bytes"))
    }

    /// Overwrites the sealed gas key in place (same length, same offset) and syncs it, so the
    /// previous seal does not survive beside it (on file systems that write in place).
    fn write_sealed_gas_key(&self, secret: [u8; 32]) -> Result<(), StoreError> {
        use std::io::{Seek, SeekFrom, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let sealed = self.seal(&secret)?;
        let _guard = self.gas_key_write.lock().unwrap_or_else(|p| p.into_inner());
        let path = &self.gas_key_file;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io(format!("cannot open {}: {e}", path.display())))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&sealed))
            .and_then(|()| file.set_len(SEALED_LEN as u64))
            .and_then(|()| file.sync_all())
            .map_err(|e| io(format!("cannot write {}: {e}", path.display())))
    }

    fn get_fixed<const N: usize>(&self, key: &str) -> Result<Option<[u8; N]>, StoreError> {
        match self.db.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) if v.len() == N => {
                let mut out = [0u8; N];
                out.copy_from_slice(&v);
                Ok(Some(out))
            }
            Some(v) => Err(corrupt(key, format!("{} bytes, expected {N}", v.len()))),
        }
    }
}

/// How long opening waits for the store's file lock: sled releases it from a background
/// thread after the previous handle is dropped, so an in-process restart can find it held.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// sled reports a held lock as an I/O error whose text names it (the WouldBlock is inside).
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(_)) && e.to_string().contains("could not acquire lock")
}

fn open_waiting_for_lock(path: &Path) -> sled::Result<sled::Db> {
    let give_up = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(e) if is_lock_held(&e) && std::time::Instant::now() < give_up => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

impl Store for SledStore {
    fn owner(&self) -> Result<Option<Address>, StoreError> {
        Ok(self.get_fixed::<20>(OWNER)?.map(Address::from))
    }

    fn set_owner_once(&self, owner: Address) -> Result<bool, StoreError> {
        let swapped = self
            .db
            .compare_and_swap(OWNER, None as Option<&[u8]>, Some(owner.as_bytes()))
            .map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        Ok(swapped.is_ok())
    }

    fn gas_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        match std::fs::read(&self.gas_key_file) {
            Ok(bytes) => self.unseal(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!(
                "cannot read {}: {e}",
                self.gas_key_file.display()
            ))),
        }
    }

    fn set_gas_key(&self, secret: [u8; 32]) -> Result<(), StoreError> {
        self.write_sealed_gas_key(secret)
    }

    fn config_timestamp(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .get_fixed::<8>(CONFIG_TIMESTAMP)?
            .map(u64::from_be_bytes))
    }

    fn advance_config_timestamp(&self, timestamp: u64) -> Result<bool, StoreError> {
        // Compare-and-swap loop: two concurrent changes cannot both pass with one timestamp.
        loop {
            let current = self.db.get(CONFIG_TIMESTAMP).map_err(io)?;
            if let Some(bytes) = &current {
                let last: [u8; 8] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt(CONFIG_TIMESTAMP, "expected 8 bytes"))?;
                if timestamp <= u64::from_be_bytes(last) {
                    return Ok(false);
                }
            }
            let swapped = self
                .db
                .compare_and_swap(
                    CONFIG_TIMESTAMP,
                    current,
                    Some(&timestamp.to_be_bytes()[..]),
                )
                .map_err(io)?;
            if swapped.is_ok() {
                self.group.flush(&self.db).map_err(io)?;
                return Ok(true);
            }
        }
    }

    fn cursor(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.get_fixed::<8>(CURSOR)?.map(u64::from_be_bytes))
    }

    fn set_cursor(&self, next_block: u64) -> Result<(), StoreError> {
        self.db
            .insert(CURSOR, &next_block.to_be_bytes())
            .map_err(io)?;
        Ok(())
    }

    fn chain_status(&self) -> Result<ChainStatus, StoreError> {
        match self.db.get(STATUS).map_err(io)? {
            None => Ok(ChainStatus::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt(STATUS, e)),
        }
    }

    fn set_chain_status(&self, status: ChainStatus) -> Result<(), StoreError> {
        let v = serde_json::to_vec(&status).map_err(io)?;
        self.db.insert(STATUS, v).map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        Ok(())
    }

    fn job(&self, id: U256) -> Result<Option<JobRecord>, StoreError> {
        if let Some(record) = self.written().get(&id) {
            return Ok(Some(record.clone()));
        }
        let key = job_key(id);
        match self.jobs.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) => decode(&key, &v).map(Some),
        }
    }

    fn put_job(&self, record: &JobRecord) -> Result<(), StoreError> {
        self.write_job(record)?;
        // The journal is written before the state is acted on: make it durable now.
        self.group.flush(&self.db).map_err(io)?;
        Ok(())
    }

    fn write_job(&self, record: &JobRecord) -> Result<(), StoreError> {
        let record = record.clone().trimmed();
        let id = record.job.id;
        let mut written = self.written();
        // Out while sled is written: should a write fail, the record is read from sled again.
        let before = written.pop(&id);
        if before.as_ref() == Some(&record) {
            written.put(id, record);
            return Ok(());
        }
        let value = encode(&record)?;
        debug_assert_eq!(decode(&job_key(id), &value).ok().as_ref(), Some(&record));
        let state = record.state.code();
        let is_open = record.is_open();
        let end_ms = job_end_ms(&record);
        let had = |has: &dyn Fn(&JobRecord) -> bool| before.as_ref().is_some_and(has);
        // Not a sled transaction: each one writes (and syncs) two log buffers of its own, even
        // unflushed. Instead the entries a record needs are written before it and the ones it
        // no longer needs after it; writes reach the disk in order, so after a crash every
        // record still has its entries and a stale entry at most, which readers skip (each
        // looks at the record behind an entry). Entries the record had already are not written
        // again; not knowing the record before (first write in this process), every entry it
        // must not have is removed.
        if state != OBSERVED && !had(&|b| b.state.code() == state) {
            self.by_state
                .insert(&state_key(state, id)[..], EMPTY)
                .map_err(io)?;
        }
        if is_open && !had(&|b| b.is_open()) {
            self.open.insert(job_key(id), EMPTY).map_err(io)?;
        }
        if !had(&|b| job_end_ms(b) == end_ms) {
            self.by_end
                .insert(&end_key(end_ms, id)[..], EMPTY)
                .map_err(io)?;
        }
        self.jobs
            .insert(job_key(id), value.as_slice())
            .map_err(io)?;
        let stale: Vec<u8> = match &before {
            Some(b) => vec![b.state.code()],
            None => (0..JOB_STATES.len() as u8).collect(),
        };
        for other in stale.into_iter().filter(|s| *s != state && *s != OBSERVED) {
            self.by_state
                .remove(&state_key(other, id)[..])
                .map_err(io)?;
        }
        if !is_open && (before.is_none() || had(&|b| b.is_open())) {
            self.open.remove(job_key(id)).map_err(io)?;
        }
        if value.len() <= WRITTEN_RECORD_MAX {
            written.put(id, record);
        }
        Ok(())
    }

    fn remove_job(&self, id: U256) -> Result<(), StoreError> {
        // A record that does not decode is removed with every state entry; its entry by end
        // (unknown) is dropped by pruning when it finds no record behind it.
        let end = self
            .job(id)
            .ok()
            .flatten()
            .map(|record| end_key(job_end_ms(&record), id));
        let mut written = self.written();
        written.pop(&id);
        (&self.jobs, &self.by_state, &self.open, &self.by_end)
            .transaction(|(jobs, by_state, open, by_end)| {
                jobs.remove(&job_key(id))?;
                for state in 0..JOB_STATES.len() as u8 {
                    by_state.remove(&state_key(state, id)[..])?;
                }
                open.remove(&job_key(id))?;
                if let Some(end) = end {
                    by_end.remove(&end[..])?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| io(format!("{e:?}")))?;
        Ok(())
    }

    fn list_jobs(&self, query: &JobQuery) -> Result<JobSlice, StoreError> {
        let descending = query.order == JobOrder::Descending;
        let code = match query.state {
            None => None,
            Some(state) => Some(
                JOB_STATES
                    .iter()
                    .position(|s| *s == state)
                    .ok_or_else(|| io(format!("unknown job state {state}")))? as u8,
            ),
        };
        let Some(code) = code.filter(|code| *code != OBSERVED) else {
            let range = match (query.after, descending) {
                (None, _) => self.jobs.range::<&[u8], _>(..),
                (Some(after), false) => self
                    .jobs
                    .range::<&[u8], _>((Bound::Excluded(&job_key(after)[..]), Bound::Unbounded)),
                (Some(after), true) => self.jobs.range::<&[u8], _>(..&job_key(after)[..]),
            };
            let entries: Box<dyn Iterator<Item = _>> = if descending {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            if code.is_none() {
                let records = entries
                    .take(query.limit)
                    .map(|entry| {
                        let (key, value) = entry.map_err(io)?;
                        decode(&key, &value)
                    })
                    .collect::<Result<_, _>>()?;
                return Ok(JobSlice {
                    records,
                    resume_after: None,
                });
            }
            // Observed: compact records, told apart by their first byte without decoding.
            let mut slice = JobSlice::default();
            for (read, entry) in entries.enumerate() {
                let (key, value) = entry.map_err(io)?;
                if value.first() == Some(&COMPACT_V1) {
                    slice.records.push(decode(&key, &value)?);
                }
                if slice.records.len() == query.limit {
                    break;
                }
                if read + 1 == OBSERVED_SCAN {
                    slice.resume_after = Some(U256::from_big_endian(&key));
                    break;
                }
            }
            return Ok(slice);
        };
        let first = state_key(code, U256::zero());
        let last = state_key(code, U256::MAX);
        let (low, high) = match (query.after, descending) {
            (None, _) => (Bound::Included(first), Bound::Included(last)),
            (Some(after), false) => (
                Bound::Excluded(state_key(code, after)),
                Bound::Included(last),
            ),
            (Some(after), true) => (
                Bound::Included(first),
                Bound::Excluded(state_key(code, after)),
            ),
        };
        let range = self.by_state.range((low, high));
        let ids = range.map(|entry| entry.map(|(key, _)| U256::from_big_endian(&key[1..])));
        let ids: Box<dyn Iterator<Item = _>> = if descending {
            Box::new(ids.rev())
        } else {
            Box::new(ids)
        };
        Ok(JobSlice {
            records: self.records_of(ids, query.limit, |record| query.admits(record))?,
            resume_after: None,
        })
    }

    fn open_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        off_the_worker(|| {
            let mut out = Vec::new();
            for entry in self.open.iter() {
                let (key, _) = entry.map_err(io)?;
                match self.job(U256::from_big_endian(&key))? {
                    Some(record) if record.is_open() => out.push(record),
                    // Left behind by a crash between a record's write and its entry's removal.
                    _ => {
                        self.open.remove(&key).map_err(io)?;
                    }
                }
            }
            Ok(out)
        })
    }

    fn expired_jobs(
        &self,
        ended_before_ms: u64,
        after: Option<(u64, U256)>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        off_the_worker(|| {
            let low = match after {
                None => Bound::Unbounded,
                Some((end, id)) => Bound::Excluded(end_key(end, id)),
            };
            let high = Bound::Excluded(end_key(ended_before_ms, U256::zero()));
            let mut out = Vec::new();
            for entry in self.by_end.range((low, high)) {
                if out.len() == limit {
                    break;
                }
                let (key, _) = entry.map_err(io)?;
                let id = U256::from_big_endian(&key[8..]);
                match self.job(id)? {
                    Some(record) if end_key(job_end_ms(&record), id)[..] == key[..] => {
                        out.push(record)
                    }
                    // Left behind by a record removed while it did not decode.
                    _ => {
                        self.by_end.remove(&key).map_err(io)?;
                    }
                }
            }
            Ok(out)
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.group.flush(&self.db).map_err(io)?;
        Ok(())
    }

    fn deployment(&self) -> Result<Option<Deployment>, StoreError> {
        match self.db.get(DEPLOYMENT).map_err(io)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| corrupt(DEPLOYMENT, e)),
        }
    }

    fn set_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        let v = serde_json::to_vec(deployment).map_err(io)?;
        self.db.insert(DEPLOYMENT, v).map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        Ok(())
    }

    fn take_backs(&self) -> Result<Vec<SupersededOutput>, StoreError> {
        self.take_backs
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(io)?;
                serde_json::from_slice(&value)
                    .map_err(|e| corrupt(&format!("{TAKE_BACKS_TREE}/0x{}", hex::encode(&key)), e))
            })
            .collect()
    }

    fn put_take_back(&self, output: &SupersededOutput) -> Result<(), StoreError> {
        let value = serde_json::to_vec(output).map_err(io)?;
        self.take_backs
            .insert(output.tx.tx_hash.as_bytes(), value)
            .map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        Ok(())
    }

    fn remove_take_back(&self, tx_hash: H256) -> Result<(), StoreError> {
        self.take_backs.remove(tx_hash.as_bytes()).map_err(io)?;
        self.group.flush(&self.db).map_err(io)?;
        Ok(())
    }
}
