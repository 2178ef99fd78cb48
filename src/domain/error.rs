//! The domain's one error type; `routes/` maps it to HTTP statuses.

use ethers::types::Address;
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
            Self::InvalidOwner(_) | Self::InvalidGasKey(_) | Self::NotConfigured(_)
        )
    }
}
