//! sled in the data directory: owner, gas key, chain cursor and status, and the job journal.
//! The directory is kept at mode 0700 because it holds the gas key (see README, "Secrets").

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ethers::types::{Address, U256};

use crate::domain::dal::{Store, StoreError};
use crate::domain::model::{ChainStatus, Deployment, JobRecord};

const OWNER: &str = "config/owner";
const GAS_KEY: &str = "config/gas_key";
const CONFIG_TIMESTAMP: &str = "config/signed_change_timestamp";
const CURSOR: &str = "chain/cursor";
const STATUS: &str = "chain/status";
const DEPLOYMENT: &str = "chain/deployment";
const JOBS_TREE: &str = "jobs";

pub struct SledStore {
    db: sled::Db,
    jobs: sled::Tree,
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

impl SledStore {
    /// Opens (or creates) the store in `dir`, making the directory private to this user.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
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
        let jobs = db.open_tree(JOBS_TREE).map_err(io)?;
        Ok(Self { db, jobs })
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
        match sled::open(path) {
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
        self.db.flush().map_err(io)?;
        Ok(swapped.is_ok())
    }

    fn gas_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.get_fixed::<32>(GAS_KEY)
    }

    fn set_gas_key(&self, secret: [u8; 32]) -> Result<(), StoreError> {
        self.db.insert(GAS_KEY, &secret[..]).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
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
                self.db.flush().map_err(io)?;
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
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn job(&self, id: U256) -> Result<Option<JobRecord>, StoreError> {
        match self.jobs.get(job_key(id)).map_err(io)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| corrupt(&format!("jobs/{id}"), e)),
        }
    }

    fn put_job(&self, record: &JobRecord) -> Result<(), StoreError> {
        let v = serde_json::to_vec(record).map_err(io)?;
        self.jobs.insert(job_key(record.job.id), v).map_err(io)?;
        // The journal is written before the state is acted on: make it durable now.
        self.jobs.flush().map_err(io)?;
        Ok(())
    }

    fn remove_job(&self, id: U256) -> Result<(), StoreError> {
        self.jobs.remove(job_key(id)).map_err(io)?;
        self.jobs.flush().map_err(io)?;
        Ok(())
    }

    fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs
            .iter()
            .map(|entry| {
                let (k, v) = entry.map_err(io)?;
                serde_json::from_slice(&v)
                    .map_err(|e| corrupt(&format!("jobs/{}", U256::from_big_endian(&k)), e))
            })
            .collect()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
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
        self.db.flush().map_err(io)?;
        Ok(())
    }
}
