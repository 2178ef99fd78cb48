//! The secret store in sled (trees of their own beside the journal): secret records as JSON, the
//! plaintexts sealed with ChaCha20-Poly1305 under a key derived from the enclave key (never
//! stored) with the secret id bound as associated data, and the last `markStoreAlive`.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ethers::types::U256;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::off_worker::off_the_worker;
use crate::domain::dal::{SecretStore, StoreError};
use crate::domain::model::SecretRecord;

/// What the enclave key derives the secrets' sealing key for (see `EnclaveKey::derive_key`).
pub const SECRETS_SEALING_PURPOSE: &str = "secret store sealing key v1";
const RECORDS_TREE: &str = "secrets";
const SEALED_TREE: &str = "secrets_sealed";
const LAST_ALIVE: &str = "secrets/last_alive";
const SEAL_VERSION: u8 = 1;
/// Bound into every seal with the secret id: a sealed secret cannot pass for another one.
const AAD_PREFIX: &[u8] = b"serverless-executor secret v1";

pub struct SledSecrets {
    db: sled::Db,
    /// `secret id (32 bytes BE)` → the record (JSON).
    records: sled::Tree,
    /// `secret id (32 bytes BE)` → version ‖ nonce (12) ‖ ciphertext ‖ tag (16).
    sealed: sled::Tree,
    cipher: ChaCha20Poly1305,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn corrupt(id: U256, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: format!("secrets/{id}"),
        reason: reason.to_string(),
    }
}

fn key(id: U256) -> [u8; 32] {
    let mut key = [0u8; 32];
    id.to_big_endian(&mut key);
    key
}

fn aad(id: U256) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(&key(id));
    aad
}

impl SledSecrets {
    /// Opens the secret trees in `db` (the store's sled database); `sealing_key` is derived from
    /// the enclave key for `SECRETS_SEALING_PURPOSE`.
    pub fn open(db: sled::Db, sealing_key: [u8; 32]) -> Result<Self, StoreError> {
        Ok(Self {
            records: db.open_tree(RECORDS_TREE).map_err(io)?,
            sealed: db.open_tree(SEALED_TREE).map_err(io)?,
            db,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&sealing_key)),
        })
    }

    fn seal(&self, id: U256, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad(id),
                },
            )
            .map_err(|_| io(format!("cannot seal secret {id}")))?;
        let mut out = Vec::with_capacity(1 + 12 + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unseal(&self, id: U256, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        if bytes.len() < 1 + 12 + 16 || bytes[0] != SEAL_VERSION {
            return Err(corrupt(id, "not a sealed secret"));
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(&bytes[1..13]),
                Payload {
                    msg: &bytes[13..],
                    aad: &aad(id),
                },
            )
            .map_err(|_| {
                corrupt(
                    id,
                    "cannot be opened with this enclave key (another enclave key file, or damaged)",
                )
            })
    }

    fn flush(&self) -> Result<(), StoreError> {
        off_the_worker(|| self.db.flush()).map(|_| ()).map_err(io)
    }
}

impl SecretStore for SledSecrets {
    fn secret(&self, id: U256) -> Result<Option<SecretRecord>, StoreError> {
        match self.records.get(key(id)).map_err(io)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(id, e)),
            None => Ok(None),
        }
    }

    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.records
            .iter()
            .map(|entry| {
                let (k, v) = entry.map_err(io)?;
                serde_json::from_slice(&v).map_err(|e| corrupt(U256::from_big_endian(&k), e))
            })
            .collect()
    }

    fn put_secret(
        &self,
        record: &SecretRecord,
        plaintext: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let id = record.secret_id;
        let value = serde_json::to_vec(record).map_err(io)?;
        let sealed = plaintext.map(|p| self.seal(id, p)).transpose()?;
        (&self.records, &self.sealed)
            .transaction(|(records, sealed_tree)| {
                records.insert(&key(id)[..], value.as_slice())?;
                if let Some(sealed) = &sealed {
                    sealed_tree.insert(&key(id)[..], sealed.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| io(format!("{e:?}")))?;
        self.flush()
    }

    fn plaintext(&self, id: U256) -> Result<Option<Vec<u8>>, StoreError> {
        match self.sealed.get(key(id)).map_err(io)? {
            Some(bytes) => self.unseal(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn remove_plaintext(&self, id: U256) -> Result<(), StoreError> {
        self.sealed.remove(key(id)).map_err(io)?;
        self.flush()
    }

    fn remove_secret(&self, id: U256) -> Result<(), StoreError> {
        (&self.records, &self.sealed)
            .transaction(|(records, sealed)| {
                records.remove(&key(id)[..])?;
                sealed.remove(&key(id)[..])?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| io(format!("{e:?}")))?;
        self.flush()
    }

    fn last_alive(&self) -> Result<Option<u64>, StoreError> {
        match self.db.get(LAST_ALIVE).map_err(io)? {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| io(format!("{LAST_ALIVE}: not 8 bytes")))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
            None => Ok(None),
        }
    }

    fn set_last_alive(&self, at_secs: u64) -> Result<(), StoreError> {
        self.db
            .insert(LAST_ALIVE, &at_secs.to_be_bytes())
            .map_err(io)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{awaiting_secret, secret_store_contract};
    use ethers::types::Address;

    #[test]
    fn the_sled_secrets_keep_the_secret_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        secret_store_contract(
            &SledSecrets::open(sled::open(dir.path()).unwrap(), [9; 32]).unwrap(),
        );
    }

    #[test]
    fn plaintext_is_sealed_at_rest_and_opens_only_with_its_key_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let plaintext = b"PLAINTEXT-MARKER the owner's API key";
        let me = Address::repeat_byte(1);
        let record = awaiting_secret(5, me, me, 1);
        let store = SledSecrets::open(db.clone(), [9; 32]).unwrap();
        store.put_secret(&record, Some(plaintext)).unwrap();
        let sealed = store.sealed.get(key(U256::from(5))).unwrap().unwrap();
        assert!(
            !sealed.windows(16).any(|w| w == &plaintext[..16]),
            "the sealed value does not hold the plaintext"
        );
        // A sealed value moved under another id does not open there.
        store.sealed.insert(key(U256::from(6)), sealed).unwrap();
        assert!(matches!(
            store.plaintext(U256::from(6)),
            Err(StoreError::Corrupt { .. })
        ));
        db.flush().unwrap();
        // Nothing on disk holds the plaintext.
        let mut on_disk = Vec::new();
        for entry in walk(dir.path()) {
            on_disk.extend(std::fs::read(entry).unwrap());
        }
        assert!(!on_disk.is_empty());
        assert!(
            !on_disk.windows(16).any(|w| w == &plaintext[..16]),
            "the plaintext is nowhere in the database files"
        );
        let other_key = SledSecrets::open(db, [8; 32]).unwrap();
        assert!(
            matches!(
                other_key.plaintext(U256::from(5)),
                Err(StoreError::Corrupt { .. })
            ),
            "another enclave key cannot open it"
        );
        assert_eq!(other_key.secret(U256::from(5)).unwrap(), Some(record));
        assert_eq!(
            store.plaintext(U256::from(5)).unwrap().as_deref(),
            Some(&plaintext[..])
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
