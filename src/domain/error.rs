//! The domain's one error type; `routes/` maps it to HTTP statuses.

use ethers::types::{Address, U256};
use thiserror::Error;

use super::dal::{ChainError, SignerError, StoreError};

#[derive(Debug, Error)]
pub enum DomainError {
    #[error("the owner is already set to {0:?}; it can be set only once")]
    OwnerAlreadySet(Address),
    #[error("invalid owner address: {0}")]
    InvalidOwner(String),
    #[error("invalid gas key: {0}")]
    InvalidGasKey(String),
    #[error("{0} is not configured yet")]
    NotConfigured(&'static str),
    /// An operator request lacked the owner's authorisation or carried a bad one.
    #[error("{0}")]
    Unauthorized(AuthRejection),
    #[error("no job {0} in the journal")]
    UnknownJob(U256),
    #[error("{0}")]
    BadQuery(String),
    /// The journal now holds another job under this id (a reorg), or none: the work done for
    /// the old one must not be used.
    #[error("job {0} was superseded or removed by a reorg")]
    Superseded(U256),
    /// The store belongs to another chain or other contracts (what differs, said plainly).
    #[error("{0}")]
    OtherDeployment(String),
    /// A secret injection was refused (nothing was stored).
    #[error("{0}")]
    SecretRefused(SecretRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl DomainError {
    /// Whether the caller sent something wrong (as opposed to the executor failing).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidOwner(_)
                | Self::InvalidGasKey(_)
                | Self::NotConfigured(_)
                | Self::Unauthorized(_)
                | Self::UnknownJob(_)
                | Self::BadQuery(_)
                | Self::SecretRefused(_)
        )
    }
}

/// Why an owner-signed operator request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthRejection {
    #[error("the owner is set: this change needs the owner's signature (fields timestamp and signature)")]
    Missing,
    #[error("the signature recovers to {recovered:?}, not to the owner {owner:?}")]
    WrongSigner { recovered: Address, owner: Address },
    #[error("the signature is not a valid secp256k1 signature")]
    BadSignature,
    #[error("the signature is {age_secs} s old; at most {max_age_secs} s is accepted")]
    Stale { age_secs: u64, max_age_secs: u64 },
    #[error("the signature's timestamp is {ahead_secs} s in the future")]
    FromTheFuture { ahead_secs: u64 },
    #[error("replayed: timestamp {timestamp} is not later than the last accepted change ({last})")]
    Replayed { timestamp: u64, last: u64 },
    #[error("no owner is set yet: set it with /immutable-config before sending a signed change")]
    NoOwner,
}

/// Why a secret injection was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretRefusal {
    #[error("secret {0} is not assigned to this store (no SecretCreated selecting it, nor a store replacement naming it, seen on chain)")]
    NotAssigned(U256),
    #[error("secret {0} is already stored here; it cannot be injected again")]
    AlreadyStored(U256),
    #[error("secret {secret_id} ended at {end_timestamp} (unix seconds)")]
    Ended { secret_id: U256, end_timestamp: u64 },
    #[error("signature_hex is not a valid 65-byte secp256k1 signature over keccak256(abi.encode(secretId, encryptedSecret))")]
    BadSignature,
    #[error("the signature recovers to {signer:?}, not to the secret's owner {owner:?}")]
    NotOwner { signer: Address, owner: Address },
    #[error(
        "encrypted_secret_hex cannot be decrypted with this enclave's key (ECIES, secp256k1): {0}"
    )]
    Undecryptable(String),
    #[error("the secret is {size} bytes; its size limit on chain is {limit}")]
    TooLarge { size: u64, limit: u64 },
}
