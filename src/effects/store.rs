//! sled in the data directory: owner, chain cursor and status, and the job journal; beside it,
//! the gas key sealed (ChaCha20-Poly1305) under a key derived from the enclave key, in a file
//! rewritten in place so a replaced key leaves no copy. The directory is kept at mode 0700.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use ethers::types::{Address, U256};

use crate::domain::dal::{Store, StoreError};
use crate::domain::model::{ChainStatus, Deployment, JobRecord};

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

pub struct SledStore {
    db: sled::Db,
    jobs: sled::Tree,
    gas_key_file: PathBuf,
    cipher: ChaCha20Poly1305,
    /// Serialises rewrites of the sealed gas key.
    gas_key_write: Mutex<()>,
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
        let jobs = db.open_tree(JOBS_TREE).map_err(io)?;
        let store = Self {
            db,
            jobs,
            gas_key_file: dir.join(GAS_KEY_FILE),
            cipher: ChaCha20Poly1305::new(Key::from_slice(&sealing_key)),
            gas_key_write: Mutex::new(()),
        };
        store.migrate_clear_gas_key()?;
        Ok(store)
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
        self.db.flush().map_err(io)?;
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
