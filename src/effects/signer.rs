//! The enclave key on disk (raw 32-byte secp256k1 secret), signing with it (k256) and opening
//! what users ECIES-encrypt to it (`ecies`).

use std::io::Write;
use std::path::{Path, PathBuf};

use ethers::types::Address;
use ethers::utils::keccak256;
use k256::ecdsa::SigningKey;
use thiserror::Error;

use crate::domain::dal::{EnclaveSigner, SignerError};

#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("enclave key file {path}: cannot read it: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("enclave key file {path}: holds {len} bytes, a key is exactly 32 raw bytes")]
    WrongLength { path: PathBuf, len: usize },
    #[error("enclave key file {path}: not a valid secp256k1 secret (zero, or not below the curve order)")]
    InvalidScalar { path: PathBuf },
    #[error("enclave key file {path}: cannot write it: {reason}")]
    Unwritable { path: PathBuf, reason: String },
}

/// The enclave identity held in memory.
pub struct EnclaveKey {
    key: SigningKey,
    address: Address,
    public_key: [u8; 64],
}

impl std::fmt::Debug for EnclaveKey {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnclaveKey({:?})", self.address)
    }
}

impl EnclaveKey {
    pub fn from_secret(secret: &[u8]) -> Option<Self> {
        let key = SigningKey::from_slice(secret).ok()?;
        let point = key.verifying_key().to_encoded_point(false);
        let mut public_key = [0u8; 64];
        public_key.copy_from_slice(&point.as_bytes()[1..]);
        let address = Address::from_slice(&keccak256(public_key)[12..]);
        Some(Self {
            key,
            address,
            public_key,
        })
    }

    /// A 32-byte key for `purpose` derived from the enclave secret (HKDF-SHA256), e.g. to seal
    /// secrets at rest: only this enclave key opens them, and the secret itself never leaves.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let secret = self.key.to_bytes();
        let hkdf =
            hkdf::Hkdf::<sha2::Sha256>::new(Some(b"serverless-executor key derivation"), &secret);
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
        let _ = hkdf.expand(purpose.as_bytes(), &mut out);
        out
    }

    /// Loads the key from a file of exactly 32 raw bytes.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = std::fs::read(path).map_err(|e| KeyFileError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if bytes.len() != 32 {
            return Err(KeyFileError::WrongLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Self::from_secret(&bytes).ok_or_else(|| KeyFileError::InvalidScalar {
            path: path.to_path_buf(),
        })
    }

    /// Writes a fresh random key to a new file (mode 0600); refuses to overwrite an existing one.
    pub fn generate(path: &Path) -> Result<Self, KeyFileError> {
        use std::os::unix::fs::OpenOptionsExt;
        let key = SigningKey::random(&mut rand::thread_rng());
        let secret = key.to_bytes();
        let unwritable = |e: std::io::Error| KeyFileError::Unwritable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(unwritable)?;
        file.write_all(&secret).map_err(unwritable)?;
        file.sync_all().map_err(unwritable)?;
        Self::from_secret(&secret).ok_or_else(|| KeyFileError::InvalidScalar {
            path: path.to_path_buf(),
        })
    }
}

impl EnclaveSigner for EnclaveKey {
    fn address(&self) -> Address {
        self.address
    }

    fn public_key(&self) -> [u8; 64] {
        self.public_key
    }

    fn sign_digest(&self, digest: [u8; 32]) -> Result<[u8; 65], SignerError> {
        let (signature, recovery_id) = self
            .key
            .sign_prehash_recoverable(&digest)
            .map_err(|e| SignerError(e.to_string()))?;
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&signature.to_bytes());
        out[64] = 27 + recovery_id.to_byte();
        Ok(out)
    }

    fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>, SignerError> {
        let secret = zeroize::Zeroizing::new(self.key.to_bytes());
        ecies::decrypt(&secret, sealed).map_err(|e| SignerError(format!("cannot decrypt: {e}")))
    }
}
